"""Eval-mode plans on packed weights: the channel-blocked forward on weights packed once
(cnncore.ops._conv.blocked_forward_packed, bit-identical to conv2d_forward's blocked
algorithm, with the ReLU after it fused), the packed copy refreshed whenever the weights
change, and conv + ReLU steps in Sequential and graph plans."""

import numpy as np
import pytest

import cnncore
from cnncore import models, nn, optim
from cnncore._shared import ConvAlgorithm
from cnncore.nn import callbacks, inference
from cnncore.ops import conv as conv_ops

K = conv_ops._conv
BLOCKED = int(ConvAlgorithm.ALGO_BLOCKED)

# (N, C, K, H, W, kh, kw, stride, padding, dilation, groups)
CASES = [
    (1, 16, 16, 12, 12, 3, 3, 1, 1, 1, 1),
    (1, 8, 24, 9, 7, 3, 3, 2, 1, 1, 1),
    (2, 6, 10, 8, 8, 5, 3, 1, 2, 1, 2),
    (3, 4, 40, 7, 9, 3, 3, 1, 0, 2, 1),
    (1, 3, 5, 6, 6, 1, 1, 1, 0, 1, 1),
    (2, 12, 12, 5, 5, 3, 3, 1, 1, 1, 3),
]


def _pack(w, b, geo):
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    f64 = w.dtype == np.float64
    packed = np.empty(K.blocked_packed_size(C, Kc, kh, kw, s, s, d, d, g, Ho, Wo, f64), w.dtype)
    K.blocked_pack_weights(w, b, packed, s, s, d, d, g, Ho, Wo)
    return packed


def _case(case, dtype, seed=0):
    N, C, Kc, H, W, kh, kw, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((Kc, C // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(Kc).astype(dtype)
    Ho = (H + 2 * p - d * (kh - 1) - 1) // s + 1
    Wo = (W + 2 * p - d * (kw - 1) - 1) // s + 1
    return x, w, b, (case, (Ho, Wo))


# float32 only: the blocked and rows kernels (float64 runs GEMM: test_conv_float64.py)
@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize("case", CASES)
def test_packed_forward_is_the_blocked_forward_bit_for_bit(case, dtype):
    x, w, b, geo = _case(case, dtype)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    x[0, 0, 0, :2] = [np.nan, -0.0]  # NaN and -0.0 pass through the ReLU
    for bias in (b, None):
        want = np.empty((N, Kc, Ho, Wo), dtype)
        K.conv2d_forward(x, w, bias, want, s, s, p, p, d, d, g, BLOCKED, 1)
        # the op itself (any algorithm within rounding) and the kernel's own bits
        ref = cnncore.conv2d(x, w, bias, s, p, d, g)
        np.testing.assert_allclose(want, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-4 if dtype == np.float32 else 1e-12)  # fmt: skip
        packed = _pack(w, bias, geo)
        relu_want = np.where(want < 0, np.zeros((), dtype), want)  # 0 if v < 0 else v
        for threads in (1, 2, 3):
            got = np.full_like(want, 7.0)
            K.blocked_forward_packed(x, packed, got, kh, kw, s, s, p, p, d, d, g, False, threads)
            assert got.tobytes() == want.tobytes()
            K.blocked_forward_packed(x, packed, got, kh, kw, s, s, p, p, d, d, g, True, threads)
            assert got.tobytes() == relu_want.tobytes()
            assert got.tobytes() == cnncore.relu(want).tobytes()


def test_packed_forward_rejects_mismatched_buffers():
    x, w, b, geo = _case(CASES[0], np.float32)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    packed = _pack(w, b, geo)
    y = np.empty((N, Kc, Ho, Wo), np.float32)
    with pytest.raises(ValueError, match="packed has"):
        K.blocked_forward_packed(x, packed[:-1], y, kh, kw, s, s, p, p, d, d, g, False, 1)
    with pytest.raises(ValueError, match="packed_out has"):
        K.blocked_pack_weights(w, b, packed[:-1], s, s, d, d, g, Ho, Wo)
    with pytest.raises(ValueError, match="bias has"):
        K.blocked_pack_weights(w, b[:-1], packed, s, s, d, d, g, Ho, Wo)
    with pytest.raises(ValueError, match="groups"):
        K.blocked_packed_size(C, Kc, kh, kw, s, s, d, d, 0, Ho, Wo, False)
    with pytest.raises(ValueError, match="saved has"):
        K.blocked_refresh_packed(
            w, b, np.empty(3, np.float32), packed, s, s, d, d, g, Ho, Wo, False
        )


def test_refresh_packs_again_exactly_when_the_values_change():
    x, w, b, geo = _case(CASES[0], np.float32)
    (N, C, Kc, H, W, kh, kw, s, p, d, g), (Ho, Wo) = geo
    packed = np.zeros_like(_pack(w, b, geo))
    saved = np.zeros(w.size + Kc, np.float32)
    args = (s, s, d, d, g, Ho, Wo)
    assert K.blocked_refresh_packed(w, b, saved, packed, *args, True)
    assert packed.tobytes() == _pack(w, b, geo).tobytes()
    assert not K.blocked_refresh_packed(w, b, saved, packed, *args, False)
    w[3, 0, 1, 1] += 1.0  # a write into the weights
    assert K.blocked_refresh_packed(w, b, saved, packed, *args, False)
    assert packed.tobytes() == _pack(w, b, geo).tobytes()
    b[0] = -b[0]  # into the bias
    assert K.blocked_refresh_packed(w, b, saved, packed, *args, False)
    assert packed.tobytes() == _pack(w, b, geo).tobytes()
    assert K.blocked_refresh_packed(w, None, saved, packed, *args, False)  # bias dropped
    assert packed.tobytes() == _pack(w, None, geo).tobytes()
    assert not K.blocked_refresh_packed(w, None, saved, packed, *args, False)
    zeros = np.zeros(Kc, np.float32)
    assert not K.blocked_refresh_packed(w, zeros, saved, packed, *args, False)  # same bits
    assert K.blocked_refresh_packed(w, -zeros, saved, packed, *args, False)  # -0.0: other bits
    assert packed.tobytes() == _pack(w, -zeros, geo).tobytes()
    assert K.blocked_refresh_packed(w, None, saved, packed, *args, False)
    w[0, 0, 0, 0] = -0.0 if w[0, 0, 0, 0] == 0 else 0.0
    assert K.blocked_refresh_packed(w, None, saved, packed, *args, False)


def _seq(seed=0, dtype=np.float32):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, rng=seed, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, rng=seed + 1, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False, rng=seed + 2, dtype=dtype),
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 5, rng=seed + 3, dtype=dtype),
    )


def _layerwise(model, x):
    h = x
    for i in model._run_order():
        h = model.layers[i](h)
    return h


def _graph_layerwise(model, x):
    vals = [None] * model._n_slots
    vals[model._in_slots[0]] = x
    for layer, ins, multi, out, _, _, _ in model._steps:
        vals[out] = layer.forward([vals[s] for s in ins] if multi else vals[ins[0]])
    return vals[model._out_slots[0]]


@pytest.fixture(params=["blocked", "auto"])
def algorithm(request):
    with cnncore.conv_algorithm(request.param):
        yield request.param


def _check_live(model, x, reference, restore_threads):
    """The plan's outputs (1 and 2 threads) equal the layer-by-layer forward's after each
    way the weights can change."""

    def same():
        for threads in (1, 2):
            cnncore.set_num_threads(threads)
            for _ in range(2):
                assert model(x).tobytes() == reference(model, x).tobytes()

    model.eval()
    same()
    convs = [m for m in inference._subtree(model) if type(m) is nn.Conv2d]
    convs.sort(key=lambda m: m.name)
    frozen = model.__dict__.get("_frozen_weights", False)  # (nn.fuse's snapshot)
    convs[1].weight.data[...] *= -1.0  # in place
    if frozen:
        convs[1].weight.mark_changed()
    same()
    convs[0].bias.data[0] += 1.0  # a bias in place
    if frozen:
        convs[0].bias.mark_changed()
    same()
    convs[1].weight.data = convs[1].weight.data * 0.5  # a new array
    same()
    state = {k: v * 1.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    same()
    model.train()
    opt = optim.SGD(model.parameters(), lr=0.1)
    y = model(x)
    model.backward(np.ones_like(y))
    opt.step()
    model.eval()
    same()


def test_sequential_plan_sees_every_weight_change(algorithm, restore_threads):
    model = _seq()
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    _check_live(model, x, _layerwise, restore_threads)
    # and the plan equals the training-mode forward (no BatchNorm here)
    y = model(x)
    model.train()
    assert model(x).tobytes() == y.tobytes()


@pytest.mark.parametrize("fused", [False, True])
def test_graph_plan_sees_every_weight_change(fused, algorithm, restore_threads):
    model = models.resnet20(rng=0)
    for m in inference._subtree(model):
        if type(m) is nn.Conv2d:  # (biases, as a fused model's convolutions have)
            m.bias = nn.Parameter(np.full(m.out_channels, 0.1, np.float32), "bias")
    model = nn.fuse(model) if fused else model
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    _check_live(model, x, _graph_layerwise, restore_threads)


def test_sequential_fused_plan_sees_every_weight_change(algorithm, restore_threads):
    model = nn.fuse(_seq())
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    _check_live(model, x, _layerwise, restore_threads)


def test_fused_models_trust_the_weights_version(restore_threads):
    """A fused model (an inference snapshot) packs again on a new array or a version bump
    (optimizers, load_state_dict, set_weights, mark_changed), not on every call; other
    models see any write."""
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)
    for fused in (False, True):
        model = nn.fuse(_seq()) if fused else _seq().eval()
        conv = model.layers[0]
        with cnncore.conv_algorithm("blocked"):
            model(x)
            before = model(x)  # (the plan's run: weights packed)
            conv.weight.data[...] *= 2.0
            stale = model(x)
            assert (stale.tobytes() == before.tobytes()) == fused
            conv.weight.mark_changed()
            assert model(x).tobytes() == _layerwise(model, x).tobytes()
            weights = callbacks.get_weights(model)
            weights[0] = weights[0] * 3.0  # the first conv's weight
            callbacks.set_weights(model, weights)
            got = model(x)
            assert got.tobytes() == _layerwise(model, x).tobytes() != stale.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_steps_are_fused_and_exact(dtype, restore_threads):
    model = _seq(dtype=dtype).eval()
    x = np.random.default_rng(2).standard_normal((1, 3, 12, 12)).astype(dtype)
    x[0, 0, 5, 5] = np.nan  # NaN through conv + ReLU
    with cnncore.conv_algorithm("blocked"):
        y = model(x)
        plan = next(iter(model._plans._plans.values()))
        # 8 layers: the first Conv2d-ReLU pair runs as one step; the second ReLU runs
        # after the MaxPool2d (see Sequential's run order), and in float32 the second
        # Conv2d, that MaxPool2d and that ReLU are one step (test_inference_pool.py)
        assert len(plan.steps) == len(model.layers) - (3 if dtype == np.float32 else 1)
        for threads in (1, 2):
            cnncore.set_num_threads(threads)
            got = model(x)
            assert got.tobytes() == y.tobytes() == _layerwise(model, x).tobytes()


def test_graph_conv_relu_fusion_keeps_values_read_elsewhere(restore_threads):
    # a conv whose output the ReLU and an Add both read: not fused (the Add needs the
    # pre-ReLU values)
    inp = nn.Input((4, 8, 8))
    c = nn.Conv2d(4, 4, 3, padding=1, rng=0)(inp)
    r = nn.ReLU()(c)
    out = nn.Add()([c, r])
    model = nn.Model(inp, out).eval()
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    with cnncore.conv_algorithm("blocked"):
        for _ in range(3):
            assert model(x).tobytes() == _graph_layerwise(model, x).tobytes()
