"""Image-text training sets read from a root path: COCO, CC3M/CC12M, webdataset shards, CSV/TSV,
ImageNet-Captions, Tiny ImageNet. See ``load_training_set``."""

from __future__ import annotations

import csv
import functools
import inspect
import json
import math
import os
import re
import tarfile
import typing
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .captions import image_details, label_text, parse_minus_variant, remove_details, rich_text
from .errors import DataLayoutError, Skip
from .facts import IMAGENET_CLASSNAMES, IMAGENET_WNIDS
from .images import read_images
from .text_files import (iter_csv_rows, iter_lines, read_json_file, read_text_file, require_json_lists,
                         text_problem)

TRAINING_SETS: tuple[str, ...] = ("coco", "cc3m", "cc12m", "webdataset", "csv", "imagenet_captions", "tiny_imagenet")

COCO_CATEGORIES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
"""The 80 COCO object categories, used as the object vocabulary of 'label' texts for caption-only sets."""

_SYNONYMS = {"man": "person", "woman": "person", "men": "person", "women": "person", "people": "person",
             "boy": "person", "girl": "person", "child": "person", "children": "person", "kid": "person",
             "kids": "person", "player": "person", "bike": "bicycle", "motorbike": "motorcycle",
             "plane": "airplane", "jet": "airplane", "sofa": "couch", "television": "tv", "phone": "cell phone",
             "table": "dining table", "fridge": "refrigerator", "doughnut": "donut", "ball": "sports ball"}


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


_VOCAB = {**{c: c for c in COCO_CATEGORIES}, **{_plural(c): c for c in COCO_CATEGORIES}, **_SYNONYMS}
_VOCAB_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(_VOCAB, key=len, reverse=True)) + r")\b",
                       re.IGNORECASE)


def caption_objects(caption: str) -> tuple[str, ...]:
    """COCO category names mentioned in a caption (plurals and common synonyms mapped), in order, unique."""
    found = [_VOCAB[m.group(1).lower()] for m in _VOCAB_RE.finditer(caption)]
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class ImageTextDataset:
    """N image-text samples. captions[i]: all captions of sample i (COCO has 5); object_names[i]: its
    object/class names (None: derive from the caption); boxes: int (N, 4) x0 y0 x1 y1 (inclusive) in the
    64x64 Tiny ImageNet pixel grid, or None."""

    name: str
    root: str
    image_paths: list[str] | None
    captions: list[tuple[str, ...]] | None
    labels: np.ndarray | None = None
    classnames: list[str] | None = None
    object_names: list[tuple[str, ...]] | None = None
    boxes: np.ndarray | None = None
    skipped: list[Skip] = field(default_factory=list)
    crop_border: int = 0
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        n = len(self)
        for fname in ("image_paths", "captions", "labels", "object_names", "boxes"):
            v = getattr(self, fname)
            if v is not None and len(v) != n:
                raise ValueError(f"{fname}: length {len(v)} must equal the number of samples {n}")
        if self.captions is None and self.labels is None:
            raise ValueError("captions and labels: at least one must be given")
        if self.labels is not None:
            if self.classnames is None:
                raise ValueError("classnames: required when labels are given")
            if n and not (0 <= int(np.min(self.labels)) and int(np.max(self.labels)) < len(self.classnames)):
                raise ValueError(f"labels: must lie in [0, {len(self.classnames)}), got "
                                 f"[{int(np.min(self.labels))}, {int(np.max(self.labels))}]")

    def __len__(self) -> int:
        for v in (self.image_paths, self.captions, self.labels):
            if v is not None:
                return len(v)
        return 0

    @property
    def variants(self) -> tuple[str, ...]:
        """The text variants this set supports ('caption-minus:<types>' stands for the family)."""
        base = ("caption", "label", "caption-minus:<types>")
        return base + ("rich",) if self.boxes is not None else base

    def _chosen_captions(self, seed: int) -> list[str]:
        if self.captions is None:
            return self.texts("rich", seed)
        counts = np.array([len(c) for c in self.captions])
        pick = np.random.default_rng(seed).integers(0, np.maximum(counts, 1))
        return [c[k] for c, k in zip(self.captions, pick)]

    def _details(self) -> list[dict[str, str]]:
        if "details" not in self._memo:
            details, skipped = [], []
            for lo in range(0, len(self), 1024):
                # Tiny ImageNet images are 64x64, so this is the native grid of the boxes
                imgs = read_images(self.image_paths[lo: lo + 1024], 64, skipped=skipped)
                details += [image_details(im, box) for im, box in zip(imgs, self.boxes[lo: lo + 1024])]
            self.skipped.extend((w, f"{r}; its 'rich' details describe a black image") for w, r in skipped)
            self._memo["details"] = details
        return self._memo["details"]

    def read(self, indices, resolution: int, skipped: list[Skip] | None = None,
             failed_rows: list[int] | None = None) -> np.ndarray:
        """uint8 (B, R, R, 3) images of the samples at indices (see read_images)."""
        if self.image_paths is None:
            raise ValueError(f"{self.name}: loaded with captions only, there are no images")
        return read_images([self.image_paths[i] for i in indices], resolution, crop_border=self.crop_border,
                           skipped=skipped, failed_rows=failed_rows)

    def all_texts(self, variant: str = "caption") -> list[tuple[str, ...]]:
        """Every text of every sample: for 'caption' and 'caption-minus:<types>' all captions of a sample
        (COCO: 5, for retrieval or per-step sampling); other variants one text per sample."""
        if self.captions is None or not (variant == "caption" or variant.startswith("caption-minus:")):
            return [(t,) for t in self.texts(variant)]
        if variant == "caption":
            return list(self.captions)
        types = parse_minus_variant(variant)
        return [tuple(remove_details(c, types) for c in caps) for caps in self.captions]

    def texts(self, variant: str = "caption", seed: int = 0) -> list[str]:
        """One text per sample for the variant ('caption', 'label', 'rich', 'caption-minus:<types>');
        deterministic given seed (seed picks among several captions of a sample)."""
        if variant == "caption":
            return self._chosen_captions(seed)
        if variant == "label":
            if self.object_names is not None:
                return [label_text(o) for o in self.object_names]
            if self.labels is not None:
                return [self.classnames[k] for k in self.labels]
            return [label_text(caption_objects(c)) for c in self._chosen_captions(seed)]
        if variant == "rich" or (variant.startswith("caption-minus:") and self.captions is None):
            if self.boxes is None or self.labels is None:
                raise ValueError(f"variant 'rich' needs labels and boxes; {self.name} has none")
            drop = parse_minus_variant(variant) if variant != "rich" else ()
            return [rich_text(self.classnames[k], d, drop) for k, d in zip(self.labels, self._details())]
        if variant.startswith("caption-minus:"):
            types = parse_minus_variant(variant)
            return [remove_details(c, types) for c in self._chosen_captions(seed)]
        raise ValueError(f"variant must be one of {self.variants}, got {variant!r}")


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------

def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataLayoutError(f"{what}: expected a folder at {path}")
    return path


def _find_one(root: Path, pattern: str, what: str, option: str) -> Path:
    if root.is_file():
        return root
    hits = sorted(root.glob(pattern))
    if len(hits) != 1:
        raise DataLayoutError(f"{what}: expected one {pattern} file in {root}, found {len(hits)}"
                              + (f" ({', '.join(h.name for h in hits[:4])})" if hits else "")
                              + f"; pass it with {option}=PATH")
    return hits[0]


# ---------------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------------

COCO_CAPTIONS_LAYOUT = ("a COCO captions file: a JSON object with 'images': [{'id': int, 'file_name': str}, ...] "
                        "and 'annotations': [{'image_id': int, 'caption': str}, ...]")
COCO_INSTANCES_LAYOUT = ("a COCO instances file: a JSON object with 'categories': [{'id': int, 'name': str}, ...] "
                         "and 'annotations': [{'image_id': int, 'category_id': int, 'area': number}, ...]")


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coco_images(data: dict, ann: Path, skipped: list[Skip]) -> dict[int, str]:
    """image id -> file name; records without an integer id and a file name are skipped."""
    images = {}
    for k, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and _is_id(im.get("id")) and isinstance(im.get("file_name"), str)
                and im["file_name"].strip()):
            skipped.append((f"{ann}:images[{k}]", "image record without an integer 'id' and a 'file_name'"))
            continue
        images[im["id"]] = im["file_name"]
    return images


def _coco_captions(data: dict, ann: Path, images: dict[int, str], skipped: list[Skip]) -> dict[int, list[str]]:
    """image id -> its usable captions (stripped); unknown images, empty or undecodable captions are skipped."""
    by_image: dict[int, list[str]] = defaultdict(list)
    for k, a in enumerate(data["annotations"]):
        where = f"{ann}:annotations[{k}]"
        if not isinstance(a, dict) or a.get("image_id") not in images or not isinstance(a.get("caption"), str):
            skipped.append((where, "caption annotation without a known image_id or a caption string"))
            continue
        problem = text_problem(a["caption"])
        if problem:
            skipped.append((where, problem))
            continue
        by_image[a["image_id"]].append(a["caption"].strip())
    return by_image


def _coco_object_areas(inst_path: Path, skipped: list[Skip]) -> dict[int, Counter]:
    """image id -> {category name: total box area} from a COCO instances file."""
    inst = read_json_file(inst_path, "coco instances", COCO_INSTANCES_LAYOUT)
    require_json_lists(inst, inst_path, "coco instances", ("categories", "annotations"), COCO_INSTANCES_LAYOUT)
    cats = {}
    for k, c in enumerate(inst["categories"]):
        if not (isinstance(c, dict) and _is_id(c.get("id")) and isinstance(c.get("name"), str)):
            skipped.append((f"{inst_path}:categories[{k}]", "category without an integer 'id' and a 'name'"))
            continue
        cats[c["id"]] = c["name"]
    area: dict[int, Counter] = defaultdict(Counter)
    for k, a in enumerate(inst["annotations"]):
        ok = isinstance(a, dict) and _is_id(a.get("image_id")) and a.get("category_id") in cats
        value = a.get("area", 0.0) if ok else None
        if not ok or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            skipped.append((f"{inst_path}:annotations[{k}]", "instance without an image_id, a known category_id "
                                                              "and a finite area"))
            continue
        area[a["image_id"]][cats[a["category_id"]]] += float(value)
    return area


def load_coco(root: str | Path, split: str = "train", per_caption: bool = False) -> ImageTextDataset:
    """MSCOCO 2017: root/annotations/captions_{split}2017.json, images root/{split}2017/<file_name>;
    root/annotations/instances_{split}2017.json (optional) gives the 'label' texts (category names
    ordered by total box area). split: 'train', 'val' or 'train+val'. per_caption: one sample per
    caption instead of one per image. A file of the wrong structure is a DataLayoutError; bad records
    (empty or undecodable captions, unknown image ids, missing image files) are skipped and listed."""
    root = Path(root)
    splits = split.split("+")
    if not splits or any(s not in ("train", "val") for s in splits):
        raise ValueError(f"split must be 'train', 'val' or 'train+val', got {split!r}")
    paths, caps, objs, skipped = [], [], [], []
    has_instances = True
    for s in splits:
        ann = root / "annotations" / f"captions_{s}2017.json"
        if not ann.is_file():
            raise DataLayoutError(f"coco: expected {ann} (COCO 2017 layout: annotations/captions_{s}2017.json "
                                  f"and {s}2017/*.jpg under the root)")
        img_dir = _require_dir(root / f"{s}2017", "coco images")
        data = read_json_file(ann, "coco captions", COCO_CAPTIONS_LAYOUT)
        require_json_lists(data, ann, "coco captions", ("images", "annotations"), COCO_CAPTIONS_LAYOUT)
        images = _coco_images(data, ann, skipped)
        by_image = _coco_captions(data, ann, images, skipped)
        inst_path = root / "annotations" / f"instances_{s}2017.json"
        area = _coco_object_areas(inst_path, skipped) if inst_path.is_file() else defaultdict(Counter)
        has_instances = has_instances and inst_path.is_file()
        for image_id in sorted(by_image):
            p = img_dir / images[image_id]
            if not p.is_file():
                skipped.append((str(p), "missing image file"))
                continue
            names = tuple(n for n, _ in sorted(area[image_id].items(), key=lambda kv: (-kv[1], kv[0])))
            for c in (by_image[image_id] if per_caption else [None]):
                paths.append(str(p))
                caps.append((c,) if c is not None else tuple(by_image[image_id]))
                objs.append(names)
        for image_id in sorted(set(images) - set(by_image)):
            skipped.append((str(img_dir / images[image_id]), "image without usable captions"))
    return ImageTextDataset("coco", str(root), paths, caps, object_names=objs if has_instances else None,
                            skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# Conceptual Captions (TSV + img2dataset 'files' output) and generic CSV/TSV
# ---------------------------------------------------------------------------------------------------

def _img2dataset_files(images: Path, skipped: list[Skip]) -> dict[str, str]:
    """url -> image path from img2dataset's 'files' output (<shard>/<key>.jpg with <key>.json sidecars);
    a sidecar that is unreadable or holds no url is skipped and listed."""
    by_url = {}
    for dirpath, _, files in sorted(os.walk(images)):
        for f in sorted(files):
            if f.endswith(".json") and not f.endswith("_stats.json"):
                stem = os.path.join(dirpath, f[:-5])
                img = next((stem + e for e in (".jpg", ".png", ".webp") if os.path.exists(stem + e)), None)
                if img is None:
                    continue
                try:
                    url = json.loads(Path(stem + ".json").read_bytes().decode("utf-8")).get("url")
                except (json.JSONDecodeError, UnicodeDecodeError, OSError, AttributeError):
                    url = None
                if isinstance(url, str) and url:
                    by_url[url] = img
                else:
                    skipped.append((stem + ".json", "img2dataset sidecar without a 'url' (not UTF-8 JSON with a url)"))
    return by_url


def load_conceptual_captions(root: str | Path, *, variant: str = "cc3m", tsv: str | Path | None = None,
                             images: str | Path | None = None, captions_only: bool = False) -> ImageTextDataset:
    """CC3M (TSV: caption<TAB>url) or CC12M (TSV: url<TAB>caption), paired by URL with the images that
    img2dataset downloaded (output_format 'files': <images>/<shard>/<key>.jpg + <key>.json holding the url).
    root: a folder with one .tsv (or the .tsv itself); images defaults to root. Rows without a downloaded
    image are skipped ('not downloaded'), and so are rows with an empty field or bad UTF-8.
    captions_only=True: keep every good row, image_paths None."""
    root = Path(root)
    if not root.exists():
        raise DataLayoutError(f"{variant}: root {root} does not exist")
    tsv_path = Path(tsv) if tsv is not None else _find_one(root, "*.tsv", variant, "tsv")
    if not tsv_path.is_file():
        raise DataLayoutError(f"{variant}: expected the TSV file {tsv_path}")
    paths, caps, skipped = [], [], []
    by_url = None
    if not captions_only:
        img_root = Path(images) if images is not None else (root if root.is_dir() else root.parent)
        by_url = _img2dataset_files(_require_dir(img_root, f"{variant} images"), skipped)
        if not by_url:
            raise DataLayoutError(f"{variant}: no img2dataset images (<shard>/<key>.jpg with <key>.json) under "
                                  f"{img_root}; pass images=PATH or captions_only=True")
    cap_col = 0 if variant == "cc3m" else 1
    layout = "caption<TAB>url" if variant == "cc3m" else "url<TAB>caption"
    for lineno, row, problem in iter_csv_rows(tsv_path, "\t", variant, quoting=csv.QUOTE_NONE):
        where = f"{tsv_path}:{lineno}"
        if problem:
            skipped.append((where, problem))
            continue
        if lineno == 1 and [c.lower() for c in row][:2] in (["caption", "url"], ["url", "caption"]):
            continue  # header
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            got = f"{len(row)} fields" if len(row) != 2 else "an empty field"
            skipped.append((where, f"expected 2 non-empty tab-separated fields ({layout}), got {got}"))
            continue
        caption, url = row[cap_col].strip(), row[1 - cap_col].strip()
        if by_url is not None:
            if url not in by_url:
                skipped.append((where, "not downloaded"))
                continue
            paths.append(by_url[url])
        caps.append((caption,))
    return ImageTextDataset(variant, str(root), None if captions_only else paths, caps, skipped=skipped)


def load_csv(root: str | Path, image_key: str | int = "filepath", caption_key: str | int = "title",
             delimiter: str | None = None, image_root: str | Path | None = None,
             label_key: str | None = None) -> ImageTextDataset:
    """A CSV/TSV file with a header naming the image-path and caption columns (open_clip's 'filepath'
    and 'title' by default), or integer column positions for a file without header. Relative image
    paths are resolved against image_root (default: the file's folder). Rows with too few fields, an
    empty caption, bad UTF-8 or a missing image file are skipped and listed. label_key: a header column
    holding each row's class name (for a supervised baseline): ``.classnames`` = the sorted distinct
    names, ``.labels`` = each row's index into them; a row with an empty class name is skipped."""
    path = Path(root)
    if not path.is_file():
        raise DataLayoutError(f"csv: expected a CSV/TSV file at {path}")
    if delimiter is not None and len(delimiter) != 1:
        raise ValueError(f"delimiter = {delimiter!r} is not allowed: one character")
    delim = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
    base = Path(image_root) if image_root is not None else path.parent
    paths, caps, skipped = [], [], []
    rows = iter_csv_rows(path, delim, "csv")
    if isinstance(image_key, int) and isinstance(caption_key, int):
        if image_key < 0 or caption_key < 0:
            raise ValueError(f"image_key, caption_key = {image_key}, {caption_key}: column positions must be >= 0")
        ci, cc = image_key, caption_key
    else:
        _, header, problem = next(rows, (1, [], None))
        if problem or image_key not in header or caption_key not in header:
            shown = "not valid UTF-8" if problem else header[:6]
            raise DataLayoutError(f"csv: {path} header {shown} must name the columns {image_key!r} and "
                                  f"{caption_key!r} (or pass image_key/caption_key)")
        ci, cc = header.index(image_key), header.index(caption_key)
    if label_key is not None:
        if isinstance(image_key, int):
            raise ValueError(f"label_key = {label_key!r} is not allowed with column positions: name the columns")
        if label_key not in header:
            raise DataLayoutError(f"csv: {path} header {header[:6]} must name the label column {label_key!r}")
    cl = header.index(label_key) if label_key is not None else None
    names: list[str] = []
    for lineno, row, problem in rows:
        where = f"{path}:{lineno}"
        if problem:
            skipped.append((where, problem))
            continue
        need = max(ci, cc, -1 if cl is None else cl)
        if len(row) <= need or not row[ci].strip():
            skipped.append((where, f"expected at least {need + 1} fields with an image path, got {len(row)}"))
            continue
        if cl is not None and not row[cl].strip():
            skipped.append((where, f"empty class name in column {label_key!r}"))
            continue
        problem = text_problem(row[cc])
        if problem:
            skipped.append((where, problem))
            continue
        p = Path(row[ci].strip())
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            skipped.append((str(p), f"missing image file (line {lineno})"))
            continue
        paths.append(str(p))
        caps.append((row[cc].strip(),))
        if cl is not None:
            names.append(row[cl].strip())
    if cl is None:
        return ImageTextDataset("csv", str(path), paths, caps, skipped=skipped)
    classnames = sorted(set(names))
    index = {n: k for k, n in enumerate(classnames)}
    return ImageTextDataset("csv", str(path), paths, caps, labels=np.array([index[n] for n in names], np.int64),
                            classnames=classnames, skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# webdataset shards
# ---------------------------------------------------------------------------------------------------

def load_webdataset(root: str | Path) -> ImageTextDataset:
    """img2dataset webdataset output: root/*.tar, each sample <key>.jpg|.png|.webp + <key>.txt (+ <key>.json).
    Samples are counted by reading the shards' member lists (never from key ranges); a sample without
    image or caption, or with an empty or undecodable caption, is skipped; so is an unreadable shard.
    Image references are '<shard>.tar::<member>'."""
    root = Path(root)
    shards = sorted(root.glob("*.tar")) if root.is_dir() else [root] if root.suffix == ".tar" else []
    if not shards:
        raise DataLayoutError(f"webdataset: expected .tar shards (img2dataset output_format webdataset) in {root}")
    paths, caps, skipped = [], [], []
    for shard in shards:
        try:
            with tarfile.open(shard, "r") as tar:
                samples: dict[str, dict[str, tarfile.TarInfo]] = defaultdict(dict)
                for m in tar.getmembers():
                    if m.isfile():
                        key, _, ext = m.name.rpartition(".")
                        samples[key][ext.lower()] = m
                for key in sorted(samples):
                    parts = samples[key]
                    img = next((parts[e] for e in ("jpg", "jpeg", "png", "webp") if e in parts), None)
                    if img is None or "txt" not in parts:
                        missing = "image" if img is None else "caption (.txt)"
                        skipped.append((f"{shard}::{key}", f"sample without {missing}"))
                        continue
                    raw = tar.extractfile(parts["txt"]).read()
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        skipped.append((f"{shard}::{parts['txt'].name}", f"caption not valid UTF-8 at byte {e.start}"))
                        continue
                    problem = text_problem(text)
                    if problem:
                        skipped.append((f"{shard}::{parts['txt'].name}", problem))
                        continue
                    paths.append(f"{shard}::{img.name}")
                    caps.append((text.strip(),))
        except (tarfile.TarError, OSError, EOFError) as e:
            skipped.append((str(shard), f"unreadable tar shard ({type(e).__name__}: {' '.join(str(e).split())})"))
    return ImageTextDataset("webdataset", str(root), paths, caps, skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# ImageNet-Captions
# ---------------------------------------------------------------------------------------------------

def load_imagenet_captions(root: str | Path, json_path: str | Path | None = None,
                           image_root: str | Path | None = None,
                           text_fields: tuple[str, ...] = ("title",)) -> ImageTextDataset:
    """ImageNet-Captions (Fang et al. 2022): a JSON list (or JSON Lines) of records with filename, wnid,
    title, description, tags. Images at image_root/<wnid>/<filename> or image_root/<filename>
    (image_root default: root/train if it exists, else root). The caption joins text_fields (tags joined
    by ', '); labels are ImageNet-1k indices, 'label' texts are CLIP class names."""
    root = Path(root)
    jp = Path(json_path) if json_path is not None else _find_one(root, "*.json", "imagenet_captions", "json_path")
    bad = [t for t in text_fields if t not in ("title", "description", "tags")]
    if bad or not text_fields:
        raise ValueError(f"text_fields must be a non-empty subset of ('title', 'description', 'tags'), got {text_fields}")
    img_root = Path(image_root) if image_root is not None else (root / "train" if (root / "train").is_dir() else
                                                                 root if root.is_dir() else root.parent)
    layout = "a JSON list (or JSON Lines) of records {'filename', 'wnid', 'title', 'description', 'tags'}"
    if not jp.is_file():
        raise DataLayoutError(f"imagenet_captions: expected the JSON file {jp} ({layout})")
    skipped: list[Skip] = []
    with open(jp, "rb") as f:
        is_list = f.read(4096).lstrip().startswith(b"[")
    if is_list:
        records = read_json_file(jp, "imagenet_captions", layout)
        if not isinstance(records, list):
            raise DataLayoutError(f"imagenet_captions: {jp} is not a JSON list; expected {layout}")
        records = list(enumerate(records, start=1))
    else:
        records = []
        for lineno, line, problem in iter_lines(jp, "imagenet_captions", layout):
            if problem:
                skipped.append((f"{jp}:{lineno}", problem))
            elif line.strip():
                try:
                    records.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    skipped.append((f"{jp}:{lineno}", f"malformed JSON line ({e.msg})"))
    wnid_index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
    paths, caps, labels = [], [], []
    for k, rec in records:
        where = f"{jp}:{k}"
        if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str) or rec.get("wnid") not in wnid_index:
            skipped.append((where, "record without a filename or an ImageNet-1k wnid"))
            continue
        parts = []
        for t in text_fields:
            v = rec.get(t) or ""
            parts.append(", ".join(map(str, v)) if isinstance(v, list) else str(v).strip())
        caption = ". ".join(p for p in parts if p)
        problem = text_problem(caption)
        if problem:
            skipped.append((where, f"{problem} (fields {', '.join(text_fields)})"))
            continue
        p = img_root / rec["wnid"] / rec["filename"]
        if not p.is_file():
            p = img_root / rec["filename"]
        if not p.is_file():
            skipped.append((str(p), "missing image file"))
            continue
        paths.append(str(p))
        caps.append((caption,))
        labels.append(wnid_index[rec["wnid"]])
    return ImageTextDataset("imagenet_captions", str(root), paths, caps, labels=np.array(labels, np.int64),
                            classnames=list(IMAGENET_CLASSNAMES), skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------------------------------

TINY_IMAGENET_LAYOUT = ("the Tiny ImageNet-200 layout: wnids.txt, words.txt, train/<wnid>/images + <wnid>_boxes.txt, "
                        "val/images + val/val_annotations.txt")


def tiny_imagenet_classes(root: Path, names: str = "clip") -> tuple[list[str], list[str]]:
    """(wnids in wnids.txt order, class names): 'clip' names via the ImageNet index, or 'words' (first
    lemma in words.txt)."""
    wnids = read_text_file(root / "wnids.txt", "tiny_imagenet", TINY_IMAGENET_LAYOUT).split()
    if not wnids:
        raise DataLayoutError(f"tiny_imagenet: {root / 'wnids.txt'} lists no wnids; expected {TINY_IMAGENET_LAYOUT}")
    if names == "clip":
        index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
        unknown = [w for w in wnids if w not in index]
        if unknown:
            raise DataLayoutError(f"tiny_imagenet: wnids not in ImageNet-1k: {unknown[:5]}")
        return wnids, [IMAGENET_CLASSNAMES[index[w]] for w in wnids]
    if names == "words":
        words = {}
        for line in read_text_file(root / "words.txt", "tiny_imagenet", TINY_IMAGENET_LAYOUT).splitlines():
            w, _, lemmas = line.partition("\t")
            words[w] = lemmas.split(",")[0].strip()
        return wnids, [words.get(w, w) for w in wnids]
    raise ValueError(f"classnames must be 'clip' or 'words', got {names!r}")


def tiny_imagenet_split(root: Path, split: str, wnids: list[str], per_class: int | None):
    """(paths, labels, boxes, skipped) of a Tiny ImageNet split; boxes are x0 y0 x1 y1 in 64x64 pixels."""
    if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
        raise ValueError(f"per_class = {per_class!r} is not allowed: an integer >= 1, or None for all")
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels, boxes, skipped = [], [], [], []
    if split == "train":
        for w in wnids:
            d = root / "train" / w
            bpath = d / f"{w}_boxes.txt"
            if not bpath.is_file():
                skipped.append((str(bpath), "missing class box file"))
                continue
            rows = []
            for lineno, line, problem in iter_lines(bpath, "tiny_imagenet", "'file x0 y0 x1 y1' lines"):
                parts = [] if problem else line.split()
                if problem or len(parts) != 5 or not all(p.lstrip("-").isdigit() for p in parts[1:]):
                    skipped.append((f"{bpath}:{lineno}", problem or "expected 'file x0 y0 x1 y1'"))
                    continue
                rows.append((parts[0], [int(v) for v in parts[1:]]))
            rows.sort(key=lambda r: int(re.sub(r"\D", "", r[0].split("_")[-1]) or 0))
            for fname, box in rows[:per_class]:
                p = d / "images" / fname
                if not p.is_file():
                    skipped.append((str(p), "missing image file"))
                    continue
                paths.append(str(p))
                labels.append(index[w])
                boxes.append(box)
    elif split == "val":
        apath = root / "val" / "val_annotations.txt"
        seen: Counter = Counter()
        for lineno, line, problem in iter_lines(apath, "tiny_imagenet", TINY_IMAGENET_LAYOUT):
            parts = [] if problem else line.split()
            if problem or len(parts) != 6 or parts[1] not in index or not all(p.lstrip("-").isdigit() for p in parts[2:]):
                skipped.append((f"{apath}:{lineno}", problem or "expected 'file wnid x0 y0 x1 y1' with a known wnid"))
                continue
            if per_class is not None and seen[parts[1]] >= per_class:
                continue
            p = root / "val" / "images" / parts[0]
            if not p.is_file():
                skipped.append((str(p), "missing image file"))
                continue
            seen[parts[1]] += 1
            paths.append(str(p))
            labels.append(index[parts[1]])
            boxes.append([int(v) for v in parts[2:]])
    else:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return paths, np.array(labels, np.int64), np.array(boxes, np.int64).reshape(-1, 4), skipped


def load_tiny_imagenet(root: str | Path, split: str = "train", per_class: int | None = None,
                       classnames: str = "clip") -> ImageTextDataset:
    """Tiny ImageNet-200 as a training set: labels = position in wnids.txt, boxes from the box files.
    No captions: 'caption' is the 'rich' text (class name + image details), 'label' the class name.
    per_class: keep the first k images of each class (file-number order)."""
    root = Path(root)
    wnids, names = tiny_imagenet_classes(root, classnames)
    paths, labels, boxes, skipped = tiny_imagenet_split(root, split, wnids, per_class)
    return ImageTextDataset("tiny_imagenet", str(root), paths, None, labels=labels, classnames=names,
                            boxes=boxes, skipped=skipped)


LOADERS = {
    "coco": load_coco,
    "cc3m": functools.partial(load_conceptual_captions, variant="cc3m"),
    "cc12m": functools.partial(load_conceptual_captions, variant="cc12m"),
    "webdataset": load_webdataset,
    "csv": load_csv,
    "imagenet_captions": load_imagenet_captions,
    "tiny_imagenet": load_tiny_imagenet,
}


def load_training_set(name: str, root: str | Path, **options) -> ImageTextDataset:
    """Load a training set by name (``TRAINING_SETS``) from root; options go to its loader."""
    if name not in LOADERS:
        raise ValueError(f"training set name must be one of {TRAINING_SETS}, got {name!r}")
    return call_loader(name, LOADERS[name], root, options)


def loader_options(loader) -> dict:
    """{option name: declared type} of a loader's keyword options (root and fixed partial arguments excluded)."""
    fixed = set(getattr(loader, "keywords", {}) or {})
    func = getattr(loader, "func", loader)
    hints = typing.get_type_hints(func)
    return {p: hints.get(p, typing.Any) for p in inspect.signature(func).parameters
            if p != "root" and p not in fixed}


def _skip_summary(skipped: list[Skip]) -> str:
    if not skipped:
        return "nothing was skipped"
    reasons = Counter(r for _, r in skipped).most_common(3)
    return (f"{len(skipped)} inputs skipped (" + "; ".join(f"{n} x {r}" for r, n in reasons)
            + f"; first: {skipped[0][0]})")


def call_loader(name: str, loader, root: str | Path, options: dict):
    """loader(root, **options) after checking that root exists and every option is a loader parameter;
    a set with no usable sample is a DataLayoutError that says what was skipped."""
    if not Path(root).exists():
        raise DataLayoutError(f"{name}: root {root} does not exist")
    allowed = list(loader_options(loader))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {allowed}")
    ds = loader(root, **options)
    if len(ds) == 0:
        raise DataLayoutError(f"{name}: no usable samples under {root}; {_skip_summary(ds.skipped)}")
    return ds
