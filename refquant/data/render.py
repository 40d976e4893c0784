"""Rendered text for the PP-OCR models: text lines and pages drawn with Pillow, and PP-OCR's preprocessing.

Everything is deterministic given its arguments (and ``seed``), and uses only Pillow's bundled default font
(``ImageFont.load_default(size=...)``, Pillow >= 10.1), so no font files or downloads are needed.

* :func:`random_words` / :func:`random_sentence`: seeded word lists from a small built-in English vocabulary.
* :func:`render_line`: one line of text as an RGB image, optionally rotated by 180 degrees (the cls model's
  "180" class).
* :func:`render_page`: several lines on one canvas (the det model's input), optionally with their boxes.
* :func:`cls_input`, :func:`rec_input`, :func:`det_input`: PP-OCR's preprocessing into NCHW float32 batches,
  as PaddleOCR's ``predict_cls`` / ``predict_rec`` / ``predict_det`` do it.
* :func:`ppocr_model_path`, :func:`rec_charset`, :func:`ctc_greedy_decode`: find the PP-OCR ONNX models shipped
  with ``rapidocr_onnxruntime`` (without importing it: it imports OpenCV) and decode the rec model's output.

Channel order: PaddleOCR feeds its models OpenCV (BGR) arrays, so the ``*_input`` functions reverse Pillow's
RGB to BGR by default (``bgr=False`` keeps RGB). For black-on-light text the difference is small.
"""
from __future__ import annotations

import importlib.util
import math
import os
from typing import Iterable, Optional, Sequence

import numpy as np

try:
    from PIL import Image, ImageDraw, ImageFont
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("refquant.data.render needs Pillow: pip install pillow") from exc

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put end does "
    "another well large must big even such because turn here why ask went men read need land different home "
    "us move try kind hand picture again change off play spell air away animal house point page letter mother "
    "answer found study still learn should America world high every near add food between own below country "
    "plant last school father keep tree never start city earth eye light thought head under story saw left "
    "open model quant scale zero point layer weight input output paper river music table window garden orange "
    "yellow purple silver market summer winter coffee simple number 2024 1999 42 3.14 OCR text Paddle ONNX"
).split()

_HEIGHT_DEFAULT = 48


# ---- text ------------------------------------------------------------------------------------------------
def random_words(n: int, seed: int = 0, *, capitalize: float = 0.2) -> list[str]:
    """``n`` words drawn (with replacement) from a built-in vocabulary; a fraction is capitalized."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = _WORDS[int(rng.integers(len(_WORDS)))]
        if rng.random() < capitalize:
            w = w[:1].upper() + w[1:]
        out.append(w)
    return out


def random_sentence(n_words: int, seed: int = 0) -> str:
    """``n_words`` random words joined by spaces."""
    return " ".join(random_words(n_words, seed))


# ---- rendering -------------------------------------------------------------------------------------------
def font(size: int = 32):
    """Pillow's bundled default font at ``size`` pixels (a TrueType font when Pillow has FreeType)."""
    return ImageFont.load_default(size=size)


def _colour(rng, dark: bool) -> tuple:
    lo, hi = (0, 90) if dark else (190, 256)
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def render_line(text: str, *, height: Optional[int] = None, font_size: int = 32, fg=None, bg=None,
                rotate180: bool = False, padding: Optional[int] = None, seed: int = 0) -> "Image.Image":
    """One line of ``text`` as an RGB image.

    ``fg`` / ``bg`` are RGB tuples; left as None they are drawn from ``seed`` (dark text on a light background).
    ``padding`` (pixels around the text) defaults to a quarter of the font size, jittered by ``seed``.
    ``height`` rescales the result to that height (keeping the aspect ratio). ``rotate180`` turns it upside down.
    """
    rng = np.random.default_rng(seed)
    fg = _colour(rng, dark=True) if fg is None else tuple(fg)
    bg = _colour(rng, dark=False) if bg is None else tuple(bg)
    pad = max(2, font_size // 4 + int(rng.integers(-2, 3))) if padding is None else int(padding)
    f = font(font_size)
    x0, y0, x1, y1 = f.getbbox(text or " ")
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    img = Image.new("RGB", (w + 2 * pad, h + 2 * pad), bg)
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, font=f, fill=fg)
    if height is not None and img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.BILINEAR)
    if rotate180:
        img = img.rotate(180)
    return img


def render_page(lines: Sequence[str], size: tuple = (480, 320), *, font_size: int = 24, positions=None,
                fg=None, bg=(255, 255, 255), seed: int = 0, return_boxes: bool = False):
    """A page of ``size`` = (width, height) with one text line per entry of ``lines``.

    ``positions`` are (x, y) top-left corners; by default lines are stacked from the top with seeded indents
    and gaps (lines that would fall off the bottom are dropped). With ``return_boxes`` the result is
    ``(image, boxes)`` where ``boxes[i] = (x0, y0, x1, y1)`` is the ink box of each drawn line.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    img = Image.new("RGB", (width, height), tuple(bg))
    draw = ImageDraw.Draw(img)
    f = font(font_size)
    boxes = []
    y = int(rng.integers(4, 4 + font_size))
    for i, text in enumerate(lines):
        colour = _colour(rng, dark=True) if fg is None else tuple(fg)
        if positions is not None:
            x, y_here = positions[i]
        else:
            x, y_here = int(rng.integers(4, max(5, width // 6))), y
        bx0, by0, bx1, by1 = draw.textbbox((x, y_here), text, font=f)
        if positions is None and by1 > height - 2:
            break
        draw.text((x, y_here), text, font=f, fill=colour)
        boxes.append((bx0, by0, min(bx1, width), min(by1, height)))
        y = by1 + int(rng.integers(font_size // 2, font_size + 1))
    return (img, boxes) if return_boxes else img


# ---- PP-OCR preprocessing ----------------------------------------------------------------------------------
def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    return arr.astype(np.uint8)


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((int(width), int(height)), Image.BILINEAR))


def _line_tensor(arr: np.ndarray, height: int, width: int, bgr: bool) -> np.ndarray:
    """PaddleOCR's resize_norm_img: keep the aspect ratio up to ``width``, (x/255 - 0.5)/0.5, zero-pad right."""
    h, w = arr.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    img = _resize(arr, resized_w, height).astype(np.float32)
    if bgr:
        img = img[:, :, ::-1]
    img = (img.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = img
    return out


def cls_input(images: Iterable, *, height: int = 48, width: int = 192, bgr: bool = True) -> np.ndarray:
    """Batch for the direction classifier: (N, 3, 48, 192) float32."""
    return np.stack([_line_tensor(_as_rgb_array(im), height, width, bgr) for im in images])


def rec_input(images: Iterable, *, height: int = 48, width: Optional[int] = 320, bgr: bool = True) -> np.ndarray:
    """Batch for the PP-OCRv4 recognizer: (N, 3, 48, W) float32.

    ``width=None`` follows PaddleOCR's ``predict_rec``: W = max(320, 48 * the widest aspect ratio in the batch),
    so no line is squeezed; a fixed ``width`` squeezes lines wider than it.
    """
    arrs = [_as_rgb_array(im) for im in images]
    if width is None:
        ratio = max([320 / 48] + [a.shape[1] / a.shape[0] for a in arrs])
        width = int(height * ratio)
    return np.stack([_line_tensor(a, height, width, bgr) for a in arrs])


def det_resize_shape(h: int, w: int, limit_side_len: int = 960, limit_type: str = "max") -> tuple:
    """PaddleOCR's DetResizeForTest: the (height, width) the det model sees, multiples of 32."""
    if limit_type == "max":
        ratio = limit_side_len / max(h, w) if max(h, w) > limit_side_len else 1.0
    elif limit_type == "min":
        ratio = limit_side_len / min(h, w) if min(h, w) < limit_side_len else 1.0
    else:
        raise ValueError(f"limit_type must be 'max' or 'min', got {limit_type!r}")
    rh, rw = int(h * ratio), int(w * ratio)
    return max(int(round(rh / 32) * 32), 32), max(int(round(rw / 32) * 32), 32)


def det_input(image, *, limit_side_len: int = 960, limit_type: str = "max", mean=(0.485, 0.456, 0.406),
              std=(0.229, 0.224, 0.225), bgr: bool = True) -> np.ndarray:
    """(1, 3, H, W) float32 for the detector: resized to multiples of 32, (x/255 - mean)/std."""
    arr = _as_rgb_array(image)
    rh, rw = det_resize_shape(arr.shape[0], arr.shape[1], limit_side_len, limit_type)
    img = _resize(arr, rw, rh).astype(np.float32)
    if bgr:
        img = img[:, :, ::-1]
    img = (img / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None]).astype(np.float32)


# ---- the PP-OCR models and the rec output ------------------------------------------------------------------
PPOCR_MODELS = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx",
                "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx"}


def ppocr_model_dir() -> Optional[str]:
    """The ``models`` folder of the installed ``rapidocr_onnxruntime`` (found without importing it), or None."""
    env = os.environ.get("REFQUANT_PPOCR_DIR")
    if env:
        return env
    try:
        spec = importlib.util.find_spec("rapidocr_onnxruntime")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), "models")


def ppocr_model_path(kind: str) -> Optional[str]:
    """Path of the PP-OCR ``"det"``, ``"rec"`` or ``"cls"`` ONNX model, or None if it is not installed."""
    if kind not in PPOCR_MODELS:
        raise ValueError(f"kind must be one of {sorted(PPOCR_MODELS)}, got {kind!r}")
    folder = ppocr_model_dir()
    path = None if folder is None else os.path.join(folder, PPOCR_MODELS[kind])
    return path if path and os.path.isfile(path) else None


def rec_charset(model_path: Optional[str] = None) -> list[str]:
    """The rec model's output classes: ["blank"] + its dictionary (ONNX metadata "character") + [" "]."""
    import onnx
    path = model_path or ppocr_model_path("rec")
    if path is None:
        raise FileNotFoundError("the PP-OCR rec model is not installed (pip install rapidocr-onnxruntime)")
    proto = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path} carries no 'character' metadata")
    return ["blank"] + meta["character"].splitlines() + [" "]


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str]) -> list[tuple[str, float]]:
    """CTC greedy decoding of (N, T, C) class probabilities: per row, (text, mean max-probability)."""
    out = []
    for row in np.asarray(probs):
        idx = row.argmax(axis=1)
        conf = row.max(axis=1)
        keep = np.ones(len(idx), bool)
        keep[1:] = idx[1:] != idx[:-1]
        keep &= idx != 0
        text = "".join(charset[i] for i in idx[keep])
        out.append((text, float(conf[keep].mean()) if keep.any() else 0.0))
    return out
