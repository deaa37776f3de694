"""Functional API: validated, dtype-dispatching wrappers around the Cython kernels.

Semantics and argument names follow ``torch.nn.functional`` (NCHW layout, output-size
formulas, ``ceil_mode`` rule, max-pool index encoding), so results can be checked one
against the other.  Every function accepts any array-like; float32 and float64 are computed
in their own precision (the output dtype is the input dtype), other dtypes raise TypeError.

This module is the public face: each op family lives in its own module of
:mod:`cnncore.ops` next to its Cython kernel (``ops/conv.py`` + ``ops/_conv.pyx``, ...), and
its ``__all__`` is re-exported here.  Conventions shared by a family (activations' ``out=``,
the losses' ``reduction``/``return_grad``) are described at the top of its module.
"""

from __future__ import annotations

from . import ops as _ops
from .ops.activation import *  # noqa: F403
from .ops.conv import *  # noqa: F403
from .ops.linear import *  # noqa: F403
from .ops.loss import *  # noqa: F403
from .ops.norm import *  # noqa: F403
from .ops.pad import *  # noqa: F403
from .ops.pool import *  # noqa: F403
from .ops.resize import *  # noqa: F403

#: The op families, in the order their names appear in ``__all__``.
FAMILIES = (
    _ops.conv,
    _ops.linear,
    _ops.activation,
    _ops.loss,
    _ops.pool,
    _ops.pad,
    _ops.norm,
    _ops.resize,
)

__all__ = [name for family in FAMILIES for name in family.__all__]
