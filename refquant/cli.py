"""The ``refquant`` command line: ``info``, ``train``, ``eval``, ``quantize``, ``convert``, ``inspect``, ``bench``, ``plot``,
``demo``."""
from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from ._files import write_text_atomic
from .data.files import positive_int as _positive_int
from .errors import ArgumentError, RefquantError


class UsageError(ArgumentError):
    """A command-line argument names something that does not exist or cannot be used (exit status 2)."""


def _output_path(text: str) -> Path:
    """argparse type: a path to write a file to; not empty, not an existing directory, FIFO or device."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty")
    path = Path(text)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot use {text!r}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; name the file to write")
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular file (a FIFO, socket or device)")
    return path


def _check_folder(out: Path) -> Path:
    """``out`` if its folder exists (checked before the work whose result goes there)."""
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {out}: the folder {folder} does not exist")
    return out


def _regular_file(path) -> Path:
    """``path`` if it names an existing regular file: checked with os.stat before anything opens it (opening a
    FIFO for reading blocks until a writer comes)."""
    path = Path(path)
    mode = os.stat(path).st_mode  # FileNotFoundError / PermissionError: reported as OSError
    if stat.S_ISDIR(mode):
        raise UsageError(f"{path} is a directory, not a model file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path} is not a regular file (a FIFO, socket or device), not a model file")
    return path


def cmd_info(args) -> int:
    from ._build import build_info, format_build_info
    print(format_build_info(build_info()))
    return 0


def cmd_train(args) -> int:
    from .io import save
    from .models import zoo
    if args.qat:
        default = Path("data/zoo" if args.cache else ".") / f"{args.model}.qat{args.bits}.rq"
        return _qat(args.model, args.bits, args.epochs, args.out or default, progress=not args.quiet,
                    onnx_format=args.onnx_format)
    model, history, top1 = zoo.train(args.model, seed=args.seed, progress=not args.quiet, epochs=args.epochs)
    if args.out is None:
        out = Path("data/zoo" if args.cache else ".") / f"{args.model}.rq"
    else:
        out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    save(model, out)
    print(f"{args.model}: test top-1 {100 * top1:.2f}% after {len(history['loss'])} epochs "
          f"({history['seconds_total']:.1f} s); saved {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


def _qat(name, bits, epochs, out, progress=False, onnx_format=False) -> int:
    """The zoo QAT recipe on a zoo model (refquant.models.pretrained.finetune_zoo), saved and evaluated;
    ``onnx_format``: quantize_linear / dequantize_linear pairs (PaddleSlim's QuantizationTransformPassV2)."""
    from .io import save
    from .models import zoo
    from .models.pretrained import finetune_zoo
    _check_folder(Path(out))
    if name not in zoo.names():
        raise UsageError(f"QAT fine-tunes a zoo model on its data; {name!r} is not one of {', '.join(zoo.names())}")
    qmodel, history = finetune_zoo(name, bits, epochs=epochs, progress=progress,
                                   config={"onnx_format": True} if onnx_format else None)
    save(qmodel, out)
    r = qmodel.meta["quantization"]["finetune"]
    print(f"{name}: QAT {bits}-bit, {r['epochs']} epochs at lr {r['lr']:g}: test top-1 {_top1(qmodel):.2f}% "
          f"(FP32 {_top1(load_model(name)):.2f}%); saved {out}")
    return 0


def cmd_eval(args) -> int:
    from .report import evaluate_zoo_model, format_table
    if args.file is not None:
        _regular_file(args.file)
    rows = [evaluate_zoo_model(name, path=args.file) for name in args.models]
    print(format_table(rows))
    return 0


PADDLE_SUFFIXES = (".pdmodel", ".json")


def _paddle_prefix(spec: str) -> bool:
    """``spec`` is the path prefix of a Paddle inference model (``<spec>.pdmodel`` or ``<spec>.json`` exists)."""
    return any(os.path.lexists(f"{spec}{suffix}") for suffix in PADDLE_SUFFIXES)


def _import_paddle(path: Path):
    try:
        from .io import import_paddle
    except ImportError:
        try:
            from .io.paddle import import_paddle
        except ImportError:
            raise UsageError(f"{path}: reading Paddle inference models needs refquant.io.import_paddle, which "
                             "this refquant does not have") from None
    return import_paddle(str(path))


def load_model(spec: str):
    """A model from a file: refquant's .rq, ONNX (.onnx), a Paddle inference model (folder, .pdmodel / .json, or
    path prefix); or a zoo name (its trained weights)."""
    from .io import load
    from .models import zoo
    if spec and os.path.lexists(spec):
        path = Path(spec)
        if path.is_dir() or path.suffix.lower() in PADDLE_SUFFIXES:
            return _import_paddle(path)
        if path.suffix.lower() == ".onnx":
            from .io import import_onnx
            return import_onnx(str(_regular_file(spec)))
        return load(_regular_file(spec))
    if spec in zoo.names():
        from .models.pretrained import pretrained
        return pretrained(spec)
    if spec and _paddle_prefix(spec):
        return _import_paddle(Path(spec))
    raise UsageError(f"{spec!r} is neither a model file nor a zoo model ({', '.join(zoo.names())})")


def _progress_loader(feeds: list, quiet: bool):
    """A data loader (a function returning a fresh iterable per calibration pass) over ``feeds`` that reports
    each pass and its batch count on stderr."""
    import time
    from .data.files import describe_feeds
    state = {"pass": 0, "start": time.perf_counter()}

    def one_pass():
        state["pass"] += 1
        if state["pass"] == 1 and not quiet:  # after quant_post_static checked its arguments
            print(f"calibration data: {describe_feeds(feeds)}", file=sys.stderr, flush=True)
        tty = sys.stderr.isatty()
        for i, feed in enumerate(feeds, start=1):
            if not quiet and (tty or i == len(feeds)):
                end = "\n" if i == len(feeds) else "\r"
                print(f"calibration pass {state['pass']}: batch {i}/{len(feeds)} "
                      f"({time.perf_counter() - state['start']:.1f} s)", end=end, file=sys.stderr, flush=True)
            yield feed

    return one_pass


def _top1(model):
    from .models import zoo
    from .train import evaluate
    name = model.meta.get("zoo")
    if name is None:
        return None
    x, y = zoo.load_data(name, "test")
    return 100 * evaluate(model, x, y)


OUT_SUFFIXES = (".rq", ".onnx")


def _out_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise UsageError(f"--out {out}: the suffix decides the format, .rq (refquant) or .onnx (QDQ ONNX); "
                         f"got {suffix or 'none'!r}")
    return suffix[1:]


def _check_onnx_export(model) -> None:
    """Before calibrating: the onnx package is there and every op of ``model`` has an ONNX mapping."""
    from .errors import UnsupportedOpError
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError("--out .onnx needs the onnx package (pip install onnx); or write a .rq file") from None
    from .io.onnx import supported_op_types
    known = set(supported_op_types())
    missing = sorted({op.type for op in model.ops} - known)
    if missing:
        raise UnsupportedOpError(f"--out .onnx: refquant cannot export op types {missing} to ONNX; use .rq")


def _save(qmodel, out: Path, fmt: str) -> None:
    from .io import export_onnx, save
    if fmt == "onnx":
        export_onnx(qmodel, out)
    else:
        save(qmodel, out)


def _size_mb(model, fmt: str) -> float:
    if fmt == "onnx":
        from .io import export_onnx
        return export_onnx(model).ByteSize() / 1e6
    from .io.format import to_bytes
    return len(to_bytes(model)) / 1e6


def cmd_quantize(args) -> int:
    import time
    from . import quant
    from .data.files import feeds_from_args
    if args.report is not False and args.method != "static":
        raise UsageError(f"--report needs --method static (got --method {args.method})")
    if (args.scheduler or args.workers) and args.method != "static":
        raise UsageError(f"--scheduler / --workers calibrate --method static (got --method {args.method})")
    if args.recipe and (args.method != "static" or args.scheduler or args.workers or args.skip):
        raise UsageError("--recipe is a --method static recipe in one process; it chooses the float ops itself "
                         "(no --skip, --scheduler, --workers)")
    if args.data and args.method not in ("static", "qat"):
        raise UsageError(f"--data is calibration data; --method {args.method} reads none")
    if args.data and args.method == "qat":
        raise UsageError("--method qat fine-tunes a zoo model on its embedded data; --data is for --method static")
    out = _check_folder(args.out or Path(f"{Path(args.model.rstrip('/')).stem}.{args.method}.rq"))
    fmt = _out_format(out)
    for path in (args.report,):
        if path:
            _check_folder(path)
    if args.method == "qat":
        if fmt != "rq":
            raise UsageError("--method qat writes a .rq file")
        return _qat(args.model, args.bits, args.epochs, out, onnx_format=args.onnx_format)
    model = load_model(args.model)
    if fmt == "onnx":
        _check_onnx_export(model)
    if args.method == "static" and (args.scheduler or args.workers):
        start, feeds = time.perf_counter(), None
        qmodel = _quantize_distributed(args, model)
        if not args.quiet:
            print(f"calibrated in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    elif args.method == "static" and args.recipe:
        feeds = feeds_from_args(args, model)
        start = time.perf_counter()
        qmodel = quant.quant_post_recipe(
            model, feeds, max_skip=args.max_skip, budget=args.budget, quantizable_op_type=args.op_types,
            hist_percent=args.hist_percent, weight_bits=args.bits, activation_bits=args.bits,
            weight_quantize_type=args.weight_quantize_type, onnx_format=args.onnx_format)
        if not args.quiet:
            r = qmodel.meta["quantization"]["recipe"]
            print(f"recipe in {time.perf_counter() - start:.1f} s: {len(r['smoothed'])} layers smoothed, "
                  f"algorithms {r['algo_counts']}, float ops {r['skip'] or 'none'}", file=sys.stderr, flush=True)
    elif args.method == "static":
        feeds = feeds_from_args(args, model)
        start = time.perf_counter()
        qmodel = quant.quant_post_static(
            model, _progress_loader(feeds, args.quiet), algo=args.algo, hist_percent=args.hist_percent,
            weight_bits=args.bits, activation_bits=args.bits, weight_quantize_type=args.weight_quantize_type,
            onnx_format=args.onnx_format, round_type=args.round_type, bias_correction=args.bias_correction,
            is_full_quantize=args.full, skip_tensor_list=args.skip or None, quantizable_op_type=args.op_types)
        if not args.quiet:
            print(f"calibrated in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    elif args.method == "dynamic":
        qmodel = quant.quant_post_dynamic(model, weight_bits=args.bits,
                                          weight_quantize_type=args.weight_quantize_type)
    else:
        qmodel = quant.quant_embedding(model, {"lookup_table": {"quantize_type": args.embedding_type}})
    _save(qmodel, out, fmt)
    fp32_mb, q_mb = _size_mb(model, fmt), out.stat().st_size / 1e6
    print(f"saved {out}: {q_mb:.3f} MB ({q_mb / fp32_mb:.2f}x of FP32 {fp32_mb:.3f} MB)")
    top1 = _top1(model)
    if top1 is not None:
        print(f"test top-1: FP32 {top1:.2f}%, quantized {_top1(qmodel):.2f}%")
    if args.report is not False:
        if feeds is None:
            from .data.files import load_feeds, preprocess_from_args
            feeds = load_feeds(model, args.data, batch_size=args.batch_size, batch_nums=args.report_batches,
                               preprocess=preprocess_from_args(args))
        _report(model, qmodel, feeds[:args.report_batches], args.report)
    return 0


def _quantize_distributed(args, model):
    """``--scheduler`` / ``--workers``: every ``--data`` file is one shard (the first ``--batch-nums`` files),
    read and calibrated on the Dask workers (:mod:`refquant.distributed`); the weights are quantized here."""
    from . import distributed
    from .data.files import expand_data, preprocess_from_args
    if not args.data:
        raise UsageError("--scheduler / --workers calibrate the --data files on the workers; give --data")
    if args.round_type == "adaround":
        raise UsageError("--round-type adaround trains on the data in one process; drop --scheduler / --workers")
    files = [str(p) for p in expand_data(args.data)][:args.batch_nums]
    return distributed.quant_post_static(
        model, files, algo=args.algo, client=args.scheduler, workers=args.workers, batch_size=args.batch_size,
        preprocess=preprocess_from_args(args), progress=not args.quiet, hist_percent=args.hist_percent,
        weight_bits=args.bits, activation_bits=args.bits, weight_quantize_type=args.weight_quantize_type,
        onnx_format=args.onnx_format, bias_correction=args.bias_correction, is_full_quantize=args.full,
        skip_tensor_list=args.skip or None, quantizable_op_type=args.op_types)


def cmd_convert(args) -> int:
    from .deploy import convert_to_int8
    from .io import save
    from .ops.registry import has_trait
    from .report import latency_ms
    out = _check_folder(args.out or Path(f"{Path(args.qmodel).stem}.int8.rq"))
    qmodel = load_model(args.qmodel)
    i8 = convert_to_int8(qmodel, unsigned=not args.fake_quant_grid, reduce_range=args.reduce_range)
    save(i8, out)
    counts = i8.op_counts()
    print(f"saved {out}: {out.stat().st_size / 1e6:.3f} MB; INT8 ops: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if has_trait(k, "int8")))
    top1 = _top1(qmodel)
    if top1 is not None:
        print(f"test top-1: fake-quant {top1:.2f}%, INT8 {_top1(i8):.2f}%")
        from .models import zoo
        x, _ = zoo.load_data(qmodel.meta["zoo"], "test")
        feed = {qmodel.inputs[0]: x[:1]}
        print(f"latency (batch 1): fake-quant {latency_ms(qmodel, feed):.3f} ms, INT8 {latency_ms(i8, feed):.3f} ms")
    return 0


def _report(model, qmodel, feeds, json_path):
    from .quant.report import format_report, layer_report, write_report_json
    rows = layer_report(model, qmodel, feeds)
    print(format_report(rows))
    if json_path is not None:
        write_report_json(rows, json_path, meta=qmodel.meta.get("quantization"))
        print(f"wrote {json_path}")


def cmd_inspect(args) -> int:
    from .data.files import feeds_from_args
    if args.json is not None:
        _check_folder(args.json)
    qmodel = load_model(args.qmodel)
    if "quantization" not in qmodel.meta:
        raise ValueError(f"{args.qmodel} is not a quantized model")
    fp32_spec = args.fp32 or qmodel.meta.get("zoo")
    if not fp32_spec:
        raise UsageError(f"{args.qmodel} is not a zoo model: name its FP32 model with --fp32")
    fp32 = load_model(fp32_spec)
    info = qmodel.meta["quantization"]
    feeds = feeds_from_args(args, fp32)
    print(f"{args.qmodel}: {info['method']} {info.get('algo', '')}, {info.get('weight_bits')}-bit weights "
          f"({info.get('weight_quantize_type')})")
    _report(fp32, qmodel, feeds, args.json)
    return 0


def _benchmarks_package():
    """The repository's ``benchmarks`` package (benchmarks ship with the source, not in the wheel)."""
    import importlib
    root = Path(__file__).resolve().parents[1]
    if (root / "benchmarks" / "__init__.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        raise FileNotFoundError("refquant bench runs the benchmarks/ folder of a source checkout; run it from "
                                "a clone (pip install -e .)") from None


def cmd_bench(args) -> int:
    import importlib
    import json
    pkg = _benchmarks_package()
    available = sorted(p.stem[len("bench_"):] for p in Path(pkg.__file__).parent.glob("bench_*.py"))
    names = args.names or available
    for path in (args.json, args.md):
        if path is not None:
            _check_folder(path)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"unknown benchmark(s) {unknown}; available: {', '.join(available)}")
    results, parts = {}, []
    for name in names:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running {name} ...", flush=True)
        results[name] = mod.run()
        parts.append(f"## {name}\n\n" + mod.markdown(results[name]))
        print(parts[-1] + "\n", flush=True)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(results, indent=1, default=str))
    if args.md is not None:
        write_text_atomic(args.md, "\n\n".join(parts) + "\n")
    return 0


def cmd_plot(args) -> int:
    from .plot import save_figure
    _check_folder(args.out)
    save_figure(args.kind, args.out, quick=args.quick, dpi=args.dpi)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    return 0


def cmd_demo(args) -> int:
    from .report import demo
    if args.json is not None:
        _check_folder(args.json)
    return demo(models=args.models or None, json_path=args.json)


def build_parser() -> argparse.ArgumentParser:
    from .data.files import add_data_arguments
    from .models import zoo
    from .calibration.algorithms import static_algorithms
    ap = argparse.ArgumentParser(prog="refquant", description="A reference implementation of neural-network "
                                 "quantization on its own small NN runtime.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, compiler, OpenMP, CPU features, active kernel paths")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("train", help="train a zoo model on its embedded data and save it")
    p.add_argument("model", choices=zoo.names())
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=_output_path, default=None, help="output file (default ./<model>.rq)")
    p.add_argument("--cache", action="store_true", help="write data/zoo/<model>.rq, the demo's cache")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning of the trained model "
                   "(lr 1/10 and 1/4 of the epochs at 8 bits, 3/10 and 1/2 below; warmup; then convert)")
    p.add_argument("--bits", type=int, default=8, help="with --qat: weight and activation bits")
    p.add_argument("--onnx-format", action="store_true",
                   help="with --qat: quantize_linear/dequantize_linear pairs (PaddleSlim's onnx_format=True)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="top-1, size and latency of trained zoo models on their test split")
    p.add_argument("models", nargs="+", choices=zoo.names())
    p.add_argument("--file", type=Path, default=None, help="a saved model to evaluate instead of the cached one")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("quantize", help="quantize a zoo model or a model file and save it (.rq or QDQ .onnx)")
    p.add_argument("model", help="a zoo name, a .rq or .onnx file, or a Paddle inference model (folder, "
                   ".pdmodel / .json file or path prefix)")
    p.add_argument("--method", choices=("static", "dynamic", "embedding", "qat"), default="static")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="qat: epochs (default: 1/4 of the training recipe's)")
    p.add_argument("--algo", default="KL", choices=static_algorithms())
    p.add_argument("--recipe", action="store_true",
                   help="static: smoothing + the algorithm per tensor + --max-skip float ops, all chosen on a "
                        "held-out quarter of --data (docs/ptq.md); --algo is not used")
    p.add_argument("--max-skip", type=int, default=0, help="--recipe: keep at most this many ops float")
    p.add_argument("--budget", type=float, default=0.0,
                   help="--recipe: the fewest float ops whose held-out relative output error is <= this")
    p.add_argument("--bits", type=int, default=8, help="weight (and activation) bits; dynamic: 8 or 16")
    p.add_argument("--weight-quantize-type", default="channel_wise_abs_max",
                   choices=("abs_max", "channel_wise_abs_max"))
    p.add_argument("--hist-percent", type=float, default=0.99999)
    p.add_argument("--onnx-format", action="store_true", help="quantize_linear/dequantize_linear, int8 weights")
    p.add_argument("--round-type", default="round", choices=("round", "adaround"))
    p.add_argument("--bias-correction", action="store_true")
    p.add_argument("--full", action="store_true", help="is_full_quantize")
    p.add_argument("--skip", nargs="*", default=[], help="skip_tensor_list: ops reading these stay float")
    p.add_argument("--op-types", nargs="+", default=["conv2d", "depthwise_conv2d", "mul"], metavar="TYPE",
                   help="quantizable_op_type (default PaddleSlim's: conv2d depthwise_conv2d mul; imported ONNX "
                        "graphs often need matmul too)")
    p.add_argument("--embedding-type", default="abs_max", choices=("abs_max", "log"))
    p.add_argument("--out", type=_output_path, default=None,
                   help="the output file; its suffix picks the format: .rq (refquant) or .onnx (QDQ ONNX that "
                        "onnxruntime runs); default ./<model>.<method>.rq")
    p.add_argument("--report", type=_output_path, nargs="?", const=None, default=False,
                   help="print the per-layer report (and write it as JSON to the path given)")
    p.add_argument("--report-batches", type=_positive_int, default=2)
    p.add_argument("--quiet", action="store_true", help="no calibration progress on stderr")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="calibrate on the workers of this Dask scheduler (tcp://HOST:8786): each --data file "
                            "is one shard, read on a worker; --batch-nums counts files (pip install refquant[dask])")
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="as --scheduler, on a local Dask cluster of N processes (one thread each)")
    add_data_arguments(p, batch_nums=10)
    p.set_defaults(func=cmd_quantize)
    p = sub.add_parser("convert", help="turn a quantized (fake-quant) model into an INT8 graph and save it")
    p.add_argument("qmodel", help="a model file written by `refquant quantize --method static`")
    p.add_argument("--out", type=_output_path, default=None, help="default ./<qmodel>.int8.rq")
    p.add_argument("--fake-quant-grid", action="store_true",
                   help="keep relu outputs on the fake-quant grid T/127 instead of u8 T/255")
    p.add_argument("--reduce-range", action="store_true",
                   help="halve conv/matmul weights to [-64, 64]: exact vpmaddubsw on AVX2 CPUs without VNNI "
                        "(faster), one bit less weight resolution")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("inspect", help="per-layer report of a quantized model: threshold, scale, clipping, SQNR")
    p.add_argument("qmodel", help="a model file written by `refquant quantize --method static`")
    p.add_argument("--fp32", default=None, help="its FP32 model (a file as for quantize, or a zoo name; "
                   "default: its zoo name)")
    p.add_argument("--json", type=_output_path, default=None, help="also write the report as JSON")
    add_data_arguments(p, batch_nums=2)
    p.set_defaults(func=cmd_inspect)
    from .check.cli import add_parser as _add_check
    _add_check(sub)

    p = sub.add_parser("bench", help="run the benchmarks (benchmarks/bench_<name>.py): speed ratios side by side")
    p.add_argument("names", nargs="*", help="default: all of them")
    p.add_argument("--json", type=_output_path, default=None, help="write every result as JSON")
    p.add_argument("--md", type=_output_path, default=None, help="write the markdown tables")
    p.set_defaults(func=cmd_bench)
    from .plot import KINDS as _PLOT_KINDS
    p = sub.add_parser("plot", help="draw a teaching figure from a real run (PNG; needs matplotlib: "
                       "pip install 'refquant[plot]')")
    p.add_argument("kind", choices=list(_PLOT_KINDS))
    p.add_argument("--out", type=_output_path, required=True, help="the PNG file to write")
    p.add_argument("--quick", action="store_true", help="less data, fewer steps, 50 dpi (a quick look)")
    p.add_argument("--dpi", type=_positive_int, default=None, help="default 100 (50 with --quick)")
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("demo", help="the main job: FP32 zoo models (trained or cached) with accuracy, size, latency")
    p.add_argument("models", nargs="*", choices=zoo.names() + [[]], help="default: all")
    p.add_argument("--json", type=_output_path, default=None, help="also write the table as JSON")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    """Run one command. Argument errors argparse finds exit 2 with its usage message; errors from bad input found
    later print one line ``refquant: error: ...`` on stderr and exit 2 (an argument: ArgumentError, UsageError)
    or 1 (a file, a model, the system: any other RefquantError, OSError, ValueError, KeyError,
    NotImplementedError). Other exceptions are bugs and keep their traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RefquantError, OSError, ValueError, KeyError, NotImplementedError) as exc:
        print(f"refquant: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ArgumentError) else 1


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a KeyError's without its repr quotes, an OSError's with its path)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
