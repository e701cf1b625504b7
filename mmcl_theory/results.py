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


FIT_KEYS = ("final_loss", "loss_floor", "converged")  # a trained learner's convergence columns; "" where absent


def make_row(learner: str, prompt: str, test: str, seed: int, n: int, accuracy, route: str, **columns) -> dict:
    """The one row builder (every model's rows, through grid.run_point): the ROW_KEYS in order, accuracy as a
    float, the FIT_KEYS given in `columns` or "", then any further column (paper_mnist's 'curve')."""
    fit = {key: columns.pop(key, "") for key in FIT_KEYS}
    return {"learner": learner, "prompt": prompt, "test": test, "seed": int(seed), "n": int(n),
            "accuracy": float(accuracy), "route": route, **fit, **columns}


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


# ------------------------------------------------------------------ the summary a sweep ends with

SUMMARY_WIDTH = 100  # columns of the summary the sweep CLI prints (the full table goes to a file)
APART_SE = 3.0  # a learner is apart from its theory where |mean - theory| > APART_SE s.e. of the difference


def _value_runs(values: list[float], picked: list[float]) -> str:
    """`picked` (a subset of the sorted `values`) written with runs of consecutive values as 'a..b': '0..0.3, 0.7'."""
    runs, start, prev = [], None, None
    index = {v: i for i, v in enumerate(values)}
    for v in sorted(picked, key=index.get):
        if start is not None and index[v] == index[prev] + 1:
            prev = v
            continue
        if start is not None:
            runs.append(f"{start:g}" if start == prev else f"{start:g}..{prev:g}")
        start = prev = v
    if start is not None:
        runs.append(f"{start:g}" if start == prev else f"{start:g}..{prev:g}")
    return ", ".join(runs)


def _wrap(text: str, width: int, indent: str = "    ") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [""]


def format_summary(rows: list[dict], test: str = "flipped", table: str | None = None, figure: str | None = None,
                   width: int = SUMMARY_WIDTH) -> str:
    """The few lines a sweep ends with, each at most `width` characters (but for a path longer than that).

    On one test distribution (`test`, else the first of TESTS the rows have), per swept parameter and series:
    every curve (learner[prompt], theory rows first as in the rows) at the parameter's first and last value,
    mean +- s.e. over seeds ('!': s.e. above NOISY_SE, as in format_table); then, at every value of the sweep,
    where each learner stands against the theory of its prompt: a zero-shot learner's curve is compared with
    each theory curve (rows with route 'theory') of the same prompt, and is apart at a value where
    |mean - theory| > APART_SE * sqrt(s.e.^2 + s.e.(theory)^2) (a '*' marks such a cell in the first/last
    columns). Supervised learners (prompt '') are listed but not compared: the theory rows without a prompt
    (bayes_core) are bounds, not predictions for them. Rows without theory rows (paper_mnist) give the
    learners only. A comparison where both standard errors are 0 (one seed) is not judged. `table` and
    `figure`: where the full table and the figure are, named in the last lines.
    """
    if not rows:
        return "no rows"
    stats = summarise(rows)
    tests = [t for t in TESTS if any(k[5] == t for k in stats)]
    test = test if test in tests else (tests[0] if tests else test)
    theory = list(dict.fromkeys((r["learner"], r.get("prompt", "")) for r in rows if r.get("route") == "theory"))
    curves = list(dict.fromkeys((r["learner"], r.get("prompt", "")) for r in rows))
    curves = [c for c in curves if c in theory] + [c for c in curves if c not in theory]
    groups = list(dict.fromkeys((r["param"], r.get("series", "")) for r in rows))
    seeds = sorted({len({r["seed"] for r in rows if (r["learner"], r.get("prompt", "")) == c and r["test"] == test})
                    for c in curves if c not in theory} - {0})
    over = (f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}") if seeds else ""
    name = f"sweep {rows[0]['sweep']} ({rows[0]['model']}): " if "sweep" in rows[0] and "model" in rows[0] else ""
    lines = _wrap(f"== {name}{test} test" + (f", mean +- s.e. over {over} seed{'s' * (over != '1')}" if over else "")
                  + " ==", width)
    same_param = len({g[0] for g in groups}) == 1

    def group_label(key) -> str:
        """A group's name: its series (or parameter, when the sweep has several)."""
        return ", ".join(p for p in ("" if same_param else key[0], key[1]) if p) or key[0]

    def cell(m, apart: bool) -> str:
        """mean +- s.e. right-aligned in 13 columns, then the '!' and '*' marks (or spaces)."""
        text = f"{m[0]:.3f}" + (f" +-{m[1]:.3f}" if m[2] > 1 else "")
        return f"{text:>13}" + ("!" if m[1] > NOISY_SE else " ") + ("*" if apart else " ")

    def apart_at(key, curve, value) -> bool | None:
        """Whether `curve` is apart from any theory of its prompt at `value` (None: nothing to compare)."""
        verdicts = [_apart(stats.get((*key[:2], value, *curve, test)), stats.get((*key[:2], value, *t, test)))
                    for t in theory if curve[1] and t[1] == curve[1] and curve not in theory]
        verdicts = [v for v in verdicts if v is not None]
        return any(verdicts) if verdicts else None

    comparisons, no_theory, noisy = [], [], False
    for key in groups:
        values = sorted({k[2] for k in stats if k[:2] == key and k[5] == test})
        if not values:
            continue
        shown = [c for c in curves if any((*key, v, *c, test) in stats for v in values)]
        ends = [values[0]] if len(values) == 1 else [values[0], values[-1]]
        heads = [f"{key[0]} = {v:g}" if len(f"{key[0]} = {v:g}") <= 27 else f"{v:g}" for v in ends]  # fits 100
        label_w = min(40, max(len(curve_key(*c)) for c in shown))
        cell_w = max(13, *(len(h) for h in heads))
        if len(groups) > 1 or key[1] or not heads[0].startswith(key[0]):
            lines += _wrap(f"{key[0]}" + (f", {key[1]}" if key[1] else "") + ":", width)
        lines.append(f"{'':<{label_w}} " + " ".join(f"{h:>{cell_w}}  " for h in heads).rstrip())
        for c in shown:
            cells = []
            for v in ends:
                m = stats.get((*key, v, *c, test))
                apart = bool(apart_at(key, c, v)) if m else False
                noisy |= bool(m) and m[1] > NOISY_SE
                cells.append(f"{'-':>{cell_w}}  " if m is None else f"{cell(m, apart):>{cell_w + 2}}")
            lines.append((f"{curve_key(*c)[:label_w]:<{label_w}} " + " ".join(cells)).rstrip())
        for c in shown:
            if c in theory or not c[1]:
                continue
            pairs = [t for t in theory if t[1] == c[1]]
            if not pairs:
                no_theory.append((key, c))
            for t in pairs:
                judged = [(v, _apart(stats.get((*key, v, *c, test)), stats.get((*key, v, *t, test)))) for v in values]
                judged = [(v, a) for v, a in judged if a is not None]
                if judged or any((*key, v, *c, test) in stats and (*key, v, *t, test) in stats for v in values):
                    comparisons.append((key, c, t, values, judged))
    if noisy:
        lines += _wrap(f"! s.e. above {NOISY_SE}: mostly seed noise at this seed count (docs/learners.md#seed-noise)",
                       width)
    if not theory:
        lines += _wrap("No theory rows in this sweep: the learners only.", width)
    elif comparisons:
        lines += _wrap(f"*: more than {APART_SE:g} s.e. from a theory curve of the same prompt (zero-shot learners "
                       "are compared)", width)
        lines += _wrap(f"Against the theory of the same prompt, {test} test (apart: more than {APART_SE:g} s.e.):",
                       width)
        where = (lambda key: f" ({group_label(key)})") if len(groups) > 1 else (lambda key: "")
        several = {c[1] for c in theory if sum(t[1] == c[1] for t in theory) > 1}  # prompts with several theories
        agree = [f"{curve_key(*c)}" + (f" vs {curve_key(*t)}" if t[1] in several else "") + where(key)
                 for key, c, t, values, judged in comparisons if judged and not any(a for _, a in judged)]
        if agree:
            lines += _wrap(f"  within {APART_SE:g} s.e. at every value: " + ", ".join(agree), width)
        for key, c, t, values, judged in comparisons:
            apart = [v for v, a in judged if a]
            if apart:
                lines += _wrap(f"  {curve_key(*c)} apart from {curve_key(*t)}{where(key)} at {key[0]} = "
                               f"{_value_runs(values, apart)} ({len(apart)} of {len(judged)})", width)
            elif not judged:
                lines += _wrap(f"  {curve_key(*c)}{where(key)}: not judged (one seed, no s.e.)", width)
    elif theory:
        lines += _wrap("No zero-shot learner with a theory curve of its prompt: nothing compared.", width)
    if theory and no_theory:
        lines += _wrap("  no theory rows for " + ", ".join(dict.fromkeys(group_label(key) for key, _ in no_theory)),
                       width)
    for label, path in (("Full table (every test, learner and value)", table), ("Figure", figure)):
        if path:  # the path whole: on the label's line, or on its own line when that is too long
            lines += [f"{label}: {path}"] if len(label) + 2 + len(str(path)) <= width else [f"{label}:", f"  {path}"]
    return "\n".join(lines)


def _apart(learner: tuple | None, theory: tuple | None) -> bool | None:
    """Whether a learner's (mean, s.e., seeds) is more than APART_SE standard errors of the difference from a
    theory's; None when either is missing or both standard errors are 0 (nothing to judge by)."""
    if learner is None or theory is None:
        return None
    se = math.hypot(learner[1], theory[1])
    if se == 0.0:
        return None
    return abs(learner[0] - theory[0]) > APART_SE * se
