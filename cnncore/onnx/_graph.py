"""The state of an ONNX import (see :mod:`cnncore.onnx._import`): the kinds of values --
constants (one array per probe batch size), tensors (a shape per probe batch size) and
pending values an operator may still absorb -- the layer calls found so far, and pending
data movement turned into the layers it is (recognized on the element indices)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from ..nn.module import check_name
from ._proto import require_onnx, tensor_to_array

__all__ = [
    "Graph",
    "Attrs",
    "Const",
    "Tensor",
    "Pending",
    "Entry",
    "MAX_FOLDED_ELEMENTS",
    "MAX_SAMPLE_ELEMENTS",
    "resolve_reshape",
    "move",
    "pend_move",
    "add_reshape",
    "add_transpose",
    "materialize",
    "sanitize",
]

#: The most elements a folded constant (or an analyzed rearrangement) may have.
MAX_FOLDED_ELEMENTS = 1 << 20

#: The most elements one sample of any tensor of an imported graph may have (1 GiB of
#: float32): a crafted shape beyond it is refused before anything is sized by it.
MAX_SAMPLE_ELEMENTS = 1 << 28


class Const:
    """A constant: one array per probe batch size (the same object when it does not
    depend on the batch size)."""

    __slots__ = ("arrays",)

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays


class Tensor:
    """A graph input or a layer's output: its shape per probe batch size."""

    __slots__ = ("shapes",)

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        self.shapes = shapes


class Pending:
    """A value that is not a layer's output yet.  ``kind``: ``"pad"`` (``data``: mode and
    (top, left, bottom, right) pads of ``src``), ``"move"`` (``data``: the list of
    reshapes -- one target per probe batch size -- and transposes applied to ``src``),
    ``"groups"`` (``src`` normalized per group: ``data`` = (G, eps, scale, bias))."""

    __slots__ = ("kind", "src", "shapes", "data", "node")

    def __init__(
        self, kind: str, src: str, shapes: list[tuple[int, ...]], data: Any, node: Any
    ) -> None:
        self.kind = kind
        self.src = src
        self.shapes = shapes
        self.data = data
        self.node = node  # the node that made it (errors name it, layers are named after it)


class Entry:
    """One layer call of the imported graph."""

    __slots__ = ("layer", "inputs", "multi", "output", "key")

    def __init__(
        self, layer: nn.Module, inputs: list[str], multi: bool, output: str, key: Any = None
    ) -> None:
        self.layer = layer
        self.inputs = inputs
        self.multi = multi
        self.output = output
        self.key = key  # the share key of its layer (None: not shareable)


def sanitize(name: Any) -> str | None:
    """An ONNX name as a layer name (letters, digits, ``_``, ``-``), None if nothing is left
    (a name that is not valid UTF-8 comes as bytes from protobuf)."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_")[:128]
    return s or None


class Graph:
    """The state of an import (see the module docstring)."""

    def __init__(self, where: str, opset: int, dtype: np.dtype, batches: tuple[int, ...]) -> None:
        self.where = where
        self.opset = opset
        self.dtype = dtype
        self.batches = batches  # the batch sizes values are probed with (dynamic: two)
        self.values: dict[str, Any] = {}
        self.uses: dict[str, int] = {}  # consumers of each value (graph outputs count)
        self.entries: list[Entry] = []
        self.producer: dict[str, Entry] = {}
        self.layer_uses: dict[int, int] = {}
        self.shared: dict[Any, nn.Module] = {}  # share key -> layer
        self.taken: set[str] = set()  # layer and input names
        self.input_names: dict[str, str] = {}  # graph input -> nn.Input name
        self.aliases: dict[str, str] = {}  # a value that is another (an identity movement)
        self.node: Any = None

    # -- errors and attributes ---------------------------------------------------------------
    def error(self, why: str) -> ValueError:
        node = self.node
        if node is None:
            return ValueError(f"cnncore.onnx.load(): {self.where}: {why}")
        label = f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"
        return ValueError(f"cnncore.onnx.load(): {self.where}: {label}: {why}")

    def attrs(self) -> Attrs:
        """The node's attributes, each checked to have its ONNX type when it is read."""
        return Attrs(self)

    # -- reading inputs ----------------------------------------------------------------------
    def _input_name(self, index: int) -> str:
        inputs = self.node.input
        return inputs[index] if index < len(inputs) else ""

    def const_variants(self, index: int, what: str, required: bool = True) -> list[Any] | None:
        """The node's input ``index`` as a constant, one array per probe batch size."""
        name = self._input_name(index)
        if not name:
            if required:
                raise self.error(f"the {what} input is missing")
            return None
        value = self.values.get(name)
        if not isinstance(value, Const):
            raise self.error(
                f"the {what} ({name!r}) must be a constant (an initializer or a Constant node)"
            )
        return value.arrays

    def const(self, index: int, what: str, required: bool = True) -> np.ndarray | None:
        """The node's input ``index`` as a constant array (None if absent and optional)."""
        arrays = self.const_variants(index, what, required)
        if arrays is None:
            return None
        if any(a is not arrays[0] and not np.array_equal(a, arrays[0]) for a in arrays[1:]):
            raise self.error(f"the {what} depends on the batch size (not supported)")
        return arrays[0]

    def is_const(self, index: int) -> bool:
        return isinstance(self.values.get(self._input_name(index)), Const)

    def pending(self, index: int, kind: str) -> Pending | None:
        """The node's input ``index`` if it is a pending value of ``kind`` that only this
        node reads (the node absorbs it), else None."""
        name = self._input_name(index)
        value = self.values.get(name)
        if isinstance(value, Pending) and value.kind == kind and self.uses.get(name, 0) == 1:
            return value
        return None

    def tensor(self, index: int = 0, what: str = "input") -> str:
        """The name of the node's tensor input ``index`` (a pending value becomes the
        layers it stands for first)."""
        name = self._input_name(index)
        if not name:
            raise self.error(f"the {what} is missing")
        return self.resolve(name, what)

    def resolve(self, name: str, what: str = "input") -> str:
        value = self.values.get(name)
        if isinstance(value, Const):
            raise self.error(f"{what} {name!r} is a constant where a tensor is expected")
        if value is None:
            raise self.error(f"{what} {name!r} is not computed by any node before it")
        if isinstance(value, Pending):
            return materialize(self, name, value)
        return name

    def shapes(self, name: str) -> list[tuple[int, ...]]:
        value = self.values[name]
        return value.shapes

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of a tensor at the first probe batch size."""
        return self.values[name].shapes[0]

    def text(self, name: str) -> str:
        return str(("N", *self.shape(name)[1:]))

    # -- adding layers -----------------------------------------------------------------------
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

    def check_sizes(self, shapes: list[tuple[int, ...]]) -> None:
        """ValueError if a sample of a tensor of ``shapes`` has more than
        :data:`MAX_SAMPLE_ELEMENTS` elements."""
        for shape in shapes:
            if math.prod(shape[1:]) > MAX_SAMPLE_ELEMENTS:
                raise self.error(
                    f"a tensor of shape {('N', *shape[1:])} has more than "
                    f"{MAX_SAMPLE_ELEMENTS} elements per sample (not supported)"
                )

    def check_extra_outputs(self) -> None:
        for name in list(self.node.output)[1:]:
            if name and self.uses.get(name, 0):
                raise self.error(f"its extra output {name!r} is used (only the first may be)")

    def name_layer(self, layer: nn.Module, hint: str | None) -> None:
        """Name ``layer`` after ``hint`` (an ONNX node name), unique among the layers."""
        base = sanitize(hint or "") or layer.name
        name, n = base, 0
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"[-128:]
        self.taken.discard(layer.name)
        layer.name = check_name(name, "cnncore.onnx.load()")
        self.taken.add(name)

    def emit(
        self,
        layer: nn.Module,
        inputs: list[str],
        multi: bool = False,
        output: str | None = None,
        name: str | None = None,
        share: bool = False,
    ) -> str:
        """Add ``layer`` called on the tensors ``inputs`` (a list for a merge layer); its
        output is the node's first output (or ``output``).  ``share``: the layer's
        parameters are the node's constant inputs -- a node with the same constants,
        attributes and input shape calls the same layer."""
        if output is None:
            self.check_extra_outputs()
            output = self.node.output[0]
        key = None
        if share:
            key = (
                self.node.op_type,
                tuple(self.node.input[1:]),
                tuple(a.SerializeToString() for a in self.node.attribute),
                tuple(self.shape(x) for x in inputs),
            )
            layer = self.shared.setdefault(key, layer)
        shapes = []
        for k in range(len(self.batches)):
            args = [self.shapes(x)[k] for x in inputs]
            try:
                shapes.append(layer.output_shape(args if multi else args[0]))
            except (ValueError, TypeError, IndexError) as exc:
                text = ", ".join(self.text(x) for x in inputs)
                raise self.error(f"does not accept an input of shape {text} ({exc})") from None
        if id(layer) not in self.layer_uses:
            self.name_layer(layer, name if name is not None else self.node.name)
        self.layer_uses[id(layer)] = self.layer_uses.get(id(layer), 0) + 1
        entry = Entry(layer, list(inputs), multi, output, key)
        self.entries.append(entry)
        self.producer[output] = entry
        self.check_sizes(shapes)
        self.values[output] = Tensor(shapes)
        return output

    def replace_layer(self, entry: Entry, layer: nn.Module) -> None:
        """Put ``layer`` in place of ``entry``'s (absorbing a following operator); a layer
        the graph calls elsewhere too stays there, unchanged.  ``layer`` may be one another
        call uses already (the same absorbed constant: still one shared layer)."""
        old = entry.layer
        self.layer_uses[id(old)] -= 1
        if not self.layer_uses[id(old)]:
            if id(layer) not in self.layer_uses:
                layer.name = old.name
            self.shared = {k: v for k, v in self.shared.items() if v is not old}
        self.layer_uses[id(layer)] = self.layer_uses.get(id(layer), 0) + 1
        entry.layer = layer

    def absorbable(self, name: str) -> Entry | None:
        """The entry computing tensor ``name`` if only the current node reads it (so a
        following operator may be folded into its layer -- a copy of it if the layer is
        called elsewhere too, see :meth:`shared_layer`)."""
        entry = self.producer.get(name)
        if entry is None or self.uses.get(name, 0) != 1:
            return None
        return entry

    def shared_layer(self, entry: Entry) -> bool:
        return self.layer_uses[id(entry.layer)] > 1

    def rename(self, entry: Entry) -> None:
        """Name ``entry``'s layer after the current node (the node that completes it)."""
        self.taken.discard(entry.layer.name)
        self.name_layer(entry.layer, self.node.name)


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
            "blocksize",
            "num_groups",
            "antialias",
            "exclude_outside",
            "stash_type",
        ),
        ("INT",),
    ),
    **dict.fromkeys(
        (
            "pads",
            "strides",
            "dilations",
            "kernel_shape",
            "perm",
            "axes",
            "output_padding",
            "output_shape",
        ),
        ("INTS",),
    ),
    **dict.fromkeys(
        ("alpha", "beta", "epsilon", "momentum", "ratio", "cubic_coeff_a", "extrapolation_value"),
        ("FLOAT",),
    ),
    **dict.fromkeys(
        (
            "auto_pad",
            "mode",
            "coordinate_transformation_mode",
            "nearest_mode",
            "approximate",
            "keep_aspect_ratio_policy",
        ),
        ("STRING",),
    ),
    "value": ("FLOAT", "TENSOR"),  # Pad before opset 11; ConstantOfShape
}


class Attrs:
    """A node's attributes by name; ``get`` checks the type against :data:`_ATTR_TYPES`, so
    a corrupted attribute is a ValueError naming the node, not a crash in a converter."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.protos = {a.name: a for a in g.node.attribute}

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
            raise self.g.error(
                f"attribute {name!r} has type {kind}, expected {' or '.join(allowed)}"
            )
        if kind == "TENSOR":
            return tensor_to_array(a.t, self.g.where)
        if kind == "STRING":
            return a.s.decode("utf-8", errors="replace")
        return onnx.helper.get_attribute_value(a)


# --------------------------------------------------------------------------------------------
# Pending values: data movement, and what layers it is
# --------------------------------------------------------------------------------------------


def resolve_reshape(shape: tuple[int, ...], target: list[int]) -> list[int] | None:
    """``target`` with ONNX's ``0`` (copy the dim) and ``-1`` (infer it) resolved against
    ``shape``; None if impossible."""
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


def move(g: Graph, index: int) -> tuple[str, list[tuple[int, ...]], list[Any]]:
    """The source tensor, its current shapes and the movement ops so far of the node's
    input ``index`` (a tensor: no ops; a pending movement only this node reads: its ops)."""
    name = g._input_name(index)
    value = g.values.get(name)
    if isinstance(value, Pending) and value.kind == "move" and g.uses.get(name, 0) == 1:
        return value.src, value.shapes, list(value.data)
    x = g.tensor(index)
    return x, g.shapes(x), []


def pend_move(g: Graph, src: str, ops: list[Any], shapes: list[tuple[int, ...]]) -> None:
    g.check_extra_outputs()
    g.check_sizes(shapes)
    g.values[g.node.output[0]] = Pending("move", src, shapes, ops, g.node)


def add_reshape(g: Graph, index: int, targets: list[list[int]]) -> None:
    """Record a reshape of input ``index`` to ``targets`` (one per probe batch size)."""
    src, shapes, ops = move(g, index)
    resolved = []
    for shape, target in zip(shapes, targets, strict=True):
        r = resolve_reshape(shape, target)
        if r is None:
            raise g.error(f"cannot reshape {g.text(src)} to {target}")
        resolved.append(tuple(r))
    pend_move(g, src, [*ops, ("reshape", resolved)], resolved)


def add_transpose(g: Graph, index: int, perm: list[int]) -> None:
    src, shapes, ops = move(g, index)
    if sorted(perm) != list(range(len(shapes[0]))):
        raise g.error(f"perm {perm} is not a permutation of {len(shapes[0])} axes")
    new = [tuple(s[p] for p in perm) for s in shapes]
    pend_move(g, src, [*ops, ("transpose", list(perm))], new)


def _apply_moves(x: np.ndarray, ops: list[Any], k: int) -> np.ndarray:
    for op, arg in ops:
        x = np.reshape(x, arg[k]) if op == "reshape" else np.transpose(x, arg)
    return x


def _flatten_layers(g: Graph, src: str, finals: list[tuple[int, ...]]) -> list[nn.Module]:
    """One or two Flatten layers that reshape ``src`` to ``finals`` at every probe batch
    size; ValueError if none do."""
    shapes = g.shapes(src)
    nd = len(shapes[0])

    def ranges(n: int) -> list[tuple[int, int]]:
        return [(s, e) for s in range(n) for e in range(s + 1, n)]

    def out(layers: list[nn.Module], shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in layers:
            shape = layer.output_shape(shape)
        return tuple(shape)

    def make(s: int, e: int, n: int) -> nn.Module:
        return nn.Flatten(s, -1 if e == n - 1 else e)

    for s, e in ranges(nd):
        first = [make(s, e, nd)]
        if all(out(first, a) == b for a, b in zip(shapes, finals, strict=True)):
            return first
    for s, e in ranges(nd):
        for s2, e2 in ranges(nd - (e - s)):
            pair = [make(s, e, nd), make(s2, e2, nd - (e - s))]
            if all(out(pair, a) == b for a, b in zip(shapes, finals, strict=True)):
                return pair
    raise g.error(
        f"reshaping {g.text(src)} to {('N', *finals[0][1:])} is not a flatten of consecutive "
        f"dimensions (cnncore has no general reshape layer)"
    )


def _rearrange_layer(g: Graph, src: str, p: Pending) -> list[nn.Module]:
    """The layers computing the pending movement ``p`` of ``src``: checked on the element
    indices (an arange) at the first probe batch size, and on the shapes at all."""
    shapes = g.shapes(src)
    numel = math.prod(shapes[0])
    if numel > MAX_FOLDED_ELEMENTS:
        raise g.error(
            f"a data rearrangement of {g.text(src)} is too large to analyze (more than "
            f"{MAX_FOLDED_ELEMENTS} elements at batch size {g.batches[0]})"
        )
    index = np.arange(numel, dtype=np.float64).reshape(shapes[0])
    moved = _apply_moves(index, p.data, 0)
    if np.array_equal(moved.ravel(), index.ravel()):  # no element moves: a pure reshape
        if all(a == b for a, b in zip(shapes, p.shapes, strict=True)):
            return []
        return _flatten_layers(g, src, p.shapes)
    if len(shapes[0]) >= 3:
        c, h, w = shapes[0][-3:]
        for r in range(2, max(math.isqrt(c), min(h, w)) + 1):
            for cls in (nn.PixelShuffle, nn.PixelUnshuffle):
                layer = cls(r)
                try:
                    outs = [layer.output_shape(s) for s in shapes]
                except ValueError:
                    continue
                if outs == list(p.shapes) and np.array_equal(layer(index), moved):
                    return [layer]
    ops = " -> ".join(op for op, _ in p.data)
    raise g.error(
        f"a data rearrangement ({ops}) of {g.text(src)} to {('N', *p.shapes[0][1:])} that no "
        f"cnncore layer computes (it has Flatten, PixelShuffle, PixelUnshuffle)"
    )


def materialize(g: Graph, name: str, p: Pending) -> str:
    """Turn the pending value ``name`` into layers; return the tensor it is.  Errors name
    the node that made the value."""
    reader, g.node = g.node, p.node
    try:
        if p.kind == "pad":
            what = f"{reader.op_type} node" if reader is not None else "graph output"
            raise g.error(f"a Pad is followed by something other than a Conv (a {what})")
        if p.kind == "groups":
            raise g.error(
                "the InstanceNormalization of a tensor reshaped to groups must be reshaped "
                "back to the input's shape (a GroupNorm)"
            )
        layers = _rearrange_layer(g, p.src, p)
        x = p.src
        for k, layer in enumerate(layers):
            out = name if k == len(layers) - 1 else f"{name}/{k}"
            x = g.emit(layer, [x], output=out, name=p.node.name)
    finally:
        g.node = reader
    if not layers:  # the identity: the value is its source
        g.values[name] = g.values[p.src]
        g.aliases[name] = p.src
        return p.src
    return x
