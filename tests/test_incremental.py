"""Incremental occlusion inference equals brute force on every supported architecture, shape and layer."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zfrepro.incremental import IncrementalFeatures, supports_incremental
from zfrepro.models import alexnet, init_weights, zfnet
from zfrepro.occlusion import occlusion_maps


def _kaiming(m):
    torch.manual_seed(0)
    return init_weights(m, "kaiming").eval()


CASES = [
    # model, image shape, occluder, stride, watched layer
    (lambda: _kaiming(zfnet(10, 64, 0.25, 32)), (3, 64, 64), 16, 8, "conv5"),
    (lambda: _kaiming(zfnet(10, 64, 0.25, 32)), (3, 64, 64), 11, 5, "conv2"),
    (lambda: _kaiming(zfnet(10, 64, 0.25, 32)), (3, 64, 64), 9, 13, "fc6"),
    (lambda: _kaiming(zfnet(10, 128, 0.25, 64)), (3, 128, 128), 32, 8, "conv1"),
    (lambda: _kaiming(alexnet(10, 96, 0.25, 32)), (3, 96, 96), 20, 7, "conv3"),
    (lambda: torchvision.models.vgg11(num_classes=5).eval(), (3, 64, 80), 16, 12, "conv4"),
    (lambda: torchvision.models.alexnet(num_classes=5).eval(), (3, 100, 90), 24, 9, "conv1"),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_incremental_maps_equal_brute_force(case):
    make, shape, size, stride, layer = CASES[case]
    model = make()
    torch.manual_seed(case)
    img = torch.randn(*shape)
    inc = occlusion_maps(model, img, 1, size, stride, fill=0.3, layer=layer, batch_size=13)
    ref = occlusion_maps(model, img, 1, size, stride, fill=0.3, layer=layer, batch_size=13, method="brute")
    assert inc.channel == ref.channel
    assert torch.allclose(inc.prob, ref.prob, atol=1e-6, rtol=1e-5)
    assert torch.equal(inc.top_class, ref.top_class)
    assert torch.allclose(inc.activation, ref.activation, rtol=1e-5, atol=1e-5 * float(ref.activation.abs().max()))


def test_logits_equal_a_forward_pass_of_each_occluded_image():
    model = _kaiming(zfnet(10, 128, 0.5, 256))
    img = torch.randn(3, 128, 128)
    grid = [(r, q) for r in range(0, 97, 8) for q in range(0, 97, 8)]
    engine = IncrementalFeatures(model, img, (32, 32), grid, model.features.relu5)
    kinds = [k for k, _, _ in engine.plan]
    assert kinds.count("window") >= 3  # conv1, pool1, conv2 (at least) are computed on windows only
    chunk = grid[40:57]
    patches = torch.rand(len(chunk), 3, 32, 32)  # any content, not just a constant
    with torch.no_grad():
        logits, sums = engine.run(patches, chunk)
        x = img.expand(len(chunk), 3, 128, 128).clone()
        for b, (r, q) in enumerate(chunk):
            x[b, :, r:r + 32, q:q + 32] = patches[b]
        acts = []
        h = model.features.relu5.register_forward_hook(lambda m, i, o: acts.append(o))
        ref = model(x)
        h.remove()
    assert torch.allclose(logits, ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(sums, acts[0].flatten(2).sum(2), rtol=1e-5, atol=1e-4)


def test_a_model_without_features_falls_back_to_brute_force():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.relu(self.conv1(x)).mean((2, 3)))

    model = Plain().eval()
    assert not supports_incremental(model)
    img = torch.randn(3, 32, 32)
    a = occlusion_maps(model, img, 0, 8, 4, layer="conv1")
    b = occlusion_maps(model, img, 0, 8, 4, layer="conv1", method="brute")
    assert torch.allclose(a.prob, b.prob) and torch.allclose(a.activation, b.activation)


def test_a_forward_that_is_not_features_then_rest_is_detected():
    """A model that transforms its input before ``features``: the engine notices and occlusion_maps
    falls back to brute force, so the maps stay right."""
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.features(x * 2.0 + 1.0).mean((2, 3)))

    torch.manual_seed(0)
    model = Shifted().eval()
    img = torch.randn(3, 32, 32)
    a = occlusion_maps(model, img, 0, 8, 4, layer="conv1")
    b = occlusion_maps(model, img, 0, 8, 4, layer="conv1", method="brute")
    assert torch.allclose(a.prob, b.prob, atol=1e-6) and torch.allclose(a.activation, b.activation, rtol=1e-5)


def test_unknown_method_is_rejected():
    from zfrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="incremental"):
        occlusion_maps(_kaiming(zfnet(10, 64, 0.25, 32)), torch.randn(3, 64, 64), 0, 16, 8, method="fast")
