"""Trained zoo weights (FP32, and QAT fine-tuned): load the cached refquant file, or train it once and cache it.

Cached files are ``data/zoo/<name>.rq`` (committed, written by ``refquant train <name> --cache``); an installed
package carries them in ``refquant/_data/zoo``. When a file is missing, :func:`pretrained` trains the model with its
recipe and saves it under ``$REFQUANT_CACHE`` (default ``~/.cache/refquant``). QAT models (:func:`pretrained_qat`)
are cached the same way as ``zoo/<name>.qat<bits>.rq``, after the QAT recipe :func:`finetune_zoo`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..data import random_shift
from ..graph import Model
from ..io import load, save
from ..quant import convert, quant_aware, quant_post_static, thresholds
from ..train import fit
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
    """Zoo model ``name`` after the QAT recipe at ``bits`` (:func:`finetune_zoo`), converted:
    the cached file, or fine-tuned now and cached."""
    path = cached_path(name, f".qat{bits}")
    if path is not None:
        return load(path)
    model, _ = finetune_zoo(name, bits, progress=progress)
    cache_dir().mkdir(parents=True, exist_ok=True)
    save(model, cache_dir() / f"{name}.qat{bits}.rq")
    return model


def finetune_zoo(name: str, bits: int = 8, *, epochs: int | None = None, lr_fraction: float | None = None,
                 config: dict | None = None, init_from_ptq: bool = True, seed: int = 0,
                 progress: bool = False) -> tuple[Model, dict]:
    """The zoo QAT recipe on zoo model ``name``: start from its trained FP32 weights, ``quant_aware`` at
    ``bits`` (weights and activations), train with the zoo recipe at ``lr_fraction`` of its learning rate for
    ``epochs`` with a one-epoch warmup, then :func:`~refquant.quant.convert`. Defaults: 8 bits and more, the usual
    recipe (1/10 of the learning rate, 1/4 of the epochs, at least 2); fewer bits, more of both (3/10, 1/2), since
    the weights have further to move (MobileNetV1 4-bit: 77.4% after 3 epochs at 1/10, 85.0% after 7 at 3/10).
    ``init_from_ptq``: start the activation thresholds from static PTQ (hist) on 10 training batches.
    Returns the converted model and the training history."""
    entry = zoo._entry(name)
    recipe = dict(entry["train"])
    shift = int(recipe.pop("shift", 0))
    low = bits < 8
    recipe["epochs"] = epochs if epochs is not None else max(2, recipe["epochs"] // (2 if low else 4))
    recipe["lr"] = recipe["lr"] * (lr_fraction if lr_fraction is not None else 0.3 if low else 0.1)
    recipe["warmup_epochs"] = 1
    model = pretrained(name)
    x, y = zoo.load_data(name, "train")
    cfg = dict(config or {}, weight_bits=bits, activation_bits=bits)
    init = None
    if init_from_ptq:
        feeds = zoo.calibration_feeds(name, model.inputs[0])
        init = thresholds(quant_post_static(model, feeds, algo="hist", weight_bits=bits, activation_bits=bits))
    qat = quant_aware(model, cfg, init_thresholds=init)
    augment = (lambda xb, rng: random_shift(xb, rng, shift)) if shift else None
    history = fit(qat, x, y, seed=seed, progress=progress, augment=augment, **recipe)
    out = convert(qat)
    out.meta["quantization"]["finetune"] = dict(recipe, shift=shift, init_from_ptq=init_from_ptq)
    return out, history
