"""One matplotlib style for every figure: theory curves as lines, measured points with seed error bars."""

from __future__ import annotations

import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "figure.dpi": 120, "savefig.dpi": 150, "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
    "legend.fontsize": 7, "lines.linewidth": 1.3, "lines.markersize": 4, "axes.grid": True, "grid.alpha": 0.3,
}
LEARNER_STYLE = {  # colour, marker; theory learners are drawn as lines without markers
    "theory_mmcl": ("black", None), "bayes_core": ("grey", None),
    "mmcl_closed_form": ("tab:blue", "o"), "mmcl_linear_gd": ("tab:cyan", "x"),
    "mmcl_infonce_linear": ("tab:green", "s"), "mmcl_infonce_mlp": ("tab:olive", "^"),
    "sl_min_norm": ("tab:red", "o"), "sl_logistic": ("tab:orange", "s"), "sl_mlp": ("tab:purple", "^"),
}
TESTS = ("aligned", "independent", "flipped")


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    """(param, series, value, learner, test) -> (mean, standard error, number of seeds)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["param"], r.get("series", ""), float(r["value"]), r["learner"], r["test"])].append(float(r["accuracy"]))
    return {k: (*mean_and_se(v), len(v)) for k, v in groups.items()}


def plot_sweep(rows: list[dict], path, title: str, caption: str = "") -> None:
    """Accuracy against the swept parameter, one panel per test distribution.

    Theory learners (seed -1) are lines; trained/closed-form learners are mean +- standard error
    over seeds. A second axis (series) is drawn with line styles; several swept params get one row each.
    """
    stats = summarise(rows)
    params = sorted({k[0] for k in stats})
    series = sorted({k[1] for k in stats})
    dashes = ["-", "--", ":", "-."]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(params), 3, figsize=(7.0, 2.3 * len(params) + 0.4), squeeze=False, sharey=True)
        for i, param in enumerate(params):
            for j, test in enumerate(TESTS):
                ax = axes[i, j]
                for learner in LEARNER_STYLE:
                    colour, marker = LEARNER_STYLE[learner]
                    for s_idx, s in enumerate(series):
                        pts = sorted((k[2], v) for k, v in stats.items()
                                     if k[0] == param and k[1] == s and k[3] == learner and k[4] == test)
                        if not pts:
                            continue
                        xs = [x for x, _ in pts]
                        ms = [v[0] for _, v in pts]
                        label = learner + (f" ({s})" if s else "")
                        ls = dashes[s_idx % len(dashes)]
                        if marker is None:
                            ax.plot(xs, ms, color=colour, linestyle=ls, label=label)
                        else:
                            ax.errorbar(xs, ms, yerr=[v[1] for _, v in pts], color=colour, marker=marker,
                                        linestyle=ls, linewidth=0.8, capsize=2, label=label)
                ax.set_title(f"{test} test")
                ax.set_xlabel(param)
                ax.set_ylim(-0.02, 1.02)
            axes[i, 0].set_ylabel("accuracy")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
        fig.suptitle(title)
        if caption:
            fig.text(0.5, 1.0 - 0.02, caption, ha="center", va="top", fontsize=7, style="italic")
        n_legend_rows = math.ceil(len(labels) / 4)
        fig.tight_layout(rect=(0, 0.04 * n_legend_rows + 0.02, 1, 0.95))
        fig.savefig(path)
        plt.close(fig)
