"""The paper's semi-synthetic MNIST experiment (Xue et al. 2024, App. G.1, Fig. 2), at the paper's scale.

Task. Binary: digits 0-4 (class 0) against 5-9 (class 1). The background of every image is one of six
shades, SHADES = dark / medium / light blue (family 0) and light / medium / dark red (family 1):

    training (and the in-distribution test, 'aligned'): the family is the class's own (blue for 0-4,
        red for 5-9) with probability `agreement` = 0.995, else the other; the shade is uniform
        over the family's three;
    the paper's P* ('independent', the OOD test of Fig. 2): the shade is uniform over all six;
    'flipped': the shade is uniform over the other family's three (not in the paper; the worst case,
        and the law of the off-colour images of P*, whose accuracy it therefore measures).

Data (App. G.1): the 60,000 MNIST training images train (n_train, a fixed subset for smaller runs); the
10,000 MNIST test images, recoloured by each test's law, test (n_test). The choices the paper leaves open
are settings of PaperMnistConfig, each documented in docs/models.md (section 'The paper's MNIST
experiment'): the shades' RGB (`shade_rgb`), how the digit sits on the background (`composite`), and
whether colours and captions are drawn once per seed or afresh each epoch (`redraw`); and of
PaperMnistSettings: a fixed or learned temperature.

Captions. A 200-d vector x_T = v + xi, xi ~ N(0, (1/2000) I_200), v = [a, b, 0, ..., 0], with the
paper's dictionary DICT (digit d -> d - 4.5; shades -> -2.5, -1.5, -0.5, 0.5, 1.5, 2.5) and

    a = DICT[digit]  with probability pi_core, else the class mean (-2.5 for 0-4, +2.5 for 5-9);
    b = DICT[shade]  with probability pi_spu,  else the family mean (-1.5 blue, +1.5 red).

The class mean is (1/5) sum_{d=0}^{4} DICT[d] = -2.5; the paper writes it as (1/4) sum_{d=1}^{4}, which
gives -2.0, but prints the value -2.5 (docs/paper_errata.md).

Zero-shot prompts. The class centre of the true distribution, p_y = E_{P*}[x_T | y] = [-2.5, 0, ..., 0]
and [+2.5, 0, ..., 0] (the mean over the six shades of b is 0 whatever pi_spu); prediction
argmax_y <f_I(x), f_T(p_y)>.

Learners. 'mmcl_lenet': a LeNet-5 image encoder (3 x 28 x 28 -> 128) and a linear text encoder
(200 -> 128) trained with the CLIP loss on raw inner products (no normalisation). 'sl_lenet': the same
LeNet with a 2-way output, softmax cross-entropy. Both: SGD, momentum 0.9, lr 0.01, weight decay
0.001 (added to the gradient, as torch.optim.SGD does), batch 128, reshuffled every epoch, the last
partial batch dropped; 100 epochs (MMCL) and 40 (SL). Accuracies are exact counts on the n_test test
images, at the end and every `curve_every` epochs (the rows' 'curve').
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmcl_theory.config import ConfigError, as_floats, check_range
from mmcl_theory.datamodel import TESTS
from mmcl_theory.digits import DigitsDataError, dataset_directory, load_mnist
from mmcl_theory.grid import Sample, Tests
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT, Learner
from mmcl_theory.losses import infonce_loss

# --------------------------------------------------------------------------------------------
# The paper's constants, its Fig. 2 and Fig. 5, and the choices it leaves open
# --------------------------------------------------------------------------------------------

SHADES = ("dark blue", "medium blue", "light blue", "light red", "medium red", "dark red")
SHADE_RGBS = {  # shade_rgb setting -> (6, 3) RGB in [0, 1], SHADES order
    # read from the PDF's Fig. 4 swatches (docs/models.md says how)
    "fig4": (1 / 255) * np.array([[32, 56, 100], [0, 112, 192], [180, 199, 231], [252, 190, 188], [255, 0, 0], [192, 0, 0]], dtype=np.float32),
    # pure channels at three levels (this package's choice before the PDF was read)
    "pure": np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.75], [0.4, 0.6, 1.0], [1.0, 0.6, 0.4], [0.75, 0.0, 0.0],
                      [0.5, 0.0, 0.0]], dtype=np.float32),
}
COMPOSITES = ("white_digit", "black_digit")  # composite setting: how the digit sits on the background (composite())
REDRAWS = ("once", "epoch")  # redraw setting: training colours and captions drawn once per seed, or every epoch
SHADE_FAMILY = np.array([0, 0, 0, 1, 1, 1])  # 0 blue, 1 red
DIGIT_VALUE = np.arange(10, dtype=np.float64) - 4.5  # DICT[0..9] = -4.5, ..., 4.5
SHADE_VALUE = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])  # DICT[shade], in SHADES order
CLASS_MEAN_VALUE = np.array([DIGIT_VALUE[:5].mean(), DIGIT_VALUE[5:].mean()])  # -2.5, 2.5
FAMILY_MEAN_VALUE = np.array([SHADE_VALUE[:3].mean(), SHADE_VALUE[3:].mean()])  # -1.5, 1.5
NUM_CLASSES = 2
DATASET_SIZES = {"mnist_train": 60000, "mnist_test": 10000}  # the named MNIST sets, checked when loaded
SUBSET_SEED = 0  # the fixed permutation whose first n_train (n_test) images a smaller run uses
PROMPT = "class_centre"  # the zero-shot prompt's name in result rows

# Xue et al. 2024, Fig. 2 (OOD accuracy %, semi-synthetic MNIST), read from the PDF's vector paths, axis-calibrated
PAPER_FIG2 = {  # OOD accuracy (%) on P*: the pi_core curve at pi_spu = 1, the pi_spu curve at pi_core = 1, and SL
    "pi_core": {0.0: 58.94, 0.25: 72.36, 0.5: 74.99, 0.75: 75.88, 1.0: 76.21},
    "pi_spu": {0.0: 72.15, 0.5: 75.43, 1.0: 76.21},
    "supervised": 68.98,
}
# Fig. 5 (ID accuracy %, the aligned test), read the same way (the line vertices; the supervised line is flat)
PAPER_FIG5 = {
    "pi_core": {0.0: 66.73, 0.25: 73.41, 0.5: 74.92, 0.75: 70.90, 1.0: 70.57},
    "pi_spu": {0.0: 51.24, 0.5: 66.11, 1.0: 70.57},
    "supervised": 99.63,
}

# --------------------------------------------------------------------------------------------
# Config and settings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PaperMnistConfig:
    """The data of one point (App. G.1).

    pi_core: probability that a caption's first coordinate is the digit's own value, in [0, 1].
    pi_spu: probability that its second coordinate is the shade's own value, in [0, 1].
    agreement: training probability that the background family matches the class (paper: 0.995).
    caption_noise_var: variance of each caption noise coordinate (paper: 1/2000).
    caption_dim: caption length (paper: 200; >= 2).
    train_set, test_set: 'mnist_train' / 'mnist_test' (the 60,000 and 10,000 MNIST images under
      $MMCL_SHARED_DATA or ../shared/data) or a directory of MNIST idx files.
    n_train, n_test: the first n_train (n_test) images of the fixed permutation SUBSET_SEED of each set
      (the paper: all 60,000 and 10,000).
    shade_rgb: the six shades' RGB, a key of SHADE_RGBS ('fig4': read from the paper's Fig. 4).
    composite: how the digit sits on the background, one of COMPOSITES (composite()).
    redraw: 'once' (a seed draws the training colours and captions once) or 'epoch' (afresh each epoch).
    """

    pi_core: float = 1.0
    pi_spu: float = 1.0
    agreement: float = 0.995
    caption_noise_var: float = 1.0 / 2000.0
    caption_dim: int = 200
    train_set: str = "mnist_train"
    test_set: str = "mnist_test"
    n_train: int = 60000
    n_test: int = 10000
    shade_rgb: str = "fig4"
    composite: str = "white_digit"
    redraw: str = "once"

    def __post_init__(self):
        name = type(self).__name__
        as_floats(self, ("pi_core", "pi_spu", "agreement", "caption_noise_var"))
        check_range(name, "pi_core", self.pi_core, 0.0, 1.0)
        check_range(name, "pi_spu", self.pi_spu, 0.0, 1.0)
        check_range(name, "agreement", self.agreement, 0.0, 1.0)
        check_range(name, "caption_noise_var", self.caption_noise_var, 0.0, 100.0)
        check_range(name, "caption_dim", self.caption_dim, 2, 100000, integer=True)
        check_range(name, "n_train", self.n_train, 1, 60000, integer=True)
        check_range(name, "n_test", self.n_test, 1, 60000, integer=True)
        for field in ("train_set", "test_set"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}.{field} = {value!r} is not allowed: 'mnist_train', 'mnist_test' or a "
                                  "directory of MNIST idx files")
        for field, allowed in (("shade_rgb", tuple(SHADE_RGBS)), ("composite", COMPOSITES), ("redraw", REDRAWS)):
            if getattr(self, field) not in allowed:
                raise ConfigError(f"{name}.{field} = {getattr(self, field)!r} is not allowed: one of "
                                  f"{', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class PaperMnistSettings:
    """Optimisation of both learners (App. G.1): SGD with momentum and weight decay, minibatches, epochs.

    mmcl_epochs, sl_epochs: passes over the training images (paper: 100 and 40).
    batch_size: minibatch size (paper: 128); each epoch has n_train // batch_size batches.
    lr, momentum, weight_decay: paper 0.01, 0.9, 0.001.
    embed_dim: output size of both MMCL encoders (paper: 128).
    temperature: the CLIP loss's logits are inner products / temperature (the paper states none: 1).
    learn_temperature: False keeps it fixed; True learns log(1 / temperature) from `temperature` (CLIP:
      0.07), its scale clipped at 100, without weight decay.
    curve_every: score the tests every this many epochs (0: only at the end), for accuracy against epoch.
    """

    mmcl_epochs: int = 100
    sl_epochs: int = 40
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.001
    embed_dim: int = 128
    temperature: float = 1.0
    learn_temperature: bool = False
    curve_every: int = 10

    def __post_init__(self):
        name = type(self).__name__
        as_floats(self, ("lr", "momentum", "weight_decay", "temperature"))
        check_range(name, "mmcl_epochs", self.mmcl_epochs, 1, 10000, integer=True)
        check_range(name, "sl_epochs", self.sl_epochs, 1, 10000, integer=True)
        check_range(name, "batch_size", self.batch_size, 2, 60000, integer=True)
        check_range(name, "lr", self.lr, 0.0, 10.0, open_low=True)
        check_range(name, "momentum", self.momentum, 0.0, 0.999)
        check_range(name, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_range(name, "embed_dim", self.embed_dim, 1, 4096, integer=True)
        check_range(name, "temperature", self.temperature, 0.0, 100.0, open_low=True)
        check_range(name, "curve_every", self.curve_every, 0, 10000, integer=True)
        if not isinstance(self.learn_temperature, bool):
            raise ConfigError(f"{name}.learn_temperature = {self.learn_temperature!r} is not allowed: true or false")


# --------------------------------------------------------------------------------------------
# Data (numpy, pure functions of their inputs and a Generator)
# --------------------------------------------------------------------------------------------


def digit_class(digits: np.ndarray) -> np.ndarray:
    """Class 0 for digits 0-4, 1 for 5-9: (n,) -> (n,) int32."""
    return (np.asarray(digits) >= 5).astype(np.int32)


def draw_shades(classes: np.ndarray, test: str | float, rng: np.random.Generator) -> np.ndarray:
    """Shade index per image (0..5, SHADES order): (n,) -> (n,) int32.

    test: a probability q (the family is the class's own with probability q, else the other; the shade
    uniform within the family), or 'independent' (uniform over all six shades, the paper's P*).
    """
    n = classes.shape[0]
    if test == "independent":
        return rng.integers(0, len(SHADES), n).astype(np.int32)
    family = np.where(rng.random(n) < float(test), classes, 1 - classes)
    return (3 * family + rng.integers(0, 3, n)).astype(np.int32)


def shade_law(test: str, config: PaperMnistConfig) -> str | float:
    """The draw_shades argument of each test: aligned = the training law (the paper's ID test), flipped = 0."""
    return {"aligned": config.agreement, "independent": "independent", "flipped": 0.0}[test]


def composite(grey: jax.Array, rgb: jax.Array, name: str) -> jax.Array:
    """The digit on its background: grey (..., 28, 28) in [0, 1] (the MNIST ink), rgb (..., 3) the shade ->
    RGB (..., 28, 28, 3) float32.

    'white_digit' (the paper's Fig. 1: a white digit on a square filled with the shade, its edges a mix of
    the two): x = g + (1 - g) c. 'black_digit': a black digit on the shade, x = (1 - g) c.
    """
    g, c = grey[..., None], rgb[..., None, None, :]
    if name == "white_digit":
        return g + (1.0 - g) * c
    return (1.0 - g) * c


def caption_vectors(digits: np.ndarray, shades: np.ndarray, config: PaperMnistConfig,
                    rng: np.random.Generator) -> np.ndarray:
    """Captions x_T = [a, b, 0, ..., 0] + xi: (n,), (n,) -> (n, caption_dim) float32.

    a = DICT[digit] if u_core < pi_core else CLASS_MEAN_VALUE[class]; b = DICT[shade] if u_spu < pi_spu
    else FAMILY_MEAN_VALUE[family]; xi ~ N(0, caption_noise_var I). u_core, u_spu ~ U(0, 1) and xi are
    drawn in the same order whatever pi_core and pi_spu, so one seed's captions are nested across pi.
    """
    n = digits.shape[0]
    u_core, u_spu = rng.random(n), rng.random(n)
    noise = rng.standard_normal((n, config.caption_dim))
    a = np.where(u_core < config.pi_core, DIGIT_VALUE[digits], CLASS_MEAN_VALUE[digit_class(digits)])
    b = np.where(u_spu < config.pi_spu, SHADE_VALUE[shades], FAMILY_MEAN_VALUE[SHADE_FAMILY[shades]])
    v = np.zeros((n, config.caption_dim))
    v[:, 0], v[:, 1] = a, b
    return (v + np.sqrt(config.caption_noise_var) * noise).astype(np.float32)


def class_centre_prompts(config: PaperMnistConfig) -> np.ndarray:
    """The paper's prompts p_y = E_{P*}[x_T | y] = [CLASS_MEAN_VALUE[y], 0, ..., 0]: (2, caption_dim) float32."""
    prompts = np.zeros((NUM_CLASSES, config.caption_dim), np.float32)
    prompts[:, 0] = CLASS_MEAN_VALUE
    return prompts


def load_images(dataset: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n images of the fixed permutation SUBSET_SEED of an MNIST set: grey (n, 28, 28) float32 in
    [0, 1] and digits (n,) int32. A named set ('mnist_train', 'mnist_test') must hold its standard count
    (DATASET_SIZES); a missing or malformed file, or too few images, is a DigitsDataError naming the file."""
    directory = dataset_directory(dataset)
    grey, digits = load_mnist(directory)
    expected = DATASET_SIZES.get(dataset)
    if expected is not None and digits.shape[0] != expected:
        raise DigitsDataError(f"{directory}: {digits.shape[0]} images; expected the {expected:,} of {dataset}")
    if n > digits.shape[0]:
        raise ConfigError(f"{n} images asked of {dataset!r} is out of range: allowed at most {digits.shape[0]}, the "
                          "number of images it holds")
    order = np.random.default_rng(SUBSET_SEED).permutation(digits.shape[0])[:n]
    return grey[order], digits[order]


@dataclasses.dataclass(frozen=True)
class PaperMnistData:
    """One seed's data, images kept grey with a shade index each (the step paints them, composite()).

    Train: grey (n, 28, 28), digits (n,), labels (n,) (the class), shades (n,), captions (n, caption_dim).
    Tests, one row per TESTS entry: test_shades (3, m); test_grey (m, 28, 28), test_digits (m,) and
    test_labels (m,) are shared by the three (the same images, recoloured). prompts (2, caption_dim).
    config: the point's config; seed: its seed (redraw = 'epoch' draws epoch e's colours and captions from it).
    """

    grey: np.ndarray
    digits: np.ndarray
    labels: np.ndarray
    shades: np.ndarray
    captions: np.ndarray
    test_grey: np.ndarray
    test_digits: np.ndarray
    test_labels: np.ndarray
    test_shades: np.ndarray
    prompts: np.ndarray
    config: PaperMnistConfig
    seed: int

    @functools.cached_property
    def test_images(self) -> np.ndarray:
        """The test images painted per test (composite()): (3, m, 28, 28, 3) float32, computed once."""
        rgb = SHADE_RGBS[self.config.shade_rgb]
        return np.stack([composite(self.test_grey, rgb[s], self.config.composite) for s in self.test_shades])


def training_colours(digits: np.ndarray, config: PaperMnistConfig, seed: int, epoch: int | None = None):
    """Training shades (n,) and captions (n, caption_dim) of one seed, from their own streams of
    SeedSequence(seed) (or of SeedSequence([seed, epoch]) for epoch e's redraw): the shades and the caption
    draws are the same at every pi_core and pi_spu, so only the captions' values change with pi."""
    entropy = seed if epoch is None else [seed, 1 + epoch]
    shade_rng, caption_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(2))
    shades = draw_shades(digit_class(digits), config.agreement, shade_rng)
    return shades, caption_vectors(digits, shades, config, caption_rng)


def build_data(config: PaperMnistConfig, seed: int) -> PaperMnistData:
    """The training set and the three coloured test sets of one seed (the images are fixed, SUBSET_SEED)."""
    grey, digits = load_images(config.train_set, config.n_train)
    test_grey, test_digits = load_images(config.test_set, config.n_test)
    shades, captions = training_colours(digits, config, seed)
    test_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    test_labels = digit_class(test_digits)
    test_shades = np.stack([draw_shades(test_labels, shade_law(t, config), test_rng) for t in TESTS])
    return PaperMnistData(grey=grey, digits=digits, labels=digit_class(digits), shades=shades, captions=captions,
                          test_grey=test_grey, test_digits=test_digits, test_labels=test_labels,
                          test_shades=test_shades, prompts=class_centre_prompts(config), config=config, seed=seed)


# --------------------------------------------------------------------------------------------
# LeNet and the text encoder (plain jax)
# --------------------------------------------------------------------------------------------

# (name, weight shape without the output size, output size or None for `out`): conv weights are HWIO
_LENET = (("conv1", (5, 5, 3), 6), ("conv2", (5, 5, 6), 16), ("fc1", (400,), 120), ("fc2", (120,), 84),
          ("out", (84,), None))


def _uniform_layer(key: jax.Array, in_shape: tuple[int, ...], out: int) -> dict:
    """torch's default init of Conv2d / Linear: w, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = prod(in_shape)."""
    bound = 1.0 / np.sqrt(np.prod(in_shape))
    k_w, k_b = jax.random.split(key)
    return {"w": jax.random.uniform(k_w, (*in_shape, out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(k_b, (out,), jnp.float32, -bound, bound)}


def init_lenet(key: jax.Array, out_dim: int) -> dict:
    """LeNet-5 parameters: conv 6@5x5 (3 channels in), conv 16@5x5, fc 400 -> 120 -> 84 -> out_dim."""
    keys = jax.random.split(key, len(_LENET))
    return {name: _uniform_layer(k, shape, out or out_dim) for k, (name, shape, out) in zip(keys, _LENET)}


def space_to_depth(x: jax.Array) -> jax.Array:
    """2 x 2 blocks of pixels as channels: (n, h, w, c) -> (n, h/2, w/2, 4c), channel index (2 i + j) c + c'
    for the pixel (2 y + i, 2 x + j)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4 * c)


def _block_selector(k: int) -> np.ndarray:
    """S[b, i, o, t] = 1 where t = 2 b + i - o, for block offset b in 0..(k + 1) // 2, input and output pixel
    offsets i, o in {0, 1} within a 2 x 2 block, and kernel tap t in 0..k-1: ((k + 2) // 2, 2, 2, k)."""
    span = (k + 2) // 2
    s = np.zeros((span, 2, 2, k), np.float32)
    for b, i, o in np.ndindex(span, 2, 2):
        if 0 <= 2 * b + i - o < k:
            s[b, i, o, 2 * b + i - o] = 1.0
    return s


def conv_relu_pool(layer: dict, x: jax.Array) -> jax.Array:
    """max_pool_2x2(relu(conv_kxk_valid(x) + b)) on a space-to-depth input: (n, h, w, 4c) -> (n, h - s + 1,
    w - s + 1, o), s = (k + 2) // 2, for the pixel image of size (2h, 2w, c) and the kernel layer['w'] (k, k, c, o).

    The same sums as the convolution, grouped by 2 x 2 output block: output pixel (2 y + o_y, 2 x + o_x) reads
    input pixel (2 (y + b_y) + i_y, ...) through tap 2 b_y + i_y - o_y, so one valid s x s convolution with the
    kernel W[b_y, b_x, (i_y, i_x, c), (o_y, o_x, o)] = w[2 b_y + i_y - o_y, 2 b_x + i_x - o_x, c, o] (0 off the
    k x k support) gives the four pixels of each block as channels, and the pool is their max. It replaces XLA's
    small-channel convolution (3 -> 6 channels) by a 12 -> 24 one, about 3x faster a LeNet step on CPU
    (BENCHMARKS.md); relu and max commute with adding b after the max, so the result equals the plain layer.
    """
    k, _, c, o = layer["w"].shape
    s = jnp.asarray(_block_selector(k))
    kernel = jnp.einsum("aipt,bjqu,tuco->abijcpqo", s, s, layer["w"])
    kernel = kernel.reshape(s.shape[0], s.shape[0], 4 * c, 4 * o)
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    return jax.nn.relu(y.reshape(n, h, w, 4, o).max(axis=3) + layer["b"])


def lenet(params: dict, images: jax.Array) -> jax.Array:
    """LeNet-5 on RGB 28 x 28 images: (n, 28, 28, 3) -> (n, out_dim).

    conv 5x5 'same' -> 28x28x6, ReLU, max pool -> 14x14x6; conv 5x5 'valid' -> 10x10x16, ReLU, max pool
    -> 5x5x16 = 400; fc 120, ReLU; fc 84, ReLU; linear out_dim (no activation). Each conv-ReLU-pool is
    computed on 2 x 2 blocks (conv_relu_pool); the 'same' padding is two zero pixels on each side.
    """
    x = space_to_depth(jnp.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))))  # (n, 16, 16, 12)
    x = conv_relu_pool(params["conv1"], x)  # (n, 14, 14, 6)
    x = conv_relu_pool(params["conv2"], space_to_depth(x))  # (n, 5, 5, 16)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1"]["w"] + params["fc1"]["b"])
    x = jax.nn.relu(x @ params["fc2"]["w"] + params["fc2"]["b"])
    return x @ params["out"]["w"] + params["out"]["b"]


def plain_lenet(params: dict, images: jax.Array) -> jax.Array:
    """The same LeNet-5 layer by layer, with XLA's convolution and reduce_window max pooling: (n, 28, 28, 3) ->
    (n, out_dim). The independent form `lenet` is tested against, and the step before the blocks in
    bench/lenet_step.py (XLA's CPU convolution is several times slower at 3 -> 6 channels)."""
    conv = lambda x, w, padding: jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
    pool = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = pool(jax.nn.relu(conv(images, params["conv1"]["w"], "SAME") + params["conv1"]["b"]))
    x = pool(jax.nn.relu(conv(x, params["conv2"]["w"], "VALID") + params["conv2"]["b"]))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1"]["w"] + params["fc1"]["b"])
    x = jax.nn.relu(x @ params["fc2"]["w"] + params["fc2"]["b"])
    return x @ params["out"]["w"] + params["out"]["b"]


def text_encoder(params: dict, captions: jax.Array) -> jax.Array:
    """Linear text encoder f_T(t) = t W + b: (n, caption_dim) -> (n, embed_dim)."""
    return captions @ params["w"] + params["b"]


def init_params(key: jax.Array, kind: str, caption_dim: int, settings: PaperMnistSettings) -> dict:
    """Zero-shot ('mmcl_lenet'): {'image': LeNet -> embed_dim, 'text': linear caption_dim -> embed_dim, and
    with learn_temperature 'log_scale': log(1 / temperature)}; supervised ('sl_lenet'): {'image': LeNet -> 2}."""
    k_image, k_text = jax.random.split(key)
    if kind == SUPERVISED:
        return {"image": init_lenet(k_image, NUM_CLASSES)}
    params = {"image": init_lenet(k_image, settings.embed_dim),
              "text": _uniform_layer(k_text, (caption_dim,), settings.embed_dim)}
    if settings.learn_temperature:
        params["log_scale"] = jnp.asarray(np.log(1.0 / settings.temperature), jnp.float32)
    return params


MAX_LOGIT_SCALE = 100.0  # CLIP's clip of the learned 1 / temperature


def logit_scale(params: dict, settings: PaperMnistSettings) -> jax.Array:
    """1 / temperature: fixed, or exp(log_scale) clipped at MAX_LOGIT_SCALE when learned."""
    if "log_scale" in params:
        return jnp.minimum(jnp.exp(params["log_scale"]), MAX_LOGIT_SCALE)
    return jnp.asarray(1.0 / settings.temperature, jnp.float32)


def clip_loss(params: dict, images: jax.Array, captions: jax.Array, settings: PaperMnistSettings,
              encoder=lenet) -> jax.Array:
    """The CLIP loss without normalisation: symmetric cross-entropy over the batch logits
    L_ij = <f_I(x_i), f_T(t_j)> / temperature, (CE(L, diag) + CE(L^T, diag)) / 2 (losses.infonce_loss);
    encoder: the image encoder (lenet, or plain_lenet for the benchmark's baseline)."""
    return infonce_loss(encoder(params["image"], images), text_encoder(params["text"], captions),
                        logit_scale(params, settings))


def sl_loss(params: dict, images: jax.Array, labels: jax.Array, encoder=lenet) -> jax.Array:
    """Mean softmax cross-entropy of LeNet's 2-way logits against the class labels."""
    return optax.softmax_cross_entropy_with_integer_labels(encoder(params["image"], images), labels).mean()


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


def optimiser(settings: PaperMnistSettings) -> optax.GradientTransformation:
    """SGD as torch.optim.SGD(lr, momentum, weight_decay): g + wd * theta, then momentum, then -lr; a learned
    log_scale takes no weight decay."""
    decayed = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: all(getattr(k, "key", None) != "log_scale" for k in path), params)
    decay = optax.add_decayed_weights(settings.weight_decay, mask=decayed)
    return optax.chain(decay, optax.sgd(settings.lr, momentum=settings.momentum))


@functools.lru_cache(maxsize=8)
def compiled_step(kind: str, settings: PaperMnistSettings, rgb_key: str, composite_name: str, encoder=lenet):
    """jit of one optimiser step, step(params, opt_state, grey, shades, targets, rows) -> (params, opt_state,
    loss), on the minibatch rows (batch_size,) int: the images composite(grey[rows], SHADE_RGBS[rgb_key][
    shades[rows]]) against targets[rows] (captions (n, caption_dim) for zero-shot, labels (n,) for supervised);
    params and opt_state are donated; encoder: the image encoder (lenet; plain_lenet in bench/lenet_step.py).
    The step, not the epoch, is the compiled unit: XLA on CPU runs LeNet's
    convolutions several times slower inside a lax.scan body than at the top level of a program.
    """
    rgb = jnp.asarray(SHADE_RGBS[rgb_key])
    update = optimiser(settings).update

    def loss_fn(params, images, targets):
        if kind == ZERO_SHOT:
            return clip_loss(params, images, targets, settings, encoder)
        return sl_loss(params, images, targets, encoder)

    def step(params, opt_state, grey, shades, targets, rows):
        images = composite(grey[rows], rgb[shades[rows]], composite_name)
        value, grads = jax.value_and_grad(loss_fn)(params, images, targets[rows])
        updates, opt_state = update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """A permutation of range(n) cut into n // batch_size minibatches (the last partial one dropped):
    (n // batch_size, batch_size) int32."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnames=("kind",))
def scores(kind: str, params: dict, images: jax.Array, prompts: jax.Array) -> jax.Array:
    """Class scores of painted images (m, 28, 28, 3), in chunks of 1,000 (lax.map): (1, m, 2).

    Zero-shot: <f_I(x), f_T(p_y)> for the prompts (1, 2, caption_dim); supervised: the logits.
    """
    chunk = 1000
    m = images.shape[0]
    pad = -m % chunk

    def one(x):
        out = lenet(params["image"], x)
        if kind == ZERO_SHOT:
            out = out @ text_encoder(params["text"], prompts[0]).T
        return out

    x = jnp.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(-1, chunk, *images.shape[1:])
    return jax.lax.map(one, x).reshape(-1, NUM_CLASSES)[None, :m]


def accuracies(kind: str, params: dict, data: PaperMnistData) -> np.ndarray:
    """Accuracy on each test of TESTS, an exact count over the m test images: (3,) float64."""
    prompts = jnp.asarray(data.prompts)[None]
    return np.array([(np.argmax(np.asarray(scores(kind, params, jnp.asarray(x), prompts)[0]), -1) == data.test_labels).mean()
                     for x in data.test_images])


def _check_batch(settings: PaperMnistSettings, n_train: int) -> None:
    if settings.batch_size > n_train:
        raise ConfigError(f"PaperMnistSettings.batch_size = {settings.batch_size} is out of range: allowed at most "
                          f"PaperMnistConfig.n_train = {n_train}")


def train(kind: str, key: jax.Array, data: PaperMnistData, settings: PaperMnistSettings) -> tuple[dict, dict]:
    """Initialise from key and train a zero-shot (mmcl_epochs, on the captions) or supervised (sl_epochs, on the
    labels) learner; a Learner record's fit (LEARNERS). Returns (params, stats): stats['final_loss'] is the last
    finite epoch's mean minibatch loss (nan if none), stats['curve'] the list of (epoch, accuracy per test (3,))
    every curve_every epochs (empty when 0), stats['diverged_at'] the first epoch whose mean loss is not finite
    (None if none): training stops there and the parameters at that epoch's start are returned.

    Epoch e visits the minibatches epoch_batches(fold_in(key_shuffle, e), ...) in order; with redraw = 'epoch'
    its colours and captions are training_colours(..., epoch=e) (epoch 0 keeps the seed's own draw).
    """
    from tqdm import tqdm

    n = data.grey.shape[0]
    _check_batch(settings, n)
    config = data.config
    k_init, k_shuffle = jax.random.split(key)
    params = init_params(k_init, kind, data.captions.shape[1], settings)
    opt_state = optimiser(settings).init(params)
    grey = jnp.asarray(data.grey)
    shades, captions = data.shades, data.captions
    labels = jnp.asarray(data.labels)
    epochs = settings.mmcl_epochs if kind == ZERO_SHOT else settings.sl_epochs
    step = compiled_step(kind, settings, config.shade_rgb, config.composite)
    curve, final_loss, diverged_at = [], float("nan"), None
    for epoch in tqdm(range(epochs), desc=kind, unit="epoch", leave=False, disable=None):
        if config.redraw == "epoch" and epoch > 0:
            shades, captions = training_colours(data.digits, config, data.seed, epoch)
        targets = jnp.asarray(captions) if kind == ZERO_SHOT else labels
        shades_j = jnp.asarray(shades)
        last_finite = jax.tree.map(jnp.copy, params)  # the step donates params: keep the epoch's start
        losses = []
        for rows in epoch_batches(jax.random.fold_in(k_shuffle, epoch), n, settings.batch_size):
            params, opt_state, loss = step(params, opt_state, grey, shades_j, targets, rows)
            losses.append(loss)
        epoch_loss = float(jnp.mean(jnp.stack(losses)))
        if not np.isfinite(epoch_loss):  # diverged: score the parameters of the last finite epoch, and say so
            params, diverged_at = last_finite, epoch + 1
            break
        final_loss = epoch_loss
        if settings.curve_every and (epoch + 1) % settings.curve_every == 0:
            curve.append((epoch + 1, accuracies(kind, params, data).tolist()))
    return params, {"final_loss": final_loss, "curve": curve, "diverged_at": diverged_at}


def _loss_columns(stats: dict) -> dict:
    """final_loss and converged of a row: the last finite epoch's loss and '' normally; after a divergence
    final_loss is that of the last finite epoch ('' when none) and converged says where training stopped."""
    if stats["diverged_at"] is None:
        return {"final_loss": stats["final_loss"], "converged": ""}
    loss = stats["final_loss"] if np.isfinite(stats["final_loss"]) else ""
    return {"final_loss": loss, "converged": f"no: non-finite loss in epoch {stats['diverged_at']}, scored as after "
                                             f"epoch {stats['diverged_at'] - 1}"}


def _fit(kind: str, key: jax.Array, data: PaperMnistData, settings: PaperMnistSettings) -> tuple[dict, dict]:
    """A Learner record's fit: train, with the stats as row columns (_loss_columns) and the learning curve."""
    params, stats = train(kind, key, data, settings)
    return params, {**_loss_columns(stats), "curve": stats["curve"]}


# learners.Learner records: fit(key, data: PaperMnistData, settings) (the data carries the test images for the curves)
# and score(params, painted images (m, 28, 28, 3), prompts (1, 2, caption_dim)) -> (1, m, 2); compile mode 'step'.
LEARNERS = tuple(Learner(name, kind, functools.partial(_fit, kind), functools.partial(scores, kind), trained=True)
                 for name, kind in (("mmcl_lenet", ZERO_SHOT), ("sl_lenet", SUPERVISED)))


def sample(config: PaperMnistConfig, seed: int) -> Sample:
    """One seed's data (build_data): train is the whole PaperMnistData, tests its painted test images."""
    data = build_data(config, seed)
    labels = np.broadcast_to(data.test_labels, (len(TESTS), data.test_labels.shape[0]))
    return Sample(data, Tests(data.test_images, labels), data.prompts[None], jax.random.key(seed))


def check(config: PaperMnistConfig, learners, settings: PaperMnistSettings) -> None:
    """A minibatch larger than the training set is a ConfigError."""
    _check_batch(settings, config.n_train)


def memory(config: PaperMnistConfig, settings: PaperMnistSettings, fitted, route: str) -> tuple[int, str]:
    """(bytes, how) of one seed's arrays: grey training images (n_train x 784), captions (n_train x caption_dim),
    the test images painted per test (3 x n_test x 2352), float32."""
    values = config.n_train * (784 + config.caption_dim) + 3 * config.n_test * 2352
    return 4 * values, (f"n_train x (784 + caption_dim) + 3 n_test x 2352 float32 (n_train = {config.n_train}, "
                        f"n_test = {config.n_test})")


# --------------------------------------------------------------------------------------------
# The sweep's rows as the curves of Fig. 2
# --------------------------------------------------------------------------------------------


def diverged(row) -> bool:
    """Whether a row's training run stopped at a non-finite loss (_loss_columns' "no: ..." in `converged`)."""
    return str(row.get("converged", "")).startswith("no:")


def diverged_runs(rows) -> list[str]:
    """The diverged training runs among the rows, one line each: 'series, param value, learner, seed N: why'."""
    return list(dict.fromkeys(f"{r['series']}, {r['param']} {float(r['value']):g}, {r['learner']}, seed {r['seed']}: "
                              f"{str(r['converged']).removeprefix('no: ')}" for r in rows if diverged(r)))


def fig2_curves(rows, test: str = "independent") -> dict:
    """Rows of the sweep paper_mnist (mmcl_theory/sweeps/paper_mnist.toml) as Fig. 2's curves on one test, per seed.

    rows: result-contract rows (dicts; values may be strings, as read from a CSV). Returns
    {'pi_core': {pi_core: {seed: accuracy}} at pi_spu = 1 (variant pi_spu_1),
     'pi_spu': {pi_spu: {seed: accuracy}} at pi_core = 1 (the pi_core = 1 point of each variant pi_spu_X),
     'supervised': {seed: accuracy}} (the SL rows).
    A run whose training diverged (its `converged` column starts with "no:", _loss_columns) is left out: it was
    scored before the epochs the protocol asks for, so it is not a measurement of the trained learner;
    diverged_runs lists them.
    """
    curves: dict = {"pi_core": {}, "pi_spu": {}, "supervised": {}}
    for r in rows:
        if r["test"] != test or diverged(r):
            continue
        seed, accuracy = int(r["seed"]), float(r["accuracy"])
        variant = str(r["series"]).partition("=")[2]
        if r["learner"] == "sl_lenet":
            curves["supervised"][seed] = accuracy
        elif r["learner"] == "mmcl_lenet" and variant.startswith("pi_spu_"):
            pi_spu, pi_core = float(variant.removeprefix("pi_spu_")), float(r["value"])
            if pi_spu == 1.0:
                curves["pi_core"].setdefault(pi_core, {})[seed] = accuracy
            if pi_core == 1.0:
                curves["pi_spu"].setdefault(pi_spu, {})[seed] = accuracy
    return curves


def choice_table(rows) -> list[str]:
    """Rows of the sweep paper_mnist_choices as a Markdown table: per variant, OOD accuracy (%) at pi_core 0 and 1
    (mean +- s.e. over seeds), its difference from the defaults paired by seed (every variant of a seed shares
    its images, initialisation and batch order), ID and off-colour (flipped) accuracy at pi_core 1; SL variants
    ('sl_' + name) give SL's OOD and off-colour accuracy in the same row.
    """
    from mmcl_theory.results import mean_se

    acc: dict = {}
    for r in rows:
        variant = str(r["series"]).partition("=")[2]
        key = (variant.removeprefix("sl_"), r["learner"], float(r["value"]), r["test"])
        acc.setdefault(key, {})[int(r["seed"])] = 100 * float(r["accuracy"])

    def cell(variant, learner, value, test, paired=False):
        own = acc.get((variant, learner, value, test))
        if not own:
            return "-"
        if not paired:
            return "%.1f +- %.1f" % mean_se(list(own.values()))
        base = acc.get(("defaults", learner, value, test), {})
        seeds = sorted(set(own) & set(base))
        return "%+.1f +- %.1f" % mean_se([own[s] - base[s] for s in seeds]) if seeds else "-"

    variants = list(dict.fromkeys(k[0] for k in acc))
    lines = ["| variant | OOD, pi_core 0 | vs defaults | OOD, pi_core 1 | vs defaults | ID, pi_core 1 | "
             "off-colour, pi_core 1 | SL OOD | SL off-colour |", "| --- |" + " --- |" * 8]
    for v in variants:
        m = "mmcl_lenet"
        lines.append(f"| {v} | {cell(v, m, 0.0, 'independent')} | {cell(v, m, 0.0, 'independent', True)} | "
                     f"{cell(v, m, 1.0, 'independent')} | {cell(v, m, 1.0, 'independent', True)} | "
                     f"{cell(v, m, 1.0, 'aligned')} | {cell(v, m, 1.0, 'flipped')} | "
                     f"{cell(v, 'sl_lenet', 1.0, 'independent')} | {cell(v, 'sl_lenet', 1.0, 'flipped')} |")
    return lines
