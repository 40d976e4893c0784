"""LeNet-5: two conv + relu + max-pool stages and three fully connected layers (Paddle's fc pattern).

At ``input_size=28`` with the default width it is exactly the oracle LeNet of ``tests/data`` (Paddle's
static-graph model: conv 5x5 pad 2 -> 6, pool, conv 5x5 -> 16, pool, fc 120, fc 84, fc 10), parameter for
parameter; ``bias_style="add"`` also reproduces its tensor names (conv bias as reshape2 + elementwise_add, so
``conv2d_0.tmp_1``, ``relu_0.tmp_0``, ``pool2d_0.tmp_0``, ``flatten_0.tmp_0``, ``fc_0.tmp_2`` ...).
"""
from __future__ import annotations

from ..graph import Model
from .builder import GraphBuilder


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def lenet5(input_size: int = 32, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, seed: int = 0,
           bias_style: str = "input") -> Model:
    """LeNet-5 for ``input_size`` x ``input_size`` images.

    The first conv is padded by 2 unless the input is 32 or larger (classic LeNet-5 on 32x32 needs no padding);
    the second conv is padded by 2 only when its input is smaller than 10 (e.g. 8x8 digits). ``width`` scales
    every layer (6, 16 channels; 120, 84 units). ``bias_style``: "input" (conv bias as the conv's third input)
    or "add" (Paddle's reshape2 + elementwise_add).
    """
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  bias_style=bias_style)
    b = GraphBuilder("lenet5", seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    pad0 = 0 if input_size >= 32 else 2
    h = b.conv2d(x, _ch(6, width), 5, 1, pad0, bias=True, bias_style=bias_style)
    h = b.pool2d(b.relu(h), "max", 2, 2)
    pad1 = 0 if b.shape(h)[2] >= 10 else 2
    h = b.conv2d(h, _ch(16, width), 5, 1, pad1, bias=True, bias_style=bias_style)
    h = b.pool2d(b.relu(h), "max", 2, 2)
    h = b.flatten(h)
    h = b.fc(h, _ch(120, width), act="relu")
    h = b.fc(h, _ch(84, width), act="relu")
    logits = b.fc(h, num_classes)
    return b.build(logits, meta={"builder": "lenet5", "kwargs": kwargs, "task": "image_classification"})
