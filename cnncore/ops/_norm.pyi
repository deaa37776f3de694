"""Type stubs for the ``cnncore.ops._norm`` extension (see ``cnncore/ops/_norm.pyx``).

Arrays are flat C-contiguous float32 or float64 (one dtype per call; statistics and partial
sums float64); shapes are validated by :mod:`cnncore.ops.norm`, which is the public API.
Empty inputs never reach the kernels.
"""

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_F64 = NDArray[np.float64]

def group_norm_forward(
    x: _Float,
    y_out: _Float,
    weight: _Float | None,
    bias: _Float | None,
    n_seg: int,
    G: int,
    Cg: int,
    S: int,
    eps: float,
    mean: _F64,
    var: _F64,
    stats_given: bool,
    n_threads: int,
) -> None:
    """Group norm of ``(n_seg, Cg * S)`` segments; ``mean`` / ``var`` per segment are
    outputs, or inputs with ``stats_given``."""

def group_norm_backward(
    grad_output: _Float,
    x: _Float,
    grad_x: _Float,
    weight: _Float | None,
    n_seg: int,
    G: int,
    Cg: int,
    S: int,
    eps: float,
    mean: _F64,
    var: _F64,
    stats_given: bool,
    db_out: _F64,
    dw_out: _F64,
    n_threads: int,
    saved: bool = False,
) -> None:
    """Input gradient into ``grad_x``; per plane ``sum(g)`` into ``db_out`` and
    ``rstd * sum(g * (x - mean))`` into ``dw_out``.  ``saved``: ``mean`` / ``var`` hold
    the forward's mean and rstd per segment (not recomputed)."""

def layer_norm_forward(
    x: _Float,
    y_out: _Float,
    weight: _Float | None,
    bias: _Float | None,
    M: int,
    D: int,
    eps: float,
    mean: _F64,
    var: _F64,
    n_threads: int,
) -> None:
    """Layer norm of ``M`` rows of ``D`` elements."""

def layer_norm_backward(
    grad_output: _Float,
    x: _Float,
    grad_x: _Float,
    weight: _Float | None,
    M: int,
    D: int,
    eps: float,
    part_w: _F64,
    part_b: _F64,
    P: int,
    n_threads: int,
    mean: _F64 | None = None,
    rstd: _F64 | None = None,
) -> None:
    """Input gradient into ``grad_x``; with ``weight``, ``P`` row parts' sums of the weight
    and bias gradients into ``part_w`` / ``part_b`` (``(P, D)``, zeroed).  ``mean`` /
    ``rstd``: the forward's statistics per row (not recomputed)."""

def batch_norm_forward(
    x: _Float,
    y_out: _Float | None,
    weight: _Float | None,
    bias: _Float | None,
    N: int,
    C: int,
    L: int,
    eps: float,
    mean: _F64,
    var: _F64,
    stats_given: bool,
    n_threads: int,
    relu: bool = False,
    residual: _Float | None = None,
) -> None:
    """Batch norm of ``x`` seen as ``(N, C, L)``; ``mean`` / ``var`` per channel are outputs
    (the batch's), or inputs with ``stats_given``; ``y_out`` None: only the statistics.
    ``residual``: an Add fused (``y + residual``); ``relu``: a ReLU fused (``max(y, 0)``);
    each bit-identical to the separate op after."""

def batch_norm_backward(
    grad_output: _Float,
    x: _Float,
    grad_x: _Float | None,
    weight: _Float | None,
    N: int,
    C: int,
    L: int,
    eps: float,
    mean: _F64,
    var: _F64,
    sum_g: _F64,
    sum_gxhat: _F64,
    sums_given: bool,
    count: float,
    training: bool,
    n_threads: int,
    relu: bool = False,
    relu_weight: _Float | None = None,
    relu_bias: _Float | None = None,
) -> None:
    """Per channel ``sum(g)`` / ``sum(g * xhat)`` into ``sum_g`` / ``sum_gxhat`` (or given,
    over ``count`` elements, with ``sums_given``) and the input gradient into ``grad_x``
    (None: only the sums).  ``relu``: the forward had a ReLU fused, with ``relu_weight`` /
    ``relu_bias`` (its weight and bias, or None); ``grad_output`` is masked first as
    relu_backward does, the ReLU's output recomputed from ``x`` bit for bit."""
