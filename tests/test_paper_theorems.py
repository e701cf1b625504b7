"""The paper's data models (DM1 = M1 with pi_spu, DM2) and its theorems' formulas against the package's theory.

Expectations are written here from the paper (Xue et al. 2024: Thm 4.4, Thm 5.2, Thm 5.4, Eq. 27, Eq. 31),
or computed by a second route (sampling), never from theory.py itself.
"""

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from mmcl_theory.config import ConfigError
from mmcl_theory.datamodel import make_config, prompt_latents, sample_latents
from mmcl_theory.theory import (dm2_cross_covariance, dm2_thresholds, m1_cross_covariance, m1_population_accuracy,
                                population_zero_shot_accuracy, population_zero_shot_accuracy_mc)


def paper_flipped(p, sigma_core, sigma_spu, pi_core=1.0):
    """Thm 5.2 (Thm 4.4 at pi_core = 1): accuracy on a != y = 1 - Phi(kappa_1)."""
    den = math.sqrt((1 + pi_core * sigma_core**2) ** 2 * sigma_core**2 + (2 * p - 1) ** 2 * sigma_spu**2)
    return 1 - stats.norm.cdf((2 * p - 2 - pi_core * sigma_core**2) / den)


def paper_p_star(p, sigma_core, sigma_spu):
    """Thm 4.4: accuracy on P* = 1 - Phi(kappa_1)/2 - Phi(kappa_2)/2."""
    den = math.sqrt((1 + sigma_core**2) ** 2 * sigma_core**2 + (2 * p - 1) ** 2 * sigma_spu**2)
    k1, k2 = (2 * p - 2 - sigma_core**2) / den, (-2 * p - sigma_core**2) / den
    return 1 - stats.norm.cdf(k1) / 2 - stats.norm.cdf(k2) / 2


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0.55, 0.999), sigma_core=st.floats(1.0, 3.0), sigma_spu=st.floats(0.01, 0.5),
       pi_core=st.floats(0.0, 1.0), pi_spu=st.floats(0.0, 1.0))
def test_paper_formulas_are_the_population_accuracy_without_test_noise(p, sigma_core, sigma_spu, pi_core, pi_spu):
    """Thm 5.2's and Thm 4.4's expressions equal the package's population accuracy (e = 0) to float64 rounding,
    for every pi_spu (the paper: independent of pi_spu)."""
    cfg = make_config("M1", p=p, sigma_core=sigma_core, sigma_spu=sigma_spu, r=pi_core, spurious_detail=pi_spu)
    assert m1_population_accuracy(cfg, "flipped", test_noise=False) == pytest.approx(
        paper_flipped(p, sigma_core, sigma_spu, pi_core), abs=1e-12)
    assert population_zero_shot_accuracy(cfg, "flipped", test_noise=False) == pytest.approx(
        paper_flipped(p, sigma_core, sigma_spu, pi_core), abs=1e-7)  # Genz-free 2-class route: Phi
    full = make_config("M1", p=p, sigma_core=sigma_core, sigma_spu=sigma_spu, r=1.0, spurious_detail=pi_spu)
    assert m1_population_accuracy(full, "independent", test_noise=False) == pytest.approx(
        paper_p_star(p, sigma_core, sigma_spu), abs=1e-12)


def test_corollary_4_5_figures():
    """Cor. 4.5 at sigma_core = 1, p -> 1, sigma_spu -> 0: P* 81.2%, a != y 69.1%, Bayes Phi(1) = 84.1%."""
    cfg = make_config("M1", p=1.0, sigma_core=1.0, sigma_spu=0.0, r=1.0)
    # 1 - Phi(-0.5)/2 - Phi(-1.5)/2 = 1 - 0.308538/2 - 0.066807/2
    assert m1_population_accuracy(cfg, "independent", test_noise=False) == pytest.approx(0.812327, abs=5e-6)
    assert m1_population_accuracy(cfg, "flipped", test_noise=False) == pytest.approx(0.6915, abs=5e-5)
    # App. E.1: MMCL's ID accuracy at p = 1 is the aligned accuracy, 1 - Phi(-1.5) = 93.32% (the paper prints 93.93%)
    assert m1_population_accuracy(cfg, "aligned", test_noise=False) == pytest.approx(0.9332, abs=5e-5)


def test_spurious_detail_masks_the_caption_as_def_5_1():
    """z_T,spu = a + psi (z_spu - a): at pi_spu = 0 the caption carries a exactly; at 1 it is z_spu; sample
    Cov(z_spu, z_T,spu) = 1 + pi_spu sigma_spu^2 within 4 s.e.; the images do not change with pi_spu."""
    key = jax.random.key(3)
    lat = {ps: sample_latents(key, make_config("M1", sigma_spu=0.5, spurious_detail=ps), 200_000) for ps in (0.0, 0.3, 1.0)}
    a = 2.0 * np.asarray(lat[0.0].spurious) - 1
    np.testing.assert_array_equal(np.asarray(lat[0.0].z_text[:, 1]), a)
    np.testing.assert_array_equal(np.asarray(lat[1.0].z_text[:, 1]), np.asarray(lat[1.0].z_image[:, 1]))
    np.testing.assert_array_equal(np.asarray(lat[0.3].z_image), np.asarray(lat[1.0].z_image))
    prod = np.asarray(lat[0.3].z_image[:, 1] * lat[0.3].z_text[:, 1], np.float64)
    expected = 1 + 0.3 * 0.25
    assert abs(prod.mean() - expected) < 4 * prod.std() / math.sqrt(len(prod))
    assert m1_cross_covariance(make_config("M1", sigma_spu=0.5, spurious_detail=0.3))[1, 1] == pytest.approx(expected)


# ------------------------------------------------------------------ Data Model 2


def test_dm2_sampler_follows_definition_4_6():
    cfg = make_config("DM2", m=3, alpha=1.5, beta=0.4, pi=0.5)
    for test, q in ((None, 1.0), ("independent", 0.5), ("flipped", 0.0)):
        lat = sample_latents(jax.random.key(0), cfg, 50_000, test)
        z, t, y = np.asarray(lat.z_image), np.asarray(lat.z_text), np.asarray(lat.label)
        k, c = y // 2, 1 - 2 * (y % 2)
        rows = np.arange(len(y))
        assert np.all(z[rows, k] == c)
        assert np.all(np.abs(z[rows, 3 + k]) == pytest.approx(1.5))
        agree = np.mean(z[rows, 3 + k] == c * 1.5)
        assert abs(agree - q) < 4 * math.sqrt(0.25 / len(y)) + 1e-12
        np.testing.assert_array_equal(np.asarray(lat.spurious) == y, z[rows, 3 + k] == c * 1.5)
        others = np.ones(z.shape, bool)
        others[rows, k] = others[rows, 3 + k] = False
        mags = np.abs(z[others]).astype(np.float64).round(6)
        assert set(np.unique(mags).tolist()) == {0.4, 0.6}
        assert np.all(t[rows, k] == c)  # psi_k = 1
        kept = (t == z)[others]
        assert abs(kept.mean() - 0.5) < 0.01  # psi_j ~ Bernoulli(pi) elsewhere
        assert np.all((t == z) | (t == 0))


def test_dm2_cross_covariance_is_eq_27_and_the_sample_covariance():
    """Eq. 27 of the paper (written out here) and the sample second moment of 400k latents."""
    m, a, b, pi = 3, 1.5, 0.4, 0.6
    cfg = make_config("DM2", m=m, alpha=a, beta=b, pi=pi)
    eye = np.eye(m)
    eq27 = np.block([[(1 + pi * (m - 1) * b**2) / m * eye, pi * a / m * eye],
                     [a / m * eye, (1 + (m - 1) * b**2) / m * pi * a**2 * eye]])
    np.testing.assert_allclose(dm2_cross_covariance(cfg), eq27, rtol=1e-14)
    lat = sample_latents(jax.random.key(1), cfg, 400_000)
    z, t = np.asarray(lat.z_image, np.float64), np.asarray(lat.z_text, np.float64)
    prod = z[:, :, None] * t[:, None, :]
    se = prod.std(0) / math.sqrt(len(z))
    assert np.all(np.abs(prod.mean(0) - eq27) <= 4.5 * se + 1e-12)


def test_dm2_thresholds_are_the_papers():
    m, a, b = 20, 1.2, 0.5
    pi_1, pi_t = dm2_thresholds(make_config("DM2", m=m, alpha=a, beta=b))
    assert pi_t == pytest.approx(((1 + b) * a**2 - 1 + b) / ((1 - b) * b**2 * (m - 1)))
    assert pi_1 == pytest.approx((a**2 - 1) / (b**2 * (m - 1)))


@pytest.mark.parametrize("m,alpha,beta,pi", [(4, 0.7, 0.5, 0.3), (4, 0.7, 0.5, 0.7), (5, 1.2, 0.5, 0.0),
                                             (5, 1.2, 0.5, 0.9), (20, 1.2, 0.5, 0.8), (3, 0.9, 0.3, 1.0)])
def test_dm2_exact_accuracy_matches_monte_carlo_and_the_case_analysis(m, alpha, beta, pi):
    """The exact DM2 accuracy on P* against (i) a Monte Carlo over 200k sampled test latents scored with the
    population weights, and (ii) the case analysis of the paper's Eq. 31-32: 1 above pi~, 1/2 + 2^-m between
    pi_1 and pi~, 1/2 below pi_1."""
    cfg = make_config("DM2", m=m, alpha=alpha, beta=beta, pi=pi)
    exact = population_zero_shot_accuracy(cfg, "independent")
    mc, se = population_zero_shot_accuracy_mc(cfg, "independent", jax.random.key(7), 200_000)
    assert abs(exact - mc) <= 4 * max(se, 1e-6)
    pi_1, pi_t = dm2_thresholds(cfg)
    case = 1.0 if pi > pi_t else (0.5 + 2.0**-m if pi > pi_1 else 0.5)
    assert exact == pytest.approx(case, abs=1e-12)
    assert population_zero_shot_accuracy(cfg, "aligned") == 1.0


def test_dm2_prompt_is_the_true_class_centre():
    """The paper's prompt p_y = D_T E_{P*}[z | y] = D_T c e_k: the core prompt."""
    cfg = make_config("DM2", m=3)
    P = np.asarray(prompt_latents(cfg, "core"))
    lat = sample_latents(jax.random.key(2), cfg, 60_000, "independent")
    z, y = np.asarray(lat.z_image), np.asarray(lat.label)
    centres = np.stack([z[y == c].mean(0) for c in range(6)])
    assert np.abs(centres - P).max() < 0.05


@pytest.mark.parametrize("field,value", [("beta", 1.0), ("beta", -0.1), ("pi", 1.5), ("m", 1), ("d", 5),
                                         ("alpha", float("nan"))])
def test_dm2_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"DM2Config.{field}"):
        make_config("DM2", **{"m": 3, field: value})


def test_dm2_exact_accuracy_refuses_test_noise():
    with pytest.raises(ValueError, match="sigma_xi"):
        population_zero_shot_accuracy(make_config("DM2", m=3, sigma_xi=0.5), "independent")
