"""Data augmentation for image batches, applied per training batch by ``fit``.

An augmentation is any callable ``augment(x, rng) -> x`` on an ``(N, C, H, W)`` float batch;
``fit(..., augment=...)`` calls it on every training batch (never on validation data) with the
generator that ``fit``'s ``seed`` controls, so augmented runs stay reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._validation import check_bool, check_hyperparameter, check_int

__all__ = ["FlipShift"]


class FlipShift:
    """Random horizontal flips and random translations by up to ``max_shift`` pixels.

    Each image is mirrored left-right with probability ``flip_prob`` and shifted by a
    uniformly drawn ``(dy, dx)`` in ``[-max_shift, max_shift]`` with zero fill (i.e. a random
    crop of the zero-padded image), all vectorized over the batch.

    Parameters
    ----------
    max_shift : int, default 2
    flip : bool, default True
    flip_prob : float, default 0.5

    Examples
    --------
    >>> model.fit(x, y, optimizer=opt, loss="cross_entropy", augment=FlipShift(2))
    """

    def __init__(self, max_shift: int = 2, flip: bool = True, flip_prob: float = 0.5) -> None:
        self.max_shift = check_int(max_shift, "max_shift", "FlipShift", min_value=0, max_value=64)
        self.flip = check_bool(flip, "flip", "FlipShift")
        self.flip_prob = check_hyperparameter(
            flip_prob, "flip_prob", "FlipShift", "in [0, 1]", lambda p: 0.0 <= p <= 1.0
        )

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"FlipShift(): x must be a 4-D batch (N, C, H, W). Received: x with shape {x.shape}"
            )
        n, _, h, w = x.shape
        if self.flip:
            mirror = rng.random(n) < self.flip_prob
            x = np.where(mirror[:, None, None, None], x[..., ::-1], x)
        s = self.max_shift
        if s == 0 or n == 0:
            return np.ascontiguousarray(x)
        padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
        windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2s+1, 2s+1, h, w)
        dy = rng.integers(0, 2 * s + 1, n)
        dx = rng.integers(0, 2 * s + 1, n)
        return np.ascontiguousarray(windows[np.arange(n), :, dy, dx])

    def __repr__(self) -> str:
        return (
            f"FlipShift(max_shift={self.max_shift}, flip={self.flip}, flip_prob={self.flip_prob})"
        )

    def get_config(self) -> dict[str, Any]:
        return {"max_shift": self.max_shift, "flip": self.flip, "flip_prob": self.flip_prob}
