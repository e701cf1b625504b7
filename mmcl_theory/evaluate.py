"""Models M1, M2, DM2, the learners and one point: theory rows beside learner accuracies (run_point), compiled per point.

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

The learners of M1, M2 and DM2 are the ``LEARNERS`` records (learners.Learner: kind, fit, scorers);
theory rows come from the records with a ``population`` (theory.py, float64) and have the same row
shape. ``run_point`` is these models' runner in the registry (models.py), whose ``evaluate_grid`` is
the one grid for every model; ``compiled_point`` is the one place that jit-compiles a point.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import learners as L
from .losses import l2_normalise
from .datamodel import (TESTS, Config, M1Config, agreement, dictionaries, prompt_latents,
                        sample_dataset, sample_latents)

FIT_KEYS = ("final_loss", "loss_floor", "converged")  # row columns of a trained learner's convergence
PROMPTS = ("core", "class_mean")
ROUTES = ("exact", "sampled")
MC_DRAWS = 1 << 14  # score-space Monte Carlo draws per test group (K > 2): s.e. <= 0.004 per group


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


# ------------------------------------------------------------------ the learners of M1, M2 and DM2
#
# Each is a learners.Learner record (LEARNERS below, and M1_LEARNERS for M1 alone); the model registry
# (models.py) hands the chosen records to run_point. For these models the record's functions are
#   fit(key, train, cfg, settings) -> (params, (final loss, loss floor, converged) or None for a closed form):
#       key is the learner's own key, learners.learner_key(the point's training key, its name), so adding a
#       learner never changes another's draws; train is a datamodel.Dataset.
#   scorers(params, prompts) -> {prompt: Scorer}: prompts {prompt set: (K, d) observed prompts} for a
#       zero-shot learner, {} for a supervised one, which returns {"": Scorer}.
#   population(cfg, test, prompt, settings) -> accuracy, for the theory rows.


@dataclasses.dataclass(frozen=True)
class Scorer:
    """The class scores of one fitted learner with one prompt set, in the forms the routes need.

    logits: x (n, d) -> scores (n, K) (route ``sampled``).
    affine: (W (d, K), b (K,)) with scores x W + b, for a linear learner (route ``exact``). Zero-shot:
        <W_I x + b_I, e_k> with e_k the (normalised) text embedding of prompt k; normalising the image
        embedding scales all K scores by one positive number, so argmax is unchanged.
    hidden: ((W1 (d, h), b1 (h,)), head) for an MLP learner, scores head(x W1 + b1) with head: (n, h) ->
        (n, K) (route ``exact``, test points drawn in the hidden width, hidden_test_draws).
    """

    logits: Callable
    affine: tuple | None = None
    hidden: tuple | None = None


def _fit_mmcl_closed_form(key, train, cfg, settings):
    return L.mmcl_closed_form(train.x_image, train.x_text, settings.rank, settings.rho), None


def _fit_sl_min_norm(key, train, cfg, settings):
    return L.sl_min_norm(train.x_image, train.label, cfg.num_classes), None


def _fit_mmcl_linear_gd(key, train, cfg, settings):
    params, losses = L.mmcl_linear_gd(key, train.x_image, train.x_text, settings.embed_dim,
                                      settings.rho, settings.gd_steps, settings.gd_lr, with_trace=True)
    return params, L.fit_summary(losses, L.loss_floor_linear(train.x_image, train.x_text, settings.embed_dim,
                                                             settings.rho))


def _fit_mmcl_infonce(hidden, key, train, cfg, settings):
    params, losses = L.mmcl_infonce(key, train.x_image, train.x_text, settings, hidden=hidden,
                                    with_trace=True)
    tau = L.MIN_TEMPERATURE if settings.learn_temperature else settings.temperature
    return params, L.fit_summary(losses, L.loss_floor_infonce(train.x_image.shape[0], tau))


def _fit_sl_cross_entropy(hidden, plain_gd, key, train, cfg, settings):
    params, losses = L.sl_cross_entropy(key, train.x_image, train.label, cfg.num_classes,
                                        settings, hidden=hidden, plain_gd=plain_gd, with_trace=True)
    return params, L.fit_summary(losses, 0.0)


def _score_bilinear(params, prompts):
    """Linear-loss MMCL (W_I, W_T): scores <W_I x, W_T t_k> = x W_I^T W_T t_k."""
    w_i, w_t = params
    out = {}
    for k, t in prompts.items():
        w = w_i.T @ (w_t @ t.T)
        out[k] = Scorer(lambda x, w=w: x @ w, affine=(w, jnp.zeros(t.shape[0])))
    return out


def _score_infonce(params, prompts):
    """InfoNCE encoders: scores <f_I(x)/|f_I(x)|, f_T(t_k)/|f_T(t_k)|> (linear: affine; MLP: through the hidden width)."""
    (w1, b1) = params["image"][0]
    linear = len(params["image"]) == 1
    out = {}
    for k, t in prompts.items():
        e = l2_normalise(L.apply_mlp(params["text"], t))  # (K, p)
        logits = lambda x, t=t: L.infonce_zero_shot_logits(params, x, t)
        if linear:
            out[k] = Scorer(logits, affine=(w1 @ e.T, b1 @ e.T))
        else:
            head = lambda h, e=e: l2_normalise(L.apply_mlp(params["image"][1:], jax.nn.relu(h))) @ e.T
            out[k] = Scorer(logits, hidden=((w1, b1), head))
    return out


def _score_sl_min_norm(params, prompts):
    return {"": Scorer(lambda x: x @ params, affine=(params, jnp.zeros(params.shape[1])))}


def _score_sl_network(params, prompts):
    """A softmax classifier's logits: affine for a linear model, through the hidden width for an MLP."""
    logits = lambda x: L.apply_mlp(params, x)
    if len(params) == 1:
        return {"": Scorer(logits, affine=params[0])}
    return {"": Scorer(logits, hidden=(params[0], lambda h: L.apply_mlp(params[1:], jax.nn.relu(h))))}


def _population_mmcl(cfg, test, prompt, settings):
    from .theory import population_zero_shot_accuracy

    return population_zero_shot_accuracy(cfg, test, rank=settings.rank or None, prompt=prompt)


def _population_infonce(cfg, test, prompt, settings):
    """The population InfoNCE optimum at the settings' temperature (docs/temperature.md#population-optimum); None
    (no row) where it collapses to rank one and its zero-shot prediction is undefined."""
    from .theory import INFONCE_COLLAPSED, infonce_population_accuracy, infonce_population_optimum

    if infonce_population_optimum(cfg, settings.temperature)["rank_ratio"] < INFONCE_COLLAPSED:
        return None
    return infonce_population_accuracy(cfg, test, settings.temperature, prompt=prompt)


def _memory_mmcl(cfg, settings):
    from .theory import population_memory

    return population_memory(cfg)


def _memory_infonce(cfg, settings):
    from .theory import infonce_memory

    return infonce_memory(cfg)


def _population_bayes_core(cfg, test, prompt, settings):
    from .theory import bayes_core_accuracy

    return bayes_core_accuracy(cfg)


P = functools.partial
ZS, SL = L.ZERO_SHOT, L.SUPERVISED
LEARNERS = (
    L.Learner("theory_mmcl", ZS, population=_population_mmcl, theory=True, memory=_memory_mmcl),
    L.Learner("bayes_core", SL, population=_population_bayes_core, theory=True),
    L.Learner("mmcl_closed_form", ZS, _fit_mmcl_closed_form, _score_bilinear, linear=True),
    L.Learner("mmcl_linear_gd", ZS, _fit_mmcl_linear_gd, _score_bilinear, trained=True, linear=True),
    L.Learner("mmcl_infonce_linear", ZS, P(_fit_mmcl_infonce, False), _score_infonce, trained=True, linear=True),
    L.Learner("mmcl_infonce_mlp", ZS, P(_fit_mmcl_infonce, True), _score_infonce, trained=True),
    L.Learner("sl_min_norm", SL, _fit_sl_min_norm, _score_sl_min_norm, linear=True),
    L.Learner("sl_logistic", SL, P(_fit_sl_cross_entropy, False, False), _score_sl_network, trained=True,
              linear=True),
    L.Learner("sl_logistic_gd", SL, P(_fit_sl_cross_entropy, False, True), _score_sl_network, trained=True,
              linear=True),
    L.Learner("sl_mlp", SL, P(_fit_sl_cross_entropy, True, False), _score_sl_network, trained=True),
)
M1_LEARNERS = (L.Learner("theory_infonce", ZS, population=_population_infonce, theory=True, memory=_memory_infonce),)  # derived for M1 only


# ------------------------------------------------------------------ one point


def fit_and_score(key: jax.Array, cfg: Config, settings: L.LearnerSettings, learners: tuple[L.Learner, ...],
                  route: str = "exact"):
    """Train each learner on one sample of cfg; score it per prompt on aligned/independent/flipped.

    learners: records of LEARNERS with a fit. Returns (accuracies, fits): accuracies {learner: {prompt: (3,)
    in TESTS order}}, prompt "" for SL learners; fits {learner: (final loss, floor, converged)} for the
    trained learners. A pure function of (key, cfg): the sweep jits it with cfg's float fields traced and
    maps it over seeds.
    """
    k_dict, k_train, k_test, k_fit = jax.random.split(key, 4)
    dicts = dictionaries(k_dict, cfg)
    train = sample_dataset(k_train, cfg, dicts, cfg.n)
    prompts = {kind: prompt_latents(cfg, kind) @ dicts[1].T for kind in PROMPTS}  # (K, d), noise-free
    test_keys = jax.random.split(k_test, 3)
    if route == "sampled":
        tests = [sample_dataset(k, cfg, dicts, cfg.n_test, t) for k, t in zip(test_keys, TESTS)]
    out, fits = {}, {}
    for learner in learners:
        params, fit = learner.fit(L.learner_key(k_fit, learner.name), train, cfg, settings)
        if fit is not None:
            fits[learner.name] = fit
        scorers = learner.scorers(params, prompts if learner.kind == L.ZERO_SHOT else {})
        if route == "sampled":
            out[learner.name] = {k: jnp.stack([accuracy(s.logits(t.x_image), t.label) for t in tests])
                                 for k, s in scorers.items()}
        elif learner.linear:
            out[learner.name] = {k: jnp.stack([linear_test_accuracy(tk, cfg, dicts[0], *s.affine, t)
                                               for tk, t in zip(test_keys, TESTS)])
                                 for k, s in scorers.items()}
        else:
            first = next(iter(scorers.values())).hidden[0]  # one first layer for every prompt set
            draws = [hidden_test_draws(tk, cfg, dicts[0], *first, t) for tk, t in zip(test_keys, TESTS)]
            out[learner.name] = {k: jnp.stack([accuracy(s.hidden[1](h), y) for h, y in draws])
                                 for k, s in scorers.items()}
    return out, fits


def route_label(learner: L.Learner, cfg: Config, route: str) -> str:
    """Which computation produced a learner's accuracy (module doc)."""
    if learner.theory:
        return "theory"
    if route == "sampled":
        return "sampled"
    if learner.linear:
        return "exact" if cfg.num_classes == 2 else "score_mc"
    return "hidden_mc"


# ------------------------------------------------------------------ theory rows


def theory_rows(cfg: Config, learners: Sequence[L.Learner], settings: L.LearnerSettings) -> list[dict]:
    """Population predictions (theory.py, float64) of the records with a `population`, as rows shaped like
    the learners' rows (seed -1, route 'theory'); a prediction that is undefined (None) gives no row."""
    rows = []
    for learner in learners:
        for prompt in (PROMPTS if learner.kind == L.ZERO_SHOT else ("",)):
            for test in TESTS:
                acc = learner.population(cfg, test, prompt, settings)
                if acc is not None:
                    rows.append({"learner": learner.name, "prompt": prompt, "test": test, "seed": -1, "accuracy": acc})
    return [{**r, "n": cfg.n, "route": "theory", **dict.fromkeys(FIT_KEYS, "")} for r in rows]


# ------------------------------------------------------------------ the compiled point


@functools.lru_cache(maxsize=None)
def compiled_point(learners: tuple[L.Learner, ...], settings: L.LearnerSettings, route: str):
    """jit(lax.map over seeds (fit_and_score)) for one learner set; compiled once per static shape.

    Seeds run one after another inside the compiled program rather than vmapped: every seed has its
    own training set, so batching makes no larger matmul (vmap measured slower, BENCHMARKS.md), and
    unbatched linear algebra never reaches jaxlib 0.10's batch-parallel LAPACK kernels, which
    deadlock XLA's CPU thread pool when two run at once (README, "JAX versions").
    """
    per_seed = lambda keys, cfg: jax.lax.map(lambda k: fit_and_score(k, cfg, settings, learners, route), keys)
    return jax.jit(per_seed)


def _rows(result, learners: Sequence[L.Learner], cfg: Config, seeds: Sequence[int], route: str) -> list[dict]:
    """Rows from one compiled call's (accuracies, fits), each array with a leading seeds axis."""
    acc, fits = result
    by_name = {learner.name: learner for learner in learners}
    rows = []
    for name, by_prompt in acc.items():
        fit = fits.get(name)
        for prompt, values in by_prompt.items():
            values = np.asarray(values, np.float64)  # (seeds, 3)
            for s_idx, seed in enumerate(seeds):
                conv = (dict.fromkeys(FIT_KEYS, "") if fit is None else
                        {"final_loss": float(fit[0][s_idx]), "loss_floor": float(fit[1][s_idx]),
                         "converged": bool(fit[2][s_idx])})
                for t_idx, test in enumerate(TESTS):
                    rows.append({"learner": name, "prompt": prompt, "test": test, "seed": int(seed),
                                 "n": cfg.n, "accuracy": float(values[s_idx, t_idx]),
                                 "route": route_label(by_name[name], cfg, route), **conv})
    return rows


def run_point(cfg: Config, seeds: Sequence[int], learners: Sequence[L.Learner], settings: L.LearnerSettings,
              route: str = "exact") -> list[dict]:
    """The rows of one config: theory rows of the population records, then every fitted learner x prompt x
    seed x test from one call of compiled_point (seeds mapped inside it). The model registry's runner for
    M1, M2 and DM2 (models.evaluate_grid orders the rows and shares SL runs across caption-only changes)."""
    if route not in ROUTES:
        raise ValueError(f"unknown evaluation route {route!r}: allowed {', '.join(ROUTES)}")
    rows = theory_rows(cfg, [l for l in learners if l.population is not None], settings)
    fitted = tuple(l for l in learners if l.fit is not None)
    if fitted:
        keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
        rows += _rows(jax.device_get(compiled_point(fitted, settings, route)(keys, cfg)), fitted, cfg, seeds, route)
    return rows


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
