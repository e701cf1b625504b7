"""CLIP model shapes, published parameter counts, normalisation, temperature, causality, decay mask."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory.clip import models


@functools.lru_cache(maxsize=None)
def built(name, seed=0):
    """(config, model, variables) of a registered config, built once per test session."""
    cfg = models.model_config(name)
    model = models.create_model(cfg, eot_id=cfg.text.vocab_size - 1)
    return cfg, model, models.init_variables(model, jax.random.key(seed))


@pytest.mark.parametrize("name, visual, textual", [
    # OpenAI CLIP: RN50 102,007,137 params in all, visual 38,316,896; ViT-B/32 151,277,313, visual 87,849,216.
    ("RN50", 38_316_896, 102_007_137 - 38_316_896 - 1),
    ("ViT-B-32", 87_849_216, 151_277_313 - 87_849_216 - 1),
])
def test_published_parameter_counts(name, visual, textual):
    counts = models.tower_param_counts(models.model_config(name))
    assert counts == {"visual": visual, "textual": textual, "logit_scale": 1}


def _tokens(batch, length, eot, rng):
    toks = rng.integers(1, eot, (batch, length)).astype(np.int32)
    ends = rng.integers(2, length - 1, batch)
    toks[np.arange(length)[None] > ends[:, None]] = 0
    toks[np.arange(batch), ends] = eot
    return toks, ends


@pytest.mark.parametrize("name", ["ViT-test", "RN-test"])
def test_forward_shapes_normalised_and_initial_temperature(name):
    cfg, model, variables = built(name)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, cfg.vision.image_size, cfg.vision.image_size, 3), dtype=np.uint8)
    tokens, _ = _tokens(3, cfg.text.context_length, cfg.text.vocab_size - 1, rng)
    ei, et, scale = jax.jit(model.apply)(variables, models.preprocess(images), tokens)
    assert ei.shape == et.shape == (3, cfg.embed_dim) and ei.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(ei, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(et, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(scale), 1 / 0.07, rtol=1e-5)


def test_temperature_is_clamped_at_100():
    cfg, model, variables = built("ViT-test")
    params = dict(variables["params"], logit_scale=jnp.array(10.0))
    scale = model.apply({"params": params}, method=models.CLIP.temperature_scale)
    assert float(scale) == pytest.approx(100.0)


def test_text_feature_is_causal_and_read_at_eot():
    cfg, model, variables = built("ViT-test")
    eot = cfg.text.vocab_size - 1
    rng = np.random.default_rng(1)
    tokens, ends = _tokens(4, cfg.text.context_length, eot, rng)
    encode = jax.jit(lambda v, t: model.apply(v, t, method=models.CLIP.encode_text))
    enc = lambda t: np.asarray(encode(variables, t))
    base = enc(tokens)
    after = tokens.copy()
    for i, e in enumerate(ends):
        after[i, e + 1:] = 7  # tokens after EOT must not matter (causal mask + EOT pooling)
    np.testing.assert_allclose(enc(after), base, atol=1e-6)
    before = tokens.copy()
    before[:, 1] = (before[:, 1] % (eot - 2)) + 1  # change a token before EOT
    before[:, 1] = np.where(before[:, 1] == tokens[:, 1], before[:, 1] + 1, before[:, 1])
    assert np.all(np.abs(enc(before) - base).max(axis=1) > 1e-4)


def test_resnet_batch_stats_update_only_in_training():
    cfg, model, variables = built("RN-test")
    images = jax.random.normal(jax.random.key(2), (4, 32, 32, 3))
    tokens = jnp.full((4, cfg.text.context_length), cfg.text.vocab_size - 1, jnp.int32)
    _, updates = jax.jit(lambda v, i, t: model.apply(v, i, t, train=True, mutable=["batch_stats"]))(
        variables, images, tokens)
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                                     updates["batch_stats"])
    assert any(jax.tree_util.tree_leaves(changed))


def test_weight_decay_mask_excludes_norms_biases_and_temperature():
    params = built("RN-test")[2]["params"]
    mask = models.weight_decay_mask(params)
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat["['logit_scale']"] is False
    for key, decayed in flat.items():
        if "bias" in key or "scale" in key or "ln_" in key or "bn" in key:
            assert decayed is False, key
        if key.endswith("['kernel']") or "embedding" in key and "class" not in key:
            assert decayed is True, key


def test_bf16_compute_gives_float32_unit_embeddings():
    cfg = models.model_config("ViT-test")
    model = models.create_model(cfg, eot_id=cfg.text.vocab_size - 1, dtype=jnp.bfloat16)
    variables = models.init_variables(model, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
    images, tokens = models.dummy_inputs(cfg, 2)
    ei, et, _ = jax.jit(model.apply)(variables, images.astype(jnp.bfloat16), tokens)
    assert ei.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(ei, axis=1), 1.0, rtol=1e-3)


def test_registry_errors_name_field_and_allowed_values():
    with pytest.raises(ValueError, match="model.name = 'nope'"):
        models.model_config("nope")
    with pytest.raises(ValueError, match="vision.patch_size"):
        models.VisionConfig(kind="vit", image_size=30, width=32, layers=2, heads=2, patch_size=8)
    with pytest.raises(ValueError, match="text.heads"):
        models.TextConfig(context_length=8, vocab_size=10, width=30, heads=4, layers=1)
    assert {"RN50", "ViT-B-32", "ViT-S-32"} <= set(models.list_models())
    assert math.isclose(models.LOGIT_SCALE_INIT, 1 / 0.07)


# ----------------------------------------------------------------------------------------------
# Additions for the objectives: token outputs (FILIP), linear head, SimCLR MLP, text depth
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, patches", [("ViT-test", (32 // 8) ** 2), ("RN-test", (32 // 32) ** 2)])
def test_image_tokens_share_parameters_with_the_global_embedding(name, patches):
    cfg, model, variables = built(name)
    images = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
    both = jax.jit(lambda v, x: (model.apply(v, x, method=models.CLIP.encode_image_tokens),
                                 model.apply(v, x, method=models.CLIP.encode_image)))
    (emb, tokens), emb_plain = both(variables, images)
    assert tokens.shape == (2, patches, cfg.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(tokens, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb, emb_plain, atol=1e-6)


def test_text_tokens_mask_padding_and_eot_token_is_the_global_embedding():
    cfg, model, variables = built("ViT-test")
    eot = cfg.text.vocab_size - 1
    tokens, ends = _tokens(3, cfg.text.context_length, eot, np.random.default_rng(4))
    both = jax.jit(lambda v, t: (model.apply(v, t, method=models.CLIP.encode_text_tokens),
                                 model.apply(v, t, method=models.CLIP.encode_text)))
    (emb, token_emb, mask), emb_plain = both(variables, tokens)
    assert token_emb.shape == (3, cfg.text.context_length, cfg.embed_dim)
    expected_mask = np.arange(cfg.text.context_length)[None] <= ends[:, None]  # real tokens up to EOT
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(emb, emb_plain, atol=1e-6)
    np.testing.assert_allclose(token_emb[np.arange(3), ends], emb, atol=1e-6)


def test_heads_add_parameters_without_changing_the_towers():
    cfg, plain, plain_vars = built("ViT-test")
    model = models.create_model(cfg, eot_id=cfg.text.vocab_size - 1, num_classes=7, ssl_dim=16)
    variables = models.init_variables(model, jax.random.key(0))
    params = variables["params"]
    assert set(params) == {"visual", "textual", "logit_scale", "classifier", "ssl_head"}
    same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)),
                                  {k: params[k] for k in plain_vars["params"]}, plain_vars["params"])
    assert all(jax.tree_util.tree_leaves(same))
    images = jax.random.normal(jax.random.key(5), (2, 32, 32, 3))
    heads = jax.jit(lambda v, x: (model.apply(v, x, method=models.CLIP.classify),
                                  model.apply(v, x, method=models.CLIP.ssl_project)))
    logits, projections = heads(variables, images)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, 0.0)  # zero-initialised head: uniform start
    e = cfg.embed_dim  # head: e*7 + 7; SimCLR MLP: e*4e + 4e, 4e*4e + 4e, 4e*16 + 16
    assert models.count_params(params["classifier"]) == e * 7 + 7
    assert models.count_params(params["ssl_head"]) == (e * 4 * e + 4 * e) + (16 * e * e + 4 * e) + (4 * e * 16 + 16)
    assert projections.shape == (2, 16)


def test_supervised_model_without_text_tower():
    cfg = models.model_config("ViT-test")
    model = models.create_model(cfg, eot_id=cfg.text.vocab_size - 1, num_classes=3, text_tower=False)
    assert set(models.init_variables(model, jax.random.key(0))["params"]) == {"visual", "logit_scale", "classifier"}


def test_text_depth_option_changes_one_block_per_layer():
    # One pre-LN block of width w: ln_1 2w, in_proj 3w^2 + 3w, out_proj w^2 + w, ln_2 2w,
    # c_fc 4w^2 + 4w, c_proj 4w^2 + w = 12 w^2 + 13 w; the text tower of ViT-test has w = 32.
    w = 32
    deep = models.tower_param_counts(models.model_config("ViT-test", text_layers=3))["textual"]
    shallow = models.tower_param_counts(models.model_config("ViT-test", text_layers=1))["textual"]
    assert deep - shallow == 2 * (12 * w * w + 13 * w)
    assert models.model_config("ViT-B-32", text_layers=models.CURTAILED_TEXT_LAYERS).text.layers == 3
    with pytest.raises(ValueError, match="text.layers"):
        models.model_config("ViT-test", text_layers=0)
