"""linear and its gradients against NumPy, PyTorch and finite differences."""

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, tol

import cnncore

DTYPES = [np.float32, np.float64]
# The kernels cut each product along rows, columns or the inner dimension (see _linear.pyx):
# (6, 1100) -> 5 cuts the forward's inner dimension, (1200, 9) -> 7 the weight gradient's,
# (3, 200) -> 300 the forward's columns.
SHAPES = [
    ((5, 7), 3),
    ((70, 33), 65),
    ((2, 3, 4), 6),
    ((7,), 2),
    ((0, 4), 3),
    ((3, 0), 2),
    ((6, 1100), 5),
    ((1200, 9), 7),
    ((3, 200), 300),
    # one row (batch size 1): matrix-vector products -- one (small), split by columns
    # (1 x 600 -> 300), split along the inner dimension (1 x 3136 -> 128)
    ((1, 400), 120),
    ((1, 600), 300),
    ((1, 3136), 128),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape, out_f", SHAPES)
def test_linear_matches_numpy(rng, dtype, xshape, out_f):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((out_f, xshape[-1])).astype(dtype)
    b = rng.standard_normal(out_f).astype(dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = cnncore.linear(x, w, b)
    assert y.dtype == dtype and y.shape == (*xshape[:-1], out_f)
    np.testing.assert_allclose(y, x64 @ w64.T + b, **tol(dtype))
    np.testing.assert_allclose(cnncore.linear(x, w), x64 @ w64.T, **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(cnncore.linear_backward_input(g, w), g64 @ w64, **tol(dtype))
    rows = int(np.prod(xshape[:-1]))
    np.testing.assert_allclose(
        cnncore.linear_backward_weight(g, x),
        g64.reshape(rows, out_f).T @ x64.reshape(rows, xshape[-1]),
        **tol(dtype),
    )
    np.testing.assert_allclose(
        cnncore.linear_backward_bias(g), g64.reshape(rows, out_f).sum(0), **tol(dtype)
    )


def test_linear_finite_differences(rng):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    g = rng.standard_normal((4, 3))
    eps = 1e-6
    for arr, analytic in (
        (x, cnncore.linear_backward_input(g, w)),
        (w, cnncore.linear_backward_weight(g, x)),
        (b, cnncore.linear_backward_bias(g)),
    ):
        fd = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            fp = np.sum(cnncore.linear(x, w, b) * g)
            arr[i] = old - eps
            fm = np.sum(cnncore.linear(x, w, b) * g)
            arr[i] = old
            fd[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(analytic, fd, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_against_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((37, 20)).astype(dtype)
    w = rng.standard_normal((9, 20)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    ty = torch.nn.functional.linear(tx, tw, tb)
    g = rng.standard_normal(ty.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    t = tol(dtype)
    np.testing.assert_allclose(cnncore.linear(x, w, b), ty.detach().numpy(), **t)
    np.testing.assert_allclose(cnncore.linear_backward_input(g, w), tx.grad.numpy(), **t)
    np.testing.assert_allclose(cnncore.linear_backward_weight(g, x), tw.grad.numpy(), **t)
    np.testing.assert_allclose(cnncore.linear_backward_bias(g), tb.grad.numpy(), **t)


@pytest.mark.parametrize(
    "n, in_f, out_f",
    [(200, 300, 150), (64, 3136, 128), (1500, 20, 9), (1, 600, 300), (1, 3136, 128)],
)
def test_linear_bit_identical_across_threads(rng, n, in_f, out_f):
    x = rng.standard_normal((n, in_f)).astype(np.float32)
    w = rng.standard_normal((out_f, in_f)).astype(np.float32)
    b = rng.standard_normal(out_f).astype(np.float32)
    g = rng.standard_normal((n, out_f)).astype(np.float32)
    assert_bit_identical_across_threads(
        lambda: (
            cnncore.linear(x, w, b),
            cnncore.linear_backward_input(g, w),
            cnncore.linear_backward_weight(g, x),
            cnncore.linear_backward_bias(g),
        ),
        (1, 2, 3, 4),
    )


X = np.zeros((4, 5), np.float32)
W = np.zeros((3, 5), np.float32)


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda: cnncore.linear(X, W[:, :4]), ValueError, "in_features"),
        (lambda: cnncore.linear(X, W[0]), ValueError, "weight"),
        (lambda: cnncore.linear(X, W, np.zeros(4, np.float32)), ValueError, "bias"),
        (lambda: cnncore.linear(X, W.astype(np.float64)), TypeError, "weight"),
        (lambda: cnncore.linear(X.astype(int), W), TypeError, "x"),
        (
            lambda: cnncore.linear_backward_input(np.zeros((4, 2), np.float32), W),
            ValueError,
            "grad_output",
        ),
        (
            lambda: cnncore.linear_backward_weight(np.zeros((3, 3), np.float32), X),
            ValueError,
            "leading",
        ),
        (lambda: cnncore.linear_backward_bias(np.float32(1)), ValueError, "grad_output"),
    ],
)
def test_linear_bad_input(call, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        call()
    assert "Received" in str(info.value)
