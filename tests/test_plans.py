"""Plans: qgemm.prepare_gemm and qdirect.prepare_depthwise (compiled and twin) against the one-call kernels, and
the INT8 ops' plan cache (refquant/ops/plans.py): the same bits, the same errors, nothing stale."""
from __future__ import annotations

import numpy as np
import pytest

from refquant import _dispatch
from refquant.deploy import convert_to_int8
from refquant.executor import freeze_inference_params
from refquant.models import build
from refquant.ops import get_op
from refquant.ops import int8 as int8_ops
from refquant.ops.plans import PlanCache, freeze, frozen
from refquant.ops.registry import OpContext
from refquant.quant import quant_post_static
from refquant.reference import qdirect as dw_twin
from refquant.reference import qgemm as gemm_twin

gemm_fast, dw_fast = _dispatch.compiled("qgemm"), _dispatch.compiled("qdirect")
GEMMS = [pytest.param(gemm_twin, id="twin")] + (
    [pytest.param(gemm_fast, id=f"fast-{p}") for p in gemm_fast.available_paths()] if gemm_fast else [])
DWS = [pytest.param(dw_twin, id="twin")] + ([pytest.param(dw_fast, id="fast")] if dw_fast else [])
rng = np.random.default_rng(3)


def same(x, y):
    if isinstance(x, tuple):
        assert len(x) == len(y)
        for a, b in zip(x, y):
            assert (a is None) == (b is None)
            if a is not None:
                same(a, b)
        return
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


def gemm_case(K=40, N=20):
    w = rng.integers(-128, 128, (K, N), dtype=np.int8)
    kw = dict(a_zero=128, col_sum=gemm_twin.col_sums(w), bias=rng.integers(-5000, 5000, N, dtype=np.int32),
              scale=(rng.random(N) * 0.01).astype(np.float32), out_dtype="u8", out_zero=128)
    return w, kw


@pytest.mark.parametrize("impl", GEMMS)
@pytest.mark.parametrize("variant", ["u8", "f32", "s32", "chain"])
def test_gemm_plan_equals_the_call_and_keeps_its_own_vectors(impl, variant):
    w, kw = gemm_case()
    if variant == "f32":
        kw.update(out_dtype="f32", out_zero=0, lo=-2.0, hi=3.0)
    elif variant == "s32":
        kw = dict(a_zero=3, col_sum=kw["col_sum"], bias=kw["bias"])
    elif variant == "chain":
        kw.update(out_dtype="f32", out_zero=0, chain={"pre": (2.0, 0.5), "hard_swish": (3.0, 6.0, 6.0),
                                                      "quantize": (10.0, 128, 0, 255)})
    packed = impl.pack_b(w)
    plan = impl.prepare_gemm(packed, 40, 20, **kw)
    a = rng.integers(0, 256, (33, 40), dtype=np.uint8)
    want = gemm_twin.gemm_u8s8(a, gemm_twin.pack_b(w), 40, 20, **kw)
    rows = gemm_twin.gemm_u8s8(a[::2].copy(), gemm_twin.pack_b(w), 40, 20, **kw)
    same(plan(a), want)
    same(impl.gemm_u8s8(a, packed, 40, 20, **kw), want)
    for v in ("bias", "scale", "col_sum"):  # the caller's arrays change: the plan does not
        if v in kw:
            kw[v][...] = 0
    same(plan(a), want)
    same(plan(a[::2]), rows)  # rows with a stride


@pytest.mark.parametrize("impl", GEMMS)
def test_gemm_plan_checks_each_activation_the_same_way(impl):
    w, kw = gemm_case()
    packed = impl.pack_b(w)  # kept: the plan refers to it weakly
    plan = impl.prepare_gemm(packed, 40, 20, **kw)
    errors = []
    for bad in (np.zeros((3, 41), np.uint8), np.zeros((3, 40), np.int8), np.zeros((0, 40), np.uint8),
                np.zeros((3, 80), np.uint8)[:, ::2], [[1] * 40]):
        with pytest.raises((TypeError, ValueError)) as info:
            plan(bad)
        errors.append((type(info.value), str(info.value)))
        with pytest.raises(type(info.value), match=str(info.value)[:20]):
            gemm_twin.gemm_u8s8(bad, gemm_twin.pack_b(w), 40, 20, **kw)
    out = np.empty((3, 20), np.uint8)
    plan(np.zeros((3, 40), np.uint8), out)
    with pytest.raises(ValueError, match="out must have shape"):
        plan(np.zeros((3, 40), np.uint8), np.empty((4, 20), np.uint8))
    with pytest.raises(ValueError, match="K=40"):
        impl.prepare_gemm(impl.pack_b(w), 41, 20, **kw)


@pytest.mark.parametrize("impl", DWS)
@pytest.mark.parametrize("variant", ["u8", "f32", "nchw", "chain"])
def test_depthwise_plan_equals_the_call(impl, variant):
    x = rng.integers(0, 256, (2, 9, 11, 24), dtype=np.uint8)
    w = rng.integers(-128, 128, (3, 3, 24), dtype=np.int8)
    kw = dict(stride=(2, 1), padding=(1, 1, 1, 1), a_zero=128, bias=rng.integers(-900, 900, 24, dtype=np.int32),
              scale=(rng.random(24) * 0.01).astype(np.float32), out_zero=128)
    if variant != "u8":
        kw.update(out_dtype="f32", out_zero=0)
    if variant == "nchw":
        kw["out_layout"] = "NCHW"
    if variant == "chain":
        kw["chain"] = {"post": (0.5, 1.0), "quantize": (7.0, 0, 0, 255)}
    want = dw_twin.depthwise_conv_u8s8(x, w, **kw)
    plan = impl.prepare_depthwise(x.shape, w, **kw)
    same(plan(x), want)
    same(impl.depthwise_conv_u8s8(x, w, **kw), want)
    w[...] = 0
    kw["scale"][...] = 1
    same(plan(x), want)  # the plan keeps its own weights and scales
    with pytest.raises(ValueError, match="the plan is for inputs of shape"):
        plan(x[:1].copy())
    with pytest.raises(ValueError, match="C-contiguous"):
        plan(np.zeros((2, 9, 22, 24), np.uint8)[:, :, ::2])
    with pytest.raises(ValueError, match="input shape must be 4 ints"):
        impl.prepare_depthwise((2, 9, 11), w, **kw)
    with pytest.raises(ValueError, match="channels"):
        impl.prepare_depthwise((2, 9, 11, 23), w, **kw)
    with pytest.raises(ValueError, match="x has no channels"):
        impl.depthwise_conv_u8s8(np.zeros((1, 4, 4, 0), np.uint8), np.zeros((3, 3, 0), np.int8), scale=1.0)
    empty = np.zeros((0, 9, 11, 24), np.uint8)
    same(impl.prepare_depthwise(empty.shape, w, **kw)(empty), dw_twin.depthwise_conv_u8s8(empty, w, **kw))


def test_frozen_and_freeze():
    a = np.zeros(8)
    assert frozen(None) and not frozen(a) and not frozen([1.0])
    view = a[2:6]
    view.flags.writeable = False
    assert not frozen(view)  # its base is still writeable
    freeze(view)
    assert frozen(view) and not a.flags.writeable
    assert not frozen(np.zeros(8)[::2])


def test_plan_cache_keys_and_lifetime():
    cache = PlanCache(per_owner=2)
    w, b = freeze(np.ones(4)), freeze(np.zeros(4))
    attrs = {"k": 1}
    assert cache.put(w, "s1", attrs, (b,), "plan1") == "plan1"
    assert cache.get(w, "s1", {"k": 1}, (b,)) == "plan1"
    assert cache.get(w, "s1", {"k": 2}, (b,)) is None            # attributes compared by value
    assert cache.get(w, "s1", attrs, (freeze(np.zeros(4)),)) is None   # constants by identity
    attrs["k"] = 2
    assert cache.get(w, "s1", attrs, (b,)) is None               # a dict edited in place: no stale plan
    assert cache.put(np.ones(4), "s1", attrs, (), "p") == "p"     # writeable weights: not remembered
    assert len(cache._entries) == 1
    cache.put(w, "s2", attrs, (), "p2")
    cache.put(w, "s3", attrs, (), "p3")                          # per_owner: the older keys go
    assert cache.get(w, "s3", attrs, ()) == "p3" and cache.get(w, "s1", {"k": 1}, (b,)) is None
    del w
    assert len(cache._entries) == 0                              # the entry leaves with its weights


@pytest.fixture(scope="module")
def int8_model():
    calib = [np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)]
    q = quant_post_static(build("mobilenet_v2", input_size=32), [{"x": c} for c in calib], algo="abs_max")
    return q, convert_to_int8(q)


def test_convert_freezes_what_only_int8_ops_read(int8_model):
    q, i8 = int8_model
    readers = {}
    for op in i8.ops:
        for n in op.inputs:
            readers.setdefault(n, set()).add(op.type)
    shared = {id(a) for a in q.params.values()}
    for name, a in i8.params.items():
        only_int8 = all(t.endswith("_int8") or t.startswith("fused_") for t in readers.get(name, ()))
        assert frozen(a) == (only_int8 and id(a) not in shared and name in readers), name
    assert all(a.flags.writeable for a in q.params.values() if isinstance(a, np.ndarray))


def test_planned_ops_equal_unplanned_ones(int8_model):
    """Each INT8 op of the model, planned (frozen weights, cached) and unplanned (writeable copies), the same
    bits; a second model whose weights are the same objects reuses the plans."""
    _, i8 = int8_model
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    from refquant.executor import forward
    env, _ = forward(i8, {"x": x}, keep_all=True)
    checked = 0
    for op in i8.ops:
        if op.type not in ("conv2d_int8", "depthwise_conv2d_int8", "matmul_int8"):
            continue
        args = [env[n] if n else None for n in op.inputs]
        opdef = get_op(op.type)
        planned = opdef.forward(OpContext(False, None), op.attrs, *args)
        again = opdef.forward(OpContext(False, None), op.attrs, *args)
        loose = [args[0]] + [None if a is None else np.array(a) for a in args[1:]]
        with pytest.warns(RuntimeWarning, match="writeable weights: checked and prepared again on every call"):
            unplanned = opdef.forward(OpContext(False, None), dict(op.attrs), *loose)
        same(planned, again)
        same(planned, unplanned)
        assert int8_ops._PLANS.get(args[1], (id(op.attrs), args[0].shape, args[0].dtype), op.attrs,
                                   tuple(args[2:])) is not None
        assert int8_ops._PLANS.get(loose[1], (id(op.attrs), args[0].shape, args[0].dtype), op.attrs,
                                   tuple(loose[2:])) is None
        checked += 1
    assert checked >= 50


def test_freeze_inference_params_leaves_shared_and_float_params():
    from refquant.graph import Model, Op, TensorSpec
    shared_w = np.ones((4, 4), np.float32)
    model = Model([Op("matmul_int8", ["x", "p", "cs", "", "m"], ["y"], {"K": 4, "N": 4}),
                   Op("mul", ["x2", "w"], ["z"])],
                  {"p": np.zeros(8, np.int8), "cs": np.zeros(4, np.int32), "m": np.ones(4, np.float32),
                   "w": shared_w}, [TensorSpec("x", (1, 4), "uint8"), TensorSpec("x2", (1, 4), "float32")],
                  ["y", "z"])
    freeze_inference_params(model, shared={"cs": model.params["cs"]})
    assert frozen(model.params["p"]) and frozen(model.params["m"])
    assert model.params["cs"].flags.writeable and shared_w.flags.writeable


def test_a_loaded_fused_fp32_model_plans_its_convs(tmp_path):
    """io.load leaves the fused convs' weights read-only: no repacking per call (and no warning about it), the
    same outputs as the model that was saved."""
    import warnings

    from refquant import io
    from refquant.deploy import optimize_fp32
    m = optimize_fp32(build("mobilenet_v2", input_size=32))
    io.save(m, tmp_path / "m.rq")
    loaded = io.load(tmp_path / "m.rq")
    x = {"x": np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = loaded.run(x)
    want = m.run(x)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert all(frozen(loaded.params[op.inputs[1]]) for op in loaded.ops if op.type == "conv2d_bias_act")


@pytest.mark.parametrize("impl", GEMMS)
def test_gemm_plan_refers_to_its_packed_weights_weakly(impl):
    """A plan keeps no strong reference to the packed array (a cache keyed by the weights could never let them
    go); called after the array was freed it raises."""
    import gc
    import weakref
    w, kw = gemm_case()
    packed = impl.pack_b(w)
    plan, ref = impl.prepare_gemm(packed, 40, 20, **kw), weakref.ref(packed)
    a = rng.integers(0, 256, (3, 40), dtype=np.uint8)
    plan(a)
    del packed
    gc.collect()
    assert ref() is None
    with pytest.raises(ValueError, match="packed weights were freed"):
        plan(a)


def test_a_freed_int8_model_leaves_no_plans():
    import gc
    calib = [np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)]
    q = quant_post_static(build("mobilenet_v2", input_size=32), [{"x": c} for c in calib], algo="abs_max")
    i8 = convert_to_int8(q)
    before = len(int8_ops._PLANS._entries)
    i8.run({"x": calib[0][:1]})
    assert len(int8_ops._PLANS._entries) >= before + 50
    del i8
    gc.collect()
    assert len(int8_ops._PLANS._entries) == before
