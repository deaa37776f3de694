"""2-D correlation and convolution of single images, with :mod:`scipy.signal` semantics.

:func:`correlate2d` and :func:`convolve2d` give the results of
:func:`scipy.signal.correlate2d` / :func:`scipy.signal.convolve2d` (output modes, boundary
modes, the ``'same'`` centering and the ``'valid'``-mode input swap) on float32/float64
images, computed either directly -- in the spatial domain, by :func:`cnncore.conv2d` on the
boundary-padded image -- or through the FFT (convolution theorem, ``scipy.fft.rfft2``).
Both functions are re-exported at the top level (``cnncore.correlate2d``).

Classic filter matrices (Sobel, Gaussian, ...) are in :mod:`cnncore.filters`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._config import get_num_threads
from ._validation import as_float_array, check_choice, check_numel, check_real, check_same_dtype

__all__ = ["correlate2d", "convolve2d"]

_MODES = ("full", "valid", "same")
_BOUNDARIES = ("fill", "wrap", "symm")
_METHODS = ("auto", "direct", "fft")
_NP_PAD_MODE = {"wrap": "wrap", "symm": "symmetric"}

# 'auto' cost model, in units of one multiply-add of the direct sweep
# (H_out * W_out * kH * kW of them); the FFT path costs _FFT_COST[dtype] per point per log2(points)
# of its transform grid plus a fixed overhead.  Fitted on 2 cores against measured times of
# both methods for square images of 64..1024 and kernels of 3..31 ('same' mode), both dtypes:
# every coefficient in [1.5, 2.0] picked the faster method in all 90 cases (the crossover is a
# kernel of about 9x9 at 256, 7x7 at 1024); 1.75 is the middle of that range.
_FFT_COST = {np.dtype(np.float32): 1.75, np.dtype(np.float64): 1.75}
_FFT_OVERHEAD = 4.0e4
_FFT_THREADED_POINTS = 800 * 800


def _pad(
    in1: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], boundary: str, fillvalue: float
) -> np.ndarray:
    if pads == ((0, 0), (0, 0)):
        return in1
    if boundary == "fill":
        return np.pad(in1, pads, mode="constant", constant_values=fillvalue)
    return np.pad(in1, pads, mode=_NP_PAD_MODE[boundary])


def _fft_len(n: int) -> int:
    import scipy.fft

    return scipy.fft.next_fast_len(n, real=True)


def _choose_method(
    out_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    padded_shape: tuple[int, int],
    dtype: np.dtype,
) -> str:
    direct = out_shape[0] * out_shape[1] * kernel_shape[0] * kernel_shape[1]
    points = _fft_len(padded_shape[0]) * _fft_len(padded_shape[1])
    fft = _FFT_COST[dtype] * points * np.log2(max(points, 2)) + _FFT_OVERHEAD
    return "direct" if direct <= fft else "fft"


def _valid_correlate(padded: np.ndarray, kernel: np.ndarray, method: str) -> np.ndarray:
    """``out[i, j] = sum_{a, b} padded[i + a, j + b] * kernel[a, b]`` (the 'valid' part)."""
    mp, np_ = padded.shape
    kh, kw = kernel.shape
    if method == "direct":
        from .functional import conv2d

        return conv2d(padded[None, None], kernel[None, None])[0, 0]
    import scipy.fft

    # Circular convolution with the 180-degree rotated kernel on a grid of at least the padded
    # size: wrap-around only touches the first kh-1 rows / kw-1 columns, which 'valid' drops.
    shape = (_fft_len(mp), _fft_len(np_))
    # pocketfft's threads only pay from about a 1000 x 1000 grid (below it, two workers are
    # slower than one: 0.40 vs 0.27 ms for 270 x 270 float64 on 2 cores)
    workers = get_num_threads() if shape[0] * shape[1] >= _FFT_THREADED_POINTS else 1
    spec = scipy.fft.rfft2(padded, shape, workers=workers)
    spec *= scipy.fft.rfft2(kernel[::-1, ::-1], shape, workers=workers)
    full = scipy.fft.irfft2(spec, shape, workers=workers)
    return np.ascontiguousarray(full[kh - 1 : mp, kw - 1 : np_], dtype=padded.dtype)


def _correlate_or_convolve(
    func: str, flip: bool, in1: Any, in2: Any, mode: Any, boundary: Any, fillvalue: Any, method: Any
) -> np.ndarray:
    a = as_float_array(in1, "in1", func, ndim=2, ndim_text="a 2-D array")
    k = as_float_array(in2, "in2", func, ndim=2, ndim_text="a 2-D array")
    dtype = check_same_dtype(func, in1=a, in2=k)
    mode = check_choice(mode, "mode", func, _MODES)
    boundary = check_choice(boundary, "boundary", func, _BOUNDARIES)
    method = check_choice(method, "method", func, _METHODS)
    fill = check_real(fillvalue, "fillvalue", func)
    swapped = False
    if mode == "valid":
        ok1 = a.shape[0] >= k.shape[0] and a.shape[1] >= k.shape[1]
        ok2 = k.shape[0] >= a.shape[0] and k.shape[1] >= a.shape[1]
        if not (ok1 or ok2):
            raise ValueError(
                f"{func}(): for mode='valid', one of in1 and in2 must be at least as large as "
                f"the other in every dimension. Received: in1 with shape {a.shape}, in2 with "
                f"shape {k.shape}"
            )
        if not ok1:  # scipy swaps the inputs (and, for correlation, flips the result)
            a, k = k, a
            swapped = True
    (m1, n1), (m2, n2) = a.shape, k.shape
    if mode == "full":
        out_shape = (m1 + m2 - 1, n1 + n2 - 1)
        pads = ((m2 - 1, m2 - 1), (n2 - 1, n2 - 1))
    elif mode == "same":
        out_shape = (m1, n1)
        # scipy centres 'same' at offset k//2 of the full correlation, (k-1)//2 of the full
        # convolution: pad (k-1)//2 before / k//2 after (and the reverse for convolution).
        th, tw = (m2 // 2, n2 // 2) if flip else ((m2 - 1) // 2, (n2 - 1) // 2)
        pads = ((th, m2 - 1 - th), (tw, n2 - 1 - tw))
    else:
        out_shape = (m1 - m2 + 1, n1 - n2 + 1)
        pads = ((0, 0), (0, 0))
    out_shape = (max(out_shape[0], 0), max(out_shape[1], 0))
    check_numel(out_shape, "output", func, dtype.itemsize)
    if a.size == 0 or k.size == 0 or 0 in out_shape:
        return np.zeros(out_shape, dtype=dtype)  # an empty sum
    kernel = k[::-1, ::-1] if flip else k
    padded = _pad(a, pads, boundary, fill)
    check_numel(padded.shape, "padded in1", func, dtype.itemsize)
    if method == "auto":
        method = _choose_method(out_shape, kernel.shape, padded.shape, dtype)
    out = _valid_correlate(np.ascontiguousarray(padded), np.ascontiguousarray(kernel), method)
    if swapped and not flip:
        out = np.ascontiguousarray(out[::-1, ::-1])
    return out


def correlate2d(
    in1: Any,
    in2: Any,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: float = 0,
    method: str = "auto",
) -> np.ndarray:
    """Cross-correlate two 2-D arrays: ``out[i, j] = sum_{a, b} in1[i + a, j + b] * in2[a, b]``
    (indices shifted per ``mode``).

    Same results as :func:`scipy.signal.correlate2d` (real inputs).

    Parameters
    ----------
    in1 : array_like of shape (M1, N1)
        The image, float32 or float64.
    in2 : array_like of shape (M2, N2)
        The template / kernel, same dtype as ``in1``.
    mode : {'full', 'valid', 'same'}, default 'full'
        'full': every overlap, shape ``(M1 + M2 - 1, N1 + N2 - 1)``. 'valid': only positions
        where ``in2`` lies inside ``in1``, shape ``(M1 - M2 + 1, N1 - N2 + 1)``; one input
        must be at least as large as the other in both dimensions, and if ``in2`` is the larger
        one the inputs are swapped and the result is rotated by 180 degrees, as in SciPy.
        'same': shape of ``in1``, centred on the full output at offset ``(M2 // 2, N2 // 2)``.
    boundary : {'fill', 'wrap', 'symm'}, default 'fill'
        How ``in1`` is extended beyond its edges: the constant ``fillvalue``, periodically,
        or by mirror reflection including the edge sample (``d c b a | a b c d | d c b a``).
    fillvalue : float, default 0
        The value outside ``in1`` for ``boundary='fill'``.
    method : {'auto', 'direct', 'fft'}, default 'auto'
        'direct': the sums in the spatial domain, by :func:`cnncore.conv2d` (with whichever
        of its kernel algorithms it picks for the shape) on ``in1`` padded per ``boundary``.
        'fft': the same padded image, correlated through ``scipy.fft.rfft2`` (rounding
        differs from 'direct', as with :func:`scipy.signal.fftconvolve`). 'auto': whichever
        a cost model predicts to be faster (direct for small kernels).

    Returns
    -------
    out : ndarray, dtype of the inputs

    Raises
    ------
    ValueError
        For mode 'valid' when neither input is at least as large as the other.

    See Also
    --------
    convolve2d : the same with ``in2`` rotated by 180 degrees.
    cnncore.conv2d : batched, multi-channel cross-correlation (zero padding only).
    cnncore.filters : classic filter matrices (Sobel, Gaussian, ...).

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> img = np.arange(16.0).reshape(4, 4)
    >>> cnncore.correlate2d(img, cnncore.filters.BOX_BLUR, mode="valid")
    array([[ 5.,  6.],
           [ 9., 10.]])
    """
    return _correlate_or_convolve("correlate2d", False, in1, in2, mode, boundary, fillvalue, method)


def convolve2d(
    in1: Any,
    in2: Any,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: float = 0,
    method: str = "auto",
) -> np.ndarray:
    """Convolve two 2-D arrays: ``out[i, j] = sum_{a, b} in1[i - a, j - b] * in2[a, b]``, i.e.
    correlation with ``in2`` rotated by 180 degrees.

    Same results as :func:`scipy.signal.convolve2d` (real inputs); ``method='fft'`` matches
    :func:`scipy.signal.fftconvolve` for ``boundary='fill'`` with ``fillvalue=0``.

    Parameters
    ----------
    in1 : array_like of shape (M1, N1)
    in2 : array_like of shape (M2, N2)
        Same dtype as ``in1``.
    mode : {'full', 'valid', 'same'}, default 'full'
        As in :func:`correlate2d`, except that 'same' is centred at offset
        ``((M2 - 1) // 2, (N2 - 1) // 2)`` of the full convolution, and the 'valid'-mode swap
        needs no rotation (convolution is commutative) -- both as in SciPy.
    boundary : {'fill', 'wrap', 'symm'}, default 'fill'
    fillvalue : float, default 0
    method : {'auto', 'direct', 'fft'}, default 'auto'

    Returns
    -------
    out : ndarray, dtype of the inputs

    See Also
    --------
    correlate2d
    cnncore.filters
    """
    return _correlate_or_convolve("convolve2d", True, in1, in2, mode, boundary, fillvalue, method)
