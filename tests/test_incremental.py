"""Incremental occlusion inference equals brute force on every supported architecture, shape and layer."""

from __future__ import annotations

import os

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


class _Stack(nn.Module):
    def __init__(self, features: nn.Sequential, c: int, n: int = 5):
        super().__init__()
        self.features = features
        self.head = nn.Linear(c, n)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.mark.parametrize("seed", range(int(os.environ.get("ZF_PROPERTY_SEEDS", "12"))))
def test_random_stacks_rectangles_and_positions_equal_brute_force(seed):
    """Property test: random conv/pool stacks (strides larger than kernels, padding, ceil_mode, groups,
    non-square kernels, an unsupported layer part-way), random rectangles and positions."""
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    torch.manual_seed(seed)
    while True:  # draw until the stack accepts the image (random strides can shrink maps to nothing)
        layers, c = [], 3
        for i in range(r(2, 4)):
            out = 4 * r(1, 3)
            k = (r(1, 5), r(1, 5))
            layers += [nn.Conv2d(c, out, k, stride=(r(1, 3), r(1, 3)), padding=(r(0, k[0] // 2), r(0, k[1] // 2)),
                                 groups=2 if (c % 2 == 0 and out % 2 == 0 and r(0, 1)) else 1), nn.ReLU()]
            c = out
            if r(0, 1):
                pk = r(2, 3)
                layers.append(nn.MaxPool2d(pk, stride=r(1, 3), padding=r(0, pk // 2), ceil_mode=bool(r(0, 1))))
            if r(0, 1):
                layers.append(nn.LocalResponseNorm(3))
        if seed % 3 == 0:
            layers.append(nn.AdaptiveAvgPool2d(5))  # not supported: the engine assembles the maps before it
        model = _Stack(nn.Sequential(*layers), c).eval()
        h, w = r(40, 70), r(40, 70)
        img = torch.randn(3, h, w)
        try:
            with torch.no_grad():
                model(img[None])
            break
        except RuntimeError:
            continue
    bh, bw = r(1, 15), r(1, 15)
    starts = [(r(0, h - bh), r(0, w - bw)) for _ in range(9)]
    engine = IncrementalFeatures(model, img, (bh, bw), starts, None)
    assert engine.exact
    patches = torch.randn(len(starts), 3, bh, bw)
    with torch.no_grad():
        logits, _ = engine.run(patches, starts)
        x = img.expand(len(starts), 3, h, w).clone()
        for b, (r0, c0) in enumerate(starts):
            x[b, :, r0:r0 + bh, c0:c0 + bw] = patches[b]
        ref = model(x)
    assert torch.allclose(logits, ref, atol=1e-5, rtol=1e-4), (seed, [type(m).__name__ for m in layers])
