"""The deconvnet (zfrepro.deconv): equal to captum's Deconvolution and to autograd with the ReLU
backward replaced by relu(grad), on every conv layer of random-weight AlexNet / VGG11 / ZFNet,
at the maximum, at other positions and at the borders; unpooling adds shared switches; the
cropped fast path equals the full computation; clear errors for models it cannot invert."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from zfrepro.deconv import DeconvError, DeconvNet, Projection, unpool
from zfrepro.receptive import receptive_field
from zfrepro.models import alexnet as zf_alexnet
from zfrepro.models import rectified_module, zfnet

try:
    import captum.attr as captum_attr
except ImportError:  # captum comes with the dev extra; only the comparisons below need it
    captum_attr = None
needs_captum = pytest.mark.skipif(captum_attr is None, reason="captum is not installed: pip install -e '.[dev]'")

TOL = 1e-4  # relative error, float32


# ----------------------------------------------------------------------------- helpers


def _init_convs(model: nn.Module, seed: int) -> nn.Module:
    """He-normal filters and small random biases (biases move switches; the deconv ignores them)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, 0.0, 0.1)
    return model.eval()


def _torchvision(name: str, n_flat: int, seed: int) -> nn.Module:
    """A torchvision model built without initialising its huge classifier (fast), then given
    random conv weights and a small classifier (never reached by the deconvnet)."""
    with torch.device("meta"):
        model = getattr(tvm, name)(weights=None)
    model = model.to_empty(device="cpu")
    model.classifier = nn.Linear(n_flat, 10)
    return _init_convs(model, seed)


def _truncated(model: nn.Module, layer: str) -> nn.Sequential:
    """The features stack up to ``layer``'s ReLU, with non-inplace ReLUs (for captum)."""
    relu = rectified_module(model, layer)
    mods = []
    for m in model.features:
        mods.append(nn.ReLU() if isinstance(m, nn.ReLU) else copy.deepcopy(m))
        if m is relu:
            break
    return nn.Sequential(*mods).eval()


def _captum(model: nn.Module, x: torch.Tensor, layer: str, ch, pos) -> torch.Tensor:
    net = _truncated(model, layer)
    target = [(int(c), int(r), int(q)) for c, (r, q) in zip(ch, pos)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return captum_attr.Deconvolution(net).attribute(x.clone(), target=target)


class _RectifyGrad(torch.autograd.Function):
    """ReLU forward, relu(grad) backward: the deconvnet's rule."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g.clamp_min(0)


class _LRNBackward(torch.autograd.Function):
    """LRN forward; backward ``identity`` (pass through) or ``scale`` (× the local divisor)."""

    @staticmethod
    def forward(ctx, x, m, mode):  # type: ignore[override]
        n, c = x.shape[:2]
        sq = F.pad(x * x, (0, 0, 0, 0, m.size // 2, (m.size - 1) // 2))
        window = sum(sq[:, i:i + c] for i in range(m.size))
        scale = (m.k + m.alpha / m.size * window) ** (-m.beta)
        ctx.mode = mode
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return (g if ctx.mode == "identity" else g * scale), None, None


def _autograd(model: nn.Module, x: torch.Tensor, layer: str, ch, pos, rule: str = "deconvnet",
              lrn: str = "jacobian") -> torch.Tensor:
    """Autograd on the features stack up to ``layer``'s ReLU; the seed of each unit is its own
    activation (the deconvnet keeps the value). ``rule``: "deconvnet" (relu(grad) at every
    ReLU) or "gradient" (plain chain rule)."""
    relu = rectified_module(model, layer)
    x = x.clone().requires_grad_(True)
    h = x
    for m in model.features:
        if isinstance(m, nn.ReLU):
            h = _RectifyGrad.apply(h) if rule == "deconvnet" else F.relu(h)
            if m is relu:
                break
        elif isinstance(m, nn.LocalResponseNorm) and lrn != "jacobian":
            h = _LRNBackward.apply(h, m, lrn)
        elif isinstance(m, nn.LocalResponseNorm):
            h = F.local_response_norm(h, m.size, m.alpha, m.beta, m.k)
        else:
            h = m(h)
    idx = torch.arange(x.shape[0])
    pos = torch.as_tensor(pos)
    units = h[idx, torch.as_tensor(ch), pos[:, 0], pos[:, 1]]
    (g,) = torch.autograd.grad(units.sum(), x)
    return g * units.detach()[:, None, None, None]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-image relative error ||a-b|| / ||b|| (0 when both are zero)."""
    worst = 0.0
    for ai, bi in zip(a, b):
        nb = float(bi.norm())
        if nb == 0.0:
            worst = max(worst, float(ai.norm()))
        else:
            worst = max(worst, float((ai - bi).norm()) / nb)
    return worst


def _direction_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Per-image relative error after scaling b onto a (b known only up to a positive factor)."""
    worst = 0.0
    for ai, bi in zip(a, b):
        na, nb = float(ai.norm()), float(bi.norm())
        if na == 0.0 or nb == 0.0:
            worst = max(worst, 0.0 if na == nb == 0.0 else 1.0)
        else:
            worst = max(worst, float((ai / na - bi / nb).norm()))
    return worst


def _units(dn: DeconvNet, x: torch.Tensor, layer: str):
    """Two batches of units per layer: each image's strongest channel at a corner of the map
    (then the centre), and each image's 1st/2nd/3rd strongest map at its maximum."""
    act = dn.forward_to(x, layer)
    n, c, h, w = act.shape
    corners = [(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0), (h // 2, w // 3)]
    pos = torch.tensor([corners[i % len(corners)] for i in range(n)])
    idx = torch.arange(n)
    ch_at = act[idx, :, pos[:, 0], pos[:, 1]].argmax(1)
    strongest = act.amax((2, 3))  # n×c
    ch_max = torch.stack([strongest[i].argsort(descending=True)[i % 3] for i in range(n)])
    return [(ch_at, pos), (ch_max, None)]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tv_alexnet():
    return _torchvision("alexnet", 256 * 6 * 6, seed=1)


@pytest.fixture(scope="module")
def tv_vgg11():
    return _torchvision("vgg11", 512 * 7 * 7, seed=2)


@pytest.fixture(scope="module")
def zf_model():
    """ZFNet (Fig. 3) at quarter width, 112 px: conv1 leaves a row over (output_padding 1) and
    ceil-mode pools hang over the edge."""
    return _init_convs(zfnet(num_classes=10, input_size=112, width=0.25, fc_width=32), seed=3)


# ----------------------------------------------------------------------------- against captum


def test_layers_in_forward_order(tv_alexnet, tv_vgg11, zf_model):
    assert DeconvNet(tv_alexnet).layers == [f"conv{i}" for i in range(1, 6)]
    assert DeconvNet(tv_vgg11).layers == [f"conv{i}" for i in range(1, 9)]
    assert DeconvNet(zf_model).layers == [f"conv{i}" for i in range(1, 6)]


@needs_captum
@pytest.mark.parametrize("which,size", [("alexnet", 102), ("vgg11", 44)])
def test_equals_captum_every_layer(which, size, tv_alexnet, tv_vgg11):
    """AlexNet at 102 px: conv1 (11×11/4, pad 2) leaves 3 input rows over; VGG11 at 44 px: the
    pools on the 11×11 and 5×5 maps drop a row. Every conv, corners and maxima, 4 images."""
    model = tv_alexnet if which == "alexnet" else tv_vgg11
    torch.manual_seed(10)
    x = torch.randn(4, 3, size, size)
    dn = DeconvNet(model)
    for layer in dn.layers:
        for k, (ch, pos) in enumerate(_units(dn, x, layer)):
            got = dn.project(x, layer, ch, pos, return_units=True)
            assert isinstance(got, Projection)
            assert got.pixels.shape == x.shape
            assert bool((got.activations > 0).all()), (layer, got.activations)
            ref = _captum(model, x, layer, ch, got.positions) * got.activations[:, None, None, None]
            assert _rel_err(got.pixels, ref) <= TOL, (which, layer, pos)
            if k == 0:  # the border units, also without the receptive-field crop
                full = dn.project(x, layer, ch, pos, crop=False)
                assert _rel_err(full, ref) <= TOL, (which, layer, "crop=False")


def test_border_units_reach_leftover_rows(tv_alexnet):
    """AlexNet conv1 at 102 px: the last unit's window covers input rows 90..100, which only a
    conv_transpose with output_padding reaches; rows/cols 101 get nothing."""
    torch.manual_seed(11)
    x = torch.randn(2, 3, 102, 102)
    dn = DeconvNet(tv_alexnet)
    h = dn.forward_to(x, "conv1").shape[-1]
    assert h == 24 and (h - 1) * 4 + 11 - 4 == 99  # plain conv_transpose would give 99 rows
    pos = [(h - 1, h - 1), (h - 1, 0)]
    ch = dn.forward_to(x, "conv1")[torch.arange(2), :, h - 1, :].amax(-1).argmax(1)
    p = dn.project(x, "conv1", ch, pos, return_units=True)
    w = tv_alexnet.features[0].weight
    for i, (r, c) in enumerate(pos):
        box = p.pixels[i, :, r * 4 - 2: r * 4 + 9, max(0, c * 4 - 2): c * 4 + 9]
        expect = p.activations[i] * w[ch[i]][:, :, :box.shape[-2]]
        expect = expect[:, :, -box.shape[-1]:] if c == 0 else expect
        assert torch.allclose(box, expect, atol=1e-6)
        assert float(p.pixels[i].abs().sum()) == pytest.approx(float(box.abs().sum()), rel=1e-6)
    assert float(p.pixels[:, :, 101].abs().max()) == 0.0
    assert float(p.pixels[:, :, 100].abs().max()) > 0.0


# ----------------------------------------------------------------------------- against autograd


def test_equals_autograd_deconv_rule_and_differs_from_gradient(tv_vgg11):
    torch.manual_seed(12)
    x = torch.randn(3, 3, 44, 44)
    dn = DeconvNet(tv_vgg11)
    for layer in ("conv2", "conv5", "conv8"):
        for ch, pos in _units(dn, x, layer):
            got = dn.project(x, layer, ch, pos, return_units=True)
            ref = _autograd(tv_vgg11, x, layer, ch, got.positions, rule="deconvnet")
            assert _rel_err(got.pixels, ref) <= TOL, layer
            grad = _autograd(tv_vgg11, x, layer, ch, got.positions, rule="gradient")
            assert _rel_err(got.pixels, grad) > 0.1, layer  # the deconvnet is not the gradient


def test_crop_equals_full_computation(zf_model):
    """The receptive-field crop is exact: random units, every layer, all three norm treatments."""
    torch.manual_seed(13)
    x = torch.randn(4, 3, 112, 112)
    for norm in ("identity", "scale", "jacobian"):
        dn = DeconvNet(zf_model, norm=norm)
        for layer in dn.layers if norm == "identity" else ("conv2", "conv5"):
            act = dn.forward_to(x, layer)
            n, c, h, w = act.shape
            pos = torch.stack([torch.randint(0, h, (n,)), torch.randint(0, w, (n,))], 1)
            pos[0] = torch.tensor([0, 0])
            pos[1] = torch.tensor([h - 1, w - 1])
            ch = act[torch.arange(n), :, pos[:, 0], pos[:, 1]].argmax(1)
            fast = dn.project(x, layer, ch, pos)
            full = dn.project(x, layer, ch, pos, crop=False)
            assert float(full.abs().max()) > 0
            assert _rel_err(fast, full) <= 1e-5, (norm, layer)


def test_batch_equals_one_image_at_a_time(zf_model):
    torch.manual_seed(14)
    x = torch.randn(3, 3, 112, 112)
    dn = DeconvNet(zf_model)
    batch = dn.project(x, "conv4", [1, 5, 9])
    for i, c in enumerate([1, 5, 9]):
        one = dn.project(x[i:i + 1], "conv4", [c])
        assert torch.allclose(batch[i:i + 1], one, rtol=1e-5, atol=1e-6 * float(one.abs().max()))


# ----------------------------------------------------------------------------- the paper's models


@needs_captum
def test_zfnet_and_alexnet_replica_with_lrn_removed_match_captum():
    """zfnet/alexnet of zfrepro.models with their own (§3) initialisation: norm="identity"
    equals captum's NeuronDeconvolution on a copy whose LRN modules are nn.Identity (with these
    small weights the normalisation scales every position alike, so the switches agree)."""
    torch.manual_seed(15)
    for build, size in ((zfnet, 112), (zf_alexnet, 99)):
        model = build(num_classes=10, input_size=size, width=0.25, fc_width=32).eval()
        bare = copy.deepcopy(model)
        for name, m in list(bare.features.named_children()):
            if isinstance(m, nn.LocalResponseNorm):
                setattr(bare.features, name, nn.Identity())
        x = torch.randn(3, 3, size, size)
        dn = DeconvNet(model, norm="identity")
        for layer in dn.layers:
            ch = dn.forward_to(x, layer).amax((2, 3)).argmax(1)
            got = dn.project(x, layer, ch, return_units=True)
            nd = captum_attr.NeuronDeconvolution(bare, rectified_module(bare, layer))
            idx, pos = torch.arange(3), got.positions
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = nd.attribute(x.clone(), lambda out: out[idx, ch, pos[:, 0], pos[:, 1]])
            assert _direction_err(got.pixels, ref) <= TOL, (build.__name__, layer)


@needs_captum
@pytest.mark.parametrize("norm", ["identity", "scale", "jacobian"])
def test_norm_treatments_match_autograd(zf_model, norm):
    """With large activations (He init) the normalisation matters; each treatment equals autograd
    with the matching LRN backward (jacobian: captum's NeuronDeconvolution on the whole model)."""
    torch.manual_seed(16)
    x = torch.randn(3, 3, 112, 112)
    dn = DeconvNet(zf_model, norm=norm)
    for layer in ("conv2", "conv5"):
        ch = dn.forward_to(x, layer).amax((2, 3)).argmax(1)
        got = dn.project(x, layer, ch, return_units=True)
        ref = _autograd(zf_model, x, layer, ch, got.positions, lrn=norm)
        assert _rel_err(got.pixels, ref) <= TOL, (norm, layer)
        if norm == "jacobian":
            nd = captum_attr.NeuronDeconvolution(zf_model, rectified_module(zf_model, layer))
            idx, pos = torch.arange(3), got.positions
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cap = nd.attribute(x.clone(), lambda out: out[idx, ch, pos[:, 0], pos[:, 1]])
            assert _rel_err(got.pixels, cap * got.activations[:, None, None, None]) <= TOL


def test_norm_treatments_differ_when_activations_are_large(zf_model):
    torch.manual_seed(17)
    x = 4 * torch.randn(2, 3, 112, 112)
    outs = [DeconvNet(zf_model, norm=n).project(x, "conv3", [0, 1], crop=False) for n in ("identity", "scale")]
    assert _direction_err(outs[0], outs[1]) > 1e-3


# ----------------------------------------------------------------------------- unpooling, edge cases


def _tiny(pool: nn.Module, conv2: nn.Conv2d) -> nn.Module:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1 = nn.Conv2d(1, 1, 1)
            with torch.no_grad():
                c1.weight.fill_(1.0)
                c1.bias.zero_()
                conv2.weight.fill_(1.0)
                conv2.bias.zero_()
            self.features = nn.Sequential(c1, nn.ReLU(), pool, conv2, nn.ReLU())

        def forward(self, x):
            return self.features(x)

    return Tiny().eval()


@needs_captum
def test_unpooling_adds_where_overlapping_windows_share_a_switch():
    """5×5 input whose centre is the maximum of all four overlapping 3×3/2 windows: the 2×2 conv2
    unit sends 40 to each pooled position, all four land on the centre: 160 (max_unpool2d would
    overwrite and give 40)."""
    model = _tiny(nn.MaxPool2d(3, 2), nn.Conv2d(1, 1, 2))
    x = 1.0 + 0.01 * torch.arange(25.0).view(1, 1, 5, 5)
    x[0, 0, 2, 2] = 10.0
    dn = DeconvNet(model)
    for crop in (True, False):
        p = dn.project(x, "conv2", [0], [(0, 0)], crop=crop, return_units=True)
        assert float(p.activations[0]) == pytest.approx(40.0)
        expect = torch.zeros_like(x)
        expect[0, 0, 2, 2] = 160.0
        assert torch.allclose(p.pixels, expect), crop
    ref = _captum(model, x, "conv2", [0], [(0, 0)]) * 40.0
    assert torch.allclose(ref, expect)


@needs_captum
def test_ceil_mode_and_padded_pooling_match_captum():
    """Pools with padding and ceil_mode windows hanging over the edge (7×7 input)."""
    torch.manual_seed(18)
    for pool in (nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(2, 2, ceil_mode=True)):
        model = _tiny(pool, nn.Conv2d(1, 1, 2))
        with torch.no_grad():
            model.features[3].weight.normal_()
        x = torch.randn(4, 1, 7, 7)
        dn = DeconvNet(model)
        h, w = dn.forward_to(x, "conv2").shape[-2:]
        pos = [(h - 1, w - 1), (0, 0), (h - 1, 0), (0, w - 1)]
        got = dn.project(x, "conv2", [0] * 4, pos, return_units=True)
        ref = _captum(model, x, "conv2", [0] * 4, pos) * got.activations[:, None, None, None]
        assert _rel_err(got.pixels, ref) <= TOL, pool


def test_output_padding_border_unit():
    """3×3/2 conv, pad 1, on 6×6: 3×3 map; conv_transpose without output_padding gives 5×5. The
    bottom-right unit sees rows/cols 3..5 and must project onto them."""
    conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
    torch.manual_seed(19)
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.rand(1, 1, 6, 6) + 0.5
    with torch.no_grad():
        conv.weight.abs_()
        conv.bias.zero_()
    dn = DeconvNet(model)
    for crop in (True, False):
        p = dn.project(x, "conv1", [1], [(2, 2)], crop=crop, return_units=True)
        expect = torch.zeros_like(x)
        expect[0, 0, 3:6, 3:6] = p.activations[0] * conv.weight[1, 0]
        assert torch.allclose(p.pixels, expect, atol=1e-6), crop


def test_zero_activation_projects_to_zeros_and_strict_raises(zf_model):
    torch.manual_seed(20)
    x = torch.randn(2, 3, 112, 112)
    dn = DeconvNet(zf_model)
    act = dn.forward_to(x, "conv3")
    zeros = (act[0] == 0).nonzero()
    c, r, q = (int(v) for v in zeros[0])
    chan = int(act[1].amax((1, 2)).argmax())
    p = dn.project(x, "conv3", [c, chan], [(r, q), (0, 0)], return_units=True)
    assert float(p.activations[0]) == 0.0
    assert float(p.pixels[0].abs().max()) == 0.0
    with pytest.raises(DeconvError, match=r"zero activation.*strict=False"):
        dn.project(x, "conv3", [c, chan], [(r, q), (0, 0)], strict=True)


def test_channels_accept_list_tuple_tensor_and_int(zf_model):
    torch.manual_seed(21)
    x = torch.randn(2, 3, 112, 112)
    dn = DeconvNet(zf_model)
    a = dn.project(x, "conv2", [3, 3])
    assert torch.equal(a, dn.project(x, "conv2", (3, 3)))
    assert torch.equal(a, dn.project(x, "conv2", torch.tensor([3, 3])))
    assert torch.equal(a, dn.project(x, "conv2", 3))
    assert torch.equal(a, dn.project(x, "conv2", [3, 3], positions=None))


# ----------------------------------------------------------------------------- helpers for notebooks


def test_trace_lists_every_step_and_ends_at_the_projection(zf_model):
    torch.manual_seed(22)
    x = torch.randn(2, 3, 112, 112)
    dn = DeconvNet(zf_model)
    steps = dn.trace(x, "conv2", [4, 7])
    names = [s for s, _ in steps]
    assert names == ["conv2: selected unit", "relu2: rectify", "conv2: filter (transposed)",
                     "norm1: identity", "pool1: unpool", "relu1: rectify", "conv1: filter (transposed)"]
    assert int((steps[0][1] != 0).sum()) == 2
    assert steps[4][1].shape[-1] == 54  # pool1 unpools to conv1's map
    assert torch.allclose(steps[-1][1], dn.project(x, "conv2", [4, 7]), rtol=1e-5, atol=1e-7)


def test_forward_to_matches_the_models_rectified_output(tv_alexnet):
    torch.manual_seed(23)
    x = torch.randn(2, 3, 102, 102)
    seen = {}
    relu = rectified_module(tv_alexnet, "conv4")
    h = relu.register_forward_hook(lambda m, i, o: seen.setdefault("a", o.clone()))
    with torch.no_grad():
        tv_alexnet(x)
    h.remove()
    assert torch.allclose(DeconvNet(tv_alexnet).forward_to(x, "conv4"), seen["a"])


def test_forward_replays_the_model_bit_for_bit(zf_model):
    """Through both contrast normalisations and pools: the switches are the model's own."""
    torch.manual_seed(26)
    x = torch.randn(3, 3, 112, 112)
    seen = {}
    h = rectified_module(zf_model, "conv4").register_forward_hook(lambda m, i, o: seen.setdefault("a", o.clone()))
    with torch.no_grad():
        zf_model(x)
    h.remove()
    for norm in ("identity", "scale", "jacobian"):
        assert torch.equal(DeconvNet(zf_model, norm=norm).forward_to(x, "conv4"), seen["a"])


def test_projection_stays_inside_the_receptive_field(zf_model):
    torch.manual_seed(24)
    x = torch.randn(4, 3, 112, 112)
    dn = DeconvNet(zf_model)
    for layer in ("conv2", "conv3"):
        h, w = dn.forward_to(x, layer).shape[-2:]
        pos = [(0, 0), (h - 1, w - 1), (h // 2, 1), (1, w // 2)]
        p = dn.project(x, layer, [0, 1, 2, 3], pos)
        for i, (r, c) in enumerate(pos):
            top, left, bottom, right = receptive_field(zf_model, layer, (r, c))
            inside = torch.zeros(112, 112, dtype=torch.bool)
            inside[max(0, top):bottom, max(0, left):right] = True
            assert float(p[i][:, ~inside].abs().max()) == 0.0


# ----------------------------------------------------------------------------- errors


def test_unknown_layer_lists_valid_names(zf_model):
    dn = DeconvNet(zf_model)
    x = torch.randn(1, 3, 112, 112)
    with pytest.raises(DeconvError, match="conv1, conv2, conv3, conv4, conv5"):
        dn.project(x, "conv9", [0])
    with pytest.raises(DeconvError, match="fully connected"):
        dn.project(x, "fc6", [0])


def test_out_of_range_channels_and_positions(zf_model):
    dn = DeconvNet(zf_model)
    x = torch.randn(2, 3, 112, 112)
    with pytest.raises(DeconvError, match="channel 96 is out of range for conv3.*0..95"):
        dn.project(x, "conv3", [0, 96])
    with pytest.raises(DeconvError, match="outside conv3's 6×6 map"):
        dn.project(x, "conv3", [0, 1], [(0, 0), (6, 2)])
    with pytest.raises(DeconvError, match="outside"):
        dn.project(x, "conv3", [0, 1], [(0, -1), (0, 0)])
    with pytest.raises(DeconvError, match="2 ints"):
        dn.project(x, "conv3", [0, 1, 2])
    with pytest.raises(DeconvError, match="2×2"):
        dn.project(x, "conv3", [0, 1], [(0, 0)])
    with pytest.raises(DeconvError, match="N×C×H×W"):
        dn.project(x[0], "conv3", [0])
    with pytest.raises(DeconvError, match="norm"):
        DeconvNet(zf_model, norm="divide")


def test_vgg11_bn_is_refused_naming_batchnorm():
    with torch.device("meta"):
        model = tvm.vgg11_bn(weights=None)
    with pytest.raises(DeconvError, match=r"features\.1 \(BatchNorm2d\)") as err:
        DeconvNet(model)
    assert "\n" not in str(err.value)


class _FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))

    def forward(self, x):
        x = F.relu(self.features[0](x))
        return F.relu(self.features[2](self.features[1](x)))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())

    def forward(self, x):
        h = self.features[1](self.features[0](x))
        return self.features[3](self.features[2](h) + h)


class _HiddenReLU(nn.Module):
    """Every conv has its ReLU module, but forward also rectifies the input: the stack alone
    would not reproduce conv1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())

    def forward(self, x):
        return self.features(F.relu(x))


class _Custom(nn.Module):
    def forward(self, x):
        return x * 2


def test_models_it_cannot_invert_are_refused_naming_the_module():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(DeconvError, match=r"conv1 .*features\.1.*MaxPool2d.*nn\.ReLU"):
        DeconvNet(_FunctionalReLU())
    dn = DeconvNet(_Residual())
    dn.project(x, "conv1", [0])  # up to conv1 the stack is faithful
    with pytest.raises(DeconvError, match=r"features\.3 \(relu2, ReLU\).*residual"):
        dn.project(x, "conv2", [0])
    with pytest.raises(DeconvError, match=r"features\.0 \(conv1, Conv2d\)"):
        DeconvNet(_HiddenReLU()).project(x, "conv1", [0])
    custom = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), _Custom(), nn.Conv2d(4, 4, 3), nn.ReLU())
    with pytest.raises(DeconvError, match=r"2 \(_Custom\)"):
        DeconvNet(custom)
    with pytest.raises(DeconvError, match="no plain sequential conv stack"):
        DeconvNet(_Custom())
    # with the check off the faithful prefix still works and nothing is verified
    DeconvNet(_Residual(), check=False).project(x, "conv2", [0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(zf_model):
    torch.manual_seed(25)
    x = torch.randn(3, 3, 112, 112)
    cpu = DeconvNet(zf_model).project(x, "conv5", [0, 1, 2])
    gpu_model = copy.deepcopy(zf_model).cuda()
    gpu = DeconvNet(gpu_model).project(x.cuda(), "conv5", [0, 1, 2])
    assert gpu.device.type == "cuda"
    assert _rel_err(gpu.cpu(), cpu) <= 1e-4


def test_public_unpool_adds_shared_switches_and_is_the_transpose_of_pooling():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    pooled, sw = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
    g = torch.randn_like(pooled)
    # <unpool(g), x> == <g, pool(x)> restricted to the switches: unpool is the adjoint of max pooling
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.max_pool2d(xr, 3, 2, ceil_mode=True), xr, g)
    assert torch.allclose(unpool(g, sw, x.shape[-2:]), ref)
    one = torch.zeros(1, 1, 5, 5)
    one[0, 0, 2, 2] = 1.0
    p, s = F.max_pool2d(one, 3, 2, return_indices=True)
    assert unpool(torch.ones_like(p), s, (5, 5))[0, 0, 2, 2] == 4.0


def test_values_replace_the_kept_activation(zf_model):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 112, 112)
    dn = DeconvNet(zf_model)
    base = dn.project(x, "conv3", [1, 1], return_units=True)
    doubled = dn.project(x, "conv3", [1, 1], base.positions, values=2 * base.activations)
    assert torch.allclose(doubled, 2 * base.pixels, rtol=1e-5, atol=1e-7)
    with pytest.raises(DeconvError, match="one per image"):
        dn.project(x, "conv3", [1, 1], values=[1.0])
