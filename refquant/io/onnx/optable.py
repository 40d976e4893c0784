"""The ONNX <-> refquant op names that map one to one (same inputs, no attributes to translate), read by both
the importer (:mod:`.converters.elementwise`) and the exporter (:mod:`.emitters.elementwise`): adding a row here
maps an op in both directions."""
from __future__ import annotations

UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Sqrt": "sqrt", "Exp": "exp", "Log": "log"}
BINARY = {"Add": "elementwise_add", "Sub": "elementwise_sub", "Mul": "elementwise_mul", "Div": "elementwise_div",
          "Pow": "elementwise_pow"}
SOFTMAX = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}


def to_onnx(table: dict) -> dict:
    """The reverse direction of a table: refquant op type -> ONNX op type."""
    return {rq: ox for ox, rq in table.items()}
