"""Benchmark inference latency: cnncore's predict vs PyTorch (inference_mode) and
onnxruntime (running the graph cnncore.onnx exports), batch 1 and 8, 1 and 2 threads.

Same thread count for all three; ratio = cnncore/peer (< 1: cnncore is faster).  Models:
LeNet-5 and the README's CNN (and ResNet-20 once cnncore.models has it).
See cnncore.apps.bench.inference.bench_inference.

    python benchmarks/bench_inference.py [--quick] [--repeat 7] [--threads N]
                                         [--models lenet5 cnn] [--no-torch] [--no-ort]
                                         [--json FILE]
"""

from cnncore.apps.bench import bench_inference, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None, help="default: every model")
    parser.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    args = parser.parse_args()
    threads = (args.threads,) if args.threads else (1, 2)
    args.threads = None  # the suite sets each thread count itself
    run_script(bench_inference, args, threads=threads, models=args.models, use_ort=not args.no_ort)
