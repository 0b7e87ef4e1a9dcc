"""Tests of zfrepro.train: renormalisation, an end-to-end smoke run, snapshots, exact resume after
SIGKILL, DDP equivalence, load_trained, and one-line errors for bad input.

Training tests need a dataset: set ``ZFREPRO_DATA`` to an ImageFolder root with ``train/`` and
``val/`` (e.g. Imagenette); they are skipped otherwise. Runs go to a temporary ``ZFREPRO_RUNS``.
All runs use a tiny smoke configuration (160 train / 40 val images at 64 px, 5 steps per epoch).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zfrepro import datasets
from torch import nn

from zfrepro import train as T
from zfrepro import runs as R
from zfrepro import config as C
from zfrepro import evaluation as E
from zfrepro import cli as CLI
from zfrepro.errors import CheckpointError, ConfigError, DataError
from zfrepro.models import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DATA = os.environ.get("ZFREPRO_DATA")
needs_data = pytest.mark.skipif(
    not DATA, reason="ZFREPRO_DATA is not set: point it to an ImageFolder root with train/ and val/ "
                     "(e.g. Imagenette) to run the training tests")

#: Tiny smoke configuration: 5 steps of 32 images per epoch, fc 64.
TINY = dict(fc_width=64, train_per_class=16, val_per_class=4)


def _sets(**kw: object) -> list[str]:
    out: list[str] = []
    for k, v in kw.items():
        out += ["--set", f"{k}={v}"]
    return out


def _env(runs: Path) -> dict[str, str]:
    env = dict(os.environ, ZFREPRO_RUNS=str(runs), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a} and {b}"


def _metrics_wo_time(run: Path) -> list[dict]:
    df = R.read_metrics(run).drop(columns=["seconds"])
    return df.to_dict("records")


def _tree(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.iterdir()}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZFREPRO_RUNS", str(root))
        yield root


@pytest.fixture(scope="module")
def trained(runs_root: Path) -> Path:
    """A finished 2-epoch smoke run, made through load_trained (which trains when nothing exists)."""
    if torch.cuda.is_available():  # the resume comparisons below are CPU-exact: train it on the CPU
        T.train("smoke", device="cpu", progress=False, **TINY)
    model = T.load_trained("smoke", device="cpu", **TINY)
    assert not model.training
    return R.run_dir_for("smoke", "zfnet", **TINY)


@pytest.fixture(scope="module")
def reference3(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch CPU run: the target of the resume tests."""
    out = tmp_path_factory.mktemp("ref3") / "run"
    return T.train("smoke", out_dir=out, device="cpu", progress=False, epochs=3, **TINY)


# ----------------------------------------------------------------------------- renormalisation


def test_renormalize_filters_clips_only_large_filters_to_exact_radius() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    conv1, conv2 = model[0], model[2]
    with torch.no_grad():
        conv1.weight.normal_(0, 0.01)
        conv1.weight[[1, 4]] *= 50           # RMS ~0.5 > 0.1
        conv2.weight.normal_(0, 0.02)
        conv2.weight[2] = 0.3                # RMS exactly 0.3
        conv1.bias.fill_(5.0)                # biases are never touched
    model(torch.zeros(1, 3, 9, 9))           # materialise the lazy linear layer
    with torch.no_grad():
        model[4].weight.fill_(1.0)           # linear layers are never touched
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rms = lambda w: w.pow(2).mean(dim=(1, 2, 3)).sqrt()  # noqa: E731

    assert T.renormalize_filters(model, radius=0.1) == 3
    r1, r2 = rms(conv1.weight), rms(conv2.weight)
    for i in (1, 4):
        assert r1[i].item() == pytest.approx(0.1, rel=1e-6)
        # direction kept: a positive multiple of the old filter
        cos = nn.functional.cosine_similarity(conv1.weight[i].flatten(), before["0.weight"][i].flatten(), dim=0)
        assert cos.item() == pytest.approx(1.0, abs=1e-6)
    assert r2[2].item() == pytest.approx(0.1, rel=1e-6)
    for i in (0, 2, 3, 5):
        assert torch.equal(conv1.weight[i], before["0.weight"][i])
    for i in (0, 1, 3):
        assert torch.equal(conv2.weight[i], before["2.weight"][i])
    assert torch.equal(conv1.bias, before["0.bias"])
    assert torch.equal(model[4].weight, before["4.weight"])
    # idempotent: nothing exceeds the radius any more
    assert T.renormalize_filters(model, radius=0.1) == 0
    # a smaller radius clips everything above it
    assert T.renormalize_filters(model, radius=1e-4) == 10
    assert torch.allclose(rms(conv1.weight), torch.full((6,), 1e-4), rtol=1e-5)


# ----------------------------------------------------------------------------- configuration


def test_run_dirs_of_other_datasets_are_separate(tmp_path: Path, runs_root: Path, data_root: Path) -> None:
    other = tmp_path / "mydata"
    for c in ("cat", "dog"):
        (other / "train" / c).mkdir(parents=True)
    plain = R.run_dir_for("smoke")
    mine = R.run_dir_for("smoke", data_root=other)
    assert mine != plain and mine.name.startswith("zfnet-data") and mine.parent == plain.parent
    imagenette = tmp_path / "copy"
    for c in datasets.IMAGENETTE_WNIDS:
        (imagenette / "train" / c).mkdir(parents=True)
    # empty folders with Imagenette's class names are another dataset (its identity is its files)
    assert R.run_dir_for("smoke", data_root=imagenette) != plain
    assert R.run_dir_for("smoke", data_root=data_root) == plain  # Imagenette itself, wherever it lies


def test_run_dir_names_distinguish_configurations(runs_root: Path) -> None:
    assert R.run_dir_for("smoke") == runs_root / "smoke" / "zfnet"
    assert R.run_dir_for("smoke", "alexnet") == runs_root / "smoke" / "alexnet"
    assert R.run_dir_for("smoke", epochs=2) == R.run_dir_for("smoke")      # same as the profile's value
    a, b = R.run_dir_for("smoke", epochs=3), R.run_dir_for("smoke", epochs=4)
    assert a != b and a.parent == runs_root / "smoke" and a.name.startswith("zfnet-")
    assert R.run_dir_for("smoke", epochs="3") == a                          # CLI strings coerce alike
    assert R.run_dir_for("smoke", arch="alexnet") == R.run_dir_for("smoke", "alexnet")


def test_unknown_profile_arch_field_and_schedule_are_one_line_config_errors(capsys) -> None:
    cases = [dict(profile="nope"), dict(profile="smoke", arch="vgg"), dict(profile="smoke", bogus=1),
             dict(profile="smoke", schedule="step")]
    for kw in cases:
        with pytest.raises(ConfigError) as ei:
            T.train(**kw, progress=False)
        assert "\n" not in str(ei.value)
    assert CLI.main(["train", "--profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown profile 'nope'" in err[0] and "smoke" in err[0]
    assert CLI.main(["train", "--profile", "smoke", "--set", "epochs"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_data_root_without_splits_is_a_data_error(tmp_path: Path, runs_root: Path) -> None:
    root = tmp_path / "data"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "a" / "x.jpg").write_bytes(b"not decoded: the layout is checked first")
    with pytest.raises(DataError, match=r"no val/ folder") as ei:
        T.train("smoke", data_root=root, out_dir=tmp_path / "run", progress=False)
    assert "\n" not in str(ei.value)
    with pytest.raises(DataError, match="does not exist"):
        T.train("smoke", data_root=tmp_path / "missing", out_dir=tmp_path / "run", progress=False)


def test_class_folder_mismatch_names_the_classes(tmp_path: Path, runs_root: Path) -> None:
    from PIL import Image

    root = tmp_path / "data"
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "emu"))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / split / c / "x.png")
    with pytest.raises(DataError) as ei:
        T.train("smoke", data_root=root, out_dir=tmp_path / "run", progress=False)
    assert "only in train: dog; only in val: emu" in str(ei.value) and "\n" not in str(ei.value)


def _lrs(schedule: str, epochs: int = 4, steps: int = 5, val_losses=None, **kw) -> list[float]:
    prof = C.resolve_profile("smoke", schedule=schedule, epochs=epochs, lr=0.1, **kw)[0]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=prof.lr, momentum=0.9)
    sched = T._Schedule(opt, prof, steps)
    out = []
    for e in range(epochs):
        for b in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.after_batch(e * steps + b + 1)
        sched.after_epoch(val_losses[e] if val_losses else 1.0, (e + 1) * steps)
    # the state round-trips through a weights_only file
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    sched.load_state_dict(torch.load(buf, weights_only=True))
    return out


def test_schedules() -> None:
    one = _lrs("onecycle")
    assert max(one) == pytest.approx(0.1) and one[0] < 0.01 and one[-1] < 1e-3
    cos = _lrs("cosine", warmup_epochs=1)
    assert cos[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1]) and cos[-1] < 0.01
    assert _lrs("constant") == pytest.approx([0.1] * 20)
    # plateau: ×0.1 once the validation loss has not improved for more than PLATEAU_PATIENCE (3) epochs
    plat = _lrs("plateau", epochs=7, val_losses=[3, 2, 2, 2, 2, 2, 2])
    per_epoch = plat[::5]
    assert per_epoch[:6] == pytest.approx([0.1] * 6) and per_epoch[6] == pytest.approx(0.01)
    warm = _lrs("plateau", epochs=3, warmup_epochs=1)
    assert warm[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1]) and warm[5:] == pytest.approx([0.1] * 10)


# ----------------------------------------------------------------------------- an end-to-end run


@needs_data
def test_smoke_run_end_to_end(trained: Path) -> None:
    run = trained
    assert sorted(R.list_snapshots(run)) == [1, 2]            # smoke snapshot_epochs (1, 2), epochs 2
    assert os.path.samefile(run / "latest.pt", run / "epoch_002.pt")
    assert not list(run.glob(".*.tmp"))
    df = R.read_metrics(run)
    assert list(df.columns) == list(R.METRIC_COLUMNS)
    assert df["epoch"].tolist() == [1, 2]
    assert df[["train_loss", "val_loss"]].notna().all().all()
    assert all(map(lambda v: 0 < v < 10, df["train_loss"]))
    assert df["val_top1"].between(0, 1).all() and (df["val_top5"] >= df["val_top1"]).all()
    # the snapshot: loadable by models.load_checkpoint, and complete for resuming
    model = load_checkpoint(run / "epoch_001.pt")
    assert model.spec["arch"] == "zfnet" and model.spec["fc_width"] == 64
    snap = torch.load(run / "epoch_001.pt", weights_only=True)
    for key in ("optimizer", "scheduler", "rng", "profile", "arch", "epoch", "metrics", "spec", "state_dict"):
        assert key in snap
    assert snap["epoch"] == 1 and snap["batch"] == 0 and len(snap["metrics"]) == 1
    assert snap["profile"]["fc_width"] == 64
    info = (run / "profile.json").read_text()
    assert '"fc_width": 64' in info and '"arch": "zfnet"' in info
    # evaluate() reproduces the run's last validation numbers; the 10-crop path runs
    prof = C.resolve_profile("smoke", **TINY)[0]
    final = T.load_trained("smoke", **TINY)
    ev = E.evaluate(final, prof)
    assert ev["n"] == 40 and ev["top1"] == pytest.approx(df["val_top1"].iloc[-1], abs=1e-6)
    ev10 = E.evaluate(final, prof, crops=10)
    assert 0 <= ev10["top1"] <= ev10["top5"] <= 1 and ev10["loss"] > 0


@needs_data
def test_amp_on_cpu_trains(tmp_path: Path) -> None:
    run = T.train("smoke", out_dir=tmp_path / "amp", device="cpu", amp=True, progress=False,
                  epochs=1, train_per_class=8, val_per_class=2, fc_width=64)
    snap = torch.load(run / "epoch_001.pt", weights_only=True)
    assert snap["amp"] is True and all(torch.isfinite(v).all() for v in snap["state_dict"].values())


@needs_data
def test_load_trained_second_call_is_instant_and_changes_nothing(trained: Path) -> None:
    before = _tree(trained)
    t0 = time.perf_counter()
    model = T.load_trained("smoke", device="cpu", **TINY)
    assert time.perf_counter() - t0 < 5.0
    assert _tree(trained) == before
    assert not model.training
    final = _weights(trained / "epoch_002.pt")
    assert all(torch.equal(v, final[k]) for k, v in model.state_dict().items())
    auto = T.load_trained("smoke", device="auto", **TINY)  # the notebooks' default device
    assert all(torch.equal(v.cpu(), final[k]) for k, v in auto.state_dict().items())
    first = T.load_trained("smoke", epoch=1, **TINY)
    assert not torch.equal(first.state_dict()["features.conv1.weight"], final["features.conv1.weight"])
    with pytest.raises(CheckpointError, match=r"available epochs: 1, 2"):
        T.load_trained("smoke", epoch=7, **TINY)
    assert _tree(trained) == before


@needs_data
def test_renorm_keeps_every_conv_filter_within_radius(tmp_path: Path) -> None:
    # He init gives conv1 filters of RMS ~0.04: a radius of 0.02 makes renormalisation bite.
    kw = dict(epochs=1, train_per_class=8, val_per_class=2, fc_width=64, renorm_radius=0.02)
    run = T.train("smoke", out_dir=tmp_path / "on", device="cpu", progress=False, **kw)
    off = T.train("smoke", out_dir=tmp_path / "off", device="cpu", progress=False, renorm=False, **kw)
    for path, bound in ((run, True), (off, False)):
        w = _weights(path / "epoch_001.pt")
        rms = torch.cat([w[k].pow(2).mean(dim=(1, 2, 3)).sqrt() for k in w if k.startswith("features.conv")
                         and k.endswith("weight")])
        assert bool((rms <= 0.02 * (1 + 1e-5)).all()) == bound
        assert bool((rms >= 0.02 * (1 - 1e-5)).any())   # some filters sit on the sphere / beyond it


# ----------------------------------------------------------------------------- exact resume


_SLOW_MAIN = (
    "import sys, time\n"
    "import zfrepro.train as t\n"
    "orig = t._renorm_\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.15)\n"   # widen the window for the external kill; the maths is unchanged
    "    return orig(*a, **k)\n"
    "t._renorm_ = slow\n"
    "import zfrepro.cli as c\n"
    "sys.exit(c.main(['train', *sys.argv[1:]]))\n"
)


@needs_data
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path, reference3: Path, runs_root: Path) -> None:
    run = tmp_path / "killed"
    args = ["--profile", "smoke", "--device", "cpu", "--out-dir", str(run), "--quiet", "--snapshot-every", "2",
            *_sets(epochs=3, **TINY)]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_MAIN, *args], cwd=ROOT, env=_env(runs_root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    e1, latest = run / "epoch_001.pt", run / "latest.pt"
    deadline = time.monotonic() + 180
    try:
        while True:   # wait for a mid-epoch-2 snapshot (latest.pt no longer the epoch-1 file), then kill
            assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no mid-epoch snapshot within 180 s"
            try:
                if e1.exists() and latest.exists() and not os.path.samefile(e1, latest):
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run / "epoch_002.pt").exists(), "the kill did not land in epoch 2"
    snap = torch.load(latest, weights_only=True)
    assert snap["epoch"] == 1 and snap["batch"] in (2, 4)     # a mid-epoch snapshot: resume skips batches
    res = subprocess.run([sys.executable, "-m", "zfrepro", "train", *args], cwd=ROOT, env=_env(runs_root),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(run)
    assert sorted(R.list_snapshots(run)) == [1, 2, 3]
    for e in (1, 2, 3):
        _assert_same_weights(run / f"epoch_{e:03d}.pt", reference3 / f"epoch_{e:03d}.pt")
    assert _metrics_wo_time(run) == _metrics_wo_time(reference3)
    opt_a = torch.load(run / "epoch_003.pt", weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(reference3 / "epoch_003.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_a[k]["momentum_buffer"], opt_b[k]["momentum_buffer"]) for k in opt_b)


@needs_data
def test_resume_after_crash_mid_epoch_equals_uninterrupted_run(tmp_path: Path, reference3: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "crashed"
    orig, calls = T._renorm_, [0]

    def crash_at_step_8(*a, **k):   # step 8 = epoch 2, batch 3: after the batch-2 snapshot
        calls[0] += 1
        if calls[0] == 8:
            raise RuntimeError("simulated crash")
        return orig(*a, **k)

    monkeypatch.setattr(T, "_renorm_", crash_at_step_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.train("smoke", out_dir=run, device="cpu", progress=False, snapshot_every=2, epochs=3, **TINY)
    monkeypatch.setattr(T, "_renorm_", orig)
    snap = torch.load(run / "latest.pt", weights_only=True)
    assert (snap["epoch"], snap["batch"]) == (1, 2)
    T.train("smoke", out_dir=run, device="cpu", progress=False, epochs=3, **TINY)
    _assert_same_weights(run / "epoch_003.pt", reference3 / "epoch_003.pt")
    assert _metrics_wo_time(run) == _metrics_wo_time(reference3)


# ----------------------------------------------------------------------------- DDP


@needs_data
def test_ddp_two_processes_match_single_process(tmp_path: Path, runs_root: Path) -> None:
    # dropout=0: with dropout each layout draws different masks (one 32-image mask vs two
    # 16-image masks from per-rank streams), so only the dropout-free update is comparable.
    kw = dict(epochs=1, dropout=0, **TINY)
    ddp_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "zfrepro", "train", "--profile", "smoke", "--device", "cpu", "--out-dir", str(ddp_dir), "--quiet",
           *_sets(**kw)]
    env = _env(runs_root)
    env.setdefault("OMP_NUM_THREADS", "1")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    single = T.train("smoke", out_dir=tmp_path / "single", device="cpu", progress=False, **kw)
    wa, wb = _weights(ddp_dir / "epoch_001.pt"), _weights(single / "epoch_001.pt")
    for k in wb:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=0), f"{k}: max diff {(wa[k] - wb[k]).abs().max()}"
    init = T.build_network(C.resolve_profile("smoke", **kw)[0], "zfnet", 10)
    moved = sum(not torch.allclose(v, init.state_dict()[k]) for k, v in wb.items())
    assert moved > 0                                           # the runs did train
    ma, mb = R.read_metrics(ddp_dir), R.read_metrics(single)
    assert len(ma) == 1                                         # rank 0 alone writes
    assert ma["train_loss"][0] == pytest.approx(mb["train_loss"][0], abs=1e-5)
    assert ma["val_loss"][0] == pytest.approx(mb["val_loss"][0], abs=1e-4)
    assert torch.load(ddp_dir / "epoch_001.pt", weights_only=True)["world_size"] == 2


# ----------------------------------------------------------------------------- bad run directories


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@needs_data
def test_snapshot_of_another_architecture_is_reported_and_kept(trained: Path) -> None:
    alex = R.run_dir_for("smoke", "alexnet", **TINY)
    alex.mkdir(parents=True)
    stray = alex / "epoch_001.pt"
    shutil.copy(trained / "epoch_001.pt", stray)
    digest = _sha(stray)
    for resume in (True, False):
        with pytest.raises(CheckpointError) as ei:
            T.train("smoke", arch="alexnet", device="cpu", resume=resume, progress=False, **TINY)
        msg = str(ei.value)
        assert "\n" not in msg and "zfnet" in msg and "alexnet" in msg and str(stray) in msg
        assert _sha(stray) == digest
    assert sorted(p.name for p in alex.iterdir() if not p.name.startswith(".")) == ["epoch_001.pt"]
    shutil.rmtree(alex)


@needs_data
def test_full_disk_keeps_previous_snapshot_and_says_where(tmp_path: Path, trained: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "full"
    real_save = torch.save

    def no_space(obj, f, *a, **k):
        if "epoch_002" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError) as ei:
        T.train("smoke", out_dir=run, device="cpu", progress=False, **TINY)
    msg = str(ei.value)
    assert "\n" not in msg and "disk full" in msg and str(run / "epoch_002.pt") in msg
    assert not (run / "epoch_002.pt").exists() and not list(run.glob(".*.tmp"))
    prev = torch.load(run / "latest.pt", weights_only=True)
    assert prev["epoch"] == 1 and os.path.samefile(run / "latest.pt", run / "epoch_001.pt")
    load_checkpoint(run / "epoch_001.pt")
    # space freed: the same command resumes and ends where an uninterrupted run ends
    monkeypatch.setattr(torch, "save", real_save)
    T.train("smoke", out_dir=run, device="cpu", progress=False, **TINY)
    _assert_same_weights(run / "epoch_002.pt", trained / "epoch_002.pt")


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "plateau"])
def test_first_layer_lr_multiplier_keeps_its_ratio_through_the_schedule(schedule):
    from zfrepro.config import get_profile
    from zfrepro.models import init_weights, zfnet

    prof = get_profile("smoke", first_lr_mult=5.0, schedule=schedule, warmup_epochs=0.5)
    model = init_weights(zfnet(10, 64, 0.25, 32), "hybrid")
    groups = T._param_groups(model, prof)
    assert [len(g["params"]) for g in groups] == [2, len(list(model.parameters())) - 2]
    assert groups[0]["params"][0] is model.features.conv1.weight
    opt = torch.optim.SGD(groups, lr=prof.lr, momentum=0.9)
    sched = T._Schedule(opt, prof, steps=10)
    for step in range(1, 20):
        lrs = [g["lr"] for g in opt.param_groups]
        assert lrs[0] == pytest.approx(5 * lrs[1])
        sched.after_batch(step)
    assert len(T._param_groups(model, get_profile("smoke"))) == 1


def test_hybrid_init_keeps_the_papers_first_layer():
    from zfrepro.models import init_weights, zfnet

    torch.manual_seed(0)
    m = init_weights(zfnet(10, 128, 1.0, 1024), "hybrid")
    assert float(m.features.conv1.weight.std()) == pytest.approx(0.01, rel=0.05)
    he = (2 / (96 * 25)) ** 0.5  # conv2: He-normal, fan-in 96·5·5
    assert float(m.features.conv2.weight.std()) == pytest.approx(he, rel=0.05)
    assert float(m.classifier.fc8.weight.std()) == pytest.approx(0.01, rel=0.05)


def test_conv2_5_multipliers_make_their_own_groups_and_scale_the_start() -> None:
    """conv_lr_mult / conv_decay_mult put conv2-5 in groups of their own (weights decayed × mult, biases at
    the base decay), conv1 keeps first_*; conv_init_mult scales conv2-5's start only; bad values are one line."""
    from zfrepro.config import get_profile
    from zfrepro.models import get_layer

    prof = get_profile("smoke", first_lr_mult=3.0, conv_lr_mult=2.0, conv_decay_mult=10.0, weight_decay=1e-3)
    torch.manual_seed(0)
    model = T.build_network(prof, "zfnet", 5)
    groups = T._param_groups(model, prof)
    convs = [get_layer(model, f"conv{i}") for i in range(1, 6)]
    assert [len(g["params"]) for g in groups] == [2, 4, 4, len(list(model.parameters())) - 10]
    assert {id(p) for p in groups[1]["params"]} == {id(c.weight) for c in convs[1:]}
    assert (groups[0]["lr"], groups[1]["lr"], groups[2]["lr"], groups[3]["lr"]) == pytest.approx((0.06, 0.04, 0.04, 0.02))
    assert groups[1]["weight_decay"] == pytest.approx(1e-2) and "weight_decay" not in groups[2]
    assert len(T._param_groups(model, get_profile("smoke"))) == 1  # defaults: one group, as before
    torch.manual_seed(0)
    small = T.build_network(get_profile("smoke", conv_init_mult=0.25), "zfnet", 5)
    assert torch.equal(get_layer(small, "conv1").weight, convs[0].weight)
    for i in range(2, 6):
        torch.testing.assert_close(get_layer(small, f"conv{i}").weight, 0.25 * convs[i - 1].weight)
    with pytest.raises(ConfigError, match="conv_init_mult=0.0.*positive"):
        C.resolve_profile("smoke", conv_init_mult=0)


@pytest.mark.parametrize("arch", ["zfnet", "alexnet"])
def test_training_step_equals_the_eager_step(arch: str) -> None:
    """Issue #18: the trainer's step (channels-last, CrossChannelLRN's hand-written backward) computes
    what the eager step computed (NCHW, nn.LocalResponseNorm): same seed, same batches, 4 updates with
    momentum, weight decay, conv1's multiplier and renormalisation; the weights agree to float tolerance."""
    from zfrepro.config import get_profile
    from zfrepro.lrn import CrossChannelLRN

    prof = get_profile("smoke", first_lr_mult=3.0, weight_decay=5e-4, lr=0.05, renorm_radius=0.05, dropout=0.0)
    torch.manual_seed(0)
    ours = T.Trainer(prof, arch, 5, torch.device("cpu"), steps=4)
    torch.manual_seed(0)
    eager = T.Trainer(prof, arch, 5, torch.device("cpu"), steps=4, channels_last=False)
    for m in eager.raw.modules():
        if type(m) is CrossChannelLRN:
            m.__class__ = nn.LocalResponseNorm
    assert ours.channels_last and not any(type(m) is CrossChannelLRN for m in eager.raw.modules())
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(8, 3, 64, 64, generator=g) * 2, torch.randint(0, 5, (8,), generator=g)
        lo, _, _ = ours.step(x, y)
        le, _, _ = eager.step(x, y)
        assert float(lo) == pytest.approx(float(le), rel=1e-5)
    moved = 0.0
    for (name, a), b in zip(ours.raw.state_dict().items(), eager.raw.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    torch.manual_seed(0)
    for a, b in zip(ours.raw.parameters(), T.build_network(prof, arch, 5).parameters()):
        moved = max(moved, float((a - b).abs().max()))
    assert moved > 1e-3  # the four updates changed the weights, so the comparison above means something


_FAULTS_CHILD = r"""
import resource, sys, torch
from zfrepro.devices import keep_freed_memory
kept = keep_freed_memory()
for _ in range(16):  # warm: the heap grows to its working size first (glibc takes a few rounds)
    x = torch.empty(64 * 2**20, dtype=torch.uint8); x.fill_(1); del x
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what a training step does: allocate, touch and free the same large buffer
    x = torch.empty(64 * 2**20, dtype=torch.uint8); x.fill_(1); del x
print(int(kept), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_keep_freed_memory_stops_refaulting_large_buffers() -> None:
    """train() calls keep_freed_memory(): a freed 64 MB buffer is reused, not unmapped and faulted
    in again page by page (glibc's default: ~16,000 faults per allocation); ZFREPRO_MALLOC=system
    turns it off."""
    import subprocess

    def faults(mode: str) -> tuple[int, int]:
        env = dict(os.environ, ZFREPRO_MALLOC=mode)
        out = subprocess.run([sys.executable, "-c", _FAULTS_CHILD], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[0]), int(out[1])

    kept, n_kept = faults("keep")
    off, n_system = faults("system")
    assert kept == 1 and off == 0
    pages = 10 * 64 * 2**20 // 4096
    assert n_system > pages // 2, n_system      # the default re-faults every allocation
    assert n_kept < pages // 20, n_kept          # kept: reused without faults


def test_first_layer_decay_multiplier_decays_only_conv1():
    from zfrepro.config import get_profile
    from zfrepro.models import init_weights, zfnet

    prof = get_profile("smoke", weight_decay=1e-3, first_decay_mult=50.0)
    model = init_weights(zfnet(10, 64, 0.25, 32), "kaiming")
    groups = T._param_groups(model, prof)
    assert groups[0]["params"][0] is model.features.conv1.weight
    assert groups[0]["weight_decay"] == pytest.approx(5e-2) and "weight_decay" not in groups[1]
    opt = torch.optim.SGD(groups, lr=prof.lr, momentum=0.0, weight_decay=prof.weight_decay)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)   # no loss gradient: one step is pure decay
    opt.step()
    shrink = {n: float(p.detach().norm() / before[n].norm()) for n, p in model.named_parameters() if n.endswith("weight")}
    lr = prof.lr  # both groups at the profile's lr (first_lr_mult 1)
    assert shrink["features.conv1.weight"] == pytest.approx(1 - lr * 5e-2)
    assert shrink["features.conv2.weight"] == pytest.approx(1 - lr * 1e-3)


def test_a_run_held_by_another_trainer_is_a_run_busy_error(tmp_path: Path) -> None:
    """The run lock: a second trainer on the same run directory gets RunBusyError (a CheckpointError),
    one line naming the directory; the first keeps its lock until it releases it."""
    first = R.RunLock(tmp_path / "run")
    try:
        with pytest.raises(R.RunBusyError, match=r"^.*run is being trained by another process: wait") as ei:
            R.RunLock(tmp_path / "run")
        assert isinstance(ei.value, CheckpointError) and "\n" not in str(ei.value)
    finally:
        first.release()
    R.RunLock(tmp_path / "run").release()  # free again
