"""Optimizers and learning-rate schedulers for :class:`cnncore.nn.Parameter` objects.

The update rules follow ``torch.optim`` exactly (same formulas, same order of operations,
same defaults): :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop`,
:class:`Adagrad`; and ``torch.optim.lr_scheduler``'s :class:`StepLR`, :class:`MultiStepLR`,
:class:`ExponentialLR`, :class:`CosineAnnealingLR`, :class:`LinearLR`, :class:`OneCycleLR`,
:class:`SequentialLR` and :class:`ReduceLROnPlateau` (each stepped per epoch or per batch as
PyTorch documents it: its ``interval``).
:func:`make_optimizer` builds an optimizer from its name (the table ``fit`` and the
``cnncore`` command share).

Differences from PyTorch
------------------------
- One parameter group per optimizer (no ``param_groups``): every parameter shares the
  hyper-parameters. The learning rate is the attribute ``optimizer.lr`` (settable; that is what
  the schedulers change); the other hyper-parameters are read-only attributes, changed only by
  :meth:`Optimizer.load_state_dict`.
- Every parameter is updated on every :meth:`Optimizer.step` (a gradient is an array, never
  ``None``), so a single ``step_count`` replaces PyTorch's per-parameter ``step``.
- No ``maximize`` / ``foreach`` / ``fused`` / ``capturable`` / ``differentiable`` options.
- :meth:`Optimizer.state_dict` is a flat ``dict`` of str -> float / int / bool / str / tuple /
  ndarray, so ``np.savez(file, **opt.state_dict())`` stores it without pickle.

Updates are in place on ``param.data`` with NumPy ufuncs writing into preallocated buffers
(``out=``): after construction, :meth:`Optimizer.step` allocates no arrays. The parameter's
dtype is kept (float32 parameters are updated in float32, like PyTorch).
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _optim
from ._config import get_num_threads, threads_for
from ._parameter import Parameter, weights_changed
from ._validation import FLOAT_DTYPES, _fmt, check_bool, check_choice, check_int, check_real

# Elements per thread below which a fused update runs on fewer threads (the elementwise
# kernels' block): a parallel region costs more than a small parameter's update, and much
# more when the machine is busy.  Elementwise, so the results do not depend on it.
_UPDATE_BLOCK = 32768
# Parameters of at least this many elements update on all threads even below
# threads_for's bound: the optimizer step follows a multi-threaded backward, whose threads
# are still awake, and the update of a large weight reads and writes five arrays (the README
# CNN's 3136 x 128 weight, 401k elements: SGD with momentum 0.54 -> 0.35 ms per step at 2
# threads, A/B in one process, 2-core AVX-512 VM, load ~2.5).
_UPDATE_MIN_PARALLEL = 4 * _UPDATE_BLOCK


def _update_threads(n: int) -> int:
    if n < _UPDATE_MIN_PARALLEL and threads_for(n) == 1:
        return 1
    return max(1, min(get_num_threads(), -(-n // _UPDATE_BLOCK)))


__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "MultiStepLR",
    "OPTIMIZER_NAMES",
    "OneCycleLR",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "default_lr",
    "make_optimizer",
]


# --------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------


def _unwrap(value: Any) -> Any:
    """0-d arrays (what ``np.load`` gives back for scalars) -> Python scalars."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _check_hyper(value: Any, name: str, func: str, *, high: float | None = None) -> float:
    """A non-negative, finite real hyper-parameter (at most ``high``) as a float.

    The type and the float range are checked by :func:`cnncore._validation.check_real` (so
    ``lr=10**400`` is a ValueError naming ``lr``, not an OverflowError); 0-d arrays, as
    ``np.load`` returns scalars, are accepted.
    """
    value = _unwrap(value)
    v = check_real(value, name, func)
    if not math.isfinite(v):
        raise ValueError(f"{func}(): {name} must be finite. Received: {name}={_fmt(value)}")
    if v < 0:
        raise ValueError(f"{func}(): {name} must be >= 0. Received: {name}={_fmt(value)}")
    if high is not None and v > high:
        raise ValueError(f"{func}(): {name} must be <= {high}. Received: {name}={_fmt(value)}")
    return v


def _check_bool(value: Any, name: str, func: str) -> bool:
    return check_bool(_unwrap(value), name, func)


def _check_int(value: Any, name: str, func: str, *, low: int) -> int:
    return check_int(_unwrap(value), name, func, min_value=low, max_value=None)


def _check_betas(betas: Any, func: str) -> tuple[float, float]:
    if isinstance(betas, np.ndarray):
        betas = betas.tolist()
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(
            f"{func}(): betas must be a pair of floats (beta1, beta2). "
            f"Received: betas={_fmt(betas)}"
        )
    out = []
    for b in betas:
        b = _unwrap(b)
        if isinstance(b, (bool, np.bool_)) or not isinstance(
            b, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"{func}(): betas must be a pair of floats (beta1, beta2). "
                f"Received: betas={_fmt(betas)}"
            )
        if not 0.0 <= float(b) < 1.0:  # also rejects nan
            raise ValueError(
                f"{func}(): betas must be in [0, 1) each. Received: betas={_fmt(tuple(betas))}"
            )
        out.append(float(b))
    return out[0], out[1]


def _collect_params(params: Any, func: str) -> tuple[Parameter, ...]:
    hint = "an iterable of cnncore.nn.Parameter objects"
    if isinstance(params, Parameter):
        raise TypeError(
            f"{func}(): params must be {hint}, not a single Parameter (wrap it in a list). "
            f"Received: params={params!r}"
        )
    if isinstance(params, (str, bytes, np.ndarray, dict)):
        raise TypeError(f"{func}(): params must be {hint}. Received: params={_fmt(params)}")
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"{func}(): params must be {hint}. Received: params of type {type(params).__name__}"
        ) from None
    if not items:
        raise ValueError(f"{func}(): params must not be empty. Received: params=[]")
    seen: dict[int, int] = {}
    for i, p in enumerate(items):
        if isinstance(p, dict):
            raise TypeError(
                f"{func}(): parameter groups (dicts) are not supported; cnncore optimizers have "
                f"a single group. Received: params[{i}] of type dict"
            )
        if not isinstance(p, Parameter):
            raise TypeError(
                f"{func}(): params must be {hint}. Received: params[{i}] of type {type(p).__name__}"
            )
        if p.data.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{func}(): parameters must have dtype float32 or float64. "
                f"Received: params[{i}].data.dtype={p.data.dtype}"
            )
        if id(p) in seen:
            raise ValueError(
                f"{func}(): params contains the same Parameter twice "
                f"(params[{seen[id(p)]}] and params[{i}]). Received: params[{i}]={p!r}"
            )
        seen[id(p)] = i
    return tuple(items)


def _hyper_property(name: str, doc: str) -> property:
    return property(lambda self: self._hyper[name], doc=doc)


# --------------------------------------------------------------------------------------------
# Shared in-place building blocks (mirroring the ATen ops torch.optim uses)
# --------------------------------------------------------------------------------------------


def _l2(grad: np.ndarray, data: np.ndarray, weight_decay: float, out: np.ndarray) -> np.ndarray:
    """``grad + weight_decay * data`` into ``out`` (torch: ``grad.add(param, alpha=wd)``)."""
    np.multiply(data, weight_decay, out=out)
    np.add(grad, out, out=out)
    return out


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``start.lerp_(end, weight)`` with ATen's two-branch formula."""
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        np.multiply(tmp, weight, out=tmp)
        np.add(start, tmp, out=start)
    else:
        np.multiply(tmp, weight - 1.0, out=tmp)
        np.add(end, tmp, out=start)


# --------------------------------------------------------------------------------------------
# Optimizer base
# --------------------------------------------------------------------------------------------


class Optimizer:
    """Base class: holds the parameters, the learning rate, the state buffers.

    Subclasses define ``_validate`` (normalize the hyper-parameters), ``_buffers`` (names and
    initial values of the per-parameter state arrays) and ``_update`` (one parameter's step).

    Parameters
    ----------
    params : iterable of Parameter
        The parameters to optimize (at least one, each once, float32 or float64; the dtypes may
        differ between parameters).
    lr : float
        Learning rate, >= 0.

    Attributes
    ----------
    params : tuple of Parameter
    lr : float
        The learning rate, settable (validated); schedulers change it.
    step_count : int
        Number of :meth:`step` calls so far.
    """

    #: Names of the hyper-parameters other than ``lr``, in constructor order.
    _hyper_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float, **hyper: Any) -> None:
        func = type(self).__name__
        self._params = _collect_params(params, func)
        self._lr = _check_hyper(lr, "lr", func)
        self._hyper = self._validate(func, **hyper)
        self._step_count = 0
        self._state = self._allocate(self._hyper)
        # The learning rate when the first scheduler was attached (torch's
        # ``group["initial_lr"]``, set with setdefault): every scheduler's ``base_lr``.
        self._initial_lr: float | None = None
        # Two scratch arrays per dtype, as large as the largest parameter of that dtype; each
        # parameter gets views of the right shape (made once, here).
        sizes: dict[np.dtype, int] = {}
        for p in self._params:
            sizes[p.data.dtype] = max(sizes.get(p.data.dtype, 0), p.data.size)
        scratch = {dt: np.empty((2, n), dtype=dt) for dt, n in sizes.items()}
        self._scratch = [
            (
                scratch[p.data.dtype][0, : p.data.size].reshape(p.data.shape),
                scratch[p.data.dtype][1, : p.data.size].reshape(p.data.shape),
            )
            for p in self._params
        ]

    # -- to be provided by subclasses ------------------------------------------------------

    @classmethod
    def _validate(cls, func: str, **hyper: Any) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _buffers(hyper: dict[str, Any]) -> dict[str, float]:
        """Name -> initial fill value of each per-parameter state array."""
        return {}

    def _update(
        self,
        data: np.ndarray,
        grad: np.ndarray,
        state: dict[str, np.ndarray],
        s0: np.ndarray,
        s1: np.ndarray,
        t: int,
    ) -> None:
        raise NotImplementedError

    def _update_all(self, t: int) -> None:
        """Update every parameter (checked by :meth:`step`): :meth:`_update` on each; a
        subclass may update them all in one kernel call instead."""
        for p, state, (s0, s1) in zip(self._params, self._state, self._scratch, strict=True):
            self._update(p.data, p.grad, state, s0, s1, t)

    # -- public API ------------------------------------------------------------------------

    @property
    def params(self) -> tuple[Parameter, ...]:
        """The optimized parameters, in the order given."""
        return self._params

    @property
    def lr(self) -> float:
        """The learning rate (>= 0)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_hyper(value, "lr", type(self).__name__)

    @property
    def step_count(self) -> int:
        """Number of :meth:`step` calls so far."""
        return self._step_count

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to zero (in place)."""
        for p in self._params:
            p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter in place from its current ``grad``.

        Raises
        ------
        TypeError, ValueError
            If a parameter's ``data`` or ``grad`` no longer has the shape and dtype the
            optimizer was built for (nothing is updated then).
        """
        func = f"{type(self).__name__}.step"
        for i, (p, (s0, _)) in enumerate(zip(self._params, self._scratch, strict=True)):
            data, grad = p.data, p.grad
            if not isinstance(data, np.ndarray) or data.shape != s0.shape or data.dtype != s0.dtype:
                raise ValueError(
                    f"{func}(): params[{i}].data was replaced by an array of another shape or "
                    f"dtype; build a new optimizer. Expected shape {s0.shape} and dtype "
                    f"{s0.dtype}. Received: {type(data).__name__} with shape "
                    f"{getattr(data, 'shape', None)}, dtype {getattr(data, 'dtype', None)}"
                )
            if not isinstance(grad, np.ndarray):
                raise TypeError(
                    f"{func}(): params[{i}].grad must be an ndarray. "
                    f"Received: params[{i}].grad of type {type(grad).__name__}"
                )
            if grad.dtype != data.dtype:
                raise TypeError(
                    f"{func}(): params[{i}].grad must have the parameter's dtype {data.dtype}. "
                    f"Received: params[{i}].grad.dtype={grad.dtype}"
                )
            if grad.shape != data.shape:
                raise ValueError(
                    f"{func}(): params[{i}].grad must have the parameter's shape {data.shape}. "
                    f"Received: params[{i}].grad.shape={grad.shape}"
                )
        if not self._orphans_reported:
            self._warn_if_orphaned(func)
        t = self._step_count + 1
        self._update_all(t)
        weights_changed()
        self._step_count = t

    #: Set once :meth:`step` has warned that no live model owns the parameters.
    _orphans_reported = False

    def _warn_if_orphaned(self, func: str) -> None:
        """Warn (once) when every parameter that a module registered has lost that module:
        the optimizer then updates arrays no model uses any more, e.g. after
        ``model = cnncore.load(...)`` replaced the model it was built for."""
        owners = [p._owner for p in self._params if p._owner is not None]
        if owners and all(ref() is None for ref in owners):
            self._orphans_reported = True
            warnings.warn(
                f"{func}(): none of the {len(self._params)} parameters this optimizer updates "
                f"belongs to a live model any more (was the model replaced, e.g. by "
                f"model = cnncore.load(...)?), so this step changes no model. Build a new "
                f"optimizer over the current model: {type(self).__name__}(model.parameters(), "
                f"...)",
                RuntimeWarning,
                stacklevel=3,
            )

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as a flat dict (copies), loadable by :meth:`load_state_dict`.

        Keys: ``"optimizer"`` (class name), ``"num_params"``, ``"step_count"``, ``"lr"``, the
        hyper-parameters by constructor name, and ``"state.<i>.<buffer>"`` arrays (e.g.
        ``"state.0.exp_avg"``). Values are plain Python scalars / tuples / ndarrays, so
        ``np.savez(f, **sd)`` and ``dict(np.load(f, allow_pickle=False))`` round-trip it.
        """
        sd: dict[str, Any] = {
            "optimizer": type(self).__name__,
            "num_params": len(self._params),
            "step_count": self._step_count,
            "lr": self._lr,
        }
        sd.update(self._hyper)
        for i, state in enumerate(self._state):
            for name, buf in state.items():
                sd[f"state.{i}.{name}"] = buf.copy()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the learning rate, hyper-parameters, step count and state buffers.

        Everything is validated before anything changes: on error the optimizer is untouched.
        Buffers are copied into this optimizer's arrays (cast to each parameter's dtype).

        Raises
        ------
        ValueError
            If the dict comes from another optimizer class or another set of parameters
            (count, shapes), or a key is missing; TypeError/ValueError for bad values.
        """
        func = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"{func}(): state_dict must be a dict. "
                f"Received: state_dict of type {type(state_dict).__name__}"
            )

        def get(key: str) -> Any:
            if key not in state_dict:
                raise ValueError(f"{func}(): state_dict is missing the key {key!r}")
            return _unwrap(state_dict[key])

        kind = get("optimizer")
        if kind != type(self).__name__:
            raise ValueError(
                f"{func}(): state_dict was saved by another optimizer. Expected "
                f"optimizer={type(self).__name__!r}. Received: optimizer={_fmt(kind)}"
            )
        n = _check_int(get("num_params"), "num_params", func, low=0)
        if n != len(self._params):
            raise ValueError(
                f"{func}(): state_dict is for {n} parameters but this optimizer has "
                f"{len(self._params)}. Received: num_params={n}"
            )
        step_count = _check_int(get("step_count"), "step_count", func, low=0)
        lr = _check_hyper(get("lr"), "lr", func)
        hyper = self._validate(func, **{k: get(k) for k in self._hyper_names})
        new_state = self._allocate(hyper)
        for i, (p, state) in enumerate(zip(self._params, new_state, strict=True)):
            for name, buf in state.items():
                key = f"state.{i}.{name}"
                arr = np.asarray(get(key))
                if arr.shape != p.data.shape:
                    raise ValueError(
                        f"{func}(): {key} must have the parameter's shape {p.data.shape}. "
                        f"Received: {key}.shape={arr.shape}"
                    )
                if arr.dtype.kind != "f":
                    raise TypeError(
                        f"{func}(): {key} must be a float array. Received: {key}.dtype={arr.dtype}"
                    )
                np.copyto(buf, arr, casting="same_kind")
        self._lr, self._hyper, self._step_count, self._state = lr, hyper, step_count, new_state

    def __repr__(self) -> str:
        args = [f"lr={self._lr!r}"] + [f"{k}={v!r}" for k, v in self._hyper.items()]
        return f"{type(self).__name__}({', '.join(args)}, params={len(self._params)})"

    def _set_hyper(self, name: str, value: Any, func: str) -> None:
        """Change one hyper-parameter (what :class:`OneCycleLR` does to the momentum),
        validated like the constructor's.  A change that needs state buffers the optimizer
        does not have (momentum turned on) is allowed only before the first step."""
        hyper = dict(self._hyper)
        hyper[name] = value
        hyper = self._validate(func, **hyper)
        if set(self._buffers(hyper)) != set(self._buffers(self._hyper)):
            if self._step_count:
                raise ValueError(
                    f"{func}(): {type(self).__name__}'s {name} can only be switched on before "
                    f"the first step (its state buffers start then). Received: {name}="
                    f"{_fmt(value)} after {self._step_count} steps"
                )
            self._state = self._allocate(hyper)
        self._hyper = hyper

    # -- helpers ---------------------------------------------------------------------------

    def _allocate(self, hyper: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        fills = self._buffers(hyper)
        return [
            {name: np.full(p.data.shape, fill, dtype=p.data.dtype) for name, fill in fills.items()}
            for p in self._params
        ]


# --------------------------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------------------------


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 decay.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float
        Learning rate, >= 0 (required, as in PyTorch).
    momentum : float, default 0
        Momentum factor, >= 0.
    dampening : float, default 0
        Dampening for momentum, in [0, 1].
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0.

    Notes
    -----
    As ``torch.optim.SGD``, with :math:`g_t` the gradient, :math:`\mu` the momentum and
    :math:`\tau` the dampening:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad (\text{if weight decay } \lambda) \\
        b_t &= g_t \text{ at the first step, else } \mu b_{t-1} + (1 - \tau) g_t \\
        g_t &\leftarrow g_t + \mu b_t \text{ (Nesterov) or } b_t \quad (\text{if } \mu \ne 0) \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    The momentum buffer is the gradient itself at the first step (not zero-initialised).

    See Also
    --------
    torch.optim.SGD
    """

    _hyper_names = ("momentum", "dampening", "nesterov", "weight_decay")
    momentum = _hyper_property("momentum", "Momentum factor.")
    dampening = _hyper_property("dampening", "Dampening for momentum.")
    nesterov = _hyper_property("nesterov", "Whether Nesterov momentum is used.")
    weight_decay = _hyper_property("weight_decay", "L2 penalty coefficient.")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
        )

    @classmethod
    def _validate(
        cls, func: str, *, momentum: Any, dampening: Any, nesterov: Any, weight_decay: Any
    ) -> dict[str, Any]:
        out = {
            "momentum": _check_hyper(momentum, "momentum", func),
            "dampening": _check_hyper(dampening, "dampening", func, high=1),
            "nesterov": _check_bool(nesterov, "nesterov", func),
            "weight_decay": _check_hyper(weight_decay, "weight_decay", func),
        }
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(
                f"{func}(): nesterov=True requires momentum > 0 and dampening == 0. "
                f"Received: nesterov=True, momentum={_fmt(momentum)}, dampening={_fmt(dampening)}"
            )
        return out

    @staticmethod
    def _buffers(hyper: dict[str, Any]) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if hyper["momentum"] != 0 else {}

    def _update_all(self, t: int) -> None:
        # All parameters of a dtype in one kernel call (_optim.sgd_update_many: tasks of
        # _UPDATE_BLOCK elements of their concatenation, so small parameters share a task),
        # the same element operations as _update: one call instead of a Python call and a
        # parallel region per parameter (ResNet-20 has 65 parameters, most of 16-64 elements).
        h = self._hyper
        params, states = self._params, self._state
        use_m = h["momentum"] != 0
        for dtype_params in self._dtype_groups():
            data = [params[i].data for i in dtype_params]
            grad = [params[i].grad for i in dtype_params]
            buf = [states[i]["momentum_buffer"] for i in dtype_params] if use_m else data
            n = sum(d.size for d in data)
            if not _optim.sgd_update_many(
                data,
                grad,
                buf,
                self._lr,
                h["momentum"],
                h["dampening"],
                h["weight_decay"],
                h["nesterov"],
                t == 1,
                _UPDATE_BLOCK,
                _update_threads(n),
            ):  # (an array not C-contiguous: one by one, through reshaped copies' views)
                for i in dtype_params:
                    s0, s1 = self._scratch[i]
                    self._update(params[i].data, params[i].grad, states[i], s0, s1, t)

    def _dtype_groups(self) -> list[list[int]]:
        """The parameters' indices grouped by dtype (which ``step`` keeps fixed)."""
        groups = self.__dict__.get("_groups")
        if groups is None:
            by: dict[np.dtype, list[int]] = {}
            for i, p in enumerate(self._params):
                by.setdefault(p.data.dtype, []).append(i)
            groups = self.__dict__["_groups"] = list(by.values())
        return groups

    def _update(self, data, grad, state, s0, s1, t):
        # One fused pass (cnncore/_optim.pyx), the exact operations of PyTorch's single-tensor
        # SGD: g = grad + wd * p; buf = g (first step) or momentum * buf + (1 - dampening) * g;
        # g = g + momentum * buf (nesterov) or buf; p = p - lr * g.
        h = self._hyper
        buf = state.get("momentum_buffer")
        _optim.sgd_update(
            data.reshape(-1),
            grad.reshape(-1),
            data.reshape(-1) if buf is None else buf.reshape(-1),
            self._lr,
            h["momentum"],
            h["dampening"],
            h["weight_decay"],
            h["nesterov"],
            t == 1,
            _update_threads(data.size),
        )


# --------------------------------------------------------------------------------------------
# Adam / AdamW
# --------------------------------------------------------------------------------------------


class Adam(Optimizer):
    r"""Adam, with optional AMSGrad and L2 weight decay (added to the gradient).

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-3
        Learning rate, >= 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the running averages of the gradient and its square, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, >= 0.
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0 (see :class:`AdamW` for decoupled decay).
    amsgrad : bool, default False
        Use the maximum of the past second-moment averages (AMSGrad).

    Notes
    -----
    As ``torch.optim.Adam``:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`\hat v_t = v_t`, or :math:`\max(\hat v_{t-1}, v_t)` with AMSGrad. Note that
    :math:`\epsilon` is added *after* the bias correction of :math:`\sqrt{v_t}`.

    See Also
    --------
    AdamW, torch.optim.Adam
    """

    _hyper_names = ("betas", "eps", "weight_decay", "amsgrad")
    _decoupled = False
    betas = _hyper_property("betas", "(beta1, beta2).")
    eps = _hyper_property("eps", "Term added to the denominator.")
    weight_decay = _hyper_property("weight_decay", "Weight decay coefficient.")
    amsgrad = _hyper_property("amsgrad", "Whether AMSGrad is used.")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(
            params, lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
        )

    @classmethod
    def _validate(
        cls, func: str, *, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any
    ) -> dict[str, Any]:
        return {
            "betas": _check_betas(betas, func),
            "eps": _check_hyper(eps, "eps", func),
            "weight_decay": _check_hyper(weight_decay, "weight_decay", func),
            "amsgrad": _check_bool(amsgrad, "amsgrad", func),
        }

    @staticmethod
    def _buffers(hyper: dict[str, Any]) -> dict[str, float]:
        out = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if hyper["amsgrad"]:
            out["max_exp_avg_sq"] = 0.0
        return out

    def _update(self, data, grad, state, s0, s1, t):
        # One fused pass (cnncore/_optim.pyx), the exact operations of PyTorch's single-tensor
        # Adam/AdamW: decay p (AdamW) or g = grad + wd * p (Adam); m.lerp_(g, 1 - beta1);
        # v = beta2 * v + (1 - beta2) * g * g; vmax = max(vmax, v) (amsgrad);
        # p += -lr / (1 - beta1**t) * m / (sqrt(v or vmax) / sqrt(1 - beta2**t) + eps).
        h = self._hyper
        beta1, beta2 = h["betas"]
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        vmax = state.get("max_exp_avg_sq")
        _optim.adam_update(
            data.reshape(-1),
            grad.reshape(-1),
            state["exp_avg"].reshape(-1),
            state["exp_avg_sq"].reshape(-1),
            None if vmax is None else vmax.reshape(-1),
            self._lr,
            beta1,
            beta2,
            h["eps"],
            h["weight_decay"],
            self._decoupled,
            self._lr / bias_correction1,
            bias_correction2_sqrt,
            _update_threads(data.size),
        )


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter).

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 1e-2
        Decoupled decay: before the Adam step, :math:`\theta \leftarrow \theta (1 - \gamma
        \lambda)`; the gradient itself is not modified.
    amsgrad : bool, default False

    Notes
    -----
    As ``torch.optim.AdamW``: identical to :class:`Adam` except for the weight decay.

    See Also
    --------
    Adam, torch.optim.AdamW
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(
            params, lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
        )


# --------------------------------------------------------------------------------------------
# RMSprop
# --------------------------------------------------------------------------------------------


class RMSprop(Optimizer):
    r"""RMSprop, with optional momentum, centering and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-2
    alpha : float, default 0.99
        Smoothing constant of the squared-gradient average, in [0, 1].
    eps : float, default 1e-8
        Added to the denominator, >= 0.
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0.
    momentum : float, default 0
        Momentum factor, >= 0.
    centered : bool, default False
        Normalize by an estimate of the gradient's variance instead of its second moment.

    Notes
    -----
    As ``torch.optim.RMSprop``:

    .. math::
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2, \quad
        \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ (centered) or }
            \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
        \text{ (momentum } \mu > 0 \text{, else } \theta_t = \theta_{t-1} - \gamma g_t / d_t)

    All buffers start at zero.

    See Also
    --------
    torch.optim.RMSprop
    """

    _hyper_names = ("alpha", "eps", "weight_decay", "momentum", "centered")
    alpha = _hyper_property("alpha", "Smoothing constant.")
    eps = _hyper_property("eps", "Term added to the denominator.")
    weight_decay = _hyper_property("weight_decay", "L2 penalty coefficient.")
    momentum = _hyper_property("momentum", "Momentum factor.")
    centered = _hyper_property("centered", "Whether the centered variant is used.")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
        )

    @classmethod
    def _validate(
        cls, func: str, *, alpha: Any, eps: Any, weight_decay: Any, momentum: Any, centered: Any
    ) -> dict[str, Any]:
        return {
            "alpha": _check_hyper(alpha, "alpha", func, high=1),
            "eps": _check_hyper(eps, "eps", func),
            "weight_decay": _check_hyper(weight_decay, "weight_decay", func),
            "momentum": _check_hyper(momentum, "momentum", func),
            "centered": _check_bool(centered, "centered", func),
        }

    @staticmethod
    def _buffers(hyper: dict[str, Any]) -> dict[str, float]:
        out = {"square_avg": 0.0}
        if hyper["momentum"] > 0:
            out["momentum_buffer"] = 0.0
        if hyper["centered"]:
            out["grad_avg"] = 0.0
        return out

    def _update(self, data, grad, state, s0, s1, t):
        h = self._hyper
        alpha, wd, momentum = h["alpha"], h["weight_decay"], h["momentum"]
        g = _l2(grad, data, wd, s0) if wd != 0 else grad
        square_avg = state["square_avg"]
        np.multiply(square_avg, alpha, out=square_avg)
        np.multiply(g, 1.0 - alpha, out=s1)
        np.multiply(s1, g, out=s1)
        np.add(square_avg, s1, out=square_avg)
        if h["centered"]:
            grad_avg = state["grad_avg"]
            _lerp_(grad_avg, g, 1.0 - alpha, s1)
            np.multiply(grad_avg, grad_avg, out=s1)
            np.subtract(square_avg, s1, out=s1)
            np.sqrt(s1, out=s1)
        else:
            np.sqrt(square_avg, out=s1)
        np.add(s1, h["eps"], out=s1)  # s1 = avg
        if momentum > 0:
            buf = state["momentum_buffer"]
            np.multiply(buf, momentum, out=buf)
            np.divide(g, s1, out=s1)
            np.add(buf, s1, out=buf)
            np.multiply(buf, -self._lr, out=s1)
            np.add(data, s1, out=data)
        else:
            np.multiply(g, -self._lr, out=s0)
            np.divide(s0, s1, out=s0)
            np.add(data, s0, out=data)


# --------------------------------------------------------------------------------------------
# Adagrad
# --------------------------------------------------------------------------------------------


class Adagrad(Optimizer):
    r"""Adagrad, with optional learning-rate decay and L2 weight decay.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float, default 1e-2
    lr_decay : float, default 0
        The step size at step :math:`t` is :math:`\gamma / (1 + (t - 1)\,\text{lr\_decay})`.
    weight_decay : float, default 0
        L2 penalty added to the gradient, >= 0.
    initial_accumulator_value : float, default 0
        Initial value of the sum of squared gradients, >= 0.
    eps : float, default 1e-10
        Added to the denominator, >= 0.

    Notes
    -----
    As ``torch.optim.Adagrad``:

    .. math::
        s_t = s_{t-1} + g_t^2, \quad
        \theta_t = \theta_{t-1} - \frac{\gamma}{1 + (t - 1)\,\text{lr\_decay}}\,
            \frac{g_t}{\sqrt{s_t} + \epsilon}

    See Also
    --------
    torch.optim.Adagrad
    """

    _hyper_names = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    lr_decay = _hyper_property("lr_decay", "Learning-rate decay.")
    weight_decay = _hyper_property("weight_decay", "L2 penalty coefficient.")
    initial_accumulator_value = _hyper_property(
        "initial_accumulator_value", "Initial value of the accumulators."
    )
    eps = _hyper_property("eps", "Term added to the denominator.")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(
            params,
            lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )

    @classmethod
    def _validate(
        cls,
        func: str,
        *,
        lr_decay: Any,
        weight_decay: Any,
        initial_accumulator_value: Any,
        eps: Any,
    ) -> dict[str, Any]:
        return {
            "lr_decay": _check_hyper(lr_decay, "lr_decay", func),
            "weight_decay": _check_hyper(weight_decay, "weight_decay", func),
            "initial_accumulator_value": _check_hyper(
                initial_accumulator_value, "initial_accumulator_value", func
            ),
            "eps": _check_hyper(eps, "eps", func),
        }

    @staticmethod
    def _buffers(hyper: dict[str, Any]) -> dict[str, float]:
        return {"sum": hyper["initial_accumulator_value"]}

    def _update(self, data, grad, state, s0, s1, t):
        h = self._hyper
        wd = h["weight_decay"]
        g = _l2(grad, data, wd, s0) if wd != 0 else grad
        clr = self._lr / (1 + (t - 1) * h["lr_decay"])
        acc = state["sum"]
        np.multiply(g, g, out=s1)
        np.add(acc, s1, out=acc)
        np.sqrt(acc, out=s1)
        np.add(s1, h["eps"], out=s1)
        np.multiply(g, -clr, out=s0)
        np.divide(s0, s1, out=s0)
        np.add(data, s0, out=data)


# --------------------------------------------------------------------------------------------
# Optimizers by name (the one table: ``fit(optimizer="adam")`` and the ``cnncore`` command)
# --------------------------------------------------------------------------------------------

#: name -> (class, default learning rate for ``defaults="fit"``, for ``defaults="cli"``); None
#: is the class's own default.  ``fit`` keeps the classes' defaults (SGD has none: 0.01); the
#: command line's rates are tuned for its models and data.
_BY_NAME: dict[str, tuple[type[Optimizer], float | None, float]] = {
    "sgd": (SGD, 0.01, 0.05),
    "adam": (Adam, None, 1e-3),
    "adamw": (AdamW, None, 1e-3),
    "rmsprop": (RMSprop, None, 1e-3),
    "adagrad": (Adagrad, None, 1e-2),
}

#: The names :func:`make_optimizer` accepts, sorted.
OPTIMIZER_NAMES: tuple[str, ...] = tuple(sorted(_BY_NAME))


def make_optimizer(
    name: str,
    params: Iterable[Parameter],
    *,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    defaults: str = "fit",
    func: str = "make_optimizer",
) -> Optimizer:
    """An optimizer chosen by name: ``'sgd'``, ``'adam'``, ``'adamw'``, ``'rmsprop'`` or
    ``'adagrad'`` (case-insensitive; see :data:`OPTIMIZER_NAMES`).

    Parameters
    ----------
    name : str
    params : iterable of Parameter
    lr : float, optional
        The learning rate; None takes the default of ``defaults``.
    momentum : float, optional
        SGD's momentum (default 0). The other names ignore it (build :class:`RMSprop`
        directly for its momentum).
    weight_decay : float, optional
        None keeps the class's default (0, or 1e-2 for AdamW).
    defaults : {'fit', 'cli'}, default 'fit'
        Which default learning rates: ``'fit'`` those of ``Sequential.fit(optimizer=name)``
        (the classes' own; SGD 0.01), ``'cli'`` those of the ``cnncore train`` command
        (SGD 0.05, Adam/AdamW/RMSprop 1e-3, Adagrad 1e-2).
    func : str
        The function named in error messages.

    Raises
    ------
    ValueError
        For an unknown name (and, from the optimizer, for invalid values).
    """
    if not isinstance(name, str):
        raise TypeError(
            f"{func}(): optimizer must be a name. Received: optimizer of type {type(name).__name__}"
        )
    key = name.lower()
    if key not in _BY_NAME:
        raise ValueError(
            f"{func}(): unknown optimizer name. Expected one of {list(OPTIMIZER_NAMES)}. "
            f"Received: optimizer={name!r}"
        )
    cls = _BY_NAME[key][0]
    kwargs: dict[str, Any] = {}
    if lr is None:
        lr = default_lr(key, defaults, func=func)
    if lr is not None:  # else the class's own default
        kwargs["lr"] = lr
    if momentum is not None and cls is SGD:
        kwargs["momentum"] = momentum
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return cls(params, **kwargs)


def default_lr(name: str, defaults: str = "fit", *, func: str = "default_lr") -> float | None:
    """The learning rate :func:`make_optimizer` gives optimizer ``name`` when none is passed
    (None: the class's own default); ``defaults`` as in :func:`make_optimizer`."""
    check_choice(defaults, "defaults", func, ("fit", "cli"))
    _, fit_lr, cli_lr = _BY_NAME[name.lower()]
    return fit_lr if defaults == "fit" else cli_lr


# --------------------------------------------------------------------------------------------
# Learning-rate schedulers
# --------------------------------------------------------------------------------------------

_INTERVALS = ("epoch", "batch")


def _check_factor(value: Any, name: str, func: str, *, low_open: bool = False) -> float:
    """A factor in [0, 1] ((0, 1] with ``low_open``), as torch checks LinearLR's."""
    v = _check_hyper(value, name, func, high=1)
    if low_open and v == 0:
        raise ValueError(f"{func}(): {name} must be > 0. Received: {name}={_fmt(value)}")
    return v


def _check_milestones(value: Any, func: str, *, strict: bool) -> tuple[int, ...]:
    """Epoch indices: a sequence of ints >= 0 (>= 1 and strictly increasing with ``strict``),
    returned sorted."""
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{func}(): milestones must be a list of ints. Received: milestones={_fmt(value)}"
        )
    out = tuple(_check_int(v, "milestones", func, low=1 if strict else 0) for v in value)
    if strict and any(b <= a for a, b in zip(out[:-1], out[1:], strict=True)):
        raise ValueError(
            f"{func}(): milestones must be strictly increasing. Received: milestones={list(out)}"
        )
    return tuple(sorted(out))


class LRScheduler:
    """Base class: changes ``optimizer.lr`` once per :meth:`step`.

    Each scheduler is stepped per epoch or per batch, as PyTorch documents for it (the
    attribute :attr:`interval`, which ``fit`` follows): call :meth:`step` after the
    epoch's (or the batch's) ``optimizer.step()``.

    As in PyTorch, the schedules are computed recursively from the optimizer's current ``lr``
    (so they compose with manual changes); creating a scheduler sets ``lr`` to its value at
    step 0 (unchanged for :class:`StepLR`, :class:`ExponentialLR`,
    :class:`CosineAnnealingLR`, :class:`MultiStepLR`; ``start_factor * lr`` for
    :class:`LinearLR`, ``max_lr / div_factor`` for :class:`OneCycleLR`).

    Attributes
    ----------
    optimizer : Optimizer
    base_lr : float
        The optimizer's learning rate when its first scheduler was created (PyTorch's
        ``initial_lr``, shared by every scheduler of the optimizer).
    last_epoch : int
        Number of :meth:`step` calls so far.
    interval : {'epoch', 'batch'}
        When ``fit`` steps the scheduler: after every epoch (the default of every scheduler
        but :class:`OneCycleLR`) or after every batch. Settable.
    """

    _hyper_names: tuple[str, ...] = ()
    _default_interval = "epoch"

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}(): optimizer must be a cnncore.optim.Optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if optimizer._initial_lr is None:
            optimizer._initial_lr = optimizer.lr
        self.base_lr: float = optimizer._initial_lr
        self._interval = self._default_interval
        self._initial_step()

    # -- to be provided by subclasses ------------------------------------------------------

    def _next_lr(self, lr: float) -> float:
        """The learning rate after step ``last_epoch`` (already incremented), from the
        current one (torch's ``get_lr``)."""
        raise NotImplementedError

    def _initial_lr_value(self, lr: float) -> float:
        """The learning rate set at creation (step 0)."""
        return lr

    def _closed_form_lr(self) -> float | None:
        """The learning rate at ``last_epoch`` from ``base_lr`` alone (torch's
        ``_get_closed_form_lr``), None if the schedule has no closed form."""
        return None

    # -- public API ------------------------------------------------------------------------

    @property
    def interval(self) -> str:
        """``'epoch'`` or ``'batch'``: when ``fit`` calls :meth:`step`."""
        return self._interval

    @interval.setter
    def interval(self, value: str) -> None:
        self._interval = check_choice(value, "interval", type(self).__name__, _INTERVALS)

    def _undo(self) -> None:
        """Undo the creation step's count (torch's ``recursive_undo``)."""
        self.last_epoch -= 1

    def _initial_step(self) -> None:
        self.last_epoch = 0
        self.optimizer.lr = self._initial_lr_value(self.optimizer.lr)
        self._last_lr: float = self.optimizer.lr

    def step(self) -> None:
        """Advance one step (epoch or batch) and set ``optimizer.lr`` to the new learning
        rate."""
        self.last_epoch += 1
        self.optimizer.lr = self._next_lr(self.optimizer.lr)
        self._last_lr = self.optimizer.lr

    def _restart(self) -> None:
        """Jump to step 0 (what :class:`SequentialLR` does at a milestone: torch's
        ``_update_lr(0)``)."""
        self.last_epoch = 0
        lr = self._closed_form_lr()
        self.optimizer.lr = self._next_lr(self.optimizer.lr) if lr is None else lr
        self._last_lr = self.optimizer.lr

    def get_last_lr(self) -> list[float]:
        """The learning rate set by the last :meth:`step` (a one-element list, as PyTorch's
        one-entry-per-group list)."""
        return [self._last_lr]

    def state_dict(self) -> dict[str, Any]:
        """Flat dict of plain scalars (``base_lr``, ``last_epoch``, ``last_lr``,
        ``interval`` and the schedule's parameters and state)."""
        sd = {
            "scheduler": type(self).__name__,
            "base_lr": self.base_lr,
            "last_epoch": self.last_epoch,
            "last_lr": self._last_lr,
            "interval": self._interval,
        }
        sd.update({k: getattr(self, k) for k in self._hyper_names})
        sd.update(self._extra_state())
        return sd

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state_dict: dict[str, Any], func: str) -> Any:
        """Validate the subclass's own state entries; return a callable that applies them
        (called only when everything is valid)."""
        return lambda: None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the optimizer's ``lr`` is restored by
        the optimizer's own ``load_state_dict``). Everything is validated before anything
        changes."""
        func = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"{func}(): state_dict must be a dict. "
                f"Received: state_dict of type {type(state_dict).__name__}"
            )
        kind = _unwrap(state_dict.get("scheduler"))
        if kind != type(self).__name__:
            raise ValueError(
                f"{func}(): state_dict was saved by another scheduler. Expected "
                f"scheduler={type(self).__name__!r}. Received: scheduler={_fmt(kind)}"
            )
        missing = [
            k
            for k in ("base_lr", "last_epoch", "last_lr", *self._hyper_names)
            if k not in state_dict
        ]
        if missing:
            raise ValueError(f"{func}(): state_dict is missing the key(s) {missing}")
        values = self._validate(func, **{k: state_dict[k] for k in self._hyper_names})
        base_lr = _check_hyper(state_dict["base_lr"], "base_lr", func)
        last_lr = _check_hyper(state_dict["last_lr"], "last_lr", func)
        last_epoch = _check_int(state_dict["last_epoch"], "last_epoch", func, low=-1)
        interval = check_choice(
            _unwrap(state_dict.get("interval", self._interval)), "interval", func, _INTERVALS
        )
        apply_extra = self._load_extra(state_dict, func)
        for k, v in values.items():
            setattr(self, k, v)
        self.base_lr, self._last_lr, self.last_epoch = base_lr, last_lr, last_epoch
        self._interval = interval
        apply_extra()

    @classmethod
    def _validate(cls, func: str, **hyper: Any) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyper_names)
        return f"{type(self).__name__}({args}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
        Period of the decay, >= 1.
    gamma : float, default 0.1
        Multiplicative factor, >= 0.

    Notes
    -----
    As ``torch.optim.lr_scheduler.StepLR``: after epoch ``e`` (``e = last_epoch``),
    ``lr = base_lr * gamma ** (e // step_size)``, computed recursively. Stepped per epoch.

    See Also
    --------
    MultiStepLR, ExponentialLR, CosineAnnealingLR
    """

    _hyper_names = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        values = self._validate(type(self).__name__, step_size=step_size, gamma=gamma)
        self.step_size: int = values["step_size"]
        self.gamma: float = values["gamma"]
        super().__init__(optimizer)

    @classmethod
    def _validate(cls, func: str, *, step_size: Any, gamma: Any) -> dict[str, Any]:
        return {
            "step_size": _check_int(step_size, "step_size", func, low=1),
            "gamma": _check_hyper(gamma, "gamma", func),
        }

    def _next_lr(self, lr: float) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each of the epochs ``milestones``.

    Parameters
    ----------
    optimizer : Optimizer
    milestones : list of int
        Epoch indices (>= 0); an epoch listed ``k`` times multiplies by ``gamma ** k``.
    gamma : float, default 0.1
        Multiplicative factor, >= 0.

    Notes
    -----
    As ``torch.optim.lr_scheduler.MultiStepLR``: after epoch ``e``,
    ``lr = base_lr * gamma ** (number of milestones <= e)``, computed recursively. Stepped
    per epoch.

    See Also
    --------
    StepLR, SequentialLR
    """

    _hyper_names = ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1) -> None:
        values = self._validate(type(self).__name__, milestones=milestones, gamma=gamma)
        self.milestones: tuple[int, ...] = values["milestones"]
        self.gamma: float = values["gamma"]
        super().__init__(optimizer)

    @classmethod
    def _validate(cls, func: str, *, milestones: Any, gamma: Any) -> dict[str, Any]:
        return {
            "milestones": _check_milestones(milestones, func, strict=False),
            "gamma": _check_hyper(gamma, "gamma", func),
        }

    def _initial_lr_value(self, lr: float) -> float:
        return self._next_lr(lr)  # (a milestone 0 applies at creation, as in torch)

    def _next_lr(self, lr: float) -> float:
        k = self.milestones.count(self.last_epoch)
        return lr if k == 0 else lr * self.gamma**k

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)


class ExponentialLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every epoch.

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float
        Multiplicative factor, >= 0.

    Notes
    -----
    As ``torch.optim.lr_scheduler.ExponentialLR``: ``lr = base_lr * gamma ** last_epoch``,
    computed recursively. Stepped per epoch.

    See Also
    --------
    StepLR, CosineAnnealingLR
    """

    _hyper_names = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        values = self._validate(type(self).__name__, gamma=gamma)
        self.gamma: float = values["gamma"]
        super().__init__(optimizer)

    @classmethod
    def _validate(cls, func: str, *, gamma: Any) -> dict[str, Any]:
        return {"gamma": _check_hyper(gamma, "gamma", func)}

    def _next_lr(self, lr: float) -> float:
        return lr if self.last_epoch == 0 else lr * self.gamma

    def _closed_form_lr(self) -> float:
        return self.base_lr * self.gamma**self.last_epoch


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial learning rate down to ``eta_min`` over ``T_max``
    epochs (then back up, periodically, as in PyTorch; there are no restarts).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Half-period in epochs, >= 1.
    eta_min : float, default 0
        Minimum learning rate, >= 0.

    Notes
    -----
    As ``torch.optim.lr_scheduler.CosineAnnealingLR`` (the recursive form):

    .. math::
        \eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
            \frac{1 + \cos(\pi t / T_{max})}{1 + \cos(\pi (t - 1) / T_{max})}

    with the special case
    :math:`\eta_t = \eta_{t-1} + (\eta_0 - \eta_{\min})(1 - \cos(\pi / T_{max})) / 2`
    when :math:`(t - 1 - T_{max}) \bmod 2T_{max} = 0`. Without outside changes of ``lr`` it
    equals :math:`\eta_{\min} + (\eta_0 - \eta_{\min})(1 + \cos(\pi t / T_{max})) / 2`.
    Stepped per epoch.

    See Also
    --------
    StepLR, ExponentialLR, OneCycleLR
    """

    _hyper_names = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        values = self._validate(type(self).__name__, T_max=T_max, eta_min=eta_min)
        self.T_max: int = values["T_max"]
        self.eta_min: float = values["eta_min"]
        super().__init__(optimizer)

    @classmethod
    def _validate(cls, func: str, *, T_max: Any, eta_min: Any) -> dict[str, Any]:
        return {
            "T_max": _check_int(T_max, "T_max", func, low=1),
            "eta_min": _check_hyper(eta_min, "eta_min", func),
        }

    def _next_lr(self, lr: float) -> float:
        e, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if e == 0:
            return lr
        if (e - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (
            lr - eta_min
        ) + eta_min

    def _closed_form_lr(self) -> float:
        return (
            self.eta_min
            + (self.base_lr - self.eta_min)
            * (1 + math.cos(math.pi * self.last_epoch / self.T_max))
            / 2
        )


class LinearLR(LRScheduler):
    """Multiply the learning rate by a factor that goes linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps (a warm-up with the defaults).

    Parameters
    ----------
    optimizer : Optimizer
    start_factor : float in (0, 1], default 1/3
        The factor at step 0 (set when the scheduler is created).
    end_factor : float in [0, 1], default 1.0
        The factor from step ``total_iters`` on.
    total_iters : int, default 5
        Steps to go from ``start_factor`` to ``end_factor``, >= 1.

    Notes
    -----
    As ``torch.optim.lr_scheduler.LinearLR``, recursively:
    ``lr_t = lr_{t-1} (1 + (e - s) / (T s + (t - 1)(e - s)))`` for ``1 <= t <= T``, i.e.
    ``base_lr * (s + (e - s) min(t, T) / T)``. Stepped per epoch (set
    ``interval = 'batch'`` for a warm-up over batches, as with PyTorch when ``step()`` is
    called per batch).

    See Also
    --------
    SequentialLR, OneCycleLR
    """

    _hyper_names = ("start_factor", "end_factor", "total_iters")

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        values = self._validate(
            type(self).__name__,
            start_factor=start_factor,
            end_factor=end_factor,
            total_iters=total_iters,
        )
        self.start_factor: float = values["start_factor"]
        self.end_factor: float = values["end_factor"]
        self.total_iters: int = values["total_iters"]
        super().__init__(optimizer)

    @classmethod
    def _validate(
        cls, func: str, *, start_factor: Any, end_factor: Any, total_iters: Any
    ) -> dict[str, Any]:
        return {
            "start_factor": _check_factor(start_factor, "start_factor", func, low_open=True),
            "end_factor": _check_factor(end_factor, "end_factor", func),
            "total_iters": _check_int(total_iters, "total_iters", func, low=1),
        }

    def _initial_lr_value(self, lr: float) -> float:
        return lr * self.start_factor

    def _next_lr(self, lr: float) -> float:
        t, s, e = self.last_epoch, self.start_factor, self.end_factor
        if t == 0:
            return lr * s
        if t > self.total_iters:
            return lr
        return lr * (1.0 + (e - s) / (self.total_iters * s + (t - 1) * (e - s)))

    def _closed_form_lr(self) -> float:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        return self.base_lr * (s + (e - s) * min(T, self.last_epoch) / T)


class OneCycleLR(LRScheduler):
    """The 1cycle policy: the learning rate rises from ``max_lr / div_factor`` to ``max_lr``
    over the first ``pct_start`` of the steps, then anneals to
    ``max_lr / div_factor / final_div_factor``; the momentum (SGD, RMSprop) or ``beta1``
    (Adam, AdamW) moves the opposite way between ``max_momentum`` and ``base_momentum``.

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float
        The peak learning rate, >= 0.
    total_steps : int, optional
        Steps in the cycle; else ``epochs * steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
    pct_start : float in [0, 1], default 0.3
    anneal_strategy : {'cos', 'linear'}, default 'cos'
    cycle_momentum : bool, default True
        Needs an optimizer with a momentum (SGD, RMSprop) or betas (Adam, AdamW). SGD and
        RMSprop built with ``momentum=0`` get the cycled momentum (PyTorch does the same);
        that is only possible before their first step.
    base_momentum, max_momentum : float, default 0.85, 0.95
    div_factor : float, default 25
    final_div_factor : float, default 1e4
    three_phase : bool, default False
        A third phase annihilates the learning rate (the original paper's schedule).

    Notes
    -----
    As ``torch.optim.lr_scheduler.OneCycleLR`` (same phases, same annealing formulas); it
    sets the optimizer's ``lr`` (and momentum) when created. Stepped per batch
    (:attr:`interval` ``'batch'``); stepping past ``total_steps`` raises ValueError. The
    last allowed step (``total_steps``) extrapolates one step past the end of the schedule,
    as in PyTorch; where linear annealing would take the learning rate below 0 there, it
    is 0.

    See Also
    --------
    LinearLR, CosineAnnealingLR
    """

    _hyper_names = (
        "max_lr",
        "total_steps",
        "pct_start",
        "anneal_strategy",
        "cycle_momentum",
        "base_momentum",
        "max_momentum",
        "div_factor",
        "final_div_factor",
        "three_phase",
    )
    _default_interval = "batch"

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        func = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{func}(): optimizer must be a cnncore.optim.Optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    f"{func}(): give total_steps, or both epochs and steps_per_epoch. "
                    f"Received: total_steps=None, epochs={_fmt(epochs)}, "
                    f"steps_per_epoch={_fmt(steps_per_epoch)}"
                )
            epochs = _check_int(epochs, "epochs", func, low=1)
            steps_per_epoch = _check_int(steps_per_epoch, "steps_per_epoch", func, low=1)
            total_steps = epochs * steps_per_epoch
        values = self._validate(
            func,
            max_lr=max_lr,
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
        )
        for k, v in values.items():
            setattr(self, k, v)
        self.optimizer = optimizer
        self._momentum_key: str | None = None
        if self.cycle_momentum:
            if "betas" in optimizer._hyper:
                self._momentum_key = "betas"
            elif "momentum" in optimizer._hyper:
                self._momentum_key = "momentum"
            else:
                raise ValueError(
                    f"{func}(): cycle_momentum=True needs an optimizer with a momentum or "
                    f"betas (SGD, RMSprop, Adam, AdamW); pass cycle_momentum=False. Received: "
                    f"optimizer {type(optimizer).__name__}"
                )
            self._set_momentum(self.max_momentum)
        # torch writes group["initial_lr"] = max_lr / div_factor (the optimizer's base_lr)
        optimizer._initial_lr = self.max_lr / self.div_factor
        super().__init__(optimizer)

    @classmethod
    def _validate(
        cls,
        func: str,
        *,
        max_lr: Any,
        total_steps: Any,
        pct_start: Any,
        anneal_strategy: Any,
        cycle_momentum: Any,
        base_momentum: Any,
        max_momentum: Any,
        div_factor: Any,
        final_div_factor: Any,
        three_phase: Any,
    ) -> dict[str, Any]:
        out = {
            "max_lr": _check_hyper(max_lr, "max_lr", func),
            "total_steps": _check_int(total_steps, "total_steps", func, low=1),
            "pct_start": _check_hyper(pct_start, "pct_start", func, high=1),
            "anneal_strategy": check_choice(
                _unwrap(anneal_strategy), "anneal_strategy", func, ("cos", "linear")
            ),
            "cycle_momentum": _check_bool(cycle_momentum, "cycle_momentum", func),
            "base_momentum": _check_hyper(base_momentum, "base_momentum", func),
            "max_momentum": _check_hyper(max_momentum, "max_momentum", func),
            "div_factor": _check_hyper(div_factor, "div_factor", func),
            "final_div_factor": _check_hyper(final_div_factor, "final_div_factor", func),
            "three_phase": _check_bool(three_phase, "three_phase", func),
        }
        for name in ("div_factor", "final_div_factor"):
            if out[name] == 0:
                raise ValueError(f"{func}(): {name} must be > 0. Received: {name}=0")
        return out

    def _set_momentum(self, value: float) -> None:
        opt = self.optimizer
        func = type(self).__name__
        if self._momentum_key == "betas":
            opt._set_hyper("betas", (value, opt._hyper["betas"][1]), func)
        else:
            opt._set_hyper("momentum", value, func)

    def _phases(self) -> list[tuple[float, float, float, float, float]]:
        """(end_step, start_lr, end_lr, start_momentum, end_momentum) of each phase."""
        total, pct = self.total_steps, self.pct_start
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        hi_m, lo_m = self.max_momentum, self.base_momentum
        if self.three_phase:
            return [
                (float(pct * total) - 1, initial, self.max_lr, hi_m, lo_m),
                (float(2 * pct * total) - 2, self.max_lr, initial, lo_m, hi_m),
                (total - 1, initial, low, hi_m, hi_m),
            ]
        return [
            (float(pct * total) - 1, initial, self.max_lr, hi_m, lo_m),
            (total - 1, self.max_lr, low, lo_m, hi_m),
        ]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _next_lr(self, lr: float) -> float:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR.step(): stepped {step} times, past total_steps="
                f"{self.total_steps}. Received: step {step}"
            )
        phases = self._phases()
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                pct = (step - start) / (end - start)
                if self.cycle_momentum:
                    self._set_momentum(max(self._anneal(m0, m1, pct), 0.0))
                # (linear annealing stepped to total_steps overshoots the end below 0)
                return max(self._anneal(lr0, lr1, pct), 0.0)
            start = end
        raise AssertionError("unreachable")  # pragma: no cover

    def _initial_lr_value(self, lr: float) -> float:
        return self._next_lr(lr)

    def _load_extra(self, state_dict: dict[str, Any], func: str) -> Any:
        if _check_bool(state_dict["cycle_momentum"], "cycle_momentum", func) and (
            self._momentum_key is None
        ):
            raise ValueError(
                f"{func}(): state_dict has cycle_momentum=True but this scheduler was built "
                f"with cycle_momentum=False. Received: cycle_momentum=True"
            )
        return lambda: None


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rate by ``factor`` when a metric has stopped improving for
    ``patience`` epochs.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {'min', 'max'}, default 'min'
        Whether the metric should decrease (a loss) or increase (an accuracy).
    factor : float in [0, 1), default 0.1
    patience : int, default 10
        Epochs without improvement tolerated; the rate drops at the next one.
    threshold : float, default 1e-4
        Minimum change that counts as an improvement.
    threshold_mode : {'rel', 'abs'}, default 'rel'
        'rel': better than ``best * (1 -+ threshold)``; 'abs': than ``best -+ threshold``.
    cooldown : int, default 0
        Epochs after a reduction during which bad epochs are not counted.
    min_lr : float, default 0
        Lower bound of the learning rate.
    eps : float, default 1e-8
        A reduction smaller than ``eps`` is skipped.

    Notes
    -----
    As ``torch.optim.lr_scheduler.ReduceLROnPlateau``: call ``step(metric)`` once per
    epoch. ``fit(scheduler=...)`` passes ``val_loss`` when there is validation data, else
    the training ``loss``. For the Keras callback form see
    :class:`cnncore.callbacks.ReduceLROnPlateau`.
    """

    _hyper_names = (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        func = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{func}(): optimizer must be a cnncore.optim.Optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        values = self._validate(
            func,
            mode=mode,
            factor=factor,
            patience=patience,
            threshold=threshold,
            threshold_mode=threshold_mode,
            cooldown=cooldown,
            min_lr=min_lr,
            eps=eps,
        )
        for k, v in values.items():
            setattr(self, k, v)
        # torch's ReduceLROnPlateau does not take part in initial_lr
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self._interval = "epoch"
        self.last_epoch = 0
        self._last_lr = optimizer.lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    @classmethod
    def _validate(
        cls,
        func: str,
        *,
        mode: Any,
        factor: Any,
        patience: Any,
        threshold: Any,
        threshold_mode: Any,
        cooldown: Any,
        min_lr: Any,
        eps: Any,
    ) -> dict[str, Any]:
        out = {
            "mode": check_choice(_unwrap(mode), "mode", func, ("min", "max")),
            "factor": _check_hyper(factor, "factor", func),
            "patience": _check_int(patience, "patience", func, low=0),
            "threshold": _check_hyper(threshold, "threshold", func),
            "threshold_mode": check_choice(
                _unwrap(threshold_mode), "threshold_mode", func, ("rel", "abs")
            ),
            "cooldown": _check_int(cooldown, "cooldown", func, low=0),
            "min_lr": _check_hyper(min_lr, "min_lr", func),
            "eps": _check_hyper(eps, "eps", func),
        }
        if out["factor"] >= 1:
            raise ValueError(f"{func}(): factor must be < 1. Received: factor={_fmt(factor)}")
        return out

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: float | None = None) -> None:  # type: ignore[override]
        """One epoch with the metric value ``metrics`` (a float)."""
        func = "ReduceLROnPlateau.step"
        if metrics is None:
            raise TypeError(
                f"{func}(): needs the metric value, step(metric). Received: metrics=None"
            )
        current = check_real(_unwrap(metrics), "metrics", func)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self.optimizer.lr

    def _restart(self) -> None:  # pragma: no cover - SequentialLR refuses it
        raise TypeError("ReduceLROnPlateau cannot be part of a SequentialLR")

    def _extra_state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
        }

    def _load_extra(self, state_dict: dict[str, Any], func: str) -> Any:
        missing = [k for k in self._extra_state() if k not in state_dict]
        if missing:
            raise ValueError(f"{func}(): state_dict is missing the key(s) {missing}")
        best = check_real(_unwrap(state_dict["best"]), "best", func)
        bad = _check_int(state_dict["num_bad_epochs"], "num_bad_epochs", func, low=0)
        cool = _check_int(state_dict["cooldown_counter"], "cooldown_counter", func, low=0)

        def apply() -> None:
            self.best, self.num_bad_epochs, self.cooldown_counter = best, bad, cool

        return apply


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after the other, switching at the step counts ``milestones``
    (e.g. a :class:`LinearLR` warm-up, then :class:`CosineAnnealingLR`).

    Parameters
    ----------
    optimizer : Optimizer
    schedulers : list of LRScheduler
        At least one, all of ``optimizer``, none a :class:`ReduceLROnPlateau`. The chain is
        stepped per batch (:attr:`interval`) if one of them is, else per epoch; its
        ``step`` steps the scheduler in charge.
    milestones : list of int
        ``len(schedulers) - 1`` strictly increasing step counts >= 1: at step
        ``milestones[i]`` the scheduler ``i + 1`` takes over, restarted at its step 0.

    Notes
    -----
    As ``torch.optim.lr_scheduler.SequentialLR``: creating it resets ``lr`` to ``base_lr``,
    undoes the creation step of every scheduler and redoes that of the first; at a
    milestone the next scheduler jumps to its step 0 (by its closed form where it has one,
    like PyTorch's ``_update_lr(0)``).
    """

    _hyper_names = ("milestones",)

    def __init__(
        self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int]
    ) -> None:
        func = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{func}(): optimizer must be a cnncore.optim.Optimizer. "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, (list, tuple)):
            raise TypeError(
                f"{func}(): schedulers must be a list of schedulers. Received: schedulers of "
                f"type {type(schedulers).__name__}"
            )
        if not schedulers:
            raise ValueError(f"{func}(): schedulers must not be empty. Received: schedulers=[]")
        for i, sch in enumerate(schedulers):
            if not isinstance(sch, LRScheduler):
                raise TypeError(
                    f"{func}(): schedulers must be cnncore.optim schedulers. Received: "
                    f"schedulers[{i}] of type {type(sch).__name__}"
                )
            if isinstance(sch, ReduceLROnPlateau):
                raise ValueError(
                    f"{func}(): ReduceLROnPlateau needs a metric and cannot be chained. "
                    f"Received: schedulers[{i}]={sch!r}"
                )
            if sch.optimizer is not optimizer:
                raise ValueError(
                    f"{func}(): every scheduler must belong to optimizer. Received: "
                    f"schedulers[{i}] of another optimizer"
                )
        ms = _check_milestones(milestones, func, strict=True)
        if len(ms) != len(schedulers) - 1:
            raise ValueError(
                f"{func}(): milestones must have one entry less than schedulers "
                f"({len(schedulers) - 1}). Received: milestones={list(ms)}"
            )
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self.milestones: tuple[int, ...] = ms
        # per batch if any of them is (a warm-up before OneCycleLR counts batches too)
        self._interval = "batch" if any(sch.interval == "batch" for sch in schedulers) else "epoch"
        if optimizer._initial_lr is None:  # pragma: no cover - a scheduler set it
            optimizer._initial_lr = optimizer.lr
        self.base_lr = optimizer._initial_lr
        self.last_epoch = 0
        optimizer.lr = optimizer._initial_lr
        for sch in self._schedulers:  # (torch's recursive_undo)
            sch._undo()
        first = self._schedulers[bisect.bisect_right(self.milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()[0]

    @property
    def schedulers(self) -> list[LRScheduler]:
        """The chained schedulers."""
        return list(self._schedulers)

    @LRScheduler.interval.setter  # type: ignore[attr-defined]
    def interval(self, value: str) -> None:
        value = check_choice(value, "interval", type(self).__name__, _INTERVALS)
        for sch in self._schedulers:
            sch.interval = value
        self._interval = value

    def _undo(self) -> None:
        for sch in self._schedulers:
            sch._undo()

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect.bisect_right(self.milestones, self.last_epoch)
        sch = self._schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            sch._restart()
        else:
            sch.step()
        self._last_lr = sch.get_last_lr()[0]

    def _restart(self) -> None:
        raise TypeError("a SequentialLR cannot be restarted by another SequentialLR")

    def _extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_schedulers": len(self._schedulers)}
        for i, sch in enumerate(self._schedulers):
            for k, v in sch.state_dict().items():
                out[f"schedulers.{i}.{k}"] = v
        return out

    def _load_extra(self, state_dict: dict[str, Any], func: str) -> Any:
        n = _check_int(state_dict.get("num_schedulers"), "num_schedulers", func, low=1)
        if n != len(self._schedulers):
            raise ValueError(
                f"{func}(): state_dict is for {n} schedulers but this SequentialLR has "
                f"{len(self._schedulers)}. Received: num_schedulers={n}"
            )
        subs = []
        for i, sch in enumerate(self._schedulers):
            prefix = f"schedulers.{i}."
            sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            # validate on a throw-away copy of the state: load into the real one afterwards
            probe = sch.state_dict()
            sch.load_state_dict(sub)
            sch.load_state_dict(probe)
            subs.append(sub)

        def apply() -> None:
            for sch, sub in zip(self._schedulers, subs, strict=True):
                sch.load_state_dict(sub)

        return apply
