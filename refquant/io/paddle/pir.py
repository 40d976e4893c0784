"""The PIR JSON program (``model.json``, Paddle 3.x), read with :mod:`json` and translated op by op
(:data:`PIR_OPS`) into the neutral :class:`~.program.PaddleProgram` in the legacy op vocabulary."""
from __future__ import annotations

import json
import math

import numpy as np

from ...errors import ModelFormatError, UnsupportedOpError
from .program import DTYPES, MAX_JSON_DEPTH, MAX_PROGRAM_BYTES, MAX_RANK, PaddleOp, PaddleProgram, PaddleVar, _read_file

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
            raise UnsupportedOpError(f"{where}: control flow (nested regions) is not supported")
        results = op.get("O", [])
        results = [results] if isinstance(results, dict) else results
        operands = op.get("I", [])
        if not isinstance(results, list) or not isinstance(operands, list):
            raise _pir_fail(where, "operands / results are not lists")
        if dialect == "builtin":
            return self._builtin(opname, op, operands, results, where)
        if dialect != "pd_op":
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
