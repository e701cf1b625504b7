"""The one grid: every model's points, with its seeds, its compile mode, accuracy and rows (docs/learners.md).

A model (models.Model) supplies only what is its own:

    sample(config, seed) -> Sample: train (what its learners' fit reads), tests (x (3, m, ...), label (3, m), one
        row per test of TESTS), prompts (P, K, V) (its prompt sets in Model.prompts order), fit_key (the seed's
        training key) and, for a route 'exact', the test distributions described instead of drawn (ExactTests);
    learners (learners.Learner) with one signature, fit(key, train, settings) -> (params, stats) and
        score(params, x (m, ...), prompts (P, K, V)) -> class scores (P, m, K) (P = 1 for a supervised learner);
    a memory estimate and a compile mode:
        'map':  the whole point is one jit-compiled program, lax.map over the seeds: sample, fit and score of every
                learner traced together (M1, M2, DM2: their samples are JAX functions of the seed);
        'vmap': samples are drawn per seed outside (NumPy), stacked, and each learner is one jit(vmap over seeds)
                program (digits);
        'step': one seed and one learner at a time, the learner's fit compiling its own step (paper_mnist: XLA on
                CPU runs LeNet's convolutions several times slower inside a loop body than at a program's top).
    A learner with `eager` (a NumPy float64 closed form) is fitted and scored per seed outside any program in
    every mode.

The grid derives each learner's key from the seed's fit_key and the learner's name (learners.learner_key),
computes accuracy = mean over the m test points of [argmax_k score_k(x) = y] (inside the program in 'map' and
'vmap', in float64 outside it otherwise), and builds every row with results.make_row. A learner's stats are row
columns (final_loss, loss_floor, converged; '' where absent), plus an optional 'curve': [(epoch, accuracy per
test (3,))], which each test's row carries as [[epoch, accuracy], ...].

Route 'exact' (M1, M2): accuracy on a test *distribution* given the trained weights. A linear learner's class
scores are affine in the test latent z and the image noise,
    score(x) = x W + b,  x = D_I z + xi,  xi ~ N(0, sigma_xi^2/d I_d),
so inside a test group (y, a) with z ~ N(mu_g, diag(var_g)) the scores are Gaussian,
    N(mu_g V + b, V^T diag(var_g) V + (sigma_xi^2/d) W^T W),  V = D_I^T W (l, K),
and accuracy is a Gaussian orthant probability: Phi for two classes (route label 'exact'), a Monte Carlo over
the K-dimensional scores for K > 2 ('score_mc', MC_DRAWS draws per group). A nonlinear learner (MLP encoders)
draws n_test test points in its hidden width instead of in d: W1^T x = (D_I^T W1)^T z + W1^T xi with
W1^T xi ~ N(0, sigma_xi^2/d W1^T W1) ('hidden_mc'). The learner's `exact(params, prompts)` gives these forms.

`run_point` is the one runner of a point; models.evaluate_grid, the entry of the sweep, paper_checks and bench,
checks a list of configs against their model and calls it per config.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .learners import ZERO_SHOT, Learner, learner_key
from .results import TESTS, make_row

MC_DRAWS = 1 << 14  # score-space Monte Carlo draws per test group (K > 2): s.e. <= 0.004 per group
MODES = ("map", "vmap", "step")


class Tests(NamedTuple):
    """The three test sets of one seed, in TESTS order: x a pytree of arrays with leading axes (3, m), label (3, m)."""

    x: Any
    label: Any


class ExactTests(NamedTuple):
    """The test distributions of one seed, described rather than drawn (route 'exact'; module doc).

    keys (3,): one key per test (the score Monte Carlo, the hidden-width noise); d_image (d, l) = D_I;
    noise_var: sigma_xi^2 / d; groups: per test (weight (G,), label (G,), mean (G, l), variance (G, l)), the test
    latents as a Gaussian mixture; latents: per test (z (n_test, l), label (n_test,)) drawn from the model's
    sampler with the first half of split(keys[t]), for the nonlinear learners.
    """

    keys: jax.Array
    d_image: jax.Array
    noise_var: jax.Array
    groups: tuple
    latents: tuple


class Sample(NamedTuple):
    """One seed's data of one config (module doc)."""

    train: Any
    tests: Tests
    prompts: Any
    fit_key: jax.Array
    exact: ExactTests | None = None


# ------------------------------------------------------------------ accuracy


def accuracy(scores: jax.Array, label: jax.Array) -> jax.Array:
    """Fraction of test points whose argmax class is the label: scores (P, m, K), label (m,) -> (P,)."""
    return jnp.mean(jnp.argmax(scores, axis=-1) == label, axis=-1)


def _psd_sqrt(cov: jax.Array) -> jax.Array:
    """A factor F with F F^T = cov for a (..., K, K) positive semi-definite matrix (eigh; safe when singular)."""
    lam, vec = jnp.linalg.eigh(cov)
    return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[..., None, :]


def linear_test_accuracy(key: jax.Array, groups: tuple, d_image: jax.Array, noise_var, w: jax.Array,
                         b: jax.Array) -> jax.Array:
    """Accuracy of the affine classifier argmax_k (x W + b)_k on a Gaussian-mixture test distribution (route 'exact').

    groups = (weight (G,), label (G,), mean (G, l), variance (G, l)) of the test latents, d_image (d, l) = D_I,
    noise_var = sigma_xi^2 / d, w (d, K), b (K,). Per group the score vector is Gaussian (module doc); K = 2:
    sum_g weight_g Phi(m_g / s_g) with m_g, s_g^2 the mean and variance of score_y - score_other; K > 2: Monte
    Carlo over MC_DRAWS standard-normal draws per group (common to all groups). An exact tie (zero variance, zero
    mean) goes to class 0, as argmax and theory.py decide it.
    """
    weight, label, mean, var = groups
    v = d_image.T @ w  # (l, K)
    noise = noise_var * (w.T @ w)  # (K, K)
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


def hidden_test_draws(key: jax.Array, latents: tuple, d_image: jax.Array, noise_var, w1: jax.Array,
                      b1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First-layer pre-activations x W1 + b1 of the test points of `latents`, drawn in the hidden width.

    x W1 = z (D_I^T W1) + xi W1 with xi W1 ~ N(0, (sigma_xi^2/d) W1^T W1): latents (z (m, l), label (m,)),
    d_image (d, l), w1 (d, h), b1 (h,) -> (pre-activations (m, h), labels (m,)). The same distribution as
    drawing x in d; `key` is the second half of split(the test's key) (ExactTests).
    """
    z, label = latents
    factor = _psd_sqrt(noise_var * (w1.T @ w1))  # (h, h)
    eps = jax.random.normal(key, (z.shape[0], w1.shape[1]))
    return z @ (d_image.T @ w1) + eps @ factor.T + b1, label


def _exact_accuracy(learner: Learner, params, sample: Sample) -> jax.Array:
    """(P, 3) accuracies of one fitted learner on the described tests (route 'exact', module doc)."""
    ex = sample.exact
    forms = learner.exact(params, sample.prompts)
    if learner.linear:  # forms: [(W (d, K), b (K,)) per prompt set]
        return jnp.stack([jnp.stack([linear_test_accuracy(key, g, ex.d_image, ex.noise_var, *form)
                                     for key, g in zip(ex.keys, ex.groups)]) for form in forms])
    first, head = forms  # (W1, b1) shared by every prompt set; head: (m, h) -> (P, m, K)
    out = []
    for key, latents in zip(ex.keys, ex.latents):
        h, label = hidden_test_draws(jax.random.split(key)[1], latents, ex.d_image, ex.noise_var, *first)
        out.append(accuracy(head(h), label))
    return jnp.stack(out, axis=1)


def _sampled_accuracy(learner: Learner, params, sample: Sample) -> jax.Array:
    """(P, 3) accuracies of one fitted learner on the three drawn test sets."""
    tests = sample.tests
    return jnp.stack([accuracy(learner.score(params, jax.tree.map(lambda a: a[t], tests.x), sample.prompts),
                               tests.label[t]) for t in range(len(TESTS))], axis=1)


def _eager_accuracy(learner: Learner, params, sample: Sample) -> np.ndarray:
    """(P, 3) float64 accuracies, counted outside any program: [argmax = y] summed over m, divided by m."""
    tests = sample.tests
    out = []
    for t in range(len(TESTS)):
        scores = np.asarray(learner.score(params, jax.tree.map(lambda a: a[t], tests.x), sample.prompts))
        out.append((np.argmax(scores, axis=-1) == np.asarray(tests.label[t])).mean(-1))
    return np.stack(out, axis=1)


def _fit_and_score(learner: Learner, sample: Sample, settings, route: str, in_program: bool = True):
    """(accuracies (P, 3), stats) of one learner on one seed's sample, inside a compiled program or not."""
    params, stats = learner.fit(learner_key(sample.fit_key, learner.name), sample.train, settings)
    if not in_program:
        return _eager_accuracy(learner, params, sample), stats
    if route == "exact":
        return _exact_accuracy(learner, params, sample), stats
    return _sampled_accuracy(learner, params, sample), stats


# ------------------------------------------------------------------ the compiled programs


@functools.lru_cache(maxsize=None)
def _mapped(model, learners: tuple[Learner, ...], route: str):
    """jit(lax.map over seeds) of sample, fit and score of every learner: (seeds (S,), config, settings) ->
    {name: (accuracies (S, P, 3), stats with a leading S)}. The config's float fields and the settings' traced
    fields (LearnerSettings.temperature) are arguments, so a sweep over them compiles once.

    Seeds run one after another inside the program rather than vmapped: every seed has its own training set,
    so batching makes no larger matmul (vmap measured slower, BENCHMARKS.md), and unbatched linear algebra
    never reaches jaxlib's batch-parallel LAPACK kernels, which deadlock XLA's CPU thread pool when two run at
    once (README, "JAX versions").
    """
    def one_seed(seed, config, settings):
        sample = model.sample(config, seed)
        return {l.name: _fit_and_score(l, sample, settings, route) for l in learners}

    return jax.jit(lambda seeds, config, settings: jax.lax.map(lambda s: one_seed(s, config, settings), seeds))


@functools.lru_cache(maxsize=16)
def _vmapped(learner: Learner, route: str):
    """jit(vmap over seeds) of one learner's fit and score on stacked samples (leading axis S):
    (sample, settings) -> (accuracies (S, P, 3), stats)."""
    return jax.jit(jax.vmap(lambda sample, settings: _fit_and_score(learner, sample, settings, route),
                            in_axes=(0, None)))


def _stack(samples: list[Sample]) -> Sample:
    """The samples of several seeds as one, every array leaf with a leading seed axis."""
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(a) for a in leaves]), *samples)


# ------------------------------------------------------------------ one point


def route_label(learner: Learner, config, route: str) -> str:
    """Which computation produced a learner's accuracy (module doc)."""
    if learner.theory:
        return "theory"
    if route == "sampled" or learner.eager:
        return "sampled"
    if learner.linear:
        return "exact" if config.num_classes == 2 else "score_mc"
    return "hidden_mc"


def _prompt_names(model, learner: Learner) -> tuple[str, ...]:
    return model.prompts if learner.kind == ZERO_SHOT else ("",)


def _population_rows(model, config, learners: Sequence[Learner], settings) -> list[dict]:
    """The float64 predictions of the records with a `population` (theory.py), seed -1; None gives no row."""
    rows = []
    for learner in learners:
        for prompt in _prompt_names(model, learner):
            for test in TESTS:
                acc = learner.population(config, test, prompt, settings)
                if acc is not None:
                    rows.append(make_row(learner.name, prompt, test, -1, model.train_size(config), acc, "theory"))
    return rows


def _fitted_rows(model, config, learner: Learner, seeds: Sequence[int], acc, stats, route: str) -> list[dict]:
    """Rows of one fitted learner: acc (S, P, 3), stats {column: (S,) values} or, per seed, a list of such dicts."""
    acc = np.asarray(acc, np.float64)
    rows = []
    for i, seed in enumerate(seeds):
        own = stats[i] if isinstance(stats, list) else {k: v[i] for k, v in jax.device_get(stats).items()}
        curve = own.get("curve", [])
        columns = {k: v.item() if hasattr(v, "item") else v for k, v in own.items() if k != "curve"}
        for p, prompt in enumerate(_prompt_names(model, learner)):
            for t, test in enumerate(TESTS):
                extra = {"curve": [[epoch, accs[t]] for epoch, accs in curve]} if "curve" in own else {}
                rows.append(make_row(learner.name, prompt, test, int(seed), model.train_size(config), acc[i, p, t],
                                     route_label(learner, config, route), **columns, **extra))
    return rows


def run_point(model, config, seeds: Sequence[int], learners: Sequence[Learner], settings, route: str) -> list[dict]:
    """The rows of one config of `model` (models.Model): theory rows of the population records, then every fitted
    learner x prompt set x seed x test, in the model's compile mode (module doc). Rows in `learners` order."""
    seeds = [int(s) for s in seeds]
    if model.check is not None:
        model.check(config, learners, settings)
    population = [l for l in learners if l.population is not None]
    fitted = [l for l in learners if l.fit is not None]
    out = {l.name: [] for l in learners}
    for row in _population_rows(model, config, population, settings):
        out[row["learner"]].append(row)
    eager = [l for l in fitted if l.eager or model.mode == "step"]
    traced = tuple(l for l in fitted if l not in eager)
    if traced and model.mode == "map":
        result = jax.device_get(_mapped(model, traced, route)(jnp.asarray(seeds), config, settings))
        for l in traced:
            out[l.name] += _fitted_rows(model, config, l, seeds, *result[l.name], route)
    samples = [model.sample(config, s) for s in seeds] if traced and model.mode == "vmap" else None
    if samples:
        stacked = _stack(samples)
        for l in traced:
            acc, stats = jax.device_get(_vmapped(l, route)(stacked, settings))
            out[l.name] += _fitted_rows(model, config, l, seeds, acc, stats, route)
    per_seed: dict = {l.name: [] for l in eager}
    for i, seed in enumerate(seeds if eager else []):  # one seed's sample at a time
        sample = samples[i] if samples else model.sample(config, seed)
        for l in eager:
            per_seed[l.name].append(_fit_and_score(l, sample, settings, route, in_program=False))
    for l in eager:
        acc = np.stack([np.asarray(a, np.float64) for a, _ in per_seed[l.name]])
        out[l.name] += _fitted_rows(model, config, l, seeds, acc, [dict(s) for _, s in per_seed[l.name]], route)
    return [row for l in learners for row in out[l.name]]
