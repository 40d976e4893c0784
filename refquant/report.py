"""Tables for ``refquant eval`` and ``refquant demo``: accuracy, size and latency of zoo models."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .graph import Model


def latency_ms(model: Model, feed: dict, repeats: int = 20) -> float:
    """Median wall time of ``model.run(feed)`` in milliseconds, after one warm-up run."""
    model.run(feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


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
    if json_path is not None:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return 0
