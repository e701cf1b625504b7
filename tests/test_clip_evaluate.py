"""Zero-shot/retrieval metrics against hand-computed values; evaluate CLI end to end on real data."""

import csv
import json

import numpy as np
import pytest

from mmcl_theory.clip import config, evaluate, robustness, train, zero_shot
from mmcl_theory.io import read_jsonl


def test_classification_metrics_hand_computed():
    scores = np.array([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # label 0, top-1 right
                       [0.5, 0.4, 0.0, 0.0, 0.0, 0.1],   # label 1, 2nd
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],   # label 0, 6th -> outside top-5
                       [0.2, 0.0, 0.3, 0.4, 0.5, 1.0]])  # label 1, last
    labels = np.array([0, 1, 0, 1])
    m = zero_shot.classification_metrics(scores, labels)
    assert m["top1"] == pytest.approx(0.25) and m["top5"] == pytest.approx(0.5) and m["n"] == 4
    # per class: class 0 1/2 right, class 1 0/2 -> balanced 0.25
    assert m["balanced"] == pytest.approx(0.25)
    imbalanced = zero_shot.classification_metrics(np.eye(3)[[0, 0, 0, 1]] + 0.0, np.array([0, 0, 0, 2]))
    assert imbalanced["top1"] == pytest.approx(0.75) and imbalanced["balanced"] == pytest.approx(0.5)


def test_hit_sets_count_any_accepted_class():
    scores = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    m = zero_shot.classification_metrics(scores, np.array([0, 2]), hit_sets=[frozenset({0, 1}), frozenset({2})])
    assert m["top1"] == pytest.approx(0.5) and m["top5"] == pytest.approx(1.0)


def test_group_scores_average_probabilities_of_present_classes():
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    space = np.array([10, 11, 12, 13])  # ImageNet indices of the 4 classes
    scores, covered = zero_shot.group_scores(probs, space, [(10, 12, 99), (98,), (13,)])
    assert covered.tolist() == [True, False, True]
    np.testing.assert_allclose(scores, [[0.2, 0.4]])


def test_retrieval_recalls():
    img = np.eye(4)
    txt = np.repeat(np.eye(4), 2, axis=0)  # two captions per image, both exact
    t2i = np.repeat(np.arange(4), 2)
    m = zero_shot.retrieval_metrics(img, txt, t2i)
    assert all(v == 1.0 for v in m.values())
    shuffled = zero_shot.retrieval_metrics(img, txt[:, [1, 0, 2, 3]], t2i)  # images 0 and 1 swapped
    assert shuffled["text_to_image_R@1"] == pytest.approx(0.5)
    assert shuffled["image_to_text_R@1"] == pytest.approx(0.5)


def test_testbed_pairs_from_evaluate_csv(tmp_path):
    path = tmp_path / "r.csv"
    rows = [("m", 5, "imagenet1k", 0.5), ("m", 5, "imagenetv2", 0.4), ("m", 5, "imagenet-r", 0.2),
            ("m", 5, "imagenet1k@imagenet-r", 0.6), ("m", 5, "imagenet-a", 0.05)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "step", "dataset", "top1"])
        w.writerows(rows)
    pairs = robustness.accuracies_from_evaluate(path)
    assert pairs == {"m@5": {"imagenetv2": (0.5, 0.4), "imagenet-r": (0.6, 0.2)}}


def test_train_then_evaluate_cli_writes_json_and_csv(tmp_path, shared_data):
    tiny = shared_data / "tiny_imagenet"
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(f"""
[model]
name = "ViT-test"
[data]
dataset = "tiny_imagenet"
root = "{tiny}"
caption_variant = "label"
vocab_size = 600
options = {{ per_class = 1 }}
[train]
steps = 2
batch_size = 16
checkpoint_every = 1
[eval]
every = 2
datasets = ["tiny_imagenet:gaussian_blur:2"]
root = "{tiny}"
max_examples = 30
templates = "{shared_data / 'clip_prompts' / 'imagenet_templates.json'}"
""")
    work = tmp_path / "w"
    train.train(config.load_config(cfg_path), work, progress=False)
    # The periodic evaluator (handed the trainer's variables) wrote its result and logged its headline.
    periodic = json.loads((work / "eval" / "step_00000002" / "tiny_imagenet-gaussian_blur-2__zeroshot.json").read_text())
    assert periodic["task"]["shift"] == "gaussian_blur" and periodic["task"]["severity"] == 2
    assert periodic["metrics"]["n"] == 30
    logged = [r for r in read_jsonl(work / "metrics.jsonl") if "eval" in r]
    assert [r["step"] for r in logged] == [2]
    assert logged[0]["eval"]["tiny_imagenet:gaussian_blur:2"]["top1"] == periodic["metrics"]["top1"]
    tvs = shared_data / "texture_vs_shape"
    rc = evaluate.main(["--workdir", str(work), "--dataset", "tiny_imagenet", "tiny_imagenet:greyscale",
                        "texture_vs_shape_edges", "--dataset-root", str(tiny), "--root",
                        f"texture_vs_shape_edges={tvs}", "--class-space", "tiny_imagenet", "--max-examples", "40",
                        "--step", "latest", "--templates", str(shared_data / "clip_prompts" / "imagenet_templates.json")])
    assert rc == 0
    files = sorted((work / "eval").glob("step_*/*.json"))
    assert len(files) == 4
    r = json.loads(files[0].read_text())
    assert set(r) == {"metrics", "task", "provenance"}
    assert {"model", "step", "dataset", "task", "dataset_root", "unreadable"} <= set(r["task"])
    assert all(isinstance(v, (int, float)) for v in r["metrics"].values())
    assert 0.0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 1.0 and r["metrics"]["n"] >= 1
    assert {"package", "package_version", "date", "command", "config"} <= set(r["provenance"])
    for f in files:  # no absolute path of this machine anywhere in a result
        text = f.read_text()
        assert str(tmp_path) not in text and str(shared_data) not in text
    out = tmp_path / "results.csv"
    assert evaluate.main(["build", "--workdir", str(work), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"tiny_imagenet", "tiny_imagenet:greyscale",
                                                                 "texture_vs_shape_edges", "tiny_imagenet:gaussian_blur:2"}


def test_evaluate_cli_errors_are_one_line(tmp_path, capsys):
    assert evaluate.main(["--workdir", str(tmp_path), "--dataset", "imagenet1k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_evaluate_help_names_build_and_the_composite_datasets(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert all(w in out for w in ("build", "imagenet_robustness", "coco_retrieval", "NAME:SHIFT"))
