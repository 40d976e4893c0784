"""The trained-zoo recipes: one place that says how each model is built, fed and trained on the embedded data.

``refquant train <name>``, the demo and the benchmarks read :data:`ZOO`. Each entry:

* ``builder`` / ``kwargs``: the builder in :data:`refquant.models.BUILDERS` and its arguments (the 2-core-trainable
  configuration); ``imagenet``: the kwargs of the ImageNet-shaped twin used by benchmarks (None if there is none).
* ``data``: ``{"dataset": "digits", "size": 16}`` or ``{"dataset": "text", "max_len": 16}``.
* ``train``: keyword arguments of :func:`refquant.train.fit`, plus ``shift`` (random-translation augmentation
  in pixels, 0 for none).
* ``measured``: what the recipe gave here (test top-1, seconds, seed 0): documentation, not a contract. Seconds
  are wall time on the 2-core development machine and vary with its load.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..graph import Model
from . import BUILDERS

_SGD = dict(optimizer="sgd", momentum=0.9, schedule="cosine")

ZOO: dict[str, dict] = {
    "lenet5": dict(
        builder="lenet5", kwargs=dict(input_size=16, num_classes=10, in_channels=1, width=1.0),
        imagenet=None,
        data=dict(dataset="digits", size=16),
        train=dict(epochs=15, batch_size=32, lr=0.05, weight_decay=5e-4, warmup_epochs=1, shift=1, **_SGD),
        measured=dict(top1=0.9833, seconds=11.8),
    ),
    "mobilenet_v1": dict(
        builder="mobilenet_v1", kwargs=dict(input_size=16, num_classes=10, in_channels=1, width=0.5),
        imagenet=dict(input_size=224, num_classes=1000, in_channels=3, width=1.0),
        data=dict(dataset="digits", size=16),
        train=dict(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, warmup_epochs=2, shift=2, **_SGD),
        measured=dict(top1=0.9721, seconds=110.6),
    ),
    "mobilenet_v2": dict(
        builder="mobilenet_v2", kwargs=dict(input_size=16, num_classes=10, in_channels=1, width=0.5),
        imagenet=dict(input_size=224, num_classes=1000, in_channels=3, width=1.0),
        data=dict(dataset="digits", size=16),
        train=dict(epochs=15, batch_size=64, lr=0.02, weight_decay=5e-4, warmup_epochs=1, shift=1, **_SGD),
        measured=dict(top1=0.9721, seconds=122.6),
    ),
    "resnet20": dict(
        builder="resnet20", kwargs=dict(input_size=16, num_classes=10, in_channels=1, width=0.5),
        imagenet=None,
        data=dict(dataset="digits", size=16),
        train=dict(epochs=15, batch_size=64, lr=0.1, weight_decay=5e-4, warmup_epochs=1, shift=1, **_SGD),
        measured=dict(top1=0.9889, seconds=15.8),
    ),
    "resnet50": dict(
        # benchmark shape only by default: a width-0.25 ResNet-50 at 16x16 (1.48M params) did reach 96.1% on
        # digits (SGD lr 0.05, 10 epochs, +-1 px shifts) but needs ~20 s per epoch here; resnet20 covers training.
        builder="resnet50", kwargs=None,
        imagenet=dict(input_size=224, num_classes=1000, in_channels=3, width=1.0),
        data=None, train=None, measured=None,
    ),
    "vgg_small": dict(
        builder="vgg_small", kwargs=dict(input_size=16, num_classes=10, in_channels=1, width=0.5),
        imagenet=None,
        data=dict(dataset="digits", size=16),
        train=dict(epochs=15, batch_size=64, lr=0.1, weight_decay=5e-4, warmup_epochs=1, shift=1, **_SGD),
        measured=dict(top1=0.9833, seconds=34.8),
    ),
    "vgg16": dict(
        builder="vgg16", kwargs=None,           # benchmark shape only: 138M parameters do not train on 2 cores
        imagenet=dict(input_size=224, num_classes=1000, in_channels=3, width=1.0),
        data=None, train=None, measured=None,
    ),
    "text_mean": dict(
        builder="text_classifier", kwargs=dict(num_classes=4, embed_dim=64, encoder="mean", hidden=64, max_len=16,
                                               dropout=0.1),
        imagenet=None,
        data=dict(dataset="text", max_len=16),
        train=dict(epochs=10, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0, schedule="cosine",
                   warmup_epochs=0, shift=0),
        measured=dict(top1=0.9588, seconds=0.7),
    ),
    "text_transformer": dict(
        builder="text_classifier", kwargs=dict(num_classes=4, embed_dim=64, encoder="transformer", num_layers=2,
                                               num_heads=4, max_len=16, dropout=0.1),
        imagenet=None,
        data=dict(dataset="text", max_len=16),
        train=dict(epochs=6, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="cosine",
                   warmup_epochs=1, shift=0),
        measured=dict(top1=0.9475, seconds=6.7),
    ),
}


def names(trainable_only: bool = True) -> list[str]:
    return [k for k, v in ZOO.items() if v["train"] is not None or not trainable_only]


def _entry(name: str) -> dict:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; known: {sorted(ZOO)}") from None


def _builder_kwargs(entry: dict, imagenet: bool) -> dict:
    kwargs = dict(entry["imagenet"] if imagenet else entry["kwargs"])
    if entry["builder"] == "text_classifier":
        from ..data.text import build_vocab
        kwargs.setdefault("vocab_size", len(build_vocab()))
    return kwargs


def build(name: str, seed: int = 0, imagenet: bool = False) -> Model:
    """A freshly initialised zoo model: the trainable configuration, or with ``imagenet=True`` the
    ImageNet-shaped one (224x224x3, 1000 classes) for benchmarks."""
    entry = _entry(name)
    if (entry["imagenet"] if imagenet else entry["kwargs"]) is None:
        raise ValueError(f"zoo model {name!r} has no {'ImageNet-shaped' if imagenet else 'trainable'} configuration")
    model = BUILDERS[entry["builder"]](seed=seed, **_builder_kwargs(entry, imagenet))
    model.meta["zoo"] = name
    return model


def load_data(name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the zoo model's dataset split, shaped for its input."""
    data = _entry(name)["data"]
    if data is None:
        raise ValueError(f"zoo model {name!r} has no training data")
    if data["dataset"] == "digits":
        from ..data import load_digits
        return load_digits(data["size"], split)
    if data["dataset"] == "text":
        from ..data import load_text
        d = load_text(split, max_len=data["max_len"])
        return d.ids, d.labels
    raise ValueError(f"unknown dataset {data['dataset']!r}")


def calibration_feeds(name: str, input_name: str, batch_size: int = 32, batch_nums: int = 10) -> list[dict]:
    """The first ``batch_nums`` batches of ``batch_size`` of zoo model ``name``'s training split, as feed dicts
    ``{input_name: batch}``: the calibration data of the demo, the CLI and the QAT recipe."""
    x, _ = load_data(name, "train")
    return [{input_name: x[i:i + batch_size]} for i in range(0, min(len(x), batch_size * batch_nums), batch_size)]


def train(name: str, seed: int = 0, progress: bool = True, epochs: Optional[int] = None,
          validate: bool = True) -> tuple[Model, dict, float]:
    """Build and train zoo model ``name`` on its data; returns ``(model, history, test_top1)``.

    ``epochs`` overrides the recipe (for quick runs). The history gains ``test_top1`` and ``seconds``;
    ``model.meta["train"]`` records the recipe and result.
    """
    from ..data import random_shift
    from ..train import evaluate, fit

    entry = _entry(name)
    if entry["train"] is None:
        raise ValueError(f"zoo model {name!r} has no training recipe")
    recipe = dict(entry["train"])
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    shift = int(recipe.pop("shift", 0))
    model = build(name, seed=seed)
    x, y = load_data(name, "train")
    xt, yt = load_data(name, "test")
    augment = (lambda xb, rng: random_shift(xb, rng, shift)) if shift else None
    start = time.perf_counter()
    history = fit(model, x, y, seed=seed, progress=progress, augment=augment,
                  x_val=xt if validate else None, y_val=yt if validate else None, **recipe)
    seconds = time.perf_counter() - start
    top1 = evaluate(model, xt, yt)
    history["test_top1"], history["seconds_total"] = top1, seconds
    model.meta["train"] = dict(recipe, shift=shift, seed=seed, test_top1=top1, seconds=round(seconds, 2))
    return model, history, top1
