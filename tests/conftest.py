import numpy as np
import pytest

import cnncore


def pytest_configure(config):
    # dropout2d reads a 3-D input as (N, C, L) and says so with PyTorch's warning; the spec
    # records' random samples include such inputs (tests/test_activation.py checks it)
    config.addinivalue_line("filterwarnings", "ignore:dropout2d. received a 3-D input:UserWarning")


# Per-dtype tolerances for comparisons against float64 references / PyTorch.
TOL = {
    np.float32: dict(rtol=2e-4, atol=2e-5),
    np.float64: dict(rtol=1e-10, atol=1e-12),
}


def tol(dtype):
    return TOL[np.dtype(dtype).type]


def loosen_for_winograd4(algorithm, monkeypatch):
    """Winograd F(4x4, 3x3)'s float32 error is about 10x that of the other conv algorithms
    (see cnncore/ops/conv_dispatch.py): under ``conv_algorithm("winograd4")`` the float32
    tolerance is 10x looser (float64's stays)."""
    if algorithm == "winograd4":
        t = TOL[np.float32]
        monkeypatch.setitem(TOL, np.float32, dict(rtol=t["rtol"] * 10, atol=t["atol"] * 10))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Put cnncore's thread count back after the test."""
    n = cnncore.get_num_threads()
    yield
    cnncore.set_num_threads(n)


def assert_bit_identical_across_threads(compute, counts=(1, 2, 4)):
    """Run ``compute()`` -- a sequence of arrays or scalars -- with each thread count in
    ``counts`` (repeat counts for several rounds: a data race shows up as a difference) and
    assert that every result has the same dtype, shape and bytes.  The thread count is
    restored afterwards."""
    saved = cnncore.get_num_threads()
    try:
        results = []
        for n in counts:
            cnncore.set_num_threads(n)
            results.append([np.asarray(r) for r in compute()])
    finally:
        cnncore.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes()


def fd_grad(f, a, eps=1e-6):
    """Central finite differences of the scalar ``f()`` with respect to every element of
    ``a``, which is perturbed in place (and restored)."""
    grad = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def numerical_grad(f, x, g, eps=1e-6):
    """Central differences of ``sum(f(x) * g)`` with respect to every element of ``x``."""
    x = x.copy()
    return fd_grad(lambda: float(np.sum(f(x) * g)), x, eps)
