"""Training checkpoints: the model, the optimizer's moments, the scheduler's position, the
epoch and the random state in one ``.npz`` file, written atomically and read without
pickle (through :mod:`cnncore.nn.serialization`'s writer and checked reader).

A checkpoint holds ``__architecture__`` (as :func:`cnncore.nn.serialization.save` writes it,
so the model can be rebuilt from the file alone), ``param:``/``buffer:`` arrays,
``optimizer:<key>`` arrays (the optimizer's state buffers) and ``__checkpoint__``: UTF-8 JSON
with the format tag, the epoch, the seed or a generator's state, the optimizer's and the
scheduler's scalar state, the state of every generator the model's modules hold, and
optionally the training history and user data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import optim
from .._typing import PathLike
from .._validation import _fmt, check_int
from . import serialization
from .module import Module

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "cnncore.checkpoint"
VERSION = 1
_META_KEY = "__checkpoint__"
_ARCH_KEY = "__architecture__"
_OPT_PREFIX = "optimizer:"
_MAX_META_BYTES = 64 << 20
#: Bit generators whose state a checkpoint may restore (looked up by name in this table,
#: never imported from the file).
_BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    model : Module
        The model whose weights were restored (the one given, or one rebuilt from the file).
    epoch : int
        Epochs completed when the checkpoint was written: pass it as
        ``fit(..., initial_epoch=epoch)`` to resume.
    seed : int or None
        The ``seed`` (or ``rng``) int given to :func:`save_checkpoint` -- ``fit``'s seed,
        to pass again as ``fit(..., seed=seed)``.
    rng : numpy.random.Generator or None
        A generator in the state saved with ``rng=<Generator>``.
    history : dict or None
        The training history stored with the checkpoint (``History.to_dict()``).
    extra : dict
        The ``extra`` JSON data given to :func:`save_checkpoint`.
    optimizer_state, scheduler_state : dict or None
        The stored states (already loaded into the optimizer / scheduler passed, if any).
    """

    model: Module
    epoch: int
    seed: int | None = None
    rng: np.random.Generator | None = None
    history: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A bit generator's state (nested dicts, ints, ndarrays) as JSON-able values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.integer):
        return int(value)
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            dtype = np.dtype(value["dtype"])
            if dtype.kind not in "iu":
                raise ValueError(f"generator state array of dtype {dtype}")
            return np.asarray(value["__ndarray__"], dtype=dtype)
        return {k: _unplain(v) for k, v in value.items()}
    return value


def _generator_state(gen: np.random.Generator) -> dict[str, Any]:
    return _plain(gen.bit_generator.state)


def _generator_from_state(state: Any, what: str) -> np.random.Generator:
    """A new Generator in ``state`` (a bit generator name from the table above)."""
    if not isinstance(state, dict) or state.get("bit_generator") not in _BIT_GENERATORS:
        raise ValueError(f"{what} is not a known bit generator's state")
    bit = _BIT_GENERATORS[state["bit_generator"]]()
    try:
        bit.state = _unplain(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"{what} is not a valid state ({exc})") from None
    return np.random.Generator(bit)


def _module_generators(model: Module) -> dict[str, np.random.Generator]:
    """Every Generator attribute of every module of ``model`` (e.g. ``Dropout.rng``), keyed
    by the module's position (``"3."``, ``"1.0."``) and the attribute name."""
    out: dict[str, np.random.Generator] = {}
    stack: list[tuple[str, Module]] = [("", model)]
    while stack:
        prefix, m = stack.pop()
        for name, value in sorted(vars(m).items()):
            if isinstance(value, np.random.Generator):
                out[prefix + name] = value
        stack.extend((f"{prefix}{i}.", c) for i, c in enumerate(m.children()))
    return out


def _generator_slot(model: Module, key: str) -> tuple[Module, str] | None:
    """The (module, attribute) of a :func:`_module_generators` key in ``model``, if that
    module exists and its attribute holds a Generator or None."""
    *path, attr = key.split(".")
    module = model
    for part in path:
        children = module.children()
        if not part.isdigit() or int(part) >= len(children):
            return None
        module = children[int(part)]
    if not hasattr(module, attr):
        return None
    value = getattr(module, attr)
    return (module, attr) if value is None or isinstance(value, np.random.Generator) else None


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, tuple):
        return [_json_scalar(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _split_state(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A flat state dict -> (JSON scalars, arrays)."""
    scalars, arrays = {}, {}
    for k, v in sd.items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            arrays[k] = v
        else:
            scalars[k] = _json_scalar(v)
    return scalars, arrays


def save_checkpoint(
    path: PathLike,
    model: Module,
    optimizer: optim.Optimizer | None = None,
    scheduler: optim.LRScheduler | None = None,
    *,
    epoch: int = 0,
    rng: int | np.random.Generator | None = None,
    history: Mapping[str, Sequence[float]] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a training checkpoint to ``path`` (``.npz``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
    model : Module
        A model of registered modules (as :func:`cnncore.nn.serialization.save` needs).
    optimizer : cnncore.optim.Optimizer, optional
        Its learning rate, hyper-parameters, step count and moment buffers are saved.
    scheduler : cnncore.optim.LRScheduler, optional
    epoch : int, default 0
        Epochs completed (what ``fit(initial_epoch=...)`` resumes from).
    rng : int or numpy.random.Generator, optional
        ``fit``'s seed (an int), or a generator whose exact state is saved (for hand-written
        loops). The generators held by the model's modules (Dropout's) are always saved.
    history : History or dict, optional
        Stored as JSON (``History.to_dict()``).
    extra : dict, optional
        JSON-serializable user data.

    Notes
    -----
    The archive is written to a temporary file next to ``path``, fsync'ed and renamed over
    it, so a process killed during the save leaves the previous file intact.  No pickle:
    :func:`load_checkpoint` reads it with the same checks as :func:`cnncore.load`.

    See Also
    --------
    load_checkpoint, cnncore.callbacks.ModelCheckpoint
    """
    func = "save_checkpoint"
    if not isinstance(model, Module):
        raise TypeError(
            f"{func}(): model must be a cnncore.nn.Module. Received: {type(model).__name__}"
        )
    if optimizer is not None and not isinstance(optimizer, optim.Optimizer):
        raise TypeError(
            f"{func}(): optimizer must be a cnncore.optim.Optimizer or None. Received: "
            f"optimizer of type {type(optimizer).__name__}"
        )
    if scheduler is not None and not isinstance(scheduler, optim.LRScheduler):
        raise TypeError(
            f"{func}(): scheduler must be a cnncore.optim.LRScheduler or None. Received: "
            f"scheduler of type {type(scheduler).__name__}"
        )
    epoch = check_int(epoch, "epoch", func, min_value=0)
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "epoch": epoch}
    if rng is None or isinstance(rng, np.random.Generator):
        meta["seed"] = None
        meta["rng"] = None if rng is None else _generator_state(rng)
    else:
        meta["seed"] = check_int(rng, "rng", func, min_value=0, max_value=None)
        meta["rng"] = None
    meta["module_rngs"] = {k: _generator_state(g) for k, g in _module_generators(model).items()}
    arrays = {
        _ARCH_KEY: serialization.json_array(serialization.architecture(model)),
        **serialization.model_arrays(model),
    }
    if optimizer is not None:
        scalars, opt_arrays = _split_state(optimizer.state_dict())
        meta["optimizer"] = scalars
        arrays.update({_OPT_PREFIX + k: v for k, v in opt_arrays.items()})
    else:
        meta["optimizer"] = None
    meta["scheduler"] = (
        None
        if scheduler is None
        else {k: _json_scalar(v) for k, v in scheduler.state_dict().items()}
    )
    if history is not None and not isinstance(history, dict):
        to_dict = getattr(history, "to_dict", None)
        if to_dict is None:
            raise TypeError(
                f"{func}(): history must be a History or a dict. Received: "
                f"history of type {type(history).__name__}"
            )
        history = to_dict()
    meta["history"] = history
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(
            f"{func}(): extra must be a dict. Received: extra of type {type(extra).__name__}"
        )
    meta["extra"] = extra or {}
    try:
        arrays[_META_KEY] = serialization.json_array(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{func}(): history and extra must be JSON-serializable. Received: {exc}"
        ) from None
    serialization.write_npz(path, arrays)


def load_checkpoint(
    path: PathLike,
    model: Module | None = None,
    optimizer: optim.Optimizer | None = None,
    scheduler: optim.LRScheduler | None = None,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (or by
    :class:`cnncore.callbacks.ModelCheckpoint`) and restore it.

    Parameters
    ----------
    path : str or os.PathLike
        A checkpoint, or a model file from ``model.save`` (weights only: epoch 0).
    model : Module, optional
        Receives the weights (its parameter names, shapes and dtypes must match the file's);
        None rebuilds the model from the file's architecture.
    optimizer, scheduler : optional
        Receive the stored states (an error if the file has none).  Create them as for a
        fresh run (on the model's parameters) before loading.

    Returns
    -------
    Checkpoint
        ``.model``, ``.epoch``, ``.seed`` / ``.rng``, ``.history``, ``.extra``.

    Raises
    ------
    ValueError
        For anything that is not an intact checkpoint, or states that do not fit the model,
        optimizer or scheduler given. Everything is checked before the model, optimizer and
        scheduler change (on error they are as before).
    FileNotFoundError
        If ``path`` does not exist.

    Examples
    --------
    Resume training where a checkpoint left it (bit-identical to an uninterrupted run)::

        ckpt = cnncore.load_checkpoint("ckpt.npz", model, opt, sched)
        model.fit(x, y, optimizer=opt, loss=loss, scheduler=sched, epochs=10,
                  initial_epoch=ckpt.epoch, seed=ckpt.seed)
    """
    func = "load_checkpoint"
    if model is not None and not isinstance(model, Module):
        raise TypeError(
            f"{func}(): model must be a cnncore.nn.Module or None. Received: {type(model).__name__}"
        )
    for name, obj, cls in (
        ("optimizer", optimizer, optim.Optimizer),
        ("scheduler", scheduler, optim.LRScheduler),
    ):
        if obj is not None and not isinstance(obj, cls):
            raise TypeError(
                f"{func}(): {name} must be a cnncore.optim.{cls.__name__} or None. Received: "
                f"{name} of type {type(obj).__name__}"
            )
    with serialization.Archive(path, func, "checkpoint") as ar:
        if _ARCH_KEY not in ar.members:
            raise ar.bad("no __architecture__ entry")
        if _META_KEY in ar.members:
            meta = ar.read_json(_META_KEY, _MAX_META_BYTES)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ar.bad("wrong format tag")
            if meta.get("version") != VERSION:
                raise ar.bad(f"unsupported version {meta.get('version')!r}")
        else:  # a model file: weights only
            meta = {"epoch": 0, "seed": None, "rng": None, "optimizer": None, "scheduler": None}
        known = {_ARCH_KEY, _META_KEY}
        extra_keys = sorted(
            k
            for k in ar.members
            if k not in known and not k.startswith(("param:", "buffer:", _OPT_PREFIX))
        )
        if extra_keys:
            raise ar.bad(f"unexpected entries {extra_keys[:5]}")
        target = ar.build_model() if model is None else model
        weights = ar.model_arrays(target)
        opt_sd = meta.get("optimizer")
        if opt_sd is not None:
            if not isinstance(opt_sd, dict):
                raise ar.bad("optimizer state is not an object")
            opt_sd = dict(opt_sd)
            for key in ar.members:
                if key.startswith(_OPT_PREFIX):
                    opt_sd[key[len(_OPT_PREFIX) :]] = ar.read(key)
        elif any(k.startswith(_OPT_PREFIX) for k in ar.members):
            raise ar.bad("optimizer arrays without an optimizer state")
        # parse everything else before changing anything
        epoch = meta.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ar.bad(f"epoch must be an int >= 0, not {_fmt(epoch)}")
        seed = meta.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ar.bad(f"seed must be an int >= 0 or null, not {_fmt(seed)}")
        try:
            gen = None if meta.get("rng") is None else _generator_from_state(meta["rng"], "rng")
            module_gens = meta.get("module_rngs") or {}
            if not isinstance(module_gens, dict):
                raise ValueError("module_rngs is not an object")
            restored_gens = {
                k: _generator_from_state(v, f"module_rngs[{k!r}]") for k, v in module_gens.items()
            }
        except ValueError as exc:
            raise ar.bad(str(exc)) from None
        sched_sd = meta.get("scheduler")
        if sched_sd is not None and not isinstance(sched_sd, dict):
            raise ar.bad("scheduler state is not an object")
        history = meta.get("history")
        extra = meta.get("extra") or {}
        if (history is not None and not isinstance(history, dict)) or not isinstance(extra, dict):
            raise ar.bad("history and extra must be objects")
    if optimizer is not None and opt_sd is None:
        raise ValueError(f"{func}(): {path!s} holds no optimizer state (weights only)")
    if scheduler is not None and sched_sd is None:
        raise ValueError(f"{func}(): {path!s} holds no scheduler state")
    slots = {key: _generator_slot(target, key) for key in restored_gens}
    missing = sorted(k for k, slot in slots.items() if slot is None)
    if missing:
        raise ValueError(
            f"{func}(): {path!s} holds the random state of modules this model does not have: "
            f"{missing[:5]}"
        )
    # Apply: the optimizer and scheduler validate before they change; roll the optimizer
    # back if the scheduler refuses its state.
    opt_backup = optimizer.state_dict() if optimizer is not None else None
    if optimizer is not None:
        optimizer.load_state_dict(opt_sd)
    if scheduler is not None:
        try:
            scheduler.load_state_dict(sched_sd)
        except (TypeError, ValueError):
            if optimizer is not None and opt_backup is not None:
                optimizer.load_state_dict(opt_backup)
            raise
    serialization.copy_model_arrays(target, weights)
    for key, restored in restored_gens.items():
        module, attr = slots[key]
        current = getattr(module, attr)
        if isinstance(current, np.random.Generator):
            current.bit_generator.state = restored.bit_generator.state
        else:  # a module still on the global generator (rng=None) gets its own
            setattr(module, attr, restored)
    if model is None:
        target.eval()
    return Checkpoint(
        model=target,
        epoch=epoch,
        seed=seed,
        rng=gen,
        history=history,
        extra=extra,
        optimizer_state=opt_sd,
        scheduler_state=sched_sd,
    )
