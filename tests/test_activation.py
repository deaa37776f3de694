"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax and their backward passes."""

import warnings

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnncore
import cnncore.functional as F

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------------------------------
# Naive references (float64, element by element / slice by slice)
# ------------------------------------------------------------------------------------------


def _elementwise(fn, x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    flat_x, flat_o = x.reshape(-1), out.reshape(-1)
    for i in range(flat_x.size):
        flat_o[i] = fn(float(flat_x[i]))
    return out


def ref_relu(x):
    return _elementwise(lambda v: v if v > 0 else 0.0, x)


def ref_leaky_relu(x, slope=0.01):
    return _elementwise(lambda v: v if v > 0 else v * slope, x)


def ref_sigmoid(x):
    def s(v):
        if v >= 0:
            return 1.0 / (1.0 + np.exp(-v))
        e = np.exp(v)
        return e / (1.0 + e)

    return _elementwise(s, x)


def ref_tanh(x):
    return _elementwise(lambda v: float(np.tanh(v)), x)


def _slices(shape, dim):
    """Index tuples of every 1-D slice along ``dim``."""
    other = [range(s) if i != dim else [slice(None)] for i, s in enumerate(shape)]
    return list(np.ndindex(*[len(o) for o in other])), other


def _per_slice(x, dim, fn, *more):
    x = np.asarray(x, dtype=np.float64)
    more = [np.asarray(m, dtype=np.float64) for m in more]
    dim %= x.ndim
    out = np.empty_like(x)
    idxs, other = _slices(x.shape, dim)
    for idx in idxs:
        key = tuple(other[i][j] for i, j in enumerate(idx))
        out[key] = fn(x[key], *[m[key] for m in more])
    return out


def ref_softmax(x, dim):
    def f(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    return _per_slice(x, dim, f)


def ref_log_softmax(x, dim):
    def f(v):
        m = v.max()
        return (v - m) - np.log(np.exp(v - m).sum())

    return _per_slice(x, dim, f)


def ref_softmax_backward(g, y, dim):
    return _per_slice(g, dim, lambda gv, yv: yv * (gv - (gv * yv).sum()), y)


def ref_log_softmax_backward(g, y, dim):
    return _per_slice(g, dim, lambda gv, yv: gv - np.exp(yv) * gv.sum(), y)


ELEMENTWISE = {
    "relu": (F.relu, ref_relu),
    "leaky_relu": (F.leaky_relu, ref_leaky_relu),
    "sigmoid": (F.sigmoid, ref_sigmoid),
    "tanh": (F.tanh, ref_tanh),
}

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4, 5), (2, 0, 3)]


def _data(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------------------------------
# Forward values against the references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_matches_reference(name, shape, dtype, rng):
    fn, ref = ELEMENTWISE[name]
    x = _data(rng, shape, dtype)
    y = fn(x)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(y, ref(x), **tol(dtype))


def test_leaky_relu_slope(rng):
    x = _data(rng, (50,), np.float64)
    np.testing.assert_allclose(F.leaky_relu(x, 0.2), ref_leaky_relu(x, 0.2), rtol=1e-15)
    np.testing.assert_allclose(F.leaky_relu(x, negative_slope=-1.5), ref_leaky_relu(x, -1.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,dim",
    [
        ((4, 9), 1),
        ((4, 9), 0),
        ((4, 9), -1),
        ((2, 3, 5), 1),
        ((2, 3, 5), -3),
        ((2, 3, 4, 5), 1),
        ((2, 3, 4, 5), 3),
        ((2, 300, 3), 2),
        ((3, 2, 200), 1),
        ((6,), 0),
        ((1, 1), 1),
        ((2, 1, 3), 1),
    ],
)
def test_softmax_matches_reference(shape, dim, dtype, rng):
    x = _data(rng, shape, dtype)
    y = F.softmax(x, dim)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref_softmax(x, dim), **tol(dtype))
    np.testing.assert_allclose(y.sum(axis=dim), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-13)
    ly = F.log_softmax(x, dim=dim)
    np.testing.assert_allclose(ly, ref_log_softmax(x, dim), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_empty_and_scalar(dtype):
    for shape, dim in [((0, 3), 1), ((3, 0), 1), ((2, 0, 4), 0)]:
        x = np.ones(shape, dtype)
        assert F.softmax(x, dim).shape == shape
        assert F.log_softmax(x, dim).shape == shape
    y = F.softmax(np.array(2.5, dtype), 0)
    assert y.shape == () and y == 1
    assert F.log_softmax(np.array(2.5, dtype), -1) == 0


# ------------------------------------------------------------------------------------------
# Backward values against the references and finite differences
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_backward_matches_reference(dtype, rng):
    x = _data(rng, (4, 6, 5), dtype)
    g = _data(rng, x.shape, dtype, 1.0)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    t = tol(dtype)
    np.testing.assert_allclose(F.relu_backward(g, F.relu(x)), np.where(x64 > 0, g64, 0), **t)
    np.testing.assert_allclose(F.relu_backward(g, x), np.where(x64 > 0, g64, 0), **t)
    np.testing.assert_allclose(
        F.leaky_relu_backward(g, x, 0.1), np.where(x64 > 0, g64, 0.1 * g64), **t
    )
    s = ref_sigmoid(x64)
    # d sigmoid / dx = s (1 - s)  (not s (1 - s)^2)
    np.testing.assert_allclose(F.sigmoid_backward(g, s.astype(dtype)), g64 * s * (1 - s), **t)
    th = np.tanh(x64)
    np.testing.assert_allclose(F.tanh_backward(g, th.astype(dtype)), g64 * (1 - th * th), **t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,dim", [((4, 9), 1), ((4, 9), 0), ((2, 3, 4, 5), 1), ((3, 2, 200), 1), ((5, 17), -1)]
)
def test_softmax_backward_matches_reference(shape, dim, dtype, rng):
    x = _data(rng, shape, dtype)
    g = _data(rng, shape, dtype, 1.0)
    y = F.softmax(x, dim)
    np.testing.assert_allclose(
        F.softmax_backward(g, y, dim), ref_softmax_backward(g, y, dim), **tol(dtype)
    )
    ly = F.log_softmax(x, dim)
    np.testing.assert_allclose(
        F.log_softmax_backward(g, ly, dim), ref_log_softmax_backward(g, ly, dim), **tol(dtype)
    )


def _numeric_vjp(f, x, g, eps=1e-6):
    """Central differences of ``sum(g * f(x))`` with respect to every element of ``x``."""
    grad = np.empty_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = np.sum(g * f(x))
        flat[i] = old - eps
        fm = np.sum(g * f(x))
        flat[i] = old
        grad.reshape(-1)[i] = (fp - fm) / (2 * eps)
    return grad


FD = dict(atol=1e-5, rtol=1e-3)


def _away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)  # keep relu's kink out of the eps stencil


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_elementwise_gradient_finite_differences(name, rng):
    x = _away_from_zero(rng, (3, 4)) * 2
    g = rng.standard_normal(x.shape)
    fwd = {
        "relu": F.relu,
        "leaky_relu": lambda v: F.leaky_relu(v, 0.3),
        "sigmoid": F.sigmoid,
        "tanh": F.tanh,
    }[name]
    analytic = {
        "relu": lambda: F.relu_backward(g, F.relu(x)),
        "leaky_relu": lambda: F.leaky_relu_backward(g, x, 0.3),
        "sigmoid": lambda: F.sigmoid_backward(g, F.sigmoid(x)),
        "tanh": lambda: F.tanh_backward(g, F.tanh(x)),
    }[name]()
    np.testing.assert_allclose(analytic, _numeric_vjp(fwd, x.copy(), g), **FD)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_gradient_finite_differences(dim, log, rng):
    x = rng.standard_normal((3, 4, 2))
    g = rng.standard_normal(x.shape)
    if log:
        analytic = F.log_softmax_backward(g, F.log_softmax(x, dim), dim)
        numeric = _numeric_vjp(lambda v: F.log_softmax(v, dim), x.copy(), g)
    else:
        analytic = F.softmax_backward(g, F.softmax(x, dim), dim)
        numeric = _numeric_vjp(lambda v: F.softmax(v, dim), x.copy(), g)
    np.testing.assert_allclose(analytic, numeric, **FD)


# ------------------------------------------------------------------------------------------
# PyTorch cross-checks (values and autograd gradients)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax"]
)
@pytest.mark.parametrize(
    "shape,dim", [((5, 7), 1), ((2, 3, 4, 5), 1), ((3, 40, 2), -1), ((2, 3, 70), 0)]
)
def test_matches_torch(name, shape, dim, dtype, rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = _data(rng, shape, dtype)
    g = _data(rng, shape, dtype, 1.0)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    if name in ("softmax", "log_softmax"):
        ty = getattr(tf, name)(tx, dim)
        y = getattr(F, name)(x, dim)
        gx = getattr(F, name + "_backward")(g, y, dim)
    else:
        ty = {
            "relu": tf.relu,
            "leaky_relu": lambda v: tf.leaky_relu(v, 0.05),
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
        }[name](tx)
        if name == "leaky_relu":
            y = F.leaky_relu(x, 0.05)
            gx = F.leaky_relu_backward(g, x, 0.05)
        else:
            y = getattr(F, name)(x)
            gx = getattr(F, name + "_backward")(g, y)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol(dtype))


def test_relu_special_values_match_torch():
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, -1.0, 2.0])
    np.testing.assert_array_equal(F.relu(x), torch.relu(torch.from_numpy(x)).numpy())
    assert np.signbit(F.relu(x)[1]) == np.signbit(torch.relu(torch.from_numpy(x))[1].item())


# ------------------------------------------------------------------------------------------
# Extreme values: no overflow, no warnings, exact saturation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_tanh_saturate_exactly_without_warnings(dtype):
    x = np.array([-1000.0, 1000.0, -1e30, 1e30, -np.inf, np.inf, -100.0, 100.0, 0.0], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        s = F.sigmoid(x)
        t = F.tanh(x)
    assert s[0] == 0.0 and s[1] == 1.0 and s[2] == 0.0 and s[3] == 1.0
    assert s[4] == 0.0 and s[5] == 1.0 and s[8] == 0.5
    assert s[7] == 1.0 and 0 <= s[6] < 1e-40
    np.testing.assert_array_equal(t[:6], [-1, 1, -1, 1, -1, 1])
    assert t[8] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_tanh_accuracy_over_range(dtype):
    x = np.concatenate(
        [np.linspace(-120, 120, 20001), np.geomspace(1e-30, 1, 200), -np.geomspace(1e-30, 1, 200)]
    ).astype(dtype)
    x64 = x.astype(np.float64)
    ref_s = ref_sigmoid(x64)
    ulp = np.finfo(dtype).eps
    # relative error of a few ulp, including the subnormal tail of sigmoid (float32 < -87)
    np.testing.assert_allclose(
        F.sigmoid(x), ref_s, rtol=8 * ulp, atol=4 * np.finfo(dtype).smallest_subnormal
    )
    np.testing.assert_allclose(F.tanh(x), np.tanh(x64), rtol=8 * ulp, atol=0)
    tiny = np.array([1e-30, -1e-30], dtype=dtype)
    np.testing.assert_array_equal(F.tanh(tiny), tiny)  # relatively exact near 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(dtype):
    x = np.array([np.nan, 1.0], dtype=dtype)
    assert np.isnan(F.sigmoid(x)[0]) and np.isnan(F.tanh(x)[0])
    assert np.isnan(F.leaky_relu(x)[0]) and np.isnan(F.relu(x)[0])
    assert np.isnan(F.softmax(np.array([[1.0, np.nan]], dtype))).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits_stable(dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4, -1e4, -1e4]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = F.softmax(x, 1)
        ly = F.log_softmax(x, 1)
    assert np.isfinite(y).all() and np.isfinite(ly).all()
    np.testing.assert_allclose(ly, ref_log_softmax(x, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[1], 0.25, rtol=1e-6)
    assert ly[0, 1] == pytest.approx(-2e4 - np.log1p(np.exp(-1.0)), rel=1e-6)


# ------------------------------------------------------------------------------------------
# out= and in-place use
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_out_in_place(name, dtype, rng):
    fn, ref = ELEMENTWISE[name]
    x = _data(rng, (3, 70000), dtype)  # several parallel blocks
    expected = fn(x)
    buf = x.copy()
    res = fn(buf, out=buf)
    assert res is buf
    np.testing.assert_array_equal(buf, expected)
    other = np.empty_like(x)
    assert fn(x, out=other) is other
    np.testing.assert_array_equal(other, expected)


@pytest.mark.parametrize("dim", [1, 0])
def test_softmax_out_in_place(dim, rng):
    x = rng.standard_normal((30, 40))
    expected, lexpected = F.softmax(x, dim), F.log_softmax(x, dim)
    buf = x.copy()
    assert F.softmax(buf, dim, out=buf) is buf
    np.testing.assert_array_equal(buf, expected)
    buf = x.copy()
    F.log_softmax(buf, dim, out=buf)
    np.testing.assert_array_equal(buf, lexpected)


def test_backward_out_may_alias_inputs(rng):
    x = rng.standard_normal((5, 33))
    g = rng.standard_normal(x.shape)
    for fwd, bwd in [
        (F.sigmoid, F.sigmoid_backward),
        (F.tanh, F.tanh_backward),
        (F.relu, F.relu_backward),
        (F.softmax, F.softmax_backward),
        (F.log_softmax, F.log_softmax_backward),
    ]:
        y = fwd(x)
        expected = bwd(g, y)
        gg = g.copy()
        assert bwd(gg, y, out=gg) is gg
        np.testing.assert_array_equal(gg, expected)
        yy = y.copy()
        bwd(g, yy, out=yy)
        np.testing.assert_array_equal(yy, expected)
    gg = g.copy()
    F.leaky_relu_backward(gg, x, 0.2, out=gg)
    np.testing.assert_array_equal(gg, F.leaky_relu_backward(g, x, 0.2))


def test_out_partially_overlapping_input(rng):
    base = rng.standard_normal(100)
    x = base[:90].copy()
    buf = base.copy()
    F.sigmoid(buf[:90], out=buf[10:])  # overlaps, shifted: read from a copy
    np.testing.assert_allclose(buf[10:], ref_sigmoid(x), rtol=1e-14)
    buf = base.reshape(10, 10).copy()
    F.softmax(buf[:, ::-1], 1, out=buf)  # same memory, different layout
    np.testing.assert_allclose(buf, ref_softmax(base.reshape(10, 10)[:, ::-1], 1), rtol=1e-13)


def test_accepts_noncontiguous_readonly_and_lists(rng):
    x = rng.standard_normal((6, 8))
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(F.tanh(ro), F.tanh(x))
    np.testing.assert_array_equal(F.tanh(x[:, ::2]), F.tanh(np.ascontiguousarray(x[:, ::2])))
    np.testing.assert_array_equal(F.softmax(x.T, 1), F.softmax(np.ascontiguousarray(x.T), 1))
    np.testing.assert_array_equal(F.relu([[-1.0, 2.0]]), [[0.0, 2.0]])
    assert cnncore.relu is F.relu and cnncore.log_softmax_backward is F.log_softmax_backward


# ------------------------------------------------------------------------------------------
# Bad inputs: exception type and the argument named in the message
# ------------------------------------------------------------------------------------------

_X = np.zeros((2, 3))
_X32 = np.zeros((2, 3), np.float32)

BAD = [
    (lambda: F.relu(np.zeros(3, np.int64)), TypeError, "x"),
    (lambda: F.sigmoid(np.zeros(3, np.float16)), TypeError, "x"),
    (lambda: F.tanh(None), TypeError, "x"),
    (lambda: F.leaky_relu(_X, "0.1"), TypeError, "negative_slope"),
    (lambda: F.leaky_relu(_X, True), TypeError, "negative_slope"),
    (lambda: F.softmax(_X, 2), ValueError, "dim"),
    (lambda: F.softmax(_X, -3), ValueError, "dim"),
    (lambda: F.log_softmax(_X, 1.0), TypeError, "dim"),
    (lambda: F.softmax(np.zeros(3, np.int32), 0), TypeError, "x"),
    (lambda: F.relu(_X, out=np.zeros((2, 3), np.float32)), TypeError, "out"),
    (lambda: F.relu(_X, out=np.zeros((3, 2))), ValueError, "out"),
    (lambda: F.relu(_X, out=np.zeros((2, 6))[:, ::2]), ValueError, "out"),
    (lambda: F.relu(_X, out=[[0.0] * 3] * 2), TypeError, "out"),
    (lambda: F.sigmoid(_X, out=np.zeros(6)), ValueError, "out"),
    (lambda: F.softmax(_X, 1, out=np.zeros((2, 3), np.float32)), TypeError, "out"),
    (lambda: F.relu_backward(_X, _X32), TypeError, "output"),
    (lambda: F.sigmoid_backward(_X, np.zeros((3, 2))), ValueError, "grad_output"),
    (lambda: F.tanh_backward(np.zeros(3, np.int64), np.zeros(3)), TypeError, "grad_output"),
    (lambda: F.leaky_relu_backward(_X, np.zeros((2, 2))), ValueError, "grad_output"),
    (lambda: F.leaky_relu_backward(_X, _X, None), TypeError, "negative_slope"),
    (lambda: F.softmax_backward(_X, _X, 5), ValueError, "dim"),
    (lambda: F.log_softmax_backward(_X32, _X), TypeError, "output"),
    (lambda: F.softmax_backward(_X, np.zeros((2, 4))), ValueError, "grad_output"),
    (lambda: F.tanh_backward(_X, _X, out=np.zeros((2, 3), np.float32)), TypeError, "out"),
]


def _readonly_out():
    out = np.zeros((2, 3))
    out.flags.writeable = False
    return F.relu(_X, out=out)


BAD.append((_readonly_out, ValueError, "out"))


@pytest.mark.parametrize("call,exc,name", BAD)
def test_bad_inputs(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# ------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------

_finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    x=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=_finite
    ),
    data=st.data(),
)
def test_property_softmax(x, data):
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    y = F.softmax(x, dim)
    np.testing.assert_allclose(y, ref_softmax(x, dim), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.exp(F.log_softmax(x, dim)), y, rtol=1e-12, atol=1e-300)


@settings(max_examples=40, deadline=None)
@given(
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=7),
        elements=st.floats(-1e3, 1e3, allow_nan=False, width=32),
    )
)
def test_property_elementwise(x):
    for name, (fn, ref) in ELEMENTWISE.items():
        np.testing.assert_allclose(
            fn(x), ref(x), rtol=1e-5 if x.dtype == np.float32 else 1e-13, atol=1e-38, err_msg=name
        )


# ------------------------------------------------------------------------------------------
# Determinism across thread counts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_threads(dtype, rng):
    x = _data(rng, (3, 50000), dtype)
    g = _data(rng, x.shape, dtype, 1.0)
    x3 = _data(rng, (4, 50, 700), dtype)
    g3 = _data(rng, x3.shape, dtype, 1.0)

    def compute():
        sm = F.softmax(x3, 1)
        lsm = F.log_softmax(x3, 2)
        return [
            F.relu(x),
            F.leaky_relu(x),
            F.sigmoid(x),
            F.tanh(x),
            F.sigmoid_backward(g, x),
            F.tanh_backward(g, x),
            F.relu_backward(g, x),
            F.leaky_relu_backward(g, x),
            sm,
            lsm,
            F.softmax(x, 1),
            F.softmax_backward(g3, sm, 1),
            F.log_softmax_backward(g3, lsm, 2),
        ]

    assert_bit_identical_across_threads(compute)
