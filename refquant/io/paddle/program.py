"""The neutral form both Paddle program formats are read into (:class:`PaddleProgram` of :class:`PaddleOp` in the
legacy op vocabulary, :class:`PaddleVar`), where the files are, and the input limits every reader applies."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Optional

from ...errors import ModelFormatError

MAX_PROGRAM_BYTES = 256 * 2 ** 20    # a program file larger than this is refused (real ones are below 10 MiB)
MAX_DESC_BYTES = 1 << 16             # one serialized TensorDesc in the parameter file
MAX_LOD_LEVELS = 16
MAX_RANK = 32
MAX_JSON_DEPTH = 64

#: VarType.Type of a tensor -> NumPy dtype (little-endian).
DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64", 20: "uint8",
          21: "int8", 36: "uint16", 37: "uint32", 38: "uint64"}


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
