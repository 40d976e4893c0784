"""Named, seeded evaluation sets of text-line images that differ from the calibration data (docs/real_models.md).

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
    if spec.blur[1] > 0:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(*spec.blur))))
    if spec.jpeg is not None:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
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
