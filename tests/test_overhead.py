"""The per-call fast paths: argument checks memoized per call signature
(cnncore._callcache), the BLAS thread cap through the libraries' own C setters
(cnncore._threads.BlasCap), and the shortcuts of as_float_array / check_numel /
as_model_input / predict.  A cached path must reject everything the checks reject."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cnncore
from cnncore import _callcache, _config, _threads, nn
from cnncore._validation import as_float_array, check_numel

# --------------------------------------------------------------------------------------------
# Memoized checks
# --------------------------------------------------------------------------------------------


def test_call_key_plain_values():
    assert _callcache.call_key((1, "same", None, (1, 2), ((1, 2), (3, 4)))) is not None
    for bad in [1.0, np.int64(1), [1, 2], (1, 2.0), (1, [2]), np.ones(2), object()]:
        assert _callcache.call_key((1, bad)) is None, bad
    # bools are plain, but never equal to the ints they compare equal to
    assert _callcache.call_key((True, 1)) != _callcache.call_key((1, 1))
    assert _callcache.call_key((1, True)) != _callcache.call_key((1, 1))
    assert _callcache.call_key((False,)) != _callcache.call_key((0,))
    assert _callcache.call_key((1, True)) == _callcache.call_key((1, True))


def test_memoized_check_runs_once_per_signature():
    calls = []

    @_callcache.memoize_checks
    def check(func, a, b):
        calls.append((func, a, b))
        if a < 0:
            raise ValueError(f"{func}(): a must be >= 0")
        return (a, b)

    assert check("f", 1, (2, 3)) == (1, (2, 3))
    assert check("g", 1, (2, 3)) == (1, (2, 3))  # func is not part of the key
    assert len(calls) == 1
    for _ in range(2):  # failures are never cached
        with pytest.raises(ValueError, match="f\\(\\): a must be"):
            check("f", -1, 0)
    assert len(calls) == 3
    check("f", 1.0, (2, 3))  # not plain: checked every time
    check("f", 1.0, (2, 3))
    assert len(calls) == 5
    _callcache.clear_all()
    check("f", 1, (2, 3))
    assert len(calls) == 6


def test_memoized_check_is_bounded(monkeypatch):
    monkeypatch.setattr(_callcache, "MAX_ENTRIES", 4)

    @_callcache.memoize_checks
    def check(func, a):
        return (a,)

    for a in range(10):
        check("f", a)
    assert len(check.cache) == 4


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(stride=True), TypeError),
        (dict(stride=1.0), TypeError),
        (dict(stride=(1, True)), TypeError),
        (dict(padding=1.0), TypeError),
        (dict(padding=True), TypeError),
        (dict(dilation=(1.0, 1)), TypeError),
        (dict(groups=True), TypeError),
        (dict(groups=1.0), TypeError),
        (dict(stride=0), ValueError),
        (dict(stride=[0, 1]), ValueError),
        (dict(padding="full"), ValueError),
    ],
)
def test_cached_conv_call_still_rejects_what_the_checks_reject(rng, kwargs, error):
    """stride=1 (and friends) cached first: an argument equal to it as a dict key but
    rejected by the checks (True, 1.0) must still be rejected."""
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    base = dict(stride=1, padding=1, dilation=1, groups=1)
    cnncore.conv2d(x, w, **base)
    cnncore.conv2d(x, w, **base)
    with pytest.raises(error):
        cnncore.conv2d(x, w, **{**base, **kwargs})
    with pytest.raises(error):
        cnncore.conv2d_backward_input(np.ones((1, 3, 6, 6), np.float32), w, x.shape,
                                      **{**base, **kwargs})  # fmt: skip


def test_cached_conv_call_rejects_other_shapes_and_dtypes(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    cnncore.conv2d(x, w)
    with pytest.raises(ValueError, match="channels"):
        cnncore.conv2d(x[:, :1], w[:, :1].repeat(2, axis=1))
    with pytest.raises(TypeError, match="same dtype"):
        cnncore.conv2d(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        cnncore.conv2d(x.astype(np.float16), w)
    with pytest.raises(ValueError, match="bias must have shape"):
        cnncore.conv2d(x, w, np.ones(4, np.float32))
    # equal-valued arguments of other types are checked (and accepted) as before
    np.testing.assert_array_equal(
        cnncore.conv2d(x, w, stride=np.int64(1), padding=[1, 1]),
        cnncore.conv2d(x, w, stride=1, padding=1),
    )


def test_cached_pool_call_rejects_int_flags(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    cnncore.max_pool2d(x, 2, ceil_mode=False)
    cnncore.max_pool2d(x, 2, ceil_mode=False)
    with pytest.raises(TypeError, match="ceil_mode"):
        cnncore.max_pool2d(x, 2, ceil_mode=0)
    with pytest.raises(TypeError, match="kernel_size"):
        cnncore.max_pool2d(x, True)


def test_cached_linear_call_rejects_other_shapes(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    b = np.zeros(5, np.float32)
    y = cnncore.linear(x, w, b)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-6)
    with pytest.raises(ValueError, match="last dimension of x"):
        cnncore.linear(x[:, :3], w, b)
    with pytest.raises(ValueError, match="bias must have shape"):
        cnncore.linear(x, w, b[:4])
    x3 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(cnncore.linear(x3, w, b), x3 @ w.T, rtol=1e-6)
    assert cnncore.linear(x[0], w, b).shape == (5,)


# --------------------------------------------------------------------------------------------
# Shortcuts keep their semantics
# --------------------------------------------------------------------------------------------


def test_as_float_array_shortcut_keeps_the_checks():
    x = np.ones((2, 3), np.float32)
    assert as_float_array(x, "x", "f") is x
    assert as_float_array(x, "x", "f", ndim=2) is x
    with pytest.raises(ValueError, match="x must be a 3-D"):
        as_float_array(x, "x", "f", ndim=3)
    y = as_float_array(x.T, "x", "f")
    assert y.flags.c_contiguous and y is not x.T
    big_endian = x.astype(">f4")
    with pytest.raises(TypeError, match="float32 or float64"):
        as_float_array(big_endian, "x", "f")

    class Sub(np.ndarray):
        pass

    assert type(as_float_array(x.view(Sub), "x", "f")) is Sub  # as before: subclasses pass


def test_check_numel_shortcut():
    assert check_numel((2, 3), "a", "f") == 6
    assert check_numel((0, 3), "a", "f") == 0
    with pytest.raises(ValueError, match="overflows"):
        check_numel((2**40, 2**40), "a", "f")
    with pytest.raises(ValueError, match="GiB"):
        check_numel((2**20, 2**20, 2**10), "a", "f", 1)


def test_model_input_is_used_as_is_when_it_can_be(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0)).eval()
    x = rng.random((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model(x.astype(np.float64)))
    np.testing.assert_array_equal(model(np.asfortranarray(x)), model(x))
    with pytest.raises(TypeError, match="float or uint8"):
        model(x.astype(np.int32))


def test_predict_single_and_several_batches_agree(rng):
    model = cnncore.models.lenet5(rng=0)
    x = rng.random((5, 1, 28, 28), dtype=np.float32)
    whole = model.predict(x)  # one batch
    parts = model.predict(x, batch_size=2)  # batches of 2, 2, 1
    model.eval()
    np.testing.assert_array_equal(whole, model(x))
    expected = np.concatenate([model(x[0:2]), model(x[2:4]), model(x[4:5])])
    np.testing.assert_array_equal(parts, expected)
    # (the GEMM blocking depends on the batch size: equal to rounding across sizes)
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-6)
    one = model(x[:1])
    model.train()
    out = model.predict(x[:1])
    assert model.training  # the mode comes back
    out[...] = 0  # the caller's copy: the next call is not affected
    np.testing.assert_array_equal(model.predict(x[:1]), one)


def test_sequential_dtype_without_walking_parameter_names():
    model = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Linear(2, 2, dtype=np.float64)))
    assert model.dtype == np.float64
    assert nn.Sequential(nn.ReLU()).dtype == np.float32


# --------------------------------------------------------------------------------------------
# The BLAS thread cap
# --------------------------------------------------------------------------------------------


def _blas_threads():
    return [lib.num_threads for lib in _config._blas_controllers()]


def test_blas_cap_sets_one_thread_and_restores():
    before = _blas_threads()
    cap = _config.blas_single_thread()
    assert cap.depth == 0
    with _config.blas_single_thread():
        assert all(n == 1 for n in _blas_threads())
        with _config.blas_single_thread():
            assert cap.depth == 2
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before and cap.depth == 0
    with pytest.raises(RuntimeError):
        with _config.blas_single_thread():
            raise RuntimeError
    assert _blas_threads() == before and cap.depth == 0


def test_blas_cap_uses_c_entry_points_here():
    """SciPy's and NumPy's OpenBLAS (pthreads) are driven through their C setters."""
    libs = _config._blas_controllers()
    direct = [lib for lib in libs if _config._c_entry_points(lib) is not None]
    if not any(lib.internal_api == "openblas" for lib in libs):
        pytest.skip("no OpenBLAS loaded")
    assert direct
    assert _config._BLAS_CAP.n_libraries[0] == len(direct)


def test_blas_cap_fallback_drives_python_controllers():
    class Fake:
        def __init__(self, n):
            self.num_threads = n
            self.log = []

        def set_num_threads(self, n):
            self.log.append(n)
            self.num_threads = n

    multi, single = Fake(4), Fake(1)
    cap = _threads.BlasCap()
    cap.configure([], [multi, single])
    assert cap.n_libraries == (0, 2)
    with cap:
        assert multi.num_threads == 1
        with cap:
            pass
        assert multi.num_threads == 1
    assert multi.num_threads == 4 and multi.log == [1, 4] and single.log == []


def test_blas_cap_configure_checks():
    cap = _threads.BlasCap()
    with pytest.raises(ValueError, match="null"):
        cap.configure([(0, 0, False)])
    with pytest.raises(ValueError, match="at most"):
        cap.configure([(1, 1, False)] * 9)
    with cap:
        with pytest.raises(RuntimeError, match="while the cap is held"):
            cap.configure([])


def test_blas_cap_shared_by_python_threads():
    before = _blas_threads()
    errors = []
    barrier = threading.Barrier(4)

    def work():
        try:
            barrier.wait()
            for _ in range(200):
                with _config.blas_single_thread():
                    if any(n != 1 for n in _blas_threads()):
                        errors.append("BLAS not capped inside the cap")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _blas_threads() == before and _config._BLAS_CAP.depth == 0


def test_small_plan_steps_run_on_one_thread(monkeypatch, restore_threads):
    """Inference plans run steps too small to share on one thread (a speed choice: results
    are the same for any thread count); larger ones use cnncore's thread count."""
    from cnncore.ops import conv as C
    from cnncore.ops import linear as L

    seen = []

    class Spy:
        def __init__(self, module):
            self.module = module

        def __getattr__(self, name):
            fn = getattr(self.module, name)

            def call(*args):
                if name not in ("blocked_packed_size", "blocked_refresh_packed"):
                    seen.append((name, args[-1]))  # (a kernel call: its thread count)
                return fn(*args)

            return call

    monkeypatch.setattr(C, "_conv", Spy(C._conv))
    monkeypatch.setattr(L, "_linear", Spy(L._linear))
    cnncore.set_num_threads(2)
    rng = np.random.default_rng(0)
    small = cnncore.models.lenet5(rng=0).eval()
    x1 = rng.random((1, 1, 28, 28), dtype=np.float32)
    ref = small(x1)  # records the plan (layer calls), then:
    seen.clear()
    np.testing.assert_array_equal(small(x1), ref)
    assert seen and all(n_threads == 1 for _, n_threads in seen), seen
    big = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, rng=0)).eval()
    x2 = rng.random((4, 16, 32, 32), dtype=np.float32)
    ref = big(x2)
    seen.clear()
    np.testing.assert_array_equal(big(x2), ref)
    # (the channel-blocked algorithm runs on weights packed once)
    assert seen in ([("conv2d_forward", 2)], [("blocked_forward_packed_res", 2)]), seen
    # batch 1: a convolution of >= PAR_MACS multiply-adds shares its output rows
    one = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, rng=0)).eval()
    x3 = rng.random((1, 16, 32, 32), dtype=np.float32)
    with cnncore.conv_algorithm("blocked"):
        ref = one(x3)
        seen.clear()
        np.testing.assert_array_equal(one(x3), ref)
    assert seen == [("blocked_forward_packed_res", 2)], seen
