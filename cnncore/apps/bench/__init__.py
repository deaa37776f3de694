"""Benchmark suites behind ``cnncore bench`` and the scripts in ``benchmarks/``.

Every suite times cnncore and (when installed) PyTorch in the same run, with the same thread
count, and reports ratios cnncore/torch plus GFLOP/s against the float32 GEMM roof (or GB/s
against a NumPy copy of the same bytes) measured in that run.

- :mod:`~cnncore.apps.bench.timing`: the timing harness (round-robin medians, library
  switches, the sgemm roof, copy baselines, peak memory) and its timing rules;
- one module per suite: :mod:`~cnncore.apps.bench.conv`, :mod:`~cnncore.apps.bench.pool`,
  :mod:`~cnncore.apps.bench.activation`, :mod:`~cnncore.apps.bench.norm`,
  :mod:`~cnncore.apps.bench.resize`, :mod:`~cnncore.apps.bench.train`,
  :mod:`~cnncore.apps.bench.inference`, :mod:`~cnncore.apps.bench.autotune`;
- here: :data:`SUITES` (the table ``cnncore bench --suite`` reads) and the shared command line
  of the ``benchmarks/bench_*.py`` scripts (:func:`script_parser`, :func:`run_script`).

A new suite is a module here with a ``bench_<name>(quick=, use_torch=, repeat=, out=print,
...) -> dict`` function, an entry in :data:`SUITES` and a script in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

import cnncore

from .activation import SIGNAL_CASES, bench_activation
from .autotune import AUTOTUNE_SHAPES, bench_autotune
from .conv import CONV_SHAPES, bench_conv, bench_conv_resnet
from .inference import bench_inference
from .norm import NORM_CASES, bench_norm
from .pool import POOL_CASES, bench_pool
from .resize import RESIZE_CASES, bench_resize
from .timing import (
    MIN_REPEAT,
    SETTLE_S,
    check_repeat,
    conv_extra_memory,
    copy_bandwidth,
    copy_baseline,
    geomean,
    median_time,
    peak_extra_memory,
    sgemm_roof,
    time_round_robin,
    try_import_torch,
)
from .train import bench_train

__all__ = [
    "MIN_REPEAT",
    "SETTLE_S",
    "check_repeat",
    "median_time",
    "time_round_robin",
    "sgemm_roof",
    "copy_baseline",
    "copy_bandwidth",
    "geomean",
    "try_import_torch",
    "peak_extra_memory",
    "conv_extra_memory",
    "CONV_SHAPES",
    "POOL_CASES",
    "SIGNAL_CASES",
    "NORM_CASES",
    "RESIZE_CASES",
    "bench_conv",
    "bench_conv_resnet",
    "bench_pool",
    "bench_activation",
    "bench_norm",
    "bench_resize",
    "bench_train",
    "bench_inference",
    "bench_autotune",
    "AUTOTUNE_SHAPES",
    "SUITES",
    "script_parser",
    "run_script",
]


def _conv_suite(suite: str) -> Callable[..., dict]:
    def run(**kwargs: Any) -> dict:
        return bench_conv(suite=suite, **kwargs)

    run.__name__ = f"bench_conv_{suite}"
    return run


SUITES: dict[str, Callable[..., dict]] = {
    "conv": bench_conv,
    "conv-resnet": bench_conv_resnet,
    "depthwise": _conv_suite("depthwise"),
    "transposed": _conv_suite("transposed"),
    "pool": bench_pool,
    "activation": bench_activation,
    "norm": bench_norm,
    "resize": bench_resize,
    "train": bench_train,
    "inference": bench_inference,
    "autotune": bench_autotune,
}
"""Suites of ``cnncore bench --suite``; each is called as ``fn(quick=, use_torch=, repeat=)``
and returns a dict of its numbers."""


# --------------------------------------------------------------------------------------------
# Command-line scripts in benchmarks/
# --------------------------------------------------------------------------------------------


def script_parser(doc: str | None, repeat: bool = True) -> argparse.ArgumentParser:
    """Argument parser with the options shared by the ``benchmarks/bench_*.py`` scripts:
    ``--quick``, ``--no-torch``, ``--threads N``, ``--json FILE`` (and ``--repeat N``)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer / smaller cases")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for cnncore and torch (default: cnncore's)",
    )
    if repeat:
        parser.add_argument(
            "--repeat",
            type=int,
            default=MIN_REPEAT,
            help=f"timed runs per median (at least {MIN_REPEAT})",
        )
    parser.add_argument(
        "--json", default=None, metavar="FILE", help="also write the numbers as JSON to FILE"
    )
    return parser


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def run_script(suite: Callable[..., dict], args: argparse.Namespace, **kwargs: Any) -> dict:
    """Run ``suite`` with the shared options in ``args`` (see :func:`script_parser`) plus
    ``kwargs``; write ``{"suite", "argv", "versions", "result"}`` to ``args.json`` if given."""
    if args.threads is not None:
        cnncore.set_num_threads(args.threads)
    result = suite(
        quick=args.quick,
        use_torch=not args.no_torch,
        repeat=getattr(args, "repeat", MIN_REPEAT),
        **kwargs,
    )
    if args.json:
        torch = None if args.no_torch else try_import_torch()
        name = next((k for k, v in SUITES.items() if v is suite), suite.__name__)
        doc = {
            "suite": name,
            "argv": sys.argv[1:],
            "versions": {
                "cnncore": cnncore.__version__,
                "numpy": np.__version__,
                "torch": getattr(torch, "__version__", None),
            },
            "result": result,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=_json_default)
            f.write("\n")
    return result
