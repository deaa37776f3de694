"""Benchmark cnncore.correlate2d against scipy.signal.correlate2d, per dtype, and (with
--against REV) against the cnncore.signal of another git revision in the same run.

Rows: 'same' mode, boundary 'symm', one image and one kernel per dtype -- float32 and
float64 (the float kernels), a uint8 image with an int16 kernel (integers, exact through
float64), int64 values past the float64 bound (NumPy's integer arithmetic), complex64 and
complex128 (real kernels on the real and imaginary parts), and float64 with a 21x21 kernel
(the FFT path).  Each time is the median of >= 7 runs after warm-up, timed round-robin;
x = cnncore time / peer time (< 1: cnncore is faster).  SciPy's convolve2d runs on one
thread; cnncore on its thread count (--threads).

    python benchmarks/bench_signal.py [--quick] [--repeat 7] [--threads N]
                                      [--against REV] [--json FILE]

``--against REV`` loads ``cnncore/signal.py`` as of git revision REV (e.g. the commit before
a change to it) next to the current one and times both on the float rows it supports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import cnncore
from cnncore.apps.bench import MIN_REPEAT, geomean, time_round_robin


def _cases(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    n = 256 if quick else 512

    def normal(shape, dtype):
        return rng.standard_normal(shape).astype(dtype)

    def cplx(shape, dtype):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)

    return [
        ("float32 5x5", normal((n, n), np.float32), normal((5, 5), np.float32)),
        ("float64 5x5", normal((n, n), np.float64), normal((5, 5), np.float64)),
        ("float64 3x3 64^2", normal((64, 64), np.float64), normal((3, 3), np.float64)),
        ("float64 21x21 (fft)", normal((n, n), np.float64), normal((21, 21), np.float64)),
        (
            "uint8 * int16 5x5",
            rng.integers(0, 256, (n, n)).astype(np.uint8),
            rng.integers(-8, 9, (5, 5)).astype(np.int16),
        ),
        (
            "int64 2**40 5x5",
            rng.integers(-(2**40), 2**40, (n, n)),
            rng.integers(-(2**20), 2**20, (5, 5)),
        ),
        ("complex64 5x5", cplx((n, n), np.complex64), cplx((5, 5), np.complex64)),
        ("complex128 5x5", cplx((n, n), np.complex128), cplx((5, 5), np.complex128)),
    ]


def _load_signal(rev: str):
    """``cnncore/signal.py`` at git revision ``rev``, as module ``cnncore._signal_at_rev``
    (its relative imports resolve to the current cnncore)."""
    root = Path(cnncore.__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:cnncore/signal.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "signal_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("cnncore._signal_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_signal(quick: bool = False, repeat: int = MIN_REPEAT, against: str | None = None):
    import scipy
    import scipy.signal

    old = _load_signal(against) if against else None
    print(
        f"cnncore {cnncore.__version__} ({cnncore.get_num_threads()} threads), "
        f"scipy {scipy.__version__}, numpy {np.__version__}"
        + (f"; 'before' = cnncore/signal.py at {against}" if against else "")
    )
    head = f"{'correlate2d same symm':<24}{'cnncore ms':>11}{'scipy ms':>10}{'x scipy':>9}"
    print(head + (f"{'before ms':>11}{'x before':>10}" if old else ""))
    rows = []
    for name, img, kern in _cases(quick):
        fns = {
            "cnncore": lambda: cnncore.correlate2d(img, kern, "same", "symm"),
            "scipy": lambda: scipy.signal.correlate2d(img, kern, "same", "symm"),
        }
        if old is not None and img.dtype == kern.dtype and img.dtype.kind == "f":
            fns["before"] = lambda: old.correlate2d(img, kern, "same", "symm")
        library = {"cnncore": "cnncore", "scipy": "scipy", "before": "cnncore"}
        # warm-up calls absorb the wake-up of the OpenMP workers after SciPy's turn
        t = time_round_robin(fns, repeat, library=library, min_time=0.005, warmup=5)
        row = {"case": name, **{f"{k}_s": v for k, v in t.items()}}
        row["x_scipy"] = t["cnncore"] / t["scipy"]
        line = f"{name:<24}{t['cnncore'] * 1e3:11.3f}{t['scipy'] * 1e3:10.3f}{row['x_scipy']:9.3f}"
        if "before" in t:
            row["x_before"] = t["cnncore"] / t["before"]
            line += f"{t['before'] * 1e3:11.3f}{row['x_before']:10.3f}"
        print(line)
        rows.append(row)
    summary = {"geomean_x_scipy": geomean([r["x_scipy"] for r in rows])}
    befores = [r["x_before"] for r in rows if "x_before" in r]
    if befores:
        summary["geomean_x_before"] = geomean(befores)
    print(", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return {"rows": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256x256 images instead of 512")
    parser.add_argument("--repeat", type=int, default=MIN_REPEAT, help="timed runs per median")
    parser.add_argument("--threads", type=int, default=None, help="cnncore's threads")
    parser.add_argument("--against", default=None, metavar="REV", help="git revision to compare")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the numbers as JSON")
    args = parser.parse_args()
    if args.threads is not None:
        cnncore.set_num_threads(args.threads)
    result = bench_signal(args.quick, args.repeat, args.against)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "result": result}, f, indent=1)


if __name__ == "__main__":
    main()
