"""ResNets: CIFAR-style (6n+2 layers of basic blocks: resnet20/32/56) and ImageNet-style (resnet18/34 basic,
resnet50/101/152 bottleneck, stride on the 3x3 conv as in Paddle's and torchvision's "v1.5").

Every conv is conv (no bias) + batch_norm; shortcuts that change shape are a 1x1 conv + batch_norm projection.
ImageNet-style nets at ``input_size <= 64`` (or ``small_input=True``) swap the 7x7/2 stem and its max-pool for a
3x3/1 stem, so the same builder trains on 16x16 or 32x32 digits.
"""
from __future__ import annotations

from typing import Optional

from ..graph import Model
from .builder import GraphBuilder
from .mobilenet import is_small

IMAGENET_DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
                   101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}


def _basic(b: GraphBuilder, x: str, planes: int, stride: int) -> str:
    h = b.conv_bn(x, planes, 3, stride, act="relu")
    h = b.conv_bn(h, planes, 3, 1, act=None)
    short = x if stride == 1 and b.channels(x) == planes else b.conv_bn(x, planes, 1, stride, act=None)
    return b.relu(b.add(short, h))


def _bottleneck(b: GraphBuilder, x: str, planes: int, stride: int, expansion: int = 4) -> str:
    out_c = planes * expansion
    h = b.conv_bn(x, planes, 1, 1, act="relu")
    h = b.conv_bn(h, planes, 3, stride, act="relu")
    h = b.conv_bn(h, out_c, 1, 1, act=None)
    short = x if stride == 1 and b.channels(x) == out_c else b.conv_bn(x, out_c, 1, stride, act=None)
    return b.relu(b.add(short, h))


def _head(b: GraphBuilder, h: str, num_classes: int) -> str:
    h = b.pool2d(h, "avg", global_pooling=True)
    return b.fc(b.flatten(h), num_classes)


def resnet_cifar(depth: int = 20, input_size: int = 32, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0, seed: int = 0, name: Optional[str] = None) -> Model:
    """CIFAR ResNet (He et al. 2016, section 4.2): 3x3 stem, three stages of (depth-2)/6 basic blocks with
    16, 32, 64 channels (times ``width``), strides 1, 2, 2. resnet20: ~0.27M params."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    name = name or f"resnet{depth}"
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed)
    if name == "resnet_cifar":
        kwargs["depth"] = depth
    n = (depth - 2) // 6
    b = GraphBuilder(name, seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    h = b.conv_bn(x, max(1, int(round(16 * width))), 3, 1, act="relu")
    for stage, planes in enumerate([16, 32, 64]):
        for i in range(n):
            h = _basic(b, h, max(1, int(round(planes * width))), 2 if (stage > 0 and i == 0) else 1)
    logits = _head(b, h, num_classes)
    return b.build(logits, meta={"builder": name, "kwargs": kwargs, "task": "image_classification"})


def resnet_imagenet(depth: int = 50, input_size: int = 224, num_classes: int = 1000, in_channels: int = 3,
                    width: float = 1.0, seed: int = 0, small_input: Optional[bool] = None,
                    name: Optional[str] = None) -> Model:
    """ImageNet ResNet-18/34/50/101/152; ``width`` scales the 64-128-256-512 base widths."""
    if depth not in IMAGENET_DEPTHS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}, got {depth}")
    name = name or f"resnet{depth}"
    kwargs = dict(input_size=input_size, num_classes=num_classes, in_channels=in_channels, width=width, seed=seed,
                  small_input=small_input)
    if name == "resnet_imagenet":
        kwargs["depth"] = depth
    kind, blocks = IMAGENET_DEPTHS[depth]
    block = _basic if kind == "basic" else _bottleneck
    small = is_small(input_size, small_input)
    b = GraphBuilder(name, seed)
    x = b.input("x", (None, in_channels, input_size, input_size))
    stem = max(1, int(round(64 * width)))
    if small:
        h = b.conv_bn(x, stem, 3, 1, act="relu")
    else:
        h = b.conv_bn(x, stem, 7, 2, act="relu")
        h = b.pool2d(h, "max", 3, 2, 1)
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks)):
        for i in range(n):
            h = block(b, h, max(1, int(round(planes * width))), 2 if (stage > 0 and i == 0) else 1)
    logits = _head(b, h, num_classes)
    return b.build(logits, meta={"builder": name, "kwargs": kwargs, "task": "image_classification"})


def resnet20(input_size: int = 32, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             seed: int = 0) -> Model:
    return resnet_cifar(20, input_size, num_classes, in_channels, width, seed, name="resnet20")


def resnet18(input_size: int = 224, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
             seed: int = 0, small_input: Optional[bool] = None) -> Model:
    return resnet_imagenet(18, input_size, num_classes, in_channels, width, seed, small_input, name="resnet18")


def resnet50(input_size: int = 224, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
             seed: int = 0, small_input: Optional[bool] = None) -> Model:
    """ResNet-50 (bottleneck [3, 4, 6, 3]); ~25.56M params at 224/1000/1.0."""
    return resnet_imagenet(50, input_size, num_classes, in_channels, width, seed, small_input, name="resnet50")
