"""Model M3, the data side: real digits, a spurious colour, and captions whose details reach the prompt.

Real digit images carry the *core* feature (the digit, with its natural within-class variation).
A low-variance *spurious* feature is added on top: a colour (the background tint of the whole
image, or a small corner patch) from a fixed 10-colour palette. In training the colour index a
equals the class y with probability p, otherwise it is uniform over the other nine colours; at
test it is aligned (a = y), independent (a uniform) or flipped (a uniform over the colours != y).
The calibrated regime (figures/digits_calibration.png) is the one where the same-backbone SL
fails under this shift.

Captions. The text side is a feature vector x_T per image, in one of two designs (`caption`):

  'class_weight' (default): the caption's class coordinate carries the per-image value of the
      core, the way M1's caption carries z_T,core = z_core (docs/models.md, M1). With v_i the
      image's measured detail (`detail`, a within-class z-score) and b_i ~ Bernoulli(r),
          x_T,i = (1 + kappa b_i v_i) e_{y_i}  [ + e_{10 + a_i} if colour_in_caption ],
      kappa = detail_scale. In words: "a seven" (b = 0) or "a bold seven" weighted by how bold
      it is (b = 1). detail = 'class_axis' measures the image's coordinate along its class axis,
      v_i = z-score within class y_i of <g_i - mu_{y_i}, mu_{y_i} - m> (g the grey pixels,
      mu_k the class means and m the overall mean on the train subset): how strongly the image
      shows its digit. detail = 'thickness' uses the stroke width instead (a per-image detail
      that lies off the class axis). The zero-shot prompt "seven" is e_7: it reads the very
      coordinate the details annotate.
  'tokens': the earlier bag of words: the digit word, class-agnostic detail words (thickness,
      slant, size tertiles within class, each with probability r) and the colour word. The
      prompt e_k never reads a detail token, so this design is flat in r by construction (the
      null design; see expected_cross_covariance).

Controls: shuffle_details permutes the detail values across the train images of each class
(same values, no per-image information); colour_in_caption adds the colour word.

The linear theory on this design (derivation; docs/models.md takes it from here). Closed-form MMCL
(rank >= V, rho = 1) scores a test image x for class k by s_k(x) = (x - xbar)^T S t_k, with
S = (1/(n-1)) sum_i (x_i - xbar) x_T,i^T. With the bare-word prompt t_k = e_k,
    S e_k = (1/(n-1)) sum_{i: y_i = k} (x_i - xbar) (1 + kappa b_i v_i),
and in expectation over the annotation draws b_i ~ Bernoulli(r), using sum_{i: y_i = k} v_i = 0
(v is a z-score within class on the train subset),
    E_b[S e_k] = (n_k/(n-1)) [ (mu_k - xbar) + kappa r C_k ],   C_k = (1/n_k) sum_{i: y_i = k} (x_i - mu_k) v_i,
mu_k the class-k mean image. The first term is the prototype (class-mean) direction: it holds the
colour's class mean, s (10p - 1)/9 (PALETTE_k - mean palette) on the background, beside the digit's
mean. The second is new with r. Within a class the colour is drawn independently of the digit, so
over the colour draws C_k has no colour part for the patch, and for the tint only the shading of
the digit's own covariance, C_k = Cov_k(g, v) (1 - E[c | k]) per channel. With the class-axis
detail, Cov_k(g, v) = Sigma_k u_k / sd_k (u_k = mu_k - m, sd_k^2 = u_k^T Sigma_k u_k): the
within-class covariance along the class axis, a colour-free class template. So as r grows the
prompt direction tilts from the colour to the digit, as M1's S e_core = (1 + r sigma_core^2,
2p - 1) does. It is not flat in r whenever C_k separates the classes; measured (figures/digits.png,
tint 0.5, p 0.99, kappa 2): flipped 0.26 -> 0.38 (sklearn), 0.10 -> 0.17 (MNIST) from r = 0 to 1.
Null design ('tokens'): S e_k = Cov(x, 1[y = k]) (n/(n-1)) does not involve r at all, and the
class-mean caption prompt adds r P(word | k) ~ r/3 (within-class tertiles) of each detail
column to class k's prompt, nearly the same vector for every k: flat to the tertile counts. Shuffled details: C_k becomes a sum of (x_i - mu_k) times
unrelated values, O(1/sqrt(n_k)): flat up to sampling.
expected_cross_covariance computes E[S] over the colour and caption draws exactly (given the train
images); it is the learner 'theory_mmcl' of mmcl_theory.digits_learners.
"""

from __future__ import annotations

import dataclasses
import os
import functools
import gzip
from pathlib import Path

import numpy as np
from scipy.stats import norm

from mmcl_theory.config import ConfigError, as_floats, check_choice, check_range
from mmcl_theory.datamodel import TESTS, Dataset

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
SPURIOUS_KINDS = ("tint", "patch")
CAPTIONS = ("class_weight", "tokens")
CLASS_WEIGHT_DETAILS = ("class_axis", "thickness")
PROMPTS = ("word", "caption_mean")

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DigitsConfig:
    """The data of one point of the digits experiment (optimisation lives in DigitsLearnerSettings).

    p: train probability that the colour agrees with the class, in [0, 1].
    r: caption richness, probability that the per-image detail is annotated, in [0, 1].
    caption: 'class_weight' (the detail weights the class token) or 'tokens' (class-agnostic
      detail words; the null design). See the module docstring.
    detail: the per-image value on the class token, 'class_axis' or 'thickness' (class_weight only).
    detail_scale: kappa in x_T = (1 + kappa b v) e_y, in [0, 10].
    shuffle_details: control; permute the detail values across the train images of each class.
    colour_in_caption: whether the caption names the colour (as M1's caption annotates z_spu).
    spurious: 'tint' (the background of the whole image) or 'patch' (a top-left square).
    spurious_strength: colour amplitude s in (0, 1]; the colour is c = s PALETTE[a] + sigma N(0, I_3).
    spurious_sigma: per-image s.d. sigma of the colour jitter (low variance), in [0, 1].
    dataset: 'sklearn' (embedded 8x8 digits, 1,797 images), 'mnist_test' (the 10k real MNIST test images
      under $MMCL_SHARED_DATA or ../shared/data, split into train and test) or a directory of MNIST idx files.
    n_train, n_test: per-seed disjoint random train/test subsets of the dataset.
    """

    p: float = 0.99
    r: float = 1.0
    caption: str = "class_weight"
    detail: str = "class_axis"
    detail_scale: float = 2.0
    shuffle_details: bool = False
    colour_in_caption: bool = False
    spurious: str = "tint"
    spurious_strength: float = 0.5
    spurious_sigma: float = 0.01
    dataset: str = "sklearn"
    n_train: int = 1200
    n_test: int = 500

    def __post_init__(self):
        name = type(self).__name__
        as_floats(self, ("p", "r", "detail_scale", "spurious_strength", "spurious_sigma"))
        check_range(name, "p", self.p, 0.0, 1.0)
        check_range(name, "r", self.r, 0.0, 1.0)
        check_range(name, "detail_scale", self.detail_scale, 0.0, 10.0)
        check_range(name, "spurious_strength", self.spurious_strength, 0.0, 1.0, open_low=True)
        check_range(name, "spurious_sigma", self.spurious_sigma, 0.0, 1.0)
        check_range(name, "n_train", self.n_train, 20, 60000, integer=True)
        check_range(name, "n_test", self.n_test, 1, 60000, integer=True)
        check_choice(name, "caption", self.caption, CAPTIONS)
        check_choice(name, "detail", self.detail, CLASS_WEIGHT_DETAILS)
        check_choice(name, "spurious", self.spurious, SPURIOUS_KINDS)
        for flag in ("shuffle_details", "colour_in_caption"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{name}.{flag} = {getattr(self, flag)!r} is not allowed: true or false")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"{name}.dataset = {self.dataset!r} is not allowed: 'sklearn' or a directory of MNIST idx files")


# --------------------------------------------------------------------------------------------
# Loaders and pixel measurements (pure; images (..., h, w) with ink in [0, 1])
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
def shared_data_root() -> Path:
    """$MMCL_SHARED_DATA, else ../shared/data beside the working directory (the layout of the README)."""
    return Path(os.environ.get("MMCL_SHARED_DATA") or Path.cwd().parent / "shared" / "data")


MNIST_SETS = ("mnist_train", "mnist_test")  # the 60k MNIST training and 10k test images under shared_data_root()


def dataset_directory(dataset: str) -> str:
    """'sklearn' stays; 'mnist_train' and 'mnist_test' are the MNIST sets under shared_data_root(); else a path."""
    return str(shared_data_root() / dataset) if dataset in MNIST_SETS else dataset


def load_digit_images(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Grey images (n, h, w) in [0, 1] and labels (n,) for DigitsConfig.dataset."""
    return load_sklearn_digits() if dataset == "sklearn" else load_mnist(dataset_directory(dataset))


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


def within_class_zscore(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(v - mean_k) / sd_k within each class k = labels: (n,), (n,) -> (n,) float64; 0 where sd_k = 0."""
    z = np.zeros(values.shape, np.float64)
    for k in np.unique(labels):
        members = labels == k
        sd = values[members].std()
        z[members] = (values[members] - values[members].mean()) / sd if sd > 0 else 0.0
    return z


def class_axis_coordinate(grey: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How strongly each image shows its digit: <g_i - mu_{y_i}, mu_{y_i} - m>, (n, h, w), (n,) -> (n,).

    mu_k is the mean grey image of class k and m the mean of all images, both over the given images.
    """
    flat = grey.reshape(grey.shape[0], -1).astype(np.float64)
    overall = flat.mean(0)
    means = np.stack([flat[labels == k].mean(0) if (labels == k).any() else overall for k in range(NUM_CLASSES)])
    return np.einsum("nd,nd->n", flat - means[labels], means[labels] - overall)


def detail_values(grey: np.ndarray, labels: np.ndarray, detail: str) -> np.ndarray:
    """The per-image detail v on the class token: a within-class z-score, (n, h, w), (n,) -> (n,)."""
    raw = class_axis_coordinate(grey, labels) if detail == "class_axis" else MEASUREMENTS[detail](grey)
    return within_class_zscore(raw, labels)


def shuffle_within_class(values: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute rows of values (n, ...) among the images of each class: the control without per-image information."""
    out = values.copy()
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        out[members] = values[rng.permutation(members)]
    return out


# --------------------------------------------------------------------------------------------
# Spurious colour
# --------------------------------------------------------------------------------------------


def colour_probabilities(labels: np.ndarray, agreement: str | float) -> np.ndarray:
    """P(a = j | y) per image: (n,) -> (n, 10). agreement: q or a test name (see spurious_colours)."""
    if agreement == "independent":
        return np.full((labels.shape[0], NUM_CLASSES), 1.0 / NUM_CLASSES)
    q = {"aligned": 1.0, "flipped": 0.0}.get(agreement, agreement)
    onehot = np.eye(NUM_CLASSES)[labels]
    return q * onehot + (1.0 - q) * (1.0 - onehot) / (NUM_CLASSES - 1)


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


def paint(grey: np.ndarray, colour: np.ndarray, spurious: str) -> np.ndarray:
    """Draw colour values into the images: grey (n, h, w), colour (n, 3) -> RGB (n, h, w, 3).

    'tint': every pixel becomes x + (1 - x) c (white ink on a tinted background). 'patch': the ink
    stays grey and a top-left square of side max(2, round(3h/28)) pixels (3 on MNIST, 2 on 8x8)
    is set to c. Both are affine in c, so E[paint(g, c)] = paint(g, E[c]).
    """
    h = grey.shape[1]
    c = colour.astype(np.float32)[:, None, None, :]
    x = grey[..., None]
    if spurious == "tint":
        return x + (1.0 - x) * c
    side = max(2, round(3 * h / 28))
    rgb = np.repeat(x, 3, axis=-1)
    rgb[:, :side, :side, :] = c
    return rgb


def colour_images(grey: np.ndarray, colours: np.ndarray, config: DigitsConfig, rng: np.random.Generator) -> np.ndarray:
    """Adds the spurious colour: grey (n, h, w), colour indices (n,) -> RGB (n, h, w, 3) in [0, 1].

    c_i = clip(strength * PALETTE[a_i] + sigma * N(0, I_3), 0, 1), painted as in `paint`.
    """
    n = grey.shape[0]
    c = config.spurious_strength * PALETTE[colours] + config.spurious_sigma * rng.standard_normal((n, 3))
    return paint(grey, np.clip(c, 0.0, 1.0), config.spurious)


def expected_palette(config: DigitsConfig) -> np.ndarray:
    """E[clip(s PALETTE[a] + sigma Z, 0, 1)] per colour a and channel, (10, 3) float64.

    With Y = mu + sigma Z: E[clip(Y, 0, 1)] = h(mu) - h(mu - 1), h(t) = t Phi(t/sigma) + sigma phi(t/sigma)
    (= E[max(Y - (mu - t), 0)]); for sigma = 0 it is clip(mu, 0, 1).
    """
    mu = config.spurious_strength * PALETTE.astype(np.float64)
    sigma = config.spurious_sigma
    if sigma == 0:
        return np.clip(mu, 0.0, 1.0)
    h = lambda t: t * norm.cdf(t / sigma) + sigma * norm.pdf(t / sigma)
    return h(mu) - h(mu - 1.0)


def expected_images(grey: np.ndarray, colour_probs: np.ndarray, config: DigitsConfig) -> np.ndarray:
    """E[x | g, y] over the colour draw: grey (n, h, w), P(a | y) (n, 10) -> (n, h*w*3) float64."""
    painted = paint(grey.astype(np.float64), colour_probs @ expected_palette(config), config.spurious)
    return painted.reshape(grey.shape[0], -1)


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def caption_tokens(labels: np.ndarray, bins: np.ndarray, colours: np.ndarray, r: float,
                   colour_in_caption: bool, rng: np.random.Generator) -> np.ndarray:
    """Bag-of-words captions ('tokens' design): (n,), (n, 3), (n,) -> multi-hot (n, len(VOCAB)) float32.

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


def class_weight_captions(labels: np.ndarray, values: np.ndarray, annotated: np.ndarray, colour_words: np.ndarray,
                          detail_scale: float) -> np.ndarray:
    """'class_weight' design: x_T = [(1 + kappa b v) e_y, colour block], (n,), (n,), (n,), (n, 10) -> (n, 20).

    annotated: b in {0, 1} (or its expectation r); colour_words: the colour block, one-hot of a,
    zeros when the caption does not name the colour, or P(a | y) for the expected caption.
    """
    weight = 1.0 + detail_scale * annotated * values
    return np.concatenate([np.eye(NUM_CLASSES)[labels] * weight[:, None], colour_words], axis=1).astype(np.float32)


def caption_text(features: np.ndarray) -> str:
    """The words of one caption: multi-hot (len(VOCAB),) in vocabulary order, or a class_weight
    caption (20,) as 'seven x1.32 red' (the class word and its weight)."""
    if features.shape[-1] == len(VOCAB):
        return " ".join(VOCAB[i] for i in np.flatnonzero(features))
    k = int(np.flatnonzero(features[:NUM_CLASSES])[0])
    colour = [COLOUR_WORDS[j] for j in np.flatnonzero(features[NUM_CLASSES:])]
    return " ".join([DIGIT_WORDS[k], f"x{features[k]:.2f}", *colour])


def word_prompts(caption: str) -> np.ndarray:
    """The bare digit word of class k as a caption, t_k = e_k: (10, 29) for 'tokens', (10, 20) otherwise."""
    width = len(VOCAB) if caption == "tokens" else 2 * NUM_CLASSES
    return np.eye(NUM_CLASSES, width, dtype=np.float32)


def class_mean_prompts(x_text: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """In-distribution prompts t_k = mean of the class-k captions: (n, V), (n,) -> (10, V) float32."""
    return np.stack([x_text[labels == k].mean(0) for k in range(NUM_CLASSES)]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# One seed's data
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _measured(dataset: str) -> dict[str, np.ndarray]:
    grey, _ = load_digit_images(dataset)
    return {d: MEASUREMENTS[d](grey) for d in DETAILS}


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
    """One seed's data. train: Dataset (x_image (n, h*w*3), x_text (n, V), label (n,), spurious (n,));
    tests: Dataset with a leading axis over TESTS (x_image (3, m, h*w*3), label (3, m), ...);
    prompts: {'word', 'caption_mean'} -> (10, V), the caption-mean prompt from the sampled captions;
    theory: the exact expectation over colour and caption draws given the train images:
    cross_covariance E[S] (h*w*3, V), image_mean E[xbar] (h*w*3,), caption_mean_prompts (10, V)."""

    train: Dataset
    tests: Dataset
    prompts: dict
    theory: dict


def build_split(config: DigitsConfig, seed: int) -> DigitsSplit:
    """Disjoint random train/test subsets of the dataset, coloured, with train captions (numpy).

    The details are measured on the train subset (class means, tertiles and z-scores within class).
    """
    grey, labels = load_digit_images(config.dataset)
    if config.n_train + config.n_test > labels.shape[0]:
        raise ConfigError(f"DigitsConfig.n_train + n_test = {config.n_train + config.n_test} is out of range: allowed "
                          f"at most {labels.shape[0]}, the number of images in dataset {config.dataset!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.shape[0])
    train, test = order[: config.n_train], order[config.n_train : config.n_train + config.n_test]
    y = labels[train]
    colour = spurious_colours(y, config.p, rng)
    colour_words = np.eye(NUM_CLASSES)[colour] if config.colour_in_caption else np.zeros((y.shape[0], NUM_CLASSES))
    expected_colour_words = colour_probabilities(y, config.p) if config.colour_in_caption else colour_words
    if config.caption == "tokens":
        measured = _measured(config.dataset)
        bins = np.stack([tertile_bins(measured[d][train], y, within_class_tertiles(measured[d][train], y))
                         for d in DETAILS], axis=1)
        if config.shuffle_details:
            bins = shuffle_within_class(bins, y, rng)
        x_text = caption_tokens(y, bins, colour, config.r, config.colour_in_caption, rng)
        detail_ids = np.array([[TOKEN[w] for w in DETAIL_WORDS[d]] for d in DETAILS])  # (3, 3)
        expected_text = np.zeros_like(x_text)
        expected_text[np.arange(y.shape[0]), y] = 1.0
        for j in range(len(DETAILS)):
            expected_text[np.arange(y.shape[0]), detail_ids[j, bins[:, j]]] = config.r
        expected_text[:, len(VOCAB) - NUM_CLASSES :] = expected_colour_words
    else:
        values = detail_values(grey[train], y, config.detail)
        if config.shuffle_details:
            values = shuffle_within_class(values, y, rng)
        annotated = (rng.random(y.shape[0]) < config.r).astype(np.float64)
        x_text = class_weight_captions(y, values, annotated, colour_words, config.detail_scale)
        expected_text = class_weight_captions(y, values, np.full(y.shape, config.r), expected_colour_words,
                                              config.detail_scale)
    test_colour = np.stack([spurious_colours(labels[test], t, rng) for t in TESTS])
    flat = lambda rgb: rgb.reshape(rgb.shape[0], -1)
    train_set = Dataset(flat(colour_images(grey[train], colour, config, rng)), x_text, y, colour)
    tests = Dataset(np.stack([flat(colour_images(grey[test], a, config, rng)) for a in test_colour]),
                    np.zeros((len(TESTS), test.shape[0], 0), np.float32),
                    np.broadcast_to(labels[test], test_colour.shape).copy(), test_colour)
    cross, image_mean = expected_cross_covariance(grey[train], y, expected_text, config)
    theory = {"cross_covariance": cross, "image_mean": image_mean,
              "caption_mean_prompts": class_mean_prompts(expected_text, y)}
    prompts = {"word": word_prompts(config.caption), "caption_mean": class_mean_prompts(x_text, y)}
    return DigitsSplit(train_set, tests, prompts, theory)


def expected_cross_covariance(grey: np.ndarray, labels: np.ndarray, expected_text: np.ndarray,
                              config: DigitsConfig) -> tuple[np.ndarray, np.ndarray]:
    """E[S] and E[xbar] over the colour and caption draws, given the train images: float64.

    grey (n, h, w), labels (n,), expected_text E[x_T,i] (n, V) -> ((h*w*3, V), (h*w*3,)).
    S = (1/(n-1)) sum_i (x_i - xbar) x_T,i^T = M/(n-1) - n xbar xbar_T^T/(n-1) is bilinear, and the
    draws are independent across images, so with M = sum_i E[x_i x_T,i^T], P = sum_i E[x_i] E[x_T,i]^T,
    a = sum_i E[x_i], b = sum_i E[x_T,i]:  E[S] = M/n - (a b^T - P)/(n(n-1)).
    Within an image the caption's non-colour part is independent of the colour (M = P there);
    the colour word (last 10 columns, when captioned) gives M[:, a] = sum_i P(a | y_i) E[x_i | a].
    """
    n = labels.shape[0]
    probs = colour_probabilities(labels, config.p)
    mean_images = expected_images(grey, probs, config)  # (n, D)
    text = expected_text.astype(np.float64)
    a, b = mean_images.sum(0), text.sum(0)
    pairs = mean_images.T @ text  # P
    moments = pairs.copy()  # M
    if config.colour_in_caption:
        for j in range(NUM_CLASSES):
            fixed = np.zeros((n, NUM_CLASSES))
            fixed[:, j] = 1.0
            moments[:, -NUM_CLASSES + j] = expected_images(grey, fixed, config).T @ probs[:, j]
    return moments / n - (np.outer(a, b) - pairs) / (n * (n - 1)), a / n
