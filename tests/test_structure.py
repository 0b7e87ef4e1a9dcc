"""Structure of layer-1 filters and noise of projections (issue #14): synthetic inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from zfrepro.errors import ConfigError
from zfrepro.structure import (dominant_pattern, edge_strength, filter_structure, fit_gabor, projection_alignment,
                               projection_noise, summarize_structure)


def _gabor_bank(n: int, k: int = 7, snr: float = 0.0, seed: int = 0) -> torch.Tensor:
    """n colour Gabors / blobs at random centre, orientation, frequency, widths, phase and colour,
    unit RMS, plus white noise of RMS 1/snr when snr > 0."""
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(k).double() - (k - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    out = []
    for _ in range(n):
        r = torch.rand(7, generator=g).double()
        th, f, ph = r[0] * math.pi, 0.4 * r[1], r[4] * 2 * math.pi
        su, sv = 0.1 * k + 0.3 * k * r[2], 0.1 * k + 0.3 * k * r[3]
        cy, cx = (r[5] - 0.5) * 0.3 * k, (r[6] - 0.5) * 0.3 * k
        u = (xx - cx) * math.cos(th) + (yy - cy) * math.sin(th)
        v = -(xx - cx) * math.sin(th) + (yy - cy) * math.cos(th)
        pattern = torch.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2)) * torch.cos(2 * math.pi * f * u + ph)
        w = torch.randn(3, generator=g).double()[:, None, None] * pattern[None]
        w = w / w.pow(2).mean().sqrt()
        if snr:
            w = w + torch.randn(w.shape, generator=g).double() / snr
        out.append(w)
    return torch.stack(out).float()


def test_structure_is_one_for_gabors_and_blobs_and_low_for_noise():
    clean = filter_structure(_gabor_bank(24))
    assert clean.min() > 0.97 and clean.median() > 0.99
    noisy = filter_structure(_gabor_bank(24, snr=3.0, seed=1))
    assert noisy.median() > 0.9
    white = filter_structure(torch.randn(48, 3, 7, 7, generator=torch.Generator().manual_seed(2)))
    assert 0.15 < white.median() < 0.45 and (white >= 0.6).float().mean() < 0.1
    he = torch.nn.init.kaiming_normal_(torch.empty(48, 3, 7, 7), generator=torch.Generator().manual_seed(3))
    assert filter_structure(he).median() < 0.45


def test_structure_does_not_depend_on_scale_sign_or_colour():
    w = _gabor_bank(6, seed=4)
    base = filter_structure(w)
    assert torch.allclose(filter_structure(-3.0 * w), base, atol=1e-4)
    mixed = w[:, [2, 0, 1]]  # another colour vector, the same spatial pattern
    assert torch.allclose(filter_structure(mixed), base, atol=1e-4)


def test_structure_falls_as_noise_grows_and_works_at_11_px():
    scores = [float(filter_structure(_gabor_bank(16, snr=s, seed=5)).median()) for s in (10.0, 3.0, 1.0, 0.3)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.95 and scores[-1] < 0.5
    assert filter_structure(_gabor_bank(8, k=11, seed=6)).median() > 0.97   # the AlexNet replica's 11×11 filters


def test_dominant_pattern_is_the_rank_one_part():
    pattern = torch.randn(1, 5, 5, dtype=torch.float64)
    colour = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    w = colour[None, :, None, None] * pattern[:, None]
    p, c = dominant_pattern(w)
    assert torch.allclose(c[0].abs(), colour)
    assert torch.allclose((c[0][:, None, None] * p[0]), w[0], atol=1e-10)


def test_fit_of_a_zero_pattern_is_nan_and_bad_shapes_are_refused():
    r2, _ = fit_gabor(torch.zeros(2, 5, 5))
    assert torch.isnan(r2).all()
    with pytest.raises(ConfigError, match="N×C×k×k"):
        filter_structure(torch.zeros(3, 7, 7))
    with pytest.raises(ConfigError, match="at least 3×3"):
        fit_gabor(torch.zeros(1, 2, 2))


def test_summary_counts_structured_filters():
    w = torch.cat([_gabor_bank(30, seed=7), torch.randn(10, 3, 7, 7, generator=torch.Generator().manual_seed(8))])
    s = summarize_structure(w)
    assert s["n"] == 40 and s["share_structured"] == pytest.approx(0.75, abs=0.026)
    assert s["median_r2"] > 0.95


def test_projection_noise_is_one_for_a_copy_and_large_for_pixel_noise():
    g = torch.Generator().manual_seed(9)
    yy, xx = torch.meshgrid(torch.arange(27.0), torch.arange(27.0), indexing="ij")
    patch = torch.stack([torch.exp(-((yy - 13) ** 2 + (xx - 10 - i) ** 2) / 40) for i in range(3)])[None]
    patches = patch.repeat(4, 1, 1, 1)
    same = projection_noise(patches * 5.0, patches)
    assert torch.allclose(same, torch.ones(4), atol=1e-5)
    noisy = projection_noise(patches + 0.5 * torch.randn(patches.shape, generator=g), patches)
    assert (noisy > 5).all()
    # leading shapes (maps × k) are kept
    assert projection_noise(patches.reshape(2, 2, 3, 27, 27), patches.reshape(2, 2, 3, 27, 27)).shape == (2, 2)
    with pytest.raises(ConfigError, match="same shape"):
        projection_noise(patches, patches[:, :, :5])


def _scenes(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    """n images of 2-4 random coloured rectangles on a random background: edges at random places."""
    g = torch.Generator().manual_seed(seed)
    out = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size).clone()
    for i in range(n):
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            y0, x0 = (int(v) for v in torch.randint(0, size - 8, (2,), generator=g))
            h, w = (int(v) for v in torch.randint(6, size // 2, (2,), generator=g))
            out[i, :, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    return out


def test_edge_strength_marks_a_step_edge_and_nothing_on_flat_ground():
    x = torch.zeros(1, 3, 24, 24)
    x[..., 12:] = 1.0  # a vertical step between columns 11 and 12
    e = edge_strength(x, sigma=1.0)[0]
    assert e.shape == (24, 24)
    assert int(e.sum(0).argmax()) in (11, 12)  # strongest on the edge
    assert float(e[:, :4].max()) < 1e-3 * float(e.max())  # nothing far from it
    with pytest.raises(ConfigError, match="N×C×H×W"):
        edge_strength(x[0])
    with pytest.raises(ConfigError, match="sigma"):
        edge_strength(x, sigma=0)


def test_alignment_is_one_for_the_patch_itself_and_near_zero_for_noise_or_other_images():
    patches = _scenes(12)
    same = projection_alignment(patches * 5 - 1, patches)  # scale and offset do not matter
    assert same.shape == (12,) and torch.allclose(same, torch.ones(12), atol=1e-5)
    noise = projection_alignment(torch.randn(12, 3, 40, 40, generator=torch.Generator().manual_seed(1)), patches)
    assert noise.abs().median() < 0.15
    control = projection_alignment(patches, patches, control=True)  # each against the other 11 scenes
    assert control.median() < 0.3 and (control < same).all()


def test_alignment_sees_contours_under_speckle_that_the_noise_measure_calls_noisy():
    patches = _scenes(12, seed=2)
    g = torch.Generator().manual_seed(3)
    # the patch's contours drawn as one-pixel strokes (a Laplacian) under a speckle of the same energy
    lap = patches - torch.nn.functional.avg_pool2d(torch.nn.functional.pad(patches, (1, 1, 1, 1), mode="replicate"), 3, 1)
    speckle = torch.randn(patches.shape, generator=g) * lap.std()
    strokes = lap + speckle
    assert projection_noise(strokes, patches).median() > 3  # several times the patch's high frequencies
    matched = projection_alignment(strokes, patches)
    control = projection_alignment(strokes, patches, control=True)
    assert matched.median() > 0.4 and matched.median() > control.median() + 0.3
    assert projection_alignment(strokes.view(3, 4, 3, 40, 40), patches.view(3, 4, 3, 40, 40)).shape == (3, 4)
    with pytest.raises(ConfigError, match="same shape"):
        projection_alignment(strokes[:3], patches)
    with pytest.raises(ConfigError, match="at least two"):
        projection_alignment(strokes[:1], patches[:1], control=True)


def test_alignment_inside_the_image_ignores_the_grey_fill_around_it():
    g = torch.Generator().manual_seed(4)
    patches = _scenes(10, seed=5)
    inside = torch.ones(10, 40, 40, dtype=torch.bool)
    inside[:, :, :14] = False  # the receptive field leaves the image on the left
    patches[:, :, :, :14] = 0.5  # grey fill there, as crop_patch pads a patch
    noise = torch.randn(patches.shape, generator=g) * inside[:, None]  # a projection is 0 outside the image
    assert projection_alignment(noise, patches).median() > 0.2  # the fill's step alone correlates with the envelope
    assert projection_alignment(noise, patches, inside=inside).abs().median() < 0.15
    assert projection_alignment(patches * inside[:, None], patches, inside=inside).min() > 0.99
    assert projection_alignment(noise, patches, inside=inside, control=True).abs().median() < 0.15
    with pytest.raises(ConfigError, match="inside"):
        projection_alignment(noise, patches, inside=inside[:, :20])

