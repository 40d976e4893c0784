"""The one place that picks a kernel: the compiled Cython path when it is built, else the NumPy twin.

``REFQUANT_FORCE_REFERENCE=1`` in the environment forces every twin (for testing and debugging), and
:func:`use_reference` does the same from Python, e.g. in a test that compares both paths.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings

from .reference import im2col as _ref_im2col

_FORCE_REFERENCE = os.environ.get("REFQUANT_FORCE_REFERENCE", "") not in ("", "0")


_MODULES: dict = {}  # module name -> the imported extension or None, looked up once (this runs once per op call)
_FAILURES: dict = {}  # module name -> why its import failed ("not built: ..." or "import failed: ...")
_WARNED_NOT_BUILT = False


def compiled(module: str):
    """The compiled extension ``refquant._kernels.<module>``, or ``None`` if it is not built or forced off.

    A module that does not import is a slow path taken silently no more: the first failure warns (a
    :class:`KernelFallbackWarning` naming the module and the import error; one warning for all unbuilt modules, one
    per module that is built but broken), and :func:`import_failure` keeps the reason for ``refquant info``.
    ``REFQUANT_FORCE_REFERENCE`` asks for the twins, so it neither imports nor warns."""
    if _FORCE_REFERENCE:
        return None
    try:
        return _MODULES[module]
    except KeyError:
        pass
    name = f"refquant._kernels.{module}"
    try:
        found = importlib.import_module(name)
    except ImportError as e:
        found = None
        _FAILURES[module] = _why(name, e)
        _warn_fallback(module, _FAILURES[module])
    _MODULES[module] = found
    return found


def import_failure(module: str):
    """Why ``refquant._kernels.<module>`` did not import (None if it did, or was never asked for)."""
    if not _FORCE_REFERENCE:
        compiled(module)
    return _FAILURES.get(module)


class KernelFallbackWarning(RuntimeWarning):
    """A compiled kernel did not import: its NumPy twin runs instead (same results, ~10-300x slower)."""


def _why(name: str, error: ImportError) -> str:
    if isinstance(error, ModuleNotFoundError) and error.name == name:
        where = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        hint = ("a source tree that was not built in place (run `python -m pip install -e .` there, or run "
                "from another directory to import the installed build)"
                if os.path.exists(os.path.join(where, "setup.py")) else "an install without its compiled kernels")
        return f"not built: refquant is imported from {os.path.dirname(os.path.abspath(__file__))}, {hint}"
    return f"import failed: {error}"


def _warn_fallback(module: str, reason: str) -> None:
    global _WARNED_NOT_BUILT
    if reason.startswith("not built"):
        if _WARNED_NOT_BUILT:
            return
        _WARNED_NOT_BUILT = True
    warnings.warn(f"refquant._kernels.{module} is not available, so the NumPy twins run instead ({reason}); "
                  "set REFQUANT_FORCE_REFERENCE=1 to ask for the twins without this warning",
                  KernelFallbackWarning, stacklevel=3)


@contextlib.contextmanager
def use_reference(flag: bool = True):
    """Within the block, every dispatched call takes the NumPy twin."""
    global _FORCE_REFERENCE
    old, _FORCE_REFERENCE = _FORCE_REFERENCE, flag
    try:
        yield
    finally:
        _FORCE_REFERENCE = old


class IsaPaths:
    """The ISA paths a compiled module was built with (``ids``: name -> the C enum, best first) and the ones this
    CPU runs (``supported(id)``): ``available()``, ``current()`` (the best available, or "portable" under
    ``REFQUANT_FORCE_PORTABLE=1``) and ``index(path)`` (the C id of ``path`` or of the current path; ValueError
    for an unknown or unsupported one). Shared by qdirect and floatops; qgemm has its own, richer, choice."""

    def __init__(self, ids: dict, supported):
        self.ids = dict(ids)
        self._available = tuple(name for name, ident in self.ids.items() if supported(ident))
        force = os.environ.get("REFQUANT_FORCE_PORTABLE", "") not in ("", "0")
        self._current = "portable" if force else self._available[0]

    def available(self) -> tuple:
        """The paths this CPU runs, best first."""
        return self._available

    def current(self) -> str:
        """The path calls take without ``path=``: the best available, or "portable" under REFQUANT_FORCE_PORTABLE=1."""
        return self._current

    def index(self, path=None) -> int:
        path = self._current if path is None else path
        if path not in self.ids:
            raise ValueError(f"path must be one of {tuple(self.ids)}, got {path!r}")
        if path not in self._available:
            raise ValueError(f"path {path!r} is not available on this CPU (available: {self._available})")
        return self.ids[path]


def im2col(x, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); see :mod:`refquant.reference.im2col`."""
    fast = compiled("im2col")
    if fast is not None and fast.is_usable_for(x):
        return fast.im2col(x, kh, kw, tuple(stride), tuple(padding), tuple(dilation))
    return _ref_im2col.im2col(x, kh, kw, stride, padding, dilation)


def col2im(cols, x_shape, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """Adjoint of :func:`im2col`: (N, C*kh*kw, OH*OW) -> (N, C, H, W), summing overlaps."""
    fast = compiled("im2col")
    if fast is not None and fast.is_usable_for(cols):
        return fast.col2im(cols, tuple(x_shape), kh, kw, tuple(stride), tuple(padding), tuple(dilation))
    return _ref_im2col.col2im(cols, x_shape, kh, kw, stride, padding, dilation)
