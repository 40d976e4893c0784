"""The build: compiled kernels are importable after install, build_info reports them, thread control works.

A missing or broken extension fails here (not skips), unless REFQUANT_FORCE_REFERENCE asks for the twins.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import refquant
from refquant import _build, threads
from refquant._cpu import FEATURES, cpu_features

FORCED = os.environ.get("REFQUANT_FORCE_REFERENCE", "") not in ("", "0")
needs_build = pytest.mark.skipif(FORCED, reason="REFQUANT_FORCE_REFERENCE is set")


@needs_build
@pytest.mark.parametrize("name", _build.KERNELS)
def test_kernel_is_built_and_importable(name):
    importlib.import_module(f"refquant._kernels.{name}")
    assert _build.kernel_status(name) == "compiled"


@needs_build
def test_build_facts_list_every_kernel_setup_py_built():
    facts = importlib.import_module("refquant._kernels._openmp_helpers").build_facts()
    assert facts["kernels"] == sorted(_build.KERNELS)
    assert "-O3" in facts["flags"] and facts["compiler"]


def test_build_info_has_every_key():
    info = refquant.build_info()
    assert set(info) == {"version", "python", "numpy", "compiler", "flags", "openmp", "num_threads", "cpu",
                         "kernels", "int8_paths", "threadpools"}
    assert info["version"] == refquant.__version__
    assert set(info["kernels"]) == set(_build.KERNELS)
    assert info["num_threads"] >= 1
    text = _build.format_build_info(info)
    assert all(name in text for name in _build.KERNELS)


def test_forcing_the_reference_is_reported():
    code = "import refquant, json; i = refquant.build_info(); print(json.dumps([i['kernels'], i['num_threads']]))"
    env = dict(os.environ, REFQUANT_FORCE_REFERENCE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert '"im2col": "reference (forced by REFQUANT_FORCE_REFERENCE)"' in out
    assert out.strip().endswith(", 1]")


def _unbuilt_copy(tmp_path, broken=None):
    """A copy of the refquant package without its compiled kernels (a source tree not built in place); ``broken``:
    one kernel module that exists but fails to import, as an extension with an unresolved symbol does."""
    import shutil
    src = os.path.dirname(refquant.__file__)
    shutil.copytree(src, tmp_path / "refquant", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    if broken:
        (tmp_path / "refquant" / "_kernels" / f"{broken}.py").write_text(
            "raise ImportError('undefined symbol: GOMP_parallel')\n")
    return dict(os.environ, PYTHONPATH=str(tmp_path), REFQUANT_FORCE_REFERENCE="")


_FALLBACK_PROBE = """
import sys, warnings
# an editable install's finder would supply the kernels the copy lacks from the installed source tree
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import refquant
from refquant import _dispatch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert refquant.__file__.startswith({root!r}), refquant.__file__
    found = [_dispatch.compiled(m) for m in ("qgemm", "im2col", "qgemm", "kl")]
    print(found)
    for w in caught:
        print("WARN", w.category.__name__, w.message)
print(refquant.build_info()["kernels"]["qgemm"])
"""


def test_unbuilt_kernels_warn_once_and_info_says_why(tmp_path):
    env = _unbuilt_copy(tmp_path)
    out = subprocess.run([sys.executable, "-c", _FALLBACK_PROBE.format(root=str(tmp_path))], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    lines = out.splitlines()
    assert lines[0] == "[None, None, None, None]"
    warned = [line for line in lines if line.startswith("WARN")]
    assert len(warned) == 1, out  # one warning for every module that is not built
    assert "KernelFallbackWarning refquant._kernels.qgemm" in warned[0] and "not built" in warned[0]
    assert "REFQUANT_FORCE_REFERENCE" in warned[0]
    assert lines[-1].startswith("reference (not built: refquant is imported from ")
    env["REFQUANT_FORCE_REFERENCE"] = "1"  # asking for the twins: no warning
    out = subprocess.run([sys.executable, "-c", _FALLBACK_PROBE.format(root=str(tmp_path))], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "WARN" not in out and out.splitlines()[-1] == "reference (forced by REFQUANT_FORCE_REFERENCE)"


def test_a_broken_kernel_warns_with_its_import_error(tmp_path):
    env = _unbuilt_copy(tmp_path, broken="qgemm")
    out = subprocess.run([sys.executable, "-c", _FALLBACK_PROBE.format(root=str(tmp_path))], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    warned = [line for line in out.splitlines() if line.startswith("WARN")]
    assert len(warned) == 2, out  # the broken module, then one for the unbuilt ones
    assert "refquant._kernels.qgemm" in warned[0] and "undefined symbol: GOMP_parallel" in warned[0]
    assert out.splitlines()[-1] == "reference (import failed: undefined symbol: GOMP_parallel)"


def test_cpu_features():
    cpu = cpu_features()
    assert set(cpu) == {"arch", "model", *FEATURES}
    assert all(isinstance(cpu[f], bool) for f in FEATURES)
    if cpu["avx512f"]:
        assert cpu["avx2"]


def test_set_num_threads_round_trip():
    before = threads.get_num_threads()
    openmp = refquant.build_info()["openmp"] and not FORCED
    try:
        threads.set_num_threads(2)
        assert threads.get_num_threads() == (2 if openmp else 1)
        threads.set_num_threads(1)
        assert threads.get_num_threads() == 1
    finally:
        threads.set_num_threads(before)


@pytest.mark.parametrize("n", [0, -1])
def test_set_num_threads_rejects_non_positive(n):
    with pytest.raises(ValueError):
        threads.set_num_threads(n)


def test_omp_num_threads_is_honoured():
    expected = 3 if refquant.build_info()["openmp"] and not FORCED else 1
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", "import refquant; print(refquant.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert int(out) == expected
