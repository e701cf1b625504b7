"""Tests for model M3 (mmcl_theory/digits.py): loaders, pixel measurements, captions, colours, run_point."""

import dataclasses
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory import digits as dg

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
    config = dg.DigitsConfig(p=0.8, n_train=1200, n_test=500)
    split = dg.build_split(config, seed=3)
    agree = split["train_colour"] == split["train_y"]
    assert abs(agree.mean() - 0.8) < 4 * np.sqrt(0.8 * 0.2 / 1200)
    disagreeing = (split["train_colour"] - split["train_y"])[~agree] % 10
    assert set(disagreeing.tolist()) == set(range(1, 10))  # other colours all used
    test_agree = (split["test_colour"] == split["test_y"]).mean(axis=1)
    assert test_agree[0] == 1.0 and test_agree[2] == 0.0  # aligned, flipped
    assert abs(test_agree[1] - 0.1) < 4 * np.sqrt(0.09 / 500)  # independent
    assert split["train_x"].shape == (1200, 8 * 8 * 3) and split["test_x"].shape == (3, 500, 192)


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


# ---------------------------------------------------------------------------------------------
# Config and end-to-end
# ---------------------------------------------------------------------------------------------


def test_linear_mmcl_is_the_centred_class_mean_score_at_full_rank():
    # full rank: (x - m)^T S t_k = (x - m) . sum_{i: y_i = k} (x_i - m) / (n - 1)  (token k = digit word k)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 10
    tokens = np.zeros((40, len(dg.VOCAB)), np.float32)
    tokens[np.arange(40), y] = 1.0
    tokens[:, dg.TOKEN["thick"]] = rng.random(40) < 0.5  # other words do not enter the digit-word column
    test = rng.normal(size=(7, 6))
    m = x.mean(0)
    expected = np.stack([(test - m) @ (x[y == k] - m).sum(0) / 39 for k in range(10)], axis=1)
    got = dg.linear_scores("mmcl_linear_digits", 32, jnp.asarray(x), jnp.asarray(tokens), jnp.asarray(y), jnp.asarray(test))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_sl_min_norm_interpolates_when_d_exceeds_n():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 50)), np.arange(12) % 10
    scores = np.asarray(dg.linear_scores("sl_min_norm_digits", 32, jnp.asarray(x), None, jnp.asarray(y), jnp.asarray(x)))
    np.testing.assert_allclose(scores, 2 * np.eye(10)[y] - 1, atol=1e-3)


@pytest.mark.parametrize(
    "field, value, fragment",
    [("p", 1.5, "[0.0, 1.0]"), ("r", -0.1, "[0.0, 1.0]"), ("temperature", 0.0, "(0.0, 100.0]"),
     ("n_train", 10.5, "an integer"), ("steps", 100.0, "an integer"), ("spurious", "stripes", "'tint'"), ("batch_size", 5000, "n_train")],
)
def test_config_rejects_bad_values(field, value, fragment):
    with pytest.raises(ValueError) as info:
        dg.DigitsConfig(**{field: value})
    assert f"DigitsConfig.{field}={value!r}" in str(info.value) and fragment in str(info.value)


def test_config_skips_traced_values():
    assert jax.jit(lambda p: dg.DigitsConfig(p=p).p * 2)(jnp.float32(0.25)) == 0.5


def test_run_point_end_to_end():
    config = dg.DigitsConfig(p=0.9, n_train=600, n_test=300, steps=150, width=64, batch_size=64)
    rows = dg.run_point(config, [0, 1], dg.LEARNERS)
    assert len(rows) == len(dg.LEARNERS) * 3 * 2
    assert {(r["learner"], r["test"], r["seed"]) for r in rows} == {
        (learner, test, seed) for learner in dg.LEARNERS for test in dg.TESTS for seed in (0, 1)}
    assert all(r["n"] == 600 and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    aligned = {r["learner"]: r["accuracy"] for r in rows if r["test"] == "aligned"}
    assert all(acc > 0.5 for acc in aligned.values()), aligned  # chance is 0.1
    with pytest.raises(ValueError, match="learners"):
        dg.run_point(config, [0], ("knn",))
    with pytest.raises(ValueError, match="at most 1797"):
        dg.run_point(dataclasses.replace(config, n_train=1700), [0])
