"""Bad-input catalogue of the real-data layer and the robustness CLI.

Each case writes a small fixture in a real format (COCO JSON, CC TSV, CSV, webdataset tar, ImageNet
folders, imagenet-testbed CSVs) and asserts either exit code 2 with one stderr line naming the input
and what is allowed, or a skip that is counted and reported. Most cases call the CLIs' ``main`` in
this process; a few run ``python -m`` to check that no traceback escapes the real entry point.
"""

import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmcl_theory.clip.data as D
from mmcl_theory.clip import robustness as rb
from conftest import run_main
from mmcl_theory.clip.data.__main__ import main as data_main

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers

def one_line_error(code, err, *parts):
    """Exit code 2 and exactly one stderr line, containing every part."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for p in parts:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def run_module(module, *argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True, text=True,
                          timeout=120, env=env)


def png(path: Path, value: int = 100, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), value, np.uint8)).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def coco(root: Path, captions, n_images: int = 2) -> Path:
    """A COCO 2017 train split: n_images PNGs and a captions file (a JSON-able object, or raw bytes)."""
    for i in range(n_images):
        png(root / "train2017" / f"{i:012d}.jpg", 10 * i + 5)
    ann = root / "annotations" / "captions_train2017.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_bytes(captions if isinstance(captions, bytes) else json.dumps(captions).encode())
    return ann


def coco_images(n: int = 2) -> list[dict]:
    return [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(n)]


def check_json(capsys, *argv):
    code, out, err = run_main(data_main, ["check", *argv, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


# ---------------------------------------------------------------------------------------------- COCO

def test_coco_json_of_the_wrong_structure_is_a_layout_error(tmp_path, capsys):
    ann = coco(tmp_path, [{"image_id": 0, "caption": "a dog"}])        # a list, not an object
    line = one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2], str(ann))
    assert "'images'" in line and "'annotations'" in line                # the expected layout is spelled out


def test_coco_without_annotations_is_a_layout_error_not_zero_samples(tmp_path, capsys):
    coco(tmp_path, {"images": coco_images()})
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "captions_train2017.json", "no 'annotations' key")


def test_coco_annotations_not_a_list(tmp_path, capsys):
    coco(tmp_path, {"images": coco_images(), "annotations": {"0": "a dog"}})
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "'annotations' is a dict, not a list")


def test_coco_truncated_json_names_line_and_column(tmp_path, capsys):
    coco(tmp_path, b'{"images": [{"id": 0,\n "file_name": "x.jpg"}], "annot')
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "captions_train2017.json", "not valid JSON at line 2")


def test_coco_bad_utf8_names_the_byte_offset(tmp_path, capsys):
    data = b'{"images": [{"id": 0, "file_name": "000000000000.jpg"}], "annotations": [{"image_id": 0, "caption": "caf\xe9"}]}'
    coco(tmp_path, data)
    offset = data.index(b"\xe9")
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "not valid UTF-8", f"at byte {offset}")


def test_coco_empty_captions_are_skipped_and_counted(tmp_path, capsys):
    anns = [{"image_id": 0, "caption": "a grey square"}, {"image_id": 0, "caption": ""},
            {"image_id": 1, "caption": "   \n"}, {"image_id": 7, "caption": "unknown image"}]
    ann = coco(tmp_path, {"images": coco_images(), "annotations": anns})
    ds = D.load_training_set("coco", tmp_path)
    assert ds.all_texts("caption") == [("a grey square",)]            # image 1 has no usable caption left
    assert sorted(ds.skipped) == sorted([
        (f"{ann}:annotations[1]", "empty caption"), (f"{ann}:annotations[2]", "empty caption"),
        (f"{ann}:annotations[3]", "caption annotation without a known image_id or a caption string"),
        (str(tmp_path / "train2017" / "000000000001.jpg"), "image without usable captions")])
    rep = check_json(capsys, "coco", "--root", tmp_path)
    assert rep["samples"] == 1 and rep["skipped"]["count"] == 4 and rep["skipped"]["by_reason"]["empty caption"] == 2


def test_coco_with_only_empty_captions_has_no_usable_sample(tmp_path, capsys):
    coco(tmp_path, {"images": coco_images(), "annotations": [{"image_id": 0, "caption": " "}]})
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "no usable samples", "empty caption")


def test_coco_instances_of_the_wrong_structure(tmp_path, capsys):
    coco(tmp_path, {"images": coco_images(), "annotations": [{"image_id": 0, "caption": "a dog"}]})
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps({"categories": {}}))
    one_line_error(*run_main(data_main, ["check", "coco", "--root", tmp_path], capsys)[::2],
                   "instances_train2017.json", "'categories' is a dict, not a list")


def test_coco_lone_surrogate_caption_is_skipped_not_kept(tmp_path):
    # valid JSON whose escape decodes to half a UTF-16 pair: no real text, so the caption is skipped
    coco(tmp_path, b'{"images": [{"id": 0, "file_name": "000000000000.jpg"}], "annotations": '
                   b'[{"image_id": 0, "caption": "a \\udc80 dog"}, {"image_id": 0, "caption": "a dog"}]}')
    ds = D.load_training_set("coco", tmp_path)
    assert ds.all_texts("caption") == [("a dog",)]
    assert [r for _, r in ds.skipped] == ["caption is not valid UTF-8 (undecodable byte at character 2)"]


# ------------------------------------------------------------------------------------ CC3M TSV, CSV

def cc3m(root: Path, tsv: bytes, urls: dict[str, int]) -> Path:
    for key, (url, value) in enumerate(urls.items()):
        png(root / "images" / "00000" / f"{key:09d}.jpg", value)
        (root / "images" / "00000" / f"{key:09d}.json").write_text(json.dumps({"url": url}))
    (root / "cc.tsv").write_bytes(tsv)
    return root / "cc.tsv"


def test_cc3m_bad_utf8_and_empty_captions_are_counted_skips(tmp_path, capsys):
    tsv = cc3m(tmp_path, b"a dog on a beach\thttp://a\ncaf\xe9 au lait\thttp://b\n \thttp://c\nthree cats\thttp://d\n",
               {"http://a": 1, "http://b": 2, "http://c": 3, "http://d": 4})
    ds = D.load_training_set("cc3m", tmp_path, images=tmp_path / "images")
    assert ds.texts("caption") == ["a dog on a beach", "three cats"]   # nothing replaced by U+FFFD
    assert ds.skipped == [(f"{tsv}:2", "not valid UTF-8"),
                          (f"{tsv}:3", "expected 2 non-empty tab-separated fields (caption<TAB>url), got an empty field")]
    rep = check_json(capsys, "cc3m", "--root", tmp_path, "--option", f"images={tmp_path / 'images'}")
    assert rep["samples"] == 2 and rep["skipped"]["by_reason"] == {
        "not valid UTF-8": 1, "expected 2 non-empty tab-separated fields (caption<TAB>url), got an empty field": 1}


def test_cc3m_sidecar_without_url_is_listed(tmp_path):
    cc3m(tmp_path, b"a dog\thttp://a\n", {"http://a": 1})
    png(tmp_path / "images" / "00000" / "000000009.jpg", 9)
    (tmp_path / "images" / "00000" / "000000009.json").write_bytes(b"\xff\xfe")
    ds = D.load_training_set("cc3m", tmp_path, images=tmp_path / "images")
    assert len(ds) == 1 and ds.skipped == [(str(tmp_path / "images" / "00000" / "000000009.json"),
                                            "img2dataset sidecar without a 'url' (not UTF-8 JSON with a url)")]


def test_csv_unclosed_quote_is_a_layout_error(tmp_path, capsys):
    png(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text('filepath,title\na.png,"a dog\nb.png,two cats\n')
    one_line_error(*run_main(data_main, ["check", "csv", "--root", tmp_path / "train.csv"], capsys)[::2],
                   "train.csv", "not a readable CSV file at line")


def test_csv_bad_rows_are_counted_skips(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        png(tmp_path / name)
    (tmp_path / "train.csv").write_bytes(b"filepath,title\na.png,a dog\nb.png,\xff\xfe\nc.png,  \nd.png,missing\n")
    ds = D.load_training_set("csv", tmp_path / "train.csv")
    assert ds.texts("caption") == ["a dog"]
    assert ds.skipped == [(f"{tmp_path / 'train.csv'}:3", "not valid UTF-8"),
                          (f"{tmp_path / 'train.csv'}:4", "empty caption"),
                          (str(tmp_path / "d.png"), "missing image file (line 5)")]


def test_csv_header_without_the_columns(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("path,caption\na.png,a dog\n")
    one_line_error(*run_main(data_main, ["check", "csv", "--root", tmp_path / "train.csv"], capsys)[::2],
                   "must name the columns 'filepath' and 'title'")


# ------------------------------------------------------------------------------- webdataset shards

def shard(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_webdataset_bad_and_empty_captions_are_counted_skips(tmp_path):
    tar = shard(tmp_path / "00000.tar", {"0.png": _png_bytes(1), "0.txt": b"a dog",
                                         "1.png": _png_bytes(2), "1.txt": b"\xc3\x28 bad",
                                         "2.png": _png_bytes(3), "2.txt": b" \n"})
    ds = D.load_training_set("webdataset", tmp_path)
    assert ds.texts("caption") == ["a dog"]
    assert ds.skipped == [(f"{tar}::1.txt", "caption not valid UTF-8 at byte 0"), (f"{tar}::2.txt", "empty caption")]


def test_webdataset_with_only_unreadable_shards(tmp_path, capsys):
    (tmp_path / "00000.tar").write_bytes(b"not a tar file at all" * 30)
    one_line_error(*run_main(data_main, ["check", "webdataset", "--root", tmp_path], capsys)[::2],
                   "no usable samples", "unreadable tar shard")


# ------------------------------------------------------------------- ImageNet-Captions, Tiny ImageNet

def test_imagenet_captions_json_bad_utf8_is_a_layout_error(tmp_path, capsys):
    data = b'[{"filename": "a.JPEG", "wnid": "n01440764", "title": "tench \x80"}]'
    (tmp_path / "captions.json").write_bytes(data)
    offset = data.index(b"\x80")
    one_line_error(*run_main(data_main, ["check", "imagenet_captions", "--root", tmp_path], capsys)[::2],
                   "captions.json", f"not valid UTF-8 at byte {offset}")


def test_imagenet_captions_jsonl_bad_line_is_a_counted_skip(tmp_path):
    png(tmp_path / "train" / "n01440764" / "a.JPEG")
    png(tmp_path / "train" / "n01440764" / "b.JPEG")
    lines = [b'{"filename": "a.JPEG", "wnid": "n01440764", "title": "a tench"}',
             b'{"filename": "b.JPEG", "wnid": "n01440764", "title": "\xff"}']
    (tmp_path / "captions.json").write_bytes(b"\n".join(lines) + b"\n")
    ds = D.load_training_set("imagenet_captions", tmp_path)
    assert ds.texts("caption") == ["a tench"] and ds.labels.tolist() == [0]
    offset = len(lines[0]) + 1 + lines[1].index(b"\xff")               # the newline of line 1 counts
    assert ds.skipped == [(f"{tmp_path / 'captions.json'}:2", f"not valid UTF-8 at byte {offset} of the file")]


def tiny(root: Path) -> None:
    (root / "wnids.txt").write_text("n01443537\nn01629819\n")
    rows = []
    for k, w in enumerate(("n01443537", "n01629819")):
        png(root / "val" / "images" / f"val_{k}.JPEG", 40 * k + 20, (64, 64))
        rows.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63".encode())
    (root / "val" / "val_annotations.txt").write_bytes(b"\n".join(rows + [b"val_9.JPEG\t\xe9\t0\t0\t1\t1"]) + b"\n")


def test_tiny_imagenet_bad_annotation_line_is_skipped(tmp_path, capsys):
    tiny(tmp_path)
    rep = check_json(capsys, "tiny_imagenet", "--kind", "eval", "--root", tmp_path)
    assert rep["samples"] == 2 and rep["skipped"]["count"] == 1
    where, reason = rep["skipped"]["entries"][0]
    assert where.endswith("val_annotations.txt:3") and reason.startswith("not valid UTF-8 at byte ")


def test_tiny_imagenet_wnids_not_utf8(tmp_path, capsys):
    tiny(tmp_path)
    (tmp_path / "wnids.txt").write_bytes(b"n01443537\n\xffn01629819\n")
    one_line_error(*run_main(data_main, ["check", "tiny_imagenet", "--kind", "eval", "--root", tmp_path], capsys)[::2],
                   "wnids.txt", "not valid UTF-8 at byte 10")


# ------------------------------------------------------------------------------------ evaluation sets

def test_eval_set_with_no_images_is_a_layout_error(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "notes.txt").write_text("x")
    one_line_error(*run_main(data_main, ["check", "imagenetv2", "--root", tmp_path], capsys)[::2],
                   "imagenetv2: no usable samples", "not an image file extension")


def test_objectnet_mapping_of_the_wrong_structure(tmp_path, capsys):
    png(tmp_path / "images" / "alarm_clock" / "a.png")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "folder_to_objectnet_label.json").write_text('["alarm_clock"]')
    (tmp_path / "mappings" / "objectnet_to_imagenet_1k.json").write_text("{}")
    one_line_error(*run_main(data_main, ["check", "objectnet", "--root", tmp_path], capsys)[::2],
                   "folder_to_objectnet_label.json", "not a JSON object of strings")


def test_imagenet_r_class_sublists_of_the_wrong_structure(tmp_path, capsys):
    png(tmp_path / "n01443537" / "a.png")
    (tmp_path / "class_sublists.json").write_text(json.dumps({"imagenet-r": "all"}))
    one_line_error(*run_main(data_main, ["check", "imagenet-r", "--root", tmp_path, "--option",
                                    f"class_sublists={tmp_path / 'class_sublists.json'}"], capsys)[::2],
                   "class_sublists.json", "list of ImageNet-1k indices")


# ------------------------------------------------------------------------------ the data CLI's options

@pytest.mark.parametrize("argv,parts", [
    (["--option", "per_class=abc"], ["--option per_class = 'abc'", "an integer"]),
    (["--option", "per_class=0"], ["per_class = 0", "an integer >= 1"]),
    (["--option", "shuffle=true"], ["'shuffle' is not an option of tiny_imagenet", "allowed split, per_class, classnames"]),
    (["--option", "per_class"], ["must look like KEY=VALUE"]),
    (["--workers", "0"], ["--workers = 0", "[1, 256]"]),
    (["--workers", "two"], ["argument --workers", "invalid int value"]),
    (["--kind", "test"], ["argument --kind", "invalid choice"]),
    (["--root", ""], ["--root '' is not allowed", "folder or file"]),
])
def test_data_cli_bad_options(tmp_path, capsys, argv, parts):
    tiny(tmp_path)
    one_line_error(*run_main(data_main, ["check", "tiny_imagenet", "--root", tmp_path, *argv], capsys)[::2], *parts)


def test_data_cli_bool_option_is_true_or_false_only(tmp_path, capsys):
    cc3m(tmp_path, b"a dog\thttp://a\n", {"http://a": 1})
    one_line_error(*run_main(data_main, ["check", "cc3m", "--root", tmp_path, "--option", "captions_only=False!"],
                        capsys)[::2], "captions_only", "true or false")
    rep = check_json(capsys, "cc3m", "--root", tmp_path, "--option", "captions_only=TRUE")
    assert rep["samples"] == 1


def test_data_cli_unknown_name_and_train_name_as_eval(tmp_path, capsys):
    one_line_error(*run_main(data_main, ["check", "imagenet-z", "--root", tmp_path], capsys)[::2], "invalid choice")
    one_line_error(*run_main(data_main, ["check", "coco", "--kind", "eval", "--root", tmp_path], capsys)[::2],
                   "'coco' is not an evaluation set", "imagenet1k")


def test_data_cli_verify_lists_corrupt_and_missing_images(tmp_path, capsys):
    png(tmp_path / "3" / "ok.png")
    truncated_jpeg(tmp_path / "3" / "bad.jpg")
    (tmp_path / "3" / "empty.png").write_bytes(b"")
    rep = check_json(capsys, "imagenetv2", "--root", tmp_path, "--verify")
    entries = {Path(w).name: r for w, r in rep["skipped"]["entries"]}
    assert rep["samples"] == 3 and set(entries) == {"bad.jpg", "empty.png"}
    assert entries["empty.png"].startswith("undecodable image (UnidentifiedImageError")
    assert entries["bad.jpg"].startswith("undecodable image (OSError")


def test_data_cli_verify_groups_by_a_stable_cause(tmp_path, capsys):
    """Equal causes are one group: no memory address (Pillow's repr of the BytesIO) or file name in the cause."""
    png(tmp_path / "3" / "ok.png")
    for name in ("empty1.png", "empty2.png"):
        (tmp_path / "3" / name).write_bytes(b"")
    (tmp_path / "4" / "junk.png").parent.mkdir()
    (tmp_path / "4" / "junk.png").write_bytes(b"not an image at all")
    code, out, err = run_main(data_main, ["check", "imagenetv2", "--root", tmp_path, "--verify", "--json"], capsys)
    assert code == 0, err
    assert " at 0x" not in out
    assert json.loads(out)["skipped"]["by_reason"] == {
        "undecodable image (UnidentifiedImageError: cannot identify image file)": 3}
    skipped = []
    D.read_images([str(tmp_path / "gone1.png"), str(tmp_path / "gone2.png"), f"{tmp_path / 'x.tar'}::a.png"], 4,
                  skipped=skipped)
    assert {r for _, r in skipped} == {"FileNotFoundError: No such file or directory"}, skipped


def test_data_cli_entry_point_has_no_traceback(tmp_path):
    coco(tmp_path, [1, 2, 3])
    r = run_module("mmcl_theory.clip.data", "check", "coco", "--root", tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "captions_train2017.json holds a JSON list" in r.stderr


# ----------------------------------------------------------------------- unreadable images, exactly which

def test_unreadable_rows_are_reported_exactly(tmp_path):
    paths = [png(tmp_path / "a.png", 10), truncated_jpeg(tmp_path / "b.jpg"), tmp_path / "missing.png",
             png(tmp_path / "d.png", 40), png(tmp_path / "e.png", 50)]
    paths = [str(p) for p in paths]
    skipped, failed = [], []
    imgs = D.read_images(paths, 4, skipped=skipped, failed_rows=failed)
    assert failed == [1, 2] and [p for p, _ in skipped] == paths[1:3]
    assert imgs[[0, 3, 4], 0, 0, 0].tolist() == [10, 40, 50] and not imgs[[1, 2]].any()
    with pytest.raises(D.ImageDecodeError, match="missing.png"):
        D.read_images(paths[2:3], 4)
    cache = D.build_cache(paths, tmp_path / "cache", 4, workers=1, shard_size=2, progress=False)
    assert cache.unreadable_rows.tolist() == [1, 2] and cache.skipped_rows == [1, 2]
    assert cache.readable.tolist() == [True, False, False, True, True]
    assert [p for p, _ in cache.skipped] == paths[1:3]
    assert "FileNotFoundError" in cache.skipped[1][1]
    assert cache.get_batch(np.flatnonzero(cache.readable))[:, 0, 0, 0].tolist() == [10, 40, 50]


def test_eval_set_read_reports_failed_rows(tmp_path):
    png(tmp_path / "0" / "a.png", 10)
    truncated_jpeg(tmp_path / "0" / "b.jpg")
    png(tmp_path / "1" / "c.png", 30)
    ev = D.load_eval_set("imagenetv2", tmp_path)
    failed = []
    imgs = ev.read([2, 1, 0], 4, failed_rows=failed)
    assert failed == [1] and imgs[[0, 2], 0, 0, 0].tolist() == [30, 10]


def test_damaged_cache_marker_is_rebuilt_and_damaged_manifest_refused(tmp_path):
    paths = [str(png(tmp_path / f"{i}.png", 10 * i + 5)) for i in range(4)]
    D.build_cache(paths, tmp_path / "cache", 4, workers=1, shard_size=2, progress=False)
    marker = tmp_path / "cache" / "shard_00001.done.json"
    marker.write_text("[[3, ")                                        # a damaged marker
    with pytest.raises(D.DataLayoutError, match="shard_00001.done.json missing or unreadable"):
        D.ImageCache(tmp_path / "cache")
    cache = D.build_cache(paths, tmp_path / "cache", 4, workers=1, shard_size=2, progress=False)
    assert cache.get_batch([0, 1, 2, 3])[:, 0, 0, 0].tolist() == [5, 15, 25, 35] and cache.skipped == []
    (tmp_path / "cache" / "manifest.json").write_text("{not json")
    with pytest.raises(D.DataLayoutError, match="unreadable cache manifest"):
        D.ImageCache(tmp_path / "cache")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process from /proc, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in "ZX" else (state, int(ppid))


def _descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of the live descendants of pid (read from /proc; psutil may be absent)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _proc_stat(int(d.name))) is not None:
            children.setdefault(st[1], []).append(int(d.name))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            try:
                out[c] = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            todo.append(c)
    return out


def _wchan(pid: int) -> str:
    """Where in the kernel the process sleeps ('wait_for_partner': opening a FIFO nobody writes to)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return ""


BUILDER = """
import sys
from mmcl_theory.clip.data import build_cache
build_cache(sys.argv[2:], sys.argv[1], 8, workers=2, shard_size=1, progress=False)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to find the worker processes")
def test_cache_workers_die_with_a_killed_builder(tmp_path):
    """kill -9 of the cache builder takes its decoding workers (and multiprocessing's resource tracker) with it.
    The images are FIFOs nobody writes to, so each worker is stuck in open() when the builder dies."""
    import signal
    import time

    fifos = []
    for name in ("a.png", "b.png"):
        os.mkfifo(tmp_path / name)
        fifos.append(str(tmp_path / name))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "cache"), *fifos], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180                            # spawned workers import numpy, PIL: slow under load
        while sum("spawn_main" in c for c in seen.values()) < 2:     # both workers started
            assert builder.poll() is None and time.monotonic() < deadline, (builder.returncode, seen)
            seen.update(_descendants(builder.pid))
            time.sleep(0.1)
        workers = [p for p, c in seen.items() if "spawn_main" in c]
        deadline = time.monotonic() + 60                             # ...and each is blocked opening its FIFO (wchan
        while not all(_wchan(p) == "wait_for_partner" for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)                                          # not exposed: go on after 60 s)
        seen.update(_descendants(builder.pid))
        builder.send_signal(signal.SIGKILL)
        builder.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (alive := [p for p in seen if _proc_stat(p) is not None]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive, {p: seen[p] for p in alive}
    finally:
        for pid in [builder.pid, *seen]:
            if _proc_stat(pid) is not None:
                os.kill(pid, signal.SIGKILL)
        if builder.poll() is None:
            builder.wait(timeout=30)


WATCHED = """
import sys, time
from mmcl_theory.clip.data import cache
sys.platform = "other"                       # no prctl: the getppid thread must do it
cache._die_with_parent(int(sys.argv[1]))
print("armed", flush=True)
time.sleep(120)
"""
MIDDLE = """
import os, subprocess, sys
p = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(p.pid, flush=True)
p.wait()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to see the worker's state")
def test_cache_worker_fallback_without_prctl(tmp_path):
    """Where prctl is missing, the worker initializer's getppid thread ends the worker when its parent dies; a
    worker whose parent died before the initializer ran exits at once."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    orphan = subprocess.run([sys.executable, "-c", WATCHED, "1"], env=env, capture_output=True, text=True, timeout=120)
    assert orphan.returncode == 1 and "armed" not in orphan.stdout       # parent 1 is not its parent: exits
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, WATCHED], env=env, stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(middle.stdout.readline())
        assert middle.stdout.readline().strip() == "armed"
        middle.send_signal(signal.SIGKILL)
        middle.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _proc_stat(worker) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _proc_stat(worker) is None
    finally:
        for pid in (middle.pid, worker):
            if pid is not None and _proc_stat(pid) is not None:
                os.kill(pid, signal.SIGKILL)
        middle.wait(timeout=30)
        middle.stdout.close()


# ---------------------------------------------------------------------------------------- robustness

SLOPE, INTERCEPT = 0.9, -0.5
SHIFT_COLUMNS = {"val": None, **{y: x for y, x in rb.TESTBED_SHIFTS.values()}}


def logit(p):
    return math.log(p / (1 - p))


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def make_testbed(root: Path, n: int = 8, drop: str | None = None) -> Path:
    """A testbed of n STANDARD models exactly on logit(ood) = 0.9 logit(id) - 0.5 for every shift."""
    cols = [c for c in dict.fromkeys(["val", *[c for pair in rb.TESTBED_SHIFTS.values() for c in pair]]) if c != drop]
    lines = [",".join(["model", *cols])]
    for k in range(n):
        acc = 0.30 + 0.06 * k
        ood = sigmoid(SLOPE * logit(acc) + INTERCEPT)
        values = {c: acc for c in cols} | {y: ood for y, _ in rb.TESTBED_SHIFTS.values() if y in cols}
        lines.append(",".join([f"model{k}", *(f"{100 * values[c]:.10f}" for c in cols)]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "robustness_top1s.csv").write_text("\n".join(lines) + "\n")
    (root / "model_types.csv").write_text("model,type\n" + "".join(f"model{k},STANDARD\n" for k in range(n)))
    return root


def test_testbed_nan_accuracies_are_skipped_and_counted(tmp_path, capsys):
    tb = make_testbed(tmp_path / "tb")
    res = tmp_path / "results.csv"
    res.write_text("model,shift,id_acc,ood_acc\nm,imagenetv2,0.6,nan\nm,objectnet,0.6,0.5\n"
                   "m,imagenet-r,75,0.5\nm,imagenet-q,0.6,0.5\n")
    code, out, err = run_main(rb.main, ["testbed", "--testbed", tb, "--results", res, "--bootstrap", 20,
                                   "--out", tmp_path / "er.json"], capsys)
    assert code == 0, err
    assert "ER +nan" not in out and "ER -nan" not in out and "skipped 3 rows" in out
    report = json.loads((tmp_path / "er.json").read_text())
    expected = 100 * (0.5 - sigmoid(SLOPE * logit(0.6) + INTERCEPT))  # on the exact baseline line
    assert report["models"]["m"]["average"]["er"] == pytest.approx(expected, abs=1e-6)
    assert report["models"]["m"]["average"]["shifts"] == ["objectnet"]
    assert [w for w, _ in report["skipped"]["entries"]] == [f"{res}:2", f"{res}:4", f"{res}:5"]
    assert report["run"]["package"] == "mmcl-theory" and "--bootstrap 20" in report["run"]["command"]


def test_testbed_only_nan_results_exit_2(tmp_path, capsys):
    res = tmp_path / "results.csv"
    res.write_text("model,shift,id_acc,ood_acc\nm,imagenetv2,nan,nan\n")
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", make_testbed(tmp_path / "tb"), "--results", res,
                                  "--out", tmp_path / "er.json"], capsys)[::2],
                   "results.csv", "no model has a usable pair", "1 rows skipped")
    assert not (tmp_path / "er.json").exists()


@pytest.mark.parametrize("content,parts", [
    ("", ["results.csv: empty file", "model"]),
    ("model,shift,id_acc,ood_acc\n", ["results.csv: no data rows"]),
    ("model,shift,id_acc\nm,imagenetv2,0.5\n", ["results.csv: missing column 'ood_acc'"]),
    ("model,step,dataset\nm,1,imagenet1k\n", ["results.csv: missing column 'top1'"]),
    ("model,step,dataset,top1\nm,1,imagenet1k,0.5\nm,1,cifar10,0.4\n", ["no model has a usable pair"]),
])
def test_testbed_results_tables_refused_with_one_line(tmp_path, capsys, content, parts):
    res = tmp_path / "results.csv"
    res.write_text(content)
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", make_testbed(tmp_path / "tb"), "--results", res], capsys)[::2],
                   *parts)


def test_testbed_csv_missing_column_or_empty(tmp_path, capsys):
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", make_testbed(tmp_path / "a", drop="objectnet-1.0-beta")],
                        capsys)[::2], "robustness_top1s.csv: missing column 'objectnet-1.0-beta'", "objectnet")
    (tmp_path / "a" / "robustness_top1s.csv").write_text("")
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", tmp_path / "a"], capsys)[::2],
                   "robustness_top1s.csv: empty file", "model")
    (tmp_path / "a" / "model_types.csv").write_text("model,kind\nmodel0,STANDARD\n")
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", tmp_path / "a"], capsys)[::2],
                   "model_types.csv: missing column 'type'")


def test_testbed_csv_value_that_is_not_a_number(tmp_path, capsys):
    tb = make_testbed(tmp_path / "tb")
    text = (tb / "robustness_top1s.csv").read_text().splitlines()
    text[3] = text[3].replace(text[3].split(",")[1], "n/a", 1)
    (tb / "robustness_top1s.csv").write_text("\n".join(text) + "\n")
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", tb], capsys)[::2],
                   "robustness_top1s.csv, line 4, column 'val'", "'n/a' is not allowed", "0..100")


@pytest.mark.parametrize("argv,parts", [
    (["--bootstrap", "0"], ["--bootstrap = 0", "[1, 1000000]"]),
    (["--seed", "-1"], ["--seed = -1"]),
    (["--types", "FOO"], ["--types FOO: no baseline model", "STANDARD"]),
    (["--transform", "tanh"], ["argument --transform", "invalid choice"]),
    (["--figure", "fig.txt", "--results", "r.csv"], ["--figure = 'fig.txt'", ".png, .pdf or .svg"]),
    (["--figure", "fig.png"], ["--figure: needs --results"]),
])
def test_robustness_cli_bad_options(tmp_path, capsys, argv, parts):
    one_line_error(*run_main(rb.main, ["testbed", "--testbed", make_testbed(tmp_path / "tb"), *argv], capsys)[::2], *parts)


def test_series_points_with_nan_are_skipped_and_counted(tmp_path, capsys):
    pts = tmp_path / "points.csv"
    rows = ["series,step,id_acc,ood_acc"]
    for step, acc in ((100, 0.2), (200, 0.3), (300, 0.4)):
        rows += [f"label,{step},{acc},{sigmoid(logit(acc) - 1):.12f}", f"rich,{step},{acc},{sigmoid(logit(acc) - 0.5):.12f}"]
    rows += ["rich,400,nan,0.3", "rich,x,0.3,0.2", "rich,500,1.0,0.9"]
    pts.write_text("\n".join(rows) + "\n")
    code, out, err = run_main(rb.main, ["series", "--points", pts, "--baseline", "label", "--bootstrap", 20,
                                   "--out", tmp_path / "er.json"], capsys)
    assert code == 0, err
    assert " ER +nan" not in out and "skipped 3 rows" in out
    report = json.loads((tmp_path / "er.json").read_text())
    assert report["skipped"]["count"] == 3
    assert [c["step"] for c in report["series"]["rich"]["checkpoints"]] == [100, 200, 300]
    expected = np.mean([100 * (sigmoid(logit(a) - 0.5) - sigmoid(logit(a) - 1)) for a in (0.2, 0.3, 0.4)])
    assert report["series"]["rich"]["mean_er"] == pytest.approx(expected, abs=1e-6)


def test_series_points_refused_with_one_line(tmp_path, capsys):
    pts = tmp_path / "points.csv"
    pts.write_text("series,step,id_acc\nlabel,1,0.2\n")
    one_line_error(*run_main(rb.main, ["series", "--points", pts], capsys)[::2], "missing column 'ood_acc'")
    pts.write_text("series,step,id_acc,ood_acc\nlabel,1,nan,0.2\n")
    one_line_error(*run_main(rb.main, ["series", "--points", pts], capsys)[::2], "points.csv", "no usable row")
    pts.write_text("series,step,id_acc,ood_acc\nlabel,1,0.2,0.1\nlabel,2,0.3,0.1\n")   # flat: no trend
    one_line_error(*run_main(rb.main, ["series", "--points", pts], capsys)[::2], "OOD accuracies are all equal")
    one_line_error(*run_main(rb.main, ["series", "--points", pts, "--baseline", "rich"], capsys)[::2],
                   "baseline = ['rich']")


def test_robustness_api_refuses_nan_without_a_skip_list(tmp_path):
    pts = tmp_path / "points.csv"
    pts.write_text("series,step,id_acc,ood_acc\nlabel,1,0.2,nan\n")
    with pytest.raises(ValueError, match=r"points.csv:2: ood_acc: accuracy 'nan' is not allowed"):
        rb.read_series_csv(pts)
    with pytest.raises(ValueError, match="ID accuracy nan is not allowed"):
        rb.testbed_effective_robustness(rb.load_testbed(make_testbed(tmp_path / "tb")), {"imagenetv2": (math.nan, 0.5)})


def test_robustness_entry_point_empty_results_has_no_traceback(tmp_path):
    res = tmp_path / "results.csv"
    res.write_text("model,step,dataset,top1\n")
    r = run_module("mmcl_theory.clip.robustness", "testbed", "--testbed", make_testbed(tmp_path / "tb"), "--results", res,
                   "--out", tmp_path / "er.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "results.csv: no data rows" in r.stderr and not (tmp_path / "er.json").exists()
