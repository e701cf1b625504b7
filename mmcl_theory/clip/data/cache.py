"""Image cache: decode and resize once into fixed-resolution uint8 .npy shards, then read memory-mapped.

Layout of ``out_dir``::

    manifest.json             resolution, crop_border, shard_size, count, sha256 of the image list
    shard_00000.npy ...       uint8 (n_i, R, R, 3), rows [i*shard_size, i*shard_size + n_i)
    shard_00000.skipped.json  [[row, path, reason], ...] images that failed to decode (row left black)

Each shard is written to a temporary file and renamed when complete, its skipped list first; a
killed build keeps its finished shards and rewrites only the missing ones on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .errors import DataLayoutError, ImageDecodeError, Skip
from .images import decode_image

MANIFEST = "manifest.json"


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}"


class ImageCache:
    """A finished cache: ``len(cache)``, ``.images`` (uint8 (N, R, R, 3) view over the memory-mapped
    shards), ``.get_batch(indices)``, ``.skipped`` (path, reason), ``.resolution``."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        mpath = self.dir / MANIFEST
        if not mpath.is_file():
            raise DataLayoutError(f"{self.dir}: not an image cache (expected {MANIFEST}; build it with build_cache)")
        m = json.loads(mpath.read_text())
        self.manifest = m
        self.resolution, self.count, self.shard_size = m["resolution"], m["count"], m["shard_size"]
        n_shards = -(-self.count // self.shard_size)
        missing = [_shard_name(i) for i in range(n_shards) if not (self.dir / f"{_shard_name(i)}.npy").is_file()]
        if missing:
            raise DataLayoutError(f"{self.dir}: cache incomplete, {len(missing)} of {n_shards} shards missing "
                                  f"(first {missing[0]}.npy); run build_cache again to resume")
        self._shards = [np.load(self.dir / f"{_shard_name(i)}.npy", mmap_mode="r") for i in range(n_shards)]
        self.skipped: list[Skip] = []
        self.skipped_rows: list[int] = []
        for i in range(n_shards):
            for row, path, reason in json.loads((self.dir / f"{_shard_name(i)}.skipped.json").read_text()):
                self.skipped_rows.append(row)
                self.skipped.append((path, reason))
        self.images = ShardedImages(self._shards, self.shard_size)

    def __len__(self) -> int:
        return self.count

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, R, R, 3) rows at the given indices, in that order."""
        return self.images[np.asarray(indices, dtype=np.int64)]


class ShardedImages:
    """Array-like uint8 (N, R, R, 3) over equal-size memory-mapped shards (last one may be shorter).
    Indexing by an int, a slice or an int array returns an ndarray; ``np.asarray`` loads everything."""

    def __init__(self, shards: list[np.ndarray], shard_size: int):
        self._shards, self._size = shards, shard_size
        n = sum(len(s) for s in shards)
        r = shards[0].shape[1] if shards else 0
        self.shape, self.dtype = (n, r, r, 3), np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            k = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} images")
            return np.asarray(self._shards[k // self._size][k % self._size])
        idx = np.arange(self.shape[0])[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError("index must be an int, a slice or a 1-d int array")
        idx = np.where(idx < 0, idx + self.shape[0], idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"indices out of range for {self.shape[0]} images")
        out = np.empty((len(idx),) + self.shape[1:], np.uint8)
        shard = idx // self._size
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            out[sel] = self._shards[s][idx[sel] - s * self._size]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


def build_cache(dataset_or_paths, out_dir: str | Path, resolution: int, workers: int = 2,
                shard_size: int = 4096, crop_border: int | None = None, progress: bool = True) -> ImageCache:
    """Decode every image once (center crop + resize to ``resolution``) into ``out_dir``; resumable.

    dataset_or_paths: a dataset with ``.image_paths`` (and optionally ``.crop_border``) or a list of paths.
    Images that fail to decode become black rows listed in ``ImageCache.skipped``. ``workers`` threads
    decode in parallel (Pillow releases the GIL while decoding and resizing).
    """
    paths = list(getattr(dataset_or_paths, "image_paths", dataset_or_paths) or [])
    if crop_border is None:
        crop_border = int(getattr(dataset_or_paths, "crop_border", 0))
    for name, value, lo in (("resolution", resolution, 1), ("workers", workers, 1), ("shard_size", shard_size, 1),
                            ("crop_border", crop_border, 0)):
        if int(value) < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
    if not paths:
        raise ValueError("build_cache: no image paths given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()
    manifest = {"format": 1, "resolution": int(resolution), "crop_border": int(crop_border),
                "shard_size": int(shard_size), "count": len(paths), "paths_sha256": digest}
    mpath = out / MANIFEST
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old != manifest:
            diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
            raise DataLayoutError(f"{out}: holds a different cache ({diff}); use another out_dir")
    else:
        _atomic_write_text(mpath, json.dumps(manifest, indent=1))
    for stale in out.glob("*.tmp"):  # partial files of a killed build
        stale.unlink()

    n_shards = -(-len(paths) // shard_size)
    todo = [i for i in range(n_shards) if not (out / f"{_shard_name(i)}.npy").is_file()]
    done_rows = len(paths) - sum(min(shard_size, len(paths) - i * shard_size) for i in todo)

    def load(ref: str) -> np.ndarray | str:
        try:
            return decode_image(ref, resolution, crop_border)
        except ImageDecodeError as e:
            return str(e).split(": ", 1)[1]

    bar = tqdm(total=len(paths), initial=done_rows, unit="img", desc=f"cache {out.name}", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in todo:
            lo = i * shard_size
            chunk = paths[lo: lo + shard_size]
            arr = np.zeros((len(chunk), resolution, resolution, 3), np.uint8)
            skipped = []
            for j, res in enumerate(pool.map(load, chunk)):
                if isinstance(res, str):
                    skipped.append([lo + j, chunk[j], res])
                else:
                    arr[j] = res
                bar.update(1)
            _atomic_write_text(out / f"{_shard_name(i)}.skipped.json", json.dumps(skipped))
            fd, tmp = tempfile.mkstemp(dir=out, prefix=_shard_name(i), suffix=".npy.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, arr)
                os.replace(tmp, out / f"{_shard_name(i)}.npy")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    bar.close()
    return ImageCache(out)
