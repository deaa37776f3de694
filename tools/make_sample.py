"""Build cnncore/data/fashion_mnist_sample.npz, the dataset of cnncore.datasets.load_sample().

Run once, from the repository root (needs Debian's ``dataset-fashion-mnist`` package, or the
four Fashion-MNIST IDX files in the directory given by ``--src``)::

    python tools/make_sample.py

The sample is stratified: the same number of images of each of the 10 classes, chosen
uniformly at random with a fixed seed, in each split. The test split has ``--test-per-class``
images per class (100 by default); the train split gets the largest per-class count that keeps
the compressed file at most ``--max-bytes`` bytes (a bisection over the count; the subsets are
nested, so a larger count only adds images), unless ``--train-per-class`` fixes it. The shipped
file: 578 train + 100 test images per class, 2,999,703 bytes. Chosen images keep their
original order, and the file records their indices in the original splits.

The output holds only plain arrays (``np.load(..., allow_pickle=False)`` reads it):
``x_train`` uint8 (N, 28, 28), ``y_train`` uint8 (N,), ``x_test``, ``y_test``,
``train_indices`` / ``test_indices`` int32 (positions in the original Fashion-MNIST splits).
Fashion-MNIST: Copyright (c) 2017 Zalando SE, MIT license (see FASHION_MNIST_LICENSE.txt).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

try:  # the installed package, or an in-place build on PYTHONPATH
    from cnncore.datasets import load_idx
except ImportError:  # run from a source checkout built with build_ext --inplace
    sys.path.insert(0, str(ROOT))
    from cnncore.datasets import load_idx

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _read(src: Path, base: str) -> np.ndarray:
    for name in (base, base + ".gz"):
        if (src / name).is_file():
            return load_idx(src / name)
    raise SystemExit(f"make_sample.py: {base}[.gz] not found in {src}")


def _orders(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each class, a random permutation of the positions of its images."""
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]


def _pick(orders: list[np.ndarray], per_class: int) -> np.ndarray:
    return np.sort(np.concatenate([o[:per_class] for o in orders])).astype(np.int32)


def _encode(xtr, ytr, xte, yte, itr, ite) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        x_train=xtr[itr],
        y_train=ytr[itr],
        x_test=xte[ite],
        y_test=yte[ite],
        train_indices=itr,
        test_indices=ite,
    )
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument(
        "--out", type=Path, default=ROOT / "cnncore" / "data" / "fashion_mnist_sample.npz"
    )
    ap.add_argument("--max-bytes", type=int, default=3_000_000)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="use this count instead of searching for the largest that fits",
    )
    args = ap.parse_args(argv)

    xtr, ytr, xte, yte = (_read(args.src, f) for f in FILES)
    rng = np.random.default_rng(args.seed)
    train_orders = _orders(ytr, rng)
    test_orders = _orders(yte, rng)
    ite = _pick(test_orders, args.test_per_class)

    def size(k: int) -> int:
        return len(_encode(xtr, ytr, xte, yte, _pick(train_orders, k), ite))

    if args.train_per_class is not None:
        lo = args.train_per_class
    else:
        lo, hi = 0, min(len(o) for o in train_orders)
        if size(lo) > args.max_bytes:
            raise SystemExit("make_sample.py: the test split alone exceeds --max-bytes")
        if size(hi) <= args.max_bytes:
            lo = hi
        while hi - lo > 1:  # invariant: size(lo) fits, size(hi) does not
            mid = (lo + hi) // 2
            if size(mid) <= args.max_bytes:
                lo = mid
            else:
                hi = mid
    itr = _pick(train_orders, lo)
    data = _encode(xtr, ytr, xte, yte, itr, ite)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(
        f"{args.out}: {len(data)} bytes; train {len(itr)} ({lo}/class), "
        f"test {len(ite)} ({args.test_per_class}/class), seed {args.seed}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
