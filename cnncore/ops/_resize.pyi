"""Type stubs for the ``cnncore.ops._resize`` extension (see ``cnncore/ops/_resize.pyx``).

Arrays are C-contiguous float32 or float64 (one dtype per call) seen as ``(planes, H, W)``;
the coordinate tables (indices inside their axis, weights of the data's dtype) come from
:mod:`cnncore.ops.resize`, which is the public API.  Empty arrays never reach the kernels.
"""

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_I32 = NDArray[np.int32]
_I64 = NDArray[np.int64]

def nearest_forward(x: _Float, y_out: _Float, ih: _I64, iw: _I32, n_threads: int) -> None:
    """``y_out[p, oh, ow] = x[p, ih[oh], iw[ow]]``."""

def linear_forward(
    x: _Float,
    y_out: _Float,
    h0: _I64,
    h1: _I64,
    lh0: _Float,
    lh1: _Float,
    w0: _I32,
    w1: _I32,
    lw0: _Float,
    lw1: _Float,
    n_threads: int,
) -> None:
    """Bilinear: rows ``h0, h1`` with weights ``lh0, lh1``, columns ``w0, w1`` with
    ``lw0, lw1`` (interpolated along W first)."""

def gather_backward(
    grad_output: _Float,
    grad_x: _Float,
    h_index: _I64,
    h_weight: _Float,
    w_index: _I32,
    w_weight: _Float,
    n_threads: int,
) -> None:
    """Gradient of a separable interpolation: output row ``oh`` reads input rows
    ``h_index[:, oh]`` with ``h_weight[:, oh]``; input column ``w`` is read by output columns
    ``w_index[:, w]`` with ``w_weight[:, w]`` (entries ``W_out`` are padding)."""

def pixel_shuffle(x: _Float, y_out: _Float, r: int, n_threads: int) -> None:
    """``(B * r * r, H, W) -> (B, H * r, W * r)``."""

def pixel_unshuffle(x: _Float, y_out: _Float, r: int, n_threads: int) -> None:
    """``(B, H * r, W * r) -> (B * r * r, H, W)``."""
