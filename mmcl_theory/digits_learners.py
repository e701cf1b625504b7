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
The trained learners train with the package's one loop, learners.fit, on minibatches (AdamW); the grid runs
all seeds of a learner in one jit-compiled call (compile mode 'vmap', grid.py), and the closed forms in NumPy
float64 per seed (`eager`). The trained learners' rows leave final_loss empty: the loop's full-data loss at the
end is not computed here (an n_train x n_train InfoNCE).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmcl_theory.config import ConfigError, as_floats, check_range
from mmcl_theory.digits import NUM_CLASSES, PROMPTS, DigitsConfig, build_split
from mmcl_theory.grid import Sample, Tests
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT, Learner, apply_mlp, fit, init_mlp, sl_min_norm
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


# every field static: the grid's compiled programs take the settings as an argument (grid.py)
jax.tree_util.register_dataclass(DigitsLearnerSettings, data_fields=[],
                                 meta_fields=[f.name for f in dataclasses.fields(DigitsLearnerSettings)])


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


class DigitsTrain(NamedTuple):
    """One seed's training sample: x_image (n, D), x_text (n, V), label (n,), and `expected`: theory_mmcl's exact
    expectations over the colour and caption draws given the images (digits.DigitsSplit.theory):
    cross_covariance E[S] (D, V), image_mean E[xbar] (D,), prompts (2, 10, V) ('word', expected 'caption_mean')."""

    x_image: np.ndarray
    x_text: np.ndarray
    label: np.ndarray
    expected: dict


def sample(config: DigitsConfig, seed: int) -> Sample:
    """One seed's train, tests and prompts (digits.build_split, NumPy): prompts (2, 10, V) in PROMPTS order."""
    split = build_split(config, seed)
    expected = {"cross_covariance": split.theory["cross_covariance"], "image_mean": split.theory["image_mean"],
                "prompts": np.stack([split.prompts["word"], split.theory["caption_mean_prompts"]])}
    train = DigitsTrain(split.train.x_image, split.train.x_text, split.train.label, expected)
    return Sample(train, Tests(split.tests.x_image, split.tests.label), np.stack([split.prompts[p] for p in PROMPTS]),
                  jax.random.key(seed))


def check(config: DigitsConfig, learners, settings: DigitsLearnerSettings) -> None:
    """A minibatch larger than the training set is a ConfigError (trained learners only)."""
    if settings.batch_size > config.n_train and any(learner.trained for learner in learners):
        raise ConfigError(f"DigitsLearnerSettings.batch_size = {settings.batch_size} is out of range: allowed "
                          f"at most DigitsConfig.n_train = {config.n_train}")


def memory(config: DigitsConfig, settings: DigitsLearnerSettings, fitted, route: str) -> tuple[int, str]:
    """(bytes, how) of one seed's arrays: the n_train training and 3 x n_test test images of D = 28 x 28 x 3 values
    at most (MNIST; sklearn's digits are 8 x 8), float32, twice (the sample and its stacked copy)."""
    pixels = 28 * 28 * 3
    return 2 * 4 * pixels * (config.n_train + 3 * config.n_test), ("2 copies of n_train + 3 n_test images of at most "
                                                                    f"{pixels} float32 (n_train = {config.n_train}, "
                                                                    f"n_test = {config.n_test})")


def _fit_expected_closed_form(key, train: DigitsTrain, settings: DigitsLearnerSettings):
    """theory_mmcl: the exact expectations E[S], E[xbar] and the expected prompts (its own, not the sampled ones)."""
    e = train.expected
    return (e["cross_covariance"], e["image_mean"], e["prompts"], settings.embed_dim), {}


def _fit_sampled_closed_form(key, train: DigitsTrain, settings: DigitsLearnerSettings):
    """mmcl_closed_form: the sample S and xbar; scored with the sample's prompts."""
    return (*sample_cross_covariance(train.x_image, train.x_text), None, settings.embed_dim), {}


def _score_closed_form(params, x: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """(m, D), prompts (2, 10, V) -> (2, m, 10) float64 (theory_mmcl scores with its own expected prompts)."""
    cross, mean, own, rank = params
    prompts = prompts if own is None else own
    return np.stack([closed_form_scores(cross, mean, rank, x, np.asarray(t, np.float64)) for t in prompts])


def _fit_sl_min_norm(key, train: DigitsTrain, settings: DigitsLearnerSettings):
    return np.asarray(sl_min_norm(jnp.asarray(train.x_image), jnp.asarray(train.label), NUM_CLASSES)), {}


def _score_sl_min_norm(w: np.ndarray, x: np.ndarray, prompts) -> np.ndarray:
    return (x @ w)[None]


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


def _fit_trained(kind: str, hidden: bool, key: jax.Array, train: DigitsTrain, settings: DigitsLearnerSettings):
    """Init from key, then `steps` minibatch AdamW steps of learners.fit on train's x_image (n, D), x_text (n, V) and
    label (n,); stats {} (module doc)."""
    k_init, k_steps = jax.random.split(key)
    params = init_params(k_init, kind, hidden, train.x_image.shape[1], train.x_text.shape[1], settings)
    optimiser = optax.adamw(settings.lr, weight_decay=settings.weight_decay)
    params, _ = fit(lambda p, b: loss(p, *b, settings.temperature), params, optimiser, settings.steps,
                    data=(train.x_image, train.x_text, train.label), batch_size=settings.batch_size, key=k_steps)
    return params, {}


# --------------------------------------------------------------------------------------------
# The learners
# --------------------------------------------------------------------------------------------
#
# learners.Learner records, fit(key, train: DigitsTrain, settings) -> (params, stats) and score(params, x (m, D),
# prompts (2, 10, V)) -> (P, m, 10). The closed forms are NumPy float64 (`eager`); the trained learners are traced.

LEARNERS = (
    Learner("theory_mmcl", ZERO_SHOT, _fit_expected_closed_form, _score_closed_form, theory=True, linear=True,
            eager=True),
    Learner("mmcl_closed_form", ZERO_SHOT, _fit_sampled_closed_form, _score_closed_form, linear=True, eager=True),
    Learner("mmcl_infonce_linear", ZERO_SHOT, partial(_fit_trained, ZERO_SHOT, False), scores, trained=True),
    Learner("mmcl_infonce_mlp", ZERO_SHOT, partial(_fit_trained, ZERO_SHOT, True), scores, trained=True),
    Learner("sl_logistic", SUPERVISED, partial(_fit_trained, SUPERVISED, False), scores, trained=True),
    Learner("sl_mlp", SUPERVISED, partial(_fit_trained, SUPERVISED, True), scores, trained=True),
    Learner("sl_min_norm", SUPERVISED, _fit_sl_min_norm, _score_sl_min_norm, linear=True, eager=True),
)
