"""Layers with parameters or caches: convolution, pooling, linear, reshaping, dropout and
batch normalization. Each holds state and calls :mod:`cnncore.functional`; geometry comes
from :mod:`cnncore._geometry`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .._geometry import conv2d_geometry, conv2d_padding, pool2d_geometry, pool2d_params
from .._validation import (
    as_float_array,
    as_ndarray,
    check_bool,
    check_choice,
    check_hyperparameter,
    check_int,
    check_numel,
    to_pair,
)
from . import init
from .module import Module, check_dtype

__all__ = [
    "Conv2d",
    "Linear",
    "Flatten",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
]

_PADDING_MODES = ("zeros", "replicate", "reflect", "circular")


def _accumulate(param_grad: np.ndarray, grad: np.ndarray) -> None:
    np.add(param_grad, grad, out=param_grad)


def _input_4d(x: Any, name: str) -> np.ndarray:
    return as_float_array(x, "input", name, ndim=4, ndim_text="a 4-D array (N, C, H, W)")


def _grad_like(grad_output: Any, shape: tuple[int, ...] | None, layer: str) -> np.ndarray:
    """``grad_output`` of a layer whose backward is computed here rather than by
    :mod:`cnncore.functional`: a float array shaped like the forward output."""
    func = f"{layer}.backward"
    g = as_float_array(grad_output, "grad_output", func)
    if shape is not None and g.shape != tuple(shape):
        raise ValueError(
            f"{func}(): grad_output must have the shape of the forward output, {tuple(shape)}. "
            f"Received: grad_output with shape {g.shape}"
        )
    return g


class Conv2d(Module):
    """2-D convolution layer: ``y = conv2d(x, weight) + bias``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation, groups
        As in :func:`cnncore.conv2d` (``padding`` may be ``'same'`` or ``'valid'``).
    bias : bool, default True
    padding_mode : {'zeros', 'replicate', 'reflect', 'circular'}, default 'zeros'
        How the border is padded (non-zero modes pad with :func:`cnncore.pad2d` first).
    dtype : float32 or float64, default float32
    rng : numpy Generator, int or None
        Seeds the default initialization (PyTorch's kaiming-uniform with ``a = sqrt(5)``).

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels / groups, kH, kW)
    bias : Parameter of shape (out_channels,) or None

    Notes
    -----
    Input ``(N, C_in, H_in, W_in)``, output ``(N, C_out, H_out, W_out)`` with
    ``H_out = floor((H_in + 2 * padding - dilation * (kH - 1) - 1) / stride) + 1``.

    See Also
    --------
    cnncore.conv2d, cnncore.conv2d_backward_input, cnncore.conv2d_backward_weight
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = np.float32,
        rng: Any = None,
    ) -> None:
        super().__init__()
        name = "Conv2d"
        self.in_channels = check_int(in_channels, "in_channels", name, min_value=1)
        self.out_channels = check_int(out_channels, "out_channels", name, min_value=1)
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, min_value=1)
        self.stride = to_pair(stride, "stride", name, min_value=1)
        self.dilation = to_pair(dilation, "dilation", name, min_value=1)
        self.groups = check_int(groups, "groups", name, min_value=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{name}(): in_channels and out_channels must be divisible by groups. "
                f"Received: in_channels={in_channels}, out_channels={out_channels}, "
                f"groups={groups}"
            )
        self.padding = padding if isinstance(padding, str) else to_pair(padding, "padding", name)
        # validates 'same'/'valid' and the stride rule, and gives per-side padding
        self._pads = conv2d_padding(
            name, self.padding, self.kernel_size, self.stride, self.dilation
        )
        self.padding_mode = check_choice(padding_mode, "padding_mode", name, _PADDING_MODES)
        self.dtype = check_dtype(dtype, name)
        w_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        check_numel(w_shape, "weight", name, self.dtype.itemsize)
        weight = np.empty(w_shape, self.dtype)
        bias = check_bool(bias, "bias", name)
        b = np.empty(self.out_channels, self.dtype) if bias else None
        init.default_conv_linear_init_(weight, b, rng)
        self.register_parameter("weight", weight)
        self.bias = self.register_parameter("bias", b) if bias else None
        self._x: np.ndarray | None = None

    def _conv_padding(self) -> Any:
        # with a non-zero padding mode the input is padded explicitly, the conv pads nothing
        return 0 if self.padding_mode != "zeros" else self.padding

    def forward(self, x: Any) -> np.ndarray:
        x = _input_4d(x, "Conv2d")
        if self.padding_mode != "zeros":
            (pt, pb), (pl, pr) = self._pads
            if pt or pb or pl or pr:
                x = F.pad2d(x, (pl, pr, pt, pb), mode=self.padding_mode)
        y = F.conv2d(
            x,
            self.weight.data,
            None if self.bias is None else self.bias.data,
            self.stride,
            self._conv_padding(),
            self.dilation,
            self.groups,
        )
        self._x = x if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        dx, dw, db = F.conv2d_backward(
            grad_output,
            x,
            self.weight.data,
            self.stride,
            self._conv_padding(),
            self.dilation,
            self.groups,
            output_mask=(bool(input_grad), True, self.bias is not None),
        )
        _accumulate(self.weight.grad, dw)
        if self.bias is not None:
            _accumulate(self.bias.grad, db)
        if not input_grad:
            return None
        if self.padding_mode != "zeros":
            (pt, pb), (pl, pr) = self._pads
            if pt or pb or pl or pr:
                dx = F.pad2d_backward(dx, (pl, pr, pt, pb), mode=self.padding_mode)
        return dx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = input_shape
        geo = conv2d_geometry(
            "Conv2d", (h, w), self.kernel_size, self.stride, self.padding, self.dilation
        )
        return (n, self.out_channels, *geo.out)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "padding_mode": self.padding_mode,
            "dtype": self.dtype.name,
        }


class Linear(Module):
    """Fully connected layer: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : numpy Generator, int or None
        Seeds PyTorch's default initialization, ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Notes
    -----
    Input ``(*, in_features)``, output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = np.float32,
        rng: Any = None,
    ) -> None:
        super().__init__()
        name = "Linear"
        self.in_features = check_int(in_features, "in_features", name, min_value=1)
        self.out_features = check_int(out_features, "out_features", name, min_value=1)
        self.dtype = check_dtype(dtype, name)
        check_numel((self.out_features, self.in_features), "weight", "Linear", self.dtype.itemsize)
        weight = np.empty((self.out_features, self.in_features), self.dtype)
        bias = check_bool(bias, "bias", "Linear")
        b = np.empty(self.out_features, self.dtype) if bias else None
        init.default_conv_linear_init_(weight, b, rng)
        self.register_parameter("weight", weight)
        self.bias = self.register_parameter("bias", b) if bias else None
        self._x: np.ndarray | None = None

    def forward(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "input", "Linear")
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        grad_output = _grad_like(grad_output, (*x.shape[:-1], self.out_features), "Linear")
        _accumulate(self.weight.grad, F.linear_backward_weight(grad_output, x))
        if self.bias is not None:
            _accumulate(self.bias.grad, F.linear_backward_bias(grad_output))
        if not input_grad:
            return None
        return F.linear_backward_input(grad_output, self.weight.data)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:-1], self.out_features)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }


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
        return (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :])

    def forward(self, x: Any) -> np.ndarray:
        x = as_ndarray(x, "input", "Flatten")
        self._shape = x.shape
        return x.reshape(self._new_shape(x.shape))

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_shape")
        if not input_grad:
            return None
        return _grad_like(grad_output, self._new_shape(shape), "Flatten").reshape(shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self._new_shape(tuple(input_shape))

    def get_config(self) -> dict[str, Any]:
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}


class Dropout(Module):
    """Zero each element with probability ``p`` in training and scale the rest by
    ``1 / (1 - p)``; the identity in eval mode.

    ``rng`` (Generator, int or None for the module-wide generator, see
    :func:`cnncore.nn.init.manual_seed`) draws the masks; ``Sequential.fit(seed=...)`` reseeds
    it so runs are reproducible.
    """

    def __init__(self, p: float = 0.5, *, rng: Any = None) -> None:
        super().__init__()
        self.p = check_hyperparameter(
            p, "p", "Dropout", "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0
        )
        self.rng = None if rng is None else init.get_rng(rng)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> np.ndarray:
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
        grad_output = _grad_like(grad_output, self._shape, "Dropout")
        return grad_output if mask is None else grad_output * mask

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}


class _BatchNorm(Module):
    _expected_ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(num_features, "num_features", name, min_value=1)
        self.eps = check_hyperparameter(eps, "eps", name, "a positive number", lambda v: v > 0)
        self.momentum = (
            None
            if momentum is None
            else check_hyperparameter(
                momentum, "momentum", name, "in [0, 1] or None", lambda v: 0.0 <= v <= 1.0
            )
        )
        self.affine = check_bool(affine, "affine", name)
        self.track_running_stats = check_bool(track_running_stats, "track_running_stats", name)
        self.dtype = check_dtype(dtype, name)
        c = self.num_features
        if self.affine:
            self.register_parameter("weight", np.ones(c, self.dtype))
            self.register_parameter("bias", np.zeros(c, self.dtype))
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, self.dtype))
            self.register_buffer("running_var", np.ones(c, self.dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self._xhat: np.ndarray | None = None
        self._invstd: np.ndarray | None = None

    def _axes_and_view(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        name = type(self).__name__
        if x.ndim not in self._expected_ndims or x.shape[1] != self.num_features:
            dims = " or ".join(f"{d}-D" for d in self._expected_ndims)
            raise ValueError(
                f"{name}(): expected a {dims} input with {self.num_features} channels in "
                f"dimension 1. Received: input with shape {x.shape}"
            )
        axes = (0, *range(2, x.ndim))
        view = (1, self.num_features) + (1,) * (x.ndim - 2)
        return axes, view

    def forward(self, x: Any) -> np.ndarray:
        x = as_float_array(x, "input", type(self).__name__)
        axes, view = self._axes_and_view(x)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            m = x.size // self.num_features
            if m <= 1 and self.training:
                raise ValueError(
                    f"{type(self).__name__}(): expected more than 1 value per channel when "
                    f"training. Received: input with shape {x.shape}"
                )
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            if self.training and self.track_running_stats:
                nbt = self._buffers["num_batches_tracked"]
                nbt += 1
                mom = 1.0 / float(nbt) if self.momentum is None else self.momentum
                rm, rv = self._buffers["running_mean"], self._buffers["running_var"]
                rm *= 1 - mom
                rm += mom * mean
                rv *= 1 - mom
                rv += mom * var * (m / max(m - 1, 1))
        else:
            mean = self._buffers["running_mean"]
            var = self._buffers["running_var"]
        invstd = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype, copy=False)
        xhat = (x - mean.reshape(view)) * invstd.reshape(view)
        if self.training:
            self._xhat, self._invstd = xhat, invstd
        else:
            self._xhat = self._invstd = None
        if not self.affine:
            return xhat
        return xhat * self.weight.data.reshape(view) + self.bias.data.reshape(view)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        xhat = self._cached("_xhat")
        invstd = self._invstd
        grad_output = _grad_like(grad_output, xhat.shape, type(self).__name__)
        axes, view = self._axes_and_view(xhat)
        if self.affine:
            _accumulate(self.bias.grad, grad_output.sum(axis=axes))
            _accumulate(self.weight.grad, (grad_output * xhat).sum(axis=axes))
        if not input_grad:
            return None
        dxhat = grad_output * self.weight.data.reshape(view) if self.affine else grad_output
        m = xhat.size // self.num_features
        s1 = dxhat.sum(axis=axes).reshape(view)
        s2 = (dxhat * xhat).sum(axis=axes).reshape(view)
        return (invstd.reshape(view) / m) * (m * dxhat - s1 - xhat * s2)

    def get_config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dtype": self.dtype.name,
        }


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` inputs (PyTorch semantics:
    biased batch variance to normalize, unbiased for the running estimate)."""

    _expected_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)`` inputs, per channel (PyTorch semantics)."""

    _expected_ndims = (4,)


class MaxPool2d(Module):
    """2-D max pooling; keeps the argmax index cache (reused buffer) for ``backward``.

    Parameters are those of :func:`cnncore.max_pool2d`.

    See Also
    --------
    cnncore.max_pool2d, cnncore.max_pool2d_backward
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = pool2d_params(
            "MaxPool2d", kernel_size, stride, padding, dilation, ceil_mode
        )
        self.ceil_mode = ceil_mode
        self._indices: np.ndarray | None = None
        self._input_shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> np.ndarray:
        y, idx = F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            return_indices=True,
        )
        self._indices = idx if self.training else None
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        idx = self._cached("_indices")
        if not input_grad:
            return None
        return F.max_pool2d_backward(grad_output, idx, self._input_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = input_shape
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


class AvgPool2d(Module):
    """2-D average pooling with PyTorch's divisor rules (see :func:`cnncore.avg_pool2d`).

    See Also
    --------
    cnncore.avg_pool2d, cnncore.avg_pool2d_backward
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
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
        self._input_shape: tuple[int, ...] | None = None

    def _kwargs(self) -> dict[str, Any]:
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )

    def forward(self, x: Any) -> np.ndarray:
        y = F.avg_pool2d(x, **self._kwargs())
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_input_shape")
        if not input_grad:
            return None
        return F.avg_pool2d_backward(grad_output, shape, **self._kwargs())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = input_shape
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


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (see :func:`cnncore.adaptive_avg_pool2d`)."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = to_pair(output_size, "output_size", "AdaptiveAvgPool2d", min_value=1)
        self._input_shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> np.ndarray:
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_input_shape")
        return F.adaptive_avg_pool2d_backward(grad_output, shape) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:2], *self.output_size)

    def get_config(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}


class GlobalAvgPool2d(Module):
    """Mean over the spatial dimensions: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self._input_shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> np.ndarray:
        y = F.global_avg_pool2d(x)
        self._input_shape = np.shape(x)
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_input_shape")
        return F.global_avg_pool2d_backward(grad_output, shape) if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:2], 1, 1)
