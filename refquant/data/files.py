"""Calibration data from files: the user's ``.npy`` / ``.npz`` arrays and image folders as feed dicts.

:func:`load_feeds` is the one place that turns files into feeds (a list of ``{input_name: array}`` batches, what
``quant_post_static``, the layer report and ``refquant check`` read); :func:`add_data_arguments` and
:func:`feeds_from_args` give every command the same ``--data`` / preprocessing / batching options.

Sources (``data``: a path, a glob, a folder, or a list of them; matches are sorted by name, so the order and the
batches are the same on every run):

* ``.npy``: one array for a single-input model: samples stacked along axis 0 (the input's rank), or one sample
  (rank one less, a batch axis is added).
* ``.npz``: one array per model input, keyed by the input's name (all with the same number of samples); a single
  array under any key (``np.savez(path, x)`` stores ``arr_0``) feeds a single-input model.
* images (``.png .jpg .jpeg .bmp .webp``, read with Pillow, EXIF orientation applied as OpenCV's ``imread``
  does): one sample each, made by :class:`Preprocess`. Images feed single-input models with a rank-4 float input.

``batch_size=None`` keeps each file as one batch (an image: a batch of one); an int re-batches all samples in
order into batches of that many (the last one may be smaller). Samples of different shapes (dynamic dimensions,
e.g. PP-OCR det pages) never share a batch: a batch also ends where the per-sample shape changes.

Everything is checked against the model's inputs (``model.input_specs``: rank, static dimensions, dtype kind;
float64 data is cast to a float32 input as the executor does) and refused with an error naming the file: NaN or
Inf (:class:`~refquant.errors.NonFiniteError`), a wrong shape or dtype (:class:`~refquant.errors.ShapeError`), an
unreadable, truncated or pickled file (:class:`DataFileError`; ``np.load`` always runs with
``allow_pickle=False``), a pattern matching nothing (:class:`~refquant.errors.ArgumentError`). Inputs are
never modified; files are only read.
"""
from __future__ import annotations

import glob
import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import ArgumentError, DataFileError, NonFiniteError, ShapeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GEOMETRIES = ("plain", "center_crop", "det", "line")
_CAN_BE_DATA = IMAGE_SUFFIXES + ARRAY_SUFFIXES


# ---- image preprocessing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """How an image becomes one sample of a model input, in this order:

    1. read with Pillow (EXIF orientation applied), as RGB, or grayscale ("L") when the input has 1 channel;
    2. resize and crop (Pillow bilinear) by ``geometry``:

       * ``"plain"``: ``resize`` N scales the short side to N (aspect kept), ``(h, w)`` resizes to exactly that;
         then ``crop`` (h, w) cuts the centre. With neither, an input with a static height and width is resized
         to it, and an input without one takes the images as they are. After a ``resize`` alone, a static size
         is cut from the centre.
       * ``"center_crop"`` (ImageNet evaluation): the centre crop is ``crop``, else the input's static (h, w),
         else ``size``; the short side is first resized to ``resize``, else ``round(crop * resize_ratio)``
         (256 for a 224 crop).
       * ``"det"`` (PaddleOCR's ``DetResizeForTest``): both sides scaled by one ratio so the longer side is at
         most ``limit_side_len`` (``resize`` N sets it), then each rounded to a multiple of 32; an input with a
         static size, or ``resize`` (h, w), resizes to exactly that instead.
       * ``"line"`` (PaddleOCR's ``resize_norm_img``, rec and cls): height ``h``, width ``ceil(h * aspect)`` up
         to ``w``, zero-padded on the right to ``w`` after normalisation; (h, w) is the input's static size where
         it has one, else ``resize`` (h, w) (an int sets the height), else ``size``.

    3. ``channel_order`` "bgr" reverses the channels (models trained on OpenCV's ``imread`` arrays);
    4. ``x = (pixel * scale - mean) / std`` in float32, ``mean`` / ``std`` per channel (in the order of step 3)
       or one value for all;
    5. ``layout`` "nchw" or "nhwc" (None: "nhwc" when only the input's last dimension looks like channels,
       1 or 3, else "nchw"); cast to the input's float dtype.
    """

    geometry: str = "plain"
    resize: Optional[int | tuple] = None
    crop: Optional[int | tuple] = None
    size: Optional[tuple] = None
    resize_ratio: float = 256 / 224
    limit_side_len: int = 960
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    scale: float = 1 / 255
    channel_order: str = "rgb"
    layout: Optional[str] = None

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise ArgumentError(f"Preprocess: geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ArgumentError(f"Preprocess: channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if self.layout not in (None, "nchw", "nhwc"):
            raise ArgumentError(f"Preprocess: layout must be 'nchw', 'nhwc' or None, got {self.layout!r}")
        for name in ("resize", "crop", "size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _size_value(f"Preprocess: {name}", value))
        if self.crop is not None and self.geometry in ("det", "line"):
            raise ArgumentError(f"Preprocess: crop does not apply to the {self.geometry!r} geometry")
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                values = tuple(float(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
            except (TypeError, ValueError):
                raise ArgumentError(f"Preprocess: {name} must be numbers, got {value!r}") from None
            if not values or not all(math.isfinite(v) for v in values):
                raise ArgumentError(f"Preprocess: {name} must be one or more finite numbers, got {value!r}")
            if name == "std" and any(v == 0 for v in values):
                raise ArgumentError(f"Preprocess: std must not be 0, got {value!r}")
            object.__setattr__(self, name, values)
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ArgumentError(f"Preprocess: scale must be a finite number > 0, got {scale!r}")
        if isinstance(self.limit_side_len, bool) or not isinstance(self.limit_side_len, int) \
                or self.limit_side_len < 32:
            raise ArgumentError(f"Preprocess: limit_side_len must be an int >= 32, got {self.limit_side_len!r}")
        if not (isinstance(self.resize_ratio, (int, float)) and self.resize_ratio >= 1):
            raise ArgumentError(f"Preprocess: resize_ratio must be >= 1, got {self.resize_ratio!r}")


def _size_value(who: str, value) -> int | tuple:
    """An int >= 1 or an (h, w) pair of them."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value):
        return (int(value[0]), int(value[1]))
    raise ArgumentError(f"{who} must be an int >= 1 or an (height, width) pair of them, got {value!r}")


#: Named preprocessing recipes (``--preset``). The PP-OCR ones feed BGR: PaddleOCR reads images with OpenCV
#: (``cv2.imread``, BGR) and its models were trained on such arrays; NormalizeImage then applies the ImageNet
#: mean/std in array order, so the "R" statistics (0.485, 0.229) land on the blue channel, as in PaddleOCR.
PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(geometry="center_crop", size=(224, 224), resize_ratio=256 / 224, mean=IMAGENET_MEAN,
                           std=IMAGENET_STD, scale=1 / 255, channel_order="rgb", layout="nchw"),
    "ppocr-det": Preprocess(geometry="det", limit_side_len=960, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                            scale=1 / 255, channel_order="bgr", layout="nchw"),
    "ppocr-rec": Preprocess(geometry="line", size=(48, 320), mean=(0.5,), std=(0.5,), scale=1 / 255,
                            channel_order="bgr", layout="nchw"),
    "ppocr-cls": Preprocess(geometry="line", size=(48, 192), mean=(0.5,), std=(0.5,), scale=1 / 255,
                            channel_order="bgr", layout="nchw"),
}


def preset(name: str, **overrides) -> Preprocess:
    """The named :data:`PRESETS` entry, with ``overrides`` (fields of :class:`Preprocess`) replacing its values."""
    if name not in PRESETS:
        raise ArgumentError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _layout(pre: Preprocess, shape: tuple) -> str:
    if pre.layout is not None:
        return pre.layout
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return "nhwc"
    return "nchw"


def _read_image(path: Path, grayscale: bool):
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("L" if grayscale else "RGB")  # convert() loads the pixels: truncation shows here
    except Image.DecompressionBombError as exc:
        raise DataFileError(f"{path}: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{path}: not a readable image ({exc})") from None


def _resize(im, width: int, height: int, path: Path):
    """Pillow bilinear resize; a result beyond Pillow's decompression-bomb limit (an extreme aspect ratio scaled
    up) is refused instead of filling the memory."""
    from PIL import Image
    if Image.MAX_IMAGE_PIXELS and int(width) * int(height) > Image.MAX_IMAGE_PIXELS:
        raise ShapeError(f"{path}: resizing the {im.size[1]}x{im.size[0]} image to {height}x{width} exceeds "
                         f"{Image.MAX_IMAGE_PIXELS} pixels")
    return im.resize((int(width), int(height)), Image.BILINEAR)


def _short_side(im, short: int, path: Path):
    w, h = im.size
    if w <= h:
        return _resize(im, short, max(1, int(short * h / w)), path)
    return _resize(im, max(1, int(short * w / h)), short, path)


def _center_crop(im, size: tuple, path: Path):
    ch, cw = size
    w, h = im.size
    if ch > h or cw > w:
        raise ShapeError(f"{path}: the image is {h}x{w} after resizing, smaller than the crop {ch}x{cw}")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return im.crop((left, top, left + cw, top + ch))


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def image_sample(path, spec, pre: Preprocess) -> np.ndarray:
    """One image file as one sample (no batch axis) of the rank-4 float input ``spec``, made by ``pre``."""
    from .render import det_resize_shape
    path = Path(path)
    layout = _layout(pre, tuple(spec.shape))
    c, h_s, w_s = (spec.shape[1], spec.shape[2], spec.shape[3]) if layout == "nchw" else \
        (spec.shape[3], spec.shape[1], spec.shape[2])
    if c not in (None, 1, 3):
        raise ShapeError(f"input {spec.name!r}: images give 1 or 3 channels, the input has {c} ({layout})")
    static = (h_s, w_s) if h_s is not None and w_s is not None else None
    im = _read_image(path, grayscale=c == 1)
    pad_to = None
    if pre.geometry == "plain":
        if pre.resize is not None:
            if isinstance(pre.resize, int):
                im = _short_side(im, pre.resize, path)
            else:
                im = _resize(im, pre.resize[1], pre.resize[0], path)
        if pre.crop is not None:
            im = _center_crop(im, _pair(pre.crop), path)
        elif static is not None and pre.resize is None:
            im = _resize(im, static[1], static[0], path)
        elif static is not None:
            im = _center_crop(im, static, path)
    elif pre.geometry == "center_crop":
        crop = _pair(pre.crop) if pre.crop is not None else static or pre.size or (224, 224)
        if pre.resize is None:
            im = _short_side(im, int(round(min(crop) * pre.resize_ratio)), path)
        elif isinstance(pre.resize, int):
            im = _short_side(im, pre.resize, path)
        else:
            im = _resize(im, pre.resize[1], pre.resize[0], path)
        im = _center_crop(im, crop, path)
    elif pre.geometry == "det":
        if static is not None or isinstance(pre.resize, tuple):
            rh, rw = static or pre.resize
        else:
            limit = pre.resize if pre.resize is not None else pre.limit_side_len
            rh, rw = det_resize_shape(im.size[1], im.size[0], limit_side_len=limit, limit_type="max")
        im = _resize(im, rw, rh, path)
    else:  # "line"
        size = pre.size or (48, 320)
        if isinstance(pre.resize, tuple):
            size = pre.resize
        elif isinstance(pre.resize, int):
            size = (pre.resize, size[1])
        height, width = h_s or size[0], w_s or size[1]
        w, h = im.size
        resized_w = min(width, int(math.ceil(height * w / float(h))))
        im = _resize(im, resized_w, height, path)
        pad_to = width
    arr = np.asarray(im, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if pre.channel_order == "bgr":
        arr = arr[:, :, ::-1]
    channels = arr.shape[2]
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, channels):
            raise ArgumentError(f"{name} has {v.size} values; input {spec.name!r} takes {channels}-channel images")
    arr = (arr * np.float32(pre.scale) - mean) / std
    if pad_to is not None and arr.shape[1] < pad_to:
        padded = np.zeros((arr.shape[0], pad_to, channels), np.float32)
        padded[:, :arr.shape[1]] = arr
        arr = padded
    if layout == "nchw":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.dtype(spec.dtype))


# ---- files -------------------------------------------------------------------------------------------------
def _kind(path: Path) -> Optional[str]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in ARRAY_SUFFIXES:
        return suffix[1:]
    return None


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def expand_data(data) -> list[Path]:
    """The data files ``data`` names: each entry a file, a folder (its data files, not recursing) or a glob
    pattern (``*``, ``?``, ``[...]``, ``**`` recursive), matches sorted by name; duplicates dropped."""
    entries = [data] if isinstance(data, (str, os.PathLike)) else data
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ArgumentError(f"data must be a path, a glob or a non-empty list of them, got {data!r}")
    files: list[Path] = []
    supported = "/".join(_CAN_BE_DATA)
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)) or not str(entry).strip():
            raise ArgumentError(f"data entry {entry!r} is not a path")
        text = os.fspath(entry)
        path = Path(text)
        if os.path.isdir(path):
            found = sorted(p for p in path.iterdir() if _kind(p) and _is_regular(p))
            if not found:
                raise ArgumentError(f"the folder {text} holds no data file ({supported})")
        elif any(c in text for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if _kind(Path(p)) and _is_regular(p))
            if not found:
                raise ArgumentError(f"the pattern {text!r} matches no data file ({supported})")
        elif not os.path.lexists(path):
            raise ArgumentError(f"{text}: no such file or folder")
        elif not _is_regular(path):
            raise ArgumentError(f"{text} is not a regular file (a FIFO, socket, device or broken link)")
        elif _kind(path) is None:
            raise ArgumentError(f"{text}: unknown data file type {path.suffix!r}; expected {supported}")
        else:
            found = [path]
        files.extend(found)
    return list(dict.fromkeys(files))


_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def _load_array(path: Path, what: str, loader):
    try:
        return loader()
    except _NPZ_ERRORS as exc:
        text = str(exc)
        if "allow_pickle" in text or "pickle" in text.lower():
            raise DataFileError(f"{path}: {what} holds Python objects (pickle), which refquant never loads; "
                                "save plain numeric arrays") from None
        raise DataFileError(f"{path}: not a readable {path.suffix} file ({type(exc).__name__}: {text})") from None


def _np_load(path: Path, npz: bool):
    """The array of a .npy file, or ``{key: array}`` of a .npz file; ValueError when the content is the other
    format (``np.load`` goes by the content, not the suffix)."""
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if not npz:
                raise ValueError("the content is a .npz archive; name the file .npz")
            return {key: loaded[key] for key in loaded.files}
    if npz:
        raise ValueError("the content is a single .npy array; name the file .npy")
    return loaded


def _read_arrays(path: Path, specs) -> dict[str, np.ndarray]:
    """The arrays of one .npy / .npz file keyed by input name, with a batch axis."""
    names = [s.name for s in specs]
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            raise DataFileError(f"{path}: a .npy file holds one array, the model has inputs {names}; "
                                "use .npz files with one array per input name")
        arrays = {names[0]: _load_array(path, "the file", lambda: _np_load(path, npz=False))}
    else:
        stored = _load_array(path, "an array", lambda: _np_load(path, npz=True))
        if len(stored) == 1 and len(specs) == 1:
            arrays = {names[0]: next(iter(stored.values()))}
        else:
            missing = [n for n in names if n not in stored]
            extra = sorted(k for k in stored if k not in names)
            if missing or extra:
                raise DataFileError(f"{path}: holds arrays {sorted(stored)}, the model's inputs are {names}"
                                    + (f" (missing {missing})" if missing else "")
                                    + (f" (unknown {extra})" if extra else ""))
            arrays = {n: stored[n] for n in names}
    out = {}
    for spec in specs:
        x = arrays[spec.name]
        if not isinstance(x, np.ndarray) or x.dtype.hasobject or x.dtype.kind not in "biuf":
            raise DataFileError(f"{path}: array for input {spec.name!r} has dtype "
                                f"{getattr(x, 'dtype', type(x).__name__)}, not a numeric one")
        if x.ndim == len(spec.shape) - 1:
            x = x[None]
        elif x.ndim != len(spec.shape):
            raise ShapeError(f"{path}: array for input {spec.name!r} has shape {x.shape}; the input is "
                             f"{_shape_text(spec.shape)} (rank {len(spec.shape)}, or {len(spec.shape) - 1} "
                             "for one sample)")
        out[spec.name] = x
    counts = {n: a.shape[0] for n, a in out.items()}
    if len(set(counts.values())) > 1:
        raise ShapeError(f"{path}: the arrays hold different numbers of samples {counts}")
    if next(iter(counts.values())) == 0:
        raise DataFileError(f"{path}: holds no samples (axis 0 has length 0)")
    return out


def _shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _check(path: Path, spec, x: np.ndarray) -> np.ndarray:
    """``x`` (a batch) checked against ``spec`` and cast to its dtype (same kind only); raises naming ``path``."""
    want = np.dtype(spec.dtype)
    if x.dtype != want:
        same_kind = x.dtype.kind == want.kind or (x.dtype.kind in "iu" and want.kind in "iu")
        if not same_kind:
            raise ShapeError(f"{path}: input {spec.name!r} is {want}, the data is {x.dtype}")
        if want.kind in "iu":
            info = np.iinfo(want)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise ShapeError(f"{path}: values for input {spec.name!r} lie outside {want}'s range")
        with np.errstate(over="ignore"):
            x = x.astype(want)
    for axis, (d, n) in enumerate(zip(spec.shape[1:], x.shape[1:]), start=1):
        if d is not None and d != n:
            raise ShapeError(f"{path}: input {spec.name!r} is {_shape_text(spec.shape)}, the data is "
                             f"{tuple(x.shape)} (dimension {axis} differs)")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            sample = int(np.argwhere(bad)[0][0])
            raise NonFiniteError(f"{path}: {int(bad.sum())} NaN/Inf values for input {spec.name!r} (first in "
                                 f"sample {sample}); calibration data must be finite", tensor=spec.name,
                                 count=int(bad.sum()))
    return x


def _specs(model):
    specs = getattr(model, "input_specs", None)
    if not specs:
        raise ArgumentError("load_feeds: model must be a refquant Model with at least one input")
    return list(specs)


def iter_feeds(model, data, *, batch_size: Optional[int] = None, batch_nums: Optional[int] = None,
               preprocess: Optional[Preprocess] = None) -> Iterator[dict]:
    """:func:`load_feeds` as a generator: files are read as the batches are needed (``batch_nums`` stops the
    reading early). Every argument and the file list are checked before the first batch."""
    specs = _specs(model)
    batch_size = _count("batch_size", batch_size)
    batch_nums = _count("batch_nums", batch_nums)
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise ArgumentError(f"load_feeds: preprocess must be a Preprocess or None, got {type(preprocess).__name__}")
    files = expand_data(data)
    if any(_kind(p) == "image" for p in files):
        if len(specs) != 1 or len(specs[0].shape) != 4 or np.dtype(specs[0].dtype).kind != "f":
            raise ArgumentError(f"images feed a model with one rank-4 float input; the model's inputs are "
                                f"{[(s.name, _shape_text(s.shape), s.dtype) for s in specs]}: use .npy/.npz files")
    return _batches(_chunks(files, specs, preprocess or Preprocess()), batch_size, batch_nums)


def _chunks(files, specs, pre) -> Iterator[tuple[Path, dict]]:
    for path in files:
        if _kind(path) == "image":
            arrays = {specs[0].name: image_sample(path, specs[0], pre)[None]}
        else:
            arrays = _read_arrays(path, specs)
        yield path, {s.name: _check(path, s, arrays[s.name]) for s in specs}


def _batches(chunks, batch_size, batch_nums) -> Iterator[dict]:
    emitted = 0
    if batch_size is None:
        for _, arrays in chunks:
            yield arrays
            emitted += 1
            if batch_nums is not None and emitted >= batch_nums:
                return  # before the next file is read
        return
    pending: list[dict] = []
    count, key = 0, None
    for _, arrays in chunks:
        this = tuple(a.shape[1:] for a in arrays.values())
        if pending and this != key:
            if batch_nums is not None and emitted >= batch_nums:
                return
            yield _concat(pending)
            emitted += 1
            pending, count = [], 0
        key = this
        pending.append(arrays)
        count += next(iter(arrays.values())).shape[0]
        while count >= batch_size:
            if batch_nums is not None and emitted >= batch_nums:
                return
            whole = _concat(pending)
            yield {n: a[:batch_size] for n, a in whole.items()}
            emitted += 1
            count -= batch_size
            pending = [{n: a[batch_size:] for n, a in whole.items()}] if count else []
        if batch_nums is not None and emitted >= batch_nums:
            return
    if pending and (batch_nums is None or emitted < batch_nums):
        yield _concat(pending)


def _concat(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return dict(parts[0])
    return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}


def _count(name: str, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ArgumentError(f"load_feeds: {name} must be an int >= 1 or None, got {value!r}")
    return int(value)


def load_feeds(model, data, *, batch_size: Optional[int] = None, batch_nums: Optional[int] = None,
               preprocess: Optional[Preprocess] = None) -> list[dict]:
    """The feed dicts (``{input_name: batch}``) of the files ``data`` names, for ``model``'s inputs.

    ``data``: a path, glob or folder, or a list of them (see the module docstring for the formats).
    ``batch_size``: None keeps each file as one batch (an image is a batch of one); an int re-batches the
    samples in file order. ``batch_nums``: at most this many batches (None: all). ``preprocess``: how images
    become samples (:class:`Preprocess`, :func:`preset`; default: pixels * 1/255, resized to the input's static
    size if it has one). Arrays from ``.npy`` / ``.npz`` files are used as stored (only cast to the input's
    dtype within the same kind)."""
    return list(iter_feeds(model, data, batch_size=batch_size, batch_nums=batch_nums, preprocess=preprocess))


# ---- command-line options ----------------------------------------------------------------------------------
def _whole_number_at_least(lo: int):
    def parse(text: str) -> int:
        import argparse
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    return parse


positive_int = _whole_number_at_least(1)
positive_int.__doc__ = "argparse type: an int >= 1."
non_negative_int = _whole_number_at_least(0)
non_negative_int.__doc__ = "argparse type: an int >= 0."


def parse_size(text: str) -> int | tuple:
    """``"256"`` -> 256, ``"48x320"`` -> (48, 320) (height x width)."""
    import argparse
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 256 or 48x320), got {text!r}") from None
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected N or HxW with sizes >= 1, got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_floats(text: str) -> tuple:
    """``"0.485,0.456,0.406"`` -> a tuple of finite floats (one value: used for every channel)."""
    import argparse
    try:
        values = tuple(_fraction(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _fraction(text: str) -> float:
    """A float, or ``a/b`` (``1/255``)."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        den_value = float(den)
        if den_value == 0:
            raise ValueError("division by zero")
        return float(num) / den_value
    return float(text)


def parse_scale(text: str) -> float:
    """``"1/255"`` or ``"0.00392"`` -> a finite float > 0."""
    import argparse
    try:
        value = _fraction(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 1/255, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_data_arguments(parser, *, batch_nums: Optional[int] = None, zoo_batch_size: int = 32) -> None:
    """Add the shared data options to an argparse (sub)parser: ``--data`` (repeatable), ``--preset``,
    ``--resize``, ``--crop``, ``--mean``, ``--std``, ``--scale``, ``--bgr`` / ``--rgb``, ``--layout``,
    ``--batch-size`` and ``--batch-nums`` (default ``batch_nums``; None: every batch)."""
    g = parser.add_argument_group("calibration data", "files to feed the model (default: a zoo model's embedded "
                                  "data); preprocessing options apply to images")
    g.add_argument("--data", action="append", default=None, metavar="PATH",
                   help="a .npy/.npz file, an image, a folder or a glob (quote it); repeatable")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="image preprocessing recipe (options below override its values)")
    g.add_argument("--resize", type=parse_size, default=None, metavar="N|HxW",
                   help="N: short side to N (det: longest side limit); HxW: exactly")
    g.add_argument("--crop", type=parse_size, default=None, metavar="N|HxW", help="centre crop")
    g.add_argument("--mean", type=parse_floats, default=None, metavar="M[,M,M]",
                   help="per-channel mean subtracted after --scale (default 0)")
    g.add_argument("--std", type=parse_floats, default=None, metavar="S[,S,S]",
                   help="per-channel divisor after the mean (default 1)")
    g.add_argument("--scale", type=parse_scale, default=None, metavar="X",
                   help="pixel multiplier, e.g. 1/255 (the default)")
    order = g.add_mutually_exclusive_group()
    order.add_argument("--bgr", dest="channel_order", action="store_const", const="bgr", default=None,
                       help="feed channels in BGR order (OpenCV-trained models)")
    order.add_argument("--rgb", dest="channel_order", action="store_const", const="rgb",
                       help="feed channels in RGB order (overrides a preset's BGR)")
    g.add_argument("--layout", choices=("nchw", "nhwc"), default=None,
                   help="image tensor layout (default: the preset's, else from the input's shape)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"samples per batch (default: each file as stored, one image per batch; a zoo model's "
                        f"embedded data: {zoo_batch_size})")
    g.add_argument("--batch-nums", type=positive_int, default=batch_nums,
                   help=f"at most this many batches (default: {batch_nums or 'all'})")
    parser.set_defaults(zoo_batch_size=zoo_batch_size)


def preprocess_from_args(args) -> Preprocess:
    """The :class:`Preprocess` the parsed options describe: ``--preset`` (or the plain default) with every
    option given replacing its value."""
    overrides = {}
    for field in ("resize", "crop", "mean", "std", "scale", "channel_order", "layout"):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    name = getattr(args, "preset", None)
    if name is not None:
        return preset(name, **overrides)
    return Preprocess(**overrides)


def feeds_from_args(args, model) -> list[dict]:
    """The feeds for ``model`` the parsed options ask for (:func:`add_data_arguments`): the ``--data`` files, or,
    without ``--data``, the embedded calibration data of a zoo model (``model.meta["zoo"]``: the first
    ``--batch-nums`` batches of its training split). A model without either is an :class:`ArgumentError`."""
    data = getattr(args, "data", None)
    batch_nums = getattr(args, "batch_nums", None)
    if data:
        return load_feeds(model, data, batch_size=getattr(args, "batch_size", None), batch_nums=batch_nums,
                          preprocess=preprocess_from_args(args))
    name = getattr(model, "meta", {}).get("zoo")
    if name is None:
        raise ArgumentError("the model carries no calibration data (it is not a zoo model): give --data with "
                            ".npy/.npz files or images")
    from ..models import zoo
    if name not in zoo.ZOO:
        raise ArgumentError(f"the model names zoo model {name!r}, which this refquant does not have; give --data")
    batch_size = getattr(args, "batch_size", None) or getattr(args, "zoo_batch_size", 32)
    return zoo.calibration_feeds(name, model.inputs[0], batch_size, batch_nums or 10)


def describe_feeds(feeds: Sequence[dict]) -> str:
    """One line: how many batches and samples, and each input's first batch shape and dtype."""
    if not feeds:
        return "no batches"
    first = feeds[0]
    samples = sum(next(iter(f.values())).shape[0] for f in feeds)
    inputs = ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for n, a in first.items())
    return f"{len(feeds)} batch{'es' if len(feeds) != 1 else ''}, {samples} samples; first batch: {inputs}"
