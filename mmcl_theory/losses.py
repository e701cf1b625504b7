"""Contrastive losses shared by the synthetic learners, the digits experiment and the CLIP track."""

import jax
import jax.numpy as jnp


def l2_normalise(x: jax.Array) -> jax.Array:
    """x / max(||x||_2, 1e-12) over the last axis, in float32 or wider: (..., p) -> (..., p)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def linear_contrastive_loss(emb_image: jax.Array, emb_text: jax.Array) -> jax.Array:
    """Linearised contrastive loss without its regulariser (docs/learners.md#linear-loss).

    emb_image, emb_text: (n, p) paired embeddings, s_ij = <emb_image_i, emb_text_j>.
    Returns -(1/n) sum_i s_ii + 1/(n(n-1)) sum_{i != j} s_ij; every negative pair counts,
    same-class pairs included (intra-class contrasting).
    """
    n = emb_image.shape[0]
    sim = emb_image @ emb_text.T
    diag = jnp.trace(sim)
    off = jnp.sum(emb_image.sum(0) * emb_text.sum(0)) - diag
    return -diag / n + off / (n * (n - 1))


def infonce_loss(emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """Symmetric InfoNCE (CLIP) loss.

    emb_image, emb_text: (n, p) paired embeddings (normalise them first for CLIP);
    logit_scale: scalar, the inverse temperature 1/tau. logits = logit_scale * emb_image emb_text^T,
    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2 averaged over the batch.
    """
    logits = logit_scale * (emb_image @ emb_text.T)
    log_p_image = jax.nn.log_softmax(logits, axis=1)
    log_p_text = jax.nn.log_softmax(logits, axis=0)
    return -0.5 * (jnp.mean(jnp.diagonal(log_p_image)) + jnp.mean(jnp.diagonal(log_p_text)))
