"""Exact theory, float64: contrastive cross-covariance, closed-form minimiser, population predictions.

Derivations: docs/theory.md (anchors cited per function). Every formula here is this package's
derivation for its own models M1 and M2 (docs/models.md) and for the paper's Data Model 2 (DM2; its
Eq. 27 and Thm 5.4 derived again, docs/theory.md#the-papers-theorems).

Population zero-shot score (full rank): A -> D_I C D_T^T with C = Cov(z_I, z_T), so class k scores
    score_k(x) = (z + D_I^T xi)^T C t_k,
a linear function of the test latent plus its projected noise D_I^T xi ~ N(0, sigma_xi^2/d I_l).
Given the test group (y, a) the latent is Gaussian, so accuracy is a Gaussian orthant probability:
exact (Phi for two classes, Genz's algorithm via scipy for more), with a Monte Carlo check.
Rank p < l replaces C by its best rank-p approximation (the top-p SVD of S in the limit); it must be
unique (sigma_p > sigma_{p+1}), else the population prediction is undefined and a ValueError says so.

Ties. The predicted class is the first maximal score, as np.argmax / jnp.argmax (and so every learner
and the sampled route) return it. Exact symmetries of the model make some score differences
identically zero (zero variance and zero mean: e.g. two classes with equal weight columns); both
routes here treat score differences within TIE_RTOL of the score scale (_score_weights) as ties and
give them to the lower class index, so they agree with each other and with argmax on such cases.

Models. The data model's facts (sampler, prompts, Gaussian test groups, test_scale) are the config's own
(datamodel.py); this module's formulas for each model are one ModelTheory record in _THEORY, keyed by the
config's `model` name.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from scipy import stats

from .datamodel import Config, DM2Config, M1Config, M2Config, agreement, prompt_latents, sample_latents, test_groups

TIE_RTOL = 1e-9  # relative size below which a score difference or a singular-value gap counts as zero

# ------------------------------------------------------------------ finite-sample quantities


def contrastive_cross_covariance(x_image: np.ndarray, x_text: np.ndarray) -> np.ndarray:
    """S of the linear loss, (d_I, d_T).

    S = (1/n) sum_i x_I,i x_T,i^T - 1/(n(n-1)) sum_{i != j} x_I,i x_T,j^T
      = n/(n-1) [ (1/n) sum_i x_I,i x_T,i^T - mean(x_I) mean(x_T)^T ]   (docs/theory.md#identity).
    Written in the first (pairwise) form so that check Q4 tests an identity, not a restatement.
    """
    x_image, x_text = np.asarray(x_image, np.float64), np.asarray(x_text, np.float64)
    n = x_image.shape[0]
    positives = x_image.T @ x_text / n
    all_pairs = np.outer(x_image.sum(0), x_text.sum(0))
    negatives = (all_pairs - x_image.T @ x_text) / (n * (n - 1))
    return positives - negatives


def closed_form_minimiser(S: np.ndarray, rank: int | None = None, rho: float = 1.0) -> np.ndarray:
    """A* = argmin -<A, S> + (rho/2)||A||_F^2 over rank(A) <= p:  A* = (1/rho) sum_{j<=p} sigma_j u_j v_j^T.

    S (d_I, d_T) float -> A* (d_I, d_T) float64; rank=None keeps every singular value (docs/theory.md#closed-form).
    """
    if rho <= 0:
        raise ValueError(f"rho = {rho!r} is out of range: allowed (0, inf)")
    u, sigma, vt = np.linalg.svd(np.asarray(S, np.float64), full_matrices=False)
    p = len(sigma) if rank is None else min(rank, len(sigma))
    return (u[:, :p] * sigma[:p]) @ vt[:p] / rho


# ------------------------------------------------------------------ population covariance


def m1_cross_covariance(cfg: M1Config) -> np.ndarray:
    """Cov(z_I, z_T) for M1, (2, 2), rows image [core, spu], columns text [core, spu] (docs/theory.md#m1-covariance).

    Cov(z_core, z_T,core) = 1 + r sigma_core^2 = w;  Cov(z_spu, z_T,core) = 2p - 1 = m;
    Cov(z_core, z_T,spu) = s m;  Cov(z_spu, z_T,spu) = s (1 + pi_spu sigma_spu^2),
    s = spurious_annotation, pi_spu = spurious_detail (the caption's z_T,spu = a + psi (z_spu - a)).
    """
    w = 1 + cfg.r * cfg.sigma_core**2
    m = 2 * cfg.p - 1
    s = cfg.spurious_annotation
    return np.array([[w, s * m], [m, s * (1 + cfg.spurious_detail * cfg.sigma_spu**2)]], np.float64)


def m2_cross_covariance(cfg: M2Config) -> np.ndarray:
    """Cov(z_I, z_T) for M2, (2K, 2K), blocks [[c, c_T], [c, s_T]; [s, c_T], [s, s_T]] (docs/theory.md#m2-covariance).

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


def dm2_cross_covariance(cfg: DM2Config) -> np.ndarray:
    """Cov(z_I, z_T) for the paper's Data Model 2 with masking probability pi, (2m, 2m) (docs/theory.md#dm2-covariance).

    Labels are uniform over the 2m aliases (k, c), so every coordinate has mean 0 and the covariance is
    the second moment. For a coordinate pair it is nonzero only on the class's own pair (j, j + m):
      E[z_j psi_j z_j]         = (1 + pi (m-1) beta^2) / m          (own class: 1; other: pi beta^2)
      E[z_j psi_{j+m} z_{j+m}] = pi alpha / m                       (own class only: c * c alpha)
      E[z_{j+m} psi_j z_j]     = alpha / m                          (psi_k = 1 on the own core)
      E[z_{j+m} psi_{j+m} z_{j+m}] = pi alpha^2 (1 + (m-1) beta^2) / m.
    """
    m, a, b, pi = cfg.m, cfg.alpha, cfg.beta, cfg.pi
    eye = np.eye(m)
    return np.block([[(1 + pi * (m - 1) * b**2) / m * eye, pi * a / m * eye],
                     [a / m * eye, pi * a**2 * (1 + (m - 1) * b**2) / m * eye]])


def population_cross_covariance(cfg: Config) -> np.ndarray:
    """Cov(z_I, z_T), (l, l): the population limit of S is D_I Cov(z_I, z_T) D_T^T (the model's _THEORY entry)."""
    return _THEORY[cfg.model].cross_covariance(cfg)


def truncate_rank(C: np.ndarray, rank: int | None) -> np.ndarray:
    """Best rank-p approximation of C (top-p SVD), (a, b) -> (a, b); rank=None keeps C.

    The truncation is unique only when sigma_p > sigma_{p+1} (docs/theory.md#closed-form). When the
    two coincide (within TIE_RTOL sigma_1; e.g. M2 with beta = annotate = 1, where every core
    direction has the same singular value) any rotation inside the tied singular subspace is an
    equally good minimiser, a finite sample picks one at random, and the population prediction is not
    defined: ValueError.
    """
    if rank is None or rank >= min(C.shape):
        return C
    if rank < 1:
        raise ValueError(f"rank = {rank!r} is out of range: allowed an integer >= 1, or None for full rank")
    u, sigma, vt = np.linalg.svd(C, full_matrices=False)
    if sigma[rank - 1] > TIE_RTOL * sigma[0] and sigma[rank - 1] - sigma[rank] <= TIE_RTOL * sigma[0]:
        raise ValueError(f"rank = {rank}: the rank-{rank} truncation of Cov(z_I, z_T) is not unique (singular values "
                         f"{rank} and {rank + 1} are both {sigma[rank]:.6g}), so the population prediction is "
                         "undefined at this rank; allowed: a rank that does not split tied singular values, or full rank")
    return (u[:, :rank] * sigma[:rank]) @ vt[:rank]


# ------------------------------------------------------------------ population accuracy


def _score_weights(cfg: Config, rank: int | None, prompt: str) -> tuple[np.ndarray, float]:
    """Latent-space class-score weights W = C_p P^T, (l, K) float64 (class k scores u^T W[:, k]), and
    the tie tolerance: score differences up to it count as zero.

    C_p is the rank-p Cov(z_I, z_T) (truncate_rank), P (K, l) the prompt latents
    (docs/theory.md#zero-shot-score). The tolerance is TIE_RTOL times a bound on a typical score,
    ||C||_2 max_k ||t_k|| sqrt(l) (1 + sd), sd^2 = cfg.test_scale^2 + sigma_xi^2/d (test_scale: the largest
    test-latent s.d., datamodel); float64 rounding is ~1e-16 of that bound, so differences that are zero in exact
    arithmetic (model symmetries) stay below it.
    """
    C = population_cross_covariance(cfg)
    P = np.asarray(prompt_latents(cfg, prompt), np.float64)
    sd = math.sqrt(cfg.test_scale**2 + cfg.sigma_xi**2 / cfg.d)
    scale = np.linalg.norm(C, 2) * np.linalg.norm(P, axis=1).max() * math.sqrt(C.shape[0]) * (1 + sd)
    return truncate_rank(C, rank) @ P.T, TIE_RTOL * float(scale)


def _orthant_probability(mu: np.ndarray, Sigma: np.ndarray, cache: dict) -> float:
    """P(D > 0 componentwise) for D ~ N(mu, Sigma), mu (m,), Sigma (m, m) with a positive diagonal.

    m = 1: Phi(mu / sd); m > 1: Genz's algorithm (scipy, fixed seed, tolerance 1e-7; singular
    covariances allowed). The probability does not depend on the order of the components, so a
    problem equal to an earlier one up to a reordering (the test groups that the class symmetry of
    M2 makes equivalent: K(K-1) groups a != y, K groups a = y) is looked up in `cache`: components
    sorted by (mu_j, Sigma_jj), key rounded to 12 significant digits (far below the tolerance).
    """
    if len(mu) == 1:
        return float(stats.norm.cdf(mu[0] / math.sqrt(Sigma[0, 0])))
    order = np.lexsort((np.diag(Sigma), mu))
    mu, Sigma = mu[order], Sigma[np.ix_(order, order)]
    key = tuple(float(f"{v:.12g}") for v in np.concatenate([mu, Sigma.ravel()]))
    if key not in cache:
        mvn = stats.multivariate_normal(mean=-mu, cov=Sigma, allow_singular=True, seed=0, maxpts=2_000_000,
                                        abseps=1e-7, releps=1e-7)
        cache[key] = float(mvn.cdf(np.zeros(len(mu))))
    return cache[key]


def _correct_probability(weights: np.ndarray, label: int, mean: np.ndarray, cov: np.ndarray,
                         tie_tol: float, cache: dict) -> float:
    """P(the first maximal class score is the label's) for u ~ N(mean, cov), scores u^T W, W (l, K).

    D_j = score_label - score_j = u^T (W[:, label] - W[:, j]) ~ N(mu_j, Sigma_jj). The label is
    predicted iff D_j > 0 for every j < label and D_j >= 0 for every j > label (first maximal index).
    A D_j with standard deviation <= tie_tol is the constant mu_j (|mu_j| <= tie_tol: a tie), which
    passes or fails by that rule and is independent of the rest; the other D_j have a density, so >
    and >= agree for them, and P(all of them > 0) is a Gaussian orthant probability.
    """
    others = np.array([j for j in range(weights.shape[1]) if j != label])
    G = weights[:, [label]] - weights[:, others]
    mu = mean @ G
    Sigma = G.T @ cov @ G
    constant = np.sqrt(np.maximum(np.diag(Sigma), 0.0)) <= tie_tol
    passes = (mu > tie_tol) | ((np.abs(mu) <= tie_tol) & (others > label))
    if not np.all(passes[constant]):
        return 0.0
    if np.all(constant):
        return 1.0
    return _orthant_probability(mu[~constant], Sigma[np.ix_(~constant, ~constant)], cache)


def gaussian_test_accuracy(cfg: Config, W: np.ndarray, tie_tol: float, test: str | float, e: float = 0.0) -> float:
    """Exact accuracy of the class scores u^T W (W (l, K)) on a test distribution of Gaussian groups:

        Acc = sum_g weight_g P(first maximal score is label_g | u ~ N(mean_g, diag(var_g + e))),

    the groups of datamodel.test_groups (NumPy float64; those of weight 0 are skipped), e the projected test
    noise variance per coordinate, each term _correct_probability (ties within tie_tol to the lower index).
    """
    weight, label, mean, var = test_groups(cfg, test, xp=np)
    cache: dict = {}
    return sum(float(w) * _correct_probability(W, int(k), m, np.diag(v + e), tie_tol, cache)
               for w, k, m, v in zip(weight, label, mean, var) if w != 0)


def population_zero_shot_accuracy(cfg: Config, test: str | float, *, rank: int | None = None,
                                  prompt: str = "core", test_noise: bool = True) -> float:
    """Population zero-shot accuracy of the linear-loss minimiser, exact Gaussian computation (docs/theory.md#accuracy).

    Weights W = C_p P^T (l, K) (_score_weights); the test latent gets the projected noise variance
    e = sigma_xi^2 / d on every coordinate. Ties go to the lower class index (module doc).
    """
    W, tie_tol = _score_weights(cfg, rank, prompt)
    e = cfg.sigma_xi**2 / cfg.d if test_noise else 0.0
    return _THEORY[cfg.model].accuracy(cfg, W, tie_tol, test, e)


def population_memory(cfg: Config) -> tuple[int, str]:
    """(bytes, how they were counted) of the float64 arrays population_zero_shot_accuracy holds at once for cfg:
    about 6 of l x l (Cov(z_I, z_T), its SVD, the prompts, the class weights, one test group's covariance and score
    differences; l = cfg.latent_dim) and, for the Gaussian test groups of M1 and M2 (datamodel.test_groups; DM2's
    discrete test needs none), a mean and a variance of length l per group: cfg.num_test_groups (M1 4, M2 K^2)."""
    l = cfg.latent_dim
    groups = cfg.num_test_groups
    how = f"6 float64 arrays of l x l (l = {l})" + (f" + {groups} test groups of 2 x l" if groups else "")
    return 8 * (6 * l * l + 2 * groups * l), how


def population_zero_shot_accuracy_mc(cfg: Config, test: str | float, key, n_samples: int = 1_000_000, *,
                                     rank: int | None = None, prompt: str = "core") -> tuple[float, float]:
    """Monte Carlo over test latents only (no d-dimensional data): returns (accuracy, standard error).

    A second, independent route to population_zero_shot_accuracy: latents come from the sampler in
    datamodel, noise is the projected N(0, sigma_xi^2/d I_l); the prediction is the first class whose
    score is within the tie tolerance of the maximum (np.argmax up to float rounding).
    """
    import jax

    W, tie_tol = _score_weights(cfg, rank, prompt)
    k_z, k_xi = jax.random.split(key)
    lat = sample_latents(k_z, cfg, n_samples, test)
    z = np.asarray(lat.z_image, np.float64)
    z = z + np.asarray(jax.random.normal(k_xi, z.shape)) * (cfg.sigma_xi / math.sqrt(cfg.d))
    scores = z @ W
    top = scores >= scores.max(1, keepdims=True) - tie_tol
    hits = np.argmax(top, 1) == np.asarray(lat.label)
    return float(hits.mean()), float(hits.std() / math.sqrt(n_samples))


def dm2_zero_shot_accuracy(cfg: DM2Config, W: np.ndarray, tie_tol: float, q: float, e: float = 0.0) -> float:
    """Exact accuracy on DM2's discrete test distribution of class scores u^T W[:, y'] (docs/theory.md#dm2-accuracy).

    W (2m, 2m) must score class y' = (k', c') as c' (g1 u_k' + g2 u_{k'+m}) with the same (g1, g2) for every
    class; the population minimiser at every prompt and at every rank that keeps whole singular
    subspaces has this form (Cov(z_I, z_T) is m copies of one 2 x 2 block). For a test image of class
    (k, c) with z_{k+m} = s c alpha (s = +1 with probability q):
      own score     o_s = g1 + s g2 alpha  (the prompt (k, -c) scores -o_s);
      class k' != k max_c' c'(g1 z_k' + g2 z_{k'+m}) = beta |g1 + g2 alpha| or beta |g1 - g2 alpha|, each w.p. 1/2,
    independently over the m - 1 other k'. So
      Acc = sum_s P(s) [o_s > 0] prod_{k' != k} P(score_k' < o_s) = sum_s P(s) [o_s > 0] P(X < o_s)^(m-1).
    Test noise is not part of this computation (the paper's theorems assume none): e > 0 is a ValueError.
    A score difference within tie_tol of zero at a positive-probability point is a ValueError (the
    prediction there depends on the class order).
    """
    if e > 0:
        raise ValueError(f"DM2's exact accuracy has no test noise: sigma_xi = {cfg.sigma_xi} > 0; allowed sigma_xi = 0 "
                         "(the paper's assumption), or theory.population_zero_shot_accuracy_mc")
    m = cfg.m
    g1, g2 = W[0, 0], W[m, 0]
    c = np.tile([1.0, -1.0], m)
    expected = np.zeros_like(W)
    expected[np.repeat(np.arange(m), 2), np.arange(2 * m)] = g1 * c
    expected[m + np.repeat(np.arange(m), 2), np.arange(2 * m)] = g2 * c
    if np.abs(W - expected).max() > tie_tol:
        raise ValueError("DM2's exact accuracy needs class scores c'(g1 z_k' + g2 z_k'+m) shared by all classes; "
                         "this rank splits a tied singular subspace")
    others = cfg.beta * np.abs(np.array([g1 + g2 * cfg.alpha, g1 - g2 * cfg.alpha]))
    acc = 0.0
    for weight, own in ((q, g1 + g2 * cfg.alpha), (1 - q, g1 - g2 * cfg.alpha)):
        gaps = [own] + ([own - x for x in others] if m > 1 and cfg.beta > 0 else [])
        if weight > 0 and min(abs(g) for g in gaps) <= tie_tol:
            raise ValueError(f"DM2 at a tie: a score difference is 0 (alpha {cfg.alpha}, beta {cfg.beta}, pi {cfg.pi}, "
                             f"m {m}); the prediction depends on the class order")
        if own > 0:
            beat = 1.0 if cfg.beta == 0 else float(np.mean(others < own))
            acc += weight * beat ** (m - 1)
    return float(acc)


def dm2_thresholds(cfg: DM2Config) -> tuple[float, float]:
    """(pi_1, pi~) of DM2 (the paper's Eq. 31 and Thm 5.4): full-rank MMCL is 100% accurate on P* iff
    pi > pi~ = ((1+beta) alpha^2 - 1 + beta) / ((1-beta) beta^2 (m-1)); its own-class score stays positive on
    every test point iff pi > pi_1 = (alpha^2 - 1) / (beta^2 (m-1)). Infinite when beta = 0.
    """
    den = cfg.beta**2 * (cfg.m - 1)
    if den == 0:
        return math.inf, math.inf
    return (cfg.alpha**2 - 1) / den, ((1 + cfg.beta) * cfg.alpha**2 - 1 + cfg.beta) / ((1 - cfg.beta) * den)


def m1_population_accuracy(cfg: M1Config, test: str | float, test_noise: bool = True) -> float:
    """The M1 closed form (docs/theory.md#m1-closed-form), full rank, core prompts:

    Acc(q) = q Phi((w+m)/tau) + (1-q) Phi((w-m)/tau),  w = 1 + r sigma_core^2,  m = 2p - 1,
    tau = sqrt(w^2 (sigma_core^2 + e) + m^2 (sigma_spu^2 + e)),  e = sigma_xi^2 / d.
    """
    q = agreement(test, 2)
    w, m = 1 + cfg.r * cfg.sigma_core**2, 2 * cfg.p - 1
    e = cfg.sigma_xi**2 / cfg.d if test_noise else 0.0
    tau = math.sqrt(w**2 * (cfg.sigma_core**2 + e) + m**2 * (cfg.sigma_spu**2 + e))
    if tau > 0:
        return float(q * stats.norm.cdf((w + m) / tau) + (1 - q) * stats.norm.cdf((w - m) / tau))
    # no randomness: each group is decided by the sign of its margin; a zero margin is a tie, which the
    # first-index rule gives to y = -1 (index 0) and not to y = +1, so 1/2 over the two mirrored groups
    step = lambda margin: 1.0 if margin > TIE_RTOL * (abs(w) + abs(m)) else (
        0.5 if margin >= -TIE_RTOL * (abs(w) + abs(m)) else 0.0)
    return q * step(w + m) + (1 - q) * step(w - m)


def bayes_core_accuracy(cfg: Config) -> float:
    """Accuracy of the Bayes classifier that sees only the noise-free class core: Phi(1/sigma_core).

    M1: sign(z_core); M2 (no details at test): argmax_k c_k, correct iff c_y > 0. DM2: the core
    coordinates name the class exactly (|z_k| = 1 > beta = |z_j|), so 1. The model's _THEORY entry.
    """
    return _THEORY[cfg.model].bayes_core(cfg)


def _gaussian_core_bayes(cfg: M1Config | M2Config) -> float:
    """Phi(1/sigma_core) (1 when sigma_core = 0) = P(1 + sigma_core e > 0): the class's own core coordinate is
    positive (M1: sign(z_core) = y; M2 at test, other cores 0: argmax_k c_k = y iff c_y > 0)."""
    return 1.0 if cfg.sigma_core == 0 else float(stats.norm.cdf(1.0 / cfg.sigma_core))


class ModelTheory(NamedTuple):
    """This module's formulas for one model (an entry of _THEORY, keyed by the config's `model` name).

    cross_covariance: cfg -> Cov(z_I, z_T), (l, l) float64.
    accuracy: (cfg, W (l, K), tie_tol, test, e) -> exact zero-shot accuracy of the class scores u^T W on the test
        distribution, e the projected test noise variance per coordinate (population_zero_shot_accuracy).
    bayes_core: cfg -> accuracy of the Bayes classifier of the noise-free class core (bayes_core_accuracy).
    """

    cross_covariance: Callable[[Config], np.ndarray]
    accuracy: Callable[[Config, np.ndarray, float, str | float, float], float]
    bayes_core: Callable[[Config], float]


def _dm2_test_accuracy(cfg: DM2Config, W: np.ndarray, tie_tol: float, test: str | float, e: float = 0.0) -> float:
    """dm2_zero_shot_accuracy at q = P(z_{k+m} = c alpha) = agreement(test, 2)."""
    return dm2_zero_shot_accuracy(cfg, W, tie_tol, agreement(test, 2), e)


_THEORY = {
    "M1": ModelTheory(m1_cross_covariance, gaussian_test_accuracy, _gaussian_core_bayes),
    "M2": ModelTheory(m2_cross_covariance, gaussian_test_accuracy, _gaussian_core_bayes),
    "DM2": ModelTheory(dm2_cross_covariance, _dm2_test_accuracy, lambda cfg: 1.0),  # the core names the class exactly
}


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


# ------------------------------------------------------------------ InfoNCE at finite temperature
#
# docs/temperature.md#population-optimum. In the population (n -> infinity; the batch size of the softmax
# denominator held fixed) a linear encoder gains nothing from the noise directions orthogonal to D (they are
# independent of everything), so it reads the latent through B (p x l) = W D: the image embedding is
# normalise(B_I (z_I + D_I^T xi_I)) and the caption's normalise(B_T (z_T + D_T^T xi_T)), the projected noise
# N(0, sigma_xi^2/d I_l). Without biases the embeddings lie in span(B), so p = l = 2 loses nothing in M1, and
# the symmetric InfoNCE loss depends only on the 8 entries of B_I, B_T (up to a common rotation and a
# positive scale of each). The population loss is an expectation over latent batches; it is computed on a
# fixed sample of `samples` latent pairs split into batches (sample-average approximation, common random
# numbers, so the objective is smooth and deterministic) and minimised by L-BFGS with the analytic gradient.
# Zero-shot: class k scores <normalise(B_I x), normalise(B_T t_k)>; the image norm is one positive factor
# for all k, so the scores are linear in the test latent with weights W[:, k] = B_I^T normalise(B_T t_k),
# and the accuracy is exact, as in population_zero_shot_accuracy.

INFONCE_SAMPLES = 20_000  # latent pairs of the sample-average approximation (default)
INFONCE_GTOL = 1e-9  # L-BFGS projected-gradient tolerance of the population optimum
INFONCE_COLLAPSED = 1e-4  # rank_ratio below which the optimum counts as collapsed to rank one


def m1_latent_pairs(cfg: M1Config, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n training pairs of M1 as a linear encoder restricted to D's columns sees them, float64 numpy.

    Returns (z_I + D_I^T xi_I, z_T + D_T^T xi_T), each (n, 2): the training latents of datamodel.sample_latents
    (docs/models.md#m1) plus the projected noise N(0, sigma_xi^2/d I_2), all drawn by JAX (float32) from
    PRNGKey(seed) and widened to float64.
    """
    if cfg.model != "M1":
        raise ValueError(f"m1_latent_pairs needs an M1 config, got {type(cfg).__name__}")
    import jax

    k_z, k_image, k_text = jax.random.split(jax.random.PRNGKey(seed), 3)
    lat = sample_latents(k_z, cfg, n)
    sd = cfg.sigma_xi / math.sqrt(cfg.d)
    noisy = lambda z, k: np.asarray(z, np.float64) + sd * np.asarray(jax.random.normal(k, z.shape), np.float64)
    return noisy(lat.z_image, k_image), noisy(lat.z_text, k_text)


def infonce_batch_loss(b_image: np.ndarray, b_text: np.ndarray, z_image: np.ndarray, z_text: np.ndarray,
                       tau: float, with_grad: bool = True):
    """Mean symmetric InfoNCE (losses.infonce_loss) of normalised linear embeddings over a stack of batches.

    b_image, b_text (p, l); z_image, z_text (batches, N, l): batch b embeds u_i = normalise(B_I z_I,i) and
    v_j = normalise(B_T z_T,j) and its loss is (1/2)[CE of rows + CE of columns] of the logits u_i.v_j / tau.
    Returns the mean over batches, and with with_grad its gradient (dL/dB_I, dL/dB_T), float64.
    """
    a_i, a_t = z_image @ b_image.T, z_text @ b_text.T  # (batches, N, p)
    n_i, n_t = np.linalg.norm(a_i, axis=-1, keepdims=True), np.linalg.norm(a_t, axis=-1, keepdims=True)
    u, v = a_i / n_i, a_t / n_t
    s = (u @ np.swapaxes(v, 1, 2)) / tau  # (batches, N, N), entries in [-1/tau, 1/tau]
    if 2.0 / tau < 600.0:  # one exponential per entry: no row or column can underflow entirely
        e = np.exp(s - s.max(axis=(1, 2), keepdims=True))
        e_row = e_col = e
    else:
        e_row, e_col = np.exp(s - s.max(2, keepdims=True)), np.exp(s - s.max(1, keepdims=True))
    p_row = e_row / e_row.sum(2, keepdims=True)  # softmax over captions j for image i
    p_col = e_col / e_col.sum(1, keepdims=True)  # softmax over images i for caption j
    batches, N = s.shape[0], s.shape[1]
    loss = -0.5 * (np.log(np.diagonal(p_row, axis1=1, axis2=2)).mean()
                   + np.log(np.diagonal(p_col, axis1=1, axis2=2)).mean())
    if not with_grad:
        return float(loss)
    g = p_row + p_col
    idx = np.arange(N)
    g[:, idx, idx] -= 2.0
    g /= 2 * N * batches * tau  # dL/d(u_i . v_j)
    du, dv = g @ v, np.swapaxes(g, 1, 2) @ u
    da_i = (du - np.sum(du * u, -1, keepdims=True) * u) / n_i
    da_t = (dv - np.sum(dv * v, -1, keepdims=True) * v) / n_t
    l = z_image.shape[-1]
    return float(loss), (da_i.reshape(-1, da_i.shape[-1]).T @ z_image.reshape(-1, l),
                         da_t.reshape(-1, da_t.shape[-1]).T @ z_text.reshape(-1, l))


def _batched(z: np.ndarray, batch: int) -> np.ndarray:
    usable = (z.shape[0] // batch) * batch
    return z[:usable].reshape(-1, batch, z.shape[1])


def _infonce_starts(l: int) -> list[np.ndarray]:
    """Starting points of the L-BFGS search (flattened B_I, B_T): the identity, a shear of it, and a nearly
    rank-one start along the last (spurious) coordinate, where the optimum goes at large tau."""
    shear = np.eye(l)
    shear[0, 1:] = -0.9
    spurious = np.diag([0.1] * (l - 1) + [1.0])
    return [np.concatenate([m.ravel(), m.ravel()]) for m in (np.eye(l), shear, spurious)]


def infonce_population_optimum(cfg: M1Config, tau: float, batch: int | None = None,
                               samples: int = INFONCE_SAMPLES, seed: int = 0) -> dict:
    """Population optimum of symmetric InfoNCE for linear encoders in M1 at temperature tau (docs/temperature.md#population-optimum).

    batch: the number of pairs in each softmax denominator (default cfg.n: the package's full-batch learner);
    samples latent pairs (m1_latent_pairs, seed) are split into samples // batch batches. Minimises
    infonce_batch_loss over B_I, B_T (2 x 2) from the starts of _infonce_starts by L-BFGS and keeps the best.
    Returns {"b_image", "b_text" (2, 2), "M" = B_I^T B_T / ||B_I^T B_T||_F, "loss", "grad_norm" (of the
    scale-free loss at the optimum, with B_I, B_T scaled to unit Frobenius norm), "batches", "rank_ratio"
    (the smaller of sigma_min / sigma_max of B_I and B_T: near 0 when the optimum collapses to rank one,
    which it does at large tau, docs/temperature.md#large-tau-population)}.
    """
    key = (cfg, float(tau), batch, samples, seed)
    if key not in _INFONCE_OPTIMA:
        _INFONCE_OPTIMA[key] = _infonce_population_optimum(cfg, float(tau), batch, samples, seed)
    return dict(_INFONCE_OPTIMA[key])


_INFONCE_OPTIMA: dict = {}  # infonce_population_optimum's cache: (cfg, tau, batch, samples, seed) -> result


def _infonce_population_optimum(cfg, tau, batch, samples, seed) -> dict:
    from scipy import optimize

    if cfg.model != "M1":
        raise ValueError(f"infonce_population_optimum is derived for M1 only, got {type(cfg).__name__}")
    if not tau > 0:
        raise ValueError(f"tau = {tau!r} is out of range: allowed (0, inf)")
    batch = cfg.n if batch is None else int(batch)
    if not 2 <= batch <= samples:
        raise ValueError(f"batch = {batch} is out of range: allowed 2 <= batch <= samples = {samples}")
    z_image, z_text = m1_latent_pairs(cfg, samples, seed)
    zb_i, zb_t = _batched(z_image, batch), _batched(z_text, batch)
    l = z_image.shape[1]

    def objective(theta):  # tau (L - log N): the same minimiser, O(1) at every tau (L - log N = O(1/tau) for large tau)
        loss, (g_i, g_t) = infonce_batch_loss(theta[: l * l].reshape(l, l), theta[l * l:].reshape(l, l), zb_i, zb_t, tau)
        return tau * (loss - math.log(batch)), tau * np.concatenate([g_i.ravel(), g_t.ravel()])

    best = None
    for start in _infonce_starts(l):
        res = optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                options={"maxiter": 3000, "gtol": INFONCE_GTOL, "ftol": 1e-15})
        if best is None or res.fun < best.fun:
            best = res
    b_i, b_t = best.x[: l * l].reshape(l, l), best.x[l * l:].reshape(l, l)
    b_i, b_t = b_i / np.linalg.norm(b_i), b_t / np.linalg.norm(b_t)
    grad = objective(np.concatenate([b_i.ravel(), b_t.ravel()]))[1] / tau
    m = b_i.T @ b_t
    sv = [np.linalg.svd(b, compute_uv=False) for b in (b_i, b_t)]
    return {"b_image": b_i, "b_text": b_t, "M": m / np.linalg.norm(m), "loss": float(best.fun / tau + math.log(batch)),
            "grad_norm": float(np.linalg.norm(grad)), "batches": zb_i.shape[0],
            "rank_ratio": float(min(s[-1] / s[0] for s in sv))}


def infonce_memory(cfg: M1Config, batch: int | None = None, samples: int = INFONCE_SAMPLES) -> tuple[int, str]:
    """(bytes, how they were counted) of the float64 arrays infonce_population_optimum holds at once: the
    logits, their exponentials, the two softmaxes, the gradient and a temporary, each (samples // batch) x batch x
    batch (infonce_batch_loss), batch = cfg.n by default."""
    batch = min(cfg.n if batch is None else int(batch), samples)
    return 8 * 6 * (samples // batch) * batch * batch, (f"6 float64 arrays of {samples // batch} batches x batch^2 "
                                                       f"(batch = n = {batch})")


def infonce_score_weights(b_image: np.ndarray, b_text: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Latent-space class-score weights of normalised linear encoders, (l, K): W[:, k] = B_I^T normalise(B_T t_k).

    Class k scores <normalise(B_I x), normalise(B_T t_k)> = (B_I x).W-column / ||B_I x||; the image norm is
    a common positive factor, so argmax_k is that of x^T W. prompts (K, l).
    """
    e = np.asarray(prompts, np.float64) @ np.asarray(b_text, np.float64).T  # (K, p)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    return np.asarray(b_image, np.float64).T @ e.T


def infonce_population_accuracy(cfg: M1Config, test: str | float, tau: float, *, prompt: str = "core",
                                batch: int | None = None, samples: int = INFONCE_SAMPLES, seed: int = 0,
                                test_noise: bool = True) -> float:
    """Zero-shot accuracy of the population InfoNCE optimum (infonce_population_optimum), exact Gaussian.

    The test latent gets the projected noise sigma_xi^2/d on each coordinate (the optimum's encoder has
    no component off D's columns); ties as in population_zero_shot_accuracy. When the optimum collapses to
    rank one (rank_ratio < INFONCE_COLLAPSED; M1 defaults: tau >~ 300) the embedding of a prompt off the
    surviving direction is 0/0 in the limit, so the prediction is undefined: ValueError.
    """
    opt = infonce_population_optimum(cfg, float(tau), batch, samples, seed)
    if opt["rank_ratio"] < INFONCE_COLLAPSED:
        raise ValueError(f"tau = {tau}: the population InfoNCE optimum collapses to rank one (sigma_min/sigma_max = "
                         f"{opt['rank_ratio']:.1e}), so its zero-shot prediction is undefined; allowed: a smaller tau")
    P = np.asarray(prompt_latents(cfg, prompt), np.float64)
    W = infonce_score_weights(opt["b_image"], opt["b_text"], P)
    sd = math.sqrt(max(cfg.sigma_core, cfg.sigma_spu) ** 2 + cfg.sigma_xi**2 / cfg.d)
    tie_tol = TIE_RTOL * float(np.abs(W).max() * math.sqrt(W.shape[0]) * (1 + sd) * np.linalg.norm(P, axis=1).max())
    e = cfg.sigma_xi**2 / cfg.d if test_noise else 0.0
    return float(gaussian_test_accuracy(cfg, W, tie_tol, test, e))
