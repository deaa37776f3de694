"""``state_dict`` / ``load_state_dict``: a model's parameters and buffers as an ordered dict
of name -> ndarray, with PyTorch's key names and layouts.

A module's entries are its own parameters then its own buffers, in registration order,
followed by each child's entries under the child's name and a dot -- exactly the order and
names of ``torch.nn.Module.state_dict()`` for the equivalent PyTorch module:
``Sequential(Conv2d, BatchNorm2d, ...)`` gives ``0.weight``, ``0.bias``, ``1.weight``,
``1.bias``, ``1.running_mean``, ``1.running_var``, ``1.num_batches_tracked``, ...  Layouts
are PyTorch's too: Conv2d weights ``(C_out, C_in / groups, kH, kW)``, Linear weights
``(out_features, in_features)``, BatchNorm's ``num_batches_tracked`` an int64 scalar.  So
weights move between the two libraries with nothing but a type conversion::

    model.load_state_dict(torch_model.state_dict())            # torch tensors accepted
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})

**Naming children (the hook containers override).** A container names its children with
:meth:`Module._state_children`, which yields ``(name, child)`` pairs; the default names the
children of :meth:`Module.children` by their position, ``"0"``, ``"1"``, ... (what
``torch.nn.Sequential`` does).  A container whose PyTorch counterpart names its children
otherwise -- a graph model whose layers have names, a block with ``conv1``/``bn1`` -- overrides
``_state_children`` only; ``state_dict``, ``load_state_dict``, ``named_parameters`` and
``named_buffers`` all follow it, so every key stays unique and stable.

This module works on any object with the Module attributes it reads (``_params``,
``_buffers``, ``_state_children``) and imports nothing from :mod:`cnncore.nn`, so
:mod:`cnncore.nn.module` can delegate to it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .._parameter import weights_changed

__all__ = ["state_dict", "load_state_dict", "named_state", "IncompatibleKeys", "to_numpy"]

# How many key names an error message lists before "... and N more".
_MAX_LISTED = 20


class IncompatibleKeys(NamedTuple):
    """What :func:`load_state_dict` returns (as PyTorch's ``_IncompatibleKeys``): the keys
    the model expects but the state lacked, and the keys of the state the model has no
    place for (both empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def named_state(module: Any, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
    """``(key, array)`` for every parameter and buffer of ``module`` and its children, in
    ``state_dict`` order; the arrays are the module's own (not copies)."""
    for name, p in module._params.items():
        yield prefix + name, p.data
    for name, b in module._buffers.items():
        yield prefix + name, b
    for name, child in module._state_children():
        yield from named_state(child, f"{prefix}{name}.")


def state_dict(module: Any) -> OrderedDict[str, np.ndarray]:
    """Copies of every parameter and buffer of ``module``, keyed as in PyTorch."""
    return OrderedDict((key, np.array(arr, copy=True)) for key, arr in named_state(module))


def to_numpy(value: Any, key: str) -> np.ndarray:
    """``value`` as an ndarray: a NumPy array, anything :func:`numpy.asarray` takes, or a
    torch tensor (``.detach().cpu().numpy()``; torch is never imported here)."""
    if type(value).__module__.startswith("torch"):
        try:
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
                value = value.float()
            value = value.numpy()
        except (AttributeError, RuntimeError, TypeError) as exc:
            raise TypeError(
                f"load_state_dict(): {key!r} is a {type(value).__name__} that cannot be "
                f"converted to a NumPy array ({exc})"
            ) from None
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"load_state_dict(): {key!r} must be an array. Received: {type(value).__name__} ({exc})"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"load_state_dict(): {key!r} must hold numbers. Received: an array of dtype {arr.dtype}"
        )
    return arr


def _listed(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def load_state_dict(module: Any, state: Any, strict: bool = True) -> IncompatibleKeys:
    """Copy the arrays of ``state`` into ``module``'s parameters and buffers, in place.

    Parameters
    ----------
    module : Module
    state : mapping of str to array_like
        NumPy arrays, torch tensors (``torch_model.state_dict()`` as it is) or anything
        :func:`numpy.asarray` accepts.  Values are converted to the dtype of the array they
        replace (the model's dtype; int64 for ``num_batches_tracked``).
    strict : bool, default True
        Whether the keys must match exactly.  With ``strict=False`` missing keys keep their
        values and unexpected keys are ignored (both are returned).

    Returns
    -------
    IncompatibleKeys
        ``(missing_keys, unexpected_keys)``.

    Raises
    ------
    ValueError
        With ``strict=True``, when keys are missing or unexpected (all of them listed in one
        message); whatever ``strict``, when an array's shape differs from the parameter's
        (the key and both shapes are named), or holds a value that does not fit the target
        dtype (a non-integral or out-of-range ``num_batches_tracked``).  Nothing is written
        unless every array is valid.
    TypeError
        When ``state`` is not a mapping with string keys, or a value is not an array of
        numbers.
    """
    if not isinstance(state, Mapping):
        raise TypeError(
            f"load_state_dict(): state must be a mapping of name -> array (e.g. a "
            f"state_dict()). Received: {type(state).__name__}"
        )
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise TypeError(f"load_state_dict(): state keys must be str. Received: {bad[:5]!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"load_state_dict(): strict must be a bool. Received: strict={strict!r}")
    targets = OrderedDict(named_state(module))
    missing = [k for k in targets if k not in state]
    unexpected = [k for k in state if k not in targets]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listed(unexpected)}")
        raise ValueError(
            f"load_state_dict(): the state does not match the model's "
            f"{type(module).__name__}: {'; '.join(parts)}"
        )
    converted: list[tuple[np.ndarray, np.ndarray]] = []
    for key, target in targets.items():
        if key not in state:
            continue
        arr = to_numpy(state[key], key)
        if arr.shape != target.shape:
            raise ValueError(
                f"load_state_dict(): size mismatch for {key!r}: the state has shape "
                f"{arr.shape}, the model's parameter has shape {target.shape}"
            )
        converted.append((target, _convert(arr, target.dtype, key)))
    for target, arr in converted:
        np.copyto(target, arr, casting="unsafe")
    weights_changed()  # (fused models' packed weights)
    return IncompatibleKeys(missing, unexpected)


def _convert(arr: np.ndarray, dtype: np.dtype, key: str) -> np.ndarray:
    """``arr`` as ``dtype``: floats convert with rounding; an integer target takes only
    integral values in its range (a counter such as ``num_batches_tracked``)."""
    if dtype.kind == "f" or arr.dtype == dtype:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(
                f"load_state_dict(): {key!r} must hold integers (the model keeps it as "
                f"{dtype}). Received: non-integral values of dtype {arr.dtype}"
            )
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(
            f"load_state_dict(): {key!r} has values outside the range of {dtype}. "
            f"Received: min {arr.min()}, max {arr.max()}"
        )
    return arr.astype(dtype)
