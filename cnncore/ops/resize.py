"""Resizing: interpolate (nearest, nearest-exact, bilinear), pixel_shuffle, pixel_unshuffle and
their gradients.

See :mod:`cnncore.functional` for the conventions every op follows.  ``interpolate`` follows
PyTorch's coordinate rules to the index (see :func:`interpolate`); its gradient
(:func:`interpolate_backward`) is a gather, not a scatter: every input position sums its
output positions in a fixed order, so it is bit-identical for any thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._config import load_kernels, threads_for
from .._geometry import (
    ResizeGeometry,
    interpolate_geometry,
    interpolate_output_size,
    interpolate_params,
    pixel_shuffle_shape,
)
from .._typing import ArrayLike
from .._validation import as_float_array, check_bool, check_numel, check_shape

# the AVX2 / AVX-512 build of the kernels when the CPU has it (see setup.py's SIMD_MODULES)
_resize, _ = load_kernels("cnncore.ops._resize")

__all__ = [
    "interpolate",
    "interpolate_backward",
    "pixel_shuffle",
    "pixel_unshuffle",
]


# ------------------------------------------------------------------------------------------
# Coordinate tables (PyTorch's UpSample.h rules, in its "opmath" precision: float32 for
# float32 data, float64 for float64)
# ------------------------------------------------------------------------------------------


def _axis_scale(
    in_size: int, out_size: int, align_corners: bool, scale: float | None, t: type
) -> Any:
    """``area_pixel_compute_scale``: the source step per output step."""
    if align_corners:
        return t(in_size - 1) / t(out_size - 1) if out_size > 1 else t(0)
    if scale is not None and scale > 0:
        return t(1.0 / scale)
    return t(in_size) / t(out_size)


def _floorf(v: np.ndarray) -> np.ndarray:
    """``floorf`` of a value of either precision (C converts it to float first)."""
    return np.floor(np.asarray(v, np.float32)).astype(np.int64)


def _nearest_table(
    in_size: int, out_size: int, scale: float | None, exact: bool, t: type
) -> np.ndarray:
    """Source index of each output index: ``floor(i * s)`` ('nearest', OpenCV's rule) or
    ``floor((i + 0.5) * s)`` ('nearest-exact', Pillow's / scipy's), clamped to the input.
    'nearest' copies an axis whose size does not change and halves the index of an axis
    whose size doubles, whatever the scale factor (PyTorch's ``nearest_idx``)."""
    if not exact and out_size in (in_size, 2 * in_size):
        return np.arange(out_size) // (out_size // in_size)
    s = _axis_scale(in_size, out_size, False, scale, t)
    i = np.arange(out_size).astype(t)
    if exact:
        src = np.maximum(s * (i + t(0.5)) - t(0.5), t(0))
        idx = _floorf(src.astype(np.float64) + 0.5)
    else:
        idx = _floorf(s * i)
    return np.minimum(idx, in_size - 1)


def _linear_table(
    in_size: int, out_size: int, scale: float | None, align_corners: bool, t: type
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w0, w1)``: output index ``o`` is ``w0 * x[i0] + w1 * x[i1]`` (PyTorch's
    ``compute_source_index_and_lambda``; equal sizes are an exact copy)."""
    o = np.arange(out_size)
    if out_size == in_size:
        ones = np.ones(out_size, t)
        return o, o.copy(), ones, np.zeros(out_size, t)
    s = _axis_scale(in_size, out_size, align_corners, scale, t)
    if align_corners:
        src = s * o.astype(t)
    else:
        src = np.maximum(s * (o.astype(t) + t(0.5)) - t(0.5), t(0))
    i0 = np.minimum(_floorf(src), in_size - 1)
    lam1 = np.clip(src - i0.astype(t), t(0), t(1)).astype(t)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (t(1) - lam1).astype(t), lam1


def _gather_lists(
    taps: list[tuple[np.ndarray, np.ndarray]], in_size: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transpose of an interpolation along one axis as CSR lists: for each input index
    ``i``, the output indices that read it and their weights (``start[i]:start[i + 1]``),
    ordered by output index, then tap."""
    out_idx = np.concatenate([np.arange(len(src)) for src, _ in taps])
    src = np.concatenate([src for src, _ in taps])
    w = np.concatenate([wt for _, wt in taps]).astype(dtype)
    tap = np.concatenate([np.full(len(s), k) for k, (s, _) in enumerate(taps)])
    order = np.lexsort((tap, out_idx, src))
    start = np.zeros(in_size + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=in_size), out=start[1:])
    return start, out_idx[order].astype(np.int64), w[order]


def _padded_lists(
    lists: tuple[np.ndarray, np.ndarray, np.ndarray], n_out: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """The CSR lists of :func:`_gather_lists` as ``(K, n_in)`` arrays (entry ``k`` of every
    input index side by side, so a kernel loops over ``k`` outside and the indices inside),
    padded with index ``n_out`` (weight 0), which the kernel skips."""
    start, out_idx, w = lists
    counts = np.diff(start)
    k = max(int(counts.max(initial=0)), 1)
    idx = np.full((k, len(counts)), n_out, np.int32)
    wt = np.zeros((k, len(counts)), dtype)
    rank = np.arange(len(out_idx)) - np.repeat(start[:-1], counts)
    col = np.repeat(np.arange(len(counts)), counts)
    idx[rank, col] = out_idx
    wt[rank, col] = w
    return idx, wt


def _tables(geo: ResizeGeometry, in_hw: tuple[int, int], dtype: np.dtype) -> list[list]:
    """Per axis (H, W): the forward taps ``[(source index, weight), ...]``."""
    t = np.float32 if dtype == np.float32 else np.float64
    axes = []
    for k in range(2):
        n_in, n_out, scale = in_hw[k], geo.out[k], geo.scales[k]
        if geo.mode == "bilinear":
            i0, i1, w0, w1 = _linear_table(n_in, n_out, scale, geo.align_corners, t)
            axes.append([(i0, w0), (i1, w1)])
        else:
            idx = _nearest_table(n_in, n_out, scale, geo.mode == "nearest-exact", t)
            axes.append([(idx, np.ones(n_out, t))])
    return axes


# ------------------------------------------------------------------------------------------
# interpolate
# ------------------------------------------------------------------------------------------


def interpolate(
    x: ArrayLike,
    size: int | tuple[int, int] | None = None,
    scale_factor: float | tuple[float, float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> np.ndarray:
    """Resize a batch of images by nearest-neighbour or bilinear interpolation.

    Same as :func:`torch.nn.functional.interpolate` on an NCHW input, including its
    coordinate rules (below).

    Parameters
    ----------
    x : array_like of shape (N, C, H, W)
        float32 or float64; ``H, W >= 1``.  A 3-D array is refused: PyTorch reads one as
        ``(N, C, L)`` (1-D resizing), not as an unbatched image.
    size : int or (int, int), optional
        Output size ``(H_out, W_out)``.  Exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or (float, float), optional
        Positive multiplier of the spatial size.
    mode : {'nearest', 'nearest-exact', 'bilinear'}, default 'nearest'
    align_corners : bool, optional
        ``'bilinear'`` only (None means False): map the corner pixels' centres onto each
        other (``src = dst * (H - 1) / (H_out - 1)``) instead of the corner pixels' edges.
    recompute_scale_factor : bool, optional
        With ``scale_factor``: True maps coordinates by the ratio of the sizes, as for an
        explicit ``size``; otherwise by ``1 / scale_factor`` itself (PyTorch's default).
    antialias : bool, default False
        Only False is supported.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)

    Notes
    -----
    ``H_out = size[0]``, or ``floor(H * scale_factor)`` (in double).  The source coordinate of
    output index ``i`` uses ``s = 1 / scale_factor`` when a scale factor is given and not
    recomputed, else ``s = H / H_out`` (``(H - 1) / (H_out - 1)`` with ``align_corners``),
    evaluated in the data's precision as PyTorch does:

    - ``'nearest'``: ``min(floor(i * s), H - 1)`` (OpenCV's rule, PyTorch's default), and
      exactly ``i`` or ``i // 2`` when ``H_out`` is ``H`` or ``2 H``;
    - ``'nearest-exact'``: ``min(floor((i + 0.5) * s), H - 1)`` (Pillow, scipy);
    - ``'bilinear'``: ``src = max(s * (i + 0.5) - 0.5, 0)`` (or ``s * i`` with
      ``align_corners``), ``i0 = floor(src)``, ``i1 = min(i0 + 1, H - 1)``, weights
      ``1 - l, l`` with ``l = src - i0``; an axis whose size does not change is copied.

    See Also
    --------
    interpolate_backward, pixel_shuffle, cnncore.nn.Upsample
    """
    func = "interpolate"
    x = as_float_array(x, "x", func)
    if x.ndim == 3:
        raise ValueError(
            f"{func}(): x must be a 4-D array (N, C, H, W); PyTorch reads a 3-D input as "
            f"(N, C, L) for a 1-D resize (which cnncore does not implement), never as one "
            f"unbatched (C, H, W) image -- for that, pass x[None] and take [0] of the result. "
            f"Received: x with shape {x.shape}"
        )
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C, H, W)")
    if check_bool(antialias, "antialias", func):
        raise ValueError(f"{func}(): antialias=True is not supported. Received: antialias=True")
    params = interpolate_params(
        func, size, scale_factor, mode, align_corners, recompute_scale_factor
    )
    n, c, h, w = x.shape
    geo = interpolate_geometry(func, (h, w), params)
    shape = (n, c, *geo.out)
    check_numel(shape, "output", func, x.itemsize)
    y = np.empty(shape, x.dtype)
    if y.size == 0:
        return y
    (th, tw) = _tables(geo, (h, w), x.dtype)
    xs, ys = x.reshape(n * c, h, w), y.reshape(shape[0] * c, *geo.out)
    cols = [(idx.astype(np.int32), wt) for idx, wt in tw]  # (the kernels' gathers: 32-bit)
    if geo.mode == "bilinear":
        _resize.linear_forward(
            xs, ys, th[0][0], th[1][0], th[0][1], th[1][1],
            cols[0][0], cols[1][0], cols[0][1], cols[1][1], threads_for(x.size + y.size),
        )  # fmt: skip
    else:
        _resize.nearest_forward(xs, ys, th[0][0], cols[0][0], threads_for(x.size + y.size))
    return y


def interpolate_backward(
    grad_output: ArrayLike,
    input_shape: Sequence[int],
    mode: str = "nearest",
    align_corners: bool | None = None,
    scale_factor: float | tuple[float, float] | None = None,
) -> np.ndarray:
    """Gradient of :func:`interpolate` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out)
        Gradient with respect to the resized output.
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.
    mode, align_corners
        As in the forward call.
    scale_factor : float or (float, float), optional
        The forward's ``scale_factor`` if it was given and not recomputed (the coordinate
        mapping then uses it); None for an explicit ``size`` or a recomputed factor.  When
        given, ``floor(H * scale_factor)`` must be ``H_out``.

    Returns
    -------
    grad_x : ndarray of shape input_shape

    Notes
    -----
    The adjoint of the forward's (separable) interpolation: each input position sums, over
    the output rows and then the output columns that read it, ``weight * grad_output``, in a
    fixed order -- a gather, deterministic for any thread count.

    See Also
    --------
    interpolate
    """
    func = "interpolate_backward"
    g = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C, H_out, W_out)"
    )
    n, c, h, w = check_shape(input_shape, "input_shape", func, 4)
    if (n, c) != g.shape[:2]:
        raise ValueError(
            f"{func}(): input_shape and grad_output must agree on (N, C). Received: "
            f"input_shape={tuple(input_shape)}, grad_output with shape {g.shape}"
        )
    ho, wo = g.shape[2:]
    size = None if scale_factor is not None else (max(ho, 1), max(wo, 1))
    params = interpolate_params(func, size, scale_factor, mode, align_corners)
    if scale_factor is not None:
        fh, fw = params.scale_factor
        expect = (interpolate_output_size(h, fh), interpolate_output_size(w, fw))
        if expect != (ho, wo):
            raise ValueError(
                f"{func}(): grad_output's spatial size {(ho, wo)} is not the forward's output "
                f"size {expect} for input_shape={tuple(input_shape)} and scale_factor="
                f"{scale_factor!r}. Received: grad_output with shape {g.shape}"
            )
    geo = interpolate_geometry(func, (h, w), params)
    check_numel((n, c, h, w), "grad_x", func, g.itemsize)
    gx = np.empty((n, c, h, w), g.dtype)
    if gx.size == 0:
        return gx
    th, tw = _tables(geo, (h, w), g.dtype)
    h_idx = np.stack([idx for idx, _ in th]).astype(np.int64)
    h_wt = np.stack([wt for _, wt in th]).astype(g.dtype)
    w_idx, w_wt = _padded_lists(_gather_lists(tw, w, g.dtype), wo, g.dtype)
    _resize.gather_backward(
        g.reshape(n * c, ho, wo), gx.reshape(n * c, h, w), h_idx, h_wt, w_idx, w_wt,
        threads_for(g.size + gx.size),
    )  # fmt: skip
    return gx


# ------------------------------------------------------------------------------------------
# pixel_shuffle / pixel_unshuffle
# ------------------------------------------------------------------------------------------


def _shuffle(func: str, x: Any, factor: Any, name: str, inverse: bool) -> np.ndarray:
    x = as_float_array(x, "x", func)
    shape = pixel_shuffle_shape(func, x.shape, factor, name, inverse)
    r = int(factor)
    y = np.empty(shape, x.dtype)
    if y.size == 0:
        return y
    if inverse:  # (B * C, H * r, W * r) -> (B * C * r * r, H, W)
        h, w = shape[-2:]
        _resize.pixel_unshuffle(
            x.reshape(-1, h * r, w * r), y.reshape(-1, h, w), r, threads_for(2 * x.size)
        )
    else:  # (B * C * r * r, H, W) -> (B * C, H * r, W * r)
        h, w = x.shape[-2:]
        _resize.pixel_shuffle(
            x.reshape(-1, h, w), y.reshape(-1, h * r, w * r), r, threads_for(2 * x.size)
        )
    return y


def pixel_shuffle(x: ArrayLike, upscale_factor: int) -> np.ndarray:
    """Rearrange ``(*, C * r**2, H, W)`` into ``(*, C, H * r, W * r)``, ``r = upscale_factor``.

    Same as :func:`torch.nn.functional.pixel_shuffle` (any number of leading dimensions,
    none included): ``y[..., c, h * r + i, w * r + j] = x[..., c * r * r + i * r + j, h, w]``.

    Parameters
    ----------
    x : array_like of shape (*, C * r**2, H, W)
    upscale_factor : int
        ``r >= 1``; the channel count must be divisible by ``r**2``.

    Returns
    -------
    y : ndarray of shape (*, C, H * r, W * r)

    Notes
    -----
    A permutation: its gradient is :func:`pixel_unshuffle` of the output gradient with the
    same factor.

    See Also
    --------
    pixel_unshuffle, interpolate, cnncore.nn.PixelShuffle
    """
    return _shuffle("pixel_shuffle", x, upscale_factor, "upscale_factor", False)


def pixel_unshuffle(x: ArrayLike, downscale_factor: int) -> np.ndarray:
    """Rearrange ``(*, C, H * r, W * r)`` into ``(*, C * r**2, H, W)``, the inverse of
    :func:`pixel_shuffle`.

    Same as :func:`torch.nn.functional.pixel_unshuffle`.

    Parameters
    ----------
    x : array_like of shape (*, C, H, W)
    downscale_factor : int
        ``r >= 1``; ``H`` and ``W`` must be divisible by ``r``.

    Returns
    -------
    y : ndarray of shape (*, C * r**2, H / r, W / r)

    Notes
    -----
    The gradient of either function is the other one applied to the output gradient.

    See Also
    --------
    pixel_shuffle, cnncore.nn.PixelUnshuffle
    """
    return _shuffle("pixel_unshuffle", x, downscale_factor, "downscale_factor", True)
