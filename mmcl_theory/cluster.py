"""Run a sweep's parts beyond one process: local processes, or one SLURM job array through submitit.

    python -m mmcl_theory.sweep NAME --launcher local --parts N [--array-parallelism M]
    python -m mmcl_theory.sweep NAME --launcher slurm --parts N [--slurm-partition P] [--time-min T]
        [--gpus-per-task G --device gpu] [--cpus-per-task C] [--slurm-extra KEY=VALUE] [--no-wait]

Both split the plan into N parts (sweep.part_points: round robin over the points), run part k as
`sweep.run_part(plan_args, k, N, OUT)` (points in OUT/points.part-k-of-N.jsonl, resumed from there),
wait for all of them, and merge them into OUT/results.csv, results.json and the figure exactly as a
single run writes them (sweep.merge_parts, sweep.finish). OUT must be one folder that every part can
write (a shared file system on a cluster).

`local` starts each part as `python -m mmcl_theory.sweep NAME ... --part k/N` (logs in OUT/logs/).
`slurm` submits the N parts as one array with submitit's AutoExecutor.map_array (logs in
OUT/submitit/). Each array task runs a :class:`PartJob`, which follows submitit's checkpointing
protocol: when SLURM preempts a part or its time limit nears, submitit calls PartJob.checkpoint,
which resubmits the same part; the requeued part resumes from its points file. submitit is the
optional extra `[cluster]`; nothing else here needs it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import split_override
from .sweep import Plan, SweepError, _prepare_out, finish, merge_parts, part_label, part_points, run_part


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to run the parts: launcher, number of parts, and the resources of each part."""

    launcher: str
    parts: int
    parallelism: int | None = None  # most parts running at once (None: all; local: at most the CPU count)
    device: str = "cpu"
    compile_cache: bool = True
    slurm_partition: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    slurm_extra: tuple[str, ...] = ()
    wait: bool = True
    progress: bool = True


def options_from_args(args) -> LaunchOptions:
    """LaunchOptions from the sweep CLI's arguments; inconsistent options are a SweepError (one line)."""
    if args.part:
        raise SweepError("--part K/N runs one part here, --launcher runs all --parts N: give one of them")
    if not args.launcher:
        raise SweepError("--parts N needs --launcher local or --launcher slurm (or run one part with --part K/N)")
    if not args.parts:
        raise SweepError(f"--launcher {args.launcher} needs --parts N, the number of parts to split the sweep into")
    if args.gpus_per_task and args.device != "gpu":
        raise SweepError(f"--gpus-per-task {args.gpus_per_task} needs --device gpu (the parts would run on CPU)")
    if args.no_wait and args.launcher != "slurm":
        raise SweepError("--no-wait is for --launcher slurm (local parts end with this process)")
    for item in args.slurm_extra:
        split_override(item)  # KEY=VALUE or a ConfigError
    return LaunchOptions(args.launcher, args.parts, args.array_parallelism, args.device, not args.no_compile_cache,
                         args.slurm_partition, args.time_min, args.gpus_per_task, args.cpus_per_task,
                         tuple(args.slurm_extra), not args.no_wait, not args.no_progress)


@dataclasses.dataclass(frozen=True)
class PartJob:
    """Part k of a sweep as a submitit job: call it with k. Its checkpoint(k) resubmits the same part
    (submitit's Checkpointable protocol), which then resumes from OUT/points.part-k-of-N.jsonl.

    It holds only make_plan's keyword arguments and paths, so the pickle submitit sends is small.
    """

    plan_args: dict
    parts: int
    out: str
    device: str = "cpu"
    compile_cache: bool = True

    def __call__(self, k: int) -> int:
        """Run (or resume) part k; return its number of contract rows."""
        from .sweep import setup_jax

        setup_jax(self.device, self.compile_cache)
        _, rows, _ = run_part(self.plan_args, k, self.parts, Path(self.out), progress=False)
        return len(rows)

    def checkpoint(self, k: int):
        """Called by submitit on preemption or near the time limit: requeue the same part."""
        return import_submitit().helpers.DelayedSubmission(self, k)


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


def _points_done(out: Path, n: int) -> int:
    """Finished points over all n part files in out (complete lines)."""
    total = 0
    for k in range(1, n + 1):
        path = out / f"points.{part_label(k, n)}.jsonl"
        if path.is_file():
            total += path.read_bytes().count(b"\n")
    return total


def _wait(is_done, plan: Plan, out: Path, n: int, progress: bool) -> None:
    """Poll until is_done() is true, showing finished points over all parts."""
    from tqdm import tqdm

    bar = tqdm(total=len(plan.points), unit="point", desc=f"{plan.name} ({n} parts)", disable=not progress,
               file=sys.stderr, smoothing=0.3)
    while True:
        finished = is_done()
        bar.update(min(_points_done(out, n), len(plan.points)) - bar.n)
        if finished:
            break
        time.sleep(1.0)
    bar.close()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_local(plan: Plan, plan_args: dict, out: Path, options: LaunchOptions) -> list[str]:
    """Run the parts as local processes, at most options.parallelism at once; return failure messages."""
    n = options.parts
    parallel = options.parallelism or min(n, os.cpu_count() or 1)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    waiting, running, failed = list(range(1, n + 1)), {}, []

    def poll() -> bool:
        for k, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[k]
                if proc.returncode:
                    failed.append(f"part {k}/{n} exited with code {proc.returncode}: "
                                  f"{_last_line(Path(log.name))} (log {log.name})")
        while waiting and len(running) < parallel:
            k = waiting.pop(0)
            log = open(logs / f"{part_label(k, n)}.log", "w")
            cmd = part_command(plan_args, k, n, out, options.device, options.compile_cache)
            running[k] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        return not running and not waiting

    try:
        _wait(poll, plan, out, n, options.progress)
    finally:  # interrupted: stop the parts this launcher started (their finished points stay on disk)
        for proc, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
    return failed


def import_submitit():
    """The submitit module (extra [cluster]; a SweepError if missing), imported without its logging setup:
    on import submitit calls logging.config.dictConfig, which closes every logging handler this process
    already has (jax's, pytest's). Its jobs, fresh processes, still configure its logging."""
    previous = os.environ.get("SUBMITIT_LOG_LEVEL")
    os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
    try:
        import submitit
    except ImportError:
        raise SweepError("--launcher slurm needs submitit: pip install 'mmcl-theory[cluster]'") from None
    finally:
        if previous is None:
            del os.environ["SUBMITIT_LOG_LEVEL"]
        else:
            os.environ["SUBMITIT_LOG_LEVEL"] = previous
    return submitit


def slurm_executor(out: Path, plan: Plan, options: LaunchOptions):
    """A submitit AutoExecutor for SLURM with the options' resources (one line if submitit or sbatch is missing)."""
    submitit = import_submitit()
    if shutil.which("sbatch") is None:
        raise SweepError("--launcher slurm needs SLURM's sbatch on PATH (submit from a cluster login node), "
                         "or use --launcher local")
    executor = submitit.AutoExecutor(folder=out / "submitit" / "%j", cluster="slurm")
    params = dict(name=f"mmcl-{plan.name}", timeout_min=options.time_min, nodes=1, tasks_per_node=1,
                  gpus_per_node=options.gpus_per_task, slurm_array_parallelism=options.parallelism or options.parts)
    if options.slurm_partition:
        params["slurm_partition"] = options.slurm_partition
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.slurm_extra:
        params["slurm_additional_parameters"] = dict(split_override(i) for i in options.slurm_extra)
    executor.update_parameters(**params)
    return executor


def run_array(executor, plan: Plan, plan_args: dict, out: Path, options: LaunchOptions) -> list[str] | None:
    """Submit the parts as one array of PartJobs on a submitit executor (SLURM, or submitit's local
    executor in the tests) and wait for them; return failure messages (None with options.wait false)."""
    job = PartJob(plan_args, options.parts, str(out), options.device, options.compile_cache)
    jobs = executor.map_array(job, list(range(1, options.parts + 1)))
    print(f"submitted {len(jobs)} parts of sweep {plan.name}: job ids {', '.join(j.job_id for j in jobs)}; "
          f"logs in {out / 'submitit'}", file=sys.stderr)
    if not options.wait:
        print(f"when every part is done: python -m mmcl_theory.sweep merge {out}")
        return None
    _wait(lambda: all(j.done() for j in jobs), plan, out, options.parts, options.progress)
    failed = []
    for k, j in enumerate(jobs, 1):
        error = j.exception()
        if error is not None:
            message = str(error).strip().splitlines()
            failed.append(f"part {k}/{options.parts} (job {j.job_id}) failed: {message[-1] if message else error!r} "
                          f"(log {j.paths.stderr})")
    return failed


def launch(plan: Plan, plan_args: dict, out: Path, options: LaunchOptions, executor=None) -> int:
    """Run every part with options.launcher (or on `executor`, a submitit executor), then merge into out.

    Returns the exit code: 0 when merged (or submitted, with --no-wait), 1 when a part failed.
    """
    part_points(plan, 1, options.parts)  # N <= number of points, or one line
    _prepare_out(out, plan)  # sweep.json once, before parts start at the same time
    if executor is None and options.launcher == "local":
        failed = run_local(plan, plan_args, out, options)
    else:
        executor = executor or slurm_executor(out, plan, options)
        failed = run_array(executor, plan, plan_args, out, options)
        if failed is None:
            return 0
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(failed)} of {options.parts} parts failed; rerun the same command to resume them "
              "(finished points are kept)", file=sys.stderr)
        return 1
    merged_plan, rows, seconds = merge_parts([out])
    finish(rows, merged_plan, out, seconds)
    return 0
