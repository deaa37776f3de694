"""Pooling layers: :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`AdaptiveAvgPool2d` and
:class:`GlobalAvgPool2d` (the work is the pooling functions of :mod:`cnncore.functional`).

Each takes a batch ``(N, C, H, W)`` or, as PyTorch's modules do, one unbatched sample
``(C, H, W)`` (its ``backward`` then takes and returns unbatched gradients)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._geometry import adaptive_pool2d_output_size, pool2d_geometry, pool2d_params
from .._typing import ArrayLike, IntPair
from .._validation import check_bool, check_input_shape, check_int, to_pair
from ..ops.pool import (
    _max_pool2d_relu,
    _max_pool2d_relu_backward,
    prepare_global_avg_pool2d,
    prepare_max_pool2d,
)
from .inference import SMALL_ELEMENTS, step_threads
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d"]


class MaxPool2d(Module):
    """2-D max pooling; keeps the argmax indices of the last training forward for
    ``backward``.

    Parameters are those of :func:`cnncore.max_pool2d`.

    See Also
    --------
    cnncore.max_pool2d, cnncore.max_pool2d_backward
    """

    max_selecting = True  # see Module: a ReLU in front of it runs after it in a Sequential
    # Sequential fuses a ReLU in front of it into it in training (_forward_relu; only this
    # class: the attribute is looked up in the class's own namespace)
    _fuses_relu = True

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = pool2d_params(
            "MaxPool2d", kernel_size, stride, padding, dilation, ceil_mode
        )
        self.ceil_mode = ceil_mode
        self._indices: np.ndarray | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._call: Any = None  # the last input shape's prepared call (see _prepared_call)
        # the output of a training forward with a ReLU fused (see _forward_relu), else None
        self._relu_out: np.ndarray | None = None

    def _forward_relu(self, x: np.ndarray) -> np.ndarray:
        """``relu(self.forward(x))`` for a batch in training, in one pass (bit-identical);
        the following :meth:`backward` then takes the gradient w.r.t. the ReLU's output and
        applies its mask while scattering.  :class:`Sequential` runs its ReLU-MaxPool2d
        pairs so."""
        y, idx = _max_pool2d_relu(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        self._indices, self._input_shape, self._relu_out = idx, x.shape, y
        return y

    def forward(self, x: ArrayLike) -> np.ndarray:
        self._relu_out = None
        call = self._call
        if call is not None:
            y = call(x, self.training)
            if y is not None:
                y, self._indices = y
                self._input_shape = x.shape
                return y
        pooled = F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            return_indices=self.training,  # eval mode keeps no cache: no indices computed
        )
        y, idx = pooled if self.training else (pooled, None)
        self._indices = idx
        self._input_shape = np.shape(x)
        if type(x) is np.ndarray and x.ndim == 4:
            self._call = self._prepared_call(x)
        return y

    def _prepared_call(self, x: np.ndarray) -> Any:
        """The call on inputs like ``x`` (a batch whose checks :func:`cnncore.max_pool2d`
        has just passed): ``call(x, training) -> (y, indices or None)``, or None (nothing
        computed) for an input of another shape, dtype or layout; it runs
        :func:`cnncore.ops.pool.prepare_max_pool2d`'s kernel call (bit-identical) on a new
        output, without the argument checks (on one thread below
        :data:`cnncore.nn.inference.SMALL_ELEMENTS` elements)."""
        if not x.flags.c_contiguous or x.dtype.kind != "f" or x.size == 0:
            return None
        key = (x.shape, x.dtype)
        if self._call is not None and self._call.key == key:
            return self._call
        run, out_shape = prepare_max_pool2d(
            x.shape,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            n_threads=step_threads(x.size, SMALL_ELEMENTS),
        )
        x_shape, dtype = key
        empty, int64 = np.empty, np.int64

        def call(x: Any, training: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
            if (
                type(x) is not np.ndarray
                or x.shape != x_shape
                or x.dtype is not dtype
                or not x.flags.c_contiguous
            ):
                return None
            if training:  # (the argmax indices for backward)
                idx = empty(out_shape, int64)
                return run(x, empty(out_shape, dtype), idx), idx
            return run(x, empty(out_shape, dtype)), None

        call.key = key  # type: ignore[attr-defined]
        return call

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        idx = self._cached("_indices")
        if not input_grad:
            return None
        if self._relu_out is not None:
            return _max_pool2d_relu_backward(grad_output, idx, self._input_shape, self._relu_out)
        return F.max_pool2d_backward(grad_output, idx, self._input_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_input_shape(input_shape, "MaxPool2d", (4,))
        geo = pool2d_geometry(
            "MaxPool2d",
            (h, w),
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        )
        return (n, c, *geo.out)

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "ceil_mode": self.ceil_mode,
        }


class _ShapeCachedPool(Module, register=False):
    """A pooling layer whose backward needs only the input's shape (the average poolings):
    subclasses give ``_pool`` and ``_pool_backward``."""

    def __init__(self) -> None:
        super().__init__()
        self._input_shape: tuple[int, ...] | None = None

    def _pool(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def _pool_backward(self, grad_output: Any, input_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: ArrayLike) -> np.ndarray:
        y = self._pool(x)
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_input_shape")
        return self._pool_backward(grad_output, shape) if input_grad else None


class AvgPool2d(_ShapeCachedPool):
    """2-D average pooling with PyTorch's divisor rules (see :func:`cnncore.avg_pool2d`).

    See Also
    --------
    cnncore.avg_pool2d, cnncore.avg_pool2d_backward
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        name = "AvgPool2d"
        self.kernel_size, self.stride, self.padding, _ = pool2d_params(
            name, kernel_size, stride, padding, 1, ceil_mode
        )
        self.ceil_mode = ceil_mode
        self.count_include_pad = check_bool(count_include_pad, "count_include_pad", name)
        self.divisor_override = (
            None
            if divisor_override is None
            else check_int(divisor_override, "divisor_override", name, min_value=1)
        )

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )

    def _pool(self, x: Any) -> np.ndarray:
        return F.avg_pool2d(x, **self._kwargs())

    def _pool_backward(self, grad_output: Any, input_shape: tuple[int, ...]) -> np.ndarray:
        return F.avg_pool2d_backward(grad_output, input_shape, **self._kwargs())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_input_shape(input_shape, "AvgPool2d", (4,))
        geo = pool2d_geometry(
            "AvgPool2d", (h, w), self.kernel_size, self.stride, self.padding, 1, self.ceil_mode
        )
        return (n, c, *geo.out)

    def get_config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
            "divisor_override": self.divisor_override,
        }


class AdaptiveAvgPool2d(_ShapeCachedPool):
    """Average pooling to a fixed output size (see :func:`cnncore.adaptive_avg_pool2d`)."""

    def __init__(self, output_size: IntPair) -> None:
        super().__init__()
        self.output_size = to_pair(output_size, "output_size", "AdaptiveAvgPool2d", min_value=1)

    def _pool(self, x: Any) -> np.ndarray:
        return F.adaptive_avg_pool2d(x, self.output_size)

    def _pool_backward(self, grad_output: Any, input_shape: tuple[int, ...]) -> np.ndarray:
        return F.adaptive_avg_pool2d_backward(grad_output, input_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_input_shape(input_shape, "AdaptiveAvgPool2d", (4,))
        adaptive_pool2d_output_size("AdaptiveAvgPool2d", (h, w), self.output_size)
        return (n, c, *self.output_size)

    def get_config(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}


class GlobalAvgPool2d(_ShapeCachedPool):
    """Mean over the spatial dimensions: ``(N, C, H, W) -> (N, C, 1, 1)`` (see
    :func:`cnncore.global_avg_pool2d`)."""

    def __init__(self) -> None:
        super().__init__()
        self._call: Any = None  # the prepared call (see forward)

    def forward(self, x: ArrayLike) -> np.ndarray:
        # a repeated batch shape skips the checks (which its first call passed) and runs on
        # one thread below SMALL_ELEMENTS elements (bit-identical: a speed choice only)
        call = self._call
        if (
            call is not None
            and type(x) is np.ndarray
            and x.shape == call.key[0]
            and x.dtype is call.key[1]
            and x.flags.c_contiguous
        ):
            self._input_shape = x.shape
            return call(x)
        y = super().forward(x)
        if type(x) is np.ndarray and x.ndim == 4 and x.dtype.kind == "f":
            if x.flags.c_contiguous and x.size:
                run, out_shape = prepare_global_avg_pool2d(
                    x.shape, step_threads(x.size, SMALL_ELEMENTS)
                )
                dtype, empty = x.dtype, np.empty

                def call(x: np.ndarray) -> np.ndarray:
                    return run(x, empty(out_shape, dtype))

                call.key = (x.shape, x.dtype)  # type: ignore[attr-defined]
                self._call = call
        return y

    def _pool(self, x: Any) -> np.ndarray:
        return F.global_avg_pool2d(x)

    def _pool_backward(self, grad_output: Any, input_shape: tuple[int, ...]) -> np.ndarray:
        return F.global_avg_pool2d_backward(grad_output, input_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_input_shape(input_shape, "GlobalAvgPool2d", (4,))
        return (n, c, 1, 1)
