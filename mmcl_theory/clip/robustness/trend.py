"""Effective-robustness maths: accuracy transforms, the baseline trend line, ER and its bootstrap.

With a transform T (logit or probit) a line T(ood) = slope T(id) + intercept is fitted by least squares, and
    ER = 100 (ood - T^{-1}(slope T(id) + intercept))   (percentage points; Taori et al. 2020).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats

TRANSFORMS = ("logit", "probit")


def transform(acc: np.ndarray, kind: str = "logit") -> np.ndarray:
    """logit(p) = log(p / (1 - p)) or probit(p) = Phi^{-1}(p), p a fraction."""
    acc = np.asarray(acc, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "logit":
            return np.log(acc / (1.0 - acc))
        if kind == "probit":
            return stats.norm.ppf(acc)
    raise ValueError(f"transform = {kind!r}: must be one of {TRANSFORMS}")


def inverse_transform(z: np.ndarray, kind: str = "logit") -> np.ndarray:
    """Accuracy (fraction) from its transform: 1 / (1 + e^-z) for logit, Phi(z) for probit; float64, any shape."""
    z = np.asarray(z, dtype=np.float64)
    if kind == "logit":
        return 1.0 / (1.0 + np.exp(-z))
    if kind == "probit":
        return stats.norm.cdf(z)
    raise ValueError(f"transform = {kind!r}: must be one of {TRANSFORMS}")


def check_accuracies(where: str, id_acc, ood_acc) -> None:
    """ValueError unless every ID accuracy is a fraction strictly inside (0, 1) (its transform is finite)
    and every OOD accuracy a fraction in [0, 1]; NaN is refused."""
    ids, oods = np.atleast_1d(np.asarray(id_acc, np.float64)), np.atleast_1d(np.asarray(ood_acc, np.float64))
    if not (np.all(ids > 0) and np.all(ids < 1)):  # also false for NaN
        raise ValueError(f"{where}: ID accuracy {float(ids[~((ids > 0) & (ids < 1))][0])!r} is not allowed: a fraction "
                         "strictly between 0 and 1")
    if not (np.all(oods >= 0) and np.all(oods <= 1)):
        raise ValueError(f"{where}: OOD accuracy {float(oods[~((oods >= 0) & (oods <= 1))][0])!r} is not allowed: a fraction "
                         "in [0, 1]")


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """T(ood) = slope * T(id) + intercept over ``n`` points; r = Pearson correlation in T-space."""

    slope: float
    intercept: float
    r: float
    n: int
    transform: str

    def predict(self, id_acc: np.ndarray) -> np.ndarray:
        """Back-transformed trend accuracy (fraction) at ImageNet accuracy ``id_acc`` (fraction)."""
        return inverse_transform(self.slope * transform(id_acc, self.transform) + self.intercept, self.transform)

    def effective_robustness(self, id_acc: np.ndarray, ood_acc: np.ndarray) -> np.ndarray:
        """100 * (ood - predict(id)): percentage points above the trend."""
        return 100.0 * (np.asarray(ood_acc, np.float64) - self.predict(id_acc))


def finite_pairs(id_acc, ood_acc, kind):
    x, y = transform(id_acc, kind), transform(ood_acc, kind)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def fit_line(id_acc: Sequence[float], ood_acc: Sequence[float], kind: str = "logit") -> LinearFit:
    """Least-squares line in transformed space over the points whose transform is finite (>= 2)."""
    x, y = finite_pairs(id_acc, ood_acc, kind)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"baseline points: need >= 2 points with distinct accuracies strictly between 0 and 1, "
                         f"got {x.size}")
    if np.ptp(y) == 0:
        raise ValueError("baseline points: the OOD accuracies are all equal, so there is no trend to fit")
    res = stats.linregress(x, y)
    return LinearFit(float(res.slope), float(res.intercept), float(res.rvalue), int(x.size), kind)


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm = x.mean()
    slope = np.sum((x - xm) * (y - y.mean())) / max(np.sum((x - xm) ** 2), 1e-300)
    return float(slope), float(y.mean() - slope * xm)


def bootstrap_er_samples(baseline_id, baseline_ood, id_acc, ood_acc, kind: str = "logit", num_samples: int = 1000,
                         seed: int = 0) -> np.ndarray:
    """(num_samples, m) ER in points of m points against lines refitted to resampled baseline points.

    Resample b draws the baseline's finite pairs with replacement (np.random.default_rng(seed)),
    fits y = a x + c by least squares in ``kind`` space and returns 100 (ood - inverse(a t(id) + c)).
    """
    x, y = finite_pairs(baseline_id, baseline_ood, kind)
    tid = transform(np.atleast_1d(np.asarray(id_acc, float)), kind)
    ood_acc = np.atleast_1d(np.asarray(ood_acc, float))
    rng = np.random.default_rng(seed)
    samples = np.empty((num_samples, tid.size))
    for b in range(num_samples):
        idx = rng.integers(0, x.size, x.size)
        slope, intercept = least_squares(x[idx], y[idx])
        samples[b] = 100.0 * (ood_acc - inverse_transform(slope * tid + intercept, kind))
    return samples


def bootstrap_effective_robustness(baseline_id, baseline_ood, id_acc, ood_acc, kind: str = "logit",
                                   num_samples: int = 1000, seed: int = 0, level: float = 95.0) -> dict:
    """ER of points (id_acc, ood_acc) against a line fitted over baseline points, with a bootstrap CI.

    The baseline points are resampled with replacement ``num_samples`` times and the line refitted;
    the CI is the central ``level``% percentile interval of the ER. Returns
    {'fit': LinearFit, 'er': (m,), 'ci_low': (m,), 'ci_high': (m,)} in percentage points.
    """
    fit = fit_line(baseline_id, baseline_ood, kind)
    id_acc, ood_acc = np.atleast_1d(np.asarray(id_acc, float)), np.atleast_1d(np.asarray(ood_acc, float))
    check_accuracies("checkpoints", id_acc, ood_acc)
    samples = bootstrap_er_samples(baseline_id, baseline_ood, id_acc, ood_acc, kind, num_samples, seed)
    lo = (100.0 - level) / 2
    return {"fit": fit, "er": fit.effective_robustness(id_acc, ood_acc),
            "ci_low": np.percentile(samples, lo, axis=0), "ci_high": np.percentile(samples, 100 - lo, axis=0)}
