"""Model M3, the learners: MMCL (closed form, its exact expectation, trained InfoNCE) beside SL on one backbone.

Every learner is fitted on the train Dataset of mmcl_theory.digits.build_split and scored on its
three test sets (aligned, independent, flipped). Zero-shot learners are scored with two prompt
sets: 'word', the bare digit word t_k = e_k, and 'caption_mean', the in-distribution prompt
t_k = mean of the class-k training captions.

  theory_mmcl:          the linear theory on this design: the closed-form minimiser of the linear
                        contrastive loss at the exact expectation E[S] of the cross-covariance over
                        the colour and caption draws (digits.expected_cross_covariance), rank
                        embed_dim; score (x - E[xbar])^T A* t_k.
  mmcl_closed_form:     the same minimiser on the sampled data, A* = top-embed_dim SVD of
                        S = (X_I - 1 xbar^T)^T X_T / (n - 1) (= learners.mmcl_closed_form, rho = 1).
  mmcl_infonce_linear:  linear image and text encoders (with bias) trained with symmetric InfoNCE
                        on L2-normalised embeddings, fixed temperature; zero-shot argmax_k <f(x), g(t_k)>.
  mmcl_infonce_mlp:     the same with one-hidden-layer ReLU MLP encoders (width).
  sl_logistic:          the linear image encoder of mmcl_infonce_linear with a linear 10-way head,
                        softmax cross-entropy (the same backbone).
  sl_mlp:               the MLP image encoder of mmcl_infonce_mlp with a linear head, cross-entropy.
  sl_min_norm:          minimum-norm interpolator of one-vs-rest +-1 targets, W = X^+ Y.
The trained learners train with the package's one loop, learners.fit, on minibatches (AdamW); all
seeds of a learner run in one jit-compiled call (vmap over seeds). Their rows leave final_loss
empty: the loop's full-data loss at the end is not computed here (an n_train x n_train InfoNCE).
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmcl_theory.config import ConfigError, as_floats, check_range
from mmcl_theory.digits import NUM_CLASSES, PROMPTS, TESTS, DigitsConfig, build_split
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT, Learner, apply_mlp, fit, init_mlp, learner_key, sl_min_norm
from mmcl_theory.losses import infonce_loss, l2_normalise
from mmcl_theory.theory import truncate_rank


@dataclasses.dataclass(frozen=True)
class DigitsLearnerSettings:
    """Optimisation and architecture of the digits learners.

    steps, batch_size, lr, weight_decay: minibatch AdamW, the same for every trained learner.
    width: hidden width of the MLP encoders; embed_dim: the embedding size (and the rank of the
    closed forms). temperature: the fixed InfoNCE temperature tau (logit scale 1/tau).
    """

    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 256
    embed_dim: int = 32
    temperature: float = 0.1

    def __post_init__(self):
        name = type(self).__name__
        as_floats(self, ("lr", "weight_decay", "temperature"))
        check_range(name, "steps", self.steps, 1, 10**6, integer=True)
        check_range(name, "batch_size", self.batch_size, 2, 60000, integer=True)
        check_range(name, "lr", self.lr, 0.0, 1.0, open_low=True)
        check_range(name, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_range(name, "width", self.width, 1, 65536, integer=True)
        check_range(name, "embed_dim", self.embed_dim, 1, 65536, integer=True)
        check_range(name, "temperature", self.temperature, 0.0, 100.0, open_low=True)


# --------------------------------------------------------------------------------------------
# Closed forms (numpy, float64)
# --------------------------------------------------------------------------------------------


def closed_form_scores(cross_covariance: np.ndarray, image_mean: np.ndarray, rank: int, x: np.ndarray,
                       prompts: np.ndarray) -> np.ndarray:
    """Zero-shot scores (x - xbar)^T A* t_k with A* the rank-`rank` part of S (rho = 1).

    cross_covariance S (D, V), image_mean (D,), x (..., m, D), prompts (10, V) -> (..., m, 10).
    """
    return (x - image_mean) @ (truncate_rank(cross_covariance, rank) @ prompts.T)


def sample_cross_covariance(x_image: np.ndarray, x_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S = (X_I - 1 xbar^T)^T X_T / (n - 1) and xbar: (n, D), (n, V) -> ((D, V), (D,)) float64."""
    x_image = np.asarray(x_image, np.float64)
    mean = x_image.mean(0)
    return (x_image - mean).T @ np.asarray(x_text, np.float64) / (x_image.shape[0] - 1), mean


def _fit_expected_closed_form(split, settings: DigitsLearnerSettings):
    """theory_mmcl: the exact expectations E[S], E[xbar] and the expected caption-mean prompts."""
    prompts = {"word": split.prompts["word"], "caption_mean": split.theory["caption_mean_prompts"]}
    return split.theory["cross_covariance"], split.theory["image_mean"], prompts, settings.embed_dim


def _fit_sampled_closed_form(split, settings: DigitsLearnerSettings):
    """mmcl_closed_form: the sample S, xbar and the split's prompts."""
    return (*sample_cross_covariance(split.train.x_image, split.train.x_text), split.prompts, settings.embed_dim)


def _score_closed_form(params, x: np.ndarray) -> dict:
    cross, mean, prompts, rank = params
    return {p: closed_form_scores(cross, mean, rank, x, np.asarray(prompts[p], np.float64)) for p in PROMPTS}


def _fit_sl_min_norm(split, settings: DigitsLearnerSettings) -> np.ndarray:
    return np.asarray(sl_min_norm(jnp.asarray(split.train.x_image), jnp.asarray(split.train.label), NUM_CLASSES))


def _score_sl_min_norm(w: np.ndarray, x: np.ndarray) -> dict:
    return {"": x @ w}


# --------------------------------------------------------------------------------------------
# Trained learners (jax)
# --------------------------------------------------------------------------------------------


def init_params(key: jax.Array, kind: str, hidden: bool, in_dim: int, text_dim: int,
                settings: DigitsLearnerSettings) -> dict:
    """Image encoder in_dim -> embed_dim (linear, or with `hidden` a ReLU MLP with one hidden layer of `width`),
    plus a text encoder text_dim -> embed_dim of the same kind (zero-shot) or a linear head embed_dim -> 10 (SL)."""
    k_image, k_other = jax.random.split(key)
    middle = (settings.width,) if hidden else ()
    params = {"image": init_mlp(k_image, (in_dim, *middle, settings.embed_dim))}
    if kind == ZERO_SHOT:
        params["text"] = init_mlp(k_other, (text_dim, *middle, settings.embed_dim))
    else:
        params["head"] = init_mlp(k_other, (settings.embed_dim, NUM_CLASSES))
    return params


def scores(params: dict, x: jax.Array, prompts: jax.Array) -> jax.Array:
    """Class scores: zero-shot <f(x)/|f(x)|, g(t_k)/|g(t_k)|> (prompts (P, 10, V) -> (P, m, 10)),
    or SL logits head(f(x)) (m, 10) with a leading axis of 1."""
    emb = apply_mlp(params["image"], x)
    if "text" in params:
        return jnp.einsum("me,pke->pmk", l2_normalise(emb), l2_normalise(apply_mlp(params["text"], prompts)))
    return apply_mlp(params["head"], emb)[None]


def loss(params: dict, x: jax.Array, x_text: jax.Array, label: jax.Array, temperature: float) -> jax.Array:
    """Symmetric InfoNCE on normalised (f(x), g(x_T)) with logit scale 1/tau (MMCL), or softmax
    cross-entropy of head(f(x)) against the label (SL); one minibatch."""
    if "text" in params:
        return infonce_loss(l2_normalise(apply_mlp(params["image"], x)), l2_normalise(apply_mlp(params["text"], x_text)),
                            jnp.asarray(1.0 / temperature))
    return optax.softmax_cross_entropy_with_integer_labels(scores(params, x, None)[0], label).mean()


def _fit_trained(kind: str, hidden: bool, key: jax.Array, x: jax.Array, x_text: jax.Array, label: jax.Array,
                 settings: DigitsLearnerSettings) -> dict:
    """Init from key, then `steps` minibatch AdamW steps of learners.fit: x (n, D), x_text (n, V), label (n,)."""
    k_init, k_steps = jax.random.split(key)
    params = init_params(k_init, kind, hidden, x.shape[1], x_text.shape[1], settings)
    optimiser = optax.adamw(settings.lr, weight_decay=settings.weight_decay)
    params, _ = fit(lambda p, b: loss(p, *b, settings.temperature), params, optimiser, settings.steps,
                    data=(x, x_text, label), batch_size=settings.batch_size, key=k_steps)
    return params


@functools.lru_cache(maxsize=16)
def compiled_train_eval(learner: Learner, settings: DigitsLearnerSettings):
    """jit(vmap over seeds) of: the learner's fit, then its test accuracy.

    Arguments with a leading seed axis S: keys (S,), x (S, n, D), x_text (S, n, V), label (S, n),
    test_x (S, 3, m, D), test_label (S, 3, m), prompts (S, P, 10, V). Returns accuracies (S, P, 3)
    (P = 1 for SL).
    """
    def one_seed(key, x, x_text, label, test_x, test_label, prompts):
        params = learner.fit(key, x, x_text, label, settings)
        predicted = jnp.argmax(jax.vmap(lambda t: learner.scorers(params, t, prompts))(test_x), axis=-1)  # (3, P, m)
        return jnp.mean(predicted == test_label[:, None, :], axis=-1).T  # (P, 3)

    return jax.jit(jax.vmap(one_seed))


# --------------------------------------------------------------------------------------------
# The learners, and one point
# --------------------------------------------------------------------------------------------
#
# learners.Learner records. Closed forms (trained False, numpy float64, one seed at a time):
#   fit(split: digits.DigitsSplit, settings) -> params;  scorers(params, x (3, m, D)) -> {prompt: (3, m, 10)}.
# Trained (jax, fitted and scored inside one compiled call mapped over seeds, compiled_train_eval):
#   fit(key, x (n, D), x_text (n, V), label (n,), settings) -> params;
#   scorers(params, x (m, D), prompts (P, 10, V)) -> (P, m, 10) (P = 1 for SL).

LEARNERS = (
    Learner("theory_mmcl", ZERO_SHOT, _fit_expected_closed_form, _score_closed_form, theory=True, linear=True),
    Learner("mmcl_closed_form", ZERO_SHOT, _fit_sampled_closed_form, _score_closed_form, linear=True),
    Learner("mmcl_infonce_linear", ZERO_SHOT, partial(_fit_trained, ZERO_SHOT, False), scores, trained=True),
    Learner("mmcl_infonce_mlp", ZERO_SHOT, partial(_fit_trained, ZERO_SHOT, True), scores, trained=True),
    Learner("sl_logistic", SUPERVISED, partial(_fit_trained, SUPERVISED, False), scores, trained=True),
    Learner("sl_mlp", SUPERVISED, partial(_fit_trained, SUPERVISED, True), scores, trained=True),
    Learner("sl_min_norm", SUPERVISED, _fit_sl_min_norm, _score_sl_min_norm, linear=True),
)


def _accuracy(point_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(3, m, 10), (3, m) -> (3,)"""
    return (np.argmax(point_scores, axis=-1) == labels).mean(-1)


def run_point(config: DigitsConfig, seeds: list[int], learners: tuple[Learner, ...],
              settings: DigitsLearnerSettings, route: str = "sampled") -> list[dict]:
    """Fits every learner on every seed of one config; the trained ones all seeds in one jit call. The model
    registry's runner for digits (models.evaluate_grid).

    Returns one row per (learner, prompt, test, seed) in the results contract: accuracy on n_test held-out
    images coloured per TESTS, n = n_train, 'prompt' 'word' or 'caption_mean' for the zero-shot learners and
    '' for SL, route 'theory' (theory_mmcl) or 'sampled'; the convergence columns are empty (module doc).
    """
    if settings.batch_size > config.n_train and any(learner.trained for learner in learners):
        raise ConfigError(f"DigitsLearnerSettings.batch_size = {settings.batch_size} is out of range: allowed "
                          f"at most DigitsConfig.n_train = {config.n_train}")
    seeds = [int(s) for s in seeds]
    splits = [build_split(config, s) for s in seeds]
    accuracy = {}  # (learner, prompt) -> (S, 3)
    for learner in learners:
        if learner.trained:
            stack = lambda get: jnp.asarray(np.stack([get(sp) for sp in splits]))
            prompts = stack(lambda sp: np.stack([sp.prompts[p] for p in PROMPTS]))
            acc = np.asarray(compiled_train_eval(learner, settings)(
                jnp.stack([learner_key(jax.random.key(s), learner.name) for s in seeds]), stack(lambda sp: sp.train.x_image),
                stack(lambda sp: sp.train.x_text), stack(lambda sp: sp.train.label),
                stack(lambda sp: sp.tests.x_image), stack(lambda sp: sp.tests.label), prompts))
            for j, prompt in enumerate(PROMPTS if learner.kind == ZERO_SHOT else ("",)):
                accuracy[learner, prompt] = acc[:, j]
            continue
        per_seed: dict = {}
        for sp in splits:
            for prompt, s in learner.scorers(learner.fit(sp, settings), sp.tests.x_image).items():
                per_seed.setdefault(prompt, []).append(_accuracy(s, sp.tests.label))
        accuracy.update({(learner, prompt): np.stack(values) for prompt, values in per_seed.items()})
    return [{"learner": learner.name, "test": test, "seed": seed, "n": config.n_train, "accuracy": float(acc[i, j]),
             "prompt": prompt, "route": "theory" if learner.theory else "sampled",
             "final_loss": "", "loss_floor": "", "converged": ""}
            for (learner, prompt), acc in accuracy.items() for i, seed in enumerate(seeds) for j, test in enumerate(TESTS)]
