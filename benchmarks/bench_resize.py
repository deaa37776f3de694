"""Benchmark interpolate (nearest / bilinear, forward and backward) and pixel_(un)shuffle
against PyTorch and a NumPy copy.

Float32 CNN shapes (batch 32, 8 with --quick), same thread count for both libraries; ratios
x = cnncore time / baseline time (< 1: cnncore is faster); GB/s = bytes the pass must move /
time.  See cnncore.apps.bench.resize.bench_resize.

    python benchmarks/bench_resize.py [--quick] [--repeat 7] [--threads N] [--no-torch]
                                      [--json FILE]
"""

from cnncore.apps.bench import bench_resize, run_script, script_parser

if __name__ == "__main__":
    run_script(bench_resize, script_parser(__doc__).parse_args())
