"""SGD's one-call update of all parameters (``_optim.sgd_update_many``, used by
``optim.SGD.step``): bit-identical to the per-parameter kernel and to a NumPy reference of
PyTorch's single-tensor SGD, for any thread count and task size, mixed dtypes, odd sizes,
empty parameters, and the fallback for arrays the batched kernel does not take."""

import numpy as np
import pytest

import cnncore
from cnncore import _optim, optim
from cnncore.nn import Parameter

# sizes around the task boundaries (4096-element spans, 32768-element blocks), tiny ones
SIZES = [(16,), (3, 5), (), (0,), (64, 3, 3, 3), (4097,), (16,), (300, 130), (7,)]
SETTINGS = [
    dict(lr=0.1, momentum=0.0),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
    dict(lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.1),
    # the vectorized loop of sgd_span (momentum, no dampening, no nesterov; steps >= 2)
    dict(lr=0.1, momentum=0.9, weight_decay=5e-4),
]


def _params(rng, dtypes):
    return [
        Parameter(rng.standard_normal(s).astype(dtypes[i % len(dtypes)]), name=f"p{i}")
        for i, s in enumerate(SIZES)
    ]


def _grads(rng, params, step):
    out = []
    for p in params:
        g = (rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-3, 1)).astype(p.dtype)
        if g.size and step == 1:
            g.reshape(-1)[0] = np.nan if p.size % 2 else np.inf  # special values pass through
            g.reshape(-1)[-1] = -0.0
        out.append(g)
    return out


def _numpy_sgd(
    data, grad, buf, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False
):
    """PyTorch's single-tensor SGD in the parameter's dtype, operation by operation."""
    dt = data.dtype.type
    g = grad.copy()
    if weight_decay:
        g = g + data * dt(weight_decay)
    if momentum:
        b = g.copy() if t == 1 else buf * dt(momentum)
        if t > 1:
            b = b + g * dt(1 - dampening) if dampening else b + g
        buf[...] = b
        g = g + b * dt(momentum) if nesterov else b
    data[...] = data + g * dt(-lr)


def _run(opt_params, settings, steps, seed, threads=None, per_param=False):
    rng = np.random.default_rng(seed)
    opt = optim.SGD(opt_params, **settings)
    if per_param:  # the per-parameter kernel calls of the base class
        opt._update_all = lambda t: optim.Optimizer._update_all(opt, t)
    for t in range(1, steps + 1):
        for p, g in zip(opt_params, _grads(rng, opt_params, t), strict=True):
            p.grad[...] = g
        if threads is None:
            opt.step()
        else:
            old = cnncore.get_num_threads()
            cnncore.set_num_threads(threads)
            try:
                opt.step()
            finally:
                cnncore.set_num_threads(old)
    return [p.data.copy() for p in opt_params], opt


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtypes", [(np.float32,), (np.float64,), (np.float32, np.float64)])
@pytest.mark.parametrize("settings", SETTINGS)
def test_one_call_update_equals_per_parameter_and_numpy(settings, dtypes):
    rng = np.random.default_rng(1)
    base = _params(rng, dtypes)
    fast, opt = _run([Parameter(p.data.copy()) for p in base], settings, 4, 7)
    slow, _ = _run([Parameter(p.data.copy()) for p in base], settings, 4, 7, per_param=True)
    # NumPy reference
    ref = [p.data.copy() for p in base]
    bufs = [np.zeros_like(a) for a in ref]
    g_rng = np.random.default_rng(7)
    for t in range(1, 5):
        for a, g, b in zip(ref, _grads(g_rng, [Parameter(a) for a in ref], t), bufs, strict=True):
            _numpy_sgd(a, g, b, t, **settings)
    for a, b, r in zip(fast, slow, ref, strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        np.testing.assert_array_equal(a.view(np.uint8), r.view(np.uint8))
    if settings.get("momentum"):
        for i, b in enumerate(bufs):
            np.testing.assert_array_equal(opt._state[i]["momentum_buffer"], b)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_call_update_same_bits_for_any_thread_count(threads):
    rng = np.random.default_rng(2)
    base = _params(rng, (np.float32,))
    settings = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    one, _ = _run([Parameter(p.data.copy()) for p in base], settings, 3, 5, threads=1)
    other, _ = _run([Parameter(p.data.copy()) for p in base], settings, 3, 5, threads=threads)
    for a, b in zip(one, other, strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("block", [1, 5, 16, 4096, 1 << 20])
@pytest.mark.parametrize("n_threads", [1, 2, 4])
def test_sgd_update_many_any_task_size(block, n_threads):
    rng = np.random.default_rng(3)
    sizes = [0, 1, 17, 5000, 3, 0, 40000, 2]
    data = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grad = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    buf = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    want_d = [d.copy() for d in data]
    want_b = [b.copy() for b in buf]
    for d, g, b in zip(want_d, grad, want_b, strict=True):
        _optim.sgd_update(d, g, b, 0.1, 0.9, 0.0, 0.01, False, False, 1)
    assert _optim.sgd_update_many(
        data, grad, buf, 0.1, 0.9, 0.0, 0.01, False, False, block, n_threads
    )
    for a, b in zip(data + buf, want_d + want_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sgd_update_many_refuses_arrays_it_cannot_take_and_changes_nothing():
    rng = np.random.default_rng(4)
    data = [rng.standard_normal(8).astype(np.float32) for _ in range(3)]
    grad = [rng.standard_normal(8).astype(np.float32) for _ in range(3)]
    buf = [np.zeros(8, np.float32) for _ in range(3)]
    before = [d.copy() for d in data]
    args = (0.1, 0.9, 0.0, 0.0, False, False, 4096, 1)
    strided = rng.standard_normal(16).astype(np.float32)[::2]
    read_only = data[2].copy()
    read_only.flags.writeable = False
    for bad in (
        (data[:2] + [strided], grad, buf),  # not contiguous
        (data, grad[:2] + [grad[2].astype(np.float64)], buf),  # another dtype
        (data, grad[:2] + [grad[2][:7]], buf),  # another size
        (data[:2] + [read_only], grad, buf),  # read-only
        (data, grad, buf[:2] + [[0.0] * 8]),  # not an array
        ([d.astype(np.int32) for d in data], grad, buf),  # not float
    ):
        assert _optim.sgd_update_many(*bad, *args) is False
        for d, b in zip(data, before, strict=True):
            np.testing.assert_array_equal(d, b)
    with pytest.raises(ValueError, match="one array per parameter"):
        _optim.sgd_update_many(data, grad[:2], buf, *args)
    assert _optim.sgd_update_many([], [], [], *args) is True


def test_sgd_step_falls_back_per_parameter_for_non_contiguous_grads():
    rng = np.random.default_rng(5)
    shapes = [(4, 6), (5,)]
    a = [Parameter(rng.standard_normal(s)) for s in shapes]
    b = [Parameter(p.data.copy()) for p in a]
    opt_a = optim.SGD(a, lr=0.1, momentum=0.9)
    opt_b = optim.SGD(b, lr=0.1, momentum=0.9)
    opt_b._update_all = lambda t: optim.Optimizer._update_all(opt_b, t)
    for _ in range(3):
        big = rng.standard_normal((6, 8))
        g1 = rng.standard_normal(5)
        a[0].grad = big[:, :4].T  # (4, 6) strided view
        b[0].grad = big[:, :4].T.copy()
        a[1].grad[...] = g1
        b[1].grad[...] = g1
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_momentum_switched_on_before_the_first_step_uses_the_new_buffers():
    p = Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.5)
    opt._set_hyper("momentum", 0.9, "test")
    p.grad[...] = [1.0, 2.0, 3.0]
    opt.step()
    np.testing.assert_array_equal(opt._state[0]["momentum_buffer"], [1.0, 2.0, 3.0])
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(opt._state[0]["momentum_buffer"], [1.9, 2.8, 3.7])
    np.testing.assert_allclose(p.data, [1 - 0.5 - 0.95, 1 - 1.0 - 1.4, 1 - 1.5 - 1.85])
