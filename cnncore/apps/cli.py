"""The ``cnncore`` command: ``demo``, ``train``, ``bench``, ``info``, ``predict`` and
``export``.

Every flag is checked before any work starts (data loading, model building, training): a
bad value exits with status 2 and a message naming the flag, e.g.
``cnncore train: error: argument --epochs: must be an integer >= 1. Received: 0``.
Output files (``--save``, ``--plot``) are checked for a writable folder up front too, so a
long run never fails at its end.  Ctrl-C stops training between two steps; the command says
so, still saves and plots what it has, and exits with status 130.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
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

#: ``--data`` names of the built-in datasets (anything else must be a directory).
DATASET_NAMES = ("sample", "fashion-mnist", "mnist")
_DATASET_ALIASES = {"fashion_mnist": "fashion-mnist", "fashion": "fashion-mnist"}

#: Side of the square images the built-in models take; image folders are resized to it.
IMAGE_SIZE = 28

#: Exit status of a run stopped with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------
# Flag types: argparse turns an ArgumentTypeError into "argument --flag: message", exit 2
# --------------------------------------------------------------------------------------------


def _int_flag(low: int, high: int | None = None) -> Callable[[str], int]:
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value" messages
    return parse


def _float_flag(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    lo = f"> {low:g}" if low_open else f">= {low:g}"
    if high is None:
        what = f"a number {lo}"
    else:
        what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text!r}") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {what}. Received: {text}")
        return value

    parse.__name__ = "float"
    return parse


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, or False for
    on/off switches) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# --------------------------------------------------------------------------------------------
# Checks done after parsing, before any work
# --------------------------------------------------------------------------------------------


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_output(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """``path`` can be written: its folder exists and is writable, it is not a folder."""
    if os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(
            f"argument {flag}: the folder {folder!r} does not exist (create it first). "
            f"Received: {flag} {path}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        parser.error(f"argument {flag}: cannot write into the folder {folder!r}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        parser.error(f"argument {flag}: {path!r} exists and is not writable")


def _have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _data_kind(name: str) -> str:
    """'sample' | 'fashion-mnist' | 'mnist' | 'idx' (a folder of IDX files) | 'images' (a
    folder of class sub-folders) | '' (neither)."""
    key = _DATASET_ALIASES.get(name.lower(), name.lower())
    if key in DATASET_NAMES:
        return key
    if not os.path.isdir(name):
        return ""
    from cnncore import datasets

    files, complete = datasets._find_files(datasets.Path(name))
    if complete:
        return "idx"
    if datasets.is_image_folder(name) or any(
        datasets.is_image_folder(os.path.join(name, split)) for split in ("train", "test", "val")
    ):
        return "images"
    return ""


def _check_data(parser: argparse.ArgumentParser, name: str) -> str:
    kind = _data_kind(name)
    if kind == "images":
        import importlib.util

        from cnncore import datasets

        if importlib.util.find_spec("PIL") is None:
            parser.error(
                f"argument --data: {name!r} is a folder of images; reading them needs "
                f"Pillow: pip install 'cnncore[images]'"
            )
        splits = [os.path.join(name, s) for s in ("train", "test", "val")]
        roots = [d for d in splits if datasets.is_image_folder(d)] or [name]
        for root in roots:
            path = datasets.Path(root)
            empty = [c for c in datasets._class_dirs(path) if not datasets._has_image(path / c)]
            if empty:
                more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
                parser.error(
                    f"argument --data: {root!r} looks like a folder of images (one sub-folder "
                    f"per class), but its sub-folder(s) {', '.join(empty[:5])}{more} hold no "
                    f"image file ({', '.join(datasets.IMG_EXTENSIONS)})"
                )
    if kind:
        return kind
    if os.path.isdir(name):
        parser.error(
            f"argument --data: the folder {name!r} holds neither the four MNIST-format IDX "
            f"files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte; each may be .gz) nor one sub-folder of images (PNG, "
            f"JPEG, ...) per class"
        )
    parser.error(
        f"argument --data: must be {', '.join(DATASET_NAMES)} or an existing folder (of IDX "
        f"files, or of one sub-folder of images per class). Received: {name!r}"
    )
    return ""  # not reached: parser.error exits


def _check_args(args: argparse.Namespace) -> None:
    """Every check that involves more than one flag, the file system or the machine."""
    parser: argparse.ArgumentParser = args.parser
    threads = getattr(args, "threads", None)
    cores = _usable_cores()
    if threads is not None and threads > cores:
        print(
            f"cnncore: warning: --threads {threads} is more than the {cores} core(s) this "
            f"process may use; the kernels will oversubscribe them (same results, slower)",
            file=sys.stderr,
        )
    if args.command in ("demo", "train"):
        if getattr(args, "save", None):
            _check_output(parser, "--save", args.save)
        if args.plot:
            if not _have_matplotlib():
                parser.error("argument --plot: needs matplotlib: pip install 'cnncore[plot]'")
            _check_output(parser, "--plot", args.plot)
    if args.command == "train":
        args.data_kind = _check_data(parser, args.data)
        if args.dropout and args.model != "cnn":
            parser.error(
                f"argument --dropout: applies to --model cnn only ({args.model} has no "
                f"dropout layer). Received: --dropout {args.dropout:g} --model {args.model}"
            )
        if args.momentum is not None and args.optimizer != "sgd":
            parser.error(
                f"argument --momentum: applies to --optimizer sgd only. Received: --momentum "
                f"{args.momentum:g} --optimizer {args.optimizer}"
            )
        if args.resume and not os.path.isfile(args.resume):
            parser.error(
                f"argument --resume: no such checkpoint file. Received: --resume {args.resume}"
            )
        if args.checkpoint_dir:  # an existing folder, or one its existing parent can hold
            folder = os.path.abspath(args.checkpoint_dir)
            if not os.path.isdir(folder):
                _check_output(parser, "--checkpoint-dir", folder)
            elif not os.access(folder, os.W_OK | os.X_OK):
                parser.error(f"argument --checkpoint-dir: cannot write into {folder!r}")
        if getattr(args, "sync_bn", False) and not args.distributed:
            parser.error("argument --sync-bn: applies to --distributed only")
        if args.distributed:
            from cnncore.distributed import mpi_available

            if not mpi_available():
                parser.error(
                    "argument --distributed: needs mpi4py and an MPI library: "
                    "pip install 'cnncore[mpi]', then run under mpirun -n K"
                )


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _split_holdout(x: Any, y: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """A stratified split: ``fraction`` of each class (at least one image of classes with two
    or more) goes to the test set, chosen with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        k = int(round(fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1) if len(idx) > 1 else 0
        test += list(rng.choice(idx, size=k, replace=False))
    mask = np.zeros(len(y), bool)
    mask[np.asarray(test, dtype=np.int64)] = True
    return (x[~mask], y[~mask]), (x[mask], y[mask])


def _load_images(path: str, seed: int) -> tuple[Any, Any, list[str], str]:
    """An image folder for training: ``DIR/train`` + ``DIR/test`` (or ``DIR/val``) when they
    exist, else ``DIR`` split 80/20 per class; images resized to the models' input size."""
    from cnncore import datasets

    def read(root: str, color: str) -> Any:
        return datasets.ImageFolder(root, size=IMAGE_SIZE, color=color)

    train_dir = os.path.join(path, "train")
    test_dir = next(
        (os.path.join(path, s) for s in ("test", "val") if os.path.isdir(os.path.join(path, s))),
        None,
    )
    if datasets.is_image_folder(train_dir) and test_dir and datasets.is_image_folder(test_dir):
        train = read(train_dir, "auto")
        test = read(test_dir, "rgb" if train.channels == 3 else "auto")
        if test.channels != train.channels:  # grayscale training, some colour test images
            train = read(train_dir, "rgb")
        if test.classes != train.classes:
            raise ValueError(
                f"--data: {train_dir!r} and {test_dir!r} must have the same class sub-folders. "
                f"Received: {train.classes} and {test.classes}"
            )
        x, y = train.load()
        xt, yt = test.load()
        how = f"{train_dir} / {test_dir}"
        return (x, y), (xt, yt), train.classes, how
    folder = read(path, "auto")
    x, y = folder.load()
    train, test = _split_holdout(x, y, 0.2, seed)
    return train, test, folder.classes, f"{path}, 20 % of each class held out for testing"


def _load_data(args: argparse.Namespace) -> tuple[Any, Any, int, int, str]:
    """``(train, test, channels, classes, description)`` for ``--data``."""
    from cnncore import datasets

    kind = getattr(args, "data_kind", None) or _data_kind(args.data)
    if kind == "sample":
        train, test = datasets.load_sample()
    elif kind == "fashion-mnist":
        train, test = _named_loader(datasets.load_fashion_mnist)
    elif kind == "mnist":
        train, test = _named_loader(datasets.load_mnist)
    elif kind == "idx":
        train, test = datasets.load_mnist(path=args.data)
    else:
        try:
            train, test, classes, how = _load_images(args.data, args.seed)
        except (ValueError, FileNotFoundError) as exc:
            raise _FlagError("--data", str(exc)) from None
        names = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        return train, test, train[0].shape[1], len(classes), f"{how}; classes {names}"
    return train, test, 1, 10, args.data


def _named_loader(loader: Callable[[], Any]) -> Any:
    try:
        return loader()
    except FileNotFoundError as exc:
        text = str(exc).replace("or pass path=DIR", "or pass --data DIR")
        raise _FlagError("--data", text) from None


class _FlagError(ValueError):
    """A flag's value turned out unusable once its data was looked at (exit 2)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")


def _make_scheduler(name: str, opt: Any, epochs: int) -> Any:
    from cnncore import optim

    if name == "none":
        return None
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=max(1, epochs))
    return optim.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)


def _resume_and_checkpoints(args: argparse.Namespace, model: Any, opt: Any, sched: Any) -> Any:
    """``--resume FILE`` (restore model, optimizer, schedule, epoch and seed) and
    ``--checkpoint-dir DIR`` (one checkpoint per epoch): (initial_epoch, seed, callbacks)."""
    from cnncore import callbacks, load_checkpoint

    initial_epoch, seed = 0, args.seed
    resume = getattr(args, "resume", None)
    if resume:
        ckpt = load_checkpoint(resume, model, opt, sched)
        initial_epoch = ckpt.epoch
        if ckpt.seed is not None:
            seed = ckpt.seed
        print(f"resuming from {resume} after epoch {initial_epoch} (seed {seed})")
    cbs = []
    directory = getattr(args, "checkpoint_dir", None)
    if directory:
        os.makedirs(directory, exist_ok=True)
        cbs.append(callbacks.ModelCheckpoint(os.path.join(directory, "epoch{epoch:04d}.npz")))
    return initial_epoch, seed, cbs


def _report_plot(model: Any, history: Any, image: Any, path: str, title: str) -> None:
    from . import viz

    try:
        viz.training_report(model, history, image, path, title=title)
    except ImportError as exc:
        print(f"(no plot: {exc})")
        return
    print(f"wrote {path}")


def _train(args: argparse.Namespace, *, model_name: str, title: str) -> int:
    import numpy as np

    from cnncore import get_num_threads, models, nn
    from cnncore.augment import FlipShift

    distributed = bool(getattr(args, "distributed", False))
    if distributed:  # every rank trains; only rank 0 prints and writes files
        from cnncore.distributed import world

        if world().rank != 0:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the rest of the process
            args.save = args.plot = args.checkpoint_dir = None

    (x_train, y_train), (x_test, y_test), channels, n_classes, source = _load_data(args)
    if args.limit is not None:
        if args.limit > len(x_train):
            print(
                f"note: --limit {args.limit} is more than the {len(x_train)} training images; "
                f"using all of them"
            )
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    kwargs: dict[str, Any] = dict(rng=args.seed, num_classes=n_classes, in_channels=channels)
    if model_name == "cnn":
        kwargs["dropout"] = args.dropout or 0.0
    if model_name.startswith(("resnet", "mobilenet")):  # at the data's size (28x28: no padding)
        kwargs["input_size"] = tuple(x_train.shape[2:])
    model = models.build(model_name, **kwargs)
    if getattr(args, "sync_bn", False):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # --weight-decay 0 (the default) keeps each optimizer's own (AdamW: 1e-2)
    opt = make_optimizer(
        args.optimizer,
        model.parameters(),
        lr=args.lr,
        momentum=0.9 if args.momentum is None else args.momentum,
        weight_decay=args.weight_decay or None,
        defaults="cli",
    )
    sched = _make_scheduler(args.schedule, opt, args.epochs)
    initial_epoch, seed, callbacks = _resume_and_checkpoints(args, model, opt, sched)
    print(
        f"{title}: {len(x_train)} training / {len(x_test)} test images ({source}), "
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
        seed=seed,
        scheduler=sched,
        augment=augment,
        callbacks=callbacks,
        initial_epoch=initial_epoch,
        distributed=distributed,
    )
    elapsed = time.perf_counter() - t0
    if history.interrupted:
        done = len(history.epoch)
        where = f"during epoch {history.epoch[-1]}" if done else "before the first step ended"
        print(
            f"cnncore {args.command}: interrupted (Ctrl-C) {where} of {args.epochs}, after "
            f"{elapsed:.1f} s; the model keeps the weights of its last finished step",
            file=sys.stderr,
        )
    result = model.evaluate(x_test, y_test, distributed=distributed)
    finished = len(history.epoch) - (1 if history.interrupted and history.epoch else 0)
    print(
        f"test accuracy {100 * result['accuracy']:.2f} %  (test loss {result['loss']:.4f}) "
        f"after {finished} finished epoch(s) in {elapsed:.1f} s"
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
    return EXIT_INTERRUPTED if history.interrupted else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train LeNet-5 on the Fashion-MNIST sample shipped in the package."""
    args.optimizer, args.lr, args.momentum, args.weight_decay = "sgd", 0.05, 0.9, 0.0
    args.schedule, args.save, args.limit, args.dropout = "cosine", None, None, 0.0
    args.augment, args.label_smoothing, args.data, args.data_kind = False, 0.0, "sample", "sample"
    if args.plot is None and not args.no_plot:
        if _have_matplotlib():
            args.plot = "cnncore-demo.png"
        else:
            print("(no plot: matplotlib is not installed; pip install 'cnncore[plot]')")
    return _train(args, model_name="lenet", title="cnncore demo: LeNet-5 on a Fashion-MNIST sample")


def cmd_train(args: argparse.Namespace) -> int:
    return _train(args, model_name=args.model, title=f"{args.model} on {args.data}")


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    use_torch = not args.no_torch
    if use_torch and bench.try_import_torch() is None:
        print(
            "PyTorch is not installed: timing cnncore alone. For cnncore/PyTorch ratios, "
            "pip install torch (the CPU build) and run this again."
        )
        use_torch = False
    chosen = args.suite if isinstance(args.suite, list) else [args.suite]
    suites = (
        bench.SUITES
        if "all" in chosen
        else {name: bench.SUITES[name] for name in dict.fromkeys(chosen)}
    )
    results = {}
    for name, fn in suites.items():
        print(f"\n### {name}")
        extra = {}
        if name == "train" and args.steps is not None:
            extra = {"steps": args.steps, "block": args.block}
        results[name] = fn(quick=args.quick, use_torch=use_torch, repeat=args.repeat, **extra)
    if args.markdown is not None:
        from .bench.report import machine_info, markdown_report

        text = markdown_report(results, machine_info(use_torch), quick=args.quick)
        if args.markdown == "-":
            print("\n" + text)
        else:
            with open(args.markdown, "w") as f:
                f.write(text)
            print(f"\nwrote {args.markdown}")
    return 0


def _under_mpirun() -> bool:
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


def cmd_info(args: argparse.Namespace) -> int:
    from cnncore import show_config

    if _under_mpirun():
        from cnncore import distributed

        if distributed.mpi_available():
            comm = distributed.world()
            if "CNNCORE_NUM_THREADS" not in os.environ:
                distributed.place_threads(comm)  # as a distributed fit would
            info = distributed.layout(comm)  # a collective: every rank takes part
            if comm.rank != 0:
                return 0
            show_config()
            print(distributed.format_layout(info))
            return 0
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
    from cnncore import load, nn
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
    elif isinstance(model, nn.Model):  # a graph model: its Input shapes
        shape = [(1, *node.shape[1:]) for node in model.inputs]
        shape = shape if len(shape) > 1 else shape[0]
    else:
        shape = (1, pr.input_channels(model), *pr.model_input_hw(model))
    cn_onnx.export(model, args.output, shape, dynamic_batch=not args.static_batch, opset=args.opset)
    print(f"wrote {args.output} (input {shape}, opset {args.opset})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnncore",
        description="cnncore: fast, exact CNN kernels and training on the CPU.",
        formatter_class=_HelpFormatter,
    )
    threads_type = _int_flag(1, 4096)
    threads_help = "threads for the kernels (default: $CNNCORE_NUM_THREADS or all usable cores)"
    parser.add_argument("--threads", type=threads_type, default=None, help=threads_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help: str) -> argparse.ArgumentParser:
        # --threads is accepted after the command too; SUPPRESS keeps the value given before it
        p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        p.add_argument("--threads", type=threads_type, default=argparse.SUPPRESS, help=threads_help)
        p.set_defaults(parser=p)
        return p

    def training_options(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--epochs", type=_int_flag(1), default=epochs, help="passes over the data")
        p.add_argument("--batch-size", type=_int_flag(1), default=64, help="images per step")
        p.add_argument(
            "--seed", type=_int_flag(0), default=0, help="seeds weights, shuffling, dropout"
        )
        p.add_argument(
            "--plot",
            default=None,
            metavar="FILE",
            help="write a PNG with the training curves, filters and feature maps",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_command("demo", help="train LeNet-5 on the shipped Fashion-MNIST sample")
    training_options(p, epochs=15)
    p.add_argument("--no-plot", action="store_true", help="do not write cnncore-demo.png")
    p.set_defaults(func=cmd_demo)

    p = add_command("train", help="train a model on a dataset")
    p.add_argument(
        "--model",
        choices=["lenet", "cnn", "resnet20", "resnet32", "resnet44", "resnet56", "mobilenet_tiny"],
        default="lenet",
        help="the network",
    )
    p.add_argument(
        "--data",
        default="sample",
        metavar="NAME|DIR",
        help="sample | fashion-mnist | mnist | a folder of the four MNIST-format IDX files | a "
        f"folder of one sub-folder of images per class (resized to {IMAGE_SIZE}x{IMAGE_SIZE}; "
        "DIR/train and DIR/test are used when present, else 20 %% of each class is held out)",
    )
    training_options(p, epochs=10)
    p.add_argument("--optimizer", choices=list(OPTIMIZER_NAMES), default="sgd", help="update rule")
    lr_defaults = ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
    p.add_argument(
        "--lr",
        type=_float_flag(0.0, low_open=True),
        default=None,
        help=f"learning rate (default: {lr_defaults})",
    )
    p.add_argument(
        "--momentum",
        type=_float_flag(0.0, 1.0, high_open=True),
        default=None,
        help="momentum of --optimizer sgd (default: 0.9)",
    )
    p.add_argument(
        "--weight-decay",
        type=_float_flag(0.0),
        default=0.0,
        help="L2 penalty (default: 0; decoupled for adamw, where 0 means adamw's 0.01)",
    )
    p.add_argument(
        "--schedule",
        choices=["none", "cosine", "step"],
        default="cosine",
        help="learning-rate schedule over the epochs (step: x0.1 every third of them)",
    )
    p.add_argument(
        "--dropout",
        type=_float_flag(0.0, 1.0, high_open=True),
        default=None,
        help="dropout probability before the last layer, --model cnn only (default: none)",
    )
    p.add_argument(
        "--limit",
        type=_int_flag(1),
        default=None,
        metavar="N",
        help="use only the first N training images (default: all)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="random horizontal flips and shifts by up to 2 pixels",
    )
    p.add_argument(
        "--label-smoothing",
        type=_float_flag(0.0, 1.0),
        default=0.0,
        help="cross-entropy label smoothing",
    )
    p.add_argument("--save", default=None, metavar="FILE", help="save the trained model (.npz)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="FILE",
        help="continue from a checkpoint (same model and options; --epochs is the total)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training over MPI: run as mpirun -n K cnncore train --distributed "
        "(--batch-size is the global batch; the same weights for any K)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="with --distributed: BatchNorm normalizes with the statistics of the global batch "
        "(nn.SyncBatchNorm) instead of each part's",
    )
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="write DIR/epochNNNN.npz after every epoch (atomically; resumable)",
    )
    p.set_defaults(func=cmd_train)

    from .bench.timing import MIN_REPEAT

    p = add_command("bench", help="benchmark kernels and training (vs PyTorch if installed)")
    p.add_argument(
        "--suite",
        nargs="+",
        choices=[
            "all",
            "conv",
            "conv-resnet",
            "depthwise",
            "transposed",
            "pool",
            "activation",
            "norm",
            "resize",
            "train",
            "inference",
            "autotune",
        ],
        default=["all"],
        help="what to time (one or more suites; conv: conv2d, depthwise and transposed: "
        "MobileNet's depthwise and conv_transpose2d shapes)",
    )
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument(
        "--repeat",
        type=_int_flag(MIN_REPEAT),
        default=MIN_REPEAT,
        help="timed runs behind each median",
    )
    p.add_argument(
        "--steps",
        type=_int_flag(1),
        default=None,
        metavar="N",
        help="train suite: time N SGD steps of each library (interleaved in blocks of "
        "--block steps, medians per step) instead of whole epochs",
    )
    p.add_argument(
        "--block", type=_int_flag(1), default=10, metavar="N", help="steps per timed block"
    )
    p.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="also write the results as Markdown tables headed by this machine's facts (CPU, "
        "SIMD level, cores, BLAS, versions) to FILE, or print them without FILE",
    )
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
    """Run the command; returns the exit status (2 for a bad flag, 130 after Ctrl-C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "markdown", None) not in (None, "-"):
            _check_output(args.parser, "--markdown", args.markdown)
        _check_args(args)
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2)
        return int(exc.code or 0)
    try:
        if args.threads is not None:
            from cnncore import set_num_threads

            set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except _FlagError as exc:
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
