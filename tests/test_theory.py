"""Theory: identities (Q3-Q5), the SPEC reference tables (Q1, M2), and property tests of the predictions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
from mmcl_theory.evaluate import accuracy, evaluate_point, zero_shot_logits
from mmcl_theory.learners import LearnerSettings, mmcl_closed_form, mmcl_linear_gd
from mmcl_theory.theory import (
    bayes_core_accuracy, closed_form_minimiser, contrastive_cross_covariance, m1_population_accuracy,
    population_zero_shot_accuracy, population_zero_shot_accuracy_mc, sagawa_conditions,
)

TESTS = ("aligned", "independent", "flipped")

# SPEC section 3: population values (defaults), and the min-norm SL row (simulated)
M1_TABLE = {1.0: (0.926, 0.818, 0.709), 0.5: (0.945, 0.800, 0.655), 0.0: (0.971, 0.755, 0.540)}
# SPEC section 4, population column (shifted test): (sigma_core, beta, annotate) -> accuracy
M2_TABLE = {(0, 0, 0): 0.988, (0, 0, 1): 0.988, (0, 0.2, 0): 0.080, (0, 0.2, 1): 1.000, (0, 0.4, 0): 0.000,
            (0, 0.4, 1): 1.000, (1, 0, 0): 0.714, (1, 0, 1): 0.714, (1, 0.2, 0): 0.697, (1, 0.2, 1): 0.781,
            (1, 0.4, 0): 0.676, (1, 0.4, 1): 0.807}


def _data(cfg, seed=0):
    key = jax.random.key(seed)
    dicts = dictionaries(key, cfg)
    return dicts, sample_dataset(jax.random.fold_in(key, 1), cfg, dicts, cfg.n)


# ------------------------------------------------------------------ identities


def test_q4_S_is_n_over_n_minus_1_times_centred_cross_covariance():
    rng = np.random.default_rng(0)
    x_i, x_t = rng.normal(size=(37, 11)) + 2.0, rng.normal(size=(37, 7)) - 1.0
    n = 37
    centred = (x_i - x_i.mean(0)).T @ (x_t - x_t.mean(0)) / n
    np.testing.assert_allclose(contrastive_cross_covariance(x_i, x_t), n / (n - 1) * centred, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [0, 1, 2, 5])
def test_jax_closed_form_equals_numpy_svd_minimiser(rank):
    cfg = make_config("M1", n=60, d=150, sigma_core=1.0)
    _, data = _data(cfg)
    w_i, w_t = mmcl_closed_form(data.x_image, data.x_text, rank, rho=0.7)
    S = contrastive_cross_covariance(np.asarray(data.x_image), np.asarray(data.x_text))
    expected = closed_form_minimiser(S, rank or None, rho=0.7)
    got = np.asarray(w_i, np.float64).T @ np.asarray(w_t, np.float64)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_q3_gradient_descent_limit_equals_closed_form():
    cfg = make_config("M1", n=100, d=200, r=0.5)
    _, data = _data(cfg, seed=3)
    rho, rank = 0.5, 2
    w_i, w_t = mmcl_linear_gd(jax.random.key(7), data.x_image, data.x_text, rank, rho, steps=3000, lr=0.1)
    a_gd = np.asarray(w_i, np.float64).T @ np.asarray(w_t, np.float64)
    S = contrastive_cross_covariance(np.asarray(data.x_image), np.asarray(data.x_text))
    a_star = closed_form_minimiser(S, rank, rho)
    assert np.linalg.norm(a_gd - a_star) / np.linalg.norm(a_star) < 1e-3


@settings(max_examples=5, deadline=None)
@given(rho=st.floats(0.01, 100), seed=st.integers(0, 10_000))
def test_q5_zero_shot_invariant_to_rho_and_invertible_reparametrisation(rho, seed):
    cfg = make_config("M1", n=80, d=120, n_test=500)
    dicts, data = _data(cfg, seed)
    test = sample_dataset(jax.random.key(seed + 1), cfg, dicts, cfg.n_test, "flipped")
    prompts = prompt_latents(cfg) @ dicts[1].T
    w_i, w_t = mmcl_closed_form(data.x_image, data.x_text, rank=2, rho=1.0)
    base = jnp.argmax(zero_shot_logits(w_i, w_t, test.x_image, prompts), 1)
    w_i2, w_t2 = mmcl_closed_form(data.x_image, data.x_text, rank=2, rho=rho)
    assert jnp.all(jnp.argmax(zero_shot_logits(w_i2, w_t2, test.x_image, prompts), 1) == base)
    R = jax.random.normal(jax.random.key(seed), (2, 2)) + 3 * jnp.eye(2)  # invertible
    w_i3, w_t3 = R @ w_i, jnp.linalg.inv(R).T @ w_t  # W_I -> R W_I, W_T -> R^{-T} W_T keeps W_I^T W_T
    agree = jnp.mean(jnp.argmax(zero_shot_logits(w_i3, w_t3, test.x_image, prompts), 1) == base)
    assert agree > 0.999  # float32 ties at most


# ------------------------------------------------------------------ reference tables


@pytest.mark.parametrize("r", [1.0, 0.5, 0.0])
def test_m1_population_table(r):
    cfg = make_config("M1", r=r)
    for test, expected in zip(TESTS, M1_TABLE[r]):
        assert abs(m1_population_accuracy(cfg, test) - expected) < 0.0015
        # second method: the generic Gaussian orthant computation over the covariance
        assert abs(population_zero_shot_accuracy(cfg, test) - m1_population_accuracy(cfg, test)) < 1e-9


def test_m1_rank_one_and_bayes_core():
    cfg = make_config("M1")
    assert bayes_core_accuracy(cfg) == pytest.approx(0.8413447, abs=1e-6)
    acc1 = population_zero_shot_accuracy(cfg, "flipped", rank=1)
    mc, se = population_zero_shot_accuracy_mc(cfg, "flipped", jax.random.key(0), 400_000, rank=1)
    assert abs(acc1 - mc) < 4 * se + 1e-4


@pytest.mark.parametrize("key", list(M2_TABLE))
def test_m2_population_table(key):
    sigma_core, beta, annotate = key
    cfg = make_config("M2", sigma_core=sigma_core, beta=beta, annotate=annotate, d=3000)
    assert abs(population_zero_shot_accuracy(cfg, "flipped") - M2_TABLE[key]) < 0.03


def test_m2_exact_matches_monte_carlo_and_d200_note():
    cfg = make_config("M2", sigma_core=1.0, beta=0.4, annotate=1.0)
    exact = population_zero_shot_accuracy(cfg, "flipped")
    mc, se = population_zero_shot_accuracy_mc(cfg, "flipped", jax.random.key(1), 400_000)
    assert abs(exact - mc) < 4 * se
    small_d = make_config("M2", sigma_core=0.0, beta=0.0, d=200)
    assert abs(population_zero_shot_accuracy(small_d, "flipped") - 0.815) < 0.005  # SPEC: test noise matters


def test_finite_sample_m1_matches_spec_simulation_and_sl_fails():
    """SPEC M1 table, simulated columns: closed-form MMCL at the defaults (5 seeds) and SL min-norm."""
    cfg = make_config("M1", r=1.0)
    run = jax.jit(jax.vmap(lambda k: evaluate_point(k, cfg, LearnerSettings(), ("mmcl_closed_form", "sl_min_norm"))))
    out = run(jax.random.split(jax.random.key(11), 5))
    mmcl = np.asarray(out["mmcl_closed_form"]).mean(0)
    sl = np.asarray(out["sl_min_norm"]).mean(0)
    np.testing.assert_allclose(mmcl, (0.926, 0.821, 0.702), atol=0.02)
    assert sl[0] > 0.98 and abs(sl[1] - 0.5) < 0.05 and sl[2] < 0.10  # Q2


# ------------------------------------------------------------------ properties


@settings(max_examples=3, deadline=None)
@given(sigma_core=st.floats(0.5, 2), p=st.floats(0.6, 0.97), r=st.floats(0, 1))
def test_population_matches_finite_sample_at_large_n(sigma_core, p, r):
    cfg = make_config("M1", sigma_core=sigma_core, p=p, r=r, n=2000, d=300, n_test=4000)
    out = jax.jit(lambda k: evaluate_point(k, cfg, LearnerSettings(), ("mmcl_closed_form",)))(jax.random.key(5))
    for acc, test in zip(np.asarray(out["mmcl_closed_form"]), TESTS):
        theory = population_zero_shot_accuracy(cfg, test)
        # test-set sampling error (4 s.e.) plus the estimation error of S at this n
        tolerance = 4 * np.sqrt(theory * (1 - theory) / cfg.n_test) + 2 / np.sqrt(cfg.n)
        assert abs(acc - theory) < tolerance


@settings(max_examples=30, deadline=None)
@given(sigma_core=st.floats(0.1, 3), sigma_spu=st.floats(0, 0.5), p=st.floats(0.5, 1), r1=st.floats(0, 1),
       r2=st.floats(0, 1))
def test_flipped_accuracy_is_monotone_in_richness(sigma_core, sigma_spu, p, r1, r2):
    lo, hi = sorted((r1, r2))
    acc = lambda r: population_zero_shot_accuracy(make_config("M1", sigma_core=sigma_core, sigma_spu=sigma_spu,
                                                              p=p, r=r), "flipped")
    assert acc(lo) <= acc(hi) + 1e-12


@settings(max_examples=8, deadline=None)
@given(K=st.integers(2, 5), sigma_core=st.floats(0.05, 2), p=st.floats(0, 1), beta=st.floats(0, 1),
       annotate=st.floats(0, 1), r=st.floats(0, 1), q=st.floats(0, 1), rank=st.sampled_from([None, 1, 3]))
def test_population_accuracy_is_a_probability_and_matches_monte_carlo(K, sigma_core, p, beta, annotate, r, q, rank):
    cfg = make_config("M2", K=K, sigma_core=sigma_core, p=p, beta=beta, annotate=annotate, r=r)
    acc = population_zero_shot_accuracy(cfg, q, rank=rank)
    assert -1e-9 <= acc <= 1 + 1e-9
    mc, se = population_zero_shot_accuracy_mc(cfg, q, jax.random.key(0), 100_000, rank=rank)
    assert abs(acc - mc) < 5 * se + 2e-3  # 2e-3: the q-mixture is sampled, not weighted exactly


def test_sagawa_conditions():
    met = sagawa_conditions(make_config("M1", p=0.9996, sigma_spu=0.05, sigma_core=1.0, sigma_xi=0.05,
                                        n=2000, d=40_000))
    assert all(ok for ok, _ in met.values()), met
    defaults = sagawa_conditions(make_config("M1"))
    assert not defaults["p"][0] and not defaults["sigma_xi"][0] and defaults["sigma_core"][0]
