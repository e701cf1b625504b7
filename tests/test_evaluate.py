"""The evaluation API: the exact route agrees with the sampled route, the hidden-width draws with
d-dimensional draws, min-norm solvers with pinv, and SL rows are shared across caption-only values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory import evaluate as E
from mmcl_theory import grid as G
from mmcl_theory import learners as L
from mmcl_theory.models import evaluate_grid
from mmcl_theory.results import seed_accuracies
from mmcl_theory.datamodel import TESTS, dictionaries, make_config, sample_dataset, sample_latents
from mmcl_theory.datamodel import test_groups as gaussian_test_groups

FAST = L.LearnerSettings(steps=40, gd_steps=40, sl_gd_steps=200)


@pytest.mark.parametrize("model, extra", [("M1", {"r": 0.5}), ("M2", {"K": 3})])
def test_exact_route_equals_sampled_route_within_sampling_error(model, extra):
    """Given the same trained weights, accuracy on n_test sampled points is binomial around the exact value."""
    n_test = 20000
    cfg = make_config(model, n=60, d=120, n_test=n_test, **extra)
    learners = ("mmcl_closed_form", "mmcl_infonce_linear", "sl_min_norm", "sl_logistic", "sl_logistic_gd")
    seeds = [0, 1]
    exact = evaluate_grid([cfg], seeds, learners, FAST, "exact")[0]
    sampled = evaluate_grid([cfg], seeds, learners, FAST, "sampled")[0]
    for learner in learners:
        a, b = seed_accuracies(exact, learner), seed_accuracies(sampled, learner)
        # binomial s.e. of the sampled value, plus the score Monte Carlo's own s.e. for K > 2
        se = np.sqrt(a * (1 - a) / n_test + (0 if model == "M1" else a * (1 - a) / G.MC_DRAWS))
        assert np.all(np.abs(a - b) <= 4 * se + 1e-6), (learner, a, b)
    routes = {r["route"] for r in exact if r["learner"] in learners}
    assert routes == ({"exact"} if model == "M1" else {"score_mc"})


def test_hidden_width_draws_match_d_dimensional_draws():
    """First-layer pre-activations drawn in the hidden width have the mean and covariance of x W1 + b1."""
    cfg = make_config("M1", n=50, d=400, n_test=40000, sigma_xi=2.0)
    key = jax.random.key(3)
    dicts = dictionaries(key, cfg)
    w1 = jax.random.normal(jax.random.key(4), (cfg.d, 6)) / 20
    b1 = jnp.arange(6.0) / 10
    k_z, k_xi = jax.random.split(jax.random.key(5))
    lat = sample_latents(k_z, cfg, cfg.n_test, "flipped")
    h, y = G.hidden_test_draws(k_xi, (lat.z_image, lat.label), dicts[0], cfg.sigma_xi**2 / cfg.d, w1, b1)
    x = sample_dataset(jax.random.key(6), cfg, dicts, cfg.n_test, "flipped").x_image
    h_ref = x @ w1 + b1
    se = np.sqrt(np.var(np.asarray(h_ref), 0) / cfg.n_test)
    assert np.all(np.abs(np.mean(h, 0) - np.mean(h_ref, 0)) < 5 * se)
    c, c_ref = np.cov(np.asarray(h).T), np.cov(np.asarray(h_ref).T)
    assert np.allclose(c, c_ref, atol=5 * np.sqrt(2 / cfg.n_test) * np.max(np.diag(c_ref)))


@pytest.mark.parametrize("n, d, sigma_xi", [(40, 300, 1.0), (40, 300, 0.03), (80, 50, 1.0)])
def test_min_norm_solvers_agree_with_pinv(n, d, sigma_xi):
    with jax.enable_x64(True):
        cfg = make_config("M1", n=n, d=d, sigma_xi=sigma_xi)
        key = jax.random.key(0)
        data = sample_dataset(key, cfg, dictionaries(key, cfg), n)
        x = jnp.asarray(data.x_image, jnp.float64)
        ref = L.sl_min_norm(x, data.label, 2, "pinv")
        for method in ("cholesky", "qr", "auto"):
            if d <= n and method == "cholesky":
                continue
            w = L.sl_min_norm(x, data.label, 2, method)
            assert np.allclose(w, ref, rtol=1e-6, atol=1e-8 * np.abs(ref).max()), method
        if d > n:  # interpolates the +-1 targets
            assert np.allclose(x @ ref, 2.0 * jax.nn.one_hot(data.label, 2) - 1.0, atol=1e-8)


@pytest.mark.parametrize("n, d", [(120, 30), (20, 60)])
def test_min_norm_of_rank_deficient_data_is_finite_and_equals_pinv(n, d):
    """Dependent columns (d <= n: constant and repeated features, as the background pixels of M3's
    digits) or repeated points (d > n) make R singular; every method must still return float64
    pinv's minimum-norm solution, never inf/NaN."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    if d <= n:
        x[:, :5] = 1.0  # constant pixels
        x[:, 5] = x[:, 6]
    else:
        x[1] = x[0]
    label = jnp.asarray(rng.integers(0, 3, n))
    with jax.enable_x64(True):
        ref = np.asarray(L.sl_min_norm(jnp.asarray(x), label, 3, "pinv"))
    for method in ("qr", "auto"):
        w = np.asarray(L.sl_min_norm(jnp.asarray(x, jnp.float32), label, 3, method))
        assert np.all(np.isfinite(w)), method
        assert np.linalg.norm(w - ref) / np.linalg.norm(ref) < 1e-3, method


def test_auto_min_norm_falls_back_to_qr_when_ill_conditioned():
    """float32 at sigma_xi = 0.03: the Gram matrix squares cond(X); auto must stay close to float64 pinv."""
    cfg = make_config("M1", n=60, d=2000, sigma_xi=0.03, p=0.9)
    key = jax.random.key(1)
    data = sample_dataset(key, cfg, dictionaries(key, cfg), cfg.n)
    with jax.enable_x64(True):
        ref = np.asarray(L.sl_min_norm(jnp.asarray(data.x_image, jnp.float64), data.label, 2, "pinv"))
    auto = np.asarray(L.sl_min_norm(data.x_image, data.label, 2, "auto"))
    qr = np.asarray(L.sl_min_norm(data.x_image, data.label, 2, "qr"))
    assert np.linalg.norm(qr - ref) / np.linalg.norm(ref) < 1e-3
    assert np.linalg.norm(auto - ref) / np.linalg.norm(ref) < 1e-3


def test_sl_rows_are_shared_across_caption_only_values_and_equal_a_fresh_run():
    configs = [make_config("M1", n=40, d=80, n_test=200, r=r) for r in (0.0, 1.0)]
    rows = evaluate_grid(configs, [0, 1], ("mmcl_closed_form", "sl_min_norm"), FAST, "exact")
    sl = [seed_accuracies(r, "sl_min_norm") for r in rows]
    alone = evaluate_grid(configs[1:], [0, 1], ("sl_min_norm",), FAST, "exact")[0]
    assert np.array_equal(sl[0], sl[1]) and np.array_equal(sl[1], seed_accuracies(alone, "sl_min_norm"))
    mmcl = [seed_accuracies(r, "mmcl_closed_form") for r in rows]
    assert not np.array_equal(mmcl[0], mmcl[1])  # captions do change MMCL


def test_both_prompts_for_zero_shot_learners_and_theory():
    cfg = make_config("M1", n=40, d=80, n_test=200)
    rows = evaluate_grid([cfg], [0], ("theory_mmcl", "mmcl_closed_form", "sl_min_norm"), FAST)[0]
    prompts = {(r["learner"], r["prompt"]) for r in rows}
    assert prompts == {("theory_mmcl", "core"), ("theory_mmcl", "class_mean"), ("mmcl_closed_form", "core"),
                       ("mmcl_closed_form", "class_mean"), ("sl_min_norm", "")}
    assert all(len([r for r in rows if (r["learner"], r["prompt"]) == lp]) == len(TESTS) for lp in prompts)


def test_unknown_route_and_learner_are_one_line_errors():
    cfg = make_config("M1", n=40, d=80)
    with pytest.raises(ValueError, match="allowed exact, sampled"):
        evaluate_grid([cfg], [0], ("mmcl_closed_form",), FAST, "magic")
    with pytest.raises(ValueError, match="unknown learner"):
        evaluate_grid([cfg], [0], ("sl_magic",), FAST)


def test_rows_carry_convergence_of_trained_learners_only():
    """final_loss / loss_floor / converged: floats and a bool for trained learners, "" otherwise; the
    InfoNCE floor is the perfect-matching value at n = 40, tau = 0.1, log(1 + 39 exp(-40/3.9)) (by hand)."""
    cfg = make_config("M1", n=40, d=80, n_test=200)
    learners = ("theory_mmcl", "mmcl_closed_form", "mmcl_infonce_linear", "sl_min_norm", "sl_logistic_gd")
    rows = evaluate_grid([cfg], [0, 1], learners, FAST)[0]
    for r in rows:
        if r["learner"] in ("theory_mmcl", "mmcl_closed_form", "sl_min_norm"):
            assert (r["final_loss"], r["loss_floor"], r["converged"]) == ("", "", "")
        else:
            assert isinstance(r["converged"], bool) and r["final_loss"] >= r["loss_floor"] - 1e-6
    infonce = [r for r in rows if r["learner"] == "mmcl_infonce_linear"]
    assert all(r["loss_floor"] == pytest.approx(0.00136919, abs=2e-8) for r in infonce)
    assert all(r["final_loss"] < math.log(40) for r in infonce)  # training lowered the loss from ~log n
    assert {r["loss_floor"] for r in rows if r["learner"] == "sl_logistic_gd"} == {0.0}


def test_sl_rows_are_not_shared_across_image_changes():
    """p (the class-spurious agreement) changes the training images: each config's SL rows equal its own fresh run, not the other's."""
    configs = [make_config("M1", n=40, d=80, n_test=200, p=p) for p in (0.6, 0.99)]
    rows = evaluate_grid(configs, [0, 1], ("sl_min_norm",), FAST, "exact")
    for cfg, got in zip(configs, rows):
        alone = evaluate_grid([cfg], [0, 1], ("sl_min_norm",), FAST, "exact")[0]
        assert np.array_equal(seed_accuracies(got, "sl_min_norm"), seed_accuracies(alone, "sl_min_norm"))
    assert not np.array_equal(seed_accuracies(rows[0], "sl_min_norm"), seed_accuracies(rows[1], "sl_min_norm"))


@pytest.mark.parametrize("model", ["M1", "M2"])
def test_exact_route_scores_are_the_sampled_route_scores(model):
    """For every fitted learner of the synthetic models, the scores the exact route integrates are those the sampled
    route evaluates: a linear learner's x W + b equals its logits up to one positive factor per test point
    (1 for MMCL-linear and SL, 1/|f_I(x)| for InfoNCE), and an MLP's head(x W1 + b1) equals its logits."""
    cfg = make_config(model, n=60, d=120, **({"K": 3} if model == "M2" else {}))
    key = jax.random.key(0)
    k_dict, k_train, k_test, k_fit = jax.random.split(key, 4)
    dicts = dictionaries(k_dict, cfg)
    data = sample_dataset(k_train, cfg, dicts, cfg.n)
    train = E.Train(data.x_image, data.x_text, data.label, cfg.num_classes)
    x = sample_dataset(k_test, cfg, dicts, 50, "flipped").x_image
    prompts = jnp.asarray(np.random.default_rng(1).normal(size=(len(E.PROMPTS), cfg.num_classes, cfg.d)), jnp.float32)
    for learner in (l for l in E.LEARNERS if l.fit is not None):
        params, _ = learner.fit(k_fit, train, FAST)
        logits = np.asarray(learner.score(params, x, prompts), np.float64)  # (P, m, K)
        forms = learner.exact(params, prompts)
        if learner.linear:
            assert len(forms) == logits.shape[0], learner.name
            for p, (w, b) in enumerate(forms):
                affine = np.asarray(x @ w + b, np.float64)
                ratio = logits[p, :, :1] / affine[:, :1]  # one positive factor per point
                assert np.all(ratio > 0), learner.name
                np.testing.assert_allclose(affine * ratio, logits[p], rtol=2e-4, atol=2e-5 * np.abs(logits).max(),
                                           err_msg=f"{learner.name} {p}")
        else:
            (w1, b1), head = forms
            np.testing.assert_allclose(np.asarray(head(x @ w1 + b1)), logits, rtol=1e-4, atol=1e-6,
                                       err_msg=learner.name)


def _numpy_test_accuracy(model, cfg, d_image, w, b, q, n, rng):
    """(accuracy, s.e.) of argmax_k (x W + b)_k on n test images drawn here in numpy from docs/models.md (M1: y, a = y
    with probability q, z = [y + sigma_core e1, a + sigma_spu e2]; M2: z = [e_y (1 + sigma_core e1), e_a (1 + sigma_spu
    e2)], a = y with probability q else uniform over the other classes, no details at test), x = D_I z + xi with
    xi ~ N(0, sigma_xi^2/d I_d) in all d coordinates. Shares no code with the package's samplers or grid.py."""
    K = w.shape[1]
    y = rng.integers(0, K, n)
    agree = rng.random(n) < q
    if model == "M1":
        sign = 2.0 * y - 1
        z = np.stack([sign + cfg.sigma_core * rng.standard_normal(n),
                      np.where(agree, sign, -sign) + cfg.sigma_spu * rng.standard_normal(n)], 1)
    else:
        a = np.where(agree, y, (y + rng.integers(1, K, n)) % K)
        eye = np.eye(K)
        z = np.concatenate([eye[y] * (1 + cfg.sigma_core * rng.standard_normal((n, 1))),
                            eye[a] * (1 + cfg.sigma_spu * rng.standard_normal((n, 1)))], 1)
    x = z @ d_image.T + rng.standard_normal((n, cfg.d)) * (cfg.sigma_xi / math.sqrt(cfg.d))
    hits = np.argmax(x @ w + b, 1) == y
    return hits.mean(), hits.std() / math.sqrt(n)


@pytest.mark.parametrize("model", ["M1", "M2"])
def test_exact_route_accuracy_at_sigma_xi_2_and_sigma_core_2_is_a_numpy_monte_carlo(model):
    """grid.py's module doc (route exact): per test group the scores x W + b are Gaussian with covariance
    V^T diag(var_g) V + (sigma_xi^2/d) W^T W, var_g = [sigma_core^2, sigma_spu^2] (M1; M2 on the class's and the
    attribute's coordinates), with x = D_I z + xi, xi ~ N(0, sigma_xi^2/d I_d) (docs/models.md#observation-model).
    At the defaults sigma_xi = sigma_core = 1 a power of either is invisible; here sigma_xi = 2, sigma_core = 2 and a
    small d (noise per unit weight 4/d, not 2/d), with a fixed affine classifier that reads the class and the
    attribute and has a part off D_I's columns that only the noise reaches. linear_test_accuracy (exact Phi for M1,
    the score Monte Carlo for M2 with K = 3) must equal _numpy_test_accuracy on 400,000 draws within 5 standard errors
    (the draws' own, plus for K > 2 sqrt(a (1 - a) / MC_DRAWS) for the score Monte Carlo). Measured: a sigma_xi (for
    sigma_xi^2) moves the aligned accuracy by 0.015 (M1) / 0.037 (M2), a sigma_core (for sigma_core^2) by 0.052 /
    0.041, against tolerances 0.0035 / 0.019."""
    K, d = (2, 4) if model == "M1" else (3, 8)
    l, c = (2, 0.7) if model == "M1" else (6, 0.3)
    cfg = make_config(model, sigma_core=2.0, sigma_spu=0.1, sigma_xi=2.0, d=d, **({"K": K} if model == "M2" else {}))
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    d_image, perp = basis[:, :l], basis[:, l:]
    latent = np.array([[-1.0, 1.0], [-0.6, 0.6]]) if model == "M1" else np.concatenate([np.eye(K), 0.6 * np.eye(K)])
    w = d_image @ latent + c * perp @ rng.normal(size=(d - l, K))
    b = 0.1 * rng.normal(size=K)
    args = [jnp.asarray(v, jnp.float32) for v in (d_image, w, b)]
    for test in TESTS:
        exact = float(G.linear_test_accuracy(jax.random.key(0), gaussian_test_groups(cfg, test), args[0],
                                             cfg.sigma_xi**2 / cfg.d, *args[1:]))
        sampled, se = _numpy_test_accuracy(model, cfg, d_image, w, b, {"aligned": 1.0, "independent": 1 / K,
                                                                       "flipped": 0.0}[test], 400_000, rng)
        se_mc = 0.0 if K == 2 else math.sqrt(exact * (1 - exact) / G.MC_DRAWS)
        assert abs(exact - sampled) <= 5 * math.hypot(se, se_mc), (model, test, exact, sampled, se, se_mc)
