"""Exploratory probe behind the measured table of docs/temperature.md (not a test, not a sweep).

M1 defaults, linear encoders, embedding dimension 8, full-batch Adam (lr 0.01) as in
learners.mmcl_infonce. For each seed it trains
  - InfoNCE on L2-normalised embeddings at fixed temperatures tau,
  - the tau -> infinity limit learner: Adam on the linear contrastive loss of the *normalised*
    embeddings (the first-order term of the expansion; Adam ignores the overall factor (n-1)/(n tau)),
  - the minimum-norm interpolator of the centred retrieval target, A = X_I^+ (I - 11^T/n) (X_T^+)^T
    (the learner behind the low-temperature candidate of docs/temperature.md#low-temperature),
and scores each on the three test distributions exactly given its weights: the score difference
g^T x + offset between the two classes is Gaussian given the test group, with latent part (D_I^T g)^T z
and noise variance sigma_xi^2/d ||g||^2. References: the full-rank and rank-1 linear-loss theory and the
whitened candidate, all in closed form.

    python docs/scripts/temperature_probe.py --steps 200 1000 --seeds 2
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from mmcl_theory import learners as L
from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
from mmcl_theory.losses import linear_contrastive_loss
from mmcl_theory.theory import population_cross_covariance, population_zero_shot_accuracy

TESTS = ("aligned", "independent", "flipped")
TAUS = (0.03, 0.1, 1.0, 10.0, 100.0, 1000.0)


def exact_accuracy(cfg, latent_weight: np.ndarray, noise_norm2: float, offset: float = 0.0) -> list[float]:
    """M1 accuracy of predicting y = +1 when g^T x + offset > 0, on aligned/independent/flipped.

    latent_weight = D_I^T g (2,), noise_norm2 = ||g||^2 (the test noise adds sigma_xi^2/d ||g||^2 to the
    variance). Given (y, a) the statistic is N(y core + a spu + offset, sd^2).
    """
    core, spu = latent_weight
    sd = math.sqrt(core**2 * cfg.sigma_core**2 + spu**2 * cfg.sigma_spu**2 + cfg.sigma_xi**2 / cfg.d * noise_norm2)
    agree = (stats.norm.cdf((core + spu + offset) / sd) + stats.norm.cdf((core + spu - offset) / sd)) / 2
    disagree = (stats.norm.cdf((core - spu + offset) / sd) + stats.norm.cdf((core - spu - offset) / sd)) / 2
    return [q * agree + (1 - q) * disagree for q in (1.0, 0.5, 0.0)]


def whitened_candidate(cfg, prompt: np.ndarray) -> list[float]:
    """Population accuracy of the whitened form (M_I + ridge)^-1 C (M_T + ridge)^-1, ridge = sigma_xi^2/n,
    with latent prompt (2,) and the projected test noise e = sigma_xi^2/d on both latent coordinates."""
    C = population_cross_covariance(cfg)
    s, m = cfg.spurious_annotation, 2 * cfg.p - 1
    M_I = np.array([[1 + cfg.sigma_core**2, m], [m, 1 + cfg.sigma_spu**2]])  # E[z_I z_I^T]
    M_T = np.array([[1 + cfg.r * cfg.sigma_core**2, s * m], [s * m, s * (1 + cfg.sigma_spu**2)]])  # E[z_T z_T^T]
    ridge = cfg.sigma_xi**2 / cfg.n * np.eye(2)
    g = np.linalg.solve(M_I + ridge, C @ np.linalg.solve(M_T + ridge, prompt))
    e = cfg.sigma_xi**2 / cfg.d
    sd = math.sqrt(g[0] ** 2 * (cfg.sigma_core**2 + e) + g[1] ** 2 * (cfg.sigma_spu**2 + e))
    return [q * stats.norm.cdf((g[0] + g[1]) / sd) + (1 - q) * stats.norm.cdf((g[0] - g[1]) / sd) for q in (1.0, 0.5, 0.0)]


def _normalise(x):
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def normalised_linear_learner(key, x_image, x_text, settings):
    """Adam on linear_contrastive_loss of L2-normalised linear embeddings (the tau -> infinity limit)."""
    k_i, k_t = jax.random.split(key)
    params = {"image": L.init_mlp(k_i, (x_image.shape[1], settings.embed_dim)),
              "text": L.init_mlp(k_t, (x_text.shape[1], settings.embed_dim))}

    def loss(p):
        return linear_contrastive_loss(_normalise(L.apply_mlp(p["image"], x_image)),
                                       _normalise(L.apply_mlp(p["text"], x_text)))

    return L.fit(loss, params, optax.adam(settings.lr), settings.steps)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    cfg = make_config("M1")
    rows: dict[tuple, list] = {}
    for seed in range(args.seeds):
        k_dict, k_train, k_fit = jax.random.split(jax.random.key(seed), 3)
        dicts = dictionaries(k_dict, cfg)
        train = sample_dataset(k_train, cfg, dicts, cfg.n)
        d_image = np.asarray(dicts[0], np.float64)
        xi, xt = np.asarray(train.x_image, np.float64), np.asarray(train.x_text, np.float64)
        a_mn = np.linalg.pinv(xi) @ (np.eye(cfg.n) - 1.0 / cfg.n) @ np.linalg.pinv(xt).T  # (d, d)
        prompts = {kind: np.asarray(prompt_latents(cfg, kind) @ dicts[1].T, np.float64)
                   for kind in ("core", "class_mean")}
        for kind, t in prompts.items():
            g = a_mn @ (t[1] - t[0])
            rows.setdefault(("min-norm interpolation", kind), []).append(exact_accuracy(cfg, d_image.T @ g, g @ g))
        for steps in args.steps:
            for tau in (*TAUS, math.inf):
                settings = L.LearnerSettings(temperature=0.1 if tau == math.inf else tau, steps=steps)
                if tau == math.inf:
                    params = normalised_linear_learner(k_fit, train.x_image, train.x_text, settings)
                else:
                    params = L.mmcl_infonce(k_fit, train.x_image, train.x_text, settings, hidden=False)
                for kind, t in prompts.items():
                    v = _normalise(L.apply_mlp(params["text"], jnp.asarray(t, jnp.float32)))
                    w_image, b_image = params["image"][0]  # embedding W x + b, x (d,)
                    g = np.asarray(w_image @ (v[1] - v[0]), np.float64)
                    offset = float(b_image @ (v[1] - v[0]))
                    rows.setdefault((f"InfoNCE tau={tau:g}, {steps} steps", kind), []).append(
                        exact_accuracy(cfg, d_image.T @ g, g @ g, offset))
    print("| learner | prompt | aligned | independent | flipped |\n| --- | --- | --- | --- | --- |")
    for (name, kind), accs in rows.items():
        print(f"| {name} | {kind} | " + " | ".join(f"{a:.3f}" for a in np.mean(accs, 0)) + " |")
    for kind, prompt in (("core", np.array([1.0, 0.0])),
                         ("class_mean", np.array([1.0, cfg.spurious_annotation * (2 * cfg.p - 1)]))):
        full = [population_zero_shot_accuracy(cfg, t, prompt=kind) for t in TESTS]
        rank1 = [population_zero_shot_accuracy(cfg, t, prompt=kind, rank=1) for t in TESTS]
        for name, acc in (("linear-loss theory, full rank", full), ("linear-loss theory, rank 1", rank1),
                          ("whitened candidate", whitened_candidate(cfg, prompt))):
            print(f"| {name} | {kind} | " + " | ".join(f"{a:.3f}" for a in acc) + " |")


if __name__ == "__main__":
    main()
