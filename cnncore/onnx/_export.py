"""Export cnncore models to ONNX with the ``onnx`` package's helpers (no torch).

**How a module is exported.** :func:`export` walks the model through
:meth:`ExportContext.export`, which looks for, in order,

1. a method ``_onnx_export(self, ctx, inputs) -> list[str]`` on the module's class (what a
   user-defined or third-party layer defines next to its ``forward``);
2. an entry of :data:`EXPORTERS`, keyed by the class's registry name
   (``"Conv2d"``, ``"Sequential"``, ...): ``fn(ctx, module, inputs) -> list[str]``.

Either receives the names of its input values (one per input: a layer of a chain has one; a
merge layer such as Add or Concatenate several) and returns the names of its outputs,
adding nodes with :meth:`ExportContext.node` and weights with :meth:`ExportContext.constant`.
Shapes are tracked with a concrete batch size: :meth:`ExportContext.shape` gives an input's
shape; the context records the output's from ``module.output_shape`` for one-input modules,
a multi-input exporter calls :meth:`ExportContext.set_shape` itself.  A container exports
its children with ``ctx.export(child, names)`` -- :class:`~cnncore.nn.Sequential` chains
them; a graph model walks its nodes the same way.  A new built-in layer adds one function
to :data:`EXPORTERS` (and its inverse to ``_import.IMPORTERS`` if it can be imported).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import functional as F
from .._geometry import adaptive_windows
from ..nn.module import Module, registered_name
from ._proto import require_onnx

__all__ = ["export", "to_model_proto", "ExportContext", "EXPORTERS", "MIN_OPSET"]

#: Softmax/LogSoftmax over one axis (torch's semantics) need opset 13.
MIN_OPSET = 13

Exporter = Callable[["ExportContext", Module, list[str]], list[str]]


class ExportContext:
    """The graph being built: nodes, initializers, value shapes; passed to every exporter.

    Attributes
    ----------
    opset : int
        The target ai.onnx opset.
    dtype : numpy dtype
        The model's float dtype (the graph's tensor type).
    """

    def __init__(self, opset: int, dtype: np.dtype) -> None:
        self.onnx = require_onnx()
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._names: set[str] = set()
        self._counts: dict[str, int] = {}

    # -- names and shapes ----------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value/node name not used yet, built from ``hint``."""
        n = self._counts.get(hint, 0)
        name = hint if n == 0 else f"{hint}_{n}"
        while name in self._names:
            n += 1
            name = f"{hint}_{n}"
        self._counts[hint] = n + 1
        self._names.add(name)
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of value ``name`` (with the batch size of ``input_shape``)."""
        return self._shapes[name]

    def set_shape(self, name: str, shape: Sequence[int]) -> None:
        self._shapes[name] = tuple(int(s) for s in shape)

    # -- building ------------------------------------------------------------------------
    def constant(self, array: Any, hint: str, dtype: Any = None) -> str:
        """Add ``array`` as an initializer (in the model's dtype unless ``dtype`` is given);
        return its name."""
        arr = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        self.set_shape(name, arr.shape)
        return name

    def node(self, op_type: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        """Add one node with one output; return the output's name.  ``None`` attributes are
        left out."""
        out = self.fresh(hint)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attrs)
        )
        return out

    def export(self, module: Module, inputs: list[str], hint: str = "") -> list[str]:
        """Export ``module`` applied to ``inputs``: its ``_onnx_export`` method or its entry
        of :data:`EXPORTERS`.  Records the output shape of a one-input module."""
        fn = getattr(type(module), "_onnx_export", None)
        if fn is not None:
            outputs = fn(module, self, inputs)
        else:
            name = registered_name(type(module)) or ""
            exporter = EXPORTERS.get(name)
            if exporter is None:
                raise ValueError(
                    f"cnncore.onnx.export(): no ONNX exporter for {type(module).__name__} "
                    f"(add an _onnx_export method to the class, or an entry to "
                    f"cnncore.onnx.EXPORTERS)"
                )
            outputs = exporter(self, module, inputs)
        if len(inputs) == 1:
            for out in outputs:
                if out not in self._shapes:
                    self.set_shape(out, module.output_shape(self.shape(inputs[0])))
        return outputs


# --------------------------------------------------------------------------------------------
# The exporters of cnncore's layers
# --------------------------------------------------------------------------------------------


def _conv2d(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    (pt, pb), (pl, pr) = m._pads
    x = inputs[0]
    pads = [pt, pl, pb, pr]
    if m.padding_mode != "zeros" and any(pads):
        mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[m.padding_mode]
        if mode == "wrap" and ctx.opset < 19:
            raise ValueError(
                f"cnncore.onnx.export(): Conv2d(padding_mode='circular') needs opset >= 19 "
                f"(Pad mode 'wrap'). Received: opset={ctx.opset}"
            )
        n, c, h, w = ctx.shape(x)
        p = ctx.constant([0, 0, pt, pl, 0, 0, pb, pr], "pads", np.int64)
        x = ctx.node("Pad", [x, p], "pad", mode=mode)
        ctx.set_shape(x, (n, c, h + pt + pb, w + pl + pr))
        pads = [0, 0, 0, 0]
    args = [x, ctx.constant(m.weight.data, "conv.weight")]
    if m.bias is not None:
        args.append(ctx.constant(m.bias.data, "conv.bias"))
    y = ctx.node(
        "Conv",
        args,
        "conv",
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=pads,
        dilations=list(m.dilation),
        group=m.groups,
    )
    return [y]


def _linear(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    if len(ctx.shape(x)) == 2:
        args = [x, ctx.constant(m.weight.data, "linear.weight")]
        if m.bias is not None:
            args.append(ctx.constant(m.bias.data, "linear.bias"))
        return [ctx.node("Gemm", args, "gemm", transB=1)]
    y = ctx.node("MatMul", [x, ctx.constant(m.weight.data.T, "linear.weight_t")], "matmul")
    if m.bias is not None:
        y = ctx.node("Add", [y, ctx.constant(m.bias.data, "linear.bias")], "add")
    return [y]


def _batch_norm(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    c = m.num_features
    scale = m.weight.data if m.affine else np.ones(c)
    bias = m.bias.data if m.affine else np.zeros(c)
    rank = len(ctx.shape(x))
    if m.track_running_stats:
        args = [
            x,
            ctx.constant(scale, "bn.weight"),
            ctx.constant(bias, "bn.bias"),
            ctx.constant(m._buffers["running_mean"], "bn.running_mean"),
            ctx.constant(m._buffers["running_var"], "bn.running_var"),
        ]
        momentum = 1.0 - (0.1 if m.momentum is None else m.momentum)
        return [ctx.node("BatchNormalization", args, "batchnorm", epsilon=m.eps, momentum=momentum)]
    # Without running statistics the layer normalizes with the batch's, in eval mode too.
    axes = [0, *range(2, rank)]
    view = [1, c] + [1] * (rank - 2)
    mean = _reduce_mean(ctx, x, axes)
    centered = ctx.node("Sub", [x, mean], "bn.centered")
    var = _reduce_mean(ctx, ctx.node("Mul", [centered, centered], "bn.sq"), axes)
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.constant(m.eps, "bn.eps")], "bn.v")], "std")
    y = ctx.node("Div", [centered, std], "bn.xhat")
    y = ctx.node("Mul", [y, ctx.constant(np.reshape(scale, view), "bn.weight")], "bn.scaled")
    return [ctx.node("Add", [y, ctx.constant(np.reshape(bias, view), "bn.bias")], "bn.out")]


def _reduce_mean(ctx: ExportContext, x: str, axes: list[int]) -> str:
    if ctx.opset >= 18:
        a = ctx.constant(axes, "axes", np.int64)
        return ctx.node("ReduceMean", [x, a], "mean", keepdims=1)
    return ctx.node("ReduceMean", [x], "mean", axes=axes, keepdims=1)


def _max_pool(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    ph, pw = m.padding
    y = ctx.node(
        "MaxPool",
        inputs,
        "maxpool",
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=[ph, pw, ph, pw],
        dilations=list(m.dilation),
        ceil_mode=int(m.ceil_mode),
    )
    return [y]


def _sum_pool_divided(
    ctx: ExportContext,
    x: str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    divisor: np.ndarray,
) -> str:
    """Average pooling with any divisor map: a depthwise all-ones convolution (window sums,
    zero padding, extended at the bottom/right for ceil-mode windows) divided by ``divisor``
    of shape ``(H_out, W_out)``."""
    n, c, h, w = ctx.shape(x)
    ho, wo = divisor.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    extra_h = max(0, (ho - 1) * sh + kh - (h + 2 * ph))
    extra_w = max(0, (wo - 1) * sw + kw - (w + 2 * pw))
    ones = ctx.constant(np.ones((c, 1, kh, kw)), "pool.ones")
    y = ctx.node(
        "Conv",
        [x, ones],
        "sumpool",
        kernel_shape=[kh, kw],
        strides=[sh, sw],
        pads=[ph, pw, ph + extra_h, pw + extra_w],
        group=c,
    )
    return ctx.node("Div", [y, ctx.constant(divisor, "pool.divisor")], "avgpool")


def _avg_pool(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    ph, pw = m.padding
    if not m.ceil_mode and m.divisor_override is None:
        y = ctx.node(
            "AveragePool",
            [x],
            "avgpool",
            kernel_shape=list(m.kernel_size),
            strides=list(m.stride),
            pads=[ph, pw, ph, pw],
            count_include_pad=int(m.count_include_pad),
        )
        return [y]
    # ceil_mode windows and divisor_override: ONNX's AveragePool has neither PyTorch rule.
    # The divisor of each window: (window sum of ones) / (average of ones), both computed by
    # cnncore's own avg_pool2d, so the graph divides exactly as the layer does.
    _, _, h, w = ctx.shape(x)
    ones = np.ones((1, 1, h, w))
    kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding)
    kw.update(ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)
    sums = F.avg_pool2d(ones, **kw, divisor_override=1)
    means = F.avg_pool2d(ones, **kw, divisor_override=m.divisor_override)
    divisor = np.round(sums / means)[0, 0]
    return [_sum_pool_divided(ctx, x, m.kernel_size, m.stride, m.padding, divisor)]


def _adaptive_avg_pool(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    _, _, h, w = ctx.shape(x)
    oh, ow = m.output_size
    if (oh, ow) == (1, 1):
        return [ctx.node("GlobalAveragePool", [x], "gap")]
    if h % oh == 0 and w % ow == 0:  # equal windows: a plain average pooling
        k = [h // oh, w // ow]
        return [ctx.node("AveragePool", [x], "avgpool", kernel_shape=k, strides=k)]
    # uneven windows: y = A_h @ x @ A_w^T with the row/column averaging matrices
    a_h, a_w = _averaging_matrix(h, oh), _averaging_matrix(w, ow)
    y = ctx.node("MatMul", [x, ctx.constant(a_w.T, "pool.cols")], "pool_w")
    return [ctx.node("MatMul", [ctx.constant(a_h, "pool.rows"), y], "pool_h")]


def _averaging_matrix(size: int, n_out: int) -> np.ndarray:
    a = np.zeros((n_out, size))
    for i, (start, stop) in enumerate(adaptive_windows(size, n_out)):
        a[i, start:stop] = 1.0 / (stop - start)
    return a


def _flatten(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    shape = ctx.shape(x)
    out = m.output_shape(shape)
    nd = len(shape)
    start = m.start_dim + nd if m.start_dim < 0 else m.start_dim
    end = m.end_dim + nd if m.end_dim < 0 else m.end_dim
    if start == 1 and end == nd - 1:
        return [ctx.node("Flatten", [x], "flatten", axis=1)]
    # the batch (dim 0) is copied (0) unless it is flattened (-1 then infers it)
    target = [0, *out[1:]] if start > 0 else [-1, *out[1:]]
    return [ctx.node("Reshape", [x, ctx.constant(target, "shape", np.int64)], "reshape")]


def _dropout(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    if m.p >= 1.0:  # ONNX's ratio is in [0, 1); in inference both are the identity
        return [ctx.node("Identity", inputs, "dropout")]
    ratio = ctx.constant(np.asarray(m.p), "dropout.ratio")
    return [ctx.node("Dropout", [inputs[0], ratio], "dropout")]


def _unary(op: str, **attrs: Callable[[Any], Any]) -> Exporter:
    def export_op(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
        values = {k: f(m) for k, f in attrs.items()}
        return [ctx.node(op, inputs, op.lower(), **values)]

    return export_op


def _sequential(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    names = inputs
    for layer in m.children():
        names = ctx.export(layer, names)
    return names


EXPORTERS: dict[str, Exporter] = {
    "Conv2d": _conv2d,
    "Linear": _linear,
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "SyncBatchNorm": _batch_norm,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": _adaptive_avg_pool,
    "GlobalAvgPool2d": _unary("GlobalAveragePool"),
    "Flatten": _flatten,
    "Dropout": _dropout,
    "ReLU": _unary("Relu"),
    "LeakyReLU": _unary("LeakyRelu", alpha=lambda m: m.negative_slope),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "Softmax": _unary("Softmax", axis=lambda m: m.dim),
    "LogSoftmax": _unary("LogSoftmax", axis=lambda m: m.dim),
    "Sequential": _sequential,
}
"""Registry name -> ``fn(ctx, module, inputs) -> outputs`` (see the module docstring)."""


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _check_args(model: Any, input_shape: Any, opset: Any) -> tuple[tuple[int, ...], int]:
    onnx = require_onnx()
    if not isinstance(model, Module):
        raise TypeError(
            f"cnncore.onnx.export(): model must be a cnncore.nn.Module. Received: "
            f"{type(model).__name__}"
        )
    try:
        shape = tuple(int(s) for s in input_shape)
        ok = all(isinstance(s, (int, np.integer)) and s >= 1 for s in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or not shape:
        raise ValueError(
            f"cnncore.onnx.export(): input_shape must be a tuple of positive ints such as "
            f"(1, 1, 28, 28). Received: input_shape={input_shape!r}"
        )
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"cnncore.onnx.export(): opset must be an int in [{MIN_OPSET}, {newest}] (the "
            f"installed onnx package's newest). Received: opset={opset!r}"
        )
    return shape, opset


def to_model_proto(
    model: Module,
    input_shape: Sequence[int] = (1, 1, 28, 28),
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (what :func:`export` writes); see there."""
    onnx = require_onnx()
    shape, opset = _check_args(model, input_shape, opset)
    if not isinstance(dynamic_batch, bool):
        raise TypeError(
            f"cnncore.onnx.export(): dynamic_batch must be a bool. Received: {dynamic_batch!r}"
        )
    dtype = model.dtype
    ctx = ExportContext(opset, dtype)
    x = ctx.fresh("input")
    ctx.set_shape(x, shape)
    # One eval-mode forward on zeros (batch 1) checks that the model accepts the shape.
    was_training = model.training
    try:
        model.eval()
        model(np.zeros((1, *shape[1:]), dtype))
        model.output_shape(shape)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(
            f"cnncore.onnx.export(): the model does not accept input_shape={shape} ({exc})"
        ) from None
    finally:
        model.train(was_training)
    outputs = ctx.export(model, [x])
    if len(outputs) != 1:
        raise ValueError(f"cnncore.onnx.export(): the model has {len(outputs)} outputs, not 1")
    y = outputs[0]
    out_shape = ctx.shape(y)
    if y == x or not any(y in n.output for n in ctx.nodes):
        y = ctx.node("Identity", [y], "output")
    else:  # name the last node's output "output"
        node = next(n for n in ctx.nodes if y in n.output)
        node.output[list(node.output).index(y)] = "output"
        y = "output"
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)

    def dims(s: tuple[int, ...]) -> list[Any]:
        return ["batch", *s[1:]] if dynamic_batch else list(s)

    graph = onnx.helper.make_graph(
        ctx.nodes,
        "cnncore",
        [onnx.helper.make_tensor_value_info(x, elem, dims(shape))],
        [onnx.helper.make_tensor_value_info(y, elem, dims(out_shape))],
        initializer=ctx.initializers,
    )
    from .. import __version__

    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="cnncore",
        producer_version=__version__,
    )
    # The IR version the opset needs, not the newest (runtimes lag behind the onnx package).
    proto.ir_version = _ir_version(onnx, opset)
    onnx.checker.check_model(proto)
    return proto


def _ir_version(onnx: Any, opset: int) -> int:
    """The oldest IR version that knows ``opset`` (onnx.helper.VERSION_TABLE rows are
    (release, IR version, ai.onnx opset, ...), oldest first)."""
    for row in onnx.helper.VERSION_TABLE:
        if row[2] >= opset:
            return int(row[1])
    return int(onnx.IR_VERSION)


def export(
    model: Module,
    path: Any,
    input_shape: Sequence[int] = (1, 1, 28, 28),
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
) -> None:
    """Write ``model`` to ``path`` as an ONNX model (inference graph, eval-mode semantics).

    Parameters
    ----------
    model : Module
        A :class:`~cnncore.nn.Sequential` (or any module with an exporter, see
        :data:`EXPORTERS`).
    path : str or path-like
    input_shape : tuple of int, default (1, 1, 28, 28)
        The input's shape, batch included; every dimension but the batch is fixed in the
        graph.
    dynamic_batch : bool, default True
        Name the batch dimension ``"batch"`` (any size) instead of fixing it.
    opset : int, default 17
        The ai.onnx opset, from 13 to the installed onnx package's newest.  Circular
        padding needs 19.

    Notes
    -----
    Layers map to their ONNX operators (Conv, Gemm or MatMul + Add, BatchNormalization,
    MaxPool, AveragePool, GlobalAveragePool, Flatten or Reshape, Relu, LeakyRelu, Sigmoid,
    Tanh, Softmax, LogSoftmax, Dropout).  Where ONNX has no operator with PyTorch's
    semantics the layer becomes a small exact subgraph: Conv2d's non-zero padding modes a
    Pad in front; AvgPool2d with ``ceil_mode`` or ``divisor_override`` a depthwise all-ones
    Conv divided by the divisor map; AdaptiveAvgPool2d with uneven windows two MatMuls with
    averaging matrices; BatchNorm without running statistics the batch-statistics formula.
    The model's dtype (float32 or float64) is the graph's.  The graph passes
    ``onnx.checker.check_model``; uint8 inputs are not scaled by the graph (``predict`` scales
    them by 1/255): feed float images.

    Raises
    ------
    ValueError
        For a layer without an exporter, an ``input_shape`` the model does not accept, or an
        unsupported opset.
    ImportError
        If the onnx package is not installed (``pip install "cnncore[onnx]"``).
    """
    onnx = require_onnx()
    proto = to_model_proto(model, input_shape, dynamic_batch=dynamic_batch, opset=opset)
    onnx.save_model(proto, os.fspath(path))
