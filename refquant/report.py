"""Tables for ``refquant eval`` and ``refquant demo``: accuracy, size and latency of zoo models, and what each
post-training quantization method does to them."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ._files import write_text_atomic
from .graph import Model


def median_ms(fn, repeats: int = 20, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def latency_ms(model: Model, feed: dict, repeats: int = 20) -> float:
    """Median wall time of ``model.run(feed)`` in milliseconds, after one warm-up run."""
    return median_ms(lambda: model.run(feed), repeats)


def evaluate_zoo_model(name: str, path: Optional[Path] = None, model: Optional[Model] = None) -> dict:
    """One table row: test top-1, file size and batch-1 latency of a trained zoo model."""
    from .io import load
    from .io.format import to_bytes
    from .models import count_params, zoo
    from .models.pretrained import pretrained
    from .train import evaluate
    if model is None:
        model = load(path) if path is not None else pretrained(name)
    x, y = zoo.load_data(name, "test")
    start = time.perf_counter()
    top1 = evaluate(model, x, y)
    eval_s = time.perf_counter() - start
    return dict(model=name, params=count_params(model, trainable_only=True), top1=round(100 * top1, 2),
                size_mb=round(len(to_bytes(model)) / 1e6, 3), latency_ms=round(latency_ms(model, {model.inputs[0]: x[:1]}), 3),
                test_images=len(y), eval_s=round(eval_s, 2))


def format_table(rows: list[dict]) -> str:
    lines = ["| model | params | FP32 top-1 % | size MB | latency ms (batch 1) | test set eval s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['top1']:.2f} | {r['size_mb']:.3f} | "
                     f"{r['latency_ms']:.3f} | {r['eval_s']:.2f} ({r['test_images']} samples) |")
    return "\n".join(lines)


def static_algos() -> tuple[str, ...]:
    """The static PTQ columns of the table: :func:`refquant.calibration.algorithms.static_algorithms`."""
    from .calibration.algorithms import static_algorithms
    return static_algorithms()


def ptq_row(name: str, batch_size: int = 32, batch_nums: int = 10) -> dict:
    """Test top-1 (%) and file size (MB) of zoo model ``name``: FP32, static PTQ with each algo (calibrated on the
    first ``batch_nums`` training batches), dynamic INT8 / INT16 weights and, for models with an embedding
    table, embedding quantization."""
    from .io.format import to_bytes
    from .models import zoo
    from .models.pretrained import pretrained
    from .quant import quant_embedding, quant_post_dynamic, quant_post_static
    from .train import evaluate
    model = pretrained(name)
    xt, yt = zoo.load_data(name, "test")
    feeds = zoo.calibration_feeds(name, model.inputs[0], batch_size, batch_nums)
    row = {"model": name, "fp32": 100 * evaluate(model, xt, yt), "fp32_mb": len(to_bytes(model)) / 1e6}
    start = time.perf_counter()
    for algo in static_algos():
        row[algo] = 100 * evaluate(quant_post_static(model, feeds, algo=algo), xt, yt)
    for bits in (8, 16):
        q = quant_post_dynamic(model, weight_bits=bits)
        row[f"int{bits}"], row[f"int{bits}_mb"] = 100 * evaluate(q, xt, yt), len(to_bytes(q)) / 1e6
    if any(op.type in ("lookup_table", "lookup_table_v2") for op in model.ops):
        q = quant_embedding(model)
        row["embedding"], row["embedding_mb"] = 100 * evaluate(q, xt, yt), len(to_bytes(q)) / 1e6
    row["seconds"] = time.perf_counter() - start
    return row


def format_ptq_table(rows: list[dict]) -> str:
    """Top-1 % per method and sizes, one model per line ("-": not applicable)."""
    algos = static_algos()
    head = ["model", "FP32"] + [f"static {a}" for a in algos] + \
        ["dynamic INT8", "dynamic INT16", "embedding INT8", "MB FP32 / INT8 / INT16 / emb"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["model"], f"{r['fp32']:.2f}"] + [f"{r[a]:.2f}" for a in algos] + \
            [f"{r['int8']:.2f}", f"{r['int16']:.2f}", f"{r['embedding']:.2f}" if "embedding" in r else "-"]
        sizes = [r["fp32_mb"], r["int8_mb"], r["int16_mb"]] + ([r["embedding_mb"]] if "embedding" in r else [])
        cells.append(" / ".join(f"{s:.3f}" for s in sizes))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def int8_row(name: str, algo: str = "hist", batch_size: int = 32, batch_nums: int = 10) -> dict:
    """Zoo model ``name`` deployed: static PTQ (``algo``) -> :func:`refquant.deploy.convert_to_int8`; test top-1
    of the fake-quant and INT8 graphs (8-bit weights, and halved ones with ``reduce_range``), batch-1 and batch-64
    latency FP32 vs INT8, file sizes."""
    from .deploy import convert_to_int8
    from .io.format import to_bytes
    from .models import zoo
    from .models.pretrained import pretrained
    from .quant import quant_post_static
    from .train import evaluate
    model = pretrained(name)
    xt, yt = zoo.load_data(name, "test")
    feeds = zoo.calibration_feeds(name, model.inputs[0], batch_size, batch_nums)
    q = quant_post_static(model, feeds, algo=algo)
    i8 = convert_to_int8(q)
    row = {"model": name, "algo": algo, "fp32": 100 * evaluate(model, xt, yt), "fake_quant": 100 * evaluate(q, xt, yt),
           "int8": 100 * evaluate(i8, xt, yt),
           "int8_reduce_range": 100 * evaluate(convert_to_int8(q, reduce_range=True), xt, yt), "int8_ops": i8.meta["int8"]["int8_ops"],
           "fp32_mb": len(to_bytes(model)) / 1e6, "int8_mb": len(to_bytes(i8)) / 1e6}
    for batch in (1, 64):
        feed = {model.inputs[0]: xt[:batch]}
        row[f"fp32_ms_b{batch}"] = latency_ms(model, feed)
        row[f"int8_ms_b{batch}"] = latency_ms(i8, feed)
    return row


def format_int8_table(rows: list[dict]) -> str:
    head = ["model", "FP32 top-1", "fake-quant top-1", "INT8 top-1", "INT8 reduce_range top-1", "INT8 ops", "MB FP32 / INT8",
            "ms batch 1 FP32 / INT8", "ms batch 64 FP32 / INT8 (speed-up)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['fp32']:.2f} | {r['fake_quant']:.2f} | {r['int8']:.2f} | "
                     f"{r['int8_reduce_range']:.2f} | {r['int8_ops']} | "
                     f"{r['fp32_mb']:.3f} / {r['int8_mb']:.3f} | {r['fp32_ms_b1']:.2f} / {r['int8_ms_b1']:.2f} | "
                     f"{r['fp32_ms_b64']:.1f} / {r['int8_ms_b64']:.1f} "
                     f"({r['fp32_ms_b64'] / r['int8_ms_b64']:.1f}x) |")
    return "\n".join(lines)


QAT_MODELS = ("lenet5", "mobilenet_v1", "mobilenet_v2", "resnet20", "text_mean")


def qat_row(name: str, batch_size: int = 32, batch_nums: int = 10) -> dict:
    """Test top-1 (%) of zoo model ``name``: FP32, static PTQ (KL) and QAT at 8 and at 4 bits (weights and
    activations; QAT models from :func:`refquant.models.pretrained.pretrained_qat`, cached or fine-tuned now);
    for a model with an embedding table, also QAT 8-bit with ``quant_embedding`` on the table."""
    from .models import zoo
    from .models.pretrained import pretrained, pretrained_qat
    from .quant import quant_embedding, quant_post_static
    from .train import evaluate
    model = pretrained(name)
    xt, yt = zoo.load_data(name, "test")
    feeds = zoo.calibration_feeds(name, model.inputs[0], batch_size, batch_nums)
    start = time.perf_counter()
    row = {"model": name, "fp32": 100 * evaluate(model, xt, yt)}
    for bits in (8, 4):
        row[f"ptq_kl_{bits}"] = 100 * evaluate(quant_post_static(model, feeds, algo="KL", weight_bits=bits,
                                                                 activation_bits=bits), xt, yt)
        qat = pretrained_qat(name, bits)
        row[f"qat_{bits}"] = 100 * evaluate(qat, xt, yt)
        if bits == 8 and any(op.type in ("lookup_table", "lookup_table_v2") for op in qat.ops):
            row["qat_8_embedding"] = 100 * evaluate(quant_embedding(qat), xt, yt)
    row["seconds"] = time.perf_counter() - start
    return row


def format_qat_table(rows: list[dict]) -> str:
    head = ["model", "FP32", "PTQ KL 8-bit", "QAT 8-bit", "PTQ KL 4-bit", "QAT 4-bit", "QAT 8-bit + embedding INT8"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["model"]] + [f"{r[k]:.2f}" for k in ("fp32", "ptq_kl_8", "qat_8", "ptq_kl_4", "qat_4")]
        cells.append(f"{r['qat_8_embedding']:.2f}" if "qat_8_embedding" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _section(title: str, names, row_fn, format_fn) -> list[dict]:
    """Compute ``row_fn(name)`` for each model, printing progress, then print the table."""
    print(f"\n{title}:", flush=True)
    rows = []
    for name in names:
        start = time.perf_counter()
        rows.append(row_fn(name))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    if rows:
        print()
        print(format_fn(rows))
    return rows


def demo(models: Optional[list[str]] = None, json_path: Optional[Path] = None) -> int:
    """The main job on the embedded data: every trainable zoo model (cached or trained now), FP32 row each."""
    from ._build import build_info
    from .models import zoo
    info = build_info()
    print(f"refquant {info['version']}: OpenMP {'on' if info['openmp'] else 'off'}, "
          f"{info['num_threads']} threads; kernels: " +
          ", ".join(f"{k} {v}" for k, v in info["kernels"].items()), flush=True)
    rows = []
    for name in models or zoo.names():
        start = time.perf_counter()
        rows.append(evaluate_zoo_model(name))
        print(f"  {name}: top-1 {rows[-1]['top1']:.2f}% ({time.perf_counter() - start:.1f} s)", flush=True)
    print()
    print(format_table(rows))
    names = models or zoo.names()
    ptq = _section("Post-training quantization (test top-1 %; static: 10 calibration batches of 32, Paddle's "
                   "defaults)", names, ptq_row, format_ptq_table)
    int8 = _section("INT8 deployment (static PTQ hist -> convert_to_int8; latency on this machine, all threads)",
                    names, int8_row, format_int8_table)
    qat = _section("Quantization-aware training vs static PTQ (test top-1 %; QAT models cached in data/zoo, or "
                   "fine-tuned now: a few minutes each)", [n for n in names if n in QAT_MODELS], qat_row,
                   format_qat_table)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps({"fp32": rows, "ptq": ptq, "int8": int8, "qat": qat}, indent=1))
    return 0
