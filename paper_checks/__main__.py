"""`python -m paper_checks [--quick] [--only IDS] [--out PATH]`: run the checks, write REPORT.md."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .checks import CHECKS
from .report import render, run_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paper_checks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller n and fewer seeds (CI, about a minute)")
    ap.add_argument("--only", help=f"comma-separated check ids (default: all of {', '.join(CHECKS)})")
    ap.add_argument("--out", type=Path, help="report path (default paper_checks/REPORT.md; "
                                             "paper_checks/REPORT-quick.md with --quick)")
    ap.add_argument("--resume", type=Path, metavar="DIR",
                    help="save each finished check in DIR and reuse checks already saved there (same version, mode)")
    args = ap.parse_args(argv)
    only = [c.strip() for c in args.only.split(",")] if args.only else None
    bad = [c for c in only or [] if c not in CHECKS]
    if bad:
        print(f"error: unknown check id(s) {', '.join(bad)}: known {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    import jax

    jax.config.update("jax_platforms", "cpu")
    start = time.perf_counter()
    records = run_all(args.quick, only, resume_dir=args.resume)
    text = render(records, args.quick, time.perf_counter() - start)
    here = Path(__file__).resolve().parent
    out = args.out or here / ("REPORT-quick.md" if args.quick else "REPORT.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print(f"wrote {out}")
    for r in records:
        print(f"{r.id:3s} {r.verdict:8s} {r.seconds:6.1f} s  {r.measured[:110]}")
    return 1 if any(r.verdict == "fail" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
