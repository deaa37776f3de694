"""Hypothesis property tests over the geometry of every kernel, against the naive references
(tests/reference.py for convolution and im2col/col2im, the references of test_pool.py and
test_pad.py, NumPy matmul for linear), biased towards the edges the per-module sweeps rarely
hit: empty batches (N = 0) and channels (C = 0), 1x1 inputs, kernels exactly as large as
the (padded) input, overlapping pooling windows, strides that do not divide, large
dilations, full crops.

Profiles: the default keeps the whole module well under a minute; set
``CNNCORE_HYPOTHESIS_PROFILE=long`` for a campaign with 40x more examples per test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import tol
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import (
    col2im_ref,
    conv2d_backward_input_ref,
    conv2d_backward_weight_ref,
    conv2d_ref,
    im2col_ref,
)
from test_pad import ref_pad, ref_pad_backward
from test_pool import (
    _valid,
    ref_adaptive_avg,
    ref_adaptive_avg_backward,
    ref_adaptive_max,
    ref_avg_pool,
    ref_avg_pool_backward,
    ref_lp_pool,
    ref_max_pool,
    ref_max_unpool,
    ref_scatter_add,
)

import cnncore
from cnncore import functional as F

PROFILE = os.environ.get("CNNCORE_HYPOTHESIS_PROFILE", "default")
SCALE = 40 if PROFILE == "long" else 1
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


def prop(examples: int):
    """Hypothesis settings for a property: ``examples`` in the default profile."""
    return settings(
        max_examples=examples * SCALE, deadline=None, suppress_health_check=_HEALTH, print_blob=True
    )


DTYPES = st.sampled_from([np.float64, np.float64, np.float32])
BATCH = st.sampled_from([0, 1, 1, 2, 3])


def _close(a, b, dtype, scale=1.0):
    t = tol(dtype)
    np.testing.assert_allclose(a, b, rtol=t["rtol"] * scale, atol=t["atol"] * scale)


def _scatter_ref(g, idx, shape):
    """ref_scatter_add, which reshapes planes and so needs N * C > 0."""
    return ref_scatter_add(g, idx, shape) if shape[0] * shape[1] else np.zeros(shape, g.dtype)


def _data(seed, shape, dtype, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return (np.abs(a) + 0.05 if positive else a).astype(dtype)


# ------------------------------------------------------------------------------------------
# Convolution (forward, three backward passes, both algorithms) and im2col / col2im
# ------------------------------------------------------------------------------------------


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, kg = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.sampled_from([1, 1, 2, 3, 6])), draw(st.sampled_from([1, 1, 2, 5]))
    sh, sw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kind = draw(st.sampled_from(["int", "int", "same", "valid"]))
    if kind == "same":
        sh = sw = 1
        th, tw = dh * (kh - 1), dw * (kw - 1)
        (pt, pb), (pl, pr) = (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
        padding = "same"
    elif kind == "valid":
        pt = pb = pl = pr = 0
        padding = "valid"
    else:
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        pt = pb = ph
        pl = pr = pw
        padding = (ph, pw)
    # "exact": the dilated kernel covers the padded input exactly (one output position)
    exact = draw(st.booleans())
    h = max(dh * (kh - 1) + 1 - pt - pb, 1) + (0 if exact else draw(st.integers(0, 7)))
    w = max(dw * (kw - 1) + 1 - pl - pr, 1) + (0 if exact else draw(st.integers(0, 7)))
    shape = (draw(BATCH), cg * groups, h, w)
    wshape = (kg * groups, cg, kh, kw)
    kwargs = dict(stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups)
    return shape, wshape, kwargs


@prop(60)
@given(
    case=conv_case(),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
    algo=st.sampled_from([None, "gemm", "direct"]),
    bias=st.booleans(),
)
def test_conv2d_forward_and_backward(case, seed, dtype, algo, bias):
    shape, wshape, kwargs = case
    x = _data(seed, shape, dtype)
    w = _data(seed + 1, wshape, dtype)
    b = _data(seed + 2, wshape[0], dtype) if bias else None
    with cnncore.conv_algorithm(algo or "auto"):
        y = cnncore.conv2d(x, w, b, **kwargs)
        ref = conv2d_ref(x, w, b, **kwargs)
        assert y.shape == ref.shape and y.dtype == dtype
        scale = max(1.0, float(np.prod(wshape[1:]))) if dtype == np.float32 else 1.0
        _close(y, ref, dtype, scale)
        g = _data(seed + 3, y.shape, dtype)
        dx = cnncore.conv2d_backward_input(g, w, shape, **kwargs)
        assert dx.shape == shape
        _close(dx, conv2d_backward_input_ref(g, w, shape, **kwargs), dtype, scale)
        dw = cnncore.conv2d_backward_weight(g, x, wshape, **kwargs)
        assert dw.shape == wshape
        _close(
            dw,
            conv2d_backward_weight_ref(g, x, wshape, **kwargs),
            dtype,
            max(scale, float(g[:, 0].size)),
        )
        db = cnncore.conv2d_backward_bias(g)
        _close(db, g.astype(np.float64).sum(axis=(0, 2, 3)), dtype, float(max(g[:, 0].size, 1)))


@st.composite
def unfold_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 3]))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    exact = draw(st.booleans())
    h = max(dh * (kh - 1) + 1 - 2 * ph, 1) + (0 if exact else draw(st.integers(0, 6)))
    w = max(dw * (kw - 1) + 1 - 2 * pw, 1) + (0 if exact else draw(st.integers(0, 6)))
    shape = (draw(BATCH), draw(st.integers(0, 3)), h, w)
    return shape, dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))


@prop(50)
@given(case=unfold_case(), seed=st.integers(0, 2**16), dtype=DTYPES)
def test_im2col_col2im_and_adjointness(case, seed, dtype):
    shape, kwargs = case
    x = _data(seed, shape, dtype)
    cols = cnncore.im2col(x, **kwargs)
    np.testing.assert_array_equal(cols, im2col_ref(x, **kwargs).astype(dtype))  # a copy: exact
    c = _data(seed + 1, cols.shape, dtype)
    back = cnncore.col2im(c, shape[2:], **kwargs)
    assert back.shape == shape
    _close(back, col2im_ref(c, shape[2:], **kwargs), dtype, 10.0)
    # <im2col(x), c> == <x, col2im(c)>
    lhs = float(np.sum(cols.astype(np.float64) * c))
    rhs = float(np.sum(x.astype(np.float64) * back))
    assert (
        abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs))
        if dtype == np.float32
        else abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs))
    )


# ------------------------------------------------------------------------------------------
# Linear
# ------------------------------------------------------------------------------------------


@prop(50)
@given(
    lead=st.lists(st.sampled_from([0, 1, 2, 3, 5]), min_size=0, max_size=3),
    i=st.sampled_from([0, 1, 2, 7, 33]),
    o=st.sampled_from([0, 1, 3, 65]),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
    bias=st.booleans(),
)
def test_linear_forward_and_backward(lead, i, o, seed, dtype, bias):
    x = _data(seed, (*lead, i), dtype)
    w = _data(seed + 1, (o, i), dtype)
    b = _data(seed + 2, (o,), dtype) if bias else None
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = cnncore.linear(x, w, b)
    ref = x64 @ w64.T + (0 if b is None else b)
    assert y.shape == (*lead, o) and y.dtype == dtype
    _close(y, ref, dtype, max(i, 1))
    g = _data(seed + 3, y.shape, dtype)
    g64 = g.astype(np.float64)
    _close(cnncore.linear_backward_input(g, w), g64 @ w64, dtype, max(o, 1))
    rows = int(np.prod(lead))
    _close(
        cnncore.linear_backward_weight(g, x),
        g64.reshape(rows, o).T @ x64.reshape(rows, i),
        dtype,
        max(rows, 1),
    )
    _close(cnncore.linear_backward_bias(g), g64.reshape(rows, o).sum(axis=0), dtype, max(rows, 1))


# ------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------


@st.composite
def pool_case(draw, dilation=True, padding=True):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    # overlapping (stride < kernel), non-dividing and larger-than-kernel strides
    sh, sw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ph = draw(st.integers(0, kh // 2)) if padding else 0
    pw = draw(st.integers(0, kw // 2)) if padding else 0
    dh, dw = (
        (draw(st.sampled_from([1, 1, 2, 4, 7])), draw(st.sampled_from([1, 3, 5])))
        if dilation
        else (1, 1)
    )
    ceil = draw(st.booleans())
    exact = draw(st.booleans())  # the dilated window spans the padded input exactly
    h = max(dh * (kh - 1) + 1 - 2 * ph, 1) + (0 if exact else draw(st.integers(0, 8)))
    w = max(dw * (kw - 1) + 1 - 2 * pw, 1) + (0 if exact else draw(st.integers(0, 8)))
    shape = (draw(BATCH), draw(st.sampled_from([0, 1, 2, 3])), h, w)
    return shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil


@prop(60)
@given(case=pool_case(), seed=st.integers(0, 2**16), dtype=DTYPES)
def test_max_pool_forward_backward_and_unpool(case, seed, dtype):
    shape, k, s, p, d, ceil = case
    assume(_valid(shape, k, s, p, d, ceil))
    x = _data(seed, shape, dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ry, ridx = ref_max_pool(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    g = _data(seed + 1, y.shape, dtype)
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx, shape), _scatter_ref(g, idx, shape))
    if d == (1, 1) and s[0] >= 1:
        # max_unpool2d puts the maxima back where they came from (same plane encoding)
        un = F.max_unpool2d(y, idx, k, s, p, output_size=shape[2:])
        expect = (
            ref_max_unpool(y, idx, shape[2:]) if shape[0] * shape[1] else np.zeros(shape, dtype)
        )
        np.testing.assert_array_equal(un, expect)
        gu = _data(seed + 2, shape, dtype)
        planes = shape[0] * shape[1]
        flat = gu.reshape(planes, shape[2] * shape[3])
        expect = np.take_along_axis(
            flat, idx.reshape(planes, idx[0, 0].size if planes else 0), axis=1
        )
        np.testing.assert_array_equal(F.max_unpool2d_backward(gu, idx), expect.reshape(idx.shape))


@prop(60)
@given(
    case=pool_case(dilation=False),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
    cip=st.booleans(),
    div=st.sampled_from([None, None, 1, 3, -2]),
)
def test_avg_pool_forward_and_backward(case, seed, dtype, cip, div):
    shape, k, s, p, _, ceil = case
    assume(_valid(shape, k, s, p, (1, 1), ceil))
    x = _data(seed, shape, dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, cip, div)
    _close(y, ref_avg_pool(x, k, s, p, ceil, cip, div), dtype)
    g = _data(seed + 1, y.shape, dtype)
    _close(
        F.avg_pool2d_backward(g, shape, k, s, p, ceil, cip, div),
        ref_avg_pool_backward(g, shape, k, s, p, ceil, cip, div),
        dtype,
        4.0,
    )


def _ref_lp_backward(g, x, p, k, s, ceil):
    """The chain rule of PyTorch's lp_pool2d (see its docstring), on the references."""
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    K = k[0] * k[1]
    t = ref_avg_pool(x64**p, k, s, 0, ceil) * K
    with np.errstate(divide="ignore", invalid="ignore"):
        wgt = np.where(t != 0, g64 * (1.0 / p) * t ** (1.0 / p - 1.0) * K, 0.0)
    return p * x64 ** (p - 1) * ref_avg_pool_backward(wgt, x.shape, k, s, 0, ceil)


@prop(40)
@given(
    case=pool_case(dilation=False, padding=False),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
    p=st.sampled_from([1.0, 2.0, 3.0, 1.5]),
)
def test_lp_pool_forward_and_backward(case, seed, dtype, p):
    shape, k, s, _, _, ceil = case
    assume(_valid(shape, k, s, (0, 0), (1, 1), ceil))
    x = _data(seed, shape, dtype, positive=True)
    y = F.lp_pool2d(x, p, k, s, ceil)
    _close(y, ref_lp_pool(x, p, k, s, ceil), dtype, 10.0)
    g = _data(seed + 1, y.shape, dtype)
    _close(
        F.lp_pool2d_backward(g, x, p, k, s, ceil),
        _ref_lp_backward(g, x, p, k, s, ceil),
        dtype,
        100.0,
    )


@prop(60)
@given(
    n=BATCH,
    c=st.sampled_from([0, 1, 3]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    oh=st.integers(1, 11),
    ow=st.integers(1, 11),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
)
def test_adaptive_and_global_pools(n, c, h, w, oh, ow, seed, dtype):
    """Adaptive windows overlap when the output does not divide the input, and repeat input
    rows when the output is larger than the input."""
    shape = (n, c, h, w)
    x = _data(seed, shape, dtype)
    y = F.adaptive_avg_pool2d(x, (oh, ow))
    _close(y, ref_adaptive_avg(x, (oh, ow)), dtype)
    g = _data(seed + 1, y.shape, dtype)
    _close(
        F.adaptive_avg_pool2d_backward(g, shape), ref_adaptive_avg_backward(g, shape), dtype, 4.0
    )
    ym, im = F.adaptive_max_pool2d(x, (oh, ow), return_indices=True)
    rym, rim = ref_adaptive_max(x, (oh, ow))
    np.testing.assert_array_equal(ym, rym)
    np.testing.assert_array_equal(im, rim)
    np.testing.assert_array_equal(
        F.adaptive_max_pool2d_backward(g, im, shape), _scatter_ref(g, im, shape)
    )
    yg = F.global_avg_pool2d(x)
    _close(yg, ref_adaptive_avg(x, (1, 1)), dtype, 4.0)
    gg = _data(seed + 2, yg.shape, dtype)
    _close(F.global_avg_pool2d_backward(gg, shape), ref_adaptive_avg_backward(gg, shape), dtype)


# ------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------


@st.composite
def pad_case(draw):
    mode = draw(st.sampled_from(["constant", "constant", "replicate", "reflect", "circular"]))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if mode == "constant":  # negative pads crop, at most the whole axis
        left = draw(st.integers(-w, 6))
        right = draw(st.integers(-(w + min(left, 0)), 6))
        top = draw(st.integers(-h, 6))
        bottom = draw(st.integers(-(h + min(top, 0)), 6))
    else:
        lim_h = {"replicate": 6, "reflect": h - 1, "circular": h}[mode]
        lim_w = {"replicate": 6, "reflect": w - 1, "circular": w}[mode]
        left, right = draw(st.integers(0, lim_w)), draw(st.integers(0, lim_w))
        top, bottom = draw(st.integers(0, lim_h)), draw(st.integers(0, lim_h))
    shape = (draw(BATCH), draw(st.sampled_from([0, 1, 2])), h, w)
    return shape, (left, right, top, bottom), mode


@prop(60)
@given(case=pad_case(), seed=st.integers(0, 2**16), dtype=DTYPES, value=st.sampled_from([0.0, 1.5]))
def test_pad_forward_and_backward(case, seed, dtype, value):
    shape, padding, mode = case
    x = _data(seed, shape, dtype)
    v = value if mode == "constant" else 0.0
    y = F.pad2d(x, padding, mode, v)
    np.testing.assert_array_equal(y, ref_pad(x, padding, mode, v))
    g = _data(seed + 1, y.shape, dtype)
    _close(F.pad2d_backward(g, padding, mode), ref_pad_backward(g, padding, mode), dtype, 4.0)


@pytest.mark.skipif(PROFILE != "long", reason="runs with CNNCORE_HYPOTHESIS_PROFILE=long")
def test_long_profile_is_active():
    assert SCALE > 1
