"""Image cache: decode and resize once into one fixed-resolution uint8 .npy file, then read it memory-mapped.

Layout of ``out_dir``::

    manifest.json             resolution, crop_border, shard_size, count, sha256 of the image list
    images.npy                uint8 (N, R, R, 3), created full-size (sparse) before decoding starts
    shard_00000.done.json     marks rows [i*shard_size, (i+1)*shard_size) finished; holds the images
                              of that shard that failed to decode, [[row, path, reason], ...] (black rows)

The rows of a shard are filled in place (by worker processes writing through their own memory map),
flushed, and only then is the shard's marker written (temp file + rename). A killed build keeps
every marked shard and rewrites the unmarked ones on the next call; its worker processes die with it,
even on kill -9 (``_die_with_parent``). Reading is one fancy index into a single memory map,
``cache.images[indices]``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmcl_theory.io import atomic_write_json

from .errors import DataLayoutError, ImageDecodeError, Skip
from .images import decode_image

MANIFEST = "manifest.json"
IMAGES = "images.npy"
CHUNK = 256  # images per worker task


def _marker(out: Path, i: int) -> Path:
    return out / f"shard_{i:05d}.done.json"


def _read_marker(path: Path) -> list[list] | None:
    """The [[row, path, reason], ...] of a finished shard's marker, or None when it is unreadable."""
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(entries, list) and all(isinstance(e, list) and len(e) == 3 and isinstance(e[0], int)
                                           for e in entries)
    return entries if ok else None


def _read_manifest(path: Path) -> dict:
    keys = ("resolution", "count", "shard_size")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataLayoutError(f"{path}: unreadable cache manifest ({type(e).__name__}); delete the folder "
                              "and build the cache again") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), int) and manifest[k] >= 1 for k in keys):
        raise DataLayoutError(f"{path}: cache manifest without positive integers {', '.join(keys)}; delete the "
                              "folder and build the cache again")
    return manifest


class ImageCache:
    """A finished cache: ``len(cache)``, ``.images`` (np.memmap uint8 (N, R, R, 3), read-only),
    ``.get_batch(indices)``, ``.resolution``, and the undecodable images (black rows):
    ``.skipped`` [(path, reason)], ``.skipped_rows`` [row] in the same order, ``.unreadable_rows``
    (int64 (U,), sorted) and ``.readable`` (bool (N,), False on those rows), for the training loop to drop."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        mpath = self.dir / MANIFEST
        if not mpath.is_file():
            raise DataLayoutError(f"{self.dir}: not an image cache (expected {MANIFEST}; build it with build_cache)")
        self.manifest = _read_manifest(mpath)
        self.resolution, self.count, self.shard_size = (self.manifest[k] for k in ("resolution", "count", "shard_size"))
        n_shards = -(-self.count // self.shard_size)
        markers = [_read_marker(_marker(self.dir, i)) for i in range(n_shards)]
        missing = [i for i, m in enumerate(markers) if m is None]
        if missing:
            raise DataLayoutError(f"{self.dir}: cache incomplete, {len(missing)} of {n_shards} shards unfinished "
                                  f"(first {_marker(self.dir, missing[0]).name} missing or unreadable); "
                                  "run build_cache again to resume")
        try:
            self.images: np.memmap = np.load(self.dir / IMAGES, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataLayoutError(f"{self.dir / IMAGES}: unreadable cache images ({e}); delete the folder and "
                                  "build the cache again") from None
        if self.images.shape != (self.count, self.resolution, self.resolution, 3) or self.images.dtype != np.uint8:
            raise DataLayoutError(f"{self.dir / IMAGES}: shape {self.images.shape} {self.images.dtype} does not match "
                                  f"the manifest ({self.count}, {self.resolution}, {self.resolution}, 3) uint8")
        entries = sorted(e for m in markers for e in m)
        self.skipped: list[Skip] = [(path, reason) for _, path, reason in entries]
        self.skipped_rows: list[int] = [row for row, _, _ in entries]
        self.unreadable_rows = np.array(self.skipped_rows, np.int64)
        self.readable = np.ones(self.count, bool)
        self.readable[self.unreadable_rows] = False

    def __len__(self) -> int:
        return self.count

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, R, R, 3) rows at the given indices, in that order (a copy in memory)."""
        return np.asarray(self.images[np.asarray(indices, dtype=np.int64)])


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when ``parent`` (the builder) dies, however it dies.

    concurrent.futures workers otherwise outlive a builder killed with -9, blocked forever on their task queue
    (and with them multiprocessing's resource tracker). On Linux the kernel sends SIGKILL on the parent's death
    (prctl PR_SET_PDEATHSIG); elsewhere, or if prctl fails, a daemon thread polls os.getppid(). A parent that died
    before this ran is caught by the getppid check after the prctl."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                               ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _decode_into(npy_path: str, start: int, refs: list[str], resolution: int, crop_border: int) -> list[list]:
    """Decode refs into rows start.. of the .npy file (opened r+), flush; return [[row, ref, reason]] for
    the images that failed (their rows are set black). Runs in a worker process or inline."""
    arr = np.load(npy_path, mmap_mode="r+")
    skipped = []
    for j, ref in enumerate(refs):
        try:
            arr[start + j] = decode_image(ref, resolution, crop_border)
        except ImageDecodeError as e:
            arr[start + j] = 0
            skipped.append([start + j, ref, str(e).split(": ", 1)[1]])
    arr.flush()
    del arr
    return skipped


def build_cache(dataset_or_paths, out_dir: str | Path, resolution: int, workers: int = 2,
                shard_size: int = 4096, crop_border: int | None = None, progress: bool = True,
                folder_option: str = "out_dir") -> ImageCache:
    """Decode every image once (center crop + resize to ``resolution``) into ``out_dir``; resumable.

    dataset_or_paths: a dataset with ``.image_paths`` (and optionally ``.crop_border``) or a list of paths.
    Images that fail to decode become black rows listed in ``ImageCache.skipped``. ``workers`` > 1 decodes
    in that many spawned processes (safe next to JAX; threads do not scale, decoding holds the GIL).
    ``folder_option``: what the caller's user sets to choose ``out_dir`` (a CLI flag or config field), named in
    the errors about the folder (e.g. the training CLI's 'data.cache_dir').
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
    if out.exists() and not out.is_dir():
        raise DataLayoutError(f"{out}: the image cache folder is a file; move it away or set {folder_option} "
                              "to another folder")
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()
    manifest = {"format": 2, "resolution": int(resolution), "crop_border": int(crop_border),
                "shard_size": int(shard_size), "count": len(paths), "paths_sha256": digest}
    mpath = out / MANIFEST
    if mpath.is_file():
        old = _read_manifest(mpath)
        if old != manifest:
            diff = {k: (old.get(k), v) for k, v in manifest.items() if old.get(k) != v}
            raise DataLayoutError(f"{out}: holds a different image cache ({diff}); set {folder_option} to another "
                                  "folder or delete this one")
    for stale in [*out.glob("*.tmp"), *out.glob(".*.tmp*")]:  # partial files of a killed build
        stale.unlink()
    data = out / IMAGES
    if not (mpath.is_file() and data.is_file()):  # fresh start: no finished shard can be trusted
        for stale in out.glob("shard_*.done.json"):
            stale.unlink()
        tmp = out / f"{IMAGES}.tmp"
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                  shape=(len(paths), resolution, resolution, 3)).flush()
        os.replace(tmp, data)
        atomic_write_json(mpath, manifest)

    n_shards = -(-len(paths) // shard_size)
    todo = [i for i in range(n_shards) if _read_marker(_marker(out, i)) is None]  # missing or damaged
    tasks = [(i, lo, paths[lo: min(lo + CHUNK, (i + 1) * shard_size)])
             for i in todo for lo in range(i * shard_size, min((i + 1) * shard_size, len(paths)), CHUNK)]
    remaining = {i: sum(t[0] == i for t in tasks) for i in todo}
    skipped: dict[int, list] = {i: [] for i in todo}
    done_rows = len(paths) - sum(len(t[2]) for t in tasks)
    bar = tqdm(total=len(paths), initial=done_rows, unit="img", desc=f"cache {out.name}", disable=not progress)

    def finished(i: int, n: int, failed: list) -> None:
        bar.update(n)
        skipped[i] += failed
        remaining[i] -= 1
        if remaining[i] == 0:
            atomic_write_json(_marker(out, i), sorted(skipped[i]), indent=None)

    if workers == 1:
        for i, lo, refs in tasks:
            finished(i, len(refs), _decode_into(str(data), lo, refs, resolution, crop_border))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_decode_into, str(data), lo, refs, resolution, crop_border): (i, len(refs))
                       for i, lo, refs in tasks}
            for fut in as_completed(futures):
                finished(*futures[fut], fut.result())
    bar.close()
    return ImageCache(out)
