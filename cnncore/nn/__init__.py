"""Layers, losses and containers built on :mod:`cnncore.functional`.

Layers follow PyTorch's constructors (``Conv2d(in_channels, out_channels, kernel_size, ...)``)
and default initialization; :class:`Sequential` adds Keras-style ``fit``/``evaluate``/
``predict`` and pickle-free ``save`` (load with :func:`cnncore.load`).
"""

from . import init
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
)
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
from .parameter import Parameter
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
