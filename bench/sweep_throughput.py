"""Sweep throughput: one jit-compiled, vmapped call per chunk of sweep points vs a Python loop of points.

Workload: the caption_richness sweep (model M1 at the SPEC defaults, 11 richness values x 5 seeds,
all sampled learners), or --values/--seeds for a smaller one. Prints a table of total seconds
(compilation included) and sweep points per second (a point = one value and one seed) per backend.

    python bench/sweep_throughput.py [--values 11] [--seeds 5] [--learners a,b] [--skip-loop]
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory.datamodel import make_config
from mmcl_theory.evaluate import LEARNERS, evaluate_point
from mmcl_theory.learners import LearnerSettings


def vmapped(configs, seeds, learners, settings):
    """All values and seeds in one compiled call (the sweep CLI's path)."""
    stacked = jax.tree.map(lambda *xs: jnp.asarray(xs, jnp.float32), *configs)
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    per_seed = jax.vmap(lambda k, c: evaluate_point(k, c, settings, learners), in_axes=(0, None))
    run = jax.jit(jax.vmap(per_seed, in_axes=(None, 0)))
    return jax.block_until_ready(run(keys, stacked))


def python_loop(configs, seeds, learners, settings):
    """One jit-compiled point at a time (compiled once, called values x seeds times)."""
    run = jax.jit(lambda k, c: evaluate_point(k, c, settings, learners))
    out = [[run(jax.random.key(s), cfg) for s in range(seeds)] for cfg in configs]
    return jax.block_until_ready(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--values", type=int, default=11)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--learners", default=",".join(LEARNERS))
    ap.add_argument("--skip-loop", action="store_true", help="time only the vmapped path")
    args = ap.parse_args()
    learners = tuple(args.learners.split(","))
    settings = LearnerSettings()
    configs = [make_config("M1", r=float(r)) for r in np.linspace(0, 1, args.values)]
    points = args.values * args.seeds
    device = jax.devices()[0]
    print(f"# {platform.node()} | {jax.default_backend()} ({device.device_kind}) x{jax.device_count()} | "
          f"jax {jax.__version__} | {time.strftime('%Y-%m-%d')}")
    print(f"# workload: M1 defaults (n=200, d=2000, n_test=2000), {args.values} values x {args.seeds} seeds, "
          f"learners: {', '.join(learners)}")
    print(f"| path | points | total s (incl. compile) | points/s |")
    print(f"| --- | --- | --- | --- |")
    modes = [("vmap + jit (one call)", vmapped)] + ([] if args.skip_loop else [("python loop of jit points", python_loop)])
    for name, fn in modes:
        start = time.perf_counter()
        fn(configs, args.seeds, learners, settings)
        total = time.perf_counter() - start
        print(f"| {name} | {points} | {total:.1f} | {points / total:.2f} |", flush=True)


if __name__ == "__main__":
    main()
