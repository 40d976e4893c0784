"""fconv (the float32 convs of the fused FP32 graph) against its NumPy twin: the stated rounding bound on every
path, the same bits for any thread count, the same rejections; and the packed-weight cache of conv2d_bias_act."""
import numpy as np
import pytest

from refquant import _dispatch
from refquant.ops import conv as conv_op
from refquant.reference import fconv as twin

fconv = _dispatch.compiled("fconv")
needs_kernel = pytest.mark.skipif(fconv is None, reason="refquant._kernels.fconv is not built")
RNG = np.random.default_rng(7)
EPS = 2.0 ** -23
ACTS = [("", {}), ("relu", {}), ("relu6", {"threshold": 2.5}), ("hard_sigmoid", {"slope": 0.25, "offset": 0.4}),
        ("hard_swish", {"threshold": 5.0, "scale": 7.0, "offset": 2.5})]


def f32(*shape):
    return RNG.uniform(-1, 1, shape).astype(np.float32)


def bound(w2d, cols, bias):
    """2 K eps32 (sum_k |A[o, k] x_k| + |bias[o]|) per output, the twin's stated bound before the activation."""
    s = np.abs(w2d.astype(np.float64)) @ np.abs(cols.astype(np.float64)) + np.abs(bias.astype(np.float64))[:, None]
    return 2 * w2d.shape[1] * EPS * s


def lipschitz(act, attrs, y):
    """How much the activation can stretch an input error near y (hard_swish: (2 |v| + a) / c)."""
    if act == "hard_swish":
        return (2 * np.abs(y) + attrs["offset"] + 1) / attrs["scale"]
    return np.float64(attrs.get("slope", 1.0))


GEMM_CASES = [((2, 7, 11, 13), 9, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # edges in M and N, two samples
              ((1, 300, 9, 9), 20, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # K over one 256 block
              ((1, 3, 30, 31), 32, 3, (2, 2), (0, 1, 2, 1), (1, 1)),     # the first conv: stride 2, uneven padding
              ((1, 6, 40, 29), 13, 3, (2, 1), (12, 1, 12, 1), (2, 2)),   # rows of padding only, dilation
              ((1, 16, 40, 40), 24, 1, (2, 2), (0, 0, 0, 0), (1, 1)),    # a strided 1x1
              ((1, 8, 30, 30), 64, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # 900 pixels: two N blocks
              ((2, 40, 41, 39), 30, 1, (1, 1), (0, 0, 0, 0), (1, 1)),    # few channels: B read in place, 15 packed
              ((1, 300, 7, 7), 16, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # T tiles: 49 pixels in groups of 5 and 6
              ((2, 520, 5, 6), 40, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # T tiles: 3 K blocks, 16 + 16 + 8 rows
              ((1, 600, 4, 4), 9, 1, (1, 1), (0, 0, 0, 0), (1, 1))]      # T tiles (K >= 512 on a small plane), 9 rows


@needs_kernel
@pytest.mark.parametrize("shape, oc, k, stride, pad, dil", GEMM_CASES)
@pytest.mark.parametrize("act, attrs", ACTS)
def test_conv2d_is_the_twin_within_its_bound(shape, oc, k, stride, pad, dil, act, attrs):
    from refquant.reference.im2col import im2col
    x, w, b = f32(*shape) * 3, f32(oc, shape[1], k, k), f32(oc)
    args = (x, twin.pack_weights(w), oc, (k, k), b, stride, pad, dil, twin.epilogue(act, attrs))
    y = twin.conv2d(*args)
    cols = im2col(x, k, k, stride, pad, dil)
    tol = np.stack([bound(w.reshape(oc, -1), c, b) for c in cols]).reshape(y.shape)
    pre = twin.conv2d(*args[:8])  # before the activation: where the stretch is read
    for path in fconv.available_paths():
        got = fconv.conv2d(*args, path=path)
        assert got.dtype == np.float32 and got.shape == y.shape
        slack = 4 * EPS * np.abs(y)  # the activation's own roundings
        assert np.all(np.abs(got - y.astype(np.float64)) <= tol * lipschitz(act, attrs, pre) + slack), path
        assert np.array_equal(got, fconv.conv2d(*args, path=path, max_threads=1))  # any thread count: same bits
    assert np.array_equal(twin.conv2d(*args, max_threads=1), y)


@needs_kernel
@pytest.mark.parametrize("n, k, hw, oc", [(1, 576, (14, 14), 96), (2, 300, (7, 7), 24), (1, 130, (3, 5), 13),
                                          (1, 700, (7, 7), 700), (1, 640, (1, 1), 1000)])
def test_t_tiles_give_the_packed_tiles_bits(n, k, hw, oc):
    """A 1x1 stride-1 conv of these shapes runs T tiles (B in place, vectors along output channels); the same conv
    with a border of zero padding runs the packed tiles: the interior has the same bits (the same sums in the same
    order), with a residual and each activation."""
    x, w, b, r = f32(n, k, *hw) * 3, f32(oc, k, 1, 1), f32(oc), f32(n, oc, *hw)
    for act, attrs in ACTS:
        args = (twin.pack_weights(w), oc, (1, 1), b, (1, 1))
        t = fconv.conv2d(x, *args, (0, 0, 0, 0), (1, 1), twin.epilogue(act, attrs), residual=r)
        pr = np.pad(r, ((0, 0), (0, 0), (1, 1), (1, 1)))
        p = fconv.conv2d(x, *args, (1, 1, 1, 1), (1, 1), twin.epilogue(act, attrs), residual=pr)
        assert np.array_equal(t, p[:, :, 1:-1, 1:-1]), act


@needs_kernel
def test_a_residual_is_added_after_the_bias_before_the_activation():
    x, b, r = f32(2, 5, 9, 10), f32(13), f32(2, 13, 9, 10)
    for k, pad in ((1, (0, 0, 0, 0)), (3, (1, 1, 1, 1))):  # B read in place, B packed
        w = f32(13, 5, k, k)
        args = (x, twin.pack_weights(w), 13, (k, k), b, (1, 1), pad, (1, 1), twin.epilogue("relu"))
        want = twin.conv2d(*args, residual=r)
        assert np.allclose(want, np.maximum(twin.conv2d(*args[:8]) + r, 0), rtol=0, atol=0)
        for path in fconv.available_paths():
            assert np.allclose(fconv.conv2d(*args, residual=r, path=path), want, rtol=0, atol=1e-5), path
    for mod in (twin, fconv):
        with pytest.raises(ValueError, match="residual must have the output's shape"):
            mod.conv2d(*args, residual=np.ascontiguousarray(r[:, :, :8]))


@needs_kernel
def test_a_scalar_affine_follows_the_activation():
    x, w, wd, b = f32(1, 5, 9, 10) * 3, f32(13, 5, 3, 3), f32(5, 1, 3, 3), f32(13)
    epi = twin.epilogue("hard_swish", {"post_scale": -0.75, "post_shift": 0.5})
    assert epi[4:] == (-0.75, 0.5)
    conv = (x, twin.pack_weights(w), 13, (3, 3), b, (1, 1), (1, 1, 1, 1), (1, 1))
    dw = (x, wd, None, (2, 1), (1, 1, 1, 1), (1, 1))
    for mod in (twin, fconv):
        for call, args in ((mod.conv2d, conv), (mod.depthwise_conv2d, dw)):
            y = call(*args, epi=epi)
            h = call(*args, epi=epi[:4])
            assert np.array_equal(y, h * np.float32(-0.75) + np.float32(0.5))  # two roundings, after the rest


DW_CASES = [((1, 16, 14, 14), 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),   # eight channels per vector, two groups
            ((2, 11, 9, 30), 1, 3, (2, 2), (1, 1, 1, 1), (1, 1)),    # a group of 8 and 3 planes one by one
            ((1, 9, 70, 61), 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),    # large planes: one by one
            ((1, 5, 13, 11), 2, 5, (2, 1), (2, 0, 1, 3), (1, 2)),    # multiplier 2, dilation, uneven padding
            ((1, 4, 10, 10), 1, 3, (3, 3), (0, 0, 0, 0), (1, 1)),    # stride 3: the scalar loop on every path
            ((1, 3, 9, 150), 1, 3, (2, 2), (1, 1, 1, 1), (1, 1)),    # stride 2, rows split in halves, 32 at a time
            ((1, 2, 8, 147), 1, 3, (2, 2), (0, 2, 1, 1), (1, 1)),    # the same, even left padding, odd width
            ((1, 2, 6, 90), 1, 5, (2, 2), (2, 3, 2, 1), (1, 2)),     # 5 x 5 taps split in halves, dilation 2
            ((1, 8, 5, 5), 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # eight planes: pixel groups of 4, overlapping
            ((1, 8, 6, 3), 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # rows of 3: one pixel at a time
            ((1, 8, 7, 41), 1, 3, (2, 2), (1, 1, 1, 1), (1, 1))]     # groups of 8 (the last overlapping), stride 2


@needs_kernel
@pytest.mark.parametrize("shape, m, k, stride, pad, dil", DW_CASES)
@pytest.mark.parametrize("act, attrs", ACTS)
def test_depthwise_is_the_twin_within_its_bound(shape, m, k, stride, pad, dil, act, attrs):
    c = shape[1]
    x, w, b = f32(*shape) * 3, f32(c * m, 1, k, k), f32(c * m)
    args = (x, w, b, stride, pad, dil, twin.epilogue(act, attrs))
    y = twin.depthwise_conv2d(*args)
    pre = twin.depthwise_conv2d(*args[:6])
    xs = np.abs(np.repeat(x.astype(np.float64), m, axis=1))
    s = twin.depthwise_conv2d(xs.astype(np.float32), np.abs(w), np.abs(b), stride, pad, dil)  # sum |w x| + |b|
    tol = 2 * (k * k) * EPS * 1.01 * s * lipschitz(act, attrs, pre)
    for path in fconv.available_paths():
        got = fconv.depthwise_conv2d(*args, path=path)
        assert np.all(np.abs(got - y.astype(np.float64)) <= tol + 4 * EPS * np.abs(y)), path
        assert np.array_equal(got, fconv.depthwise_conv2d(*args, path=path, max_threads=1))


@needs_kernel
def test_eight_channels_per_vector_give_the_one_plane_bits():
    """Plane 8 (past the group of eight) runs the one-plane loop: a copy of plane 0 gives plane 0's bits."""
    # pixel groups of 8, 4, 1; 8 with the last overlapping; 7 (rows of 7 and 14)
    for hw in ((12, 12), (5, 5), (3, 3), (9, 23), (7, 7), (9, 14)):
        x, w, b = f32(1, 9, *hw), f32(9, 1, 3, 3), f32(9)
        x[:, 8], w[8], b[8] = x[:, 0], w[0], b[0]
        y = fconv.depthwise_conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), twin.epilogue("relu"))
        assert np.array_equal(y[:, 8], y[:, 0])


@needs_kernel
def test_two_threads_give_the_one_thread_bits():
    """Large enough for two threads: pixel blocks of two samples, one sample's pixels cut into equal blocks (2304:
    three blocks re-cut into four; 784: two), channel blocks of a 7 x 7 output, depthwise planes."""
    from refquant import threads
    before = threads.get_num_threads()
    threads.set_num_threads(2)
    try:
        for shape, oc in (((2, 32, 40, 40), 64), ((1, 64, 20, 20), 96), ((1, 16, 48, 48), 24), ((1, 32, 28, 28), 128),
                          ((1, 64, 7, 7), 256)):
            x, w, b = f32(*shape), f32(oc, shape[1], 3, 3), f32(oc)
            args = (x, twin.pack_weights(w), oc, (3, 3), b, (1, 1), (1, 1, 1, 1), (1, 1), twin.epilogue("relu6"))
            assert np.array_equal(fconv.conv2d(*args), fconv.conv2d(*args, max_threads=1))
        for shape, oc in (((1, 576, 14, 14), 96), ((1, 960, 7, 7), 160), ((2, 300, 10, 10), 40)):  # T tiles
            x, w, b = f32(*shape), f32(oc, shape[1], 1, 1), f32(oc)
            args = (x, twin.pack_weights(w), oc, (1, 1), b, (1, 1), (0, 0, 0, 0), (1, 1), twin.epilogue("relu6"))
            assert np.array_equal(fconv.conv2d(*args), fconv.conv2d(*args, max_threads=1))
        for shape in ((1, 64, 64, 64), (2, 24, 20, 20)):
            x, w = f32(*shape), f32(shape[1], 1, 3, 3)
            args = (x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), twin.epilogue("hard_swish"))
            assert np.array_equal(fconv.depthwise_conv2d(*args), fconv.depthwise_conv2d(*args, max_threads=1))
    finally:
        threads.set_num_threads(before)


@pytest.mark.parametrize("call", ["conv2d", "depthwise_conv2d"])
def test_both_reject_the_same_inputs(call):
    mods = [twin] + ([fconv] if fconv is not None else [])
    x, w = f32(1, 4, 6, 6), f32(4, 1, 3, 3)
    good = {"conv2d": (x, twin.pack_weights(f32(5, 4, 3, 3)), 5, (3, 3), None),
            "depthwise_conv2d": (x, w, None)}[call]
    bad = [good[:1] + (x.astype(np.float64),) + good[2:],            # a float64 operand
           (x[:, :, ::2],) + good[1:],                               # not contiguous
           (f32(1, 3, 6, 6),) + good[1:]]                            # channels that do not match
    for args in bad:
        errors = set()
        for mod in mods:
            with pytest.raises((TypeError, ValueError)) as e:
                getattr(mod, call)(*args)
            errors.add((type(e.value), str(e.value)))
        assert len(errors) == 1, errors
    for mod in mods:
        with pytest.raises(ValueError, match="epi"):
            getattr(mod, call)(*good, epi=(9, 0.0, 0.0, 1.0))
        with pytest.raises(ValueError, match="activation"):
            twin.epilogue("swish")


def test_packed_weights_are_cached_only_for_read_only_arrays():
    w = f32(8, 3, 3, 3)
    with pytest.warns(RuntimeWarning, match="packed again on every call"):
        assert conv_op._packed(w) is not conv_op._packed(w)  # writeable: packed on each call, and said so
    w.flags.writeable = False
    p = conv_op._packed(w)
    assert p is conv_op._packed(w) and not p.flags.writeable
    assert np.array_equal(p.transpose(0, 2, 1).reshape(-1, 27)[:8], w.reshape(8, -1))
    key = id(w)
    del w
    assert key not in conv_op._PACKED._entries  # the entry leaves with the array
    v = np.zeros((4, 8, 3, 3, 3), np.float32)[1]  # a view: its base may change, so no caching
    v.flags.writeable = False
    with pytest.warns(RuntimeWarning):
        assert conv_op._packed(v) is not conv_op._packed(v)


def test_plans_are_the_calls_and_reject_what_they_reject():
    x, w, b, r = f32(2, 8, 9, 9), f32(12, 8, 3, 3), f32(12), f32(2, 12, 9, 9)
    args = (twin.pack_weights(w), 12, (3, 3), b, (1, 1), (1, 1, 1, 1), (1, 1), twin.epilogue("relu6"))
    dw = (f32(8, 1, 3, 3), b[:8], (2, 2), (1, 1, 1, 1), (1, 1), twin.epilogue("hard_swish"))
    messages = []
    for mod in [twin] + ([fconv] if fconv is not None else []):
        plan = mod.prepare_conv2d(x.shape, *args)
        assert np.array_equal(plan(x, r), mod.conv2d(x, *args, residual=r))
        assert np.array_equal(mod.prepare_depthwise(x.shape, *dw)(x), mod.depthwise_conv2d(x, *dw))
        got = []
        for call in (lambda: plan(x[:1]), lambda: plan(x.astype(np.float64)), lambda: plan(x, r[:1]),
                     lambda: mod.prepare_conv2d((2, 8, 9), *args),
                     lambda: mod.prepare_conv2d(x.shape, args[0], 13, *args[2:])):
            with pytest.raises((TypeError, ValueError)) as e:
                call()
            got.append((type(e.value), str(e.value)))
        messages.append(got)
    assert len(set(messages[0])) == 5 and "plan is for inputs of shape (2, 8, 9, 9)" in messages[0][0][1]
    assert all(m == messages[0] for m in messages)


def test_conv_ops_plan_once_per_weight_attributes_and_shape():
    from refquant.ops import OpContext
    ctx, attrs = OpContext(False, None), {"strides": [1, 1], "paddings": [1, 1], "activation": "relu"}
    w, b = f32(6, 4, 3, 3), f32(6)
    w.flags.writeable = False
    x = f32(1, 4, 7, 7)
    y = conv_op.conv2d_bias_act(ctx, attrs, x, w, b)
    assert np.array_equal(conv_op.conv2d_bias_act(ctx, attrs, x, w, b), y)
    assert len(conv_op._PLANS._entries[id(w)][1]) == 1
    attrs["activation"] = ""  # the same dict, changed: planned again
    assert np.array_equal(np.maximum(conv_op.conv2d_bias_act(ctx, attrs, x, w, b), 0), y)
    conv_op.conv2d_bias_act(ctx, attrs, f32(2, 4, 7, 7), w, b)
    assert len(conv_op._PLANS._entries[id(w)][1]) == 2  # another input shape
    with pytest.raises(ValueError):
        conv_op.conv2d_bias_act(ctx, attrs, x.astype(np.float32)[:, :3], w, b)
    key = id(w)
    del w
    assert key not in conv_op._PLANS._entries  # the plans leave with the weights
    v = f32(6, 4, 3, 3)  # writeable: no plan (packed on each call, with the warning)
    with pytest.warns(RuntimeWarning, match="packed again"):
        conv_op.conv2d_bias_act(ctx, attrs, x, v, b)
    assert id(v) not in conv_op._PLANS._entries
