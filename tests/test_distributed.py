"""refquant.distributed on a 2-worker LocalCluster (processes, one thread each): thresholds == one process for every
algorithm and shard count, bias correction and onnx_format, bad shards named, a killed worker recomputed, the
sensitivity ranking equal to the serial sweep, the CLI's --scheduler / --workers."""
from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from refquant import distributed as D  # noqa: E402
from refquant.calibration.algorithms import static_algorithms  # noqa: E402
from refquant.errors import ArgumentError  # noqa: E402
from refquant.quant import quant_post_static  # noqa: E402
from refquant.quant.post_static import calibrate_model, thresholds  # noqa: E402
from refquant.quant.sensitivity import sensitivity  # noqa: E402

N_BATCHES = 12
ALGOS = static_algorithms()


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The one-process references run with NumPy's BLAS on one thread, as the workers (Dask starts them with
    OPENBLAS_NUM_THREADS=1): OpenBLAS may round a matmul differently on more threads, which would change the FP32
    activations themselves."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def client():
    import logging

    import dask
    # one death per task is forgiven (Dask's default is 3): the always-dying shard below fails after two workers
    with D.keep_environ(), dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def lenet():
    from refquant.models import zoo
    from refquant.models.pretrained import pretrained
    model = pretrained("lenet5")
    feeds = zoo.calibration_feeds("lenet5", model.inputs[0], 4, N_BATCHES)
    return model, feeds


@pytest.fixture(scope="module")
def files(lenet, tmp_path_factory):
    """One .npy file per batch, named in batch order."""
    model, feeds = lenet
    root = tmp_path_factory.mktemp("calib")
    paths = []
    for i, feed in enumerate(feeds):
        paths.append(str(root / f"b{i:02d}.npy"))
        np.save(paths[-1], feed[model.inputs[0]])
    return paths


def groups(paths, n):
    """``paths`` cut into ``n`` consecutive shards of equal size."""
    k = len(paths) // n
    return [paths[i * k:(i + 1) * k] for i in range(n)]


@pytest.mark.parametrize("per_worker", [1, 2, 3])
@pytest.mark.parametrize("algo", ALGOS)
def test_thresholds_equal_one_process(client, lenet, files, algo, per_worker):
    model, feeds = lenet
    one = calibrate_model(model, feeds, algo)
    shards = groups(files, 2 * per_worker)
    got = D.calibrate(model, shards, algo, client=client)
    assert got.thresholds == one.thresholds and len(got.thresholds) > 10
    assert got.zero_size == one.zero_size
    if algo in ("KL", "hist"):
        assert all(np.array_equal(got.observers[n].hist, o.hist) for n, o in one.observers.items())
        assert {n: o.range() for n, o in got.ranges.items()} == {n: o.range() for n, o in one.ranges.items()}


@pytest.mark.parametrize("algo", ["mse", "emd", "KL"])
def test_onnx_format_and_loader_shards(client, lenet, algo):
    """onnx_format (the mse/emd search changes) with shards made by a load(i) function on the workers."""
    model, feeds = lenet
    one = calibrate_model(model, feeds, algo, onnx_format=True)
    got = D.calibrate(model, _load_lenet, algo, n_shards=3, client=client, onnx_format=True)
    assert got.thresholds == one.thresholds


def _load_lenet(i):
    """Shard i of 3 of the lenet fixture's batches (rebuilt on the worker)."""
    from refquant.models import zoo
    feeds = zoo.calibration_feeds("lenet5", "x", 4, N_BATCHES)
    return feeds[4 * i:4 * (i + 1)]


@pytest.mark.parametrize("onnx_format,bias_correction", [(False, True), (False, "paddle"), (True, False)])
def test_quant_post_static_identical(client, lenet, files, onnx_format, bias_correction):
    model, feeds = lenet
    kwargs = dict(algo="KL", onnx_format=onnx_format, bias_correction=bias_correction)
    one = quant_post_static(model, feeds, **kwargs)
    got = D.quant_post_static(model, groups(files, 3), client=client, **kwargs)
    assert thresholds(got).keys() == thresholds(one).keys()
    assert all(np.array_equal(v, thresholds(one)[k]) for k, v in thresholds(got).items())
    assert got.params.keys() == one.params.keys()
    assert all(np.array_equal(v, one.params[k]) and v.dtype == one.params[k].dtype for k, v in got.params.items())


def test_model_parsed_once_per_worker(client, lenet, files):
    model, _ = lenet
    fresh = model.copy()
    fresh.name = "lenet-once"
    D.calibrate(fresh, groups(files, 6), "avg", client=client)
    D.calibrate(fresh, groups(files, 4), "KL", client=client)
    counts = client.run(lambda: dict(__import__("refquant.distributed", fromlist=["LOADS"]).LOADS))
    from refquant.io.format import to_bytes
    import hashlib
    digest = hashlib.sha256(to_bytes(fresh)).hexdigest()
    assert sorted(c.get(digest, 0) for c in counts.values()) == [1, 1]


def test_progress_line_per_shard(client, lenet, files, capsys):
    model, _ = lenet
    D.calibrate(model, groups(files, 4), "hist", client=client, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["calibration hist pass 1 (ranges)"] * 4 + \
        ["calibration hist pass 2 (histograms)"] * 4
    assert lines[-1].split(": ")[1].startswith("4/4 done")


def test_nan_shard_is_named(client, lenet, files, tmp_path):
    model, feeds = lenet
    x = np.array(feeds[0][model.inputs[0]])
    x[1, 0, 3, 3] = np.nan
    bad = tmp_path / "nan.npy"
    np.save(bad, x)
    with pytest.raises(D.ShardError, match=r"shard 2 \(.*nan\.npy\): NonFiniteError: .*NaN/Inf") as e:
        D.calibrate(model, [files[0], files[1], str(bad), files[2]], "abs_max", client=client)
    assert e.value.shard == 2 and e.value.source == str(bad)


def test_truncated_shard_is_named(client, lenet, files, tmp_path):
    model, _ = lenet
    bad = tmp_path / "cut.npy"
    bad.write_bytes(Path(files[0]).read_bytes()[:200])
    with pytest.raises(D.ShardError, match=r"shard 1 \(.*cut\.npy\): DataFileError: .*not a readable"):
        D.calibrate(model, [files[0], str(bad)], "KL", client=client)


def _load_nan(i):
    feeds = _load_lenet(i)
    if i == 1:
        feeds[2]["x"] = np.where(feeds[2]["x"] > 0.5, np.inf, feeds[2]["x"])
    return feeds


def test_loader_nan_is_named(client, lenet):
    model, _ = lenet
    with pytest.raises(D.ShardError, match=r"shard 1 \(load\(1\)\): NonFiniteError: batch 2: \d+ NaN/Inf"):
        D.calibrate(model, _load_nan, "mse", n_shards=3, client=client)


def _kill_once(marker):
    """Kills this worker process if it is the first to get here: the marker is created atomically (O_EXCL), so two
    workers that arrive together cannot both die."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, b"killed")
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _load_killing(marker, i):
    """Kills the worker process that first reads shard 1 (``marker`` records that it happened); then shard i."""
    if i == 1:
        _kill_once(marker)
    return _load_lenet(i)


def test_killed_worker_recomputed(client, lenet, tmp_path):
    model, feeds = lenet
    marker = tmp_path / "killed"
    got = D.calibrate(model, functools.partial(_load_killing, str(marker)), "KL", n_shards=3, client=client)
    assert marker.read_text() == "killed"
    assert got.thresholds == calibrate_model(model, feeds, "KL").thresholds
    client.wait_for_workers(2, timeout=30)


def _load_dying(i):
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return _load_lenet(i)


def test_dying_shard_is_named(client, lenet):
    model, _ = lenet
    # Dask blames every task a dying worker held: shard 2 may have been queued next to shard 1
    with pytest.raises(D.ShardError, match=r"shard [12] \(load\([12]\)\): every worker that ran it died \(2 of"):
        D.calibrate(model, _load_dying, "abs_max", n_shards=3, client=client)
    client.wait_for_workers(2, timeout=30)


@pytest.mark.parametrize("mode,tasks", [("only", None), ("only", 1), ("only", 2), ("all_but", None),
                                        ("all_but", 4)])
def test_sensitivity_ranking_equals_serial(client, lenet, files, mode, tasks):
    """Same ranking, every metric ==, however the variants are grouped into tasks (5 layers; 6 variants with
    all_but: None gives 4 per worker, i.e. one or two variants per task)."""
    model, feeds = lenet
    held_out = feeds[-2:]
    serial = sensitivity(model, feeds, eval_feeds=held_out, algo="hist", mode=mode)
    got = D.sensitivity(model, groups(files, 4), eval_feeds=held_out, algo="hist", mode=mode, client=client,
                        tasks=tasks)
    assert got == serial and len(got) == 5


def test_sensitivity_split():
    assert [list(r) for r in D._split(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(r) for r in D._split(62, 8)] == [8] * 6 + [7] * 2


def test_sensitivity_progress_line_per_task(client, lenet, files, capsys):
    model, feeds = lenet
    D.sensitivity(model, groups(files, 2), eval_feeds=feeds[:1], algo="abs_max", client=client, tasks=2,
                  progress=True)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sensitivity")]
    assert [ln.split(": ")[1].split(" (")[0] for ln in lines] == ["1/2 done", "2/2 done"]


def _loss_killing(marker, qmodel):
    """Kills the worker process that first evaluates a variant (``marker`` records that it happened)."""
    _kill_once(marker)
    return _loss(qmodel)


def test_sensitivity_killed_worker_recomputed(client, lenet, files, tmp_path):
    model, feeds = lenet
    marker = tmp_path / "killed"
    got = D.sensitivity(model, groups(files, 2), functools.partial(_loss_killing, str(marker)), algo="avg",
                        client=client, tasks=3)
    assert marker.read_text() == "killed"
    assert got == sensitivity(model, feeds, _loss, algo="avg")
    client.wait_for_workers(2, timeout=30)


def _loss_failing(qmodel):
    """Fails on the variant quantizing the fully connected layers (a user metric's bug)."""
    if any(op.type == "mul" and op.attrs.get("quantization_type") for op in qmodel.ops):
        raise ValueError("no metric for this one")
    return _loss(qmodel)


def test_sensitivity_failing_layer_is_named(client, lenet, files):
    model, _ = lenet
    with pytest.raises(D.DistributedError, match=r"sensitivity of fc_[01]: ValueError: no metric for this one"):
        D.sensitivity(model, groups(files, 2), _loss_failing, algo="avg", client=client, tasks=2)


def _loss(qmodel):
    """A user metric, sent to the workers: the mean |output| over two fixed batches."""
    feeds = _load_lenet(0)[:2]
    return float(np.mean([np.abs(qmodel.run(f)[qmodel.outputs[0]]).mean() for f in feeds]))


def test_sensitivity_with_eval_fn(client, lenet, files):
    model, feeds = lenet
    serial = sensitivity(model, feeds, _loss, algo="avg")
    assert D.sensitivity(model, groups(files, 3), _loss, algo="avg", client=client) == serial


def test_sensitivity_bad_eval_feed_is_named(client, lenet, files):
    """An eval feed the FP32 model cannot run fails its reference task, before any variant."""
    model, feeds = lenet
    bad = {"x": feeds[0]["x"][:, :, :5, :5]}
    with pytest.raises(D.DistributedError, match=r"sensitivity of the FP32 model: ShapeError: "):
        D.sensitivity(model, groups(files, 2), eval_feeds=[feeds[0], bad], algo="abs_max", client=client)


def test_arguments_checked_before_any_work(lenet, files):
    model, _ = lenet
    with pytest.raises(ArgumentError, match="algo"):
        D.calibrate(model, files, "nope")
    with pytest.raises(ArgumentError, match="matches no data file"):
        D.calibrate(model, "/nonexistent/*.npy", "KL")
    with pytest.raises(ArgumentError, match="n_shards"):
        D.calibrate(model, _load_lenet, "KL")
    with pytest.raises(ArgumentError, match="eval_feeds"):
        D.sensitivity(model, files, algo="abs_max")
    with pytest.raises(ArgumentError, match="tasks"):
        D.sensitivity(model, files, _loss, algo="abs_max", tasks=0)
    with pytest.raises(NotImplementedError, match="adaround"):
        D.quant_post_static(model, files, round_type="adaround")


def test_default_local_cluster(lenet, files):
    """client=None: a 2-process LocalCluster made and closed by the call, leaving the environment as it was."""
    model, feeds = lenet
    before = dict(os.environ)
    assert D.calibrate(model, files[:4], "avg").thresholds == calibrate_model(model, feeds[:4], "avg").thresholds
    assert dict(os.environ) == before


def test_cli_scheduler(client, lenet, files, tmp_path, capsys):
    from refquant import io
    from refquant.cli import main
    model, feeds = lenet
    data = str(Path(files[0]).parent / "*.npy")
    one, dist = tmp_path / "one.rq", tmp_path / "dist.rq"
    assert main(["quantize", "lenet5", "--data", data, "--batch-nums", "6", "--algo", "hist", "--out", str(one),
                 "--quiet"]) == 0
    address = client.scheduler.address
    assert main(["quantize", "lenet5", "--data", data, "--batch-nums", "6", "--algo", "hist", "--out", str(dist),
                 "--scheduler", address]) == 0
    err = capsys.readouterr().err
    assert "calibration hist pass 2 (histograms): 6/6 done" in err
    assert thresholds(io.load(dist)) .keys() == thresholds(io.load(one)).keys()
    assert all(np.array_equal(v, thresholds(io.load(one))[k]) for k, v in thresholds(io.load(dist)).items())
    assert main(["quantize", "lenet5", "--workers", "2", "--out", str(tmp_path / "x.rq")]) == 2
    assert "give --data" in capsys.readouterr().err
