"""Type stubs for the ``cnncore.ops._loss`` extension (see ``cnncore/ops/_loss.pyx``).

Arrays are C-contiguous float32 or float64 (one dtype per call); shapes, dtypes and label
ranges are validated by :mod:`cnncore.functional`, which is the public API.
"""

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]

MAPE_EPSILON: float
BCE_GRAD_EPSILON: float

def pointwise(
    kind: int,
    input: _Float,
    target: _Float,
    loss_out: _Float | None,
    grad_out: _Float | None,
    gscale: float,
    n_threads: int,
    weight: _Float | None = None,
    pos_weight: _Float | None = None,
) -> tuple[float, int]:
    """Elementwise loss over 1-D arrays: returns ``(sum of losses, domain flags)`` and fills
    ``loss_out`` (per-element losses) and ``grad_out`` (``gscale * d loss / d input``) when
    given. ``weight`` rescales each element's loss and gradient, ``pos_weight`` the positive
    term of BCE with logits (PyTorch's arguments, broadcast to the input's length). A
    non-zero flag (``LossDomain`` bits of ``cnncore._shared``) means the values are
    invalid."""

def cross_entropy(
    logits: _Float,
    labels: NDArray[np.int64] | None,
    probs: _Float | None,
    weight: _Float | None,
    ignore_index: int,
    label_smoothing: float,
    loss_out: _Float | None,
    grad_out: _Float | None,
    gscale: float,
    n_threads: int,
) -> float:
    """Cross entropy of the rows of ``logits`` (R, C) against ``labels`` (R,) or ``probs``
    (R, C), each class rescaled by ``weight`` (C,) when given; returns the sum of the row
    losses and fills ``loss_out`` (R,) / ``grad_out`` (R, C) when given. Raises IndexError
    for a label outside [0, C) (other than ``ignore_index``)."""
