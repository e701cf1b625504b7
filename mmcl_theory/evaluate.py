"""The one evaluation API: theory rows beside learner accuracies, and the compiled grid.

Zero-shot prediction (docs/models.md, "Zero-shot prompts"): argmax_k <f_I(x), f_T(t_k)> with
observed, noise-free prompts t_k = D_T t_latent_k; every zero-shot learner is scored with both the
core prompt (t_latent_k = e_core(k)) and the class-mean caption prompt (t_latent_k = E[z_T | y = k]).
SL prediction: argmax of its logits.

Evaluation routes (``ROUTES``): accuracy on a test *distribution* given the trained weights.
- ``exact``: a linear learner's class scores are affine in the test latent z and the image noise,
      score(x) = x W + b,  x = D_I z + xi,  xi ~ N(0, sigma_xi^2/d I_d),
  so inside a test group (y, a) with z ~ N(mu_g, diag(var_g)) the scores are Gaussian,
      N(mu_g V + b, V^T diag(var_g) V + (sigma_xi^2/d) W^T W),  V = D_I^T W (l, K),
  and accuracy is a Gaussian orthant probability: Phi for two classes (route label ``exact``), a
  Monte Carlo over the K-dimensional scores for K > 2 (``score_mc``, MC_DRAWS draws per group).
  The nonlinear learners (MLP encoders) draw n_test test points in their hidden width instead of in
  d: W1^T x = (D_I^T W1)^T z + W1^T xi with W1^T xi ~ N(0, sigma_xi^2/d W1^T W1) (``hidden_mc``).
  No d-dimensional test set is drawn; the only randomness left is the training sample.
- ``sampled``: three d-dimensional test sets of n_test points (route label ``sampled``); with the
  same seeds this reproduces the package's earlier numbers exactly.

Convergence (docs/learners.md#convergence): each trained learner's rows carry its final training
loss, the floor of that loss (``loss_floor``: the rank-constrained minimum of the linear loss, the
perfect-matching floor of InfoNCE at the learner's temperature, 0 for cross-entropy) and
``converged`` (the loss stopped moving, learners.fit_summary); "" for theory rows and closed forms.

Theory rows (``THEORY_LEARNERS``) come from theory.py in float64 and have the same row shape.
``evaluate_grid`` is the one place that jit-compiles and vmaps a point; the sweep, paper_checks and
bench/sweep_throughput.py all call it.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import learners as L
from .losses import l2_normalise
from .datamodel import (TESTS, Config, M1Config, agreement, caption_free, dictionaries, prompt_latents,
                        sample_dataset, sample_latents)

ZERO_SHOT_LEARNERS = ("mmcl_closed_form", "mmcl_linear_gd", "mmcl_infonce_linear", "mmcl_infonce_mlp")
SL_LEARNERS = ("sl_min_norm", "sl_logistic", "sl_logistic_gd", "sl_mlp")
LEARNERS = ZERO_SHOT_LEARNERS + SL_LEARNERS
LINEAR_LEARNERS = ("mmcl_closed_form", "mmcl_linear_gd", "mmcl_infonce_linear", "sl_min_norm", "sl_logistic",
                   "sl_logistic_gd")
TRAINED_LEARNERS = ("mmcl_linear_gd", "mmcl_infonce_linear", "mmcl_infonce_mlp", "sl_logistic", "sl_mlp",
                    "sl_logistic_gd")
FIT_KEYS = ("final_loss", "loss_floor", "converged")  # row columns of a trained learner's convergence
THEORY_LEARNERS = ("theory_mmcl", "bayes_core")
PROMPTS = ("core", "class_mean")
ROUTES = ("exact", "sampled")
MC_DRAWS = 1 << 14  # score-space Monte Carlo draws per test group (K > 2): s.e. <= 0.004 per group


def check_route(route: str) -> None:
    if route not in ROUTES:
        raise ValueError(f"unknown evaluation route {route!r}: allowed {', '.join(ROUTES)}")


def check_learners(learners: Sequence[str]) -> None:
    unknown = [l for l in learners if l not in LEARNERS + THEORY_LEARNERS]
    if unknown:
        raise ValueError(f"unknown learner(s) {', '.join(unknown)}: allowed {', '.join(THEORY_LEARNERS + LEARNERS)}")


# ------------------------------------------------------------------ scoring


def accuracy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Fraction of rows whose argmax equals the label: logits (n, K), label (n,)."""
    return jnp.mean(jnp.argmax(logits, axis=1) == label)


def test_groups(cfg: Config, test: str):
    """A test distribution as a Gaussian mixture over latents, in JAX (cfg may be traced).

    Returns weight (G,), label (G,) int, mean (G, l), variance (G, l). M1: y, a in {-1, +1}, mean
    [y, a], variance [sigma_core^2, sigma_spu^2]; M2: mean e_y + e_{K+a} (no details at test),
    variance sigma_core^2 at y and sigma_spu^2 at K + a. P(a = y) = agreement(test).
    """
    K = cfg.num_classes
    q = agreement(test, K)
    if isinstance(cfg, M1Config):
        y = np.array([-1.0, -1.0, 1.0, 1.0])
        a = np.array([-1.0, 1.0, 1.0, -1.0])
        weight = 0.5 * jnp.array([q, 1 - q, q, 1 - q])
        label = np.array([0, 0, 1, 1])
        mean = jnp.asarray(np.stack([y, a], 1))
        var = jnp.broadcast_to(jnp.stack([cfg.sigma_core**2, cfg.sigma_spu**2]), (4, 2))
        return weight, label, mean, var
    y, a = np.divmod(np.arange(K * K), K)
    weight = jnp.asarray(np.where(a == y, q, (1 - q) / (K - 1)) / K)
    eye = np.eye(K)
    mean = jnp.asarray(np.concatenate([eye[y], eye[a]], 1))
    var = jnp.concatenate([eye[y] * cfg.sigma_core**2, eye[a] * cfg.sigma_spu**2], 1)
    return weight, y, mean, var


def _psd_sqrt(cov: jax.Array) -> jax.Array:
    """A factor F with F F^T = cov for a (..., K, K) positive semi-definite matrix (eigh; safe when singular)."""
    lam, vec = jnp.linalg.eigh(cov)
    return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[..., None, :]


def linear_test_accuracy(key: jax.Array, cfg: Config, d_image: jax.Array, w: jax.Array, b: jax.Array,
                         test: str) -> jax.Array:
    """Accuracy of the affine classifier argmax_k (x W + b)_k on a test distribution (route ``exact``).

    d_image (d, l) = D_I, w (d, K), b (K,). Per group the score vector is Gaussian (module doc);
    K = 2: sum_g weight_g Phi(m_g / s_g) with m_g, s_g^2 the mean and variance of score_y - score_other;
    K > 2: Monte Carlo over MC_DRAWS standard-normal draws per group (common to all groups).
    An exact tie (zero variance, zero mean) goes to class 0, as argmax and theory.py decide it.
    """
    weight, label, mean, var = test_groups(cfg, test)
    v = d_image.T @ w  # (l, K)
    noise = (cfg.sigma_xi**2 / cfg.d) * (w.T @ w)  # (K, K)
    mu = mean @ v + b  # (G, K)
    cov = jnp.einsum("lk,gl,lj->gkj", v, var, v) + noise  # (G, K, K)
    K = w.shape[1]
    if K == 2:
        sign = jnp.where(label == 1, 1.0, -1.0)  # score_label - score_other = sign (s_1 - s_0)
        m = sign * (mu[:, 1] - mu[:, 0])
        s2 = cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1]
        safe = jnp.sqrt(jnp.maximum(s2, 1e-30))
        p = jnp.where(s2 > 0, jax.scipy.stats.norm.cdf(m / safe), jnp.where(m > 0, 1.0, jnp.where(m < 0, 0.0, (label == 0) * 1.0)))
        return jnp.sum(weight * p)
    eps = jax.random.normal(key, (MC_DRAWS, K))
    scores = mu[:, None, :] + jnp.einsum("nk,gjk->gnj", eps, _psd_sqrt(cov))  # (G, draws, K)
    hits = jnp.mean(jnp.argmax(scores, -1) == jnp.asarray(label)[:, None], axis=1)
    return jnp.sum(weight * hits)


def hidden_test_draws(key: jax.Array, cfg: Config, d_image: jax.Array, w1: jax.Array, b1: jax.Array,
                      test: str) -> tuple[jax.Array, jax.Array]:
    """First-layer pre-activations x W1 + b1 of n_test test points, drawn in the hidden width (``hidden_mc``).

    x W1 = z (D_I^T W1) + xi W1 with xi W1 ~ N(0, (sigma_xi^2/d) W1^T W1): d_image (d, l), w1 (d, h),
    b1 (h,) -> (pre-activations (n_test, h), labels (n_test,)). Same distribution as sampling x in d.
    """
    k_z, k_xi = jax.random.split(key)
    lat = sample_latents(k_z, cfg, cfg.n_test, test)
    factor = _psd_sqrt((cfg.sigma_xi**2 / cfg.d) * (w1.T @ w1))  # (h, h)
    eps = jax.random.normal(k_xi, (cfg.n_test, w1.shape[1]))
    return lat.z_image @ (d_image.T @ w1) + eps @ factor.T + b1, lat.label


# ------------------------------------------------------------------ one point


def _fit_keys(key: jax.Array) -> dict[str, jax.Array]:
    """One PRNG key per trained learner, fixed by its position in TRAINED_LEARNERS: the first five
    from one split of five (the package's earlier keys), later ones by fold_in(key, position)."""
    first = dict(zip(TRAINED_LEARNERS[:5], jax.random.split(key, 5)))
    return {**first, **{l: jax.random.fold_in(key, i) for i, l in enumerate(TRAINED_LEARNERS) if i >= 5}}


def _affine_scorers(name: str, params, prompts: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """{prompt: (W (d, K), b (K,))} with class scores x W + b, for a linear learner's parameters.

    Zero-shot: <W_I x + b_I, e_k> with e_k the (normalised) text embedding of prompt k; normalising
    the image embedding scales all K scores by one positive number, so argmax is unchanged.
    """
    if name in ("mmcl_closed_form", "mmcl_linear_gd"):
        w_i, w_t = params
        return {k: (w_i.T @ (w_t @ t.T), jnp.zeros(t.shape[0])) for k, t in prompts.items()}
    if name == "mmcl_infonce_linear":
        (w_i, b_i), = params["image"]
        out = {}
        for k, t in prompts.items():
            e = l2_normalise(L.apply_mlp(params["text"], t))  # (K, p)
            out[k] = (w_i @ e.T, b_i @ e.T)
        return out
    if name == "sl_min_norm":
        return {"": (params, jnp.zeros(params.shape[1]))}
    (w, b), = params  # sl_logistic, sl_logistic_gd
    return {"": (w, b)}


def _mlp_logits(name: str, params, prompts: dict[str, jax.Array]) -> dict[str, Callable]:
    """{prompt: logits(first-layer pre-activation h (n, width)) -> (n, K)} for the MLP learners."""
    rest = lambda p, h: L.apply_mlp(p[1:], jax.nn.relu(h))
    if name == "sl_mlp":
        return {"": lambda h: rest(params, h)}
    return {k: (lambda h, e=l2_normalise(L.apply_mlp(params["text"], t)): l2_normalise(rest(params["image"], h)) @ e.T)
            for k, t in prompts.items()}


def _full_logits(name: str, params, prompts: dict[str, jax.Array]) -> dict[str, Callable]:
    """{prompt: logits(x (n, d)) -> (n, K)} for any learner (route ``sampled``)."""
    if name in ("mmcl_infonce_linear", "mmcl_infonce_mlp"):
        return {k: (lambda x, t=t: L.infonce_zero_shot_logits(params, x, t)) for k, t in prompts.items()}
    if name in ("sl_logistic", "sl_logistic_gd", "sl_mlp"):
        return {"": lambda x: L.apply_mlp(params, x)}
    if name == "sl_min_norm":
        return {"": lambda x: x @ params}
    w_i, w_t = params
    return {k: (lambda x, t=t: x @ (w_i.T @ (w_t @ t.T))) for k, t in prompts.items()}


def train_learner(name: str, key: jax.Array, train, cfg: Config, settings: L.LearnerSettings):
    """Fit one learner on a training Dataset; returns (params, fit) with params as in learners.py and
    fit = (final loss, loss floor, converged) scalars for trained learners, None for closed forms."""
    K = cfg.num_classes
    if name == "mmcl_closed_form":
        return L.mmcl_closed_form(train.x_image, train.x_text, settings.rank, settings.rho), None
    if name == "sl_min_norm":
        return L.sl_min_norm(train.x_image, train.label, K), None
    if name == "mmcl_linear_gd":
        params, losses = L.mmcl_linear_gd(key, train.x_image, train.x_text, settings.embed_dim, settings.rho,
                                          settings.gd_steps, settings.gd_lr, with_trace=True)
        floor = L.loss_floor_linear(train.x_image, train.x_text, settings.embed_dim, settings.rho)
    elif name in ("mmcl_infonce_linear", "mmcl_infonce_mlp"):
        params, losses = L.mmcl_infonce(key, train.x_image, train.x_text, settings, hidden=name.endswith("mlp"),
                                        with_trace=True)
        tau = L.MIN_TEMPERATURE if settings.learn_temperature else settings.temperature
        floor = L.loss_floor_infonce(train.x_image.shape[0], tau)
    else:
        params, losses = L.sl_cross_entropy(key, train.x_image, train.label, K, settings, hidden=name == "sl_mlp",
                                            plain_gd=name == "sl_logistic_gd", with_trace=True)
        floor = 0.0
    return params, L.fit_summary(losses, floor)


def fit_and_score(key: jax.Array, cfg: Config, settings: L.LearnerSettings, learners: tuple[str, ...],
                  route: str = "exact"):
    """Train each learner on one sample of cfg; score it per prompt on aligned/independent/flipped.

    Returns (accuracies, fits): accuracies {learner: {prompt: (3,) in TESTS order}}, prompt "" for
    SL learners; fits {learner: (final loss, floor, converged)} for the trained learners. A pure
    function of (key, cfg): the sweep jits it with cfg's float fields traced and maps it over seeds.
    """
    check_route(route)
    k_dict, k_train, k_test, k_fit = jax.random.split(key, 4)
    dicts = dictionaries(k_dict, cfg)
    train = sample_dataset(k_train, cfg, dicts, cfg.n)
    prompts = {kind: prompt_latents(cfg, kind) @ dicts[1].T for kind in PROMPTS}  # (K, d), noise-free
    fit_keys = _fit_keys(k_fit)
    test_keys = jax.random.split(k_test, 3)
    if route == "sampled":
        tests = [sample_dataset(k, cfg, dicts, cfg.n_test, t) for k, t in zip(test_keys, TESTS)]
    out, fits = {}, {}
    for name in learners:
        params, fit = train_learner(name, fit_keys.get(name), train, cfg, settings)
        if fit is not None:
            fits[name] = fit
        if route == "sampled":
            out[name] = {k: jnp.stack([accuracy(f(t.x_image), t.label) for t in tests])
                         for k, f in _full_logits(name, params, prompts).items()}
        elif name in LINEAR_LEARNERS:
            out[name] = {k: jnp.stack([linear_test_accuracy(tk, cfg, dicts[0], w, b, t)
                                       for tk, t in zip(test_keys, TESTS)])
                         for k, (w, b) in _affine_scorers(name, params, prompts).items()}
        else:
            first = params if name == "sl_mlp" else params["image"]
            draws = [hidden_test_draws(tk, cfg, dicts[0], *first[0], t) for tk, t in zip(test_keys, TESTS)]
            out[name] = {k: jnp.stack([accuracy(f(h), y) for h, y in draws])
                         for k, f in _mlp_logits(name, params, prompts).items()}
    return out, fits


def evaluate_point(key: jax.Array, cfg: Config, settings: L.LearnerSettings, learners: tuple[str, ...],
                   route: str = "exact") -> dict[str, dict[str, jax.Array]]:
    """The accuracies of fit_and_score: {learner: {prompt: accuracies (3,) in TESTS order}}."""
    return fit_and_score(key, cfg, settings, learners, route)[0]


def route_label(learner: str, cfg: Config, route: str) -> str:
    """Which computation produced a learner's accuracy (module doc)."""
    if learner in THEORY_LEARNERS:
        return "theory"
    if route == "sampled":
        return "sampled"
    if learner in LINEAR_LEARNERS:
        return "exact" if cfg.num_classes == 2 else "score_mc"
    return "hidden_mc"


# ------------------------------------------------------------------ theory rows


def theory_rows(cfg: Config, learners: Sequence[str], settings: L.LearnerSettings) -> list[dict]:
    """Population predictions (theory.py, float64) as rows shaped like the learners' rows (seed -1)."""
    from .theory import bayes_core_accuracy, population_zero_shot_accuracy

    rows = []
    for test in TESTS:
        if "theory_mmcl" in learners:
            for prompt in PROMPTS:
                acc = population_zero_shot_accuracy(cfg, test, rank=settings.rank or None, prompt=prompt)
                rows.append({"learner": "theory_mmcl", "prompt": prompt, "test": test, "seed": -1, "accuracy": acc})
        if "bayes_core" in learners:
            rows.append({"learner": "bayes_core", "prompt": "", "test": test, "seed": -1,
                         "accuracy": bayes_core_accuracy(cfg)})
    return [{**r, "n": cfg.n, "route": "theory", **dict.fromkeys(FIT_KEYS, "")} for r in rows]


# ------------------------------------------------------------------ the compiled grid


@functools.lru_cache(maxsize=None)
def compiled_point(learners: tuple[str, ...], settings: L.LearnerSettings, route: str):
    """jit(lax.map over seeds (fit_and_score)) for one learner set; compiled once per static shape.

    Seeds run one after another inside the compiled program rather than vmapped: every seed has its
    own training set, so batching makes no larger matmul (vmap measured slower, BENCHMARKS.md), and
    unbatched linear algebra never reaches jaxlib 0.10's batch-parallel LAPACK kernels, which
    deadlock XLA's CPU thread pool when two run at once (README, "JAX versions").
    """
    per_seed = lambda keys, cfg: jax.lax.map(lambda k: fit_and_score(k, cfg, settings, learners, route), keys)
    return jax.jit(per_seed)


def _rows(result, cfg: Config, seeds: Sequence[int], route: str) -> list[dict]:
    """Rows from one compiled call's (accuracies, fits), each array with a leading seeds axis."""
    acc, fits = result
    rows = []
    for learner, by_prompt in acc.items():
        fit = fits.get(learner)
        for prompt, values in by_prompt.items():
            values = np.asarray(values, np.float64)  # (seeds, 3)
            for s_idx, seed in enumerate(seeds):
                conv = (dict.fromkeys(FIT_KEYS, "") if fit is None else
                        {"final_loss": float(fit[0][s_idx]), "loss_floor": float(fit[1][s_idx]),
                         "converged": bool(fit[2][s_idx])})
                for t_idx, test in enumerate(TESTS):
                    rows.append({"learner": learner, "prompt": prompt, "test": test, "seed": int(seed),
                                 "n": cfg.n, "accuracy": float(values[s_idx, t_idx]),
                                 "route": route_label(learner, cfg, route), **conv})
    return rows


def evaluate_grid(configs: Sequence[Config], seeds: Sequence[int], learners: Sequence[str],
                  settings: L.LearnerSettings | None = None, route: str = "exact",
                  on_point: Callable[[int, list[dict]], None] | None = None) -> list[list[dict]]:
    """Rows for every config: theory rows, then each learner x prompt x seed x test.

    Zero-shot learners run at every config; SL learners see no captions, so they run once per
    distinct caption-free config (datamodel.caption_free) and their rows are shared. Each config is
    one call of compiled_point (seeds mapped inside it); on_point(i, rows) is called as each config
    finishes.
    """
    check_route(route)
    check_learners(learners)
    settings = settings or L.LearnerSettings()
    zero_shot = tuple(l for l in learners if l in ZERO_SHOT_LEARNERS)
    sl = tuple(l for l in learners if l in SL_LEARNERS)
    keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
    sl_done: dict = {}
    out = []
    for i, cfg in enumerate(configs):
        rows = theory_rows(cfg, learners, settings)
        if zero_shot:
            rows += _rows(jax.device_get(compiled_point(zero_shot, settings, route)(keys, cfg)), cfg, seeds, route)
        if sl:
            image_cfg = caption_free(cfg)
            if image_cfg not in sl_done:
                acc = jax.device_get(compiled_point(sl, settings, route)(keys, image_cfg))
                sl_done[image_cfg] = _rows(acc, cfg, seeds, route)
            rows += sl_done[image_cfg]
        order = {l: j for j, l in enumerate(learners)}
        rows.sort(key=lambda r: (order[r["learner"]], r["prompt"] == "class_mean"))
        out.append(rows)
        if on_point:
            on_point(i, rows)
    return out


def seed_accuracies(rows: list[dict], learner: str, prompt: str | None = None) -> np.ndarray:
    """Accuracies (seeds, 3) in TESTS order of one learner (and prompt) from evaluate_grid rows."""
    if prompt is None:
        prompt = "core" if learner in ZERO_SHOT_LEARNERS else ""
    picked = [r for r in rows if r["learner"] == learner and r["prompt"] == prompt]
    seeds = sorted({r["seed"] for r in picked})
    table = {(r["seed"], r["test"]): r["accuracy"] for r in picked}
    return np.array([[table[(s, t)] for t in TESTS] for s in seeds], np.float64)


# ------------------------------------------------------------------ statistics


def projection_spread(x: jax.Array, label: jax.Array, direction: jax.Array, num_classes: int) -> jax.Array:
    """Within-class standard deviation of x projected on the unit direction v/|v|, averaged over classes
    (claim C3, non-collapse): x (n, d), label (n,), direction (d,) -> scalar.

    spread = (1/K) sum_k sqrt( mean_{i: y_i = k} (x_i . u - mean_k)^2 ),  u = v / |v|.
    """
    proj = x @ (direction / jnp.linalg.norm(direction))
    mask = jax.nn.one_hot(label, num_classes)  # (n, K)
    count = mask.sum(0)
    mean = proj @ mask / count
    var = ((proj[:, None] - mean) ** 2 * mask).sum(0) / count
    return jnp.mean(jnp.sqrt(var))
