"""Analysis of the real-image mechanism experiment (real_data/mechanisms_experiment.py): effective
robustness of each arm against the trend of its baseline arm, with confidence intervals over seeds
and checkpoints, and the paper check C8's rule. The OOD-vs-ID figure of all arms is drawn in the
package (mmcl_theory/clip/robustness/mechanisms.py).

Arms (``ARMS``) and the baseline each is measured against (``MECHANISMS``; both defined with the
figure CSV and the figure in mmcl_theory/clip/robustness/mechanisms.py and imported here):
    intra-class contrasting  baseline 'coarse' (coarse group name)        vs 'coarse_fine' (+ fine name)
    feature sharing          baseline 'mosaic_main' (main object named)   vs 'mosaic_all' (all objects)
    supervised baselines     'sl_coarse', 'sl_mosaic' (same images and labels) against the same trends
    nuisance, detail type c  baseline 'label' (class name)                vs 'rich' (size, position, colour)
The theory's sign for each arm (``PREDICTED_SIGN``, docs/models.md): annotated per-image core detail
and shared features raise ER (+1); SL sits below the MMCL trend (-1); nuisance details predict no
gain (0).

Points: for each (arm, seed, checkpoint step), ID = zero-shot top-1 on the ID set, OOD = mean top-1
over the SHIFTS of that set (the data layer's corruptions at severity 3, greyscale, edges). The trend
is the least-squares line logit(OOD) = a logit(ID) + b over every checkpoint of every seed of the
baseline arm; ER = 100 (OOD - logit^-1(a logit(ID) + b)) in points. Per arm: the mean ER over
checkpoints of each seed, their mean over seeds, a t-interval over seeds (n - 1 dof), and a
hierarchical bootstrap interval (seeds of the baseline and of the arm resampled, then checkpoints
within each seed, the trend refitted each time).
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import Sequence

import numpy as np
from scipy import stats

from mmcl_theory.clip.robustness import fit_line
# The arms, the shifts, the figure CSV and the figure live in the package (python -m mmcl_theory.figures draws it);
# they are re-exported here for mechanisms_experiment.py and the tests.
from mmcl_theory.clip.robustness.mechanisms import (  # noqa: F401
    ARMS, MECHANISMS, POINT_FIELDS, SHIFTS, draw_figure, figure_from_csv, point_rows, read_point_rows)

PREDICTED_SIGN = {"coarse_fine": 1, "mosaic_all": 1, "sl_coarse": -1, "sl_mosaic": -1, "rich": 0}


def id_dataset(names: str) -> str:
    """Zero-shot ID set of an arm whose class names are 'coarse' (the 24 WordNet groups) or 'fine' (200)."""
    if names not in ("coarse", "fine"):
        raise ValueError(f"names = {names!r}: must be 'coarse' or 'fine'")
    return "tiny_imagenet_coarse" if names == "coarse" else "tiny_imagenet"


def eval_datasets(names: str) -> list[str]:
    """ID set, its shifts, then the two texture-vs-shape sets (coarse-labelled ones for coarse names)."""
    base = id_dataset(names)
    suffix = "_coarse" if names == "coarse" else ""
    return [base] + [f"{base}:{s}" for s in SHIFTS] + [f"texture_vs_shape_edges{suffix}",
                                                        f"texture_vs_shape_silhouettes{suffix}"]


_RUN_RE = re.compile(r"^(?P<arm>.+)_s(?P<seed>\d+)$")


def read_points(results_csv: str | os.PathLike) -> list[dict]:
    """One point per (arm, seed, step) from an ``evaluate build`` CSV whose 'model' is '<arm>_s<seed>':
    {'arm', 'seed', 'step', 'id_acc', 'ood_acc', 'per_shift': {shift: acc}, 'extra': {dataset: acc}}.
    A point needs the ID set and every shift; incomplete ones are left out."""
    table: dict[tuple, dict[str, float]] = {}
    with open(results_csv, newline="") as f:
        for row in csv.DictReader(f):
            m = _RUN_RE.match(row.get("model", ""))
            if not m or m["arm"] not in ARMS or not row.get("top1"):
                continue
            acc = float(row["top1"])
            if not math.isfinite(acc):
                continue
            table.setdefault((m["arm"], int(m["seed"]), int(row["step"])), {})[row["dataset"]] = acc
    points = []
    for (arm, seed, step), accs in sorted(table.items()):
        base = next((d for d in ("tiny_imagenet_coarse", "tiny_imagenet") if d in accs), None)
        if base is None or not all(f"{base}:{s}" in accs for s in SHIFTS):
            continue
        per_shift = {s: accs[f"{base}:{s}"] for s in SHIFTS}
        points.append({"arm": arm, "seed": seed, "step": step, "id_dataset": base, "id_acc": accs[base],
                       "ood_acc": float(np.mean(list(per_shift.values()))), "per_shift": per_shift,
                       "extra": {d: a for d, a in accs.items() if d.startswith("texture_vs_shape")}})
    return points


def _er(fit_xy: tuple[np.ndarray, np.ndarray], id_acc: np.ndarray, ood_acc: np.ndarray, kind: str) -> np.ndarray:
    fit = fit_line(fit_xy[0], fit_xy[1], kind)
    return fit.effective_robustness(id_acc, ood_acc)


def _by_seed(points: Sequence[dict], arm: str, key: str = "ood_acc") -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, list] = {}
    for p in points:
        if p["arm"] == arm:
            out.setdefault(p["seed"], []).append((p["id_acc"], p[key] if key == "ood_acc" else p["per_shift"][key]))
    return {s: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for s, v in sorted(out.items())}


def arm_effective_robustness(points: Sequence[dict], baseline: str, arm: str, kind: str = "logit",
                             num_samples: int = 1000, seed: int = 0, shift: str = "ood_acc") -> dict | None:
    """ER of ``arm`` against the trend of ``baseline`` (see the module docstring); None when either arm
    has no points or the baseline has fewer than 2 distinct ID accuracies. ``shift``: 'ood_acc' (the
    mean) or one SHIFTS entry."""
    base, test = _by_seed(points, baseline, shift), _by_seed(points, arm, shift)
    if not base or not test:
        return None
    bx = np.concatenate([v[0] for v in base.values()])
    by = np.concatenate([v[1] for v in base.values()])
    try:
        fit = fit_line(bx, by, kind)
    except ValueError:
        return None
    per_seed = {s: float(np.mean(fit.effective_robustness(*v))) for s, v in test.items()}
    vals = np.array(list(per_seed.values()))
    mean = float(vals.mean())
    if vals.size >= 2:
        half = float(stats.t.ppf(0.975, vals.size - 1) * stats.sem(vals))  # scipy's s.e., ddof 1
        t_ci = [mean - half, mean + half]
    else:
        t_ci = None
    rng = np.random.default_rng(seed)
    bseeds, tseeds = list(base), list(test)
    boot = []
    for _ in range(num_samples):
        def draw(groups, keys):
            xs, ys = [], []
            for s in rng.choice(keys, len(keys)):
                x, y = groups[s]
                k = rng.integers(0, x.size, x.size)
                xs.append(x[k]), ys.append(y[k])
            return np.concatenate(xs), np.concatenate(ys)
        fx, fy = draw(base, bseeds)
        tx, ty = draw(test, tseeds)
        try:
            boot.append(float(np.mean(_er((fx, fy), tx, ty, kind))))
        except ValueError:  # a resample with one distinct ID accuracy has no trend
            continue
    boot_ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None
    return {"baseline": baseline, "arm": arm, "shift": shift, "er": mean, "per_seed": per_seed,
            "t_ci95": t_ci, "bootstrap_ci95": boot_ci, "bootstrap_samples": len(boot),
            "trend": {"slope": fit.slope, "intercept": fit.intercept, "r": fit.r, "n": fit.n, "transform": kind},
            "seeds": len(per_seed), "checkpoints": int(sum(v[0].size for v in test.values())),
            "predicted_sign": PREDICTED_SIGN.get(arm)}


def report(points: Sequence[dict], num_samples: int = 1000) -> dict:
    """{mechanism: {'baseline', 'arms': {arm: ER of the mean OOD, with 'per_shift': {shift: ER}}}}."""
    out = {}
    for mech, spec in MECHANISMS.items():
        arms = {}
        for arm in spec["arms"]:
            res = arm_effective_robustness(points, spec["baseline"], arm, num_samples=num_samples)
            if res is None:
                continue
            res["per_shift"] = {}
            for s in SHIFTS:
                r = arm_effective_robustness(points, spec["baseline"], arm, num_samples=0, shift=s)
                res["per_shift"][s] = None if r is None else r["er"]
            arms[arm] = res
        out[mech] = {"baseline": spec["baseline"], "title": spec["title"], "arms": arms}
    return out


def c6_assessment(mechanism_report: dict, min_seeds: int = 3) -> dict:
    """The paper check C6 for this design, from ``report()``'s output (er_report.json's 'mechanisms').

    Independent expectation: the theory's sign for each arm (PREDICTED_SIGN): ER > 0 for 'coarse_fine'
    and 'mosaic_all' against their baselines, ER < 0 for the SL arms, and each SL arm below the
    treatment arm of its mechanism. An arm counts as confirmed when its 95% t-interval over >= min_seeds
    seeds lies on the predicted side (for 'SL below the treatment': the SL interval's upper end below
    the treatment's ER). Returns {'verdict': 'pass' | 'fail' | 'not run', 'arms': {arm: 'confirmed' |
    'refuted' | 'inconclusive'}, 'missing': [arms without >= min_seeds seeds], 'lines': [one per arm]}.
    'not run' when a treatment arm is missing; 'pass' when every present arm is confirmed; otherwise
    'fail' (the lines say whether the interval excludes the prediction or merely covers 0). The nuisance
    arm 'rich' (predicted sign 0) is reported, not judged.
    """
    arms, missing, lines = {}, [], []
    treatment = {"intra_class": "coarse_fine", "feature_sharing": "mosaic_all"}
    for mech in ("intra_class", "feature_sharing"):
        results = mechanism_report.get(mech, {}).get("arms", {})
        for arm in MECHANISMS[mech]["arms"]:
            r = results.get(arm)
            if r is None or r["seeds"] < min_seeds or r["t_ci95"] is None:
                missing.append(arm)
                continue
            lo, hi = r["t_ci95"]
            sign = PREDICTED_SIGN[arm]
            state = ("confirmed" if (lo > 0 if sign > 0 else hi < 0) else
                     "refuted" if (hi < 0 if sign > 0 else lo > 0) else "inconclusive")
            note = ""
            if sign < 0 and treatment[mech] in results and state == "confirmed":
                if not hi < results[treatment[mech]]["er"]:
                    state, note = "inconclusive", f"; not below {treatment[mech]}'s ER"
            arms[arm] = state
            lines.append(f"{arm} vs {r['baseline']} trend: ER {r['er']:+.2f} points, 95% t-CI [{lo:+.2f}, {hi:+.2f}] "
                         f"over {r['seeds']} seeds ({r['checkpoints']} checkpoints); predicted "
                         f"{'> 0' if sign > 0 else '< 0'}: {state}{note}")
    nuisance = mechanism_report.get("nuisance_c", {}).get("arms", {}).get("rich")
    if nuisance is not None:
        ci = nuisance["t_ci95"]
        lines.append(f"rich vs label trend (nuisance, detail type (c); no gain predicted, not judged): ER "
                     f"{nuisance['er']:+.2f} points" + (f", 95% t-CI [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
                     + f" over {nuisance['seeds']} seed(s)")
    if any(t in missing for t in treatment.values()):
        verdict = "not run"
    else:
        verdict = "pass" if all(s == "confirmed" for s in arms.values()) else "fail"
    return {"verdict": verdict, "arms": arms, "missing": missing, "lines": lines}
