"""The :class:`Module` base class (parameters, caches, train/eval mode, summaries), the
model protocol that :mod:`cnncore.nn.training` relies on, the registry of module classes
that :mod:`cnncore.nn.serialization` rebuilds saved models from, and the helpers the layers
share."""

from __future__ import annotations

import functools
import inspect
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .._typing import ArrayLike
from .._validation import FLOAT_DTYPES, as_float_array, as_ndarray, check_bool
from . import state as _state
from .parameter import Parameter

#: Every registered Module subclass by its registry name (see :class:`Module`, Registry).
_REGISTRY: dict[str, type[Module]] = {}

#: Class flags that each class declares in its own body (not inherited; see :class:`Module`).
_OWN_FLAGS = ("elementwise_monotone", "max_selecting")


#: Per-prefix counters of the default layer names (``conv2d``, ``conv2d_1``, ... as Keras).
_NAME_COUNTS: dict[str, int] = {}
_NAME_LOCK = threading.Lock()
_NAME_RE = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def snake_case(name: str) -> str:
    """Keras' default-name rule: ``Conv2d`` -> ``conv2d``, ``BatchNorm2d`` ->
    ``batch_norm2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(prefix: str) -> str:
    """``prefix`` the first time, then ``prefix_1``, ``prefix_2``, ... (per process)."""
    with _NAME_LOCK:
        n = _NAME_COUNTS.get(prefix, 0)
        _NAME_COUNTS[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def check_name(name: Any, func: str) -> str:
    """A layer name: 1 to 128 letters, digits, ``_`` or ``-`` (parameter names join layer
    names with dots, so a name holds none)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"{func}: name must be a str of 1 to 128 letters, digits, '_' or '-'. "
            f"Received: name={name!r}"
        )
    return name


def registered_modules() -> dict[str, type[Module]]:
    """The registry (a copy): registry name -> Module subclass, for every subclass defined so
    far except those defined with ``register=False``."""
    return dict(_REGISTRY)


def registered_name(cls: type) -> str | None:
    """The name ``cls`` is registered under (what ``save`` writes), None if it is not."""
    return cls.__dict__.get("_registry_name") if isinstance(cls, type) else None


def is_container(cls: type[Module]) -> bool:
    """Whether ``cls`` overrides :meth:`Module.children` (its children are saved with it)."""
    return cls.children is not Module.children


# --------------------------------------------------------------------------------------------
# Helpers shared by the layers
# --------------------------------------------------------------------------------------------


def check_dtype(dtype: Any, cls: str) -> np.dtype:
    """A layer's parameter dtype: float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:  # (np.dtype('float64') == None is True)
        raise TypeError(f"{cls}: dtype must be float32 or float64. Received: dtype={dtype!r}")
    return dt


def _checked_backward(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's ``backward`` so that its ``input_grad`` flag must be a bool (a named
    TypeError, not NumPy's "truth value of an array is ambiguous")."""

    @functools.wraps(backward)
    def checked(self: Module, *args: Any, **kwargs: Any) -> Any:
        if len(args) > 1:
            check_bool(args[1], "input_grad", f"{type(self).__name__}.backward")
        elif "input_grad" in kwargs:
            check_bool(kwargs["input_grad"], "input_grad", f"{type(self).__name__}.backward")
        return backward(self, *args, **kwargs)

    return checked


def _named_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a subclass's ``__init__`` so that every module accepts ``name=`` (a keyword the
    constructor itself never sees); the outermost constructor names the module, with
    Keras' default (:func:`unique_name` of the snake-cased class name) when none is given."""

    @functools.wraps(init)
    def named(self: Module, *args: Any, name: str | None = None, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        cls = type(self).__name__
        if name is not None:  # (also when a subclass passes its own name= on to super())
            self.__dict__["_name"] = check_name(name, f"{cls}()")
        elif type(self).__init__ is named and "_name" not in self.__dict__:
            # the outermost constructor of this object names it once
            self.__dict__["_name"] = unique_name(snake_case(cls))

    return named


def accumulate(param_grad: np.ndarray, grad: np.ndarray) -> None:
    """``param_grad += grad`` in place (gradients accumulate until ``zero_grad``)."""
    np.add(param_grad, grad, out=param_grad)


def grad_like(grad_output: Any, shape: tuple[int, ...] | None, layer: str) -> np.ndarray:
    """``grad_output`` of a layer whose backward is computed in the layer rather than by
    :mod:`cnncore.functional`: a float array shaped like the forward output."""
    func = f"{layer}.backward"
    g = as_float_array(grad_output, "grad_output", func)
    if shape is not None and g.shape != tuple(shape):
        raise ValueError(
            f"{func}(): grad_output must have the shape of the forward output, {tuple(shape)}. "
            f"Received: grad_output with shape {g.shape}"
        )
    return g


def config_positive_int(value: Any) -> int | None:
    """``value`` if it is a positive int (bool excluded), else None: for
    :meth:`Module.config_nbytes`, which reads configs from files and must accept any JSON."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def config_itemsize(config: dict[str, Any]) -> int:
    """Bytes per element of a layer's arrays from its config's ``dtype``: 4 for
    ``'float32'`` (the default), else 8 (an invalid dtype is rejected by the constructor)."""
    return 4 if config.get("dtype", "float32") == "float32" else 8


def layer_input_error(
    exc: ValueError | TypeError, index: int, layer: Module, shape: tuple[int, ...]
) -> ValueError | TypeError:
    """``exc`` (raised by ``layer``, the ``index``-th layer of a container, on an input of
    ``shape``) restated with the layer's position, type and the shape that reached it.  The
    new exception (of ``exc``'s builtin class) carries ``layer_index``, ``layer`` and
    ``input_shape`` attributes, which ``fit`` reads to restate the error for the user's
    batch; nested containers keep the innermost layer's."""
    cls = TypeError if isinstance(exc, TypeError) else ValueError
    new = cls(
        f"layer {index} ({type(layer).__name__}) cannot take the input that reaches it, of "
        f"shape {tuple(shape)}: {exc}"
    )
    inner = getattr(exc, "input_shape", None)
    new.layer_index = index  # type: ignore[attr-defined]
    new.layer = layer  # type: ignore[attr-defined]
    new.input_shape = tuple(shape)  # type: ignore[attr-defined]
    new.inner_input_shape = inner if inner is not None else tuple(shape)  # type: ignore[attr-defined]
    return new


def as_model_input(x: Any, dtype: np.dtype, func: str = "Sequential") -> np.ndarray:
    """uint8 images -> ``dtype`` in [0, 1]; float arrays -> ``dtype``; anything else raises."""
    if type(x) is np.ndarray and x.dtype is dtype and x.flags.c_contiguous:
        return x  # (what the last line returns for it, in fewer steps)
    x = as_ndarray(x, "input", func)
    if x.dtype == np.uint8:
        return np.multiply(x, 1.0 / 255.0, dtype=dtype)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{func}: input must be a float or uint8 image array. Received: input.dtype={x.dtype}"
        )
    return np.ascontiguousarray(x, dtype=dtype)


def prepared_arrays(
    layer: Any, x: Any, key: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """``(x, weight, bias)`` of a call of ``layer`` (a layer with ``weight`` and ``bias``
    parameters) when they are like those of the call ``key`` was made from (see
    :func:`prepared_key`): C-contiguous arrays of its shapes and dtype, the bias None if it
    was; else None.  The layers' prepared calls (a repeated call skips the functional op's
    argument checks, which the first call with these shapes passed) check this much on each
    call -- a few attribute reads."""
    x_shape, w_shape, dtype, b_shape = key
    if type(x) is not np.ndarray or x.shape != x_shape or x.dtype is not dtype:
        return None
    w = layer.weight.data
    if type(w) is not np.ndarray or w.shape != w_shape or w.dtype is not dtype:
        return None
    b = layer.bias
    if b is not None:
        b = b.data
        if type(b) is not np.ndarray or b.shape != b_shape or b.dtype is not dtype:
            return None
        if not b.flags.c_contiguous:
            return None
    elif b_shape is not None:
        return None
    if not (x.flags.c_contiguous and w.flags.c_contiguous):
        return None
    return x, w, b


def prepared_key(x: np.ndarray, layer: Any) -> tuple[Any, ...] | None:
    """The key of :func:`prepared_arrays` for a call of ``layer`` on ``x`` that the checks
    have just passed, or None when the arrays are not all C-contiguous of ``x``'s float
    dtype (such a call keeps the checked path)."""
    w = layer.weight.data
    b = None if layer.bias is None else layer.bias.data
    dtype = x.dtype
    if type(x) is not np.ndarray or type(w) is not np.ndarray or dtype.kind != "f":
        return None
    if w.dtype is not dtype or not (x.flags.c_contiguous and w.flags.c_contiguous):
        return None
    if b is not None and (
        type(b) is not np.ndarray or b.dtype is not dtype or not b.flags.c_contiguous
    ):
        return None
    return x.shape, w.shape, dtype, None if b is None else b.shape


# --------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------


class Symbolic:
    """Base of the symbolic values graph models are built from (:class:`cnncore.nn.Node`,
    made by :func:`cnncore.nn.Input`).  Calling a module on one -- or on a list holding one --
    records an edge instead of computing: :meth:`Module.__call__` hands the call to
    :meth:`apply_layer` (defined in :mod:`cnncore.nn.graph`, which this module does not
    import)."""

    __slots__ = ()

    def apply_layer(self, layer: Module, inputs: Any) -> Any:
        raise NotImplementedError


class Module:
    """Base class of every layer, loss and container.

    A module holds its parameters (:class:`Parameter`: ``.data`` and ``.grad``), the caches
    its ``backward`` needs from the last ``forward``, and reusable scratch buffers. Layers are
    thin: the numerical work is done by :mod:`cnncore.functional`.

    The manual training step is::

        out = model(x)
        loss = loss_fn(out, y)
        model.backward(loss_fn.backward())
        optimizer.step()
        optimizer.zero_grad()

    Gradients accumulate into ``param.grad`` (``+=``) until :meth:`zero_grad`, as in PyTorch.

    **Model protocol.** :func:`~cnncore.nn.training.fit`, ``evaluate`` and ``predict`` use
    only what every module has: ``model(x)`` (:meth:`forward`), :meth:`backward` (called with
    ``input_grad=False``), :meth:`parameters`, :meth:`train`/:meth:`eval` and ``training``,
    :meth:`children` (to reach every layer for :meth:`reseed`), :attr:`dtype` (inputs are
    converted to it) and the attributes ``loss_fn`` and ``optimizer`` that ``fit`` sets.

    **Registry.** Every subclass joins a registry when its class statement runs, under its
    class name; :func:`cnncore.load` rebuilds saved models from it (``save`` writes the
    registry name and :meth:`get_config` of each module, ``load`` calls :meth:`from_config`
    and then copies the saved arrays in).  A user-defined module therefore saves and loads
    like a built-in one, provided that

    - its class is defined (its module imported) before ``load``: a file can only name
      classes that exist, nothing in it is imported or executed;
    - :meth:`get_config` returns JSON-serializable constructor arguments from which
      ``cls(**config)`` builds the same parameters and buffers (names, shapes, dtypes);
    - a container (a class that overrides :meth:`children`) is rebuilt by
      ``cls(*children, **config)``, or overrides :meth:`from_config`.

    A module that owns arrays should also override :meth:`config_nbytes`, so that ``load``
    refuses a crafted file before allocating anything; without it, its arrays are checked
    against the file's right after it is built.

    Registry names are unique.  Defining a subclass whose name another class already holds
    (``class Linear(nn.Linear)``, or a same-named class of another module) raises ValueError
    at the class statement: give it its own name with
    ``class Linear(nn.Linear, registry_name="mypkg.Linear")``, or keep it out of the registry
    (it cannot be saved then) with ``class Helper(nn.Module, register=False)``.  Defining a
    class again in the same module (re-running a notebook cell, ``importlib.reload``)
    replaces its entry.  :func:`registered_modules` returns the registry.

    **Names.** Every module has a :attr:`name`, unique per process by default as in Keras
    (``conv2d``, ``conv2d_1``, ... from the snake-cased class name: ``batch_norm2d``,
    ``re_lu``), or given with the keyword ``name=`` that every module's constructor accepts
    (subclasses included: ``__init_subclass__`` wraps their ``__init__``, unless it takes a
    ``name`` argument itself).  Graph models
    (:class:`~cnncore.nn.Model`) name parameters ``<layer name>.<parameter>``.

    **Declared properties.** Class attributes a layer sets in its own class body; they are
    not inherited, so a subclass that changes ``forward`` cannot claim them by accident:

    - ``elementwise_monotone``: ``forward`` is elementwise and non-decreasing, and flat
      (zero gradient) wherever it maps different inputs to the same output -- ReLU.
    - ``max_selecting``: each output element is the largest of some input elements, and
      ``backward`` routes its gradient to that element alone -- MaxPool2d.

    An ``elementwise_monotone`` layer directly followed by a ``max_selecting`` one commutes
    with it (outputs and gradients bit-identical), so :class:`~cnncore.nn.Sequential` runs
    it after the pooling, on fewer elements.
    """

    elementwise_monotone: ClassVar[bool] = False
    max_selecting: ClassVar[bool] = False
    _registry_name: ClassVar[str | None] = None
    #: Set by ``fit``: the loss and optimizer of the last training run.
    loss_fn: Module | None = None
    optimizer: Any = None

    def __init__(self) -> None:
        self.training = True
        self._params: dict[str, Parameter] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    # -- structure ------------------------------------------------------------------------
    def children(self) -> list[Module]:
        """Direct sub-modules (containers override this)."""
        return []

    def register_parameter(self, name: str, data: np.ndarray) -> Parameter:
        param = Parameter(data, name)
        param._owner = weakref.ref(self)
        self._params[name] = param
        setattr(self, name, param)
        return param

    def register_buffer(self, name: str, data: np.ndarray) -> np.ndarray:
        """Persistent non-trainable state saved with the model (e.g. running statistics)."""
        arr = np.asarray(data)
        self._buffers[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
        return self._buffers[name]

    def _state_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, child)`` for each direct child: the prefix of its keys in
        :meth:`state_dict`, :meth:`named_parameters` and :meth:`named_buffers`.  The default
        numbers the :meth:`children` ``"0"``, ``"1"``, ... (``torch.nn.Sequential``'s
        names); a container whose children have names (a graph model) overrides this."""
        for i, child in enumerate(self.children()):
            yield str(i), child

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        owner = weakref.ref(self)  # (a copied module claims its copied parameters here)
        for name, p in self._params.items():
            p._owner = owner
            yield prefix + name, p
        for name, child in self._state_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """All trainable parameters of this module and its children, in a fixed order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, b in self._buffers.items():
            yield prefix + name, b
        for name, child in self._state_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers, keyed and laid out as PyTorch's
        ``state_dict()`` of the equivalent torch module (``0.weight``, ``1.running_mean``,
        ``1.num_batches_tracked``; Conv2d weights OIHW, Linear ``(out, in)``).  See
        :mod:`cnncore.nn.state`."""
        return _state.state_dict(self)

    def load_state_dict(
        self, state: Mapping[str, ArrayLike], strict: bool = True
    ) -> _state.IncompatibleKeys:
        """Copy ``state`` (name -> NumPy array or torch tensor, e.g. a torch model's
        ``state_dict()``) into the parameters and buffers, converting to their dtypes.
        ``strict``: missing and unexpected keys raise one ValueError listing them all;
        otherwise they are returned as ``(missing_keys, unexpected_keys)``.  A shape
        mismatch always raises, naming the key and both shapes.  See
        :func:`cnncore.nn.state.load_state_dict`."""
        return _state.load_state_dict(self, state, strict)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    def train(self, mode: bool = True) -> Module:
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def __init_subclass__(
        cls, *, register: bool = True, registry_name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and "name" not in inspect.signature(init).parameters:
            cls.__init__ = _named_init(init)  # type: ignore[method-assign]
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])  # type: ignore[method-assign]
        for flag in _OWN_FLAGS:
            if flag not in cls.__dict__:
                setattr(cls, flag, False)
        cls._registry_name = None
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not register:
            if registry_name is not None:
                raise TypeError(f"{where}: registry_name was given with register=False")
            return
        name = cls.__name__ if registry_name is None else registry_name
        if not isinstance(name, str) or not name:
            raise TypeError(f"{where}: registry_name must be a non-empty str. Received: {name!r}")
        other = _REGISTRY.get(name)
        if other is not None and f"{other.__module__}.{other.__qualname__}" != where:
            raise ValueError(
                f"{where}: the module name {name!r} is already registered by "
                f"{other.__module__}.{other.__qualname__}. Give the class its own name with "
                f"registry_name='...' in the class statement, or define it with "
                f"register=False (it cannot be saved then)"
            )
        _REGISTRY[name] = cls
        cls._registry_name = name

    @classmethod
    def from_config(cls, config: dict[str, Any], children: Sequence[Module] = ()) -> Module:
        """Rebuild a module from its :meth:`get_config` and, for a container, its rebuilt
        children (what ``load`` calls): ``cls(*children, **config)``."""
        return cls(*children, **config)

    @classmethod
    def config_nbytes(cls, config: dict[str, Any]) -> int:
        """Bytes of the parameters and buffers ``cls(**config)`` allocates (not counting
        children), computed from ``config`` alone; 0 for a config the constructor rejects.

        ``load`` sums it over a file's architecture and refuses the file, before building
        anything, when the sum exceeds the bytes of arrays the file holds.  It must accept
        any JSON object without raising.  The default, 0, is right for modules without
        arrays.
        """
        return 0

    def reseed(self, rng: np.random.Generator) -> None:
        """Seed this module's own random generator from ``rng`` (``fit(seed=...)`` calls it
        on every module, parents before children, so runs repeat).  Modules without
        randomness draw nothing (the default)."""

    @property
    def dtype(self) -> np.dtype:
        """The module's dtype: the one given to its constructor (layers with ``dtype=``),
        else that of its first parameter, float32 without parameters.  Models convert their
        input to it."""
        dt = self.__dict__.get("_dtype")
        if dt is not None:
            return dt
        first = self._first_parameter()
        return first.dtype if first is not None else np.dtype(np.float32)

    def _first_parameter(self) -> Parameter | None:
        """The first of :meth:`named_parameters`, found without building the names (a model's
        ``forward`` asks for its dtype on every call)."""
        for p in self._params.values():
            return p
        for _, child in self._state_children():
            p = child._first_parameter()
            if p is not None:
                return p
        return None

    @dtype.setter
    def dtype(self, value: Any) -> None:
        self._dtype = np.dtype(value)

    @property
    def name(self) -> str:
        """The module's name (see Names above); settable."""
        name = self.__dict__.get("_name")
        if name is None:  # a module whose constructor did not run the wrapped __init__
            name = self.__dict__["_name"] = unique_name(snake_case(type(self).__name__))
        return name

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_name"] = check_name(value, f"{type(self).__name__}.name")

    # -- computation ----------------------------------------------------------------------
    def __call__(self, x: Any) -> Any:
        """``forward(x)`` on arrays; on a symbolic :class:`~cnncore.nn.Node` (or a list of
        them, for merge layers) it records the call in the graph and returns the new node."""
        if type(x) is np.ndarray:  # the common case first: a layer call at batch size 1
            return self.forward(x)  # costs a few microseconds in all
        if isinstance(x, Symbolic):
            return x.apply_layer(self, x)
        if isinstance(x, (list, tuple)):
            for v in x:
                if isinstance(v, Symbolic):
                    return v.apply_layer(self, x)
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Accumulate parameter gradients from ``grad_output`` (the gradient w.r.t. the last
        forward's output) and return the gradient w.r.t. its input (None when
        ``input_grad=False``, which lets the first layer of a network skip that work)."""
        raise NotImplementedError(f"{type(self).__name__} must implement backward()")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``forward``'s output for an input of ``input_shape`` (no computation)."""
        return tuple(input_shape)

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A scratch array reused across calls while its shape and dtype stay the same."""
        buf = self._scratch.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != np.dtype(dtype):
            buf = np.empty(shape, dtype=dtype)
            self._scratch[key] = buf
        return buf

    def _cached(self, name: str) -> Any:
        value = self.__dict__.get(name)
        if value is None and not self.training:
            raise RuntimeError(
                f"{type(self).__name__}.backward(): nothing is cached for backward because the "
                f"module is in eval mode, where forward keeps no cache. Call model.train() "
                f"before a training step (cnncore.load returns models in eval mode)"
            )
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward() (or after a forward "
                f"in eval mode that kept no cache)"
            )
        return value

    # -- description ----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serializable (used by ``save``/``load``)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())
