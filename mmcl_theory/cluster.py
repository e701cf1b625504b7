"""Run the N parts of a job beyond one process: local processes, or one SLURM job array through submitit.

The sweep (`python -m mmcl_theory.sweep NAME --launcher local|slurm --parts N`, sweep.launch_parts)
is the user: it says what part k is (a command line for local processes; a picklable callable for
submitit), how many points are finished (for the progress bar), and merges the parts afterwards.
This module knows nothing of sweeps and imports nothing of the package but config.

`local` runs the commands as subprocesses, at most `parallelism` at once, each with its log file.
`slurm` submits the parts as one array with submitit's AutoExecutor.map_array. Each array task runs
a :class:`PartJob`, which follows submitit's checkpointing protocol: when a part's time limit nears
(or submitit's signal reports preemption), submitit calls PartJob.checkpoint, which resubmits the
same part; the requeued part resumes from what it wrote to disk. submitit is the optional extra
`[cluster]`; nothing else here needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import ConfigError, split_override


class LaunchError(ValueError):
    """The launcher could not start the parts (e.g. sbatch refused the job array): one line, exit code 2."""


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


SLURM_FLAGS = {"slurm_partition": "--slurm-partition", "time_min": "--time-min", "gpus_per_task": "--gpus-per-task",
               "cpus_per_task": "--cpus-per-task", "slurm_extra": "--slurm-extra", "no_wait": "--no-wait"}


def options_from_args(args) -> LaunchOptions | None:
    """LaunchOptions from the sweep CLI's arguments, or None when none of its launcher options is given (the sweep
    runs in this process); inconsistent options, or one that would be ignored, are a ConfigError (one line)."""
    slurm_only = [flag for attr, flag in SLURM_FLAGS.items() if getattr(args, attr) not in (None, False, [])]
    if not (args.launcher or args.parts or args.array_parallelism or slurm_only):
        return None
    if slurm_only and args.launcher != "slurm":
        raise ConfigError(f"{', '.join(slurm_only)} {'is' if len(slurm_only) == 1 else 'are'} for --launcher slurm "
                          + (f"(--launcher {args.launcher} would ignore it)" if args.launcher else
                             "(without it the sweep runs here and would ignore it)"))
    if args.part:
        raise ConfigError("--part K/N runs one part here, --launcher runs all --parts N: give one of them")
    if not args.launcher:
        what = "--parts N" if args.parts else "--array-parallelism"
        raise ConfigError(f"{what} needs --launcher local or --launcher slurm (or run one part with --part K/N)")
    if not args.parts:
        raise ConfigError(f"--launcher {args.launcher} needs --parts N, the number of parts to split the sweep into")
    if args.gpus_per_task and args.device != "gpu":
        raise ConfigError(f"--gpus-per-task {args.gpus_per_task} needs --device gpu (the parts would run on CPU)")
    for item in args.slurm_extra:
        split_override(item, "--slurm-extra")  # KEY=VALUE or a ConfigError
    given = {"slurm_partition": args.slurm_partition, "time_min": args.time_min, "gpus_per_task": args.gpus_per_task,
             "cpus_per_task": args.cpus_per_task}
    return LaunchOptions(args.launcher, args.parts, args.array_parallelism, args.device, not args.no_compile_cache,
                         slurm_extra=tuple(args.slurm_extra), wait=not args.no_wait, progress=not args.no_progress,
                         **{k: v for k, v in given.items() if v is not None})


def import_submitit():
    """The submitit module (extra [cluster]; a ConfigError if missing), imported without its logging setup:
    on import submitit calls logging.config.dictConfig, which closes every logging handler this process
    already has (jax's, pytest's). Its jobs, fresh processes, still configure its logging."""
    previous = os.environ.get("SUBMITIT_LOG_LEVEL")
    os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'mmcl-theory[cluster]'") from None
    finally:
        if previous is None:
            del os.environ["SUBMITIT_LOG_LEVEL"]
        else:
            os.environ["SUBMITIT_LOG_LEVEL"] = previous
    return submitit


@dataclasses.dataclass(frozen=True)
class PartJob:
    """Part k as a submitit job: PartJob(run)(k) is run(k). checkpoint(k) resubmits the same part
    (submitit's Checkpointable protocol); `run` must resume from what an earlier attempt wrote.

    `run` is pickled by submitit: a module-level function or a functools.partial of one.
    """

    run: Callable[[int], object]

    def __call__(self, k: int) -> object:
        return self.run(k)

    def checkpoint(self, k: int):
        """Called by submitit on preemption or near the time limit: requeue the same part."""
        return import_submitit().helpers.DelayedSubmission(self, k)


def wait_with_progress(is_done: Callable[[], bool], count: Callable[[], int], total: int, desc: str,
                       progress: bool = True, poll_s: float = 1.0) -> None:
    """Poll is_done() every poll_s seconds, showing count() of total (tqdm: rate and ETA)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="point", desc=desc, disable=not progress, file=sys.stderr, smoothing=0.3)
    while True:
        finished = is_done()
        bar.update(min(count(), total) - bar.n)
        if finished:
            break
        time.sleep(poll_s)
    bar.close()


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_local(commands: Sequence[Sequence[str]], logs: Sequence[Path], parallelism: int | None,
              wait: Callable[[Callable[[], bool]], None]) -> list[str]:
    """Run commands[k - 1] (part k) as subprocesses, output to logs[k - 1], at most `parallelism` at
    once (default: all, at most the CPU count); wait(is_done) polls. Returns one message per failed part."""
    n = len(commands)
    parallel = parallelism or min(n, os.cpu_count() or 1)
    waiting, running, failed = list(range(1, n + 1)), {}, []

    def poll() -> bool:
        for k, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[k]
                if proc.returncode:
                    failed.append(f"part {k}/{n} exited with code {proc.returncode}: {_last_line(logs[k - 1])} "
                                  f"(log {logs[k - 1]})")
        while waiting and len(running) < parallel:
            k = waiting.pop(0)
            logs[k - 1].parent.mkdir(parents=True, exist_ok=True)
            log = open(logs[k - 1], "w")
            running[k] = (subprocess.Popen(list(commands[k - 1]), stdout=log, stderr=subprocess.STDOUT), log)
        return not running and not waiting

    try:
        wait(poll)
    finally:  # interrupted: stop the parts started here (what they wrote stays on disk)
        for proc, log in running.values():
            proc.terminate()
            proc.wait()
            log.close()
    return failed


def slurm_executor(folder: Path, name: str, options: LaunchOptions):
    """A submitit AutoExecutor for SLURM with the options' resources, logs under folder/<job id>
    (one line if submitit, sbatch or srun is missing)."""
    submitit = import_submitit()
    for tool in ("sbatch", "srun"):  # submitit submits with sbatch and refuses to start without srun
        if shutil.which(tool) is None:
            raise ConfigError(f"--launcher slurm needs SLURM's {tool} on PATH (submit from a cluster login node), "
                              "or use --launcher local")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    params = dict(name=name, timeout_min=options.time_min, nodes=1, tasks_per_node=1,
                  gpus_per_node=options.gpus_per_task, slurm_array_parallelism=options.parallelism or options.parts)
    if options.slurm_partition:
        params["slurm_partition"] = options.slurm_partition
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.slurm_extra:
        params["slurm_additional_parameters"] = dict(split_override(i, "--slurm-extra") for i in options.slurm_extra)
    executor.update_parameters(**params)
    return executor


def run_array(executor, job: PartJob, n: int, wait: Callable[[Callable[[], bool]], None] | None) -> list[str] | None:
    """Submit parts 1..n of `job` as one array on a submitit executor (SLURM, or submitit's local
    executor in the tests). With wait (a poller, as in run_local), wait for them and return one message
    per failed part; with wait None, return None once submitted. A submission the scheduler refuses
    (sbatch exits non-zero: a bad partition, account or limit) is a LaunchError naming sbatch's message."""
    refused = (import_submitit().core.utils.FailedJobError, subprocess.CalledProcessError, OSError)
    said = io.StringIO()  # submitit prints sbatch's stderr itself when sbatch fails: it goes into the one line
    try:
        with contextlib.redirect_stderr(said):
            jobs = executor.map_array(job, list(range(1, n + 1)))
    except refused as e:
        lines = [line.strip() for line in (str(e) or said.getvalue()).splitlines() if line.strip()]
        raise LaunchError(f"the job array of {n} parts was not submitted ({type(e).__name__}): "
                          f"{lines[-1] if lines else 'no message'}") from None
    sys.stderr.write(said.getvalue())
    print(f"submitted {len(jobs)} parts: job ids {', '.join(j.job_id for j in jobs)}", file=sys.stderr)
    if wait is None:
        return None
    wait(lambda: all(j.done() for j in jobs))
    failed = []
    for k, j in enumerate(jobs, 1):
        error = j.exception()
        if error is not None:
            lines = str(error).strip().splitlines()
            failed.append(f"part {k}/{n} (job {j.job_id}) failed: {lines[-1] if lines else repr(error)} "
                          f"(log {j.paths.stderr})")
    return failed
