"""Inspection CLI: ``python -m mmcl_theory.clip.data check NAME --root PATH [--json]``.

Reports the sample count, classes, caption statistics and the inputs skipped with their reasons.
A wrong root, layout or option prints one line to stderr and exits with status 2; options are parsed
by the type the loader declares (``--option per_class=5``, ``--option captions_only=true``).
"""

from __future__ import annotations

import json
import sys
import typing
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmcl_theory.config import ArgumentParser, ConfigError, check_choice, check_range, parse_value
from mmcl_theory.runtime import error_exit

from .errors import DataLayoutError
from .eval_sets import EVAL_SETS, load_eval_set
from .eval_sets import LOADERS as EVAL_LOADERS
from .images import verify_image
from .training_sets import LOADERS as TRAINING_LOADERS
from .training_sets import TRAINING_SETS, load_training_set, loader_options


def _loader(name: str, kind: str):
    loaders = TRAINING_LOADERS if kind == "train" else EVAL_LOADERS
    if name not in loaders:
        names = TRAINING_SETS if kind == "train" else EVAL_SETS
        raise ConfigError(f"{name!r} is not {'a training' if kind == 'train' else 'an evaluation'} set: "
                          f"allowed {', '.join(names)}")
    return loaders[name]


def parse_options(name: str, kind: str, pairs: list[str]) -> dict:
    """``--option KEY=VALUE`` items -> {key: value}, each parsed by the type the loader declares for it
    (mmcl_theory.config.parse_value: an int option must be an integer, a bool true/false, a tuple a
    TOML list; a path is taken as written). An unknown key lists the loader's options."""
    types = loader_options(_loader(name, kind))
    out = {}
    for item in pairs:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--option {item!r} must look like KEY=VALUE")
        if key not in types:
            raise ConfigError(f"--option {key!r} is not an option of {name}: allowed {', '.join(types) or 'none'}")
        kind_of = types[key]
        if Path in typing.get_args(kind_of):
            kind_of = str
        out[key] = parse_value(f"--option {key}", text, kind_of)
    return out


def _text_stats(texts: list[str]) -> dict:
    words = np.array([len(t.split()) for t in texts]) if texts else np.zeros(0, int)
    return {"count": len(texts), "unique": len(set(texts)), "empty": int(sum(not t.strip() for t in texts)),
            "words_mean": round(float(words.mean()), 2) if len(words) else 0.0,
            "words_min": int(words.min()) if len(words) else 0, "words_max": int(words.max()) if len(words) else 0,
            "examples": texts[:3]}


def check(name: str, root: str, kind: str | None = None, options: dict | None = None, verify: bool = False,
          workers: int = 2, list_skipped: int = 20) -> dict:
    """The inspection report (a JSON-able dict) of one training or evaluation set."""
    options = options or {}
    if kind is None:
        kind = "train" if name in TRAINING_SETS else "eval"
    check_choice("", "--kind", kind, ("train", "eval"))
    check_range("", "--workers", workers, 1, 256, integer=True)
    if not str(root).strip():
        raise ConfigError(f"--root {str(root)!r} is not allowed: the dataset's folder or file (not the working folder "
                          "by default)")
    ds = load_training_set(name, root, **options) if kind == "train" else load_eval_set(name, root, **options)
    skipped = list(ds.skipped)
    paths = ds.image_paths or []
    if verify and paths:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            skipped += [(p, f"undecodable image ({r})") for p, r in zip(paths, pool.map(verify_image, paths)) if r]
    report = {"name": name, "kind": kind, "root": str(root), "samples": len(ds), "images_verified": bool(verify and paths)}
    if ds.classnames is not None:
        counts = np.bincount(ds.labels, minlength=len(ds.classnames)) if ds.labels is not None else None
        report["classes"] = {"count": len(ds.classnames), "first": ds.classnames[:5],
                             "present": int((counts > 0).sum()) if counts is not None else None,
                             "per_class_min": int(counts.min()) if counts is not None and len(counts) else None,
                             "per_class_max": int(counts.max()) if counts is not None and len(counts) else None}
    if kind == "eval":
        report["class_subset"] = None if ds.class_subset is None else len(ds.class_subset)
        report["multi_label_hit_sets"] = ds.hit_sets is not None
        report["crop_border"] = ds.crop_border
    else:
        report["captions"] = _text_stats(ds.texts("caption")) if (ds.captions is not None or len(ds) <= 2000) else \
            {"note": "captions computed from images ('rich'); use --option per_class=K to inspect a subset"}
        report["label_texts"] = _text_stats(ds.texts("label"))
    reasons = Counter(r for _, r in skipped)
    report["skipped"] = {"count": len(skipped), "by_reason": dict(reasons.most_common()),
                         "entries": [list(s) for s in skipped[:list_skipped]]}
    return report


def _print_text(r: dict) -> None:
    print(f"{r['name']} ({r['kind']}) at {r['root']}")
    print(f"  samples: {r['samples']}")
    if "classes" in r:
        c = r["classes"]
        print(f"  classes: {c['count']} ({', '.join(c['first'])}, ...); present {c['present']}, "
              f"per class {c['per_class_min']}..{c['per_class_max']}")
    for key in ("class_subset", "multi_label_hit_sets", "crop_border"):
        if key in r:
            print(f"  {key}: {r[key]}")
    for key in ("captions", "label_texts"):
        if key in r:
            s = r[key]
            if "note" in s:
                print(f"  {key}: {s['note']}")
            else:
                print(f"  {key}: {s['count']} ({s['unique']} unique, {s['empty']} empty), words mean {s['words_mean']} "
                      f"min {s['words_min']} max {s['words_max']}; e.g. {s['examples'][:2]}")
    sk = r["skipped"]
    print(f"  skipped: {sk['count']}" + ("" if r["images_verified"] else " (images not decoded; add --verify)"))
    for reason, n in sk["by_reason"].items():
        print(f"    {n:7d}  {reason}")
    for where, reason in sk["entries"]:
        print(f"    {where}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m mmcl_theory.clip.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="inspect one dataset")
    p.add_argument("name", choices=sorted(set(TRAINING_SETS) | set(EVAL_SETS)))
    p.add_argument("--root", required=True, help="dataset root path")
    p.add_argument("--kind", choices=("train", "eval"), help="training or evaluation loader (default: train if the name is a training set)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="loader option, e.g. split=val")
    p.add_argument("--verify", action="store_true", help="decode every image and report undecodable ones")
    p.add_argument("--workers", type=int, default=2, help="threads decoding images with --verify (>= 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(errors="backslashreplace")  # file names that are not UTF-8 still print
    try:
        kind = args.kind or ("train" if args.name in TRAINING_SETS else "eval")
        report = check(args.name, args.root, kind, parse_options(args.name, kind, args.option), args.verify,
                       args.workers)
    except (DataLayoutError, ValueError, OSError) as e:  # ConfigError and ImageDecodeError are ValueErrors
        return error_exit(e)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
