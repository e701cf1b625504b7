"""Zero-shot classification and retrieval of trained CLIPs; one JSON per (model, dataset, task).

    python -m mmcl_theory.clip.evaluate --workdir DIR --dataset imagenet1k imagenetv2 ... \\
        --dataset-root 'ROOT/{dataset}' [--step latest|all|N] [--templates imagenet_templates.json]
    python -m mmcl_theory.clip.evaluate build --workdir DIR [DIR ...] --out results.csv

Dataset names: the data layer's eval sets (imagenet1k, imagenetv2, imagenet_sketch, imagenet-r,
imagenet-a, objectnet, tiny_imagenet, texture_vs_shape_edges, texture_vs_shape_silhouettes),
``imagenet1k@SUBSET`` (ImageNet val on the classes of imagenet-r, imagenet-a or objectnet: the
x-axis of effective robustness), ``imagenet_robustness`` (= imagenetv2, imagenet_sketch, imagenet-r,
imagenet-a, objectnet and the three imagenet1k@ sets),
``NAME:SHIFT[:SEVERITY]`` for a data-layer shift of an eval set (e.g. ``tiny_imagenet:gaussian_blur:3``),
and ``coco_retrieval`` (COCO val captions; R@1/5/10 both ways).

Zero-shot: class weights w_k = normalise(mean_t normalise(f_text(template_t(name_k)))); scores
s_ik = <f_image(x_i), w_k>. The eval set's classnames are the candidates, which restricts ImageNet
logits to the 200 R/A classes; ObjectNet counts a hit when the prediction is in the image's set of
accepted classes (testbed protocol, from the data layer). Texture-vs-shape sets average the softmax
probabilities of each category's classes within a *class space* (ImageNet-1k, or Tiny ImageNet's 200
classes for models trained there); categories with no class in that space are left out.
Metrics: top-1, top-5 and balanced (mean per-class) accuracy.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import mmcl_theory
from mmcl_theory.clip import models

ROBUSTNESS_SUITE = ("imagenetv2", "imagenet_sketch", "imagenet-r", "imagenet-a", "objectnet",
                    "imagenet1k@imagenet-r", "imagenet1k@imagenet-a", "imagenet1k@objectnet")


# ----------------------------------------------------------------------------------------------
# Metrics (pure numpy)
# ----------------------------------------------------------------------------------------------
def classification_metrics(scores: np.ndarray, labels: np.ndarray, hit_sets: Sequence[frozenset] | None = None) -> dict:
    """scores (N, K), labels (N,) -> {'top1', 'top5', 'balanced', 'n'}; with hit_sets, a prediction is
    right when it lies in the image's set (top-5: any of the 5 does). Balanced = mean over classes of
    per-class top-1 recall (classes by label)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    if hit_sets is None:
        hit1 = top[:, 0] == labels
        hit5 = (top == labels[:, None]).any(axis=1)
    else:
        hit1 = np.array([int(t) in h for t, h in zip(top[:, 0], hit_sets)])
        hit5 = np.array([any(int(x) in h for x in row) for row, h in zip(top, hit_sets)])
    per_class = [hit1[labels == c].mean() for c in np.unique(labels)]
    return {"top1": float(hit1.mean()), "top5": float(hit5.mean()), "balanced": float(np.mean(per_class)),
            "n": int(labels.size)}


def group_scores(probs: np.ndarray, space_imagenet_idx: np.ndarray, groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """probs (N, K) over a class space whose class k is ImageNet class space_imagenet_idx[k];
    groups[g]: ImageNet indices of category g. Returns (scores (N, G') = mean probability over the
    category's classes present in the space, covered (G,) bool) with G' = covered.sum()."""
    pos = {int(c): k for k, c in enumerate(space_imagenet_idx)}
    cols = [[pos[c] for c in g if c in pos] for g in groups]
    covered = np.array([bool(c) for c in cols])
    return np.stack([probs[:, c].mean(axis=1) for c in cols if c], axis=1), covered


def retrieval_metrics(img_emb: np.ndarray, txt_emb: np.ndarray, txt_to_img: np.ndarray) -> dict:
    """Recall@{1,5,10} for image->text (any of its captions in the top k) and text->image."""
    sim = img_emb @ txt_emb.T  # (N_img, N_txt)
    out = {}
    order_t2i = np.argsort(-sim.T, axis=1)
    order_i2t = np.argsort(-sim, axis=1)
    for k in (1, 5, 10):
        out[f"text_to_image_R@{k}"] = float((order_t2i[:, :k] == txt_to_img[:, None]).any(axis=1).mean())
        out[f"image_to_text_R@{k}"] = float(
            (txt_to_img[order_i2t[:, :k]] == np.arange(len(img_emb))[:, None]).any(axis=1).mean())
    return out


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Encoder:
    """Jitted image/text encoders of one model + variables; outputs float32 numpy, L2-normalised."""

    model: models.CLIP
    variables: dict
    batch_size: int = 256

    def __post_init__(self):
        self._img = jax.jit(lambda v, x: self.model.apply(v, models.preprocess(x, self.model.dtype),
                                                           method=models.CLIP.encode_image))
        self._txt = jax.jit(lambda v, t: self.model.apply(v, t, method=models.CLIP.encode_text))
        self._scale = float(self.model.apply(self.variables, method=models.CLIP.temperature_scale))

    @property
    def logit_scale(self) -> float:
        return self._scale

    def _batched(self, fn, arr: np.ndarray) -> np.ndarray:
        out, b = [], self.batch_size
        for lo in range(0, len(arr), b):
            chunk = arr[lo:lo + b]
            pad = b - len(chunk)
            if pad:  # fixed shapes: one compilation
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(np.asarray(fn(self.variables, chunk))[:b - pad])
        return np.concatenate(out) if out else np.zeros((0, self.model.config.embed_dim), np.float32)

    def images(self, images: np.ndarray) -> np.ndarray:
        return self._batched(self._img, np.asarray(images))

    def texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._batched(self._txt, np.asarray(tokens, np.int32))


def zero_shot_weights(encoder: Encoder, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """(K, D): normalised mean over templates of the normalised text embeddings of each class."""
    ctx = encoder.model.config.text.context_length
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    emb = encoder.texts(tokenizer.encode_batch(prompts, ctx)).reshape(len(classnames), len(templates), -1)
    w = emb.mean(axis=1)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Evaluation tasks
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Task:
    """A decoded evaluation set. kind 'zeroshot' (images, labels, classnames, hit_sets, groups) or
    'retrieval' (images, texts, txt_to_img)."""

    dataset: str
    kind: str
    images: np.ndarray
    labels: np.ndarray | None = None
    classnames: list[str] | None = None
    hit_sets: list | None = None
    groups: list | None = None
    texts: list[str] | None = None
    txt_to_img: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)


def _root_for(name: str, root: str, roots: dict) -> str:
    if name in roots:
        return roots[name]
    if not root:
        raise ValueError(f"dataset root for {name!r}: give --dataset-root 'ROOT/{{dataset}}' or a per-dataset root")
    return root.replace("{dataset}", name)


def expand_datasets(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        out += list(ROBUSTNESS_SUITE) if n == "imagenet_robustness" else [n]
    return out


def build_task(name: str, resolution: int, root: str = "", roots: dict | None = None,
               options: dict | None = None, max_examples: int = 0) -> Task:
    """Load and decode one evaluation dataset (see the module docstring for names)."""
    from mmcl_theory.clip import data

    roots, options = roots or {}, options or {}
    base, _, shift = name.partition(":")
    base, _, subset = base.partition("@")
    path = _root_for(base, root, roots)
    if base == "coco_retrieval":
        ds = data.load_training_set("coco", path, split="val")
        caps = ds.all_texts("caption")
        keep = range(len(ds) if not max_examples else min(max_examples, len(ds)))
        images = data.read_images([ds.image_paths[i] for i in keep], resolution)
        texts = [c for i in keep for c in caps[i]]
        t2i = np.array([i for i in keep for _ in caps[i]])
        return Task(name, "retrieval", images, texts=texts, txt_to_img=t2i, info={"root": path})
    if base not in data.EVAL_SETS:
        raise ValueError(f"--dataset {name!r}: must be one of {list(data.EVAL_SETS)}, imagenet_robustness, "
                         f"coco_retrieval, or NAME:SHIFT[:SEVERITY] with SHIFT in {list(data.SHIFTS)}")
    opts = dict(options.get(base, {}), **({"restrict_to": subset} if subset else {}))
    es = data.load_eval_set(base, path, **opts)
    idx = np.arange(len(es))
    if max_examples and max_examples < len(es):
        idx = np.random.default_rng(0).choice(len(es), max_examples, replace=False)
        idx.sort()
    images = es.read(idx, resolution)
    info = {"root": path, "skipped": len(es.skipped)}
    if shift:
        kind, _, sev = shift.partition(":")
        severity = int(sev) if sev else 3
        images = data.apply_shift(images, kind, severity, seed=0)
        info.update(shift=kind, severity=severity)
    hit_sets = [es.hit_sets[i] for i in idx] if es.hit_sets is not None else None
    return Task(name, "zeroshot", images, labels=es.labels[idx], classnames=list(es.classnames),
                hit_sets=hit_sets, groups=es.class_groups, info=info)


def class_space(name: str, root: str, roots: dict | None = None) -> tuple[list[str], np.ndarray]:
    """(classnames, ImageNet index of each) of the space that texture-vs-shape categories aggregate over."""
    from mmcl_theory.clip import data

    if name == "imagenet1k":
        return data.load_classnames(), np.arange(1000)
    if name == "tiny_imagenet":
        es = data.load_eval_set("tiny_imagenet", _root_for("tiny_imagenet", root, roots or {}), per_class=1)
        return list(es.classnames), np.asarray(es.class_subset)
    raise ValueError(f"class_space = {name!r}: must be one of 'imagenet1k', 'tiny_imagenet'")


def run_task(encoder: Encoder, tokenizer, task: Task, templates: Sequence[str],
             space: tuple[list[str], np.ndarray] | None = None) -> dict:
    """Metrics of one task: zero-shot top1/top5/balanced, or retrieval recalls."""
    img = encoder.images(task.images)
    if task.kind == "retrieval":
        txt = encoder.texts(tokenizer.encode_batch(task.texts, encoder.model.config.text.context_length))
        return retrieval_metrics(img, txt, task.txt_to_img)
    if task.groups is not None:
        if space is None:
            raise ValueError(f"{task.dataset}: needs a class space (eval.class_space)")
        w = zero_shot_weights(encoder, tokenizer, space[0], templates)
        logits = encoder.logit_scale * img @ w.T
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=1))
        scores, covered = group_scores(probs, space[1], task.groups)
        remap = np.cumsum(covered) - 1
        keep = covered[task.labels]
        res = classification_metrics(scores[keep], remap[task.labels[keep]])
        res["categories"] = [c for c, ok in zip(task.classnames, covered) if ok]
        return res
    w = zero_shot_weights(encoder, tokenizer, task.classnames, templates)
    return classification_metrics(img @ w.T, task.labels, task.hit_sets)


# ----------------------------------------------------------------------------------------------
# Runs on disk
# ----------------------------------------------------------------------------------------------
def write_result(workdir: Path, step: int, dataset: str, task: str, metrics: dict, meta: dict) -> Path:
    """WORKDIR/eval/step_SSSSSSSS/<dataset>__<task>.json (atomic), with config and package version."""
    from mmcl_theory.clip.train import write_json_atomic

    safe = dataset.replace(":", "-").replace("/", "_")
    path = Path(workdir) / "eval" / f"step_{step:08d}" / f"{safe}__{task}.json"
    write_json_atomic(path, {"model": Path(workdir).name, "step": step, "dataset": dataset, "task": task,
                             "metrics": metrics, "caption_variant": meta["config"]["data"]["caption_variant"],
                             "model_name": meta["config"]["model"]["name"], "config": meta["config"],
                             "version": mmcl_theory.__version__})
    return path


def load_run_meta(workdir: Path) -> dict:
    path = Path(workdir) / "run.json"
    if not path.is_file():
        raise ValueError(f"--workdir = {str(workdir)!r}: no run.json (not a training workdir)")
    return json.loads(path.read_text())


def model_from_meta(meta: dict, dtype=jnp.float32) -> models.CLIP:
    mc = meta["model_config"]
    cfg = models.CLIPConfig(name=mc["name"], embed_dim=mc["embed_dim"], vision=models.VisionConfig(**mc["vision"]),
                            text=models.TextConfig(**mc["text"]))
    return models.create_model(cfg, meta["eot_id"], dtype)


def load_variables(workdir: Path, model: models.CLIP, step: int, meta: dict) -> dict:
    """{'params'[, 'batch_stats']} of checkpoint ``step`` (restores the whole train state, replicated
    over the current devices, whatever topology it was saved from)."""
    from mmcl_theory.clip import train

    t = train.config_from_dict(meta["config"]).train
    rng = jax.random.key(0)
    tx = train.make_optimizer(t, jax.eval_shape(lambda r: models.init_variables(model, r), rng)["params"])
    rep = jax.sharding.NamedSharding(train.make_mesh(), jax.sharding.PartitionSpec())
    abstract = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                                      jax.eval_shape(lambda r: train.init_state(model, tx, r), rng))
    mngr = ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints")
    try:
        state = train.restore_state(mngr, abstract, step)
    finally:
        mngr.close()
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]
    return variables


def checkpoint_steps(workdir: Path) -> list[int]:
    mngr = ocp.CheckpointManager(Path(workdir).resolve() / "checkpoints")
    try:
        return sorted(mngr.all_steps())
    finally:
        mngr.close()


def load_templates(path: str) -> list[str]:
    from mmcl_theory.clip import data

    return data.load_templates(path or None)


class PeriodicEvaluator:
    """Zero-shot evaluation inside training: decodes cfg.eval's datasets once, then per call
    evaluates the current state and writes one JSON per dataset. Returns {dataset: metrics}."""

    def __init__(self, cfg, model: models.CLIP, workdir: Path):
        from mmcl_theory.clip import data

        e = cfg.eval
        self.workdir, self.model = Path(workdir), model
        self.meta = load_run_meta(self.workdir)
        self.tokenizer = data.load_tokenizer(self.workdir / "tokenizer.json")
        self.templates = load_templates(e.templates)
        size = model.config.vision.image_size
        self.tasks = [build_task(n, size, e.root, e.roots, e.options, e.max_examples)
                      for n in expand_datasets(e.datasets)]
        needs_space = any(t.groups is not None for t in self.tasks)
        self.space = class_space(e.class_space, e.root, e.roots) if needs_space else None
        self.batch_size = e.batch_size

    def __call__(self, state: dict, step: int) -> dict:
        variables = {"params": state["params"]}
        if state["batch_stats"]:
            variables["batch_stats"] = state["batch_stats"]
        enc = Encoder(self.model, variables, self.batch_size)
        out = {}
        for task in self.tasks:
            metrics = run_task(enc, self.tokenizer, task, self.templates, self.space)
            metrics.update(task.info)
            if jax.process_index() == 0:
                write_result(self.workdir, step, task.dataset, "zeroshot" if task.kind == "zeroshot" else "retrieval",
                             metrics, self.meta)
            out[task.dataset] = {k: v for k, v in metrics.items() if k in ("top1", "top5", "balanced")
                                 or k.startswith(("text_to", "image_to"))}
        return out


def evaluate_workdir(workdir: str | os.PathLike, datasets: Sequence[str], root: str = "", roots: dict | None = None,
                     steps: str = "latest", templates: str = "", class_space_name: str = "imagenet1k",
                     batch_size: int = 256, max_examples: int = 0, options: dict | None = None) -> list[Path]:
    """Evaluate checkpoints ('latest', 'all' or a step number) of a training workdir; returns the JSON paths."""
    from mmcl_theory.clip import data

    workdir = Path(workdir)
    meta = load_run_meta(workdir)
    model = model_from_meta(meta)
    tokenizer = data.load_tokenizer(workdir / "tokenizer.json")
    available = checkpoint_steps(workdir)
    if not available:
        raise ValueError(f"--workdir = {str(workdir)!r}: no checkpoints")
    if steps == "latest":
        chosen = [available[-1]]
    elif steps == "all":
        chosen = available
    else:
        chosen = [int(steps)]
        if chosen[0] not in available:
            raise ValueError(f"--step = {steps}: must be one of {available}, 'latest' or 'all'")
    size = model.config.vision.image_size
    tasks = [build_task(n, size, root, roots, options, max_examples) for n in expand_datasets(datasets)]
    space = class_space(class_space_name, root, roots) if any(t.groups is not None for t in tasks) else None
    temps = load_templates(templates)
    written = []
    for step in chosen:
        enc = Encoder(model, load_variables(workdir, model, step, meta), batch_size)
        for task in tasks:
            metrics = run_task(enc, tokenizer, task, temps, space)
            metrics.update(task.info)
            written.append(write_result(workdir, step, task.dataset,
                                        "zeroshot" if task.kind == "zeroshot" else "retrieval", metrics, meta))
            print(f"step {step} {task.dataset}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return written


# ----------------------------------------------------------------------------------------------
# Results table
# ----------------------------------------------------------------------------------------------
CSV_FIELDS = ("model", "model_name", "caption_variant", "step", "dataset", "task", "top1", "top5", "balanced", "n",
              "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
              "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10", "version")


def collect_results(workdirs: Sequence[str | os.PathLike]) -> list[dict]:
    rows = []
    for wd in workdirs:
        for path in sorted(Path(wd).glob("eval/step_*/*.json")):
            r = json.loads(path.read_text())
            row = {k: r.get(k) for k in ("model", "model_name", "caption_variant", "step", "dataset", "task", "version")}
            row.update({k: v for k, v in r["metrics"].items() if k in CSV_FIELDS})
            rows.append(row)
    return rows


def build_csv(workdirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Gather every eval JSON of the workdirs into one CSV (atomic); returns the number of rows."""
    rows = collect_results(workdirs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out)
    return len(rows)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parse_roots(items: Sequence[str]) -> dict:
    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--root {item!r}: must look like NAME=PATH")
        roots[name] = path
    return roots


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "build":
            p = argparse.ArgumentParser(prog="python -m mmcl_theory.clip.evaluate build")
            p.add_argument("--workdir", nargs="+", required=True)
            p.add_argument("--out", required=True, help="CSV path")
            a = p.parse_args(argv[1:])
            print(f"{build_csv(a.workdir, a.out)} rows -> {a.out}")
            return 0
        p = argparse.ArgumentParser(prog="python -m mmcl_theory.clip.evaluate", description=__doc__.split("\n")[0])
        p.add_argument("--workdir", required=True)
        p.add_argument("--dataset", nargs="+", required=True)
        p.add_argument("--dataset-root", default="", help="root template, '{dataset}' replaced by the name")
        p.add_argument("--root", action="append", default=[], metavar="NAME=PATH", help="root of one dataset")
        p.add_argument("--step", default="latest", help="'latest', 'all' or a step number")
        p.add_argument("--templates", default="", help="JSON list of templates (default: the built-in set)")
        p.add_argument("--class-space", default="imagenet1k", choices=("imagenet1k", "tiny_imagenet"))
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--max-examples", type=int, default=0, help="random subset per dataset (0 = all)")
        a = p.parse_args(argv)
        evaluate_workdir(a.workdir, a.dataset, a.dataset_root, _parse_roots(a.root), a.step, a.templates,
                         a.class_space, a.batch_size, a.max_examples)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
