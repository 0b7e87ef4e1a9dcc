"""Robustness sweep: every bad input the package claims to handle gives one clear line naming the
problem (and, where there is one, the fix) — and a killed ``zfrepro reproduce`` resumes to the same end.

Covered (issue #19 and before):

- bad input, one line each: missing root/split, corrupt, truncated and decompression-bomb images, a
  dangling or self-referencing symlink (decode fingerprint and dataset identity), unknown layers,
  channels, targets, profiles, fields, archs, transformations, notebook parameters, out-of-range
  annotations, checkpoints of another architecture or corrupt ones, ``n_images=0``, ``n=0``,
  ``draws=0``, ``maps_per_layer=0``, an occluder the size of the image and ``stride=1000`` (a 1×1
  map) refused; ``maps_per_layer`` beyond the maps there are clamped with a printed note;
- resume (subprocess SIGKILLs): a killed notebook is rerun, not marked done (its stamp is deleted
  before it runs, written after success; an executed copy with pending cells or an error output is
  not done; the files it wrote must still be there unchanged); a failed rerun with other parameters,
  a changed file behind a parameter (same path) and a deleted results JSON rerun it; the real notebook
  02 on ``smoke`` killed mid-run is rerun by the plain command;
- output names: ``CANONICAL_PARAMETERS`` equal every notebook's parameters cell; any non-default
  parameter or ``device`` writes apart (``results/<profile>-<changes>/``) — from ``reproduce`` and from
  the notebook itself; reruns of 02 with ``--set layer=conv3`` / ``--device cpu`` leave every committed
  file of a git project unchanged (``git status --porcelain`` clean);
- dataset identity: Imagenette (any copy with its file names) keeps the canonical name; a 2-image-per-
  class folder with Imagenette's class names, or a folder differing in one file's size, gets its own;
- two processes decoding one fresh cache: the second waits for the first and reuses its cache;
- disk and permission faults, one ``StorageError`` line each, nothing torn: a full cache disk (a 2 MB
  tmpfs when mounting works, else a simulated ENOSPC: no SIGBUS, no temp file left), a full runs disk
  (torch's ``inline_container.cc unexpected pos``), a read-only cache (read-only tmpfs, else simulated);
- ``train --out-dir`` onto a non-empty folder that is not a run of this identity is refused, nothing
  deleted; a run of the same identity is accepted;
- Ctrl-C (SIGINT to the process group) of ``zfrepro reproduce``: the "interrupted" line, exit 130,
  no kernel traceback (``ZMQError``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

from zfrepro import config as C
from zfrepro import datasets
from zfrepro import runs as R
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


def _bomb(tmp: Path):
    path = tmp / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # 10,000 px is a bomb under this limit (Pillow refuses over twice it)
    try:
        return datasets.load_image(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _linked(folder: Path, name: str, target, identity: bool = False):
    from zfrepro import data

    link = folder / "val" / "a" / name
    for stale in (folder / "val" / "a").glob("*"):
        if stale.is_symlink():
            stale.unlink()
    link.symlink_to(target)
    try:
        if identity:
            return datasets.dataset_identity(folder)
        return data.image_folder(folder, "val").fingerprint()
    finally:
        link.unlink()


def _tops(values=None):
    from zfrepro.scan import TopActivations

    values = torch.ones(4, 2) if values is None else values
    c, k = values.shape
    return TopActivations("conv1", values, torch.zeros(c, k, dtype=torch.long), torch.zeros(c, k, 2, dtype=torch.long),
                          (8, 8))


def _cases(folder: Path, tmp: Path):
    from zfrepro import correspondence, data, deconv, invariance, models, occlusion, receptive, scan, top_units, train
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
        return datasets.load_image(corrupt)

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
        ("decompression bomb", lambda: _bomb(tmp), r"cannot read image .*bomb.png.*more pixels than Pillow allows; shrink it"),
        ("dangling symlink (decode fingerprint)", lambda: _linked(folder, "gone.jpg", tmp / "nothing.jpg"),
         r"gone.jpg is a dangling link .*fix it or delete it"),
        ("self-referencing symlink (decode fingerprint)", lambda: _linked(folder, "loop.jpg", "loop.jpg"),
         r"loop.jpg is a self-referencing link .*fix it or delete it"),
        ("dangling symlink (dataset identity)", lambda: _linked(folder, "gone.jpg", tmp / "nothing.jpg", identity=True),
         r"gone.jpg is a dangling link .*fix it or delete it"),
        ("n_images=0", lambda: invariance.pick_one_per_class([0, 1, 1, 2], 0), r"asked for 0 images: ask for at least 1"),
        ("n=0", lambda: correspondence.correspondence_table(m, [1, 2, 3], n=0), r"n must be between 2 and the 3"),
        ("draws=0", lambda: correspondence.correspondence_table(m, [1, 2, 3], n=2, draws=0), r"draws .* at least 1"),
        ("maps_per_layer=0", lambda: top_units.choose_maps(_tops(), 0), r"asked for 0 maps of conv1"),
        ("occluder the size of the image", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 0, 64, 8),
         r"occluder of 64 px at stride 8 gives a 1×1 map"),
        ("stride=1000", lambda: occlusion.occlusion_maps(m, torch.randn(3, 64, 64), 0, 16, 1000),
         r"stride 1000 gives a 1×1 map .*stride of at most 48 px"),
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
    from zfrepro.datasets import load_image

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


# ----------------------------------------------------------------------------- resume never trusts a torn notebook

_COUNTED = """
import pathlib
from zfrepro.io import write_results
from zfrepro.outputs import output_name
p = pathlib.Path('count')
p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))
if k == 2:
    raise ValueError('k=2 fails')
out = output_name(profile, notebook='01_counted', params=globals())
write_results('01_counted', {'k': k, 'config': pathlib.Path(config).read_text() if config else ''}, out)
"""


def _counted_project(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from nbtools import make_notebook

    (root / "notebooks").mkdir(parents=True)
    make_notebook([("md", "# t (Fig. 0)"),
                   ("params", 'profile: str = "default"  # profile\nk: int = 1  # k\nconfig: str = ""  # a file'),
                   ("code", _COUNTED)], root / "notebooks" / "01_counted.ipynb")
    return root


@pytest.mark.slow
def test_a_failed_torn_or_stale_notebook_is_never_marked_done(tmp_path, monkeypatch, capsys):
    from zfrepro.errors import ZFReproError
    from zfrepro.outputs import output_name
    from zfrepro.reproduce import executed_ok, reproduce

    root = _counted_project(tmp_path / "p")
    monkeypatch.setenv("ZFREPRO_HOME", str(root))  # the kernel finds the notebook's defaults there
    monkeypatch.setenv("ZFREPRO_RESULTS", str(tmp_path / "results"))
    build = tmp_path / "build"
    count = lambda: int((root / "notebooks" / "count").read_text())  # noqa: E731

    def run(**sets):
        return reproduce("smoke", root=root, out_dir=build, sets={k: str(v) for k, v in sets.items()})
    run(k=1)
    run(k=1)
    assert count() == 1  # unchanged: skipped
    assert (build / ".stamps" / "01_counted.json").is_file()
    with pytest.raises(ZFReproError, match=r"notebook 01_counted.ipynb failed \(ValueError: k=2 fails\)"):
        run(k=2)  # another parameter fails, into the same executed copy
    assert not (build / ".stamps" / "01_counted.json").exists() and not executed_ok(build / "01_counted.ipynb")
    run(k=1)
    assert count() == 3  # the copy shows the error: rerun, not "unchanged"
    # a deleted results JSON: rerun
    result = tmp_path / "results" / "smoke" / "01_counted.json"
    assert json.loads(result.read_text())["k"] == 1
    result.unlink()
    run(k=1)
    assert count() == 4 and result.is_file()
    # a torn copy (pending cells, as a kill leaves it): rerun
    import nbformat

    nb = nbformat.read(str(build / "01_counted.ipynb"), as_version=4)
    nb.cells[-1].execution_count, nb.cells[-1].outputs = None, []
    nbformat.write(nb, str(build / "01_counted.ipynb"))
    run(k=1)
    assert count() == 5
    # another content at the same path of a file parameter: rerun
    cfg = tmp_path / "config.txt"
    cfg.write_text("first")
    run(k=1, config=cfg)
    run(k=1, config=cfg)
    assert count() == 6
    cfg.write_text("second, longer")
    run(k=1, config=cfg)
    assert count() == 7
    name = output_name("smoke", notebook=root / "notebooks" / "01_counted.ipynb", params={"config": str(cfg)})
    assert name != "smoke" and json.loads((tmp_path / "results" / name / "01_counted.json").read_text())["config"] \
        == "second, longer"
    assert "unchanged since its last successful run, skipped" in capsys.readouterr().err


def _git(root: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True,
                          timeout=60).stdout


def _project_copy(tmp: Path, notebooks: list[str]) -> Path:
    """A project root with the real notebooks ``notebooks`` and data/, under git."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    repo = Path(__file__).resolve().parent.parent
    root = tmp / "project"
    (root / "notebooks").mkdir(parents=True)
    for name in notebooks:
        shutil.copy(next((repo / "notebooks").glob(f"{name}_*.ipynb")), root / "notebooks")
    shutil.copytree(repo / "data", root / "data")
    _git(root, "init", "-q")
    return root


def _reproduce_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zfrepro", "reproduce", "--profile", "smoke", *args]


@pytest.mark.slow
def test_smoke_notebook_killed_mid_run_is_rerun_and_reruns_write_apart(data_root, tmp_path):
    """`reproduce --only 02` on smoke; reruns with --set layer=conv3 and --device cpu leave every committed
    file unchanged; `--force` SIGKILLed mid-notebook; the plain command then reruns 02 (not "skipped")."""
    from zfrepro.reproduce import executed_ok

    root = _project_copy(tmp_path, ["02"])
    env = dict(os.environ, ZFREPRO_HOME=str(root), ZFREPRO_DATA=str(data_root), PYTHONUNBUFFERED="1",
               ZFREPRO_RUNS=os.environ.get("ZFREPRO_RUNS") or str(tmp_path / "runs"))
    env.pop("ZFREPRO_RESULTS", None)
    first = subprocess.run(_reproduce_cmd("--only", "02"), env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    canonical = [root / "results" / "smoke" / "02_deconvnet.json", root / "build" / "smoke" / "figures" / "fig1_deconvnet.png"]
    assert all(p.is_file() for p in canonical)
    _git(root, "add", "-f", "notebooks", "data", "results", "build/smoke/figures")
    _git(root, "commit", "-q", "-m", "the canonical smoke run")
    for extra, name in ((["--set", "layer=conv3"], "smoke-layer_conv3"), (["--device", "cpu"], "smoke-device_cpu")):
        r = subprocess.run(_reproduce_cmd("--only", "02", *extra), env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert _git(root, "status", "--porcelain", "--untracked-files=no") == ""  # nothing committed changed
        assert (root / "results" / name / "02_deconvnet.json").is_file()
        assert (root / "build" / name / "figures" / "fig1_deconvnet.png").is_file()
    # --force, killed (SIGKILL, the run and its kernel) once the executed copy has run a cell
    copy = root / "build" / "smoke" / "02_deconvnet.ipynb"
    proc = subprocess.Popen(_reproduce_cmd("--only", "02", "--force"), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import nbformat

    def cells_run() -> int:
        try:
            nb = nbformat.read(str(copy), as_version=4)
        except Exception:  # noqa: BLE001 - being rewritten
            return 0
        return sum(1 for c in nb.cells if c.cell_type == "code" and c.get("execution_count"))
    deadline = time.monotonic() + 300
    while not (2 <= cells_run() and not executed_ok(copy) and not (root / "build/smoke/.stamps/02_deconvnet.json").exists()):
        assert time.monotonic() < deadline and proc.poll() is None, "the forced rerun never got into notebook 02"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)  # (the kernel runs in its own session and exits when its parent is gone)
    assert not executed_ok(copy)
    again = subprocess.run(_reproduce_cmd("--only", "02"), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipped" not in again.stderr and "[1/1] 02_deconvnet.ipynb (profile smoke" in again.stderr
    assert executed_ok(copy) and (root / "build/smoke/.stamps/02_deconvnet.json").is_file()


@pytest.mark.slow
def test_ctrl_c_of_reproduce_prints_one_line_and_no_kernel_traceback(data_root, tmp_path):
    root = _project_copy(tmp_path, ["01"])
    env = dict(os.environ, ZFREPRO_HOME=str(root), ZFREPRO_DATA=str(data_root), PYTHONUNBUFFERED="1",
               ZFREPRO_RUNS=str(tmp_path / "runs"))
    env.pop("ZFREPRO_RESULTS", None)
    # a terminal's Ctrl-C: SIGINT handled as by default, even where this test runs as a background job of a
    # non-interactive shell (which starts its children with SIGINT ignored, and Python keeps it ignored)
    proc = subprocess.Popen(_reproduce_cmd("--only", "01"), env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    copy = root / "build" / "smoke" / "01_architecture.ipynb"
    deadline = time.monotonic() + 120
    while not copy.is_file():
        assert time.monotonic() < deadline and proc.poll() is None, "reproduce never started notebook 01"
        time.sleep(0.2)
    time.sleep(4)  # inside a cell
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "zfrepro: interrupted; rerun the same command to resume" in err
    assert "Traceback" not in err and "ZMQError" not in err, err[-3000:]


# ----------------------------------------------------------------------------- output names

def test_canonical_parameters_are_the_notebooks_parameters_cells():
    from zfrepro.outputs import CANONICAL_PARAMETERS, _literal, notebook_parameters
    from zfrepro.reproduce import notebook_paths

    for nb in notebook_paths(Path(__file__).resolve().parent.parent):
        if nb.stem not in CANONICAL_PARAMETERS:
            continue
        declared = {k: _literal(v["default"]) for k, v in notebook_parameters(nb).items()}
        assert declared == CANONICAL_PARAMETERS[nb.stem], f"{nb.name}: update CANONICAL_PARAMETERS with its parameters"


def test_any_non_default_parameter_or_device_writes_apart(monkeypatch):
    from zfrepro.outputs import output_name

    monkeypatch.delenv("ZFREPRO_DATA", raising=False)  # the download: Imagenette (no 13k-file stat per name)
    from zfrepro.outputs import CANONICAL_PARAMETERS

    for stem, defaults in CANONICAL_PARAMETERS.items():
        assert output_name("default", notebook=stem, params=dict(defaults)) == "default"  # the canonical run
        for key, value in defaults.items():
            if key in ("profile", "data_root", "arch", "weights", "interactive"):
                continue
            other = (not value) if isinstance(value, bool) else value + ("x" if isinstance(value, str) else 1)
            name = output_name("default", notebook=stem, params={**defaults, key: other})
            assert name != "default" and name.startswith("default-"), (stem, key)
    assert output_name("default", notebook="02_deconvnet", params={"layer": "conv3"}) == "default-layer_conv3"
    assert output_name("default", notebook="06_occlusion", params={"device": "cpu", "stride": 8}) == \
        "default-device_cpu-stride_8"
    long = output_name("default", notebook="07_correspondence", params={"annotations": "/some/where/faces.csv"})
    assert long.startswith("default-set") and len(long) == len("default-set") + 8
    # another model is apart already; its parameters are in its JSON
    assert output_name("default", "torchvision:alexnet", notebook="02_deconvnet", params={"layer": "conv3"}) == \
        "default-tv-alexnet"


def test_a_set_applying_to_no_notebook_of_the_run_runs_nothing_canonical(tmp_path, capsys):
    """`--set k=3` on notebooks that have k: those write apart; one without k is skipped, not rerun
    into the canonical folder."""
    from zfrepro.reproduce import reproduce

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from nbtools import make_notebook

    (tmp_path / "notebooks").mkdir()
    make_notebook([("md", "# a"), ("params", 'profile: str = "default"  # p\nk: int = 9  # k'), ("code", "x = k")],
                  tmp_path / "notebooks" / "01_a.ipynb")
    make_notebook([("md", "# b"), ("params", 'profile: str = "default"  # p\nlayer: str = "conv5"  # l'),
                   ("code", "open('ran_b', 'w').write(layer)")], tmp_path / "notebooks" / "02_b.ipynb")
    out = reproduce("smoke", root=tmp_path, sets={"k": "3"})
    assert [p.name for p in out] == ["01_a.ipynb"] and out[0].parent == tmp_path / "build" / "smoke-k_3"
    assert not (tmp_path / "notebooks" / "ran_b").exists()
    assert "02_b.ipynb skipped: k=3 does not apply to it" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dataset identity

def _images(root: Path, classes, per_class: int, size=(40, 30)) -> Path:
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", size, (i * 40, 30, 90)).save(d / f"{c}_{i}.JPEG")
    return root


def test_dataset_identity_covers_the_files_not_only_the_class_names(tmp_path, monkeypatch):
    from zfrepro.datasets import IMAGENETTE_WNIDS
    from zfrepro.outputs import output_name

    monkeypatch.setenv("ZFREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("ZFREPRO_DATA", raising=False)
    small = _images(tmp_path / "small", IMAGENETTE_WNIDS, 2)
    tag = datasets.data_tag(small)
    assert tag.startswith("-data") and output_name("smoke", data_root=small) == "smoke" + tag
    assert R.run_dir_for("smoke", data_root=small) != R.run_dir_for("smoke")  # trains its own network
    twin = tmp_path / "twin"
    shutil.copytree(small, twin)  # same names, one file of another size
    first = next((twin / "val").rglob("*.JPEG"))
    first.write_bytes(first.read_bytes()[:100])
    assert datasets.data_tag(twin) not in ("", tag)
    first.write_bytes(b"")  # an empty file: never the canonical dataset either
    assert datasets.data_tag(twin) not in ("", tag)
    assert datasets.data_tag(None) == ""  # no root: the download, which is Imagenette


def test_any_copy_of_imagenette_with_its_file_names_is_canonical(data_root, tmp_path):
    """The offline copy CI uses, and a copy at another size (torchvision's 160/320/full share the names)."""
    if not datasets.is_imagenette(data_root):
        pytest.skip(f"{data_root} is not Imagenette")
    assert datasets.data_tag(data_root) == ""
    resized = tmp_path / "imagenette2-160"
    for rel, _, _ in datasets.dataset_files(data_root):  # the same names, other sizes (1-3 bytes each)
        f = resized / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x" * (1 + len(rel) % 3))
    assert datasets.data_tag(resized) == ""
    next((resized / "train").rglob("*.JPEG")).unlink()  # one image fewer: another dataset
    assert datasets.data_tag(resized).startswith("-data")


# ----------------------------------------------------------------------------- concurrent decodes

_DECODE = """
import sys, time, pathlib
from zfrepro import data
from zfrepro.data import decode_split, image_folder
square = data.decode_square
data.decode_square = lambda p, s: (time.sleep(0.02), square(p, s))[1]  # a decode of ~3 s: the two overlap
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
d = decode_split(image_folder(sys.argv[1], 'train'), 48, progress=True, threads=2)
print(int(d.images.sum()), len(d))
"""


@pytest.mark.slow
def test_two_processes_decoding_into_one_fresh_cache_both_succeed(tmp_path):
    root = _images(tmp_path / "data", ("a", "b", "c"), 100, size=(120, 90))
    env = dict(os.environ, ZFREPRO_CACHE=str(tmp_path / "cache"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _DECODE, str(root), str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)  # both imported and waiting
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].split()[1] == "300"  # the same 300 images
    errs = "".join(e for _, e in outs)
    assert errs.count("zfrepro: decoding 300 train images") == 1  # decoded once; the other waited and reused it
    assert "waiting for another process decoding" in errs
    assert not list((tmp_path / "cache" / "decoded").glob(".*.tmp"))


# ----------------------------------------------------------------------------- disk and permission faults

@contextmanager
def _tmpfs(path: Path, size: str = "2m", read_only: bool = False):
    """A small tmpfs at ``path`` (skips the test where mounting is not allowed)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, timeout=30)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _one_line(text: str, *patterns: str) -> None:
    import re

    lines = [l for l in text.splitlines() if l.startswith("zfrepro") and "error" in l]
    assert len(lines) == 1 and "Traceback" not in text, text[-2000:]
    for pat in patterns:
        assert re.search(pat, lines[0]), (pat, lines[0])


_DECODE_CLI = ("import sys\nfrom zfrepro.errors import ZFReproError\nfrom zfrepro.data import decode_split, image_folder\n"
               "try:\n    decode_split(image_folder(sys.argv[1], 'train'), 64, progress=False)\n"
               "except ZFReproError as exc:\n    print(f'zfrepro: error: {exc}', file=sys.stderr); sys.exit(2)\n")


def test_full_cache_disk_is_one_line_and_leaves_nothing(tmp_path):
    root = _images(tmp_path / "data", ("a", "b", "c"), 100)  # 300 × 3×64×64 = 3.7 MB, on a 2 MB disk
    with _tmpfs(tmp_path / "small") as disk:
        r = subprocess.run([sys.executable, "-c", _DECODE_CLI, str(root)], env=dict(os.environ, ZFREPRO_CACHE=str(disk)),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # not -7 (SIGBUS)
        _one_line(r.stderr, r"disk full: cannot write the decode cache .*\.npy", "set ZFREPRO_CACHE")
        assert [p.name for p in (disk / "decoded").iterdir()] == []


def test_simulated_enospc_in_the_cache_is_one_line(folder, tmp_cache, monkeypatch):
    from zfrepro import data
    from zfrepro.errors import StorageError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(StorageError, match=r"^disk full: cannot write the decode cache .*ZFREPRO_CACHE") as ei:
        data.decode_split(data.image_folder(folder, "val"), 32, progress=False)
    assert "\n" not in str(ei.value)
    assert list((tmp_cache / "decoded").iterdir()) == []


def test_read_only_cache_is_one_line(folder, tmp_path, monkeypatch):
    from zfrepro import data
    from zfrepro.errors import StorageError

    try:
        ctx = _tmpfs(tmp_path / "ro", "1m", read_only=True)
        disk = ctx.__enter__()
    except pytest.skip.Exception:
        ctx, disk = None, None
    try:
        if disk is not None:
            monkeypatch.setenv("ZFREPRO_CACHE", str(disk / "cache"))
        else:  # simulated: root ignores permission bits
            monkeypatch.setattr(data, "cache_dir", lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))
        with pytest.raises(StorageError, match=r"cannot write the decode cache in .*(Read-only file system|Permission denied).*"
                                               r"make it writable") as ei:
            data.decode_split(data.image_folder(folder, "val"), 32, progress=False)
        assert "\n" not in str(ei.value)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


def test_full_runs_disk_while_saving_a_snapshot_is_one_line(tmp_path):
    from zfrepro import io as zio

    payload = {"state_dict": {"w": torch.zeros(1 << 20)}}  # 4 MB on a 2 MB disk
    with _tmpfs(tmp_path / "runs") as disk:
        with pytest.raises(OSError) as ei:
            zio.atomic_save(payload, disk / "epoch_001.pt")
        assert ei.value.errno == errno.ENOSPC
        with pytest.raises(R.RunStorageError, match=r"^disk full: cannot write snapshot .*epoch_002.pt") as ei:
            R.save_snapshot(payload, disk / "epoch_002.pt")
        assert "\n" not in str(ei.value) and "inline_container" not in str(ei.value)
        assert list(disk.iterdir()) == []  # no torn file, no temp file


def test_simulated_torch_short_write_is_enospc(tmp_path, monkeypatch):
    from zfrepro import io as zio

    def short(obj, f, *a, **k):
        Path(f).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4096 vs 1986")
    monkeypatch.setattr(torch, "save", short)
    monkeypatch.setattr(zio, "free_bytes", lambda p: 0)
    with pytest.raises(OSError) as ei:
        zio.atomic_save({"x": 1}, tmp_path / "a.pt")
    assert ei.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- train --out-dir

def test_train_refuses_a_foreign_out_dir_and_deletes_nothing(tmp_path):
    from zfrepro import train as T
    from zfrepro.errors import CheckpointError

    mine = tmp_path / "results-of-mine"
    mine.mkdir()
    for name, text in (("metrics.csv", "mine\n"), ("profile.json", '{"my": "notes"}'), ("paper.tex", "x")):
        (mine / name).write_text(text)
    before = {p.name: p.read_text() for p in mine.iterdir()}
    for args in ({}, {"resume": False}):
        with pytest.raises(CheckpointError, match=r"is not empty \(metrics.csv, paper.tex, profile.json\) and holds a "
                                                  r"profile.json that is not a zfrepro run's.*nothing was written or deleted"):
            T.train("smoke", out_dir=mine, device="cpu", progress=False, **args)
    assert {p.name: p.read_text() for p in mine.iterdir()} == before  # not even a .lock
    # a run of another configuration, killed before its first snapshot
    other = tmp_path / "other"
    other.mkdir()
    prof, arch = C.resolve_profile("smoke", epochs=3)
    (other / "profile.json").write_text(json.dumps({"profile": prof.as_dict(), "arch": arch, "data_tag": ""}))
    with pytest.raises(CheckpointError, match=r"holds a run with another epochs"):
        T.train("smoke", out_dir=other, device="cpu", progress=False)
    R.refuse_foreign_dir(other, prof, arch, "")  # the same identity: accepted (resumed)
    with pytest.raises(CheckpointError, match=r"another dataset"):
        R.refuse_foreign_dir(other, prof, arch, "-data12345678")


def test_maps_per_layer_beyond_the_maps_there_is_clamped_with_a_note(capsys):
    from zfrepro.top_units import choose_maps

    assert choose_maps(_tops(torch.ones(4, 2)), 100000) == [0, 1, 2, 3]
    assert "conv1 has 4 live maps, fewer than the 100000 asked for: showing all 4" in capsys.readouterr().err
