"""Face annotations, masks and Table 1's sign-change statistic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from zfrepro.correspondence import (PARTS, FaceSet, correspondence_table, load_annotations, mask_images,
                                    prepare_faces, random_centres)
from zfrepro.errors import ConfigError, DataError
from zfrepro.models import init_weights, zfnet

HEADER = "file,width,height,right_eye_x,right_eye_y,left_eye_x,left_eye_y,nose_x,nose_y\n"


def _csv(tmp_path: Path, *rows: str) -> Path:
    p = tmp_path / "faces.csv"
    p.write_text("# comment\n" + HEADER + "".join(r + "\n" for r in rows))
    return p


def test_the_committed_annotations_are_valid_and_name_real_images(data_root):
    anns = load_annotations()
    assert len(anns) >= 10
    assert len({a.file for a in anns}) == len(anns)
    for a in anns:
        assert a.file.startswith("n02102040/")
        assert (data_root / "val" / a.file).is_file(), a.file
        with Image.open(data_root / "val" / a.file) as im:
            assert im.size == (a.width, a.height)
        # frontal faces: the dog's right eye is on the image's left, the nose below the eyes
        assert a.right_eye[0] < a.left_eye[0]
        assert a.nose[1] > min(a.right_eye[1], a.left_eye[1])


def test_bad_annotations_name_the_entry(tmp_path):
    with pytest.raises(ConfigError, match=r"faces.csv:3 \(a.jpg\).*outside the 100×100 image"):
        load_annotations(_csv(tmp_path, "a.jpg,100,100,30,40,70,40,150,60"))
    with pytest.raises(ConfigError, match=r"faces.csv:3 \(a.jpg\).*nose mask.*leaves"):
        load_annotations(_csv(tmp_path, "a.jpg,100,100,30,40,70,40,50,98"))
    with pytest.raises(ConfigError, match=r"faces.csv:3 \(a.jpg\): expected 9 fields"):
        load_annotations(_csv(tmp_path, "a.jpg,100,100,30,40"))
    with pytest.raises(ConfigError, match="same point"):
        load_annotations(_csv(tmp_path, "a.jpg,100,100,30,40,30,40,50,60"))
    bad = tmp_path / "h.csv"
    bad.write_text("name,x\n")
    with pytest.raises(DataError, match="header must be"):
        load_annotations(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_annotations(tmp_path / "missing.csv")


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("n02102040", "n01440764"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                arr = (torch.rand(120, 160, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def test_prepare_faces_rescales_annotations_and_reports_missing_files(tmp_path, tmp_cache):
    root = _fake_root(tmp_path)
    # annotated on a 320×240 copy; the dataset holds 160×120 images: coordinates halve, then the
    # central 120×120 square (left offset 20) is resized to the smoke profile's 64 px
    anns = load_annotations(_csv(tmp_path, "n02102040/0.png,320,240,140,100,180,100,160,140"))
    faces = prepare_faces(anns, "smoke", root)
    k = 64 / 120
    assert faces.images.shape == (1, 3, 64, 64)
    assert torch.allclose(faces.points["right_eye"][0], torch.tensor([(70 - 20) * k, 50 * k]))
    assert torch.allclose(faces.points["nose"][0], torch.tensor([(80 - 20) * k, 70 * k]))
    assert int(faces.mask_size[0]) == round(0.7 * 20 * k)
    missing = load_annotations(_csv(tmp_path, "n02102040/9.png,160,120,70,50,90,50,80,70"))
    with pytest.raises(DataError, match=r"faces.csv:3 \(n02102040/9.png\).*does not exist"):
        prepare_faces(missing, "smoke", root)


def test_mask_images_writes_exactly_the_square():
    x = torch.ones(2, 3, 20, 20)
    out = mask_images(x, torch.tensor([[5.0, 6.0], [14.0, 10.0]]), torch.tensor([4, 6]))
    assert out[0, :, 4:8, 3:7].eq(0).all() and out[0].eq(0).sum() == 3 * 16
    assert out[1, :, 7:13, 11:17].eq(0).all() and out[1].eq(0).sum() == 3 * 36
    assert x.eq(1).all()  # the input is not modified
    with pytest.raises(ConfigError, match="image 1: a 6-px mask"):
        mask_images(x, torch.tensor([[5.0, 6.0], [19.0, 10.0]]), torch.tensor([4, 6]))


def _faceset(images: torch.Tensor, points: torch.Tensor, size: int = 6) -> FaceSet:
    n = len(images)
    return FaceSet(images, {p: points.clone() for p in PARTS}, torch.full((n,), size), [], torch.zeros(3, 64, 64), 1.0)


def test_identical_faces_masked_alike_have_zero_sign_change():
    torch.manual_seed(0)
    model = init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()
    img = torch.randn(1, 3, 64, 64).repeat(6, 1, 1, 1)
    faces = _faceset(img, torch.tensor([[30.0, 30.0]] * 6))
    table = correspondence_table(model, faces, ["conv5", "fc7"], n=5, draws=3, random_per_draw=2, seed=1)
    assert set(table.part) == {*PARTS, "random"} and set(table.layer) == {"conv5", "fc7"}
    assert (table["mean"] == 0).all()  # every image changes identically; random masks share one position too
    assert table.loc[(table.part == "random") & (table.layer == "conv5"), "paper_mean"].item() == 0.107


def test_different_faces_give_a_reproducible_table_in_range():
    torch.manual_seed(0)
    model = init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()
    faces = _faceset(torch.randn(8, 3, 64, 64), torch.rand(8, 2) * 30 + 17)
    a = correspondence_table(model, faces, ["conv3", "fc6"], n=4, draws=4, random_per_draw=2, seed=3)
    b = correspondence_table(model, faces, ["conv3", "fc6"], n=4, draws=4, random_per_draw=2, seed=3)
    assert a.equals(b)
    assert ((a["mean"] > 0) & (a["mean"] < 1)).all()
    assert (a.loc[a.part == "random", "draws"] == 8).all() and (a.loc[a.part == "nose", "draws"] == 4).all()
    with pytest.raises(ConfigError, match="n must be between 2"):
        correspondence_table(model, faces, ["conv3"], n=9)
    with pytest.raises(ConfigError, match="unknown layer 'conv9'"):
        correspondence_table(model, faces, ["conv9"], n=3, draws=1)


def test_random_masks_share_one_position_and_stay_inside():
    faces = _faceset(torch.zeros(5, 3, 64, 64), torch.zeros(5, 2), size=10)
    faces.mask_size = torch.tensor([4, 10, 6, 8, 10])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        c = random_centres(faces, [0, 1, 2, 3, 4], g)
        assert (c == c[0]).all()
        assert 5 <= float(c[0, 0]) <= 59 and 5 <= float(c[0, 1]) <= 59
        mask_images(faces.images, c, faces.mask_size)  # never raises


def test_layer5_features_pooled_to_the_fc6_grid_are_pool5s_output():
    from zfrepro.correspondence import layer_features

    torch.manual_seed(0)
    model = init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()
    x = torch.randn(3, 3, 64, 64)
    whole = layer_features(model, x, ["conv5", "fc7"])
    pooled = layer_features(model, x, ["conv5", "fc7"], grid=0)
    with torch.no_grad():
        pool5 = model.features(x)
    assert pool5.shape[-1] < int(whole["conv5"].shape[1] ** 0.5)  # pooling does shrink the map
    torch.testing.assert_close(pooled["conv5"], pool5.flatten(1))  # the vector fc6 reads, the paper's layer 5
    torch.testing.assert_close(pooled["fc7"], whole["fc7"])  # fully connected layers are not pooled
    one = layer_features(model, x, ["conv5"], grid=1)["conv5"]
    torch.testing.assert_close(one, whole["conv5"].view(3, pool5.shape[1], -1).amax(-1))
    with pytest.raises(ConfigError, match="grid must be None"):
        layer_features(model, x, ["conv5"], grid=-1)
    faces = _faceset(torch.randn(6, 3, 64, 64), torch.rand(6, 2) * 30 + 17)
    a = correspondence_table(model, faces, ["conv5"], n=4, draws=3, random_per_draw=2, seed=0, grid=0)
    b = correspondence_table(model, faces, ["conv5"], n=4, draws=3, random_per_draw=2, seed=0)
    assert ((a["mean"] >= 0) & (a["mean"] <= 1)).all() and not a["mean"].equals(b["mean"])
