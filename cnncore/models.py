"""Ready-made networks for MNIST-class data (``(N, 1, 28, 28)`` inputs, 10 classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import nn

__all__ = ["lenet5", "simple_cnn", "MODELS", "build"]


def lenet5(
    num_classes: int = 10, in_channels: int = 1, *, dtype: Any = np.float32, rng: Any = None
) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling: conv6-5-p2, pool, conv16-5, pool, fc120, fc84, fc.

    61,706 parameters for 10 classes on 28x28 inputs.
    """
    gen = nn.init.get_rng(rng)
    kw = dict(dtype=dtype, rng=gen)
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, **kw),
        nn.ReLU(),
        nn.Linear(120, 84, **kw),
        nn.ReLU(),
        nn.Linear(84, num_classes, **kw),
    )


def simple_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: Any = np.float32,
    rng: Any = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A small VGG-style CNN: conv32-3-p1, pool, conv64-3-p1, pool, fc128, fc.

    421,642 parameters for 10 classes on 28x28 inputs; ``dropout`` (before the last layer)
    regularizes longer runs.
    """
    gen = nn.init.get_rng(rng)
    kw = dict(dtype=dtype, rng=gen)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 32, 3, padding=1, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128, **kw),
        nn.ReLU(),
    ]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(128, num_classes, **kw))
    return nn.Sequential(*layers)


MODELS = {"lenet": lenet5, "lenet5": lenet5, "cnn": simple_cnn}


def build(name: str, **kwargs: Any) -> nn.Sequential:
    """Build a model by name: ``'lenet'`` (LeNet-5) or ``'cnn'``."""
    try:
        factory = MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown model. Expected one of {sorted(MODELS)}. Received: model={name!r}"
        ) from None
    return factory(**kwargs)
