"""The ``refquant check`` subcommand: ``add_parser(subparsers)`` adds it, ``run(args)`` runs it.

    refquant check FP32_MODEL QUANT_MODEL --data calib.npy [--runtime onnxruntime|none]
                   [--json out.json] [--tol-lsb 1] [--rtol 0.01] [--activations auto|refquant|onnxruntime]
                   [--session-config KEY=VALUE ...]

Prints the scale table and, with a runtime, the op-by-op table; writes the report as JSON on request (atomically);
exits 0 when every runtime tensor is within ``--tol-lsb``, 1 when one is not.
"""
from __future__ import annotations

import argparse

from ..errors import ArgumentError
from .scales import DEFAULT_RTOL


def _session_entry(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {v}")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``check`` to an argparse subparsers object; returns its parser (``func`` is set to :func:`run`)."""
    from ..data.files import add_data_arguments, non_negative_int
    p = subparsers.add_parser(
        "check", help="hold a foreign quantized model (QDQ ONNX, Paddle) and its INT8 runtime against the reference",
        description="Which refquant algorithm gives the foreign scales; whether the runtime's quantized tensors "
                    "equal the exact integer reference, and where they first differ.")
    p.add_argument("fp32_model", help="the FP32 model (.onnx, .rq, or a Paddle inference model)")
    p.add_argument("quant_model", help="the quantized model (QDQ .onnx, or a Paddle quantized inference model)")
    p.add_argument("--runtime", choices=("onnxruntime", "none"), default="onnxruntime",
                   help="the runtime to check op by op (none: scales only)")
    p.add_argument("--tol-lsb", type=non_negative_int, default=1,
                   help="largest difference, in integer steps, that still counts as exact (default 1)")
    p.add_argument("--rtol", type=_fraction, default=DEFAULT_RTOL,
                   help=f"relative scale tolerance of the 'within tolerance' verdict (default {DEFAULT_RTOL})")
    p.add_argument("--activations", choices=("auto", "refquant", "onnxruntime"), default="auto",
                   help="who computes the FP32 tensors the algorithms calibrate on (default auto: onnxruntime "
                        "for two ONNX models)")
    p.add_argument("--session-config", type=_session_entry, action="append", default=None, metavar="KEY=VALUE",
                   help="an onnxruntime session config entry, e.g. session.x64quantprecision=1; repeatable")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON")
    add_data_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run ``refquant check``; 0 when the runtime is exact within ``--tol-lsb``, 1 otherwise."""
    from .._files import write_text_atomic
    from ..data.files import describe_feeds, feeds_from_args
    from . import check_loaded, load_model
    if not getattr(args, "data", None):
        raise ArgumentError("check: give the calibration data with --data (.npy / .npz files or images)")
    fp32 = load_model(args.fp32_model, "FP32 model")
    quant = load_model(args.quant_model, "quantized model")
    feeds = feeds_from_args(args, fp32[0])
    print(f"data: {describe_feeds(feeds)}")
    runtime = None if args.runtime == "none" else args.runtime
    report = check_loaded(fp32, quant, feeds, runtime=runtime, tol_lsb=args.tol_lsb, rtol=args.rtol,
                          activations=args.activations,
                          session_options=dict(args.session_config) if args.session_config else None)
    print(report.format_table())
    if args.json is not None:
        write_text_atomic(args.json, report.dumps() + "\n")
        print(f"wrote {args.json}")
    return 0 if report.ok else 1
