"""The layers with parameters or caches, one module per family: :mod:`.conv`,
:mod:`.linear`, :mod:`.reshape`, :mod:`.dropout`, :mod:`.normalization` and :mod:`.pooling`
(activations are in :mod:`.activation`, losses in :mod:`.loss`).

This module only re-exports them, so that ``from cnncore.nn.layers import Conv2d`` keeps
working; new code imports from :mod:`cnncore.nn`.
"""

from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .reshape import Flatten

__all__ = [
    "Conv2d",
    "Linear",
    "Flatten",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
]
