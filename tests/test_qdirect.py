"""The direct INT8 kernels (kernels/qdirect.pyx) against their NumPy twin (refquant/reference/qdirect.py).

Every function is integer arithmetic plus fixed float32 steps, so every path of the compiled module ("avx2",
"portable", whatever the CPU has) must equal the twin bit for bit, with 1 and 2 threads; the twin itself is
checked against naive float64 loops and hand-worked examples.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.reference import floatops as glue_twin
from refquant.reference import qdirect as twin
from refquant.reference import qgemm as gemm_twin

fast = _dispatch.compiled("qdirect")
needs_fast = pytest.mark.skipif(fast is None, reason="qdirect extension not built (or REFQUANT_FORCE_REFERENCE)")
PATHS = list(fast.available_paths()) if fast is not None else []
# the float glue between INT8 ops (add_f32, scalar_chain_f32, channel_mul_f32, global_avg_pool_f32) is floatops'
glue_fast = _dispatch.compiled("floatops")
GLUE_PATHS = list(glue_fast.available_paths()) if glue_fast is not None else []


def same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    if a.tobytes() != b.tobytes():
        bad = np.argwhere(a != b)
        raise AssertionError(f"{len(bad)} elements differ, first at {bad[:3].tolist()}: {a[tuple(bad[0])]} "
                             f"vs {b[tuple(bad[0])]}")


def check_all_paths(name, *args, **kwargs):
    """Every path of the compiled function, with 1 and 2 threads, equals the twin."""
    want = getattr(twin, name)(*args, **kwargs)
    before = threads.get_num_threads()
    try:
        for path in PATHS:
            for n in (1, 2):
                threads.set_num_threads(n)
                same(getattr(fast, name)(*args, path=path, **kwargs), want)
    finally:
        threads.set_num_threads(before)
    return want


def same_outputs(got, want):
    """Two (float or None, u8 or None) pairs of a glue kernel: the same ones present, bit-identical."""
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            same(g, w)


def u8(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ depthwise
DW_CASES = [  # (N, H, W, C), kernel, stride, padding (t, l, b, r), dilation
    ((1, 7, 9, 32), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 9, 8, 32), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((1, 6, 7, 1), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 8, 5, 3), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1)),
    ((2, 7, 11, 17), (3, 3), (1, 1), (2, 0, 1, 3), (1, 1)),
    ((1, 9, 9, 33), (3, 3), (2, 1), (1, 1, 1, 1), (2, 2)),
    ((1, 5, 13, 64), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 6, 6, 72), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((1, 11, 10, 144), (3, 3), (2, 2), (0, 0, 1, 1), (1, 1)),
    ((1, 7, 7, 144), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 12, 12, 20), (5, 5), (2, 2), (2, 1, 2, 2), (2, 1)),
    ((1, 5, 6, 48), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 4, 9, 40), (2, 3), (1, 2), (0, 1, 0, 1), (1, 1)),
    ((3, 3, 3, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 2, 8), (3, 3), (1, 1), (2, 2, 2, 2), (1, 1)),  # padding wider than the image
    ((1, 9, 70, 1), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    # PP-OCR cls's 5x5 kernels on 2-3 pixel high maps: every output row reads a partial range of kernel rows
    ((2, 2, 24, 200), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((2, 3, 20, 88), (5, 5), (2, 1), (2, 2, 2, 2), (1, 1)),
    ((1, 4, 9, 24), (5, 3), (1, 1), (3, 1, 1, 1), (1, 1)),
]


@needs_fast
@pytest.mark.parametrize("case", DW_CASES, ids=[f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}" for c in DW_CASES])
def test_depthwise_equals_twin(case):
    shape, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(DW_CASES.index(case))
    c = shape[3]
    x = u8(rng, shape)
    w = rng.integers(-128, 128, (*kernel, c), dtype=np.int8)
    bias = rng.integers(-20000, 20000, c).astype(np.int32)
    common = dict(stride=stride, padding=padding, dilation=dilation, bias=bias)
    # small scales (the saturating u8 epilogue) and large ones (the float-clamped epilogue)
    for a_zero, scale, out_zero, lo, hi in [(0, rng.uniform(1e-4, 2e-3, c), 0, None, None),
                                            (128, rng.uniform(1e-4, 2e-3, c), 128, None, None),
                                            (7, rng.uniform(0.4, 0.9, c), 3, 10, 200)]:
        scale = scale.astype(np.float32)
        check_all_paths("depthwise_conv_u8s8", x, w, a_zero=a_zero, scale=scale, out_zero=out_zero, lo=lo, hi=hi,
                        **common)
        check_all_paths("depthwise_conv_u8s8", x, w, a_zero=a_zero, scale=scale, out_dtype="f32", **common)
    check_all_paths("depthwise_conv_u8s8", x, w, a_zero=3, scale=np.float32(1e-3), out_dtype="f32", lo=0.0,
                    hi=6.0, **common)


@needs_fast
@pytest.mark.parametrize("c", [1, 3, 32, 33, 64])
def test_depthwise_extremes(c):
    """x all 255 or 0, w all -128 or 127, a_zero 0 / 128 / 255, huge bias and scale: wrap-free int32 and the
    clamps at both ends."""
    x_hi = np.full((1, 5, 6, c), 255, np.uint8)
    x_lo = np.zeros((1, 5, 6, c), np.uint8)
    for x, wv, a_zero in itertools.product((x_hi, x_lo), (-128, 127), (0, 128, 255)):
        w = np.full((3, 3, c), wv, np.int8)
        for scale in (np.float32(1e-5), np.float32(3.0), np.float32(1e6)):
            for bias in (None, np.full(c, 2**31 - 10, np.int32), np.full(c, -2**31, np.int32)):
                kw = dict(padding=(1, 1, 1, 1), a_zero=a_zero, scale=scale, bias=bias)
                check_all_paths("depthwise_conv_u8s8", x, w, **kw)
                check_all_paths("depthwise_conv_u8s8", x, w, out_dtype="f32", **kw)


def test_depthwise_twin_against_naive_loops():
    rng = np.random.default_rng(5)
    x = u8(rng, (1, 5, 4, 3))
    w = rng.integers(-128, 128, (3, 2, 3), dtype=np.int8)
    bias = np.array([5, -7, 1000], np.int32)
    scale = np.array([0.01, 0.02, 0.003], np.float32)
    stride, (top, left, bottom, right), (dh, dw), a_zero = (2, 1), (1, 0, 2, 1), (1, 2), 9
    got = twin.depthwise_conv_u8s8(x, w, stride=stride, padding=(top, left, bottom, right), dilation=(dh, dw),
                                   a_zero=a_zero, bias=bias, scale=scale, out_dtype="f32")
    oh = (5 + top + bottom - dh * 2 - 1) // 2 + 1
    ow = (4 + left + right - dw * 1 - 1) // 1 + 1
    assert got.shape == (1, oh, ow, 3)
    for i, j, c in itertools.product(range(oh), range(ow), range(3)):
        acc = int(bias[c])
        for a, b in itertools.product(range(3), range(2)):
            r, s = i * 2 - top + a * dh, j - left + b * dw
            if 0 <= r < 5 and 0 <= s < 4:
                acc += (int(x[0, r, s, c]) - a_zero) * int(w[a, b, c])
        assert got[0, i, j, c] == np.float32(np.float32(acc) * scale[c])
        q = twin.depthwise_conv_u8s8(x, w, stride=stride, padding=(top, left, bottom, right), dilation=(dh, dw),
                                     a_zero=a_zero, bias=bias, scale=scale, out_zero=100)[0, i, j, c]
        assert q == min(max(round(float(np.float32(acc) * scale[c])) + 100, 0), 255)


def test_depthwise_hand_worked():
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)  # [[1 2 3] [4 5 6] [7 8 9]]
    w = np.ones((3, 3, 1), np.int8)
    out = twin.depthwise_conv_u8s8(x, w, padding=(1, 1, 1, 1), scale=np.float32(1.0), out_dtype="f32")
    assert out[0, :, :, 0].tolist() == [[12, 21, 16], [27, 45, 33], [24, 39, 28]]
    # padding holds the zero point: with a_zero 1 each padded tap adds (1 - 1) * w = 0
    out = twin.depthwise_conv_u8s8(x, w, padding=(1, 1, 1, 1), a_zero=1, scale=np.float32(0.5), out_zero=10)
    assert out[0, 1, 1, 0] == 10 + 18  # (45 - 9) * 0.5
    assert out[0, 0, 0, 0] == 10 + 4   # (12 - 4) * 0.5
    # ties round to even: 2.5 -> 2, 3.5 -> 4
    one = np.array([[[[5]]]], np.uint8)
    w1 = np.ones((1, 1, 1), np.int8)
    assert twin.depthwise_conv_u8s8(one, w1, scale=np.float32(0.5))[0, 0, 0, 0] == 2
    assert twin.depthwise_conv_u8s8(one + 2, w1, scale=np.float32(0.5))[0, 0, 0, 0] == 4


# ------------------------------------------------------------------------------------- quantize / dequantize
LAYOUTS = [(1, 3, 7, 9), (2, 32, 5, 5), (1, 17, 13, 11), (1, 70, 9, 31), (2, 1, 1, 1), (1, 144, 3, 3),
           (1, 2, 9, 40), (2, 4, 17, 19), (1, 3, 64, 70), (1, 1, 30, 31)]  # 1-4 channels: interleaved directly


@needs_fast
@pytest.mark.parametrize("shape", LAYOUTS)
def test_quantize_dequantize_layout(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x.flat[::7] = 0.625   # exact ties after scaling by 4: 2.5 -> 2
    x.flat[::11] = -0.375  # -1.5 -> -2
    if x.size > 3:
        x.flat[1:4] = (np.inf, -np.inf, np.nan)
    for scale_inv, zero, lo, hi in [(40.0, 0, 0, 255), (25.5, 128, 0, 255), (4.0, 0, 0, 255), (60.0, 3, 5, 250)]:
        q = check_all_paths("quantize_nchw", x, scale_inv, zero=zero, lo=lo, hi=hi)
        assert q.shape == (shape[0], shape[2], shape[3], shape[1])
        check_all_paths("dequantize_nhwc", q, 1 / scale_inv, zero=zero)
    rows = x.reshape(-1, shape[-1])
    q = check_all_paths("quantize_rows", rows, 12.5, 128, 0, 255)
    check_all_paths("dequantize_rows", q, 0.08, 128)
    check_all_paths("dequantize_rows", q, rng.uniform(0.01, 1, q.shape[1]).astype(np.float32), 3)


NHWC_SHAPES = [(1, 5, 7, 3), (2, 9, 11, 17), (1, 3, 70, 70), (1, 56, 56, 64), (3, 1, 1, 5), (1, 13, 1, 1)]


@needs_fast
@pytest.mark.parametrize("shape", NHWC_SHAPES)
def test_nhwc_to_nchw_equals_twin(shape):
    """The layout change moves 1- and 4-byte numbers bit for bit (NaN payloads and -0.0 included)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 2 ** 32, shape, dtype=np.uint32)
    for dtype in (np.float32, np.int32, np.uint32, np.uint8, np.int8, np.bool_):
        a = x.view(np.float32).astype(np.float32) if dtype == np.float32 else x.astype(dtype)
        want = check_all_paths("nhwc_to_nchw", np.ascontiguousarray(a))
        same(want, np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    f = x.view(np.float32)
    assert np.array_equal(fast.nhwc_to_nchw(f).view(np.uint32), x.transpose(0, 3, 1, 2))


@needs_fast
@pytest.mark.parametrize("case", [((2, 9, 11, 7), 3, 1, "f32"), ((1, 16, 16, 33), 3, 2, "u8"),
                                  ((1, 30, 30, 64), 3, 1, "f32"), ((1, 5, 5, 70), 5, 1, "u8")])
def test_depthwise_nchw_output(case):
    """out_layout="NCHW" writes the NHWC result's transpose, every path and thread count alike."""
    shape, k, s, out_dtype = case
    rng = np.random.default_rng(shape[3])
    c = shape[3]
    x, w = u8(rng, shape), rng.integers(-128, 128, (k, k, c), dtype=np.int8)
    kw = dict(stride=(s, s), padding=(1, 2, 1, 0), a_zero=128, bias=rng.integers(-999, 999, c).astype(np.int32),
              scale=rng.uniform(1e-3, 1e-2, c).astype(np.float32), out_dtype=out_dtype, out_zero=3)
    got = check_all_paths("depthwise_conv_u8s8", x, w, out_layout="NCHW", **kw)
    same(got, np.ascontiguousarray(twin.depthwise_conv_u8s8(x, w, **kw).transpose(0, 3, 1, 2)))


def test_quantize_twin_hand_worked():
    x = np.array([[[[0.5, 1.5], [2.5, -0.5]], [[300.0, -300.0], [np.nan, 0.26]]]], np.float32)  # (1, 2, 2, 2)
    q = twin.quantize_nchw(x, 1.0, zero=128)
    assert q.shape == (1, 2, 2, 2)
    assert q[0, :, :, 0].tolist() == [[128, 130], [130, 128]]  # 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0
    assert q[0, :, :, 1].tolist() == [[255, 0], [0, 128]]      # clamps, NaN -> lo, 0.26 -> 0
    f = twin.dequantize_nhwc(q, 0.5, zero=128)
    assert f.shape == x.shape and f[0, 0, 0, 1] == 1.0 and f[0, 1, 0, 0] == 63.5


# ------------------------------------------------------------------------------------------- small-K conv
SK_CASES = [  # (N, H, W, C), kernel, stride, padding (t, l, b, r), dilation, output channels
    ((1, 17, 19, 3), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 32),   # a first conv
    ((2, 9, 11, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
    ((1, 13, 7, 1), (5, 5), (2, 1), (2, 1, 2, 2), (1, 1), 24),
    ((1, 10, 10, 2), (3, 3), (1, 1), (0, 2, 1, 0), (2, 2), 40),   # dilated: tap by tap
    ((1, 8, 9, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 33),     # KW*C > 16: tap by tap
    ((1, 5, 70, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),     # rows longer than one gathered chunk
    ((1, 6, 6, 16), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 70),
    ((1, 2, 2, 4), (3, 3), (1, 1), (2, 2, 2, 2), (1, 1), 5),      # padding wider than the image
    ((1, 9, 9, 1), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 64),
]


def _sk_args(rng, c, kernel, n_out):
    k = kernel[0] * kernel[1] * c
    w = rng.integers(-128, 128, (k, n_out), dtype=np.int8)
    return k, w, gemm_twin.pack_b(w), gemm_twin.col_sums(w), rng.integers(-30000, 30000, n_out).astype(np.int32)


@needs_fast
@pytest.mark.parametrize("case", SK_CASES, ids=[f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-n{c[5]}" for c in SK_CASES])
def test_conv_small_k_equals_twin(case):
    shape, kernel, stride, padding, dilation, n_out = case
    rng = np.random.default_rng(SK_CASES.index(case))
    x = u8(rng, shape)
    k, _, packed, col_sum, bias = _sk_args(rng, shape[3], kernel, n_out)
    geo = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    for a_zero, cs, b in [(0, None, None), (128, col_sum, bias), (255, col_sum, bias)]:
        small = rng.uniform(1e-5, 2e-4, n_out).astype(np.float32)
        check_all_paths("conv_small_k_u8s8", x, packed, k, n_out, a_zero=a_zero, col_sum=cs, bias=b, scale=small,
                        out_zero=a_zero // 2, **geo)
        check_all_paths("conv_small_k_u8s8", x, packed, k, n_out, a_zero=a_zero, col_sum=cs, bias=b, scale=small,
                        out_zero=3, lo=10, hi=200, **geo)
        check_all_paths("conv_small_k_u8s8", x, packed, k, n_out, a_zero=a_zero, col_sum=cs, bias=b,
                        scale=rng.uniform(0.5, 9.0, n_out).astype(np.float32), out_dtype="f32", **geo)
        check_all_paths("conv_small_k_u8s8", x, packed, k, n_out, a_zero=a_zero, col_sum=cs, bias=b, scale=small,
                        out_dtype="f32", lo=-0.5, hi=0.25, **geo)


@needs_fast
def test_conv_small_k_extremes_and_chain():
    """x all 255 / 0, w all -128 / 127 with int32 sums that wrap, huge scales; and a chain post-op: the same bits
    as the twin, whose chain is the separate scalar chain."""
    for xv, wv in itertools.product((0, 255), (-128, 127)):
        x = np.full((1, 7, 9, 3), xv, np.uint8)
        w = np.full((27, 20), wv, np.int8)
        packed, col_sum = gemm_twin.pack_b(w), gemm_twin.col_sums(w)
        for scale, bias in itertools.product((1e-6, 3.0, 1e20), (2**31 - 10, -2**31)):
            kw = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), a_zero=255, col_sum=col_sum,
                      bias=np.full(20, bias, np.int32), scale=np.full(20, scale, np.float32))
            check_all_paths("conv_small_k_u8s8", x, packed, 27, 20, out_zero=128, **kw)
            check_all_paths("conv_small_k_u8s8", x, packed, 27, 20, out_dtype="f32", **kw)
    rng = np.random.default_rng(21)
    x = u8(rng, (2, 11, 13, 3))
    k, _, packed, col_sum, bias = _sk_args(rng, 3, (3, 3), 24)
    kw = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), a_zero=128, col_sum=col_sum, bias=bias,
              scale=rng.uniform(1e-4, 1e-3, 24).astype(np.float32), out_dtype="f32")
    f = twin.conv_small_k_u8s8(x, packed, k, 24, **kw)
    for chain, (want_float, quantize) in itertools.product(CHAINS[:4], [(True, None), (False, (20.0, 128, 1, 255)),
                                                                        (True, (7.5, 0, 0, 255))]):
        ch = dict(chain, want_float=want_float, quantize=quantize)
        want = twin.conv_small_k_u8s8(x, packed, k, 24, chain=ch, **kw)
        same_outputs(want, glue_twin.scalar_chain_f32(f, **ch))
        for path, n in itertools.product(PATHS, (1, 2)):
            threads.set_num_threads(n)
            try:
                same_outputs(fast.conv_small_k_u8s8(x, packed, k, 24, chain=ch, path=path, **kw), want)
            finally:
                threads.set_num_threads(1)


def test_conv_small_k_twin_against_naive_loops():
    """The twin (im2col + the GEMM twin) against the conv written out in int64 loops."""
    rng = np.random.default_rng(22)
    x = u8(rng, (1, 5, 6, 3))
    k, w, packed, col_sum, bias = _sk_args(rng, 3, (3, 3), 4)
    scale = rng.uniform(1e-4, 1e-3, 4).astype(np.float32)
    got = twin.conv_small_k_u8s8(x, packed, k, 4, kernel=(3, 3), stride=(2, 1), padding=(1, 0, 0, 1), a_zero=100,
                                 col_sum=col_sum, bias=bias, scale=scale, out_dtype="f32")
    xp = np.pad(x.astype(np.int64) - 100, ((0, 0), (1, 0), (0, 1), (0, 0)))
    want = np.zeros((1, 2, 5, 4), np.float32)
    for oh, ow, n in itertools.product(range(2), range(5), range(4)):
        window = xp[0, 2 * oh:2 * oh + 3, ow:ow + 3, :].reshape(-1)
        want[0, oh, ow, n] = np.float32(int(window @ w[:, n].astype(np.int64)) + int(bias[n])) * scale[n]
    same(got, want)
    # and the GEMM twin on the im2col matrix, u8 and f32
    a = twin.im2col_u8(x, 3, 3, (2, 1), (1, 0, 0, 1), (1, 1), 100)
    for out in ("u8", "f32"):
        kw = dict(a_zero=100, col_sum=col_sum, bias=bias, scale=scale * 40, out_dtype=out)
        same(twin.conv_small_k_u8s8(x, packed, k, 4, kernel=(3, 3), stride=(2, 1), padding=(1, 0, 0, 1), **kw),
             gemm_twin.gemm_u8s8(a, packed, k, 4, **kw).reshape(1, 2, 5, 4))


@needs_fast
def test_conv2d_int8_first_conv_takes_the_direct_kernel():
    """The INT8 conv op on a first conv gives the GEMM path's bits (im2col + gemm_u8s8)."""
    from refquant.ops import OpContext, get_op
    from refquant._kernels import qgemm
    rng = np.random.default_rng(23)
    x = u8(rng, (1, 31, 29, 3))
    k, _, packed, col_sum, bias = _sk_args(rng, 3, (3, 3), 32)
    mult = rng.uniform(1e-4, 1e-3, 32).astype(np.float32)
    attrs = {"strides": [2, 2], "paddings": [1, 1, 1, 1], "dilations": [1, 1], "a_zero": 128, "out_dtype": "u8",
             "out_zero": 0, "lo": 0, "hi": 255, "ksize": [3, 3], "K": k, "N": 32}
    with pytest.warns(RuntimeWarning, match="writeable weights"):  # hand-made weights: not planned, and said so
        got = get_op("conv2d_int8").forward(OpContext(), attrs, x, packed, col_sum, bias, mult)
    a = fast.im2col_u8(x, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 128)
    want = qgemm.gemm_u8s8(a, packed, k, 32, a_zero=128, col_sum=col_sum, bias=bias, scale=mult, out_dtype="u8",
                           lo=0, hi=255).reshape(got.shape)
    same(got, want)


# ------------------------------------------------------------------------------------------------- im2col
IM2COL_CASES = [((1, 6, 7, 3), 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)), ((2, 9, 8, 32), 3, 3, (2, 2), (0, 1, 1, 0), (1, 1)),
                ((1, 10, 9, 17), 5, 5, (1, 2), (2, 2, 2, 2), (1, 1)), ((1, 9, 9, 5), 3, 3, (1, 1), (2, 0, 1, 3), (2, 2)),
                ((1, 5, 5, 64), 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)), ((1, 4, 4, 1), 2, 3, (3, 1), (1, 2, 0, 1), (1, 1))]


@needs_fast
@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_equals_twin(case):
    shape, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(shape[3])
    x = u8(rng, shape)
    cols = check_all_paths("im2col_u8", x, kh, kw, stride, padding, dilation, 128)
    buf = np.empty_like(cols)
    assert fast.im2col_u8(x, kh, kw, stride, padding, dilation, 128, out=buf) is buf
    same(buf, cols)


def test_im2col_twin_hand_worked():
    x = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
    cols = twin.im2col_u8(x, 2, 2, (1, 1), (1, 1, 0, 0), (1, 1), 99)
    assert cols.shape == (9, 4)
    assert cols[0].tolist() == [99, 99, 99, 1] and cols[4].tolist() == [1, 2, 4, 5]
    x2 = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)  # 1x1 stride 1: the NHWC tensor is the matrix
    same(twin.im2col_u8(x2, 1, 1), x2.reshape(4, 3))


def test_im2col_matches_float_conv():
    """A u8 conv computed as im2col rows @ weights equals a float64 direct conv of (x - zero)."""
    rng = np.random.default_rng(2)
    x = u8(rng, (1, 6, 5, 4))
    w = rng.integers(-128, 128, (3, 3, 4, 2))  # (kh, kw, c, oc)
    cols = twin.im2col_u8(x, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 128).astype(np.int64) - 128
    got = (cols @ w.reshape(-1, 2)).reshape(1, 6, 5, 2)
    xp = np.pad(x.astype(np.float64) - 128, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((1, 6, 5, 2))
    for i, j in itertools.product(range(3), range(3)):
        want += xp[:, i:i + 6, j:j + 5, :] @ w[i, j].astype(np.float64)
    assert np.array_equal(got, want)


# ------------------------------------------------------------------------------------ requantize / add / pools
@needs_fast
def test_requantize_and_add_equal_twin():
    rng = np.random.default_rng(11)
    for shape in [(1, 7, 9, 3), (2, 5, 5, 33), (100003,), (3, 1, 1, 64)]:
        a, b = u8(rng, shape), u8(rng, shape)
        a.flat[:3] = (0, 255, 128)
        for m, iz, oz, lo, hi in [(0.5, 128, 0, 0, 255), (1.0, 0, 128, 0, 255), (2.3, 128, 3, 10, 240),
                                  (0.003921568, 0, 0, 0, 255)]:
            check_all_paths("requantize", a, m, in_zero=iz, out_zero=oz, lo=lo, hi=hi)
        for args in [(0.02, 128, 0.03, 0, 1 / 0.05, 0), (0.1, 0, 0.1, 0, 5.0, 128, 0, 255), (1.0, 3, 0.5, 200, 1.0,
                                                                                           7, 20, 230)]:
            check_all_paths("add_u8", a, *args[:2], b, *args[2:])


def test_requantize_add_twin_hand_worked():
    q = np.array([128, 129, 130, 131, 0, 255], np.uint8)
    assert twin.requantize(q, 0.5, in_zero=128, out_zero=128).tolist() == [128, 128, 129, 130, 64, 192]
    a = np.array([10, 20], np.uint8)
    b = np.array([3, 250], np.uint8)
    # (10*0.5 + 3*0.5) * 1 = 6.5 -> 6 (ties to even); (10 + 125) -> 135
    assert twin.add_u8(a, 0.5, 0, b, 0.5, 0, 1.0, 0).tolist() == [6, 135]


@needs_fast
def test_fused_float_add_equals_twin():
    rng = np.random.default_rng(12)
    before = threads.get_num_threads()
    try:
        for shape in [(1, 7, 9, 3), (2, 14, 14, 256), (100003,), (1, 1, 1, 1)]:
            a = rng.standard_normal(shape).astype(np.float32)
            b = rng.standard_normal(shape).astype(np.float32)
            a.flat[:4] = (np.nan, np.inf, -np.inf, -0.0)
            for relu, want_float, quantize in [(True, True, (20.0, 0, 0, 255)), (False, True, None),
                                               (False, False, (12.7, 128, 1, 255)), (True, True, None)]:
                ty, tq = glue_twin.add_f32(a, b, relu=relu, want_float=want_float, quantize=quantize)
                for path, n in itertools.product(GLUE_PATHS, (1, 2)):
                    threads.set_num_threads(n)
                    y, q = glue_fast.add_f32(a, b, relu=relu, want_float=want_float, quantize=quantize, path=path)
                    assert (y is None) == (ty is None) and (q is None) == (tq is None)
                    if y is not None:
                        same(y, ty)
                    if q is not None:
                        same(q, tq)
    finally:
        threads.set_num_threads(before)


CHAINS = [dict(hard_swish=(3.0, 6.0, 6.0)), dict(pre=(0.75, -0.5)), dict(post=(1.25, 0.125)),
          dict(pre=(0.9, 0.1), hard_swish=(3.0, 6.0, 6.0), post=(1.1, -0.2)), dict(pre=(2.0, -0.0))]


@needs_fast
def test_fused_scalar_chain_equals_twin():
    rng = np.random.default_rng(13)
    before = threads.get_num_threads()
    try:
        for shape in [(1, 7, 9, 3), (2, 12, 48, 16), (100003,)]:
            x = (4 * rng.standard_normal(shape)).astype(np.float32)
            x.flat[:6] = (np.nan, np.inf, -np.inf, -3.0, 3.0, -0.0)
            for chain, (want_float, quantize) in itertools.product(
                    CHAINS, [(True, None), (True, (20.0, 128, 1, 255)), (False, (7.5, 0, 0, 255))]):
                ty, tq = glue_twin.scalar_chain_f32(x, want_float=want_float, quantize=quantize, **chain)
                for path, n in itertools.product(GLUE_PATHS, (1, 2)):
                    threads.set_num_threads(n)
                    y, q = glue_fast.scalar_chain_f32(x, want_float=want_float, quantize=quantize, path=path, **chain)
                    if ty is not None:
                        same(y, ty)
                    if tq is not None:
                        same(q, tq)
    finally:
        threads.set_num_threads(before)


@needs_fast
def test_channel_mul_and_float_global_pool_equal_twin():
    rng = np.random.default_rng(14)
    for shape in [(1, 3, 5, 7), (3, 12, 40, 8), (2, 2, 96, 200), (1, 1, 1, 1030)]:
        x = (3 * rng.standard_normal(shape)).astype(np.float32)
        x.flat[:4] = (np.nan, np.inf, -np.inf, -0.0)
        s = rng.random((shape[0], shape[3])).astype(np.float32)
        for want_float, quantize in [(True, None), (False, (20.0, 128, 1, 255)), (True, (7.0, 0, 0, 255))]:
            ty, tq = glue_twin.channel_mul_f32(x, s, want_float=want_float, quantize=quantize)
            for path, n in itertools.product(GLUE_PATHS, (1, 2)):
                threads.set_num_threads(n)
                same_outputs(glue_fast.channel_mul_f32(x, s, want_float=want_float, quantize=quantize, path=path),
                             (ty, tq))
        want = glue_twin.global_avg_pool_f32(np.abs(x))
        for path in GLUE_PATHS:
            same(glue_fast.global_avg_pool_f32(np.abs(x), path=path), want)


def test_channel_mul_and_float_global_pool_twins_hand_worked():
    x = np.array([1.0, -2.0, 3.0, 0.5, 0.25, -1.0], np.float32).reshape(1, 1, 3, 2)   # 3 pixels, 2 channels
    y, q = glue_twin.channel_mul_f32(x, np.array([[2.0, 0.5]], np.float32), quantize=(4.0, 128, 1, 255))
    assert y.reshape(-1).tolist() == [2.0, -1.0, 6.0, 0.25, 0.5, -0.5]
    assert q.reshape(-1).tolist() == [136, 124, 152, 129, 130, 126]
    # channel 0: (1 + 3 + 0.25) / 3, channel 1: (-2 + 0.5 - 1) / 3, summed in float64, rounded to float32 once
    gap = glue_twin.global_avg_pool_f32(x)
    assert gap.tolist() == [[np.float32(4.25 / 3), np.float32(-2.5 / 3)]]
    # float64 sums: 2^24 + 1 + 1 (not representable in float32 on the way) averages exactly
    big = np.array([2.0 ** 24, 1.0, 1.0], np.float32).reshape(1, 3, 1, 1)
    assert glue_twin.global_avg_pool_f32(big)[0, 0] == np.float32((2.0 ** 24 + 2) / 3)
    with pytest.raises(ValueError, match="must be"):
        glue_twin.channel_mul_f32(x, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        glue_twin.global_avg_pool_f32(np.zeros((1, 0, 2, 2), np.float32))


@needs_fast
def test_depthwise_chain_post_op_equals_twin():
    # a depthwise conv whose float output only feeds a scalar chain runs the chain on each output row: the same
    # bits as the two ops one after the other
    rng = np.random.default_rng(15)
    before = threads.get_num_threads()
    try:
        for shape, k, stride, pad in [((1, 3, 5, 7), 3, (1, 1), (1, 1, 1, 1)),
                                      ((3, 6, 40, 32), 5, (2, 1), (2, 2, 2, 2)),
                                      ((2, 3, 24, 200), 5, (1, 1), (2, 2, 2, 2))]:
            x = u8(rng, shape)
            w = rng.integers(-127, 128, (k, k, shape[3])).astype(np.int8)
            kw = dict(stride=stride, padding=pad, a_zero=128, bias=rng.integers(-500, 500, shape[3]).astype(np.int32),
                      scale=(rng.random(shape[3]) * 0.01).astype(np.float32), out_dtype="f32")
            for chain, (want_float, quantize) in itertools.product(
                    CHAINS[:4], [(True, None), (False, (20.0, 128, 1, 255)), (True, (7.5, 0, 0, 255))]):
                ch = dict(chain, want_float=want_float, quantize=quantize)
                ty, tq = twin.depthwise_conv_u8s8(x, w, chain=ch, **kw)
                f = twin.depthwise_conv_u8s8(x, w, **kw)
                sy, sq = glue_twin.scalar_chain_f32(f, **ch)
                for got, want in ((ty, sy), (tq, sq)):
                    assert (got is None) == (want is None) and (want is None or np.array_equal(got, want))
                for path, n in itertools.product(PATHS, (1, 2)):
                    threads.set_num_threads(n)
                    same_outputs(fast.depthwise_conv_u8s8(x, w, chain=ch, path=path, **kw), (ty, tq))
    finally:
        threads.set_num_threads(before)


def test_fused_scalar_chain_twin_hand_worked():
    x = np.array([-4.0, -1.5, 0.0, 1.5, 4.0, -0.0], np.float32)
    # hard swish: u = clip(x + 3, 0, 6) = [0, 1.5, 3, 4.5, 6, 3]; (x * u) / 6 = [0, -0.375, 0, 1.125, 4, -0]
    y, q = glue_twin.scalar_chain_f32(x, hard_swish=(3.0, 6.0, 6.0), quantize=(2.0, 128, 1, 255))
    assert y.tolist() == [0.0, -0.375, 0.0, 1.125, 4.0, 0.0] and q.tolist() == [128, 127, 128, 130, 136, 128]
    # the identities change no bit (-0.0 stays -0.0); an affine block 0.5 x + 1 around it
    y, _ = glue_twin.scalar_chain_f32(x)
    assert y.tobytes() == x.tobytes()
    y, _ = glue_twin.scalar_chain_f32(x, pre=(0.5, 1.0), hard_swish=(3.0, 6.0, 6.0), post=(2.0, -1.0))
    t = x * np.float32(0.5) + np.float32(1.0)
    want = ((t * np.clip(t + np.float32(3), 0, 6)) / np.float32(6)) * np.float32(2) - np.float32(1)
    assert np.array_equal(y, want)
    with pytest.raises(ValueError, match="scale"):
        glue_twin.scalar_chain_f32(x, hard_swish=(3.0, 6.0, 0.0))


def test_fused_float_add_twin_hand_worked():
    a = np.array([1.0, -3.0, 0.25, np.nan], np.float32)
    b = np.array([0.5, 1.0, 0.0, 1.0], np.float32)
    # relu(a + b) = [1.5, 0, 0.25, 0 (NaN -> 0)]; * 2 = [3, 0, 0.5 -> 0 (ties to even), 0]
    y, q = glue_twin.add_f32(a, b, relu=True, quantize=(2.0, 0, 0, 255))
    assert y.tolist() == [1.5, 0.0, 0.25, 0.0] and q.tolist() == [3, 0, 0, 0]
    _, q = glue_twin.add_f32(a, b, want_float=False, quantize=(2.0, 128, 1, 255))
    assert q.tolist() == [131, 124, 128, 1]              # NaN -> lo
    with pytest.raises(ValueError, match="same shape"):
        glue_twin.add_f32(a, b[:3])
    with pytest.raises(ValueError, match="nothing to return"):
        glue_twin.add_f32(a, b, want_float=False)


POOL_CASES = [((1, 7, 9, 3), (3, 3), (2, 2), (1, 1, 1, 1)), ((2, 8, 8, 32), (2, 2), (2, 2), (0, 0, 0, 0)),
              ((1, 9, 7, 17), (3, 2), (1, 2), (2, 1, 0, 1)), ((1, 5, 5, 64), (5, 5), (1, 1), (2, 2, 2, 2)),
              ((1, 4, 6, 1), (3, 3), (3, 3), (0, 1, 2, 2))]


@needs_fast
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools_equal_twin(case):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(shape[3] + kernel[0])
    x = u8(rng, shape)
    check_all_paths("max_pool_u8", x, kernel, stride, padding)
    for exclusive, zero in [(True, 0), (False, 0), (True, 128), (False, 128)]:
        check_all_paths("avg_pool_u8", x, kernel, stride, padding, exclusive, zero)
    for scale, zero in [(1.0, 0), (0.0235, 128), (3.7, 255)]:
        check_all_paths("global_avg_pool_u8", x, scale, zero)


def test_pools_twin_hand_worked():
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], np.uint8).reshape(1, 3, 3, 1)
    assert twin.max_pool_u8(x, (2, 2), (1, 1), (1, 1, 0, 0))[0, :, :, 0].tolist() == [[1, 2, 3], [4, 5, 6],
                                                                                      [7, 8, 9]]
    avg = twin.avg_pool_u8(x, (2, 2), (1, 1), (1, 1, 0, 0), exclusive=True)
    assert avg[0, :, :, 0].tolist() == [[1, 2, 2], [2, 3, 4], [6, 6, 7]]  # 1.5 -> 2, 2.5 -> 2, 6.5 -> 6
    avg = twin.avg_pool_u8(x, (2, 2), (1, 1), (1, 1, 0, 0), exclusive=False)
    assert avg[0, 0, :, 0].tolist() == [0, 1, 1]  # 1/4 -> 0, 3/4 -> 1, 5/4 -> 1
    gap = twin.global_avg_pool_u8(x, 0.5, 5)
    assert gap.dtype == np.float32 and gap.tolist() == [[0.0]]  # mean 5, minus zero 5
    assert twin.global_avg_pool_u8(x, 0.5, 0).tolist() == [[2.5]]


@needs_fast
def test_large_enough_to_split_across_threads():
    """Inputs above the per-thread work minimum, so the 2-thread runs really split the rows / chunks."""
    rng = np.random.default_rng(3)
    x = u8(rng, (2, 41, 43, 40))
    w = rng.integers(-128, 128, (3, 3, 40), dtype=np.int8)
    scale = rng.uniform(1e-4, 2e-3, 40).astype(np.float32)
    for stride in (1, 2):
        check_all_paths("depthwise_conv_u8s8", x, w, stride=(stride, stride), padding=(1, 1, 1, 1), a_zero=128,
                        scale=scale, out_zero=128)
    check_all_paths("depthwise_conv_u8s8", x, w, padding=(1, 1, 1, 1), scale=scale, out_dtype="f32")
    k, _, packed, col_sum, bias = _sk_args(rng, 3, (3, 3), 32)
    check_all_paths("conv_small_k_u8s8", u8(rng, (2, 41, 43, 3)), packed, k, 32, kernel=(3, 3), stride=(2, 2),
                    padding=(1, 1, 1, 1), a_zero=128, col_sum=col_sum, bias=bias, scale=scale[:32])
    f = rng.standard_normal((2, 40, 41, 43)).astype(np.float32)
    check_all_paths("quantize_nchw", f, 30.0, zero=128)
    check_all_paths("dequantize_nhwc", x, 0.03, zero=128)
    check_all_paths("nhwc_to_nchw", f.transpose(0, 2, 3, 1).copy())
    check_all_paths("depthwise_conv_u8s8", x, w, padding=(1, 1, 1, 1), scale=scale, out_dtype="f32",
                    out_layout="NCHW")
    check_all_paths("quantize_rows", f.reshape(-1, 43), 30.0, 128)
    check_all_paths("dequantize_rows", x.reshape(-1, 40), scale, 128)
    check_all_paths("im2col_u8", x, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 128)
    check_all_paths("requantize", x, 0.7, in_zero=128, out_zero=0)
    check_all_paths("add_u8", x, 0.02, 128, x[::-1].copy(), 0.03, 128, 25.0, 128)
    check_all_paths("max_pool_u8", x, (3, 3), (1, 1), (1, 1, 1, 1))
    check_all_paths("avg_pool_u8", x, (3, 3), (1, 1), (1, 1, 1, 1), True, 128)
    check_all_paths("global_avg_pool_u8", u8(rng, (4, 130, 130, 8)), 0.1, 128)


# ------------------------------------------------------------------------------------------- paths and input
@needs_fast
def test_paths():
    assert "portable" in PATHS and fast.current_path() in PATHS
    with pytest.raises(ValueError, match="path"):
        fast.requantize(np.zeros(3, np.uint8), 1.0, in_zero=0, out_zero=0, path="avx9000")


@needs_fast
def test_forced_portable_in_a_subprocess_gives_the_same_bits():
    code = """
import numpy as np, sys
from refquant._kernels import qdirect as q
assert q.current_path() == "portable", q.current_path()
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (1, 13, 15, 35), dtype=np.uint8)
w = rng.integers(-128, 128, (3, 3, 35), dtype=np.int8)
sc = rng.uniform(1e-4, 2e-3, 35).astype(np.float32)
out = [q.depthwise_conv_u8s8(x, w, padding=(1, 1, 1, 1), a_zero=128, scale=sc, out_zero=128),
       q.depthwise_conv_u8s8(x, w, stride=(2, 2), padding=(1, 1, 1, 1), scale=sc, out_dtype="f32"),
       q.quantize_nchw(rng.standard_normal((1, 35, 9, 7)).astype(np.float32), 30.0, zero=128),
       q.requantize(x, 0.7, in_zero=128, out_zero=0), q.avg_pool_u8(x, (3, 3), (2, 2), (1, 1, 1, 1))]
sys.stdout.buffer.write(b"".join(o.tobytes() for o in out))
"""
    env = dict(os.environ, REFQUANT_FORCE_PORTABLE="1")
    forced = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
    env["REFQUANT_FORCE_PORTABLE"] = "0"
    best = subprocess.run([sys.executable, "-c", code.replace('== "portable"', '!= None')], env=env,
                          capture_output=True, check=True).stdout
    assert len(forced) > 0 and forced == best


IMPLS = [pytest.param(twin, id="twin"), pytest.param(fast, id="fast", marks=needs_fast)]


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_inputs(impl):
    x = np.zeros((1, 4, 4, 8), np.uint8)
    w = np.zeros((3, 3, 8), np.int8)
    dw = impl.depthwise_conv_u8s8
    with pytest.raises(TypeError):
        dw(x.astype(np.int8), w, scale=1.0)
    with pytest.raises(TypeError):
        dw(x, w.astype(np.uint8), scale=1.0)
    with pytest.raises(TypeError):
        dw(list(x), w, scale=1.0)
    with pytest.raises(ValueError, match="channels"):
        dw(x, np.zeros((3, 3, 7), np.int8), scale=1.0)
    with pytest.raises(ValueError, match="dimensions"):
        dw(x[0], w, scale=1.0)
    with pytest.raises(ValueError, match="contiguous"):
        dw(x[:, :, ::2], w, scale=1.0)
    with pytest.raises(ValueError, match="scale"):
        dw(x, w, scale=np.full(8, np.nan, np.float32))
    with pytest.raises(ValueError, match="scale"):
        dw(x, w, scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="fit"):
        dw(np.zeros((1, 1, 1, 8), np.uint8), w, scale=1.0)
    with pytest.raises(ValueError):
        dw(x, w, scale=1.0, stride=(0, 1))
    with pytest.raises(ValueError):
        dw(x, w, scale=1.0, padding=(-1, 0, 0, 0))
    with pytest.raises(ValueError):
        dw(x, w, scale=1.0, a_zero=256)
    with pytest.raises(ValueError):
        dw(x, w, scale=1.0, lo=200, hi=100)
    with pytest.raises(ValueError, match="out_dtype"):
        dw(x, w, scale=1.0, out_dtype="s8")
    with pytest.raises(TypeError):
        dw(x, w, scale=1.0, bias=np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="KH"):
        dw(np.zeros((1, 20, 20, 2), np.uint8), np.zeros((17, 17, 2), np.int8), scale=1.0)
    packed = gemm_twin.pack_b(np.zeros((27, 8), np.int8))
    sk = dict(kernel=(3, 3), padding=(1, 1, 1, 1), scale=np.ones(8, np.float32))
    x3 = np.zeros((1, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="KH\\*KW\\*C"):
        impl.conv_small_k_u8s8(x, packed, 27, 8, **sk)
    with pytest.raises(ValueError, match="K"):
        impl.conv_small_k_u8s8(np.zeros((1, 4, 4, 8), np.uint8), gemm_twin.pack_b(np.zeros((72, 8), np.int8)), 72,
                               8, **sk)
    with pytest.raises(ValueError, match="out_dtype"):
        impl.conv_small_k_u8s8(x3, packed, 27, 8, out_dtype="s32", **sk)
    with pytest.raises(ValueError, match="packed"):
        impl.conv_small_k_u8s8(x3, packed, 27, 9, **sk)
    with pytest.raises(ValueError, match="col_sum"):
        impl.conv_small_k_u8s8(x3, packed, 27, 8, a_zero=128, **sk)
    with pytest.raises(TypeError, match="scale"):
        impl.conv_small_k_u8s8(x3, packed, 27, 8, kernel=(3, 3), scale=None)
    with pytest.raises(TypeError):
        impl.conv_small_k_u8s8(x3.astype(np.int8), packed, 27, 8, **sk)
    with pytest.raises(ValueError, match="fit"):
        impl.conv_small_k_u8s8(np.zeros((1, 1, 1, 3), np.uint8), packed, 27, 8, kernel=(3, 3), scale=1.0)
    with pytest.raises(TypeError):
        impl.quantize_nchw(np.zeros((1, 2, 3, 3), np.float64), 1.0)
    with pytest.raises(ValueError, match="scale_inv"):
        impl.quantize_nchw(np.zeros((1, 2, 3, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match="scale_inv"):
        impl.quantize_rows(np.zeros((2, 3), np.float32), float("inf"))
    with pytest.raises(ValueError, match="dimensions"):
        impl.dequantize_nhwc(np.zeros((2, 3), np.uint8), 1.0)
    with pytest.raises(ValueError, match="per-column"):
        impl.dequantize_rows(np.zeros((2, 3), np.uint8), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="shape"):
        impl.im2col_u8(x, 3, 3, out=np.empty((5, 5), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        impl.add_u8(x, 1.0, 0, x[:, :2].copy(), 1.0, 0, 1.0, 0)
    with pytest.raises(TypeError):
        impl.requantize(x.astype(np.int8), 1.0, in_zero=0, out_zero=0)
    with pytest.raises(TypeError):
        impl.requantize(x, 1.0, in_zero=1.5, out_zero=0)
    with pytest.raises(ValueError, match="padding"):
        impl.max_pool_u8(x, (2, 2), (1, 1), (2, 0, 0, 0))
    with pytest.raises(ValueError, match="scale"):
        impl.global_avg_pool_u8(x, float("nan"))
    with pytest.raises(ValueError, match="empty"):
        impl.global_avg_pool_u8(np.zeros((1, 0, 3, 2), np.uint8))
    with pytest.raises(ValueError, match="out_layout"):
        dw(x, w, scale=1.0, out_layout="NWHC")
    with pytest.raises(ValueError, match="chain"):
        dw(x, w, scale=1.0, out_dtype="f32", out_layout="NCHW", chain={})
    for bad in (np.zeros((1, 2, 3, 4), np.float64), np.zeros((1, 2, 3, 4), np.int16), np.zeros((2, 3, 4), np.uint8),
                np.zeros((1, 2, 3, 4), np.float32)[:, :, ::2], list(x)):
        with pytest.raises((TypeError, ValueError)) as info:
            impl.nhwc_to_nchw(bad)
        assert "nhwc_to_nchw" in str(info.value)


@needs_fast
def test_empty_batch():
    x = np.zeros((0, 5, 5, 8), np.uint8)
    out = fast.depthwise_conv_u8s8(x, np.zeros((3, 3, 8), np.int8), padding=1, scale=1.0)
    assert out.shape == (0, 5, 5, 8)
    assert fast.quantize_nchw(np.zeros((0, 8, 5, 5), np.float32), 1.0).shape == (0, 5, 5, 8)
    assert fast.nhwc_to_nchw(np.zeros((0, 5, 5, 8), np.float32)).shape == (0, 8, 5, 5)
    assert fast.depthwise_conv_u8s8(x, np.zeros((3, 3, 8), np.int8), padding=1, scale=1.0,
                                    out_layout="NCHW").shape == (0, 8, 5, 5)
    assert fast.im2col_u8(x, 3, 3).shape == (0, 72)
    packed = gemm_twin.pack_b(np.zeros((27, 4), np.int8))
    for impl in (fast, twin):
        assert impl.conv_small_k_u8s8(np.zeros((0, 5, 5, 3), np.uint8), packed, 27, 4, kernel=(3, 3), padding=1,
                                      scale=1.0).shape == (0, 5, 5, 4)


# ------------------------------------------------------------------------------- AVX-512 on emulated intrinsics
# The AVX-512 VNNI depthwise path runs only on CPUs with avx512bw + avx512vnni (where the tests above compare it
# with the twin). Everywhere else, its source is compiled against plain-C versions of the intrinsics it uses
# (after Intel's pseudocode) and compared, case by case, with the portable C path (itself checked against the
# twin above): this checks the kernel's logic (lane order, packing, tails, masks, epilogues), not the encodings.
EMUL512_H = r"""/* plain-C versions of the AVX-512 intrinsics depthwise_avx512.h uses (Intel pseudocode), for logic tests only */
#include <math.h>
#include <stdint.h>
#include <string.h>
typedef union { int8_t i8[64]; uint8_t u8[64]; int16_t i16[32]; int32_t i32[16]; } __m512i;
typedef union { float f[16]; } __m512;
typedef uint64_t __mmask64;
typedef uint16_t __mmask16;
#define _MM_FROUND_TO_NEAREST_INT 0x00
#define _MM_FROUND_NO_EXC 0x08
#define L4 for (int L = 0; L < 4; L++)
static inline __m512i _mm512_setzero_si512(void) { __m512i r; memset(&r, 0, 64); return r; }
static inline __m512i _mm512_loadu_si512(const void *p) { __m512i r; memcpy(&r, p, 64); return r; }
static inline __m512 _mm512_loadu_ps(const float *p) { __m512 r; memcpy(&r, p, 64); return r; }
static inline __m512 _mm512_set1_ps(float v) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = v; return r; }
static inline __m512i _mm512_set1_epi16(short v) { __m512i r; for (int i = 0; i < 32; i++) r.i16[i] = v; return r; }
static inline __m512i _mm512_set1_epi8(char v) { __m512i r; for (int i = 0; i < 64; i++) r.i8[i] = v; return r; }
static inline __m512i _mm512_maskz_loadu_epi8(__mmask64 m, const void *p) {
    __m512i r; for (int i = 0; i < 64; i++) r.u8[i] = (m >> i) & 1 ? ((const uint8_t *)p)[i] : 0; return r; }
static inline __m512i _mm512_mask_loadu_epi8(__m512i src, __mmask64 m, const void *p) {
    __m512i r = src; for (int i = 0; i < 64; i++) if ((m >> i) & 1) r.u8[i] = ((const uint8_t *)p)[i]; return r; }
static inline void _mm512_mask_storeu_epi8(void *p, __mmask64 m, __m512i v) {
    for (int i = 0; i < 64; i++) if ((m >> i) & 1) ((uint8_t *)p)[i] = v.u8[i]; }
static inline void _mm512_mask_storeu_ps(float *p, __mmask16 m, __m512 v) {
    for (int i = 0; i < 16; i++) if ((m >> i) & 1) p[i] = v.f[i]; }
static inline __m512i _mm512_unpacklo_epi8(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 8; i++) {
    r.u8[16*L+2*i] = a.u8[16*L+i]; r.u8[16*L+2*i+1] = b.u8[16*L+i]; } return r; }
static inline __m512i _mm512_unpackhi_epi8(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 8; i++) {
    r.u8[16*L+2*i] = a.u8[16*L+8+i]; r.u8[16*L+2*i+1] = b.u8[16*L+8+i]; } return r; }
static inline __m512i _mm512_unpacklo_epi16(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 4; i++) {
    r.i16[8*L+2*i] = a.i16[8*L+i]; r.i16[8*L+2*i+1] = b.i16[8*L+i]; } return r; }
static inline __m512i _mm512_unpackhi_epi16(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 4; i++) {
    r.i16[8*L+2*i] = a.i16[8*L+4+i]; r.i16[8*L+2*i+1] = b.i16[8*L+4+i]; } return r; }
static inline __m512i _mm512_dpbusd_epi32(__m512i s, __m512i a, __m512i b) { __m512i r; for (int j = 0; j < 16; j++) {
    uint32_t t = (uint32_t)s.i32[j]; for (int k = 0; k < 4; k++) t += (uint32_t)((int32_t)a.u8[4*j+k] * (int32_t)b.i8[4*j+k]);
    r.i32[j] = (int32_t)t; } return r; }
static inline __m512 _mm512_cvtepi32_ps(__m512i a) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = (float)a.i32[i]; return r; }
static inline __m512 _mm512_mul_ps(__m512 a, __m512 b) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = a.f[i] * b.f[i]; return r; }
static inline __m512 _mm512_max_ps(__m512 a, __m512 b) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = a.f[i] > b.f[i] ? a.f[i] : b.f[i]; return r; }
static inline __m512 _mm512_min_ps(__m512 a, __m512 b) { __m512 r; for (int i = 0; i < 16; i++) r.f[i] = a.f[i] < b.f[i] ? a.f[i] : b.f[i]; return r; }
static inline __m512i _mm512_cvt_roundps_epi32(__m512 a, int mode) { (void)mode; __m512i r; for (int i = 0; i < 16; i++) {
    float f = a.f[i]; r.i32[i] = (f != f || f >= 2147483648.0f || f < -2147483648.0f) ? INT32_MIN : (int32_t)nearbyintf(f); } return r; }
static inline int16_t s16(int32_t v) { return v > 32767 ? 32767 : v < -32768 ? -32768 : (int16_t)v; }
static inline __m512i _mm512_packs_epi32(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 4; i++) {
    r.i16[8*L+i] = s16(a.i32[4*L+i]); r.i16[8*L+4+i] = s16(b.i32[4*L+i]); } return r; }
static inline uint8_t u8s(int16_t v) { return v > 255 ? 255 : v < 0 ? 0 : (uint8_t)v; }
static inline __m512i _mm512_packus_epi16(__m512i a, __m512i b) { __m512i r; L4 for (int i = 0; i < 8; i++) {
    r.u8[16*L+i] = u8s(a.i16[8*L+i]); r.u8[16*L+8+i] = u8s(b.i16[8*L+i]); } return r; }
static inline __m512i _mm512_adds_epi16(__m512i a, __m512i b) { __m512i r; for (int i = 0; i < 32; i++) r.i16[i] = s16((int32_t)a.i16[i] + b.i16[i]); return r; }
static inline __m512i _mm512_max_epu8(__m512i a, __m512i b) { __m512i r; for (int i = 0; i < 64; i++) r.u8[i] = a.u8[i] > b.u8[i] ? a.u8[i] : b.u8[i]; return r; }
static inline __m512i _mm512_min_epu8(__m512i a, __m512i b) { __m512i r; for (int i = 0; i < 64; i++) r.u8[i] = a.u8[i] < b.u8[i] ? a.u8[i] : b.u8[i]; return r; }
static inline __m512i _mm512_set1_epi32(int v) { __m512i r; for (int i = 0; i < 16; i++) r.i32[i] = v; return r; }
static inline __m512i _mm512_add_epi32(__m512i a, __m512i b) { __m512i r; for (int i = 0; i < 16; i++)
    r.i32[i] = (int32_t)((uint32_t)a.i32[i] + (uint32_t)b.i32[i]); return r; }
static inline void _mm512_mask_cvtepi32_storeu_epi8(void *p, __mmask16 m, __m512i v) {
    for (int i = 0; i < 16; i++) if ((m >> i) & 1) ((int8_t *)p)[i] = (int8_t)v.i32[i]; }
static inline __m512 _mm512_shuffle_f32x4(__m512 a, __m512 b, int imm) { __m512 r; for (int k = 0; k < 4; k++) {
    const __m512 *src = k < 2 ? &a : &b; int sel = (imm >> (2 * k)) & 3; memcpy(&r.f[4*k], &src->f[4*sel], 16); } return r; }
"""

HARNESS_C = r"""#include <stdio.h>
#include <stdlib.h>
#define QD_SIMD_EMUL 1
#include "emul512.h"
#include "qdirect/common.h"
#define QD_SFX _portable
#define QD_ATTR
#include "qdirect/generic.h"
#undef QD_SFX
#undef QD_ATTR
#include "qdirect/depthwise_avx512.h"
static unsigned rs = 1; static unsigned rnd(void) { rs = rs * 1103515245u + 12345u; return rs >> 8; }
static int gcd(int a, int b) { while (b) { int t = a % b; a = b; b = t; } return a; }
int main(void) {
    int Cs[] = {1, 3, 16, 17, 32, 33, 64, 65, 144, 200}, Ks[][2] = {{3,3},{5,5},{1,1},{2,3}};
    int fails = 0, cases = 0;
    for (int ci = 0; ci < 10; ci++) for (int ki = 0; ki < 4; ki++) for (int s = 1; s <= 2; s++) for (int dil = 1; dil <= 2; dil++)
    for (int variant = 0; variant < 4; variant++) {
        int C = Cs[ci], kh = Ks[ki][0], kw = Ks[ki][1], H = 7 + (rnd() % 5), W = 6 + (rnd() % 9), N = 1 + variant % 2;
        int top = rnd() % kh, left = rnd() % kw, bottom = rnd() % kh, right = rnd() % kw;
        int OH = (H + top + bottom - dil * (kh - 1) - 1) / s + 1, OW = (W + left + right - dil * (kw - 1) - 1) / s + 1;
        if (OH < 1 || OW < 1) continue;
        int K = kh * kw, f32 = variant & 1, sat = (variant >> 1) & 1, a_zero = rnd() % 256, oz = rnd() % 256;
        uint8_t *x = malloc((size_t)N * H * W * C); int8_t *w = malloc(K * C); int32_t *bias = malloc(C * 4), *folded = malloc(C * 4);
        float *scale = malloc(C * 4);
        for (int i = 0; i < N * H * W * C; i++) x[i] = rnd();
        for (int i = 0; i < K * C; i++) w[i] = rnd();
        for (int c = 0; c < C; c++) { bias[c] = (int32_t)(rnd() % 40000) - 20000; scale[c] = sat ? 1e-3f * (1 + rnd() % 100) / 50 : 0.3f + (rnd() % 100) / 100.0f; }
        for (int c = 0; c < C; c++) { uint32_t sw = 0; for (int t = 0; t < K; t++) sw += (uint32_t)(int32_t)w[t*C+c]; folded[c] = (int32_t)((uint32_t)bias[c] - (uint32_t)a_zero * sw); }
        uint8_t *zr = malloc(W * C + 64); memset(zr, a_zero, W * C + 64);
        qd_dw d; memset(&d, 0, sizeof d);
        d.g = (qd_geom){H, W, C, kh, kw, s, s, top, left, dil, dil, OH, OW};
        d.w = w; d.bias = folded; d.scale = scale; d.zero_row = zr; d.x_end = x + (size_t)N*H*W*C; d.out_f32 = f32;
        if (f32) { d.lo_f = variant == 1 ? -INFINITY : -5.0f; d.hi_f = variant == 1 ? INFINITY : 7.0f; d.out_zero = 0; }
        else { int lo = rnd() % 20, hi = 235 + rnd() % 21; d.lo_f = lo - oz; d.hi_f = hi - oz; d.out_zero = oz; }
        float mx = 0; for (int c = 0; c < C; c++) if (fabsf(scale[c]) > mx) mx = fabsf(scale[c]);
        d.scale_below_half = mx < 0.5f;
        int groups = (K + 3) / 4, pb = (C + 63) / 64, period = C * 64 / gcd(C, 64), fb = (period <= 8192 && variant < 3) ? period / 64 : 0;
        int8_t *pw = malloc(pb * groups * 256); int32_t *pbb = malloc(pb * 256); float *pss = malloc(pb * 256);
        int8_t *fw = malloc(fb * groups * 256 + 1); int32_t *fbb = malloc(fb * 256 + 4); float *fss = malloc(fb * 256 + 4);
        qd_dw_pack_avx512(w, folded, scale, C, K, pb, 0, pw, pbb, pss);
        if (fb) qd_dw_pack_avx512(w, folded, scale, C, K, fb, 1, fw, fbb, fss);
        d.pix_w = pw; d.pix_b = pbb; d.pix_s = pss; d.pix_blocks = pb; d.flat_w = fw; d.flat_b = fbb; d.flat_s = fss; d.flat_blocks = fb;
        size_t es = f32 ? 4 : 1, rowb = (size_t)OW * C * es;
        char *o1 = malloc(N * OH * rowb + 64), *o2 = malloc(N * OH * rowb + 64);
        memset(o1, 0xAB, N * OH * rowb + 64); memset(o2, 0xAB, N * OH * rowb + 64);
        for (int r = 0; r < N * OH; r++) {
            qd_dw_row__portable(&d, x + (size_t)(r / OH) * H * W * C, r % OH, o1 + r * rowb);
            qd_dw_row_avx512_kernel(&d, x + (size_t)(r / OH) * H * W * C, r % OH, o2 + r * rowb);
        }
        cases++;
        if (memcmp(o1, o2, N * OH * rowb + 64)) { fails++; if (fails < 10) printf("FAIL C=%d k=%dx%d s=%d d=%d var=%d\n", C, kh, kw, s, dil, variant); }
        free(x); free(w); free(bias); free(folded); free(scale); free(zr); free(pw); free(pbb); free(pss); free(fw); free(fbb); free(fss); free(o1); free(o2);
    }
    printf("%d cases, %d failures\n", cases, fails);
    return fails != 0;
}
"""


SK_HARNESS_C = r"""#include <stdio.h>
#include <stdlib.h>
#define QD_SIMD_EMUL 1
#include "emul512.h"
#include "qdirect/smallk.h"
static unsigned rs = 7; static unsigned rnd(void) { rs = rs * 1103515245u + 12345u; return rs >> 8; }
int main(void) {
    int Cs[] = {1, 2, 3, 4, 7, 16}, Ns[] = {1, 8, 16, 17, 32, 33, 64, 65, 100}, fails = 0, cases = 0;
    for (int ci = 0; ci < 6; ci++) for (int ni = 0; ni < 9; ni++) for (int variant = 0; variant < 8; variant++) {
        int C = Cs[ci], N = Ns[ni], kh = 1 + rnd() % 3, kw = 1 + rnd() % 3, s = 1 + variant % 2, dil = 1 + (variant / 4);
        if (kh * kw * C > 64) { kh = 1; kw = 64 / C < 3 ? 64 / C : 3; }
        int K = kh * kw * C, Kp = (K + 3) / 4 * 4, Np = (N + 15) / 16 * 16, H = 5 + rnd() % 6, W = 5 + rnd() % 40;
        int top = rnd() % kh, left = rnd() % kw, bottom = rnd() % kh, right = rnd() % kw;
        int OH = (H + top + bottom - dil * (kh - 1) - 1) / s + 1, OW = (W + left + right - dil * (kw - 1) - 1) / s + 1;
        if (OH < 1 || OW < 1) continue;
        int f32 = (variant >> 1) & 1, a_zero = variant & 1 ? 128 : 0, oz = rnd() % 256;
        uint8_t *x = malloc((size_t)H * W * C); int8_t *w = malloc(K * N), *panels = calloc(Kp * Np, 1);
        int32_t *bias = malloc(N * 4), *cs = malloc(N * 4); float *scale = malloc(N * 4);
        for (int i = 0; i < H * W * C; i++) x[i] = rnd();
        for (int i = 0; i < K * N; i++) w[i] = rnd();
        for (int k = 0; k < K; k++) for (int n = 0; n < N; n++)
            panels[(n / 16) * Kp * 16 + (k / 4) * 64 + (n % 16) * 4 + k % 4] = w[k * N + n];
        for (int n = 0; n < N; n++) {
            bias[n] = (int32_t)(rnd() % 60000) - 30000; cs[n] = 0;
            for (int k = 0; k < K; k++) cs[n] += w[k * N + n];
            scale[n] = f32 ? 0.01f * (1 + rnd() % 100) : 1e-4f * (1 + rnd() % 100);
        }
        qd_sk sk; memset(&sk, 0, sizeof sk);
        sk.g = (qd_geom){H, W, C, kh, kw, s, s, top, left, dil, dil, OH, OW};
        sk.K = K; sk.N = N; sk.x_end = x + (size_t)H * W * C; sk.out_f32 = f32;
        if (f32) { sk.lo_f = variant & 4 ? -3.0f : -INFINITY; sk.hi_f = variant & 4 ? 5.0f : INFINITY; }
        else { int lo = rnd() % 20, hi = 235 + rnd() % 21; sk.lo_f = lo - oz; sk.hi_f = hi - oz; sk.out_zero = oz; }
        char *ws = aligned_alloc(64, (qd_sk_prepare(&sk, NULL, NULL, NULL, 0, NULL, NULL) + 63) / 64 * 64);
        qd_sk_prepare(&sk, panels, bias, a_zero ? cs : NULL, a_zero, scale, ws);
        size_t rowb = (size_t)OW * N * (f32 ? 4 : 1);
        char *o1 = malloc(OH * rowb + 64), *o2 = malloc(OH * rowb + 64);
        memset(o1, 0xAB, OH * rowb + 64); memset(o2, 0xAB, OH * rowb + 64);
        for (int r = 0; r < OH; r++) { qd_sk_row_portable(&sk, x, r, o1 + r * rowb); qd_sk_row_avx512(&sk, x, r, o2 + r * rowb); }
        cases++;
        if (memcmp(o1, o2, OH * rowb + 64)) { fails++; if (fails < 10) printf("FAIL C=%d N=%d k=%dx%d s=%d d=%d var=%d\n", C, N, kh, kw, s, dil, variant); }
        free(x); free(w); free(panels); free(bias); free(cs); free(scale); free(ws); free(o1); free(o2);
    }
    printf("%d cases, %d failures\n", cases, fails);
    return fails != 0;
}
"""


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_avx512_small_k_logic_on_emulated_intrinsics(tmp_path):
    """The AVX-512 VNNI small-K conv (smallk.h) on the emulated intrinsics against the portable row."""
    include = Path(__file__).resolve().parents[1] / "kernels" / "include"
    if not (include / "qdirect" / "smallk.h").exists():
        pytest.skip("kernel sources not available (installed package)")
    (tmp_path / "emul512.h").write_text(EMUL512_H)
    (tmp_path / "harness.c").write_text(SK_HARNESS_C)
    exe = tmp_path / "harness"
    subprocess.run([os.environ.get("CC", "cc"), "-O1", "-ffp-contract=off", f"-I{include}", f"-I{tmp_path}",
                    str(tmp_path / "harness.c"), "-o", str(exe), "-lm"], check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().endswith("cases, 0 failures") and int(out.stdout.split()[0]) > 300, out.stdout


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_avx512_depthwise_logic_on_emulated_intrinsics(tmp_path):
    include = Path(__file__).resolve().parents[1] / "kernels" / "include"
    if not (include / "qdirect" / "depthwise_avx512.h").exists():
        pytest.skip("kernel sources not available (installed package)")
    (tmp_path / "emul512.h").write_text(EMUL512_H)
    (tmp_path / "harness.c").write_text(HARNESS_C)
    exe = tmp_path / "harness"
    subprocess.run([os.environ.get("CC", "cc"), "-O1", "-ffp-contract=off", f"-I{include}", f"-I{tmp_path}",
                    str(tmp_path / "harness.c"), "-o", str(exe), "-lm"], check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().endswith("cases, 0 failures")
