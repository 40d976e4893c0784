"""Mutation fuzzing of the BERT checkpoint readers: :func:`refquant.models.bert.read_safetensors` and
:func:`refquant.models.load_bert`. Every case must read (and, for a checkpoint, build and run), or raise a
:class:`refquant.ModelFormatError` (``SafetensorsError`` is one); a crash, a hang or any other exception fails
the test, and so does a successful read whose arrays disagree with the header or exceed the file.

Seeds: safetensors files written by :func:`write_safetensors` (every dtype, 0-d, empty and BF16 tensors,
metadata) and a one-layer BERT checkpoint directory (``config.json``, ``modules.json``,
``1_Pooling/config.json``, ``model.safetensors``). Mutations: the header as JSON (dtypes, shapes and offsets
replaced with huge / negative / fractional / wrong-typed values, entries removed, added or replaced,
``__metadata__`` broken, the whole header another JSON type), the header as text (byte flips, deep ``[``
nesting, NaN, huge integers, duplicate keys, invalid UTF-8), the 8-byte length field, the data section
(truncated, extended, flipped), and for the checkpoint the JSON files (values of the wrong type or range,
files removed, replaced by garbage or deeply nested text). Cases run in a worker process (``tests/fuzzing.py``).

Budget: ``REFQUANT_FUZZ_CASES`` (default 500, about 5 s; 0 = no limit) within ``REFQUANT_FUZZ_SECONDS``
(default 20), ``REFQUANT_FUZZ_SEED`` (default 0), ``REFQUANT_FUZZ_CASE_TIMEOUT`` (default 30 s),
``REFQUANT_FUZZ_OUT`` (keeps failing cases and a summary). A long local run::

    REFQUANT_FUZZ_CASES=0 REFQUANT_FUZZ_SECONDS=600 REFQUANT_FUZZ_SEED=1 REFQUANT_FUZZ_OUT=/tmp/fuzz \\
        python -m pytest -q -s tests/test_fuzz_safetensors.py
"""
from __future__ import annotations

import functools
import json
import math
import os
import struct

import numpy as np

from refquant.models.bert import write_safetensors
from tests import fuzzing
from tests.test_bert import TINY, tiny_bert_weights

EVIL_INTS = [0, -1, 1, 2, 3, 4, 7, 8, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63, 2 ** 64, -2 ** 63, 10 ** 30]
EVIL_VALUES = EVIL_INTS + [1.5, -0.0, "3", None, True, [], [1], {}, "F32", 1e308]
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3",
          "f32", "", "PICKLE", 3, None, ["F32"]]


# ---- seeds -----------------------------------------------------------------------------------------------------
def _file(tensors, metadata=None) -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.safetensors")
        write_safetensors(path, tensors, metadata)
        with open(path, "rb") as f:
            return f.read()


def _split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, data: bytes, text: bytes = None) -> bytes:
    raw = json.dumps(header).encode() if text is None else text
    return struct.pack("<Q", len(raw)) + raw + data


@functools.lru_cache(maxsize=None)
def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    files = [
        _file({"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
               "c": rng.integers(-128, 128, (2, 2, 2), dtype=np.int8), "e": np.zeros((0, 4), np.float32),
               "h": rng.standard_normal(4).astype(np.float16), "s": np.array(2.5),
               "u": np.arange(10, dtype=np.uint8), "t": np.array([True, False, True])}, {"format": "np"}),
        _file({"w": rng.standard_normal((4, 4)).astype(np.float32)}),
        _file({f"t{i}": np.full((i, 2), i, np.int32) for i in range(6)}),
    ]
    bf = (np.array([1.0, -2.5, 3.140625], np.float32).view(np.uint32) >> 16).astype("<u2")
    files.append(_join({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bf.tobytes()))
    return files


@functools.lru_cache(maxsize=None)
def checkpoint() -> dict:
    return {"config.json": json.dumps(TINY).encode(),
            "modules.json": json.dumps([{"idx": 0, "type": "sentence_transformers.models.Transformer"},
                                        {"idx": 1, "type": "sentence_transformers.models.Normalize"}]).encode(),
            "1_Pooling/config.json": json.dumps({"pooling_mode_mean_tokens": True}).encode(),
            "model.safetensors": _file(tiny_bert_weights())}


# ---- mutations ---------------------------------------------------------------------------------------------------
def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _mutate_header(rng, header: dict) -> str:
    names = [k for k in header if k != "__metadata__"]
    what = int(rng.integers(9))
    if what <= 4 and names:
        name = _pick(rng, names)
        entry = header[name]
        if not isinstance(entry, dict):
            return f"{name}: left as {entry!r:.40}"
        if what == 0:
            entry["dtype"] = _pick(rng, DTYPES)
            return f"{name}: dtype {entry['dtype']!r}"
        if what == 1:
            shape = entry.get("shape")
            shape = list(shape) if isinstance(shape, list) else []
            choice = int(rng.integers(4))
            if choice == 0 and shape:
                shape[int(rng.integers(len(shape)))] = _pick(rng, EVIL_VALUES)
            elif choice == 1:
                shape.append(_pick(rng, EVIL_INTS))
            elif choice == 2:
                shape = [1] * int(rng.integers(60, 70))
            else:
                shape = _pick(rng, EVIL_VALUES)
            entry["shape"] = shape
            return f"{name}: shape {str(shape)[:80]}"
        if what == 2:
            offs = entry.get("data_offsets")
            offs = list(offs) if isinstance(offs, list) else [0, 0]
            if rng.random() < 0.7 and len(offs) == 2:
                offs[int(rng.integers(2))] = _pick(rng, EVIL_VALUES)
            else:
                offs = _pick(rng, [[], [0], [0, 0, 0], "0,4", None, [4, 0]])
            entry["data_offsets"] = offs
            return f"{name}: data_offsets {offs}"
        if what == 3:
            key = _pick(rng, ["dtype", "shape", "data_offsets"])
            entry.pop(key, None)
            return f"{name}: {key} removed"
        header[name] = _pick(rng, EVIL_VALUES)
        return f"{name}: entry replaced"
    if what == 5:
        header["__metadata__"] = _pick(rng, [{"a": 1}, [], "x", {"a": {"b": "c"}}, None, {"k": "v"}])
        return f"__metadata__ {header['__metadata__']!r}"
    if what == 6 and names:
        src = header[_pick(rng, names)]
        header[f"copy{rng.integers(100)}"] = json.loads(json.dumps(src))
        return "an entry copied (overlap)"
    if what == 7 and names:
        a, b = _pick(rng, names), _pick(rng, names)
        if isinstance(header[a], dict) and isinstance(header[b], dict):
            header[a]["data_offsets"], header[b]["data_offsets"] = (header[b].get("data_offsets"),
                                                                    header[a].get("data_offsets"))
        return f"offsets of {a} and {b} swapped"
    header[f"new{rng.integers(100)}"] = {"dtype": _pick(rng, DTYPES[:13]),
                                         "shape": [int(_pick(rng, EVIL_INTS[:8])) for _ in range(rng.integers(3))],
                                         "data_offsets": [int(_pick(rng, EVIL_INTS[:8])),
                                                          int(_pick(rng, EVIL_INTS[:10]))]}
    return "an entry added"


def _mutate_text(rng, text: bytes) -> tuple[bytes, str]:
    t = bytearray(text)
    pos = int(rng.integers(len(t) + 1))
    what = int(rng.integers(8))
    if what == 0:
        for _ in range(int(rng.integers(1, 6))):
            if t:
                t[int(rng.integers(len(t)))] = int(rng.integers(256))
        return bytes(t), "header bytes changed"
    if what == 1:
        depth = int(rng.choice([20, 200, 5000, 100000]))
        return bytes(t[:pos]) + b"[" * depth + bytes(t[pos:]), f"{depth} brackets at {pos}"
    if what == 2:
        return text.replace(b"[", b"[NaN, ", 1), "NaN"
    if what == 3:
        return text.replace(b"[", b"[" + b"9" * int(rng.choice([30, 5000])) + b", ", 1), "huge integer"
    if what == 4 and text.startswith(b"{"):
        first = text[1:].split(b"}", 1)[0] + b"}"
        return b"{" + first + b", " + text[1:], "duplicate key"
    if what == 5:
        return bytes(t[:pos]) + b"\xff\xfe\xc3" + bytes(t[pos:]), "invalid UTF-8"
    if what == 6:
        return text.replace(b'"', b'"\\ud800', 1), "lone surrogate escape"
    return bytes(t[:pos]), f"header cut at {pos}"


def _mutate_file(rng, blob: bytes) -> tuple[bytes, str]:
    header, data = _split(blob)
    what = int(rng.integers(10))
    if what <= 3:
        hows = [_mutate_header(rng, header) for _ in range(int(rng.integers(1, 3)))]
        return _join(header, data), "; ".join(hows)
    if what <= 5:
        text, how = _mutate_text(rng, json.dumps(header).encode())
        return _join(None, data, text), how
    if what == 6:
        (n,) = struct.unpack("<Q", blob[:8])
        m = int(_pick(rng, [0, 1, n - 1, n + 1, n + 8, 2 ** 63, 2 ** 64 - 1, 100 * 2 ** 20, len(blob)]))
        return struct.pack("<Q", m) + blob[8:], f"length field {m}"
    if what == 7:
        cut = int(rng.integers(len(blob)))
        return blob[:cut], f"truncated to {cut}"
    if what == 8:
        return blob + bytes(int(rng.integers(1, 64))), "data extended"
    b = bytearray(blob)
    for _ in range(int(rng.integers(1, 8))):
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    return bytes(b), "bit flips"


def _mutate_checkpoint(rng, files: dict) -> str:
    what = int(rng.integers(6))
    if what <= 1:
        config = dict(TINY)
        key = _pick(rng, sorted(TINY) + ["position_embedding_type"])
        config[key] = _pick(rng, EVIL_VALUES + ["roberta", "relu", "relative_key", 1e-5])
        files["config.json"] = json.dumps(config).encode()
        return f"config.json {key} = {config[key]!r}"
    if what == 2:
        name = _pick(rng, ["config.json", "modules.json", "1_Pooling/config.json", "tokenizer.json"])
        files[name] = _pick(rng, [b"", b"[" * 5000, b"{\"a\": NaN}", b"\xff\xfe", b"[1, 2]", b"{}", b"null",
                                   b"{\"model\": {\"type\": \"WordPiece\"}}", b"\"str\"", b"{" * 30])
        return f"{name} replaced"
    if what == 3:
        name = _pick(rng, ["config.json", "modules.json", "1_Pooling/config.json", "model.safetensors"])
        files.pop(name)
        return f"{name} removed"
    if what == 4:
        files["modules.json"] = json.dumps(_pick(rng, [[1], [{"type": 3}], [None], [{"type": "x.Normalize"}],
                                                       {"type": "x"}])).encode()
        files["1_Pooling/config.json"] = json.dumps(_pick(rng, [{"pooling_mode_cls_token": True}, {}, [],
                                                                {"pooling_mode_mean_tokens": "yes"}])).encode()
        return "modules.json / pooling config changed"
    files["model.safetensors"], how = _mutate_file(rng, files["model.safetensors"])
    return f"model.safetensors: {how}"


def make_case(index: int, seed: int = None) -> tuple[str, dict]:
    seed = fuzzing.budget()[2] if seed is None else seed
    rng = np.random.default_rng([seed, index])
    if rng.random() < 0.3:
        files = dict(checkpoint())
        how = _mutate_checkpoint(rng, files)
        files["case.json"] = b'{"kind": "checkpoint"}'
        return f"checkpoint: {how}", files
    k = int(rng.integers(len(seeds())))
    blob, how = _mutate_file(rng, seeds()[k])
    names = _pick(rng, [None, ["a"], ["x"], ["nope"]])
    files = {"t.safetensors": blob, "case.json": json.dumps({"kind": "file", "names": names}).encode()}
    return f"seed {k}: {how}", files


# ---- the worker's side -------------------------------------------------------------------------------------
def run_case(case_dir: str) -> str:
    from refquant import ModelFormatError, RefquantError
    from refquant.models import load_bert
    from refquant.models.bert import SafetensorsError, read_safetensors
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    if case["kind"] == "checkpoint":
        try:
            model, _ = load_bert(case_dir)
        except ModelFormatError as exc:
            return f"refused {type(exc).__name__}"
        except FileNotFoundError:
            return "refused FileNotFoundError (a file is missing)"
        ids = np.array([[1, 5, 2, 0]], np.int64)
        try:
            model.run({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
        except RefquantError as exc:
            return f"run-error {type(exc).__name__}"
        return "ok"
    path = os.path.join(case_dir, "t.safetensors")
    try:
        arrays = read_safetensors(path, case["names"])
    except SafetensorsError:
        return "refused SafetensorsError"
    except KeyError:
        if case["names"] is None:
            raise
        return "refused KeyError (a name asked for is missing)"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    size = os.path.getsize(path)
    for name, a in arrays.items():
        entry = header[name]
        if list(a.shape) != entry["shape"] or not a.flags.writeable:
            return f"FAIL {name!r}: read as {a.shape}, header says {entry['shape']}"
    if sum(a.nbytes for a in arrays.values()) > 2 * size:       # BF16 doubles; nothing else grows
        return "FAIL the arrays read are larger than the file"
    return "ok"


def test_seeds_read():
    from refquant.models.bert import read_safetensors
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for k, blob in enumerate(seeds()):
            path = os.path.join(d, f"{k}.safetensors")
            with open(path, "wb") as f:
                f.write(blob)
            assert read_safetensors(path)
        for name, content in checkpoint().items():
            os.makedirs(os.path.dirname(os.path.join(d, "ckpt", name)), exist_ok=True)
            with open(os.path.join(d, "ckpt", name), "wb") as f:
                f.write(content)
        from refquant.models import load_bert
        model, _ = load_bert(os.path.join(d, "ckpt"))
        out = model.run({"input_ids": np.array([[1, 5, 2]]), "attention_mask": np.ones((1, 3), np.int64)})
        assert math.isclose(float(np.linalg.norm(out["sentence_embedding"])), 1.0, rel_tol=1e-5)


def test_fuzz_safetensors(tmp_path):
    report = fuzzing.fuzz("safetensors", make_case, str(tmp_path), default_cases=500)
    assert report["cases"] > 0
    assert not report["failures"], fuzzing.failure_message(report)
