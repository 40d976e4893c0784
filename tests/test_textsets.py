"""refquant.data.textsets: the evaluation sets of a second renderer (deterministic, disjoint from calibration,
each set what its spec says), and ppocr's per-character error report. Fast: a few lines per set, no model."""
from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from refquant.data import render, textsets


def test_deterministic_and_disjoint():
    a_img, a_txt = textsets.lines("mixed", 6)
    b_img, b_txt = textsets.lines("mixed", 6)
    assert a_txt == b_txt
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a_img, b_img))
    _, shifted = textsets.lines("mixed", 3, start=3)
    assert shifted == a_txt[3:]
    seen = {}
    for name in list(textsets.SETS) + ["calib"]:
        for t in textsets.lines(name, 30)[1]:
            seen.setdefault(t, set()).add(name)
    assert not [t for t, names in seen.items() if len(names) > 1]     # no line in two sets
    bases = sorted(textsets.SEED_BASE.values())
    assert all(b - a >= 100_000 for a, b in zip(bases, bases[1:]))
    assert set(textsets.SEED_BASE) == set(textsets.SETS) | {"calib"}


def test_sets_have_their_character_classes():
    digits = " ".join(textsets.lines("digits", 30)[1])
    words = [w for w in digits.split() if w not in textsets._MONTHS and w != "EUR"]
    assert words and all(any(c.isdigit() for c in w) for w in words)   # only numbers, apart from month names
    assert any(c in digits for c in "%#:/$")
    punct = " ".join(textsets.lines("punct", 30)[1])
    assert sum(not c.isalnum() and c != " " for c in punct) >= 30
    mixed = " ".join(textsets.lines("mixed", 30)[1])
    assert any(c.isdigit() for c in mixed) and any(c.isalpha() for c in mixed)
    assert np.mean([len(t.split()) for t in textsets.lines("long", 10)[1]]) > 2 * \
        np.mean([len(t.split()) for t in textsets.lines("mixed", 10)[1]])
    assert set(" ".join(textsets.lines(n, 20)[1][0] for n in textsets.SETS)) <= set(map(chr, range(32, 127)))


def test_degradations_and_input():
    clean = [np.asarray(im, np.float32) for im in textsets.lines("mixed", 8)[0]]
    low = [np.asarray(im, np.float32) for im in textsets.lines("contrast", 8)[0]]
    spread = lambda ims: np.mean([np.percentile(a, 99) - np.percentile(a, 1) for a in ims])  # noqa: E731
    assert spread(low) < spread(clean) - 40
    x, texts = textsets.rec_set("digits", 5)
    assert x.shape[:3] == (5, 3, 48) and x.shape[3] >= 320 and x.dtype == np.float32 and len(texts) == 5
    assert x.min() >= -1.0 and x.max() <= 1.0


@pytest.mark.skipif(not textsets.font_paths(), reason="no DejaVu font on this machine")
def test_fonts_differ_from_the_calibration_renderer():
    assert len(textsets.font_paths()) >= 2
    name = textsets._font(0, 30).getname()[0]
    assert name != render.font(30).getname()[0]


def test_no_font_warns_once(monkeypatch):
    monkeypatch.setattr(textsets, "_FONT_CACHE", {"paths": []})
    monkeypatch.setattr(textsets, "_warned", False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        textsets.lines("mixed", 3)
    assert sum("no DejaVu font" in str(x.message) for x in w) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown set"):
        textsets.lines("nope", 2)
    with pytest.raises(ValueError, match="seed range"):
        textsets.lines("mixed", 2, start=99_999)


def test_char_confusions_and_report():
    pytest.importorskip("onnx")
    from refquant.realmodels import ppocr
    assert ppocr.char_confusions(["he1lo wrld", "ab", "x"], ["hello world", "abc", "x"]) == \
        Counter({("l", "1"): 1, ("o", ""): 1, ("c", ""): 1})
    assert ppocr.char_confusions(["abXY"], ["ab"]) == Counter({("", "X"): 1, ("", "Y"): 1})
    if render.ppocr_model_path("rec") is None:
        pytest.skip("PP-OCR rec not installed")
    cs = render.rec_charset()
    idx = {c: i for i, c in enumerate(cs)}

    def probs(texts, T=12):
        p = np.zeros((len(texts), T, len(cs)), np.float32)
        p[:, :, 0] = 1
        for n, t in enumerate(texts):
            for k, c in enumerate(t):
                p[n, 2 * k, 0], p[n, 2 * k, idx[c]] = 0, 1
        return p
    truth = ["ab 1", "cd", "ef"]
    fp = probs(["ab 1", "cd", "eg"])
    q = probs(["ab1", "cd", "ef"])
    r = ppocr.rec_report(q, truth, fp)
    assert r["exact"] == pytest.approx(200 / 3) and r["exact_loose"] == 100.0
    assert r["lines_lost"] == [0] and r["agree"] == pytest.approx(100 / 3)
    assert r["new_confusions"] == Counter({(" ", ""): 1})
    assert ppocr.decode_change(fp, fp) == 0.0 < ppocr.decode_change(q, fp)


def test_cls_sets_are_the_rec_lines_half_rotated():
    x, labels = textsets.cls_set("punct", 6)
    assert x.shape == (6, 3, 48, 192) and x.dtype == np.float32 and labels.tolist() == [0, 1, 0, 1, 0, 1]
    images, _ = textsets.lines("punct", 6)
    assert np.array_equal(x, render.cls_input([im.rotate(180) if i % 2 else im for i, im in enumerate(images)]))
    x3, labels3 = textsets.cls_set("punct", 3, start=3)
    assert np.array_equal(x3, x[3:]) and labels3.tolist() == [1, 0, 1]
    xc, lc = textsets.cls_calib_lines(4)
    assert np.array_equal(xc, textsets.cls_set("calib", 4)[0]) and lc.tolist() == [0, 1, 0, 1]
    assert not np.array_equal(xc, textsets.cls_set("mixed", 4)[0])


def test_page_sets_deterministic_disjoint_and_shaped():
    a = textsets.det_set("columns", 2)
    b = textsets.det_set("columns", 2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert np.array_equal(textsets.det_set("columns", 1, start=1)[0], a[1])
    bases = sorted(list(textsets.PAGE_SEED_BASE.values()) + list(textsets.SEED_BASE.values()))
    assert all(q - p >= 100_000 for p, q in zip(bases, bases[1:]))     # pages, lines, calibration: disjoint
    assert set(textsets.PAGE_SEED_BASE) == set(textsets.PAGE_SETS) | {"calib"}
    firsts = {name: np.asarray(textsets.pages(name, 1)[0][0]) for name in list(textsets.PAGE_SETS) + ["calib"]}
    names = list(firsts)
    assert not [(m, n) for i, m in enumerate(names) for n in names[i + 1:]
                if firsts[m].shape == firsts[n].shape and np.array_equal(firsts[m], firsts[n])]
    cal = textsets.det_calib_pages(2)
    assert [x.shape for x in cal] == [(1, 3, 320, 480)] * 2 and cal[0].dtype == np.float32
    xs, masks = textsets.det_set("sizes", 4, masks=True)
    assert all(x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0 and m.shape == x.shape[2:] and m.dtype == np.uint8
               for x, m in zip(xs, masks))
    n_boxes = [len(b) for b in textsets.pages("sizes", 4)[2]]
    assert [len(set(np.unique(m)) - {0}) for m in masks] == n_boxes         # every line labelled, 1..k
    sides = {x.shape[2:] for x in xs}
    assert (320, 480) not in sides and len(sides) >= 2


def test_page_sets_draw_what_their_spec_says():
    def n_lines(name, n=4):
        return [len(b) for b in textsets.pages(name, n)[2]]
    assert all(2 <= k <= 4 for k in n_lines("sparse")) and min(n_lines("dense")) > max(n_lines("plain"))
    images, masks, boxes = textsets.pages("columns", 3)
    for im, m, bx in zip(images, masks, boxes):   # text on both halves of the page; the mask covers the boxes
        assert min(b[0] for b in bx) < im.width / 2 - 40 and max(b[0] for b in bx) > im.width / 2 - 20
        cover = (np.asarray(m) > 0).mean()
        assert 0.05 < cover < 0.7
    heights = [b[3] - b[1] for b in textsets.pages("mixed_sizes", 3)[2][0]]
    assert max(heights) > 1.6 * min(heights)
    with pytest.raises(ValueError, match="unknown page set"):
        textsets.pages("nope", 1)
    with pytest.raises(ValueError, match="seed range"):
        textsets.det_set("plain", 2, start=99_999)
