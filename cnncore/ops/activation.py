"""Activations: relu, leaky_relu, sigmoid, tanh, gelu, silu, elu, hardswish, hardsigmoid,
softplus, mish, relu6, softmax, log_softmax, dropout2d and their gradients.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .._config import get_num_threads, threads_for
from .._shared import Activation
from .._typing import ArrayLike, RNGLike
from .._validation import (
    as_float_array,
    as_generator,
    check_bool,
    check_choice,
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
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "elu",
    "elu_backward",
    "hardswish",
    "hardswish_backward",
    "hardsigmoid",
    "hardsigmoid_backward",
    "softplus",
    "softplus_backward",
    "mish",
    "mish_backward",
    "relu6",
    "relu6_backward",
    "dropout2d",
    "dropout2d_backward",
]

#
# Every activation takes an array of any shape and returns one of the same shape and dtype.
# ``out=`` writes the result into an existing C-contiguous, writeable array of that shape and
# dtype instead of allocating one; it may be the input itself (in-place update). An ``out``
# that partially overlaps an input is handled by reading from a copy of the input.
#
# Backward functions take what PyTorch's autograd saves, the cheaper tensor to keep alive:
# relu, sigmoid, tanh, softmax and log_softmax take the forward *output* (relu accepts the
# input equally well: both have the same sign pattern); leaky_relu, gelu, silu, elu,
# hardswish, hardsigmoid, softplus, mish and relu6 take the forward *input*; dropout2d's
# backward takes the mask its forward returns.


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


def _unary(func: str, op: int, x: Any, out: Any, slope: float = 0.0, p2: float = 0.0) -> np.ndarray:
    x = as_float_any(x, "x", func)
    out = _check_out(func, out, x.shape, x.dtype)
    x = _unalias(x, out)
    _activation.unary(op, x.reshape(-1), out.reshape(-1), slope, threads_for(x.size), p2)
    return out


def _binary(
    func: str,
    op: int,
    grad_output: Any,
    saved: Any,
    saved_name: str,
    out: Any,
    slope: float = 0.0,
    p2: float = 0.0,
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
    _activation.binary(
        op, g.reshape(-1), a.reshape(-1), out.reshape(-1), slope, threads_for(g.size), p2
    )
    return out


def relu(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
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


def relu_backward(
    grad_output: ArrayLike, output: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
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
    x: ArrayLike, negative_slope: float = 0.01, *, out: np.ndarray | None = None
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
    grad_output: ArrayLike,
    x: ArrayLike,
    negative_slope: float = 0.01,
    *,
    out: np.ndarray | None = None,
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


def sigmoid(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
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
    ``sigmoid(1000) == 1`` and ``sigmoid(-1000) == 0`` exactly. Measured error (vectorized
    ``exp``, src/_vmath.pxd): at most 2.4 ulp in float32 (over +-1e4), 2.1 in float64.

    See Also
    --------
    sigmoid_backward, tanh
    """
    return _unary("sigmoid", Activation.OP_SIGMOID, x, out)


def sigmoid_backward(
    grad_output: ArrayLike, output: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
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


def tanh(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
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
    0 (``tanh(1e-30) == 1e-30``), exactly +-1 for large ``|x|``; at most 2.5 ulp (float32)
    and 2.3 ulp (float64) everywhere.

    See Also
    --------
    tanh_backward, sigmoid
    """
    return _unary("tanh", Activation.OP_TANH, x, out)


def tanh_backward(
    grad_output: ArrayLike, output: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
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


def softmax(x: ArrayLike, dim: int = 1, *, out: np.ndarray | None = None) -> np.ndarray:
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


def log_softmax(x: ArrayLike, dim: int = 1, *, out: np.ndarray | None = None) -> np.ndarray:
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
    grad_output: ArrayLike, output: ArrayLike, dim: int = 1, *, out: np.ndarray | None = None
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
    grad_output: ArrayLike, output: ArrayLike, dim: int = 1, *, out: np.ndarray | None = None
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


# ------------------------------------------------------------------------------------------
# gelu, silu, elu, hardswish, hardsigmoid, softplus, mish, relu6 (backward from the input)
# ------------------------------------------------------------------------------------------

_GELU_OPS = {"none": (Activation.OP_GELU, Activation.OP_GELU_BW)}
_GELU_OPS["tanh"] = (Activation.OP_GELU_TANH, Activation.OP_GELU_TANH_BW)


def _gelu_op(func: str, approximate: Any, backward: bool) -> int:
    check_choice(approximate, "approximate", func, ("none", "tanh"))
    return _GELU_OPS[approximate][int(backward)]


def gelu(x: ArrayLike, approximate: str = "none", *, out: np.ndarray | None = None) -> np.ndarray:
    """Gaussian error linear unit, ``x * Phi(x)`` with ``Phi`` the standard normal CDF.

    Same as :func:`torch.nn.functional.gelu`.

    Parameters
    ----------
    x : array_like of any shape
        float32 or float64.
    approximate : {'none', 'tanh'}, default 'none'
        ``'none'``: the exact ``x * 0.5 * (1 + erf(x / sqrt(2)))``; ``'tanh'``:
        ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``.
    out : ndarray, optional
        C-contiguous array of ``x``'s shape and dtype to write into; may be ``x`` itself
        (then :func:`gelu_backward`, which needs the input, cannot be called afterwards).

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``Phi(x) = erfc(-x / sqrt(2)) / 2`` is evaluated from its tail ``Phi(-|x|)``: in float32
    as ``t R(t) exp(-x**2 / 2) / 2`` with ``t = 1 / (1 + 0.5 |x| / sqrt(2))`` and a
    degree-10 polynomial ``R`` (tools/fit_vmath.py), in float64 as
    ``t exp(P(t) - x**2 / 2) / 2`` with ``t = 1 / (1 + 0.4 |x| / sqrt(2))`` and a Chebyshev
    series ``P`` (tools/fit_erfc.py); ``-x**2 / 2`` enters ``exp`` in two exact parts.
    Relatively accurate in both tails (no ``1 + erf`` cancellation for negative ``x``):
    measured at most 4.2 ulp in float32 (over +-1e4) and 5.0 ulp in float64.  The tanh form
    is computed as ``x * sigmoid(2 u)``, the same value without cancellation (within
    ``4 + 4 |u|`` ulp in float32: the rounding of ``u``); where ``2 u < -87`` (float32;
    ``-708`` in float64) it is ``x * 0``, a signed zero (the true value is below ``2e-37``;
    torch's formula gives that zero from ``x < -3.5``): no subnormal intermediate, each of
    which costs a microcode assist.

    See Also
    --------
    gelu_backward, silu, cnncore.nn.GELU
    """
    func = "gelu"
    return _unary(func, _gelu_op(func, approximate, False), x, out)


def gelu_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    approximate: str = "none",
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of :func:`gelu`: ``grad_output * (Phi(x) + x * phi(x))`` (``phi``: the
    standard normal density), or the derivative of the tanh form.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward *input* (as PyTorch saves).
    approximate : {'none', 'tanh'}, default 'none'
        As in the forward call.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    gelu
    """
    func = "gelu_backward"
    op = _gelu_op(func, approximate, True)
    return _binary(func, op, grad_output, x, "x", out)


def silu(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Sigmoid linear unit (swish), ``x * sigmoid(x)``.

    Same as :func:`torch.nn.functional.silu`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    See Also
    --------
    silu_backward, sigmoid, cnncore.nn.SiLU
    """
    return _unary("silu", Activation.OP_SILU, x, out)


def silu_backward(
    grad_output: ArrayLike, x: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`silu`: ``grad_output * (s + x * s * (1 - s))``, ``s = sigmoid(x)``.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    Notes
    -----
    ``s * (1 - s)`` is computed as ``e / (1 + e)**2`` with ``e = exp(-|x|)``, without the
    cancellation of ``1 - s`` for large ``x``.  Error at most 3.1 ulp (float32) / 3.0 ulp
    (float64) of the larger of the two terms ``s`` and ``x s (1 - s)``.

    See Also
    --------
    silu
    """
    return _binary("silu_backward", Activation.OP_SILU_BW, grad_output, x, "x", out)


def elu(x: ArrayLike, alpha: float = 1.0, *, out: np.ndarray | None = None) -> np.ndarray:
    """Exponential linear unit: ``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``.

    Same as :func:`torch.nn.functional.elu`.

    Parameters
    ----------
    x : array_like of any shape
    alpha : float, default 1.0
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``exp(x) - 1`` is computed as ``expm1(x)``: relatively accurate near 0 (at most 0.9 ulp).

    See Also
    --------
    elu_backward, cnncore.nn.ELU
    """
    a = check_real(alpha, "alpha", "elu")
    return _unary("elu", Activation.OP_ELU, x, out, a)


def elu_backward(
    grad_output: ArrayLike, x: ArrayLike, alpha: float = 1.0, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`elu`: ``grad_output`` where ``x > 0``, else
    ``grad_output * alpha * exp(x)``.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    alpha : float, default 1.0
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    Notes
    -----
    At ``x = 0`` the gradient is ``alpha * grad_output``, as in PyTorch.

    See Also
    --------
    elu
    """
    func = "elu_backward"
    a = check_real(alpha, "alpha", func)
    return _binary(func, Activation.OP_ELU_BW, grad_output, x, "x", out, a)


def hardswish(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Hard swish, ``x * clamp(x + 3, 0, 6) / 6`` (MobileNetV3).

    Same as :func:`torch.nn.functional.hardswish`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    See Also
    --------
    hardswish_backward, hardsigmoid, cnncore.nn.Hardswish
    """
    return _unary("hardswish", Activation.OP_HARDSWISH, x, out)


def hardswish_backward(
    grad_output: ArrayLike, x: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`hardswish`: 0 for ``x <= -3``, ``grad_output * (x / 3 + 1/2)``
    for ``-3 < x < 3``, ``grad_output`` for ``x >= 3`` (PyTorch's choice at the kinks).

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    hardswish
    """
    return _binary("hardswish_backward", Activation.OP_HARDSWISH_BW, grad_output, x, "x", out)


def hardsigmoid(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Hard sigmoid, ``clamp(x + 3, 0, 6) / 6``.

    Same as :func:`torch.nn.functional.hardsigmoid`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``, values in [0, 1]

    See Also
    --------
    hardsigmoid_backward, hardswish, cnncore.nn.Hardsigmoid
    """
    return _unary("hardsigmoid", Activation.OP_HARDSIGMOID, x, out)


def hardsigmoid_backward(
    grad_output: ArrayLike, x: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`hardsigmoid`: ``grad_output / 6`` for ``-3 < x < 3``, else 0.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    Notes
    -----
    float64 uses the exact ``1 / 6``; PyTorch multiplies float64 gradients by the float32
    constant ``1 / 6`` (a relative difference of 3e-8).

    See Also
    --------
    hardsigmoid
    """
    return _binary("hardsigmoid_backward", Activation.OP_HARDSIGMOID_BW, grad_output, x, "x", out)


def _softplus_params(func: str, beta: Any, threshold: Any) -> tuple[float, float]:
    b = check_real(beta, "beta", func)
    if b == 0 or not math.isfinite(b):
        raise ValueError(f"{func}(): beta must be a finite non-zero number. Received: beta={b!r}")
    t = check_real(threshold, "threshold", func)
    if math.isnan(t):
        raise ValueError(f"{func}(): threshold must not be NaN. Received: threshold={t!r}")
    return b, t


def softplus(
    x: ArrayLike, beta: float = 1.0, threshold: float = 20.0, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Softplus, ``log(1 + exp(beta * x)) / beta``, and ``x`` itself where
    ``beta * x > threshold``.

    Same as :func:`torch.nn.functional.softplus`.

    Parameters
    ----------
    x : array_like of any shape
    beta : float, default 1.0
        Finite, non-zero.
    threshold : float, default 20.0
        Above it (``beta * x > threshold``) the function is taken as linear.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    Computed as ``(max(beta x, 0) + log1p(exp(-|beta x|))) * (1 / beta)``: no overflow for
    any threshold, relatively accurate for very negative ``beta x``; at most 1.9 ulp (float32,
    ``log1p`` by a polynomial) / 2.2 ulp (float64) for ``beta = 1``.  ``1 / beta`` is
    computed once: the same as PyTorch's division for ``beta`` a power of two, within an ulp
    otherwise.

    See Also
    --------
    softplus_backward, mish, cnncore.nn.Softplus
    """
    b, t = _softplus_params("softplus", beta, threshold)
    return _unary("softplus", Activation.OP_SOFTPLUS, x, out, b, t)


def softplus_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    beta: float = 1.0,
    threshold: float = 20.0,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of :func:`softplus`: ``grad_output * sigmoid(beta * x)``, and
    ``grad_output`` where ``beta * x > threshold``.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    beta, threshold : float
        As in the forward call.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    softplus
    """
    func = "softplus_backward"
    b, t = _softplus_params(func, beta, threshold)
    return _binary(func, Activation.OP_SOFTPLUS_BW, grad_output, x, "x", out, b, t)


def mish(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Mish, ``x * tanh(softplus(x))``.

    Same as :func:`torch.nn.functional.mish`.

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``tanh(log(1 + e)) = q / (q + 2)`` with ``e = exp(x)``, ``q = e (e + 2)``: one
    exponential, relatively accurate for very negative ``x``; at most 3.7 ulp (float32) /
    2.9 ulp (float64).

    See Also
    --------
    mish_backward, softplus, cnncore.nn.Mish
    """
    return _unary("mish", Activation.OP_MISH, x, out)


def mish_backward(
    grad_output: ArrayLike, x: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`mish`: ``grad_output * (t + x * sigmoid(x) * (1 - t**2))`` with
    ``t = tanh(softplus(x))``.

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input.
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    mish
    """
    return _binary("mish_backward", Activation.OP_MISH_BW, grad_output, x, "x", out)


def relu6(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """``min(max(x, 0), 6)`` elementwise (MobileNet's activation).

    Same as :func:`torch.nn.functional.relu6` (NaN passes through).

    Parameters
    ----------
    x : array_like of any shape
    out : ndarray, optional
        Where to write the result; may be ``x`` itself.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    See Also
    --------
    relu6_backward, relu, hardswish, cnncore.nn.ReLU6
    """
    return _unary("relu6", Activation.OP_RELU6, x, out)


def relu6_backward(
    grad_output: ArrayLike, x: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`relu6`: ``grad_output`` where ``0 < x < 6``, else 0 (PyTorch's
    ``hardtanh_backward``: 0 at the kinks).

    Parameters
    ----------
    grad_output : array_like
    x : array_like of the same shape and dtype
        The forward input (the output gives the same result).
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` or ``x`` itself.

    Returns
    -------
    grad_x : ndarray

    See Also
    --------
    relu6
    """
    return _binary("relu6_backward", Activation.OP_RELU6_BW, grad_output, x, "x", out)


# ------------------------------------------------------------------------------------------
# dropout2d
# ------------------------------------------------------------------------------------------


def _planes(func: str, name: str, x: np.ndarray) -> tuple[int, int]:
    """(N * C, plane size) of an array of at least 2 dimensions (N, C, ...)."""
    if x.ndim < 2:
        raise ValueError(
            f"{func}(): {name} must have at least 2 dimensions (N, C, ...): a 4-D array "
            f"(N, C, H, W) or a 3-D array (N, C, L). Received: {name} with shape {x.shape}"
        )
    return x.shape[0] * x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))


def dropout2d_input_warning(func: str, shape: tuple[int, ...], stacklevel: int) -> None:
    """PyTorch 2.13's warnings for a dropout2d input other than ``(N, C, H, W)``: a 3-D
    input is read as ``(N, C, L)`` (channel-wise 1-D dropout), not as an unbatched
    ``(C, H, W)``; other ranks (2-D, 5-D, ...) are deprecated.  The behaviour is PyTorch's
    too: each ``(n, c)`` slice is dropped whole."""
    if len(shape) == 3:
        warnings.warn(
            f"{func}: received a 3-D input {tuple(shape)}, read as (N, C, L) -- channel-wise "
            f"1-D dropout -- as PyTorch does (which warns that it will read it as an "
            f"unbatched (C, H, W) in a future release). For one image, pass x[None].",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    elif len(shape) != 4:
        warnings.warn(
            f"{func}: received a {len(shape)}-D input {tuple(shape)}; dropout2d is for 4-D "
            f"(N, C, H, W) inputs (and 3-D (N, C, L)). PyTorch deprecates other ranks, "
            f"whose (n, c) slices are dropped whole; use dropout for elementwise dropout.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def dropout2d(
    x: ArrayLike,
    p: float = 0.5,
    training: bool = True,
    *,
    rng: RNGLike = None,
    return_mask: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Channel dropout: zero each whole channel ``x[n, c]`` with probability ``p`` and scale
    the kept ones by ``1 / (1 - p)``; the identity (a copy) when ``training`` is False.

    Same as :func:`torch.nn.functional.dropout2d` (with its own random numbers).

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) or (N, C, L)
        A 3-D input is read as ``(N, C, L)`` with a UserWarning, as PyTorch 2.13 does (it
        warns that this will change to an unbatched ``(C, H, W)``); other ranks ``(N, C,
        *)`` of at least 2 dimensions are taken with a warning too, as PyTorch deprecates
        them.
    p : float, default 0.5
        Probability of zeroing a channel, in [0, 1].
    training : bool, default True
    rng : numpy Generator, int seed or None, optional
        Draws the mask; None: a new unseeded generator (:class:`cnncore.nn.Dropout2d` passes
        its own, which :func:`cnncore.nn.init.manual_seed` and ``fit(seed=...)`` seed).
    return_mask : bool, default False
        Also return the mask, which :func:`dropout2d_backward` takes.
    out : ndarray, optional
        Where to write the result; may be ``x`` itself (in place).

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``
    mask : ndarray of shape (N, C), only with ``return_mask``
        The factor of each channel: 0 or ``1 / (1 - p)`` (all 1 when not training, all 0
        with ``p = 1``).

    Notes
    -----
    The channels kept are ``rng.random((N, C)) >= p`` (one draw of ``N * C`` uniforms).

    See Also
    --------
    dropout2d_backward, cnncore.nn.Dropout2d
    """
    func = "dropout2d"
    x = as_float_array(x, "x", func)
    planes, size = _planes(func, "x", x)
    prob = check_real(p, "p", func)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{func}(): p must be a probability in [0, 1]. Received: p={p!r}")
    training = check_bool(training, "training", func)
    return_mask = check_bool(return_mask, "return_mask", func)
    gen = as_generator(rng, func, np.random.default_rng) if training else None
    out = _check_out(func, out, x.shape, x.dtype)
    dropout2d_input_warning(func, x.shape, stacklevel=2)
    if not training:
        mask = np.ones(x.shape[:2], x.dtype)
    elif prob == 1.0:
        mask = np.zeros(x.shape[:2], x.dtype)
    else:
        keep = gen.random(x.shape[:2]) >= prob
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - prob))
    x = _unalias(x, out)
    _activation.channel_scale(
        x.reshape(planes, size), mask.reshape(-1), out.reshape(planes, size), get_num_threads()
    )
    return (out, mask) if return_mask else out


def dropout2d_backward(
    grad_output: ArrayLike, mask: ArrayLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`dropout2d`: ``grad_output[n, c] * mask[n, c]``.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H, W), (N, C, L) or (N, C, ...)
    mask : array_like of shape (N, C)
        The mask the forward call returned (``return_mask=True``).
    out : ndarray, optional
        Where to write the result; may be ``grad_output`` itself.

    Returns
    -------
    grad_x : ndarray of the shape and dtype of ``grad_output``

    See Also
    --------
    dropout2d
    """
    func = "dropout2d_backward"
    g = as_float_array(grad_output, "grad_output", func)
    planes, size = _planes(func, "grad_output", g)
    m = as_float_array(mask, "mask", func)
    check_same_dtype(func, grad_output=g, mask=m)
    if m.shape != g.shape[:2]:
        raise ValueError(
            f"{func}(): mask must have shape (N, C) = {g.shape[:2]} of grad_output. "
            f"Received: mask with shape {m.shape}"
        )
    out = _check_out(func, out, g.shape, g.dtype)
    g = _unalias(g, out)
    m = _unalias(m, out)
    _activation.channel_scale(
        g.reshape(planes, size), m.reshape(-1), out.reshape(planes, size), get_num_threads()
    )
    return out


def unary_inplace(
    name: str,
    x: np.ndarray,
    slope: float = 0.0,
    n_threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``x <- relu/leaky_relu/sigmoid/tanh(x)`` in place (or into ``out``, a C-contiguous
    array of ``x``'s shape and dtype), without argument checks (inference plans; ``x`` a
    C-contiguous float array the caller owns).  Bit-identical to the op (for any
    ``n_threads``; None: :func:`cnncore.get_num_threads`)."""
    flat = x.reshape(-1)
    dst = flat if out is None else out.reshape(-1)
    _activation.unary(_INPLACE_OPS[name], flat, dst, slope, n_threads or get_num_threads())
    return x if out is None else out


_INPLACE_OPS = {
    "relu": Activation.OP_RELU,
    "leaky_relu": Activation.OP_LEAKY_RELU,
    "sigmoid": Activation.OP_SIGMOID,
    "tanh": Activation.OP_TANH,
}
