"""Training objectives of the real-data trainer, as pure functions over arrays.

Sources (the variants compared by Cui et al. 2022, "Democratizing contrastive language-image
pre-training: a CLIP benchmark of data, model, and supervision", and the supervised baseline of
Fang et al. 2022, "Data determines distributional robustness in contrastive language image
pre-training (CLIP)"):

- ``clip_loss``: symmetric InfoNCE over global embeddings (Radford et al. 2021, CLIP).
- ``softmax_cross_entropy`` / ``sigmoid_cross_entropy``: the supervised baseline, an image tower
  with a linear head trained on class labels (single-label softmax; multi-label sigmoid, e.g. COCO
  instance categories), as Fang et al. train a cross-entropy classifier on the same images.
- ``nt_xent_loss`` and ``slip_loss``: SimCLR's normalised-temperature cross-entropy over two
  augmented views, added to CLIP with a weight (Mu et al. 2022, SLIP).
- ``token_similarities`` and ``filip_loss``: FILIP's token-wise late interaction (Yao et al. 2022):
  each image patch takes its best-matching text token and each text token its best-matching patch;
  padding tokens are masked out.
- ``nearest_neighbours``, ``nn_supervision_loss``, ``enqueue``: DeCLIP's nearest-neighbour
  supervision (Li et al. 2022): the nearest neighbour, in a FIFO queue of earlier text embeddings,
  of each caption's embedding is an extra positive for its image, with its own weight.
- ``declip_loss`` (CLIP + nearest-neighbour term) and ``defilip_loss`` (FILIP + nearest-neighbour
  term). The full DeCLIP/DeFILIP of the benchmark also have SimSiam, masked-language-model and
  multi-view terms; here only the nearest-neighbour supervision is implemented (real_data/README.md).

The trainer (``clip.train``) runs the objective named by ``train.objective`` through
``step_objective``: one function that calls the model's forward passes it needs (token outputs for
FILIP, the linear head for the supervised baseline, two augmented views for SLIP) inside one
``model.apply`` and returns the loss; DeCLIP's queue lives in the train state
(``initial_objective_state``, updated by ``enqueue`` after each step's loss).

Losses are computed in float32 (bf16 inputs are upcast, float64 kept); "normalised" means unit L2
norm along the last axis; every loss is a mean over the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from mmcl_theory.clip import augment, models
from mmcl_theory.losses import infonce_loss, l2_normalise, linear_contrastive_loss

@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective of the trainer (module doc): what it needs from the data and the model.

    labels: trains on class labels, not captions (the supervised baseline: a linear head, no text tower);
    tokens: scores token-wise similarities (FILIP family: needs text tokens besides EOT);
    queue: keeps a FIFO queue of text embeddings in the train state (DeCLIP family);
    ssl_views: adds a SimCLR term on two augmented views of each image (SLIP);
    loss_choice: its contrastive term may be the theory's linear loss instead of InfoNCE (train.loss; CLIP only).
    """

    name: str
    labels: bool = False
    tokens: bool = False
    queue: bool = False
    ssl_views: bool = False
    loss_choice: bool = False


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("clip", loss_choice=True), Objective("supervised", labels=True), Objective("slip", ssl_views=True),
    Objective("filip", tokens=True), Objective("declip", queue=True), Objective("defilip", tokens=True, queue=True))}
"""train.objective: the objectives of the trainer by name; ``step_objective`` builds each."""


def get_objective(name: str) -> Objective:
    """The Objective record of ``train.objective``; an unknown name is a ValueError listing the known ones."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective = {name!r}: must be one of {list(OBJECTIVES)}")
    return OBJECTIVES[name]


def _at_least_f32(x: jax.Array) -> jax.Array:
    """x in float32, or float64 when it already is (bf16 compute upcast; float64 kept for checks)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def clip_loss(emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """CLIP's symmetric InfoNCE (Radford et al. 2021).

    emb_image, emb_text: (B, D) normalised, row i of each a matched pair; logit_scale: scalar 1/tau.
    With S = logit_scale * emb_image emb_text^T,
    loss = -(1/2B) sum_i [log softmax_j(S_ij)|_{j=i} + log softmax_j(S_ji)|_{j=i}].
    """
    return infonce_loss(emb_image, emb_text, logit_scale)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Single-label cross-entropy of a linear head: mean_i [logsumexp_c z_ic - z_{i,y_i}].

    logits: (B, C) float; labels: (B,) int in [0, C).
    """
    log_p = jax.nn.log_softmax(_at_least_f32(logits), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=-1))


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Multi-label binary cross-entropy, mean over examples and classes:
    (1/BC) sum_ic [softplus(z_ic) - y_ic z_ic] = -(1/BC) sum_ic [y log s(z) + (1 - y) log(1 - s(z))].

    logits: (B, C) float; targets: (B, C) in {0, 1} (any float dtype or bool).
    """
    z = _at_least_f32(logits)
    return jnp.mean(jax.nn.softplus(z) - _at_least_f32(targets) * z)


def nt_xent_loss(view_1: jax.Array, view_2: jax.Array, temperature: float = 0.1) -> jax.Array:
    """SimCLR's NT-Xent over two views (Chen et al. 2020; the self-supervised term of SLIP).

    view_1, view_2: (B, D) projections of two augmentations of the same B images (normalised here).
    Stack z = [view_1; view_2] (2B, D), s_kl = <z_k, z_l> / temperature; the positive of k is its
    other view p(k) = (k + B) mod 2B, and the anchor itself is excluded from the denominator:
    loss = (1/2B) sum_k [-s_{k,p(k)} + log sum_{l != k} exp(s_kl)].
    """
    b = view_1.shape[0]
    z = l2_normalise(jnp.concatenate([view_1, view_2], axis=0))
    sim = (z @ z.T) / temperature
    sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
    positive = (jnp.arange(2 * b) + b) % (2 * b)
    log_p = jax.nn.log_softmax(sim, axis=1)
    return -jnp.mean(log_p[jnp.arange(2 * b), positive])


def slip_loss(emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array, ssl_view_1: jax.Array,
              ssl_view_2: jax.Array, ssl_weight: float, ssl_temperature: float = 0.1) -> jax.Array:
    """SLIP (Mu et al. 2022): clip_loss(emb_image, emb_text) + ssl_weight * nt_xent_loss(views).

    emb_image, emb_text: (B, D) normalised; ssl_view_1, ssl_view_2: (B, P) SimCLR projections of two
    augmented views of the same images; SLIP's defaults are ssl_weight 1 and temperature 0.1.
    """
    return (clip_loss(emb_image, emb_text, logit_scale)
            + ssl_weight * nt_xent_loss(ssl_view_1, ssl_view_2, ssl_temperature))


def token_similarities(image_tokens: jax.Array, text_tokens: jax.Array,
                       text_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FILIP's token-wise late-interaction similarities (Yao et al. 2022).

    image_tokens: (Bi, P, D) normalised patch embeddings; text_tokens: (Bt, T, D) normalised token
    embeddings; text_mask: (Bt, T) bool, True at real tokens (padding False; every row needs at least
    one True). With s_ijpt = <image_tokens_ip, text_tokens_jt>:
      image_to_text_ij = (1/P) sum_p max_{t: mask_jt} s_ijpt        (each patch's best token)
      text_to_image_ij = sum_{t: mask_jt} max_p s_ijpt / sum_t mask_jt (each real token's best patch)
    Returns (image_to_text, text_to_image), both (Bi, Bt). Memory is O(Bi Bt P T).
    """
    mask = text_mask.astype(bool)
    sim = jnp.einsum("ipd,jtd->ijpt", _at_least_f32(image_tokens), _at_least_f32(text_tokens))
    best_token = jnp.max(jnp.where(mask[None, :, None, :], sim, -jnp.inf), axis=3)  # (Bi, Bt, P)
    image_to_text = jnp.mean(best_token, axis=2)
    best_patch = jnp.max(sim, axis=2)  # (Bi, Bt, T)
    counts = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(jnp.float32)
    text_to_image = jnp.sum(jnp.where(mask[None], best_patch, 0.0), axis=2) / counts[None]
    return image_to_text, text_to_image


def filip_loss(image_tokens: jax.Array, text_tokens: jax.Array, text_mask: jax.Array,
               logit_scale: jax.Array) -> jax.Array:
    """FILIP's contrastive loss (Yao et al. 2022) on token-wise similarities.

    Shapes as in :func:`token_similarities` with Bi = Bt = B matched pairs. With
    A = logit_scale * image_to_text and R = logit_scale * text_to_image (both (B, B), rows images):
    loss = -(1/2B) sum_i [log softmax_j(A_ij)|_{j=i} + log softmax_j(R_ji)|_{j=i}],
    the image-to-text term over the image-side similarity, the text-to-image term over the text side.
    """
    image_to_text, text_to_image = token_similarities(image_tokens, text_tokens, text_mask)
    diag = jnp.arange(image_to_text.shape[0])
    log_p_image = jax.nn.log_softmax(logit_scale * image_to_text, axis=1)
    log_p_text = jax.nn.log_softmax(logit_scale * text_to_image, axis=0)
    return -0.5 * (jnp.mean(log_p_image[diag, diag]) + jnp.mean(log_p_text[diag, diag]))


def nearest_neighbours(emb_text: jax.Array, queue: jax.Array, queue_valid: jax.Array) -> jax.Array:
    """The nearest neighbour of each text embedding among the valid queue entries (DeCLIP).

    emb_text: (B, D) normalised; queue: (Q, D) normalised earlier text embeddings; queue_valid: (Q,)
    bool (at least one True). Returns queue[argmax_{q valid} <emb_text_b, queue_q>], (B, D), with no
    gradient (the queue is a constant of the step, as in DeCLIP).
    """
    sim = _at_least_f32(emb_text) @ _at_least_f32(queue).T
    nearest = jnp.argmax(jnp.where(queue_valid[None, :], sim, -jnp.inf), axis=1)
    return jax.lax.stop_gradient(queue[nearest])


def nn_supervision_loss(emb_image: jax.Array, nn_text: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """DeCLIP's nearest-neighbour supervision (Li et al. 2022): image i against the neighbours.

    emb_image: (B, D) normalised; nn_text: (B, D) normalised nearest neighbours of the B captions.
    With N = logit_scale * emb_image nn_text^T: loss = -(1/B) sum_i log softmax_j(N_ij)|_{j=i}
    (image to neighbour text only, as in DeCLIP).
    """
    logits = logit_scale * (_at_least_f32(emb_image) @ _at_least_f32(nn_text).T)
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))


def queued_nn_loss(emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array,
                   queue: jax.Array, queue_count: jax.Array) -> jax.Array:
    """nn_supervision_loss against the nearest neighbours in the first ``queue_count`` rows of
    ``queue`` (Q, D); 0 while the queue is empty (the first step). emb_*: (B, D) normalised."""
    valid = jnp.arange(queue.shape[0]) < queue_count
    neighbours = nearest_neighbours(emb_text, queue, valid)
    return jnp.where(queue_count > 0, nn_supervision_loss(emb_image, neighbours, logit_scale), 0.0)


def enqueue(queue: jax.Array, queue_count: jax.Array, queue_next: jax.Array,
            emb_text: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """FIFO update of the text queue: write the B rows of emb_text at rows (queue_next + b) mod Q.

    queue: (Q, D) with Q >= B; queue_count: int32 scalar, rows filled so far (<= Q); queue_next:
    int32 scalar, the next row to write. Returns (queue, min(queue_count + B, Q), (queue_next + B) mod Q);
    emb_text enters without gradient. Valid rows are always the first queue_count ones.
    """
    size, b = queue.shape[0], emb_text.shape[0]
    rows = (queue_next + jnp.arange(b)) % size
    queue = queue.at[rows].set(jax.lax.stop_gradient(emb_text).astype(queue.dtype))
    return queue, jnp.minimum(queue_count + b, size), (queue_next + b) % size


def declip_loss(emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array, queue: jax.Array,
                queue_count: jax.Array, nn_weight: float) -> jax.Array:
    """DeCLIP-style objective: clip_loss + nn_weight * queued_nn_loss (shapes as there)."""
    return (clip_loss(emb_image, emb_text, logit_scale)
            + nn_weight * queued_nn_loss(emb_image, emb_text, logit_scale, queue, queue_count))


def defilip_loss(image_tokens: jax.Array, text_tokens: jax.Array, text_mask: jax.Array,
                 emb_image: jax.Array, emb_text: jax.Array, logit_scale: jax.Array, queue: jax.Array,
                 queue_count: jax.Array, nn_weight: float) -> jax.Array:
    """DeFILIP-style objective (Cui et al. 2022): filip_loss on the tokens + nn_weight *
    queued_nn_loss on the global embeddings (the queue holds global text embeddings)."""
    return (filip_loss(image_tokens, text_tokens, text_mask, logit_scale)
            + nn_weight * queued_nn_loss(emb_image, emb_text, logit_scale, queue, queue_count))


# ----------------------------------------------------------------------------------------------
# The objectives inside the train step
# ----------------------------------------------------------------------------------------------
StepObjective = Callable[..., tuple[jax.Array, jax.Array, dict]]
"""(module: models.CLIP (bound), batch, objective_state, key) -> (loss, logit_scale, objective_state).

Called through ``model.apply(variables, batch, objective_state, key, method=objective, ...)`` so that
every forward pass (several for SLIP) runs in one apply and a ResNet's batch statistics update.
batch: {'images': uint8 (B, S, S, 3), 'tokens': int32 (B, L)[, 'labels': int (B,) or {0,1} (B, C)]};
objective_state: {} or the DeCLIP queue {'queue': (Q, D), 'count': int32 (), 'next': int32 ()};
key: the PRNG key of this step (SLIP's augmentations)."""


def model_options(objective: Objective, num_classes: int = 0, ssl_dim: int = 256) -> dict:
    """Keyword options of models.create_model that ``objective`` needs: the supervised baseline has
    a linear head over num_classes and no text tower; SLIP a SimCLR MLP of output ssl_dim."""
    if objective.labels:
        return {"num_classes": num_classes, "text_tower": False}
    if objective.ssl_views:
        return {"ssl_dim": ssl_dim}
    return {}


def initial_objective_state(objective: Objective, queue_size: int, embed_dim: int) -> dict:
    """{} or, for DeCLIP/DeFILIP, an empty FIFO text queue: zeros (queue_size, embed_dim), count 0, next 0."""
    if not objective.queue:
        return {}
    return {"queue": jnp.zeros((queue_size, embed_dim), jnp.float32), "count": jnp.zeros((), jnp.int32),
            "next": jnp.zeros((), jnp.int32)}


def step_objective(objective: Objective, *, contrastive_loss: str = "infonce", label_kind: str = "softmax",
                   ssl_weight: float = 1.0, ssl_temperature: float = 0.1, nn_weight: float = 0.5) -> StepObjective:
    """The train-step objective of name ``objective`` (OBJECTIVES; see StepObjective):

    clip: clip_loss (or the theory's linear contrastive loss with contrastive_loss = 'linear');
    supervised: softmax_cross_entropy (label_kind 'softmax', labels (B,)) or sigmoid_cross_entropy
    ('sigmoid', labels (B, C)) of the linear head; slip: slip_loss with two augment.two_views views;
    filip: filip_loss; declip / defilip: declip_loss / defilip_loss against the queue, which is then
    updated with this batch's text embeddings.
    """
    def run(module: models.CLIP, batch: dict, state: dict, key: jax.Array):
        x = models.preprocess(batch["images"], module.dtype)
        scale = module.temperature_scale()
        if objective.labels:
            logits = module.classify(x, train=True)
            ce = softmax_cross_entropy if label_kind == "softmax" else sigmoid_cross_entropy
            return ce(logits, batch["labels"]), scale, state
        if objective.tokens:
            emb_image, image_tokens = module.encode_image_tokens(x, train=True)
            emb_text, text_tokens, mask = module.encode_text_tokens(batch["tokens"])
        else:
            emb_image, emb_text, scale = module(x, batch["tokens"], train=True)
        if objective.ssl_views:
            view_1, view_2 = augment.two_views(key, batch["images"])
            project = lambda v: module.ssl_project(models.preprocess(v, module.dtype), train=True)
            loss = slip_loss(emb_image, emb_text, scale, project(view_1), project(view_2), ssl_weight, ssl_temperature)
            return loss, scale, state
        if not objective.queue:
            if objective.tokens:
                return filip_loss(image_tokens, text_tokens, mask, scale), scale, state
            if objective.loss_choice and contrastive_loss == "linear":
                return linear_contrastive_loss(emb_image, emb_text), scale, state
            return clip_loss(emb_image, emb_text, scale), scale, state
        if objective.tokens:
            loss = defilip_loss(image_tokens, text_tokens, mask, emb_image, emb_text, scale, state["queue"],
                                state["count"], nn_weight)
        else:
            loss = declip_loss(emb_image, emb_text, scale, state["queue"], state["count"], nn_weight)
        queue, count, nxt = enqueue(state["queue"], state["count"], state["next"], emb_text)
        return loss, scale, {"queue": queue, "count": count, "next": nxt}

    return run
