"""Zero-shot classification and retrieval of a CLIP: classifier weights from prompts, tasks, metrics.

The library half of evaluation; the training loop (``clip.train``) and the evaluation CLI
(``clip.evaluate``) both call it, and it calls neither.

Zero-shot classifier. With f_I, f_T the L2-normalised image and text embeddings (float32, (D,)),
templates t = 1..T and class names c_k, k = 1..K:

    w_k = normalise( (1/T) sum_t f_T(template_t(c_k)) )          (K, D)
    s_ik = <f_I(x_i), w_k>                                        (N, K), prediction argmax_k s_ik

Texture-vs-shape sets score G coarse categories: p_i = softmax_k(logit_scale * s_ik) over a class
space (ImageNet-1k, or Tiny ImageNet's 200 classes), and category g's score is the mean of p_ik over
the space's classes in g; categories with no class in the space are left out. ObjectNet counts a
hit when the prediction is in the image's set of accepted classes (the testbed's protocol).

A supervised run (train.objective = 'supervised') is scored with its own linear head instead of
prompts: the score of a task's class k is the head logit of the training class with the same
ImageNet-1k index (``head_class_scores``; a task class the head lacks scores -inf and is counted in
the result's ``task.classes_without_head``); texture-vs-shape categories aggregate the head's softmax
over its own classes. Retrieval needs a text tower and is refused for such runs.

Metrics: top-1, top-5, balanced accuracy (mean over classes of per-class top-1 recall), and for
retrieval Recall@{1,5,10} in both directions.

Dataset names: the data layer's eval sets (``data.EVAL_SETS``), ``imagenet1k@SUBSET`` (ImageNet val
on the classes of imagenet-r, imagenet-a or objectnet: the x axis of effective robustness),
``imagenet_robustness`` (= ROBUSTNESS_SUITE), ``NAME:SHIFT[:SEVERITY]`` (a data-layer shift of an eval
set, default severity 3) and ``coco_retrieval`` (COCO val captions).

Unreadable images are skipped: they are left out of the task, counted, listed (paths relative to
the dataset root) in the result's task record, and announced on stderr; the evaluation goes on.
Result files: one JSON per (model, step, dataset, task) with ``metrics`` (numbers only), ``task``
(what was evaluated, with no absolute path) and ``provenance`` (the run header).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory.clip import models
from mmcl_theory.clip.config import EvalSection, portable_name, portable_skips, relative_location
from mmcl_theory.config import ConfigError
from mmcl_theory.io import atomic_write_json

ROBUSTNESS_SUITE = ("imagenetv2", "imagenet_sketch", "imagenet-r", "imagenet-a", "objectnet",
                    "imagenet1k@imagenet-r", "imagenet1k@imagenet-a", "imagenet1k@objectnet")
HEADLINE = ("top1", "top5", "balanced")


# ----------------------------------------------------------------------------------------------
# Metrics (numpy)
# ----------------------------------------------------------------------------------------------
def classification_metrics(scores: np.ndarray, labels: np.ndarray,
                           hit_sets: Sequence[frozenset] | None = None) -> dict:
    """Top-1, top-5 and balanced accuracy of class scores.

    scores: float (N, K); labels: int (N,) in [0, K). With hit_sets (one set of accepted class
    indices per image), a prediction is right when it lies in the image's set (top-5: any of the 5).
    balanced = (1/|C|) sum_{c in C} mean_{i: y_i = c} [top-1 hit_i], C = the labels present.
    Returns {'top1', 'top5', 'balanced' (floats in [0, 1]), 'n' (int N)}.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if labels.size == 0:
        raise ValueError("no images left to score (every image was skipped or filtered out)")
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


def group_scores(probs: np.ndarray, space_imagenet_idx: np.ndarray,
                 groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Category scores from class probabilities.

    probs: float (N, K) over a class space whose class k is ImageNet class space_imagenet_idx[k]
    (int (K,)); groups[g]: the ImageNet indices of category g (G categories). Returns
    (scores float (N, G'), covered bool (G,)) with scores[:, j] = mean of probs over the space's classes
    in the j-th covered category, and G' = covered.sum().
    """
    pos = {int(c): k for k, c in enumerate(space_imagenet_idx)}
    cols = [[pos[c] for c in g if c in pos] for g in groups]
    covered = np.array([bool(c) for c in cols])
    return np.stack([probs[:, c].mean(axis=1) for c in cols if c], axis=1), covered


def retrieval_metrics(img_emb: np.ndarray, txt_emb: np.ndarray, txt_to_img: np.ndarray) -> dict:
    """Recall@{1,5,10} both ways from normalised embeddings.

    img_emb: float (N_img, D); txt_emb: float (N_txt, D); txt_to_img: int (N_txt,), the image of each
    caption. Similarity S = img_emb txt_emb^T. text_to_image_R@k: fraction of captions whose image is
    among their k most similar images; image_to_text_R@k: fraction of images with any of their
    captions among their k most similar captions.
    """
    sim = img_emb @ txt_emb.T
    out = {}
    order_t2i = np.argsort(-sim.T, axis=1)
    order_i2t = np.argsort(-sim, axis=1)
    for k in (1, 5, 10):
        out[f"text_to_image_R@{k}"] = float((order_t2i[:, :k] == txt_to_img[:, None]).any(axis=1).mean())
        out[f"image_to_text_R@{k}"] = float(
            (txt_to_img[order_i2t[:, :k]] == np.arange(len(img_emb))[:, None]).any(axis=1).mean())
    return out


# ----------------------------------------------------------------------------------------------
# Encoders and the classifier
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Encoder:
    """The prediction functions of one model and its variables ({'params'[, 'batch_stats']}).

    images(uint8 (N, S, S, 3)) -> float32 (N, D) and texts(int32 tokens (N, L)) -> float32 (N, D),
    both L2-normalised, computed in fixed batches of ``batch_size`` (the last one padded, so one
    compilation each); logit_scale = exp(learned log scale) = 1 / temperature. A model with a
    classification head (model.num_classes > 0) also has head_logits(images) -> float32 (N, C), and
    ``classes`` (run.json 'classes': its class names and their ImageNet-1k indices).
    """

    model: models.CLIP
    variables: dict
    batch_size: int = 256
    classes: dict | None = None

    def __post_init__(self):
        self._img = jax.jit(lambda v, x: self.model.apply(v, models.preprocess(x, self.model.dtype),
                                                           method=models.CLIP.encode_image))
        self._txt = jax.jit(lambda v, t: self.model.apply(v, t, method=models.CLIP.encode_text))
        self._head = jax.jit(lambda v, x: self.model.apply(v, models.preprocess(x, self.model.dtype),
                                                            method=models.CLIP.classify))
        self._scale = float(self.model.apply(self.variables, method=models.CLIP.temperature_scale))

    @property
    def supervised(self) -> bool:
        """True when the model predicts with its own head (no prompts)."""
        return self.model.num_classes > 0

    def head_logits(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, num_classes): the supervised head's logits of uint8 images (N, S, S, 3)."""
        return self._batched(self._head, images, self.model.num_classes)

    @property
    def logit_scale(self) -> float:
        """The trained 1 / temperature, exp(logit_scale) clipped to [1, 100]."""
        return self._scale

    def _batched(self, fn, arr: np.ndarray, width: int) -> np.ndarray:
        """fn over fixed-size batches (the last one padded by repeating its final row, the padding cut off):
        (N, ...) -> float32 (N, width)."""
        out, b = [], self.batch_size
        for lo in range(0, len(arr), b):
            chunk = arr[lo:lo + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(np.asarray(fn(self.variables, chunk))[:b - pad])
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    def images(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, D): L2-normalised image embeddings of uint8 images (N, S, S, 3)."""
        return self._batched(self._img, np.asarray(images), self.model.config.embed_dim)

    def texts(self, tokens: np.ndarray) -> np.ndarray:
        """float32 (N, D): L2-normalised text embeddings of int32 token rows (N, L)."""
        return self._batched(self._txt, np.asarray(tokens, np.int32), self.model.config.embed_dim)


def classifier_weights(encoder: Encoder, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """float32 (K, D): w_k = normalise(mean_t f_T(template_t with '{}' -> classnames[k])) (module doc)."""
    ctx = encoder.model.config.text.context_length
    prompts = [t.replace("{}", c) for c in classnames for t in templates]
    emb = encoder.texts(tokenizer.encode_batch(prompts, ctx)).reshape(len(classnames), len(templates), -1)
    w = emb.mean(axis=1)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Task:
    """A decoded evaluation set.

    kind 'zeroshot': images uint8 (N, R, R, 3), labels int64 (N,), classnames (K names), hit_sets
    (ObjectNet, per image) or groups (texture-vs-shape, ImageNet indices per category);
    kind 'retrieval': images, texts (M captions), txt_to_img int (M,).
    record: what was evaluated (root by name, shift, skipped images), written into the result's task.
    imagenet_index: int (K,), the ImageNet-1k index of each class, or None (scoring with a head needs it).
    """

    dataset: str
    kind: str
    images: np.ndarray
    labels: np.ndarray | None = None
    classnames: list[str] | None = None
    hit_sets: list | None = None
    groups: list | None = None
    texts: list[str] | None = None
    txt_to_img: np.ndarray | None = None
    record: dict = dataclasses.field(default_factory=dict)
    imagenet_index: np.ndarray | None = None


def expand_datasets(names: Sequence[str]) -> list[str]:
    """Dataset names with 'imagenet_robustness' replaced by ROBUSTNESS_SUITE."""
    out: list[str] = []
    for n in names:
        out += list(ROBUSTNESS_SUITE) if n == "imagenet_robustness" else [n]
    return out


def root_for(name: str, root: str, roots: dict) -> str:
    """The folder of dataset ``name``: roots[name], else root with '{dataset}' replaced by the name."""
    if name in roots:
        return roots[name]
    if not root:
        raise ConfigError(f"dataset root for {name!r}: give --dataset-root 'ROOT/{{dataset}}' (eval.root) or a "
                          f"root for {name!r} (--root {name}=PATH, eval.roots)")
    return root.replace("{dataset}", name)


def _report_unreadable(name: str, unreadable: Sequence[tuple[str, str]], total: int, root: str) -> None:
    if unreadable:
        where, reason = unreadable[0]
        print(f"{name}: skipped {len(unreadable)} unreadable image(s) of {total} (first: {relative_location(where, root)}: "
              f"{reason}); listed in the result's task.unreadable", file=sys.stderr)


def read_readable(paths: Sequence[str], resolution: int, crop_border: int = 0) -> tuple[np.ndarray, np.ndarray, list]:
    """Decode images, leaving out the unreadable ones: (uint8 (N', R, R, 3), kept bool (N,), [(path, reason)])."""
    from mmcl_theory.clip import data

    unreadable: list = []
    images = data.read_images(list(paths), resolution, crop_border=crop_border, skipped=unreadable)
    bad = {w for w, _ in unreadable}
    kept = np.array([p not in bad for p in paths], bool)
    return images[kept], kept, unreadable


class DatasetName(NamedTuple):
    """A parsed dataset name: base set, class subset ('' = none), shift ('' = none) and its severity."""

    base: str
    subset: str
    shift: str
    severity: int


def parse_dataset_name(name: str) -> DatasetName:
    """'BASE[@SUBSET][:SHIFT[:SEVERITY]]' -> DatasetName, checked against the data layer's names
    (ConfigError naming what is allowed); the severity defaults to 3."""
    from mmcl_theory.clip import data

    base, _, shift = name.partition(":")
    base, _, subset = base.partition("@")
    kind, _, sev = shift.partition(":")
    allowed = (f"one of {', '.join(data.EVAL_SETS)}, imagenet_robustness, coco_retrieval, NAME@SUBSET "
               f"(SUBSET in {', '.join(data.eval_sets.CLASS_SETS)}), or NAME:SHIFT[:SEVERITY] (SHIFT in "
               f"{', '.join(data.SHIFTS)}, SEVERITY 1..5)")
    if base == "coco_retrieval" and not (subset or shift):
        return DatasetName(base, "", "", 0)
    if base not in data.EVAL_SETS or (subset and subset not in data.eval_sets.CLASS_SETS) \
            or (shift and kind not in data.SHIFTS):
        raise ConfigError(f"dataset {name!r} is not allowed: {allowed}")
    if sev and not (sev.isdigit() and 1 <= int(sev) <= 5):
        raise ConfigError(f"dataset {name!r}: severity {sev!r} is not allowed: an integer in 1..5")
    return DatasetName(base, subset, kind, int(sev) if sev else (3 if kind else 0))


def build_task(name: str, resolution: int, root: str = "", roots: dict | None = None,
               options: dict | None = None, max_examples: int = 0) -> Task:
    """Load and decode one evaluation dataset by name (module doc); images at ``resolution`` px."""
    from mmcl_theory.clip import data

    roots, options = roots or {}, options or {}
    parsed = parse_dataset_name(name)
    path = root_for(parsed.base, root, roots)
    record = {"dataset_root": portable_name(path)}
    if parsed.base == "coco_retrieval":
        ds = data.load_training_set("coco", path, split="val")
        caps = ds.all_texts("caption")
        keep = range(len(ds) if not max_examples else min(max_examples, len(ds)))
        images, kept, unreadable = read_readable([ds.image_paths[i] for i in keep], resolution)
        _report_unreadable(name, unreadable, len(kept), path)
        kept_idx = [i for i, ok in zip(keep, kept) if ok]
        texts = [c for i in kept_idx for c in caps[i]]
        t2i = np.array([j for j, i in enumerate(kept_idx) for _ in caps[i]], np.int64)
        record.update(unreadable=portable_skips(unreadable, path), skipped_at_load=portable_skips(ds.skipped, path))
        return Task(name, "retrieval", images, texts=texts, txt_to_img=t2i, record=record)
    opts = dict(options.get(parsed.base, {}), **({"restrict_to": parsed.subset} if parsed.subset else {}))
    es = data.load_eval_set(parsed.base, path, **opts)
    idx = np.arange(len(es))
    if max_examples and max_examples < len(es):
        idx = np.sort(np.random.default_rng(0).choice(len(es), max_examples, replace=False))
    images, kept, unreadable = read_readable([es.image_paths[i] for i in idx], resolution, es.crop_border)
    _report_unreadable(name, unreadable, len(idx), path)
    idx = idx[kept]
    record.update(unreadable=portable_skips(unreadable, path), skipped_at_load=portable_skips(es.skipped, path))
    if parsed.shift:
        images = data.apply_shift(images, parsed.shift, parsed.severity, seed=0)
        record.update(shift=parsed.shift, severity=parsed.severity)
    hit_sets = [es.hit_sets[i] for i in idx] if es.hit_sets is not None else None
    imagenet_index = es.class_subset if es.class_subset is not None else (
        np.arange(1000) if len(es.classnames) == 1000 else None)
    return Task(name, "zeroshot", images, labels=es.labels[idx], classnames=list(es.classnames),
                hit_sets=hit_sets, groups=es.class_groups, record=record, imagenet_index=imagenet_index)


def class_space(name: str, root: str, roots: dict | None = None) -> tuple[list[str], np.ndarray]:
    """(classnames, ImageNet index of each: int (K,)) of the space texture-vs-shape categories aggregate over."""
    from mmcl_theory.clip import data

    if name == "imagenet1k":
        return data.load_classnames(), np.arange(1000)
    if name == "tiny_imagenet":
        es = data.load_eval_set("tiny_imagenet", root_for("tiny_imagenet", root, roots or {}), per_class=1)
        return list(es.classnames), np.asarray(es.class_subset)
    raise ConfigError(f"class_space = {name!r} is not allowed: one of imagenet1k, tiny_imagenet")


def category_metrics(logits: np.ndarray, space_imagenet_idx: np.ndarray, task: Task) -> tuple[dict, dict]:
    """Texture-vs-shape metrics from class logits (N, K) over a class space (ImageNet index of each
    class): softmax, then group_scores; images whose category the space does not cover are left out."""
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=1))
    scores, covered = group_scores(probs, space_imagenet_idx, task.groups)
    remap = np.cumsum(covered) - 1
    keep = covered[task.labels]
    categories = [c for c, ok in zip(task.classnames, covered) if ok]
    return classification_metrics(scores[keep], remap[task.labels[keep]]), {"categories": categories}


def head_class_scores(logits: np.ndarray, head_imagenet_index: Sequence[int],
                      task_imagenet_index: Sequence[int]) -> np.ndarray:
    """float32 (N, K): column k = the head logit (of logits, (N, C)) of the head class whose ImageNet-1k
    index is task_imagenet_index[k]; -inf where the head has no such class."""
    column = {int(g): c for c, g in enumerate(head_imagenet_index)}
    scores = np.full((len(logits), len(task_imagenet_index)), -np.inf, np.float32)
    for k, g in enumerate(task_imagenet_index):
        if int(g) in column:
            scores[:, k] = logits[:, column[int(g)]]
    return scores


def _run_head_task(encoder: Encoder, task: Task) -> tuple[dict, dict]:
    """run_task for a model with a classification head (module doc)."""
    if task.kind == "retrieval":
        raise ConfigError(f"{task.dataset}: retrieval needs a text tower; this run was trained supervised")
    head_index = (encoder.classes or {}).get("imagenet_index")
    if head_index is None:
        raise ConfigError(f"{task.dataset}: the run's classes have no ImageNet-1k indices, so its head cannot "
                          "score ImageNet-class evaluation sets")
    logits = encoder.head_logits(task.images)
    if task.groups is not None:
        return category_metrics(logits, np.asarray(head_index), task)
    if task.imagenet_index is None:
        raise ConfigError(f"{task.dataset}: its classes have no ImageNet-1k indices for the run's head")
    scores = head_class_scores(logits, head_index, task.imagenet_index)
    missing = int(np.isinf(scores[:1]).sum()) if len(scores) else 0
    if missing == scores.shape[1]:
        raise ConfigError(f"{task.dataset}: none of its classes is a class of the run's head")
    return classification_metrics(scores, task.labels, task.hit_sets), {"classes_without_head": missing}


def run_task(encoder: Encoder, tokenizer, task: Task, templates: Sequence[str],
             space: tuple[list[str], np.ndarray] | None = None) -> tuple[dict, dict]:
    """(metrics, extra task record) of one task: zero-shot top1/top5/balanced/n, or retrieval recalls;
    for a model with a head, its head's scores (module doc)."""
    if encoder.supervised:
        return _run_head_task(encoder, task)
    img = encoder.images(task.images)
    if task.kind == "retrieval":
        txt = encoder.texts(tokenizer.encode_batch(task.texts, encoder.model.config.text.context_length))
        return dict(retrieval_metrics(img, txt, task.txt_to_img), n=int(len(img))), {}
    if task.groups is not None:
        if space is None:
            raise ConfigError(f"{task.dataset}: needs a class space (eval.class_space / --class-space)")
        w = classifier_weights(encoder, tokenizer, space[0], templates)
        return category_metrics(encoder.logit_scale * img @ w.T, space[1], task)
    w = classifier_weights(encoder, tokenizer, task.classnames, templates)
    return classification_metrics(img @ w.T, task.labels, task.hit_sets), {}


def check_datasets(names: Sequence[str], root: str, roots: dict) -> list[str]:
    """The expanded dataset names, each checked (name, shift, severity, a root to find it under) before
    any set is loaded; ConfigError on the first bad one."""
    names = expand_datasets(names)
    for n in names:
        root_for(parse_dataset_name(n).base, root, roots)
    return names


def build_tasks(names: Sequence[str], resolution: int, root: str, roots: dict, options: dict, max_examples: int,
                class_space_name: str) -> tuple[list[Task], tuple[list[str], np.ndarray] | None]:
    """The decoded tasks of ``names`` (expanded) and, when one needs it, the class space."""
    names = check_datasets(names, root, roots)
    tasks = [build_task(n, resolution, root, roots, options, max_examples) for n in names]
    needs_space = any(t.groups is not None for t in tasks)
    return tasks, class_space(class_space_name, root, roots) if needs_space else None


# ----------------------------------------------------------------------------------------------
# Result files
# ----------------------------------------------------------------------------------------------
def result_path(workdir: Path, step: int, dataset: str, kind: str) -> Path:
    """WORKDIR/eval/step_SSSSSSSS/<dataset, ':' -> '-'>__<kind>.json"""
    safe = dataset.replace(":", "-").replace("/", "_")
    return Path(workdir) / "eval" / f"step_{step:08d}" / f"{safe}__{kind}.json"


def write_result(workdir: Path, step: int, task: Task, metrics: dict, extra: dict, run_fields: dict,
                 provenance: dict) -> Path:
    """Write one result atomically: {'metrics': numbers, 'task': what was evaluated, 'provenance': header}.

    run_fields: {'model' (the run folder's name), 'model_name', 'caption_variant'} of the run."""
    path = result_path(workdir, step, task.dataset, task.kind)
    record = dict(run_fields, step=step, dataset=task.dataset, task=task.kind, **task.record, **extra)
    atomic_write_json(path, {"metrics": metrics, "task": record, "provenance": provenance})
    return path


def run_fields(workdir: Path, run: dict) -> dict:
    """The run's fields of a result's task record, from run.json."""
    return {"model": Path(workdir).resolve().name, "model_name": run["config"]["model"]["name"],
            "caption_variant": run["config"]["data"]["caption_variant"]}


def headline(metrics: dict) -> dict:
    """The metrics logged during training: accuracies and recalls, not counts."""
    return {k: v for k, v in metrics.items() if k in HEADLINE or k.startswith(("text_to", "image_to"))}


class PeriodicEvaluator:
    """Zero-shot evaluation inside training (the trainer hands it its model's variables).

    Built once from the eval section: decodes its datasets, loads the templates and the class space.
    Each call evaluator(variables, step) encodes with those variables, writes one result per task
    (on process 0) and returns {dataset: headline metrics}.
    """

    def __init__(self, section: EvalSection, model: models.CLIP, tokenizer, workdir: Path, run: dict,
                 provenance: dict):
        from mmcl_theory.clip import data

        self.workdir, self.model, self.tokenizer = Path(workdir), model, tokenizer
        self.batch_size = section.batch_size
        self.templates = data.load_templates(section.templates or None)
        self.tasks, self.space = build_tasks(section.datasets, model.config.vision.image_size, section.root,
                                             section.roots, section.options, section.max_examples, section.class_space)
        self.fields, self.provenance = run_fields(workdir, run), provenance
        self.classes = run.get("classes")

    def __call__(self, variables: dict, step: int) -> dict:
        encoder = Encoder(self.model, variables, self.batch_size, self.classes)
        out = {}
        for task in self.tasks:
            metrics, extra = run_task(encoder, self.tokenizer, task, self.templates, self.space)
            if jax.process_index() == 0:
                write_result(self.workdir, step, task, metrics, extra, self.fields, self.provenance)
            out[task.dataset] = headline(metrics)
        return out
