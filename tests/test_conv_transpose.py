"""conv_transpose2d, conv_transpose2d_backward and nn.ConvTranspose2d against the naive
reference, finite differences, conv2d (whose adjoint they are) and PyTorch."""

import math

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, fd_grad, loosen_for_winograd4, tol
from reference import conv_transpose2d_backward_ref, conv_transpose2d_ref

import cnncore
from cnncore import _config, nn
from cnncore.ops.conv import conv_transpose2d_algorithms

DTYPES = [np.float32, np.float64]

# (x shape, weight shape (C_in, C_out/groups, kH, kW), stride, padding, output_padding,
#  groups, dilation)
CASES = [
    ((2, 3, 5, 4), (3, 2, 3, 3), 1, 0, 0, 1, 1),
    ((2, 4, 5, 6), (4, 3, 3, 2), (2, 1), (1, 0), (1, 0), 2, (1, 2)),  # asymmetric everything
    ((2, 6, 4, 4), (6, 2, 4, 4), 2, 1, 0, 3, 1),  # k4 s2 p1: the U-Net / DCGAN upsampler
    ((2, 4, 3, 5), (4, 3, 2, 2), 2, 0, 1, 1, 1),  # k2 s2 (no overlap) plus output padding
    ((1, 2, 6, 5), (2, 2, 3, 3), 1, 2, 0, 1, 1),  # padding 2: crops the full output
    ((2, 3, 4, 4), (3, 2, 3, 3), 1, 1, (1, 1), 1, 2),  # output_padding >= stride (< dilation)
    ((3, 4, 6, 6), (4, 1, 3, 3), 2, 1, 1, 4, 1),  # depthwise transposed (groups == C_in == C_out)
    ((2, 2, 7, 7), (2, 3, 1, 1), 1, 0, 0, 1, 1),  # 1x1: a per-pixel linear map
    ((2, 3, 1, 1), (3, 2, 5, 4), 3, 1, 2, 1, 1),  # one input pixel
    ((2, 16, 6, 7), (16, 16, 3, 3), 1, 1, 0, 1, 1),  # enough channels for Winograd
    ((2, 2, 20, 9), (2, 3, 3, 3), 1, 1, 0, 1, 1),  # few channels on a taller image: direct
    ((1, 2, 3, 3), (2, 1, 3, 3), (3, 2), (4, 1), (2, 1), 1, 1),  # crops all but a few taps
    ((2, 4, 5, 6), (4, 3, 4, 4), 2, 1, 0, 1, 1),  # k4 s2 p1: phase-split col2im / im2col
    ((2, 3, 4, 5), (3, 2, 3, 3), 2, 1, 1, 1, 1),  # k3 s2 p1 op1: phase split
    ((2, 4, 6, 6), (4, 1, 3, 3), 1, 1, 0, 4, 1),  # depthwise transposed, stride 1: flat kernels
]


def _ids(case):
    xs, ws, s, p, op, g, d = case
    return f"x{xs}-w{ws}-s{s}-p{p}-op{op}-g{g}-d{d}".replace(" ", "")


def _kw(case):
    _, _, s, p, op, g, d = case
    return dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)


def _make(rng, case, dtype):
    xs, ws, *_ = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[1] * case[5]).astype(dtype)
    return x, w, b


@pytest.fixture(
    params=["auto", "gemm", "direct", "winograd", "winograd4", "depthwise", "blocked", "rows"]
)
def algorithm(request, monkeypatch):
    loosen_for_winograd4(request.param, monkeypatch)
    with cnncore.conv_algorithm(request.param):
        yield request.param


# --------------------------------------------------------------------------------------------
# Reference, finite differences, adjoint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_reference(rng, case, dtype, algorithm):
    x, w, b = _make(rng, case, dtype)
    kw = _kw(case)
    y = cnncore.conv_transpose2d(x, w, b, **kw)
    ref = conv_transpose2d_ref(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == ref.shape
    t = tol(dtype)
    np.testing.assert_allclose(y, ref, **t)
    gy = rng.standard_normal(y.shape).astype(dtype)
    grads = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
    for got, want in zip(grads, conv_transpose2d_backward_ref(gy, x, w, **kw), strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=t["rtol"] * 10, atol=t["atol"] * 10)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_output_size_formula(case):
    (n, _, h, w), (_, cog, kh, kw), *_ = case
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = (
        v if isinstance(v, tuple) else (v, v) for v in (case[2], case[3], case[4], case[6])
    )
    expected = (
        n,
        cog * case[5],
        (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1,
        (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1,
    )
    x, wt, _ = _make(np.random.default_rng(0), case, np.float64)
    assert cnncore.conv_transpose2d(x, wt, **_kw(case)).shape == expected


@pytest.mark.parametrize("case", [CASES[i] for i in (0, 1, 2, 3, 5, 6, 11)], ids=_ids)
def test_gradients_finite_differences(rng, case, algorithm):
    x, w, b = _make(rng, case, np.float64)
    kw = _kw(case)
    gy = rng.standard_normal(cnncore.conv_transpose2d(x, w, b, **kw).shape)

    def loss():
        return float(np.sum(cnncore.conv_transpose2d(x, w, b, **kw) * gy))

    dx, dw, db = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
    np.testing.assert_allclose(dx, fd_grad(loss, x), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(dw, fd_grad(loss, w), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(db, fd_grad(loss, b), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_is_the_adjoint_of_conv2d(rng, case, algorithm):
    """<conv_transpose2d(x, w), y> == <x, conv2d(y, w)> (conv2d from the output's size to the
    input's, its extra rows cropped), and the passes run conv2d's very kernels: the forward is
    conv2d's input gradient, the input gradient conv2d's forward, the weight gradient conv2d's
    weight gradient with x and grad_output swapped -- bit for bit."""
    x, w, _ = _make(rng, case, np.float64)
    kw = _kw(case)
    conv_kw = dict(stride=case[2], padding=case[3], dilation=case[6], groups=case[5])
    y = cnncore.conv_transpose2d(x, w, **kw)
    gy = rng.standard_normal(y.shape)
    h, wd = x.shape[2:]
    back = cnncore.conv2d(gy, w, **conv_kw)[:, :, :h, :wd]
    assert np.vdot(y, gy) == pytest.approx(np.vdot(x, back), rel=1e-10, abs=1e-10)
    dx, dw, db = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
    np.testing.assert_array_equal(dx, back)
    if back.shape == cnncore.conv2d(gy, w, **conv_kw).shape:  # output_padding < stride
        np.testing.assert_array_equal(y, cnncore.conv2d_backward_input(x, w, y.shape, **conv_kw))
        np.testing.assert_array_equal(dw, cnncore.conv2d_backward_weight(x, gy, w.shape, **conv_kw))
    np.testing.assert_array_equal(db, cnncore.conv2d_backward_bias(gy))


def test_unreached_output_rows_hold_the_bias():
    """With output_padding >= stride (allowed when < dilation) the last rows/columns are
    reached by no input: they hold the bias, as in PyTorch."""
    x = np.ones((1, 1, 2, 2))
    w = np.ones((1, 1, 2, 2))
    y = cnncore.conv_transpose2d(x, w, np.array([0.5]), output_padding=1, dilation=2)
    assert y.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(y[0, 0, -1], 0.5)
    np.testing.assert_array_equal(y[0, 0, :, -1], 0.5)
    np.testing.assert_array_equal(y[0, 0, :4, :4], 1.5)  # each reached by one input


def test_docstring_example():
    y = cnncore.conv_transpose2d(
        np.ones((1, 1, 2, 2), np.float32), np.ones((1, 1, 2, 2), np.float32)
    )
    np.testing.assert_array_equal(y[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_algorithms_follow_the_conv2d_passes():
    wide = _config._selected_simd() == "avx512"
    # the DCGAN upsampler (k4 s2 p1): its forward (conv2d's strided input gradient) by the
    # blocked kernels in stride phases with AVX-512, else GEMM (+ col2im); the other passes
    # GEMM
    assert conv_transpose2d_algorithms((32, 64, 16, 16), (64, 32, 4, 4), 2, 1) == {
        "forward": "blocked" if wide else "gemm",
        "input": "gemm",
        "weight": "gemm",
    }
    # ... and its k3 s2 p1 op1 variant: the blocked kernels' forward and weight gradient
    assert conv_transpose2d_algorithms((32, 64, 16, 16), (64, 32, 3, 3), 2, 1, 1) == {
        "forward": "blocked" if wide else "gemm",
        "input": "blocked",
        "weight": "blocked",
    }
    # depthwise transposed: the depthwise kernels
    assert set(
        conv_transpose2d_algorithms((8, 32, 14, 14), (32, 1, 3, 3), 2, 1, 1, groups=32).values()
    ) == {"depthwise"}
    # 3x3 stride 1 with 16-128 channels: the channel-blocked kernels (with AVX-512, but
    # F(4x4) Winograd from 32 channels on whole 4x4 tiles; with AVX2 F(4x4) where it
    # applies); more channels: Winograd F(2x2)
    assert set(conv_transpose2d_algorithms((8, 32, 14, 14), (32, 32, 3, 3), 1, 1).values()) == {
        "blocked" if wide else "winograd4"
    }
    # (its input gradient is conv2d's forward: with AVX-512 the blocked kernels there)
    assert set(conv_transpose2d_algorithms((8, 32, 16, 16), (32, 32, 3, 3), 1, 1).values()) == (
        {"winograd4", "blocked"} if wide else {"winograd4"}
    )
    assert set(conv_transpose2d_algorithms((8, 32, 7, 7), (32, 32, 3, 3), 1, 1).values()) == {
        "blocked"
    }
    assert set(conv_transpose2d_algorithms((8, 256, 14, 14), (256, 256, 3, 3), 1, 1).values()) == {
        "winograd"
    }


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------


def _random_geometry(rng):
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cig, cog = rng.integers(1, 4, size=2)
        kh, kw = rng.integers(1, 6, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        dh, dw = rng.integers(1, 4, size=2)
        ph, pw = rng.integers(0, 4, size=2)
        oph, opw = int(rng.integers(max(sh, dh))), int(rng.integers(max(sw, dw)))
        h, w = rng.integers(1, 12, size=2)
        n = int(rng.integers(1, 4))
        if (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1 < 1:
            continue
        if (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1 < 1:
            continue
        kwargs = dict(
            stride=(int(sh), int(sw)),
            padding=(int(ph), int(pw)),
            output_padding=(oph, opw),
            groups=groups,
            dilation=(int(dh), int(dw)),
        )
        return (
            (n, int(cig) * groups, int(h), int(w)),
            (int(cig) * groups, int(cog), int(kh), int(kw)),
            kwargs,
        )


@pytest.mark.parametrize("seed", range(4))
def test_against_torch_random_geometries(seed):
    """250 random geometries per seed (stride, padding, output_padding, dilation, groups, odd
    sizes, depthwise included): forward and all three gradients against PyTorch in float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1000 + seed)
    for _ in range(250):
        xs, ws, kw = _random_geometry(rng)
        if rng.random() < 0.15:  # depthwise transposed: groups == C_in == C_out
            c = xs[1]
            xs, ws, kw["groups"] = xs, (c, 1, *ws[2:]), c
        x = rng.standard_normal(xs)
        w = rng.standard_normal(ws)
        b = rng.standard_normal(ws[1] * kw["groups"])
        tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
        ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kw)
        y = cnncore.conv_transpose2d(x, w, b, **kw)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-11, err_msg=kw)
        gy = rng.standard_normal(y.shape)
        ty.backward(torch.from_numpy(gy))
        grads = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
        for ours, theirs in zip(grads, (tx.grad, tw.grad, tb.grad), strict=True):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10, err_msg=kw)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_against_torch_float32(rng, case, algorithm):
    torch = pytest.importorskip("torch")
    x, w, b = _make(rng, case, np.float32)
    kw = _kw(case)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kw)
    np.testing.assert_allclose(
        cnncore.conv_transpose2d(x, w, b, **kw), ty.detach().numpy(), rtol=1e-4, atol=1e-4
    )
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    ty.backward(torch.from_numpy(gy))
    for ours, theirs in zip(
        cnncore.conv_transpose2d_backward(gy, x, w, **kw), (tx.grad, tw.grad, tb.grad), strict=True
    ):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------------------------
# Threads, empty batches, views, masks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 3, 6, 9, 10)], ids=_ids)
def test_bit_identical_for_any_thread_count(rng, case, dtype, algorithm):
    x, w, b = _make(rng, case, dtype)
    x = np.concatenate([x] * 6)  # more samples than weight-gradient parts
    kw = _kw(case)

    def compute():
        y = cnncore.conv_transpose2d(x, w, b, **kw)
        return (y, *cnncore.conv_transpose2d_backward(np.cos(y).astype(dtype), x, w, **kw))

    assert_bit_identical_across_threads(compute, (1, 2, 3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_and_channels(dtype):
    w = np.ones((3, 2, 3, 3), dtype)
    b = np.arange(2, dtype=dtype)
    y = cnncore.conv_transpose2d(np.zeros((0, 3, 4, 4), dtype), w, b, stride=2)
    assert y.shape == (0, 2, 9, 9) and y.dtype == dtype
    dx, dw, db = cnncore.conv_transpose2d_backward(y, np.zeros((0, 3, 4, 4), dtype), w, stride=2)
    assert dx.shape == (0, 3, 4, 4) and dw.shape == w.shape and db.shape == (2,)
    assert not dw.any() and not db.any() and dw.dtype == db.dtype == dtype
    # no input channels: the output is the bias
    y = cnncore.conv_transpose2d(np.zeros((2, 0, 4, 4), dtype), np.ones((0, 2, 3, 3), dtype), b)
    assert y.shape == (2, 2, 6, 6)
    np.testing.assert_array_equal(y[:, 1], 1)
    dx, dw, db = cnncore.conv_transpose2d_backward(
        np.ones((2, 2, 6, 6), dtype), np.zeros((2, 0, 4, 4), dtype), np.ones((0, 2, 3, 3), dtype)
    )
    assert dx.shape == (2, 0, 4, 4) and dw.shape == (0, 2, 3, 3)
    np.testing.assert_array_equal(db, [72, 72])


def test_views_readonly_and_lists(rng):
    x, w, b = _make(rng, CASES[1], np.float64)
    kw = _kw(CASES[1])
    ref = cnncore.conv_transpose2d(x, w, b, **kw)
    wide = np.repeat(x, 2, axis=-1)[..., ::2]
    ro = x.copy()
    ro.setflags(write=False)
    wr = w.copy()
    wr.setflags(write=False)
    for xv in (wide, ro, np.asfortranarray(x), x[:, :, ::-1].copy()[:, :, ::-1], x.tolist()):
        np.testing.assert_array_equal(cnncore.conv_transpose2d(xv, wr, b, **kw), ref)
    gy = rng.standard_normal(ref.shape)
    want = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
    got = cnncore.conv_transpose2d_backward(np.asfortranarray(gy), wide, wr, **kw)
    for a, b_ in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b_)
    assert not ro.flags.writeable and np.array_equal(ro, x)


def test_output_mask(rng):
    x, w, _ = _make(rng, CASES[2], np.float64)
    kw = _kw(CASES[2])
    gy = rng.standard_normal(cnncore.conv_transpose2d(x, w, **kw).shape)
    full = cnncore.conv_transpose2d_backward(gy, x, w, **kw)
    for mask in [(True, False, False), (False, True, False), (False, False, True)]:
        got = cnncore.conv_transpose2d_backward(gy, x, w, **kw, output_mask=mask)
        for m, g, f in zip(mask, got, full, strict=True):
            if m:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

X = np.zeros((2, 4, 5, 5), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)
GY = np.zeros((2, 3, 7, 7), np.float32)
CT, CTB = cnncore.conv_transpose2d, cnncore.conv_transpose2d_backward

BAD_INPUTS = [
    # (function, args, kwargs, exception, message fragment)
    (CT, (X, W), {"output_padding": 1}, ValueError, "output_padding"),
    (CT, (X, W), {"stride": 2, "output_padding": 2}, ValueError, "output_padding"),
    (CT, (X, W), {"stride": 2, "output_padding": (1, 2)}, ValueError, "output_padding"),
    (CT, (X, W), {"output_padding": -1}, ValueError, "output_padding"),
    (CT, (X, W), {"padding": "same"}, TypeError, "padding"),
    (CT, (X, W), {"padding": 5}, ValueError, "padding"),
    (CT, (X, W), {"padding": -1}, ValueError, "padding"),
    (CT, (X, W), {"stride": 0}, ValueError, "stride"),
    (CT, (X, W), {"dilation": (1, 0)}, ValueError, "dilation"),
    (CT, (X, W), {"groups": 3}, ValueError, "groups"),
    (CT, (X, W), {"groups": 0}, ValueError, "groups"),
    (CT, (X[:, :3], W), {}, ValueError, "channels"),
    (CT, (X, W[:, :, :0]), {}, ValueError, "kernel"),
    (CT, (X[:, :, :0], W), {}, ValueError, "height"),
    (CT, (X[0, 0], W), {}, ValueError, "x"),  # (C, H, W) is an unbatched sample
    (CT, (X, W[0]), {}, ValueError, "weight"),
    (CT, (X, W, np.zeros(4, np.float32)), {}, ValueError, "bias"),
    (CT, (X, W, np.zeros(3, np.float32)), {"groups": 2}, ValueError, "bias"),
    (CT, (X, W.astype(np.float64)), {}, TypeError, "weight"),
    (CT, (X.astype(np.int32), W), {}, TypeError, "x"),
    (CT, (X, W), {"stride": 2**20, "padding": 0}, ValueError, "output"),
    (CTB, (GY, X, W), {"output_mask": (True, True)}, ValueError, "output_mask"),
    (CTB, (GY[:, :, :6], X, W), {}, ValueError, "grad_output"),
    (CTB, (GY[:, :2], X, W), {}, ValueError, "grad_output"),
    (CTB, (GY, X, W), {"output_padding": (0, 1)}, ValueError, "output_padding"),
    (CTB, (GY.astype(np.float64), X, W), {}, TypeError, "grad_output|x|weight"),
]


@pytest.mark.parametrize(
    "func, args, kwargs, exc, fragment",
    BAD_INPUTS,
    ids=[f"{i}-{c[0].__name__}-{c[4]}" for i, c in enumerate(BAD_INPUTS)],
)
def test_bad_input(func, args, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        func(*args, **kwargs)
    assert "Received" in str(info.value)


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------


def test_layer_matches_torch_module(rng):
    torch = pytest.importorskip("torch")
    ours = nn.ConvTranspose2d(
        4,
        6,
        (3, 2),
        stride=(2, 1),
        padding=(1, 0),
        output_padding=(1, 0),
        groups=2,
        dilation=(1, 2),
        dtype=np.float64,
        rng=0,
    )
    theirs = torch.nn.ConvTranspose2d(
        4,
        6,
        (3, 2),
        stride=(2, 1),
        padding=(1, 0),
        output_padding=(1, 0),
        groups=2,
        dilation=(1, 2),
    ).double()
    assert tuple(theirs.weight.shape) == ours.weight.shape
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
        theirs.bias.copy_(torch.from_numpy(ours.bias.data))
    x = rng.standard_normal((2, 4, 5, 6))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    for size in ((9, 8), (2, 6, 10, 8), None):
        ty = theirs(tx, output_size=size)
        y = ours(x, output_size=size)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    ours.zero_grad()
    dx = ours.backward(g)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert ours.output_shape((2, 4, 5, 6)) == (2, 6, 10, 8)


def test_layer_finite_differences(rng):
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, dtype=np.float64)
    x = rng.standard_normal((2, 2, 3, 4))
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(g)

    def loss():
        return float(np.sum(layer(x) * g))

    np.testing.assert_allclose(dx, fd_grad(loss, x), rtol=1e-3, atol=1e-5)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, fd_grad(loss, p.data), rtol=1e-3, atol=1e-5)
    # gradients accumulate; input_grad=False skips the input gradient
    layer(x)
    assert layer.backward(g, input_grad=False) is None


def test_layer_default_init_matches_torch_bounds():
    """PyTorch's fan-in of a transposed convolution's weight is weight.shape[1] * kH * kW =
    out_channels / groups * kH * kW."""
    layer = nn.ConvTranspose2d(8, 6, 4, groups=2, rng=0)
    bound = 1 / math.sqrt(3 * 16)
    for p in (layer.weight.data, layer.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert layer.weight.shape == (8, 3, 4, 4) and layer.weight.dtype == np.float32
    assert nn.ConvTranspose2d(2, 2, 3, bias=False).bias is None


def test_layer_save_load_roundtrip(tmp_path, rng):
    model = nn.Sequential(
        nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, rng=0),
        nn.ReLU(),
        nn.ConvTranspose2d(3, 3, 2, groups=3, bias=False, rng=1),
    )
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = cnncore.load(path)
    np.testing.assert_array_equal(loaded(x), model(x))
    assert loaded.layers[0].get_config() == model.layers[0].get_config()


@pytest.mark.parametrize(
    "kwargs, exc, fragment",
    [
        (dict(padding_mode="reflect"), ValueError, "padding_mode"),
        (dict(output_padding=1), ValueError, "output_padding"),
        (dict(stride=2, output_padding=(1, 2)), ValueError, "output_padding"),
        (dict(groups=4), ValueError, "groups"),
        (dict(padding="same"), TypeError, "padding"),
        (dict(kernel_size=0), ValueError, "kernel_size"),
        (dict(in_channels=0), ValueError, "in_channels"),
        (dict(dtype=np.int32), TypeError, "dtype"),
    ],
)
def test_layer_rejects_bad_parameters(kwargs, exc, fragment):
    args = dict(in_channels=2, out_channels=6, kernel_size=3)
    with pytest.raises(exc, match=fragment) as info:
        nn.ConvTranspose2d(**{**args, **kwargs})
    assert "Received" in str(info.value)


def test_layer_rejects_bad_output_size(rng):
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    assert layer(x, output_size=(10, 9)).shape == (1, 3, 10, 9)
    for size, exc in [
        ((11, 9), ValueError),
        ((8, 9), ValueError),
        ((9,), ValueError),
        ("9,9", ValueError),
        ((9.0, 9), TypeError),
    ]:
        with pytest.raises(exc, match="output_size"):
            layer(x, output_size=size)
    with pytest.raises(ValueError, match="input"):
        layer(x[:, :1])
