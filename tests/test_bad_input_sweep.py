"""Bad-input catalogue of the sweep, figures and paper_checks CLIs: each case is exit code 2 and one
stderr line naming the input and what is allowed (never a traceback), and leaves --out usable."""

import json
import subprocess
import sys

import pytest

from mmcl_theory.sweep import main

SMALL = ["--set", "n=30", "--set", "d=40", "--set", "n_test=100", "--learners", "theory_mmcl,mmcl_closed_form,sl_min_norm",
         "--no-progress"]


def _one_line_exit_2(capsys, argv, needle, run=main):
    try:
        code = run(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
    return err[0]


CASES = [
    (["no_such_sweep"], "known sweeps are"),
    ([], "give a sweep name"),
    (["caption_richness", "--set", "bogus=1"], "valid keys are"),
    (["caption_richness", "--set", "nokey"], "must look like KEY=VALUE"),
    (["caption_richness", "--set", "=3"], "must look like KEY=VALUE"),
    (["caption_richness", "--set", "p=1.5"], "p = 1.5 is out of range"),
    (["caption_richness", "--set", "p=-0.1"], "p = -0.1 is out of range"),
    (["caption_richness", "--set", "r=0.5"], "varies 'r' itself"),
    (["caption_richness", "--set", "sigma_core=-1"], "sigma_core = -1.0 is out of range"),
    (["caption_richness", "--set", "sigma_core=inf"], "sigma_core = 'inf' is not allowed: a finite number"),
    (["caption_richness", "--set", "sigma_core=nan"], "sigma_core = 'nan' is not allowed: a finite number"),
    (["caption_richness", "--set", "sigma_core=abc"], "sigma_core = 'abc' is not allowed: a finite number"),
    (["caption_richness", "--set", "n=1.5"], "n = '1.5' is not allowed: an integer"),
    (["caption_richness", "--set", "n=1e8"], "n = '1e8' is not allowed: an integer"),
    (["caption_richness", "--set", "n=1"], "n = 1 is out of range"),
    (["caption_richness", "--set", "d=1"], "d = 1 is out of range"),
    (["caption_richness", "--set", "n_test=0"], "n_test = 0 is out of range"),
    (["caption_richness", "--set", "learn_temperature=maybe"], "true or false"),
    (["caption_richness", "--set", "steps=0"], "steps = 0 is out of range"),
    (["caption_richness", "--set", "temperature=0"], "temperature = 0.0 is out of range"),
    (["caption_richness", "--set", "lr=-1"], "lr = -1.0 is out of range"),
    (["caption_richness", "--set", "rank=-1"], "rank = -1 is out of range"),
    (["feature_sharing", "--set", "K=1"], "K = 1 is out of range"),
    (["feature_sharing", "--set", "annotate=0.5"], "varies 'annotate' itself"),
    (["detail_types", "--set", "beta=2"], "beta = 2.0 is out of range"),
    (["caption_richness", "--learners", "sl_magic"], "valid learners are"),
    (["caption_richness", "--learners", ""], "valid learners are"),
    (["caption_richness", "--learners", "sl_min_norm,theory_mmcl,sl_min_norm"], "sl_min_norm listed more than once"),
    (["caption_richness", "--seeds", "0"], "--seeds = 0"),
    (["caption_richness", "--seeds", "-3"], "--seeds = -3"),
    (["caption_richness", "--seeds", "two"], "invalid int value"),
    (["caption_richness", "--route", "magic"], "allowed exact, sampled"),
    (["caption_richness", "--device", "tpu"], "invalid choice"),
    (["caption_richness", "--out", "/proc/forbidden/x"], "cannot write to --out"),
    (["caption_richness", "--bogus-flag"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(c[0])[:60] or "empty" for c in CASES])
def test_sweep_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    _one_line_exit_2(capsys, argv, needle)


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_exit_2(capsys, ["caption_richness", "--quick", "--out", str(f), *SMALL], "is a file")


def test_device_gpu_without_gpu_is_one_line():
    result = subprocess.run([sys.executable, "-m", "mmcl_theory.sweep", "caption_richness", "--quick", "--device",
                             "gpu", "--out", "/tmp/unused"], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "finds no GPU" in lines[-1], result.stderr


def test_a_refused_value_leaves_out_usable_for_the_corrected_command(tmp_path, capsys):
    out = tmp_path / "cr"
    _one_line_exit_2(capsys, ["caption_richness", "--quick", "--out", str(out), *SMALL, "--set", "sigma_core=abc"],
                     "a finite number")
    assert not (out / "sweep.json").exists()
    assert main(["caption_richness", "--quick", "--out", str(out), *SMALL, "--set", "sigma_core=2"]) == 0


def test_quick_with_seeds_and_typed_bool(tmp_path, capsys):
    out = tmp_path / "cr"
    assert main(["caption_richness", "--quick", "--seeds", "3", "--out", str(out), *SMALL,
                 "--set", "learn_temperature=False"]) == 0
    meta = json.loads((out / "results.json").read_text())
    assert meta["config"]["settings"]["learn_temperature"] is False and meta["config"]["seeds"] == [0, 1, 2]
    capsys.readouterr()


def _quick(out, *extra):
    """core_variance --quick at small shapes: three points."""
    return ["core_variance", "--quick", "--out", str(out), *SMALL, *extra]


def test_resume_state_of_another_plan_is_refused_even_without_sweep_json(tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(_quick(out, "--set", "p=0.95")) == 0
    (out / "sweep.json").unlink()
    capsys.readouterr()
    _one_line_exit_2(capsys, _quick(out, "--set", "p=0.5"), "a point of another sweep plan")


def test_torn_tail_is_cut_and_the_next_point_is_kept(tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(_quick(out)) == 0
    points = out / "points.jsonl"
    lines = points.read_text().splitlines()
    assert len(lines) == 3
    points.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # kill during the second append
    assert main(_quick(out)) == 0
    again = points.read_text().splitlines()
    assert len(again) == 3 and again[0] == lines[0]
    assert [json.loads(l)["point"] for l in again] == [json.loads(l)["point"] for l in lines]
    assert [json.loads(l)["rows"] for l in again] == [json.loads(l)["rows"] for l in lines]  # recomputed bit-identically
    capsys.readouterr()


@pytest.mark.parametrize("bad_line, needle", [
    ('{"plan": "x"}', "another sweep plan"),
    ('[1, 2, 3]', "where a JSON object was expected"),
    ('not json at all', "not a JSON object"),
])
def test_wrong_shape_lines_are_one_line_errors(tmp_path, capsys, bad_line, needle):
    out = tmp_path / "ss"
    assert main(_quick(out)) == 0
    points = out / "points.jsonl"
    points.write_text(bad_line + "\n" + points.read_text())
    capsys.readouterr()
    _one_line_exit_2(capsys, _quick(out), needle)


def test_wrong_rows_in_a_line_of_this_plan(tmp_path, capsys):
    out = tmp_path / "ss"
    assert main(_quick(out)) == 0
    points = out / "points.jsonl"
    first = json.loads(points.read_text().splitlines()[0])
    first["rows"] = [{"learner": "x"}]
    points.write_text(json.dumps(first) + "\n")
    capsys.readouterr()
    _one_line_exit_2(capsys, _quick(out), "not a point of this plan")


def test_same_seed_same_bytes(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_quick(a, "--learners", "theory_mmcl,mmcl_closed_form,mmcl_infonce_linear,sl_logistic",
                       "--set", "steps=20")) == 0
    assert main(_quick(b, "--learners", "theory_mmcl,mmcl_closed_form,mmcl_infonce_linear,sl_logistic",
                       "--set", "steps=20")) == 0
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    assert (a / "points.jsonl").read_bytes() == (b / "points.jsonl").read_bytes()
    capsys.readouterr()


# ------------------------------------------------------------------ broken sweep definitions


@pytest.mark.parametrize("text, needle", [
    ("", "missing required key(s) model, param, values (the file is empty)"),
    ('model = "M1"\nparam = "r"\n', "missing required key(s) values"),
    ('model = "M1"\nparam = "r"\nvalues = []\n', "values = [] is not allowed: a non-empty list"),
    ('model = "M1"\nparam = "r"\nvalue = [0.5]\nvalues = [0.5]\n', "unknown key(s) value: allowed name, model"),
    ('model = "M1"\nparam = 3\nvalues = [0.5]\n', "param = 3 is not allowed"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\nseeds = 0\n', "seeds = 0 is not allowed: an integer >= 1"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\nbase = 1\n', "base = 1 is not allowed: a table"),
    ("model = M1\n", "is not valid TOML"),
])
def test_broken_sweep_definition_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, text, needle):
    import mmcl_theory.sweep as sweep

    definitions = tmp_path / "sweeps"
    definitions.mkdir()
    (definitions / "broken.toml").write_text(text)
    monkeypatch.setattr(sweep.plan, "SWEEP_DIR", definitions)
    out = tmp_path / "out"
    line = _one_line_exit_2(capsys, ["broken", "--quick", "--out", str(out), *SMALL], needle)
    assert "broken.toml" in line
    assert not out.exists()
    assert main(["--list"]) == 0  # --list still lists every sweep, the broken one with its reason
    assert "broken" in capsys.readouterr().out


# ------------------------------------------------------------------ memory, refused before anything is written


def test_n_that_cannot_fit_in_memory_is_refused_up_front(tmp_path, capsys):
    """n = 10^8 is in M1's range, but its 6 n x d float32 arrays (d 40) alone are 89 GiB; refused with the estimate
    and the machine's limit before --out is made, so the corrected command runs in the same folder."""
    out = tmp_path / "cr"
    base = ["caption_richness", "--quick", "--out", str(out), "--set", "d=40", "--set", "n_test=100",
            "--learners", "theory_mmcl,mmcl_closed_form,sl_min_norm", "--no-progress"]
    line = _one_line_exit_2(capsys, [*base, "--set", "n=100000000"], "needs about")
    expected = 4 * (6 * 10**8 * 40 + 2 * 40**2)  # bytes: 6 n x d arrays + 2 d x d (min(n, d) = d), float32
    assert f"point r = 0.0 needs about {expected / 2**30:.3g} GiB of memory" in line
    assert "available here (MemAvailable in /proc/meminfo)" in line or "available here (available pages" in line
    assert not out.exists()
    assert main([*base, "--set", "n=30"]) == 0
    capsys.readouterr()


def test_memory_estimate_and_limit_in_the_line(tmp_path, monkeypatch, capsys):
    """With the limit set below a small sweep's estimate, the line carries both numbers; --part and --launcher local
    are refused the same way before their records; theory rows alone draw no data and always run."""
    import mmcl_theory.sweep as sweep

    monkeypatch.setattr(sweep.memory, "available_memory", lambda device="cpu": (30_000, "a test limit"))
    out = tmp_path / "cr"
    need = 4 * (6 * 30 * 40 + 2 * 30**2)  # n 30, d 40: 36000 bytes
    for extra in ([], ["--part", "1/2"], ["--launcher", "local", "--parts", "2", "--array-parallelism", "1"]):
        line = _one_line_exit_2(capsys, ["caption_richness", "--quick", "--out", str(out), *SMALL, *extra],
                                "needs about")
        assert f"needs about {need / 2**30:.3g} GiB of memory" in line
        assert f"more than the {30_000 / 2**30:.3g} GiB available here (a test limit)" in line
        assert not out.exists()
    assert main(["caption_richness", "--quick", "--out", str(out), "--learners", "theory_mmcl", "--no-progress",
                 "--set", "n=100000000"]) == 0
    capsys.readouterr()
