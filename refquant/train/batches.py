"""Mini-batch iteration."""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


def iter_batches(x: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 64, shuffle: bool = False,
                 seed: int | np.random.Generator | None = 0, drop_last: bool = False) -> Iterator:
    """Yield ``(xb, yb)`` (or ``xb`` alone when ``y`` is None) in batches of ``batch_size``.

    ``shuffle`` permutes the samples with ``numpy.random.default_rng(seed)`` (or the Generator passed as
    ``seed``), so a given seed always gives the same order. The last short batch is kept unless ``drop_last``.
    """
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if shuffle:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        if y is None:
            yield x[idx]
        else:
            yield x[idx], y[idx]
