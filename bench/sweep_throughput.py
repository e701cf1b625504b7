"""Sweep throughput: what `python -m mmcl_theory.sweep caption_richness` spends its time on.

Times exactly what the sweep runs (models.evaluate_grid, through the CLI for end-to-end numbers)
and prints Markdown tables:
1. end to end, cold (empty compilation cache) and warm (cache filled), default sweep, exact route;
   and the sampled route (d-dimensional test sets) in the same run, for the ratio;
2. points/s (a point = one sweep value and one seed) at 5 and at 100 seeds, after compilation;
3. seconds per stage for one sweep value: imports, tracing, compile, training-set sampling, each
   learner's training, scoring (evaluation minus training), outputs;
4. the floor of each learner's training: its steps x towers x (forward X W^T + weight gradient
   delta^T X), the products with the (n, d) data that every step must do, timed on this machine at
   the learner's own width w (4 n d w FLOPs a tower a step); the sweep's floor against its measured
   training. (XLA's cost analysis is not used: it counts a lax.scan body once.)

    python bench/sweep_throughput.py [--skip-e2e] [--seeds-large 100] [--values-large 2] [--device cpu|gpu]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time


def end_to_end(route: str, cache: str, out: str, device: str) -> float:
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmcl_theory.sweep", "caption_richness", "--out", out, "--route", route,
                    "--no-progress", "--device", device], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    from mmcl_theory.config import ArgumentParser, option_type

    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end CLI runs")
    ap.add_argument("--seeds-large", type=option_type("--seeds-large", int, 1, 10**4), default=100)
    ap.add_argument("--values-large", type=option_type("--values-large", int, 1, 10**4), default=2,
                    help="sweep values timed at --seeds-large seeds")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    from mmcl_theory import grid as G
    from mmcl_theory.learners import learner_key
    from mmcl_theory.models import evaluate_grid, get_model
    from mmcl_theory.runtime import setup_jax
    from mmcl_theory.sweep import make_plan

    setup_jax(args.device, compile_cache=False)
    imports = time.perf_counter() - t0
    plan = make_plan("caption_richness")
    settings = plan.points[0].settings
    configs = [p.config for p in plan.points]
    records = get_model(plan.model).records(plan.learners)
    learners = tuple(l.name for l in records if l.fit is not None)  # trained and closed-form, no theory rows
    load = os.getloadavg()
    dev = jax.devices()[0]
    print(f"# {platform.node()} | {platform.processor() or platform.machine()} x{os.cpu_count()} | "
          f"{jax.default_backend()} ({dev.device_kind}) | jax {jax.__version__} | "
          f"{time.strftime('%Y-%m-%d %H:%M')} | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# workload: caption_richness, M1 defaults (n={configs[0].n}, d={configs[0].d}), "
          f"{len(configs)} values x {len(plan.seeds)} seeds, learners: {', '.join(plan.learners)}\n")

    if not args.skip_e2e:
        print("| end to end (CLI) | route | seconds |\n| --- | --- | --- |")
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "cache")
            cold = end_to_end("exact", cache, os.path.join(tmp, "a"), args.device)
            warm = end_to_end("exact", cache, os.path.join(tmp, "b"), args.device)
            sampled = end_to_end("sampled", cache, os.path.join(tmp, "c"), args.device)
        print(f"| cold (empty compile cache) | exact | {cold:.1f} |\n| warm (cache filled) | exact | {warm:.1f} |\n"
              f"| warm | sampled (d-dim test sets) | {sampled:.1f} |\n| ratio sampled / exact, warm | | "
              f"{sampled / warm:.2f} |\n", flush=True)

    # points/s after compilation: the sweep's own call, exact and sampled routes
    print("| route | seeds | values | seconds (compiled) | points/s |\n| --- | --- | --- | --- | --- |")
    for route in ("exact", "sampled"):
        for n_seeds, values in ((5, configs), (args.seeds_large, configs[:args.values_large])):
            seeds = list(range(n_seeds))
            evaluate_grid(configs[:1], seeds, learners, settings, route)  # compile
            start = time.perf_counter()
            evaluate_grid(values, seeds, learners, settings, route)
            sec = time.perf_counter() - start
            print(f"| {route} | {n_seeds} | {len(values)} | {sec:.1f} | {len(values) * n_seeds / sec:.2f} |", flush=True)

    # stages of one value (5 seeds), each learner alone
    cfg, seeds = configs[-1], jnp.asarray(list(plan.seeds))  # the seeds as the grid maps them
    model = get_model("M1")

    def timed(fn, *a):
        start = time.perf_counter()
        jax.block_until_ready(fn(*a))
        return time.perf_counter() - start

    def sample(seeds, cfg):
        return jax.lax.map(lambda s: model.sample(cfg, s).train, seeds)  # the tests are unused: XLA drops them

    sample_jit = jax.jit(sample)
    timed(sample_jit, seeds, cfg)
    stages = [("imports (jax, package)", imports), ("training-set sampling", timed(sample_jit, seeds, cfg))]
    train_s = {}
    print("\n| learner | tracing s | compile s | training s | scoring s |\n| --- | --- | --- | --- | --- |")
    for learner in (l for l in records if l.fit is not None):
        def train_only(seeds, cfg, learner=learner):
            def one(s):
                smp = model.sample(cfg, s)
                return learner.fit(learner_key(smp.fit_key, learner.name), smp.train, settings)
            return jax.lax.map(one, seeds)  # seeds one after another, as the grid's compiled point runs them

        full = G._mapped(model, (learner,), "exact")
        start = time.perf_counter()
        lowered = full.lower(seeds, cfg, settings)
        tracing = time.perf_counter() - start
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        train_c = jax.jit(train_only).lower(seeds, cfg).compile()
        timed(train_c, seeds, cfg)
        t_train = max(timed(train_c, seeds, cfg) - stages[1][1], 0.0)
        t_full = timed(compiled, seeds, cfg, settings)
        t_score = max(t_full - t_train - stages[1][1], 0.0)
        train_s[learner.name] = t_train
        stages += [(f"{learner.name}: tracing", tracing), (f"{learner.name}: compile", compile_s),
                   (f"{learner.name}: training", t_train), (f"{learner.name}: scoring", t_score)]
        print(f"| {learner.name} | {tracing:.2f} | {compile_s:.2f} | {t_train:.2f} | {t_score:.2f} |", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path

        from mmcl_theory.plotting import plot_sweep
        from mmcl_theory.sweep import write_results

        rows = [{"sweep": plan.name, "model": "M1", "param": "r", "value": p.value, "series": "", **r}
                for p, rs in zip(plan.points[:1], evaluate_grid(configs[:1], seeds, ("theory_mmcl",), settings))
                for r in rs]
        write_results(rows, plan, Path(tmp), 0.0)
        plot_sweep(rows, Path(tmp) / "x.png", "bench")
    stages.append(("outputs (CSV, JSON, figure)", time.perf_counter() - start))

    print("\n| stage (one value, 5 seeds) | seconds |\n| --- | --- |")
    for name, sec in stages:
        print(f"| {name} | {sec:.2f} |")
    print_training_floor(cfg, settings, learners, train_s, len(seeds), len(configs))


def training_work(cfg, settings) -> dict[str, tuple[int, int, int]]:
    """learner -> (steps, towers, width w): each step multiplies the (n, d) data by a (d, w) weight and
    forms the (w, d) weight gradient, once per tower (image, and text for MMCL)."""
    k = cfg.num_classes
    return {"mmcl_linear_gd": (settings.gd_steps, 2, settings.embed_dim),
            "mmcl_infonce_linear": (settings.steps, 2, settings.embed_dim),
            "mmcl_infonce_mlp": (settings.steps, 2, settings.width),
            "sl_logistic": (settings.steps, 1, k), "sl_logistic_gd": (settings.sl_gd_steps, 1, k),
            "sl_mlp": (settings.steps, 1, settings.width)}


def product_pair_seconds(n: int, d: int, w: int, reps: int = 300) -> float:
    """Seconds for X W (n, d) x (d, w) plus delta^T X (w, n) x (n, d), float32, jitted, on this machine."""
    import jax
    import jax.numpy as jnp

    x, weight, delta = jnp.ones((n, d)), jnp.ones((d, w)), jnp.ones((n, w))
    pair = jax.jit(lambda x, weight, delta: (x @ weight, delta.T @ x))
    jax.block_until_ready(pair(x, weight, delta))
    start = time.perf_counter()
    for _ in range(reps):
        out = pair(x, weight, delta)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / reps


def print_training_floor(cfg, settings, learners, train_s: dict, n_seeds: int, n_values: int) -> None:
    """Per learner: FLOPs and timed floor of its data products against its measured training; then the
    sweep's (zero-shot learners at every point, SL once per seed)."""
    from mmcl_theory.models import get_model

    kinds = {l.name: l.kind for l in get_model("M1").learners}
    work = training_work(cfg, settings)
    print("\n| learner | steps x towers x width | GFLOP / seed (4 n d w a step) | floor s / seed | "
          "measured s / seed | measured / floor |\n| --- | --- | --- | --- | --- | --- |")
    sweep_floor = sweep_measured = 0.0
    for learner in learners:
        if learner not in work:
            continue
        steps, towers, w = work[learner]
        floor = steps * towers * product_pair_seconds(cfg.n, cfg.d, w)
        measured = train_s[learner] / n_seeds
        runs = n_seeds * (1 if kinds[learner] == "supervised" else n_values)
        sweep_floor += floor * runs
        sweep_measured += measured * runs
        print(f"| {learner} | {steps} x {towers} x {w} | {4 * cfg.n * cfg.d * w * steps * towers / 1e9:.1f} | "
              f"{floor:.3f} | {measured:.3f} | {measured / floor:.1f} |")
    print(f"\nthe sweep's training ({n_values} values x {n_seeds} seeds, SL once per seed): floor {sweep_floor:.1f} s, "
          f"measured {sweep_measured:.1f} s")


if __name__ == "__main__":
    main()
