"""What an ONNX import evaluates instead of converting (see :mod:`cnncore.onnx._import`):
:data:`FOLDERS` compute constants (shape arithmetic), and :func:`fuse_activations`
recognizes subgraphs of :data:`ELEMENTWISE` operators as the activation layer they compute
by evaluating them on a grid of numbers, and :func:`fuse_layer_norms` the formula of a
LayerNorm (how exporters write it before opset 17)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import nn
from ._graph import MAX_FOLDED_ELEMENTS, Attrs, Const, Graph, Pending, Tensor, resolve_reshape

__all__ = [
    "FOLDERS",
    "ELEMENTWISE",
    "ACTIVATIONS",
    "fold",
    "fuse_activations",
    "fuse_layer_norms",
]


# --------------------------------------------------------------------------------------------
# Constant folding: shape arithmetic exporters leave in the graph (PyTorch's exporter
# computes a Resize's sizes, a GroupNorm's shape, a reflect Pad's pads with such nodes)
# --------------------------------------------------------------------------------------------


def _fold_numel(g: Graph, shape: Any) -> tuple[int, ...]:
    shape = tuple(int(d) for d in np.asarray(shape).ravel())
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED_ELEMENTS:
        raise g.error(f"a constant of shape {shape} (more than {MAX_FOLDED_ELEMENTS} elements)")
    return shape


def _axes(g: Graph, a: Attrs, index: int) -> list[int]:
    axes = a.get("axes") if g.opset < 13 else g.const(index, "axes", required=False)
    return [] if axes is None else [int(v) for v in np.asarray(axes).ravel()]


def _fold_shape(g: Graph, a: Attrs, x: Any) -> np.ndarray:
    shape = np.array(x.shape if isinstance(x, np.ndarray) else x, np.int64)
    nd = len(shape)
    start, end = int(a.get("start", 0)), a.get("end")
    return shape[start : nd if end is None else int(end)]


def _fold_slice(g: Graph, a: Attrs, x: Any, *args: Any) -> np.ndarray:
    if g.opset < 10:  # starts, ends, axes as attributes
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    else:  # as inputs: data, starts, ends[, axes[, steps]]
        starts, ends, axes, steps = (*args, None, None)[:4]
    starts, ends = np.ravel(starts), np.ravel(ends)
    axes = range(len(starts)) if axes is None else np.ravel(axes)
    steps = [1] * len(starts) if steps is None else np.ravel(steps)
    index = [slice(None)] * np.ndim(x)
    for ax, b, e, st in zip(axes, starts, ends, steps, strict=True):
        if int(st) == 0:
            raise g.error("Slice with a step of 0")
        index[int(ax)] = slice(int(b), int(e), int(st))
    return np.asarray(x)[tuple(index)]


def _fold_gather(g: Graph, a: Attrs, x: Any, idx: Any) -> np.ndarray:
    x, idx = np.asarray(x), np.asarray(idx, dtype=np.int64)
    axis = int(a.get("axis", 0))
    _fold_numel(g, (*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]) if x.ndim else ())
    return np.take(x, idx, axis=axis)


def _fold_cast(g: Graph, a: Attrs, x: Any) -> np.ndarray:
    from ._proto import _dtype_table

    to = a.get("to")
    if to not in _dtype_table():
        raise g.error(f"Cast to data type {to} (not supported)")
    return np.asarray(x).astype(_dtype_table()[to][0])


def _fold_constant_of_shape(g: Graph, a: Attrs, shape: Any) -> np.ndarray:
    value = a.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).ravel()[:1]
    return np.full(_fold_numel(g, shape), value[0] if value.size else 0, dtype=value.dtype)


def _fold_reshape(g: Graph, a: Attrs, x: Any, shape: Any) -> np.ndarray:
    target = [int(t) for t in np.ravel(shape)]
    resolved = resolve_reshape(np.shape(x), target)
    if resolved is None:
        raise g.error(f"cannot reshape a constant of shape {np.shape(x)} to {target}")
    return np.reshape(x, resolved)


def _fold_unsqueeze(g: Graph, a: Attrs, x: Any, *rest: Any) -> np.ndarray:
    x = np.asarray(x)
    axes = _axes(g, a, 1)
    for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
        x = np.expand_dims(x, ax)
    return x


def _fold_squeeze(g: Graph, a: Attrs, x: Any, *rest: Any) -> np.ndarray:
    x = np.asarray(x)
    axes = _axes(g, a, 1)
    return np.squeeze(x, axis=tuple(v % x.ndim for v in axes) if axes else None)


def _fold_div(g: Graph, a: Attrs, x: Any, y: Any) -> np.ndarray:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":  # integer division truncates
        if np.any(y == 0):
            raise g.error("integer division by zero")
        return (np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))).astype(np.result_type(x, y))
    return x / y


def _arith(fn: Callable[..., Any]) -> Callable[..., np.ndarray]:
    def fold(g: Graph, a: Attrs, *xs: Any) -> np.ndarray:
        arrays = [np.asarray(x) for x in xs]
        _fold_numel(g, np.broadcast_shapes(*(x.shape for x in arrays)))
        return np.asarray(fn(*arrays))

    return fold


FOLDERS: dict[str, Callable[..., np.ndarray]] = {
    "Shape": _fold_shape,
    "Slice": _fold_slice,
    "Gather": _fold_gather,
    "Cast": _fold_cast,
    "ConstantOfShape": _fold_constant_of_shape,
    "Reshape": _fold_reshape,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": lambda g, a, *xs: np.concatenate([np.atleast_1d(x) for x in xs], int(a.get("axis"))),
    "Transpose": lambda g, a, x: np.transpose(x, a.get("perm")),
    "Identity": lambda g, a, x: np.asarray(x),
    "Add": _arith(np.add),
    "Sub": _arith(np.subtract),
    "Mul": _arith(np.multiply),
    "Div": _fold_div,
    "Neg": _arith(np.negative),
    "Equal": _arith(np.equal),
    "Where": _arith(np.where),
}
"""Op type -> ``fn(graph, attrs, *input_arrays)`` evaluating a node whose inputs are all
constants (``Shape`` also of a tensor: its shape, once per probe batch size)."""


def fold(g: Graph) -> bool:
    """Evaluate the current node with NumPy if it is foldable; True if it was."""
    node = g.node
    fn = FOLDERS.get(node.op_type)
    if fn is None:
        return False
    names = list(node.input)
    values = [g.values.get(n) if n else None for n in names]
    if not names or not names[0]:
        return False
    if node.op_type == "Shape" and isinstance(values[0], (Tensor, Pending)):
        variants = [[s] for s in values[0].shapes]
    elif all(not n or isinstance(v, Const) for n, v in zip(names, values, strict=True)):
        count = len(g.batches)
        variants = [[None if v is None else v.arrays[k] for v in values] for k in range(count)]
    else:
        return False
    if len(node.output) != 1 or not node.output[0]:
        raise g.error("a folded node must have one output")
    a = g.attrs()
    results: list[np.ndarray] = []
    try:
        for k, args in enumerate(variants):
            if k and all(x is y for x, y in zip(args, variants[0], strict=True)):
                results.append(results[0])  # the same inputs: the same value
            else:
                results.append(np.asarray(fn(g, a, *args)))
    except (
        ValueError,
        TypeError,
        IndexError,
        OverflowError,
        ZeroDivisionError,
        np.exceptions.AxisError,
    ) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("cnncore.onnx"):
            raise
        raise g.error(f"cannot evaluate it on its constant inputs ({exc})") from None
    g.values[node.output[0]] = Const(results)
    return True


# --------------------------------------------------------------------------------------------
# Activations written as subgraphs of elementwise operators
# --------------------------------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _clip_eval(a: dict[str, Any], x: np.ndarray, lo: Any = None, hi: Any = None) -> np.ndarray:
    lo = a.get("min", -np.inf) if lo is None else lo
    hi = a.get("max", np.inf) if hi is None else hi
    return np.clip(x, lo, hi)


def _gelu_eval(a: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


#: Elementwise op -> ``fn(attributes, *float64 arrays)`` (absent optional inputs: None):
#: what the activation matcher evaluates.
ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: x / y,
    "Pow": lambda a, x, y: np.power(x, y),
    "Neg": lambda a, x: -x,
    "Abs": lambda a, x: np.abs(x),
    "Sqrt": lambda a, x: np.sqrt(x),
    "Exp": lambda a, x: np.exp(x),
    "Log": lambda a, x: np.log(x),
    "Reciprocal": lambda a, x: 1.0 / x,
    "Erf": lambda a, x: _erf(x),
    "Tanh": lambda a, x: np.tanh(x),
    "Sigmoid": lambda a, x: _sigmoid(x),
    "Softplus": lambda a, x: np.logaddexp(0.0, x),
    "Softsign": lambda a, x: x / (1.0 + np.abs(x)),
    "Relu": lambda a, x: np.maximum(x, 0.0),
    "Elu": lambda a, x: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "LeakyRelu": lambda a, x: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "HardSigmoid": lambda a, x: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda a, x: x * np.clip(x / 6.0 + 0.5, 0, 1),
    "Mish": lambda a, x: x * np.tanh(np.logaddexp(0.0, x)),
    "Gelu": _gelu_eval,
    "Clip": _clip_eval,
    "Min": lambda a, *xs: np.minimum.reduce(xs),
    "Max": lambda a, *xs: np.maximum.reduce(xs),
    "Where": lambda a, c, x, y: np.where(c, x, y),
    "Greater": lambda a, x, y: x > y,
    "Less": lambda a, x, y: x < y,
    "GreaterOrEqual": lambda a, x, y: x >= y,
    "LessOrEqual": lambda a, x, y: x <= y,
}

#: The points an elementwise subgraph is evaluated at to recognize its activation.
_PROBE = np.concatenate(
    [np.linspace(-8.0, 8.0, 1601), [-60.0, -30.0, -21.0, -19.0, 19.0, 21.0, 30.0, 60.0]]
)

#: Activations recognized from subgraphs (with the subgraph's scalar constants as
#: candidate parameters: ``fn(constants) -> layers``).
ACTIVATIONS: list[Callable[[list[float]], list[nn.Module]]] = [
    lambda c: [nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Mish(), nn.Hardswish()],
    lambda c: [nn.Hardsigmoid(), nn.ReLU6(), nn.Softplus(), nn.ReLU(), nn.Sigmoid(), nn.Tanh()],
    lambda c: [nn.ELU(v) for v in c if math.isfinite(v)],
    lambda c: [nn.LeakyReLU(v) for v in c if 0.0 <= v <= 1.0],
    lambda c: [
        nn.Softplus(b, t)
        for b in {1.0, *c}
        for t in {20.0, *c}
        if b and math.isfinite(b) and not math.isnan(t)
    ],
]


def _matching_activation(values: np.ndarray, constants: list[float]) -> nn.Module | None:
    """The first activation of :data:`ACTIVATIONS` whose forward is ``values`` on
    :data:`_PROBE` (1e-6 relative)."""
    if values.shape != _PROBE.shape or not np.all(np.isfinite(values)):
        return None
    for make in ACTIVATIONS:
        try:
            layers = make(constants)
        except (ValueError, TypeError):
            continue
        for layer in layers:
            try:
                with np.errstate(all="ignore"):
                    want = np.asarray(layer.eval()(_PROBE.copy()), np.float64)
            except (ValueError, TypeError):
                continue
            if np.allclose(values, want, rtol=1e-6, atol=1e-6):
                return layer
    return None


#: Largest elementwise subgraph the matcher considers, and the most subgraphs it evaluates
#: in one import (beyond: the operators are converted one by one).
MAX_REGION = 24
MAX_EVALUATIONS = 2000


def fuse_activations(
    g: Graph, nodes: list[Any], constlike: set[str], outputs: set[str]
) -> dict[int, tuple[nn.Module, str]]:
    """Recognize subgraphs of :data:`ELEMENTWISE` operators with one tensor input as
    activations: {index of the subgraph's last node: (layer, its input)}; the other nodes of
    each subgraph are dropped from ``nodes`` (set to None)."""
    producer = {v: i for i, n in enumerate(nodes) for v in n.output if v}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for v in n.input:
            consumers.setdefault(v, []).append(i)

    def scalar(v: str) -> float | None:
        value = g.values.get(v)
        if isinstance(value, Const) and value.arrays[0].size == 1:
            return float(np.asarray(value.arrays[0], np.float64).ravel()[0])
        return None

    def elementwise(i: int) -> bool:
        n = nodes[i]
        if n is None or n.domain not in ("", "ai.onnx") or n.op_type not in ELEMENTWISE:
            return False
        if len(n.output) != 1:
            return False
        tensors = [v for v in n.input if v and scalar(v) is None]
        return bool(tensors) and not any(v in constlike for v in tensors)

    claimed: set[int] = set()
    fused: dict[int, tuple[nn.Module, str]] = {}
    budget = [MAX_EVALUATIONS]

    def region(root: int, stop: str | None) -> tuple[set[int], set[str]] | None:
        members, external, stack = {root}, set(), [root]
        while stack:
            for v in nodes[stack.pop()].input:
                if not v or scalar(v) is not None:
                    continue
                p = producer.get(v)
                if v == stop or p is None or p in claimed or not elementwise(p):
                    external.add(v)
                elif p not in members:
                    if len(members) >= MAX_REGION:
                        return None
                    members.add(p)
                    stack.append(p)
        return members, external

    def evaluate(members: set[int], x: str) -> tuple[np.ndarray, list[float]] | None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        env: dict[str, Any] = {x: _PROBE}
        constants: list[float] = []
        saved = g.node
        try:
            for i in sorted(members):
                n = nodes[i]
                args = []
                for v in n.input:
                    s = scalar(v) if v else None
                    if s is not None:
                        constants.append(s)
                    args.append(None if not v else (s if s is not None else env[v]))
                g.node = n
                attrs = Attrs(g)
                a = {k: attrs.get(k) for k in attrs.protos}
                with np.errstate(all="ignore"):
                    env[n.output[0]] = np.asarray(ELEMENTWISE[n.op_type](a, *args), np.float64)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, ZeroDivisionError):
            return None
        finally:
            g.node = saved
        # (the first few distinct constants are the candidate parameters)
        return env[nodes[max(members)].output[0]], sorted(set(constants))[:8]

    for root in range(len(nodes) - 1, -1, -1):
        if root in claimed or not elementwise(root):
            continue
        full = region(root, None)
        if full is None:
            continue
        tries = [full]
        for i in sorted(full[0] - {root}, reverse=True):
            cut = region(root, nodes[i].output[0])
            if cut is not None and cut[1] == {nodes[i].output[0]}:
                tries.append(cut)
        tries.sort(key=lambda t: -len(t[0]))
        for members, external in tries:
            if len(members) < 2 or len(external) != 1:
                continue
            inside = [nodes[i].output[0] for i in members if i != root]
            if any(
                v in outputs or any(c not in members for c in consumers.get(v, [])) for v in inside
            ):
                continue
            (x,) = external
            result = evaluate(members, x)
            if result is None:
                continue
            layer = _matching_activation(*result)
            if layer is not None:
                claimed |= members
                fused[root] = (layer, x)
                break
    for i in claimed - set(fused):
        nodes[i] = None
    return fused


# --------------------------------------------------------------------------------------------
# LayerNorm as its formula (LayerNormalization exists from opset 17 only; PyTorch's exporter
# writes ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div[, Mul][, Add] before it)
# --------------------------------------------------------------------------------------------


def _reduce_axes(g: Graph, node: Any) -> tuple[list[int], int] | None:
    """``(axes, keepdims)`` of a ReduceMean (axes as an attribute before opset 18, else a
    constant input), or None when they are not given as such."""
    saved = g.node
    g.node = node
    try:
        a = Attrs(g)
        keepdims = int(a.get("keepdims", 1))
        if len(node.input) > 1 and node.input[1]:
            value = g.values.get(node.input[1])
            if not isinstance(value, Const):
                return None
            axes = value.arrays[0]
        else:
            axes = a.get("axes")
        if axes is None:
            return None
        return [int(v) for v in np.asarray(axes).ravel()], keepdims
    finally:
        g.node = saved


def fuse_layer_norms(
    g: Graph, nodes: list[Any], outputs: set[str]
) -> dict[int, tuple[Callable[[Graph, str], nn.Module], str]]:
    """Recognize ``LayerNorm`` written as its formula, as PyTorch's exporter writes it before
    opset 17: ``m = ReduceMean(x)``, ``d = Sub(x, m)``, ``v = ReduceMean(Pow(d, 2))``,
    ``y = Div(d, Sqrt(Add(v, eps)))``, then optionally ``Mul(y, gamma)`` and ``Add(., beta)``
    with constants, the two reductions over the same trailing axes with ``keepdims``, every
    intermediate value read by the pattern alone.  Returns ``{index of the pattern's last
    node: (make(g, x) -> the LayerNorm, x)}``; the pattern's other nodes are dropped from
    ``nodes`` (set to None).  ``make`` runs during the walk, when ``x``'s shape is known, and
    raises ValueError (naming the node) when the axes are not the trailing ones."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        if n is None:
            continue
        for v in n.output:
            if v:
                producer[v] = i
        for v in n.input:
            if v:
                consumers.setdefault(v, []).append(i)

    def op(v: str, kind: str) -> int | None:
        i = producer.get(v)
        if i is None or nodes[i] is None or nodes[i].op_type != kind:
            return None
        if nodes[i].domain not in ("", "ai.onnx") or len(nodes[i].output) != 1:
            return None
        return i

    def const(v: str) -> np.ndarray | None:
        value = g.values.get(v)
        return np.asarray(value.arrays[0]) if isinstance(value, Const) else None

    def only_reader(v: str, reader: int) -> bool:
        return v not in outputs and consumers.get(v, []) == [reader]

    def other(node: Any, v: str) -> str | None:
        ins = [u for u in node.input]
        if len(ins) != 2 or v not in ins:
            return None
        return ins[1] if ins[0] == v else ins[0]

    fused: dict[int, tuple[Callable[[Graph, str], nn.Module], str]] = {}
    for i_div, div in enumerate(nodes):
        if div is None or div.op_type != "Div" or div.domain not in ("", "ai.onnx"):
            continue
        if len(div.input) != 2:
            continue
        d, s = div.input
        i_sub, i_sqrt = op(d, "Sub"), op(s, "Sqrt")
        if i_sub is None or i_sqrt is None:
            continue
        i_add = op(nodes[i_sqrt].input[0], "Add")
        if i_add is None:
            continue
        add = nodes[i_add]
        v = next((u for u in add.input if op(u, "ReduceMean") is not None), None)
        eps = const(other(add, v)) if v is not None and other(add, v) else None
        if v is None or eps is None or eps.size != 1:
            continue
        i_var = op(v, "ReduceMean")
        i_pow = op(nodes[i_var].input[0], "Pow")
        if i_pow is None or nodes[i_pow].input[0] != d:
            continue
        exponent = const(nodes[i_pow].input[1]) if len(nodes[i_pow].input) == 2 else None
        if exponent is None or exponent.size != 1 or float(exponent.ravel()[0]) != 2.0:
            continue
        sub = nodes[i_sub]
        if len(sub.input) != 2:
            continue
        x, m = sub.input
        i_mean = op(m, "ReduceMean")
        if i_mean is None or nodes[i_mean].input[0] != x:
            continue
        ax_mean, ax_var = _reduce_axes(g, nodes[i_mean]), _reduce_axes(g, nodes[i_var])
        if ax_mean is None or ax_mean != ax_var or ax_mean[1] != 1 or not ax_mean[0]:
            continue
        if not (
            only_reader(m, i_sub)
            and d not in outputs
            and sorted(consumers.get(d, [])) == sorted([i_pow, i_div])
            and only_reader(nodes[i_pow].output[0], i_var)
            and only_reader(v, i_add)
            and only_reader(add.output[0], i_sqrt)
            and only_reader(s, i_div)
        ):
            continue
        members = [i_mean, i_sub, i_pow, i_var, i_add, i_sqrt, i_div]
        last, gamma, beta = i_div, None, None
        y = div.output[0]
        readers = consumers.get(y, [])
        if y not in outputs and len(readers) == 1 and op(y, "Mul") is None:
            i_mul = readers[0]
            mul = nodes[i_mul]
            c = const(other(mul, y) or "") if mul.op_type == "Mul" else None
            if c is not None and mul.domain in ("", "ai.onnx") and len(mul.output) == 1:
                gamma, last, y = c, i_mul, mul.output[0]
                members.append(i_mul)
                readers = consumers.get(y, [])
                if y not in outputs and len(readers) == 1:
                    i_b = readers[0]
                    badd = nodes[i_b]
                    c = const(other(badd, y) or "") if badd.op_type == "Add" else None
                    if c is not None and badd.domain in ("", "ai.onnx"):
                        if len(badd.output) == 1:
                            beta, last = c, i_b
                            members.append(i_b)
        if any(k in fused for k in members):
            continue
        axes = ax_mean[0]
        epsilon = float(np.asarray(eps, np.float64).ravel()[0])

        def make(
            g: Graph,
            x: str,
            axes: list[int] = axes,
            eps: float = epsilon,
            gamma: np.ndarray | None = gamma,
            beta: np.ndarray | None = beta,
        ) -> nn.Module:
            shape = g.shape(x)
            rank = len(shape)
            got = sorted(a + rank if a < 0 else a for a in axes)
            first = rank - len(got)
            if got != list(range(first, rank)) or first < 1:
                raise g.error(
                    f"the LayerNorm formula (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div) "
                    f"reduces over axes {axes} of {g.text(x)}: only trailing axes after the "
                    f"batch can be a LayerNorm"
                )
            normalized = tuple(shape[first:])
            try:  # (a broadcast view: sized by the tensor, whose sample size is bounded)
                w = None if gamma is None else np.broadcast_to(gamma, normalized)
                b = None if beta is None else np.broadcast_to(beta, normalized)
            except ValueError:
                raise g.error(
                    f"the LayerNorm formula's scale/shift do not broadcast to the normalized "
                    f"shape {normalized}"
                ) from None
            if w is None and b is not None:
                w = np.ones(normalized)
            layer = g.layer(
                nn.LayerNorm, normalized, eps, w is not None, b is not None, dtype=g.dtype
            )
            if w is not None:
                g.load_into(layer.weight.data, np.asarray(w), "scale")
            if b is not None:
                g.load_into(layer.bias.data, np.asarray(b), "bias")
            return layer

        fused[last] = (make, x)
        for k in members:
            if k != last:
                nodes[k] = None
    return fused
