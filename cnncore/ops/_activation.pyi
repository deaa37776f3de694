"""Type stubs for the ``cnncore.ops._activation`` extension (see ``cnncore/ops/_activation.pyx``).

Arrays are C-contiguous float32 or float64 (one dtype per call); shapes and aliasing are
validated by :mod:`cnncore.functional`, which is the public API.
"""

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]

def unary(op: int, x: _Float, y_out: _Float, slope: float, n_threads: int, p2: float = 0.0) -> None:
    """``y_out = op(x)`` elementwise over 1-D arrays; ``y_out`` may be ``x``.  ``slope``:
    negative_slope, alpha or beta; ``p2``: softplus's threshold."""

def binary(
    op: int,
    grad_output: _Float,
    saved: _Float,
    grad_out: _Float,
    slope: float,
    n_threads: int,
    p2: float = 0.0,
) -> None:
    """``grad_out = op(grad_output, saved)`` elementwise over 1-D arrays."""

def channel_scale(x: _Float, scale: _Float, y_out: _Float, n_threads: int) -> None:
    """``y_out[p, :] = x[p, :] * scale[p]`` over a ``(planes, size)`` array (dropout2d)."""

def softmax(x: _Float, y_out: _Float, take_log: bool, n_threads: int) -> None:
    """(log_)softmax over axis 1 of an ``(outer, D, inner)`` array."""

def softmax_backward(
    grad_output: _Float, output: _Float, grad_out: _Float, take_log: bool, n_threads: int
) -> None:
    """Gradient of (log_)softmax over axis 1 of ``(outer, D, inner)`` arrays, from its output."""
