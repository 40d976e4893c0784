"""Rebuild ``data/digits.npz`` from the copy of the UCI digits that scikit-learn ships.

scikit-learn is *not* a dependency: this script reads ``sklearn/datasets/data/digits.csv.gz`` straight out of a
downloaded wheel (or a loose copy of that file), checks its sha256 and writes the compressed npz the loaders use::

    pip download scikit-learn==1.9.1 --no-deps -d /tmp/skl
    python data/make_digits.py /tmp/skl/scikit_learn-1.9.1-*.whl

The train/test split is stratified, 80/20, drawn once with ``numpy.random.default_rng(0)`` and stored as index
arrays in the npz, so it never changes even if NumPy's generator ever does.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

CSV_MEMBER = "sklearn/datasets/data/digits.csv.gz"
CSV_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def read_csv_gz(source: Path) -> bytes:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            return z.read(CSV_MEMBER)
    return source.read_bytes()


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    raw = read_csv_gz(Path(argv[0]))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CSV_SHA256:
        print(f"warning: sha256 {digest} differs from the recorded {CSV_SHA256}", file=sys.stderr)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",")
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    assert images.shape == (1797, 8, 8) and images.max() == 16 and set(labels.tolist()) == set(range(10))
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    out = Path(__file__).resolve().parent / "digits.npz"
    np.savez_compressed(out, images=images, labels=labels, train_idx=train_idx, test_idx=test_idx,
                        source_sha256=np.array(digest))
    print(f"wrote {out}: {len(labels)} images, {len(train_idx)} train / {len(test_idx)} test")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
