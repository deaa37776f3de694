"""Benchmark SGD training, cnncore vs PyTorch on the same recipe (seconds per epoch).

Momentum 0.9, float32, same thread count; batch 64 and lr 0.05 for lenet and cnn, batch 128
and lr 0.1 for resnet20 (the graph model at 28x28; its row adds the graph executor's own
share of a step); full Fashion-MNIST when it is installed, the shipped sample otherwise (or
with --quick); best of --epochs epochs. See cnncore.apps.bench.train.bench_train.

    python benchmarks/bench_train.py [--quick] [--epochs 2] [--models lenet cnn resnet20]
                                     [--repeat 7] [--threads N] [--no-torch] [--json FILE]
"""

from cnncore.apps.bench import bench_train, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (best is kept)")
    parser.add_argument(
        "--models", nargs="+", choices=["lenet", "cnn", "resnet20"], default=["lenet", "cnn"]
    )
    args = parser.parse_args()
    run_script(bench_train, args, epochs=args.epochs, models=args.models)
