"""The one place that picks a kernel: :func:`kernel` returns the compiled Cython module when it is built, else its
NumPy twin (``refquant._kernels.<name>`` or ``refquant.reference.<name>``, the same functions and results).

``REFQUANT_FORCE_REFERENCE=1`` in the environment forces every twin (for testing and debugging), and
:func:`use_reference` does the same from Python, e.g. in a test that compares both paths. Which ISA path a compiled
module takes is :mod:`refquant._paths`' choice.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings

_FORCE_REFERENCE = os.environ.get("REFQUANT_FORCE_REFERENCE", "") not in ("", "0")


_MODULES: dict = {}  # module name -> the imported extension or None, looked up once (this runs once per op call)
_FAILURES: dict = {}  # module name -> why its import failed ("not built: ..." or "import failed: ...")
_WARNED_NOT_BUILT = False


def kernel(name: str, *args):
    """The module that computes ``name``: the compiled ``refquant._kernels.<name>``, or its twin
    ``refquant.reference.<name>`` when that is not built or forced off (see :func:`compiled`). With ``args``, also
    the twin when the compiled module has an ``is_usable_for`` that is false for them (dtypes it does not take)."""
    fast = _compiled(name, 4)
    if fast is not None and (not args or not hasattr(fast, "is_usable_for") or fast.is_usable_for(*args)):
        return fast
    return importlib.import_module(f"refquant.reference.{name.lstrip('_')}")


def compiled(module: str):
    """The compiled extension ``refquant._kernels.<module>``, or ``None`` if it is not built or forced off.

    A module that does not import is a slow path taken silently no more: the first failure warns (a
    :class:`KernelFallbackWarning` naming the module and the import error; one warning for all unbuilt modules, one
    per module that is built but broken), and :func:`import_failure` keeps the reason for ``refquant info``.
    ``REFQUANT_FORCE_REFERENCE`` asks for the twins, so it neither imports nor warns."""
    return _compiled(module, 4)


def _compiled(module: str, stacklevel: int):
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
        _warn_fallback(module, _FAILURES[module], stacklevel)
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


def _warn_fallback(module: str, reason: str, stacklevel: int) -> None:
    global _WARNED_NOT_BUILT
    if reason.startswith("not built"):
        if _WARNED_NOT_BUILT:
            return
        _WARNED_NOT_BUILT = True
    warnings.warn(f"refquant._kernels.{module} is not available, so the NumPy twins run instead ({reason}); "
                  "set REFQUANT_FORCE_REFERENCE=1 to ask for the twins without this warning",
                  KernelFallbackWarning, stacklevel=stacklevel)


@contextlib.contextmanager
def use_reference(flag: bool = True):
    """Within the block, every dispatched call takes the NumPy twin."""
    global _FORCE_REFERENCE
    old, _FORCE_REFERENCE = _FORCE_REFERENCE, flag
    try:
        yield
    finally:
        _FORCE_REFERENCE = old


def im2col(x, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """(N, C, H, W) -> (N, C*kh*kw, OH*OW); see :mod:`refquant.reference.im2col`."""
    return kernel("im2col", x).im2col(x, kh, kw, stride, padding, dilation)


def col2im(cols, x_shape, kh, kw, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """Adjoint of :func:`im2col`: (N, C*kh*kw, OH*OW) -> (N, C, H, W), summing overlaps."""
    return kernel("im2col", cols).col2im(cols, x_shape, kh, kw, stride, padding, dilation)
