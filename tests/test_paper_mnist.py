"""The paper's App. G.1 MNIST experiment (mmcl_theory/paper_mnist.py): data laws, captions, LeNet, the CLIP loss
without normalisation, the optimiser, determinism, bad input, the figure and check G1's verdict rule."""

import dataclasses
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory import paper_mnist as pm
from mmcl_theory.config import ConfigError
from mmcl_theory.learners import SUPERVISED, ZERO_SHOT
from mmcl_theory.models import evaluate_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # paper_checks/ sits at the repository root

# One shape for every training test below, so the compiled step is shared: 1,024 images, batch 128.
N_SMALL, N_TEST_SMALL = 1024, 500
SETTINGS = pm.PaperMnistSettings(mmcl_epochs=6, sl_epochs=12)


def _config(shared_data=None, **kw):
    dataset = str(shared_data / "mnist_test") if shared_data is not None else "mnist_test"
    return pm.PaperMnistConfig(dataset=dataset, **kw)


# ------------------------------------------------------------------ the paper's constants


def test_dictionary_means_and_prompts_are_the_papers():
    assert pm.DIGIT_VALUE.tolist() == [-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5]
    shade = dict(zip(pm.SHADES, pm.SHADE_VALUE.tolist()))
    assert shade == {"dark blue": -2.5, "medium blue": -1.5, "light blue": -0.5, "light red": 0.5, "medium red": 1.5,
                     "dark red": 2.5}
    assert pm.CLASS_MEAN_VALUE.tolist() == [-2.5, 2.5] and pm.FAMILY_MEAN_VALUE.tolist() == [-1.5, 1.5]
    prompts = pm.class_centre_prompts(pm.PaperMnistConfig())
    assert prompts.shape == (2, 200) and prompts[:, 0].tolist() == [-2.5, 2.5] and not prompts[:, 1:].any()
    # the prompt is E_{P*}[caption | y]: the mean over the six shades of b is 0 whatever pi_spu
    assert pm.SHADE_VALUE.mean() == 0 and pm.FAMILY_MEAN_VALUE[pm.SHADE_FAMILY].mean() == 0
    assert pm.PAPER_FIG2["pi_core"][1.0] == pm.PAPER_FIG2["pi_spu"][1.0] == 76.21  # the shared point


# ------------------------------------------------------------------ data laws


def test_training_shades_agree_with_the_class_995_in_1000():
    n = 400_000
    classes = np.random.default_rng(1).integers(0, 2, n).astype(np.int32)
    shades = pm.draw_shades(classes, 0.995, np.random.default_rng(2))
    agree = (pm.SHADE_FAMILY[shades] == classes).mean()
    assert abs(agree - 0.995) < 4 * math.sqrt(0.995 * 0.005 / n)
    for k in (0, 1):  # uniform over the family's three shades
        own = shades[(classes == k) & (pm.SHADE_FAMILY[shades] == k)]
        counts = np.bincount(own - 3 * k, minlength=3) / own.size
        assert np.abs(counts - 1 / 3).max() < 4 * math.sqrt(2 / 9 / own.size)


def test_test_shade_laws():
    n = 300_000
    classes = np.random.default_rng(1).integers(0, 2, n).astype(np.int32)
    config = pm.PaperMnistConfig()
    independent = pm.draw_shades(classes, pm.shade_law("independent", config), np.random.default_rng(3))
    for k in (0, 1):  # uniform over all six shades in each class: the paper's P*
        freq = np.bincount(independent[classes == k], minlength=6) / (classes == k).sum()
        assert np.abs(freq - 1 / 6).max() < 4 * math.sqrt(5 / 36 / (classes == k).sum())
    flipped = pm.draw_shades(classes, pm.shade_law("flipped", config), np.random.default_rng(4))
    assert (pm.SHADE_FAMILY[flipped] != classes).all()
    assert pm.shade_law("aligned", config) == 0.995  # the ID test is built like training


def test_captions_are_the_dictionary_values_with_probability_pi():
    rng = np.random.default_rng(0)
    n = 100_000
    digits, shades = rng.integers(0, 10, n), rng.integers(0, 6, n)
    exact = dict(caption_noise_var=0.0, caption_dim=5)
    caption = lambda **kw: pm.caption_vectors(digits, shades, pm.PaperMnistConfig(**exact, **kw),
                                              np.random.default_rng(7))
    both = caption(pi_core=1.0, pi_spu=1.0)
    assert (both[:, 0] == digits - 4.5).all() and (both[:, 1] == pm.SHADE_VALUE[shades]).all()
    assert not both[:, 2:].any()
    neither = caption(pi_core=0.0, pi_spu=0.0)
    assert (neither[:, 0] == np.where(digits < 5, -2.5, 2.5)).all()
    assert (neither[:, 1] == np.where(shades < 3, -1.5, 1.5)).all()
    low, high = caption(pi_core=0.3, pi_spu=0.6), caption(pi_core=0.6, pi_spu=0.3)
    for column, pis in ((0, (0.3, 0.6)), (1, (0.6, 0.3))):
        specific = [c[:, column] == both[:, column] for c in (low, high)]
        assert ((low[:, column] == both[:, column]) | (low[:, column] == neither[:, column])).all()
        for s, pi in zip(specific, pis):
            distinct = both[:, column] != neither[:, column]  # images whose own value differs from the mean
            assert abs(s[distinct].mean() - pi) < 4 * math.sqrt(pi * (1 - pi) / distinct.sum())
    specific_low = (low[:, 0] == both[:, 0]) & (both[:, 0] != neither[:, 0])
    assert (high[specific_low, 0] == both[specific_low, 0]).all()  # nested across pi_core for one seed
    noisy = pm.caption_vectors(digits, shades, pm.PaperMnistConfig(), np.random.default_rng(7))
    assert noisy.shape == (n, 200)
    assert abs(noisy[:, 2:].var() - 1 / 2000) < 0.01 / 2000 and abs((noisy[:, 0] - both[:, 0]).var() - 1 / 2000) < 1e-5


def test_digits_are_white_ink_over_the_shade():
    grey = np.zeros((6, 28, 28), np.float32)
    grey[:, 10:18, 12:16] = 1.0
    grey[:, 5, 5] = 0.25
    rgb = pm.colour_backgrounds(grey, np.arange(6))
    assert rgb.shape == (6, 28, 28, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[:, 0, 0], pm.SHADE_RGB)  # background: the shade
    np.testing.assert_array_equal(rgb[:, 12, 13], np.ones((6, 3), np.float32))  # full ink: white
    np.testing.assert_allclose(rgb[:, 5, 5], 0.25 + 0.75 * pm.SHADE_RGB, rtol=1e-6)


def test_split_is_fixed_and_disjoint():
    config = pm.PaperMnistConfig()
    train, test = pm.split_indices(10_000, config)
    assert train.size == 8000 and test.size == 2000 and not set(train) & set(test)
    small_train, small_test = pm.split_indices(10_000, dataclasses.replace(config, n_train=1000))
    np.testing.assert_array_equal(small_test, test)  # the same test images for the quick variant
    np.testing.assert_array_equal(small_train, train[:1000])
    with pytest.raises(ConfigError, match="n_train \\+ n_test = 10001 is out of range: allowed at most 10000"):
        pm.split_indices(10_000, dataclasses.replace(config, n_test=2001))


def test_build_data_from_mnist(shared_data):
    config = _config(shared_data, pi_core=0.5, pi_spu=0.5, caption_noise_var=0.0)
    data = pm.build_data(config, seed=3)
    assert data.images.shape == (8000, 28, 28, 3) and data.test_images.shape == (3, 2000, 28, 28, 3)
    assert (data.labels == (data.digits >= 5)).all() and (data.test_labels == (data.test_digits >= 5)).all()
    agree = (pm.SHADE_FAMILY[data.shades] == data.labels).mean()
    assert abs(agree - 0.995) < 4 * math.sqrt(0.995 * 0.005 / 8000)
    np.testing.assert_array_equal(data.images[:, 0, 0], pm.SHADE_RGB[data.shades])  # MNIST corners are blank
    np.testing.assert_array_equal(data.test_images[:, :, 0, 0], pm.SHADE_RGB[data.test_shades])
    ood = data.test_shades[1]
    assert (pm.SHADE_FAMILY[data.test_shades[2]] != data.test_labels).all()
    assert 0.45 < (pm.SHADE_FAMILY[ood] == data.test_labels).mean() < 0.55
    a, b = data.captions[:, 0], data.captions[:, 1]
    assert np.isin(a - (data.digits - 4.5), 0.0).mean() == pytest.approx(0.5 + 0.5 * 0.2, abs=0.03)
    assert ((a == data.digits - 4.5) | (a == np.where(data.labels == 1, 2.5, -2.5))).all()
    assert ((b == pm.SHADE_VALUE[data.shades]) | (b == pm.FAMILY_MEAN_VALUE[pm.SHADE_FAMILY[data.shades]])).all()
    again = pm.build_data(dataclasses.replace(config, pi_core=1.0), seed=3)  # same images and shades, other captions
    np.testing.assert_array_equal(again.images, data.images)
    assert (again.captions[:, 0] == again.digits - 4.5).all()


# ------------------------------------------------------------------ LeNet, loss, optimiser


def test_lenet_shapes_and_parameter_count():
    params = pm.init_params(jax.random.key(0), ZERO_SHOT, 200, pm.PaperMnistSettings())
    count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
    assert count(params["image"]) == 456 + 2416 + 48120 + 10164 + 10880  # LeNet-5 with 3 input channels, 128 out
    assert count(params["text"]) == 200 * 128 + 128
    assert pm.lenet(params["image"], jnp.zeros((5, 28, 28, 3))).shape == (5, 128)
    sl = pm.init_params(jax.random.key(0), SUPERVISED, 200, pm.PaperMnistSettings())
    assert set(sl) == {"image"} and pm.lenet(sl["image"], jnp.zeros((2, 28, 28, 3))).shape == (2, 2)


def test_convolution_is_a_cross_correlation_with_same_padding():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 7, 7, 3)).astype(np.float32)
    layer = {"w": rng.standard_normal((5, 5, 3, 2)).astype(np.float32), "b": np.array([0.5, -1.0], np.float32)}
    padded = np.pad(x[0].astype(np.float64), ((2, 2), (2, 2), (0, 0)))
    expected = np.array([[[(padded[i:i + 5, j:j + 5, :] * layer["w"][..., o]).sum() + layer["b"][o] for o in range(2)]
                          for j in range(7)] for i in range(7)])
    np.testing.assert_allclose(np.asarray(pm._conv(layer, jnp.asarray(x), "SAME"))[0], expected, rtol=1e-4, atol=1e-4)


def test_infonce_on_a_two_pair_batch_by_hand():
    from mmcl_theory.losses import infonce_loss

    # logits [[2, 0], [0, 1]]: each row and column loses log(1 + e^-margin), margins 2 and 1
    got = infonce_loss(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.asarray(1.0))
    assert float(got) == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_clip_loss_uses_raw_inner_products(temperature):
    rng = np.random.default_rng(0)
    params = pm.init_params(jax.random.key(1), ZERO_SHOT, 200, pm.PaperMnistSettings())
    images = jnp.asarray(rng.random((4, 28, 28, 3)), jnp.float32)
    captions = jnp.asarray(rng.standard_normal((4, 200)) * 2, jnp.float32)
    u = np.asarray(pm.lenet(params["image"], images), np.float64)
    v = np.asarray(pm.text_encoder(params["text"], captions), np.float64)
    logits = u @ v.T / temperature  # no normalisation
    row = [np.log(np.exp(logits[i]).sum()) - logits[i, i] for i in range(4)]
    col = [np.log(np.exp(logits[:, j]).sum()) - logits[j, j] for j in range(4)]
    expected = (np.mean(row) + np.mean(col)) / 2
    assert float(pm.clip_loss(params, images, captions, temperature)) == pytest.approx(expected, rel=1e-5)


def test_optimiser_is_torch_sgd_with_momentum_and_weight_decay():
    settings = pm.PaperMnistSettings()
    opt = pm.optimiser(settings)
    theta, velocity = np.array([1.0, -2.0]), np.zeros(2)
    params = jnp.asarray(theta, jnp.float32)
    state = opt.init(params)
    for g in (np.array([0.5, 0.25]), np.array([-1.0, 2.0])):
        velocity = 0.9 * velocity + (g + 0.001 * theta)  # torch.optim.SGD, dampening 0
        theta = theta - 0.01 * velocity
        updates, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
        params = params + updates
    np.testing.assert_allclose(np.asarray(params), theta, rtol=1e-6)


# ------------------------------------------------------------------ training


def _random_data(seed: int) -> pm.PaperMnistData:
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, N_SMALL)
    return pm.PaperMnistData(images=rng.random((N_SMALL, 28, 28, 3), np.float32),
                             captions=rng.standard_normal((N_SMALL, 200)).astype(np.float32),
                             labels=pm.digit_class(digits), digits=digits, shades=np.zeros(N_SMALL, np.int32),
                             test_images=np.zeros((3, 1, 28, 28, 3), np.float32), test_shades=np.zeros((3, 1), np.int32),
                             test_labels=np.zeros(1, np.int32), test_digits=np.zeros(1, np.int64))


def test_same_seed_same_bytes():
    data = _random_data(0)
    settings = dataclasses.replace(SETTINGS, mmcl_epochs=1)
    first, loss_a = pm.train(ZERO_SHOT, jax.random.key(5), data, settings)
    second, loss_b = pm.train(ZERO_SHOT, jax.random.key(5), data, settings)
    other, _ = pm.train(ZERO_SHOT, jax.random.key(6), data, settings)
    leaves = lambda p: [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(p)]
    assert leaves(first) == leaves(second) and loss_a == loss_b
    assert leaves(first) != leaves(other)
    assert math.isfinite(loss_a)


def test_short_runs_learn_the_training_distribution(shared_data):
    """Six MMCL and twelve SL epochs on 1,024 images (48 and 96 steps): both learners reach > 0.9 on the ID test
    (the shade predicts the class 99.5% of the time) and stay below chance on the flipped test (the shade, not yet
    the digit, is what they use)."""
    config = _config(shared_data, n_train=N_SMALL, n_test=N_TEST_SMALL)
    rows = pm.run_point(config, [0], pm.LEARNERS, SETTINGS)
    acc = {(r["learner"], r["test"]): r["accuracy"] for r in rows}
    assert len(rows) == 6 and {r["n"] for r in rows} == {N_SMALL}
    assert acc["mmcl_lenet", "aligned"] > 0.9 and acc["sl_lenet", "aligned"] > 0.9, acc
    assert acc["mmcl_lenet", "flipped"] < 0.5 and acc["sl_lenet", "flipped"] < 0.5, acc
    for r in rows:  # exact counts over the 500 test images
        assert (r["accuracy"] * N_TEST_SMALL) == pytest.approx(round(r["accuracy"] * N_TEST_SMALL), abs=1e-9)
        assert r["prompt"] == ("class_centre" if r["learner"] == "mmcl_lenet" else "")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("cls, field, value", [
    (pm.PaperMnistConfig, "pi_core", 1.5), (pm.PaperMnistConfig, "pi_spu", -0.1),
    (pm.PaperMnistConfig, "agreement", 2.0), (pm.PaperMnistConfig, "caption_dim", 1),
    (pm.PaperMnistConfig, "n_train", 0), (pm.PaperMnistConfig, "caption_noise_var", float("nan")),
    (pm.PaperMnistConfig, "dataset", ""),
    (pm.PaperMnistSettings, "mmcl_epochs", 0), (pm.PaperMnistSettings, "lr", 0.0),
    (pm.PaperMnistSettings, "momentum", 1.0), (pm.PaperMnistSettings, "batch_size", 1),
    (pm.PaperMnistSettings, "temperature", 0.0), (pm.PaperMnistSettings, "embed_dim", 2.5),
])
def test_bad_values_name_the_field(cls, field, value):
    with pytest.raises(ConfigError, match=f"{cls.__name__}.{field} = "):
        cls(**{field: value})


def test_run_point_refuses_unknown_learners_and_oversized_batches(tmp_path):
    with pytest.raises(ValueError, match="unknown learner.s. sl_mlp for model paper_mnist: allowed mmcl_lenet, sl_lenet"):
        evaluate_grid([pm.PaperMnistConfig()], [0], ("sl_mlp",))
    with pytest.raises(ConfigError, match="batch_size = 128 is out of range: allowed at most PaperMnistConfig.n_train = 64"):
        pm.train(SUPERVISED, jax.random.key(0),
                 dataclasses.replace(_random_data(0), images=np.zeros((64, 28, 28, 3), np.float32)), SETTINGS)


@pytest.mark.parametrize("args, needle", [
    (["--set", "agreement=1.5"], "PaperMnistConfig.agreement = 1.5 is out of range"),
    (["--set", "mmcl_epochs=0"], "PaperMnistSettings.mmcl_epochs = 0 is out of range"),
    (["--set", "pi_spu=0.5"], None),  # accepted here, overwritten by every variant: see the assertion below
    (["--set", "dataset=/no/such/mnist"], "/no/such/mnist: not a directory"),
])
def test_sweep_cli_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    from mmcl_theory.sweep import main, make_plan

    if needle is None:  # pi_spu belongs to the variants: the SL variant takes it, the MMCL variants set their own
        plan = make_plan("paper_mnist", overrides=args[1:])
        assert {p.series: p.config.pi_spu for p in plan.points if p.series != "variant=sl"} == {
            "variant=pi_spu_1": 1.0, "variant=pi_spu_0.5": 0.5, "variant=pi_spu_0": 0.0}
        return
    code = main(["paper_mnist", "--quick", "--no-progress", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0] and err[0].startswith("error: "), err


# ------------------------------------------------------------------ sweep plan, figure, check G1


def test_sweep_plan_is_the_papers_grid():
    from mmcl_theory.sweep import make_plan

    plan = make_plan("paper_mnist")
    points = {(p.series, p.value, p.config.pi_spu, p.learners) for p in plan.points}
    mmcl = ("mmcl_lenet",)
    assert points == {*(("variant=pi_spu_1", v, 1.0, mmcl) for v in (0.0, 0.25, 0.5, 0.75, 1.0)),
                      ("variant=pi_spu_0.5", 1.0, 0.5, mmcl), ("variant=pi_spu_0", 1.0, 0.0, mmcl),
                      ("variant=sl", 1.0, 1.0, ("sl_lenet",))}
    assert plan.seeds == (0, 1, 2) and {p.settings for p in plan.points} == {pm.PaperMnistSettings()}
    assert {(p.config.n_train, p.config.n_test) for p in plan.points} == {(8000, 2000)}


def _rows(ood: dict, sl: list, seeds=(0, 1, 2), jitter=(0.0, 0.01, -0.01)) -> list[dict]:
    """Sweep rows with OOD accuracies ood[(pi_core, pi_spu)] (+ a per-seed jitter shared by every point) and ID 0.9."""
    rows = []
    for (pi_core, pi_spu), acc in ood.items():
        for seed, j in zip(seeds, jitter):
            for test, a in (("independent", acc + j), ("aligned", 0.9)):
                rows.append({"learner": "mmcl_lenet", "series": f"variant=pi_spu_{pi_spu:g}", "value": pi_core,
                             "test": test, "seed": seed, "accuracy": a, "n": 8000})
    for seed, j in zip(seeds, jitter):
        for test, a in (("independent", sl + j), ("aligned", 0.99)):
            rows.append({"learner": "sl_lenet", "series": "variant=sl", "value": 1.0, "test": test, "seed": seed,
                         "accuracy": a, "n": 8000})
    return rows


PAPER_LIKE = {(0.0, 1): 0.59, (0.25, 1): 0.72, (0.5, 1): 0.75, (0.75, 1): 0.76, (1.0, 1): 0.76, (1.0, 0.5): 0.75,
              (1.0, 0): 0.72}


def test_fig2_curves_read_the_variants():
    curves = pm.fig2_curves(_rows(PAPER_LIKE, 0.69))
    assert sorted(curves["pi_core"]) == [0.0, 0.25, 0.5, 0.75, 1.0] and sorted(curves["pi_spu"]) == [0.0, 0.5, 1.0]
    assert curves["pi_spu"][1.0] == curves["pi_core"][1.0] == {0: 0.76, 1: 0.77, 2: 0.75}
    assert curves["supervised"][1] == pytest.approx(0.70)


def test_g1_verdict_follows_the_three_claims():
    from paper_checks.check_g1 import assess

    verdict, measured, why, details = assess(_rows(PAPER_LIKE, 0.69))
    assert verdict == "pass", why
    assert "pi_core 0 -> 1: 59.00 -> 76.00 (paper 58.94 -> 76.21)" in measured and "3 seeds" in measured
    assert any(line.startswith("| pi_spu = 1, pi_core = 0.25 | 72.36 | 72.00 +- 0.58 | 90.00 |") for line in details)
    below_sl = assess(_rows(PAPER_LIKE, 0.80))
    assert below_sl[0] == "fail" and "rich pi_core beats SL: FAILS" in below_sl[2]
    spu_matters = assess(_rows({**PAPER_LIKE, (1.0, 0): 0.59}, 0.69))
    assert spu_matters[0] == "fail" and "pi_spu has a smaller effect than pi_core: FAILS" in spu_matters[2]
    flat = assess(_rows({**PAPER_LIKE, (0.0, 1): 0.76}, 0.69))
    assert flat[0] == "fail" and "reducing pi_core hurts: FAILS" in flat[2]


def test_g1_is_not_run_without_a_full_run(tmp_path, monkeypatch):
    import csv

    from paper_checks import check_g1

    monkeypatch.setattr(check_g1, "RESULTS", tmp_path / "paper_mnist.csv")
    assert check_g1.check_G1(quick=True).verdict == "not run"
    rows = [{**r, "n": 2000} for r in _rows(PAPER_LIKE, 0.69)]
    with open(check_g1.RESULTS, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = check_g1.check_G1(quick=False)
    assert record.verdict == "not run" and "quick or partial run" in record.why
    assert record.source.startswith("paper experiment: Xue et al. 2024")


def test_figure_draws_ours_beside_the_paper(tmp_path):
    from mmcl_theory.plotting import plot_paper_mnist

    path = tmp_path / "paper_mnist.png"
    plot_paper_mnist(_rows(PAPER_LIKE, 0.69), path, "G.1", "a caption")
    assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_quick_sweep_and_figure_end_to_end(shared_data, tmp_path, capsys):
    from mmcl_theory import figures
    from mmcl_theory.sweep import main

    assert main(["paper_mnist", "--quick", "--no-progress", "--out", str(tmp_path / "paper_mnist")]) == 0
    assert figures.main(["--from", str(tmp_path), "--only", "paper_mnist", "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "paper_mnist.png").is_file() and (tmp_path / "fig" / "paper_mnist.csv").is_file()
