"""`python -m mmcl_theory.clip.robustness testbed|series ...`: baseline fits, ER reports and the OOD-vs-ID figure."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from mmcl_theory.config import ArgumentParser, option_type, output_file_type
from mmcl_theory.io import atomic_write_json, run_header
from mmcl_theory.runtime import error_exit

from .series import plot_ood_vs_id, read_series_csv, series_effective_robustness, series_from_results, write_series_csv
from .tables import read_table
from .testbed import (TESTBED_SHIFTS, accuracies_from_evaluate, accuracies_from_pairs, average_baseline_points,
                      fit_testbed, load_testbed, testbed_effective_robustness)
from .trend import TRANSFORMS, LinearFit, fit_line


def _non_finite_at(obj, where: str = "report") -> str | None:
    """The key path of the first NaN or infinity in a JSON-ready object, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    return next((w for k, v in items if (w := _non_finite_at(v, f"{where}.{k}"))), None)


def _finish(report: dict, lines: list[str], skipped: list[tuple[str, str]], source, out: str | None) -> None:
    """Refuse a report holding NaN; else print its lines (and the skip count) and write it."""
    report["skipped"] = {"count": len(skipped), "entries": [list(s) for s in skipped]}
    bad = _non_finite_at(report)
    if bad:
        raise ValueError(f"refusing to report a non-finite value at {bad}; check the input accuracies")
    if skipped:
        lines.append(f"skipped {len(skipped)} rows of {source} (first: {skipped[0][0]}: {skipped[0][1]})"
                     + ("; all are listed in --out" if out else ""))
    print("\n".join(lines))
    if out:
        atomic_write_json(out, report)


def _check_outputs(args) -> None:
    """Refuse unusable output paths before any work is done ('', folders and paths under a file: output_file_type)."""
    if args.figure and Path(args.figure).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--figure = {args.figure!r}: the file name must end in .png, .pdf or .svg")


def _testbed_command(args, command: list[str]) -> None:
    _check_outputs(args)
    if args.figure and not args.results:
        raise ValueError("testbed --figure: needs --results (the CSV of `evaluate build`)")
    tb = load_testbed(args.testbed)
    fits = {s: dataclasses.asdict(fit_testbed(tb, s, args.types, args.transform)) for s in TESTBED_SHIFTS}
    lines = [f"baseline fits ({'+'.join(args.types)}, {args.transform}):",
             f"{'shift':18s} {'slope':>7s} {'intercept':>9s} {'r':>6s} {'n':>4s}"]
    lines += [f"{s:18s} {f['slope']:7.3f} {f['intercept']:9.3f} {f['r']:6.3f} {f['n']:4d}" for s, f in fits.items()]
    report = {"run": run_header(vars(args), command), "fits": fits, "types": args.types, "transform": args.transform}
    skipped: list[tuple[str, str]] = []
    if args.results:
        pairs_layout = "shift" in read_table(args.results, "--results", ("model",))[0][1]
        if pairs_layout and args.figure:
            raise ValueError(f"--figure: needs --results from `evaluate build`; {args.results} has the "
                             "model, shift, id_acc, ood_acc layout")
        read = accuracies_from_pairs if pairs_layout else accuracies_from_evaluate
        models_accs = read(args.results, skipped)
        if not models_accs:
            raise ValueError(f"--results = {args.results!r}: no model has a usable pair of accuracies (same-class "
                             f"ImageNet and shift) for any of {', '.join(TESTBED_SHIFTS)}; {len(skipped)} rows skipped"
                             + (f", first {skipped[0][0]}: {skipped[0][1]}" if skipped else ""))
        report["models"] = {}
        for model, accs in models_accs.items():
            rep = testbed_effective_robustness(tb, accs, args.types, args.transform, args.bootstrap, args.seed)
            report["models"][model] = rep
            lines.append(f"{model}: average ER {rep['average']['er']:+.2f} points, 95% CI "
                         f"[{rep['average']['ci'][0]:+.2f}, {rep['average']['ci'][1]:+.2f}]")
    _finish(report, lines, skipped, args.results, args.out)
    if args.figure:
        bx, by = average_baseline_points(tb, args.types)
        series = series_from_results(args.results, "imagenet1k", list(TESTBED_SHIFTS), skipped=[])
        plot_ood_vs_id(args.figure, series, args.transform, baseline_points_xy=(bx, by),
                       baseline_fit=fit_line(bx, by, args.transform),
                       baseline_label=f"trend over {'+'.join(args.types)} testbed models",
                       xlabel="ImageNet top-1 (%)", ylabel="mean top-1 over the 5 shifts (%)")


def _series_command(args, command: list[str]) -> None:
    _check_outputs(args)
    if bool(args.points) == bool(args.results):
        raise ValueError("series: give exactly one of --points or --results")
    skipped: list[tuple[str, str]] = []
    if args.results:
        if not (args.id_dataset and args.ood_datasets):
            raise ValueError("series --results: needs --id-dataset and --ood-datasets")
        series = series_from_results(args.results, args.id_dataset, args.ood_datasets, skipped=skipped)
        per_shift = {d: series_from_results(args.results, args.id_dataset, [d], skipped=[])
                     for d in [*args.ood_datasets, *args.extra_datasets]}
    else:
        given = [f for f, v in (("--id-dataset", args.id_dataset), ("--ood-datasets", args.ood_datasets),
                                ("--extra-datasets", args.extra_datasets)) if v]
        if given:  # a --points CSV holds id_acc and ood_acc already: these would be ignored without a word
            raise ValueError(f"series --points: {', '.join(given)} apply to --results only")
        series, per_shift = read_series_csv(args.points, skipped), {}
    baseline = args.baseline or [s.name for s in series]
    report = {"run": run_header(vars(args), command),
              **series_effective_robustness(series, baseline, args.transform, args.bootstrap, args.seed)}
    report.update(source=str(args.results or args.points), id_dataset=args.id_dataset,
                  ood_datasets=list(args.ood_datasets or []), ood="mean top-1 over ood_datasets", baseline_note=(
                      f"baseline trend = {args.transform} line fitted over the checkpoints of "
                      f"{'+'.join(baseline)}; ER of a checkpoint = its OOD accuracy minus the trend at its "
                      "ID accuracy, in points; CIs resample the baseline checkpoints"))
    report["per_shift"] = {d: series_effective_robustness(s, baseline, args.transform, args.bootstrap, args.seed)
                           for d, s in per_shift.items()}
    lines = [f"{name}: mean ER {s['mean_er']:+.2f} points vs the trend of {'+'.join(baseline)} checkpoints"
             for name, s in report["series"].items()]
    lines += [f"  {d:34s} " + "  ".join(f"{n} {v['mean_er']:+.2f}" for n, v in rep["series"].items())
              for d, rep in report["per_shift"].items()]
    _finish(report, lines, skipped, args.results or args.points, args.out)
    if args.points_out:
        write_series_csv(args.points_out, series)
    if args.figure:
        bf = LinearFit(**report["baseline_fit"])
        plot_ood_vs_id(args.figure, series, args.transform, baseline_fit=bf,
                       baseline_label=f"trend over {'+'.join(baseline)} checkpoints",
                       xlabel=args.xlabel, ylabel=args.ylabel, title=args.title)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m mmcl_theory.clip.robustness"
    parser = ArgumentParser(prog=prog, description="Effective robustness: baseline fits, ER, OOD-vs-ID figure.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("testbed", help="fit imagenet-testbed baseline lines; ER of evaluated models")
    p.add_argument("--testbed", required=True, help="folder with robustness_top1s.csv and model_types.csv")
    p.add_argument("--types", nargs="+", default=["STANDARD"], help="baseline model types (add LOW_ACCURACY_CNN)")
    p.add_argument("--results", help="CSV of `evaluate build` (with imagenet1k, imagenet1k@<shift> and the "
                   "shifts), or with columns model, shift, id_acc, ood_acc (fractions)")
    p.add_argument("--out", type=output_file_type("--out"), help="JSON report path")
    p.add_argument("--figure", type=output_file_type("--figure"),
                   help="PNG: baseline models and trend (x = ImageNet, y = mean over the 5 shifts) and the evaluated "
                        "models as one series per caption variant, each with its own fit")
    q = sub.add_parser("series", help="ER across checkpoint series with a baseline fitted over series")
    q.add_argument("--points", help="CSV with columns series, step, id_acc, ood_acc")
    q.add_argument("--results", help="CSV of `evaluate build` (series = caption_variant)")
    q.add_argument("--id-dataset", help="with --results: the ID dataset name")
    q.add_argument("--ood-datasets", nargs="+", default=[], help="with --results: shifts averaged into OOD")
    q.add_argument("--extra-datasets", nargs="+", default=[], help="with --results: more shifts reported alone")
    q.add_argument("--points-out", type=output_file_type("--points-out"),
                   help="write the (series, step, id_acc, ood_acc) points as CSV")
    q.add_argument("--baseline", nargs="+", help="series whose checkpoints define the trend (default: all)")
    q.add_argument("--out", type=output_file_type("--out"), help="JSON report path")
    q.add_argument("--figure", type=output_file_type("--figure"), help="PNG path for the OOD-vs-ID figure")
    q.add_argument("--xlabel", default="ID accuracy (%)")
    q.add_argument("--ylabel", default="OOD accuracy (%)")
    q.add_argument("--title", default="")
    for a in (p, q):
        a.add_argument("--transform", default="logit", choices=TRANSFORMS)
        a.add_argument("--bootstrap", type=option_type("--bootstrap", int, 1, 1_000_000), default=1000,
                       help="bootstrap resamples (1..1000000)")
        a.add_argument("--seed", type=option_type("--seed", int, 0, 2**32 - 1), default=0)
    args = parser.parse_args(argv)
    command = [prog, *(sys.argv[1:] if argv is None else argv)]
    try:
        (_testbed_command if args.command == "testbed" else _series_command)(args, command)
    except (ValueError, OSError) as e:  # ConfigError and CorruptFileError are ValueErrors
        return error_exit(e)
    return 0
