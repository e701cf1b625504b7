"""Two-tower CLIP models in Flax (linen): ResNet and ViT image towers, a causal text transformer.

Named configurations live in ``model_configs.json`` beside this file (open_clip style):
RN50 and ViT-B-32 at 224 px with the published shapes, ViT-S-32, and small 64 px and test sizes.
``model_config(name, text_layers=k)`` changes the text-tower depth (the CLIP benchmark of Cui et al.
2022 curtails it; ``CURTAILED_TEXT_LAYERS``).

Beyond the two global embeddings, the model has what the objectives of
``mmcl_theory.clip.objectives`` need, all optional and outside the plain CLIP parameter tree:
token-level outputs for FILIP (``encode_image_tokens``, ``encode_text_tokens``; same parameters),
a linear classification head for the supervised baseline (``num_classes``; with
``text_tower=False`` the text tower is not built) and a SimCLR projection MLP for SLIP (``ssl_dim``).

Conventions: images enter as uint8 (B, H, W, 3) and are normalised by :func:`preprocess`;
tokens are int32 (B, L) and the text feature is read at the end-of-text (EOT) token.
Both towers return L2-normalised float32 embeddings (B, embed_dim). The inverse temperature is
exp(log_scale), log_scale initialised to log(1/0.07) and clamped to [0, log(100)] (open_clip).
Parameters are float32; ``dtype`` (bf16 on GPU) is the compute dtype.
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmcl_theory.config import ConfigError, check_choice, check_range
from mmcl_theory.losses import l2_normalise

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
LOGIT_SCALE_INIT = 1.0 / 0.07
LOGIT_SCALE_MAX = 100.0
# Curtailed text-encoder depth: a quarter of the 12-layer CLIP text transformer. Cui et al. (2022)
# report that curtailing the text encoder cuts training cost at little accuracy loss; the depth
# is a config value (model.text_layers), this is the default of the curtailed setting.
CURTAILED_TEXT_LAYERS = 3


# ----------------------------------------------------------------------------------------------
# Configs and registry
# ----------------------------------------------------------------------------------------------
MAX_SIZE = 2**20  # the largest width, depth, vocabulary or context length a config may name


def _check_positive(section: str, **values: int) -> None:
    for name, value in values.items():
        check_range(section, name, value, 1, MAX_SIZE, integer=True)


def _check_divides(section: str, field: str, value: int, what: str, total: int) -> None:
    if total % value:
        raise ConfigError(f"{section}.{field} = {value} is not allowed: a divisor of {what} {total}")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """Image tower: kind 'resnet' (layers = 4 stage depths) or 'vit' (layers = depth, patch_size)."""

    kind: str
    image_size: int
    width: int
    layers: int | tuple[int, ...]
    heads: int
    patch_size: int | None = None

    def __post_init__(self):
        check_choice("vision", "kind", self.kind, ("resnet", "vit"))
        _check_positive("vision", image_size=self.image_size, width=self.width, heads=self.heads)
        if self.kind == "resnet":
            layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else None
            if layers is None or len(layers) != 4:
                raise ConfigError(f"vision.layers = {self.layers!r} is not allowed: a ResNet needs 4 stage depths")
            _check_positive("vision", **{f"layers[{i}]": d for i, d in enumerate(layers)})
            object.__setattr__(self, "layers", layers)
            if self.image_size % 32:
                raise ConfigError(f"vision.image_size = {self.image_size} is not allowed: a ResNet needs a multiple of 32")
            _check_divides("vision", "heads", self.heads, "the pooled width", self.width * 32)
        else:
            _check_positive("vision", layers=self.layers, patch_size=self.patch_size)
            _check_divides("vision", "patch_size", self.patch_size, "image_size", self.image_size)
            _check_divides("vision", "heads", self.heads, "width", self.width)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Causal text transformer over ``context_length`` tokens of a ``vocab_size`` vocabulary."""

    context_length: int
    vocab_size: int
    width: int
    heads: int
    layers: int

    def __post_init__(self):
        _check_positive("text", context_length=self.context_length, vocab_size=self.vocab_size,
                        width=self.width, heads=self.heads, layers=self.layers)
        _check_divides("text", "heads", self.heads, "width", self.width)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """A registered model: both towers project to a shared embedding of size ``embed_dim``."""

    name: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig

    def __post_init__(self):
        _check_positive("model", embed_dim=self.embed_dim)


def _registry() -> dict[str, dict]:
    text = resources.files("mmcl_theory.clip").joinpath("model_configs.json").read_text()
    return json.loads(text)


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(_registry())


def model_config(name: str, *, vocab_size: int | None = None, context_length: int | None = None,
                 image_size: int | None = None, text_layers: int | None = None) -> CLIPConfig:
    """The registered config ``name``, optionally with the tokenizer's vocabulary/context, the image
    size and the text-tower depth (``text_layers``; None = the registry's)."""
    reg = _registry()
    check_choice("model", "name", name, sorted(reg))
    raw = reg[name]
    vision = dict(raw["vision"])
    text = dict(raw["text"])
    if image_size is not None:
        vision["image_size"] = image_size
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    if context_length is not None:
        text["context_length"] = context_length
    if text_layers is not None:
        text["layers"] = text_layers
    return CLIPConfig(name=name, embed_dim=raw["embed_dim"], vision=VisionConfig(**vision),
                      text=TextConfig(**text))


def config_to_dict(config: CLIPConfig) -> dict[str, Any]:
    """The config as nested plain dicts (run.json's 'model_config'; model_from_run reads it back)."""
    return dataclasses.asdict(config)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
def preprocess(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 (B, H, W, 3) -> (x / 255 - mean) / std with CLIP's channel statistics, in ``dtype``."""
    x = images.astype(jnp.float32) / 255.0
    return ((x - CLIP_MEAN) / CLIP_STD).astype(dtype)


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused qkv projection: softmax(q k^T / sqrt(d_head)) v, then out-proj."""

    width: int
    heads: int
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, _ = x.shape
        d = self.width // self.heads
        qkv = nn.Dense(3 * self.width, dtype=self.dtype, name="in_proj")(x)
        q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.heads, d), 3, axis=2)
        out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
        return nn.Dense(self.width, dtype=self.dtype, name="out_proj")(out.reshape(b, t, self.width))


class ResidualBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    width: int
    heads: int
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_1")(x)
        x = x + MultiHeadAttention(self.width, self.heads, self.causal, self.dtype, name="attn")(y)
        y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_2")(x)
        y = nn.Dense(4 * self.width, dtype=self.dtype, name="c_fc")(y)
        y = nn.gelu(y, approximate=True)
        return x + nn.Dense(self.width, dtype=self.dtype, name="c_proj")(y)


class Transformer(nn.Module):
    """``layers`` pre-LN residual blocks (attention over the sequence, causal for text, then an MLP):
    (B, L, width) -> (B, L, width)."""

    width: int
    heads: int
    layers: int
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.layers):
            x = ResidualBlock(self.width, self.heads, self.causal, self.dtype, name=f"block_{i}")(x)
        return x


# ----------------------------------------------------------------------------------------------
# Image towers
# ----------------------------------------------------------------------------------------------
class VisionTransformer(nn.Module):
    """ViT: patchify (conv, no bias) + class token + positions, pre-LN transformer, LN and projection
    of the class token. (B, H, W, 3) -> (B, embed_dim); with ``return_tokens`` also the patch tokens
    through the same LN and projection, (B, (H/p)(W/p), embed_dim)."""

    config: VisionConfig
    embed_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, return_tokens: bool = False):
        c = self.config
        p = c.patch_size
        x = nn.Conv(c.width, (p, p), strides=(p, p), use_bias=False, dtype=self.dtype, name="conv1")(x)
        b = x.shape[0]
        x = x.reshape(b, -1, c.width)
        scale = c.width ** -0.5
        cls = self.param("class_embedding", nn.initializers.normal(scale), (c.width,))
        pos = self.param("positional_embedding", nn.initializers.normal(scale), (x.shape[1] + 1, c.width))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, c.width)), x], axis=1)
        x = x + pos.astype(x.dtype)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_pre")(x)
        x = Transformer(c.width, c.heads, c.layers, dtype=self.dtype, name="transformer")(x)
        ln_post = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_post")
        proj = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        kernel_init=nn.initializers.normal(scale), name="proj")
        if return_tokens:
            out = proj(ln_post(x))
            return out[:, 0], out[:, 1:]
        return proj(ln_post(x[:, 0]))


class Bottleneck(nn.Module):
    """ResNet-D style bottleneck (CLIP's ModifiedResNet): 1x1, 3x3, avg-pool stride, 1x1 (4x planes);
    the shortcut average-pools then projects with a 1x1 conv when the shape changes."""

    planes: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name, **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                               epsilon=1e-5, dtype=self.dtype, name=name, **kw)
        pool = lambda y: nn.avg_pool(y, (self.stride, self.stride), (self.stride, self.stride))
        out = nn.relu(norm("bn1")(nn.Conv(self.planes, (1, 1), use_bias=False, dtype=self.dtype, name="conv1")(x)))
        out = nn.Conv(self.planes, (3, 3), padding=1, use_bias=False, dtype=self.dtype, name="conv2")(out)
        out = nn.relu(norm("bn2")(out))
        if self.stride > 1:
            out = pool(out)
        out = nn.Conv(4 * self.planes, (1, 1), use_bias=False, dtype=self.dtype, name="conv3")(out)
        out = norm("bn3", scale_init=nn.initializers.zeros)(out)
        if self.stride > 1 or x.shape[-1] != 4 * self.planes:
            if self.stride > 1:
                x = pool(x)
            x = nn.Conv(4 * self.planes, (1, 1), use_bias=False, dtype=self.dtype, name="downsample_conv")(x)
            x = norm("downsample_bn")(x)
        return nn.relu(out + x)


class AttentionPool(nn.Module):
    """CLIP's attention pooling: the spatial mean token (plus positions) attends over all tokens.
    (B, h, w, C) -> (B, output_dim); with ``return_tokens`` also the spatial tokens through the value
    and output projections (dense features, as the pooled output of a one-token attention),
    (B, h*w, output_dim)."""

    heads: int
    output_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, return_tokens: bool = False):
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        pos = self.param("positional_embedding", nn.initializers.normal(c ** -0.5), (h * w + 1, c))
        x = x + pos.astype(x.dtype)
        d = c // self.heads
        q = nn.Dense(c, dtype=self.dtype, name="q_proj")(x[:, :1]).reshape(b, 1, self.heads, d)
        k = nn.Dense(c, dtype=self.dtype, name="k_proj")(x).reshape(b, h * w + 1, self.heads, d)
        v = nn.Dense(c, dtype=self.dtype, name="v_proj")(x).reshape(b, h * w + 1, self.heads, d)
        out = jax.nn.dot_product_attention(q, k, v).reshape(b, c)
        c_proj = nn.Dense(self.output_dim, dtype=self.dtype, name="c_proj")
        if return_tokens:
            return c_proj(out), c_proj(v[:, 1:].reshape(b, h * w, c))
        return c_proj(out)


class ModifiedResNet(nn.Module):
    """CLIP ResNet: 3-conv stem + avg-pool, 4 bottleneck stages (strides 1, 2, 2, 2), attention pool."""

    config: VisionConfig
    embed_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, return_tokens: bool = False):
        c = self.config
        w = c.width
        for i, (ch, stride) in enumerate([(w // 2, 2), (w // 2, 1), (w, 1)], start=1):
            x = nn.Conv(ch, (3, 3), strides=(stride, stride), padding=1, use_bias=False,
                        dtype=self.dtype, name=f"stem_conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, name=f"stem_bn{i}")(x)
            x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        for stage, depth in enumerate(c.layers):
            planes = w * 2 ** stage
            for j in range(depth):
                stride = 2 if (stage > 0 and j == 0) else 1
                x = Bottleneck(planes, stride, self.dtype, name=f"layer{stage + 1}_{j}")(x, train)
        return AttentionPool(c.heads, self.embed_dim, self.dtype, name="attnpool")(x, return_tokens)


# ----------------------------------------------------------------------------------------------
# Text tower and CLIP
# ----------------------------------------------------------------------------------------------
class TextTransformer(nn.Module):
    """Causal transformer; the feature is ln_final(x) at the EOT token, projected (no bias).
    tokens (B, L) int32 -> (B, embed_dim). The EOT position is the first token equal to ``eot_id``
    (the last position when a truncated sequence has none). With ``return_tokens`` also every
    position through the same LN and projection, (B, L, embed_dim), and the mask (B, L) bool of the
    real tokens (positions up to and including EOT; the padding after it is False)."""

    config: TextConfig
    embed_dim: int
    eot_id: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, return_tokens: bool = False):
        c = self.config
        x = nn.Embed(c.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embedding")(tokens)
        pos = self.param("positional_embedding", nn.initializers.normal(0.01), (c.context_length, c.width))
        x = x + pos[: tokens.shape[1]].astype(x.dtype)
        x = Transformer(c.width, c.heads, c.layers, causal=True, dtype=self.dtype, name="transformer")(x)
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_final")(x)
        is_eot = tokens == self.eot_id
        eot = jnp.where(is_eot.any(axis=1), jnp.argmax(is_eot, axis=1), tokens.shape[1] - 1)
        proj = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                        kernel_init=nn.initializers.normal(c.width ** -0.5), name="text_projection")
        if return_tokens:
            out = proj(x)
            mask = jnp.arange(tokens.shape[1])[None, :] <= eot[:, None]
            return out[jnp.arange(x.shape[0]), eot], out, mask
        return proj(x[jnp.arange(x.shape[0]), eot])


class SimCLRProjection(nn.Module):
    """SLIP's projection MLP for the SimCLR term: Dense(hidden), ReLU, Dense(hidden), ReLU,
    Dense(out_dim) (SLIP's 3 layers, without its batch norm). (B, D) -> (B, out_dim)."""

    hidden_dim: int
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x))
        x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc2")(x))
        return nn.Dense(self.out_dim, dtype=self.dtype, name="fc3")(x)


class CLIP(nn.Module):
    """Two towers with L2-normalised embeddings and a learnable inverse temperature.

    __call__(images (B,H,W,3) normalised, tokens (B,L)) -> (emb_image (B,D), emb_text (B,D), scale),
    scale = exp(clip(log_scale, 0, log 100)) in [1, 100], log_scale initialised to log(1/0.07).

    Optional parts (none by default, so the plain CLIP parameter tree is unchanged):
    ``num_classes`` > 0 adds ``classifier``, a linear head on the unnormalised image feature
    (``classify``); ``ssl_dim`` > 0 adds ``ssl_head``, a SimCLR projection MLP (``ssl_project``);
    ``text_tower=False`` leaves the text tower out of ``init_variables`` (supervised baseline).
    """

    config: CLIPConfig
    eot_id: int
    dtype: Any = jnp.float32
    num_classes: int = 0
    ssl_dim: int = 0
    text_tower: bool = True

    def setup(self):
        tower = VisionTransformer if self.config.vision.kind == "vit" else ModifiedResNet
        self.visual = tower(self.config.vision, self.config.embed_dim, self.dtype)
        self.textual = TextTransformer(self.config.text, self.config.embed_dim, self.eot_id, self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(LOGIT_SCALE_INIT)), ())
        if self.num_classes:
            self.classifier = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros)
        if self.ssl_dim:
            self.ssl_head = SimCLRProjection(4 * self.config.embed_dim, self.ssl_dim, self.dtype)

    def encode_image(self, images, train: bool = False):
        """f_I(x) / ||f_I(x)||: uint8 images (B, S, S, 3) -> float32 (B, embed_dim)."""
        return l2_normalise(self.visual(images, train))

    def encode_text(self, tokens):
        """f_T(t) / ||f_T(t)|| at the EOT token: int32 tokens (B, L) -> float32 (B, embed_dim)."""
        return l2_normalise(self.textual(tokens))

    def encode_image_tokens(self, images, train: bool = False):
        """(emb_image (B, D), patch tokens (B, P, D)), both normalised; emb_image as encode_image."""
        emb, tokens = self.visual(images, train, return_tokens=True)
        return l2_normalise(emb), l2_normalise(tokens)

    def encode_text_tokens(self, tokens):
        """(emb_text (B, D), token embeddings (B, L, D), both normalised; mask (B, L) bool of the real
        tokens); emb_text as encode_text."""
        emb, token_emb, mask = self.textual(tokens, return_tokens=True)
        return l2_normalise(emb), l2_normalise(token_emb), mask

    def classify(self, images, train: bool = False):
        """Class logits (B, num_classes) float32 of the linear head on the image feature."""
        return self.classifier(self.visual(images, train)).astype(jnp.float32)

    def ssl_project(self, images, train: bool = False):
        """SimCLR projections (B, ssl_dim) float32 (unnormalised) of the image feature."""
        return self.ssl_head(self.visual(images, train)).astype(jnp.float32)

    def temperature_scale(self):
        """The logit scale 1/tau = exp(logit_scale), clipped to [1, LOGIT_SCALE_MAX] (a scalar)."""
        return jnp.exp(jnp.clip(self.logit_scale, 0.0, math.log(LOGIT_SCALE_MAX)))

    def __call__(self, images, tokens, train: bool = False):
        return self.encode_image(images, train), self.encode_text(tokens), self.temperature_scale()

    def initialise(self, images, tokens):
        """Touch every part this model has (for init): the image tower, the text tower when
        ``text_tower``, the head and the SimCLR MLP when configured, and the temperature."""
        outputs = [self.encode_image(images), self.temperature_scale()]
        if self.text_tower:
            outputs.append(self.encode_text(tokens))
        if self.num_classes:
            outputs.append(self.classify(images))
        if self.ssl_dim:
            outputs.append(self.ssl_project(images))
        return outputs


def create_model(config: CLIPConfig, eot_id: int, dtype=jnp.float32, *, num_classes: int = 0,
                 ssl_dim: int = 0, text_tower: bool = True) -> CLIP:
    """The CLIP module; num_classes/ssl_dim/text_tower as in :class:`CLIP` (defaults: plain CLIP)."""
    return CLIP(config, eot_id, dtype, num_classes=num_classes, ssl_dim=ssl_dim, text_tower=text_tower)


def dummy_inputs(config: CLIPConfig, batch: int = 2) -> tuple[jax.Array, jax.Array]:
    """Zero images (batch, S, S, 3) float32 and zero tokens (batch, L) int32 for init/shape checks."""
    s = config.vision.image_size
    return (jnp.zeros((batch, s, s, 3), jnp.float32),
            jnp.zeros((batch, config.text.context_length), jnp.int32))


def init_variables(model: CLIP, rng: jax.Array) -> dict:
    """Flax variables {'params', and 'batch_stats' for ResNets}, float32. A plain CLIP is
    initialised through __call__; optional parts through CLIP.initialise (parameters are drawn per
    module path, so the towers get the same values either way)."""
    images, tokens = dummy_inputs(model.config)
    if model.num_classes or model.ssl_dim or not model.text_tower:
        return dict(jax.jit(lambda r: model.init(r, images, tokens, method=CLIP.initialise))(rng))
    return dict(jax.jit(model.init, static_argnames="train")(rng, images, tokens, train=False))


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def tower_param_counts(config: CLIPConfig) -> dict[str, int]:
    """Parameter counts {'visual', 'textual', 'logit_scale'} from shapes only (no allocation)."""
    model = create_model(config, eot_id=0)
    shapes = jax.eval_shape(lambda r: init_variables(model, r), jax.random.key(0))["params"]
    return {k: count_params(v) for k, v in shapes.items()}


def weight_decay_mask(params: Any) -> Any:
    """True for weights that take decay: matrices and conv kernels, incl. embeddings (ndim >= 2).
    Norm scales/biases, biases, the class token and the temperature (all ndim < 2) are excluded."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)

