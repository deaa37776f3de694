# Stubs for the compiled convolution kernels (cnncore/ops/_conv.pyx; also built as _conv_avx2 and
# _conv_avx512).  Arrays are C-contiguous float32 or float64, all of one dtype; shapes are
# validated by cnncore.functional before these are called.  Outputs are written in place.
import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.float32] | NDArray[np.float64]

def conv2d_forward(
    x: _F,
    weight: _F,
    bias: _F | None,
    y_out: _F,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    groups: int,
    algorithm: int,
    n_threads: int,
) -> None: ...
def conv2d_relu_maxpool2x2_forward(
    x: _F,
    weight: _F,
    bias: _F | None,
    y_out: _F,
    indices_out: NDArray[np.int64],
    ph: int,
    pw: int,
    Ho: int,
    Wo: int,
    n_threads: int,
) -> None: ...
def conv2d_relu_maxpool2x2_backward_weight(
    grad_output: _F,
    indices: NDArray[np.int64],
    relu_output: _F,
    x: _F,
    dw_out: _F,
    db_out: _F | None,
    ph: int,
    pw: int,
    Ho: int,
    Wo: int,
    n_threads: int,
) -> None: ...
def conv2d_backward_input(
    grad_output: _F,
    weight: _F,
    dx_out: _F,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    groups: int,
    algorithm: int,
    n_threads: int,
) -> None: ...
def conv_transpose2d_forward(
    x: _F,
    weight: _F,
    bias: _F | None,
    y_out: _F,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    groups: int,
    algorithm: int,
    n_threads: int,
) -> None: ...
def conv2d_backward_weight(
    grad_output: _F,
    x: _F,
    dw_out: _F,
    db_out: _F | None,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    groups: int,
    algorithm: int,
    n_threads: int,
) -> None: ...
def conv2d_backward_bias(grad_output: _F, db_out: _F, n_threads: int) -> None: ...
def im2col(
    x: _F,
    cols_out: _F,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    Ho: int,
    Wo: int,
    n_threads: int,
) -> None: ...
def col2im(
    cols: _F,
    x_out: _F,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    Ho: int,
    Wo: int,
    n_threads: int,
) -> None: ...
def set_col_budget(elements: int) -> int: ...
