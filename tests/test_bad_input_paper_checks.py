"""Bad input of `python -m paper_checks`: damaged records in a --resume folder are reported in one line and the check
rerun (never trusted); an output folder that cannot be written is one stderr line and exit code 2, before any check
runs, with nothing half-written left behind.

The checks run for real: C8 reads stored results only (a few ms, 'not run' without them), so the CLI's main runs
in this process in well under a second after jax's import.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # paper_checks/ sits at the repository root

import mmcl_theory  # noqa: E402
from conftest import run_main  # noqa: E402
from paper_checks import report  # noqa: E402
from paper_checks.__main__ import main  # noqa: E402
from paper_checks.common import VERDICTS, Record  # noqa: E402

CHEAP = "C8"


def one_line_error(code, err, *parts):
    """Exit code 2 and one stderr line (besides the progress lines of checks that ran), holding every part."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[paper_checks] ")]
    assert len(lines) == 1, err
    for p in parts:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def good_save(quick=True) -> dict:
    """A saved record that run_all reuses: this version, quick mode, seed offset 0, the inputs of CHEAP as they are."""
    rec = Record(CHEAP, "claim", "paper claim", "expected", "measured", "pass", "why", ["a detail"], 1.5)
    return {"version": mmcl_theory.__version__, "quick": quick, "seed_offset": 0, "inputs": report.inputs_now(CHEAP),
            "record": rec.as_dict()}


def _drop(key):
    def f(d):
        del d["record"][key]
        return d
    return f


def _set(key, value, outer=False):
    def f(d):
        (d if outer else d["record"])[key] = value
        return d
    return f


DAMAGE = {  # name -> the saved file's text
    "missing key": json.dumps(_drop("why")(good_save())),
    "added key": json.dumps(_set("colour", "red")(good_save())),
    "wrong type (str field)": json.dumps(_set("measured", 0.5)(good_save())),
    "wrong type (details)": json.dumps(_set("details", "one line")(good_save())),
    "wrong type (seconds)": json.dumps(_set("seconds", "1.5")(good_save())),
    "seconds nan": json.dumps(_set("seconds", float("nan"))(good_save())),
    "record a list": json.dumps(_set("record", ["pass"], outer=True)(good_save())),
    "json list": json.dumps([good_save()]),
    "json null": "null",
    "truncated": json.dumps(good_save())[:57],
    "empty": "",
    "not utf-8": b"\xff\xfe{}".decode("latin-1"),
    "bogus verdict": json.dumps(_set("verdict", "bogus")(good_save())),
    "another check's record": json.dumps(_set("id", "C1")(good_save())),
    "quick not a bool": json.dumps(_set("quick", "yes", outer=True)(good_save())),
    "outer key added": json.dumps(_set("extra", 1, outer=True)(good_save())),
    "inputs not an object": json.dumps(_set("inputs", "abc", outer=True)(good_save())),
    "seed offset negative": json.dumps(_set("seed_offset", -1, outer=True)(good_save())),
    "ratio a string": json.dumps(_set("ratio", "0.5")(good_save())),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_saved_record_is_reported_in_one_line_and_rerun(tmp_path, capsys, damage):
    saved = tmp_path / "resume" / f"{CHEAP}.json"
    saved.parent.mkdir()
    saved.write_bytes(DAMAGE[damage].encode("latin-1"))
    records = report.run_all(quick=True, only=[CHEAP], progress=False, resume_dir=saved.parent)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(saved) in err[0] and "damaged" in err[0] and "rerun" in err[0], err
    assert "Traceback" not in "\n".join(err)
    (rec,) = records
    assert rec.verdict in VERDICTS and rec.claim != "claim"        # the check ran; the damaged record was not used
    again = json.loads(saved.read_text())                          # ...and its save replaced the damaged one
    assert again["record"]["claim"] == rec.claim and Record.from_dict(again["record"]) == rec


def test_damaged_record_from_the_real_cli(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / f"{CHEAP}.json").write_text(DAMAGE["bogus verdict"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "paper_checks", "--quick", "--only", CHEAP, "--resume", tmp_path / "r",
                        "--out", tmp_path / "R.md"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "bogus" in r.stderr and "damaged" in r.stderr
    assert "**bogus**" not in (tmp_path / "R.md").read_text()


def test_good_saved_record_is_reused_and_other_mode_is_rerun_quietly(tmp_path, capsys):
    d = tmp_path / "r"
    d.mkdir()
    (d / f"{CHEAP}.json").write_text(json.dumps(good_save()))
    (rec,) = report.run_all(quick=True, only=[CHEAP], progress=False, resume_dir=d)
    assert rec.claim == "claim" and rec.seconds == 1.5 and capsys.readouterr().err == ""
    (rec,) = report.run_all(quick=False, only=[CHEAP], progress=False, resume_dir=d)  # saved in quick mode
    assert rec.claim != "claim" and capsys.readouterr().err == ""


def test_saved_record_of_other_inputs_seed_offset_or_format_is_rerun_quietly(tmp_path, capsys):
    """A saved check is reused only with this run's inputs hash and seed offset; a save from before input hashes
    ({version, quick, record}) is rerun, not reported as damaged."""
    d = tmp_path / "r"
    d.mkdir()
    other = good_save()
    other["inputs"] = {**other["inputs"], "source_hash": "0" * 16}
    old = {k: good_save()[k] for k in ("version", "quick", "record")}
    for saved in (other, _set("seed_offset", 1020, outer=True)(good_save()), old):
        (d / f"{CHEAP}.json").write_text(json.dumps(saved))
        (rec,) = report.run_all(quick=True, only=[CHEAP], progress=False, resume_dir=d)
        assert rec.claim != "claim" and capsys.readouterr().err == ""
        again = json.loads((d / f"{CHEAP}.json").read_text())
        assert again["inputs"]["source_hash"] == report.inputs_now(CHEAP)["source_hash"] and again["seed_offset"] == 0


def test_crashed_saved_record_is_rerun_not_reused(tmp_path, capsys):
    """A crash is not a result: after its cause is fixed, --resume runs the check again (same package version)."""
    d = tmp_path / "r"
    d.mkdir()
    (d / f"{CHEAP}.json").write_text(json.dumps(_set("verdict", "crashed")(good_save())))
    (rec,) = report.run_all(quick=True, only=[CHEAP], progress=False, resume_dir=d)
    assert rec.claim != "claim" and rec.verdict != "crashed" and capsys.readouterr().err == ""
    assert json.loads((d / f"{CHEAP}.json").read_text())["record"]["verdict"] == rec.verdict


@pytest.mark.parametrize("verdict", ["bogus", "PASS", ""])
def test_record_from_dict_refuses_a_verdict_that_is_not_one(verdict):
    data = dict(good_save()["record"], verdict=verdict)
    with pytest.raises(ValueError, match="verdict"):
        Record.from_dict(data)


# ------------------------------------------------------------------ output folders that cannot be written


def test_resume_folder_under_a_file_is_one_line_before_any_check(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--resume", tmp_path / "file" / "r",
                                   "--out", tmp_path / "R.md"], capsys)
    one_line_error(code, err, "--resume", str(tmp_path / "file" / "r"), "cannot", "Not a directory")
    assert "[paper_checks]" not in err
    assert sorted(os.listdir(tmp_path)) == ["file"]                 # no report, nothing half-written


def test_out_folder_under_a_file_is_one_line_before_any_check(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--resume", tmp_path / "r",
                                   "--out", tmp_path / "file" / "sub" / "R.md"], capsys)
    one_line_error(code, err, "--out", str(tmp_path / "file" / "sub"), "cannot", "Not a directory")
    assert "[paper_checks]" not in err
    assert not any((tmp_path / "r").glob("*.json"))                  # refused before any check ran


def test_record_that_cannot_be_saved_is_one_line_and_leaves_no_temporary(tmp_path, capsys):
    d = tmp_path / "r"
    (d / f"{CHEAP}.json").mkdir(parents=True)                       # the save's rename onto a folder fails
    code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--resume", d, "--out", tmp_path / "R.md"], capsys)
    one_line_error(code, err, f"cannot save the record of {CHEAP}", str(d / f"{CHEAP}.json"))
    assert sorted(os.listdir(d)) == [f"{CHEAP}.json"] and not (tmp_path / "R.md").exists()


def test_full_disk_while_saving_a_record_is_one_line(tmp_path, capsys, monkeypatch):
    def full(path, obj, indent=1):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(report, "atomic_write_json", full)
    code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--resume", tmp_path / "r", "--out", tmp_path / "R.md"],
                            capsys)
    one_line_error(code, err, str(tmp_path / "r" / f"{CHEAP}.json"), "No space left on device")
    assert not (tmp_path / "R.md").exists() and os.listdir(tmp_path / "r") == []


def test_unwritable_resume_folder_as_a_non_root_user(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder does not stop root's writes (covered by the tests above)")
    d = tmp_path / "r"
    d.mkdir()
    d.chmod(0o555)
    try:
        code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--resume", d, "--out", tmp_path / "R.md"], capsys)
    finally:
        d.chmod(0o755)
    one_line_error(code, err, "--resume", str(d), "Permission denied")
    assert os.listdir(d) == []


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_only_naming_no_check_is_refused_not_run_as_all(tmp_path, capsys, only):
    code, _, err = run_main(main, ["--quick", "--only", only, "--out", tmp_path / "R.md"], capsys)
    one_line_error(code, err, "names no check", "C8")
    assert "[paper_checks]" not in err and not (tmp_path / "R.md").exists()


def test_only_with_a_repeated_id_runs_it_once(tmp_path, capsys):
    code, out, err = run_main(main, ["--quick", "--only", f"{CHEAP}, {CHEAP}", "--out", tmp_path / "R.md"], capsys)
    assert code == 0, err
    text = (tmp_path / "R.md").read_text()
    assert text.count(f"## {CHEAP}:") == 1 and out.count(f"\n{CHEAP} ") == 1
    assert f"Command: `python -m paper_checks --quick --only {CHEAP}`" in text   # the report says it is partial


def test_only_never_replaces_the_committed_full_report(tmp_path, capsys, monkeypatch):
    """From the repository root, a full-mode run of some checks writes runs/paper_checks/REPORT.md, not
    paper_checks/REPORT.md (the report of every check)."""
    (tmp_path / "paper_checks").mkdir()
    (tmp_path / "paper_checks" / "checks.py").write_text("")
    (tmp_path / "paper_checks" / "REPORT.md").write_text("the full report")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(main, ["--only", CHEAP], capsys)
    assert code == 0, err
    assert (tmp_path / "paper_checks" / "REPORT.md").read_text() == "the full report"
    assert "wrote runs/paper_checks/REPORT.md" in out and (tmp_path / "runs" / "paper_checks" / "REPORT.md").is_file()


@pytest.mark.parametrize("flag", ["--out", "--resume"])
def test_empty_path_is_refused_not_taken_as_the_working_folder(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--only", CHEAP, flag, ""] + (["--out", tmp_path / "R.md"] if flag == "--resume" else [])
    code, _, err = run_main(main, argv, capsys)
    one_line_error(code, err, f"argument {flag}", "'' is not allowed: a path")
    assert os.listdir(tmp_path) == []


def test_out_that_is_a_fifo_is_refused_and_left_alone(tmp_path, capsys):
    """The report's atomic write renames over its target: a FIFO or a device (--out /dev/null as root!) would be
    replaced by a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = run_main(main, ["--quick", "--only", CHEAP, "--out", fifo], capsys)
    one_line_error(code, err, f"--out {fifo} is not a regular file")
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["fifo"]
