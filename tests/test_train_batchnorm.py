"""Batch norm's two work splits -- a task per channel (planes of at least ``CHANNEL_L``
elements, at least as many channels as threads) and the (channel, chunk) tasks of each
phase -- give the same bits: each channel of a batch computed alone (fewer channels than
threads: the phase split) equals that channel of the whole batch (the channel split), for
the forward (with a fused ReLU and a fused residual Add) and the backward (with a fused
ReLU's mask), at any thread count; and the thread count the private helpers pick from the
elements they touch never changes a result."""

import numpy as np
import pytest

import cnncore
from cnncore.ops import norm as N
from cnncore.ops.norm import _batch_backward, _batch_forward

# plane sizes around CHANNEL_L (128) and POS_MAX (256): 7x7, 10x10, 128, 14x14, 256, 28x28
PLANES = [49, 100, 128, 196, 256, 784]


@pytest.fixture
def threads():
    n = cnncore.get_num_threads()
    yield
    cnncore.set_num_threads(n)


def _case(L, dtype, seed=0):
    rng = np.random.default_rng(seed + L)
    x = (rng.standard_normal((9, 5, L)) * 3 + 1).astype(dtype)
    x[0, 0, :3] = 0  # exact zeros at the ReLU's boundary
    r = rng.standard_normal(x.shape).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w = rng.uniform(0.5, 2, 5).astype(dtype)
    w[1] = -w[1]
    b = rng.standard_normal(5).astype(dtype)
    return x, r, g, w, b


def _run(x, r, g, w, b, relu, residual):
    y, mean, var = _batch_forward(x, w, b, 1e-5, None, None, relu, r if residual else None)
    gx, sg, sgx = _batch_backward(
        g, x, w, mean, var, 1e-5, True, relu=(w, b) if relu and not residual else None
    )
    return y, mean, var, gx, sg, sgx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", PLANES)
@pytest.mark.parametrize("relu,residual", [(False, False), (True, False), (True, True)])
def test_channel_split_equals_phase_split_bitwise(L, dtype, relu, residual, threads):
    x, r, g, w, b = _case(L, dtype)
    ref = []
    cnncore.set_num_threads(2)  # one channel on two threads: the phase split
    for c in range(x.shape[1]):
        sl = slice(c, c + 1)
        ref.append(
            _run(
                np.ascontiguousarray(x[:, sl]),
                np.ascontiguousarray(r[:, sl]),
                np.ascontiguousarray(g[:, sl]),
                w[sl],
                b[sl],
                relu,
                residual,
            )
        )
    for t in (1, 2, 3, 4):  # five channels: the channel split (at 1 thread too)
        cnncore.set_num_threads(t)
        y, mean, var, gx, sg, sgx = _run(x, r, g, w, b, relu, residual)
        for c, (yc, mc, vc, gxc, sgc, sgxc) in enumerate(ref):
            assert y[:, c : c + 1].tobytes() == yc.tobytes()
            assert gx[:, c : c + 1].tobytes() == gxc.tobytes()
            assert mean[c] == mc[0] and var[c] == vc[0]
            assert sg[c] == sgc[0] and sgx[c] == sgxc[0]
    # the NumPy reference of the forward (float64)
    xd = x.astype(np.float64)
    m = xd.mean(axis=(0, 2))
    np.testing.assert_allclose(mean, m, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, xd.var(axis=(0, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(128, 64, 49), (128, 32, 196), (64, 16, 784)])
def test_threads_from_touched_elements_same_bits(shape, threads, monkeypatch):
    # ResNet-20's stage shapes: the helpers pick their thread count from the elements they
    # read and write (_touched); forcing one thread gives the same bits
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = np.linspace(0.5, 1.5, shape[1]).astype(np.float32)
    b = np.linspace(-1, 1, shape[1]).astype(np.float32)
    cnncore.set_num_threads(2)
    assert N._touched(x, 3) == 3 * x.size
    out = _run(x, x, g, w, b, True, False)
    monkeypatch.setattr(N, "_touched", lambda x, k: 0)  # one thread whatever the size
    one = _run(x, x, g, w, b, True, False)
    for a, c in zip(out, one, strict=True):
        assert a.tobytes() == c.tobytes()
