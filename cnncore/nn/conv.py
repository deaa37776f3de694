"""Convolution layers: :class:`Conv2d` and :class:`ConvTranspose2d` (state and parameters;
the work is :func:`cnncore.conv2d` / :func:`cnncore.conv_transpose2d` and their backward
functions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import functional as F
from .._config import blas_single_thread
from .._geometry import (
    PAD_MODES,
    conv2d_geometry,
    conv2d_padding,
    conv_transpose2d_geometry,
    conv_transpose2d_output_padding,
    conv_transpose2d_params,
)
from .._typing import ArrayLike, DTypeLike, IntPair, Padding, RNGLike
from .._validation import (
    add_batch_axis,
    check_bool,
    check_choice,
    check_input_shape,
    check_int,
    check_numel,
    to_pair,
)
from ..ops.conv import _conv2d_relu_max_pool2d, _conv2d_relu_max_pool2d_backward
from . import init
from .inference import conv2d_layer_kernel
from .module import (
    Module,
    Symbolic,
    accumulate,
    check_dtype,
    config_itemsize,
    config_positive_int,
    prepared_arrays,
    prepared_key,
)

__all__ = ["Conv2d", "ConvTranspose2d"]

#: ``'zeros'`` (done by the convolution itself) and the other modes of :func:`cnncore.pad2d`.
_PADDING_MODES = ("zeros", *(mode for mode in PAD_MODES if mode != "constant"))


def _image_input(x: Any, name: str) -> np.ndarray:
    """The layer's input: a batch ``(N, C, H, W)`` or one unbatched sample ``(C, H, W)``
    (the functional ops add and remove the batch axis), as PyTorch's modules take."""
    batch, unbatched = add_batch_axis(x, "input", name, "(N, C, H, W)")
    return batch[0] if unbatched else batch


def _prepared_call(x: np.ndarray, layer: Conv2d) -> Any:
    """The call of a Conv2d layer (zero padding) on inputs like ``x``, whose checks
    :func:`cnncore.conv2d` has just passed: ``call(layer, x) -> y``, or None (nothing
    computed) when ``x``, the weight or the bias is not like this time's (shape, dtype,
    C-contiguous; :func:`~cnncore.nn.module.prepared_arrays`) -- the layer then takes the
    checked path again.  It runs :func:`cnncore.ops.conv.prepare_conv2d`'s kernel call (the
    same algorithm choice, so bit-identical to ``conv2d``) on a new output: a repeated call
    costs a few attribute checks instead of the argument checks; with too little work to
    share (:data:`cnncore.nn.inference.SMALL_MACS`) it runs on one thread.  Returns None
    for calls not of that kind (other layouts, empty arrays)."""
    key = prepared_key(x, layer)
    if key is None or x.size == 0 or layer.weight.data.size == 0:
        return None
    if layer._call is not None and layer._call.key == key:
        return layer._call  # (the input was converted this time: keep the prepared call)
    run, out_shape = conv2d_layer_kernel(layer, key[0], key[2])
    dtype = key[2]
    cap = blas_single_thread()
    empty = np.empty

    def call(layer: Conv2d, x: np.ndarray) -> np.ndarray | None:
        arrays = prepared_arrays(layer, x, key)
        if arrays is None:
            return None
        y = empty(out_shape, dtype)
        with cap:
            run(*arrays, y)
        return y

    call.key = key  # type: ignore[attr-defined]
    return call


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
    ``H_out = floor((H_in + 2 * padding - dilation * (kH - 1) - 1) / stride) + 1``; or one
    unbatched sample ``(C_in, H_in, W_in)`` -> ``(C_out, H_out, W_out)``, as in PyTorch
    (``backward`` then takes and returns unbatched gradients).

    See Also
    --------
    cnncore.conv2d, cnncore.conv2d_backward
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RNGLike = None,
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
        self._call: Any = None  # the last input shape's prepared call (see _prepared_call)

    def _conv_padding(self) -> Any:
        # with a non-zero padding mode the input is padded explicitly, the conv pads nothing
        return 0 if self.padding_mode != "zeros" else self.padding

    def forward(self, x: ArrayLike) -> np.ndarray:
        call = self._call
        if call is not None:
            y = call(self, x)
            if y is not None:
                self._x = x if self.training else None
                return y
        x = _image_input(x, "Conv2d")
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
        if self.padding_mode == "zeros" and x.ndim == 4:
            self._call = _prepared_call(x, self)
        return y

    # Sequential fuses a ReLU and a MaxPool2d behind it into it in training
    # (_forward_relu_pool; only this class: looked up in the class's own namespace)
    _fuses_relu_pool = True

    def _forward_relu_pool(self, x: np.ndarray, pool: Any) -> np.ndarray | None:
        """``pool(relu(self(x)))`` for a batch in training, in one kernel where it applies
        (one input channel, unit stride, 2x2 / stride-2 pooling: see
        :func:`cnncore.ops.conv._conv2d_relu_max_pool2d`), else None (nothing done).  Leaves
        each layer's cache as the three calls would -- ``pool``'s with the ReLU fused (its
        :meth:`MaxPool2d.backward` then gives this layer's output gradient) -- with the same
        values as the row-vectorized conv2d."""
        if (
            self.padding_mode != "zeros"
            or pool.kernel_size != (2, 2)
            or pool.stride != (2, 2)
            or pool.padding != (0, 0)
            or pool.dilation != (1, 1)
            or pool.ceil_mode
        ):
            return None
        res = _conv2d_relu_max_pool2d(
            x,
            self.weight.data,
            None if self.bias is None else self.bias.data,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
        if res is None:
            return None
        y, idx, conv_shape = res
        self._x = x
        pool._indices, pool._input_shape, pool._relu_out = idx, conv_shape, y
        return y

    def _backward_relu_pool(self, grad_output: np.ndarray, pool: Any) -> bool:
        """After :meth:`_forward_relu_pool`: this layer's parameter gradients from the
        gradient w.r.t. ``pool``'s output, without the full-size gradient of this layer's
        output (:func:`cnncore.ops.conv._conv2d_relu_max_pool2d_backward`; no input
        gradient).  False where it does not apply (nothing done: ``pool.backward`` then
        this layer's :meth:`backward` give the same gradients)."""
        x = self._cached("_x")
        if pool._indices is None or pool._relu_out is None:
            return False
        res = _conv2d_relu_max_pool2d_backward(
            grad_output,
            pool._indices,
            pool._relu_out,
            x,
            self.weight.data.shape,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
        )
        if res is None:
            return False
        dw, db = res
        accumulate(self.weight.grad, dw)
        if self.bias is not None:
            accumulate(self.bias.grad, db)
        return True

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
        accumulate(self.weight.grad, dw)
        if self.bias is not None:
            accumulate(self.bias.grad, db)
        if not input_grad:
            return None
        if self.padding_mode != "zeros":
            (pt, pb), (pl, pr) = self._pads
            if pt or pb or pl or pr:
                dx = F.pad2d_backward(dx, (pl, pr, pt, pb), mode=self.padding_mode)
        return dx

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = check_input_shape(input_shape, "Conv2d", (4,), size=self.in_channels)
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

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        i = config_positive_int(config.get("in_channels"))
        o = config_positive_int(config.get("out_channels"))
        groups = config_positive_int(config.get("groups", 1))
        k = config.get("kernel_size")
        kh, kw = (k, k) if not isinstance(k, list) else (k + [None, None])[:2]
        kh, kw = config_positive_int(kh), config_positive_int(kw)
        if None in (i, o, groups, kh, kw):
            return 0
        n = o * (i // groups) * kh * kw + (o if config.get("bias", True) else 0)
        return n * config_itemsize(config)


class ConvTranspose2d(Module):
    """2-D transposed convolution layer: ``y = conv_transpose2d(x, weight) + bias``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, output_padding, groups, dilation
        As in :func:`cnncore.conv_transpose2d` (``output_padding`` smaller than ``stride``
        or ``dilation``).
    bias : bool, default True
    padding_mode : {'zeros'}, default 'zeros'
        The only mode, as in PyTorch.
    dtype : float32 or float64, default float32
    rng : numpy Generator, int or None
        Seeds the default initialization (PyTorch's kaiming-uniform with ``a = sqrt(5)``;
        the fan-in is ``out_channels / groups * kH * kW``, from the weight's second axis, as
        in PyTorch).

    Attributes
    ----------
    weight : Parameter of shape (in_channels, out_channels / groups, kH, kW)
    bias : Parameter of shape (out_channels,) or None

    Notes
    -----
    Input ``(N, C_in, H_in, W_in)``, output ``(N, C_out, H_out, W_out)`` with
    ``H_out = (H_in - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1``
    (or one unbatched sample ``(C_in, H_in, W_in)`` -> ``(C_out, H_out, W_out)``).
    ``forward(x, output_size=(H, W))`` picks the output padding that gives that size instead
    (``output_size`` between the size without output padding and ``stride - 1`` more).

    See Also
    --------
    cnncore.conv_transpose2d, cnncore.conv_transpose2d_backward, Conv2d
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntPair = 1,
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RNGLike = None,
    ) -> None:
        super().__init__()
        name = "ConvTranspose2d"
        self.in_channels = check_int(in_channels, "in_channels", name, min_value=1)
        self.out_channels = check_int(out_channels, "out_channels", name, min_value=1)
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, min_value=1)
        self.stride, self.padding, self.output_padding, self.dilation = conv_transpose2d_params(
            name, stride, padding, output_padding, dilation
        )
        self.groups = check_int(groups, "groups", name, min_value=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{name}(): in_channels and out_channels must be divisible by groups. "
                f"Received: in_channels={in_channels}, out_channels={out_channels}, "
                f"groups={groups}"
            )
        self.padding_mode = check_choice(padding_mode, "padding_mode", name, ("zeros",))
        self.dtype = check_dtype(dtype, name)
        w_shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        check_numel(w_shape, "weight", name, self.dtype.itemsize)
        weight = np.empty(w_shape, self.dtype)
        bias = check_bool(bias, "bias", name)
        b = np.empty(self.out_channels, self.dtype) if bias else None
        init.default_conv_linear_init_(weight, b, rng)
        self.register_parameter("weight", weight)
        self.bias = self.register_parameter("bias", b) if bias else None
        self._x: np.ndarray | None = None
        self._output_padding: tuple[int, int] = self.output_padding

    def __call__(self, x: ArrayLike, output_size: Sequence[int] | None = None) -> Any:
        if output_size is None:  # on graph nodes too (Module.__call__ records the call)
            return super().__call__(x)
        if isinstance(x, Symbolic):
            raise ValueError(
                "ConvTranspose2d(): output_size= applies to array inputs only; in a graph "
                "model set output_padding= instead. Received: a graph node and "
                f"output_size={output_size!r}"
            )
        return self.forward(x, output_size)

    def forward(self, x: ArrayLike, output_size: Sequence[int] | None = None) -> np.ndarray:
        x = _image_input(x, "ConvTranspose2d")
        op = self.output_padding
        if output_size is not None:
            op = conv_transpose2d_output_padding(
                "ConvTranspose2d",
                x.shape[-2:],
                output_size,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                unbatched=x.ndim == 3,
            )
        y = F.conv_transpose2d(
            x,
            self.weight.data,
            None if self.bias is None else self.bias.data,
            self.stride,
            self.padding,
            op,
            self.groups,
            self.dilation,
        )
        self._x = x if self.training else None
        self._output_padding = op
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        x = self._cached("_x")
        dx, dw, db = F.conv_transpose2d_backward(
            grad_output,
            x,
            self.weight.data,
            self.stride,
            self.padding,
            self._output_padding,
            self.groups,
            self.dilation,
            output_mask=(bool(input_grad), True, self.bias is not None),
        )
        accumulate(self.weight.grad, dw)
        if self.bias is not None:
            accumulate(self.bias.grad, db)
        return dx if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = input_shape
        _, out = conv_transpose2d_geometry(
            "ConvTranspose2d",
            (h, w),
            self.kernel_size,
            self.stride,
            self.padding,
            self.output_padding,
            self.dilation,
        )
        return (n, self.out_channels, *out)

    def get_config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "output_padding": list(self.output_padding),
            "groups": self.groups,
            "bias": self.bias is not None,
            "dilation": list(self.dilation),
            "padding_mode": self.padding_mode,
            "dtype": self.dtype.name,
        }

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        return Conv2d.config_nbytes(config)
