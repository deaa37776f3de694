"""Keras-style training callbacks for :func:`cnncore.nn.training.fit` (re-exported as
:mod:`cnncore.callbacks`).

A callback's hooks run at fixed points of the one training loop, with Keras' arguments:
``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``, ``on_batch_begin(batch, logs)``,
``on_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)``.
``epoch`` and ``batch`` are 0-based indices, as in Keras (``History.epoch`` counts from 1).
Before training, ``fit`` gives every callback the model (:attr:`Callback.model`) and a
``params`` dict: ``epochs``, ``initial_epoch``, ``steps``, ``samples``, ``batch_size``,
``verbose``, ``seed`` (the seed that drives shuffling, Dropout and augmentation), and the
``optimizer``, ``scheduler`` and ``history`` objects of the run.

The epoch logs hold ``loss``, ``accuracy`` (classification), other metrics, ``val_*`` with
validation data, ``lr`` (the learning rate of the epoch's last step) and ``seconds``.  A
callback stops training by setting ``self.model.stop_training = True``.  The ``monitor`` of
:class:`EarlyStopping`, :class:`ModelCheckpoint` (with ``save_best_only``) and
:class:`ReduceLROnPlateau` must name one of the logs: anything else is a ValueError, listing
the available ones, at the end of the first epoch.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._parameter import weights_changed
from .._typing import PathLike
from .._validation import _fmt, check_bool, check_choice, check_int, check_real
from . import checkpoint, serialization
from .module import Module

__all__ = [
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "CSVLogger",
    "LambdaCallback",
]


class Callback:
    """Base class of the callbacks: every hook does nothing; subclasses override some.

    Attributes
    ----------
    model : Module
        The model being trained (set by ``fit`` before ``on_train_begin``).
    params : dict
        The run's parameters (see :mod:`cnncore.callbacks`).
    """

    #: Run only on rank 0 of a distributed ``fit`` (callbacks that write files).
    rank_zero_only = False

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Module) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called once after the last epoch (also when training stopped early, was
        interrupted, or failed), with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called after epoch ``epoch`` with its logs (the optimizer's learning rate and the
        scheduler are already those of the next epoch)."""

    def on_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called before training batch ``batch`` (0-based, within the epoch); ``logs`` has
        ``batch`` and ``size``."""

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called after the optimizer step of batch ``batch``; ``logs`` has ``batch``,
        ``size``, ``loss`` and ``accuracy`` (running means over the epoch) and ``lr``."""


def _overrides(cb: Callback, hook: str) -> bool:
    """Whether ``cb`` has its own ``hook`` (a subclass method or a LambdaCallback function)."""
    return hook in vars(cb) or getattr(type(cb), hook) is not getattr(Callback, hook)


class CallbackList:
    """The callbacks of one ``fit`` call, each hook called on every callback in order."""

    _HOOKS = (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_batch_begin",
        "on_batch_end",
    )

    def __init__(
        self, callbacks: Iterable[Callback] | None, model: Module, params: dict[str, Any]
    ) -> None:
        if callbacks is None:
            callbacks = []
        if isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
            raise TypeError(
                "fit(): callbacks must be a list of cnncore.callbacks.Callback. Received: "
                f"callbacks of type {type(callbacks).__name__}"
            )
        self.callbacks = list(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(
                    "fit(): callbacks must be cnncore.callbacks.Callback objects. Received: "
                    f"callbacks[{i}] of type {type(cb).__name__}"
                )
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        # batch hooks are called only if some callback overrides them (they run per batch)
        self._batch_hooks = any(
            _overrides(cb, "on_batch_begin") or _overrides(cb, "on_batch_end")
            for cb in self.callbacks
        )

    @property
    def wants_batches(self) -> bool:
        return self._batch_hooks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(batch, logs)


# --------------------------------------------------------------------------------------------
# Helpers: monitored values, weights snapshots
# --------------------------------------------------------------------------------------------


def _check_monitor(monitor: Any, func: str) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(
            f"{func}(): monitor must be the name of a logged metric (e.g. 'val_loss'). "
            f"Received: monitor={_fmt(monitor)}"
        )
    return monitor


def _resolve_mode(mode: Any, monitor: str, func: str) -> str:
    """'min' or 'max'; ``'auto'`` is 'max' for accuracies (a name containing ``acc``) and
    'min' otherwise (losses), as Keras."""
    mode = check_choice(mode, "mode", func, ("auto", "min", "max"))
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def monitored(callback: Any, logs: dict[str, Any] | None, epoch: int) -> float:
    """``logs[callback.monitor]`` as a float; ValueError listing the available metrics when
    it is not logged."""
    logs = logs or {}
    if callback.monitor not in logs:
        raise ValueError(
            f"{type(callback).__name__}(monitor={callback.monitor!r}): there is no metric "
            f"{callback.monitor!r} at the end of epoch {epoch + 1}. Available metrics: "
            f"{sorted(k for k in logs if not isinstance(logs[k], np.ndarray))}"
        )
    return float(logs[callback.monitor])


def get_weights(model: Module) -> list[np.ndarray]:
    """Copies of every parameter and buffer of ``model`` (Keras' ``get_weights``)."""
    return [p.data.copy() for p in model.parameters()] + [
        b.copy() for _, b in model.named_buffers()
    ]


def set_weights(model: Module, weights: list[np.ndarray]) -> None:
    """Copy ``weights`` (from :func:`get_weights`) back into ``model``, in place."""
    targets = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    for t, w in zip(targets, weights, strict=True):
        np.copyto(t, w)
    weights_changed()  # (fused models' packed weights)


# --------------------------------------------------------------------------------------------
# The callbacks
# --------------------------------------------------------------------------------------------


class EarlyStopping(Callback):
    """Stop training when a monitored metric has stopped improving (Keras' semantics).

    Parameters
    ----------
    monitor : str, default 'val_loss'
    min_delta : float, default 0
        An improvement is a change of more than ``|min_delta|`` in the right direction.
    patience : int, default 0
        Epochs without improvement after which training stops.
    verbose : int, default 0
        1 prints when it stops and when it restores weights.
    mode : {'auto', 'min', 'max'}, default 'auto'
        'auto': 'max' for accuracies (a name containing ``acc``), else 'min'.
    baseline : float, optional
        The counter is reset only by values that also beat the baseline.
    restore_best_weights : bool, default False
        At the end of training, restore the weights (parameters and buffers, bit-exact) of
        the epoch with the best value (even when training ran to the end).
    start_from_epoch : int, default 0
        Epochs (0-based) before which nothing is monitored (a warm-up).

    Attributes
    ----------
    best : float or None
    best_epoch : int
        0-based index of the best epoch.
    stopped_epoch : int
        0-based index of the epoch after which training stopped (0 if it did not).
    wait : int
        Epochs since the last improvement.

    Notes
    -----
    After each epoch: ``wait += 1``; if the value improves on ``best`` (``best`` is None at
    first, and every value improves on None) it becomes ``best`` and, if it also beats
    ``baseline``, ``wait = 0``; otherwise training stops once ``wait >= patience`` (never
    after the first epoch).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__()
        func = "EarlyStopping"
        self.monitor = _check_monitor(monitor, func)
        self.min_delta = abs(check_real(min_delta, "min_delta", func))
        if not math.isfinite(self.min_delta):
            raise ValueError(f"{func}(): min_delta must be finite. Received: {min_delta!r}")
        self.patience = check_int(patience, "patience", func, min_value=0)
        self.verbose = check_int(verbose, "verbose", func, min_value=0)
        self.mode = _resolve_mode(mode, self.monitor, func)
        self.baseline = None if baseline is None else check_real(baseline, "baseline", func)
        self.restore_best_weights = check_bool(restore_best_weights, "restore_best_weights", func)
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", func, min_value=0)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch = 0

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = monitored(self, logs, epoch)
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # the first monitored epoch: its weights are the best so far
            self.best_weights = get_weights(self.model)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = get_weights(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            set_weights(self.model, self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (and everything needed to resume training) after every epoch, or
    only when a monitored metric improves (Keras' semantics).

    Parameters
    ----------
    filepath : str or os.PathLike
        Formatted with ``epoch`` (1-based, the number of epochs completed) and the epoch's
        logs, e.g. ``'ckpt/epoch{epoch:03d}-{val_loss:.4f}.npz'``. Missing directories are
        created.
    monitor : str, default 'val_loss'
        Read only with ``save_best_only``.
    verbose : int, default 0
        1 prints a line per save.
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value so far (overwriting the same
        file if ``filepath`` has no per-epoch field).
    save_weights_only : bool, default False
        Write only the model (:func:`cnncore.nn.serialization.save`'s file: load it with
        :func:`cnncore.load`). By default a full checkpoint
        (:func:`cnncore.save_checkpoint`: model, optimizer, scheduler, epoch, seed,
        history) that ``cnncore.load_checkpoint`` and ``fit(initial_epoch=...)`` resume
        from, bit-identically.
    mode : {'auto', 'min', 'max'}, default 'auto'
    initial_value_threshold : float, optional
        The best value to beat at first (``save_best_only``).

    Notes
    -----
    Every file is written atomically (temporary file, fsync, rename): a process killed
    during a save leaves the previous file loadable. The checkpoint is taken after the
    epoch's scheduler step, so it resumes exactly where the run was.
    """

    rank_zero_only = True  # writes files: only rank 0 of a distributed fit runs it

    def __init__(
        self,
        filepath: PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__()
        func = "ModelCheckpoint"
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(
                f"{func}(): filepath must be a path. Received: filepath of type "
                f"{type(filepath).__name__}"
            )
        self.filepath = os.fspath(filepath)
        self.monitor = _check_monitor(monitor, func)
        self.verbose = check_int(verbose, "verbose", func, min_value=0)
        self.save_best_only = check_bool(save_best_only, "save_best_only", func)
        self.save_weights_only = check_bool(save_weights_only, "save_weights_only", func)
        self.mode = _resolve_mode(mode, self.monitor, func)
        self.initial_value_threshold = (
            None
            if initial_value_threshold is None
            else check_real(initial_value_threshold, "initial_value_threshold", func)
        )
        self._reset()

    def _reset(self) -> None:
        if self.initial_value_threshold is not None:
            self.best = self.initial_value_threshold
        else:
            self.best = math.inf if self.mode == "min" else -math.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def _better(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def file_path(self, epoch: int, logs: dict[str, Any] | None) -> str:
        """``filepath`` formatted for epoch ``epoch`` (0-based) and its logs."""
        logs = logs or {}
        try:
            return self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint(filepath={self.filepath!r}): cannot format the path with "
                f"epoch and the logs ({type(exc).__name__}: {exc}). Available fields: "
                f"{['epoch', *sorted(logs)]}"
            ) from None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        path = self.file_path(epoch, logs)
        if self.save_best_only:
            current = monitored(self, logs, epoch)
            if not self._better(current):
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                    f"{current:.5f}, saving model to {path}"
                )
            self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            serialization.save(self.model, path)
        else:
            checkpoint.save_checkpoint(
                path,
                self.model,
                self.params.get("optimizer"),
                self.params.get("scheduler"),
                epoch=epoch + 1,
                rng=self.params.get("seed"),
                history=self.params.get("history"),
            )


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a monitored metric has stopped
    improving for ``patience`` epochs (Keras' semantics; see
    :class:`cnncore.optim.ReduceLROnPlateau` for the PyTorch-style scheduler).

    Parameters
    ----------
    monitor : str, default 'val_loss'
    factor : float in [0, 1), default 0.1
    patience : int, default 10
    verbose : int, default 0
    mode : {'auto', 'min', 'max'}, default 'auto'
    min_delta : float, default 1e-4
        Improvements smaller than this do not count.
    cooldown : int, default 0
        Epochs after a reduction before bad epochs count again.
    min_lr : float, default 0
        Lower bound of the learning rate.

    Notes
    -----
    After each epoch: during cooldown the counter ``wait`` stays 0; a value better than
    ``best`` by ``min_delta`` becomes ``best`` and resets ``wait``; otherwise (outside
    cooldown) ``wait += 1`` and when ``wait >= patience`` and ``lr > min_lr`` the rate
    becomes ``max(lr * factor, min_lr)`` and the cooldown starts.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        func = "ReduceLROnPlateau"
        self.monitor = _check_monitor(monitor, func)
        self.factor = check_real(factor, "factor", func)
        if not 0.0 <= self.factor < 1.0:
            raise ValueError(f"{func}(): factor must be in [0, 1). Received: factor={factor!r}")
        self.patience = check_int(patience, "patience", func, min_value=0)
        self.verbose = check_int(verbose, "verbose", func, min_value=0)
        self.mode = _resolve_mode(mode, self.monitor, func)
        self.min_delta = check_real(min_delta, "min_delta", func)
        self.cooldown = check_int(cooldown, "cooldown", func, min_value=0)
        self.min_lr = check_real(min_lr, "min_lr", func)
        if not (self.min_lr >= 0 and math.isfinite(self.min_lr)):
            raise ValueError(f"{func}(): min_lr must be >= 0 and finite. Received: {min_lr!r}")
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.wait = 0

    def _better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < best - self.min_delta
        return a > best + self.min_delta

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = monitored(self, logs, epoch)
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                opt = self.model.optimizer
                old = float(opt.lr)
                if old > self.min_lr:
                    opt.lr = max(old * self.factor, self.min_lr)
                    if self.verbose > 0:
                        print(
                            f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                            f"to {opt.lr}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class CSVLogger(Callback):
    """Stream the epoch logs to a CSV file (Keras' semantics): a header ``epoch`` (0-based)
    and the log keys in sorted order, one row per epoch, flushed after each.

    Parameters
    ----------
    filename : str or os.PathLike
    separator : str, default ','
    append : bool, default False
        Append to an existing file (the header is written only if the file is empty or
        new) instead of overwriting it.
    """

    rank_zero_only = True  # writes files: only rank 0 of a distributed fit runs it

    def __init__(self, filename: PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        func = "CSVLogger"
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(
                f"{func}(): filename must be a path. Received: filename of type "
                f"{type(filename).__name__}"
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                f"{func}(): separator must be one character. Received: separator={separator!r}"
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = check_bool(append, "append", func)
        self._file: Any = None
        self._writer: Any = None
        self.keys: list[str] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.append_header = True
        if self.append and os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8") as f:
                self.append_header = not f.readline()
        self._file = open(  # noqa: SIM115 - kept open for the run, closed in on_train_end
            self.filename, "a" if self.append else "w", newline="", encoding="utf-8"
        )
        self._writer = None
        self.keys = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: v for k, v in (logs or {}).items() if not isinstance(v, np.ndarray)}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=["epoch", *self.keys], delimiter=self.sep
            )
            if self.append_header:
                self._writer.writeheader()
        row = {"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        self._writer = None


class LambdaCallback(Callback):
    """A callback from plain functions (Keras' semantics): ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_batch_begin(batch, logs)``,
    ``on_batch_end(batch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``; each
    optional.

    Examples
    --------
    >>> from cnncore.callbacks import LambdaCallback
    >>> seen = []
    >>> cb = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["loss"]))
    """

    def __init__(
        self,
        on_epoch_begin: Callable[..., Any] | None = None,
        on_epoch_end: Callable[..., Any] | None = None,
        on_batch_begin: Callable[..., Any] | None = None,
        on_batch_end: Callable[..., Any] | None = None,
        on_train_begin: Callable[..., Any] | None = None,
        on_train_end: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        hooks = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_batch_begin": on_batch_begin,
            "on_batch_end": on_batch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
        }
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(
                    f"LambdaCallback(): {name} must be callable. Received: {name} of type "
                    f"{type(fn).__name__}"
                )
            setattr(self, name, fn)
