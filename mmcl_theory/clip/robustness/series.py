"""Checkpoint series (e.g. caption- vs label-trained models): ER against a trend fitted over chosen
series, their CSV form, and the OOD-vs-ID figure on transformed axes."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from mmcl_theory.io import atomic_save_figure, atomic_write_csv

from .tables import fraction, read_table, skip_row, step_number, usable_id
from .trend import LinearFit, bootstrap_effective_robustness, check_accuracies, finite_pairs, fit_line, transform


@dataclasses.dataclass(frozen=True)
class Series:
    """One model's checkpoints: name, steps (m,), id_acc (m,), ood_acc (m,) (OOD = mean over shifts)."""

    name: str
    steps: tuple[int, ...]
    id_acc: np.ndarray
    ood_acc: np.ndarray


def _own_fit(s: Series, kind: str) -> dict | None:
    """A series' own trend line, or None when its checkpoints do not determine one (< 2 distinct points)."""
    x, y = finite_pairs(s.id_acc, s.ood_acc, kind)
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
        (value, bad_value), (step, bad_step) = fraction(r[metric]), step_number(r["step"])
        if bad_value or bad_step:
            skip_row(skipped, f"{path}:{line}", bad_step or f"{metric}: {bad_value}")
            continue
        table.setdefault((r[series_key] or "", step), {})[r["dataset"] or ""] = value
    missing = sorted({d for d in [id_dataset, *ood_datasets] if all(d not in v for v in table.values())})
    if missing:
        raise ValueError(f"--results = {str(path)!r}: no usable {metric} of the datasets {missing} "
                         f"(column 'dataset' there: {', '.join(sorted({d for v in table.values() for d in v})[:8])})")
    out = []
    for name in dict.fromkeys(k[0] for k in sorted(table)):
        steps = [s for (n, s), v in sorted(table.items()) if n == name and all(d in v for d in [id_dataset, *ood_datasets])
                 and usable_id(f"{path}: {series_key} {name!r} step {s}", v[id_dataset], skipped)]
        if not steps:
            skip_row(skipped, f"{path}: {series_key} {name!r}", f"no checkpoint with usable {metric} on all of "
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
        (step, bad_step), (i, bad_i), (o, bad_o) = step_number(r["step"]), fraction(r["id_acc"]), fraction(r["ood_acc"])
        if bad_step or bad_i or bad_o:
            skip_row(skipped, where, bad_step or (f"id_acc: {bad_i}" if bad_i else f"ood_acc: {bad_o}"))
        elif usable_id(where, i, skipped):
            points.setdefault(r["series"], {})[step] = (i, o)
    if not points:
        raise ValueError(f"--points = {str(path)!r}: no usable row (series, integer step, id_acc strictly between "
                         "0 and 1, ood_acc in [0, 1])")
    return [Series(name, tuple(sorted(p)), np.array([p[s][0] for s in sorted(p)]), np.array([p[s][1] for s in sorted(p)]))
            for name, p in points.items()]
