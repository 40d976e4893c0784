"""Build refquant: every Cython kernel ``kernels/<name>.pyx`` becomes the extension ``refquant._kernels.<name>``.

The build probes the compiler for OpenMP once; without it the kernels build single-threaded and one warning
says so. The compiler, flags and OpenMP switch are compiled into ``refquant._kernels._openmp_helpers``, which
``refquant info`` reads. Metadata lives in pyproject.toml; docs/build.md explains the rest.
"""
import json
import os
import subprocess
import tempfile

from Cython import __version__ as cython_version
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CompileError, LinkError

# The kernels to compile, each with its own Extension arguments, e.g.
#   "gemm_vnni": {"extra_compile_args": ["-mavx512vnni"], "depends": ["kernels/include/gemm_vnni.h"]}
# kernels/include is always on the include path. Keep refquant._build.KERNELS in step (a test checks).
KERNELS = {
    "_openmp_helpers": {},
    "im2col": {},
    "embedding": {},
    # the single-core peak micro-benchmarks of benchmarks/bench_gemm.py (per-function target attributes)
    "peak": {"depends": ["kernels/include/peak.h", "kernels/include/cpu_features.h"]},
    # INT8 kernels: one float32 multiply and a rint per output, never fused; the ISA paths are compiled with
    # per-function target attributes and chosen at run time, so no -m flag is needed here
    **{name: {"extra_compile_args": ["-ffp-contract=off"],
              "depends": [f"kernels/include/{name}/{h}.h" for h in headers] + ["kernels/include/cpu_features.h"]}
       for name, headers in (
           ("qdirect", ("common", "chain", "generic", "depthwise_avx2", "depthwise_avx512", "smallk", "qdirect")),
           ("qgemm", ("common", "qgemm", "portable", "post", "avx2", "avx512vnni", "avxvnni", "neon", "dotprod",
                      "../qdirect/chain")))},
    # float32 kernels (gelu, softmax, layer norm, the float glue of INT8 graphs): bit-equal to their twin, so no
    # fused multiply-add; no FP traps, so the selects stay vectorizable (the values are unchanged); ISA paths
    # chosen at run time as for qdirect
    "floatops": {"extra_compile_args": ["-ffp-contract=off", "-fno-trapping-math"],
                 "depends": ["kernels/include/floatops/floatops.h", "kernels/include/floatops/glue.h",
                             "kernels/include/floatops/dwconv.h", "kernels/include/floatops/arena.h",
                             "kernels/include/floatops/nchw.h",
                             "kernels/include/qdirect/chain.h", "kernels/include/cpu_features.h"]},
    # float32 conv on packed weights (fused FP32 graph): its sums use fused multiply-adds where the intrinsics say so
    # (within a stated bound of the twin); the epilogue rounds each product and sum, as the ops it replaces
    "fconv": {"extra_compile_args": ["-ffp-contract=off"],
              "depends": ["kernels/include/fconv/fconv.h", "kernels/include/cpu_features.h"]},
    # calibration, bit-exact float code: no fused multiply-add (-march=native would allow it); no FP traps, so
    # branches become vectorizable selects (the values are unchanged)
    **{name: {"extra_compile_args": ["-ffp-contract=off", "-fno-trapping-math"],
              **({"depends": [f"kernels/include/{header}"]} if header else {})}
       for name, header in (("histogram", "histogram_range.h"), ("kl", None), ("search", "search_fill.h"))},
}

# The Cython directives of every kernel, set here and nowhere else.
DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False, "cdivision": True,
              "initializedcheck": False}

OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += omp_get_num_threads() > 0;
    return n > 0 ? 0 : 1;
}
"""


def _env_on(name):
    return os.environ.get(name, "") not in ("", "0")


class BuildKernels(build_ext):
    """build_ext that adds the shared flags and, if the compiler has it, OpenMP; then records what it used."""

    def build_extensions(self):
        openmp = ["-fopenmp"] if self._openmp_works() else []
        flags = ["-O3"] + (["-march=native"] if _env_on("REFQUANT_NATIVE") else []) + openmp
        facts = {"compiler": self._compiler_version(), "flags": flags, "openmp": bool(openmp),
                 "cython": cython_version, "kernels": sorted(KERNELS)}
        for ext in self.extensions:
            ext.extra_compile_args = flags + ext.extra_compile_args
            ext.extra_link_args = openmp + ext.extra_link_args
            if ext.name == "refquant._kernels._openmp_helpers":
                # A C string literal holding JSON: the facts travel inside the binary they describe.
                ext.define_macros.append(("REFQUANT_BUILD_FACTS", json.dumps(json.dumps(facts))))
        if not ONLY:
            self._rebuild_all_if_changed(facts)
        super().build_extensions()

    def _rebuild_all_if_changed(self, facts):
        """Rebuild every kernel when this build directory last built with other flags or kernel options: the
        modules must agree, and the facts compiled into _openmp_helpers must describe every one of them."""
        os.makedirs(self.build_temp, exist_ok=True)
        stamp = os.path.join(self.build_temp, "refquant_build_facts.json")
        text = json.dumps([facts, KERNELS], sort_keys=True)
        last = ""
        if os.path.exists(stamp):
            with open(stamp) as f:
                last = f.read()
        if last != text:
            self.force = True
            with open(stamp, "w") as f:
                f.write(text)

    def _openmp_works(self):
        """Compile and link a tiny OpenMP program with -fopenmp; warn once if that fails or is switched off."""
        if os.environ.get("REFQUANT_OPENMP") == "0":
            self.warn("REFQUANT_OPENMP=0: building the kernels without OpenMP (single-threaded)")
            return False
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "openmp_probe.c")
            with open(source, "w") as f:
                f.write(OPENMP_PROBE)
            try:
                objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
                self.compiler.link_executable(objects, "openmp_probe", output_dir=tmp, extra_postargs=["-fopenmp"])
            except (CompileError, LinkError):
                self.warn(f"the compiler ({self._compiler_version()}) cannot build OpenMP code with -fopenmp: "
                          "building the kernels WITHOUT OpenMP, so they run single-threaded")
                return False
        return True

    def _compiler_version(self):
        """First line of ``<cc> --version``, e.g. 'gcc (Debian 12.2.0-14) 12.2.0'."""
        cc = self.compiler.compiler_so[0]
        try:
            out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
            return out.splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError, IndexError):
            return cc


class BuildPyWithData(build_py):
    """build_py that also ships the embedded data (top-level ``data/``) inside the package as ``refquant/_data``.

    A source checkout or an editable install reads ``data/`` directly; an installed wheel reads the copy.
    """

    DATA = ["*.npz", "zoo/*.rq", "README.md"]

    def run(self):
        super().run()
        import glob
        import shutil
        for pattern in self.DATA:
            for src in glob.glob(os.path.join("data", pattern)):
                dst = os.path.join(self.build_lib, "refquant", "_data", os.path.relpath(src, "data"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)


def _extension(name, options):
    options = dict(options)
    include_dirs = ["kernels/include"] + options.pop("include_dirs", [])
    return Extension(f"refquant._kernels.{name}", [f"kernels/{name}.pyx"], include_dirs=include_dirs, **options)


# REFQUANT_ONLY_KERNELS=a,b builds just those kernels (kernel development: `python setup.py build_ext --inplace`);
# a normal build leaves it unset and builds every kernel.
ONLY = [n for n in os.environ.get("REFQUANT_ONLY_KERNELS", "").split(",") if n]

setup(
    ext_modules=cythonize([_extension(name, options) for name, options in KERNELS.items() if not ONLY or name in ONLY],
                          compiler_directives=DIRECTIVES, include_path=["kernels"], build_dir="build/cython"),
    cmdclass={"build_ext": BuildKernels, "build_py": BuildPyWithData},
)
