"""Theory: identities (docs/theory.md#identity, #invariances), the reference tables (#m1-reference,
#m2-reference), ties and non-unique truncations, finite samples against the population.

Property tests of the theory's statements over parameter spaces are in test_properties.py.
"""

import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmcl_theory.datamodel import dictionaries, make_config, prompt_latents, sample_dataset
from mmcl_theory.models import evaluate_grid
from mmcl_theory.results import mean_se, seed_accuracies
from mmcl_theory.learners import mmcl_closed_form
from mmcl_theory.theory import (
    bayes_core_accuracy, closed_form_minimiser, contrastive_cross_covariance, m1_population_accuracy,
    population_cross_covariance, population_zero_shot_accuracy, population_zero_shot_accuracy_mc,
    sagawa_conditions,
)

TESTS = ("aligned", "independent", "flipped")
EXACT_TOL = 1e-6  # exact route: Genz's algorithm at abseps 1e-7 per test group, Phi to rounding
ROUNDING = 0.0005  # the reference tables print three decimals
THEORY_MD = Path(__file__).resolve().parents[1] / "docs" / "theory.md"

# docs/theory.md#m1-reference: r -> aligned / independent / flipped for
# (core prompt full rank, class-mean prompt full rank, rank 1)
M1_REFERENCE = {
    1.0: ((0.926, 0.818, 0.709), (0.949, 0.795, 0.640), (0.944, 0.802, 0.659)),
    0.5: ((0.945, 0.800, 0.655), (0.962, 0.775, 0.587), (0.961, 0.778, 0.594)),
    0.0: ((0.971, 0.755, 0.540), (0.977, 0.739, 0.502), (0.977, 0.738, 0.499)),
}
# docs/theory.md#m2-reference (K 5, p 0.9, r 1, d 3000, flipped test):
# (sigma_core, beta, annotate) -> (core prompt, class-mean prompt)
M2_REFERENCE = {
    (0, 0, 0): (0.988, 0.549), (0, 0, 1): (0.988, 0.549),
    (0, 0.2, 0): (0.080, 0.001), (0, 0.2, 1): (1.000, 0.986),
    (0, 0.4, 0): (0.000, 0.000), (0, 0.4, 1): (1.000, 0.787),
    (1, 0, 0): (0.713, 0.643), (1, 0, 1): (0.713, 0.643),
    (1, 0.2, 0): (0.696, 0.608), (1, 0.2, 1): (0.780, 0.703),
    (1, 0.4, 0): (0.675, 0.559), (1, 0.4, 1): (0.807, 0.718),
}
# The independent NumPy simulation made when the models were fixed (docs/theory.md#m2-reference: "Monte
# Carlo, standard error 0.001"), core prompt; it shares no code with this package.
M2_INDEPENDENT_SIMULATION = {
    (0, 0, 0): 0.988, (0, 0.2, 0): 0.080, (0, 0.2, 1): 1.000, (0, 0.4, 0): 0.000, (0, 0.4, 1): 1.000,
    (1, 0, 0): 0.714, (1, 0.2, 0): 0.697, (1, 0.2, 1): 0.781, (1, 0.4, 0): 0.676, (1, 0.4, 1): 0.807,
}
SIMULATION_SE = 0.001


def _data(cfg, seed=0):
    key = jax.random.key(seed)
    dicts = dictionaries(key, cfg)
    return dicts, sample_dataset(jax.random.fold_in(key, 1), cfg, dicts, cfg.n)


def _doc_section(anchor: str) -> str:
    text = THEORY_MD.read_text()
    start = text.index(f'<a id="{anchor}"></a>')
    end = text.find("<a id=", start + 1)
    return text[start:end]


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", cell)]


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
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4  # float32 factors of a float64 SVD


def _zero_shot_predictions(w_i, w_t, x, prompts):
    """argmax_k <W_I x, W_T t_k> (docs/theory.md#zero-shot-score)."""
    return jnp.argmax((x @ w_i.T) @ (prompts @ w_t.T).T, 1)


@settings(max_examples=5, deadline=None)
@given(rho=st.floats(0.01, 100), seed=st.integers(0, 10_000))
def test_q5_zero_shot_invariant_to_rho_and_invertible_reparametrisation(rho, seed):
    cfg = make_config("M1", n=80, d=120, n_test=500)
    dicts, data = _data(cfg, seed)
    test = sample_dataset(jax.random.key(seed + 1), cfg, dicts, cfg.n_test, "flipped")
    prompts = prompt_latents(cfg) @ dicts[1].T
    w_i, w_t = mmcl_closed_form(data.x_image, data.x_text, rank=2, rho=1.0)
    base = _zero_shot_predictions(w_i, w_t, test.x_image, prompts)
    w_i2, w_t2 = mmcl_closed_form(data.x_image, data.x_text, rank=2, rho=rho)
    assert jnp.all(_zero_shot_predictions(w_i2, w_t2, test.x_image, prompts) == base)
    R = jax.random.normal(jax.random.key(seed), (2, 2)) + 3 * jnp.eye(2)  # invertible
    w_i3, w_t3 = R @ w_i, jnp.linalg.inv(R).T @ w_t  # W_I -> R W_I, W_T -> R^{-T} W_T keeps W_I^T W_T
    agree = jnp.mean(_zero_shot_predictions(w_i3, w_t3, test.x_image, prompts) == base)
    assert agree > 0.999  # float32 ties at most


# ------------------------------------------------------------------ reference tables


def test_reference_tables_here_are_the_documented_ones():
    """The expectations below are docs/theory.md's tables, read back from the page."""
    m1 = {}
    for row in re.findall(r"^\| (rich, r = 1|r = 0\.5|label-only, r = 0) \|(.*)\|$", _doc_section("m1-reference"), re.M):
        r = {"rich, r = 1": 1.0, "r = 0.5": 0.5, "label-only, r = 0": 0.0}[row[0]]
        m1[r] = tuple(tuple(_numbers(cell)) for cell in row[1].split("|"))
    assert m1 == M1_REFERENCE
    m2 = {}
    for sc, beta, ann, core, mean in re.findall(r"^\| (\d) \| ([\d.]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
                                                 _doc_section("m2-reference"), re.M):
        for i, a in enumerate((0, 1)):
            pick = lambda cell: _numbers(cell)[i if "/" in cell else 0]
            m2[(int(sc), float(beta) if "." in beta else int(beta), a)] = (pick(core), pick(mean))
    assert m2 == M2_REFERENCE


@pytest.mark.parametrize("r", [1.0, 0.5, 0.0])
def test_m1_population_table(r):
    cfg = make_config("M1", r=r)
    core, class_mean, rank1 = M1_REFERENCE[r]
    for i, test in enumerate(TESTS):
        assert abs(population_zero_shot_accuracy(cfg, test) - core[i]) <= ROUNDING + EXACT_TOL
        assert abs(population_zero_shot_accuracy(cfg, test, prompt="class_mean") - class_mean[i]) <= ROUNDING + EXACT_TOL
        for prompt in ("core", "class_mean"):  # rank 1: one singular pair, so one classifier for both prompts
            assert abs(population_zero_shot_accuracy(cfg, test, rank=1, prompt=prompt) - rank1[i]) <= ROUNDING + EXACT_TOL
        # second method: the M1 closed form against the generic Gaussian orthant computation (both Phi)
        assert abs(population_zero_shot_accuracy(cfg, test) - m1_population_accuracy(cfg, test)) < 1e-12


def test_m1_rank_one_and_bayes_core():
    cfg = make_config("M1")
    assert bayes_core_accuracy(cfg) == pytest.approx(0.8413447461, abs=1e-9)  # Phi(1)
    acc1 = population_zero_shot_accuracy(cfg, "flipped", rank=1)
    mc, se = population_zero_shot_accuracy_mc(cfg, "flipped", jax.random.key(0), 400_000, rank=1)
    assert abs(acc1 - mc) <= 4 * se + EXACT_TOL


@pytest.mark.parametrize("key", list(M2_REFERENCE))
def test_m2_population_table(key):
    sigma_core, beta, annotate = key
    cfg = make_config("M2", sigma_core=sigma_core, beta=beta, annotate=annotate, d=3000)
    core = population_zero_shot_accuracy(cfg, "flipped")
    assert abs(core - M2_REFERENCE[key][0]) <= ROUNDING + EXACT_TOL
    assert abs(population_zero_shot_accuracy(cfg, "flipped", prompt="class_mean") - M2_REFERENCE[key][1]) <= ROUNDING + EXACT_TOL
    if key in M2_INDEPENDENT_SIMULATION:  # an independent expectation: its Monte Carlo error plus its rounding
        assert abs(core - M2_INDEPENDENT_SIMULATION[key]) <= 3 * SIMULATION_SE + ROUNDING


def test_m2_exact_matches_monte_carlo_and_test_noise_matters_at_small_d():
    """docs/theory.md#m2-reference: at d = 200 the projected test noise e = 0.005 lowers the first row
    (0.988 at d = 3000) by more than 0.15; the Monte Carlo route agrees within its standard error."""
    small_d = make_config("M2", sigma_core=0.0, beta=0.0, d=200)
    exact = population_zero_shot_accuracy(small_d, "flipped")
    mc, se = population_zero_shot_accuracy_mc(small_d, "flipped", jax.random.key(1), 200_000)
    assert abs(exact - mc) <= 4 * se + EXACT_TOL
    assert exact < M2_REFERENCE[(0, 0, 0)][0] - 0.15


# ------------------------------------------------------------------ ties and non-unique truncations


@pytest.mark.parametrize("K, rank", [(2, 1), (3, 2), (5, 4)])
def test_degenerate_case_scores_all_tie_and_both_routes_give_the_first_class(K, rank):
    """Regression (issue 11): M2, p = 0, beta = 1, annotate = 1, small sigma_core, rank < l. Every
    training image shows every class's object and its caption names them all, so the core block of
    Cov(z_I, z_T) is sigma_core^2 I, below the spurious block's K - 1 equal singular values
    (1 + sigma_spu^2)/K (times spurious_annotation = 1); the rank-(K-1) truncation keeps only spurious
    directions, which core prompts do not read: every class scores exactly 0. argmax then picks class 0,
    so a test point is classified correctly iff y = 0: accuracy 1/K on every test. The exact route
    returned 0 (K = 2) or NaN (K > 2) here, the Monte Carlo route 1/K."""
    cfg = make_config("M2", K=K, p=0.0, beta=1.0, annotate=1.0, sigma_core=0.05)
    for test in ("aligned", "flipped", 0.3):
        exact = population_zero_shot_accuracy(cfg, test, rank=rank)
        mc, se = population_zero_shot_accuracy_mc(cfg, test, jax.random.key(2), 100_000, rank=rank)
        assert abs(exact - 1 / K) <= EXACT_TOL
        assert abs(mc - 1 / K) <= 4 * se


def test_ties_without_noise_in_m1_follow_the_first_index_rule():
    """sigma_core = sigma_spu = sigma_xi = 0, p = 0 (w = 1, m = -1): no randomness; on the aligned groups
    both classes score the same (margin w + m = 0), so y = -1 (index 0) is right and y = +1 wrong: 1/2;
    on the flipped groups the margin w - m = 2 > 0: 1. Accuracy(q) = q/2 + (1 - q). (Both exact
    routes returned q * 0 + (1 - q) here.)"""
    cfg = make_config("M1", sigma_core=0.0, sigma_spu=0.0, sigma_xi=0.0, p=0.0)
    for q in (1.0, 0.0, 0.5, 0.3):
        expected = q / 2 + (1 - q)
        assert abs(population_zero_shot_accuracy(cfg, q) - expected) <= EXACT_TOL
        assert abs(m1_population_accuracy(cfg, q) - expected) <= EXACT_TOL
        mc, se = population_zero_shot_accuracy_mc(cfg, q, jax.random.key(3), 100_000)
        assert abs(mc - expected) <= 4 * se + EXACT_TOL


@pytest.mark.parametrize("K, annotate", [(3, 0.5), (5, 0.0), (2, 1.0)])
def test_rank_that_splits_tied_singular_values_is_refused(K, annotate):
    """M2 with K > 2 has tied singular values by class symmetry (and K = 2 at beta = annotate = 1, where
    the core block is sigma_core^2 I): a rank-1 minimiser is not unique, so there is no population
    prediction; one clear ValueError instead of an arbitrary number or NaN."""
    cfg = make_config("M2", K=K, p=0.0, beta=1.0, annotate=annotate)
    sigma = np.linalg.svd(population_cross_covariance(cfg), compute_uv=False)
    assert sigma[0] - sigma[1] < 1e-9 * sigma[0]  # the premise
    with pytest.raises(ValueError, match="rank = 1: .* not unique"):
        population_zero_shot_accuracy(cfg, "flipped", rank=1)
    with pytest.raises(ValueError, match="not unique"):
        population_zero_shot_accuracy_mc(cfg, "flipped", jax.random.key(0), 1000, rank=1)


# ------------------------------------------------------------------ finite samples against the population


def test_finite_sample_m1_matches_independent_simulation_and_sl_fails():
    """docs/claims.md#q1 and #q2 at the M1 defaults (n = 200): the independent simulation's closed-form
    MMCL row 0.926 / 0.821 / 0.702, each within 0.02 + 3 s.e. (the Q1 rule), and SL min-norm failing."""
    rows, = evaluate_grid([make_config("M1", r=1.0)], range(5), ["mmcl_closed_form", "sl_min_norm"], route="exact")
    mmcl = seed_accuracies(rows, "mmcl_closed_form")
    for i, expected in enumerate((0.926, 0.821, 0.702)):
        m, se = mean_se(mmcl[:, i])
        assert abs(m - expected) <= 0.02 + 3 * se
    sl = seed_accuracies(rows, "sl_min_norm")
    assert sl[:, 0].mean() > 0.98 and abs(sl[:, 1].mean() - 0.5) < 0.05
    m, se = mean_se(sl[:, 2])
    assert m + 3 * se < 0.10


@settings(max_examples=3, deadline=None)
@given(sigma_core=st.floats(0.5, 2), p=st.floats(0.6, 0.97), r=st.floats(0, 1))
def test_population_matches_finite_sample_at_large_n(sigma_core, p, r):
    """Closed-form MMCL at n = 2000 (exact test-distribution accuracy, so no test-sample error) against
    the population: the remaining gap is the estimation error of S, O(1/sqrt(n)); 2/sqrt(n) = 0.045."""
    cfg = make_config("M1", sigma_core=sigma_core, p=p, r=r, n=2000, d=300)
    rows, = evaluate_grid([cfg], [5], ["mmcl_closed_form"], route="exact")
    for acc, test in zip(seed_accuracies(rows, "mmcl_closed_form")[0], TESTS):
        assert abs(acc - population_zero_shot_accuracy(cfg, test)) < 2 / np.sqrt(cfg.n)


def _sagawa_bounds(p: float, n: int) -> tuple[float, float]:
    """Sagawa et al. (ICML 2020), Thm 1, in M1's terms (docs/theory.md#sagawa), written out here: with
    n_maj = round(p n) majority points, sigma_spu^2 <= 1 / (16 log(100 n_maj)) and sigma_xi^2 <= n_maj / 600^2."""
    n_maj = round(p * n)
    return 1 / (16 * math.log(100 * n_maj)), n_maj / 600**2


# Interior point: every condition met with room (n_maj = 1999: sigma_spu^2 0.0025 < 0.00512, sigma_xi^2 0.0025 <
# 0.00555, sigma_core^2 2.25 > 1, p 0.9996 > 0.9995002, d 40000 > 20000).
SAGAWA_INTERIOR = dict(p=0.9996, sigma_spu=0.05, sigma_core=1.5, sigma_xi=0.05, n=2000, d=40_000)
_SPU, _XI = _sagawa_bounds(0.9996, 2000)
_P = 1 - 1 / 2001
# condition -> [(value, met?)]: just inside and just outside each bound (relative 1e-6), the bound itself where the
# condition is inclusive, and a value far outside
SAGAWA_EDGES = {
    "p": [(_P + 1e-6, True), (_P - 1e-6, False), (0.9, False)],
    "sigma_spu": [(math.sqrt(_SPU * (1 - 1e-6)), True), (math.sqrt(_SPU * (1 + 1e-6)), False), (0.5, False)],
    "sigma_core": [(1.0, True), (1.0 + 1e-6, True), (1.0 - 1e-6, False), (0.25, False)],
    "sigma_xi": [(math.sqrt(_XI * (1 - 1e-6)), True), (math.sqrt(_XI * (1 + 1e-6)), False), (1.0, False)],
    "d": [(20_000, True), (19_999, False), (2_000, False)],
}


def test_sagawa_conditions_all_met_inside():
    met = sagawa_conditions(make_config("M1", **SAGAWA_INTERIOR))
    assert set(met) == set(SAGAWA_EDGES) and all(ok for ok, _ in met.values()), met
    defaults = sagawa_conditions(make_config("M1"))  # p 0.95, sigma_xi 1 (n_maj = 190: bound 5.3e-4), d = 10 n
    assert [k for k, (ok, _) in defaults.items() if not ok] == ["p", "sigma_xi"], defaults


@pytest.mark.parametrize("condition", list(SAGAWA_EDGES))
def test_sagawa_condition_on_both_sides_of_its_bound(condition):
    """Each condition flips exactly at its bound and no other condition moves (p's moves keep n_maj = 1999)."""
    for value, expected in SAGAWA_EDGES[condition]:
        met = sagawa_conditions(make_config("M1", **{**SAGAWA_INTERIOR, condition: value}))
        assert met[condition][0] is expected, (condition, value, met[condition])
        assert all(ok for name, (ok, _) in met.items() if name != condition), (condition, value, met)


def test_sagawa_variance_bounds_count_the_majority_points_not_n():
    """At p = 0.5, n = 2000 the bound is 1/(16 log(100 * 1000)) = 0.00543, not 1/(16 log(200000)) = 0.00512:
    sigma_spu^2 = 0.0053 lies between the two and is met; sigma_xi's bound is 1000/600^2, not 2000/600^2."""
    spu, xi = _sagawa_bounds(0.5, 2000)
    assert spu == pytest.approx(1 / (16 * math.log(1e5))) and xi == pytest.approx(1000 / 360_000)
    met = sagawa_conditions(make_config("M1", **{**SAGAWA_INTERIOR, "p": 0.5, "sigma_spu": math.sqrt(0.0053),
                                                 "sigma_xi": math.sqrt(1.5 * xi)}))
    assert met["sigma_spu"][0] and not met["sigma_xi"][0] and not met["p"][0]
    assert f"{xi:.3g}" in met["sigma_xi"][1] and f"{spu:.3g}" in met["sigma_spu"][1]
