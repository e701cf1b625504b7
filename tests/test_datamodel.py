"""Data model: validation, sampling statistics, the population covariance against Monte Carlo, and the Gaussian test
groups against the sampler."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmcl_theory.datamodel import (
    M1Config, M2Config, agreement, dictionaries, make_config, prompt_latents, sample_dataset, sample_latents,
)
from mmcl_theory.datamodel import test_groups as gaussian_test_groups  # renamed: pytest would collect test_groups
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


def test_m1_caption_masks_are_independent_of_the_features_they_mask():
    """docs/models.md#m1 (and the paper's Def. 5.1, docs/models.md#paper-data-models): z_T,core = z_core with
    probability r, else y, and z_T,spu = a + psi (z_spu - a) with psi ~ Bernoulli(spurious_detail): each mask is a coin
    of its own, independent of the per-image noise it reveals (e1 = (z_core - y)/sigma_core, e2 = (z_spu -
    a)/sigma_spu). A mask drawn from the feature's own PRNG key is a threshold of that noise (psi = 1[e2 < c]), which
    leaves its rate right but its correlation with e2 about -0.8. Sample correlations of each mask with its noise, with
    the noise squared and with the other mask, 200,000 draws: each within 5 standard errors of 0 (1/sqrt(n) for
    independent variables); each mask's rate within 5 binomial standard errors."""
    n, r, pi_spu = 200_000, 0.3, 0.6
    cfg = make_config("M1", sigma_core=1.5, sigma_spu=0.5, p=0.8, r=r, spurious_detail=pi_spu)
    lat = sample_latents(jax.random.key(11), cfg, n)
    z, t = np.asarray(lat.z_image, np.float64), np.asarray(lat.z_text, np.float64)
    y, a = 2.0 * np.asarray(lat.label) - 1, 2.0 * np.asarray(lat.spurious) - 1
    core_mask, spu_mask = t[:, 0] == z[:, 0], t[:, 1] == z[:, 1]  # a continuous feature equals y or a w.p. 0
    assert np.all(core_mask | (t[:, 0] == y)) and np.all(spu_mask | (t[:, 1] == a))
    e1, e2 = (z[:, 0] - y) / cfg.sigma_core, (z[:, 1] - a) / cfg.sigma_spu
    bound = 5 / math.sqrt(n)
    for mask, rate, noise in ((core_mask, r, e1), (spu_mask, pi_spu, e2)):
        assert abs(mask.mean() - rate) <= 5 * math.sqrt(rate * (1 - rate) / n)
        for other in (noise, noise**2, core_mask if mask is spu_mask else spu_mask):
            assert abs(np.corrcoef(mask, other)[0, 1]) <= bound


@pytest.mark.parametrize("preset, overrides", [
    ("M1", dict(p=0.8, spurious_annotation=0.6, r=0.5)),
    ("M2", dict(K=3, p=0.7, beta=0.4, annotate=0.5, spurious_annotation=0.6, r=0.5)),
    ("DM2", dict(m=3, alpha=1.5, beta=0.4, pi=0.5)),
], ids=["M1", "M2", "DM2"])
def test_class_mean_prompts_are_the_sampled_class_means_of_the_captions(preset, overrides):
    """docs/models.md#8 (zero-shot prompts): the class-mean prompt is the average training caption of the class,
    t_latent(k) = E[z_T | y = k] (DM2, docs/models.md#dm2: c e_k + pi c alpha e_{k+m}). At the defaults
    spurious_annotation = annotate = pi = 1 a missing factor is invisible; here all are below 1. prompt_latents(cfg,
    "class_mean") against the per-class mean of 200,000 sampled training captions, every entry within 5 standard
    errors of its class mean (plus float32 rounding for entries that do not vary)."""
    cfg = make_config(preset, **overrides)
    n = 200_000
    lat = sample_latents(jax.random.key(5), cfg, n)
    text, label = np.asarray(lat.z_text, np.float64), np.asarray(lat.label)
    prompts = np.asarray(prompt_latents(cfg, "class_mean"), np.float64)
    assert prompts.shape == (cfg.num_classes, cfg.latent_dim)
    for k in range(cfg.num_classes):
        rows = text[label == k]
        se = rows.std(0) / math.sqrt(len(rows))
        np.testing.assert_array_less(np.abs(rows.mean(0) - prompts[k]), 5 * se + 1e-6, err_msg=f"{preset} class {k}")


@pytest.mark.parametrize("preset, overrides, test", [
    ("M1", dict(sigma_core=0.7, sigma_spu=0.3), "independent"),
    ("M1", dict(sigma_core=1.3, sigma_spu=0.05), 0.8),
    ("M2", dict(K=3, sigma_core=0.6, sigma_spu=0.2, beta=0.4), "independent"),
    ("M2", dict(K=4, sigma_core=1.0, sigma_spu=0.1), 0.3),
], ids=["M1-independent", "M1-q0.8", "M2-K3-independent", "M2-K4-q0.3"])
def test_gaussian_test_groups_describe_the_sampled_test_latents(preset, overrides, test):
    """datamodel.test_groups (the one Gaussian form of a test distribution, for theory.py and the exact route) against
    the sampler: 200,000 test latents; each group g = (label, spurious attribute) has frequency weight_g and, given g,
    z_image has mean mean_g and variance var_g, each within 5 standard errors (plus float32 rounding)."""
    cfg = make_config(preset, **overrides)
    weight, label, mean, var = (np.asarray(a, np.float64) for a in gaussian_test_groups(cfg, test, xp=np))
    assert weight.shape == label.shape == (cfg.num_test_groups,) and mean.shape == var.shape == (len(weight), cfg.latent_dim)
    assert abs(weight.sum() - 1) < 1e-12
    n = 200_000
    lat = sample_latents(jax.random.key(9), cfg, n, test)
    z, y, a = np.asarray(lat.z_image, np.float64), np.asarray(lat.label), np.asarray(lat.spurious)
    spurious = ((mean[:, 1] + 1) / 2).astype(int) if preset == "M1" else mean[:, cfg.K:].argmax(1)
    for g in range(len(weight)):
        rows = z[(y == label[g]) & (a == spurious[g])]
        assert abs(len(rows) / n - weight[g]) <= 5 * math.sqrt(weight[g] * (1 - weight[g]) / n) + 1e-12
        if len(rows) < 100:
            continue
        sd = np.sqrt(var[g])
        np.testing.assert_array_less(np.abs(rows.mean(0) - mean[g]), 5 * sd / math.sqrt(len(rows)) + 1e-6)
        np.testing.assert_array_less(np.abs(rows.var(0) - var[g]), 5 * var[g] * math.sqrt(2 / len(rows)) + 1e-6)


@pytest.mark.parametrize("preset", ["M1", "M2"])
def test_gaussian_test_groups_are_the_same_in_numpy_jax_and_under_jit(preset):
    """test_groups(xp=np) is float64 NumPy; the JAX default is the same numbers rounded to float32, and inside jax.jit
    (the config's float fields traced, as in the exact route) the same to float32 rounding. DM2: ValueError."""
    cfg = make_config(preset, sigma_core=0.7, sigma_spu=0.3, p=0.8)
    for test in ("aligned", "independent", "flipped", 0.37):
        ours = gaussian_test_groups(cfg, test, xp=np)
        assert all(x.dtype == np.float64 for x in (ours[0], ours[2], ours[3]))
        jax_eager = gaussian_test_groups(cfg, test)
        jax_jit = jax.jit(lambda c: gaussian_test_groups(c, test))(cfg)
        for x, e, j in zip(ours, jax_eager, jax_jit):
            assert np.array_equal(np.asarray(e), x.astype(np.asarray(e).dtype))
            np.testing.assert_allclose(np.asarray(j), x, rtol=2e-7, atol=0)
    with pytest.raises(ValueError, match="discrete"):
        gaussian_test_groups(make_config("DM2"), "independent")
