"""Tiny ImageNet 'label' vs 'rich' caption experiment: train both variants, evaluate every kept
checkpoint, gather one CSV.

    python real_data/tiny_imagenet_experiment.py --data-root ../shared/data --runs runs/tiny \\
        --out real_data/results/tiny_imagenet [--seeds 0 1] [--set train.steps=3000 ...]

For each (variant, seed) it runs ``real_data/tiny_imagenet_<variant>.toml`` in
RUNS/<variant>_s<seed> (resuming if present) with the data roots pointed at DATA_ROOT/tiny_imagenet
and DATA_ROOT/texture_vs_shape. The periodic evaluation inside training writes the per-checkpoint
JSONs; at the end ``evaluate build`` writes OUT/tiny_imagenet_results.csv, the training metrics are
copied to OUT/metrics_<variant>_s<seed>.jsonl and the per-checkpoint JSONs to OUT/eval_jsons.tar.gz.
Then draw the figure with ``python -m mmcl_theory.clip.robustness series --results ...`` (README).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import time
from pathlib import Path

from mmcl_theory.clip import evaluate, train
from mmcl_theory.config import ArgumentParser, option_type
from mmcl_theory.runtime import error_exit

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding tiny_imagenet/ and texture_vs_shape/")
    p.add_argument("--runs", required=True, help="folder for the training workdirs")
    p.add_argument("--out", required=True, help="folder for the CSV, metrics and eval JSON archive")
    p.add_argument("--variants", nargs="+", default=["label", "rich"], choices=("label", "rich"))
    p.add_argument("--seeds", type=option_type("--seeds", int, 0, 2**31 - 1), nargs="+", default=[0])
    p.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    p.add_argument("--time-budget", type=option_type("--time-budget", float, 0, 10**9), default=0,
                   help="seconds; skip runs not started by then (0 = none)")
    a = p.parse_args(argv)
    if not (Path(a.data_root) / "tiny_imagenet" / "wnids.txt").is_file():
        return error_exit(f"--data-root {a.data_root}: expected tiny_imagenet/wnids.txt under it")
    try:
        return run(a)
    except OSError as e:  # --runs or --out a file, or under one; a failed write: one line naming it
        why = "is a file, not a folder" if isinstance(e, FileExistsError) else (e.strerror or str(e))
        return error_exit(f"{e.filename}: {why}" if e.filename else e)
    except ValueError as e:  # a bad --set (ConfigError) or data layout (DataLayoutError)
        return error_exit(e)


def run(a: argparse.Namespace) -> int:
    data = Path(a.data_root).resolve()
    tvs = data / "texture_vs_shape"
    runs, out = Path(a.runs), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    start, done = time.time(), []
    for seed in a.seeds:
        for variant in a.variants:
            if a.time_budget and time.time() - start > a.time_budget:
                print(f"time budget reached: skipping {variant} seed {seed}", file=sys.stderr)
                continue
            overrides = [f"data.root='{data / 'tiny_imagenet'}'", f"eval.root='{data / 'tiny_imagenet'}'",
                         f"eval.roots={{texture_vs_shape_edges='{tvs}', texture_vs_shape_silhouettes='{tvs}'}}",
                         f"train.seed={seed}"] + a.set
            cfg = train.load_config(HERE / f"tiny_imagenet_{variant}.toml", overrides)
            work = runs / f"{variant}_s{seed}"
            t0 = time.time()
            result = train.train(cfg, work, progress=False)
            print(f"{variant} seed {seed}: {result['step']} steps in {time.time() - t0:.0f} s, "
                  f"last {result['last_metrics']}", flush=True)
            shutil.copy(work / "metrics.jsonl", out / f"metrics_{variant}_s{seed}.jsonl")
            done.append(work)
            gather(done, out)  # after every run, so a cut-off job still leaves its results
    return 0


def gather(done: list[Path], out: Path) -> None:
    """OUT/tiny_imagenet_results.csv and OUT/eval_jsons.tar.gz (eval JSONs + run.json) of the runs."""
    n = evaluate.build_csv(done, out / "tiny_imagenet_results.csv")
    tmp = out / ".eval_jsons.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for work in done:
            tar.add(work / "eval", arcname=f"{work.name}/eval")
            tar.add(work / "run.json", arcname=f"{work.name}/run.json")
    tmp.replace(out / "eval_jsons.tar.gz")
    print(f"{n} result rows from {len(done)} runs -> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
