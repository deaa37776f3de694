"""Import ONNX models into cnncore: every operator becomes a layer (or a few operators one
layer), and the graph a :class:`~cnncore.nn.Sequential` when it is a chain, else a graph
model (:class:`~cnncore.nn.Model`).

**The walk.** The graph's nodes are read in order (ONNX lists them topologically).  Every
value is one of: a constant (initializers, ``Constant`` nodes, and whatever
``_fold.FOLDERS`` compute from them -- with a dynamic batch size, once per probe batch
size, so shape arithmetic on ``Shape`` of a tensor works); a tensor (a graph input or a
layer's output, with its shape per probe batch size); or a *pending* value that the next
operator may absorb.  :data:`IMPORTERS` maps an op type to a converter ``fn(g, node)``
that reads its inputs with ``g.tensor`` / ``g.const`` and adds a layer with ``g.emit``
(``g`` is the import's state, a ``_graph.Graph``); a layer whose parameters are the same
initializers with the same attributes and input shape is the same layer (a shared layer,
as the exporter writes one).

**Operators that combine.**  ``Pad`` in front of ``Conv`` becomes the convolution's padding
(and padding mode); ``MatMul``, or a bias-less Conv/ConvTranspose/Gemm, followed by ``Add``
of a constant gets that bias; ``Mul``/``Add`` of a per-channel constant after a
normalization is its affine.  Data movement (``Reshape``, ``Flatten``, ``Transpose``,
``Squeeze``/``Unsqueeze``, ``DepthToSpace``, ``SpaceToDepth``) stays pending until a
consumer needs the tensor, and is then recognized by what it does to the indices: a
Flatten (or two), PixelShuffle, PixelUnshuffle, nothing.  ``InstanceNormalization`` of a
tensor reshaped to ``(N, G, -1)`` and reshaped back is a GroupNorm (PyTorch's export of
it).  Before the walk, subgraphs of elementwise operators with one tensor input are
evaluated on a grid of numbers and recognized as the activation they compute (GELU as
``Erf`` or ``Tanh`` formulas, SiLU, Mish, Hardswish, Softplus with its beta and
threshold, ...), whatever order the operators come in; so is the formula exporters write
for a LayerNorm before opset 17 (``ReduceMean``, ``Sub``, ``Pow``, ``ReduceMean``, ``Add``,
``Sqrt``, ``Div`` and the affine ``Mul``/``Add``), as a LayerNorm.

A model using an operator outside these is refused up front with one ValueError listing
every such operator; anything a layer cannot express raises ValueError naming the node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from .._geometry import conv2d_padding, interpolate_geometry, interpolate_params
from ._fold import ELEMENTWISE, FOLDERS, fold, fuse_activations, fuse_layer_norms
from ._graph import (
    Attrs,
    Const,
    Entry,
    Graph,
    Pending,
    Tensor,
    add_reshape,
    add_transpose,
    move,
    pend_move,
    resolve_reshape,
    sanitize,
)
from ._proto import float_attr, require_onnx, tensor_to_array
from ._resize import ResizeSpec, spec_matches

_FLOAT_TYPES = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}  # TensorProto FLOAT, DOUBLE


# --------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------


def _ints(values: Any, n: int, default: int, g: Graph, what: str) -> list[int]:
    """``n`` ints (``default`` each if absent), at least ``default`` (1 for strides and
    dilations, 0 for pads)."""
    if values is None:
        return [default] * n
    values = [int(v) for v in values]
    if len(values) != n or min(values) < default:
        raise g.error(f"{what} must be {n} values >= {default}. Received: {values}")
    return values


def _spatial_pads(
    g: Graph,
    a: Attrs,
    shape: tuple[int, ...],
    kernel: list[int],
    stride: list[int],
    dilation: list[int],
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from ``pads`` or ``auto_pad``."""
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = _ints(a.get("pads"), 4, 0, g, "pads")
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = []
        for size, k, s, d in zip(shape[2:], kernel, stride, dilation, strict=True):
            out = -(-size // s)
            total.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size))
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
        return begin[0], begin[1], end[0], end[1]
    raise g.error(f"unknown auto_pad {auto!r}")


def _rank(g: Graph, x: str, ranks: tuple[int, ...]) -> None:
    if len(g.shape(x)) not in ranks:
        raise g.error(f"expects a {' or '.join(map(str, ranks))}-D input, got {g.text(x)}")


def _conv(g: Graph) -> None:
    pad = g.pending(0, "pad")
    x = pad.src if pad is not None else g.tensor(0)
    _rank(g, x, (4,))
    shape = g.shape(x)
    w = g.const(1, "weight")
    b = g.const(2, "bias", required=False)
    if w.ndim != 4:
        raise g.error(f"only 2-D convolutions are supported (weight of shape {w.shape})")
    a = g.attrs()
    group = int(a.get("group", 1))
    kernel = list(w.shape[2:])
    if "kernel_shape" in a and list(a["kernel_shape"]) != kernel:
        raise g.error(f"kernel_shape {a['kernel_shape']} differs from the weight's {kernel}")
    stride = _ints(a.get("strides"), 2, 1, g, "strides")
    dilation = _ints(a.get("dilations"), 2, 1, g, "dilations")
    mode = "zeros"
    if pad is not None:
        pad_mode, (qt, ql, qb, qr) = pad.data
        padded = (*shape[:2], shape[2] + qt + qb, shape[3] + ql + qr)
        pt, pl, pb, pr = _spatial_pads(g, a, padded, kernel, stride, dilation)
        if pad_mode == "constant":
            pt, pl, pb, pr = pt + qt, pl + ql, pb + qb, pr + qr
        elif any((pt, pl, pb, pr)):
            raise g.error("a non-zero Pad in front of a padded Conv (not supported)")
        else:
            mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[pad_mode]
            pt, pl, pb, pr = qt, ql, qb, qr
    else:
        pt, pl, pb, pr = _spatial_pads(g, a, shape, kernel, stride, dilation)
    if (pt, pl) == (pb, pr):
        padding: Any = (pt, pl)
    elif stride == [1, 1] and conv2d_padding(
        "Conv", "same", tuple(kernel), (1, 1), tuple(dilation)
    ) == ((pt, pb), (pl, pr)):
        padding = "same"
    else:
        raise g.error(f"asymmetric pads {[pt, pl, pb, pr]} (not supported)")
    c_in = w.shape[1] * group
    if shape[1] != c_in:
        raise g.error(f"the weight expects {c_in} input channels, the input has {shape[1]}")
    layer = g.layer(
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
        dtype=g.dtype,
    )
    g.load_into(layer.weight.data, w, "the weight")
    if b is not None:
        g.load_into(layer.bias.data, b, "the bias")
    g.emit(layer, [x], share=pad is None)


def _conv_transpose(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    shape = g.shape(x)
    w = g.const(1, "weight")
    b = g.const(2, "bias", required=False)
    if w.ndim != 4:
        raise g.error(f"only 2-D transposed convolutions are supported (weight {w.shape})")
    a = g.attrs()
    group = int(a.get("group", 1))
    kernel = list(w.shape[2:])
    if "kernel_shape" in a and list(a["kernel_shape"]) != kernel:
        raise g.error(f"kernel_shape {a['kernel_shape']} differs from the weight's {kernel}")
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise g.error(f"auto_pad={a.get('auto_pad')!r} (only explicit pads are supported)")
    stride = _ints(a.get("strides"), 2, 1, g, "strides")
    dilation = _ints(a.get("dilations"), 2, 1, g, "dilations")
    pt, pl, pb, pr = _ints(a.get("pads"), 4, 0, g, "pads")
    out_pad = _ints(a.get("output_padding"), 2, 0, g, "output_padding")
    if (pt, pl) != (pb, pr):
        raise g.error(f"asymmetric pads {[pt, pl, pb, pr]} (not supported)")
    if shape[1] != w.shape[0]:
        raise g.error(f"the weight expects {w.shape[0]} input channels, the input has {shape[1]}")
    layer = g.layer(
        nn.ConvTranspose2d,
        w.shape[0],
        w.shape[1] * group,
        tuple(kernel),
        stride=tuple(stride),
        padding=(pt, pl),
        output_padding=tuple(out_pad),
        groups=group,
        bias=b is not None,
        dilation=tuple(dilation),
        dtype=g.dtype,
    )
    if "output_shape" in a:
        want = [int(v) for v in a["output_shape"]][-2:]
        got = list(layer.output_shape(shape)[2:])
        if want != got:
            raise g.error(f"output_shape {want} (the pads and output_padding give {got})")
    g.load_into(layer.weight.data, w, "the weight")
    if b is not None:
        g.load_into(layer.bias.data, b, "the bias")
    g.emit(layer, [x], share=True)


def _pad(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    a = g.attrs()
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise g.error(f"unknown mode {mode!r}")
    pads = a.get("pads") if g.opset < 11 else g.const(1, "pads")
    if pads is None:
        raise g.error("the pads are missing")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    value = a.get("value", 0.0) if g.opset < 11 else g.const(2, "constant_value", False)
    if mode == "constant" and value is not None and np.any(np.asarray(value) != 0):
        raise g.error("constant padding with a non-zero value (not supported)")
    axes = g.const(3, "axes", required=False)
    if axes is not None:  # opset 18: pads for the listed axes only
        full = [0] * 8
        for i, ax in enumerate(int(v) % 4 for v in np.asarray(axes).ravel()):
            full[ax], full[ax + 4] = pads[i], pads[i + len(axes)]
        pads = full
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise g.error(f"only non-negative padding of H and W is supported. Received: {pads}")
    g.check_extra_outputs()
    shapes = [(n, c, h + pads[2] + pads[6], w + pads[3] + pads[7]) for n, c, h, w in g.shapes(x)]
    data = (mode, (pads[2], pads[3], pads[6], pads[7]))
    g.values[g.node.output[0]] = Pending("pad", x, shapes, data, g.node)


def _gemm(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (2,))
    a = g.attrs()
    if a.get("transA", 0):
        raise g.error("transA=1 (not supported)")
    w = g.const(1, "B")
    bias = g.const(2, "C", required=False)
    if w.ndim != 2:
        raise g.error(f"B must be 2-D, got shape {w.shape}")
    w = w if a.get("transB", 0) else w.T
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    out_f, in_f = w.shape
    if g.shape(x)[1] != in_f:
        raise g.error(f"B expects {in_f} input features, the input has {g.shape(x)[1]}")
    layer = g.layer(nn.Linear, in_f, out_f, bias=bias is not None, dtype=g.dtype)
    g.load_into(layer.weight.data, w * alpha if alpha != 1.0 else w, "B")
    if bias is not None:
        if bias.size not in (1, out_f) or bias.ndim > 2:
            raise g.error(f"C of shape {bias.shape} is not a bias of {out_f} features")
        bias = np.broadcast_to(bias.reshape(-1), (out_f,))
        g.load_into(layer.bias.data, bias * beta if beta != 1.0 else bias, "C")
    g.emit(layer, [x], share=True)


def _matmul(g: Graph) -> None:
    x = g.tensor(0)
    if not g.is_const(1):
        raise g.error("the second operand must be a constant weight (MatMul of two tensors)")
    w = g.const(1, "second operand")
    if w.ndim != 2:
        raise g.error(f"the constant operand must be 2-D, got shape {w.shape}")
    in_f, out_f = w.shape
    if g.shape(x)[-1] != in_f:
        raise g.error(f"the operand expects {in_f} features, the input has {g.shape(x)[-1]}")
    layer = g.layer(nn.Linear, in_f, out_f, bias=False, dtype=g.dtype)
    g.load_into(layer.weight.data, w.T, "the operand")
    g.emit(layer, [x], share=True)


def _channel_vector(c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A constant that broadcasts as one value per channel (dim 1) of ``shape``, as that
    vector (a scalar: repeated); None otherwise."""
    c = np.asarray(c)
    n = shape[1] if len(shape) > 1 else 1
    if c.size == 1 and c.ndim <= len(shape):
        return np.full(n, c.ravel()[0], np.float64)
    dims = list(c.shape)
    while dims and dims[0] == 1 and len(dims) > len(shape) - 1:
        dims.pop(0)
    if len(dims) == len(shape) - 1 and dims[0] == n and all(d == 1 for d in dims[1:]):
        return c.reshape(-1).astype(np.float64)
    return None


def _with(layer: nn.Module, **changes: Any) -> nn.Module:
    """A copy of ``layer`` with other constructor arguments, its parameters and buffers
    copied where their shapes agree."""
    config = layer.get_config() | changes
    new = type(layer)(**config)
    for name, p in layer._params.items():
        if name in new._params and new._params[name].data.shape == p.data.shape:
            new._params[name].data[...] = p.data
    for name, b in layer._buffers.items():
        if name in new._buffers and new._buffers[name].shape == b.shape:
            new._buffers[name][...] = b
    return new


_AFFINE = ("BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm2d")


def _absorb(g: Graph, op: str, x: str, c: np.ndarray, c_name: str) -> bool:
    """Fold ``x op c`` (``c`` the constant ``c_name``) into the layer computing ``x`` if that
    layer can hold it: a bias for a bias-less Linear/Conv2d/ConvTranspose2d (Add), the
    affine of a normalization (Mul, Add).  True if done.  A layer called elsewhere too is
    not changed (this call gets a changed copy); a shared layer given the same bias at
    each call stays one layer."""
    entry = g.absorbable(x)
    if entry is None:
        return False
    layer = entry.layer
    kind = type(layer).__name__
    shape = g.shape(x)
    bias_key = None
    if op == "Add" and kind in ("Linear", "Conv2d", "ConvTranspose2d") and layer.bias is None:
        bias_key = None if entry.key is None else (entry.key, "bias", c_name)
        known = g.shared.get(bias_key) if bias_key is not None else None
        if known is not None:  # another call of this layer got this bias already
            g.replace_layer(entry, known)
            entry.key = bias_key
            return _moved(g, x, entry)
        if kind == "Linear":
            out_f = layer.out_features
            if c.size != out_f or c.shape[-1] != out_f:
                return False
            vec = c.reshape(-1)
        else:
            vec = _channel_vector(c, shape)
            if vec is None or c.size == 1:
                return False
        new = _with(layer, bias=True)
        new.bias.data[...] = vec
    elif kind in _AFFINE:
        vec = _channel_vector(c, shape)
        if vec is None or kind == "InstanceNorm2d" and len(shape) != 4:
            return False
        new = layer if layer.affine and not g.shared_layer(entry) else _with(layer, affine=True)
        w, b = new.weight.data, new.bias.data
        if op == "Mul":
            if layer.affine:
                w[...] = w.astype(np.float64) * vec
                b[...] = b.astype(np.float64) * vec
            else:  # exactly the constant (what the exporter wrote)
                w[...], b[...] = vec, 0.0
        else:
            b[...] = vec if not layer.affine else b.astype(np.float64) + vec
    else:
        return False
    if new is not layer:
        g.replace_layer(entry, new)
    if bias_key is not None:
        g.shared[bias_key] = new
        entry.key = bias_key
    g.rename(entry)
    return _moved(g, x, entry)


def _moved(g: Graph, x: str, entry: Entry) -> bool:
    """``entry`` (which computed ``x``) now computes the current node's output."""
    g.check_extra_outputs()
    g.values[g.node.output[0]] = g.values.pop(x)
    g.producer[g.node.output[0]] = g.producer.pop(x)
    entry.output = g.node.output[0]
    return True


def _binary(op: str, merge: type) -> Callable[[Graph], None]:
    """Add / Mul: of two tensors a merge layer (Add, Multiply); with a constant folded into
    the layer in front (:func:`_absorb`)."""

    def convert(g: Graph) -> None:
        inputs = list(g.node.input)
        if len(inputs) != 2:
            raise g.error(f"expects 2 inputs, got {len(inputs)}")
        consts = [g.is_const(i) for i in range(2)]
        if not any(consts):
            x, y = g.tensor(0), g.tensor(1)
            if g.shapes(x) != g.shapes(y):
                raise g.error(
                    f"the inputs have shapes {g.text(x)} and {g.text(y)}; cnncore's "
                    f"{merge.__name__} takes equal shapes (no broadcasting)"
                )
            entry = g.absorbable(x)
            if entry is not None and type(entry.layer) is merge and not g.shared_layer(entry):
                # (a + b) + y: one layer of three inputs
                entry.inputs.append(y)  # (the layer adds left to right, as the nodes)
                g.entries.remove(entry)  # it runs here now (y may be computed after it)
                g.entries.append(entry)
                g.rename(entry)
                _moved(g, x, entry)
                return
            g.emit(g.layer(merge), [x, y], multi=True)
            return
        k = consts.index(False)
        x = g.tensor(k)
        c = g.const(1 - k, "constant")
        if not _absorb(g, op, x, c, g.node.input[1 - k]):
            what = "bias" if op == "Add" else "scale"
            raise g.error(
                f"{'adding' if op == 'Add' else 'multiplying by'} a constant of shape "
                f"{np.shape(c)} is supported only as the {what} of the layer in front "
                f"(a MatMul or a bias-less Conv/Gemm for Add, a normalization's affine), "
                f"which only this node reads"
            )

    return convert


def _sum(g: Graph) -> None:
    xs = [g.tensor(i) for i in range(len(g.node.input))]
    if len(xs) == 1:
        g.emit(nn.Identity(), xs)
        return
    if any(g.shapes(x) != g.shapes(xs[0]) for x in xs):
        raise g.error("Sum of tensors of different shapes (no broadcasting)")
    g.emit(nn.Add(), xs, multi=True)


def _concat(g: Graph) -> None:
    if any(g.is_const(i) for i in range(len(g.node.input))):
        raise g.error("Concat of a tensor with a constant (not supported)")
    xs = [g.tensor(i) for i in range(len(g.node.input))]
    nd = len(g.shape(xs[0]))
    axis = int(g.attrs().get("axis", 1))
    axis = axis + nd if axis < 0 else axis
    if axis == 0:
        raise g.error("Concat along the batch dimension (not supported)")
    g.emit(g.layer(nn.Concatenate, axis), xs, multi=True)


def _channel_constants(g: Graph, c: int, **constants: np.ndarray) -> None:
    """ValueError naming the first of ``constants`` that is not one value per channel
    (checked before a layer of ``c`` channels is built)."""
    for what, value in constants.items():
        if value.shape != (c,):
            raise g.error(f"{what} has shape {value.shape}, expected ({c},)")


def _batch_norm(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (2, 3, 4))
    a = g.attrs()
    if a.get("training_mode", 0):
        raise g.error("training_mode=1 (only inference graphs are imported)")
    scale, bias = g.const(1, "scale"), g.const(2, "B")
    mean, var = g.const(3, "input_mean"), g.const(4, "input_var")
    eps = float_attr(a.get("epsilon", 1e-5))
    momentum = round(1.0 - float_attr(a.get("momentum", 0.9)), 12)
    c = g.shape(x)[1]
    _channel_constants(g, c, scale=scale, B=bias, input_mean=mean, input_var=var)
    cls = nn.BatchNorm2d if len(g.shape(x)) == 4 else nn.BatchNorm1d
    layer = g.layer(cls, c, eps=eps, momentum=momentum, dtype=g.dtype)
    g.load_into(layer.weight.data, scale, "scale")
    g.load_into(layer.bias.data, bias, "B")
    g.load_into(layer._buffers["running_mean"], mean, "input_mean")
    g.load_into(layer._buffers["running_var"], var, "input_var")
    g.emit(layer, [x], share=True)


def _instance_norm(g: Graph) -> None:
    src, shapes, ops = move(g, 0)
    a = g.attrs()
    eps = float_attr(a.get("epsilon", 1e-5))
    scale, bias = g.const(1, "scale"), g.const(2, "B")
    if ops:  # PyTorch's GroupNorm: (N, C, *) reshaped to (N, G, -1), normalized, back
        src_shapes = g.shapes(src)
        groups = shapes[0][1] if len(shapes[0]) == 3 else 0
        grouped = [(s[0], groups, math.prod(s[1:]) // max(groups, 1)) for s in src_shapes]
        if (
            len(src_shapes[0]) < 2
            or not groups
            or src_shapes[0][1] % groups
            or any(op != "reshape" for op, _ in ops)
            or list(shapes) != grouped
        ):
            src = g.tensor(0)  # some other reshape: the layers it is, then normalized
        else:
            if scale.shape != (groups,) or bias.shape != (groups,):
                raise g.error(f"scale and B must have shape ({groups},)")
            g.check_extra_outputs()
            data = (groups, eps, scale, bias)
            g.values[g.node.output[0]] = Pending("groups", src, shapes, data, g.node)
            return
    x = src
    _rank(g, x, (4,))
    c = g.shape(x)[1]
    _channel_constants(g, c, scale=scale, B=bias)
    layer = g.layer(nn.InstanceNorm2d, c, eps=eps, affine=True, dtype=g.dtype)
    g.load_into(layer.weight.data, scale, "scale")
    g.load_into(layer.bias.data, bias, "B")
    g.emit(layer, [x], share=True)


def _group_norm_back(g: Graph, p: Pending) -> None:
    """Reshape of InstanceNormalization-of-groups back to the input's shape: a GroupNorm."""
    targets = g.const_variants(1, "shape")
    src = p.src
    for shape, target in zip(g.shapes(src), targets, strict=True):
        if resolve_reshape(shape, [int(t) for t in np.ravel(target)]) != list(shape):
            raise g.error(
                f"InstanceNormalization {p.node.name!r} of groups is reshaped to "
                f"{[int(t) for t in np.ravel(target)]}, not back to {g.text(src)}"
            )
    groups, eps, scale, bias = p.data
    c = g.shape(src)[1]
    identity = np.all(scale == 1) and np.all(bias == 0)
    layer = g.layer(nn.GroupNorm, groups, c, eps=eps, affine=not identity, dtype=g.dtype)
    if not identity:
        layer.weight.data[...] = np.repeat(scale, c // groups)
        layer.bias.data[...] = np.repeat(bias, c // groups)
    g.emit(layer, [src])


def _reshape(g: Graph) -> None:
    a = g.attrs()
    targets = [[int(t) for t in np.ravel(v)] for v in g.const_variants(1, "shape")]
    if a.get("allowzero", 0) and any(0 in t for t in targets):
        raise g.error("allowzero=1 with a 0 in the shape (not supported)")
    name = g._input_name(0)
    value = g.values.get(name)
    if isinstance(value, Pending) and value.kind == "groups" and g.uses.get(name, 0) == 1:
        _group_norm_back(g, value)
        return
    add_reshape(g, 0, targets)


def _flatten(g: Graph) -> None:
    src, shapes, _ = move(g, 0)
    nd = len(shapes[0])
    axis = int(g.attrs().get("axis", 1))
    axis = axis + nd if axis < 0 else axis
    if not 0 <= axis <= nd:
        raise g.error(f"axis={axis} on a {nd}-D input")
    add_reshape(g, 0, [[math.prod(s[:axis]), math.prod(s[axis:])] for s in shapes])


def _squeeze_unsqueeze(squeeze: bool) -> Callable[[Graph], None]:
    def convert(g: Graph) -> None:
        src, shapes, _ = move(g, 0)
        a = g.attrs()
        axes = a.get("axes") if g.opset < 13 else g.const(1, "axes", required=False)
        axes = [] if axes is None else [int(v) for v in np.ravel(axes)]
        targets = []
        for s in shapes:
            if squeeze:
                drop = (
                    {v % len(s) for v in axes} if axes else {i for i, d in enumerate(s) if d == 1}
                )
                if any(s[i] != 1 for i in drop):
                    raise g.error(f"squeezes axes {sorted(drop)} of {g.text(src)}, not all 1")
                targets.append([d for i, d in enumerate(s) if i not in drop])
            else:
                out = list(s)
                for v in sorted(v % (len(s) + len(axes)) for v in axes):
                    out.insert(v, 1)
                targets.append(out)
        add_reshape(g, 0, targets)

    return convert


def _transpose(g: Graph) -> None:
    nd = len(move(g, 0)[1][0])
    perm = g.attrs().get("perm")
    add_transpose(g, 0, list(range(nd))[::-1] if perm is None else [int(p) for p in perm])


def _depth_space(to_space: bool) -> Callable[[Graph], None]:
    """DepthToSpace (CRD: PixelShuffle; DCR) and SpaceToDepth as their reshape-transpose-
    reshape definitions (the rearrangement is then recognized when a consumer needs it)."""

    def convert(g: Graph) -> None:
        src, shapes, ops = move(g, 0)
        if len(shapes[0]) != 4:
            raise g.error(f"expects a 4-D input, got {shapes[0]}")
        a = g.attrs()
        r = int(a.get("blocksize", 0))
        if r < 1:
            raise g.error(f"blocksize must be >= 1. Received: {r}")
        mode = a.get("mode", "DCR")
        if to_space and mode not in ("DCR", "CRD"):
            raise g.error(f"unknown mode {mode!r}")
        first, last = [], []
        for n, c, h, w in shapes:
            if to_space:
                if c % (r * r):
                    raise g.error(f"{c} channels are not divisible by blocksize**2 = {r * r}")
                cc = c // (r * r)
                first.append([n, r, r, cc, h, w] if mode == "DCR" else [n, cc, r, r, h, w])
                last.append([n, cc, h * r, w * r])
            else:
                if h % r or w % r:
                    raise g.error(f"H={h} and W={w} are not divisible by blocksize {r}")
                first.append([n, c, h // r, r, w // r, r])
                last.append([n, c * r * r, h // r, w // r])
        if to_space:
            perm = [0, 3, 4, 1, 5, 2] if mode == "DCR" else [0, 1, 4, 2, 5, 3]
        else:
            perm = [0, 3, 5, 1, 2, 4]
        first_t = [tuple(f) for f in first]
        last_t = [tuple(t) for t in last]
        steps = [("reshape", first_t), ("transpose", perm), ("reshape", last_t)]
        pend_move(g, src, [*ops, *steps], last_t)

    return convert


def _pool_args(g: Graph, x: str, a: Attrs) -> tuple[list[int], list[int], Any, list[int]]:
    if "kernel_shape" not in a:
        raise g.error("kernel_shape is missing")
    kernel = _ints(a.get("kernel_shape"), 2, 1, g, "kernel_shape (2-D pooling)")
    stride = _ints(a.get("strides"), 2, 1, g, "strides")
    dilation = _ints(a.get("dilations"), 2, 1, g, "dilations")
    pt, pl, pb, pr = _spatial_pads(g, a, g.shape(x), kernel, stride, dilation)
    if (pt, pl) != (pb, pr):
        raise g.error(f"asymmetric pads {[pt, pl, pb, pr]} (not supported)")
    return kernel, stride, (pt, pl), dilation


def _max_pool(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    a = g.attrs()
    kernel, stride, padding, dilation = _pool_args(g, x, a)
    ceil = bool(a.get("ceil_mode", 0))
    layer = g.layer(nn.MaxPool2d, tuple(kernel), tuple(stride), padding, tuple(dilation), ceil)
    g.emit(layer, [x])


def _average_pool(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    a = g.attrs()
    kernel, stride, padding, dilation = _pool_args(g, x, a)
    if dilation != [1, 1]:
        raise g.error(f"dilations {dilation} (not supported)")
    layer = g.layer(
        nn.AvgPool2d,
        tuple(kernel),
        tuple(stride),
        padding,
        ceil_mode=bool(a.get("ceil_mode", 0)),
        count_include_pad=bool(a.get("count_include_pad", 0)),
    )
    g.emit(layer, [x])


def _global_average_pool(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    g.emit(nn.GlobalAvgPool2d(), [x])


def _dropout(g: Graph) -> None:
    x = g.tensor(0)
    a = g.attrs()
    if g.opset >= 12:
        ratio = g.const(1, "ratio", required=False)
        training = g.const(2, "training_mode", required=False)
        if training is not None and bool(np.asarray(training).ravel()[0]):
            raise g.error("training_mode=True (only inference graphs are imported)")
    else:
        ratio = a.get("ratio")
    p = 0.5 if ratio is None else float_attr(float(np.asarray(ratio).ravel()[0]))
    g.emit(g.layer(nn.Dropout, p), [x])


def _softmax(cls: type) -> Callable[[Graph], None]:
    def convert(g: Graph) -> None:
        x = g.tensor(0)
        nd = len(g.shape(x))
        axis = int(g.attrs().get("axis", -1 if g.opset >= 13 else 1))
        if not -nd <= axis < nd:
            raise g.error(f"axis={axis} is out of range for {g.text(x)}")
        # before opset 13 the op normalizes over all dims from axis on
        if g.opset < 13 and axis % nd != nd - 1:
            raise g.error(f"axis={axis} before opset 13 normalizes several dims (not supported)")
        g.emit(g.layer(cls, axis), [x])

    return convert


def _simple(make: Callable[[Attrs], nn.Module]) -> Callable[[Graph], None]:
    def convert(g: Graph) -> None:
        x = g.tensor(0)
        g.emit(g.layer(make, g.attrs()), [x])

    return convert


def _hardsigmoid(a: Attrs) -> nn.Module:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if not (math.isclose(alpha, 1.0 / 6.0, rel_tol=1e-6) and beta == 0.5):
        raise ValueError(
            f"alpha={alpha}, beta={beta}: cnncore's Hardsigmoid is alpha=1/6, beta=0.5"
        )
    return nn.Hardsigmoid()


def _clip(g: Graph) -> None:
    x = g.tensor(0)
    a = g.attrs()
    if g.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo, hi = g.const(1, "min", required=False), g.const(2, "max", required=False)
    lo = None if lo is None else float(np.asarray(lo).ravel()[0])
    hi = None if hi is None else float(np.asarray(hi).ravel()[0])
    if lo == 0.0 and hi == 6.0:
        g.emit(nn.ReLU6(), [x])
    elif lo == 0.0 and (hi is None or hi == math.inf):
        g.emit(nn.ReLU(), [x])
    else:
        raise g.error(f"Clip to [{lo}, {hi}] (cnncore has ReLU: [0, inf), ReLU6: [0, 6])")


def _gelu(a: Attrs) -> nn.Module:
    return nn.GELU(a.get("approximate", "none"))


def _layer_norm(g: Graph) -> None:
    x = g.tensor(0)
    a = g.attrs()
    shape = g.shape(x)
    axis = int(a.get("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 1 <= axis < len(shape):
        raise g.error(f"axis={a.get('axis')} on {g.text(x)} (the batch cannot be normalized)")
    normalized = tuple(shape[axis:])
    scale = g.const(1, "scale")
    bias = g.const(2, "B", required=False)
    eps = float_attr(a.get("epsilon", 1e-5))
    try:  # (a broadcast view: sized by the tensor, whose sample size is bounded)
        scale = np.broadcast_to(scale, normalized)
        bias = None if bias is None else np.broadcast_to(bias, normalized)
    except ValueError:
        raise g.error(f"scale/B do not broadcast to the normalized shape {normalized}") from None
    layer = g.layer(nn.LayerNorm, normalized, eps, True, bias is not None, dtype=g.dtype)
    g.load_into(layer.weight.data, scale, "scale")
    if bias is not None:
        g.load_into(layer.bias.data, bias, "B")
    g.emit(layer, [x], share=True)


def _group_norm(g: Graph) -> None:
    x = g.tensor(0)
    a = g.attrs()
    shape = g.shape(x)
    groups = int(a.get("num_groups", 0))
    if len(shape) < 2 or groups < 1 or shape[1] % groups:
        raise g.error(f"num_groups={groups} does not divide the channels of {g.text(x)}")
    c = shape[1]
    scale, bias = g.const(1, "scale"), g.const(2, "bias")
    if g.opset < 21:  # opset 18: one scale and bias per group
        if scale.shape != (groups,) or bias.shape != (groups,):
            raise g.error(f"scale and bias must have shape ({groups},) at opset {g.opset}")
        scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
    _channel_constants(g, c, scale=scale, bias=bias)
    eps = float_attr(a.get("epsilon", 1e-5))
    layer = g.layer(nn.GroupNorm, groups, c, eps=eps, dtype=g.dtype)
    g.load_into(layer.weight.data, scale, "scale")
    g.load_into(layer.bias.data, bias, "bias")
    g.emit(layer, [x], share=True)


def _resize(g: Graph) -> None:
    x = g.tensor(0)
    _rank(g, x, (4,))
    a = g.attrs()
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise g.error(f"mode={mode!r} (cnncore's Upsample has nearest and bilinear)")
    if a.get("antialias", 0):
        raise g.error("antialias=1 (not supported)")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise g.error(f"keep_aspect_ratio_policy={a.get('keep_aspect_ratio_policy')!r}")
    if g.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
        ctm, nearest_mode, index = "asymmetric", "floor", 1
    else:
        ctm = a.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = a.get("nearest_mode", "round_prefer_floor")
        index = 2
        if ctm == "tf_crop_and_resize":
            raise g.error("coordinate_transformation_mode='tf_crop_and_resize' (not supported)")
    axes = a.get("axes")
    axes = [0, 1, 2, 3] if axes is None else [int(v) % 4 for v in axes]
    shapes = g.shapes(x)
    scales = g.const(index, "scales", required=False) if g._input_name(index) else None
    sizes = g.const_variants(index + 1, "sizes", required=False)
    if (scales is None or not np.size(scales)) == (sizes is None):
        raise g.error("exactly one of scales and sizes must be given")
    full = [1.0] * 4
    if sizes is None:
        values = [float(v) for v in np.ravel(scales)]
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise g.error(f"scales {values} must be positive and finite")
        if len(values) != len(axes):
            raise g.error(f"scales has {len(values)} values for axes {axes}")
        for ax, v in zip(axes, values, strict=True):
            full[ax] = v
        if full[:2] != [1.0, 1.0]:
            raise g.error(f"scales {full} resize the batch or channels (not supported)")
        spec = ResizeSpec(mode, ctm, nearest_mode, (full[2], full[3]), None)
        candidates = [dict(scale_factor=(float_attr(full[2]), float_attr(full[3])))]
    else:
        hw = None
        for shape, v in zip(shapes, sizes, strict=True):
            vals = [int(t) for t in np.ravel(v)]
            if len(vals) != len(axes):
                raise g.error(f"sizes has {len(vals)} values for axes {axes}")
            out = list(shape)
            for ax, t in zip(axes, vals, strict=True):
                out[ax] = t
            if out[:2] != list(shape[:2]) or min(out) < 1:
                raise g.error(f"sizes {vals} resize the batch or channels (not supported)")
            if hw is not None and hw != tuple(out[2:]):
                raise g.error("sizes depend on the batch size")
            hw = tuple(out[2:])
        spec = ResizeSpec(mode, ctm, nearest_mode, None, hw)
        candidates = [dict(size=hw)]
    kinds = (
        [("nearest", None), ("nearest-exact", None)]
        if mode == "nearest"
        else [("bilinear", None), ("bilinear", True)]
    )
    h, w = shapes[0][2:]
    for kwargs in candidates:
        for kind, corners in kinds:
            try:
                params = interpolate_params(
                    "Resize", kwargs.get("size"), kwargs.get("scale_factor"), kind, corners
                )
                geo = interpolate_geometry("Resize", (h, w), params)
            except ValueError:
                continue
            g.check_sizes([(1, shapes[0][1], *geo.out)])  # before any table is built
            if spec_matches(spec, geo, (h, w), g.dtype, strict=False):
                g.emit(g.layer(nn.Upsample, mode=kind, align_corners=corners, **kwargs), [x])
                return
    raise g.error(
        f"Resize(mode={mode!r}, coordinate_transformation_mode={ctm!r}, "
        f"nearest_mode={nearest_mode!r}) from {g.text(x)} computes other source positions "
        f"than PyTorch's interpolate (cnncore's Upsample) for any mode"
    )


def _identity(g: Graph) -> None:
    g.emit(nn.Identity(), [g.tensor(0)])


IMPORTERS: dict[str, Callable[[Graph], None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _binary("Add", nn.Add),
    "Mul": _binary("Mul", nn.Multiply),
    "Sum": _sum,
    "Concat": _concat,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "Relu": _simple(lambda a: nn.ReLU()),
    "LeakyRelu": _simple(lambda a: nn.LeakyReLU(float_attr(a.get("alpha", 0.01)))),
    "Sigmoid": _simple(lambda a: nn.Sigmoid()),
    "Tanh": _simple(lambda a: nn.Tanh()),
    "Elu": _simple(lambda a: nn.ELU(float_attr(a.get("alpha", 1.0)))),
    "HardSigmoid": _simple(_hardsigmoid),
    "HardSwish": _simple(lambda a: nn.Hardswish()),
    "Softplus": _simple(lambda a: nn.Softplus()),
    "Mish": _simple(lambda a: nn.Mish()),
    "Gelu": _simple(_gelu),
    "Clip": _clip,
    "Softmax": _softmax(nn.Softmax),
    "LogSoftmax": _softmax(nn.LogSoftmax),
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "Resize": _resize,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze_unsqueeze(True),
    "Unsqueeze": _squeeze_unsqueeze(False),
    "DepthToSpace": _depth_space(True),
    "SpaceToDepth": _depth_space(False),
    "Dropout": _dropout,
    "Identity": _identity,
}
"""ONNX op type -> converter ``fn(graph, node)`` (``Constant`` nodes are read as constants,
and nodes whose inputs are all constant are evaluated by ``_fold.FOLDERS``, before these)."""

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


def _graph_inputs(graph: Any, where: str, constants: set[str]) -> tuple[list[Any], np.dtype]:
    inputs = [i for i in graph.input if i.name not in constants]
    if not inputs or not len(graph.output):
        raise _bad(where, f"the graph has {len(inputs)} inputs and {len(graph.output)} outputs")
    dtypes = set()
    for x in inputs:
        tensor_type = x.type.tensor_type
        dtype = _FLOAT_TYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise _bad(where, f"the input {x.name!r} is not float32 or float64")
        dtypes.add(dtype)
        dims = list(tensor_type.shape.dim)
        if len(dims) < 2 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
            raise _bad(
                where,
                f"the input {x.name!r} must have a static shape beyond the batch dimension, "
                f"e.g. (N, 1, 28, 28)",
            )
    if len(dtypes) != 1:
        raise _bad(where, "the inputs have different float types")
    return inputs, dtypes.pop()


def _live(graph: Any) -> list[Any]:
    """The nodes some graph output depends on, in the graph's order."""
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(v in needed for v in node.output if v):
            live.append(node)
            needed.update(v for v in node.input if v)
    return live[::-1]


def _constlike(graph: Any, constants: set[str]) -> set[str]:
    """Values computed from constants alone (``Shape`` counts: the shapes are known)."""
    known = set(constants)
    for node in graph.node:
        if (
            node.op_type == "Constant"
            or node.op_type == "Shape"
            or (node.op_type in FOLDERS and all(v in known for v in node.input if v))
        ):
            known.update(v for v in node.output if v)
    return known


def _build(g: Graph, inputs: list[str], outputs: list[str], name: str | None) -> nn.Module:
    """A Sequential when the layers form a chain from the one input to the one output,
    else a graph model."""
    entries = g.entries
    layers = [e.layer for e in entries]
    chain = (
        len(inputs) == 1
        and len(outputs) == 1
        and len({id(layer) for layer in layers}) == len(layers)
        and entries[-1].output == outputs[0]
        and all(
            not e.multi and e.inputs == [inputs[0] if k == 0 else entries[k - 1].output]
            for k, e in enumerate(entries)
        )
    )
    if chain:
        model: nn.Module = nn.Sequential(*layers)
    else:
        nodes = {x: nn.Input(g.shape(x)[1:], name=g.input_names[x]) for x in inputs}
        for e in entries:
            args = [nodes[v] for v in e.inputs]
            nodes[e.output] = e.layer(args if e.multi else args[0])
        ins = [nodes[x] for x in inputs]
        outs = []
        for v in outputs:
            if v in inputs:  # an input given back: through an Identity layer
                layer = nn.Identity()
                g.name_layer(layer, f"{g.input_names[v]}_identity")
                outs.append(layer(nodes[v]))
            else:
                outs.append(nodes[v])
        model = nn.Model(ins if len(ins) > 1 else ins[0], outs if len(outs) > 1 else outs[0])
    if name is not None:
        model.name = name
    return model


def from_model_proto(proto: Any, where: str = "<ModelProto>") -> nn.Module:
    """The cnncore model of an ONNX ``ModelProto`` (see :func:`load`)."""
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
    arrays = {t.name: tensor_to_array(t, where) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            if len(node.output) != 1 or not node.output[0]:
                raise _bad(where, f"Constant node {node.name!r} must have one output")
            arrays[node.output[0]] = _constant_node(node, where)
    inputs, dtype = _graph_inputs(graph, where, set(arrays))
    dims = [list(x.type.tensor_type.shape.dim) for x in inputs]
    static = [d[0].dim_value for d in dims if d[0].HasField("dim_value") and d[0].dim_value > 0]
    batches = (static[0],) if static else (2, 3)
    g = Graph(where, opset, dtype, batches)
    for name, array in arrays.items():
        g.values[name] = Const([array] * len(batches))
    for x, d in zip(inputs, dims, strict=True):
        rest = tuple(v.dim_value for v in d[1:])
        g.values[x.name] = Tensor([(n, *rest) for n in batches])
        g.check_sizes(g.values[x.name].shapes)
        base = sanitize(x.name) or "input"
        name, k = base, 0
        while name in g.taken:
            k += 1
            name = f"{base}_{k}"
        g.taken.add(name)
        g.input_names[x.name] = name
    constlike = _constlike(graph, set(arrays))
    out_names = [o.name for o in graph.output]
    live = _live(graph)
    nodes: list[Any] = list(live)
    fused: dict[int, Any] = dict(fuse_activations(g, nodes, constlike, set(out_names)))
    fused.update(fuse_layer_norms(g, nodes, set(out_names)))
    in_fusion = {id(live[i]) for i, n in enumerate(nodes) if n is None or i in fused}

    def supported(n: Any) -> bool:
        if id(n) in in_fusion:
            return True
        if n.domain not in ("", "ai.onnx"):
            return False
        return (
            n.op_type in IMPORTERS
            or n.op_type == "Constant"
            or (
                n.op_type in FOLDERS
                and (n.op_type == "Shape" or all(v in constlike for v in n.input if v))
            )
        )

    unsupported = sorted(
        {
            str(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
            for n in graph.node
            if not supported(n)
        }
    )
    if unsupported:
        raise _bad(
            where,
            f"unsupported operators {unsupported} (cnncore imports {sorted(IMPORTERS)}, "
            f"recognizes subgraphs of {sorted(ELEMENTWISE)} with one tensor input as "
            f"activations, and evaluates {sorted(FOLDERS)} and Constant on constants)",
        )
    for n in nodes:
        if n is None:
            continue
        for v in n.input:
            if v and n.op_type != "Shape":
                g.uses[v] = g.uses.get(v, 0) + 1
    for v in out_names:
        g.uses[v] = g.uses.get(v, 0) + 1
    for i, node in enumerate(nodes):
        if node is None:
            continue
        g.node = node
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            continue
        try:
            if i in fused:
                layer, x = fused[i]
                x = g.resolve(x)
                if not isinstance(layer, nn.Module):  # (made when x's shape is known)
                    layer = layer(g, x)
                g.emit(layer, [x])
            elif not fold(g):
                if node.op_type not in IMPORTERS:
                    raise g.error("supported only on constant inputs")
                IMPORTERS[node.op_type](g)
        except (
            ValueError,
            TypeError,
            IndexError,
            OverflowError,
            ZeroDivisionError,
            np.exceptions.AxisError,
        ) as exc:  # a crafted value a converter did not expect: named after the node
            if isinstance(exc, ValueError) and str(exc).startswith("cnncore.onnx"):
                raise
            raise g.error(f"cannot convert it ({type(exc).__name__}: {exc})") from None
    g.node = None
    outputs = []
    for v in out_names:
        value = g.values.get(v)
        if isinstance(value, Const):
            raise _bad(where, f"the output {v!r} is a constant")
        outputs.append(g.resolve(v, "output"))
    if not g.entries:
        raise _bad(where, "the graph has no layers")
    input_names = [x.name for x in inputs]
    try:
        model = _build(g, input_names, outputs, sanitize(graph.name))
    except ValueError as exc:
        raise _bad(where, str(exc)) from None
    model.dtype = dtype
    # the graph's input shapes (batch 1): what summary() shows and `cnncore predict` feeds
    shapes = [(1, *g.shape(x)[1:]) for x in input_names]
    model.onnx_input_shape = shapes[0] if len(shapes) == 1 else shapes
    if isinstance(model, nn.Sequential):
        model._input_shape = shapes[0]
    return model.eval()


def load(path: Any) -> nn.Module:
    """Import the ONNX model at ``path`` as a cnncore model in eval mode: a
    :class:`~cnncore.nn.Sequential` when the graph is a chain of layers, else a graph model
    (:class:`~cnncore.nn.Model`, with the graph's inputs and outputs in order).

    The operators: Conv (a Pad in front folded in), ConvTranspose, Gemm, MatMul (+ Add of a
    bias), BatchNormalization, InstanceNormalization, LayerNormalization,
    GroupNormalization (and PyTorch's InstanceNormalization form of GroupNorm), Relu,
    LeakyRelu, Sigmoid, Tanh, Elu, HardSigmoid, HardSwish, Softplus, Mish, Gelu, Clip
    (ReLU, ReLU6), Softmax, LogSoftmax, MaxPool, AveragePool, GlobalAveragePool, Resize
    (nearest and linear, when a mode of cnncore's Upsample computes the same positions),
    Flatten, Reshape, Transpose, Squeeze, Unsqueeze, DepthToSpace, SpaceToDepth (as far as
    they are flattens, PixelShuffle or PixelUnshuffle), Add, Mul, Sum, Concat of tensors,
    Dropout, Identity; subgraphs of elementwise operators computing an activation (GELU,
    SiLU, Mish, Hardswish, Softplus, ...); constant shape arithmetic, evaluated.  Inputs
    are float32 or float64 with static dimensions beyond the batch -- what
    ``torch.onnx.export`` writes for CNNs (residual blocks and other branching graphs
    included), and everything :func:`cnncore.onnx.export` writes except the exact
    stand-ins it uses where ONNX has no operator (see its Notes).  Layers are named after
    the nodes computing them (so an exported graph model comes back with its layer names
    and ``state_dict`` keys); weights are copied; ``num_batches_tracked`` (not in ONNX) is
    0.  The model's ``onnx_input_shape`` is the graph's input shape with batch 1 (a list
    of them for several inputs).

    Raises
    ------
    ValueError
        Naming the file: a file that is not an ONNX model (truncated, corrupted, crafted),
        external tensor data, unsupported operators (all of them listed in one message), or
        attributes cnncore's layers cannot express (naming the node).
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
