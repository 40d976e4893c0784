"""Write the INT8 GEMM test cases for tests/c/test_qgemm_c.c, with the expected outputs from the NumPy twin.

    python tests/c/gen_qgemm_cases.py OUT.bin

File: b"QGCASES1", int32 count, then per case (little endian)
    int32 M, K, N, out_kind (0 s32, 1 f32, 2 u8, 3 s8); float32 out_zero, lo, hi
    uint8  a[M*K]             int8 w[K*N]            int32 offset[N]  (= bias - a_zero * col_sum, wrapped)
    float32 scale[N]          int8 packed[...]       (the twin's pack_b(w), to check the C packing byte for byte)
    out[M*N]                  (the twin's result, 4 or 1 bytes per element)
"""
from __future__ import annotations

import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from refquant.reference import qgemm as twin  # noqa: E402

KINDS = {"s32": 0, "f32": 1, "u8": 2, "s8": 3}
SHAPES = [(1, 1, 1), (1, 4, 16), (2, 3, 2), (3, 5, 17), (7, 13, 33), (5, 1, 7), (2, 4096, 20), (9, 100, 3),
          (17, 64, 16), (64, 128, 48), (13, 300, 65), (9, 7, 1), (1, 768, 130), (37, 57, 129), (8, 32, 64),
          (6, 9, 80), (4, 16, 32), (11, 33, 47), (300, 20, 20), (520, 9, 33), (1, 40, 60), (3, 21, 120)]


def cases(rng):
    for M, K, N in SHAPES:
        a = rng.integers(0, 256, (M, K), dtype=np.uint8)
        w = rng.integers(-128, 128, (K, N), dtype=np.int8)
        for out_dtype in KINDS:
            yield a, w, out_dtype, rng
        # weights whose K pairs fit s16 (|w0| + |w1| <= 128): the AVX2 path's vpmaddubsw kernel
        yield a, rng.integers(-64, 65, (K, N), dtype=np.int8), "u8", rng
    for a_val, w_val in ((255, -128), (255, 127), (255, 64), (255, -64)):      # extremes: no saturation anywhere
        yield np.full((5, 4000), a_val, np.uint8), np.full((4000, 18), w_val, np.int8), "s32", rng


def encode(a, w, out_dtype, rng):
    M, K = a.shape
    N = w.shape[1]
    a_zero = int(rng.choice([0, 128]))
    bias = rng.integers(-40000, 40000, N, dtype=np.int32)
    kw = {"a_zero": a_zero, "col_sum": twin.col_sums(w), "bias": bias, "out_dtype": out_dtype}
    scale = np.zeros(N, np.float32)
    lo, hi, out_zero = 0.0, 0.0, 0.0
    if out_dtype != "s32":
        scale = (rng.random(N) * 300.0 / (np.sqrt(K) * 128 * 74)).astype(np.float32)   # outputs over the range
        scale[::4] = 0.5
        kw["scale"] = scale
        if out_dtype == "f32":
            lo, hi = (-np.inf, np.inf) if rng.random() < 0.5 else (0.0, 3.5)
        else:
            info = np.iinfo(np.uint8 if out_dtype == "u8" else np.int8)
            lo, hi = (float(info.min), float(info.max)) if rng.random() < 0.5 else (float(info.min + 5), 100.0)
            out_zero = 128.0 if out_dtype == "u8" and a_zero else 0.0
            kw["out_zero"] = int(out_zero)
        kw["lo"], kw["hi"] = lo, hi
    packed = twin.pack_b(w)
    out = twin.gemm_u8s8(a, packed, K, N, **kw)
    offset = (bias.astype(np.int64) - a_zero * twin.col_sums(w).astype(np.int64)).astype(np.int32)
    head = struct.pack("<4i3f", M, K, N, KINDS[out_dtype], out_zero, lo, hi)
    return b"".join([head, a.tobytes(), w.tobytes(), offset.tobytes(), scale.tobytes(), packed.tobytes(),
                     np.ascontiguousarray(out).tobytes()])


def main(path):
    rng = np.random.default_rng(2024)
    blobs = [encode(*c) for c in cases(rng)]
    with open(path, "wb") as f:
        f.write(b"QGCASES1" + struct.pack("<i", len(blobs)) + b"".join(blobs))
    print(f"wrote {len(blobs)} cases to {path}")


if __name__ == "__main__":
    main(sys.argv[1])
