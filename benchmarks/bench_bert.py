"""all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) loaded by ``refquant.models.load_bert``: FP32 vs every
quantization refquant has for it, and onnxruntime next to it.

1. Quality on 30 sentences (6 topics x 5): per sentence, the cosine between the variant's and FP32's
   embedding (mean / min); the nearest-neighbour agreement (for each sentence, is its nearest other sentence
   by cosine the same as with FP32) and the top-3 overlap; parameter bytes. Variants: quant_post_dynamic INT8
   and INT16 (weight only, ``quantizable_op_type=("mul",)``: every projection), quant_embedding (int8 word
   table), quantize_dynamic (INT8 weights + dynamic INT8 activations, attention's matmuls too; also with
   ``activation_matmuls=False`` and with ``reduce_range``), and quantize_dynamic + quant_embedding.
2. Latency at ``threads`` (default 1) for batch 8 x 128 tokens (padded to 128): refquant FP32,
   quant_post_dynamic INT8 (dequantizes every run), quantize_dynamic (also with ``activation_matmuls=False``:
   attention's Q K^T and P V in float, and with ``reduce_range``); onnxruntime FP32 on
   ``refquant.export_onnx(fp32)`` and on ``onnxruntime.quantization.quantize_dynamic`` of that file
   (per-channel QInt8 weights, ORT's defaults otherwise; the export uses ``load_bert(seq_len=128)``, the
   same weights with a static position slice). BLAS and OpenMP both limited (threadpoolctl); the runners are
   timed round-robin (median of ``repeats``).
3. Where the time of the quantize_dynamic model goes: ms per op type (median of 3 runs, 1 thread), and the GOPS
   of its weight GEMMs against the single-core peak of the multiply instruction of the qgemm path that ran
   (vpdpbusd on VNNI; vpmaddwd on AVX2, where full-range int8 weights cannot use vpmaddubsw exactly).
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
import time

import numpy as np


from .common import blas_limits, interleaved_medians, machine, table

SENTENCES = [
    # animals
    "A cat is sleeping on the sofa.", "The dog chased the ball across the park.",
    "A kitten is napping on the couch.", "Birds were singing in the trees at dawn.",
    "The puppy ran after a tennis ball in the garden.",
    # food
    "A man is eating a bowl of pasta.", "She baked fresh bread this morning.",
    "The restaurant serves excellent Italian food.", "He is having spaghetti for dinner.",
    "Homemade bread smells wonderful when it comes out of the oven.",
    # finance
    "The stock market fell sharply on Monday.", "Interest rates were raised by the central bank.",
    "Shares dropped after the disappointing earnings report.", "Inflation is hurting household budgets.",
    "The bank increased its lending rate by half a percent.",
    # computing
    "How do I reset my password?", "The laptop will not turn on after the update.",
    "I forgot the password for my email account.", "Quantization makes neural networks smaller and faster.",
    "Reducing the precision of model weights speeds up inference.",
    # sport
    "The team won the championship in overtime.", "She runs a marathon every spring.",
    "The football match ended in a draw.", "He trains for long distance running every morning.",
    "The home side scored a late goal to win the game.",
    # weather / travel
    "It is going to rain heavily tomorrow.", "The flight to Paris was delayed by two hours.",
    "Expect storms and strong winds this weekend.", "Our train to Berlin was cancelled.",
    "The sky is clear and the sun is shining.",
]


def _unit(e):
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def quality(ref: np.ndarray, emb: np.ndarray) -> dict:
    """Cosine to the FP32 embeddings and agreement of the similarity ranking (nearest / top-3 neighbours)."""
    r, e = _unit(ref.astype(np.float64)), _unit(emb.astype(np.float64))
    cos = np.sum(r * e, axis=1)
    sr, se = r @ r.T, e @ e.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(se, -np.inf)
    nn_same = np.argmax(sr, axis=1) == np.argmax(se, axis=1)
    top3 = [len(set(np.argsort(-sr[i])[:3]) & set(np.argsort(-se[i])[:3])) / 3 for i in range(len(r))]
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "nn_agree": float(nn_same.mean()),
            "top3_overlap": float(np.mean(top3))}


def variants(fp32):
    from refquant.quant import quant_embedding, quant_post_dynamic
    from refquant.quant.dynamic_activations import quantize_dynamic
    dyn = quantize_dynamic(fp32)
    return {
        "fp32": fp32,
        "quant_post_dynamic int8 (weights)": quant_post_dynamic(fp32, 8, quantizable_op_type=("mul",)),
        "quant_post_dynamic int16 (weights)": quant_post_dynamic(fp32, 16, quantizable_op_type=("mul",)),
        "quant_embedding int8 (word table)": quant_embedding(fp32),
        "quantize_dynamic (int8 weights + activations)": dyn,
        "quantize_dynamic activation_matmuls=False (attention matmuls float)":
            quantize_dynamic(fp32, activation_matmuls=False),
        "quantize_dynamic reduce_range (weights in [-64, 64])": quantize_dynamic(fp32, reduce_range=True),
        "quantize_dynamic + quant_embedding": quant_embedding(dyn),
    }


def op_times(model, feeds, repeats: int = 3) -> dict:
    """ms per op type (median over ``repeats`` runs of each run's sum), largest first: where a run's time goes."""
    from refquant.executor import OpContext, _check_feeds
    from refquant.ops.registry import get_op
    runs = []
    for _ in range(repeats):
        env, spent = dict(model.params), collections.Counter()
        env.update(_check_feeds(model, feeds))
        for op in model.ops:
            args = [env[n] if n else None for n in op.inputs]
            start = time.perf_counter()
            out = get_op(op.type, op.name).forward(OpContext(False, None), op.attrs, *args)
            spent[op.type] += time.perf_counter() - start
            env.update(zip(op.outputs, out if isinstance(out, tuple) else (out,)))
        runs.append(spent)
    return {k: 1e3 * float(np.median([r[k] for r in runs])) for k, _ in runs[0].most_common()}


def gemm_report(model, feeds, ms: float) -> dict:
    """The weight GEMMs of a quantize_dynamic model: qgemm path, GOPS (2 x MACs / ``ms``) and the path's peak."""
    from refquant._dispatch import kernel
    from refquant.reference.qgemm import PAIRS_FIT_S16, header_flags
    qg, rows = kernel("qgemm"), int(np.prod(feeds["input_ids"].shape))
    ops = [op for op in model.ops if op.type == "matmul_dynamic_int8"]
    macs = sum(rows * op.attrs["K"] * op.attrs["N"] for op in ops)
    path = qg.current_path() if hasattr(qg, "current_path") else "reference"
    fit = all(header_flags(model.params[op.inputs[1]]) & PAIRS_FIT_S16 for op in ops)
    out = {"path": path, "gops": 2 * macs / ms / 1e6}
    try:
        from refquant._kernels import peak
        if path == "avx2":
            out["kernel"] = "vpmaddubsw (weight pairs fit s16)" if fit else "vpmaddwd (exact, full-range weights)"
            if not fit:
                out["peak_gops"] = peak.vpmaddwd_peak_gops()
        elif "vnni" in path:
            out["peak_gops"] = peak.vpdpbusd_peak_gops()
    except (ImportError, AttributeError, RuntimeError):
        pass
    return out


def _ort(fp32, tmp):
    """The exported FP32 ONNX model (``fp32`` built with a fixed ``seq_len``: the exporter cannot follow the
    dynamic-length graph's shape -> slice chain) and ORT's own dynamic quantization of it."""
    import onnxruntime  # noqa: F401
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import refquant
    paths = {"ort_fp32": os.path.join(tmp, "bert.fp32.onnx"), "ort_dynamic_int8": os.path.join(tmp, "bert.dyn.onnx")}
    refquant.export_onnx(fp32, paths["ort_fp32"])
    quantize_dynamic(paths["ort_fp32"], paths["ort_dynamic_int8"], weight_type=QuantType.QInt8, per_channel=True)
    return paths


def _session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(threads_list=(1,), repeats: int = 7, batch: int = 8, seq: int = 128) -> dict:
    from refquant import threads
    from refquant.models import load_bert

    fp32, tok = load_bert()
    if tok is None:
        raise RuntimeError("bench_bert needs the 'tokenizers' package")
    feeds = tok.encode(SENTENCES)
    models = variants(fp32)
    ref = fp32.run(feeds)["sentence_embedding"]
    result = {"machine": machine(), "model": "all-MiniLM-L6-v2", "sentences": len(SENTENCES), "quality": [],
              "latency": {}}
    for name, m in models.items():
        row = {"variant": name, "param_mb": m.param_bytes() / 1e6}
        row.update(quality(ref, m.run(feeds)["sentence_embedding"]))
        result["quality"].append(row)
        print(json.dumps(row), flush=True)

    texts = (SENTENCES * ((batch + len(SENTENCES) - 1) // len(SENTENCES)))[:batch]
    bfeeds = tok.encode(texts, max_len=seq, padding="max_length")
    dyn = models["quantize_dynamic (int8 weights + activations)"]
    runners = {"refquant_fp32": models["fp32"],
               "refquant_quant_post_dynamic_int8": models["quant_post_dynamic int8 (weights)"],
               "refquant_dynamic_int8": dyn,
               "refquant_dynamic_int8_linear": models["quantize_dynamic activation_matmuls=False (attention "
                                                      "matmuls float)"],
               "refquant_dynamic_int8_rr": models["quantize_dynamic reduce_range (weights in [-64, 64])"]}
    before = threads.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx_paths = _ort(load_bert(seq_len=seq)[0], tmp)
        except Exception as exc:  # export or ORT missing: say so in the result
            onnx_paths = {}
            result["ort_skipped"] = f"{type(exc).__name__}: {exc}"
        for name, path in onnx_paths.items():
            sess = _session(path, 1)
            out = sess.run(None, tok.encode(SENTENCES, max_len=seq, padding="max_length"))[0]
            row = {"variant": f"onnxruntime {name[4:]}", "param_mb": os.path.getsize(path) / 1e6}
            row.update(quality(ref, out))
            result["quality"].append(row)
        for n in threads_list:
            threads.set_num_threads(n)
            lat = {}
            with blas_limits(n):
                fns = {key: (lambda m=m: m.run(bfeeds)) for key, m in runners.items()}
                for key, path in onnx_paths.items():
                    fns[key] = (lambda s=_session(path, n): s.run(None, dict(bfeeds)))
                lat = {k: 1e3 * v for k, v in interleaved_medians(fns, repeats).items()}
            lat["speedup_dynamic_vs_fp32"] = lat["refquant_fp32"] / lat["refquant_dynamic_int8"]
            lat["speedup_dynamic_rr_vs_fp32"] = lat["refquant_fp32"] / lat["refquant_dynamic_int8_rr"]
            if "ort_dynamic_int8" in lat:
                lat["ort_speedup_dynamic_vs_fp32"] = lat["ort_fp32"] / lat["ort_dynamic_int8"]
                lat["dynamic_vs_ort_dynamic"] = lat["ort_dynamic_int8"] / lat["refquant_dynamic_int8"]
                lat["dynamic_rr_vs_ort_dynamic"] = lat["ort_dynamic_int8"] / lat["refquant_dynamic_int8_rr"]
            result["latency"][f"{n}t"] = lat
            print(json.dumps({f"{n}t": lat}), flush=True)
        threads.set_num_threads(1)
        with blas_limits(1):
            dyn.run(bfeeds)
            result["op_ms"] = op_times(dyn, bfeeds)
        result["gemm"] = gemm_report(dyn, bfeeds, result["op_ms"].get("matmul_dynamic_int8", float("nan")))
        print(json.dumps({"op_ms": result["op_ms"], "gemm": result["gemm"]}), flush=True)
        threads.set_num_threads(before)
    result["latency_shape"] = [batch, seq]
    return result


def markdown(r: dict) -> str:
    q = table(["variant", "params MB", "cosine to FP32 mean", "min", "nearest neighbour same", "top-3 overlap"],
              [[row["variant"], f"{row['param_mb']:.2f}", f"{row['cos_mean']:.5f}", f"{row['cos_min']:.5f}",
                f"{row['nn_agree']:.3f}", f"{row['top3_overlap']:.3f}"] for row in r["quality"]])
    parts = [f"### Quality, {r['sentences']} sentences (embeddings vs FP32 refquant)", q]
    cols = ["refquant_fp32", "refquant_quant_post_dynamic_int8", "refquant_dynamic_int8",
            "refquant_dynamic_int8_linear", "refquant_dynamic_int8_rr", "ort_fp32", "ort_dynamic_int8"]
    b, t = r.get("latency_shape", [8, 128])
    for n, lat in r["latency"].items():
        cells = [f"{lat[c]:.0f}" if c in lat else "-" for c in cols]
        cells.append(f"**{lat['speedup_dynamic_vs_fp32']:.2f}x** / **{lat['speedup_dynamic_rr_vs_fp32']:.2f}x**")
        cells.append(f"{lat['ort_speedup_dynamic_vs_fp32']:.2f}x" if "ort_speedup_dynamic_vs_fp32" in lat else "-")
        cells.append(f"{lat['ort_fp32'] / lat['refquant_fp32']:.2f}x" if "ort_fp32" in lat else "-")
        cells.append(f"**{lat['dynamic_vs_ort_dynamic']:.2f}x** / {lat['dynamic_rr_vs_ort_dynamic']:.2f}x"
                     if "dynamic_vs_ort_dynamic" in lat else "-")
        parts.append(f"### Latency, batch {b} x {t} tokens, {n[:-1]} thread(s), ms (median)")
        parts.append(table(["refquant FP32", "refquant weight-only INT8", "refquant dynamic INT8",
                            "same, attention matmuls in float", "refquant dynamic INT8 reduce_range", "ORT FP32",
                            "ORT dynamic INT8", "refquant dynamic/FP32 speed-up (8-bit / reduce_range)",
                            "ORT dynamic/FP32 speed-up", "refquant FP32 vs ORT FP32 speed",
                            "refquant dynamic INT8 vs ORT dynamic INT8 speed (8-bit / reduce_range)"],
                           [cells]))
    if "op_ms" in r:
        g = r["gemm"]
        peak = f", peak {g['peak_gops']:.0f} GOPS ({g['gops'] / g['peak_gops']:.2f} of it)" if "peak_gops" in g else ""
        parts.append(f"### refquant dynamic INT8, ms per op type (1 thread)\n\nweight GEMMs: qgemm path "
                     f"{g['path']} {g.get('kernel', '')}, {g['gops']:.0f} GOPS{peak}")
        parts.append(table(["op type", "ms"], [[k, f"{v:.1f}"] for k, v in r["op_ms"].items() if v >= 0.05]))
    if "ort_skipped" in r:
        parts.append(f"onnxruntime not measured: {r['ort_skipped']}")
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(markdown(run()))
