"""Exact theory, float64: contrastive cross-covariance, closed-form minimiser, population predictions.

SPEC sections 2-4. Every formula here is this package's derivation for its own models M1 and M2,
standing in for the paper's unavailable constants (see README, "What is the paper's and what is ours").

Population zero-shot score (full rank): A -> D_I C D_T^T with C = Cov(z_I, z_T), so class k scores
    score_k(x) = (z + D_I^T xi)^T C t_k,
a linear function of the test latent plus its projected noise D_I^T xi ~ N(0, sigma_xi^2/d I_l).
Given the test group (y, a) the latent is Gaussian, so accuracy is a Gaussian orthant probability:
exact (Phi for two classes, Genz's algorithm via scipy for more), with a Monte Carlo check.
Rank p < l replaces C by its best rank-p approximation (the top-p SVD of S in the limit).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .datamodel import Config, M1Config, M2Config, agreement, prompt_latents

# ------------------------------------------------------------------ finite-sample quantities


def contrastive_cross_covariance(x_image: np.ndarray, x_text: np.ndarray) -> np.ndarray:
    """S of the linear loss, (d_I, d_T).

    S = (1/n) sum_i x_I,i x_T,i^T - 1/(n(n-1)) sum_{i != j} x_I,i x_T,j^T
      = n/(n-1) [ (1/n) sum_i x_I,i x_T,i^T - mean(x_I) mean(x_T)^T ]   (SPEC Q4).
    Written in the first (pairwise) form so that Q4 tests an identity, not a restatement.
    """
    x_image, x_text = np.asarray(x_image, np.float64), np.asarray(x_text, np.float64)
    n = x_image.shape[0]
    positives = x_image.T @ x_text / n
    all_pairs = np.outer(x_image.sum(0), x_text.sum(0))
    negatives = (all_pairs - x_image.T @ x_text) / (n * (n - 1))
    return positives - negatives


def closed_form_minimiser(S: np.ndarray, rank: int | None = None, rho: float = 1.0) -> np.ndarray:
    """A* = argmin -<A, S> + (rho/2)||A||_F^2 over rank(A) <= p:  A* = (1/rho) sum_{j<=p} sigma_j u_j v_j^T."""
    if rho <= 0:
        raise ValueError(f"rho = {rho!r} is out of range: allowed (0, inf)")
    u, sigma, vt = np.linalg.svd(np.asarray(S, np.float64), full_matrices=False)
    p = len(sigma) if rank is None else min(rank, len(sigma))
    return (u[:, :p] * sigma[:p]) @ vt[:p] / rho


# ------------------------------------------------------------------ population covariance


def m1_cross_covariance(cfg: M1Config) -> np.ndarray:
    """Cov(z_I, z_T) for M1, (2, 2), rows image [core, spu], columns text [core, spu].

    Cov(z_core, z_T,core) = 1 + r sigma_core^2 = w;  Cov(z_spu, z_T,core) = 2p - 1 = m;
    Cov(z_core, z_T,spu) = s m;  Cov(z_spu, z_T,spu) = s (1 + sigma_spu^2), s = spurious_annotation.
    """
    w = 1 + cfg.r * cfg.sigma_core**2
    m = 2 * cfg.p - 1
    s = cfg.spurious_annotation
    return np.array([[w, s * m], [m, s * (1 + cfg.sigma_spu**2)]], np.float64)


def m2_cross_covariance(cfg: M2Config) -> np.ndarray:
    """Cov(z_I, z_T) for M2, (2K, 2K), blocks [[c, c_T], [c, s_T]; [s, c_T], [s, s_T]] (SPEC section 4).

    With b = beta*annotate, v = 1 + sigma_core^2, q = (1-p)/(K-1), s = spurious_annotation,
    second moments times K (j != k):
      E[c_k c_T,k] = 1 + r sigma_core^2 + (K-1) b v      E[c_j c_T,k] = b + beta + (K-2) beta b
      E[s_k c_T,k] = p + (1-p) b                         E[s_j c_T,k] = q + p b + (K-2) q b
      E[c_k s_T,k] = s (p + (1-p) beta)                  E[c_j s_T,k] = s (beta p + q + (K-2) beta q)
      E[s_k s_T,k] = s (1 + sigma_spu^2)                 E[s_j s_T,k] = 0
    means E[c_k] = (1 + (K-1) beta)/K, E[c_T,k] = (1 + (K-1) b)/K, E[s_k] = 1/K, E[s_T,k] = s/K.
    """
    K, p, beta, s = cfg.K, cfg.p, cfg.beta, cfg.spurious_annotation
    b, v, q = beta * cfg.annotate, 1 + cfg.sigma_core**2, (1 - p) / (K - 1)
    eye, off = np.eye(K), 1 - np.eye(K)
    block = lambda diag, offdiag: (diag * eye + offdiag * off) / K
    second = np.block([
        [block(1 + cfg.r * cfg.sigma_core**2 + (K - 1) * b * v, b + beta + (K - 2) * beta * b),
         block(s * (p + (1 - p) * beta), s * (beta * p + q + (K - 2) * beta * q))],
        [block(p + (1 - p) * b, q + p * b + (K - 2) * q * b),
         block(s * (1 + cfg.sigma_spu**2), 0.0)],
    ])
    mean_image = np.concatenate([np.full(K, (1 + (K - 1) * beta) / K), np.full(K, 1 / K)])
    mean_text = np.concatenate([np.full(K, (1 + (K - 1) * b) / K), np.full(K, s / K)])
    return second - np.outer(mean_image, mean_text)


def population_cross_covariance(cfg: Config) -> np.ndarray:
    """Cov(z_I, z_T), (l, l): the population limit of S is D_I Cov(z_I, z_T) D_T^T."""
    return m1_cross_covariance(cfg) if isinstance(cfg, M1Config) else m2_cross_covariance(cfg)


def truncate_rank(C: np.ndarray, rank: int | None) -> np.ndarray:
    """Best rank-p approximation of C (top-p SVD); rank=None keeps C."""
    if rank is None or rank >= min(C.shape):
        return C
    u, sigma, vt = np.linalg.svd(C)
    return (u[:, :rank] * sigma[:rank]) @ vt[:rank]


# ------------------------------------------------------------------ population accuracy


def test_groups(cfg: Config, test: str | float):
    """Test latents as a Gaussian mixture: list of (weight, label, mean (l,), variance (l,)).

    M1: y, a in {-1,+1} with P(a = y) = q; mean [y, a], variance [sigma_core^2, sigma_spu^2].
    M2: c = e_y (1 + sigma_core e), s = e_a (1 + sigma_spu e), no details (beta_test = 0).
    """
    K = cfg.num_classes
    q = agreement(test, K)
    groups = []
    if isinstance(cfg, M1Config):
        var = np.array([cfg.sigma_core**2, cfg.sigma_spu**2])
        for label, y in ((0, -1.0), (1, 1.0)):
            groups.append((0.5 * q, label, np.array([y, y]), var))
            groups.append((0.5 * (1 - q), label, np.array([y, -y]), var))
        return groups
    for y in range(K):
        for a in range(K):
            weight = (q if a == y else (1 - q) / (K - 1)) / K
            if weight == 0:
                continue
            mean, var = np.zeros(2 * K), np.zeros(2 * K)
            mean[y], mean[K + a] = 1.0, 1.0
            var[y], var[K + a] = cfg.sigma_core**2, cfg.sigma_spu**2
            groups.append((weight, y, mean, var))
    return groups


def _correct_probability(weights: np.ndarray, label: int, mean: np.ndarray, cov: np.ndarray) -> float:
    """P(argmax_k u^T W[:, k] = label) for u ~ N(mean, cov): a Gaussian orthant probability.

    D_j = score_label - score_j = u^T G_j with G = W[:, label] - W[:, j] (j != label); P(all D_j > 0).
    """
    others = [j for j in range(weights.shape[1]) if j != label]
    G = weights[:, [label]] - weights[:, others]
    mu = mean @ G
    Sigma = G.T @ cov @ G
    if len(others) == 1:
        sd = math.sqrt(max(Sigma[0, 0], 0.0))
        if sd == 0:
            return float(mu[0] > 0)
        return float(stats.norm.cdf(mu[0] / sd))
    # Genz's algorithm also handles a singular Sigma (rank-limited weights): allow_singular
    mvn = stats.multivariate_normal(mean=-mu, cov=Sigma, allow_singular=True, maxpts=2_000_000,
                                    abseps=1e-7, releps=1e-7)
    return float(mvn.cdf(np.zeros(len(others))))


def population_zero_shot_accuracy(cfg: Config, test: str | float, *, rank: int | None = None,
                                  prompt: str = "core", test_noise: bool = True) -> float:
    """Population zero-shot accuracy of the linear-loss minimiser, exact Gaussian computation.

    Weights W = C_p P^T (l, K) with C_p the rank-p Cov(z_I, z_T) and P the prompt latents;
    the test latent gets the projected noise variance e = sigma_xi^2 / d on every coordinate.
    """
    C = truncate_rank(population_cross_covariance(cfg), rank)
    W = C @ np.asarray(prompt_latents(cfg, prompt), np.float64).T
    e = cfg.sigma_xi**2 / cfg.d if test_noise else 0.0
    return sum(w * _correct_probability(W, label, mean, np.diag(var + e))
               for w, label, mean, var in test_groups(cfg, test))


def population_zero_shot_accuracy_mc(cfg: Config, test: str | float, key, n_samples: int = 1_000_000, *,
                                     rank: int | None = None, prompt: str = "core") -> tuple[float, float]:
    """Monte Carlo over test latents only (no d-dimensional data): returns (accuracy, standard error).

    A second, independent route to population_zero_shot_accuracy: latents come from the sampler in
    datamodel, noise is the projected N(0, sigma_xi^2/d I_l).
    """
    import jax

    from .datamodel import sample_latents

    k_z, k_xi = jax.random.split(key)
    lat = sample_latents(k_z, cfg, n_samples, test)
    z = np.asarray(lat.z_image, np.float64)
    z = z + np.asarray(jax.random.normal(k_xi, z.shape)) * (cfg.sigma_xi / math.sqrt(cfg.d))
    C = truncate_rank(population_cross_covariance(cfg), rank)
    scores = z @ (C @ np.asarray(prompt_latents(cfg, prompt), np.float64).T)
    hits = np.argmax(scores, 1) == np.asarray(lat.label)
    return float(hits.mean()), float(hits.std() / math.sqrt(n_samples))


def m1_population_accuracy(cfg: M1Config, test: str | float, test_noise: bool = True) -> float:
    """SPEC section 3 closed form, full rank, core prompts, spurious annotated:

    Acc(q) = q Phi((w+m)/tau) + (1-q) Phi((w-m)/tau),  w = 1 + r sigma_core^2,  m = 2p - 1,
    tau = sqrt(w^2 (sigma_core^2 + e) + m^2 (sigma_spu^2 + e)),  e = sigma_xi^2 / d.
    """
    q = agreement(test, 2)
    w, m = 1 + cfg.r * cfg.sigma_core**2, 2 * cfg.p - 1
    e = cfg.sigma_xi**2 / cfg.d if test_noise else 0.0
    tau = math.sqrt(w**2 * (cfg.sigma_core**2 + e) + m**2 * (cfg.sigma_spu**2 + e))
    if tau == 0:
        return q * float(w + m > 0) + (1 - q) * float(w - m > 0)
    return q * stats.norm.cdf((w + m) / tau) + (1 - q) * stats.norm.cdf((w - m) / tau)


def bayes_core_accuracy(cfg: Config) -> float:
    """Accuracy of the Bayes classifier that sees only the noise-free class core: Phi(1/sigma_core).

    M1: sign(z_core); M2 (no details at test): argmax_k c_k, correct iff c_y > 0.
    """
    return 1.0 if cfg.sigma_core == 0 else float(stats.norm.cdf(1.0 / cfg.sigma_core))


# ------------------------------------------------------------------ supervised learning conditions


def sagawa_conditions(cfg: M1Config) -> dict[str, tuple[bool, str]]:
    """Which assumptions of Sagawa et al. (ICML 2020, Thm 1), in M1's parameterisation, cfg meets.

    With n_maj = round(p n): p >= 1 - 1/2001; sigma_spu^2 <= 1/(16 log(100 n_maj)); sigma_core^2 >= 1;
    sigma_xi^2 <= n_maj / 600^2; d -> infinity (checked here as d >= 10 n, a finite stand-in).
    Under all of them the max-margin classifier has worst-group error >= 2/3 w.h.p.
    """
    n_maj = max(round(cfg.p * cfg.n), 1)
    spu_bound = 1 / (16 * math.log(100 * n_maj))
    xi_bound = n_maj / 600**2
    return {
        "p": (cfg.p >= 1 - 1 / 2001, f"p = {cfg.p} >= {1 - 1 / 2001:.6f}"),
        "sigma_spu": (cfg.sigma_spu**2 <= spu_bound, f"sigma_spu^2 = {cfg.sigma_spu**2:.3g} <= {spu_bound:.3g}"),
        "sigma_core": (cfg.sigma_core**2 >= 1, f"sigma_core^2 = {cfg.sigma_core**2:.3g} >= 1"),
        "sigma_xi": (cfg.sigma_xi**2 <= xi_bound, f"sigma_xi^2 = {cfg.sigma_xi**2:.3g} <= n_maj/600^2 = {xi_bound:.3g}"),
        "d": (cfg.d >= 10 * cfg.n, f"d = {cfg.d} >= 10 n = {10 * cfg.n} (stand-in for d -> infinity)"),
    }
