"""`python -m paper_checks [--quick] [--only IDS] [--seed-offset K] [--out PATH] [--resume DIR] [--strict]`: run the checks, write the report.

A full run of every check with the committed seed set writes paper_checks/REPORT.md and saves each check's record
(with the hash of its inputs) in paper_checks/records/; `--resume paper_checks/records` then reruns only the checks
whose inputs changed. `--seed-offset K` draws seeds K, K+1, ... instead (its report goes to runs/paper_checks/).

Exit code: 0 when every check ran (the verdicts, pass or fail, are in the report); 1 when a check
crashed (its record says so), or, with --strict, when a verdict is fail; 2 for bad input, including an
output folder (--out's, --resume) that cannot be written: checked before any check runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from mmcl_theory.config import ArgumentParser
from mmcl_theory.io import atomic_write_text
from mmcl_theory.runtime import error_exit

from .checks import CHECKS
from .common import CRASHED, FAIL, set_seed_offset
from .report import SaveError, command_line, render, run_all

RECORDS = Path("paper_checks/records")  # the committed report's saved checks (relative to the repository root)


def writable_folder(folder: Path) -> str:
    """'' when ``folder`` exists or can be created and a file can be written in it (probed with a temporary file,
    removed again); else why not (the OS's reason)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.strerror or str(e)
    return ""


def default_out(quick: bool, partial: bool = False, offset: int = 0) -> Path:
    """paper_checks/REPORT.md for a full run from the repository root; runs/paper_checks/ otherwise, for --quick,
    for --only and for another seed set (a report of some checks, or of other seeds, never replaces the committed
    report)."""
    if not quick and not partial and not offset and Path("paper_checks/checks.py").is_file():
        return Path("paper_checks/REPORT.md")
    return Path("runs/paper_checks") / ((f"REPORT-seeds-{offset}" if offset else "REPORT")
                                        + ("-quick" if quick else "") + ".md")


def _offset(text: str) -> int:
    """argparse type of --seed-offset: an integer in [0, 1000000]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: an integer in [0, 1000000]")
    return value


def _path(text: str) -> Path:
    """argparse type of --out and --resume: a non-empty path ('' would silently mean the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a path")
    return Path(text)


def parse_only(text: str | None) -> list[str] | None:
    """--only's ids in order, each once; None (all checks) when not given. ValueError naming what is wrong."""
    if text is None:
        return None
    ids = list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    if not ids:
        raise ValueError(f"--only {text!r} names no check: comma-separated ids from {', '.join(CHECKS)}")
    bad = [c for c in ids if c not in CHECKS]
    if bad:
        raise ValueError(f"unknown check id(s) {', '.join(bad)}: known {', '.join(CHECKS)}")
    return ids


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m paper_checks", description=__doc__.split("\n")[0],
                        epilog="The claims and their expectations: docs/claims.md.")
    ap.add_argument("--quick", action="store_true", help="smaller n and fewer seeds (the CI variant)")
    ap.add_argument("--only", metavar="IDS", help=f"comma-separated check ids (default: all of {', '.join(CHECKS)})")
    ap.add_argument("--out", type=_path, help="report path (default paper_checks/REPORT.md for all checks from the "
                                              "repository root, else runs/paper_checks/REPORT.md; --quick: "
                                              "runs/paper_checks/REPORT-quick.md)")
    ap.add_argument("--resume", type=_path, metavar="DIR",
                    help="save each finished check in DIR and reuse checks already saved there (same version, mode, "
                         "seed offset and inputs hash); paper_checks/records holds the committed report's")
    ap.add_argument("--seed-offset", type=_offset, default=0, metavar="K",
                    help="draw seeds K, K+1, ... instead of 0, 1, ... (a disjoint seed set when K >= 20, the most seeds a "
                         "check draws; default 0)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any verdict is fail")
    args = ap.parse_args(argv)
    try:
        only = parse_only(args.only)
    except ValueError as e:
        return error_exit(e)
    out = args.out or default_out(args.quick, only is not None, args.seed_offset)
    committed = out.resolve() == Path("paper_checks/REPORT.md").resolve()
    if committed and (args.quick or only is not None or args.seed_offset):
        return error_exit(f"--out {out} is the committed report: it holds every check, full mode, seed offset 0")
    save_dirs = [RECORDS] if committed else []
    for path, what in ((args.resume, "--resume"), (out.parent, "--out's folder")):
        if path is not None and path.exists() and not path.is_dir():
            return error_exit(f"{what} {path} is a file: give a folder")
    if out.is_dir():
        return error_exit(f"--out {out} is a folder: give the report's file path")
    if out.exists() and not out.is_file():  # the atomic write would replace a device, FIFO or socket by a file
        return error_exit(f"--out {out} is not a regular file (a device, FIFO or socket): give the report's file path")
    for path, what in ((args.resume, "--resume folder"), (out.parent, "--out's folder"),
                       (save_dirs[0] if save_dirs else None, "records folder")):
        why = writable_folder(path) if path is not None else ""
        if why:
            return error_exit(f"cannot write in the {what} {path}: {why}")
    from mmcl_theory.runtime import setup_jax

    setup_jax("cpu")
    set_seed_offset(args.seed_offset)
    start = time.perf_counter()
    meta: dict = {}
    try:
        records = run_all(args.quick, only, resume_dir=args.resume, save_dirs=save_dirs, meta=meta)
    except SaveError as e:
        return error_exit(e)
    command = command_line(args.quick, only, args.resume, args.seed_offset)
    text = render(records, args.quick, time.perf_counter() - start, only, meta, command)
    try:
        atomic_write_text(out, text)
    except OSError as e:
        return error_exit(f"cannot write the report to {out}: {e.strerror or e}")
    print(f"wrote {out}")
    for r in records:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        print(f"{r.id:4s} {r.verdict:8s} ratio {ratio:>6s} {r.seconds:7.1f} s  {r.measured[:100]}")
    if any(r.verdict == CRASHED for r in records):
        return 1
    return 1 if args.strict and any(r.verdict == FAIL for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
