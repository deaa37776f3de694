"""Dropout layers: :class:`Dropout`, :class:`Dropout2d`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._typing import ArrayLike, RNGLike
from .._validation import as_float_array, check_hyperparameter
from . import init
from .module import Module, grad_like

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by
    ``1 / (1 - p)``; the identity in eval mode.

    ``rng`` (Generator, int or None for the module-wide generator, see
    :func:`cnncore.nn.init.manual_seed`) draws the masks; ``Sequential.fit(seed=...)`` reseeds
    it so runs are reproducible.
    """

    def __init__(self, p: float = 0.5, *, rng: RNGLike = None) -> None:
        super().__init__()
        self.p = check_hyperparameter(
            p, "p", "Dropout", "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0
        )
        self.rng = None if rng is None else init.get_rng(rng)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x, "input", "Dropout")
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        gen = self.rng if self.rng is not None else init.get_rng(None)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        mask = self._buffer("mask", x.shape, dtype)
        gen.random(x.shape, dtype=dtype, out=mask)
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        # mask <- (u >= p) * scale, in place
        np.greater_equal(mask, self.p, out=mask, casting="unsafe")
        mask *= scale
        self._mask = mask
        return x * mask

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        if not input_grad:
            return None
        mask = self._mask
        grad_output = grad_like(grad_output, self._shape, "Dropout")
        return grad_output if mask is None else grad_output * mask

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}

    def reseed(self, rng: np.random.Generator) -> None:
        self.rng = np.random.default_rng(rng.integers(2**63))


class Dropout2d(Module):
    """Zero each whole channel ``x[n, c]`` with probability ``p`` in training and scale the
    kept ones by ``1 / (1 - p)``; the identity in eval mode (see :func:`cnncore.dropout2d`).

    Input ``(N, C, H, W)``, or ``(N, C, L)`` as PyTorch reads a 3-D input.  ``rng`` as for
    :class:`Dropout`.
    """

    def __init__(self, p: float = 0.5, *, rng: RNGLike = None) -> None:
        super().__init__()
        self.p = check_hyperparameter(
            p, "p", "Dropout2d", "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0
        )
        self.rng = None if rng is None else init.get_rng(rng)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x, "input", "Dropout2d")
        if x.ndim not in (3, 4):
            raise ValueError(
                f"Dropout2d(): expected a 4-D input (N, C, H, W) or a 3-D input (N, C, L). "
                f"Received: input with shape {x.shape}"
            )
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        gen = self.rng if self.rng is not None else init.get_rng(None)
        y, self._mask = F.dropout2d(x, self.p, True, rng=gen, return_mask=True)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        if not input_grad:
            return None
        grad_output = grad_like(grad_output, self._shape, "Dropout2d")
        mask = self._mask
        return grad_output if mask is None else F.dropout2d_backward(grad_output, mask)

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}

    def reseed(self, rng: np.random.Generator) -> None:
        self.rng = np.random.default_rng(rng.integers(2**63))
