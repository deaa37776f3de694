"""Losses: cross entropy, binary cross entropy (with logits / probabilities), MSE, L1, MSLE,
MAPE and L2 -- values, gradients, reductions, domain checks and determinism."""

import warnings

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnncore.functional as F

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


# ------------------------------------------------------------------------------------------
# Naive references (float64, sample by sample)
# ------------------------------------------------------------------------------------------


def _reduce(per, reduction, count=None):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (per.size if count is None else count)


def ref_cross_entropy(
    logits, target, reduction="mean", label_smoothing=0.0, ignore_index=-100, weight=None
):
    """Loop over every (sample, position): -sum_c w_c log_softmax(x)_c; with ``weight``,
    PyTorch's rules (class-index targets: the target's weight on the NLL term, weight_c on
    the smoothing terms, 'mean' over the summed target weights; probabilities: weight_c per
    class, 'mean' over the positions)."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target)
    unbatched = x.ndim == 1
    if unbatched:
        x, t = x[None], t[None]
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    probs = t.ndim == x.ndim
    cw = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    per = np.zeros((n, *spatial))
    count = 0
    for i in range(n):
        for pos in np.ndindex(*spatial):
            v = x[(i, slice(None), *pos)]
            m = v.max()
            logp = (v - m) - np.log(np.sum(np.exp(v - m)))
            if probs:
                w = t[(i, slice(None), *pos)].astype(np.float64)
                w = ((1 - label_smoothing) * w + label_smoothing / c) * cw
                count += 1
            else:
                label = int(t[(i, *pos)])
                if label == ignore_index:
                    continue
                w = label_smoothing / c * cw
                w[label] += (1 - label_smoothing) * cw[label]
                count += cw[label]
            per[(i, *pos)] = -np.sum(w * logp)
    if unbatched:
        per = per[0]
    if reduction == "mean":
        return per.sum() / count if count else np.nan
    return _reduce(per, reduction)


def ref_pointwise(name, p, t):
    p = np.asarray(p, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if name in ("mse_loss", "l2_loss"):
        return (p - t) ** 2
    if name == "l1_loss":
        return np.abs(p - t)
    if name == "binary_cross_entropy":
        with np.errstate(divide="ignore"):
            return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    if name == "binary_cross_entropy_with_logits":
        return np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
    if name == "msle_loss":
        return (np.log1p(p) - np.log1p(t)) ** 2
    if name == "mape_loss":  # Keras
        return 100 * np.abs((t - p) / np.maximum(np.abs(t), 1e-7))
    raise KeyError(name)


POINTWISE = [
    "mse_loss",
    "l1_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "msle_loss",
    "mape_loss",
    "l2_loss",
]


def _pointwise_data(name, rng, shape, dtype):
    if name == "binary_cross_entropy":
        p = rng.uniform(0.02, 0.98, shape)
        t = rng.uniform(0, 1, shape)
    elif name == "msle_loss":
        p = rng.uniform(-0.5, 3, shape)
        t = rng.uniform(-0.5, 3, shape)
    elif name == "mape_loss":
        p = rng.standard_normal(shape)
        t = rng.standard_normal(shape) + np.where(rng.random(shape) < 0.5, 2.0, -2.0)
    elif name == "binary_cross_entropy_with_logits":
        p = rng.standard_normal(shape) * 3
        t = rng.uniform(0, 1, shape)
    else:
        p = rng.standard_normal(shape)
        t = rng.standard_normal(shape)
    return p.astype(dtype), t.astype(dtype)


def _loss_tol(dtype):
    return dict(rtol=2e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Values against the references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_matches_reference(name, reduction, dtype, rng):
    p, t = _pointwise_data(name, rng, (4, 7, 3), dtype)
    loss = getattr(F, name)(p, t, reduction=reduction)
    expected = _reduce(ref_pointwise(name, p, t), reduction)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == p.shape and loss.dtype == dtype
    else:
        assert type(loss) is np.dtype(dtype).type  # a NumPy scalar of the input dtype
    np.testing.assert_allclose(loss, expected, **_loss_tol(dtype))


def test_l2_loss_definition(rng):
    p, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    assert F.l2_loss(p, t) == pytest.approx(np.sum((p - t) ** 2), rel=1e-13)
    assert F.l2_loss(p, t, reduction="mean") == F.mse_loss(p, t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "case",
    [
        "labels",
        "probs",
        "spatial",
        "spatial_probs",
        "smooth",
        "ignore",
        "unbatched",
        "unbatched_probs",
    ],
)
def test_cross_entropy_matches_reference(case, reduction, dtype, rng):
    kwargs = {}
    if case in ("labels", "smooth", "ignore"):
        x = rng.standard_normal((6, 5)) * 3
        t = rng.integers(0, 5, 6)
        if case == "smooth":
            kwargs["label_smoothing"] = 0.15
        if case == "ignore":
            t[[1, 4]] = -100
    elif case == "probs":
        x = rng.standard_normal((6, 5)) * 3
        t = rng.dirichlet(np.ones(5), 6).astype(dtype)
        kwargs["label_smoothing"] = 0.1
    elif case == "spatial":
        x = rng.standard_normal((3, 4, 2, 5))
        t = rng.integers(0, 4, (3, 2, 5))
        t[0, 1, 2] = 7
        kwargs["ignore_index"] = 7
    elif case == "spatial_probs":
        x = rng.standard_normal((2, 4, 3))
        t = np.moveaxis(rng.dirichlet(np.ones(4), (2, 3)), -1, 1).astype(dtype)
    elif case == "unbatched":
        x = rng.standard_normal(6)
        t = np.array(3)
    else:
        x = rng.standard_normal(6)
        t = rng.dirichlet(np.ones(6)).astype(dtype)
    x = x.astype(dtype)
    loss = F.cross_entropy(x, t, reduction=reduction, **kwargs)
    expected = ref_cross_entropy(x, t, reduction, **kwargs)
    if reduction == "none":
        assert loss.shape == np.shape(expected) and loss.dtype == dtype
    else:
        assert type(loss) is np.dtype(dtype).type
    np.testing.assert_allclose(loss, expected, **_loss_tol(dtype))


def test_cross_entropy_all_ignored():
    x = np.zeros((3, 4))
    t = np.full(3, -100)
    loss, grad = F.cross_entropy(x, t, return_grad=True)
    assert np.isnan(loss) and (grad == 0).all()  # PyTorch: NaN loss, zero gradient
    assert F.cross_entropy(x, t, reduction="sum") == 0


def test_empty_batches():
    assert np.isnan(F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64)))
    assert F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64), reduction="sum") == 0
    assert F.cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64), reduction="none").shape == (0,)
    assert np.isnan(F.mse_loss(np.zeros(0), np.zeros(0)))
    loss, grad = F.l1_loss(np.zeros((0, 2)), np.zeros((0, 2)), reduction="sum", return_grad=True)
    assert loss == 0 and grad.shape == (0, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_label_dtypes(dtype, rng):
    x = rng.standard_normal((5, 4)).astype(dtype)
    t = rng.integers(0, 4, 5)
    expected = F.cross_entropy(x, t)
    for tdt in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.uint64):
        assert F.cross_entropy(x, t.astype(tdt)) == expected
    assert F.cross_entropy(x.tolist(), t.tolist()) == F.cross_entropy(x.astype(np.float64), t)


# ------------------------------------------------------------------------------------------
# Gradients: return_grad == _backward, finite differences, all reductions
# ------------------------------------------------------------------------------------------


def _numeric_grad(f, x, eps=1e-6):
    grad = np.empty_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        grad.reshape(-1)[i] = (fp - fm) / (2 * eps)
    return grad


FD = dict(atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_gradient_finite_differences(name, reduction, rng):
    p, t = _pointwise_data(name, rng, (3, 4), np.float64)
    if name in ("l1_loss", "mape_loss"):  # keep the kink out of the stencil
        p = np.where(np.abs(p - t) < 0.05, t + 0.5, p)
    fn = getattr(F, name)
    loss, grad = fn(p, t, reduction=reduction, return_grad=True)
    np.testing.assert_array_equal(grad, getattr(F, name + "_backward")(p, t, reduction=reduction))
    np.testing.assert_array_equal(loss, fn(p, t, reduction=reduction))

    def total(v):
        return np.sum(fn(v, t, reduction=reduction))  # 'none': gradient of the sum

    np.testing.assert_allclose(grad, _numeric_grad(total, p.copy()), **FD)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "case", ["labels", "smooth_ignore", "probs_smooth", "spatial", "unbatched"]
)
def test_cross_entropy_gradient_finite_differences(case, reduction, rng):
    kwargs = {}
    if case == "labels":
        x, t = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    elif case == "smooth_ignore":
        x, t = rng.standard_normal((4, 5)), np.array([0, -1, 4, 2])
        kwargs = dict(label_smoothing=0.3, ignore_index=-1)
    elif case == "probs_smooth":
        x, t = rng.standard_normal((3, 4)), rng.uniform(0, 1, (3, 4))  # unnormalized is fine
        kwargs = dict(label_smoothing=0.2)
    elif case == "spatial":
        x, t = rng.standard_normal((2, 3, 2, 2)), rng.integers(0, 3, (2, 2, 2))
    else:
        x, t = rng.standard_normal(5), np.int64(2)
    loss, grad = F.cross_entropy(x, t, reduction=reduction, return_grad=True, **kwargs)
    np.testing.assert_array_equal(
        grad, F.cross_entropy_backward(x, t, reduction=reduction, **kwargs)
    )
    assert grad.shape == x.shape

    def total(v):
        return np.sum(F.cross_entropy(v, t, reduction=reduction, **kwargs))

    np.testing.assert_allclose(grad, _numeric_grad(total, x.copy()), **FD)


# ------------------------------------------------------------------------------------------
# PyTorch cross-checks (values and autograd gradients, all reductions)
# ------------------------------------------------------------------------------------------

TORCH_POINTWISE = {
    "mse_loss": "mse_loss",
    "l1_loss": "l1_loss",
    "binary_cross_entropy": "binary_cross_entropy",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", list(TORCH_POINTWISE))
def test_pointwise_matches_torch(name, reduction, dtype, rng):
    torch = pytest.importorskip("torch")
    p, t = _pointwise_data(name, rng, (5, 6, 7), dtype)
    if name == "binary_cross_entropy":
        p.reshape(-1)[:3] = [0.0, 1.0, 0.5]  # exercise the log clamp at -100
        t.reshape(-1)[:3] = [1.0, 0.0, 0.5]
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tl = getattr(torch.nn.functional, TORCH_POINTWISE[name])(
        tp, torch.from_numpy(t), reduction=reduction
    )
    tl.sum().backward()
    loss, grad = getattr(F, name)(p, t, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(loss, tl.detach().numpy(), **_loss_tol(dtype))
    np.testing.assert_allclose(grad, tp.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "case",
    [
        "labels",
        "smooth",
        "ignore",
        "probs",
        "probs_smooth",
        "spatial",
        "spatial_probs",
        "unbatched",
        "wide",
    ],
)
def test_cross_entropy_matches_torch(case, reduction, dtype, rng):
    torch = pytest.importorskip("torch")
    kwargs = {}
    if case in ("labels", "smooth", "ignore"):
        x, t = rng.standard_normal((8, 10)) * 4, rng.integers(0, 10, 8)
        if case == "smooth":
            kwargs["label_smoothing"] = 0.25
        if case == "ignore":
            t[::3] = 5
            kwargs = dict(ignore_index=5, label_smoothing=0.1)
    elif case in ("probs", "probs_smooth"):
        x, t = rng.standard_normal((8, 10)) * 4, rng.dirichlet(np.ones(10), 8).astype(dtype)
        if case == "probs_smooth":
            kwargs["label_smoothing"] = 0.3
    elif case == "spatial":
        x, t = rng.standard_normal((3, 5, 4, 6)), rng.integers(0, 5, (3, 4, 6))
        t[1, 2, 3] = -100
    elif case == "spatial_probs":
        x = rng.standard_normal((2, 5, 3, 4))
        t = np.moveaxis(rng.dirichlet(np.ones(5), (2, 3, 4)), -1, 1).astype(dtype)
    elif case == "unbatched":
        x, t = rng.standard_normal(7), np.array(4)
    else:
        x, t = rng.standard_normal((17, 1500)) * 5, rng.integers(0, 1500, 17)
    x = x.astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tt = torch.from_numpy(np.asarray(t))
    tl = torch.nn.functional.cross_entropy(tx, tt, reduction=reduction, **kwargs)
    tl.sum().backward()
    loss, grad = F.cross_entropy(x, t, reduction=reduction, return_grad=True, **kwargs)
    np.testing.assert_allclose(loss, tl.detach().numpy(), **_loss_tol(dtype))
    np.testing.assert_allclose(grad, tx.grad.numpy(), **tol(dtype))


# ------------------------------------------------------------------------------------------
# Extreme values
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_huge_logits(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    t = np.array([1, 2, 0])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        loss, grad = F.cross_entropy(x, t, reduction="none", return_grad=True)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, [2e4, 0.0, np.log(2)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, [[1, -1, 0], [0, 0, 0], [-0.5, 0.5, 0]], atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extremes(dtype):
    x = np.array([1e4, -1e4, 0.0, 1000.0], dtype=dtype)
    t = np.array([0.0, 1.0, 1.0, 1.0], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        loss, grad = F.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True)
        bce = F.binary_cross_entropy(
            np.array([0.0, 1.0, 0.0, 1.0], dtype),
            np.array([1.0, 0.0, 0.0, 1.0], dtype),
            reduction="none",
        )
    np.testing.assert_allclose(loss, [1e4, 1e4, np.log(2), 0.0], rtol=1e-6)
    np.testing.assert_allclose(grad, [1, -1, -0.5, 0], atol=1e-7)
    np.testing.assert_array_equal(bce, [100, 100, 0, 0])  # log clamped at -100 (PyTorch)


def test_mape_tiny_target_uses_epsilon():
    loss = F.mape_loss(np.array([1.0, 2.0]), np.array([0.0, 2.0]), reduction="none")
    np.testing.assert_allclose(loss, [100 * 1.0 / 1e-7, 0.0])


# ------------------------------------------------------------------------------------------
# Bad inputs: exception type and the argument named in the message
# ------------------------------------------------------------------------------------------

_P = np.full((2, 3), 0.5)
_T = np.full((2, 3), 0.5)
_L = np.zeros((4, 3))
_Y = np.array([0, 1, 2, 1])

BAD = [
    (lambda: F.mse_loss(_P, _T, reduction="avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(_L, _Y, reduction=None), ValueError, "reduction"),
    (lambda: F.cross_entropy(_L, np.array([0, 1, 3, 1])), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.array([0, -1, 2, 1])), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.array([0, 1, 2, 2**63 + 5], np.uint64)), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.array([0.0, 1.0, 2.0, 1.0])), TypeError, "target"),
    (lambda: F.cross_entropy(_L, np.array([True, False, True, True])), TypeError, "target"),
    (lambda: F.cross_entropy(_L, np.array([0, 1, 2])), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.zeros((4, 3, 1), np.int64)), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.zeros((4, 2))), ValueError, "target"),
    (lambda: F.cross_entropy(_L, np.zeros((4, 3), np.int64)), TypeError, "target"),
    (lambda: F.cross_entropy(_L, np.zeros((4, 3), np.float32)), TypeError, "target"),
    (lambda: F.cross_entropy(_L, None), TypeError, "target"),
    (lambda: F.cross_entropy(np.zeros((4, 3), np.int64), _Y), TypeError, "logits"),
    (lambda: F.cross_entropy(np.float64(1.0), _Y), ValueError, "logits"),
    (lambda: F.cross_entropy(np.zeros((4, 0)), _Y), ValueError, "logits"),
    (lambda: F.cross_entropy(_L, _Y, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda: F.cross_entropy(_L, _Y, label_smoothing="0.1"), TypeError, "label_smoothing"),
    (lambda: F.cross_entropy(_L, _Y, ignore_index=1.5), TypeError, "ignore_index"),
    (lambda: F.cross_entropy_backward(_L, np.array([0, 1, 9, 1])), ValueError, "target"),
    (lambda: F.mse_loss(_P, np.zeros((3, 2))), ValueError, "target"),
    (lambda: F.l1_loss(_P, _T.astype(np.float32)), TypeError, "target"),
    (lambda: F.l1_loss(_P.astype(np.int64), _T), TypeError, "input"),
    (lambda: F.mape_loss(_P, np.zeros((2, 3), np.int32)), TypeError, "target"),
    (
        lambda: F.binary_cross_entropy(np.array([0.5, 1.5]), np.array([1.0, 0.0])),
        ValueError,
        "probs",
    ),
    (
        lambda: F.binary_cross_entropy(np.array([0.5, np.nan]), np.array([1.0, 0.0])),
        ValueError,
        "probs",
    ),
    (
        lambda: F.binary_cross_entropy(np.array([0.5, 0.5]), np.array([1.0, -0.1])),
        ValueError,
        "target",
    ),
    (
        lambda: F.binary_cross_entropy_backward(np.array([-0.5]), np.array([1.0])),
        ValueError,
        "probs",
    ),
    (lambda: F.binary_cross_entropy_with_logits(_P, np.zeros(6)), ValueError, "target"),
    (lambda: F.binary_cross_entropy_with_logits(_P.astype(np.float16), _T), TypeError, "logits"),
    (lambda: F.msle_loss(np.array([-1.0, 0.0]), np.array([0.0, 0.0])), ValueError, "input"),
    (lambda: F.msle_loss(np.array([0.0, 0.0]), np.array([0.0, -2.0])), ValueError, "target"),
    (lambda: F.l2_loss(_P, _T, reduction="max"), ValueError, "reduction"),
    (lambda: F.mse_loss_backward(_P, _T[:1]), ValueError, "target"),
]


@pytest.mark.parametrize("call,exc,name", BAD)
def test_bad_inputs(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# ------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    c=st.integers(1, 6),
    smoothing=st.sampled_from([0.0, 0.2]),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_property_cross_entropy(data, n, c, smoothing, reduction):
    x = data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-30, 30)))
    t = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(-1, c - 1)))
    loss = F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing, ignore_index=-1)
    expected = ref_cross_entropy(x, t, reduction, smoothing, ignore_index=-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from(POINTWISE),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_property_pointwise(data, name, shape, reduction):
    lo, hi = {"binary_cross_entropy": (0, 1), "msle_loss": (-0.9, 10)}.get(name, (-20, 20))
    p = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi)))
    t = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi)))
    loss = getattr(F, name)(p, t, reduction=reduction)
    expected = _reduce(ref_pointwise(name, p, t), reduction)
    np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------
# Determinism across thread counts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_threads(dtype, rng):
    x = (rng.standard_normal((700, 100)) * 3).astype(dtype)
    t = rng.integers(0, 100, 700)
    xs = rng.standard_normal((4, 10, 30, 30)).astype(dtype)
    ts = rng.integers(0, 10, (4, 30, 30))
    p, q = _pointwise_data("binary_cross_entropy", rng, (200, 1000), dtype)

    def compute():
        res = []
        for reduction in REDUCTIONS:
            res += list(
                F.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1, return_grad=True)
            )
            res += list(F.cross_entropy(xs, ts, reduction=reduction, return_grad=True))
            for name in POINTWISE:
                res += list(getattr(F, name)(p, q, reduction=reduction, return_grad=True))
        return res

    assert_bit_identical_across_threads(compute)


@pytest.mark.parametrize("target_kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_weight_matches_torch(target_kind, reduction, dtype):
    """weight= against torch.nn.functional.cross_entropy(weight=...): values and gradients,
    with label smoothing, ignore_index and spatial dimensions."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    w = rng.uniform(0.05, 3.0, 4).astype(dtype)
    if target_kind == "index":
        t = rng.integers(0, 4, (6, 3))
        t[1, 2] = -7
        kw = dict(ignore_index=-7)
    else:
        p = rng.random((6, 4, 3))
        t = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
        kw = {}
    for ls in (0.0, 0.3):
        loss, grad = F.cross_entropy(
            x, t, weight=w, reduction=reduction, label_smoothing=ls, return_grad=True, **kw
        )
        xt = torch.tensor(x, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(
            xt, torch.tensor(t), weight=torch.tensor(w), reduction=reduction,
            label_smoothing=ls, **kw,
        )  # fmt: skip
        ref.sum().backward()
        tol = dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
        np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
        np.testing.assert_array_equal(
            grad,
            F.cross_entropy_backward(x, t, weight=w, reduction=reduction, label_smoothing=ls, **kw),
        )


# ------------------------------------------------------------------------------------------
# Class weights: cross_entropy(weight=) over random shapes, unbatched included, and the binary
# cross entropies' weight= / pos_weight= -- against PyTorch and the naive references
# ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(1, 5),
    lead=st.sampled_from([(), (3,), (4, 2), (2, 3, 2), (0,)]),
    probs=st.booleans(),
    weighted=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.25, 1.0]),
    reduction=st.sampled_from(REDUCTIONS),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_matches_torch_over_random_shapes(
    c, lead, probs, weighted, smoothing, reduction, dtype, seed
):
    """Logits (C,) (unbatched: a scalar class index or (C,) probabilities), (N, C) or (N, C,
    d1, ...), with or without class weights, label smoothing and an ignored target: loss and
    gradient as torch.nn.functional.cross_entropy's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shape = (c,) if not lead else (lead[0], c, *lead[1:])
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if probs:
        p = rng.random(shape)
        t = (p / np.maximum(p.sum(axis=0 if not lead else 1, keepdims=True), 1e-9)).astype(dtype)
    else:
        t = np.asarray(rng.integers(0, c, lead), np.int64)
        if t.size:
            t.reshape(-1)[0] = -100  # ignored
    w = rng.uniform(0.1, 3.0, c).astype(dtype) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    loss, grad = F.cross_entropy(x, t, weight=w, return_grad=True, **kw)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(
        xt, torch.tensor(t), weight=None if w is None else torch.tensor(w), **kw
    )
    ref.sum().backward()
    tol = dict(rtol=3e-5, atol=3e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    assert np.shape(loss) == tuple(ref.shape)
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    expected = ref_cross_entropy(x, t, weight=w, **kw)
    np.testing.assert_allclose(loss, expected, **_loss_tol(dtype))


def _broadcast_shapes(draw, shape):
    """A shape broadcastable to ``shape``: a suffix of it with some entries 1, or ()."""
    k = draw(st.integers(0, len(shape)))
    suffix = shape[len(shape) - k :]
    return tuple(1 if draw(st.booleans()) else d for d in suffix)


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(), (5,), (4, 3), (2, 3, 4), (3, 1, 2), (0, 3)]),
    logits=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_binary_cross_entropy_weights_match_torch(data, shape, logits, reduction, dtype, seed):
    """weight= (both) and pos_weight= (with logits), of any shape broadcastable to the
    input's, possibly negative or of another dtype (converted, as torch does): losses and
    gradients against torch's functional and the naive references."""
    torch = pytest.importorskip("torch")
    import reference as R

    rng = np.random.default_rng(seed)
    w_shape = _broadcast_shapes(data.draw, shape)
    pw_shape = _broadcast_shapes(data.draw, shape)
    x = (rng.standard_normal(shape) * 4 if logits else rng.uniform(0.01, 0.99, shape)).astype(dtype)
    t = rng.uniform(0, 1, shape).astype(dtype)
    w = rng.uniform(-0.5, 3.0, w_shape)  # float64: converted to x's dtype
    pw = rng.uniform(0.1, 5.0, pw_shape).astype(dtype) if logits else None
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w.astype(dtype))
    if logits:
        kw = dict(weight=w, pos_weight=pw, reduction=reduction)
        loss, grad = F.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
        gb = F.binary_cross_entropy_with_logits_backward(x, t, **kw)
        ref = torch.nn.functional.binary_cross_entropy_with_logits(
            xt, torch.tensor(t), weight=wt, pos_weight=torch.tensor(pw), reduction=reduction
        )
        naive = R.binary_cross_entropy_with_logits_ref(x, t, w.astype(dtype), pw, reduction)
    else:
        kw = dict(weight=w, reduction=reduction)
        loss, grad = F.binary_cross_entropy(x, t, return_grad=True, **kw)
        gb = F.binary_cross_entropy_backward(x, t, **kw)
        ref = torch.nn.functional.binary_cross_entropy(
            xt, torch.tensor(t), weight=wt, reduction=reduction
        )
        naive = R.binary_cross_entropy_ref(x, t, w.astype(dtype), reduction)
    ref.sum().backward()
    tol = dict(rtol=3e-5, atol=3e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    assert np.shape(loss) == tuple(ref.shape) and np.asarray(loss).dtype == dtype
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    np.testing.assert_array_equal(gb, grad)
    np.testing.assert_allclose(loss, naive, **_loss_tol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_weights_finite_differences(reduction):
    """The gradients with weight= / pos_weight= against central differences (float64)."""
    from conftest import fd_grad

    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4)) * 2
    p = rng.uniform(0.05, 0.95, (3, 4))
    t = rng.uniform(0, 1, (3, 4))
    w, pw = rng.uniform(0.2, 2, 4), rng.uniform(0.2, 4, (3, 1))
    g = rng.standard_normal((3, 4)) if reduction == "none" else 1.0
    for fn, a, kw in (
        (F.binary_cross_entropy_with_logits, x, dict(weight=w, pos_weight=pw)),
        (F.binary_cross_entropy, p, dict(weight=w)),
    ):
        _, grad = fn(a, t, reduction=reduction, return_grad=True, **kw)
        numeric = fd_grad(
            lambda fn=fn, a=a, kw=kw: float(np.sum(fn(a, t, reduction=reduction, **kw) * g)), a
        )
        np.testing.assert_allclose(grad * g, numeric, rtol=1e-6, atol=1e-8)


_Z, _H = np.zeros(3), np.full(3, 0.5)
_BCEL, _BCE = F.binary_cross_entropy_with_logits, F.binary_cross_entropy


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: _BCEL(_Z, _Z, weight=np.ones(2)), ValueError, "weight"),
        (lambda: _BCEL(_Z, _Z, weight=np.ones((1, 3))), ValueError, "weight"),  # torch too
        (lambda: _BCEL(_Z, _Z, pos_weight=np.ones(4)), ValueError, "pos_weight"),
        (lambda: _BCEL(_Z, _Z, pos_weight=np.ones(3, complex)), TypeError, "pos_weight"),
        (lambda: _BCEL(_Z, _Z, weight="abc"), TypeError, "weight"),
        (
            lambda: F.binary_cross_entropy_with_logits_backward(_Z, _Z, weight=[[1.0], [2.0]]),
            ValueError,
            "weight",
        ),
        (lambda: _BCE(_H, _Z, weight=np.ones(4)), ValueError, "weight"),
        (
            lambda: F.binary_cross_entropy_backward(_H, _Z, weight=np.array([None] * 3)),
            TypeError,
            "weight",
        ),
        (lambda: _BCE(_H, _Z, pos_weight=np.ones(3)), TypeError, "pos_weight"),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], weight=np.ones(4)),
            ValueError,
            "weight",
        ),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], weight=np.ones(3, np.float32)),
            TypeError,
            "weight",
        ),
        (lambda: F.cross_entropy(_Z, np.array([0]), weight=np.ones(3)), TypeError, "target"),
    ],
)
def test_loss_weight_bad_inputs(call, exc, match):
    """Weights that do not broadcast to the input (PyTorch raises too), or are not real
    numbers; cross entropy's class weights: one per class, the logits' dtype (as torch)."""
    with pytest.raises(exc, match=match):
        call()


def test_binary_cross_entropy_weight_list_and_scalar():
    """Python lists and scalars are weights too (converted to the input's dtype)."""
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    t = np.full((2, 3), 0.25, np.float32)
    base = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    got = F.binary_cross_entropy_with_logits(x, t, weight=[1, 2, 3], reduction="none")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, base * np.array([1, 2, 3], np.float32), rtol=1e-6)
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(x, t, weight=2.0), 2 * base.mean(), rtol=1e-6
    )
    # pos_weight 1 is no pos_weight
    np.testing.assert_array_equal(
        F.binary_cross_entropy_with_logits(
            x, t, pos_weight=np.ones(3, np.float32), reduction="none"
        ),
        base,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_loss_modules_match_torch_and_hold_buffers(reduction, dtype):
    """BCEWithLogitsLoss(weight=, pos_weight=), BCELoss(weight=), CrossEntropyLoss(weight=):
    losses and gradients as torch's modules; the weights are buffers with torch's
    state_dict keys, loaded in place from a torch state_dict, saved in the config."""
    torch = pytest.importorskip("torch")
    from cnncore import nn

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((5, 3)) * 2).astype(dtype)
    p = rng.uniform(0.05, 0.95, (5, 3)).astype(dtype)
    t = rng.uniform(0, 1, (5, 3)).astype(dtype)
    labels = rng.integers(0, 3, 5)
    w, pw = rng.uniform(0.2, 2, 3), rng.uniform(0.5, 4, 3)
    T = lambda a: torch.tensor(a, dtype=torch.float32 if dtype == np.float32 else torch.float64)  # noqa: E731
    cases = [
        (
            nn.BCEWithLogitsLoss(reduction, weight=w, pos_weight=pw),
            torch.nn.BCEWithLogitsLoss(weight=T(w), pos_weight=T(pw), reduction=reduction),
            x,
            t,
            {"weight", "pos_weight"},
        ),
        (
            nn.BCELoss(reduction, weight=w),
            torch.nn.BCELoss(weight=T(w), reduction=reduction),
            p,
            t,
            {"weight"},
        ),
        (
            nn.CrossEntropyLoss(reduction, weight=w),
            torch.nn.CrossEntropyLoss(weight=T(w), reduction=reduction),
            x,
            labels,
            {"weight"},
        ),
    ]
    tol = dict(rtol=3e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for ours, theirs, out, target, keys in cases:
        loss = ours(out, target)
        grad = ours.backward()
        ot = torch.tensor(out, requires_grad=True)
        ref = theirs(ot, torch.tensor(target))
        ref.sum().backward()
        np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
        np.testing.assert_allclose(grad, ot.grad.numpy(), **tol)
        state = ours.state_dict()
        assert set(state) == set(theirs.state_dict()) == keys
        # a torch state_dict loads in place (here: other weights, the same in both)
        changed = {k: v * torch.arange(1, 4) for k, v in theirs.state_dict().items()}
        ours.load_state_dict(changed)
        theirs.load_state_dict(changed)
        ref = theirs(torch.tensor(out), torch.tensor(target))
        np.testing.assert_allclose(ours(out, target), ref.numpy(), **tol)
        again = type(ours).from_config(ours.get_config())
        np.testing.assert_allclose(again(out, target), ours(out, target), **tol)
    # without weights: no buffers, as torch (which registers None)
    for cls in (nn.BCEWithLogitsLoss, nn.BCELoss, nn.CrossEntropyLoss):
        assert cls().state_dict() == {} and cls().weight is None


def test_weighted_loss_module_bad_weights():
    from cnncore import nn

    for cls, name in (
        (nn.BCEWithLogitsLoss, "weight"),
        (nn.BCEWithLogitsLoss, "pos_weight"),
        (nn.BCELoss, "weight"),
    ):
        for bad in (["a"], [1.0, np.nan], np.ones(2, complex)):
            with pytest.raises(ValueError, match=name):
                cls(**{name: bad})
    with pytest.raises(ValueError, match="pos_weight"):  # broadcast at call time
        nn.BCEWithLogitsLoss(pos_weight=np.ones(4))(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="pos_weight"):
        nn.BCELoss(pos_weight=np.ones(3))
