"""The LeNet step of the paper's MNIST experiment (mmcl_theory/paper_mnist.py): ms a step against its floor.

Times one optimiser step (batch 128, the paper's SGD) of MMCL (LeNet + linear text encoder, CLIP loss) and SL
(LeNet, cross-entropy), exactly as paper_mnist.train runs it (paper_mnist.compiled_step: the minibatch painted
from grey images and shade indices, forward, backward, update), for

  blocks: paper_mnist.lenet, each conv-relu-pool computed on 2 x 2 blocks (space-to-depth, 12 -> 24 and
          24 -> 64 channels);
  plain:  paper_mnist.plain_lenet, the same network with XLA's convolution (3 -> 6, 6 -> 16 channels) and
          reduce_window pooling, the implementation before 2026-12-07.

The step's FLOP count is that of the plain network (2 x multiply-adds: forward, weight gradients, and input
gradients of every layer but the first); its floor is the time of the same products as dense float32 GEMMs of
their im2col shapes ((B*784, 75) x (75, 6) and so on), timed here one by one. The step's FLOPs at the best
rate measured here (a 1024^3 GEMM) give a lower floor still. The protocol's projected time is
its step count (7 MMCL points x 3 seeds x 100 epochs and 3 SL seeds x 40 epochs of 468 steps) at the measured
ms a step divided by the processes run side by side.

    python bench/lenet_step.py [--steps 100] [--parallel 2]
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 python bench/lenet_step.py   # one core
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory import paper_mnist as pm
from mmcl_theory.config import ArgumentParser, option_type
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT

BATCH, N = 128, 4096


def gemms(kind: str, b: int = BATCH) -> list[tuple[str, int, int, int]]:
    """(name, m, k, n) of every product of one step of the plain network as a dense GEMM (m, k) x (k, n)."""
    out = 128 if kind == ZERO_SHOT else 2
    layers = [("conv1", b * 784, 75, 6), ("conv2", b * 100, 150, 16), ("fc1", b, 400, 120), ("fc2", b, 120, 84),
              ("out", b, 84, out)]
    products = []
    for name, m, k, n in layers:
        products.append((f"{name} forward", m, k, n))
        products.append((f"{name} weight gradient", k, m, n))
        if name != "conv1":
            products.append((f"{name} input gradient", m, n, k))
    if kind == ZERO_SHOT:
        products += [("text forward", b, 200, 128), ("text weight gradient", 200, b, 128),
                     ("logits forward", b, 128, b), ("logits gradient (image)", b, b, 128),
                     ("logits gradient (text)", b, b, 128)]
    return products


def time_call(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def gemm_floor(kind: str, repeats: int) -> tuple[float, float]:
    """(GFLOP a step, seconds a step) of the step's products as dense GEMMs at this machine's measured speed."""
    matmul = jax.jit(jnp.dot)
    flops, seconds = 0.0, 0.0
    rng = np.random.default_rng(0)
    for _, m, k, n in gemms(kind):
        a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
        flops += 2.0 * m * k * n
        seconds += time_call(matmul, a, b, repeats=repeats)
    return flops / 1e9, seconds


def step_seconds(step, kind: str, steps: int) -> float:
    settings = pm.PaperMnistSettings()
    rng = np.random.default_rng(0)
    grey = jnp.asarray(rng.random((N, 28, 28), np.float32))
    shades = jnp.asarray(rng.integers(0, 6, N).astype(np.int32))
    targets = (jnp.asarray(rng.standard_normal((N, 200)), jnp.float32) if kind == ZERO_SHOT
               else jnp.asarray(rng.integers(0, 2, N).astype(np.int32)))
    params = pm.init_params(jax.random.key(0), kind, 200, settings)
    opt_state = pm.optimiser(settings).init(params)
    batches = [jnp.asarray(rng.permutation(N)[:BATCH]) for _ in range(8)]
    params, opt_state, loss = step(params, opt_state, grey, shades, targets, batches[0])  # compile
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, grey, shades, targets, batches[i % 8])
    jax.block_until_ready(loss)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=option_type("--steps", int, 1, 10**6), default=100,
                    help="timed steps per implementation and learner")
    ap.add_argument("--parallel", type=option_type("--parallel", int, 1, 1024), default=1,
                    help="processes run side by side in the projection (each timed alone here)")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"# {platform.node()} | {platform.processor() or platform.machine()} x{os.cpu_count()} | jax {jax.__version__} "
          f"| XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} | load {load[0]:.2f} {load[1]:.2f} | "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    settings = pm.PaperMnistSettings()
    square = jnp.ones((1024, 1024), jnp.float32)
    best = 2 * 1024 ** 3 / time_call(jax.jit(jnp.dot), square, square, repeats=20) / 1e9
    print(f"\nBest GEMM rate here (1024 x 1024 x 1024, float32): {best:.1f} GFLOP/s")
    print("\n| learner | implementation | ms / step | GFLOP / step | GFLOP/s | GEMM floor ms | ms / floor | ms at the best rate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    measured = {}
    for kind, name in ((ZERO_SHOT, "mmcl_lenet"), (SUPERVISED, "sl_lenet")):
        gflop, floor = gemm_floor(kind, repeats=max(5, args.steps // 4))
        for impl, step in (("blocks", pm.compiled_step(kind, settings, "fig4", "white_digit")),
                           ("plain", pm.compiled_step(kind, settings, "fig4", "white_digit", pm.plain_lenet))):
            sec = step_seconds(step, kind, args.steps)
            measured[kind, impl] = sec
            print(f"| {name} | {impl} | {1e3 * sec:.1f} | {gflop:.3f} | {gflop / sec:.1f} | {1e3 * floor:.1f} | "
                  f"{sec / floor:.2f} | {1e3 * gflop / best:.1f} |", flush=True)
    steps_per_epoch = 60000 // BATCH
    mmcl_steps = 7 * 3 * 100 * steps_per_epoch
    sl_steps = 3 * 40 * steps_per_epoch
    print(f"\nProtocol ({mmcl_steps:,} MMCL and {sl_steps:,} SL steps), {args.parallel} process(es) side by side:")
    for impl in ("blocks", "plain"):
        hours = (mmcl_steps * measured[ZERO_SHOT, impl] + sl_steps * measured[SUPERVISED, impl]) / args.parallel / 3600
        amortised = 1e3 * (measured[ZERO_SHOT, impl]) / args.parallel
        print(f"- {impl}: {hours:.2f} h of steps ({amortised:.1f} ms a MMCL step amortised)")


if __name__ == "__main__":
    main()
