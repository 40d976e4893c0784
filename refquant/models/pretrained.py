"""Trained zoo weights (FP32, and QAT fine-tuned): load the cached refquant file, or train it once and cache it.

Cached files are ``data/zoo/<name>.rq`` (committed, written by ``refquant train <name> --cache``); an installed
package carries them in ``refquant/_data/zoo``. When a file is missing, :func:`pretrained` trains the model with its
recipe and saves it under ``$REFQUANT_CACHE`` (default ``~/.cache/refquant``). QAT models (:func:`pretrained_qat`)
are cached the same way as ``zoo/<name>.qat<bits>.rq``.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..graph import Model
from ..io import load, save
from . import zoo


def cache_dir() -> Path:
    return Path(os.environ.get("REFQUANT_CACHE", Path.home() / ".cache" / "refquant"))


def cached_path(name: str, suffix: str = "") -> Path | None:
    """The first existing cached file ``<name><suffix>.rq`` of zoo model ``name``, or None."""
    from ..data import data_file
    try:
        return data_file(f"zoo/{name}{suffix}.rq")
    except FileNotFoundError:
        path = cache_dir() / f"{name}{suffix}.rq"
        return path if path.is_file() else None


def pretrained(name: str, *, train_if_missing: bool = True, progress: bool = True) -> Model:
    """Zoo model ``name`` with trained weights (see the module docstring for where they come from)."""
    path = cached_path(name)
    if path is not None:
        return load(path)
    if not train_if_missing:
        raise FileNotFoundError(f"no cached weights for zoo model {name!r}; run `refquant train {name}`")
    model, _, _ = zoo.train(name, progress=progress)
    cache_dir().mkdir(parents=True, exist_ok=True)
    save(model, cache_dir() / f"{name}.rq")
    return model


def pretrained_qat(name: str, bits: int = 8, *, progress: bool = False) -> Model:
    """Zoo model ``name`` after the QAT recipe at ``bits`` (:func:`refquant.quant.qat.finetune_zoo`), converted:
    the cached file, or fine-tuned now and cached."""
    path = cached_path(name, f".qat{bits}")
    if path is not None:
        return load(path)
    from ..quant.qat import finetune_zoo
    model, _ = finetune_zoo(name, bits, progress=progress)
    cache_dir().mkdir(parents=True, exist_ok=True)
    save(model, cache_dir() / f"{name}.qat{bits}.rq")
    return model
