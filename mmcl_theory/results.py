"""Results of a sweep, without jax: the test names, the row contract, statistics over seeds and the printed table.

Results contract, one row per accuracy (``CONTRACT``): the sweep, model, swept parameter and value,
the series ("name=value" for two-axis sweeps, "variant=NAME" for variants, "" otherwise), the learner,
the zero-shot prompt ("" for SL), the test distribution (``TESTS``), the seed, n, the accuracy, the
route that computed it (evaluate.py; "theory" marks a theory row, whose seed is -1 when it does not
depend on the seed, as in M1/M2, and the seed's own when it does, as in M3's exact E[S]), and a trained learner's final loss, loss
floor and whether it converged ("" otherwise; docs/learners.md#convergence). A model's runner
returns rows with the ``ROW_KEYS``; the sweep adds the point's columns.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

TESTS = ("aligned", "independent", "flipped")
CONTRACT = ("sweep", "model", "param", "value", "series", "learner", "prompt", "test", "seed", "n", "accuracy",
            "route", "final_loss", "loss_floor", "converged")
NOISY_SE = 0.05  # a mean whose standard error over seeds exceeds this is marked noisy in tables and figures
ROW_KEYS = ("learner", "prompt", "test", "seed", "n", "accuracy", "route", "final_loss", "loss_floor", "converged")


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error of the mean over the first axis (s.e. 0 for one value):
    s.e. = s / sqrt(m), s the sample standard deviation (ddof 1) of the m values."""
    v = np.asarray(values, np.float64)
    if v.shape[0] < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.shape[0]))


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    """(param, series, value, learner, prompt, test) -> (mean, standard error, number of seeds)."""
    groups = defaultdict(list)
    for r in rows:
        key = (r["param"], r.get("series", ""), float(r["value"]), r["learner"], r.get("prompt", ""), r["test"])
        groups[key].append(float(r["accuracy"]))
    return {k: (*mean_se(v), len(v)) for k, v in groups.items()}


def curve_key(learner: str, prompt: str = "") -> str:
    """The short name of one curve: learner[prompt] for a zero-shot learner, the learner alone for SL."""
    return learner + (f"[{prompt}]" if prompt else "")


def format_table(rows: list[dict]) -> str:
    """Per test distribution: value (and series) against theory and each learner[prompt], mean +- s.e. over seeds;
    a mean whose s.e. exceeds NOISY_SE is marked '!', with a footnote."""
    stats = summarise(rows)
    curves = list(dict.fromkeys((r["learner"], r["prompt"]) for r in rows))
    width = max(20, *(len(curve_key(*c)) + 1 for c in curves))
    lines = []
    for test in TESTS:
        lines.append(f"\n== {test} test: accuracy, mean +- s.e. over seeds ==")
        lines.append(f"{'param':>10} {'value':>8} {'series':>12} " + " ".join(f"{curve_key(*c):>{width}}" for c in curves))
        for key in sorted({k[:3] for k in stats}, key=lambda k: (k[0], k[1], k[2])):
            cells = []
            for learner, prompt in curves:
                m = stats.get((*key, learner, prompt, test))
                cells.append(f"{'-':>{width}}" if m is None else
                             f"{m[0]:>{width - 8}.3f}" + (f" +-{m[1]:.3f}" if m[2] > 1 else " " * 7)
                             + ("!" if m[1] > NOISY_SE else " "))
            lines.append(f"{key[0]:>10} {key[2]:>8.4g} {key[1]:>12} " + " ".join(cells))
    if any(m[1] > NOISY_SE for m in stats.values()):
        lines.append(f"\n! standard error above {NOISY_SE} over the seeds: that mean is mostly seed noise at this "
                     "seed count (docs/learners.md#seed-noise)")
    return "\n".join(lines)


def seed_accuracies(rows: list[dict], learner: str, prompt: str | None = None) -> np.ndarray:
    """Accuracies (seeds, 3) in TESTS order of one learner and prompt set, from one config's rows of
    models.evaluate_grid; prompt None: the learner's first prompt set in the rows (the model's first, e.g.
    'core' for M1 and M2; '' for a supervised learner)."""
    picked = [r for r in rows if r["learner"] == learner]
    if prompt is None:
        prompt = picked[0]["prompt"] if picked else ""
    picked = [r for r in picked if r["prompt"] == prompt]
    seeds = sorted({r["seed"] for r in picked})
    table = {(r["seed"], r["test"]): r["accuracy"] for r in picked}
    return np.array([[table[(s, t)] for t in TESTS] for s in seeds], np.float64)
