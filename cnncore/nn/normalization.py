"""Normalization layers: :class:`BatchNorm1d`, :class:`BatchNorm2d` (PyTorch semantics, on
:func:`cnncore.batch_norm`'s kernels), :class:`SyncBatchNorm` (BatchNorm over the
global batch of a distributed ``fit``), and :class:`GroupNorm`, :class:`LayerNorm`,
:class:`InstanceNorm2d` (thin layers over :func:`cnncore.group_norm`,
:func:`cnncore.layer_norm` and :func:`cnncore.instance_norm`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import functional as F
from .._typing import ArrayLike, DTypeLike
from .._validation import (
    add_batch_axis,
    as_float_array,
    check_bool,
    check_hyperparameter,
    check_input_shape,
    check_int,
    check_numel,
)
from ..distributed import sync_context, tree_reduce, tree_sum
from ..ops.norm import _batch_backward, _batch_forward, _normalized_shape
from .module import (
    Module,
    accumulate,
    check_dtype,
    config_itemsize,
    config_positive_int,
    grad_like,
)

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "SyncBatchNorm",
    "GroupNorm",
    "LayerNorm",
    "InstanceNorm2d",
]


class _BatchNorm(Module, register=False):
    _expected_ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(num_features, "num_features", name, min_value=1)
        self.eps = check_hyperparameter(eps, "eps", name, "a positive number", lambda v: v > 0)
        self.momentum = (
            None
            if momentum is None
            else check_hyperparameter(
                momentum, "momentum", name, "in [0, 1] or None", lambda v: 0.0 <= v <= 1.0
            )
        )
        self.affine = check_bool(affine, "affine", name)
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats", name)
        self.dtype = check_dtype(dtype, name)
        c = self.num_features
        if self.affine:
            self.register_parameter("weight", np.ones(c, self.dtype))
            self.register_parameter("bias", np.zeros(c, self.dtype))
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, self.dtype))
            self.register_buffer("running_var", np.ones(c, self.dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        # the forward's (N, C, L) input and float64 statistics, kept for backward
        self._x: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._var: np.ndarray | None = None
        self._count = 0
        self._shape: tuple[int, ...] | None = None
        # (weight, bias) copies of a forward with a ReLU fused (see _forward_relu), else None:
        # the backward recomputes the ReLU's mask from them
        self._relu_coef: tuple[np.ndarray | None, np.ndarray | None] | None = None

    def _axes_and_view(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        name = type(self).__name__
        if x.ndim not in self._expected_ndims or x.shape[1] != self.num_features:
            dims = " or ".join(f"{d}-D" for d in self._expected_ndims)
            raise ValueError(
                f"{name}(): expected a {dims} input with {self.num_features} channels in "
                f"dimension 1. Received: input with shape {x.shape}"
            )
        axes = (0, *range(2, x.ndim))
        view = (1, self.num_features) + (1,) * (x.ndim - 2)
        return axes, view

    def forward(self, x: ArrayLike) -> np.ndarray:
        return self._forward(x, False)

    def _forward_relu(self, x: ArrayLike) -> np.ndarray:
        """``relu(self.forward(x))`` in one pass over the data, bit-identical to the two
        calls; in training, the following :meth:`backward` then takes the gradient w.r.t.
        the ReLU's output and applies the ReLU's mask in its own pass.  Graph models call
        it for a batch norm whose output only a ReLU reads (:class:`cnncore.nn.Model`)."""
        return self._forward(x, True)

    def _forward_add(self, x: ArrayLike, residual: Any, relu: bool) -> np.ndarray | None:
        """``self.forward(x) + residual`` (then ``relu``'d with ``relu``) in one pass over
        the data, bit-identical to the separate calls (the residual is added to the rounded
        batch norm output, then the ReLU applied); None, nothing done, unless ``x`` and
        ``residual`` are float32/float64 arrays of the same shape and dtype and
        ``residual`` is C-contiguous.  The following :meth:`backward` takes the gradient
        w.r.t. the batch norm's own output (the ReLU's mask applied by the ReLU's backward).
        Graph models call it for a batch norm whose output only an Add reads
        (:class:`cnncore.nn.Model`)."""
        if not (
            isinstance(x, np.ndarray)
            and isinstance(residual, np.ndarray)
            and x.dtype in (np.float32, np.float64)
            and residual.dtype == x.dtype
            and residual.shape == x.shape
            and residual.flags.c_contiguous
        ):
            return None
        return self._forward(x, relu, residual)

    def _forward(self, x: ArrayLike, relu: bool, residual: np.ndarray | None = None) -> np.ndarray:
        x = as_float_array(x, "input", type(self).__name__)
        self._axes_and_view(x)
        # (N, C, L): the kernels' view of the input
        xr = x.reshape(x.shape[0], self.num_features, math.prod(x.shape[2:]))
        m = xr.shape[0] * xr.shape[2]
        w, b = self._affine_params(x.dtype)
        mean = var = None
        if self.training or not self.track_running_stats:
            self._check_count(m, x.shape)
            stats = self._batch_stats(xr)
            if stats is not None:
                mean, var, m = stats
        else:
            mean = self._buffers["running_mean"].astype(np.float64)
            var = self._buffers["running_var"].astype(np.float64)
        if xr.size:
            res = None if residual is None else residual.reshape(xr.shape)
            y, mean, var = _batch_forward(xr, w, b, self.eps, mean, var, relu, res)
        else:
            y = np.empty_like(xr)
        if self.training and self.track_running_stats and m:
            self._update_running(mean, var, m)
        if self.training:
            self._x, self._mean, self._var, self._count = xr, mean, var, m
            self._shape = x.shape
            self._relu_coef = (
                (None if w is None else w.copy(), None if b is None else b.copy())
                if relu and residual is None
                else None
            )
        else:
            self._x = self._mean = self._var = self._shape = self._relu_coef = None
        return y.reshape(x.shape)

    def _affine_params(self, dtype: np.dtype) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.affine:
            return None, None
        return self.weight.data.astype(dtype, copy=False), self.bias.data.astype(dtype, copy=False)

    def _check_count(self, m: int, shape: tuple[int, ...]) -> None:
        if m <= 1 and self.training:
            raise ValueError(
                f"{type(self).__name__}(): expected more than 1 value per channel when "
                f"training. Received: input with shape {shape}"
            )

    def _batch_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The statistics the ``(N, C, L)`` input is normalized with: None -- this input's
        own, computed by the normalizing kernel in the same pass -- or ``(mean, var,
        count)`` per channel (float64, biased variance).  A subclass that reduces the
        statistics over a larger batch returns them (``ops.norm._batch_stats`` gives this
        input's) and overrides :meth:`_batch_sums` to match."""
        return None

    def _update_running(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        """PyTorch's update: momentum (or the cumulative average), unbiased variance."""
        nbt = self._buffers["num_batches_tracked"]
        nbt += 1
        mom = 1.0 / float(nbt) if self.momentum is None else self.momentum
        rm, rv = self._buffers["running_mean"], self._buffers["running_var"]
        rm *= 1 - mom
        rm += mom * mean
        rv *= 1 - mom
        rv += mom * var * (m / max(m - 1, 1))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")  # (N, C, L)
        shape = self._shape
        g = grad_like(grad_output, shape, type(self).__name__)
        g = g.astype(x.dtype, copy=False).reshape(x.shape)
        if x.size == 0:
            return np.zeros(shape, x.dtype) if input_grad else None
        mean, var, eps = self._mean, self._var, self.eps
        w = self._affine_params(x.dtype)[0]
        split = type(self)._batch_sums is not _BatchNorm._batch_sums
        rc = self._relu_coef  # a fused ReLU: its mask recomputed in the kernel
        gx, db, dw = _batch_backward(
            g, x, w, mean, var, eps, True, None, input_grad and not split, rc
        )
        if self.affine:
            accumulate(self.bias.grad, db)
            accumulate(self.weight.grad, dw)
        if input_grad and split:
            sums = self._batch_sums(db, dw, self._count)
            gx = _batch_backward(g, x, w, mean, var, eps, True, sums, True, rc)[0]
        return None if gx is None else gx.reshape(shape)

    def _batch_sums(
        self, db: np.ndarray, dw: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The per-channel sums of ``g`` and ``g * xhat`` and the count over the batch the
        forward normalized with (this input's own; a subclass: a larger batch's).  When a
        subclass overrides it, backward computes the sums first, then the input gradient
        from what this returns (two passes instead of one)."""
        return db, dw, m

    def _batch_sums(
        self, db: np.ndarray, dw: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The per-channel sums of ``g`` and ``g * xhat`` and the count over the batch the
        forward normalized with (this input's own; SyncBatchNorm: the global batch)."""
        return db, dw, m

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return check_input_shape(
            input_shape, type(self).__name__, self._expected_ndims, size=self.num_features
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        c = config_positive_int(config.get("num_features"))
        if c is None:
            return 0
        itemsize = config_itemsize(config)
        total = 2 * c * itemsize if config.get("affine", True) else 0
        if config.get("track_running_stats", True):
            total += 2 * c * itemsize + 8  # running_mean, running_var, num_batches_tracked
        return total


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` inputs (PyTorch semantics:
    biased batch variance to normalize, unbiased for the running estimate)."""

    _expected_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)`` inputs, per channel (PyTorch semantics)."""

    _expected_ndims = (4,)


class SyncBatchNorm(_BatchNorm):
    """Batch normalization with the statistics of the whole global batch in a distributed
    ``fit`` (PyTorch's ``torch.nn.SyncBatchNorm``); elsewhere exactly
    :class:`BatchNorm2d` / :class:`BatchNorm1d`.

    Parameters
    ----------
    num_features : int
        Channels C of the ``(N, C, ...)`` input (2-D to 5-D, as PyTorch's).
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Of the running statistics; None: their cumulative average.
    affine : bool, default True
        Learn a per-channel ``weight`` and ``bias``.
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` (used in eval mode).
    dtype : float32 or float64

    Notes
    -----
    In the training steps of ``fit(..., distributed=True)`` (run under ``mpirun -n K``), the
    mean and the (biased) variance are those of the global batch: each part of the batch
    contributes its count, mean and sum of squared deviations, and the parts' rows are merged
    with Chan's pairwise formula by :func:`cnncore.distributed.tree_reduce`'s fixed tree.
    Backward reduces the per-channel sums of the output gradient and of gradient x
    normalized input over the global batch the same way, so the input gradient is that of
    one BatchNorm over the whole batch, and ``weight.grad``/``bias.grad`` receive each part's
    share.  The running statistics are updated once per step with the global mean and the
    unbiased global variance.  Every part sees the same numbers whatever the process count,
    so training is bit-identical for any K (see :mod:`cnncore.distributed`).

    Outside a distributed step (a plain ``fit``, a manual step, eval mode) it computes
    exactly what :class:`BatchNorm2d` (or :class:`BatchNorm1d`) computes, bit for bit.  Its
    parameters and buffers, and so its ``state_dict`` keys, are BatchNorm's (PyTorch's too).

    See Also
    --------
    BatchNorm2d : statistics of the input it is given (per part in a distributed fit).
    SyncBatchNorm.convert_sync_batchnorm : turn a model's BatchNorm layers into this one.
    """

    _expected_ndims = (2, 3, 4, 5)
    #: Read by ``fit(distributed=True)``: the parts of a rank must run in lockstep.
    global_batch_statistics = True

    def _check_count(self, m: int, shape: tuple[int, ...]) -> None:
        # in a distributed step the count that matters is the global batch's (checked in
        # _batch_stats); a part may hold one sample or none
        if sync_context() is None or not self.training:
            super()._check_count(m, shape)

    def _batch_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
        lockstep = sync_context()
        self._sync_count: int | None = None
        if lockstep is None or not self.training:
            return None  # BatchNorm's own statistics, bit for bit
        c = self.num_features
        m = x.shape[0] * x.shape[2]
        # this part's count, mean and sum of squared deviations (float64), merged over the
        # global batch's parts by one fixed tree
        mean_p = x.sum(axis=2, dtype=np.float64).sum(axis=0) / max(m, 1)
        dev = np.subtract(x, mean_p[:, None], dtype=np.float64)
        m2_p = np.square(dev, out=dev).sum(axis=2).sum(axis=0)
        rows = lockstep.exchange(np.concatenate(([float(m)], mean_p, m2_p)))
        total = tree_reduce(list(rows), _merge_moments)
        n = int(total[0])
        if n <= 1:
            name = type(self).__name__
            raise ValueError(
                f"{name}(): expected more than 1 value per channel in the global batch when "
                f"training. Received: {n} value(s) per channel (this part: input with "
                f"{x.shape[0]} sample(s))"
            )
        self._sync_count = n
        return total[1 : 1 + c].copy(), total[1 + c :] / n, n

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        if x.size == 0 and self.__dict__.get("_sync_count") is not None:
            # an empty part still takes its turn in the global sums
            zeros = np.zeros(self.num_features, x.dtype)
            self._batch_sums(zeros, zeros, 0)
            return np.zeros(self._shape, x.dtype) if input_grad else None
        return super().backward(grad_output, input_grad)

    def _batch_sums(
        self, db: np.ndarray, dw: np.ndarray, m: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        n = self.__dict__.get("_sync_count")
        if n is None:
            return db, dw, m
        lockstep = sync_context()
        if lockstep is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward(): the forward normalized with the statistics "
                "of a distributed step's global batch; call backward in the same step"
            )
        c = self.num_features
        total = tree_sum(list(lockstep.exchange(np.concatenate((db, dw)))))
        return total[:c].astype(db.dtype), total[c:].astype(dw.dtype), n

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """Turn every :class:`BatchNorm1d`/:class:`BatchNorm2d` in ``module`` (itself
        included) into a SyncBatchNorm, in place, and return ``module`` (PyTorch's
        ``nn.SyncBatchNorm.convert_sync_batchnorm``).

        The layers keep their names, parameters (so an optimizer built before still
        updates them), buffers and settings; only their class changes, so graph models and
        containers need no rebuilding.

        Examples
        --------
        >>> from cnncore import models, nn
        >>> model = nn.SyncBatchNorm.convert_sync_batchnorm(models.resnet20(rng=0))
        >>> type(model.get_layer("bn1")).__name__
        'SyncBatchNorm'
        """
        if not isinstance(module, Module):
            raise TypeError(
                "SyncBatchNorm.convert_sync_batchnorm(): module must be a cnncore.nn.Module. "
                f"Received: module of type {type(module).__name__}"
            )
        seen: set[int] = set()
        stack = [module]
        while stack:
            m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            if isinstance(m, (BatchNorm1d, BatchNorm2d)) and not isinstance(m, cls):
                m.__class__ = cls
                m._sync_count = None
            stack.extend(m.children())
        return module


def _merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chan et al.'s pairwise merge of two rows ``[count, mean (C), sum of squared
    deviations (C)]``."""
    na, nb = a[0], b[0]
    if nb == 0:
        return a
    if na == 0:
        return b
    c = (len(a) - 1) // 2
    n = na + nb
    delta = b[1 : 1 + c] - a[1 : 1 + c]
    out = np.empty_like(a)
    out[0] = n
    out[1 : 1 + c] = a[1 : 1 + c] + delta * (nb / n)
    out[1 + c :] = a[1 + c :] + b[1 + c :] + delta * delta * (na * nb / n)
    return out


def _eps(eps: Any, name: str) -> float:
    return check_hyperparameter(
        eps, "eps", name, "a positive number", lambda v: v > 0 and math.isfinite(v)
    )


def _config_int_list(value: Any) -> list[int] | None:
    """``value`` as a list of positive ints (a config's ``normalized_shape``), else None."""
    if config_positive_int(value) is not None:
        return [value]
    if isinstance(value, list) and value and all(config_positive_int(v) for v in value):
        return value
    return None


class GroupNorm(Module):
    """Group normalization (see :func:`cnncore.group_norm`), PyTorch's arguments.

    Parameters
    ----------
    num_groups : int
        Must divide ``num_channels``.
    num_channels : int
    eps : float, default 1e-5
    affine : bool, default True
        Learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
    dtype : float32 or float64, default float32

    Notes
    -----
    Input ``(N, C, *)`` with ``C = num_channels``; output of the same shape.

    See Also
    --------
    cnncore.group_norm, cnncore.group_norm_backward
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = "GroupNorm"
        self.num_groups = check_int(num_groups, "num_groups", name, min_value=1)
        self.num_channels = check_int(num_channels, "num_channels", name, min_value=1)
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"{name}(): num_channels must be divisible by num_groups. "
                f"Received: num_groups={num_groups}, num_channels={num_channels}"
            )
        self.eps = _eps(eps, name)
        self.affine = check_bool(affine, "affine", name)
        self.dtype = check_dtype(dtype, name)
        if self.affine:
            self.register_parameter("weight", np.ones(self.num_channels, self.dtype))
            self.register_parameter("bias", np.zeros(self.num_channels, self.dtype))
        self._x: np.ndarray | None = None
        # the forward's statistics (mean, rstd), reused by backward (as torch saves them)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    def _check(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "input", "GroupNorm")
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm(): expected an input (N, C, *) with C = num_channels = "
                f"{self.num_channels}. Received: input with shape {x.shape}"
            )
        return x

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = self._check(x)
        w, b = (self.weight.data, self.bias.data) if self.affine else (None, None)
        if not self.training:
            self._x = self._stats = None
            return F.group_norm(x, self.num_groups, w, b, self.eps)
        y, mean, rstd = F.group_norm(x, self.num_groups, w, b, self.eps, return_stats=True)
        self._x, self._stats = x, (mean, rstd)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        w = self.weight.data if self.affine else None
        mean, rstd = self._stats if self._stats is not None else (None, None)
        gx, gw, gb = F.group_norm_backward(
            grad_output, x, self.num_groups, w, self.eps, mean=mean, rstd=rstd
        )
        if self.affine:
            accumulate(self.weight.grad, gw)
            accumulate(self.bias.grad, gb)
        return gx if input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {
            "num_groups": self.num_groups,
            "num_channels": self.num_channels,
            "eps": self.eps,
            "affine": self.affine,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        c = config_positive_int(config.get("num_channels"))
        if c is None or not config.get("affine", True):
            return 0
        return 2 * c * config_itemsize(config)


class LayerNorm(Module):
    """Layer normalization over the trailing ``normalized_shape`` (see
    :func:`cnncore.layer_norm`), PyTorch's arguments.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learnable ``weight`` (ones) of ``normalized_shape``, and ``bias`` (zeros) unless
        ``bias=False``.
    bias : bool, default True
    dtype : float32 or float64, default float32

    Notes
    -----
    Input ``(*, *normalized_shape)``; output of the same shape.

    See Also
    --------
    cnncore.layer_norm, cnncore.layer_norm_backward
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = "LayerNorm"
        self.normalized_shape = _normalized_shape(name, normalized_shape)
        if 0 in self.normalized_shape:
            raise ValueError(
                f"{name}(): normalized_shape must contain positive sizes. "
                f"Received: normalized_shape={normalized_shape!r}"
            )
        check_numel(self.normalized_shape, "normalized_shape", name)
        self.eps = _eps(eps, name)
        self.elementwise_affine = check_bool(elementwise_affine, "elementwise_affine", name)
        use_bias = check_bool(bias, "bias", name)
        self.dtype = check_dtype(dtype, name)
        shape = self.normalized_shape
        self.weight = self.bias = None
        if self.elementwise_affine:
            check_numel(shape, "normalized_shape", name, self.dtype.itemsize * 2)
            self.register_parameter("weight", np.ones(shape, self.dtype))
            if use_bias:
                self.register_parameter("bias", np.zeros(shape, self.dtype))
        self._x: np.ndarray | None = None
        # the forward's statistics (mean, rstd), reused by backward (as torch saves them)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x, "input", "LayerNorm")
        w = None if self.weight is None else self.weight.data
        b = None if self.bias is None else self.bias.data
        if not self.training:
            self._x = self._stats = None
            return F.layer_norm(x, self.normalized_shape, w, b, self.eps)
        y, mean, rstd = F.layer_norm(x, self.normalized_shape, w, b, self.eps, return_stats=True)
        self._x, self._stats = x, (mean, rstd)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        w = None if self.weight is None else self.weight.data
        mean, rstd = self._stats if self._stats is not None else (None, None)
        gx, gw, gb = F.layer_norm_backward(
            grad_output, x, self.normalized_shape, w, self.eps, mean=mean, rstd=rstd
        )
        if self.weight is not None:
            accumulate(self.weight.grad, gw)
        if self.bias is not None:
            accumulate(self.bias.grad, gb)
        return gx if input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.bias is not None or not self.elementwise_affine,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        shape = _config_int_list(config.get("normalized_shape"))
        if shape is None or not config.get("elementwise_affine", True):
            return 0
        n = int(np.prod(shape, dtype=object))
        return n * config_itemsize(config) * (2 if config.get("bias", True) else 1)


class InstanceNorm2d(Module):
    """Instance normalization of ``(N, C, H, W)`` or unbatched ``(C, H, W)`` inputs (see
    :func:`cnncore.instance_norm`), PyTorch's arguments and defaults.

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Of the running statistics; None, as in PyTorch, leaves them unchanged.
    affine : bool, default False
        Learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default False
        Keep ``running_mean`` / ``running_var`` (updated in training, used in eval mode).
    dtype : float32 or float64, default float32

    Notes
    -----
    Without ``affine`` or ``track_running_stats``, the input's channel count need not be
    ``num_features`` (PyTorch only warns).

    See Also
    --------
    cnncore.instance_norm, cnncore.instance_norm_backward
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = "InstanceNorm2d"
        self.num_features = check_int(num_features, "num_features", name, min_value=1)
        self.eps = _eps(eps, name)
        self.momentum = (
            None
            if momentum is None
            else check_hyperparameter(
                momentum, "momentum", name, "in [0, 1] or None", lambda v: 0.0 <= v <= 1.0
            )
        )
        self.affine = check_bool(affine, "affine", name)
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats", name)
        self.dtype = check_dtype(dtype, name)
        c = self.num_features
        if self.affine:
            self.register_parameter("weight", np.ones(c, self.dtype))
            self.register_parameter("bias", np.zeros(c, self.dtype))
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, self.dtype))
            self.register_buffer("running_var", np.ones(c, self.dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self._x: np.ndarray | None = None
        self._use_input_stats = True

    def _batched(self, x: Any) -> tuple[np.ndarray, bool]:
        """``(x with a batch axis, whether x had none)``."""
        xb, unbatched = add_batch_axis(x, "input", "InstanceNorm2d", "(N, C, H, W)")
        if xb.shape[1] != self.num_features and (self.affine or self.track_running_stats):
            raise ValueError(
                f"InstanceNorm2d(): expected {self.num_features} channels (num_features) in "
                f"the channel dimension. Received: input with shape {xb.shape[unbatched:]}"
            )
        return xb, unbatched

    def _running(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.track_running_stats:
            return None, None
        return self._buffers["running_mean"], self._buffers["running_var"]

    def forward(self, x: ArrayLike) -> np.ndarray:
        xb, unbatched = self._batched(x)
        rm, rv = self._running()
        use = self.training or not self.track_running_stats
        w, b = (self.weight.data, self.bias.data) if self.affine else (None, None)
        momentum = 0.0 if self.momentum is None else self.momentum
        y = F.instance_norm(xb, rm, rv, w, b, use, momentum, self.eps)
        self._x = xb if self.training else None
        self._use_input_stats = use
        return y[0] if unbatched else y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        g = as_float_array(grad_output, "grad_output", "InstanceNorm2d.backward")
        unbatched = g.ndim == 3
        rm, rv = self._running()
        w = self.weight.data if self.affine else None
        gx, gw, gb = F.instance_norm_backward(
            g[None] if unbatched else g, x, rm, rv, w, self._use_input_stats, self.eps
        )
        if self.affine:
            accumulate(self.weight.grad, gw)
            accumulate(self.bias.grad, gb)
        if not input_grad:
            return None
        return gx[0] if unbatched else gx

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        c = config_positive_int(config.get("num_features"))
        if c is None:
            return 0
        itemsize = config_itemsize(config)
        total = 2 * c * itemsize if config.get("affine", False) else 0
        if config.get("track_running_stats", False):
            total += 2 * c * itemsize + 8
        return total
