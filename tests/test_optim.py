"""Tests for cnncore.optim: optimizers and LR schedulers, step by step against torch.optim."""

import io
import math
import re
import tracemalloc
import zlib

import numpy as np
import pytest

from cnncore import optim
from cnncore.nn import Parameter

SHAPES = [(3, 4), (5,), (2, 3, 2), ()]
STEPS = 20
# Measured agreement with torch is ~1 ulp; these leave room for FMA/vectorization differences.
TOL = {np.float64: dict(rtol=1e-11, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}

# (our class name, kwargs) -- the torch class has the same name and arguments.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.1)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.5))),  # lerp weight >= 0.5 branch
    ("Adam", dict(lr=0.01, betas=(0.0, 0.0), eps=0.0)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.2, 0.9), weight_decay=0.0)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.005, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, centered=True)),
    ("RMSprop", dict(lr=0.005, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.005, alpha=0.3, centered=True)),  # lerp weight >= 0.5 branch
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.01)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    (
        "Adagrad",
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.5, eps=1e-6),
    ),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in CASES]

# Our state-buffer names are torch's state keys.
BUFFERS = {
    "momentum_buffer",
    "exp_avg",
    "exp_avg_sq",
    "max_exp_avg_sq",
    "square_avg",
    "grad_avg",
    "sum",
}


def make_params(rng, dtype, shapes=SHAPES):
    return [
        Parameter(rng.standard_normal(s).astype(dtype), name=f"p{i}") for i, s in enumerate(shapes)
    ]


def random_grads(rng, params):
    # Varied magnitudes per parameter, like real layers.
    return [
        (rng.standard_normal(p.shape) * 10.0 ** rng.uniform(-2, 1)).astype(p.dtype) for p in params
    ]


class TorchTwin:
    """The same parameters and optimizer in torch."""

    def __init__(self, torch, name, kwargs, params, cls=None):
        self.torch = torch
        self.tensors = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
        extra = {} if name in ("SGD",) else {"foreach": False}
        cls = cls or getattr(torch.optim, name)
        self.opt = cls(self.tensors, **kwargs, **extra)

    def step(self, grads):
        for t, g in zip(self.tensors, grads, strict=True):
            t.grad = self.torch.tensor(g.copy())
        self.opt.step()

    def data(self, i):
        return self.tensors[i].detach().numpy()

    def state(self, i):
        st = self.opt.state[self.tensors[i]]
        return {k: v.numpy() for k, v in st.items() if k in BUFFERS and v is not None}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_matches_torch_step_by_step(name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(zlib.crc32(repr((name, kwargs, np.dtype(dtype).name)).encode()))
    params = make_params(rng, dtype)
    arrays = [p.data for p in params]
    opt = getattr(optim, name)(params, **kwargs)
    twin = TorchTwin(torch, name, kwargs, params)
    for step in range(STEPS):
        grads = random_grads(rng, params)
        for p, g in zip(params, grads, strict=True):
            p.grad[...] = g
        opt.step()
        twin.step(grads)
        for i, p in enumerate(params):
            assert p.data is arrays[i], "update must be in place"
            assert p.data.dtype == dtype
            np.testing.assert_allclose(
                p.data, twin.data(i), **TOL[dtype], err_msg=f"step {step}, param {i}"
            )
    sd = opt.state_dict()
    for i in range(len(params)):
        ref = twin.state(i)
        ours = {k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith(f"state.{i}.")}
        assert set(ours) == set(ref)
        for k in ref:
            np.testing.assert_allclose(ours[k], ref[k], **TOL[dtype], err_msg=k)
    assert opt.step_count == STEPS


def test_float32_matches_torch_closely():
    """float32 updates are done in float32 like torch (not in float64 and rounded)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    params = make_params(rng, np.float32, [(50, 40)])
    opt = optim.Adam(params, lr=0.01)
    twin = TorchTwin(torch, "Adam", dict(lr=0.01), params)
    p64 = Parameter(params[0].data.astype(np.float64))
    opt64 = optim.Adam([p64], lr=0.01)
    for _ in range(STEPS):
        g = random_grads(rng, params)
        params[0].grad[...] = g[0]
        p64.grad[...] = g[0]
        opt.step()
        opt64.step()
        twin.step(g)
    err_torch = np.abs(params[0].data - twin.data(0)).max()
    err_f64 = np.abs(params[0].data - p64.data).max()
    assert err_torch <= 1e-6
    assert err_f64 > 0  # the float32 path is really float32


def test_mixed_dtypes_in_one_optimizer():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    params = make_params(rng, np.float64, [(4, 3), (7,)]) + make_params(
        rng, np.float32, [(2, 5), (30,)]
    )
    kwargs = dict(lr=0.01, weight_decay=0.01, amsgrad=True)
    opt = optim.AdamW(params, **kwargs)
    twin = TorchTwin(torch, "AdamW", kwargs, params)
    for _ in range(10):
        grads = random_grads(rng, params)
        for p, g in zip(params, grads, strict=True):
            p.grad[...] = g
        opt.step()
        twin.step(grads)
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.data, twin.data(i), **TOL[p.dtype.type])


def test_lr_change_between_steps_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    params = make_params(rng, np.float64)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    twin = TorchTwin(torch, "SGD", dict(lr=0.1, momentum=0.9), params)
    for step in range(10):
        lr = 0.1 / (1 + step)
        opt.lr = lr
        twin.opt.param_groups[0]["lr"] = lr
        grads = random_grads(rng, params)
        for p, g in zip(params, grads, strict=True):
            p.grad[...] = g
        opt.step()
        twin.step(grads)
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.data, twin.data(i), **TOL[np.float64])


def test_non_contiguous_grad():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    params = make_params(rng, np.float64, [(4, 6)])
    opt = optim.RMSprop(params, lr=0.01, momentum=0.5)
    twin = TorchTwin(torch, "RMSprop", dict(lr=0.01, momentum=0.5), params)
    for _ in range(5):
        big = rng.standard_normal((6, 8))
        params[0].grad = big[:, :4].T  # (4, 6) strided view
        assert not params[0].grad.flags.c_contiguous
        opt.step()
        twin.step([np.ascontiguousarray(params[0].grad)])
    np.testing.assert_allclose(params[0].data, twin.data(0), **TOL[np.float64])


# ------------------------------------------------------------------------------------------
# Reference checks that do not need torch (hand-written formulas)
# ------------------------------------------------------------------------------------------


def test_sgd_momentum_reference():
    """Momentum buffer = first gradient at step 1; then mu * b + (1 - damp) * g."""
    p = Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.5, momentum=0.9, dampening=0.5, weight_decay=0.1)
    theta = p.data.copy()
    buf = None
    for g in ([1.0, 2.0], [0.5, -1.0], [-3.0, 0.25]):
        g = np.array(g)
        p.grad[...] = g
        opt.step()
        d = g + 0.1 * theta
        buf = d.copy() if buf is None else 0.9 * buf + 0.5 * d
        theta = theta - 0.5 * buf
        np.testing.assert_allclose(p.data, theta, rtol=1e-14)


def test_adam_reference():
    rng = np.random.default_rng(8)
    p = Parameter(rng.standard_normal(6))
    opt = optim.Adam([p], lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    theta, m, v = p.data.copy(), np.zeros(6), np.zeros(6)
    for t in range(1, 8):
        g = rng.standard_normal(6)
        p.grad[...] = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        theta = theta - 0.01 / (1 - 0.9**t) * m / (np.sqrt(v) / math.sqrt(1 - 0.99**t) + 1e-6)
        np.testing.assert_allclose(p.data, theta, rtol=1e-12)


def test_adamw_decoupled_decay_with_zero_grad():
    p = Parameter(np.array([2.0, -4.0]))
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    opt.step()  # zero gradient: pure decay (m = v = 0 so the Adam part is 0)
    np.testing.assert_allclose(p.data, [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)
    q = Parameter(np.array([2.0, -4.0]))
    optim.Adam([q], lr=0.1, weight_decay=0.5).step()  # L2: gradient wd*p -> normalized step
    assert not np.allclose(q.data, p.data)


def test_adagrad_reference():
    p = Parameter(np.array([1.0, 1.0]))
    opt = optim.Adagrad([p], lr=0.5, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0)
    acc, theta = np.ones(2), p.data.copy()
    for t, g in enumerate(([1.0, 2.0], [3.0, -1.0], [0.0, 0.5]), start=1):
        g = np.array(g)
        p.grad[...] = g
        opt.step()
        acc += g * g
        theta -= 0.5 / (1 + (t - 1) * 0.5) * g / np.sqrt(acc)
        np.testing.assert_allclose(p.data, theta, rtol=1e-14)


def test_zero_lr_leaves_params_unchanged_except_decoupled():
    rng = np.random.default_rng(9)
    for cls in (optim.SGD, optim.Adam, optim.RMSprop, optim.Adagrad):
        p = Parameter(rng.standard_normal(5))
        before = p.data.copy()
        opt = cls([p], lr=0.0)
        p.grad[...] = rng.standard_normal(5)
        opt.step()
        np.testing.assert_array_equal(p.data, before)


# ------------------------------------------------------------------------------------------
# Memory: no per-step allocations
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
        ("Adam", dict(weight_decay=0.1, amsgrad=True)),
        ("AdamW", dict(amsgrad=True)),
        ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.1)),
        ("Adagrad", dict(weight_decay=0.1)),
    ],
)
def test_step_allocates_no_arrays(name, kwargs):
    p = Parameter(np.ones((500, 500), dtype=np.float32))  # 1 MB
    p.grad[...] = 0.5
    opt = getattr(optim, name)([p], **kwargs)
    opt.step()
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"{name}.step() allocated {peak} bytes"


# ------------------------------------------------------------------------------------------
# zero_grad, state_dict
# ------------------------------------------------------------------------------------------


def test_zero_grad():
    rng = np.random.default_rng(10)
    params = make_params(rng, np.float32)
    grads = [p.grad for p in params]
    for p in params:
        p.grad[...] = rng.standard_normal(p.shape)
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad()
    for p, g in zip(params, grads, strict=True):
        assert p.grad is g
        assert not np.any(p.grad)


def savez_round_trip(sd):
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize(
    "name,kwargs",
    [c for c in CASES if c[1]],
    ids=[i for i, c in zip(IDS, CASES, strict=True) if c[1]],
)
@pytest.mark.parametrize("via_npz", [False, True])
def test_state_dict_round_trip_continues_identically(name, kwargs, via_npz):
    rng = np.random.default_rng(11)
    params_a = make_params(rng, np.float32)
    opt_a = getattr(optim, name)(params_a, **kwargs)
    for _ in range(5):
        for p, g in zip(params_a, random_grads(rng, params_a), strict=True):
            p.grad[...] = g
        opt_a.step()
    sd = opt_a.state_dict()
    if via_npz:
        sd = savez_round_trip(sd)
    # A fresh optimizer with default hyper-parameters and copies of the parameters.
    params_b = [Parameter(p.data.copy()) for p in params_a]
    opt_b = getattr(optim, name)(params_b, lr=123.0)
    opt_b.load_state_dict(sd)
    assert opt_b.lr == opt_a.lr and repr(opt_b) == repr(opt_a)
    assert opt_b.step_count == opt_a.step_count
    for _ in range(5):
        grads = random_grads(rng, params_a)
        for pa, pb, g in zip(params_a, params_b, grads, strict=True):
            pa.grad[...] = g
            pb.grad[...] = g
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_state_dict_is_a_copy_and_plain():
    p = Parameter(np.zeros(3))
    opt = optim.Adam([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    saved = sd["state.0.exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state.0.exp_avg"], saved)
    for v in sd.values():
        assert isinstance(v, (str, int, float, bool, tuple, np.ndarray))
    assert sd["optimizer"] == "Adam" and sd["betas"] == (0.9, 0.999)


def test_load_state_dict_errors_leave_optimizer_untouched():
    p = Parameter(np.zeros((2, 2)))
    opt = optim.Adam([p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    good = opt.state_dict()
    before = repr(opt), opt.state_dict()
    bad_cases = [
        ({**good, "optimizer": "SGD"}, ValueError, "another optimizer"),
        ({**good, "num_params": 2}, ValueError, "num_params"),
        ({**good, "state.0.exp_avg": np.zeros(3)}, ValueError, "state.0.exp_avg"),
        ({**good, "state.0.exp_avg": np.zeros((2, 2), dtype=object)}, TypeError, "exp_avg"),
        (
            {k: v for k, v in good.items() if k != "state.0.exp_avg_sq"},
            ValueError,
            "state.0.exp_avg_sq",
        ),
        ({k: v for k, v in good.items() if k != "eps"}, ValueError, "eps"),
        ({**good, "lr": -1.0}, ValueError, "lr"),
        ({**good, "betas": (1.5, 0.9)}, ValueError, "betas"),
        ({**good, "amsgrad": True}, ValueError, "max_exp_avg_sq"),  # buffer missing
        ({**good, "step_count": -1}, ValueError, "step_count"),
        ([1, 2], TypeError, "state_dict"),
    ]
    for sd, exc, match in bad_cases:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(sd)
        assert repr(opt) == before[0]
        after = opt.state_dict()
        for k, v in before[1].items():
            np.testing.assert_array_equal(after[k], v)


def test_load_state_dict_can_enable_amsgrad():
    p = Parameter(np.zeros(2))
    sd = optim.Adam([Parameter(np.zeros(2))], amsgrad=True).state_dict()
    opt = optim.Adam([p])
    opt.load_state_dict(sd)
    assert opt.amsgrad is True
    p.grad[...] = 1.0
    opt.step()


# ------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------


def P():
    return [Parameter(np.zeros(3))]


BAD_VALUES = [
    (optim.SGD, dict(lr=-1), "lr", "Received: lr=-1"),
    (optim.SGD, dict(lr=float("nan")), "lr", "lr=nan"),
    (optim.SGD, dict(lr=float("inf")), "lr", "lr=inf"),
    (optim.SGD, dict(lr=0.1, momentum=-0.1), "momentum", "momentum=-0.1"),
    (optim.SGD, dict(lr=0.1, dampening=-1), "dampening", "dampening=-1"),
    (optim.SGD, dict(lr=0.1, dampening=1.5), "dampening", "dampening=1.5"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay", "weight_decay=-0.0001"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "nesterov", "momentum=0"),
    (
        optim.SGD,
        dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        "nesterov",
        "dampening=0.1",
    ),
    (optim.Adam, dict(lr=-0.001), "lr", "lr=-0.001"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "betas", r"betas=\(1.0, 0.999\)"),
    (optim.Adam, dict(betas=(0.9, -0.1)), "betas", "betas="),
    (optim.Adam, dict(betas=(0.9, float("nan"))), "betas", "betas="),
    (optim.Adam, dict(eps=-1e-8), "eps", "eps=-1e-08"),
    (optim.Adam, dict(weight_decay=-1), "weight_decay", "weight_decay=-1"),
    (optim.AdamW, dict(weight_decay=-0.01), "weight_decay", "weight_decay=-0.01"),
    (optim.AdamW, dict(betas=(0.9, 1.0)), "betas", "betas="),
    (optim.RMSprop, dict(alpha=1.5), "alpha", "alpha=1.5"),
    (optim.RMSprop, dict(alpha=-0.1), "alpha", "alpha=-0.1"),
    (optim.RMSprop, dict(eps=-1), "eps", "eps=-1"),
    (optim.RMSprop, dict(momentum=-1), "momentum", "momentum=-1"),
    (optim.RMSprop, dict(weight_decay=-1), "weight_decay", "weight_decay=-1"),
    (optim.Adagrad, dict(lr_decay=-1), "lr_decay", "lr_decay=-1"),
    (
        optim.Adagrad,
        dict(initial_accumulator_value=-1),
        "initial_accumulator_value",
        "initial_accumulator_value=-1",
    ),
    (optim.Adagrad, dict(eps=-1), "eps", "eps=-1"),
    (optim.Adagrad, dict(weight_decay=-1), "weight_decay", "weight_decay=-1"),
]


@pytest.mark.parametrize(
    "cls,kwargs,name,received",
    BAD_VALUES,
    ids=[f"{c.__name__}-{n}-{i}" for i, (c, _, n, _) in enumerate(BAD_VALUES)],
)
def test_bad_hyper_parameters(cls, kwargs, name, received):
    with pytest.raises(ValueError, match=name) as info:
        cls(P(), **kwargs)
    msg = str(info.value)
    assert msg.startswith(f"{cls.__name__}(): ")
    assert re.search(received, msg), msg


def test_lr_message_exact():
    with pytest.raises(ValueError) as info:
        optim.SGD(P(), lr=-1)
    assert str(info.value) == "SGD(): lr must be >= 0. Received: lr=-1"


BAD_TYPES = [
    (optim.SGD, dict(lr="0.1"), "lr"),
    (optim.SGD, dict(lr=None), "lr"),
    (optim.SGD, dict(lr=True), "lr"),
    (optim.SGD, dict(lr=0.1, nesterov=1, momentum=0.9), "nesterov"),
    (optim.Adam, dict(amsgrad="yes"), "amsgrad"),
    (optim.Adam, dict(betas=0.9), "betas"),
    (optim.Adam, dict(betas=(0.9, 0.99, 0.999)), "betas"),
    (optim.Adam, dict(betas=("a", 0.9)), "betas"),
    (optim.RMSprop, dict(centered=None), "centered"),
]


@pytest.mark.parametrize("cls,kwargs,name", BAD_TYPES)
def test_bad_hyper_parameter_types(cls, kwargs, name):
    with pytest.raises(TypeError, match=name):
        cls(P(), **kwargs)


def test_bad_params():
    p = Parameter(np.zeros(3))
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="params"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="params"):
        optim.SGD(None, lr=0.1)
    with pytest.raises(TypeError, match="groups"):
        optim.SGD([{"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.SGD([Parameter(np.zeros(3, dtype=np.int64))], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.SGD([Parameter(np.zeros(3, dtype=np.float16))], lr=0.1)
    # generators are fine
    opt = optim.SGD((q for q in [p]), lr=0.1)
    assert opt.params == (p,)


def test_lr_setter_and_read_only_hyper_parameters():
    opt = optim.SGD(P(), lr=0.1, momentum=0.9)
    opt.lr = 0.5
    assert opt.lr == 0.5 and isinstance(opt.lr, float)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -0.5
    assert opt.lr == 0.5
    assert opt.momentum == 0.9
    with pytest.raises(AttributeError):
        opt.momentum = 0.5
    assert "SGD(lr=0.5, momentum=0.9" in repr(opt)


def test_step_rejects_bad_grads_without_updating():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = optim.SGD([a, b], lr=0.1)
    a.grad[...] = 1.0
    b.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"params\[1\].grad"):
        opt.step()
    np.testing.assert_array_equal(a.data, 1.0)
    assert opt.step_count == 0
    b.grad = np.ones(2, dtype=np.float32)
    with pytest.raises(TypeError, match=r"params\[1\].grad.dtype"):
        opt.step()
    b.grad = None
    with pytest.raises(TypeError, match=r"params\[1\].grad"):
        opt.step()
    b.grad = np.zeros(2)
    b.data = np.ones(5)
    with pytest.raises(ValueError, match=r"params\[1\].data"):
        opt.step()


# ------------------------------------------------------------------------------------------
# Schedulers
# ------------------------------------------------------------------------------------------

SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
    ("CosineAnnealingLR", dict(T_max=7)),
    ("CosineAnnealingLR", dict(T_max=1, eta_min=0.001)),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULERS)
def test_scheduler_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    opt = optim.SGD(P(), lr=0.1)
    sched = getattr(optim, name)(opt, **kwargs)
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    assert sched.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-14)
    for epoch in range(1, 26):
        t_opt.step()
        t_sched.step()
        sched.step()
        assert sched.last_epoch == t_sched.last_epoch == epoch
        assert sched.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12, abs=1e-15)
        assert opt.lr == sched.get_last_lr()[0]


def test_cosine_closed_form():
    opt = optim.SGD(P(), lr=0.2)
    sched = optim.CosineAnnealingLR(opt, T_max=10, eta_min=0.02)
    for t in range(1, 31):
        sched.step()
        ref = 0.02 + (0.2 - 0.02) * (1 + math.cos(math.pi * t / 10)) / 2
        assert opt.lr == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_step_lr_closed_form():
    opt = optim.Adam(P(), lr=1.0)
    sched = optim.StepLR(opt, step_size=4, gamma=0.25)
    for t in range(1, 17):
        sched.step()
        assert opt.lr == 0.25 ** (t // 4)


def test_scheduler_drives_training_like_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    params = make_params(rng, np.float64)
    opt = optim.Adam(params, lr=0.05)
    sched = optim.CosineAnnealingLR(opt, T_max=4)
    twin = TorchTwin(torch, "Adam", dict(lr=0.05), params)
    t_sched = torch.optim.lr_scheduler.CosineAnnealingLR(twin.opt, T_max=4)
    for _epoch in range(6):
        for _ in range(3):
            grads = random_grads(rng, params)
            for p, g in zip(params, grads, strict=True):
                p.grad[...] = g
            opt.step()
            twin.step(grads)
        sched.step()
        t_sched.step()
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.data, twin.data(i), **TOL[np.float64])


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD(P(), lr=0.1)
    sched = optim.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    for _ in range(4):
        sched.step()
    opt_sd, sd = opt.state_dict(), savez_round_trip(sched.state_dict())
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    opt2 = optim.SGD(P(), lr=0.5)
    opt2.load_state_dict(opt_sd)
    sched2 = optim.CosineAnnealingLR(opt2, T_max=1)
    sched2.load_state_dict(sd)
    assert sched2.T_max == 6 and sched2.base_lr == 0.1 and sched2.last_epoch == 4
    lrs2 = []
    for _ in range(5):
        sched2.step()
        lrs2.append(opt2.lr)
    assert lrs2 == lrs
    with pytest.raises(ValueError, match="another scheduler"):
        optim.StepLR(opt2, step_size=2).load_state_dict(sched.state_dict())


@pytest.mark.parametrize(
    "factory,exc,match",
    [
        (lambda o: optim.StepLR(o, step_size=0), ValueError, "step_size"),
        (lambda o: optim.StepLR(o, step_size=2.0), TypeError, "step_size"),
        (lambda o: optim.StepLR(o, step_size=2, gamma=-0.1), ValueError, "gamma"),
        (lambda o: optim.ExponentialLR(o, gamma=-1), ValueError, "gamma"),
        (lambda o: optim.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
        (lambda o: optim.CosineAnnealingLR(o, T_max=5, eta_min=-1), ValueError, "eta_min"),
        (lambda o: optim.StepLR("sgd", step_size=1), TypeError, "optimizer"),
    ],
)
def test_scheduler_bad_arguments(factory, exc, match):
    opt = optim.SGD(P(), lr=0.1)
    with pytest.raises(exc, match=match) as info:
        factory(opt)
    assert "Received:" in str(info.value)
