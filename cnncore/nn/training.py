"""Keras-style training loop: ``fit``, ``evaluate``, ``predict`` and the ``History`` they
return.

They work on any :class:`~cnncore.nn.Module` through the model protocol the Module
docstring lists (``forward``/``backward``/``parameters``/``train``/``eval``/``children``,
``dtype``, ``loss_fn``/``optimizer``); :class:`~cnncore.nn.Sequential` calls them from its
methods of the same names.  This module never imports a concrete model or layer.

Python only does bookkeeping here (batch slicing, progress, metrics); every array operation is
a kernel call or a vectorized NumPy expression.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import _alloc, optim
from .._config import blas_single_thread
from .._validation import as_ndarray, check_int
from . import loss as losses
from .module import Module, as_model_input


class History:
    """What :func:`fit` (and :meth:`Sequential.fit`) returns: per-epoch metrics, as in Keras.

    Attributes
    ----------
    history : dict of str -> list of float
        ``loss``, ``accuracy`` (classification), ``val_loss``, ``val_accuracy`` (with
        validation data), ``lr`` and ``seconds`` (wall time per epoch).
    epoch : list of int
    interrupted : bool
        True when Ctrl-C stopped training; the model keeps the weights of the last finished
        step.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": list(self.epoch),
            **{k: list(v) for k, v in self.history.items()},
            "interrupted": self.interrupted,
        }

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


# --------------------------------------------------------------------------------------------
# Argument resolution and checks (all done before the first step)
# --------------------------------------------------------------------------------------------


@contextmanager
def _batch_loop() -> Iterator[None]:
    """Context of a loop over batches: kernel outputs come from the caching allocator, and
    BLAS is capped at one thread once for the whole loop -- the kernels' own caps then only
    count a depth instead of toggling the BLAS libraries (~10 us per kernel call)."""
    with _alloc.caching(), blas_single_thread():
        yield


def resolve_optimizer(optimizer: Any, model: Module) -> optim.Optimizer:
    """``optimizer`` itself, or one over ``model.parameters()`` built from a name with
    :func:`cnncore.optim.make_optimizer`'s defaults."""
    if isinstance(optimizer, str):
        return optim.make_optimizer(optimizer, model.parameters(), func="fit")
    if not isinstance(optimizer, optim.Optimizer):
        raise TypeError(
            f"fit(): optimizer must be a cnncore.optim.Optimizer or a name. Received: "
            f"optimizer of type {type(optimizer).__name__}"
        )
    return optimizer


def _check_xy(
    model: Module, x: Any, y: Any, func: str, loss_fn: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    x = as_ndarray(x, "x", func)
    y = as_ndarray(y, "y", func)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise TypeError(f"{func}(): x must be float or uint8 images. Received: x.dtype={x.dtype}")
    if x.ndim < 2:
        raise ValueError(
            f"{func}(): x must have a batch dimension. Received: x with shape {x.shape}"
        )
    if y.ndim < 1 or len(x) != len(y):
        raise ValueError(
            f"{func}(): x and y must have the same number of samples. Received: x with shape "
            f"{x.shape}, y with shape {y.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"{func}(): x is empty. Received: x with shape {x.shape}")
    # one eval-mode forward on two samples validates the input shape against every layer
    was_training = model.training
    model.eval()
    try:
        out = model(x[:2])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{func}(): x of shape {x.shape} does not fit the model: {exc}") from None
    finally:
        model.train(was_training)
    if loss_fn is not None:
        loss_fn.check_target(out, y, func)
    return x, y


def _reseed(model: Module, rng: np.random.Generator) -> None:
    """Call :meth:`Module.reseed` on every module of ``model`` (the model first; children in
    a fixed order), so that Dropout masks and the like follow ``fit``'s seed."""
    stack = [model]
    while stack:
        m = stack.pop()
        m.reseed(rng)
        stack.extend(m.children())


class _StopFlag:
    """Ctrl-C during ``fit`` sets a flag that is checked between steps, so a step is never
    cut in half (weights stay those of the last finished step)."""

    def __init__(self) -> None:
        self.stop = False
        self._old: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _progress(total: int, epoch: int, epochs: int, verbose: bool) -> Any:
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(
        total=total, desc=f"epoch {epoch}/{epochs}", unit="img", leave=True, dynamic_ncols=True
    )


# --------------------------------------------------------------------------------------------
# fit / evaluate / predict
# --------------------------------------------------------------------------------------------


def fit(
    model: Module,
    x: Any,
    y: Any,
    *,
    optimizer: Any,
    loss: Any,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: Any = None,
    verbose: bool = True,
    seed: int | None = None,
    scheduler: Any = None,
    augment: Any = None,
) -> History:
    """Train ``model`` on ``(x, y)``.

    Parameters
    ----------
    model : Module
        A :class:`~cnncore.nn.Sequential`, or any module that follows the model protocol
        (see :class:`~cnncore.nn.Module`).
    x : ndarray of shape (N, C, H, W) (or whatever the first layer takes)
        float32/float64, or uint8 images (scaled to [0, 1] batch by batch).
    y : ndarray of shape (N,) or (N, ...)
        Integer class labels for classification losses, or targets.
    optimizer : cnncore.optim.Optimizer or str
        An optimizer over ``model.parameters()``, or a name (``'sgd'``, ``'adam'``, ...)
        for one with default settings (:func:`cnncore.optim.make_optimizer`).
    loss : loss module (e.g. ``nn.CrossEntropyLoss()``) or str (``'cross_entropy'``, ...)
    epochs, batch_size : int
    shuffle : bool
        Reshuffle the samples every epoch.
    validation_data : (x_val, y_val), optional
        Evaluated after every epoch (``val_loss``, ``val_accuracy``).
    verbose : bool
        Show a tqdm progress bar with loss, accuracy and images/s.
    seed : int, optional
        Seeds shuffling and Dropout masks: the same seed gives the same weights, whatever
        the thread count.
    scheduler : cnncore.optim.LRScheduler, optional
        Stepped once after every epoch.
    augment : callable, optional
        ``augment(x_batch, rng) -> x_batch`` applied to every training batch (e.g.
        :class:`cnncore.augment.FlipShift`), with the generator ``seed`` controls.

    Returns
    -------
    History

    Notes
    -----
    Everything is checked before the first step (shapes via a two-sample forward pass,
    labels against the output size, ``len(x) == len(y)``). Ctrl-C stops between steps and
    returns the history so far (``history.interrupted``).
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"fit(): model must be a cnncore.nn.Module. Received: {type(model).__name__}"
        )
    if augment is not None and not callable(augment):
        raise TypeError(
            f"fit(): augment must be callable. Received: augment of type {type(augment).__name__}"
        )
    epochs = check_int(epochs, "epochs", "fit", min_value=0)
    batch_size = check_int(batch_size, "batch_size", "fit", min_value=1)
    loss_fn = losses.resolve_loss(loss, "fit")
    opt = resolve_optimizer(optimizer, model)
    x, y = _check_xy(model, x, y, "fit", loss_fn)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError(
                "fit(): validation_data must be a pair (x_val, y_val). Received: "
                f"{type(validation_data).__name__}"
            )
        _check_xy(model, validation_data[0], validation_data[1], "fit", loss_fn)
    model.loss_fn, model.optimizer = loss_fn, opt

    rng = np.random.default_rng(seed)
    _reseed(model, rng)
    n = len(x)
    history = History()
    dtype = model.dtype
    with _StopFlag() as flag, _batch_loop():
        for epoch in range(1, epochs + 1):
            model.train()
            order = rng.permutation(n) if shuffle else np.arange(n)
            bar = _progress(n, epoch, epochs, verbose)
            t0 = time.perf_counter()
            seen = 0
            loss_sum = 0.0
            correct = 0
            counted = 0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                xb = as_model_input(x[idx], dtype)
                if augment is not None:
                    xb = as_model_input(augment(xb, rng), dtype)
                yb = y[idx]
                out = model(xb)
                batch_loss = loss_fn(out, yb)
                opt.zero_grad()
                model.backward(loss_fn.backward(), input_grad=False)
                opt.step()
                nb = len(idx)
                seen += nb
                loss_sum += float(batch_loss) * nb
                hits = losses.count_correct(loss_fn, out, yb)
                if hits is not None:
                    correct += hits
                    counted += nb
                if bar is not None:
                    bar.update(nb)
                    post = {"loss": f"{loss_sum / seen:.4f}"}
                    if counted:
                        post["acc"] = f"{correct / counted:.4f}"
                    post["img/s"] = f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}"
                    bar.set_postfix(post, refresh=False)
                if flag.stop:
                    break
            seconds = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            if seen == 0:
                break
            logs = {"loss": loss_sum / seen}
            if counted:
                logs["accuracy"] = correct / counted
            if validation_data is not None and not flag.stop:
                val = evaluate(model, validation_data[0], validation_data[1], loss=loss_fn)
                logs["val_loss"] = val["loss"]
                if not math.isnan(val["accuracy"]):
                    logs["val_accuracy"] = val["accuracy"]
            logs["lr"] = opt.lr
            logs["seconds"] = seconds
            history.append(epoch, logs)
            if verbose:
                text = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "seconds")
                print(
                    f"epoch {epoch}/{epochs}: {text}  ({seconds:.1f} s, "
                    f"{seen / max(seconds, 1e-9):.0f} img/s)"
                )
            if flag.stop:
                break
            if scheduler is not None:
                scheduler.step()
    if flag.stop:
        history.interrupted = True
        if verbose:
            print("training interrupted: the model keeps the weights of the last finished step")
    model.eval()
    return history


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def predict(model: Module, x: Any, batch_size: int = 256) -> np.ndarray:
    """Outputs of ``model`` in eval mode for every sample of ``x``, computed in batches."""
    batch_size = check_int(batch_size, "batch_size", "predict", min_value=1)
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise ValueError(
            f"predict(): x must hold at least one sample. Received: x with shape {x.shape}"
        )
    was_training = model.training
    model.eval()
    try:
        with _batch_loop():
            outs = [np.array(model(x[s]), copy=True) for s in _batches(len(x), batch_size)]
    finally:
        if was_training:  # (else eval() above already left every module as it must be)
            model.train()
    return outs[0] if len(outs) == 1 else np.concatenate(outs)


def evaluate(
    model: Module, x: Any, y: Any, batch_size: int = 256, loss: Any = None
) -> dict[str, float]:
    """Mean loss and accuracy (NaN for non-classification losses) over ``(x, y)``, in eval
    mode. ``loss`` defaults to the one used by ``fit``, else cross-entropy for integer
    labels and MSE otherwise."""
    batch_size = check_int(batch_size, "batch_size", "evaluate", min_value=1)
    if loss is None:
        loss = model.loss_fn
    if loss is None:
        loss = "cross_entropy" if np.asarray(y).dtype.kind in "iu" else "mse"
    loss_fn = losses.resolve_loss(loss, "evaluate")
    x, y = _check_xy(model, x, y, "evaluate", loss_fn)
    was_training = model.training
    model.eval()
    total = 0.0
    correct = 0
    counted = 0
    try:
        with _batch_loop():
            for s in _batches(len(x), batch_size):
                out = model(x[s])
                nb = s.stop - s.start
                total += float(loss_fn(out, y[s])) * nb
                hits = losses.count_correct(loss_fn, out, y[s])
                if hits is not None:
                    correct += hits
                    counted += nb
    finally:
        model.train(was_training)
    return {"loss": total / len(x), "accuracy": correct / counted if counted else float("nan")}
