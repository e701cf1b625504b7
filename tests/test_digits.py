"""Tests for model M3 (mmcl_theory/digits.py, digits_learners.py): loaders, measurements, captions, colours,
the exact expectation of the cross-covariance, the premise (SL fails) and the richness effect."""

import dataclasses
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory import digits as dg
from mmcl_theory import digits_learners as dl
from mmcl_theory.config import ConfigError
from mmcl_theory.learners import mmcl_closed_form
from mmcl_theory.models import evaluate_grid
from mmcl_theory.results import ROW_KEYS
from mmcl_theory.theory import truncate_rank


def run_point(config, seeds, learners, settings=None) -> list[dict]:
    """One digits config's rows through the model registry's grid."""
    return evaluate_grid([config], seeds, learners, settings)[0]

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # ../shared/data/mnist_test/SOURCE.md


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.astype(np.uint8).tobytes()


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def test_mnist_test_set_label_counts(shared_data):
    images, labels = dg.load_mnist(shared_data / "mnist_test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() == 1.0
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4) * 7 % 256
    data = _idx_bytes(images, 2051)
    path = tmp_path / ("x.gz" if compress else "x")
    path.write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(dg.read_idx(path, "images"), images)


def test_load_mnist_directory_raw_files(tmp_path):
    images = np.zeros((3, 28, 28)); images[1, 5, 5] = 255
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(images, 2051))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([3, 1, 4]), 2049))
    grey, labels = dg.load_mnist(tmp_path)
    assert labels.tolist() == [3, 1, 4] and grey[1, 5, 5] == 1.0 and grey.sum() == 1.0


@pytest.mark.parametrize(
    "name, content",
    [
        ("wrong_magic", _idx_bytes(np.zeros((2, 2, 2)), 2049)),
        ("truncated", _idx_bytes(np.zeros((2, 2, 2)), 2051)[:-3]),
        ("too_short", b"\x00\x00"),
        ("bad_gzip", b"\x1f\x8b" + b"not really gzip"),
        ("missing", None),
    ],
)
def test_malformed_or_missing_idx_gives_one_clear_line(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(dg.DigitsDataError) as info:
        dg.read_idx(path, "images")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "expected an MNIST idx images file" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_mnist_directory_errors_name_the_file(tmp_path):
    with pytest.raises(dg.DigitsDataError, match="not a directory"):
        dg.load_mnist(tmp_path / "nowhere")
    with pytest.raises(dg.DigitsDataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        dg.load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28)), 2051))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2]), 2049))
    with pytest.raises(dg.DigitsDataError, match="2 labels for 3 images"):
        dg.load_mnist(tmp_path)


def test_sklearn_digits_embedded():
    images, labels = dg.load_sklearn_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0.0 and images.max() == 1.0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# ---------------------------------------------------------------------------------------------
# Pixel measurements on crafted images (expected values by hand)
# ---------------------------------------------------------------------------------------------


def _canvas():
    return np.zeros((28, 28))


def test_thickness_thin_vs_thick_bar():
    thin, thick = _canvas(), _canvas()
    thin[4:24, 10:12] = 1.0  # 20 x 2 bar: mass 40, perimeter 2 (20 + 2) = 44, t = 80 / 44
    thick[4:24, 10:14] = 1.0  # 20 x 4 bar: mass 80, perimeter 48, t = 160 / 48
    np.testing.assert_allclose(dg.ink_mass(np.stack([thin, thick])), [40.0, 80.0])
    np.testing.assert_allclose(dg.boundary_length(np.stack([thin, thick])), [44.0, 48.0])
    np.testing.assert_allclose(dg.stroke_thickness(np.stack([thin, thick])), [80 / 44, 160 / 48])
    assert dg.stroke_thickness(_canvas()) == 0.0


def test_slant_upright_and_slanted_strokes():
    upright, right, half, left = _canvas(), _canvas(), _canvas(), _canvas()
    upright[4:24, 12] = 1.0
    for i in range(8):
        right[10 + i, 20 - i] = 1.0  # '/': column falls by 1 per row down -> slant +1
        left[10 + i, 5 + i] = 1.0  # '\' -> slant -1
    for i in range(0, 8, 2):
        half[10 + i, 20 - i // 2] = 1.0  # column falls by 1 per 2 rows -> slant +0.5
    np.testing.assert_allclose(dg.slant(np.stack([upright, right, half, left])), [0.0, 1.0, 0.5, -1.0], atol=1e-12)


def test_size_small_vs_large_blob():
    small, large = _canvas(), _canvas()
    small[12:15, 12:15] = 1.0
    large[5:19, 8:16] = 0.8
    np.testing.assert_allclose(dg.digit_size(np.stack([small, large])), [3 / 28, 14 / 28])
    assert dg.digit_size(_canvas() + 0.4) == 0.0  # nothing reaches the 0.5 threshold


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def test_tertile_bins_within_class():
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    edges = dg.within_class_tertiles(values, labels)
    np.testing.assert_allclose(edges[:2], [[5 / 3, 7 / 3], [50 / 3, 70 / 3]])
    # 3.0 is the thickest of class 0 but would be the thinnest of class 1
    assert dg.tertile_bins(values, labels, edges).tolist() == [0, 1, 2, 0, 1, 2]
    assert dg.tertile_bins(np.array([3.0]), np.array([1]), edges).tolist() == [0]


def test_captions_name_measured_details():
    # three class-1 strokes: thin left-leaning small; 2-wide upright medium; 4-wide right-leaning tall
    images = np.zeros((3, 28, 28))
    images[0, 12:14, 10] = images[0, 14:16, 11] = 1.0  # leaning left: thickness 8 / 12, slant < 0, height 4
    images[1, 6:24, 12:14] = 1.0  # 18 x 2, upright
    for i in range(20):
        images[2, 4 + i, 20 - i // 2 : 24 - i // 2] = 1.0  # 20 tall, 4 wide, leaning right
    labels = np.array([1, 1, 1])
    edges = {d: dg.within_class_tertiles(dg.MEASUREMENTS[d](images), labels) for d in dg.DETAILS}
    bins = np.stack([dg.tertile_bins(dg.MEASUREMENTS[d](images), labels, edges[d]) for d in dg.DETAILS], axis=1)
    tokens = dg.caption_tokens(labels, bins, np.array([0, 0, 9]), 1.0, True, np.random.default_rng(0))
    assert [dg.caption_text(t) for t in tokens] == [
        "one thin left-slanted small red", "one regular upright medium red", "one thick right-slanted large grey"]
    bare = dg.caption_tokens(labels, bins, np.array([0, 0, 9]), 0.0, False, np.random.default_rng(0))
    assert [dg.caption_text(t) for t in bare] == ["one", "one", "one"]


def test_caption_richness_is_per_image_per_detail_probability():
    n, r = 20000, 0.3
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n)
    bins = rng.integers(0, 3, (n, 3))
    tokens = dg.caption_tokens(labels, bins, labels, r, False, rng)
    detail_ids = [dg.TOKEN[w] for d in dg.DETAILS for w in dg.DETAIL_WORDS[d]]
    per_detail = tokens[:, detail_ids].reshape(n, 3, 3).sum(-1)
    assert per_detail.max() == 1.0  # at most one word per detail
    np.testing.assert_allclose(per_detail.mean(0), r, atol=4 * np.sqrt(r * (1 - r) / n))
    assert abs(np.corrcoef(per_detail[:, 0], per_detail[:, 1])[0, 1]) < 0.03  # independent draws
    assert (tokens[np.arange(n), labels] == 1).all() and tokens[:, : dg.NUM_CLASSES].sum() == n
    assert tokens[:, dg.TOKEN["red"] :].sum() == 0  # no colour words when the flag is off


# ---------------------------------------------------------------------------------------------
# Spurious colour
# ---------------------------------------------------------------------------------------------


def test_colour_agreement_rates():
    split = dg.build_split(dg.DigitsConfig(p=0.8, n_train=1200, n_test=500), seed=3)
    agree = split.train.spurious == split.train.label
    assert abs(agree.mean() - 0.8) < 4 * np.sqrt(0.8 * 0.2 / 1200)
    disagreeing = (split.train.spurious - split.train.label)[~agree] % 10
    assert set(disagreeing.tolist()) == set(range(1, 10))  # other colours all used
    test_agree = (split.tests.spurious == split.tests.label).mean(axis=1)
    assert test_agree[0] == 1.0 and test_agree[2] == 0.0  # aligned, flipped
    assert abs(test_agree[1] - 0.1) < 4 * np.sqrt(0.09 / 500)  # independent
    assert split.train.x_image.shape == (1200, 8 * 8 * 3) and split.tests.x_image.shape == (3, 500, 192)
    assert split.train.x_text.shape == (1200, 20)


def test_colour_is_drawn_into_the_pixels():
    grey = np.zeros((2, 8, 8), np.float32)
    grey[:, 2:6, 3] = 1.0
    tint = dg.DigitsConfig(spurious_strength=0.5, spurious_sigma=0.0)
    rgb = dg.colour_images(grey, np.array([0, 3]), tint, np.random.default_rng(0))
    np.testing.assert_allclose(rgb[0, 0, 0], [0.5, 0.0, 0.0])  # background red * 0.5
    np.testing.assert_allclose(rgb[1, 0, 0], [0.5, 0.5, 0.0])  # yellow
    np.testing.assert_allclose(rgb[:, 3, 3], 1.0)  # ink stays white
    patch = dg.colour_images(grey, np.array([2, 2]), dataclasses.replace(tint, spurious="patch"), np.random.default_rng(0))
    np.testing.assert_allclose(patch[0, :2, :2], [[[0, 0, 0.5]] * 2] * 2)
    assert patch[0, 2:, :].reshape(-1, 3).std(axis=1).max() == 0.0  # grey elsewhere


def test_expected_palette_is_the_clipped_normal_mean():
    # E[clip(mu + 0.2 Z, 0, 1)] by hand: mu = 0 gives E[max(0.2 Z, 0)] = 0.2 / sqrt(2 pi) = 0.0798 (the upper
    # clip is 5 s.d. away); mu = 1 gives 1 - 0.0798; mu = 0.5 gives 0.5 (symmetric). PALETTE is float32.
    config = dg.DigitsConfig(spurious_strength=1.0, spurious_sigma=0.2)
    got = dg.expected_palette(config)
    edge = 0.2 / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(got[0], [1 - edge, edge, edge], atol=1e-6)  # red (1, 0, 0)
    np.testing.assert_allclose(got[6], [1 - edge, 0.5, edge], atol=1e-6)  # orange (1, 0.5, 0)
    assert (dg.expected_palette(dataclasses.replace(config, spurious_sigma=0.0)) == dg.PALETTE).all()


# ---------------------------------------------------------------------------------------------
# Captions whose details reach the prompt
# ---------------------------------------------------------------------------------------------


def test_class_axis_coordinate_by_hand():
    # two classes of 1x2 "images": class 0 = (1, 0) and (3, 0); class 1 = (0, 2), (0, 4)
    grey = np.array([[[1.0, 0.0]], [[3.0, 0.0]], [[0.0, 2.0]], [[0.0, 4.0]]])
    labels = np.array([0, 0, 1, 1])
    # m = (1, 1.5); mu_0 = (2, 0), axis (1, -1.5): image 0 gives (-1, 0).(1, -1.5) = -1
    np.testing.assert_allclose(dg.class_axis_coordinate(grey, labels), [-1.0, 1.0, -1.5, 1.5])
    np.testing.assert_allclose(dg.detail_values(grey, labels, "class_axis"), [-1.0, 1.0, -1.0, 1.0])


def test_class_weight_captions_and_text():
    labels, values = np.array([7, 1]), np.array([0.5, -1.0])
    captions = dg.class_weight_captions(labels, values, np.array([1.0, 0.0]), np.eye(10)[[3, 1]], 2.0)
    assert captions.shape == (2, 20) and captions[0, 7] == 2.0 and captions[1, 1] == 1.0  # 1 + 2 * 0.5; b = 0
    assert captions[0, 13] == 1.0 and captions.sum() == 2.0 + 1.0 + 2.0
    assert [dg.caption_text(c) for c in captions] == ["seven x2.00 yellow", "one x1.00 green"]


def test_shuffle_within_class_keeps_each_class_values():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    values = rng.normal(size=300) + labels
    shuffled = dg.shuffle_within_class(values, labels, rng)
    for k in range(10):
        assert sorted(shuffled[labels == k]) == sorted(values[labels == k])
    assert abs(np.corrcoef(values - labels, shuffled - labels)[0, 1]) < 0.2  # per-image link broken


def _tiny_draws(config, n=40, seed=0):
    grey, labels = dg.load_sklearn_digits()
    idx = np.random.default_rng(seed).permutation(labels.shape[0])[:n]
    return grey[idx], labels[idx]


@pytest.mark.parametrize("colour_in_caption", [False, True])
def test_expected_cross_covariance_matches_the_average_of_sampled_ones(colour_in_caption):
    # independent check of E[S] (bilinear expectation, clipped colours, colour word): Monte Carlo over draws
    config = dg.DigitsConfig(p=0.7, r=0.5, spurious_sigma=0.3, colour_in_caption=colour_in_caption)
    grey, y = _tiny_draws(config)
    values = dg.detail_values(grey, y, "class_axis")
    rng = np.random.default_rng(1)
    total, draws = 0.0, 3000
    for _ in range(draws):
        a = dg.spurious_colours(y, config.p, rng)
        x = dg.colour_images(grey, a, config, rng).reshape(len(y), -1)
        words = np.eye(10)[a] if colour_in_caption else np.zeros((len(y), 10))
        text = dg.class_weight_captions(y, values, (rng.random(len(y)) < config.r).astype(float), words, 2.0)
        total = total + dl.sample_cross_covariance(x, text)[0]
    words = dg.colour_probabilities(y, config.p) if colour_in_caption else np.zeros((len(y), 10))
    expected, _ = dg.expected_cross_covariance(grey, y, dg.class_weight_captions(y, values, np.full(len(y), 0.5), words, 2.0), config)
    mc = total / draws
    assert np.abs(mc - expected).max() < 0.004, np.abs(mc - expected).max()  # MC s.e. ~ 0.001
    assert np.abs(expected).max() > 0.05  # not trivially small


def test_expected_cross_covariance_is_the_sample_one_when_nothing_is_random():
    # p = 1, sigma = 0, r = 1: the colours and captions are fixed by the images, so E[S] = S exactly
    config = dg.DigitsConfig(p=1.0, r=1.0, spurious_sigma=0.0, colour_in_caption=True)
    grey, y = _tiny_draws(config)
    values = dg.detail_values(grey, y, "class_axis")
    x = dg.colour_images(grey, y, config, np.random.default_rng(0)).reshape(len(y), -1)
    text = dg.class_weight_captions(y, values, np.ones(len(y)), np.eye(10)[y], 2.0)
    sample, mean = dl.sample_cross_covariance(x, text)
    expected, expected_mean = dg.expected_cross_covariance(grey, y, text, config)
    np.testing.assert_allclose(expected, sample, atol=1e-6)
    np.testing.assert_allclose(expected_mean, mean, atol=1e-6)


def test_closed_form_scores_equal_the_factored_minimiser():
    # learners.mmcl_closed_form (QR + SVD factors W_I, W_T) is a second route to A* = top-rank SVD of S
    rng = np.random.default_rng(2)
    x, text, test = rng.normal(size=(50, 12)), rng.normal(size=(50, 6)), rng.normal(size=(9, 12))
    prompts = np.eye(6)[:4]
    for rank in (2, 6):
        w_i, w_t = mmcl_closed_form(jnp.asarray(x, jnp.float32), jnp.asarray(text, jnp.float32), rank=rank)
        expected = (test - x.mean(0)) @ np.asarray(w_i).T @ np.asarray(w_t) @ prompts.T
        cross, mean = dl.sample_cross_covariance(x, text)
        np.testing.assert_allclose(dl.closed_form_scores(cross, mean, rank, test, prompts), expected, rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# The design's predictions: tokens flat in r, class weight not, shuffled control flat
# ---------------------------------------------------------------------------------------------

CALIBRATED = dict(p=0.99, spurious="tint", spurious_strength=0.5, spurious_sigma=0.01, n_train=1200, n_test=500)


def _theory(seeds=(0, 1), **overrides):
    rows = run_point(dg.DigitsConfig(**{**CALIBRATED, **overrides}), list(seeds), ("theory_mmcl",))
    return {t: np.mean([r["accuracy"] for r in rows if r["test"] == t and r["prompt"] == "word"]) for t in dg.TESTS}


def test_class_agnostic_tokens_are_exactly_flat_in_r():
    # S e_k = Cov(x, 1[y = k]) does not involve r: the digit-word columns of E[S] are identical
    cross = {r: dg.build_split(dg.DigitsConfig(caption="tokens", r=r, n_train=300, n_test=50), 0).theory["cross_covariance"]
             for r in (0.0, 1.0)}
    np.testing.assert_array_equal(cross[0.0][:, :10], cross[1.0][:, :10])
    assert np.abs(cross[1.0][:, 10:19] - cross[0.0][:, 10:19]).max() > 1e-3  # the detail columns do change


def test_class_weight_theory_rises_with_r_and_the_shuffled_control_does_not():
    r0, r1 = _theory(r=0.0), _theory(r=1.0)
    shuffled = _theory(r=1.0, shuffle_details=True)
    # measured (2 seeds): flipped 0.25 -> 0.38; shuffled 0.25; aligned 0.987 -> 0.962 (the M1 trade-off)
    assert r1["flipped"] > r0["flipped"] + 0.08, (r0, r1)
    assert abs(shuffled["flipped"] - r0["flipped"]) < 0.03, (r0, shuffled)
    assert r1["aligned"] < r0["aligned"]


def test_premise_same_backbone_sl_fails_at_the_calibrated_tint():
    # measured at the full size (figures/digits_calibration.csv, 3 seeds): aligned 0.999, flipped 0.338
    config = dg.DigitsConfig(**{**CALIBRATED, "n_train": 800, "n_test": 300})
    rows = run_point(config, [0], ("sl_mlp",), dl.DigitsLearnerSettings(steps=300, width=64))
    acc = {r["test"]: r["accuracy"] for r in rows}
    assert acc["aligned"] >= 0.95 and acc["flipped"] <= 0.5, acc


def test_closed_form_and_trained_infonce_follow_the_theory_up_in_r():
    # theory (exact E[S]) vs the sampled closed form: same seeds, so they differ only by the draws.
    # Trained linear InfoNCE, 300 steps: measured (5 seeds) flipped 0.28 -> 0.60; the MLP 0.31 -> 0.52 at
    # 300 steps but 0.30 -> 0.33 at 600 and 0.28 -> 0.19 at 1200 (training length matters; see README).
    settings = dl.DigitsLearnerSettings(steps=300, width=64)
    learners = ("theory_mmcl", "mmcl_closed_form", "mmcl_infonce_linear")
    flipped = {}
    for r in (0.0, 1.0):
        rows = run_point(dg.DigitsConfig(**{**CALIBRATED, "r": r, "n_test": 300}), [0, 1], learners, settings)
        for learner in learners:
            flipped[learner, r] = np.mean([x["accuracy"] for x in rows
                                           if x["learner"] == learner and x["test"] == "flipped" and x["prompt"] == "word"])
    for r in (0.0, 1.0):
        assert abs(flipped["mmcl_closed_form", r] - flipped["theory_mmcl", r]) < 0.03, flipped
    assert flipped["theory_mmcl", 1.0] > flipped["theory_mmcl", 0.0] + 0.08, flipped
    assert flipped["mmcl_infonce_linear", 1.0] > flipped["mmcl_infonce_linear", 0.0] + 0.15, flipped


# ---------------------------------------------------------------------------------------------
# Config, run_point contract, MNIST end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, field, value, fragment",
    [(dg.DigitsConfig, "p", 1.5, "[0.0, 1.0]"), (dg.DigitsConfig, "r", -0.1, "[0.0, 1.0]"),
     (dg.DigitsConfig, "detail_scale", 11.0, "[0.0, 10.0]"), (dg.DigitsConfig, "spurious_strength", 0.0, "(0.0, 1.0]"),
     (dg.DigitsConfig, "n_train", 10.5, "an integer"), (dg.DigitsConfig, "caption", "words", "class_weight, tokens"),
     (dg.DigitsConfig, "detail", "slant", "class_axis, thickness"), (dg.DigitsConfig, "spurious", "stripes", "tint, patch"),
     (dg.DigitsConfig, "shuffle_details", "yes", "true or false"), (dg.DigitsConfig, "p", float("nan"), "[0.0, 1.0]"),
     (dl.DigitsLearnerSettings, "temperature", 0.0, "(0.0, 100.0]"), (dl.DigitsLearnerSettings, "steps", 100.0, "an integer"),
     (dl.DigitsLearnerSettings, "batch_size", 1, "[2, 60000]")],
)
def test_config_rejects_bad_values_in_one_line(cls, field, value, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**{field: value})
    message = str(info.value)
    assert f"{cls.__name__}.{field} = {value!r}" in message and fragment in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_config_skips_traced_values():
    assert jax.jit(lambda p: dg.DigitsConfig(p=p).p * 2)(jnp.float32(0.25)) == 0.5


def test_run_point_contract_and_cross_field_errors():
    config = dg.DigitsConfig(n_train=300, n_test=100)
    settings = dl.DigitsLearnerSettings(steps=20, width=16, batch_size=32)
    rows = run_point(config, [0, 1], ("theory_mmcl", "mmcl_infonce_linear", "sl_min_norm"), settings)
    keys = {(r["learner"], r["prompt"], r["test"], r["seed"]) for r in rows}
    expected = {(l, p, t, s) for l in ("theory_mmcl", "mmcl_infonce_linear") for p in dg.PROMPTS
                for t in dg.TESTS for s in (0, 1)} | {("sl_min_norm", "", t, s) for t in dg.TESTS for s in (0, 1)}
    assert keys == expected and len(rows) == len(expected)
    assert all(set(r) == set(ROW_KEYS) and r["n"] == 300 for r in rows)
    assert {r["route"] for r in rows if r["learner"] == "theory_mmcl"} == {"theory"}
    assert {r["route"] for r in rows if r["learner"] != "theory_mmcl"} == {"sampled"}
    with pytest.raises(ValueError, match="unknown learner.s. knn for model digits: allowed theory_mmcl, "):
        run_point(config, [0], ("knn",))
    with pytest.raises(ConfigError, match="batch_size = 128 is out of range: allowed at most DigitsConfig.n_train = 100"):
        run_point(dataclasses.replace(config, n_train=100), [0], ("sl_mlp",), dl.DigitsLearnerSettings())
    with pytest.raises(ConfigError, match="at most 1797"):
        run_point(dataclasses.replace(config, n_train=1700), [0], ("theory_mmcl",))


def test_mnist_split_from_the_real_file(shared_data):
    config = dg.DigitsConfig(dataset=str(shared_data / "mnist_test"), n_train=400, n_test=100)
    split = dg.build_split(config, seed=0)
    assert split.train.x_image.shape == (400, 28 * 28 * 3) and split.tests.x_image.shape == (3, 100, 2352)
    assert set(np.unique(split.train.label)) == set(range(10))
    corner = split.train.x_image.reshape(400, 28, 28, 3)[:, 0, 0]  # MNIST corners are blank: the tint alone
    np.testing.assert_allclose(corner, np.clip(0.5 * dg.PALETTE[split.train.spurious], 0, 1), atol=0.05)
    rows = run_point(config, [0], ("theory_mmcl", "sl_min_norm"))
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert {r["accuracy"] > 0.6 for r in rows if r["test"] == "aligned"} == {True}


def test_missing_mnist_directory_is_one_line(tmp_path):
    config = dg.DigitsConfig(dataset=str(tmp_path / "no_mnist"), n_train=100, n_test=10)
    with pytest.raises(dg.DigitsDataError, match="not a directory; expected a directory holding MNIST idx files"):
        run_point(config, [0], ("theory_mmcl",))


def test_digits_sweep_bad_input_exits_2_with_one_line(capsys):
    from mmcl_theory.sweep import main

    for argv, needle in ((["digits", "--set", "spurious=stripes"], "spurious = 'stripes' is not allowed"),
                         (["digits", "--set", "steps=0"], "steps = 0 is out of range"),
                         (["digits", "--route", "exact"], "allowed sampled"),
                         (["digits", "--learners", "sl_digits"], "valid learners are")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_digits_quick_sweep_writes_the_contract_with_every_variant(tmp_path, capsys):
    import csv

    from mmcl_theory.results import CONTRACT
    from mmcl_theory.sweep import main

    assert main(["digits", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CONTRACT and (tmp_path / "digits.png").stat().st_size > 10_000
    assert {r["series"] for r in rows} == {f"variant={v}" for v in
                                           ("class_axis", "sl", "shuffled", "colour_word", "thickness", "tokens")}
    assert {r["value"] for r in rows} == {"0.0", "1.0"}
    capsys.readouterr()


def test_theory_rows_score_the_expected_statistics_with_the_expected_caption_mean_prompt():
    """theory_mmcl (docs/learners.md#digits) is A* at E[S] and E[xbar] of digits.expected_cross_covariance, scored with
    the word prompt and with the *expected* class caption means (which differ from the sampled ones): its rows are
    that classifier's accuracies on the seed's test sets."""
    config = dg.DigitsConfig(**{**CALIBRATED, "n_train": 400, "n_test": 200, "r": 0.5})
    settings = dl.DigitsLearnerSettings(embed_dim=8)
    rows = run_point(config, [3], ("theory_mmcl",), settings)
    split = dg.build_split(config, 3)
    prompts = {"word": split.prompts["word"], "caption_mean": split.theory["caption_mean_prompts"]}
    assert not np.allclose(prompts["caption_mean"], split.prompts["caption_mean"])
    for prompt, t in prompts.items():
        scores = (split.tests.x_image - split.theory["image_mean"]) @ (
            truncate_rank(split.theory["cross_covariance"], 8) @ np.asarray(t, np.float64).T)
        expected = (np.argmax(scores, -1) == split.tests.label).mean(-1)
        got = [r["accuracy"] for r in rows if r["prompt"] == prompt]
        np.testing.assert_array_equal(got, expected)


def test_digits_infonce_loss_is_the_hand_computed_loss_at_its_temperature():
    """DigitsLearnerSettings ("temperature: the fixed InfoNCE temperature tau (logit scale 1/tau)") and
    docs/learners.md#infonce / #digits: the digits InfoNCE learners' minibatch loss (digits_learners.loss) is symmetric
    InfoNCE of the L2-normalised image and text embeddings with logits <u_i, v_j> / tau. Checked against that loss
    written out in float64 numpy (a forward pass by hand, logsumexp by rows and by columns) on a batch of 5, for the
    linear and the MLP encoders, at tau = 0.25 and tau = 2 (at tau = 1 a tau / (1/tau) mix-up is invisible)."""
    def by_hand(params, x, text, tau):
        def forward(layers, h):
            for i, (w, b) in enumerate(layers):
                h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
                h = np.maximum(h, 0.0) if i < len(layers) - 1 else h
            return h / np.linalg.norm(h, axis=1, keepdims=True)

        s = forward(params["image"], x) @ forward(params["text"], text).T / tau
        lse = lambda a, axis: np.log(np.exp(a - a.max()).sum(axis)) + a.max()
        return 0.5 * (np.mean(lse(s, 1) - np.diag(s)) + np.mean(lse(s, 0) - np.diag(s)))

    rng = np.random.default_rng(4)
    x, text, label = rng.normal(size=(5, 7)), rng.normal(size=(5, 4)), jnp.arange(5)
    settings = dl.DigitsLearnerSettings(width=32, embed_dim=3)
    for hidden in (False, True):
        params = dl.init_params(jax.random.key(2), dl.ZERO_SHOT, hidden, 7, 4, settings)
        for tau in (0.25, 2.0):
            got = float(dl.loss(params, jnp.asarray(x, jnp.float32), jnp.asarray(text, jnp.float32), label, tau))
            assert got == pytest.approx(by_hand(params, x, text, tau), rel=1e-5), (hidden, tau)
        # the premise: the two temperatures give losses far apart (a tau <-> 1/tau swap would not pass)
        assert abs(by_hand(params, x, text, 0.25) - by_hand(params, x, text, 4.0)) > 0.1
