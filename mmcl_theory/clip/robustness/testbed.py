"""imagenet-testbed baselines: the models' accuracies, the baseline trend of each shift, and ER of
evaluated models against it (per shift and averaged, with a bootstrap over baseline models).

The testbed's own protocol is followed: models of the chosen types, minus the ResNet-50 duplicates
whose names contain 'aws', 'batch64' or 'subsample', and points whose transform is not finite
(ResNet-50 on ImageNet-A scores 0 by construction). The x-axis is ImageNet accuracy on the shift's
classes (``val-on-imagenet-r-classes`` etc. for R, A and ObjectNet). With this protocol the
STANDARD logit fits reproduce ``REFERENCE_LOGIT_FITS``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .tables import fraction, read_table, skip_row, usable_id
from .trend import LinearFit, check_accuracies, finite_pairs, fit_line, inverse_transform, least_squares, transform

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
            x, y = finite_pairs(testbed.columns[x_col][draw], testbed.columns[y_col][draw], kind)
            if x.size < 2:  # a resample without two usable points of this shift: no line, left out
                samples[b, j] = np.nan
                continue
            slope, intercept = least_squares(x, y)
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
        value, bad = fraction(r["top1"])
        if bad:
            skip_row(skipped, f"{path}:{line}", f"top1: {bad}")
            continue
        top1.setdefault(f"{r['model']}@{r['step']}", {})[r["dataset"]] = value
    out = {}
    for model, accs in top1.items():
        pairs = {s: (accs[x], accs[y]) for s, (y, x) in EVALUATE_NAMES.items() if x in accs and y in accs
                 and usable_id(f"{path}: {model} {x}", accs[x], skipped)}
        if pairs:
            out[model] = pairs
    return out


def accuracies_from_pairs(path: str | os.PathLike, skipped: list[tuple[str, str]] | None = None
                          ) -> dict[str, dict[str, tuple[float, float]]]:
    """CSV with columns model, shift, id_acc, ood_acc (fractions) -> {model: {shift: (id_acc, ood_acc)}}."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for line, r in read_table(path, "--results", ("model", "shift", "id_acc", "ood_acc")):
        where = f"{path}:{line}"
        (i, bad_i), (o, bad_o) = fraction(r["id_acc"]), fraction(r["ood_acc"])
        if r["shift"] not in TESTBED_SHIFTS:
            skip_row(skipped, where, f"shift {r['shift']!r} is not one of {', '.join(TESTBED_SHIFTS)}")
        elif bad_i or bad_o:
            skip_row(skipped, where, f"id_acc: {bad_i}" if bad_i else f"ood_acc: {bad_o}")
        elif usable_id(where, i, skipped):
            out.setdefault(r["model"], {})[r["shift"]] = (i, o)
    return out


def average_baseline_points(testbed: Testbed, types: Iterable[str] = ("STANDARD",)) -> tuple[np.ndarray, np.ndarray]:
    """(ImageNet val top-1, mean top-1 over the 5 TESTBED_SHIFTS) of the baseline models that have all
    of them: the points and trend of the averaged OOD-vs-ID figure."""
    x = testbed.column("val", "the averaged figure")
    ys = np.stack([testbed.column(TESTBED_SHIFTS[s][0], "the averaged figure") for s in TESTBED_SHIFTS])
    keep = baseline_mask(testbed, types) & np.isfinite(x) & np.isfinite(ys).all(axis=0)
    return x[keep], ys[:, keep].mean(axis=0)
