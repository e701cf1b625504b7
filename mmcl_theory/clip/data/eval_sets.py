"""Zero-shot evaluation sets read from a root path, with CLIP_benchmark names. See ``load_eval_set``."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .coarse_classes import COARSE_GROUPS, TINY_IMAGENET_COARSE, coarse_labels
from .errors import DataLayoutError, Skip
from .facts import (IMAGENET_A_CLASSES, IMAGENET_CLASSNAMES, IMAGENET_R_CLASSES, IMAGENET_WNIDS, OBJECTNET_CLASSES,
                    TEXTURE_SHAPE_CLASSES)
from .images import is_image_file, read_images
from .text_files import read_json_file, read_text_file
from .training_sets import tiny_imagenet_split, call_loader, tiny_imagenet_classes

EVAL_SETS: tuple[str, ...] = (
    "imagenet1k", "imagenetv2", "imagenet_sketch", "imagenet-r", "imagenet-a", "objectnet", "tiny_imagenet",
    "texture_vs_shape_edges", "texture_vs_shape_silhouettes",
    "tiny_imagenet_coarse", "texture_vs_shape_edges_coarse", "texture_vs_shape_silhouettes_coarse",
)
OBJECTNET_BORDER = 2
_WNID_RE = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class EvalSet:
    """A labelled evaluation set. labels[i] indexes classnames; class_subset[k] (if given) is the
    ImageNet-1k index of class k; hit_sets[i] (if given) is the set of class indices accepted for image i;
    class_groups[k] (if given) are the ImageNet-1k indices that make up class k."""

    name: str
    root: str
    image_paths: list[str]
    labels: np.ndarray
    classnames: list[str]
    class_subset: np.ndarray | None = None
    hit_sets: list[frozenset[int]] | None = None
    class_groups: list[tuple[int, ...]] | None = None
    crop_border: int = 0
    skipped: list[Skip] = field(default_factory=list)

    def __post_init__(self):
        n, k = len(self.image_paths), len(self.classnames)
        if len(self.labels) != n:
            raise ValueError(f"labels: length {len(self.labels)} must equal the number of images {n}")
        if n and not (0 <= int(self.labels.min()) and int(self.labels.max()) < k):
            raise ValueError(f"labels: must lie in [0, {k}), got [{int(self.labels.min())}, {int(self.labels.max())}]")
        if self.class_subset is not None:
            if len(self.class_subset) != k:
                raise ValueError(f"class_subset: length {len(self.class_subset)} must equal the {k} classnames")
            if k and not (0 <= int(self.class_subset.min()) and int(self.class_subset.max()) < 1000):
                raise ValueError("class_subset: ImageNet indices must lie in [0, 1000)")
        if self.hit_sets is not None and len(self.hit_sets) != n:
            raise ValueError(f"hit_sets: length {len(self.hit_sets)} must equal the number of images {n}")
        if self.class_groups is not None and len(self.class_groups) != k:
            raise ValueError(f"class_groups: length {len(self.class_groups)} must equal the {k} classnames")
        if self.crop_border < 0:
            raise ValueError(f"crop_border: must be >= 0, got {self.crop_border}")

    def __len__(self) -> int:
        return len(self.image_paths)

    def read(self, indices, resolution: int, skipped: list[Skip] | None = None,
             failed_rows: list[int] | None = None) -> np.ndarray:
        """uint8 (B, R, R, 3) images at the indices, with this set's border crop. With ``skipped`` or
        ``failed_rows`` lists, undecodable images are black rows, listed there (failed_rows: positions in
        ``indices``), and the evaluation can drop them; without, the first one raises ImageDecodeError."""
        return read_images([self.image_paths[i] for i in indices], resolution, crop_border=self.crop_border,
                           skipped=skipped, failed_rows=failed_rows)

    def restrict(self, imagenet_classes, name: str | None = None) -> "EvalSet":
        """The images whose class is among the given ImageNet-1k indices, with logits restricted to them
        (e.g. ImageNet val on the ImageNet-R classes, the x axis of effective robustness). Needs a
        1000-way set or a class_subset; labels are re-indexed into the sorted given classes."""
        wanted = sorted({int(c) for c in imagenet_classes})
        global_of = np.arange(len(self.classnames)) if self.class_subset is None else self.class_subset
        if self.class_subset is None and len(self.classnames) != 1000:
            raise ValueError(f"restrict: {self.name} has neither 1000 classes nor a class_subset")
        pos = {c: k for k, c in enumerate(wanted)}
        keep = [i for i, lab in enumerate(self.labels) if int(global_of[lab]) in pos]
        names = {int(g): n for g, n in zip(global_of, self.classnames)}
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValueError(f"restrict: classes {missing[:5]} are not classes of {self.name}")
        return EvalSet(name or f"{self.name}-on-{len(wanted)}-classes", self.root, [self.image_paths[i] for i in keep],
                       np.array([pos[int(global_of[self.labels[i]])] for i in keep], np.int64),
                       [names[c] for c in wanted], np.array(wanted, np.int64), crop_border=self.crop_border,
                       skipped=list(self.skipped))

    def correct(self, predictions: np.ndarray) -> np.ndarray:
        """bool (N,): prediction (class index into classnames) is right; ObjectNet: in the image's hit set."""
        predictions = np.asarray(predictions)
        if self.hit_sets is None:
            return predictions == self.labels
        return np.array([int(p) in h for p, h in zip(predictions, self.hit_sets)], bool)


# ---------------------------------------------------------------------------------------------------
# folder helpers
# ---------------------------------------------------------------------------------------------------

def _images_in(folder: Path, skipped: list[Skip]) -> list[str]:
    """Image files directly in folder (sorted); other files are recorded as skipped."""
    out = []
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.is_dir()) for e in it)
    for f, is_dir in entries:
        if f.startswith(".") or is_dir:
            continue
        if is_image_file(f):
            out.append(str(folder / f))
        else:
            skipped.append((str(folder / f), "not an image file extension"))
    return out


def _class_folders(root: Path, what: str, expected: str) -> list[str]:
    if not root.is_dir():
        raise DataLayoutError(f"{what}: root {root} is not a folder; expected {expected}")
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _descend(root: Path, names: tuple[str, ...]) -> Path:
    """root, or root/<name> for the first name that exists (archives often unpack into a subfolder)."""
    for n in names:
        if (root / n).is_dir():
            return root / n
    return root


def _wnid_folder_set(name: str, root: Path, subset: tuple[int, ...] | None, expected: str) -> EvalSet:
    """ImageNet-style wnid folders. subset None: 1000-way, labels = ImageNet index of the wnid;
    otherwise labels index the (sorted) subset and class_subset = subset."""
    folders = _class_folders(root, name, expected)
    wnid_index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
    wnids = [f for f in folders if _WNID_RE.match(f)]
    if not wnids:
        raise DataLayoutError(f"{name}: no wnid folders (n########) in {root}; expected {expected}")
    unknown = [w for w in wnids if w not in wnid_index]
    if unknown:
        raise DataLayoutError(f"{name}: folders that are not ImageNet-1k wnids: {unknown[:5]}")
    skipped: list[Skip] = [(str(root / f), "not a wnid folder") for f in folders if not _WNID_RE.match(f)]
    if subset is None:
        pos = {i: i for i in range(1000)}
        classnames, class_subset = list(IMAGENET_CLASSNAMES), None
    else:
        pos = {c: k for k, c in enumerate(subset)}
        outside = [w for w in wnids if wnid_index[w] not in pos]
        if outside:
            raise DataLayoutError(f"{name}: wnid folders outside its {len(subset)}-class subset: {outside[:5]}")
        classnames, class_subset = [IMAGENET_CLASSNAMES[c] for c in subset], np.array(subset, np.int64)
    paths, labels = [], []
    for w in wnids:
        files = _images_in(root / w, skipped)
        paths += files
        labels += [pos[wnid_index[w]]] * len(files)
    return EvalSet(name, str(root), paths, np.array(labels, np.int64), classnames, class_subset, skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# ImageNet val, V2, Sketch, R, A
# ---------------------------------------------------------------------------------------------------

def _devkit_labels(devkit: Path) -> list[int]:
    """Sorted-wnid class index of each val image (ILSVRC2012_val_%08d order) from the devkit:
    data/ILSVRC2012_validation_ground_truth.txt holds ILSVRC2012_IDs, data/meta.mat maps ID -> wnid."""
    from scipy.io import loadmat

    gt, meta = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt", devkit / "data" / "meta.mat"
    if not gt.is_file() or not meta.is_file():
        raise DataLayoutError(f"imagenet1k: flat val images need the devkit: expected {gt} and {meta}")
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception as e:  # scipy raises many types for a damaged .mat file; all mean the same here
        raise DataLayoutError(f"imagenet1k: devkit {meta} is not a readable meta.mat with 'synsets' "
                              f"({type(e).__name__}: {e})") from None
    wnid_index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
    truth = read_text_file(gt, "imagenet1k", "one ILSVRC2012_ID per line")
    try:
        return [wnid_index[id_to_wnid[int(x)]] for x in truth.split()]
    except (KeyError, ValueError) as e:
        raise DataLayoutError(f"imagenet1k: devkit ground truth {gt} holds an ID not in {meta} ({e})") from None


CLASS_SETS: dict[str, tuple[int, ...]] = {
    "imagenet-r": IMAGENET_R_CLASSES, "imagenet-a": IMAGENET_A_CLASSES, "objectnet": OBJECTNET_CLASSES}
"""Named ImageNet-1k class subsets for ``restrict_to``: the classes of ImageNet-R, ImageNet-A, ObjectNet."""


def load_imagenet1k(root: str | Path, devkit: str | Path | None = None, restrict_to: str | None = None) -> EvalSet:
    """ImageNet-1k val: root (or root/val) with 1000 wnid folders, or the 50,000 flat
    ILSVRC2012_val_########.JPEG files plus the devkit (root/ILSVRC2012_devkit_t12 or devkit=PATH).
    restrict_to: a CLASS_SETS name, giving val-on-<that>-classes (images and logits of those classes)."""
    if restrict_to is not None and restrict_to not in CLASS_SETS:
        raise ValueError(f"restrict_to must be None or one of {sorted(CLASS_SETS)}, got {restrict_to!r}")
    full = _load_imagenet1k(Path(root), devkit)
    return full if restrict_to is None else full.restrict(CLASS_SETS[restrict_to], f"imagenet1k-on-{restrict_to}-classes")


def _load_imagenet1k(root: Path, devkit: str | Path | None) -> EvalSet:
    expected = "wnid folders (val/n01440764/...) or flat ILSVRC2012_val_*.JPEG files with ILSVRC2012_devkit_t12"
    val = _descend(root, ("val",))
    if not val.is_dir():
        raise DataLayoutError(f"imagenet1k: root {root} is not a folder; expected {expected}")
    if any(_WNID_RE.match(d) for d in _class_folders(val, "imagenet1k", expected)):
        return _wnid_folder_set("imagenet1k", val, None, expected)
    flat = sorted(f for f in os.listdir(val) if re.match(r"^ILSVRC2012_val_\d{8}\.JPEG$", f, re.IGNORECASE))
    if not flat:
        raise DataLayoutError(f"imagenet1k: no wnid folders and no ILSVRC2012_val_*.JPEG files in {val}; expected {expected}")
    dk = Path(devkit) if devkit is not None else next(
        (p for p in (root / "ILSVRC2012_devkit_t12", val / "ILSVRC2012_devkit_t12", root.parent / "ILSVRC2012_devkit_t12")
         if p.is_dir()), root / "ILSVRC2012_devkit_t12")
    truth = _devkit_labels(dk)
    paths, labels, skipped = [], [], []
    for f in flat:
        k = int(re.findall(r"\d{8}", f)[0])
        if not 1 <= k <= len(truth):
            skipped.append((str(val / f), f"image number {k} outside the devkit's {len(truth)} labels"))
            continue
        paths.append(str(val / f))
        labels.append(truth[k - 1])
    return EvalSet("imagenet1k", str(root), paths, np.array(labels, np.int64), list(IMAGENET_CLASSNAMES), skipped=skipped)


def load_imagenetv2(root: str | Path) -> EvalSet:
    """ImageNetV2 (any of its three variants): folders named 0..999 = class index (parsed as int)."""
    root = Path(root)
    expected = "folders 0..999 named by class index (imagenetv2-matched-frequency-format-val/0/...)"
    root = _descend(root, ("imagenetv2-matched-frequency-format-val", "imagenetv2-threshold0.7-format-val",
                           "imagenetv2-top-images-format-val"))
    folders = _class_folders(root, "imagenetv2", expected)
    ints = sorted((int(f), f) for f in folders if f.isdigit() and 0 <= int(f) < 1000)
    if not ints:
        raise DataLayoutError(f"imagenetv2: no integer class folders in {root}; expected {expected}")
    skipped: list[Skip] = [(str(root / f), "not a class-index folder 0..999") for f in folders
                           if not (f.isdigit() and 0 <= int(f) < 1000)]
    paths, labels = [], []
    for k, f in ints:
        files = _images_in(root / f, skipped)
        paths += files
        labels += [k] * len(files)
    return EvalSet("imagenetv2", str(root), paths, np.array(labels, np.int64), list(IMAGENET_CLASSNAMES), skipped=skipped)


def load_imagenet_sketch(root: str | Path) -> EvalSet:
    """ImageNet-Sketch: root (or root/sketch) with 1000 wnid folders."""
    root = _descend(Path(root), ("sketch", "imagenet-sketch"))
    return _wnid_folder_set("imagenet_sketch", root, None, "wnid folders (sketch/n01440764/...)")


def _read_subset(path: str | Path | None, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if path is None:
        return default
    p = Path(path)
    if p.is_dir():
        p = p / "class_sublists.json"
    expected = f"a JSON object whose {key!r} is a list of ImageNet-1k indices 0..999 (imagenet-testbed's class_sublists.json)"
    data = read_json_file(p, "class subset", expected)
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            and 0 <= v < 1000 for v in value):
        raise DataLayoutError(f"class subset: {p} does not hold {expected}")
    return tuple(sorted(set(value)))


def load_imagenet_r(root: str | Path, class_sublists: str | Path | None = None) -> EvalSet:
    """ImageNet-R: 200 wnid folders; logits restricted to its 200 classes (built-in testbed list,
    or class_sublists=PATH to imagenet-testbed's class_sublists.json)."""
    root = _descend(Path(root), ("imagenet-r",))
    return _wnid_folder_set("imagenet-r", root, _read_subset(class_sublists, "imagenet-r", IMAGENET_R_CLASSES),
                            "200 wnid folders (imagenet-r/n01443537/...)")


def load_imagenet_a(root: str | Path, class_sublists: str | Path | None = None) -> EvalSet:
    """ImageNet-A: 200 wnid folders; logits restricted to its 200 classes."""
    root = _descend(Path(root), ("imagenet-a",))
    return _wnid_folder_set("imagenet-a", root, _read_subset(class_sublists, "imagenet-a", IMAGENET_A_CLASSES),
                            "200 wnid folders (imagenet-a/n01498041/...)")


# ---------------------------------------------------------------------------------------------------
# ObjectNet
# ---------------------------------------------------------------------------------------------------

def _string_map(path: Path, expected: str) -> dict[str, str]:
    """A JSON object of strings to strings, or DataLayoutError naming the file."""
    data = read_json_file(path, "objectnet", f"a JSON object {expected}")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataLayoutError(f"objectnet: {path} is not a JSON object of strings ({expected})")
    return data


def _objectnet_metadata(meta: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(folder -> ObjectNet label, ObjectNet label -> ImageNet-1k indices) from the mapping files:
    folder_to_objectnet_label.json, objectnet_to_imagenet_1k.json ('; '-separated ImageNet names), and
    the ImageNet names by index: imagenet_to_labels.json (testbed) or imagenet_to_label_2012_v2 (one per line)."""
    files = {f: meta / f for f in ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataLayoutError(f"objectnet: expected the mapping files {missing} (ObjectNet mappings/ folder, "
                              "or pass metadata=PATH, e.g. imagenet-testbed's objectnet_metadata)")
    folder_to_label = _string_map(files["folder_to_objectnet_label.json"], "folder name -> ObjectNet label")
    label_to_names = _string_map(files["objectnet_to_imagenet_1k.json"],
                                 "ObjectNet label -> '; '-separated ImageNet names")
    if (meta / "imagenet_to_labels.json").is_file():
        names = _string_map(meta / "imagenet_to_labels.json", "ImageNet index '0'..'999' -> name")
        missing = [str(i) for i in range(1000) if str(i) not in names]
        if missing:
            raise DataLayoutError(f"objectnet: {meta / 'imagenet_to_labels.json'} lacks the indices {missing[:5]}; "
                                  "expected keys '0'..'999'")
        index_names = [names[str(i)] for i in range(1000)]
    elif (meta / "imagenet_to_label_2012_v2").is_file():
        text = read_text_file(meta / "imagenet_to_label_2012_v2", "objectnet", "one ImageNet name per line")
        index_names = [l.strip() for l in text.splitlines() if l.strip()]
    else:
        raise DataLayoutError(f"objectnet: expected imagenet_to_labels.json or imagenet_to_label_2012_v2 in {meta}")
    if len(index_names) != 1000:
        raise DataLayoutError(f"objectnet: ImageNet name list in {meta} has {len(index_names)} entries, expected 1000")
    by_name = {n: i for i, n in enumerate(index_names)}
    label_to_idx = {}
    for label, joined in label_to_names.items():
        idx = [by_name[n] for n in joined.split("; ") if n in by_name]
        if idx:
            label_to_idx[label] = sorted(idx)
    return folder_to_label, label_to_idx


def load_objectnet(root: str | Path, metadata: str | Path | None = None, protocol: str = "testbed",
                   answers: str | Path | None = None) -> EvalSet:
    """ObjectNet, only the images of the 113 classes that overlap ImageNet-1k; a 2 px border is cropped.

    Layouts: root/images/<folder>/*.png (the release; mappings in root/mappings), or flat images
    plus an answers JSON (file -> ObjectNet id = position in the sorted ObjectNet labels, as in the
    challenge template). protocol 'testbed' (Taori et al.): classes are the 125 ImageNet classes the
    113 labels map to (class_subset), and a prediction is a hit if it is in the image's mapped set
    (hit_sets); labels hold the first class of that set. protocol 'objectnet113' (CLIP / WiSE-FT):
    the 113 ObjectNet label names are the classes, class_subset None."""
    if protocol not in ("testbed", "objectnet113"):
        raise ValueError(f"protocol must be 'testbed' or 'objectnet113', got {protocol!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"objectnet: root {root} is not a folder; expected images/<folder>/*.png or flat images")
    meta = Path(metadata) if metadata is not None else _descend(root, ("mappings",))
    folder_to_label, label_to_idx = _objectnet_metadata(meta)
    skipped: list[Skip] = []
    items: list[tuple[str, str]] = []  # (path, ObjectNet label)
    img_root = _descend(root, ("images",))
    folders = [d for d in sorted(os.listdir(img_root)) if (img_root / d).is_dir()]
    if folders:
        for d in folders:
            if d not in folder_to_label:
                skipped.append((str(img_root / d), "folder not in folder_to_objectnet_label.json"))
                continue
            items += [(p, folder_to_label[d]) for p in _images_in(img_root / d, skipped)]
    else:
        ans = Path(answers) if answers is not None else next(iter(sorted(root.glob("answers*.json"))), None)
        if ans is None or not ans.is_file():
            raise DataLayoutError(f"objectnet: expected class folders in {img_root} or flat images with an "
                                  "answers*.json (file -> ObjectNet id) in the root")
        id_to_label = sorted(set(folder_to_label.values()))
        answers_map = read_json_file(ans, "objectnet", "a JSON object image file -> ObjectNet id")
        if not isinstance(answers_map, dict):
            raise DataLayoutError(f"objectnet: {ans} is not a JSON object (expected image file -> ObjectNet id)")
        for fname, oid in sorted(answers_map.items()):
            p = img_root / fname
            if not p.is_file():
                skipped.append((str(p), "missing image file"))
            elif not isinstance(oid, int) or isinstance(oid, bool) or not 0 <= oid < len(id_to_label):
                skipped.append((str(p), f"ObjectNet id {oid!r} outside 0..{len(id_to_label) - 1}"))
            else:
                items.append((str(p), id_to_label[oid]))
    kept = [(p, lab) for p, lab in items if lab in label_to_idx]
    out_of_imagenet = len(items) - len(kept)
    if protocol == "testbed":
        subset = sorted({i for idx in label_to_idx.values() for i in idx})
        pos = {c: k for k, c in enumerate(subset)}
        hit_sets = [frozenset(pos[i] for i in label_to_idx[lab]) for _, lab in kept]
        labels = np.array([min(h) for h in hit_sets], np.int64)
        classnames = [IMAGENET_CLASSNAMES[c] for c in subset]
        class_subset = np.array(subset, np.int64)
    else:
        names = sorted(label_to_idx)
        pos = {n: k for k, n in enumerate(names)}
        labels = np.array([pos[lab] for _, lab in kept], np.int64)
        classnames, class_subset, hit_sets = names, None, None
    if out_of_imagenet:
        skipped.append((str(root), f"{out_of_imagenet} images of ObjectNet classes without an ImageNet-1k match (not evaluated)"))
    return EvalSet("objectnet", str(root), [p for p, _ in kept], labels, classnames, class_subset, hit_sets,
                   crop_border=OBJECTNET_BORDER, skipped=skipped)


# ---------------------------------------------------------------------------------------------------
# Tiny ImageNet val, texture-vs-shape
# ---------------------------------------------------------------------------------------------------

def load_tiny_imagenet_val(root: str | Path, per_class: int | None = None, classnames: str = "clip") -> EvalSet:
    """Tiny ImageNet val (10,000 images): labels = position in wnids.txt; class_subset = ImageNet index of
    each class (not sorted; follows wnids.txt)."""
    root = Path(root)
    wnids, names = tiny_imagenet_classes(root, classnames)
    paths, labels, _, skipped = tiny_imagenet_split(root, "val", wnids, per_class)
    index = {w: i for i, w in enumerate(IMAGENET_WNIDS)}
    return EvalSet("tiny_imagenet", str(root), paths, labels, names,
                   np.array([index[w] for w in wnids], np.int64), skipped=skipped)


def load_texture_vs_shape(root: str | Path, *, kind: str) -> EvalSet:
    """Geirhos et al. stimuli: root/<kind>/<category>/*.png with the 16 categories (sorted) as classes;
    class_groups[k] = the ImageNet-1k indices of category k (aggregate 1000-way probabilities over them)."""
    folder = {"edges": "edges", "silhouettes": "filled-silhouettes"}[kind]
    base = Path(root)
    base = base / folder if (base / folder).is_dir() else base
    cats = sorted(TEXTURE_SHAPE_CLASSES)
    expected = f"{folder}/<category>/*.png with categories {', '.join(cats)}"
    folders = _class_folders(base, f"texture_vs_shape_{kind}", expected)
    if not set(folders) & set(cats):
        raise DataLayoutError(f"texture_vs_shape_{kind}: no category folders in {base}; expected {expected}")
    skipped: list[Skip] = [(str(base / f), "not one of the 16 categories") for f in folders if f not in cats]
    paths, labels = [], []
    for k, c in enumerate(cats):
        if (base / c).is_dir():
            files = _images_in(base / c, skipped)
            paths += files
            labels += [k] * len(files)
    return EvalSet(f"texture_vs_shape_{kind}", str(base), paths, np.array(labels, np.int64), cats,
                   class_groups=[TEXTURE_SHAPE_CLASSES[c] for c in cats], skipped=skipped)


def load_tiny_imagenet_coarse(root: str | Path, per_class: int | None = None) -> EvalSet:
    """Tiny ImageNet val with the coarse WordNet groups (``coarse_classes.COARSE_GROUPS``, 24) as classes:
    labels[i] = the group of image i's class; per_class keeps the first k images of each fine class."""
    root = Path(root)
    wnids, _ = tiny_imagenet_classes(root, "clip")
    paths, labels, _, skipped = tiny_imagenet_split(root, "val", wnids, per_class)
    return EvalSet("tiny_imagenet_coarse", str(root), paths, coarse_labels(wnids)[labels], list(COARSE_GROUPS),
                   skipped=skipped)


def texture_vs_shape_coarse_label(category: str) -> int | None:
    """The coarse group of a texture-vs-shape category: the one group that all of its Tiny ImageNet
    classes share (bird -> 'bird', truck -> 'vehicle'), or None when it has no Tiny ImageNet class or
    its classes span several groups."""
    groups = {TINY_IMAGENET_COARSE[IMAGENET_WNIDS[i]][0] for i in TEXTURE_SHAPE_CLASSES[category]
              if IMAGENET_WNIDS[i] in TINY_IMAGENET_COARSE}
    return COARSE_GROUPS.index(groups.pop()) if len(groups) == 1 else None


def load_texture_vs_shape_coarse(root: str | Path, *, kind: str) -> EvalSet:
    """Texture-vs-shape stimuli relabelled with the coarse groups as classes (plain zero-shot over the
    24 group names, no probability aggregation); categories without one coarse group are skipped."""
    full = load_texture_vs_shape(root, kind=kind)
    to_group = [texture_vs_shape_coarse_label(c) for c in full.classnames]
    keep = [i for i, lab in enumerate(full.labels) if to_group[lab] is not None]
    skipped = list(full.skipped) + [(f"{full.root}/{c}", "no single coarse group over its Tiny ImageNet classes")
                                    for c, g in zip(full.classnames, to_group) if g is None]
    return EvalSet(f"texture_vs_shape_{kind}_coarse", full.root, [full.image_paths[i] for i in keep],
                   np.array([to_group[full.labels[i]] for i in keep], np.int64), list(COARSE_GROUPS),
                   skipped=skipped)


LOADERS = {
    "imagenet1k": load_imagenet1k,
    "imagenetv2": load_imagenetv2,
    "imagenet_sketch": load_imagenet_sketch,
    "imagenet-r": load_imagenet_r,
    "imagenet-a": load_imagenet_a,
    "objectnet": load_objectnet,
    "tiny_imagenet": load_tiny_imagenet_val,
    "texture_vs_shape_edges": functools.partial(load_texture_vs_shape, kind="edges"),
    "texture_vs_shape_silhouettes": functools.partial(load_texture_vs_shape, kind="silhouettes"),
    "tiny_imagenet_coarse": load_tiny_imagenet_coarse,
    "texture_vs_shape_edges_coarse": functools.partial(load_texture_vs_shape_coarse, kind="edges"),
    "texture_vs_shape_silhouettes_coarse": functools.partial(load_texture_vs_shape_coarse, kind="silhouettes"),
}


def load_eval_set(name: str, root: str | Path, **options) -> EvalSet:
    """Load a zero-shot evaluation set by CLIP_benchmark-style name (``EVAL_SETS``) from root."""
    if name not in LOADERS:
        raise ValueError(f"eval set name must be one of {EVAL_SETS}, got {name!r}")
    return call_loader(name, LOADERS[name], root, options)
