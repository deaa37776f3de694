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

import copy
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import _alloc, optim
from .._config import blas_single_thread
from .._validation import as_ndarray, batch_required, check_bool, check_int, check_real
from . import callbacks as callback_lib
from . import loss as losses
from . import metrics as metric_lib
from .module import Module, as_model_input


class History:
    """What :func:`fit` (and :meth:`Sequential.fit`) returns: per-epoch metrics, as in Keras.

    Attributes
    ----------
    history : dict of str -> list of float
        ``loss``, ``accuracy`` (classification), other metrics, ``val_loss``,
        ``val_accuracy`` (with validation data), ``lr`` (the learning rate of the epoch's
        last step) and ``seconds`` (wall time per epoch).
    epoch : list of int
        The epochs trained (1-based: ``initial_epoch + 1``, ...).
    params : dict
        The run's ``epochs``, ``initial_epoch``, ``steps``, ``samples``, ``batch_size``,
        ``verbose``, ``seed`` and ``scheduler``.
    interrupted : bool
        True when Ctrl-C stopped training; the model keeps the weights of the last finished
        step.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.interrupted = False
        self.params: dict[str, Any] = {}

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
    count a depth instead of toggling the BLAS libraries (~10 us per kernel call).  The ops
    that also take an unbatched sample refuse one here: the first axis is the batch."""
    with _alloc.caching(), blas_single_thread(), batch_required():
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
        with batch_required():  # (C, H, W) samples are not batches: no unbatched reading
            out = model(x[:2])
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{func}(): x with shape {x.shape} does not fit the model: "
            f"{_for_user_batch(str(exc), exc, min(2, len(x)), len(x))}"
        ) from None
    finally:
        model.train(was_training)
    _check_output(out, func)
    if loss_fn is not None:
        loss_fn.check_target(out, y, func)
        if y.dtype.kind == "f" and y.dtype != out.dtype:
            y = y.astype(out.dtype)  # float targets take the model's dtype (as in Keras)
    return x, y


def _for_user_batch(text: str, exc: BaseException, trial: int, n: int) -> str:
    """An error of the two-sample trial forward restated for the user's batch of ``n``: the
    shapes the layer error quotes get ``n`` as their batch size."""
    for attr in ("input_shape", "inner_input_shape"):
        shape = getattr(exc, attr, None)
        if shape and shape[0] == trial:
            text = text.replace(str(tuple(shape)), str((n, *shape[1:])))
    return text


def _check_output(out: Any, func: str) -> None:
    """fit/evaluate/predict train and score models that return one array."""
    if not isinstance(out, np.ndarray):
        raise ValueError(
            f"{func}(): the model must return one array (fit, evaluate and predict take models "
            f"with one output; train others with forward/backward calls). Received: an output "
            f"of type {type(out).__name__}"
        )


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


def _progress(total: int, epoch: int, epochs: int, verbose: int) -> Any:
    """A tqdm bar over the epoch's images (ETA and rate from tqdm; loss, accuracy, images/s
    and the learning rate in its postfix), for ``verbose=1``."""
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(
        total=total, desc=f"epoch {epoch}/{epochs}", unit="img", leave=True, dynamic_ncols=True
    )


def _check_verbose(verbose: Any, func: str) -> int:
    """Keras' ``verbose``: 0 silent, 1 progress bar, 2 one line per epoch (``'auto'`` and
    True are 1, False is 0)."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    if isinstance(verbose, (int, np.integer)) and int(verbose) in (0, 1, 2):
        return int(verbose)
    raise ValueError(
        f"{func}(): verbose must be 0 (silent), 1 (progress bar), 2 (one line per epoch), "
        f"'auto' or a bool. Received: verbose={verbose!r}"
    )


def _check_sample_weight(sw: Any, n: int, name: str, func: str) -> np.ndarray | None:
    if sw is None:
        return None
    w = as_ndarray(sw, name, func)
    if w.dtype.kind not in "iuf":
        raise TypeError(
            f"{func}(): {name} must hold real numbers. Received: {name}.dtype={w.dtype}"
        )
    if w.ndim != 1 or len(w) != n:
        raise ValueError(
            f"{func}(): {name} must have shape ({n},), one weight per sample. Received: "
            f"{name} with shape {w.shape}"
        )
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        bad = w[~(np.isfinite(w) & (w >= 0))][0]
        raise ValueError(
            f"{func}(): {name} must be finite and >= 0. Received: {name} containing {bad!r}"
        )
    return w


def _class_weights(
    class_weight: Any, loss_fn: Any, y: np.ndarray, n_outputs: int, func: str
) -> np.ndarray | None:
    """Per-sample weights from ``class_weight`` (a dict class -> weight, or 'balanced')."""
    if class_weight is None:
        return None
    labels = loss_fn.class_targets(y)
    if labels is None:
        raise ValueError(
            f"{func}(): class_weight needs a classification loss with one class per sample "
            f"(CrossEntropyLoss, or BCE losses with one output). Received: loss "
            f"{type(loss_fn).__name__} with y of shape {y.shape}"
        )
    labels = np.asarray(labels, dtype=np.int64)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"{func}(): class_weight must be a dict or 'balanced'. Received: "
                f"class_weight={class_weight!r}"
            )
        valid = labels[labels >= 0]
        counts = np.bincount(valid, minlength=1)
        present = np.flatnonzero(counts)
        table = np.ones(len(counts))
        # scikit-learn's 'balanced': n_samples / (n_classes * count of the class)
        table[present] = len(valid) / (len(present) * counts[present])
        return np.where(labels >= 0, table[np.clip(labels, 0, None)], 1.0)
    if not isinstance(class_weight, dict):
        raise TypeError(
            f"{func}(): class_weight must be a dict {{class: weight}} or 'balanced'. Received: "
            f"class_weight of type {type(class_weight).__name__}"
        )
    n_classes = max(n_outputs, 2)
    table = np.ones(n_classes)
    for k, v in class_weight.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(
                f"{func}(): class_weight keys must be class indices (ints). Received: key {k!r}"
            )
        if not 0 <= int(k) < n_classes:
            raise ValueError(
                f"{func}(): class_weight has class {int(k)}, outside [0, {n_classes}) for this "
                f"model. Received: class_weight={class_weight!r}"
            )
        v = check_real(v, f"class_weight[{int(k)}]", func)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(
                f"{func}(): class weights must be finite and >= 0. Received: "
                f"class_weight[{int(k)}]={v!r}"
            )
        table[int(k)] = v
    # samples with an ignored / out-of-table label keep weight 1 (as Keras' .get(y, 1.0))
    inside = (labels >= 0) & (labels < n_classes)
    return np.where(inside, table[np.clip(labels, 0, n_classes - 1)], 1.0)


def _validation_arrays(validation_data: Any, func: str) -> tuple[Any, Any, Any]:
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError(
            f"{func}(): validation_data must be a pair (x_val, y_val) or a triple (x_val, "
            f"y_val, sample_weight_val). Received: {type(validation_data).__name__}"
            + (
                f" of length {len(validation_data)}"
                if isinstance(validation_data, (tuple, list))
                else ""
            )
        )
    xv, yv = validation_data[0], validation_data[1]
    swv = validation_data[2] if len(validation_data) == 3 else None
    return xv, yv, swv


def _epoch_rng(base_seed: int, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch`` (0-based): a function of the run's seed and the epoch
    alone, so epochs ``k, k+1, ...`` of a resumed run draw exactly what they drew in an
    uninterrupted one."""
    return np.random.default_rng(np.random.SeedSequence(base_seed, spawn_key=(epoch,)))


class _Distributed:
    """``fit(distributed=True)``'s side of :mod:`cnncore.distributed`: the communicator, the
    fixed parts of every global batch, and the per-part step (see that module for why the
    result does not depend on the process count)."""

    def __init__(self, comm: Any, gradsum: Any, seed: int, verbose: int, model: Module) -> None:
        from .. import distributed as dist_lib

        self.comm = comm
        self.gradsum = gradsum
        self.seed = seed
        self.verbose = verbose
        self.buffers = [b for _, b in model.named_buffers()]
        # layers that normalize with the whole global batch (SyncBatchNorm) need the parts
        # of a rank run together
        self.lockstep = (
            dist_lib.Lockstep(comm, gradsum.parts) if _needs_global_batch(model) else None
        )
        self.replicas: list[Module] = []

    @classmethod
    def start(
        cls, model: Module, distributed: Any, parts: Any, seed: int, verbose: int, func: str
    ) -> _Distributed | None:
        if not check_bool(distributed, "distributed", func):
            if parts is not None:
                raise ValueError(
                    f"{func}(): distributed_parts applies to distributed=True only. Received: "
                    f"distributed_parts={parts!r}"
                )
            return None
        from .. import distributed as dist_lib

        comm = dist_lib.world()
        if parts is None:
            parts = dist_lib.DEFAULT_PARTS
        params = model.parameters()
        gradsum = dist_lib.GradientSum(params, comm, parts)
        if "CNNCORE_NUM_THREADS" not in os.environ:
            dist_lib.place_threads(comm)
        info = dist_lib.layout(comm)
        if comm.rank == 0 and verbose:
            print(dist_lib.format_layout(info))
        seed = comm.bcast_int(seed)  # rank 0's (drawn) seed
        dist_lib.broadcast_parameters(params, comm)
        dist = cls(comm, gradsum, seed, verbose if comm.rank == 0 else 0, model)
        dist.sync_buffers()
        return dist

    def fail(self, exc: BaseException) -> None:
        """An exception on this rank during training: the other ranks wait in a collective
        that this rank will never join, so print it and stop every rank (non-zero exit)."""
        if self.comm.size > 1:
            traceback.print_exception(exc)
            self.comm.abort(
                f"fit() failed on this rank ({type(exc).__name__}: {exc}); stopping every rank"
            )

    def sync_buffers(self) -> None:
        """Every rank takes rank 0's buffers (running statistics; see cnncore.distributed)."""
        from .. import distributed as dist_lib

        dist_lib.broadcast_buffers(self.buffers, self.comm)

    def callbacks_here(self, callbacks: Any) -> Any:
        """The callbacks this rank runs: all of them on rank 0; elsewhere those that do not
        write files (``rank_zero_only``), so every rank still stops early together."""
        if self.comm.rank == 0 or callbacks is None:
            return callbacks
        return [c for c in callbacks if not getattr(c, "rank_zero_only", False)]

    def _models(self, model: Module, n: int) -> list[Module]:
        """``model`` and ``n - 1`` replicas of it for the parts of a lockstep step: their own
        layers (caches, buffers, gradients), the model's parameter values."""
        while len(self.replicas) < n - 1:
            memo: dict[int, Any] = {id(p.data): p.data for p in model.parameters()}
            memo[id(model.optimizer)] = None  # (and the loss: never part of a replica)
            memo[id(model.loss_fn)] = None
            replica = copy.deepcopy(model, memo)
            for rp in replica.parameters():
                rp.grad = np.zeros_like(rp.data)
            self.replicas.append(replica)
        models = [model, *self.replicas[: n - 1]][:n]
        params = model.parameters()
        for replica in models[1:]:
            for rp, p in zip(replica.parameters(), params, strict=True):
                rp.data = p.data  # (the optimizer updates in place; this keeps it so anyway)
            replica.train()
        return models

    def step(
        self,
        model: Module,
        loss_fn: Any,
        opt: Any,
        x: np.ndarray,
        y: np.ndarray,
        sw: np.ndarray | None,
        idx: np.ndarray,
        epoch: int,
        step: int,
        augment: Any,
        dtype: np.dtype,
        extra_metrics: list[Any],
    ) -> np.ndarray:
        """Gradients of this global batch summed over every part into the parameters' grads;
        returns ``[loss * n, correct, samples counted for accuracy, top-k counts...]`` of the
        whole batch, summed over the parts in order (the same on every rank)."""
        from .. import distributed as dist_lib

        nb = len(idx)
        gs = self.gradsum
        bounds = dist_lib.part_bounds(nb, gs.parts)
        rows = np.zeros((gs.parts, 3 + len(extra_metrics)))

        def run_part(m: Module, p: int) -> None:
            lo, hi = bounds[p]
            prng = dist_lib.part_rng(self.seed, epoch, step, p)
            _reseed(m, prng)
            pidx = idx[lo:hi]
            xb = as_model_input(x[pidx], dtype)
            if augment is not None:
                xb = as_model_input(augment(xb, prng), dtype)
            yb = y[pidx]
            out = m(xb)
            if sw is None:
                part_loss = loss_fn(out, yb)
                grad = loss_fn.backward()
            else:
                part_loss, grad = loss_fn.weighted(out, yb, sw[pidx])
            hits = losses.count_correct(loss_fn, out, yb)
            rows[p, 0] = float(part_loss) * (hi - lo)
            if hits is not None:
                rows[p, 1:3] = hits, hi - lo
            for i, metric in enumerate(extra_metrics):
                rows[p, 3 + i] = metric.count(out, yb)
            # the part's mean-loss gradient, weighted by its share of the global batch
            m.backward(grad * grad.dtype.type((hi - lo) / nb), input_grad=False)

        opt.zero_grad()
        gs.begin()
        active = [p for p in gs.owned if bounds[p][1] > bounds[p][0]]
        if self.lockstep is None:
            after_part0 = None
            for p in gs.owned:
                if p in active:
                    run_part(model, p)
                    if p == 0 and len(active) > 1 and self.buffers:
                        after_part0 = [b.copy() for b in self.buffers]
                gs.take()
            if after_part0 is not None:  # running statistics follow part 0 (see the module)
                for b, saved in zip(self.buffers, after_part0, strict=True):
                    b[...] = saved
        else:
            models = self._models(model, len(active))

            def job(m: Module, p: int) -> Any:
                def run() -> None:
                    with _alloc.caching():  # (the allocator is chosen per thread)
                        run_part(m, p)

                return run

            self.lockstep.run([(p, job(m, p)) for p, m in zip(active, models, strict=True)])
            by_part = dict(zip(active, models, strict=True))
            for p in gs.owned:
                gs.take(by_part[p].parameters() if p in by_part else None)
        gs.finish()
        return dist_lib.sum_in_order(self.comm, rows)


def _needs_global_batch(model: Module) -> bool:
    """Whether a module of ``model`` normalizes with global-batch statistics in distributed
    training (its class sets ``global_batch_statistics``: SyncBatchNorm)."""
    stack, seen = [model], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if getattr(type(m), "global_batch_statistics", False):
            return True
        stack.extend(m.children())
    return False


def _resolve_seed(seed: Any, func: str) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    return check_int(seed, "seed", func, min_value=0, max_value=None)


def _format_logs(logs: dict[str, float]) -> str:
    parts = []
    for k, v in logs.items():
        if k == "seconds":
            continue
        parts.append(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}")
    return "  ".join(parts)


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
    validation_split: float = 0.0,
    verbose: int | bool | str = 1,
    seed: int | None = None,
    scheduler: Any = None,
    augment: Any = None,
    callbacks: Any = None,
    initial_epoch: int = 0,
    class_weight: Any = None,
    sample_weight: Any = None,
    metrics: Any = None,
    distributed: bool = False,
    distributed_parts: int | None = None,
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
        Integer class labels of shape (N,) for classification losses; for cross entropy
        also class probabilities (e.g. one-hot rows) of shape (N, C), float, as in
        :func:`torch.nn.functional.cross_entropy`; or regression targets.
    optimizer : cnncore.optim.Optimizer or str
        An optimizer over ``model.parameters()``, or a name (``'sgd'``, ``'adam'``, ...)
        for one with default settings (:func:`cnncore.optim.make_optimizer`).
    loss : loss module (e.g. ``nn.CrossEntropyLoss()``) or str (``'cross_entropy'``, ...)
    epochs : int
        The index of the last epoch (Keras): training runs epochs ``initial_epoch + 1`` to
        ``epochs``.
    batch_size : int
    shuffle : bool
        Reshuffle the training samples every epoch.
    validation_data : (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
        Evaluated after every epoch (``val_loss``, ``val_accuracy``, other metrics).
    validation_split : float in [0, 1), default 0
        Hold out the *last* fraction of ``x``/``y`` (and ``sample_weight``) as validation
        data, before any shuffling, as Keras (``validation_data`` takes precedence).
    verbose : {0, 1, 2, 'auto'} or bool, default 1
        0: silent; 1: a tqdm progress bar (ETA, loss, accuracy, images/s, learning rate)
        and a line per epoch; 2: one line per epoch only (for logs and CI).
    seed : int, optional
        Seeds shuffling, Dropout masks and augmentation: each epoch's random generator is
        derived from ``(seed, epoch)`` alone, so the same seed gives the same weights --
        whatever the thread count, and whether the run is continuous or resumed from a
        checkpoint with ``initial_epoch``. None draws a seed (``history.params['seed']``).
    scheduler : cnncore.optim.LRScheduler, optional
        Stepped after every batch or after every epoch, as its ``interval`` says
        (:class:`~cnncore.optim.OneCycleLR` per batch, the others per epoch);
        :class:`~cnncore.optim.ReduceLROnPlateau` is stepped with ``val_loss`` (``loss``
        without validation data).
    augment : callable, optional
        ``augment(x_batch, rng) -> x_batch`` applied to every training batch (e.g.
        :class:`cnncore.augment.FlipShift`), with the epoch's generator.
    callbacks : list of cnncore.callbacks.Callback, optional
        Called at the start/end of training, epochs and batches (Keras' hooks); a callback
        stops training with ``model.stop_training = True``.
    initial_epoch : int, default 0
        Epochs already done (Keras): with a checkpoint from
        :func:`cnncore.load_checkpoint` and the same ``seed``, training resumes exactly
        where it stopped.
    class_weight : dict {class: weight} or 'balanced', optional
        Weights each training sample's loss by its class (classes missing from the dict
        weigh 1). 'balanced' is scikit-learn's ``n_samples / (n_classes * count(class))``.
    sample_weight : ndarray of shape (N,), optional
        A weight per training sample (multiplied with the class weight).
    metrics : list, optional
        Extra metrics: ``'top_k_accuracy'`` (k = 5), ``'top3_accuracy'``, or
        :class:`cnncore.nn.metrics.TopKAccuracy` objects (``accuracy`` is always reported
        for classification losses).
    distributed : bool, default False
        Data-parallel training over MPI (run under ``mpirun -n K``; see
        :mod:`cnncore.distributed`): ``batch_size`` is the global batch, every rank computes
        its share of it, and the weights (and running statistics) are bit-identical for
        every K.  Validation is shared among the ranks too, its ``val_*`` metrics equal to a
        single-process :func:`evaluate`'s bit for bit.  BatchNorm normalizes each part with
        that part's statistics (as PyTorch's DDP per rank); :class:`~cnncore.nn.SyncBatchNorm`
        with the global batch's.  Only rank 0 prints and runs the callbacks that write
        files; every rank ends with rank 0's model.
    distributed_parts : int, optional
        The fixed parts every global batch is cut into when ``distributed`` (default
        :data:`cnncore.distributed.DEFAULT_PARTS`, 4); at most this many processes, and
        the same value gives the same weights for every process count.

    Returns
    -------
    History
        ``history.history`` per epoch; ``history.epoch`` counts from ``initial_epoch + 1``;
        ``history.params`` the run's parameters.

    Notes
    -----
    Everything is checked before the first step (shapes via a two-sample forward pass,
    labels against the output size, class probabilities against their range,
    ``len(x) == len(y)``, weights); float targets are converted to the model's dtype. Ctrl-C
    stops between steps and returns the history so far (``history.interrupted``).

    ``fit`` trains in train mode and leaves the model in the mode it found it in (as
    Keras and PyTorch Lightning do): a new model stays in train mode, so a manual training
    step can follow; a model from :func:`cnncore.load` (eval mode) is back in eval mode.
    ``evaluate`` and ``predict`` always run in eval mode and restore the mode too.

    With sample or class weights the batch loss is Keras': ``sum_i w_i l_i / N`` for the
    losses' 'mean' reduction (``l_i`` the loss of sample ``i``), so with
    ``CrossEntropyLoss`` (no label smoothing) it and its gradient equal PyTorch's
    ``CrossEntropyLoss(weight=w, reduction='sum')`` divided by the batch size. (With label
    smoothing a class weight scales the whole sample's loss, as in Keras, while PyTorch's
    ``weight=`` scales each class term; for the latter use ``CrossEntropyLoss(weight=...)``.)
    """
    func = "fit"
    if not isinstance(model, Module):
        raise TypeError(
            f"fit(): model must be a cnncore.nn.Module. Received: {type(model).__name__}"
        )
    if augment is not None and not callable(augment):
        raise TypeError(
            f"fit(): augment must be callable. Received: augment of type {type(augment).__name__}"
        )
    epochs = check_int(epochs, "epochs", func, min_value=0)
    initial_epoch = check_int(initial_epoch, "initial_epoch", func, min_value=0)
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    verbose = _check_verbose(verbose, func)
    shuffle = check_bool(shuffle, "shuffle", func)
    split = check_real(validation_split, "validation_split", func)
    if not 0.0 <= split < 1.0:
        raise ValueError(
            f"fit(): validation_split must be in [0, 1). Received: validation_split={split!r}"
        )
    loss_fn = losses.resolve_loss(loss, func)
    opt = resolve_optimizer(optimizer, model)
    if scheduler is not None:
        if not isinstance(scheduler, optim.LRScheduler):
            raise TypeError(
                "fit(): scheduler must be a cnncore.optim.LRScheduler. Received: scheduler of "
                f"type {type(scheduler).__name__}"
            )
        if scheduler.optimizer is not opt:
            raise ValueError(
                "fit(): scheduler must schedule the optimizer given to fit. Received: a "
                f"{type(scheduler).__name__} of another optimizer"
            )
    extra_metrics = metric_lib.resolve_metrics(metrics, func)
    x, y = _check_xy(model, x, y, func, loss_fn)
    sw = _check_sample_weight(sample_weight, len(x), "sample_weight", func)
    base_seed = _resolve_seed(seed, func)
    dist = _Distributed.start(model, distributed, distributed_parts, base_seed, verbose, func)
    if dist is not None:
        base_seed, verbose = dist.seed, dist.verbose
        callbacks = dist.callbacks_here(callbacks)

    if validation_data is not None:
        xv, yv, swv = _validation_arrays(validation_data, func)
        xv, yv = _check_xy(model, xv, yv, func, loss_fn)
        swv = _check_sample_weight(swv, len(xv), "validation sample_weight", func)
        val: tuple[Any, Any, Any] | None = (xv, yv, swv)
    elif split > 0:
        at = int(math.floor(len(x) * (1.0 - split)))
        if at == 0 or at == len(x):
            raise ValueError(
                f"fit(): validation_split={split!r} of {len(x)} samples leaves "
                f"{at} for training and {len(x) - at} for validation; both need at least one"
            )
        val = (x[at:], y[at:], None if sw is None else sw[at:])
        x, y = x[:at], y[:at]
        sw = None if sw is None else sw[:at]
    else:
        val = None

    was_training = model.training
    model.eval()
    try:
        probe = model(x[:2])
    finally:
        model.train(was_training)
    if extra_metrics and not (isinstance(loss_fn, losses.CrossEntropyLoss) and probe.ndim >= 2):
        raise ValueError(
            f"fit(): top-k accuracy needs class scores of shape (N, C) and CrossEntropyLoss. "
            f"Received: loss {type(loss_fn).__name__}, outputs of shape (N, "
            f"{', '.join(map(str, probe.shape[1:]))})"
        )
    cw = _class_weights(class_weight, loss_fn, y, probe.shape[1] if probe.ndim >= 2 else 1, func)
    if cw is not None:
        sw = cw if sw is None else sw * cw
    model.loss_fn, model.optimizer = loss_fn, opt
    model.stop_training = False
    was_training = model.training

    n = len(x)
    steps = -(-n // batch_size)
    history = History()
    params: dict[str, Any] = {
        "epochs": epochs,
        "initial_epoch": initial_epoch,
        "steps": steps,
        "samples": n,
        "batch_size": batch_size,
        "verbose": verbose,
        "seed": base_seed,
        "optimizer": opt,
        "scheduler": scheduler,
        "history": history,
    }
    history.params = {k: v for k, v in params.items() if k not in ("optimizer", "history")}
    cbs = callback_lib.CallbackList(callbacks, model, params)
    per_batch = scheduler is not None and scheduler.interval == "batch"
    plateau = isinstance(scheduler, optim.ReduceLROnPlateau)
    batch_hooks = cbs.wants_batches
    dtype = model.dtype
    logs: dict[str, Any] = {}
    cbs.on_train_begin()
    try:
        with _StopFlag() as flag, _batch_loop():
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch, {})
                model.train()
                rng = _epoch_rng(base_seed, epoch)
                _reseed(model, rng)
                order = rng.permutation(n) if shuffle else np.arange(n)
                bar = _progress(n, epoch + 1, epochs, verbose)
                t0 = time.perf_counter()
                seen = 0
                loss_sum = 0.0
                correct = 0
                counted = 0
                topk = [0] * len(extra_metrics)
                lr_used = opt.lr
                for bi, start in enumerate(range(0, n, batch_size)):
                    idx = order[start : start + batch_size]
                    nb = len(idx)
                    if batch_hooks:
                        cbs.on_batch_begin(bi, {"batch": bi, "size": nb})
                    if dist is None:
                        xb = as_model_input(x[idx], dtype)
                        if augment is not None:
                            xb = as_model_input(augment(xb, rng), dtype)
                        yb = y[idx]
                        out = model(xb)
                        if sw is None:
                            batch_loss = loss_fn(out, yb)
                            grad = loss_fn.backward()
                        else:
                            batch_loss, grad = loss_fn.weighted(out, yb, sw[idx])
                        opt.zero_grad()
                        model.backward(grad, input_grad=False)
                        loss_sum += float(batch_loss) * nb
                        hits = losses.count_correct(loss_fn, out, yb)
                        if hits is not None:
                            correct += hits
                            counted += nb
                        for i, m in enumerate(extra_metrics):
                            topk[i] += m.count(out, yb)
                    else:  # this rank's parts of the global batch, gradients summed over ranks
                        stats = dist.step(
                            model,
                            loss_fn,
                            opt,
                            x,
                            y,
                            sw,
                            idx,
                            epoch,
                            bi,
                            augment,
                            dtype,
                            extra_metrics,
                        )
                        loss_sum += stats[0]
                        correct += int(stats[1])
                        counted += int(stats[2])
                        for i in range(len(extra_metrics)):
                            topk[i] += int(stats[3 + i])
                    lr_used = opt.lr
                    opt.step()
                    if per_batch:
                        scheduler.step()
                    seen += nb
                    if batch_hooks:
                        blogs = {"batch": bi, "size": nb, "loss": loss_sum / seen, "lr": lr_used}
                        if counted:
                            blogs["accuracy"] = correct / counted
                        cbs.on_batch_end(bi, blogs)
                    if bar is not None:
                        bar.update(nb)
                        post = {"loss": f"{loss_sum / seen:.4f}"}
                        if counted:
                            post["acc"] = f"{correct / counted:.4f}"
                        post["img/s"] = f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}"
                        post["lr"] = f"{lr_used:.3g}"
                        bar.set_postfix(post, refresh=False)
                    if flag.stop or model.stop_training:
                        break
                seconds = time.perf_counter() - t0
                if bar is not None:
                    bar.close()
                if seen == 0:
                    break
                logs = {"loss": loss_sum / seen}
                if counted:
                    logs["accuracy"] = correct / counted
                for i, m in enumerate(extra_metrics):
                    logs[m.name] = topk[i] / seen
                if val is not None and not flag.stop:
                    if dist is not None:
                        dist.sync_buffers()  # every rank evaluates with rank 0's statistics
                    res = _evaluate(
                        model,
                        val[0],
                        val[1],
                        loss=loss_fn,
                        sample_weight=val[2],
                        metrics=extra_metrics,
                        comm=None if dist is None else dist.comm,
                    )
                    for k, v in res.items():
                        if not (k == "accuracy" and math.isnan(v)):
                            logs["val_" + k] = v
                logs["lr"] = lr_used
                logs["seconds"] = seconds
                if seen == n and scheduler is not None and not per_batch:
                    if plateau:
                        scheduler.step(logs.get("val_loss", logs["loss"]))
                    else:
                        scheduler.step()
                history.append(epoch + 1, logs)
                if verbose:
                    print(
                        f"epoch {epoch + 1}/{epochs}: {_format_logs(logs)}  ({seconds:.1f} s, "
                        f"{seen / max(seconds, 1e-9):.0f} img/s)"
                    )
                if flag.stop:  # Ctrl-C mid-epoch: no epoch-end hooks (no checkpoint of it)
                    break
                cbs.on_epoch_end(epoch, logs)
                if flag.stop or model.stop_training:
                    break
    except BaseException as exc:
        if dist is not None:
            dist.fail(exc)
        raise
    finally:
        cbs.on_train_end(logs)
    if dist is not None and not flag.stop:
        dist.sync_buffers()  # every rank ends with rank 0's model
    if flag.stop:
        history.interrupted = True
        if verbose:
            print("training interrupted: the model keeps the weights of the last finished step")
    model.train(was_training)
    return history


class TrainingMethods:
    """``fit``/``evaluate``/``predict`` as methods, Keras style, for the model classes
    (:class:`~cnncore.nn.Sequential`, :class:`~cnncore.nn.Model`): each calls the function
    of the same name in this module with the model as first argument, so every model trains
    through the one loop."""

    def fit(self, x: Any, y: Any, **kwargs: Any) -> History:
        """Train the model; the arguments are those of :func:`cnncore.nn.training.fit`
        (``optimizer=``, ``loss=``, ``epochs=``, ``batch_size=``, ``callbacks=``, ...)."""
        return fit(self, x, y, **kwargs)  # type: ignore[arg-type]

    def evaluate(self, x: Any, y: Any, **kwargs: Any) -> dict[str, Any]:
        """``{"loss": ..., "accuracy": ..., ...}`` on ``(x, y)``; the arguments are those of
        :func:`cnncore.nn.training.evaluate` (``batch_size=``, ``loss=``, ``confusion=``...)."""
        return evaluate(self, x, y, **kwargs)  # type: ignore[arg-type]

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Outputs for ``x`` in eval mode, computed in batches: ``(N, *output_shape)``."""
        return predict(self, x, batch_size=batch_size)  # type: ignore[arg-type]


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
        if len(x) <= batch_size:
            # one batch (e.g. one image): nothing for the allocation cache to reuse, whose
            # handler would only cost NumPy its own small-block cache
            with blas_single_thread(), batch_required():
                out = model(x)
            _check_output(out, "predict")
            return np.array(out, copy=True)
        with _batch_loop():
            outs = []
            for s in _batches(len(x), batch_size):
                out = model(x[s])
                _check_output(out, "predict")
                outs.append(np.array(out, copy=True))
    finally:
        if was_training:  # (else eval() above already left every module as it must be)
            model.train()
    return outs[0] if len(outs) == 1 else np.concatenate(outs)


def evaluate(
    model: Module,
    x: Any,
    y: Any,
    batch_size: int = 256,
    loss: Any = None,
    *,
    sample_weight: Any = None,
    metrics: Any = None,
    confusion: bool = False,
    distributed: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy over ``(x, y)``, in eval mode.

    Parameters
    ----------
    model : Module
    x, y : ndarray
    batch_size : int, default 256
    loss : loss module or str, optional
        Defaults to the one used by ``fit``, else cross-entropy for integer labels and MSE
        otherwise.
    sample_weight : ndarray of shape (N,), optional
        Weights the loss as :func:`fit` does (``sum_i w_i l_i / N``).
    metrics : list, optional
        Extra metrics as in :func:`fit` (``'top_k_accuracy'``, ...).
    confusion : bool, default False
        Also return ``'confusion'``: the ``(C, C)`` int64 confusion matrix (row = true
        class, column = predicted class) of a classifier (``CrossEntropyLoss`` with outputs
        (N, C); binary losses with one output: C = 2). Plot it with
        :func:`cnncore.viz.plot_confusion`.
    distributed : bool, default False
        Share the work among the ranks of ``mpirun -n K`` (every rank calls ``evaluate``
        with the same model and data, e.g. after ``fit(distributed=True)``): each rank
        evaluates a contiguous block of the batches and the per-batch sums are added in
        batch order, so every rank gets the result of a single-process ``evaluate``, bit
        for bit.

    Returns
    -------
    dict
        ``loss``, ``accuracy`` (NaN for non-classification losses), the extra metrics, and
        ``confusion`` when asked.
    """
    func = "evaluate"
    comm = None
    if check_bool(distributed, "distributed", func):
        from .. import distributed as dist_lib

        comm = dist_lib.world()
    return _evaluate(
        model,
        x,
        y,
        batch_size,
        loss,
        sample_weight=sample_weight,
        metrics=metrics,
        confusion=confusion,
        comm=comm,
    )


def _evaluate(
    model: Module,
    x: Any,
    y: Any,
    batch_size: int = 256,
    loss: Any = None,
    *,
    sample_weight: Any = None,
    metrics: Any = None,
    confusion: bool = False,
    comm: Any = None,
) -> dict[str, Any]:
    """:func:`evaluate`; with ``comm`` (a :class:`cnncore.distributed.Communicator`) on this
    rank's block of the batches, the sums reduced in batch order."""
    func = "evaluate"
    batch_size = check_int(batch_size, "batch_size", func, min_value=1)
    confusion = check_bool(confusion, "confusion", func)
    if loss is None:
        loss = model.loss_fn
    if loss is None:
        loss = "cross_entropy" if np.asarray(y).dtype.kind in "iu" else "mse"
    loss_fn = losses.resolve_loss(loss, func)
    extra_metrics = (
        list(metrics)
        if isinstance(metrics, list)
        and all(isinstance(m, metric_lib.TopKAccuracy) for m in metrics)
        else metric_lib.resolve_metrics(metrics, func)
    )
    x, y = _check_xy(model, x, y, func, loss_fn)
    sw = _check_sample_weight(sample_weight, len(x), "sample_weight", func)
    is_ce = isinstance(loss_fn, losses.CrossEntropyLoss)
    is_binary = isinstance(loss_fn, (losses.BCEWithLogitsLoss, losses.BCELoss))
    n = len(x)
    n_batches = -(-n // batch_size)
    if comm is None:
        mine: range = range(n_batches)
    else:
        from .. import distributed as dist_lib

        mine = dist_lib.owned_parts(n_batches, comm.size, comm.rank)
    # per batch: loss * batch length, hits, samples counted for accuracy, top-k counts
    rows = np.zeros((n_batches, 3 + len(extra_metrics)))
    was_training = model.training
    model.eval()
    cm: np.ndarray | None = None
    try:
        with _batch_loop():
            for bi in mine:
                s = slice(bi * batch_size, min(n, (bi + 1) * batch_size))
                out = model(x[s])
                nb = s.stop - s.start
                if extra_metrics and not (is_ce and out.ndim >= 2):
                    raise ValueError(
                        f"{func}(): top-k accuracy needs class scores of shape (N, C) and "
                        f"CrossEntropyLoss. Received: loss {type(loss_fn).__name__}"
                    )
                if sw is None:
                    rows[bi, 0] = float(loss_fn(out, y[s])) * nb
                else:
                    rows[bi, 0] = loss_fn.weighted(out, y[s], sw[s])[0] * nb
                hits = losses.count_correct(loss_fn, out, y[s])
                if hits is not None:
                    rows[bi, 1:3] = hits, nb
                for i, m in enumerate(extra_metrics):
                    rows[bi, 3 + i] = m.count(out, y[s])
                if confusion:
                    cm = _add_confusion(cm, loss_fn, is_ce, is_binary, out, y[s], func)
    finally:
        model.train(was_training)
    if comm is None:  # the sums in batch order (what sum_in_order does across ranks)
        total = np.zeros(rows.shape[1])
        for row in rows:
            total += row
    else:
        total = dist_lib.sum_in_order(comm, rows)
        if confusion:
            cm = _gather_confusion(comm, cm)
    result: dict[str, Any] = {
        "loss": float(total[0] / n),
        "accuracy": float(total[1] / total[2]) if total[2] else float("nan"),
    }
    for i, m in enumerate(extra_metrics):
        result[m.name] = float(total[3 + i] / n)
    if confusion:
        result["confusion"] = cm
    return result


def _gather_confusion(comm: Any, cm: np.ndarray | None) -> np.ndarray:
    """The sum of every rank's confusion matrix (None: a rank without batches)."""
    classes = int(comm.allgather(np.array([0 if cm is None else len(cm)], np.int64)).max())
    mine = np.zeros((classes, classes), np.int64)
    if cm is not None:
        mine[...] = cm
    return comm.allgather(mine).sum(axis=0)


def _add_confusion(
    cm: np.ndarray | None,
    loss_fn: Any,
    is_ce: bool,
    is_binary: bool,
    out: np.ndarray,
    y: np.ndarray,
    func: str,
) -> np.ndarray:
    """``cm`` plus the confusion counts of one batch."""
    if is_ce and out.ndim == 2:
        c = out.shape[1]
        pred = out.argmax(axis=1)
        true = y if y.dtype.kind in "iu" else y.argmax(axis=1)
        keep = true != loss_fn.ignore_index if y.dtype.kind in "iu" else slice(None)
        true, pred = true[keep], pred[keep]
    elif is_binary and out.reshape(len(out), -1).shape[1] == 1:
        c = 2
        threshold = 0.0 if isinstance(loss_fn, losses.BCEWithLogitsLoss) else 0.5
        pred = (out.reshape(-1) > threshold).astype(np.int64)
        true = (y.reshape(-1) > 0.5).astype(np.int64)
    else:
        raise ValueError(
            f"{func}(): confusion=True needs a classifier: CrossEntropyLoss with outputs of "
            f"shape (N, C), or a binary loss with one output. Received: loss "
            f"{type(loss_fn).__name__}, outputs of shape {out.shape}"
        )
    batch = metric_lib.confusion_matrix(true, pred, c)
    return batch if cm is None else cm + batch
