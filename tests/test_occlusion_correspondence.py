"""Occlusion maps against brute force and captum; the normalised sign-change distance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zfrepro.correspondence import sign_change
from zfrepro.errors import ConfigError
from zfrepro.models import zfnet
from zfrepro.occlusion import occlusion_maps, occluder_positions


def _model():
    torch.manual_seed(0)
    return zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32).eval()


def test_positions_follow_the_contract():
    assert occluder_positions(64, 48, 16, 16) == ([0, 16, 32, 48], [0, 16, 32])
    assert occluder_positions(10, 10, 4, 3) == ([0, 3, 6], [0, 3, 6])
    with pytest.raises(ConfigError, match="does not fit"):
        occluder_positions(10, 10, 11, 1)


def test_maps_equal_brute_force():
    model = _model()
    img = torch.randn(3, 64, 64)
    res = occlusion_maps(model, img, target=3, size=16, stride=8, fill=0.5, layer="conv5", batch_size=7)
    assert res.prob.shape == (7, 7) and res.top_class.shape == (7, 7) and res.activation.shape == (7, 7)
    acts = []
    h = model.features.relu5.register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        for r, q in [(0, 0), (3, 5), (6, 6)]:
            x = img.clone()
            x[:, 8 * r:8 * r + 16, 8 * q:8 * q + 16] = 0.5
            p = model(x[None]).softmax(1)[0]
            assert abs(float(p[3]) - float(res.prob[r, q])) < 1e-6
            assert int(p.argmax()) == int(res.top_class[r, q])
            assert abs(float(acts[-1][0, res.channel].sum()) - float(res.activation[r, q])) < 1e-4
    h.remove()


def test_prob_drop_equals_captum_occlusion():
    captum_attr = pytest.importorskip("captum.attr")
    model = _model()
    img = torch.randn(3, 64, 64)
    res = occlusion_maps(model, img, target=2, size=16, stride=16, fill="mean")
    prob_model = nn.Sequential(model, nn.Softmax(dim=1))
    attr = captum_attr.Occlusion(prob_model).attribute(img[None], sliding_window_shapes=(3, 16, 16),
                                                       strides=(3, 16, 16), baselines=0.0, target=2)
    # non-overlapping windows: each pixel's attribution is the drop caused by its own window
    drop = attr[0, 0, ::16, ::16]
    assert torch.allclose(drop, res.unoccluded_prob - res.prob, atol=1e-6)


def test_evidence_in_one_corner_is_found_there():
    """A model whose class-0 evidence is the brightness of the top-left corner."""
    class Corner(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
            self.classifier = nn.Sequential(nn.Linear(1, 2))
            with torch.no_grad():
                self.features[0].weight.fill_(1.0)
                self.features[0].bias.zero_()
                self.classifier[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
                self.classifier[0].bias.zero_()

        def forward(self, x):
            a = self.features(x)[:, :, :16, :16].mean((2, 3))
            return self.classifier(a)

    img = torch.zeros(3, 64, 64)
    img[:, :16, :16] = 1.0
    res = occlusion_maps(Corner(), img, target=0, size=16, stride=16, layer="conv1")
    assert res.prob.argmin().item() == 0 and res.prob[0, 0] < res.prob[1:, 1:].min()


def test_sign_change():
    eps = torch.tensor([[1.0, -2.0, 3.0, 4.0], [1.0, -1.0, 3.0, 4.0], [-1.0, 2.0, -3.0, -4.0]])
    # pairs: (0,1) 0 differ, (0,2) 4, (1,2) 4 -> ordered pairs sum 2*(0+4+4)=16 over 6 pairs * 4 dims
    assert sign_change(eps) == pytest.approx(16 / 24)
    same = torch.randn(1, 100).repeat(5, 1)
    assert sign_change(same) == 0.0
    torch.manual_seed(0)
    assert abs(sign_change(torch.randn(5, 20000)) - 0.5) < 0.01  # independent signs differ half the time
    with pytest.raises(ConfigError, match="n >= 2"):
        sign_change(torch.randn(1, 5))


def test_sample_indices_are_seeded_sorted_and_refuse_a_negative_sample():
    import torch

    from zfrepro.errors import ConfigError
    from zfrepro.occlusion import sample_indices

    g = torch.Generator().manual_seed(3)
    assert sample_indices(50, 7, seed=3) == torch.randperm(50, generator=g)[:7].sort().values.tolist()
    assert sample_indices(5, 0) == [0, 1, 2, 3, 4] and sample_indices(5, 99) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"sample=-3: give the number of validation images \(0 for the whole split\)"):
        sample_indices(5, -3)
