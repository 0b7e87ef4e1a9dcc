"""Reruns with torchvision models and user-supplied weights (zfrepro.loading), their inputs (zfrepro.data.input_spec) and output names (zfrepro.outputs)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from zfrepro.data import load_split
from zfrepro.deconv import DeconvNet
from zfrepro.errors import CheckpointError, ConfigError, DataError
from zfrepro.models import alexnet, layer_names, save_checkpoint, zfnet
from zfrepro.data import IMAGENET_MEAN, IMAGENET_STD, IMAGENETTE_IMAGENET_INDEX, imagenet_indices, input_spec
from zfrepro.models import parse_arch
from zfrepro.loading import load_model, load_torchvision
from zfrepro.outputs import output_name


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("w") / "alexnet.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_parse_arch():
    assert parse_arch("zfnet") == ("zfrepro", "zfnet")
    assert parse_arch("torchvision:vgg16") == ("torchvision", "vgg16")
    with pytest.raises(ConfigError, match="unknown architecture 'resnet50'.*torchvision:alexnet"):
        parse_arch("resnet50")
    with pytest.raises(ConfigError, match="batch normalisation.*vgg16"):
        parse_arch("torchvision:vgg16_bn")


def test_weights_file_loads_exactly(alexnet_weights):
    path, ref = alexnet_weights
    model = load_model("smoke", "torchvision:alexnet", weights=str(path), device="cpu")
    assert not model.training
    x = torch.randn(2, 3, 224, 224)
    assert torch.equal(model(x), ref.eval()(x))
    wrapped = path.with_name("wrapped.pth")
    torch.save({"state_dict": ref.state_dict()}, wrapped)
    assert torch.equal(load_torchvision("alexnet", wrapped)(x), ref(x))


def test_weights_errors(tmp_path, alexnet_weights):
    path, _ = alexnet_weights
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("smoke", "torchvision:alexnet", weights=str(tmp_path / "none.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_model("smoke", "torchvision:alexnet", weights=str(bad))
    with pytest.raises(CheckpointError, match=r"does not fit torchvision vgg11 \(missing"):
        load_model("smoke", "torchvision:vgg11", weights=str(path))
    zf = tmp_path / "zf.pt"
    save_checkpoint(zfnet(10, 64, 0.25, 32), zf)
    with pytest.raises(CheckpointError, match="holds no state_dict|does not fit"):
        load_model("smoke", "torchvision:alexnet", weights=str(zf))
    with pytest.raises(CheckpointError, match="holds a zfnet network, not alexnet"):
        load_model("smoke", "alexnet", weights=str(zf))
    rep = tmp_path / "replica.pt"
    save_checkpoint(alexnet(10, 64, 0.25, 32), rep)
    assert load_model("smoke", "alexnet", weights=str(rep), device="cpu").arch == "alexnet"


def test_own_checkpoint_as_weights(tmp_path):
    torch.manual_seed(1)
    net = zfnet(10, 64, 0.25, 32).eval()
    path = save_checkpoint(net, tmp_path / "mine.pt")
    got = load_model("smoke", "zfnet", weights=str(path), device="cpu")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(got(x), net(x))


def test_imagenet_indices():
    assert imagenet_indices(sorted(IMAGENETTE_IMAGENET_INDEX)) == (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
    wnids = [f"n{i:08d}" for i in range(1000)]
    assert imagenet_indices(wnids[::-1])[:2] == (999, 998)
    with pytest.raises(DataError, match="not ImageNet classes.*arch=zfnet"):
        imagenet_indices(["cats", "dogs"])


def test_split_for_torchvision_model(data_root):
    val = load_split("smoke", "val", data_root, progress=False, arch="torchvision:alexnet")
    assert val.input_size == 224 and len(val.class_names) == 1000
    x = val.batch([0, 1])
    assert x.shape == (2, 3, 224, 224)
    # ImageNet normalisation: display inverts it exactly
    raw = val.decoded.images[[0, 1]].float()
    top = (256 - 224) // 2
    assert torch.allclose(val.to_display(x), (raw[..., top:top + 224, top:top + 224] / 255).clamp(0, 1), atol=1e-5)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    assert torch.allclose(x[0], (raw[0, :, top:top + 224, top:top + 224] - mean) / std, atol=1e-5)
    # labels index the model's 1000 outputs; names follow
    own = val.decoded.labels
    mapped = [imagenet_indices(val.classes)[int(c)] for c in own]
    assert val.labels.tolist() == mapped
    assert val[0][1] == mapped[0]
    assert "tench" in val.class_names[0].lower()
    # each mapped output is named as the dataset names the class
    assert [val.class_names[i] for i in imagenet_indices(val.classes)] == ours_names(val.classes)
    ours = load_split("smoke", "val", data_root, progress=False)
    assert ours.labels.tolist() == [int(c) for c in own] and ours.input_size == 64


def test_deconvnet_on_loaded_torchvision_model(alexnet_weights, data_root):
    path, _ = alexnet_weights
    model = load_model("smoke", "torchvision:alexnet", weights=str(path), device="cpu")
    val = load_split("smoke", "val", data_root, progress=False, arch="torchvision:alexnet")
    assert layer_names(model)[:5] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    proj = DeconvNet(model).project(val.batch([0, 1]), "conv3", [0, 1])
    assert proj.shape == (2, 3, 224, 224) and proj.abs().sum() > 0


def ours_names(classes):
    from zfrepro.datasets import class_names
    return class_names(classes)


def test_output_name(tmp_path):
    assert output_name("default") == "default"
    assert output_name("default", "torchvision:alexnet") == "default-tv-alexnet"
    w = output_name("smoke", "torchvision:vgg16", tmp_path / "my weights.pth")
    assert w.startswith("smoke-tv-vgg16-my_weights-") and "/" not in w and " " not in w
    other = tmp_path / "data"
    for split in ("train", "val"):
        (other / split / "cats").mkdir(parents=True)
    assert output_name("smoke", data_root=other).startswith("smoke-data")
    with pytest.raises(ConfigError):
        output_name("smoke", "resnet")
    assert input_spec("default").input_size == 128
