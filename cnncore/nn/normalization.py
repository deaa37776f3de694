"""Normalization layers: :class:`BatchNorm1d`, :class:`BatchNorm2d` (PyTorch semantics,
computed here with NumPy reductions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import (
    as_float_array,
    check_bool,
    check_hyperparameter,
    check_input_shape,
    check_int,
)
from .module import (
    Module,
    accumulate,
    check_dtype,
    config_itemsize,
    config_positive_int,
    grad_like,
)

__all__ = ["BatchNorm1d", "BatchNorm2d"]


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
        dtype: Any = np.float32,
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
        self._xhat: np.ndarray | None = None
        self._invstd: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

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

    def forward(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "input", type(self).__name__)
        self._axes_and_view(x)
        c = self.num_features
        # (N, C, L): every reduction runs along contiguous rows
        xr = x.reshape(x.shape[0], c, math.prod(x.shape[2:]))
        m = xr.shape[0] * xr.shape[2]
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            if m <= 1 and self.training:
                raise ValueError(
                    f"{type(self).__name__}(): expected more than 1 value per channel when "
                    f"training. Received: input with shape {x.shape}"
                )
            # two passes (no cancellation): the mean, then the mean square deviation
            mean = (xr.sum(axis=2).sum(axis=0) / max(m, 1)).astype(x.dtype, copy=False)
            xc = np.subtract(xr, mean[:, None])
            sq = np.square(xc)
            var = (sq.sum(axis=2).sum(axis=0) / max(m, 1)).astype(x.dtype, copy=False)
            if self.training and self.track_running_stats:
                nbt = self._buffers["num_batches_tracked"]
                nbt += 1
                mom = 1.0 / float(nbt) if self.momentum is None else self.momentum
                rm, rv = self._buffers["running_mean"], self._buffers["running_var"]
                rm *= 1 - mom
                rm += mom * mean
                rv *= 1 - mom
                rv += mom * var * (m / max(m - 1, 1))
        else:
            mean = self._buffers["running_mean"]
            var = self._buffers["running_var"]
            xc = np.subtract(xr, mean[:, None])
            sq = None
        invstd = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype, copy=False)
        xhat = np.multiply(xc, invstd[:, None], out=xc)
        if self.training:
            self._xhat, self._invstd, self._shape = xhat, invstd, x.shape
        else:
            self._xhat = self._invstd = self._shape = None
        if not self.affine:
            return xhat.reshape(x.shape)
        y = np.multiply(xhat, self.weight.data[:, None], out=sq)
        y += self.bias.data[:, None]
        return y.reshape(x.shape)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        xhat = self._cached("_xhat")  # (N, C, L)
        invstd = self._invstd
        shape = self._shape
        g = grad_like(grad_output, shape, type(self).__name__).reshape(xhat.shape)
        m = xhat.shape[0] * xhat.shape[2]
        db = g.sum(axis=2).sum(axis=0)
        tmp = np.multiply(g, xhat)
        dw = tmp.sum(axis=2).sum(axis=0)
        if self.affine:
            accumulate(self.bias.grad, db)
            accumulate(self.weight.grad, dw)
        if not input_grad:
            return None
        # dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)), per channel
        np.multiply(xhat, (dw / m)[:, None], out=tmp)
        np.subtract(g, tmp, out=tmp)
        k = invstd * self.weight.data if self.affine else invstd
        tmp *= k[:, None]
        tmp -= (k * (db / m))[:, None]
        return tmp.reshape(shape)

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
