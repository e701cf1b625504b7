"""Effective robustness (Taori et al. 2020): OOD accuracy above the baseline trend, in points.

Accuracies are fractions in (0, 1). With a transform T (logit or probit), a line
T(ood) = slope * T(id) + intercept is fitted by least squares over baseline models, and

    ER(model) = 100 * (ood - T^{-1}(slope * T(id) + intercept))        (percentage points).

The ImageNet baselines come from imagenet-testbed's ``robustness_top1s.csv`` and ``model_types.csv``
(read from a path). The testbed's own protocol is followed: models of the chosen types, minus the
ResNet-50 duplicates whose names contain 'aws', 'batch64' or 'subsample', and points whose
transform is not finite (ResNet-50 on ImageNet-A scores 0 by construction). The x-axis is ImageNet
accuracy on the shift's classes (``val-on-imagenet-r-classes`` etc. for R, A and ObjectNet).
With this protocol the STANDARD logit fits reproduce the reference fits ``REFERENCE_LOGIT_FITS``.

Bad input is refused with one line naming the file and what is allowed (a missing file or column,
an empty table, a value that is not a number), or, for single rows of a results table (an accuracy
that is NaN or outside [0, 1], a step that is not an integer), skipped, counted and reported on
stdout and in the JSON report. No NaN reaches a printed or written result.

CLI: ``python -m mmcl_theory.clip.robustness testbed --testbed DIR [--results CSV]`` prints the
baseline fits (and ER of evaluated models); ``... series --results CSV --id-dataset D --ood-datasets ...``
(or ``--points CSV``) computes ER across checkpoint series with a baseline fitted over chosen
series (``--baseline label``) and draws the OOD-vs-ID figure.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from mmcl_theory.config import ArgumentParser, option_type
from mmcl_theory.io import atomic_save_figure, atomic_write_csv, atomic_write_json, run_header

# shift name -> (testbed column of the shifted accuracy, testbed column of the same-class ImageNet accuracy)
TESTBED_SHIFTS: dict[str, tuple[str, str]] = {
    "imagenetv2": ("imagenetv2-matched-frequency-format-val", "val"),
    "imagenet_sketch": ("imagenet-sketch", "val"),
    "imagenet-r": ("imagenet-r", "val-on-imagenet-r-classes"),
    "imagenet-a": ("imagenet-a", "val-on-imagenet-a-classes"),
    "objectnet": ("objectnet-1.0-beta", "val-on-objectnet-classes"),
}

# Reference fits over imagenet-testbed's CSV with the protocol above: STANDARD models, logit,
# (slope, intercept, r), computed independently of this module.
REFERENCE_LOGIT_FITS: dict[str, tuple[float, float, float | None]] = {
    "imagenetv2": (0.923, -0.498, 0.998),
    "imagenet_sketch": (1.071, -2.370, None),
    "imagenet-r": (0.637, -2.108, None),
    "imagenet-a": (1.990, -7.632, None),
    "objectnet": (0.981, -1.928, None),
}

EXCLUDED_NAME_PARTS = ("aws", "batch64", "subsample")
TRANSFORMS = ("logit", "probit")


# ----------------------------------------------------------------------------------------------
# Transforms and line fits
# ----------------------------------------------------------------------------------------------
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


def _finite_pairs(id_acc, ood_acc, kind):
    x, y = transform(id_acc, kind), transform(ood_acc, kind)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def fit_line(id_acc: Sequence[float], ood_acc: Sequence[float], kind: str = "logit") -> LinearFit:
    """Least-squares line in transformed space over the points whose transform is finite (>= 2)."""
    x, y = _finite_pairs(id_acc, ood_acc, kind)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"baseline points: need >= 2 points with distinct accuracies strictly between 0 and 1, "
                         f"got {x.size}")
    if np.ptp(y) == 0:
        raise ValueError("baseline points: the OOD accuracies are all equal, so there is no trend to fit")
    res = stats.linregress(x, y)
    return LinearFit(float(res.slope), float(res.intercept), float(res.rvalue), int(x.size), kind)


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm = x.mean()
    slope = np.sum((x - xm) * (y - y.mean())) / max(np.sum((x - xm) ** 2), 1e-300)
    return float(slope), float(y.mean() - slope * xm)


def bootstrap_er_samples(baseline_id, baseline_ood, id_acc, ood_acc, kind: str = "logit", num_samples: int = 1000,
                         seed: int = 0) -> np.ndarray:
    """(num_samples, m) ER in points of m points against lines refitted to resampled baseline points.

    Resample b draws the baseline's finite pairs with replacement (np.random.default_rng(seed)),
    fits y = a x + c by least squares in ``kind`` space and returns 100 (ood - inverse(a t(id) + c)).
    """
    x, y = _finite_pairs(baseline_id, baseline_ood, kind)
    tid = transform(np.atleast_1d(np.asarray(id_acc, float)), kind)
    ood_acc = np.atleast_1d(np.asarray(ood_acc, float))
    rng = np.random.default_rng(seed)
    samples = np.empty((num_samples, tid.size))
    for b in range(num_samples):
        idx = rng.integers(0, x.size, x.size)
        slope, intercept = _lstsq(x[idx], y[idx])
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


# ----------------------------------------------------------------------------------------------
# imagenet-testbed baselines
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Testbed:
    """models (n,), types (n,), columns: name -> (n,) accuracy fractions (NaN where missing);
    source: the accuracy CSV it was read from (named in errors)."""

    models: tuple[str, ...]
    types: tuple[str, ...]
    columns: Mapping[str, np.ndarray]
    source: str = ""

    def column(self, name: str, needed_for: str) -> np.ndarray:
        """One accuracy column; a ValueError naming the file when it is absent."""
        if name not in self.columns:
            raise ValueError(f"{self.source or 'testbed'}: missing column {name!r} (needed for {needed_for})")
        return self.columns[name]


def read_table(path: str | os.PathLike, what: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header. One-line ValueError naming the file when it is
    missing, not UTF-8, not valid CSV, empty, without data rows, or without a ``required`` column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} = {str(path)!r}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 at byte {e.start}; expected a CSV file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as e:
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None
    header = reader.fieldnames or []
    if not header:
        raise ValueError(f"{path}: empty file; expected a CSV header with the columns {', '.join(required)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (the header has {', '.join(header[:8])}"
                         f"{', ...' if len(header) > 8 else ''}; needed: {', '.join(required)})")
    if not rows:
        raise ValueError(f"{path}: no data rows below the header")
    return rows


def load_testbed(root: str | os.PathLike) -> Testbed:
    """Read ROOT/robustness_top1s.csv (model + top-1 columns in percent, empty where not evaluated) and
    ROOT/model_types.csv (model,type). A missing file or column, an empty table or a value that is not
    a number in [0, 100] is a one-line ValueError naming the file (and line and column)."""
    root = Path(root)
    top1, types_csv = root / "robustness_top1s.csv", root / "model_types.csv"
    for p in (top1, types_csv):
        if not p.is_file():
            raise ValueError(f"--testbed = {str(root)!r}: missing {p.name} (expected imagenet-testbed's "
                             "robustness_top1s.csv and model_types.csv)")
    type_of = {r["model"]: r["type"] for _, r in read_table(types_csv, "--testbed", ("model", "type"))}
    rows = read_table(top1, "--testbed", ("model",))
    names = [c for c in rows[0][1] if c not in ("model", None)]
    columns = {c: np.full(len(rows), np.nan) for c in names}
    for i, (line, r) in enumerate(rows):
        for c in names:
            text = (r.get(c) or "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 100.0:  # also refuses nan
                raise ValueError(f"{top1}, line {line}, column {c!r}: {text!r} is not allowed: a top-1 accuracy "
                                 "in percent, 0..100, or empty")
            columns[c][i] = value / 100.0
    models = tuple(r["model"] for _, r in rows)
    return Testbed(models, tuple(type_of.get(m, "UNKNOWN") for m in models), columns, str(top1))


def baseline_mask(testbed: Testbed, types: Iterable[str] = ("STANDARD",)) -> np.ndarray:
    """Models of ``types``, minus the testbed's excluded duplicates (EXCLUDED_NAME_PARTS)."""
    types = set(types)
    return np.array([t in types and not any(p in m.lower() for p in EXCLUDED_NAME_PARTS)
                     for m, t in zip(testbed.models, testbed.types)])


def baseline_points(testbed: Testbed, shift: str, types: Iterable[str] = ("STANDARD",)) -> tuple[np.ndarray, np.ndarray]:
    """(id_acc, ood_acc) of the baseline models with both values, for a TESTBED_SHIFTS name."""
    if shift not in TESTBED_SHIFTS:
        raise ValueError(f"shift = {shift!r}: must be one of {sorted(TESTBED_SHIFTS)}")
    y_col, x_col = TESTBED_SHIFTS[shift]
    x, y = testbed.column(x_col, f"shift {shift}"), testbed.column(y_col, f"shift {shift}")
    mask = baseline_mask(testbed, types)
    if not mask.any():
        raise ValueError(f"--types {' '.join(types)}: no baseline model of these types in the testbed "
                         f"(types there: {', '.join(sorted(set(testbed.types)))})")
    keep = mask & np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def fit_testbed(testbed: Testbed, shift: str, types: Iterable[str] = ("STANDARD",), kind: str = "logit") -> LinearFit:
    """The baseline trend of one shift: fit_line over the testbed models of the given types."""
    return fit_line(*baseline_points(testbed, shift, types), kind)


def testbed_effective_robustness(testbed: Testbed, accuracies: Mapping[str, tuple[float, float]],
                                 types: Iterable[str] = ("STANDARD",), kind: str = "logit",
                                 num_samples: int = 1000, seed: int = 0) -> dict:
    """ER of one model per shift and averaged over the given shifts, with bootstrap CIs.

    accuracies: shift -> (ImageNet accuracy on the shift's classes, shift accuracy), fractions.
    The bootstrap resamples baseline *models* jointly across shifts, so the average's CI accounts
    for the shared baseline. Returns {'per_shift': {shift: {...}}, 'average': {...}}.
    """
    types = tuple(types)
    shifts = list(accuracies)
    if not shifts:
        raise ValueError("accuracies: no shift given; expected {shift: (id_acc, ood_acc)}")
    for shift in shifts:
        check_accuracies(f"accuracies[{shift!r}]", *accuracies[shift])
    mask = baseline_mask(testbed, types)
    idx_all = np.flatnonzero(mask)
    rng = np.random.default_rng(seed)
    per_shift, samples = {}, np.empty((num_samples, len(shifts)))
    for j, shift in enumerate(shifts):
        id_acc, ood_acc = accuracies[shift]
        fit = fit_testbed(testbed, shift, types, kind)
        per_shift[shift] = {"er": float(fit.effective_robustness(id_acc, ood_acc)), "id_acc": id_acc,
                            "ood_acc": ood_acc, "fit": dataclasses.asdict(fit)}
    for b in range(num_samples):
        draw = rng.choice(idx_all, idx_all.size)
        for j, shift in enumerate(shifts):
            y_col, x_col = TESTBED_SHIFTS[shift]
            x, y = _finite_pairs(testbed.columns[x_col][draw], testbed.columns[y_col][draw], kind)
            if x.size < 2:  # a resample without two usable points of this shift: no line, left out
                samples[b, j] = np.nan
                continue
            slope, intercept = _lstsq(x, y)
            id_acc, ood_acc = accuracies[shift]
            pred = inverse_transform(slope * transform(id_acc, kind) + intercept, kind)
            samples[b, j] = 100.0 * (ood_acc - pred)
    usable = np.isfinite(samples).all(axis=1)
    if usable.sum() < max(2, num_samples // 2):
        raise ValueError(f"bootstrap: only {int(usable.sum())} of {num_samples} resamples of the {idx_all.size} "
                         f"baseline models have two usable points for every shift; too few baseline models")
    samples = samples[usable]
    for j, shift in enumerate(shifts):
        per_shift[shift]["ci"] = [float(np.percentile(samples[:, j], 2.5)), float(np.percentile(samples[:, j], 97.5))]
    avg = samples.mean(axis=1)
    average = {"er": float(np.mean([per_shift[s]["er"] for s in shifts])),
               "ci": [float(np.percentile(avg, 2.5)), float(np.percentile(avg, 97.5))], "shifts": shifts}
    return {"per_shift": per_shift, "average": average, "types": list(types), "transform": kind,
            "bootstrap_samples": num_samples, "seed": seed}


# ----------------------------------------------------------------------------------------------
# Checkpoint series (e.g. caption- vs label-trained) and the OOD-vs-ID figure
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Series:
    """One model's checkpoints: name, steps (m,), id_acc (m,), ood_acc (m,) (OOD = mean over shifts)."""

    name: str
    steps: tuple[int, ...]
    id_acc: np.ndarray
    ood_acc: np.ndarray


def _own_fit(s: Series, kind: str) -> dict | None:
    """A series' own trend line, or None when its checkpoints do not determine one (< 2 distinct points)."""
    x, y = _finite_pairs(s.id_acc, s.ood_acc, kind)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return dataclasses.asdict(fit_line(s.id_acc, s.ood_acc, kind))


def series_effective_robustness(series: Sequence[Series], baseline: Sequence[str], kind: str = "logit",
                                num_samples: int = 1000, seed: int = 0) -> dict:
    """ER of every checkpoint against a baseline trend fitted over the checkpoints of the ``baseline``
    series (e.g. ['label'], or all series), plus each series' own fit. Bootstrap CIs resample the
    baseline checkpoints. Returns a JSON-ready dict."""
    by_name = {s.name: s for s in series}
    empty = [s.name for s in series if len(s.steps) == 0]
    if not series or empty:
        raise ValueError(f"series {empty}: no checkpoints" if empty else "series: none given")
    missing = [b for b in baseline if b not in by_name]
    if missing:
        raise ValueError(f"baseline = {missing}: not among the series {sorted(by_name)}")
    bx = np.concatenate([by_name[b].id_acc for b in baseline])
    by = np.concatenate([by_name[b].ood_acc for b in baseline])
    check_accuracies(f"baseline series {'+'.join(baseline)}", bx, by)
    try:
        fit_line(bx, by, kind)
    except ValueError as e:
        raise ValueError(f"baseline series {'+'.join(baseline)}: {e}") from None
    out = {"baseline_series": list(baseline), "transform": kind, "series": {}}
    for s in series:
        res = bootstrap_effective_robustness(bx, by, s.id_acc, s.ood_acc, kind, num_samples, seed)
        out["baseline_fit"] = dataclasses.asdict(res["fit"])
        own = _own_fit(s, kind)
        out["series"][s.name] = {
            "own_fit": own, "mean_er": float(np.mean(res["er"])),
            "checkpoints": [{"step": int(st), "id_acc": float(i), "ood_acc": float(o), "er": float(e),
                             "ci": [float(lo), float(hi)]}
                            for st, i, o, e, lo, hi in zip(s.steps, s.id_acc, s.ood_acc, res["er"],
                                                           res["ci_low"], res["ci_high"])]}
    return out


def plot_ood_vs_id(path: str | os.PathLike, series: Sequence[Series], kind: str = "logit",
                   baseline_points_xy: tuple[np.ndarray, np.ndarray] | None = None,
                   baseline_fit: LinearFit | None = None, baseline_label: str = "baseline trend",
                   xlabel: str = "ID accuracy (%)", ylabel: str = "OOD accuracy (%)", title: str = "") -> None:
    """OOD vs ID on transformed axes (ticks in %): baseline points and trend, each series' points
    (annotated with steps) and its own fit, and y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    all_x = np.concatenate([s.id_acc for s in series] + ([baseline_points_xy[0]] if baseline_points_xy else []))
    all_y = np.concatenate([s.ood_acc for s in series] + ([baseline_points_xy[1]] if baseline_points_xy else []))
    lo = max(min(all_x.min(), all_y.min()) * 0.8, 1e-3)
    hi = min(max(all_x.max(), all_y.max()) * 1.1 + 0.01, 0.999)
    grid = np.linspace(transform(lo, kind), transform(hi, kind), 200)
    ax.plot(grid, grid, "k--", lw=1, label="y = x")
    if baseline_points_xy is not None:
        ax.scatter(transform(baseline_points_xy[0], kind), transform(baseline_points_xy[1], kind), s=12,
                   color="tab:gray", alpha=0.6, label="baseline models")
    if baseline_fit is not None:
        ax.plot(grid, baseline_fit.slope * grid + baseline_fit.intercept, color="tab:red", lw=2,
                label=f"{baseline_label} (slope {baseline_fit.slope:.2f})")
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for s, c in zip(series, colors):
        tx, ty = transform(s.id_acc, kind), transform(s.ood_acc, kind)
        ax.scatter(tx, ty, color=c, s=30, zorder=5, label=f"{s.name} checkpoints")
        for step, a, b in zip(s.steps, tx, ty):
            ax.annotate(str(step), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
        own = _own_fit(s, kind)
        if own is not None:
            ax.plot(grid, own["slope"] * grid + own["intercept"], color=c, lw=1, ls=":", label=f"{s.name} fit")
    ticks = np.array([t for t in (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95) if lo * 100 <= t <= hi * 100])
    ax.set_xticks(transform(ticks / 100, kind), [f"{t:g}" for t in ticks])
    ax.set_yticks(transform(ticks / 100, kind), [f"{t:g}" for t in ticks])
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(grid[0], grid[-1])
    ax.set_xlabel(f"{xlabel}, {kind} scale")
    ax.set_ylabel(f"{ylabel}, {kind} scale")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=150)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Reading results tables: bad rows are skipped and listed, or (without a list) refused
# ----------------------------------------------------------------------------------------------
def _skip(skipped: list[tuple[str, str]] | None, where: str, reason: str) -> None:
    """Record a skipped row, or raise the one-line ValueError when the caller keeps no list."""
    if skipped is None:
        raise ValueError(f"{where}: {reason}")
    skipped.append((where, reason))


def _fraction(text: str | None) -> tuple[float, str | None]:
    """(value, None) for a finite accuracy fraction in [0, 1]; (nan, why not) otherwise."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return math.nan, f"accuracy {text!r} is not a number"
    if not 0.0 <= value <= 1.0:  # also false for nan
        return math.nan, f"accuracy {text!r} is not allowed: a fraction in [0, 1]"
    return value, None


def _step(text: str | None) -> tuple[int, str | None]:
    try:
        return int((text or "").strip()), None
    except ValueError:
        return -1, f"step {text!r} is not an integer"


def _usable_id(where: str, id_acc: float, skipped: list | None) -> bool:
    """An ID accuracy of exactly 0 or 1 has no finite logit/probit: the checkpoint is skipped."""
    if 0.0 < id_acc < 1.0:
        return True
    _skip(skipped, where, f"ID accuracy {id_acc!r} has no finite transform (allowed: strictly between 0 and 1)")
    return False


def series_from_results(path: str | os.PathLike, id_dataset: str, ood_datasets: Sequence[str],
                        series_key: str = "caption_variant", metric: str = "top1",
                        skipped: list[tuple[str, str]] | None = None) -> list[Series]:
    """Series from ``evaluate build``'s CSV: one per value of ``series_key`` (e.g. caption variant),
    x = ``metric`` on ``id_dataset``, y = its mean over ``ood_datasets``, at every step that has all.
    Rows with an empty metric belong to other tasks and are passed over; a metric that is NaN or
    outside [0, 1], or a step that is not an integer, is skipped into ``skipped`` (or refused)."""
    rows = read_table(path, "--results", (series_key, "step", "dataset", metric))
    table: dict[tuple[str, int], dict[str, float]] = {}
    for line, r in rows:
        if not (r.get(metric) or "").strip():
            continue
        (value, bad_value), (step, bad_step) = _fraction(r[metric]), _step(r["step"])
        if bad_value or bad_step:
            _skip(skipped, f"{path}:{line}", bad_step or f"{metric}: {bad_value}")
            continue
        table.setdefault((r[series_key] or "", step), {})[r["dataset"] or ""] = value
    missing = sorted({d for d in [id_dataset, *ood_datasets] if all(d not in v for v in table.values())})
    if missing:
        raise ValueError(f"--results = {str(path)!r}: no usable {metric} of the datasets {missing} "
                         f"(column 'dataset' there: {', '.join(sorted({d for v in table.values() for d in v})[:8])})")
    out = []
    for name in dict.fromkeys(k[0] for k in sorted(table)):
        steps = [s for (n, s), v in sorted(table.items()) if n == name and all(d in v for d in [id_dataset, *ood_datasets])
                 and _usable_id(f"{path}: {series_key} {name!r} step {s}", v[id_dataset], skipped)]
        if not steps:
            _skip(skipped, f"{path}: {series_key} {name!r}", f"no checkpoint with usable {metric} on all of "
                                                              f"{', '.join([id_dataset, *ood_datasets])}")
            continue
        out.append(Series(name, tuple(steps), np.array([table[(name, s)][id_dataset] for s in steps]),
                          np.array([np.mean([table[(name, s)][d] for d in ood_datasets]) for s in steps])))
    if not out:
        raise ValueError(f"--results = {str(path)!r}: no series has a checkpoint with usable {metric} on all of "
                         f"{', '.join([id_dataset, *ood_datasets])}")
    return out


SERIES_CSV_FIELDS = ("series", "step", "id_acc", "ood_acc")


def write_series_csv(path: str | os.PathLike, series: Sequence[Series]) -> None:
    """The (series, step, id_acc, ood_acc) points as CSV, written atomically."""
    rows = [{"series": s.name, "step": st, "id_acc": f"{i:.6f}", "ood_acc": f"{o:.6f}"}
            for s in series for st, i, o in zip(s.steps, s.id_acc, s.ood_acc)]
    atomic_write_csv(path, rows, SERIES_CSV_FIELDS)


def read_series_csv(path: str | os.PathLike, skipped: list[tuple[str, str]] | None = None) -> list[Series]:
    """CSV with columns series, step, id_acc, ood_acc (fractions) -> one Series per name, by step.
    A row with a bad step or accuracy is skipped into ``skipped`` (or, without a list, refused)."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for line, r in read_table(path, "--points", SERIES_CSV_FIELDS):
        where = f"{path}:{line}"
        (step, bad_step), (i, bad_i), (o, bad_o) = _step(r["step"]), _fraction(r["id_acc"]), _fraction(r["ood_acc"])
        if bad_step or bad_i or bad_o:
            _skip(skipped, where, bad_step or (f"id_acc: {bad_i}" if bad_i else f"ood_acc: {bad_o}"))
        elif _usable_id(where, i, skipped):
            points.setdefault(r["series"], {})[step] = (i, o)
    if not points:
        raise ValueError(f"--points = {str(path)!r}: no usable row (series, integer step, id_acc strictly between "
                         "0 and 1, ood_acc in [0, 1])")
    return [Series(name, tuple(sorted(p)), np.array([p[s][0] for s in sorted(p)]), np.array([p[s][1] for s in sorted(p)]))
            for name, p in points.items()]


# shift -> (evaluate dataset name of the shift, of the same-class ImageNet val)
EVALUATE_NAMES: dict[str, tuple[str, str]] = {
    "imagenetv2": ("imagenetv2", "imagenet1k"),
    "imagenet_sketch": ("imagenet_sketch", "imagenet1k"),
    "imagenet-r": ("imagenet-r", "imagenet1k@imagenet-r"),
    "imagenet-a": ("imagenet-a", "imagenet1k@imagenet-a"),
    "objectnet": ("objectnet", "imagenet1k@objectnet"),
}


def accuracies_from_evaluate(path: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
                             ) -> dict[str, dict[str, tuple[float, float]]]:
    """``evaluate build`` CSV -> {model@step: {shift: (same-class ImageNet top-1, shift top-1)}} for the
    shifts whose two datasets were both evaluated. Bad rows are skipped into ``skipped`` (or refused)."""
    top1: dict[str, dict[str, float]] = {}
    for line, r in read_table(path, "--results", ("model", "step", "dataset", "top1")):
        if not (r.get("top1") or "").strip():
            continue  # a row of another task (e.g. retrieval)
        value, bad = _fraction(r["top1"])
        if bad:
            _skip(skipped, f"{path}:{line}", f"top1: {bad}")
            continue
        top1.setdefault(f"{r['model']}@{r['step']}", {})[r["dataset"]] = value
    out = {}
    for model, accs in top1.items():
        pairs = {s: (accs[x], accs[y]) for s, (y, x) in EVALUATE_NAMES.items() if x in accs and y in accs
                 and _usable_id(f"{path}: {model} {x}", accs[x], skipped)}
        if pairs:
            out[model] = pairs
    return out


def accuracies_from_pairs(path: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
                          ) -> dict[str, dict[str, tuple[float, float]]]:
    """CSV with columns model, shift, id_acc, ood_acc (fractions) -> {model: {shift: (id_acc, ood_acc)}}."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for line, r in read_table(path, "--results", ("model", "shift", "id_acc", "ood_acc")):
        where = f"{path}:{line}"
        (i, bad_i), (o, bad_o) = _fraction(r["id_acc"]), _fraction(r["ood_acc"])
        if r["shift"] not in TESTBED_SHIFTS:
            _skip(skipped, where, f"shift {r['shift']!r} is not one of {', '.join(TESTBED_SHIFTS)}")
        elif bad_i or bad_o:
            _skip(skipped, where, f"id_acc: {bad_i}" if bad_i else f"ood_acc: {bad_o}")
        elif _usable_id(where, i, skipped):
            out.setdefault(r["model"], {})[r["shift"]] = (i, o)
    return out


def average_baseline_points(testbed: Testbed, types: Iterable[str] = ("STANDARD",)) -> tuple[np.ndarray, np.ndarray]:
    """(ImageNet val top-1, mean top-1 over the 5 TESTBED_SHIFTS) of the baseline models that have all
    of them: the points and trend of the averaged OOD-vs-ID figure."""
    x = testbed.column("val", "the averaged figure")
    ys = np.stack([testbed.column(TESTBED_SHIFTS[s][0], "the averaged figure") for s in TESTBED_SHIFTS])
    keep = baseline_mask(testbed, types) & np.isfinite(x) & np.isfinite(ys).all(axis=0)
    return x[keep], ys[:, keep].mean(axis=0)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _non_finite_at(obj, where: str = "report") -> str | None:
    """The key path of the first NaN or infinity in a JSON-ready object, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    return next((w for k, v in items if (w := _non_finite_at(v, f"{where}.{k}"))), None)


def _finish(report: dict, lines: list[str], skipped: list[tuple[str, str]], source, out: str | None) -> None:
    """Refuse a report holding NaN; else print its lines (and the skip count) and write it."""
    report["skipped"] = {"count": len(skipped), "entries": [list(s) for s in skipped]}
    bad = _non_finite_at(report)
    if bad:
        raise ValueError(f"refusing to report a non-finite value at {bad}; check the input accuracies")
    if skipped:
        lines.append(f"skipped {len(skipped)} rows of {source} (first: {skipped[0][0]}: {skipped[0][1]})"
                     + ("; all are listed in --out" if out else ""))
    print("\n".join(lines))
    if out:
        atomic_write_json(out, report)


def _check_outputs(args) -> None:
    """Refuse unusable output paths before any work is done."""
    for flag, path in (("--out", args.out), ("--figure", args.figure), ("--points-out", getattr(args, "points_out", None))):
        if path and Path(path).is_dir():
            raise ValueError(f"{flag} = {path!r} is a folder; give a file path")
    if args.figure and Path(args.figure).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--figure = {args.figure!r}: the file name must end in .png, .pdf or .svg")


def _testbed_command(args, command: list[str]) -> None:
    _check_outputs(args)
    if args.figure and not args.results:
        raise ValueError("testbed --figure: needs --results (the CSV of `evaluate build`)")
    tb = load_testbed(args.testbed)
    fits = {s: dataclasses.asdict(fit_testbed(tb, s, args.types, args.transform)) for s in TESTBED_SHIFTS}
    lines = [f"baseline fits ({'+'.join(args.types)}, {args.transform}):",
             f"{'shift':18s} {'slope':>7s} {'intercept':>9s} {'r':>6s} {'n':>4s}"]
    lines += [f"{s:18s} {f['slope']:7.3f} {f['intercept']:9.3f} {f['r']:6.3f} {f['n']:4d}" for s, f in fits.items()]
    report = {"run": run_header(vars(args), command), "fits": fits, "types": args.types, "transform": args.transform}
    skipped: list[tuple[str, str]] = []
    if args.results:
        pairs_layout = "shift" in read_table(args.results, "--results", ("model",))[0][1]
        if pairs_layout and args.figure:
            raise ValueError(f"--figure: needs --results from `evaluate build`; {args.results} has the "
                             "model, shift, id_acc, ood_acc layout")
        read = accuracies_from_pairs if pairs_layout else accuracies_from_evaluate
        models_accs = read(args.results, skipped)
        if not models_accs:
            raise ValueError(f"--results = {args.results!r}: no model has a usable pair of accuracies (same-class "
                             f"ImageNet and shift) for any of {', '.join(TESTBED_SHIFTS)}; {len(skipped)} rows skipped"
                             + (f", first {skipped[0][0]}: {skipped[0][1]}" if skipped else ""))
        report["models"] = {}
        for model, accs in models_accs.items():
            rep = testbed_effective_robustness(tb, accs, args.types, args.transform, args.bootstrap, args.seed)
            report["models"][model] = rep
            lines.append(f"{model}: average ER {rep['average']['er']:+.2f} points, 95% CI "
                         f"[{rep['average']['ci'][0]:+.2f}, {rep['average']['ci'][1]:+.2f}]")
    _finish(report, lines, skipped, args.results, args.out)
    if args.figure:
        bx, by = average_baseline_points(tb, args.types)
        series = series_from_results(args.results, "imagenet1k", list(TESTBED_SHIFTS), skipped=[])
        plot_ood_vs_id(args.figure, series, args.transform, baseline_points_xy=(bx, by),
                       baseline_fit=fit_line(bx, by, args.transform),
                       baseline_label=f"trend over {'+'.join(args.types)} testbed models",
                       xlabel="ImageNet top-1 (%)", ylabel="mean top-1 over the 5 shifts (%)")


def _series_command(args, command: list[str]) -> None:
    _check_outputs(args)
    if bool(args.points) == bool(args.results):
        raise ValueError("series: give exactly one of --points or --results")
    skipped: list[tuple[str, str]] = []
    if args.results:
        if not (args.id_dataset and args.ood_datasets):
            raise ValueError("series --results: needs --id-dataset and --ood-datasets")
        series = series_from_results(args.results, args.id_dataset, args.ood_datasets, skipped=skipped)
        per_shift = {d: series_from_results(args.results, args.id_dataset, [d], skipped=[])
                     for d in [*args.ood_datasets, *args.extra_datasets]}
    else:
        series, per_shift = read_series_csv(args.points, skipped), {}
    baseline = args.baseline or [s.name for s in series]
    report = {"run": run_header(vars(args), command),
              **series_effective_robustness(series, baseline, args.transform, args.bootstrap, args.seed)}
    report.update(source=str(args.results or args.points), id_dataset=args.id_dataset,
                  ood_datasets=list(args.ood_datasets or []), ood="mean top-1 over ood_datasets", baseline_note=(
                      f"baseline trend = {args.transform} line fitted over the checkpoints of "
                      f"{'+'.join(baseline)}; ER of a checkpoint = its OOD accuracy minus the trend at its "
                      "ID accuracy, in points; CIs resample the baseline checkpoints"))
    report["per_shift"] = {d: series_effective_robustness(s, baseline, args.transform, args.bootstrap, args.seed)
                           for d, s in per_shift.items()}
    lines = [f"{name}: mean ER {s['mean_er']:+.2f} points vs the trend of {'+'.join(baseline)} checkpoints"
             for name, s in report["series"].items()]
    lines += [f"  {d:34s} " + "  ".join(f"{n} {v['mean_er']:+.2f}" for n, v in rep["series"].items())
              for d, rep in report["per_shift"].items()]
    _finish(report, lines, skipped, args.results or args.points, args.out)
    if args.points_out:
        write_series_csv(args.points_out, series)
    if args.figure:
        bf = LinearFit(**report["baseline_fit"])
        plot_ood_vs_id(args.figure, series, args.transform, baseline_fit=bf,
                       baseline_label=f"trend over {'+'.join(baseline)} checkpoints",
                       xlabel=args.xlabel, ylabel=args.ylabel, title=args.title)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m mmcl_theory.clip.robustness"
    parser = ArgumentParser(prog=prog, description="Effective robustness: baseline fits, ER, OOD-vs-ID figure.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("testbed", help="fit imagenet-testbed baseline lines; ER of evaluated models")
    p.add_argument("--testbed", required=True, help="folder with robustness_top1s.csv and model_types.csv")
    p.add_argument("--types", nargs="+", default=["STANDARD"], help="baseline model types (add LOW_ACCURACY_CNN)")
    p.add_argument("--results", help="CSV of `evaluate build` (with imagenet1k, imagenet1k@<shift> and the "
                   "shifts), or with columns model, shift, id_acc, ood_acc (fractions)")
    p.add_argument("--out", help="JSON report path")
    p.add_argument("--figure", help="PNG: baseline models and trend (x = ImageNet, y = mean over the 5 shifts) "
                   "and the evaluated models as one series per caption variant, each with its own fit")
    q = sub.add_parser("series", help="ER across checkpoint series with a baseline fitted over series")
    q.add_argument("--points", help="CSV with columns series, step, id_acc, ood_acc")
    q.add_argument("--results", help="CSV of `evaluate build` (series = caption_variant)")
    q.add_argument("--id-dataset", help="with --results: the ID dataset name")
    q.add_argument("--ood-datasets", nargs="+", default=[], help="with --results: shifts averaged into OOD")
    q.add_argument("--extra-datasets", nargs="+", default=[], help="with --results: more shifts reported alone")
    q.add_argument("--points-out", help="write the (series, step, id_acc, ood_acc) points as CSV")
    q.add_argument("--baseline", nargs="+", help="series whose checkpoints define the trend (default: all)")
    q.add_argument("--out", help="JSON report path")
    q.add_argument("--figure", help="PNG path for the OOD-vs-ID figure")
    q.add_argument("--xlabel", default="ID accuracy (%)")
    q.add_argument("--ylabel", default="OOD accuracy (%)")
    q.add_argument("--title", default="")
    for a in (p, q):
        a.add_argument("--transform", default="logit", choices=TRANSFORMS)
        a.add_argument("--bootstrap", type=option_type("--bootstrap", int, 1, 1_000_000), default=1000,
                       help="bootstrap resamples (1..1000000)")
        a.add_argument("--seed", type=option_type("--seed", int, 0, 2**32 - 1), default=0)
    args = parser.parse_args(argv)
    command = [prog, *(sys.argv[1:] if argv is None else argv)]
    try:
        (_testbed_command if args.command == "testbed" else _series_command)(args, command)
    except (ValueError, OSError) as e:  # ConfigError and CorruptFileError are ValueErrors
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message holds
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
