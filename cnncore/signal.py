"""2-D correlation and convolution of single images, with :mod:`scipy.signal` semantics.

:func:`correlate2d` and :func:`convolve2d` give the results of
:func:`scipy.signal.correlate2d` / :func:`scipy.signal.convolve2d` -- output modes, boundary
modes, the ``'same'`` centering, the ``'valid'``-mode input swap, SciPy's result dtypes and
its errors -- computed either directly -- in the spatial domain, by :func:`cnncore.conv2d` on
the boundary-padded image -- or through the FFT (convolution theorem, ``scipy.fft``).
Both functions are re-exported at the top level (``cnncore.correlate2d``).

The result dtype is SciPy's, ``numpy.result_type(in1, in2)``:

* float32 / float64 (mixed widths give float64): cnncore's kernels in that precision.
* integers (bool with an integer included): the exact integer result, wrapped to the result
  dtype as SciPy's C loops wrap it (modulo ``2**bits``).  It runs through the float64
  kernels when ``max|image, fillvalue| * max|kernel| * kernel.size < 2**53`` (image and
  kernel: ``in1`` and ``in2`` after the 'valid'-mode swap): every product and every
  partial sum is then an integer of magnitude below 2**53, which float64 represents exactly,
  so the sums are exact in any order (no FFT, no Winograd transform).  Larger values take
  NumPy's integer arithmetic (``numpy.einsum`` over a sliding-window view).
* complex64 / complex128: the real and imaginary parts through the real kernels (the four
  real correlations as one two-channel :func:`cnncore.conv2d` call), or a complex FFT;
  ``correlate2d`` conjugates ``in2``, as SciPy does.
* long double / complex long double: NumPy arithmetic in that precision (or ``scipy.fft``).
* bool with bool, float16 alone or with bool / 8-bit integers, object, strings: ValueError,
  as SciPy raises.

Classic filter matrices (Sobel, Gaussian, ...) are in :mod:`cnncore.filters`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._config import get_num_threads
from ._typing import ArrayLike
from ._validation import FLOAT_DTYPES, _fmt, check_choice, check_numel

__all__ = ["correlate2d", "convolve2d"]

_MODES = ("full", "valid", "same")
# SciPy's boundary names and its aliases ('pad', 'circular', 'symmetric')
_BOUNDARY_NAMES = {
    "fill": "fill",
    "wrap": "wrap",
    "symm": "symm",
    "pad": "fill",
    "circular": "wrap",
    "symmetric": "symm",
}
_METHODS = ("auto", "direct", "fft")
_NP_PAD_MODE = {"wrap": "wrap", "symm": "symmetric"}
_NO_PADS = ((0, 0), (0, 0))
# the real dtype of the float kernels' computation per result dtype
_REAL_PART = {
    np.dtype(t): np.dtype(r) for t, r in [("f4", "f4"), ("f8", "f8"), ("c8", "f4"), ("c16", "f8")]
}

# Integers whose sums of products stay below this bound are computed exactly in float64.
_EXACT_FLOAT64 = 2**53

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
    in1: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], boundary: str, fillvalue: Any
) -> np.ndarray:
    if pads == _NO_PADS:
        return in1
    if boundary == "fill":
        return np.pad(in1, pads, mode="constant", constant_values=fillvalue)
    return np.pad(in1, pads, mode=_NP_PAD_MODE[boundary])


def _fft_len(n: int, real: bool = True) -> int:
    import scipy.fft

    return scipy.fft.next_fast_len(n, real=real)


def _choose_method(
    out_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    padded_shape: tuple[int, int],
    dtype: np.dtype,
    products: int = 1,
) -> str:
    """'direct' or 'fft' for real data of ``dtype`` (float32/float64); ``products`` real
    correlations per output (2 or 4 for complex data, which also transforms a complex grid:
    twice the work of a real one -- scaled from the real model, not fitted separately)."""
    direct = out_shape[0] * out_shape[1] * kernel_shape[0] * kernel_shape[1] * products
    points = _fft_len(padded_shape[0]) * _fft_len(padded_shape[1])
    fft_scale = 1 if products == 1 else 2
    fft = _FFT_COST[dtype] * fft_scale * points * np.log2(max(points, 2)) + _FFT_OVERHEAD
    return "direct" if direct <= fft else "fft"


def _complex_direct(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The 'valid' correlation with a complex operand, as real correlations in one
    :func:`cnncore.conv2d` call: channels carry the real and imaginary parts."""
    from .functional import conv2d

    p_c, k_c = padded.dtype.kind == "c", kernel.dtype.kind == "c"
    if p_c and k_c:
        # (Pr + i Pi)(Kr + i Ki): real = Pr*Kr - Pi*Ki, imag = Pr*Ki + Pi*Kr
        x = np.stack([padded.real, padded.imag])[None]
        kr, ki = kernel.real, kernel.imag
        w = np.stack([np.stack([kr, -ki]), np.stack([ki, kr])])
        re, im = conv2d(x, w)[0]
    elif k_c:  # real image, complex kernel: two output channels
        w = np.stack([kernel.real, kernel.imag])[:, None]
        re, im = conv2d(padded[None, None], w)[0]
    else:  # complex image, real kernel: a batch of two
        x = np.stack([padded.real, padded.imag])[:, None]
        re, im = conv2d(x, kernel[None, None])[:, 0]
    out = np.empty(re.shape, np.result_type(padded, kernel))
    out.real = re
    out.imag = im
    return out


def _numpy_correlate(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The 'valid' correlation in NumPy's arithmetic of the operands' dtype (integers wrap
    as in C; long double keeps its precision): one einsum over a sliding-window view."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape)
    return np.einsum("ijab,ab->ij", windows, kernel)


def _valid_correlate(padded: np.ndarray, kernel: np.ndarray, method: str) -> np.ndarray:
    """``out[i, j] = sum_{a, b} padded[i + a, j + b] * kernel[a, b]`` (the 'valid' part)."""
    mp, np_ = padded.shape
    kh, kw = kernel.shape
    complex_data = padded.dtype.kind == "c" or kernel.dtype.kind == "c"
    if method == "direct":
        if complex_data:
            return _complex_direct(padded, kernel)
        from .functional import conv2d

        return conv2d(padded[None, None], kernel[None, None])[0, 0]
    import scipy.fft

    # Circular convolution with the 180-degree rotated kernel on a grid of at least the padded
    # size: wrap-around only touches the first kh-1 rows / kw-1 columns, which 'valid' drops.
    shape = (_fft_len(mp, not complex_data), _fft_len(np_, not complex_data))
    # pocketfft's threads only pay from about a 1000 x 1000 grid (below it, two workers are
    # slower than one: 0.40 vs 0.27 ms for 270 x 270 float64 on 2 cores)
    workers = get_num_threads() if shape[0] * shape[1] >= _FFT_THREADED_POINTS else 1
    forward, inverse = (
        (scipy.fft.fft2, scipy.fft.ifft2) if complex_data else (scipy.fft.rfft2, scipy.fft.irfft2)
    )
    spec = forward(padded, shape, workers=workers)
    spec *= forward(kernel[::-1, ::-1], shape, workers=workers)
    full = inverse(spec, shape, workers=workers)
    dtype = np.result_type(padded, kernel)
    return np.ascontiguousarray(full[kh - 1 : mp, kw - 1 : np_], dtype=dtype)


# ------------------------------------------------------------------------------------------
# Arguments, checked as SciPy checks them (its exception types), with named messages
# ------------------------------------------------------------------------------------------


def _as_input(x: Any, name: str, func: str) -> np.ndarray:
    """``x`` as a 2-D ndarray of numbers (bool, integer, float or complex), not copied."""
    try:
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(
            f"{func}(): {name} must be a 2-D array. Received: {name} of type "
            f"{type(x).__name__} ({exc})"
        ) from None
    if arr.ndim != 2:
        got = f"{name} with shape {arr.shape}"
        if not isinstance(x, np.ndarray):
            got = f"{name}={_fmt(x)}" + (f" (shape {arr.shape})" if arr.ndim else "")
        raise ValueError(f"{func}(): {name} must be a 2-D array. Received: {got}")
    return arr


def _check_input_dtype(arr: np.ndarray, name: str, func: str) -> None:
    if arr.dtype.kind not in "biufc":
        raise ValueError(
            f"{func}(): {name} must hold numbers (bool, integer, float or complex). "
            f"Received: {name}.dtype={arr.dtype}"
        )


def _result_dtype(func: str, a: np.ndarray, k: np.ndarray) -> np.dtype:
    """SciPy's result dtype: ``numpy.result_type`` of the inputs, for which it has a loop."""
    _check_input_dtype(a, "in1", func)
    _check_input_dtype(k, "in2", func)
    dtype = np.result_type(a.dtype, k.dtype)
    if dtype.kind == "b" or dtype == np.float16:
        fix = "an integer or float" if dtype.kind == "b" else "a float32"
        raise ValueError(
            f"{func}(): in1 and in2 promote to {dtype}, which {func} does not compute (nor "
            f"does SciPy's); pass {fix} array. Received: in1.dtype={a.dtype}, "
            f"in2.dtype={k.dtype}"
        )
    return dtype


def _fill_value(value: Any, dtype: np.dtype, func: str) -> Any:
    """``fillvalue`` as a scalar of the result ``dtype``: a number or a one-element array
    (as SciPy), converted as SciPy converts it -- a float truncated towards zero for an
    integer result; a complex number for a real result, a non-finite one or one outside
    the range of an integer result raise ValueError.  Bools, strings and None (which SciPy
    parses or turns into NaN) raise TypeError."""
    received = f"Received: fillvalue={_fmt(value)}"
    not_a_number = TypeError(f"{func}(): fillvalue must be a number. {received}")
    src: Any
    if isinstance(value, int) and not isinstance(value, bool):
        src = value  # a Python int: exact, of any size
        kind = "i"
    elif isinstance(value, float):
        src, kind = value, "f"
    else:
        if value is None or isinstance(value, (str, bytes)):
            raise not_a_number
        try:
            arr = np.asarray(value)
        except Exception:
            raise not_a_number from None
        if arr.dtype.kind not in "iufc":  # bools, strings, objects
            raise not_a_number
        if arr.size == 0:
            raise ValueError(f"{func}(): `fillvalue` cannot be an empty array. {received}")
        if arr.size != 1:
            raise ValueError(
                f"{func}(): `fillvalue` must be scalar or an array with one element. {received}"
            )
        kind = arr.dtype.kind
        src = arr.reshape(())[()]
        if kind in "iu":
            src = int(src)

    def cannot(why: str) -> ValueError:
        return ValueError(
            f"{func}(): could not cast `fillvalue` directly to the output dtype {dtype} "
            f"({why}). {received}"
        )

    if dtype.kind == "c":
        try:
            return dtype.type(complex(src) if kind in "iu" else src)
        except OverflowError:
            raise cannot("out of the range of a float") from None
    if kind == "c":
        raise cannot("a complex value for real inputs, as SciPy refuses it")
    if dtype.kind == "f":
        if kind in "iu":
            try:
                src = float(src)
            except OverflowError:  # an int beyond float's range
                raise ValueError(
                    f"{func}(): fillvalue is out of the range of a float. {received}"
                ) from None
        if dtype == np.float64 and isinstance(src, float):
            return src  # the common case, without errstate's cost
        with np.errstate(over="ignore"):  # float32 overflow gives inf, as in SciPy
            return dtype.type(src)
    # an integer result
    if kind == "f":
        if not math.isfinite(float(src)):
            raise cannot("not finite")
        src = math.trunc(float(src))  # as SciPy (a C cast)
    info = np.iinfo(dtype)
    if not info.min <= src <= info.max:
        raise cannot(f"outside its range [{info.min}, {info.max}]")
    return dtype.type(src)


# ------------------------------------------------------------------------------------------
# The computation per result dtype
# ------------------------------------------------------------------------------------------


def _exact_integer(
    a: np.ndarray,
    kernel: np.ndarray,
    pads: tuple[tuple[int, int], tuple[int, int]],
    boundary: str,
    fill: Any,
    dtype: np.dtype,
) -> np.ndarray:
    """The exact integer result, wrapped to ``dtype`` (modulo 2**bits) as SciPy's C loops
    wrap it: through float64 when every partial sum is provably exact, else in NumPy's
    64-bit integer arithmetic (which wraps modulo 2**64, then cast to ``dtype``)."""
    a = a.astype(dtype, copy=False)
    kernel = kernel.astype(dtype, copy=False)
    # Python ints: no overflow in the bound itself
    amax = max(-int(a.min()), int(a.max()))
    if boundary == "fill" and pads != _NO_PADS:
        amax = max(amax, abs(int(fill)))
    kmax = max(-int(kernel.min()), int(kernel.max()))
    if amax * kmax * kernel.size < _EXACT_FLOAT64:
        # |x * w| <= amax * kmax and every partial sum (in any order, any blocking, with or
        # without FMA) is at most amax * kmax * taps < 2**53 in magnitude: all are integers
        # that float64 holds exactly, so no rounding happens anywhere.  conv2d's automatic
        # choice never runs Winograd (inexact transforms) on one channel; "auto" also
        # overrides a conv_algorithm("winograd") block around the call.
        from .ops.conv_dispatch import conv_algorithm

        padded = np.ascontiguousarray(_pad(a, pads, boundary, fill), dtype=np.float64)
        with conv_algorithm("auto"):
            out = _valid_correlate(padded, np.ascontiguousarray(kernel, np.float64), "direct")
        return out.astype(np.int64).astype(dtype, copy=False)
    acc = np.dtype(np.uint64 if dtype.kind == "u" else np.int64)
    padded = _pad(a.astype(acc), pads, boundary, acc.type(fill))
    return _numpy_correlate(padded, kernel.astype(acc)).astype(dtype, copy=False)


def _correlate_or_convolve(
    func: str, flip: bool, in1: Any, in2: Any, mode: Any, boundary: Any, fillvalue: Any, method: Any
) -> np.ndarray:
    a = _as_input(in1, "in1", func)
    k = _as_input(in2, "in2", func)
    dtype = _result_dtype(func, a, k)
    mode = check_choice(mode, "mode", func, _MODES)
    boundary = _BOUNDARY_NAMES[check_choice(boundary, "boundary", func, tuple(_BOUNDARY_NAMES))]
    method = check_choice(method, "method", func, _METHODS)
    fill = _fill_value(fillvalue, dtype, func)
    # the working dtype (float64 for integers) of the copies: an input past memory (a
    # zero-stride view, say) is refused before anything is copied
    work_itemsize = 8 if dtype.kind in "iu" else dtype.itemsize
    check_numel(a.shape, "in1", func, work_itemsize)
    check_numel(k.shape, "in2", func, work_itemsize)
    if dtype.kind in "iu" and method == "fft":
        raise ValueError(
            f"{func}(): method='fft' cannot give the exact integer result of inputs that "
            f"promote to {dtype}; use method='direct' or 'auto' (exact), or pass float "
            f"arrays. Received: method='fft'"
        )
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
        pads = _NO_PADS
    out_shape = (max(out_shape[0], 0), max(out_shape[1], 0))
    check_numel(out_shape, "output", func, dtype.itemsize)
    if a.size == 0 or k.size == 0 or 0 in out_shape:
        return np.zeros(out_shape, dtype=dtype)  # an empty sum
    padded_shape = (m1 + pads[0][0] + pads[0][1], n1 + pads[1][0] + pads[1][1])
    check_numel(padded_shape, "padded in1", func, work_itemsize)
    kernel = k[::-1, ::-1] if flip else k
    if not flip and kernel.dtype.kind == "c":
        kernel = np.conj(kernel)  # SciPy's correlate2d conjugates in2 (after the swap)
    if dtype.kind in "iu":
        out = _exact_integer(a, kernel, pads, boundary, fill, dtype)
    elif dtype in FLOAT_DTYPES or dtype.kind == "c" and dtype.itemsize <= 16:
        real = _REAL_PART[dtype]  # float32 / float64
        products = 1
        if dtype.kind == "c":
            # keep a real operand real (half the products): the image, unless a complex
            # fill value reaches it
            image_real = a.dtype.kind != "c" and (
                boundary != "fill" or pads == _NO_PADS or fill.imag == 0
            )
            if image_real:
                fill = fill.real
            a = a.astype(real if image_real else dtype, copy=False)
            kernel = kernel.astype(real if kernel.dtype.kind != "c" else dtype, copy=False)
            products = 2 if image_real or kernel.dtype.kind != "c" else 4
        else:
            a = a.astype(dtype, copy=False)
            kernel = kernel.astype(dtype, copy=False)
        padded = _pad(a, pads, boundary, fill)
        if method == "auto":
            method = _choose_method(out_shape, kernel.shape, padded.shape, real, products)
        out = _valid_correlate(np.ascontiguousarray(padded), np.ascontiguousarray(kernel), method)
    else:  # long double, complex long double: NumPy's arithmetic (or scipy.fft)
        a = a.astype(dtype, copy=False)
        kernel = kernel.astype(dtype, copy=False)
        padded = _pad(a, pads, boundary, fill)
        if method == "fft":
            out = _valid_correlate(padded, kernel, "fft")
        else:
            out = _numpy_correlate(padded, kernel)
    if swapped and not flip:
        out = out[::-1, ::-1]
    return np.ascontiguousarray(out)


def correlate2d(
    in1: ArrayLike,
    in2: ArrayLike,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: complex = 0,
    method: str = "auto",
) -> np.ndarray:
    """Cross-correlate two 2-D arrays: ``out[i, j] = sum_{a, b} in1[i + a, j + b] * in2[a, b]``
    (indices shifted per ``mode``).

    Same results, result dtypes and errors as :func:`scipy.signal.correlate2d`, including
    for integer, bool-mixed and complex inputs (see the module notes).

    Parameters
    ----------
    in1 : array_like of shape (M1, N1)
        The image: bool, integer, float or complex numbers.
    in2 : array_like of shape (M2, N2)
        The template / kernel; complex values are conjugated, as in SciPy.
    mode : {'full', 'valid', 'same'}, default 'full'
        'full': every overlap, shape ``(M1 + M2 - 1, N1 + N2 - 1)``. 'valid': only positions
        where ``in2`` lies inside ``in1``, shape ``(M1 - M2 + 1, N1 - N2 + 1)``; one input
        must be at least as large as the other in both dimensions, and if ``in2`` is the larger
        one the inputs are swapped and the result is rotated by 180 degrees, as in SciPy.
        'same': shape of ``in1``, centred on the full output at offset ``(M2 // 2, N2 // 2)``.
    boundary : {'fill', 'wrap', 'symm'}, default 'fill'
        How ``in1`` is extended beyond its edges: the constant ``fillvalue``, periodically,
        or by mirror reflection including the edge sample (``d c b a | a b c d | d c b a``).
        SciPy's aliases 'pad', 'circular' and 'symmetric' are accepted too.
    fillvalue : number or one-element array, default 0
        The value outside ``in1`` for ``boundary='fill'``, converted to the result dtype as
        SciPy converts it: a float is truncated towards zero for an integer result; a complex
        value for real inputs, a non-finite value or one outside the range of an integer
        result raise ValueError. Checked for every boundary (SciPy ignores it unless 'fill').
    method : {'auto', 'direct', 'fft'}, default 'auto'
        'direct': the sums in the spatial domain, by :func:`cnncore.conv2d` (with whichever
        of its kernel algorithms it picks for the shape) on ``in1`` padded per ``boundary``.
        'fft': the same padded image, correlated through ``scipy.fft`` (rounding differs
        from 'direct', as with :func:`scipy.signal.fftconvolve`); not for integer results,
        which are exact. 'auto': whichever a cost model predicts to be faster (direct for
        small kernels); always the exact path for integers.

    Returns
    -------
    out : ndarray
        SciPy's result dtype, ``numpy.result_type(in1, in2)``: float32 for float32 inputs,
        float64 for mixed float widths, the promoted integer dtype for integer inputs
        (computed exactly, wrapped modulo ``2**bits`` on overflow as SciPy wraps), complex
        for a complex input.

    Raises
    ------
    ValueError
        Where SciPy raises one: an input that is not a 2-D array of numbers, inputs that
        promote to bool (both bool) or float16, a bad ``fillvalue`` (empty, several values,
        complex for real inputs, out of range), for mode 'valid' when neither input is at
        least as large as the other; also ``method='fft'`` for an integer result.
    TypeError
        ``fillvalue`` that is not a number (a string, None or a bool, which SciPy parses or
        turns into NaN).

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
    in1: ArrayLike,
    in2: ArrayLike,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: complex = 0,
    method: str = "auto",
) -> np.ndarray:
    """Convolve two 2-D arrays: ``out[i, j] = sum_{a, b} in1[i - a, j - b] * in2[a, b]``, i.e.
    correlation with ``in2`` rotated by 180 degrees.

    Same results, result dtypes and errors as :func:`scipy.signal.convolve2d` (integers
    exact, complex through the real kernels); ``method='fft'`` matches
    :func:`scipy.signal.fftconvolve` for ``boundary='fill'`` with ``fillvalue=0``.

    Parameters
    ----------
    in1 : array_like of shape (M1, N1)
    in2 : array_like of shape (M2, N2)
        Bool, integer, float or complex numbers, as for :func:`correlate2d` (nothing is
        conjugated).
    mode : {'full', 'valid', 'same'}, default 'full'
        As in :func:`correlate2d`, except that 'same' is centred at offset
        ``((M2 - 1) // 2, (N2 - 1) // 2)`` of the full convolution, and the 'valid'-mode swap
        needs no rotation (convolution is commutative) -- both as in SciPy.
    boundary : {'fill', 'wrap', 'symm'}, default 'fill'
    fillvalue : number or one-element array, default 0
    method : {'auto', 'direct', 'fft'}, default 'auto'

    Returns
    -------
    out : ndarray
        ``numpy.result_type(in1, in2)``, as SciPy; see :func:`correlate2d`.

    Raises
    ------
    ValueError, TypeError
        As :func:`correlate2d`.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> cnncore.convolve2d(np.array([[1, 2], [3, 4]], np.uint8), [[1, -1]])  # int64, exact
    array([[ 1,  1, -2],
           [ 3,  1, -4]])

    See Also
    --------
    correlate2d
    cnncore.filters
    """
    return _correlate_or_convolve("convolve2d", True, in1, in2, mode, boundary, fillvalue, method)
