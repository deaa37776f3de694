"""Benchmark conv2d forward and forward+backward against PyTorch (same threads, same run).

Float32; ratio = cnncore/torch (< 1: cnncore is faster); GFLOP/s against the float32 sgemm
roof measured after the conv timings.  See cnncore.apps.bench.conv.bench_conv.

    python benchmarks/bench_conv.py [--quick] [--repeat 7] [--threads N] [--no-torch]
                                    [--no-memory] [--json FILE]
"""

from cnncore.apps.bench import bench_conv, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = parser.parse_args()
    run_script(bench_conv, args, memory=not args.no_memory)
