"""`python -m mmcl_theory.sweep NAME` and `... merge OUT...`: the command line of the sweeps."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..cluster import options_from_args
from ..config import ConfigError, option_type, path_type
from ..runtime import default_cache_dir, error_exit, quiet_jax_logs, setup_jax
from .launch import launch_parts
from .plan import SweepError, available_sweeps, load_definition, make_plan
from .store import finish, merge_parts, parse_part, part_label, prepare_out, run_part, run_sweep

# ------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    from ..config import ArgumentParser

    ap = ArgumentParser(prog="python -m mmcl_theory.sweep", description=__doc__.split("\n")[0],
                        epilog="Models, learners and claims: docs/models.md, docs/learners.md, docs/claims.md.")
    ap.add_argument("name", nargs="?", help="sweep name (see --list), or the path of a TOML sweep definition "
                                            "(its results are named by its `name`, else by the file's stem)")
    ap.add_argument("--list", action="store_true", help="list the named sweeps and exit")
    ap.add_argument("--quick", action="store_true",
                    help="the sweep's [quick] variant: fewer values, seeds and test points (timings in BENCHMARKS.md)")
    ap.add_argument("--seeds", type=int, help="number of seeds (default: the sweep's)")
    ap.add_argument("--out", type=path_type("--out"), help="output directory (default: runs/NAME, or runs/NAME-quick)")
    ap.add_argument("--learners", help="comma-separated learners to run (default: the sweep's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model parameter or learner setting (repeatable; typed by the field)")
    ap.add_argument("--route", help="evaluation route: exact (test-distribution accuracy; M1's and M2's default) "
                                     "or sampled (test sets drawn; the only route of DM2, digits and paper_mnist)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="JAX backend (default cpu)")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help=f"do not use jax's persistent compilation cache (default folder {default_cache_dir()})")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cl = ap.add_argument_group("parts and launchers (README, 'On a cluster')")
    cl.add_argument("--part", metavar="K/N",
                    help="run only part K of N (points K-1, K-1+N, ...) into OUT/points.part-K-of-N.jsonl; "
                         "combine the parts with `python -m mmcl_theory.sweep merge OUT...`")
    cl.add_argument("--launcher", choices=("local", "slurm"),
                    help="run --parts N parts as local processes, or as one SLURM job array (submitit, extra "
                         "[cluster]), then merge them into OUT")
    cl.add_argument("--parts", type=option_type("--parts", int, 1, 10**6), metavar="N", help="number of parts for --launcher")
    cl.add_argument("--array-parallelism", type=option_type("--array-parallelism", int, 1, 10**6), metavar="M",
                    help="most parts running at once (default: all; local: at most the number of CPU cores)")
    cl.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition (default: the cluster's)")
    cl.add_argument("--time-min", type=option_type("--time-min", int, 1, 10**6), metavar="MINUTES",
                    help="time limit of each SLURM part in minutes (default 60); a part stopped at the limit "
                         "or preempted is requeued and resumes from its points file")
    cl.add_argument("--gpus-per-task", type=option_type("--gpus-per-task", int, 0, 64), metavar="G",
                    help="GPUs of each SLURM part (default 0; >0 needs --device gpu)")
    cl.add_argument("--cpus-per-task", type=option_type("--cpus-per-task", int, 1, 1024), metavar="C",
                    help="CPU cores of each SLURM part (default: the cluster's)")
    cl.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. account=proj or qos=long (repeatable)")
    cl.add_argument("--no-wait", action="store_true",
                    help="with --launcher slurm: submit, print the job ids and the merge command, and exit")
    return ap


def _merge_parser() -> argparse.ArgumentParser:
    from ..config import ArgumentParser

    ap = ArgumentParser(prog="python -m mmcl_theory.sweep merge",
                        description="Combine the parts of a sweep (--part K/N) into results.csv, results.json and "
                                    "the figure.")
    ap.add_argument("outs", nargs="+", type=path_type("OUT"), metavar="OUT", help="folders holding the parts")
    ap.add_argument("--out", type=path_type("--out"), help="where to write the merged results (default: the first OUT)")
    return ap


def _fail(e: Exception) -> int:
    """The one-line exit of bad input (runtime.error_exit); a file system error names its file and the reason."""
    if isinstance(e, OSError) and e.filename:
        return error_exit(f"{e.filename}: {e.strerror or e}")
    return error_exit(e)


def merge_main(argv) -> int:
    """`python -m mmcl_theory.sweep merge OUT... [--out DIR]`."""
    args = _merge_parser().parse_args(argv)
    try:
        plan, rows, seconds = merge_parts(args.outs)
        out = args.out or args.outs[0]
        prepare_out(out, plan)
        finish(rows, plan, out, seconds)
        return 0
    except (ConfigError, SweepError, ValueError, OSError) as e:  # a read-only or full --out: an OSError
        return _fail(e)


def main(argv=None) -> int:
    quiet_jax_logs()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.list:
            for name in available_sweeps():
                try:
                    about = load_definition(name).get("description", "")
                except SweepError as e:
                    about = f"(not usable: {e})"
                print(f"{name:20s} {about}")
            return 0
        if not args.name:
            raise SweepError(f"give a sweep name: one of {', '.join(available_sweeps())}")
        learners = [l.strip() for l in args.learners.split(",")] if args.learners is not None else None
        part = parse_part(args.part) if args.part else None
        plan_args = dict(name=args.name, quick=args.quick, seeds=args.seeds, learners=learners,
                         overrides=list(args.set), route=args.route)
        plan = make_plan(**plan_args)
        out = args.out or Path("runs") / (plan.name + ("-quick" if args.quick else ""))
        options = options_from_args(args)  # None: no launcher option given, the sweep (or its --part) runs here
        if options:
            return launch_parts(plan, plan_args, out, options)
        setup_jax(args.device, not args.no_compile_cache)
        if part:
            plan, rows, seconds = run_part(plan_args, *part, out, progress=not args.no_progress)
            print(f"part {part[0]}/{part[1]} of sweep {plan.name} (plan {plan.hash}): {len(rows)} rows in "
                  f"{seconds:.1f} s; wrote {out / f'points.{part_label(*part)}.jsonl'}; when every part is done: "
                  f"python -m mmcl_theory.sweep merge {out}")
            return 0
        start = time.perf_counter()
        rows = run_sweep(plan, out, progress=not args.no_progress)
        finish(rows, plan, out, time.perf_counter() - start, (out / "points.jsonl", out / "sweep.json"))
        return 0
    except (ConfigError, SweepError, ValueError, OSError) as e:  # a read-only or full --out: an OSError
        return _fail(e)
