"""Time of the staleness check: `provenance.status` of each committed figure CSV and the inputs hash of each paper
check, with a module's parts cut from its lines split once (provenance.source_segment, today) and with
ast.get_source_segment, which splits the whole file at every call (before 2026-12-07).

    python bench/provenance_status.py [--repeat 1]

Prints a table (seconds per artifact, before and after, and whether the two give the same hash) and the totals.
Run from the repository root.
"""

from __future__ import annotations

import ast
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # paper_checks/ sits at the repository root

from mmcl_theory import provenance as P  # noqa: E402
from mmcl_theory.config import ArgumentParser  # noqa: E402
from paper_checks import CHECKS  # noqa: E402
from paper_checks.inputs import check_inputs  # noqa: E402


def get_source_segment_each_call(lines: list[str], node: ast.AST) -> str:
    """The 'before': ast.get_source_segment on the whole text, split again at every call."""
    return ast.get_source_segment("".join(lines), node) or ""


def timed(fn, repeat: int) -> tuple[float, str]:
    """(best seconds over `repeat` calls, the hash it gives); each call with a fresh Tree (no cache)."""
    best, out = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python bench/provenance_status.py", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1, help="calls per artifact and method; the best is kept")
    args = ap.parse_args(argv)
    jobs = [(a, lambda a=a: P.status(a).current or "") for a in P.figure_artifacts()]
    jobs += [(f"check {c}", lambda c=c: check_inputs(c, P.Tree())["source_hash"]) for c in CHECKS]
    after_segment = P.source_segment
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| artifact | before s | after s | same hash |")
    print("| --- | --- | --- | --- |")
    totals = [0.0, 0.0]
    for name, fn in jobs:
        P.source_segment = get_source_segment_each_call
        before, h_before = timed(fn, args.repeat)
        P.source_segment = after_segment
        after, h_after = timed(fn, args.repeat)
        totals[0] += before
        totals[1] += after
        print(f"| {name} | {before:.2f} | {after:.2f} | {'yes' if h_before == h_after else 'NO'} |")
    print(f"| total | {totals[0]:.1f} | {totals[1]:.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
