"""2-D correlation / convolution with scipy.signal semantics, and the classic kernels."""

import itertools

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


def ref_correlate2d(a, k, mode="full", boundary="fill", fillvalue=0.0, convolve=False):
    a = np.asarray(a, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    swapped = False
    if mode == "valid" and not (a.shape[0] >= k.shape[0] and a.shape[1] >= k.shape[1]):
        a, k = k, a
        swapped = True
    if convolve:
        k = k[::-1, ::-1]
    (m1, n1), (m2, n2) = a.shape, k.shape
    if mode == "full":
        shape, top, left = (m1 + m2 - 1, n1 + n2 - 1), m2 - 1, n2 - 1
    elif mode == "same":
        shape = (m1, n1)
        top, left = (m2 // 2, n2 // 2) if convolve else ((m2 - 1) // 2, (n2 - 1) // 2)
    else:
        shape, top, left = (m1 - m2 + 1, n1 - n2 + 1), 0, 0
    out = np.zeros(shape)
    for i, j in np.ndindex(*shape):
        s = 0.0
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
# Bad inputs
# ------------------------------------------------------------------------------------------

_A = np.zeros((5, 5))
_K = np.ones((3, 3))

BAD = [
    (lambda: correlate2d(_A, _K, mode="wide"), ValueError, "mode"),
    (lambda: convolve2d(_A, _K, boundary="reflect"), ValueError, "boundary"),
    (lambda: correlate2d(_A, _K, method="fftw"), ValueError, "method"),
    (lambda: correlate2d(_A, _K, fillvalue="0"), TypeError, "fillvalue"),
    (lambda: correlate2d(_A, _K, fillvalue=1j), TypeError, "fillvalue"),
    (lambda: correlate2d(np.zeros(5), _K), ValueError, "in1"),
    (lambda: convolve2d(_A, np.ones((1, 3, 3))), ValueError, "in2"),
    (lambda: correlate2d(_A.astype(np.int64), _K), TypeError, "in1"),
    (lambda: correlate2d(_A, _K.astype(np.complex128)), TypeError, "in2"),
    (lambda: convolve2d(_A, _K.astype(np.float32)), TypeError, "in2"),
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
    with pytest.raises(exc, match=name):
        call()


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
