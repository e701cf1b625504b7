"""`python -m mmcl_theory.digits_runs NAME [--quick] [--mnist DIR]`: the digits calibration and richness runs.

NAME is a definition in synthetic/ (digits_calibration or digits). A definition holds a [base]
DigitsConfig table, a [settings] DigitsLearnerSettings table, `param` and its `values`, `seeds`,
`datasets` ("sklearn", and "mnist" = the directory given by --mnist or $MMCL_SHARED_DATA/mnist_test,
skipped with a note when absent), [base_DATASET], [settings_DATASET] and values_DATASET (a coarser grid) per dataset, and [variants.NAME] tables, each with config overrides, its
`learners` and optionally its own `values`. [quick] overrides seeds, values and settings for CI.
Writes figures/NAME.csv (one row per accuracy, with dataset, variant, param, value) and
figures/NAME.png, and prints the run time. This small driver stands in until the model registry
runs digits through `python -m mmcl_theory.sweep`; run_point is the entry point it calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path

from mmcl_theory.config import ConfigError, section_from_dict
from mmcl_theory.digits import DigitsConfig, DigitsDataError
from mmcl_theory.digits_learners import DigitsLearnerSettings, run_point
from mmcl_theory.io import atomic_save_figure, atomic_write_csv

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("dataset", "variant", "param", "value", "learner", "prompt", "test", "seed", "n", "accuracy")


def load_definition(name: str, quick: bool) -> dict:
    path = ROOT / "synthetic" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such digits run definition; expected digits or digits_calibration")
    spec = tomllib.loads(path.read_text())
    if quick:
        q = spec.get("quick", {})
        spec.update({k: v for k, v in q.items() if k != "settings"})
        spec["settings"] = {**spec.get("settings", {}), **q.get("settings", {})}
    return spec


def dataset_path(name: str, mnist: str | None) -> str | None:
    if name == "sklearn":
        return "sklearn"
    path = mnist or os.path.join(os.environ.get("MMCL_SHARED_DATA", str(ROOT.parent / "shared" / "data")), "mnist_test")
    return path if Path(path).is_dir() else None


def run(name: str, quick: bool = False, mnist: str | None = None, datasets: list[str] | None = None) -> list[dict]:
    spec = load_definition(name, quick)
    rows = []
    for dataset in datasets or spec.get("datasets", ["sklearn"]):
        settings = section_from_dict(DigitsLearnerSettings, {**spec.get("settings", {}),
                                                             **spec.get(f"settings_{dataset}", {})}, "settings")
        path = dataset_path(dataset, mnist)
        if path is None:
            print(f"note: dataset {dataset!r} skipped: no MNIST directory (give --mnist DIR)", file=sys.stderr)
            continue
        base = {**spec.get("base", {}), **spec.get(f"base_{dataset}", {}), "dataset": path}
        for variant, table in spec["variants"].items():
            table = dict(table)
            learners = tuple(table.pop("learners"))
            values = table.pop("values", spec["values"])
            grid = spec.get(f"values_{dataset}", spec["values"] if quick else None)
            if grid is not None:  # a coarser grid for this dataset (or --quick): the variant's values on it
                values = [v for v in values if v in grid] or values[:1]
            for value in values:
                config = section_from_dict(DigitsConfig, {**base, **table, spec["param"]: value}, "base")
                start = time.time()
                for row in run_point(config, list(range(spec["seeds"])), learners, settings):
                    rows.append({"dataset": dataset, "variant": variant, "param": spec["param"], "value": value, **row})
                print(f"{dataset} {variant} {spec['param']}={value}: {time.time() - start:.1f} s", file=sys.stderr)
    return rows


def read_rows(paths: list[str]) -> list[dict]:
    """Rows of result CSVs written by this module (COLUMNS), with numbers parsed."""
    import csv

    rows = []
    for path in paths:
        try:
            with open(path, newline="") as f:
                table = list(csv.DictReader(f))
        except OSError as err:
            raise ConfigError(f"--from {path}: cannot read ({err.strerror}); expected a CSV written by digits_runs")
        if not table or set(table[0]) != set(COLUMNS):
            raise ConfigError(f"--from {path}: expected a CSV with columns {', '.join(COLUMNS)}")
        rows += [dict(r, value=float(r["value"]), seed=int(r["seed"]), n=int(r["n"]), accuracy=float(r["accuracy"]))
                 for r in table]
    return rows


def summary(rows: list[dict]) -> dict[tuple, tuple[float, float]]:
    """(dataset, variant, learner, prompt, test, value) -> (mean, standard error over seeds)."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["dataset"], r["variant"], r["learner"], r["prompt"], r["test"], r["value"]].append(r["accuracy"])
    out = {}
    for key, acc in groups.items():
        m = sum(acc) / len(acc)
        se = (sum((a - m) ** 2 for a in acc) / (len(acc) - 1) / len(acc)) ** 0.5 if len(acc) > 1 else 0.0
        out[key] = (m, se)
    return out


STYLE = {"theory_mmcl": ("black", None), "mmcl_closed_form": ("tab:blue", "o"),
         "mmcl_infonce_linear": ("tab:green", "s"), "mmcl_infonce_mlp": ("tab:olive", "^"),
         "sl_min_norm": ("tab:red", "o"), "sl_logistic": ("tab:orange", "s"), "sl_mlp": ("tab:purple", "^")}


CONTROLS = (("class_axis", "black", "word"), ("shuffled", "tab:blue", "word"), ("thickness", "tab:brown", "word"),
            ("tokens", "tab:gray", "word"), ("colour_word", "tab:red", "caption_mean"))


def _curve(ax, stats, key_prefix, test, label, colour, marker, linestyle="-", flat_over=None):
    values = sorted({k[5] for k in stats if k[:4] == key_prefix and k[4] == test})
    if not values:
        return
    means = [stats[key_prefix + (test, v)] for v in values]
    xs = values
    if flat_over is not None and len(values) == 1:  # a learner that does not see r: drawn flat
        xs, means = flat_over, means * len(flat_over)
    ax.errorbar(xs, [m for m, _ in means], yerr=[s for _, s in means], color=colour, marker=marker,
                linestyle=linestyle, label=label, capsize=2)


def plot(name: str, rows: list[dict], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if name == "digits_calibration":
        fig, axes = plt.subplots(len(datasets), len(variants), figsize=(3.5 * len(variants), 3.2 * len(datasets)), squeeze=False)
        for i, ds in enumerate(datasets):
            for j, variant in enumerate(variants):
                ax = axes[i, j]
                for learner in ("sl_mlp", "sl_logistic", "sl_min_norm", "theory_mmcl"):
                    colour, marker = STYLE[learner]
                    prompt = "word" if learner == "theory_mmcl" else ""
                    for test, ls in (("aligned", ":"), ("flipped", "-")):
                        _curve(ax, stats, (ds, variant, learner, prompt), test, f"{learner} {test}", colour,
                               marker, ls)
                ax.axhline(0.5, color="grey", lw=0.8, ls="--")
                ax.axhline(0.95, color="grey", lw=0.8, ls="--")
                ax.set(title=f"{ds}: {variant}", xlabel="spurious strength s", ylabel="accuracy", ylim=(0, 1.02))
        axes[0, 0].legend(fontsize=6, loc="lower left")
    else:
        panels = [("class_axis", "aligned"), ("class_axis", "flipped"), ("controls", "flipped")]
        fig, axes = plt.subplots(len(datasets), 3, figsize=(10.5, 3.2 * len(datasets)), squeeze=False)
        r_values = sorted({r["value"] for r in rows if r["variant"] == "class_axis"})
        for i, ds in enumerate(datasets):
            for j, (group, test) in enumerate(panels):
                ax = axes[i, j]
                if group == "class_axis":
                    for learner in ("theory_mmcl", "mmcl_closed_form", "mmcl_infonce_linear", "mmcl_infonce_mlp"):
                        colour, marker = STYLE[learner]
                        _curve(ax, stats, (ds, "class_axis", learner, "word"), test, learner, colour, marker)
                    for learner in ("sl_logistic", "sl_mlp", "sl_min_norm"):
                        colour, marker = STYLE[learner]
                        _curve(ax, stats, (ds, "sl", learner, ""), test, learner, colour, marker, "--", r_values)
                else:  # colour by variant; theory as a line, trained InfoNCE (MLP) dashed with markers
                    for variant, colour, prompt in CONTROLS:
                        _curve(ax, stats, (ds, variant, "theory_mmcl", prompt), test, f"theory, {variant} ({prompt})",
                               colour, None)
                        _curve(ax, stats, (ds, variant, "mmcl_infonce_mlp", prompt), test,
                               f"InfoNCE MLP, {variant} ({prompt})", colour, "^", "--")
                ax.set(title=f"{ds}: {'controls, ' if group == 'controls' else ''}{test} test",
                       xlabel="caption richness r", ylabel="accuracy", ylim=(0, 1.02))
            axes[i, 0].legend(fontsize=6, loc="lower left")
            axes[i, 2].legend(fontsize=5.5, loc="upper left")
    fig.text(0.5, 0.005, note, ha="center", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    atomic_save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=("digits", "digits_calibration"))
    parser.add_argument("--quick", action="store_true", help="the CI-sized run (fewer values, seeds, steps)")
    parser.add_argument("--mnist", help="directory of MNIST idx files (default $MMCL_SHARED_DATA/mnist_test)")
    parser.add_argument("--datasets", nargs="+", choices=("sklearn", "mnist"), help="a subset of the definition's datasets")
    parser.add_argument("--from", dest="from_csv", nargs="+", metavar="CSV",
                        help="redraw NAME from these result CSVs (e.g. one per dataset) instead of running")
    parser.add_argument("--note", help="the line printed under the figure (default: this command and its run time)")
    parser.add_argument("--out", default=str(ROOT / "figures"), help="where NAME.csv and NAME.png go")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        rows = read_rows(args.from_csv) if args.from_csv else run(args.name, args.quick, args.mnist, args.datasets)
    except (ConfigError, DigitsDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("_" + "_".join(args.datasets) if args.datasets else "")
    atomic_write_csv(out / f"{args.name}{suffix}.csv", rows, COLUMNS)
    seconds = time.time() - start
    note = args.note or f"python -m mmcl_theory.digits_runs {' '.join(argv if argv is not None else sys.argv[1:])}  ({seconds:.0f} s)"
    plot(args.name, rows, out / f"{args.name}{suffix}.png", note)
    print(f"wrote {out / (args.name + suffix)}.csv/.png: {len(rows)} rows in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
