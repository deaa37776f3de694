"""Type stubs for the ``cnncore.nn._merge`` extension (see ``cnncore/nn/_merge.pyx``)."""

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]

def add(a: _Float, b: _Float, out: _Float, n_threads: int) -> None:
    """``out = a + b`` elementwise (``out`` may be ``a`` or ``b``); all of one size."""

def add_relu_backward(a: _Float, b: _Float, output: _Float, out: _Float, n_threads: int) -> None:
    """``out = relu_backward(a + b, output)`` (``out`` may be ``a`` or ``b``)."""
