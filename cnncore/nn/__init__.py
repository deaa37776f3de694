"""Layers, losses and containers built on :mod:`cnncore.functional`.

Layers follow PyTorch's constructors (``Conv2d(in_channels, out_channels, kernel_size, ...)``)
and default initialization; :class:`Sequential` adds Keras-style ``fit``/``evaluate``/
``predict`` and pickle-free ``save`` (load with :func:`cnncore.load`).

One module per family: :mod:`.conv`, :mod:`.linear`, :mod:`.pooling`, :mod:`.normalization`,
:mod:`.dropout`, :mod:`.reshape`, :mod:`.resize`, :mod:`.activation`, :mod:`.merge` (Add, Multiply,
Concatenate, Identity), :mod:`.loss`; :mod:`.module` holds the :class:`Module` base (model
protocol, class registry, names, helpers the layers share), :mod:`.sequential` the container,
:mod:`.graph` graph models (:func:`Input`, :class:`Model`: Keras' functional API),
:mod:`.training` ``fit``/``evaluate``/``predict`` (for any module) and :mod:`.serialization`
``save``/``load`` (through the registry).
"""

from . import (
    activation,
    conv,
    dropout,
    init,
    linear,
    loss,
    merge,
    normalization,
    pooling,
    reshape,
    resize,
)
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .graph import Input, Model, Node
from .inference import fuse
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .merge import *  # noqa: F403
from .module import Module
from .normalization import *  # noqa: F403
from .parameter import Parameter
from .pooling import *  # noqa: F403
from .reshape import *  # noqa: F403
from .resize import *  # noqa: F403
from .safetensors_io import load_file as load_safetensors
from .safetensors_io import save_file as save_safetensors
from .sequential import Sequential
from .serialization import load, save
from .training import History

#: The layer families; each module's ``__all__`` is re-exported here (a new layer joins
#: ``cnncore.nn`` by being listed in its family module's ``__all__``).
LAYER_FAMILIES = (
    conv,
    linear,
    reshape,
    dropout,
    normalization,
    pooling,
    resize,
    activation,
    merge,
    loss,
)

__all__ = [
    "init",
    "Module",
    "Parameter",
    "Sequential",
    "Input",
    "Node",
    "Model",
    "History",
    *(name for family in LAYER_FAMILIES for name in family.__all__),
    "load",
    "save",
    "fuse",
    "load_safetensors",
    "save_safetensors",
]
