"""Resizing: interpolate (nearest, nearest-exact, bilinear) and its backward, pixel_shuffle /
pixel_unshuffle, and the Upsample / PixelShuffle / PixelUnshuffle layers.

The spec records check the NumPy references (PyTorch's coordinate rules written out one
index at a time), finite differences, bad inputs, empty batches and views; this file adds
PyTorch cross-checks over random sizes and scale factors (nearest indices must be identical),
thread determinism of the gather backward, and the layers.
"""

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, numerical_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import cnncore
import cnncore._config
import cnncore.functional as F
from cnncore import nn

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

_scale = st.sampled_from([0.25, 0.4, 0.5, 0.7, 1.0, 1.1, 1.3, 1.5, 2.0, 2.2, 2.5, 3.0, 1 / 3, 4.3])


@st.composite
def _resize_case(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    mode = draw(st.sampled_from(["nearest", "nearest-exact", "bilinear"]))
    kw: dict = {"mode": mode}
    if draw(st.booleans()):
        kw["size"] = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    else:
        fh, fw = draw(_scale), draw(_scale)
        if int(h * fh) < 1 or int(w * fw) < 1:
            fh = fw = 2.0
        kw["scale_factor"] = (fh, fw) if draw(st.booleans()) else (fh if fh == fw else (fh, fw))
        kw["recompute_scale_factor"] = draw(st.sampled_from([None, False, True]))
    if mode == "bilinear":
        kw["align_corners"] = draw(st.sampled_from([None, False, True]))
    dtype = draw(st.sampled_from(DTYPES))
    return (draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w), kw, dtype


def _backward_kw(kw):
    out = {k: kw[k] for k in ("mode", "align_corners") if k in kw}
    if "scale_factor" in kw and not kw.get("recompute_scale_factor"):
        out["scale_factor"] = kw["scale_factor"]
    return out


@settings(max_examples=120, deadline=None)
@given(case=_resize_case(), seed=st.integers(0, 2**16))
def test_interpolate_matches_torch(case, seed):
    """Values and input gradients of torch.nn.functional.interpolate; nearest modes pick
    exactly torch's source pixels (non-integer scales, the 2x and same-size shortcuts)."""
    torch = pytest.importorskip("torch")
    shape, kw, dtype = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.nn.functional.interpolate(tx, **kw)
    y = F.interpolate(x, **kw)
    assert y.shape == tuple(ty.shape) and y.dtype == dtype
    if kw["mode"] != "bilinear":
        np.testing.assert_array_equal(y, ty.detach().numpy())
    else:
        np.testing.assert_allclose(y, ty.detach().numpy(), **TOL[dtype])
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    gx = F.interpolate_backward(g, x.shape, **_backward_kw(kw))
    np.testing.assert_allclose(gx, tx.grad.numpy(), **TOL[dtype])


def test_nearest_matches_torch_on_a_grid_of_sizes():
    """Every output size from 1 to 3x for inputs 1..9, and scale factors that do not divide:
    the selected source index equals torch's."""
    torch = pytest.importorskip("torch")
    for mode in ("nearest", "nearest-exact"):
        for n_in in range(1, 10):
            x = np.arange(float(n_in)).reshape(1, 1, 1, n_in)
            for n_out in range(1, 3 * n_in + 1):
                kw = dict(size=(1, n_out), mode=mode)
                ref = torch.nn.functional.interpolate(torch.from_numpy(x), **kw).numpy()
                np.testing.assert_array_equal(F.interpolate(x, **kw), ref, err_msg=str(kw))
            for f in (0.6, 1.05, 1.45, 1.999, 2.05, 2.5, 3.3):
                if int(n_in * f) < 1:
                    continue
                kw = dict(scale_factor=(1.0, f), mode=mode)
                ref = torch.nn.functional.interpolate(torch.from_numpy(x), **kw).numpy()
                np.testing.assert_array_equal(F.interpolate(x, **kw), ref, err_msg=str(kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_corner_conventions(dtype):
    x = np.array([[[[0.0, 1.0], [2.0, 3.0]]]], dtype)
    y = F.interpolate(x, size=3, mode="bilinear", align_corners=True)
    np.testing.assert_allclose(y[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], rtol=1e-6)
    y = F.interpolate(x, scale_factor=2, mode="bilinear")
    np.testing.assert_allclose(y[0, 0, 0], [0, 0.25, 0.75, 1], rtol=1e-6)
    np.testing.assert_array_equal(F.interpolate(x, size=(2, 2), mode="bilinear"), x)


@pytest.mark.parametrize(
    "kw",
    [
        dict(mode="nearest", scale_factor=2.5),
        dict(mode="nearest-exact", size=(5, 3)),
        dict(mode="bilinear", size=(7, 2), align_corners=True),
        dict(mode="bilinear", scale_factor=(1.7, 0.6), recompute_scale_factor=True),
    ],
)
def test_interpolate_finite_differences(kw, rng):
    x = rng.standard_normal((1, 2, 4, 5))
    y = F.interpolate(x, **kw)
    g = rng.standard_normal(y.shape)
    gx = F.interpolate_backward(g, x.shape, **_backward_kw(kw))
    num = numerical_grad(lambda a: F.interpolate(a, **kw), x, g)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_is_bit_identical_for_any_thread_count(dtype, rng, monkeypatch):
    """The gradient is a gather in a fixed order: identical bytes for 1-4 threads, with few
    planes (the rows are split) and many."""
    # every call parallel (threads_for runs small kernels on one thread)
    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    few = rng.standard_normal((1, 2, 67, 45)).astype(dtype)
    many = rng.standard_normal((6, 5, 13, 17)).astype(dtype)
    cases = [
        (few, dict(scale_factor=2.5, mode="bilinear")),
        (few, dict(size=(31, 90), mode="bilinear", align_corners=True)),
        (many, dict(scale_factor=(3, 0.5), mode="nearest")),
        (many, dict(size=(40, 41), mode="nearest-exact")),
    ]
    grads = [rng.standard_normal(F.interpolate(x, **kw).shape).astype(dtype) for x, kw in cases]

    def compute():
        out = []
        for (x, kw), g in zip(cases, grads, strict=True):
            out += [F.interpolate(x, **kw), F.interpolate_backward(g, x.shape, **_backward_kw(kw))]
        return out

    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4, 2))


_X = np.ones((2, 3, 4, 5))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: F.interpolate(_X), ValueError, "size|scale_factor"),
        (lambda: F.interpolate(_X, size=3, scale_factor=2), ValueError, "size|scale_factor"),
        (lambda: F.interpolate(_X, size=3, align_corners=True), ValueError, "align_corners"),
        (lambda: F.interpolate(_X, size=3, recompute_scale_factor=True), ValueError, "recompute"),
        (lambda: F.interpolate(_X, scale_factor=0.1), ValueError, "size"),
        (lambda: F.interpolate(_X, size=3, antialias=True), ValueError, "antialias"),
        (lambda: F.interpolate(_X, size=3, mode="bicubic"), ValueError, "mode"),
        (lambda: F.interpolate(_X[0], size=3), ValueError, "x"),
        (lambda: F.interpolate(_X[:, :, :0], size=3), ValueError, "size"),
        (lambda: F.interpolate(_X, scale_factor=1e300), ValueError, "output"),
        (lambda: F.interpolate_backward(_X, (2, 3, 2, 2), scale_factor=2), ValueError, "scale"),
        (lambda: F.interpolate_backward(_X, (2, 4, 2, 2)), ValueError, "input_shape"),
        (lambda: F.pixel_shuffle(_X, 2), ValueError, "upscale_factor"),
        (lambda: F.pixel_shuffle(_X[0, 0], 1), ValueError, "x"),
        (lambda: F.pixel_unshuffle(_X, 2), ValueError, "downscale_factor"),
        (lambda: F.pixel_unshuffle(_X, 0), ValueError, "downscale_factor"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------
# pixel_shuffle / pixel_unshuffle
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(0, 3), min_size=0, max_size=2),
    c=st.integers(0, 3),
    r=st.integers(1, 4),
    h=st.integers(0, 5),
    w=st.integers(0, 5),
    dtype=st.sampled_from(DTYPES),
)
def test_pixel_shuffle_matches_torch(lead, c, r, h, w, dtype):
    """Any number of leading dimensions (none: an unbatched (C r^2, H, W) input)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((*lead, c * r * r, h, w)).astype(dtype)
    ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), r).numpy()
    y = F.pixel_shuffle(x, r)
    np.testing.assert_array_equal(y, ref)
    if y.size:  # (torch's pixel_unshuffle returns an empty input's shape unchanged)
        ref = torch.nn.functional.pixel_unshuffle(torch.from_numpy(y), r).numpy()
        np.testing.assert_array_equal(F.pixel_unshuffle(y, r), ref)
    np.testing.assert_array_equal(F.pixel_unshuffle(y, r), x)  # each other's inverse


def test_pixel_shuffle_gradient_is_unshuffle(rng):
    x = rng.standard_normal((2, 12, 3, 2))
    g = rng.standard_normal((2, 3, 6, 4))
    num = numerical_grad(lambda a: F.pixel_shuffle(a, 2), x, g)
    np.testing.assert_allclose(F.pixel_unshuffle(g, 2), num, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(scale_factor=2),
        dict(scale_factor=1.5, mode="nearest-exact"),
        dict(size=(7, 9), mode="bilinear"),
        dict(scale_factor=(2, 3), mode="bilinear", align_corners=True),
        dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
    ],
)
def test_upsample_matches_torch_and_saves(kw, rng, tmp_path):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    layer = nn.Upsample(**kw)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.nn.Upsample(**kw)(tx)
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert layer.output_shape(x.shape) == y.shape
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    cnncore.nn.save(nn.Sequential(layer), tmp_path / "u.cnn")
    np.testing.assert_array_equal(cnncore.load(tmp_path / "u.cnn")(x), y)


def test_pixel_shuffle_layers(rng, tmp_path):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 18, 4, 5)).astype(np.float32)
    model = nn.Sequential(nn.PixelShuffle(3), nn.PixelUnshuffle(3))
    y = model(x)
    np.testing.assert_array_equal(y, x)
    assert model.output_shape(x.shape) == x.shape
    ps = nn.PixelShuffle(3)
    np.testing.assert_array_equal(ps(x), torch.nn.PixelShuffle(3)(torch.from_numpy(x)).numpy())
    g = rng.standard_normal((2, 2, 12, 15)).astype(np.float32)
    np.testing.assert_array_equal(ps.backward(g), F.pixel_unshuffle(g, 3))
    np.testing.assert_array_equal(model.backward(x), x)
    cnncore.nn.save(model, tmp_path / "ps.cnn")
    np.testing.assert_array_equal(cnncore.load(tmp_path / "ps.cnn")(x), x)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: nn.Upsample(), ValueError, "size|scale_factor"),
        (lambda: nn.Upsample(scale_factor=2, mode="linear"), ValueError, "mode"),
        (lambda: nn.Upsample(size=2, align_corners=True), ValueError, "align_corners"),
        (lambda: nn.Upsample(scale_factor=-1), ValueError, "scale_factor"),
        (lambda: nn.PixelShuffle(0), ValueError, "upscale_factor"),
        (lambda: nn.PixelUnshuffle(1.5), TypeError, "downscale_factor"),
        (lambda: nn.Upsample(scale_factor=2)(np.ones((3, 4, 4))), ValueError, "x"),
        (lambda: nn.PixelShuffle(2)(np.ones((2, 3, 4, 4))), ValueError, "upscale_factor"),
    ],
)
def test_layer_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# (H_in, W_in) and interpolate's arguments for the every-SIMD-level checks: wide rows
# (vector blocks), align_corners, a non-integer scale, a downscale, sources spread wider
# than a vector, nearest with a size and with a scale
SIMD_LEVEL_CASES = [
    ((9, 56), dict(scale_factor=2, mode="bilinear")),
    ((5, 61), dict(scale_factor=2, mode="bilinear", align_corners=True)),
    ((4, 37), dict(scale_factor=3.3, mode="bilinear")),
    ((6, 70), dict(scale_factor=0.5, mode="bilinear")),
    ((3, 90), dict(size=(4, 11), mode="bilinear")),
    ((7, 13), dict(size=(5, 50), mode="nearest")),
    ((6, 45), dict(scale_factor=2, mode="nearest")),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hw,kw",
    [*SIMD_LEVEL_CASES, ((5, 33), dict(scale_factor=1.5, mode="nearest-exact"))],
    ids=str,
)
def test_backward_every_simd_build_matches_torch(hw, kw, dtype, rng, monkeypatch):
    """The gradient's gather along W at each SIMD level (AVX-512 and AVX2 permute blocks of
    16 / 8 columns whose sources lie close together, with padding entries, blocks that
    spread too wide and blocks at the end of the row taking the scalar loop) against
    PyTorch's autograd."""
    torch = pytest.importorskip("torch")
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels
    from cnncore.ops import resize as R

    x = rng.standard_normal((2, 3, *hw)).astype(dtype)
    g = rng.standard_normal(F.interpolate(x, **kw).shape).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.interpolate(tx, **kw).backward(torch.from_numpy(g))
    want = tx.grad.numpy()
    before = _loaded_simd["cnncore.ops._resize"]
    levels = []
    try:
        for level in cpu_simd_levels():
            module, got = load_kernels("cnncore.ops._resize", level)
            monkeypatch.setattr(R, "_resize", module)
            levels.append(got)
            gx = F.interpolate_backward(g, x.shape, **_backward_kw(kw))
            np.testing.assert_allclose(gx, want, err_msg=got, **TOL[dtype])
    finally:
        load_kernels("cnncore.ops._resize", before)  # (it records the level loaded)
    assert levels == cpu_simd_levels()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hw,kw",
    [
        ((7, 40), dict(scale_factor=0.5, mode="nearest")),  # odd rows / columns unread
        ((6, 45), dict(scale_factor=1.5, mode="nearest")),  # 1 or 2 entries per column
        ((5, 38), dict(scale_factor=2, mode="bilinear")),
    ],
    ids=str,
)
def test_backward_rows_without_readers_and_non_finite(hw, kw, dtype, rng, monkeypatch):
    """The gather stores each input row's first term (no zero-fill pass) and zeroes the rows
    no output reads at the end: those are exactly +0.0, NaN / inf in grad_output reach only
    the inputs that feed them, and an all -0.0 grad_output gives +0.0 (``0 + (-0.0)``, as
    the sum from zero) -- at every SIMD level, against PyTorch's autograd."""
    torch = pytest.importorskip("torch")
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels
    from cnncore.ops import resize as R

    x = rng.standard_normal((2, 2, *hw)).astype(dtype)
    g = rng.standard_normal(F.interpolate(x, **kw).shape).astype(dtype)
    g[0, 0, 1, 3] = np.nan
    g[1, 1, -1, -2] = np.inf
    tx = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.interpolate(tx, **kw).backward(torch.from_numpy(g))
    want = tx.grad.numpy()
    neg_zero = np.full_like(g, -0.0)
    before = _loaded_simd["cnncore.ops._resize"]
    try:
        for level in cpu_simd_levels():
            module, got = load_kernels("cnncore.ops._resize", level)
            monkeypatch.setattr(R, "_resize", module)
            junk = np.full(x.shape, np.nan, dtype)  # freed: grad_x's allocation may reuse it
            del junk
            gx = F.interpolate_backward(g, x.shape, **_backward_kw(kw))
            np.testing.assert_allclose(gx, want, err_msg=got, equal_nan=True, **TOL[dtype])
            np.testing.assert_array_equal(np.isnan(gx), np.isnan(want), err_msg=got)
            unread = want == 0
            assert not np.signbit(gx[unread]).any(), got
            gz = F.interpolate_backward(neg_zero, x.shape, **_backward_kw(kw))
            assert (gz == 0).all() and not np.signbit(gz).any(), got
    finally:
        load_kernels("cnncore.ops._resize", before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w", [1, 15, 16, 37, 64])
def test_pixel_shuffle_r2_rows_every_simd_build(w, dtype, rng, monkeypatch):
    """r = 2 runs one (de)interleaving loop per fine row (vectorized): rows wider than a
    vector, with remainders, at every SIMD level and 1-2 threads, against torch."""
    torch = pytest.importorskip("torch")
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels
    from cnncore.ops import resize as R

    monkeypatch.setattr(cnncore._config, "SMALL_ELEMENTS", 0)
    x = rng.standard_normal((3, 8, 5, w)).astype(dtype)
    want = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy()
    before = _loaded_simd["cnncore.ops._resize"]
    saved = cnncore.get_num_threads()
    try:
        for level in cpu_simd_levels():
            module, got = load_kernels("cnncore.ops._resize", level)
            monkeypatch.setattr(R, "_resize", module)
            for threads in (1, 2):
                cnncore.set_num_threads(threads)
                y = F.pixel_shuffle(x, 2)
                np.testing.assert_array_equal(y, want, err_msg=got)
                np.testing.assert_array_equal(F.pixel_unshuffle(y, 2), x, err_msg=got)
    finally:
        load_kernels("cnncore.ops._resize", before)
        cnncore.set_num_threads(saved)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hw,kw",
    [*SIMD_LEVEL_CASES, ((5, 70), dict(scale_factor=0.4, mode="nearest-exact"))],
    ids=str,
)
def test_forward_every_simd_build_matches_torch(hw, kw, dtype, rng, monkeypatch):
    """The forward's rows at each SIMD level: blocks whose sources fit one vector (planned
    once per call) are permuted, the others (wide, partial, past the row's end) take the
    scalar loop -- against PyTorch (nearest: exactly)."""
    torch = pytest.importorskip("torch")
    from cnncore._config import _loaded_simd, load_kernels
    from cnncore._threads import cpu_simd_levels
    from cnncore.ops import resize as R

    x = rng.standard_normal((2, 3, *hw)).astype(dtype)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), **kw).numpy()
    before = _loaded_simd["cnncore.ops._resize"]
    try:
        for level in cpu_simd_levels():
            module, got = load_kernels("cnncore.ops._resize", level)
            monkeypatch.setattr(R, "_resize", module)
            y = F.interpolate(x, **kw)
            if kw["mode"] == "bilinear":
                np.testing.assert_allclose(y, want, err_msg=got, **TOL[dtype])
            else:
                np.testing.assert_array_equal(y, want, err_msg=got)
    finally:
        load_kernels("cnncore.ops._resize", before)
