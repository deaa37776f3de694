"""Reshaping layers: :class:`Flatten`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._typing import ArrayLike
from .._validation import as_ndarray, check_int
from .module import Module, grad_like

__all__ = ["Flatten"]


class Flatten(Module):
    """Flatten dimensions ``start_dim..end_dim`` into one (default: all but the batch)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = check_int(start_dim, "start_dim", "Flatten", min_value=None)
        self.end_dim = check_int(end_dim, "end_dim", "Flatten", min_value=None)
        self._shape: tuple[int, ...] | None = None

    def _new_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        nd = len(shape)
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < nd and 0 <= e < nd and s <= e):
            raise ValueError(
                f"Flatten(): start_dim/end_dim out of range for an input of {nd} dimensions. "
                f"Received: start_dim={self.start_dim}, end_dim={self.end_dim}"
            )
        merged = shape[s : e + 1]
        size = None if None in merged else math.prod(merged)  # None: a graph's batch entry
        return (*shape[:s], size, *shape[e + 1 :])

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_ndarray(x, "input", "Flatten")
        self._shape = x.shape
        return x.reshape(self._new_shape(x.shape))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_shape")
        if not input_grad:
            return None
        return grad_like(grad_output, self._new_shape(shape), "Flatten").reshape(shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self._new_shape(tuple(input_shape))

    def get_config(self) -> dict[str, Any]:
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}
