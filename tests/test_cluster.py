"""Sweeps beyond one process: --part K/N, merge, and the launchers (local processes; submitit arrays).

The merged results of the parts must equal a single-process run row for row (byte for byte in
results.csv: every point is computed from its own config and seed keys, whichever part runs it).
"""

import functools
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from mmcl_theory.cluster import LaunchOptions, PartJob, import_submitit, slurm_executor
from mmcl_theory.sweep import launch_parts, main, make_plan, part_points, run_part_job

LEARNERS = "theory_mmcl,mmcl_closed_form,sl_min_norm"
SMALL = ["--set", "n=30", "--set", "d=40", "--set", "n_test=100"]
SWEEP = ["caption_richness", "--quick", "--no-progress", "--learners", LEARNERS, *SMALL]
PLAN_ARGS = dict(name="caption_richness", quick=True, seeds=None, learners=LEARNERS.split(","),
                 overrides=[s for s in SMALL if s != "--set"], route=None)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """A single-process run of the small quick sweep."""
    out = tmp_path_factory.mktemp("single")
    assert main([*SWEEP, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    """Parts 1/2 and 2/2 of the same sweep, run one after the other into one folder (not merged)."""
    out = tmp_path_factory.mktemp("parts")
    for k in (1, 2):
        assert main([*SWEEP, "--part", f"{k}/2", "--out", str(out)]) == 0
    return out


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


def _assert_same_results(merged: Path, single: Path) -> None:
    assert (merged / "results.csv").read_text() == (single / "results.csv").read_text()
    assert _rows(merged) == _rows(single)
    assert json.loads((merged / "results.json").read_text())["plan_hash"] == \
        json.loads((single / "results.json").read_text())["plan_hash"]
    assert (merged / "caption_richness.png").stat().st_size > 10_000


def _submitit():
    """submitit (imported as the launcher does), or skip with the reason."""
    try:
        return import_submitit()
    except ValueError:
        pytest.skip("submitit (extra [cluster]) is not installed")


def _one_line_exit_2(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_parts_are_a_round_robin_partition_of_the_points():
    plan = make_plan(**PLAN_ARGS)  # quick values of r: 0.0, 0.5, 1.0
    assert [p.value for p in part_points(plan, 1, 2)] == [0.0, 1.0]
    assert [p.value for p in part_points(plan, 2, 2)] == [0.5]
    assert [[p.value for p in part_points(plan, k, 3)] for k in (1, 2, 3)] == [[0.0], [0.5], [1.0]]
    with pytest.raises(ValueError, match="only 3 points"):
        part_points(plan, 1, 4)


def test_parts_then_merge_equal_one_run_row_for_row(single, parts, capsys):
    part1 = parts / "points.part-1-of-2.jsonl"
    assert len(part1.read_text().splitlines()) == 2 and len((parts / "points.part-2-of-2.jsonl").read_text().splitlines()) == 1
    assert not (parts / "results.csv").exists()  # a part alone writes no results
    before = part1.read_bytes()
    assert main([*SWEEP, "--part", "1/2", "--out", str(parts)]) == 0  # a finished part resumes to nothing
    assert part1.read_bytes() == before
    merged = parts.parent / "merged"
    assert main(["merge", str(parts), "--out", str(merged)]) == 0
    _assert_same_results(merged, single)
    assert "flipped test" in capsys.readouterr().out


def test_parts_in_separate_folders_merge(single, parts, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for k, where in ((1, a), (2, b)):
        where.mkdir()
        for name in (f"part-{k}-of-2.json", f"points.part-{k}-of-2.jsonl"):
            shutil.copy(parts / name, where / name)
    assert main(["merge", str(a), str(b)]) == 0
    _assert_same_results(a, single)


@pytest.mark.parametrize("argv, needle", [
    ([*SWEEP, "--part", "3/2"], "--part '3/2' is not allowed: K/N with integers 1 <= K <= N"),
    ([*SWEEP, "--part", "0/2"], "--part '0/2' is not allowed"),
    ([*SWEEP, "--part", "a/b"], "--part 'a/b' is not allowed"),
    ([*SWEEP, "--part", "2"], "--part '2' is not allowed"),
    ([*SWEEP, "--part", "1/4"], "has only 3 points"),
    ([*SWEEP, "--parts", "2"], "--parts N needs --launcher"),
    ([*SWEEP, "--launcher", "local"], "needs --parts N"),
    ([*SWEEP, "--launcher", "local", "--parts", "2", "--part", "1/2"], "give one of them"),
    ([*SWEEP, "--launcher", "slurm", "--parts", "2", "--gpus-per-task", "1"], "needs --device gpu"),
    ([*SWEEP, "--launcher", "local", "--parts", "2", "--no-wait"], "--no-wait is for --launcher slurm"),
    ([*SWEEP, "--launcher", "slurm", "--parts", "2", "--slurm-extra", "account"], "must look like KEY=VALUE"),
])
def test_bad_part_and_launcher_options_are_one_line_exit_2(capsys, tmp_path, argv, needle):
    _one_line_exit_2(capsys, [*argv, "--out", str(tmp_path / "o")], needle)
    assert not (tmp_path / "o").exists()


def test_slurm_launcher_without_sbatch_is_one_line(capsys, tmp_path):
    if shutil.which("sbatch"):
        pytest.skip("sbatch is on PATH here: this checks the message on machines without SLURM")
    _submitit()
    _one_line_exit_2(capsys, [*SWEEP, "--launcher", "slurm", "--parts", "2", "--out", str(tmp_path / "o")],
                     "needs SLURM's sbatch on PATH")
    assert not (tmp_path / "o").exists()


def _copy_part(parts: Path, k: int, n: int, where: Path) -> Path:
    where.mkdir(exist_ok=True)
    for name in (f"part-{k}-of-{n}.json", f"points.part-{k}-of-{n}.jsonl"):
        shutil.copy(parts / name, where / name)
    return where


def test_bad_merges_are_one_line_exit_2(parts, tmp_path, capsys):
    _one_line_exit_2(capsys, ["merge", str(tmp_path / "absent")], "is not a folder")
    (tmp_path / "empty").mkdir()
    _one_line_exit_2(capsys, ["merge", str(tmp_path / "empty")], "holds no sweep parts")
    only_first = _copy_part(parts, 1, 2, tmp_path / "first")
    _one_line_exit_2(capsys, ["merge", str(only_first)], "1 of 3 points missing (first [\"r\", 0.5, \"\"]): "
                                                         "not given: part 2/2")
    _one_line_exit_2(capsys, ["merge", str(parts), str(only_first)], "overlapping parts: point [\"r\", 0.0, \"\"]")
    other = tmp_path / "other"  # another plan: theory rows only (no compiling)
    assert main(["caption_richness", "--quick", "--no-progress", "--learners", "theory_mmcl", *SMALL,
                 "--part", "1/3", "--out", str(other)]) == 0
    _one_line_exit_2(capsys, ["merge", str(parts), str(other)], "parts of different sweep plans")
    (only_first / "part-1-of-2.json").write_text("{not json")
    _one_line_exit_2(capsys, ["merge", str(only_first)], "is not a sweep part record")
    assert not (only_first / "results.csv").exists()


def test_unfinished_part_is_named_in_the_missing_points_line(parts, tmp_path, capsys):
    where = _copy_part(parts, 1, 2, tmp_path / "cut")
    _copy_part(parts, 2, 2, where)
    lines = (where / "points.part-1-of-2.jsonl").read_text().splitlines(keepends=True)
    (where / "points.part-1-of-2.jsonl").write_text(lines[0])
    _one_line_exit_2(capsys, ["merge", str(where)], f"part 1/2 in {where} has 1 of 2 points")


def test_launcher_local_runs_parts_as_processes(single, tmp_path, capsys):
    out = tmp_path / "local"
    assert main([*SWEEP, "--launcher", "local", "--parts", "2", "--out", str(out)]) == 0
    _assert_same_results(out, single)
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["part-1-of-2.log", "part-2-of-2.log"]


def test_submitit_local_executor_parts_equal_one_run(single, tmp_path):
    submitit = _submitit()
    out = tmp_path / "array"
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=15)
    plan = make_plan(**PLAN_ARGS)
    assert launch_parts(plan, PLAN_ARGS, out, LaunchOptions("slurm", parts=2, progress=False), executor=executor) == 0
    _assert_same_results(out, single)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
def test_preempted_part_is_requeued_and_resumes(single, tmp_path):
    """The first point is already on disk (the first line of the single run: same plan, same format);
    SIGUSR2, submitit's preemption signal, reaches the part once it has started: PartJob.checkpoint
    requeues it, and the requeued part resumes: each point is on disk once, the first line untouched,
    and the merged results equal one run."""
    submitit = _submitit()
    out = tmp_path / "preempted"
    out.mkdir()
    points = out / "points.part-1-of-1.jsonl"
    first = (single / "points.jsonl").read_text().splitlines(keepends=True)[0]
    points.write_text(first)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=15)
    job = executor.submit(PartJob(functools.partial(run_part_job, PLAN_ARGS, 1, str(out), "cpu", True)), 1)
    deadline = time.time() + 300
    while not (out / "part-1-of-1.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    for pid in _children(int(job.job_id)):
        os.kill(pid, signal.SIGUSR2)
    assert job.result() == 72
    logs = "".join(p.read_text() for p in sorted((tmp_path / "submitit").glob("*_log.*")))
    assert "this job is preempted" in logs and "Requeued job" in logs
    lines = points.read_text().splitlines(keepends=True)
    assert len(lines) == 3 and lines[0] == first
    assert main(["merge", str(out)]) == 0
    _assert_same_results(out, single)


def test_slurm_options_reach_the_sbatch_script(monkeypatch, tmp_path):
    """The SLURM array's sbatch header as submitit writes it (sbatch itself is not needed to write it)."""
    _submitit()
    import mmcl_theory.cluster as cluster

    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")  # sbatch is only asked for
    options = LaunchOptions("slurm", 3, parallelism=2, device="gpu", slurm_partition="gpu", time_min=90,
                            gpus_per_task=1, cpus_per_task=8, slurm_extra=("account=proj",))
    executor = slurm_executor(tmp_path, "mmcl-test", options)._executor
    executor.parameters["map_count"] = 3  # set by map_array for an array of 3
    header = executor._make_submission_file_text("true", "uid").splitlines()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --account=proj",
                 "#SBATCH --signal=USR2@90"):
        assert line in header


@pytest.mark.parametrize("edit, needle", [
    (lambda r: r.update(extra=1), "unexpected key(s) extra"),
    (lambda r: r.pop("points"), "key(s) points missing"),
    (lambda r: r["make_plan"].update(bogus=True), "unexpected make_plan key(s) bogus"),
    (lambda r: r["make_plan"].pop("route"), "make_plan key(s) route missing"),
    (lambda r: r.update(part=[2, 1]), "part = [2, 1] is not [K, N]"),
    (lambda r: r.update(points="all"), "points of the wrong kind"),
])
def test_merge_of_a_part_record_with_wrong_keys_is_one_line(parts, tmp_path, capsys, edit, needle):
    """A part record run_part did not write (keys added, lost or of the wrong kind) is refused with one line naming
    the file and the keys, and the merge writes nothing (it used to be a TypeError or KeyError traceback)."""
    where = _copy_part(parts, 1, 2, tmp_path / "p")
    _copy_part(parts, 2, 2, where)
    path = where / "part-1-of-2.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    _one_line_exit_2(capsys, ["merge", str(where)], needle)
    err_free = sorted(p.name for p in where.iterdir())
    assert err_free == ["part-1-of-2.json", "part-2-of-2.json", "points.part-1-of-2.jsonl", "points.part-2-of-2.jsonl"]


def _stand_in_slurm(tmp_path, monkeypatch, *tools) -> Path:
    """A folder put first on PATH holding stand-ins for SLURM's `tools` (each exits 0 until overwritten)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_launcher_without_srun_is_one_line(capsys, tmp_path, monkeypatch):
    """submitit's SLURM executor refuses to start without srun (a RuntimeError traceback before): one line."""
    if shutil.which("srun"):
        pytest.skip("srun is on PATH here: this checks the message on machines without SLURM")
    _submitit()
    _stand_in_slurm(tmp_path, monkeypatch, "sbatch")
    _one_line_exit_2(capsys, [*SWEEP, "--launcher", "slurm", "--parts", "2", "--out", str(tmp_path / "o")],
                     "needs SLURM's srun on PATH")
    assert not (tmp_path / "o").exists()


def test_slurm_submission_refused_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """sbatch refuses the array (here a stand-in sbatch on PATH that exits 1 as SLURM does for a bad partition):
    one line with sbatch's message and exit code 2, and --out is not left holding a sweep.json, so the corrected
    command starts afresh. (It used to be submitit's FailedJobError traceback, after sbatch's own stderr.)"""
    _submitit()
    bin_dir = _stand_in_slurm(tmp_path, monkeypatch, "sbatch", "srun")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition "
                                    "name specified' >&2\nexit 1\n")
    out = tmp_path / "o"
    _one_line_exit_2(capsys, [*SWEEP, "--launcher", "slurm", "--parts", "2", "--slurm-partition", "nope",
                              "--out", str(out)],
                     "the job array of 2 parts was not submitted (FailedJobError): sbatch: error: Batch job "
                     "submission failed: Invalid partition name specified")
    assert not out.exists()
    # an --out that existed keeps what it held, and the sweep.json and submitit folder made for the array go
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line_exit_2(capsys, [*SWEEP, "--launcher", "slurm", "--parts", "2", "--out", str(out)], "was not submitted")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
