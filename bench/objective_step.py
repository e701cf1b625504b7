"""Train-step time of each objective against plain CLIP on one tiny config (not a test).

    python bench/objective_step.py [--model ViT-test] [--batch 32] [--rounds 5] [--steps 5] [--json OUT]

Builds the trainer's jitted step (clip.train.make_train_step + jit_train_step, synthetic batch) for
every objective of clip.objectives.OBJECTIVES, then times them round-robin: each round runs
``--steps`` steps of every objective in turn, so a load change on a shared machine hits all of them
alike. The table gives, over rounds, the minimum and the median wall ms per step and the median
CPU ms per step (process time of all threads: on a machine shared with other jobs it counts this
step's work and not the waiting, so it is the steadier measure), and the ratio of CPU ms to 'clip'.
Compile time is the first call (compile + one step). Prints a Markdown table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax

from mmcl_theory.clip import config, models, objectives, state as st, train, train_data
from mmcl_theory.config import ArgumentParser, ConfigError, option_type


def build(objective: str, model_name: str, batch: int, queue_size: int):
    """(jitted step, initial state, global batch) of ``objective`` on the synthetic set."""
    base = models.model_config(model_name)
    vocab = min(base.text.vocab_size, 4096)
    size, ctx = base.vision.image_size, base.text.context_length
    data = train_data.synthetic_data(max(batch, 64), size, ctx, vocab, seed=0)
    num_classes = 0
    spec = objectives.get_objective(objective)
    if spec.labels:
        labels, classes = train_data.synthetic_labels(data.num_examples, 0)
        data = train_data.TrainData(data.images, data.tokens, data.eot_id, data.vocab_size, labels=labels, classes=classes)
        num_classes = len(classes["classnames"])
    cfg = models.model_config(model_name, vocab_size=vocab)
    model = models.create_model(cfg, data.eot_id, **objectives.model_options(spec, num_classes))
    t = config.TrainSection(steps=10_000, batch_size=batch, objective=objective, queue_size=queue_size)
    mesh = st.make_mesh()
    tx = st.make_optimizer(t, jax.eval_shape(lambda r: models.init_variables(model, r), jax.random.key(0))["params"])
    extra = objectives.initial_objective_state(spec, queue_size, cfg.embed_dim)
    state = jax.jit(lambda r: st.init_state(model, tx, r, extra), out_shardings=st.replicated(mesh))(jax.random.key(0))
    step = train.jit_train_step(train.make_train_step(model, tx, objectives.step_objective(spec),
                                                      st.lr_schedule(t)), mesh)
    host = train_data.host_batch(data, 0, 0, batch)
    return step, state, {k: st.to_global(mesh, v) for k, v in host.items()}


def main() -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ViT-test")
    p.add_argument("--batch", type=option_type("--batch", int, 2, 2**31 - 1), default=32)
    p.add_argument("--queue-size", type=option_type("--queue-size", int, 1, 2**31 - 1), default=256)
    p.add_argument("--rounds", type=option_type("--rounds", int, 1, 10**6), default=5)
    p.add_argument("--steps", type=option_type("--steps", int, 1, 10**6), default=5)
    p.add_argument("--json", default="", help="also write the numbers here")
    a = p.parse_args()
    try:
        models.model_config(a.model)
    except ConfigError as e:  # an unknown model name, before anything is compiled
        print(f"error: --model: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    runs, compile_s = {}, {}
    for name in objectives.OBJECTIVES:
        step, state, batch = build(name, a.model, a.batch, a.queue_size)
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        compile_s[name] = time.perf_counter() - t0
        runs[name] = [step, state, batch]
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(a.rounds):
        for name, run in runs.items():
            step, state, batch = run
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(a.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times[name].append(1e3 * (time.perf_counter() - t0) / a.steps)
            cpu[name].append(1e3 * (time.process_time() - c0) / a.steps)
            run[1] = state
    best = {name: min(v) for name, v in times.items()}
    median = {name: statistics.median(v) for name, v in times.items()}
    cpu_ms = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"model {a.model}, batch {a.batch}, {jax.devices()[0].platform} x{jax.device_count()}, "
          f"{a.rounds} rounds x {a.steps} steps")
    print("| objective | compile + 1 step (s) | wall ms / step (min) | wall ms / step (median) | CPU ms / step | "
          "CPU vs clip |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in runs:
        print(f"| {name} | {compile_s[name]:.1f} | {best[name]:.1f} | {median[name]:.1f} | {cpu_ms[name]:.1f} | "
              f"{cpu_ms[name] / cpu_ms['clip']:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "batch": a.batch, "ms_per_step_min": best, "ms_per_step_median": median,
                       "cpu_ms_per_step_median": cpu_ms,
                       "compile_s": compile_s, "rounds": times}, f, indent=2)


if __name__ == "__main__":
    main()
