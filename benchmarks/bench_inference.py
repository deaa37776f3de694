"""Benchmark inference latency: cnncore's predict vs PyTorch (inference_mode) and
onnxruntime (running the graph cnncore.onnx exports), batch 1 and 8, 1 and 2 threads; then
the per-call overhead of LeNet-5's layers at batch 1 (layer call vs its kernel on
preallocated buffers) and the cost of one switch of the BLAS thread cap.

Same thread count for all three; ratio = cnncore/peer (< 1: cnncore is faster).  Models:
LeNet-5, the README's CNN and ResNet-20 (a graph model), each after nn.fuse.
See cnncore.apps.bench.inference.bench_inference and layer_overhead.

    python benchmarks/bench_inference.py [--quick] [--repeat 7] [--threads N]
                                         [--models lenet5 cnn] [--no-torch] [--no-ort]
                                         [--no-overhead] [--json FILE]
"""

from cnncore.apps.bench import bench_inference, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None, help="default: every model")
    parser.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    parser.add_argument(
        "--no-overhead", action="store_true", help="skip the per-call overhead table"
    )
    args = parser.parse_args()
    threads = (args.threads,) if args.threads else (1, 2)
    args.threads = None  # the suite sets each thread count itself
    run_script(
        bench_inference,
        args,
        threads=threads,
        models=args.models,
        use_ort=not args.no_ort,
        overhead=not args.no_overhead,
    )
