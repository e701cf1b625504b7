"""Decoding image files to fixed-size RGB uint8 arrays (center crop + resize).

An image reference is a file path, or ``<shard>.tar::<member>`` for a member of a webdataset tar.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError, Skip

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
TAR_SEPARATOR = "::"


def is_image_file(name: str) -> bool:
    """True when the file name has a known image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _open(ref: str, tars: dict[str, tarfile.TarFile]) -> Image.Image:
    if TAR_SEPARATOR in ref:
        shard, member = ref.split(TAR_SEPARATOR, 1)
        if shard not in tars:
            tars[shard] = tarfile.open(shard, "r")
        f = tars[shard].extractfile(member)
        if f is None:
            raise KeyError(f"{member} is not a regular file in {shard}")
        return Image.open(io.BytesIO(f.read()))
    return Image.open(ref)


def _to_square(img: Image.Image, resolution: int, crop_border: int) -> np.ndarray:
    img.draft("RGB", (resolution + 2 * crop_border, resolution + 2 * crop_border))  # JPEG: decode at reduced scale
    img = img.convert("RGB")
    if crop_border:
        w, h = img.size
        if w <= 2 * crop_border or h <= 2 * crop_border:
            raise ValueError(f"image {w}x{h} is too small to crop a {crop_border}px border")
        img = img.crop((crop_border, crop_border, w - crop_border, h - crop_border))
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def decode_image(ref: str, resolution: int, crop_border: int = 0,
                 tars: dict[str, tarfile.TarFile] | None = None) -> np.ndarray:
    """One image -> uint8 (resolution, resolution, 3): optional border crop, center square crop, bicubic resize.

    Raises ImageDecodeError naming the file when it is missing, truncated or not an image.
    """
    tars = {} if tars is None else tars
    try:
        with _open(ref, tars) as img:
            return _to_square(img, resolution, crop_border)
    except (OSError, UnidentifiedImageError, KeyError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"{ref}: {type(e).__name__}: {e}") from None


def read_images(paths: Sequence[str], resolution: int, *, crop_border: int = 0,
                skipped: list[Skip] | None = None) -> np.ndarray:
    """Decode image files -> uint8 (N, resolution, resolution, 3), RGB, center-cropped and resized.

    A file that cannot be decoded raises ImageDecodeError, unless ``skipped`` is a list: then its row is
    left black and ``(path, reason)`` is appended, so the batch keeps its shape.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    out = np.zeros((len(paths), resolution, resolution, 3), np.uint8)
    tars: dict[str, tarfile.TarFile] = {}
    try:
        for i, ref in enumerate(paths):
            try:
                out[i] = decode_image(ref, resolution, crop_border, tars)
            except ImageDecodeError as e:
                if skipped is None:
                    raise
                skipped.append((ref, str(e).split(": ", 1)[1]))
    finally:
        for t in tars.values():
            t.close()
    return out


def verify_image(ref: str) -> str | None:
    """None when the image decodes fully, else the reason (used by the inspection CLI)."""
    tars: dict[str, tarfile.TarFile] = {}
    try:
        with _open(ref, tars) as img:
            img.load()
        return None
    except (OSError, UnidentifiedImageError, KeyError, ValueError, SyntaxError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        for t in tars.values():
            t.close()
