"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax and their gradients.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._config import get_num_threads
from .._shared import Activation
from .._validation import (
    check_int,
    check_real,
    check_same_dtype,
)
from . import _activation
from ._common import as_float_any

__all__ = [
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
]

#
# Every activation takes an array of any shape and returns one of the same shape and dtype.
# ``out=`` writes the result into an existing C-contiguous, writeable array of that shape and
# dtype instead of allocating one; it may be the input itself (in-place update). An ``out``
# that partially overlaps an input is handled by reading from a copy of the input.
#
# Backward functions take what PyTorch's autograd saves, the cheaper tensor to keep alive:
# relu, sigmoid, tanh, softmax and log_softmax take the forward *output* (relu accepts the
# input equally well: both have the same sign pattern); leaky_relu takes the forward *input*.


def _check_out(func: str, out: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A new result array, or ``out`` after checking it can receive the result in place."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"{func}(): out must be a NumPy array. Received: out of type {type(out).__name__}"
        )
    if out.dtype != dtype:
        raise TypeError(
            f"{func}(): out must have the result's dtype {dtype}. Received: out.dtype={out.dtype}"
        )
    if out.shape != tuple(shape):
        raise ValueError(
            f"{func}(): out must have the result's shape {tuple(shape)}. Received: out with "
            f"shape {out.shape}"
        )
    if not out.flags.c_contiguous:
        raise ValueError(
            f"{func}(): out must be C-contiguous. Received: out with strides {out.strides}"
        )
    if not out.flags.writeable:
        raise ValueError(f"{func}(): out must be writeable. Received: a read-only out array")
    return out


def _unalias(arr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``arr`` itself, unless it overlaps ``out`` without being the very same buffer (then a
    copy): the kernels support exact in-place operation only."""
    if arr is out or not np.may_share_memory(arr, out):
        return arr
    same = (
        arr.__array_interface__["data"][0] == out.__array_interface__["data"][0]
        and arr.shape == out.shape
        and arr.flags.c_contiguous
    )
    return arr if same else arr.copy()


def _unary(func: str, op: int, x: Any, out: Any, slope: float = 0.0) -> np.ndarray:
    x = as_float_any(x, "x", func)
    out = _check_out(func, out, x.shape, x.dtype)
    x = _unalias(x, out)
    _activation.unary(op, x.reshape(-1), out.reshape(-1), slope, get_num_threads())
    return out


def _binary(
    func: str, op: int, grad_output: Any, saved: Any, saved_name: str, out: Any, slope: float = 0.0
) -> np.ndarray:
    g = as_float_any(grad_output, "grad_output", func)
    a = as_float_any(saved, saved_name, func)
    dtype = check_same_dtype(func, grad_output=g, **{saved_name: a})
    if g.shape != a.shape:
        raise ValueError(
            f"{func}(): grad_output must have the shape of {saved_name}, {a.shape}. "
            f"Received: grad_output with shape {g.shape}"
        )
    out = _check_out(func, out, g.shape, dtype)
    g, a = _unalias(g, out), _unalias(a, out)
    _activation.binary(op, g.reshape(-1), a.reshape(-1), out.reshape(-1), slope, get_num_threads())
    return out


def relu(x: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Rectified linear unit, ``max(x, 0)`` elementwise.

    Same as :func:`torch.nn.functional.relu` (NaN and ``-0.0`` pass through unchanged).

    Parameters
    ----------
    x : array_like of any shape
        float32 or float64.
    out : ndarray, optional
        C-contiguous array of ``x``'s shape and dtype to write into; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x`` (``out`` when given)

    See Also
    --------
    relu_backward, leaky_relu
    """
    return _unary("relu", Activation.OP_RELU, x, out)


def relu_backward(grad_output: Any, output: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`relu`: ``grad_output`` where ``output > 0``, else 0.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to relu's output.
    output : array_like of the same shape and dtype
        relu's forward output (the forward input gives the same result: both are > 0 at the
        same positions). PyTorch saves the output.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``output`` itself.

    Returns
    -------
    grad_x : ndarray

    Notes
    -----
    At 0 the gradient is taken as 0, as in PyTorch.

    See Also
    --------
    relu
    """
    return _binary("relu_backward", Activation.OP_RELU_BW, grad_output, output, "output", out)


def leaky_relu(
    x: Any, negative_slope: float = 0.01, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Leaky rectified linear unit: ``x`` if ``x > 0`` else ``negative_slope * x``.

    Same as :func:`torch.nn.functional.leaky_relu`.

    Parameters
    ----------
    x : array_like of any shape
    negative_slope : float, default 0.01
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    See Also
    --------
    leaky_relu_backward, relu
    """
    slope = check_real(negative_slope, "negative_slope", "leaky_relu")
    return _unary("leaky_relu", Activation.OP_LEAKY_RELU, x, out, slope)


def leaky_relu_backward(
    grad_output: Any, x: Any, negative_slope: float = 0.01, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`leaky_relu`: ``grad_output`` where ``x > 0``, else
    ``negative_slope * grad_output``.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward *input* (as in PyTorch; with a negative slope the output would do too).
    negative_slope : float, default 0.01
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    leaky_relu
    """
    func = "leaky_relu_backward"
    slope = check_real(negative_slope, "negative_slope", func)
    return _binary(func, Activation.OP_LEAKY_RELU_BW, grad_output, x, "x", out, slope)


def sigmoid(x: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))`` elementwise, without overflow.

    Same as :func:`torch.sigmoid`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``, values in [0, 1]

    Notes
    -----
    Computed as ``1 / (1 + z)`` for ``x >= 0`` and ``z / (1 + z)`` for ``x < 0`` with
    ``z = exp(-|x|) <= 1``: nothing overflows and no floating-point warning is raised;
    ``sigmoid(1000) == 1`` and ``sigmoid(-1000) == 0`` exactly. Accurate to a few ulp.

    See Also
    --------
    sigmoid_backward, tanh
    """
    return _unary("sigmoid", Activation.OP_SIGMOID, x, out)


def sigmoid_backward(grad_output: Any, output: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`sigmoid` from its output ``s``: ``grad_output * (1 - s) * s``.

    Parameters
    ----------
    grad_output : array_like
    output : array_like of the same shape and dtype
        The forward output ``s = sigmoid(x)`` (what PyTorch saves).
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``output`` itself.

    Returns
    -------
    grad_x : ndarray

    Notes
    -----
    ``d sigmoid(x) / dx = sigmoid(x) * (1 - sigmoid(x))``.

    See Also
    --------
    sigmoid
    """
    return _binary("sigmoid_backward", Activation.OP_SIGMOID_BW, grad_output, output, "output", out)


def tanh(x: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Hyperbolic tangent elementwise.

    Same as :func:`torch.tanh`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``, values in [-1, 1]

    Notes
    -----
    Computed as ``sign(x) * -m / (2 + m)`` with ``m = expm1(-2|x|)``: relatively accurate near
    0 (``tanh(1e-30) == 1e-30``), exactly +-1 for large ``|x|``, a few ulp everywhere.

    See Also
    --------
    tanh_backward, sigmoid
    """
    return _unary("tanh", Activation.OP_TANH, x, out)


def tanh_backward(grad_output: Any, output: Any, *, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`tanh` from its output ``t``: ``grad_output * (1 - t**2)``.

    Parameters
    ----------
    grad_output : array_like
    output : array_like of the same shape and dtype
        The forward output ``t = tanh(x)`` (what PyTorch saves).
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``output`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    tanh
    """
    return _binary("tanh_backward", Activation.OP_TANH_BW, grad_output, output, "output", out)


def _softmax_split(func: str, shape: tuple[int, ...], dim: Any) -> tuple[int, int, int]:
    """``(outer, D, inner)``: the array seen as 3-D with the reduced axis in the middle."""
    dim = check_int(dim, "dim", func, min_value=None, max_value=None)
    ndim = max(len(shape), 1)  # a 0-d array behaves as shape (1,), as in PyTorch
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"{func}(): dim must be in [{-ndim}, {ndim - 1}] for an array with shape "
            f"{tuple(shape)}. Received: dim={dim}"
        )
    if not shape:
        return 1, 1, 1
    dim %= ndim
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    inner = int(np.prod(shape[dim + 1 :], dtype=np.int64))
    return outer, shape[dim], inner


def _softmax(func: str, x: Any, dim: Any, take_log: bool, out: Any) -> np.ndarray:
    x = as_float_any(x, "x", func)
    split = _softmax_split(func, x.shape, dim)
    out = _check_out(func, out, x.shape, x.dtype)
    x = _unalias(x, out)
    if x.size:
        _activation.softmax(x.reshape(split), out.reshape(split), take_log, get_num_threads())
    return out


def _softmax_bw(
    func: str, grad_output: Any, output: Any, dim: Any, take_log: bool, out: Any
) -> np.ndarray:
    g = as_float_any(grad_output, "grad_output", func)
    y = as_float_any(output, "output", func)
    dtype = check_same_dtype(func, grad_output=g, output=y)
    if g.shape != y.shape:
        raise ValueError(
            f"{func}(): grad_output must have the shape of output, {y.shape}. Received: "
            f"grad_output with shape {g.shape}"
        )
    split = _softmax_split(func, y.shape, dim)
    out = _check_out(func, out, y.shape, dtype)
    g, y = _unalias(g, out), _unalias(y, out)
    if y.size:
        _activation.softmax_backward(
            g.reshape(split), y.reshape(split), out.reshape(split), take_log, get_num_threads()
        )
    return out


def softmax(x: Any, dim: int = 1, *, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over axis ``dim``: ``exp(x - max) / sum(exp(x - max))``.

    Same as :func:`torch.nn.functional.softmax` with an explicit ``dim``.

    Parameters
    ----------
    x : array_like of any shape
    dim : int, default 1
        The axis to normalize over; negative values count from the end.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``; sums to 1 along ``dim``

    Notes
    -----
    The maximum along ``dim`` is subtracted before exponentiating, so no ``exp`` overflows.
    A slice containing NaN or +inf gives NaN, as in PyTorch.

    See Also
    --------
    softmax_backward, log_softmax, cross_entropy
    """
    return _softmax("softmax", x, dim, False, out)


def log_softmax(x: Any, dim: int = 1, *, out: np.ndarray | None = None) -> np.ndarray:
    """Logarithm of :func:`softmax` over axis ``dim``, computed stably.

    Same as :func:`torch.nn.functional.log_softmax`.

    Parameters
    ----------
    x : array_like of any shape
    dim : int, default 1
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``y = (x - m) - log(sum(exp(x - m)))`` with ``m`` the maximum along ``dim``: finite for
    any finite input (e.g. logits of +-1e4).

    See Also
    --------
    log_softmax_backward, softmax, cross_entropy
    """
    return _softmax("log_softmax", x, dim, True, out)


def softmax_backward(
    grad_output: Any, output: Any, dim: int = 1, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`softmax` from its output ``y``:
    ``y * (grad_output - sum(grad_output * y, dim))``.

    Parameters
    ----------
    grad_output : array_like
    output : array_like of the same shape and dtype
        The forward output (what PyTorch saves).
    dim : int, default 1
        The ``dim`` of the forward call.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``output`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    softmax
    """
    return _softmax_bw("softmax_backward", grad_output, output, dim, False, out)


def log_softmax_backward(
    grad_output: Any, output: Any, dim: int = 1, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`log_softmax` from its output ``y``:
    ``grad_output - exp(y) * sum(grad_output, dim)``.

    Parameters
    ----------
    grad_output : array_like
    output : array_like of the same shape and dtype
        The forward output (what PyTorch saves).
    dim : int, default 1
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``output`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    log_softmax
    """
    return _softmax_bw("log_softmax_backward", grad_output, output, dim, True, out)


def unary_inplace(name: str, x: np.ndarray, slope: float = 0.0) -> np.ndarray:
    """``x <- relu/leaky_relu/sigmoid/tanh(x)`` in place, without argument checks (inference
    plans; ``x`` a C-contiguous float array the caller owns).  Bit-identical to the op."""
    flat = x.reshape(-1)
    _activation.unary(_INPLACE_OPS[name], flat, flat, slope, get_num_threads())
    return x


_INPLACE_OPS = {
    "relu": Activation.OP_RELU,
    "leaky_relu": Activation.OP_LEAKY_RELU,
    "sigmoid": Activation.OP_SIGMOID,
    "tanh": Activation.OP_TANH,
}
