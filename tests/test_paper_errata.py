"""The paper's errata (docs/paper_errata.md): each printed value against an independent computation.

The paper is Xue et al., ICLR 2024 (../shared/papers/xue24_mmcl_long.pdf; page numbers are the PDF's, which
equal the printed ones). Each test computes the corrected value by a route that does not use the paper's
printed statement (a closed form from the paper's own definitions, a Monte Carlo, or a direct sum), asserts it
to the precision of that computation, and asserts that the printed value is further off than that precision.
"""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from mmcl_theory.datamodel import make_config, sample_latents
from mmcl_theory.paper_mnist import CLASS_MEAN_VALUE, DIGIT_VALUE, FAMILY_MEAN_VALUE, SHADE_VALUE
from mmcl_theory.theory import dm2_thresholds, m1_cross_covariance, m1_population_accuracy, population_zero_shot_accuracy

# ------------------------------------------------------------------ 1. Thm 5.2 (p. 8): pi_core, not pi_core^2

DM1 = {"p": 0.99, "sigma_core": 1.0, "sigma_spu": 0.1}  # the named setting DM1 (datamodel.NAMED_SETTINGS)


def thm52(p, sigma_core, sigma_spu, weight):
    """1 - Phi((2p - 2 - weight sigma_core^2) / sqrt((1 + weight sigma_core^2)^2 sigma_core^2 + (2p-1)^2 sigma_spu^2)).

    The paper prints weight = pi_core^2; App. C.3's covariance gives weight = pi_core."""
    den = math.sqrt((1 + weight * sigma_core**2) ** 2 * sigma_core**2 + (2 * p - 1) ** 2 * sigma_spu**2)
    return float(1 - stats.norm.cdf((2 * p - 2 - weight * sigma_core**2) / den))


def _dm1_latents(rng, n, p, sigma_core, sigma_spu, pi_core, pi_spu, q):
    """Data Model 1 (Def. 4.1) with the caption masking of Def. 5.1, written out in numpy:
    y = +-1 uniform; a = y w.p. q else -y; z = (y + sigma_core g, a + sigma_spu h) (n, 2);
    caption t = (y + psi_core (z_core - y), a + psi_spu (z_spu - a)), psi ~ Bernoulli(pi) (n, 2)."""
    y = rng.choice([-1.0, 1.0], n)
    a = np.where(rng.random(n) < q, y, -y)
    z = np.stack([y + sigma_core * rng.standard_normal(n), a + sigma_spu * rng.standard_normal(n)], 1)
    psi = rng.random((n, 2)) < [pi_core, pi_spu]
    t = np.where(psi, z, np.stack([y, a], 1))
    return y, z, t


def test_thm_5_2_weights_the_core_variance_by_pi_core_not_its_square():
    """The paper's Thm 5.2 (p. 8): a != y accuracy 1 - Phi((2p - 2 - pi_core^2 sigma_core^2) / ...) as printed.

    Corrected: pi_core in place of pi_core^2 (the covariance of App. C.3, p. 22, has 1 + pi_core sigma_core^2).
    At DM1 (p 0.99, sigma_core 1, sigma_spu 0.1), pi_core = 0.25: printed 0.5308, corrected 0.5852.
    Monte Carlo, numpy only: 8 replicates, each estimating Cov(z, t) from 250k training pairs (agreement p,
    Def. 5.1 masking at pi_spu = 0.5) and scoring 250k a != y test latents with the paper's prompt (y, 0):
    score_y = y (C_00 z_core + C_10 z_spu). Its s.e. (over replicates) is about 3e-4; the gap is 0.054."""
    p, sc, ss = DM1["p"], DM1["sigma_core"], DM1["sigma_spu"]
    pi_core, pi_spu = 0.25, 0.5
    printed, corrected = thm52(p, sc, ss, pi_core**2), thm52(p, sc, ss, pi_core)
    assert printed == pytest.approx(0.5308, abs=5e-5) and corrected == pytest.approx(0.5852, abs=5e-5)

    # the package's exact population accuracy (no test noise) and App. C.3's matrix
    cfg = make_config("DM1", r=pi_core, spurious_detail=pi_spu)
    assert m1_population_accuracy(cfg, "flipped", test_noise=False) == pytest.approx(corrected, abs=1e-12)
    c3 = np.array([[1 + pi_core * sc**2, 2 * p - 1], [2 * p - 1, 1 + pi_spu * ss**2]])
    np.testing.assert_allclose(m1_cross_covariance(cfg), c3, rtol=1e-14)

    rng = np.random.default_rng(20240)
    accs, covs = [], []
    for _ in range(8):
        _, z, t = _dm1_latents(rng, 250_000, p, sc, ss, pi_core, pi_spu, q=p)
        C = z.T @ t / len(z)  # (2, 2); every latent has mean 0 under uniform y, so this is the covariance
        y, z_test, _ = _dm1_latents(rng, 250_000, p, sc, ss, pi_core, pi_spu, q=0.0)
        score = z_test @ C[:, 0]  # the class +1 score; class -1 scores its negative
        accs.append(np.mean(np.sign(score) == y))
        covs.append(C)
    mc, se = float(np.mean(accs)), float(np.std(accs, ddof=1) / math.sqrt(len(accs)))
    assert se < 2e-3
    assert np.abs(np.mean(covs, 0) - c3).max() < 0.01  # the sampled covariance is App. C.3's
    assert abs(mc - corrected) <= 4 * se
    assert abs(mc - printed) > 40 * se
    # at pi_core = 0 and 1 the two forms coincide (pi^2 = pi): the error shows only in between
    for pi in (0.0, 1.0):
        assert thm52(p, sc, ss, pi**2) == thm52(p, sc, ss, pi)


# ------------------------------------------------------------------ 2. App. E.1 (p. 25): 93.93% is 93.32%


def test_app_e1_mmcl_in_distribution_accuracy_is_93_32_percent():
    """The paper's App. E.1 (p. 25): MMCL's ID accuracy at sigma_core = 1, sigma_spu = 0 is
    '1 - Phi(-1.5) +- o(1) = 93.93% +- o(1)'.

    Corrected: 1 - Phi(-1.5) = 0.933193 (scipy), 93.32%; the package's exact aligned accuracy at p = 1 agrees.
    The printed 93.93% is 0.0061 away, 120 times the rounding of a two-decimal percentage. The same page's
    SL value, Phi(2.51) = 99.4%, is right."""
    value = float(1 - stats.norm.cdf(-1.5))
    assert value == pytest.approx(0.933193, abs=1e-6)
    assert round(100 * value, 2) == 93.32
    assert abs(value - 0.9393) > 100 * 5e-5
    kappa_2 = (-2 * 1.0 - 1.0**2) / math.sqrt((1 + 1.0**2) ** 2 * 1.0**2)  # App. E.1's argument at p = 1
    assert kappa_2 == -1.5
    cfg = make_config("M1", p=1.0, sigma_core=1.0, sigma_spu=0.0, r=1.0)
    assert m1_population_accuracy(cfg, "aligned", test_noise=False) == pytest.approx(value, abs=1e-12)
    assert round(100 * float(stats.norm.cdf(2.51)), 1) == 99.4


# ------------------------------------------------------------------ 3. Thm 5.4 (p. 8): 1/2 + 2^-m, not <= 50%

ALPHA, BETA = 0.7, 0.5  # alpha < 1, so pi_1 < 0: every pi below pi~ lies in (pi_1, pi~)


def _dm2_weights(m, alpha, beta, pi):
    """(g1, g2) of Eq. 27 (p. 24): class (k', c') scores c' (g1 z_k' + g2 z_{k'+m}), g1 = (1 + pi (m-1) beta^2)/m,
    g2 = alpha/m (the constant C = 1)."""
    return (1 + pi * (m - 1) * beta**2) / m, alpha / m


def _dm2_predict(z, g1, g2, m):
    """Class index argmax over the 2m scores, (n, 2m) -> (n,); class y has k = y // 2, c = +1 if y even."""
    c = np.tile([1.0, -1.0], m)
    k = np.repeat(np.arange(m), 2)
    return np.argmax(c * (g1 * z[:, k] + g2 * z[:, k + m]), 1)


def _dm2_direct_sum(m, alpha, beta, pi):
    """Exact accuracy on P* (Def. 4.6) by enumerating every test image of class (k, c) = (0, +1) (all classes
    are alike by symmetry): z_0 = 1, z_m = s alpha, the other 2(m - 1) coordinates +-beta, +-beta alpha; each of
    the 2^(2m-1) images has the same probability."""
    g1, g2 = _dm2_weights(m, alpha, beta, pi)
    rows = []
    for s, signs in itertools.product((1.0, -1.0), itertools.product((1.0, -1.0), repeat=2 * (m - 1))):
        z = np.zeros(2 * m)
        z[0], z[m] = 1.0, s * alpha
        z[1:m] = beta * np.array(signs[: m - 1])
        z[m + 1:] = beta * alpha * np.array(signs[m - 1:])
        rows.append(z)
    return float(np.mean(_dm2_predict(np.array(rows), g1, g2, m) == 0))


@pytest.mark.parametrize("m", [3, 4, 6])
def test_thm_5_4_below_pi_tilde_the_accuracy_is_one_half_plus_two_to_the_minus_m(m):
    """The paper's Thm 5.4 (p. 8): Acc_P* = 100% if pi > pi~ and Acc_P* <= 50% if pi < pi~.

    Corrected: 1/2 + 2^-m for pi_1 < pi < pi~ (pi_1 = (alpha^2 - 1)/(beta^2 (m-1)), Eq. 31), 1/2 below pi_1;
    the proof (App. D.2, p. 24) shows only the 100% side. Three routes at pi = pi~/2 (alpha 0.7, beta 0.5):
    the package's exact DM2 accuracy; a direct sum over every test image with Eq. 27's weights; a Monte
    Carlo of 100k P* latents from the package's DM2 sampler scored with Eq. 27's weights (s.e. <= 1.6e-3,
    against an excess 2^-m >= 0.0156). Above pi~ all three give 1, as printed."""
    pi_1, pi_t = dm2_thresholds(make_config("DM2", m=m, alpha=ALPHA, beta=BETA))
    assert pi_t == pytest.approx(((1 + BETA) * ALPHA**2 - 1 + BETA) / ((1 - BETA) * BETA**2 * (m - 1)))
    assert pi_1 < 0 < pi_t < 1
    for pi, corrected in ((pi_t / 2, 0.5 + 2.0**-m), ((1 + pi_t) / 2, 1.0)):
        cfg = make_config("DM2", m=m, alpha=ALPHA, beta=BETA, pi=pi)
        assert population_zero_shot_accuracy(cfg, "independent") == pytest.approx(corrected, abs=1e-12)
        assert _dm2_direct_sum(m, ALPHA, BETA, pi) == pytest.approx(corrected, abs=1e-12)
        lat = sample_latents(jax.random.key(m), cfg, 100_000, "independent")
        hits = _dm2_predict(np.asarray(lat.z_image, np.float64), *_dm2_weights(m, ALPHA, BETA, pi), m) == np.asarray(
            lat.label)
        mc, se = float(hits.mean()), float(hits.std() / math.sqrt(hits.size))
        assert abs(mc - corrected) <= 4 * se + 1e-12
        if pi < pi_t:
            assert mc - 0.5 > 8 * se  # the printed "<= 50%" is wrong beyond the Monte Carlo's precision


# ------------------------------------------------------------------ 4. App. G.1 (p. 30): the class means

# the paper's DICT (App. G.1, p. 29), as printed
DICT = {0: -4.5, 1: -3.5, 2: -2.5, 3: -1.5, 4: -0.5, 5: 0.5, 6: 1.5, 7: 2.5, 8: 3.5, 9: 4.5,
        "dark blue": -2.5, "medium blue": -1.5, "light blue": -0.5, "light red": 0.5, "medium red": 1.5,
        "dark red": 2.5}


def test_app_g1_class_means_are_over_five_digits():
    """The paper's App. G.1 (p. 30): mean_{0-4} = (1/4) sum_{d=1}^{4} DICT[d] = -2.5 and
    mean_{5-9} = (1/4) sum_{d=5}^{9} DICT[d] = 2.5.

    As printed, the sums give -2.0 and 3.125. Corrected: (1/5) sum_{d=0}^{4} DICT[d] = -2.5 and
    (1/5) sum_{d=5}^{9} DICT[d] = +2.5, the means over all five digits of each class, which are the values the
    paper states and paper_mnist.CLASS_MEAN_VALUE uses. The colour means (-1.5, +1.5) are right as printed.
    All values are exact in binary floating point."""
    printed_lo, printed_hi = sum(DICT[d] for d in range(1, 5)) / 4, sum(DICT[d] for d in range(5, 10)) / 4
    assert (printed_lo, printed_hi) == (-2.0, 3.125)
    assert abs(printed_lo - -2.5) == 0.5 and abs(printed_hi - 2.5) == 0.625
    corrected = np.array([sum(DICT[d] for d in range(5)) / 5, sum(DICT[d] for d in range(5, 10)) / 5])
    np.testing.assert_array_equal(corrected, [-2.5, 2.5])
    np.testing.assert_array_equal(DIGIT_VALUE, [DICT[d] for d in range(10)])
    np.testing.assert_array_equal(CLASS_MEAN_VALUE, corrected)
    shades = [DICT[s] for s in ("dark blue", "medium blue", "light blue", "light red", "medium red", "dark red")]
    np.testing.assert_array_equal(SHADE_VALUE, shades)
    np.testing.assert_array_equal(FAMILY_MEAN_VALUE, [np.mean(shades[:3]), np.mean(shades[3:])])
    np.testing.assert_array_equal(FAMILY_MEAN_VALUE, [-1.5, 1.5])


# ------------------------------------------------------------------ 5. App. D.2, Eq. 29 (p. 24): a sign


@pytest.mark.parametrize("m,alpha,beta", [(4, 0.7, 0.5), (20, 1.2, 0.5), (5, 1.1, 0.5)])
def test_eq_29_opposite_sign_prompt_score(m, alpha, beta):
    """The paper's App. D.2, Eq. 29 (p. 24), proof of Thm 5.4: for k = k', c != c',
    Sim2 = -C(1/m - (m-1)/m pi beta^2 +- alpha^2/m).

    Corrected: Sim2 = -C(1/m + (m-1)/m pi beta^2 +- alpha^2/m) = -Sim1 (Eq. 28): the prompt c' e_k scores
    c' (g1 z_k + g2 z_{k+m}) with Eq. 27's (g1, g2), and c' = -c. The printed form is off by
    2 (m-1) pi beta^2 / m, and with it Sim1 > Sim2 would reduce to alpha < 1 for every pi; the corrected form
    gives Eq. 31, pi (m-1) > (alpha^2 - 1)/beta^2, as the paper states. Computed here on both signs s of
    z_{k+m} = s c alpha, C = 1, in float64 (tolerance 1e-12)."""
    for pi in np.linspace(0.0, 1.0, 21):
        g1, g2 = _dm2_weights(m, alpha, beta, pi)
        for c, s in itertools.product((1.0, -1.0), (1.0, -1.0)):
            z = np.zeros(2 * m)
            z[0], z[m] = c, s * c * alpha  # class (0, c); the other coordinates do not enter these two scores
            sim1 = c * (g1 * z[0] + g2 * z[m])
            sim2 = -c * (g1 * z[0] + g2 * z[m])
            printed = -(1 / m - (m - 1) / m * pi * beta**2 + s * alpha**2 / m)
            corrected = -(1 / m + (m - 1) / m * pi * beta**2 + s * alpha**2 / m)
            assert sim1 == pytest.approx(1 / m + (m - 1) / m * pi * beta**2 + s * alpha**2 / m, abs=1e-12)
            assert sim2 == pytest.approx(corrected, abs=1e-12)
            if pi > 0:
                assert abs(sim2 - printed) == pytest.approx(2 * (m - 1) / m * pi * beta**2, abs=1e-12)
        # Eq. 31 is the worst case s = -1 of Sim1 > Sim2 with the corrected Sim2, not with the printed one
        sim1_worst = 1 / m + (m - 1) / m * pi * beta**2 - alpha**2 / m
        eq31 = pi * (m - 1) > (alpha**2 - 1) / beta**2
        if abs(pi * (m - 1) - (alpha**2 - 1) / beta**2) > 1e-9:
            assert (sim1_worst > -sim1_worst) == eq31
        printed_worst = -(1 / m - (m - 1) / m * pi * beta**2 - alpha**2 / m)  # the printed Sim2 at s = -1
        assert (sim1_worst > printed_worst) == (alpha < 1)
