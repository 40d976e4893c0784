"""The model zoo: builders that return a :class:`refquant.graph.Model` with Paddle-style names.

Every image builder takes ``(input_size, num_classes, in_channels, width, seed)`` and names its input ``x``
(NCHW float32, batch dimension ``None``); the one output is the logits. ``model.meta`` records ``builder`` and
``kwargs``, so :func:`rebuild` can make the same graph again from a saved model's metadata.
"""
from __future__ import annotations

from ..graph import Model
from .builder import GraphBuilder, count_params, make_divisible  # noqa: F401
from .lenet import lenet5
from .mobilenet import mobilenet_v1, mobilenet_v2
from .resnet import resnet18, resnet20, resnet50, resnet_cifar, resnet_imagenet
from .text import text_classifier
from .vgg import vgg16, vgg_small

BUILDERS = {
    "lenet5": lenet5,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet_cifar": resnet_cifar,
    "resnet_imagenet": resnet_imagenet,
    "vgg_small": vgg_small,
    "vgg16": vgg16,
    "text_classifier": text_classifier,
}


def build(builder: str, **kwargs) -> Model:
    """``build("resnet50", input_size=224)``: call the named builder."""
    try:
        fn = BUILDERS[builder]
    except KeyError:
        raise KeyError(f"unknown model builder {builder!r}; known: {sorted(BUILDERS)}") from None
    return fn(**kwargs)


def rebuild(meta: dict) -> Model:
    """A freshly initialised model built as ``meta`` (a model's ``meta`` dict) says."""
    return build(meta["builder"], **dict(meta.get("kwargs", {})))


__all__ = ["GraphBuilder", "count_params", "make_divisible", "build", "rebuild", "BUILDERS", "lenet5",
           "mobilenet_v1", "mobilenet_v2", "resnet18", "resnet20", "resnet50", "resnet_cifar", "resnet_imagenet",
           "vgg_small", "vgg16", "text_classifier"]


def __getattr__(name):
    # Lazy: load_bert (refquant.models.bert) is only imported when asked for.
    if name == "load_bert":
        from .bert import load_bert
        return load_bert
    raise AttributeError(f"module 'refquant.models' has no attribute {name!r}")
