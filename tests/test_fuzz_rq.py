"""A bounded, seeded fuzz of the ``.rq`` model format: mutated and truncated files of zoo models (float, fake-quant
and INT8) and of models with crafted attributes (huge, negative, NaN, wrongly typed geometry, missing attributes),
each written to a file, loaded with :func:`refquant.load` and, when it loads, run on a small input.

Every case must end in one of:

* loaded and ran;
* rejected at load with a :class:`refquant.RefquantError` (ModelFormatError, GraphError, UnsupportedOpError, ...);
* failed at run with a RefquantError (for tensors whose shapes do not fit an op, the executor's
  :class:`refquant.errors.OpError`, which names the op), or MemoryError (an allocation beyond the 1 GiB
  address-space headroom the cases run under: a valid but enormous geometry).

Any other exception (KeyError, AttributeError, RecursionError, ...), a signal (SIGSEGV, SIGABRT from ``free()``)
or a case running over 60 s fails the test. The cases run in a child interpreter, each in a forked process of it,
so a crash is recorded instead of killing pytest.

Budget: ``REFQUANT_FUZZ_SECONDS`` (default 8) of fuzzing after the seed models are built, at most
``REFQUANT_FUZZ_CASES`` cases if set; ``REFQUANT_FUZZ_SEED`` (default 0) picks the sequence. Case ``i`` draws from
``numpy.random.default_rng([seed, i])``, so a failing case is reproduced alone with ``REFQUANT_FUZZ_ONLY=i``.
Example of a long local run::

    REFQUANT_FUZZ_SECONDS=600 python -m pytest -q -s tests/test_fuzz_rq.py

The summary line (cases tried, outcomes) is printed and kept in the test's report.
"""
from __future__ import annotations

import json
import math
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np

HOSTILE = [0, -1, 1, 2, 3, 2**31 - 1, 2**31, 2**62 + 1, 3 * 2**61, 2**63 - 1, -2**63, 2**64, 1.5, 1e300,
           float("nan"), float("inf"), -float("inf"), "3", "", "NCHW", None, True, False, [], [1], [0, 0], [1, 2, 3],
           [2**62, 1], [1, 3 * 2**61], [0, 2**62 + 1, 0, 0], [0, 0, 0, -2**62], [-1, -1], [-5, 5, -5, 5], [[1, 2]],
           [1.5, 2], [float("nan"), 1], ["a", "b"], [3_000_000, 1], [1, 3_000_000], [2**31, 2**31], {"a": 1},
           [0, 1_500_000, 0, 1_500_000], [True, False], list(range(9))]
ATTR_NAMES = ["strides", "paddings", "dilations", "ksize", "groups", "K", "N", "a_zero", "out_zero", "lo", "hi",
              "out_dtype", "axis", "axes", "perm", "shape", "dim", "keep_dim", "x_num_col_dims", "y_num_col_dims",
              "in_num_col_dims", "output_padding", "out_size", "scale", "scale_inv", "zero", "ceil_mode", "exclusive",
              "global_pooling", "pooling_type", "data_format", "padding_idx", "epsilon", "begin_norm_axis", "dtype",
              "starts", "ends", "steps", "chain", "layout", "start_axis", "stop_axis", "threshold", "min", "max"]
INPUT_DTYPES = ["", "object", "float128", "complex64", "int8", "uint8", "bool", "float16", "<f4", "U3", 7, None]
RUN_ERRORS = ("MemoryError",)
MEMORY_HEADROOM = 1 << 30


# ---------------------------------------------------------------------------------------------- the seed models
def _seed_models() -> dict:
    """name -> file bytes: small zoo models (float, fake-quant, INT8) and one of the remaining window ops."""
    from refquant import Model, Op, TensorSpec, quant
    from refquant.deploy import convert_to_int8
    from refquant.io.format import to_bytes
    from refquant.models import lenet5, mobilenet_v1, text_classifier
    rng = np.random.default_rng(0)
    lenet = lenet5(input_size=16)
    mobile = mobilenet_v1(input_size=16, width=0.25, num_classes=10)
    feeds = [{"x": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)}]
    qmobile = quant.quant_post_static(mobile, feeds, algo="abs_max")
    qlenet = quant.quant_post_static(lenet, [{"x": rng.standard_normal((2, 1, 16, 16)).astype(np.float32)}],
                                     algo="abs_max")
    w = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    misc = Model([Op("conv2d_transpose", ["x", "wt"], ["t"], {"strides": [2, 2], "paddings": [1, 1, 1, 1],
                                                             "output_padding": [1, 1]}, "deconv"),
                  Op("pool2d", ["t"], ["p"], {"pooling_type": "avg", "ksize": [3, 3], "strides": [2, 2],
                                             "paddings": [1, 1, 1, 1], "ceil_mode": True}, "avgpool"),
                  Op("nearest_interp", ["p"], ["r"], {"out_size": [6, 6]}, "resize"),
                  Op("depthwise_conv2d", ["r", "wd"], ["d"], {"groups": 2, "paddings": [1, 1], "dilations": [2, 2]},
                     "dw"),
                  Op("reshape", ["d"], ["y"], {"shape": [0, -1]}, "flat")],
                 {"wt": w(1, 2, 3, 3), "wd": w(2, 1, 3, 3)}, [TensorSpec("x", (None, 1, 5, 5))], ["y"], name="misc")
    models = {"lenet5": lenet, "mobilenet_v1": mobile, "mobilenet_v1.fakequant": qmobile,
              "mobilenet_v1.int8": convert_to_int8(qmobile), "lenet5.int8": convert_to_int8(qlenet),
              "text_mean": text_classifier(vocab_size=50, max_len=8, encoder="mean"), "misc": misc}
    return {name: to_bytes(m) for name, m in models.items()}


# ---------------------------------------------------------------------------------------------- the mutations
def _split(blob: bytes):
    """(header dict, data bytes) of a model file."""
    n = struct.unpack_from("<Q", blob, 12)[0]
    header = json.loads(blob[20:20 + n])
    start = 20 + n + (-(20 + n)) % 64
    return header, blob[start:-4]


def _join(header: dict, data: bytes, prefix: bytes) -> bytes:
    """A file with this header and data, the length and checksum recomputed (so the mutation reaches validation)."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    head = prefix[:12] + struct.pack("<Q", len(raw)) + raw
    body = head + b"\0" * ((-len(head)) % 64) + data
    return body + struct.pack("<I", zlib.crc32(body))


def _value(rng):
    return HOSTILE[rng.integers(len(HOSTILE))]


def _mutate(blob: bytes, rng) -> tuple[str, bytes]:
    """One mutation of a model file: (its kind, the new bytes)."""
    kind = ["attr_value", "attr_value", "attr_value", "attr_delete", "attrs_type", "op_type", "op_inputs",
            "input_spec", "tensor_meta", "data_bytes", "header_bytes", "truncate", "raw_flip"][rng.integers(13)]
    if kind == "truncate":
        return kind, blob[:rng.integers(len(blob))]
    if kind == "raw_flip":
        b = bytearray(blob)
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(len(b))] ^= 1 << rng.integers(8)
        return kind, bytes(b)
    header, data = _split(blob)
    ops, tensors = header["graph"]["ops"], header["tensors"]
    op = ops[rng.integers(len(ops))]
    if kind == "attr_value":
        for _ in range(rng.integers(1, 4)):
            names = list(op["attrs"]) + ATTR_NAMES
            op["attrs"][names[rng.integers(len(names))]] = _value(rng)
    elif kind == "attr_delete" and op["attrs"]:
        del op["attrs"][list(op["attrs"])[rng.integers(len(op["attrs"]))]]
    elif kind == "attrs_type":
        op["attrs"] = [[], "strides", None, 3][rng.integers(4)]
    elif kind == "op_type":
        from refquant.ops import OPS
        types = sorted(OPS)
        op["type"] = types[rng.integers(len(types))]
    elif kind == "op_inputs":
        choice = rng.integers(3)
        if choice == 0 and op["inputs"]:
            op["inputs"].pop(rng.integers(len(op["inputs"])))
        elif choice == 1:
            op["inputs"].append(op["inputs"][0] if op["inputs"] else "x")
        elif op["inputs"]:
            other = ops[rng.integers(len(ops))]
            op["inputs"][rng.integers(len(op["inputs"]))] = (other["outputs"] or ["?"])[0]
    elif kind == "input_spec":
        spec = header["graph"]["inputs"][0]
        if rng.integers(2):
            spec["dtype"] = INPUT_DTYPES[rng.integers(len(INPUT_DTYPES))]
        else:
            spec["shape"] = _value(rng) if rng.integers(2) else [None] + [_value(rng)] * (len(spec["shape"]) - 1)
    elif kind == "tensor_meta" and tensors:
        t = tensors[rng.integers(len(tensors))]
        key = ["shape", "dtype", "offset", "nbytes", "name"][rng.integers(5)]
        t[key] = _value(rng) if key != "dtype" else ["|i1", "<f4", "<i8", "|O", "<c8", "x"][rng.integers(6)]
    elif kind == "data_bytes" and data:
        b = bytearray(data)
        for _ in range(rng.integers(1, 16)):
            pos = rng.integers(len(b))
            b[pos:pos + 8] = struct.pack("<q", [2**62, -1, 2**31, 0, -2**63][rng.integers(5)])[:len(b) - pos]
        data = bytes(b)
    elif kind == "header_bytes":
        raw = bytearray(json.dumps(header, separators=(",", ":")).encode())
        for _ in range(rng.integers(1, 4)):
            raw[rng.integers(len(raw))] = b'0123456789[]{},:"-.eE \x00\xff'[rng.integers(22)]
        body = blob[:12] + struct.pack("<Q", len(raw)) + bytes(raw)
        body += b"\0" * ((-len(body)) % 64) + data
        return kind, body + struct.pack("<I", zlib.crc32(body))
    return kind, _join(header, data, blob)


# ---------------------------------------------------------------------------------------------- one case
def _feeds(model, rng):
    """A small input for every graph input (None dimensions 2), or None when a declared one is too large to feed."""
    feeds = {}
    for spec in model.input_specs:
        shape = tuple(2 if d is None else int(d) for d in spec.shape)
        if math.prod(shape) > 1 << 16:
            return None
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "iub":
            feeds[spec.name] = rng.integers(0, 2 if dtype.kind == "b" else 10, shape).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _case(blob: bytes, rng) -> dict:
    """Load, then run: the outcome as a dict (stage, outcome, exception class names and message)."""
    import tempfile

    import refquant
    with tempfile.NamedTemporaryFile(suffix=".rq", delete=False) as f:
        f.write(blob)
    try:
        model = refquant.load(f.name)
    except BaseException as exc:  # noqa: BLE001 - the classification below is the test
        return {"stage": "load", "outcome": "raised", "types": [t.__name__ for t in type(exc).__mro__],
                "message": str(exc)[:200]}
    finally:
        os.unlink(f.name)
    try:
        feeds = _feeds(model, rng)
    except (ValueError, MemoryError):  # an input this harness cannot build (a declared dimension near 2**63)
        feeds = None
    if feeds is None:
        return {"stage": "load", "outcome": "loaded, input too large to feed"}
    try:
        model.run(feeds)
    except BaseException as exc:  # noqa: BLE001
        return {"stage": "run", "outcome": "raised", "types": [t.__name__ for t in type(exc).__mro__],
                "message": str(exc)[:200]}
    return {"stage": "run", "outcome": "ran"}


def _acceptable(result: dict) -> bool:
    if result["outcome"] in ("ran", "loaded, input too large to feed"):
        return True
    if result["outcome"] != "raised":
        return False
    types = result["types"]
    if "RefquantError" in types:
        return True
    return result["stage"] == "run" and any(t in RUN_ERRORS for t in types)


def _isolated(fn, timeout: int) -> dict:
    """fn() in a forked child under an address-space limit and an alarm; a signal or timeout is reported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            usage = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (usage + MEMORY_HEADROOM, resource.RLIM_INFINITY))
        except (OSError, ValueError):
            pass
        signal.alarm(timeout)
        out = json.dumps(fn()).encode()
        os.write(w, out)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"outcome": "timeout" if sig == signal.SIGALRM else f"signal {signal.Signals(sig).name}"}
    return json.loads(data) if data else {"outcome": f"no report (exit status {status})"}


def main() -> dict:
    """The fuzz loop (run in a child interpreter by the test): prints and returns the summary."""
    seconds = float(os.environ.get("REFQUANT_FUZZ_SECONDS", "8"))
    max_cases = int(os.environ.get("REFQUANT_FUZZ_CASES", "0")) or None
    seed = int(os.environ.get("REFQUANT_FUZZ_SEED", "0"))
    only = os.environ.get("REFQUANT_FUZZ_ONLY")
    warnings.simplefilter("ignore")  # overflow / invalid-value warnings of hostile values are expected
    seeds = _seed_models()
    names = sorted(seeds)
    counts: dict = {}
    bad = []
    start, i = time.monotonic(), 0
    indices = [int(only)] if only else None
    while True:
        if indices is not None:
            if not indices:
                break
            i = indices.pop()
        elif time.monotonic() - start > seconds or (max_cases is not None and i >= max_cases):
            break
        rng = np.random.default_rng([seed, i])
        name = names[rng.integers(len(names))]
        kind, blob = _mutate(seeds[name], rng)
        result = _isolated(lambda: _case(blob, rng), timeout=60)
        key = f"{result.get('stage', '-')}: {result['outcome']}" + (
            f" {result['types'][0]}" if result.get("types") else "")
        counts[key] = counts.get(key, 0) + 1
        if not _acceptable(result):
            bad.append({"case": i, "seed_model": name, "mutation": kind, **result})
        i += 1
    total = sum(counts.values())
    summary = {"cases": total, "seconds": round(time.monotonic() - start, 1), "seed": seed, "outcomes": counts,
               "failures": bad[:50], "n_failures": len(bad)}
    print(f"fuzz .rq: {total} cases in {summary['seconds']} s (seed {seed}), {len(bad)} failures; outcomes: "
          f"{json.dumps(counts, sort_keys=True)}", file=sys.stderr)
    return summary


def test_fuzz_rq_files_load_and_run_or_fail_cleanly(record_property):
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=3600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print(proc.stderr.strip().splitlines()[-1])
    record_property("fuzz_cases", summary["cases"])
    assert summary["cases"] > 0
    assert summary["n_failures"] == 0, json.dumps(summary["failures"][:10], indent=1)


if __name__ == "__main__":
    print(json.dumps(main()))
