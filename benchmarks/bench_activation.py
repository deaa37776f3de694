"""Benchmark activations and cross entropy against a NumPy copy and PyTorch.

Float32, 16 Mi elements (4 Mi and fewer ops with --quick), same thread count for both
libraries; ratios x = cnncore time / baseline time (< 1: cnncore is faster).  The full run
also times out= against np.copyto and checks correlate2d's 'auto' method choice.
See cnncore.apps.bench.activation.bench_activation.

    python benchmarks/bench_activation.py [--quick] [--size N] [--repeat 7] [--threads N]
                                          [--no-torch] [--out | --no-out]
                                          [--signal | --no-signal] [--json FILE]
"""

import argparse

from cnncore.apps.bench import bench_activation, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--size", type=int, default=None, help="elements (default 16 Mi)")
    parser.add_argument(
        "--out",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time out= (preallocated) rows (default: unless --quick)",
    )
    parser.add_argument(
        "--signal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check correlate2d method='auto' (default: unless --quick)",
    )
    args = parser.parse_args()
    run_script(bench_activation, args, size=args.size, with_out=args.out, signal=args.signal)
