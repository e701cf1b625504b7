"""Models M1, M2 and DM2 as the grid sees them (grid.py): their sample, their learners and their memory.

`sample(cfg, seed)`: the dictionaries, the training set, the prompts and the three test sets of one seed, a pure
JAX function of the seed (the grid traces it inside one program per point, compile mode 'map'); for M1 and M2
also the test distributions as Gaussian mixtures for the route 'exact' (grid.ExactTests).

Zero-shot prediction (docs/models.md, "Zero-shot prompts"): argmax_k <f_I(x), f_T(t_k)> with observed,
noise-free prompts t_k = D_T t_latent_k; every zero-shot learner is scored with both the core prompt
(t_latent_k = e_core(k)) and the class-mean caption prompt (t_latent_k = E[z_T | y = k]). SL prediction:
argmax of its logits.

Convergence (docs/learners.md#convergence): each trained learner's rows carry its final training loss, the
floor of that loss (``loss_floor``: the rank-constrained minimum of the linear loss, the perfect-matching floor
of InfoNCE at the learner's temperature, 0 for cross-entropy) and ``converged`` (the loss stopped moving,
learners.fit_summary); "" for theory rows and closed forms.

The learners are the ``LEARNERS`` records (learners.Learner), and ``M1_LEARNERS`` for M1 alone; theory rows
come from the records with a ``population`` (theory.py, float64).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from . import learners as L
from .datamodel import TESTS, Config, dictionaries, prompt_latents, sample_dataset, sample_latents
from .datamodel import test_groups as gaussian_test_groups
from .grid import MC_DRAWS, ExactTests, Sample, Tests
from .losses import l2_normalise

PROMPTS = ("core", "class_mean")
ROUTES = ("exact", "sampled")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["x_image", "x_text", "label"],
                   meta_fields=["num_classes"])
@dataclasses.dataclass(frozen=True)
class Train:
    """The training sample the learners fit: x_image, x_text (n, d), label (n,) in 0..num_classes-1."""

    x_image: jax.Array
    x_text: jax.Array
    label: jax.Array
    num_classes: int


def sample(cfg: Config, seed, exact: bool = True) -> Sample:
    """One seed's data (module doc): keys split(key(seed), 4) for the dictionaries, the training set, the tests and
    the learners (their keys are learner_key(that, name)); prompts (2, K, d) = P_latent D_T^T for PROMPTS, noise
    free; tests three sampled sets of n_test points; with `exact` (M1, M2) their Gaussian description."""
    k_dict, k_train, k_test, k_fit = jax.random.split(jax.random.key(seed), 4)
    dicts = dictionaries(k_dict, cfg)
    data = sample_dataset(k_train, cfg, dicts, cfg.n)
    prompts = jnp.stack([prompt_latents(cfg, kind) @ dicts[1].T for kind in PROMPTS])
    test_keys = jax.random.split(k_test, 3)
    tests = [sample_dataset(k, cfg, dicts, cfg.n_test, t) for k, t in zip(test_keys, TESTS)]
    described = None
    if exact:
        latents = [sample_latents(jax.random.split(k)[0], cfg, cfg.n_test, t) for k, t in zip(test_keys, TESTS)]
        described = ExactTests(test_keys, dicts[0], cfg.sigma_xi**2 / cfg.d, tuple(gaussian_test_groups(cfg, t) for t in TESTS),
                               tuple((lat.z_image, lat.label) for lat in latents))
    return Sample(Train(data.x_image, data.x_text, data.label, cfg.num_classes),
                  Tests(jnp.stack([t.x_image for t in tests]), jnp.stack([t.label for t in tests])), prompts, k_fit,
                  described)


# ------------------------------------------------------------------ memory, before any work starts

ND_ARRAYS = 6  # n x d float32 arrays alive at once: images, captions, their two noise draws, two working copies
BYTES = 4  # float32


def memory(cfg: Config, settings: L.LearnerSettings, fitted, route: str) -> tuple[int, str]:
    """(bytes, how) of the arrays the fitted learners `fitted` hold per seed (seeds run one after another): the
    training images and captions and their noise draws in n x d, working copies of the images (the centred images
    of the closed form, the transposes and QR factors of min-norm SL), an n x n or d x d Gram or R factor, the
    d-dimensional test sets of the sampled route, and for K > 2 classes on the exact route the score-space Monte
    Carlo of every test group (K^2 groups x MC_DRAWS draws x K scores)."""
    n, d, n_test = cfg.n, cfg.d, cfg.n_test
    if not fitted:
        return 0, "no sampled data"
    terms = [(ND_ARRAYS * n * d, f"{ND_ARRAYS} arrays of n x d (n = {n}, d = {d})"),
             (2 * min(n, d) ** 2, "2 of min(n, d)^2")]
    if route == "sampled":
        terms.append((6 * n_test * d, f"6 test arrays of n_test x d (n_test = {n_test})"))
    K = cfg.num_classes
    if route == "exact" and K > 2 and any(l.linear for l in fitted):
        terms.append((K * K * (2 * MC_DRAWS * K + K * K), f"the score Monte Carlo of K^2 groups (K = {K})"))
    if route == "exact" and not all(l.linear for l in fitted):
        terms.append((4 * n_test * max(settings.width, cfg.latent_dim), "4 test draws of n_test x width (MLP learners)"))
    return BYTES * sum(t for t, _ in terms), " + ".join(h for _, h in terms) + " float32"


# ------------------------------------------------------------------ the learners of M1, M2 and DM2
#
# learners.Learner records: fit(key, train: Train, settings) -> (params, stats), score(params, x (m, d), prompts
# (P, K, d)) -> (P, m, K), exact(params, prompts) (grid.py, route 'exact'); population(cfg, test, prompt, settings)
# -> accuracy for the theory rows.


def _fit_summary(losses, floor) -> dict:
    final, floor, converged = L.fit_summary(losses, floor)
    return {"final_loss": final, "loss_floor": floor, "converged": converged}


def _fit_mmcl_closed_form(key, train, settings):
    return L.mmcl_closed_form(train.x_image, train.x_text, settings.rank, settings.rho), {}


def _fit_sl_min_norm(key, train, settings):
    return L.sl_min_norm(train.x_image, train.label, train.num_classes), {}


def _fit_mmcl_linear_gd(key, train, settings):
    params, losses = L.mmcl_linear_gd(key, train.x_image, train.x_text, settings.embed_dim,
                                      settings.rho, settings.gd_steps, settings.gd_lr, with_trace=True)
    return params, _fit_summary(losses, L.loss_floor_linear(train.x_image, train.x_text, settings.embed_dim,
                                                            settings.rho))


def _fit_mmcl_infonce(hidden, key, train, settings):
    params, losses = L.mmcl_infonce(key, train.x_image, train.x_text, settings, hidden=hidden,
                                    with_trace=True)
    tau = L.MIN_TEMPERATURE if settings.learn_temperature else settings.temperature
    return params, _fit_summary(losses, L.loss_floor_infonce(train.x_image.shape[0], tau))


def _fit_sl_cross_entropy(hidden, plain_gd, key, train, settings):
    params, losses = L.sl_cross_entropy(key, train.x_image, train.label, train.num_classes,
                                        settings, hidden=hidden, plain_gd=plain_gd, with_trace=True)
    return params, _fit_summary(losses, 0.0)


def _bilinear_weights(params, prompts) -> list:
    """Linear-loss MMCL (W_I, W_T): per prompt set t (K, d), scores <W_I x, W_T t_k> = x W with W = W_I^T W_T t^T."""
    w_i, w_t = params
    return [w_i.T @ (w_t @ t.T) for t in prompts]


def _score_bilinear(params, x, prompts):
    return jnp.stack([x @ w for w in _bilinear_weights(params, prompts)])


def _exact_bilinear(params, prompts):
    return [(w, jnp.zeros(w.shape[1])) for w in _bilinear_weights(params, prompts)]


def _score_infonce(params, x, prompts):
    """InfoNCE encoders: scores <f_I(x)/|f_I(x)|, f_T(t_k)/|f_T(t_k)|> per prompt set."""
    return jnp.stack([L.infonce_zero_shot_logits(params, x, t) for t in prompts])


def _exact_infonce(params, prompts):
    """Linear encoders: <W_I x + b_I, e_k> with e_k the normalised text embedding (normalising the image embedding
    scales all K scores by one positive number, so argmax is unchanged); MLP: the first layer and the head."""
    (w1, b1) = params["image"][0]
    texts = [l2_normalise(L.apply_mlp(params["text"], t)) for t in prompts]  # (K, p) each
    if len(params["image"]) == 1:
        return [(w1 @ e.T, b1 @ e.T) for e in texts]
    head = lambda h: jnp.stack([l2_normalise(L.apply_mlp(params["image"][1:], jax.nn.relu(h))) @ e.T for e in texts])
    return (w1, b1), head


def _score_sl_min_norm(params, x, prompts):
    return (x @ params)[None]


def _exact_sl_min_norm(params, prompts):
    return [(params, jnp.zeros(params.shape[1]))]


def _score_sl_network(params, x, prompts):
    """A softmax classifier's logits."""
    return L.apply_mlp(params, x)[None]


def _exact_sl_network(params, prompts):
    """Affine for a linear model, through the hidden width for an MLP."""
    if len(params) == 1:
        return [params[0]]
    return params[0], lambda h: L.apply_mlp(params[1:], jax.nn.relu(h))[None]


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
    L.Learner("mmcl_closed_form", ZS, _fit_mmcl_closed_form, _score_bilinear, linear=True, exact=_exact_bilinear),
    L.Learner("mmcl_linear_gd", ZS, _fit_mmcl_linear_gd, _score_bilinear, trained=True, linear=True,
              exact=_exact_bilinear),
    L.Learner("mmcl_infonce_linear", ZS, P(_fit_mmcl_infonce, False), _score_infonce, trained=True, linear=True,
              exact=_exact_infonce),
    L.Learner("mmcl_infonce_mlp", ZS, P(_fit_mmcl_infonce, True), _score_infonce, trained=True, exact=_exact_infonce),
    L.Learner("sl_min_norm", SL, _fit_sl_min_norm, _score_sl_min_norm, linear=True, exact=_exact_sl_min_norm),
    L.Learner("sl_logistic", SL, P(_fit_sl_cross_entropy, False, False), _score_sl_network, trained=True,
              linear=True, exact=_exact_sl_network),
    L.Learner("sl_logistic_gd", SL, P(_fit_sl_cross_entropy, False, True), _score_sl_network, trained=True,
              linear=True, exact=_exact_sl_network),
    L.Learner("sl_mlp", SL, P(_fit_sl_cross_entropy, True, False), _score_sl_network, trained=True,
              exact=_exact_sl_network),
)
M1_LEARNERS = (L.Learner("theory_infonce", ZS, population=_population_infonce, theory=True, memory=_memory_infonce),)  # derived for M1 only


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
