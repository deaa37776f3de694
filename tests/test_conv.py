"""conv2d, its backward passes and im2col/col2im against the naive reference, finite
differences, the adjoint identity and PyTorch."""

import os
import threading

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, fd_grad, loosen_for_winograd4, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    col2im_ref,
    conv2d_backward_input_ref,
    conv2d_backward_weight_ref,
    conv2d_ref,
    im2col_ref,
)

import cnncore
from cnncore import _config
from cnncore._geometry import conv2d_geometry
from cnncore.ops import conv_dispatch
from cnncore.ops.conv import _conv, conv2d_algorithms

DTYPES = [np.float32, np.float64]

# (x shape, weight shape, stride, padding, dilation, groups)
CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 2), 1, 0, 1, 1),
    ((2, 4, 11, 8), (6, 2, 3, 3), (2, 3), (1, 2), (2, 1), 2),  # asymmetric everything
    ((1, 3, 10, 10), (5, 3, 3, 3), 3, 1, 1, 1),  # stride does not divide
    ((2, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1),  # LeNet C1 (direct path)
    ((2, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),  # LeNet C3
    ((3, 8, 6, 5), (16, 8, 1, 1), 1, 0, 1, 1),  # pointwise GEMM, no im2col
    ((2, 8, 6, 5), (4, 8, 1, 1), 2, 0, 1, 1),  # 1x1 strided
    ((2, 8, 6, 5), (4, 8, 1, 1), 1, 1, 1, 1),  # 1x1 padded
    ((2, 4, 9, 8), (6, 4, 4, 3), 1, "same", (1, 2), 1),  # same, even kernel
    ((2, 4, 9, 8), (6, 4, 3, 3), 1, "valid", 1, 1),
    ((1, 2, 5, 5), (3, 2, 5, 5), 1, 0, 1, 1),  # kernel == input
    ((2, 6, 9, 7), (6, 1, 3, 3), (1, 2), 1, 1, 6),  # depthwise
    ((2, 4, 12, 12), (4, 2, 3, 3), 2, 2, 3, 2),  # large dilation
    ((1, 2, 3, 4), (2, 2, 3, 3), 2, 2, 1, 1),  # padding > kernel/2
    ((3, 2, 1, 1), (5, 2, 1, 1), 1, 0, 1, 1),  # 1x1 images
    ((2, 3, 40, 33), (4, 3, 3, 3), 1, 1, 1, 1),  # two samples per block
    ((2, 8, 64, 61), (4, 8, 3, 3), 1, 1, 1, 1),  # one sample, 3 row blocks
    ((2, 16, 96, 96), (4, 16, 1, 1), 1, 0, 1, 1),  # pointwise, 2 row blocks
    ((9, 2, 20, 20), (3, 2, 3, 3), (2, 1), 1, 1, 1),  # 9 samples per block
    # depthwise (groups == C_in): multipliers, strides, dilation, padding past the kernel
    ((2, 4, 13, 11), (8, 1, 3, 3), 2, 1, 1, 4),  # multiplier 2, stride 2
    ((2, 3, 10, 17), (9, 1, 5, 3), (3, 2), (2, 4), (2, 3), 3),  # multiplier 3, all asymmetric
    ((3, 5, 7, 40), (5, 1, 3, 3), 1, "same", 1, 5),  # two blocks and a tail per row
    ((2, 2, 6, 6), (2, 1, 2, 4), (1, 3), (3, 0), 1, 2),  # padding > kernel, kernel > width
    ((1, 3, 90, 300), (3, 1, 3, 3), (2, 1), 1, 1, 3),  # several bands of rows per plane
    ((2, 1, 9, 8), (4, 1, 3, 3), 1, 1, 1, 1),  # one input channel (depthwise when forced)
]

# The flat depthwise kernels (stride 1, W_out == W, rows shorter than two blocks) and the
# phase-split im2col / col2im (strides dividing the input, W_out == W / stride_w).
FLAT_AND_PHASE_CASES = [
    ((2, 4, 14, 14), (4, 1, 3, 3), 1, 1, 1, 4),  # flat: 196 outputs, a partial last block
    ((2, 3, 28, 28), (6, 1, 3, 3), 1, 1, 1, 3),  # flat: multiplier 2, 8-block runs
    ((1, 2, 11, 9), (2, 1, 5, 3), 1, (1, 2), (1, 2), 2),  # flat: H_out != H, dilated columns
    ((1, 2, 300, 20), (4, 1, 3, 3), 1, 1, 1, 2),  # flat: several bands per plane
    ((1, 2, 5, 2), (2, 1, 5, 5), 1, 2, 1, 2),  # padding >= W: the row kernels
    ((2, 3, 8, 10), (4, 3, 4, 4), 2, 1, 1, 1),  # phase split: k4 s2 p1
    ((2, 3, 12, 9), (4, 3, 3, 3), 3, 1, 1, 1),  # phase split: stride 3
    ((2, 2, 8, 8), (3, 2, 3, 3), (2, 1), (4, 2), (1, 2), 1),  # phase split: rows only
    ((2, 2, 6, 4), (3, 2, 3, 3), 2, (1, 4), (1, 4), 1),  # phase split: taps past the edge
]
CASES += FLAT_AND_PHASE_CASES
# Grouped 3x3 convolutions with 8 and 32 channels per group (the grouped choices of
# conv_dispatch: row kernels, blocked kernels with 8-channel blocks, F(4x4)'s weight gradient)
GROUPED_CASES = [
    ((2, 32, 9, 10), (32, 8, 3, 3), 1, 1, 1, 4),
    ((2, 64, 8, 8), (64, 32, 3, 3), 1, 1, 1, 2),
]
CASES += GROUPED_CASES


def _ids(case):
    xs, ws, s, p, d, g = case
    return f"x{xs}-w{ws}-s{s}-p{p}-d{d}-g{g}".replace(" ", "")


@pytest.fixture(
    params=["auto", "gemm", "direct", "winograd", "winograd4", "depthwise", "blocked", "rows"]
)
def algorithm(request, monkeypatch):
    loosen_for_winograd4(request.param, monkeypatch)
    with cnncore.conv_algorithm(request.param):
        yield request.param


@pytest.fixture(params=["winograd", "winograd4"])
def force_winograd(request, monkeypatch):
    """Winograd F(2x2, 3x3) and F(4x4, 3x3)."""
    loosen_for_winograd4(request.param, monkeypatch)
    with cnncore.conv_algorithm(request.param):
        yield request.param


def _make(rng, case, dtype):
    xs, ws, *_ = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv2d_matches_reference(rng, case, dtype, algorithm):
    x, w, b = _make(rng, case, dtype)
    _, _, s, p, d, g = case
    y = cnncore.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g)
    ref = conv2d_ref(x, w, b, s, p, d, g)
    assert y.dtype == dtype
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv2d_backward_matches_reference(rng, case, dtype, algorithm):
    x, w, _ = _make(rng, case, dtype)
    _, _, s, p, d, g = case
    y = conv2d_ref(x, w, None, s, p, d, g)
    gy = rng.standard_normal(y.shape).astype(dtype)
    dx = cnncore.conv2d_backward_input(gy, w, x.shape, stride=s, padding=p, dilation=d, groups=g)
    dw = cnncore.conv2d_backward_weight(gy, x, w.shape, stride=s, padding=p, dilation=d, groups=g)
    db = cnncore.conv2d_backward_bias(gy)
    assert dx.dtype == dw.dtype == db.dtype == dtype
    t = tol(dtype)
    np.testing.assert_allclose(dx, conv2d_backward_input_ref(gy, w, x.shape, s, p, d, g), **t)
    np.testing.assert_allclose(
        dw,
        conv2d_backward_weight_ref(gy, x, w.shape, s, p, d, g),
        rtol=t["rtol"] * 10,
        atol=t["atol"] * 10,
    )
    np.testing.assert_allclose(
        db, gy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=t["rtol"] * 10, atol=t["atol"] * 10
    )


@pytest.fixture(params=[1, 40, None], ids=["budget1", "budget40", "default"])
def col_budget(request):
    """Run with a tiny im2col workspace (one output row per block, so blocks start at any
    row) as well as with the default."""
    old = _conv.set_col_budget(request.param) if request.param else None
    yield request.param
    if old is not None:
        _conv.set_col_budget(old)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "w_shape, padding, dilation",
    [
        ((3, 2, 3, 3), 1, 1),
        ((3, 2, 5, 3), (4, 2), (2, 2)),
        ((3, 2, 3, 3), 3, 3),  # taps whose offset spans the whole row
        ((3, 2, 1, 3), (0, 1), 1),
        ((3, 2, 3, 3), 8, 8),  # only the centre tap reads the image
    ],
)
def test_same_size_rows_with_edges(rng, dtype, w_shape, padding, dilation, col_budget):
    """Stride-1 convolutions with W_out == W copy (im2col) and add (col2im) each tap's whole
    span of rows at once, then fix the out-of-window edge columns.  Values next to the edges
    are infinite here: a wrapped-around read or write would turn a finite result into
    inf/nan, or an infinite one into nan.  Regression test for the span path."""
    x = rng.standard_normal((2, 2, 6, 5)).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    x[0, 0, 2, -1] = np.inf
    x[1, 1, 4, 0] = -np.inf
    kw = dict(padding=padding, dilation=dilation)
    y = cnncore.conv2d(x, w, None, **kw)
    assert y.shape[2:] == x.shape[2:]
    t = tol(dtype)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(y, conv2d_ref(x, w, None, 1, padding, dilation), **t)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gy[1, 0, 3, -1] = np.inf
        gy[0, 2, 0, 0] = np.inf
        dx = cnncore.conv2d_backward_input(gy, w, x.shape, **kw)
        np.testing.assert_allclose(
            dx, conv2d_backward_input_ref(gy, w, x.shape, 1, padding, dilation), **t
        )
        xf = np.where(np.isfinite(x), x, 0).astype(dtype)
        dw = cnncore.conv2d_backward_weight(gy, xf, w.shape, **kw)
        np.testing.assert_allclose(
            dw, conv2d_backward_weight_ref(gy, xf, w.shape, 1, padding, dilation), **t
        )
        cols = cnncore.im2col(x, w_shape[2:], padding=padding, dilation=dilation)
        np.testing.assert_array_equal(cols, im2col_ref(x, w_shape[2:], 1, padding, dilation))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation, groups, algo",
    [
        ((2, 2, 8, 6), (3, 2, 4, 4), 2, 1, 1, 1, "gemm"),  # phase split, k4 s2 p1
        ((2, 2, 9, 6), (3, 2, 3, 3), (3, 2), (1, 3), (1, 3), 1, "gemm"),  # wrapped taps
        ((2, 2, 6, 5), (4, 1, 3, 3), 1, 1, 1, 2, "depthwise"),  # flat depthwise
        ((2, 2, 6, 7), (2, 1, 3, 5), 1, (1, 4), (1, 2), 2, "depthwise"),  # |offset| 4 of 7
    ],
)
def test_shifted_planes_with_edges(
    rng, dtype, x_shape, w_shape, stride, padding, dilation, groups, algo, col_budget
):
    """The phase-split im2col / col2im and the flat depthwise kernels read and write whole
    planes shifted by a tap's offset, zeroing the columns that wrap around to the next row.
    Values next to the edges are infinite here: a wrapped-around read or write would turn a
    finite result into inf/nan, or an infinite one into nan.  Regression test for both."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    x[0, 0, 2, -1] = np.inf
    x[1, 1, 4, 0] = -np.inf
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref_args = (stride, padding, dilation, groups)
    t = tol(dtype)
    with cnncore.conv_algorithm(algo), np.errstate(invalid="ignore"):
        y = cnncore.conv2d(x, w, None, **kw)
        np.testing.assert_allclose(y, conv2d_ref(x, w, None, *ref_args), **t)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gy[1, 0, -1, -1] = np.inf
        gy[0, 1, 0, 0] = np.inf
        dx = cnncore.conv2d_backward_input(gy, w, x.shape, **kw)
        np.testing.assert_allclose(dx, conv2d_backward_input_ref(gy, w, x.shape, *ref_args), **t)
        xf = np.where(np.isfinite(x), x, 0).astype(dtype)
        gf = np.where(np.isfinite(gy), gy, 0).astype(dtype)
        dw = cnncore.conv2d_backward_weight(gf, xf, w.shape, **kw)
        np.testing.assert_allclose(dw, conv2d_backward_weight_ref(gf, xf, w.shape, *ref_args), **t)
    if groups == 1:
        cols = cnncore.im2col(x, w_shape[2:], stride, padding, dilation)
        np.testing.assert_array_equal(cols, im2col_ref(x, w_shape[2:], stride, padding, dilation))


WINOGRAD_CASES = [
    # (x shape, weight shape, padding, groups)
    ((3, 5, 9, 8), (4, 5, 3, 3), 1, 1),  # odd output height: a half tile row
    ((2, 4, 7, 11), (6, 4, 3, 3), 0, 1),  # 'valid': 5 x 9 outputs
    ((2, 3, 6, 5), (2, 3, 3, 3), 2, 1),  # padding 2: the input gradient's pad is 0
    ((2, 6, 8, 9), (4, 3, 3, 3), (0, 2), 2),  # groups, asymmetric padding
    ((2, 4, 9, 8), (3, 4, 3, 3), "same", 1),
    ((1, 2, 1, 1), (3, 2, 3, 3), 1, 1),  # a single output pixel
    ((2, 3, 21, 19), (5, 3, 3, 3), 1, 1),  # several tile rows per block
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
@pytest.mark.usefixtures("force_winograd")
def test_winograd_matches_reference(rng, case, dtype, col_budget):
    """Winograd F(2x2, 3x3) and F(4x4, 3x3) (forced: the automatic choice needs 16+
    channels) against the loop reference, with tiny workspaces too (one tile row per
    block)."""
    xs, ws, p, g = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    kw = dict(padding=p, groups=g)
    y = cnncore.conv2d(x, w, b, **kw)
    t = tol(dtype)
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, 1, p, 1, g), **t)
    gy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = cnncore.conv2d_backward(gy, x, w, **kw)
    np.testing.assert_allclose(dx, conv2d_backward_input_ref(gy, w, x.shape, 1, p, 1, g), **t)
    np.testing.assert_allclose(
        dw,
        conv2d_backward_weight_ref(gy, x, w.shape, 1, p, 1, g),
        rtol=t["rtol"] * 10,
        atol=t["atol"] * 10,
    )
    np.testing.assert_array_equal(db, cnncore.conv2d_backward_bias(gy))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "xs, ws",
    [
        ((19, 32, 7, 7), (64, 32, 3, 3)),  # partial tiles, several samples per block
        ((5, 64, 8, 8), (16, 64, 3, 3)),  # whole tiles, wide input
        ((3, 16, 30, 18), (24, 16, 3, 3)),  # ragged tile columns, odd channel counts
    ],
    ids=str,
)
def test_winograd4_channel_minor_blocks(rng, xs, ws, dtype, monkeypatch):
    """F(4x4) transforms the input over the channels of each tile (channel-minor blocks of
    several samples, skewed transform matrices): ResNet-like channel counts against the GEMM
    path, all three passes, and bit-identical for any thread count."""
    loosen_for_winograd4("winograd4", monkeypatch)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    gy = rng.standard_normal((xs[0], ws[0], xs[2], xs[3])).astype(dtype)

    def run():
        return (cnncore.conv2d(x, w, b, padding=1), *cnncore.conv2d_backward(gy, x, w, padding=1))

    with cnncore.conv_algorithm("gemm"):
        expected = run()
    with cnncore.conv_algorithm("winograd4"):
        got = run()
        assert_bit_identical_across_threads(run, (1, 2, 3))
    t = tol(dtype)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=t["rtol"], atol=t["atol"] * np.abs(e).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((64, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}),  # LeNet conv1: 28 = 16 + 12 lanes
        ((17, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet conv2 (its input gradient: 16 -> 6)
        ((9, 3, 11, 37), (7, 3, 5, 4), {"padding": (1, 3), "dilation": (2, 1)}),
        ((5, 4, 13, 9), (10, 2, 3, 3), {"padding": 1, "groups": 2}),
        ((3, 2, 5, 70), (5, 2, 5, 5), {"padding": (2, 0)}),  # rows of several vectors
    ],
)
def test_rows_kernels(rng, xs, ws, kw, dtype):
    """The row-vectorized kernels (pixels of a row in vector lanes; partial row blocks and
    vectors, output-channel blocks with a remainder, dilation, groups): all three passes
    against the NumPy reference, and bit-identical for any thread count."""
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    with cnncore.conv_algorithm("rows"):
        y = cnncore.conv2d(x, w, b, **kw)
        gy = rng.standard_normal(y.shape).astype(dtype)

        def run():
            return (cnncore.conv2d(x, w, b, **kw), *cnncore.conv2d_backward(gy, x, w, **kw))

        got = run()
        assert_bit_identical_across_threads(run, (1, 2, 3))
    args = (kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("groups", 1))
    expected = (
        conv2d_ref(x, w, b, *args),
        conv2d_backward_input_ref(gy, w, x.shape, *args),
        conv2d_backward_weight_ref(gy, x, w.shape, *args),
        gy.astype(np.float64).sum(axis=(0, 2, 3)),
    )
    t = tol(dtype)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=t["rtol"], atol=t["atol"] * np.abs(e).max())


def test_rows_weight_gradient_masks_lanes_past_the_row():
    """Regression: the row-vectorized weight gradient reads whole vectors of input past each
    row's last output; an Inf there (times the zero gradient of those lanes) must not make
    NaN -- the weight gradient is what GEMM gives."""
    x = np.random.default_rng(3).standard_normal((2, 1, 28, 28)).astype(np.float32)
    x[0, 0, 3, 27] = np.inf
    x[1, 0, 9, 26] = -np.inf
    w = np.ones((6, 1, 5, 5), np.float32)
    gy = np.random.default_rng(4).standard_normal((2, 6, 28, 28)).astype(np.float32)
    with cnncore.conv_algorithm("gemm"):
        expected = cnncore.conv2d_backward_weight(gy, x, w.shape, padding=2)
    with cnncore.conv_algorithm("rows"):
        got = cnncore.conv2d_backward_weight(gy, x, w.shape, padding=2)
    assert np.isinf(expected).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # sums of 1568 products


@pytest.mark.parametrize("algo", ["winograd", "winograd4"])
@pytest.mark.parametrize("where", ["x", "weight", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_winograd_falls_back_on_inf_and_nan(rng, where, value, algo):
    """Winograd's transforms add and subtract neighbouring values: an Inf would meet its
    own negative and become NaN.  Inputs or filters with Inf/NaN take the GEMM path, so
    results are bit-identical to it.  Regression test for the fallback."""
    x = rng.standard_normal((2, 16, 12, 12))
    w = rng.standard_normal((16, 16, 3, 3))
    gy = rng.standard_normal((2, 16, 12, 12))
    {"x": x, "weight": w, "grad_output": gy}[where][1, 3, 2, 1] = value
    results = {}
    for name in ("gemm", algo):
        with cnncore.conv_algorithm(name), np.errstate(invalid="ignore"):
            results[name] = (
                cnncore.conv2d(x, w, padding=1),
                *cnncore.conv2d_backward(gy, x, w, padding=1),
            )
    # the outputs that read the non-finite value: (y, dx, dw, db)
    reads = {"x": (0, 2), "weight": (0, 1), "grad_output": (1, 2, 3)}[where]
    for i in reads:
        np.testing.assert_array_equal(results["gemm"][i], results[algo][i])
    if where == "x" and value == np.inf:
        assert np.isposinf(results["gemm"][0]).any() or np.isneginf(results["gemm"][0]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 8, 19])
@pytest.mark.parametrize(
    "case",
    [
        CASES[1],
        CASES[4],
        CASES[5],
        CASES[16],
        # the channel-blocked kernels' fused pass over dy (both gradients at unit stride):
        # a partial channel block, pixel tails; two vectors per block; groups, dilation
        ((2, 16, 9, 11), (40, 16, 3, 3), 1, 1, 1, 1),
        ((3, 32, 8, 8), (64, 32, 3, 3), 1, 1, 1, 1),
        ((2, 24, 7, 9), (48, 12, 3, 3), 1, (0, 2), (1, 2), 2),
    ],
    ids=_ids,
)
def test_conv2d_backward_matches_the_separate_passes(rng, case, n, dtype, algorithm):
    """conv2d_backward computes the bias gradient inside the weight-gradient pass (and with
    the channel-blocked kernels the input gradient in the same pass over dy): it must
    equal conv2d_backward_bias bit for bit (same batch parts, same order), and its other two
    outputs those of conv2d_backward_input / conv2d_backward_weight, for any thread count."""
    xs, ws, s, p, d, g = case
    x = rng.standard_normal((n, *xs[1:])).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    gy = rng.standard_normal(cnncore.conv2d(x, w, None, **kw).shape).astype(dtype)
    dx, dw, db = cnncore.conv2d_backward(gy, x, w, **kw)
    np.testing.assert_array_equal(db, cnncore.conv2d_backward_bias(gy))
    np.testing.assert_array_equal(dx, cnncore.conv2d_backward_input(gy, w, x.shape, **kw))
    np.testing.assert_array_equal(dw, cnncore.conv2d_backward_weight(gy, x, w.shape, **kw))
    np.testing.assert_allclose(
        db,
        gy.astype(np.float64).sum(axis=(0, 2, 3)),
        rtol=tol(dtype)["rtol"] * 10,
        atol=tol(dtype)["atol"] * 10,
    )
    assert cnncore.conv2d_backward(gy, x, w, **kw, output_mask=(False, False, True))[:2] == (
        None,
        None,
    )
    only_bias = cnncore.conv2d_backward(gy, x, w, **kw, output_mask=(False, False, True))[2]
    np.testing.assert_array_equal(only_bias, db)
    assert_bit_identical_across_threads(lambda: cnncore.conv2d_backward(gy, x, w, **kw), (1, 2, 3))


def test_conv2d_backward_against_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b = _make(rng, CASES[1], np.float64)
    _, _, s, p, d, g = CASES[1]
    gy = rng.standard_normal(
        cnncore.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g).shape
    )
    ours = cnncore.conv2d_backward(gy, x, w, s, p, d, g)
    theirs = torch.ops.aten.convolution_backward(
        torch.from_numpy(gy),
        torch.from_numpy(x),
        torch.from_numpy(w),
        [w.shape[0]],
        list(s),
        list(p),
        list(d),
        False,
        [0, 0],
        g,
        [True, True, True],
    )
    for a, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[1], CASES[2], CASES[8], CASES[11], CASES[19], CASES[20]], ids=_ids
)
def test_conv2d_gradients_finite_differences(rng, case, algorithm):
    x, w, b = _make(rng, case, np.float64)
    x, w = x[:, :, :6, :6].copy(), w.copy()
    _, _, s, p, d, g = case
    gy = rng.standard_normal(cnncore.conv2d(x, w, b, s, p, d, g).shape)

    def loss():
        return float(np.sum(cnncore.conv2d(x, w, b, s, p, d, g) * gy))

    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    np.testing.assert_allclose(
        cnncore.conv2d_backward_input(gy, w, x.shape, **kw), fd_grad(loss, x), atol=1e-5, rtol=1e-3
    )
    np.testing.assert_allclose(
        cnncore.conv2d_backward_weight(gy, x, w.shape, **kw), fd_grad(loss, w), atol=1e-5, rtol=1e-3
    )
    np.testing.assert_allclose(
        cnncore.conv2d_backward_bias(gy), fd_grad(loss, b), atol=1e-5, rtol=1e-3
    )


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_adjoint_identity(rng, case, algorithm):
    x, w, _ = _make(rng, case, np.float64)
    _, _, s, p, d, g = case
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    y = cnncore.conv2d(x, w, **kw)
    gy = rng.standard_normal(y.shape)
    lhs = np.vdot(y, gy)
    assert lhs == pytest.approx(
        np.vdot(x, cnncore.conv2d_backward_input(gy, w, x.shape, **kw)), rel=1e-10, abs=1e-10
    )
    assert lhs == pytest.approx(
        np.vdot(w, cnncore.conv2d_backward_weight(gy, x, w.shape, **kw)), rel=1e-10, abs=1e-10
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kernel_size, stride, padding, dilation",
    [(3, 1, 0, 1), ((2, 3), (2, 1), (1, 0), (1, 2)), (1, 1, 0, 1), (4, 3, 1, 2)],
)
def test_im2col_col2im_reference(rng, dtype, kernel_size, stride, padding, dilation):
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    cols = cnncore.im2col(x, kernel_size, stride, padding, dilation)
    ref = im2col_ref(x, kernel_size, stride, padding, dilation)
    np.testing.assert_array_equal(cols, ref.astype(dtype))
    back = cnncore.col2im(cols, (9, 8), kernel_size, stride, padding, dilation)
    np.testing.assert_allclose(
        back, col2im_ref(cols, (9, 8), kernel_size, stride, padding, dilation), **tol(dtype)
    )
    # adjoint: <im2col(x), c> == <x, col2im(c)>
    c = rng.standard_normal(cols.shape)
    lhs = np.vdot(im2col_ref(x, kernel_size, stride, padding, dilation), c)
    rhs = np.vdot(
        x.astype(np.float64), cnncore.col2im(c, (9, 8), kernel_size, stride, padding, dilation)
    )
    assert lhs == pytest.approx(rhs, rel=1e-9)
    # unbatched forms
    np.testing.assert_array_equal(
        cnncore.im2col(x[0], kernel_size, stride, padding, dilation), cols[0]
    )
    np.testing.assert_array_equal(
        cnncore.col2im(cols[0], (9, 8), kernel_size, stride, padding, dilation), back[0]
    )


def test_conv2d_is_w_times_im2col(rng):
    x = rng.standard_normal((2, 3, 8, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    cols = cnncore.im2col(x, (3, 2), 2, 1)
    y = np.einsum("kc,ncl->nkl", w.reshape(4, -1), cols).reshape(2, 4, 4, 4)
    np.testing.assert_allclose(cnncore.conv2d(x, w, stride=2, padding=1), y, rtol=1e-12)


def test_docstring_example():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = cnncore.conv2d(x, np.ones((1, 1, 3, 3), np.float32))
    np.testing.assert_array_equal(y[0, 0], [[45, 54], [81, 90]])


# --------------------------------------------------------------------------------------------
# Array handling
# --------------------------------------------------------------------------------------------


def test_views_readonly_fortran_lists(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    ref = cnncore.conv2d(x, w, padding=1)
    xf = np.asfortranarray(x)
    xr = x.copy()
    xr.setflags(write=False)
    wr = w.copy()
    wr.setflags(write=False)
    big = np.zeros((2, 6, 16, 8))
    big[:, ::2, ::2] = x
    xs = big[:, ::2, ::2]
    assert not xs.flags.c_contiguous
    xn = x[:, :, ::-1, ::-1].copy()[:, :, ::-1, ::-1]  # negative strides
    for xv in (xf, xr, xs, xn, x.tolist()):
        np.testing.assert_array_equal(cnncore.conv2d(xv, wr, padding=1), ref)
    np.testing.assert_array_equal(
        cnncore.conv2d_backward_weight(ref, xs, w.shape, padding=1),
        cnncore.conv2d_backward_weight(ref, x, w.shape, padding=1),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    x = np.zeros((0, 3, 8, 8), dtype)
    w = np.ones((4, 3, 3, 3), dtype)
    y = cnncore.conv2d(x, w, np.ones(4, dtype), padding=1)
    assert y.shape == (0, 4, 8, 8) and y.dtype == dtype
    assert cnncore.conv2d_backward_input(y, w, x.shape, padding=1).shape == x.shape
    dw = cnncore.conv2d_backward_weight(y, x, w.shape, padding=1)
    assert dw.shape == w.shape and not dw.any()
    db = cnncore.conv2d_backward_bias(y)
    assert db.shape == (4,) and not db.any()
    assert cnncore.im2col(x, 3).shape == (0, 27, 36)
    assert cnncore.col2im(np.zeros((0, 27, 36), dtype), 8, 3).shape == (0, 3, 8, 8)


def test_zero_sized_input_reads_only_padding():
    x = np.zeros((2, 3, 0, 4))
    w = np.ones((2, 3, 1, 1))
    y = cnncore.conv2d(x, w, np.array([1.5, -2.0]), padding=1)
    assert y.shape == (2, 2, 2, 6)
    np.testing.assert_array_equal(y[:, 0], 1.5)
    np.testing.assert_array_equal(y[:, 1], -2.0)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)
G = np.zeros((2, 6, 6, 6), np.float32)

BAD_INPUTS = [
    # (function, args, kwargs, exception, message fragment)
    (cnncore.conv2d, (X[0, 0], W), {}, ValueError, "x"),  # (C, H, W) is an unbatched sample
    (cnncore.conv2d, (X, W[0]), {}, ValueError, "weight"),
    (cnncore.conv2d, (X, np.zeros((6, 3, 3, 3), np.float32)), {}, ValueError, "channels"),
    (cnncore.conv2d, (X, np.zeros((6, 2, 3, 3), np.float32)), {"groups": 4}, ValueError, "groups"),
    (cnncore.conv2d, (X, np.zeros((5, 2, 3, 3), np.float32)), {"groups": 2}, ValueError, "groups"),
    (cnncore.conv2d, (X, W), {"groups": 0}, ValueError, "groups"),
    (cnncore.conv2d, (X, W), {"groups": 1.5}, TypeError, "groups"),
    (cnncore.conv2d, (X, W), {"stride": 0}, ValueError, "stride"),
    (cnncore.conv2d, (X, W), {"stride": (1, -1)}, ValueError, "stride"),
    (cnncore.conv2d, (X, W), {"stride": (1, 2, 3)}, ValueError, "stride"),
    (cnncore.conv2d, (X, W), {"stride": "2"}, TypeError, "stride"),
    (cnncore.conv2d, (X, W), {"dilation": 0}, ValueError, "dilation"),
    (cnncore.conv2d, (X, W), {"padding": -1}, ValueError, "padding"),
    (cnncore.conv2d, (X, W), {"padding": "full"}, ValueError, "padding"),
    (cnncore.conv2d, (X, W), {"padding": "same", "stride": 2}, ValueError, "stride"),
    (cnncore.conv2d, (X, np.zeros((6, 4, 9, 9), np.float32)), {}, ValueError, "kernel"),
    (cnncore.conv2d, (X, W), {"dilation": 5}, ValueError, "kernel"),
    (cnncore.conv2d, (X, np.zeros((6, 4, 0, 3), np.float32)), {}, ValueError, "kernel"),
    (cnncore.conv2d, (X, W, np.zeros(5, np.float32)), {}, ValueError, "bias"),
    (cnncore.conv2d, (X, W, np.zeros((6, 1), np.float32)), {}, ValueError, "bias"),
    (cnncore.conv2d, (X, W, np.zeros(6, np.float64)), {}, TypeError, "bias"),
    (cnncore.conv2d, (X.astype(np.float64), W), {}, TypeError, "float64"),
    (cnncore.conv2d, (X.astype(np.int32), W), {}, TypeError, "x"),
    (cnncore.conv2d, (X.astype(bool), W), {}, TypeError, "x"),
    (cnncore.conv2d, (X.astype(np.float16), W), {}, TypeError, "x"),
    (cnncore.conv2d, (X.astype(object), W), {}, TypeError, "x"),
    (cnncore.conv2d, (None, W), {}, TypeError, "x"),
    (cnncore.conv2d, (X, W), {"padding": 2**40}, ValueError, "padding"),
    (cnncore.conv2d, (X, W), {"padding": 2**30}, ValueError, "output"),
    (cnncore.conv2d_backward_input, (G, W, (2, 4, 8)), {}, ValueError, "input_shape"),
    (cnncore.conv2d_backward_input, (G, W, (2, 4, 8, -8)), {}, ValueError, "input_shape"),
    (cnncore.conv2d_backward_input, (G, W, "2,4,8,8"), {}, TypeError, "input_shape"),
    (cnncore.conv2d_backward_input, (G, W, (2, 4, 9, 8)), {}, ValueError, "grad_output"),
    (cnncore.conv2d_backward_input, (G, W, (3, 4, 8, 8)), {}, ValueError, "grad_output"),
    (cnncore.conv2d_backward_input, (G, W, (2, 5, 8, 8)), {}, ValueError, "channels"),
    (
        cnncore.conv2d_backward_input,
        (G, W.astype(np.float64), (2, 4, 8, 8)),
        {},
        TypeError,
        "weight",
    ),
    (cnncore.conv2d_backward_input, (G, W, (2**40, 2**40, 8, 8)), {}, ValueError, "input_shape"),
    (cnncore.conv2d_backward_weight, (G, X, (6, 4, 3)), {}, ValueError, "weight_shape"),
    (cnncore.conv2d_backward_weight, (G, X, (6, 4, 4, 3)), {}, ValueError, "grad_output"),
    (cnncore.conv2d_backward_weight, (G, X, (6, 2, 3, 3)), {"groups": 3}, ValueError, "groups"),
    (cnncore.conv2d_backward_weight, (G[0], X, (6, 4, 3, 3)), {}, ValueError, "grad_output"),
    (cnncore.conv2d_backward_bias, (G[0, 0],), {}, ValueError, "grad_output"),
    (cnncore.conv2d_backward_bias, (G.astype(np.int64),), {}, TypeError, "grad_output"),
    (cnncore.im2col, (X, 0), {}, ValueError, "kernel_size"),
    (cnncore.im2col, (X, 3), {"padding": "same"}, TypeError, "padding"),
    (cnncore.im2col, (X[0, 0], 3), {}, ValueError, "x"),
    (cnncore.im2col, (X, 9), {}, ValueError, "kernel"),
    (cnncore.col2im, (np.zeros((2, 10, 36), np.float32), 8, 3), {}, ValueError, "cols"),
    (cnncore.col2im, (np.zeros((2, 9, 35), np.float32), 8, 3), {}, ValueError, "cols"),
    (cnncore.col2im, (np.zeros((2, 9, 36), np.float32), -8, 3), {}, ValueError, "output_size"),
]


@pytest.mark.parametrize(
    "func, args, kwargs, exc, fragment",
    BAD_INPUTS,
    ids=[f"{i}-{c[0].__name__}-{c[4]}" for i, c in enumerate(BAD_INPUTS)],
)
def test_bad_input(func, args, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        func(*args, **kwargs)
    assert "Received" in str(info.value) or exc is TypeError


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


BLOCKED_CASES = [
    # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 16, 9, 11), (40, 16, 3, 3), 1, 1, 1, 1),  # a partial channel block, pixel tails
    ((3, 32, 8, 8), (64, 32, 3, 3), 1, 1, 1, 1),  # two vectors per channel block
    ((2, 16, 13, 12), (32, 16, 3, 3), 2, 1, 1, 1),  # stride 2: input gradient in 4 phases
    ((2, 32, 16, 16), (64, 32, 3, 3), 2, 1, 1, 1),  # ResNet's transition, even sizes
    ((2, 16, 9, 8), (20, 16, 3, 3), 2, 0, 1, 1),  # unpadded: the last row gets no tap
    ((2, 6, 11, 13), (10, 6, 4, 5), (3, 2), (2, 1), 1, 1),  # 3 x 2 phases of 2x2 / 1x3 taps
    ((2, 8, 12, 12), (16, 4, 2, 2), 2, 0, 1, 2),  # 1x1 phases (stride == kernel), groups
    ((2, 12, 11, 10), (18, 6, 3, 3), 3, 2, 1, 2),  # stride 3, groups
    ((2, 8, 12, 17), (16, 8, 5, 3), 1, (2, 1), (2, 1), 1),  # 5x3 taps, dilation
    # dilated columns: the weight gradient's generic microkernel (the others: unit column
    # dilation); 7 x 20 pixels: transposed tiles of dy and a tail
    ((2, 16, 9, 16), (24, 16, 3, 3), 1, (1, 2), (1, 2), 1),
    ((1, 4, 5, 40), (3, 4, 3, 3), (1, 2), (0, 3), 1, 1),  # wide rows, three output channels
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BLOCKED_CASES + GROUPED_CASES, ids=_ids)
def test_blocked_kernels_at_every_simd_level(rng, case, dtype, monkeypatch):
    """The channel-blocked microkernels are C compiled once per SIMD level (vector width and
    register blocking differ): every build this CPU runs, all three passes and the bias,
    against the loop reference."""
    from cnncore import _threads
    from cnncore._config import load_kernels
    from cnncore._shared import ConvAlgorithm

    # load_kernels records the level it loaded: keep the record of the module in use
    monkeypatch.setattr(_config, "_loaded_simd", dict(_config._loaded_simd))

    x, w, b = _make(rng, case, dtype)
    _, _, s, p, d, g = case
    ref = conv2d_ref(x, w, b, s, p, d, g)
    gy = rng.standard_normal(ref.shape).astype(dtype)
    ref_dx = conv2d_backward_input_ref(gy, w, x.shape, s, p, d, g)
    ref_dw = conv2d_backward_weight_ref(gy, x, w.shape, s, p, d, g)
    (sh, sw), (dh, dw) = [(v, v) if np.isscalar(v) else v for v in (s, d)]
    ph, pw = (p, p) if np.isscalar(p) else p
    geo = (sh, sw, ph, pw, dh, dw, g, int(ConvAlgorithm.ALGO_BLOCKED))
    t = tol(dtype)
    for level in _threads.cpu_simd_levels():
        mod, got = load_kernels("cnncore.ops._conv", level)
        if got != level:
            continue  # that variant was not built
        for threads in (1, 3):
            y = np.empty(ref.shape, dtype)
            mod.conv2d_forward(x, w, b, y, *geo, threads)
            np.testing.assert_allclose(y, ref, **t, err_msg=level)
            dx = np.empty_like(x)
            mod.conv2d_backward_input(gy, w, dx, *geo, threads)
            np.testing.assert_allclose(dx, ref_dx, **t, err_msg=level)
            dwt, db = np.empty_like(w), np.empty_like(b)
            mod.conv2d_backward_weight(gy, x, dwt, db, *geo, threads)
            np.testing.assert_allclose(dwt, ref_dw, rtol=t["rtol"] * 10, atol=t["atol"] * 10)
            np.testing.assert_allclose(
                db,
                gy.astype(np.float64).sum(axis=(0, 2, 3)),
                rtol=t["rtol"] * 10,
                atol=t["atol"] * 10,
            )


@pytest.mark.parametrize("case", BLOCKED_CASES[2:7], ids=_ids)
def test_blocked_strided_input_gradient_finite_differences(rng, case):
    """The blocked kernels' strided input gradient (stride phases, each with its own taps,
    interleaved into dx; pixels no tap reaches) against float64 central differences, and
    conv_transpose2d's forward (the same kernel, with a bias on dx's channels)."""
    x, w, b = _make(rng, case, np.float64)
    x = x[:1].copy()
    _, _, s, p, d, g = case
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    y = cnncore.conv2d(x, w, b, **kw)
    gy = rng.standard_normal(y.shape)
    bias_in = rng.standard_normal(x.shape[1])

    def loss():
        return float(np.sum(cnncore.conv2d(x, w, b, **kw) * gy))

    with cnncore.conv_algorithm("blocked"):
        geo = conv2d_geometry("t", x.shape[2:], w.shape[2:], s, p, d)
        assert conv_dispatch.blocked_input_applies(geo)  # (the kernels run it, not GEMM)
        dx = cnncore.conv2d_backward_input(gy, w, x.shape, **kw)
        np.testing.assert_allclose(dx, fd_grad(loss, x), atol=1e-6, rtol=1e-5)
        (sh, sw), (ph, pw) = [(v, v) if np.isscalar(v) else v for v in (s, p)]
        op = tuple(
            x.shape[2 + a] - ((y.shape[2 + a] - 1) * st - 2 * pa + w.shape[2 + a])
            for a, st, pa in ((0, sh, ph), (1, sw, pw))
        )
        yt = cnncore.conv_transpose2d(
            gy, w, bias_in, stride=s, padding=p, output_padding=op, groups=g
        )
    np.testing.assert_allclose(yt, dx + bias_in[:, None, None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [
        ((1, 16, 11, 13), (16, 16, 3, 3), 1, 1, 1, 1),  # one sample: bands of output rows
        ((1, 32, 8, 8), (64, 32, 3, 3), 2, 1, 1, 1),  # 4 output rows for up to 4 threads
        ((1, 16, 3, 5), (40, 16, 3, 3), 1, 1, 1, 1),  # fewer rows than threads
        ((1, 12, 9, 9), (18, 6, 3, 3), 1, 1, 1, 2),  # two groups
        ((3, 16, 6, 7), (16, 16, 3, 3), 1, 1, 1, 1),  # three samples, four threads
    ],
    ids=_ids,
)
def test_blocked_forward_small_batch_splits_rows_bit_identically(rng, case, dtype, monkeypatch):
    """With fewer (sample, group) tasks than threads the blocked forward splits each
    sample's output rows between the threads: the reference's values, and the same bytes
    for any thread count, at every SIMD level."""
    from cnncore import _threads
    from cnncore._config import load_kernels
    from cnncore._shared import ConvAlgorithm

    monkeypatch.setattr(_config, "_loaded_simd", dict(_config._loaded_simd))
    x, w, b = _make(rng, case, dtype)
    _, _, s, p, d, g = case
    ref = conv2d_ref(x, w, b, s, p, d, g)
    geo = (s, s, p, p, d, d, g, int(ConvAlgorithm.ALGO_BLOCKED))
    for level in _threads.cpu_simd_levels():
        mod, got = load_kernels("cnncore.ops._conv", level)
        if got != level:
            continue
        outs = []
        for threads in (1, 2, 3, 4, 2):
            y = np.empty(ref.shape, dtype)
            mod.conv2d_forward(x, w, b, y, *geo, threads)
            outs.append(y)
        np.testing.assert_allclose(outs[0], ref, **tol(dtype), err_msg=level)
        assert all(o.tobytes() == outs[0].tobytes() for o in outs[1:]), level


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case",
    [CASES[1], CASES[3], CASES[4], CASES[5], CASES[11], CASES[15], CASES[16], CASES[17]]
    + CASES[19:22]
    + FLAT_AND_PHASE_CASES
    + BLOCKED_CASES[:8]
    + GROUPED_CASES,
    ids=_ids,
)
def test_bit_identical_for_any_thread_count(rng, case, dtype, algorithm):
    x, w, b = _make(rng, case, dtype)
    x = np.concatenate([x] * 5)  # N = 10 or 15: more samples than weight-gradient parts
    _, _, s, p, d, g = case
    kw = dict(stride=s, padding=p, dilation=d, groups=g)

    def compute():
        y = cnncore.conv2d(x, w, b, **kw)
        gy = np.cos(y).astype(dtype)
        return (
            y,
            cnncore.conv2d_backward_input(gy, w, x.shape, **kw),
            cnncore.conv2d_backward_weight(gy, x, w.shape, **kw),
            cnncore.conv2d_backward_bias(gy),
            cnncore.im2col(x, 3, padding=1),
        )

    assert_bit_identical_across_threads(compute, (1, 2, 3, 4))


def test_openmp_enabled():
    if os.environ.get("CNNCORE_ALLOW_SERIAL") == "1":
        pytest.skip("CNNCORE_ALLOW_SERIAL=1: serial builds allowed here")
    from cnncore import _threads

    assert _threads.openmp_enabled(), "cnncore was built without OpenMP"


def test_set_num_threads_validation(restore_threads):
    with pytest.raises(ValueError, match="n"):
        cnncore.set_num_threads(0)
    with pytest.raises(TypeError, match="n"):
        cnncore.set_num_threads(2.0)
    cnncore.set_num_threads(3)
    assert cnncore.get_num_threads() == 3


def test_concurrent_python_threads(rng):
    x = rng.standard_normal((8, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = cnncore.conv2d(x, w, padding=1)
    gy = np.ones_like(expected)
    expected_dw = cnncore.conv2d_backward_weight(gy, x, w.shape, padding=1)
    errors = []

    def work():
        try:
            for _ in range(10):
                np.testing.assert_array_equal(cnncore.conv2d(x, w, padding=1), expected)
                np.testing.assert_array_equal(
                    cnncore.conv2d_backward_weight(gy, x, w.shape, padding=1), expected_dw
                )
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_blas_threads_restored_after_concurrent_use():
    from cnncore import _config

    before = [lib.num_threads for lib in _config._blas_controllers()]
    test_concurrent_python_threads(np.random.default_rng(0))
    assert [lib.num_threads for lib in _config._blas_controllers()] == before


# --------------------------------------------------------------------------------------------
# PyTorch cross-checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_against_torch(rng, case, dtype, algorithm):
    torch = pytest.importorskip("torch")
    x, w, b = _make(rng, case, dtype)
    _, _, s, p, d, g = case
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    np.testing.assert_allclose(cnncore.conv2d(x, w, b, **kw), ty.numpy(), **tol(dtype))
    gy = rng.standard_normal(ty.shape).astype(dtype)
    tg = torch.from_numpy(gy)
    if isinstance(p, str):  # torch.nn.grad helpers take numeric padding only
        return
    t = tol(dtype)
    np.testing.assert_allclose(
        cnncore.conv2d_backward_input(gy, w, x.shape, **kw),
        torch.nn.grad.conv2d_input(x.shape, tw, tg, **kw).numpy(),
        **t,
    )
    np.testing.assert_allclose(
        cnncore.conv2d_backward_weight(gy, x, w.shape, **kw),
        torch.nn.grad.conv2d_weight(tx, w.shape, tg, **kw).numpy(),
        rtol=t["rtol"] * 10,
        atol=t["atol"] * 10,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_unfold_fold_against_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 10, 9)).astype(dtype)
    for k, s, p, d in [(3, 1, 1, 1), ((2, 3), (2, 1), (0, 1), (2, 1))]:
        cols = cnncore.im2col(x, k, s, p, d)
        tcols = torch.nn.functional.unfold(torch.from_numpy(x), k, dilation=d, padding=p, stride=s)
        np.testing.assert_array_equal(cols, tcols.numpy())
        back = cnncore.col2im(cols, (10, 9), k, s, p, d)
        tback = torch.nn.functional.fold(tcols, (10, 9), k, dilation=d, padding=p, stride=s)
        np.testing.assert_allclose(back, tback.numpy(), **tol(dtype))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3),
    groups=st.integers(1, 3),
    cg=st.integers(1, 3),
    kg=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 3),
    pw=st.integers(0, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    algo=st.sampled_from([None, "gemm", "direct", "winograd4", "depthwise", "blocked", "rows"]),
)
def test_hypothesis_geometry_sweep(
    n, groups, cg, kg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, seed, algo
):
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * groups, h, w))
    wt = rng.standard_normal((kg * groups, cg, kh, kw))
    kwargs = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    with cnncore.conv_algorithm(algo or "auto"):
        if ho <= 0 or wo <= 0:
            with pytest.raises(ValueError, match="kernel"):
                cnncore.conv2d(x, wt, **kwargs)
            return
        y = cnncore.conv2d(x, wt, **kwargs)
        np.testing.assert_allclose(y, conv2d_ref(x, wt, None, **kwargs), rtol=1e-10, atol=1e-12)
        gy = rng.standard_normal(y.shape)
        np.testing.assert_allclose(
            cnncore.conv2d_backward_input(gy, wt, x.shape, **kwargs),
            conv2d_backward_input_ref(gy, wt, x.shape, **kwargs),
            rtol=1e-10,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            cnncore.conv2d_backward_weight(gy, x, wt.shape, **kwargs),
            conv2d_backward_weight_ref(gy, x, wt.shape, **kwargs),
            rtol=1e-10,
            atol=1e-11,
        )


# The blocked kernels come before Winograd with AVX-512 only (see conv_dispatch.py).
_WIDE = _config._selected_simd() == "avx512"
_WIDE_BLOCKED = "blocked" if _WIDE else "winograd4"
# (F(4x4) on 7x7 outputs: only with AVX-512, from 64 channels; else the blocked kernels)
_WIDE_W4 = "winograd4" if _WIDE else "blocked"
# ... and run LeNet's 5x5 convolutions over few input channels (forward, weight gradient).
# Their input gradient (6 output channels; with AVX-512) and the forward and weight gradient
# of the first one (1 -> 6 channels) run the row-vectorized kernels.
_LENET = ("blocked", "rows" if _WIDE else "gemm", "blocked")
_SMALL_FWD = "gemm" if _WIDE else "blocked"
# the blocked strided input gradient (stride phases): with AVX-512; with AVX2 GEMM
_STRIDED_DX = "blocked" if _WIDE else "gemm"
# Grouped 3x3 convolutions (see conv_dispatch._grouped_choice): 8 channels per group run the
# row kernels with AVX-512, the blocked ones with AVX2 (8 lanes); 16 per group with AVX2 the
# blocked forward and weight gradient; 32 per group with AVX-512 F(4x4)'s weight gradient.
_SIMD = _config._selected_simd()
_G8 = {"avx512": ("rows",) * 3, "avx2": ("blocked",) * 3}.get(_SIMD, ("direct", "gemm", "gemm"))
_G16 = {"avx512": ("blocked",) * 3, "avx2": ("blocked", "winograd4", "blocked")}.get(
    _SIMD, ("winograd4",) * 3
)
_G32 = {"avx512": ("blocked", "blocked", "winograd4")}.get(_SIMD, ("winograd4",) * 3)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs, fwd, bwd, wgrad",
    [
        # LeNet's second conv: the blocked kernels forward and for the weight gradient,
        # row-vectorized input grad (AVX-512)
        ((64, 6, 14, 14), (16, 6, 5, 5), {}, *_LENET),
        ((8, 3, 32, 32), (16, 3, 3, 3), {"padding": 1}, "direct", "gemm", "gemm"),
        # one input channel on MNIST-sized images: the row-vectorized kernels for few output
        # channels and 5x5 windows (LeNet's first conv), else GEMM
        ((64, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}, "rows", _LENET[1], "rows"),
        ((64, 1, 28, 28), (32, 1, 3, 3), {"padding": 1}, "gemm", "gemm", "gemm"),
        # 16-128 channels per group (ResNet): the channel-blocked kernels, any stride; the
        # strided input gradient with AVX-512 only; with AVX2 only where Winograd does not apply;
        # with AVX-512 F(4x4) Winograd from 64 channels (>= 7x7) and from 32 on whole 4x4
        # tiles (ResNet's stages 2 and 3)
        # (F(4x4) from 32 into 64 channels also on partial tiles: the README CNN's forward
        # and weight gradient)
        ((64, 32, 14, 14), (64, 32, 3, 3), {"padding": 1}, "winograd4", _WIDE_BLOCKED, "winograd4"),
        ((64, 32, 14, 14), (32, 32, 3, 3), {"padding": 1}, *[_WIDE_BLOCKED] * 3),
        ((128, 64, 8, 8), (64, 64, 3, 3), {"padding": 1}, *["winograd4"] * 3),
        ((128, 64, 7, 7), (64, 64, 3, 3), {"padding": 1}, *[_WIDE_W4] * 3),
        ((128, 32, 16, 16), (32, 32, 3, 3), {"padding": 1}, _WIDE_BLOCKED, *["winograd4"] * 2),
        ((128, 16, 32, 32), (16, 16, 3, 3), {"padding": 1}, *[_WIDE_BLOCKED] * 3),
        ((32, 96, 8, 8), (96, 96, 3, 3), {"padding": 1}, *["blocked"] * 3),
        # Winograd needs enough tiles in the batch: one 16x16 image runs blocked or GEMM
        ((1, 32, 16, 16), (32, 32, 3, 3), {"padding": 1}, *["blocked"] * 3),
        # ... and with AVX-512 a batch of fewer than ~50 output pixels in narrow rows runs its
        # forward as GEMM (rows of 4 outputs leave most of the lanes idle)
        ((1, 64, 4, 4), (64, 64, 3, 3), {"padding": 1}, _SMALL_FWD, "blocked", "blocked"),
        ((2, 64, 4, 4), (64, 64, 3, 3), {"padding": 1}, _SMALL_FWD, "blocked", "blocked"),
        ((1, 64, 8, 8), (64, 64, 3, 3), {"padding": 1}, *["blocked"] * 3),
        ((1, 64, 7, 7), (64, 64, 3, 3), {"padding": 1}, *["blocked"] * 3),
        ((4, 64, 8, 8), (64, 64, 3, 3), {"padding": 1}, *["blocked"] * 3),
        (
            (1, 32, 16, 16),
            (64, 32, 3, 3),
            {"padding": 1, "stride": 2},
            "blocked",
            _STRIDED_DX,
            "blocked",
        ),
        (
            (128, 16, 32, 32),
            (32, 16, 3, 3),
            {"padding": 1, "stride": 2},
            "blocked",
            _STRIDED_DX,
            "blocked",
        ),
        # DCGAN's k4 s2 p1 upsampler (conv_transpose2d's forward: conv2d's input gradient)
        (
            (32, 32, 32, 32),
            (64, 32, 4, 4),
            {"padding": 1, "stride": 2},
            "gemm",
            _STRIDED_DX,
            "gemm",
        ),
        ((32, 128, 16, 16), (128, 8, 3, 3), {"padding": 1, "groups": 16}, *_G8),
        ((32, 128, 16, 16), (128, 16, 3, 3), {"padding": 1, "groups": 8}, *_G16),
        ((32, 128, 16, 16), (128, 32, 3, 3), {"padding": 1, "groups": 4}, *_G32),
        # 3x3, stride 1, >= 16 channels per group on images of >= 12x12 outputs: Winograd
        # (where the channel-blocked kernel does not apply, or from 64 channels at 32x32);
        # F(4x4) up to 64 channels, F(2x2) beyond
        ((32, 64, 32, 32), (64, 64, 3, 3), {"padding": 1}, *["winograd4"] * 3),
        ((8, 256, 14, 14), (256, 256, 3, 3), {"padding": 1}, *["winograd"] * 3),
        ((8, 256, 20, 20), (256, 256, 3, 3), {"padding": 3}, "winograd", "gemm", "winograd"),
        ((64, 256, 7, 7), (256, 256, 3, 3), {"padding": 1}, "gemm", "gemm", "gemm"),
        ((64, 8, 28, 28), (16, 8, 3, 3), {"padding": 1}, "direct", "gemm", "gemm"),
        # strided, or a padded copy of the channels too big for a thread's scratch: GEMM
        ((2, 6, 14, 14), (16, 6, 5, 5), {"stride": 2}, "gemm", "gemm", "gemm"),
        ((1, 64, 256, 256), (8, 64, 3, 3), {}, "gemm", "gemm", "gemm"),
        # few channels per group on a large image: direct both ways
        ((1, 1, 200, 200), (8, 1, 3, 3), {}, "direct", "direct", "gemm"),
        # depthwise (one input channel per group, groups > 1): the depthwise kernels
        ((32, 64, 56, 56), (64, 1, 3, 3), {"padding": 1, "groups": 64}, *["depthwise"] * 3),
        ((2, 8, 9, 9), (16, 1, 5, 5), {"stride": 2, "groups": 8}, *["depthwise"] * 3),
        ((2, 8, 9, 9), (8, 2, 3, 3), {"padding": 1, "groups": 4}, "gemm", "gemm", "gemm"),
    ],
)
def test_algorithm_choice(x_shape, w_shape, kwargs, fwd, bwd, wgrad):
    chosen = conv2d_algorithms(x_shape, w_shape, **kwargs)
    assert chosen["forward"] == fwd
    assert chosen["input"] == bwd
    assert chosen["weight"] == wgrad
