"""Model M3: the semi-synthetic coloured-digits experiment (SPEC section 6).

Real digit images carry the *core* feature (the digit, with its natural within-class variation).
A low-variance *spurious* feature is added on top: a colour (the background tint of the whole
image, or a small corner patch) drawn from a fixed 10-colour palette. In training the colour
index a equals the class y with probability p, otherwise it is uniform over the other nine
colours; at test it is aligned (a = y), independent (a uniform) or flipped (a uniform over the
colours != y).

Captions are bags of words over a fixed vocabulary: the digit word, plus per-image details
measured from the pixels (stroke thickness, slant, size; each binned into within-class tertiles
and included independently with probability r, the caption richness), plus optionally the colour
word. Detail words annotate the per-image variation of the core around its class, the word-level
analogue of caption richness (SPEC section 1). Unlike M1, where the annotated value sits on the
very text coordinate the prompt reads (z_T,core = z_core), they are tokens of their own, shared
across classes; the digit-word prompt does not contain them.

Learners. The two trained ones share the MLP image backbone and optax AdamW minibatch training:
  mmcl_infonce_digits: image MLP + bag-of-words text encoder, symmetric InfoNCE
                       (losses.infonce_loss) on L2-normalised embeddings; zero-shot prediction
                       argmax_k <f(x), g(prompt_k)> with prompt_k = the digit word alone.
  sl_digits:           image MLP + linear 10-way head, softmax cross-entropy.
The two linear ones are the theory's learners (SPEC section 2) applied to raw pixels and tokens:
  mmcl_linear_digits:  closed-form minimiser of the linear contrastive loss (learners.mmcl_closed_form),
                       A* = top-embed_dim SVD of S = (X_I - mean)^T X_T / (n-1);
                       zero-shot argmax_k (x - mean)^T A* t_k.
  sl_min_norm_digits:  minimum-norm fit of one-vs-rest +-1 targets (learners.sl_min_norm), W = X^+ Y
                       (the max-margin direction when every point is a support vector).
A sweep point runs all seeds of a learner in one jit-compiled call (vmap over seeds; lax.scan
over training steps).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
from numbers import Integral, Real
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmcl_theory.learners import apply_mlp, init_mlp, mmcl_closed_form, sl_min_norm
from mmcl_theory.losses import infonce_loss

# --------------------------------------------------------------------------------------------
# Vocabulary and palette
# --------------------------------------------------------------------------------------------
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DETAILS = ("thickness", "slant", "size")
DETAIL_WORDS = {  # within-class tertile 0, 1, 2 of each measurement
    "thickness": ("thin", "regular", "thick"),
    "slant": ("left-slanted", "upright", "right-slanted"),
    "size": ("small", "medium", "large"),
}
COLOUR_WORDS = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple", "white", "grey")
PALETTE = np.array(  # RGB in [0, 1], one row per colour word
    [
        [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0],
        [1.0, 0.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5],
    ],
    dtype=np.float32,
)
VOCAB = DIGIT_WORDS + tuple(w for d in DETAILS for w in DETAIL_WORDS[d]) + COLOUR_WORDS
TOKEN = {w: i for i, w in enumerate(VOCAB)}
NUM_CLASSES = 10

LEARNERS = ("mmcl_infonce_digits", "sl_digits", "mmcl_linear_digits", "sl_min_norm_digits")
TESTS = ("aligned", "independent", "flipped")
SPURIOUS_KINDS = ("tint", "patch")

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """One point of the digits experiment.

    p: train probability that the colour agrees with the class, in [0, 1].
    r: caption richness, probability that each per-image detail word is included, in [0, 1].
    colour_in_caption: whether the caption names the colour (as M1's caption annotates z_spu).
      Off by default: with digit-word-only prompts, captions that always carry a colour word
      make the one-word prompt unlike any training caption for the bag-of-words text encoder
      (measured: zero-shot aligned accuracy falls below flipped; see README).
    spurious: 'tint' (the background of the whole image takes the colour) or 'patch' (a small
      top-left square takes it; see colour_images).
    spurious_strength: colour amplitude in (0, 1]; pixel = ink + (1 - ink) * strength * colour.
      The default 0.1 gives the tint a class-mean signal in pixel space of the same order as the
      digit's (M1's premise: equal class means, the spurious one of low variance); at 0.5 the
      tint dominates the pixel norm and every learner leans on it (see README).
    spurious_sigma: per-image std of the colour jitter (low variance), in [0, 1].
    dataset: 'sklearn' (embedded 8x8 digits, 1,797 images) or a directory holding MNIST idx files.
    n_train, n_test: per-seed disjoint random train/test subsets of the dataset.
    steps, batch_size, lr, weight_decay: AdamW minibatch training, the same for both learners.
    width: hidden width of the image MLP; embed_dim: shared embedding (and SL backbone output) size.
    temperature: fixed InfoNCE temperature tau (logit scale 1/tau).
    """

    p: float = 0.9
    r: float = 1.0
    colour_in_caption: bool = False
    spurious: str = "tint"
    spurious_strength: float = 0.1
    spurious_sigma: float = 0.01
    dataset: str = "sklearn"
    n_train: int = 1200
    n_test: int = 500
    steps: int = 600
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 256
    embed_dim: int = 32
    temperature: float = 0.1

    def __post_init__(self):
        def check(field, lo, hi, lo_open=False, integer=False):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, Real):
                if isinstance(value, (bool, str)):
                    raise ValueError(f"DigitsConfig.{field}={value!r}: expected a number in [{lo}, {hi}]")
                return  # traced or array value: validated by whoever built it
            ok = (lo < value if lo_open else lo <= value) and value <= hi
            if integer and not isinstance(value, Integral):
                ok = False
            if not ok:
                bracket = "(" if lo_open else "["
                kind = "an integer" if integer else "a number"
                raise ValueError(f"DigitsConfig.{field}={value!r}: expected {kind} in {bracket}{lo}, {hi}]")

        check("p", 0.0, 1.0)
        check("r", 0.0, 1.0)
        check("spurious_strength", 0.0, 1.0, lo_open=True)
        check("spurious_sigma", 0.0, 1.0)
        check("n_train", 2, 60000, integer=True)
        check("n_test", 1, 60000, integer=True)
        check("steps", 1, 10**6, integer=True)
        check("batch_size", 2, 60000, integer=True)
        check("lr", 0.0, 1.0, lo_open=True)
        check("weight_decay", 0.0, 1.0)
        check("width", 1, 65536, integer=True)
        check("embed_dim", 1, 65536, integer=True)
        check("temperature", 0.0, 100.0, lo_open=True)
        if not isinstance(self.colour_in_caption, bool):
            raise ValueError(f"DigitsConfig.colour_in_caption={self.colour_in_caption!r}: expected true or false")
        if self.spurious not in SPURIOUS_KINDS:
            raise ValueError(f"DigitsConfig.spurious={self.spurious!r}: expected one of {SPURIOUS_KINDS}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"DigitsConfig.dataset={self.dataset!r}: expected 'sklearn' or a directory of MNIST idx files")
        if isinstance(self.batch_size, int) and isinstance(self.n_train, int) and self.batch_size > self.n_train:
            raise ValueError(f"DigitsConfig.batch_size={self.batch_size}: expected at most n_train={self.n_train}")


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


class DigitsDataError(FileNotFoundError, ValueError):
    """A digit data file is missing or malformed; str(error) is one line naming the file."""


_IDX_MAGIC = {"images": (2051, 3), "labels": (2049, 1)}


def read_idx(path: str | Path, kind: str) -> np.ndarray:
    """Reads one idx file (raw or gzip) of unsigned bytes.

    kind: 'images' (magic 2051, shape (n, rows, cols)) or 'labels' (magic 2049, shape (n,)).
    Header: 4-byte big-endian magic = 0x0000 0x08 ndim, then ndim big-endian uint32 sizes, then
    prod(sizes) bytes. Raises DigitsDataError naming the file on any mismatch.
    """
    path = Path(path)
    magic, ndim = _IDX_MAGIC[kind]
    expected = f"an MNIST idx {kind} file (magic {magic}, {ndim}-d unsigned bytes, raw or gzip)"
    if not path.is_file():
        raise DigitsDataError(f"{path}: file not found; expected {expected}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DigitsDataError(f"{path}: corrupt gzip ({err}); expected {expected}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DigitsDataError(f"{path}: only {len(raw)} bytes; expected {expected}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DigitsDataError(f"{path}: magic number {found}; expected {expected}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DigitsDataError(f"{path}: {len(raw) - header} data bytes for shape {shape}; expected {expected}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, kind: str) -> Path:
    stem = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}[kind]
    for prefix in ("train", "t10k"):
        for suffix in ("", ".gz"):
            candidate = directory / f"{prefix}-{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise DigitsDataError(f"{directory / ('t10k-' + stem + '.gz')}: file not found; expected MNIST idx {kind} "
                          f"(train-{stem}[.gz] or t10k-{stem}[.gz]) in {directory}")


def load_mnist(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from a directory of idx files (train-* preferred, else t10k-*; raw or .gz).

    Returns images (n, 28, 28) float32 in [0, 1] and labels (n,) int32 in 0..9.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise DigitsDataError(f"{directory}: not a directory; expected a directory holding MNIST idx files "
                              "(t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])")
    images_path, labels_path = _find_idx(directory, "images"), _find_idx(directory, "labels")
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DigitsDataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in "
                              f"{images_path.name}; expected equal counts")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DigitsDataError(f"{labels_path}: label {labels.max()} found; expected digit labels 0..9")
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded digits: images (1797, 8, 8) float32 in [0, 1], labels (1797,) int32."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int32)


@functools.lru_cache(maxsize=4)
def load_digit_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Grey images (n, h, w) in [0, 1] and labels (n,) for DigitsConfig.dataset."""
    return load_sklearn_digits() if dataset == "sklearn" else load_mnist(dataset)


# --------------------------------------------------------------------------------------------
# Pixel measurements (pure; images (..., h, w) with ink in [0, 1])
# --------------------------------------------------------------------------------------------


def ink_mass(images: np.ndarray) -> np.ndarray:
    """Total ink m = sum_ij x_ij; (..., h, w) -> (...)."""
    return images.sum(axis=(-2, -1))


def boundary_length(images: np.ndarray) -> np.ndarray:
    """Total variation with zero padding, sum of |x_ij - x_i'j'| over 4-neighbour pairs; (..., h, w) -> (...).

    For a binary shape it is the perimeter in pixel edges (a filled h x w box has 2(h + w)).
    """
    pad = [(0, 0)] * (images.ndim - 2) + [(1, 1), (1, 1)]
    x = np.pad(images, pad)
    return np.abs(np.diff(x, axis=-1)).sum(axis=(-2, -1)) + np.abs(np.diff(x, axis=-2)).sum(axis=(-2, -1))


def stroke_thickness(images: np.ndarray) -> np.ndarray:
    """Stroke width t = 2 m / perimeter (ink mass over half the boundary); (..., h, w) -> (...).

    A long stroke of length L and width w has m = wL, perimeter ~ 2L, so t ~ w; a filled
    h x w box gives hw / (h + w). Blank images give 0.
    """
    perimeter = boundary_length(images)
    return np.where(perimeter > 0, 2.0 * ink_mass(images) / np.maximum(perimeter, 1e-12), 0.0)


def _moments(images):
    h, w = images.shape[-2:]
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    m = np.maximum(ink_mass(images), 1e-12)[..., None, None]
    weights = images / m
    row_mean = (weights * rows).sum(axis=(-2, -1))[..., None, None]
    col_mean = (weights * cols).sum(axis=(-2, -1))[..., None, None]
    var_row = (weights * (rows - row_mean) ** 2).sum(axis=(-2, -1))
    cov = (weights * (rows - row_mean) * (cols - col_mean)).sum(axis=(-2, -1))
    return var_row, cov


def slant(images: np.ndarray) -> np.ndarray:
    """Shear of the ink, s = -Cov(col, row) / Var(row) under the ink distribution; (..., h, w) -> (...).

    Rows grow downwards, so s > 0 when the top of the stroke leans right ('/' gives +1, '|' gives 0,
    '\\' gives -1).
    """
    var_row, cov = _moments(images)
    return np.where(var_row > 0, -cov / np.maximum(var_row, 1e-12), 0.0)


def digit_size(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Height of the bounding box of pixels with x >= threshold, as a fraction of the image height.

    (..., h, w) -> (...); 0 for an image without such pixels.
    """
    h = images.shape[-2]
    inked_rows = (images >= threshold).any(axis=-1)
    first = np.argmax(inked_rows, axis=-1)
    last = h - 1 - np.argmax(inked_rows[..., ::-1], axis=-1)
    return np.where(inked_rows.any(axis=-1), (last - first + 1) / h, 0.0)


MEASUREMENTS = {"thickness": stroke_thickness, "slant": slant, "size": digit_size}


def within_class_tertiles(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class 1/3 and 2/3 quantiles of a measurement: values (n,), labels (n,) -> (10, 2)."""
    edges = np.zeros((NUM_CLASSES, 2))
    for k in range(NUM_CLASSES):
        v = values[labels == k]
        if v.size:
            edges[k] = np.quantile(v, [1 / 3, 2 / 3])
    return edges


def tertile_bins(values: np.ndarray, labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin 0/1/2 of each value against its class's tertile edges: (n,), (n,), (10, 2) -> (n,) int."""
    return (values > edges[labels, 0]).astype(np.int32) + (values > edges[labels, 1]).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Spurious colour and captions
# --------------------------------------------------------------------------------------------


def spurious_colours(labels: np.ndarray, agreement: str | float, rng: np.random.Generator) -> np.ndarray:
    """Colour index a per image: (n,) -> (n,) int.

    agreement: a probability q (a = y with probability q, else uniform over the other 9 colours),
    or a test name: 'aligned' (q = 1), 'independent' (a uniform over all 10), 'flipped' (q = 0).
    """
    n = labels.shape[0]
    if agreement == "independent":
        return rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    q = {"aligned": 1.0, "flipped": 0.0}.get(agreement, agreement)
    other = (labels + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
    return np.where(rng.random(n) < q, labels, other).astype(np.int32)


def colour_images(grey: np.ndarray, colours: np.ndarray, config: DigitsConfig, rng: np.random.Generator) -> np.ndarray:
    """Adds the spurious colour: grey (n, h, w), colours (n,) -> RGB (n, h, w, 3) in [0, 1].

    c_i = strength * PALETTE[a_i] + sigma * N(0, I_3), clipped to [0, 1]. 'tint': every pixel
    becomes x + (1 - x) c_i (white ink on a tinted background). 'patch': the ink stays grey and a
    top-left square of side max(2, round(3h/28)) pixels (3 on MNIST, 2 on 8x8) is set to c_i.
    """
    n, h, w = grey.shape
    c = config.spurious_strength * PALETTE[colours] + config.spurious_sigma * rng.standard_normal((n, 3))
    c = np.clip(c, 0.0, 1.0).astype(np.float32)[:, None, None, :]
    x = grey[..., None]
    if config.spurious == "tint":
        return x + (1.0 - x) * c
    side = max(2, round(3 * h / 28))
    rgb = np.repeat(x, 3, axis=-1)
    rgb[:, :side, :side, :] = c
    return rgb


def caption_tokens(labels: np.ndarray, bins: np.ndarray, colours: np.ndarray, r: float,
                   colour_in_caption: bool, rng: np.random.Generator) -> np.ndarray:
    """Bag-of-words captions: (n,), (n, 3), (n,) -> multi-hot (n, len(VOCAB)) float32.

    Each caption holds the digit word; each detail word DETAIL_WORDS[d][bins[:, d]] independently
    with probability r; and the colour word COLOUR_WORDS[colours] if colour_in_caption.
    """
    n = labels.shape[0]
    tokens = np.zeros((n, len(VOCAB)), np.float32)
    rows = np.arange(n)
    tokens[rows, labels] = 1.0
    for j, d in enumerate(DETAILS):
        word_ids = np.array([TOKEN[w] for w in DETAIL_WORDS[d]])[bins[:, j]]
        tokens[rows, word_ids] = (rng.random(n) < r).astype(np.float32)
    if colour_in_caption:
        tokens[rows, TOKEN[COLOUR_WORDS[0]] + colours] = 1.0
    return tokens


def caption_text(tokens: np.ndarray) -> str:
    """The words of one multi-hot caption (len(VOCAB),) in vocabulary order, space-separated."""
    return " ".join(VOCAB[i] for i in np.flatnonzero(tokens))


@functools.lru_cache(maxsize=4)
def _measured(dataset: str) -> dict[str, np.ndarray]:
    grey, _ = load_digit_images(dataset)
    return {d: MEASUREMENTS[d](grey) for d in DETAILS}


def build_split(config: DigitsConfig, seed: int) -> dict[str, np.ndarray]:
    """One seed's data: disjoint random train/test subsets, coloured, with train captions.

    Returns train_x (n_train, h*w*3), train_tokens (n_train, V), train_y, train_colour (n_train,),
    test_x (3, n_test, h*w*3) and test_y, test_colour (3, n_test) for TESTS in order.
    Detail tertiles are estimated on the train subset, per class.
    """
    grey, labels = load_digit_images(config.dataset)
    if config.n_train + config.n_test > labels.shape[0]:
        raise ValueError(f"DigitsConfig.n_train + n_test = {config.n_train + config.n_test}: expected at most "
                         f"{labels.shape[0]}, the number of images in dataset {config.dataset!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.shape[0])
    train, test = order[: config.n_train], order[config.n_train : config.n_train + config.n_test]
    measured = _measured(config.dataset)
    edges = {d: within_class_tertiles(measured[d][train], labels[train]) for d in DETAILS}
    bins = np.stack([tertile_bins(measured[d][train], labels[train], edges[d]) for d in DETAILS], axis=1)
    train_colour = spurious_colours(labels[train], config.p, rng)
    tokens = caption_tokens(labels[train], bins, train_colour, config.r, config.colour_in_caption, rng)
    test_colour = np.stack([spurious_colours(labels[test], t, rng) for t in TESTS])
    flat = lambda rgb: rgb.reshape(rgb.shape[0], -1)
    return {
        "train_x": flat(colour_images(grey[train], train_colour, config, rng)),
        "train_tokens": tokens,
        "train_y": labels[train],
        "train_colour": train_colour,
        "test_x": np.stack([flat(colour_images(grey[test], a, config, rng)) for a in test_colour]),
        "test_y": np.broadcast_to(labels[test], test_colour.shape).copy(),
        "test_colour": test_colour,
    }


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _normalise(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)


def init_params(key: jax.Array, learner: str, in_dim: int, width: int, embed_dim: int) -> dict:
    """Backbone f: in_dim -> width -> width -> embed_dim (ReLU MLP), shared by both learners.

    mmcl_infonce_digits adds word embeddings E (V, embed_dim), g(t) = t E (bag of words);
    sl_digits adds a linear head embed_dim -> 10.
    """
    k_image, k_other = jax.random.split(key)
    params = {"image": init_mlp(k_image, (in_dim, width, width, embed_dim))}
    if learner == "mmcl_infonce_digits":
        params["text"] = jax.random.normal(k_other, (len(VOCAB), embed_dim)) / jnp.sqrt(embed_dim)
    else:
        params["head"] = init_mlp(k_other, (embed_dim, NUM_CLASSES))
    return params


def prompt_tokens() -> np.ndarray:
    """Zero-shot prompts: the caption naming digit k alone, one-hot (10, len(VOCAB))."""
    return np.eye(NUM_CLASSES, len(VOCAB), dtype=np.float32)


def predict(params: dict, learner: str, x: jax.Array) -> jax.Array:
    """Class scores (n, 10): zero-shot <f(x)/|f(x)|, g(t_k)/|g(t_k)|> for MMCL, logits for SL."""
    emb = apply_mlp(params["image"], x)
    if learner == "mmcl_infonce_digits":
        prompts = _normalise(jnp.asarray(prompt_tokens()) @ params["text"])
        return _normalise(emb) @ prompts.T
    return apply_mlp(params["head"], emb)


def loss(params: dict, learner: str, x: jax.Array, tokens: jax.Array, y: jax.Array, temperature: float) -> jax.Array:
    """Minibatch loss: symmetric InfoNCE on normalised (f(x), g(t)) with logit scale 1/tau (MMCL),
    or softmax cross-entropy of head(f(x)) against y (SL)."""
    if learner == "mmcl_infonce_digits":
        emb_image = _normalise(apply_mlp(params["image"], x))
        emb_text = _normalise(tokens @ params["text"])
        return infonce_loss(emb_image, emb_text, jnp.asarray(1.0 / temperature))
    return optax.softmax_cross_entropy_with_integer_labels(predict(params, learner, x), y).mean()


# --------------------------------------------------------------------------------------------
# Training and evaluation: one compiled call per (learner, shapes, optimiser settings)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def compiled_train_eval(learner: str, in_dim: int, steps: int, batch_size: int, lr: float,
                        weight_decay: float, width: int, embed_dim: int, temperature: float):
    """jit(vmap over seeds) of: init, `steps` AdamW minibatch steps (lax.scan), test accuracy.

    Arguments of the returned function, with a leading seed axis S:
    keys (S,) PRNG keys, train_x (S, n, D), train_tokens (S, n, V), train_y (S, n),
    test_x (S, 3, m, D), test_y (S, 3, m). Returns accuracies (S, 3) and final losses (S,).
    """
    optimiser = optax.adamw(lr, weight_decay=weight_decay)

    def one_seed(key, train_x, train_tokens, train_y, test_x, test_y):
        k_init, k_steps = jax.random.split(key)
        params = init_params(k_init, learner, in_dim, width, embed_dim)
        n = train_x.shape[0]

        def step(carry, k):
            params, state = carry
            idx = jax.random.choice(k, n, (batch_size,), replace=False)
            value, grads = jax.value_and_grad(loss)(params, learner, train_x[idx], train_tokens[idx],
                                                    train_y[idx], temperature)
            updates, state = optimiser.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, _), losses = jax.lax.scan(step, (params, optimiser.init(params)), jax.random.split(k_steps, steps))
        scores = jax.vmap(lambda x: predict(params, learner, x))(test_x)
        accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == test_y, axis=-1)
        return accuracy, losses[-1]

    return jax.jit(jax.vmap(one_seed))


def linear_scores(learner: str, embed_dim: int, train_x: jax.Array, train_tokens: jax.Array,
                  train_y: jax.Array, x: jax.Array) -> jax.Array:
    """Class scores (m, 10) of the closed-form linear learners trained on (n, D), (n, V), (n,).

    mmcl_linear_digits: (x - mean_I)^T A* t_k, A* = W_I^T W_T from learners.mmcl_closed_form at
    rank embed_dim (rho = 1; zero-shot is invariant to rho), t_k the one-hot digit-word prompt.
    sl_min_norm_digits: x^T W with W = learners.sl_min_norm (pinv(X_I) (2 onehot(y) - 1)).
    """
    if learner == "mmcl_linear_digits":
        w_image, w_text = mmcl_closed_form(train_x, train_tokens, rank=embed_dim)
        return ((x - train_x.mean(0)) @ w_image.T) @ (w_text @ jnp.asarray(prompt_tokens()).T)
    return x @ sl_min_norm(train_x, train_y, NUM_CLASSES)


@functools.lru_cache(maxsize=8)
def compiled_linear_eval(learner: str, embed_dim: int):
    """jit(vmap over seeds) of the closed-form fit and test accuracy; same arguments as
    compiled_train_eval's function without keys. Returns accuracies (S, 3)."""

    def one_seed(train_x, train_tokens, train_y, test_x, test_y):
        scores = jax.vmap(lambda x: linear_scores(learner, embed_dim, train_x, train_tokens, train_y, x))(test_x)
        return jnp.mean(jnp.argmax(scores, axis=-1) == test_y, axis=-1)

    return jax.jit(jax.vmap(one_seed))


def run_point(config: DigitsConfig, seeds: list[int], learners: tuple[str, ...] = LEARNERS) -> list[dict]:
    """Fits every learner on every seed of one config; all seeds of a learner in one jit call.

    Returns one row per (learner, test, seed): {'learner', 'test', 'seed', 'n', 'accuracy'},
    n = n_train, accuracy on n_test held-out images coloured per TESTS.
    """
    unknown = [name for name in learners if name not in LEARNERS]
    if unknown:
        raise ValueError(f"learners={unknown}: expected names from {LEARNERS}")
    seeds = [int(s) for s in seeds]
    splits = [build_split(config, s) for s in seeds]
    data = tuple(jnp.asarray(np.stack([sp[k] for sp in splits]))
                 for k in ("train_x", "train_tokens", "train_y", "test_x", "test_y"))
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    rows = []
    for learner in learners:
        if learner in ("mmcl_linear_digits", "sl_min_norm_digits"):
            accuracy = np.asarray(compiled_linear_eval(learner, config.embed_dim)(*data))
        else:
            fn = compiled_train_eval(learner, data[0].shape[-1], config.steps, config.batch_size,
                                     float(config.lr), float(config.weight_decay), config.width, config.embed_dim,
                                     float(config.temperature))
            accuracy = np.asarray(fn(keys, *data)[0])
        rows += [
            {"learner": learner, "test": test, "seed": seed, "n": config.n_train, "accuracy": float(accuracy[i, j])}
            for i, seed in enumerate(seeds) for j, test in enumerate(TESTS)
        ]
    return rows


@dataclasses.dataclass(frozen=True)
class DigitsLearnerSettings:
    """Learner settings of the digits model (its optimisation fields still live in DigitsConfig)."""


def evaluate_grid(configs, seeds, learners, settings, route, on_point=None) -> list[list[dict]]:
    """The model registry's runner: run_point for each config, rows in the sweep's row shape."""
    out = []
    for i, config in enumerate(configs):
        rows = [{**r, "prompt": "" if r["learner"].startswith("sl") else "digit_word", "route": "sampled",
                 "final_loss": "", "loss_floor": "", "converged": ""}  # convergence not reported for digits yet
                for r in run_point(config, seeds, learners)]
        out.append(rows)
        if on_point:
            on_point(i, rows)
    return out
