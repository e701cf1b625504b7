"""Launching a sweep's parts: local processes or a SLURM array (cluster.py), then the merge."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..runtime import setup_jax
from .memory import check_memory
from .plan import Plan
from .store import finish, merge_parts, part_label, part_points, prepare_out, run_part


def run_part_job(plan_args: dict, n: int, out: str, device: str, compile_cache: bool, k: int) -> int:
    """Part k of n in a process of its own (a submitit task): set up JAX, run or resume the part; its row count."""
    setup_jax(device, compile_cache)
    _, rows, _ = run_part(plan_args, k, n, Path(out), progress=False)
    return len(rows)


def part_command(plan_args: dict, k: int, n: int, out: Path, device: str = "cpu",
                 compile_cache: bool = True) -> list[str]:
    """The command line that runs part k of n of make_plan(**plan_args) into out."""
    argv = [sys.executable, "-m", "mmcl_theory.sweep", plan_args["name"], "--part", f"{k}/{n}", "--out", str(out),
            "--device", device, "--no-progress"]
    argv += ["--quick"] if plan_args["quick"] else []
    argv += ["--route", plan_args["route"]] if plan_args["route"] is not None else []
    argv += ["--seeds", str(plan_args["seeds"])] if plan_args["seeds"] is not None else []
    argv += ["--learners", ",".join(plan_args["learners"])] if plan_args["learners"] is not None else []
    for item in plan_args["overrides"]:
        argv += ["--set", item]
    return argv + ([] if compile_cache else ["--no-compile-cache"])


def _remove_created(existed: dict[Path, bool]) -> None:
    """Remove each path of `existed` (folder or file) that did not exist before; the deepest first."""
    import shutil

    for path in sorted(existed, key=lambda p: len(p.parts), reverse=True):
        if not existed[path] and path.exists():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


def launch_parts(plan: Plan, plan_args: dict, out: Path, options, executor=None) -> int:
    """Run all options.parts parts with cluster.py's launcher (or on `executor`, a submitit executor),
    wait, and merge them into out. options: cluster.LaunchOptions. Returns the exit code: 0 when merged
    (or submitted, without wait), 1 when a part failed (rerunning the command resumes it)."""
    import functools

    from ..cluster import LaunchError, PartJob, run_array, run_local, slurm_executor, wait_with_progress

    n = options.parts
    part_points(plan, 1, n)  # n <= number of points, or one line
    if executor is None and options.launcher == "slurm":
        executor = slurm_executor(out / "submitit", f"mmcl-{plan.name}", options)  # or one line, before any write
    if executor is None:  # local parts run here, up to run_local's parallelism at once (SLURM nodes check their own)
        check_memory(plan.points, plan.route, options.device, min(options.parallelism or os.cpu_count() or 1, n))
    before = {p: p.exists() for p in (out, out / "sweep.json", out / "submitit")}
    prepare_out(out, plan)  # sweep.json once, before the parts start at the same time
    files = [out / f"points.{part_label(k, n)}.jsonl" for k in range(1, n + 1)]
    count = lambda: sum(f.read_bytes().count(b"\n") for f in files if f.is_file())
    wait = functools.partial(wait_with_progress, count=count, total=len(plan.points), desc=f"{plan.name} ({n} parts)",
                             progress=options.progress)
    if executor is None:  # local processes
        commands = [part_command(plan_args, k, n, out, options.device, options.compile_cache) for k in range(1, n + 1)]
        failed = run_local(commands, [out / "logs" / f"{part_label(k, n)}.log" for k in range(1, n + 1)],
                           options.parallelism, wait)
    else:
        job = PartJob(functools.partial(run_part_job, plan_args, n, str(out), options.device,
                                        options.compile_cache))
        try:
            failed = run_array(executor, job, n, wait if options.wait else None)
        except LaunchError:  # nothing was submitted: leave out as it was, so the corrected command starts afresh
            _remove_created(before)
            raise
        if failed is None:
            print(f"logs in {out / 'submitit'}; when every part is done: python -m mmcl_theory.sweep merge {out}")
            return 0
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(failed)} of {n} parts failed; rerun the same command to resume them "
              "(finished points are kept)", file=sys.stderr)
        return 1
    merged, rows, seconds = merge_parts([out])
    finish(rows, merged, out, seconds)
    return 0
