"""§5.2 transfer (zfrepro.transfer): the Caltech-101 folds on the real data, features, classifiers, overlap.

The real-data tests need ``ZFREPRO_CALTECH`` (CI points it at the folder holding ``caltech101/``);
the rest build a small Caltech-like tree of generated images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from zfrepro import transfer as T
from zfrepro.errors import ConfigError, DataError


@pytest.fixture(scope="session")
def caltech_root() -> Path:
    root = os.environ.get("ZFREPRO_CALTECH")
    if not root:
        pytest.skip("ZFREPRO_CALTECH is not set: point it at the folder that holds caltech101/")
    try:
        return T.resolve_caltech_root(root, download=False)
    except DataError as exc:
        pytest.skip(str(exc))


def _fake_caltech(base: Path, counts: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """``base/caltech101/101_ObjectCategories/<cat>/image_NNNN.jpg`` with ``counts[cat]`` images each
    (a colour per category plus noise), and a BACKGROUND_Google folder that must be left out."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    top = base / "caltech101" / T.CALTECH_FOLDER
    for k, (cat, n) in enumerate({**counts, T.BACKGROUND: 3}.items()):
        d = top / cat
        d.mkdir(parents=True)
        colour = np.array([(k * 70) % 256, (k * 140) % 256, (k * 210) % 256], dtype=np.float64)
        for i in range(n):
            a = np.clip(colour + rng.normal(0, 30, (size, size + 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"image_{i + 1:04d}.jpg")
    return base


def test_splits_follow_the_protocol_on_the_real_data(caltech_root):
    cats = T.caltech_categories(caltech_root)
    assert len(cats) == 101 and T.BACKGROUND not in cats and {"Faces", "Faces_easy"} <= set(cats)
    base = caltech_root / T.CALTECH_FOLDER
    sizes = {c: len([f for f in (base / c).iterdir() if not f.name.startswith(".")]) for c in cats}
    assert min(sizes.values()) == 31 and sum(sizes.values()) == 9144 - len(list((base / T.BACKGROUND).iterdir()))
    for per_class in (15, 30):
        splits = T.caltech_splits(caltech_root, per_class, folds=5, test_per_class=50, seed=0)
        assert len(splits) == 5
        for train, test in splits:
            assert not set(train) & set(test)
            tr = {c: sum(p.split("/")[0] == c for p in train) for c in cats}
            te = {c: sum(p.split("/")[0] == c for p in test) for c in cats}
            assert all(tr[c] == per_class for c in cats)
            assert all(te[c] == min(50, sizes[c] - per_class) for c in cats)
            assert all((base / p).is_file() for p in train[:20] + test[:20])
        # folds are independent draws, and the same for the same seed
        assert splits[0][0] != splits[1][0]
        assert T.caltech_splits(caltech_root, per_class, folds=5, seed=0) == splits
        assert T.caltech_splits(caltech_root, per_class, folds=5, seed=1) != splits


def test_excluded_images_never_enter_a_test_set(tmp_path):
    root = _fake_caltech(tmp_path, {"ant": 8, "bee": 6})
    drop = {"ant/image_0001.jpg", "ant/image_0002.jpg", "bee/image_0003.jpg"}
    for train, test in T.caltech_splits(root, 2, folds=4, test_per_class=50, exclude=drop):
        assert not drop & set(test)
        assert len(train) == 4


def test_bad_caltech_input_is_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"has no 101_ObjectCategories/.*caltech_root"):
        T.resolve_caltech_root(tmp_path / "empty", download=False)
    with pytest.raises(DataError, match=r"does not exist"):
        T.resolve_caltech_root(tmp_path / "nowhere", download=False)
    root = _fake_caltech(tmp_path / "c", {"ant": 5, "bee": 4})
    with pytest.raises(ConfigError, match=r"per_class=4 leaves no test image in category 'bee' \(4 images\): use per_class <= 3"):
        T.caltech_splits(root, 4)
    (root / "caltech101" / T.CALTECH_FOLDER / "cow").mkdir()
    with pytest.raises(DataError, match=r"cow has no images"):
        T.caltech_categories(root)


def test_root_may_be_the_caltech_folder_or_its_parent(tmp_path, monkeypatch):
    root = _fake_caltech(tmp_path, {"ant": 3})
    assert T.resolve_caltech_root(root) == T.resolve_caltech_root(root / "caltech101") == root / "caltech101"
    monkeypatch.setenv("ZFREPRO_CALTECH", str(root))
    assert T.resolve_caltech_root("") == root / "caltech101"


def test_per_class_accuracy_is_the_mean_over_classes():
    y = np.array([0, 0, 0, 0, 1])
    assert T.per_class_accuracy(y, np.array([0, 0, 0, 0, 0])) == pytest.approx(0.5)  # plain accuracy: 0.8
    assert T.per_class_accuracy(y, y) == 1.0


def test_layer_features_are_the_rectified_outputs_pooled_on_the_fc6_grid(tmp_path, tmp_cache):
    from zfrepro.data import ModelInputs
    from zfrepro.models import rectified_module, zfnet

    root = _fake_caltech(tmp_path, {"ant": 3, "bee": 2})
    dec = T.decode_caltech(root, 72, progress=False)
    assert dec.classes == ["ant", "bee"] and dec.paths[0] == "ant/image_0001.jpg" and len(dec) == 5
    model = zfnet(num_classes=2, input_size=64, width=0.25, fc_width=32).eval()
    inputs = ModelInputs(dec, torch.zeros(3, 72, 72), 64.0, 64)
    feats = T.layer_features(model, inputs, batch_size=2, progress=False)
    assert list(feats) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    x = inputs.batch(range(5))
    grid = model.features(x).shape[-1]
    seen = {}
    hooks = [rectified_module(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in feats]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for n, f in feats.items():
        ref = seen[n] if seen[n].dim() == 2 else torch.nn.functional.adaptive_max_pool2d(seen[n], grid).flatten(1)
        torch.testing.assert_close(f, ref)
        assert (f >= 0).all()
    # at the fc6 grid, conv5's feature is exactly the flattened pool5 output that fc6 reads
    torch.testing.assert_close(feats["conv5"], model.features(x).flatten(1))


def test_classifiers_separate_separable_features_and_reject_unknown_kinds():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 10))
    y = np.repeat(np.arange(4), 20)
    x = centres[y] + rng.normal(0, 0.5, (80, 10))
    for kind in ("svm", "softmax"):
        clf = T.fit_classifier(kind, x[::2], y[::2], C=1.0)
        assert T.per_class_accuracy(y[1::2], clf.predict(x[1::2])) > 0.95
    with pytest.raises(ConfigError, match="unknown classifier"):
        T.fit_classifier("knn", x, y, 1.0)


def test_evaluate_layers_is_deterministic_and_scores_chance_on_noise():
    rng = np.random.default_rng(1)
    paths = [f"c{i % 5}/img{i}.jpg" for i in range(100)]
    labels = [i % 5 for i in range(100)]
    feats = {"noise": torch.tensor(rng.normal(size=(100, 20)), dtype=torch.float32),
             "signal": torch.tensor(np.eye(5)[labels] * 3 + rng.normal(0, 0.3, (100, 5)), dtype=torch.float32)}
    splits = [(paths[f * 10:f * 10 + 50], paths[f * 10 + 50:f * 10 + 100]) for f in range(3)]
    rows = T.evaluate_layers(feats, labels, paths, splits, C={"svm": 1.0, "softmax": 1.0}, progress=False)
    again = T.evaluate_layers(feats, labels, paths, splits, C={"svm": 1.0, "softmax": 1.0}, progress=False)
    assert rows == again
    by = {(r["kind"], r["layer"]): r for r in rows}
    assert by[("svm", "signal")]["mean"] > 95 and by[("softmax", "signal")]["mean"] > 95
    assert by[("svm", "noise")]["mean"] < 45  # chance is 20 %
    assert len(by[("svm", "noise")]["folds"]) == 3


def _recompressed(img: torch.Tensor, size: int, quality: int = 70) -> torch.Tensor:
    """``img`` (3×S×S uint8) resized to ``size`` and back through a JPEG of ``quality``, as a copy on the web is."""
    import io

    from PIL import Image

    pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    back = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize(tuple(img.shape[1:]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(back).copy()).permute(2, 0, 1)


def test_effective_dimension_counts_independent_directions():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20000, 7))
    # 7 independent directions copied into 21 columns at different scales: standardised, each counts alike
    x = np.hstack([z, 5 * z, z * np.arange(1, 8)]) + 0.0
    assert T.effective_dimension(x) == pytest.approx(7, rel=0.01)
    # unequal strengths: columns z1..z7 twice, z1 and z2 once more -> eigenvalues 3, 3, 2, 2, 2, 2, 2
    assert T.effective_dimension(np.hstack([z, z, z[:, :2]])) == pytest.approx(256 / 38, rel=0.01)
    # white noise fills its dimensions; a rank-one feature set and constant columns give one direction
    assert T.effective_dimension(rng.standard_normal((20000, 40))) == pytest.approx(40, rel=0.01)
    line = rng.standard_normal((500, 1)) * rng.uniform(1, 2, (1, 30))
    assert T.effective_dimension(np.hstack([line, np.ones((500, 5))])) == pytest.approx(1, abs=1e-6)
    assert T.effective_dimension(np.ones((10, 3))) == 0.0
    # more columns than rows (the Gram route) agrees with the covariance route
    w = rng.standard_normal((60, 200))
    zs = (w - w.mean(0)) / w.std(0)
    lam = np.linalg.eigvalsh(zs.T @ zs)
    assert T.effective_dimension(w) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-6)
    dims = T.layer_dimensions({"a": torch.as_tensor(z[:, :3]), "b": torch.as_tensor(z)}, rows=np.arange(5000))
    assert list(dims) == ["a", "b"] and dims["a"] == pytest.approx(3, rel=0.05) and dims["b"] == pytest.approx(7, rel=0.05)
    with pytest.raises(ConfigError, match="N×D"):
        T.effective_dimension(np.ones(5))


def test_find_overlap_finds_resized_recompressed_and_flipped_copies():
    g = torch.Generator().manual_seed(0)
    base = (torch.nn.functional.interpolate(torch.rand(40, 3, 12, 12, generator=g), size=96, mode="bicubic")
            .clamp(0, 1) * 255).to(torch.uint8)
    a = base[:10]
    copies = [base[3].flip(-1), (base[7].float() * 0.8 + 20).to(torch.uint8), _recompressed(base[5], 61)]
    b = torch.cat([base[10:], torch.stack(copies)])  # a flipped, a dimmed and a resized + recompressed copy
    hits = T.find_overlap(a, b)
    assert {i: j for i, j, _ in hits} == {3: 30, 7: 31, 5: 32}
    assert all(r >= 0.99 for _, _, r in hits)
    # distinct images, however alike in layout, stay below the threshold
    assert not T.find_overlap(base[:10], base[10:])


def test_claims_follow_the_numbers():
    table7 = [{"kind": "svm", "layer": n, "mean": m, "std": 1.0} for n, m in
              zip(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"], [40, 50, 60, 65, 70, 72, 71])]
    good = {"pretrained": {30: {"mean": 70.0, "std": 1.0}}, "non-pretrained": {30: {"mean": 40.0, "std": 2.0}}}
    claims = T.transfer_claims(table7, good)
    assert [c.holds for c in claims] == [True, True] and [c.figure for c in claims] == ["Table 7", "Table 4"]
    assert claims[0].ours["conv5"] == 70 and claims[1].ours == (70.0, 40.0) and claims[1].paper == (86.5, 46.5)
    table7[2]["mean"] = 45  # conv3 below conv2
    close = {"pretrained": {30: {"mean": 42.0, "std": 1.0}}, "non-pretrained": {30: {"mean": 40.0, "std": 2.0}}}
    assert [c.holds for c in T.transfer_claims(table7, close)] == [False, False]
    table7[2]["mean"] = 60
    table7[4]["mean"] = 80  # best at conv5, rising: holds; best at conv2: does not
    assert T.transfer_claims(table7, {})[0].holds and len(T.transfer_claims(table7, {})) == 1
    table7[1]["mean"] = 90
    assert T.transfer_claims(table7, {})[0].holds is False
    # the JSON round trip keeps the string keys of a results file working
    assert T.transfer_claims(table7, {"pretrained": {"15": {"mean": 30.0}}, "non-pretrained": {"15": {"mean": 10.0}}})[1].holds


def test_plans_and_scratch_profile():
    assert T.transfer_plan("default").train_sizes == (15, 30) and T.transfer_plan("paper").scratch_folds == 5
    assert T.transfer_plan("smoke", folds=3, test_per_class=0).folds == 3
    assert T.transfer_plan("default", train_sizes=[10]).train_sizes == (10,)
    with pytest.raises(ConfigError, match="unknown transfer plan field"):
        T.transfer_plan("default", bogus=1)
    prof = T.scratch_profile("default", 7)
    assert prof.epochs == 7 and prof.name == "default-caltech-scratch" and prof.width == 0.5
    assert any("Caltech" in d for d in prof.deviations)


def test_a_fold_trained_by_another_process_is_waited_for_then_reused(tmp_path, tmp_cache, monkeypatch):
    """Two notebooks (or a notebook and a script) on the same fold: the second waits for the first's lock."""
    import zfrepro.train as train_mod
    from zfrepro.runs import RunBusyError

    root = _fake_caltech(tmp_path, {"ant": 3, "bee": 3})
    split = T.caltech_splits(root, 2, folds=1, test_per_class=1)[0]
    calls = []
    real = train_mod.train

    def busy_once(*args, **kw):
        calls.append(kw["out_dir"])
        if len(calls) == 1:
            raise RunBusyError(f"{kw['out_dir']} is being trained by another process")
        return real(*args, **kw)

    monkeypatch.setattr(train_mod, "train", busy_once)
    monkeypatch.setattr(T.time, "sleep", lambda s: None)
    monkeypatch.setenv("ZFREPRO_RUNS", str(tmp_path / "runs"))
    res = T.train_from_scratch(root, split, "smoke", 1, progress=False)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert 0.0 <= res["accuracy"] <= 100.0 and res["train_images"] == 4 and res["test_images"] == 2
