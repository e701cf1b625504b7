"""Bad-input catalogue of the sweep, figures and paper_checks CLIs: each case is exit code 2 and one
stderr line naming the input and what is allowed (never a traceback), and leaves --out usable."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    # float32 training overflows: 1e200 raised OverflowError, 1e100 scored 0.5 everywhere (datamodel.SCALE_MAX)
    (["caption_richness", "--set", "sigma_core=1e200"], "sigma_core = 1e+200 is out of range: allowed a finite number in [0.0, 1000000.0]"),
    (["caption_richness", "--set", "sigma_xi=1e100"], "sigma_xi = 1e+100 is out of range"),
    (["detail_types", "--set", "sigma_spu=2e6"], "sigma_spu = 2000000.0 is out of range"),
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
    (["caption_richness", "--seeds", "1000000000"], "--seeds = 1000000000 is out of range: allowed integers in [1, 10000]"),
    (["caption_richness", "--route", "magic"], "allowed exact, sampled"),
    (["caption_richness", "--device", "tpu"], "invalid choice"),
    (["caption_richness", "--out", "/proc/forbidden/x"], "cannot write to --out"),
    (["caption_richness", "--bogus-flag"], "unrecognized arguments"),
    # a --set that a variant overrides used to be recorded in sweep.json but not applied (and so not range-checked)
    (["temperature", "--quick", "--set", "steps=-5"],
     "--set steps would be overwritten: variant(s) steps200, steps5000, d10 of sweep 'temperature' set steps themselves"),
    (["temperature", "--quick", "--set", "steps=1000000000"], "--set steps would be overwritten: variant(s) steps200"),
    (["temperature", "--quick", "--set", "d=50"], "--set d would be overwritten: variant(s) d10 of sweep"),
    (["paper_mnist", "--quick", "--set", "pi_spu=0.3"], "--set pi_spu would be overwritten: variant(s) pi_spu_1, "
                                                        "pi_spu_0.5, pi_spu_0 of sweep 'paper_mnist' set pi_spu"),
    # launcher options that the sweep would ignore, and a malformed --slurm-extra named as such
    (["caption_richness", "--slurm-extra", "account=proj"], "--slurm-extra is for --launcher slurm (without it"),
    (["caption_richness", "--launcher", "local", "--parts", "2", "--slurm-extra", "qos=long"],
     "--slurm-extra is for --launcher slurm (--launcher local would ignore it)"),
    (["caption_richness", "--time-min", "5", "--slurm-partition", "gpu"],
     "--slurm-partition, --time-min are for --launcher slurm"),
    (["caption_richness", "--no-wait"], "--no-wait is for --launcher slurm"),
    (["caption_richness", "--array-parallelism", "2"], "--array-parallelism needs --launcher local or"),
    (["caption_richness", "--part", "1/2", "--cpus-per-task", "4"], "--cpus-per-task is for --launcher slurm"),
    (["caption_richness", "--launcher", "slurm", "--parts", "2", "--slurm-extra", "account"],
     "--slurm-extra 'account' must look like KEY=VALUE"),
    # a sweep definition given as a path that is not a file
    (["/no/such/dir/x.toml"], "sweep definition /no/such/dir/x.toml is not a file"),
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


def test_damaged_sweep_json_is_one_line(tmp_path, capsys):
    """A sweep.json without a plan hash ({} used to be taken for "a different sweep configuration (plan None)"), not
    JSON, or a folder: one line naming it."""
    out = tmp_path / "cr"
    argv = ["caption_richness", "--quick", "--learners", "theory_mmcl", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    for text in ("{}", '{"hash": 3}', "[1]", "{not json"):
        (out / "sweep.json").write_text(text)
        capsys.readouterr()
        _one_line_exit_2(capsys, argv, f"{out / 'sweep.json'} is corrupt: delete it")
    (out / "sweep.json").unlink()
    (out / "sweep.json").mkdir()
    _one_line_exit_2(capsys, argv, f"{out / 'sweep.json'}: Is a directory")


def test_rows_with_values_of_the_wrong_kind_are_refused(tmp_path, capsys):
    """A line of this plan whose rows hold a null, NaN or out-of-range accuracy or a seed that is a string: one line
    naming the file and line (a null accuracy used to be a TypeError traceback in the table, NaN a line about a
    result CSV)."""
    out = tmp_path / "ss"
    assert main(_quick(out)) == 0
    points = out / "points.jsonl"
    lines = points.read_text().splitlines()
    for field, value in (("accuracy", None), ("accuracy", float("nan")), ("accuracy", 1.5), ("seed", "0")):
        first = json.loads(lines[0])
        first["rows"][-1][field] = value
        points.write_text("\n".join([*lines[:-1], json.dumps(first)]) + "\n")
        capsys.readouterr()
        line = _one_line_exit_2(capsys, _quick(out), f"{points}, line {len(lines)}: not a point of this plan")
        assert "accuracy a number in [0, 1]" in line


# ------------------------------------------------------------------ broken sweep definitions


@pytest.mark.parametrize("text, needle", [
    ("", "missing required key(s) model, param, values (the file is empty)"),
    ('model = "M1"\nparam = "r"\n', "missing required key(s) values"),
    ('model = "M1"\nparam = "r"\nvalues = []\n', "values = [] is not allowed: a non-empty list"),
    ('model = "M1"\nparam = "r"\nvalue = [0.5]\nvalues = [0.5]\n', "unknown key(s) value: allowed name, model"),
    ('model = "M1"\nparam = 3\nvalues = [0.5]\n', "param = 3 is not allowed"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\nseeds = 0\n', "seeds = 0 is not allowed: an integer in [1, 10000]"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\nbase = 1\n', "base = 1 is not allowed: a table"),
    ("model = M1\n", "is not valid TOML"),
    # tables whose keys the model lacks, of the wrong kind, or that leave no point (TypeError tracebacks before)
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[base]\nbogus = 1\n', "unknown key(s) bogus in [base]: allowed sigma_core"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[settings]\nn = 1\n', "unknown key(s) n in [settings]: allowed rank"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[quick]\nlearners = ["x"]\n', "unknown key(s) learners in [quick]"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[quick]\nsettings = 3\n', "quick.settings = 3 is not allowed: a table"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[variants.a]\nbogus = 1\n', "unknown key(s) bogus in [variants.a]"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\nvariants = {a = 3}\n', "variants.a = 3 is not allowed: a table"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[variants.a]\nvalues = 3\n',
     "variants.a.values = 3 is not allowed: a non-empty list"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[variants.a]\nlearners = "sl_min_norm"\n',
     "variants.a.learners = 'sl_min_norm' is not allowed: a non-empty list of learner names"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[variants.a]\nlearners = ["sl_nope"]\n',
     "variants.a.learners: unknown learner(s) sl_nope for model M1"),
    ('model = "M1"\nparam = "r"\nvalues = [0.5]\n[variants.a]\nlearners = ["bayes_core"]\n',
     "broken.toml: no point to run: none of its variants runs any of the learners theory_mmcl"),
    ('model = "M9"\nparam = "r"\nvalues = [0.5]\n', "unknown model 'M9': allowed M1"),
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


# ------------------------------------------------------------------ a theory-only point is counted too


def test_theory_only_point_too_large_for_memory_is_refused_up_front(tmp_path, capsys):
    """Theory rows draw no sample, but M2's exact population accuracy holds K^2 test groups of 2K latents (and
    several 2K x 2K matrices): at K = 10^4 that is about 29 TiB. It used to count 0 bytes, pass the check and run for
    minutes with no output; now it is refused before --out is made, naming the learner."""
    out = tmp_path / "fs"
    base = ["feature_sharing", "--quick", "--out", str(out), "--learners", "theory_mmcl", "--no-progress"]
    line = _one_line_exit_2(capsys, [*base, "--set", "K=10000", "--set", "d=20000"], "needs about")
    assert "100000000 test groups of 2 x l" in line and "theory rows of theory_mmcl" in line, line
    assert not out.exists()


def test_theory_memory_counts_every_population_learner():
    """The estimate is the larger of a point's theory arrays and its fitted learners' arrays (they never coexist):
    DM2's theory holds l x l matrices (l = 2m) and no test groups; M1's population InfoNCE its batch^2 logits."""
    from mmcl_theory.datamodel import make_config
    from mmcl_theory.learners import LearnerSettings
    from mmcl_theory.sweep import point_memory

    fast = LearnerSettings()
    need, how = point_memory(make_config("DM2", m=1000, d=2000), fast, ("theory_mmcl", "bayes_core"), "sampled")
    assert need == 8 * 6 * 2000**2 and how.startswith("6 float64 arrays of l x l (l = 2000)"), how
    need, how = point_memory(make_config("M1", n=10000), fast, ("theory_infonce",), "exact")
    assert need == 8 * 6 * 2 * 10000**2 and "theory rows of theory_infonce" in how, how
    cfg = make_config("M1", n=30, d=40, n_test=100)  # fitted arrays exceed M1's tiny theory: the old estimate
    assert point_memory(cfg, fast, ("theory_mmcl", "sl_min_norm"), "exact")[0] == 4 * (6 * 30 * 40 + 2 * 30**2)


# ------------------------------------------------------------------ a sweep given as a file path


def test_sweep_file_path_writes_into_out_under_its_own_name(tmp_path, monkeypatch, capsys):
    """A definition given as a path (ending in .toml) runs like a named sweep: the figure goes into --out (it used to
    go beside the definition, overwritten at each run), and the sweep's name is the file's `name`, else its stem,
    never the machine's absolute path; without --out it goes to runs/NAME[-quick] of the working folder."""
    defs = tmp_path / "defs"
    defs.mkdir()
    text = (Path(__file__).resolve().parents[1] / "mmcl_theory" / "sweeps" / "core_variance.toml").read_text()
    named = defs / "x.toml"
    named.write_text(text.replace('name = "core_variance"', 'name = "my_core"'))
    stem_only = defs / "stem_only.toml"
    stem_only.write_text(text.replace('name = "core_variance"\n', ""))
    theory = ["--quick", "--learners", "theory_mmcl", "--no-progress"]
    out = tmp_path / "out"
    assert main([str(named), *theory, "--out", str(out)]) == 0
    assert (out / "my_core.png").is_file() and sorted(p.name for p in defs.iterdir()) == ["stem_only.toml", "x.toml"]
    meta = json.loads((out / "results.json").read_text())
    assert meta["sweep"] == "my_core" and meta["config"]["name"] == "my_core"
    assert json.loads((out / "sweep.json").read_text())["plan"]["name"] == "my_core"
    assert str(tmp_path) not in (out / "results.csv").read_text() + (out / "results.json").read_text()
    monkeypatch.chdir(tmp_path)
    assert main([str(stem_only), *theory]) == 0
    assert (tmp_path / "runs" / "stem_only-quick" / "stem_only.png").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("text, needle", [
    ('name = "../up"\nmodel = "M1"\nparam = "r"\nvalues = [0.5]\n', "name = '../up' is not allowed: a name of letters"),
    ('name = ""\nmodel = "M1"\nparam = "r"\nvalues = [0.5]\n', "name = '' is not allowed"),
])
def test_sweep_file_with_a_name_that_is_a_path_is_refused(tmp_path, capsys, text, needle):
    definition = tmp_path / "bad.toml"
    definition.write_text(text)
    _one_line_exit_2(capsys, [str(definition), "--out", str(tmp_path / "o")], needle)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ writes that fail, writes that were cut


def _theory_parts(out):
    """Parts 1/2 and 2/2 of caption_richness --quick, theory rows only (no compiling), into out."""
    for k in (1, 2):
        assert main(["caption_richness", "--quick", "--learners", "theory_mmcl", "--no-progress", "--part", f"{k}/2",
                     "--out", str(out)]) == 0


def test_merge_killed_mid_write_leaves_nothing_the_next_run_trips_over(tmp_path, capsys):
    """A merge killed with kill -9 while writing results.csv leaves its temporary sibling in OUT (here a process that
    writes it through io.temp_path and kills itself with SIGKILL). The next merge deletes it, and keeps those of a
    live writer (this process's parent) and of another host, which may still be writing."""
    import socket

    from mmcl_theory.io import TEMP_SUFFIX

    out = tmp_path / "parts"
    _theory_parts(out)
    killed = subprocess.run([sys.executable, "-c", "import os, signal, sys\nfrom mmcl_theory.io import temp_path\n"
                             "temp_path(sys.argv[1]).write_text('half a csv')\nos.kill(os.getpid(), signal.SIGKILL)",
                             str(out / "results.csv")], capture_output=True)
    assert killed.returncode == -9
    left = [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert len(left) == 1 and left[0].name.startswith(".results.csv.")
    live = out / f".results.json.{os.getppid()}@{socket.gethostname()}{TEMP_SUFFIX}"
    live.write_text("being written")
    other_host = out / f".results.json.{os.getpid()}@not-{socket.gethostname()}{TEMP_SUFFIX}"
    other_host.write_text("another machine")
    assert main(["merge", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)) == sorted([live.name, other_host.name])
    assert (out / "results.csv").read_text().startswith("sweep,")
    capsys.readouterr()


def test_read_only_out_is_one_line_and_writes_nothing(tmp_path, capsys):
    """sweep --out and merge --out in a folder without write permission: one line naming the folder and why."""
    if os.geteuid() == 0:
        pytest.skip("running as root, where a read-only folder stays writable; the other write failures are tested "
                    "in test_failed_write_names_the_file_and_leaves_nothing_half_written")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _one_line_exit_2(capsys, ["caption_richness", "--quick", "--learners", "theory_mmcl", "--out",
                                  str(locked / "o")], f"cannot write to --out {locked / 'o'}: Permission denied")
        parts = tmp_path / "parts"
        _theory_parts(parts)
        _one_line_exit_2(capsys, ["merge", str(parts), "--out", str(locked)],
                         f"cannot write to --out {locked}: Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["sweep", "merge"])
def test_failed_write_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys, command):
    """A write that fails after --out was checked (a full disk: ENOSPC at the fsync; a results.csv that is a folder)
    used to be an OSError traceback; now it is one line naming the file and the reason, exit 2, with no temporary
    file left and no results.csv."""
    import errno

    import mmcl_theory.io as mio

    out = tmp_path / "o"
    argv = ["caption_richness", "--quick", "--learners", "theory_mmcl", "--no-progress", "--out", str(out)]
    if command == "merge":
        _theory_parts(out)
        argv = ["merge", str(out)]
    (out / "results.csv").mkdir(parents=True)
    _one_line_exit_2(capsys, argv, f"{out / 'results.csv'}: Is a directory")
    (out / "results.csv").rmdir()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mio.os, "fsync", full)
    line = _one_line_exit_2(capsys, argv, ": No space left on device")
    assert line.startswith(f"error: {out}{os.sep}")
    monkeypatch.undo()
    assert not (out / "results.csv").exists() and not list(out.glob("*.tmp"))


# ------------------------------------------------------------------ empty paths (Path('') is the working folder)


def test_empty_out_is_refused_not_taken_as_the_working_folder(tmp_path, monkeypatch, capsys):
    """`sweep NAME --out ''` used to run the whole sweep into the working folder (points.jsonl, results.csv, ... in
    the repository root); merge's OUT and --out likewise."""
    parts = tmp_path / "parts"
    _theory_parts(parts)
    capsys.readouterr()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for argv, flag in ((["caption_richness", "--quick", "--learners", "theory_mmcl", "--no-progress", "--out", ""],
                        "--out"), (["merge", str(parts), "--out", ""], "--out"), (["merge", " "], "OUT")):
        _one_line_exit_2(capsys, argv, f"argument {flag}: {flag} {argv[-1]!r} is not allowed: a path")
    assert os.listdir(cwd) == []


# ------------------------------------------------------------------ figures: its options and --from's results


def _figures(argv):
    from mmcl_theory import figures

    return figures.main(argv)


@pytest.fixture
def stored(tmp_path, capsys):
    """A --from folder holding caption_richness --quick's results (theory rows only: no compiling)."""
    assert main(["caption_richness", "--quick", "--learners", "theory_mmcl", "--no-progress", "--out",
                 str(tmp_path / "from" / "caption_richness")]) == 0
    capsys.readouterr()
    return tmp_path / "from"


@pytest.mark.parametrize("argv, needle", [
    (["--from", ""], "argument --from: --from '' is not allowed: a path"),
    (["--out", ""], "argument --out: --out '' is not allowed: a path"),
    (["--runs", " "], "argument --runs: --runs ' ' is not allowed: a path"),
    (["--only", ""], "--only '' names no figure: comma-separated names from caption_richness, "),
    (["--only", " , "], "--only ' , ' names no figure"),
    (["--quick-for", "caption_richnes"], "--quick-for: unknown sweep figure(s) caption_richnes: known caption_richness"),
])
def test_figures_bad_option_is_one_line_and_writes_nothing(stored, tmp_path, monkeypatch, capsys, argv, needle):
    """Each used to be taken: '' for the working folder (--out '' drew the figure and its CSV there), --only '' for
    every figure (without --from: every sweep, hours), an unknown --quick-for name ignored."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    opts = {"--from": str(stored), "--only": "caption_richness", "--out": str(tmp_path / "o")}
    opts.update(zip(argv[::2], argv[1::2]))
    _one_line_exit_2(capsys, [x for kv in opts.items() for x in kv], needle, run=_figures)
    assert os.listdir(cwd) == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage, needle", [
    (lambda j: j.update(rows=[1, 2]), "row 1 is not a JSON object"),
    (lambda j: j.update(rows=[]), "rows is not a non-empty list"),
    (lambda j: [r.pop("learner") for r in j["rows"]], "row 1 lacks learner"),
    (lambda j: j["rows"][3].update(accuracy=float("nan")), "row 4: accuracy nan is not a number in [0, 1]"),
    (lambda j: j["rows"][0].update(accuracy=1.5), "row 1: accuracy 1.5 is not a number in [0, 1]"),
    (lambda j: j["rows"][0].update(accuracy="0.5"), "row 1: accuracy '0.5' is not a number in [0, 1]"),
    (lambda j: j["rows"][1].update(value=None), "row 2 has value of the wrong kind"),
    (lambda j: j["rows"][2].update(test="ood"), "row 3: test 'ood' is not one of aligned, independent, flipped"),
    (lambda j: j["rows"][0].update(curve=[[10, 2.0]]), "row 1: curve is not a list of [epoch, accuracy in [0, 1]]"),
    (lambda j: [r.update(sweep="core_variance") for r in j["rows"]], "row 1 is of sweep 'core_variance'"),
    (lambda j: j.update(config=5), "its config is not a JSON object"),
], ids=["not-objects", "no-rows", "missing-key", "nan", "above-1", "string", "value", "test", "curve", "other-sweep",
        "config"])
def test_figures_from_damaged_results_is_a_reported_skip(stored, tmp_path, capsys, damage, needle):
    """A results.json of the wrong shape under --from used to be a traceback (KeyError, TypeError, matplotlib's
    ValueError) or, for a NaN or out-of-range accuracy or another sweep's rows, a figure and CSV drawn from it; now
    the figure is skipped with one line naming the file and the problem (exit 1, like missing results)."""
    path = stored / "caption_richness" / "results.json"
    meta = json.loads(path.read_text())
    damage(meta)
    path.write_text(json.dumps(meta))
    code = _figures(["--from", str(stored), "--only", "caption_richness", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[figures] caption_richness: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert f"{path} is not a results.json of sweep caption_richness: {needle}" in lines[0], lines
    assert not (tmp_path / "o" / "caption_richness.csv").exists()
