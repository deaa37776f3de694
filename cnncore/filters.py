"""Classic 2-D filter matrices for :func:`cnncore.correlate2d` / :func:`cnncore.convolve2d`
(and, reshaped to ``(1, 1, kH, kW)``, for :func:`cnncore.conv2d`).

Also importable under its old name, :mod:`cnncore.kernels` (an alias: "kernels" means the
compiled code everywhere else in cnncore).

The constants are read-only float64 arrays (``kernel.astype(np.float32)`` for float32 images;
``kernel.copy()`` for a writeable one). The directional kernels are written for
*correlation* (what :func:`cnncore.correlate2d` and :func:`cnncore.conv2d` compute): e.g.
``correlate2d(img, SOBEL_X)`` is positive where intensity increases to the right. With
:func:`cnncore.convolve2d` their sign flips (the kernel is rotated by 180 degrees); the
symmetric ones (blurs, Laplacian, sharpen) are the same either way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._validation import check_int, check_real

__all__ = [
    "IDENTITY",
    "SHARPEN",
    "BOX_BLUR",
    "GAUSSIAN_3X3",
    "SOBEL_X",
    "SOBEL_Y",
    "SCHARR_X",
    "SCHARR_Y",
    "LAPLACIAN",
    "LAPLACIAN_8",
    "EMBOSS",
    "box",
    "gaussian",
]


def _const(rows: list[list[float]], scale: float = 1.0) -> np.ndarray:
    arr = np.array(rows, dtype=np.float64) * scale
    arr.flags.writeable = False
    return arr


#: Leaves the image unchanged.
IDENTITY = _const([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
#: Sharpen: identity plus the negative 4-neighbour Laplacian (sums to 1).
SHARPEN = _const([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
#: 3x3 mean filter (sums to 1).
BOX_BLUR = _const([[1, 1, 1], [1, 1, 1], [1, 1, 1]], 1 / 9)
#: 3x3 binomial approximation of a Gaussian, ``[1 2 1]^T [1 2 1] / 16`` (sums to 1).
GAUSSIAN_3X3 = _const([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16)
#: Sobel derivative along x (columns): positive for intensity increasing to the right.
SOBEL_X = _const([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
#: Sobel derivative along y (rows): positive for intensity increasing downwards.
SOBEL_Y = _const([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
#: Scharr derivative along x (better rotational symmetry than Sobel).
SCHARR_X = _const([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
#: Scharr derivative along y.
SCHARR_Y = _const([[-3, -10, -3], [0, 0, 0], [3, 10, 3]])
#: 4-neighbour discrete Laplacian (sums to 0).
LAPLACIAN = _const([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
#: 8-neighbour discrete Laplacian (sums to 0).
LAPLACIAN_8 = _const([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
#: Emboss (relief lit from the top left; sums to 1).
EMBOSS = _const([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def box(size: Any) -> np.ndarray:
    """A ``size x size`` mean filter: every entry ``1 / size**2``.

    Parameters
    ----------
    size : int >= 1

    Returns
    -------
    kernel : ndarray of shape (size, size), float64, sums to 1 (a new, writeable array)
    """
    size = check_int(size, "size", "box", min_value=1, max_value=4096)
    return np.full((size, size), 1.0 / (size * size))


def gaussian(size: Any, sigma: Any) -> np.ndarray:
    """A ``size x size`` Gaussian blur kernel, normalized to sum to 1.

    Parameters
    ----------
    size : int >= 1
        Width and height; the centre is at ``(size - 1) / 2`` (between pixels for an even
        size).
    sigma : float > 0
        Standard deviation in pixels. ``size = 2 * ceil(3 * sigma) + 1`` keeps 99.7% of the
        mass.

    Returns
    -------
    kernel : ndarray of shape (size, size), float64 (a new, writeable array)
        ``outer(g, g)`` with ``g[i] = exp(-(i - c)**2 / (2 sigma**2))`` normalized so that
        ``g.sum() == 1``.
    """
    func = "gaussian"
    size = check_int(size, "size", func, min_value=1, max_value=4096)
    sigma = check_real(sigma, "sigma", func)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"{func}(): sigma must be a finite number > 0. Received: sigma={sigma!r}")
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r * r) / (2 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)
