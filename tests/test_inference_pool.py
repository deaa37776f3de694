"""Eval-mode plans: a Sequential's Conv2d -> MaxPool2d(2) (-> ReLU, which an eval forward
runs after the pooling) as one step.  On the channel-blocked algorithm (float32) that is
one kernel call, cnncore.ops._conv.blocked_forward_packed_pool: each task pools the
convolution rows it computed and rectifies the pooled rows; it must equal the blocked
conv2d forward, max_pool2d and the ReLU kernel bit for bit for any thread count (NaN, inf,
-0.0 included).  On any other algorithm the step runs those layers' kernels in turn.  Also
the AVX-512 dispatch rule that keeps a small batch's forward on the blocked kernels."""

import numpy as np
import pytest
from test_inference_packed import BLOCKED, K, _case, _layerwise, _pack

import cnncore
from cnncore import _config, nn
from cnncore.ops.conv import conv2d_algorithms

# (N, C, K, H, W, kh, kw, stride, padding, dilation, groups): odd and even conv outputs
# (a dropped last row / column), batch 1 (bands of pooled rows), strides, groups, dilation
CASES = [
    (1, 16, 16, 12, 12, 3, 3, 1, 1, 1, 1),
    (1, 32, 64, 14, 14, 3, 3, 1, 1, 1, 1),
    (3, 8, 24, 9, 7, 3, 3, 1, 1, 1, 1),
    (1, 8, 24, 11, 13, 3, 3, 2, 1, 1, 1),
    (2, 6, 10, 8, 8, 5, 3, 1, 2, 1, 2),
    (2, 4, 40, 9, 9, 3, 3, 1, 0, 2, 1),
    (1, 1, 32, 28, 28, 3, 3, 1, 1, 1, 1),
    (2, 12, 12, 5, 5, 3, 3, 1, 1, 1, 3),
    (1, 4, 8, 3, 3, 3, 3, 1, 1, 1, 1),  # 3x3 -> one pooled pixel
]


def _specials(x):
    """NaN, +-inf and -0.0 in the input (NaN and inf reach whole windows of outputs)."""
    flat = x.reshape(-1)
    flat[:: max(1, flat.size // 5)][:4] = [np.nan, np.inf, -np.inf, -0.0]


def _reference(x, w, b, geo, relu):
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    conv = np.empty((N, Kc, Ho, Wo), np.float32)
    K.conv2d_forward(x, w, b, conv, s, s, p, p, d, d, g, BLOCKED, 1)
    y = cnncore.max_pool2d(conv, 2)
    return cnncore.relu(y) if relu else y


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_pool_epilogue_is_conv_then_pool_then_relu_bit_for_bit(case, special):
    x, w, b, geo = _case(case, np.float32)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    if special:
        _specials(x)
    x[0, 0, 0, 0] = -0.0
    for bias in (b, None, -np.abs(b) - 100.0):  # (all negative: ReLU zeros whole windows)
        packed = _pack(w, bias, geo)
        for relu in (False, True):
            want = _reference(x, w, bias, geo, relu)
            for threads in (1, 2, 3, 4):
                got = np.full((N, Kc, Ho // 2, Wo // 2), 7.0, np.float32)
                K.blocked_forward_packed_pool(
                    x, packed, got, kh, kw, s, s, p, p, d, d, g, Ho, Wo, relu, threads
                )
                assert got.tobytes() == want.tobytes(), (relu, threads)


def test_pool_epilogue_against_numpy_and_torch():
    torch = pytest.importorskip("torch")
    x, w, b, geo = _case(CASES[2], np.float32)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    got = np.empty((N, Kc, Ho // 2, Wo // 2), np.float32)
    K.blocked_forward_packed_pool(x, _pack(w, b, geo), got, kh, kw, s, s, p, p, d, d, g, Ho, Wo,
                                  True, 2)  # fmt: skip
    t = torch.nn.functional
    want = t.relu(t.max_pool2d(t.conv2d(*map(torch.from_numpy, (x, w, b)), padding=p), 2))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    # and a naive NumPy reference of the same function
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    conv = np.zeros((N, Kc, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            conv += np.einsum("nchw,kc->nkhw", xp[:, :, i : i + Ho, j : j + Wo], w[:, :, i, j])
    conv += b[None, :, None, None]
    pooled = conv[:, :, : Ho // 2 * 2, : Wo // 2 * 2].reshape(N, Kc, Ho // 2, 2, Wo // 2, 2)
    np.testing.assert_allclose(got, np.maximum(pooled.max(axis=(3, 5)), 0), rtol=1e-5, atol=1e-5)


def test_pool_epilogue_rejects_bad_buffers():
    x, w, b, geo = _case(CASES[0], np.float32)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    packed = _pack(w, b, geo)
    y = np.empty((N, Kc, Ho // 2, Wo // 2), np.float32)
    args = (kh, kw, s, s, p, p, d, d)
    with pytest.raises(ValueError, match="packed has"):
        K.blocked_forward_packed_pool(x, packed[:-1], y, *args, g, Ho, Wo, True, 1)
    for ho, wo in ((Ho + 1, Wo), (Ho, Wo - 2), (0, Wo)):
        with pytest.raises(ValueError, match="geometry does not match"):
            K.blocked_forward_packed_pool(x, packed, y, *args, g, ho, wo, True, 1)
    with pytest.raises(ValueError, match="geometry does not match"):
        K.blocked_forward_packed_pool(x, packed, y[:, :, :-1].copy(), *args, g, Ho, Wo, True, 1)
    with pytest.raises(ValueError, match="do not match"):
        K.blocked_forward_packed_pool(x, packed, y, *args, 0, Ho, Wo, True, 1)
    with pytest.raises(ValueError, match="do not match"):
        K.blocked_forward_packed_pool(x[:1], packed, np.empty((2, Kc, Ho // 2, Wo // 2),
                                      np.float32), *args, g, Ho, Wo, True, 1)  # fmt: skip
    with pytest.raises((TypeError, ValueError)):  # float32 only
        K.blocked_forward_packed_pool(x.astype(np.float64), packed.astype(np.float64),
                                      y.astype(np.float64), *args, g, Ho, Wo, True, 1)  # fmt: skip


def _net(order="conv_relu_pool", dtype=np.float32, pool=None, seed=0):
    pool = pool or nn.MaxPool2d(2)
    conv = nn.Conv2d(8, 16, 3, padding=1, rng=seed, dtype=dtype)
    body = {
        "conv_relu_pool": [conv, nn.ReLU(), pool],
        "conv_pool_relu": [conv, pool, nn.ReLU()],
        "conv_pool": [conv, pool],
    }[order]
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=seed + 1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (one input channel: GEMM, the step's other path)
        *body,
        nn.GlobalAvgPool2d(),
        nn.Flatten(),
        nn.Linear(16, 5, rng=seed + 2, dtype=dtype),
    ).eval()


def _plan(model, x):
    return next(p for k, p in model._plans._plans.items() if k[0] == x.shape)


def _pool_steps(plan):
    return sum(1 for step, _ in plan.steps if step.__qualname__.startswith("_conv_pool_step"))


@pytest.mark.parametrize("algorithm", [None, "blocked", "gemm", "winograd4"])
@pytest.mark.parametrize("order", ["conv_relu_pool", "conv_pool_relu", "conv_pool"])
@pytest.mark.parametrize("n", [1, 3])
def test_sequential_conv_pool_steps_are_exact(order, algorithm, n, restore_threads):
    model = _net(order)
    x = np.random.default_rng(n).standard_normal((n, 1, 14, 14)).astype(np.float32)
    x[0, 0, 3, :3] = [np.nan, np.inf, -0.0]
    x[-1, 0, 9, 9] = -np.inf
    with cnncore.conv_algorithm(algorithm or "auto"):
        y = model(x)
        assert _pool_steps(_plan(model, x)) == 2  # (both conv -> pool pairs)
        for threads in (1, 2, 3):
            cnncore.set_num_threads(threads)
            for _ in range(2):
                assert model(x).tobytes() == y.tobytes() == _layerwise(model, x).tobytes()


def test_float64_and_other_pools_are_not_fused(restore_threads):
    x = np.random.default_rng(0).standard_normal((2, 1, 14, 14))
    cases = [
        (_net(dtype=np.float64), 0),  # float64: separate steps
        (_net(pool=nn.MaxPool2d(3)), 1),
        (_net(pool=nn.MaxPool2d(2, stride=1)), 1),
        (_net(pool=nn.MaxPool2d(2, padding=1)), 1),
        (_net(pool=nn.MaxPool2d(2, ceil_mode=True)), 1),
        (_net(pool=nn.MaxPool2d(2, dilation=2)), 1),
        (_net(pool=type("MyPool", (nn.MaxPool2d,), {})(2)), 1),  # a subclass: its own forward
    ]
    for model, n_fused in cases:
        xm = x.astype(model.dtype)
        with cnncore.conv_algorithm("blocked"):
            for threads in (1, 2):
                cnncore.set_num_threads(threads)
                for _ in range(2):
                    assert model(xm).tobytes() == _layerwise(model, xm).tobytes()
            assert _pool_steps(_plan(model, xm)) == n_fused, model.layers[5]


def test_conv_pool_step_sees_weight_changes(restore_threads):
    model = _net("conv_pool_relu")
    x = np.random.default_rng(4).standard_normal((2, 1, 14, 14)).astype(np.float32)
    with cnncore.conv_algorithm("blocked"):
        first = model(x)
        model.layers[3].weight.data[...] *= -1.0  # in place
        got = model(x)
        assert got.tobytes() == _layerwise(model, x).tobytes() != first.tobytes()
        fused = nn.fuse(model)
        assert fused(x).tobytes() == got.tobytes()
        fused.layers[3].bias.data[...] = -1e3  # every pooled value negative: ReLU zeros
        fused.layers[3].bias.mark_changed()
        assert fused(x).tobytes() == _layerwise(fused, x).tobytes()
        assert not fused(x)[:, :0].size and np.all(_layerwise(fused, x) == fused(x))


def test_readme_cnn_plan_is_exact_at_batch_1_and_8(restore_threads):
    from cnncore import models

    model = nn.fuse(models.simple_cnn(rng=0))
    for n in (1, 8):
        x = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        for threads in (1, 2, 3):
            cnncore.set_num_threads(threads)
            for _ in range(2):
                assert model.predict(x).tobytes() == _layerwise(model, x).tobytes()
        assert _pool_steps(_plan(model, x)) == 2


@pytest.mark.skipif(_config._selected_simd() != "avx512", reason="an AVX-512 dispatch rule")
@pytest.mark.parametrize(
    "n, shape, fwd",
    [
        (8, (32, 64, 14), "blocked"),  # the README CNN's conv2 at batch 8: not F(4x4)
        (16, (32, 64, 14), "blocked"),
        (32, (32, 64, 14), "winograd4"),  # from 4096 output pixels in the batch: F(4x4)
        (16, (64, 64, 7), "blocked"),
        (128, (64, 64, 8), "winograd4"),
    ],
)
def test_small_batch_forward_stays_on_the_blocked_kernels(n, shape, fwd):
    cin, cout, h = shape
    chosen = conv2d_algorithms((n, cin, h, h), (cout, cin, 3, 3), padding=1)
    assert chosen["forward"] == fwd, chosen
