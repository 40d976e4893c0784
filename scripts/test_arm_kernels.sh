#!/usr/bin/env bash
# C-level test of the INT8 GEMM kernels (kernels/include/qgemm/) on every path, against the NumPy twin:
#   1. tests/c/gen_qgemm_cases.py writes the cases with the twin's expected outputs;
#   2. on x86-64: tests/c/test_qgemm_c.c natively (the paths this CPU runs, e.g. avx2 + portable), and once more
#      on plain-C intrinsics (tests/c/simd_emul.h) to run the AVX-512 VNNI / AVX-VNNI kernels' logic anywhere;
#   3. aarch64: cross-compiled with aarch64-linux-gnu-gcc and run under qemu-aarch64 twice: -cpu max (i8mm, dotprod,
#      neon, portable) and a baseline build on -cpu cortex-a53 (no dotprod: neon + portable; run-time detection).
# Exit status: non-zero on any mismatch or build failure. Without the cross compiler or qemu-aarch64 the ARM part
# is skipped with a message (exit 0) unless REFQUANT_REQUIRE_ARM is set (CI: apt-get install -y
# gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user).
set -euo pipefail

cd "$(dirname "$0")/.."
CC_NATIVE=${CC:-gcc}
PYTHON=${PYTHON:-python3}
CFLAGS_COMMON=(-O2 -Wall -Wextra -Werror -Ikernels/include)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" tests/c/gen_qgemm_cases.py "$work/cases.bin"

if [[ "$(uname -m)" == "x86_64" ]]; then
    echo "== x86-64 native"
    "$CC_NATIVE" "${CFLAGS_COMMON[@]}" tests/c/test_qgemm_c.c -o "$work/test_native" -lm
    "$work/test_native" "$work/cases.bin"
    echo "== x86-64 paths on emulated intrinsics (tests/c/simd_emul.h)"
    "$CC_NATIVE" "${CFLAGS_COMMON[@]}" -Wno-unused-function -DQGEMM_SIMD_EMULATION='"simd_emul.h"' -Itests/c \
        tests/c/test_qgemm_c.c -o "$work/test_emul" -lm
    "$work/test_emul" "$work/cases.bin"
fi

CROSS=${CROSS_CC:-aarch64-linux-gnu-gcc}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
missing=""
command -v "$CROSS" >/dev/null 2>&1 || missing="$CROSS"
command -v "$QEMU" >/dev/null 2>&1 || missing="${missing:+$missing, }$QEMU"
if [[ -n "$missing" ]]; then
    msg="ARM kernel test SKIPPED: $missing not found (apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
    if [[ -n "${REFQUANT_REQUIRE_ARM:-}" ]]; then
        echo "ERROR: $msg, and REFQUANT_REQUIRE_ARM is set" >&2
        exit 1
    fi
    echo "$msg"
    exit 0
fi

echo "== aarch64 (-march=armv8.2-a+dotprod) under $QEMU -cpu max"
"$CROSS" "${CFLAGS_COMMON[@]}" -march=armv8.2-a+dotprod tests/c/test_qgemm_c.c -o "$work/test_arm" -lm
"$QEMU" -L "$SYSROOT" -cpu max "$work/test_arm" "$work/cases.bin"
echo "== aarch64 baseline build (no -march: per-function targets) under $QEMU -cpu cortex-a53 (no dotprod)"
"$CROSS" "${CFLAGS_COMMON[@]}" tests/c/test_qgemm_c.c -o "$work/test_arm_base" -lm
"$QEMU" -L "$SYSROOT" -cpu cortex-a53 "$work/test_arm_base" "$work/cases.bin"
echo "all qgemm C tests passed"
