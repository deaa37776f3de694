"""The ``cnncore`` command: ``demo``, ``train``, ``bench``, ``info``, ``predict`` and
``export``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from cnncore.optim import OPTIMIZER_NAMES, default_lr, make_optimizer

__all__ = [
    "main",
    "build_parser",
    "cmd_demo",
    "cmd_train",
    "cmd_bench",
    "cmd_info",
    "cmd_predict",
    "cmd_export",
    "DEFAULT_LR",
]

#: The command's default learning rate per optimizer (from cnncore.optim's one table).
DEFAULT_LR = {name: default_lr(name, "cli") for name in OPTIMIZER_NAMES}


def _load_data(name: str) -> Any:
    from cnncore import datasets

    key = name.lower()
    if key == "sample":
        return datasets.load_sample()
    if key in ("fashion-mnist", "fashion_mnist", "fashion"):
        return datasets.load_fashion_mnist()
    if key == "mnist":
        return datasets.load_mnist()
    if os.path.isdir(name):
        return datasets.load_mnist(path=name)
    raise ValueError(
        "--data must be 'sample', 'fashion-mnist', 'mnist' or a directory holding the four "
        f"MNIST-format IDX files. Received: --data={name!r}"
    )


def _make_scheduler(name: str, opt: Any, epochs: int) -> Any:
    from cnncore import optim

    if name == "none":
        return None
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=max(1, epochs))
    return optim.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)


def _report_plot(model: Any, history: Any, image: Any, path: str, title: str) -> None:
    from . import viz

    try:
        viz.training_report(model, history, image, path, title=title)
    except ImportError as exc:
        print(f"(no plot: {exc})")
        return
    print(f"wrote {path}")


def _train(args: argparse.Namespace, *, model_name: str, data: str, title: str) -> int:
    import numpy as np

    from cnncore import get_num_threads, models, nn
    from cnncore.augment import FlipShift

    (x_train, y_train), (x_test, y_test) = _load_data(data)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    model = (
        models.build(model_name, rng=args.seed, dropout=args.dropout)
        if model_name == "cnn"
        else models.build(model_name, rng=args.seed)
    )
    # --weight-decay 0 (the default) keeps each optimizer's own (AdamW: 1e-2)
    opt = make_optimizer(
        args.optimizer,
        model.parameters(),
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay or None,
        defaults="cli",
    )
    sched = _make_scheduler(args.schedule, opt, args.epochs)
    print(
        f"{title}: {len(x_train)} training / {len(x_test)} test images, "
        f"{get_num_threads()} thread(s)"
    )
    model.summary((1, *x_train.shape[1:]))
    t0 = time.perf_counter()
    augment = FlipShift(2) if args.augment else None
    loss = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    history = model.fit(
        x_train,
        y_train,
        optimizer=opt,
        loss=loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test, y_test),
        verbose=not args.quiet,
        seed=args.seed,
        scheduler=sched,
        augment=augment,
    )
    elapsed = time.perf_counter() - t0
    result = model.evaluate(x_test, y_test)
    n_epochs = len(history.epoch)
    print(
        f"test accuracy {100 * result['accuracy']:.2f} %  (test loss {result['loss']:.4f}) "
        f"after {n_epochs} epoch(s) in {elapsed:.1f} s"
    )
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:
        _report_plot(
            model,
            history,
            np.asarray(x_test[0]),
            args.plot,
            f"{title}: test accuracy {100 * result['accuracy']:.2f} %",
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train LeNet-5 on the Fashion-MNIST sample shipped in the package."""
    args.optimizer, args.lr, args.momentum, args.weight_decay = "sgd", 0.05, 0.9, 0.0
    args.schedule, args.save, args.limit, args.dropout = "cosine", None, 0, 0.0
    args.augment, args.label_smoothing = False, 0.0
    if args.plot is None and not args.no_plot:
        args.plot = "cnncore-demo.png"
    return _train(
        args,
        model_name="lenet",
        data="sample",
        title="cnncore demo: LeNet-5 on a Fashion-MNIST sample",
    )


def cmd_train(args: argparse.Namespace) -> int:
    return _train(args, model_name=args.model, data=args.data, title=f"{args.model} on {args.data}")


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    suites = bench.SUITES if args.suite == "all" else {args.suite: bench.SUITES[args.suite]}
    for name, fn in suites.items():
        print(f"\n### {name}")
        fn(quick=args.quick, use_torch=not args.no_torch, repeat=args.repeat)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from cnncore import show_config

    show_config()
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Print the top-k classes of each image (PNG/JPEG/.npy) under a saved model."""
    from . import predict as pr

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1. Received: --top-k={args.top_k}")
    model = pr.load_model(args.model)
    channels = pr.input_channels(model)
    recorded = getattr(model, "onnx_input_shape", None)
    if recorded is not None and len(recorded) == 4:
        channels = int(recorded[1])
    names = None
    for path in args.images:
        images = pr.to_chw(pr.read_image(path), path)
        hw = pr.model_input_hw(model, tuple(images[0].shape[1:]))
        outputs = model.predict(pr.fit_images(images, path, channels, hw, invert=args.invert))
        results = pr.top_k(outputs, args.top_k, model)
        if names is None and args.labels is not None:
            names = pr.label_names(args.labels, outputs.shape[1])
        for i, row in enumerate(results):
            label = path if len(results) == 1 else f"{path}[{i}]"
            shown = ", ".join(f"{names[c] if names else c} ({100 * p:.1f}%)" for c, p in row)
            print(f"{label}: {shown}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a saved cnncore model (.npz/.safetensors) to ONNX."""
    from cnncore import load
    from cnncore import onnx as cn_onnx

    from . import predict as pr

    model = load(args.model)
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise ValueError(
                f"--input-shape must be comma-separated ints such as 1,1,28,28. Received: "
                f"--input-shape={args.input_shape!r}"
            ) from None
    else:
        shape = (1, pr.input_channels(model), *pr.model_input_hw(model))
    cn_onnx.export(model, args.output, shape, dynamic_batch=not args.static_batch, opset=args.opset)
    print(f"wrote {args.output} (input {shape}, opset {args.opset})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnncore", description="cnncore: fast, exact CNN kernels and training on the CPU."
    )
    threads_help = "threads for the kernels (default: $CNNCORE_NUM_THREADS or all usable cores)"
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, help: str) -> argparse.ArgumentParser:
        # --threads is accepted after the command too; SUPPRESS keeps the value given before it
        p = sub.add_parser(name, help=help)
        p.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=threads_help)
        return p

    def training_options(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--plot",
            default=None,
            metavar="FILE",
            help="write a PNG with curves, filters and feature maps",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_command("demo", help="train LeNet-5 on the shipped Fashion-MNIST sample")
    training_options(p, epochs=15)
    p.add_argument("--no-plot", action="store_true", help="do not write cnncore-demo.png")
    p.set_defaults(func=cmd_demo)

    p = add_command("train", help="train a model on a dataset")
    p.add_argument("--model", choices=["lenet", "cnn"], default="lenet")
    p.add_argument(
        "--data",
        default="sample",
        help="sample | fashion-mnist | mnist | DIR with MNIST-format IDX files",
    )
    training_options(p, epochs=10)
    p.add_argument("--optimizer", choices=list(OPTIMIZER_NAMES), default="sgd")
    lr_defaults = ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default: {lr_defaults})")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 penalty (decoupled for adamw, where 0 means its default 0.01)",
    )
    p.add_argument(
        "--schedule",
        choices=["none", "cosine", "step"],
        default="cosine",
        help="learning-rate schedule over the epochs",
    )
    p.add_argument(
        "--dropout", type=float, default=0.0, help="dropout before the last layer (cnn only)"
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    p.add_argument(
        "--augment",
        action="store_true",
        help="random horizontal flips and shifts by up to 2 pixels",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--save", default=None, metavar="FILE", help="save the trained model (.npz)")
    p.set_defaults(func=cmd_train)

    p = add_command("bench", help="benchmark kernels and training (vs PyTorch if installed)")
    p.add_argument(
        "--suite",
        choices=["all", "conv", "pool", "activation", "train", "inference"],
        default="all",
    )
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--repeat", type=int, default=7)
    p.set_defaults(func=cmd_bench)

    p = add_command("info", help="version, OpenMP, threads, SIMD level and BLAS")
    p.set_defaults(func=cmd_info)

    p = add_command("predict", help="classify images (PNG/JPEG/.npy) with a saved model")
    p.add_argument("model", metavar="MODEL", help="a .npz, .safetensors or .onnx model")
    p.add_argument("images", metavar="IMAGES", nargs="+", help="PNG, JPEG or .npy files")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    p.add_argument(
        "--labels",
        default=None,
        help="class names: fashion-mnist, mnist or a comma-separated list (default: indices)",
    )
    p.add_argument(
        "--invert", action="store_true", help="use 1 - pixel (dark strokes on a light page)"
    )
    p.set_defaults(func=cmd_predict)

    p = add_command("export", help="export a saved model (.npz/.safetensors) to ONNX")
    p.add_argument("model", metavar="MODEL", help="a .npz or .safetensors model")
    p.add_argument("output", metavar="OUT.onnx")
    p.add_argument(
        "--input-shape",
        default=None,
        help="N,C,H,W (default: 1, the first convolution's channels, the size the model takes)",
    )
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch size")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            from cnncore import set_num_threads

            set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"cnncore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
