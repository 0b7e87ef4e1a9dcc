"""The interactive explorers, driven from Python (no browser)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from fakes import FakeInputs  # noqa: E402
from zfrepro.errors import ConfigError  # noqa: E402
from zfrepro.models import init_weights, zfnet  # noqa: E402
from zfrepro.scan import top_activations  # noqa: E402
from zfrepro.widgets import feature_explorer, occlusion_explorer  # noqa: E402


_Data = FakeInputs


def _model():
    torch.manual_seed(0)
    return init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()


def test_feature_explorer_follows_the_controls():
    model, data = _model(), _Data()
    tops = top_activations(model, data, layers=["conv2", "conv5"], k=4, progress=False)
    box = feature_explorer(model, data, tops, k=4)
    layer, fmap, out = box.children
    assert layer.value == "conv5" and box.state["units"].layer == "conv5" and len(out.children) == 1
    layer.value = "conv2"
    fmap.value = 5
    units = box.state["units"]
    assert units.layer == "conv2" and units.maps == [5] and units.values.shape == (1, 4)
    assert torch.equal(units.image_index[0], tops["conv2"].image_index[5])
    with pytest.raises(ConfigError, match="needs scan results"):
        feature_explorer(model, data, {})


def test_occlusion_explorer_probabilities_equal_a_forward_pass():
    model, data = _model(), _Data()
    box = occlusion_explorer(model, data, size=16)
    index, row, col, out, text = box.children
    index.value, row.value, col.value = 3, 10, 40
    x = data[3][0].clone()
    x[:, 10:26, 40:56] = 0.0
    with torch.no_grad():
        ref = model(x[None]).softmax(1)[0]
    assert torch.allclose(box.state["probs"], ref, atol=1e-6)
    assert row.max == 48 and col.max == 48 and len(out.children) == 1
    y = data[3][1]
    assert f"row 10, col 40 (16 px): P(c{y}) = {float(ref[y]):.3f}; top 5: " in text.value


def test_explorer_figures_are_notebook_wide():
    """Readable at notebook width: about 800 px wide (not the old 80-dpi thumbnails), shrunk to fit a narrower one."""
    import struct

    model, data = _model(), _Data()
    tops = top_activations(model, data, layers=["conv5"], k=4, progress=False)
    for img in (feature_explorer(model, data, tops, k=4).children[-1].children[0],
                occlusion_explorer(model, data).children[3].children[0]):
        width = struct.unpack(">I", img.value[16:20])[0]  # the PNG header's IHDR width
        assert 700 <= width <= 900 and img.layout.max_width == "100%"


def test_feature_explorer_over_snapshots_scans_an_epoch_when_chosen():
    data = _Data()
    torch.manual_seed(1)
    early = init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()
    late = _model()
    tops = top_activations(late, data, layers=["conv2", "conv5"], k=4, progress=False)
    box = feature_explorer(late, data, tops, k=4, snapshots={1: early, 2: late})
    epoch, layer, fmap, out = box.children
    assert epoch.options == (2, 1) and epoch.value == 2 and box.state["units"].layer == "conv5"
    before = out.children[0].value
    epoch.value = 1
    ref = top_activations(early, data, layers=["conv2", "conv5"], k=4, progress=False)
    assert torch.equal(box.state["units"].image_index[0], ref["conv5"].image_index[0])
    assert out.children[0].value != before
    layer.value = "conv2"
    assert box.state["units"].layer == "conv2"
