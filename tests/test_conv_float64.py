"""float64 convolutions never run the float32-only "blocked" and "rows" kernels, whose
microkernels are not built for float64 (a fifth of each SIMD build's compile time: issue 16's
install time).  The thresholds, autotuning and a forced algorithm send float64 to GEMM,
direct, Winograd or depthwise; the fused conv-ReLU-pool and the packed blocked entry points
refuse float64 arrays; and float64 results on the shapes that run blocked or rows in float32
stay exact (NumPy reference, finite differences, PyTorch) and bit-identical for any thread
count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, fd_grad, tol
from reference import conv2d_backward_input_ref, conv2d_backward_weight_ref, conv2d_ref

import cnncore
from cnncore import nn
from cnncore._shared import ConvAlgorithm
from cnncore.ops import conv as conv_ops
from cnncore.ops import conv_dispatch, conv_tune
from cnncore.ops.conv import conv2d_algorithms

K = conv_ops._conv
F32_ONLY = {"blocked", "rows"}
F64 = np.float64

# (input shape, weight shape, stride, padding, groups): shapes whose float32 passes the
# thresholds give to "blocked" or "rows" at some SIMD level
SHAPES = [
    ((8, 16, 16, 16), (16, 16, 3, 3), 1, 1, 1),  # ResNet stage 1
    ((4, 16, 16, 16), (32, 16, 3, 3), 2, 1, 1),  # ResNet's strided transition
    ((2, 64, 8, 8), (64, 64, 3, 3), 1, 1, 1),  # ResNet stage 3, small batch
    ((4, 32, 8, 8), (32, 32, 3, 3), 1, 1, 1),
    ((4, 32, 8, 8), (16, 32, 4, 4), 2, 1, 1),  # a strided 4x4 input gradient
    ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),  # LeNet-5's conv2
    ((4, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1),  # LeNet-5's conv1
    ((4, 1, 14, 14), (32, 1, 3, 3), 1, 1, 1),  # a first layer
    ((2, 64, 8, 8), (64, 8, 3, 3), 1, 1, 8),  # grouped, 8 channels per group
    ((2, 64, 8, 8), (64, 16, 3, 3), 1, 1, 4),  # grouped, 16 channels per group
]
PASSES = ("forward", "input", "weight")


def _geo(shape):
    x_shape, w_shape, stride, padding, groups = shape
    return conv_ops._conv_setup("conv2d", x_shape, w_shape, stride, padding, 1, groups)


@pytest.mark.parametrize("simd", ["avx512", "avx2", "baseline"])
def test_thresholds_never_pick_blocked_or_rows_in_float64(simd, monkeypatch):
    monkeypatch.setattr(conv_dispatch, "_selected_simd", lambda: simd)
    picked = 0
    for shape in SHAPES:
        geo, groups = _geo(shape)
        w_shape = shape[1]
        for which in PASSES:
            for n in (shape[0][0], None):
                f32 = conv_dispatch.heuristic_conv_algorithm(w_shape, groups, geo, which, n)
                for dt in (np.float32, "float32", np.dtype(np.float32)):
                    assert f32 == conv_dispatch.heuristic_conv_algorithm(
                        w_shape, groups, geo, which, n, dt
                    )
                picked += conv_dispatch.algorithm_name(f32) in F32_ONLY
                for dt in (F64, "float64", np.dtype(F64)):
                    f64 = conv_dispatch.heuristic_conv_algorithm(w_shape, groups, geo, which, n, dt)
                    assert conv_dispatch.algorithm_name(f64) not in F32_ONLY, (shape, which, n)
    assert picked >= 6  # (the shapes do reach the two in float32)


def test_selection_and_forcing_never_run_blocked_or_rows_in_float64(monkeypatch):
    monkeypatch.setattr(conv_dispatch, "_heuristic_memo", {})
    for shape in SHAPES:
        x_shape, w_shape, stride, padding, groups = shape
        args = (x_shape, w_shape, stride, padding, 1, groups)
        assert not F32_ONLY & set(conv2d_algorithms(*args, dtype=F64).values())
        for forced in sorted(F32_ONLY):
            with cnncore.conv_algorithm(forced):
                # forcing a float32-only algorithm runs GEMM in float64 (no error), as
                # where an algorithm does not apply
                assert set(conv2d_algorithms(*args, dtype=F64).values()) == {"gemm"}
                assert set(conv2d_algorithms(*args, dtype=np.float32).values()) == {forced}
                geo, g = _geo(shape)
                code = conv_dispatch.select_conv_algorithm(
                    w_shape, g, geo, "forward", x_shape, np.dtype(F64)
                )
                assert code == ConvAlgorithm.ALGO_GEMM
        with cnncore.conv_algorithm("winograd"):  # other forced algorithms are kept
            assert set(conv2d_algorithms(*args, dtype=F64).values()) == {"winograd"}


@pytest.mark.parametrize("forced", sorted(F32_ONLY))
def test_forced_blocked_or_rows_computes_gemm_bits_in_float64(forced, rng):
    for shape in SHAPES[:8]:
        x_shape, w_shape, stride, padding, groups = shape
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[0])
        kw = dict(stride=stride, padding=padding, groups=groups)
        with cnncore.conv_algorithm("gemm"):
            y = cnncore.conv2d(x, w, b, **kw)
            go = rng.standard_normal(y.shape)
            want = [y, *cnncore.conv2d_backward(go, x, w, **kw)]
        with cnncore.conv_algorithm(forced):
            got = [cnncore.conv2d(x, w, b, **kw), *cnncore.conv2d_backward(go, x, w, **kw)]
        for a, c in zip(want, got, strict=True):
            assert a.dtype == F64 and a.tobytes() == c.tobytes()


def test_autotuning_never_times_blocked_or_rows_in_float64(monkeypatch):
    timed = []
    real = conv_tune.measure

    def measure(case, candidates, preferred):
        timed.append((case.dtype, set(candidates)))
        return real(case, candidates, preferred)

    monkeypatch.setattr(conv_tune, "measure", measure)
    saved = cnncore.get_autotune()
    conv_dispatch.clear_tuning()
    cnncore.set_autotune(True)
    try:
        x = np.ones((2, 16, 8, 8))
        w = np.ones((16, 16, 3, 3))
        for dt in (np.float32, F64):
            y = cnncore.conv2d(x.astype(dt), w.astype(dt), padding=1)
            cnncore.conv2d_backward(np.ones_like(y), x.astype(dt), w.astype(dt), padding=1)
    finally:
        cnncore.set_autotune(saved)
        conv_dispatch.clear_tuning()
    assert {d for d, _ in timed} == {"float32", "float64"}
    for dt, candidates in timed:
        if dt == "float64":
            assert not candidates & F32_ONLY and "gemm" in candidates
        else:
            assert "blocked" in candidates  # (the float32 shape does time it)


def test_eligible_algorithms_and_cache_entries_in_float64():
    for shape in SHAPES:
        geo, groups = _geo(shape)
        for which in PASSES:
            c32 = conv_tune.ConvCase(which, shape[0], shape[1], groups, geo, "float32")
            c64 = c32._replace(dtype="float64")
            e32 = conv_dispatch.eligible_algorithms(c32)
            assert conv_dispatch.eligible_algorithms(c64) == [a for a in e32 if a not in F32_ONLY]
            # a tuning-cache entry naming them for float64 is invalid (ignored with a warning)
            for name in sorted(F32_ONLY & set(e32)):
                entry = conv_tune._entry(c64, name, {}, "avx512")
                with pytest.raises(ValueError, match="does not apply"):
                    conv_tune._parse_entry(entry, conv_dispatch._applies)
                conv_tune._parse_entry(
                    conv_tune._entry(c32, name, {}, "avx512"), conv_dispatch._applies
                )


def test_float32_only_entry_points_refuse_float64():
    x = np.zeros((1, 8, 6, 6))
    w = np.zeros((8, 8, 3, 3))
    b = np.zeros(8)
    y = np.zeros((1, 8, 6, 6))
    idx = np.zeros((1, 8, 3, 3), np.int64)
    pooled = np.zeros((1, 8, 3, 3))
    x1, w1 = np.zeros((1, 1, 6, 6)), np.zeros((8, 1, 3, 3))  # (one input channel)
    size = K.blocked_packed_size(8, 8, 3, 3, 1, 1, 1, 1, 1, 6, 6, False)
    packed = np.zeros(size)
    saved = np.zeros(w.size + 8)
    calls = {
        "blocked_packed_size": lambda: K.blocked_packed_size(8, 8, 3, 3, 1, 1, 1, 1, 1, 6, 6, True),
        "blocked_pack_weights": lambda: K.blocked_pack_weights(w, b, packed, 1, 1, 1, 1, 1, 6, 6),
        "blocked_refresh_packed": lambda: K.blocked_refresh_packed(
            w, b, saved, packed, 1, 1, 1, 1, 1, 6, 6, True
        ),
        "blocked_forward_packed": lambda: K.blocked_forward_packed(
            x, packed, y, 3, 3, 1, 1, 1, 1, 1, 1, 1, False, 1
        ),
        "blocked_forward_packed_res": lambda: K.blocked_forward_packed_res(
            x, packed, None, y, 3, 3, 1, 1, 1, 1, 1, 1, 1, False, False, 1
        ),
        "conv2d_relu_maxpool2x2_forward": lambda: K.conv2d_relu_maxpool2x2_forward(
            x1, w1, b, pooled, idx, 1, 1, 6, 6, 1
        ),
        "conv2d_relu_maxpool2x2_backward_weight": lambda: K.conv2d_relu_maxpool2x2_backward_weight(
            pooled, idx, pooled, x1, w1, b, 1, 1, 6, 6, 1
        ),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"{name}\(\): .*float32 .*dtype=float64"):
            call()


def test_fused_conv_relu_pool_is_float32_only_and_float64_training_is_exact(rng):
    x = rng.standard_normal((4, 1, 12, 12))
    w = rng.standard_normal((8, 1, 3, 3))
    b = rng.standard_normal(8)
    assert conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, 1, 1, 1) is None
    f32 = [a.astype(np.float32) for a in (x, w, b)]
    assert conv_ops._conv2d_relu_max_pool2d(*f32, 1, 1, 1, 1) is not None

    def model():
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, dtype=F64, rng=0), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * 6 * 6, 5, dtype=F64, rng=1),
        )  # fmt: skip

    m = model()
    out = m(x)
    assert m._conv_pool == {}  # not fused: the layers one by one
    layers = model()
    h = x
    for layer in layers.layers:
        h = layer(h)
    assert out.tobytes() == h.tobytes()
    g = rng.standard_normal(out.shape)
    m.zero_grad()
    m.backward(g)
    conv = m.layers[0]

    def loss():
        return float(np.sum(m(x) * g))

    np.testing.assert_allclose(
        conv.weight.grad, fd_grad(loss, conv.weight.data), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(conv.bias.grad, fd_grad(loss, conv.bias.data), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"x{s[0]}-w{s[1]}-s{s[2]}-g{s[4]}")
def test_float64_on_blocked_and_rows_shapes_against_references(shape, rng):
    x_shape, w_shape, stride, padding, groups = shape
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    kw = dict(stride=stride, padding=padding, groups=groups)
    y = cnncore.conv2d(x, w, b, **kw)
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, stride, padding, 1, groups), **tol(F64))
    go = rng.standard_normal(y.shape)
    dx, dw, db = cnncore.conv2d_backward(go, x, w, **kw)
    np.testing.assert_allclose(
        dx, conv2d_backward_input_ref(go, w, x_shape, stride, padding, 1, groups), **tol(F64)
    )
    np.testing.assert_allclose(
        dw, conv2d_backward_weight_ref(go, x, w_shape, stride, padding, 1, groups), **tol(F64)
    )
    np.testing.assert_allclose(db, go.sum(axis=(0, 2, 3)), **tol(F64))
    assert_bit_identical_across_threads(
        lambda: (cnncore.conv2d(x, w, b, **kw), *cnncore.conv2d_backward(go, x, w, **kw)),
        counts=(1, 2, 3, 4),
    )
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(go))
    for ours, theirs in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), **tol(F64))
