"""Functional API: validated, dtype-dispatching wrappers around the Cython kernels.

Semantics and argument names follow ``torch.nn.functional`` (NCHW layout, output-size
formulas, ``ceil_mode`` rule, max-pool index encoding), so results can be checked one
against the other.  Every function accepts any array-like; float32 and float64 are computed
in their own precision (the output dtype is the input dtype), other dtypes raise TypeError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _activation, _linear, _loss, _pad, _pool
from ._config import blas_single_thread, get_num_threads, load_kernels
from ._geometry import (
    PAD_MODES,
    ConvGeometry,
    adaptive_pool2d_output_size,
    conv2d_geometry,
    pad2d_geometry,
    pad2d_sides,
    pool2d_geometry,
    unpool2d_geometry,
)
from ._validation import (
    MAX_PARAM,
    as_float_array,
    as_index_array,
    as_ndarray,
    check_bool,
    check_choice,
    check_int,
    check_numel,
    check_real,
    check_same_dtype,
    check_shape,
    to_pair,
)

__all__ = [
    "conv2d",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_backward_bias",
    "conv2d_backward",
    "im2col",
    "col2im",
    # activations
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
    # losses
    "cross_entropy",
    "cross_entropy_backward",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "binary_cross_entropy",
    "binary_cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "l1_loss",
    "l1_loss_backward",
    "msle_loss",
    "msle_loss_backward",
    "mape_loss",
    "mape_loss_backward",
    "l2_loss",
    "l2_loss_backward",
]

_BLAS_INT_MAX = 2**31 - 1

# The convolution kernels, compiled for the widest vector unit this CPU has.
_conv, _CONV_SIMD = load_kernels("_conv")

# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

#: Force one convolution algorithm ("gemm" or "direct") instead of the per-shape choice.
#: For tests and benchmarks; ``None`` means automatic.
_FORCE_CONV_ALGORITHM: str | None = None

# Direct loops beat im2col + GEMM for large images with few channels per group: im2col then
# writes kh*kw copies of a big image for a GEMM too thin to use BLAS well (e.g. 1->8 channels
# on 256x256: 1.2 vs 1.8 ms forward on 2 cores).  On MNIST-sized images GEMM wins even with
# one input channel (0.26 vs 0.50 ms for 64x1x28x28 -> 6, k5), so it is the default.
_DIRECT_MAX_CHANNELS = 2
_DIRECT_MIN_OUTPUT_PIXELS = 128 * 128
# The forward pass also goes direct for few output channels and deep windows at unit stride:
# the direct kernel keeps a block of outputs in registers over all C*kh*kw taps, while a GEMM
# with M = C_out <= 16 is dominated by im2col and BLAS packing (64x6x14x14 -> 16, k5:
# 0.35 vs 0.51 ms; 64x3x32x32 -> 16, k3: 0.48 vs 0.92 ms; 64x1x28x28 -> 6, k5 (25 taps) and
# 64x16x10x10 -> 32, k3 stay GEMM).  Its input gradient is a correlation with C_in outputs
# and stays GEMM (0.80 vs 0.49 ms for the LeNet shape).
_DIRECT_FWD_MAX_OUT_CHANNELS = 16
_DIRECT_FWD_MIN_TAPS = 27
# ... as long as a thread's zero-padded copy of one sample's channels stays small (elements).
_DIRECT_FWD_MAX_SCRATCH = 1 << 20


# 3x3 / stride 1 / dilation 1 convolutions with enough channels per group run Winograd
# F(2x2, 3x3): 2.25x fewer multiplications, as 16 BLAS GEMMs per block of tiles (see
# src/_conv.pyx).  Speed-up over im2col + GEMM (forward / input grad / weight grad, float32,
# 2 threads): 64x32x14x14 -> 64: 1.44 / 1.28 / 1.05; 32x64x32x32 -> 64: 1.82 / 1.63 / 1.30;
# 64x16x28x28 -> 16: 1.74 / 1.58 / 1.37.  Below 16 channels per group or on small images the
# transforms cost more than they save: 64x8x28x28 -> 16: 0.94 / 0.75 / 0.75; 64x32x7x7 -> 64:
# 0.71 / 0.54 / 0.70; 64x64x4x4 -> 64: 0.71 / 0.64 / 0.71.
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_MIN_OUTPUT_PIXELS = 144


def _conv_algorithm(w_shape: tuple[int, ...], groups: int, geo: ConvGeometry,
                    which: str) -> int:
    """The kernel algorithm (``_conv.GEMM``, ``_conv.DIRECT`` or ``_conv.WINOGRAD``) for one
    convolution pass: ``which`` is ``"forward"``, ``"input"`` or ``"weight"`` (gradient).
    The kernels run GEMM where the one asked for does not apply."""
    if _FORCE_CONV_ALGORITHM is not None:
        return {"gemm": _conv.GEMM, "direct": _conv.DIRECT,
                "winograd": _conv.WINOGRAD}[_FORCE_CONV_ALGORITHM]
    k, cg, kh, kw = w_shape
    if (kh, kw) == (3, 3) and geo.stride == (1, 1) and geo.dilation == (1, 1) \
            and min(cg, k // groups) >= _WINOGRAD_MIN_CHANNELS \
            and geo.out[0] * geo.out[1] >= _WINOGRAD_MIN_OUTPUT_PIXELS \
            and (which != "input" or max(geo.padding) <= 2):
        return _conv.WINOGRAD
    if which == "weight":
        return _conv.GEMM
    forward = which == "forward"
    if cg <= _DIRECT_MAX_CHANNELS and geo.out[0] * geo.out[1] >= _DIRECT_MIN_OUTPUT_PIXELS:
        return _conv.DIRECT
    hp = geo.out[0] + (kh - 1) * geo.dilation[0]  # rows and columns the windows read
    wp = geo.out[1] + (kw - 1) * geo.dilation[1] + 16
    if (forward and geo.stride == (1, 1) and k // groups <= _DIRECT_FWD_MAX_OUT_CHANNELS
            and cg * kh * kw >= _DIRECT_FWD_MIN_TAPS
            and cg * hp * wp <= _DIRECT_FWD_MAX_SCRATCH):
        return _conv.DIRECT
    return _conv.GEMM


def _conv_setup(func: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: Any,
                padding: Any, dilation: Any, groups: Any) -> tuple[ConvGeometry, int]:
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
        raise ValueError(
            f"{func}(): expected an input with weight.shape[1] * groups = {cg} * {groups} = "
            f"{cg * groups} channels. Received: input with shape {tuple(x_shape)} "
            f"({c} channels), groups={groups}"
        )
    geo = conv2d_geometry(func, (h, w), (kh, kw), stride, padding, dilation)
    ho, wo = geo.out
    check_numel((n, k, ho, wo), "output", func)
    for what, v in (("C_in/groups*kH*kW", cg * kh * kw), ("H_out*W_out", ho * wo),
                    ("H_in*W_in", h * w), ("C_out", k)):
        if v > _BLAS_INT_MAX:
            raise ValueError(
                f"{func}(): {what} = {v} exceeds the BLAS 32-bit dimension limit "
                f"({_BLAS_INT_MAX}). Received: input shape {tuple(x_shape)}, weight shape "
                f"{tuple(w_shape)}"
            )
    return geo, groups


def _conv_kernel_args(geo: ConvGeometry, groups: int) -> tuple[int, ...]:
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return sh, sw, ph, pw, dh, dw, groups


def conv2d(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """2-D cross-correlation of a batch of images with a bank of filters, plus bias.

    Same semantics as :func:`torch.nn.functional.conv2d`.

    Parameters
    ----------
    x : array_like of shape (N, C_in, H_in, W_in)
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
    y : ndarray of shape (N, C_out, H_out, W_out)
        Same dtype as ``x``.

    Notes
    -----
    For each axis, ``H_out = floor((H_in + 2 * padding - dilation * (kH - 1) - 1) / stride) + 1``.

    ``y[n, k, oh, ow] = bias[k] + sum_{c, i, j} weight[k, c, i, j] *
    x_pad[n, g * C_in/groups + c, oh * stride + i * dilation, ow * stride + j * dilation]``
    where ``g = k // (C_out / groups)``.

    The algorithm follows from the shapes: a direct loop for few channels, Winograd
    F(2x2, 3x3) for 3x3 stride-1 filters with at least 16 channels per group (16 BLAS GEMMs
    per block of 2x2 output tiles; inputs holding Inf/NaN take the GEMM path), otherwise
    im2col in bounded blocks + BLAS GEMM.  They agree to float rounding.

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
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    weight = as_float_array(weight, "weight", func, ndim=4,
                            ndim_text="a 4-D array (C_out, C_in/groups, kH, kW)")
    if bias is not None:
        bias = as_float_array(bias, "bias", func)
    dtype = check_same_dtype(func, x=x, weight=weight, bias=bias)
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
    algo = _conv_algorithm(weight.shape, groups, geo, "forward")
    with blas_single_thread():
        _conv.conv2d_forward(x, weight, bias, y, *_conv_kernel_args(geo, groups), algo,
                             get_num_threads())
    return y


def conv2d_backward_input(grad_output: Any, weight: Any, input_shape: Any, stride: Any = 1,
                          padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its input.

    Same result as :func:`torch.nn.grad.conv2d_input`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    weight : array_like of shape (C_out, C_in / groups, kH, kW)
        The filters used in the forward pass, same dtype as ``grad_output``.
    input_shape : tuple of 4 ints
        ``(N, C_in, H_in, W_in)``, the shape of the forward input.
    stride, padding, dilation, groups
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H_in, W_in)

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
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4,
                                 ndim_text="a 4-D array (N, C_out, H_out, W_out)")
    weight = as_float_array(weight, "weight", func, ndim=4,
                            ndim_text="a 4-D array (C_out, C_in/groups, kH, kW)")
    check_same_dtype(func, grad_output=grad_output, weight=weight)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    geo, groups = _conv_setup(func, input_shape, weight.shape, stride, padding, dilation,
                              groups)
    _check_grad_output(func, grad_output, input_shape[0], weight.shape[0], geo,
                       f"input_shape={input_shape} and weight of shape {weight.shape}")
    return _conv_input_grad(grad_output, weight, input_shape, geo, groups)


def _check_grad_output(func: str, grad_output: np.ndarray, n: int, c_out: int,
                       geo: ConvGeometry, given: str) -> None:
    """A convolution gradient's ``grad_output`` must be ``(N, C_out, H_out, W_out)`` for the
    shapes ``given`` (named in the message)."""
    expected = (n, c_out, *geo.out)
    if grad_output.shape != expected:
        raise ValueError(
            f"{func}(): grad_output must have shape {expected} for {given}. Received: "
            f"grad_output with shape {grad_output.shape}"
        )


def _conv_input_grad(grad_output: np.ndarray, weight: np.ndarray,
                     input_shape: tuple[int, ...], geo: ConvGeometry,
                     groups: int) -> np.ndarray:
    """Kernel call of :func:`conv2d_backward_input` (arguments validated)."""
    dx = np.empty(input_shape, dtype=grad_output.dtype)
    if dx.size == 0:
        return dx
    if grad_output.size == 0 or weight.size == 0:
        dx[...] = 0
        return dx
    algo = _conv_algorithm(weight.shape, groups, geo, "input")
    with blas_single_thread():
        _conv.conv2d_backward_input(grad_output, weight, dx, *_conv_kernel_args(geo, groups),
                                    algo, get_num_threads())
    return dx


def conv2d_backward_weight(grad_output: Any, x: Any, weight_shape: Any, stride: Any = 1,
                           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its weight.

    Same result as :func:`torch.nn.grad.conv2d_weight`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    x : array_like of shape (N, C_in, H_in, W_in)
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
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4,
                                 ndim_text="a 4-D array (N, C_out, H_out, W_out)")
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    check_same_dtype(func, grad_output=grad_output, x=x)
    weight_shape = check_shape(weight_shape, "weight_shape", func, 4)
    geo, groups = _conv_setup(func, x.shape, weight_shape, stride, padding, dilation, groups)
    _check_grad_output(func, grad_output, x.shape[0], weight_shape[0], geo,
                       f"x of shape {x.shape} and weight_shape={weight_shape}")
    return _conv_param_grads(grad_output, x, weight_shape, geo, groups, bias=False)[0]


def _conv_param_grads(grad_output: np.ndarray, x: np.ndarray, weight_shape: tuple[int, ...],
                      geo: ConvGeometry, groups: int,
                      bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Kernel call of :func:`conv2d_backward_weight` (arguments validated); with ``bias``
    the bias gradient too, computed in the same pass."""
    dw = np.empty(weight_shape, dtype=grad_output.dtype)
    db = np.empty(weight_shape[0], dtype=grad_output.dtype) if bias else None
    if dw.size == 0 or x.size == 0 or grad_output.size == 0:
        dw[...] = 0
        if db is not None:
            _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
        return dw, db
    algo = _conv_algorithm(weight_shape, groups, geo, "weight")
    with blas_single_thread():
        _conv.conv2d_backward_weight(grad_output, x, dw, db, *_conv_kernel_args(geo, groups),
                                     algo, get_num_threads())
    return dw, db


def conv2d_backward_bias(grad_output: Any) -> np.ndarray:
    """Gradient of :func:`conv2d` with respect to its bias: ``grad_output.sum((0, 2, 3))``.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out)

    Returns
    -------
    grad_bias : ndarray of shape (C_out,)

    See Also
    --------
    conv2d, conv2d_backward_weight
    cnncore.nn.Conv2d
    """
    func = "conv2d_backward_bias"
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4,
                                 ndim_text="a 4-D array (N, C_out, H_out, W_out)")
    db = np.empty(grad_output.shape[1], dtype=grad_output.dtype)
    _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
    return db


def conv2d_backward(grad_output: Any, x: Any, weight: Any, stride: Any = 1, padding: Any = 0,
                    dilation: Any = 1, groups: int = 1,
                    output_mask: Any = (True, True, True)) -> tuple[np.ndarray | None, ...]:
    """All gradients of :func:`conv2d` in one call, as a layer's backward pass needs them.

    Same results as :func:`torch.ops.aten.convolution_backward`.

    Parameters
    ----------
    grad_output : array_like of shape (N, C_out, H_out, W_out)
        Gradient of the loss with respect to the convolution's output.
    x : array_like of shape (N, C_in, H_in, W_in)
        The forward input.
    weight : array_like of shape (C_out, C_in / groups, kH, kW)
        The filters of the forward pass.
    stride, padding, dilation, groups
        As in the forward call.
    output_mask : sequence of 3 bools, default (True, True, True)
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H_in, W_in), or None
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
    if not isinstance(output_mask, (tuple, list)):
        raise TypeError(f"{func}(): output_mask must be a tuple or list of 3 bools. Received: "
                        f"output_mask of type {type(output_mask).__name__}")
    if len(output_mask) != 3:
        raise ValueError(f"{func}(): output_mask must hold 3 bools (grad_x, grad_weight, "
                         f"grad_bias). Received: output_mask={output_mask!r}")
    mask = [check_bool(m, f"output_mask[{i}]", func) for i, m in enumerate(output_mask)]
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4,
                                 ndim_text="a 4-D array (N, C_out, H_out, W_out)")
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C_in, H_in, W_in)")
    weight = as_float_array(weight, "weight", func, ndim=4,
                            ndim_text="a 4-D array (C_out, C_in/groups, kH, kW)")
    check_same_dtype(func, grad_output=grad_output, x=x, weight=weight)
    geo, groups = _conv_setup(func, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_grad_output(func, grad_output, x.shape[0], weight.shape[0], geo,
                       f"x of shape {x.shape} and weight of shape {weight.shape}")
    dx = _conv_input_grad(grad_output, weight, x.shape, geo, groups) if mask[0] else None
    dw = db = None
    if mask[1]:
        dw, db = _conv_param_grads(grad_output, x, weight.shape, geo, groups, bias=mask[2])
    elif mask[2]:
        db = np.empty(weight.shape[0], dtype=grad_output.dtype)
        _conv.conv2d_backward_bias(grad_output, db, get_num_threads())
    return dx, dw, db


def _unfold_geometry(func: str, in_hw: tuple[int, int], kernel_size: Any, stride: Any,
                     padding: Any, dilation: Any) -> ConvGeometry:
    kh, kw = to_pair(kernel_size, "kernel_size", func, min_value=1)
    if isinstance(padding, str):
        raise TypeError(
            f"{func}(): padding must be an int or a pair of ints. Received: padding={padding!r}"
        )
    return conv2d_geometry(func, in_hw, (kh, kw), stride, padding, dilation)


def _unfold_args(geo: ConvGeometry) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = geo
    return kh, kw, sh, sw, ph, pw, dh, dw, ho, wo


def im2col(x: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1) -> np.ndarray:
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
    cols : ndarray of shape (N, C * kH * kW, L) (or (C * kH * kW, L) for a 3-D input)
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
    x = as_float_array(x, "x", func)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{func}(): x must be a 4-D array (N, C, H, W) or a 3-D array (C, H, W). "
            f"Received: x with shape {x.shape}"
        )
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
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
    return cols[0] if unbatched else cols


def col2im(cols: Any, output_size: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1) -> np.ndarray:
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
    x : ndarray of shape (N, C, H, W) (or (C, H, W) for a 2-D ``cols``)
        Overlapping patch entries are summed; entries that fall in the padding are dropped.

    See Also
    --------
    im2col
    """
    func = "col2im"
    cols = as_float_array(cols, "cols", func)
    if cols.ndim not in (2, 3):
        raise ValueError(
            f"{func}(): cols must be a 3-D array (N, C*kH*kW, L) or a 2-D array (C*kH*kW, L). "
            f"Received: cols with shape {cols.shape}"
        )
    unbatched = cols.ndim == 2
    if unbatched:
        cols = cols[None]
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
    return x[0] if unbatched else x


# ----------------------------------------------------------------------------------------------
# Fully connected
# ----------------------------------------------------------------------------------------------


def _linear_rows(func: str, a: np.ndarray, name: str, features: int, what: str) -> np.ndarray:
    if a.ndim < 1 or a.shape[-1] != features:
        raise ValueError(
            f"{func}(): the last dimension of {name} must be {what} = {features}. "
            f"Received: {name} with shape {a.shape}"
        )
    return a.reshape(math.prod(a.shape[:-1]), features)


def _check_blas_dims(func: str, shapes: str, **dims: int) -> None:
    """The GEMM dimensions the linear kernels pass to BLAS as 32-bit ints."""
    for what, v in dims.items():
        if v > _BLAS_INT_MAX:
            raise ValueError(
                f"{func}(): {what} = {v} exceeds the BLAS 32-bit dimension limit "
                f"({_BLAS_INT_MAX}). Received: {shapes}"
            )


def linear(x: Any, weight: Any, bias: Any = None) -> np.ndarray:
    """Affine map of the last dimension: ``y = x @ weight.T + bias``.

    Same as :func:`torch.nn.functional.linear`.

    Parameters
    ----------
    x : array_like of shape (*, in_features)
    weight : array_like of shape (out_features, in_features)
    bias : array_like of shape (out_features,), optional

    Returns
    -------
    y : ndarray of shape (*, out_features)

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
    x = as_float_array(x, "x", func)
    weight = as_float_array(weight, "weight", func, ndim=2,
                            ndim_text="a 2-D array (out_features, in_features)")
    if bias is not None:
        bias = as_float_array(bias, "bias", func)
    dtype = check_same_dtype(func, x=x, weight=weight, bias=bias)
    out_f, in_f = weight.shape
    if bias is not None and bias.shape != (out_f,):
        raise ValueError(f"{func}(): bias must have shape (out_features,) = ({out_f},). "
                         f"Received: bias with shape {bias.shape}")
    x2 = _linear_rows(func, x, "x", in_f, "in_features (weight.shape[1])")
    check_numel((*x.shape[:-1], out_f), "output", func)
    _check_blas_dims(func, f"x with shape {x.shape}, weight with shape {weight.shape}",
                     in_features=in_f, out_features=out_f)
    y = np.empty((x2.shape[0], out_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_forward(x2, weight, bias, y, get_num_threads())
    return y.reshape(*x.shape[:-1], out_f)


def linear_backward_input(grad_output: Any, weight: Any) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``x``: ``grad_output @ weight``.

    Parameters
    ----------
    grad_output : array_like of shape (*, out_features)
    weight : array_like of shape (out_features, in_features)

    Returns
    -------
    grad_x : ndarray of shape (*, in_features)

    See Also
    --------
    linear, cnncore.nn.Linear
    """
    func = "linear_backward_input"
    grad_output = as_float_array(grad_output, "grad_output", func)
    weight = as_float_array(weight, "weight", func, ndim=2,
                            ndim_text="a 2-D array (out_features, in_features)")
    dtype = check_same_dtype(func, grad_output=grad_output, weight=weight)
    out_f, in_f = weight.shape
    g2 = _linear_rows(func, grad_output, "grad_output", out_f, "out_features (weight.shape[0])")
    check_numel((*grad_output.shape[:-1], in_f), "output", func, grad_output.itemsize)
    _check_blas_dims(func, f"grad_output with shape {grad_output.shape}, weight with shape "
                     f"{weight.shape}", in_features=in_f, out_features=out_f)
    dx = np.empty((g2.shape[0], in_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_backward_input(g2, weight, dx, get_num_threads())
    return dx.reshape(*grad_output.shape[:-1], in_f)


def linear_backward_weight(grad_output: Any, x: Any) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``weight``: ``grad_output.T @ x`` over all
    leading dimensions.

    Parameters
    ----------
    grad_output : array_like of shape (*, out_features)
    x : array_like of shape (*, in_features)
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
    _check_blas_dims(func, f"grad_output with shape {grad_output.shape}, x with shape "
                     f"{x.shape}", in_features=in_f, out_features=out_f, rows=rows)
    dw = np.empty((out_f, in_f), dtype=dtype)
    with blas_single_thread():
        _linear.linear_backward_weight(grad_output.reshape(rows, out_f), x.reshape(rows, in_f),
                                       dw, get_num_threads())
    return dw


def linear_backward_bias(grad_output: Any) -> np.ndarray:
    """Gradient of :func:`linear` with respect to ``bias``: ``grad_output`` summed over all
    leading dimensions, shape ``(out_features,)``.

    See Also
    --------
    linear, cnncore.nn.Linear
    """
    func = "linear_backward_bias"
    grad_output = as_float_array(grad_output, "grad_output", func)
    if grad_output.ndim < 1:
        raise ValueError(f"{func}(): grad_output must have at least 1 dimension. Received: "
                         f"grad_output with shape {grad_output.shape}")
    out_f = grad_output.shape[-1]
    db = np.empty(out_f, dtype=grad_output.dtype)
    # the per-channel sum of conv2d_backward_bias, with each row as a 1x1 "image"
    rows = math.prod(grad_output.shape[:-1])
    _conv.conv2d_backward_bias(grad_output.reshape(rows, out_f, 1, 1), db, get_num_threads())
    return db


__all__ += ["linear", "linear_backward_input", "linear_backward_weight", "linear_backward_bias"]


# ----------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------
#
# Every activation takes an array of any shape and returns one of the same shape and dtype.
# ``out=`` writes the result into an existing C-contiguous, writeable array of that shape and
# dtype instead of allocating one; it may be the input itself (in-place update). An ``out``
# that partially overlaps an input is handled by reading from a copy of the input.
#
# Backward functions take what PyTorch's autograd saves, the cheaper tensor to keep alive:
# relu, sigmoid, tanh, softmax and log_softmax take the forward *output* (relu accepts the
# input equally well: both have the same sign pattern); leaky_relu takes the forward *input*.


def _as_float_any(x: Any, name: str, func: str) -> np.ndarray:
    """:func:`as_float_array` for inputs of any ndim (it turns a 0-d input into shape (1,))."""
    arr = as_float_array(x, name, func)
    if arr.shape == (1,) and np.ndim(x) == 0:
        arr = arr.reshape(())
    return arr


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
    same = (arr.__array_interface__["data"][0] == out.__array_interface__["data"][0]
            and arr.shape == out.shape and arr.flags.c_contiguous)
    return arr if same else arr.copy()


def _check_real(value: Any, name: str, func: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{func}(): {name} must be a real number. Received: {name}={value!r}")
    return float(value)


def _unary(func: str, op: int, x: Any, out: Any, slope: float = 0.0) -> np.ndarray:
    x = _as_float_any(x, "x", func)
    out = _check_out(func, out, x.shape, x.dtype)
    x = _unalias(x, out)
    _activation.unary(op, x.reshape(-1), out.reshape(-1), slope, get_num_threads())
    return out


def _binary(func: str, op: int, grad_output: Any, saved: Any, saved_name: str, out: Any,
            slope: float = 0.0) -> np.ndarray:
    g = _as_float_any(grad_output, "grad_output", func)
    a = _as_float_any(saved, saved_name, func)
    dtype = check_same_dtype(func, grad_output=g, **{saved_name: a})
    if g.shape != a.shape:
        raise ValueError(
            f"{func}(): grad_output must have the shape of {saved_name}, {a.shape}. "
            f"Received: grad_output with shape {g.shape}"
        )
    out = _check_out(func, out, g.shape, dtype)
    g, a = _unalias(g, out), _unalias(a, out)
    _activation.binary(op, g.reshape(-1), a.reshape(-1), out.reshape(-1), slope,
                       get_num_threads())
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
    return _unary("relu", _activation.RELU, x, out)


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
    return _binary("relu_backward", _activation.RELU_BW, grad_output, output, "output", out)


def leaky_relu(x: Any, negative_slope: float = 0.01, *,
               out: np.ndarray | None = None) -> np.ndarray:
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
    slope = _check_real(negative_slope, "negative_slope", "leaky_relu")
    return _unary("leaky_relu", _activation.LEAKY_RELU, x, out, slope)


def leaky_relu_backward(grad_output: Any, x: Any, negative_slope: float = 0.01, *,
                        out: np.ndarray | None = None) -> np.ndarray:
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
    slope = _check_real(negative_slope, "negative_slope", func)
    return _binary(func, _activation.LEAKY_RELU_BW, grad_output, x, "x", out, slope)


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
    return _unary("sigmoid", _activation.SIGMOID, x, out)


def sigmoid_backward(grad_output: Any, output: Any, *,
                     out: np.ndarray | None = None) -> np.ndarray:
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
    return _binary("sigmoid_backward", _activation.SIGMOID_BW, grad_output, output, "output",
                   out)


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
    return _unary("tanh", _activation.TANH, x, out)


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
    return _binary("tanh_backward", _activation.TANH_BW, grad_output, output, "output", out)


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
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return outer, shape[dim], inner


def _softmax(func: str, x: Any, dim: Any, take_log: bool, out: Any) -> np.ndarray:
    x = _as_float_any(x, "x", func)
    split = _softmax_split(func, x.shape, dim)
    out = _check_out(func, out, x.shape, x.dtype)
    x = _unalias(x, out)
    if x.size:
        _activation.softmax(x.reshape(split), out.reshape(split), take_log, get_num_threads())
    return out


def _softmax_bw(func: str, grad_output: Any, output: Any, dim: Any, take_log: bool,
                out: Any) -> np.ndarray:
    g = _as_float_any(grad_output, "grad_output", func)
    y = _as_float_any(output, "output", func)
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
        _activation.softmax_backward(g.reshape(split), y.reshape(split), out.reshape(split),
                                     take_log, get_num_threads())
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


def softmax_backward(grad_output: Any, output: Any, dim: int = 1, *,
                     out: np.ndarray | None = None) -> np.ndarray:
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


def log_softmax_backward(grad_output: Any, output: Any, dim: int = 1, *,
                         out: np.ndarray | None = None) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
#
# One convention for every loss:
#
# * ``loss_fn(prediction, target, *, reduction='mean', return_grad=False, ...)``.
# * ``reduction='mean'`` / ``'sum'`` return a NumPy scalar of the prediction's dtype
#   (``np.float32`` or ``np.float64``, like ``ndarray.mean()``); ``'none'`` returns an array of
#   per-element (per-sample for cross entropy) losses.  Sums are accumulated in float64 in a
#   fixed order, then rounded to the dtype.
# * ``return_grad=True`` returns ``(loss, grad)``, ``grad`` being the gradient of the *reduced*
#   loss with respect to the prediction (shape and dtype of the prediction); for
#   ``reduction='none'`` it is the gradient of the sum of the per-element losses (i.e. for an
#   upstream gradient of ones).  Loss and gradient come from the same single kernel pass.
# * ``loss_fn_backward(prediction, target, *, reduction='mean', ...)`` returns just ``grad``
#   (the same computation; for layers that only need the gradient).

_REDUCTIONS = ("mean", "sum", "none")


def _reduced(dtype: np.dtype, total: float, count: int, reduction: str,
             per_element: np.ndarray | None) -> Any:
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return dtype.type(total)
    return dtype.type(total / count) if count else dtype.type(np.nan)


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> Any:
    return arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))].item()


# Per pointwise loss: (kernel kind, name of the prediction argument, domain checks as
# (argument, predicate of *bad* values, requirement text)).
_POINTWISE_LOSSES: dict[str, tuple[int, str, tuple[tuple[str, Any, str], ...]]] = {
    "mse_loss": (_loss.MSE, "input", ()),
    "l2_loss": (_loss.MSE, "input", ()),
    "l1_loss": (_loss.L1, "input", ()),
    "mape_loss": (_loss.MAPE, "input", ()),
    "binary_cross_entropy_with_logits": (_loss.BCE_WITH_LOGITS, "logits", ()),
    "binary_cross_entropy": (
        _loss.BCE, "probs",
        (("probs", lambda a: ~((a >= 0) & (a <= 1)), "be between 0 and 1"),
         ("target", lambda a: ~((a >= 0) & (a <= 1)), "be between 0 and 1")),
    ),
    "msle_loss": (
        _loss.MSLE, "input",
        (("input", lambda a: a <= -1, "be > -1 (log1p is taken)"),
         ("target", lambda a: a <= -1, "be > -1 (log1p is taken)")),
    ),
}


def _pointwise_loss(name: str, func: str, prediction: Any, target: Any, reduction: Any,
                    want_grad: bool) -> tuple[Any, np.ndarray | None]:
    """The one implementation behind every elementwise loss and its ``_backward``."""
    kind, pred_name, domain = _POINTWISE_LOSSES[name]
    reduction = check_choice(reduction, "reduction", func, _REDUCTIONS)
    want_grad = check_bool(want_grad, "return_grad", func)
    p = _as_float_any(prediction, pred_name, func)
    t = _as_float_any(target, "target", func)
    dtype = check_same_dtype(func, **{pred_name: p, "target": t})
    if p.shape != t.shape:
        raise ValueError(
            f"{func}(): target must have the shape of {pred_name}, {p.shape}. Received: target "
            f"with shape {t.shape}"
        )
    per_element = np.empty(p.shape, dtype=dtype) if reduction == "none" else None
    grad = np.empty(p.shape, dtype=dtype) if want_grad else None
    gscale = 1.0 / p.size if reduction == "mean" and p.size else 1.0
    total, flags = _loss.pointwise(
        kind, p.reshape(-1), t.reshape(-1),
        None if per_element is None else per_element.reshape(-1),
        None if grad is None else grad.reshape(-1), gscale, get_num_threads())
    if flags:
        for arg, is_bad, requirement in domain:
            arr = p if arg == pred_name else t
            bad = is_bad(arr)
            if bad.any():
                raise ValueError(
                    f"{func}(): all elements of {arg} must {requirement}. Received: {arg} "
                    f"containing {_first_bad(arr, bad)!r}"
                )
    return _reduced(dtype, total, p.size, reduction, per_element), grad


def _loss_result(loss: Any, grad: np.ndarray | None, return_grad: bool) -> Any:
    return (loss, grad) if return_grad else loss


def _pointwise_loss_value(name: str, prediction: Any, target: Any, reduction: Any,
                          return_grad: Any) -> Any:
    """Body of the pointwise loss ``name``: its loss, or ``(loss, grad)``."""
    return _loss_result(*_pointwise_loss(name, name, prediction, target, reduction,
                                         return_grad), return_grad)


def _pointwise_loss_grad(name: str, prediction: Any, target: Any, reduction: Any) -> np.ndarray:
    """Body of ``<name>_backward``: the gradient alone."""
    return _pointwise_loss(name, name + "_backward", prediction, target, reduction, True)[1]


def mse_loss(input: Any, target: Any, *, reduction: str = "mean",
             return_grad: bool = False) -> Any:
    """Mean squared error, ``(input - target)**2`` per element.

    Same as :func:`torch.nn.functional.mse_loss` (values and gradients, all reductions).

    Parameters
    ----------
    input : array_like of any shape
        Predictions, float32 or float64.
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False
        Also return the gradient of the (reduced) loss with respect to ``input``.

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray of ``input``'s shape for 'none'
    grad : ndarray of ``input``'s shape (only with ``return_grad=True``)
        ``2 * (input - target)``, divided by ``input.size`` for 'mean'.

    See Also
    --------
    mse_loss_backward, l2_loss, l1_loss
    """
    return _pointwise_loss_value("mse_loss", input, target, reduction, return_grad)


def mse_loss_backward(input: Any, target: Any, *, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`mse_loss` with respect to ``input`` (the ``grad`` of
    ``mse_loss(..., return_grad=True)``)."""
    return _pointwise_loss_grad("mse_loss", input, target, reduction)


def l2_loss(input: Any, target: Any, *, reduction: str = "sum",
            return_grad: bool = False) -> Any:
    """Squared L2 norm of the error: ``sum((input - target)**2)``.

    With the default ``reduction='sum'`` this is the squared Euclidean distance between
    ``input`` and ``target`` -- *not* halved: TensorFlow's ``tf.nn.l2_loss(input - target)`` is
    half of it. Per element the loss is ``(input - target)**2``, so ``reduction='mean'`` equals
    :func:`mse_loss` and ``'none'`` gives the squared errors.

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'sum', 'mean', 'none'}, default 'sum'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``2 * (input - target)`` (divided by ``input.size`` for 'mean').

    See Also
    --------
    l2_loss_backward, mse_loss
    """
    return _pointwise_loss_value("l2_loss", input, target, reduction, return_grad)


def l2_loss_backward(input: Any, target: Any, *, reduction: str = "sum") -> np.ndarray:
    """Gradient of :func:`l2_loss` with respect to ``input``."""
    return _pointwise_loss_grad("l2_loss", input, target, reduction)


def l1_loss(input: Any, target: Any, *, reduction: str = "mean",
            return_grad: bool = False) -> Any:
    """Mean absolute error (MAE), ``|input - target|`` per element.

    Same as :func:`torch.nn.functional.l1_loss`; the gradient at ``input == target`` is 0
    (``sign(0)``), as in PyTorch.

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``sign(input - target)`` (divided by ``input.size`` for 'mean').

    See Also
    --------
    l1_loss_backward, mse_loss, mape_loss
    """
    return _pointwise_loss_value("l1_loss", input, target, reduction, return_grad)


def l1_loss_backward(input: Any, target: Any, *, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`l1_loss` with respect to ``input``."""
    return _pointwise_loss_grad("l1_loss", input, target, reduction)


def msle_loss(input: Any, target: Any, *, reduction: str = "mean",
              return_grad: bool = False) -> Any:
    """Mean squared logarithmic error, ``(log1p(input) - log1p(target))**2`` per element.

    Like Keras' ``MeanSquaredLogarithmicError`` for inputs and targets >= 0 (Keras averages
    over the last axis, then over the batch: the same as the mean over all elements). Keras
    silently clips negative values to ``epsilon``; cnncore instead requires every element of
    ``input`` and ``target`` to be > -1 (where ``log1p`` is defined) and raises ValueError
    otherwise.

    Parameters
    ----------
    input : array_like of any shape, all elements > -1
    target : array_like of the same shape and dtype, all elements > -1
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``2 * (log1p(input) - log1p(target)) / (1 + input)`` (divided by ``input.size`` for
        'mean').

    See Also
    --------
    msle_loss_backward, mse_loss
    """
    return _pointwise_loss_value("msle_loss", input, target, reduction, return_grad)


def msle_loss_backward(input: Any, target: Any, *, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`msle_loss` with respect to ``input``."""
    return _pointwise_loss_grad("msle_loss", input, target, reduction)


def mape_loss(input: Any, target: Any, *, reduction: str = "mean",
              return_grad: bool = False) -> Any:
    """Mean absolute percentage error, ``100 * |(target - input) / max(|target|, 1e-7)|``.

    Same as Keras' ``MeanAbsolutePercentageError`` (``epsilon = 1e-7``; Keras averages over
    the last axis, then over the batch: the same as the mean over all elements).

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``100 * sign(input - target) / max(|target|, 1e-7)`` (divided by ``input.size`` for
        'mean').

    See Also
    --------
    mape_loss_backward, l1_loss
    """
    return _pointwise_loss_value("mape_loss", input, target, reduction, return_grad)


def mape_loss_backward(input: Any, target: Any, *, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`mape_loss` with respect to ``input``."""
    return _pointwise_loss_grad("mape_loss", input, target, reduction)


def binary_cross_entropy_with_logits(logits: Any, target: Any, *, reduction: str = "mean",
                                     return_grad: bool = False) -> Any:
    """Binary cross entropy of ``sigmoid(logits)`` against ``target``, computed stably.

    Same as :func:`torch.nn.functional.binary_cross_entropy_with_logits` (without ``weight``
    and ``pos_weight``).

    Parameters
    ----------
    logits : array_like of any shape
    target : array_like of the same shape and dtype
        Usually in [0, 1] (not checked, as in PyTorch).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``logits``' dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``sigmoid(logits) - target`` (divided by ``logits.size`` for 'mean').

    Notes
    -----
    PyTorch's formula ``(1 - t) * x - log_sigmoid(x)`` with
    ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``: no overflow for any finite logit.

    See Also
    --------
    binary_cross_entropy_with_logits_backward, binary_cross_entropy, sigmoid
    """
    return _pointwise_loss_value("binary_cross_entropy_with_logits", logits, target, reduction,
                                 return_grad)


def binary_cross_entropy_with_logits_backward(logits: Any, target: Any, *,
                                              reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy_with_logits` with respect to ``logits``."""
    return _pointwise_loss_grad("binary_cross_entropy_with_logits", logits, target, reduction)


def binary_cross_entropy(probs: Any, target: Any, *, reduction: str = "mean",
                         return_grad: bool = False) -> Any:
    """Binary cross entropy ``-(t log p + (1 - t) log(1 - p))`` of probabilities.

    Same as :func:`torch.nn.functional.binary_cross_entropy` (without ``weight``): each log is
    clamped to >= -100, so ``p`` of exactly 0 or 1 gives a finite loss.

    Parameters
    ----------
    probs : array_like of any shape, all elements in [0, 1]
    target : array_like of the same shape and dtype, all elements in [0, 1]
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``probs``' dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``(p - t) / max(p (1 - p), 1e-12)`` (divided by ``probs.size`` for 'mean'), PyTorch's
        formula.

    Raises
    ------
    ValueError
        If an element of ``probs`` or ``target`` is outside [0, 1] (or NaN).

    See Also
    --------
    binary_cross_entropy_backward, binary_cross_entropy_with_logits
    """
    return _pointwise_loss_value("binary_cross_entropy", probs, target, reduction, return_grad)


def binary_cross_entropy_backward(probs: Any, target: Any, *,
                                  reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy` with respect to ``probs``."""
    return _pointwise_loss_grad("binary_cross_entropy", probs, target, reduction)


def _cross_entropy(func: str, logits: Any, target: Any, reduction: Any, label_smoothing: Any,
                   ignore_index: Any, want_grad: bool) -> tuple[Any, np.ndarray | None]:
    """The one implementation behind :func:`cross_entropy` and its backward."""
    reduction = check_choice(reduction, "reduction", func, _REDUCTIONS)
    want_grad = check_bool(want_grad, "return_grad", func)
    x = _as_float_any(logits, "logits", func)
    if x.ndim == 0:
        raise ValueError(
            f"{func}(): logits must be an array of shape (N, C, d1, ...) or (C,). "
            f"Received: logits with shape {x.shape}"
        )
    eps = _check_real(label_smoothing, "label_smoothing", func)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(
            f"{func}(): label_smoothing must be in [0, 1]. Received: label_smoothing={eps!r}"
        )
    ignore_index = check_int(ignore_index, "ignore_index", func, min_value=-(2**63),
                             max_value=2**63 - 1)
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None]
    n, c = x.shape[0], x.shape[1]
    spatial = x.shape[2:]
    if c == 0:
        raise ValueError(
            f"{func}(): logits must have at least one class (C >= 1). Received: logits with "
            f"shape {np.shape(logits)}"
        )
    t = as_ndarray(target, "target", func)
    index_shape = np.shape(logits)[:1] + spatial if not unbatched else ()
    if t.ndim == x.ndim - unbatched:  # class probabilities, shaped like logits
        if t.dtype.kind != "f":
            raise TypeError(
                f"{func}(): a target shaped like logits holds class probabilities and must be "
                f"float32/float64 like logits. Received: target.dtype={t.dtype}"
            )
        if t.shape != np.shape(logits):
            raise ValueError(
                f"{func}(): class-probability target must have the shape of logits, "
                f"{np.shape(logits)}. Received: target with shape {t.shape}"
            )
        t = as_float_array(t, "target", func)
        check_same_dtype(func, logits=x, target=t)
        if unbatched:
            t = t[None]
        labels, probs = None, t
        count = n * int(np.prod(spatial, dtype=np.int64))
    elif t.ndim == x.ndim - 1 - unbatched:  # class indices
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"{func}(): class-index target must have an integer dtype. Received: "
                f"target.dtype={t.dtype}"
            )
        if t.shape != index_shape:
            raise ValueError(
                f"{func}(): class-index target must have shape {index_shape} for logits of "
                f"shape {np.shape(logits)}. Received: target with shape {t.shape}"
            )
        if t.dtype.kind == "u" and t.size and int(t.max()) > 2**63 - 1:
            raise ValueError(
                f"{func}(): target contains class index {int(t.max())}, outside [0, {c - 1}]"
            )
        labels = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
        valid = labels != ignore_index
        bad = valid & ((labels < 0) | (labels >= c))
        if bad.any():
            raise ValueError(
                f"{func}(): target must hold class indices in [0, {c - 1}] (or ignore_index="
                f"{ignore_index}). Received: target containing {_first_bad(labels, bad)}"
            )
        probs = None
        count = int(np.count_nonzero(valid))
    else:
        raise ValueError(
            f"{func}(): target must be class indices of shape {index_shape} or class "
            f"probabilities of shape {np.shape(logits)}. Received: target with shape {t.shape}"
        )
    dtype = x.dtype
    # Rows of C classes: (N, C, d1, ...) -> (N * d1 * ..., C).
    if spatial:
        rows = np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(-1, c)
        if probs is not None:
            probs = np.ascontiguousarray(np.moveaxis(probs, 1, -1)).reshape(-1, c)
    else:
        rows = x
    per_row = np.empty(rows.shape[0], dtype=dtype) if reduction == "none" else None
    grad_rows = np.empty(rows.shape, dtype=dtype) if want_grad else None
    if reduction == "mean":
        gscale = 1.0 / count if count else 0.0
    else:
        gscale = 1.0
    total = _loss.cross_entropy(rows, labels, probs, ignore_index, eps, per_row, grad_rows,
                                gscale, get_num_threads())
    loss_shape = (n, *spatial)
    if per_row is not None:
        per_row = per_row.reshape(loss_shape)
        if unbatched:
            per_row = per_row[0]
    loss = _reduced(dtype, total, count, reduction, per_row)
    grad = None
    if grad_rows is not None:
        if spatial:
            grad = np.ascontiguousarray(np.moveaxis(grad_rows.reshape(n, *spatial, c), -1, 1))
        else:
            grad = grad_rows
        if unbatched:
            grad = grad[0]
    return loss, grad


def cross_entropy(logits: Any, target: Any, *, reduction: str = "mean",
                  label_smoothing: float = 0.0, ignore_index: int = -100,
                  return_grad: bool = False) -> Any:
    """Cross entropy between ``softmax(logits, dim=1)`` and class targets (fused, stable).

    Same as :func:`torch.nn.functional.cross_entropy` (without ``weight``): values and
    gradients, all reductions, ``label_smoothing`` and ``ignore_index``.

    Parameters
    ----------
    logits : array_like of shape (N, C), (N, C, d1, d2, ...) or (C,)
        Unnormalized scores, float32 or float64; the class axis is 1 (0 for a 1-D input).
    target : array_like
        Either class indices -- an integer array of shape (N,), (N, d1, d2, ...) or () -- with
        values in [0, C) or equal to ``ignore_index``; or class probabilities of the shape and
        dtype of ``logits``.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        'mean' divides the sum by the number of non-ignored targets (class indices) or by
        ``N * d1 * d2 * ...`` (probabilities); 'none' returns the per-sample losses, shaped
        like the class-index target.
    label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - label_smoothing) * target + label_smoothing / C``.
    ignore_index : int, default -100
        Class-index targets equal to it contribute no loss and no gradient.
    return_grad : bool, default False
        Also return the gradient of the (reduced) loss with respect to ``logits``.

    Returns
    -------
    loss : NumPy scalar of ``logits``' dtype ('mean', 'sum') or ndarray ('none')
        'mean' with every target ignored is NaN (as in PyTorch).
    grad : ndarray of ``logits``' shape (only with ``return_grad=True``)
        ``softmax(logits) * sum(w) - w`` times the reduction's scale, where ``w`` is the
        (smoothed) target distribution.

    Notes
    -----
    Per sample, with ``m = max(logits)`` and ``lse = m + log(sum(exp(logits - m)))``:
    ``loss = sum_c w_c * (lse - logits_c)``. Only ``exp`` of non-positive numbers is taken,
    so logits of any magnitude (e.g. +-1e4) give finite losses and gradients.

    Raises
    ------
    TypeError
        For a class-index target that is not of an integer dtype.
    ValueError
        For class indices out of range, or a target of the wrong shape.

    See Also
    --------
    cross_entropy_backward, log_softmax, binary_cross_entropy_with_logits
    """
    loss, grad = _cross_entropy("cross_entropy", logits, target, reduction, label_smoothing,
                                ignore_index, return_grad)
    return _loss_result(loss, grad, return_grad)


def cross_entropy_backward(logits: Any, target: Any, *, reduction: str = "mean",
                           label_smoothing: float = 0.0, ignore_index: int = -100) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to ``logits`` (the ``grad`` of
    ``cross_entropy(..., return_grad=True)``)."""
    return _cross_entropy("cross_entropy_backward", logits, target, reduction, label_smoothing,
                          ignore_index, True)[1]


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

_X_TEXT = "a 4-D array (N, C, H_in, W_in)"
_GO_TEXT = "a 4-D array (N, C, H_out, W_out)"


def _pool_input(x: Any, func: str, name: str = "x") -> np.ndarray:
    return as_float_array(x, name, func, ndim=4, ndim_text=_X_TEXT)


def _pool_grad(grad_output: Any, func: str) -> np.ndarray:
    return as_float_array(grad_output, "grad_output", func, ndim=4, ndim_text=_GO_TEXT)


def _check_grad_shape(func: str, grad_output: np.ndarray, expected: tuple[int, ...],
                      context: str) -> None:
    if grad_output.shape != tuple(expected):
        raise ValueError(
            f"{func}(): grad_output must have shape {tuple(expected)} for {context}. "
            f"Received: grad_output with shape {grad_output.shape}"
        )


def _nchw_result(func: str, x: np.ndarray, out_hw: tuple[int, int],
                 itemsize: int | None = None) -> np.ndarray:
    """A new ``(N, C, *out_hw)`` result of ``x``'s dtype, after the size check (``itemsize``:
    bytes per output position, default ``x.itemsize``)."""
    shape = (*x.shape[:2], *out_hw)
    check_numel(shape, "output", func, x.itemsize if itemsize is None else itemsize)
    return np.empty(shape, dtype=x.dtype)


def _grad_input(func: str, grad_output: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """A new gradient of shape ``input_shape`` and ``grad_output``'s dtype, after the size
    check."""
    check_numel(input_shape, "input_shape", func, grad_output.itemsize)
    return np.empty(input_shape, dtype=grad_output.dtype)


def _pool_args(geo: ConvGeometry) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = geo
    return kh, kw, sh, sw, ph, pw, dh, dw


def _divisor(divisor_override: Any, func: str) -> int:
    """0 encodes "no override" for the kernels; an explicit 0 is rejected (as in PyTorch)."""
    if divisor_override is None:
        return 0
    d = check_int(divisor_override, "divisor_override", func, min_value=-MAX_PARAM)
    if d == 0:
        raise ValueError(
            f"{func}(): divisor_override must not be zero. Received: divisor_override=0"
        )
    return d


def _indices_backward(func: str, grad_output: Any, indices: Any,
                      input_shape: Any) -> np.ndarray:
    """Shared body of max_pool2d_backward / adaptive_max_pool2d_backward: a per-plane
    scatter-add of grad_output at the argmax positions."""
    grad_output = _pool_grad(grad_output, func)
    indices = as_index_array(indices, "indices", func, shape=grad_output.shape)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    if input_shape[:2] != grad_output.shape[:2]:
        raise ValueError(
            f"{func}(): input_shape must have the (N, C) of grad_output, "
            f"{grad_output.shape[:2]}. Received: input_shape={input_shape}"
        )
    dx = _grad_input(func, grad_output, input_shape)
    _pool.index_scatter_add(grad_output, indices, dx, get_num_threads(), func)
    return dx


def max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """2-D max pooling over the spatial dimensions of a batch of images.

    Same semantics as :func:`torch.nn.functional.max_pool2d`, values and indices included.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
        Input images, float32 or float64.
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int), optional
        Window step; default ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit ``-inf`` padding on both sides of each axis; at most ``kernel_size // 2``.
    dilation : int or (int, int), default 1
        Spacing between window taps.
    ceil_mode : bool, default False
        Use ceil instead of floor in the output-size formula (see Notes).
    return_indices : bool, default False
        Also return the position of each maximum.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
        Same dtype as ``x``.
    indices : ndarray of int64, shape (N, C, H_out, W_out)
        Only with ``return_indices``: flat position ``h * W_in + w`` of each maximum within
        its input plane (the encoding of PyTorch, :func:`max_pool2d_backward` and
        :func:`max_unpool2d`).

    Notes
    -----
    ``H_out = floor((H_in + 2 * padding - dilation * (kH - 1) - 1 + (stride - 1 if
    ceil_mode else 0)) / stride) + 1``; with ``ceil_mode`` the last window must start inside
    the input or the left padding, otherwise it is dropped (PyTorch's rule).  Same for W.

    Each window is scanned in row-major order: ties keep the first maximum, and a NaN wins
    (the last NaN of the window), as in PyTorch.  A window whose taps all fall into the
    padding (possible only with dilation) raises ValueError, where PyTorch returns ``-inf``
    with an index outside the plane.

    See Also
    --------
    max_pool2d_backward, max_unpool2d, adaptive_max_pool2d
    cnncore.nn.MaxPool2d : the layer.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> y, idx = cnncore.max_pool2d(x, 2, return_indices=True)
    >>> y[0, 0], idx[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]], dtype=float32), array([[ 5,  7],
           [13, 15]]))
    """
    func = "max_pool2d"
    x = _pool_input(x, func)
    return_indices = check_bool(return_indices, "return_indices", func)
    h, w = x.shape[2:]
    geo = pool2d_geometry(func, (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    y = _nchw_result(func, x, geo.out, 8)
    idx = np.empty(y.shape, dtype=np.int64) if return_indices else None
    _pool.max_pool2d_forward(x, y, idx, *_pool_args(geo), get_num_threads())
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_output: Any, indices: Any, input_shape: Any) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
        Gradient of the loss with respect to the pooled output.
    indices : array_like of integers, shape (N, C, H_out, W_out)
        The ``indices`` returned by ``max_pool2d(..., return_indices=True)``; any integer
        dtype (int64 avoids a conversion).  Every entry must lie in ``[0, H_in * W_in)``.
    input_shape : tuple of 4 ints
        ``(N, C, H_in, W_in)``, the shape of the forward input.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)
        ``grad_output[n, c, o]`` added at ``indices[n, c, o]`` of plane ``(n, c)``; gradients
        of overlapping windows (stride < kernel) accumulate; positions that were no window's
        maximum get 0.

    Raises
    ------
    ValueError
        If ``indices`` has the wrong shape or an entry outside ``[0, H_in * W_in)`` (checked
        while scattering; nothing is written out of bounds).
    TypeError
        If ``indices`` is not an integer array.

    Notes
    -----
    Planes are independent and each is accumulated in row-major output order, so the
    result is bit-identical for any thread count (and to PyTorch's CPU kernel).

    See Also
    --------
    max_pool2d
    cnncore.nn.MaxPool2d
    """
    return _indices_backward("max_pool2d_backward", grad_output, indices, input_shape)


def avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> np.ndarray:
    """2-D average pooling over the spatial dimensions of a batch of images.

    Same semantics as :func:`torch.nn.functional.avg_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
        Input images, float32 or float64.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero padding on both sides; at most ``kernel_size // 2``.
    ceil_mode : bool, default False
        Ceil instead of floor in the output-size formula.
    count_include_pad : bool, default True
        Count the zero padding in the divisor.
    divisor_override : int, optional
        Divide every window sum by this (non-zero) number instead.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)

    Notes
    -----
    ``H_out`` as in :func:`max_pool2d` with ``dilation=1``.  The divisor is PyTorch's: with
    ``count_include_pad`` the window size clipped to the padded input (so the part of a
    ``ceil_mode`` window that hangs past the padding is not counted), otherwise the number of
    in-bounds elements; ``divisor_override`` replaces both.  Window sums are taken in
    row-major order and divided (not multiplied by a reciprocal), like PyTorch's CPU kernel.

    See Also
    --------
    avg_pool2d_backward, adaptive_avg_pool2d, global_avg_pool2d
    cnncore.nn.AvgPool2d : the layer.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    >>> cnncore.avg_pool2d(x, 3, 2, 1, ceil_mode=True).round(4)[0, 0]
    array([[ 1.5556,  3.3333,  2.    ],
           [ 6.3333, 11.    ,  6.    ],
           [ 4.5   ,  7.5   ,  4.    ]])
    """
    func = "avg_pool2d"
    x = _pool_input(x, func)
    count_include_pad = check_bool(count_include_pad, "count_include_pad", func)
    divisor = _divisor(divisor_override, func)
    h, w = x.shape[2:]
    geo = pool2d_geometry(func, (h, w), kernel_size, stride, padding, 1, ceil_mode)
    y = _nchw_result(func, x, geo.out)
    kh, kw, sh, sw, ph, pw, _, _ = _pool_args(geo)
    _pool.avg_pool2d_forward(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor,
                             get_num_threads())
    return y


def avg_pool2d_backward(grad_output: Any, input_shape: Any, kernel_size: Any,
                        stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True,
                        divisor_override: int | None = None) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
    input_shape : tuple of 4 ints
        ``(N, C, H_in, W_in)``.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)
        Each ``grad_output`` entry divided by its window's divisor and added to the window's
        in-bounds positions (overlapping windows accumulate, in row-major output order).

    See Also
    --------
    avg_pool2d
    cnncore.nn.AvgPool2d
    """
    func = "avg_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    count_include_pad = check_bool(count_include_pad, "count_include_pad", func)
    divisor = _divisor(divisor_override, func)
    n, c, h, w = input_shape
    geo = pool2d_geometry(func, (h, w), kernel_size, stride, padding, 1, ceil_mode)
    _check_grad_shape(func, grad_output, (n, c, *geo.out), f"input_shape={input_shape}")
    dx = _grad_input(func, grad_output, input_shape)
    kh, kw, sh, sw, ph, pw, _, _ = _pool_args(geo)
    _pool.avg_pool2d_backward(grad_output, dx, kh, kw, sh, sw, ph, pw, count_include_pad,
                              divisor, get_num_threads())
    return dx


def adaptive_avg_pool2d(x: Any, output_size: Any) -> np.ndarray:
    """2-D adaptive average pooling: average windows that tile the input into a fixed grid.

    Same semantics as :func:`torch.nn.functional.adaptive_avg_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
        ``H_in`` and ``W_in`` must be non-zero.
    output_size : int or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input dimension.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)

    Notes
    -----
    Output ``oh`` averages input rows ``floor(oh * H_in / H_out)`` to
    ``ceil((oh + 1) * H_in / H_out) - 1`` (windows may overlap); same for columns.  The sum
    is divided by the window height, then by its width, as PyTorch does.

    See Also
    --------
    adaptive_avg_pool2d_backward, global_avg_pool2d, avg_pool2d
    cnncore.nn.AdaptiveAvgPool2d : the layer.
    """
    func = "adaptive_avg_pool2d"
    x = _pool_input(x, func)
    h, w = x.shape[2:]
    out = adaptive_pool2d_output_size(func, (h, w), output_size)
    y = _nchw_result(func, x, out)
    _pool.adaptive_avg_pool2d_forward(x, y, get_num_threads())
    return y


def adaptive_avg_pool2d_backward(grad_output: Any, input_shape: Any) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
        Its spatial shape is the forward's ``output_size``.
    input_shape : tuple of 4 ints
        ``(N, C, H_in, W_in)``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)

    See Also
    --------
    adaptive_avg_pool2d
    cnncore.nn.AdaptiveAvgPool2d
    """
    func = "adaptive_avg_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    adaptive_pool2d_output_size(func, input_shape[2:], grad_output.shape[2:], "input_shape")
    _check_grad_shape(func, grad_output, (*input_shape[:2], *grad_output.shape[2:]),
                      f"input_shape={input_shape}")
    dx = _grad_input(func, grad_output, input_shape)
    _pool.adaptive_avg_pool2d_backward(grad_output, dx, get_num_threads())
    return dx


def adaptive_max_pool2d(x: Any, output_size: Any, return_indices: bool = False
                        ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """2-D adaptive max pooling (windows as in :func:`adaptive_avg_pool2d`).

    Same semantics as :func:`torch.nn.functional.adaptive_max_pool2d`, indices included.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
        ``H_in`` and ``W_in`` must be non-zero.
    output_size : int or (int or None, int or None)
    return_indices : bool, default False
        Also return the flat position ``h * W_in + w`` of each maximum in its plane.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    indices : ndarray of int64, same shape (only with ``return_indices``)

    Notes
    -----
    Ties keep the first maximum in row-major order; a NaN wins (the last NaN).

    See Also
    --------
    adaptive_max_pool2d_backward, max_pool2d
    cnncore.nn.AdaptiveMaxPool2d : the layer.
    """
    func = "adaptive_max_pool2d"
    x = _pool_input(x, func)
    return_indices = check_bool(return_indices, "return_indices", func)
    h, w = x.shape[2:]
    out = adaptive_pool2d_output_size(func, (h, w), output_size)
    y = _nchw_result(func, x, out, 8)
    idx = np.empty(y.shape, dtype=np.int64) if return_indices else None
    _pool.adaptive_max_pool2d_forward(x, y, idx, get_num_threads())
    return (y, idx) if return_indices else y


def adaptive_max_pool2d_backward(grad_output: Any, indices: Any,
                                 input_shape: Any) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
    indices : array_like of integers, same shape
        From ``adaptive_max_pool2d(..., return_indices=True)``; entries in
        ``[0, H_in * W_in)``.
    input_shape : tuple of 4 ints

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)

    See Also
    --------
    adaptive_max_pool2d, max_pool2d_backward
    cnncore.nn.AdaptiveMaxPool2d
    """
    return _indices_backward("adaptive_max_pool2d_backward", grad_output, indices,
                             input_shape)


def global_avg_pool2d(x: Any) -> np.ndarray:
    """Mean of every ``(n, c)`` plane: ``adaptive_avg_pool2d(x, 1)``, faster.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        ``H`` and ``W`` must be non-zero.

    Returns
    -------
    y : ndarray of shape (N, C, 1, 1)

    Notes
    -----
    Each plane is summed with 8 interleaved partial sums combined pairwise (a fixed order,
    more accurate than one running sum), then divided by ``H * W``.

    See Also
    --------
    global_avg_pool2d_backward, adaptive_avg_pool2d
    cnncore.nn.AdaptiveAvgPool2d
    """
    func = "global_avg_pool2d"
    x = _pool_input(x, func)
    n, c, h, w = x.shape
    adaptive_pool2d_output_size(func, (h, w), 1)
    y = np.empty((n, c, 1, 1), dtype=x.dtype)
    _pool.global_avg_pool2d_forward(x, y, get_num_threads())
    return y


def global_avg_pool2d_backward(grad_output: Any, input_shape: Any) -> np.ndarray:
    """Gradient of :func:`global_avg_pool2d`: every input plane gets ``grad / (H * W)``.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, 1, 1)
    input_shape : tuple of 4 ints
        ``(N, C, H, W)``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W)

    See Also
    --------
    global_avg_pool2d
    """
    func = "global_avg_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    adaptive_pool2d_output_size(func, input_shape[2:], 1, "input_shape")
    _check_grad_shape(func, grad_output, (*input_shape[:2], 1, 1),
                      f"input_shape={input_shape}")
    dx = _grad_input(func, grad_output, input_shape)
    _pool.global_avg_pool2d_backward(grad_output, dx, get_num_threads())
    return dx


def _lp_setup(func: str, hw: tuple[int, int], norm_type: Any, kernel_size: Any, stride: Any,
              ceil_mode: Any) -> tuple[float, ConvGeometry]:
    p = check_real(norm_type, "norm_type", func)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(
            f"{func}(): norm_type must be a positive finite number. Received: norm_type={p!r}"
        )
    geo = pool2d_geometry(func, hw, kernel_size, stride, 0, 1, ceil_mode)
    return p, geo


def lp_pool2d(x: Any, norm_type: float, kernel_size: Any, stride: Any = None,
              ceil_mode: bool = False) -> np.ndarray:
    """2-D power-average pooling (``norm_type=2``: L2 pooling).

    Same semantics as :func:`torch.nn.functional.lp_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
    norm_type : float
        The power ``p > 0``; ``p = 1`` is sum pooling, large ``p`` approaches max pooling.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default ``kernel_size``.
    ceil_mode : bool, default False

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)

    Notes
    -----
    ``y = (kH * kW * avg_pool2d(x ** p)) ** (1 / p)`` with no padding -- PyTorch's formula:
    for full windows this is ``(sum x ** p) ** (1 / p)``, for the partial windows of
    ``ceil_mode`` the average is rescaled to the full window size.  Negative inputs with a
    non-integer ``p`` give NaN, as in PyTorch.  ``H_out`` as in :func:`avg_pool2d`.

    See Also
    --------
    lp_pool2d_backward, avg_pool2d
    cnncore.nn.LPPool2d : the layer.
    """
    func = "lp_pool2d"
    x = _pool_input(x, func)
    h, w = x.shape[2:]
    p, geo = _lp_setup(func, (h, w), norm_type, kernel_size, stride, ceil_mode)
    y = _nchw_result(func, x, geo.out)
    kh, kw, sh, sw, *_ = _pool_args(geo)
    _pool.lp_pool2d_forward(x, y, p, kh, kw, sh, sw, get_num_threads())
    return y


def lp_pool2d_backward(grad_output: Any, x: Any, norm_type: float, kernel_size: Any,
                       stride: Any = None, ceil_mode: bool = False) -> np.ndarray:
    """Gradient of :func:`lp_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
    x : array_like of shape (N, C, H_in, W_in)
        The forward input (the gradient depends on it), same dtype as ``grad_output``.
    norm_type, kernel_size, stride, ceil_mode
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)

    Notes
    -----
    With ``t = kH * kW * avg_pool2d(x ** p)``: ``grad_x = p * x ** (p - 1) *
    avg_pool2d_backward(grad * t ** (1/p - 1) * kH * kW / p)``.  Windows with ``t == 0``
    (e.g. all zeros) contribute 0, as PyTorch's autograd does.

    See Also
    --------
    lp_pool2d
    cnncore.nn.LPPool2d
    """
    func = "lp_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    x = _pool_input(x, func)
    check_same_dtype(func, grad_output=grad_output, x=x)
    n, c, h, w = x.shape
    p, geo = _lp_setup(func, (h, w), norm_type, kernel_size, stride, ceil_mode)
    _check_grad_shape(func, grad_output, (n, c, *geo.out), f"x of shape {x.shape}")
    dx = np.empty(x.shape, dtype=x.dtype)
    kh, kw, sh, sw, *_ = _pool_args(geo)
    _pool.lp_pool2d_backward(grad_output, x, dx, p, kh, kw, sh, sw, get_num_threads())
    return dx


def max_unpool2d(x: Any, indices: Any, kernel_size: Any, stride: Any = None,
                 padding: Any = 0, output_size: Any = None) -> np.ndarray:
    """Partial inverse of :func:`max_pool2d`: put each value back at its argmax position.

    Same semantics as :func:`torch.nn.functional.max_unpool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in)
        Pooled values.
    indices : array_like of integers, same shape as ``x``
        Flat positions ``h * W_out + w`` in the output plane (from
        ``max_pool2d(..., return_indices=True)``); each must lie in ``[0, H_out * W_out)``.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default ``kernel_size``.
    padding : int or (int, int), default 0
    output_size : (H, W) or (N, C, H, W), optional
        Resolves the ambiguity of the default size (e.g. an odd input of the pooling).

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
        Zero except at ``indices``; when an index repeats, the value of the last one in
        row-major order wins.

    Notes
    -----
    Default ``H_out = (H_in - 1) * stride - 2 * padding + kH``; an explicit ``output_size``
    must be within ``stride`` (exclusive) of it, as in PyTorch.

    See Also
    --------
    max_unpool2d_backward, max_pool2d
    cnncore.nn.MaxUnpool2d : the layer.
    """
    func = "max_unpool2d"
    x = _pool_input(x, func)
    indices = as_index_array(indices, "indices", func, shape=x.shape)
    h, w = x.shape[2:]
    geo = unpool2d_geometry(func, (h, w), kernel_size, stride, padding, output_size)
    y = _nchw_result(func, x, geo.out)
    _pool.index_scatter_set(x, indices, y, get_num_threads(), func)
    return y


def max_unpool2d_backward(grad_output: Any, indices: Any) -> np.ndarray:
    """Gradient of :func:`max_unpool2d` with respect to its input ``x``: a gather.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
    indices : array_like of integers, shape (N, C, H_in, W_in)
        As passed to the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in)
        ``grad_x[n, c].flat[o] = grad_output[n, c].flat[indices[n, c].flat[o]]`` (every
        input gets the gradient at its index, as PyTorch's autograd does, even when indices
        repeat).

    See Also
    --------
    max_unpool2d
    """
    func = "max_unpool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    indices = as_index_array(indices, "indices", func)
    if indices.ndim != 4 or indices.shape[:2] != grad_output.shape[:2]:
        raise ValueError(
            f"{func}(): indices must be a 4-D array with the (N, C) of grad_output, "
            f"{grad_output.shape[:2]}. Received: indices with shape {indices.shape}"
        )
    dx = np.empty(indices.shape, dtype=grad_output.dtype)
    _pool.index_gather(grad_output, indices, dx, get_num_threads(), func)
    return dx


__all__ += [
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "lp_pool2d",
    "lp_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
]


# ----------------------------------------------------------------------------------------------
# Padding
# ----------------------------------------------------------------------------------------------

_PAD_MODE_CODES = {
    "constant": _pad.CONSTANT,
    "replicate": _pad.REPLICATE,
    "reflect": _pad.REFLECT,
    "circular": _pad.CIRCULAR,
}


def pad2d(x: Any, padding: Any, mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """Pad the last two (spatial) axes of a batch of images.

    Same semantics as :func:`torch.nn.functional.pad` on an NCHW input with a 4-element pad.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
    padding : int, (int, int) or (int, int, int, int)
        An int pads all four sides; ``(pad_h, pad_w)`` pads top and bottom by ``pad_h`` and
        left and right by ``pad_w``; a 4-tuple is ``(left, right, top, bottom)`` -- the order
        of ``torch.nn.functional.pad``.  Negative values crop (``'constant'`` only).
    mode : {'constant', 'replicate', 'reflect', 'circular'}, default 'constant'
        ``'replicate'`` repeats the edge, ``'reflect'`` mirrors without repeating the edge
        (each pad must be smaller than its axis), ``'circular'`` wraps around (each pad at
        most its axis).
    value : float, default 0.0
        Fill value of ``'constant'`` mode (other modes take no value).

    Returns
    -------
    y : ndarray of shape (N, C, H + top + bottom, W + left + right)

    Notes
    -----
    Negative padding is supported for ``'constant'``: it crops, as in PyTorch, and the
    negative pads of an axis may remove at most the whole axis.  It is rejected with
    ValueError for the other modes, where PyTorch's crop-then-pad is rarely intended.
    ``'replicate'`` and ``'reflect'`` need a non-empty input plane.

    See Also
    --------
    pad2d_backward
    cnncore.nn.ZeroPad2d, cnncore.nn.ReflectionPad2d : layers.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.arange(3.0).reshape(1, 1, 1, 3)
    >>> cnncore.pad2d(x, (2, 1, 0, 0), mode="reflect")[0, 0]
    array([[2., 1., 0., 1., 2., 1.]])
    """
    func = "pad2d"
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C, H, W)")
    h, w = x.shape[2:]
    geo = pad2d_geometry(func, (h, w), padding, mode)
    value = check_real(value, "value", func)
    if mode != "constant" and value != 0:
        raise ValueError(
            f"{func}(): mode={mode!r} takes no fill value (only 'constant' does). "
            f"Received: value={value!r}"
        )
    y = _nchw_result(func, x, geo.out)
    _pad.pad2d_forward(x, y, geo.left, geo.top, _PAD_MODE_CODES[mode], value,
                       get_num_threads())
    return y


def pad2d_backward(grad_output: Any, padding: Any, mode: str = "constant") -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
        Gradient with respect to the padded output.
    padding, mode
        As in the forward call; the input size is ``H_out - top - bottom`` by
        ``W_out - left - right``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W)
        The central part of ``grad_output``, plus (``'replicate'``, ``'reflect'``,
        ``'circular'``) the gradients of the padded border added to the input positions they
        were copied from.  With negative (cropping) padding, cropped positions get 0.

    See Also
    --------
    pad2d
    """
    func = "pad2d_backward"
    grad_output = as_float_array(grad_output, "grad_output", func, ndim=4,
                                 ndim_text="a 4-D array (N, C, H_out, W_out)")
    n, c, ho, wo = grad_output.shape
    check_choice(mode, "mode", func, PAD_MODES)
    left, right, top, bottom = pad2d_sides(func, padding)
    h, w = ho - top - bottom, wo - left - right
    if h < 0 or w < 0:
        raise ValueError(
            f"{func}(): grad_output is too small for this padding: the input size would be "
            f"{(h, w)}. Received: grad_output with shape {grad_output.shape}, "
            f"padding={padding!r}"
        )
    geo = pad2d_geometry(func, (h, w), padding, mode, name="the input")
    if geo.out != (ho, wo):  # pragma: no cover -- follows from the arithmetic above
        raise ValueError(f"{func}(): inconsistent padding. Received: padding={padding!r}")
    check_numel((n, c, h, w), "output", func, grad_output.itemsize)
    dx = np.empty((n, c, h, w), dtype=grad_output.dtype)
    _pad.pad2d_backward(grad_output, dx, geo.left, geo.top, _PAD_MODE_CODES[mode],
                        get_num_threads())
    return dx


__all__ += ["pad2d", "pad2d_backward"]
