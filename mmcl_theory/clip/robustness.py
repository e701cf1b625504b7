"""Effective robustness (Taori et al. 2020): OOD accuracy above the baseline trend, in points.

Accuracies are fractions in (0, 1). With a transform T (logit or probit), a line
T(ood) = slope * T(id) + intercept is fitted by least squares over baseline models, and

    ER(model) = 100 * (ood - T^{-1}(slope * T(id) + intercept))        (percentage points).

The ImageNet baselines come from imagenet-testbed's ``robustness_top1s.csv`` and ``model_types.csv``
(read from a path). The testbed's own protocol is followed: models of the chosen types, minus the
ResNet-50 duplicates whose names contain 'aws', 'batch64' or 'subsample', and points whose
transform is not finite (ResNet-50 on ImageNet-A scores 0 by construction). The x-axis is ImageNet
accuracy on the shift's classes (``val-on-imagenet-r-classes`` etc. for R, A and ObjectNet).
With this protocol the STANDARD logit fits reproduce SPEC section 9 (``SPEC_LOGIT_FITS``).

CLI: ``python -m mmcl_theory.clip.robustness testbed --testbed DIR [--results CSV]`` prints the
baseline fits (and ER of evaluated models); ``... series --results CSV --id-dataset D --ood-datasets ...``
(or ``--points CSV``) computes ER across checkpoint series with a baseline fitted over chosen
series (``--baseline label``) and draws the OOD-vs-ID figure.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

import mmcl_theory

# shift name -> (testbed column of the shifted accuracy, testbed column of the same-class ImageNet accuracy)
TESTBED_SHIFTS: dict[str, tuple[str, str]] = {
    "imagenetv2": ("imagenetv2-matched-frequency-format-val", "val"),
    "imagenet_sketch": ("imagenet-sketch", "val"),
    "imagenet-r": ("imagenet-r", "val-on-imagenet-r-classes"),
    "imagenet-a": ("imagenet-a", "val-on-imagenet-a-classes"),
    "objectnet": ("objectnet-1.0-beta", "val-on-objectnet-classes"),
}

# Facts (SPEC section 9): STANDARD models, logit, (slope, intercept, r).
SPEC_LOGIT_FITS: dict[str, tuple[float, float, float | None]] = {
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
    z = np.asarray(z, dtype=np.float64)
    if kind == "logit":
        return 1.0 / (1.0 + np.exp(-z))
    if kind == "probit":
        return stats.norm.cdf(z)
    raise ValueError(f"transform = {kind!r}: must be one of {TRANSFORMS}")


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
        raise ValueError(f"baseline points: need >= 2 distinct finite points, got {x.size}")
    res = stats.linregress(x, y)
    return LinearFit(float(res.slope), float(res.intercept), float(res.rvalue), int(x.size), kind)


def _lstsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm = x.mean()
    slope = np.sum((x - xm) * (y - y.mean())) / max(np.sum((x - xm) ** 2), 1e-300)
    return float(slope), float(y.mean() - slope * xm)


def bootstrap_effective_robustness(baseline_id, baseline_ood, id_acc, ood_acc, kind: str = "logit",
                                   num_samples: int = 1000, seed: int = 0, level: float = 95.0) -> dict:
    """ER of points (id_acc, ood_acc) against a line fitted over baseline points, with a bootstrap CI.

    The baseline points are resampled with replacement ``num_samples`` times and the line refitted;
    the CI is the central ``level``% percentile interval of the ER. Returns
    {'fit': LinearFit, 'er': (m,), 'ci_low': (m,), 'ci_high': (m,)} in percentage points.
    """
    fit = fit_line(baseline_id, baseline_ood, kind)
    x, y = _finite_pairs(baseline_id, baseline_ood, kind)
    id_acc, ood_acc = np.atleast_1d(np.asarray(id_acc, float)), np.atleast_1d(np.asarray(ood_acc, float))
    rng = np.random.default_rng(seed)
    tid = transform(id_acc, kind)
    samples = np.empty((num_samples, id_acc.size))
    for b in range(num_samples):
        idx = rng.integers(0, x.size, x.size)
        slope, intercept = _lstsq(x[idx], y[idx])
        samples[b] = 100.0 * (ood_acc - inverse_transform(slope * tid + intercept, kind))
    lo = (100.0 - level) / 2
    return {"fit": fit, "er": fit.effective_robustness(id_acc, ood_acc),
            "ci_low": np.percentile(samples, lo, axis=0), "ci_high": np.percentile(samples, 100 - lo, axis=0)}


# ----------------------------------------------------------------------------------------------
# imagenet-testbed baselines
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Testbed:
    """models (n,), types (n,), columns: name -> (n,) accuracy fractions (NaN where missing)."""

    models: tuple[str, ...]
    types: tuple[str, ...]
    columns: Mapping[str, np.ndarray]


def load_testbed(root: str | os.PathLike) -> Testbed:
    """Read ROOT/robustness_top1s.csv (top-1 in percent) and ROOT/model_types.csv (model,type)."""
    root = Path(root)
    top1, types_csv = root / "robustness_top1s.csv", root / "model_types.csv"
    for p in (top1, types_csv):
        if not p.is_file():
            raise ValueError(f"--testbed = {str(root)!r}: missing {p.name}")
    with open(types_csv, newline="") as f:
        type_of = {r["model"]: r["type"] for r in csv.DictReader(f)}
    with open(top1, newline="") as f:
        rows = list(csv.DictReader(f))
    models = tuple(r["model"] for r in rows)
    columns = {c: np.array([float(r[c]) / 100.0 if r[c] else np.nan for r in rows])
               for c in rows[0] if c != "model"}
    return Testbed(models, tuple(type_of.get(m, "UNKNOWN") for m in models), columns)


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
    x, y = testbed.columns[x_col], testbed.columns[y_col]
    keep = baseline_mask(testbed, types) & np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def fit_testbed(testbed: Testbed, shift: str, types: Iterable[str] = ("STANDARD",), kind: str = "logit") -> LinearFit:
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
            slope, intercept = _lstsq(x, y)
            id_acc, ood_acc = accuracies[shift]
            pred = inverse_transform(slope * transform(id_acc, kind) + intercept, kind)
            samples[b, j] = 100.0 * (ood_acc - pred)
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


def series_effective_robustness(series: Sequence[Series], baseline: Sequence[str], kind: str = "logit",
                                num_samples: int = 1000, seed: int = 0) -> dict:
    """ER of every checkpoint against a baseline trend fitted over the checkpoints of the ``baseline``
    series (e.g. ['label'], or all series), plus each series' own fit. Bootstrap CIs resample the
    baseline checkpoints. Returns a JSON-ready dict."""
    by_name = {s.name: s for s in series}
    missing = [b for b in baseline if b not in by_name]
    if missing:
        raise ValueError(f"baseline = {missing}: not among the series {sorted(by_name)}")
    bx = np.concatenate([by_name[b].id_acc for b in baseline])
    by = np.concatenate([by_name[b].ood_acc for b in baseline])
    out = {"baseline_series": list(baseline), "transform": kind, "series": {}}
    for s in series:
        res = bootstrap_effective_robustness(bx, by, s.id_acc, s.ood_acc, kind, num_samples, seed)
        out["baseline_fit"] = dataclasses.asdict(res["fit"])
        own = dataclasses.asdict(fit_line(s.id_acc, s.ood_acc, kind)) if len(s.steps) >= 2 else None
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
        if len(s.steps) >= 2:
            f = fit_line(s.id_acc, s.ood_acc, kind)
            ax.plot(grid, f.slope * grid + f.intercept, color=c, lw=1, ls=":", label=f"{s.name} fit")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    os.replace(tmp, path)


def series_from_results(path: str | os.PathLike, id_dataset: str, ood_datasets: Sequence[str],
                        series_key: str = "caption_variant", metric: str = "top1") -> list[Series]:
    """Series from ``evaluate build``'s CSV: one per value of ``series_key`` (e.g. caption variant),
    x = ``metric`` on ``id_dataset``, y = its mean over ``ood_datasets``, at every step that has all."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"--results = {str(path)!r}: no rows")
    table: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        if r.get(metric):
            table.setdefault((r[series_key], int(r["step"])), {})[r["dataset"]] = float(r[metric])
    missing = sorted({d for d in [id_dataset, *ood_datasets] if all(d not in v for v in table.values())})
    if missing:
        raise ValueError(f"datasets {missing}: not in {path}")
    out = []
    for name in dict.fromkeys(k[0] for k in sorted(table)):
        steps = sorted(s for (n, s), v in table.items() if n == name and all(d in v for d in [id_dataset, *ood_datasets]))
        out.append(Series(name, tuple(steps), np.array([table[(name, s)][id_dataset] for s in steps]),
                          np.array([np.mean([table[(name, s)][d] for d in ood_datasets]) for s in steps])))
    return out


def write_series_csv(path: str | os.PathLike, series: Sequence[Series]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "step", "id_acc", "ood_acc"])
        for s in series:
            for st, i, o in zip(s.steps, s.id_acc, s.ood_acc):
                w.writerow([s.name, st, f"{i:.6f}", f"{o:.6f}"])
    os.replace(tmp, path)


def read_series_csv(path: str | os.PathLike) -> list[Series]:
    """CSV with columns series, step, id_acc, ood_acc (fractions) -> one Series per name, by step."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"series", "step", "id_acc", "ood_acc"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"--points = {str(path)!r}: needs columns {sorted(need)}")
    out = []
    for name in dict.fromkeys(r["series"] for r in rows):
        rs = sorted((r for r in rows if r["series"] == name), key=lambda r: int(r["step"]))
        out.append(Series(name, tuple(int(r["step"]) for r in rs), np.array([float(r["id_acc"]) for r in rs]),
                          np.array([float(r["ood_acc"]) for r in rs])))
    return out


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


# shift -> (evaluate dataset name of the shift, of the same-class ImageNet val)
EVALUATE_NAMES: dict[str, tuple[str, str]] = {
    "imagenetv2": ("imagenetv2", "imagenet1k"),
    "imagenet_sketch": ("imagenet_sketch", "imagenet1k"),
    "imagenet-r": ("imagenet-r", "imagenet1k@imagenet-r"),
    "imagenet-a": ("imagenet-a", "imagenet1k@imagenet-a"),
    "objectnet": ("objectnet", "imagenet1k@objectnet"),
}


def accuracies_from_evaluate(path: str | os.PathLike) -> dict[str, dict[str, tuple[float, float]]]:
    """``evaluate build`` CSV -> {model@step: {shift: (same-class ImageNet top-1, shift top-1)}} for the
    shifts whose two datasets were both evaluated."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    top1: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("top1"):
            top1.setdefault(f"{r['model']}@{r['step']}", {})[r["dataset"]] = float(r["top1"])
    out = {}
    for model, accs in top1.items():
        pairs = {s: (accs[x], accs[y]) for s, (y, x) in EVALUATE_NAMES.items() if x in accs and y in accs}
        if pairs:
            out[model] = pairs
    return out


def _testbed_command(args) -> None:
    tb = load_testbed(args.testbed)
    fits = {s: dataclasses.asdict(fit_testbed(tb, s, args.types, args.transform)) for s in TESTBED_SHIFTS}
    print(f"baseline fits ({'+'.join(args.types)}, {args.transform}):")
    print(f"{'shift':18s} {'slope':>7s} {'intercept':>9s} {'r':>6s} {'n':>4s}")
    for s, f in fits.items():
        print(f"{s:18s} {f['slope']:7.3f} {f['intercept']:9.3f} {f['r']:6.3f} {f['n']:4d}")
    report = {"fits": fits, "version": mmcl_theory.__version__, "types": args.types, "transform": args.transform}
    if args.results:
        report["models"] = {}
        with open(args.results, newline="") as f:
            header = next(csv.reader(f), [])
        if "shift" in header:  # rows: model, shift, id_acc, ood_acc (fractions)
            with open(args.results, newline="") as f:
                rows = list(csv.DictReader(f))
            models_accs = {m: {r["shift"]: (float(r["id_acc"]), float(r["ood_acc"])) for r in rows if r["model"] == m}
                           for m in dict.fromkeys(r["model"] for r in rows)}
        else:  # the CSV of `evaluate build`
            models_accs = accuracies_from_evaluate(args.results)
        for model, accs in models_accs.items():
            rep = testbed_effective_robustness(tb, accs, args.types, args.transform, args.bootstrap, args.seed)
            report["models"][model] = rep
            print(f"{model}: average ER {rep['average']['er']:+.2f} points, 95% CI "
                  f"[{rep['average']['ci'][0]:+.2f}, {rep['average']['ci'][1]:+.2f}]")
    if args.out:
        _write_json(Path(args.out), report)
    if args.figure:
        if not args.results:
            raise ValueError("testbed --figure: needs --results (the CSV of `evaluate build`)")
        bx, by = average_baseline_points(tb, args.types)
        series = series_from_results(args.results, "imagenet1k", list(TESTBED_SHIFTS))
        plot_ood_vs_id(args.figure, series, args.transform, baseline_points_xy=(bx, by),
                       baseline_fit=fit_line(bx, by, args.transform),
                       baseline_label=f"trend over {'+'.join(args.types)} testbed models",
                       xlabel="ImageNet top-1 (%)", ylabel="mean top-1 over the 5 shifts (%)")


def average_baseline_points(testbed: Testbed, types: Iterable[str] = ("STANDARD",)) -> tuple[np.ndarray, np.ndarray]:
    """(ImageNet val top-1, mean top-1 over the 5 TESTBED_SHIFTS) of the baseline models that have all
    of them: the points and trend of the averaged OOD-vs-ID figure."""
    x = testbed.columns["val"]
    ys = np.stack([testbed.columns[TESTBED_SHIFTS[s][0]] for s in TESTBED_SHIFTS])
    keep = baseline_mask(testbed, types) & np.isfinite(x) & np.isfinite(ys).all(axis=0)
    return x[keep], ys[:, keep].mean(axis=0)


def _series_command(args) -> None:
    if bool(args.points) == bool(args.results):
        raise ValueError("series: give exactly one of --points or --results")
    if args.results:
        if not (args.id_dataset and args.ood_datasets):
            raise ValueError("series --results: needs --id-dataset and --ood-datasets")
        series = series_from_results(args.results, args.id_dataset, args.ood_datasets)
        per_shift = {d: series_from_results(args.results, args.id_dataset, [d]) for d in args.ood_datasets}
        extra = {d: series_from_results(args.results, args.id_dataset, [d]) for d in args.extra_datasets}
    else:
        series, per_shift, extra = read_series_csv(args.points), {}, {}
    baseline = args.baseline or [s.name for s in series]
    report = series_effective_robustness(series, baseline, args.transform, args.bootstrap, args.seed)
    report.update(version=mmcl_theory.__version__, source=str(args.results or args.points),
                  id_dataset=args.id_dataset, ood_datasets=list(args.ood_datasets or []),
                  ood="mean top-1 over ood_datasets", baseline_note=(
                      f"baseline trend = {args.transform} line fitted over the checkpoints of "
                      f"{'+'.join(baseline)}; ER of a checkpoint = its OOD accuracy minus the trend at its "
                      "ID accuracy, in points; CIs resample the baseline checkpoints"))
    report["per_shift"] = {d: series_effective_robustness(s, baseline, args.transform, args.bootstrap, args.seed)
                           for d, s in {**per_shift, **extra}.items()}
    for name, s in report["series"].items():
        print(f"{name}: mean ER {s['mean_er']:+.2f} points vs the trend of {'+'.join(baseline)} checkpoints")
    for d, rep in report["per_shift"].items():
        print(f"  {d:34s} " + "  ".join(f"{n} {v['mean_er']:+.2f}" for n, v in rep["series"].items()))
    if args.out:
        _write_json(Path(args.out), report)
    if args.points_out:
        write_series_csv(args.points_out, series)
    if args.figure:
        bf = LinearFit(**report["baseline_fit"])
        plot_ood_vs_id(args.figure, series, args.transform, baseline_fit=bf,
                       baseline_label=f"trend over {'+'.join(baseline)} checkpoints",
                       xlabel=args.xlabel, ylabel=args.ylabel, title=args.title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmcl_theory.clip.robustness",
                                     description="Effective robustness: baseline fits, ER, OOD-vs-ID figure.")
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
        a.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
        a.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        (_testbed_command if args.command == "testbed" else _series_command)(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
