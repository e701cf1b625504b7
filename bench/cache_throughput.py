"""Image-cache throughput on Tiny ImageNet: images/s building the cache, batches/s reading it.

    python bench/cache_throughput.py [--root ../shared/data/tiny_imagenet] [--images 10000]
        [--resolution 64] [--workers 1 2] [--batch 256] [--out /tmp/mmcl_cache_bench] [--synthetic WxH]

Reads every file once to warm the page cache, then builds a fresh cache for each worker count (decode + center crop + resize from the JPEG files), then
reads random batches (uint8 (B, R, R, 3)) from the memory-mapped shards, and compares with decoding
the same batches straight from the files. Prints a table and writes it as JSON next to the cache.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mmcl_theory.clip.data import DataLayoutError, build_cache, load_eval_set, load_training_set, read_images
from mmcl_theory.config import ArgumentParser, option_type
from mmcl_theory.io import atomic_write_json, run_header

DEFAULT_ROOT = Path(os.environ.get("MMCL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "tiny_imagenet"


def synthetic_jpegs(folder: Path, count: int, size: str) -> list[str]:
    """count JPEG files of size WxH (smooth random colour fields, 64 distinct ones repeated)."""
    from PIL import Image

    w, h = (int(v) for v in size.lower().split("x"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bases = [Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
             for _ in range(64)]
    paths = []
    for i in range(count):
        path = folder / f"{i:07d}.jpg"
        if not path.is_file():
            bases[i % 64].save(path, quality=90)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python bench/cache_throughput.py", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--images", type=option_type("--images", int, 1, 10**8), default=10000,
                   help="number of images (train + val, in file order)")
    p.add_argument("--resolution", type=option_type("--resolution", int, 1, 4096), default=64)
    p.add_argument("--workers", type=option_type("--workers", int, 1, 256), nargs="+", default=[1, 2])
    p.add_argument("--batch", type=option_type("--batch", int, 1, 10**6), default=256)
    p.add_argument("--read-seconds", type=option_type("--read-seconds", float, 0.1, 3600), default=3.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/mmcl_cache_bench"))
    p.add_argument("--synthetic", metavar="WxH", help="no dataset: write --images smooth random JPEGs of this size "
                   "(e.g. 64x64, 500x375) under --out and use them instead of Tiny ImageNet")
    args = p.parse_args(argv)
    try:
        if args.synthetic:
            w, _, h = args.synthetic.lower().partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise ValueError(f"--synthetic = {args.synthetic!r} is not allowed: WxH in pixels, e.g. 64x64")
            paths, source = synthetic_jpegs(args.out / f"jpeg_{args.synthetic}", args.images, args.synthetic), \
                f"synthetic {args.synthetic} JPEGs"
        else:
            train = load_training_set("tiny_imagenet", args.root)
            val = load_eval_set("tiny_imagenet", args.root)
            paths, source = (train.image_paths + val.image_paths)[: args.images], "Tiny ImageNet"
    except (DataLayoutError, ValueError, OSError) as e:
        print(f"error: {e} (pass --root DIR of Tiny ImageNet, or --synthetic WxH)", file=sys.stderr)
        return 2
    for path in paths:  # warm the page cache, so every configuration reads the files from memory
        Path(path).read_bytes()
    rows = []
    rng = np.random.default_rng(0)
    for w in args.workers:
        out = args.out / f"r{args.resolution}_w{w}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        cache = build_cache(paths, out, args.resolution, workers=w, progress=False)
        build_s = time.perf_counter() - t0
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.read_seconds:
            cache.get_batch(rng.integers(0, len(cache), args.batch))
            n += 1
        read_bps = n / (time.perf_counter() - t0)
        rows.append({"workers": w, "images": len(paths), "build_images_per_s": len(paths) / build_s,
                     "cache_batches_per_s": read_bps, "cache_images_per_s": read_bps * args.batch})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.read_seconds:
        read_images([paths[i] for i in rng.integers(0, len(paths), args.batch)], args.resolution)
        n += 1
    decode_bps = n / (time.perf_counter() - t0)

    info = {"run": run_header({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}),
            "machine": platform.node(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "source": source, "resolution": args.resolution, "batch": args.batch, "decode_from_files_batches_per_s": decode_bps,
            "rows": rows}
    print(f"cache throughput, {source}, {len(paths)} images -> {args.resolution}px, batch {args.batch}; "
          f"{info['cpu_count']} CPUs, {info['run']['date']}")
    print(f"{'workers':>7} | {'build img/s':>11} | {'read batches/s':>14} | {'read img/s':>11}")
    for r in rows:
        print(f"{r['workers']:>7} | {r['build_images_per_s']:>11.0f} | {r['cache_batches_per_s']:>14.1f} | "
              f"{r['cache_images_per_s']:>11.0f}")
    print(f"decoding the same batches from the JPEG files: {decode_bps:.1f} batches/s "
          f"({decode_bps * args.batch:.0f} img/s)")
    atomic_write_json(args.out / "cache_throughput.json", info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
