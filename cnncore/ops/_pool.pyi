"""Type stubs for the compiled pooling kernels (``cnncore/ops/_pool.pyx``).

Arrays are C-contiguous NCHW float32/float64 (``x`` and outputs share one dtype) and int64
for indices; shapes and values are validated by :mod:`cnncore.functional` before these
run.  Functions taking indices raise ValueError on an out-of-range index.
"""

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating]
_I = npt.NDArray[np.int64]

def _set_simd_level(level: int) -> int: ...
def max_pool2d_forward(
    x: _F,
    y_out: _F,
    indices_out: _I | None,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    n_threads: int,
    relu: bool = False,
) -> None: ...
def index_scatter_add(
    src: _F, indices: _I, dst_out: _F, n_threads: int, func: str, relu_output: _F | None = None
) -> None: ...
def index_scatter_set(src: _F, indices: _I, dst_out: _F, n_threads: int, func: str) -> None: ...
def index_gather(src: _F, indices: _I, dst_out: _F, n_threads: int, func: str) -> None: ...
def avg_pool2d_forward(
    x: _F,
    y_out: _F,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    divisor: int,
    n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    grad_output: _F,
    dx_out: _F,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    divisor: int,
    n_threads: int,
) -> None: ...
def adaptive_avg_pool2d_forward(x: _F, y_out: _F, n_threads: int) -> None: ...
def adaptive_avg_pool2d_backward(grad_output: _F, dx_out: _F, n_threads: int) -> None: ...
def adaptive_max_pool2d_forward(
    x: _F, y_out: _F, indices_out: _I | None, n_threads: int
) -> None: ...
def global_avg_pool2d_forward(x: _F, y_out: _F, n_threads: int) -> None: ...
def global_avg_pool2d_backward(grad_output: _F, dx_out: _F, n_threads: int) -> None: ...
def lp_pool2d_forward(
    x: _F, y_out: _F, norm_type: float, kh: int, kw: int, sh: int, sw: int, n_threads: int
) -> None: ...
def lp_pool2d_backward(
    grad_output: _F,
    x: _F,
    dx_out: _F,
    norm_type: float,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    n_threads: int,
) -> None: ...
