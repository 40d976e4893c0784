"""The one dispatcher (refquant._dispatch.kernel) and the one ISA chooser (refquant._paths.IsaPaths)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from refquant import _build, _dispatch, _paths
from refquant.reference import histogram as histogram_twin

BUILT = _dispatch.compiled("histogram") is not None
needs_built = pytest.mark.skipif(not BUILT, reason="kernels not built (or REFQUANT_FORCE_REFERENCE)")

# compiled-only names: the dispatcher's own hooks, the ISA paths, and helpers the tests call directly
COMPILED_ONLY = {"is_usable_for", "available_paths", "current_path", "kl_scan", "pairwise_sum"}


@needs_built
def test_kernel_returns_the_compiled_module_or_the_twin():
    x = np.ones(8, np.float32)
    assert _dispatch.kernel("histogram", x) is _dispatch.compiled("histogram")
    # is_usable_for decides per input: the kernel takes float32/float64, an int array goes to the twin
    assert _dispatch.kernel("histogram", np.ones(8, np.int32)) is histogram_twin
    with _dispatch.use_reference():
        assert _dispatch.kernel("histogram", x) is histogram_twin
        assert _dispatch.kernel("qgemm") is importlib.import_module("refquant.reference.qgemm")
        helpers = _dispatch.kernel("_openmp_helpers")
        assert helpers is importlib.import_module("refquant.reference.openmp_helpers")
        assert helpers.max_threads() == 1 and helpers.build_facts() == {}


@needs_built
@pytest.mark.parametrize("name", [k for k in _build.KERNELS if k != "peak"])
def test_every_twin_has_the_compiled_functions(name):
    fast = importlib.import_module(f"refquant._kernels.{name}")
    twin = importlib.import_module(f"refquant.reference.{name.lstrip('_')}")
    public = {n for n in dir(fast) if not n.startswith("_") and callable(getattr(fast, n))
              and not isinstance(getattr(fast, n), type)}
    assert sorted(n for n in public - COMPILED_ONLY if not hasattr(twin, n)) == []


def test_isa_paths_choose_once_from_the_environment(monkeypatch):
    supported = {"avx2": True, "sse9": False, "portable": True}
    paths = _paths.IsaPaths("demo", ["sse9", "avx2", "portable"], lambda i: supported[["sse9", "avx2", "portable"][i]],
                            known=("sse9", "avx2", "neon", "portable"))
    monkeypatch.delenv("REFQUANT_FORCE_PORTABLE", raising=False)
    monkeypatch.delenv("REFQUANT_PATH_DEMO", raising=False)
    assert paths.available() == ("avx2", "portable") and paths.current() == "avx2" and paths.forced() is None
    assert paths.index() == 1 and paths.index("portable") == 2
    with pytest.raises(ValueError, match="not available"):
        paths.index("sse9")
    with pytest.raises(ValueError, match="must be one of"):
        paths.index("avx9")
    for value, exc in (("avx9", ValueError), ("neon", RuntimeError), ("sse9", RuntimeError)):
        monkeypatch.setenv("REFQUANT_PATH_DEMO", value)
        paths.reset()
        with pytest.raises(exc, match="REFQUANT_PATH_DEMO"):
            paths.current()
    monkeypatch.setenv("REFQUANT_PATH_DEMO", "portable")
    paths.reset()
    assert paths.current() == "portable" and paths.forced() == "REFQUANT_PATH_DEMO=portable"
    monkeypatch.setenv("REFQUANT_PATH_DEMO", "avx2")
    assert paths.current() == "portable"          # chosen once: a later change needs reset()
    monkeypatch.setenv("REFQUANT_FORCE_PORTABLE", "1")
    paths.reset()
    assert paths.current() == "portable" and paths.forced() == "REFQUANT_FORCE_PORTABLE=1"


@pytest.mark.skipif(_dispatch.compiled("qdirect") is None, reason="qdirect not built (or REFQUANT_FORCE_REFERENCE)")
def test_refquant_info_shows_the_forced_path(monkeypatch):
    paths = _dispatch.compiled("qdirect")._PATHS
    monkeypatch.delenv("REFQUANT_FORCE_PORTABLE", raising=False)
    monkeypatch.setenv("REFQUANT_PATH_QDIRECT", "portable")
    paths.reset()
    try:
        shown = _build.int8_paths()["qdirect"]
        assert shown["current"] == "portable" and shown["forced"] == "REFQUANT_PATH_QDIRECT=portable"
        assert "forced by REFQUANT_PATH_QDIRECT=portable" in _build.format_build_info(_build.build_info())
    finally:
        monkeypatch.undo()
        paths.reset()
