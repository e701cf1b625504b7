"""Zero-shot and SL accuracy per test distribution, one whole sweep point, and embedding spread.

Zero-shot prediction (SPEC section 2): argmax_k <W_I x, W_T t_k> = argmax_k x^T A t_k with the
observed prompts t_k = D_T t_latent_k. SL prediction: argmax of its logits.
`evaluate_point` is the unit a sweep jit-compiles and vmaps over seeds and sweep values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import learners as L
from .datamodel import TESTS, Config, dictionaries, prompt_latents, sample_dataset

CLOSED_FORM_LEARNERS = ("mmcl_closed_form", "sl_min_norm")
TRAINED_LEARNERS = ("mmcl_linear_gd", "mmcl_infonce_linear", "mmcl_infonce_mlp", "sl_logistic", "sl_mlp")
LEARNERS = CLOSED_FORM_LEARNERS + TRAINED_LEARNERS
THEORY_LEARNERS = ("theory_mmcl", "bayes_core")


def accuracy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Fraction of rows whose argmax equals the label: logits (n, K), label (n,)."""
    return jnp.mean(jnp.argmax(logits, axis=1) == label)


def zero_shot_logits(w_image: jax.Array, w_text: jax.Array, x_image: jax.Array, prompts: jax.Array) -> jax.Array:
    """<W_I x, W_T t_k> = x^T A t_k: W_I (p, d_I), W_T (p, d_T), x_image (n, d_I), prompts (K, d_T) -> (n, K).

    Evaluated as x (W_I^T (W_T t)), so a full-rank closed form (p = n) costs O(n d K), not O(n d p).
    """
    return x_image @ (w_image.T @ (w_text @ prompts.T))


def embedding_spread(w_image: jax.Array, x_image: jax.Array, label: jax.Array, direction: jax.Array,
                     num_classes: int) -> jax.Array:
    """Within-class standard deviation of image embeddings W_I x projected on a unit embedding
    direction, averaged over classes (SPEC claim C3, non-collapse). w_image (p, d), x_image (n, d),
    label (n,), direction (p,) -> scalar."""
    proj = (x_image @ w_image.T) @ (direction / jnp.linalg.norm(direction))
    mask = jax.nn.one_hot(label, num_classes)  # (n, K)
    count = mask.sum(0)
    mean = proj @ mask / count
    var = ((proj[:, None] - mean) ** 2 * mask).sum(0) / count
    return jnp.mean(jnp.sqrt(var))


def evaluate_point(key: jax.Array, cfg: Config, settings: L.LearnerSettings,
                   learners: tuple[str, ...] = LEARNERS) -> dict[str, jax.Array]:
    """Train every requested learner on one sample of cfg and test it on aligned/independent/flipped.

    Returns {learner: accuracies (3,)} in TESTS order. A pure function of (key, cfg): jit it with
    cfg's float fields traced, and vmap it over keys (seeds) and stacked configs (sweep values).
    """
    unknown = set(learners) - set(LEARNERS)
    if unknown:
        raise ValueError(f"unknown learner(s) {sorted(unknown)}: allowed {list(LEARNERS)}")
    k_dict, k_train, k_test, k_fit = jax.random.split(key, 4)
    dicts = dictionaries(k_dict, cfg)
    train = sample_dataset(k_train, cfg, dicts, cfg.n)
    tests = [sample_dataset(k, cfg, dicts, cfg.n_test, t) for k, t in zip(jax.random.split(k_test, 3), TESTS)]
    prompts = prompt_latents(cfg) @ dicts[1].T  # (K, d): t_k = D_T e_core(k), noise-free
    K = cfg.num_classes
    fit_keys = dict(zip(TRAINED_LEARNERS, jax.random.split(k_fit, len(TRAINED_LEARNERS))))

    def scored(logits_fn):
        return jnp.stack([accuracy(logits_fn(t.x_image), t.label) for t in tests])

    out = {}
    for name in learners:
        if name == "mmcl_closed_form":
            w = L.mmcl_closed_form(train.x_image, train.x_text, settings.rank, settings.rho)
            out[name] = scored(lambda x, w=w: zero_shot_logits(*w, x, prompts))
        elif name == "mmcl_linear_gd":
            w = L.mmcl_linear_gd(fit_keys[name], train.x_image, train.x_text, settings.embed_dim,
                                 settings.rho, settings.gd_steps, settings.gd_lr)
            out[name] = scored(lambda x, w=w: zero_shot_logits(*w, x, prompts))
        elif name in ("mmcl_infonce_linear", "mmcl_infonce_mlp"):
            params = L.mmcl_infonce(fit_keys[name], train.x_image, train.x_text, settings,
                                    hidden=name.endswith("mlp"))
            out[name] = scored(lambda x, p=params: L.infonce_zero_shot_logits(p, x, prompts))
        elif name == "sl_min_norm":
            w = L.sl_min_norm(train.x_image, train.label, K)
            out[name] = scored(lambda x, w=w: x @ w)
        else:  # sl_logistic, sl_mlp
            params = L.sl_cross_entropy(fit_keys[name], train.x_image, train.label, K, settings,
                                        hidden=name == "sl_mlp")
            out[name] = scored(lambda x, p=params: L.apply_mlp(p, x))
    return out
