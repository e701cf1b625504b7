"""Image augmentation for the self-supervised views of SLIP: random resized crop and horizontal flip.

Pure jax over a batch and a PRNG key, so it runs inside the jitted train step and the views of step s
are a function of (seed, s). SimCLR (Chen et al. 2020) and SLIP (Mu et al. 2022) also jitter colour
and blur; here only the geometric part is used.

Random resized crop (as torchvision's, without its retry loop): area fraction a ~ U(scale) of the
image, aspect ratio r = w / h log-uniform in ``ratio``; h = sqrt(a r^-1) S, w = sqrt(a r) S clipped to
[1, S]; top-left corner uniform over the positions where the box fits; the box is resampled
bilinearly (antialiased) to S x S. Flip: left-right with probability 1/2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SIMCLR_SCALE = (0.08, 1.0)
SIMCLR_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def crop_boxes(key: jax.Array, batch: int, size: int, scale: tuple[float, float] = SIMCLR_SCALE,
               ratio: tuple[float, float] = SIMCLR_RATIO) -> jax.Array:
    """float32 (batch, 4): (top, left, height, width) in pixels of random crops of a size x size image."""
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (batch,), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(k_ratio, (batch,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    h = jnp.clip(jnp.sqrt(area / r) * size, 1.0, size)
    w = jnp.clip(jnp.sqrt(area * r) * size, 1.0, size)
    top = jax.random.uniform(k_y, (batch,)) * (size - h)
    left = jax.random.uniform(k_x, (batch,)) * (size - w)
    return jnp.stack([top, left, h, w], axis=1)


def resized_crop(image: jax.Array, box: jax.Array) -> jax.Array:
    """One image (S, S, C) float -> the box (top, left, height, width) resampled to (S, S, C), bilinear."""
    size = image.shape[0]
    top, left, h, w = box[0], box[1], box[2], box[3]
    scale = jnp.stack([size / h, size / w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image, image.shape, (0, 1), scale, translation, "linear")


def random_resized_crop_flip(key: jax.Array, images: jax.Array, scale: tuple[float, float] = SIMCLR_SCALE,
                             ratio: tuple[float, float] = SIMCLR_RATIO) -> jax.Array:
    """images uint8 or float (B, S, S, C) -> float32 (B, S, S, C) on the same value scale (0..255 for
    uint8 input): a random resized crop of each, then a left-right flip with probability 1/2."""
    b, size = images.shape[0], images.shape[1]
    k_box, k_flip = jax.random.split(key)
    x = images.astype(jnp.float32)
    crops = jax.vmap(resized_crop)(x, crop_boxes(k_box, b, size, scale, ratio))
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    return jnp.where(flip[:, None, None, None], crops[:, :, ::-1], crops)


def two_views(key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent random_resized_crop_flip views of the same batch (SimCLR's positive pairs)."""
    k1, k2 = jax.random.split(key)
    return random_resized_crop_flip(k1, images), random_resized_crop_flip(k2, images)
