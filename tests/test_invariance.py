"""Fig. 5 transformations on synthetic images, and the distance curves."""

from __future__ import annotations

import pytest
import torch

from zfrepro.errors import ConfigError
from zfrepro.invariance import feature_distance_curves, transform
from zfrepro.models import zfnet


def _square(size: int = 64, side: int = 16, top: int | None = None) -> torch.Tensor:
    img = torch.zeros(3, size, size)
    t = (size - side) // 2 if top is None else top
    l = (size - side) // 2
    img[:, t:t + side, l:l + side] = 1.0
    return img


def _extent(mask: torch.Tensor, dim: int) -> tuple[int, int]:
    idx = mask.any(dim=dim).nonzero().flatten()
    return int(idx[0]), int(idx[-1]) + 1


@pytest.mark.parametrize("shift", [7, -5, 0])
def test_translate_moves_content_down_by_exactly_the_amount(shift):
    img = _square(top=20)
    out = transform(img, "translate", shift)
    assert out.shape == img.shape
    top, bottom = _extent(out[0] > 0.5, 1)
    assert (top, bottom) == (20 + shift, 36 + shift)
    assert _extent(out[0] > 0.5, 0) == _extent(img[0] > 0.5, 0)  # columns unchanged
    # uncovered rows take the fill value
    moved = transform(img + 2.0, "translate", 10, fill=-1.0)
    assert (moved[:, :10] == -1.0).all()


def test_scale_zooms_about_the_centre():
    img = _square(size=64, side=20)
    out = transform(img, "scale", 1.5)
    left, right = _extent(out[0] > 0.5, 0)
    assert abs((right - left) - 30) <= 1
    assert abs((left + right) / 2 - 32) <= 1  # still centred
    with pytest.raises(ConfigError, match="ratio >= 1"):
        transform(img, "scale", 0.8)


def test_rotation_by_360_is_the_identity_and_90_turns_a_bar():
    torch.manual_seed(0)
    img = torch.rand(3, 33, 33)
    assert (transform(img, "rotate", 360.0) - img).abs().max() < 1e-4
    bar = torch.zeros(1, 33, 33)
    bar[:, 14:19, 4:29] = 1.0  # horizontal bar through the centre
    turned = transform(bar, "rotate", 90.0)
    assert _extent(turned[0] > 0.5, 1)[1] - _extent(turned[0] > 0.5, 1)[0] >= 23  # now tall
    assert _extent(turned[0] > 0.5, 0)[1] - _extent(turned[0] > 0.5, 0)[0] <= 6   # and narrow
    with pytest.raises(ConfigError, match="unknown transformation"):
        transform(img, "shear", 3)


def test_feature_distance_curves_table():
    torch.manual_seed(0)
    model = zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32)
    images = torch.randn(2, 3, 64, 64)
    df = feature_distance_curves(model, images, [3, 7], "translate", [0, 4, 8], layers=["conv1", "fc7"])
    assert len(df) == 2 * 3 * 2
    assert set(df.columns) >= {"image", "label", "kind", "amount", "layer", "distance", "normalized_distance", "p_true"}
    zero = df[df.amount == 0]
    assert (zero.distance == 0).all()  # no transformation, no change
    moved = df[(df.amount == 8) & (df.layer == "conv1")]
    assert (moved.distance > 0).all()
    assert ((df.p_true >= 0) & (df.p_true <= 1)).all()
    # p_true is the softmax of the true label for the transformed image
    with torch.no_grad():
        p = model.eval()(transform(images[1], "translate", 4)[None]).softmax(1)[0, 7]
    got = df[(df.image == 1) & (df.amount == 4) & (df.layer == "fc7")].p_true.item()
    assert abs(got - float(p)) < 1e-6
    with pytest.raises(ConfigError, match="unknown layer 'fc9'"):
        feature_distance_curves(model, images, [3, 7], "rotate", [0], layers=["fc9"])


def test_paper_ranges_and_one_image_per_class():
    from zfrepro.invariance import paper_amounts, pick_one_per_class

    t = paper_amounts("translate", 224)
    assert t[0] == -60 and t[-1] == 60 and 0.0 in t and len(t) == 13
    assert paper_amounts("translate", 112)[-1] == 30
    s = paper_amounts("scale")
    assert s[0] == 1.0 and s[-1] == 1.8
    assert paper_amounts("rotate")[-1] == 350.0
    labels = [0, 0, 1, 1, 2, 2, 3]
    idx = pick_one_per_class(labels, 3, seed=2)
    assert len({labels[i] for i in idx}) == 3 and idx == pick_one_per_class(labels, 3, seed=2)
    with pytest.raises(ConfigError, match="has 4 classes"):
        pick_one_per_class(labels, 5)
