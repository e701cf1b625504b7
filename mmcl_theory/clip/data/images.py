"""Decoding image files to fixed-size RGB uint8 arrays (center crop + resize).

An image reference is a file path, or ``<shard>.tar::<member>`` for a member of a webdataset tar.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
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


@functools.lru_cache(maxsize=256)
def _tar_members(shard: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of one tar file (memoised per file version)."""
    with tarfile.open(shard, "r") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def read_bytes(ref: str) -> bytes:
    """The bytes of an image reference: a file, or a member of a tar shard (read by offset)."""
    if TAR_SEPARATOR not in ref:
        with open(ref, "rb") as f:
            return f.read()
    shard, member = ref.split(TAR_SEPARATOR, 1)
    st = os.stat(shard)
    try:
        offset, size = _tar_members(shard, st.st_mtime_ns, st.st_size)[member]
    except KeyError:
        raise FileNotFoundError(errno.ENOENT, "no such file member in the tar shard", ref) from None
    with open(shard, "rb") as f:
        f.seek(offset)
        return f.read(size)


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


_DECODE_ERRORS = (OSError, UnidentifiedImageError, Image.DecompressionBombError, KeyError, ValueError, SyntaxError,
                  tarfile.TarError)


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def failure_reason(e: BaseException) -> str:
    """The cause of a failed read or decode as a stable 'Type: message': the same cause gives the same string for
    every file (reports group skipped images by it). Object reprs (Pillow names the BytesIO it was handed, with its
    memory address) are cut, and an OSError about a file gives its strerror, not the file name (the skip record
    names the file already)."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {_OBJECT_REPR.sub('', str(e))}"


def decode_image(ref: str, resolution: int, crop_border: int = 0) -> np.ndarray:
    """One image -> uint8 (resolution, resolution, 3): optional border crop, center square crop, bicubic resize.

    Raises ImageDecodeError naming the file when it is missing, truncated, too large or not an image.
    """
    try:
        with Image.open(io.BytesIO(read_bytes(ref))) as img:
            return _to_square(img, resolution, crop_border)
    except _DECODE_ERRORS as e:
        raise ImageDecodeError(f"{ref}: {failure_reason(e)}") from None


def read_images(paths: Sequence[str], resolution: int, *, crop_border: int = 0,
                skipped: list[Skip] | None = None, failed_rows: list[int] | None = None) -> np.ndarray:
    """Decode image files -> uint8 (N, resolution, resolution, 3), RGB, center-cropped and resized.

    A file that cannot be decoded raises ImageDecodeError, unless ``skipped`` or ``failed_rows`` is a
    list: then its row is left black, ``(path, reason)`` is appended to ``skipped`` and its position in
    ``paths`` to ``failed_rows``, so the batch keeps its shape and the caller knows which rows to drop.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    out = np.zeros((len(paths), resolution, resolution, 3), np.uint8)
    for i, ref in enumerate(paths):
        try:
            out[i] = decode_image(ref, resolution, crop_border)
        except ImageDecodeError as e:
            if skipped is None and failed_rows is None:
                raise
            if skipped is not None:
                skipped.append((ref, str(e).split(": ", 1)[1]))
            if failed_rows is not None:
                failed_rows.append(i)
    return out


def verify_image(ref: str) -> str | None:
    """None when the image decodes fully, else the reason (used by the inspection CLI)."""
    try:
        with Image.open(io.BytesIO(read_bytes(ref))) as img:
            img.load()
        return None
    except _DECODE_ERRORS as e:
        return failure_reason(e)
