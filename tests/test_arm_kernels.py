"""The C-level INT8 GEMM tests of scripts/test_arm_kernels.sh: every x86 path natively and on emulated
intrinsics, and the aarch64 paths (NEON, dotprod, i8mm) cross-compiled and run under qemu-aarch64, all against
the NumPy twin's expected integers. Skips when the cross toolchain is absent, unless REFQUANT_REQUIRE_ARM is set
(CI installs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user and sets it)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_c_kernels_on_every_path():
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    have_arm = shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")
    if not have_arm and not os.environ.get("REFQUANT_REQUIRE_ARM"):
        pytest.skip("aarch64 cross compiler / qemu-aarch64 not installed")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "test_arm_kernels.sh")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SKIPPED" not in r.stdout
    assert "aarch64" in r.stdout
