"""The mechanism experiment's data layer (coarse WordNet groups, mosaics, coarse eval sets) and its
effective-robustness analysis, against hand-computed expectations."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmcl_theory.clip import data
from mmcl_theory.clip.data import coarse_classes, mosaics
from mmcl_theory.clip.data.eval_sets import texture_vs_shape_coarse_label
from mmcl_theory.io import load_module_from_path

REPO = Path(__file__).resolve().parent.parent
mechanisms = load_module_from_path(REPO / "real_data" / "mechanisms_analysis.py", "mechanisms_analysis")
SHARED = Path(os.environ.get("MMCL_SHARED_DATA", REPO.parent / "shared" / "data"))
TINY = SHARED / "tiny_imagenet"
needs_tiny = pytest.mark.skipif(not (TINY / "wnids.txt").is_file(), reason=f"no Tiny ImageNet at {TINY}")
WORDNET = Path("/usr/share/wordnet/data.noun")


# ------------------------------------------------------------------------------------------------
# coarse groups
# ------------------------------------------------------------------------------------------------
def test_mapping_has_200_rows_in_10_to_30_nonempty_groups():
    table = coarse_classes.TINY_IMAGENET_COARSE
    assert len(table) == 200
    used = {g for g, _ in table.values()}
    assert used == set(coarse_classes.COARSE_GROUPS)
    assert 10 <= len(coarse_classes.COARSE_GROUPS) <= 30
    assert all(len(off) == 8 and off.isdigit() for _, off in table.values())


@needs_tiny
def test_mapping_covers_every_tiny_imagenet_wnid():
    wnids = (TINY / "wnids.txt").read_text().split()
    assert sorted(wnids) == sorted(coarse_classes.TINY_IMAGENET_COARSE)


@pytest.mark.parametrize("wnid, group", [
    ("n02099601", "dog"),                 # golden retriever
    ("n02124075", "cat"),                 # Egyptian cat
    ("n02129165", "cat"),                 # lion (a feline)
    ("n07749582", "fruit or vegetable"),  # lemon
    ("n03977966", "vehicle"),             # police van
    ("n04099969", "furniture"),           # rocking chair
    ("n01443537", "reptile or amphibian or fish"),  # goldfish
    ("n02206856", "insect"),              # bee
])
def test_known_memberships(wnid, group):
    assert coarse_classes.TINY_IMAGENET_COARSE[wnid][0] == group
    assert coarse_classes.COARSE_GROUPS[coarse_classes.coarse_label(wnid)] == group


def test_unknown_wnid_is_refused():
    with pytest.raises(ValueError, match="n00000000"):
        coarse_classes.coarse_label("n00000000")


@pytest.mark.slow  # re-derives the embedded table offline; needs Debian's wordnet-base, which CI does not install
@needs_tiny
@pytest.mark.skipif(not WORDNET.is_file(), reason="WordNet 3.0 (wordnet-base) not installed")
def test_derivation_reproduces_the_embedded_mapping():
    sys.path.insert(0, str(REPO / "real_data"))
    import derive_coarse_classes as d

    rows = d.derive((TINY / "wnids.txt").read_text().split(), d.read_hypernyms(WORDNET))
    assert {w: (g, o) for w, g, o in rows} == coarse_classes.TINY_IMAGENET_COARSE


# ------------------------------------------------------------------------------------------------
# mosaics
# ------------------------------------------------------------------------------------------------
def test_compose_mosaic_pastes_a_constant_inset_in_its_corner():
    main = np.zeros((64, 64, 3), np.uint8)
    inset = np.full((1, 64, 64, 3), 200, np.uint8)
    out = mosaics.compose_mosaic(main, inset, (3,))  # bottom-right: rows and columns 36..63
    assert (out[36:, 36:] == 200).all()
    assert (out[:36] == 0).all() and (out[:, :36] == 0).all()
    assert (main == 0).all()  # input untouched


def test_compose_mosaic_refuses_bad_shapes():
    with pytest.raises(ValueError):
        mosaics.compose_mosaic(np.zeros((32, 32, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8), (0,))


def test_plan_mosaics_respects_groups_counts_and_corners():
    groups = np.repeat(np.arange(6), 5)  # 30 images, 6 groups
    plan = mosaics.plan_mosaics(groups, seed=3)
    assert len(plan) == 30
    counts = set()
    for i, (insets, corners) in enumerate(plan):
        counts.add(len(insets))
        gs = [groups[j] for j in insets]
        assert groups[i] not in gs and len(set(gs)) == len(gs)
        assert len(set(corners)) == len(corners) == len(insets)
    assert counts == {1, 2, 3}
    assert plan == mosaics.plan_mosaics(groups, seed=3)


def test_plan_mosaics_needs_enough_groups():
    with pytest.raises(ValueError, match="distinct groups"):
        mosaics.plan_mosaics(np.array([0, 1, 2, 0]), seed=0)


@pytest.mark.parametrize("variant, text", [
    ("coarse", "dog"), ("coarse_fine", "dog, golden retriever"), ("mosaic_main", "dog"),
    ("mosaic_all", "dog, insect, vehicle"),
])
def test_mechanism_texts(variant, text):
    assert mosaics.mechanism_texts(variant, "dog", "dog", "golden retriever", ("insect", "vehicle")) == text


@needs_tiny
def test_written_sets_load_through_the_csv_loader(tmp_path):
    csvs = mosaics.write_mechanism_sets(TINY, tmp_path, per_class=1, seed=0)
    wnids = (TINY / "wnids.txt").read_text().split()
    sets = {v: data.load_training_set("csv", p) for v, p in csvs.items()}
    assert all(len(s) == 200 and not s.skipped for s in sets.values())
    rows = {v: list(csv.DictReader(open(p))) for v, p in csvs.items()}
    for k, w in enumerate(wnids):  # one image per class, in wnids.txt order
        group = coarse_classes.TINY_IMAGENET_COARSE[w][0]
        assert rows["coarse"][k]["title"] == group
        assert rows["coarse_fine"][k]["title"].startswith(group + ", ")
        assert rows["mosaic_main"][k]["title"] == group
        assert rows["mosaic_all"][k]["title"].split(", ")[0] == group
        assert 2 <= len(rows["mosaic_all"][k]["title"].split(", ")) <= 4
        assert rows["coarse"][k]["label"] == rows["mosaic_main"][k]["label"] == group
        assert Path(rows["coarse"][k]["filepath"]).name == f"{w}_0.JPEG"
    sl = data.load_training_set("csv", csvs["coarse"], label_key="label")  # the supervised arm's labels
    assert sl.classnames == sorted(coarse_classes.COARSE_GROUPS)
    assert [sl.classnames[k] for k in sl.labels] == [coarse_classes.TINY_IMAGENET_COARSE[w][0] for w in wnids]
    img = data.read_images([rows["mosaic_main"][0]["filepath"]], 64)
    assert img.shape == (1, 64, 64, 3)


# ------------------------------------------------------------------------------------------------
# coarse evaluation sets
# ------------------------------------------------------------------------------------------------
@needs_tiny
def test_tiny_imagenet_coarse_labels_follow_the_annotations():
    es = data.load_eval_set("tiny_imagenet_coarse", TINY, per_class=1)
    assert es.classnames == list(coarse_classes.COARSE_GROUPS) and len(es) == 200
    wnid_of = {}
    for line in (TINY / "val" / "val_annotations.txt").read_text().splitlines():
        f = line.split()
        wnid_of[f[0]] = f[1]
    for path, lab in zip(es.image_paths, es.labels):
        assert es.classnames[lab] == coarse_classes.TINY_IMAGENET_COARSE[wnid_of[Path(path).name]][0]


@pytest.mark.parametrize("category, group", [
    ("dog", "dog"), ("cat", "cat"), ("bird", "bird"), ("truck", "vehicle"), ("chair", "furniture"),
    ("bottle", "container"), ("elephant", "mammal"),
    ("airplane", None),  # Tiny ImageNet has no airliner/warplane class
])
def test_texture_vs_shape_coarse_labels(category, group):
    lab = texture_vs_shape_coarse_label(category)
    assert (None if lab is None else coarse_classes.COARSE_GROUPS[lab]) == group


# ------------------------------------------------------------------------------------------------
# effective robustness
# ------------------------------------------------------------------------------------------------
def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _trend(acc, slope=0.8, intercept=-0.5):
    return _sigmoid(slope * math.log(acc / (1 - acc)) + intercept)


def _points():
    pts = []
    for seed in range(3):
        for step, acc in enumerate((0.20, 0.30, 0.40, 0.50)):
            pts.append({"arm": "coarse", "seed": seed, "step": step, "id_dataset": "tiny_imagenet_coarse", "id_acc": acc,
                        "ood_acc": _trend(acc),
                        "per_shift": {s: _trend(acc) for s in mechanisms.SHIFTS}})
    for seed, offset in enumerate((0.01, 0.02, 0.03)):
        for step, acc in enumerate((0.25, 0.35, 0.45)):
            pts.append({"arm": "coarse_fine", "seed": seed, "step": step, "id_dataset": "tiny_imagenet_coarse", "id_acc": acc,
                        "ood_acc": _trend(acc) + offset,
                        "per_shift": {s: _trend(acc) + offset for s in mechanisms.SHIFTS}})
    return pts


def test_er_against_an_exact_trend_with_known_offsets():
    r = mechanisms.arm_effective_robustness(_points(), "coarse", "coarse_fine", num_samples=200)
    assert r["trend"]["slope"] == pytest.approx(0.8, abs=1e-9)
    assert r["trend"]["intercept"] == pytest.approx(-0.5, abs=1e-9)
    assert r["per_seed"] == pytest.approx({0: 1.0, 1: 2.0, 2: 3.0}, abs=1e-9)
    assert r["er"] == pytest.approx(2.0, abs=1e-9)
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t quantile for 2 dof: (2p - 1) / sqrt(2 p (1 - p))
    half = t975 * 1.0 / math.sqrt(3)  # sd of the seed means (1, 2, 3) is 1
    assert r["t_ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-9)
    lo, hi = r["bootstrap_ci95"]  # seed means resampled: within [1, 3] points
    assert 1.0 - 1e-9 <= lo <= 2.0 <= hi <= 3.0 + 1e-9
    assert r["seeds"] == 3 and r["checkpoints"] == 9 and r["predicted_sign"] == 1


def test_missing_arm_gives_none_and_report_skips_it():
    assert mechanisms.arm_effective_robustness(_points(), "coarse", "sl_coarse") is None
    rep = mechanisms.report(_points(), num_samples=50)
    assert set(rep["intra_class"]["arms"]) == {"coarse_fine"}
    assert rep["intra_class"]["arms"]["coarse_fine"]["per_shift"]["edges"] == pytest.approx(2.0, abs=1e-9)
    assert rep["feature_sharing"]["arms"] == {}


def test_read_points_averages_the_seven_shifts(tmp_path):
    path = tmp_path / "r.csv"
    accs = dict(zip(mechanisms.SHIFTS, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["model", "step", "dataset", "top1"])
        w.writeheader()
        w.writerow({"model": "mosaic_all_s2", "step": 250, "dataset": "tiny_imagenet_coarse", "top1": 0.5})
        for s, a in accs.items():
            w.writerow({"model": "mosaic_all_s2", "step": 250, "dataset": f"tiny_imagenet_coarse:{s}", "top1": a})
        w.writerow({"model": "mosaic_all_s2", "step": 500, "dataset": "tiny_imagenet_coarse", "top1": 0.6})  # no shifts
        w.writerow({"model": "other_s0", "step": 250, "dataset": "tiny_imagenet_coarse", "top1": 0.5})  # not an arm
    pts = mechanisms.read_points(path)
    assert len(pts) == 1
    p = pts[0]
    assert (p["arm"], p["seed"], p["step"], p["id_acc"]) == ("mosaic_all", 2, 250, 0.5)
    assert p["ood_acc"] == pytest.approx(0.4, abs=1e-12)


def test_figure_and_csv_round_trip(tmp_path):
    pts = _points()
    from mmcl_theory.io import atomic_write_csv

    atomic_write_csv(tmp_path / "p.csv", mechanisms.point_rows(pts), mechanisms.POINT_FIELDS)
    back = mechanisms.read_point_rows(tmp_path / "p.csv")
    assert [(p["arm"], p["seed"], p["step"]) for p in back] == [(p["arm"], p["seed"], p["step"]) for p in pts]
    assert np.allclose([p["ood_acc"] for p in back], [p["ood_acc"] for p in pts], rtol=0, atol=1e-15)
    mechanisms.figure_from_csv(tmp_path / "p.csv", tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_draws_the_mechanism_figure_from_the_package(tmp_path):
    """python -m mmcl_theory.figures draws the committed CSV with the package's function (no script loaded);
    the script re-exports the same objects, so the experiment writes the CSV the package reads."""
    from mmcl_theory import figures
    from mmcl_theory.clip.robustness import mechanisms as package

    assert mechanisms.figure_from_csv is package.figure_from_csv and mechanisms.ARMS is package.ARMS
    assert figures.main(["--only", figures.MECHANISMS_NAME, "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{figures.MECHANISMS_NAME}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_label_column_errors_and_skips(tmp_path):
    img = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "s.csv").write_text("filepath,title,label\na.png,x,dog\na.png,y,\na.png,z,cat\n")
    ds = data.load_training_set("csv", tmp_path / "s.csv", label_key="label")
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [1, 0]
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("s.csv:3")
    with pytest.raises(data.DataLayoutError, match="'kind'"):
        data.load_training_set("csv", tmp_path / "s.csv", label_key="kind")


def test_experiment_script_refuses_a_bad_data_root(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "real_data" / "mechanisms_experiment.py"), "--data-root",
                          str(tmp_path), "--runs", str(tmp_path / "r"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "tiny_imagenet/wnids.txt" in res.stderr


def _arm(er, lo, hi, seeds=3, baseline="coarse"):
    return {"er": er, "t_ci95": [lo, hi], "seeds": seeds, "checkpoints": 4 * seeds, "baseline": baseline}


def test_c6_pass_fail_and_not_run():
    good = {"intra_class": {"arms": {"coarse_fine": _arm(2.0, 0.5, 3.5), "sl_coarse": _arm(-3.0, -5.0, -1.0)}},
            "feature_sharing": {"arms": {"mosaic_all": _arm(1.0, 0.1, 1.9, baseline="mosaic_main"),
                                         "sl_mosaic": _arm(-2.0, -4.0, -0.5, baseline="mosaic_main")}}}
    res = mechanisms.c6_assessment(good)
    assert res["verdict"] == "pass" and res["missing"] == []
    assert set(res["arms"].values()) == {"confirmed"}
    covers = {**good, "feature_sharing": {"arms": {"mosaic_all": _arm(0.5, -0.5, 1.5, baseline="mosaic_main")}}}
    res = mechanisms.c6_assessment(covers)
    assert res["verdict"] == "fail" and res["arms"]["mosaic_all"] == "inconclusive" and res["missing"] == ["sl_mosaic"]
    wrong = {**good, "intra_class": {"arms": {"coarse_fine": _arm(-2.0, -3.0, -1.0)}}}
    assert mechanisms.c6_assessment(wrong)["arms"]["coarse_fine"] == "refuted"
    two_seeds = {**good, "intra_class": {"arms": {"coarse_fine": _arm(2.0, 0.5, 3.5, seeds=2)}}}
    assert mechanisms.c6_assessment(two_seeds)["verdict"] == "not run"
    # SL below 0 but its interval reaches above the treatment's ER: not confirmed
    sl_high = {**good, "intra_class": {"arms": {"coarse_fine": _arm(-0.2, -0.4, -0.1), "sl_coarse": _arm(-1.0, -2.0, -0.05)}}}
    assert mechanisms.c6_assessment(sl_high)["arms"]["sl_coarse"] == "inconclusive"
