"""clip.data loaders on generated fixtures for layouts with no real copy here: webdataset shards,
ImageNetV2 integer folders, the devkit layout, wnid folders, CC TSV + img2dataset files, CSV,
ImageNet-Captions, corrupt and missing files; and the inspection CLI."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmcl_theory.clip.data as D
from mmcl_theory.clip.data.facts import IMAGENET_A_CLASSES, IMAGENET_R_CLASSES, IMAGENET_WNIDS


def _png(path: Path, value: int, size=(8, 8)) -> Path:
    """Write a solid grey image whose pixel value identifies it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)
    return path


def _value(ds_or_paths, i=None) -> list[int]:
    paths = ds_or_paths if i is None else [ds_or_paths[i]]
    return [int(im[0, 0, 0]) for im in D.read_images(paths, 4)]


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


# ------------------------------------------------------------------------------------ ImageNet family

def test_imagenetv2_parses_folder_names_as_int(tmp_path):
    for k, v in ((0, 10), (2, 20), (10, 30), (999, 40)):
        _png(tmp_path / str(k) / "a.jpeg", v)
    (tmp_path / "notes").mkdir()
    ev = D.load_eval_set("imagenetv2", tmp_path)
    assert ev.labels.tolist() == [0, 2, 10, 999]           # string sort would give 0, 10, 2, 999
    assert _value(ev.image_paths) == [10, 20, 30, 40]
    assert ev.skipped == [(str(tmp_path / "notes"), "not a class-index folder 0..999")]


def test_imagenet1k_wnid_folders_use_global_index(tmp_path):
    picks = {"n01440764": 0, "n01443537": 1, "n15075141": 999, "n04592741": 908}
    for w, k in picks.items():
        _png(tmp_path / "val" / w / "x.JPEG", k % 250)
    (tmp_path / "val" / "n01440764" / "readme.txt").write_text("x")
    ev = D.load_eval_set("imagenet1k", tmp_path)
    assert sorted(zip(ev.labels.tolist(), _value(ev.image_paths))) == sorted((k, k % 250) for k in picks.values())
    assert len(ev.classnames) == 1000 and ev.class_subset is None
    assert [r for _, r in ev.skipped] == ["not an image file extension"]
    sketch = D.load_eval_set("imagenet_sketch", tmp_path / "val")
    assert sketch.labels.tolist() == ev.labels.tolist()


def test_imagenet1k_restricted_to_shift_classes(tmp_path):
    for w, v in (("n01440764", 1), ("n01443537", 2), ("n15075141", 3)):   # classes 0, 1, 999
        _png(tmp_path / w / "x.JPEG", v)
    r = D.load_eval_set("imagenet1k", tmp_path, restrict_to="imagenet-r")
    assert r.labels.tolist() == [0] and _value(r.image_paths) == [2]      # class 1 is R's first class
    assert len(r.classnames) == 200 and r.class_subset.tolist() == list(IMAGENET_R_CLASSES)
    o = D.load_eval_set("imagenet1k", tmp_path, restrict_to="objectnet")
    assert o.labels.tolist() == [124] and o.classnames[124] == "toilet paper" and len(o.class_subset) == 125
    with pytest.raises(ValueError, match="restrict_to"):
        D.load_eval_set("imagenet1k", tmp_path, restrict_to="imagenet-c")


def _write_devkit(root: Path, ilsvrc_ids: dict[str, int], truth: list[int]) -> None:
    from scipy.io import savemat
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    synsets = np.zeros((len(ilsvrc_ids),), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for j, (w, i) in enumerate(ilsvrc_ids.items()):
        synsets[j] = (np.array([[i]]), np.array([w]))
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, truth)) + "\n")


def test_imagenet1k_flat_val_with_devkit(tmp_path):
    # devkit IDs are NOT the sorted-wnid order: ID 1 -> n15075141 (index 999), ID 2 -> n01440764 (index 0)
    ids = {"n15075141": 1, "n01440764": 2, "n01443537": 3}
    _write_devkit(tmp_path, ids, truth=[2, 1, 3, 1])
    for k, v in enumerate((11, 22, 33, 44), start=1):
        _png(tmp_path / f"ILSVRC2012_val_{k:08d}.JPEG", v)
    ev = D.load_eval_set("imagenet1k", tmp_path)
    assert ev.labels.tolist() == [0, 999, 1, 999]
    assert _value(ev.image_paths) == [11, 22, 33, 44]


def test_imagenet1k_flat_val_without_devkit_is_one_clear_error(tmp_path):
    _png(tmp_path / "ILSVRC2012_val_00000001.JPEG", 1)
    with pytest.raises(D.DataLayoutError, match="devkit"):
        D.load_eval_set("imagenet1k", tmp_path)
    with pytest.raises(D.DataLayoutError, match="wnid folders"):
        D.load_eval_set("imagenet1k", tmp_path / "ILSVRC2012_val_00000001.JPEG")


@pytest.mark.parametrize("name,subset", [("imagenet-r", IMAGENET_R_CLASSES), ("imagenet-a", IMAGENET_A_CLASSES)])
def test_imagenet_r_a_labels_index_the_200_class_subset(tmp_path, name, subset):
    chosen = (subset[0], subset[57], subset[199])
    for c in chosen:
        _png(tmp_path / IMAGENET_WNIDS[c] / "img.jpg", c % 250)
    ev = D.load_eval_set(name, tmp_path)
    assert ev.class_subset.tolist() == list(subset) and len(ev.classnames) == 200
    assert ev.labels.tolist() == [0, 57, 199]
    assert ev.class_subset[ev.labels].tolist() == list(chosen)
    outside = next(i for i in range(1000) if i not in subset)
    _png(tmp_path / IMAGENET_WNIDS[outside] / "img.jpg", 1)
    with pytest.raises(D.DataLayoutError, match="outside"):
        D.load_eval_set(name, tmp_path)


def test_objectnet_folder_layout(tmp_path, shared_data):
    _png(tmp_path / "images" / "alarm_clock" / "a.png", 10, (12, 12))
    _png(tmp_path / "images" / "bathrobe" / "b.png", 20, (12, 12))    # ObjectNet-only class: not evaluated
    _png(tmp_path / "images" / "bicycle" / "c.png", 30, (12, 12))
    ev = D.load_eval_set("objectnet", tmp_path, metadata=shared_data / "imagenet_testbed")
    assert len(ev) == 2
    hits = [sorted(int(ev.class_subset[k]) for k in h) for h in ev.hit_sets]
    assert hits == [[409, 530], [444, 671]]   # analog/digital clock; tandem/mountain bike
    with pytest.raises(D.DataLayoutError, match="mapping files"):
        D.load_eval_set("objectnet", tmp_path)


# --------------------------------------------------------------------------------- training formats

def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_webdataset_counts_samples_from_shards(tmp_path):
    # keys are not contiguous (img2dataset drops failed downloads); one sample has no caption
    with tarfile.open(tmp_path / "00000.tar", "w") as t:
        for key, v in (("000000000", 10), ("000000004", 20), ("000000009", 30)):
            _add(t, f"{key}.jpg", _png_bytes(v))
            _add(t, f"{key}.txt", f"caption {v}".encode())
            _add(t, f"{key}.json", json.dumps({"key": key}).encode())
        _add(t, "000000011.jpg", _png_bytes(99))
    with tarfile.open(tmp_path / "00001.tar", "w") as t:
        _add(t, "000010002.jpg", _png_bytes(40))
        _add(t, "000010002.txt", b"a red car on the street")
    (tmp_path / "00002.tar").write_bytes(b"not a tar")
    ds = D.load_training_set("webdataset", tmp_path)
    assert len(ds) == 4
    assert ds.texts("caption") == ["caption 10", "caption 20", "caption 30", "a red car on the street"]
    assert _value(ds.image_paths) == [10, 20, 30, 40]
    reasons = dict(ds.skipped)
    assert reasons[f"{tmp_path / '00000.tar'}::000000011"] == "sample without caption (.txt)"
    assert reasons[str(tmp_path / "00002.tar")].startswith("unreadable tar shard")
    assert ds.texts("label")[3] == "car" and ds.texts("caption-minus:colour,background")[3] == "a car"


def test_conceptual_captions_tsv_with_img2dataset_files(tmp_path):
    rows = ["a dog on the beach\thttp://x/1.jpg", "broken line without tab", "two cats\thttp://x/2.jpg",
            "not downloaded\thttp://x/3.jpg", "a blue car\thttp://x/4.jpg"]
    (tmp_path / "cc.tsv").write_text("\n".join(rows) + "\n")
    for key, url, v in (("000000000", "http://x/1.jpg", 1), ("000000002", "http://x/2.jpg", 2),
                        ("000000004", "http://x/4.jpg", 4)):
        _png(tmp_path / "images" / "00000" / f"{key}.jpg", v)
        (tmp_path / "images" / "00000" / f"{key}.json").write_text(json.dumps({"url": url, "key": key}))
    ds = D.load_training_set("cc3m", tmp_path, images=tmp_path / "images")
    assert ds.texts("caption") == ["a dog on the beach", "two cats", "a blue car"]
    assert _value(ds.image_paths) == [1, 2, 4]
    assert ds.skipped == [(f"{tmp_path / 'cc.tsv'}:2", "expected 2 non-empty tab-separated fields (caption<TAB>url), got 1 fields"),
                          (f"{tmp_path / 'cc.tsv'}:4", "not downloaded")]
    assert ds.texts("label") == ["dog", "cat", "car"]
    # CC12M puts the url first
    (tmp_path / "cc.tsv").write_text("http://x/2.jpg\ttwo cats again\n")
    assert D.load_training_set("cc12m", tmp_path, images=tmp_path / "images").texts("caption") == ["two cats again"]


def test_csv_and_missing_files(tmp_path):
    _png(tmp_path / "img" / "a.png", 5)
    _png(tmp_path / "img" / "b.png", 6)
    (tmp_path / "d.csv").write_text('filepath,title\nimg/a.png,"a small dog, sleeping"\nimg/gone.png,lost\nimg/b.png,x\n')
    ds = D.load_training_set("csv", tmp_path / "d.csv")
    assert ds.texts("caption") == ["a small dog, sleeping", "x"] and _value(ds.image_paths) == [5, 6]
    assert ds.skipped == [(str(tmp_path / "img" / "gone.png"), "missing image file (line 3)")]
    (tmp_path / "d.tsv").write_text("img/b.png\tcaption b\n")
    assert D.load_training_set("csv", tmp_path / "d.tsv", image_key=0, caption_key=1).texts("caption") == ["caption b"]
    with pytest.raises(D.DataLayoutError, match="header"):
        D.load_training_set("csv", tmp_path / "d.tsv")


def test_imagenet_captions_json_and_jsonl(tmp_path):
    _png(tmp_path / "train" / "n01443537" / "n01443537_1.JPEG", 7)
    _png(tmp_path / "train" / "n15075141" / "n15075141_9.JPEG", 8)
    recs = [{"filename": "n01443537_1.JPEG", "wnid": "n01443537", "title": "My goldfish", "description": "orange fish",
             "tags": ["fish", "pet"]},
            {"filename": "missing.JPEG", "wnid": "n01443537", "title": "t", "description": "", "tags": []},
            {"filename": "n15075141_9.JPEG", "wnid": "n15075141", "title": "", "description": "paper roll", "tags": []}]
    (tmp_path / "imagenet_captions.json").write_text(json.dumps(recs))
    ds = D.load_training_set("imagenet_captions", tmp_path, text_fields=("title", "tags"))
    assert ds.texts("caption") == ["My goldfish. fish, pet"] and ds.labels.tolist() == [1]
    assert ds.texts("label") == ["goldfish"]
    assert [r for _, r in ds.skipped] == ["missing image file", "empty caption (fields title, tags)"]
    lines = [json.dumps(recs[0]), "{not json", json.dumps(recs[2])]
    (tmp_path / "imagenet_captions.json").write_text("\n".join(lines))
    ds = D.load_training_set("imagenet_captions", tmp_path, text_fields=("description",))
    assert ds.texts("caption") == ["orange fish", "paper roll"] and ds.labels.tolist() == [1, 999]
    assert ds.skipped[0][0] == f"{tmp_path / 'imagenet_captions.json'}:2"


def test_corrupt_image_is_reported_not_fatal(tmp_path):
    good = _png(tmp_path / "good.png", 9)
    bad = _truncated_jpeg(tmp_path / "bad.jpg")
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(D.ImageDecodeError, match="bad.jpg"):
        D.read_images([str(good), str(bad)], 4)
    skipped = []
    out = D.read_images([str(good), str(bad), missing], 4, skipped=skipped)
    assert out.shape == (3, 4, 4, 3) and out[0].min() == 9 and out[1:].max() == 0
    assert [w for w, _ in skipped] == [str(bad), missing]


# ---------------------------------------------------------------------------------------------- CLI

def _cli(*args):
    """The CLI of this checkout (not of whichever copy of the package is installed)."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mmcl_theory.clip.data", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_cli_check_reports_counts_and_skips(tmp_path, shared_data):
    _png(tmp_path / "3" / "ok.png", 1)
    _truncated_jpeg(tmp_path / "3" / "bad.jpg")
    (tmp_path / "3" / "notes.txt").write_text("x")
    r = _cli("check", "imagenetv2", "--root", str(tmp_path), "--verify", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["samples"] == 2 and rep["classes"]["present"] == 1 and rep["skipped"]["count"] == 2
    assert {w.rsplit("/", 1)[1] for w, _ in rep["skipped"]["entries"]} == {"notes.txt", "bad.jpg"}
    r = _cli("check", "coco", "--root", str(shared_data / "coco_mini"), "--option", "split=val")
    assert r.returncode == 0 and "samples: 79" in r.stdout


def test_cli_wrong_layout_exits_2_with_one_line(tmp_path):
    _png(tmp_path / "ILSVRC2012_val_00000001.JPEG", 1)
    r = _cli("check", "imagenet1k", "--root", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "devkit" in r.stderr
    r = _cli("check", "coco", "--root", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stdout == ""


def test_tiny_imagenet_layout_with_bad_records(tmp_path):
    (tmp_path / "wnids.txt").write_text("n01443537\nn01440764\n")     # goldfish before tench: file order
    (tmp_path / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01440764\ttench, Tinca tinca\n")
    g = tmp_path / "train" / "n01443537"
    _png(g / "images" / "n01443537_0.JPEG", 200, (64, 64))
    _truncated_jpeg(g / "images" / "n01443537_2.JPEG")
    (g / "n01443537_boxes.txt").write_text("n01443537_0.JPEG\t0\t0\t63\t63\nn01443537_1.JPEG\t1\t1\t5\t5\n"
                                           "garbage line\nn01443537_2.JPEG\t0\t0\t10\t10\n")
    t = tmp_path / "train" / "n01440764"
    _png(t / "images" / "n01440764_0.JPEG", 50, (64, 64))
    (t / "n01440764_boxes.txt").write_text("n01440764_0.JPEG\t10\t10\t20\t20\n")
    ds = D.load_training_set("tiny_imagenet", tmp_path)
    assert ds.labels.tolist() == [0, 0, 1] and ds.classnames == ["goldfish", "tench"]
    assert ds.skipped == [(f"{g / 'n01443537_boxes.txt'}:3", "expected 'file x0 y0 x1 y1'"),
                          (str(g / "images" / "n01443537_1.JPEG"), "missing image file")]
    rich = ds.texts("rich")
    assert rich[0] == "a large grey goldfish in the center, in a bright photo" and rich[2] == "a small black tench at the top left, in a dark photo"
    assert ds.skipped[-1][0] == str(g / "images" / "n01443537_2.JPEG") and "black image" in ds.skipped[-1][1]
    (tmp_path / "val" / "images").mkdir(parents=True)
    _png(tmp_path / "val" / "images" / "val_0.JPEG", 1)
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01440764\t0\t0\t5\t5\n"
                                                           "val_1.JPEG\tn99999999\t0\t0\t5\t5\n")
    ev = D.load_eval_set("tiny_imagenet", tmp_path)
    assert ev.labels.tolist() == [1] and ev.class_subset.tolist() == [1, 0]
    assert ev.skipped == [(f"{tmp_path / 'val' / 'val_annotations.txt'}:2",
                           "expected 'file wnid x0 y0 x1 y1' with a known wnid")]
