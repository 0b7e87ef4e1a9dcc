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
    assert names[:13] == [f"conv{i}" for i in range(1, 14)] and names[13:] == ["fc6", "fc7", "fc8"]
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


# ----------------------------------------------------------------------------- Table 3 variants

# Parameters at the paper's width, 224 input, 1000 classes, computed by hand (weights + biases):
# ZFNet convs 14,208 + 614,656 + 885,120 + 1,327,488 + 884,992 = 3,726,464; the replica's conv1 is
# 96·3·11·11 + 96 = 34,944, so its convs are 3,747,200. fc6 9216·4096 + 4096 = 37,752,832, fc7
# 16,781,312, fc8 4,097,000 (fc layers 58,631,144). 512-1024-512: conv3 1,180,160, conv4 4,719,616,
# conv5 4,719,104 (convs 11,247,744), fc6 then reads 6·6·512 = 18,432. 8192 units: fc6 9216·8192 + 8192
# = 75,505,664, fc7 67,117,056, fc8 8,193,000; 2048 units: 18,876,416 + 4,196,352 + 2,049,000.
# Without conv3-4, conv5 reads conv2's 256 maps: 256·256·9 + 256 = 590,080 (convs 1,239,680).
# Without fc6-7, fc8 reads pool5: 9216·1000 + 1000 = 9,217,000.
PAPER_WIDTH_PARAMS = [
    ("alexnet", {}, 3_747_200 + 58_631_144),                                    # 62,378,344
    ("alexnet", {"remove": (3, 4)}, 1_239_680 + 58_631_144),                    # 59,870,824
    ("alexnet", {"remove": (7,)}, 3_747_200 + 37_752_832 + 4_097_000),          # 45,597,032
    ("alexnet", {"remove": (6, 7)}, 3_747_200 + 9_217_000),                     # 12,964,200
    ("alexnet", {"remove": (3, 4, 6, 7)}, 1_239_680 + 9_217_000),               # 10,456,680
    ("alexnet", {"fc_width": 2048}, 3_747_200 + 18_876_416 + 4_196_352 + 2_049_000),
    ("alexnet", {"fc_width": 8192}, 3_747_200 + 75_505_664 + 67_117_056 + 8_193_000),
    ("zfnet", {}, 62_357_608),
    ("zfnet", {"fc_width": 2048}, 3_726_464 + 18_876_416 + 4_196_352 + 2_049_000),
    ("zfnet", {"fc_width": 8192}, 3_726_464 + 75_505_664 + 67_117_056 + 8_193_000),
    ("zfnet", {"conv_maps": (96, 256, 512, 1024, 512)}, 11_247_744 + 18_432 * 4096 + 4096 + 16_781_312 + 4_097_000),
    ("zfnet", {"conv_maps": (96, 256, 512, 1024, 512), "fc_width": 8192},
     11_247_744 + 18_432 * 8192 + 8192 + 67_117_056 + 8_193_000),               # 237,560,936
]


@pytest.mark.parametrize("arch, kw, expected", PAPER_WIDTH_PARAMS,
                         ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in kw.items()) or 'baseline'}" for a, kw, _ in PAPER_WIDTH_PARAMS])
def test_table3_variants_paper_width_parameter_counts(arch, kw, expected):
    with torch.device("meta"):  # shapes only: the 237M-parameter network costs no memory
        m = build_model(arch, num_classes=1000, **kw)
    assert sum(p.numel() for p in m.parameters()) == expected


def test_wide_maps_combine_with_width_and_keep_fig3_sizes():
    m = zfnet(num_classes=10, input_size=224, width=0.5, fc_width=512, conv_maps=(96, 256, 512, 1024, 512))
    convs = [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs == [48, 128, 256, 512, 256]  # the paper's 512-1024-512 at the default width x0.5
    s = _maps(m, 224)
    assert s["conv4"] == (512, 13, 13) and s["pool5"] == (256, 6, 6)
    assert m.classifier.fc6.in_features == 256 * 36 and m.spec["conv_maps"] == [96, 256, 512, 1024, 512]


def test_remove_middle_convs_conv5_reads_conv2():
    m = zfnet(num_classes=10, remove=(3, 4))
    assert layer_names(m) == ["conv1", "conv2", "conv5", "fc6", "fc7", "fc8"]
    assert m.features.conv5.in_channels == m.features.conv2.out_channels == 256
    s = _maps(m, 224)
    assert s["conv5"] == (256, 13, 13) and s["pool5"] == (256, 6, 6)
    assert [n for n in m.features._modules] == ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2",
                                                 "norm2", "conv5", "relu5", "pool5"]
    assert m.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 10)


def test_remove_fc_layers_classifier_reads_pool5():
    m = alexnet(num_classes=10, remove=(6, 7))
    assert list(m.classifier._modules) == ["fc8"] and m.classifier.fc8.in_features == 9216
    assert layer_names(m) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc8"]
    m7 = alexnet(num_classes=10, remove=(7,), fc_width=64)
    assert list(m7.classifier._modules) == ["drop6", "fc6", "relu6", "fc8"] and m7.classifier.fc8.in_features == 64
    m4 = zfnet(num_classes=10, input_size=128, width=0.25, fc_width=32, remove=(3, 4, 6, 7))
    assert layer_names(m4) == ["conv1", "conv2", "conv5", "fc8"]
    assert not [d for d in m4.modules() if isinstance(d, nn.Dropout)]
    assert m4.eval()(torch.zeros(2, 3, 128, 128)).shape == (2, 10)
    assert m4.spec["remove"] == [3, 4, 6, 7]
    rows = describe(m4, 128)
    assert list(rows["layer"]) == ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv5", "pool5", "fc8"]


@pytest.mark.parametrize("kw, match", [({"remove": (5,)}, r"cannot remove layer 5: only layers 3, 4, 6 and 7"),
                                       ({"remove": (1, 8)}, r"cannot remove layer 1, 8"),
                                       ({"conv_maps": (512, 1024, 512)}, r"conv_maps must be 5 positive integers"),
                                       ({"conv_maps": (96, 256, 0, 1, 1)}, r"conv_maps must be 5 positive")])
def test_bad_variants_are_one_line(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        zfnet(num_classes=10, **kw)
    assert "\n" not in str(e.value)


def test_default_spec_unchanged_and_variant_checkpoints(tmp_path):
    m = zfnet(num_classes=10, input_size=128, width=0.25, fc_width=32)
    assert set(m.spec) == {"arch", "num_classes", "input_size", "width", "fc_width", "dropout"}
    # a checkpoint written before the variants (spec without conv_maps/remove) still rebuilds
    old = tmp_path / "old.pt"
    torch.save({"spec": dict(m.spec), "state_dict": m.state_dict()}, old)
    assert layer_names(load_checkpoint(old)) == layer_names(m)
    v = zfnet(num_classes=10, input_size=128, width=0.25, fc_width=32, conv_maps=(96, 256, 512, 1024, 512),
              remove=(7,))
    p = save_checkpoint(v, tmp_path / "v.pt")
    back = load_checkpoint(p)
    assert back.spec == v.spec and layer_names(back) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"]
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), v.state_dict().values()))
    with pytest.raises(CheckpointError, match="another architecture") as e:
        load_checkpoint(p, m)
    assert "\n" not in str(e.value)
