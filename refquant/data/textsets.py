"""Named, seeded evaluation sets of text lines and pages that differ from the calibration data (docs/real_models.md).

Why: a quantization recipe tuned and judged on one text distribution can look lossless there and still lose lines
on text it has not seen. These sets come from a second renderer, not :func:`refquant.data.render.render_line`:
the machine's DejaVu TrueType fonts (Sans, Serif, Mono, Condensed, Bold; Pillow's bundled font only when none is
found, with a warning), uneven margins, a baseline jitter, letter tracking and a small tilt, and text that mixes
letters, digits and punctuation (dates, prices, percentages, ``#42``, times, codes). Each set changes what
matters for a text recognizer:

=============  ============================================================================================
set            what differs
=============  ============================================================================================
``mixed``      mixed tokens (words, dates, prices, percentages, ``#42``), font sizes 22-34, light backgrounds
``digits``     numbers only: dates, prices, percentages, times, phone numbers, ``#42``
``punct``      words with punctuation and brackets, quotes, colons, semicolons
``small``      mixed tokens at font sizes 16-21 (thin strokes after the resize to 48 pixels)
``contrast``   grey text on grey backgrounds (stroke contrast 50-110 levels instead of 150+)
``noisy``      Gaussian blur (radius 0.6-1.3) and JPEG compression (quality 25-55)
``long``       7-10 tokens per line (a wider input)
=============  ============================================================================================

The calibration split (:func:`calib_lines`) is the ``mixed`` distribution at its own seed range, so calibration
and evaluation never share a line; :data:`SEED_BASE` gives every set a disjoint range of seeds (line ``i`` of a
set uses seed ``base + i``, and every set holds fewer than 100,000 lines). Lines keep their aspect ratio: the rec
input is as wide as the set's widest line (PaddleOCR's ``predict_rec``), never squeezed to 320 pixels.

    from refquant.data import textsets
    x, texts = textsets.rec_set("noisy", 60)          # (60, 3, 48, W) float32, the 60 label strings
    images, texts = textsets.lines("digits", 60)      # the Pillow images themselves

The direction classifier (cls) is judged on the same lines: :func:`cls_set` turns every second line of a set by
180 degrees (label 1) and :func:`cls_calib_lines` does the same to the calibration split.

The detector (det) is judged on pages the same renderer draws (:func:`draw_page`: the DejaVu fonts, tracking,
baseline jitter, mixed tokens, a tilt of at most 1 degree for the whole page), in sets that change what matters
for a text detector:

===============  ==========================================================================================
page set         what differs
===============  ==========================================================================================
``plain``        one column, font sizes 16-28, 480x320: the calibration pages' distribution, other pages
``columns``      two or three columns of short lines, font sizes 14-22
``sparse``       2-4 lines, wide gaps and margins (most of the page empty)
``dense``        many small lines (font sizes 11-15), tight spacing, long lines
``sizes``        other page sizes and aspect ratios: 640x480, 320x640, 736x736, 960x544
``mixed_sizes``  a font size per line, 12-48, on one page
``contrast``     grey text on grey backgrounds (contrast 50-110 levels)
``noisy``        Gaussian blur (radius 0.6-1.3) and JPEG compression (quality 25-55)
===============  ==========================================================================================

Pages use :data:`PAGE_SEED_BASE` (page ``i`` of a set uses seed ``base + i``); the det calibration split
(:func:`det_calib_pages`) is the ``plain`` distribution at its own seeds. :func:`det_set` returns PaddleOCR's det
inputs (longer side at most 960, sides multiples of 32; one (1, 3, H, W) array per page) and, on request, the
lines' ink boxes at the input's resolution, the ground truth of a detection:

    xs = textsets.det_set("columns", 8)                   # [(1, 3, 320, 480) float32, ...]
    xs, masks = textsets.det_set("sizes", 8, masks=True)  # masks[i]: (H, W) uint8, line k's ink box = k
    x, labels = textsets.cls_set("contrast", 60)          # (60, 3, 48, 192), labels 0 1 0 1 ...
"""
from __future__ import annotations

import glob
import io
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import render

try:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("refquant.data.textsets needs Pillow: pip install pillow") from exc

#: The fonts tried, by file name (the DejaVu family ships with most Linux systems: Debian's fonts-dejavu-core).
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf",
              "DejaVuSans-Bold.ttf", "DejaVuSerifCondensed.ttf")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF",
             "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")

#: Syllables of the pseudo-words (not the vocabulary of refquant.data.render, so no word is shared with it).
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
           "cl", "dr", "fl", "gr", "pl", "qu", "sh", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "y", "ai", "ea", "ou", "ie")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "x", "ck", "nd", "rt", "st")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PUNCT_WRAP = (("(", ")"), ('"', '"'), ("'", "'"), ("[", "]"), ("<", ">"))
_PUNCT_TAIL = (",", ".", ";", ":", "!", "?", "...", "-", "/")

_FONT_CACHE: dict = {}
_warned = False


def font_paths() -> list[str]:
    """The TrueType files of :data:`FONT_FILES` found on this machine (``REFQUANT_FONT_DIR`` is searched first)."""
    dirs = [os.environ["REFQUANT_FONT_DIR"]] if os.environ.get("REFQUANT_FONT_DIR") else []
    found = {}
    for d in dirs + list(FONT_DIRS):
        for name in FONT_FILES:
            if name not in found:
                hits = glob.glob(os.path.join(d, "**", name), recursive=True) if os.path.isdir(d) else []
                if hits:
                    found[name] = sorted(hits)[0]
    return [found[n] for n in FONT_FILES if n in found]


def _font(index: int, size: int):
    """Font ``index`` (modulo the fonts found) at ``size`` pixels; Pillow's bundled font, with one warning, when
    no DejaVu file is installed."""
    global _warned
    key = (index, size)
    if key not in _FONT_CACHE:
        paths = _FONT_CACHE.setdefault("paths", font_paths())
        if paths:
            _FONT_CACHE[key] = ImageFont.truetype(paths[index % len(paths)], size)
        else:
            if not _warned:
                warnings.warn("refquant.data.textsets: no DejaVu font found (install fonts-dejavu-core or set "
                              "REFQUANT_FONT_DIR); using Pillow's bundled font, the one the calibration renderer "
                              "uses, so the sets differ from calibration data less", stacklevel=3)
                _warned = True
            _FONT_CACHE[key] = ImageFont.load_default(size=size)
    return _FONT_CACHE[key]


# ---- text -----------------------------------------------------------------------------------------------
def _word(rng) -> str:
    w = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(int(rng.integers(1, 4))))
    w += str(rng.choice(_CODAS))
    r = rng.random()
    return w.capitalize() if r < 0.25 else (w.upper() if r < 0.32 else w)


def _number(rng) -> str:
    k = int(rng.integers(9))
    if k == 0:
        return f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1950, 2040))}"
    if k == 1:
        return f"{int(rng.integers(1950, 2040))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if k == 2:
        return f"{rng.choice(('$', '', 'EUR '))}{int(rng.integers(0, 5000))}.{int(rng.integers(100)):02d}"
    if k == 3:
        return f"{rng.integers(0, 100)}{rng.choice(('', '.5', '.25', '.0'))}%"
    if k == 4:
        return f"#{int(rng.integers(1, 1000))}"
    if k == 5:
        return f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}"
    if k == 6:
        return f"+{int(rng.integers(1, 99))} {int(rng.integers(100, 999))}-{int(rng.integers(1000, 9999))}"
    if k == 7:
        return f"{int(rng.integers(1, 29))} {rng.choice(_MONTHS)} {int(rng.integers(1950, 2040))}"
    return str(int(rng.integers(0, 10 ** int(rng.integers(1, 7)))))


def _punctuated(rng) -> str:
    w = _word(rng)
    r = rng.random()
    if r < 0.3:
        a, b = _PUNCT_WRAP[int(rng.integers(len(_PUNCT_WRAP)))]
        return a + w + b
    if r < 0.8:
        return w + str(rng.choice(_PUNCT_TAIL))
    return w + str(rng.choice(("-", "_", "&", "@", "+", "="))) + _word(rng)


def _mixed_token(rng) -> str:
    r = rng.random()
    return _word(rng) if r < 0.45 else (_number(rng) if r < 0.8 else _punctuated(rng))


_TOKENS = {"mixed": _mixed_token, "digits": _number, "punct": _punctuated}


def line_text(kind: str, n_tokens: int, rng) -> str:
    """``n_tokens`` tokens of ``kind`` ("mixed", "digits", "punct") joined by single spaces."""
    return " ".join(_TOKENS[kind](rng) for _ in range(n_tokens))


# ---- the second renderer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextSet:
    """How one evaluation set is drawn: token kind, tokens per line, font sizes, colours, degradations."""
    tokens: str = "mixed"
    n_tokens: tuple = (1, 4)                # inclusive range
    font_sizes: tuple = (22, 34)            # inclusive range, pixels
    contrast: tuple = (150, 240)            # background minus text brightness, levels
    bg: tuple = (200, 256)                  # background brightness range
    blur: tuple = (0.0, 0.0)                # Gaussian blur radius range
    jpeg: Optional[tuple] = None            # JPEG quality range (None: no compression)
    width: Optional[int] = None             # rec input width (None: the set's widest aspect ratio)
    doc: str = ""


SETS: dict[str, TextSet] = {
    "mixed": TextSet(doc="words, dates, prices, percentages, #42; sizes 22-34"),
    "digits": TextSet("digits", (1, 3), doc="numbers only"),
    "punct": TextSet("punct", (1, 4), doc="words with punctuation"),
    "small": TextSet(font_sizes=(16, 21), doc="mixed, small fonts 16-21"),
    "contrast": TextSet(contrast=(50, 110), bg=(150, 230), doc="grey on grey, contrast 50-110"),
    "noisy": TextSet(blur=(0.6, 1.3), jpeg=(25, 55), doc="blur 0.6-1.3 and JPEG quality 25-55"),
    "long": TextSet(n_tokens=(7, 10), doc="7-10 tokens per line"),
}
#: First seed of each set and of the calibration split; line i uses base + i (< 100,000 lines per set).
SEED_BASE = {"mixed": 1_100_000, "digits": 1_200_000, "punct": 1_300_000, "small": 1_400_000,
             "contrast": 1_500_000, "noisy": 1_600_000, "long": 1_700_000, "calib": 2_100_000}


def _degrade(img, spec, rng):
    """The set's Gaussian blur and JPEG compression (either may be off), drawn from ``rng`` in that order."""
    if spec.blur[1] > 0:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(*spec.blur))))
    if spec.jpeg is not None:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def draw_line(text: str, spec: TextSet, rng) -> "Image.Image":
    """``text`` drawn by the second renderer: a DejaVu font, uneven margins, per-character tracking, a per-word
    baseline jitter, a tilt of at most 1 degree, then the set's blur and JPEG compression."""
    size = int(rng.integers(spec.font_sizes[0], spec.font_sizes[1] + 1))
    f = _font(int(rng.integers(1 << 16)), size)
    bg_level = int(rng.integers(*spec.bg))
    bg = tuple(int(np.clip(bg_level + d, 0, 255)) for d in rng.integers(-12, 13, 3))
    fg_level = max(0, bg_level - int(rng.integers(spec.contrast[0], spec.contrast[1] + 1)))
    fg = tuple(int(np.clip(fg_level + d, 0, 255)) for d in rng.integers(-15, 16, 3))
    track = float(rng.uniform(-0.5, 2.0))
    left, right = int(rng.integers(2, 14)), int(rng.integers(2, 14))
    top, bottom = int(rng.integers(1, size // 3 + 2)), int(rng.integers(1, size // 3 + 2))
    ascent, descent = f.getmetrics()
    widths = [f.getlength(c) for c in text]
    w = int(np.ceil(sum(widths) + track * max(len(text) - 1, 0))) + left + right + 2
    h = ascent + descent + top + bottom + 2
    img = Image.new("RGB", (max(w, 8), h), bg)
    draw = ImageDraw.Draw(img)
    x, dy = float(left), int(rng.integers(-1, 2))
    for c, cw in zip(text, widths):
        if c == " ":
            dy = int(rng.integers(-1, 2))
        draw.text((x, top + dy), c, font=f, fill=fg)
        x += cw + track
    angle = float(rng.uniform(-1.0, 1.0))
    img = img.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=bg)
    img = _degrade(img, spec, rng)
    return img


def _spec(name: str) -> TextSet:
    if name == "calib":
        return SETS["mixed"]
    if name not in SETS:
        raise ValueError(f"textsets: unknown set {name!r}; known: {sorted(SETS)} and 'calib'")
    return SETS[name]


def lines(name: str, n: int = 60, *, start: int = 0) -> tuple[list, list[str]]:
    """``(images, texts)``: lines ``start .. start + n - 1`` of set ``name`` (or ``"calib"``), deterministic."""
    if start < 0 or n < 0 or start + n > 100_000:
        raise ValueError(f"textsets: lines {start}..{start + n} out of the set's seed range (0..100000)")
    spec = _spec(name)
    images, texts = [], []
    for i in range(start, start + n):
        rng = np.random.default_rng(SEED_BASE[name] + i)
        text = line_text(spec.tokens, int(rng.integers(spec.n_tokens[0], spec.n_tokens[1] + 1)), rng)
        texts.append(text)
        images.append(draw_line(text, spec, rng))
    return images, texts


def rec_set(name: str, n: int = 60, *, start: int = 0) -> tuple[np.ndarray, list[str]]:
    """``(x, texts)``: set ``name`` as one PP-OCR rec batch (N, 3, 48, W) float32 (W from the set's spec)."""
    images, texts = lines(name, n, start=start)
    return render.rec_input(images, width=_spec(name).width), texts


def calib_lines(n: int = 32, *, start: int = 0) -> tuple[np.ndarray, list[str]]:
    """The calibration split: the ``mixed`` distribution at seeds no evaluation set uses."""
    return rec_set("calib", n, start=start)


# ---- cls: the same lines, every second one upside down --------------------------------------------------------
def cls_set(name: str, n: int = 60, *, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, labels)``: lines ``start ..`` of set ``name`` (or ``"calib"``) as one cls batch (N, 3, 48, 192);
    line ``i`` is rotated 180 degrees (label 1) when ``i`` is odd, else upright (label 0)."""
    images, _ = lines(name, n, start=start)
    labels = np.arange(start, start + n) % 2
    images = [im.rotate(180) if lab else im for im, lab in zip(images, labels)]
    return render.cls_input(images), labels.astype(np.int64)


def cls_calib_lines(n: int = 64, *, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cls calibration split: the rec calibration lines (:func:`calib_lines`), every second one rotated."""
    return cls_set("calib", n, start=start)


# ---- det: pages drawn by the second renderer --------------------------------------------------------------------
@dataclass(frozen=True)
class PageSet:
    """How the pages of one det evaluation set are drawn: page sizes, columns, lines, fonts, colours, noise.
    Gaps and margins are fractions of the font size and of the page side."""
    sizes: tuple = ((480, 320),)            # (width, height) choices
    columns: tuple = (1, 1)                 # inclusive range
    n_lines: Optional[tuple] = None         # inclusive range of lines per page (None: fill the page)
    n_tokens: tuple = (1, 6)                # tokens per line before fitting the column
    font_sizes: tuple = (16, 28)            # inclusive range, pixels
    size_per_line: bool = False             # a font size per line (else one per page)
    gap: tuple = (0.3, 1.0)                 # line gap / font size
    margin: tuple = (0.01, 0.08)            # page margin / page side
    contrast: tuple = (150, 240)
    bg: tuple = (200, 256)
    blur: tuple = (0.0, 0.0)
    jpeg: Optional[tuple] = None
    tilt: float = 1.0                       # degrees, the whole page
    doc: str = ""


PAGE_SETS: dict[str, PageSet] = {
    "plain": PageSet(doc="one column, font sizes 16-28, 480x320 (the calibration pages' distribution)"),
    "columns": PageSet(columns=(2, 3), n_tokens=(1, 3), font_sizes=(14, 22), doc="two or three columns"),
    "sparse": PageSet(n_lines=(2, 4), gap=(1.0, 2.5), margin=(0.08, 0.2), font_sizes=(18, 30),
                      doc="2-4 lines, wide gaps and margins"),
    "dense": PageSet(font_sizes=(11, 15), gap=(0.05, 0.25), n_tokens=(3, 9), margin=(0.01, 0.03),
                     doc="many small lines (11-15 px), tight spacing"),
    "sizes": PageSet(sizes=((640, 480), (320, 640), (736, 736), (960, 544)),
                     doc="pages 640x480, 320x640, 736x736, 960x544"),
    "mixed_sizes": PageSet(font_sizes=(12, 48), size_per_line=True, doc="font sizes 12-48 on one page"),
    "contrast": PageSet(contrast=(50, 110), bg=(150, 230), doc="grey on grey, contrast 50-110"),
    "noisy": PageSet(blur=(0.6, 1.3), jpeg=(25, 55), doc="blur 0.6-1.3 and JPEG quality 25-55"),
}
#: First seed of each page set and of the det calibration split (page i uses base + i, < 100,000 pages per set).
PAGE_SEED_BASE = {"plain": 3_100_000, "columns": 3_200_000, "sparse": 3_300_000, "dense": 3_400_000,
                  "sizes": 3_500_000, "mixed_sizes": 3_600_000, "contrast": 3_700_000, "noisy": 3_800_000,
                  "calib": 4_100_000}
#: PaddleOCR's det preprocessing (DetResizeForTest): the longer side at most 960, sides rounded to multiples of 32.
DET_LIMIT_SIDE_LEN = 960


def _fit(text: str, f, track: float, width: float) -> str:
    """``text`` without its last tokens until it is at most ``width`` pixels wide ("" when no token fits)."""
    tokens = text.split(" ")
    while tokens and sum(f.getlength(c) for c in " ".join(tokens)) + track * len(" ".join(tokens)) > width:
        tokens.pop()
    return " ".join(tokens)


def draw_page(spec: PageSet, rng) -> tuple["Image.Image", "Image.Image", list]:
    """One page of ``spec``: ``(image, mask, boxes)``. Lines of mixed tokens fill each column from the top with
    the second renderer's fonts, tracking and per-word baseline jitter; the page is then tilted, blurred and
    compressed. ``boxes`` are the lines' ink boxes (x0, y0, x1, y1) before the tilt; ``mask`` ("L") labels them
    after the tilt, the text regions a detector should find: 0 background, ``k`` the box of line ``k`` (from 1;
    the later line where two boxes touch)."""
    width, height = spec.sizes[int(rng.integers(len(spec.sizes)))]
    bg_level = int(rng.integers(*spec.bg))
    bg = tuple(int(np.clip(bg_level + d, 0, 255)) for d in rng.integers(-12, 13, 3))
    img = Image.new("RGB", (width, height), bg)
    mask = Image.new("L", (width, height), 0)
    draw, mdraw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    font_index = int(rng.integers(1 << 16))
    page_size = int(rng.integers(spec.font_sizes[0], spec.font_sizes[1] + 1))
    mx, my = (int(side * rng.uniform(*spec.margin)) for side in (width, height))
    n_cols = int(rng.integers(spec.columns[0], spec.columns[1] + 1))
    gutter = int(rng.integers(12, 28)) if n_cols > 1 else 0
    col_w = (width - 2 * mx - gutter * (n_cols - 1)) / n_cols
    budget = None if spec.n_lines is None else int(rng.integers(spec.n_lines[0], spec.n_lines[1] + 1))
    boxes = []
    for col in range(n_cols):
        x_col, y = mx + col * (col_w + gutter), float(my)
        while budget is None or len(boxes) < budget:
            size = int(rng.integers(spec.font_sizes[0], spec.font_sizes[1] + 1)) if spec.size_per_line \
                else page_size
            f = _font(font_index, size)
            ascent, descent = f.getmetrics()
            if y + ascent + descent > height - my:
                break
            fg_level = max(0, bg_level - int(rng.integers(spec.contrast[0], spec.contrast[1] + 1)))
            fg = tuple(int(np.clip(fg_level + d, 0, 255)) for d in rng.integers(-15, 16, 3))
            track = float(rng.uniform(-0.5, 1.5))
            indent = float(rng.uniform(0, 0.15 * col_w))
            text = _fit(line_text("mixed", int(rng.integers(spec.n_tokens[0], spec.n_tokens[1] + 1)), rng), f,
                        track, col_w - indent)
            x, dy, box = x_col + indent, int(rng.integers(-1, 2)), None
            for c in text:
                if c == " ":
                    dy = int(rng.integers(-1, 2))
                else:
                    draw.text((x, y + dy), c, font=f, fill=fg)
                    b = draw.textbbox((x, y + dy), c, font=f)
                    box = b if box is None else (min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]),
                                                 max(box[3], b[3]))
                x += f.getlength(c) + track
            if box is not None:
                boxes.append(box)
                mdraw.rectangle(box, fill=min(len(boxes), 255))
            y += ascent + descent + size * float(rng.uniform(*spec.gap))
    angle = float(rng.uniform(-spec.tilt, spec.tilt))
    img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=bg)
    mask = mask.rotate(angle, resample=Image.NEAREST, fillcolor=0)
    img = _degrade(img, spec, rng)
    return img, mask, boxes


def _page_spec(name: str) -> PageSet:
    if name == "calib":
        return PAGE_SETS["plain"]
    if name not in PAGE_SETS:
        raise ValueError(f"textsets: unknown page set {name!r}; known: {sorted(PAGE_SETS)} and 'calib'")
    return PAGE_SETS[name]


def pages(name: str, n: int = 8, *, start: int = 0) -> tuple[list, list, list]:
    """``(images, masks, boxes)``: pages ``start .. start + n - 1`` of page set ``name`` (or ``"calib"``)."""
    if start < 0 or n < 0 or start + n > 100_000:
        raise ValueError(f"textsets: pages {start}..{start + n} out of the set's seed range (0..100000)")
    spec = _page_spec(name)
    drawn = [draw_page(spec, np.random.default_rng(PAGE_SEED_BASE[name] + i)) for i in range(start, start + n)]
    return [d[0] for d in drawn], [d[1] for d in drawn], [d[2] for d in drawn]


def det_set(name: str, n: int = 8, *, start: int = 0, masks: bool = False):
    """Pages of set ``name`` as det inputs, a list of (1, 3, H, W) float32 (PaddleOCR's preprocessing with
    :data:`DET_LIMIT_SIDE_LEN`; shapes differ between pages). ``masks=True``: ``(inputs, masks)``, each mask the
    lines' ink boxes at the input's resolution, (H, W) uint8: 0 background, ``k`` line ``k`` (see :func:`draw_page`)."""
    images, page_masks, _ = pages(name, n, start=start)
    inputs = [render.det_input(im, limit_side_len=DET_LIMIT_SIDE_LEN) for im in images]
    if not masks:
        return inputs
    return inputs, [np.asarray(m.resize((x.shape[3], x.shape[2]), Image.NEAREST))
                    for m, x in zip(page_masks, inputs)]


def det_calib_pages(n: int = 4, *, start: int = 0) -> list[np.ndarray]:
    """The det calibration split: ``plain`` pages at seeds no evaluation set uses."""
    return det_set("calib", n, start=start)
