"""Pooling: max, average, adaptive, global, Lp pooling and max-unpooling, with gradients.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._config import get_num_threads, load_kernels, threads_for
from .._geometry import (
    ConvGeometry,
    adaptive_pool2d_output_size,
    pool2d_geometry,
    unpool2d_geometry,
)
from .._typing import ArrayLike, IntPair, Padding, Shape
from .._validation import (
    MAX_PARAM,
    accepts_unbatched,
    as_float_array,
    as_index_array,
    check_bool,
    check_int,
    check_numel,
    check_real,
    check_same_dtype,
    check_shape,
)
from ._common import nchw_result

# the AVX2 / AVX-512 build of the kernels when the CPU has it (see setup.py's SIMD_MODULES)
_pool, _ = load_kernels("cnncore.ops._pool")

__all__ = [
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

# The batched shapes of the arrays that may also come unbatched (see accepts_unbatched)
_X_SHAPE = "(N, C, H_in, W_in)"
_GO_SHAPE = "(N, C, H_out, W_out)"
_X_TEXT = f"a 4-D array {_X_SHAPE}"
_GO_TEXT = f"a 4-D array {_GO_SHAPE}"


def _pool_input(x: Any, func: str, name: str = "x") -> np.ndarray:
    return as_float_array(x, name, func, ndim=4, ndim_text=_X_TEXT)


def _pool_grad(grad_output: Any, func: str) -> np.ndarray:
    return as_float_array(grad_output, "grad_output", func, ndim=4, ndim_text=_GO_TEXT)


def _check_grad_shape(
    func: str, grad_output: np.ndarray, expected: tuple[int, ...], context: str
) -> None:
    if grad_output.shape != tuple(expected):
        raise ValueError(
            f"{func}(): grad_output must have shape {tuple(expected)} for {context}. "
            f"Received: grad_output with shape {grad_output.shape}"
        )


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


def _indices_backward(
    func: str, grad_output: Any, indices: Any, input_shape: Any, relu_output: Any = None
) -> np.ndarray:
    """Shared body of max_pool2d_backward / adaptive_max_pool2d_backward: a per-plane
    scatter-add of grad_output at the argmax positions (``relu_output``: see
    :func:`_max_pool2d_relu_backward`)."""
    grad_output = _pool_grad(grad_output, func)
    indices = as_index_array(indices, "indices", func, shape=grad_output.shape)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    if input_shape[:2] != grad_output.shape[:2]:
        raise ValueError(
            f"{func}(): input_shape must have the (N, C) of grad_output, "
            f"{grad_output.shape[:2]}. Received: input_shape={input_shape}"
        )
    dx = _grad_input(func, grad_output, input_shape)
    if relu_output is not None and (
        relu_output.shape != grad_output.shape or relu_output.dtype != grad_output.dtype
    ):
        raise ValueError(
            f"{func}(): relu_output must have grad_output's shape {grad_output.shape} and "
            f"dtype. Received: relu_output of shape {relu_output.shape}, {relu_output.dtype}"
        )
    _pool.index_scatter_add(grad_output, indices, dx, threads_for(dx.size), func, relu_output)
    return dx


def _max_pool2d_relu(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: Padding,
    dilation: IntPair,
    ceil_mode: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``(max_pool2d(relu(x)), indices)`` in one pass over ``x`` (a batch ``(N, C, H, W)``):
    the ReLU is applied to each pooled plane while it is in cache -- max pooling commutes
    with it but for the sign of a zero, which the kernel sets as ReLU-then-pooling does, so
    the values are bit-identical to ``max_pool2d(relu(x))``; the indices are those of
    ``max_pool2d(x, return_indices=True)`` (they differ only where the output is a ReLU
    zero, whose gradient is zero).  For :class:`cnncore.nn.Sequential`'s ReLU-MaxPool2d
    pairs in training (see :func:`_max_pool2d_relu_backward`)."""
    func = "max_pool2d"
    x = _pool_input(x, func)
    h, w = x.shape[2:]
    geo = pool2d_geometry(func, (h, w), kernel_size, stride, padding, dilation, ceil_mode)
    y = nchw_result(func, x, geo.out, 8)
    idx = np.empty(y.shape, dtype=np.int64)
    _pool.max_pool2d_forward(x, y, idx, *_pool_args(geo), threads_for(x.size), True)
    return y, idx


def _max_pool2d_relu_backward(
    grad_output: np.ndarray, indices: np.ndarray, input_shape: Shape, relu_output: np.ndarray
) -> np.ndarray:
    """The input gradient of :func:`_max_pool2d_relu`: ``grad_output`` (w.r.t. its output,
    ``relu_output``) masked as ``relu_backward`` does and scattered as
    :func:`max_pool2d_backward` does, in one pass -- bit-identical to the two calls."""
    return _indices_backward("max_pool2d_backward", grad_output, indices, input_shape, relu_output)


@accepts_unbatched({"x": _X_SHAPE})
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """2-D max pooling over the spatial dimensions of a batch of images.

    Same semantics as :func:`torch.nn.functional.max_pool2d`, values and indices included.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Same dtype as ``x``.
    indices : ndarray of int64, shape (N, C, H_out, W_out) or (C, H_out, W_out)
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
    y = nchw_result(func, x, geo.out, 8)
    idx = np.empty(y.shape, dtype=np.int64) if return_indices else None
    _pool.max_pool2d_forward(x, y, idx, *_pool_args(geo), threads_for(x.size))
    return (y, idx) if return_indices else y


@accepts_unbatched(
    {"grad_output": _GO_SHAPE}, indices=("indices",), shapes={"input_shape": _X_SHAPE}
)
def max_pool2d_backward(
    grad_output: ArrayLike, indices: ArrayLike, input_shape: Shape
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Gradient of the loss with respect to the pooled output.
    indices : array_like of integers, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        The ``indices`` returned by ``max_pool2d(..., return_indices=True)``; any integer
        dtype (int64 avoids a conversion).  Every entry must lie in ``[0, H_in * W_in)``.
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``
        ``(N, C, H_in, W_in)``, the shape of the forward input.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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


@accepts_unbatched({"x": _X_SHAPE})
def avg_pool2d(
    x: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """2-D average pooling over the spatial dimensions of a batch of images.

    Same semantics as :func:`torch.nn.functional.avg_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)

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
    y = nchw_result(func, x, geo.out)
    kh, kw, sh, sw, ph, pw, _, _ = _pool_args(geo)
    _pool.avg_pool2d_forward(
        x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor, threads_for(x.size)
    )
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE}, shapes={"input_shape": _X_SHAPE})
def avg_pool2d_backward(
    grad_output: ArrayLike,
    input_shape: Shape,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``
        ``(N, C, H_in, W_in)``.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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
    _pool.avg_pool2d_backward(
        grad_output, dx, kh, kw, sh, sw, ph, pw, count_include_pad, divisor, threads_for(dx.size)
    )
    return dx


@accepts_unbatched({"x": _X_SHAPE})
def adaptive_avg_pool2d(x: ArrayLike, output_size: IntPair) -> np.ndarray:
    """2-D adaptive average pooling: average windows that tile the input into a fixed grid.

    Same semantics as :func:`torch.nn.functional.adaptive_avg_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
        ``H_in`` and ``W_in`` must be non-zero.
    output_size : int or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input dimension.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)

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
    y = nchw_result(func, x, out)
    _pool.adaptive_avg_pool2d_forward(x, y, threads_for(x.size))
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE}, shapes={"input_shape": _X_SHAPE})
def adaptive_avg_pool2d_backward(grad_output: ArrayLike, input_shape: Shape) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Its spatial shape is the forward's ``output_size``.
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``
        ``(N, C, H_in, W_in)``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)

    See Also
    --------
    adaptive_avg_pool2d
    cnncore.nn.AdaptiveAvgPool2d
    """
    func = "adaptive_avg_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    adaptive_pool2d_output_size(func, input_shape[2:], grad_output.shape[2:], "input_shape")
    _check_grad_shape(
        func, grad_output, (*input_shape[:2], *grad_output.shape[2:]), f"input_shape={input_shape}"
    )
    dx = _grad_input(func, grad_output, input_shape)
    _pool.adaptive_avg_pool2d_backward(grad_output, dx, threads_for(dx.size))
    return dx


@accepts_unbatched({"x": _X_SHAPE})
def adaptive_max_pool2d(
    x: ArrayLike, output_size: IntPair, return_indices: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """2-D adaptive max pooling (windows as in :func:`adaptive_avg_pool2d`).

    Same semantics as :func:`torch.nn.functional.adaptive_max_pool2d`, indices included.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
        ``H_in`` and ``W_in`` must be non-zero.
    output_size : int or (int or None, int or None)
    return_indices : bool, default False
        Also return the flat position ``h * W_in + w`` of each maximum in its plane.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)
    indices : ndarray of int64, same shape (only with ``return_indices``)

    Notes
    -----
    Ties keep the first maximum in row-major order; a NaN wins (the last NaN).

    See Also
    --------
    adaptive_max_pool2d_backward, max_pool2d
    """
    func = "adaptive_max_pool2d"
    x = _pool_input(x, func)
    return_indices = check_bool(return_indices, "return_indices", func)
    h, w = x.shape[2:]
    out = adaptive_pool2d_output_size(func, (h, w), output_size)
    y = nchw_result(func, x, out, 8)
    idx = np.empty(y.shape, dtype=np.int64) if return_indices else None
    _pool.adaptive_max_pool2d_forward(x, y, idx, get_num_threads())
    return (y, idx) if return_indices else y


@accepts_unbatched(
    {"grad_output": _GO_SHAPE}, indices=("indices",), shapes={"input_shape": _X_SHAPE}
)
def adaptive_max_pool2d_backward(
    grad_output: ArrayLike, indices: ArrayLike, input_shape: Shape
) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
    indices : array_like of integers, same shape
        From ``adaptive_max_pool2d(..., return_indices=True)``; entries in
        ``[0, H_in * W_in)``.
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)

    See Also
    --------
    adaptive_max_pool2d, max_pool2d_backward
    """
    return _indices_backward("adaptive_max_pool2d_backward", grad_output, indices, input_shape)


@accepts_unbatched({"x": _X_SHAPE})
def global_avg_pool2d(x: ArrayLike) -> np.ndarray:
    """Mean of every ``(n, c)`` plane: ``adaptive_avg_pool2d(x, 1)``, faster.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) or (C, H, W)
        ``H`` and ``W`` must be non-zero.

    Returns
    -------
    y : ndarray of shape (N, C, 1, 1) or (C, 1, 1)

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
    _pool.global_avg_pool2d_forward(x, y, threads_for(x.size))
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE}, shapes={"input_shape": _X_SHAPE})
def global_avg_pool2d_backward(grad_output: ArrayLike, input_shape: Shape) -> np.ndarray:
    """Gradient of :func:`global_avg_pool2d`: every input plane gets ``grad / (H * W)``.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, 1, 1) or (C, 1, 1)
    input_shape : tuple of 4 ints, or 3 for an unbatched ``grad_output``
        ``(N, C, H, W)``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W) or (C, H, W)

    See Also
    --------
    global_avg_pool2d
    """
    func = "global_avg_pool2d_backward"
    grad_output = _pool_grad(grad_output, func)
    input_shape = check_shape(input_shape, "input_shape", func, 4)
    adaptive_pool2d_output_size(func, input_shape[2:], 1, "input_shape")
    _check_grad_shape(func, grad_output, (*input_shape[:2], 1, 1), f"input_shape={input_shape}")
    dx = _grad_input(func, grad_output, input_shape)
    _pool.global_avg_pool2d_backward(grad_output, dx, threads_for(dx.size))
    return dx


def _lp_setup(
    func: str, hw: tuple[int, int], norm_type: Any, kernel_size: Any, stride: Any, ceil_mode: Any
) -> tuple[float, ConvGeometry]:
    p = check_real(norm_type, "norm_type", func)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(
            f"{func}(): norm_type must be a positive finite number. Received: norm_type={p!r}"
        )
    geo = pool2d_geometry(func, hw, kernel_size, stride, 0, 1, ceil_mode)
    return p, geo


@accepts_unbatched({"x": _X_SHAPE})
def lp_pool2d(
    x: ArrayLike,
    norm_type: float,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """2-D power-average pooling (``norm_type=2``: L2 pooling).

    Same semantics as :func:`torch.nn.functional.lp_pool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
    norm_type : float
        The power ``p > 0``; ``p = 1`` is sum pooling, large ``p`` approaches max pooling.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default ``kernel_size``.
    ceil_mode : bool, default False

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)

    Notes
    -----
    ``y = (kH * kW * avg_pool2d(x ** p)) ** (1 / p)`` with no padding -- PyTorch's formula:
    for full windows this is ``(sum x ** p) ** (1 / p)``, for the partial windows of
    ``ceil_mode`` the average is rescaled to the full window size.  Negative inputs with a
    non-integer ``p`` give NaN, as in PyTorch.  ``H_out`` as in :func:`avg_pool2d`.

    See Also
    --------
    lp_pool2d_backward, avg_pool2d
    """
    func = "lp_pool2d"
    x = _pool_input(x, func)
    h, w = x.shape[2:]
    p, geo = _lp_setup(func, (h, w), norm_type, kernel_size, stride, ceil_mode)
    y = nchw_result(func, x, geo.out)
    kh, kw, sh, sw, *_ = _pool_args(geo)
    _pool.lp_pool2d_forward(x, y, p, kh, kw, sh, sw, get_num_threads())
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE, "x": _X_SHAPE})
def lp_pool2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    norm_type: float,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Gradient of :func:`lp_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
        The forward input (the gradient depends on it), same dtype as ``grad_output``.
    norm_type, kernel_size, stride, ceil_mode
        As in the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)

    Notes
    -----
    With ``t = kH * kW * avg_pool2d(x ** p)``: ``grad_x = p * x ** (p - 1) *
    avg_pool2d_backward(grad * t ** (1/p - 1) * kH * kW / p)``.  Windows with ``t == 0``
    (e.g. all zeros) contribute 0, as PyTorch's autograd does.

    See Also
    --------
    lp_pool2d
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


@accepts_unbatched({"x": _X_SHAPE}, indices=("indices",))
def max_unpool2d(
    x: ArrayLike,
    indices: ArrayLike,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    output_size: IntPair | None = None,
) -> np.ndarray:
    """Partial inverse of :func:`max_pool2d`: put each value back at its argmax position.

    Same semantics as :func:`torch.nn.functional.max_unpool2d`.

    Parameters
    ----------
    x : array_like of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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
    y : ndarray of shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Zero except at ``indices``; when an index repeats, the value of the last one in
        row-major order wins.

    Notes
    -----
    Default ``H_out = (H_in - 1) * stride - 2 * padding + kH``; an explicit ``output_size``
    must be within ``stride`` (exclusive) of it, as in PyTorch.

    See Also
    --------
    max_unpool2d_backward, max_pool2d
    """
    func = "max_unpool2d"
    x = _pool_input(x, func)
    indices = as_index_array(indices, "indices", func, shape=x.shape)
    h, w = x.shape[2:]
    geo = unpool2d_geometry(func, (h, w), kernel_size, stride, padding, output_size)
    y = nchw_result(func, x, geo.out)
    _pool.index_scatter_set(x, indices, y, get_num_threads(), func)
    return y


@accepts_unbatched({"grad_output": _GO_SHAPE}, indices=("indices",))
def max_unpool2d_backward(grad_output: ArrayLike, indices: ArrayLike) -> np.ndarray:
    """Gradient of :func:`max_unpool2d` with respect to its input ``x``: a gather.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
    indices : array_like of integers, shape (N, C, H_in, W_in) or (C, H_in, W_in)
        As passed to the forward call.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H_in, W_in) or (C, H_in, W_in)
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


def prepare_max_pool2d(
    x_shape: tuple[int, ...],
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    n_threads: int | None = None,
) -> tuple[Any, tuple[int, ...]]:
    """:func:`max_pool2d` (without indices) for repeated calls on one input shape (inference
    plans): resolves the geometry once; returns ``(run, out_shape)`` where ``run(x, out)``
    writes the pooled ``x`` into ``out`` with the same kernel, without checking its arguments
    again (C-contiguous arrays of one float dtype and of the prepared shapes);
    ``run(x, out, indices)`` also writes the argmax into ``indices`` (C-contiguous int64 of
    ``out``'s shape), as ``return_indices=True`` does.
    ``n_threads`` fixes the kernel's thread count (None: :func:`cnncore.get_num_threads` at
    each call); results do not depend on it."""
    func = "max_pool2d"
    geo = pool2d_geometry(
        func, tuple(x_shape[2:]), kernel_size, stride, padding, dilation, ceil_mode
    )
    out_shape = (*x_shape[:2], *geo.out)
    check_numel(out_shape, "output", func)
    args = _pool_args(geo)
    forward = _pool.max_pool2d_forward

    def run(x: np.ndarray, out: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
        # (indices: an int64 array of out's shape for the argmax, as return_indices gives)
        forward(x, out, indices, *args, n_threads or get_num_threads())
        return out

    return run, out_shape


def prepare_global_avg_pool2d(
    x_shape: tuple[int, ...], n_threads: int | None = None
) -> tuple[Any, tuple[int, ...]]:
    """:func:`global_avg_pool2d` for repeated calls on one input shape (layers' prepared
    calls, inference plans): checks the shape once; returns ``(run, out_shape)`` where
    ``run(x, out)`` writes the plane means of ``x`` into ``out`` with the same kernel,
    without checking its arguments again (C-contiguous arrays of one float dtype and of the
    prepared shapes).  ``n_threads`` fixes the kernel's thread count (None:
    :func:`cnncore.get_num_threads` at each call); results do not depend on it."""
    func = "global_avg_pool2d"
    n, c, h, w = x_shape
    adaptive_pool2d_output_size(func, (h, w), 1)
    forward = _pool.global_avg_pool2d_forward

    def run(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        forward(x, out, n_threads or get_num_threads())
        return out

    return run, (n, c, 1, 1)
