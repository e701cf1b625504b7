"""Bad-input catalogue of the scripts under real_data/ (their argument handling, before any training): each case is
one stderr line naming the input and the problem, exit code 2, no traceback."""

import json
from pathlib import Path

import pytest

from conftest import run_main
from mmcl_theory.io import load_module_from_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def script(capsys, monkeypatch):
    """Run real_data/NAME's main(args) in this process; the one stderr line of its exit code 2."""
    monkeypatch.syspath_prepend(str(REPO / "real_data"))  # mechanisms_experiment imports mechanisms_analysis

    def run(name, *args):
        module = load_module_from_path(REPO / "real_data" / name, "real_data_" + name[:-3])
        code, _, err = run_main(module.main, args, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    return run


@pytest.fixture
def data_root(tmp_path):
    """A --data-root that passes the scripts' up-front check (tiny_imagenet/wnids.txt)."""
    (tmp_path / "data" / "tiny_imagenet").mkdir(parents=True)
    (tmp_path / "data" / "tiny_imagenet" / "wnids.txt").write_text("n01443537\n")
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "data"


@pytest.mark.parametrize("args, needle", [
    (["--data-root", "{tmp}/none"], "--data-root {tmp}/none: expected tiny_imagenet/wnids.txt under it"),
    (["--out", "{tmp}/a_file"], "{tmp}/a_file: is a file, not a folder"),
    (["--out", "{tmp}/a_file/out"], "{tmp}/a_file/out: Not a directory"),
    (["--time-budget", "-5"], "--time-budget = -5.0 is out of range"),
    (["--time-budget", "nan"], "--time-budget = 'nan' is not allowed: a finite number"),
    (["--variants", "labels"], "argument --variants: invalid choice: 'labels'"),
    (["--seeds", "-1"], "--seeds = -1 is out of range"),
    (["--set", "train.steps=abc"], "train.steps = 'abc' is not allowed: an integer"),
], ids=["no-data", "out-a-file", "out-under-a-file", "negative-budget", "nan-budget", "variant", "seed", "set"])
def test_tiny_imagenet_experiment_bad_input_is_one_line(script, data_root, tmp_path, args, needle):
    """Each used to be a traceback (a missing data root: DataLayoutError after a workdir was made; --out a file:
    FileExistsError; an unknown variant: no such TOML; a bad --set: ConfigError) or, for a negative
    --time-budget, every run skipped with exit code 0."""
    opts = {"--data-root": str(data_root), "--runs": str(tmp_path / "runs"), "--out": str(tmp_path / "out")}
    opts.update(zip(args[::2], [a.format(tmp=tmp_path) for a in args[1::2]]))
    line = script("tiny_imagenet_experiment.py", *[x for kv in opts.items() for x in kv])
    assert needle.format(tmp=tmp_path) in line
    assert not (tmp_path / "runs").exists()


def test_mechanisms_experiment_out_a_file_or_damaged_runs_json_is_one_line(script, data_root, tmp_path):
    """--out a file was a FileExistsError traceback; a damaged OUT/runs.json a bare json error ("Expecting property
    name ...") that did not name the file, and a runs.json holding a list a TypeError at the first finished run."""
    base = ["mechanisms_experiment.py", "--data-root", data_root, "--runs", tmp_path / "runs", "--figures",
            tmp_path / "figs", "--analyse-only"]
    assert script(*base, "--out", tmp_path / "a_file") == f"error: {tmp_path / 'a_file'}: is a file, not a folder"
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.json").write_text('{"coarse_s0": ')
    assert script(*base, "--out", out).startswith(f"error: {out / 'runs.json'} is damaged (")
    (out / "runs.json").write_text(json.dumps([1]))
    assert script(*base, "--out", out) == f"error: {out / 'runs.json'} is not a JSON object of run states; delete it"


def test_derive_coarse_classes_bad_input_is_one_line(script, tmp_path):
    """A missing WordNet data.noun or wnids.txt, a data.noun of another format and a wnid it lacks were tracebacks
    (FileNotFoundError, IndexError, KeyError)."""
    noun, wnids = tmp_path / "data.noun", tmp_path / "wnids.txt"
    noun.write_text("00001740 03 n 01 entity 0 001 ~ 00001930 n 0000\n")
    wnids.write_text("n00001740\nn12345678\n")
    name = "derive_coarse_classes.py"
    assert "--data-noun /none/data.noun: no such file" in script(name, "--wnids", wnids, "--data-noun",
                                                                  "/none/data.noun")
    assert f"--wnids {tmp_path}: no such file" in script(name, "--wnids", tmp_path, "--data-noun", noun)
    assert (f"--wnids {wnids}: 1 of 2 entries are not noun synsets of {noun} (first 'n12345678')"
            in script(name, "--wnids", wnids, "--data-noun", noun))
    (tmp_path / "bad.noun").write_text("not wordnet\n")
    assert (f"--data-noun {tmp_path / 'bad.noun'}: not WordNet 3.0's data.noun"
            in script(name, "--wnids", wnids, "--data-noun", tmp_path / "bad.noun"))
