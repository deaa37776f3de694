"""Activation layers: each caches what its backward needs (the output where that suffices,
as PyTorch does) and calls :mod:`cnncore.functional`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .._typing import ArrayLike
from .._validation import as_float_array, check_choice, check_hyperparameter, check_int
from .merge import add_relu_backward
from .module import Module

__all__ = [
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "GELU",
    "SiLU",
    "ELU",
    "Hardswish",
    "Hardsigmoid",
    "Softplus",
    "Mish",
    "ReLU6",
]


class _OutputCached(Module, register=False):
    """Activations whose gradient is a function of their output."""

    _forward: Any = None
    _backward: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        y = type(self)._forward(x)
        self._out = y if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        out = self._cached("_out")
        return type(self)._backward(grad_output, out) if input_grad else None


class ReLU(_OutputCached):
    """``max(x, 0)`` elementwise (see :func:`cnncore.relu`)."""

    elementwise_monotone = True  # see Module: it commutes with a following MaxPool2d
    # a MaxPool2d after it in a Sequential may apply it (see Sequential; this class only)
    _fusable_relu = True

    _forward = staticmethod(F.relu)
    _backward = staticmethod(F.relu_backward)

    def forward_into(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`forward` writing into ``out`` (C-contiguous, ``x``'s shape and dtype; may
        be ``x`` itself when nothing else reads ``x`` -- the graph executor runs a ReLU in
        place on an Add's output so)."""
        y = type(self)._forward(x, out=out)
        self._out = y if self.training else None
        return y

    def backward_into(self, grad_output: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`backward` writing into ``out`` (may be ``grad_output`` itself when nothing
        else reads it -- the graph executor does so for a gradient sum it owns)."""
        return type(self)._backward(grad_output, self._cached("_out"), out=out)

    def backward_sum(
        self, grad_a: np.ndarray, grad_b: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`backward` of the gradient ``grad_a + grad_b`` (the sum of two consumers'
        parts) in one pass, into ``out`` (``grad_a``, ``grad_b`` or None: a new array) --
        bit-identical to adding them first; the graph executor passes the last part of an
        output gradient it sums so."""
        return add_relu_backward(grad_a, grad_b, self._cached("_out"), out)


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

    def forward(self, x: ArrayLike) -> np.ndarray:
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

    def forward(self, x: ArrayLike) -> np.ndarray:
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


class _InputCached(Module, register=False):
    """Activations whose gradient is a function of their input (``_backward(g, x, *args)``
    with ``args`` from :meth:`_args`)."""

    _forward: Any = None
    _backward: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._x: np.ndarray | None = None

    def _args(self) -> tuple:
        return ()

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x, "input", type(self).__name__)
        y = type(self)._forward(x, *self._args())
        self._x = x if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        return type(self)._backward(grad_output, x, *self._args()) if input_grad else None


class GELU(_InputCached):
    """Gaussian error linear unit ``x * Phi(x)``, exact or with ``approximate='tanh'`` (see
    :func:`cnncore.gelu`)."""

    _forward = staticmethod(F.gelu)
    _backward = staticmethod(F.gelu_backward)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = check_choice(approximate, "approximate", "GELU", ("none", "tanh"))

    def _args(self) -> tuple:
        return (self.approximate,)

    def get_config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}


class SiLU(_InputCached):
    """``x * sigmoid(x)`` (swish; see :func:`cnncore.silu`)."""

    _forward = staticmethod(F.silu)
    _backward = staticmethod(F.silu_backward)


class ELU(_InputCached):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (see :func:`cnncore.elu`)."""

    _forward = staticmethod(F.elu)
    _backward = staticmethod(F.elu_backward)

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_hyperparameter(alpha, "alpha", "ELU", "a finite number", math.isfinite)

    def _args(self) -> tuple:
        return (self.alpha,)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class Hardswish(_InputCached):
    """``x * clamp(x + 3, 0, 6) / 6`` (see :func:`cnncore.hardswish`)."""

    _forward = staticmethod(F.hardswish)
    _backward = staticmethod(F.hardswish_backward)


class Hardsigmoid(_InputCached):
    """``clamp(x + 3, 0, 6) / 6`` (see :func:`cnncore.hardsigmoid`)."""

    _forward = staticmethod(F.hardsigmoid)
    _backward = staticmethod(F.hardsigmoid_backward)


class Softplus(_InputCached):
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold`` (see
    :func:`cnncore.softplus`)."""

    _forward = staticmethod(F.softplus)
    _backward = staticmethod(F.softplus_backward)

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = check_hyperparameter(
            beta, "beta", "Softplus", "a finite non-zero number", lambda v: math.isfinite(v) and v
        )
        self.threshold = check_hyperparameter(
            threshold, "threshold", "Softplus", "a number (not NaN)", lambda v: not math.isnan(v)
        )

    def _args(self) -> tuple:
        return (self.beta, self.threshold)

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta, "threshold": self.threshold}


class Mish(_InputCached):
    """``x * tanh(softplus(x))`` (see :func:`cnncore.mish`)."""

    _forward = staticmethod(F.mish)
    _backward = staticmethod(F.mish_backward)


class ReLU6(_OutputCached):
    """``min(max(x, 0), 6)`` elementwise (see :func:`cnncore.relu6`); its gradient needs only
    the output (``0 < y < 6`` exactly where ``0 < x < 6``)."""

    elementwise_monotone = True  # see Module: it commutes with a following MaxPool2d

    _forward = staticmethod(F.relu6)
    _backward = staticmethod(F.relu6_backward)
