"""The embedded datasets: files, fixed splits, loaders, batching."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from refquant import data as rqdata
from refquant.data import iter_batches, load_digits, load_text, resize_bilinear
from refquant.data import digits as digits_mod, text as text_mod

REPO = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_digits_file_contents_and_fixed_split():
    with np.load(rqdata.data_file("digits.npz")) as z:
        images, labels, tr, te = z["images"], z["labels"], z["train_idx"], z["test_idx"]
        assert str(z["source_sha256"]) == _script("make_digits").CSV_SHA256
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 16
    assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(10))
    assert len(tr) == 1438 and len(te) == 359
    assert not set(tr.tolist()) & set(te.tolist())
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(1797))
    # stratified: every class is 20% +- 1 image in the test split
    for c in range(10):
        n = int((labels == c).sum())
        assert abs(int((labels[te] == c).sum()) - round(0.2 * n)) <= 1
    # the stored split is the one the script draws
    tr2, te2 = _script("make_digits").stratified_split(labels, 0.2, 0)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    # known content: pixel sum and label counts of the UCI file
    assert int(images.astype(np.int64).sum()) == 561718
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_load_digits_shapes(size):
    x, y = load_digits(size, "train")
    assert x.shape == (1438, 1, size, size) and x.dtype == np.float32
    assert y.shape == (1438,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    xt, yt = load_digits(size, "test")
    assert xt.shape == (359, 1, size, size)
    xa, ya = load_digits(size, "all")
    assert len(xa) == 1797


def test_load_digits_values():
    x8, y8 = load_digits(8, "all")
    with np.load(rqdata.data_file("digits.npz")) as z:
        np.testing.assert_array_equal(x8[:, 0], z["images"].astype(np.float32) / 16)
        np.testing.assert_array_equal(y8, z["labels"])
    x16a, _ = load_digits(16, "test")
    x16b, _ = load_digits(16, "test")
    np.testing.assert_array_equal(x16a, x16b)  # deterministic
    # bilinear upsampling keeps the mean within the edge effects and standard/none scalings are affine
    xs, _ = load_digits(16, "test", normalize="standard")
    np.testing.assert_allclose(xs, (x16a - 0.5) / 0.5, atol=1e-6)
    with pytest.raises(ValueError):
        load_digits(16, "valid")


def test_resize_bilinear():
    const = np.full((2, 8, 8), 3.0)
    np.testing.assert_allclose(resize_bilinear(const, 32), 3.0)
    ramp = np.tile(np.arange(8.0), (8, 1))
    up = resize_bilinear(ramp, 16)
    # half-pixel centres: output column j samples input x = (j + 0.5) / 2 - 0.5, clamped to [0, 7]
    expect = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
    np.testing.assert_allclose(up[0], expect)


def test_random_shift_is_a_translation():
    x, _ = load_digits(8, "test")
    rng = np.random.default_rng(0)
    out = rqdata.random_shift(x[:50], rng, 1)
    assert out.shape == x[:50].shape
    for a, b in zip(x[:50, 0], out[:, 0]):
        pa = np.pad(a, 1)
        assert any(np.array_equal(pa[dy:dy + 8, dx:dx + 8], b) for dy in range(3) for dx in range(3))
    again = rqdata.random_shift(x[:50], np.random.default_rng(0), 1)
    np.testing.assert_array_equal(out, again)


def test_iter_batches():
    x = np.arange(10)
    y = np.arange(10) * 10
    batches = list(iter_batches(x, y, 4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    a = np.concatenate([b[0] for b in iter_batches(x, y, 3, shuffle=True, seed=5)])
    b = np.concatenate([b[0] for b in iter_batches(x, y, 3, shuffle=True, seed=5)])
    c = np.concatenate([b[0] for b in iter_batches(x, y, 3, shuffle=True, seed=6)])
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(10)) and not np.array_equal(a, c)
    for xb, yb in iter_batches(x, y, 3, shuffle=True, seed=1):
        np.testing.assert_array_equal(yb, xb * 10)
    assert [len(b) for b in iter_batches(x, None, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError):
        list(iter_batches(x, y[:3], 2))


def test_text_corpus_file_is_what_the_script_generates():
    gen = _script("make_text_corpus").generate()
    with np.load(rqdata.data_file("text_corpus.npz")) as z:
        for key in ("text", "label", "split", "topics"):
            np.testing.assert_array_equal(z[key], gen[key])


def test_load_text():
    tr = load_text("train")
    te = load_text("test")
    ids, labels, vocab, topics, texts = tr
    assert ids.shape == (3200, 16) and ids.dtype == np.int64
    assert te.ids.shape == (800, 16)
    assert vocab[:2] == ["<pad>", "<unk>"] and len(vocab) == len(set(vocab))
    assert topics == ["sports", "technology", "food", "weather"]
    assert np.bincount(labels).tolist() == [800] * 4 and np.bincount(te.labels).tolist() == [200] * 4
    assert ids.max() < len(vocab) and te.ids.max() < len(vocab)
    # right padding: no word after the first pad, and every sentence has a word
    for row, text in zip(ids[:200], texts[:200]):
        n = len(text.split())
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
        assert " ".join(vocab[i] for i in row[:n]) == text
    assert load_text("all").ids.shape == (4000, 16)
    assert load_text("train", max_len=4).ids.shape == (3200, 4)


def test_data_dir_override(tmp_path, monkeypatch):
    src = rqdata.data_file("digits.npz")
    (tmp_path / "digits.npz").write_bytes(src.read_bytes())
    monkeypatch.setenv("REFQUANT_DATA", str(tmp_path))
    assert rqdata.data_file("digits.npz") == tmp_path / "digits.npz"
    monkeypatch.delenv("REFQUANT_DATA")
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        rqdata.data_file("no_such_file.npz")
    digits_mod._raw.cache_clear()
    text_mod._raw.cache_clear()
