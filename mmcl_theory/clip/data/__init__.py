"""Data layer of the real-data CLIP track: loaders, caption variants, shifts, tokenizer, image cache.

Nothing here downloads anything; every loader reads a root path. A wrong root or layout raises
``DataLayoutError`` (a ValueError) saying what was expected: a file of the wrong structure (e.g. a COCO
JSON without 'annotations'), a whole-file format that is not UTF-8 or not JSON (naming the byte offset
or line), or a set with no usable sample. A bad record (missing image, malformed or non-UTF-8 JSON/TSV
line, empty caption) is skipped and listed in ``.skipped`` as ``(where, reason)`` and the load goes on;
text is never silently replaced.

Training sets (image-text), ``load_training_set(name, root, **options) -> ImageTextDataset``:
    names ``TRAINING_SETS``: 'coco', 'cc3m', 'cc12m', 'webdataset', 'csv', 'imagenet_captions', 'tiny_imagenet'.
    ``.image_paths: list[str] | None`` (file paths; ``shard.tar::member`` for webdataset; None for captions only),
    ``.texts(variant, seed=0) -> list[str]`` one text per sample, variants:
        'caption'                 original caption (COCO: one of the 5, picked by seed; Tiny ImageNet: 'rich'),
        'label'                   object / class names only (COCO: instance categories),
        'rich'                    Tiny ImageNet: class name + details from the image and its box,
        'caption-minus:<t1,t2>'   caption with detail types removed (``DETAIL_TYPES``).
    ``.all_texts(variant) -> list[tuple[str, ...]]`` (every caption of each sample, e.g. COCO's 5),
    ``.labels: np.ndarray | None`` (int64 (N,)), ``.classnames: list[str] | None``, ``.skipped``.

Zero-shot evaluation sets, ``load_eval_set(name, root, **options) -> EvalSet``:
    names ``EVAL_SETS``: 'imagenet1k', 'imagenetv2', 'imagenet_sketch', 'imagenet-r', 'imagenet-a',
    'objectnet', 'tiny_imagenet', 'texture_vs_shape_edges', 'texture_vs_shape_silhouettes', and the coarse
    sets of the mechanism experiment 'tiny_imagenet_coarse', 'texture_vs_shape_edges_coarse',
    'texture_vs_shape_silhouettes_coarse' (classes = the 24 WordNet groups of ``coarse_classes``).
    ``.image_paths``, ``.labels`` (int64 (N,), index into ``.classnames``), ``.classnames``,
    ``.class_subset`` (int64 (K,) or None: ImageNet-1k index of each class; restrict 1000-way logits
    to ``logits[:, class_subset]``), ``.hit_sets`` (ObjectNet: per image, the set of accepted class
    indices; prediction correct if in the set), ``.class_groups`` (texture-vs-shape: ImageNet indices of
    each of the 16 categories), ``.crop_border`` (pixels to cut before resizing; ObjectNet 2), ``.skipped``;
    ``.read(indices, resolution) -> uint8 (B, R, R, 3)`` (applies crop_border),
    ``.correct(predictions) -> bool (N,)`` (class index predictions; uses hit_sets where given), and
    ``.restrict(imagenet_indices)`` (images and logits of those classes only). ``load_eval_set('imagenet1k',
    root, restrict_to='imagenet-r' | 'imagenet-a' | 'objectnet')`` gives val on that shift's classes.

Mechanism experiment (``coarse_classes``, ``mosaics``): the embedded WordNet coarse groups of Tiny
ImageNet's 200 classes, and ``mosaics.write_mechanism_sets(tiny_root, out_dir, per_class)`` writing the
coarse / coarse+fine caption sets and the 2-4 object mosaic sets as CSV sets for the 'csv' loader.

Images and shifts:
    ``read_images(paths, resolution, *, crop_border=0, skipped=None, failed_rows=None) -> uint8 (N, R, R, 3)``
    (RGB, center square crop, bicubic resize; an undecodable image raises, or with a ``skipped`` /
    ``failed_rows`` list is a black row listed there, so callers can drop exactly those rows); ``apply_shift(images, shift, severity, seed) -> uint8``
    over uint8 (N, H, W, 3); ``SHIFTS`` names the shifts.

Image cache (decode once, read at memory speed):
    ``build_cache(dataset_or_paths, out_dir, resolution, workers=2) -> ImageCache``: one images.npy
    filled shard by shard (``workers`` spawned processes), resumable after a kill;
    ``ImageCache(out_dir)``: ``len()``, ``.images`` (np.memmap uint8 (N, R, R, 3), read-only),
    ``.get_batch(indices) -> uint8 (B, R, R, 3)``; undecodable images are black rows listed in ``.skipped``
    [(path, reason)], ``.skipped_rows``, ``.unreadable_rows`` (int64, sorted) and ``.readable`` (bool (N,)).

Tokenizer (BPE, lower-cased, CLIP-style ``</w>`` word ends):
    ``train_tokenizer(texts, vocab_size, path) -> BPETokenizer`` (saved as tokenizers JSON at path; the same
    texts give the same file bytes in every process; vocab_size >= ``MIN_TRAINED_VOCAB_SIZE``),
    ``load_tokenizer(path)``, ``load_clip_bpe(path_to_bpe_simple_vocab_16e6.txt.gz)``.
    ``tok.encode_batch(texts, context_length) -> int32 (N, L)``: [SOT, tokens..., EOT, 0, ...], truncated
    so EOT is always present; EOT has the highest id, so ``tokens.argmax(-1)`` is the EOT position.
    ``tok.vocab_size``, ``tok.eot_id``, ``tok.sot_id``, ``tok.pad_id`` (0).

Prompts: ``load_classnames(path=None)`` (built-in CLIP names of the 1000 classes, or a JSON list),
``load_templates(path=None)`` (built-in 8 templates, or a JSON list such as CLIP's 80).

CLI: ``python -m mmcl_theory.clip.data check NAME --root PATH [--option KEY=VALUE] [--verify] [--json]``
(options parsed by the loader's declared types; every error one line on stderr, exit code 2).
"""

from .cache import ImageCache, build_cache
from .captions import DETAIL_TYPES, DETAIL_WORDS, remove_details
from .errors import DataLayoutError, ImageDecodeError
from .eval_sets import EVAL_SETS, EvalSet, load_eval_set
from .images import read_images
from .prompts import DEFAULT_TEMPLATES, load_classnames, load_templates
from .shifts import SHIFTS, apply_shift
from .tokenizer import MIN_TRAINED_VOCAB_SIZE, BPETokenizer, load_clip_bpe, load_tokenizer, train_tokenizer
from .training_sets import TRAINING_SETS, ImageTextDataset, load_training_set

__all__ = [
    "DEFAULT_TEMPLATES", "DETAIL_TYPES", "DETAIL_WORDS", "EVAL_SETS", "MIN_TRAINED_VOCAB_SIZE", "SHIFTS", "TRAINING_SETS",
    "BPETokenizer", "DataLayoutError", "EvalSet", "ImageCache", "ImageDecodeError", "ImageTextDataset",
    "apply_shift", "build_cache", "load_classnames", "load_clip_bpe", "load_eval_set", "load_templates",
    "load_tokenizer", "load_training_set", "read_images", "remove_details", "train_tokenizer",
]
