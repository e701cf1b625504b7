"""Data model: validation, sampling statistics, and the population covariance against Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmcl_theory.datamodel import (
    M1Config, M2Config, agreement, dictionaries, make_config, prompt_latents, sample_dataset, sample_latents,
)
from mmcl_theory.theory import population_cross_covariance


@pytest.mark.parametrize("preset, field, value", [
    ("M1", "sigma_core", -1.0), ("M1", "sigma_spu", -0.1), ("M1", "p", 1.5), ("M1", "r", -0.2),
    ("M1", "n", 1), ("M1", "d", 1), ("M2", "K", 1), ("M2", "beta", 2.0), ("M2", "d", 9), ("M2", "sigma_xi", -1.0),
    ("M2", "annotate", 1.1), ("M1", "spurious_annotation", -0.5),
])
def test_bad_parameter_names_field_value_and_range(preset, field, value):
    with pytest.raises(ValueError) as err:
        make_config(preset, **{field: value})
    message = str(err.value)
    assert field in message and repr(value) in message and ("allowed" in message or "range" in message)


def test_unknown_preset_field_and_test_are_errors():
    with pytest.raises(ValueError, match="unknown preset 'M9'"):
        make_config("M9")
    with pytest.raises(ValueError, match="unknown M1 parameter"):
        make_config("M1", bogus=1)
    with pytest.raises(ValueError, match="unknown test distribution 'sideways'"):
        agreement("sideways", 2)
    with pytest.raises(ValueError, match="q = 1.5"):
        agreement(1.5, 2)


def test_spec_defaults():
    m1 = M1Config()
    assert (m1.sigma_core, m1.sigma_spu, m1.p, m1.sigma_xi, m1.n, m1.d) == (1.0, 0.05, 0.95, 1.0, 200, 2000)
    m2 = M2Config()
    assert (m2.K, m2.p, m2.sigma_spu, m2.sigma_xi, m2.r, m2.d) == (5, 0.9, 0.05, 1.0, 1.0, 3000)


def test_dictionaries_are_orthonormal_and_noise_has_the_stated_scale():
    cfg = make_config("M2", d=400, n=2000)
    d_i, d_t = dictionaries(jax.random.key(0), cfg)
    np.testing.assert_allclose(d_i.T @ d_i, np.eye(10), atol=1e-5)
    np.testing.assert_allclose(d_t.T @ d_t, np.eye(10), atol=1e-5)
    data = sample_dataset(jax.random.key(1), cfg, (d_i, d_t), cfg.n)
    lat = sample_latents(jax.random.split(jax.random.key(1), 3)[0], cfg, cfg.n)
    noise = data.x_image - lat.z_image @ d_i.T
    # xi ~ N(0, sigma_xi^2/d I_d): its squared norm averages sigma_xi^2
    assert abs(float(jnp.mean(jnp.sum(noise**2, 1))) - 1.0) < 0.02


def test_m1_sampling_rates():
    cfg = make_config("M1", p=0.8, r=0.3, spurious_annotation=0.5)
    lat = sample_latents(jax.random.key(0), cfg, 200_000)
    agree = np.mean(np.asarray(lat.label == lat.spurious))
    assert abs(agree - 0.8) < 4 * np.sqrt(0.8 * 0.2 / 200_000)
    copied = np.mean(np.asarray(lat.z_text[:, 0] == lat.z_image[:, 0]))
    assert abs(copied - 0.3) < 0.005
    mentioned = np.mean(np.asarray(lat.z_text[:, 1] != 0))
    assert abs(mentioned - 0.5) < 0.005
    for test, q in (("flipped", 0.0), ("aligned", 1.0), ("independent", 0.5)):
        t = sample_latents(jax.random.key(1), cfg, 50_000, test)
        assert abs(np.mean(np.asarray(t.label == t.spurious)) - q) < 0.01


def test_m2_sampling_rates_and_shifted_test_has_no_details():
    cfg = make_config("M2", beta=0.3, p=0.9, sigma_core=0.5)
    lat = sample_latents(jax.random.key(0), cfg, 100_000)
    own = np.asarray(jax.nn.one_hot(lat.label, 5, dtype=bool))
    cores = np.asarray(lat.z_image[:, :5])
    assert abs(np.mean(cores[~own] != 0) - 0.3) < 0.005
    assert abs(np.mean(np.asarray(lat.label == lat.spurious)) - 0.9) < 0.005
    test = sample_latents(jax.random.key(1), cfg, 20_000, "flipped")
    own_t = np.asarray(jax.nn.one_hot(test.label, 5, dtype=bool))
    assert np.all(np.asarray(test.z_image[:, :5])[~own_t] == 0)
    assert np.all(np.asarray(test.label != test.spurious))


def test_prompts():
    assert np.allclose(prompt_latents(make_config("M1")), [[-1, 0], [1, 0]])
    p = prompt_latents(make_config("M2", K=3))
    assert p.shape == (3, 6) and np.allclose(p[:, :3], np.eye(3)) and np.all(p[:, 3:] == 0)
    with pytest.raises(ValueError, match="prompt kind"):
        prompt_latents(make_config("M1"), "fancy")


def _mc_cross_covariance(cfg, n=200_000, seed=0):
    lat = sample_latents(jax.random.key(seed), cfg, n)
    zi, zt = np.asarray(lat.z_image, np.float64), np.asarray(lat.z_text, np.float64)
    return (zi - zi.mean(0)).T @ (zt - zt.mean(0)) / (n - 1)


@settings(max_examples=4, deadline=None)
@given(sigma_core=st.floats(0, 2), p=st.floats(0.5, 1), r=st.floats(0, 1), s=st.floats(0, 1))
def test_m1_population_covariance_matches_monte_carlo(sigma_core, p, r, s):
    cfg = make_config("M1", sigma_core=sigma_core, p=p, r=r, spurious_annotation=s)
    mc = _mc_cross_covariance(cfg)
    # entries are O(1 + sigma_core^2); MC standard error ~ (1 + sigma_core^2) / sqrt(n)
    np.testing.assert_allclose(population_cross_covariance(cfg), mc, atol=6 * (1 + sigma_core**2) / np.sqrt(200_000))


@settings(max_examples=4, deadline=None)
@given(K=st.integers(2, 6), sigma_core=st.floats(0, 1.5), p=st.floats(0, 1), beta=st.floats(0, 1),
       annotate=st.floats(0, 1), r=st.floats(0, 1), s=st.floats(0, 1))
def test_m2_population_covariance_matches_monte_carlo(K, sigma_core, p, beta, annotate, r, s):
    cfg = make_config("M2", K=K, sigma_core=sigma_core, p=p, beta=beta, annotate=annotate, r=r,
                      spurious_annotation=s)
    mc = _mc_cross_covariance(cfg)
    np.testing.assert_allclose(population_cross_covariance(cfg), mc, atol=6 * (1 + sigma_core**2) / np.sqrt(200_000))


def test_m2_caption_richness_enters_the_sampler_once():
    """docs/models.md#m2: the own-class core is annotated (c_T,y = c_y) with probability r, else mentioned
    (c_T,y = 1), so E[c_y c_T,y] = r E[c_y^2] + (1 - r) E[c_y] = 1 + r sigma_core^2 (1.5 at r = 0.5, sigma_core = 1;
    r^2 would give 1.25), and the population Cov(c_k, c_T,k) of theory.m2_cross_covariance is met by the sample.
    Tolerances: 4 standard errors of each sample mean."""
    K, r, sigma_core, beta, annotate, n = 3, 0.5, 1.0, 0.25, 0.5, 200_000
    cfg = make_config("M2", K=K, r=r, sigma_core=sigma_core, beta=beta, annotate=annotate)
    lat = sample_latents(jax.random.key(7), cfg, n)
    c, c_text = np.asarray(lat.z_image[:, :K], np.float64), np.asarray(lat.z_text[:, :K], np.float64)
    rows = np.arange(n)
    y = np.asarray(lat.label)
    own, own_text = c[rows, y], c_text[rows, y]
    copied = own_text == own  # c_y is continuous: equal to the mentioned value 1 with probability 0
    assert np.all(copied | (own_text == 1.0))
    assert abs(copied.mean() - r) <= 4 * math.sqrt(r * (1 - r) / n)
    product = own * own_text
    assert abs(product.mean() - (1 + r * sigma_core**2)) <= 4 * product.std() / math.sqrt(n)
    # the population cross-covariance's core diagonal against the sample's, entry by entry
    from mmcl_theory.theory import m2_cross_covariance

    theory = m2_cross_covariance(cfg)
    for k in range(K):
        centred = (c[:, k] - c[:, k].mean()) * (c_text[:, k] - c_text[:, k].mean())
        assert abs(centred.mean() - theory[k, k]) <= 4 * centred.std() / math.sqrt(n), k
