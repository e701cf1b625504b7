"""Effective robustness: reference testbed fits, ER identities, bootstrap, series, figure."""

import csv
import json

import numpy as np
import pytest

from mmcl_theory.clip import robustness as rb
from conftest import run_main

# Reference fits computed independently from the testbed CSV (STANDARD; logit): never edit.
REFERENCE = {
    "imagenetv2": (0.923, -0.498, 0.998),
    "imagenet_sketch": (1.071, -2.370, None),
    "imagenet-r": (0.637, -2.108, None),
    "imagenet-a": (1.990, -7.632, None),
    "objectnet": (0.981, -1.928, None),
}


@pytest.fixture(scope="module")
def testbed(shared_data):
    return rb.load_testbed(shared_data / "imagenet_testbed")


@pytest.mark.parametrize("shift", sorted(REFERENCE))
def test_standard_logit_fits_reproduce_reference(testbed, shift):
    slope, intercept, r = REFERENCE[shift]
    fit = rb.fit_testbed(testbed, shift, ("STANDARD",), "logit")
    assert fit.slope == pytest.approx(slope, abs=5e-4)
    assert fit.intercept == pytest.approx(intercept, abs=5e-4)
    if r is not None:
        assert fit.r == pytest.approx(r, abs=5e-4)


def test_x_axis_uses_same_class_imagenet_accuracy(testbed):
    x, _ = rb.baseline_points(testbed, "imagenet-r")
    keep = rb.baseline_mask(testbed) & np.isfinite(testbed.columns["imagenet-r"])
    np.testing.assert_allclose(x, testbed.columns["val-on-imagenet-r-classes"][keep])
    assert not np.allclose(x, testbed.columns["val"][keep])


def test_low_accuracy_cnns_add_baselines(testbed):
    n_std = rb.fit_testbed(testbed, "imagenetv2").n
    n_both = rb.fit_testbed(testbed, "imagenetv2", ("STANDARD", "LOW_ACCURACY_CNN")).n
    assert n_both > n_std + 50


@pytest.mark.parametrize("kind", rb.TRANSFORMS)
def test_fit_recovers_exact_line_and_er_is_zero_on_it(kind):
    x = np.linspace(0.05, 0.9, 12)
    y = rb.inverse_transform(0.8 * rb.transform(x, kind) - 0.4, kind)
    fit = rb.fit_line(x, y, kind)
    assert (fit.slope, fit.intercept, fit.r) == pytest.approx((0.8, -0.4, 1.0), abs=1e-9)
    np.testing.assert_allclose(fit.effective_robustness(x, y), 0.0, atol=1e-9)
    # 5 points above the trend at the trend's accuracy -> ER = +5
    assert fit.effective_robustness(0.5, fit.predict(0.5) + 0.05) == pytest.approx(5.0)


def test_bootstrap_ci_brackets_er_and_shrinks_with_less_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, 60)
    line = lambda a, noise: rb.inverse_transform(rb.transform(a) - 0.5 + noise * rng.normal(size=a.size))
    wide = rb.bootstrap_effective_robustness(x, line(x, 0.3), [0.5], [0.4], num_samples=400)
    tight = rb.bootstrap_effective_robustness(x, line(x, 0.01), [0.5], [0.4], num_samples=400)
    for res in (wide, tight):
        assert res["ci_low"][0] <= res["er"][0] <= res["ci_high"][0]
    assert (tight["ci_high"] - tight["ci_low"])[0] < (wide["ci_high"] - wide["ci_low"])[0]


def test_testbed_er_average_is_mean_of_shifts(testbed):
    accs = {"imagenetv2": (0.70, 0.62), "objectnet": (0.75, 0.50)}
    rep = rb.testbed_effective_robustness(testbed, accs, num_samples=100)
    per = [rep["per_shift"][s]["er"] for s in accs]
    assert rep["average"]["er"] == pytest.approx(np.mean(per))
    fit = rb.fit_testbed(testbed, "objectnet")
    assert rep["per_shift"]["objectnet"]["er"] == pytest.approx(100 * (0.50 - fit.predict(0.75)))
    for s in accs:
        lo, hi = rep["per_shift"][s]["ci"]
        assert lo <= rep["per_shift"][s]["er"] <= hi


def test_series_er_against_label_trend_and_figure(tmp_path):
    steps = (100, 200, 300, 400)
    ids = np.array([0.05, 0.10, 0.15, 0.20])
    label = rb.Series("label", steps, ids, rb.inverse_transform(rb.transform(ids) - 1.0))
    rich = rb.Series("rich", steps, ids, rb.inverse_transform(rb.transform(ids) - 0.5))
    rep = rb.series_effective_robustness([label, rich], ["label"], num_samples=50)
    assert rep["baseline_fit"]["slope"] == pytest.approx(1.0) and rep["baseline_fit"]["intercept"] == pytest.approx(-1.0)
    assert rep["series"]["label"]["mean_er"] == pytest.approx(0.0, abs=1e-9)
    assert all(c["er"] > 0 for c in rep["series"]["rich"]["checkpoints"])
    out = tmp_path / "fig.png"
    rb.plot_ood_vs_id(out, [label, rich], baseline_fit=rb.LinearFit(**rep["baseline_fit"]))
    assert out.stat().st_size > 10_000


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert rb.main(["testbed", "--testbed", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_testbed_figure_from_evaluate_csv(testbed, shared_data, tmp_path):
    rows = []
    for variant, bonus in (("label", 0.0), ("caption", 0.08)):
        for step, acc in ((1000, 0.05), (2000, 0.10), (3000, 0.15)):
            for shift in rb.TESTBED_SHIFTS:
                y, x = rb.EVALUATE_NAMES[shift]
                rows += [(f"m_{variant}", variant, step, x, acc), (f"m_{variant}", variant, step, y, acc / 2 + bonus)]
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "caption_variant", "step", "dataset", "top1"])
        w.writerows(rows)
    out, fig = tmp_path / "er.json", tmp_path / "fig.png"
    assert rb.main(["testbed", "--testbed", str(shared_data / "imagenet_testbed"), "--results", str(path),
                    "--out", str(out), "--figure", str(fig), "--bootstrap", "50"]) == 0
    report = json.loads(out.read_text())
    er = {m: r["average"]["er"] for m, r in report["models"].items()}
    assert er["m_caption@3000"] - er["m_label@3000"] == pytest.approx(8.0, abs=1e-6)
    assert fig.stat().st_size > 10_000
    bx, by = rb.average_baseline_points(testbed)
    assert bx.size > 70 and np.all(by < bx)


@pytest.mark.parametrize("args, says", [
    (["--out", ""], "--out '' is not allowed: the path of a file to write"),
    (["--figure", "   "], "--figure '   ' is not allowed: the path of a file to write"),
    (["--points-out", "{tmp}"], "is not allowed: the path of a file to write"),
    (["--out", "{tmp}/points.csv/er.json"], "points.csv is a file, not a folder"),
    (["--id-dataset", "imagenet1k"], "series --points: --id-dataset apply to --results only"),
])
def test_series_output_paths_and_ignored_flags_are_one_line(tmp_path, capsys, args, says):
    """'' used to be taken as 'no output' (exit 0, the report lost), a path under a file failed late with 'File
    exists' naming the report, and --points ignored the dataset flags without a word: each is one line, exit 2,
    before any work."""
    points = tmp_path / "points.csv"
    points.write_text("series,step,id_acc,ood_acc\na,1,0.5,0.3\na,2,0.6,0.35\nb,1,0.5,0.32\nb,2,0.6,0.4\n")
    argv = ["series", "--points", str(points), *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    code, _, err = run_main(rb.main, argv, capsys)
    err = err.strip()
    assert code == 2
    assert says in err and "\n" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]
