"""Benchmark SGD training, cnncore vs PyTorch on the same recipe (seconds per epoch).

Momentum 0.9, float32, same thread count; batch 64 and lr 0.05 for lenet and cnn, batch 128
and lr 0.1 for resnet20 (the graph model at 28x28; its row adds the graph executor's own
share of a step); full Fashion-MNIST when it is installed, the shipped sample otherwise (or
with --quick); best of --epochs epochs. See cnncore.apps.bench.train.bench_train.

--steps N (fixed-steps mode) times N SGD steps of each library instead of whole epochs,
interleaved in blocks of --block steps (at least 7 timed blocks, after two warm-up steps):
medians of seconds per step, scaled to an epoch. Full epochs stay the default.

--profile N profiles N cnncore steps of each model instead (no comparison): the mean time
per step of each layer's forward and backward, the loss, zero_grad, the optimizer step,
the input batch, the metrics and the rest, with their shares of the step.

    python benchmarks/bench_train.py [--quick] [--epochs 2] [--models lenet cnn resnet20]
                                     [--repeat 7] [--threads N] [--no-torch] [--json FILE]
                                     [--steps N [--block 10]] [--profile N]
"""

from cnncore.apps.bench import bench_train, run_script, script_parser

if __name__ == "__main__":
    parser = script_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (best is kept)")
    parser.add_argument(
        "--models", nargs="+", choices=["lenet", "cnn", "resnet20"], default=["lenet", "cnn"]
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fixed-steps mode: time N steps per library (not whole epochs)",
    )
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument(
        "--profile",
        type=int,
        default=None,
        metavar="N",
        help="profile N cnncore steps per model (time per layer and part; no comparison)",
    )
    args = parser.parse_args()
    run_script(
        bench_train,
        args,
        epochs=args.epochs,
        models=args.models,
        steps=args.steps,
        block=args.block,
        profile=args.profile,
    )
