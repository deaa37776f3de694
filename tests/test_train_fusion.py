"""Training-path fusions that must not change a single bit: a batch norm with the ReLU that
alone reads its output fused into its kernels (forward and backward), in graph models."""

import numpy as np
import pytest

import cnncore
from cnncore import models, nn, optim
from cnncore.ops import norm as norm_ops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 5, 7, 9), (4, 3, 300), (6, 4)])
def test_batch_norm_kernels_with_relu_fused_are_bit_identical(dtype, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[3] = np.nan  # NaN passes through relu and its mask as in the separate ops
    x.flat[5] = -0.0
    c = shape[1]
    xr = x.reshape(shape[0], c, -1)
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    y, mean, var = norm_ops._batch_forward(xr, w, b, 1e-5)
    yf, mean_f, var_f = norm_ops._batch_forward(xr, w, b, 1e-5, relu=True)
    ref = cnncore.relu(y)
    np.testing.assert_array_equal(yf, ref)
    assert np.array_equal(np.signbit(yf), np.signbit(ref))
    np.testing.assert_array_equal(mean_f, mean)
    np.testing.assert_array_equal(var_f, var)
    g = rng.standard_normal(xr.shape).astype(dtype)
    gm = cnncore.relu_backward(g, ref)
    for sums in (None, (np.full(c, 0.5), np.full(c, -0.25), float(xr.size // c))):
        expect = norm_ops._batch_backward(gm, xr, w, mean, var, 1e-5, True, sums)
        got = norm_ops._batch_backward(g, xr, w, mean, var, 1e-5, True, sums, True, yf)
        for a, e in zip(got, expect, strict=True):
            np.testing.assert_array_equal(a, e)


def _block(dtype):
    inp = nn.Input((3, 6, 6))
    x = nn.Conv2d(3, 4, 3, padding=1, bias=False, dtype=dtype)(inp)
    x = nn.ReLU()(nn.BatchNorm2d(4, dtype=dtype)(x))  # fused
    y = nn.BatchNorm2d(4, dtype=dtype)(nn.Conv2d(4, 4, 3, padding=1, dtype=dtype)(x))
    z = nn.ReLU()(nn.Add()([x, y]))  # not a batch norm: in place (forward and backward)
    t = nn.BatchNorm2d(4, dtype=dtype)(z)
    u = nn.ReLU()(t)  # t is also read by the Concatenate: not fused
    cat = nn.Concatenate(dim=1)([u, t, z])  # z read twice: its gradient is a sum
    out = nn.Linear(12, 3, dtype=dtype)(nn.Flatten()(nn.GlobalAvgPool2d()(cat)))
    return nn.Model(inp, out)


def _copy(src, dst):
    """dst's parameters and buffers set to src's (the same architecture; layer names differ)."""
    for (_, a), (_, b) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        b.data[...] = a.data
    for (_, a), (_, b) in zip(src.named_buffers(), dst.named_buffers(), strict=True):
        b[...] = a


def _assert_same_state(a, b):
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(va, vb, err_msg=k)


def _run(model, x, g):
    out = model(x)
    model.zero_grad()
    dx = model.backward(g)
    return out, dx, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_fuses_only_a_batch_norm_read_by_one_relu(dtype, rng):
    model = _block(dtype)
    bns = [m for m in model.layers if isinstance(m, nn.BatchNorm2d)]
    relus = [m for m in model.layers if isinstance(m, nn.ReLU)]
    fused = [(model._steps[k][0], model._steps[j][0]) for k, j in model._relu_fusions.items()]
    assert fused == [(bns[0], relus[0])]
    in_place = [model._steps[j][0] for j in model._relu_in_place]
    assert in_place == [relus[1]]  # the ReLU after the Add
    ref = _block(dtype)
    _copy(model, ref)
    ref._relu_fusions, ref._relu_in_place = {}, set()  # the same model layer by layer
    x = rng.standard_normal((5, 3, 6, 6)).astype(dtype)
    g = rng.standard_normal((5, 3)).astype(dtype)
    for _ in range(2):
        a, b = _run(model, x, g), _run(ref, x, g)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        for ga, gb in zip(a[2], b[2], strict=True):
            np.testing.assert_array_equal(ga, gb)
        for (k, va), vb in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
            np.testing.assert_array_equal(va, vb, err_msg=k)


def test_fusion_is_skipped_when_a_layer_is_in_eval_mode(rng):
    """A batch norm in eval mode inside a training model runs unfused (with its running
    statistics), and the ReLU runs itself."""
    model, ref = _block(np.float64), _block(np.float64)
    _copy(model, ref)
    ref._relu_fusions, ref._relu_in_place = {}, set()
    for m in (model, ref):
        m.train()
        m.layers[1].eval()
    x = rng.standard_normal((4, 3, 6, 6))
    np.testing.assert_array_equal(model(x), ref(x))
    assert model._fwd[2] == set()


def test_resnet20_training_is_bit_identical_with_and_without_fusion(rng):
    model = models.resnet20(in_channels=1, input_size=12, rng=0)
    ref = models.resnet20(in_channels=1, input_size=12, rng=0)
    assert len(model._relu_fusions) == 10  # the stem and each block's first batch norm
    assert len(model._relu_in_place) == 9  # each block's last ReLU, after its Add
    ref._relu_fusions, ref._relu_in_place = {}, set()
    x = rng.random((16, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    kw = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=8, verbose=0, seed=3)
    ha = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **kw)
    hb = ref.fit(x, y, optimizer=optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), **kw)
    assert ha["loss"] == hb["loss"]
    _assert_same_state(model, ref)


# --------------------------------------------------------------------------------------------
# Sequential: a ReLU fused into the MaxPool2d after it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3)]
)
def test_max_pool_kernels_with_relu_fused_are_bit_identical(dtype, kw, rng):
    from cnncore.ops import pool as pool_ops

    x = rng.standard_normal((3, 4, 9, 9)).astype(dtype)
    x.flat[7] = np.nan
    x[:, :, 4:6, 4:6] = -0.0
    args = (kw["kernel_size"], kw.get("stride"), kw.get("padding", 0), 1, False)
    y, idx = cnncore.max_pool2d(x, *args, return_indices=True)
    yf, idxf = pool_ops._max_pool2d_relu(x, *args)
    ref = cnncore.relu(y)
    np.testing.assert_array_equal(yf, ref)
    assert np.array_equal(np.signbit(yf), np.signbit(ref))
    np.testing.assert_array_equal(idxf, idx)
    g = rng.standard_normal(y.shape).astype(dtype)
    g.flat[1] = -0.0
    expect = cnncore.max_pool2d_backward(cnncore.relu_backward(g, ref), idx, x.shape)
    got = pool_ops._max_pool2d_relu_backward(g, idx, x.shape, yf)
    np.testing.assert_array_equal(got, expect)
    assert np.array_equal(np.signbit(got), np.signbit(expect))
    with pytest.raises(ValueError, match="relu_output"):
        pool_ops._max_pool2d_relu_backward(g, idx, x.shape, yf[:1])


class _PlainReLU(nn.ReLU, register=False):
    """A ReLU that Sequential does not fuse (the fusion is for nn.ReLU itself; a subclass
    is not even moved behind the pool)."""


def _lenet(relu):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), relu(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), relu(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 32), relu(), nn.Linear(32, 10),
    )  # fmt: skip


def test_sequential_fuses_relu_into_max_pool_bit_identically(rng):
    model, ref = _lenet(nn.ReLU), _lenet(_PlainReLU)
    _copy(model, ref)
    x = rng.random((12, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 12)
    out = model(x)
    assert model._fused == {1, 4}  # the two ReLUs in front of a MaxPool2d
    ref(x)
    assert ref._fused == set()
    # a fused ReLU keeps the cache its own (swapped) forward would keep: the pooled output
    assert model.layers[1]._out is model.layers[2]._relu_out
    g = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(model.backward(g), ref.backward(g))
    kw = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=4, verbose=0, seed=5)
    ha = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), **kw)
    hb = ref.fit(x, y, optimizer=optim.SGD(ref.parameters(), lr=0.05, momentum=0.9), **kw)
    assert ha["loss"] == hb["loss"]
    _assert_same_state(model, ref)
