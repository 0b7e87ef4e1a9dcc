"""Data: ImageFolder validation, RGB conversion, clear errors, the decode-once cache, transforms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zfrepro.config import get_profile
from zfrepro.data import (center_crop, decode_split, iterate_batches, load_split, pixel_mean, random_crop_flip,
                          random_resized_crop_flip, ten_crop)
from zfrepro.datasets import image_folder, load_image, resolve_root
from zfrepro.errors import DataError


def _write(path: Path, mode: str = "RGB", size=(40, 30), color=(200, 10, 10), fmt="JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        img = Image.new("RGB", size, color).convert("P", palette=Image.ADAPTIVE)
    elif mode == "L":
        img = Image.new("L", size, 128)
    else:
        img = Image.new(mode, size, color)
    img.save(path, fmt)
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "ds"
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(3):
                _write(root / split / c / f"{i}.jpg", color=(50 * i, 100 if c == "a" else 0, 0))
    return root


def test_image_folder_lists_sorted_classes_and_samples(folder):
    ds = image_folder(folder, "train")
    assert ds.classes == ["a", "b"] and len(ds) == 6 and ds.targets == [0, 0, 0, 1, 1, 1]
    img, label = ds[4]
    assert img.mode == "RGB" and label == 1
    assert len(ds.subset_per_class(2)) == 4


def test_greyscale_and_palette_become_rgb(folder, tmp_cache):
    g = _write(folder / "train" / "a" / "grey.png", mode="L", fmt="PNG")
    p = _write(folder / "train" / "a" / "pal.png", mode="P", fmt="PNG")
    assert load_image(g).mode == "RGB" and load_image(p).mode == "RGB"
    assert np.asarray(load_image(g)).shape == (30, 40, 3)
    ds = image_folder(folder, "train")
    dec = decode_split(ds, 24, progress=False)
    assert dec.images.shape == (8, 3, 24, 24)
    grey = dec.images[ds.relative_paths().index("a/grey.png")]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match=r"does not exist: download Imagenette.*ZFREPRO_DATA") as e:
        image_folder(tmp_path / "nowhere", "train")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        resolve_root(tmp_path / "nowhere")


def test_missing_split(folder):
    with pytest.raises(DataError, match=r"has no test/ folder \(it has: train, val\)"):
        image_folder(folder, "test")


def test_empty_class_folder(folder):
    (folder / "train" / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/c is empty"):
        image_folder(folder, "train")


def test_non_image_in_class_folder(folder):
    (folder / "train" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes.txt is not an image"):
        image_folder(folder, "train")
    # hidden files (.DS_Store) are ignored
    (folder / "train" / "a" / "notes.txt").unlink()
    (folder / "train" / "a" / ".DS_Store").write_text("x")
    assert len(image_folder(folder, "train")) == 6


def test_corrupt_and_truncated_images(folder, tmp_cache):
    bad = folder / "train" / "a" / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*bad.jpg.*corrupt or truncated"):
        load_image(bad)
    good = (folder / "train" / "b" / "0.jpg").read_bytes()
    trunc = folder / "train" / "b" / "trunc.jpg"
    big = _write(folder / "tmp.jpg", size=(300, 200))
    trunc.write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    big.unlink()
    assert good
    with pytest.raises(DataError, match="trunc.jpg"):
        load_image(trunc)
    # decoding the split fails on the first bad file and leaves no half-written cache behind
    with pytest.raises(DataError, match=r"bad.jpg|trunc.jpg"):
        decode_split(image_folder(folder, "train"), 16, progress=False)
    leftovers = list((tmp_cache / "decoded").glob("*")) if (tmp_cache / "decoded").exists() else []
    assert leftovers == []


def test_decode_cache_is_reused_and_rebuilt_on_change(folder, tmp_cache):
    ds = image_folder(folder, "train")
    d1 = decode_split(ds, 16, progress=False)
    assert d1.images.dtype == torch.uint8 and d1.images.shape == (6, 3, 16, 16)
    mtime = d1.cache_path.stat().st_mtime_ns
    d2 = decode_split(image_folder(folder, "train"), 16, progress=False)
    assert d2.cache_path.stat().st_mtime_ns == mtime and torch.equal(d1.images, d2.images)
    # another size is another cache
    d3 = decode_split(ds, 20, progress=False)
    assert d3.cache_path != d1.cache_path
    # a changed file rebuilds
    _write(folder / "train" / "a" / "0.jpg", color=(255, 255, 255))
    os.utime(folder / "train" / "a" / "0.jpg", ns=(1, 1))
    d4 = decode_split(image_folder(folder, "train"), 16, progress=False)
    assert d4.images[0].float().mean() > 200 and d1.cache_path == d4.cache_path


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path, tmp_cache):
    root = tmp_path / "r"
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 30:50] = 255  # a white vertical band in the middle of a wide image
    (root / "train" / "x").mkdir(parents=True)
    Image.fromarray(img).save(root / "train" / "x" / "0.png")
    d = decode_split(image_folder(root, "train"), 20, progress=False)
    a = d.images[0, 0].numpy()
    assert a.shape == (20, 20)
    # 80x40 → 40x20 → centre crop columns 10..30: the band (15..25 after resize) is at 5..15
    assert a[:, 7:13].mean() > 240 and a[:, :3].mean() < 15 and a[:, -3:].mean() < 15


def test_transforms_shapes_and_determinism():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    assert center_crop(x, 6).shape == (2, 3, 6, 6)
    assert torch.equal(center_crop(x, 6), x[..., 2:8, 2:8])
    tc = ten_crop(x, 6)
    assert tc.shape == (20, 3, 6, 6) and torch.equal(tc[0], x[0, :, :6, :6]) and torch.equal(tc[10], x[0, :, :6, :6].flip(-1))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = random_crop_flip(x, 6, g1), random_crop_flip(x, 6, g2)
    assert torch.equal(a, b) and a.shape == (2, 3, 6, 6)
    # every crop is a window (maybe flipped) of the source
    for i in range(2):
        wins = [x[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in wins)
    r = random_resized_crop_flip(x, 6, torch.Generator().manual_seed(0))
    assert r.shape == (2, 3, 6, 6) and torch.isfinite(r).all()


def test_real_split_pipeline(data_root, tmp_cache):
    prof = get_profile("smoke")
    val = load_split(prof, "val", data_root, progress=False)
    assert len(val) == 10 * prof.val_per_class
    x, y = val[0]
    assert x.shape == (3, prof.input_size, prof.input_size) and x.dtype == torch.float32
    assert abs(float(val.batch(range(len(val))).mean())) < 0.5  # mean-subtracted
    assert val.to_display(x).min() >= 0 and val.to_display(x).max() <= 1
    train = decode_split(image_folder(data_root, "train").subset_per_class(prof.train_per_class), prof.resize,
                         progress=False)
    mean = pixel_mean(train)
    assert mean.shape == (3, prof.resize, prof.resize)
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(train, mean, prof, train=True, generator=g))
    assert len(batches) == len(train) // prof.batch_size
    xb, yb = batches[0]
    assert xb.shape == (prof.batch_size, 3, prof.input_size, prof.input_size) and yb.dtype == torch.long
    again = next(iter(iterate_batches(train, mean, prof, train=True, generator=torch.Generator().manual_seed(0))))
    assert torch.equal(again[0], xb)


def test_no_root_downloads_imagenette_into_the_cache_and_says_so(tmp_path, tmp_cache, monkeypatch, capsys):
    """With neither an argument nor ZFREPRO_DATA, the data root is Imagenette fetched by torchvision
    (which verifies checksums) into the cache directory; the download is announced first."""
    import torchvision.datasets

    calls = []

    class FakeImagenette:
        def __init__(self, root, split="train", size="full", download=False):
            calls.append((root, split, size, download))
            self._size_root = Path(root) / "imagenette2-320"
            if download:
                for s in ("train", "val"):
                    _write(self._size_root / s / "n01440764" / "a.jpg")
            elif not self._size_root.is_dir():
                raise RuntimeError("Dataset not found")

    monkeypatch.delenv("ZFREPRO_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, "Imagenette", FakeImagenette)
    root = resolve_root(None)
    assert root == tmp_cache / "imagenette" / "imagenette2-320"
    assert calls[0][3] is True and calls[0][2] == "320px" and ".partial" in calls[0][0]
    assert "downloading Imagenette" in capsys.readouterr().err
    assert (tmp_cache / "imagenette" / ".imagenette-320px.complete").is_file()
    assert not (tmp_cache / "imagenette" / ".imagenette-320px.partial").exists()
    n = len(calls)
    resolve_root(None)  # complete: no second download, nothing announced
    assert all(not c[3] for c in calls[n:]) and "downloading" not in capsys.readouterr().err

    class FailingImagenette(FakeImagenette):
        def __init__(self, root, split="train", size="full", download=False):
            if download:
                raise OSError("network unreachable")
            super().__init__(root, split, size, download)

    monkeypatch.setattr(torchvision.datasets, "Imagenette", FailingImagenette)
    monkeypatch.setenv("ZFREPRO_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(DataError, match=r"downloading Imagenette into .* failed \(OSError: network unreachable\)"):
        resolve_root(None)
    monkeypatch.setenv("ZFREPRO_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="elsewhere does not exist"):
        resolve_root(None)


def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path):
    ramp16 = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)          # 0 .. 64,491 of 65,535
    Image.fromarray(ramp16).save(tmp_path / "grey16.png")
    got = np.asarray(load_image(tmp_path / "grey16.png"))[..., 0].astype(float)
    assert got.shape == (48, 64) and np.abs(got - ramp16 / 257.0).max() <= 0.51   # scaled by the bit depth
    assert 0.4 < (got > 127).mean() < 0.6                                          # not 99.6 % white
    f = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(f).save(tmp_path / "float.tif")
    got = np.asarray(load_image(tmp_path / "float.tif"))[..., 0].astype(float)
    assert np.abs(got - f * 255).max() <= 0.51
    Image.fromarray(f * 1000).save(tmp_path / "hdr.tif")
    with pytest.raises(DataError, match="float image with values in .*convert it to an 8-bit image$") as ei:
        load_image(tmp_path / "hdr.tif")
    assert "corrupt" not in str(ei.value)  # not mistaken for a broken file
