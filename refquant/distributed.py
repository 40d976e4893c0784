"""Calibration and sensitivity sweeps on a Dask cluster (``pip install refquant[dask]``; docs/distributed.md).

Why it is exact: every observer's statistics merge exactly (``Observer.merge``: a max, a min, integer histogram
counts added, per-batch values or per-batch bests concatenated), so calibrating shards separately and merging the
results *in shard order* gives the thresholds of one process reading the same batches in the same order (``==``).

How it runs:

* the model travels in refquant's own format (:func:`refquant.io.format.to_bytes`), fetched once by every worker
  and parsed once per worker process (a cache keyed by the bytes' SHA-256);
* every shard is read *on a worker* (file shards with :func:`refquant.data.files.iter_feeds`, or the user's
  ``load(shard_index)``), so the driver never holds calibration data; a task returns the shard's
  :class:`~refquant.calibration.Calibration` (statistics only);
* one-pass algorithms (abs_max, avg, mse, emd) are one map-reduce round; the two-pass ones (KL, hist) are two:
  abs ranges per shard, merged on the driver and sent back, then histograms on those ranges per shard, merged;
* the driver merges the results as they arrive, each as soon as every shard before it is merged;
* weight thresholds, bias correction and the rewrite are :func:`refquant.quant.quant_post_static` on the driver
  with ``calibration=`` the merged result (they read only the weights);
* a sensitivity sweep calibrates so, computes the FP32 references (one task per eval feed) meanwhile, then
  evaluates its variants in a few tasks per worker, each a run of consecutive variants computed as the serial
  sweep computes them.

Failures: a shard that cannot be read, holds NaN/Inf or makes the model fail raises :class:`ShardError` naming the
shard (its files, or ``load(i)``); a worker that dies is replaced and its task recomputed elsewhere by Dask (the
result is the same); an ``OSError`` or ``MemoryError`` is retried ``retries`` times. Nothing is written.

Transport: Dask moves task arguments and results between the processes of the cluster with its own serialization
(pickle, among trusted processes you start). refquant's files are never pickled: the model goes as
refquant model bytes, the data as the user's ``.npy`` / ``.npz`` / image files read with ``allow_pickle=False``.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from . import _args
from .calibration import Calibration
from .errors import ArgumentError, ArgumentTypeError, NonFiniteError, RefquantError
from .graph import Model

#: The quant_post_static arguments that shape the calibration (the rest act on the driver, on the weights).
CALIBRATION_ARGS = ("hist_percent", "activation_bits", "onnx_format", "quantizable_op_type", "is_full_quantize",
                    "skip_tensor_list")


class DistributedError(RefquantError, RuntimeError):
    """A task of a distributed run failed; ``task`` names it (a shard, a layer)."""

    def __init__(self, message: str, *, task: str | None = None):
        super().__init__(message)
        self.task = task


class ShardError(DistributedError, ValueError):
    """A calibration shard failed: unreadable, holding NaN/Inf, not fitting the model, or its worker kept dying.
    ``shard`` is its index, ``source`` its files or ``load(i)``; the message names both and the cause."""

    def __init__(self, message: str, *, shard: int | None = None, source: str | None = None):
        super().__init__(message, task=source)
        self.shard, self.source = shard, source


def _dask():
    try:
        import distributed
    except ImportError:
        raise ArgumentError("refquant.distributed needs Dask: pip install 'refquant[dask]' "
                            "(dask[distributed])") from None
    return distributed


# ---- shards ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileShard:
    """One shard: files read in order by :func:`refquant.data.files.iter_feeds` (batches never span shards)."""
    paths: tuple
    batch_size: Optional[int] = None
    preprocess: object = None

    def describe(self) -> str:
        return self.paths[0] if len(self.paths) == 1 else f"{self.paths[0]} .. {self.paths[-1]} " \
                                                          f"({len(self.paths)} files)"

    def feeds(self, model: Model) -> Iterable[dict]:
        from .data.files import iter_feeds
        return iter_feeds(model, list(self.paths), batch_size=self.batch_size, preprocess=self.preprocess)


@dataclass(frozen=True)
class LoaderShard:
    """One shard: ``load(index)``, the user's function returning the shard's feed dicts (run on a worker)."""
    load: Callable
    index: int

    def describe(self) -> str:
        return f"load({self.index})"

    def feeds(self, model: Model) -> Iterable[dict]:
        batches = self.load(self.index)
        if isinstance(batches, Mapping) or not isinstance(batches, Iterable):
            raise ArgumentTypeError(f"load({self.index}) returned a {type(batches).__name__}, not an iterable of "
                                    "feed dicts")
        for b, feed in enumerate(batches):
            if not isinstance(feed, Mapping):
                raise ArgumentTypeError(f"batch {b} is a {type(feed).__name__}, not a feed dict")
            for name, x in feed.items():
                x = np.asarray(x)
                if x.dtype.kind in "fc" and not np.isfinite(x).all():
                    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                    raise NonFiniteError(f"batch {b}: {bad} NaN/Inf value(s) in input {name!r}; calibration "
                                         "data must be finite", tensor=name, count=bad)
            yield feed


def shard_list(shards, *, n_shards: Optional[int] = None, batch_size: Optional[int] = None,
               preprocess=None) -> list:
    """The shards ``shards`` names, in order: a path, folder or glob (one shard per file, sorted by name); a list
    whose entries are paths (one shard each) or lists of paths (one shard of several files); or a function
    ``load(i) -> feed dicts`` with ``n_shards``. Only file names are looked at here (on the driver)."""
    from .data.files import Preprocess, expand_data
    if callable(shards):
        n = _args.integer("refquant.distributed", "n_shards", n_shards, 1)
        return [LoaderShard(shards, i) for i in range(n)]
    if n_shards is not None:
        raise ArgumentError("refquant.distributed: n_shards goes with a load(i) function; file shards are counted")
    if batch_size is not None:
        batch_size = _args.integer("refquant.distributed", "batch_size", batch_size, 1)
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        raise ArgumentTypeError(f"refquant.distributed: preprocess must be a Preprocess or None, got "
                                f"{type(preprocess).__name__}")
    if isinstance(shards, (str, os.PathLike)):
        groups = [[p] for p in expand_data(shards)]
    elif isinstance(shards, (list, tuple)) and shards:
        groups = []
        for entry in shards:
            if isinstance(entry, (list, tuple)):
                groups.append(expand_data(list(entry)))
            else:
                groups.extend([p] for p in expand_data(entry))
    else:
        raise ArgumentTypeError("refquant.distributed: shards must be a path, a glob, a non-empty list of paths "
                                f"(or of lists of paths), or a function load(i); got {type(shards).__name__}")
    return [FileShard(tuple(str(p) for p in g), batch_size, preprocess) for g in groups]


# ---- the model on the workers -------------------------------------------------------------------------------
_MODELS: "collections.OrderedDict[str, Model]" = collections.OrderedDict()
_MODELS_LOCK = threading.Lock()
#: How many models this process parsed (a worker parses each model once).
LOADS = collections.Counter()


def _model(digest: str, blob: bytes) -> Model:
    """The model of ``blob``, parsed once per process (the two most recent models are kept)."""
    from .io.format import from_bytes
    with _MODELS_LOCK:
        model = _MODELS.get(digest)
        if model is None:
            model = _MODELS[digest] = from_bytes(blob)
            LOADS[digest] += 1
            while len(_MODELS) > 2:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(digest)
        return model


@dataclass(frozen=True)
class _Failure:
    """A task's deterministic error, returned (not raised) so that Dask does not retry it; ``where``: the part of
    the task that failed (a layer of a sensitivity task)."""
    kind: str
    message: str
    where: Optional[str] = None


#: Errors a retry cannot fix (bad data, a bad argument, the model failing on the data): reported, not retried.
_DETERMINISTIC = (RefquantError, ValueError, TypeError, KeyError, IndexError, NotImplementedError, AttributeError)


def _guarded(fn, *args):
    try:
        return fn(*args)
    except (OSError, MemoryError):
        raise  # possibly transient (a network file system, a busy machine): Dask retries it
    except _DETERMINISTIC as exc:
        return _Failure(type(exc).__name__, str(exc))


def _shard_task(digest: str, blob: bytes, shard, algo: str, options: dict, ranges):
    """One shard's :class:`Calibration` (runs on a worker)."""
    from .quant.post_static import calibrate_model

    def work():
        model = _model(digest, blob)
        return calibrate_model(model, lambda: shard.feeds(model), algo, ranges=ranges, thresholds=False, **options)
    return _guarded(work)


# ---- the client ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def keep_environ():
    """Restore ``os.environ`` on exit. A Dask nanny sets its ``distributed.nanny.pre-spawn-environ`` variables
    (``OMP_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``, ...) in the *driver's* environment to pass them to the
    worker processes it spawns, and leaves them there: later subprocesses of the caller would inherit them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


@contextlib.contextmanager
def connect(client=None, workers: Optional[int] = None):
    """A ``dask.distributed.Client``: ``client`` itself, a new client of the scheduler at ``client`` (an address
    such as ``"tcp://10.0.0.5:8786"``), or (None) a ``LocalCluster`` of ``workers`` (default 2) processes with one
    thread each, closed on exit."""
    distributed = _dask()
    if isinstance(client, distributed.Client):
        if workers is not None:
            raise ArgumentError("refquant.distributed: workers is for the default LocalCluster; the client given "
                                "has its own")
        yield client
        return
    if client is not None and not isinstance(client, str):
        raise ArgumentTypeError(f"refquant.distributed: client must be a dask.distributed.Client, a scheduler "
                                f"address or None, got {type(client).__name__}")
    if isinstance(client, str):
        if workers is not None:
            raise ArgumentError("refquant.distributed: give a scheduler address or workers, not both")
        with distributed.Client(client) as c:
            yield c
        return
    n = _args.integer("refquant.distributed", "workers", 2 if workers is None else workers, 1)
    import logging

    import dask
    # dashboard_address ":0": the scheduler's HTTP server on any free port (8787 may belong to another cluster).
    # No MALLOC_TRIM_THRESHOLD_ in the workers (Dask sets 65536): a fixed threshold turns off glibc's adaptive mmap
    # threshold, every large array becomes an mmap + page faults, and PP-OCR rec calibrates 2-3x slower.
    with keep_environ(), dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _identity(value):
    return value


def _hold(client, value, name: str):
    """``value`` as a task result copied to every worker. Not ``scatter``: scattered data dies with the workers
    holding it, a task's result is recomputed by the scheduler. Copied to all workers at once, because the
    scheduler places tasks where their inputs are: held by one worker, every shard would queue there."""
    return _hold_all(client, [value], name)[0]


def _hold_all(client, values: list, name: str) -> list:
    """:func:`_hold` for each of ``values``: one task each (Dask warns about a task graph over 10 MiB), one
    replication for all."""
    futures = [client.submit(_identity, v, pure=False, key=f"refquant-{name}-{i}-{os.urandom(4).hex()}")
               for i, v in enumerate(values)]
    client.replicate(futures)
    return futures


def _send_model(client, model: Model):
    """``(digest, future of the model's bytes)``: the model in refquant's format, parsed once per worker."""
    from .io.format import to_bytes
    import dask
    blob = to_bytes(model)
    digest = hashlib.sha256(blob).hexdigest()
    # the model is meant to travel in the task (once): no "Sending large graph" hint for it (10 MB by default;
    # PP-OCR rec is 11 MB)
    limit = max(dask.utils.parse_bytes(dask.config.get("distributed.admin.large-graph-warning-threshold")),
                2 * len(blob))
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": limit}):
        return digest, _hold(client, blob, "model")


def _progress(enabled: bool, label: str, n: int):
    start = time.perf_counter()

    def report(done: int, what: str):
        if enabled:
            print(f"{label}: {done}/{n} done ({what}) {time.perf_counter() - start:.1f} s", file=sys.stderr,
                  flush=True)
    return report


def _gather_in_order(client, futures: list, describe: Callable[[int], str], label: str, progress: bool,
                     fold: Callable, error: Callable):
    """``fold(acc, result_i)`` over the tasks' results in index order, each as soon as every earlier one has
    arrived; a failed task cancels the others and raises ``error(i, reason, where)`` (``where``: the failed
    part of task ``i``, or None)."""
    distributed = _dask()
    index = {f.key: i for i, f in enumerate(futures)}
    report = _progress(progress, label, len(futures))
    acc, waiting, next_i, done = None, {}, 0, 0
    try:
        for future in distributed.as_completed(futures):
            i = index[future.key]
            try:
                result = future.result()
            except distributed.KilledWorker as exc:
                raise error(i, f"every worker that ran it died ({exc.allowed_failures + 1} of them; Dask gives up "
                               "after distributed.scheduler.allowed-failures deaths; it counts every task a dying "
                               "worker held, so the culprit may be a shard that ran next to this one): out of "
                               "memory? the worker logs say why") from None
            except Exception as exc:  # an error raised on the worker and left after the retries
                raise error(i, f"{type(exc).__name__}: {exc}") from None
            if isinstance(result, _Failure):
                raise error(i, f"{result.kind}: {result.message}", result.where)
            future.release()
            waiting[i] = result
            done += 1
            report(done, describe(i))
            while next_i in waiting:
                acc = fold(acc, waiting.pop(next_i), next_i)
                next_i += 1
    finally:
        client.cancel([f for f in futures if not f.done()])
    return acc


# ---- calibration -------------------------------------------------------------------------------------------
def _shard_error(shards):
    def make(i, reason, where=None):
        src = shards[i].describe()
        return ShardError(f"shard {i} ({src}): {reason}", shard=i, source=src)
    return make


def _merge(acc, cal, i):
    """Shard ``i``'s calibration folded into the ones before it; the thresholds are computed once, at the end."""
    if acc is None:
        return cal
    if cal.algo != acc.algo:
        raise ValueError(f"refquant.distributed: shard {i} was calibrated with {cal.algo!r}, not {acc.algo!r}")
    return acc.merge(cal, thresholds=False)


def _round(client, digest, blob, shards, algo, options, ranges, label, progress, retries, then=None):
    """One map-reduce round: a task per shard, merged in shard order. ``then()`` runs once the shards are
    submitted (to queue other work behind them)."""
    futures = [client.submit(_shard_task, digest, blob, s, algo, options, ranges, retries=retries, pure=False,
                             key=f"refquant-{algo}-shard-{i}-{os.urandom(4).hex()}")
               for i, s in enumerate(shards)]
    if then is not None:
        then()
    return _gather_in_order(client, futures, lambda i: shards[i].describe(), label, progress, _merge,
                            _shard_error(shards)).compute_thresholds()


def calibrate(model: Model, shards, algo: str = "KL", *, client=None, workers: Optional[int] = None,
              n_shards: Optional[int] = None, batch_size: Optional[int] = None, preprocess=None,
              hist_percent: float = 0.99999, bits: int = 8, onnx_format: bool = False,
              quantizable_op_type: Iterable[str] = ("conv2d", "depthwise_conv2d", "mul"),
              is_full_quantize: bool = False, skip_tensor_list=None, progress: bool = False,
              retries: int = 2) -> Calibration:
    """:func:`refquant.quant.calibrate_model` over ``shards`` on a Dask cluster: the same
    :class:`~refquant.calibration.Calibration` (thresholds ``==``) as one process calibrating every shard's
    batches, shard after shard, in one run.

    ``shards``: see :func:`shard_list` (a glob, paths, lists of paths, or ``load(i)`` with ``n_shards``); file
    shards are read with ``batch_size`` / ``preprocess`` as :func:`refquant.data.files.load_feeds` does, each
    shard on its own (a batch never spans two shards). ``client``: a ``dask.distributed.Client``, a scheduler
    address, or None for a local cluster of ``workers`` processes (default 2, one thread each) made for this
    call. ``progress``: a line on stderr per finished shard. ``retries``: how often a task failing with an
    OSError / MemoryError is retried (a dead worker's tasks are rerun regardless).
    """
    from .quant.post_static import check_args
    from .calibration import algorithms
    who = "distributed.calibrate"
    a = check_args(who, model=model, hist_percent=hist_percent, bits=bits, onnx_format=onnx_format,
                   quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize,
                   skip_tensor_list=skip_tensor_list)
    _args.choice(who, "algo", algo, algorithms.algorithm_names())
    retries = _args.integer(who, "retries", retries, 0)
    _args.boolean(who, "progress", progress)
    shards = shard_list(shards, n_shards=n_shards, batch_size=batch_size, preprocess=preprocess)
    options = dict(bits=a["bits"], hist_percent=a["hist_percent"], onnx_format=a["onnx_format"],
                   quantizable_op_type=a["quantizable_op_type"], is_full_quantize=a["is_full_quantize"],
                   skip_tensor_list=a["skip_tensor_list"])
    with connect(client, workers) as c:
        digest, blob = _send_model(c, model)
        try:
            return _calibrate(c, digest, blob, shards, algo, options, progress, retries)
        finally:
            c.cancel([blob])


def _calibrate(client, digest, blob, shards, algo, options, progress, retries, then=None) -> Calibration:
    """:func:`calibrate`'s rounds on a connected ``client``, the model already sent (``digest``, ``blob``);
    ``then()`` runs once the first round is submitted."""
    from .calibration import algorithms
    two_passes = algorithms.ALGORITHMS[algo].passes == 2
    ranges = None
    if two_passes:
        merged = _round(client, digest, blob, shards, "ranges", options, None, f"calibration {algo} pass 1 "
                        "(ranges)", progress, retries, then)
        ranges, then = merged.ranges, None
    label = f"calibration {algo}" + (" pass 2 (histograms)" if two_passes else "")
    return _round(client, digest, blob, shards, algo, options, ranges, label, progress, retries, then)


def quant_post_static(model: Model, shards, algo: str = "KL", *, client=None, workers: Optional[int] = None,
                      n_shards: Optional[int] = None, batch_size: Optional[int] = None, preprocess=None,
                      progress: bool = False, retries: int = 2, **ptq_kwargs) -> Model:
    """:func:`refquant.quant.quant_post_static` with the activations calibrated by :func:`calibrate` over
    ``shards`` on a Dask cluster; weight thresholds, bias correction and the rewrite run here, on the driver.
    ``ptq_kwargs``: quant_post_static's other arguments (not ``data_loader``, ``batch_nums``, ``calibration``;
    ``round_type="adaround"`` reads the data on the driver and is refused)."""
    from .quant import post_static
    who = "distributed.quant_post_static"
    fixed = sorted({"data_loader", "batch_nums", "calibration", "bits"} & set(ptq_kwargs))
    if fixed:
        raise ArgumentTypeError(f"{who}: {fixed} are not arguments here (the shards are the data)")
    unknown = sorted(set(ptq_kwargs) - set(inspect.signature(post_static.quant_post_static).parameters))
    if unknown:
        raise ArgumentTypeError(f"{who}: unexpected keyword argument(s) {unknown}")
    a = post_static.check_args(who, model=model, algo=algo, **ptq_kwargs)
    if a.get("round_type") == "adaround":
        raise NotImplementedError(f"{who}: round_type='adaround' trains on the calibration data on one machine; "
                                  "use refquant.quant.quant_post_static")
    if a.get("weight_bits", 8) != a.get("activation_bits", 8):
        raise ArgumentError(f"{who}: Paddle requires activation_bits == weight_bits")
    if ptq_kwargs.get("bias_correction") is True and ptq_kwargs.get("onnx_format"):
        raise NotImplementedError(f"{who}: bias_correction=True with onnx_format=True is not implemented")
    cal_kwargs = {k: ptq_kwargs[k] for k in CALIBRATION_ARGS if k in ptq_kwargs}
    if "activation_bits" in cal_kwargs:
        cal_kwargs["bits"] = cal_kwargs.pop("activation_bits")
    cal = calibrate(model, shards, algo, client=client, workers=workers, n_shards=n_shards, batch_size=batch_size,
                    preprocess=preprocess, progress=progress, retries=retries, **cal_kwargs)
    return post_static.quant_post_static(model, None, algo=algo, calibration=cal, **ptq_kwargs)


# ---- sensitivity -------------------------------------------------------------------------------------------
#: Sensitivity tasks per worker by default: few enough that the scheduler's per-task cost is small against a
#: task's layers, enough that the workers finish together and a dead worker's lost task is a small part.
TASKS_PER_WORKER = 4


def _reference_task(digest: str, blob: bytes, feed: dict):
    """The FP32 model's first output on one eval feed (runs on a worker, once per feed for the whole sweep)."""
    from .quant.sensitivity import _outputs
    return _guarded(lambda: _outputs(_model(digest, blob), [feed])[0])


def _layers_task(digest: str, blob: bytes, cal: Calibration, skips: list, names: list, kw: dict, eval_fn, feeds,
                 refs):
    """The metrics of consecutive variants (runs on a worker): what :func:`refquant.quant.sensitivity` computes
    for each of them; a failure names its layer."""
    from .quant.post_static import quant_post_static as ptq
    from .quant.sensitivity import _outputs, output_error
    model = _guarded(_model, digest, blob)
    bad = next((r for r in [model, *(refs or ())] if isinstance(r, _Failure)), None)
    if bad is not None:
        return _Failure(bad.kind, bad.message, "the FP32 model")
    metrics = []
    for skip, name in zip(skips, names):
        def metric():
            q = ptq(model, None, calibration=cal, skip_tensor_list=skip, **kw)
            return float(eval_fn(q)) if eval_fn is not None else output_error(refs, _outputs(q, feeds))
        m = _guarded(metric)
        if isinstance(m, _Failure):
            return _Failure(m.kind, m.message, name)
        metrics.append(m)
    return metrics


def _split(n: int, k: int) -> list[range]:
    """``range(n)`` cut into ``k`` consecutive parts whose sizes differ by at most one."""
    q, r = divmod(n, k)
    bounds = [i * q + min(i, r) for i in range(k + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(k)]


def sensitivity(model: Model, shards, eval_fn: Optional[Callable[[Model], float]] = None, *, eval_feeds=None,
                algo: str = "abs_max", mode: str = "only", quantizable_op_type: Iterable[str] = None,
                client=None, workers: Optional[int] = None, n_shards: Optional[int] = None,
                batch_size: Optional[int] = None, preprocess=None, tasks: Optional[int] = None,
                progress: bool = False, retries: int = 2, **ptq_kwargs) -> list[tuple[str, float]]:
    """:func:`refquant.quant.sensitivity` on a Dask cluster: the activations calibrated over ``shards`` with
    :func:`calibrate`, then the variants (one per layer, plus the fully quantized model with ``mode="all_but"``)
    evaluated in ``tasks`` tasks of consecutive variants (default :data:`TASKS_PER_WORKER` per worker).
    The ranking and every metric equal the serial sweep's with ``calib_feeds`` = the shards' batches in order.

    The metric: ``eval_fn(qmodel) -> loss`` (sent to the workers: a module-level function), or the relative
    output error over ``eval_feeds`` (a list of feed dicts, held-out data, sent once to every worker; the FP32
    outputs are computed once, one task per feed, while the calibration runs); one of the two is needed (the
    calibration data stays in its shards)."""
    from .quant import sensitivity as serial
    from .quant.post_static import check_args
    who = "distributed.sensitivity"
    quantizable_op_type = serial.DEFAULT_OPS if quantizable_op_type is None else quantizable_op_type
    a, ops, variants, kw = serial.sweep_plan(who, model, algo, mode, quantizable_op_type, eval_fn, ptq_kwargs,
                                             set_here=("batch_nums",))
    if eval_fn is None and eval_feeds is None:
        raise ArgumentError(f"{who}: give eval_feeds (a list of feed dicts) or eval_fn: the calibration data stays "
                            "on the workers")
    if tasks is not None:
        tasks = _args.integer(who, "tasks", tasks, 1)
    retries = _args.integer(who, "retries", retries, 0)
    _args.boolean(who, "progress", progress)
    feeds = None if eval_feeds is None else serial._feed_list(who, "eval_feeds", eval_feeds)
    shards = shard_list(shards, n_shards=n_shards, batch_size=batch_size, preprocess=preprocess)
    c_args = check_args(who, hist_percent=ptq_kwargs.get("hist_percent", 0.99999),
                        bits=ptq_kwargs.get("activation_bits", 8), onnx_format=ptq_kwargs.get("onnx_format", False),
                        quantizable_op_type=a["quantizable_op_type"],
                        is_full_quantize=ptq_kwargs.get("is_full_quantize", False))
    options = dict(bits=c_args["bits"], hist_percent=c_args["hist_percent"], onnx_format=c_args["onnx_format"],
                   quantizable_op_type=c_args["quantizable_op_type"], is_full_quantize=c_args["is_full_quantize"],
                   skip_tensor_list=None)
    names = (["(all quantized)"] if mode == "all_but" else []) + [name for name, _ in ops]
    with connect(client, workers) as c:
        digest, blob = _send_model(c, model)
        held = [blob]
        try:
            feeds_f, refs = None, []
            if eval_fn is None:
                feeds_f = _hold_all(c, feeds, "eval-feed")
                held.extend(feeds_f)

            def references():  # queued behind the calibration shards: they run while the driver merges
                refs.extend(c.submit(_reference_task, digest, blob, f, retries=retries, pure=False,
                                     key=f"refquant-reference-{i}-{os.urandom(4).hex()}")
                            for i, f in enumerate(feeds_f))
                held.extend(refs)
            cal = _calibrate(c, digest, blob, shards, algo, options, progress, retries,
                             references if eval_fn is None else None)
            cal = Calibration(cal.algo, thresholds=cal.thresholds, zero_size=cal.zero_size)  # what the rewrite reads
            cal_f = _hold(c, cal, "calibration")
            held.append(cal_f)
            n = min(len(variants), tasks or TASKS_PER_WORKER * max(1, len(c.scheduler_info()["workers"])))
            parts = _split(len(variants), n)
            futures = [c.submit(_layers_task, digest, blob, cal_f, [variants[i] for i in part],
                                [names[i] for i in part], kw, eval_fn, feeds_f, refs or None,
                                retries=retries, pure=False, key=f"refquant-sensitivity-{j}-{os.urandom(4).hex()}")
                       for j, part in enumerate(parts)]

            def describe(j):
                part = parts[j]
                return names[part[0]] if len(part) == 1 else f"{names[part[0]]} .. {names[part[-1]]}"
            metrics = _gather_in_order(c, futures, describe, f"sensitivity ({mode}), {len(variants)} variants",
                                       progress, lambda acc, m, j: (acc or []) + m,
                                       lambda j, why, where=None: DistributedError(
                                           f"sensitivity of {where or describe(j)}: {why}", task=where or describe(j)))
        finally:
            c.cancel(held)
    return serial.ranking(ops, metrics, mode)


__all__ = ["calibrate", "quant_post_static", "sensitivity", "connect", "keep_environ", "shard_list", "FileShard",
           "LoaderShard", "ShardError", "DistributedError", "CALIBRATION_ARGS", "TASKS_PER_WORKER"]
