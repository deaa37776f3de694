"""Tests for cnncore.pad2d / pad2d_backward: NumPy loop reference (always on), finite
differences, PyTorch cross-checks (F.pad and autograd), bad inputs, threads, empty batches."""

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, numerical_grad, tol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncore import functional as F

DTYPES = [np.float32, np.float64]
MODES = ["constant", "replicate", "reflect", "circular"]


def sides(padding):
    """(left, right, top, bottom) from int | (ph, pw) | (left, right, top, bottom)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        ph, pw = padding
        return pw, pw, ph, ph
    return tuple(padding)


def src(i, n, mode):
    """Input coordinate that padded coordinate ``i`` reads, or None (constant padding)."""
    if 0 <= i < n:
        return i
    if mode == "constant":
        return None
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    if mode == "reflect":
        return -i if i < 0 else 2 * (n - 1) - i
    return i % n  # circular (pad <= n: wraps at most once)


def ref_pad(x, padding, mode="constant", value=0.0):
    left, right, top, bottom = sides(padding)
    n, c, h, w = x.shape
    ho, wo = h + top + bottom, w + left + right
    y = np.empty((n, c, ho, wo), x.dtype)
    for oh in range(ho):
        for ow in range(wo):
            r, q = src(oh - top, h, mode), src(ow - left, w, mode)
            y[:, :, oh, ow] = value if r is None or q is None else x[:, :, r, q]
    return y


def ref_pad_backward(g, padding, mode="constant"):
    left, right, top, bottom = sides(padding)
    n, c, ho, wo = g.shape
    h, w = ho - top - bottom, wo - left - right
    dx = np.zeros((n, c, h, w), g.dtype)
    for oh in range(ho):
        for ow in range(wo):
            r, q = src(oh - top, h, mode), src(ow - left, w, mode)
            if r is not None and q is not None:
                dx[:, :, r, q] += g[:, :, oh, ow]
    return dx


# (shape, padding) valid for every mode (pads < size)
CASES = [
    ((2, 3, 5, 6), 1),
    ((2, 3, 5, 6), (2, 3)),
    ((1, 2, 4, 7), (3, 1, 0, 2)),
    ((1, 2, 6, 4), (0, 0, 3, 5)),
    ((1, 1, 3, 3), (2, 2, 2, 2)),
    ((2, 2, 4, 5), 0),
    ((1, 2, 2, 300), (5, 7, 1, 1)),
]
CIRCULAR_FULL = [((1, 2, 3, 4), (4, 4, 3, 3)), ((1, 1, 2, 2), (2, 1, 2, 0))]  # pad == size
CONSTANT_NEGATIVE = [
    ((2, 2, 6, 7), (-1, 2, -2, 0)),
    ((1, 2, 5, 5), (-2, -2, -1, -3)),
    ((1, 1, 4, 4), (-4, 0, 0, -4)),
    ((1, 1, 4, 4), (6, -4, 0, 0)),
]


def _id(case):
    return str(case).replace(" ", "")


def _all_cases():
    out = [(s, p, m) for s, p in CASES for m in MODES]
    out += [(s, p, "circular") for s, p in CIRCULAR_FULL]
    out += [(s, p, "constant") for s, p in CONSTANT_NEGATIVE]
    out += [(s, p, "replicate") for s, p in [((1, 2, 1, 1), (3, 2, 1, 4))]]
    return out


ALL = _all_cases()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,padding,mode", ALL, ids=[_id(c) for c in ALL])
def test_pad_matches_reference(shape, padding, mode, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    value = 2.5 if mode == "constant" else 0.0
    y = F.pad2d(x, padding, mode, value)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref_pad(x, padding, mode, value))
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = F.pad2d_backward(g, padding, mode)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, ref_pad_backward(g, padding, mode), **tol(dtype))


@pytest.mark.parametrize("shape,padding,mode", [c for c in ALL if np.prod(c[0]) <= 120], ids=_id)
def test_pad_gradient_finite_differences(shape, padding, mode, rng):
    x = rng.standard_normal(shape)
    y = F.pad2d(x, padding, mode)
    g = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.pad2d(t, padding, mode), x, g)
    np.testing.assert_allclose(F.pad2d_backward(g, padding, mode), num, atol=1e-5, rtol=1e-3)


def test_pad_known_values():
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    np.testing.assert_array_equal(F.pad2d(x, (2, 1, 0, 0), "reflect")[0, 0, 0], [2, 1, 0, 1, 2, 1])
    np.testing.assert_array_equal(
        F.pad2d(x, (2, 1, 0, 0), "replicate")[0, 0, 0], [0, 0, 0, 1, 2, 2]
    )
    np.testing.assert_array_equal(
        F.pad2d(x, (2, 3, 0, 0), "circular")[0, 0, 0], [1, 2, 0, 1, 2, 0, 1, 2]
    )
    np.testing.assert_array_equal(
        F.pad2d(x, (1, -1, 1, 0), "constant", -7)[0, 0], [[-7, -7, -7], [-7, 0, 1]]
    )
    y = F.pad2d(x, 1, value=np.nan)
    assert np.isnan(y[0, 0, 0]).all() and y.shape == (1, 1, 3, 5)


def test_pad_backward_accumulates_replicate_corner():
    g = np.ones((1, 1, 5, 5))
    np.testing.assert_array_equal(
        F.pad2d_backward(g, 1, "replicate")[0, 0], [[4, 2, 4], [2, 1, 2], [4, 2, 4]]
    )
    np.testing.assert_array_equal(
        F.pad2d_backward(g, 1, "reflect")[0, 0], [[1, 3, 1], [3, 9, 3], [1, 3, 1]]
    )
    np.testing.assert_array_equal(
        F.pad2d_backward(g, 1, "circular")[0, 0], [[4, 2, 4], [2, 1, 2], [4, 2, 4]]
    )


def test_pad_value_dtype_and_rounding():
    y = F.pad2d(np.zeros((1, 1, 1, 1), np.float32), 1, value=0.1)
    assert y.dtype == np.float32 and y[0, 0, 0, 0] == np.float32(0.1)
    y = F.pad2d(np.zeros((1, 1, 1, 1), np.float32), 1, value=1e300)
    assert np.isinf(y[0, 0, 0, 0])


# ------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------

X = np.zeros((1, 2, 4, 5))
BAD = [
    ("unknown mode", lambda: F.pad2d(X, 1, "mirror"), ValueError, "mode"),
    ("mode None", lambda: F.pad2d(X, 1, None), ValueError, "mode"),
    ("reflect pad == size", lambda: F.pad2d(X, (0, 0, 4, 0), "reflect"), ValueError, "padding"),
    ("reflect pad > size", lambda: F.pad2d(X, (5, 0, 0, 0), "reflect"), ValueError, "padding"),
    ("circular pad > size", lambda: F.pad2d(X, (0, 6, 0, 0), "circular"), ValueError, "padding"),
    ("negative reflect", lambda: F.pad2d(X, (-1, 0, 0, 0), "reflect"), ValueError, "padding"),
    ("negative replicate", lambda: F.pad2d(X, -1, "replicate"), ValueError, "padding"),
    ("negative circular", lambda: F.pad2d(X, (0, 0, 0, -1), "circular"), ValueError, "padding"),
    ("crop too much", lambda: F.pad2d(X, (-3, -3, 0, 0)), ValueError, "padding"),
    ("crop more than axis", lambda: F.pad2d(X, (7, -6, 0, 0)), ValueError, "padding"),
    ("crop height", lambda: F.pad2d(X, (0, 0, -5, 3)), ValueError, "padding"),
    ("padding length 3", lambda: F.pad2d(X, (1, 2, 3)), ValueError, "padding"),
    ("padding float", lambda: F.pad2d(X, 1.5), TypeError, "padding"),
    ("padding float in tuple", lambda: F.pad2d(X, (1, 1, 1.0, 1)), TypeError, "padding"),
    ("padding None", lambda: F.pad2d(X, None), TypeError, "padding"),
    ("padding str", lambda: F.pad2d(X, "same"), TypeError, "padding"),
    ("value for reflect", lambda: F.pad2d(X, 1, "reflect", 1.0), ValueError, "value"),
    ("value str", lambda: F.pad2d(X, 1, "constant", "0"), TypeError, "value"),
    ("value complex", lambda: F.pad2d(X, 1, "constant", 1j), TypeError, "value"),
    (
        "replicate empty plane",
        lambda: F.pad2d(np.zeros((1, 1, 0, 3)), 1, "replicate"),
        ValueError,
        "x",
    ),
    (
        "reflect empty plane",
        lambda: F.pad2d(np.zeros((1, 1, 3, 0)), (0, 0, 1, 1), "reflect"),
        ValueError,
        "x",
    ),
    ("x 2-D", lambda: F.pad2d(np.zeros((4, 5)), 1), ValueError, "x"),
    ("x int", lambda: F.pad2d(np.zeros((1, 1, 2, 2), np.int32), 1), TypeError, "x"),
    ("x bool", lambda: F.pad2d(np.zeros((1, 1, 2, 2), bool), 1), TypeError, "x"),
    (
        "bwd grad too small",
        lambda: F.pad2d_backward(np.zeros((1, 1, 2, 2)), 2),
        ValueError,
        "grad_output",
    ),
    (
        "bwd unknown mode",
        lambda: F.pad2d_backward(np.zeros((1, 1, 4, 4)), 1, "wrap"),
        ValueError,
        "mode",
    ),
    (
        "bwd reflect too big",
        lambda: F.pad2d_backward(np.zeros((1, 1, 5, 5)), 2, "reflect"),
        ValueError,
        "padding",
    ),
    (
        "bwd negative reflect",
        lambda: F.pad2d_backward(np.zeros((1, 1, 5, 5)), -1, "reflect"),
        ValueError,
        "padding",
    ),
    (
        "bwd grad int",
        lambda: F.pad2d_backward(np.zeros((1, 1, 5, 5), int), 1),
        TypeError,
        "grad_output",
    ),
    ("bwd grad 2-D", lambda: F.pad2d_backward(np.zeros((5, 5)), 1), ValueError, "grad_output"),
]


@pytest.mark.parametrize("name,call,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# Threads, empty batches, array-likes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_for_1_2_4_threads(dtype, rng):
    x = rng.standard_normal((3, 5, 9, 11)).astype(dtype)

    def compute():
        res = []
        for mode in MODES:
            y = F.pad2d(x, (3, 1, 2, 4), mode)
            res += [y, F.pad2d_backward(y, (3, 1, 2, 4), mode)]
        res.append(F.pad2d(x, (-2, 3, 1, -4), "constant", 1.5))
        return res

    assert_bit_identical_across_threads(compute, (1, 2, 4, 2, 1, 4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5)])
def test_empty_batch(shape, mode):
    x = np.zeros(shape, np.float32)
    y = F.pad2d(x, (1, 2, 3, 0), mode)
    assert y.shape == (*shape[:2], 7, 8) and y.dtype == np.float32
    assert F.pad2d_backward(y, (1, 2, 3, 0), mode).shape == shape


def test_empty_plane_constant_and_circular():
    x = np.zeros((1, 2, 0, 3))
    y = F.pad2d(x, (1, 1, 2, 1), value=4.0)
    assert y.shape == (1, 2, 3, 5) and np.all(y == 4.0)
    assert F.pad2d_backward(y, (1, 1, 2, 1)).shape == x.shape
    assert F.pad2d(x, (1, 1, 0, 0), "circular").shape == (1, 2, 0, 5)
    y = F.pad2d(np.ones((1, 1, 2, 2)), (-2, 0, 0, 0))
    assert y.shape == (1, 1, 2, 0)
    np.testing.assert_array_equal(F.pad2d_backward(y, (-2, 0, 0, 0)), np.zeros((1, 1, 2, 2)))


def test_array_likes_non_contiguous_read_only(rng):
    base = rng.standard_normal((2, 3, 8, 10))
    x = base[:, ::-1, 1::2, ::3]
    x.flags.writeable = False
    for mode in MODES:
        np.testing.assert_array_equal(
            F.pad2d(x, 1, mode), ref_pad(np.ascontiguousarray(x), 1, mode)
        )
    np.testing.assert_array_equal(F.pad2d([[[[1.0]]]], (1, 0, 0, 0)), [[[[0.0, 1.0]]]])


# ------------------------------------------------------------------------------------------
# Hypothesis sweep and PyTorch cross-checks
# ------------------------------------------------------------------------------------------


@st.composite
def pad_case(draw):
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    mode = draw(st.sampled_from(MODES))
    if mode == "constant":
        pads = [draw(st.integers(-n, 5)) for n in (w, w, h, h)]
        for a, b, n in ((0, 1, w), (2, 3, h)):  # crop at most the whole axis
            if n + min(pads[a], 0) + min(pads[b], 0) < 0:
                pads[b] = max(pads[b], 0)
    else:
        limit = {"replicate": 6, "reflect": None, "circular": None}[mode]
        pads = []
        for n in (w, w, h, h):
            hi = limit if limit is not None else (n - 1 if mode == "reflect" else n)
            pads.append(draw(st.integers(0, hi)))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w), tuple(pads), mode


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pad_case(), seed=st.integers(0, 2**16))
def test_hypothesis_pad(case, seed):
    shape, padding, mode = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y = F.pad2d(x, padding, mode)
    np.testing.assert_array_equal(y, ref_pad(x, padding, mode))
    g = rng.standard_normal(y.shape)
    np.testing.assert_allclose(
        F.pad2d_backward(g, padding, mode), ref_pad_backward(g, padding, mode), **tol(np.float64)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,padding,mode", ALL, ids=[_id(c) for c in ALL])
def test_torch_pad(shape, padding, mode, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(dtype)
    value = -1.25 if mode == "constant" else None
    y = F.pad2d(x, padding, mode, value or 0.0)
    g = rng.standard_normal(y.shape).astype(dtype)
    t = torch.from_numpy(x).requires_grad_()
    kwargs = {"value": value} if mode == "constant" else {}
    ty = torch.nn.functional.pad(t, sides(padding), mode=mode, **kwargs)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(F.pad2d_backward(g, padding, mode), t.grad.numpy(), **tol(dtype))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pad_case(), seed=st.integers(0, 2**16))
def test_hypothesis_pad_against_torch(case, seed):
    torch = pytest.importorskip("torch")
    shape, padding, mode = case
    x = np.random.default_rng(seed).standard_normal(shape)
    ty = torch.nn.functional.pad(torch.from_numpy(x), padding, mode=mode)
    np.testing.assert_array_equal(F.pad2d(x, padding, mode), ty.numpy())
