"""Benchmark autotuning: the convolution algorithms cnncore.tune measures against the
built-in thresholds, per pass, on LeNet (batch 1 and 64), ResNet-20 (batch 128), grouped and
ImageNet-stem shapes; ratio = tuned / thresholds (< 1: tuning found a faster algorithm).
Run it again with CNNCORE_SIMD=avx2 on an AVX-512 machine to see the choices move.
See cnncore.apps.bench.autotune.bench_autotune.

    python benchmarks/bench_autotune.py [--quick] [--repeat 7] [--threads N] [--json FILE]
"""

from cnncore.apps.bench import bench_autotune, run_script, script_parser

if __name__ == "__main__":
    args = script_parser(__doc__).parse_args()
    run_script(bench_autotune, args)
