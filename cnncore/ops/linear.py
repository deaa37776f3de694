"""Fully connected layers: linear and its gradients.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._callcache import memoize_checks
from .._config import blas_single_thread, get_num_threads, threads_for, threads_for_macs
from .._typing import ArrayLike
from .._validation import (
    as_float_array,
    check_numel,
    check_same_dtype,
    float_operands,
)
from . import _linear
from ._common import check_blas_dims
from .conv import _conv  # the bias gradient is conv2d_backward_bias on 1x1 "images"

__all__ = [
    "linear",
    "linear_backward_input",
    "linear_backward_weight",
    "linear_backward_bias",
]


def _linear_rows(func: str, a: np.ndarray, name: str, features: int, what: str) -> np.ndarray:
    if a.ndim < 1 or a.shape[-1] != features:
        raise ValueError(
            f"{func}(): the last dimension of {name} must be {what} = {features}. "
            f"Received: {name} with shape {a.shape}"
        )
    return a.reshape(math.prod(a.shape[:-1]), features)


def linear(x: ArrayLike, weight: ArrayLike, bias: ArrayLike = None) -> np.ndarray:
    """Affine map of the last dimension: ``y = x @ weight.T + bias``.

    Same as :func:`torch.nn.functional.linear`.

    Parameters
    ----------
    x : array_like of shape (..., in_features)
    weight : array_like of shape (out_features, in_features)
    bias : array_like of shape (out_features,), optional

    Returns
    -------
    y : ndarray of shape (..., out_features)

    Notes
    -----
    Computed as single-threaded BLAS GEMMs on fixed blocks of 32 rows, run in parallel with
    the kernels' OpenMP threads (bit-identical for any thread count).

    See Also
    --------
    linear_backward_input, linear_backward_weight, linear_backward_bias
    cnncore.nn.Linear
    """
    func = "linear"
    x, weight, bias, dtype = float_operands(
        func, x, weight, bias, w_ndim=2, w_text="a 2-D array (out_features, in_features)"
    )
    rows, out_shape = _linear_setup(
        func, x.shape, weight.shape, None if bias is None else bias.shape
    )
    out_f, in_f = weight.shape
    y = np.empty((rows, out_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_forward(
            x if x.ndim == 2 else x.reshape(rows, in_f),
            weight,
            bias,
            y,
            threads_for_macs(rows * in_f * out_f),
        )
    return y if x.ndim == 2 else y.reshape(out_shape)


@memoize_checks
def _linear_setup(
    func: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, int],
    b_shape: tuple[int, ...] | None,
) -> tuple[int, tuple[int, ...]]:
    """The shape checks of :func:`linear` (done once per shapes): ``(rows, out_shape)``."""
    out_f, in_f = w_shape
    if b_shape is not None and b_shape != (out_f,):
        raise ValueError(
            f"{func}(): bias must have shape (out_features,) = ({out_f},). "
            f"Received: bias with shape {b_shape}"
        )
    if len(x_shape) < 1 or x_shape[-1] != in_f:
        raise ValueError(
            f"{func}(): the last dimension of x must be in_features (weight.shape[1]) = "
            f"{in_f}. Received: x with shape {x_shape}"
        )
    out_shape = (*x_shape[:-1], out_f)
    check_numel(out_shape, "output", func)
    check_blas_dims(
        func,
        lambda: f"x with shape {x_shape}, weight with shape {w_shape}",
        in_features=in_f,
        out_features=out_f,
    )
    return math.prod(x_shape[:-1]), out_shape


def linear_backward_input(grad_output: ArrayLike, weight: ArrayLike) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``x``: ``grad_output @ weight``.

    Parameters
    ----------
    grad_output : array_like of shape (..., out_features)
    weight : array_like of shape (out_features, in_features)

    Returns
    -------
    grad_x : ndarray of shape (..., in_features)

    See Also
    --------
    linear, cnncore.nn.Linear
    """
    func = "linear_backward_input"
    grad_output = as_float_array(grad_output, "grad_output", func)
    weight = as_float_array(
        weight, "weight", func, ndim=2, ndim_text="a 2-D array (out_features, in_features)"
    )
    dtype = check_same_dtype(func, grad_output=grad_output, weight=weight)
    out_f, in_f = weight.shape
    g2 = _linear_rows(func, grad_output, "grad_output", out_f, "out_features (weight.shape[0])")
    check_numel((*grad_output.shape[:-1], in_f), "output", func, grad_output.itemsize)
    check_blas_dims(
        func,
        lambda: f"grad_output with shape {grad_output.shape}, weight with shape {weight.shape}",
        in_features=in_f,
        out_features=out_f,
    )
    dx = np.empty((g2.shape[0], in_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_backward_input(g2, weight, dx, threads_for_macs(g2.shape[0] * in_f * out_f))
    return dx.reshape(*grad_output.shape[:-1], in_f)


def linear_backward_weight(grad_output: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``weight``: ``grad_output.T @ x`` over all
    leading dimensions.

    Parameters
    ----------
    grad_output : array_like of shape (..., out_features)
    x : array_like of shape (..., in_features)
        The forward input; the leading dimensions must match ``grad_output``'s.

    Returns
    -------
    grad_weight : ndarray of shape (out_features, in_features)

    See Also
    --------
    linear, cnncore.nn.Linear
    """
    func = "linear_backward_weight"
    grad_output = as_float_array(grad_output, "grad_output", func)
    x = as_float_array(x, "x", func)
    dtype = check_same_dtype(func, grad_output=grad_output, x=x)
    if grad_output.ndim < 1 or x.ndim < 1 or grad_output.shape[:-1] != x.shape[:-1]:
        raise ValueError(
            f"{func}(): grad_output and x must share their leading dimensions. Received: "
            f"grad_output with shape {grad_output.shape}, x with shape {x.shape}"
        )
    out_f, in_f = grad_output.shape[-1], x.shape[-1]
    rows = math.prod(x.shape[:-1])
    check_numel((out_f, in_f), "output", func, x.itemsize)
    check_blas_dims(
        func,
        lambda: f"grad_output with shape {grad_output.shape}, x with shape {x.shape}",
        in_features=in_f,
        out_features=out_f,
        rows=rows,
    )
    dw = np.empty((out_f, in_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_backward_weight(
            grad_output.reshape(rows, out_f),
            x.reshape(rows, in_f),
            dw,
            threads_for_macs(rows * in_f * out_f),
        )
    return dw


def _linear_backward_pair(
    grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, input_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(linear_backward_weight(grad_output, x), linear_backward_input(grad_output,
    weight) or None)`` in one kernel call whose parallel region runs the blocks of both
    products (bit-identical to the two calls): a Linear layer's backward in training.  The
    caller passes 2-D C-contiguous arrays of one float dtype, of matching shapes (no checks
    here)."""
    n, o = grad_output.shape
    i = x.shape[1]
    dw = np.empty((o, i), dtype=x.dtype)
    dx = np.empty((n, i), dtype=x.dtype) if input_grad else None
    with blas_single_thread():
        _linear.linear_backward(
            grad_output, x, weight, dw, dx, threads_for_macs(n * o * i * (2 if input_grad else 1))
        )
    return dw, dx


def linear_backward_bias(grad_output: ArrayLike) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``bias``: ``grad_output`` summed over all
    leading dimensions, shape ``(out_features,)``.

    See Also
    --------
    linear, cnncore.nn.Linear
    """
    func = "linear_backward_bias"
    grad_output = as_float_array(grad_output, "grad_output", func)
    if grad_output.ndim < 1:
        raise ValueError(
            f"{func}(): grad_output must have at least 1 dimension. Received: "
            f"grad_output with shape {grad_output.shape}"
        )
    out_f = grad_output.shape[-1]
    db = np.empty(out_f, dtype=grad_output.dtype)
    # the per-channel sum of conv2d_backward_bias, with each row as a 1x1 "image"
    rows = math.prod(grad_output.shape[:-1])
    _conv.conv2d_backward_bias(
        grad_output.reshape(rows, out_f, 1, 1), db, threads_for(grad_output.size)
    )
    return db


def prepare_linear(
    x_shape: tuple[int, ...], weight_shape: tuple[int, ...], n_threads: int | None = None
) -> tuple[Any, tuple[int, ...]]:
    """:func:`linear` for repeated calls on one input shape (inference plans): checks the
    shapes once; returns ``(run, out_shape)`` where ``run(x, weight, bias, out)`` writes
    ``linear(x, weight, bias)`` into ``out`` with the same kernel, without checking its
    arguments again (C-contiguous arrays of one float dtype and of the prepared shapes; the
    caller holds the BLAS single-thread cap).  ``n_threads`` fixes the kernel's thread count
    (None: :func:`cnncore.get_num_threads` at each call); results do not depend on it."""
    func = "linear"
    out_f, in_f = weight_shape
    if len(x_shape) < 1 or x_shape[-1] != in_f:
        raise ValueError(
            f"{func}(): the last dimension of x must be in_features = {in_f}. "
            f"Received: x with shape {tuple(x_shape)}"
        )
    out_shape = (*x_shape[:-1], out_f)
    check_numel(out_shape, "output", func)
    check_blas_dims(func, lambda: f"x with shape {x_shape}", in_features=in_f, out_features=out_f)
    rows = math.prod(x_shape[:-1])
    forward = _linear.linear_forward

    flat = len(x_shape) == 2  # (x and out are already the 2-D operands)

    def run(x: np.ndarray, weight: np.ndarray, bias: Any, out: np.ndarray) -> np.ndarray:
        if rows:
            nt = n_threads or get_num_threads()
            if flat:
                forward(x, weight, bias, out, nt)
            else:
                forward(x.reshape(rows, in_f), weight, bias, out.reshape(rows, out_f), nt)
        return out

    return run, out_shape
