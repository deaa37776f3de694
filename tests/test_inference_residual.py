"""Graph plans run a residual block's second convolution, its Add and the ReLU after it as
one step: the packed channel-blocked forward with an add (+ ReLU) epilogue
(cnncore.ops._conv.blocked_forward_packed_res), bit-identical to the convolution, NumPy's
add in the Add's operand order and the ReLU kernel, for any thread count; each task pads
only the input rows its band of output rows reads."""

import numpy as np
import pytest
from test_inference_packed import _case as _packed_case
from test_inference_packed import _pack

import cnncore
from cnncore import models, nn
from cnncore._shared import ConvAlgorithm
from cnncore.nn import inference
from cnncore.ops import conv as conv_ops

K = conv_ops._conv
BLOCKED = int(ConvAlgorithm.ALGO_BLOCKED)

# (N, C, K, H, W, kh, kw, stride, padding, dilation, groups)
CASES = [
    (1, 16, 16, 12, 12, 3, 3, 1, 1, 1, 1),
    (1, 8, 24, 9, 7, 3, 3, 2, 1, 1, 1),  # stride 2: bands read overlapping input rows
    (2, 6, 10, 8, 8, 5, 3, 1, 2, 1, 2),
    (1, 4, 40, 7, 9, 3, 3, 1, 0, 2, 1),  # dilation
    (1, 3, 5, 6, 6, 1, 1, 1, 0, 1, 1),
    (1, 12, 12, 2, 5, 3, 3, 1, 1, 1, 3),  # fewer output rows than threads
    (1, 16, 32, 16, 16, 1, 1, 2, 0, 1, 1),  # a ResNet shortcut
]


def _case(case, dtype, seed=0):
    """test_inference_packed's operands and packed weights, plus a residual of y's shape."""
    x, w, b, geo = _packed_case(case, dtype, seed)
    packed = _pack(w, b, geo)
    r = np.random.default_rng(seed + 1).standard_normal((case[0], case[2], *geo[1]))
    return x, w, b, packed, r.astype(dtype)


# float32 only: the blocked and rows kernels (float64 runs GEMM: test_conv_float64.py)
@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize("case", CASES)
def test_residual_epilogue_is_conv_then_add_then_relu_bit_for_bit(case, dtype):
    N, C, Kc, H, W, kh, kw, s, p, d, g = case
    x, w, b, packed, r = _case(case, dtype)
    conv = np.empty_like(r)
    K.conv2d_forward(x, w, b, conv, s, s, p, p, d, d, g, BLOCKED, 1)
    # exact cancellations (-0.0 / +0.0 sums), NaN and infinities through the epilogue
    r.flat[:4] = -conv.flat[:4]
    r.flat[4:8] = [np.nan, np.inf, -np.inf, -0.0]
    np.testing.assert_allclose(conv, cnncore.conv2d(x, w, b, s, p, d, g),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    args = (kh, kw, s, s, p, p, d, d, g)
    for first in (False, True):
        total = np.add(r, conv) if first else np.add(conv, r)
        for relu in (False, True):
            want = cnncore.relu(total) if relu else total
            for threads in (1, 2, 3, 4):
                got = np.full_like(r, 7.0)
                K.blocked_forward_packed_res(x, packed, r, got, *args, first, relu, threads)
                assert got.tobytes() == want.tobytes()
    for relu in (False, True):  # no residual: the packed forward's bits
        want = np.empty_like(r)
        K.blocked_forward_packed(x, packed, want, *args, relu, 1)
        for threads in (1, 2, 3):
            got = np.full_like(r, 7.0)
            K.blocked_forward_packed_res(x, packed, None, got, *args, False, relu, threads)
            assert got.tobytes() == want.tobytes()


def test_residual_epilogue_rejects_bad_buffers():
    case = CASES[0]
    N, C, Kc, H, W, kh, kw, s, p, d, g = case
    x, w, b, packed, r = _case(case, np.float32)
    y = np.empty_like(r)
    args = (kh, kw, s, s, p, p, d, d, g, False, True, 1)
    with pytest.raises(ValueError, match="residual has shape"):
        K.blocked_forward_packed_res(x, packed, r[:, :-1].copy(), y, *args)
    with pytest.raises(ValueError, match="overlaps"):
        K.blocked_forward_packed_res(x, packed, y, y, *args)
    with pytest.raises(ValueError, match="packed has"):
        K.blocked_forward_packed_res(x, packed[:-1], r, y, *args)
    for groups in (0, -1, 5):  # (groups 0 used to divide by zero: SIGFPE)
        with pytest.raises(ValueError, match="do not match"):
            K.blocked_forward_packed_res(x, packed, r, y, kh, kw, s, s, p, p, d, d, groups,
                                         False, True, 1)  # fmt: skip
        with pytest.raises(ValueError, match="do not match"):
            K.blocked_forward_packed(x, packed, y, kh, kw, s, s, p, p, d, d, groups, True, 1)


def _graph_layerwise(model, x):
    vals = [None] * model._n_slots
    vals[model._in_slots[0]] = x
    for layer, ins, multi, out, _, _, _ in model._steps:
        vals[out] = layer.forward([vals[s] for s in ins] if multi else vals[ins[0]])
    return vals[model._out_slots[0]]


def _plan(model):
    return next(p for p in model._eval_plans._plans.values() if p is not None)


def _residual_steps(plan):
    """The steps that run a convolution with its Add (they read two values)."""
    return [st for st in plan.steps if st[2] and len(st[1]) == 2 and st[0].__name__ == "<lambda>"]


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet20_plan_fuses_every_block_and_is_exact(fused, dtype, restore_threads):
    model = models.resnet20(rng=0, dtype=dtype)
    model = nn.fuse(model) if fused else model.eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32)).astype(dtype)
    x[0, 1, 7, 9] = np.nan  # NaN through the fused blocks
    x2 = rng.standard_normal((1, 3, 32, 32)).astype(dtype)
    for _ in range(2):
        model(x)
    plan = _plan(model)
    if fused:  # the BatchNorms folded: each block's conv2 + Add + ReLU is one step
        assert len(_residual_steps(plan)) == 9
    for algo in ("blocked", "auto", "gemm"):  # (gemm: the step's unfused fallback)
        with cnncore.conv_algorithm(algo):
            for threads in (1, 2, 3):
                cnncore.set_num_threads(threads)
                for inp in (x, x2):
                    assert model(inp).tobytes() == _graph_layerwise(model, inp).tobytes()


def _block(order, relu=True, extra_reader=False, three=False):
    inp = nn.Input((8, 10, 10))
    h = nn.ReLU()(nn.Conv2d(8, 8, 3, padding=1, rng=0)(inp))
    c = nn.Conv2d(8, 8, 3, padding=1, rng=1)(h)
    terms = [c, inp] if order == "conv_first" else [inp, c]
    if three:
        terms.append(h)
    s = nn.Add()(terms)
    out = nn.ReLU()(s) if relu else nn.Tanh()(s)
    if extra_reader:  # the conv's output read again: its pre-Add values are needed
        out = nn.Add()([out, c])
    return nn.Model(inp, out).eval()


@pytest.mark.parametrize(
    "kw, n_fused",
    [
        (dict(order="conv_first"), 1),
        (dict(order="residual_first"), 1),
        (dict(order="conv_first", relu=False), 1),  # conv + Add, then the Tanh on its own
        (dict(order="conv_first", extra_reader=True), 0),
        (dict(order="conv_first", three=True), 0),
    ],
)
def test_graph_residual_fusion_rules(kw, n_fused, restore_threads):
    model = _block(**kw)
    x = np.random.default_rng(4).standard_normal((1, 8, 10, 10)).astype(np.float32)
    x[0, 0, 0, 0] = -0.0
    with cnncore.conv_algorithm("blocked"):
        for threads in (1, 2):
            cnncore.set_num_threads(threads)
            for _ in range(3):
                assert model(x).tobytes() == _graph_layerwise(model, x).tobytes()
        assert len(_residual_steps(_plan(model))) == n_fused


def test_graph_residual_step_sees_weight_changes(restore_threads):
    model = _block("residual_first")
    x = np.random.default_rng(5).standard_normal((2, 8, 10, 10)).astype(np.float32)
    with cnncore.conv_algorithm("blocked"):
        for _ in range(3):
            model(x)
        assert len(_residual_steps(_plan(model))) == 1
        convs = [m for m in inference._subtree(model) if type(m) is nn.Conv2d]
        for conv in convs:
            conv.weight.data[...] *= -0.5
            assert model(x).tobytes() == _graph_layerwise(model, x).tobytes()
