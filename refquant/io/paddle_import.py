"""Import a saved Paddle inference model into a refquant :class:`~refquant.graph.Model`, without Paddle.

``import_paddle(path) -> Model`` reads the two files ``paddle.static.save_inference_model`` / ``paddle.jit.save``
write (``docs/paddle_import.md`` explains them):

* the *program*: a legacy ``ProgramDesc`` protobuf (``model.pdmodel``), read with the bounds-checked wire decoder
  of :mod:`refquant.io._protowire`, or a PIR JSON program (``model.json``, Paddle 3.x), read with :mod:`json`;
* the *parameters* (``model.pdiparams``): every persistable tensor, **sorted by name** (Paddle's ``save_vars``
  and ``save_vars_pir`` both iterate ``sorted(names)``), each as Paddle's ``SerializeToStream`` writes a dense
  tensor: ``uint32`` version 0, ``uint64`` LoD level count (+ the levels), ``uint32`` tensor version 0, ``int32``
  size of a ``TensorDesc`` protobuf (dtype, dims), the desc, then the raw little-endian data.

Both programs become one neutral form (:class:`PaddleOp`: type, input / output slots of variable names, attrs, in
the legacy op vocabulary; PIR ops are translated on reading), which :mod:`refquant.io.paddle_ops` converts to
refquant ops. Quantized programs (PTQ and QAT, both Paddle formats) import in the form
:func:`refquant.quant.quant_post_static` produces, with Paddle's scales as thresholds.

Everything read from the files is checked: sizes against what is left of the file, element counts, dtypes, names,
dims against the program's declared shapes; every problem is a :class:`refquant.ModelFormatError` (or
:class:`refquant.UnsupportedOpError` for an op refquant cannot express) naming the file and the tensor or op.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import ModelFormatError
from ..graph import Model
from . import _protowire

MAX_PROGRAM_BYTES = 256 * 2 ** 20    # a program file larger than this is refused (real ones are below 10 MiB)
MAX_DESC_BYTES = 1 << 16             # one serialized TensorDesc in the parameter file
MAX_LOD_LEVELS = 16
MAX_RANK = 32
MAX_JSON_DEPTH = 64

# ---- framework.proto (Paddle's paddle/fluid/framework/framework.proto), as _protowire schemas ----------------
_COMPLEX = {1: ("r", "double", False), 2: ("i", "double", False)}
_SCALAR = {1: ("type", "enum", False), 2: ("b", "bool", False), 3: ("i", "int64", False), 4: ("r", "double", False),
           5: ("c", _COMPLEX, False)}
_ATTR = {1: ("name", "string", False), 2: ("type", "enum", False), 3: ("i", "int32", False), 4: ("f", "float", False),
         5: ("s", "string", False), 6: ("ints", "int32", True), 7: ("floats", "float", True),
         8: ("strings", "string", True), 10: ("b", "bool", False), 11: ("bools", "bool", True),
         12: ("block_idx", "int32", False), 13: ("l", "int64", False), 14: ("blocks_idx", "int32", True),
         15: ("longs", "int64", True), 16: ("float64s", "double", True), 17: ("var_name", "string", False),
         18: ("vars_name", "string", True), 19: ("float64", "double", False), 20: ("scalar", _SCALAR, False),
         21: ("scalars", _SCALAR, True)}
_SLOT = {1: ("parameter", "string", False), 2: ("arguments", "string", True)}
_OPDESC = {3: ("type", "string", False), 1: ("inputs", _SLOT, True), 2: ("outputs", _SLOT, True),
           4: ("attrs", _ATTR, True)}
TENSOR_DESC = {1: ("data_type", "enum", False), 2: ("dims", "int64", True)}
_DENSE = {1: ("tensor", TENSOR_DESC, False), 2: ("lod_level", "int32", False)}
_VARTYPE = {1: ("type", "enum", False), 3: ("dense_tensor", _DENSE, False)}
_VARDESC = {1: ("name", "string", False), 2: ("type", _VARTYPE, False), 3: ("persistable", "bool", False)}
_BLOCK = {1: ("idx", "int32", False), 2: ("parent_idx", "int32", False), 3: ("vars", _VARDESC, True),
          4: ("ops", _OPDESC, True)}
PROGRAM_DESC = {1: ("blocks", _BLOCK, True), 4: ("version", {1: ("version", "int64", False)}, False)}

#: AttrType enum -> the OpDesc.Attr field holding the value.
_ATTR_FIELD = {0: "i", 1: "f", 2: "s", 3: "ints", 4: "floats", 5: "strings", 6: "b", 7: "bools", 8: "block_idx",
               9: "l", 10: "blocks_idx", 11: "longs", 12: "float64s", 13: "var_name", 14: "vars_name",
               15: "float64", 16: "scalar", 17: "scalars"}
_LIST_FIELDS = ("ints", "floats", "strings", "bools", "blocks_idx", "longs", "float64s", "vars_name", "scalars")
#: VarType.Type of a tensor -> NumPy dtype (little-endian).
DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64", 20: "uint8",
          21: "int8", 36: "uint16", 37: "uint32", 38: "uint64"}
_DENSE_TENSOR, _FEED_MINIBATCH, _FETCH_LIST = 7, 9, 10


@dataclass
class PaddleVar:
    """A variable of the program: dtype name (None when not a plain tensor), dims (-1 unknown), persistable."""
    name: str
    dtype: Optional[str]
    dims: Optional[tuple]
    persistable: bool = False


@dataclass
class PaddleOp:
    """One op in the legacy vocabulary: ``inputs`` / ``outputs`` map slot names to variable names."""
    type: str
    inputs: dict
    outputs: dict
    attrs: dict = field(default_factory=dict)
    index: int = 0

    def ins(self, slot: str) -> list:
        return list(self.inputs.get(slot, ()))

    def outs(self, slot: str) -> list:
        return list(self.outputs.get(slot, ()))


@dataclass
class PaddleProgram:
    """The neutral form of either program format."""
    ops: list
    vars: dict                       # name -> PaddleVar
    feeds: list                      # graph input names, by column
    fetches: list                    # graph output names, by column
    params: list                     # persistable tensor names stored in the parameter file
    constants: dict = field(default_factory=dict)   # name -> ndarray made by the program itself (PIR full ops)
    format: str = "pdmodel"
    where: str = ""


# ------------------------------------------------------------------------------------------------------
# locating the files
# ------------------------------------------------------------------------------------------------------
def _resolve(path, model_filename, params_filename) -> tuple[str, Optional[str]]:
    """``(program file, parameter file or None)`` from the ``import_paddle`` arguments."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        raise TypeError(f"import_paddle: path must be a non-empty str or os.PathLike, got {type(path).__name__}")
    for what, v in (("model_filename", model_filename), ("params_filename", params_filename)):
        if v is not None and (not isinstance(v, (str, os.PathLike)) or not os.fspath(v)):
            raise TypeError(f"import_paddle: {what} must be a non-empty str or None, got {v!r}")
    if os.path.isdir(path):
        if model_filename is not None:
            program = os.path.join(path, os.fspath(model_filename))
        else:
            names = sorted(f for f in os.listdir(path) if not f.startswith("."))
            found = [f for f in names if f.endswith(".pdmodel")] or \
                [f for f in names if f.endswith(".json") and _looks_like_pir(os.path.join(path, f))]
            if not found:
                found = [f for f in ("__model__",) if os.path.isfile(os.path.join(path, f))]
            if len(found) != 1:
                raise ModelFormatError(f"{path}: expected one *.pdmodel or *.json program in the directory, found "
                                       f"{found or 'none'}; pass model_filename=")
            program = os.path.join(path, found[0])
        if params_filename is not None:
            params = os.path.join(path, os.fspath(params_filename))
        else:
            stem = os.path.splitext(program)[0]
            candidates = [stem + ".pdiparams"] + [os.path.join(path, f) for f in ("__params__", "params")]
            params = next((c for c in candidates if os.path.isfile(c)), None)
            if params is None:
                any_params = sorted(f for f in os.listdir(path) if f.endswith(".pdiparams"))
                params = os.path.join(path, any_params[0]) if len(any_params) == 1 else None
        return program, params
    if os.path.isfile(path) and path.endswith((".pdmodel", ".json")) or (os.path.isfile(path) and model_filename
                                                                         is None and params_filename is not None):
        program = path
    else:
        candidates = [path + ext for ext in (".pdmodel", ".json")]
        existing = [c for c in candidates if os.path.isfile(c)]
        if model_filename is not None:
            existing = [os.path.join(os.path.dirname(path), os.fspath(model_filename))]
        if not existing:
            raise FileNotFoundError(f"import_paddle: no Paddle program at {path!r} (tried {', '.join(candidates)})")
        if len(existing) > 1:
            raise ModelFormatError(f"{path}: both {existing[0]} and {existing[1]} exist; name the program file")
        program = existing[0]
    if params_filename is not None:
        params = os.path.join(os.path.dirname(program), os.fspath(params_filename))
    else:
        params = os.path.splitext(program)[0] + ".pdiparams"
        if not os.path.exists(params):
            params = None
    return program, params


def _looks_like_pir(path: str) -> bool:
    """Whether a .json file starts like a PIR program (other JSON files, such as scales, may share the folder)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and (b'"base_code"' in head or b'"program"' in head)


def _regular_file(path: str, what: str) -> os.stat_result:
    """``os.stat(path)`` of an existing regular file (a FIFO or a directory is refused before anything opens it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"import_paddle: {what} {path!r} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{path}: the {what} is not a regular file")
    return st


def _read_file(path: str, limit: int, what: str) -> bytes:
    st = _regular_file(path, what)
    if st.st_size > limit:
        raise ModelFormatError(f"{path}: the {what} has {st.st_size} bytes, more than the {limit} this reader takes")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelFormatError(f"{path}: the {what} grew beyond {limit} bytes while being read")
    return data


# ------------------------------------------------------------------------------------------------------
# the legacy ProgramDesc
# ------------------------------------------------------------------------------------------------------
def _attr_value(a: dict, where: str):
    t = a.get("type")
    key = _ATTR_FIELD.get(t)
    if key is None:
        raise ModelFormatError(f"{where}: attribute {a.get('name')!r} has the unknown type {t}")
    if key in ("scalar", "scalars"):
        vals = a.get(key) if key == "scalars" else [a.get(key) or {}]
        out = []
        for s in vals:
            kind = s.get("type")
            out.append(bool(s.get("b", False)) if kind == 1 else int(s.get("i", 0)) if kind == 2
                       else float(s.get("r", 0.0)) if kind == 3 else None)
            if out[-1] is None:
                raise ModelFormatError(f"{where}: scalar attribute {a.get('name')!r} of type {kind} (complex "
                                       f"scalars are not supported)")
        return out if key == "scalars" else out[0]
    if key in _LIST_FIELDS:
        return list(a.get(key, []))
    default = {"i": 0, "f": 0.0, "s": "", "b": False, "block_idx": 0, "l": 0, "var_name": "", "float64": 0.0}
    return a.get(key, default[key])


def _tensor_var(v: dict, where: str) -> PaddleVar:
    name = v.get("name", "")
    vt = v.get("type") or {}
    if vt.get("type") != _DENSE_TENSOR:
        return PaddleVar(name, None, None, bool(v.get("persistable", False)))
    desc = (vt.get("dense_tensor") or {}).get("tensor") or {}
    dtype = DTYPES.get(desc.get("data_type", 5))
    dims = tuple(desc.get("dims", ()))
    if len(dims) > MAX_RANK or any(d < -1 for d in dims):
        raise ModelFormatError(f"{where}: variable {name!r} declares the dims {list(dims)[:8]}")
    return PaddleVar(name, dtype, dims, bool(v.get("persistable", False)))


def read_pdmodel(path: str) -> PaddleProgram:
    """The legacy ``ProgramDesc`` at ``path`` in the neutral form (block 0; ops in sub-blocks are refused)."""
    data = _read_file(path, MAX_PROGRAM_BYTES, "program")
    desc = _protowire.decode(data, PROGRAM_DESC, path)
    blocks = desc.get("blocks", [])
    if not blocks:
        raise ModelFormatError(f"{path}: not a Paddle program (no blocks; truncated or not a .pdmodel file?)")
    block = blocks[0]
    variables: dict = {}
    for v in block.get("vars", []):
        var = _tensor_var(v, path)
        if not var.name:
            raise ModelFormatError(f"{path}: a variable has no name")
        if var.name in variables:
            raise ModelFormatError(f"{path}: variable {var.name!r} is declared twice")
        variables[var.name] = var
    ops, feeds, fetches = [], {}, {}
    for i, o in enumerate(block.get("ops", [])):
        where = f"{path}: op {i} ({o.get('type', '')!r})"
        if not o.get("type"):
            raise ModelFormatError(f"{path}: op {i} has no type")
        attrs = {}
        for a in o.get("attrs", []):
            attrs[a.get("name", "")] = _attr_value(a, where)
        slots = []
        for side in ("inputs", "outputs"):
            d = {}
            for s in o.get(side, []):
                slot = s.get("parameter", "")
                if slot in d:
                    raise ModelFormatError(f"{where}: {side[:-1]} slot {slot!r} appears twice")
                d[slot] = list(s.get("arguments", []))
            slots.append(d)
        op = PaddleOp(o["type"], slots[0], slots[1], attrs, i)
        if op.type in ("feed", "fetch"):
            col = attrs.get("col", 0)
            names = op.outs("Out") if op.type == "feed" else op.ins("X")
            table = feeds if op.type == "feed" else fetches
            if len(names) != 1 or not isinstance(col, int) or col in table:
                raise ModelFormatError(f"{where}: a {op.type} op needs one variable and a column of its own")
            table[col] = names[0]
            continue
        ops.append(op)
    if not fetches:
        raise ModelFormatError(f"{path}: the program has no fetch ops (not an inference program)")
    params = sorted(name for name, v in variables.items() if v.persistable and v.dtype is not None)
    return PaddleProgram(ops, variables, [feeds[k] for k in sorted(feeds)], [fetches[k] for k in sorted(fetches)],
                         params, format="pdmodel", where=path)


# ------------------------------------------------------------------------------------------------------
# the parameter file
# ------------------------------------------------------------------------------------------------------
def read_pdiparams(path: str, names: list, variables: dict) -> dict:
    """``{name: ndarray}`` of the tensors ``names`` (already in the file's order) from the combined parameter file
    at ``path``; every header and size is checked against the file and the declared dims. The dtype is the file's:
    Paddle's quantization passes store int8 weights without updating the program's declaration (float32)."""
    _regular_file(path, "parameter file")
    out: dict = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0

        def take(n: int, what: str, name: str) -> bytes:
            nonlocal pos
            if n < 0 or n > size - pos:
                raise ModelFormatError(f"{path}: tensor {name!r}: {what} needs {n} bytes, {size - pos} are left "
                                       f"(truncated file, or the parameters do not belong to this program)")
            b = f.read(n)
            if len(b) != n:
                raise ModelFormatError(f"{path}: tensor {name!r}: the file ended while reading {what}")
            pos += n
            return b

        for name in names:
            version, = struct.unpack("<I", take(4, "the version", name))
            if version != 0:
                raise ModelFormatError(f"{path}: tensor {name!r}: unknown tensor version {version}")
            levels, = struct.unpack("<Q", take(8, "the LoD level count", name))
            if levels > MAX_LOD_LEVELS:
                raise ModelFormatError(f"{path}: tensor {name!r}: {levels} LoD levels")
            for _ in range(levels):
                nbytes, = struct.unpack("<Q", take(8, "a LoD level size", name))
                if nbytes % 8:
                    raise ModelFormatError(f"{path}: tensor {name!r}: a LoD level of {nbytes} bytes")
                take(nbytes, "a LoD level", name)
            version, = struct.unpack("<I", take(4, "the tensor version", name))
            if version != 0:
                raise ModelFormatError(f"{path}: tensor {name!r}: unknown tensor desc version {version}")
            desc_size, = struct.unpack("<i", take(4, "the desc size", name))
            if not 0 <= desc_size <= MAX_DESC_BYTES:
                raise ModelFormatError(f"{path}: tensor {name!r}: a TensorDesc of {desc_size} bytes")
            desc = _protowire.decode(take(desc_size, "the TensorDesc", name), TENSOR_DESC, f"{path}: tensor {name!r}")
            code = desc.get("data_type")
            dtype = DTYPES.get(code)
            if dtype is None:
                raise ModelFormatError(f"{path}: tensor {name!r}: unsupported data type {code}")
            dims = list(desc.get("dims", []))
            if len(dims) > MAX_RANK or any(d < 0 for d in dims):
                raise ModelFormatError(f"{path}: tensor {name!r}: invalid dims {dims[:8]}")
            itemsize = np.dtype(dtype).itemsize
            count = math.prod(dims)
            if count * itemsize > size - pos:
                raise ModelFormatError(f"{path}: tensor {name!r}: {dims} {dtype} needs {count * itemsize} bytes, "
                                       f"{size - pos} are left (truncated file?)")
            var = variables.get(name)
            if var is not None and var.dims is not None and var.dims and (
                    len(var.dims) != len(dims) or any(a not in (-1, b) for a, b in zip(var.dims, dims))):
                if not (math.prod(d for d in var.dims) == count and -1 not in var.dims):
                    raise ModelFormatError(f"{path}: tensor {name!r} has the dims {dims}, the program declares "
                                           f"{list(var.dims)}")
            raw = bytearray(take(count * itemsize, "the data", name))
            out[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=count).reshape(dims)
        if pos != size:
            raise ModelFormatError(f"{path}: {size - pos} bytes after the last tensor ({names[-1] if names else '-'}"
                                   f"); the file holds more tensors than the program declares")
    return out


# ------------------------------------------------------------------------------------------------------
# the PIR JSON program
# ------------------------------------------------------------------------------------------------------
#: PIR element types (``0.t_f32`` ...) -> NumPy dtype names.
_PIR_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "i64": "int64", "i32": "int32", "i16": "int16",
               "i8": "int8", "ui8": "uint8", "bool": "bool"}
_PIR_DTYPE_NAMES = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"}
_DTYPE_CODES = {v: k for k, v in DTYPES.items()}

# pd_op name -> (legacy op type, operand slots in order, result slots, {pd_op attr: legacy attr},
#                {operand index: legacy attribute its constant value becomes})
# A slot written "*X" takes a vector value (a builtin.combine); an operand turned attribute stays a tensor slot
# (named after the attribute) when its value is computed at run time.
_X, _OUT = ["X"], ["Out"]
PIR_OPS = {
    "conv2d": ("conv2d", ["Input", "Filter"], ["Output"], {}, {}),
    "depthwise_conv2d": ("depthwise_conv2d", ["Input", "Filter"], ["Output"], {}, {}),
    "conv2d_transpose": ("conv2d_transpose", ["Input", "Filter", "OutputSize"], ["Output"], {}, {2: "output_size"}),
    "depthwise_conv2d_transpose": ("depthwise_conv2d_transpose", ["Input", "Filter", "OutputSize"], ["Output"], {},
                                   {2: "output_size"}),
    "batch_norm": ("batch_norm", ["X", "Mean", "Variance", "Scale", "Bias"],
                   ["Y", "MeanOut", "VarianceOut", "SavedMean", "SavedVariance", "ReserveSpace"],
                   {"data_format": "data_layout"}, {}),
    "layer_norm": ("layer_norm", ["X", "Scale", "Bias"], ["Y", "Mean", "Variance"], {}, {}),
    "relu": ("relu", _X, _OUT, {}, {}), "sigmoid": ("sigmoid", _X, _OUT, {}, {}), "tanh": ("tanh", _X, _OUT, {}, {}),
    "exp": ("exp", _X, _OUT, {}, {}), "sqrt": ("sqrt", _X, _OUT, {}, {}), "log": ("log", _X, _OUT, {}, {}),
    "relu6": ("relu6", _X, _OUT, {}, {}), "hardswish": ("hard_swish", _X, _OUT, {}, {}),
    "hardsigmoid": ("hard_sigmoid", _X, _OUT, {}, {}), "swish": ("swish", _X, _OUT, {}, {}),
    "silu": ("silu", _X, _OUT, {}, {}), "gelu": ("gelu", _X, _OUT, {}, {}),
    "softmax": ("softmax", _X, _OUT, {}, {}), "log_softmax": ("log_softmax", _X, _OUT, {}, {}),
    "leaky_relu": ("leaky_relu", _X, _OUT, {"negative_slope": "alpha"}, {}),
    "prelu": ("prelu", ["X", "Alpha"], _OUT, {}, {}),
    "add": ("elementwise_add", ["X", "Y"], _OUT, {}, {}),
    "subtract": ("elementwise_sub", ["X", "Y"], _OUT, {}, {}),
    "multiply": ("elementwise_mul", ["X", "Y"], _OUT, {}, {}),
    "divide": ("elementwise_div", ["X", "Y"], _OUT, {}, {}),
    "elementwise_pow": ("elementwise_pow", ["X", "Y"], _OUT, {}, {}),
    "maximum": ("elementwise_max", ["X", "Y"], _OUT, {}, {}), "minimum": ("elementwise_min", ["X", "Y"], _OUT, {}, {}),
    "add_n": ("sum", ["*X"], _OUT, {}, {}),
    "scale": ("scale", ["X", "ScaleTensor"], _OUT, {}, {1: "scale"}),
    "matmul": ("matmul_v2", ["X", "Y"], _OUT, {"transpose_x": "trans_x", "transpose_y": "trans_y"}, {}),
    "pool2d": ("pool2d", ["X", "KSize"], _OUT, {}, {1: "ksize"}),
    "flatten": ("flatten_contiguous_range", _X, ["Out", "XShape"], {}, {}),
    "reshape": ("reshape2", ["X", "Shape"], ["Out", "XShape"], {}, {1: "shape"}),
    "stack": ("stack", ["*X"], ["Y"], {}, {}),
    "pad3d": ("pad3d", ["X", "Paddings"], _OUT, {}, {1: "paddings"}),
    "transpose": ("transpose2", _X, _OUT, {"perm": "axis"}, {}),
    "squeeze": ("squeeze2", ["X", "AxesTensor"], ["Out", "XShape"], {}, {1: "axes"}),
    "unsqueeze": ("unsqueeze2", ["X", "AxesTensor"], ["Out", "XShape"], {}, {1: "axes"}),
    "concat": ("concat", ["*X", "AxisTensor"], _OUT, {}, {1: "axis"}),
    "split_with_num": ("split", ["X", "AxisTensor"], ["*Out"], {}, {1: "axis"}),
    "split": ("split", ["X", "SectionsTensorList", "AxisTensor"], ["*Out"], {}, {1: "sections", 2: "axis"}),
    "slice": ("slice", ["Input", "StartsTensor", "EndsTensor"], _OUT, {}, {1: "starts", 2: "ends"}),
    "strided_slice": ("strided_slice", ["Input", "StartsTensor", "EndsTensor", "StridesTensor"], _OUT, {},
                      {1: "starts", 2: "ends", 3: "strides"}),
    "nearest_interp": ("nearest_interp_v2", ["X", "OutSize", "SizeTensor", "Scale"], _OUT,
                       {"data_format": "data_layout"}, {}),
    "bilinear_interp": ("bilinear_interp_v2", ["X", "OutSize", "SizeTensor", "Scale"], _OUT,
                        {"data_format": "data_layout"}, {}),
    "dropout": ("dropout", ["X", "Seed", "P"], ["Out", "Mask"], {"mode": "dropout_implementation"},
                {2: "dropout_prob"}),
    "assign": ("assign", _X, _OUT, {}, {}),
    "cast": ("cast", _X, _OUT, {}, {}),
    "shape": ("shape", ["Input"], _OUT, {}, {}), "shape64": ("shape", ["Input"], _OUT, {}, {}),
    "clip": ("clip", ["X", "Min", "Max"], _OUT, {}, {1: "min", 2: "max"}),
    "mean": ("reduce_mean", ["X", "DimTensor"], _OUT, {"keepdim": "keep_dim"}, {1: "dim"}),
    "sum": ("reduce_sum", ["X", "DimTensor"], _OUT, {"keepdim": "keep_dim"}, {1: "dim"}),
    "embedding": ("lookup_table_v2", ["Ids", "W"], _OUT, {}, {}),
    "quantize_linear": ("quantize_linear", ["X", "Scale", "ZeroPoint", "InAccum", "InState"],
                        ["Y", "OutScale", "OutAccum", "OutState"], {}, {}),
    "dequantize_linear": ("dequantize_linear", ["X", "Scale", "ZeroPoint", "InAccum", "InState"],
                          ["Y", "OutScale", "OutAccum", "OutState"], {}, {}),
}
_PIR_SCALAR_ATTRS = ("axis", "scale", "min", "max", "dropout_prob")   # operand attributes that are one number


def _pir_fail(where: str, why: str):
    return ModelFormatError(f"{where}: malformed PIR program: {why}")


def _pir_attr(v, where: str, depth: int = 0):
    """The Python value of a PIR attribute ``{"#": "0.a_i32", "D": ...}`` (arrays recursively)."""
    if depth > MAX_JSON_DEPTH:
        raise _pir_fail(where, "attributes nested too deeply")
    if not isinstance(v, dict):
        return v
    kind, data = v.get("#", ""), v.get("D")
    if not isinstance(kind, str):
        raise _pir_fail(where, f"attribute kind {kind!r}")
    kind = kind.split(".", 1)[-1]
    if kind in ("a_array", "a_intarray") and isinstance(data, list):
        return [_pir_attr(e, where, depth + 1) for e in data]
    if kind == "a_place":
        return None
    if kind in ("a_f32", "a_f64") and isinstance(data, str):   # NaN / inf are written as strings
        try:
            return float(data)
        except ValueError:
            raise _pir_fail(where, f"float attribute {data[:20]!r}") from None
    return data


def _pir_type(tt, where: str):
    """``(dtype, dims)`` of a dense tensor type, ``("vec", [types])`` of a vector, ``(None, None)`` otherwise."""
    if not isinstance(tt, dict):
        return None, None
    kind = str(tt.get("#", "")).split(".", 1)[-1]
    data = tt.get("D")
    if kind == "t_vec" and isinstance(data, list):
        return "vec", [_pir_type(e, where) for e in data[:100_000]]
    if kind != "t_dtensor" or not isinstance(data, list) or len(data) < 2:
        return None, None
    dt = data[0].get("#", "") if isinstance(data[0], dict) else ""
    dtype = _PIR_DTYPES.get(str(dt).split(".", 1)[-1].removeprefix("t_"))
    dims = data[1]
    if not isinstance(dims, list) or len(dims) > MAX_RANK or any(
            isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in dims):
        raise _pir_fail(where, f"tensor dims {str(dims)[:60]}")
    return dtype, tuple(dims)


def read_pir(path: str) -> PaddleProgram:
    """The PIR JSON program at ``path`` in the neutral form (legacy op names and slots)."""
    data = _read_file(path, MAX_PROGRAM_BYTES, "program")
    try:
        doc = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _pir_fail(path, "nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not a PIR JSON program ({type(exc).__name__}: {str(exc)[:120]})") from None
    try:
        return _PirReader(path).read(doc)
    except RecursionError:
        raise _pir_fail(path, "nested too deeply") from None
    except (KeyError, TypeError, IndexError, AttributeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise _pir_fail(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None


class _PirReader:
    def __init__(self, path: str):
        self.path = path
        self.names: dict = {}        # value id -> variable name (or a list of names for a vector)
        self.vars: dict = {}
        self.constants: dict = {}
        self.params: list = []
        self.ops: list = []
        self.feeds: list = []
        self.fetches: dict = {}
        self.vec_types: dict = {}    # name of a vector result -> [(dtype, dims)] of its elements
        self.generated: set = set()  # names made up from a value id (PIR values have none of their own)

    def read(self, doc) -> PaddleProgram:
        if not isinstance(doc, dict) or not isinstance(doc.get("program"), dict):
            raise _pir_fail(self.path, "no 'program' object (not a PIR JSON file)")
        base = doc.get("base_code")
        if isinstance(base, dict) and base.get("magic") not in (None, "pir"):
            raise _pir_fail(self.path, f"magic {base.get('magic')!r}")
        regions = doc["program"].get("regions")
        if not isinstance(regions, list) or not regions or not isinstance(regions[0], dict):
            raise _pir_fail(self.path, "no regions")
        blocks = regions[0].get("blocks")
        if not isinstance(blocks, list) or not blocks or not isinstance(blocks[0], dict):
            raise _pir_fail(self.path, "no blocks")
        ops = blocks[0].get("ops")
        if not isinstance(ops, list):
            raise _pir_fail(self.path, "the block has no op list")
        for i, op in enumerate(ops):
            if not isinstance(op, dict):
                raise _pir_fail(self.path, f"op {i} is not an object")
            self._op(i, op)
        if not self.fetches:
            raise ModelFormatError(f"{self.path}: the program has no fetch ops (not an inference program)")
        self._name_quantized_values()
        params = sorted(self.params)
        if len(set(params)) != len(params):
            dup = next(n for a, n in zip(params, params[1:]) if a == n)
            raise ModelFormatError(f"{self.path}: parameter {dup!r} is declared twice")
        return PaddleProgram(self.ops, self.vars, self.feeds, [self.fetches[k] for k in sorted(self.fetches)],
                             params, constants=self.constants, format="pir", where=self.path)

    # ---- values ------------------------------------------------------------------------------------
    def _define(self, vid, name: str, tt, where: str) -> None:
        if isinstance(vid, bool) or not isinstance(vid, int) or vid <= 0:
            raise _pir_fail(where, f"value id {vid!r}")
        if vid in self.names:
            raise _pir_fail(where, f"value %{vid} is defined twice")
        if name in self.vars:
            raise ModelFormatError(f"{where}: variable {name!r} is defined twice")
        self.names[vid] = name
        dtype, dims = _pir_type(tt, where)
        if dtype == "vec":
            self.vec_types[name] = dims
            dtype, dims = None, None
        self.vars[name] = PaddleVar(name, dtype, dims)

    def _use(self, operand, where: str):
        vid = operand.get("%") if isinstance(operand, dict) else operand
        if isinstance(vid, bool) or not isinstance(vid, int):
            raise _pir_fail(where, f"operand {str(operand)[:40]}")
        if vid == 0:
            return None             # an absent optional operand
        if vid not in self.names:
            raise ModelFormatError(f"{where}: reads value %{vid}, which no earlier op defines")
        return self.names[vid]

    # ---- ops ---------------------------------------------------------------------------------------
    def _op(self, i: int, op: dict) -> None:
        full = op.get("#")
        if not isinstance(full, str) or not full:
            raise _pir_fail(self.path, f"op {i} has no name")
        dialect, _, opname = full.partition(".")
        if full == "p":
            dialect, opname = "builtin", "parameter"
        dialect = {"0": "builtin", "1": "pd_op"}.get(dialect, dialect)
        where = f"{self.path}: op {i} ({dialect}.{opname})"
        if op.get("regions"):
            from ..errors import UnsupportedOpError
            raise UnsupportedOpError(f"{where}: control flow (nested regions) is not supported")
        results = op.get("O", [])
        results = [results] if isinstance(results, dict) else results
        operands = op.get("I", [])
        if not isinstance(results, list) or not isinstance(operands, list):
            raise _pir_fail(where, "operands / results are not lists")
        if dialect == "builtin":
            return self._builtin(opname, op, operands, results, where)
        if dialect != "pd_op":
            from ..errors import UnsupportedOpError
            raise UnsupportedOpError(f"{where}: ops of the dialect {dialect!r} are not supported")
        raw = op.get("A", [])
        attrs = {}
        for a in raw if isinstance(raw, list) else []:
            if isinstance(a, dict) and isinstance(a.get("N"), str):
                attrs[a["N"]] = _pir_attr(a.get("AT"), where)
        attrs.pop("struct_name", None)
        ins = [self._use(o, where) for o in operands]
        outs = []
        for k, r in enumerate(results):
            if not isinstance(r, dict):
                raise _pir_fail(where, f"result {k}")
            vid = r.get("%")
            if vid == 0 or vid is None:
                outs.append(None)
                continue
            name = f"{opname.rstrip('_')}_{vid}"
            self._define(vid, name, r.get("TT"), where)
            self.generated.add(name)
            outs.append(name)
        self._pd_op(i, opname, attrs, ins, outs, where)

    def _builtin(self, opname, op, operands, results, where) -> None:
        if opname == "parameter":
            a = op.get("A")
            name = next((e for e in reversed(a) if isinstance(e, str)), None) if isinstance(a, list) else None
            if isinstance(a, list) and name is None:
                name = next((_pir_attr(e.get("AT"), where) for e in a if isinstance(e, dict)
                             and e.get("N") == "parameter_name"), None)
            if not isinstance(name, str) or not name or len(results) != 1:
                raise _pir_fail(where, "a parameter op needs a name and one result")
            self._define(results[0].get("%"), name, results[0].get("TT"), where)
            self.vars[name].persistable = True
            self.params.append(name)
        elif opname == "combine":
            names = [self._use(o, where) for o in operands]
            vid = results[0].get("%") if len(results) == 1 and isinstance(results[0], dict) else None
            if vid in self.names or isinstance(vid, bool) or not isinstance(vid, int) or vid <= 0:
                raise _pir_fail(where, f"combine result {vid!r}")
            self.names[vid] = names
        elif opname == "split":
            src = self._use(operands[0], where) if len(operands) == 1 else None
            if not isinstance(src, list) or len(src) != len(results):
                raise _pir_fail(where, "a builtin.split must split one vector into as many results")
            for name, r in zip(src, results):
                vid = r.get("%") if isinstance(r, dict) else None
                if isinstance(vid, bool) or not isinstance(vid, int) or vid <= 0 or vid in self.names:
                    raise _pir_fail(where, f"split result {vid!r}")
                self.names[vid] = name
        elif opname in ("shadow_output", "set_parameter"):
            return
        else:
            from ..errors import UnsupportedOpError
            raise UnsupportedOpError(f"{where}: builtin op {opname!r} is not supported")

    def _const(self, name):
        return None if name is None or isinstance(name, list) else self.constants.get(name)

    def _pd_op(self, i, opname, attrs, ins, outs, where) -> None:
        if opname == "data":
            if len(outs) != 1 or not isinstance(attrs.get("name"), str):
                raise _pir_fail(where, "a data op needs a name and one result")
            self._rename(outs[0], attrs["name"], where)
            self.feeds.append(attrs["name"])
            return
        if opname == "fetch":
            col = attrs.get("col", len(self.fetches))
            if len(ins) != 1 or not isinstance(ins[0], str) or isinstance(col, bool) or not isinstance(col, int) \
                    or col in self.fetches:
                raise _pir_fail(where, "a fetch op needs one tensor and a column of its own")
            self.fetches[col] = ins[0]
            return
        if opname in ("full", "full_int_array"):
            dtype = attrs.get("dtype", "int64" if opname == "full_int_array" else "float32")
            if dtype not in _PIR_DTYPE_NAMES or len(outs) != 1:
                raise _pir_fail(where, f"dtype {dtype!r}")
            if opname == "full":
                shape, value = attrs.get("shape", []), attrs.get("value", 0.0)
                if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0
                                                      for d in shape) or math.prod(shape) > 1 << 24:
                    raise _pir_fail(where, f"full of shape {str(shape)[:40]}")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise _pir_fail(where, f"full value {str(value)[:40]}")
                self.constants[outs[0]] = np.full(shape, value, dtype=dtype)
            else:
                value = attrs.get("value", [])
                if not isinstance(value, list) or len(value) > 1 << 16 or any(
                        isinstance(e, bool) or not isinstance(e, int) for e in value):
                    raise _pir_fail(where, f"full_int_array value {str(value)[:40]}")
                self.constants[outs[0]] = np.array(value, dtype=dtype)
            self.vars[outs[0]].persistable = False
            return
        spec = PIR_OPS.get(opname.rstrip("_") if opname.rstrip("_") in PIR_OPS else opname)
        if spec is None:
            from ..errors import UnsupportedOpError
            raise UnsupportedOpError(f"{where}: PIR op pd_op.{opname} has no refquant equivalent "
                                     f"(docs/paddle_import.md lists the supported ones)")
        legacy, in_slots, out_slots, renames, attr_operands = spec
        if len(ins) > len(in_slots):
            raise _pir_fail(where, f"{len(ins)} operands, at most {len(in_slots)} expected")
        for theirs, ours in renames.items():
            if theirs in attrs:
                attrs[ours] = attrs.pop(theirs)
        inputs = {}
        for k, name in enumerate(ins):
            if name is None:
                continue
            slot = in_slots[k]
            if k in attr_operands:
                value = self._const(name)
                if value is not None:
                    key = attr_operands[k]
                    value = np.asarray(value)
                    if key in _PIR_SCALAR_ATTRS:
                        if value.size != 1:
                            raise _pir_fail(where, f"{key} of {value.size} values")
                        attrs[key] = value.reshape(-1)[0].item()
                    else:
                        attrs[key] = [v.item() for v in value.reshape(-1)]
                    continue
                if isinstance(name, list):
                    raise _pir_fail(where, f"a vector where the tensor {attr_operands[k]!r} belongs")
            if slot.startswith("*"):
                if not isinstance(name, list):
                    raise _pir_fail(where, f"operand {k} must be a vector (builtin.combine)")
                inputs[slot[1:]] = name
            else:
                if isinstance(name, list):
                    raise _pir_fail(where, f"operand {k} is a vector where one tensor belongs")
                inputs[slot] = [name]
                if name in self.constants:          # a constant read as a tensor: it becomes a parameter
                    self.vars[name].persistable = True
        outputs = {}
        if out_slots and out_slots[0].startswith("*"):
            if len(outs) != 1:
                raise _pir_fail(where, "one vector result expected")
            self.vars.pop(outs[0])
            vid = next(k for k, v in self.names.items() if v == outs[0])
            types = self.vec_types.get(outs[0])
            names = [f"{outs[0]}.{j}" for j in range(len(types or []))]
            for j, n in enumerate(names):
                dt, dims = types[j] if types and isinstance(types[j], tuple) else (None, None)
                self.vars[n] = PaddleVar(n, dt, dims)
            self.names[vid] = names
            outputs[out_slots[0][1:]] = names
        else:
            for k, name in enumerate(outs):
                if name is not None and k < len(out_slots):
                    outputs[out_slots[k]] = [name]
        if legacy == "cast":
            dtype = attrs.pop("dtype", None)
            if dtype not in _DTYPE_CODES:
                raise _pir_fail(where, f"cast to {dtype!r}")
            attrs["out_dtype"] = _DTYPE_CODES[dtype]
        if legacy in ("reduce_mean", "reduce_sum") and not attrs.get("dim"):
            attrs["reduce_all"] = True
        if legacy == "dropout" and "dropout_implementation" in attrs:
            attrs["dropout_implementation"] = str(attrs["dropout_implementation"]).replace("downscale_in_infer",
                                                                                           "downgrade_in_infer")
        self.ops.append(PaddleOp(legacy, inputs, outputs, attrs, i))

    def _name_quantized_values(self) -> None:
        """Give a quantized value the name its scale tensor carries (``quantize_linear(hardswish_98,
        "hardswish_0.tmp_0@scale")`` names it ``hardswish_0.tmp_0``), so that thresholds and reports use the legacy
        variable names PaddleSlim wrote; a name already taken or claimed twice is left alone."""
        claims: dict = {}
        for op in self.ops:
            if op.type != "quantize_linear":
                continue
            x, scale = op.ins("X"), op.ins("Scale")
            if len(x) == 1 and len(scale) == 1 and x[0] in self.generated and scale[0].endswith("@scale"):
                claims.setdefault(scale[0][:-len("@scale")], set()).add(x[0])
        rename, ambiguous = {}, set()
        for new, olds in claims.items():
            if len(olds) == 1 and new not in self.vars:
                (old,) = olds
                ambiguous.update([old] if old in rename else [])
                rename[old] = new
        rename = {old: new for old, new in rename.items() if old not in ambiguous}
        for old, new in rename.items():
            self._rename(old, new, self.path)
        for op in self.ops:
            for slots in (op.inputs, op.outputs):
                for slot, names in slots.items():
                    slots[slot] = [rename.get(n, n) for n in names]
        self.feeds = [rename.get(n, n) for n in self.feeds]
        self.fetches = {k: rename.get(n, n) for k, n in self.fetches.items()}

    def _rename(self, old: str, new: str, where: str) -> None:
        if new in self.vars:
            raise ModelFormatError(f"{where}: variable {new!r} is defined twice")
        var = self.vars.pop(old)
        var.name = new
        self.vars[new] = var
        vid = next(k for k, v in self.names.items() if v == old)
        self.names[vid] = new


# ------------------------------------------------------------------------------------------------------
# the public entry
# ------------------------------------------------------------------------------------------------------
def read_program(program_path: str) -> PaddleProgram:
    """Either program format, chosen by the file's first byte (``{`` is PIR JSON)."""
    with open(program_path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"{"):
        return read_pir(program_path)
    return read_pdmodel(program_path)


def import_paddle(path, *, model_filename=None, params_filename=None, name: Optional[str] = None) -> Model:
    """Import a Paddle inference model (legacy ``.pdmodel`` or PIR ``.json`` program, ``.pdiparams`` parameters).

    ``path``: a path prefix (``"dir/model"`` reads ``dir/model.pdmodel`` or ``dir/model.json`` and
    ``dir/model.pdiparams``), a directory holding one program (``model_filename`` / ``params_filename`` name the
    files inside it, as PaddleSlim's ``quant_post_static`` takes them), or the program file itself. ``name``: the
    model's name (default: the program file's stem). Quantized programs import in refquant's quantized form
    (``meta["quantization"]``, :func:`refquant.quant.thresholds`). Raises ModelFormatError for a damaged or
    inconsistent model, UnsupportedOpError for an op refquant cannot express, FileNotFoundError for a missing file.
    """
    from .paddle_ops import convert

    if name is not None and not isinstance(name, str):
        raise TypeError(f"import_paddle: name must be a str or None, got {type(name).__name__}")
    program_path, params_path = _resolve(path, model_filename, params_filename)
    if not os.path.isfile(program_path):
        raise FileNotFoundError(f"import_paddle: program file {program_path!r} does not exist")
    prog = read_program(program_path)
    if prog.params and params_path is None:
        raise FileNotFoundError(f"import_paddle: {program_path} needs {len(prog.params)} parameters "
                                f"({prog.params[0]!r}, ...) but no .pdiparams file was found; pass "
                                f"params_filename=")
    params = read_pdiparams(params_path, prog.params, prog.vars) if prog.params else {}
    if not prog.params and params_path is not None and os.path.getsize(params_path):
        raise ModelFormatError(f"{params_path}: the program declares no parameters but the file is not empty")
    stem = os.path.splitext(os.path.basename(program_path))[0]
    return convert(prog, params, name=name or stem)
