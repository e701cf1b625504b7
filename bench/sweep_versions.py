"""The sweep's wall time at two or more commits, in the same run: the default sweep cold and warm, and the
temperature sweep (quick) without a compile cache.

Each commit is checked out into a temporary git worktree and run with this interpreter (the package is imported
from the worktree: `python -m` puts it first on sys.path), one process at a time, the commits interleaved so
that a change of the machine's load falls on all of them:
  - `python -m mmcl_theory.sweep caption_richness`: cold (an empty XDG_CACHE_HOME, so jax's persistent
    compilation cache starts empty) and warm (the same cache again);
  - `python -m mmcl_theory.sweep temperature --quick --no-compile-cache`: every value of the temperature compiled
    in the process (the sweep over a static temperature compiles a program per value).
Prints a Markdown table: seconds per commit and round, and each commit's mean against the first commit's.

    python bench/sweep_versions.py [--commits e1ec95b HEAD] [--rounds 2]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name -> sweep arguments; run in this order, cold and warm on one cache
    "default, cold": ["caption_richness"],
    "default, warm": ["caption_richness"],
    "temperature --quick, no cache": ["temperature", "--quick", "--no-compile-cache"],
}


def timed(tree: Path, args: list[str], cache: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmcl_theory.sweep", *args, "--no-progress", "--out", str(out)], cwd=tree,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cache)})
    return time.perf_counter() - start


def main() -> None:
    from mmcl_theory.config import ArgumentParser, option_type

    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", nargs="+", default=["e1ec95b", "HEAD"])
    ap.add_argument("--rounds", type=option_type("--rounds", int, 1, 100), default=2)
    args = ap.parse_args()
    for commit in args.commits:
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if found.returncode:
            ap.error(f"--commits: {commit!r} is not a commit of this repository")
    seconds: dict = {(c, r): [] for c in args.commits for r in RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {}
        for i, commit in enumerate(args.commits):
            trees[commit] = tmp / f"tree{i}"
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[commit]), commit], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for k in range(args.rounds):
                for commit, tree in trees.items():
                    cache = tmp / f"cache-{commit}-{k}"
                    for j, (run, sweep_args) in enumerate(RUNS.items()):  # a fresh output folder each (no resume)
                        seconds[commit, run].append(timed(tree, sweep_args, cache, tmp / f"out-{commit}-{k}-{j}"))
                        print(f"{commit} round {k}: {run} {seconds[commit, run][-1]:.1f} s", file=sys.stderr,
                              flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    first = args.commits[0]
    print("| run | " + " | ".join(f"{c} s" for c in args.commits) + " | " +
          " | ".join(f"{c} / {first}" for c in args.commits[1:]) + " |")
    print("| --- |" + " --- |" * (2 * len(args.commits) - 1))
    for run in RUNS:
        means = {c: statistics.mean(seconds[c, run]) for c in args.commits}
        cells = [" / ".join(f"{s:.1f}" for s in seconds[c, run]) for c in args.commits]
        print(f"| {run} | " + " | ".join(cells) + " | " +
              " | ".join(f"{means[c] / means[first]:.2f}" for c in args.commits[1:]) + " |")


if __name__ == "__main__":
    main()
