"""The layers with parameters or caches, one module per family: :mod:`.conv`,
:mod:`.linear`, :mod:`.reshape`, :mod:`.dropout`, :mod:`.normalization` and :mod:`.pooling`
(activations are in :mod:`.activation`, losses in :mod:`.loss`).

This module only re-exports them, so that ``from cnncore.nn.layers import Conv2d`` keeps
working; new code imports from :mod:`cnncore.nn`.
"""

from . import conv, dropout, linear, normalization, pooling, reshape
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .linear import *  # noqa: F403
from .normalization import *  # noqa: F403
from .pooling import *  # noqa: F403
from .reshape import *  # noqa: F403

__all__ = [
    name
    for family in (conv, linear, reshape, dropout, normalization, pooling)
    for name in family.__all__
]
