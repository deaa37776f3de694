"""Type aliases of the public API's annotations (what the functions accept)."""

from __future__ import annotations

from numpy.typing import ArrayLike, DTypeLike

__all__ = ["ArrayLike", "DTypeLike", "IntPair", "Padding", "Shape"]

#: A size that applies to both spatial axes (``3``) or to each (``(3, 5)``).
IntPair = int | tuple[int, int]
#: Padding of a convolution or pooling: an int, a pair, or ``'same'`` / ``'valid'`` (conv).
Padding = int | tuple[int, int] | tuple[int, int, int, int] | str
#: An array shape, e.g. ``x.shape``.
Shape = tuple[int, ...]
