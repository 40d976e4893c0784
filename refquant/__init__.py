"""refquant: a reference implementation of neural-network quantization on its own small NN runtime."""
from .errors import GraphError, ModelFormatError, RefquantError, ShapeError, UnsupportedOpError  # noqa: F401
from .graph import Model, Op, TensorSpec  # noqa: F401
from . import ops  # noqa: F401  (registers every op)
from ._build import build_info  # noqa: F401
from .threads import get_num_threads, set_num_threads  # noqa: F401
from .io import export_onnx, import_onnx, import_paddle, load, save  # noqa: F401

from ._version import __version__  # noqa: F401
