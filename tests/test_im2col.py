"""The compiled im2col/col2im (kernels/im2col.pyx) against its NumPy twin (refquant/reference/im2col.py).

im2col only copies, so the two must agree bit for bit; col2im adds the taps in the twin's order, so it must too.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.reference import im2col as twin

fast = _dispatch.compiled("im2col")
needs_fast = pytest.mark.skipif(fast is None, reason="im2col extension not built (or REFQUANT_FORCE_REFERENCE)")
IMPLS = [pytest.param(twin, id="twin"), pytest.param(fast, id="fast", marks=needs_fast)]

KERNELS = [(1, 1), (3, 3), (5, 5), (2, 3)]
STRIDES = [(1, 1), (2, 2), (3, 3), (2, 1)]
DILATIONS = [(1, 1), (2, 2)]
PADDINGS = [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3)]  # (top, left, bottom, right)
CASES = list(itertools.product(KERNELS, STRIDES, DILATIONS))


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


@needs_fast
@pytest.mark.parametrize("kernel,stride,dilation", CASES, ids=[f"k{k}-s{s}-d{d}" for k, s, d in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_equals_twin(kernel, stride, dilation, dtype):
    index = CASES.index((kernel, stride, dilation))
    rng = np.random.default_rng(index)
    for padding in PADDINGS:
        # batch 1-3, 1-3 channels, odd and even sizes; always >= the 9x9 reach of a dilated 5x5 kernel
        shape = (1 + index % 3, 1 + (index // 3) % 3, 9 + index % 4, 10 + index % 5)
        x = rng.standard_normal(shape).astype(dtype)
        args = (*kernel, stride, padding, dilation)
        cols = fast.im2col(x, *args)
        assert_same_bits(cols, twin.im2col(x, *args))
        grads = rng.standard_normal(cols.shape).astype(dtype)
        assert_same_bits(fast.col2im(grads, shape, *args), twin.col2im(grads, shape, *args))


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_worked_examples(impl):
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    # 2x2 kernel, stride 1: one row per tap (i, j), one column per output pixel
    np.testing.assert_array_equal(impl.im2col(x, 2, 2), [[[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]]])
    # stride 2 with one row/column of padding on top/left only: the zeros are the padding
    np.testing.assert_array_equal(impl.im2col(x, 2, 2, (2, 2), (1, 1, 0, 0)),
                                  [[[0, 0, 0, 5], [0, 0, 4, 6], [0, 2, 0, 8], [1, 3, 7, 9]]])
    # dilation 2 along a row: taps 2 apart
    row = np.arange(1, 6, dtype=np.float64).reshape(1, 1, 1, 5)
    np.testing.assert_array_equal(impl.im2col(row, 1, 2, dilation=(1, 2)), [[[1, 2, 3], [3, 4, 5]]])
    # col2im of ones counts how many windows cover each pixel
    np.testing.assert_array_equal(impl.col2im(np.ones((1, 4, 4)), (1, 1, 3, 3), 2, 2),
                                  [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3), (3, 2), (2, 0, 1, 3), (1, 1)),   # stride > kernel: pixels no window reads
    ((3, 2), (2, 1), (0, 1, 2, 0), (2, 2)),
])
def test_col2im_is_the_adjoint_of_im2col(impl, kernel, stride, padding, dilation):
    rng = np.random.default_rng(7)
    shape = (2, 3, 8, 7)
    x = rng.standard_normal(shape)
    cols = impl.im2col(x, *kernel, stride, padding, dilation)
    c = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, impl.col2im(c, shape, *kernel, stride, padding, dilation))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@needs_fast
def test_same_bits_with_one_and_two_threads():
    x = np.random.default_rng(3).standard_normal((2, 8, 64, 61)).astype(np.float32)  # big enough to split
    args = (3, 3, (2, 1), (1, 2, 0, 1), (1, 1))
    before = threads.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            threads.set_num_threads(n)
            cols = fast.im2col(x, *args)
            results.append((cols, fast.col2im(cols, x.shape, *args)))
    finally:
        threads.set_num_threads(before)
    for a, b in zip(*results):
        assert_same_bits(a, b)


@needs_fast
def test_any_layout_and_read_only_input():
    base = np.random.default_rng(4).standard_normal((2, 3, 10, 16)).astype(np.float32)
    x = base[:, :, :, ::2]                       # not contiguous
    ro = np.array(x)
    ro.flags.writeable = False
    for arr in (x, ro):
        assert_same_bits(fast.im2col(arr, 3, 3, (1, 1), (1, 1, 1, 1)), twin.im2col(arr, 3, 3, (1, 1), (1, 1, 1, 1)))


@needs_fast
def test_empty_output_when_the_kernel_just_misses():
    x = np.ones((1, 2, 2, 4), np.float32)  # 3x3 kernel on 2 rows, no padding: zero output rows
    assert_same_bits(fast.im2col(x, 3, 3), twin.im2col(x, 3, 3))


@needs_fast
@pytest.mark.parametrize("kwargs", [dict(stride=(0, 1)), dict(dilation=(1, 0)), dict(padding=(-1, 0, 0, 0))])
def test_bad_geometry_raises(kwargs):
    with pytest.raises(ValueError):
        fast.im2col(np.ones((1, 1, 4, 4)), 2, 2, **kwargs)


@needs_fast
def test_is_usable_for():
    assert fast.is_usable_for(np.ones((1, 1, 2, 2), np.float32))
    assert fast.is_usable_for(np.ones((1, 4, 2), np.float64))
    assert not fast.is_usable_for(np.ones((1, 1, 2, 2), np.int32))   # the dispatcher takes the twin
    assert not fast.is_usable_for(np.ones((2, 2), np.float32))
    assert not fast.is_usable_for([[1.0]])


def test_dispatch_keeps_integer_inputs_on_the_twin():
    x = np.arange(16, dtype=np.int64).reshape(1, 1, 4, 4)
    cols = _dispatch.im2col(x, 2, 2)
    assert cols.dtype == np.int64
    np.testing.assert_array_equal(cols, twin.im2col(x, 2, 2))
