"""A Linear layer's training backward: both products (weight and input gradient) in one
kernel call (``_linear.linear_backward``), bit-identical to the two separate functional
calls for any thread count; the layer falls back to those calls for other arrays."""

import numpy as np
import pytest

import cnncore
import cnncore.functional as F
from cnncore import nn
from cnncore.ops import _linear
from cnncore.ops.linear import _linear_backward_pair

SHAPES = [
    (64, 120, 400),  # LeNet-5's first classifier layer (both products cut into blocks)
    (64, 84, 120),
    (64, 10, 84),
    (1, 10, 84),  # one row: matrix-vector products
    (3, 5, 7),
    (64, 128, 3136),  # the README CNN's
    (2, 1000, 600),
    (600, 3, 2),
    (4, 3, 2048),  # long rows: the weight gradient's K is short, the input's is not
    (4, 2048, 3),
    (1024, 2, 2),  # weight gradient along a long K: linear_gemm cuts K (sequential path)
]


@pytest.fixture
def threads():
    n = cnncore.get_num_threads()
    yield
    cnncore.set_num_threads(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_pair_matches_the_separate_calls_bitwise(shape, dtype, threads):
    n, o, i = shape
    rng = np.random.default_rng(n * 7 + o * 3 + i)
    g = rng.standard_normal((n, o)).astype(dtype)
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    dw_ref = F.linear_backward_weight(g, x)
    dx_ref = F.linear_backward_input(g, w)
    for t in (1, 2, 3, 4):
        cnncore.set_num_threads(t)
        dw, dx = _linear_backward_pair(g, x, w, True)
        assert dw.tobytes() == dw_ref.tobytes()
        assert dx.tobytes() == dx_ref.tobytes()
        dw2, none = _linear_backward_pair(g, x, w, False)
        assert none is None and dw2.tobytes() == dw_ref.tobytes()
    # the NumPy reference (float64 products)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dw_ref, g.T.astype(np.float64) @ x, rtol=tol, atol=tol * i)
    np.testing.assert_allclose(dx_ref, g.astype(np.float64) @ w, rtol=tol, atol=tol * o)


def test_pair_kernel_rejects_mismatched_shapes():
    g = np.zeros((4, 3), np.float32)
    x = np.zeros((4, 5), np.float32)
    w = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="linear_backward"):
        _linear.linear_backward(g, x, w, np.empty((3, 4), np.float32), None, 1)
    with pytest.raises(ValueError, match="linear_backward"):
        _linear.linear_backward(
            g, x, w, np.empty((3, 5), np.float32), np.empty((4, 4), np.float32), 1
        )
    with pytest.raises(ValueError, match="linear_backward"):
        _linear.linear_backward(
            g, np.zeros((2, 5), np.float32), w, np.empty((3, 5), np.float32), None, 1
        )


def test_pair_kernel_no_rows_gives_zero_weight_gradient():
    dw = np.full((3, 5), np.nan, np.float32)
    _linear.linear_backward(
        np.zeros((0, 3), np.float32),
        np.zeros((0, 5), np.float32),
        np.ones((3, 5), np.float32),
        dw,
        np.empty((0, 5), np.float32),
        2,
    )
    assert not dw.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_backward_equals_functional_and_torch(dtype):
    rng = np.random.default_rng(0)
    layer = nn.Linear(40, 12, dtype=dtype, rng=1)
    x = rng.standard_normal((16, 40)).astype(dtype)
    g = rng.standard_normal((16, 12)).astype(dtype)
    layer.train()
    layer(x)
    layer.zero_grad()
    dx = layer.backward(g)
    w = layer.weight.data
    assert dx.tobytes() == F.linear_backward_input(g, w).tobytes()
    assert layer.weight.grad.tobytes() == F.linear_backward_weight(g, x).tobytes()
    assert layer.bias.grad.tobytes() == F.linear_backward_bias(g).tobytes()
    assert layer.backward(g, input_grad=False) is None  # (accumulates a second time)
    np.testing.assert_array_equal(layer.weight.grad, 2 * F.linear_backward_weight(g, x))
    torch = pytest.importorskip("torch")
    tl = torch.nn.Linear(40, 12).to(torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(w.astype(np.float64)))
        tl.bias.copy_(torch.from_numpy(layer.bias.data.astype(np.float64)))
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tl(tx).backward(torch.from_numpy(g.astype(np.float64)))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.weight.grad / 2, tl.weight.grad.numpy(), rtol=tol, atol=tol)


def test_layer_backward_other_arrays_take_the_checked_path():
    # a 3-D input and a non-contiguous gradient: the separate functional calls
    rng = np.random.default_rng(1)
    layer = nn.Linear(6, 4, rng=2)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    layer.train()
    layer(x)
    g = np.asfortranarray(rng.standard_normal((2, 3, 4)).astype(np.float32))
    dx = layer.backward(g)
    assert dx.tobytes() == F.linear_backward_input(g, layer.weight.data).tobytes()
    x2 = rng.standard_normal((5, 6)).astype(np.float32)
    layer(x2)
    layer.zero_grad()
    g2 = rng.standard_normal((4, 5)).astype(np.float32).T  # not C-contiguous
    dx2 = layer.backward(g2)
    assert dx2.tobytes() == F.linear_backward_input(g2, layer.weight.data).tobytes()
    assert layer.weight.grad.tobytes() == F.linear_backward_weight(g2, x2).tobytes()
