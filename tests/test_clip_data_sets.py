"""clip.data loaders on the real test data in ../shared/data (counts from each SOURCE.md)."""

import json

import numpy as np
import pytest

import mmcl_theory.clip.data as D
from mmcl_theory.clip.data.facts import IMAGENET_WNIDS


@pytest.fixture(scope="module")
def imagenet_index(shared_data):
    """wnid -> class index, read independently from imagenet_samples_160/index.tsv."""
    rows = [l.split("\t") for l in (shared_data / "imagenet_samples_160" / "index.tsv").read_text().splitlines()[1:]]
    return {r[1]: int(r[0]) for r in rows}


def test_builtin_wnids_and_classnames_match_files(shared_data, imagenet_index):
    assert {w: i for i, w in enumerate(IMAGENET_WNIDS)} == imagenet_index
    names = json.loads((shared_data / "clip_prompts" / "imagenet_classes.json").read_text())
    assert D.load_classnames() == names
    assert D.load_classnames(shared_data / "clip_prompts") == names
    assert len(D.load_templates(shared_data / "clip_prompts" / "imagenet_templates.json")) == 80
    assert D.load_templates()[0] == "a photo of a {}." and len(D.load_templates()) == 8


def test_class_subsets_match_testbed(shared_data):
    subs = json.loads((shared_data / "imagenet_testbed" / "class_sublists.json").read_text())
    from mmcl_theory.clip.data.facts import IMAGENET_A_CLASSES, IMAGENET_R_CLASSES
    assert list(IMAGENET_R_CLASSES) == subs["imagenet-r"] and list(IMAGENET_A_CLASSES) == subs["imagenet-a"]


# --------------------------------------------------------------------------------------------- COCO

def test_coco_counts_and_captions(shared_data):
    root = shared_data / "coco_mini"
    train = D.load_training_set("coco", root)
    val = D.load_training_set("coco", root, split="val")
    assert (len(train), len(val)) == (80, 79)   # SOURCE.md: 80 + 79 images
    assert sum(len(c) for c in train.captions) == 400 and sum(len(c) for c in val.captions) == 395
    assert len(D.load_training_set("coco", root, split="train+val")) == 159
    assert len(D.load_training_set("coco", root, per_caption=True)) == 400
    assert train.skipped == [] and all(p.endswith(".jpg") for p in train.image_paths)
    # captions of one image, read independently
    ann = json.loads((root / "annotations" / "captions_train2017.json").read_text())
    fname = train.image_paths[0].rsplit("/", 1)[1]
    image_id = next(im["id"] for im in ann["images"] if im["file_name"] == fname)
    expected = {a["caption"].strip() for a in ann["annotations"] if a["image_id"] == image_id}
    assert set(train.captions[0]) == expected
    t0, t0b, t1 = train.texts("caption", seed=0), train.texts("caption", seed=0), train.texts("caption", seed=1)
    assert t0 == t0b and t0 != t1 and t0[0] in expected
    assert [len(t) for t in train.all_texts()] == [5] * 80 and set(train.all_texts()[0]) == expected
    minus = train.all_texts("caption-minus:colour")[0]
    assert minus == tuple(D.remove_details(c, ["colour"]) for c in train.captions[0])


def test_coco_label_texts_from_instances(shared_data):
    root = shared_data / "coco_mini"
    ds = D.load_training_set("coco", root, split="val")
    inst = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    ids = {im["file_name"]: im["id"] for im in inst["images"]}
    for i in (0, 10, 40):
        image_id = ids[ds.image_paths[i].rsplit("/", 1)[1]]
        names = {cats[a["category_id"]] for a in inst["annotations"] if a["image_id"] == image_id}
        assert set(ds.texts("label")[i].split(", ")) == names


def test_coco_wrong_root_is_layout_error(shared_data):
    with pytest.raises(D.DataLayoutError, match="captions_train2017.json"):
        D.load_training_set("coco", shared_data / "tiny_imagenet")


# ------------------------------------------------------------------------------------ Tiny ImageNet

def test_tiny_imagenet_training_set(shared_data):
    root = shared_data / "tiny_imagenet"
    wnids = (root / "wnids.txt").read_text().split()
    full = D.load_training_set("tiny_imagenet", root)
    assert len(full) == 30000 and np.bincount(full.labels).tolist() == [150] * 200  # SOURCE.md
    ds = D.load_training_set("tiny_imagenet", root, per_class=2)
    assert len(ds) == 400
    # label order: position in wnids.txt (not sorted)
    for i in (0, 1, 2, 399):
        wnid = ds.image_paths[i].split("/")[-3]
        assert ds.labels[i] == wnids.index(wnid)
    assert ds.image_paths[0].endswith(f"{wnids[0]}_0.JPEG") and ds.image_paths[1].endswith(f"{wnids[0]}_1.JPEG")
    first_box = (root / "train" / wnids[0] / f"{wnids[0]}_boxes.txt").read_text().splitlines()
    box0 = next(l for l in first_box if l.startswith(f"{wnids[0]}_0.JPEG")).split()[1:]
    assert ds.boxes[0].tolist() == [int(v) for v in box0]
    assert ds.texts("label")[0] == "Egyptian Mau"  # CLIP's name of n02124075 (wnids.txt line 1)
    words = D.load_training_set("tiny_imagenet", root, per_class=1, classnames="words")
    assert words.classnames[0] == "Egyptian cat"


def test_tiny_imagenet_rich_texts(shared_data):
    ds = D.load_training_set("tiny_imagenet", shared_data / "tiny_imagenet", per_class=3)
    rich = ds.texts("rich")
    assert rich == ds.texts("caption") == ds.texts("rich", seed=5)
    for text, label in zip(rich[:50], ds.labels[:50]):
        assert ds.classnames[label] in text and text.startswith(("a ", "an "))
        assert any(s in text for s in ("small", "medium-sized", "large"))
    no_colour = ds.texts("caption-minus:colour,size")
    colours = set(D.DETAIL_WORDS["colour"]) | {"grey", "cyan", "pink"}
    assert all(not (set(t.split()) & (colours | {"small", "large", "medium-sized"})) - set(c.split())
               for t, c in zip(no_colour, [ds.classnames[k] for k in ds.labels]))
    varied = sum(len(set(rich[3 * k: 3 * k + 3])) > 1 for k in range(200))  # per-image details differ
    assert varied > 100


def test_tiny_imagenet_val_eval_set(shared_data, imagenet_index):
    root = shared_data / "tiny_imagenet"
    ev = D.load_eval_set("tiny_imagenet", root)
    wnids = (root / "wnids.txt").read_text().split()
    assert len(ev) == 10000 and np.bincount(ev.labels).tolist() == [50] * 200
    first = (root / "val" / "val_annotations.txt").read_text().splitlines()[:3]
    for i, line in enumerate(first):  # val_0 n03444034 ...
        f, w = line.split()[:2]
        assert ev.image_paths[i].endswith(f) and ev.labels[i] == wnids.index(w)
    assert ev.class_subset.tolist() == [imagenet_index[w] for w in wnids]
    assert ev.classnames == [D.load_classnames()[imagenet_index[w]] for w in wnids]


# ---------------------------------------------------------------------------- ObjectNet, texture-shape

def test_objectnet_testbed_protocol_matches_challenge_mapping(shared_data):
    """Hit sets must equal the ImageNet classes that the ObjectNet team's own mapping file
    (imagenet_pytorch_id_to_objectnet_id.json, a different source) sends to each image's ObjectNet id."""
    root = shared_data / "objectnet_samples"
    ev = D.load_eval_set("objectnet", root, metadata=shared_data / "imagenet_testbed")
    answers = json.loads((root / "answers-test.json").read_text())
    p2o = {int(k): v for k, v in json.loads((root / "imagenet_pytorch_id_to_objectnet_id.json").read_text()).items()}
    from mmcl_theory.clip.data.facts import OBJECTNET_CLASSES
    assert ev.class_subset.tolist() == list(OBJECTNET_CLASSES) and len(ev.classnames) == 125 and ev.crop_border == 2
    in_imagenet = [f for f, o in answers.items() if o in p2o.values()]
    assert len(ev) == len(in_imagenet) == 5
    for path, hits in zip(ev.image_paths, ev.hit_sets):
        oid = answers[path.rsplit("/", 1)[1]]
        assert {int(ev.class_subset[k]) for k in hits} == {i for i, o in p2o.items() if o == oid}
    pred = np.array([max(h) for h in ev.hit_sets])
    assert ev.correct(pred).all() and not ev.correct((pred + 1) % 125).all()


def test_objectnet_113_protocol_and_border(shared_data):
    root = shared_data / "objectnet_samples"
    ev = D.load_eval_set("objectnet", root, metadata=shared_data / "objectnet_metadata", protocol="objectnet113")
    assert len(ev.classnames) == 113 and ev.class_subset is None and ev.hit_sets is None
    names = {p.rsplit("/", 1)[1]: ev.classnames[k] for p, k in zip(ev.image_paths, ev.labels)}
    assert names["8f8933b9cd3546c.png"] == "Envelope" and names["eb1176c1173447c.png"] == "Toilet paper roll"
    from PIL import Image
    i = ev.image_paths.index(str(root / "images" / "910bcc105c3e4bb.png"))
    raw = np.asarray(Image.open(ev.image_paths[i]).convert("RGB"))
    assert raw.shape == (274, 484, 3) and (raw[0] == [255, 0, 0]).all()   # red border present
    cropped = ev.read([i], 270)[0]                                         # 270 = 274 - 2*2: no resize
    np.testing.assert_array_equal(cropped, raw[2:272, 2 + (480 - 270) // 2: 2 + (480 - 270) // 2 + 270])


def test_texture_vs_shape_sets(shared_data):
    for name in ("texture_vs_shape_edges", "texture_vs_shape_silhouettes"):
        ev = D.load_eval_set(name, shared_data / "texture_vs_shape")
        assert len(ev) == 160 and np.bincount(ev.labels).tolist() == [10] * 16
        assert ev.classnames[:3] == ["airplane", "bear", "bicycle"] and ev.classnames[-1] == "truck"
        assert "/bear/" in ev.image_paths[ev.labels.tolist().index(1)]
    groups = dict(zip(ev.classnames, ev.class_groups))
    assert groups["airplane"] == (404,) and groups["cat"] == (281, 282, 283, 284, 285, 286)
    assert len(groups["dog"]) == 109 and 192 not in groups["dog"] and D.load_classnames()[groups["elephant"][0]] == "Asian elephant"


def test_cc3m_captions_only(shared_data):
    ds = D.load_training_set("cc3m", shared_data / "cc3m_val", captions_only=True)
    assert len(ds) == 15833 and ds.skipped == [] and ds.image_paths is None  # SOURCE.md
    assert ds.texts("caption")[1] == "an angler fishes river on a snowy day ."
    with pytest.raises(D.DataLayoutError, match="img2dataset"):
        D.load_training_set("cc3m", shared_data / "cc3m_val")
