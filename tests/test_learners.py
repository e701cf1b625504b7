"""The training loop, the loss floors and convergence flags, plain-GD SL's implicit bias, and the
large-temperature bridge from InfoNCE to the linear loss (docs/learners.md, docs/temperature.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize

from mmcl_theory import learners as L
from mmcl_theory.models import evaluate_grid
from mmcl_theory.results import seed_accuracies
from mmcl_theory.config import ConfigError
from mmcl_theory.losses import l2_normalise
from mmcl_theory.datamodel import dictionaries, make_config, sample_dataset
from mmcl_theory.losses import infonce_loss, linear_contrastive_loss


# ------------------------------------------------------------------ the training loop


def test_fit_full_batch_follows_the_gradient_descent_recursion():
    """On L(w) = 0.5 ||w - c||^2, GD gives w_t = c + (1 - lr)^t (w_0 - c); the trace is L(w_t)."""
    c, w0, lr, steps = jnp.array([1.0, -2.0]), jnp.array([3.0, 0.5]), 0.3, 7
    params, losses = L.fit(lambda w: 0.5 * jnp.sum((w - c) ** 2), w0, optax.sgd(lr), steps)
    expected = [0.5 * (1 - lr) ** (2 * t) * float(jnp.sum((w0 - c) ** 2)) for t in range(steps + 1)]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(params, c + (1 - lr) ** steps * (w0 - c), rtol=1e-5)


def test_fit_minibatches_are_rows_of_the_data_and_the_last_entry_is_the_full_loss():
    x = jnp.array([0.0, 1.0, 3.0, 7.0])
    loss = lambda w, batch: 0.5 * jnp.mean((w - batch) ** 2)
    _, losses = L.fit(loss, jnp.array(0.0), optax.sgd(0.0), 40, data=x, batch_size=1, key=jax.random.key(0))
    singles = 0.5 * np.asarray(x) ** 2  # lr 0: w stays 0, a batch of one row j has loss x_j^2 / 2
    per_step = np.asarray(losses[:-1])
    assert all(np.isclose(v, singles).any() for v in per_step)
    assert len(set(per_step.round(6))) == 4  # every row drawn at some step of 40
    assert float(losses[-1]) == pytest.approx(0.5 * np.mean(np.asarray(x) ** 2))


# ------------------------------------------------------------------ floors and convergence


def _m1_sample(seed=0, **kw):
    cfg = make_config("M1", **kw)
    key = jax.random.key(seed)
    return cfg, sample_dataset(key, cfg, dictionaries(key, cfg), cfg.n)


def test_linear_gd_reaches_the_closed_form_floor_of_its_rank():
    cfg, data = _m1_sample(n=60, d=80, r=1.0)
    rank, rho = 3, 1.0
    floor = float(L.loss_floor_linear(data.x_image, data.x_text, rank, rho))
    # independent value: the loss of the closed-form factors of the same rank
    w_i, w_t = L.mmcl_closed_form(data.x_image, data.x_text, rank, rho)
    a = w_i.T @ w_t
    at_closed_form = float(linear_contrastive_loss(data.x_image @ w_i.T, data.x_text @ w_t.T)
                           + 0.5 * rho * jnp.sum(a * a))
    assert floor == pytest.approx(at_closed_form, rel=1e-4)
    _, long = L.mmcl_linear_gd(jax.random.key(1), data.x_image, data.x_text, rank, rho, 3000, 0.1, with_trace=True)
    final, _, converged = L.fit_summary(long, floor)
    assert abs(float(final) - floor) <= 1e-3 * abs(floor) and bool(converged)
    _, short = L.mmcl_linear_gd(jax.random.key(1), data.x_image, data.x_text, rank, rho, 20, 0.1, with_trace=True)
    final, _, converged = L.fit_summary(short, floor)
    assert float(final) - floor > 0.1 * abs(floor) and not bool(converged)



def test_linear_loss_floor_at_rho_not_one_is_the_closed_form_minimum_by_hand():
    """docs/theory.md#closed-form (and learners.loss_floor_linear's docstring): over rank(A) <= p the regularised
    linear loss -<A, S> + (rho/2) ||A||_F^2 is smallest at A* = (1/rho) (top-p SVD of S), S = (X_I - 1 xbar^T)^T X_T
    / (n - 1). At rho = 0.25 (the default rho = 1 hides a missing or squared rho) loss_floor_linear must equal that
    loss evaluated in float64 numpy at A* built here from numpy's SVD of S, at rank 2 and at full rank (0)."""
    cfg, data = _m1_sample(n=60, d=80, r=1.0)
    x_i, x_t = np.asarray(data.x_image, np.float64), np.asarray(data.x_text, np.float64)
    S = (x_i - x_i.mean(0)).T @ x_t / (cfg.n - 1)
    u, sigma, vt = np.linalg.svd(S)
    rho = 0.25
    for rank in (2, 0):
        p = rank or len(sigma)
        a_star = (u[:, :p] * sigma[:p]) @ vt[:p] / rho
        by_hand = -np.sum(a_star * S) + 0.5 * rho * np.sum(a_star * a_star)
        assert float(L.loss_floor_linear(data.x_image, data.x_text, rank, rho)) == pytest.approx(by_hand, rel=1e-4), rank

def _simplex(n):
    """n unit vectors in R^n with pairwise inner products -1/(n-1) (centred standard basis)."""
    e = np.eye(n) - 1.0 / n
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_infonce_floor_value_attainment_and_bound():
    assert L.loss_floor_infonce(2, 1.0) == pytest.approx(0.126928011, abs=1e-9)  # log(1 + e^-2), by hand
    for n, tau in [(5, 0.1), (5, 1.0), (12, 10.0)]:
        u = jnp.asarray(_simplex(n), jnp.float32)
        floor = L.loss_floor_infonce(n, tau)
        assert float(infonce_loss(u, u, 1.0 / tau)) == pytest.approx(floor, rel=1e-5, abs=1e-7)
        keys = jax.random.split(jax.random.key(n), 200)
        draw = lambda k: l2_normalise(jax.random.normal(k, (2, n, 3)))
        losses = jax.vmap(lambda k: infonce_loss(*draw(k), 1.0 / tau))(keys)
        assert float(losses.min()) >= floor - 1e-6


# ------------------------------------------------------------------ InfoNCE against the loss written out by hand


def _lse(a, axis):
    top = a.max(axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis, keepdims=True))).squeeze(axis)


def _infonce_by_hand(u, v, tau):
    """Symmetric InfoNCE in float64 numpy, from its definition (docs/learners.md#infonce): with s_ij = <u_i, v_j>/tau,
    (1/2) [ (1/n) sum_i (logsumexp_j s_ij - s_ii) + (1/n) sum_j (logsumexp_i s_ij - s_jj) ]."""
    s = np.asarray(u, np.float64) @ np.asarray(v, np.float64).T / tau
    return 0.5 * (np.mean(_lse(s, 1) - np.diag(s)) + np.mean(_lse(s, 0) - np.diag(s)))


def _infonce_gradient_by_hand(u, v, tau):
    """(dL/du, dL/dv): softmax minus one-hot, per direction. dL/ds_ij = (1/2n) [(P_row - I) + (P_col - I)]_ij with
    P_row the softmax of s over j (each row), P_col over i (each column); s = u v^T / tau."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = u.shape[0]
    s = u @ v.T / tau
    p_row = np.exp(s - _lse(s, 1)[:, None])
    p_col = np.exp(s - _lse(s, 0)[None, :])
    g = ((p_row - np.eye(n)) + (p_col - np.eye(n))) / (2 * n)
    return g @ v / tau, g.T @ u / tau


# Three unit image and caption embeddings in R^2, tau = 0.5: s = 2 u v^T =
#   [[1.6, 1.2, 0], [1.2, -1.6, 2], [1.92, -0.56, 1.6]]
# rows (image -> caption): logsumexp(1.6, 1.2, 0) - 1.6 = 0.627123, logsumexp(1.2, -1.6, 2) + 1.6 = 3.989778,
#   logsumexp(1.92, -0.56, 1.6) - 1.6 = 0.913267; columns (caption -> image): logsumexp(1.6, 1.2, 1.92) - 1.6 = 1.114304,
#   logsumexp(1.2, -1.6, -0.56) + 1.6 = 3.009333, logsumexp(0, 2, 1.6) - 1.6 = 0.990924; loss = (mean + mean) / 2.
U3 = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
V3 = np.array([[0.8, 0.6], [0.6, -0.8], [0.0, 1.0]])
INFONCE_U3_V3_TAU_HALF = (0.627123 + 3.989778 + 0.913267 + 1.114304 + 3.009333 + 0.990924) / 6


def test_infonce_loss_hand_computed_and_its_gradient_is_softmax_minus_one_hot():
    assert _infonce_by_hand(U3, V3, 0.5) == pytest.approx(INFONCE_U3_V3_TAU_HALF, abs=2e-6)
    u, v = jnp.asarray(U3, jnp.float32), jnp.asarray(V3, jnp.float32)
    assert float(infonce_loss(u, v, 2.0)) == pytest.approx(INFONCE_U3_V3_TAU_HALF, abs=1e-5)
    # the temperature enters once: at tau = 1 (scale 1) and tau = 0.2 (scale 5) the loss is the hand formula's
    for tau in (1.0, 0.2):
        assert float(infonce_loss(u, v, 1.0 / tau)) == pytest.approx(_infonce_by_hand(U3, V3, tau), rel=1e-5)
    grad_u, grad_v = jax.grad(infonce_loss, argnums=(0, 1))(u, v, 2.0)
    hand_u, hand_v = _infonce_gradient_by_hand(U3, V3, 0.5)
    np.testing.assert_allclose(grad_u, hand_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_v, hand_v, rtol=1e-5, atol=1e-6)


def test_infonce_large_tau_expansion_is_log_n_plus_the_linear_loss():
    """docs/temperature.md: for unit embeddings InfoNCE(tau) = log n + (n-1)/(n tau) L_lin + R(tau), with
    R(tau) tau^2 -> (1/4) [mean_i var_j s_ij + mean_j var_i s_ij] (log mean exp(x/tau) = mean x / tau + var x /
    (2 tau^2) + O(tau^-3)). Float64, random unit vectors, n = 6."""
    rng = np.random.default_rng(3)
    u = rng.normal(size=(6, 4))
    v = rng.normal(size=(6, 4))
    u, v = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    n, s = 6, u @ v.T
    lin = -np.trace(s) / n + (s.sum() - np.trace(s)) / (n * (n - 1))  # the linear loss, written out
    second = 0.25 * (np.mean(s.var(axis=1)) + np.mean(s.var(axis=0)))
    with jax.enable_x64(True):
        ju, jv = jnp.asarray(u, jnp.float64), jnp.asarray(v, jnp.float64)
        assert float(linear_contrastive_loss(ju, jv)) == pytest.approx(lin, rel=1e-12)
        for tau in (30.0, 100.0, 1000.0):
            got = float(infonce_loss(ju, jv, 1.0 / tau))
            residual = got - math.log(n) - (n - 1) / (n * tau) * lin
            assert residual * tau**2 == pytest.approx(second, rel=3.0 / tau)  # the O(tau^-3) term, relative 1/tau


def _mlp_by_hand(params, x):
    """ReLU MLP forward in float64 numpy: ReLU after every layer but the last."""
    h = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(params):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("hidden", [False, True], ids=["linear", "mlp"])
def test_infonce_learner_shapes_and_its_loss_at_its_temperature(hidden):
    """mmcl_infonce's encoders have the widths of LearnerSettings (d -> width -> embed_dim for the MLP, d -> embed_dim
    linear), its temperature is held at settings.temperature, and its last trace entry is InfoNCE at that temperature
    of the returned encoders, computed here by hand (numpy forward pass and loss)."""
    _, data = _m1_sample(n=12, d=30)
    settings = L.LearnerSettings(temperature=0.5, steps=3, width=16, embed_dim=4)
    params, losses = L.mmcl_infonce(jax.random.key(0), data.x_image, data.x_text, settings, hidden=hidden,
                                    with_trace=True)
    sizes = (30, 16, 4) if hidden else (30, 4)
    for tower in ("image", "text"):
        assert [(w.shape, b.shape) for w, b in params[tower]] == [((a, b), (b,)) for a, b in zip(sizes, sizes[1:])]
    assert float(params["log_scale"]) == pytest.approx(math.log(2.0), rel=1e-6)  # fixed: not learned
    u = _unit_rows(_mlp_by_hand(params["image"], data.x_image))
    v = _unit_rows(_mlp_by_hand(params["text"], data.x_text))
    assert float(losses[-1]) == pytest.approx(_infonce_by_hand(u, v, 0.5), rel=2e-5)
    assert losses.shape == (4,) and float(losses[-1]) < float(losses[0])  # three Adam steps lower the loss


def test_infonce_learned_temperature_is_clamped_at_the_minimum():
    """learn_temperature: log(1/tau) is trained with the encoders and the loss uses tau = max(exp(-log_scale),
    MIN_TEMPERATURE). Here (embedding dim 12 >= n, the pairs separate) it climbs past log 100 within 60 steps, so the
    clamp is what holds tau at 0.01; unclamped, the hand loss would be ten times smaller (6.7e-4 against 6.2e-3).
    Tolerance: float32 logits of size 100 round at ~1e-5."""
    _, data = _m1_sample(n=12, d=30)
    settings = L.LearnerSettings(temperature=0.3, steps=60, lr=0.2, learn_temperature=True, embed_dim=12)
    params, losses = L.mmcl_infonce(jax.random.key(1), data.x_image, data.x_text, settings, hidden=False,
                                    with_trace=True)
    log_scale = float(params["log_scale"])
    assert log_scale > math.log(1 / L.MIN_TEMPERATURE) + 0.2  # the premise: learned past the clamp
    u = _unit_rows(_mlp_by_hand(params["image"], data.x_image))
    v = _unit_rows(_mlp_by_hand(params["text"], data.x_text))
    clamped = _infonce_by_hand(u, v, L.MIN_TEMPERATURE)
    assert float(losses[-1]) == pytest.approx(clamped, abs=5e-5)
    assert abs(_infonce_by_hand(u, v, math.exp(-log_scale)) - clamped) > 20 * 5e-5


def test_sl_mlp_hidden_width_is_the_settings_width():
    _, data = _m1_sample(n=12, d=30)
    params = L.sl_cross_entropy(jax.random.key(0), data.x_image, data.label, 2,
                                L.LearnerSettings(width=16, embed_dim=4, steps=1), hidden=True)
    assert [(w.shape, b.shape) for w, b in params] == [((30, 16), (16,)), ((16, 2), (2,))]


def test_temperature_below_the_logit_scale_clamp_is_refused():
    with pytest.raises(ConfigError, match=r"temperature = 0.005 is out of range: allowed a finite number in \[0.01"):
        L.LearnerSettings(temperature=0.005)
    assert L.LearnerSettings(temperature=0.01).temperature == 0.01


# ------------------------------------------------------------------ SL by plain gradient descent


def _max_margin_direction(x, y):
    """Hard-margin SVM direction (weights and bias together, the bias as a constant feature), float64 dual."""
    xa = np.hstack([x, np.ones((x.shape[0], 1))])
    q = (y[:, None] * y[None]) * (xa @ xa.T)
    res = minimize(lambda a: (0.5 * a @ q @ a - a.sum(), q @ a - 1), np.zeros(len(y)), jac=True,
                   method="L-BFGS-B", bounds=[(0, None)] * len(y), options={"ftol": 1e-15, "gtol": 1e-12})
    w = xa.T @ (res.x * y)
    assert (y * (xa @ w)).min() == pytest.approx(1.0, abs=1e-4)  # the margin constraints are tight
    return w


def test_sl_logistic_gd_direction_approaches_max_margin():
    """Separable d >> n sample: cosine to the max-margin direction rises with steps (measured 0.950, 0.971,
    0.979 at 100, 1000, 10000 steps; slow, as the 1/log t rate of Soudry et al. predicts)."""
    cfg, data = _m1_sample(n=40, d=2000)
    x, y = np.asarray(data.x_image, np.float64), np.where(np.asarray(data.label) == 1, 1.0, -1.0)
    ref = _max_margin_direction(x, y)

    def cosine(steps):
        s = L.LearnerSettings(sl_gd_steps=steps)
        (w, b), = L.sl_cross_entropy(jax.random.key(0), data.x_image, data.label, 2, s, hidden=False, plain_gd=True)
        v = np.append(np.asarray(w[:, 1] - w[:, 0], np.float64), float(b[1] - b[0]))
        return v @ ref / np.linalg.norm(v) / np.linalg.norm(ref)

    short, long = cosine(200), cosine(2000)
    assert long > short + 0.005 and long > 0.96


# ------------------------------------------------------------------ the large-temperature bridge


@pytest.mark.slow
def test_large_tau_infonce_meets_the_linear_loss_closed_form_and_small_tau_does_not():
    """M1 defaults (n 200, d 2000, r 1), seeds 0-2, core prompt, exact test accuracy: trained linear InfoNCE
    (200 Adam steps) at tau = 100 is within 0.04 of the full-rank closed form on the same sample on
    every test distribution (docs/temperature.md#prediction; measured largest gap 0.025, flipped); at
    tau = 0.05 it is not (measured flipped gap 0.18)."""
    cfg = make_config("M1", r=1.0)
    learners = ("mmcl_closed_form", "mmcl_infonce_linear")
    gaps = {}
    for tau in (100.0, 0.05):
        rows = evaluate_grid([cfg], [0, 1, 2], learners, L.LearnerSettings(temperature=tau))[0]
        gaps[tau] = np.abs(seed_accuracies(rows, "mmcl_infonce_linear").mean(0)
                           - seed_accuracies(rows, "mmcl_closed_form").mean(0))
    assert np.all(gaps[100.0] <= 0.04), gaps
    assert np.max(gaps[0.05]) > 0.1, gaps


def test_temperature_quick_sweep_runs_with_convergence_columns(tmp_path, capsys):
    """`python -m mmcl_theory.sweep temperature --quick` (two compiled points per series): both prompts,
    tau on the rows as the definition's [quick] values, and the convergence columns filled for InfoNCE only."""
    import json

    from mmcl_theory.sweep import load_definition, main

    assert main(["temperature", "--quick", "--out", str(tmp_path), "--no-progress", "--no-compile-cache"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["value"] for r in rows} == set(load_definition("temperature")["quick"]["values"])
    assert {(r["learner"], r["prompt"]) for r in rows if r["learner"].startswith("mmcl_infonce")} == {
        ("mmcl_infonce_linear", p) for p in ("core", "class_mean")}
    for r in rows:
        trained = r["learner"].startswith("mmcl_infonce")
        assert (r["final_loss"] != "") == trained and (r["loss_floor"] != "") == trained
        if trained:
            tau = r["value"]
            assert r["loss_floor"] == pytest.approx(math.log1p(39 * math.exp(-40 / (39 * tau))), rel=1e-5)
