"""Sweep CLI: bad input is one line and exit 2; the results contract; resume after a kill."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mmcl_theory.results import CONTRACT
from mmcl_theory.sweep import available_sweeps, main, make_plan

SMALL = ["--set", "n=40", "--set", "d=60", "--set", "n_test=300"]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mmcl_theory.sweep", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_named_sweeps_exist_and_validate():
    expected = {"caption_richness", "core_variance", "spurious_strength", "feature_sharing", "detail_types",
                "sample_size", "digits", "digits_calibration", "digits_mnist", "sagawa_toy"}
    assert expected <= set(available_sweeps())
    for name in available_sweeps():  # every definition resolves and builds every point's config
        for quick in (False, True):
            assert make_plan(name, quick).points


@pytest.mark.parametrize("args, needle", [
    (["no_such_sweep"], "known sweeps are"),
    (["caption_richness", "--set", "bogus=1"], "valid keys are"),
    (["caption_richness", "--set", "p=1.5"], "p = 1.5 is out of range"),
    (["caption_richness", "--set", "r=0.5"], "varies 'r' itself"),
    (["caption_richness", "--set", "sigma_core=-1"], "sigma_core = -1.0 is out of range"),
    (["caption_richness", "--learners", "sl_magic"], "valid learners are"),
    (["caption_richness", "--seeds", "0"], "--seeds = 0"),
    (["caption_richness", "--out", "/proc/forbidden/x"], "cannot write to --out"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle):
    result = _cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr


def _m1_theory(r, q, prompt, sigma_core=1.0, sigma_spu=0.05, p=0.95, s=1.0, e=0.0):
    """M1's population accuracy, written out (docs/theory.md#m1-closed-form): Cov(z_I, z_T) = [[w, s m], [m, s v]]
    with w = 1 + r sigma_core^2, m = 2p - 1, v = 1 + sigma_spu^2; class y's prompt t = [y, 0] (core) or
    [y, s m y] (class mean) scores (z + xi)^T C t, so the margin of the true class has core weight a = w (+ s^2 m^2)
    and spurious weight b = m (+ s^2 m v): accuracy q Phi((a + b)/sd) + (1 - q) Phi((a - b)/sd),
    sd^2 = a^2 (sigma_core^2 + e) + b^2 (sigma_spu^2 + e)."""
    from scipy.stats import norm

    w, m, v = 1 + r * sigma_core**2, 2 * p - 1, 1 + sigma_spu**2
    a, b = (w, m) if prompt == "core" else (w + s * s * m * m, m + s * s * m * v)
    sd = math.sqrt(a * a * (sigma_core**2 + e) + b * b * (sigma_spu**2 + e))
    return q * norm.cdf((a + b) / sd) + (1 - q) * norm.cdf((a - b) / sd)


def test_quick_sweep_writes_the_results_contract(tmp_path, capsys):
    """caption_richness --quick at n = 1000, d = 60 (4 seeds): the contract's columns and rows; the theory rows are
    the M1 closed form written out above (projected noise e = 1/60) to rounding; closed-form MMCL's seed mean is within
    3 s.e. + 0.01 of it on every test and prompt (the finite-sample gap at n = 1000: measured <= 0.003 over 20 seeds)."""
    out = tmp_path / "cr"
    code = main(["caption_richness", "--quick", "--seeds", "4", "--out", str(out), "--no-progress",
                 "--learners", "theory_mmcl,mmcl_closed_form,sl_min_norm", "--set", "n=1000", "--set", "d=60",
                 "--set", "n_test=300"])
    assert code == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CONTRACT
    assert len(rows) == 3 * 3 * (2 + 2 * 4 + 4)  # values x tests x (theory 2 prompts + MMCL 2 prompts x 4 seeds + SL)
    assert all(r["seed"] == "-1" for r in rows if r["learner"] == "theory_mmcl")
    assert {r["value"] for r in rows} == {"0.0", "0.5", "1.0"}
    assert {r["prompt"] for r in rows if r["learner"] == "mmcl_closed_form"} == {"core", "class_mean"}
    assert {r["route"] for r in rows} == {"theory", "exact"}
    agreement = {"aligned": 1.0, "independent": 0.5, "flipped": 0.0}
    # datamodel.prompt_latents is float32, so the class-mean prompt's s m = 0.9 reaches theory.py as 0.89999998
    # (relative 3e-8): its theory rows differ from the exact formula by ~1e-9; the core prompt's (+-1, 0) are exact
    rounding = {"core": 1e-12, "class_mean": 1e-7}
    for r in (r for r in rows if r["learner"] == "theory_mmcl"):
        expected = _m1_theory(float(r["value"]), agreement[r["test"]], r["prompt"], e=1 / 60)
        assert float(r["accuracy"]) == pytest.approx(expected, abs=rounding[r["prompt"]]), r
    for value in (0.0, 0.5, 1.0):
        for test, q in agreement.items():
            for prompt in ("core", "class_mean"):
                acc = np.array([float(r["accuracy"]) for r in rows if (r["learner"], r["prompt"], r["test"]) ==
                                ("mmcl_closed_form", prompt, test) and float(r["value"]) == value])
                assert len(acc) == 4
                se = acc.std(ddof=1) / 2
                assert abs(acc.mean() - _m1_theory(value, q, prompt, e=1 / 60)) <= 3 * se + 0.01, (value, test, prompt)
    meta = json.loads((out / "results.json").read_text())
    assert meta["package_version"] and meta["config"]["base"]["n"] == 1000 and meta["command"]
    assert (out / "caption_richness.png").stat().st_size > 10_000
    assert "flipped test" in capsys.readouterr().out


def test_killed_sweep_resumes_without_redoing_points(tmp_path):
    out = tmp_path / "ss"
    args = [sys.executable, "-m", "mmcl_theory.sweep", "sample_size", "--quick", "--out", str(out), "--no-progress",
            "--learners", "theory_mmcl,mmcl_closed_form", "--set", "d=60", "--set", "n_test=300"]
    # sample_size --quick has two values of n, i.e. two compiled chunks: kill after the first is on disk
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    points = out / "points.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (points.exists() and points.read_text().count("\n") >= 1):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = points.read_text().splitlines()
    assert len(first) >= 1
    if len(first) == 2:
        pytest.skip("the second point finished before the kill landed; nothing left to resume")
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    final = points.read_text().splitlines()
    assert final[:len(first)] == first and len(final) == 2  # first point kept, not recomputed, none lost
    with open(out / "results.csv") as f:
        assert {r["value"] for r in csv.DictReader(f)} == {"20", "200"}


def test_rerun_of_a_finished_sweep_recomputes_nothing(tmp_path):
    out = tmp_path / "cv"
    args = ["core_variance", "--quick", "--out", str(out), "--no-progress", "--learners", "theory_mmcl", *SMALL]
    assert main(args) == 0
    before = (out / "points.jsonl").read_text()
    assert main(args) == 0
    assert (out / "points.jsonl").read_text() == before
    # a different configuration in the same directory is refused, not mixed in
    assert main(["core_variance", "--quick", "--out", str(out), "--no-progress", "--learners", "theory_mmcl",
                 "--set", "p=0.8"]) == 2




# ------------------------------------------------------------------ every registered model on its default route

# One small point per registered model: (swept parameter, value, [base], [settings]) of a sweep definition.
SMALL_POINTS = {
    "M1": ("r", 0.5, {"n": 30, "d": 40, "n_test": 100}, {}),
    "M2": ("beta", 0.2, {"K": 3, "n": 30, "d": 40, "n_test": 100}, {}),
    "DM2": ("pi", 1.0, {"m": 2, "n": 30, "d": 8, "n_test": 100}, {}),
    "digits": ("r", 1.0, {"n_train": 100, "n_test": 50}, {"embed_dim": 4}),
    "paper_mnist": ("pi_core", 1.0, {"n_train": 256, "n_test": 64},
                    {"mmcl_epochs": 1, "sl_epochs": 1, "curve_every": 0, "embed_dim": 8}),
}


def test_small_points_cover_every_registered_model():
    from mmcl_theory.models import MODEL_NAMES

    assert set(SMALL_POINTS) == set(MODEL_NAMES)


@pytest.mark.parametrize("model", sorted(SMALL_POINTS))
def test_every_model_runs_a_sweep_on_its_default_route(model, tmp_path, monkeypatch, capsys, request):
    """A sweep definition of each registered model, without --route, runs its first theory and first fitted learner
    on a small point (DM2's default used to be the exact route, where its closed form crashed with an AttributeError
    on sigma_core: its test latents are discrete, and it now registers the sampled route only); paper_mnist reads
    the MNIST files of ../shared/data (skipped when absent)."""
    import mmcl_theory.sweep as sweep
    from mmcl_theory.models import get_model

    if model == "paper_mnist":
        request.getfixturevalue("shared_data")
    param, value, base, settings = SMALL_POINTS[model]
    table = lambda t: "".join(f"{k} = {v!r}\n" for k, v in t.items())
    definitions = tmp_path / "sweeps"
    definitions.mkdir()
    records = get_model(model).learners  # its first population (theory) learner and its first fitted one
    chosen = [l.name for l in records if l.population][:1] + [next(l.name for l in records if l.fit is not None)]
    learners = ", ".join(f'"{name}"' for name in chosen)
    (definitions / "small.toml").write_text(f'model = "{model}"\nparam = "{param}"\nvalues = [{value!r}]\nseeds = 1\n'
                                            f"learners = [{learners}]\n[base]\n{table(base)}[settings]\n"
                                            f"{table(settings)}")
    monkeypatch.setattr(sweep.plan, "SWEEP_DIR", definitions)
    out = tmp_path / "out"
    code = main(["small", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    default = get_model(model).routes[0]
    assert {r["learner"] for r in rows} == set(chosen)
    assert json.loads((out / "sweep.json").read_text())["plan"]["route"] == default
    if default == "sampled":
        assert {r["route"] for r in rows} <= {"theory", "sampled"}
