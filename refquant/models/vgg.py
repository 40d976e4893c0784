"""VGG: stacks of 3x3 convs and 2x2 max-pools, then fully connected layers.

``vgg16`` is configuration D of Simonyan & Zisserman (conv + bias + relu, no batch norm unless asked; classifier
fc 4096 - fc 4096 - fc classes with dropout 0.5), ~138.4M params at 224/1000. ``vgg_small`` is a 6-conv
conv-bn-relu net with one hidden fc layer for small inputs (16x16 or 32x32 digits).
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..graph import Model
from .builder import GraphBuilder

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
VGG_SMALL_CFG = [32, 32, "M", 64, 64, "M", 128, 128, "M"]


def vgg(cfg: Sequence, input_size: int, num_classes: int, in_channels: int, width: float, seed: int,
        batch_norm: bool, hidden: Sequence[int], dropout: float, name: str, kwargs: dict) -> Model:
    b = GraphBuilder(name, seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    h = x
    for item in cfg:
        if item == "M":
            h = b.pool2d(h, "max", 2, 2)
        elif batch_norm:
            h = b.conv_bn(h, max(1, int(round(item * width))), 3, 1, act="relu")
        else:
            h = b.relu(b.conv2d(h, max(1, int(round(item * width))), 3, 1, 1, bias=True))
    h = b.flatten(h)
    for units in hidden:
        h = b.fc(h, units, act="relu")
        h = b.dropout(h, dropout)
    logits = b.fc(h, num_classes)
    return b.build(logits, meta={"builder": name, "kwargs": kwargs, "task": "image_classification"})


def vgg16(input_size: int = 224, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0, seed: int = 0,
          batch_norm: bool = False, hidden: Optional[int] = None, dropout: float = 0.5) -> Model:
    """VGG-16; ``hidden`` (default ``4096 * width``) sizes the two hidden fc layers."""
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  batch_norm=batch_norm, hidden=hidden, dropout=dropout)
    units = int(round(4096 * width)) if hidden is None else int(hidden)
    return vgg(VGG16_CFG, input_size, num_classes, in_channels, width, seed, batch_norm, [units, units], dropout,
               "vgg16", kwargs)


def vgg_small(input_size: int = 32, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, seed: int = 0,
              hidden: Optional[int] = None, dropout: float = 0.0) -> Model:
    """Six conv-bn-relu layers (32-32, 64-64, 128-128 times ``width``, a max-pool after each pair), fc
    ``hidden`` (default ``256 * width``) + relu, fc classes."""
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  hidden=hidden, dropout=dropout)
    units = max(1, int(round(256 * width))) if hidden is None else int(hidden)
    return vgg(VGG_SMALL_CFG, input_size, num_classes, in_channels, width, seed, True, [units], dropout,
               "vgg_small", kwargs)
