"""Learners: MMCL (closed form, linear-loss GD, InfoNCE with linear or MLP encoders) and SL baselines.

docs/learners.md. Every learner is a pure function of arrays (and a PRNG key for the trained ones),
jit-able and vmap-able over seeds and sweep points. A learner returns its trained parameters; the
encoders below turn parameters into embeddings or logits, and evaluate.py scores them.

Learner names (the results contract): mmcl_closed_form, mmcl_linear_gd, mmcl_infonce_linear,
mmcl_infonce_mlp, sl_min_norm, sl_logistic, sl_mlp.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from .config import check_range
from .losses import infonce_loss, linear_contrastive_loss


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    """Hyper-parameters of the learners (documented defaults; every field can be overridden).

    rank:        embedding dimension of the closed-form MMCL minimiser (0 = full rank, A* = S/rho).
    rho:         Frobenius regulariser of the linear loss, (rho/2)||W_I^T W_T||_F^2.
    embed_dim:   embedding dimension of the trained MMCL learners (linear GD, InfoNCE).
    width:       hidden width of the MLP encoders and of the SL MLP.
    steps:       full-batch optimisation steps of the InfoNCE and SL learners (Adam).
    lr:          Adam learning rate of the InfoNCE and SL learners.
    gd_steps:    gradient-descent steps on the linear loss (mmcl_linear_gd).
    gd_lr:       its learning rate (plain gradient descent with momentum 0.9).
    temperature: InfoNCE temperature tau (initial value when learned).
    learn_temperature: learn log(1/tau) jointly with the encoders.
    """

    rank: int = 0
    rho: float = 1.0
    embed_dim: int = 8
    width: int = 32
    steps: int = 200
    lr: float = 0.01
    gd_steps: int = 300
    gd_lr: float = 0.1
    temperature: float = 0.1
    learn_temperature: bool = False

    def __post_init__(self):
        name = type(self).__name__
        check_range(name, "rank", self.rank, 0, 10**6, integer=True)
        for f in ("embed_dim", "width", "steps", "gd_steps"):
            check_range(name, f, getattr(self, f), 1, 10**7, integer=True)
        for f in ("rho", "lr", "gd_lr", "temperature"):
            check_range(name, f, getattr(self, f), 0.0, 1e6, open_low=True)
        if not isinstance(self.learn_temperature, bool):
            raise ValueError(f"{name}.learn_temperature = {self.learn_temperature!r} is not allowed: true or false")


# ------------------------------------------------------------------ closed forms


def mmcl_closed_form(x_image: jax.Array, x_text: jax.Array, rank: int = 0, rho: float = 1.0):
    """Minimiser of the linear loss, as encoders (W_I (p, d_I), W_T (p, d_T)) with W_I^T W_T = A*.

    A* = (1/rho) sum_{j<=p} sigma_j u_j v_j^T, the top-p SVD of S = (X_I - 1 mean_I^T)^T X_T / (n-1)
    (docs/theory.md#closed-form). rank=0 keeps every singular value: A* = S/rho, factored exactly as
    W_I = (X_I - 1 mean_I^T) / ((n-1) rho), W_T = X_T (embedding dimension n). A rank p > 0 goes
    through thin QR factors, S = Q_I (R_I R_T^T / (n-1)) Q_T^T, in O(d n min(d, n)).
    """
    n = x_image.shape[0]
    centred = x_image - x_image.mean(0)
    if rank == 0:
        return centred / ((n - 1) * rho), x_text
    q_i, r_i = jnp.linalg.qr(centred.T)
    q_t, r_t = jnp.linalg.qr(x_text.T)
    u, sigma, vt = jnp.linalg.svd(r_i @ r_t.T / (n - 1))
    p = min(rank, sigma.shape[0])
    scale = jnp.sqrt(sigma[:p] / rho)[:, None]
    return scale * (q_i @ u[:, :p]).T, scale * (vt[:p] @ q_t.T)


MIN_NORM_METHODS = ("auto", "cholesky", "qr", "pinv")
CHOLESKY_MAX_CONDITION = 100.0  # largest (max diag L / min diag L)^2 of the Gram factor trusted in float32 (a lower bound on cond(X X^T); 862 already gave 2.5e-3 relative error)


def sl_min_norm(x: jax.Array, label: jax.Array, num_classes: int, method: str = "auto",
                weights: jax.Array | None = None) -> jax.Array:
    """Minimum-norm least-squares fit of one-vs-rest +-1 targets, W = X^+ Y, (d, K); logits = x W.

    x (n, d), label (n,) -> W (d, K). With per-point weights w (n,), the weighted least-squares fit
    argmin sum_i w_i ||x_i W - y_i||^2 (rows scaled by sqrt(w)); when d > n every interpolator fits
    exactly, so the minimum-norm one does not depend on w (Sagawa et al. 2020's point about upweighting). For d > n it interpolates, and equals the max-margin direction
    when every training point is a support vector (d >> n). Methods (all give X^+ Y):
      cholesky: the dual, W = X^T (X X^T)^{-1} Y with X X^T = L L^T (d > n; O(n^2 d));
      qr:       thin QR of X^T = Q R (d > n), W = Q R^{-T} Y; or of X = Q R (d <= n), W = R^{-1} Q^T Y;
                no squared condition number;
      pinv:     jnp.linalg.pinv (SVD), the reference;
      auto:     cholesky when d > n and the Gram factor's diagonal ratio squared (a lower bound on
                cond(X X^T)) is below CHOLESKY_MAX_CONDITION, else qr.
    """
    if method not in MIN_NORM_METHODS:
        raise ValueError(f"sl_min_norm method = {method!r} is not allowed: one of {', '.join(MIN_NORM_METHODS)}")
    targets = 2.0 * jax.nn.one_hot(label, num_classes) - 1.0
    if weights is not None:
        root = jnp.sqrt(weights)[:, None]
        x, targets = x * root, targets * root
    n, d = x.shape
    if method == "pinv":
        return jnp.linalg.pinv(x) @ targets
    if d <= n:  # least squares: X = Q R
        q, r = jnp.linalg.qr(x)
        return jax.scipy.linalg.solve_triangular(r, q.T @ targets, lower=False)

    def by_qr():
        q, r = jnp.linalg.qr(x.T)  # x^T = Q R, x = R^T Q^T
        return q @ jax.scipy.linalg.solve_triangular(r.T, targets, lower=True)

    if method == "qr":
        return by_qr()
    chol = jnp.linalg.cholesky(x @ x.T)
    by_cholesky = x.T @ jax.scipy.linalg.cho_solve((chol, True), targets)
    if method == "cholesky":
        return by_cholesky
    diag = jnp.abs(jnp.diagonal(chol))
    trusted = jnp.all(jnp.isfinite(chol)) & ((jnp.max(diag) / jnp.min(diag)) ** 2 < CHOLESKY_MAX_CONDITION)
    return jax.lax.cond(trusted, lambda: by_cholesky, by_qr)


# ------------------------------------------------------------------ encoders


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> list[tuple[jax.Array, jax.Array]]:
    """He-initialised MLP parameters [(W (d_in, d_out), b (d_out,)), ...]; one layer = linear map."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def apply_mlp(params, x: jax.Array) -> jax.Array:
    """ReLU MLP: x (n, d_in) -> (n, d_out); no activation after the last layer."""
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def l2_normalise(x: jax.Array) -> jax.Array:
    """x / ||x|| over the last axis (1e-12 added to the norm)."""
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _adam_fit(loss_fn, params, steps: int, lr: float):
    """Full-batch Adam for `steps` steps (lax.scan); returns the final parameters."""
    opt = optax.adam(lr)

    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


# ------------------------------------------------------------------ trained MMCL learners


def mmcl_linear_gd(key: jax.Array, x_image: jax.Array, x_text: jax.Array, embed_dim: int,
                   rho: float = 1.0, steps: int = 1000, lr: float = 0.1):
    """Gradient descent (momentum 0.9) on the linear loss over factors W_I, W_T (p, d):

    L = linear_contrastive_loss(X_I W_I^T, X_T W_T^T) + (rho/2) ||W_I^T W_T||_F^2 = -<A, S> + (rho/2)||A||_F^2.
    Its limit is the closed form A* of the same rank and rho (docs/claims.md#q3). Returns (W_I, W_T).
    """
    k_i, k_t = jax.random.split(key)
    scale = 1e-2 / jnp.sqrt(x_image.shape[1])
    params = (jax.random.normal(k_i, (embed_dim, x_image.shape[1])) * scale,
              jax.random.normal(k_t, (embed_dim, x_text.shape[1])) * scale)

    def loss(params):
        w_i, w_t = params
        gram = (w_i @ w_i.T) * (w_t @ w_t.T)  # ||W_I^T W_T||_F^2 = sum((W_I W_I^T) * (W_T W_T^T))
        return linear_contrastive_loss(x_image @ w_i.T, x_text @ w_t.T) + 0.5 * rho * gram.sum()

    opt = optax.sgd(lr, momentum=0.9)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def mmcl_infonce(key: jax.Array, x_image: jax.Array, x_text: jax.Array, settings: LearnerSettings,
                 hidden: bool):
    """InfoNCE (CLIP loss) with linear (hidden=False) or one-hidden-layer ReLU MLP encoders.

    Embeddings are L2-normalised; logits = exp(log_scale) f_I(x_I) f_T(x_T)^T with log_scale =
    log(1/tau), learned when settings.learn_temperature. Full-batch Adam. Returns a params dict
    {"image": mlp, "text": mlp, "log_scale": scalar}.
    """
    k_i, k_t = jax.random.split(key)
    middle = (settings.width,) if hidden else ()
    params = {"image": init_mlp(k_i, (x_image.shape[1], *middle, settings.embed_dim)),
              "text": init_mlp(k_t, (x_text.shape[1], *middle, settings.embed_dim)),
              "log_scale": jnp.log(1.0 / jnp.asarray(settings.temperature, jnp.float32))}

    def loss(params):
        log_scale = params["log_scale"] if settings.learn_temperature else jax.lax.stop_gradient(params["log_scale"])
        emb_i = l2_normalise(apply_mlp(params["image"], x_image))
        emb_t = l2_normalise(apply_mlp(params["text"], x_text))
        return infonce_loss(emb_i, emb_t, jnp.exp(jnp.minimum(log_scale, jnp.log(100.0))))

    return _adam_fit(loss, params, settings.steps, settings.lr)


def infonce_zero_shot_logits(params, x_image: jax.Array, prompts: jax.Array) -> jax.Array:
    """Zero-shot logits <f_I(x), f_T(t_k)> with normalised embeddings: (n, d), (K, d) -> (n, K)."""
    return l2_normalise(apply_mlp(params["image"], x_image)) @ l2_normalise(apply_mlp(params["text"], prompts)).T


# ------------------------------------------------------------------ SL learners


def sl_cross_entropy(key: jax.Array, x: jax.Array, label: jax.Array, num_classes: int,
                     settings: LearnerSettings, hidden: bool):
    """Softmax cross-entropy (logistic for K = 2) with a linear model or a one-hidden-layer MLP,
    full-batch Adam, no regulariser (so a linear model's direction drifts towards max margin).
    Returns MLP params; logits = apply_mlp(params, x)."""
    middle = (settings.width,) if hidden else ()
    params = init_mlp(key, (x.shape[1], *middle, num_classes))
    if not hidden:
        params = [(jnp.zeros_like(w), b) for w, b in params]

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(apply_mlp(params, x), label).mean()

    return _adam_fit(loss, params, settings.steps, settings.lr)
