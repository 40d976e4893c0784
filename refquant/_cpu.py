"""What the CPU can run, detected at run time so that one build serves every machine.

Linux reads the first processor's flags in /proc/cpuinfo, macOS asks sysctl; a feature that cannot be
determined is reported False, so a caller falls back to the portable path.
"""
from __future__ import annotations

import functools
import platform
import subprocess

FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "neon", "neon_dotprod")

# feature -> the /proc/cpuinfo flags announcing it ("flags" on x86, "Features" on ARM; 32-bit ARM says "neon")
_LINUX_FLAGS = {"avx2": {"avx2"}, "avx512f": {"avx512f"}, "avx512bw": {"avx512bw"},
                "avx512_vnni": {"avx512_vnni"}, "avx_vnni": {"avx_vnni"}, "neon": {"asimd", "neon"},
                "neon_dotprod": {"asimddp"}}
# feature -> the macOS sysctl key that reads 1 when it is present
_MACOS_KEYS = {"avx2": "hw.optional.avx2_0", "avx512f": "hw.optional.avx512f", "avx512bw": "hw.optional.avx512bw",
               "avx512_vnni": "hw.optional.avx512vnni", "neon": "hw.optional.neon",
               "neon_dotprod": "hw.optional.arm.FEAT_DotProd"}


def cpu_features() -> dict:
    """``{"arch", "model", and True/False for each of FEATURES}``."""
    return dict(_detect())


@functools.lru_cache(maxsize=None)
def _detect() -> dict:
    system = platform.system()
    model, present = _linux() if system == "Linux" else _macos() if system == "Darwin" else ("", set())
    return {"arch": platform.machine(), "model": model or platform.processor(),
            **{feature: feature in present for feature in FEATURES}}


def _linux() -> tuple[str, set]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and not model:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif not key and flags:  # the end of the first processor's block
                    break
    except OSError:
        pass
    return model, {feature for feature, names in _LINUX_FLAGS.items() if names & flags}


def _macos() -> tuple[str, set]:
    return _sysctl("machdep.cpu.brand_string"), {f for f, key in _MACOS_KEYS.items() if _sysctl(key) == "1"}


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
