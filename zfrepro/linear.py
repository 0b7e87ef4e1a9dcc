"""Linear classifiers on fixed features: Tables 4 and 7 (§5.2, notebook 08).

The paper trains "a new softmax classifier" (Table 4) and, for Table 7, also linear SVMs on the
features of each layer. This module solves *exactly the objectives of scikit-learn's*

- ``LinearSVC(C, loss="squared_hinge", penalty="l2")`` — one-vs-rest, for each class
  ``½‖w̃‖² + C Σᵢ max(0, 1 − yᵢ w̃·x̃ᵢ)²`` with ``x̃ = [x, 1]`` (liblinear regularises the intercept,
  ``intercept_scaling=1``), prediction the class of the largest decision value;
- ``LogisticRegression(C)`` — multinomial: ``C Σᵢ −log softmax(W x_i + b)_{yᵢ} + ½‖W‖²`` (the
  intercept not regularised). With two classes this multinomial model is the binary one at ``2C``;
  scikit-learn fits the binary one at ``C`` there;

each on features standardised as ``StandardScaler`` does (training mean and standard deviation,
``ddof=0``; a constant feature keeps scale 1). Both objectives are strictly convex in the
regularised weights, so the minimiser is unique and any solver that reaches it gives the same
classifier. Here full-batch L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search) solves all
classes in one problem as matrix products on every core, where liblinear solves the 101 one-vs-rest
problems one after another on one core; ``benchmarks/bench_transfer_fit.py`` measures the two side by
side (time, objective reached, accuracy) and ``tests/test_linear.py`` holds the solutions against
scikit-learn's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ConfigError

__all__ = ["KINDS", "LinearClassifier", "standardise", "svm_objective", "softmax_objective",
           "fit_linear_classifier"]

#: The classifier kinds of Table 7, as :func:`fit_linear_classifier` names them.
KINDS = ("svm", "softmax")


@dataclass(frozen=True)
class LinearClassifier:
    """A fitted linear classifier: ``decision = ((x − mean) / scale) @ weight + bias``, the predicted
    label the class (of ``classes``) with the largest decision value.

    ``iterations`` L-BFGS iterations were run; ``converged`` is false when ``max_iter`` stopped them
    (rather than the gradient test or a line search that can make no more progress); ``objective``
    is the objective reached, evaluated in float64."""

    kind: str
    classes: np.ndarray
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    iterations: int
    converged: bool
    objective: float

    def decision_function(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """N×K decision values (K = the number of classes) of the rows of ``x``."""
        xt = torch.as_tensor(np.asarray(x), dtype=self.weight.dtype)
        if xt.dim() != 2 or xt.shape[1] != self.mean.numel():
            raise ConfigError(f"the classifier was fitted on {self.mean.numel()} features, got an array of shape "
                              f"{tuple(xt.shape)}: pass the same layer's features")
        return (((xt - self.mean) / self.scale) @ self.weight + self.bias).numpy()

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The predicted labels of the rows of ``x`` (values of ``classes``)."""
        return self.classes[self.decision_function(x).argmax(1)]


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, scale)`` of the rows of ``x`` as ``sklearn.preprocessing.StandardScaler`` computes them:
    the standard deviation with ``ddof=0``, a scale below 10 machine epsilons of the mean's magnitude
    (a constant feature) replaced by 1."""
    xd = x.double()
    mean = xd.mean(0)
    scale = xd.std(0, unbiased=False)
    tiny = 10 * torch.finfo(torch.float64).eps * torch.clamp(mean.abs(), min=1.0)
    scale = torch.where(scale < tiny, torch.ones_like(scale), scale)
    return mean, scale


def svm_objective(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, targets: torch.Tensor,
                  C: float) -> torch.Tensor:
    """The sum over classes of ``LinearSVC``'s one-vs-rest objective: ``½(‖W‖² + ‖b‖²) + C Σ max(0, 1 −
    t·(xW + b))²`` with ``targets`` ±1 (N×K, +1 where the row belongs to the class)."""
    margin = torch.clamp(1 - targets * (x @ weight + bias), min=0)
    return 0.5 * ((weight ** 2).sum() + (bias ** 2).sum()) + C * (margin ** 2).sum()


def softmax_objective(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
                      C: float) -> torch.Tensor:
    """Multinomial ``LogisticRegression``'s objective: ``C Σ −log softmax(xW + b)_y + ½‖W‖²`` (``labels``
    the column index of each row's class)."""
    z = x @ weight + bias
    nll = torch.logsumexp(z, 1) - z.gather(1, labels[:, None])[:, 0]
    return C * nll.sum() + 0.5 * (weight ** 2).sum()


_OBJECTIVES = {"svm": svm_objective, "softmax": softmax_objective}


def fit_linear_classifier(kind: str, x: np.ndarray | torch.Tensor, y: Sequence[Any] | np.ndarray, C: float, *,
                          dtype: torch.dtype = torch.float32, tol: float = 1e-5, max_iter: int = 3000,
                          history: int = 20) -> LinearClassifier:
    """Fit Table 7's ``kind`` (``"svm"`` or ``"softmax"``, see the module docstring) on the rows of ``x``
    labelled ``y`` with inverse regularisation ``C``, to the unique minimiser of its objective.

    L-BFGS stops when the largest gradient entry falls below ``tol`` times its value at the start (or
    the line search can make no progress in ``dtype``); float32 reaches the minimiser's objective to
    about 10⁻⁶ relative on Caltech-101 features (``benchmarks/bench_transfer_fit.py``), float64 to the
    last digits at about twice the time."""
    if kind not in _OBJECTIVES:
        raise ConfigError(f"unknown classifier {kind!r}: use svm or softmax")
    if not C > 0:
        raise ConfigError(f"C must be positive, got {C}")
    xt = torch.as_tensor(np.asarray(x))
    labels = np.asarray(y)
    if xt.dim() != 2 or xt.shape[0] != labels.shape[0] or xt.shape[0] == 0:
        raise ConfigError(f"features must be an N×D array with one label per row, got {tuple(xt.shape)} and "
                          f"{labels.shape[0]} labels")
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ConfigError(f"a classifier needs at least two classes in its training set, got {len(classes)}")
    mean, scale = standardise(xt)
    xs = ((xt.double() - mean) / scale).to(dtype)
    n, k = xs.shape[0], len(classes)
    idx = torch.as_tensor(index, dtype=torch.long)
    if kind == "svm":
        target = -torch.ones(n, k, dtype=dtype)
        target[torch.arange(n), idx] = 1
    else:
        target = idx
    objective = _OBJECTIVES[kind]
    weight = torch.zeros(xs.shape[1], k, dtype=dtype, requires_grad=True)
    bias = torch.zeros(k, dtype=dtype, requires_grad=True)
    with torch.enable_grad():
        g0 = torch.autograd.grad(objective(weight, bias, xs, target, C), (weight, bias))
        gmax0 = float(max(g.abs().max() for g in g0))
        opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=history,
                                tolerance_grad=tol * max(gmax0, 1e-30), tolerance_change=0.0,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = objective(weight, bias, xs, target, C)
            value.backward()
            return value

        opt.step(closure)
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    w, b = weight.detach(), bias.detach()
    with torch.no_grad():
        final = objective(w.double(), b.double(), xs.double(), target.double() if kind == "svm" else target, C)
    return LinearClassifier(kind=kind, classes=classes, mean=mean.to(dtype), scale=scale.to(dtype), weight=w,
                            bias=b, C=float(C), iterations=iterations, converged=iterations < max_iter,
                            objective=float(final))
