"""Fig. 3 model: exact map sizes, parameter count, naming, init, describe, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zfrepro.errors import CheckpointError, ConfigError
from zfrepro.models import (alexnet, build_model, describe, get_layer, init_weights, layer_names,
                            load_checkpoint, rectified_module, save_checkpoint, zfnet)


def _maps(model: nn.Module, size: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in model.features.named_children()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


def test_zfnet_map_sizes_match_fig3():
    m = zfnet()
    s = _maps(m, 224)
    assert s["conv1"] == (96, 110, 110)
    assert s["pool1"] == (96, 55, 55) and s["norm1"] == (96, 55, 55)
    assert s["conv2"] == (256, 26, 26)
    assert s["pool2"] == (256, 13, 13)
    assert s["conv3"] == (384, 13, 13) and s["conv4"] == (384, 13, 13) and s["conv5"] == (256, 13, 13)
    assert s["pool5"] == (256, 6, 6)
    assert m.classifier.fc6.in_features == 9216
    assert m.classifier.fc6.out_features == 4096 and m.classifier.fc7.out_features == 4096
    assert [d.p for d in m.modules() if isinstance(d, nn.Dropout)] == [0.5, 0.5]
    # dropout sits before fc6 and fc7
    names = list(m.classifier._modules)
    assert names.index("drop6") < names.index("fc6") and names.index("drop7") < names.index("fc7")
    # dense connections (no two-GPU groups) and contrast normalisation after pool1 and pool2 only
    assert all(c.groups == 1 for c in m.modules() if isinstance(c, nn.Conv2d))
    feats = list(m.features._modules)
    assert [n for n in feats if n.startswith("norm")] == ["norm1", "norm2"]
    assert feats.index("norm1") == feats.index("pool1") + 1


def test_zfnet_parameter_count():
    assert sum(p.numel() for p in zfnet(num_classes=1000).parameters()) == 62_357_608


@pytest.mark.parametrize("size", [64, 96, 128, 160, 227])
def test_input_size_sets_flatten(size):
    m = zfnet(num_classes=10, input_size=size, width=0.25, fc_width=32)
    out = m.eval()(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)


def test_alexnet_replica_layers_1_and_2():
    m = alexnet()
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    assert convs[1].kernel_size == (5, 5) and convs[1].stride == (1, 1)
    s = _maps(m, 224)
    assert s["pool5"] == (256, 6, 6)
    assert m.classifier.fc6.in_features == 9216


def test_width_scaling():
    m = zfnet(num_classes=10, input_size=128, width=0.5, fc_width=256)
    convs = [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs == [48, 128, 192, 192, 128]
    assert m.classifier.fc6.out_features == 256


def test_layer_names_paper_and_torchvision():
    assert layer_names(zfnet()) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert layer_names(alexnet()) == layer_names(zfnet())
    tv = torchvision.models.alexnet()
    assert layer_names(tv) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert get_layer(tv, "conv2") is tv.features[3]
    vgg = torchvision.models.vgg16()
    names = layer_names(vgg)
    assert names[:13] == [f"conv{i}" for i in range(1, 14)] and names[13:] == ["fc14", "fc15", "fc16"]
    assert get_layer(vgg, "conv13") is vgg.features[28]


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown layer 'conv9'.*conv1, conv2"):
        get_layer(zfnet(), "conv9")


def test_rectified_module_is_the_relu_after_the_layer():
    m = zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32)
    assert rectified_module(m, "conv1") is m.features.relu1
    assert rectified_module(m, "fc7") is m.classifier.relu7
    assert rectified_module(m, "fc8") is m.classifier.fc8
    tv = torchvision.models.alexnet()
    assert rectified_module(tv, "conv5") is tv.features[11]


def test_paper_init_and_other_schemes():
    m = zfnet(num_classes=10, input_size=128, fc_width=1024)
    w = m.features.conv2.weight
    assert abs(w.std().item() - 1e-2) < 1e-3 and abs(w.mean().item()) < 1e-3
    assert all(torch.count_nonzero(c.bias) == 0 for c in m.modules() if isinstance(c, (nn.Conv2d, nn.Linear)))
    init_weights(m, "kaiming")
    expected = (2.0 / (96 * 25)) ** 0.5  # He, fan-in of conv2
    assert abs(m.features.conv2.weight.std().item() - expected) / expected < 0.05
    expected_fc = (2.0 / m.classifier.fc6.in_features) ** 0.5
    assert abs(m.classifier.fc6.weight.std().item() - expected_fc) / expected_fc < 0.05
    assert abs(m.classifier.fc8.weight.std().item() - 1e-2) < 2e-3  # the classifier stays small
    with pytest.raises(ConfigError, match="unknown init scheme"):
        init_weights(m, "xavier-ish")


def test_describe_fig3_table():
    t = describe(zfnet(), 224)
    rows = {r["layer"]: r for r in t.to_dict("records")}
    assert [rows[f"conv{i}"]["receptive_field"] for i in range(1, 6)] == [7, 27, 75, 107, 139]
    assert [rows[f"conv{i}"]["jump"] for i in range(1, 6)] == [2, 8, 16, 16, 16]
    assert rows["conv1"]["out_size"] == 110 and rows["pool1"]["out_size"] == 55 and rows["pool5"]["out_size"] == 6
    assert t["params"].sum() == 62_357_608
    assert rows["conv1"]["mult_adds"] == 96 * 110 * 110 * 3 * 49
    assert rows["fc6"]["mult_adds"] == 9216 * 4096


def test_checkpoint_roundtrip_and_rebuild(tmp_path):
    m = zfnet(num_classes=10, input_size=64, width=0.25, fc_width=32)
    p = save_checkpoint(m, tmp_path / "m.pt")
    m2 = load_checkpoint(p)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    a = alexnet(num_classes=10, input_size=128, width=0.25, fc_width=32)
    p = save_checkpoint(a, tmp_path / "alex.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p, zfnet(num_classes=10, input_size=128, width=0.25, fc_width=32))
    msg = str(e.value)
    assert "\n" not in msg and "arch=alexnet" in msg and "arch=zfnet" in msg
    # a bare state dict of a torchvision model is refused the same way
    torch.save(torchvision.models.alexnet(num_classes=10).state_dict(), tmp_path / "tv.pt")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(tmp_path / "tv.pt", zfnet(num_classes=10))


def test_checkpoint_loads_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt", zfnet(num_classes=10))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_build_model_names():
    assert layer_names(build_model("torchvision:vgg11"))[0] == "conv1"
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("resnet-ish")
