"""Embedding quantization: PaddleSlim's abs_max and log schemes by hand, the row-dequantizing lookup kernel
against its NumPy twin (bit-exact), the quantized trained text_mean zoo model, and bad config."""
from __future__ import annotations

import numpy as np
import pytest

import refquant
from refquant import _dispatch
from refquant.ops import OpContext, get_op
from refquant.quant.embedding import dequant_log_table, merge_config, quant_abs_max, quant_embedding, quant_log
from refquant.reference import embedding as twin

kernel = _dispatch.compiled("embedding")
needs_kernel = pytest.mark.skipif(kernel is None, reason="refquant._kernels.embedding not built (or forced off)")


# ---- kernel == twin ---------------------------------------------------------------------------------
def _case(rng, v, d, n, dtype):
    info = np.iinfo(dtype)
    table = rng.integers(info.min, info.max, size=(v, d), endpoint=True).astype(dtype)
    ids = rng.integers(0, v, size=n).astype(np.int64)
    return table, ids


@needs_kernel
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("v,d,n", [(1, 1, 1), (5, 3, 0), (7, 1, 9), (50, 17, 33), (265, 64, 1024),
                                   (1000, 128, 4096), (3, 300, 257)])
def test_abs_max_kernel_equals_twin(dtype, v, d, n):
    rng = np.random.default_rng(v * 1000 + d + n)
    table, ids = _case(rng, v, d, n, dtype)
    bits = 8 if dtype == np.int8 else 16
    qmax = (1 << (bits - 1)) - 1
    scales = [np.float32(rng.uniform(0.01, 3.0)), rng.uniform(0.01, 3.0, v).astype(np.float32),
              np.float32(0.1), np.float32(1.0 / 3)]
    for scale in scales:
        for padding_idx in (-1, 0, int(ids[0]) if n else 0, v - 1):
            want = twin.lookup_dequant_abs_max(table, scale, ids, qmax, padding_idx)
            got = kernel.lookup_dequant_abs_max(table, scale, ids, qmax, padding_idx)
            assert got.dtype == want.dtype == np.float32 and got.shape == (n, d)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            if padding_idx >= 0 and n:
                assert not got[ids == padding_idx].any()


@needs_kernel
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("v,d,n,size", [(4, 2, 5, 1), (50, 17, 33, 128), (265, 64, 2048, 100), (9, 5, 0, 128)])
def test_log_kernel_equals_twin(dtype, v, d, n, size):
    rng = np.random.default_rng(v + d + n + size)
    mag = rng.integers(0, size, size=(v, d))
    table = np.where(rng.random((v, d)) < 0.5, mag - 128, mag).astype(dtype)
    ids = rng.integers(0, v, size=n).astype(np.int64)
    dictionary = np.sort(2.0 ** (np.arange(size) * 0.125 - 10)).astype(np.float32)
    for padding_idx in (-1, 0, v - 1):
        want = twin.lookup_dequant_log(table, dictionary, ids, padding_idx)
        got = kernel.lookup_dequant_log(table, dictionary, ids, padding_idx)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def _paddleslim_search(dict_levels, levels, table):
    """PaddleSlim's per-element loop, spelled out: searchsorted (left), the left neighbour only when strictly
    closer, then the sign offset."""
    out = np.empty(levels.shape, np.int64)
    for i, (v, w) in enumerate(zip(levels.reshape(-1), table.reshape(-1))):
        idx = int(np.searchsorted(dict_levels, v))
        if idx > 0 and (idx == len(dict_levels) or
                        abs(dict_levels[idx - 1] - v) < abs(dict_levels[idx] - v)):
            idx -= 1
        out.reshape(-1)[i] = idx - 128 if w < 0 else idx
    return out


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_log_index_kernel_twin_and_paddleslim_loop_agree(seed):
    rng = np.random.default_rng(seed)
    grid = np.arange(-60, 20, dtype=np.float32) * np.float32(0.125)
    dict_levels = np.sort(rng.choice(grid, size=40, replace=False))        # gaps: ties and nearest choices
    if seed != 13:
        dict_levels = np.concatenate([[-np.inf], dict_levels]).astype(np.float32)   # the zero level
    levels = rng.choice(np.concatenate([grid, [-np.inf, 3.0, -9.0]]).astype(np.float32), size=(23, 17))
    table = rng.standard_normal((23, 17)).astype(np.float32)
    table[levels == -np.inf] = rng.choice(np.float32([0.0, -0.0]), size=int((levels == -np.inf).sum()))
    want = _paddleslim_search(dict_levels, levels, table)
    got = twin.log_index(levels, dict_levels, table)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    if kernel is not None:
        np.testing.assert_array_equal(kernel.log_index(levels, dict_levels, table), want)
    assert (want[table < 0] < 0).all() and (want[~(table < 0)] >= 0).all()


@needs_kernel
def test_kernel_threads_do_not_change_bits():
    rng = np.random.default_rng(7)
    table, ids = _case(rng, 5000, 256, 20000, np.int8)
    before = refquant.get_num_threads()
    try:
        refquant.set_num_threads(1)
        one = kernel.lookup_dequant_abs_max(table, np.float32(0.37), ids, 127, 3)
        refquant.set_num_threads(2)
        two = kernel.lookup_dequant_abs_max(table, np.float32(0.37), ids, 127, 3)
    finally:
        refquant.set_num_threads(before)
    np.testing.assert_array_equal(one.view(np.uint32), two.view(np.uint32))
    np.testing.assert_array_equal(one, twin.lookup_dequant_abs_max(table, np.float32(0.37), ids, 127, 3))


@needs_kernel
def test_kernel_rejects_indices_outside_the_dictionary():
    table = np.array([[0, 5], [-128, 1]], np.int8)
    for impl in (kernel, twin):
        with pytest.raises(ValueError, match="dictionary"):
            impl.lookup_dequant_log(table, np.ones(4, np.float32), np.array([0, 1]), -1)
        with pytest.raises(ValueError, match="scale"):
            impl.lookup_dequant_abs_max(table, np.ones(3, np.float32), np.array([0]), 127, -1)


# ---- the schemes by hand ----------------------------------------------------------------------------
def test_abs_max_hand_worked():
    w = np.array([[0.5, -0.25], [0.1, 0.0]], np.float32)        # max|w| < 1: no clip; T = 0.5
    q, scale = quant_abs_max(w, merge_config(None)["lookup_table"])
    assert scale.tolist() == [0.5] and scale.dtype == np.float32
    # 0.1 / 0.5 * 127 = 25.4 -> 25; -0.25 / 0.5 * 127 = -63.5 -> -64 (ties to even, np.round)
    assert q.dtype == np.int8 and q.tolist() == [[127, -64], [25, 0]]
    model = _embedding_model(w, padding_idx=1)
    qm = quant_embedding(model)
    out = qm.run({"ids": np.array([[0, 1, 0]])})["y"]
    f = np.float32
    row0 = [f(f(0.5) * f(127)) / f(127), f(f(0.5) * f(-64)) / f(127)]
    np.testing.assert_array_equal(out[0], [row0, [0, 0], row0])
    assert out.dtype == np.float32 and out[0, 0, 1] == np.float32(-0.2519685)


def test_abs_max_clipping():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((200, 60)).astype(np.float32)
    w[3, 4] = 40.0                                               # an outlier: max >= 1 -> clip to the 99.99th pct
    cfg = merge_config(None)["lookup_table"]
    q, scale = quant_abs_max(w, cfg)
    t = np.percentile(np.abs(w), 99.99)
    assert 3.0 < t < 40.0 and scale[0] == np.float32(np.max(np.abs(np.clip(w, -t, t))))
    assert q[3, 4] == 127 and np.abs(q).max() == 127
    np.testing.assert_array_equal(q, np.round(np.clip(w, -t, t) / scale[0] * 127).astype(np.int8))
    q2, scale2 = quant_abs_max(w, dict(cfg, threshold=0.5))
    assert scale2[0] == np.float32(0.5) and (np.abs(q2) <= 127).all() and (q2 == 127).sum() > 100
    q16, scale16 = quant_abs_max(w, dict(cfg, quantize_bits=16, dtype="int16"))
    assert q16.dtype == np.int16 and np.abs(q16).max() == 32767


def test_log_hand_worked():
    w = np.array([[1.0, -0.5, 0.25, 0.0, -0.3]], np.float32)
    q, dictionary = quant_log(w, merge_config({"lookup_table": {"quantize_type": "log"}})["lookup_table"])
    # L = 0, -1, -2, -inf, round(log2 .3 / .125) * .125 = round(-13.9) * .125 = -1.75; fewer than 128 levels, so
    # the zero's -inf stays in the dictionary (PaddleSlim): levels -inf, -2, -1.75, -1, 0
    np.testing.assert_array_equal(dictionary, np.float32(2) ** np.float32([-np.inf, -2, -1.75, -1, 0]))
    assert dictionary[0] == 0 and q.dtype == np.int8 and q.tolist() == [[4, 3 - 128, 1, 0, 2 - 128]]
    np.testing.assert_array_equal(dequant_log_table(q, dictionary), [[1, -0.5, 0.25, 0, -dictionary[2]]])


def test_log_keeps_the_128_largest_levels():
    w = (2.0 ** (-np.arange(200) * 0.125)).astype(np.float32).reshape(20, 10)
    q, dictionary = quant_log(w, merge_config({"lookup_table": {"quantize_type": "log"}})["lookup_table"])
    assert dictionary.size == 128 and dictionary[-1] == 1 and dictionary[0] == np.float32(2.0 ** (-127 * 0.125))
    flat = q.reshape(-1)
    assert flat[0] == 127 and flat[127] == 0 and (flat[128:] == 0).all()   # below the dictionary -> index 0


# ---- the pass ---------------------------------------------------------------------------------------
def _embedding_model(w, padding_idx=-1):
    ids = refquant.TensorSpec("ids", (None, None), "int64")
    op = refquant.Op("lookup_table", ["w", "ids"], ["y"], {"padding_idx": padding_idx}, name="emb")
    return refquant.Model([op], {"w": w}, [ids], ["y"])


@pytest.mark.parametrize("qtype", ["abs_max", "log"])
def test_op_equals_full_table_dequantization(qtype):
    rng = np.random.default_rng(3)
    w = rng.uniform(-0.9, 0.9, (300, 24)).astype(np.float32)   # max|w| < 1: no clipping
    qm = quant_embedding(_embedding_model(w, padding_idx=7), {"lookup_table": {"quantize_type": qtype}})
    assert "w" not in qm.params and qm.params["w.int"].dtype == np.int8
    assert qm.op_counts() == {"lookup_table_dequant": 1}
    ids = rng.integers(0, 300, size=(4, 50))
    ids[0, :3] = 7
    out = qm.run({"ids": ids})["y"]
    if qtype == "abs_max":
        t = qm.params["w.scale"][0]
        full = (t * qm.params["w.int"].astype(np.float32)) / np.float32(127)
    else:
        full = dequant_log_table(qm.params["w.int"], qm.params["w.dict"])
    want = full[ids]
    # padding rows read the integer 0: +0 (abs_max) or dict[0] (log), as Paddle's lookup_table + dequantize op
    want[ids == 7] = 0 if qtype == "abs_max" else qm.params["w.dict"][0]
    np.testing.assert_array_equal(out, want)
    assert qm.infer_shapes({"ids": (4, 50)})["y"] == (4, 50, 24)
    with _dispatch.use_reference():
        np.testing.assert_array_equal(qm.run({"ids": ids})["y"], out)
    assert np.abs(out[ids != 7] - w[ids][ids != 7]).max() <= (0.9 / 254 * 1.001 if qtype == "abs_max" else 0.05)


def test_trained_text_mean_accuracy_and_size(tmp_path):
    from refquant.models.pretrained import pretrained
    from refquant.models.zoo import load_data
    model = pretrained("text_mean", train_if_missing=False)
    x, y = load_data("text_mean", "test")

    def top1(m):
        return float((m.run({"ids": x})[m.outputs[0]].argmax(-1) == y).mean())

    fp32 = top1(model)
    qm = quant_embedding(model)
    assert qm.params["embedding_0.w_0.int"].nbytes * 4 == model.params["embedding_0.w_0"].nbytes
    assert "embedding_0.w_0" not in qm.params and "lookup_table" not in qm.op_counts()
    assert fp32 > 0.9 and abs(top1(qm) - fp32) <= 0.01, (fp32, top1(qm))
    log = quant_embedding(model, {"lookup_table": {"quantize_type": "log"}})
    assert abs(top1(log) - fp32) <= 0.02, (fp32, top1(log))
    loaded = refquant.load(refquant.save(qm, tmp_path / "emb.rq"))
    np.testing.assert_array_equal(loaded.run({"ids": x[:8]})[qm.outputs[0]], qm.run({"ids": x[:8]})[qm.outputs[0]])


def test_shared_table_quantized_once():
    w = np.linspace(-0.9, 0.9, 40, dtype=np.float32).reshape(10, 4)
    ids = refquant.TensorSpec("ids", (None,), "int64")
    ops = [refquant.Op("lookup_table", ["w", "ids"], ["a"], name="e0"),
           refquant.Op("lookup_table", ["w", "ids"], ["b"], name="e1"),
           refquant.Op("elementwise_add", ["a", "b"], ["y"], name="add")]
    qm = quant_embedding(refquant.Model(ops, {"w": w}, [ids], ["y"]))
    assert sorted(qm.params) == ["w.int", "w.scale"] and qm.op_counts()["lookup_table_dequant"] == 2


def test_bad_config():
    model = _embedding_model(np.ones((3, 2), np.float32))
    for cfg, match in [({"quantize_op_types": ["conv2d"]}, "not supported"),
                       ({"lookup_table": {"quantize_type": "kl"}}, "quantize_type"),
                       ({"lookup_table": {"quantize_bits": 4}}, "quantize_bits"),
                       ({"lookup_table": {"dtype": "uint8"}}, "dtype"),
                       ({"lookup_table": {"quantize_bits": 16}}, "fit"),
                       ({"lookup_table": {"threshold": -1}}, "threshold"),
                       ([1], "dict")]:
        with pytest.raises(ValueError, match=match):
            quant_embedding(model, cfg)
    relu = refquant.Model([refquant.Op("relu", ["x"], ["y"], name="r")], {}, [refquant.TensorSpec("x", (2,))],
                          ["y"])
    with pytest.raises(ValueError, match="no .* op"):
        quant_embedding(relu)
    op = get_op("lookup_table_dequant")
    with pytest.raises(IndexError):
        op.forward(OpContext(), {}, np.ones((3, 2), np.int8), np.ones(1, np.float32), np.array([3]))
    with pytest.raises(TypeError):
        op.forward(OpContext(), {}, np.ones((3, 2), np.float32), np.ones(1, np.float32), np.array([0]))
