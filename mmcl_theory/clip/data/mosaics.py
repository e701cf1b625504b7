"""Training sets of the mechanism experiment, built from Tiny ImageNet and written as CSV sets that the
trainer's 'csv' loader reads (columns filepath, title, label).

Intra-class contrasting (docs/models.md, M1's annotated core on real images):
    'coarse'        text = the coarse WordNet group of the image's class           ("dog")
    'coarse_fine'   text = the group plus the fine class name as per-image detail  ("dog, golden retriever")
both over the same Tiny ImageNet train images; label = the coarse group's name (for the supervised
baseline: the 'csv' loader's ``label_key='label'``).

Inter-class feature sharing (M2's beta on real images): a *mosaic* is a Tiny ImageNet train image (the
main object, full 64x64 canvas) with 1-3 other objects pasted as insets in distinct corners
(``INSET_SIZE`` px, downscaled bicubic), each inset from a different group than the main object and than
each other, so that objects of one class appear as details inside other classes' images.
    'mosaic_main'   text = the main object's name only                              ("dog")
    'mosaic_all'    text = every object, main first, then the insets in corner order ("dog, insect, vehicle")
label = the main object's name. Names are the coarse groups (``names='coarse'``) or the fine class names
(``names='fine'``). Mosaic images are written losslessly as PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .coarse_classes import COARSE_GROUPS, coarse_labels
from .images import read_images
from .training_sets import tiny_imagenet_classes, tiny_imagenet_split

CANVAS = 64
INSET_SIZE = 28
CORNERS = ((0, 0), (0, CANVAS - INSET_SIZE), (CANVAS - INSET_SIZE, 0), (CANVAS - INSET_SIZE, CANVAS - INSET_SIZE))
"""(row, column) of the top-left pixel of each of the 4 inset positions on the 64x64 canvas."""
VARIANTS = ("coarse", "coarse_fine", "mosaic_main", "mosaic_all")
FIELDS = ("filepath", "title", "label")


def plan_mosaics(groups: np.ndarray, seed: int, min_objects: int = 2, max_objects: int = 4) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """For each image i (the main object), (inset image indices, corner indices): k - 1 insets with k
    uniform in [min_objects, max_objects], drawn from images whose groups differ from the main object's
    and from each other's; distinct corners in random order. groups: int (N,) group of each image."""
    if not 2 <= min_objects <= max_objects <= 1 + len(CORNERS):
        raise ValueError(f"min_objects, max_objects = {min_objects}, {max_objects}: need 2 <= min <= max <= {1 + len(CORNERS)}")
    groups = np.asarray(groups)
    present = np.unique(groups)
    if len(present) < max_objects:
        raise ValueError(f"groups: {len(present)} distinct groups; mosaics of {max_objects} objects need as many")
    members = {int(g): np.flatnonzero(groups == g) for g in present}
    rng = np.random.default_rng(seed)
    plan = []
    for g in groups:
        k = int(rng.integers(min_objects, max_objects + 1))
        others = rng.choice(present[present != g], size=k - 1, replace=False)
        insets = tuple(int(rng.choice(members[int(o)])) for o in others)
        corners = tuple(int(c) for c in rng.permutation(len(CORNERS))[:k - 1])
        plan.append((insets, corners))
    return plan


def compose_mosaic(main: np.ndarray, insets: np.ndarray, corners: tuple[int, ...]) -> np.ndarray:
    """uint8 (64, 64, 3): ``main`` (64, 64, 3) with insets[j] (64, 64, 3), resized to INSET_SIZE
    (bicubic), pasted at CORNERS[corners[j]]."""
    if main.shape != (CANVAS, CANVAS, 3) or insets.shape[1:] != (CANVAS, CANVAS, 3) or len(insets) != len(corners):
        raise ValueError(f"main {main.shape}, insets {insets.shape}, {len(corners)} corners: need (64,64,3), "
                         "(K,64,64,3) and K corners")
    out = main.copy()
    for img, c in zip(insets, corners):
        r0, c0 = CORNERS[c]
        small = np.asarray(Image.fromarray(img).resize((INSET_SIZE, INSET_SIZE), Image.BICUBIC))
        out[r0:r0 + INSET_SIZE, c0:c0 + INSET_SIZE] = small
    return out


def mechanism_texts(variant: str, main: str, coarse: str, fine: str, inset_names: tuple[str, ...]) -> str:
    """The training text of one image for a VARIANTS entry (see the module docstring)."""
    if variant == "coarse":
        return coarse
    if variant == "coarse_fine":
        return f"{coarse}, {fine}"
    if variant == "mosaic_main":
        return main
    if variant == "mosaic_all":
        return ", ".join((main,) + inset_names)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def write_mechanism_sets(tiny_root: str | Path, out_dir: str | Path, per_class: int | None = None, seed: int = 0,
                         names: str = "coarse") -> dict[str, Path]:
    """Write OUT/<variant>.csv for every VARIANTS entry and the mosaic PNGs under OUT/mosaics/; returns
    {variant: csv path}. Images of the coarse variants are the Tiny ImageNet files themselves (absolute
    paths). Idempotent: a set whose CSVs exist is reused (delete OUT to rebuild)."""
    from mmcl_theory.io import atomic_write_csv

    if names not in ("coarse", "fine"):
        raise ValueError(f"names = {names!r}: must be 'coarse' or 'fine'")
    out = Path(out_dir)
    csvs = {v: out / f"{v}.csv" for v in VARIANTS}
    if all(p.is_file() for p in csvs.values()):
        return csvs
    root = Path(tiny_root)
    wnids, fine_names = tiny_imagenet_classes(root, "clip")
    paths, labels, _, skipped = tiny_imagenet_split(root, "train", wnids, per_class)
    if skipped:
        raise ValueError(f"tiny_imagenet train at {root}: {len(skipped)} unreadable entries, e.g. {skipped[0]}")
    groups = coarse_labels(wnids)[labels]
    coarse = [COARSE_GROUPS[g] for g in groups]
    fine = [fine_names[k] for k in labels]
    object_names = coarse if names == "coarse" else fine
    plan = plan_mosaics(groups, seed)
    (out / "mosaics").mkdir(parents=True, exist_ok=True)
    images = read_images(paths, CANVAS)
    rows: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for i, (insets, corners) in enumerate(plan):
        png = out / "mosaics" / f"{i:06d}.png"
        if not png.is_file():
            tmp = png.with_name(f".{png.name}.tmp")
            Image.fromarray(compose_mosaic(images[i], images[list(insets)], corners)).save(tmp, format="PNG")
            tmp.replace(png)
        inset_names = tuple(object_names[j] for j in insets)
        for v in VARIANTS:
            mosaic = v.startswith("mosaic")
            rows[v].append({"filepath": str(png.resolve()) if mosaic else str(Path(paths[i]).resolve()),
                            "title": mechanism_texts(v, object_names[i], coarse[i], fine[i], inset_names),
                            "label": object_names[i] if mosaic else coarse[i]})
    for v in VARIANTS:
        atomic_write_csv(csvs[v], rows[v], FIELDS)
    return csvs
