"""Convolution: conv2d and its gradients, im2col / col2im.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._callcache import memoize_checks
from .._config import blas_single_thread, get_num_threads, load_kernels
from .._geometry import (
    ConvGeometry,
    conv2d_geometry,
    conv_transpose2d_geometry,
)
from .._shared import ConvAlgorithm
from .._typing import ArrayLike, DTypeLike, IntPair, Padding, Shape
from .._validation import (
    accepts_unbatched,
    as_float_array,
    check_bool,
    check_int,
    check_numel,
    check_same_dtype,
    check_shape,
    float_operands,
    to_pair,
)
from ._common import check_blas_dims
from .conv_dispatch import algorithm_name, rows_pool_fusable, select_conv_algorithm

__all__ = [
    "conv2d",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_backward_bias",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "im2col",
    "col2im",
]

# The batched shapes of the arrays that may also come unbatched (see accepts_unbatched)
_X_SHAPE = "(N, C_in, H_in, W_in)"
_GO_SHAPE = "(N, C_out, H_out, W_out)"

# The convolution kernels, compiled for the widest vector unit this CPU has.
_conv, _CONV_SIMD = load_kernels("cnncore.ops._conv")


_X4 = "a 4-D array (N, C_in, H_in, W_in)"


def _conv_operands(
    func: str, x: Any, weight: Any, bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.dtype]:
    """``x``, ``weight`` and ``bias`` of a forward convolution as ``func`` takes them: float
    arrays (4-D, 4-D, 1-D or None) of one dtype, returned with that dtype."""
    return float_operands(
        func, x, weight, bias, x_ndim=4, x_text=_X4, w_ndim=4,
        w_text="a 4-D array (C_out, C_in/groups, kH, kW)",
    )  # fmt: skip


@memoize_checks
def _conv_setup(
    func: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
) -> tuple[ConvGeometry, int]:
    """Check the channel/group bookkeeping and resolve the geometry (shared by all passes)."""
    groups = check_int(groups, "groups", func, min_value=1)
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    if kh < 1 or kw < 1:
        raise ValueError(
            f"{func}(): the kernel size must be at least 1x1. Received: weight with shape "
            f"{tuple(w_shape)}"
        )
    if k % groups != 0:
        raise ValueError(
            f"{func}(): out_channels (weight.shape[0]={k}) must be divisible by groups. "
            f"Received: groups={groups}"
        )
    if cg * groups != c:
        hint = ""
        if x_shape[3] == cg * groups:
            hint = (
                f". The input looks like NHWC (channels last, {x_shape[3]} channels); cnncore "
                f"takes NCHW: pass x.transpose(0, 3, 1, 2)"
            )
        raise ValueError(
            f"{func}(): expected an input with weight.shape[1] * groups = {cg} * {groups} = "
            f"{cg * groups} channels. Received: input with shape {tuple(x_shape)} "
            f"({c} channels), groups={groups}{hint}"
        )
    geo = conv2d_geometry(func, (h, w), (kh, kw), stride, padding, dilation)
    ho, wo = geo.out
    check_numel((n, k, ho, wo), "output", func)
    check_blas_dims(
        func,
        lambda: f"input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}",
        **{
            "C_in/groups*kH*kW": cg * kh * kw,
            "H_out*W_out": ho * wo,
            "H_in*W_in": h * w,
            "C_out": k,
        },
    )
    return geo, groups


def conv2d_algorithms(
    input_shape: Sequence[int],
    weight_shape: Any,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    dtype: Any = None,
) -> dict[str, str]:
    """The algorithm each pass of a convolution would run with now.

    Returns ``{"forward": name, "input": name, "weight": name}`` with names from
    :data:`cnncore.ops.conv_dispatch.ALGORITHMS` -- the one forced by an enclosing
    :func:`cnncore.conv_algorithm` block, else the tuned choice for ``dtype`` (float32 or
    float64; when given) if there is one, else the built-in thresholds' (nothing is
    measured here).  The kernels still run GEMM where the planned algorithm does not apply
    (and Winograd falls back to GEMM on Inf/NaN inputs).
    """
    func = "conv2d_algorithms"
    in_shape = check_shape(input_shape, "input_shape", func, 4)
    w_shape = check_shape(weight_shape, "weight_shape", func, 4)
    geo, groups = _conv_setup(func, in_shape, w_shape, stride, padding, dilation, groups)
    dt = None if dtype is None else _float_dtype(dtype, func)
    return {
        which: algorithm_name(
            select_conv_algorithm(w_shape, groups, geo, which, in_shape, dt, measure=False)
        )
        for which in ("forward", "input", "weight")
    }


def _float_dtype(dtype: Any, func: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{func}(): dtype must be float32 or float64. Received: dtype={dtype!r}")
    return dt


def _conv_kernel_args(geo: ConvGeometry, groups: int) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return sh, sw, ph, pw, dh, dw, groups


@accepts_unbatched({"x": _X_SHAPE})
def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-D cross-correlation of a batch of images with a bank of filters, plus bias.

    Same semantics as :func:`torch.nn.functional.conv2d`.

    Parameters
    ----------
    x : array_like of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)
        Input images, float32 or float64.
    weight : array_like of shape (C_out, C_in / groups, kH, kW)
        Filters, same dtype as ``x``.
    bias : array_like of shape (C_out,), optional
        Added to every output position of each channel.
    stride : int or (int, int), default 1
        Step of the sliding window per axis.
    padding : int, (int, int), 'valid' or 'same', default 0
        Implicit zero padding on both sides of each axis. ``'valid'`` is no padding;
        ``'same'`` pads so that the output has the input's size (stride 1 only); when the
        total padding ``dilation * (k - 1)`` is odd the extra row/column goes at the
        bottom/right, as in PyTorch.
    dilation : int or (int, int), default 1
        Spacing between kernel taps.
    groups : int, default 1
        Split the input channels and filters into ``groups`` independent convolutions.

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Same dtype as ``x``.

    Notes
    -----
    For each axis, ``H_out = floor((H_in + 2 * padding - dilation * (kH - 1) - 1) / stride) + 1``.

    An unbatched ``x`` ``(C_in, H_in, W_in)`` is computed as a batch of one (a view, as
    PyTorch allows), and so are the backward functions' unbatched arguments.

    ``y[n, k, oh, ow] = bias[k] + sum_{c, i, j} weight[k, c, i, j] *
    x_pad[n, g * C_in/groups + c, oh * stride + i * dilation, ow * stride + j * dilation]``
    where ``g = k // (C_out / groups)``.

    The algorithm follows from the shapes: a direct loop for few channels, a
    channel-blocked direct kernel (register-blocked over 16-32 output channels and a row of
    pixels) for 3x3 filters with 16-128 channels per group, Winograd F(2x2, 3x3) for 3x3
    stride-1 filters with more channels (16 BLAS GEMMs per block of 2x2 output tiles;
    inputs holding Inf/NaN take the GEMM path), otherwise im2col in bounded blocks + BLAS
    GEMM (see :mod:`cnncore.ops.conv_dispatch`).  They agree to float rounding.

    See Also
    --------
    conv2d_backward_input, conv2d_backward_weight, conv2d_backward_bias, conv2d_backward
    cnncore.nn.Conv2d : the layer that holds ``weight`` and ``bias``.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3), dtype=np.float32)
    >>> cnncore.conv2d(x, w)[0, 0]
    array([[45., 54.],
           [81., 90.]], dtype=float32)
    """
    func = "conv2d"
    x, weight, bias, dtype = _conv_operands(func, x, weight, bias)
    geo, groups = _conv_setup(func, x.shape, weight.shape, stride, padding, dilation, groups)
    n, k = x.shape[0], weight.shape[0]
    if bias is not None and bias.shape != (k,):
        raise ValueError(
            f"{func}(): bias must have shape (C_out,) = ({k},). Received: bias with shape "
            f"{bias.shape}"
        )
    y = np.empty((n, k, *geo.out), dtype=dtype)
    if y.size == 0:
        return y
    if x.size == 0 or weight.size == 0:  # only padding is read: the output is the bias
        y[...] = 0 if bias is None else bias[None, :, None, None]
        return y
    algo = select_conv_algorithm(weight.shape, groups, geo, "forward", x.shape, dtype)
    with blas_single_thread():
        _conv.conv2d_forward(
            x, weight, bias, y, *_conv_kernel_args(geo, groups), algo, get_num_threads()
        )
    return y


def _conv2d_relu_max_pool2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: IntPair,
    padding: Padding,
    dilation: IntPair,
    groups: int,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]] | None:
    """``max_pool2d(relu(conv2d(x, weight, bias, ...)), 2, return_indices=True)`` in one
    kernel, for :class:`cnncore.nn.Sequential`'s Conv2d-ReLU-MaxPool2d(2) triples in
    training: ``(y, indices, conv_shape)`` -- the pooled output, the argmax indices within
    the conv output's planes (as :func:`cnncore.ops.pool._max_pool2d_relu` gives them) and
    the conv output's shape -- or None (nothing computed) where no fused kernel applies.
    Two kernels: one input channel (a network's first layer, see
    :func:`cnncore.ops.conv_dispatch.rows_pool_fusable`) runs the row-vectorized conv,
    bit-identical to ``conv2d`` under ``conv_algorithm("rows")`` followed by the ReLU-fused
    max pooling; a float32 3x3 convolution for which ``conv2d`` would run Winograd F(4x4)
    runs that with the pooling as its epilogue, bit-identical to ``conv2d`` followed by the
    pooling (None where an input or weight is not finite: ``conv2d`` then runs another
    algorithm).  The conv output itself is never written.  ``x`` is a batch
    ``(N, C_in, H, W)``."""
    func = "conv2d"
    x, weight, bias, _ = _conv_operands(func, x, weight, bias)
    geo, groups = _conv_setup(func, x.shape, weight.shape, stride, padding, dilation, groups)
    n, k = x.shape[0], weight.shape[0]
    if bias is not None and bias.shape != (k,):
        return None
    if n == 0 or x.size == 0 or weight.size == 0:
        return None
    ho, wo = geo.out
    ph, pw = geo.padding
    if rows_pool_fusable(weight.shape, groups, geo, x.dtype):
        y = np.empty((n, k, ho // 2, wo // 2), dtype=x.dtype)
        idx = np.empty(y.shape, dtype=np.int64)
        _conv.conv2d_relu_maxpool2x2_forward(
            x, weight, bias, y, idx, ph, pw, ho, wo, get_num_threads()
        )
        return y, idx, (n, k, ho, wo)
    if (
        x.dtype != np.float32
        or groups != 1
        or weight.shape[2:] != (3, 3)
        or geo.stride != (1, 1)
        or geo.dilation != (1, 1)
        or ho < 2
        or wo < 2
        or select_conv_algorithm(weight.shape, groups, geo, "forward", x.shape, x.dtype)
        != ConvAlgorithm.ALGO_WINOGRAD4
    ):
        return None
    y = np.empty((n, k, ho // 2, wo // 2), dtype=x.dtype)
    idx = np.empty(y.shape, dtype=np.int64)
    with blas_single_thread():
        done = _conv.conv2d_relu_maxpool2x2_forward_winograd4(
            x, weight, bias, y, idx, ph, pw, ho, wo, get_num_threads()
        )
    return (y, idx, (n, k, ho, wo)) if done else None


# The per-thread buffer of the fused backward holds a batch part's conv-output gradient.
_FUSED_POOL_MAX_PART_ELEMENTS = 1 << 22


def _conv2d_relu_max_pool2d_backward(
    grad_output: np.ndarray,
    indices: np.ndarray,
    relu_output: np.ndarray,
    x: np.ndarray,
    weight_shape: tuple[int, ...],
    stride: IntPair,
    padding: Padding,
    dilation: IntPair,
    groups: int,
    bias: bool,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The parameter gradients behind :func:`_conv2d_relu_max_pool2d` -- ``(grad_weight,
    grad_bias or None)`` -- from the gradient w.r.t. its pooled output, in one kernel that
    never builds the conv output's gradient array; or None (nothing computed) where it does
    not apply (then ``max_pool2d_backward`` with the ReLU fused and ``conv2d_backward``
    give the same gradients).  Bit-identical to those two calls with the conv's weight
    gradient on the row-vectorized kernel (the bias gradient: on any)."""
    func = "conv2d_backward"
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4)
    x = as_float_array(x, "x", func, ndim=4)
    check_same_dtype(func, grad_output=grad_output, x=x, relu_output=relu_output)
    geo, groups = _conv_setup(func, x.shape, tuple(weight_shape), stride, padding, dilation, groups)
    n, k = x.shape[0], weight_shape[0]
    ho, wo = geo.out
    pooled = (n, k, ho // 2, wo // 2)
    if grad_output.shape != pooled or relu_output.shape != pooled or indices.shape != pooled:
        raise ValueError(
            f"{func}(): grad_output, indices and relu_output must have the pooled shape "
            f"{pooled}. Received: grad_output of shape {grad_output.shape}, indices of shape "
            f"{indices.shape}, relu_output of shape {relu_output.shape}"
        )
    if (
        n == 0
        or x.size == 0
        or indices.dtype != np.int64
        or not indices.flags.c_contiguous
        or not relu_output.flags.c_contiguous
        or not rows_pool_fusable(tuple(weight_shape), groups, geo, x.dtype)
        or -(-n // min(n, 8)) * k * ho * wo > _FUSED_POOL_MAX_PART_ELEMENTS
    ):
        return None
    dw = np.empty(tuple(weight_shape), dtype=x.dtype)
    db = np.empty(k, dtype=x.dtype) if bias else None
    ph, pw = geo.padding
    _conv.conv2d_relu_maxpool2x2_backward_weight(
        grad_output, indices, relu_output, x, dw, db, ph, pw, ho, wo, get_num_threads()
    )
    return dw, db


@accepts_unbatched({"grad_output": _GO_SHAPE}, shapes={"input_shape": _X_SHAPE})
def conv2d_backward_input(
    grad_output: ArrayLike,
    weight: ArrayLike,
    input_shape: Shape,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its input.

    Same result as :func:`torch.nn.grad.conv2d_input`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    weight : array_like of shape (C_out, C_in / groups, kH, kW)
        The filters used in the forward pass, same dtype as ``grad_output``.
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``
        ``(N, C_in, H_in, W_in)``, the shape of the forward input.
    stride, padding, dilation, groups
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)

    Notes
    -----
    ``grad_x`` is the full correlation of ``grad_output`` -- dilated by the stride (zeros
    between its rows/columns) -- with the kernel rotated by 180 degrees. cnncore computes it
    without building the dilated array: each ``weight[k, c, i, j] * grad_output[n, k]`` row is
    added back to the input row it was read from (col2im of ``W^T @ grad_output``). Input
    rows/columns that the forward pass never read (when the stride does not divide) get 0.

    See Also
    --------
    conv2d, conv2d_backward_weight
    cnncore.nn.Conv2d
    """
    func = "conv2d_backward_input"
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C_out, H_out, W_out)"
    )
    weight = as_float_array(
        weight, "weight", func, ndim=4, ndim_text="a 4-D array (C_out, C_in/groups, kH, kW)"
    )
    check_same_dtype(func, grad_output=grad_output, weight=weight)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    geo, groups = _conv_setup(func, input_shape, weight.shape, stride, padding, dilation, groups)
    _check_grad_output(
        func,
        grad_output,
        input_shape[0],
        weight.shape[0],
        geo,
        f"input_shape={input_shape} and weight of shape {weight.shape}",
    )
    return _conv_input_grad(grad_output, weight, input_shape, geo, groups)


def _check_grad_output(
    func: str, grad_output: np.ndarray, n: int, c_out: int, geo: ConvGeometry, given: str
) -> None:
    """A convolution gradient's ``grad_output`` must be ``(N, C_out, H_out, W_out)`` for the
    shapes ``given`` (named in the message)."""
    expected = (n, c_out, *geo.out)
    if grad_output.shape != expected:
        raise ValueError(
            f"{func}(): grad_output must have shape {expected} for {given}. Received: "
            f"grad_output with shape {grad_output.shape}"
        )


def _conv_input_grad(
    grad_output: np.ndarray,
    weight: np.ndarray,
    input_shape: tuple[int, ...],
    geo: ConvGeometry,
    groups: int,
) -> np.ndarray:
    """Kernel call of :func:`conv2d_backward_input` (arguments validated)."""
    dx = np.empty(input_shape, dtype=grad_output.dtype)
    if dx.size == 0:
        return dx
    if grad_output.size == 0 or weight.size == 0:
        dx[...] = 0
        return dx
    algo = select_conv_algorithm(weight.shape, groups, geo, "input", input_shape, grad_output.dtype)
    with blas_single_thread():
        _conv.conv2d_backward_input(
            grad_output, weight, dx, *_conv_kernel_args(geo, groups), algo, get_num_threads()
        )
    return dx


@accepts_unbatched({"grad_output": _GO_SHAPE, "x": _X_SHAPE}, batched_outputs=False)
def conv2d_backward_weight(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight_shape: Shape,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its weight.

    Same result as :func:`torch.nn.grad.conv2d_weight`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    x : array_like of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)
        The forward input, same dtype as ``grad_output``.
    weight_shape : tuple of 4 ints
        ``(C_out, C_in / groups, kH, kW)``.
    stride, padding, dilation, groups
        As in the forward call.

    Returns
    -------
    grad_weight : ndarray of shape (C_out, C_in / groups, kH, kW)

    Notes
    -----
    ``grad_weight[k, c, i, j] = sum_{n, oh, ow} grad_output[n, k, oh, ow] *
    x_pad[n, g * C_in/groups + c, oh * stride + i * dilation, ow * stride + j * dilation]``:
    the correlation of the input with ``grad_output``. The batch is split into a fixed number
    of parts whose partial sums are added in order, so the result does not depend on the
    thread count.

    See Also
    --------
    conv2d, conv2d_backward_input, conv2d_backward_bias
    cnncore.nn.Conv2d
    """
    func = "conv2d_backward_weight"
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C_out, H_out, W_out)"
    )
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    check_same_dtype(func, grad_output=grad_output, x=x)
    weight_shape = check_shape(weight_shape, "weight_shape", func, 4)
    geo, groups = _conv_setup(func, x.shape, weight_shape, stride, padding, dilation, groups)
    _check_grad_output(
        func,
        grad_output,
        x.shape[0],
        weight_shape[0],
        geo,
        f"x of shape {x.shape} and weight_shape={weight_shape}",
    )
    return _conv_param_grads(grad_output, x, weight_shape, geo, groups, bias=False)[0]


def _conv_param_grads(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight_shape: tuple[int, ...],
    geo: ConvGeometry,
    groups: int,
    bias: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Kernel call of :func:`conv2d_backward_weight` (arguments validated); with ``bias``
    the bias gradient too, computed in the same pass."""
    dw = np.empty(weight_shape, dtype=grad_output.dtype)
    db = np.empty(weight_shape[0], dtype=grad_output.dtype) if bias else None
    if dw.size == 0 or x.size == 0 or grad_output.size == 0:
        dw[...] = 0
        if db is not None:
            _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
        return dw, db
    algo = select_conv_algorithm(weight_shape, groups, geo, "weight", x.shape, x.dtype)
    with blas_single_thread():
        _conv.conv2d_backward_weight(
            grad_output, x, dw, db, *_conv_kernel_args(geo, groups), algo, get_num_threads()
        )
    return dw, db


def _conv_all_grads(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    geo: ConvGeometry,
    groups: int,
    bias: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Kernel call of :func:`conv2d_backward` with both the input and the weight gradient
    (arguments validated, no empty array): one kernel call, which runs both passes' chosen
    algorithms -- in one pass over ``grad_output`` where both are the channel-blocked
    kernels -- bit-identical to :func:`_conv_input_grad` and :func:`_conv_param_grads`."""
    dtype = grad_output.dtype
    dx = np.empty(x.shape, dtype=dtype)
    dw = np.empty(weight.shape, dtype=dtype)
    db = np.empty(weight.shape[0], dtype=dtype) if bias else None
    algo_in = select_conv_algorithm(weight.shape, groups, geo, "input", x.shape, dtype)
    algo_w = select_conv_algorithm(weight.shape, groups, geo, "weight", x.shape, dtype)
    with blas_single_thread():
        _conv.conv2d_backward_input_weight(
            grad_output,
            x,
            weight,
            dx,
            dw,
            db,
            *_conv_kernel_args(geo, groups),
            algo_in,
            algo_w,
            get_num_threads(),
        )
    return dx, dw, db


@accepts_unbatched({"grad_output": _GO_SHAPE}, batched_outputs=False)
def conv2d_backward_bias(grad_output: ArrayLike) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its bias: ``grad_output.sum((0, 2, 3))``.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)

    Returns
    -------
    grad_bias : ndarray of shape (C_out,)

    See Also
    --------
    conv2d, conv2d_backward_weight
    cnncore.nn.Conv2d
    """
    func = "conv2d_backward_bias"
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C_out, H_out, W_out)"
    )
    db = np.empty(grad_output.shape[1], dtype=grad_output.dtype)
    _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
    return db


def _check_output_mask(func: str, output_mask: Any) -> list[bool]:
    """``output_mask``: a tuple or list of 3 bools (which of grad_x, grad_weight, grad_bias)."""
    if not isinstance(output_mask, (tuple, list)):
        raise TypeError(
            f"{func}(): output_mask must be a tuple or list of 3 bools. Received: "
            f"output_mask of type {type(output_mask).__name__}"
        )
    if len(output_mask) != 3:
        raise ValueError(
            f"{func}(): output_mask must hold 3 bools (grad_x, grad_weight, "
            f"grad_bias). Received: output_mask={output_mask!r}"
        )
    return [check_bool(m, f"output_mask[{i}]", func) for i, m in enumerate(output_mask)]


@accepts_unbatched({"grad_output": _GO_SHAPE, "x": _X_SHAPE}, batched_outputs=(True, False, False))
def conv2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    output_mask: Sequence[bool] = (True, True, True),
) -> tuple[np.ndarray | None, ...]:
    """All gradients of :func:`conv2d` in one call, as a layer's backward pass needs them.

    Same results as :func:`torch.ops.aten.convolution_backward`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    x : array_like of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)
        The forward input.
    weight : array_like of shape (C_out, C_in / groups, kH, kW)
        The filters of the forward pass.
    stride, padding, dilation, groups
        As in the forward call.
    output_mask : sequence of 3 bools, default (True, True, True)
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in), or None
    grad_weight : ndarray of shape (C_out, C_in / groups, kH, kW), or None
    grad_bias : ndarray of shape (C_out,), or None

    Notes
    -----
    The bias gradient is summed in the weight-gradient pass, while each part of the batch of
    ``grad_output`` is in cache; it is bit-identical to :func:`conv2d_backward_bias`.  The
    other two are those of :func:`conv2d_backward_input` and :func:`conv2d_backward_weight`.

    See Also
    --------
    conv2d_backward_input, conv2d_backward_weight, conv2d_backward_bias
    cnncore.nn.Conv2d
    """
    func = "conv2d_backward"
    mask = _check_output_mask(func, output_mask)
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C_out, H_out, W_out)"
    )
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    weight = as_float_array(
        weight, "weight", func, ndim=4, ndim_text="a 4-D array (C_out, C_in/groups, kH, kW)"
    )
    check_same_dtype(func, grad_output=grad_output, x=x, weight=weight)
    geo, groups = _conv_setup(func, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_grad_output(
        func,
        grad_output,
        x.shape[0],
        weight.shape[0],
        geo,
        f"x of shape {x.shape} and weight of shape {weight.shape}",
    )
    if mask[0] and mask[1] and grad_output.size and x.size and weight.size:
        return _conv_all_grads(grad_output, x, weight, geo, groups, bias=mask[2])
    dx = _conv_input_grad(grad_output, weight, x.shape, geo, groups) if mask[0] else None
    dw = db = None
    if mask[1]:
        dw, db = _conv_param_grads(grad_output, x, weight.shape, geo, groups, bias=mask[2])
    elif mask[2]:
        db = np.empty(weight.shape[0], dtype=grad_output.dtype)
        _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
    return dx, dw, db


# --------------------------------------------------------------------------------------------
# Transposed convolution: the adjoint of conv2d, on the same kernels
# --------------------------------------------------------------------------------------------


@memoize_checks
def _conv_transpose_setup(
    func: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: Any,
    padding: Any,
    output_padding: Any,
    groups: Any,
    dilation: Any,
) -> tuple[ConvGeometry, int, tuple[int, int, int, int]]:
    """Check the channel/group bookkeeping of a transposed convolution and resolve its
    geometry: ``(geo, groups, output_shape)``, ``geo`` being that of the conv2d it is the
    adjoint of (see :func:`cnncore._geometry.conv_transpose2d_geometry`)."""
    groups = check_int(groups, "groups", func, min_value=1)
    n, c, h, w = x_shape
    c_in, cg_out, kh, kw = w_shape
    if kh < 1 or kw < 1:
        raise ValueError(
            f"{func}(): the kernel size must be at least 1x1. Received: weight with shape "
            f"{tuple(w_shape)}"
        )
    if c_in % groups != 0:
        raise ValueError(
            f"{func}(): in_channels (weight.shape[0]={c_in}) must be divisible by groups. "
            f"Received: groups={groups}"
        )
    if c != c_in:
        raise ValueError(
            f"{func}(): expected an input with weight.shape[0] = {c_in} channels. Received: "
            f"input with shape {tuple(x_shape)} ({c} channels)"
        )
    geo, (ho, wo) = conv_transpose2d_geometry(
        func, (h, w), (kh, kw), stride, padding, output_padding, dilation
    )
    out_shape = (n, cg_out * groups, ho, wo)
    check_numel(out_shape, "output", func)
    check_blas_dims(
        func,
        f"input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}",
        **{
            "C_out/groups*kH*kW": cg_out * kh * kw,
            "H_in*W_in": h * w,
            "H_out*W_out": ho * wo,
            "C_in": c_in,
        },
    )
    return geo, groups, out_shape


def conv_transpose2d_algorithms(
    input_shape: Sequence[int],
    weight_shape: Any,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    dtype: DTypeLike | None = None,
) -> dict[str, str]:
    """The algorithm each pass of a transposed convolution would run with now:
    ``{"forward": name, "input": name, "weight": name}`` (see :func:`conv2d_algorithms`; the
    forward runs conv2d's input-gradient kernel, the input gradient conv2d's forward)."""
    func = "conv_transpose2d_algorithms"
    in_shape = check_shape(input_shape, "input_shape", func, 4)
    w_shape = check_shape(weight_shape, "weight_shape", func, 4)
    geo, groups, out_shape = _conv_transpose_setup(
        func, in_shape, w_shape, stride, padding, output_padding, groups, dilation
    )
    dt = None if dtype is None else _float_dtype(dtype, func)
    return {
        mine: algorithm_name(
            select_conv_algorithm(w_shape, groups, geo, conv, out_shape, dt, measure=False)
        )
        for mine, conv in (("forward", "input"), ("input", "forward"), ("weight", "weight"))
    }


@accepts_unbatched({"x": _X_SHAPE})
def conv_transpose2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
) -> np.ndarray:
    """2-D transposed convolution ("deconvolution"): the adjoint of :func:`conv2d`, plus bias.

    Same semantics and output size as :func:`torch.nn.functional.conv_transpose2d`.

    Parameters
    ----------
    x : array_like of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)
        Input images, float32 or float64 (``H_in, W_in >= 1``).
    weight : array_like of shape (C_in, C_out / groups, kH, kW)
        Filters, same dtype as ``x`` (note the order: input channels first).
    bias : array_like of shape (C_out,), optional
        Added to every output position of each channel.
    stride : int or (int, int), default 1
        Step between the positions where consecutive inputs are spread.
    padding : int or (int, int), default 0
        ``dilation * (k - 1) - padding`` zero padding is added to both sides of the input --
        i.e. ``padding`` rows/columns are removed from each side of the full output.
    output_padding : int or (int, int), default 0
        Extra rows/columns added to the bottom/right of the output (to pick one of the
        ``stride`` input sizes a strided :func:`conv2d` maps to the same size).  Must be
        smaller than ``stride`` or ``dilation`` in each dimension.
    groups : int, default 1
        Split the input channels and filters into ``groups`` independent convolutions.
    dilation : int or (int, int), default 1
        Spacing between kernel taps.

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Same dtype as ``x``.

    Notes
    -----
    For each axis, ``H_out = (H_in - 1) * stride - 2 * padding + dilation * (kH - 1) +
    output_padding + 1``.

    ``y = bias + conv2d_backward_input(x, weight, (N, C_out, H_out, W_out), stride, padding,
    dilation, groups)``: each input value ``x[n, c, h, w]`` spreads ``x[n, c, h, w] *
    weight[c, k]`` over the outputs ``(h * stride - padding + i * dilation, w * stride -
    padding + j * dilation)`` of the channels ``k`` of its group.  cnncore runs conv2d's
    input-gradient kernels (with the bias added in the same pass): GEMM + col2im, Winograd,
    direct, or the depthwise kernels when each group has one output channel.  Output
    rows/columns that no input reaches (``output_padding`` >= stride) hold the bias.

    See Also
    --------
    conv_transpose2d_backward, conv2d
    cnncore.nn.ConvTranspose2d : the layer that holds ``weight`` and ``bias``.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.ones((1, 1, 2, 2), np.float32)
    >>> w = np.ones((1, 1, 2, 2), np.float32)
    >>> cnncore.conv_transpose2d(x, w, stride=1)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    """
    func = "conv_transpose2d"
    x, weight, bias, dtype = float_operands(
        func, x, weight, bias, x_ndim=4, x_text=_X4, w_ndim=4,
        w_text="a 4-D array (C_in, C_out/groups, kH, kW)",
    )  # fmt: skip
    geo, groups, out_shape = _conv_transpose_setup(
        func, x.shape, weight.shape, stride, padding, output_padding, groups, dilation
    )
    if bias is not None and bias.shape != (out_shape[1],):
        raise ValueError(
            f"{func}(): bias must have shape (C_out,) = ({out_shape[1]},). Received: bias with "
            f"shape {bias.shape}"
        )
    y = np.empty(out_shape, dtype=dtype)
    if y.size == 0:
        return y
    if x.size == 0 or weight.size == 0:  # no input reaches the output: the bias
        y[...] = 0 if bias is None else bias[None, :, None, None]
        return y
    algo = select_conv_algorithm(weight.shape, groups, geo, "input", out_shape, dtype)
    with blas_single_thread():
        _conv.conv_transpose2d_forward(
            x, weight, bias, y, *_conv_kernel_args(geo, groups), algo, get_num_threads()
        )
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE, "x": _X_SHAPE}, batched_outputs=(True, False, False))
def conv_transpose2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    output_mask: Sequence[bool] = (True, True, True),
) -> tuple[np.ndarray | None, ...]:
    """All gradients of :func:`conv_transpose2d`: ``(grad_x, grad_weight, grad_bias)``.

    Same results as the gradients PyTorch's autograd gives for
    :func:`torch.nn.functional.conv_transpose2d`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to the transposed convolution's output.
    x : array_like of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in)
        The forward input.
    weight : array_like of shape (C_in, C_out / groups, kH, kW)
        The filters of the forward pass.
    stride, padding, output_padding, groups, dilation
        As in the forward call.
    output_mask : sequence of 3 bools, default (True, True, True)
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H_in, W_in) or (C_in, H_in, W_in), or None
    grad_weight : ndarray of shape (C_in, C_out / groups, kH, kW), or None
    grad_bias : ndarray of shape (C_out,), or None

    Notes
    -----
    The transposed convolution is the adjoint of ``conv2d(., weight)`` from ``(H_out,
    W_out)`` images to ``(H_in, W_in)`` ones, so its gradients are conv2d's passes with the
    roles swapped: ``grad_x = conv2d(grad_output, weight, stride, padding, dilation, groups)``
    (cropped to ``(H_in, W_in)`` when ``output_padding`` >= stride),
    ``grad_weight = conv2d_backward_weight(x, grad_output, weight.shape, ...)`` (``x`` in the
    role of conv2d's output gradient) and ``grad_bias = grad_output.sum((0, 2, 3))``.  They
    run conv2d's kernels, with the same thread-count independence.

    See Also
    --------
    conv_transpose2d, conv2d_backward
    cnncore.nn.ConvTranspose2d
    """
    func = "conv_transpose2d_backward"
    mask = _check_output_mask(func, output_mask)
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C_out, H_out, W_out)"
    )
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    weight = as_float_array(
        weight, "weight", func, ndim=4, ndim_text="a 4-D array (C_in, C_out/groups, kH, kW)"
    )
    check_same_dtype(func, grad_output=grad_output, x=x, weight=weight)
    geo, groups, out_shape = _conv_transpose_setup(
        func, x.shape, weight.shape, stride, padding, output_padding, groups, dilation
    )
    if grad_output.shape != out_shape:
        raise ValueError(
            f"{func}(): grad_output must have shape {out_shape} for x of shape {x.shape} and "
            f"weight of shape {weight.shape}. Received: grad_output with shape "
            f"{grad_output.shape}"
        )
    dx = dw = db = None
    if mask[0]:
        dx = np.empty(x.shape, dtype=x.dtype)
        if dx.size and (grad_output.size == 0 or weight.size == 0):
            dx[...] = 0
        elif dx.size:
            algo = select_conv_algorithm(
                weight.shape, groups, geo, "forward", grad_output.shape, x.dtype
            )
            with blas_single_thread():
                _conv.conv2d_forward(
                    grad_output,
                    weight,
                    None,
                    dx,
                    *_conv_kernel_args(geo, groups),
                    algo,
                    get_num_threads(),
                )
    if mask[1]:
        # conv2d's weight gradient, x as its output gradient, grad_output as its input
        dw = _conv_param_grads(x, grad_output, weight.shape, geo, groups, bias=False)[0]
    if mask[2]:
        db = np.empty(out_shape[1], dtype=grad_output.dtype)
        _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
    return dx, dw, db


def _unfold_geometry(
    func: str, in_hw: tuple[int, int], kernel_size: Any, stride: Any, padding: Any, dilation: Any
) -> ConvGeometry:
    kh, kw = to_pair(kernel_size, "kernel_size", func, min_value=1)
    if isinstance(padding, str):
        raise TypeError(
            f"{func}(): padding must be an int or a pair of ints. Received: padding={padding!r}"
        )
    return conv2d_geometry(func, in_hw, (kh, kw), stride, padding, dilation)


def _unfold_args(geo: ConvGeometry) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = geo
    return kh, kw, sh, sw, ph, pw, dh, dw, ho, wo


@accepts_unbatched({"x": "(N, C, H, W)"})
def im2col(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> np.ndarray:
    """Extract sliding local blocks (patches) of a batch of images, as columns.

    Same as :func:`torch.nn.functional.unfold`.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zero padding on both sides of each axis.
    dilation : int or (int, int), default 1

    Returns
    -------
    cols : ndarray of shape (N, C * kH * kW, L) or (C * kH * kW, L)
        Row ``(c * kH + i) * kW + j`` holds tap ``(i, j)`` of channel ``c``; column
        ``oh * W_out + ow`` the window at output position ``(oh, ow)``.

    Notes
    -----
    ``L = H_out * W_out`` with ``H_out = floor((H + 2 * padding - dilation * (kH - 1) - 1) /
    stride) + 1`` (the same formula as :func:`conv2d`).  ``conv2d(x, w)`` equals
    ``w.reshape(C_out, -1) @ im2col(x, ...)`` reshaped to ``(N, C_out, H_out, W_out)``.

    See Also
    --------
    col2im : the adjoint (sums overlapping patches back).
    conv2d
    """
    func = "im2col"
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C, H, W)")
    n, c, h, w = x.shape
    geo = _unfold_geometry(func, (h, w), kernel_size, stride, padding, dilation)
    (kh, kw), (ho, wo) = geo.kernel, geo.out
    shape = (n, c * kh * kw, ho * wo)
    check_numel(shape, "output", func, x.itemsize)
    cols = np.empty(shape, dtype=x.dtype)
    if x.size == 0:
        cols[...] = 0
    elif cols.size:
        _conv.im2col(x, cols, *_unfold_args(geo), get_num_threads())
    return cols


@accepts_unbatched({"cols": "(N, C*kH*kW, L)"})
def col2im(
    cols: ArrayLike,
    output_size: IntPair,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
) -> np.ndarray:
    """Sum columns of patches back into images: the adjoint of :func:`im2col`.

    Same as :func:`torch.nn.functional.fold`.

    Parameters
    ----------
    cols : array_like of shape (N, C * kH * kW, L) or (C * kH * kW, L)
    output_size : int or (int, int)
        Spatial size ``(H, W)`` of the images.
    kernel_size, stride, padding, dilation
        As in :func:`im2col`; ``L`` must equal ``H_out * W_out`` for this geometry.

    Returns
    -------
    x : ndarray of shape (N, C, H, W) or (C, H, W)
        Overlapping patch entries are summed; entries that fall in the padding are dropped.

    See Also
    --------
    im2col
    """
    func = "col2im"
    cols = as_float_array(cols, "cols", func, ndim=3, ndim_text="a 3-D array (N, C*kH*kW, L)")
    h, w = to_pair(output_size, "output_size", func, min_value=0)
    geo = _unfold_geometry(func, (h, w), kernel_size, stride, padding, dilation)
    (kh, kw), (ho, wo) = geo.kernel, geo.out
    n, ckk, length = cols.shape
    if ckk % (kh * kw) != 0:
        raise ValueError(
            f"{func}(): cols.shape[1] must be divisible by kH*kW = {kh * kw}. "
            f"Received: cols with shape {cols.shape}"
        )
    if length != ho * wo:
        raise ValueError(
            f"{func}(): cols.shape[2] must be the number of sliding blocks, {ho} * {wo} = "
            f"{ho * wo}, for output_size={(h, w)}. Received: cols with shape {cols.shape}"
        )
    c = ckk // (kh * kw)
    check_numel((n, c, h, w), "output", func, cols.itemsize)
    x = np.empty((n, c, h, w), dtype=cols.dtype)
    if cols.size == 0:
        x[...] = 0
    elif x.size:
        _conv.col2im(cols, x, *_unfold_args(geo), get_num_threads())
    return x


def prepare_conv2d(
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    dtype: DTypeLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    n_threads: int | None = None,
) -> tuple[Any, tuple[int, ...]]:
    """:func:`conv2d` for repeated calls on one input shape (inference plans).

    Checks the shapes and resolves the geometry once; returns ``(run, out_shape)`` where
    ``run(x, weight, bias, out)`` writes ``conv2d(x, weight, bias, stride, padding,
    dilation, groups)`` into ``out`` -- the same kernel and algorithm choice, so the result is
    bit-identical -- without checking its arguments again: ``x``, ``weight``, ``bias`` (or
    None) and ``out`` must be C-contiguous arrays of ``dtype`` and of the prepared shapes.
    The caller holds the BLAS single-thread cap (:func:`cnncore._config.blas_single_thread`).
    ``n_threads`` fixes the kernel's thread count (None: :func:`cnncore.get_num_threads` at
    each call); results do not depend on it.
    """
    func = "conv2d"
    geo, groups = _conv_setup(
        func, tuple(x_shape), tuple(weight_shape), stride, padding, dilation, groups
    )
    out_shape = (x_shape[0], weight_shape[0], *geo.out)
    args = _conv_kernel_args(geo, groups)
    w_shape = tuple(weight_shape)
    x_shape, dtype = tuple(x_shape), np.dtype(dtype)
    if math.prod(out_shape) == 0 or math.prod(x_shape) == 0 or math.prod(w_shape) == 0:

        def run_general(
            x: np.ndarray, weight: np.ndarray, bias: Any, out: np.ndarray
        ) -> np.ndarray:
            out[...] = conv2d(x, weight, bias, stride, padding, dilation, groups)
            return out

        return run_general, out_shape
    forward = _conv.conv2d_forward

    def run(x: np.ndarray, weight: np.ndarray, bias: Any, out: np.ndarray) -> np.ndarray:
        # the algorithm is chosen per call: a cnncore.conv_algorithm() block may force one
        algo = select_conv_algorithm(w_shape, groups, geo, "forward", x_shape, dtype)
        forward(x, weight, bias, out, *args, algo, n_threads or get_num_threads())
        return out

    return run, out_shape
