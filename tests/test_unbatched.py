"""Unbatched inputs: one sample ``(C, H, W)`` where ``(N, C, H, W)`` is expected, as PyTorch
accepts it for its convolutions, poolings and padding (and their modules).

The generic checks live with the spec records (tests/test_specs.py: an unbatched call is the
batch of one bit for bit, finite differences of every unbatched backward relation;
tests/test_bad_input.py: wrong ndim, mixed batched/unbatched arguments).  Here: the same calls
against PyTorch's (values and autograd gradients), the layers against torch's modules, the
argument handling of the decorator, and fit/evaluate/predict, which still want batches.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnncore
import cnncore.functional as F
from cnncore import nn
from cnncore._validation import accepts_unbatched, batch_required

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


# ------------------------------------------------------------------------------------------
# Functional ops against torch's, unbatched
# ------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((4, 9, 8))  # (C, H, W)


def _conv(x):
    w = np.random.default_rng(1).standard_normal((6, 2, 3, 2))
    b = np.random.default_rng(2).standard_normal(6)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    ours = F.conv2d(x, w, b, **kw)
    g = np.random.default_rng(3).standard_normal(ours.shape)
    dx, dw, db = F.conv2d_backward(g, x, w, **kw)
    assert F.conv2d_backward_input(g, w, x.shape, **kw).tobytes() == dx.tobytes()
    assert F.conv2d_backward_weight(g, x, w.shape, **kw).tobytes() == dw.tobytes()
    assert F.conv2d_backward_bias(g).tobytes() == db.tobytes()
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    ref = TF.conv2d(xt, wt, bt, **kw)
    ref.backward(_t(g))
    return (ours, dx, dw, db), (ref, xt.grad, wt.grad, bt.grad)


def _conv_transpose(x):
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 2))
    b = np.random.default_rng(2).standard_normal(6)
    kw = dict(stride=2, padding=(1, 0), output_padding=1, groups=2, dilation=(1, 2))
    ours = F.conv_transpose2d(x, w, b, **kw)
    g = np.random.default_rng(3).standard_normal(ours.shape)
    dx, dw, db = F.conv_transpose2d_backward(g, x, w, **kw)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    ref = TF.conv_transpose2d(xt, wt, bt, **kw)
    ref.backward(_t(g))
    return (ours, dx, dw, db), (ref, xt.grad, wt.grad, bt.grad)


def _pool(name, fwd, bwd, tfn, **kw):
    def case(x):
        y = fwd(x, **kw)
        g = np.random.default_rng(3).standard_normal(y.shape)
        xt = _t(x, True)
        ref = tfn(xt, **kw)
        ref.backward(_t(g))
        return (y, bwd(g, x, y, kw)), (ref, xt.grad)

    return case


def _max_pool(x):
    kw = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    g = np.random.default_rng(3).standard_normal(y.shape)
    dx = F.max_pool2d_backward(g, idx, x.shape)
    xt = _t(x, True)
    ref, ridx = TF.max_pool2d(xt, return_indices=True, **kw)
    ref.backward(_t(g))
    un = F.max_unpool2d(y, idx, 3, 2, 1, output_size=x.shape[-2:])
    gu = np.random.default_rng(4).standard_normal(un.shape)
    dun = F.max_unpool2d_backward(gu, idx)
    yt = _t(y, True)
    run = TF.max_unpool2d(yt, ridx, 3, 2, 1, output_size=x.shape[-2:])
    run.backward(_t(gu))
    return (y, idx, dx, un, dun), (ref, ridx, xt.grad, run, yt.grad)


def _adaptive_max(x):
    y, idx = F.adaptive_max_pool2d(x, (4, 3), return_indices=True)
    g = np.random.default_rng(3).standard_normal(y.shape)
    dx = F.adaptive_max_pool2d_backward(g, idx, x.shape)
    xt = _t(x, True)
    ref, ridx = TF.adaptive_max_pool2d(xt, (4, 3), return_indices=True)
    ref.backward(_t(g))
    return (y, idx, dx), (ref, ridx, xt.grad)


_AVG = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
_LP = dict(norm_type=2.0, kernel_size=(2, 3), stride=2)

CASES = {
    "conv2d": _conv,
    "conv_transpose2d": _conv_transpose,
    "max_pool2d+unpool": _max_pool,
    "adaptive_max_pool2d": _adaptive_max,
    "avg_pool2d": _pool(
        "avg",
        F.avg_pool2d,
        lambda g, x, y, kw: F.avg_pool2d_backward(g, x.shape, **kw),
        TF.avg_pool2d,
        **_AVG,
    ),
    "adaptive_avg_pool2d": _pool(
        "adaptive",
        F.adaptive_avg_pool2d,
        lambda g, x, y, kw: F.adaptive_avg_pool2d_backward(g, x.shape),
        TF.adaptive_avg_pool2d,
        output_size=(4, 3),
    ),
    "lp_pool2d": _pool(
        "lp",
        F.lp_pool2d,
        lambda g, x, y, kw: F.lp_pool2d_backward(g, x, **kw),
        TF.lp_pool2d,
        **_LP,
    ),
    **{
        f"pad2d-{mode}": _pool(
            "pad",
            lambda x, mode=mode, **kw: F.pad2d(x, (1, 2, 2, 0), mode=mode),
            lambda g, x, y, kw, mode=mode: F.pad2d_backward(g, (1, 2, 2, 0), mode=mode),
            lambda x, mode=mode, **kw: TF.pad(x, (1, 2, 2, 0), mode=mode),
        )
        for mode in ("constant", "reflect", "replicate", "circular")
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbatched_ops_match_torch(name):
    """Each op on a (C, H, W) sample: values, indices and gradients as PyTorch's functional
    ops (autograd) on the same unbatched sample; the results have no batch axis."""
    ours, ref = CASES[name](_X.copy())
    for k, (o, r) in enumerate(zip(ours, ref, strict=True)):
        r = r.detach().numpy()
        assert np.shape(o) == r.shape, (k, np.shape(o), r.shape)
        if r.dtype.kind in "iu":
            np.testing.assert_array_equal(o, r)
        else:
            np.testing.assert_allclose(o, r, rtol=1e-10, atol=1e-12, err_msg=f"output {k}")


def test_global_avg_pool_and_im2col_unbatched():
    x = _X
    np.testing.assert_allclose(F.global_avg_pool2d(x), x.mean(axis=(1, 2), keepdims=True))
    g = np.ones((4, 1, 1))
    np.testing.assert_allclose(F.global_avg_pool2d_backward(g, x.shape), np.full(x.shape, 1 / 72))
    cols = F.im2col(x, (2, 3), stride=(1, 2), padding=1)
    np.testing.assert_allclose(cols, TF.unfold(_t(x), (2, 3), stride=(1, 2), padding=1).numpy())
    back = F.col2im(cols, x.shape[-2:], (2, 3), stride=(1, 2), padding=1)
    ref = TF.fold(_t(cols), x.shape[-2:], (2, 3), stride=(1, 2), padding=1).numpy()
    np.testing.assert_allclose(back, ref)


# ------------------------------------------------------------------------------------------
# The decorator's argument handling
# ------------------------------------------------------------------------------------------


def test_unbatched_call_forms():
    """Keyword or positional, lists, read-only and non-contiguous views: the same result;
    the input is never written and the result is a new array."""
    w = np.ones((2, 4, 3, 3))
    ref = F.conv2d(_X[None], w)[0]
    ro = _X.copy()
    ro.flags.writeable = False
    wide = np.repeat(_X, 2, axis=-1)[..., ::2]
    for x in (_X, ro, wide, _X.tolist()):
        for y in (F.conv2d(x, w), F.conv2d(x=x, weight=w)):
            assert y.tobytes() == ref.tobytes()
    y = F.max_pool2d(_X, 2)
    assert not np.shares_memory(y, _X)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.conv2d(_X[0], np.ones((2, 4, 3, 3))), r"x must be a 4-D array \(N, C_in"),
        (lambda: F.conv2d(_X[None, None], np.ones((2, 4, 3, 3))), r"or a 3-D array \(C_in"),
        (lambda: F.max_pool2d(np.zeros(5), 2), r"x must be a 4-D array \(N, C, H_in, W_in\) or"),
        (
            lambda: F.max_pool2d_backward(
                np.ones((4, 2, 2)), np.zeros((1, 4, 2, 2), int), (4, 4, 4)
            ),
            "indices must be a 3-D array as grad_output is unbatched",
        ),
        (
            lambda: F.avg_pool2d_backward(np.ones((4, 2, 2)), (1, 4, 4, 4), 2),
            r"input_shape must be a tuple of 3 ints \(C, H_in, W_in\)",
        ),
        (
            lambda: F.lp_pool2d_backward(np.ones((4, 2, 2)), np.ones((1, 4, 4, 4)), 2, 2),
            r"x must be a 3-D array \(C, H_in, W_in\) as grad_output is unbatched",
        ),
        (lambda: F.conv2d(_X, np.ones((2, 3, 3, 3))), r"added to it\]"),  # an inner error
    ],
)
def test_unbatched_errors_name_the_argument_and_the_shapes(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "Received" in str(info.value)


def test_unbatched_keeps_type_errors_first():
    """A wrong dtype is a TypeError whatever the ndim (as for batches)."""
    with pytest.raises(TypeError, match="x"):
        F.conv2d(_X.astype(np.int64)[0], np.ones((2, 4, 3, 3)))
    with pytest.raises(TypeError, match="x"):
        F.conv2d(None, np.ones((2, 4, 3, 3)))
    with pytest.raises(TypeError, match="unexpected keyword"):
        F.conv2d(_X, np.ones((2, 4, 3, 3)), bogus=1)


def test_accepts_unbatched_decorator_on_its_own():
    """The decorator alone: adds the batch axis as a view, strips it from the flagged
    outputs, leaves a batch alone, and lists its arguments."""
    seen = []

    @accepts_unbatched({"a": "(N, K)", "b": "(N, K)"}, batched_outputs=(True, False))
    def op(a, b, scale=1.0):
        seen.append((a.shape, b.shape, a.base is not None))
        return a * scale + b, a.sum(axis=0)

    x = np.arange(3.0)
    y, s = op(x, x, scale=2.0)
    assert seen[-1] == ((1, 3), (1, 3), True)  # a view
    np.testing.assert_array_equal(y, 3 * x)
    np.testing.assert_array_equal(s, x)
    assert op.__unbatched__ == {"a": 2, "b": 2}
    assert op.__name__ == "op" and "scale" in str(__import__("inspect").signature(op))
    with pytest.raises(ValueError, match="b must be a 1-D array"):
        op(x, x[None])


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------


def _layer_pair(name):
    rng = np.random.default_rng(7)
    if name == "Conv2d":
        ours = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64, rng=0)
        theirs = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double()
    elif name == "Conv2d-reflect":
        ours = nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect", dtype=np.float64, rng=0)
        theirs = torch.nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect").double()
    elif name == "ConvTranspose2d":
        ours = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, dtype=np.float64, rng=0)
        theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1).double()
    elif name == "InstanceNorm2d":
        ours = nn.InstanceNorm2d(4, affine=True, dtype=np.float64)
        theirs = torch.nn.InstanceNorm2d(4, affine=True).double()
        ours.weight.data[...] = rng.uniform(0.5, 2, 4)
    else:
        kw = {
            "MaxPool2d": dict(kernel_size=3, stride=2, padding=1),
            "AvgPool2d": dict(kernel_size=2, stride=1, ceil_mode=True),
            "AdaptiveAvgPool2d": dict(output_size=(2, 3)),
        }[name]
        return getattr(nn, name)(**kw), getattr(torch.nn, name)(**kw)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize(
    "name",
    [
        "Conv2d",
        "Conv2d-reflect",
        "ConvTranspose2d",
        "MaxPool2d",
        "AvgPool2d",
        "AdaptiveAvgPool2d",
        "InstanceNorm2d",
    ],
)
def test_layers_take_an_unbatched_sample_as_torch_modules(name):
    """forward and backward of a (C, H, W) sample as torch's module (which takes it too),
    parameter gradients included, in training and eval mode."""
    ours, theirs = _layer_pair(name)
    x = _X.copy()
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        xt = _t(x, True)
        ref = theirs(xt)
        y = ours(x)
        assert y.shape == tuple(ref.shape)
        np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        if not training:
            continue
        g = np.random.default_rng(5).standard_normal(y.shape)
        ref.backward(_t(g))
        ours.zero_grad()
        dx = ours.backward(g)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        for (k, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_global_avg_pool_layer_unbatched():
    layer = nn.GlobalAvgPool2d()
    y = layer(_X)
    assert y.shape == (4, 1, 1)
    assert layer.backward(np.ones_like(y)).shape == _X.shape


@pytest.mark.parametrize("output_size", [(17, 15), (6, 17, 15), (6, 18, 16)])
def test_conv_transpose_output_size_unbatched(output_size):
    """forward(x, output_size=...) of an unbatched sample: (H, W) or (C, H, W), as torch."""
    ours, theirs = _layer_pair("ConvTranspose2d")
    ref = theirs(_t(_X), output_size=output_size).detach().numpy()
    np.testing.assert_allclose(ours(_X, output_size=output_size), ref, rtol=1e-10, atol=1e-12)


def test_conv_transpose_output_size_of_a_batch_unbatched():
    ours, _ = _layer_pair("ConvTranspose2d")
    with pytest.raises(ValueError, match=r"output_size must be \(H, W\) or \(C, H, W\)"):
        ours(_X, output_size=(1, 6, 17, 15))  # torch refuses it too


def test_sequential_runs_an_unbatched_sample_and_fit_wants_batches():
    """A model runs a (C, H, W) sample (training and eval/planned forward, backward), but
    fit/evaluate/predict read the first axis as the batch: a (N, H, W) array is refused by
    name instead of being taken as one N-channel image."""
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(0), nn.Linear(36, 3)
    )
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    ref = model(x[None])
    out = model(x)
    np.testing.assert_allclose(out, ref.reshape(-1), rtol=1e-6)
    assert model.backward(np.ones_like(out)).shape == x.shape
    model.eval()
    np.testing.assert_allclose(model(x), out, rtol=1e-6)
    xs = np.random.default_rng(1).random((10, 8, 8)).astype(np.float32)
    y = np.zeros(10, np.int64)
    for call in (
        lambda: model.fit(xs, y, epochs=1, verbose=0, optimizer="sgd", loss="cross_entropy"),
        lambda: model.evaluate(xs, y, loss="cross_entropy"),
        lambda: model.predict(xs),
    ):
        with pytest.raises(ValueError, match="input must be a batch"):
            call()
    with batch_required(), pytest.raises(ValueError, match="must be a batch"):
        F.conv2d(x, np.ones((4, 2, 3, 3), np.float32))
    assert F.conv2d(x, np.ones((4, 2, 3, 3), np.float32)).shape == (4, 6, 6)  # restored


def test_cnncore_namespace_exports_the_decorated_ops():
    assert cnncore.conv2d is F.conv2d and cnncore.conv2d.__wrapped__.__name__ == "conv2d"
