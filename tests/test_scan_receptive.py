"""Dataset scans against brute force; receptive-field boxes against autograd; rule projections."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from zfrepro.backprop import project_by_rule
from zfrepro.devices import inference_layout
from zfrepro.errors import ConfigError
from zfrepro.models import rectified_module, zfnet
from zfrepro.receptive import crop_patch, receptive_field
from zfrepro.scan import top_activations


def _small():
    torch.manual_seed(0)
    return zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32).eval()


def _brute(model, x, layer):
    acts = []
    h = rectified_module(model, layer).register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        model(inference_layout(x))  # the scan's layout: the same values, not just the same to rounding
    h.remove()
    return acts[0]


@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5"])
def test_top_activations_equal_brute_force(layer):
    model = _small()
    x = torch.randn(37, 3, 64, 64)
    ds = TensorDataset(x, torch.zeros(37, dtype=torch.long))
    tops = top_activations(model, ds, layers=["conv1", "conv3", "conv5"], k=5, batch_size=8,
                           progress=False)
    t = tops[layer]
    a = _brute(model, x, layer)                       # N×C×H×W
    per_image = a.flatten(2).max(2).values.t()        # C×N
    expected = per_image.sort(dim=1, descending=True).values[:, :5]
    assert torch.allclose(t.values, expected)
    assert (t.values[:, :-1] >= t.values[:, 1:]).all()
    # each (image, position) really holds that value, and images are distinct per map
    for c in range(0, a.shape[1], 7):
        for r in range(5):
            i, row, col = int(t.image_index[c, r]), *t.position[c, r].tolist()
            assert a[i, c, row, col] == t.values[c, r]
        assert len(set(t.image_index[c].tolist())) == 5


def test_inference_layout_changes_memory_not_values(monkeypatch):
    x = torch.randn(4, 3, 16, 16)
    y = inference_layout(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    v = torch.randn(4, 10)
    assert inference_layout(v) is v
    # the scan in channels-last equals the scan of NCHW batches to float rounding
    model = _small()
    ds = TensorDataset(torch.randn(24, 3, 64, 64), torch.zeros(24))
    ours = top_activations(model, ds, layers=["conv2", "conv5"], k=4, batch_size=8, progress=False)
    monkeypatch.setattr("zfrepro.scan.inference_layout", lambda t: t)
    nchw = top_activations(model, ds, layers=["conv2", "conv5"], k=4, batch_size=8, progress=False)
    for name in ours:
        torch.testing.assert_close(ours[name].values, nchw[name].values, rtol=1e-5, atol=1e-6)


def test_scan_memory_is_bounded_by_k_times_channels():
    model = _small()
    small = TensorDataset(torch.randn(16, 3, 64, 64), torch.zeros(16))
    big = TensorDataset(torch.randn(160, 3, 64, 64), torch.zeros(160))
    a = top_activations(model, small, layers=["conv2"], k=4, batch_size=16, progress=False)
    b = top_activations(model, big, layers=["conv2"], k=4, batch_size=16, progress=False)
    assert a["conv2"].values.shape == b["conv2"].values.shape == (model.features.conv2.out_channels, 4)


def test_scan_ties_and_zero_maps_are_deterministic():
    model = _small()
    with torch.no_grad():
        model.features.conv1.weight.zero_()
        model.features.conv1.bias.zero_()
    x = torch.randn(10, 3, 64, 64)
    t = top_activations(model, TensorDataset(x, torch.zeros(10)), layers=["conv1"], k=3,
                        batch_size=4, progress=False)["conv1"]
    assert (t.values == 0).all()
    assert t.image_index[0].tolist() == [0, 1, 2] and t.position[0, 0].tolist() == [0, 0]


def test_scan_errors():
    model = _small()
    ds = TensorDataset(torch.randn(4, 3, 64, 64), torch.zeros(4))
    with pytest.raises(ConfigError, match="unknown layer 'conv7'"):
        top_activations(model, ds, layers=["conv7"], progress=False)
    with pytest.raises(ConfigError, match="shuffle=False"):
        top_activations(model, DataLoader(ds, shuffle=True), layers=["conv1"], progress=False)
    sub = torch.utils.data.SubsetRandomSampler(range(4))
    with pytest.raises(ConfigError, match="SubsetRandomSampler"):
        top_activations(model, DataLoader(ds, sampler=sub), layers=["conv1"], progress=False)
    with pytest.raises(ConfigError, match="got 4 images for k=9"):
        top_activations(model, ds, layers=["conv1"], k=9, progress=False)


@pytest.mark.parametrize("layer,size", [("conv1", 7), ("conv2", 27), ("conv3", 75), ("conv4", 107), ("conv5", 139)])
def test_receptive_field_sizes_at_224(layer, size):
    top, left, bottom, right = receptive_field(zfnet(num_classes=10, input_size=224, fc_width=16), layer, (6, 6))
    assert bottom - top == size and right - left == size


@pytest.mark.parametrize("model_fn", [
    lambda: zfnet(num_classes=10, input_size=96, width=0.25, fc_width=16),
    lambda: torchvision.models.vgg11(num_classes=10),
])
@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "conv5"])
def test_receptive_field_matches_autograd(model_fn, layer):
    torch.manual_seed(1)
    model = model_fn().eval()
    S = 96
    x = torch.rand(1, 3, S, S, requires_grad=True)
    acts = []
    h = rectified_module(model, layer).register_forward_hook(lambda m, i, o: acts.append(o))
    model(x)
    h.remove()
    a = acts[0]
    pos = (a.shape[2] // 2, a.shape[3] // 2)
    ch = int(a[0, :, pos[0], pos[1]].argmax())
    assert a[0, ch, pos[0], pos[1]] > 0, "need an active unit (its gradient is not gated to zero)"
    (g,) = torch.autograd.grad(a[0, ch, pos[0], pos[1]], x)
    top, left, bottom, right = receptive_field(model, layer, pos)
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[max(0, top):bottom, max(0, left):right] = True
    nz = g[0].abs().sum(0) > 0
    assert not nz[~inside].any(), "gradient outside the receptive field"
    # the gradient reaches every edge of the box that lies inside the image
    t, b, l, r = max(0, top), min(S, bottom), max(0, left), min(S, right)
    assert nz[t:b, l:r].any()
    for inside_image, edge in [(top >= 0, nz[top, l:r] if top >= 0 else None),
                               (bottom <= S, nz[bottom - 1, l:r] if bottom <= S else None),
                               (left >= 0, nz[t:b, left] if left >= 0 else None),
                               (right <= S, nz[t:b, right - 1] if right <= S else None)]:
        if inside_image:
            assert edge.any(), "the box is larger than what reaches the unit"
    assert sum([top >= 0, bottom <= S, left >= 0, right <= S]) >= 2 or layer == "conv5"


def test_crop_patch_pads_outside_with_fill():
    img = torch.ones(3, 10, 10)
    p = crop_patch(img, (-2, -3, 5, 4), fill=0.5)
    assert p.shape == (3, 7, 7)
    assert (p[:, :2] == 0.5).all() and (p[:, :, :3] == 0.5).all() and (p[:, 2:, 3:] == 1).all()
    assert torch.equal(crop_patch(img, (2, 2, 5, 6)), img[:, 2:5, 2:6])


def test_rules_differ_only_in_relu_backward():
    torch.manual_seed(0)
    model = torchvision.models.vgg11(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    g = project_by_rule(model, x, "conv5", [3, 8], rule="gradient")
    d = project_by_rule(model, x, "conv5", [3, 8], rule="deconvnet")
    gb = project_by_rule(model, x, "conv5", [3, 8], rule="guided")
    assert g.shape == x.shape
    assert (d - g).abs().max() > 1e-3 * d.abs().max()
    assert (gb - d).abs().max() > 1e-3 * d.abs().max()  # VGG has ReLUs not followed by pooling
    with pytest.raises(ConfigError, match="unknown rule"):
        project_by_rule(model, x, "conv5", [3, 8], rule="lrp")
