"""`python -m mmcl_theory.figures [--from DIR] [--quick] [--only NAMES]`: regenerate every figure into figures/.

For each named sweep (docs/README.md#sweeps) it runs the sweep afresh (resumable, in runs/figures[-quick]/NAME)
or, with --from DIR, reads DIR/NAME/results.json (or DIR/NAME-quick/results.json) as written by
`python -m mmcl_theory.sweep NAME [--quick] --out DIR/NAME[-quick]` (the sweep's default --out is runs/). It then writes figures/NAME.png (theory curves, measured points with seed error
bars, one panel per test distribution, the shared style of plotting.py) and figures/NAME.csv (the
rows it was drawn from, in the results contract). The real-data OOD-vs-ID figure is drawn by the
real-data track's plotting function (mmcl_theory.clip.robustness.plot_ood_vs_id) when its series CSV
exists, and skipped with a note otherwise. figures/README.md lists every figure with its caption.
"""

from __future__ import annotations

import csv
import datetime
import glob
import json
import math
import os
import sys
import time
from pathlib import Path

from . import __version__
from .config import ArgumentParser, path_type
from .io import atomic_write_csv, atomic_write_text
from .runtime import error_exit

ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "figures"

# name -> (title, one-line caption for figures/README.md, settings line printed under the figure).
SWEEP_FIGURES = {
    "caption_richness": (
        "Caption richness (M1)",
        "Richer captions (per-image core detail annotated with prob. r) raise closed-form MMCL's flipped-test "
        "accuracy from 0.56 to 0.72, 0.01-0.02 above the population curve (0.54 -> 0.71); SL min-norm stays near 0. "
        "M1 defaults.",
        "M1 defaults: sigma_core 1, sigma_spu 0.05, p 0.95, n 200, d 2000"),
    "core_variance": (
        "Within-class core variance (M1)",
        "As the core's within-class spread sigma_core grows, SL's flipped accuracy collapses to 0 (it takes the "
        "low-variance spurious feature) while MMCL with rich captions stays near 0.7, on its closed form.",
        "M1, r = 1, other parameters at the defaults (n 200, d 2000)"),
    "spurious_strength": (
        "Spurious correlation strength (M1)",
        "As the training class-spurious agreement p grows, SL's flipped accuracy falls to 0-0.11 while MMCL (r=1) "
        "degrades from 0.84 to 0.69 on its population curve, closed-form MMCL with it (0.85 -> 0.70).",
        "M1, r = 1, other parameters at the defaults (n 200, d 2000)"),
    "feature_sharing": (
        "Inter-class feature sharing (M2)",
        "Other classes' objects appearing as details (frequency beta): annotating them (dashed) raises MMCL's "
        "shifted accuracy, leaving them out (solid) lowers it; SL fails. K=5, n=500.",
        "M2: K 5, p 0.9, sigma_core 1, n 500, d 3000; solid: annotate 0, dashed: annotate 1"),
    "detail_types": (
        "Detail types (M2)",
        "Annotation probability of each detail type, others at 0.5: core detail (r) and other-class details "
        "(annotate) help; spurious/background words leave the theory and closed-form MMCL unchanged. K=5, beta=0.4.",
        "M2: K 5, sigma_core 1, beta 0.4, n 500, d 3000; one row per detail type"),
    "sample_size": (
        "Sample size (M1)",
        "Closed-form MMCL sits on its population curve from n=20 up; SL min-norm stays near 0 on the flipped test "
        "until n approaches d=2000, where min-norm is no longer max-margin. r=1.",
        "M1, r = 1, d 2000, other parameters at the defaults"),
    "sagawa_toy": (
        "Sagawa et al.'s toy setting (M1)",
        "Sagawa et al. (2020)'s toy data (n 3000, p 0.9, spurious variance 0.01, noise features of variance 1/d): "
        "as d grows past n the min-norm SL classifier's flipped (minority-group) accuracy falls, while MMCL with "
        "rich captions stays on its closed form.",
        "M1 as sagawa_toy: sigma_core 1, sigma_spu 0.1, p 0.9, sigma_xi 1, n 3000, r 1; 3 seeds"),
    "temperature": (
        "InfoNCE temperature (M1)",
        "Where it cannot memorise noise (d 10, same population), trained linear InfoNCE with the core prompt follows "
        "the population InfoNCE optimum in flipped accuracy from tau 0.01 to 30 (0.969-0.976 against 0.963-0.973), "
        "with aligned accuracy 0.015-0.035 below it; at tau 100 it is 0.027 above / 0.086 below, as much as the "
        "prediction itself moves between population samples (0.028 / 0.085); far from the linear-loss theory (0.709). "
        "At d 2000 it memorises (5000 steps: flipped 0.92-0.98, aligned 0.45-0.67), and the 200-step default is a "
        "transient that leans to the linear theory for tau >= 30. The prediction drawn at tau 1000 (population sample "
        "of seed 0, near the linear theory) is collapsed, so undefined, in 3 of 6 samples (docs/temperature.md "
        "sections 6.4, 6.6, 8).",
        "M1, r = 1, n 200; linear InfoNCE (embedding dim 8, full-batch Adam, lr 0.01): 200 or 5000 steps at d 2000, "
        "5000 steps at d 10 with sigma_xi^2/d = 1/2000 as at d 2000 (the same population); log tau axis"),
    "digits": (
        "Coloured digits (M3, semi-synthetic)",
        "sklearn digits under a calibrated tint where same-backbone SL fails (flipped 0.31-0.32): captions whose "
        "per-image detail weights the class word lift closed-form MMCL's flipped accuracy with r as its exact "
        "expectation predicts (0.26 -> 0.38); trained linear InfoNCE rises more (0.35 -> 0.56, aligned falls to "
        "0.74); the InfoNCE MLP barely moves (0.30 -> 0.33); shuffled details and class-agnostic tokens stay flat.",
        "sklearn digits, tint 0.5, sigma 0.01, p 0.99, kappa 2, n 1200, 5 seeds; one line style per variant"),
    "digits_mnist": (
        "Coloured MNIST digits (M3, semi-synthetic)",
        "The same on 10k real MNIST test images (n 3000): closed form 0.10 -> 0.17 with its exact expectation, "
        "below SL (0.17-0.29); linear InfoNCE 0.23 -> 0.51 (aligned 0.99 -> 0.68); InfoNCE MLP 0.12 -> 0.33.",
        "MNIST test images, tint 0.5, sigma 0.01, p 0.99, kappa 2, n 3000, 5 seeds; one line style per variant"),
    "digits_calibration": (
        "Digits premise: where same-backbone SL fails",
        "SL (MLP, logistic, min-norm) at p = 0.99 across the colour's strength: a background tint of strength "
        ">= 0.5 drives SL's flipped accuracy below 0.5 with aligned >= 0.99 (at 0.5: MLP 0.33, logistic 0.33, "
        "min-norm 0.30; later at higher colour variance); a corner patch never does.",
        "sklearn digits, p 0.99, sigma 0.01 (and 0.1), n 1200, 3 seeds; one line style per variant"),
    "paper_mnist": (
        "The paper's semi-synthetic MNIST experiment (App. G.1, Fig. 2)",
        "At the paper's scale (60,000 training images, 100 MMCL epochs) Fig. 2 is reproduced within 3 points "
        "except at pi_core 0.25 (+4.5) and for SL: OOD 61.4 -> 76.9, 77.4, 76.8, 75.8% over pi_core 0 -> 1 (paper "
        "58.9 -> 72.4, 75.0, 75.9, 76.2); 71.4, 75.8% at pi_spu 0, 0.5 (paper 72.2, 75.4). MMCL at pi_core 1 beats "
        "SL by 13.6 +- 1.0 points; SL reaches 62.1% (paper 69.0), its off-colour accuracy still rising at epoch 40. "
        "One of 21 MMCL runs diverged (pi_spu 0, seed 1, epoch 6) and is left out. Paper's Fig. 2 / 5 values "
        "dotted, hollow.",
        "60,000 MNIST training images, the 10,000 test images recoloured per test; MMCL 100 epochs, SL 40; momentum "
        "SGD as the paper; Fig. 4 shades, white digit, temperature 1; all 8 points, 3 seeds (2 at pi_spu 0: one diverged)"),
    "paper_mnist_choices": (
        "The paper's MNIST experiment: the choices it leaves open",
        "At 3 epochs (1,404 steps) no open choice moves OOD far from the defaults: every variant within 2 points at "
        "pi_core 0 and 1 (largest: a learned temperature +1.9 +- 0.9 at pi_core 0, pure channels +1.4 +- 0.6 at "
        "pi_core 1); SL follows the shade under every image choice (off-colour 0%). Redrawing colours each epoch has "
        "no measurable effect on MMCL's off-colour accuracy at 3 seeds (pi_core 0: 16 +- 9% against 22 +- 5%)",
        "60,000 MNIST training images, 3 MMCL and 3 SL epochs (a reduced budget), 3 seeds; one variant per choice, "
        "the rest at the defaults (Fig. 4 shades, white digit, drawn once, temperature 1)"),
}
CUSTOM_PLOTS: dict = {}  # figure -> plotting function (default plotting.plot_sweep); filled below
REAL_DATA_NAME = "real_data_ood_vs_id"
MECHANISMS_NAME = "real_data_mechanisms"  # drawn by clip.robustness.mechanisms from its committed CSV


TEMPERATURE_SERIES = {  # series of mmcl_theory/sweeps/temperature.toml -> (legend label, colour, marker)
    "variant=steps200": ("InfoNCE, 200 steps, d 2000", "tab:olive", "^"),
    "variant=steps5000": ("InfoNCE, 5000 steps, d 2000", "tab:green", "s"),
    "variant=d10": ("InfoNCE, 5000 steps, d 10", "tab:blue", "o"),
}


def plot_temperature(rows: list[dict], path, title: str, caption: str = "") -> None:
    """The temperature figure: one row per prompt (core, class-mean), one panel per test; the two theory lines
    (linear-loss theory, population InfoNCE optimum) and trained linear InfoNCE per series, mean +- s.e."""
    import matplotlib.pyplot as plt

    from .datamodel import TESTS
    from .io import atomic_save_figure
    from .plotting import PROMPT_LABEL, STYLE, TEST_LABEL
    from .results import summarise

    stats = summarise(rows)
    theory = {"theory_mmcl": ("linear-loss theory (population)", "black", "-"),
              "theory_infonce": ("InfoNCE population optimum (batch n)", "tab:red", "--")}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, 3, figsize=(7.2, 5.6), sharey=True, sharex=True)
        handles = {}
        for i, prompt in enumerate(("core", "class_mean")):
            for j, test in enumerate(TESTS):
                ax = axes[i, j]
                for (learner, series, prm, tst) in sorted({(k[3], k[1], k[4], k[5]) for k in stats}):
                    if (prm, tst) != (prompt, test):
                        continue
                    pts = sorted((k[2], v) for k, v in stats.items() if (k[3], k[1], k[4], k[5]) == (learner, series, prm, tst))
                    xs, ms, ses = [x for x, _ in pts], [v[0] for _, v in pts], [v[1] for _, v in pts]
                    if learner in theory:
                        label, colour, ls = theory[learner]
                        (h,) = ax.plot(xs, ms, color=colour, linestyle=ls, linewidth=2.0, alpha=0.85, zorder=2)
                    else:
                        label, colour, marker = TEMPERATURE_SERIES.get(series, (series or learner, "grey", "D"))
                        h = ax.errorbar(xs, ms, yerr=ses, color=colour, marker=marker, linewidth=0.9, capsize=2, zorder=3)
                    handles.setdefault(label, h)
                if i == 0:
                    ax.set_title(TEST_LABEL.get(test, test))
                if i == 1:
                    ax.set_xlabel(r"InfoNCE temperature $\tau$")
                ax.set_xscale("log")
                ax.set_ylim(-0.03, 1.03)
            axes[i, 0].set_ylabel(f"accuracy, {PROMPT_LABEL.get(prompt, prompt)}")
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=2, frameon=False,
                   bbox_to_anchor=(0.5, 0.07))
        if title:
            fig.suptitle(title, fontsize=10, fontweight="bold")
        if caption:
            fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=7.5, style="italic", wrap=True)
        fig.subplots_adjust(left=0.09, right=0.99, wspace=0.08, hspace=0.15, top=0.9, bottom=0.27)
        atomic_save_figure(fig, path)
        plt.close(fig)


CUSTOM_PLOTS["temperature"] = plot_temperature


def plot_paper_mnist(rows: list[dict], path, title: str, caption: str = "") -> None:
    """The paper_mnist figure: plotting.plot_paper_mnist given the model's data, the rows as Fig. 2's curves
    (paper_mnist.fig2_curves) and the paper's values (paper_mnist.PAPER_FIG2, PAPER_FIG5)."""
    from .paper_mnist import PAPER_FIG2, PAPER_FIG5, fig2_curves
    from .plotting import plot_paper_mnist as draw

    draw(rows, path, title, caption, curves={test: fig2_curves(rows, test) for test in ("independent", "aligned")},
         paper={"independent": PAPER_FIG2, "aligned": PAPER_FIG5})


CUSTOM_PLOTS["paper_mnist"] = plot_paper_mnist


def available() -> list[str]:
    """The sweep figures whose definitions exist (digits only once mmcl_theory/sweeps/digits.toml does)."""
    from .sweep import available_sweeps

    have = set(available_sweeps())
    return [n for n in SWEEP_FIGURES if n in have]


def fresh_rows(name: str, quick: bool, runs: Path) -> tuple[list[dict], dict]:
    """Run (or resume) sweep `name` into runs/NAME; returns (rows, meta). meta["provenance"]: the source hash the
    rows were computed with (provenance.begin_sweep_run refuses a folder of points computed with other code)."""
    from . import provenance
    from .sweep import make_plan, run_sweep, write_results

    plan = make_plan(name, quick)
    out = runs / name
    started = provenance.begin_sweep_run(name, out)
    start = time.perf_counter()
    rows = run_sweep(plan, out)
    seconds = time.perf_counter() - start
    write_results(rows, plan, out, seconds)
    return rows, {"seeds": len(plan.seeds), "seconds": seconds, "source": str(out / "results.json"),
                  "learners": list(plan.learners), "provenance": provenance.end_sweep_run(name, started)}


def _number(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _rows_problem(rows, name: str) -> str | None:
    """What makes `rows` unusable as the stored rows of sweep `name` (the results contract, results.CONTRACT: the
    keys drawn from, each of its kind, the accuracy and any curve point a number in [0, 1]), or None."""
    from .results import TESTS

    if not isinstance(rows, list) or not rows:
        return "rows is not a non-empty list"
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            return f"row {i} is not a JSON object"
        missing = [k for k in ("sweep", "param", "value", "learner", "test", "seed", "n", "accuracy") if k not in r]
        if missing:
            return f"row {i} lacks {', '.join(missing)}"
        if r["sweep"] != name:
            return f"row {i} is of sweep {r['sweep']!r}"
        bad = [k for k in ("param", "learner", "series", "prompt", "route") if not isinstance(r.get(k, ""), str)]
        bad += [k for k in ("seed", "n") if type(r[k]) is not int]
        bad += ["value"] * (not _number(r["value"]))
        if bad:
            return f"row {i} has {', '.join(bad)} of the wrong kind"
        if r["test"] not in TESTS:
            return f"row {i}: test {r['test']!r} is not one of {', '.join(TESTS)}"
        if not (_number(r["accuracy"]) and 0 <= r["accuracy"] <= 1):
            return f"row {i}: accuracy {r['accuracy']!r} is not a number in [0, 1]"
        curve = r.get("curve", [])
        if not isinstance(curve, list) or not all(isinstance(p, list) and len(p) == 2 and _number(p[0])
                                                  and _number(p[1]) and 0 <= p[1] <= 1 for p in curve):
            return f"row {i}: curve is not a list of [epoch, accuracy in [0, 1]] pairs"
    return None


def stored_rows(name: str, directory: Path) -> tuple[list[dict], dict]:
    """Rows from DIR/NAME/results.json (written by the sweep CLI)."""
    found = [directory / d / "results.json" for d in (name, f"{name}-quick") if (directory / d / "results.json").is_file()]
    if not found:
        raise FileNotFoundError(f"--from {directory}: no {name}/results.json or {name}-quick/results.json (run "
                                f"`python -m mmcl_theory.sweep {name} --out {directory / name}`)")
    path = found[0]
    try:
        meta = json.loads(path.read_text())
        rows = meta["rows"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a sweep results.json (no rows); rerun the sweep") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    problem = _rows_problem(rows, name)
    if not problem and not isinstance(meta.get("config", {}), dict):
        problem = "its config is not a JSON object"
    if problem:
        raise ValueError(f"{path} is not a results.json of sweep {name}: {problem}; rerun the sweep")
    from .provenance import stored_part

    return rows, {"seeds": len(meta.get("config", {}).get("seeds", [])) or len({r["seed"] for r in rows if r.get("route") != "theory"}),
                  "seconds": meta.get("seconds"), "source": str(path), "learners": sorted({r["learner"] for r in rows}),
                  "provenance": stored_part(path)}


def write_csv(rows: list[dict], path: Path) -> None:
    from .results import CONTRACT

    atomic_write_csv(path, [{k: (f"{float(r[k]):.6g}" if k == "accuracy" else r.get(k, "")) for k in CONTRACT}
                            for r in rows], CONTRACT)


CURVE_COLUMNS = ("series", "value", "learner", "prompt", "test", "seed", "epoch", "accuracy")


def write_curve_csv(rows: list[dict], path: Path) -> None:
    """Accuracy against epoch, one line per (row, epoch) of the rows' 'curve' lists (paper_mnist's curve_every)."""
    atomic_write_csv(path, [{**{k: r[k] for k in CURVE_COLUMNS[:6]}, "epoch": int(epoch), "accuracy": f"{acc:.6g}"}
                            for r in rows for epoch, acc in r.get("curve", [])], CURVE_COLUMNS)


def draw_sweep(name: str, rows: list[dict], out_dir: Path, seeds: int, quick: bool = False) -> Path:
    from . import plotting

    title, _, settings = SWEEP_FIGURES[name]
    has_theory = any(r.get("route") == "theory" for r in rows)
    note = (f"{settings}{' (quick variant)' if quick else ''}. Points: mean +- s.e. over {seeds} seeds"
            + ("; lines: theory." if has_theory else "; no theory curve applies."))
    png = out_dir / f"{name}.png"
    plot = CUSTOM_PLOTS.get(name, "plot_sweep")
    (plot if callable(plot) else getattr(plotting, plot))(rows, png, title, note)
    write_csv(rows, out_dir / f"{name}.csv")
    if any(r.get("curve") for r in rows):
        write_curve_csv(rows, out_dir / f"{name}_epochs.csv")
    return png


# ------------------------------------------------------------------ real-data figure


def find_real_data_series() -> Path | None:
    """A series CSV (columns series, step, id_acc, ood_acc) from the real-data track, if one exists."""
    candidates = sorted(glob.glob(str(ROOT / "figures" / "real_data_*.csv"))) + \
        sorted(glob.glob(str(ROOT / "real_data" / "results" / "**" / "*.csv"), recursive=True))
    for c in candidates:
        with open(c, newline="") as f:
            header = next(csv.reader(f), [])
        if {"series", "step", "id_acc", "ood_acc"} <= set(header):
            return Path(c)
    return None


def draw_real_data(out_dir: Path) -> tuple[Path | None, str]:
    """Draw the OOD-vs-ID figure with the real-data track's own function; (path or None, note)."""
    try:
        from .clip import robustness
    except ImportError as e:
        return None, f"skipped: mmcl_theory.clip.robustness cannot be imported ({e})"
    if not hasattr(robustness, "plot_ood_vs_id"):
        return None, "skipped: mmcl_theory.clip.robustness has no plot_ood_vs_id"
    src = find_real_data_series()
    if src is None:
        return None, ("skipped: no real-data series CSV yet (figures/real_data_*.csv or real_data/results/**/*.csv "
                      "with columns series, step, id_acc, ood_acc); run real_data/tiny_imagenet_experiment.py")
    png = out_dir / f"{REAL_DATA_NAME}.png"
    if out_dir.resolve() == FIGURES_DIR.resolve() and png.is_file() and png.stat().st_mtime >= src.stat().st_mtime:
        return png, (f"kept: {png.name} is newer than {src.relative_to(ROOT)} (drawn by the real-data track with its "
                     "own labels; delete it to redraw)")
    series = robustness.read_series_csv(src)
    baseline = [s for s in series if "label" in s.name.lower()] or series
    report = robustness.series_effective_robustness(series, [s.name for s in baseline])
    fit = robustness.LinearFit(**report["baseline_fit"])
    robustness.plot_ood_vs_id(png, series, baseline_fit=fit,
                              baseline_label=f"trend over {'+'.join(s.name for s in baseline)} checkpoints",
                              title="Real data: OOD vs ID, caption vs label training")
    return png, f"drawn from {src.relative_to(ROOT)}"


# ------------------------------------------------------------------ README


def write_readme(out_dir: Path, entries: list[dict], command: str) -> None:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Figures", "",
             f"Regenerated by `{command}` (mmcl-theory {__version__}, {date}). Every sweep figure has the CSV it "
             "was drawn from beside it (columns: sweep, model, param, value, series, learner, prompt, test, seed, "
             "n, accuracy, route; theory rows have route 'theory'). Panels: aligned / independent / flipped test; lines are the "
             "population theory (and the core-only Bayes accuracy), points are the mean +- standard error over "
             "seeds. Sources: the curves are this package's derivations for its models M1/M2 (docs/theory.md), "
             "not numbers from the paper (the paper's own values appear only where a figure says 'paper'). The InfoNCE learners are "
             "shown as measured: in M1 with rich captions they weight the spurious feature negatively (aligned "
             "accuracy drops, flipped rises), which the linear-loss theory does not describe.", ""]
    for e in entries:
        if e.get("png"):
            lines += [f"## {e['title']}", "", f"![{e['name']}]({e['png']})", "", f"*{e['caption']}*", "",
                      f"Data: [{e['csv']}]({e['csv']}); {e['note']}", ""]
        else:
            lines += [f"## {e['title']}", "", f"Not drawn: {e['note']}", ""]
    atomic_write_text(out_dir / "README.md", "\n".join(lines))


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see sweep.main: jaxlib 0.9's false cache errors
    ap = ArgumentParser(prog="python -m mmcl_theory.figures", description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="from_dir", type=path_type("--from"),
                    help="read DIR/NAME/results.json instead of running the sweeps")
    ap.add_argument("--quick", action="store_true", help="run the sweeps' quick variants (fresh runs only)")
    ap.add_argument("--only", help="comma-separated figure names (default: all available)")
    ap.add_argument("--quick-for", default="", metavar="NAMES",
                    help="comma-separated figures to run in their quick variant (the others full); noted in README")
    ap.add_argument("--out", type=path_type("--out"), default=FIGURES_DIR, help="output folder (default figures/)")
    ap.add_argument("--runs", type=path_type("--runs"), help="where fresh sweeps run (default runs/figures[-quick])")
    args = ap.parse_args(argv)
    names = available() + [REAL_DATA_NAME, MECHANISMS_NAME]
    chosen = (list(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip())) if args.only is not None
              else names)
    if not chosen:  # '' would otherwise run every sweep
        return error_exit(f"--only {args.only!r} names no figure: comma-separated names from {', '.join(names)}")
    unknown = [n for n in chosen if n not in SWEEP_FIGURES and n not in (REAL_DATA_NAME, MECHANISMS_NAME)]
    if unknown:
        return error_exit(f"unknown figure(s) {', '.join(unknown)}: known {', '.join(names)}")
    quick_for = {n.strip() for n in args.quick_for.split(",") if n.strip()}
    if quick_for - set(SWEEP_FIGURES):
        return error_exit(f"--quick-for: unknown sweep figure(s) {', '.join(sorted(quick_for - set(SWEEP_FIGURES)))}: "
                          f"known {', '.join(SWEEP_FIGURES)}")
    if args.from_dir and not args.from_dir.is_dir():
        return error_exit(f"--from {args.from_dir} is not a folder of sweep results")
    from .runtime import setup_jax

    setup_jax("cpu")
    out_dir = args.out
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return error_exit(f"cannot write to --out {out_dir}: {e.strerror or e}")
    runs = args.runs or Path("runs") / ("figures-quick" if args.quick else "figures")
    entries, failed = [], []
    from . import provenance
    from .io import portable_argument

    command = " ".join(["python -m mmcl_theory.figures", *map(portable_argument, map(str, argv if argv is not None
                                                                                   else sys.argv[1:]))])
    try:  # a runs folder of points computed with other code is refused before anything runs
        for name in ([] if args.from_dir else [n for n in chosen if n in available()]):
            quick = args.quick or name in quick_for
            folder = runs.with_name(runs.name + "-quick") if quick and not args.quick else runs
            provenance.begin_sweep_run(name, folder / name, write=False)
    except provenance.ProvenanceError as e:
        return error_exit(e)
    for name in chosen:
        if name == MECHANISMS_NAME:
            src = FIGURES_DIR / f"{MECHANISMS_NAME}.csv"
            title = "Real images: the two mechanisms (coarse vs coarse + fine captions; mosaics)"
            if not src.is_file():
                entries.append({"name": name, "title": title, "png": None,
                                "note": "no figures/real_data_mechanisms.csv: run real_data/mechanisms_experiment.py"})
                continue
            from .clip.robustness.mechanisms import figure_from_csv

            figure_from_csv(src, out_dir / f"{name}.png")
            entries.append({"name": name, "title": title, "png": f"{name}.png", "csv": os.path.relpath(src, out_dir),
                            "caption": "OOD against ID accuracy per arm, with each baseline arm's trend "
                                       "(real_data/README.md); CPU setting, 2-3 seeds per arm.",
                            "note": "drawn from the committed CSV by mmcl_theory/clip/robustness/mechanisms.py"})
            continue
        if name == REAL_DATA_NAME:
            png, note = draw_real_data(out_dir)
            print(f"[figures] {name}: {note}", file=sys.stderr)
            entries.append({"name": name, "title": "Real data: OOD vs ID (caption vs label training)",
                            "png": png.name if png else None,
                            "csv": (os.path.relpath(find_real_data_series(), out_dir) if png else None),
                            "caption": "OOD accuracy (average over shifts) against ID accuracy, logit axes: "
                                       "caption-trained vs label-trained checkpoints, with the label trend.",
                            "note": note})
            continue
        if name not in available():
            entries.append({"name": name, "title": SWEEP_FIGURES[name][0], "png": None,
                            "note": f"no sweep definition mmcl_theory/sweeps/{name}.toml"})
            continue
        print(f"[figures] {name} ...", file=sys.stderr, flush=True)
        try:
            quick = args.quick or name in quick_for
            rows, meta = (stored_rows(name, args.from_dir) if args.from_dir else
                          fresh_rows(name, quick, runs.with_name(runs.name + "-quick") if quick and not args.quick
                                     else runs))
        except (FileNotFoundError, ValueError) as e:
            print(f"[figures] {name}: {e}", file=sys.stderr)
            failed.append(name)
            entries.append({"name": name, "title": SWEEP_FIGURES[name][0], "png": None, "note": str(e)})
            continue
        png = draw_sweep(name, rows, out_dir, meta["seeds"], quick and not args.from_dir)
        for csv_name in (f"{name}.csv", f"{name}_epochs.csv"):  # the record beside each CSV this run wrote
            if (out_dir / csv_name).is_file() and (csv_name == f"{name}.csv" or any(r.get("curve") for r in rows)):
                provenance.stamp_figure(name, out_dir / csv_name, command, meta["provenance"],
                                        "QUICK variant" if quick and not args.from_dir else "")
        note = (("QUICK variant of the sweep (fewer values and seeds, shorter training); " if quick and not args.from_dir
                 else "") + f"{meta['seeds']} seeds, learners {', '.join(meta['learners'])}; "
                + (f"from stored results {meta['source']}" if args.from_dir else
                   f"run by this command in {Path(meta['source']).parent} (resumable: finished points are reused)")
                + ".")
        entries.append({"name": name, "title": SWEEP_FIGURES[name][0], "png": png.name, "csv": f"{name}.csv",
                        "caption": SWEEP_FIGURES[name][1], "note": note})
        print(f"[figures] {name}: wrote {png} and {name}.csv", file=sys.stderr)
    if set(chosen) == set(names):  # the README lists every figure; a partial run leaves it alone
        cmd = "python -m mmcl_theory.figures" + (f" --from {args.from_dir}" if args.from_dir else "") + \
              (" --quick" if args.quick else "") + (f" --quick-for {args.quick_for}" if quick_for else "")
        write_readme(out_dir, entries, cmd)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
