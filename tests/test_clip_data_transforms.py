"""clip.data caption variants, shifts, tokenizer and image cache."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmcl_theory.clip.data as D
from mmcl_theory.clip.data.captions import colour_name, image_details, rich_text

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- captions

@pytest.mark.parametrize("caption,types,expected", [
    ("A red car parked next to a blue truck.", ["colour"], "A car parked next to a truck."),
    ("An orange cat sleeping.", ["colour"], "A cat sleeping."),
    ("Two dogs and three cats.", ["count"], "dogs and cats."),
    ("A group of people standing.", ["count"], "people standing."),
    ("A large elephant and a tiny mouse.", ["size"], "An elephant and a mouse."),
    ("A man riding a horse on the beach.", ["background"], "A man riding a horse."),
    ("A cat in the background.", ["background"], "A cat."),
    ("A cup on top of the table", ["spatial"], "A cup the table"),
    ("A bright sunny day with a kite", ["brightness"], "A day with a kite"),
])
def test_remove_details_hand_examples(caption, types, expected):
    assert D.remove_details(caption, types) == expected


def test_remove_details_rejects_unknown_type():
    with pytest.raises(ValueError, match="detail type"):
        D.remove_details("a cat", ["texture"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "red", "dog", "two", "cats", "on", "the", "grass", "big", "house", ","]),
                max_size=12), st.sets(st.sampled_from(D.DETAIL_TYPES)))
def test_remove_details_only_removes_and_is_idempotent(words, types):
    caption = " ".join(words)
    out = D.remove_details(caption, sorted(types))
    assert D.remove_details(out, sorted(types)) == out
    kept = {w.lower() for w in out.replace(",", " ").split()} - {"a", "an"}
    assert kept <= {w.lower() for w in words}
    for t in types:
        single = [w for w in D.DETAIL_WORDS[t] if " " not in w]
        assert not kept & set(single)


def test_colour_names_hand_values():
    assert [colour_name(np.array(c)) for c in ((250, 250, 250), (10, 10, 10), (128, 128, 128), (200, 30, 30),
                                                (30, 200, 30), (30, 30, 200), (240, 200, 20), (120, 70, 20))] == \
        ["white", "black", "grey", "red", "green", "blue", "yellow", "brown"]


def test_image_details_hand_computed():
    img = np.full((64, 64, 3), 20, np.uint8)        # dark background (luma 20)
    img[40:64, 0:24] = (30, 30, 200)                # blue object, bottom left, 24x24 = 14% of the image
    d = image_details(img, (0, 40, 23, 63))
    assert d == {"size": "small", "spatial": "at the bottom left", "colour": "blue", "brightness": "dark"}
    assert rich_text("goldfish", d) == "a small blue goldfish at the bottom left, in a dark photo"
    assert rich_text("egret", d, drop=("size", "colour", "brightness")) == "an egret at the bottom left"
    big = image_details(np.full((64, 64, 3), 230, np.uint8), (0, 0, 63, 63))
    assert big == {"size": "large", "spatial": "in the center", "colour": "white", "brightness": "bright"}


# ------------------------------------------------------------------------------------------ shifts

@pytest.fixture(scope="module")
def real_images(shared_data):
    ds = D.load_eval_set("tiny_imagenet", shared_data / "tiny_imagenet", per_class=1)
    return D.read_images(ds.image_paths[:16], 64)


def test_shifts_shape_dtype_determinism(real_images):
    for shift in D.SHIFTS:
        a = D.apply_shift(real_images, shift, 3, seed=1)
        assert a.shape == real_images.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, D.apply_shift(real_images, shift, 3, seed=1))
    assert not np.array_equal(D.apply_shift(real_images, "gaussian_noise", 3, 1),
                              D.apply_shift(real_images, "gaussian_noise", 3, 2))


@pytest.mark.parametrize("shift", ["gaussian_noise", "gaussian_blur", "contrast", "jpeg", "pixelate"])
def test_corruption_damage_grows_with_severity(real_images, shift):
    x = real_images.astype(np.float64)
    err = [np.mean((D.apply_shift(real_images, shift, s, 0) - x) ** 2) for s in range(1, 6)]
    assert err[0] > 0 and err[-1] > err[0]
    assert all(b >= a * 0.95 for a, b in zip(err, err[1:])), err


def test_contrast_and_greyscale_formulas():
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[0, 0, 0] = (100, 200, 50)
    img[0, 1, 1] = (255, 255, 255)
    m = img.astype(float).mean()
    expected = np.clip(np.rint((img - m) * 0.4 + m), 0, 255)
    np.testing.assert_array_equal(D.apply_shift(img, "contrast", 1), expected)
    g = D.apply_shift(img, "greyscale", 1)
    assert (g[..., 0] == g[..., 2]).all() and g[0, 0, 0, 0] == round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)


def test_edges_are_dark_lines_on_white():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, :, 16:] = 255                             # one vertical edge at x = 16
    e = D.apply_shift(img, "edges", 1)[0, :, :, 0]
    assert e[:, :8].min() == 255 and e[:, 24:].min() == 255   # flat regions stay white
    assert e[:, 15:17].max() < 100                             # the edge is dark
    assert (D.apply_shift(np.full((1, 8, 8, 3), 90, np.uint8), "edges", 1) == 255).all()


def test_apply_shift_validates():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="severity"):
        D.apply_shift(img, "contrast", 6)
    with pytest.raises(ValueError, match="shift"):
        D.apply_shift(img, "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        D.apply_shift(img.astype(np.float32), "contrast", 1)


# --------------------------------------------------------------------------------------- tokenizer

def test_clip_bpe_reproduces_clip_token_ids(shared_data):
    tok = D.load_clip_bpe(shared_data / "clip_prompts" / "bpe_simple_vocab_16e6.txt.gz")
    assert (tok.vocab_size, tok.sot_id, tok.eot_id) == (49408, 49406, 49407)
    # ids from openai/CLIP's README example: clip.tokenize("a diagram"), ("a dog"), ("a cat")
    out = tok.encode_batch(["a diagram", "a dog", "A  CAT"], 77)
    assert out.shape == (3, 77) and out.dtype == np.int32
    assert out[:, :4].tolist() == [[49406, 320, 22697, 49407], [49406, 320, 1929, 49407], [49406, 320, 2368, 49407]]
    assert (out[:, 4:] == 0).all() and tok.eot_positions(out).tolist() == [3, 3, 3]


def test_trained_tokenizer_roundtrip_and_truncation(shared_data, tmp_path):
    texts = D.load_training_set("cc3m", shared_data / "cc3m_val", captions_only=True).texts("caption")[:4000]
    tok = D.train_tokenizer(texts, 1500, tmp_path / "run" / "tokenizer.json")
    assert tok.vocab_size == 1500 and tok.eot_id == 1499 and tok.sot_id == 1498
    loaded = D.load_tokenizer(tmp_path / "run" / "tokenizer.json")
    batch = ["an angler fishes river on a snowy day .", "", "word " * 50]
    a, b = tok.encode_batch(batch, 32), loaded.encode_batch(batch, 32)
    np.testing.assert_array_equal(a, b)
    n = len(tok.encode(batch[0]))
    assert 2 < n < 30 and a[0, n + 1] == 1499 and (a[0, n + 2:] == 0).all()
    assert a[1, :3].tolist() == [1498, 1499, 0]
    assert a[2, -1] == 1499 and (a[2] > 0).all()                     # truncated: EOT kept at the end
    assert tok.eot_positions(a).tolist() == [n + 1, 1, 31] and a.max() == 1499
    assert tok.decode(a[0]) == batch[0]
    with pytest.raises(ValueError, match="vocab_size"):
        D.train_tokenizer(texts, 100)


_DETERMINISM_SCRIPT = """
import sys
from mmcl_theory.clip.data import train_tokenizer
texts = [f"{a} {b} {c}" for a in ("dog", "cat", "red", "sky") for b in ("on", "in", "at") for c in ("mat", "hat", "bat", "sat")]
train_tokenizer(texts * 2 + ["zebra quilt", "xylophone jazz"], 600, sys.argv[1])
"""


def test_trained_tokenizer_is_byte_identical_across_runs_and_processes(tmp_path):
    """Same texts and vocab size -> same file bytes: twice in this process and in two fresh processes
    with different hash seeds (the trainer used to number word-end symbols in hash-map order)."""
    script = tmp_path / "train_tok.py"
    script.write_text(_DETERMINISM_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for seed in ("1", "2"):
        subprocess.run([sys.executable, str(script), str(tmp_path / f"proc{seed}.json")], check=True, timeout=120,
                       env={**env, "PYTHONHASHSEED": seed})
    for k in range(2):
        exec(compile(_DETERMINISM_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / f"here{k}.json"))), "s", "exec"), {})
    files = [(tmp_path / f).read_bytes() for f in ("proc1.json", "proc2.json", "here0.json", "here1.json")]
    assert all(f == files[0] for f in files[1:])


def test_trained_tokenizer_ids_follow_the_documented_order(tmp_path):
    tok = D.train_tokenizer(["ab ab ab", "cd"], 520)
    vocab = tok._tok.get_vocab()
    # byte order of GPT-2/CLIP starts at '!' (33); 'a' (97) is the 65th symbol
    assert vocab["<pad>"] == 0 and vocab["!</w>"] == 1 and vocab["a</w>"] == 65 and vocab["!"] == 257
    assert vocab["a"] == 257 + 64
    # merges by frequency: a + b</w> (3 times) -> 513, c + d</w> (once) -> 514; no pair is left, so the
    # vocabulary stops at 517 < 520 ids, with SOT and EOT last
    assert vocab["ab</w>"] == 513 and vocab["cd</w>"] == 514
    assert (tok.vocab_size, tok.sot_id, tok.eot_id) == (517, 515, 516)
    # a byte never seen at a word end still encodes (it was silently dropped before)
    assert tok.decode(tok.encode_batch(["quiz"], 16)[0]) == "quiz"


# ------------------------------------------------------------------------------------------- cache

def _tiny_paths(shared_data, n):
    ds = D.load_eval_set("tiny_imagenet", shared_data / "tiny_imagenet", per_class=2)
    return ds.image_paths[:n]


def test_cache_matches_read_images_and_reports_bad_files(shared_data, tmp_path):
    paths = _tiny_paths(shared_data, 150)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(paths[0], "rb").read()[:300])
    paths = paths[:70] + [str(bad), str(tmp_path / "missing.jpg")] + paths[70:]
    cache = D.build_cache(paths, tmp_path / "c", 32, workers=2, shard_size=64, progress=False)
    assert len(cache) == 152 and cache.images.shape == (152, 32, 32, 3)
    idx = [151, 0, 69, 72, 100]
    ref = D.read_images([paths[i] for i in idx], 32)
    np.testing.assert_array_equal(cache.get_batch(idx), ref)
    np.testing.assert_array_equal(cache.images[10:13], D.read_images(paths[10:13], 32))
    assert [w for w, _ in cache.skipped] == [str(bad), str(tmp_path / "missing.jpg")]
    assert cache.skipped_rows == [70, 71] and cache.get_batch([70, 71]).max() == 0
    assert isinstance(cache.images, np.memmap) and cache.images.shape == (152, 32, 32, 3)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "images.npy", "manifest.json", "shard_00000.done.json", "shard_00001.done.json", "shard_00002.done.json"]


def test_cache_resumes_after_kill(shared_data, tmp_path):
    paths = _tiny_paths(shared_data, 200)
    out = tmp_path / "c"
    D.build_cache(paths, out, 16, shard_size=64, progress=False)
    full = np.asarray(D.ImageCache(out).images)
    # simulate a kill during shard 2: its rows are garbage, its marker was never written, a temp file is left
    (out / "shard_00002.done.json").unlink()
    rows = np.load(out / "images.npy", mmap_mode="r+")
    rows[128:192] = 7
    rows.flush()
    del rows
    (out / "shard_00002.done.json.partial.tmp").write_bytes(b"partial")
    with pytest.raises(D.DataLayoutError, match="incomplete"):
        D.ImageCache(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.done.json")}
    time.sleep(0.01)
    cache = D.build_cache(paths, out, 16, shard_size=64, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.done.json") if p.name in mtimes} == mtimes
    assert (out / "shard_00002.done.json").is_file() and not list(out.glob("*.tmp"))
    np.testing.assert_array_equal(np.asarray(cache.images), full)
    with pytest.raises(D.DataLayoutError, match="different image cache"):
        D.build_cache(paths, out, 24, shard_size=64, progress=False)


def test_cache_survives_sigkill(shared_data, tmp_path):
    """Kill a real build process mid-way; the next build keeps its finished shards and completes."""
    import signal
    import subprocess
    import sys

    paths = D.load_training_set("tiny_imagenet", shared_data / "tiny_imagenet", per_class=25).image_paths
    (tmp_path / "paths.json").write_text(json.dumps(paths))
    out = tmp_path / "c"
    code = ("import json, sys; from mmcl_theory.clip.data import build_cache; "
            f"build_cache(json.load(open({str(tmp_path / 'paths.json')!r})), {str(out)!r}, 16, workers=1, "
            "shard_size=100, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while len(list(out.glob("shard_*.done.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in out.glob("shard_*.done.json"))
    assert 3 <= len(done_before) < 50, "the build finished before it could be killed"
    mtimes = {n: (out / n).stat().st_mtime_ns for n in done_before}
    cache = D.build_cache(paths, out, 16, workers=2, shard_size=100, progress=False)
    assert {n: (out / n).stat().st_mtime_ns for n in done_before} == mtimes
    assert len(cache) == 5000 and not list(out.glob("*.tmp"))
    idx = [0, 299, 4999]
    np.testing.assert_array_equal(cache.get_batch(idx), D.read_images([paths[i] for i in idx], 16))
