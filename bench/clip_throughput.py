"""CLIP train-step throughput and MFU on synthetic on-device batches.

    python bench/clip_throughput.py                      # GPU: ViT-B-32 @224 b512 and RN50 @224 b256, bf16
                                                         # CPU: ViT-test @32 b64, float32
    python bench/clip_throughput.py --model RN50 --batch 128 --steps 30 --out bench.json

The step is the trainer's own (mmcl_theory.clip.train: symmetric InfoNCE, AdamW, jitted, state
donated, batch sharded over all local devices), on uint8 images and int32 tokens (vocab 49,408,
77 tokens, as open_clip) generated on the device, so no host input cost is timed.

Model FLOPs are counted by XLA's HLO cost analysis of the *forward* image and text encoders
(jax ``Lowered.cost_analysis()['flops']``, 2 FLOPs per multiply-add) times 3 for forward + backward;
the loss, optimiser and normalisation are not counted. MFU = model FLOP/s / peak, with the peak the
H100 SXM dense bf16 spec (989.4 TFLOP/s); the measured bf16 matmul roof on the same GPU is about
786 TFLOP/s (BENCHMARKS.md). Anchor (BENCHMARKS.md, open_clip 3.3.0 with torch.compile, same H100):
ViT-B-32 b512 5,155 img/s; RN50 b256 3,379 img/s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory.clip import models, objectives, state as st, train
from mmcl_theory.clip.config import TrainSection
from mmcl_theory.config import ArgumentParser, ConfigError, option_type

PEAK_BF16_H100 = 989.4e12
ANCHORS = {("ViT-B-32", 512): 5155.0, ("RN50", 256): 3379.0}


def forward_flops_per_sample(model: models.CLIP) -> tuple[float, float]:
    """XLA-counted forward FLOPs per sample of the image and the text encoder. Backends whose
    lowering gives no cost analysis (GPU) hand the count to a CPU-only subprocess (same HLO)."""
    if jax.default_backend() != "cpu":
        import subprocess

        env = dict(os.environ, JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, __file__, "--flops-only", model.config.name], env=env,
                             capture_output=True, text=True, check=True).stdout
        fi, ft = json.loads(out.strip().splitlines()[-1])
        return float(fi), float(ft)
    cfg = model.config
    shapes = jax.eval_shape(lambda r: models.init_variables(model, r), jax.random.key(0))
    s = cfg.vision.image_size
    img = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
    tok = jax.ShapeDtypeStruct((1, cfg.text.context_length), jnp.int32)
    fi = jax.jit(lambda v, x: model.apply(v, x, method=models.CLIP.encode_image)).lower(shapes, img)
    ft = jax.jit(lambda v, t: model.apply(v, t, method=models.CLIP.encode_text)).lower(shapes, tok)
    return float(fi.cost_analysis()["flops"]), float(ft.cost_analysis()["flops"])


def bench_one(name: str, batch: int, steps: int, warmup: int, dtype_name: str) -> dict:
    dtype = st.compute_dtype(dtype_name)
    cfg = models.model_config(name)
    model = models.create_model(cfg, eot_id=cfg.text.vocab_size - 1, dtype=dtype)
    t = TrainSection(steps=10_000, batch_size=batch, lr=5e-4, warmup_steps=100)
    rng = jax.random.key(0)
    tx = st.make_optimizer(t, jax.eval_shape(lambda r: models.init_variables(model, r), rng)["params"])
    mesh = st.make_mesh()
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = jax.jit(lambda r: st.init_state(model, tx, r), out_shardings=rep)(rng)
    step = train.jit_train_step(train.make_train_step(model, tx, objectives.step_objective(objectives.OBJECTIVES["clip"]), st.lr_schedule(t)), mesh)

    s, ctx, vocab = cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size

    @jax.jit
    def make_batch(key):
        k1, k2, k3 = jax.random.split(key, 3)
        images = jax.random.randint(k1, (batch, s, s, 3), 0, 256, jnp.int32).astype(jnp.uint8)
        tokens = jax.random.randint(k2, (batch, ctx), 1, vocab - 1, jnp.int32)
        ends = jax.random.randint(k3, (batch,), 4, ctx - 1)
        pos = jnp.arange(ctx)[None]
        tokens = jnp.where(pos < ends[:, None], tokens, 0)
        tokens = jnp.where(pos == ends[:, None], vocab - 1, tokens)
        return {"images": jax.device_put(images, shard), "tokens": jax.device_put(tokens, shard)}

    batches = [make_batch(jax.random.key(i)) for i in range(2)]
    t0 = time.perf_counter()
    for i in range(warmup):
        state, metrics = step(state, batches[i % 2])
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        a = time.perf_counter()
        state, metrics = step(state, batches[i % 2])
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - a)
    # steady state without per-step sync
    a = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, batches[i % 2])
    jax.block_until_ready(metrics["loss"])
    pipelined = (time.perf_counter() - a) / steps
    step_s = min(pipelined, float(np.median(times)))
    fi, ft = forward_flops_per_sample(model)
    model_flops = 3.0 * (fi + ft) * batch
    ips = batch / step_s
    on_gpu = jax.default_backend() == "gpu"
    res = {
        "model": name, "image_size": s, "batch": batch, "dtype": jnp.dtype(dtype).name,
        "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
        "step_ms": 1e3 * step_s, "step_ms_synced_median": 1e3 * float(np.median(times)),
        "images_per_s": ips, "compile_and_warmup_s": compile_s,
        "fwd_gflops_image": fi / 1e9, "fwd_gflops_text": ft / 1e9,
        "model_tflops_per_s": model_flops / step_s / 1e12,
        "mfu": (model_flops / step_s / PEAK_BF16_H100) if on_gpu else None,
        "anchor_open_clip_images_per_s": ANCHORS.get((name, batch)),
        "final_loss": float(metrics["loss"]),
    }
    if res["anchor_open_clip_images_per_s"]:
        res["vs_anchor"] = ips / res["anchor_open_clip_images_per_s"]
    return res


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", help="registry names (default: ViT-B-32 RN50 on GPU, ViT-test on CPU)")
    p.add_argument("--batch", type=option_type("--batch", int, 2, 2**31 - 1), nargs="+",
                   help="one per model (default 512 ViT-B-32, 256 RN50, 64 else)")
    p.add_argument("--steps", type=option_type("--steps", int, 1, 10**6), default=20)
    p.add_argument("--warmup", type=option_type("--warmup", int, 0, 10**6), default=3)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--out", help="write the results as JSON")
    p.add_argument("--flops-only", metavar="MODEL", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.flops_only:
        cfg = models.model_config(a.flops_only)
        print(json.dumps(forward_flops_per_sample(models.create_model(cfg, cfg.text.vocab_size - 1))))
        return 0
    on_gpu = jax.default_backend() == "gpu"
    names = a.model or (["ViT-B-32", "RN50"] if on_gpu else ["ViT-test"])
    default_batch = {"ViT-B-32": 512, "RN50": 256}
    batches = a.batch or [default_batch.get(n, 64) for n in names]
    if len(batches) != len(names):
        print("error: --batch needs one value per --model", file=sys.stderr)
        return 2
    try:
        for n in names:
            models.model_config(n)
    except ConfigError as e:  # an unknown model name, before anything is compiled
        print(f"error: --model: {e}", file=sys.stderr)
        return 2
    rows = []
    for n, b in zip(names, batches):
        rows.append(bench_one(n, b, a.steps, a.warmup, a.dtype))
        r = rows[-1]
        print(f"{r['model']:10s} {r['image_size']:4d}px b{r['batch']:<4d} {r['dtype']:8s} "
              f"{r['images_per_s']:9.0f} img/s  step {r['step_ms']:7.1f} ms  "
              f"{r['model_tflops_per_s']:6.1f} TFLOP/s  MFU {('%.1f%%' % (100 * r['mfu'])) if r['mfu'] else '  n/a'}"
              + (f"  vs open_clip {r['vs_anchor']:.2f}x" if r.get("vs_anchor") else ""), flush=True)
    print()
    print("| model | res | batch | dtype | device | img/s | step ms | fwd GFLOP/sample (img+txt) | TFLOP/s | MFU | open_clip anchor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        anchor = f"{r['anchor_open_clip_images_per_s']:.0f} ({r['vs_anchor']:.2f}x)" if r.get("vs_anchor") else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a (CPU)"
        print(f"| {r['model']} | {r['image_size']} | {r['batch']} | {r['dtype']} | {r['device']} | "
              f"{r['images_per_s']:.0f} | {r['step_ms']:.1f} | {r['fwd_gflops_image']:.3g}+{r['fwd_gflops_text']:.3g} | "
              f"{r['model_tflops_per_s']:.1f} | {mfu} | {anchor} |")
    if a.out:
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "jax": jax.__version__, "backend": jax.default_backend(), "results": rows}
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
