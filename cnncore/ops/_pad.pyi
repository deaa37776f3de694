"""Type stubs for the compiled padding kernels (``cnncore/ops/_pad.pyx``).

Arrays are C-contiguous NCHW float32/float64 of one dtype; padding and sizes are validated
by :mod:`cnncore.functional`.  ``mode`` is one of the module constants; the right/bottom
padding is implied by the output (forward) or gradient (backward) shape.
"""

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating]

def pad2d_forward(
    x: _F, y_out: _F, left: int, top: int, mode: int, value: float, n_threads: int
) -> None: ...
def pad2d_backward(
    grad_output: _F, dx_out: _F, left: int, top: int, mode: int, n_threads: int
) -> None: ...
