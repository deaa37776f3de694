"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax, gelu, silu, elu,
hardswish, hardsigmoid, softplus, mish, relu6, dropout2d and their backward passes."""

import math
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


# ------------------------------------------------------------------------------------------
# gelu, silu, elu, hardswish, hardsigmoid, softplus, mish, relu6 (backward from the input)
# ------------------------------------------------------------------------------------------

# name -> (cnncore kwargs, torch.nn.functional name and kwargs)
INPUT_ACTS = {
    "gelu": ({}, "gelu", {}),
    "gelu_tanh": ({"approximate": "tanh"}, "gelu", {"approximate": "tanh"}),
    "silu": ({}, "silu", {}),
    "elu": ({"alpha": 0.7}, "elu", {"alpha": 0.7}),
    "hardswish": ({}, "hardswish", {}),
    "hardsigmoid": ({}, "hardsigmoid", {}),
    "softplus": ({"beta": 1.5, "threshold": 4.0}, "softplus", {"beta": 1.5, "threshold": 4.0}),
    "mish": ({}, "mish", {}),
    "relu6": ({}, "relu6", {}),
}


def _fn(name):
    return name.replace("_tanh", "")


def _ours(name, x, g=None, **out):
    kw = INPUT_ACTS[name][0]
    if g is None:
        return getattr(F, _fn(name))(x, **kw, **out)
    return getattr(F, _fn(name) + "_backward")(g, x, **kw, **out)


def _torch_pair(torch, name, x, g, kw=None):
    """torch's forward value and input gradient (autograd) at ``x``."""
    _, tname, tkw = INPUT_ACTS[name]
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = getattr(torch.nn.functional, tname)(tx, **(tkw if kw is None else kw))
    ty.backward(torch.from_numpy(g.copy()))
    return ty.detach().numpy(), tx.grad.numpy()


def _torch_tol(name, dtype, backward):
    if dtype == np.float32:
        return dict(rtol=2e-4, atol=2e-6)
    if backward and name == "hardsigmoid":  # torch scales float64 by the float32 1/6
        return dict(rtol=1e-7, atol=0)
    return dict(rtol=1e-10, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=4, max_side=6),
        elements=st.floats(-30, 30, allow_nan=False, width=32),
    ),
    name=st.sampled_from(sorted(INPUT_ACTS)),
    seed=st.integers(0, 2**16),
)
def test_input_activations_match_torch(x, name, seed):
    """Forward values and autograd input gradients of torch on random shapes and values."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    ty, tg = _torch_pair(torch, name, x, g)
    y, gx = _ours(name, x), _ours(name, x, g)
    assert y.dtype == x.dtype and gx.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ty, **_torch_tol(name, x.dtype, False))
    np.testing.assert_allclose(gx, tg, **_torch_tol(name, x.dtype, True))


@pytest.mark.parametrize(
    "name,kw",
    [
        ("elu", {"alpha": -0.4}),
        ("elu", {"alpha": 2.5}),
        ("softplus", {"beta": 0.5, "threshold": 20.0}),
        ("softplus", {"beta": -2.0, "threshold": 1.0}),
        ("softplus", {"beta": 3.0, "threshold": -1.0}),
        ("softplus", {"beta": 1.0, "threshold": np.inf}),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_parameters_match_torch(name, kw, dtype, rng):
    torch = pytest.importorskip("torch")
    x = _data(rng, (4, 300), dtype, 6.0)
    g = _data(rng, x.shape, dtype, 1.0)
    ty, tg = _torch_pair(torch, name, x, g, kw)
    y = getattr(F, name)(x, **kw)
    gx = getattr(F, name + "_backward")(g, x, **kw)
    np.testing.assert_allclose(y, ty, **_torch_tol(name, dtype, False))
    np.testing.assert_allclose(gx, tg, **_torch_tol(name, dtype, True))


_EDGES = [0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, 6.0, -6.0, 20.0, -20.0, 40.0, -40.0, 1e4, -1e4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(INPUT_ACTS))
def test_edge_values_match_torch(name, dtype):
    """At 0, the kinks (+-3, 6), large |x|, +-inf and NaN: torch's values and gradients,
    except where torch's result is less accurate -- underflowing tails (cnncore keeps
    e.g. gelu(-6) = -5.9e-9 in float32 where torch rounds to 0) -- or not the limit (mish's
    gradient at +inf is 1, torch's NaN; float32 gelu(+inf) is inf, torch's NaN)."""
    torch = pytest.importorskip("torch")
    x = np.array([*_EDGES, np.inf, -np.inf, np.nan], dtype)
    g = np.ones_like(x)
    ty, tg = _torch_pair(torch, name, x, g)
    y, gx = _ours(name, x), _ours(name, x, g)
    with np.errstate(all="ignore"):
        fwd = ~((name == "gelu") & (x == np.inf))
        np.testing.assert_allclose(y[fwd], ty[fwd], rtol=2e-4, atol=1e-7, equal_nan=True)
        bwd = ~((name == "mish") & (x == np.inf))
        np.testing.assert_allclose(gx[bwd], tg[bwd], rtol=2e-4, atol=1e-7, equal_nan=True)
    assert np.isnan(y[-1])  # NaN propagates through every forward
    if name == "gelu":
        assert y[x == np.inf] == np.inf
    if name == "mish":
        assert gx[x == np.inf] == 1.0


def test_hardswish_relu6_kinks_follow_torch():
    """The one-sided choices at the kinks, as torch: hardswish' is 0 at -3 and 1 at 3;
    hardsigmoid' and relu6' are 0 at their kinks; elu' is alpha at 0."""
    x = np.array([-3.0, 3.0, 0.0, 6.0])
    g = np.ones_like(x)
    np.testing.assert_array_equal(F.hardswish_backward(g, x), [0.0, 1.0, 0.5, 1.0])
    np.testing.assert_array_equal(F.hardsigmoid_backward(g, x), [0.0, 0.0, 1 / 6, 0.0])
    np.testing.assert_array_equal(F.relu6_backward(g, x), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(F.elu_backward(g[:1], np.array([0.0]), alpha=0.3), [0.3])


@pytest.mark.parametrize("name", sorted(INPUT_ACTS))
def test_input_activations_finite_differences(name, rng):
    x = _data(rng, (3, 7), np.float64, 2.0)
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01  # keep away from the kinks
    x[np.abs(x) < 1e-3] += 0.01
    g = rng.standard_normal(x.shape)
    num = _numeric_vjp(lambda v: _ours(name, v), x, g)
    np.testing.assert_allclose(_ours(name, x, g), num, rtol=1e-6, atol=1e-8)


def test_gelu_is_relatively_accurate_in_both_tails():
    """Phi(x) is computed from erfc, not as 1 + erf(x): relative accuracy far into the
    negative tail (torch's float64 gelu(-20) is -0.0, its float32 gelu(-6) too)."""
    x = np.array([-35.0, -20.0, -10.0, -6.0, -3.0, -1.0, -1e-3, 1e-3, 1.0, 3.0, 10.0])
    ref = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(F.gelu(x), ref, rtol=2e-13)
    x32 = x[2:].astype(np.float32)  # gelu(-20) underflows float32
    ref32 = np.array([float(v) * 0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x32])
    np.testing.assert_allclose(F.gelu(x32), ref32, rtol=5e-6)


# ------------------------------------------------------------------------------------------
# Accuracy of the vectorized math (src/_vmath.pxd) over wide ranges: the bounds below are the
# measured maxima (documented in the functions' Notes) with a little headroom.
# ------------------------------------------------------------------------------------------

# max error in ulp of the result (forward) / of the largest term of the derivative (backward;
# its terms cancel where the derivative crosses zero, e.g. silu' at x = -1.278)
_ULP_BOUNDS = {
    "sigmoid": (3, None),
    "tanh": (3, None),
    "gelu": (6, 6),
    "silu": (4, 5),
    "elu": (1.5, 1.5),
    "softplus": (3, 3),
    "mish": (5, 6),
}


def _wide_x(dtype):
    """Both signs, magnitudes 1e-30 .. 1e4 (log-spaced), dense on [-20, 20], and 0, -0."""
    m = np.geomspace(1e-30, 1e4, 3000)
    return np.unique(np.concatenate([m, -m, np.linspace(-20, 20, 40001), [0.0]])).astype(dtype)


def _float64_refs(x):
    """(forward, derivative, largest term of the derivative) in float64 (scipy.special)."""
    special = pytest.importorskip("scipy.special")
    with np.errstate(all="ignore"):
        s, sn = special.expit(x), special.expit(-x)
        sp = np.logaddexp(0.0, x)
        r, sech2 = np.tanh(sp), 1 / np.cosh(sp) ** 2
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        phi = special.ndtr(x)
        return {
            "sigmoid": (s, None, None),
            "tanh": (np.tanh(x), None, None),
            "gelu": (x * phi, phi + x * pdf, np.maximum(phi, np.abs(x * pdf))),
            "silu": (x * s, s + x * s * sn, np.maximum(s, np.abs(x * s * sn))),
            "elu": (np.where(x > 0, x, np.expm1(x)), np.where(x > 0, 1.0, np.exp(x)), 0 * x),
            "softplus": (np.where(x > 20, x, sp), np.where(x > 20, 1.0, s), 0 * x),
            "mish": (x * r, r + x * s * sech2, np.maximum(r, np.abs(x * s * sech2))),
        }


def _ulp_error(got, ref, scale, dtype, x=None):
    """|got - ref| in ulp of max(|ref|, scale) at ``dtype``.  Results below the normal range,
    and (given ``x``) those whose factor exp(x) is subnormal (silu / mish: x * sigmoid(x)
    for x < -87 in float32) count as 0 here: their absolute error is checked separately."""
    size = np.maximum(np.abs(ref), scale)
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - ref) / np.spacing(size.astype(dtype)).astype(float)
    err[(got == ref) | (size < np.finfo(dtype).tiny)] = 0
    if x is not None:
        err[x < np.log(np.finfo(dtype).tiny)] = 0
    return err


def _check_subnormal_tail(got, ref, scale, x, dtype, name):
    """Where the ulp check is off (see :func:`_ulp_error`): within 40 (1 + |x|) of the
    smallest subnormal."""
    tiny = np.finfo(dtype)
    off = (np.maximum(np.abs(ref), scale) < tiny.tiny) | (x < np.log(tiny.tiny))
    off &= np.isfinite(ref)
    err = np.abs(got[off].astype(np.float64) - ref[off])
    assert np.all(err <= 40 * (1 + np.abs(x[off])) * tiny.smallest_subnormal), name


def test_vmath_float32_accuracy_over_wide_ranges():
    """float32 against float64 references on ~46k points in +-1e4 (measured maxima: sigmoid
    2.4, tanh 2.5, gelu 4.2 / 4.5, silu 3.0 / 3.1, elu 0.9 / 0.9, softplus 1.9 / 2.4, mish
    3.7 / 4.3 ulp); results in the subnormal range, or with a subnormal factor exp(x), within
    40 (1 + |x|) * 2**-149; gelu(tanh) within 4 + 2 |2u| ulp (the rounding of
    u = sqrt(2/pi) (x + 0.044715 x^3) in float)."""
    x = _wide_x(np.float32)
    xd = x.astype(np.float64)
    g = np.ones_like(x)
    for name, (fwd, bwd, scale) in _float64_refs(xd).items():
        y = getattr(F, name)(x)
        err = _ulp_error(y, fwd, 0, np.float32, xd)
        assert err.max() <= _ULP_BOUNDS[name][0], (name, xd[np.argmax(err)], err.max())
        _check_subnormal_tail(y, fwd, 0, xd, np.float32, name)
        if bwd is not None:
            gx = getattr(F, name + "_backward")(g, x)
            err = _ulp_error(gx, bwd, scale, np.float32, xd)
            assert err.max() <= _ULP_BOUNDS[name][1], (name, xd[np.argmax(err)], err.max())
            _check_subnormal_tail(gx, bwd, scale, xd, np.float32, name)
    special = pytest.importorskip("scipy.special")
    with np.errstate(all="ignore"):
        u2 = 2 * math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)
        ref = xd * special.expit(u2)
        got = F.gelu(x, "tanh")
        err = _ulp_error(got, ref, 0, np.float32)
    # past 2u = -87 (exp(2u) would be subnormal) the result is x * 0: |true value| < 2e-37
    flushed = u2 < -87
    assert np.all(err[~flushed] <= 4 + 2 * np.abs(u2[~flushed]))
    assert np.all(got[flushed] == 0) and np.all(np.signbit(got[flushed]))
    assert np.abs(ref[flushed]).max() < 2e-37


def test_vmath_float64_accuracy_against_mpmath():
    """float64 against 40-digit mpmath on 1000 points in +-40 and magnitudes 1e-300 .. 700
    (measured maxima: sigmoid 2.1, tanh 2.3, gelu 5.0 / 4.2, silu 2.8 / 3.0, elu 0.7 / 0.7,
    softplus 2.2 / 2.1, mish 2.9 / 4.2 ulp)."""
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    m = np.geomspace(1e-300, 700, 150)
    x = np.unique(np.concatenate([rng.uniform(-40, 40, 700), m, -m]))
    g = np.ones_like(x)
    with mp.workdps(40):

        def sig(v):
            return 1 / (1 + mp.exp(-v))

        def phi(v):
            return mp.erfc(-v / mp.sqrt(2)) / 2

        def pdf(v):
            return mp.exp(-v * v / 2) / mp.sqrt(2 * mp.pi)

        def sp(v):
            return mp.log1p(mp.exp(v))

        def mish_terms(v):
            return mp.tanh(sp(v)), v * sig(v) / mp.cosh(sp(v)) ** 2

        refs = {
            "sigmoid": (sig, None),
            "tanh": (mp.tanh, None),
            "gelu": (lambda v: v * phi(v), lambda v: (phi(v), v * pdf(v))),
            "silu": (lambda v: v * sig(v), lambda v: (sig(v), v * sig(v) * (1 - sig(v)))),
            "elu": (lambda v: v if v > 0 else mp.expm1(v), lambda v: (1 if v > 0 else mp.exp(v),)),
            "softplus": (lambda v: v if v > 20 else sp(v), lambda v: (1 if v > 20 else sig(v),)),
            "mish": (lambda v: v * mish_terms(v)[0], mish_terms),
        }
        for name, (fwd, terms) in refs.items():
            y = getattr(F, name)(x)
            ref = np.array([float(fwd(mp.mpf(v))) for v in x])
            assert _ulp_error(y, ref, 0, np.float64).max() <= _ULP_BOUNDS[name][0], name
            if terms is not None:
                gx = getattr(F, name + "_backward")(g, x)
                parts = [terms(mp.mpf(v)) for v in x]
                ref = np.array([float(mp.fsum(p)) for p in parts])
                scale = np.array([float(max(abs(t) for t in p)) for p in parts])
                assert _ulp_error(gx, ref, scale, np.float64).max() <= _ULP_BOUNDS[name][1], name


@pytest.mark.parametrize("dtype", DTYPES)
def test_vmath_special_values(dtype):
    """-0.0 keeps its sign where the function is odd at 0 (x * f(x)), as torch (elu(-0.0)
    was +0.0); +-inf saturate; NaN propagates (forward and backward)."""
    x = np.array([-0.0, np.inf, -np.inf, np.nan], dtype)
    for name in ("gelu", "silu", "elu", "mish", "hardswish"):
        y = getattr(F, name)(x)
        assert y[0] == 0 and np.signbit(y[0]), name
        assert np.isnan(y[3]) and np.isnan(getattr(F, name + "_backward")(x, x)[3]), name
    assert F.gelu(x)[1] == np.inf and F.silu(x)[1] == np.inf and F.mish(x)[1] == np.inf
    assert np.isnan(F.silu(x)[2])  # -inf * sigmoid(-inf), as torch
    assert F.elu(x)[2] == -1 and F.softplus(x)[2] == 0
    assert F.sigmoid(x)[1:3].tolist() == [1, 0] and F.tanh(x)[1:3].tolist() == [1, -1]
    assert np.isnan(F.gelu_backward(np.ones_like(x), x)[1:3]).all()  # inf * pdf, as torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_mish_silu_tails(dtype):
    """Very negative inputs: exp(x)-sized results, relatively accurate; large positive:
    no overflow, no warning."""
    x = np.array([-80.0, -30.0, 30.0, 80.0, 1e30], dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        sp, mi, si = F.softplus(x), F.mish(x), F.silu(x)
    rt = 1e-5 if dtype == np.float32 else 1e-13
    big = np.finfo(dtype).tiny * 1e3
    for got, ref in (
        (sp, [math.log1p(math.exp(v)) if v < 20 else v for v in x.astype(float)]),
        (mi, [v * math.tanh(math.log1p(math.exp(min(v, 30)))) for v in x.astype(float)]),
        (si, [v / (1 + math.exp(-v)) if v > -700 else 0.0 for v in x.astype(float)]),
    ):
        ref = np.array(ref)
        keep = np.abs(ref) > big
        np.testing.assert_allclose(got[keep], ref[keep], rtol=rt)


@pytest.mark.parametrize("name", sorted(INPUT_ACTS))
def test_input_activations_out_in_place(name, rng):
    x = _data(rng, (5, 9), np.float32)
    g = _data(rng, x.shape, np.float32, 1.0)
    y = _ours(name, x)
    gx = _ours(name, x, g)
    buf = x.copy()
    assert _ours(name, buf, out=buf) is buf
    np.testing.assert_array_equal(buf, y)
    for target in ("g", "x"):
        gb, xb = g.copy(), x.copy()
        out = gb if target == "g" else xb
        assert _ours(name, xb, gb, out=out) is out
        np.testing.assert_array_equal(out, gx)


@pytest.mark.parametrize("name", sorted(INPUT_ACTS))
def test_input_activations_leave_inputs_alone(name, rng):
    """No surprise aliasing: without out=, a new array; the input is untouched."""
    x = _data(rng, (4, 6), np.float64)
    before = x.copy()
    y = _ours(name, x)
    assert not np.shares_memory(y, x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_input_activations_bit_identical_across_threads(dtype, rng):
    x = _data(rng, (3, 70000), dtype)
    g = _data(rng, x.shape, dtype, 1.0)

    def compute():
        return [r for name in INPUT_ACTS for r in (_ours(name, x), _ours(name, x, g))]

    assert_bit_identical_across_threads(compute)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: F.gelu(_X, approximate="Tanh"), ValueError, "approximate"),
        (lambda: F.gelu_backward(_X, _X, "exact"), ValueError, "approximate"),
        (lambda: F.softplus(_X, beta=0), ValueError, "beta"),
        (lambda: F.softplus(_X, beta=np.nan), ValueError, "beta"),
        (lambda: F.softplus(_X, threshold=np.nan), ValueError, "threshold"),
        (lambda: F.softplus_backward(_X, _X, beta="1"), TypeError, "beta"),
        (lambda: F.elu(_X, alpha=None), TypeError, "alpha"),
        (lambda: F.silu_backward(_X, _X[:1]), ValueError, "grad_output"),
        (lambda: F.mish_backward(_X, _X.astype(np.float32)), TypeError, "x"),
        (lambda: F.relu6(_X, out=np.zeros((2, 3), np.float32)), TypeError, "out"),
    ],
)
def test_input_activations_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# dropout2d
# ------------------------------------------------------------------------------------------


def _channels_are_dropped_or_scaled(x, y, p):
    planes = y.reshape(x.shape[0] * x.shape[1], -1)
    xs = x.reshape(planes.shape)
    kept = np.array(
        [np.allclose(a, b / (1 - p), rtol=1e-6, atol=0) for a, b in zip(planes, xs, strict=True)]
    )
    dropped = ~planes.any(axis=1)
    assert np.all(kept | dropped)
    return dropped


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout2d_zeroes_whole_channels_at_rate_p(dtype, rng):
    x = _data(rng, (64, 64, 3, 5), dtype) + 10  # no zero element
    p = 0.3
    y, mask = F.dropout2d(x, p, rng=1, return_mask=True)
    dropped = _channels_are_dropped_or_scaled(x, y, p)
    assert abs(dropped.mean() - p) < 0.05  # 4096 channels: std 0.007
    np.testing.assert_array_equal(mask.reshape(-1) == 0, dropped)
    assert mask.dtype == dtype and set(np.unique(mask)) <= {0, dtype(1 / (1 - p))}
    g = _data(rng, x.shape, dtype, 1.0)
    np.testing.assert_array_equal(F.dropout2d_backward(g, mask), g * mask[:, :, None, None])


def test_dropout2d_mask_is_the_documented_draw():
    x = np.ones((3, 5, 2, 2))
    y, mask = F.dropout2d(x, 0.4, rng=7, return_mask=True)
    keep = np.random.default_rng(7).random((3, 5)) >= 0.4
    np.testing.assert_array_equal(mask, keep / 0.6)


def test_dropout2d_modes_and_edge_probabilities(rng):
    x = _data(rng, (2, 3, 4, 4), np.float32)
    y = F.dropout2d(x, 0.5, training=False)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)  # a copy, never the input itself
    np.testing.assert_array_equal(F.dropout2d(x, 0.0, rng=0), x)
    assert not F.dropout2d(x, 1.0, rng=0).any()
    a = F.dropout2d(x, 0.5, rng=3)
    np.testing.assert_array_equal(a, F.dropout2d(x, 0.5, rng=3))  # seeded
    gen = np.random.default_rng(3)
    np.testing.assert_array_equal(a, F.dropout2d(x, 0.5, rng=gen))
    masks = [F.dropout2d(x, 0.5, rng=gen, return_mask=True)[1] for _ in range(8)]
    assert any(not np.array_equal(masks[0], m) for m in masks[1:])  # a Generator advances


def test_dropout2d_three_dims_is_n_c_l_and_in_place(rng):
    x = _data(rng, (6, 7, 11), np.float64) + 20
    with pytest.warns(UserWarning, match=r"\(N, C, L\)"):  # as torch's
        y = F.dropout2d(x, 0.5, rng=2)
    dropped = _channels_are_dropped_or_scaled(x, y, 0.5)
    assert dropped.any() and not dropped.all()
    buf = x.copy()
    with pytest.warns(UserWarning):
        assert F.dropout2d(buf, 0.5, rng=2, out=buf) is buf
    np.testing.assert_array_equal(buf, y)


def test_dropout2d_matches_torch_semantics(rng):
    """torch's dropout2d: channels zeroed or scaled by 1 / (1 - p), the same structure."""
    torch = pytest.importorskip("torch")
    x = _data(rng, (32, 16, 3, 3), np.float32) + 10
    ty = torch.nn.functional.dropout2d(torch.from_numpy(x), 0.25).numpy()
    _channels_are_dropped_or_scaled(x, ty, 0.25)
    _channels_are_dropped_or_scaled(x, F.dropout2d(x, 0.25, rng=0), 0.25)


@pytest.mark.parametrize("shape", [(6, 7, 11), (6, 7), (2, 3, 4, 2, 3)])
def test_dropout2d_other_ranks_warn_and_drop_n_c_slices_as_torch(shape, rng):
    """PyTorch 2.13 reads a 3-D input as (N, C, L) with a warning (not as an unbatched
    (C, H, W)) and takes 2-D and 5-D inputs with a deprecation warning, dropping each (n, c)
    slice whole; cnncore does the same (functional and layer, one warning each)."""
    torch = pytest.importorskip("torch")
    x = _data(rng, shape, np.float64) + 20
    with pytest.warns(UserWarning, match="dropout2d"):
        torch.nn.functional.dropout2d(torch.from_numpy(x), 0.5)
    with pytest.warns(UserWarning, match=f"{len(shape)}-D input") as record:
        y, mask = F.dropout2d(x, 0.5, rng=2, return_mask=True)
    assert len(record) == 1 and record[0].filename == __file__
    assert mask.shape == shape[:2]
    dropped = _channels_are_dropped_or_scaled(x, y, 0.5)
    np.testing.assert_array_equal(dropped, mask.reshape(-1) == 0)
    layer = cnncore.nn.Dropout2d(0.5, rng=2)
    with pytest.warns(UserWarning, match="Dropout2d") as record:
        yl = layer(x)
    assert len(record) == 1 and record[0].filename == __file__
    np.testing.assert_array_equal(yl, y)  # the same draw: the same channel planes
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y / x)
    layer.eval()
    with pytest.warns(UserWarning, match="Dropout2d"):  # torch warns in eval mode too
        assert layer(x) is x


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: F.dropout2d(np.ones(3), 0.5), ValueError, "x"),  # torch: at least 2-D
        (lambda: F.dropout2d(np.float64(1.0), 0.5), ValueError, "x"),
        (lambda: F.dropout2d(np.ones((2, 3, 4)), 1.5), ValueError, "p"),
        (lambda: F.dropout2d(np.ones((2, 3, 4)), 0.5, training=1), TypeError, "training"),
        (lambda: F.dropout2d(np.ones((2, 3, 4)), rng="seed"), TypeError, "rng"),
        (lambda: F.dropout2d_backward(np.ones((2, 3, 4)), np.ones((3, 2))), ValueError, "mask"),
        (
            lambda: F.dropout2d_backward(np.ones((2, 3, 4)), np.ones((2, 3), np.float32)),
            TypeError,
            "mask",
        ),  # fmt: skip
    ],
)
def test_dropout2d_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------

# layer -> (constructor kwargs, torch module, torch kwargs)
LAYERS = {
    "GELU": ({"approximate": "tanh"}, "GELU", {"approximate": "tanh"}),
    "SiLU": ({}, "SiLU", {}),
    "ELU": ({"alpha": 0.5}, "ELU", {"alpha": 0.5}),
    "Hardswish": ({}, "Hardswish", {}),
    "Hardsigmoid": ({}, "Hardsigmoid", {}),
    "Softplus": ({"beta": 2.0, "threshold": 5.0}, "Softplus", {"beta": 2.0, "threshold": 5.0}),
    "Mish": ({}, "Mish", {}),
    "ReLU6": ({}, "ReLU6", {}),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_activation_layers_match_torch_and_save(name, rng, tmp_path):
    torch = pytest.importorskip("torch")
    kw, tname, tkw = LAYERS[name]
    layer = getattr(cnncore.nn, name)(**kw)
    x = _data(rng, (3, 4, 5), np.float32, 4.0)
    g = _data(rng, x.shape, np.float32, 1.0)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = getattr(torch.nn, tname)(**tkw)(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=2e-4, atol=2e-6)
    model = cnncore.nn.Sequential(layer)
    cnncore.nn.save(model, tmp_path / "m.cnn")
    again = cnncore.load(tmp_path / "m.cnn")
    assert repr(again.layers[0]) == repr(layer)
    np.testing.assert_array_equal(again(x), model(x))


def test_relu6_commutes_with_a_following_max_pool(rng):
    """ReLU6 is declared elementwise_monotone: Sequential runs it after the pooling, with
    bit-identical outputs and gradients."""
    x = _data(rng, (2, 3, 8, 8), np.float32, 4.0)
    x[0, 0, :2, :2] = 7.0  # ties in the saturated region
    model = cnncore.nn.Sequential(cnncore.nn.ReLU6(), cnncore.nn.MaxPool2d(2))
    assert model._run_order() == [1, 0]
    relu6, pool = cnncore.nn.ReLU6(), cnncore.nn.MaxPool2d(2)
    y = pool(relu6(x))
    np.testing.assert_array_equal(model(x), y)
    g = _data(rng, y.shape, np.float32, 1.0)
    np.testing.assert_array_equal(model.backward(g), relu6.backward(pool.backward(g)))


def test_dropout2d_layer(rng):
    x = _data(rng, (8, 6, 3, 3), np.float32) + 10
    layer = cnncore.nn.Dropout2d(0.5, rng=0)
    y = layer(x)
    dropped = _channels_are_dropped_or_scaled(x, y, 0.5)
    g = np.ones_like(y)
    gx = layer.backward(g)
    np.testing.assert_array_equal(gx.reshape(48, -1).any(axis=1), ~dropped)
    layer.eval()
    assert layer(x) is x
    np.testing.assert_array_equal(layer.backward(g), g)
    cnncore.nn.init.manual_seed(5)
    a = cnncore.nn.Dropout2d(0.5)(x)
    cnncore.nn.init.manual_seed(5)
    np.testing.assert_array_equal(cnncore.nn.Dropout2d(0.5)(x), a)
    with pytest.raises(ValueError, match="input"):
        cnncore.nn.Dropout2d()(x[0, 0, 0])
    with pytest.raises(ValueError, match="p"):
        cnncore.nn.Dropout2d(1.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_tanh_far_tails_without_subnormal_intermediates(dtype):
    """gelu(tanh) and its gradient take exp(-|2u|) at |2u| <= 87 (float) / 708 (double), so
    no subnormal value is computed (a microcode assist per vector instruction: gelu(tanh)
    of 4 N(0, 1) data ran at 1.7x silu's time).  Past the clamp: forward x * 0 (signed zero;
    the true value is below |x| exp(-87) < 2e-37 in float), gradient 1 or 0; +-inf -> inf /
    NaN and NaN -> NaN as before (and as torch)."""
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([np.linspace(-40, 40, 80001), [-1e4, 1e4]]).astype(dtype)
    xd = x.astype(np.float64)
    u2 = 2 * math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)
    with np.errstate(all="ignore"):
        s, sn = special.expit(u2), special.expit(-u2)
        du2 = 2 * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * xd**2)
        fwd, bwd = xd * s, s + xd * s * sn * du2
    y = F.gelu(x, "tanh")
    gx = F.gelu_backward(np.ones_like(x), x, "tanh")
    lim = 87 if dtype == np.float32 else 708
    tiny = 2e-37 if dtype == np.float32 else 2e-306
    far = np.abs(u2) > lim
    rtol = 1e-4 if dtype == np.float32 else 1e-10  # (u's rounding: ~|2u| ulp)
    np.testing.assert_allclose(y[~far], fwd[~far], rtol=rtol, atol=tiny)
    np.testing.assert_allclose(gx, bwd, rtol=rtol, atol=1e-30)
    neg = far & (u2 < 0)
    assert np.all(y[neg] == 0) and np.all(np.signbit(y[neg])) and np.all(np.abs(fwd[neg]) < tiny)
    assert np.all(y[far & (u2 > 0)] == x[far & (u2 > 0)])
    assert np.all(gx[far] == (u2[far] > 0))
    special_x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype)
    got_f = F.gelu(special_x, "tanh")
    got_b = F.gelu_backward(np.ones_like(special_x), special_x, "tanh")
    np.testing.assert_array_equal(got_f, [np.inf, np.nan, np.nan, 0.0, -0.0])
    np.testing.assert_array_equal(got_b, [np.nan, np.nan, np.nan, 0.5, 0.5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu6_vector_loop_is_exact(dtype, rng):
    """relu6 and its gradient run in _vmath's SIMD-cloned loops (the scalar-compiled loop
    took 1.75x a copy's time): bitwise the NumPy reference on a long array with every
    special value (vector body and tail), -0.0 and NaN passing through the forward as in
    torch, NaN x passing g in the backward."""
    special = [-0.0, 0.0, 6.0, np.nextafter(6.0, 7.0), np.nextafter(0.0, -1.0), np.inf]
    x = np.concatenate([rng.standard_normal(1037) * 5, special, [-np.inf, np.nan]]).astype(dtype)
    rng.shuffle(x)
    g = rng.standard_normal(x.shape).astype(dtype)
    y = F.relu6(x)
    ref = np.where(x < 0, dtype(0), x)
    ref = np.where(ref > 6, dtype(6), ref)
    assert y.tobytes() == ref.tobytes()
    gx = F.relu6_backward(g, x)
    gref = np.where(x <= 0, dtype(0), g)
    gref = np.where(x >= 6, dtype(0), gref)
    assert gx.tobytes() == gref.tobytes()
    torch = pytest.importorskip("torch")
    assert y.tobytes() == torch.nn.functional.relu6(torch.from_numpy(x)).numpy().tobytes()
    tg = torch.ops.aten.hardtanh_backward(torch.from_numpy(g), torch.from_numpy(x), 0.0, 6.0)
    real = ~np.isnan(x)  # (a NaN x: torch's gradient is 0, cnncore's passes g, as before)
    np.testing.assert_array_equal(gx[real], tg.numpy()[real])
