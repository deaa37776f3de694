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
shape; the context records the output's from ``module.output_shape`` (with the list of
input shapes for a merge layer) unless the exporter did with :meth:`ExportContext.set_shape`.
A container exports its children with ``ctx.export(child, names)`` --
:class:`~cnncore.nn.Sequential` chains them; a graph model (:class:`~cnncore.nn.Model`)
exports every layer call in run order on the values of its input nodes, so a layer called
twice is exported twice (its parameters become one initializer each: the context keeps one
initializer per parameter array) and a nested model is inlined.  The node computing a
layer's output is named after the layer (its helper nodes ``<layer>/<hint>``), which
:func:`cnncore.onnx.load` reads back as the layer's name.  A new built-in layer adds one
function to :data:`EXPORTERS` (and its inverse to ``_import.IMPORTERS`` if it can be
imported).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import functional as F
from .._geometry import adaptive_windows, interpolate_geometry
from ..nn.graph import Model
from ..nn.module import Module, registered_name
from ._proto import require_onnx
from ._resize import layer_matrices, spec_for

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
        self._node_names: set[str] = set()
        self._scope = ""  # the layer being exported: its nodes are named after it
        self._params: dict[Any, tuple[np.ndarray, str]] = {}  # (id(array), hint) -> name

    # -- names and shapes ----------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value name not used yet, built from ``hint``."""
        n = self._counts.get(hint, 0)
        name = hint if n == 0 else f"{hint}_{n}"
        while name in self._names:
            n += 1
            name = f"{hint}_{n}"
        self._counts[hint] = n + 1
        self._names.add(name)
        return name

    def node_name(self, hint: str) -> str:
        """A node name not used yet, built from ``hint``."""
        name, n = hint, 0
        while name in self._node_names:
            n += 1
            name = f"{hint}_{n}"
        self._node_names.add(name)
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of value ``name`` (with the batch size of ``input_shape``)."""
        return self._shapes[name]

    def set_shape(self, name: str, shape: Sequence[int]) -> None:
        self._shapes[name] = tuple(int(s) for s in shape)

    # -- building ------------------------------------------------------------------------
    def constant(self, array: Any, hint: str, dtype: Any = None, derived_from: Any = None) -> str:
        """Add ``array`` as an initializer (in the model's dtype unless ``dtype`` is given);
        return its name.  The same ndarray object passed again (the parameter of a layer
        called twice) gives the same initializer, as does an array ``derived_from`` the
        same parameter with the same ``hint`` (its transpose, say)."""
        arr = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        source = derived_from if derived_from is not None else (array if arr is array else None)
        key = (id(source), hint if derived_from is not None else None)
        if source is not None:
            known = self._params.get(key)
            if known is not None and known[0] is source:
                return known[1]
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        self.set_shape(name, arr.shape)
        if source is not None:  # kept alive in the table, so its id is not reused meanwhile
            self._params[key] = (source, name)
        return name

    def node(self, op_type: str, inputs: Sequence[str], hint: str, **attrs: Any) -> str:
        """Add one node with one output; return the output's name.  ``None`` attributes are
        left out.  Inside a layer's export the node is named ``<layer name>/<hint>`` (the
        one computing the layer's output is renamed to the layer's name afterwards)."""
        out = self.fresh(hint)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        name = self.node_name(f"{self._scope}/{hint}" if self._scope else out)
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [out], name=name, **attrs)
        )
        return out

    def export(
        self, module: Module, inputs: list[str], hint: str = "", multi: bool | None = None
    ) -> list[str]:
        """Export ``module`` applied to ``inputs``: its ``_onnx_export`` method or its entry
        of :data:`EXPORTERS`.  ``multi``: the module takes a list (a merge layer, a model
        with several inputs; default: when ``inputs`` has several names).  Records the
        output's shape with ``module.output_shape`` unless the exporter did, and names the
        node computing a layer's output after the layer."""
        multi = len(inputs) != 1 if multi is None else multi
        fn = getattr(type(module), "_onnx_export", None)
        leaf = not module.children()
        start, scope = len(self.nodes), self._scope
        if leaf:
            self._scope = module.name
        try:
            if fn is not None:
                outputs = fn(module, self, inputs)
            else:
                name = registered_name(type(module)) or ""
                exporter = EXPORTERS.get(name)
                if exporter is None:
                    raise ValueError(
                        f"cnncore.onnx.export(): no ONNX exporter for "
                        f"{type(module).__name__} (add an _onnx_export method to the class, "
                        f"or an entry to cnncore.onnx.EXPORTERS)"
                    )
                outputs = exporter(self, module, inputs)
        finally:
            self._scope = scope
        if len(outputs) == 1 and outputs[0] not in self._shapes:
            shapes = [self.shape(x) for x in inputs]
            self.set_shape(outputs[0], module.output_shape(shapes if multi else shapes[0]))
        if leaf and outputs:
            for node in self.nodes[start:]:
                if outputs[0] in node.output:
                    self._node_names.discard(node.name)
                    node.name = self.node_name(module.name)
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


def _conv_transpose2d(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    args = [inputs[0], ctx.constant(m.weight.data, "convT.weight")]
    if m.bias is not None:
        args.append(ctx.constant(m.bias.data, "convT.bias"))
    ph, pw = m.padding
    y = ctx.node(
        "ConvTranspose",
        args,
        "convtranspose",
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=[ph, pw, ph, pw],
        output_padding=list(m.output_padding),
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
    w_t = ctx.constant(m.weight.data.T, "linear.weight_t", derived_from=m.weight.data)
    y = ctx.node("MatMul", [x, w_t], "matmul")
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


# -- normalization ---------------------------------------------------------------------------


def _channel_view(ctx: ExportContext, values: np.ndarray, rank: int, hint: str) -> str:
    """A per-channel constant shaped to broadcast over ``(N, C, *)`` of ``rank`` dims."""
    return ctx.constant(np.reshape(values, (-1, *([1] * (rank - 2)))), hint)


def _group_norm(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    shape = ctx.shape(x)
    g, c = m.num_groups, m.num_channels
    if ctx.opset >= 21:  # per-channel scale and bias (opset 18's were per group)
        weight = m.weight.data if m.affine else np.ones(c)
        bias = m.bias.data if m.affine else np.zeros(c)
        args = [x, ctx.constant(weight, "gn.weight"), ctx.constant(bias, "gn.bias")]
        return [ctx.node("GroupNormalization", args, "groupnorm", epsilon=m.eps, num_groups=g)]
    # PyTorch's form: the groups as instances (N, G, C/G * spatial), InstanceNormalization,
    # the input's shape back, then the affine per channel
    grouped = ctx.node("Reshape", [x, ctx.constant([0, g, -1], "gn.groups", np.int64)], "group")
    ctx.set_shape(grouped, (shape[0], g, math.prod(shape[1:]) // g))
    ones, zeros = ctx.constant(np.ones(g), "gn.ones"), ctx.constant(np.zeros(g), "gn.zeros")
    normed = ctx.node("InstanceNormalization", [grouped, ones, zeros], "norm", epsilon=m.eps)
    ctx.set_shape(normed, ctx.shape(grouped))
    back = ctx.constant([0, *shape[1:]], "gn.shape", np.int64)
    y = ctx.node("Reshape", [normed, back], "ungroup")
    if m.affine:
        y = ctx.node("Mul", [y, _channel_view(ctx, m.weight.data, len(shape), "gn.weight")], "mul")
        y = ctx.node("Add", [y, _channel_view(ctx, m.bias.data, len(shape), "gn.bias")], "add")
    return [y]


def _layer_norm(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    k = len(m.normalized_shape)
    weight = m.weight.data if m.weight is not None else np.ones(m.normalized_shape)
    if ctx.opset >= 17:
        args = [x, ctx.constant(weight, "ln.weight")]
        if m.bias is not None:
            args.append(ctx.constant(m.bias.data, "ln.bias"))
        return [ctx.node("LayerNormalization", args, "layernorm", axis=-k, epsilon=m.eps)]
    rank = len(ctx.shape(x))
    axes = list(range(rank - k, rank))
    mean = _reduce_mean(ctx, x, axes)
    centered = ctx.node("Sub", [x, mean], "centered")
    var = _reduce_mean(ctx, ctx.node("Mul", [centered, centered], "sq"), axes)
    var = ctx.node("Add", [var, ctx.constant(np.asarray(m.eps), "ln.eps")], "var_eps")
    y = ctx.node("Div", [centered, ctx.node("Sqrt", [var], "std")], "xhat")
    if m.weight is not None:
        y = ctx.node("Mul", [y, ctx.constant(weight, "ln.weight")], "mul")
    if m.bias is not None:
        y = ctx.node("Add", [y, ctx.constant(m.bias.data, "ln.bias")], "add")
    return [y]


def _instance_norm(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    shape = ctx.shape(x)
    unbatched = len(shape) == 3  # (C, H, W): normalized as one sample
    if unbatched:
        x = ctx.node("Unsqueeze", [x, ctx.constant([0], "in.axis", np.int64)], "batched")
        ctx.set_shape(x, (1, *shape))
    c = ctx.shape(x)[1]
    scale = ctx.constant(m.weight.data if m.affine else np.ones(c), "in.weight")
    shift = ctx.constant(m.bias.data if m.affine else np.zeros(c), "in.bias")
    if m.track_running_stats:  # eval mode normalizes with them, as BatchNorm does
        mean = ctx.constant(m._buffers["running_mean"], "in.running_mean")
        var = ctx.constant(m._buffers["running_var"], "in.running_var")
        y = ctx.node("BatchNormalization", [x, scale, shift, mean, var], "norm", epsilon=m.eps)
    else:
        y = ctx.node("InstanceNormalization", [x, scale, shift], "norm", epsilon=m.eps)
    if unbatched:
        ctx.set_shape(y, ctx.shape(x))
        y = ctx.node("Squeeze", [y, ctx.constant([0], "in.axis", np.int64)], "unbatched")
    return [y]


# -- resizing --------------------------------------------------------------------------------


def _upsample(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    h, w = ctx.shape(x)[2:]
    geo = interpolate_geometry("Upsample", (h, w), m._resize)
    spec = spec_for(geo, (h, w), ctx.dtype)
    if spec is None:  # no Resize gives PyTorch's indices here: the exact equivalent
        return [_resize_exact(ctx, x, geo, (h, w))]
    attrs: dict[str, Any] = dict(
        mode=spec.mode, coordinate_transformation_mode=spec.ctm, nearest_mode=spec.nearest_mode
    )
    if spec.scales is not None:
        scales = ctx.constant([1.0, 1.0, *spec.scales], "resize.scales", np.float32)
        args = [x, "", scales]
    elif ctx.opset >= 18:  # sizes of H and W only
        attrs["axes"] = [2, 3]
        args = [x, "", "", ctx.constant(list(spec.sizes), "resize.sizes", np.int64)]
    else:  # sizes of every axis: N and C from the input's shape (the batch is dynamic)
        shape = ctx.node("Shape", [x], "shape")
        start = ctx.constant([0], "resize.start", np.int64)
        stop = ctx.constant([2], "resize.stop", np.int64)
        nc = ctx.node("Slice", [shape, start, stop], "nc")
        hw = ctx.constant(list(spec.sizes), "resize.hw", np.int64)
        args = [x, "", "", ctx.node("Concat", [nc, hw], "sizes", axis=0)]
    return [ctx.node("Resize", args, "resize", **attrs)]


def _resize_exact(ctx: ExportContext, x: str, geo: Any, in_hw: tuple[int, int]) -> str:
    """interpolate as Gathers of its source indices (nearest) or two MatMuls with its
    interpolation matrices (bilinear), from cnncore's own tables."""
    rows, cols = layer_matrices(geo, in_hw, ctx.dtype)
    if geo.mode != "bilinear":
        y = ctx.node("Gather", [x, ctx.constant(rows.argmax(1), "rows", np.int64)], "h", axis=2)
        return ctx.node("Gather", [y, ctx.constant(cols.argmax(1), "cols", np.int64)], "w", axis=3)
    y = ctx.node("MatMul", [x, ctx.constant(cols.T, "resize.cols")], "w")
    return ctx.node("MatMul", [ctx.constant(rows, "resize.rows"), y], "h")


def _pixel_rearrange(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    *lead, c, h, w = ctx.shape(x)
    r, k = m._factor, len(lead)
    if not m.inverse and k == 1:  # PixelShuffle of (N, C r^2, H, W): DepthToSpace CRD
        return [ctx.node("DepthToSpace", [x], "depthtospace", blocksize=r, mode="CRD")]
    keep = [0] * k  # Reshape copies the leading (batch) dims with 0
    if m.inverse:  # (*, C, H r, W r) -> (*, C, H, r, W, r) -> (*, C, r, r, H, W)
        split = [*keep, c, h // r, r, w // r, r]
        perm = [*range(k), k, k + 2, k + 4, k + 1, k + 3]
        final = [*keep, c * r * r, h // r, w // r]
    else:  # (*, C r^2, H, W) -> (*, C, r, r, H, W) -> (*, C, H, r, W, r)
        split = [*keep, c // (r * r), r, r, h, w]
        perm = [*range(k), k, k + 3, k + 1, k + 4, k + 2]
        final = [*keep, c // (r * r), h * r, w * r]
    y = ctx.node("Reshape", [x, ctx.constant(split, "shuffle.split", np.int64)], "split")
    y = ctx.node("Transpose", [y], "transpose", perm=perm)
    return [ctx.node("Reshape", [y, ctx.constant(final, "shuffle.shape", np.int64)], "merge")]


# -- activations -----------------------------------------------------------------------------


def _scalar(ctx: ExportContext, value: float, hint: str) -> str:
    return ctx.constant(np.asarray(value), hint)


def _gelu(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    if ctx.opset >= 20:
        return [ctx.node("Gelu", [x], "gelu", approximate=m.approximate)]
    if m.approximate == "none":  # x * (1 + erf(x / sqrt(2))) * 0.5, as PyTorch writes it
        inner = ctx.node("Div", [x, _scalar(ctx, math.sqrt(2.0), "gelu.sqrt2")], "div")
        t = ctx.node("Erf", [inner], "erf")
    else:  # x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) * 0.5
        cube = ctx.node("Mul", [x, ctx.node("Mul", [x, x], "sq")], "cube")
        cube = ctx.node("Mul", [cube, _scalar(ctx, 0.044715, "gelu.c")], "cube_c")
        inner = ctx.node("Add", [x, cube], "poly")
        k = _scalar(ctx, math.sqrt(2.0 / math.pi), "gelu.k")
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, k], "inner")], "tanh")
    t = ctx.node("Add", [t, _scalar(ctx, 1.0, "gelu.one")], "plus1")
    y = ctx.node("Mul", [x, t], "prod")
    return [ctx.node("Mul", [y, _scalar(ctx, 0.5, "gelu.half")], "gelu")]


def _silu(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    return [ctx.node("Mul", [x, ctx.node("Sigmoid", [x], "sigmoid")], "silu")]


def _hardswish(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    if ctx.opset >= 14:
        return [ctx.node("HardSwish", [x], "hardswish")]
    gate = ctx.node("HardSigmoid", [x], "gate", alpha=1.0 / 6.0, beta=0.5)
    return [ctx.node("Mul", [x, gate], "hardswish")]


def _softplus(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    if m.beta == 1.0 and m.threshold == 20.0:  # PyTorch's default: ONNX's op (which has no
        return [ctx.node("Softplus", [x], "softplus")]  # threshold: < exp(-20) apart there)
    beta = _scalar(ctx, m.beta, "softplus.beta")
    bx = ctx.node("Mul", [x, beta], "bx")
    soft = ctx.node("Div", [ctx.node("Softplus", [bx], "softplus"), beta], "div")
    linear = ctx.node("Greater", [bx, _scalar(ctx, m.threshold, "softplus.threshold")], "linear")
    return [ctx.node("Where", [linear, x, soft], "where")]


def _mish(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    x = inputs[0]
    if ctx.opset >= 18:
        return [ctx.node("Mish", [x], "mish")]
    t = ctx.node("Tanh", [ctx.node("Softplus", [x], "softplus")], "tanh")
    return [ctx.node("Mul", [x, t], "mish")]


def _relu6(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    lo, hi = _scalar(ctx, 0.0, "relu6.min"), _scalar(ctx, 6.0, "relu6.max")
    return [ctx.node("Clip", [inputs[0], lo, hi], "clip")]


# -- merge layers ----------------------------------------------------------------------------


def _binary_chain(op: str) -> Exporter:
    """Add / Multiply of n inputs: n - 1 nodes, left to right (as the layers compute)."""

    def export_op(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
        y = inputs[0]
        for other in inputs[1:]:
            y = ctx.node(op, [y, other], op.lower())
        ctx.set_shape(y, ctx.shape(inputs[0]))
        return [y]

    return export_op


def _concatenate(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    axis = m._axis_of([ctx.shape(x) for x in inputs])
    return [ctx.node("Concat", inputs, "concat", axis=axis)]


# -- containers ------------------------------------------------------------------------------


def _sequential(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    names = inputs
    for layer in m.children():
        names = ctx.export(layer, names)
    return names


def _model(ctx: ExportContext, m: Any, inputs: list[str]) -> list[str]:
    """A graph model: every layer call in run order on the values of its input nodes (a
    layer called twice is exported twice, its weights once; a nested model inline)."""
    values: list[Any] = [None] * m._n_slots
    for slot, name in zip(m._in_slots, inputs, strict=True):
        values[slot] = name
    for layer, ins, multi, out, *_ in m._steps:
        values[out] = ctx.export(layer, [values[s] for s in ins], multi=multi)[0]
    return [values[s] for s in m._out_slots]


EXPORTERS: dict[str, Exporter] = {
    "Conv2d": _conv2d,
    "ConvTranspose2d": _conv_transpose2d,
    "Linear": _linear,
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "GroupNorm": _group_norm,
    "LayerNorm": _layer_norm,
    "InstanceNorm2d": _instance_norm,
    "SyncBatchNorm": _batch_norm,
    "MaxPool2d": _max_pool,
    "AvgPool2d": _avg_pool,
    "AdaptiveAvgPool2d": _adaptive_avg_pool,
    "GlobalAvgPool2d": _unary("GlobalAveragePool"),
    "Upsample": _upsample,
    "PixelShuffle": _pixel_rearrange,
    "PixelUnshuffle": _pixel_rearrange,
    "Flatten": _flatten,
    "Dropout": _dropout,
    "Dropout2d": _dropout,
    "ReLU": _unary("Relu"),
    "LeakyReLU": _unary("LeakyRelu", alpha=lambda m: m.negative_slope),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "Softmax": _unary("Softmax", axis=lambda m: m.dim),
    "LogSoftmax": _unary("LogSoftmax", axis=lambda m: m.dim),
    "GELU": _gelu,
    "SiLU": _silu,
    "ELU": _unary("Elu", alpha=lambda m: m.alpha),
    "Hardswish": _hardswish,
    "Hardsigmoid": _unary("HardSigmoid", alpha=lambda m: 1.0 / 6.0, beta=lambda m: 0.5),
    "Softplus": _softplus,
    "Mish": _mish,
    "ReLU6": _relu6,
    "Add": _binary_chain("Add"),
    "Multiply": _binary_chain("Mul"),
    "Concatenate": _concatenate,
    "Identity": _unary("Identity"),
    "Sequential": _sequential,
    "Model": _model,
}
"""Registry name -> ``fn(ctx, module, inputs) -> outputs`` (see the module docstring)."""


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
        ok = all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or not out:
        raise ValueError(
            f"cnncore.onnx.export(): {what} must be a tuple of positive ints such as "
            f"(1, 1, 28, 28). Received: {what}={shape!r}"
        )
    return out


def _input_shapes(model: Module, input_shape: Any) -> list[tuple[int, ...]]:
    """One checked shape per model input: a graph model with several inputs takes a list
    of shapes; None means a graph model's Input shapes (batch 1), else (1, 1, 28, 28)."""
    graph_inputs = model.inputs if isinstance(model, Model) else None
    if input_shape is None:
        if graph_inputs is None:
            return [(1, 1, 28, 28)]
        return [(1, *node.shape[1:]) for node in graph_inputs]
    if graph_inputs is not None and model._multi_in:
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(graph_inputs):
            raise ValueError(
                f"cnncore.onnx.export(): the model has {len(graph_inputs)} inputs: "
                f"input_shape must be a list of {len(graph_inputs)} shapes. Received: "
                f"input_shape={input_shape!r}"
            )
        shapes = [_check_shape(s, f"input_shape[{i}]") for i, s in enumerate(input_shape)]
        if len({s[0] for s in shapes}) != 1:
            raise ValueError(
                f"cnncore.onnx.export(): the inputs must have one batch size. Received: "
                f"input_shape={input_shape!r}"
            )
        return shapes
    return [_check_shape(input_shape, "input_shape")]


def _check_args(model: Any, input_shape: Any, opset: Any) -> tuple[list[tuple[int, ...]], int]:
    onnx = require_onnx()
    if not isinstance(model, Module):
        raise TypeError(
            f"cnncore.onnx.export(): model must be a cnncore.nn.Module. Received: "
            f"{type(model).__name__}"
        )
    shapes = _input_shapes(model, input_shape)
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"cnncore.onnx.export(): opset must be an int in [{MIN_OPSET}, {newest}] (the "
            f"installed onnx package's newest). Received: opset={opset!r}"
        )
    return shapes, opset


def _output_shapes(model: Module, shapes: list[tuple[int, ...]], several_in: bool) -> list[Any]:
    out = model.output_shape(shapes if several_in else shapes[0])
    return list(out) if isinstance(model, Model) and model._multi_out else [out]


def _output_dims(
    model: Module, shapes: list[tuple[int, ...]], several_in: bool, dynamic: bool
) -> list[list[Any]]:
    """The declared shape of each output: with ``dynamic``, a dimension that follows the
    batch size is ``"batch"`` (left unnamed if it is another function of it)."""
    outs = _output_shapes(model, shapes, several_in)
    if not dynamic:
        return [list(s) for s in outs]
    n = shapes[0][0]
    more = _output_shapes(model, [(n + 1, *s[1:]) for s in shapes], several_in)
    return [
        [
            d if d == e else ("batch" if (d, e) == (n, n + 1) else None)
            for d, e in zip(a, b, strict=True)
        ]
        for a, b in zip(outs, more, strict=True)
    ]


def to_model_proto(
    model: Module,
    input_shape: Any = None,
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (what :func:`export` writes); see there."""
    onnx = require_onnx()
    shapes, opset = _check_args(model, input_shape, opset)
    if not isinstance(dynamic_batch, bool):
        raise TypeError(
            f"cnncore.onnx.export(): dynamic_batch must be a bool. Received: {dynamic_batch!r}"
        )
    dtype = model.dtype
    ctx = ExportContext(opset, dtype)
    several_in = isinstance(model, Model) and model._multi_in
    names = [ctx.fresh(n.name) for n in model.inputs] if several_in else [ctx.fresh("input")]
    for name, shape in zip(names, shapes, strict=True):
        ctx.set_shape(name, shape)
    # One eval-mode forward on zeros (batch 1) checks that the model accepts the shapes.
    was_training = model.training
    try:
        model.eval()
        zeros = [np.zeros((1, *s[1:]), dtype) for s in shapes]
        model(zeros if several_in else zeros[0])
        out_dims = _output_dims(model, shapes, several_in, dynamic_batch)
    except (ValueError, TypeError, IndexError) as exc:
        shown = shapes if several_in else shapes[0]
        raise ValueError(
            f"cnncore.onnx.export(): the model does not accept input_shape={shown} ({exc})"
        ) from None
    finally:
        model.train(was_training)
    outputs = ctx.export(model, names, multi=several_in)
    final = ["output"] if len(outputs) == 1 else [f"output_{k}" for k in range(len(outputs))]
    produced = {v for node in ctx.nodes for v in node.output}
    for k, (y, name) in enumerate(zip(outputs, final, strict=True)):
        if y not in produced or y in outputs[:k]:  # an input, a constant, a repeated value
            ctx.nodes.append(
                onnx.helper.make_node("Identity", [y], [name], name=ctx.node_name(name))
            )
            continue
        for node in ctx.nodes:  # the value is renamed everywhere
            for field in (node.input, node.output):
                for i, v in enumerate(field):
                    if v == y:
                        field[i] = name
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph = onnx.helper.make_graph(
        ctx.nodes,
        model.name,
        [
            onnx.helper.make_tensor_value_info(x, elem, ["batch", *s[1:]] if dynamic_batch else s)
            for x, s in zip(names, shapes, strict=True)
        ],
        [
            onnx.helper.make_tensor_value_info(y, elem, d)
            for y, d in zip(final, out_dims, strict=True)
        ],
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
    input_shape: Any = None,
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
) -> None:
    """Write ``model`` to ``path`` as an ONNX model (inference graph, eval-mode semantics).

    Parameters
    ----------
    model : Module
        A :class:`~cnncore.nn.Sequential`, a graph model (:class:`~cnncore.nn.Model`: any
        graph of layers, several inputs and outputs, nested models, shared layers), or any
        module with an exporter (see :data:`EXPORTERS`).
    path : str or path-like
    input_shape : tuple of int, or a list of them, optional
        The input's shape, batch included (a list of shapes for a model with several
        inputs); every dimension but the batch is fixed in the graph.  Default: a graph
        model's :func:`~cnncore.nn.Input` shapes with batch 1, else ``(1, 1, 28, 28)``.
    dynamic_batch : bool, default True
        Name the batch dimension ``"batch"`` (any size) instead of fixing it.
    opset : int, default 17
        The ai.onnx opset, from 13 to the installed onnx package's newest.  Circular
        padding needs 19.

    Notes
    -----
    The graph's input is named ``input`` (several: the model's Input names), its output
    ``output`` (several: ``output_0``, ``output_1``, ...); the graph is named after the
    model and each layer's output node after the layer.  Layers map to their ONNX
    operators: Conv, ConvTranspose, Gemm or MatMul + Add, BatchNormalization, InstanceNormalization,
    LayerNormalization (opset >= 17), GroupNormalization (opset >= 21), MaxPool,
    AveragePool, GlobalAveragePool, Resize, DepthToSpace, Flatten or Reshape, Relu,
    LeakyRelu, Sigmoid, Tanh, Elu, HardSigmoid, HardSwish (opset >= 14), Softplus, Mish
    (opset >= 18), Gelu (opset >= 20), Clip (ReLU6), Softmax, LogSoftmax, Dropout, Add, Mul,
    Concat, Identity.  Where ONNX has no operator with PyTorch's semantics (or none at the
    opset) the layer becomes a small exact subgraph: Conv2d's non-zero padding modes a Pad
    in front; AvgPool2d with ``ceil_mode`` or ``divisor_override`` a depthwise all-ones Conv
    divided by the divisor map; AdaptiveAvgPool2d with uneven windows two MatMuls with
    averaging matrices; BatchNorm without running statistics the batch-statistics formula;
    InstanceNorm2d with running statistics a BatchNormalization; GroupNorm (opset < 21)
    InstanceNormalization of the groups, as PyTorch writes it; LayerNorm (opset < 17) its
    formula; PixelUnshuffle Reshape-Transpose-Reshape; GELU, SiLU, Mish, Hardswish and
    Softplus (non-default beta or threshold) their formulas.  Upsample becomes a Resize
    whose ``coordinate_transformation_mode`` and ``nearest_mode`` give PyTorch's indices
    (``asymmetric``/``floor`` for nearest, ``half_pixel``/``round_prefer_ceil`` for
    nearest-exact, ``half_pixel`` or ``align_corners`` for bilinear), checked index by index
    against cnncore's own tables (:mod:`cnncore.onnx._resize`); where no Resize agrees (a
    few odd sizes) Gathers of the source indices or MatMuls with the interpolation
    matrices.  The model's dtype (float32 or float64) is the graph's.  The graph passes
    ``onnx.checker.check_model``; uint8 inputs are not scaled by the graph (``predict``
    scales them by 1/255): feed float images.

    Raises
    ------
    ValueError
        For a layer without an exporter or a setting ONNX cannot express at ``opset``
        (naming it), an ``input_shape`` the model does not accept, or an unsupported opset.
    ImportError
        If the onnx package is not installed (``pip install "cnncore[onnx]"``).
    """
    onnx = require_onnx()
    proto = to_model_proto(model, input_shape, dynamic_batch=dynamic_batch, opset=opset)
    onnx.save_model(proto, os.fspath(path))
