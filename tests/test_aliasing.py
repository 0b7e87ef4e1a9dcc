"""Fig. 6 measures: dead filters, dominance and the FFT high-frequency share."""

from __future__ import annotations

import math

import pytest
import torch

from zfrepro.aliasing import aliased_share, dead_filter_fraction, dominance, filter_rms, high_frequency_share, summarize
from zfrepro.errors import ConfigError


def _grid(n=16):
    return torch.meshgrid(torch.arange(float(n)), torch.arange(float(n)), indexing="ij")


def test_high_frequency_share_separates_smooth_from_aliased_patterns():
    yy, xx = _grid(24)
    blob = torch.exp(-((yy - 12) ** 2 + (xx - 12) ** 2) / 30)
    checker = (yy + xx) % 2 * 2 - 1
    period4 = torch.cos(2 * math.pi * xx / 4)  # a stride-4 artefact: 0.5 × Nyquist
    period12 = torch.cos(2 * math.pi * xx / 12)  # a slow ramp: 1/6 Nyquist
    x = torch.stack([t.expand(3, 24, 24) for t in (blob, checker, period4, period12)])
    share = high_frequency_share(x)
    assert share[0] < 0.05 and share[3] < 0.1
    assert share[1] > 0.99 and share[2] > 0.9
    # a constant has no energy once its mean is removed
    assert torch.isnan(high_frequency_share(torch.ones(1, 3, 8, 8)))[0]
    with pytest.raises(ConfigError, match="N×C×H×W"):
        high_frequency_share(torch.zeros(3, 8, 8))
    with pytest.raises(ConfigError, match="cutoff"):
        high_frequency_share(x, cutoff=2.0)


def test_white_noise_share_matches_the_area_above_the_cutoff():
    torch.manual_seed(0)
    noise = torch.randn(200, 3, 32, 32)
    # white noise spreads energy evenly over the square [-1, 1]² of frequencies (in Nyquist units):
    # the share above radius r is 1 - π r² / 4
    share = float(high_frequency_share(noise, cutoff=0.6, pad_to=32).mean())
    assert share == pytest.approx(1 - math.pi * 0.36 / 4, abs=0.02)


def test_dead_filters_and_dominance():
    w = torch.randn(20, 3, 7, 7)
    w = w / filter_rms(w).view(-1, 1, 1, 1) * 0.1  # all filters RMS 0.1
    assert dead_filter_fraction(w) == 0.0
    assert dominance(w) == pytest.approx(0.05, abs=1e-6)
    w[:4] *= 0.01  # 4 of 20 nearly silent
    assert dead_filter_fraction(w) == pytest.approx(0.2)
    one = torch.zeros(20, 3, 7, 7)
    one[3] = 1.0
    assert dominance(one) == pytest.approx(1.0) and dead_filter_fraction(one) == pytest.approx(0.95)
    assert dead_filter_fraction(torch.zeros(4, 3, 3, 3)) == 1.0


def test_summarize_ignores_nan():
    s = summarize(torch.tensor([1.0, 2.0, float("nan"), 3.0]))
    assert s["median"] == 2.0 and s["n"] == 3
    assert summarize([])["n"] == 0


def _conv(weight, stride, padding=0):
    conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def test_aliased_share_of_an_identity_filter_on_white_noise_is_what_the_lattice_leaves_out():
    # a delta filter passes white noise unchanged: its flat spectrum folds outside the Nyquist box,
    # a share 1 - 1/(s_y s_x) of the frequency plane (up to the noise's sampling)
    torch.manual_seed(0)
    noise = torch.randn(32, 1, 64, 64)
    delta = torch.zeros(1, 1, 3, 3)
    delta[0, 0, 1, 1] = 1.0
    for stride, expected in [((1, 1), 0.0), ((2, 2), 0.75), ((4, 4), 15 / 16), ((2, 4), 7 / 8)]:
        share = float(aliased_share(_conv(delta, stride, 1), noise)[0])
        assert share == pytest.approx(expected, abs=0.02), stride


def test_aliased_share_separates_gratings_above_and_below_the_strides_nyquist():
    # vertical gratings (11×11, Hann-windowed both ways) at 0.04, 0.18 and 0.4 cycles per pixel along x
    torch.manual_seed(1)
    x = torch.arange(11.0) - 5
    window = torch.hann_window(13, periodic=False)[1:-1]
    bank = torch.stack([torch.cos(2 * math.pi * f * x)[None, :] * window[None, :] * window[:, None]
                        for f in (0.04, 0.18, 0.4)])[:, None]
    noise = torch.randn(16, 1, 72, 72)
    at2, at4 = (aliased_share(_conv(bank, s), noise) for s in (2, 4))
    assert at2[0] < 0.05 and at2[1] < 0.15 and at2[2] > 0.95  # stride 2 folds above 0.25 cycles/px only
    assert at4[0] < 0.1 and at4[1] > 0.8 and at4[2] > 0.95  # stride 4 folds above 0.125 as well
    whole = float(aliased_share(_conv(bank, 4), noise, per_filter=False))
    assert min(at4) < whole < max(at4)  # the layer's share is an energy-weighted mean of its filters'


def test_aliased_share_rejects_what_it_cannot_measure():
    conv = _conv(torch.randn(2, 3, 3, 3), 2)
    with pytest.raises(ConfigError, match="N×3×H×W"):
        aliased_share(conv, torch.randn(2, 1, 16, 16))
    with pytest.raises(ConfigError, match="nn.Conv2d"):
        aliased_share(torch.nn.Linear(3, 3), torch.randn(2, 3, 16, 16))


def test_fig6_measures_read_filter_structure_and_the_conv1_step():
    """The (b, c) columns: a ZFNet whose conv1 holds oriented gratings under a Gaussian envelope against
    one whose conv1 is white noise (a filter that never left a random start): the first is structured,
    the second has no structured filter, and neither is faint; "conv1 lr ×" is each run's multiplier."""
    from zfrepro.aliasing import fig6_measures
    from zfrepro.models import build_model, get_layer

    c = torch.arange(7.0) - 3
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    g = torch.Generator().manual_seed(0)
    nets = {name: build_model("zfnet", num_classes=10, input_size=64, width=0.25, fc_width=32) for name in ("gabor", "noise")}
    w = get_layer(nets["gabor"], "conv1").weight
    with torch.no_grad():
        for i in range(w.shape[0]):
            th = math.pi * i / w.shape[0]
            u = xx * math.cos(th) + yy * math.sin(th)
            pattern = torch.exp(-(xx ** 2 + yy ** 2) / 8) * torch.cos(2 * math.pi * 0.2 * u)
            w[i] = 0.05 * torch.randn(3, 1, 1, generator=g) * pattern
        get_layer(nets["noise"], "conv1").weight.copy_(0.01 * torch.randn(w.shape, generator=g))
    t = fig6_measures(nets, {"gabor": 0.5, "noise": 0.4}, {}, first_lr_mult={"gabor": 3, "noise": 32})
    assert t.loc["gabor", "structure conv1"] > 0.95 and t.loc["gabor", "unstructured conv1"] == 0.0
    assert t.loc["noise", "structure conv1"] < 0.45 and t.loc["noise", "unstructured conv1"] > 0.9
    assert (t["dead conv1 filters"] == 0.0).all()  # the noise filters are not faint: RMS alone misses them
    assert t["conv1 lr ×"].tolist() == [3.0, 32.0] and "aliased share conv1" not in t
