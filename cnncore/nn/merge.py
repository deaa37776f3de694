"""Merge layers for graph models -- :class:`Add`, :class:`Multiply`, :class:`Concatenate` --
and :class:`Identity`.

A merge layer takes a list of arrays (in a graph model: is called on a list of nodes,
``nn.Add()([x, y])``) and its ``backward`` returns a list of gradients, one per input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._config import threads_for
from .._typing import ArrayLike
from .._validation import as_float_array, as_ndarray, check_int
from ..ops.activation import relu_backward
from . import _merge
from .module import Module, grad_like

__all__ = ["Add", "Multiply", "Concatenate", "Identity"]


def _kernel_arrays(*arrays: Any) -> bool:
    """Whether the compiled kernels take these: C-contiguous float32/float64 arrays of one
    shape and dtype."""
    a0 = arrays[0]
    return (
        isinstance(a0, np.ndarray)
        and a0.dtype in (np.float32, np.float64)
        and all(
            isinstance(a, np.ndarray)
            and a.dtype == a0.dtype
            and a.shape == a0.shape
            and a.flags.c_contiguous
            for a in arrays
        )
    )


def add_arrays(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a + b`` into ``out`` (which may be ``a`` or ``b``; None: a new array) -- on
    :func:`~cnncore._config.threads_for` threads for C-contiguous arrays of one shape and
    float dtype, else NumPy's; the same bits either way (IEEE addition).  :class:`Add` and
    the graph executor's gradient sums use it."""
    if _kernel_arrays(a, b) and (out is None or (_kernel_arrays(a, out) and out.flags.writeable)):
        if out is None:
            out = np.empty_like(a)
        _merge.add(a.reshape(-1), b.reshape(-1), out.reshape(-1), threads_for(3 * a.size))
        return out
    return a + b if out is None else np.add(a, b, out=out)


def add_relu_backward(
    a: np.ndarray, b: np.ndarray, output: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """``relu_backward(a + b, output)`` in one pass (into ``out``, which may be ``a`` or
    ``b``; None: a new array): a ReLU's output gradient summed over two consumers and passed
    back through the ReLU (``output`` its forward output) -- bit-identical to
    :func:`add_arrays` then :func:`cnncore.relu_backward`."""
    if _kernel_arrays(a, b, output) and (
        out is None or (_kernel_arrays(a, out) and out.flags.writeable)
    ):
        if out is None:
            out = np.empty_like(a)
        _merge.add_relu_backward(
            a.reshape(-1),
            b.reshape(-1),
            output.reshape(-1),
            out.reshape(-1),
            threads_for(4 * a.size),  # (elements read and written: threads_for's work)
        )
        return out
    s = add_arrays(a, b, out)
    return relu_backward(s, output, out=s)


def _shape_text(shapes: list[tuple[Any, ...]]) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


class _Merge(Module, register=False):
    """A layer over a list of same-dtype float arrays (subclasses check the shapes)."""

    _min_inputs = 2

    def _check_count(self, values: Any, what: str) -> list[Any]:
        func = type(self).__name__
        if not isinstance(values, (list, tuple)):
            raise TypeError(
                f"{func}(): expects a list of {what}. Received: {type(values).__name__}"
            )
        if len(values) < self._min_inputs:
            raise ValueError(
                f"{func}(): expects a list of at least {self._min_inputs} {what}. "
                f"Received: {len(values)}"
            )
        return list(values)

    def _arrays(self, xs: Any) -> list[np.ndarray]:
        func = type(self).__name__
        arrays = [
            as_float_array(x, f"inputs[{i}]", func)
            for i, x in enumerate(self._check_count(xs, "input arrays"))
        ]
        for i, a in enumerate(arrays[1:], 1):
            if a.dtype != arrays[0].dtype:
                raise TypeError(
                    f"{func}(): all inputs must have the same dtype. Received: "
                    f"inputs[0].dtype={arrays[0].dtype}, inputs[{i}].dtype={a.dtype}"
                )
        return arrays

    def _shapes(self, input_shape: Any) -> list[tuple[Any, ...]]:
        shapes = self._check_count(input_shape, "input shapes")
        return [tuple(s) for s in shapes]


class _Elementwise(_Merge, register=False):
    """Inputs of one shape (no broadcasting), output of that shape."""

    def _check_same(self, shapes: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError(
                f"{type(self).__name__}(): all inputs must have the same shape. "
                f"Received: input shapes {_shape_text(shapes)}"
            )
        return shapes[0]

    def output_shape(self, input_shape: Sequence[Sequence[int]]) -> tuple[int | None, ...]:
        return self._check_same(self._shapes(input_shape))


class Add(_Elementwise):
    """Elementwise sum of two or more arrays of the same shape and dtype:
    ``inputs[0] + inputs[1] + ...`` (added left to right).

    ``backward(grad_output)`` returns ``[grad_output] * len(inputs)`` (the same array for
    every input, as autograd does).

    Examples
    --------
    A residual connection in a graph model::

        y = nn.Add()([x, block(x)])
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None
        self._n = 0

    def forward(self, xs: Sequence[ArrayLike]) -> np.ndarray:
        arrays = self._arrays(xs)
        self._check_same([a.shape for a in arrays])
        y = add_arrays(arrays[0], arrays[1])
        for a in arrays[2:]:
            add_arrays(y, a, out=y)
        self._shape = y.shape if self.training else None
        self._n = len(arrays)
        return y

    def _forward_done(self, y: np.ndarray, n: int) -> np.ndarray:
        """Record the sum ``y`` of ``n`` inputs computed elsewhere (a graph model's batch
        norm with this Add fused, see :class:`cnncore.nn.Model`) as :meth:`forward` records
        its own, and return it."""
        self._shape = y.shape if self.training else None
        self._n = n
        return y

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> list[np.ndarray] | None:
        shape = self._cached("_shape")
        g = grad_like(grad_output, shape, "Add")
        return [g] * self._n if input_grad else None


class Multiply(_Elementwise):
    """Elementwise product of two or more arrays of the same shape and dtype:
    ``inputs[0] * inputs[1] * ...`` (multiplied left to right).

    ``backward`` returns, for each input, ``grad_output`` times the product of the other
    inputs (no division, so zeros are exact).
    """

    def __init__(self) -> None:
        super().__init__()
        self._inputs: list[np.ndarray] | None = None

    def forward(self, xs: Sequence[ArrayLike]) -> np.ndarray:
        arrays = self._arrays(xs)
        self._check_same([a.shape for a in arrays])
        y = arrays[0] * arrays[1]
        for a in arrays[2:]:
            np.multiply(y, a, out=y)
        self._inputs = arrays if self.training else None
        return y

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> list[np.ndarray] | None:
        arrays = self._cached("_inputs")
        g = grad_like(grad_output, arrays[0].shape, "Multiply")
        if not input_grad:
            return None
        grads = []
        for i in range(len(arrays)):
            gi = None
            for j, a in enumerate(arrays):
                if j != i:
                    gi = g * a if gi is None else np.multiply(gi, a, out=gi)
            grads.append(gi)
        return grads


class Concatenate(_Merge):
    """Concatenate arrays along ``dim`` (``torch.cat``): the inputs agree in every other
    dimension and in dtype.

    Parameters
    ----------
    dim : int, default 1
        The dimension to join (the channels of ``(N, C, H, W)`` inputs); negative counts
        from the end.  In a graph model it cannot be the batch dimension 0.

    Notes
    -----
    Inputs ``(N, C_i, H, W)`` give ``(N, sum(C_i), H, W)``; ``backward`` splits the
    gradient back into contiguous pieces.
    """

    _min_inputs = 1

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", "Concatenate", min_value=None)
        self._sizes: list[int] | None = None
        self._axis = 0

    def _axis_of(self, shapes: list[tuple[Any, ...]]) -> int:
        ndim = len(shapes[0])
        axis = self.dim + ndim if self.dim < 0 else self.dim
        if any(len(s) != ndim for s in shapes) or not 0 <= axis < ndim:
            raise ValueError(
                f"Concatenate(): the inputs must have the same number of dimensions, more "
                f"than dim={self.dim}. Received: input shapes {_shape_text(shapes)}"
            )
        for s in shapes[1:]:
            if s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :]:
                raise ValueError(
                    f"Concatenate(): the inputs must have the same shape except in dimension "
                    f"{axis}. Received: input shapes {_shape_text(shapes)}"
                )
        return axis

    def output_shape(self, input_shape: Sequence[Sequence[int]]) -> tuple[int | None, ...]:
        shapes = self._shapes(input_shape)
        axis = self._axis_of(shapes)
        sizes = [s[axis] for s in shapes]
        if None in sizes:
            raise ValueError(
                f"Concatenate(): cannot concatenate along the batch dimension of a graph "
                f"model. Received: dim={self.dim}, input shapes {_shape_text(shapes)}"
            )
        return (*shapes[0][:axis], sum(sizes), *shapes[0][axis + 1 :])

    def forward(self, xs: Sequence[ArrayLike]) -> np.ndarray:
        arrays = self._arrays(xs)
        axis = self._axis_of([a.shape for a in arrays])
        y = np.concatenate(arrays, axis=axis)
        self._sizes = [a.shape[axis] for a in arrays] if self.training else None
        self._axis = axis
        return y

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> list[np.ndarray] | None:
        sizes = self._cached("_sizes")
        axis = self._axis
        g = as_float_array(grad_output, "grad_output", "Concatenate.backward")
        if g.ndim <= axis or g.shape[axis] != sum(sizes):
            raise ValueError(
                f"Concatenate.backward(): grad_output must have {sum(sizes)} entries in "
                f"dimension {axis}. Received: grad_output with shape {g.shape}"
            )
        if not input_grad:
            return None
        bounds = np.cumsum(sizes)[:-1]
        return [np.ascontiguousarray(p) for p in np.split(g, bounds, axis=axis)]

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim}


class Identity(Module):
    """Returns its input unchanged (the same array object, as ``torch.nn.Identity``); a
    placeholder in graph models (e.g. the shortcut of a residual block).

    Notes
    -----
    Input ``(*)``, output ``(*)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_ndarray(x, "input", "Identity")
        if x.dtype.kind not in "biufc":
            raise TypeError(
                f"Identity(): input must be a numeric array. Received: input.dtype={x.dtype}"
            )
        self._shape = x.shape if self.training else None
        return x

    def backward(self, grad_output: ArrayLike, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_shape")
        g = grad_like(grad_output, shape, "Identity")
        return g if input_grad else None
