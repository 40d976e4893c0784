"""Mutation fuzzing of :func:`refquant.import_onnx`: every case must import and run, or raise a
:class:`refquant.RefquantError` (``MemoryError`` is allowed while *running* a graph whose tensors do not fit);
a crash, a hang, any other exception, or a parameter holding the bytes of a file outside the model's directory
fails the test.

Seed models: the three PP-OCR models of the ``rapidocr-onnxruntime`` package (when installed) and small graphs
built with ``onnx.helper`` that cover every mapped op type and most attributes (opsets 9, 11, 13; one with
external initializer and Constant data). A case is a seed mutated at the byte level (bit flips, byte runs,
insertions, deletions, truncation; for the PP-OCR models in the graph structure, the weights appended intact)
or at the proto level (attribute values replaced with huge / negative / zero / NaN / wrong-typed values or
removed, inputs and outputs renamed, emptied, added or removed, nodes dropped, reordered, duplicated or
retyped, tensor dims / dtypes / data changed, integer constants replaced, opsets changed, tensors pointed at
external files inside and outside the model's directory). Each case is written to its own directory
(``model.onnx``, a legitimate ``weights.bin``, a ``link.bin`` symlink to a decoy file outside) and imported by
path in a worker process (see ``tests/fuzzing.py``), sometimes also from its bytes; a model that imports is run
on a small input.

A model that imports but whose run fails in an op's forward (typically a shape that only this input
contradicts) must fail with the executor's :class:`refquant.errors.OpError`, which names the op.

Budget: ``REFQUANT_FUZZ_CASES`` (default 150, about 10 s; 0 = no limit) within ``REFQUANT_FUZZ_SECONDS``
(default 20), ``REFQUANT_FUZZ_SEED`` (default 0), ``REFQUANT_FUZZ_CASE_TIMEOUT`` (default 30 s),
``REFQUANT_FUZZ_OUT`` (keeps failing cases and a summary). A long local run::

    REFQUANT_FUZZ_CASES=0 REFQUANT_FUZZ_SECONDS=600 REFQUANT_FUZZ_SEED=1 REFQUANT_FUZZ_OUT=/tmp/fuzz \
        python -m pytest -q -s tests/test_fuzz_onnx.py
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from tests import fuzzing

onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


# ---- seed models ------------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits, opset):
    ins = [helper.make_tensor_value_info(n, t, s) for n, s, t in inputs]
    outs = [helper.make_tensor_value_info(o, F32, None) for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in inits.items()]
    m = helper.make_model(helper.make_graph(nodes, "seed", ins, outs, initializer=init),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _w(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


def _f(v):
    return np.array(v, np.float32)


def _i(v):
    return np.array(v, np.int64)


def _convnet():
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1],
          group=1, kernel_shape=[3, 3]),
        n("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn"], name="bn", epsilon=1e-5, momentum=0.9),
        n("Relu", ["bn"], ["r"]),
        n("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], ceil_mode=0),
        n("Conv", ["mp", "w2"], ["dw"], name="dw", group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
        n("AveragePool", ["dw"], ["ap"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1],
          count_include_pad=1),
        n("HardSigmoid", ["ap"], ["hs"], alpha=0.2, beta=0.5),
        n("Mul", ["ap", "hs"], ["mu"]),
        n("HardSwish", ["mu"], ["hw"]),
        n("Conv", ["hw", "w3"], ["c3"], name="same", auto_pad="SAME_UPPER", strides=[1, 1]),
        n("GlobalAveragePool", ["c3"], ["g"]),
        n("GlobalMaxPool", ["hw"], ["gx"]),
        n("Add", ["g", "gx"], ["ga"]),
        n("Flatten", ["ga"], ["f"], axis=1),
        n("Gemm", ["f", "wg", "bg"], ["gm"], transB=1, alpha=0.5, beta=2.0),
        n("Softmax", ["gm"], ["y"], axis=-1),
    ]
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8, seed=1), "s": _w(8, seed=2) + 1, "b": _w(8, seed=3),
             "m": _w(8, seed=4), "v": _w(8, seed=5) + 1, "w2": _w(8, 1, 3, 3, seed=6), "w3": _w(8, 8, 3, 3, seed=7),
             "wg": _w(4, 8, seed=8), "bg": _w(4, seed=9)}
    return _model(nodes, [("x", [None, 3, None, None], F32)], ["y"], inits, 13), {"x": [1, 3, 12, 12]}


def _upsample():
    n = helper.make_node
    nodes = [
        n("ConvTranspose", ["x", "wt", "bt"], ["ct"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
          output_padding=[1, 1], group=2),
        n("Resize", ["ct", "", "sc"], ["rs"], mode="linear", coordinate_transformation_mode="half_pixel"),
        n("Resize", ["x", "", "", "sz"], ["rn"], mode="nearest", nearest_mode="floor",
          coordinate_transformation_mode="asymmetric"),
        n("Concat", ["rs", "x"], ["cc"], axis=1),
        n("Clip", ["cc", "lo", "hi"], ["cl"]),
        n("Sub", ["cl", "one"], ["s"]),
        n("Div", ["s", "two"], ["d"]),
        n("Pow", ["d", "two"], ["pw"]),
        n("Sigmoid", ["pw"], ["sg"]),
        n("Tanh", ["sg"], ["th"]),
        n("Add", ["sg", "one"], ["sg1"]),
        n("Log", ["sg1"], ["lg"]),
        n("Sqrt", ["sg1"], ["sq"]),
        n("Exp", ["th"], ["ex"]),
        n("Mul", ["ex", "lg"], ["el"]),
        n("Add", ["el", "sq"], ["z"]),
        n("ReduceMean", ["z"], ["y1"], axes=[2, 3], keepdims=0),
        n("ReduceSum", ["z"], ["y2"], axes=[1], keepdims=1),
        n("Clip", ["rn", "lo"], ["y3"]),
    ]
    inits = {"wt": _w(4, 2, 3, 3), "bt": _w(4, seed=1), "sc": _f([1, 1, 0.5, 0.5]), "sz": _i([1, 4, 12, 12]),
             "lo": _f(0.0), "hi": _f(6.0), "one": _f(1.0), "two": _f(2.0)}
    return _model(nodes, [("x", [1, 4, 6, 6], F32)], ["y1", "y2", "y3"], inits, 11), {}


def _shapes():
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["sh"]),
        n("Gather", ["sh", "i0"], ["b"], axis=0),
        n("Unsqueeze", ["b", "ax0"], ["b1"]),
        n("Concat", ["b1", "m1"], ["tgt"], axis=0),
        n("Reshape", ["x", "tgt"], ["r"]),
        n("MatMul", ["r", "w"], ["mm"]),
        n("Add", ["mm", "bias"], ["a"]),
        n("Split", ["a", "parts"], ["s1", "s2"], axis=1),
        n("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        n("Slice", ["t", "st", "en", "ax2", "one"], ["sl"]),
        n("Unsqueeze", ["sl", "ax1"], ["u"]),
        n("Squeeze", ["u", "ax1"], ["q"]),
        n("Cast", ["q"], ["ci"], to=TensorProto.INT32),
        n("Cast", ["ci"], ["cf"], to=TensorProto.FLOAT),
        n("Expand", ["cf", "eshape"], ["e"]),
        n("Identity", ["e"], ["idn"]),
        n("Dropout", ["idn"], ["dr"]),
        n("Constant", [], ["half"], value_float=0.5),
        n("Constant", [], ["pair"], value_floats=[1.0, 2.0]),
        n("Constant", [], ["three"], value_int=3),
        n("Constant", [], ["twos"], value_ints=[2, 2]),
        n("Constant", [], ["tens"], value=numpy_helper.from_array(_f([[1.5, 2.5]]), "tens")),
        n("Mul", ["dr", "half"], ["y3"]),
        n("Add", ["pair", "tens"], ["pt"]),
        n("LogSoftmax", ["s2"], ["y4"], axis=1),
        n("Gather", ["x", "idx"], ["g"], axis=1),
        n("Transpose", ["g"], ["gt"], perm=[0, 2, 1]),
        n("MatMul", ["g", "gt"], ["mm2"]),
        n("ReduceSum", ["mm2", "ax2"], ["rs"], keepdims=0),
        n("Mul", ["rs", "pt"], ["y5"]),
    ]
    inits = {"i0": _i(0), "ax0": _i([0]), "m1": _i([-1]), "w": _w(24, 5), "bias": _w(5, seed=1),
             "parts": _i([2, 3]), "st": _i([1]), "en": _i([3]), "ax2": _i([2]), "one": _i([1]), "ax1": _i([1]),
             "eshape": _i([2, 4, 2]), "idx": _i([0, 2])}
    model = _model(nodes, [("x", [None, 6, 4], F32)], ["s1", "y3", "y4", "y5"], inits, 13)
    return model, {"x": [2, 6, 4]}


def _legacy():
    n = helper.make_node
    nodes = [
        n("Upsample", ["x", "sc"], ["u"], mode="nearest"),
        n("Slice", ["u"], ["s"], starts=[0], ends=[4], axes=[2]),
        n("Softmax", ["s"], ["sm"], axis=1),
        n("Clip", ["sm"], ["cl"], min=0.1, max=0.9),
        n("Reshape", ["cl", "shape"], ["r"]),
        n("Flatten", ["x"], ["f"], axis=2),
        n("BatchNormalization", ["x", "s2", "b2", "m2", "v2"], ["bn"], epsilon=1e-3),
        n("Squeeze", ["bn"], ["sq"], axes=[0]),
        n("Unsqueeze", ["sq"], ["us"], axes=[0]),
        n("Concat", ["us", "x"], ["cc"], axis=1),
        n("ReduceMean", ["cc"], ["y3"], axes=[1]),
        n("Split", ["cc"], ["p1", "p2"], axis=1, split=[1, 3]),
        n("MaxPool", ["p2"], ["y4"], kernel_shape=[3, 3], auto_pad="SAME_LOWER", strides=[2, 2]),
    ]
    inits = {"sc": _f([1, 1, 2, 2]), "shape": _i([1, -1]), "s2": _w(2) + 1, "b2": _w(2, seed=1),
             "m2": _w(2, seed=2), "v2": _w(2, seed=3) + 1}
    return _model(nodes, [("x", [1, 2, 4, 4], F32)], ["r", "f", "y3", "p1", "y4"], inits, 9), {}


def _external():
    """A model whose initializers and one Constant keep their bytes in ``weights.bin`` next to it."""
    n = helper.make_node
    const = numpy_helper.from_array(_w(4, seed=5), "cw")
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             n("Constant", [], ["cw"], value=const),
             n("Add", ["c", "cwr"], ["a"]),
             n("Relu", ["a"], ["y"])]
    model = _model(nodes, [("x", [1, 2, 5, 5], F32)], ["y"], {"w": _w(4, 2, 3, 3), "b": _w(4, seed=1),
                                                                 "cwr": _w(1, 4, 1, 1, seed=2)}, 13)
    # the Constant cw is unused by the graph, but its data must still be read safely
    blob = bytearray()
    tensors = list(model.graph.initializer) + [a.t for nd in model.graph.node for a in nd.attribute
                                               if a.HasField("t")]
    for t in tensors:
        raw = t.raw_data
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(len(blob))), ("length", str(len(raw)))):
            t.external_data.add(key=key, value=value)
        blob += raw + b"\0" * (-len(raw) % 8)
    return model, {}, bytes(blob)


def _ppocr():
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        return []
    folder = os.path.join(os.path.dirname(spec.origin), "models")
    hints = {"det": [1, 3, 32, 32], "rec": [1, 3, 48, 64], "cls": [1, 3, 48, 192]}
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".onnx"):
            kind = next(k for k in hints if f"_{k}_" in name)
            model = onnx.load(os.path.join(folder, name), load_external_data=False)
            out.append((name, model, {model.graph.input[0].name: hints[kind]}))
    return out


@functools.lru_cache(maxsize=None)
def seeds() -> list[dict]:
    """Each seed: name, model, hint (input shapes for the run), weights (bytes of weights.bin), big (PP-OCR)."""
    out = []
    for name, build in (("convnet", _convnet), ("upsample", _upsample), ("shapes", _shapes), ("legacy", _legacy)):
        model, hint = build()
        out.append({"name": name, "model": model, "hint": hint, "weights": b"\0" * 64, "big": False})
    model, hint, blob = _external()
    out.append({"name": "external", "model": model, "hint": hint, "weights": blob, "big": False})
    for name, model, hint in _ppocr():
        skeleton = copy.deepcopy(model)
        del skeleton.graph.initializer[:]
        inits = onnx.ModelProto()
        inits.graph.initializer.extend(model.graph.initializer)
        out.append({"name": name, "model": model, "hint": hint, "weights": b"\0" * 64, "big": True,
                    "skeleton": skeleton.SerializeToString(), "inits": inits.SerializeToString()})
    return out


# ---- mutations ----------------------------------------------------------------------------------------------
EVIL_INTS = [0, -1, 1, 2, 3, -2 ** 63, 2 ** 63 - 1, 2 ** 31, -2 ** 31, 2 ** 40, 7, 100000]
EVIL_FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e30, 0.5, 1e-30, 3.0]
LOCATIONS = [".env", "../.env", "../../.env", "/etc/hostname", "link.bin", "weights.bin", "", "sub/../weights.bin",
             "weights.bin\x00x", "./weights.bin", "missing.bin", "cases", "..", "."]
OFFSETS = [None, "0", "4", "8", "-1", "99999999999999", "abc", "1e3", "", "18446744073709551616"]
# attribute names each op type reads (so mutations hit names the importer looks at)
ATTR_NAMES = ["axis", "axes", "perm", "kernel_shape", "strides", "pads", "dilations", "group", "auto_pad",
              "ceil_mode", "count_include_pad", "epsilon", "momentum", "alpha", "beta", "transA", "transB", "to",
              "keepdims", "noop_with_empty_axes", "mode", "coordinate_transformation_mode", "nearest_mode", "split",
              "starts", "ends", "start", "end", "output_padding", "output_shape", "allowzero", "shape", "min", "max",
              "value", "value_float", "value_floats", "value_int", "value_ints", "training_mode", "num_outputs",
              "scales", "antialias", "spatial", "storage_order"]
OP_TYPES = ["Conv", "ConvTranspose", "BatchNormalization", "Relu", "Sigmoid", "Tanh", "Sqrt", "Exp", "Log",
            "HardSigmoid", "HardSwish", "Clip", "Add", "Sub", "Mul", "Div", "Pow", "MatMul", "Gemm", "Softmax",
            "LogSoftmax", "ReduceMean", "ReduceSum", "GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool",
            "Resize", "Upsample", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice",
            "Shape", "Cast", "Gather", "Expand", "Split", "Constant", "Identity", "Dropout", "If", "Loop"]


def _evil_attribute(rng, name, old):
    """A replacement attribute ``name``: the same type with an evil value, or another type altogether."""
    kind = rng.integers(8)
    if kind == 0:
        return helper.make_attribute(name, int(rng.choice(EVIL_INTS)))
    if kind == 1:
        return helper.make_attribute(name, float(rng.choice(EVIL_FLOATS)))
    if kind == 2:
        return helper.make_attribute(name, [int(rng.choice(EVIL_INTS)) for _ in range(rng.integers(0, 6))] or [0])
    if kind == 3:
        return helper.make_attribute(name, [float(rng.choice(EVIL_FLOATS)) for _ in range(rng.integers(1, 5))])
    if kind == 4:
        return helper.make_attribute(name, [b"", b"NOTSET", b"SAME_UPPER", b"VALID", b"cubic", b"linear",
                                            b"\xff\xfe", b"half_pixel_symmetric", b"floor",
                                            b"xyz"][int(rng.integers(10))])
    if kind == 5:
        shape = [int(d) for d in rng.integers(0, 4, rng.integers(0, 3))]
        dtype = rng.choice([np.float32, np.int64, np.float64, np.int32, np.uint8, np.float16, bool])
        return helper.make_attribute(name, numpy_helper.from_array(np.ones(shape, dtype), name))
    if kind == 6 and old is not None and old.type == AttributeProto.INTS and len(old.ints):
        a = copy.deepcopy(old)
        a.ints[int(rng.integers(len(a.ints)))] = int(rng.choice(EVIL_INTS))
        return a
    if old is not None and old.type == AttributeProto.INT:
        a = copy.deepcopy(old)
        a.i = int(rng.choice(EVIL_INTS))
        return a
    a = AttributeProto(name=name)
    a.type = int(rng.choice([0, 5, 11, 13]))            # types the importer never reads (or undefined)
    return a


def _all_names(model):
    g = model.graph
    names = [t.name for t in g.initializer] + [i.name for i in g.input] + [o.name for o in g.output]
    for node in g.node:
        names += list(node.input) + list(node.output)
    return [n for n in names if n] or ["x"]


def _tensors(model):
    out = list(model.graph.initializer)
    for node in model.graph.node:
        out += [a.t for a in node.attribute if a.HasField("t")]
    return out


def _mutate_proto(rng, model, seed) -> str:
    """Apply one proto-level mutation in place; returns its description."""
    g = model.graph
    nodes = list(g.node)
    node = nodes[int(rng.integers(len(nodes)))] if nodes else None
    what = int(rng.integers(16))
    if what in (0, 1, 2) and node is not None:                        # attribute values
        names = [a.name for a in node.attribute]
        name = (rng.choice(names) if names and rng.random() < 0.7 else rng.choice(ATTR_NAMES))
        old = next((a for a in node.attribute if a.name == name), None)
        if old is not None and rng.random() < 0.15:
            node.attribute.remove(old)
            return f"{node.op_type}: remove attribute {name}"
        new = _evil_attribute(rng, name, old)
        if old is not None:
            node.attribute.remove(old)
        node.attribute.append(new)
        if rng.random() < 0.05:
            node.attribute.append(copy.deepcopy(new))
        return f"{node.op_type}: attribute {name} = {helper.printable_attribute(new)[:120]!r}"
    if what == 3 and node is not None:                                # inputs
        choice = rng.integers(5)
        if choice == 0 and len(node.input):
            k = int(rng.integers(len(node.input)))
            node.input[k] = rng.choice(["", "nonexistent", str(rng.choice(_all_names(model)))])
            return f"{node.op_type}: input {k} renamed to {node.input[k]!r}"
        if choice == 1 and len(node.input):
            del node.input[int(rng.integers(len(node.input)))]
            return f"{node.op_type}: an input removed"
        if choice == 2:
            node.input.append(str(rng.choice(_all_names(model) + [""])))
            return f"{node.op_type}: input {node.input[-1]!r} added"
        del node.input[:]
        return f"{node.op_type}: all inputs removed"
    if what == 4 and node is not None:                                # outputs
        choice = rng.integers(3)
        if choice == 0 and len(node.output):
            node.output[0] = rng.choice(["", str(rng.choice(_all_names(model)))])
            return f"{node.op_type}: output renamed to {node.output[0]!r}"
        if choice == 1:
            node.output.append(str(rng.choice(_all_names(model) + ["extra"])))
            return f"{node.op_type}: output {node.output[-1]!r} added"
        del node.output[:]
        return f"{node.op_type}: outputs removed"
    if what == 5 and nodes:                                           # node order, presence, type
        choice = rng.integers(4)
        k = int(rng.integers(len(nodes)))
        if choice == 0:
            del g.node[k]
            return f"node {k} removed"
        if choice == 1:
            j = int(rng.integers(len(nodes)))
            a, b = copy.deepcopy(g.node[k]), copy.deepcopy(g.node[j])
            g.node[k].CopyFrom(b)
            g.node[j].CopyFrom(a)
            return f"nodes {k} and {j} swapped"
        if choice == 2:
            g.node.insert(k, copy.deepcopy(g.node[k]))
            return f"node {k} duplicated"
        g.node[k].op_type = str(rng.choice(OP_TYPES))
        return f"node {k} retyped to {g.node[k].op_type}"
    tensors = _tensors(model)
    if what in (6, 7) and tensors:                                    # tensor dims, dtypes, data
        t = tensors[int(rng.integers(len(tensors)))]
        choice = rng.integers(5)
        if choice == 0 and len(t.dims):
            k = int(rng.integers(len(t.dims)))
            t.dims[k] = int(rng.choice([0, 1, 2, 2 ** 31, 2 ** 62, t.dims[k] + 1, -1]))
            return f"tensor {t.name!r}: dims {list(t.dims)}"
        if choice == 1:
            t.data_type = int(rng.integers(0, 26))
            return f"tensor {t.name!r}: data_type {t.data_type}"
        if choice == 2:
            t.dims.append(int(rng.choice([1, 2, 3])))
            return f"tensor {t.name!r}: extra dim"
        if choice == 3 and t.raw_data:
            t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data)))]
            return f"tensor {t.name!r}: raw data truncated"
        return _evil_int_values(rng, t)
    if what == 8 and tensors:                                         # integer constants (shapes, axes, indices)
        ints = [t for t in tensors if t.data_type in (TensorProto.INT64, TensorProto.INT32)]
        if ints:
            return _evil_int_values(rng, ints[int(rng.integers(len(ints)))])
    if what == 9 and tensors:                                         # float constants
        floats = [t for t in tensors if t.data_type == TensorProto.FLOAT and 0 < math.prod(t.dims) <= 64
                  and t.data_location != TensorProto.EXTERNAL]
        if floats:
            t = floats[int(rng.integers(len(floats)))]
            a = _array(t)
            if a is None or a.size == 0:
                return f"float tensor {t.name!r}: unchanged"
            a.flat[int(rng.integers(a.size))] = rng.choice(EVIL_FLOATS)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            return f"float tensor {t.name!r}: {a.ravel()[:8].tolist()}"
    if what == 10:                                                    # graph inputs
        if len(g.input):
            vi = g.input[int(rng.integers(len(g.input)))]
            choice = rng.integers(4)
            dims = vi.type.tensor_type.shape.dim
            if choice == 0 and len(dims):
                d = dims[int(rng.integers(len(dims)))]
                d.dim_value = int(rng.choice([0, 1, 2, 3, 7, 2 ** 20, 2 ** 40]))
                return f"input {vi.name!r}: a dim set to {d.dim_value}"
            if choice == 1:
                vi.type.tensor_type.elem_type = int(rng.integers(0, 26))
                return f"input {vi.name!r}: elem_type {vi.type.tensor_type.elem_type}"
            if choice == 2:
                dims.add().dim_value = 1
                return f"input {vi.name!r}: extra dim"
            vi.type.tensor_type.ClearField("shape")
            return f"input {vi.name!r}: no shape"
    if what == 11:                                                    # opsets
        choice = rng.integers(3)
        if choice == 0 and len(model.opset_import):
            model.opset_import[0].version = int(rng.choice([0, 1, 5, 7, 10, 12, 18, 21, 22, 23, 99, -1, 2 ** 62]))
            return f"opset {model.opset_import[0].version}"
        if choice == 1:
            model.opset_import.add(domain="", version=13)
            return "opset imported twice"
        del model.opset_import[:]
        return "no opset import"
    if what in (12, 13) and tensors:                                  # external data locations
        t = tensors[int(rng.integers(len(tensors)))]
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        loc = str(rng.choice(LOCATIONS))
        for key, value in (("location", loc), ("offset", rng.choice(OFFSETS)), ("length", rng.choice(OFFSETS))):
            if value is not None:
                t.external_data.add(key=key, value=str(value))
        if rng.random() < 0.5:
            t.ClearField("raw_data")
        return f"tensor {t.name!r}: external {[(e.key, e.value) for e in t.external_data]}"
    if what == 14:                                                    # graph outputs
        if len(g.output) and rng.random() < 0.5:
            g.output[int(rng.integers(len(g.output)))].name = str(rng.choice(_all_names(model) + ["", "zzz"]))
            return "graph output renamed"
        if len(g.output):
            del g.output[: int(rng.integers(1, len(g.output) + 1))]
        return "graph outputs removed"
    # a node of another type with random inputs (an unmapped combination)
    ins = [str(rng.choice(_all_names(model))) for _ in range(rng.integers(0, 4))]
    new = helper.make_node(str(rng.choice(OP_TYPES)), ins, [f"new{rng.integers(1000)}"])
    g.node.insert(int(rng.integers(len(nodes) + 1)), new)
    return f"inserted {new.op_type}({ins})"


def _array(t):
    """A writable copy of ``t``'s value, or None when an earlier mutation made it undecodable."""
    if t.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(t).copy()
    except Exception:   # noqa: BLE001 - whatever onnx raises for a broken tensor
        return None


def _evil_int_values(rng, t) -> str:
    a = _array(t)
    if a is None or a.size == 0 or a.dtype.kind not in "iuf":
        return f"tensor {t.name!r}: unchanged"
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        choices = [v for v in EVIL_INTS if info.min <= v <= info.max]
    else:
        choices = EVIL_FLOATS
    a.flat[int(rng.integers(a.size))] = rng.choice(choices)
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    return f"tensor {t.name!r}: values {a.ravel()[:8].tolist()}"


def _mutate_bytes(rng, data: bytes) -> tuple[bytes, str]:
    data = bytearray(data)
    n = max(len(data), 1)
    what = int(rng.integers(7))
    pos = int(rng.integers(n))
    if what == 0:
        for _ in range(int(rng.integers(1, 9))):
            k = int(rng.integers(n))
            if k < len(data):
                data[k] ^= 1 << int(rng.integers(8))
        return bytes(data), "bit flips"
    if what == 1:
        run = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        data[pos:pos + len(run)] = run
        return bytes(data), f"random bytes at {pos}"
    if what == 2:
        data[pos:pos] = rng.choice([b"\xff" * 10, b"\x80" * 9 + b"\x01", b"\x00", b"\x0a\xff\xff\xff\xff\x0f"])
        return bytes(data), f"insertion at {pos}"
    if what == 3:
        del data[pos:pos + int(rng.integers(1, 64))]
        return bytes(data), f"deletion at {pos}"
    if what == 4:
        return bytes(data[:pos]), f"truncated to {pos}"
    if what == 5:
        k = int(rng.integers(n))
        chunk = data[k:k + int(rng.integers(1, 200))]
        data[pos:pos] = chunk
        return bytes(data), f"duplicated {len(chunk)} bytes at {pos}"
    data[pos:pos + 1] = bytes([int(rng.choice([0x08, 0x0a, 0x12, 0x1a, 0x22, 0x2a, 0x3a, 0x42]))])
    return bytes(data), f"tag byte at {pos}"


def make_case(index: int, seed: int = None) -> tuple[str, dict]:
    """Case ``index``: (description, {file name: content}) for the worker."""
    seed = fuzzing.budget()[2] if seed is None else seed
    rng = np.random.default_rng([seed, index])
    pool = seeds()
    small = [s for s in pool if not s["big"]]
    big = [s for s in pool if s["big"]]
    s = big[int(rng.integers(len(big)))] if big and rng.random() < 0.15 else small[int(rng.integers(len(small)))]
    if rng.random() < 0.35:
        if s["big"]:
            data, how = _mutate_bytes(rng, s["skeleton"])
            data += s["inits"]
        else:
            data, how = _mutate_bytes(rng, s["model"].SerializeToString())
        description = f"{s['name']}: bytes: {how}"
    else:
        model = onnx.ModelProto()
        model.CopyFrom(s["model"])
        hows = [_mutate_proto(rng, model, s) for _ in range(int(rng.integers(1, 4)))]
        data = model.SerializeToString()
        description = f"{s['name']}: " + "; ".join(hows)
    hint = {"inputs": s["hint"], "bytes_too": bool(rng.random() < 0.25)}
    files = {"model.onnx": data, "weights.bin": s["weights"], "link.bin": ("symlink", "../../.env"),
             "hint.json": json.dumps(hint).encode(), "sub/keep": b""}
    return description, files


# ---- the worker's side -------------------------------------------------------------------------------------
MAX_FEED_ELEMENTS = 4_000_000


def _feeds(model, hint: dict):
    feeds = {}
    rng = np.random.default_rng(0)
    for spec in model.input_specs:
        want = hint.get(spec.name)
        if want is not None and len(want) == len(spec.shape):
            shape = [w if d is None else d for d, w in zip(spec.shape, want)]
        else:
            shape = [2 if d is None else d for d in spec.shape]
        if math.prod(shape) > MAX_FEED_ELEMENTS:
            return None
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def run_case(case_dir: str) -> str:
    """Import (by path, sometimes also from bytes) and run one case; the outcome for the report."""
    from refquant import RefquantError, import_onnx
    path = os.path.join(case_dir, "model.onnx")
    with open(os.path.join(case_dir, "hint.json")) as f:
        hint = json.load(f)
    if hint["bytes_too"]:
        with open(path, "rb") as f:
            data = f.read()
        try:
            import_onnx(data)
        except RefquantError:
            pass
    try:
        model = import_onnx(path)
    except RefquantError as exc:
        net = " (safety net)" if "cannot convert (" in str(exc) else ""   # no explicit check named it
        return f"refused {type(exc).__name__}{net}"
    if fuzzing.leaks_decoy(model.params.values()):
        return "FAIL leak: a parameter holds the bytes of a file outside the model's directory"
    feeds = _feeds(model, hint["inputs"])
    if feeds is None:
        return "imported (input too large to run)"
    try:
        model.run(feeds)
    except (RefquantError, MemoryError) as exc:
        return f"run-error {type(exc).__name__}"
    return "ok"


# ---- the test --------------------------------------------------------------------------------------------------
def test_seed_models_import_and_run(tmp_path):
    """The unmutated seeds are valid: the fuzz cases start from graphs the importer takes."""
    from refquant import import_onnx
    for s in seeds():
        case = tmp_path / s["name"]
        case.mkdir()
        onnx.save(s["model"], str(case / "model.onnx"))
        (case / "weights.bin").write_bytes(s["weights"])
        model = import_onnx(case / "model.onnx")
        feeds = _feeds(model, s["hint"])
        assert feeds is not None, s["name"]
        for name, value in model.run(feeds).items():
            assert np.all(np.isfinite(value)), (s["name"], name)


def test_fuzz_import_onnx(tmp_path):
    report = fuzzing.fuzz("onnx", make_case, str(tmp_path), default_cases=150)
    assert report["cases"] > 0
    assert not report["failures"], fuzzing.failure_message(report)
