"""The trainer's input: image-text pairs in memory (or memory-mapped) and the batch of each step.

Real datasets go through the data layer (``mmcl_theory.clip.data``): decode every image once into a
uint8 cache, drop the images that cannot be read (they are not trained as black images with their
captions; they are counted and listed), train or load a tokenizer on the kept texts, encode.

The batch of step s is a pure function of (seed, s): epoch e = s // (N // B) is the permutation
``default_rng([seed, e]).permutation(N)`` cut into N // B batches of B (drop-last), so a resumed
run sees exactly the batches of an uninterrupted one. With K captions per image, caption
``default_rng([seed, s, 1]).integers(0, K)`` of each example is used at step s.

Class labels (train.objective = 'supervised' only): Tiny ImageNet and ImageNet-Captions give one
class per image (softmax), COCO the set of its instance categories (multi-hot, sigmoid), the
synthetic set SYNTHETIC_CLASSES random classes. ``TrainData.classes`` records the class space
(names and, where there is one, the ImageNet-1k index of each class) for evaluation with the head.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from mmcl_theory.clip import models
from mmcl_theory.clip.config import TrainConfig, portable_skips, relative_location
from mmcl_theory.clip.state import TOKENIZER_FILE
from mmcl_theory.config import ConfigError


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The training pairs.

    images: uint8 (M, S, S, 3), in memory or a read-only memory map; rows: int64 (N,), the image row
    of each example, or None when example i is row i (M = N); tokens: int32 (N, L), or (N, K, L) for
    K captions per image; eot_id: the end-of-text id (the highest id); vocab_size: ids in [0, vocab_size).
    report: {'examples': N, 'unreadable': dropped images, 'skipped_at_load': records the loader skipped},
    each as config.portable_skips (count and the first items, relative to the dataset root).
    labels: None, int32 (N,) class indices ('softmax') or uint8 (N, C) multi-hot ('sigmoid');
    classes: None or {'kind': 'softmax' | 'sigmoid', 'classnames': [C names], 'imagenet_index':
    [C ImageNet-1k indices] or None}.
    """

    images: np.ndarray
    tokens: np.ndarray
    eot_id: int
    vocab_size: int
    rows: np.ndarray | None = None
    report: dict = dataclasses.field(default_factory=dict)
    labels: np.ndarray | None = None
    classes: dict | None = None

    @property
    def num_examples(self) -> int:
        return self.tokens.shape[0]

    @property
    def image_size(self) -> int:
        return self.images.shape[1]


def batch_indices(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """int64 (batch_size,): the example indices of global batch ``step`` (0-based; module doc)."""
    per_epoch = num_examples // batch_size
    if per_epoch == 0:
        raise ConfigError(f"train.batch_size = {batch_size} is not allowed: at most the number of training "
                          f"examples ({num_examples})")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return perm[k * batch_size:(k + 1) * batch_size]


def host_batch(data: TrainData, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """This process's share of global batch ``step``: {'images': uint8 (b, S, S, 3), 'tokens': int32 (b, L)
    [, 'labels': the examples' rows of data.labels]}, b = batch_size / processes."""
    idx = batch_indices(seed, step, batch_size, data.num_examples)
    share = batch_size // jax.process_count()
    idx = idx[jax.process_index() * share:(jax.process_index() + 1) * share]
    rows = idx if data.rows is None else data.rows[idx]
    order = np.argsort(rows)  # sorted reads are faster on memory-mapped caches
    images = np.empty((len(idx),) + data.images.shape[1:], np.uint8)
    images[order] = data.images[rows[order]]
    tokens = data.tokens[idx]
    if tokens.ndim == 3:
        pick = np.random.default_rng([seed, step, 1]).integers(0, tokens.shape[1], size=len(idx))
        tokens = tokens[np.arange(len(idx)), pick]
    batch = {"images": images, "tokens": tokens.astype(np.int32)}
    if data.labels is not None:
        batch["labels"] = data.labels[idx]
    return batch


SYNTHETIC_CLASSES = 10


def synthetic_labels(num_examples: int, seed: int) -> tuple[np.ndarray, dict]:
    """Uniform random classes int32 (N,) in [0, SYNTHETIC_CLASSES) (drawn from their own generator,
    so the pairs do not change) and their class space."""
    labels = np.random.default_rng([seed, 2]).integers(0, SYNTHETIC_CLASSES, num_examples).astype(np.int32)
    return labels, {"kind": "softmax", "classnames": [f"class {k}" for k in range(SYNTHETIC_CLASSES)],
                    "imagenet_index": None}


def dataset_labels(ds, dataset: str, root: str) -> tuple[np.ndarray, dict]:
    """(labels, classes) of a training set of the data layer (module doc); ConfigError when it has none."""
    from mmcl_theory.clip.data import training_sets as ts
    from mmcl_theory.clip.data.facts import IMAGENET_WNIDS

    if dataset == "coco":
        if ds.object_names is None:
            raise ConfigError(f"data.root = {root!r}: COCO without annotations/instances_*.json has no class labels "
                              "for train.objective = 'supervised'")
        index = {c: k for k, c in enumerate(ts.COCO_CATEGORIES)}
        labels = np.zeros((len(ds), len(index)), np.uint8)
        for i, names in enumerate(ds.object_names):
            labels[i, [index[n] for n in names if n in index]] = 1
        return labels, {"kind": "sigmoid", "classnames": list(ts.COCO_CATEGORIES), "imagenet_index": None}
    if ds.labels is None:
        raise ConfigError(f"data.dataset = {dataset!r}: this set has no class labels for train.objective = 'supervised'")
    if dataset == "tiny_imagenet":
        wnids, _ = ts.tiny_imagenet_classes(Path(root))
        wnid_index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
        imagenet_index = [wnid_index.get(w) for w in wnids]
        imagenet_index = None if None in imagenet_index else imagenet_index
    else:  # imagenet_captions: labels are ImageNet-1k indices
        imagenet_index = list(range(len(ds.classnames)))
    return (np.asarray(ds.labels, np.int32),
            {"kind": "softmax", "classnames": list(ds.classnames), "imagenet_index": imagenet_index})


def synthetic_data(num_examples: int, image_size: int, context_length: int, vocab_size: int,
                   seed: int) -> TrainData:
    """Random pairs: uniform uint8 images (N, S, S, 3); token rows of uniform ids in [1, V - 1) of a
    random length in [2, L), then EOT = V - 1, then 0-padding (int32 (N, L))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, image_size, image_size, 3), dtype=np.uint8)
    tokens = rng.integers(1, vocab_size - 1, (num_examples, context_length), dtype=np.int32)
    length = rng.integers(2, context_length, num_examples)
    pos = np.arange(context_length)
    tokens = np.where(pos < length[:, None], tokens, 0)
    tokens[np.arange(num_examples), length] = vocab_size - 1
    none = {"count": 0, "items": []}
    return TrainData(images, tokens.astype(np.int32), eot_id=vocab_size - 1, vocab_size=vocab_size,
                     report={"examples": num_examples, "unreadable": none, "skipped_at_load": none})


def load_train_data(cfg: TrainConfig, workdir: Path, progress: bool = True) -> TrainData:
    """The training pairs of ``cfg.data`` at the model's (or data.image_size's) resolution and context."""
    d = cfg.data
    base = models.model_config(cfg.model.name)
    size = d.image_size or base.vision.image_size
    ctx = d.context_length or base.text.context_length
    if d.dataset == "synthetic":
        vocab = base.text.vocab_size if d.tokenizer == "clip_bpe" else d.vocab_size
        data = synthetic_data(d.num_examples, size, ctx, vocab, cfg.train.seed)
        if cfg.train.objective_spec.labels:
            labels, classes = synthetic_labels(d.num_examples, cfg.train.seed)
            data = dataclasses.replace(data, labels=labels, classes=classes)
        return data
    return real_train_data(cfg, workdir, size, ctx, progress)


def _announce(what: str, skipped: list, total: int, root: str) -> None:
    if skipped:
        where, reason = skipped[0]
        print(f"training data: {what} {len(skipped)} of {total} (first: {relative_location(where, root)}: {reason}); "
              f"listed in run.json data", file=sys.stderr)


def real_train_data(cfg: TrainConfig, workdir: Path, image_size: int, context_length: int,
                    progress: bool = True) -> TrainData:
    """Load cfg.data.dataset through the data layer (module doc).

    Texts: every caption of a sample for variant 'caption' (one drawn per step), else the variant's
    one text. Images: a uint8 cache at ``image_size`` (data.cache_dir or WORKDIR/cache); rows that
    failed to decode are dropped with their texts. Tokenizer: WORKDIR/tokenizer.json when it exists
    (a resumed run), else trained on the kept texts or CLIP's BPE, and saved there.
    """
    from mmcl_theory.clip import data

    d = cfg.data
    tok_path = workdir / TOKENIZER_FILE
    if d.tokenizer == "clip_bpe" and not tok_path.is_file() and not Path(d.bpe_path).is_file():
        raise ConfigError(f"data.bpe_path = {d.bpe_path!r}: no such file (CLIP's bpe_simple_vocab_16e6.txt.gz)")
    ds = data.load_training_set(d.dataset, d.root, **d.options)
    if ds.image_paths is None:
        raise ConfigError(f"data.dataset = {d.dataset!r} is not allowed here: this set has captions but no images")
    if not ds.image_paths:
        raise ConfigError(f"data.root = {d.root!r}: no training images found ({len(ds.skipped)} records skipped)")
    if d.caption_variant == "caption" and ds.captions is not None:
        groups = ds.all_texts("caption")
    else:
        groups = [(t,) for t in ds.texts(d.caption_variant, seed=cfg.train.seed)]
    loud = progress and jax.process_index() == 0
    cache_dir = Path(d.cache_dir) if d.cache_dir else workdir / "cache"
    cache = data.build_cache(ds, cache_dir / f"{d.dataset}_{image_size}", image_size,
                             workers=min(8, os.cpu_count() or 1), progress=loud,
                             folder_option="data.cache_dir" if d.cache_dir else "data.cache_dir (default WORKDIR/cache)")
    keep = np.ones(len(groups), bool)
    keep[np.asarray(cache.skipped_rows, np.int64)] = False
    if not keep.any():
        raise ConfigError(f"data.root = {d.root!r}: none of the {len(groups)} training images can be read "
                          f"(first: {cache.skipped[0][0]}: {cache.skipped[0][1]})")
    if jax.process_index() == 0:
        _announce("dropped unreadable images:", cache.skipped, len(groups), d.root)
        _announce("the loader skipped records:", ds.skipped, len(groups) + len(ds.skipped), d.root)
    groups = [g for g, ok in zip(groups, keep) if ok]
    k = max(len(g) for g in groups)
    texts = [g[j % len(g)] if g else "" for g in groups for j in range(k)]  # ragged -> cycle to k
    if tok_path.is_file():
        tok = data.load_tokenizer(tok_path)
    elif d.tokenizer == "train":
        tok = data.train_tokenizer(texts, d.vocab_size, tok_path)
    else:
        tok = data.load_clip_bpe(d.bpe_path)
        tok.save(tok_path)
    tokens = tok.encode_batch(texts, context_length).reshape(len(groups), k, context_length)
    report = {"examples": len(groups), "unreadable": portable_skips(cache.skipped, d.root),
              "skipped_at_load": portable_skips(ds.skipped, d.root)}
    labels, classes = None, None
    if cfg.train.objective_spec.labels:
        labels, classes = dataset_labels(ds, d.dataset, d.root)
        labels = labels[keep]
    return TrainData(cache.images, tokens[:, 0] if k == 1 else tokens, tok.eot_id, tok.vocab_size,
                     rows=None if keep.all() else np.flatnonzero(keep), report=report, labels=labels,
                     classes=classes)


class Prefetcher:
    """A background thread producing make(step) for steps start..stop-1, ``depth`` ahead; get() returns
    (step, batch) in order and re-raises an error of make in the calling thread."""

    def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, args=(make, start, stop), daemon=True)
        self._thread.start()

    def _run(self, make, start, stop):
        for step in range(start, stop):
            try:
                self._queue.put((step, make(step), None))
            except Exception as e:
                self._queue.put((step, None, e))
                return

    def get(self):
        step, batch, error = self._queue.get()
        if error is not None:
            raise error
        return step, batch
