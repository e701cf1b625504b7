"""Probe behind docs/temperature.md sections 7-7.1 (not a test, not a sweep): what trained linear InfoNCE reads.

For M1 (r = 1) with overrides, a temperature and a number of full-batch Adam steps, trains
learners.mmcl_infonce (linear, embedding dimension 8, lr 0.01) on seeds 0..S-1 with the sweeps' data
(dictionaries, training set and test keys of evaluate.sample; the initialisation key is the
fourth split itself, not the sweep's per-learner key) and reports, mean +- s.e. over seeds:
  - the final training loss and how many runs learners.fit_summary calls converged;
  - fracD: the fraction of ||W_I||_F^2 in the column space of D_I (a random W has l/d; memorising W has less);
  - for the core-prompt score difference g = W_I (e_+1 - e_-1) (e the normalised prompt embeddings):
    the spurious ratio (D_I^T g)_spu / (D_I^T g)_core and the test-noise weight
    sqrt(sigma_xi^2/d ||g||^2) / ||D_I^T g||;
  - exact accuracies (grid.linear_test_accuracy) with the core and the class-mean prompt.
One JSON line per (tau, steps) is appended to --log.

    python docs/scripts/temperature_phases.py --taus 0.01 0.1 1 --steps 300 3000 10000 --seeds 5
    python docs/scripts/temperature_phases.py --set d=10 sigma_xi=0.0707107 --taus 0.1 --steps 5000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory import learners as L
from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
from mmcl_theory.datamodel import test_groups
from mmcl_theory.grid import linear_test_accuracy
from mmcl_theory.losses import l2_normalise


def run(cfg, tau: float, steps: int, seeds, lr: float = 0.01) -> dict[str, np.ndarray]:
    settings = L.LearnerSettings(temperature=tau, steps=steps, lr=lr)

    @jax.jit
    def one(key):
        k_dict, k_train, k_test, k_fit = jax.random.split(key, 4)
        dicts = dictionaries(k_dict, cfg)
        train = sample_dataset(k_train, cfg, dicts, cfg.n)
        params, losses = L.mmcl_infonce(k_fit, train.x_image, train.x_text, settings, hidden=False, with_trace=True)
        final, _, converged = L.fit_summary(losses, L.loss_floor_infonce(cfg.n, tau))
        (w, b), = params["image"]
        d_image = dicts[0]
        out = {"loss": final, "converged": converged, "fracD": jnp.sum((d_image.T @ w) ** 2) / jnp.sum(w ** 2)}
        for kind in ("core", "class_mean"):
            e = l2_normalise(L.apply_mlp(params["text"], prompt_latents(cfg, kind) @ dicts[1].T))
            weights, bias = w @ e.T, b @ e.T
            g = weights[:, 1] - weights[:, 0]
            latent = d_image.T @ g
            out[kind + "_ratio"] = latent[1] / latent[0]
            out[kind + "_noise"] = jnp.sqrt(cfg.sigma_xi**2 / cfg.d * (g @ g)) / jnp.linalg.norm(latent)
            out[kind + "_acc"] = jnp.stack([linear_test_accuracy(k_test, test_groups(cfg, t), d_image,
                                                                 cfg.sigma_xi**2 / cfg.d, weights, bias)
                                            for t in ("aligned", "independent", "flipped")])
        return out

    res = [jax.device_get(one(jax.random.key(s))) for s in seeds]
    return {k: np.array([r[k] for r in res]) for k in res[0]}


def _ms(x) -> str:
    x = np.asarray(x, float)
    return f"{x.mean():.3f} +- {x.std(ddof=1) / math.sqrt(len(x)):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taus", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 3000])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="M1 overrides, e.g. d=10 sigma_xi=0.0707")
    ap.add_argument("--log", default="temperature_phases.jsonl")
    args = ap.parse_args()
    overrides = {k: (int(v) if k in ("n", "d", "n_test") else float(v)) for k, v in (s.split("=") for s in args.set)}
    cfg = make_config("M1", r=1.0, **overrides)
    for tau in args.taus:
        for steps in args.steps:
            start = time.time()
            r = run(cfg, tau, steps, range(args.seeds))
            with open(args.log, "a") as f:
                print(json.dumps({"set": overrides, "tau": tau, "steps": steps,
                                  **{k: np.asarray(v).tolist() for k, v in r.items()}}), file=f)
            print(f"n={cfg.n} d={cfg.d} tau={tau:g} steps={steps}: loss {_ms(r['loss'])}, converged "
                  f"{int(r['converged'].sum())}/{args.seeds}, fracD {_ms(r['fracD'])}, core: ratio {_ms(r['core_ratio'])}, "
                  f"noise {_ms(r['core_noise'])}, aligned {_ms(r['core_acc'][:, 0])}, flipped {_ms(r['core_acc'][:, 2])}; "
                  f"class-mean flipped {_ms(r['class_mean_acc'][:, 2])} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
