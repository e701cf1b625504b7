"""Bad input in the CLIP train -> evaluate flow: each case is one line on stderr and exit code 2
(no traceback), or a skip that is counted and reported.

The runs are real (the CLIs' main(argv) or a subprocess), on a hand-made CSV image-text set of 12
readable images, 1 corrupt file and 1 missing file, and on the synthetic set.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcl_theory.clip import config, evaluate, train
from conftest import run_main, synthetic_run_toml
from mmcl_theory.io import read_jsonl

GOOD = 12
SYNTHETIC = synthetic_run_toml(steps=4, checkpoint_every=2)


def one_error_line(rc, err, code=2):
    """The CLI exited with ``code`` and wrote exactly one line on stderr, an error, no traceback."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# Fixtures: an image-text CSV set with one corrupt and one missing image; finished runs
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("csvset")
    rng = np.random.default_rng(0)
    colours = ["red", "green", "blue", "black"]
    animals = ["cat", "dog", "bird"]
    rows = ["filepath,title"]
    for i in range(GOOD):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,a photo of a {colours[i % 4]} {animals[i % 3]}")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    rows.insert(4, "bad.png,a photo of a corrupt zebra")
    rows.append("gone.png,a photo of a missing giraffe")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def csv_config(image_csv, steps=2, extra=""):
    return f"""
[model]
name = "ViT-test"
[data]
dataset = "csv"
root = "{image_csv}"
vocab_size = 600
[train]
steps = {steps}
batch_size = 4
log_every = 1
checkpoint_every = 2
{extra}"""


@pytest.fixture(scope="module")
def csv_run(image_csv, tmp_path_factory):
    """A finished 2-step run of the real CLI (a subprocess) on the CSV set: (workdir, process)."""
    tmp = tmp_path_factory.mktemp("csvrun")
    cfg = write(tmp, csv_config(image_csv))
    work = tmp / "w"
    proc = subprocess.run([sys.executable, "-m", "mmcl_theory.clip.train", "--config", str(cfg), "--workdir",
                           str(work), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A finished 4-step synthetic run with checkpoints at steps 2 and 4: (config path, workdir)."""
    tmp = tmp_path_factory.mktemp("synrun")
    cfg = write(tmp, SYNTHETIC)
    train.train(config.load_config(cfg), tmp / "w", progress=False)
    return cfg, tmp / "w"


@pytest.fixture
def eval_set(tmp_path):
    """ImageNet-Sketch layout: two wnid folders, 4 readable images and 1 corrupt one; one template."""
    root = tmp_path / "imagenet_sketch"
    rng = np.random.default_rng(1)
    for wnid, names in (("n01440764", ("a", "b", "bad")), ("n01443537", ("c", "d"))):
        (root / wnid).mkdir(parents=True)
        for n in names:
            if n == "bad":
                (root / wnid / "bad.JPEG").write_bytes(b"\xff\xd8\xff truncated")
            else:
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(root / wnid / f"{n}.png")
    templates = tmp_path / "templates.json"
    templates.write_text('["a photo of a {}."]')
    return root, templates


# ----------------------------------------------------------------------------------------------
# Training: config and command line
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, overrides, needle", [
    (None, [], "no such file"),
    ("[train\nsteps = 3\n", [], "not valid TOML"),
    ("[trian]\nsteps = 3\n", [], "unknown config section(s) trian"),
    ("[train]\nbatchsize = 4\n", [], "unknown field(s) train.batchsize"),
    ("[train]\nsteps = '10'\n", [], "train.steps = '10' is not allowed: a int"),
    (SYNTHETIC, ["train.loss=l2"], "train.loss = 'l2' is not allowed: one of infonce, linear"),
    (SYNTHETIC, ["train.lr=nan"], "train.lr = 'nan' is not allowed: a finite number"),
    (SYNTHETIC, ["train.steps=abc"], "train.steps = 'abc' is not allowed: an integer"),
    (SYNTHETIC, ["train.steps"], "must look like KEY=VALUE"),
    (SYNTHETIC, ["steps=3"], "must look like SECTION.FIELD=VALUE"),
    (SYNTHETIC, ["optim.lr=0.1"], "unknown section 'optim'"),
    (SYNTHETIC, ["train.learning_rate=0.1"], "unknown field 'train.learning_rate'"),
    (SYNTHETIC, ["distributed.enabled=maybe"], "distributed.enabled = 'maybe' is not allowed: true or false"),
    (SYNTHETIC, ["eval.every=5"], "eval.datasets = [] is not allowed when eval.every = 5"),
    (SYNTHETIC, ["train.warmup_steps=4"], "train.warmup_steps = 4 is out of range"),
    ("[data]\ndataset = 'coco'\nroot = '${MMCL_SURELY_UNSET_VAR}/coco'\n", [], "environment variable not set"),
])
def test_bad_config_or_override_is_one_line(tmp_path, capsys, text, overrides, needle):
    cfg = tmp_path / "missing.toml" if text is None else write(tmp_path, text)
    argv = ["--config", cfg, "--workdir", tmp_path / "w", "--no-progress"]
    for o in overrides:
        argv += ["--set", o]
    rc, _, err = run_main(train.main, argv, capsys)
    assert needle in one_error_line(rc, err)
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.parametrize("argv, needle", [
    ([], "the following arguments are required: --config, --workdir"),
    (["--config", "x.toml", "--workdir", "w", "--steps", "3"], "unrecognized arguments: --steps 3"),
])
def test_train_usage_errors_are_one_line(capsys, argv, needle):
    rc, _, err = run_main(train.main, argv, capsys)
    assert needle in one_error_line(rc, err)


def test_workdir_that_is_a_file_is_one_line_from_the_real_cli(tmp_path):
    cfg = write(tmp_path, SYNTHETIC)
    (tmp_path / "w").write_text("not a folder")
    proc = subprocess.run([sys.executable, "-m", "mmcl_theory.clip.train", "--config", str(cfg), "--workdir",
                           str(tmp_path / "w"), "--no-progress"], capture_output=True, text=True, timeout=300)
    line = one_error_line(proc.returncode, proc.stderr)
    assert "--workdir" in line and "is a file" in line


def test_empty_workdir_is_refused_not_the_working_folder(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path, SYNTHETIC)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", ""], capsys)
    assert "--workdir = '' is not allowed: a folder path" in one_error_line(rc, err)
    assert list((tmp_path / "cwd").iterdir()) == []


def test_workdir_inside_a_file_is_one_line(tmp_path, capsys):
    cfg = write(tmp_path, SYNTHETIC)
    (tmp_path / "f").write_text("x")
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "f" / "w"], capsys)
    assert "cannot be created" in one_error_line(rc, err)


def test_vocab_size_too_small_for_a_trained_tokenizer_is_refused_before_data_loading(tmp_path, capsys, image_csv):
    cfg = write(tmp_path, csv_config(image_csv).replace("vocab_size = 600", "vocab_size = 100"))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w"], capsys)
    line = one_error_line(rc, err)
    assert "data.vocab_size = 100 is not allowed with data.tokenizer = 'train'" in line
    assert f">= {config.MIN_TRAINED_VOCAB_SIZE}" in line
    assert not (tmp_path / "w").exists()  # no cache, no tokenizer: refused up front


def test_config_vocab_minimum_is_the_tokenizer_trainers(tmp_path):
    """The config's bound is exactly where the data layer's BPE trainer starts to accept a size."""
    from mmcl_theory.clip import data

    texts = ["a photo of a cat", "a red dog"] * 10
    with pytest.raises(ValueError):
        data.train_tokenizer(texts, config.MIN_TRAINED_VOCAB_SIZE - 1)
    assert data.train_tokenizer(texts, config.MIN_TRAINED_VOCAB_SIZE).vocab_size <= config.MIN_TRAINED_VOCAB_SIZE


@pytest.mark.parametrize("extra, needle", [
    ("[eval]\nevery = 1\ndatasets = ['imagenet_sketchy']\nroot = '.'\n", "dataset 'imagenet_sketchy' is not allowed"),
    ("[eval]\nevery = 1\ndatasets = ['imagenet1k']\n", "dataset root for 'imagenet1k'"),
])
def test_bad_periodic_evaluation_is_refused_before_data_loading(tmp_path, capsys, image_csv, extra, needle):
    cfg = write(tmp_path, csv_config(image_csv, extra=extra))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w"], capsys)
    assert needle in one_error_line(rc, err)
    assert not (tmp_path / "w" / "cache").exists()


def test_missing_clip_bpe_file_is_refused_before_data_loading(tmp_path, capsys, image_csv):
    cfg = write(tmp_path, csv_config(image_csv).replace('vocab_size = 600', 'tokenizer = "clip_bpe"\nbpe_path = "nope.gz"'))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w"], capsys)
    assert "data.bpe_path" in one_error_line(rc, err) and "no such file" in err
    assert not (tmp_path / "w" / "cache").exists()


def test_missing_data_root_is_one_line(tmp_path, capsys):
    cfg = write(tmp_path, SYNTHETIC.replace('dataset = "synthetic"', f'dataset = "csv"\nroot = "{tmp_path}/nope.csv"')
                .replace("vocab_size = 512", "vocab_size = 600"))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w"], capsys)
    assert "nope.csv" in one_error_line(rc, err)


def _named_option(line: str) -> str:
    """The 'SECTION.FIELD' a message tells the user to set, checked to be a real field of the run config."""
    import dataclasses
    import re

    named = re.findall(r"\bset (\w+)\.(\w+)", line)
    assert len(named) == 1, line
    section, field = named[0]
    assert field in {f.name for f in dataclasses.fields(config.SECTIONS[section])}, (line, section)
    return f"{section}.{field}"


@pytest.mark.parametrize("damage", ["folder is a file", "another cache"])
def test_image_cache_folder_message_names_the_real_option(tmp_path, capsys, image_csv, damage):
    """A cache folder that cannot be used names the config field that moves it (not the data layer's out_dir), a
    field --set accepts."""
    size = models_image_size()
    cfg = write(tmp_path, csv_config(image_csv, steps=1))
    folder = tmp_path / "w" / "cache" / f"csv_{size}"
    folder.parent.mkdir(parents=True)
    if damage == "folder is a file":
        folder.write_text("not a cache")
    else:
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"format": 2, "resolution": size, "crop_border": 0,
                                                          "shard_size": 4096, "count": 3, "paths_sha256": "0"}))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w", "--no-progress"], capsys)
    line = one_error_line(rc, err)
    assert str(folder) in line and "out_dir" not in line
    option = _named_option(line)
    assert option == "data.cache_dir"
    assert config.load_config(cfg, [f"{option}={tmp_path / 'elsewhere'}"]).data.cache_dir == str(tmp_path / "elsewhere")


def models_image_size() -> int:
    from mmcl_theory.clip import models

    return models.model_config("ViT-test").vision.image_size


def test_batch_larger_than_the_data_is_one_line(tmp_path, capsys):
    cfg = write(tmp_path, SYNTHETIC.replace("num_examples = 32", "num_examples = 4"))
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", tmp_path / "w"], capsys)
    assert "train.batch_size = 8 is not allowed: at most the number of training examples (4)" in one_error_line(rc, err)


# ----------------------------------------------------------------------------------------------
# Training: unreadable images are dropped, counted and reported
# ----------------------------------------------------------------------------------------------
def test_unreadable_training_images_are_dropped_and_reported(csv_run):
    work, proc = csv_run
    run = json.loads((work / "run.json").read_text())
    # Dropped: the corrupt file (decoded as nothing) and the missing one (skipped by the loader).
    assert run["data"]["examples"] == GOOD
    assert run["data"]["unreadable"]["count"] == 1 and run["data"]["unreadable"]["items"][0][0] == "bad.png"
    assert run["data"]["skipped_at_load"]["count"] == 1 and run["data"]["skipped_at_load"]["items"][0][0] == "gone.png"
    # Log line (stderr) and the final summary (last stdout line).
    assert "dropped unreadable images: 1 of 13 (first: bad.png:" in proc.stderr
    assert "the loader skipped records: 1 of 14 (first: gone.png:" in proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["unreadable_images"] == 1 and summary["skipped_at_load"] == 1 and summary["step"] == 2
    # The dropped image's caption was not trained: the tokenizer never saw 'zebra'.
    vocab = json.loads((work / "tokenizer.json").read_text())["model"]["vocab"]
    assert not any("zebra" in tok for tok in vocab) and any("cat" in tok for tok in vocab)
    assert str(work.parent) not in (work / "run.json").read_text()  # no absolute path of this machine


def test_dropped_images_are_left_out_of_every_batch(image_csv, tmp_path):
    """The loaded pairs index only readable cache rows; the corrupt image's row is never read."""
    from mmcl_theory.clip import train_data

    cfg = config.load_config(write(tmp_path, csv_config(image_csv)))
    data = train_data.load_train_data(cfg, tmp_path, progress=False)
    assert data.num_examples == GOOD and data.images.shape[0] == GOOD + 1
    bad_row = 3  # 'bad.png' is the 4th CSV row
    assert bad_row not in data.rows.tolist() and sorted(data.rows.tolist()) == [r for r in range(13) if r != bad_row]
    seen = set()
    for step in range(6):
        batch = train_data.host_batch(data, 0, step, 4)
        assert (batch["images"].reshape(4, -1).max(axis=1) > 0).all()  # no black image
        seen |= set(train_data.batch_indices(0, step, 4, data.num_examples).tolist())
    assert max(seen) < GOOD


# ----------------------------------------------------------------------------------------------
# Training: run state on disk
# ----------------------------------------------------------------------------------------------
def _truncate_largest_array_file(checkpoint: Path, every: bool = False) -> None:
    """Cut the largest array file of an orbax checkpoint (or every one) to a third of its bytes."""
    files = sorted((p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)
    for f in files if every else files[-1:]:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 3])


def test_corrupt_latest_checkpoint_is_reported_and_run_resumes_from_previous(synthetic_run, tmp_path, capsys):
    cfg, finished = synthetic_run
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    uninterrupted = read_jsonl(work / "metrics.jsonl")
    _truncate_largest_array_file(work / "checkpoints" / "4")
    rc, out, err = run_main(train.main, ["--config", cfg, "--workdir", work, "--no-progress"], capsys)
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "checkpoint" in ln]
    assert len(lines) == 1 and "step 4" in lines[0] and "resuming from step 2" in lines[0]
    assert (work / "checkpoints_unreadable" / "4").is_dir()
    resumed = read_jsonl(work / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(uninterrupted, resumed):  # steps 3 and 4 retrained from step 2: the same numbers
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]


def test_resume_past_a_corrupt_checkpoint_from_the_real_cli_prints_one_line(synthetic_run, tmp_path):
    """The abandoned async reads of the failed restore print nothing (they did in about 1 run of 4 before
    state._quiet_abandoned_readers); three fresh processes, each must write exactly the one report line."""
    cfg, finished = synthetic_run
    for attempt in range(3):
        work = tmp_path / f"w{attempt}"
        shutil.copytree(finished, work)
        _truncate_largest_array_file(work / "checkpoints" / "4")
        proc = subprocess.run([sys.executable, "-m", "mmcl_theory.clip.train", "--config", str(cfg), "--workdir",
                               str(work), "--no-progress"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(proc.stderr.strip().splitlines()) == 1 and "resuming from step 2" in proc.stderr, proc.stderr[-3000:]


def test_every_checkpoint_unreadable_is_one_line_and_nothing_is_moved(synthetic_run, tmp_path, capsys):
    cfg, finished = synthetic_run
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    for step in ("2", "4"):
        _truncate_largest_array_file(work / "checkpoints" / step)
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", work], capsys)
    assert "no checkpoint can be restored" in one_error_line(rc, err)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["2", "4"]


def test_corrupt_metrics_file_is_one_line(synthetic_run, tmp_path, capsys):
    cfg, finished = synthetic_run
    work = tmp_path / "w"
    shutil.copytree(finished, work)
    lines = (work / "metrics.jsonl").read_text().splitlines()
    lines[1] = "{not json"
    (work / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rc, _, err = run_main(train.main, ["--config", cfg, "--workdir", work], capsys)
    assert "metrics.jsonl, line 2" in one_error_line(rc, err)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def test_unreadable_evaluation_images_are_skipped_counted_and_reported(csv_run, eval_set, tmp_path, capsys):
    work = tmp_path / "w"
    shutil.copytree(csv_run[0], work)
    root, templates = eval_set
    rc, out, err = run_main(evaluate.main, ["--workdir", work, "--dataset", "imagenet_sketch", "--root",
                                            f"imagenet_sketch={root}", "--templates", templates, "--batch-size", 8],
                            capsys)
    assert rc == 0, err
    assert "imagenet_sketch: skipped 1 unreadable image(s) of 5 (first: n01440764/bad.JPEG:" in err
    assert "1 unreadable images skipped" in out
    result = json.loads(next((work / "eval").glob("step_*/imagenet_sketch__zeroshot.json")).read_text())
    assert result["metrics"]["n"] == 4
    assert result["task"]["unreadable"]["count"] == 1
    assert result["task"]["unreadable"]["items"][0][0] == "n01440764/bad.JPEG"
    assert result["task"]["dataset_root"] == "imagenet_sketch"
    text = json.dumps(result)
    assert str(tmp_path) not in text and "Traceback" not in err
    assert evaluate.main(["build", "--workdir", str(work), "--out", str(tmp_path / "r.csv")]) == 0
    assert "unreadable_images" in (tmp_path / "r.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "imagenet_sketchy"], "dataset 'imagenet_sketchy' is not allowed: one of"),
    (["--dataset", "imagenet_sketch", "--step", "999"], "--step = '999' is not allowed: 'latest', 'all' or one of [2]"),
    (["--dataset", "imagenet_sketch:gaussian_blur:x"], "severity 'x' is not allowed"),
    (["--dataset", "imagenet_sketch", "--root", "imagenet_sketch"], "--root 'imagenet_sketch' is not allowed: NAME=PATH"),
    (["--dataset", "imagenet1k"], "dataset root for 'imagenet1k'"),
    (["--dataset", "imagenet_sketch", "--batch-size", "0"], "--batch-size = 0 is out of range"),
    (["--dataset", "imagenet_sketch", "--max-examples", "many"], "--max-examples = 'many' is not allowed: an integer"),
])
def test_evaluate_bad_arguments_are_one_line(csv_run, eval_set, capsys, args, needle):
    root, _ = eval_set
    argv = ["--workdir", csv_run[0], "--root", f"imagenet_sketch={root}"] + args
    rc, _, err = run_main(evaluate.main, argv, capsys)
    assert needle in one_error_line(rc, err)


def test_evaluate_a_folder_that_is_not_a_run(tmp_path, capsys):
    rc, _, err = run_main(evaluate.main, ["--workdir", tmp_path, "--dataset", "imagenet1k"], capsys)
    assert "no run.json" in one_error_line(rc, err)


def test_evaluate_a_synthetic_run_has_no_tokenizer(synthetic_run, capsys):
    rc, _, err = run_main(evaluate.main, ["--workdir", synthetic_run[1], "--dataset", "imagenet1k"], capsys)
    assert "no tokenizer.json" in one_error_line(rc, err)


def test_evaluate_a_corrupt_checkpoint_is_one_line_from_the_real_cli(csv_run, eval_set, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(csv_run[0], work)
    _truncate_largest_array_file(work / "checkpoints" / "2", every=True)  # the evaluator reads params only
    root, templates = eval_set
    proc = subprocess.run([sys.executable, "-m", "mmcl_theory.clip.evaluate", "--workdir", str(work), "--dataset",
                           "imagenet_sketch", "--root", f"imagenet_sketch={root}", "--templates", str(templates)],
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "checkpoints/2: cannot be restored" in lines[0]


def test_build_refuses_a_json_that_is_not_a_result(tmp_path, capsys):
    (tmp_path / "w" / "eval" / "step_00000001").mkdir(parents=True)
    (tmp_path / "w" / "run.json").write_text("{}")
    (tmp_path / "w" / "eval" / "step_00000001" / "x__zeroshot.json").write_text('{"top1": 0.5}')
    rc, _, err = run_main(evaluate.main, ["build", "--workdir", tmp_path / "w", "--out", tmp_path / "r.csv"], capsys)
    assert "not an evaluation result" in one_error_line(rc, err)
    assert not (tmp_path / "r.csv").exists()


RESULT = {"task": {"model": "m", "step": 1, "dataset": "d", "task": "zeroshot"}, "metrics": {"top1": 0.5},
          "provenance": {"package_version": "x"}}


@pytest.mark.parametrize("damage, out, needle", [
    (lambda w: (w / "run.json").unlink(), "r.csv", "--workdir = '{w}': no run.json (not a training run folder)"),
    (lambda w: shutil.rmtree(w / "eval"), "r.csv", "--workdir = '{w}': no evaluation results (eval/step_*/*.json)"),
    (None, "", "--out '' is not allowed: the path of a file to write"),
    (None, "{tmp}", "--out '{tmp}' is not allowed: the path of a file to write"),
    (None, "{tmp}/w/run.json/r.csv", "--out '{tmp}/w/run.json/r.csv': {tmp}/w/run.json is a file, not a folder"),
], ids=["not-a-run", "not-evaluated", "empty-out", "out-a-folder", "out-under-a-file"])
def test_build_bad_workdir_or_out_is_one_line(tmp_path, capsys, monkeypatch, damage, out, needle):
    """`evaluate build` used to write a CSV without the rows of a folder that is no run, or a run not evaluated yet
    (0 rows: '0 rows -> r.csv', exit 0); --out '' said "PosixPath('.') has an empty name", --out under a file
    "[Errno 17] File exists" naming the CSV."""
    work = tmp_path / "w"
    (work / "eval" / "step_00000001").mkdir(parents=True)
    (work / "run.json").write_text("{}")
    (work / "eval" / "step_00000001" / "d__zeroshot.json").write_text(json.dumps(RESULT))
    if damage:
        damage(work)
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_main(evaluate.main, ["build", "--workdir", work, "--out", out.format(tmp=tmp_path)], capsys)
    assert needle.format(w=work, tmp=tmp_path) in one_error_line(rc, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
