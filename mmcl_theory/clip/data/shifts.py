"""Distribution shifts built from real images: pure functions over uint8 (N, H, W, 3) batches.

Corruptions follow ImageNet-C (Hendrycks & Dietterich 2019) at severities 1..5; spatial parameters
(blur sigma) are given for 224 px and scaled by H / 224, so a 64 px Tiny ImageNet image gets the
same relative blur. ``greyscale`` and ``edges`` have one level; their severity is validated but unused.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

SHIFTS: tuple[str, ...] = (
    "gaussian_noise", "gaussian_blur", "contrast", "jpeg", "pixelate", "greyscale", "edges",
)

NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)   # fraction of 255
BLUR_SIGMA_224 = (1.0, 2.0, 3.0, 4.0, 6.0)   # pixels at 224 px
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
JPEG_QUALITY = (25, 18, 15, 10, 7)
PIXELATE_FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_noise(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """x + N(0, (255 s)^2) per pixel and channel, s = NOISE_STD[severity-1]; clipped to [0, 255]."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(images.shape, dtype=np.float32) * (NOISE_STD[severity - 1] * 255.0)
    return _to_uint8(images.astype(np.float32) + noise)


def gaussian_blur(images: np.ndarray, severity: int) -> np.ndarray:
    """Isotropic Gaussian blur over H and W, sigma = BLUR_SIGMA_224[severity-1] * H / 224."""
    sigma = BLUR_SIGMA_224[severity - 1] * images.shape[1] / 224.0
    return _to_uint8(ndimage.gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0), mode="reflect"))


def contrast(images: np.ndarray, severity: int) -> np.ndarray:
    """(x - m) c + m with m the per-image mean over pixels and channels, c = CONTRAST_FACTOR[severity-1]."""
    x = images.astype(np.float32)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((x - m) * CONTRAST_FACTOR[severity - 1] + m)


def jpeg(images: np.ndarray, severity: int) -> np.ndarray:
    """Re-encode each image as JPEG at quality JPEG_QUALITY[severity-1] and decode it again."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=JPEG_QUALITY[severity - 1])
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def pixelate(images: np.ndarray, severity: int) -> np.ndarray:
    """Box-downsample by PIXELATE_FACTOR[severity-1], then nearest-neighbour upsample to the input size."""
    n, h, w, _ = images.shape
    f = PIXELATE_FACTOR[severity - 1]
    small = (max(1, int(w * f)), max(1, int(h * f)))
    out = np.empty_like(images)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(im).resize(small, Image.BOX).resize((w, h), Image.NEAREST))
    return out


def greyscale(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma Y = 0.299 R + 0.587 G + 0.114 B, repeated over the 3 channels."""
    y = _to_uint8(images.astype(np.float32) @ _LUMA)
    return np.repeat(y[..., None], 3, axis=-1)


def edges(images: np.ndarray) -> np.ndarray:
    """Edge-map sketch: dark lines on white. Sobel gradient magnitude g of the luma (after a
    sigma = H/224 blur), normalised by each image's 99th percentile: out = 255 (1 - min(g / p99, 1))."""
    y = images.astype(np.float32) @ _LUMA
    y = ndimage.gaussian_filter(y, sigma=(0, images.shape[1] / 224.0, images.shape[2] / 224.0))
    g = np.hypot(ndimage.sobel(y, axis=1), ndimage.sobel(y, axis=2))
    p99 = np.percentile(g.reshape(len(g), -1), 99, axis=1).reshape(-1, 1, 1)
    ink = np.minimum(g / np.maximum(p99, 1e-6), 1.0)
    return np.repeat(_to_uint8(255.0 * (1.0 - ink))[..., None], 3, axis=-1)


def apply_shift(images: np.ndarray, shift: str, severity: int = 3, seed: int = 0) -> np.ndarray:
    """Apply one shift to uint8 (N, H, W, 3) images -> uint8 (N, H, W, 3). Deterministic given seed."""
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {SHIFTS}, got {shift!r}")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be in 1..5, got {severity}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    severity = int(severity)
    if shift == "gaussian_noise":
        return gaussian_noise(images, severity, seed)
    if shift == "gaussian_blur":
        return gaussian_blur(images, severity)
    if shift == "contrast":
        return contrast(images, severity)
    if shift == "jpeg":
        return jpeg(images, severity)
    if shift == "pixelate":
        return pixelate(images, severity)
    if shift == "greyscale":
        return greyscale(images)
    return edges(images)
