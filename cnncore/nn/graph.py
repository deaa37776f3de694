"""Graph models (Keras' functional API with cnncore's layers): :func:`Input`, the symbolic
:class:`Node` that calling a layer on a node returns, and :class:`Model`, which runs any
directed acyclic graph of layers with exact gradients and the same
``fit``/``evaluate``/``predict``/``summary``/``save`` as :class:`~cnncore.nn.Sequential`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._config import blas_single_thread
from .._parameter import Parameter
from .._typing import ArrayLike
from .._validation import MAX_PARAM
from . import inference, training
from .merge import add_arrays
from .module import Module, Symbolic, as_model_input, check_name, grad_like, unique_name
from .sequential import Sequential

__all__ = ["Input", "Node", "Model"]


def _shape_text(shape: Any) -> str:
    return str(tuple(shape))


def _layer_text(layer: Module) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


class Node(Symbolic):
    """A symbolic value of a graph: an :func:`Input`, or the output of a layer called on
    nodes.  Calling a layer on a node (``nn.ReLU()(node)``, or on a list of nodes for merge
    layers) returns a new node; nothing is computed until a :class:`Model` built on the
    nodes runs.

    Attributes
    ----------
    layer : Module or None
        The layer whose output this is (None for an input).
    inputs : tuple of Node
        The nodes the layer was called on.
    shape : tuple
        The output shape with ``None`` for the batch dimension, inferred with the layer's
        ``output_shape``.
    name : str
        The input's name, or the layer's.
    """

    __slots__ = ("layer", "inputs", "multi", "shape", "_input_name")

    def __init__(
        self,
        layer: Module | None,
        inputs: tuple[Node, ...],
        multi: bool,
        shape: tuple[int | None, ...],
        input_name: str | None = None,
    ) -> None:
        self.layer = layer
        self.inputs = inputs
        self.multi = multi  # the layer was called on a list of nodes
        self.shape = shape
        self._input_name = input_name

    @property
    def name(self) -> str:
        return self._input_name if self.layer is None else self.layer.name

    @property
    def is_input(self) -> bool:
        return self.layer is None

    def apply_layer(self, layer: Module, inputs: Node | Sequence[Node]) -> Node:
        """Record ``layer(inputs)``: check the input shapes with ``layer.output_shape`` and
        return the output node (what ``Module.__call__`` does with nodes)."""
        multi = isinstance(inputs, (list, tuple))
        items = tuple(inputs) if multi else (inputs,)
        for i, v in enumerate(items):
            if not isinstance(v, Node):
                raise TypeError(
                    f"{_layer_text(layer)} called on graph nodes takes only nodes. Received: "
                    f"inputs[{i}] of type {type(v).__name__}"
                )
        if isinstance(layer, Model) and layer._multi_out:
            raise ValueError(
                f"{_layer_text(layer)} has {len(layer._out_slots)} outputs; only models with "
                f"one output can be called as a layer"
            )
        shapes = [v.shape for v in items]
        return Node(layer, items, multi, _infer(layer, shapes if multi else shapes[0]))

    def __repr__(self) -> str:
        what = "Input" if self.layer is None else type(self.layer).__name__
        return f"<Node {self.name!r} ({what}) shape={_shape_text(self.shape)}>"


def _infer(layer: Module, shapes: Any) -> tuple[Any, ...]:
    """``layer.output_shape(shapes)`` as a checked shape tuple; a ValueError naming the layer
    and the shapes if the layer refuses them."""
    text = (
        ", ".join(_shape_text(s) for s in shapes)
        if isinstance(shapes, list)
        else _shape_text(shapes)
    )
    try:
        out = layer.output_shape(shapes)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{_layer_text(layer)} cannot take input shape {text}: {exc}") from None
    if not isinstance(out, tuple) or not all(
        v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in out
    ):
        raise ValueError(
            f"{_layer_text(layer)}: output_shape({text}) must return a tuple of sizes. "
            f"Received: {out!r}"
        )
    return out


def Input(shape: Sequence[int], name: str | None = None) -> Node:
    """A graph input: a symbolic array of ``shape`` per sample (the batch dimension is not
    part of ``shape``), as ``keras.Input``.

    Parameters
    ----------
    shape : tuple of int
        The shape of one sample, e.g. ``(3, 32, 32)``.
    name : str, optional
        Default ``input_layer``, ``input_layer_1``, ...

    Returns
    -------
    Node
        With ``shape == (None, *shape)``.

    See Also
    --------
    Model
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > 8:
        raise TypeError(
            f"Input(): shape must be a tuple of at most 8 positive ints (without the batch "
            f"dimension). Received: shape={shape!r}"
        )
    dims = []
    for v in shape:
        try:
            if isinstance(v, (bool, np.bool_)):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise TypeError(
                f"Input(): shape must be a tuple of ints. Received: shape={shape!r}"
            ) from None
        if not 1 <= v <= MAX_PARAM:
            raise ValueError(
                f"Input(): every size in shape must be in [1, {MAX_PARAM}]. Received: "
                f"shape={tuple(shape)!r}"
            )
        dims.append(v)
    name = unique_name("input_layer") if name is None else check_name(name, "Input()")
    return Node(None, (), False, (None, *dims), input_name=name)


def _modules_of(layer: Module) -> list[Module]:
    """``layer`` and every module below it (each once)."""
    out: list[Module] = []
    seen: set[int] = set()
    stack = [layer]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        stack.extend(reversed(m.children()))
    return out


def _as_list(value: Any, what: str) -> tuple[list[Any], bool]:
    multi = isinstance(value, (list, tuple))
    items = list(value) if multi else [value]
    if not items:
        raise ValueError(f"Model(): {what} must not be empty. Received: {what}={value!r}")
    for i, v in enumerate(items):
        if not isinstance(v, Node):
            raise TypeError(
                f"Model(): {what} must be nodes (from nn.Input and layer calls). Received: "
                f"{what}[{i}] of type {type(v).__name__}"
            )
    return items, multi


class Model(training.TrainingMethods, Module):
    """A model over any directed acyclic graph of layers (Keras' functional API).

    Parameters
    ----------
    inputs : Node or list of Node
        :func:`Input` nodes, in the order the model takes its input arrays.
    outputs : Node or list of Node
        Nodes computed from ``inputs``, in the order the model returns them.
    name : str, optional
        Default ``model``, ``model_1``, ... (every module accepts ``name=``).

    Notes
    -----
    The graph is checked when the model is built; a ValueError names the layer and the
    shapes for: an output that depends on an input not in ``inputs`` (a node from another
    graph), an input no output depends on, a cycle, a layer whose ``output_shape`` refuses
    its input shapes, duplicate layer names.

    **Layers.** A layer object called at several nodes *shares its weights*: its parameter
    gradients accumulate over all its uses.  The executor saves such a layer's per-call
    state (the instance attributes of it and its sub-modules, shallowly) after each call and
    restores it for that call's backward, and gives each call fresh scratch buffers.  A
    node consumed by several layers receives the sum of their gradients (added in the
    reverse of the run order).  A model with one output is itself a layer: call it on nodes
    of a bigger model, or put it in a :class:`~cnncore.nn.Sequential`.

    **Memory.** ``forward`` drops every intermediate output as soon as the last layer that
    takes it has run (the layers keep what their ``backward`` needs, only in training
    mode); ``backward`` frees a node's gradient once every consumer has passed its part
    back and the node's layer has used it.  In eval mode (``predict``) nothing is kept.

    **Training.** ``fit``, ``evaluate``, ``predict`` and ``save`` are those of
    :class:`~cnncore.nn.Sequential` (one training loop, :mod:`cnncore.nn.training`); they
    need a model with one input and one output.  Parameters are named
    ``<layer name>.<parameter name>`` (``conv2d.weight``); a nested container adds its own
    prefix (``block.conv2d.weight``, ``sequential.0.weight``).

    **Fusions in training** (bit-identical to running the layers one by one): a
    :class:`~cnncore.nn.ReLU` that alone reads a ``BatchNorm1d``/``BatchNorm2d``'s output is
    fused into it (one pass over the data forward, the ReLU's mask applied inside the batch
    norm's backward, recomputed there from the batch norm's input with the forward's
    arithmetic instead of read from the ReLU's output); one that alone reads an
    :class:`~cnncore.nn.Add`'s output runs in place on it, and masks its gradient in place
    when that gradient is a sum the executor allocated.  A batch norm whose output only a
    two-input Add reads, when the Add's other input (the residual) is already computed,
    writes ``bn(x) + residual`` -- and ``relu(bn(x) + residual)`` when a ReLU alone reads
    the Add's output -- in its own pass (a ResNet block's end: no separate Add and ReLU
    passes, no Add output allocated); backward runs the three layers as usual.  The gradient
    of an in-place ReLU's output that several layers read is summed (the last addition) and
    masked by the ReLU in one pass; gradient sums run on the threads of
    :func:`cnncore.set_num_threads` (elementwise: the same bits for any count).

    Examples
    --------
    >>> from cnncore import nn
    >>> inp = nn.Input((3, 8, 8))
    >>> x = nn.ReLU()(nn.Conv2d(3, 4, 3, padding=1, name="c1")(inp))
    >>> y = nn.Add()([x, nn.Conv2d(4, 4, 3, padding=1, name="c2")(x)])
    >>> out = nn.Linear(4, 2, name="fc")(nn.Flatten()(nn.GlobalAvgPool2d()(y)))
    >>> model = nn.Model(inp, out)
    >>> [name for name, _ in model.named_parameters()]
    ['c1.weight', 'c1.bias', 'c2.weight', 'c2.bias', 'fc.weight', 'fc.bias']
    >>> model.output_shape((5, 3, 8, 8))
    (5, 2)
    """

    def __init__(self, inputs: Node | Sequence[Node], outputs: Node | Sequence[Node]) -> None:
        super().__init__()
        in_nodes, self._multi_in = _as_list(inputs, "inputs")
        out_nodes, self._multi_out = _as_list(outputs, "outputs")
        for i, node in enumerate(in_nodes):
            if not node.is_input:
                raise ValueError(
                    f"Model(): inputs[{i}] must be an nn.Input node. Received: the output of "
                    f"{_layer_text(node.layer)}"
                )
            if any(node is other for other in in_nodes[:i]):
                raise ValueError(f"Model(): inputs[{i}] ({node.name!r}) is given twice")
        nodes = self._topological(in_nodes, out_nodes)
        self._inputs = in_nodes
        self._outputs = out_nodes
        self._nodes = nodes
        self._build_plan()
        params = self.parameters()
        self.dtype = params[0].dtype if params else np.dtype(np.float32)
        self.loss_fn: Module | None = None
        self.optimizer: Any = None
        self._fwd: Any = None

    # -- building -------------------------------------------------------------------------
    @staticmethod
    def _topological(in_nodes: list[Node], out_nodes: list[Node]) -> list[Node]:
        """Every node the outputs depend on, inputs and layers alike, each after its inputs
        (depth-first from the outputs, in input order); the graph checks."""
        allowed = {id(n) for n in in_nodes}
        names = [n.name for n in in_nodes]
        done: set[int] = set()
        active: set[int] = set()
        order: list[Node] = []
        for k, out in enumerate(out_nodes):
            stack: list[tuple[Node, int]] = [(out, 0)]
            while stack:
                node, i = stack.pop()
                if i == 0:
                    if id(node) in done:
                        continue
                    if node.is_input and id(node) not in allowed:
                        consumer = _layer_text(stack[-1][0].layer) if stack else f"outputs[{k}]"
                        raise ValueError(
                            f"Model(): {consumer} is connected to the input {node.name!r} "
                            f"(shape {_shape_text(node.shape)}), which is not one of the "
                            f"model's inputs {names}: the node comes from another graph "
                            f"(graph disconnected)"
                        )
                    active.add(id(node))
                if i < len(node.inputs):
                    stack.append((node, i + 1))
                    child = node.inputs[i]
                    if id(child) in active:
                        raise ValueError(
                            f"Model(): the graph has a cycle through {_layer_text(child.layer)}"
                        )
                    stack.append((child, 0))
                    continue
                active.discard(id(node))
                done.add(id(node))
                order.append(node)
        for i, node in enumerate(in_nodes):
            if id(node) not in done:
                raise ValueError(
                    f"Model(): inputs[{i}] ({node.name!r}, shape {_shape_text(node.shape)}) is "
                    f"not used: no output depends on it"
                )
        # shapes, inferred again along the final graph (nodes must match their layers)
        for node in order:
            if node.is_input:
                continue
            shapes = [n.shape for n in node.inputs]
            shape = _infer(node.layer, shapes if node.multi else shapes[0])
            if shape != node.shape:
                raise ValueError(
                    f"Model(): {_layer_text(node.layer)} gives shape {_shape_text(shape)} for "
                    f"input shape {', '.join(_shape_text(s) for s in shapes)}, but its node "
                    f"has shape {_shape_text(node.shape)}"
                )
        return order

    def _build_plan(self) -> None:
        """Slots, steps, the layer list, sharing and the gradient plans."""
        nodes = self._nodes
        slot = {id(n): i for i, n in enumerate(nodes)}
        self._n_slots = len(nodes)
        self._in_slots = [slot[id(n)] for n in self._inputs]
        self._out_slots = [slot[id(n)] for n in self._outputs]
        step_nodes = [n for n in nodes if not n.is_input]
        self._step_nodes = step_nodes
        layers: list[Module] = []
        seen: set[int] = set()
        for n in step_nodes:
            if id(n.layer) not in seen:
                seen.add(id(n.layer))
                layers.append(n.layer)
        self._layers = layers
        # unique names among inputs and layers
        taken: dict[str, str] = {}
        for n in self._inputs:
            taken[n.name] = "an input"
        for layer in layers:
            if layer is self:
                raise ValueError("Model(): a model cannot contain itself")
            other = taken.get(layer.name)
            if other is not None:
                raise ValueError(
                    f"Model(): layer names must be unique; {_layer_text(layer)} has the name of "
                    f"{other}. Give layers distinct names with name=..."
                )
            taken[layer.name] = _layer_text(layer)
        # sharing: a step is shared if a module under its layer runs at another step too
        subtree = {id(layer): _modules_of(layer) for layer in layers}
        uses: dict[int, int] = {}
        for n in step_nodes:
            for m in subtree[id(n.layer)]:
                uses[id(m)] = uses.get(id(m), 0) + 1
        shared_mods = []
        last_step: dict[int, int] = {}
        last_use = [-1] * len(nodes)
        for k, n in enumerate(step_nodes):
            mods = subtree[id(n.layer)]
            shared = [m for m in mods if uses[id(m)] > 1]
            shared_mods.append(mods if shared else None)
            for m in shared:
                last_step[id(m)] = k
            for i in n.inputs:
                last_use[slot[id(i)]] = k
        keep = set(self._out_slots)
        frees: list[list[int]] = [[] for _ in step_nodes]
        for s, k in enumerate(last_use):
            if k >= 0 and s not in keep:
                frees[k].append(s)
        self._steps = [
            (
                n.layer,
                tuple(slot[id(i)] for i in n.inputs),
                n.multi,
                slot[id(n)],
                tuple(frees[k]),
                shared_mods[k],
                n.shape[1:],
            )
            for k, n in enumerate(step_nodes)
        ]
        self._any_shared = any(m is not None for m in shared_mods)
        # after a backward each shared module gets back the state of its last forward call
        self._restore_last = [
            (k, {id(m) for m in shared_mods[k] if last_step.get(id(m)) == k})
            for k in range(len(step_nodes))
            if shared_mods[k] is not None
        ]
        has_params = {id(layer): bool(layer.parameters()) for layer in layers}
        self._plans = {flag: self._grad_plan(flag, has_params) for flag in (False, True)}
        self._relu_fusions, self._relu_in_place = self._find_relu_fusions()
        self._add_fusions = self._find_add_fusions()
        # the output slots of those ReLUs: their gradient's last sum is deferred to them
        self._relu_sum_slots = {self._steps[j][3] for j in self._relu_in_place}

    def _find_relu_fusions(self) -> tuple[dict[int, int], set[int]]:
        """``{batch-norm step: ReLU step}`` for the pairs a training forward fuses: a
        BatchNorm1d/2d whose output only a ReLU reads (not a model output; neither layer
        used at another step).  The batch norm then runs with the ReLU fused
        (``_forward_relu``: one pass over the data instead of two, and in backward the
        ReLU's mask applied inside the batch norm's pass), and the ReLU's step passes its
        input through, forward and backward -- bit-identical to running both layers.

        Also the ReLU steps that may run in place in training: those reading the output of
        an Add (which keeps no output for its backward) that nothing else reads."""
        from .activation import ReLU
        from .merge import Add
        from .normalization import BatchNorm1d, BatchNorm2d

        readers = [0] * self._n_slots
        producer: dict[int, int] = {}
        for k, (_, ins, _, out, _, _, _) in enumerate(self._steps):
            producer[out] = k
            for s in ins:
                readers[s] += 1
        fusions = {}
        in_place = set()
        for j, (layer, ins, multi, _, _, shared, _) in enumerate(self._steps):
            if type(layer) is not ReLU or multi or shared is not None:
                continue
            k = producer.get(ins[0])
            if k is None:
                continue
            src, _, _, src_out, _, src_shared, _ = self._steps[k]
            if src_shared is not None or readers[src_out] != 1 or src_out in self._out_slots:
                continue
            if type(src) in (BatchNorm1d, BatchNorm2d):
                fusions[k] = j
            elif type(src) is Add:
                in_place.add(j)
        return fusions, in_place

    def _find_add_fusions(self) -> dict[int, tuple[int, int | None, int]]:
        """``{batch-norm step: (Add step, ReLU step or None, residual slot)}`` for the
        chains a training forward fuses: a BatchNorm1d/2d whose output only a two-input
        :class:`~cnncore.nn.Add` reads (once), the Add's other input (the residual) already
        computed when the batch norm runs, and -- when a ReLU alone reads the Add's output
        (not a model output) -- that ReLU; no layer of the chain used at another step.
        The batch norm then writes ``relu(bn(x) + residual)`` (or ``bn(x) + residual``) in
        its own pass (``_forward_add``), and the Add and ReLU steps pass that array on
        forward, recording what their backward needs; backward runs every layer as usual
        (the ReLU masks the gradient, the Add hands it to both inputs, the batch norm takes
        it w.r.t. its own output): bit-identical to running the layers one by one.  A batch
        norm already fused with a ReLU it feeds (``_find_relu_fusions``) is not one of
        these: its reader is the ReLU."""
        from .activation import ReLU
        from .merge import Add
        from .normalization import BatchNorm1d, BatchNorm2d

        steps = self._steps
        readers = [0] * self._n_slots
        producer: dict[int, int] = {}
        for k, (_, ins, _, out, _, _, _) in enumerate(steps):
            producer[out] = k
            for s in ins:
                readers[s] += 1
        outputs = set(self._out_slots)
        fusions: dict[int, tuple[int, int | None, int]] = {}
        for a, (layer, ins, multi, out, _, shared, _) in enumerate(steps):
            if type(layer) is not Add or not multi or len(ins) != 2 or shared is not None:
                continue
            best = None
            for i in (0, 1):
                k = producer.get(ins[i])
                r = ins[1 - i]
                if k is None or r == ins[i]:
                    continue
                bn, _, _, bn_out, _, bn_shared, _ = steps[k]
                if (
                    type(bn) not in (BatchNorm1d, BatchNorm2d)
                    or bn_shared is not None
                    or readers[bn_out] != 1
                    or bn_out in outputs
                    or producer.get(r, -1) >= k  # the residual is not ready at the batch norm
                ):
                    continue
                if best is None or k > best[0]:
                    best = (k, r)
            if best is None:
                continue
            relu = None
            if readers[out] == 1 and out not in outputs:
                j = next(j for j, st in enumerate(steps) if out in st[1])
                rl, _, r_multi, _, _, r_shared, _ = steps[j]
                if type(rl) is ReLU and not r_multi and r_shared is None:
                    relu = j
            fusions[best[0]] = (a, relu, best[1])
        return fusions

    def _grad_plan(self, input_grad: bool, has_params: dict[int, bool]) -> list[tuple]:
        """Per step: (run its backward, its input_grad flag, which inputs want a gradient).
        A node wants a gradient if it is an input and ``input_grad``, or its layer has
        parameters, or one of its inputs wants one."""
        want = [False] * self._n_slots
        for s in self._in_slots:
            want[s] = input_grad
        plan = []
        for layer, ins, _, out, _, _, _ in self._steps:
            wants = tuple(want[s] for s in ins)
            want[out] = has_params[id(layer)] or any(wants)
            plan.append((want[out], any(wants), wants))
        return plan

    # -- container ------------------------------------------------------------------------
    def children(self) -> list[Module]:
        """The layers, each once, in the order of their first use."""
        return list(self._layers)

    @property
    def inputs(self) -> list[Node]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[Node]:
        return list(self._outputs)

    @property
    def layers(self) -> list[Module]:
        return list(self._layers)

    def get_layer(self, name: str) -> Module:
        """The layer called ``name``; ValueError listing the names otherwise."""
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"Model.get_layer(): no layer named {name!r}. The layers are "
            f"{[layer.name for layer in self._layers]}"
        )

    def _state_children(self) -> Iterator[tuple[str, Module]]:
        """The layers under their names: ``state_dict`` keys are ``<layer name>.weight``
        etc., as those of a PyTorch module holding the layers as attributes of those names
        (and as :meth:`named_parameters`)."""
        for layer in self._layers:
            yield layer.name, layer

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(<layer name>.<parameter name>, Parameter)``; a parameter reached twice (a
        layer inside two nested containers) is listed once."""
        seen: set[int] = set()
        for layer in self._layers:
            for name, p in layer.named_parameters(f"{prefix}{layer.name}."):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield name, p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        seen: set[int] = set()
        for layer in self._layers:
            for name, b in layer.named_buffers(f"{prefix}{layer.name}."):
                if id(b) not in seen:
                    seen.add(id(b))
                    yield name, b

    # -- computation ----------------------------------------------------------------------
    def _model_inputs(self, x: Any) -> list[np.ndarray]:
        n_in = len(self._inputs)
        if self._multi_in:
            if not isinstance(x, (list, tuple)) or len(x) != n_in:
                got = f"{len(x)} arrays" if isinstance(x, (list, tuple)) else type(x).__name__
                raise ValueError(
                    f"Model {self.name!r}: takes a list of {n_in} input arrays. Received: {got}"
                )
            xs = list(x)
        else:
            xs = [x]
        dtype = self.dtype
        out = []
        for node, v in zip(self._inputs, xs, strict=True):
            a = as_model_input(v, dtype, f"Model {self.name!r}")
            if a.shape[1:] != node.shape[1:] or a.ndim != len(node.shape):
                raise ValueError(
                    f"Model {self.name!r}: input {node.name!r} must have shape "
                    f"{_shape_text(node.shape)}. Received: an array of shape {a.shape}"
                )
            if out and len(a) != len(out[0]):
                raise ValueError(
                    f"Model {self.name!r}: all inputs must have the same batch size. "
                    f"Received: shapes {[o.shape for o in out] + [a.shape]}"
                )
            out.append(a)
        return out

    def forward(self, x: ArrayLike | Sequence[ArrayLike]) -> np.ndarray | list[np.ndarray]:
        """Run the graph on ``x`` (an array, or a list of arrays for several inputs; uint8
        images are scaled to [0, 1], other inputs converted to the model's dtype).  Returns
        an array, or a list of arrays for several outputs.

        In eval mode the layers' argument checks are done once per input shape and from
        the second call of a shape on its steps run as planned kernel calls on reused
        buffers (see :class:`cnncore.nn.inference.GraphPlan`; bit-identical results);
        nothing is kept for backward; :func:`~cnncore.nn.fuse` folds the BatchNorms into the
        convolutions for inference."""
        if not self.training:
            return self._forward_eval(x)
        vals: list[Any] = [None] * self._n_slots
        for s, a in zip(self._in_slots, self._model_inputs(x), strict=True):
            vals[s] = a
        training = self.training
        snaps: list[Any] | None = (
            [None] * len(self._steps) if training and self._any_shared else None
        )
        fusions = self._relu_fusions if training else None
        add_fusions = self._add_fusions if training else None
        passed: set[int] = set()  # the ReLU steps fused into their batch norm this time
        carried: dict[int, np.ndarray] = {}  # Add / ReLU steps a batch norm computed this time
        steps = self._steps
        for k, (layer, ins, multi, out, free, shared, shape) in enumerate(steps):
            if shared is not None:
                for m in shared:
                    m._scratch = {}
            if carried and k in carried:
                y = carried.pop(k)
                if multi:  # the Add
                    y = layer._forward_done(y, len(ins))
                else:  # the ReLU (its cache, as its own forward keeps it)
                    layer._out = y
            elif add_fusions and k in add_fusions:
                a, j, r = add_fusions[k]
                y = None
                if layer.training and steps[a][0].training and (j is None or steps[j][0].training):
                    y = layer._forward_add(vals[ins[0]], vals[r], j is not None)
                if y is None:
                    y = layer.forward(vals[ins[0]])
                else:
                    carried[a] = y
                    if j is not None:
                        carried[j] = y
            elif fusions and k in fusions:
                relu = steps[fusions[k]][0]
                if layer.training and relu.training:
                    y = layer._forward_relu(vals[ins[0]])
                    passed.add(fusions[k])
                else:
                    y = layer.forward(vals[ins[0]])
            elif k in passed:
                y = vals[ins[0]]  # its batch norm applied it
                layer._out = y  # (the ReLU's cache, as its own forward keeps it)
            elif training and layer.training and k in self._relu_in_place:
                x = vals[ins[0]]
                if isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable:
                    y = layer.forward_into(x, x)
                else:
                    y = layer.forward(x)
            else:
                y = layer.forward([vals[s] for s in ins] if multi else vals[ins[0]])
            if not isinstance(y, np.ndarray) or y.shape[1:] != shape:
                got = y.shape if isinstance(y, np.ndarray) else type(y).__name__
                raise ValueError(
                    f"Model {self.name!r}: {_layer_text(layer)} returned {got}, but its "
                    f"output_shape is {_shape_text((None, *shape))}"
                )
            if snaps is not None and shared is not None:
                snaps[k] = [(m, m.__dict__.copy()) for m in shared]
            vals[out] = y
            for s in free:
                vals[s] = None
        outs = [vals[s] for s in self._out_slots]
        self._fwd = (snaps, [o.shape for o in outs], passed) if training else None
        return outs if self._multi_out else outs[0]

    def _forward_eval(self, x: Any) -> np.ndarray | list[np.ndarray]:
        """The eval-mode forward: per input shape a :class:`~cnncore.nn.inference.GraphPlan`
        from the second call on (kernel calls on reused buffers; the first call runs
        :class:`~cnncore.nn.inference.GraphEvalSteps`), under one BLAS thread cap; nothing
        kept for backward."""
        xs = self._model_inputs(x)
        self._fwd = None
        plans = self.__dict__.get("_eval_plans")
        if plans is None:
            plans = self.__dict__["_eval_plans"] = inference.GraphPlans()
        outs = plans.run(self, xs, self._forward_layerwise, self._checked_call)
        return outs if self._multi_out else outs[0]

    def _check_output(self, layer: Module, y: Any, shape: tuple[int, ...]) -> None:
        if not isinstance(y, np.ndarray) or y.shape[1:] != shape:
            got = y.shape if isinstance(y, np.ndarray) else type(y).__name__
            raise ValueError(
                f"Model {self.name!r}: {_layer_text(layer)} returned {got}, but its "
                f"output_shape is {_shape_text((None, *shape))}"
            )

    def _checked_call(self, step: tuple) -> Callable[[Any], np.ndarray]:
        """``run(x) -> y`` of one of :attr:`_steps` in eval mode: the layer's forward (the
        scratch of shared modules reset first), its output shape checked."""
        layer, _, _, _, _, shared, shape = step
        forward = layer.forward
        check = self._check_output

        def run(x: Any) -> np.ndarray:
            if shared is not None:
                for m in shared:
                    m._scratch = {}
            y = forward(x)
            check(layer, y, shape)
            return y

        return run

    def _forward_layerwise(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        """The eval forward with every layer called (:class:`GraphEvalSteps`: BatchNorm's
        checks done once per shape)."""
        vals: list[Any] = [None] * self._n_slots
        for s, a in zip(self._in_slots, xs, strict=True):
            vals[s] = a
        plan = self.__dict__.get("_eval")
        if plan is None:
            plan = self.__dict__["_eval"] = inference.GraphEvalSteps()
        steps = plan.steps if plan.steps is not None else plan.build(self)
        with blas_single_thread():  # (switched once per model call; the layers' caps nest)
            for run, layer, ins, multi, out, free, shared, shape in steps:
                if shared is not None:
                    for m in shared:
                        m._scratch = {}
                y = run([vals[s] for s in ins] if multi else vals[ins[0]])
                self._check_output(layer, y, shape)
                vals[out] = y
                for s in free:
                    vals[s] = None
        return [vals[s] for s in self._out_slots]

    def backward(
        self, grad_output: ArrayLike | Sequence[ArrayLike], input_grad: bool = True
    ) -> np.ndarray | list[np.ndarray] | None:
        """Backpropagate ``grad_output`` (an array, or a list with one per output) through
        the graph: accumulates every parameter's gradient and returns the gradient w.r.t.
        the input (a list for several inputs; None with ``input_grad=False``, which skips
        every layer that has no parameters in front of it)."""
        snaps, out_shapes, passed = self._cached("_fwd")
        func = f"Model {self.name!r}.backward"
        if self._multi_out:
            if not isinstance(grad_output, (list, tuple)) or len(grad_output) != len(out_shapes):
                raise ValueError(
                    f"{func}(): grad_output must be a list of {len(out_shapes)} arrays, one per "
                    f"output. Received: {type(grad_output).__name__}"
                )
            gs = list(grad_output)
        else:
            gs = [grad_output]
        grads: list[Any] = [None] * self._n_slots
        owned = [False] * self._n_slots
        # the last part of the gradient of an in-place ReLU's output, added (and masked) in
        # one pass by that ReLU's backward (add_relu_backward)
        pending: dict[int, np.ndarray] = {}
        deferred = self._relu_sum_slots

        def add(s: int, g: np.ndarray) -> None:
            cur = grads[s]
            if cur is None:
                grads[s] = g
                return
            if s in deferred:
                last = pending.pop(s, None)
                pending[s] = g
                if last is None:
                    return
                g = last
            grads[s] = add_arrays(cur, g, cur if owned[s] else None)
            owned[s] = True

        for s, g, shape in zip(self._out_slots, gs, out_shapes, strict=True):
            add(s, grad_like(g, shape, f"Model {self.name!r}"))
        plan = self._plans[bool(input_grad)]
        steps = self._steps
        for k in range(len(steps) - 1, -1, -1):
            layer, ins, multi, out, _, _, _ = steps[k]
            run, flag, wants = plan[k]
            g = grads[out]
            grads[out] = None
            last = pending.pop(out, None) if pending else None
            if not run or g is None:
                continue
            if last is not None:  # a gradient sum and the ReLU's mask in one pass
                if flag and layer.training:
                    add(ins[0], layer.backward_sum(g, last, g if owned[out] else None))
                    continue
                g = add_arrays(g, last, g if owned[out] else None)
                owned[out] = True
            if k in passed:  # a ReLU fused into its batch norm, whose backward masks g
                if flag:
                    add(ins[0], g)
                continue
            if flag and owned[out] and k in self._relu_in_place and layer.training:
                # g is a sum this executor allocated: the ReLU's mask is applied in place
                add(ins[0], layer.backward_into(g, g))
                continue
            if snaps is not None and snaps[k] is not None:
                for m, state in snaps[k]:
                    m.__dict__.update(state)
            r = layer.backward(g, input_grad=flag)
            del g
            if not flag:
                continue
            if multi:
                for s, w, gi in zip(ins, wants, r, strict=True):
                    if w:
                        add(s, gi)
                gi = None
            else:
                add(ins[0], r)
            r = None  # (a gradient added into another node's buffer is garbage now)
        if snaps is not None:
            for k, ids in self._restore_last:
                for m, state in snaps[k]:
                    if id(m) in ids:
                        m.__dict__.update(state)
        if not input_grad:
            return None
        result = [grads[s] for s in self._in_slots]
        return result if self._multi_in else result[0]

    def output_shape(
        self, input_shape: Sequence[int] | Sequence[Sequence[int]]
    ) -> tuple[int, ...] | list[tuple[int, ...]]:
        """Output shape(s) for input shape(s) that include the batch dimension."""
        shapes = self._node_shapes(input_shape)
        outs = [shapes[s] for s in self._out_slots]
        return outs if self._multi_out else outs[0]

    def _node_shapes(self, input_shape: Any) -> list[Any]:
        n_in = len(self._inputs)
        if self._multi_in:
            if not isinstance(input_shape, (list, tuple)) or len(input_shape) != n_in:
                raise ValueError(
                    f"Model {self.name!r}: expects a list of {n_in} input shapes. Received: "
                    f"{input_shape!r}"
                )
            given = [tuple(s) for s in input_shape]
        else:
            given = [tuple(input_shape)]
        shapes: list[Any] = [None] * self._n_slots
        for s, node, shape in zip(self._in_slots, self._inputs, given, strict=True):
            if len(shape) != len(node.shape) or shape[1:] != node.shape[1:]:
                raise ValueError(
                    f"Model {self.name!r}: input {node.name!r} has shape "
                    f"{_shape_text(node.shape)}. Received: input shape {_shape_text(shape)}"
                )
            shapes[s] = shape
        for layer, ins, multi, out, _, _, _ in self._steps:
            args = [shapes[s] for s in ins]
            shapes[out] = _infer(layer, args if multi else args[0])
        return shapes

    # -- description ----------------------------------------------------------------------
    def summary(
        self,
        input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
        print_fn: Callable[[str], object] | None = print,
    ) -> str:
        """A row per input and per layer call: name (type), output shape, parameter count
        (at a shared layer's first call; ``shared`` at the others) and the nodes it takes
        (``name[k]`` for the k-th call of a layer called more than once).

        ``input_shape`` (with the batch dimension) fills in the batch size; by default it
        shows as ``None``.
        """
        shapes = (
            [n.shape for n in self._nodes]
            if input_shape is None
            else self._node_shapes(input_shape)
        )
        calls: dict[int, int] = {}
        for n in self._step_nodes:
            calls[id(n.layer)] = calls.get(id(n.layer), 0) + 1
        label: dict[int, str] = {}
        seen: dict[int, int] = {}
        rows = []
        for node, shape in zip(self._nodes, shapes, strict=True):
            if node.is_input:
                label[id(node)] = node.name
                rows.append((f"{node.name} (Input)", _shape_text(shape), "0", ""))
                continue
            layer = node.layer
            k = seen.get(id(layer), 0)
            seen[id(layer)] = k + 1
            label[id(node)] = layer.name if calls[id(layer)] == 1 else f"{layer.name}[{k}]"
            params = f"{layer.num_parameters():,}" if k == 0 else "shared"
            inputs = ", ".join(label[id(i)] for i in node.inputs)
            rows.append(
                (f"{label[id(node)]} ({type(layer).__name__})", _shape_text(shape), params, inputs)
            )
        heads = ("Layer (type)", "Output shape", "Params", "Connected to")
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
        line = "-" * (sum(widths) + 9)

        def fmt(r: Sequence[str]) -> str:
            return (
                f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}   "
                f"{r[3]:<{widths[3]}}"
            ).rstrip()

        out = [f'Model "{self.name}"', line, fmt(heads), line, *(fmt(r) for r in rows), line]
        out += [f"Total parameters: {self.num_parameters():,} ({self.dtype.name})", line]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    def __repr__(self) -> str:
        ins = ", ".join(_shape_text(n.shape) for n in self._inputs)
        outs = ", ".join(_shape_text(n.shape) for n in self._outputs)
        return (
            f"Model(name={self.name!r}, inputs=[{ins}], outputs=[{outs}], "
            f"layers={len(self._layers)}, calls={len(self._steps)})"
        )

    # -- save / load ----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The graph as JSON-ready data: input names and shapes, one ``[layer index, input
        references, called on a list]`` entry per layer call in run order (references count
        the inputs first, then the calls), the outputs' references, the layer names.  The
        layers themselves are saved as the model's children."""
        owner: dict[int, int] = {}
        for layer in self._layers:
            for m in _modules_of(layer):
                if owner.setdefault(id(m), id(layer)) != id(layer):
                    raise ValueError(
                        f"Model.get_config(): {_layer_text(m)} is inside two of the model's "
                        f"layers (e.g. a nested model and the model itself); such a model "
                        f"runs but cannot be saved"
                    )
        ref = {id(n): i for i, n in enumerate(self._inputs)}
        for k, n in enumerate(self._step_nodes):
            ref[id(n)] = len(self._inputs) + k
        index = {id(layer): i for i, layer in enumerate(self._layers)}
        return {
            "name": self.name,
            "layer_names": [layer.name for layer in self._layers],
            "inputs": [{"name": n.name, "shape": list(n.shape[1:])} for n in self._inputs],
            "nodes": [
                [index[id(n.layer)], [ref[id(i)] for i in n.inputs], n.multi]
                for n in self._step_nodes
            ],
            "outputs": [ref[id(n)] for n in self._outputs],
            "multi_input": self._multi_in,
            "multi_output": self._multi_out,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], children: Sequence[Module] = ()) -> Model:
        """Rebuild the graph of :meth:`get_config` on the rebuilt ``children`` (what
        ``load`` calls); ValueError for anything malformed."""
        func = "Model.from_config()"

        def bad(why: str) -> ValueError:
            return ValueError(f"{func}: {why}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        expected = {"name", "layer_names", "inputs", "nodes", "outputs"}
        optional = {"multi_input", "multi_output"}
        if not isinstance(config, dict) or not expected <= set(config) <= expected | optional:
            raise bad(f"the config must have the keys {sorted(expected | optional)}")
        names = config["layer_names"]
        if not isinstance(names, list) or len(names) != len(children):
            raise bad(f"layer_names must list the names of the {len(children)} layers")
        for child, name in zip(children, names, strict=True):
            child.name = check_name(name, func)
        specs = config["inputs"]
        if not isinstance(specs, list) or not specs:
            raise bad("inputs must be a non-empty list")
        refs: list[Node] = []
        for spec in specs:
            if not isinstance(spec, dict) or set(spec) != {"name", "shape"}:
                raise bad(f"malformed input entry {str(spec)[:80]!r}")
            refs.append(Input(spec["shape"], name=spec["name"]))
        inputs = list(refs)
        entries = config["nodes"]
        if not isinstance(entries, list):
            raise bad("nodes must be a list")
        used: set[int] = set()
        for k, entry in enumerate(entries):
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not is_int(entry[0])
                or not 0 <= entry[0] < len(children)
                or not isinstance(entry[1], list)
                or not entry[1]
                or not all(is_int(j) for j in entry[1])
                or not isinstance(entry[2], bool)
                or (not entry[2] and len(entry[1]) != 1)
            ):
                raise bad(f"malformed node entry {k}: {str(entry)[:80]!r}")
            me = len(refs)
            for j in entry[1]:
                if not 0 <= j < me:
                    raise bad(
                        f"node {me} takes node {j}, which is not defined before it (the graph "
                        f"must be acyclic, in run order)"
                    )
            args = [refs[j] for j in entry[1]]
            layer = children[entry[0]]
            used.add(entry[0])
            refs.append(layer(args if entry[2] else args[0]))
        unused = sorted(set(range(len(children))) - used)
        if unused:
            raise bad(f"layer {names[unused[0]]!r} is not called by any node")
        outs = config["outputs"]
        if not isinstance(outs, list) or not outs or not all(is_int(j) for j in outs):
            raise bad("outputs must be a non-empty list of node references")
        if any(not 0 <= j < len(refs) for j in outs):
            raise bad(f"outputs refer to nodes outside [0, {len(refs)})")
        multi_in = config.get("multi_input", len(inputs) > 1)
        multi_out = config.get("multi_output", len(outs) > 1)
        if not isinstance(multi_in, bool) or not isinstance(multi_out, bool):
            raise bad("multi_input and multi_output must be bools")
        if (not multi_in and len(inputs) != 1) or (not multi_out and len(outs) != 1):
            raise bad("a model with several inputs (outputs) must take (return) a list")
        output_nodes = [refs[j] for j in outs]
        model = cls(
            inputs if multi_in else inputs[0],
            output_nodes if multi_out else output_nodes[0],
            name=check_name(config["name"], func),
        )
        if [id(layer) for layer in model._layers] != [id(c) for c in children]:
            raise bad("the layers are not listed in the order of their first call")
        return model

    # -- fit/evaluate/predict come from training.TrainingMethods (Sequential's too) ----------
    save = Sequential.save
