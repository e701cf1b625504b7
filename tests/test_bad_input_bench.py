"""Bad-input catalogue of the scripts under bench/ (their argument handling only): one stderr line naming the option
and what is allowed, exit code 2, no traceback, before anything is compiled or timed."""

import sys
from pathlib import Path

import pytest

from mmcl_theory.io import load_module_from_path

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script, argv, needle", [
    ("clip_throughput", ["--model", "nosuch", "--steps", "1"], "error: --model: model.name = 'nosuch' is not allowed"),
    ("clip_throughput", ["--batch", "0", "--steps", "1"], "--batch = 0 is out of range"),
    ("lenet_step", ["--parallel", "0", "--steps", "1"], "--parallel = 0 is out of range"),
    ("objective_step", ["--model", "nosuch"], "error: --model: model.name = 'nosuch' is not allowed"),
    ("paper_mnist_divergence", ["--pi-core", "2"], "--pi-core = 2.0 is out of range: allowed a finite number in [0, 1]"),
    ("paper_mnist_divergence", ["--epochs", "-1"], "--epochs = -1 is out of range"),
    ("sweep_versions", ["--rounds", "0"], "--rounds = 0 is out of range"),
    ("sweep_versions", ["--commits", "nosuchcommit"], "--commits: 'nosuchcommit' is not a commit of this repository"),
], ids=["clip-model", "clip-batch", "lenet-parallel", "objective-model", "divergence-pi", "divergence-epochs",
        "versions-rounds", "versions-commit"])
def test_bench_bad_option_is_one_line(capsys, monkeypatch, script, argv, needle):
    """Each was a traceback (ConfigError from the model registry or the config, ZeroDivisionError after the timing),
    or, for --epochs -1, a run that trained nothing and exited 0."""
    module = load_module_from_path(REPO / "bench" / f"{script}.py", f"bench_{script}")
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    try:
        code = module.main()
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
