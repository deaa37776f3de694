"""Benchmark max / average pooling (forward + backward) against PyTorch and a NumPy copy.

Float32, same thread count for both libraries; ratio = cnncore/torch (< 1: cnncore is faster);
GB/s = bytes a pass must move / time, next to a NumPy copy of the same bytes timed in the same
row.  See cnncore.apps.bench.pool.bench_pool.

    python benchmarks/bench_pool.py [--quick] [--repeat 7] [--threads N] [--no-torch]
                                    [--split] [--json FILE]
"""

from cnncore.apps.bench import bench_pool, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument(
        "--split",
        action="store_true",
        help="also time cnncore's forward and backward passes separately",
    )
    args = parser.parse_args()
    run_script(bench_pool, args, split=args.split)
