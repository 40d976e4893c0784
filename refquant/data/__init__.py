"""Loaders for the small datasets embedded in refquant (no downloads, no extra dependencies).

* :func:`load_digits`: the UCI hand-written digits (1,797 8x8 images, scikit-learn's copy), upscaled on demand.
* :func:`load_text`: a generated 4-topic sentence classification corpus (``data/make_text_corpus.py``).
* :func:`iter_batches`: mini-batches, optionally shuffled by a seeded generator.

The data files live in the repository's top-level ``data/`` directory; an installed package carries copies in
``refquant/_data/``. ``REFQUANT_DATA`` in the environment overrides both.
"""
from ._locate import data_dir, data_file  # noqa: F401
from .digits import load_digits, resize_bilinear, random_shift  # noqa: F401
from .text import load_text, TextData, PAD, UNK  # noqa: F401
from ..train.batches import iter_batches  # noqa: F401  (batching is part of training)

__all__ = ["load_digits", "load_text", "iter_batches", "data_dir", "data_file", "resize_bilinear", "random_shift",
           "TextData", "PAD", "UNK"]
