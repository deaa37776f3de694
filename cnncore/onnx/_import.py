"""Import ONNX models into cnncore: each operator of a chain graph becomes a layer of a
:class:`~cnncore.nn.Sequential`.

:data:`IMPORTERS` maps an ONNX op type to a converter ``fn(chain, node)``; a converter takes
the node's one dynamic input with :meth:`_Chain.take` (which checks that the graph is a
chain: the input is the previous layer's output and nothing else reads it), reads its
constant inputs with :meth:`_Chain.const`, and appends a layer with :meth:`_Chain.emit`.
Some operators combine with their neighbour: ``Pad`` in front of ``Conv`` becomes the
convolution's padding (and padding mode), ``MatMul`` followed by ``Add`` of a constant one
``Linear``.  A model using an operator outside the table is refused up front with one
ValueError listing every such operator.

A graph whose values branch (residual ``Add`` of two tensors, ``Concat``) is not a chain; it
needs cnncore's graph models, and raises ValueError naming the node until then.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from .._geometry import conv2d_padding
from ._proto import float_attr, require_onnx, tensor_to_array

__all__ = ["load", "from_model_proto", "IMPORTERS"]

_FLOAT_TYPES = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}  # TensorProto FLOAT, DOUBLE


class _Chain:
    """The state of an import: constants, the value flowing through the chain, its shape
    (the batch dimension is a placeholder), the layers so far."""

    def __init__(
        self,
        where: str,
        opset: int,
        dtype: np.dtype,
        current: str,
        shape: tuple[int, ...],
        batches: tuple[int, ...],
        constants: dict[str, np.ndarray],
        uses: dict[str, int],
        graph_outputs: set[str],
    ) -> None:
        self.where = where
        self.opset = opset
        self.dtype = dtype
        self.current = current
        self.shape = shape
        self.batches = batches  # batch sizes the graph's input may have (dynamic: two)
        self.constants = constants
        self.uses = uses
        self.graph_outputs = graph_outputs
        self.layers: list[nn.Module] = []
        self.pending_pad: tuple[str, tuple[int, int, int, int]] | None = None
        self.matmul_output: str | None = None  # output of a bias-less Linear from MatMul
        self.node: Any = None

    # -- helpers for converters ------------------------------------------------------------
    def error(self, why: str) -> ValueError:
        node = self.node
        label = f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"
        return ValueError(f"cnncore.onnx.load(): {self.where}: {label}: {why}")

    def attrs(self) -> _Attrs:
        """The node's attributes, each checked to have its ONNX type when it is read."""
        return _Attrs(self)

    def const(self, index: int, what: str, required: bool = True) -> np.ndarray | None:
        """The node's input ``index`` as a constant array (None if absent and optional)."""
        inputs = self.node.input
        name = inputs[index] if index < len(inputs) else ""
        if not name:
            if required:
                raise self.error(f"the {what} input is missing")
            return None
        if name not in self.constants:
            raise self.error(
                f"the {what} ({name!r}) must be a constant (an initializer or a Constant node)"
            )
        return self.constants[name]

    def take(self, index: int = 0) -> str:
        """The node's dynamic input ``index``: the previous layer's output, read by this node
        alone (a chain); every other input must be a constant."""
        inputs = list(self.node.input)
        x = inputs[index] if index < len(inputs) else ""
        if x != self.current:
            if x in self.constants:
                raise self.error(f"input {x!r} is a constant where a tensor is expected")
            raise self.error(
                f"its input {x!r} is not the output of the previous layer "
                f"({self.current!r}): the graph branches, which needs a graph model"
            )
        for i, name in enumerate(inputs):
            if i != index and name and name not in self.constants:
                raise self.error(
                    f"it reads two tensors ({x!r}, {name!r}): the graph branches, which "
                    f"needs a graph model"
                )
        if self.uses.get(x, 0) > 1 or x in self.graph_outputs and self.uses.get(x, 0):
            raise self.error(
                f"value {x!r} is read by several nodes: the graph branches, which needs a "
                f"graph model"
            )
        if self.pending_pad is not None and self.node.op_type != "Conv":
            raise self.error("a Pad is followed by something other than a Conv")
        return x

    def _check_extra_outputs(self) -> None:
        for name in list(self.node.output)[1:]:
            if name and (self.uses.get(name, 0) or name in self.graph_outputs):
                raise self.error(f"its extra output {name!r} is used (only the first may be)")

    def emit(self, layer: nn.Module, shape: tuple[int, ...] | None = None) -> None:
        """Append ``layer``; the node's first output becomes the current value."""
        self._check_extra_outputs()
        try:
            self.shape = tuple(shape) if shape is not None else layer.output_shape(self.shape)
        except (ValueError, TypeError, IndexError) as exc:
            raise self.error(
                f"does not accept an input of shape {self._shape_text()} ({exc})"
            ) from None
        self.layers.append(layer)
        self.current = self.node.output[0]
        self.matmul_output = None

    def skip(self) -> None:
        """A node that is the identity in inference: nothing is appended."""
        self._check_extra_outputs()
        self.current = self.node.output[0]

    def _shape_text(self) -> str:
        return str(("N", *self.shape[1:]))

    def layer(self, make: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> Any:
        """``make(*args, **kwargs)``, its ValueError/TypeError named after the node."""
        try:
            return make(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise self.error(f"unsupported attributes ({exc})") from None

    def load_into(self, target: np.ndarray, value: np.ndarray, what: str) -> None:
        if value.shape != target.shape:
            raise self.error(f"{what} has shape {value.shape}, expected {target.shape}")
        target[...] = value.astype(target.dtype)


# The attribute types the converters read (AttributeProto.AttributeType names).
_ATTR_TYPES = {
    **dict.fromkeys(
        (
            "group",
            "transA",
            "transB",
            "training_mode",
            "ceil_mode",
            "count_include_pad",
            "allowzero",
            "axis",
            "to",
            "start",
            "end",
            "keepdims",
        ),
        ("INT",),
    ),
    **dict.fromkeys(("pads", "strides", "dilations", "kernel_shape", "perm", "axes"), ("INTS",)),
    **dict.fromkeys(("alpha", "beta", "epsilon", "momentum", "ratio"), ("FLOAT",)),
    **dict.fromkeys(("auto_pad", "mode"), ("STRING",)),
    "value": ("FLOAT", "TENSOR"),  # Pad before opset 11; ConstantOfShape
}


class _Attrs:
    """A node's attributes by name; ``get`` checks the type against :data:`_ATTR_TYPES`, so
    a corrupted attribute is a ValueError naming the node, not a crash in a converter."""

    def __init__(self, chain: _Chain) -> None:
        self.chain = chain
        self.protos = {a.name: a for a in chain.node.attribute}

    def __contains__(self, name: str) -> bool:
        return name in self.protos

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def get(self, name: str, default: Any = None) -> Any:
        a = self.protos.get(name)
        if a is None:
            return default
        onnx = require_onnx()
        kind = (
            onnx.AttributeProto.AttributeType.Name(a.type)
            if a.type in (onnx.AttributeProto.AttributeType.values())
            else str(a.type)
        )
        allowed = _ATTR_TYPES.get(name, ("INT", "INTS", "FLOAT", "FLOATS", "STRING"))
        if kind not in allowed:
            raise self.chain.error(
                f"attribute {name!r} has type {kind}, expected {' or '.join(allowed)}"
            )
        if kind == "TENSOR":
            return tensor_to_array(a.t, self.chain.where)
        if kind == "STRING":
            return a.s.decode("utf-8", errors="replace")
        return onnx.helper.get_attribute_value(a)


# --------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------


def _ints(values: Any, n: int, default: int, c: _Chain, what: str) -> list[int]:
    """``n`` ints (``default`` each if absent), at least ``default`` (1 for strides and
    dilations, 0 for pads)."""
    if values is None:
        return [default] * n
    values = [int(v) for v in values]
    if len(values) != n or min(values) < default:
        raise c.error(f"{what} must be {n} values >= {default}. Received: {values}")
    return values


def _spatial_pads(
    c: _Chain, a: dict[str, Any], kernel: list[int], stride: list[int], dilation: list[int]
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = _ints(a.get("pads"), 4, 0, c, "pads")
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = []
        for size, k, s, d in zip(c.shape[2:], kernel, stride, dilation, strict=True):
            out = -(-size // s)
            total.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size))
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
        return begin[0], begin[1], end[0], end[1]
    raise c.error(f"unknown auto_pad {auto!r}")


def _rank(c: _Chain, ranks: tuple[int, ...]) -> None:
    if len(c.shape) not in ranks:
        raise c.error(f"expects a {' or '.join(map(str, ranks))}-D input, got {c._shape_text()}")


def _conv(c: _Chain) -> None:
    c.take()
    _rank(c, (4,))
    w = c.const(1, "weight")
    b = c.const(2, "bias", required=False)
    if w.ndim != 4:
        raise c.error(f"only 2-D convolutions are supported (weight of shape {w.shape})")
    a = c.attrs()
    group = int(a.get("group", 1))
    kernel = list(w.shape[2:])
    if "kernel_shape" in a and list(a["kernel_shape"]) != kernel:
        raise c.error(f"kernel_shape {a['kernel_shape']} differs from the weight's {kernel}")
    stride = _ints(a.get("strides"), 2, 1, c, "strides")
    dilation = _ints(a.get("dilations"), 2, 1, c, "dilations")
    pt, pl, pb, pr = _spatial_pads(c, a, kernel, stride, dilation)
    mode = "zeros"
    if c.pending_pad is not None:
        pad_mode, (qt, ql, qb, qr) = c.pending_pad
        c.pending_pad = None
        if pad_mode == "constant":
            pt, pl, pb, pr = pt + qt, pl + ql, pb + qb, pr + qr
        elif any((pt, pl, pb, pr)):
            raise c.error("a non-zero Pad in front of a padded Conv (not supported)")
        else:
            mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[pad_mode]
            pt, pl, pb, pr = qt, ql, qb, qr
            # the layer pads its input itself: the shape before the Pad is the input's
            c.shape = (*c.shape[:2], c.shape[2] - qt - qb, c.shape[3] - ql - qr)
    if (pt, pl) == (pb, pr):
        padding: Any = (pt, pl)
    elif stride == [1, 1] and conv2d_padding(
        "Conv", "same", tuple(kernel), (1, 1), tuple(dilation)
    ) == (
        (pt, pb),
        (pl, pr),
    ):
        padding = "same"
    else:
        raise c.error(f"asymmetric pads {[pt, pl, pb, pr]} (not supported)")
    c_in = w.shape[1] * group
    if c.shape[1] != c_in:
        raise c.error(f"the weight expects {c_in} input channels, the input has {c.shape[1]}")
    layer = c.layer(
        nn.Conv2d,
        c_in,
        w.shape[0],
        tuple(kernel),
        stride=tuple(stride),
        padding=padding,
        dilation=tuple(dilation),
        groups=group,
        bias=b is not None,
        padding_mode=mode,
        dtype=c.dtype,
    )
    c.load_into(layer.weight.data, w, "the weight")
    if b is not None:
        c.load_into(layer.bias.data, b, "the bias")
    c.emit(layer)


def _pad(c: _Chain) -> None:
    c.take()
    _rank(c, (4,))
    a = c.attrs()
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise c.error(f"unknown mode {mode!r}")
    pads = a.get("pads") if c.opset < 11 else c.const(1, "pads")
    if pads is None:
        raise c.error("the pads are missing")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    value = a.get("value", 0.0) if c.opset < 11 else c.const(2, "constant_value", False)
    if mode == "constant" and value is not None and np.any(np.asarray(value) != 0):
        raise c.error("constant padding with a non-zero value (not supported)")
    axes = c.const(3, "axes", required=False)
    if axes is not None:  # opset 18: pads for the listed axes only
        full = [0] * 8
        for i, ax in enumerate(int(v) % 4 for v in np.asarray(axes).ravel()):
            full[ax], full[ax + 4] = pads[i], pads[i + len(axes)]
        pads = full
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise c.error(f"only non-negative padding of H and W is supported. Received: {pads}")
    c.pending_pad = (mode, (pads[2], pads[3], pads[6], pads[7]))
    c.skip()
    n, ch, h, w = c.shape
    c.shape = (n, ch, h + pads[2] + pads[6], w + pads[3] + pads[7])


def _gemm(c: _Chain) -> None:
    c.take()
    _rank(c, (2,))
    a = c.attrs()
    if a.get("transA", 0):
        raise c.error("transA=1 (not supported)")
    w = c.const(1, "B")
    bias = c.const(2, "C", required=False)
    if w.ndim != 2:
        raise c.error(f"B must be 2-D, got shape {w.shape}")
    w = w if a.get("transB", 0) else w.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    out_f, in_f = w.shape
    if c.shape[1] != in_f:
        raise c.error(f"B expects {in_f} input features, the input has {c.shape[1]}")
    layer = c.layer(nn.Linear, in_f, out_f, bias=bias is not None, dtype=c.dtype)
    c.load_into(layer.weight.data, w * alpha if alpha != 1.0 else w, "B")
    if bias is not None:
        if bias.size not in (1, out_f) or bias.ndim > 2:
            raise c.error(f"C of shape {bias.shape} is not a bias of {out_f} features")
        bias = np.broadcast_to(bias.reshape(-1), (out_f,))
        c.load_into(layer.bias.data, bias * beta if beta != 1.0 else bias, "C")
    c.emit(layer)


def _matmul(c: _Chain) -> None:
    c.take(0)
    w = c.const(1, "second operand")
    if w.ndim != 2:
        raise c.error(f"the constant operand must be 2-D, got shape {w.shape}")
    in_f, out_f = w.shape
    if c.shape[-1] != in_f:
        raise c.error(f"the operand expects {in_f} features, the input has {c.shape[-1]}")
    layer = c.layer(nn.Linear, in_f, out_f, bias=False, dtype=c.dtype)
    c.load_into(layer.weight.data, w.T, "the operand")
    c.emit(layer)
    c.matmul_output = c.current


def _add(c: _Chain) -> None:
    inputs = list(c.node.input)
    if len(inputs) != 2:
        raise c.error(f"expects 2 inputs, got {len(inputs)}")
    index = 0 if inputs[0] == c.current else 1
    const_name = inputs[1 - index]
    if const_name not in c.constants:
        raise c.error(
            f"it adds two tensors ({inputs[0]!r}, {inputs[1]!r}): a residual connection, "
            f"which needs a graph model"
        )
    c.take(index)
    prev = c.layers[-1] if c.layers else None
    bias = c.constants[const_name]
    if c.matmul_output != c.current or not isinstance(prev, nn.Linear):
        raise c.error("adding a constant is supported only as the bias of a MatMul")
    out_f = prev.out_features
    if bias.size != out_f or bias.shape[-1] != out_f:
        raise c.error(f"the constant of shape {bias.shape} is not a bias of {out_f} features")
    layer = c.layer(nn.Linear, prev.in_features, out_f, bias=True, dtype=c.dtype)
    layer.weight.data[...] = prev.weight.data
    c.load_into(layer.bias.data, bias.reshape(-1), "the bias")
    c.layers.pop()
    c.emit(layer, shape=c.shape)


def _batch_norm(c: _Chain) -> None:
    c.take()
    _rank(c, (2, 3, 4))
    a = c.attrs()
    if a.get("training_mode", 0):
        raise c.error("training_mode=1 (only inference graphs are imported)")
    scale, bias = c.const(1, "scale"), c.const(2, "B")
    mean, var = c.const(3, "input_mean"), c.const(4, "input_var")
    eps = float_attr(a.get("epsilon", 1e-5))
    momentum = round(1.0 - float_attr(a.get("momentum", 0.9)), 12)
    cls = nn.BatchNorm2d if len(c.shape) == 4 else nn.BatchNorm1d
    layer = c.layer(cls, c.shape[1], eps=eps, momentum=momentum, dtype=c.dtype)
    c.load_into(layer.weight.data, scale, "scale")
    c.load_into(layer.bias.data, bias, "B")
    c.load_into(layer._buffers["running_mean"], mean, "input_mean")
    c.load_into(layer._buffers["running_var"], var, "input_var")
    c.emit(layer)


def _pool_args(c: _Chain, a: dict[str, Any]) -> tuple[list[int], list[int], Any, list[int]]:
    kernel = _ints(a.get("kernel_shape"), 2, 1, c, "kernel_shape (2-D pooling)")
    if "kernel_shape" not in a:
        raise c.error("kernel_shape is missing")
    stride = _ints(a.get("strides"), 2, 1, c, "strides")
    dilation = _ints(a.get("dilations"), 2, 1, c, "dilations")
    pt, pl, pb, pr = _spatial_pads(c, a, kernel, stride, dilation)
    if (pt, pl) != (pb, pr):
        raise c.error(f"asymmetric pads {[pt, pl, pb, pr]} (not supported)")
    return kernel, stride, (pt, pl), dilation


def _max_pool(c: _Chain) -> None:
    c.take()
    _rank(c, (4,))
    a = c.attrs()
    kernel, stride, padding, dilation = _pool_args(c, a)
    ceil = bool(a.get("ceil_mode", 0))
    c.emit(c.layer(nn.MaxPool2d, tuple(kernel), tuple(stride), padding, tuple(dilation), ceil))


def _average_pool(c: _Chain) -> None:
    c.take()
    _rank(c, (4,))
    a = c.attrs()
    kernel, stride, padding, dilation = _pool_args(c, a)
    if dilation != [1, 1]:
        raise c.error(f"dilations {dilation} (not supported)")
    layer = c.layer(
        nn.AvgPool2d,
        tuple(kernel),
        tuple(stride),
        padding,
        ceil_mode=bool(a.get("ceil_mode", 0)),
        count_include_pad=bool(a.get("count_include_pad", 0)),
    )
    c.emit(layer)


def _global_average_pool(c: _Chain) -> None:
    c.take()
    _rank(c, (4,))
    c.emit(nn.GlobalAvgPool2d())


def _flatten_match(c: _Chain, target: list[int]) -> tuple[int, int]:
    """The (start_dim, end_dim) of the cnncore Flatten that reshapes the current value to
    ``target`` (``0`` copies a dim, ``-1`` infers one) for every possible batch size."""
    nd = len(c.shape)
    found = None
    for s in range(nd):
        for e in range(s, nd):
            ok = True
            for n in c.batches:
                shape = (n, *c.shape[1:])
                resolved = _resolve_reshape(shape, target)
                want = [*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :]]
                ok = ok and resolved == want
            if ok:
                found = found or (s, e)
    if found is None:
        raise c.error(
            f"reshaping {c._shape_text()} to {target} is not a flatten of consecutive "
            f"dimensions (not supported)"
        )
    return found


def _resolve_reshape(shape: tuple[int, ...], target: list[int]) -> list[int] | None:
    out = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(target)]
    if out.count(-1) > 1 or any(t < -1 for t in out):
        return None
    if -1 in out:
        known = math.prod(t for t in out if t != -1)
        total = math.prod(shape)
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if math.prod(out) == math.prod(shape) else None


def _reshape(c: _Chain) -> None:
    c.take()
    a = c.attrs()
    target = [int(t) for t in np.asarray(c.const(1, "shape")).ravel()]
    if a.get("allowzero", 0) and 0 in target:
        raise c.error("allowzero=1 with a 0 in the shape (not supported)")
    start, end = _flatten_match(c, target)
    c.emit(nn.Flatten(start, -1 if end == len(c.shape) - 1 else end))


def _flatten(c: _Chain) -> None:
    c.take()
    a = c.attrs()
    nd = len(c.shape)
    axis = int(a.get("axis", 1))
    axis = axis + nd if axis < 0 else axis
    if axis == 1:
        c.emit(nn.Flatten())
        return
    # (prod(d[:axis]), prod(d[axis:])): two flattens, if both ranges are non-empty
    if not 1 < axis < nd:
        raise c.error(f"axis={a.get('axis')} on a {nd}-D input (not supported)")
    first = nn.Flatten(axis, -1)
    c.layers.append(first)
    c.shape = first.output_shape(c.shape)
    c.emit(nn.Flatten(0, axis - 1))


def _dropout(c: _Chain) -> None:
    c.take()
    a = c.attrs()
    if c.opset >= 12:
        ratio = c.const(1, "ratio", required=False)
        training = c.const(2, "training_mode", required=False)
        if training is not None and bool(np.asarray(training).ravel()[0]):
            raise c.error("training_mode=True (only inference graphs are imported)")
    else:
        ratio = a.get("ratio")
    p = 0.5 if ratio is None else float_attr(float(np.asarray(ratio).ravel()[0]))
    c.emit(c.layer(nn.Dropout, p))


def _identity(c: _Chain) -> None:
    c.take()
    c.skip()


def _softmax(cls: type) -> Callable[[_Chain], None]:
    def convert(c: _Chain) -> None:
        c.take()
        nd = len(c.shape)
        axis = int(c.attrs().get("axis", -1 if c.opset >= 13 else 1))
        # before opset 13 the op normalizes over all dims from axis on
        if c.opset < 13 and axis % nd != nd - 1:
            raise c.error(f"axis={axis} before opset 13 normalizes several dims (not supported)")
        c.emit(c.layer(cls, axis))

    return convert


def _simple(make: Callable[[dict[str, Any]], nn.Module]) -> Callable[[_Chain], None]:
    def convert(c: _Chain) -> None:
        c.take()
        c.emit(c.layer(make, c.attrs()))

    return convert


IMPORTERS: dict[str, Callable[[_Chain], None]] = {
    "Conv": _conv,
    "Pad": _pad,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "BatchNormalization": _batch_norm,
    "Relu": _simple(lambda a: nn.ReLU()),
    "LeakyRelu": _simple(lambda a: nn.LeakyReLU(float_attr(a.get("alpha", 0.01)))),
    "Sigmoid": _simple(lambda a: nn.Sigmoid()),
    "Tanh": _simple(lambda a: nn.Tanh()),
    "Softmax": _softmax(nn.Softmax),
    "LogSoftmax": _softmax(nn.LogSoftmax),
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Dropout": _dropout,
    "Identity": _identity,
}
"""ONNX op type -> converter (``Constant`` nodes are read as constants before these run)."""


# --------------------------------------------------------------------------------------------
# Constant folding: shape arithmetic exporters leave in the graph (torch's legacy exporter
# computes a reflect Pad's pads, or a Flatten's target shape, with such nodes)
# --------------------------------------------------------------------------------------------

#: The most elements a folded constant may have (folding never allocates more).
MAX_FOLDED_ELEMENTS = 1 << 20


def _fold_numel(c: _Chain, shape: Any) -> tuple[int, ...]:
    shape = tuple(int(d) for d in np.asarray(shape).ravel())
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED_ELEMENTS:
        raise c.error(f"a constant of shape {shape} (more than {MAX_FOLDED_ELEMENTS} elements)")
    return shape


def _axes(c: _Chain, a: _Attrs, index: int) -> list[int]:
    axes = a.get("axes") if c.opset < 13 else c.const(index, "axes", required=False)
    return [] if axes is None else [int(v) for v in np.asarray(axes).ravel()]


def _fold_shape(c: _Chain, a: _Attrs, x: Any) -> np.ndarray:
    if x is None:  # Shape of the chain's value: known when the batch is static
        if len(c.batches) != 1:
            raise c.error(
                "Shape of a tensor with a dynamic batch size (not supported: export with a "
                "static batch, or flatten with torch.nn.Flatten / torch.flatten(x, 1))"
            )
        shape = np.array(c.shape, np.int64)
    else:
        shape = np.array(np.shape(x), np.int64)
    nd = len(shape)
    start, end = int(a.get("start", 0)), a.get("end")
    return shape[start : nd if end is None else int(end)]


def _fold_slice(c: _Chain, a: _Attrs, x: Any, *args: Any) -> np.ndarray:
    if c.opset < 10:  # starts, ends, axes as attributes
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    else:  # as inputs: data, starts, ends[, axes[, steps]]
        starts, ends, axes, steps = (*args, None, None)[:4]
    starts, ends = np.ravel(starts), np.ravel(ends)
    axes = range(len(starts)) if axes is None else np.ravel(axes)
    steps = [1] * len(starts) if steps is None else np.ravel(steps)
    index = [slice(None)] * np.ndim(x)
    for ax, b, e, st in zip(axes, starts, ends, steps, strict=True):
        if int(st) == 0:
            raise c.error("Slice with a step of 0")
        index[int(ax)] = slice(int(b), int(e), int(st))
    return np.asarray(x)[tuple(index)]


def _fold_gather(c: _Chain, a: _Attrs, x: Any, idx: Any) -> np.ndarray:
    x, idx = np.asarray(x), np.asarray(idx, dtype=np.int64)
    axis = int(a.get("axis", 0))
    _fold_numel(c, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]) if x.ndim else ())
    return np.take(x, idx, axis=axis)


def _fold_cast(c: _Chain, a: _Attrs, x: Any) -> np.ndarray:
    from ._proto import _dtype_table

    to = a.get("to")
    if to not in _dtype_table():
        raise c.error(f"Cast to data type {to} (not supported)")
    return np.asarray(x).astype(_dtype_table()[to][0])


def _fold_constant_of_shape(c: _Chain, a: _Attrs, shape: Any) -> np.ndarray:
    value = a.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).ravel()[:1]
    return np.full(_fold_numel(c, shape), value[0] if value.size else 0, dtype=value.dtype)


def _fold_reshape(c: _Chain, a: _Attrs, x: Any, shape: Any) -> np.ndarray:
    target = [int(t) for t in np.ravel(shape)]
    resolved = _resolve_reshape(np.shape(x), target)
    if resolved is None:
        raise c.error(f"cannot reshape a constant of shape {np.shape(x)} to {target}")
    return np.reshape(x, resolved)


def _fold_unsqueeze(c: _Chain, a: _Attrs, x: Any, *rest: Any) -> np.ndarray:
    x = np.asarray(x)
    axes = sorted(int(v) % (x.ndim + len(_axes(c, a, 1))) for v in _axes(c, a, 1))
    for ax in axes:
        x = np.expand_dims(x, ax)
    return x


def _fold_squeeze(c: _Chain, a: _Attrs, x: Any, *rest: Any) -> np.ndarray:
    x = np.asarray(x)
    axes = _axes(c, a, 1)
    return np.squeeze(x, axis=tuple(v % x.ndim for v in axes) if axes else None)


FOLDERS: dict[str, Callable[..., np.ndarray]] = {
    "Shape": _fold_shape,
    "Slice": _fold_slice,
    "Gather": _fold_gather,
    "Cast": _fold_cast,
    "ConstantOfShape": _fold_constant_of_shape,
    "Reshape": _fold_reshape,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": lambda c, a, *xs: np.concatenate([np.atleast_1d(x) for x in xs], int(a.get("axis"))),
    "Transpose": lambda c, a, x: np.transpose(x, a.get("perm")),
    "Identity": lambda c, a, x: np.asarray(x),
}
"""Op type -> ``fn(chain, attrs, *input_arrays)`` evaluating a node whose inputs are all
constants (``Shape`` also of the chain's value when the batch size is static)."""


def _fold(c: _Chain) -> bool:
    """Evaluate the current node with NumPy if it is foldable; True if it was."""
    node = c.node
    fn = FOLDERS.get(node.op_type)
    if fn is None:
        return False
    names = list(node.input)
    shape_of_chain = node.op_type == "Shape" and names[:1] == [c.current]
    if not shape_of_chain and not all(n in c.constants for n in names if n):
        return False
    args = [None if shape_of_chain or not n else c.constants[n] for n in names]
    try:
        value = fn(c, c.attrs(), *args)
    except (ValueError, TypeError, IndexError, np.exceptions.AxisError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("cnncore.onnx"):
            raise
        raise c.error(f"cannot evaluate it on its constant inputs ({exc})") from None
    if len(node.output) != 1 or not node.output[0]:
        raise c.error("a folded node must have one output")
    c.constants[node.output[0]] = np.asarray(value)
    return True


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


def _bad(where: str, why: str) -> ValueError:
    return ValueError(f"cnncore.onnx.load(): {where} is not a model cnncore can import: {why}")


def _constant_node(node: Any, where: str) -> np.ndarray:
    onnx = require_onnx()
    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        return tensor_to_array(attrs["value"].t, where)
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(onnx.helper.get_attribute_value(attrs[key]), dtype=dtype)
    raise _bad(where, f"Constant node {node.name!r} has no supported value attribute")


def from_model_proto(proto: Any, where: str = "<ModelProto>") -> nn.Sequential:
    """The :class:`~cnncore.nn.Sequential` of an ONNX ``ModelProto`` (see :func:`load`)."""
    onnx = require_onnx()
    if not isinstance(proto, onnx.ModelProto):
        raise TypeError(f"from_model_proto(): expected an onnx.ModelProto, got {type(proto)}")
    graph = proto.graph
    opset = None
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = int(imp.version)
    if opset is None:
        raise _bad(where, "no ai.onnx opset is imported")
    unsupported = sorted(
        {
            str(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
            for n in graph.node
            if n.domain not in ("", "ai.onnx")
            or n.op_type not in (*IMPORTERS, *FOLDERS, "Constant")
        }
    )
    if unsupported:
        raise _bad(
            where,
            f"unsupported operators {unsupported} (cnncore imports {sorted(IMPORTERS)} in "
            f"chain graphs, and evaluates {sorted(FOLDERS)} and Constant on constants)",
        )
    constants = {t.name: tensor_to_array(t, where) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise _bad(
            where,
            f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs; cnncore "
            f"imports models with one of each",
        )
    x = inputs[0]
    tensor_type = x.type.tensor_type
    dtype = _FLOAT_TYPES.get(tensor_type.elem_type)
    if dtype is None:
        raise _bad(where, f"the input {x.name!r} is not float32 or float64")
    dims = list(tensor_type.shape.dim)
    if len(dims) < 2 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        raise _bad(
            where,
            f"the input {x.name!r} must have a static shape beyond the batch dimension, "
            f"e.g. (N, 1, 28, 28)",
        )
    static_batch = dims[0].dim_value if dims[0].HasField("dim_value") else 0
    batches = (static_batch,) if static_batch > 0 else (2, 3)
    shape = (batches[0], *(d.dim_value for d in dims[1:]))
    uses: dict[str, int] = {}
    for n in graph.node:
        if n.op_type == "Shape":  # reads only the shape, which is known: no branch
            continue
        for name in n.input:
            if name:
                uses[name] = uses.get(name, 0) + 1
    out_names = {o.name for o in graph.output}
    chain = _Chain(where, opset, dtype, x.name, shape, batches, constants, uses, out_names)
    for node in graph.node:
        chain.node = node
        if node.op_type == "Constant":
            if len(node.output) != 1:
                raise chain.error("a Constant must have one output")
            constants[node.output[0]] = _constant_node(node, where)
            continue
        if _fold(chain):
            continue
        if node.op_type not in IMPORTERS:
            raise chain.error("supported only on constant inputs")
        IMPORTERS[node.op_type](chain)
    if chain.pending_pad is not None:
        raise _bad(where, "the graph ends with a Pad")
    if chain.current != graph.output[0].name:
        raise _bad(
            where,
            f"the output {graph.output[0].name!r} is not the end of the chain ({chain.current!r})",
        )
    if not chain.layers:
        raise _bad(where, "the graph has no layers")
    model = nn.Sequential(*chain.layers)
    model.dtype = dtype
    # the graph's input shape (batch 1): what summary() shows and `cnncore predict` feeds
    model._input_shape = model.onnx_input_shape = (1, *shape[1:])
    return model.eval()


def load(path: Any) -> nn.Sequential:
    """Import the ONNX model at ``path`` as a :class:`~cnncore.nn.Sequential` in eval mode.

    The graph must be a chain of the operators in :data:`IMPORTERS` (Conv with a constant
    weight, Gemm or MatMul (+ Add), BatchNormalization, Relu, LeakyRelu, Sigmoid, Tanh,
    Softmax, LogSoftmax, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape (to a
    flatten), Pad (folded into the next Conv), Dropout, Identity, Constant) with one float32
    or float64 input whose dimensions beyond the batch are static -- what
    ``torch.onnx.export`` writes for an ``nn.Sequential`` CNN, and everything
    :func:`cnncore.onnx.export` writes for a Sequential without the special-cased layers
    (see its Notes).  Weights are copied; ``num_batches_tracked`` (not in ONNX) is 0.  The
    model's ``onnx_input_shape`` is the graph's input shape with batch 1.

    Raises
    ------
    ValueError
        Naming the file: a file that is not an ONNX model (truncated, corrupted, crafted),
        external tensor data, unsupported operators (all of them listed in one message),
        branching graphs, or attributes cnncore's layers cannot express (naming the node).
    FileNotFoundError
        If ``path`` does not exist.
    ImportError
        If the onnx package is not installed.
    """
    onnx = require_onnx()
    where = os.fspath(path)
    if not os.path.exists(where):
        raise FileNotFoundError(f"cnncore.onnx.load(): no such file: {where}")
    with open(where, "rb") as f:
        data = f.read()
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"cnncore.onnx.load(): {where} is not a valid ONNX model file "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if not proto.HasField("graph"):
        raise _bad(where, "no graph (not an ONNX model file?)")
    return from_model_proto(proto, where)
