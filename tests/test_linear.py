"""zfrepro.linear against scikit-learn's LinearSVC and LogisticRegression (the objectives it solves)."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from zfrepro.errors import ConfigError
from zfrepro.linear import (fit_linear_classifier, softmax_objective, standardise, svm_objective)


def _problem(seed: int, n: int = 150, d: int = 12, k: int = 6, constant: bool = True):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(0, 1.5, (n, d)) * rng.uniform(0.2, 5, d) + rng.normal(0, 3, d)
    if constant:
        x[:, 3] = 7.0  # a constant feature: StandardScaler keeps scale 1
    return x, np.array(["c%d" % v for v in y])  # string labels: classes map back


def test_standardise_is_standard_scaler():
    x, _ = _problem(0)
    mean, scale = standardise(torch.tensor(x))
    sk = StandardScaler().fit(x)
    np.testing.assert_allclose(mean.numpy(), sk.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale.numpy(), sk.scale_, rtol=1e-10)
    assert scale[3] == 1.0


@pytest.mark.parametrize("seed,C", [(0, 0.01), (1, 0.1), (2, 1.0)])
def test_svm_is_linearsvc(seed, C):
    x, y = _problem(seed)
    ours = fit_linear_classifier("svm", x, y, C, dtype=torch.float64, tol=1e-9)
    xs = StandardScaler().fit_transform(x)
    sk = LinearSVC(C=C, dual=True, tol=1e-10, max_iter=200_000).fit(xs, y)
    assert list(ours.classes) == list(sk.classes_)
    idx = torch.as_tensor(np.searchsorted(sk.classes_, y))
    targets = -torch.ones(len(y), len(sk.classes_), dtype=torch.float64)
    targets[torch.arange(len(y)), idx] = 1
    theirs = float(svm_objective(torch.tensor(sk.coef_.T), torch.tensor(sk.intercept_), torch.tensor(xs), targets, C))
    assert ours.objective <= theirs * (1 + 1e-9)
    assert ours.objective == pytest.approx(theirs, rel=1e-7)
    # the objective is strictly convex: one minimiser, so the weights agree too
    np.testing.assert_allclose(ours.weight.numpy(), sk.coef_.T, atol=1e-4 * np.abs(sk.coef_).max())
    np.testing.assert_allclose(ours.bias.numpy(), sk.intercept_, atol=1e-4 * np.abs(sk.coef_).max())
    np.testing.assert_array_equal(ours.predict(x), sk.predict(xs))


@pytest.mark.parametrize("seed,C", [(3, 0.01), (4, 0.1), (5, 1.0)])
def test_softmax_is_multinomial_logistic_regression(seed, C):
    x, y = _problem(seed)
    ours = fit_linear_classifier("softmax", x, y, C, dtype=torch.float64, tol=1e-9)
    xs = StandardScaler().fit_transform(x)
    sk = LogisticRegression(C=C, tol=1e-12, max_iter=20_000).fit(xs, y)
    idx = torch.as_tensor(np.searchsorted(sk.classes_, y))
    theirs = float(softmax_objective(torch.tensor(sk.coef_.T), torch.tensor(sk.intercept_), torch.tensor(xs), idx, C))
    assert ours.objective <= theirs * (1 + 1e-9)
    assert ours.objective == pytest.approx(theirs, rel=1e-7)
    np.testing.assert_allclose(ours.weight.numpy(), sk.coef_.T, atol=1e-4 * np.abs(sk.coef_).max())
    # the intercept is unregularised: defined up to a constant shared by every class
    db = ours.bias.numpy() - sk.intercept_
    np.testing.assert_allclose(db - db.mean(), 0, atol=1e-4 * np.abs(sk.coef_).max())
    np.testing.assert_array_equal(ours.predict(x), sk.predict(xs))
    np.testing.assert_allclose(ours.decision_function(x) - db, sk.decision_function(xs), atol=1e-3)


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_float32_reaches_the_float64_minimum(kind):
    x, y = _problem(6, n=400, d=40, k=10)
    exact = fit_linear_classifier(kind, x, y, 0.01, dtype=torch.float64, tol=1e-10)
    fast = fit_linear_classifier(kind, x, y, 0.01)
    assert fast.converged and exact.converged
    assert fast.objective == pytest.approx(exact.objective, rel=1e-5)
    assert (fast.predict(x) == exact.predict(x)).mean() >= 0.99


def test_the_gradient_vanishes_at_the_solution():
    x, y = _problem(7)
    for kind, objective in (("svm", svm_objective), ("softmax", softmax_objective)):
        clf = fit_linear_classifier(kind, x, y, 0.1, dtype=torch.float64, tol=1e-10)
        xs = (torch.tensor(x) - clf.mean) / clf.scale
        idx = torch.as_tensor(np.searchsorted(clf.classes, y))
        target = idx
        if kind == "svm":
            target = -torch.ones(len(y), len(clf.classes), dtype=torch.float64)
            target[torch.arange(len(y)), idx] = 1
        w, b = clf.weight.clone().requires_grad_(), clf.bias.clone().requires_grad_()
        gw, gb = torch.autograd.grad(objective(w, b, xs, target, 0.1), (w, b))
        w0, b0 = torch.zeros_like(w, requires_grad=True), torch.zeros_like(b, requires_grad=True)
        g0w, _ = torch.autograd.grad(objective(w0, b0, xs, target, 0.1), (w0, b0))
        assert float(gw.abs().max()) < 1e-7 * float(g0w.abs().max())
        assert float(gb.abs().max()) < 1e-7 * float(g0w.abs().max())


def test_bad_inputs_say_what_is_wrong():
    x, y = _problem(8)
    with pytest.raises(ConfigError, match="unknown classifier"):
        fit_linear_classifier("knn", x, y, 1.0)
    with pytest.raises(ConfigError, match="at least two classes"):
        fit_linear_classifier("svm", x, np.zeros(len(y)), 1.0)
    with pytest.raises(ConfigError, match="one label per row"):
        fit_linear_classifier("svm", x, y[:-1], 1.0)
    with pytest.raises(ConfigError, match="C must be positive"):
        fit_linear_classifier("softmax", x, y, 0.0)
    clf = fit_linear_classifier("softmax", x, y, 1.0)
    with pytest.raises(ConfigError, match="same layer's features"):
        clf.predict(x[:, :5])
