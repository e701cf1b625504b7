"""The real-image mechanism experiment's arms and its OOD-vs-ID figure (real_data/mechanisms_experiment.py).

The arms (``ARMS``), the baseline each is measured against (``MECHANISMS``) and the OOD shifts
(``SHIFTS``) define the experiment; the figure CSV (``POINT_FIELDS``: one row per arm, seed and
checkpoint step, accuracies as fractions) is written by the experiment and read back here to draw
figures/real_data_mechanisms.png (``figure_from_csv``, called by ``python -m mmcl_theory.figures``).
The experiment's analysis (effective robustness per arm, check C8's rule) stays beside its script in
real_data/mechanisms_analysis.py, which imports these names from here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .trend import fit_line, transform

SHIFTS = ("gaussian_noise:3", "gaussian_blur:3", "contrast:3", "jpeg:3", "pixelate:3", "greyscale", "edges")
"""The OOD shifts averaged into the OOD accuracy (NAME:SHIFT[:SEVERITY] of the evaluator)."""

ARMS: dict[str, dict] = {
    "coarse": {"mechanism": "intra_class", "train_set": "coarse", "names": "coarse"},
    "coarse_fine": {"mechanism": "intra_class", "train_set": "coarse_fine", "names": "coarse"},
    "sl_coarse": {"mechanism": "intra_class", "train_set": "coarse", "names": "coarse", "supervised": True},
    "mosaic_main": {"mechanism": "feature_sharing", "train_set": "mosaic_main", "names": "mosaic"},
    "mosaic_all": {"mechanism": "feature_sharing", "train_set": "mosaic_all", "names": "mosaic"},
    "sl_mosaic": {"mechanism": "feature_sharing", "train_set": "mosaic_main", "names": "mosaic", "supervised": True},
    "label": {"mechanism": "nuisance_c", "train_set": "label", "names": "fine"},
    "rich": {"mechanism": "nuisance_c", "train_set": "rich", "names": "fine"},
}
MECHANISMS: dict[str, dict] = {
    "intra_class": {"baseline": "coarse", "arms": ("coarse_fine", "sl_coarse"),
                    "title": "intra-class contrasting (coarse vs coarse + fine)"},
    "feature_sharing": {"baseline": "mosaic_main", "arms": ("mosaic_all", "sl_mosaic"),
                        "title": "feature sharing (mosaics: main vs all objects)"},
    "nuisance_c": {"baseline": "label", "arms": ("rich",), "title": "nuisance details, type (c) (label vs rich)"},
}

POINT_FIELDS = ("mechanism", "arm", "seed", "step", "id_dataset", "id_acc", "ood_acc") + SHIFTS


def point_rows(points: Sequence[dict]) -> list[dict]:
    """Rows of the figure CSV (accuracies as fractions)."""
    return [{"mechanism": ARMS[p["arm"]]["mechanism"], "arm": p["arm"], "seed": p["seed"], "step": p["step"],
             "id_dataset": p["id_dataset"], "id_acc": p["id_acc"], "ood_acc": p["ood_acc"], **p["per_shift"]}
            for p in points]


def read_point_rows(path: str | os.PathLike) -> list[dict]:
    """The figure CSV back as points (the inverse of point_rows)."""
    with open(path, newline="") as f:
        return [{"arm": r["arm"], "seed": int(r["seed"]), "step": int(r["step"]), "id_dataset": r["id_dataset"],
                 "id_acc": float(r["id_acc"]), "ood_acc": float(r["ood_acc"]),
                 "per_shift": {s: float(r[s]) for s in SHIFTS}, "extra": {}} for r in csv.DictReader(f)]


def draw_figure(points: Sequence[dict], path: str | os.PathLike, kind: str = "logit") -> None:
    """One panel per mechanism: OOD vs ID (logit axes, ticks in %) of every checkpoint of every seed of
    each arm, the baseline arm's trend line and y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmcl_theory.io import atomic_save_figure

    mechs = [m for m in MECHANISMS if any(ARMS[p["arm"]]["mechanism"] == m for p in points)]
    fig, axes = plt.subplots(1, max(len(mechs), 1), figsize=(5.2 * max(len(mechs), 1), 4.8), squeeze=False)
    colors = {"coarse": "tab:gray", "coarse_fine": "tab:blue", "sl_coarse": "tab:red", "mosaic_main": "tab:gray",
              "mosaic_all": "tab:green", "sl_mosaic": "tab:red", "label": "tab:gray", "rich": "tab:orange"}
    for ax, mech in zip(axes[0], mechs):
        spec = MECHANISMS[mech]
        pts = [p for p in points if ARMS[p["arm"]]["mechanism"] == mech]
        xs = np.array([p["id_acc"] for p in pts])
        ys = np.array([p["ood_acc"] for p in pts])
        lo = max(min(xs.min(), ys.min()) * 0.8, 1e-3)
        hi = min(max(xs.max(), ys.max()) * 1.15 + 0.01, 0.999)
        grid = np.linspace(transform(lo, kind), transform(hi, kind), 100)
        ax.plot(grid, grid, "k--", lw=0.8, label="y = x")
        for arm in (spec["baseline"],) + spec["arms"]:
            ap = [p for p in pts if p["arm"] == arm]
            if not ap:
                continue
            ax.scatter(transform([p["id_acc"] for p in ap], kind), transform([p["ood_acc"] for p in ap], kind),
                       s=16, color=colors[arm], label=f"{arm} ({len({p['seed'] for p in ap})} seeds)", zorder=4)
        base = [p for p in pts if p["arm"] == spec["baseline"]]
        try:
            fit = fit_line([p["id_acc"] for p in base], [p["ood_acc"] for p in base], kind)
            ax.plot(grid, fit.slope * grid + fit.intercept, color="tab:gray", lw=1.5,
                    label=f"{spec['baseline']} trend")
        except ValueError:
            pass
        ticks = np.array([t for t in (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)
                          if lo * 100 <= t <= hi * 100])
        ax.set_xticks(transform(ticks / 100, kind), [f"{t:g}" for t in ticks])
        ax.set_yticks(transform(ticks / 100, kind), [f"{t:g}" for t in ticks])
        ax.set_xlim(grid[0], grid[-1])
        ax.set_ylim(grid[0], grid[-1])
        ax.set_xlabel(f"ID top-1 (%, {kind} axis): {pts[0]['id_dataset']}")
        ax.set_ylabel("OOD top-1, mean of 7 shifts (%)")
        ax.set_title(spec["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    atomic_save_figure(fig, Path(path), dpi=130)
    plt.close(fig)


def figure_from_csv(csv_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """Redraw figures/real_data_mechanisms.png from its CSV (``python -m mmcl_theory.figures`` calls this)."""
    draw_figure(read_point_rows(csv_path), png_path)
