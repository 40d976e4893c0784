"""Train every zoo model on its embedded data and print the table (model, input, params, epochs, time, top-1).

    python scripts/train_zoo.py                     # all trainable zoo models, seed 0
    python scripts/train_zoo.py lenet5 resnet20     # some of them
    python scripts/train_zoo.py --save out/         # also write out/<name>.npz (params + meta as JSON)

Seconds are wall time and depend on the machine's load; the recipes live in refquant/models/zoo.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refquant.models import count_params, zoo  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"zoo models (default: all of {zoo.names()})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    ap.add_argument("--save", type=Path, default=None, help="folder for <name>.npz with the trained parameters")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for name in args.names or zoo.names():
        entry = zoo.ZOO[name]
        model, hist, top1 = zoo.train(name, seed=args.seed, progress=not args.quiet, epochs=args.epochs)
        data = entry["data"]
        size = f"{data['size']}x{data['size']}" if data["dataset"] == "digits" else f"{data['max_len']} tokens"
        row = dict(model=name, input=size, params=count_params(model, trainable_only=True),
                   epochs=len(hist["loss"]), seconds=round(hist["seconds_total"], 1),
                   sec_per_epoch=round(float(np.median(hist["seconds"])), 2), top1=round(100 * top1, 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.save / f"{name}.npz", __meta__=np.array(json.dumps(model.meta)),
                                **model.params)
    print("\n| model | input | params | epochs | s/epoch | seconds | test top-1 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['input']} | {r['params']:,} | {r['epochs']} | {r['sec_per_epoch']} | "
              f"{r['seconds']} | {r['top1']:.2f}% |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
