"""all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) loaded by ``refquant.models.load_bert``: FP32 vs every
quantization refquant has for it, and onnxruntime next to it.

1. Quality on 30 sentences (6 topics x 5): per sentence, the cosine between the variant's and FP32's
   embedding (mean / min); the nearest-neighbour agreement (for each sentence, is its nearest other sentence
   by cosine the same as with FP32) and the top-3 overlap; parameter bytes. Variants: quant_post_dynamic INT8
   and INT16 (weight only, ``quantizable_op_type=("mul",)``: every projection), quant_embedding (int8 word
   table), quantize_dynamic (INT8 weights + dynamic INT8 activations), and quantize_dynamic + quant_embedding.
2. Latency at ``threads`` (default 1) for batch 8 x 128 tokens (padded to 128): refquant FP32,
   quant_post_dynamic INT8 (dequantizes every run), quantize_dynamic; onnxruntime FP32 on
   ``refquant.export_onnx(fp32)`` and on ``onnxruntime.quantization.quantize_dynamic`` of that file
   (per-channel QInt8 weights, ORT's defaults otherwise; the export uses ``load_bert(seq_len=128)``, the
   same weights with a static position slice). BLAS and OpenMP both limited (threadpoolctl); the runners are
   timed round-robin (median of ``repeats``).
"""
from __future__ import annotations

import json
import os
import tempfile

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
        "quantize_dynamic reduce_range (weights in [-64, 64])": quantize_dynamic(fp32, reduce_range=True),
        "quantize_dynamic + quant_embedding": quant_embedding(dyn),
    }


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
    runners = {"refquant_fp32": models["fp32"],
               "refquant_quant_post_dynamic_int8": models["quant_post_dynamic int8 (weights)"],
               "refquant_dynamic_int8": models["quantize_dynamic (int8 weights + activations)"],
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
            result["latency"][f"{n}t"] = lat
            print(json.dumps({f"{n}t": lat}), flush=True)
        threads.set_num_threads(before)
    result["latency_shape"] = [batch, seq]
    return result


def markdown(r: dict) -> str:
    q = table(["variant", "params MB", "cosine to FP32 mean", "min", "nearest neighbour same", "top-3 overlap"],
              [[row["variant"], f"{row['param_mb']:.2f}", f"{row['cos_mean']:.5f}", f"{row['cos_min']:.5f}",
                f"{row['nn_agree']:.3f}", f"{row['top3_overlap']:.3f}"] for row in r["quality"]])
    parts = [f"### Quality, {r['sentences']} sentences (embeddings vs FP32 refquant)", q]
    cols = ["refquant_fp32", "refquant_quant_post_dynamic_int8", "refquant_dynamic_int8", "refquant_dynamic_int8_rr",
            "ort_fp32", "ort_dynamic_int8"]
    b, t = r.get("latency_shape", [8, 128])
    for n, lat in r["latency"].items():
        cells = [f"{lat[c]:.0f}" if c in lat else "-" for c in cols]
        cells.append(f"**{lat['speedup_dynamic_vs_fp32']:.2f}x** / **{lat['speedup_dynamic_rr_vs_fp32']:.2f}x**")
        cells.append(f"{lat['ort_speedup_dynamic_vs_fp32']:.2f}x" if "ort_speedup_dynamic_vs_fp32" in lat else "-")
        cells.append(f"{lat['ort_fp32'] / lat['refquant_fp32']:.2f}x" if "ort_fp32" in lat else "-")
        parts.append(f"### Latency, batch {b} x {t} tokens, {n[:-1]} thread(s), ms (median)")
        parts.append(table(["refquant FP32", "refquant weight-only INT8", "refquant dynamic INT8",
                            "refquant dynamic INT8 reduce_range", "ORT FP32", "ORT dynamic INT8",
                            "refquant dynamic/FP32 speed-up (8-bit / reduce_range)", "ORT dynamic/FP32 speed-up",
                            "refquant FP32 vs ORT FP32 speed"],
                           [cells]))
    if "ort_skipped" in r:
        parts.append(f"onnxruntime not measured: {r['ort_skipped']}")
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(markdown(run()))
