"""Trainable parameters: an array and the gradient accumulated for it.

The class lives here, outside :mod:`cnncore.nn`, so that :mod:`cnncore.optim` (which updates
parameters) and :mod:`cnncore.nn` (whose layers own them) both import it without importing each
other.  Its public names are :class:`cnncore.nn.Parameter` and
``cnncore.nn.parameter.Parameter`` (the same class object).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bumped by every write that cnncore makes into parameter arrays in place (optimizer
#: steps, ``load_state_dict``, ``set_weights`` and restoring the best weights, broadcasting
#: them) and by :meth:`Parameter.mark_changed`: the convolutions of a model made by
#: :func:`cnncore.nn.fuse` keep their weights packed while it stays the same and the
#: layer keeps its arrays (see :mod:`cnncore.nn.inference`).
WEIGHTS_VERSION = [0]


def weights_changed() -> None:
    """Note that parameter arrays were written in place (fused models pack again)."""
    WEIGHTS_VERSION[0] += 1


class Parameter:
    """A trainable array with its gradient.

    Attributes
    ----------
    data : ndarray
        The values (updated in place by optimizers).
    grad : ndarray
        Gradient of the loss w.r.t. ``data``, same shape and dtype; layers write it in
        ``backward`` and optimizers read it in ``step``.
    name : str
        For summaries and saved files (e.g. ``"weight"``).
    """

    __slots__ = ("data", "grad", "name", "_owner")

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name
        #: A weak reference to the module that holds it (set when a module registers or
        #: lists it), so that an optimizer can tell when its model is gone; None if free.
        self._owner: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # the owner link is a weak reference, not part of the value (copies get a new owner)
        return {"data": self.data, "grad": self.grad, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data, self.grad, self.name = state["data"], state["grad"], state["name"]
        self._owner = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def mark_changed(self) -> None:
        """Tell cnncore that ``data`` was written in place by other code (``p.data[...] =
        v``, ``p.data *= 2``).  Only a model made by :func:`cnncore.nn.fuse` (an inference
        snapshot, which keeps its convolutions' weights packed) needs it; optimizers,
        ``load_state_dict``, ``set_weights`` and assigning a new array (``p.data = v``)
        are seen without it, and other models compare their packed weights with the
        arrays at every call."""
        weights_changed()

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.data.shape}, dtype={self.data.dtype})"
