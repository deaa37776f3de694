"""Type aliases of the public API's annotations (what the functions accept)."""

from __future__ import annotations

import os

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "ArrayLike",
    "DTypeLike",
    "IntPair",
    "LossResult",
    "Padding",
    "PathLike",
    "RNGLike",
    "Shape",
]

#: A size that applies to both spatial axes (``3``) or to each (``(3, 5)``).
IntPair = int | tuple[int, int]
#: Padding of a convolution or pooling: an int, a pair, or ``'same'`` / ``'valid'`` (conv).
Padding = int | tuple[int, int] | tuple[int, int, int, int] | str
#: An array shape, e.g. ``x.shape``.
Shape = tuple[int, ...]
#: A file path: a ``str`` or an ``os.PathLike`` such as ``pathlib.Path``.
PathLike = str | os.PathLike[str]
#: A random source: a NumPy ``Generator``, an int seed, or None (the default generator).
RNGLike = np.random.Generator | int | None
#: What a loss function returns: the loss (a NumPy scalar, or an array for
#: ``reduction='none'``), and with ``return_grad=True`` the pair ``(loss, grad)``.
LossResult = np.floating | np.ndarray | tuple[np.floating | np.ndarray, np.ndarray]
