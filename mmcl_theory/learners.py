"""Learners: MMCL (closed form, linear-loss GD, InfoNCE with linear or MLP encoders) and SL baselines.

docs/learners.md. Every learner is a pure function of arrays (and a PRNG key for the trained ones),
jit-able and vmap-able over seeds and sweep points. A learner returns its trained parameters; the
encoders below turn parameters into embeddings or logits, and the grid (grid.py) scores them.

`Learner` is the record every model registers its learners with (models.py): its name, kind, fit and
score, with one signature for every model. The synthetic models' records (evaluate.LEARNERS) are built from
the functions below; `LearnerSettings` is a pytree whose temperature is traced (a sweep over it compiles once).

Every trained learner of M1, M2, DM2 and digits runs the one training loop `fit` and can return its loss trace
(`with_trace=True`); `loss_floor_*` give the floor each loss is compared with (docs/learners.md#convergence)
and `fit_summary` turns a trace and a floor into (final loss, floor, converged).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from .config import check_range
from .losses import infonce_loss, l2_normalise, linear_contrastive_loss


MIN_TEMPERATURE = 0.01  # InfoNCE's logit scale 1/tau is clamped at 100 (as CLIP's)


# ------------------------------------------------------------------ the learner record

ZERO_SHOT, SUPERVISED = "zero_shot", "supervised"
KINDS = (ZERO_SHOT, SUPERVISED)


@dataclasses.dataclass(frozen=True)
class Learner:
    """One learner of a model (models.py): what it is, how it is fitted and how it scores.

    name:       the `learner` column of its result rows; its PRNG key is derived from it (learner_key).
    kind:       'zero_shot': an image and a text encoder trained on image-caption pairs, scored against
                class prompts, one set of rows per prompt set of its model; 'supervised': images and
                labels only, scored by its own head (prompt '').
    fit:        (key, train, settings) -> (params, stats): train is its model's training sample (grid.Sample.train),
                stats a dict of row columns (final_loss, loss_floor, converged; {} for a closed form) and
                optionally 'curve' (grid.py). None for a population prediction.
    score:      (params, x (m, ...), prompts (P, K, V)) -> class scores (P, m, K); a supervised learner ignores the
                prompts and returns P = 1.
    population: (config, test, prompt, settings) -> accuracy, a float64 prediction of this package's
                theory that draws no sample (theory.py), or None where it is undefined (no row); set
                instead of fit and score.
    theory:     its rows are this package's theory (route 'theory'): every population prediction, and a
                fit of expected rather than sampled statistics (digits' theory_mmcl).
    trained:    fitted by optimisation steps from a PRNG key; False for closed forms.
    linear:     its class scores are affine in the input, x W + b (the exact route's Gaussian closed form).
    exact:      (params, prompts) -> the forms the route 'exact' needs (grid.py): a linear learner's [(W (d, K),
                b (K,)) per prompt set], a nonlinear one's ((W1 (d, h), b1 (h,)), head: (m, h) -> (P, m, K)) with
                scores head(x W1 + b1). None: the learner runs on the sampled route only.
    eager:      fitted and scored outside any compiled program, one seed at a time (NumPy float64 closed forms).
    memory:     for a population prediction, (config, settings) -> (bytes, how they were counted) of the largest
                arrays it holds at once, which the sweep checks before any work starts (sweep/memory.py);
                None where they are negligible.
    """

    name: str
    kind: str
    fit: Callable | None = None
    score: Callable | None = None
    population: Callable | None = None
    theory: bool = False
    trained: bool = False
    linear: bool = False
    exact: Callable | None = None
    eager: bool = False
    memory: Callable | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Learner {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.population is None) == (self.fit is None) or (self.fit is None) != (self.score is None):
            raise ValueError(f"Learner {self.name}: give either fit and score, or population; not both or neither")
        if self.population is not None and not self.theory:
            raise ValueError(f"Learner {self.name}: a population prediction is theory (theory=True)")


def learner_key(key: jax.Array, name: str) -> jax.Array:
    """A learner's own PRNG key, derived from the point's key and the learner's name:
    fold_in(key, crc32(name) mod 2^31). Two learners draw independently, and adding or removing a learner never
    changes another's draws, with no table of key slots (docs/learners.md#plug-in)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    """Hyper-parameters of the learners (documented defaults; every field can be overridden).

    rank:        embedding dimension of the closed-form MMCL minimiser (0 = full rank, A* = S/rho).
    rho:         Frobenius regulariser of the linear loss, (rho/2)||W_I^T W_T||_F^2.
    embed_dim:   embedding dimension of the trained MMCL learners (linear GD, InfoNCE).
    width:       hidden width of the MLP encoders and of the SL MLP.
    steps:       full-batch optimisation steps of the InfoNCE and Adam SL learners.
    lr:          Adam learning rate of the InfoNCE and Adam SL learners.
    gd_steps:    gradient-descent steps on the linear loss (mmcl_linear_gd).
    gd_lr:       its learning rate (plain gradient descent with momentum 0.9).
    sl_gd_steps: plain gradient-descent steps of sl_logistic_gd.
    sl_gd_lr:    its step size in units of 1/smoothness: the step is sl_gd_lr * n / ||X||_F^2 (<= 2/L for
                 sl_gd_lr <= 1, L the largest curvature of the mean logistic loss).
    temperature: InfoNCE temperature tau (initial value when learned), >= MIN_TEMPERATURE.
    learn_temperature: learn log(1/tau) jointly with the encoders (1/tau clamped at 1/MIN_TEMPERATURE).
    """

    rank: int = 0
    rho: float = 1.0
    embed_dim: int = 8
    width: int = 32
    steps: int = 200
    lr: float = 0.01
    gd_steps: int = 300
    gd_lr: float = 0.1
    sl_gd_steps: int = 2000
    sl_gd_lr: float = 1.0
    temperature: float = 0.1
    learn_temperature: bool = False

    def __post_init__(self):
        name = type(self).__name__
        check_range(name, "rank", self.rank, 0, 10**6, integer=True)
        for f in ("embed_dim", "width", "steps", "gd_steps", "sl_gd_steps"):
            check_range(name, f, getattr(self, f), 1, 10**7, integer=True)
        for f in ("rho", "lr", "gd_lr", "sl_gd_lr"):
            check_range(name, f, getattr(self, f), 0.0, 1e6, open_low=True)
        check_range(name, "temperature", self.temperature, MIN_TEMPERATURE, 1e6)  # the logit scale's clamp
        if not isinstance(self.learn_temperature, bool):
            raise ValueError(f"{name}.learn_temperature = {self.learn_temperature!r} is not allowed: true or false")


# temperature is a traced leaf (a sweep over it compiles once, grid.py); every other field is static
jax.tree_util.register_dataclass(LearnerSettings, data_fields=["temperature"],
                                 meta_fields=[f.name for f in dataclasses.fields(LearnerSettings) if f.name != "temperature"])


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


def rank_tolerance(x: jax.Array) -> float:
    """Relative size below which a singular value (or a |diag R| of QR) counts as zero: jnp.linalg.pinv's
    default, 10 max(n, d) eps of x's dtype."""
    return 10.0 * max(x.shape) * float(jnp.finfo(x.dtype).eps)


def sl_min_norm(x: jax.Array, label: jax.Array, num_classes: int, method: str = "auto",
                weights: jax.Array | None = None) -> jax.Array:
    """Minimum-norm least-squares fit of one-vs-rest +-1 targets, W = X^+ Y, (d, K); logits = x W.

    x (n, d), label (n,) -> W (d, K). With per-point weights w (n,), the weighted least-squares fit
    argmin sum_i w_i ||x_i W - y_i||^2 (rows scaled by sqrt(w)); when d > n every interpolator fits
    exactly, so the minimum-norm one does not depend on w (Sagawa et al. 2020's point about upweighting). For d > n it interpolates, and equals the max-margin direction
    when every training point is a support vector (d >> n). Methods (all give X^+ Y):
      cholesky: the dual, W = X^T (X X^T)^{-1} Y with X X^T = L L^T (d > n; O(n^2 d));
      qr:       thin QR of X^T = Q R (d > n), W = Q R^{-T} Y; or of X = Q R (d <= n), W = R^{-1} Q^T Y;
                no squared condition number. A rank-deficient X (R with a diagonal entry at or below
                rank_tolerance x its largest, e.g. constant pixels or repeated points) falls back to
                pinv, whose truncation then gives the minimum-norm solution;
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
    by_pinv = lambda: jnp.linalg.pinv(x) @ targets

    def full_rank(r):
        diag = jnp.abs(jnp.diagonal(r))
        return jnp.min(diag) > rank_tolerance(x) * jnp.max(diag)

    if d <= n:  # least squares: X = Q R
        q, r = jnp.linalg.qr(x)
        return jax.lax.cond(full_rank(r), lambda: jax.scipy.linalg.solve_triangular(r, q.T @ targets, lower=False),
                            by_pinv)

    def by_qr():
        q, r = jnp.linalg.qr(x.T)  # x^T = Q R, x = R^T Q^T
        return jax.lax.cond(full_rank(r), lambda: q @ jax.scipy.linalg.solve_triangular(r.T, targets, lower=True),
                            by_pinv)

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


def fit(loss_fn, params, optimizer: optax.GradientTransformation, steps: int, data=None,
        batch_size: int | None = None, key: jax.Array | None = None):
    """The one training loop: `steps` optimiser steps under lax.scan; returns (params, losses).

    Full batch when data is None: loss_fn(params). With data (a pytree of arrays sharing a leading
    axis of length n), loss_fn(params, batch): the full data when batch_size is None, else at step t
    a batch of batch_size rows drawn without replacement with jax.random.fold_in(key, t).
    losses (steps + 1,) float32: losses[t] is the loss at the parameters before step t (on that step's
    batch) and losses[steps] the full-data loss at the returned parameters.
    """
    full = (lambda p: loss_fn(p)) if data is None else (lambda p: loss_fn(p, data))
    if data is not None and batch_size is not None:
        n = jax.tree_util.tree_leaves(data)[0].shape[0]

        def batch_loss(p, t):
            rows = jax.random.permutation(jax.random.fold_in(key, t), n)[:batch_size]
            return loss_fn(p, jax.tree_util.tree_map(lambda a: a[rows], data))
    else:
        batch_loss = lambda p, t: full(p)

    def step(carry, t):
        params, state = carry
        value, grads = jax.value_and_grad(batch_loss)(params, t)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(steps))
    return params, jnp.append(losses, full(params))


# ------------------------------------------------------------------ loss floors and convergence

CONVERGED_FRACTION = 1e-3  # converged: the last tenth's movement is < 0.1% of the gap still left to the floor
LOSS_RESOLUTION = 1e-5  # relative size of movements in a float32 loss trace that count as none


def fit_summary(losses: jax.Array, floor) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(final loss, floor, converged) from a loss trace of `fit` (steps + 1,) and the loss's floor.

    converged: over the last tenth of the steps the trace's range (max - min, so an oscillating loss
    is not converged) is at most CONVERGED_FRACTION x (final - floor) + LOSS_RESOLUTION x |final|:
    at that rate closing the gap to the floor would take over 100 times the steps run. A loss on a
    plateau it leaves later, or above an unreachable floor, can still be flagged either way; the gap
    final - floor is reported beside it (docs/learners.md#convergence).
    """
    steps = losses.shape[0] - 1
    final = losses[-1]
    last = losses[steps - max(steps // 10, 1):]
    allowed = CONVERGED_FRACTION * jnp.maximum(final - floor, 0.0) + LOSS_RESOLUTION * jnp.abs(final)
    return final, jnp.asarray(floor, jnp.float32), (last.max() - last.min()) <= allowed


def loss_floor_linear(x_image: jax.Array, x_text: jax.Array, rank: int, rho: float) -> jax.Array:
    """Minimum of the regularised linear loss over A of rank <= rank: -(1/(2 rho)) sum_{j<=rank} sigma_j(S)^2.

    S = (X_I - 1 mean_I^T)^T X_T / (n-1), singular values from the thin QR factors as in mmcl_closed_form
    (docs/theory.md#closed-form); rank 0 keeps them all.
    """
    n = x_image.shape[0]
    _, r_i = jnp.linalg.qr((x_image - x_image.mean(0)).T)
    _, r_t = jnp.linalg.qr(x_text.T)
    sigma = jnp.linalg.svd(r_i @ r_t.T / (n - 1), compute_uv=False)
    return -jnp.sum(sigma[: rank or sigma.shape[0]] ** 2) / (2 * rho)


def loss_floor_infonce(n: int, temperature):
    """Perfect-matching floor of symmetric InfoNCE on unit vectors: log(1 + (n-1) exp(-n / ((n-1) tau))).

    A lower bound at every configuration of n paired unit embeddings (docs/learners.md#convergence):
    each direction's loss is a convex, increasing function of the margins s_ij - s_ii, whose mean over
    i != j is at least -n/(n-1); equality when u_i = v_i form a regular simplex (embedding dimension
    >= n-1): every positive similarity 1, every negative -1/(n-1).
    """
    if isinstance(temperature, (int, float)):  # float64
        return math.log1p((n - 1) * math.exp(-n / ((n - 1) * temperature)))
    return jnp.log1p((n - 1) * jnp.exp(-n / ((n - 1) * temperature)))  # float32, a traced temperature (grid.py)


# ------------------------------------------------------------------ trained MMCL learners


def mmcl_linear_gd(key: jax.Array, x_image: jax.Array, x_text: jax.Array, embed_dim: int,
                   rho: float = 1.0, steps: int = 1000, lr: float = 0.1, with_trace: bool = False):
    """Gradient descent (momentum 0.9) on the linear loss over factors W_I, W_T (p, d):

    L = linear_contrastive_loss(X_I W_I^T, X_T W_T^T) + (rho/2) ||W_I^T W_T||_F^2 = -<A, S> + (rho/2)||A||_F^2.
    Its limit is the closed form A* of the same rank and rho (docs/claims.md#q3), whose loss is
    loss_floor_linear. Returns (W_I, W_T), or ((W_I, W_T), losses) with with_trace.
    """
    k_i, k_t = jax.random.split(key)
    scale = 1e-2 / jnp.sqrt(x_image.shape[1])
    params = (jax.random.normal(k_i, (embed_dim, x_image.shape[1])) * scale,
              jax.random.normal(k_t, (embed_dim, x_text.shape[1])) * scale)

    def loss(params):
        w_i, w_t = params
        gram = (w_i @ w_i.T) * (w_t @ w_t.T)  # ||W_I^T W_T||_F^2 = sum((W_I W_I^T) * (W_T W_T^T))
        return linear_contrastive_loss(x_image @ w_i.T, x_text @ w_t.T) + 0.5 * rho * gram.sum()

    params, losses = fit(loss, params, optax.sgd(lr, momentum=0.9), steps)
    return (params, losses) if with_trace else params


def mmcl_infonce(key: jax.Array, x_image: jax.Array, x_text: jax.Array, settings: LearnerSettings,
                 hidden: bool, with_trace: bool = False):
    """InfoNCE (CLIP loss) with linear (hidden=False) or one-hidden-layer ReLU MLP encoders.

    Embeddings are L2-normalised; logits = exp(log_scale) f_I(x_I) f_T(x_T)^T with log_scale =
    log(1/tau), learned when settings.learn_temperature (clamped at log(1/MIN_TEMPERATURE)).
    Full-batch Adam. Returns a params dict {"image": mlp, "text": mlp, "log_scale": scalar}, or
    (params, losses) with with_trace; its floor is loss_floor_infonce.
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
        return infonce_loss(emb_i, emb_t, jnp.exp(jnp.minimum(log_scale, -math.log(MIN_TEMPERATURE))))

    params, losses = fit(loss, params, optax.adam(settings.lr), settings.steps)
    return (params, losses) if with_trace else params


def infonce_zero_shot_logits(params, x_image: jax.Array, prompts: jax.Array) -> jax.Array:
    """Zero-shot logits <f_I(x), f_T(t_k)> with normalised embeddings: (n, d), (K, d) -> (n, K)."""
    return l2_normalise(apply_mlp(params["image"], x_image)) @ l2_normalise(apply_mlp(params["text"], prompts)).T


# ------------------------------------------------------------------ SL learners


def sl_cross_entropy(key: jax.Array, x: jax.Array, label: jax.Array, num_classes: int,
                     settings: LearnerSettings, hidden: bool, plain_gd: bool = False, with_trace: bool = False):
    """Softmax cross-entropy (logistic for K = 2) with a linear model or a one-hidden-layer MLP, no
    regulariser, full batch; floor 0 (reached only in the limit, on separable data).

    Optimiser: Adam(lr) for `steps` steps (sl_logistic, sl_mlp), or with plain_gd (sl_logistic_gd,
    linear only) gradient descent without momentum, step sl_gd_lr * n / ||X||_F^2, for sl_gd_steps
    steps; on separable data its direction tends to the l2 max-margin classifier (Soudry et al., JMLR
    2018), which Adam's does not in general. A linear model starts at 0.
    Returns MLP params, logits = apply_mlp(params, x); or (params, losses) with with_trace.
    """
    middle = (settings.width,) if hidden else ()
    params = init_mlp(key, (x.shape[1], *middle, num_classes))
    if not hidden:
        params = [(jnp.zeros_like(w), b) for w, b in params]

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(apply_mlp(params, x), label).mean()

    if plain_gd:
        step = settings.sl_gd_lr * x.shape[0] / jnp.sum(x * x)
        optimizer, steps = optax.sgd(step), settings.sl_gd_steps
    else:
        optimizer, steps = optax.adam(settings.lr), settings.steps
    params, losses = fit(loss, params, optimizer, steps)
    return (params, losses) if with_trace else params
