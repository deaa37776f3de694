"""``Sequential``: a stack of layers with Keras-style ``fit``/``evaluate``/``predict``,
``summary`` and pickle-free ``save``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._config import blas_single_thread
from .._typing import ArrayLike, PathLike
from . import inference, serialization, training
from .module import Module, as_model_input, layer_input_error

__all__ = ["Sequential", "as_model_input"]


def _check_not_repeated(layer: Module, before: Any, what: str) -> None:
    """A layer object appears once: each keeps the cache of its last call, so a second call
    in the same stack would corrupt the first one's backward."""
    if any(layer is other for other in before):
        raise ValueError(
            f"{what} is already in the stack; calling one layer twice (sharing its weights) "
            f"needs a graph model, nn.Model. Received: {type(layer).__name__} "
            f"{layer.name!r} twice"
        )


class Sequential(training.TrainingMethods, Module):
    """Layers applied one after the other; ``backward`` runs them in reverse.

    Parameters
    ----------
    *layers : Module
        The layers, in order.

    Notes
    -----
    A layer declared ``elementwise_monotone`` (:class:`ReLU`) directly followed by one
    declared ``max_selecting`` (:class:`MaxPool2d`) is run after it instead of before it
    (see :class:`Module`): max pooling commutes with a non-decreasing function
    (``max(relu(a), relu(b)) == relu(max(a, b))``, and the gradient reaches the same input
    element, or none), so outputs and gradients are bit-identical while the ReLU touches
    only the pooled elements -- a quarter of them for 2x2 pooling.  Each layer keeps its
    own cache for ``backward`` (the pool's argmax now indexes the pre-ReLU input).  In
    training, an :class:`ReLU` in front of a :class:`MaxPool2d` is fused into it: the pool
    applies the ReLU to each output plane while it is in cache, and its backward applies
    the ReLU's mask while scattering the gradient (bit-identical to the two layers).

    A :class:`Conv2d` of one input channel (unit stride and dilation, zero padding, one
    group: a network's first layer) followed by such a ReLU-MaxPool2d(2) pair (2x2, stride
    2) runs in training as one kernel: the row-vectorized convolution of each sample into
    a buffer that stays in cache, pooled from there, so the full-size conv output is never
    written; when that conv is the first trainable layer and ``backward`` needs no input
    gradient (training), its parameter gradients come from the pooled gradient in one
    kernel as well.  The values are those of the three layers with the conv on the
    ``"rows"`` algorithm (bit-identical then; another conv algorithm may differ in the last
    bits); a :func:`cnncore.conv_algorithm` block forcing another algorithm turns it off.
    A float32 3x3 :class:`Conv2d` (unit stride and dilation, one group) whose forward runs
    Winograd F(4x4) -- the README CNN's second layer -- followed by such a pair runs its
    forward in training as one kernel too: the pooling is the epilogue of each task's
    output transform, so the conv output is never written; its backward is the pool's and
    the conv's (bit-identical to the three layers, for any thread count; an input or weight
    that is not finite, float64 or another algorithm: the layers one by one).

    Examples
    --------
    >>> from cnncore import nn
    >>> model = nn.Sequential(
    ...     nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    ...     nn.Flatten(), nn.Linear(6 * 14 * 14, 10))
    >>> model.output_shape((8, 1, 28, 28))
    (8, 10)

    Training (see :meth:`fit`)::

        history = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.05,
                            momentum=0.9), loss=nn.CrossEntropyLoss(), epochs=5)
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential(): every layer must be a cnncore.nn.Module. Received: "
                    f"layers[{i}] of type {type(layer).__name__}"
                )
            _check_not_repeated(layer, layers[:i], f"Sequential(): layers[{i}]")
        self.layers: list[Module] = list(layers)
        self.loss_fn: Module | None = None
        self.optimizer: Any = None
        self._input_shape: tuple[int, ...] | None = None
        self._plans = inference.PlanCache()  # eval-mode forwards (see nn.inference)
        self._eval_forward = False
        self._fused: set[int] = set()  # ReLUs fused into their MaxPool2d by the last forward
        # MaxPool2d -> the Conv2d whose fused kernel ran it in the last forward
        self._conv_pool: dict[int, int] = {}

    # -- container ------------------------------------------------------------------------
    def children(self) -> list[Module]:
        return self.layers

    def append(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential.append(): layer must be a cnncore.nn.Module. Received: "
                f"{type(layer).__name__}"
            )
        _check_not_repeated(layer, self.layers, "Sequential.append(): layer")
        self.layers.append(layer)
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    # -- computation ----------------------------------------------------------------------
    def forward(self, x: ArrayLike) -> np.ndarray:
        """Run the layers. uint8 images are scaled to [0, 1]; other inputs are converted to
        the model's dtype (as Keras does).  In eval mode the layers run through a plan per
        input shape (checks done once, buffers reused, bit-identical results; see
        :mod:`cnncore.nn.inference`)."""
        self._eval_forward = not self.training
        if not self.training:
            return self._forward_planned(x)
        x = as_model_input(x, self.dtype)
        self._input_shape = x.shape
        fused: set[int] = set()
        done: set[int] = set()  # MaxPool2d layers a Conv2d's fused kernel ran
        conv_pool: dict[int, int] = {}  # those MaxPool2d layers -> their Conv2d
        layers = self.layers
        with blas_single_thread():  # switched once per model call (the layers' caps nest)
            for i in self._run_order():
                try:
                    if i in fused:
                        layers[i]._out = x  # its MaxPool2d applied it (the ReLU's own cache)
                        continue
                    if i in done:
                        continue
                    if (
                        i + 2 < len(layers)
                        and "_fuses_relu_pool" in type(layers[i]).__dict__  # Conv2d itself
                        and "_fusable_relu" in type(layers[i + 1]).__dict__
                        and "_fuses_relu" in type(layers[i + 2]).__dict__
                        and layers[i].training
                        and layers[i + 1].training
                        and layers[i + 2].training
                        and type(x) is np.ndarray
                        and x.ndim == 4
                    ):
                        y = layers[i]._forward_relu_pool(x, layers[i + 2])
                        if y is not None:
                            x = y
                            fused.add(i + 1)
                            done.add(i + 2)
                            conv_pool[i + 2] = i
                            continue
                    if (
                        i > 0
                        and "_fuses_relu" in type(layers[i]).__dict__  # MaxPool2d itself
                        and "_fusable_relu" in type(layers[i - 1]).__dict__  # ReLU itself
                        and layers[i].training
                        and layers[i - 1].training
                        and isinstance(x, np.ndarray)
                        and x.ndim == 4
                    ):
                        x = layers[i]._forward_relu(x)
                        fused.add(i - 1)
                        continue
                    x = layers[i](x)
                except (ValueError, TypeError) as exc:
                    raise layer_input_error(exc, i, layers[i], x.shape) from exc
        self._fused = fused
        self._conv_pool = conv_pool
        return x

    def _forward_planned(self, x: Any) -> np.ndarray:
        """The eval-mode forward through the plan for ``x``'s shape and dtype (recorded on
        the first such call); the key holds the layers' ids, so changing the layers makes a
        new plan."""
        key = None
        if isinstance(x, np.ndarray):
            key = (x.shape, x.dtype.str, self._layer_ids())
            plan = self._plans.get(key)
            if plan is not None:
                self._input_shape = x.shape
                y = plan.run(as_model_input(x, plan.dtype))
                if y is not None:
                    return y
                key = None  # (another thread runs that plan: the layers, no new plan)
        x = as_model_input(x, self.dtype)
        self._input_shape = x.shape
        order = self._run_order()
        return self._plans.record(key, [self.layers[i] for i in order], x, order)

    def _layer_ids(self) -> tuple[int, ...]:
        """The ids of the layers (part of a plan's key), recomputed only when ``layers``
        changed (comparing the lists compares the layer objects by identity)."""
        d = self.__dict__
        if self.layers != d.get("_keyed_layers"):
            d["_keyed_layers"] = list(self.layers)
            d["_keyed_ids"] = tuple(map(id, self.layers))
        return d["_keyed_ids"]

    def _run_order(self) -> list[int]:
        """Indices of the layers in the order ``forward`` runs them (see Notes)."""
        order: list[int] = []
        i = 0
        while i < len(self.layers):
            if (
                i + 1 < len(self.layers)
                and self.layers[i].elementwise_monotone
                and self.layers[i + 1].max_selecting
            ):
                order += [i + 1, i]
                i += 2
            else:
                order.append(i)
                i += 1
        return order

    def _first_trainable(self) -> int:
        for i, layer in enumerate(self.layers):
            if layer.parameters():
                return i
        return len(self.layers)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse. With ``input_grad=False`` the layers
        in front of the first trainable one are skipped and that layer computes only its
        parameter gradients (what training needs)."""
        if self._eval_forward:
            raise RuntimeError(
                "Sequential.backward() called after a forward in eval mode, which keeps no "
                "cache (call model.train() before the forward)"
            )
        first = 0 if input_grad else self._first_trainable()
        g = grad_output
        fused = self._fused
        conv_pool = self._conv_pool
        skip = -1
        for i in reversed(self._run_order()):
            if i < first or i in fused or i == skip:  # (a fused ReLU: its MaxPool2d masks g)
                continue
            c = conv_pool.get(i)
            if (
                c is not None
                and c == first
                and not input_grad
                and self.layers[c]._backward_relu_pool(g, self.layers[i])
            ):
                skip = c  # its parameter gradients are done; it needs no input gradient
                continue
            g = self.layers[i].backward(g, input_grad=input_grad or i > first)
        return g if input_grad else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def get_config(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)" if self.layers else "Sequential()"

    # -- description ----------------------------------------------------------------------
    def summary(
        self,
        input_shape: tuple[int, ...] | None = None,
        print_fn: Callable[[str], object] | None = print,
    ) -> str:
        """Table of layers, output shapes and parameter counts.

        ``input_shape`` (including the batch dimension) defaults to the last ``forward``'s.
        """
        shape = input_shape if input_shape is not None else self._input_shape
        rows = []
        for i, layer in enumerate(self.layers):
            if shape is not None:
                shape = layer.output_shape(shape)
                shape_text = str(tuple(shape))
            else:
                shape_text = "?"
            rows.append((f"{i}: {type(layer).__name__}", shape_text, f"{layer.num_parameters():,}"))
        w0 = max([len("Layer")] + [len(r[0]) for r in rows])
        w1 = max([len("Output shape")] + [len(r[1]) for r in rows])
        w2 = max([len("Params")] + [len(r[2]) for r in rows])
        line = "-" * (w0 + w1 + w2 + 6)
        out = [line, f"{'Layer':<{w0}}   {'Output shape':<{w1}}   {'Params':>{w2}}", line]
        out += [f"{a:<{w0}}   {b:<{w1}}   {c:>{w2}}" for a, b, c in rows]
        n_train = self.num_parameters()
        out += [line, f"Total parameters: {n_train:,} ({self.dtype.name})", line]
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- training API (implemented in training.py / serialization.py) ----------------------
    def save(self, path: PathLike) -> None:
        """Write architecture (JSON) and weights to ``path``, without pickle: ``.safetensors``
        (the state_dict, loadable into the equivalent torch model) if the name ends so, else
        ``.npz``; :func:`cnncore.load` reads both (see :func:`cnncore.nn.save`)."""
        serialization.save(self, path)
