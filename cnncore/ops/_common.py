"""Python-side helpers that several op families share (validation of kernel arguments)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import as_float_array, check_numel

#: BLAS takes 32-bit dimensions: every GEMM dimension a kernel passes must stay below this.
BLAS_INT_MAX = 2**31 - 1


def check_blas_dims(func: str, shapes: str | Callable[[], str], **dims: int) -> None:
    """Raise ValueError when a GEMM dimension (``what=value``) exceeds BLAS's 32-bit limit;
    ``shapes`` describes the caller's arguments for the message (a callable is called only
    then, so a hot path does not format shapes it never reports)."""
    for what, v in dims.items():
        if v > BLAS_INT_MAX:
            received = shapes() if callable(shapes) else shapes
            raise ValueError(
                f"{func}(): {what} = {v} exceeds the BLAS 32-bit dimension limit "
                f"({BLAS_INT_MAX}). Received: {received}"
            )


def as_float_any(x: Any, name: str, func: str) -> np.ndarray:
    """:func:`as_float_array` for inputs of any ndim (it turns a 0-d input into shape (1,))."""
    arr = as_float_array(x, name, func)
    if arr.shape == (1,) and np.ndim(x) == 0:
        arr = arr.reshape(())
    return arr


def nchw_result(
    func: str, x: np.ndarray, out_hw: tuple[int, int], itemsize: int | None = None
) -> np.ndarray:
    """A new ``(N, C, *out_hw)`` result of ``x``'s dtype, after the size check (``itemsize``:
    bytes per output position, default ``x.itemsize``)."""
    shape = (*x.shape[:2], *out_hw)
    check_numel(shape, "output", func, x.itemsize if itemsize is None else itemsize)
    return np.empty(shape, dtype=x.dtype)
