"""MobileNetV1 (depthwise separable convs) and MobileNetV2 (inverted residuals, linear bottlenecks, relu6).

Both follow the ImageNet definitions (PaddleClas / the papers) at ``input_size=224``: a stride-2 stem, global
average pooling and an fc classifier. For small inputs (``input_size <= 64``, or ``small_input=True``) the stem
keeps stride 1 and no later layer shrinks the map below 2x2 (a 16x16 digit ends at 2x2, not 1x1); everything
else is unchanged.
"""
from __future__ import annotations

from typing import Optional

from ..graph import Model
from .builder import GraphBuilder, make_divisible

# (output channels, stride) of MobileNetV1's 13 depthwise separable blocks.
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2.
V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


def is_small(input_size: int, small_input: Optional[bool]) -> bool:
    return input_size <= 64 if small_input is None else bool(small_input)


def keep_map(b: GraphBuilder, x: str, stride: int, small: bool) -> int:
    """Small-input rule: a stride-2 layer keeps stride 1 when it would shrink the map below 2x2."""
    size = b.shape(x)[2]
    return 1 if small and stride > 1 and size is not None and size < 4 else stride


def mobilenet_v1(input_size: int = 224, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
                 seed: int = 0, small_input: Optional[bool] = None, dropout: float = 0.0) -> Model:
    """MobileNetV1 with width multiplier ``width`` (channels ``int(c * width)``); ~4.23M params at 224/1000/1.0."""
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  small_input=small_input, dropout=dropout)
    small = is_small(input_size, small_input)
    b = GraphBuilder("mobilenet_v1", seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    h = b.conv_bn(x, max(1, int(32 * width)), 3, 1 if small else 2, act="relu")
    for out_c, stride in V1_BLOCKS:
        c = b.channels(h)
        h = b.conv_bn(h, c, 3, keep_map(b, h, stride, small), groups=c, act="relu")                  # depthwise 3x3
        h = b.conv_bn(h, max(1, int(out_c * width)), 1, 1, act="relu")        # pointwise 1x1
    h = b.pool2d(h, "avg", global_pooling=True)
    h = b.flatten(h)
    h = b.dropout(h, dropout)
    logits = b.fc(h, num_classes)
    return b.build(logits, meta={"builder": "mobilenet_v1", "kwargs": kwargs, "task": "image_classification"})


def _inverted_residual(b: GraphBuilder, x: str, out_c: int, stride: int, expand: int) -> str:
    in_c = b.channels(x)
    h = x
    if expand != 1:
        h = b.conv_bn(h, in_c * expand, 1, 1, act="relu6")                   # expansion 1x1
    c = b.channels(h)
    h = b.conv_bn(h, c, 3, stride, groups=c, act="relu6")                     # depthwise 3x3
    h = b.conv_bn(h, out_c, 1, 1, act=None)                                   # linear projection 1x1
    if stride == 1 and in_c == out_c:
        h = b.add(x, h)
    return h


def mobilenet_v2(input_size: int = 224, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
                 seed: int = 0, small_input: Optional[bool] = None, dropout: float = 0.0,
                 last_channels: int = 1280) -> Model:
    """MobileNetV2 with width multiplier (channels rounded to multiples of 8); ~3.50M params at 224/1000/1.0.

    ``last_channels`` is the final 1x1 conv's width before pooling (1280 in the paper, scaled up for width > 1).
    """
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  small_input=small_input, dropout=dropout, last_channels=last_channels)
    small = is_small(input_size, small_input)
    b = GraphBuilder("mobilenet_v2", seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    h = b.conv_bn(x, make_divisible(32 * width), 3, 1 if small else 2, act="relu6")
    for t, c, n, s in V2_SETTINGS:
        out_c = make_divisible(c * width)
        for i in range(n):
            h = _inverted_residual(b, h, out_c, keep_map(b, h, s, small) if i == 0 else 1, t)
    h = b.conv_bn(h, make_divisible(last_channels * max(1.0, width)), 1, 1, act="relu6")
    h = b.pool2d(h, "avg", global_pooling=True)
    h = b.flatten(h)
    h = b.dropout(h, dropout)
    logits = b.fc(h, num_classes)
    return b.build(logits, meta={"builder": "mobilenet_v2", "kwargs": kwargs, "task": "image_classification"})
