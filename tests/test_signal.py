"""2-D correlation / convolution with scipy.signal semantics, and the classic kernels."""

import itertools
import warnings

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnncore
from cnncore import filters, kernels
from cnncore.signal import convolve2d, correlate2d

DTYPES = [np.float32, np.float64]
MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "wrap", "symm"]
METHODS = ["direct", "fft"]


def _tol(dtype, method):
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=1e-4)
    return dict(rtol=1e-10, atol=1e-10) if method == "fft" else dict(rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Naive reference: explicit index arithmetic, one output element at a time
# ------------------------------------------------------------------------------------------


def _extend(i, n, boundary):
    """Index into [0, n) for an out-of-range index, or None for 'fill'."""
    if 0 <= i < n:
        return i
    if boundary == "fill":
        return None
    if boundary == "wrap":
        return i % n
    period = 2 * n  # symmetric: ... c b a | a b c | c b a ...
    r = i % period
    return r if r < n else period - 1 - r


def ref_correlate2d(
    a, k, mode="full", boundary="fill", fillvalue=0.0, convolve=False, dtype=np.float64
):
    """SciPy's definitions, one output element at a time, in ``dtype`` arithmetic (``object``:
    exact Python ints; complex: correlation conjugates ``k``, as scipy.signal.correlate2d)."""
    a = np.asarray(a).astype(dtype)
    k = np.asarray(k).astype(dtype)
    swapped = False
    if mode == "valid" and not (a.shape[0] >= k.shape[0] and a.shape[1] >= k.shape[1]):
        a, k = k, a
        swapped = True
    if convolve:
        k = k[::-1, ::-1]
    elif np.dtype(dtype).kind == "c":
        k = np.conj(k)
    (m1, n1), (m2, n2) = a.shape, k.shape
    if mode == "full":
        shape, top, left = (m1 + m2 - 1, n1 + n2 - 1), m2 - 1, n2 - 1
    elif mode == "same":
        shape = (m1, n1)
        top, left = (m2 // 2, n2 // 2) if convolve else ((m2 - 1) // 2, (n2 - 1) // 2)
    else:
        shape, top, left = (m1 - m2 + 1, n1 - n2 + 1), 0, 0
    out = np.zeros(shape, dtype)
    for i, j in np.ndindex(*shape):
        s = 0
        for p, q in np.ndindex(m2, n2):
            r = _extend(i + p - top, m1, boundary)
            c = _extend(j + q - left, n1, boundary)
            v = fillvalue if r is None or c is None else a[r, c]
            s += v * k[p, q]
        out[i, j] = s
    if swapped and not convolve:
        out = out[::-1, ::-1]
    return out


SHAPE_PAIRS = [
    ((7, 8), (3, 3)),
    ((7, 8), (2, 4)),
    ((6, 5), (4, 4)),
    ((5, 5), (1, 1)),
    ((4, 6), (5, 7)),
    ((3, 2), (7, 6)),
    ((9, 4), (2, 3)),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_naive_reference(mode, boundary, method, rng):
    for s1, s2 in SHAPE_PAIRS:
        a, k = rng.standard_normal(s1), rng.standard_normal(s2)
        for fn, conv in ((correlate2d, False), (convolve2d, True)):
            ok = (s1[0] >= s2[0] and s1[1] >= s2[1]) or (s2[0] >= s1[0] and s2[1] >= s1[1])
            if mode == "valid" and not ok:
                continue
            out = fn(a, k, mode, boundary, 0.75, method)
            exp = ref_correlate2d(a, k, mode, boundary, 0.75, convolve=conv)
            np.testing.assert_allclose(
                out, exp, **_tol(np.float64, method), err_msg=f"{fn.__name__} {s1} {s2}"
            )


# ------------------------------------------------------------------------------------------
# scipy.signal cross-checks: every mode / boundary / method, odd and even kernels
# ------------------------------------------------------------------------------------------

SCIPY_PAIRS = [
    ((16, 13), (3, 3)),
    ((16, 13), (4, 2)),
    ((16, 13), (5, 6)),
    ((10, 10), (2, 2)),
    ((8, 9), (8, 9)),
    ((5, 4), (9, 11)),
    ((3, 12), (2, 12)),
    ((1, 1), (1, 1)),
    ((12, 3), (13, 7)),
    ((20, 20), (15, 15)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS + ["auto"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_scipy(mode, boundary, method, dtype, rng):
    ss = pytest.importorskip("scipy.signal")
    for (s1, s2), (fn, ref) in itertools.product(
        SCIPY_PAIRS, [(correlate2d, ss.correlate2d), (convolve2d, ss.convolve2d)]
    ):
        a = rng.standard_normal(s1).astype(dtype)
        k = rng.standard_normal(s2).astype(dtype)
        try:
            expected = ref(a.astype(np.float64), k.astype(np.float64), mode, boundary, -1.25)
        except ValueError:
            with pytest.raises(ValueError, match="in1"):
                fn(a, k, mode, boundary, -1.25, method)
            continue
        out = fn(a, k, mode=mode, boundary=boundary, fillvalue=-1.25, method=method)
        assert out.dtype == dtype and out.shape == expected.shape
        np.testing.assert_allclose(
            out, expected, **_tol(dtype, method), err_msg=f"{fn.__name__} {s1} {s2}"
        )


@pytest.mark.parametrize("mode", MODES)
def test_fft_matches_fftconvolve(mode, rng):
    ss = pytest.importorskip("scipy.signal")
    for s1, s2 in [
        ((40, 33), (7, 7)),
        ((40, 33), (8, 6)),
        ((64, 64), (31, 30)),
        ((9, 12), (9, 12)),
    ]:
        a, k = rng.standard_normal(s1), rng.standard_normal(s2)
        np.testing.assert_allclose(
            convolve2d(a, k, mode, method="fft"), ss.fftconvolve(a, k, mode), rtol=1e-10, atol=1e-10
        )
        if mode != "same":  # scipy.signal.correlate centres 'same' unlike correlate2d
            np.testing.assert_allclose(
                correlate2d(a, k, mode, method="fft"),
                ss.correlate(a, k, mode, method="fft"),
                rtol=1e-10,
                atol=1e-10,
            )


def test_direct_is_cnncore_conv2d(rng):
    """'direct' is conv2d on the padded image: identical bits."""
    a, k = rng.standard_normal((12, 10)), rng.standard_normal((3, 4))
    padded = np.pad(a, ((2, 2), (3, 3)), mode="wrap")
    expected = cnncore.conv2d(padded[None, None], k[None, None])[0, 0]
    np.testing.assert_array_equal(correlate2d(a, k, boundary="wrap", method="direct"), expected)


def test_auto_picks_fft_for_large_kernels(rng, monkeypatch):
    from cnncore import signal

    calls = []
    real = signal._valid_correlate
    monkeypatch.setattr(
        signal, "_valid_correlate", lambda p, k, m: calls.append(m) or real(p, k, m)
    )
    a = rng.standard_normal((128, 128))
    correlate2d(a, kernels.SOBEL_X, "same")
    correlate2d(a, rng.standard_normal((31, 31)), "same")
    assert calls == ["direct", "fft"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inputs(dtype):
    ss = pytest.importorskip("scipy.signal")
    for a, k, mode in [
        ((0, 3), (2, 2), "full"),
        ((0, 3), (2, 2), "same"),
        ((3, 3), (0, 2), "full"),
        ((3, 3), (0, 2), "same"),
        ((3, 3), (0, 2), "valid"),
    ]:
        x, w = np.ones(a, dtype), np.ones(k, dtype)
        out = correlate2d(x, w, mode)
        expected = ss.correlate2d(x, w, mode)
        assert out.shape == expected.shape and out.dtype == dtype
        np.testing.assert_array_equal(out, expected)


def test_accepts_lists_noncontiguous_readonly(rng):
    a = rng.standard_normal((10, 12))
    k = rng.standard_normal((3, 3))
    ro = a.copy()
    ro.flags.writeable = False
    expected = correlate2d(a, k)
    np.testing.assert_array_equal(correlate2d(ro, kernels.SHARPEN * 0 + k), expected)
    np.testing.assert_array_equal(correlate2d(a.T.copy().T, k.tolist()), expected)
    np.testing.assert_array_equal(correlate2d(a[:, ::-1], k), correlate2d(a[:, ::-1].copy(), k))
    assert cnncore.correlate2d is correlate2d and cnncore.convolve2d is convolve2d


# ------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------


def test_kernel_constants():
    for name in kernels.__all__:
        kern = getattr(kernels, name)
        if callable(kern):
            continue
        assert kern.dtype == np.float64 and kern.shape == (3, 3), name
        assert not kern.flags.writeable, name
        with pytest.raises(ValueError):
            kern[0, 0] = 1.0
    for name in ("BOX_BLUR", "GAUSSIAN_3X3", "SHARPEN", "IDENTITY", "EMBOSS"):
        assert getattr(kernels, name).sum() == pytest.approx(1.0), name
    for name in ("SOBEL_X", "SOBEL_Y", "LAPLACIAN", "LAPLACIAN_8", "SCHARR_X", "SCHARR_Y"):
        assert getattr(kernels, name).sum() == 0, name
    np.testing.assert_array_equal(kernels.GAUSSIAN_3X3 * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(kernels.SOBEL_Y, kernels.SOBEL_X.T)


def test_kernel_semantics():
    ramp = np.tile(np.arange(8.0), (6, 1))  # increases to the right
    gx = correlate2d(ramp, kernels.SOBEL_X, "valid")
    np.testing.assert_allclose(gx, 8.0)  # positive for intensity increasing to the right
    assert (correlate2d(ramp.T, kernels.SOBEL_Y, "valid") == 8.0).all()
    assert np.allclose(correlate2d(ramp, kernels.LAPLACIAN, "valid"), 0)
    img = np.random.default_rng(0).standard_normal((9, 9))
    np.testing.assert_array_equal(correlate2d(img, kernels.IDENTITY, "same"), img)


def test_gaussian_and_box():
    g = kernels.gaussian(5, 1.0)
    assert g.shape == (5, 5) and g.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(g, g.T)
    np.testing.assert_allclose(g, g[::-1, ::-1])
    assert g.argmax() == 12
    r = np.arange(5) - 2.0
    expected = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)
    np.testing.assert_allclose(g, expected / expected.sum())
    even = kernels.gaussian(4, 0.8)
    np.testing.assert_allclose(even, even[::-1, ::-1])
    np.testing.assert_allclose(kernels.box(4), np.full((4, 4), 1 / 16))
    assert kernels.box(1).tolist() == [[1.0]]
    assert kernels.gaussian(3, 1.0).flags.writeable


# ------------------------------------------------------------------------------------------
# SciPy's dtypes: integers (exact, wrapped as SciPy wraps), bool mixes, complex, long double
# ------------------------------------------------------------------------------------------

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
ALL_DTYPES = [np.bool_, *INT_DTYPES, np.float16, np.float32, np.float64, np.longdouble]
ALL_DTYPES += [np.complex64, np.complex128, np.clongdouble]


def _wrap(exact, dtype):
    """Python ints reduced modulo 2**bits into ``dtype`` (what C integer arithmetic gives)."""
    bits = np.iinfo(dtype).bits
    flat = [int(v) % 2**bits for v in np.asarray(exact).ravel()]
    if np.iinfo(dtype).min < 0:
        flat = [v - 2**bits if v >= 2 ** (bits - 1) else v for v in flat]
    return np.array(flat, dtype=dtype).reshape(np.shape(exact))


def _random(rng, dtype, shape, extreme=False):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if extreme else (max(info.min, -9), 9)
        return rng.integers(lo, hi, shape, dtype=dtype, endpoint=True)
    data = rng.standard_normal(shape)
    if dtype.kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    return data.astype(dtype)


def _assert_matches_scipy(out, expected):
    assert out.dtype == expected.dtype and out.shape == expected.shape
    if out.dtype.kind in "iu":
        np.testing.assert_array_equal(out, expected)  # exact
    else:
        single = out.dtype in (np.float32, np.complex64)
        tol = 2e-5 if single else 1e-12
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * (np.abs(expected).max() + 1))


@pytest.mark.parametrize("extreme", [False, True])
def test_every_dtype_pair_as_scipy(extreme, rng):
    """Result dtype, values and errors for every pair of SciPy's dtypes (and float16): the
    dtype SciPy returns (numpy.result_type), integers bit-equal even where they overflow,
    ValueError exactly where SciPy raises one."""
    ss = pytest.importorskip("scipy.signal")
    for t1, t2 in itertools.product(ALL_DTYPES, ALL_DTYPES):
        a, k = _random(rng, t1, (7, 6), extreme), _random(rng, t2, (3, 4), extreme)
        for ours, theirs in ((correlate2d, ss.correlate2d), (convolve2d, ss.convolve2d)):
            for mode, boundary in (("full", "fill"), ("same", "symm"), ("valid", "wrap")):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        expected = theirs(a, k, mode, boundary, 3)
                except ValueError:
                    with pytest.raises(ValueError, match="in1.*in2|Received"):
                        ours(a, k, mode, boundary, 3)
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # no overflow / cast warnings of ours
                    out = ours(a, k, mode, boundary, 3)
                assert out.dtype == np.result_type(a, k)
                _assert_matches_scipy(out, expected)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_integer_overflow_wraps_as_scipy(dtype, mode, rng):
    """Full-range values: the exact sums reduced modulo 2**bits, as SciPy's C loops give."""
    ss = pytest.importorskip("scipy.signal")
    for boundary in BOUNDARIES:
        a, k = _random(rng, dtype, (9, 7), True), _random(rng, dtype, (4, 3), True)
        fill = int(np.iinfo(dtype).max)
        for ours, theirs, conv in (
            (correlate2d, ss.correlate2d, False),
            (convolve2d, ss.convolve2d, True),
        ):
            out = ours(a, k, mode, boundary, fill)
            exact = ref_correlate2d(a, k, mode, boundary, fill, conv, dtype=object)
            np.testing.assert_array_equal(out, _wrap(exact, dtype))
            np.testing.assert_array_equal(out, theirs(a, k, mode, boundary, fill))
            assert out.dtype == dtype


def _spy_numpy_path(monkeypatch):
    from cnncore import signal as S

    calls = []
    real = S._numpy_correlate
    monkeypatch.setattr(S, "_numpy_correlate", lambda p, k: calls.append(p.dtype) or real(p, k))
    return calls


# kmax * taps = 2**23 * 9: the float64 kernels are exact while amax < 2**53 / (9 * 2**23)
_KMAX, _AMAX = 2**23, (2**53 - 1) // (9 * 2**23)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_integers_below_the_bound_are_exact_through_float64(boundary, rng, monkeypatch):
    """max|x| * max|w| * taps just below 2**53: the float64 kernels run, and are exact --
    all-extreme values (sums reaching the bound) and random ones (odd sums beyond 2**24,
    which float32 or a rounding step would get wrong)."""
    calls = _spy_numpy_path(monkeypatch)
    assert _AMAX * _KMAX * 9 < 2**53 <= (_AMAX + 1) * _KMAX * 9
    for a, k in [
        (np.full((8, 9), _AMAX, np.int64), np.full((3, 3), _KMAX, np.int64)),
        (np.full((8, 9), -_AMAX, np.int64), np.full((3, 3), _KMAX, np.int64)),
        (rng.integers(-_AMAX, _AMAX, (12, 11), endpoint=True), rng.integers(-_KMAX, _KMAX, (3, 3))),
    ]:
        for fn, conv in ((correlate2d, False), (convolve2d, True)):
            for mode in MODES:
                out = fn(a, k, mode, boundary, -_AMAX)
                exact = ref_correlate2d(a, k, mode, boundary, -_AMAX, conv, dtype=object)
                assert out.dtype == np.int64
                np.testing.assert_array_equal(out, exact.astype(np.int64))
    assert calls == []  # all through the float64 kernels
    full = correlate2d(np.full((8, 9), _AMAX), np.full((3, 3), _KMAX), "valid")
    assert int(full[0, 0]) == 9 * _AMAX * _KMAX > 2**52


def test_integers_above_the_bound_take_numpy_and_stay_exact(rng, monkeypatch):
    """One past the bound (or a fill value past it): NumPy's exact integer arithmetic, with
    results far beyond 2**53 that float64 cannot hold."""
    ss = pytest.importorskip("scipy.signal")
    calls = _spy_numpy_path(monkeypatch)
    a = rng.integers(-_AMAX - 1, _AMAX + 1, (12, 11), endpoint=True)
    a[0, 0] = _AMAX + 1
    k = rng.integers(-_KMAX, _KMAX, (3, 3), endpoint=True)
    k[1, 1] = _KMAX
    big = rng.integers(-(2**40), 2**40, (10, 10)) | 1  # odd: sums past 2**53 need every bit
    for x, w, fill in [
        (a, k, 0),
        (a % _AMAX, k, _AMAX + 1),  # only the fill value passes the bound
        (big, rng.integers(-(2**20), 2**20, (4, 5)), 2**40 + 1),
    ]:
        for fn, ref, conv in (
            (correlate2d, ss.correlate2d, False),
            (convolve2d, ss.convolve2d, True),
        ):
            for mode, boundary in itertools.product(MODES, BOUNDARIES):
                out = fn(x, w, mode, boundary, fill)
                exact = ref_correlate2d(x, w, mode, boundary, fill, conv, dtype=object)
                np.testing.assert_array_equal(out, exact.astype(np.int64))
                np.testing.assert_array_equal(out, ref(x, w, mode, boundary, fill))
    assert len(calls) >= 2 * 9 * 2 and set(calls) == {np.dtype(np.int64)}
    with_fill = correlate2d(big, np.ones((3, 3), np.int64))
    assert (
        np.abs(with_fill).max() > 2**40
        and (with_fill == ss.correlate2d(big, np.ones((3, 3), np.int64))).all()
    )


def test_integer_path_exact_inside_a_winograd_block():
    """A conv_algorithm('winograd') block around the call does not reach the integer path
    (Winograd's transforms round); floats keep following the block."""
    a = np.full((40, 40), _AMAX, np.int64)
    a[::3, ::2] = -_AMAX + 7
    k = np.full((3, 3), _KMAX, np.int64)
    k[0, 1] = -_KMAX + 1
    expected = ref_correlate2d(a, k, "valid", dtype=object).astype(np.int64)
    with cnncore.conv_algorithm("winograd"):
        np.testing.assert_array_equal(correlate2d(a, k, "valid"), expected)


def test_unsigned_and_bool_mixes():
    ss = pytest.importorskip("scipy.signal")
    img = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8  # up to 232
    mask = np.array([[True, False], [True, True]])
    for k, dtype in [
        (mask, np.uint8),  # bool promotes to the other input's dtype
        (mask.astype(np.int8), np.int16),
        (np.array([[1.5, -2.0]], np.float32), np.float32),
        ([[1, -2]], np.int64),  # a Python list of ints is int64, as in NumPy
    ]:
        for ours, theirs in ((correlate2d, ss.correlate2d), (convolve2d, ss.convolve2d)):
            out, expected = ours(img, k, "same", "symm"), theirs(img, k, "same", "symm")
            assert out.dtype == dtype == expected.dtype
            np.testing.assert_array_equal(out, expected)


def test_float_fill_truncates_for_integer_results():
    """As SciPy (a C cast): 2.7 -> 2, -2.7 -> -2 for an integer result."""
    a = np.ones((1, 1), np.int64)
    for fill, value in [(2.7, 2), (-2.7, -2), (np.float32(1.5), 1), ([[4.9]], 4)]:
        out = convolve2d(a, np.ones((2, 2), np.int64), fillvalue=fill)
        np.testing.assert_array_equal(out, 1 + 3 * value)
    out = convolve2d(np.ones((1, 1), np.float32), np.ones((2, 2), np.float32), fillvalue=1e40)
    assert out.dtype == np.float32 and np.isinf(out).all()  # as SciPy


COMPLEX_PAIRS = [  # (in1 kind, in2 kind): both complex, or one of them real
    (np.complex128, np.complex128),
    (np.float64, np.complex128),
    (np.complex128, np.float64),
    (np.complex64, np.complex64),
    (np.float32, np.complex64),
    (np.int16, np.complex64),
]


@pytest.mark.parametrize("method", [*METHODS, "auto"])
@pytest.mark.parametrize("t1, t2", COMPLEX_PAIRS)
def test_complex_matches_scipy(t1, t2, method, rng):
    ss = pytest.importorskip("scipy.signal")
    for (s1, s2), mode, boundary in itertools.product(
        [((9, 8), (3, 4)), ((4, 3), (6, 5)), ((12, 13), (12, 13))], MODES, BOUNDARIES
    ):
        a, k = _random(rng, t1, s1), _random(rng, t2, s2)
        for fill in (0.5, 0.5 - 2j):
            for ours, theirs in ((correlate2d, ss.correlate2d), (convolve2d, ss.convolve2d)):
                expected = theirs(a, k, mode, boundary, fill)
                out = ours(a, k, mode, boundary, fill, method)
                _assert_matches_scipy(out, expected)


def test_complex_conjugation_as_scipy():
    """correlate2d conjugates in2 -- the second argument, also after the 'valid' swap (then
    the original in1) -- and convolve2d conjugates nothing; SciPy's gh-5897 cases."""
    np.testing.assert_array_equal(correlate2d([[1]], [[2j]]), [[-2j]])
    np.testing.assert_array_equal(correlate2d([[2j]], [[3j]]), [[6]])
    np.testing.assert_array_equal(correlate2d([[3j]], [[4]]), [[12j]])
    np.testing.assert_array_equal(convolve2d([[1]], [[2j]]), [[2j]])
    small = np.array([[1 + 1j, 2 - 3j]])
    large = np.array([[2 - 1j, 3 + 2j, 4 + 0j]])
    # swapped: the result is correlate2d(large, small) rotated, conj applies to `small`
    np.testing.assert_array_equal(
        correlate2d(small, large, "valid"), correlate2d(large, small, "valid")[::-1, ::-1]
    )
    expected = ref_correlate2d(small, large, "valid", dtype=np.complex128)
    np.testing.assert_array_equal(correlate2d(small, large, "valid"), expected)


def test_complex_runs_on_real_kernels(rng, monkeypatch):
    """'direct' complex: one conv2d call on the real and imaginary parts (2 channels)."""
    from cnncore import functional

    shapes = []
    real = functional.conv2d
    monkeypatch.setattr(
        functional, "conv2d", lambda x, w: shapes.append((x.shape, w.shape, x.dtype)) or real(x, w)
    )
    a = _random(rng, np.complex64, (6, 7))
    k = _random(rng, np.complex64, (2, 3))
    correlate2d(a, k, method="direct")
    correlate2d(a.real, k, method="direct")
    correlate2d(a, k.real, method="direct")
    f32 = np.dtype(np.float32)
    assert shapes == [
        ((1, 2, 8, 11), (2, 2, 2, 3), f32),
        ((1, 1, 8, 11), (2, 1, 2, 3), f32),
        ((2, 1, 8, 11), (1, 1, 2, 3), f32),
    ]


def test_long_double_matches_scipy(rng):
    ss = pytest.importorskip("scipy.signal")
    for t in (np.longdouble, np.clongdouble):
        a, k = _random(rng, t, (9, 8)), _random(rng, t, (3, 2))
        for method in ("auto", "direct", "fft"):
            out = correlate2d(a, k, "same", "wrap", 0.25, method)
            expected = ss.correlate2d(a, k, "same", "wrap", 0.25)
            assert out.dtype == t
            np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)


def test_mixed_float_widths_give_float64(rng):
    a = rng.standard_normal((12, 10)).astype(np.float32)
    k = rng.standard_normal((3, 3))
    out = correlate2d(a, k, "same")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, correlate2d(a.astype(np.float64), k, "same"))


def test_scipy_boundary_aliases(rng):
    a, k = rng.standard_normal((7, 6)), rng.standard_normal((3, 2))
    for alias, name in (("pad", "fill"), ("circular", "wrap"), ("symmetric", "symm")):
        np.testing.assert_array_equal(
            convolve2d(a, k, boundary=alias, fillvalue=2),
            convolve2d(a, k, boundary=name, fillvalue=2),
        )


@settings(max_examples=60, deadline=None)
@given(
    dtypes=st.tuples(st.sampled_from(INT_DTYPES + [np.bool_]), st.sampled_from(INT_DTYPES)),
    shapes=st.tuples(
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=5),
    ),
    extreme=st.booleans(),
    mode=st.sampled_from(MODES),
    boundary=st.sampled_from(BOUNDARIES),
    convolve=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_integers_as_scipy(dtypes, shapes, extreme, mode, boundary, convolve, seed):
    ss = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(seed)
    a, k = _random(rng, dtypes[0], shapes[0], extreme), _random(rng, dtypes[1], shapes[1], extreme)
    fn, ref = (convolve2d, ss.convolve2d) if convolve else (correlate2d, ss.correlate2d)
    try:
        expected = ref(a, k, mode, boundary, 1)
    except ValueError:
        with pytest.raises(ValueError, match="in1"):
            fn(a, k, mode, boundary, 1)
        return
    _assert_matches_scipy(fn(a, k, mode, boundary, 1), expected)  # uint64 + signed: float64


# ------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------

_A = np.zeros((5, 5))
_K = np.ones((3, 3))
_I = np.ones((4, 4), np.int64)
_U8 = np.ones((4, 4), np.uint8)

BAD = [
    (lambda: correlate2d(_A, _K, mode="wide"), ValueError, "mode"),
    (lambda: convolve2d(_A, _K, boundary="reflect"), ValueError, "boundary"),
    (lambda: correlate2d(_A, _K, method="fftw"), ValueError, "method"),
    (lambda: correlate2d(_A, _K, fillvalue="0"), TypeError, "fillvalue"),
    (lambda: correlate2d(_A, _K, fillvalue=None), TypeError, "fillvalue"),
    (lambda: correlate2d(_A, _K, fillvalue=True), TypeError, "fillvalue"),
    # SciPy's ValueErrors (its messages, as its own tests match them)
    (lambda: correlate2d(_A, _K, fillvalue=1j), ValueError, "could not cast `fillvalue`"),
    (lambda: convolve2d(_A, _K, fillvalue=1 + 0j), ValueError, "fillvalue=\\(1\\+0j\\)"),
    (lambda: convolve2d(_A, _K, fillvalue=[]), ValueError, "fillvalue=\\[\\]"),
    (lambda: convolve2d(_A, _K, fillvalue=[1, 2]), ValueError, "one element"),
    (lambda: convolve2d(_A, _K, fillvalue=np.zeros((2, 2))), ValueError, "fillvalue"),
    (lambda: convolve2d(_I, _I, fillvalue=np.nan), ValueError, "fillvalue=nan"),
    (lambda: convolve2d(_I, _I, fillvalue=2**63), ValueError, "int64.*fillvalue=9223"),
    (lambda: convolve2d(_U8, _U8, fillvalue=256), ValueError, "uint8.*fillvalue=256"),
    (lambda: convolve2d(_U8, _U8, fillvalue=-1), ValueError, "uint8.*fillvalue=-1"),
    (lambda: convolve2d(_U8, _U8, fillvalue=1e300), ValueError, "fillvalue=1e\\+300"),
    (lambda: convolve2d(_I, _I, method="fft"), ValueError, "method='fft'"),
    (lambda: correlate2d(_U8, _K > 0, "same", method="fft"), ValueError, "method"),
    (lambda: correlate2d(np.zeros(5), _K), ValueError, "in1"),
    (lambda: convolve2d(_A, np.ones((1, 3, 3))), ValueError, "in2"),
    (lambda: convolve2d(np.ones((1, 3, 3)), np.ones((1, 3, 3))), ValueError, "in1"),
    (lambda: convolve2d(3, 4), ValueError, "in1=3"),
    (lambda: convolve2d([3], [4]), ValueError, "in1=\\[3\\]"),
    (lambda: correlate2d(_A, None), ValueError, "in2=None"),
    (lambda: correlate2d([[1.0], [1.0, 2.0]], _K), ValueError, "in1"),
    (lambda: correlate2d(_A, _K.astype(object)), ValueError, "in2.dtype=object"),
    (lambda: correlate2d(np.full((3, 3), "a"), _K), ValueError, "in1.dtype=<U1"),
    (lambda: correlate2d(_A, _K.astype("datetime64[s]")), ValueError, "in2"),
    (lambda: correlate2d(_A > 0, _K > 0), ValueError, "in1.dtype=bool, in2.dtype=bool"),
    (lambda: convolve2d(_A.astype(np.float16), _K > 0), ValueError, "float16"),
    (lambda: convolve2d(_A.astype(np.float16), _K.astype(np.int8)), ValueError, "in1|in2"),
    (lambda: correlate2d(np.zeros((3, 5)), np.zeros((4, 2)), "valid"), ValueError, "in1"),
    (lambda: convolve2d(np.zeros((3, 5)), np.zeros((4, 2)), mode="valid"), ValueError, "in2"),
    (lambda: kernels.gaussian(0, 1.0), ValueError, "size"),
    (lambda: kernels.gaussian(3, 0.0), ValueError, "sigma"),
    (lambda: kernels.gaussian(3, "1"), TypeError, "sigma"),
    (lambda: kernels.gaussian(2.5, 1.0), TypeError, "size"),
    (lambda: kernels.box(-1), ValueError, "size"),
]


@pytest.mark.parametrize("call,exc,name", BAD)
def test_bad_inputs(call, exc, name):
    with pytest.raises(exc, match=name) as info:
        call()
    if "kernels." not in str(info.value):
        assert "Received" in str(info.value)


def test_scipy_raises_valueerror_where_cnncore_does():
    """The ValueError rows above that SciPy also rejects -- with ValueError: same type."""
    ss = pytest.importorskip("scipy.signal")
    rows = [
        ((_A, _K), dict(fillvalue=1j)),
        ((_A, _K), dict(fillvalue=1 + 0j)),
        ((_A, _K), dict(fillvalue=[])),
        ((_A, _K), dict(fillvalue=[1, 2])),
        ((_I, _I), dict(fillvalue=np.nan)),
        ((_I, _I), dict(fillvalue=2**63)),
        ((_U8, _U8), dict(fillvalue=256)),
        ((_U8, _U8), dict(fillvalue=-1)),
        ((np.zeros(5), _K), {}),
        ((_A, np.ones((1, 3, 3))), {}),
        ((3, 4), {}),
        ((_A, None), {}),
        ((_A, _K.astype(object)), {}),
        ((np.full((3, 3), "a"), _K), {}),
        ((_A > 0, _K > 0), {}),
        ((_A.astype(np.float16), _K > 0), {}),
        ((np.zeros((3, 5)), np.zeros((4, 2)), "valid"), {}),
        ((np.zeros((4, 2)), np.zeros((3, 5)), "valid"), {}),
    ]
    for args, kwargs in rows:
        for ours, theirs in ((correlate2d, ss.correlate2d), (convolve2d, ss.convolve2d)):
            with pytest.raises(ValueError):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # SciPy's ComplexWarning on the way
                    theirs(*args, **kwargs)
            with pytest.raises(ValueError, match="Received"):
                ours(*args, **kwargs)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: correlate2d(_A, _K, fillvalue=10**400), "fillvalue"),
        (lambda: convolve2d(_A, _K, "same", "fill", fillvalue=10**400), "fillvalue"),
        (lambda: filters.gaussian(3, 10**400), "sigma"),
    ],
)
def test_real_argument_beyond_float_range(call, name):
    # regression: signal.py and gaussian() checked real numbers with their own copies of
    # _validation.check_real, without its overflow guard: 10**400 escaped as OverflowError
    with pytest.raises(ValueError, match=f"{name} is out of the range of a float"):
        call()


# ------------------------------------------------------------------------------------------
# Property tests and determinism
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    a=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=9),
        elements=st.floats(-10, 10),
    ),
    k=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
        elements=st.floats(-10, 10),
    ),
    mode=st.sampled_from(MODES),
    boundary=st.sampled_from(BOUNDARIES),
    convolve=st.booleans(),
)
def test_property_against_scipy(a, k, mode, boundary, convolve):
    ss = pytest.importorskip("scipy.signal")
    fn, ref = (convolve2d, ss.convolve2d) if convolve else (correlate2d, ss.correlate2d)
    try:
        expected = ref(a, k, mode, boundary, 0.5)
    except ValueError:
        with pytest.raises(ValueError):
            fn(a, k, mode, boundary, 0.5)
        return
    for method in METHODS:
        np.testing.assert_allclose(
            fn(a, k, mode, boundary, 0.5, method), expected, rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_threads(dtype, rng):
    a = rng.standard_normal((300, 200)).astype(dtype)
    k = rng.standard_normal((5, 4)).astype(dtype)
    assert_bit_identical_across_threads(
        lambda: [
            correlate2d(a, k, "same", "symm", method="direct"),
            convolve2d(a, k, "full", "wrap", method="direct"),
        ]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "size, k, expected",
    [
        (64, 3, "direct"),
        (256, 5, "direct"),
        (1024, 5, "direct"),
        (256, 13, "fft"),
        (1024, 9, "fft"),
        (256, 31, "fft"),
        # regression: 'auto' chose direct here, 2.8x slower than fft (12.7 vs 4.6 ms, float64)
        (512, 11, "fft"),
    ],
)
def test_auto_method_choice(dtype, size, k, expected):
    from cnncore import signal as S

    padded = (size + k - 1, size + k - 1)
    assert S._choose_method((size, size), (k, k), padded, np.dtype(dtype)) == expected
