"""Tests for the pooling ops of cnncore.functional.

Every op is compared against a naive NumPy loop reference written here (always on), against
PyTorch (forward and, through autograd, backward; skipped without torch) and, for the
gradients, against float64 central finite differences.  Max pooling values and indices must
match the reference and PyTorch exactly.
"""

import itertools
import math

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, numerical_grad, tol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncore import functional as F
from cnncore._geometry import pool_output_size

DTYPES = [np.float32, np.float64]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ------------------------------------------------------------------------------------------
# Naive references (loops over output positions and taps; vectorized over N and C only)
# ------------------------------------------------------------------------------------------


def ref_out_size(size, k, s, p, d, ceil):
    """PyTorch's pooling output size, written out independently of cnncore._geometry."""
    span = size + 2 * p - d * (k - 1) - 1
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= size + p:  # the last window must start inside input/left pad
            out -= 1
    else:
        out = span // s + 1
    return out


def ref_max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    ho = ref_out_size(h, kh, sh, ph, dh, ceil_mode)
    wo = ref_out_size(w, kw, sw, pw, dw, ceil_mode)
    y = np.empty((n, c, ho, wo), x.dtype)
    idx = np.empty((n, c, ho, wo), np.int64)
    for oh in range(ho):
        for ow in range(wo):
            m = np.full((n, c), -np.inf, x.dtype)
            best = None
            for i in range(kh):
                for j in range(kw):
                    r, q = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                    if not (0 <= r < h and 0 <= q < w):
                        continue
                    v = x[:, :, r, q]
                    if best is None:
                        best = np.full((n, c), r * w + q, np.int64)
                    take = (v > m) | np.isnan(v)
                    m = np.where(take, v, m)
                    best = np.where(take, r * w + q, best)
            assert best is not None, "window entirely in the padding"
            y[:, :, oh, ow] = m
            idx[:, :, oh, ow] = best
    return y, idx


def ref_scatter_add(g, idx, input_shape):
    n, c, h, w = input_shape
    dx = np.zeros((n, c, h * w), g.dtype)
    gf = g.reshape(n, c, -1)
    jf = idx.reshape(n, c, -1)
    for a in range(n):
        for b in range(c):
            for o in range(gf.shape[2]):
                dx[a, b, jf[a, b, o]] += gf[a, b, o]
    return dx.reshape(input_shape)


def _avg_windows(size, k, s, p, ceil):
    """(start, end, pool) per output along one axis: PyTorch's avg-pool window rule."""
    out = ref_out_size(size, k, s, p, 1, ceil)
    res = []
    for o in range(out):
        start = o * s - p
        end = min(start + k, size + p)
        res.append((max(start, 0), min(end, size), end - start))
    return res


def _avg_cells(hw, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """The output size and ``(oh, ow, h0, h1, w0, w1, divisor)`` of every average-pooling
    window (in-bounds rows ``[h0, h1)`` and columns ``[w0, w1)``), in row-major order."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    ph, pw = _pair(padding)
    h, w = hw
    rows, cols = _avg_windows(h, kh, sh, ph, ceil_mode), _avg_windows(w, kw, sw, pw, ceil_mode)
    cells = []
    for oh, (h0, h1, pool_h) in enumerate(rows):
        for ow, (w0, w1, pool_w) in enumerate(cols):
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = pool_h * pool_w
            else:
                div = (h1 - h0) * (w1 - w0)
            cells.append((oh, ow, h0, h1, w0, w1, div))
    return (len(rows), len(cols)), cells


def ref_avg_pool(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    out_hw, cells = _avg_cells(
        x.shape[2:], kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    y = np.empty((*x.shape[:2], *out_hw), x.dtype)
    for oh, ow, h0, h1, w0, w1, div in cells:
        s = np.zeros(x.shape[:2], x.dtype)
        for i in range(h0, h1):
            for j in range(w0, w1):
                s = s + x[:, :, i, j]
        y[:, :, oh, ow] = s / x.dtype.type(div)
    return y


def ref_avg_pool_backward(
    g,
    input_shape,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    dx = np.zeros(input_shape, g.dtype)
    _, cells = _avg_cells(
        input_shape[2:],
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    for oh, ow, h0, h1, w0, w1, div in cells:
        delta = g[:, :, oh, ow] / g.dtype.type(div)
        for i in range(h0, h1):
            for j in range(w0, w1):
                dx[:, :, i, j] += delta
    return dx


def _adaptive(size, out):
    return [((o * size) // out, -(-((o + 1) * size) // out)) for o in range(out)]


def ref_adaptive_avg(x, out_hw):
    n, c, h, w = x.shape
    ho, wo = out_hw
    y = np.empty((n, c, ho, wo), x.dtype)
    for oh, (h0, h1) in enumerate(_adaptive(h, ho)):
        for ow, (w0, w1) in enumerate(_adaptive(w, wo)):
            s = np.zeros((n, c), x.dtype)
            for i in range(h0, h1):
                for j in range(w0, w1):
                    s = s + x[:, :, i, j]
            y[:, :, oh, ow] = s / x.dtype.type(h1 - h0) / x.dtype.type(w1 - w0)
    return y


def ref_adaptive_avg_backward(g, input_shape):
    n, c, h, w = input_shape
    dx = np.zeros(input_shape, g.dtype)
    ho, wo = g.shape[2:]
    for oh, (h0, h1) in enumerate(_adaptive(h, ho)):
        for ow, (w0, w1) in enumerate(_adaptive(w, wo)):
            delta = g[:, :, oh, ow] / g.dtype.type(h1 - h0) / g.dtype.type(w1 - w0)
            dx[:, :, h0:h1, w0:w1] += delta[:, :, None, None]
    return dx


def ref_adaptive_max(x, out_hw):
    n, c, h, w = x.shape
    ho, wo = out_hw
    y = np.empty((n, c, ho, wo), x.dtype)
    idx = np.empty((n, c, ho, wo), np.int64)
    for oh, (h0, h1) in enumerate(_adaptive(h, ho)):
        for ow, (w0, w1) in enumerate(_adaptive(w, wo)):
            m = np.full((n, c), -np.inf, x.dtype)
            best = np.full((n, c), h0 * w + w0, np.int64)
            for i in range(h0, h1):
                for j in range(w0, w1):
                    v = x[:, :, i, j]
                    take = (v > m) | np.isnan(v)
                    m = np.where(take, v, m)
                    best = np.where(take, i * w + j, best)
            y[:, :, oh, ow] = m
            idx[:, :, oh, ow] = best
    return y, idx


def ref_lp_pool(x, p, kernel_size, stride=None, ceil_mode=False):
    """PyTorch's formula: (K * avg_pool2d(x**p)) ** (1/p), K = kh*kw, no padding."""
    kh, kw = _pair(kernel_size)
    xp = x.astype(np.float64) ** p
    avg = ref_avg_pool(xp, kernel_size, stride, 0, ceil_mode)
    return ((avg * (kh * kw)) ** (1.0 / p)).astype(x.dtype)


def ref_max_unpool(x, idx, out_hw):
    n, c = x.shape[:2]
    y = np.zeros((n, c, out_hw[0] * out_hw[1]), x.dtype)
    xf, jf = x.reshape(n, c, -1), idx.reshape(n, c, -1)
    for a in range(n):
        for b in range(c):
            for o in range(xf.shape[2]):
                y[a, b, jf[a, b, o]] = xf[a, b, o]
    return y.reshape(n, c, *out_hw)


def tie_free(shape, rng, spacing=0.01):
    """Distinct values at least ``spacing`` apart (an eps step never changes an argmax)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * spacing - n * spacing / 2).reshape(shape)


# Geometry cases: (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 11), 2, 2, 1, 1, True),
    ((2, 3, 9, 11), 3, 2, 1, 1, False),
    ((2, 3, 9, 11), 3, 2, 1, 1, True),
    ((1, 2, 10, 7), 3, 1, 1, 1, False),  # overlapping windows, stride 1
    ((1, 2, 10, 9), (2, 3), (1, 2), (1, 1), (2, 1), True),  # non-square everything
    ((2, 2, 11, 12), (3, 2), (2, 3), (1, 0), (1, 2), False),
    ((1, 2, 13, 13), 3, 3, 1, 2, True),
    ((1, 1, 5, 5), 5, 1, 2, 1, False),
    ((1, 3, 6, 17), (1, 4), (1, 3), (0, 2), 1, True),
    ((1, 2, 4, 300), 2, 2, 0, 1, False),  # interior runs longer than one chunk
    ((1, 2, 5, 301), 3, 2, 1, 1, True),
    ((1, 1, 3, 290), (2, 3), 1, 1, 1, False),
]

AVG_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False),
    ((2, 3, 9, 11), 2, 2, 1, True),
    ((2, 3, 9, 11), 3, 2, 1, False),
    ((2, 3, 9, 11), 3, 2, 1, True),
    ((1, 2, 10, 7), 3, 1, 1, False),
    ((1, 2, 10, 9), (2, 3), (1, 2), (1, 1), True),
    ((2, 2, 11, 12), (3, 2), (2, 3), (1, 0), False),
    ((1, 1, 7, 8), 4, 3, 2, True),
    ((1, 2, 5, 300), 3, 1, 1, True),
]


def _case_id(case):
    return "-".join(str(v).replace(" ", "") for v in case)


# ------------------------------------------------------------------------------------------
# Output size
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,k,s,p,d",
    list(itertools.product([1, 2, 5, 6, 7, 10], [1, 2, 3, 4], [1, 2, 3], [0, 1, 2], [1, 2])),
)
@pytest.mark.parametrize("ceil", [False, True])
def test_pool_output_size_matches_reference(size, k, s, p, d, ceil):
    assert pool_output_size(size, k, s, p, d, ceil) == ref_out_size(size, k, s, p, d, ceil)


def test_brief_example_avg_ceil_count_include_pad():
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    expected = [1.5556, 3.3333, 2.0, 6.3333, 11.0, 6.0, 4.5, 7.5, 4.0]
    np.testing.assert_allclose(y.ravel(), expected, atol=5e-5)


# ------------------------------------------------------------------------------------------
# Max pooling
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=_case_id)
def test_max_pool_matches_reference_exactly(case, dtype, rng):
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p, d, ceil)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil), ry)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=_case_id)
def test_max_pool_backward_matches_reference(case, dtype, rng):
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = F.max_pool2d_backward(g, idx, x.shape)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(dx, ref_scatter_add(g, idx, x.shape))


@pytest.mark.parametrize("case", [c for c in MAX_CASES if np.prod(c[0]) <= 600], ids=_case_id)
def test_max_pool_gradient_finite_differences(case):
    shape, k, s, p, d, ceil = case
    rng = np.random.default_rng(7)
    x = tie_free(shape, rng)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    g = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.max_pool2d(t, k, s, p, d, ceil), x, g)
    np.testing.assert_allclose(F.max_pool2d_backward(g, idx, x.shape), num, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_keep_first_maximum(dtype):
    x = np.zeros((1, 2, 6, 6), dtype)
    x[0, 1] = 3.0
    for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 1))]:
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        ry, ridx = ref_max_pool(x, k, s, p)
        np.testing.assert_array_equal(idx, ridx)
        np.testing.assert_array_equal(y, ry)
    # +0 and -0 compare equal: the first one is kept (value and sign)
    x = np.array([[[[-0.0, 0.0], [0.0, 0.0]]]], dtype)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert idx[0, 0, 0, 0] == 0 and np.signbit(y[0, 0, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 1, 2)])
def test_max_pool_nan_and_inf_windows(dtype, geom, rng):
    k, s, p, d = geom
    x = rng.standard_normal((2, 3, 12, 140)).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # border window
    x[0, 0, 5, 7] = np.nan  # interior, several windows
    x[0, 1, 4, 4:8] = np.nan  # several NaNs in one window: the last wins
    x[1, 0, :, :] = -np.inf  # all -inf windows: first tap's index
    x[1, 1, 2:6, 2:9] = -np.inf
    x[1, 1, 3, 4] = np.nan  # NaN among -inf
    x[1, 2, 6, 100] = np.inf
    x[1, 2, 6, 101] = -np.inf
    y, idx = F.max_pool2d(x, k, s, p, d, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p, d)
    np.testing.assert_array_equal(y, ry)  # assert_array_equal treats NaN == NaN
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d), ry)
    assert np.isnan(y[0, 0]).any() and np.all(np.isneginf(y[1, 0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", [(2, 2, 0), (3, 2, 1), ((2, 3), (2, 3), (1, 1))])
def test_max_pool_nan_in_long_rows(dtype, geom, rng):
    """Rows longer than a kernel chunk, NaNs in some rows only (per-row fallback)."""
    k, s, p = geom
    x = rng.standard_normal((1, 2, 7, 700)).astype(dtype)
    x[0, 0, 2, [5, 300, 301, 699]] = np.nan
    x[0, 1, 6, 400] = np.nan
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)


def test_max_pool_nan_wins_last_nan_index():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan]]]])
    y, idx = F.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3
    y, idx = F.adaptive_max_pool2d(x, 1, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3


def test_max_pool_window_entirely_in_padding_is_rejected():
    # taps at -1 and 1 of a height-1 input: PyTorch returns -inf with index 1 * W (outside
    # the plane); cnncore refuses the geometry.
    with pytest.raises(ValueError, match="dilation"):
        F.max_pool2d(np.ones((1, 1, 1, 3)), 2, stride=1, padding=1, dilation=2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_overlapping_backward_accumulates(dtype):
    x = np.zeros((1, 1, 3, 3), dtype)
    x[0, 0, 1, 1] = 5.0  # the maximum of all four 2x2 windows
    y, idx = F.max_pool2d(x, 2, 1, return_indices=True)
    assert np.all(idx == 4)
    dx = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert dx[0, 0, 1, 1] == 4 and dx.sum() == 4


# ------------------------------------------------------------------------------------------
# Average pooling
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=_case_id)
@pytest.mark.parametrize("cip,div", [(True, None), (False, None), (True, 5), (False, -3)])
def test_avg_pool_matches_reference(case, cip, div, dtype, rng):
    shape, k, s, p, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref_avg_pool(x, k, s, p, ceil, cip, div), **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div)
    np.testing.assert_allclose(
        dx, ref_avg_pool_backward(g, x.shape, k, s, p, ceil, cip, div), **tol(dtype)
    )


@pytest.mark.parametrize("case", AVG_CASES, ids=_case_id)
def test_avg_pool_sums_in_row_major_order(case, rng):
    """Documented: window sums in row-major order, divided (not multiplied by a
    reciprocal); gradients accumulated in row-major output order -- bit-exact."""
    shape, k, s, p, ceil = case
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.avg_pool2d(x, k, s, p, ceil, False)
    np.testing.assert_array_equal(y, ref_avg_pool(x, k, s, p, ceil, False))
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(
        F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, False),
        ref_avg_pool_backward(g, x.shape, k, s, p, ceil, False),
    )


@pytest.mark.parametrize("case", [c for c in AVG_CASES if np.prod(c[0]) <= 600], ids=_case_id)
@pytest.mark.parametrize("cip", [True, False])
def test_avg_pool_gradient_finite_differences(case, cip, rng):
    shape, k, s, p, ceil = case
    x = rng.standard_normal(shape)
    y = F.avg_pool2d(x, k, s, p, ceil, cip)
    g = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip), x, g)
    np.testing.assert_allclose(
        F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip), num, atol=1e-5, rtol=1e-3
    )


# ------------------------------------------------------------------------------------------
# Adaptive, global, Lp pooling and unpooling
# ------------------------------------------------------------------------------------------

ADAPTIVE = [
    ((2, 3, 9, 11), (4, 5)),
    ((1, 2, 7, 7), 3),
    ((1, 2, 5, 8), (5, 8)),
    ((1, 1, 6, 13), (1, 1)),
    ((1, 2, 5, 6), (7, 9)),
    ((1, 2, 8, 8), (None, 3)),
]


def _resolve(out, hw):
    out = (out, out) if isinstance(out, int) else out
    return tuple(hw[i] if v is None else v for i, v in enumerate(out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", ADAPTIVE)
def test_adaptive_avg_pool(shape, out, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    ohw = _resolve(out, shape[2:])
    y = F.adaptive_avg_pool2d(x, out)
    np.testing.assert_allclose(y, ref_adaptive_avg(x, ohw), **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(
        F.adaptive_avg_pool2d_backward(g, x.shape),
        ref_adaptive_avg_backward(g, x.shape),
        **tol(dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", ADAPTIVE)
def test_adaptive_max_pool(shape, out, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, 1] = np.nan
    ohw = _resolve(out, shape[2:])
    y, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    ry, ridx = ref_adaptive_max(x, ohw)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(F.adaptive_max_pool2d(x, out), ry)
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(
        F.adaptive_max_pool2d_backward(g, idx, x.shape), ref_scatter_add(g, idx, x.shape)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 1, 1), (1, 2, 33, 35)])
def test_global_avg_pool(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y = F.global_avg_pool2d(x)
    assert y.shape == (*shape[:2], 1, 1) and y.dtype == dtype
    np.testing.assert_allclose(
        y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), **tol(dtype)
    )
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = F.global_avg_pool2d_backward(g, shape)
    np.testing.assert_allclose(dx, np.broadcast_to(g / (shape[2] * shape[3]), shape), **tol(dtype))


LP_CASES = [
    ((2, 2, 8, 9), 2, 2, None, False),
    ((2, 2, 9, 9), 2, 3, 2, True),
    ((1, 2, 7, 10), 1, (2, 3), (1, 2), False),
    ((1, 2, 7, 7), 3, 2, 2, True),
    ((1, 1, 6, 6), 1.5, 3, 1, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LP_CASES, ids=_case_id)
def test_lp_pool(case, dtype, rng):
    shape, p, k, s, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    if p != int(p) or p % 2:  # odd / fractional powers: positive inputs
        x = np.abs(x) + 0.1
    y = F.lp_pool2d(x, p, k, s, ceil)
    np.testing.assert_allclose(
        y, ref_lp_pool(x, p, k, s, ceil), rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-6
    )


@pytest.mark.parametrize("case", LP_CASES, ids=_case_id)
def test_lp_pool_gradient_finite_differences(case):
    shape, p, k, s, ceil = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    if p != int(p) or p % 2:
        x = np.abs(x) + 0.1
    y = F.lp_pool2d(x, p, k, s, ceil)
    g = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.lp_pool2d(t, p, k, s, ceil), x, g)
    np.testing.assert_allclose(F.lp_pool2d_backward(g, x, p, k, s, ceil), num, atol=1e-5, rtol=1e-3)


def test_lp_pool_zero_window_has_zero_gradient():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = 1.0
    y = F.lp_pool2d(x, 2, 2)
    dx = F.lp_pool2d_backward(np.ones_like(y), x, 2, 2)
    assert np.all(np.isfinite(dx)) and np.all(dx[0, 0, :2, :2] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "k,s,p,shape",
    [(2, None, 0, (2, 3, 8, 9)), (3, 2, 1, (1, 2, 9, 9)), ((2, 3), (2, 2), (1, 1), (1, 2, 7, 8))],
)
def test_max_unpool_roundtrip(k, s, p, shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    u = F.max_unpool2d(y, idx, k, s, p, output_size=shape[2:])
    assert u.shape == shape
    np.testing.assert_array_equal(u, ref_max_unpool(y, idx, shape[2:]))
    g = rng.standard_normal(shape).astype(dtype)
    gx = F.max_unpool2d_backward(g, idx)
    np.testing.assert_array_equal(
        gx,
        np.take_along_axis(g.reshape(*shape[:2], -1), idx.reshape(*shape[:2], -1), axis=2).reshape(
            y.shape
        ),
    )


def test_max_unpool_default_size_and_repeated_index():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    idx = np.zeros((1, 1, 2, 2), np.int64)
    u = F.max_unpool2d(x, idx, 2)
    assert u.shape == (1, 1, 4, 4) and u[0, 0, 0, 0] == 4.0 and u.sum() == 4.0
    u = F.max_unpool2d(x, np.array([[[[0, 3], [8, 15]]]]), 2, output_size=(1, 1, 5, 5))
    assert u.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(u.ravel()[[0, 3, 8, 15]], [1, 2, 3, 4])


def test_max_unpool_gradient_finite_differences(rng):
    x = rng.standard_normal((1, 2, 3, 4))
    g = rng.standard_normal((1, 2, 6, 8))
    idx = np.stack([rng.permutation(48)[:12].reshape(3, 4) for _ in range(2)])[None]
    num = numerical_grad(lambda t: F.max_unpool2d(t, idx, 2), x, g)
    np.testing.assert_allclose(F.max_unpool2d_backward(g, idx), num, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("shape,out", [((1, 2, 7, 9), (2, 3)), ((2, 1, 6, 6), 2)])
def test_adaptive_and_global_gradients_finite_differences(shape, out, rng):
    x = tie_free(shape, rng)
    y = F.adaptive_avg_pool2d(x, out)
    g = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.adaptive_avg_pool2d(t, out), x, g)
    np.testing.assert_allclose(
        F.adaptive_avg_pool2d_backward(g, x.shape), num, atol=1e-5, rtol=1e-3
    )
    y, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    num = numerical_grad(lambda t: F.adaptive_max_pool2d(t, out), x, g)
    np.testing.assert_allclose(
        F.adaptive_max_pool2d_backward(g, idx, x.shape), num, atol=1e-5, rtol=1e-3
    )
    g1 = rng.standard_normal((*shape[:2], 1, 1))
    num = numerical_grad(F.global_avg_pool2d, x, g1)
    np.testing.assert_allclose(F.global_avg_pool2d_backward(g1, x.shape), num, atol=1e-5, rtol=1e-3)


# ------------------------------------------------------------------------------------------
# Indices validation: bad indices never write out of bounds
# ------------------------------------------------------------------------------------------


def _valid_pool(dtype=np.float64):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(dtype)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    return x, y, idx


@pytest.mark.parametrize("bad", [-1, 36, 2**40, -(2**62)])
@pytest.mark.parametrize("position", [0, -1])
def test_max_pool_backward_out_of_range_index(bad, position):
    x, y, idx = _valid_pool()
    idx = idx.copy()
    idx.reshape(-1)[position] = bad
    with pytest.raises(ValueError, match="indices"):
        F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    with pytest.raises(ValueError, match="indices"):
        F.adaptive_max_pool2d_backward(np.ones_like(y), idx, x.shape)
    with pytest.raises(ValueError, match="indices"):
        F.max_unpool2d(y, idx, 2)
    with pytest.raises(ValueError, match="indices"):
        F.max_unpool2d_backward(np.ones((2, 3, 6, 6)), idx)


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8, np.uint64, np.int64])
def test_max_pool_backward_accepts_any_integer_indices(dtype):
    x, y, idx = _valid_pool()
    g = np.ones_like(y)
    expected = F.max_pool2d_backward(g, idx, x.shape)
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx.astype(dtype), x.shape), expected)


# ------------------------------------------------------------------------------------------
# 2x2 / stride-2 max pooling: the vector kernel of src/_pool2x2.h (every SIMD build)
# ------------------------------------------------------------------------------------------

# (H, W): output rows narrower than any vector (scalar), of 2, 4, 8, 16 outputs and between
# (an overlapping last step), odd sizes (a row / column outside every window)
POOL2_SIZES = [(2, 2), (3, 5), (4, 6), (6, 8), (7, 9), (10, 10), (14, 14), (12, 17), (28, 28)]
POOL2_SIZES += [(5, 31), (4, 32), (3, 34), (2, 65), (9, 70)]


def _pool_builds():
    """Every SIMD level of the 2x2 kernels this CPU runs (baseline, AVX2, AVX-512: clones in
    the one module, chosen by load_kernels), as ``(level, module)`` with that level set;
    the level the process started with is restored afterwards."""
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels

    before = _loaded_simd["cnncore.ops._pool"]
    try:
        for level in cpu_simd_levels():
            module, got = load_kernels("cnncore.ops._pool", level)
            assert got == level
            yield got, module
    finally:
        load_kernels("cnncore.ops._pool", before)


def test_pool_simd_level_follows_the_cap():
    """The pooling module holds one clone of the 2x2 kernels per SIMD level: load_kernels
    (CNNCORE_SIMD) sets the level, capped to what the CPU runs, and reports it."""
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels
    from cnncore.ops import _pool

    levels = cpu_simd_levels()
    before = _loaded_simd["cnncore.ops._pool"]
    try:
        for level in ("baseline", "avx2", "avx512"):
            module, got = load_kernels("cnncore.ops._pool", level)
            assert module is _pool
            assert got == (level if level in levels else levels[-1])
            assert _loaded_simd["cnncore.ops._pool"] == got
        assert _pool._set_simd_level(99) == len(levels) - 1  # capped to the CPU
        assert _pool._set_simd_level(-1) == 0
    finally:
        load_kernels("cnncore.ops._pool", before)
    assert _loaded_simd["cnncore.ops._pool"] == before


def test_fused_conv_pool_runs_the_pooling_module_kernels():
    """Regression: the fused conv-ReLU-pool of training (in the conv module, built once per
    SIMD level) compiled its own copy of the 2x2 pooling clones, whose level only _pool
    set: every conv build pooled with the baseline clones.  It now calls _pool's exported
    kernels (cnncore/ops/_pool.pxd), which run the level load_kernels set, and the fused
    forward gives the bits of the separate calls at every level."""
    import cnncore
    from cnncore.ops import _pool
    from cnncore.ops.conv import _conv2d_relu_max_pool2d

    names = {"max_plane_float", "max_plane_double", "scatter_masked_plane_float"}
    names.add("scatter_masked_plane_double")
    assert {f"pool2x2_{n}" for n in names} <= set(_pool.__pyx_capi__)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 1, 12, 14)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    for _level, _module in _pool_builds():
        with cnncore.conv_algorithm("rows"):
            y_ref = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)
        fused = _conv2d_relu_max_pool2d(x, w, b, 1, 1, 1, 1)
        assert fused is not None
        np.testing.assert_array_equal(fused[0], y_ref)


def _ties_and_zeros(shape, dtype, rng):
    """Few distinct values (ties everywhere) including -0.0 and +0.0."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    zeros = x == 0
    x[zeros] = np.where(rng.random(zeros.sum()) < 0.5, 0.0, -0.0)
    return x


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", POOL2_SIZES, ids=str)
def test_max_pool_2x2_every_build_matches_reference_bitwise(hw, dtype, rng):
    """Values (+-0 included), indices and the gradient of each SIMD build are the
    reference's bit for bit, on random values and on ties."""
    shape = (2, 3, *hw)
    for x in (rng.standard_normal(shape).astype(dtype), _ties_and_zeros(shape, dtype, rng)):
        ry, ridx = ref_max_pool(x, 2)
        g = rng.standard_normal(ry.shape).astype(dtype)
        g.reshape(-1)[::7] = -0.0  # a scatter-add into zeros makes it +0.0
        rdx = ref_scatter_add(g, ridx, x.shape)
        for level, mod in _pool_builds():
            y = np.empty_like(ry)
            idx = np.empty_like(ridx)
            mod.max_pool2d_forward(x, y, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
            y2 = np.full_like(ry, 7)
            mod.max_pool2d_forward(x, y2, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)
            dx = np.full(x.shape, 5, dtype)
            mod.index_scatter_add(g, idx, dx, 1, "max_pool2d_backward")
            assert _bits(y).tobytes() == _bits(ry).tobytes(), level
            assert _bits(y2).tobytes() == _bits(ry).tobytes(), level
            np.testing.assert_array_equal(idx, ridx, err_msg=level)
            assert _bits(dx).tobytes() == _bits(rdx).tobytes(), level


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_nan_inf_planes_every_build(dtype, rng):
    """A plane with a NaN (anywhere, several in one window) runs the exact scan: the last
    NaN of its window wins, as in PyTorch; infinities (which also send a plane to the exact
    scan) and all--inf windows keep the first maximum."""
    x = rng.standard_normal((2, 4, 10, 36)).astype(dtype)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 4, 6:8] = np.nan
    x[0, 0, 5, 6] = np.nan
    x[0, 1, 9, 35] = np.nan  # the last window of the plane
    x[0, 2] = -np.inf
    x[0, 3, 2, 3] = np.inf
    x[0, 3, 2, 2] = -np.inf
    x[1, 0, 7, 20] = np.nan
    x[1, 1, 3, 3] = np.inf
    x[1, 1, 3, 4] = np.inf
    ry, ridx = ref_max_pool(x, 2)
    for level, mod in _pool_builds():
        y = np.empty_like(ry)
        idx = np.empty_like(ridx)
        mod.max_pool2d_forward(x, y, idx, 2, 2, 2, 2, 0, 0, 1, 1, 1)
        np.testing.assert_array_equal(y, ry, err_msg=level)
        np.testing.assert_array_equal(idx, ridx, err_msg=level)
        mod.max_pool2d_forward(x, y, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)
        np.testing.assert_array_equal(y, ry, err_msg=level)
    assert np.isnan(ry[0, 0]).sum() == 2 and np.isnan(ry[0, 1]).sum() == 1
    assert ridx[0, 0, 2, 3] == 5 * 36 + 6  # the last NaN of the window


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_backward_with_foreign_indices(dtype, rng):
    """Indices the 2x2 kernel cannot take (outside their window: 3x3 windows, or any
    index) fall back to the generic scatter, plane by plane; an out-of-range index in any
    row still raises."""
    x = rng.standard_normal((2, 3, 10, 12)).astype(dtype)
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)  # (5, 6): 2x2-shaped output
    g = rng.standard_normal(idx.shape).astype(dtype)
    rdx = ref_scatter_add(g, idx, x.shape)
    for level, mod in _pool_builds():
        dx = np.full(x.shape, 5, dtype)
        mod.index_scatter_add(g, idx, dx, 2, "max_pool2d_backward")
        assert _bits(dx).tobytes() == _bits(rdx).tobytes(), level
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    mixed = idx.copy()
    mixed[1, 2, 4, 5] = 0  # one index of the last row elsewhere in its plane
    np.testing.assert_array_equal(
        F.max_pool2d_backward(g, mixed, x.shape), ref_scatter_add(g, mixed, x.shape)
    )
    for position in [(0, 0, 0, 0), (1, 2, 4, 5), (1, 1, 2, 3)]:
        bad = idx.copy()
        bad[position] = x.shape[2] * x.shape[3]
        with pytest.raises(ValueError, match="indices"):
            F.max_pool2d_backward(g, bad, x.shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_relu_fused_every_build(dtype, rng):
    """The ReLU fused into the 2x2 forward and its masked backward: bit-identical to the
    separate calls."""
    from cnncore.ops.pool import _max_pool2d_relu, _max_pool2d_relu_backward

    x = _ties_and_zeros((2, 3, 9, 30), dtype, rng)
    y, idx = _max_pool2d_relu(x, 2, None, 0, 1, False)
    ry, ridx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx, ridx)
    assert _bits(y).tobytes() == _bits(F.max_pool2d(F.relu(x), 2)).tobytes()
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = _max_pool2d_relu_backward(g, idx, x.shape, y)
    expected = F.max_pool2d_backward(F.relu_backward(g, F.relu(ry)), idx, x.shape)
    assert _bits(dx).tobytes() == _bits(expected).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "geom", [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 1, 2), ((2, 3), (2, 3), (1, 1), 1)]
)
def test_max_pool_relu_fused_keeps_relu_first_zero_signs(dtype, geom, rng):
    """Regression: the ReLU fused into max pooling (Sequential's ReLU-MaxPool2d pairs in
    training) gave ``-0.0`` for a window like ``(-1, -0.0)``, where the layers in their order
    (ReLU first: ``(+0.0, -0.0)``, the first maximum wins) and PyTorch give ``+0.0``."""
    from cnncore.ops.pool import _max_pool2d_relu

    k, s, p, d = geom
    x = _ties_and_zeros((2, 3, 11, 13), dtype, rng)
    x[0, 0, :2, :2] = [[-1.0, -0.0], [-2.0, -3.0]]
    x[0, 1, :2, :2] = [[-0.0, -1.0], [0.0, -3.0]]
    x[1, 2, 4, 5] = np.nan
    y, _ = _max_pool2d_relu(x, k, s, p, d, False)
    expected = F.max_pool2d(F.relu(x), k, s, p, d)
    assert _bits(y).tobytes() == _bits(expected).tobytes()
    if geom == (2, 2, 0, 1):
        assert not np.signbit(y[0, 0, 0, 0]) and np.signbit(y[0, 1, 0, 0])


# ------------------------------------------------------------------------------------------
# Bad inputs: exception type, and the message names the argument
# ------------------------------------------------------------------------------------------

X = np.zeros((1, 2, 6, 6))
_, Y, IDX = _valid_pool()
BAD = [
    ("kernel 0", lambda: F.max_pool2d(X, 0), ValueError, "kernel_size"),
    ("kernel -1", lambda: F.avg_pool2d(X, -1), ValueError, "kernel_size"),
    ("kernel float", lambda: F.max_pool2d(X, 2.0), TypeError, "kernel_size"),
    ("kernel triple", lambda: F.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size"),
    ("stride 0", lambda: F.max_pool2d(X, 2, 0), ValueError, "stride"),
    ("stride -2", lambda: F.avg_pool2d(X, 2, (1, -2)), ValueError, "stride"),
    ("padding > k/2", lambda: F.max_pool2d(X, 2, 2, 2), ValueError, "padding"),
    ("padding > k/2 avg", lambda: F.avg_pool2d(X, 3, 1, (0, 2)), ValueError, "padding"),
    ("padding negative", lambda: F.max_pool2d(X, 2, 2, -1), ValueError, "padding"),
    ("dilation 0", lambda: F.max_pool2d(X, 2, 2, 0, 0), ValueError, "dilation"),
    ("kernel > padded input", lambda: F.max_pool2d(X, 9), ValueError, "kernel_size"),
    ("kernel > padded input avg", lambda: F.avg_pool2d(X, (2, 7)), ValueError, "kernel_size"),
    ("dilated window too big", lambda: F.max_pool2d(X, 3, dilation=3), ValueError, "kernel_size"),
    (
        "empty window",
        lambda: F.max_pool2d(np.ones((1, 1, 1, 4)), 2, 1, 1, 2),
        ValueError,
        "dilation",
    ),
    ("ceil_mode int", lambda: F.max_pool2d(X, 2, ceil_mode=1), TypeError, "ceil_mode"),
    (
        "return_indices str",
        lambda: F.max_pool2d(X, 2, return_indices="y"),
        TypeError,
        "return_indices",
    ),
    (
        "count_include_pad None",
        lambda: F.avg_pool2d(X, 2, count_include_pad=None),
        TypeError,
        "count_include_pad",
    ),
    ("divisor 0", lambda: F.avg_pool2d(X, 2, divisor_override=0), ValueError, "divisor_override"),
    (
        "divisor float",
        lambda: F.avg_pool2d(X, 2, divisor_override=2.5),
        TypeError,
        "divisor_override",
    ),
    (
        "divisor 0 backward",
        lambda: F.avg_pool2d_backward(np.zeros((1, 2, 3, 3)), X.shape, 2, divisor_override=0),
        ValueError,
        "divisor_override",
    ),
    ("x 2-D", lambda: F.max_pool2d(np.zeros((6, 6)), 2), ValueError, "x"),
    ("x 5-D", lambda: F.avg_pool2d(np.zeros((1, 1, 2, 6, 6)), 2), ValueError, "x"),
    ("x int", lambda: F.max_pool2d(np.zeros((1, 1, 4, 4), np.int64), 2), TypeError, "x"),
    ("x float16", lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4), np.float16), 2), TypeError, "x"),
    ("x complex", lambda: F.lp_pool2d(np.zeros((1, 1, 4, 4), complex), 2, 2), TypeError, "x"),
    ("x None", lambda: F.global_avg_pool2d(None), TypeError, "x"),
    (
        "indices out of range",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX + 36, (2, 3, 6, 6)),
        ValueError,
        "indices",
    ),
    (
        "indices negative",
        lambda: F.max_pool2d_backward(np.ones_like(Y), -IDX - 1, (2, 3, 6, 6)),
        ValueError,
        "indices",
    ),
    (
        "indices shape",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX[:, :, :2], (2, 3, 6, 6)),
        ValueError,
        "indices",
    ),
    (
        "indices float",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX.astype(float), (2, 3, 6, 6)),
        TypeError,
        "indices",
    ),
    (
        "indices bool",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX > 3, (2, 3, 6, 6)),
        TypeError,
        "indices",
    ),
    (
        "indices uint64 huge",
        lambda: F.max_pool2d_backward(
            np.ones_like(Y), IDX.astype(np.uint64) + np.uint64(2**63), (2, 3, 6, 6)
        ),
        ValueError,
        "indices",
    ),
    (
        "grad_output int",
        lambda: F.max_pool2d_backward(IDX, IDX, (2, 3, 6, 6)),
        TypeError,
        "grad_output",
    ),
    (
        "input_shape N mismatch",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX, (1, 3, 6, 6)),
        ValueError,
        "input_shape",
    ),
    (
        "input_shape len",
        lambda: F.max_pool2d_backward(np.ones_like(Y), IDX, (2, 3, 6)),
        ValueError,
        "input_shape",
    ),
    (
        "input_shape str",
        lambda: F.avg_pool2d_backward(np.ones_like(Y), "abcd", 2),
        TypeError,
        "input_shape",
    ),
    (
        "avg grad_output shape",
        lambda: F.avg_pool2d_backward(np.ones((2, 3, 4, 3)), (2, 3, 6, 6), 2),
        ValueError,
        "grad_output",
    ),
    ("adaptive negative", lambda: F.adaptive_avg_pool2d(X, -1), ValueError, "output_size"),
    ("adaptive triple", lambda: F.adaptive_max_pool2d(X, (1, 2, 3)), ValueError, "output_size"),
    ("adaptive None", lambda: F.adaptive_avg_pool2d(X, None), TypeError, "output_size"),
    (
        "adaptive empty input",
        lambda: F.adaptive_avg_pool2d(np.zeros((1, 1, 0, 4)), 2),
        ValueError,
        "x",
    ),
    ("global empty input", lambda: F.global_avg_pool2d(np.zeros((1, 1, 3, 0))), ValueError, "x"),
    (
        "adaptive bwd empty",
        lambda: F.adaptive_avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 0, 4)),
        ValueError,
        "input_shape",
    ),
    (
        "global bwd grad shape",
        lambda: F.global_avg_pool2d_backward(np.ones((1, 2, 2, 1)), (1, 2, 4, 4)),
        ValueError,
        "grad_output",
    ),
    ("lp norm 0", lambda: F.lp_pool2d(X, 0, 2), ValueError, "norm_type"),
    ("lp norm inf", lambda: F.lp_pool2d(X, math.inf, 2), ValueError, "norm_type"),
    ("lp norm str", lambda: F.lp_pool2d(X, "2", 2), TypeError, "norm_type"),
    ("lp kernel 0", lambda: F.lp_pool2d(X, 2, 0), ValueError, "kernel_size"),
    (
        "lp bwd dtype",
        lambda: F.lp_pool2d_backward(np.ones((1, 2, 3, 3), np.float32), X, 2, 2),
        TypeError,
        "x",
    ),
    (
        "unpool output_size",
        lambda: F.max_unpool2d(Y, IDX, 2, output_size=(9, 6)),
        ValueError,
        "output_size",
    ),
    (
        "unpool output_size len",
        lambda: F.max_unpool2d(Y, IDX, 2, output_size=(6,)),
        ValueError,
        "output_size",
    ),
    ("unpool indices shape", lambda: F.max_unpool2d(Y, IDX[..., :2], 2), ValueError, "indices"),
    ("unpool indices float", lambda: F.max_unpool2d(Y, IDX * 1.0, 2), TypeError, "indices"),
    ("unpool stride 0", lambda: F.max_unpool2d(Y, IDX, 2, 0), ValueError, "stride"),
    (
        "unpool negative size",
        lambda: F.max_unpool2d(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), 1, 1, 3),
        ValueError,
        "padding",
    ),
    (
        "unpool bwd indices ndim",
        lambda: F.max_unpool2d_backward(np.ones((2, 3, 6, 6)), IDX[0]),
        ValueError,
        "indices",
    ),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# Threads, empty batches, array-likes
# ------------------------------------------------------------------------------------------


def _all_ops(x, g_small):
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    ya, ia = F.adaptive_max_pool2d(x, (4, 5), return_indices=True)
    y2, idx2 = F.max_pool2d(x, 2, return_indices=True)
    return [
        y,
        idx,
        y2,
        idx2,
        F.max_pool2d(x, 2),
        F.max_pool2d_backward(np.ones_like(y2), idx2, x.shape),
        F.max_pool2d(x, (2, 3), 1, (1, 1), (2, 1)),
        F.max_pool2d_backward(np.ones_like(y), idx, x.shape),
        F.avg_pool2d(x, 3, 2, 1, True, False),
        F.avg_pool2d_backward(g_small, x.shape, 3, 2, 1, True, False),
        F.avg_pool2d(x, 3, 1, 1),
        F.avg_pool2d_backward(np.ones((*x.shape[:2], *x.shape[2:])), x.shape, 3, 1, 1),
        F.adaptive_avg_pool2d(x, (4, 5)),
        ya,
        ia,
        F.adaptive_avg_pool2d_backward(np.ones_like(ya), x.shape),
        F.adaptive_max_pool2d_backward(np.ones_like(ya), ia, x.shape),
        F.global_avg_pool2d(x),
        F.global_avg_pool2d_backward(x[:, :, :1, :1], x.shape),
        F.lp_pool2d(np.abs(x), 2, 3, 2),
        F.lp_pool2d_backward(g_small[..., :-1, :-1], np.abs(x), 2, 3, 2),
        F.max_unpool2d(y, idx, 3, 2, 1, output_size=x.shape[2:]),
        F.max_unpool2d_backward(x, idx),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_for_1_2_4_threads(dtype, rng):
    """Several rounds per thread count: a data race would show up as a difference."""
    x = rng.standard_normal((3, 5, 17, 19)).astype(dtype)
    g_small = rng.standard_normal((3, 5, 9, 10)).astype(dtype)
    assert_bit_identical_across_threads(lambda: _all_ops(x, g_small), (1, 2, 4, 2, 4, 1, 4, 2))


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 0, 8, 8)])
def test_empty_batch_gives_empty_results(shape):
    x = np.zeros(shape, np.float32)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    out = (*shape[:2], 4, 4)
    assert y.shape == out and idx.shape == out and y.dtype == np.float32
    assert F.max_pool2d_backward(y, idx, shape).shape == shape
    assert F.avg_pool2d(x, 3, 2, 1).shape == (*shape[:2], 4, 4)
    assert F.avg_pool2d_backward(y, shape, 2).shape == shape
    assert F.adaptive_avg_pool2d(x, 3).shape == (*shape[:2], 3, 3)
    assert F.adaptive_avg_pool2d_backward(np.zeros((*shape[:2], 3, 3)), shape).shape == shape
    ya, ia = F.adaptive_max_pool2d(x, (2, 5), return_indices=True)
    assert ya.shape == ia.shape == (*shape[:2], 2, 5)
    assert F.adaptive_max_pool2d_backward(ya, ia, shape).shape == shape
    assert F.global_avg_pool2d(x).shape == (*shape[:2], 1, 1)
    assert F.global_avg_pool2d_backward(np.zeros((*shape[:2], 1, 1)), shape).shape == shape
    assert F.lp_pool2d(x, 2, 2).shape == out
    assert F.lp_pool2d_backward(y, x, 2, 2).shape == shape
    assert F.max_unpool2d(y, idx, 2).shape == shape
    assert F.max_unpool2d_backward(x, idx).shape == out


def test_array_likes_non_contiguous_and_read_only(rng):
    base = rng.standard_normal((2, 3, 10, 12))
    x = base[:, :, ::2, ::-1]  # non-contiguous view
    x.flags.writeable = False
    expected = ref_max_pool(np.ascontiguousarray(x), 2)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, expected[0])
    np.testing.assert_array_equal(idx, expected[1])
    lst = np.arange(16.0).reshape(1, 1, 4, 4).tolist()
    np.testing.assert_array_equal(F.avg_pool2d(lst, 2), [[[[2.5, 4.5], [10.5, 12.5]]]])
    assert F.max_pool2d(np.float32(1) * np.ones((1, 1, 2, 2), np.float32), 2).dtype == np.float32


# ------------------------------------------------------------------------------------------
# Hypothesis: random geometry against the reference (and PyTorch below)
# ------------------------------------------------------------------------------------------


@st.composite
def pool_geometry(draw, dilation=True):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    ceil = draw(st.booleans())
    return (
        (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w),
        (kh, kw),
        (sh, sw),
        (ph, pw),
        (dh, dw),
        ceil,
    )


def _valid(shape, k, s, p, d, ceil):
    """Reference validity: output >= 1 and no window entirely in the padding."""
    for size, kk, ss, pp, dd in zip(shape[2:], k, s, p, d, strict=True):
        out = ref_out_size(size, kk, ss, pp, dd, ceil)
        if out < 1:
            return False
        for o in range(out):
            if not any(0 <= o * ss - pp + i * dd < size for i in range(kk)):
                return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geom=pool_geometry(), seed=st.integers(0, 2**16), dtype=st.sampled_from(DTYPES))
def test_hypothesis_max_pool_geometry(geom, seed, dtype):
    shape, k, s, p, d, ceil = geom
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if not _valid(shape, k, s, p, d, ceil):
        with pytest.raises(ValueError):
            F.max_pool2d(x, k, s, p, d, ceil)
        return
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    g = np.ones_like(y)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(g, idx, shape), ref_scatter_add(g, idx, shape)
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    geom=pool_geometry(dilation=False),
    seed=st.integers(0, 2**16),
    cip=st.booleans(),
    div=st.sampled_from([None, 1, 4, -2]),
)
def test_hypothesis_avg_pool_geometry(geom, seed, cip, div):
    shape, k, s, p, _, ceil = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if not _valid(shape, k, s, p, (1, 1), ceil):
        with pytest.raises(ValueError):
            F.avg_pool2d(x, k, s, p, ceil, cip, div)
        return
    y = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    np.testing.assert_allclose(y, ref_avg_pool(x, k, s, p, ceil, cip, div), **tol(np.float64))
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        F.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div),
        ref_avg_pool_backward(g, shape, k, s, p, ceil, cip, div),
        **tol(np.float64),
    )


# ------------------------------------------------------------------------------------------
# PyTorch cross-checks (forward, and backward through autograd)
# ------------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _autograd(torch, fn, x, g):
    t = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    out = fn(t)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch.from_numpy(np.ascontiguousarray(g)))
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=_case_id)
def test_torch_max_pool(case, dtype, rng):
    torch = _torch()
    tf = torch.nn.functional
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    x[-1, -1, 2, :] = -np.inf
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ty, tidx = tf.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    g = rng.standard_normal(y.shape).astype(dtype)
    _, tdx = _autograd(torch, lambda t: tf.max_pool2d(t, k, s, p, d, ceil), x, g)
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx, x.shape), tdx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=_case_id)
@pytest.mark.parametrize("cip,div", [(True, None), (False, None), (False, 7)])
def test_torch_avg_pool(case, cip, div, dtype, rng):
    torch = _torch()
    tf = torch.nn.functional
    shape, k, s, p, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty, tdx = _autograd(torch, lambda t: tf.avg_pool2d(t, k, s, p, ceil, cip, div), x, g)
    np.testing.assert_allclose(y, ty, **tol(dtype))
    np.testing.assert_allclose(
        F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div), tdx, **tol(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", ADAPTIVE)
def test_torch_adaptive_and_global(shape, out, dtype, rng):
    torch = _torch()
    tf = torch.nn.functional
    x = rng.standard_normal(shape).astype(dtype)
    y = F.adaptive_avg_pool2d(x, out)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty, tdx = _autograd(torch, lambda t: tf.adaptive_avg_pool2d(t, out), x, g)
    np.testing.assert_allclose(y, ty, **tol(dtype))
    np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(g, x.shape), tdx, **tol(dtype))
    y, idx = F.adaptive_max_pool2d(x, out, return_indices=True)
    ty, tidx = tf.adaptive_max_pool2d(torch.from_numpy(x), out, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    _, tdx = _autograd(torch, lambda t: tf.adaptive_max_pool2d(t, out), x, g)
    np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(g, idx, x.shape), tdx)
    g1 = rng.standard_normal((*shape[:2], 1, 1)).astype(dtype)
    ty, tdx = _autograd(torch, lambda t: tf.adaptive_avg_pool2d(t, 1), x, g1)
    np.testing.assert_allclose(F.global_avg_pool2d(x), ty, **tol(dtype))
    np.testing.assert_allclose(F.global_avg_pool2d_backward(g1, x.shape), tdx, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LP_CASES, ids=_case_id)
def test_torch_lp_pool(case, dtype, rng):
    torch = _torch()
    tf = torch.nn.functional
    shape, p, k, s, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    if p != int(p) or p % 2:
        x = np.abs(x) + 0.1
    y = F.lp_pool2d(x, p, k, s, ceil)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty, tdx = _autograd(torch, lambda t: tf.lp_pool2d(t, p, k, s, ceil), x, g)
    t32 = dict(rtol=2e-4, atol=1e-4) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(y, ty, **t32)
    np.testing.assert_allclose(F.lp_pool2d_backward(g, x, p, k, s, ceil), tdx, **t32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "k,s,p,shape",
    [(2, None, 0, (2, 3, 8, 9)), (3, 2, 1, (1, 2, 9, 9)), ((2, 3), (2, 2), (1, 1), (1, 2, 7, 8))],
)
def test_torch_max_unpool(k, s, p, shape, dtype, rng):
    torch = _torch()
    tf = torch.nn.functional
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
    u = F.max_unpool2d(y, idx, k, s, p, output_size=shape[2:])
    g = rng.standard_normal(u.shape).astype(dtype)
    t = torch.from_numpy(y).requires_grad_()
    tu = tf.max_unpool2d(t, torch.from_numpy(idx), k, s, p, output_size=shape[2:])
    tu.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(u, tu.detach().numpy())
    np.testing.assert_array_equal(F.max_unpool2d_backward(g, idx), t.grad.numpy())
    try:
        tu = tf.max_unpool2d(torch.from_numpy(y), torch.from_numpy(idx), k, s, p)
    except RuntimeError:  # indices beyond the default size
        with pytest.raises(ValueError, match="indices"):
            F.max_unpool2d(y, idx, k, s, p)
    else:
        np.testing.assert_array_equal(F.max_unpool2d(y, idx, k, s, p), tu.numpy())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geom=pool_geometry(), seed=st.integers(0, 2**16))
def test_hypothesis_against_torch(geom, seed):
    torch = _torch()
    tf = torch.nn.functional
    shape, k, s, p, d, ceil = geom
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    try:
        ty, tidx = tf.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
    except RuntimeError:
        with pytest.raises(ValueError):
            F.max_pool2d(x, k, s, p, d, ceil)
        return
    if not _valid(shape, k, s, p, d, ceil):  # torch: -inf with an out-of-plane index
        assert np.any(np.isneginf(ty.numpy()))
        with pytest.raises(ValueError, match="dilation"):
            F.max_pool2d(x, k, s, p, d, ceil)
        return
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    if d == (1, 1):
        ty = tf.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, False)
        np.testing.assert_allclose(
            F.avg_pool2d(x, k, s, p, ceil, False), ty.numpy(), **tol(np.float32)
        )
