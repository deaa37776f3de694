"""The inference suite: batch-1 and batch-8 latency of ``model.predict`` (eval mode, plans,
BatchNorm fused) against PyTorch (``torch.inference_mode()``) and onnxruntime running the
model cnncore exports, at each thread count, in the same run.

Models: :data:`INFERENCE_MODELS` (name -> builder: LeNet-5, the README's CNN, ResNet-20,
a graph model) and their input shapes in :data:`INPUT_SHAPES`.  All three libraries run the
same graph, the model after :func:`cnncore.nn.fuse` (BatchNorm folded): torch its twin
(:func:`cnncore.apps.bench.twins.torch_twin`, same weights; a graph model's twin runs its
layers' twins in the model's step order), onnxruntime the graph ``cnncore.onnx.export``
writes (when the onnx packages are installed).  Outputs are checked to agree before
anything is timed.

The per-call overhead (:func:`layer_overhead`): for each layer of LeNet-5 at batch size 1,
the time of a layer call (eval and train mode forward) against its compiled kernel called
directly on preallocated buffers -- the difference is what a call costs in Python (argument
checks, geometry, algorithm choice, output allocation, the BLAS thread cap) -- and the cost
of one switch of the BLAS thread cap, cnncore's against threadpoolctl's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

import cnncore

from .timing import time_round_robin, try_import_torch

__all__ = ["bench_inference", "INFERENCE_MODELS", "INPUT_SHAPES"]


def _builders() -> dict[str, Callable[[], Any]]:
    from cnncore import models

    table: dict[str, Callable[[], Any]] = {
        "lenet5": lambda: models.lenet5(rng=0),
        "cnn": lambda: models.simple_cnn(rng=0),  # the README's CNN
        "resnet20": lambda: models.resnet20(rng=0),  # a graph model, CIFAR-sized input
    }
    return table


def INFERENCE_MODELS() -> dict[str, Callable[[], Any]]:  # noqa: N802 (a table, built lazily)
    """Name -> builder of the benchmarked models."""
    return _builders()


#: Per-sample input shapes (default ``(1, 28, 28)``).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"resnet20": (3, 32, 32)}


def _ort_session(model: Any, shape: tuple[int, ...], threads: int) -> Any:
    try:
        import onnxruntime as ort

        from cnncore import onnx as cn_onnx

        proto = cn_onnx.to_model_proto(model, (1, *shape))
    except (ImportError, ValueError):
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _torch_twin(model: Any) -> Any:
    from .twins import torch_twin

    try:
        return torch_twin(model).eval()
    except ValueError:  # no twin for this architecture
        return None


def bench_inference(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out: Callable[[str], Any] = print,
    threads: Sequence[int] = (1, 2),
    batches: Sequence[int] = (1, 8),
    models: Sequence[str] | None = None,
    use_ort: bool = True,
    overhead: bool = True,
) -> dict:
    """Latency (microseconds per call, median of >= ``repeat`` samples, each the mean of
    enough calls to last 20 ms) of ``model.predict(x)`` (cnncore, the model after
    :func:`cnncore.nn.fuse`; with the built-in algorithm choice, and "tuned": after
    ``cnncore.tune(model, x.shape, passes=("forward",))``, whose choices stay in the process),
    the torch twin under ``torch.inference_mode()`` and onnxruntime's session, timed
    round-robin; ratios cnncore/torch and cnncore/onnxruntime (< 1: cnncore is faster).

    At one thread every library runs on the calling thread, and the row is timed a second
    time by that thread's CPU time (``cpu_us``: name -> microseconds), which a loaded machine's
    preemption does not inflate.

    Returns ``{"rows": [{"model", "threads", "batch", "cnncore_us", "tuned_us"[,
    "torch_us", "vs_torch", "tuned_vs_torch"][, "ort_us", "vs_ort", "tuned_vs_ort"][,
    "cpu_us"]}], "overhead": ...}`` (the last with ``overhead``: see :func:`layer_overhead`).
    """
    torch = try_import_torch() if use_torch else None
    builders = _builders()
    names = list(models) if models is not None else list(builders)
    if quick:
        threads, repeat = threads[:1], 7
    saved = cnncore.get_num_threads()
    out(
        f"inference latency (us per call; ratio = cnncore / peer, < 1: cnncore faster); "
        f"cnncore {cnncore.__version__}"
        + (f", torch {torch.__version__}" if torch is not None else "")
    )
    out(
        f"{'model':<10}{'thr':>4}{'batch':>6}{'cnncore':>10}{'tuned':>10}{'torch':>10}"
        f"{'ratio':>7}{'tuned':>7}{'onnxrt':>10}{'ratio':>7}{'tuned':>7}"
    )
    rows = []
    try:
        for t in threads:
            cnncore.set_num_threads(t)
            if torch is not None:
                torch.set_num_threads(t)
            for name in names:
                if name not in builders:
                    raise ValueError(
                        f"bench_inference(): unknown model. Expected one of {sorted(builders)}. "
                        f"Received: {name!r}"
                    )
                model = cnncore.nn.fuse(builders[name]().eval())
                shape = INPUT_SHAPES.get(name, (1, 28, 28))
                twin = _torch_twin(model) if torch is not None else None
                sess = _ort_session(model, shape, t) if use_ort else None
                for n in batches:
                    rows.append(_row(name, t, n, shape, model, twin, torch, sess, repeat, out))
        result: dict[str, Any] = {"rows": rows}
        if overhead:
            result["overhead"] = layer_overhead(threads[:1], repeat, out)
    finally:
        cnncore.set_num_threads(saved)
    return result


def _row(
    name: str,
    t: int,
    n: int,
    shape: tuple[int, ...],
    model: Any,
    twin: Any,
    torch: Any,
    sess: Any,
    repeat: int,
    out: Callable[[str], Any],
) -> dict:
    from cnncore.ops.conv_dispatch import clear_tuning, tuned_algorithms, use_tuned

    x = np.random.default_rng(n).random((n, *shape), dtype=np.float32)
    clear_tuning()  # (an earlier row's choices: the default column runs the thresholds)
    stale = bool(tuned_algorithms())  # (a $CNNCORE_TUNE_CACHE file's choices)

    def default() -> object:
        if stale:
            with use_tuned(False):  # the built-in thresholds
                return model.predict(x)
        return model.predict(x)

    expected = default()
    fns: dict[str, Callable[[], object]] = {"cnncore": default}
    if twin is not None:
        xt = torch.from_numpy(x)

        def run_torch() -> Any:
            with torch.inference_mode():
                return twin(xt)

        np.testing.assert_allclose(run_torch().numpy(), expected, rtol=1e-4, atol=1e-4)
        fns["torch"] = run_torch
    if sess is not None:
        feed = {sess.get_inputs()[0].name: x}
        np.testing.assert_allclose(sess.run(None, feed)[0], expected, rtol=1e-4, atol=1e-4)
        fns["onnxruntime"] = lambda: sess.run(None, feed)

    def timed(clock: Callable[[], float]) -> dict[str, float]:
        # the default choice and the peers round-robin, then the tuned choice (no use_tuned
        # block around the default calls: entering one costs a few microseconds at batch 1)
        clear_tuning()
        times = time_round_robin(fns, repeat, min_time=0.02, clock=clock)
        cnncore.tune(model, x.shape, passes=("forward",))
        np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-5)
        tuned = {"tuned": lambda: model.predict(x)}
        times.update(time_round_robin(tuned, repeat, min_time=0.02, clock=clock))
        return times

    times = timed(time.perf_counter)
    clear_tuning()
    row: dict[str, Any] = {
        "model": name,
        "threads": t,
        "batch": n,
        "cnncore_us": 1e6 * times["cnncore"],
        "tuned_us": 1e6 * times["tuned"],
    }
    line = f"{name:<10}{t:>4}{n:>6}{row['cnncore_us']:10.1f}{row['tuned_us']:10.1f}"
    for peer, key in (("torch", "torch"), ("onnxruntime", "ort")):
        if peer in times:
            row[f"{key}_us"] = 1e6 * times[peer]
            row[f"vs_{key}"] = times["cnncore"] / times[peer]
            row[f"tuned_vs_{key}"] = times["tuned"] / times[peer]
            line += f"{row[f'{key}_us']:10.1f}{row[f'vs_{key}']:7.2f}{row[f'tuned_vs_{key}']:7.2f}"
        else:
            line += f"{'-':>10}{'-':>7}{'-':>7}"
    out(line)
    if t == 1:
        # one thread: every library runs on the calling thread, so its CPU time measures the
        # work without the preemption that dominates wall time on a loaded machine
        cpu = timed(time.thread_time)
        row["cpu_us"] = {k: 1e6 * v for k, v in cpu.items()}
        out(
            f"{'  (cpu)':<20}{row['cpu_us']['cnncore']:10.1f}{row['cpu_us']['tuned']:10.1f}"
            + "".join(
                f"{row['cpu_us'][peer]:10.1f}{cpu['cnncore'] / cpu[peer]:7.2f}"
                f"{cpu['tuned'] / cpu[peer]:7.2f}"
                if peer in cpu
                else f"{'-':>10}{'-':>7}{'-':>7}"
                for peer in ("torch", "onnxruntime")
            )
        )
    return row


# --------------------------------------------------------------------------------------------
# Per-call overhead
# --------------------------------------------------------------------------------------------


def _kernel_call(layer: Any, x: np.ndarray) -> Callable[[], object]:
    """The compiled kernel of ``layer``'s eval-mode forward on ``x``, called directly on
    preallocated buffers (arguments resolved beforehand)."""
    from cnncore._config import get_num_threads
    from cnncore.ops import activation as A
    from cnncore.ops import conv as C
    from cnncore.ops import linear as L
    from cnncore.ops import pool as P
    from cnncore.ops.conv_dispatch import select_conv_algorithm

    nt = get_num_threads()
    name = type(layer).__name__
    if name == "Conv2d":
        w, b = layer.weight.data, layer.bias.data
        geo, g = C._conv_setup(
            "conv2d", x.shape, w.shape, layer.stride, layer.padding, layer.dilation, layer.groups
        )
        algo = select_conv_algorithm(w.shape, g, geo, "forward", x.shape, x.dtype)
        y = np.empty((x.shape[0], w.shape[0], *geo.out), x.dtype)
        args = C._conv_kernel_args(geo, g)
        kern = C._conv.conv2d_forward
        return lambda: kern(x, w, b, y, *args, algo, nt)
    if name == "Linear":
        w, b = layer.weight.data, layer.bias.data
        y = np.empty((x.shape[0], w.shape[0]), x.dtype)
        kern = L._linear.linear_forward
        return lambda: kern(x, w, b, y, nt)
    if name == "MaxPool2d":
        run, out_shape = P.prepare_max_pool2d(
            x.shape, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.ceil_mode,
        )  # fmt: skip
        y = np.empty(out_shape, x.dtype)
        return lambda: run(x, y)
    if name == "ReLU":
        flat, y = x.reshape(-1), np.empty(x.size, x.dtype)
        op = A.Activation.OP_RELU
        kern = A._activation.unary
        return lambda: kern(op, flat, y, 0.0, nt, 0.0)
    raise ValueError(f"no kernel call for {name}")


class _NoKernels:
    """Stands in for a kernel module: every kernel is a no-op (see :func:`_python_only`)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@contextmanager
def _python_only() -> Iterator[None]:
    """Inside the block the layers' kernels do nothing, so a layer call costs only its
    Python work (argument checks, geometry, algorithm choice, allocation, BLAS cap).  For
    single layer calls only: an inference plan recorded inside would keep the no-ops, and
    so would a layer's prepared call (``layer._call``), which the caller drops before and
    after."""
    from cnncore.ops import activation, conv, linear, pool

    mods = [(conv, "_conv"), (linear, "_linear"), (pool, "_pool"), (activation, "_activation")]
    saved = [getattr(m, a) for m, a in mods]
    try:
        for m, a in mods:
            setattr(m, a, _NoKernels())
        yield
    finally:
        for (m, a), v in zip(mods, saved, strict=True):
            setattr(m, a, v)


def _blas_switch_times(repeat: int) -> dict[str, float]:
    """Seconds per enter + exit of cnncore's BLAS thread cap and of threadpoolctl's
    ``threadpool_limits(1, "blas")`` (the per-call path cnncore used before)."""
    from cnncore._config import blas_single_thread

    def ours() -> None:
        with blas_single_thread():
            pass

    fns: dict[str, Callable[[], object]] = {"cnncore": ours}
    try:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()

        def theirs() -> None:
            with controller.limit(limits=1, user_api="blas"):
                pass

        fns["threadpoolctl"] = theirs
    except ImportError:
        pass
    return time_round_robin(fns, repeat, min_time=0.02)


def layer_overhead(
    threads: Sequence[int] = (1,), repeat: int = 7, out: Callable[[str], Any] = print
) -> dict:
    """Per-call cost of LeNet-5's layers at batch size 1: the layer call (eval and train
    forward) against its kernel on preallocated buffers (:func:`_kernel_call`), medians in
    microseconds of the calling thread's CPU time (``time.thread_time``: the overhead is
    single-threaded Python, and wall time at this scale mostly measures preemption on a
    shared machine), at each thread count; and one switch of the BLAS thread cap (wall
    time).

    The overhead ``layer - kernel`` also holds the kernel's own slow-down when Python work
    ran between two calls (caches, branch predictors); ``python_us`` is the layer call with
    every kernel replaced by a no-op (:func:`_python_only`): the Python work alone.

    Returns ``{"rows": [{"layer", "input", "threads", "kernel_us", "eval_us", "train_us",
    "eval_overhead_us", "train_overhead_us", "python_us"}], "blas_switch_us": {...}}``.
    """
    from cnncore import models

    out("")
    out(
        "per-call overhead at batch 1 (us of CPU time; overhead = layer call - kernel on "
        "preallocated buffers)"
    )
    out(
        f"{'layer':<12}{'input':<18}{'thr':>4}{'kernel':>9}{'eval':>9}{'ovh':>7}"
        f"{'train':>9}{'ovh':>7}{'python':>8}"
    )
    rows = []
    for t in threads:
        cnncore.set_num_threads(t)
        model = models.lenet5(rng=0)
        x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
        seen: set[tuple] = set()
        h = x
        for layer in model.layers:
            name = type(layer).__name__
            key = (name, h.shape)
            if name in ("Conv2d", "Linear", "MaxPool2d", "ReLU") and key not in seen:
                seen.add(key)
                xin = h
                kernel = _kernel_call(layer, xin)

                def call(layer: Any = layer, xin: np.ndarray = xin) -> object:
                    return layer(xin)

                def call_train(layer: Any = layer, xin: np.ndarray = xin) -> object:
                    layer.training = True
                    try:
                        return layer(xin)
                    finally:
                        layer.training = False

                layer.eval()
                times = time_round_robin(
                    {"kernel": kernel, "eval": call, "train": call_train},
                    repeat,
                    min_time=0.02,
                    library={"kernel": "cnncore", "eval": "cnncore", "train": "cnncore"},
                    clock=time.thread_time,
                )
                layer.__dict__["_call"] = None  # (its prepared call would keep real kernels)
                with _python_only():
                    call()  # (the first call prepares, with the no-op kernels)
                    py_us = (
                        1e6
                        * time_round_robin(
                            {"python": call}, repeat, min_time=0.02, clock=time.thread_time
                        )["python"]
                    )
                layer.__dict__["_call"] = None  # (drop the one holding no-op kernels)
                k_us, e_us, t_us = (1e6 * times[n] for n in ("kernel", "eval", "train"))
                row = {
                    "layer": name,
                    "input": tuple(xin.shape),
                    "threads": t,
                    "kernel_us": k_us,
                    "eval_us": e_us,
                    "train_us": t_us,
                    "eval_overhead_us": e_us - k_us,
                    "train_overhead_us": t_us - k_us,
                    "python_us": py_us,
                }
                rows.append(row)
                out(
                    f"{name:<12}{str(row['input']):<18}{t:>4}{k_us:9.2f}{e_us:9.2f}"
                    f"{e_us - k_us:7.2f}{t_us:9.2f}{t_us - k_us:7.2f}{py_us:8.2f}"
                )
            h = layer(h)
    switch = {k: 1e6 * v for k, v in _blas_switch_times(repeat).items()}
    out(
        "BLAS thread cap, one enter + exit: "
        + ", ".join(f"{k} {v:.2f} us" for k, v in switch.items())
    )
    return {"rows": rows, "blas_switch_us": switch}
