"""Notebook 08's classifier fits (Tables 4 and 7, issue #18): scikit-learn's pipelines vs zfrepro.linear.

Both sides fit the same problems — Caltech-101 features of the trained ``default`` network, one fold
at 30 training images per class, each asked layer — with the same objective: ``StandardScaler`` then
``LinearSVC(C=0.001, dual=True, max_iter=5000)`` ("svm") or multinomial ``LogisticRegression(C=0.01,
max_iter=1000)`` ("softmax"), as notebook 08 fitted them before, against
:func:`zfrepro.transfer.fit_classifier` (:mod:`zfrepro.linear`: the same objectives by full-batch
L-BFGS on every core). The two sides alternate per problem. Reported: the fit seconds of each side
and their ratio, the objective each reached (ours minus theirs, relative: negative means ours is
lower) and the per-class test accuracy of each. Goal: ours ≥ 4× faster over all fits (notebook 08
ran two scikit-learn fits at a time, one per core, so its wall clock was about half of the
scikit-learn column). Needs ``ZFREPRO_CALTECH`` and a trained ``default`` network (``runs/``).

    python benchmarks/bench_transfer_fit.py [--quick] [--layers conv1,conv3,fc7] [--profile default]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zfrepro import transfer  # noqa: E402
from zfrepro.linear import softmax_objective, svm_objective  # noqa: E402
from zfrepro.loading import load_model  # noqa: E402

GOAL = 4.0


def sklearn_fit(kind: str, x: np.ndarray, y: np.ndarray, C: float):
    """Notebook 08's fit before zfrepro.linear: a scikit-learn pipeline."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    clf = (LinearSVC(C=C, dual=True, max_iter=5000, random_state=0) if kind == "svm"
           else LogisticRegression(C=C, max_iter=1000, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), clf).fit(x, y)


def sklearn_objective(kind: str, pipe, x: np.ndarray, y: np.ndarray, C: float) -> float:
    """The objective scikit-learn's pipeline reached, evaluated as zfrepro.linear defines it."""
    clf = pipe[-1]
    xs = torch.tensor(pipe[0].transform(x), dtype=torch.float64)
    idx = torch.as_tensor(np.searchsorted(clf.classes_, y))
    w = torch.tensor(clf.coef_.T, dtype=torch.float64)  # LogisticRegression keeps float32 inputs in float32
    b = torch.tensor(clf.intercept_, dtype=torch.float64)
    if kind == "svm":
        t = -torch.ones(len(y), len(clf.classes_), dtype=torch.float64)
        t[torch.arange(len(y)), idx] = 1
        return float(svm_objective(w, b, xs, t, C))
    return float(softmax_objective(w, b, xs, idx, C))


def run(quick: bool = False, *, profile: str = "default", layers: str = "", verbose: bool = True) -> list[dict]:
    names = layers.split(",") if layers else (["conv1", "fc7"] if quick else ["conv1", "conv3", "fc7"])
    model = load_model(profile, device="cpu")
    root = transfer.resolve_caltech_root()
    cats = transfer.caltech_categories(root)
    caltech = transfer.decode_caltech(root, transfer.caltech_inputs_size(profile), cats, progress=verbose)
    feats = transfer.layer_features(model, transfer.caltech_inputs(caltech, profile), names, progress=verbose)
    train, test = transfer.caltech_splits(root, 30, folds=1, seed=0, categories=cats)[0]
    index = {p: i for i, p in enumerate(caltech.paths)}
    tr, te = np.array([index[p] for p in train]), np.array([index[p] for p in test])
    y = np.asarray(caltech.labels)
    C = transfer.TRANSFER_PLANS[profile if profile in transfer.TRANSFER_PLANS else "default"].C
    spent = {"sklearn": 0.0, "ours": 0.0}
    cases = []
    for name in names:
        x = feats[name].numpy()
        for kind in ("svm", "softmax"):
            t0 = time.perf_counter()
            theirs = sklearn_fit(kind, x[tr], y[tr], C[kind])
            t1 = time.perf_counter()
            ours = transfer.fit_classifier(kind, x[tr], y[tr], C[kind])
            t2 = time.perf_counter()
            spent["sklearn"] += t1 - t0
            spent["ours"] += t2 - t1
            obj = sklearn_objective(kind, theirs, x[tr], y[tr], C[kind])
            case = {"layer": name, "kind": kind, "dims": x.shape[1], "sklearn_s": round(t1 - t0, 2),
                    "ours_s": round(t2 - t1, 2), "objective_rel": float(f"{(ours.objective - obj) / obj:.2e}"),
                    "acc_sklearn": round(100 * transfer.per_class_accuracy(y[te], theirs.predict(x[te])), 2),
                    "acc_ours": round(100 * transfer.per_class_accuracy(y[te], ours.predict(x[te])), 2)}
            cases.append(case)
            if verbose:
                print(case, flush=True)
    ratio = spent["sklearn"] / spent["ours"]
    what = (f"{profile} network, Caltech-101 30/class fold 0 ({len(tr)} train, {len(te)} test), "
            f"{'/'.join(names)} × svm, softmax, {torch.get_num_threads()} threads")
    return [{"what": what, "sklearn_s": round(spent["sklearn"], 1), "ours_s": round(spent["ours"], 1),
             "ratio": round(ratio, 2), "goal": GOAL, "pass": bool(ratio >= GOAL),
             "max_objective_rel": max(c["objective_rel"] for c in cases),
             "max_accuracy_gap": round(max(abs(c["acc_ours"] - c["acc_sklearn"]) for c in cases), 2),
             "cases": cases}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="conv1 and fc7 only")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--layers", default="", help="comma-separated layers (default conv1,conv3,fc7)")
    a = ap.parse_args(argv)
    rows = run(a.quick, profile=a.profile, layers=a.layers)
    for r in rows:
        print({k: v for k, v in r.items() if k != "cases"})
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
