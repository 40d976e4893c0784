"""The generated 4-topic sentence corpus (``data/make_text_corpus.py``) as padded token id arrays.

The vocabulary is built from the train split only: id 0 is padding (``<pad>``), id 1 is unknown (``<unk>``), then
words by decreasing train frequency, ties broken alphabetically, so it is the same on every machine.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np

from ._locate import data_file

TEXT_FILE = "text_corpus.npz"
PAD, UNK = "<pad>", "<unk>"


class TextData(NamedTuple):
    """``ids`` int64 (N, max_len) right-padded with 0, ``labels`` int64 (N,), ``vocab`` (id -> word),
    ``topics`` (label -> name), ``texts`` the raw sentences. Unpacks as ``ids, labels, vocab, topics, texts``."""

    ids: np.ndarray
    labels: np.ndarray
    vocab: list
    topics: list
    texts: list


@lru_cache(maxsize=1)
def _raw() -> dict:
    with np.load(data_file(TEXT_FILE), allow_pickle=False) as z:
        return dict(text=[str(t) for t in z["text"]], label=z["label"].astype(np.int64),
                    split=np.array([str(s) for s in z["split"]]), topics=[str(t) for t in z["topics"]])


@lru_cache(maxsize=1)
def build_vocab() -> tuple[str, ...]:
    raw = _raw()
    counts = Counter(w for t, s in zip(raw["text"], raw["split"]) if s == "train" for w in t.split())
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return (PAD, UNK, *words)


def encode(texts: list[str], vocab: list[str] | tuple[str, ...], max_len: int) -> np.ndarray:
    """Token ids (N, max_len), right-padded with 0 and truncated to ``max_len``; unknown words map to 1."""
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    ids = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, text in enumerate(texts):
        toks = [index.get(w, unk) for w in text.split()][:max_len]
        ids[row, :len(toks)] = toks
    return ids


def load_text(split: str = "train", max_len: Optional[int] = 16) -> TextData:
    """The corpus ``split`` ("train": 3,200, "test": 800, "all": 4,000) as :class:`TextData`.

    ``max_len`` pads / truncates every sentence (the longest has 14 tokens); None uses the longest in the corpus.
    """
    raw = _raw()
    if split in ("train", "test"):
        keep = np.flatnonzero(raw["split"] == split)
    elif split == "all":
        keep = np.arange(len(raw["text"]))
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    texts = [raw["text"][i] for i in keep]
    if max_len is None:
        max_len = max(len(t.split()) for t in raw["text"])
    vocab = list(build_vocab())
    return TextData(encode(texts, vocab, int(max_len)), raw["label"][keep].copy(), vocab, list(raw["topics"]), texts)
