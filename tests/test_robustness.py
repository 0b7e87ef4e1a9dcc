"""Robustness sweep: every bad input the package claims to handle gives one clear line naming the
problem (and, where there is one, the fix) — and a killed ``zfrepro reproduce`` resumes to the same end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from zfrepro.errors import ZFReproError
from zfrepro.models import alexnet, init_weights, save_checkpoint, zfnet


def _model():
    torch.manual_seed(0)
    return init_weights(zfnet(10, 64, 0.25, 32), "kaiming").eval()


@pytest.fixture()
def folder(tmp_path, tmp_cache):
    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 80, 20, 200)).save(d / f"{i}.jpg")
    return root


def _cases(folder: Path, tmp: Path):
    from zfrepro import correspondence, data, deconv, invariance, models, occlusion, receptive, scan, train
    from zfrepro.config import get_profile
    from zfrepro.reproduce import reproduce

    m = _model()
    corrupt = folder / "val" / "a" / "bad.jpg"
    truncated = folder / "val" / "b" / "cut.jpg"
    save_checkpoint(alexnet(10, 64, 0.25, 32), tmp / "alex.pt")
    runs = tmp / "runs" / "smoke" / "zfnet"
    runs.mkdir(parents=True)
    save_checkpoint(alexnet(10, 64, 0.25, 32), runs / "epoch_002.pt")
    (tmp / "junk.pt").write_text("not a checkpoint")
    csv = tmp / "faces.csv"
    csv.write_text("file,width,height,right_eye_x,right_eye_y,left_eye_x,left_eye_y,nose_x,nose_y\n"
                   "a/0.jpg,40,30,10,10,20,10,50,20\n")

    def write_corrupt():
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return data.load_image(corrupt)

    def write_truncated():
        corrupt.unlink(missing_ok=True)
        src = (folder / "val" / "b" / "0.jpg").read_bytes()
        truncated.write_bytes(src[: len(src) // 2])
        return data.decode_split(data.image_folder(folder, "val"), 32, progress=False)

    return [
        ("missing data root", lambda: data.resolve_root(tmp / "nowhere"), r"data root .*nowhere does not exist.*ZFREPRO_DATA"),
        ("missing split", lambda: data.image_folder(tmp, "val"), r"no val"),
        ("corrupt image", write_corrupt, r"cannot read image .*bad.jpg.*corrupt or truncated; replace or delete it"),
        ("truncated image", write_truncated, r"cut.jpg.*corrupt or truncated"),
        ("wrong layer (deconvnet)", lambda: deconv.DeconvNet(m).project(torch.randn(1, 3, 64, 64), "conv9", [0]),
         r"unknown layer 'conv9': valid layers are conv1, conv2, conv3, conv4, conv5"),
        ("wrong layer (scan)", lambda: scan.top_activations(m, [(torch.randn(2, 3, 64, 64), 0)], layers=["fc9"], k=1,
                                                            progress=False), r"unknown layer 'fc9'"),
        ("wrong layer (occlusion)", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 0, 16, 8, layer="pool2"),
         r"unknown layer 'pool2'"),
        ("wrong layer (receptive field)", lambda: receptive.receptive_field(m, "conv7", (0, 0)), r"unknown layer 'conv7'"),
        ("wrong layer (correspondence)", lambda: correspondence.layer_features(m, torch.randn(1, 3, 64, 64), ["fc10"]),
         r"unknown layer 'fc10'"),
        ("channel out of range (deconvnet)", lambda: deconv.DeconvNet(m).project(torch.randn(1, 3, 64, 64), "conv2", [999]),
         r"channel 999 is out of range for conv2.*use 0\.\.63"),
        ("channel out of range (occlusion)", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 0, 16, 8, channel=500),
         r"channel 500 is out of range: conv5 has 64 maps"),
        ("target out of range (occlusion)", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 12, 16, 8),
         r"target class 12 is out of range"),
        ("occluder too large", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 0, 80, 8), r"does not fit"),
        ("checkpoint of another architecture", lambda: train.load_trained("smoke", epoch=2, **{"epochs": 2}),
         r"(another architecture|snapshot of alexnet, not zfnet)"),
        ("corrupt checkpoint", lambda: models.load_checkpoint(tmp / "junk.pt"), r"cannot read checkpoint .*junk.pt.*corrupt"),
        ("unknown profile", lambda: get_profile("nope"), r"unknown profile 'nope': use one of smoke, default, paper"),
        ("unknown profile field", lambda: get_profile("default", nope=1), r"unknown profile field 'nope': valid fields are"),
        ("unknown architecture", lambda: models.build_model("resnet"), r"unknown architecture 'resnet'"),
        ("unknown transformation", lambda: invariance.transform(torch.zeros(3, 8, 8), "shear", 1), r"unknown transformation"),
        ("unknown notebook parameter", lambda: reproduce("smoke", only=["01"], sets={"lyer": "conv3"}),
         r"--set lyer: no selected notebook has such a parameter; valid ones are"),
        ("annotation outside its image", lambda: correspondence.load_annotations(csv), r"faces.csv:2 \(a/0.jpg\): nose .* outside"),
    ]


def test_every_bad_input_gives_one_clear_line(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ZFREPRO_RUNS", str(tmp_path / "runs"))
    failures = []
    for name, call, pattern in _cases(folder, tmp_path):
        try:
            call()
        except ZFReproError as exc:
            msg = str(exc)
            import re

            if "\n" in msg or not re.search(pattern, msg):
                failures.append(f"{name}: {msg!r} does not match {pattern!r}")
        except Exception as exc:  # noqa: BLE001 - the point is to catch the unclear ones
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{name}: no error")
    assert not failures, "\n".join(failures)


def test_greyscale_palette_cmyk_and_alpha_images_load_as_rgb(tmp_path):
    from zfrepro.data import load_image

    for mode, color in [("L", 128), ("P", 3), ("CMYK", (0, 50, 100, 0)), ("RGBA", (10, 20, 30, 40)), ("LA", (5, 200))]:
        p = tmp_path / f"{mode}.png" if mode != "CMYK" else tmp_path / f"{mode}.jpg"
        Image.new(mode, (9, 7), color).save(p)
        img = load_image(p)
        assert img.mode == "RGB" and img.size == (9, 7), mode


_NB = """
import os, pathlib, time
stamp = pathlib.Path('{name}.runs')
stamp.write_text(str(int(stamp.read_text()) + 1 if stamp.exists() else 1))
if {slow}:
    pathlib.Path('started_{name}').write_text('x')
    time.sleep(float(os.environ.get('ZF_TEST_WAIT', '0')))
pathlib.Path('result_{name}').write_text(str(sum(range({n}))))
"""


def _tiny_project(root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from nbtools import make_notebook

    (root / "notebooks").mkdir(parents=True)
    for i, (name, slow, n) in enumerate([("one", False, 10), ("two", True, 20), ("three", False, 30)], 1):
        make_notebook([("md", "# t (Fig. 0)"), ("params", 'profile: str = "default"  # profile'),
                       ("code", _NB.format(name=name, slow=slow, n=n))], root / "notebooks" / f"{i:02d}_{name}.ipynb")


def test_a_killed_reproduce_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for r in (killed, clean):
        _tiny_project(r)
    code = ("import sys; from zfrepro.reproduce import reproduce; "
            "reproduce('smoke', root=sys.argv[1], out_dir=sys.argv[1] + '/build')")
    env = dict(os.environ, ZFREPRO_RESULTS=str(tmp_path / "results"), ZF_TEST_WAIT="0")
    slow = dict(env, ZF_TEST_WAIT="120")  # the same command; only notebook 02 takes long this time
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed)], env=slow, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nb = killed / "notebooks"
    deadline = time.monotonic() + 120
    while not (nb / "started_two").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the run never reached notebook 02"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its kernel, in the middle of notebook 02
    proc.wait()
    assert not (nb / "result_two").exists()
    # the rerun skips notebook 01 and finishes 02 and 03
    subprocess.run([sys.executable, "-c", code, str(killed)], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", code, str(clean)], env=env, check=True, capture_output=True)
    assert (nb / "one.runs").read_text() == "1"  # not rerun: unchanged since its successful run
    assert (nb / "two.runs").read_text() == "2" and (nb / "three.runs").read_text() == "1"
    for name in ("one", "two", "three"):
        assert (nb / f"result_{name}").read_text() == (clean / "notebooks" / f"result_{name}").read_text()
    assert sorted(p.name for p in (killed / "build").glob("*.ipynb")) == ["01_one.ipynb", "02_two.ipynb", "03_three.ipynb"]
