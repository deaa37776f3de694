"""Benchmark SGD training, cnncore vs PyTorch on the same recipe (seconds per epoch).

Batch 64, lr 0.05, momentum 0.9, float32, same thread count; full Fashion-MNIST when it is
installed, the shipped sample otherwise (or with --quick); best of --epochs epochs.
See cnncore.apps.bench.train.bench_train.

    python benchmarks/bench_train.py [--quick] [--epochs 2] [--models lenet cnn]
                                     [--threads N] [--no-torch] [--json FILE]
"""

from cnncore.apps.bench import bench_train, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__, repeat=False)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (best is kept)")
    parser.add_argument("--models", nargs="+", choices=["lenet", "cnn"], default=["lenet", "cnn"])
    args = parser.parse_args()
    run_script(bench_train, args, epochs=args.epochs, models=args.models)
