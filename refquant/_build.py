"""``build_info()``: how this install was built and what it runs on, for ``refquant info`` and bug reports.

The compiler, flags and OpenMP switch come from the build itself: setup.py compiles them into
``refquant._kernels._openmp_helpers``. Everything else is read at run time.
"""
from __future__ import annotations

import importlib
import platform

import numpy as np

from . import _dispatch
from ._cpu import FEATURES, cpu_features
from .threads import get_num_threads

# The compiled modules setup.py builds (its KERNELS dict); tests/test_build.py checks the two agree.
KERNELS = ("_openmp_helpers", "embedding", "fconv", "floatops", "histogram", "im2col", "kl", "peak", "qdirect",
           "qgemm", "search")


def build_info() -> dict:
    """Version, Python, NumPy, compiler, flags, OpenMP, thread count, CPU features, each kernel's path and
    (if threadpoolctl is installed) the BLAS / OpenMP thread pools loaded in this process."""
    from ._version import __version__

    facts = _build_facts()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "compiler": facts.get("compiler"),
        "flags": facts.get("flags", []),
        "openmp": bool(facts.get("openmp", False)),
        "num_threads": get_num_threads(),
        "cpu": cpu_features(),
        "kernels": {name: kernel_status(name) for name in KERNELS},
        "int8_paths": int8_paths(),
        "threadpools": _threadpools(),
    }


def kernel_status(name: str) -> str:
    """Which path the dispatcher takes for ``refquant._kernels.<name>``: "compiled" or "reference (<why>)"."""
    if _dispatch._FORCE_REFERENCE:
        return "reference (forced by REFQUANT_FORCE_REFERENCE)"
    failure = _dispatch.import_failure(name)
    return "compiled" if failure is None else f"reference ({failure})"


def int8_paths() -> dict:
    """For each kernel family with ISA paths (qgemm, qdirect, floatops, fconv): the path it takes on this CPU, the paths
    it could take and the environment setting that forced the choice, if any (``REFQUANT_PATH_<FAMILY>``,
    ``REFQUANT_FORCE_PORTABLE``; refquant/_paths.py). A setting this CPU cannot honour shows as the error."""
    out = {}
    for name in ("fconv", "floatops", "qgemm", "qdirect"):
        mod = _dispatch.compiled(name)
        if mod is not None:
            try:
                current = mod.current_path()
            except (ValueError, RuntimeError) as e:
                current = f"error: {e}"
            out[name] = {"current": current, "available": list(mod.available_paths()),
                         "forced": mod._PATHS.forced()}
    return out


def format_build_info(info: dict) -> str:
    """The text ``refquant info`` prints."""
    cpu = info["cpu"]
    features = " ".join(f for f in FEATURES if cpu[f]) or "none of " + " ".join(FEATURES)
    lines = [
        f"refquant {info['version']} (Python {info['python']}, NumPy {info['numpy']})",
        f"compiler:  {info['compiler'] or '(kernels not built)'}",
        f"flags:     {' '.join(info['flags'])}",
        f"openmp:    {'on' if info['openmp'] else 'off'}",
        f"threads:   {info['num_threads']}",
        f"cpu:       {cpu['arch']} {cpu['model']}".rstrip(),
        f"features:  {features}",
        "kernels:",
        *(f"  {name:<18}{status}" + (_paths_text(info["int8_paths"][name]) if name in info.get("int8_paths", {})
                                     else "")
          for name, status in info["kernels"].items()),
    ]
    if info["threadpools"]:
        lines.append("threadpools:")
        lines += [_pool_line(pool) for pool in info["threadpools"]]
    return "\n".join(lines)


def _paths_text(paths: dict) -> str:
    forced = f", forced by {paths['forced']}" if paths.get("forced") else ""
    return f", path {paths['current']} (available: {', '.join(paths['available'])}{forced})"


def _pool_line(pool: dict) -> str:
    name = " ".join(str(v) for v in (pool["internal_api"], pool["version"]) if v)
    arch = f", kernel {pool['architecture']}" if pool.get("architecture") else ""
    return f"  {pool['user_api']:<8}{name} ({pool['prefix']}), {pool['num_threads']} thread(s){arch}"


def _build_facts() -> dict:
    # Imported directly, not through the dispatcher: forcing the twins does not change how the kernels were built.
    try:
        return importlib.import_module("refquant._kernels._openmp_helpers").build_facts()
    except ImportError:
        return {}


def _threadpools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]
