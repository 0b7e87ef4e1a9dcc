"""zfrepro.layers: one layer walker (LayerStack), one unknown-layer error, one capture, one eval_mode."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fakes import FakeInputs
from zfrepro import backprop, correspondence, deconv, invariance, models, occlusion, receptive, scan, transfer
from zfrepro.errors import ConfigError, DeconvError, LayerError
from zfrepro.layers import Geometry, LayerStack, eval_mode, forward_hooks, geometry, run


def _small() -> nn.Module:
    torch.manual_seed(0)
    return models.zfnet(num_classes=5, input_size=64, width=0.25, fc_width=16)


def _callers(m: nn.Module, bad: str) -> dict:
    x = torch.randn(1, 3, 64, 64)
    return {
        "deconv": lambda: deconv.DeconvNet(m).project(x, bad, [0]),
        "deconv forward_to": lambda: deconv.DeconvNet(m).forward_to(x, bad),
        "scan": lambda: scan.top_activations(m, [(x, 0)], layers=[bad], k=1, progress=False),
        "occlusion": lambda: occlusion.occlusion_maps(m, x[0], 0, 16, 8, layer=bad),
        "receptive": lambda: receptive.receptive_field(m, bad, (0, 0)),
        "spatial_layers": lambda: receptive.spatial_layers(m, bad),
        "backprop": lambda: backprop.project_by_rule(m, x, bad, [0]),
        "invariance": lambda: invariance.feature_distance_curves(m, x, [0], "rotate", [10.0], layers=[bad]),
        "correspondence": lambda: correspondence.layer_features(m, x, [bad]),
        "correspondence layers": lambda: correspondence.correspondence_layers(m, bad),
        "transfer": lambda: transfer.layer_features(m, FakeInputs(n=2, size=64), [bad], progress=False),
        "get_layer": lambda: models.get_layer(m, bad),
        "rectified_module": lambda: models.rectified_module(m, bad),
    }


@pytest.mark.parametrize("bad", ["conv9", "pool2", "relu3"])
def test_same_bad_name_same_one_line_error_everywhere(bad):
    m = _small()
    expected = f"unknown layer {bad!r}: valid layers are conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8"
    assert str(LayerStack(m).unknown(bad)) == expected
    for where, call in _callers(m, bad).items():
        with pytest.raises(Exception) as err:
            call()
        assert type(err.value) is LayerError, (where, type(err.value))
        assert str(err.value) == expected, where
    # what callers caught before: ConfigError (scan, occlusion, models...), DeconvError (deconv), ValueError (receptive)
    assert issubclass(LayerError, ConfigError) and issubclass(LayerError, DeconvError) and issubclass(LayerError, ValueError)


def test_fully_connected_layer_where_a_convolution_is_needed():
    m = _small()
    x = torch.randn(1, 3, 64, 64)
    for call in (lambda: deconv.DeconvNet(m).project(x, "fc7", [0]), lambda: receptive.receptive_field(m, "fc6", (0, 0)),
                 lambda: backprop.project_by_rule(m, x, "fc8", [0])):
        with pytest.raises(LayerError, match=r"is fully connected: .*; use one of conv1, conv2, conv3, conv4, conv5$") as err:
            call()
        assert "\n" not in str(err.value)


def test_zfnet_and_replica_parsed_with_paper_names_and_geometry():
    zf = models.zfnet(num_classes=10, input_size=224, fc_width=16)
    s = LayerStack(zf)
    assert s.names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"] and s.convs == s.names[:5]
    assert s.module["conv1"] is zf.features.conv1 and s.rectified["conv1"] is zf.features.relu1
    assert s.rectified["fc7"] is zf.classifier.relu7 and s.rectified["fc8"] is zf.classifier.fc8  # logits: no ReLU
    assert geometry(zf.features.conv1) == Geometry((7, 7), (2, 2), (1, 1), (1, 1), False)
    assert geometry(zf.features.pool1) == Geometry((3, 3), (2, 2), (0, 0), (1, 1), True)
    chain = s.spatial_layers("conv3")
    assert chain == [zf.features.conv1, zf.features.pool1, zf.features.conv2, zf.features.pool2, zf.features.conv3]
    # Table 3's variants keep the paper's names where layers are removed
    assert LayerStack(models.zfnet(num_classes=3, input_size=64, width=0.25, fc_width=8, remove=(3, 4, 7))).names == [
        "conv1", "conv2", "conv5", "fc6", "fc8"]
    ax = models.alexnet(num_classes=10, input_size=224, fc_width=16)
    a = LayerStack(ax)
    assert a.names == s.names and geometry(a.module["conv1"]).kernel == (11, 11) and geometry(a.module["conv1"]).stride == (4, 4)
    assert models.layer_names(ax) == a.names and models.get_layer(ax, "conv2") is ax.features.conv2


def test_torchvision_alexnet_and_vgg11_parsed():
    tv = torchvision.models.alexnet(weights=None)
    s = LayerStack(tv)
    assert s.names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert s.module["conv1"] is tv.features[0] and s.rectified["conv1"] is tv.features[1]
    assert s.rectified["fc6"] is tv.classifier[2] and s.rectified["fc7"] is tv.classifier[5]
    assert s.rectified["fc8"] is tv.classifier[6]
    assert geometry(tv.features[0]) == Geometry((11, 11), (4, 4), (2, 2), (1, 1), False)
    assert len(s.spatial_layers("conv5")) == 5 + 2  # pools after conv1 and conv2
    vgg = torchvision.models.vgg11(weights=None)
    v = LayerStack(vgg)
    assert v.names == [f"conv{i}" for i in range(1, 9)] + ["fc6", "fc7", "fc8"]
    assert all(isinstance(v.rectified[n], nn.ReLU) for n in v.names[:-1])
    assert len(v.spatial_layers("conv8")) == 8 + 4 and v.spatial_layers("conv8")[-1] is v.module["conv8"]
    assert receptive.receptive_field(vgg, "conv1", (0, 0)) == (-1, -1, 2, 2)


def test_capture_reads_rectified_outputs_and_stops_after_the_deepest():
    m = _small().eval()
    s = LayerStack(m)
    x = torch.randn(2, 3, 64, 64)
    late: list[int] = []
    with torch.no_grad(), forward_hooks({"fc6": m.classifier.fc6}, lambda k, o: late.append(1)):
        with s.capture(["conv2", "conv1"], stop=True) as cap:
            assert cap(x) is None  # stopped after conv2
        assert late == []
        assert torch.equal(cap["conv1"], m.features[:2](x)) and torch.equal(cap["conv2"], m.features[:6](x))
        with s.capture("fc7") as cap:
            logits = cap(x)
        assert late == [1] and torch.equal(logits, m(x)) and cap["fc7"].shape == (2, 16)
    assert run(m, x).shape == (2, 5)
    # the hooks are gone after the block
    assert all(not mod._forward_hooks for mod in m.modules())


def test_eval_mode_restores_the_mode_also_after_an_error():
    m = _small().train()
    with eval_mode(m):
        assert not m.training and not m.features.conv1.training
    assert m.training and m.classifier.drop6.training
    with pytest.raises(RuntimeError):
        with eval_mode(m):
            raise RuntimeError("boom")
    assert m.training
    m.eval()
    with eval_mode(m):
        pass
    assert not m.training
