"""Benchmark convolutions forward and forward+backward against PyTorch (same threads, same run).

Float32; ratio = cnncore/torch (< 1: cnncore is faster); GFLOP/s against the float32 sgemm
roof measured after the conv timings.  ``--suite`` picks the shapes: ``standard`` (conv2d on
LeNet/CNN/ResNet-like shapes), ``depthwise`` (MobileNet's depthwise 3x3 convolutions),
``transposed`` (conv_transpose2d upsamplers: k4 s2 p1 and U-Net's k2 s2 decoder stages),
``resnet`` (CIFAR ResNet-20/32/56's 3x3 convolutions at batch 128, grouped 3x3) or ``all``.
The SIMD level of the kernels is printed; ``CNNCORE_SIMD=avx2`` caps it.  See
cnncore.apps.bench.conv.bench_conv.

    python benchmarks/bench_conv.py [--suite standard|depthwise|transposed|resnet|all] [--quick]
                                    [--repeat 7] [--threads N] [--no-torch] [--no-memory]
                                    [--json FILE]
"""

from cnncore.apps.bench import bench_conv, run_script, script_parser
from cnncore.apps.bench.conv import SUITES


def _suite(name):
    def run(**kwargs):
        return bench_conv(suite=name, **kwargs)

    run.__name__ = f"conv-{name}"  # names the suite in the --json output
    return run


if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--suite", choices=[*SUITES, "all"], default="standard", help="which shapes to time"
    )
    args = parser.parse_args()
    json_path = args.json
    for suite in SUITES if args.suite == "all" else (args.suite,):
        if json_path and args.suite == "all":
            args.json = json_path.replace(".json", "") + f"-{suite}.json"
        run_script(_suite(suite), args, memory=not args.no_memory)
        print()
