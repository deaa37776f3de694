"""Fully connected layers: :class:`Linear` (the work is :func:`cnncore.linear` and its
backward functions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._config import blas_single_thread
from .._typing import ArrayLike, DTypeLike, RNGLike
from .._validation import as_float_array, check_bool, check_input_shape, check_int, check_numel
from ..ops.linear import _linear_backward_pair
from . import init
from .inference import linear_layer_kernel
from .module import (
    Module,
    accumulate,
    check_dtype,
    config_itemsize,
    config_positive_int,
    grad_like,
    prepared_arrays,
    prepared_key,
)

__all__ = ["Linear"]


def _prepared_call(x: np.ndarray, layer: Linear) -> Any:
    """The call of a Linear layer on arrays like ``x`` and its parameters now, whose checks
    :func:`cnncore.linear` has just passed: ``call(x, weight, bias) -> y`` with ``key``
    (the arrays' shapes and dtype, for :func:`~cnncore.nn.module.prepared_arrays`), running
    :func:`cnncore.ops.linear.prepare_linear`'s kernel call (bit-identical to ``linear``)
    on a new output (on one thread below :data:`cnncore.nn.inference.SMALL_MACS`
    multiply-adds); None for arrays not C-contiguous of one dtype (the checked path)."""
    key = prepared_key(x, layer)
    if key is None:
        return None
    if layer._call is not None and layer._call.key == key:
        return layer._call
    run, out_shape = linear_layer_kernel(layer, key[0])
    dtype = key[2]
    cap = blas_single_thread()
    empty = np.empty

    def call(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        y = empty(out_shape, dtype)
        with cap:
            run(x, w, b, y)
        return y

    call.key = key  # type: ignore[attr-defined]
    return call


class Linear(Module):
    """Fully connected layer: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : numpy Generator, int or None
        Seeds PyTorch's default initialization, ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Notes
    -----
    Input ``(*, in_features)``, output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        rng: RNGLike = None,
    ) -> None:
        super().__init__()
        name = "Linear"
        self.in_features = check_int(in_features, "in_features", name, min_value=1)
        self.out_features = check_int(out_features, "out_features", name, min_value=1)
        self.dtype = check_dtype(dtype, name)
        check_numel((self.out_features, self.in_features), "weight", "Linear", self.dtype.itemsize)
        weight = np.empty((self.out_features, self.in_features), self.dtype)
        bias = check_bool(bias, "bias", "Linear")
        b = np.empty(self.out_features, self.dtype) if bias else None
        init.default_conv_linear_init_(weight, b, rng)
        self.register_parameter("weight", weight)
        self.bias = self.register_parameter("bias", b) if bias else None
        self._x: np.ndarray | None = None
        self._call: Any = None  # the last input shape's prepared call (see _prepared_call)

    def forward(self, x: ArrayLike) -> np.ndarray:
        call = self._call
        if call is not None:
            arrays = prepared_arrays(self, x, call.key)
            if arrays is not None:
                self._x = x if self.training else None
                return call(*arrays)
        x = as_float_array(x, "input", "Linear")
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x if self.training else None
        self._call = _prepared_call(x, self)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        grad_output = grad_like(grad_output, (*x.shape[:-1], self.out_features), "Linear")
        w = self.weight.data
        if (
            x.ndim == 2
            and type(x) is np.ndarray
            and x.dtype == w.dtype == grad_output.dtype
            and x.flags.c_contiguous
            and grad_output.flags.c_contiguous
            and w.flags.c_contiguous
        ):
            # both products in one parallel region (the same bits as the two calls below)
            dw, dx = _linear_backward_pair(grad_output, x, w, input_grad)
            accumulate(self.weight.grad, dw)
            if self.bias is not None:
                accumulate(self.bias.grad, F.linear_backward_bias(grad_output))
            return dx
        accumulate(self.weight.grad, F.linear_backward_weight(grad_output, x))
        if self.bias is not None:
            accumulate(self.bias.grad, F.linear_backward_bias(grad_output))
        if not input_grad:
            return None
        return F.linear_backward_input(grad_output, self.weight.data)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        check_input_shape(
            shape, "Linear", (len(shape) or 1,), dim=-1, size=self.in_features, what="features"
        )
        return (*shape[:-1], self.out_features)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        i = config_positive_int(config.get("in_features"))
        o = config_positive_int(config.get("out_features"))
        if i is None or o is None:
            return 0
        return (o * i + (o if config.get("bias", True) else 0)) * config_itemsize(config)
