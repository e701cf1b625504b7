"""Property tests of the finite-temperature InfoNCE theory (theory.py, docs/temperature.md#population-optimum).

What is tested, each against a second route or an exact identity:
- infonce_batch_loss equals the package's losses.infonce_loss (float32, so 1e-5 relative) on the same
  normalised embeddings, and its analytic gradient equals central finite differences (1e-6 relative);
- the loss is invariant under B -> c R B (common rotation, separate positive scales) to rounding, so the
  optimum is defined up to that gauge and only B_I^T B_T's direction reaches the zero-shot scores;
- tau x gradient tends to ((N-1)/N) x the gradient of the linear loss of the normalised embeddings as
  tau -> infinity, with an error that falls like 1/tau (docs/temperature.md#expansion, the first-order term);
- the population optimum is a stationary point, is mirrored exactly when images and captions swap roles,
  and is reached from both starting points;
- its exact accuracy (infonce_population_accuracy) equals a Monte Carlo of the argmax of cosine scores of
  sampled test latents (4 standard errors), and is linear in the test agreement q (aligned + flipped =
  2 x independent, to the exact route's precision).
Samples are small (a few thousand latent pairs) so the file runs in well under a minute.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmcl_theory.datamodel import make_config, prompt_latents
from mmcl_theory.losses import infonce_loss, l2_normalise
from mmcl_theory.theory import (_batched, infonce_batch_loss, infonce_population_accuracy, infonce_population_optimum,
                                infonce_score_weights, m1_latent_pairs)

EXACT_TOL = 1e-6  # Phi to rounding; the L-BFGS optimum to its gradient tolerance
SMALL = dict(batch=50, samples=2000)  # a fast population optimum (40 batches of 50)
taus = st.floats(0.03, 30.0)
matrices = st.lists(st.floats(-2.0, 2.0), min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2))


def _sample(n=120, batch=40, seed=1, **cfg):
    z_i, z_t = m1_latent_pairs(make_config("M1", **cfg), n, seed)
    return _batched(z_i, batch), _batched(z_t, batch)


def _well_conditioned(b):
    return abs(np.linalg.det(b)) > 0.1


@settings(max_examples=15, deadline=None)
@given(matrices, matrices, taus)
def test_batch_loss_is_the_package_infonce(b_i, b_t, tau):
    if not (_well_conditioned(b_i) and _well_conditioned(b_t)):
        return
    z_i, z_t = _sample()
    ours = infonce_batch_loss(b_i, b_t, z_i, z_t, tau, with_grad=False)
    package = np.mean([float(infonce_loss(l2_normalise(jnp.asarray(zi @ b_i.T, jnp.float32)),
                                          l2_normalise(jnp.asarray(zt @ b_t.T, jnp.float32)), 1.0 / tau))
                       for zi, zt in zip(z_i, z_t)])
    assert ours == pytest.approx(package, rel=1e-5, abs=1e-5)


@settings(max_examples=10, deadline=None)
@given(matrices, matrices, taus)
def test_batch_loss_gradient_is_finite_differences(b_i, b_t, tau):
    if not (_well_conditioned(b_i) and _well_conditioned(b_t)):
        return
    z_i, z_t = _sample()
    _, (g_i, g_t) = infonce_batch_loss(b_i, b_t, z_i, z_t, tau)
    h = 1e-6
    for which, grad in ((0, g_i), (1, g_t)):
        fd = np.zeros(4)
        for k in range(4):
            step = np.zeros(4)
            step[k] = h
            args = [b_i, b_t]
            plus, minus = list(args), list(args)
            plus[which] = args[which] + step.reshape(2, 2)
            minus[which] = args[which] - step.reshape(2, 2)
            fd[k] = (infonce_batch_loss(*plus, z_i, z_t, tau, False) - infonce_batch_loss(*minus, z_i, z_t, tau, False)) / (2 * h)
        scale = max(1.0, np.abs(grad).max())
        assert np.abs(fd - grad.ravel()).max() <= 1e-6 * scale


@settings(max_examples=15, deadline=None)
@given(matrices, matrices, taus, st.floats(0.1, 10.0), st.floats(0.1, 10.0), st.floats(-math.pi, math.pi))
def test_loss_gauge_invariance(b_i, b_t, tau, c_i, c_t, angle):
    if not (_well_conditioned(b_i) and _well_conditioned(b_t)):
        return
    z_i, z_t = _sample()
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    before = infonce_batch_loss(b_i, b_t, z_i, z_t, tau, False)
    after = infonce_batch_loss(c_i * rot @ b_i, c_t * rot @ b_t, z_i, z_t, tau, False)
    assert after == pytest.approx(before, rel=1e-12, abs=1e-12)
    prompts = np.asarray(prompt_latents(make_config("M1"), "class_mean"), np.float64)
    w, w_gauge = infonce_score_weights(b_i, b_t, prompts), infonce_score_weights(c_i * rot @ b_i, c_t * rot @ b_t, prompts)
    assert np.allclose(w_gauge, c_i * w, rtol=1e-12, atol=1e-12)


def _normalised_linear_loss(b_i, b_t, z_i, z_t):
    """losses.linear_contrastive_loss of normalised embeddings, written out in float64 numpy."""
    u = z_i @ b_i.T
    v = z_t @ b_t.T
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    n, s = u.shape[0], u @ v.T
    return -np.trace(s) / n + (s.sum() - np.trace(s)) / (n * (n - 1))


def test_large_tau_gradient_is_the_normalised_linear_loss():
    """tau dL/dB -> ((N-1)/N) d L_lin(normalised)/dB (finite differences of the linear loss, float64);
    the gap falls by a factor 10 per decade of tau."""
    z_i, z_t = _sample(n=40, batch=40)
    rng = np.random.default_rng(3)
    b = [rng.standard_normal((2, 2)), rng.standard_normal((2, 2))]
    N, h = z_i.shape[1], 1e-6
    g_lin = []
    for which in (0, 1):
        g = np.zeros(4)
        for k in range(4):
            step = np.zeros(4)
            step[k] = h
            plus, minus = list(b), list(b)
            plus[which] = b[which] + step.reshape(2, 2)
            minus[which] = b[which] - step.reshape(2, 2)
            g[k] = (_normalised_linear_loss(*plus, z_i[0], z_t[0]) - _normalised_linear_loss(*minus, z_i[0], z_t[0])) / (2 * h)
        g_lin.append(g.reshape(2, 2) * (N - 1) / N)
    gaps = []
    for tau in (10.0, 100.0, 1000.0):
        _, grads = infonce_batch_loss(*b, z_i, z_t, tau)
        gaps.append(max(np.abs(tau * g - gl).max() for g, gl in zip(grads, g_lin)))
    assert gaps[2] < 2e-3 * max(np.abs(g).max() for g in g_lin)
    assert 7 < gaps[0] / gaps[1] < 13 and 7 < gaps[1] / gaps[2] < 13


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_population_optimum_is_stationary_mirrored_and_start_independent(tau):
    cfg = make_config("M1")
    opt = infonce_population_optimum(cfg, tau, **SMALL)
    assert opt["grad_norm"] < 1e-5
    # swapping the roles of images and captions (same sample) swaps B_I and B_T: M -> M^T
    z_i, z_t = m1_latent_pairs(cfg, SMALL["samples"], 0)
    zb_i, zb_t = _batched(z_t, SMALL["batch"]), _batched(z_i, SMALL["batch"])
    from scipy import optimize

    def objective(theta):
        loss, (g_i, g_t) = infonce_batch_loss(theta[:4].reshape(2, 2), theta[4:].reshape(2, 2), zb_i, zb_t, tau)
        return loss, np.concatenate([g_i.ravel(), g_t.ravel()])

    ends = []
    for start in (np.eye(2), np.array([[1.0, -0.9], [0.0, 1.0]])):
        res = optimize.minimize(objective, np.concatenate([start.ravel(), start.ravel()]), jac=True,
                                method="L-BFGS-B", options={"maxiter": 3000, "gtol": 1e-9, "ftol": 1e-15})
        m = res.x[:4].reshape(2, 2).T @ res.x[4:].reshape(2, 2)
        ends.append((res.fun, m / np.linalg.norm(m)))
    for loss, m in ends:
        assert loss == pytest.approx(opt["loss"], abs=1e-9)
        assert np.abs(m.T - opt["M"]).max() < 1e-4


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_population_accuracy_exact_against_monte_carlo_and_linear_in_q(tau):
    cfg = make_config("M1")
    opt = infonce_population_optimum(cfg, tau, **SMALL)
    rng = np.random.default_rng(7)
    n = 200_000
    for prompt in ("core", "class_mean"):
        acc = {t: infonce_population_accuracy(cfg, t, tau, prompt=prompt, **SMALL) for t in ("aligned", "independent", "flipped")}
        assert acc["aligned"] + acc["flipped"] == pytest.approx(2 * acc["independent"], abs=EXACT_TOL)
        # Monte Carlo: sample flipped test latents, embed with the optimum's encoders, cosine argmax
        y = rng.choice([-1.0, 1.0], n)
        z = np.stack([y + cfg.sigma_core * rng.standard_normal(n), -y + cfg.sigma_spu * rng.standard_normal(n)], 1)
        z += rng.standard_normal(z.shape) * cfg.sigma_xi / math.sqrt(cfg.d)
        u = z @ opt["b_image"].T
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        t = np.asarray(prompt_latents(cfg, prompt), np.float64) @ opt["b_text"].T
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        hits = np.argmax(u @ t.T, 1) == (y > 0)
        se = max(hits.std() / math.sqrt(n), 1e-4)
        assert abs(hits.mean() - acc["flipped"]) < 4 * se
