"""One matplotlib style for every figure: theory curves as lines, measured points with seed error bars.

Figures are drawn at double-column width (7.2 in) with 8-9 pt text, so they stay readable when
scaled to a single column. Learners and parameters get readable labels; the legend sits under the
panels and the one-line caption under the legend.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_save_figure  # noqa: E402
from .results import NOISY_SE, TESTS, curve_key, mean_se, summarise  # noqa: E402

STYLE = {
    "figure.dpi": 120, "savefig.dpi": 200, "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 9,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "lines.linewidth": 1.4,
    "lines.markersize": 4.5, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "legend.handlelength": 2.2,
}
LEARNER_STYLE = {  # colour, marker; theory learners are drawn as lines without markers
    "theory_mmcl": ("black", None), "bayes_core": ("grey", None),
    "mmcl_closed_form": ("tab:blue", "o"), "mmcl_linear_gd": ("tab:cyan", "x"),
    "mmcl_infonce_linear": ("tab:green", "s"), "mmcl_infonce_mlp": ("tab:olive", "^"),
    "sl_min_norm": ("tab:red", "o"), "sl_logistic": ("tab:orange", "s"), "sl_logistic_gd": ("tab:brown", "v"),
    "sl_mlp": ("tab:purple", "^"), "theory_infonce": ("tab:red", None),
}
LEARNER_LABEL = {
    "theory_mmcl": "MMCL theory (population)", "bayes_core": "Bayes, core only",
    "mmcl_closed_form": "MMCL closed form", "mmcl_linear_gd": "MMCL linear loss, GD",
    "mmcl_infonce_linear": "MMCL InfoNCE, linear", "mmcl_infonce_mlp": "MMCL InfoNCE, MLP",
    "sl_min_norm": "SL min-norm", "sl_logistic": "SL logistic (Adam)", "sl_logistic_gd": "SL logistic (GD)",
    "sl_mlp": "SL MLP", "theory_infonce": "InfoNCE population optimum",
}
PARAM_LABEL = {
    "r": "caption richness r", "sigma_core": r"core within-class s.d. $\sigma_{core}$",
    "sigma_spu": r"spurious s.d. $\sigma_{spu}$", "p": "train class-spurious agreement p",
    "beta": r"detail frequency $\beta$", "annotate": "detail annotation probability",
    "spurious_annotation": "spurious annotation probability", "n": "training sample size n",
    "sigma_xi": r"noise $\sigma_\xi$", "d": "dimension d", "temperature": r"InfoNCE temperature $\tau$",
    "steps": "training steps",
}
LOG_PARAMS = ("n", "temperature", "steps")  # swept over decades: log x axis
TEST_LABEL = {"aligned": "aligned test (q = 1)", "independent": "independent test", "flipped": "flipped test (q = 0)"}
_EXTRA_COLOURS = ["tab:brown", "tab:pink", "tab:gray", "darkgreen", "navy"]


PROMPT_LABEL = {"core": "core prompt", "class_mean": "class-mean prompt", "word": "digit-word prompt",
                "caption_mean": "caption-mean prompt", "class_centre": "class-centre prompt"}


def curve_label(learner: str, prompt: str = "", short: bool = False) -> str:
    """Legend / table label of one curve: the learner and, for zero-shot learners, its prompt."""
    if short:
        return curve_key(learner, prompt)
    return LEARNER_LABEL.get(learner, learner) + (f", {PROMPT_LABEL.get(prompt, prompt)}" if prompt else "")


def _curve_order(stats) -> list[tuple[str, str]]:
    present = list(dict.fromkeys(k[3:5] for k in stats))
    rank = {l: i for i, l in enumerate(LEARNER_STYLE)}
    return sorted(present, key=lambda c: (rank.get(c[0], len(rank)), c[1] == "class_mean"))


def _series_label(s: str) -> str:
    if not s:
        return ""
    name, _, value = s.partition("=")
    return f"{name} = {value}"


def plot_sweep(rows: list[dict], path, title: str, caption: str = "") -> None:
    """Accuracy against the swept parameter, one panel per test distribution.

    Theory learners (route 'theory') are lines; trained/closed-form learners are mean +- standard error
    over seeds. A second axis (series) is drawn with line styles; the class-mean prompt of a zero-shot
    learner with the next line style and hollow markers; several swept params get one row each. A mean whose
    standard error exceeds results.NOISY_SE is ringed in red (mostly seed noise at this seed count).
    """
    stats = summarise(rows)
    params = list(dict.fromkeys(k[0] for k in stats))
    series = sorted({k[1] for k in stats})
    curves = _curve_order(stats)
    dashes = ["-", "--", ":", "-."]
    extra = iter(_EXTRA_COLOURS)
    style = {l: LEARNER_STYLE.get(l) or (next(extra, "black"), "D") for l in dict.fromkeys(c[0] for c in curves)}
    with plt.rc_context(STYLE):
        panel_in, xlabel_in = 1.65, 0.5  # panel height; x tick labels + axis label under each row
        height = (panel_in + xlabel_in) * len(params)
        n_items = len({(k[1], k[3], k[4]) for k in stats})  # legend entries: (series, learner, prompt) with data
        longest = max((len(curve_label(*c)) + (14 if series != [""] else 0) for c in curves), default=10)
        ncol = max(1, min(n_items, 3 if longest <= 32 else 2))
        legend_rows = math.ceil(n_items / ncol)
        bottom_in = 0.12 + 0.17 * legend_rows + (0.2 if caption else 0.0)
        top_in = (0.3 if title else 0.05) + 0.25  # suptitle + panel titles
        fig, axes = plt.subplots(len(params), 3, figsize=(7.2, height + bottom_in + top_in), squeeze=False,
                                 sharey=True)
        handles = {}
        for i, param in enumerate(params):
            for j, test in enumerate(TESTS):
                ax = axes[i, j]
                for learner, prompt in curves:
                    colour, marker = style[learner]
                    second = prompt == "class_mean"
                    for s_idx, s in enumerate(series):
                        pts = sorted((k[2], v) for k, v in stats.items()
                                     if k[:2] == (param, s) and k[3:] == (learner, prompt, test))
                        if not pts:
                            continue
                        xs = [x for x, _ in pts]
                        ms = [v[0] for _, v in pts]
                        label = curve_label(learner, prompt) + (f" ({_series_label(s)})" if s else "")
                        ls = dashes[(s_idx + second) % len(dashes)]
                        if marker is None:
                            (h,) = ax.plot(xs, ms, color=colour, linestyle=ls, linewidth=2.0, alpha=0.85, zorder=2, label=label)
                        else:
                            h = ax.errorbar(xs, ms, yerr=[v[1] for _, v in pts], color=colour, marker=marker,
                                            linestyle=ls, linewidth=0.9, capsize=2, zorder=3, label=label,
                                            markerfacecolor="white" if (s_idx + second) % 2 else colour)
                            noisy = [(x, v[0]) for x, v in pts if v[1] > NOISY_SE]
                            if noisy:  # a mean that is mostly seed noise: ringed
                                ax.scatter([x for x, _ in noisy], [m for _, m in noisy], s=90, facecolors="none",
                                           edgecolors="red", linewidths=0.8, zorder=4)
                        handles.setdefault(label, h)
                if i == 0:
                    ax.set_title(TEST_LABEL.get(test, test))
                ax.set_xlabel(PARAM_LABEL.get(param, param))
                if param in LOG_PARAMS:
                    ax.set_xscale("log")
                ax.set_ylim(-0.03, 1.03)
            axes[i, 0].set_ylabel("accuracy")
        total = height + bottom_in + top_in
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=ncol, frameon=False,
                   bbox_to_anchor=(0.5, (0.22 if caption else 0.03) / total))
        if title:
            fig.suptitle(title, y=1 - 0.04 / total, va="top", fontsize=10, fontweight="bold")
        if caption:
            fig.text(0.5, 0.04 / total, caption, ha="center", va="bottom", fontsize=7.5, style="italic", wrap=True)
        fig.subplots_adjust(left=0.075, right=0.99, wspace=0.08, hspace=xlabel_in / panel_in,
                            top=1 - top_in / total, bottom=(bottom_in + xlabel_in) / total)
        atomic_save_figure(fig, path)
        plt.close(fig)


def plot_paper_mnist(rows: list[dict], path, title: str, caption: str = "", *, curves: dict, paper: dict) -> None:
    """The paper's App. G.1 experiment (sweep paper_mnist) beside its Fig. 2 and Fig. 5.

    Left, OOD (the paper's P*, shades uniform), and middle, ID (built like training): measured accuracy (%)
    against pi_core at pi_spu = 1 and against pi_spu at pi_core = 1, mean +- s.e. over seeds; SL as a
    horizontal band (mean +- s.e.); the paper's values as hollow markers on dotted lines and a dotted SL line.
    Right, when the rows carry accuracy against epoch ('curve'): OOD (solid) and the off-colour images (the
    flipped test, dashed) against epoch for MMCL at pi_core = 0 and 1 (pi_spu = 1) and for SL, mean +- s.e.

    The model's data come in with the call, so that this module imports no model (figures.plot_paper_mnist
    passes them): curves, per test ('independent' and 'aligned'), the rows as Fig. 2's curves
    ({'pi_core': {x: {seed: accuracy}}, 'pi_spu': {...}, 'supervised': {seed: accuracy}}, paper_mnist.fig2_curves);
    paper, per test, the paper's values in % ({'pi_core': {x: %}, 'pi_spu': {x: %}, 'supervised': %};
    paper_mnist.PAPER_FIG2 for 'independent', PAPER_FIG5 for 'aligned').
    """
    import numpy as np

    curve_style = {"pi_core": ("tab:blue", "o", r"MMCL, $\pi_{spu}$ = 1, varying $\pi_{core}$"),
                   "pi_spu": ("tab:green", "s", r"MMCL, $\pi_{core}$ = 1, varying $\pi_{spu}$")}
    panels = (("independent", "OOD test (P*: shades uniform)", paper["independent"], "Fig. 2"),
              ("aligned", "ID test (built like training)", paper["aligned"], "Fig. 5"))
    n_train, seeds = sorted({int(r["n"]) for r in rows}), len({int(r["seed"]) for r in rows})
    ours = f"Ours: n_train {', '.join(map(str, n_train))}, {seeds} seed{'s' * (seeds > 1)}."
    caption = f"{caption} {ours}".strip()
    with_curves = any(r.get("curve") for r in rows)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3 if with_curves else 2, figsize=(7.2 if not with_curves else 9.6, 4.1))
        for ax, (test, panel_title, reported, figure) in zip(axes, panels):
            measured = curves[test]
            for name, (colour, marker, label) in curve_style.items():
                pts = sorted(measured[name].items())
                if pts:
                    stats = [mean_se(100 * np.array(list(by_seed.values()))) for _, by_seed in pts]
                    ax.errorbar([x for x, _ in pts], [m for m, _ in stats], yerr=[s for _, s in stats], color=colour,
                                marker=marker, capsize=2, linewidth=1.2, label=f"{label} (ours)")
                values = sorted(reported[name].items())
                ax.plot([x for x, _ in values], [y for _, y in values], color=colour, marker=marker, linestyle=":",
                        markerfacecolor="white", linewidth=1.0, label=f"{label} (paper, Fig. 2 / 5)")
            if measured["supervised"]:
                m, se = mean_se(100 * np.array(list(measured["supervised"].values())))
                ax.axhspan(m - se, m + se, color="tab:red", alpha=0.2, linewidth=0)
                ax.axhline(m, color="tab:red", linestyle="--", linewidth=1.2, label="SL (ours, mean +- s.e.)")
            ax.axhline(reported["supervised"], color="tab:red", linestyle=":", linewidth=1.0, label="SL (paper, Fig. 2 / 5)")
            ax.set_title(f"{panel_title}; paper: {figure}")
            ax.set_xlabel(r"$\pi_{core}$ or $\pi_{spu}$")
            ax.set_xlim(-0.05, 1.05)
        if with_curves:
            ax = axes[2]
            series = (("mmcl_lenet", "variant=pi_spu_1", 0.0, "tab:purple", r"MMCL $\pi_{core}$ = 0"),
                      ("mmcl_lenet", "variant=pi_spu_1", 1.0, "tab:blue", r"MMCL $\pi_{core}$ = 1"),
                      ("sl_lenet", "variant=sl", None, "tab:red", "SL"))
            for learner, variant, value, colour, label in series:
                for test, style in (("independent", "-"), ("flipped", "--")):
                    by_epoch: dict = {}
                    for r in rows:
                        if (r["learner"], r["series"], r["test"]) == (learner, variant, test) and (
                                value is None or float(r["value"]) == value):
                            for epoch, acc in r.get("curve", []):
                                by_epoch.setdefault(int(epoch), []).append(100 * float(acc))
                    if by_epoch:
                        epochs = sorted(by_epoch)
                        stats = [mean_se(by_epoch[e]) for e in epochs]
                        ax.errorbar(epochs, [m for m, _ in stats], yerr=[s for _, s in stats], color=colour,
                                    linestyle=style, capsize=2, linewidth=1.1,
                                    label=f"{label}, {'OOD' if test == 'independent' else 'off-colour'}")
            ax.set_title("OOD (solid) and off-colour images (dashed)")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=6.5, frameon=False, loc="best")
        axes[0].set_ylabel("accuracy (%)")
        handles, labels = axes[0].get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: ("paper" in labels[i], "SL" in labels[i]))  # ours first
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
        fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 0.07))
        if title:
            fig.suptitle(title, fontsize=10, fontweight="bold")
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7.5, style="italic", wrap=True)
        fig.subplots_adjust(left=0.07, right=0.99, wspace=0.25, top=0.88, bottom=0.42)
        atomic_save_figure(fig, path)
        plt.close(fig)
