"""The UCI hand-written digits, as scikit-learn ships them (see ``data/README.md`` for provenance).

1,797 grey images of 8x8 pixels with values 0..16 and labels 0..9, with a fixed stratified 80/20 train/test split
stored in the file itself (1,438 / 359 images).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._locate import data_file

DIGITS_FILE = "digits.npz"


@lru_cache(maxsize=1)
def _raw() -> dict[str, np.ndarray]:
    with np.load(data_file(DIGITS_FILE), allow_pickle=False) as z:
        return {k: z[k] for k in ("images", "labels", "train_idx", "test_idx")}


def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of 1-D linear interpolation with half-pixel centres and edge clamping.

    This is the usual image-resize convention (OpenCV's INTER_LINEAR, ONNX ``half_pixel``): output pixel ``i``
    samples the input at ``(i + 0.5) * src / dst - 0.5``.
    """
    m = np.zeros((dst, src), dtype=np.float64)
    pos = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    m[np.arange(dst), lo] += 1.0 - frac
    m[np.arange(dst), hi] += frac
    return m


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(..., H, W)`` images to ``(..., size, size)`` (half-pixel centres, float64 math)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images.astype(np.float64)
    rows, cols = _interp_matrix(h, size), _interp_matrix(w, size)
    return np.einsum("ih,...hw,jw->...ij", rows, images.astype(np.float64), cols)


def load_digits(size: int = 8, split: str = "train", normalize: str = "unit") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: x float32 ``(N, 1, size, size)``, y int64 ``(N,)``.

    ``size``: 8 (native) or any larger side (16, 28, 32 ...), upscaled bilinearly.
    ``split``: "train" (1,438), "test" (359) or "all" (1,797, in the original order).
    ``normalize``: "unit" scales pixels to [0, 1]; "standard" then subtracts 0.5 and divides by 0.5 ([-1, 1]);
    "none" keeps the raw 0..16 scale (as float32).
    """
    raw = _raw()
    if split == "train":
        idx = raw["train_idx"]
    elif split == "test":
        idx = raw["test_idx"]
    elif split == "all":
        idx = np.arange(len(raw["labels"]))
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    images = resize_bilinear(raw["images"][idx].astype(np.float64), size)
    if normalize == "unit":
        images = images / 16.0
    elif normalize == "standard":
        images = (images / 16.0 - 0.5) / 0.5
    elif normalize != "none":
        raise ValueError(f"normalize must be 'unit', 'standard' or 'none', got {normalize!r}")
    x = np.ascontiguousarray(images[:, None, :, :], dtype=np.float32)
    y = raw["labels"][idx].astype(np.int64)
    return x, y


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1) -> np.ndarray:
    """Augmentation: translate each image by up to ``max_shift`` pixels in each direction, zero-filled.

    ``x`` is ``(N, C, H, W)``; returns a new array. Deterministic for a given generator state.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = np.zeros((n, x.shape[1], h + 2 * p, w + 2 * p), dtype=x.dtype)
    padded[:, :, p:p + h, p:p + w] = x
    dy = rng.integers(0, 2 * p + 1, size=n)
    dx = rng.integers(0, 2 * p + 1, size=n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out
