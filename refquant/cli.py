"""The ``refquant`` command line: ``info``, ``train``, ``eval``, ``demo``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_info(args) -> int:
    from ._build import build_info, format_build_info
    print(format_build_info(build_info()))
    return 0


def cmd_train(args) -> int:
    from .io import save
    from .models import zoo
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


def cmd_eval(args) -> int:
    from .report import evaluate_zoo_model, format_table
    rows = [evaluate_zoo_model(name, path=args.file) for name in args.models]
    print(format_table(rows))
    return 0


def cmd_demo(args) -> int:
    from .report import demo
    return demo(models=args.models or None, json_path=args.json)


def build_parser() -> argparse.ArgumentParser:
    from .models import zoo
    ap = argparse.ArgumentParser(prog="refquant", description="A reference implementation of neural-network "
                                 "quantization on its own small NN runtime.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, compiler, OpenMP, CPU features, active kernel paths")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("train", help="train a zoo model on its embedded data and save it")
    p.add_argument("model", choices=zoo.names())
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output file (default ./<model>.rq)")
    p.add_argument("--cache", action="store_true", help="write data/zoo/<model>.rq, the demo's cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="top-1, size and latency of trained zoo models on their test split")
    p.add_argument("models", nargs="+", choices=zoo.names())
    p.add_argument("--file", type=Path, default=None, help="a saved model to evaluate instead of the cached one")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("demo", help="the main job: FP32 zoo models (trained or cached) with accuracy, size, latency")
    p.add_argument("models", nargs="*", choices=zoo.names() + [[]], help="default: all")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"refquant {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
