"""Activation layers: each caches what its backward needs (the output where that suffices,
as PyTorch does) and calls :mod:`cnncore.functional`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .._validation import as_float_array, check_hyperparameter, check_int
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax"]


class _OutputCached(Module, register=False):
    """Activations whose gradient is a function of their output."""

    _forward: Any = None
    _backward: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None

    def forward(self, x: Any) -> np.ndarray:
        y = type(self)._forward(x)
        self._out = y if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        out = self._cached("_out")
        return type(self)._backward(grad_output, out) if input_grad else None


class ReLU(_OutputCached):
    """``max(x, 0)`` elementwise (see :func:`cnncore.relu`)."""

    elementwise_monotone = True  # see Module: it commutes with a following MaxPool2d

    _forward = staticmethod(F.relu)
    _backward = staticmethod(F.relu_backward)


class Sigmoid(_OutputCached):
    """``1 / (1 + exp(-x))``, overflow-free (see :func:`cnncore.sigmoid`)."""

    _forward = staticmethod(F.sigmoid)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_OutputCached):
    """Hyperbolic tangent (see :func:`cnncore.tanh`)."""

    _forward = staticmethod(F.tanh)
    _backward = staticmethod(F.tanh_backward)


class LeakyReLU(Module):
    """``x`` for ``x >= 0``, ``negative_slope * x`` otherwise (see :func:`cnncore.leaky_relu`)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_hyperparameter(
            negative_slope, "negative_slope", "LeakyReLU", "a finite number", math.isfinite
        )
        self._x: np.ndarray | None = None

    def forward(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "input", "LeakyReLU")
        self._x = x if self.training else None
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        return F.leaky_relu_backward(grad_output, x, self.negative_slope) if input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class _SoftmaxBase(Module, register=False):
    _forward: Any = None
    _backward: Any = None

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", type(self).__name__, min_value=None)
        self._out: np.ndarray | None = None

    def forward(self, x: Any) -> np.ndarray:
        y = type(self)._forward(x, self.dim)
        self._out = y if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        out = self._cached("_out")
        return type(self)._backward(grad_output, out, self.dim) if input_grad else None

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}


class Softmax(_SoftmaxBase):
    """Softmax over ``dim`` (see :func:`cnncore.softmax`). For training a classifier prefer
    raw logits with :class:`CrossEntropyLoss` (fused and stable)."""

    _forward = staticmethod(F.softmax)
    _backward = staticmethod(F.softmax_backward)


class LogSoftmax(_SoftmaxBase):
    """Log-softmax over ``dim`` (see :func:`cnncore.log_softmax`)."""

    _forward = staticmethod(F.log_softmax)
    _backward = staticmethod(F.log_softmax_backward)
