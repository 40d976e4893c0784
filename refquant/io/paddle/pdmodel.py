"""The legacy program: a ``ProgramDesc`` protobuf (``model.pdmodel``), read with the bounds-checked wire decoder
of :mod:`.protowire` into the neutral :class:`~.program.PaddleProgram`."""
from __future__ import annotations

from ...errors import ModelFormatError
from . import protowire
from .program import DTYPES, MAX_PROGRAM_BYTES, MAX_RANK, PaddleOp, PaddleProgram, PaddleVar, _read_file

# ---- framework.proto (Paddle's paddle/fluid/framework/framework.proto), as protowire schemas ----------------
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
_DENSE_TENSOR, _FEED_MINIBATCH, _FETCH_LIST = 7, 9, 10


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
    desc = protowire.decode(data, PROGRAM_DESC, path)
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
