"""Benchmark batch / group / layer / instance norm (forward, backward) against PyTorch and a
NumPy copy.

Float32 CNN shapes (batch 128 or 32, 8 with --quick), same thread count for both libraries;
ratios x = cnncore time / baseline time (< 1: cnncore is faster); GB/s = bytes the pass must
move / time.  See cnncore.apps.bench.norm.bench_norm.

    python benchmarks/bench_norm.py [--quick] [--repeat 7] [--threads N] [--no-torch]
                                    [--json FILE]
"""

from cnncore.apps.bench import bench_norm, run_script, script_parser

if __name__ == "__main__":
    run_script(bench_norm, script_parser(__doc__).parse_args())
