"""Property tests of the theory's statements (hypothesis), drawn only where their assumptions hold.

Statements (docs/theory.md): SL min-norm fails under Sagawa et al.'s conditions (#sagawa); the
population zero-shot accuracy of the linear-loss minimiser (#accuracy) rises with annotated
feature sharing (M2) and with caption richness, ignores the spurious annotation with core prompts
at full rank (#zero-shot-score), and agrees with a Monte Carlo over sampled d-dimensional data; gradient descent on the
linear loss reaches the closed-form minimiser (#closed-form).

Tolerances are the computation's precision: 1e-6 for the exact routes (Genz's algorithm runs at
1e-7 per test group; Phi is exact to rounding), 4 standard errors for Monte Carlo, and the float32
floor measured for gradient descent. Shapes and example counts are small so that the file runs in
well under a minute on a loaded 2-core machine; the one long case is marked slow.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from mmcl_theory.datamodel import (dictionaries, make_config, observe, prompt_latents, sample_dataset,
                                   sample_latents)
from mmcl_theory.learners import mmcl_linear_gd, sl_min_norm
from mmcl_theory.theory import (
    closed_form_minimiser, contrastive_cross_covariance, population_cross_covariance,
    population_zero_shot_accuracy, sagawa_conditions,
)

EXACT_TOL = 1e-6  # exact routes: Genz's algorithm at abseps 1e-7 per group, Phi to rounding
TESTS = ("aligned", "independent", "flipped")
unit = st.floats(0, 1)


def _unique_ranks(cfg) -> list[int]:
    """Ranks p < l at which the top-p truncation of Cov(z_I, z_T) is unique (sigma_p > sigma_{p+1}),
    the assumption of docs/theory.md#closed-form; M2 with K > 2 has tied singular values by symmetry."""
    sigma = np.linalg.svd(population_cross_covariance(cfg), compute_uv=False)
    return [p for p in range(1, len(sigma)) if sigma[p - 1] - sigma[p] > 1e-6 * sigma[0]]


# ------------------------------------------------------------------ Sagawa et al.'s theorem (SL)


@functools.partial(jax.jit, static_argnames="n_min")
def _sl_worst_group_accuracy(key, cfg, n_min: int):
    """Worst-group test accuracy of sl_min_norm trained on M1 with FIXED group sizes, as in Sagawa et
    al.'s theorem: n_maj = round(p n) points with a = y and the rest with a = -y.

    The classifier is sign(x^T g), g = w_1 - w_0; on the test group (y, a), x^T g is Gaussian with mean
    y v_core + a v_spu (v = D_I^T g) and variance sigma_core^2 v_core^2 + sigma_spu^2 v_spu^2 +
    (sigma_xi^2/d) ||g||^2, so its accuracy is Phi(y mean / sd): exact, no test sample. Min over the
    four groups (the two minority groups are the worst).
    """
    k_dict, k_maj, k_min, k_noise = jax.random.split(key, 4)
    d_image = dictionaries(k_dict, cfg)[0]
    maj = sample_latents(k_maj, cfg, cfg.n - n_min, "aligned")
    z, label = maj.z_image, maj.label
    if n_min:
        mino = sample_latents(k_min, cfg, n_min, "flipped")
        z, label = jnp.concatenate([z, mino.z_image]), jnp.concatenate([label, mino.label])
    x = observe(k_noise, z, d_image, cfg.sigma_xi)
    w = sl_min_norm(x, label, 2)
    g = w[:, 1] - w[:, 0]
    v = d_image.T @ g
    sd = jnp.sqrt(cfg.sigma_core**2 * v[0]**2 + cfg.sigma_spu**2 * v[1]**2 + cfg.sigma_xi**2 / cfg.d * g @ g)
    groups = jnp.array([[y, a] for y in (-1.0, 1.0) for a in (-1.0, 1.0)])
    margins = groups[:, 0] * (groups @ v) / sd
    return jnp.min(jax.scipy.stats.norm.cdf(margins))


def _sagawa_config(n: int, n_min: int, sigma_core: float, spu_frac: float, xi_frac: float, d: int):
    """M1 inside Sagawa's conditions (docs/theory.md#sagawa): sigma_spu^2 and sigma_xi^2 a fraction of their bounds."""
    n_maj = n - n_min
    return make_config("M1", n=n, d=d, p=n_maj / n, sigma_core=sigma_core,
                       sigma_spu=math.sqrt(spu_frac / (16 * math.log(100 * n_maj))),
                       sigma_xi=math.sqrt(xi_frac * n_maj) / 600)


# A training minority of at least 1% of the points is impossible under the theorem's p >= 1 - 1/2001
# (the minority is then at most 0.05% of the points, i.e. none below n = 2001): the property is tested
# in the theorem's own regime, d = 20 n >> n, where the fast case has no minority point at all and
# the slow case has exactly one (n = 2002).


def _assert_worst_group_at_most_one_third(seed, n, n_min, d, sigma_core, spu_frac, xi_frac):
    cfg = _sagawa_config(n, n_min, sigma_core, spu_frac, xi_frac, d=d)
    assert all(ok for ok, _ in sagawa_conditions(cfg).values()), sagawa_conditions(cfg)
    assert float(_sl_worst_group_accuracy(jax.random.key(seed), cfg, n_min=n_min)) <= 1 / 3


# Fractions of the variance bounds stay below 1: at exactly 1, sqrt then square (and the config's float32)
# can round sigma^2 past its bound, and the premise check (not the theorem) fails (hypothesis found
# spu_frac = 1.0 under Python 3.12).
inside_bound = st.floats(0, 0.999)
sagawa_draws = given(seed=st.integers(0, 2**31 - 1), sigma_core=st.floats(1, 3), spu_frac=inside_bound,
                     xi_frac=inside_bound)


@settings(max_examples=6, deadline=None)
@sagawa_draws
def test_sl_min_norm_worst_group_at_most_one_third_under_sagawa_conditions(seed, sigma_core, spu_frac, xi_frac):
    _assert_worst_group_at_most_one_third(seed, 100, 0, 2000, sigma_core, spu_frac, xi_frac)


@pytest.mark.slow
@settings(max_examples=2, deadline=None)
@sagawa_draws
def test_sl_min_norm_worst_group_under_sagawa_conditions_with_a_minority_point(seed, sigma_core, spu_frac, xi_frac):
    _assert_worst_group_at_most_one_third(seed, 2002, 1, 20020, sigma_core, spu_frac, xi_frac)


# ------------------------------------------------------------------ population predictions (exact route)


@settings(max_examples=10, deadline=None)
@given(K=st.integers(2, 5), sigma_core=st.floats(0, 3), sigma_spu=st.floats(0, 0.5), u=unit, beta=unit, r=unit,
       s=unit, a1=unit, a2=unit, test=st.sampled_from(["independent", "flipped"]))
def test_m2_shifted_accuracy_non_decreasing_in_annotate(K, sigma_core, sigma_spu, u, beta, r, s, a1, a2, test):
    """Assumption p >= 1/K (the spurious attribute follows the class in training at least by chance).
    Why (docs/theory.md#m2-covariance, b = beta annotate): the core margin Cov(c_k, c_T,k) - Cov(c_j, c_T,k)
    grows with b at rate ((K-1) v - 1 - beta (K-2))/K >= 0, and every spurious weight is
    (p - 1/K)(1 - b)/K or (1 - Kp)(1 - b)/(K^2 (K-1)), shrinking towards 0 as b grows: with p >= 1/K it
    only ever pulls towards the training-majority class, which the shifted tests punish."""
    p = 1 / K + (1 - 1 / K) * u
    acc = lambda annotate: population_zero_shot_accuracy(make_config(
        "M2", K=K, sigma_core=sigma_core, sigma_spu=sigma_spu, p=p, beta=beta, r=r, spurious_annotation=s,
        annotate=annotate), test)
    lo, hi = sorted((a1, a2))
    assert acc(lo) <= acc(hi) + EXACT_TOL


@settings(max_examples=10, deadline=None)
@given(model=st.sampled_from(["M1", "M2"]), K=st.integers(2, 5), sigma_core=st.floats(0, 3),
       sigma_spu=st.floats(0, 0.5), p=unit, r=unit, beta=unit, annotate=unit, s1=unit, s2=unit, q=unit)
def test_core_prompt_full_rank_accuracy_invariant_to_spurious_annotation(model, K, sigma_core, sigma_spu, p, r,
                                                                         beta, annotate, s1, s2, q):
    extra = dict(K=K, beta=beta, annotate=annotate) if model == "M2" else {}
    acc = lambda s: population_zero_shot_accuracy(make_config(
        model, sigma_core=sigma_core, sigma_spu=sigma_spu, p=p, r=r, spurious_annotation=s, **extra), q)
    assert abs(acc(s1) - acc(s2)) <= EXACT_TOL


def test_spurious_annotation_does_matter_with_the_class_mean_prompt():
    """The invariance above is a property of the core prompt, not a property of the computation."""
    acc = lambda s: population_zero_shot_accuracy(make_config("M1", spurious_annotation=s), "flipped",
                                                  prompt="class_mean")
    assert acc(0.0) - acc(1.0) > 0.05


@settings(max_examples=20, deadline=None)
@given(sigma_core=st.floats(0, 3), sigma_spu=st.floats(0, 0.5), p=st.floats(0.5, 1), s=unit, r1=unit, r2=unit)
def test_m1_flipped_accuracy_non_decreasing_in_richness(sigma_core, sigma_spu, p, s, r1, r2):
    """p >= 1/2 (the spurious feature agrees with the class at least by chance): d/dr of the M1 closed
    form's argument has the sign of m^2 (sigma_spu^2 + e) + m w (sigma_core^2 + e), m = 2p - 1 >= 0."""
    acc = lambda r: population_zero_shot_accuracy(make_config(
        "M1", sigma_core=sigma_core, sigma_spu=sigma_spu, p=p, r=r, spurious_annotation=s), "flipped")
    lo, hi = sorted((r1, r2))
    assert acc(lo) <= acc(hi) + EXACT_TOL


# ------------------------------------------------------------------ exact route = Monte Carlo on sampled data


def _sampled_data_accuracy(cfg, test, rank, prompt, n: int, seed: int) -> tuple[float, float]:
    """(accuracy, standard error) of the population minimiser on n sampled d-dimensional test images.

    Shares none of theory.py's scoring: the weights are built here in d dimensions, A = D_I C_p D_T^T with C_p the
    top-rank SVD (numpy, here) of Cov(z_I, z_T) (population_cross_covariance, itself checked against sampled
    latents in test_datamodel.py) and D_I, D_T orthonormal dictionaries drawn here; prompts are observed,
    D_T t_k; images x = D_I z + xi with z from the datamodel's test sampler and xi ~ N(0, sigma_xi^2/d I_d) drawn
    in all d coordinates; the prediction is argmax_k x^T A D_T t_k, a score within 1e-9 of the largest (in units of
    the largest score's size) counting as a tie that goes to the lower class index (argmax's rule)."""
    rng = np.random.default_rng(seed)
    d, l = cfg.d, cfg.latent_dim
    C = population_cross_covariance(cfg)
    if rank is not None:
        u, sigma, vt = np.linalg.svd(C)
        C = (u[:, :rank] * sigma[:rank]) @ vt[:rank]
    d_image, d_text = (np.linalg.qr(rng.normal(size=(d, l)))[0] for _ in range(2))
    a = d_image @ C @ d_text.T  # (d, d)
    prompts = np.asarray(prompt_latents(cfg, prompt), np.float64) @ d_text.T  # (K, d)
    lat = sample_latents(jax.random.key(seed), cfg, n, test)
    x = np.asarray(lat.z_image, np.float64) @ d_image.T + rng.normal(size=(n, d)) * (cfg.sigma_xi / math.sqrt(d))
    scores = x @ (a @ prompts.T)  # (n, K)
    top = scores >= scores.max(1, keepdims=True) - 1e-9 * (1 + np.abs(scores).max(1, keepdims=True))
    hits = np.argmax(top, 1) == np.asarray(lat.label)
    return float(hits.mean()), float(hits.std() / math.sqrt(n))


def _binomial_se(exact: float, sample_se: float, n: int) -> float:
    """Standard error of a fraction of n hits when the exact accuracy is right: sqrt(p (1 - p) / n) at p = exact. The
    sample's own s.e. is 0 when every draw hits (p = 1 - 2e-6 and 100000 draws, found by hypothesis), so the larger
    of the two is used."""
    return max(sample_se, math.sqrt(exact * (1 - exact) / n))


@settings(max_examples=6, deadline=None)
@given(data=st.data(), model=st.sampled_from(["M1", "M2"]), K=st.integers(2, 5), sigma_core=st.floats(0, 2),
       sigma_spu=st.floats(0, 0.5), sigma_xi=st.floats(0, 2), p=unit, beta=unit, annotate=unit, r=unit, s=unit, q=unit,
       prompt=st.sampled_from(["core", "class_mean"]))
def test_exact_accuracy_matches_sampled_data(data, model, K, sigma_core, sigma_spu, sigma_xi, p, beta, annotate, r,
                                             s, q, prompt):
    """theory.population_zero_shot_accuracy (Gaussian orthant probabilities over datamodel.test_groups) against
    _sampled_data_accuracy, within 4 standard errors (_binomial_se). d is small (2l + 4), so the projected test noise
    sigma_xi^2 / d (up to 4/8) is large and a wrong noise term shows."""
    extra = dict(K=K, beta=beta, annotate=annotate) if model == "M2" else {}
    l = 2 * K if model == "M2" else 2
    cfg = make_config(model, sigma_core=sigma_core, sigma_spu=sigma_spu, sigma_xi=sigma_xi, p=p, r=r,
                      spurious_annotation=s, d=2 * l + 4, **extra)
    rank = data.draw(st.sampled_from([None, *_unique_ranks(cfg)]), label="rank")
    exact = population_zero_shot_accuracy(cfg, q, rank=rank, prompt=prompt)
    sampled, se = _sampled_data_accuracy(cfg, q, rank, prompt, 100_000, seed=data.draw(st.integers(0, 2**31 - 1)))
    assert 0 <= exact <= 1
    assert abs(exact - sampled) <= 4 * _binomial_se(exact, se, 100_000) + EXACT_TOL


def test_exact_accuracy_matches_sampled_data_where_the_noise_decides():
    """Fixed cases where the projected noise moves the answer by far more than 4 s.e.: M1 with noise-free latents
    (sigma_core = sigma_spu = 0) at d = 8, sigma_xi = 1.5, and M2 (K = 4) at d = 12 with its class-mean prompt."""
    for cfg, prompt, rank in [
        (make_config("M1", sigma_core=0.0, sigma_spu=0.0, sigma_xi=1.5, d=8, p=0.9, r=1.0), "core", None),
        (make_config("M2", K=4, sigma_core=0.5, beta=0.3, annotate=0.5, sigma_xi=1.0, d=12), "class_mean", None),
    ]:
        exact = population_zero_shot_accuracy(cfg, "flipped", rank=rank, prompt=prompt)
        noiseless = population_zero_shot_accuracy(cfg, "flipped", rank=rank, prompt=prompt, test_noise=False)
        sampled, se = _sampled_data_accuracy(cfg, "flipped", rank, prompt, 100_000, seed=11)
        assert abs(exact - sampled) <= 4 * _binomial_se(exact, se, 100_000) + EXACT_TOL, (cfg, exact, sampled, se)
        assert abs(noiseless - exact) > 10 * se, (cfg, exact, noiseless)  # the premise: the noise term matters


# ------------------------------------------------------------------ gradient descent -> closed form


GD_STEPS, GD_LR = 1000, 0.1
FLOAT32_EPS = float(np.finfo(np.float32).eps)
_linear_gd = jax.jit(mmcl_linear_gd, static_argnames=("embed_dim", "steps"))


@settings(max_examples=4, deadline=None)
@given(data=st.data(), model=st.sampled_from(["M1", "M2"]), seed=st.integers(0, 2**31 - 1), rho=st.floats(0.3, 3))
def test_linear_gd_converges_to_the_closed_form_of_the_same_rank(data, model, seed, rho):
    """mmcl_linear_gd (momentum 0.9, lr 0.1, 1000 steps, float32) -> W_I^T W_T = A* = top-p SVD of S / rho
    (docs/theory.md#closed-form), for any seed and any rank p whose minimiser is well separated:
    sigma_p - sigma_{p+1} >= sigma_p / 5 (the assumption; ranks inside the noise bulk of S, where
    consecutive singular values differ by a few percent, need ~100x more steps). Tolerance: the float32
    floor, 10 eps_32 times sigma_1 / sigma_p (measured: <= 3.4e-7 at these shapes)."""
    cfg = make_config("M1", n=60, d=120) if model == "M1" else make_config("M2", K=2, n=80, d=120)
    key = jax.random.key(seed)
    dicts = dictionaries(key, cfg)
    train = sample_dataset(jax.random.fold_in(key, 1), cfg, dicts, cfg.n)
    S = contrastive_cross_covariance(np.asarray(train.x_image), np.asarray(train.x_text))
    sigma = np.linalg.svd(S, compute_uv=False)
    separated = [p for p in range(1, cfg.latent_dim + 2) if sigma[p - 1] - sigma[p] >= sigma[p - 1] / 5]
    assume(separated)
    rank = data.draw(st.sampled_from(separated), label="rank")
    w_i, w_t = _linear_gd(jax.random.fold_in(key, 2), train.x_image, train.x_text, embed_dim=rank, rho=rho,
                          steps=GD_STEPS, lr=GD_LR)
    a_gd = np.asarray(w_i, np.float64).T @ np.asarray(w_t, np.float64)
    a_star = closed_form_minimiser(S, rank, rho)
    assert np.linalg.norm(a_gd - a_star) / np.linalg.norm(a_star) <= 10 * FLOAT32_EPS * sigma[0] / sigma[rank - 1]
