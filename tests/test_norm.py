"""Normalization: batch_norm, group_norm, layer_norm, instance_norm, their backward functions
and the BatchNorm1d / BatchNorm2d / GroupNorm / LayerNorm / InstanceNorm2d layers.

The spec records (tests/api_specs.py) check the NumPy references, finite differences of the
canonical calls, the bad-input table, empty batches and views; this file adds PyTorch
cross-checks over random geometries, the numerics of large offsets, the parallel split of
few large segments, running statistics and the layers.
"""

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, numerical_grad, tol
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    batch_norm_backward_ref,
    batch_norm_ref,
    group_norm_ref,
    layer_norm_backward_ref,
    layer_norm_ref,
)

import cnncore
import cnncore._config
import cnncore.functional as F
from cnncore import nn

DTYPES = [np.float32, np.float64]
TORCH_TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}


def _arr(rng, shape, dtype, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def _torch_grads(torch, fn, g, *arrays):
    """``fn(*tensors)`` and the gradients of ``sum(fn * g)`` for the arrays (None kept),
    computed by torch in float64 from the (float32 or float64) inputs: the exact result the
    float32 computation approximates (torch's own float32 group / instance norm is less
    accurate than cnncore's on ill-conditioned groups)."""
    ts = [
        None if a is None else torch.from_numpy(a.astype(np.float64)).requires_grad_()
        for a in arrays
    ]
    y = fn(*ts)
    y.backward(torch.from_numpy(g.astype(np.float64)))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in ts]


def _close(got, expected, dtype):
    for a, b in zip(got, expected, strict=True):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, **TORCH_TOL[np.dtype(dtype).type])


# ------------------------------------------------------------------------------------------
# PyTorch cross-checks over random geometries
# ------------------------------------------------------------------------------------------

_geometry = st.fixed_dictionaries(
    {
        "n": st.integers(0, 3),
        "groups": st.integers(1, 4),
        "cg": st.integers(1, 3),
        "spatial": st.lists(st.integers(1, 6), min_size=0, max_size=2),
        "affine": st.sampled_from(["both", "weight", "bias", "none"]),
        "eps": st.sampled_from([1e-5, 1e-3, 0.3]),
        "dtype": st.sampled_from(DTYPES),
        "seed": st.integers(0, 2**16),
    }
)


def _affine(rng, p, shape):
    w = _arr(rng, shape, p["dtype"]) if p["affine"] in ("both", "weight") else None
    b = _arr(rng, shape, p["dtype"]) if p["affine"] in ("both", "bias") else None
    return w, b


@settings(max_examples=40, deadline=None)
@given(p=_geometry)
def test_group_norm_matches_torch(p):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(p["seed"])
    c = p["groups"] * p["cg"]
    shape = (p["n"], c, *p["spatial"])
    x = _arr(rng, shape, p["dtype"], 2.0, 1.0)
    g = _arr(rng, shape, p["dtype"])
    w, b = _affine(rng, p, (c,))
    if p["cg"] * int(np.prod(p["spatial"])) == 1:  # one-element groups: the result is b, the
        # gradient 0 up to rounding (torch refuses N = 1)
        y = F.group_norm(x, p["groups"], w, b, p["eps"])
        np.testing.assert_allclose(y, group_norm_ref(x, p["groups"], w, b, p["eps"]), atol=1e-6)
        return
    tw = np.ones(c, p["dtype"]) if w is None and b is not None else w  # torch fails on bias only
    ty, (tgx, tgw, tgb) = _torch_grads(
        torch,
        lambda tx, tw, tb: torch.nn.functional.group_norm(tx, p["groups"], tw, tb, p["eps"]),
        g,
        x,
        tw,
        b,
    )
    y = F.group_norm(x, p["groups"], w, b, p["eps"])
    gx, gw, gb = F.group_norm_backward(g, x, p["groups"], w, p["eps"])
    _close([y, gx], [ty, tgx], p["dtype"])
    if w is not None:
        _close([gw], [tgw], p["dtype"])
        if b is not None:
            _close([gb], [tgb], p["dtype"])
    else:
        assert gw is None and gb is None


@settings(max_examples=40, deadline=None)
@given(p=_geometry, norm=st.lists(st.integers(1, 7), min_size=1, max_size=3))
def test_layer_norm_matches_torch(p, norm):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(p["seed"])
    shape = (p["n"], *p["spatial"], *norm)
    x = _arr(rng, shape, p["dtype"], 2.0, -1.0)
    g = _arr(rng, shape, p["dtype"])
    w, b = _affine(rng, p, tuple(norm))
    if int(np.prod(norm)) == 1:  # one-element rows: the result is b
        y = F.layer_norm(x, norm, w, b, p["eps"])
        np.testing.assert_allclose(y, layer_norm_ref(x, norm, w, b, p["eps"]), atol=1e-6)
        return
    ty, (tgx, tgw, tgb) = _torch_grads(
        torch,
        lambda tx, tw, tb: torch.nn.functional.layer_norm(tx, norm, tw, tb, p["eps"]),
        g,
        x,
        w,
        b,
    )
    y = F.layer_norm(x, norm, w, b, p["eps"])
    gx, gw, gb = F.layer_norm_backward(g, x, norm, w, p["eps"])
    _close([y, gx], [ty, tgx], p["dtype"])
    if w is not None:
        _close([gw], [tgw], p["dtype"])
        if b is not None:
            _close([gb], [tgb], p["dtype"])


@settings(max_examples=30, deadline=None)
@given(p=_geometry, use_input_stats=st.booleans(), momentum=st.sampled_from([0.1, 0.5, 1.0]))
def test_instance_norm_matches_torch(p, use_input_stats, momentum):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(p["seed"])
    c = p["groups"] * p["cg"]
    spatial = p["spatial"] or [3]
    if int(np.prod(spatial)) == 1:
        spatial = [2, *spatial[1:]]
    shape = (max(p["n"], 1), c, *spatial)
    x = _arr(rng, shape, p["dtype"], 2.0, 1.0)
    g = _arr(rng, shape, p["dtype"])
    w, b = _affine(rng, p, (c,))
    rm, rv = _arr(rng, (c,), p["dtype"]), np.abs(_arr(rng, (c,), p["dtype"])) + 0.5
    trm, trv = torch.from_numpy(rm.astype(np.float64)), torch.from_numpy(rv.astype(np.float64))
    ty, (tgx, tgw, tgb) = _torch_grads(
        torch,
        lambda tx, tw, tb: torch.nn.functional.instance_norm(
            tx, trm, trv, tw, tb, use_input_stats, momentum, p["eps"]
        ),
        g,
        x,
        w,
        b,
    )
    y = F.instance_norm(x, rm, rv, w, b, use_input_stats, momentum, p["eps"])
    gx, gw, gb = F.instance_norm_backward(g, x, rm, rv, w, use_input_stats, p["eps"])
    _close([y, gx, rm, rv], [ty, tgx, trm.numpy(), trv.numpy()], p["dtype"])
    if w is not None:
        _close([gw], [tgw], p["dtype"])
        if b is not None:
            _close([gb], [tgb], p["dtype"])


@settings(max_examples=30, deadline=None)
@given(p=_geometry, training=st.booleans(), momentum=st.sampled_from([0.1, 0.5, 1.0]))
def test_batch_norm_matches_torch(p, training, momentum):
    """Forward, running statistics (unbiased variance) and the three gradients, in training
    and eval mode, over random geometries (2-D inputs included)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(p["seed"])
    c = p["groups"] * p["cg"]
    shape = (max(p["n"], 1), c, *p["spatial"])
    if int(np.prod(shape)) // c == 1:
        shape = (2, *shape[1:])
    x = _arr(rng, shape, p["dtype"], 2.0, 1.0)
    g = _arr(rng, shape, p["dtype"])
    w, b = _affine(rng, p, (c,))
    rm, rv = _arr(rng, (c,), p["dtype"]), np.abs(_arr(rng, (c,), p["dtype"])) + 0.5
    trm, trv = torch.from_numpy(rm.astype(np.float64)), torch.from_numpy(rv.astype(np.float64))
    ty, (tgx, tgw, tgb) = _torch_grads(
        torch,
        lambda tx, tw, tb: torch.nn.functional.batch_norm(
            tx, trm, trv, tw, tb, training, momentum, p["eps"]
        ),
        g,
        x,
        w,
        b,
    )
    rm0, rv0 = rm.copy(), rv.copy()
    gx, gw, gb = F.batch_norm_backward(g, x, rm0, rv0, w, training, p["eps"])
    y = F.batch_norm(x, rm, rv, w, b, training, momentum, p["eps"])
    _close([y, gx, rm, rv], [ty, tgx, trm.numpy(), trv.numpy()], p["dtype"])
    if w is None:
        assert gw is None and gb is None
    else:
        _close([gw], [tgw], p["dtype"])
        if b is not None:
            _close([gb], [tgb], p["dtype"])


# ------------------------------------------------------------------------------------------
# Numerics
# ------------------------------------------------------------------------------------------


def _big_offset(rng, shape):
    """float32 data with mean 1e4 and standard deviation 1e-2 (the issue's test)."""
    return (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)


def test_large_common_offset_keeps_float32_accuracy(rng):
    """Statistics relative to the segment's first element, two passes per chunk and the
    mean split into two floats: the normalized output of data whose mean is 1e6 times its
    standard deviation is as accurate as float32 allows (torch's float32 group_norm is off
    by ~0.1 here), for forward and backward."""
    x = _big_offset(rng, (2, 4, 32, 32))
    x64 = x.astype(np.float64)  # the same float32 values, computed in float64
    g = rng.standard_normal(x.shape).astype(np.float32)
    cases = [
        (lambda a: F.group_norm(a, 2), group_norm_ref(x64, 2)),
        (lambda a: F.layer_norm(a, (32, 32)), layer_norm_ref(x64, (32, 32))),
        (lambda a: F.instance_norm(a), group_norm_ref(x64, 4)),
    ]
    for fn, ref in cases:
        y = fn(x)
        assert np.abs(y - ref).max() < 1e-4  # |y| ~ 1 (eps = 1e-5 against a variance of 1e-4)
    gx32 = F.group_norm_backward(g, x, 2)[0]
    gx64 = F.group_norm_backward(g.astype(np.float64), x64, 2)[0]
    np.testing.assert_allclose(gx32, gx64, rtol=1e-3, atol=1e-3 * np.abs(gx64).max())
    gl32 = F.layer_norm_backward(g, x, (32, 32))[0]
    gl64 = F.layer_norm_backward(g.astype(np.float64), x64, (32, 32))[0]
    np.testing.assert_allclose(gl32, gl64, rtol=1e-3, atol=1e-3 * np.abs(gl64).max())


def test_large_offset_over_many_chunks(rng):
    """A row of 100k elements (25 chunks merged with Chan's update), float32, offset 1e4."""
    x = _big_offset(rng, (1, 100_000))
    y = F.layer_norm(x, 100_000)
    np.testing.assert_allclose(y, layer_norm_ref(x.astype(np.float64), 100_000), atol=1e-4)


# Short rows (D <= 512: one accumulator vector per row, 16 floats / 8 doubles): widths
# below, at and across the vector width, with and without a tail, and the longest short row
SHORT_WIDTHS = [1, 2, 7, 8, 15, 16, 17, 31, 63, 64, 65, 100, 511, 512, 513]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SHORT_WIDTHS)
def test_layer_norm_short_rows_match_reference(dtype, d, rng):
    """Channels-last layer norm (many rows of D elements) against the float64 reference,
    forward and backward, every affine variant."""
    x = _arr(rng, (9, 23, d), dtype, 2.0, -1.0)
    g = _arr(rng, x.shape, dtype)
    w, b = _arr(rng, (d,), dtype), _arr(rng, (d,), dtype)
    t = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-9, atol=1e-10)}[dtype]
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    for wt, bt in [(w, b), (w, None), (None, b), (None, None)]:
        y = F.layer_norm(x, d, wt, bt)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, layer_norm_ref(x64, d, wt, bt), **t)
    for wt in (w, None):
        got = F.layer_norm_backward(g, x, d, wt)
        ref = layer_norm_backward_ref(g64, x64, d, wt)
        for a, r in zip(got, ref, strict=True):
            if r is None:
                assert a is None
            else:
                np.testing.assert_allclose(a, r, rtol=t["rtol"], atol=t["atol"] * d)


@pytest.mark.parametrize("d", [3, 16, 64, 67, 512])
def test_layer_norm_short_rows_large_offset(d, rng):
    """Mean 1e4, standard deviation 1e-2 in float32 over short rows: the shift by the row's
    first element keeps the statistics accurate (forward and input gradient)."""
    x = _big_offset(rng, (200, d))
    x64 = x.astype(np.float64)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y = F.layer_norm(x, d)
    assert np.abs(y - layer_norm_ref(x64, d)).max() < 1e-4
    gx = F.layer_norm_backward(g, x, d)[0]
    gx64 = layer_norm_backward_ref(g.astype(np.float64), x64, d)[0]
    np.testing.assert_allclose(gx, gx64, rtol=1e-3, atol=1e-3 * np.abs(gx64).max())


def test_layer_norm_short_rows_finite_differences(rng):
    """Odd width (a vector tail), float64: the input gradient against finite differences."""
    x = rng.standard_normal((4, 3, 19))
    g = rng.standard_normal(x.shape)
    w = rng.standard_normal(19)
    gx = F.layer_norm_backward(g, x, 19, w)[0]
    np.testing.assert_allclose(
        gx, numerical_grad(lambda a: F.layer_norm(a, 19, w), x, g), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_short_rows_bit_identical_across_threads(dtype, rng, monkeypatch):
    """Many short rows (full vectors and odd widths): the same bytes for any thread count."""
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    cases = []
    for shape in [(3001, 67), (2, 513, 64), (5, 7, 3), (1, 512)]:
        x = _arr(rng, shape, dtype, 1.0, 5.0)
        cases.append((x, _arr(rng, shape, dtype), _arr(rng, shape[-1:], dtype)))

    def compute():
        out = []
        for x, g, w in cases:
            d = x.shape[-1]
            out += [F.layer_norm(x, d, w, w), *F.layer_norm_backward(g, x, d, w)]
            out += [F.layer_norm(x, d), F.layer_norm_backward(g, x, d)[0]]
        return out

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4, 2))


@pytest.mark.parametrize(
    "shape", [(64, 4, 7, 7), (300, 2, 5, 5), (40, 3, 16, 16), (3, 2, 80, 70), (5000, 3)]
)
def test_batch_norm_large_common_offset_keeps_float32_accuracy(rng, shape):
    """Mean 1e4, standard deviation 1e-2, float32: batch statistics relative to the
    channel's first element, two passes per chunk of planes (a chunk of several planes --
    small planes with one accumulator per position, one chunk or several merged --, pieces
    of planes longer than a chunk, and one value per plane) and the mean split in two
    floats keep the output and the gradients as accurate as float32 allows -- torch's
    float32 batch_norm is shown to be far off on the same data when it is installed."""
    x = _big_offset(rng, shape)
    x64 = x.astype(np.float64)  # the same float32 values, computed in float64
    g = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    w = (1 + rng.random(c)).astype(np.float32)
    ref = batch_norm_ref(x64, None, None, w, None, training=True)
    y = F.batch_norm(x, None, None, w, None, training=True)
    assert np.abs(y - ref).max() < 2e-4  # |y| ~ 2 (eps = 1e-5 against a variance of 1e-4)
    gx, gw, gb = F.batch_norm_backward(g, x, None, None, w, training=True)
    rgx, rgw, rgb = batch_norm_backward_ref(g.astype(np.float64), x64, None, None, w, True)
    np.testing.assert_allclose(gx, rgx, rtol=1e-3, atol=1e-3 * np.abs(rgx).max())
    np.testing.assert_allclose(gw, rgw, rtol=1e-3, atol=1e-3 * np.abs(rgw).max())
    np.testing.assert_allclose(gb, rgb, rtol=1e-4, atol=1e-4 * np.abs(rgb).max())
    # the running variance sees the same statistics (unbiased)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    m = x.size // c
    axes = (0, *range(2, x.ndim))
    np.testing.assert_allclose(rm, x64.mean(axis=axes), rtol=1e-7)
    np.testing.assert_allclose(rv, x64.var(axis=axes) * m / (m - 1), rtol=1e-4)
    torch = pytest.importorskip("torch")
    ty = torch.nn.functional.batch_norm(
        torch.from_numpy(x), None, None, torch.from_numpy(w), None, True
    ).numpy()
    assert np.abs(ty - ref).max() > 10 * np.abs(y - ref).max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_constant_channels_and_empty_batch(dtype):
    """Zero variance: the output is the bias, the gradients finite; an empty batch gives an
    empty output and leaves the running statistics alone (as torch)."""
    x = np.full((4, 3, 2, 2), -2.25, dtype)
    b = np.arange(3, dtype=dtype)
    y = F.batch_norm(x, None, None, None, b, training=True)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], x.shape))
    gx, gw, gb = F.batch_norm_backward(np.ones_like(x), x, None, None, np.ones(3, dtype), True)
    assert np.all(np.isfinite(gx)) and np.all(gw == 0) and np.all(gb == 4 * 4)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    e = np.zeros((0, 3, 4, 4), dtype)
    assert F.batch_norm(e, rm, rv, training=True).shape == e.shape
    assert not rm.any() and np.all(rv == 1)
    gx, gw, gb = F.batch_norm_backward(e, e, None, None, np.ones(3, dtype), True)
    assert gx.shape == e.shape and gw.dtype == dtype and not gw.any() and not gb.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_segments(dtype):
    """Zero variance: the output is the bias, the input gradient finite (as torch)."""
    x = np.full((2, 4, 3, 3), 7.5, dtype)
    b = np.arange(4, dtype=dtype)
    y = F.group_norm(x, 2, None, b)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], x.shape))
    gx, _, _ = F.group_norm_backward(np.ones_like(x), x, 2, np.ones(4, dtype))
    assert np.all(np.isfinite(gx))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_and_empty_planes(dtype):
    x = np.zeros((0, 6, 4, 4), dtype)
    w = np.ones(6, dtype)
    assert F.group_norm(x, 3, w, w).shape == x.shape
    gx, gw, gb = F.group_norm_backward(x, x, 3, w)
    assert gx.shape == x.shape and np.array_equal(gw, np.zeros(6)) and gw.dtype == dtype
    z = np.zeros((2, 6, 0, 4), dtype)
    assert F.group_norm(z, 3).shape == z.shape and F.instance_norm(z).shape == z.shape
    gx, gw, gb = F.layer_norm_backward(z, z, (0, 4), np.ones((0, 4), dtype))
    assert gx.shape == z.shape and gw.shape == (0, 4)


def test_finite_differences_of_variants(rng):
    """Gradients without weight or bias, with a large eps and over several axes."""
    x = rng.standard_normal((2, 4, 3, 2))
    g = rng.standard_normal(x.shape)
    cases = [
        (lambda a: F.group_norm(a, 2, eps=0.3), lambda: F.group_norm_backward(g, x, 2, eps=0.3)),
        (lambda a: F.layer_norm(a, (3, 2)), lambda: F.layer_norm_backward(g, x, (3, 2))),
        (lambda a: F.layer_norm(a, 2), lambda: F.layer_norm_backward(g, x, 2)),
        (lambda a: F.instance_norm(a), lambda: F.instance_norm_backward(g, x)),
    ]
    for fwd, bwd in cases:
        gx, gw, gb = bwd()
        assert gw is None and gb is None
        np.testing.assert_allclose(gx, numerical_grad(fwd, x, g), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------------
# Work split: bit-identical for any thread count, also for few large segments
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_threads(dtype, rng, monkeypatch):
    """One huge group (N = 1, G = 1: each phase split over chunks), one huge row, a few
    rows (weight-gradient parts), many small segments."""
    # every call parallel (threads_for runs small kernels on one thread)
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    big = _arr(rng, (1, 3, 150, 101), dtype, 1.0, 3.0)
    gbig = _arr(rng, big.shape, dtype)
    row = _arr(rng, (2, 3 * 4096 + 17), dtype)
    grow = _arr(rng, row.shape, dtype)
    many = _arr(rng, (7, 12, 9, 11), dtype)
    gmany = _arr(rng, many.shape, dtype)
    # two groups of 32 small planes (<= SHORT_ROW: one vector accumulator per plane's sums)
    # -- one task per group with 1-2 threads, split over planes with 3-4
    small = _arr(rng, (1, 64, 14, 14), dtype, 1.0, 3.0)
    gsmall = _arr(rng, small.shape, dtype)
    w64 = _arr(rng, (64,), dtype)
    w3, w12 = _arr(rng, (3,), dtype), _arr(rng, (12,), dtype)
    wrow = _arr(rng, row.shape[1:], dtype)
    wmany = _arr(rng, many.shape[1:], dtype)

    def compute():
        return [
            F.group_norm(big, 1, w3, w3),
            *F.group_norm_backward(gbig, big, 1, w3),
            F.instance_norm(big),
            *F.instance_norm_backward(gbig, big, weight=w3),
            F.layer_norm(row, row.shape[1], wrow, wrow),
            *F.layer_norm_backward(grow, row, row.shape[1], wrow),
            F.group_norm(many, 4, w12, w12),
            *F.group_norm_backward(gmany, many, 4, w12),
            F.group_norm(small, 2, w64, w64),
            *F.group_norm_backward(gsmall, small, 2, w64),
            F.layer_norm(many, many.shape[1:], wmany, wmany),
            *F.layer_norm_backward(gmany, many, many.shape[1:], wmany),
        ]

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4, 2))


# ------------------------------------------------------------------------------------------
# group_norm's saved statistics (return_stats=True -> group_norm_backward(mean=, rstd=))
# ------------------------------------------------------------------------------------------

# (shape, num_groups): small planes (one vector accumulator), long planes (chunked sums),
# one huge group (each phase split over chunks when threads > 1), no spatial axes
_SAVED_CASES = [
    ((3, 12, 5, 7), 4),
    ((2, 64, 14, 14), 32),
    ((2, 4, 70, 90), 2),
    ((1, 3, 150, 101), 1),
    ((5, 6), 3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,groups", _SAVED_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_saved_stats_are_bit_identical(dtype, shape, groups, affine, rng, monkeypatch):
    """The forward's mean / rstd passed to the backward give the recomputing backward's
    result bit for bit, at every thread count (both work splits)."""
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    x = _arr(rng, shape, dtype, 2.0, 50.0)
    g = _arr(rng, shape, dtype)
    w = _arr(rng, shape[1:2], dtype) if affine else None
    b = _arr(rng, shape[1:2], dtype) if affine else None

    def compute():
        y, mean, rstd = F.group_norm(x, groups, w, b, 1e-3, return_stats=True)
        assert mean.dtype == rstd.dtype == np.float64
        assert mean.shape == rstd.shape == (shape[0], groups)
        np.testing.assert_array_equal(y, F.group_norm(x, groups, w, b, 1e-3))
        saved = F.group_norm_backward(g, x, groups, w, 1e-3, mean=mean, rstd=rstd)
        fresh = F.group_norm_backward(g, x, groups, w, 1e-3)
        for a, c in zip(saved, fresh, strict=True):
            assert (a is None) == (c is None)
            if a is not None:
                assert a.tobytes() == c.tobytes()
        return [y, mean, rstd, *(a for a in saved if a is not None)]

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4))


def test_group_norm_saved_stats_match_torch(rng):
    """mean / rstd are torch's native_group_norm statistics, and the backward given
    torch's own (float32) statistics matches native_group_norm_backward."""
    torch = pytest.importorskip("torch")
    x = _arr(rng, (3, 8, 6, 5), np.float32, 2.0, 1.0)
    g = _arr(rng, x.shape, np.float32)
    w, b = _arr(rng, (8,), np.float32), _arr(rng, (8,), np.float32)
    tx, tg, tw, tb = map(torch.from_numpy, (x, g, w, b))
    ty, tm, tr = torch.ops.aten.native_group_norm(tx, tw, tb, 3, 8, 30, 4, 1e-5)
    y, mean, rstd = F.group_norm(x, 4, w, b, return_stats=True)
    np.testing.assert_allclose(y, ty.numpy(), **TORCH_TOL[np.float32])
    np.testing.assert_allclose(mean, tm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rstd, tr.numpy(), rtol=1e-5)
    tgx, tgw, tgb = torch.ops.aten.native_group_norm_backward(
        tg, tx, tm, tr, tw, 3, 8, 30, 4, [True] * 3
    )
    gx, gw, gb = F.group_norm_backward(g, x, 4, w, mean=tm.numpy(), rstd=tr.numpy())
    _close([gx, gw, gb], [tgx.numpy(), tgw.numpy(), tgb.numpy()], np.float32)


def test_group_norm_saved_stats_finite_differences(rng):
    x = rng.standard_normal((2, 6, 3, 4))
    g = rng.standard_normal(x.shape)
    w = rng.standard_normal(6)
    _, mean, rstd = F.group_norm(x, 3, w, return_stats=True, eps=0.1)
    gx, gw, _ = F.group_norm_backward(g, x, 3, w, 0.1, mean=mean, rstd=rstd)
    fd = numerical_grad(lambda a: F.group_norm(a, 3, w, eps=0.1), x, g)
    np.testing.assert_allclose(gx, fd, rtol=1e-6, atol=1e-8)
    fdw = numerical_grad(lambda a: F.group_norm(x, 3, a, eps=0.1), w.copy(), g)
    np.testing.assert_allclose(gw, fdw, rtol=1e-6, atol=1e-8)


def test_group_norm_saved_stats_are_used(rng):
    """The given statistics are what the backward normalizes with (not recomputed): other
    statistics give the reference gradient of those statistics' affine map plus terms."""
    x = _arr(rng, (2, 4, 3, 3), np.float64)
    g = _arr(rng, x.shape, np.float64)
    _, mean, rstd = F.group_norm(x, 2, return_stats=True)
    fresh = F.group_norm_backward(g, x, 2)[0]
    other = F.group_norm_backward(g, x, 2, mean=mean + 1.0, rstd=rstd * 2)[0]
    assert not np.allclose(other, fresh)
    # read only: the caller's arrays are never written
    mean.flags.writeable = rstd.flags.writeable = False
    np.testing.assert_array_equal(F.group_norm_backward(g, x, 2, mean=mean, rstd=rstd)[0], fresh)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(mean=np.zeros((2, 2))), ValueError, "rstd"),
        (dict(rstd=np.ones((2, 2))), ValueError, "mean"),
        (dict(mean=np.zeros((2, 3)), rstd=np.ones((2, 2))), ValueError, "mean"),
        (dict(mean=np.zeros((2, 2)), rstd=np.ones(4)), ValueError, "rstd"),
        (dict(mean=np.zeros((2, 2), int), rstd=np.ones((2, 2))), TypeError, "mean"),
        (dict(mean=np.zeros((2, 2)), rstd="x"), TypeError, "rstd"),
    ],
)
def test_group_norm_saved_stats_bad_inputs(kwargs, exc, match):
    x = np.ones((2, 4, 3, 3), np.float32)
    with pytest.raises(exc, match=match):
        F.group_norm_backward(x, x, 2, **kwargs)


def test_group_norm_return_stats_must_be_bool():
    with pytest.raises(TypeError, match="return_stats"):
        F.group_norm(np.ones((2, 4, 3), np.float32), 2, return_stats="yes")


def test_group_norm_layer_reuses_the_forward_statistics(rng, monkeypatch):
    """GroupNorm's backward passes the forward's statistics (no recomputation), same bits
    as the functional backward without them; eval mode keeps none."""
    layer = nn.GroupNorm(4, 8)
    layer.weight.data[:] = _arr(rng, (8,), np.float32)
    x = _arr(rng, (3, 8, 5, 5), np.float32, 1.0, 3.0)
    g = _arr(rng, x.shape, np.float32)
    calls = []
    real = F.group_norm_backward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "group_norm_backward", spy)
    layer(x)
    gx = layer.backward(g)
    assert calls[0]["mean"] is not None and calls[0]["rstd"] is not None
    egx, egw, egb = real(g, x, 4, layer.weight.data)
    assert gx.tobytes() == egx.tobytes()
    assert layer.weight.grad.tobytes() == egw.tobytes()
    assert layer.bias.grad.tobytes() == egb.tobytes()
    layer.eval()
    layer(x)
    assert layer._stats is None and layer._x is None


# (shape, trailing axes normalized): short rows (one vector accumulator, row blocks), long
# rows in parts, two huge rows (each phase split over (row, chunk) pairs with > 1 thread)
_LN_SAVED_CASES = [
    ((5, 7, 64), 1),
    ((3, 4, 30, 40), 3),
    ((2, 3 * 4096 + 17), 1),
    ((6, 5), 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", _LN_SAVED_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_saved_stats_are_bit_identical(dtype, shape, k, affine, rng, monkeypatch):
    """layer_norm(return_stats=True)'s mean / rstd passed to layer_norm_backward give the
    recomputing backward's result bit for bit, at every thread count (all work splits)."""
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    x = _arr(rng, shape, dtype, 2.0, 50.0)
    g = _arr(rng, shape, dtype)
    ns = shape[len(shape) - k :]
    w = _arr(rng, ns, dtype) if affine else None
    b = _arr(rng, ns, dtype) if affine else None
    stat_shape = shape[: len(shape) - k] + (1,) * k

    def compute():
        y, mean, rstd = F.layer_norm(x, ns, w, b, 1e-3, return_stats=True)
        assert mean.dtype == rstd.dtype == np.float64
        assert mean.shape == rstd.shape == stat_shape
        np.testing.assert_array_equal(y, F.layer_norm(x, ns, w, b, 1e-3))
        fresh = F.layer_norm_backward(g, x, ns, w, 1e-3)
        out = [y, mean, rstd]
        # torch's (*, 1, ..., 1) statistics, or the same values without the ones
        for m, r in ((mean, rstd), (mean.reshape(shape[: len(shape) - k]), rstd.squeeze())):
            saved = F.layer_norm_backward(g, x, ns, w, 1e-3, mean=m, rstd=r.reshape(m.shape))
            for a, c in zip(saved, fresh, strict=True):
                assert (a is None) == (c is None)
                if a is not None:
                    assert a.tobytes() == c.tobytes()
                    out.append(a)
        return out

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4))


def test_layer_norm_saved_stats_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = _arr(rng, (3, 4, 5, 6), np.float32, 2.0, 1.0)
    g = _arr(rng, x.shape, np.float32)
    ns = [5, 6]
    w, b = _arr(rng, ns, np.float32), _arr(rng, ns, np.float32)
    tx, tg, tw, tb = map(torch.from_numpy, (x, g, w, b))
    ty, tm, tr = torch.ops.aten.native_layer_norm(tx, ns, tw, tb, 1e-5)
    y, mean, rstd = F.layer_norm(x, ns, w, b, return_stats=True)
    assert mean.shape == tuple(tm.shape) and rstd.shape == tuple(tr.shape)
    np.testing.assert_allclose(y, ty.numpy(), **TORCH_TOL[np.float32])
    np.testing.assert_allclose(mean, tm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rstd, tr.numpy(), rtol=1e-5)
    tgx, tgw, tgb = torch.ops.aten.native_layer_norm_backward(
        tg, tx, ns, tm, tr, tw, tb, [True] * 3
    )
    gx, gw, gb = F.layer_norm_backward(g, x, ns, w, mean=tm.numpy(), rstd=tr.numpy())
    _close([gx, gw, gb], [tgx.numpy(), tgw.numpy(), tgb.numpy()], np.float32)
    # the given statistics are the ones used
    other = F.layer_norm_backward(g, x, ns, w, mean=mean + 1, rstd=rstd * 2)[0]
    assert not np.allclose(other, gx, atol=1e-3)


def test_layer_norm_saved_stats_finite_differences(rng):
    x = rng.standard_normal((3, 4, 5))
    g = rng.standard_normal(x.shape)
    w = rng.standard_normal((4, 5))
    _, mean, rstd = F.layer_norm(x, (4, 5), w, eps=0.1, return_stats=True)
    gx, gw, _ = F.layer_norm_backward(g, x, (4, 5), w, 0.1, mean=mean, rstd=rstd)
    np.testing.assert_allclose(
        gx,
        numerical_grad(lambda a: F.layer_norm(a, (4, 5), w, eps=0.1), x, g),
        rtol=1e-6,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        gw,
        numerical_grad(lambda a: F.layer_norm(x, (4, 5), a, eps=0.1), w.copy(), g),
        rtol=1e-6,
        atol=1e-8,
    )


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(mean=np.zeros((2, 1))), ValueError, "rstd"),
        (dict(rstd=np.ones((2, 1))), ValueError, "mean"),
        (dict(mean=np.zeros((3, 1)), rstd=np.ones((2, 1))), ValueError, "mean"),
        (dict(mean=np.zeros((2, 1)), rstd=np.ones((1, 2))), ValueError, "rstd"),
        (dict(mean=np.zeros((2, 1), int), rstd=np.ones((2, 1))), TypeError, "mean"),
    ],
)
def test_layer_norm_saved_stats_bad_inputs(kwargs, exc, match):
    x = np.ones((2, 5), np.float32)
    with pytest.raises(exc, match=match):
        F.layer_norm_backward(x, x, 5, **kwargs)
    with pytest.raises(TypeError, match="return_stats"):
        F.layer_norm(x, 5, return_stats=1.5)


def test_layer_norm_layer_reuses_the_forward_statistics(rng, monkeypatch):
    layer = nn.LayerNorm((5, 4))
    layer.weight.data[:] = _arr(rng, (5, 4), np.float32)
    x = _arr(rng, (3, 2, 5, 4), np.float32, 1.0, 3.0)
    g = _arr(rng, x.shape, np.float32)
    calls = []
    real = F.layer_norm_backward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "layer_norm_backward", spy)
    layer(x)
    gx = layer.backward(g)
    assert calls[0]["mean"] is not None and calls[0]["rstd"] is not None
    egx, egw, egb = real(g, x, (5, 4), layer.weight.data)
    assert gx.tobytes() == egx.tobytes()
    assert layer.weight.grad.tobytes() == egw.tobytes()
    assert layer.bias.grad.tobytes() == egb.tobytes()
    layer.eval()
    layer(x)
    assert layer._stats is None and layer._x is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_bit_identical_across_threads(dtype, rng, monkeypatch):
    """Three channels: a task per channel for up to three threads, (channel, chunk) tasks for
    four -- the same arithmetic; planes of one chunk, of several chunks, and 2-D inputs;
    training and eval, forward and backward, and the layer's two-pass backward."""
    # every call parallel (threads_for runs small kernels on one thread)
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    cases = [
        _arr(rng, (9, 3, 13, 11), dtype, 1.0, 3.0),
        _arr(rng, (300, 3, 5, 5), dtype, 0.5, 2.0),  # small planes, several chunks
        _arr(rng, (2, 3, 70, 80), dtype, 2.0, -1.0),
        _arr(rng, (700, 3), dtype),
    ]
    w = _arr(rng, (3,), dtype)
    rm, rv = _arr(rng, (3,), dtype), np.abs(_arr(rng, (3,), dtype)) + 0.5

    def compute():
        out = []
        for x in cases:
            g = np.cos(x)
            rm1, rv1 = rm.copy(), rv.copy()
            out += [
                F.batch_norm(x, rm1, rv1, w, w, training=True),
                rm1,
                rv1,
                F.batch_norm(x, rm, rv, w, w),
                *F.batch_norm_backward(g, x, None, None, w, training=True),
                *F.batch_norm_backward(g, x, rm, rv, w),
            ]
            layer = _TwoPassBatchNorm(3, dtype=dtype)
            layer.weight.data[...] = w
            out += [layer(x), layer.backward(g), layer.weight.grad, layer.bias.grad]
        return out

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4, 2))


class _TwoPassBatchNorm(nn.BatchNorm1d, register=False):
    """Supplies the statistics and the gradient sums itself (as a subclass reducing them
    over a larger batch does): forward and backward then take two passes each."""

    _expected_ndims = (2, 3, 4)

    def _batch_stats(self, x):
        from cnncore.ops.norm import _batch_stats

        mean, var = _batch_stats(x)
        return mean, var, x.shape[0] * x.shape[2]

    def _batch_sums(self, db, dw, m):
        return db.copy(), dw.copy(), m


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_layer_two_pass_path_is_bit_identical(dtype, rng, monkeypatch):
    """The hooks a statistics-reducing subclass overrides give the fused path's bits."""
    # every call parallel (threads_for runs small kernels on one thread)
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    x = _arr(rng, (6, 3, 5, 7), dtype, 1.5, 2.0)
    g = _arr(rng, x.shape, dtype)
    fused, split = nn.BatchNorm2d(3, dtype=dtype), _TwoPassBatchNorm(3, dtype=dtype)
    for layer in (fused, split):
        layer.weight.data[...] = [0.5, -2.0, 1.5]
    np.testing.assert_array_equal(fused(x), split(x))
    np.testing.assert_array_equal(fused.backward(g), split.backward(g))
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(getattr(fused, name).grad, getattr(split, name).grad)
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(fused._buffers[name], split._buffers[name])


# ------------------------------------------------------------------------------------------
# Bad inputs the records cannot describe
# ------------------------------------------------------------------------------------------

_X = np.ones((2, 4, 3, 3))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: F.group_norm(_X, 3), ValueError, "num_groups"),
        (lambda: F.group_norm(_X[0, 0, 0], 1), ValueError, "x"),
        (lambda: F.group_norm(_X, 2, np.ones(4, np.float32)), TypeError, "weight"),
        (lambda: F.group_norm(_X, 2, eps=-1.0), ValueError, "eps"),
        (lambda: F.layer_norm(_X, (3, 4)), ValueError, "normalized_shape"),
        (lambda: F.layer_norm(_X, (3, 3), np.ones(3)), ValueError, "weight"),
        (lambda: F.instance_norm(_X[:, :, 0, 0]), ValueError, "x"),
        (lambda: F.instance_norm(_X[..., :1, :1]), ValueError, "spatial"),
        (lambda: F.instance_norm(_X, np.zeros(4)), ValueError, "running_var"),
        (lambda: F.instance_norm(_X, np.zeros(3), np.ones(3)), ValueError, "running_mean"),
        (lambda: F.instance_norm(_X, [0.0] * 4, [1.0] * 4), ValueError, "running_mean"),
        (lambda: F.instance_norm(_X, use_input_stats=False), ValueError, "running_mean"),
        (lambda: F.instance_norm(_X, momentum=np.inf), ValueError, "momentum"),
        (
            lambda: F.instance_norm(_X, np.zeros(4, np.float32), np.ones(4, np.float32)),
            TypeError,
            "running_mean",
        ),
        (lambda: F.instance_norm_backward(_X, _X, use_input_stats=False), ValueError, "running"),
        (lambda: F.batch_norm(_X, None, None), ValueError, "running_mean"),
        (lambda: F.batch_norm(_X[:1, :, :1, :1], None, None, training=True), ValueError, "1 value"),
        (lambda: F.batch_norm(_X[:1, :, 0, 0], None, None, training=True), ValueError, "1 value"),
        (lambda: F.batch_norm(_X[0, 0, 0], None, None, training=True), ValueError, "x"),
        (lambda: F.batch_norm(_X, np.zeros(4), None, training=True), ValueError, "running_var"),
        (lambda: F.batch_norm(_X, np.zeros(3), np.ones(3)), ValueError, "running_mean"),
        (lambda: F.batch_norm(_X, [0.0] * 4, [1.0] * 4, training=True), ValueError, "running"),
        (lambda: F.batch_norm(_X, None, None, training=True, momentum=np.nan), ValueError, "mom"),
        (lambda: F.batch_norm_backward(_X, _X, None, None), ValueError, "running_mean"),
        (lambda: F.batch_norm_backward(_X[:1], _X[:1], None, None), ValueError, "running"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_running_stats():
    """Updated in place: a read-only array is refused (not silently copied), but it is fine
    when only read."""
    rm, rv = np.zeros(4), np.ones(4)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean"):
        F.instance_norm(_X, rm, rv)
    F.instance_norm(_X, rm, rv, use_input_stats=False)
    F.instance_norm_backward(_X, _X, rm, rv, use_input_stats=False)


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------


def _train_steps(torch, ours, theirs, x, steps=2, eval_after=False):
    rng = np.random.default_rng(9)
    for _ in range(steps):
        g = rng.standard_normal(x.shape).astype(np.float32)
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(g))
        y = ours(x)
        gx = ours.backward(g)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol(np.float32))
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol(np.float32))
        for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=2e-4, atol=2e-4)
    for name, buf in ours.named_buffers():
        tb = dict(theirs.named_buffers())[name].numpy()
        np.testing.assert_allclose(buf, tb, rtol=1e-5, atol=1e-6)
    if eval_after:
        ours.eval()
        theirs.eval()
        np.testing.assert_allclose(
            ours(x), theirs(torch.from_numpy(x)).detach().numpy(), **tol(np.float32)
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda t: (nn.GroupNorm(2, 6), t.nn.GroupNorm(2, 6)),
        lambda t: (nn.GroupNorm(3, 6, affine=False), t.nn.GroupNorm(3, 6, affine=False)),
        lambda t: (nn.LayerNorm((5, 4)), t.nn.LayerNorm((5, 4))),
        lambda t: (nn.LayerNorm(4, bias=False), t.nn.LayerNorm(4, bias=False)),
        lambda t: (
            nn.LayerNorm(4, elementwise_affine=False),
            t.nn.LayerNorm(4, elementwise_affine=False),
        ),
        lambda t: (nn.InstanceNorm2d(6), t.nn.InstanceNorm2d(6)),
        lambda t: (
            nn.InstanceNorm2d(6, affine=True, track_running_stats=True, momentum=0.3),
            t.nn.InstanceNorm2d(6, affine=True, track_running_stats=True, momentum=0.3),
        ),
    ],
)
def test_layers_match_torch(make, rng):
    torch = pytest.importorskip("torch")
    ours, theirs = make(torch)
    x = _arr(rng, (3, 6, 5, 4), np.float32, 2.0, 1.0)
    _train_steps(torch, ours, theirs, x, eval_after=True)


def test_instance_norm2d_unbatched_and_momentum_none(rng):
    torch = pytest.importorskip("torch")
    ours = nn.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=None)
    theirs = torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=None)
    x = _arr(rng, (3, 5, 6), np.float32)  # (C, H, W)
    _train_steps(torch, ours, theirs, x, eval_after=True)
    np.testing.assert_array_equal(ours._buffers["running_mean"], 0)  # torch: None = no update
    assert ours(x).shape == x.shape


def test_instance_norm2d_channels(rng):
    x = _arr(rng, (2, 5, 4, 4), np.float32)
    assert nn.InstanceNorm2d(3)(x).shape == x.shape  # unused num_features, as torch
    with pytest.raises(ValueError, match="channel"):
        nn.InstanceNorm2d(3, affine=True)(x)
    with pytest.raises(ValueError, match="input"):
        nn.InstanceNorm2d(5)(x[0, 0])


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: nn.GroupNorm(4, 6), ValueError, "num_channels"),
        (lambda: nn.GroupNorm(0, 6), ValueError, "num_groups"),
        (lambda: nn.GroupNorm(2, 6, eps=0), ValueError, "eps"),
        (lambda: nn.GroupNorm(2, 6, affine=1), TypeError, "affine"),
        (lambda: nn.LayerNorm(()), ValueError, "normalized_shape"),
        (lambda: nn.LayerNorm((3, 0)), ValueError, "normalized_shape"),
        (lambda: nn.LayerNorm("3"), TypeError, "normalized_shape"),
        (lambda: nn.LayerNorm(3, bias="no"), TypeError, "bias"),
        (lambda: nn.InstanceNorm2d(3, momentum=2.0), ValueError, "momentum"),
        (lambda: nn.InstanceNorm2d(3, dtype=np.int32), TypeError, "dtype"),
        (lambda: nn.GroupNorm(2, 6)(np.ones((2, 4, 3))), ValueError, "input"),
    ],
)
def test_layer_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_layers_save_and_load(rng, tmp_path):
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1, rng=0),
        nn.GroupNorm(3, 6),
        nn.InstanceNorm2d(6, affine=True, track_running_stats=True),
        nn.LayerNorm((6, 5, 5), bias=False, dtype=np.float32),
        nn.GELU(),
    )
    x = _arr(rng, (4, 2, 5, 5), np.float32)
    model(x)  # running statistics move
    for p in model.parameters():
        p.data += rng.standard_normal(p.data.shape).astype(np.float32) * 0.1
    model.eval()
    cnncore.nn.save(model, tmp_path / "norms.cnn")
    again = cnncore.load(tmp_path / "norms.cnn")
    again.eval()
    np.testing.assert_array_equal(again(x), model(x))
    assert [type(m).__name__ for m in again.layers] == [type(m).__name__ for m in model.layers]
