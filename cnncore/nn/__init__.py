"""Layers, losses and containers built on :mod:`cnncore.functional`.

Layers follow PyTorch's constructors (``Conv2d(in_channels, out_channels, kernel_size, ...)``)
and default initialization; :class:`Sequential` adds Keras-style ``fit``/``evaluate``/
``predict`` and pickle-free ``save`` (load with :func:`cnncore.load`).

One module per family: :mod:`.conv`, :mod:`.linear`, :mod:`.pooling`, :mod:`.normalization`,
:mod:`.dropout`, :mod:`.reshape`, :mod:`.activation`, :mod:`.loss`; :mod:`.module` holds the
:class:`Module` base (model protocol, class registry, helpers the layers share),
:mod:`.sequential` the container, :mod:`.training` ``fit``/``evaluate``/``predict`` (for any
module) and :mod:`.serialization` ``save``/``load`` (through the registry).
"""

from . import init
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    L2Loss,
    MAPELoss,
    MSELoss,
    MSLELoss,
)
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .reshape import Flatten
from .sequential import Sequential
from .serialization import load, save
from .training import History

__all__ = [
    "init",
    "Module",
    "Parameter",
    "Sequential",
    "History",
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
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "MSELoss",
    "L1Loss",
    "MSLELoss",
    "MAPELoss",
    "L2Loss",
    "load",
    "save",
]
