"""The paper's semi-synthetic MNIST experiment (Xue et al. 2024, App. G.1, Fig. 2), on the MNIST images here.

Task. Binary: digits 0-4 (class 0) against 5-9 (class 1). The background of every image is one of six
shades, SHADES = dark / medium / light blue (family 0) and light / medium / dark red (family 1):

    training (and the in-distribution test, 'aligned'): the family is the class's own (blue for 0-4,
        red for 5-9) with probability `agreement` = 0.995, else the other; the shade is uniform
        over the family's three;
    the paper's P* ('independent', the OOD test of Fig. 2): the shade is uniform over all six;
    'flipped': the shade is uniform over the other family's three (not in the paper; the worst case).

The digit stays MNIST ink over the coloured background: x = g + (1 - g) c per pixel and channel,
g in [0, 1] the grey MNIST pixel and c the shade's RGB (SHADE_RGB; the paper gives no RGB values),
digits.paint's 'tint' composite: white ink on the shade.

Captions. A 200-d vector x_T = v + xi, xi ~ N(0, (1/2000) I_200), v = [a, b, 0, ..., 0], with the
paper's dictionary DICT (digit d -> d - 4.5; shades -> -2.5, -1.5, -0.5, 0.5, 1.5, 2.5) and

    a = DICT[digit]  with probability pi_core, else the class mean (-2.5 for 0-4, +2.5 for 5-9);
    b = DICT[shade]  with probability pi_spu,  else the family mean (-1.5 blue, +1.5 red).

The class mean is (1/5) sum_{d=0}^{4} DICT[d] = -2.5; the paper writes it as (1/4) sum_{d=1}^{4}, which
gives -2.0 as printed but states the value -2.5 (and likewise +2.5), the mean over all five digits.

Zero-shot prompts. The class centre of the true distribution, p_y = E_{P*}[x_T | y] = [-2.5, 0, ..., 0]
and [+2.5, 0, ..., 0] (the mean over the six shades of b is 0 whatever pi_spu); prediction
argmax_y <f_I(x), f_T(p_y)>.

Learners. 'mmcl_lenet': a LeNet-5 image encoder (3 x 28 x 28 -> 128) and a linear text encoder
(200 -> 128) trained with the CLIP loss on raw inner products (no normalisation), logits
<f_I(x_i), f_T(x_T,j)> / temperature, temperature 1 (the paper states none). 'sl_lenet': the same
LeNet with a 2-way output, softmax cross-entropy. Both: SGD, momentum 0.9, lr 0.01, weight decay
0.001 (added to the gradient, as torch.optim.SGD does), batch 128, reshuffled every epoch, the last
partial batch dropped; 100 epochs (MMCL) and 40 (SL).

Data. Only the 10,000 MNIST test images exist here (the paper trained on the 60,000 training
images). A fixed permutation (SPLIT_SEED) splits them: the first n_train (8,000) train, the last
n_test (2,000) test, the same for every seed. A seed draws the colours, captions, test colours,
initialisation and batch order; accuracies are exact counts on the n_test test images.
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
from mmcl_theory.digits import load_digit_images, paint
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT, Learner
from mmcl_theory.losses import infonce_loss

# --------------------------------------------------------------------------------------------
# The paper's constants, and its Fig. 2
# --------------------------------------------------------------------------------------------

SHADES = ("dark blue", "medium blue", "light blue", "light red", "medium red", "dark red")
SHADE_RGB = np.array(  # our choice: the paper names the shades only
    [[0.0, 0.0, 0.5], [0.0, 0.0, 0.75], [0.4, 0.6, 1.0], [1.0, 0.6, 0.4], [0.75, 0.0, 0.0], [0.5, 0.0, 0.0]],
    dtype=np.float32)
SHADE_FAMILY = np.array([0, 0, 0, 1, 1, 1])  # 0 blue, 1 red
DIGIT_VALUE = np.arange(10, dtype=np.float64) - 4.5  # DICT[0..9] = -4.5, ..., 4.5
SHADE_VALUE = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])  # DICT[shade], in SHADES order
CLASS_MEAN_VALUE = np.array([DIGIT_VALUE[:5].mean(), DIGIT_VALUE[5:].mean()])  # -2.5, 2.5
FAMILY_MEAN_VALUE = np.array([SHADE_VALUE[:3].mean(), SHADE_VALUE[3:].mean()])  # -1.5, 1.5
NUM_CLASSES = 2
SPLIT_SEED = 0  # the fixed permutation splitting the 10k images into train and test
PROMPT = "class_centre"  # the zero-shot prompt's name in result rows

# Xue et al. 2024, Fig. 2 (OOD accuracy %, semi-synthetic MNIST), read from the PDF's vector paths, axis-calibrated
PAPER_FIG2 = {  # OOD accuracy (%) on P*: the pi_core curve at pi_spu = 1, the pi_spu curve at pi_core = 1, and SL
    "pi_core": {0.0: 58.94, 0.25: 72.36, 0.5: 74.99, 0.75: 75.88, 1.0: 76.21},
    "pi_spu": {0.0: 72.15, 0.5: 75.43, 1.0: 76.21},
    "supervised": 68.98,
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
    dataset: 'mnist_test' (the 10k MNIST test images under $MMCL_SHARED_DATA or ../shared/data) or a
      directory of MNIST idx files.
    n_train, n_test: the first n_train and last n_test images of the fixed permutation SPLIT_SEED.
    """

    pi_core: float = 1.0
    pi_spu: float = 1.0
    agreement: float = 0.995
    caption_noise_var: float = 1.0 / 2000.0
    caption_dim: int = 200
    dataset: str = "mnist_test"
    n_train: int = 8000
    n_test: int = 2000

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
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"{name}.dataset = {self.dataset!r} is not allowed: 'mnist_test' or a directory of "
                              "MNIST idx files")


@dataclasses.dataclass(frozen=True)
class PaperMnistSettings:
    """Optimisation of both learners (App. G.1): SGD with momentum and weight decay, minibatches, epochs.

    mmcl_epochs, sl_epochs: passes over the training images (paper: 100 and 40).
    batch_size: minibatch size (paper: 128); each epoch has n_train // batch_size batches.
    lr, momentum, weight_decay: paper 0.01, 0.9, 0.001.
    embed_dim: output size of both MMCL encoders (paper: 128).
    temperature: the CLIP loss's logits are inner products / temperature (the paper states none: 1).
    """

    mmcl_epochs: int = 100
    sl_epochs: int = 40
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.001
    embed_dim: int = 128
    temperature: float = 1.0

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


def colour_backgrounds(grey: np.ndarray, shades: np.ndarray) -> np.ndarray:
    """MNIST ink over the shade: grey (n, 28, 28) in [0, 1], shades (n,) -> RGB (n, 28, 28, 3) float32,
    x = g + (1 - g) SHADE_RGB[shade] (digits.paint, 'tint')."""
    return paint(grey.astype(np.float32), SHADE_RGB[shades], "tint").astype(np.float32)


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


@dataclasses.dataclass(frozen=True)
class PaperMnistData:
    """One seed's data. Train: images (n, 28, 28, 3), captions (n, caption_dim), labels (n,) (the class),
    digits (n,), shades (n,). Tests, one row per TESTS entry: images (3, m, 28, 28, 3), shades (3, m);
    test_labels (m,) and test_digits (m,) are shared by the three (the same images, recoloured)."""

    images: np.ndarray
    captions: np.ndarray
    labels: np.ndarray
    digits: np.ndarray
    shades: np.ndarray
    test_images: np.ndarray
    test_shades: np.ndarray
    test_labels: np.ndarray
    test_digits: np.ndarray


def split_indices(n_images: int, config: PaperMnistConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices into the dataset: the first n_train and the last n_test of the fixed
    permutation default_rng(SPLIT_SEED).permutation(n_images), disjoint by construction."""
    if config.n_train + config.n_test > n_images:
        raise ConfigError(f"PaperMnistConfig.n_train + n_test = {config.n_train + config.n_test} is out of range: "
                          f"allowed at most {n_images}, the number of images in dataset {config.dataset!r}")
    order = np.random.default_rng(SPLIT_SEED).permutation(n_images)
    return order[: config.n_train], order[n_images - config.n_test:]


def build_data(config: PaperMnistConfig, seed: int) -> PaperMnistData:
    """The training set and the three coloured test sets of one seed (the split is fixed, SPLIT_SEED).

    Independent streams of SeedSequence(seed): training shades, captions, test shades; so for one seed the
    images and colours are the same at every pi_core and pi_spu, and only the captions change.
    """
    grey, digits = load_digit_images(config.dataset)
    train, test = split_indices(digits.shape[0], config)
    shade_rng, caption_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    y = digit_class(digits[train])
    shades = draw_shades(y, config.agreement, shade_rng)
    test_y = digit_class(digits[test])
    test_shades = np.stack([draw_shades(test_y, shade_law(t, config), test_rng) for t in TESTS])
    return PaperMnistData(
        images=colour_backgrounds(grey[train], shades), captions=caption_vectors(digits[train], shades, config,
                                                                                 caption_rng),
        labels=y, digits=digits[train], shades=shades,
        test_images=np.stack([colour_backgrounds(grey[test], s) for s in test_shades]), test_shades=test_shades,
        test_labels=test_y, test_digits=digits[test])


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


def _conv(layer: dict, x: jax.Array, padding: str) -> jax.Array:
    y = jax.lax.conv_general_dilated(x, layer["w"], (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + layer["b"]


def _max_pool(x: jax.Array) -> jax.Array:
    """2 x 2 max pooling, stride 2: (n, h, w, c) -> (n, h/2, w/2, c)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def lenet(params: dict, images: jax.Array) -> jax.Array:
    """LeNet-5 on RGB 28 x 28 images: (n, 28, 28, 3) -> (n, out_dim).

    conv 5x5 'same' -> 28x28x6, ReLU, max pool -> 14x14x6; conv 5x5 'valid' -> 10x10x16, ReLU, max pool
    -> 5x5x16 = 400; fc 120, ReLU; fc 84, ReLU; linear out_dim (no activation).
    """
    x = _max_pool(jax.nn.relu(_conv(params["conv1"], images, "SAME")))
    x = _max_pool(jax.nn.relu(_conv(params["conv2"], x, "VALID")))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1"]["w"] + params["fc1"]["b"])
    x = jax.nn.relu(x @ params["fc2"]["w"] + params["fc2"]["b"])
    return x @ params["out"]["w"] + params["out"]["b"]


def text_encoder(params: dict, captions: jax.Array) -> jax.Array:
    """Linear text encoder f_T(t) = t W + b: (n, caption_dim) -> (n, embed_dim)."""
    return captions @ params["w"] + params["b"]


def init_params(key: jax.Array, kind: str, caption_dim: int, settings: PaperMnistSettings) -> dict:
    """Zero-shot ('mmcl_lenet'): {'image': LeNet -> embed_dim, 'text': linear caption_dim -> embed_dim};
    supervised ('sl_lenet'): {'image': LeNet -> 2}."""
    k_image, k_text = jax.random.split(key)
    if kind == SUPERVISED:
        return {"image": init_lenet(k_image, NUM_CLASSES)}
    return {"image": init_lenet(k_image, settings.embed_dim),
            "text": _uniform_layer(k_text, (caption_dim,), settings.embed_dim)}


def clip_loss(params: dict, images: jax.Array, captions: jax.Array, temperature: float) -> jax.Array:
    """The CLIP loss without normalisation: symmetric cross-entropy over the batch logits
    L_ij = <f_I(x_i), f_T(t_j)> / temperature, (CE(L, diag) + CE(L^T, diag)) / 2 (losses.infonce_loss)."""
    return infonce_loss(lenet(params["image"], images), text_encoder(params["text"], captions),
                        jnp.asarray(1.0 / temperature, jnp.float32))


def sl_loss(params: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of LeNet's 2-way logits against the class labels."""
    return optax.softmax_cross_entropy_with_integer_labels(lenet(params["image"], images), labels).mean()


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------


def optimiser(settings: PaperMnistSettings) -> optax.GradientTransformation:
    """SGD as torch.optim.SGD(lr, momentum, weight_decay): g + wd * theta, then momentum, then -lr."""
    return optax.chain(optax.add_decayed_weights(settings.weight_decay),
                       optax.sgd(settings.lr, momentum=settings.momentum))


def _loss_fn(kind: str, settings: PaperMnistSettings):
    """The training loss of a learner of this kind as f(params, images, targets)."""
    if kind == ZERO_SHOT:
        return lambda p, x, t: clip_loss(p, x, t, settings.temperature)
    return sl_loss


@functools.lru_cache(maxsize=8)
def compiled_step(kind: str, temperature: float, lr: float, momentum: float, weight_decay: float):
    """jit of one optimiser step, step(params, opt_state, images, targets, rows) -> (params, opt_state, loss),
    on the minibatch images[rows], targets[rows]; params and opt_state are donated.

    images (n, 28, 28, 3); targets: captions (n, caption_dim) for zero-shot, labels (n,) for supervised;
    rows (batch_size,) int. Keyed by what the step uses (not the epochs), so every run with the same
    optimiser shares it. The step, not the epoch, is the compiled unit: XLA on CPU runs LeNet's
    convolutions about 6 times slower inside a lax.scan body than at the top level of a program
    (measured here: 245 against 40 ms a step).
    """
    settings = PaperMnistSettings(lr=lr, momentum=momentum, weight_decay=weight_decay, temperature=temperature)
    loss_fn = _loss_fn(kind, settings)
    update = optimiser(settings).update

    def step(params, opt_state, images, targets, rows):
        value, grads = jax.value_and_grad(loss_fn)(params, images[rows], targets[rows])
        updates, opt_state = update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """A permutation of range(n) cut into n // batch_size minibatches (the last partial one dropped):
    (n // batch_size, batch_size) int32."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


def train(kind: str, key: jax.Array, data: PaperMnistData, settings: PaperMnistSettings) -> tuple[dict, float]:
    """Initialise from key and train a zero-shot (mmcl_epochs, on the captions) or supervised (sl_epochs, on the
    labels) learner; returns (params, last epoch's mean loss). A Learner record's fit (LEARNERS).

    Epoch e visits the minibatches epoch_batches(fold_in(key_shuffle, e), ...) in order; one compiled
    step (compiled_step) serves every step, epoch and seed.
    """
    from tqdm import tqdm

    n = data.images.shape[0]
    if settings.batch_size > n:
        raise ConfigError(f"PaperMnistSettings.batch_size = {settings.batch_size} is out of range: allowed at most "
                          f"PaperMnistConfig.n_train = {n}")
    k_init, k_shuffle = jax.random.split(key)
    params = init_params(k_init, kind, data.captions.shape[1], settings)
    opt_state = optimiser(settings).init(params)
    images = jnp.asarray(data.images)
    targets = jnp.asarray(data.captions if kind == ZERO_SHOT else data.labels)
    epochs = settings.mmcl_epochs if kind == ZERO_SHOT else settings.sl_epochs
    step = compiled_step(kind, settings.temperature, settings.lr, settings.momentum, settings.weight_decay)
    losses = []
    for epoch in tqdm(range(epochs), desc=kind, unit="epoch", leave=False, disable=None):
        losses = []
        for rows in epoch_batches(jax.random.fold_in(k_shuffle, epoch), n, settings.batch_size):
            params, opt_state, loss = step(params, opt_state, images, targets, rows)
            losses.append(loss)
    return params, float(jnp.mean(jnp.stack(losses)))


@functools.partial(jax.jit, static_argnames=("kind",))
def predict(kind: str, params: dict, images: jax.Array, prompts: jax.Array) -> jax.Array:
    """Predicted classes: (..., m, 28, 28, 3) -> (..., m) int32 (leading axes mapped with lax.map). A Learner
    record's scorers (LEARNERS), as the argmax of the class scores.

    Zero-shot: argmax_y <f_I(x), f_T(p_y)> over the prompts (2, caption_dim); supervised: argmax of the logits.
    """
    def one(x):
        if kind == ZERO_SHOT:
            return jnp.argmax(lenet(params["image"], x) @ text_encoder(params["text"], prompts).T, axis=-1)
        return jnp.argmax(lenet(params["image"], x), axis=-1)

    lead = images.shape[:-4]
    flat = images.reshape(-1, *images.shape[-4:])
    return jax.lax.map(one, flat).reshape(*lead, images.shape[-4]).astype(jnp.int32)


LEARNERS = (Learner("mmcl_lenet", ZERO_SHOT, functools.partial(train, ZERO_SHOT), functools.partial(predict, ZERO_SHOT),
                    trained=True),
            Learner("sl_lenet", SUPERVISED, functools.partial(train, SUPERVISED), functools.partial(predict, SUPERVISED),
                    trained=True))


def accuracies(learner: Learner, params: dict, data: PaperMnistData, config: PaperMnistConfig) -> np.ndarray:
    """Accuracy on each test of TESTS, an exact count over the m test images: (3,) float64."""
    predicted = np.asarray(learner.scorers(params, jnp.asarray(data.test_images),
                                           jnp.asarray(class_centre_prompts(config))))
    return (predicted == data.test_labels).sum(-1) / data.test_labels.shape[0]


def run_point(config: PaperMnistConfig, seeds: list[int], learners: tuple[Learner, ...],
              settings: PaperMnistSettings, route: str = "sampled") -> list[dict]:
    """Train and score every learner on every seed of one config; the model registry's runner
    (models.evaluate_grid, which orders the rows by learner).

    Returns one row per (learner, test, seed): {'learner', 'prompt' ('class_centre' or '' for SL), 'test',
    'seed', 'n' (n_train), 'accuracy', 'route' ('sampled'), 'final_loss' (the last epoch's mean minibatch
    loss), 'loss_floor' (''), 'converged' ('')}.
    """
    rows = []
    for seed in seeds:
        data = build_data(config, int(seed))
        for learner in learners:
            params, loss = learner.fit(jax.random.key(int(seed)), data, settings)
            for test, acc in zip(TESTS, accuracies(learner, params, data, config)):
                rows.append({"learner": learner.name, "prompt": PROMPT if learner.kind == ZERO_SHOT else "",
                             "test": test, "seed": int(seed), "n": config.n_train, "accuracy": float(acc),
                             "route": "sampled", "final_loss": loss, "loss_floor": "", "converged": ""})
    return rows


# --------------------------------------------------------------------------------------------
# The sweep's rows as the curves of Fig. 2
# --------------------------------------------------------------------------------------------


def fig2_curves(rows, test: str = "independent") -> dict:
    """Rows of the sweep paper_mnist (mmcl_theory/sweeps/paper_mnist.toml) as Fig. 2's curves on one test, per seed.

    rows: result-contract rows (dicts; values may be strings, as read from a CSV). Returns
    {'pi_core': {pi_core: {seed: accuracy}} at pi_spu = 1 (variant pi_spu_1),
     'pi_spu': {pi_spu: {seed: accuracy}} at pi_core = 1 (the pi_core = 1 point of each variant pi_spu_X),
     'supervised': {seed: accuracy}} (the SL rows).
    """
    curves: dict = {"pi_core": {}, "pi_spu": {}, "supervised": {}}
    for r in rows:
        if r["test"] != test:
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
