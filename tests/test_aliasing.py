"""Fig. 6 measures: dead filters, dominance and the FFT high-frequency share."""

from __future__ import annotations

import math

import pytest
import torch

from zfrepro.aliasing import dead_filter_fraction, dominance, filter_rms, high_frequency_share, summarize
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
