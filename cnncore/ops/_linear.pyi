# Stubs for cnncore/ops/_linear.pyx: fully connected kernels (C-contiguous float32/float64,
# one dtype; validated by cnncore.functional). Outputs are written in place.
import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.float32] | NDArray[np.float64]

def linear_forward(x: _F, weight: _F, bias: _F | None, y_out: _F, n_threads: int) -> None: ...
def linear_backward_input(grad_output: _F, weight: _F, dx_out: _F, n_threads: int) -> None: ...
def linear_backward_weight(grad_output: _F, x: _F, dw_out: _F, n_threads: int) -> None: ...
