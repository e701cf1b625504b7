"""`python -m paper_checks [--quick] [--only IDS] [--out PATH] [--strict]`: run the checks, write the report.

Exit code: 0 when every check ran (the verdicts, pass or fail, are in the report); 1 when a check
crashed (its record says so), or, with --strict, when a verdict is fail; 2 for bad input.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mmcl_theory.config import ArgumentParser
from mmcl_theory.io import atomic_write_text
from mmcl_theory.runtime import error_exit

from .checks import CHECKS
from .common import CRASHED, FAIL
from .report import render, run_all


def default_out(quick: bool) -> Path:
    """paper_checks/REPORT.md when run from the repository root; runs/paper_checks/ otherwise and for --quick."""
    if not quick and Path("paper_checks/checks.py").is_file():
        return Path("paper_checks/REPORT.md")
    return Path("runs/paper_checks") / ("REPORT-quick.md" if quick else "REPORT.md")


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m paper_checks", description=__doc__.split("\n")[0],
                        epilog="The claims and their expectations: docs/claims.md.")
    ap.add_argument("--quick", action="store_true", help="smaller n and fewer seeds (the CI variant)")
    ap.add_argument("--only", help=f"comma-separated check ids (default: all of {', '.join(CHECKS)})")
    ap.add_argument("--out", type=Path, help="report path (default paper_checks/REPORT.md from the repository "
                                             "root, else runs/paper_checks/REPORT.md; --quick: "
                                             "runs/paper_checks/REPORT-quick.md)")
    ap.add_argument("--resume", type=Path, metavar="DIR",
                    help="save each finished check in DIR and reuse checks already saved there (same version, mode)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any verdict is fail")
    args = ap.parse_args(argv)
    only = [c.strip() for c in args.only.split(",")] if args.only else None
    bad = [c for c in only or [] if c not in CHECKS]
    if bad:
        return error_exit(f"unknown check id(s) {', '.join(bad)}: known {', '.join(CHECKS)}")
    out = args.out or default_out(args.quick)
    for path, what in ((args.resume, "--resume"), (out.parent, "--out's folder")):
        if path is not None and path.exists() and not path.is_dir():
            return error_exit(f"{what} {path} is a file: give a folder")
    if out.is_dir():
        return error_exit(f"--out {out} is a folder: give the report's file path")
    from mmcl_theory.runtime import setup_jax

    setup_jax("cpu")
    start = time.perf_counter()
    records = run_all(args.quick, only, resume_dir=args.resume)
    text = render(records, args.quick, time.perf_counter() - start)
    try:
        atomic_write_text(out, text)
    except OSError as e:
        return error_exit(f"cannot write the report to {out}: {e.strerror or e}")
    print(f"wrote {out}")
    for r in records:
        print(f"{r.id:3s} {r.verdict:8s} {r.seconds:6.1f} s  {r.measured[:110]}")
    if any(r.verdict == CRASHED for r in records):
        return 1
    return 1 if args.strict and any(r.verdict == FAIL for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
