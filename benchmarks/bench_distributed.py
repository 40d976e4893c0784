"""refquant.distributed on a 2-worker Dask LocalCluster (processes, one thread each) vs one process.

- Exactness: thresholds of every static algorithm, 1, 2 and 3 shards per worker, == one process over the same
  batches (three zoo models and PP-OCR rec when rapidocr-onnxruntime is installed).
- Speed: KL calibration of 64 batches of MobileNetV2 and of PP-OCR rec (one line per batch), the cluster vs one
  process on one thread (round-robin medians); the PP-OCR det sensitivity sweep (mode "only") likewise, on a
  realistic evaluation set (6 held-out pages at det_set's default size, 4 calibration pages) and on one small
  page (where the fixed costs dominate), the latter also with one task per layer.
- Driver memory: peak RSS of a fresh driver process calibrating 1x and 10x as many shard files.
- The cost model of docs/distributed.md: per-shard compute, the merge of one shard's result, the per-round
  overhead.

Calibration data are ``.npy`` files (one batch each) written to a temporary folder; shards are read by the workers.
``refquant bench distributed`` runs the full sizes (about 15 minutes on a quiet 2-core machine);
``REFQUANT_BENCH_QUICK=1`` or ``python -m benchmarks.bench_distributed --quick`` runs tiny ones that only show it
works. ``REFQUANT_BENCH_DISTRIBUTED=sensitivity refquant bench distributed`` (or ``python -m
benchmarks.bench_distributed sensitivity``) runs only the named sections, among exact, speed, sensitivity, rss.
The load average of the machine (``os.getloadavg()``) is recorded before and after every speed row: the ratios
mean something only on an otherwise idle machine.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import machine, table

FULL = {"exact_batches": 6, "exact_batch": 4, "exact_rec_lines": 6, "speed_batches": 64, "speed_batch": 8,
        "speed_rec_batches": 64, "speed_shards": 2, "repeats": 2,
        "det_cases": ({"calib": 4, "eval": 6, "size": None, "repeats": 3},
                      {"calib": 2, "eval": 1, "size": (320, 224), "repeats": 5, "one_per_layer": True}),
        "rss_files": 8, "rss_batch": 8}
QUICK = {"exact_batches": 6, "exact_batch": 2, "exact_rec_lines": 6, "speed_batches": 8, "speed_batch": 8,
         "speed_rec_batches": 4, "speed_shards": 2, "repeats": 1,
         "det_cases": ({"calib": 1, "eval": 1, "size": (160, 128), "repeats": 1, "one_per_layer": True},),
         "rss_files": 2, "rss_batch": 4}
ZOO = ("lenet5", "resnet20", "mobilenet_v2")


def _log(*a):
    print(*a, file=sys.stderr, flush=True)


def _one_thread():
    """One process, one thread: refquant's OpenMP kernels and NumPy's BLAS both on one, as on the workers (Dask
    starts them with OMP_NUM_THREADS=1 etc.). The reference must match them: OpenBLAS rounds some matmuls (PP-OCR
    rec's) differently on 2 threads than on 1, which changes the FP32 activations, not the merge."""
    from refquant import threads
    stack = contextlib.ExitStack()
    before = threads.get_num_threads()
    threads.set_num_threads(1)
    stack.callback(threads.set_num_threads, before)
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(1))
    except ImportError:
        pass
    return stack


def _write(folder: Path, feeds: list) -> list[str]:
    """One .npy file per batch (single-input models), named in batch order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, feed in enumerate(feeds):
        [x] = feed.values()
        paths.append(str(folder / f"b{i:04d}.npy"))
        np.save(paths[-1], x)
    return paths


def _groups(paths: list, n: int) -> list[list]:
    """``paths`` cut into ``n`` consecutive shards (sizes differ by at most one)."""
    return [list(g) for g in np.array_split(np.array(paths, dtype=object), n)]


def _models(sizes: dict, n_batches: int, batch: int, rec_lines: int):
    """``(label, model, feeds, quantizable_op_type)``: the zoo models, then PP-OCR rec (one line per batch)."""
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    from refquant.quant.sensitivity import DEFAULT_OPS
    for name in ZOO:
        model = pretrained(name)
        yield name, model, zoo.calibration_feeds(name, model.inputs[0], batch, n_batches), DEFAULT_OPS
    from refquant.realmodels import ppocr
    if rec_lines and ppocr.available():
        x, _ = ppocr.rec_set(rec_lines, seed=ppocr.CALIB_SEED)
        yield "PP-OCR rec", ppocr.load("rec"), ppocr.batches(x, 1), ppocr.QUANT_OPS


def _exactness(client, sizes, tmp: Path) -> list[dict]:
    from refquant import distributed as D
    from refquant.calibration.algorithms import static_algorithms
    from refquant.quant.post_static import calibrate_model
    rows = []
    for label, model, feeds, ops in _models(sizes, sizes["exact_batches"], sizes["exact_batch"],
                                            sizes["exact_rec_lines"]):
        files = _write(tmp / f"exact-{label.replace(' ', '_')}", feeds)
        for algo in static_algorithms():
            with _one_thread():  # as the workers: BLAS may round a matmul differently on more threads
                one = calibrate_model(model, feeds, algo, quantizable_op_type=ops)
            for per_worker in (1, 2, 3):
                got = D.calibrate(model, _groups(files, 2 * per_worker), algo, client=client,
                                  quantizable_op_type=ops)
                rows.append({"model": label, "algo": algo, "shards": 2 * per_worker,
                             "tensors": len(one.thresholds), "identical": got.thresholds == one.thresholds})
            _log("exact", label, algo, [r["identical"] for r in rows[-3:]])
    return rows


def _round_robin(fns: dict, repeats: int) -> dict:
    """Median seconds of each runner, timed in turn ``repeats`` times (no extra warm-up: the runs are long)."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def _merge_costs(shard, whole, n: int = 20) -> tuple[float, float]:
    """Milliseconds the driver spends merging one shard's result into the running total, and computing every
    threshold from the statistics of the whole calibration ``whole`` (once per calibration, on the driver; the
    shards skip their own: ``calibrate(..., thresholds=False)``)."""
    from refquant.distributed import _merge
    parts = [copy.deepcopy(shard) for _ in range(n + 1)]
    start = time.perf_counter()
    acc = None
    for i, p in enumerate(parts):
        acc = _merge(acc, p, i)
    merge_ms = 1e3 * (time.perf_counter() - start) / n
    whole = copy.deepcopy(whole)
    start = time.perf_counter()
    whole.compute_thresholds()
    return merge_ms, 1e3 * (time.perf_counter() - start)


def _speed(client, sizes, tmp: Path) -> list[dict]:
    from refquant import distributed as D
    from refquant.data.files import iter_feeds
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    from refquant.quant.post_static import calibrate_model
    from refquant.quant.sensitivity import DEFAULT_OPS
    from refquant.realmodels import ppocr
    cases = []
    model = pretrained("mobilenet_v2")
    cases.append(("MobileNetV2", model, zoo.calibration_feeds("mobilenet_v2", model.inputs[0], sizes["speed_batch"],
                                                              sizes["speed_batches"]), DEFAULT_OPS))
    if ppocr.available():
        x, _ = ppocr.rec_set(sizes["speed_rec_batches"], seed=ppocr.CALIB_SEED)
        cases.append(("PP-OCR rec", ppocr.load("rec"), ppocr.batches(x, 1), ppocr.QUANT_OPS))
    rows = []
    for label, model, feeds, ops in cases:
        files = _write(tmp / f"speed-{label.replace(' ', '_')}", feeds)
        shards = _groups(files, sizes["speed_shards"])
        out = {}

        def one():
            with _one_thread():
                out["one"] = calibrate_model(model, lambda: iter_feeds(model, files), "KL", quantizable_op_type=ops)

        def dist():
            out["dist"] = D.calibrate(model, shards, "KL", client=client, quantizable_op_type=ops)

        D.calibrate(model, files[:2], "abs_max", client=client, quantizable_op_type=ops)  # workers parse the model
        load = [os.getloadavg()[0]]
        t = _round_robin({"one process": one, "cluster": dist}, sizes["repeats"])
        load.append(os.getloadavg()[0])
        with _one_thread():
            per_batch = calibrate_model(model, [feeds[0]], "KL", quantizable_op_type=ops)
            merge_ms, threshold_ms = _merge_costs(per_batch, out["one"])
        rows.append({"model": label, "batches": len(files), "batch_shape": list(next(iter(feeds[0].values())).shape),
                     "shards": len(shards), "algo": "KL", "one_process_s": t["one process"],
                     "cluster_s": t["cluster"], "ratio": t["one process"] / t["cluster"],
                     "identical": out["one"].thresholds == out["dist"].thresholds,
                     "per_batch_s": (t["one process"] - threshold_ms / 1e3) / len(files), "merge_ms": merge_ms,
                     "threshold_ms": threshold_ms,
                     "tensors": len(out["one"].thresholds), "loadavg": load})
        _log("speed", json.dumps(rows[-1]))
    return rows


def _parse_on_workers(client, model) -> None:
    """Every worker parses ``model`` now (once per worker, as in any run), not in the first timed run."""
    import hashlib

    from refquant import distributed as D
    from refquant.io.format import to_bytes
    blob = to_bytes(model)
    client.run(D._model, hashlib.sha256(blob).hexdigest(), blob)


def _sensitivity(client, sizes, tmp: Path) -> list[dict]:
    """The PP-OCR det sweep (mode "only", abs_max, the relative output error over held-out pages), one process
    on one thread vs the cluster, round-robin, for every case of ``sizes["det_cases"]``: ``calib`` calibration
    pages (one shard file each) and ``eval`` held-out pages of ``size`` (None: det_set's default)."""
    from refquant import distributed as D
    from refquant.quant.sensitivity import quantized_ops, sensitivity
    from refquant.realmodels import ppocr
    if not ppocr.available():
        return []
    model = ppocr.load("det")
    layers = len(quantized_ops(model, ppocr.QUANT_OPS))
    rows = []
    for case in sizes["det_cases"]:
        size = {} if case["size"] is None else {"size": case["size"]}
        calib = [{"x": x} for x in ppocr.det_set(case["calib"], seed=ppocr.CALIB_SEED, **size)]
        held_out = [{"x": x} for x in ppocr.det_set(case["eval"], **size)]
        files = _write(tmp / f"sens-det-{case['calib']}-{case['eval']}", calib)
        shards = [[f] for f in files]
        out = {}

        def one():
            with _one_thread():
                out["one"] = sensitivity(model, calib, eval_feeds=held_out, algo="abs_max",
                                         quantizable_op_type=ppocr.QUANT_OPS)

        def dist(tasks=None, key="cluster"):
            out[key] = D.sensitivity(model, shards, eval_feeds=held_out, algo="abs_max",
                                     quantizable_op_type=ppocr.QUANT_OPS, client=client, tasks=tasks)

        cpu = {"one": [], "workers": [], "driver": []}

        def one_cpu():
            start = time.process_time()
            one()
            cpu["one"].append(time.process_time() - start)

        def dist_cpu():
            before, start = client.run(time.process_time), time.process_time()
            dist()
            cpu["driver"].append(time.process_time() - start)
            cpu["workers"].append(sorted(t - before[w] for w, t in client.run(time.process_time).items()))

        runners = {"one process": one_cpu, "cluster": dist_cpu}
        if case.get("one_per_layer"):
            runners["cluster, one task per layer"] = lambda: dist(layers, "per layer")
        _parse_on_workers(client, model)
        load = [os.getloadavg()[0]]
        t = _round_robin(runners, case["repeats"])
        load.append(os.getloadavg()[0])
        row = {"model": "PP-OCR det", "layers": layers, "calib_pages": len(calib), "eval_pages": len(held_out),
               "page": list(held_out[0]["x"].shape), "repeats": case["repeats"],
               "tasks": min(layers, D.TASKS_PER_WORKER * len(client.scheduler_info()["workers"])),
               "one_process_s": t["one process"], "cluster_s": t["cluster"],
               "ratio": t["one process"] / t["cluster"],
               "same_ranking": all(out[k] == out["one"] for k in out), "loadavg": load,
               # CPU seconds (medians): what each side computed, whatever the load; one process / the busiest
               # worker is the ratio an idle machine approaches if the workers never wait
               "one_cpu_s": float(np.median(cpu["one"])), "driver_cpu_s": float(np.median(cpu["driver"])),
               "worker_cpu_s": [float(np.median([w[i] for w in cpu["workers"]]))
                                for i in range(len(cpu["workers"][0]))]}
        row["cpu_ratio"] = row["one_cpu_s"] / max(row["worker_cpu_s"])
        if "per layer" in out:
            row["per_layer_s"] = t["cluster, one task per layer"]
        rows.append(row)
        _log("sensitivity", json.dumps(row))
    return rows


def _rss_child(n_files: int, folder: str) -> None:
    """A fresh driver: KL calibration of MobileNetV2 over the first ``n_files`` files of ``folder`` on a new
    2-worker LocalCluster; prints its own peak RSS (KiB) as JSON."""
    import resource

    from refquant import distributed as D
    from refquant.models.pretrained import pretrained
    files = sorted(str(p) for p in Path(folder).glob("*.npy"))[:n_files]
    start = time.perf_counter()
    cal = D.calibrate(pretrained("mobilenet_v2"), files, "KL", workers=2)
    print(json.dumps({"files": len(files), "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "seconds": time.perf_counter() - start, "tensors": len(cal.thresholds)}))


def _rss(sizes, tmp: Path) -> dict:
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    n = sizes["rss_files"]
    model = pretrained("mobilenet_v2")
    feeds = zoo.calibration_feeds("mobilenet_v2", model.inputs[0], sizes["rss_batch"], 10 * n)
    folder = tmp / "rss"
    _write(folder, feeds)
    root = Path(__file__).resolve().parents[1]
    out = {}
    for k in (1, 10):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_distributed", "--rss", str(k * n),
                               str(folder)], cwd=root, capture_output=True, text=True, check=True)
        out[f"{k}x"] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["growth"] = out["10x"]["peak_rss_kib"] / out["1x"]["peak_rss_kib"] - 1
    out["data_mb_1x"] = sum(a.nbytes for f in feeds[:n] for a in f.values()) / 1e6
    _log("rss", json.dumps(out))
    return out


SECTIONS = ("exact", "speed", "sensitivity", "rss")


def run(quick: bool | None = None, sections=None) -> dict:
    """``sections``: the parts to run (default: ``REFQUANT_BENCH_DISTRIBUTED``, comma-separated, or all)."""
    from refquant import distributed as D
    try:
        import distributed  # noqa: F401
    except ImportError:
        return {"machine": machine(), "skipped": "Dask is not installed (pip install 'refquant[dask]')"}
    quick = os.environ.get("REFQUANT_BENCH_QUICK") == "1" if quick is None else quick
    if sections is None:
        sections = [x for x in os.environ.get("REFQUANT_BENCH_DISTRIBUTED", "").split(",") if x] or SECTIONS
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"bench_distributed: unknown section(s) {unknown}; the sections are {', '.join(SECTIONS)}")
    sizes = QUICK if quick else FULL
    result = {"machine": machine(), "quick": quick, "sizes": sizes, "date": time.strftime("%Y-%m-%d"),
              "sections": list(sections), "loadavg_start": os.getloadavg()}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, D.connect(workers=2) as client:
        tmp = Path(tmp)
        if "exact" in sections:
            result["identical"] = _exactness(client, sizes, tmp)
        if "speed" in sections:
            result["speed"] = _speed(client, sizes, tmp)
        if "sensitivity" in sections:
            result["sensitivity"] = _sensitivity(client, sizes, tmp)
    if "rss" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            result["rss"] = _rss(sizes, Path(tmp))
    result["seconds"] = time.perf_counter() - start
    return result


def _load(row: dict) -> str:
    return " -> ".join(f"{x:.1f}" for x in row["loadavg"])


def markdown(r: dict) -> str:
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    m = r["machine"]
    head = (f"{'QUICK MODE (tiny sizes, only shows it works); ' if r['quick'] else ''}{r['date']}, {m['cpu']}, "
            f"2-worker LocalCluster (processes, 1 thread each) vs one process on 1 thread; sections "
            f"{', '.join(r['sections'])}; {r['seconds']:.0f} s in all; load average at the start "
            f"{r['loadavg_start'][0]:.1f} (1 min)")
    parts = [head]
    if "identical" in r:
        by = {}
        for row in r["identical"]:
            by.setdefault((row["model"], row["algo"]), []).append(row)
        parts += ["### Thresholds, cluster vs one process",
                  table(["model", "algo", "tensors", "2 / 4 / 6 shards == one process"],
                        [[mo, al, rows[0]["tensors"], " / ".join("yes" if x["identical"] else "**NO**" for x in rows)]
                         for (mo, al), rows in by.items()])]
    if "speed" in r:
        parts += ["### KL calibration time",
                  table(["model", "batches (shape)", "shards", "one process s", "cluster s", "ratio", "thresholds ==",
                         "s per batch", "merge ms per shard", "thresholds ms", "load avg"],
                        [[s["model"], f"{s['batches']} {tuple(s['batch_shape'])}", s["shards"],
                          f"{s['one_process_s']:.1f}", f"{s['cluster_s']:.1f}", f"**{s['ratio']:.2f}x**",
                          "yes" if s["identical"] else "**NO**", f"{s['per_batch_s']:.3f}", f"{s['merge_ms']:.2f}",
                          f"{s['threshold_ms']:.0f}", _load(s)] for s in r["speed"]])]
    if r.get("sensitivity"):
        parts += ["### Sensitivity sweep (mode only, abs_max)",
                  table(["model", "layers", "eval pages (shape)", "calib pages", "tasks", "one process s",
                         "cluster s", "ratio", "one task per layer s", "same ranking", "repeats", "load avg",
                         "CPU s: one process / workers / driver", "CPU ratio"],
                        [[s["model"], s["layers"], f"{s['eval_pages']} {tuple(s['page'])}", s["calib_pages"],
                          s["tasks"], f"{s['one_process_s']:.2f}", f"{s['cluster_s']:.2f}", f"**{s['ratio']:.2f}x**",
                          f"{s['per_layer_s']:.2f}" if "per_layer_s" in s else "",
                          "yes" if s["same_ranking"] else "**NO**", s["repeats"], _load(s),
                          f"{s['one_cpu_s']:.2f} / {' + '.join(f'{w:.2f}' for w in s['worker_cpu_s'])} / "
                          f"{s['driver_cpu_s']:.2f}", f"{s['cpu_ratio']:.2f}x"]
                         for s in r["sensitivity"]])]
    if "rss" in r:
        q = r["rss"]
        parts += ["### Driver peak RSS (MobileNetV2, KL, one file per shard)",
                  table(["data", "files", "peak RSS MiB", "seconds"],
                        [[k, q[k]["files"], f"{q[k]['peak_rss_kib'] / 1024:.1f}", f"{q[k]['seconds']:.1f}"]
                         for k in ("1x", "10x")]) + f"\n\ngrowth with 10x the data: **{100 * q['growth']:+.1f}%**"]
    return "\n\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss":
        _rss_child(int(sys.argv[2]), sys.argv[3])
    else:
        print(markdown(run(quick="--quick" in sys.argv[1:],
                           sections=[a for a in sys.argv[1:] if not a.startswith("--")] or None)))
