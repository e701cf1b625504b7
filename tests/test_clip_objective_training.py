"""The objectives inside the trainer: config validation before any data is read (one line, exit 2),
the SLIP augmentation, a CPU smoke run of each objective, resume with the DeCLIP queue, and
evaluation of a supervised checkpoint with its own head."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory.clip import augment, config, models, objectives, state, train, train_data, zero_shot
from mmcl_theory.io import read_jsonl
from conftest import synthetic_run_toml

REAL_DATA = Path(__file__).resolve().parents[1] / "real_data"

def smoke_config(tmp_path, steps=2, ckpt=2, objective="clip"):
    path = tmp_path / "smoke.toml"
    path.write_text(synthetic_run_toml(steps=steps, warmup_steps=1, checkpoint_every=ckpt, queue_size=16))
    return config.load_config(path, [f"train.objective={objective}"]), path


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------------------------
# Bad input: one line naming the field, exit 2, before the data is read
# ----------------------------------------------------------------------------------------------
BAD = [  # (--set items, text the one line must contain); data.root does not exist, so a message
    # about the config (not the data) shows the check came first.
    (["train.objective=simclr"], "train.objective = 'simclr' is not allowed: one of clip, supervised"),
    (["train.objective=slip", "train.ssl_weight=-0.5"], "train.ssl_weight = -0.5 is out of range"),
    (["train.objective=declip", "train.nn_weight=-1"], "train.nn_weight = -1"),
    (["train.objective=declip", "train.queue_size=4"], "train.queue_size = 4 is out of range"),
    (["train.objective=filip", "data.context_length=1"], "data.context_length = 1 is not allowed with train.objective = 'filip'"),
    (["train.objective=supervised", "data.dataset=cc3m"], "data.dataset = 'cc3m' is not allowed with train.objective = 'supervised'"),
    (["train.objective=slip", "train.loss=linear"], "train.loss = 'linear' is not allowed with train.objective = 'slip'"),
    (["model.text_layers=-1"], "model.text_layers = -1 is out of range"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[b[0][-1] for b in BAD])
def test_bad_objective_settings_are_refused_before_loading_data(tmp_path, overrides, message):
    path = tmp_path / "run.toml"
    path.write_text('[data]\ndataset = "tiny_imagenet"\nroot = "/nonexistent/tiny_imagenet"\n'
                    '[train]\nbatch_size = 8\n')
    with pytest.raises(config.ConfigError) as err:
        config.load_config(path, overrides)
    assert message in str(err.value)


def test_cli_refuses_a_bad_objective_in_one_line_with_exit_2(tmp_path):
    _, path = smoke_config(tmp_path)
    proc = run_cli("mmcl_theory.clip.train", "--config", str(path), "--workdir", str(tmp_path / "w"),
                   "--set", "train.objective=supervised", "--set", "data.dataset=csv", "--set", "data.root=/nonexistent",
                   "--set", "data.vocab_size=4096")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "data.dataset = 'csv' is not allowed with train.objective = 'supervised'" in proc.stderr
    assert not (tmp_path / "w").exists()  # refused before the run folder or any data was touched


# ----------------------------------------------------------------------------------------------
# SLIP's augmentation
# ----------------------------------------------------------------------------------------------
def test_resized_crop_of_a_constant_region_is_that_constant():
    # top-left 4x4 quadrant of an 8x8 image is 100, the rest 0; a 2x2 box inside the quadrant blown
    # up to 8x8 samples only quadrant pixels (bilinear support stays within [0, 3) x [0, 3)).
    image = np.zeros((8, 8, 1), np.float32)
    image[:4, :4] = 100.0
    out = augment.resized_crop(jnp.asarray(image), jnp.array([0.0, 0.0, 2.0, 2.0]))
    np.testing.assert_allclose(out, 100.0, atol=1e-4)
    full = augment.resized_crop(jnp.asarray(image), jnp.array([0.0, 0.0, 8.0, 8.0]))
    np.testing.assert_allclose(full, image, atol=1e-4)  # the whole image: identity


def test_views_are_crops_or_flips_keyed_by_prng():
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    a = augment.random_resized_crop_flip(jax.random.key(1), images)
    b = augment.random_resized_crop_flip(jax.random.key(1), images)
    c = augment.random_resized_crop_flip(jax.random.key(2), images)
    assert a.shape == images.shape and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert float(a.min()) >= -1e-3 and float(a.max()) <= 255 + 1e-3  # bilinear: a convex combination
    boxes = augment.crop_boxes(jax.random.key(3), 1000, 32)
    area = boxes[:, 2] * boxes[:, 3] / 32 ** 2
    assert float(area.min()) >= 0.08 * 0.74 and float(area.max()) <= 1.0  # clipping only shrinks
    assert np.all(boxes[:, 0] + boxes[:, 2] <= 32 + 1e-4) and np.all(boxes[:, 1] + boxes[:, 3] <= 32 + 1e-4)


def test_flip_is_exactly_left_right():
    # with a full-image crop (scale 1, ratio 1) each view is the image or its mirror
    images = np.random.default_rng(1).integers(0, 256, (8, 6, 6, 3), dtype=np.uint8).astype(np.float32)
    out = np.asarray(augment.random_resized_crop_flip(jax.random.key(4), images, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
    for x, y in zip(images, out):
        assert np.allclose(y, x, atol=1e-3) or np.allclose(y, x[:, ::-1], atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Smoke runs and resume
# ----------------------------------------------------------------------------------------------
def test_declip_steps_fill_the_queue_fifo():
    """Three jitted DeCLIP steps (the trainer's step function, no files): finite losses, the queue
    holds unit text embeddings, 3 x 8 captions in a queue of 16 -> full, next write at 24 mod 16 = 8."""
    cfg = models.model_config("ViT-test", vocab_size=512)
    model = models.create_model(cfg, eot_id=511)
    t = config.TrainSection(steps=3, batch_size=8, objective="declip", queue_size=16)
    tx = state.make_optimizer(t, jax.eval_shape(lambda r: models.init_variables(model, r), jax.random.key(0))["params"])
    st = state.init_state(model, tx, jax.random.key(0), objectives.initial_objective_state(objectives.OBJECTIVES["declip"], 16, cfg.embed_dim))
    step = jax.jit(train.make_train_step(model, tx, objectives.step_objective(objectives.OBJECTIVES["declip"]), state.lr_schedule(t)))
    data = train_data.synthetic_data(8, 32, 16, 512, seed=0)
    batch = train_data.host_batch(data, 0, 0, 8)
    losses = []
    for _ in range(3):
        st, metrics = step(st, batch)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert int(st["objective"]["count"]) == 16 and int(st["objective"]["next"]) == 8
    np.testing.assert_allclose(np.linalg.norm(st["objective"]["queue"], axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
def test_cli_smoke_run_of_each_objective(tmp_path, objective):
    """The shipped smoke config (real_data/smoke_synthetic.toml, 5 steps) with each objective."""
    proc = run_cli("mmcl_theory.clip.train", "--config", str(REAL_DATA / "smoke_synthetic.toml"), "--workdir",
                   str(tmp_path / "w"), "--no-progress", "--set", f"train.objective={objective}")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["step"] == 5 and np.isfinite(last["loss"]) and last["grad_norm"] > 0


@pytest.mark.slow
def test_declip_resume_equals_uninterrupted_run(tmp_path):
    cfg, _ = smoke_config(tmp_path, steps=4, ckpt=2, objective="declip")
    work = tmp_path / "w"
    train.train(cfg, work, progress=False)
    uninterrupted = read_jsonl(work / "metrics.jsonl")
    shutil.rmtree(work.resolve() / "checkpoints" / "4")  # died after step 2's checkpoint
    train.train(cfg, work, progress=False)
    resumed = read_jsonl(work / "metrics.jsonl")
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in uninterrupted], rel=1e-5)


# ----------------------------------------------------------------------------------------------
# Supervised checkpoints scored with their own head
# ----------------------------------------------------------------------------------------------
def test_head_class_scores_map_by_imagenet_index():
    logits = np.array([[1.0, 2.0, 3.0]], np.float32)  # head classes = ImageNet 10, 20, 30
    scores = zero_shot.head_class_scores(logits, [10, 20, 30], [30, 5, 10])
    np.testing.assert_array_equal(scores, [[3.0, -np.inf, 1.0]])  # ImageNet 5 is not a head class


@pytest.mark.slow
def test_supervised_tiny_imagenet_checkpoint_is_scored_by_evaluate(tmp_path, shared_data):
    path = tmp_path / "sup.toml"
    path.write_text(f"""
[model]
name = "ViT-test"
[data]
dataset = "tiny_imagenet"
root = "{shared_data / 'tiny_imagenet'}"
caption_variant = "label"
vocab_size = 600
context_length = 16
options = {{per_class = 2}}
[train]
objective = "supervised"
steps = 2
batch_size = 16
checkpoint_every = 2
""")
    work = tmp_path / "w"
    assert run_cli("mmcl_theory.clip.train", "--config", str(path), "--workdir", str(work), "--no-progress").returncode == 0
    run = json.loads((work / "run.json").read_text())
    assert run["model_options"] == {"num_classes": 200, "text_tower": False} and run["classes"]["kind"] == "softmax"
    proc = run_cli("mmcl_theory.clip.evaluate", "--workdir", str(work), "--dataset", "tiny_imagenet",
                   "--root", f"tiny_imagenet={shared_data / 'tiny_imagenet'}", "--max-examples", "50")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next((work / "eval").glob("step_*/tiny_imagenet__zeroshot.json")).read_text())
    assert result["metrics"]["n"] == 50 and result["task"]["classes_without_head"] == 0
    proc = run_cli("mmcl_theory.clip.evaluate", "--workdir", str(work), "--dataset", "coco_retrieval",
                   "--root", f"coco_retrieval={shared_data / 'coco_mini'}")
    assert proc.returncode == 2 and "retrieval needs a text tower" in proc.stderr
