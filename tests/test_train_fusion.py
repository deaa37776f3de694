"""Training-path fusions that must not change a single bit: a batch norm with the ReLU that
alone reads its output fused into its kernels (forward and backward), and a batch norm with
the Add (and the ReLU after it) that alone reads its output, in graph models."""

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads, fd_grad

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
        got = norm_ops._batch_backward(g, xr, w, mean, var, 1e-5, True, sums, True, (w, b))
        for a, e in zip(got, expect, strict=True):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize(
    "shape",
    [(3, 4, 5, 5), (130, 3, 7, 7), (5, 2, 16, 16), (3, 2, 17, 17), (2, 3, 70, 70), (9, 5)],
)
def test_batch_norm_backward_recomputes_the_relu_mask_bit_for_bit(dtype, affine, shape, rng):
    """The fused backward masks g where the forward's ReLU output was <= 0, recomputing
    that output from x: on inputs whose normalized values sit at and around 0 (exact zeros,
    +-1 ulp, values whose product with the scale rounds to -bias) the mask equals the one
    read from the forward's output -- small planes, large planes, several chunks, planes
    cut into pieces, every weight/bias combination."""
    c = shape[1]
    n_el = int(np.prod(shape))
    x = rng.standard_normal(shape).astype(dtype)
    xr = x.reshape(shape[0], c, -1)
    w = rng.standard_normal(c).astype(dtype) if affine[0] else None
    b = (rng.standard_normal(c) * 0.3).astype(dtype) if affine[1] else None
    _, mean, var = norm_ops._batch_forward(xr, w, b, 1e-5)
    mean = mean.astype(dtype).astype(np.float64)  # exact in dtype: x == mean gives v == 0
    # place elements where the normalized value is (near) -bias / scale, i.e. the pre-ReLU
    # output is (near) zero: x = mean - bias * std / w, and its neighbours in ulps
    std = np.sqrt(var + 1e-5)
    scale = (w if w is not None else np.ones(c)) / std
    target = mean - (b if b is not None else np.zeros(c)) / scale
    k = rng.integers(0, n_el // c, size=(c, max(4, n_el // c // 3)))
    for ch in range(c):
        flat = xr[:, ch, :].reshape(-1)
        t = dtype(target[ch])
        for j, pos in enumerate(k[ch]):
            steps = int(j % 7) - 3
            v = t
            for _ in range(abs(steps)):
                v = np.nextafter(v, dtype(np.inf) if steps > 0 else dtype(-np.inf))
            flat[pos] = v
        xr[:, ch, :] = flat.reshape(xr.shape[0], -1)
    xr[: max(1, shape[0] // 5), :, :] = mean.astype(dtype)[:, None]  # exactly 0 (+ bias)
    x.flat[1] = np.nan
    # (with the statistics given, so that the placed values stay at the boundary)
    yf, mean, var = norm_ops._batch_forward(xr, w, b, 1e-5, mean, var, relu=True)
    y = norm_ops._batch_forward(xr, w, b, 1e-5, mean, var)[0]
    assert np.count_nonzero(y == 0) + np.count_nonzero(np.abs(y) < 1e-6) > n_el // 10
    if b is None:
        assert np.count_nonzero(y == 0) >= n_el // 6  # exact zeros: masked
    g = rng.standard_normal(xr.shape).astype(dtype)
    gm = cnncore.relu_backward(g, yf)
    for sums in (None, (np.full(c, 0.5), np.full(c, -0.25), float(xr.size // c))):
        for input_grad in (True, False):
            expect = norm_ops._batch_backward(gm, xr, w, mean, var, 1e-5, True, sums, input_grad)
            got = norm_ops._batch_backward(
                g, xr, w, mean, var, 1e-5, True, sums, input_grad, (w, b)
            )
            for a, e in zip(got, expect, strict=True):
                if e is None:
                    assert a is None
                else:
                    assert np.array_equal(a, e, equal_nan=True)
                    assert np.array_equal(np.signbit(a), np.signbit(e))


@pytest.mark.parametrize("level", ["avx512", "avx2", "baseline"])
def test_batch_norm_relu_mask_recompute_at_every_simd_level(level, rng):
    """The recomputed mask against the forward's output on each SIMD build of the norm
    kernels (FMA contraction differs between builds; within one it must agree)."""
    from cnncore import _config

    mod, got = _config.load_kernels("cnncore.ops._norm", level)
    if got != level:
        pytest.skip(f"no {level} build on this CPU (got {got})")
    shape = (64, 4, 28, 28)
    x = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    x[:, :, ::3] = 0.0
    n, c, el = shape[0], shape[1], shape[2] * shape[3]
    w = rng.standard_normal(c).astype(np.float32)
    b = (rng.standard_normal(c) * 0.05).astype(np.float32)
    for xs in (x, x[:, :, :7, :7].copy()):
        el = xs.shape[2] * xs.shape[3]
        flat = xs.reshape(-1)
        y = np.empty_like(flat)
        mean, var = np.empty(c), np.empty(c)
        mod.batch_norm_forward(flat, y, w, b, n, c, el, 1e-5, mean, var, False, 2, True)
        g = rng.standard_normal(flat.size).astype(np.float32)
        gm = np.where(y <= 0, np.float32(0), g)
        outs = []
        for gg, relu in ((gm, False), (g, True)):
            gx = np.empty_like(flat)
            sg, sgx = np.empty(c), np.empty(c)
            args = (gg, flat, gx, w, n, c, el, 1e-5, mean, var, sg, sgx, False, float(n * el))
            mod.batch_norm_backward(*args, True, 2, relu, w if relu else None, b if relu else None)
            outs.append((gx, sg, sgx))
        for a, e in zip(outs[1], outs[0], strict=True):
            np.testing.assert_array_equal(a, e)


def test_batch_norm_relu_mask_uses_the_forward_weights(rng):
    """Weights changed between forward and backward: the fused backward masks with the
    forward's weight and bias (as the ReLU's kept output would), the gradient uses the
    current weight (as the unfused batch norm does)."""
    x = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    g = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    fused, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    for bn in (fused, plain):
        bn.weight.data[...] = [0.5, -1.0, 2.0]
        bn.bias.data[...] = [0.1, 0.0, -0.3]
    y = fused._forward_relu(x)
    y_ref = cnncore.relu(plain.forward(x))
    np.testing.assert_array_equal(y, y_ref)
    for bn in (fused, plain):
        bn.weight.data[...] = [-2.0, 1.5, 0.25]
        bn.bias.data[...] = [3.0, -3.0, 0.0]
    got = fused.backward(g)
    expect = plain.backward(cnncore.relu_backward(g, y_ref))
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(fused.weight.grad, plain.weight.grad)
    np.testing.assert_array_equal(fused.bias.grad, plain.bias.grad)


def _unfuse(model):
    """The same model run layer by layer (every training fusion off)."""
    model._relu_fusions, model._relu_in_place, model._add_fusions = {}, set(), {}
    model._relu_sum_slots = set()


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
    _unfuse(ref)
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
    _unfuse(ref)
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
    # each block's second batch norm, with its Add and the ReLU after it
    assert len(model._add_fusions) == 9
    assert all(j is not None for _, j, _ in model._add_fusions.values())
    _unfuse(ref)
    x = rng.random((16, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    kw = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=8, verbose=0, seed=3)
    ha = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **kw)
    hb = ref.fit(x, y, optimizer=optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), **kw)
    assert ha["loss"] == hb["loss"]
    _assert_same_state(model, ref)


# --------------------------------------------------------------------------------------------
# Graph models: a batch norm with the Add (and the ReLU after it) that alone reads its output
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(8, 5, 7, 9), (4, 3, 300), (2, 2, 5000), (6, 4), (3, 16, 28, 28)]
)
def test_batch_norm_kernel_with_residual_fused_is_bit_identical(dtype, shape, rng):
    """bn(x) + r and relu(bn(x) + r) in the batch norm's pass: the same bits as batch norm,
    Add and ReLU one after the other, for every work split (planes of <= 256 elements in
    memory order, a task per channel, (channel, chunk) tasks, pieces of long planes) and
    any thread count."""
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[3] = np.nan
    c = shape[1]
    xr = x.reshape(shape[0], c, -1)
    r = rng.standard_normal(xr.shape).astype(dtype)
    r.flat[7] = np.inf
    r.flat[9] = -np.inf
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    y, mean, var = norm_ops._batch_forward(xr, w, b, 1e-5)
    r.flat[11] = -y.flat[11]  # an exact zero sum (+0.0 from the add)
    expect_add = y + r
    expect_relu = cnncore.relu(expect_add)
    stats = (mean.copy(), var.copy())
    kernel = norm_ops._norm.batch_norm_forward
    for relu, expect in ((False, expect_add), (True, expect_relu)):
        got, mean_f, var_f = norm_ops._batch_forward(xr, w, b, 1e-5, relu=relu, residual=r)
        np.testing.assert_array_equal(got, expect)
        assert np.array_equal(np.signbit(got), np.signbit(expect))
        np.testing.assert_array_equal(mean_f, mean)
        np.testing.assert_array_equal(var_f, var)
        for given in (False, True):
            for n_threads in (1, 2, 3, 5):
                out = np.empty_like(xr)
                m, v = (stats[0].copy(), stats[1].copy()) if given else (np.empty(c), np.empty(c))
                kernel(
                    xr.reshape(-1), out.reshape(-1), w, b, *xr.shape, 1e-5, m, v, given,
                    n_threads, relu, r.reshape(-1),
                )  # fmt: skip
                assert out.tobytes() == expect.tobytes(), (relu, given, n_threads)
    with pytest.raises(ValueError, match="residual"):
        kernel(
            xr.reshape(-1), np.empty(xr.size, dtype), w, b, *xr.shape, 1e-5, np.empty(c),
            np.empty(c), False, 1, True, r.reshape(-1)[1:],
        )  # fmt: skip


def _residual_graph(dtype, order=0, relu=True, late=False):
    """A batch norm read only by an Add; the Add's other input (the residual ``x``) is also
    read by the conv of the branch and by a Concatenate (consumed three times: in place on
    it would be wrong); ``order``: the batch norm is the Add's input 0 or 1; ``relu``: a
    ReLU alone reads the Add's output (else the Add's output is read twice); ``late``: the
    residual is computed after the batch norm (not fusable)."""
    inp = nn.Input((3, 6, 6))
    x = nn.ReLU()(nn.Conv2d(3, 4, 3, padding=1, dtype=dtype)(inp))
    y = nn.BatchNorm2d(4, dtype=dtype)(nn.Conv2d(4, 4, 3, padding=1, bias=False, dtype=dtype)(x))
    res = nn.Conv2d(4, 4, 1, dtype=dtype)(x) if late else x
    z = nn.Add()([y, res] if order == 0 else [res, y])
    if relu:
        z = nn.ReLU()(z)
        cat = nn.Concatenate(dim=1)([z, x])
    else:
        cat = nn.Concatenate(dim=1)([z, x, nn.Multiply()([z, z])])
    out = nn.Linear(cat.shape[1], 3, dtype=dtype)(nn.Flatten()(nn.GlobalAvgPool2d()(cat)))
    return nn.Model(inp, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("relu", [True, False])
def test_graph_fuses_batch_norm_add_relu_bit_identically(dtype, order, relu, rng):
    model, ref = _residual_graph(dtype, order, relu), _residual_graph(dtype, order, relu)
    _copy(model, ref)
    _unfuse(ref)
    ((k, (a, j, r)),) = model._add_fusions.items()
    assert isinstance(model._steps[k][0], nn.BatchNorm2d)
    assert isinstance(model._steps[a][0], nn.Add)
    assert (j is not None) == relu
    if relu:
        assert isinstance(model._steps[j][0], nn.ReLU)
    x = rng.standard_normal((5, 3, 6, 6)).astype(dtype)
    g = rng.standard_normal((5, 3)).astype(dtype)
    for _ in range(2):
        a_, b_ = _run(model, x, g), _run(ref, x, g)
        np.testing.assert_array_equal(a_[0], b_[0])
        np.testing.assert_array_equal(a_[1], b_[1])
        for ga, gb in zip(a_[2], b_[2], strict=True):
            np.testing.assert_array_equal(ga, gb)
        _assert_same_state(model, ref)
    # the ReLU keeps its output (the fused array) for its backward; the batch norm no mask
    bn = model._steps[k][0]
    assert bn._relu_coef is None
    if relu:
        assert model._steps[j][0]._out is not None


def test_graph_batch_norm_add_fusion_is_bit_identical_for_any_thread_count(rng):
    model = models.resnet20(in_channels=1, input_size=12, rng=0)
    x = rng.random((8, 1, 12, 12), dtype=np.float32)
    g = rng.standard_normal((8, 10)).astype(np.float32)

    def compute():
        out, dx, grads = _run(model, x, g)
        return [out, dx, *grads]

    assert_bit_identical_across_threads(compute, (1, 2, 3, 2))


def test_graph_add_fusion_is_skipped_where_it_would_be_wrong(rng):
    """Not fused: a residual computed after the batch norm, an Add reading the batch norm
    twice, a batch norm read by another layer too, a model output, a shared Add."""
    assert _residual_graph(np.float64, late=True)._add_fusions == {}
    inp = nn.Input((2, 4, 4))
    bn = nn.BatchNorm2d(2)(inp)
    assert nn.Model(inp, nn.Add()([bn, bn]))._add_fusions == {}
    assert nn.Model(inp, [nn.Add()([bn, inp]), bn])._add_fusions == {}
    assert nn.Model(inp, nn.Concatenate()([nn.Add()([bn, inp]), nn.ReLU()(bn)]))._add_fusions == {}
    add = nn.Add()
    s1 = add([bn, inp])
    assert nn.Model(inp, add([s1, inp]))._add_fusions == {}
    # fused: the input is the residual (ready), the Add's output is a model output (no ReLU)
    model = nn.Model(inp, nn.Add()([bn, inp]))
    assert list(model._add_fusions.values()) == [(1, None, 0)]
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    ref = nn.Model(inp, nn.Add()([nn.BatchNorm2d(2)(inp), inp]))
    _unfuse(ref)
    np.testing.assert_array_equal(model(x), ref(x))


def test_batch_norm_forward_add_refuses_mismatched_residuals(rng):
    """``_forward_add`` does nothing (None: the graph runs the layers one by one) for a
    residual of another dtype or shape, or not C-contiguous."""
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    x = rng.standard_normal((3, 2, 4, 4))
    for r in (x.astype(np.float32), x[:, :, :2], np.asfortranarray(x), x.tolist()):
        assert bn._forward_add(x, r, True) is None
    assert int(bn.state_dict()["num_batches_tracked"]) == 0  # nothing ran
    ref = nn.BatchNorm2d(2, dtype=np.float64)
    np.testing.assert_array_equal(bn._forward_add(x, x, False), ref.forward(x) + x)
    _assert_same_state(bn, ref)


def test_graph_add_fusion_gradients_match_finite_differences_and_torch(rng):
    torch = pytest.importorskip("torch")
    model = _residual_graph(np.float64, order=1, relu=True)
    assert model._add_fusions
    x = rng.standard_normal((4, 3, 6, 6))
    g = rng.standard_normal((4, 3))
    out, dx, grads = _run(model, x, g)

    def f():
        return float(np.sum(model(x) * g))

    np.testing.assert_allclose(dx, fd_grad(f, x), rtol=1e-6, atol=1e-8)
    for p, gp in zip(model.parameters(), grads, strict=True):
        np.testing.assert_allclose(gp, fd_grad(f, p.data), rtol=1e-6, atol=1e-8)
    # torch autograd on the same architecture: conv+ReLU, conv+BN, ReLU(x + bn), concat
    (bn,) = [m for m in model.layers if isinstance(m, nn.BatchNorm2d)]
    t = {n: torch.tensor(p.data, requires_grad=True) for n, p in model.named_parameters()}
    names = [n for n, _ in model.named_parameters()]
    tx = torch.tensor(x, requires_grad=True)
    F = torch.nn.functional
    h = F.relu(F.conv2d(tx, t[names[0]], t[names[1]], padding=1))
    yb = F.batch_norm(
        F.conv2d(h, t[names[2]], padding=1),
        None,
        None,
        t[names[3]],
        t[names[4]],
        True,
        0.1,
        bn.eps,
    )
    z = F.relu(h + yb)
    cat = torch.cat([z, h], dim=1).mean(dim=(2, 3))
    tout = F.linear(cat, t[names[5]], t[names[6]])
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for n, gp in zip(names, grads, strict=True):
        np.testing.assert_allclose(gp, t[n].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf + -inf in NumPy
def test_merge_kernels_are_bit_identical_to_numpy_and_relu_backward(dtype, rng):
    from cnncore.nn import merge

    for n in (5, 7, 16384, 16385, 70001):
        a = rng.standard_normal(n).astype(dtype)
        b = rng.standard_normal(n).astype(dtype)
        y = rng.standard_normal(n).astype(dtype)
        a[:3] = [np.nan, np.inf, -0.0]
        b[:3] = [1.0, -np.inf, -0.0]
        y[:5] = [np.nan, 1.0, 1.0, 0.0, -0.0]
        expect = a + b
        got = merge.add_arrays(a, b)
        assert got.tobytes() == expect.tobytes()
        masked = cnncore.relu_backward(expect, y)
        assert merge.add_relu_backward(a, b, y).tobytes() == masked.tobytes()
        c = a.copy()
        assert merge.add_relu_backward(c, b, y, out=c) is c
        assert c.tobytes() == masked.tobytes()
        c = b.copy()
        merge.add_arrays(a, c, out=c)
        assert c.tobytes() == expect.tobytes()
        # other layouts and dtypes: NumPy's (and relu_backward's) results
        f = np.asfortranarray(np.stack([a, a]))
        assert merge.add_arrays(f, f).tobytes() == (f + f).tobytes()
        assert merge.add_arrays(a, b.astype(np.float16)).dtype == dtype
    with pytest.raises(ValueError, match="one size"):
        merge._merge.add(a, b[1:], a, 1)
    relu = nn.ReLU()
    out = relu(a.reshape(1, -1))
    expect = relu.backward(a.reshape(1, -1) + b.reshape(1, -1))
    got = relu.backward_sum(a.reshape(1, -1), b.reshape(1, -1))
    assert got.tobytes() == expect.tobytes() and out.shape == got.shape


def _three_consumers(dtype):
    """A ReLU after an Add whose output three layers read (its gradient a sum of three:
    the last addition and the ReLU's mask in one pass), one of them a Concatenate (its
    gradient a non-contiguous slice)."""
    inp = nn.Input((3, 6, 6))
    x = nn.Conv2d(3, 4, 3, padding=1, dtype=dtype)(inp)
    z = nn.ReLU()(nn.Add()([x, nn.Conv2d(4, 4, 3, padding=1, dtype=dtype)(x)]))
    a = nn.Conv2d(4, 4, 1, dtype=dtype)(z)
    b = nn.Conv2d(4, 4, 3, padding=1, dtype=dtype)(z)
    cat = nn.Concatenate(dim=1)([a, b, z])
    out = nn.Linear(12, 3, dtype=dtype)(nn.Flatten()(nn.GlobalAvgPool2d()(cat)))
    return nn.Model(inp, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_relu_gradient_sum_and_mask_in_one_pass_is_bit_identical(dtype, rng):
    model, ref = _three_consumers(dtype), _three_consumers(dtype)
    _copy(model, ref)
    _unfuse(ref)
    assert len(model._relu_sum_slots) == 1
    x = rng.standard_normal((5, 3, 6, 6)).astype(dtype)
    g = rng.standard_normal((5, 3)).astype(dtype)
    for _ in range(2):
        a_, b_ = _run(model, x, g), _run(ref, x, g)
        np.testing.assert_array_equal(a_[1], b_[1])
        for ga, gb in zip(a_[2], b_[2], strict=True):
            np.testing.assert_array_equal(ga, gb)
    # without the input gradient the first conv still gets its weight gradient
    model.zero_grad()
    ref.zero_grad()
    model(x)
    ref(x)
    assert model.backward(g, input_grad=False) is None
    ref.backward(g, input_grad=False)
    for pa, pb in zip(model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_equal(pa.grad, pb.grad)

    def compute():
        out, dx, grads = _run(model, x, g)
        return [out, dx, *grads]

    assert_bit_identical_across_threads(compute, (1, 2, 3))


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


# ------------------------------------------------------------------------------------------
# Conv2d (one input channel) -> ReLU -> MaxPool2d(2) as one kernel in training
# ------------------------------------------------------------------------------------------


def _conv_pool_reference(x, w, b, padding):
    """The unfused calls the fused kernel must match bit for bit: the row-vectorized conv2d,
    then the ReLU-fused max pooling (values and argmax)."""
    from cnncore.ops import pool as pool_ops

    with cnncore.conv_algorithm("rows"):
        conv = cnncore.conv2d(x, w, b, padding=padding)
    return pool_ops._max_pool2d_relu(conv, 2, None, 0, 1, False), conv


# float32 only: the blocked and rows kernels (float64 runs GEMM: test_conv_float64.py)
@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize(
    "case",
    [
        ((4, 1, 28, 28), (32, 1, 3, 3), 1, True),  # the README CNN's first layer
        ((3, 1, 28, 28), (6, 1, 5, 5), 2, True),  # LeNet-5's
        ((2, 1, 9, 13), (7, 1, 3, 5), 0, False),  # odd sizes: the last row/column dropped
        ((2, 1, 6, 40), (3, 1, 3, 3), "same", True),  # wide rows (two vectors)
        ((3, 1, 5, 5), (1, 1, 2, 2), 0, True),  # narrow: the scalar pooling rows
    ],
)
def test_conv_relu_pool_kernel_is_bit_identical_to_the_calls(dtype, case, rng):
    from cnncore.ops import conv as conv_ops

    x_shape, w_shape, padding, bias = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x[0, 0, :3, :3] = -0.0  # zero windows: the sign ReLU-then-pool gives
    x[-1, 0, 1, 2] = np.nan  # a plane with a NaN: the exact scan
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    (ref_y, ref_idx), conv = _conv_pool_reference(x, w, b, padding)
    y, idx, conv_shape = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, padding, 1, 1)
    assert conv_shape == conv.shape
    assert y.dtype == dtype and idx.dtype == np.int64
    assert y.tobytes() == ref_y.tobytes()
    np.testing.assert_array_equal(idx, ref_idx)
    assert np.isnan(y[-1]).any()  # the NaN reached the output
    # and against the NumPy reference of the three ops (float64: to rounding)
    from reference import conv2d_ref

    c = np.maximum(conv2d_ref(x.astype(np.float64), w, b, padding=padding), 0)
    n, k, ho, wo = c.shape
    c = c[:, :, : ho // 2 * 2, : wo // 2 * 2].reshape(n, k, ho // 2, 2, wo // 2, 2)
    ref = c.max(axis=(3, 5))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    ok = ~np.isnan(y)
    np.testing.assert_allclose(y[ok], ref[ok], rtol=tol, atol=tol)


def test_conv_relu_pool_kernel_is_bit_identical_for_any_thread_count(rng):
    from cnncore.ops import conv as conv_ops

    x = rng.standard_normal((7, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    assert_bit_identical_across_threads(
        lambda: conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, 1, 1, 1)[:2], counts=(1, 2, 3, 4)
    )


# float32 only: the blocked and rows kernels (float64 runs GEMM: test_conv_float64.py)
@pytest.mark.parametrize("dtype", [np.float32])
@pytest.mark.parametrize(
    "case",
    [
        ((13, 1, 28, 28), (32, 1, 3, 3), 1, True),  # uneven batch parts
        ((3, 1, 28, 28), (6, 1, 5, 5), 2, True),
        ((2, 1, 9, 13), (7, 1, 3, 5), 0, False),
        ((9, 1, 6, 40), (3, 1, 3, 3), "same", True),
    ],
)
def test_conv_relu_pool_backward_kernel_is_bit_identical_to_the_calls(dtype, case, rng):
    from cnncore.ops import conv as conv_ops
    from cnncore.ops import pool as pool_ops

    x_shape, w_shape, padding, bias = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    y, idx, conv_shape = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, padding, 1, 1)
    g = rng.standard_normal(y.shape).astype(dtype)
    g.flat[::7] = -0.0
    dw, db = conv_ops._conv2d_relu_max_pool2d_backward(
        g, idx, y, x, w.shape, 1, padding, 1, 1, bias
    )
    dconv = pool_ops._max_pool2d_relu_backward(g, idx, conv_shape, y)
    with cnncore.conv_algorithm("rows"):
        _, ref_dw, ref_db = cnncore.conv2d_backward(
            dconv, x, w, padding=padding, output_mask=(False, True, bias)
        )
    assert dw.tobytes() == ref_dw.tobytes()
    if bias:
        assert db.tobytes() == ref_db.tobytes()
        assert db.tobytes() == cnncore.conv2d_backward_bias(dconv).tobytes()
    else:
        assert db is None
    # an input holding an Inf: the masked lanes (the kernel's non-finite path), same bits
    x[0, 0, 0, 0] = np.inf
    y, idx, _ = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, padding, 1, 1)
    dw, _ = conv_ops._conv2d_relu_max_pool2d_backward(g, idx, y, x, w.shape, 1, padding, 1, 1, 0)
    dconv = pool_ops._max_pool2d_relu_backward(g, idx, conv_shape, y)
    with cnncore.conv_algorithm("rows"):
        ref_dw = cnncore.conv2d_backward_weight(dconv, x, w.shape, padding=padding)
    assert dw.tobytes() == ref_dw.tobytes()


def test_conv_relu_pool_backward_kernel_any_thread_count_and_bad_indices(rng):
    from cnncore.ops import conv as conv_ops

    x = rng.standard_normal((11, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    y, idx, _ = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, 1, 1, 1)
    g = rng.standard_normal(y.shape).astype(np.float32)
    args = (g, idx, y, x, w.shape, 1, 1, 1, 1, True)
    assert_bit_identical_across_threads(
        lambda: conv_ops._conv2d_relu_max_pool2d_backward(*args), counts=(1, 2, 3, 4)
    )
    bad = idx.copy()
    bad[3, 4, 5, 6] = 28 * 28  # outside the plane: refused, never a write out of bounds
    y[3, 4, 5, 6] = 1.0
    with pytest.raises(ValueError, match="indices"):
        conv_ops._conv2d_relu_max_pool2d_backward(g, bad, y, x, w.shape, 1, 1, 1, 1, True)
    bad[3, 4, 5, 6] = 3  # inside the plane, outside its window: the generic scatter
    got = conv_ops._conv2d_relu_max_pool2d_backward(g, bad, y, x, w.shape, 1, 1, 1, 1, True)
    from cnncore.ops import pool as pool_ops

    dconv = pool_ops._max_pool2d_relu_backward(g, bad, (11, 32, 28, 28), y)
    with cnncore.conv_algorithm("rows"):
        _, ref_dw, ref_db = cnncore.conv2d_backward(dconv, x, w, padding=1)
    assert got[0].tobytes() == ref_dw.tobytes() and got[1].tobytes() == ref_db.tobytes()
    with pytest.raises(ValueError, match="pooled shape"):
        conv_ops._conv2d_relu_max_pool2d_backward(g[:2], idx, y, x, w.shape, 1, 1, 1, 1, True)


def test_conv_relu_pool_fusion_applies_only_where_it_may(rng):
    from cnncore.ops import conv as conv_ops

    x1 = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    x2 = rng.standard_normal((2, 2, 12, 12)).astype(np.float32)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    f = conv_ops._conv2d_relu_max_pool2d
    assert f(x1, w1, None, 1, 1, 1, 1) is not None
    assert f(x2, w2, None, 1, 1, 1, 1) is None  # two input channels
    assert f(x1, w1, None, 2, 1, 1, 1) is None  # strided
    assert f(x1, w1, None, 1, 1, 2, 1) is None  # dilated
    with cnncore.conv_algorithm("gemm"):  # another algorithm forced
        assert f(x1, w1, None, 1, 1, 1, 1) is None
    with cnncore.conv_algorithm("rows"):
        assert f(x1, w1, None, 1, 1, 1, 1) is not None
    with pytest.raises(ValueError, match="channels"):  # still the conv2d checks
        f(x2, w1, None, 1, 1, 1, 1)


def _first_layer_model(relu, pool, c_out=8, k=3, padding=1, dtype=np.float32, size=12, **conv_kw):
    return nn.Sequential(
        nn.Conv2d(1, c_out, k, padding=padding, dtype=dtype, **conv_kw), relu(), pool,
        nn.Conv2d(c_out, 4, 3, padding=1, dtype=dtype), relu(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * (size // 4) ** 2, 10, dtype=dtype),
    )  # fmt: skip


# float32 only: the blocked and rows kernels (float64 runs GEMM: test_conv_float64.py)
@pytest.mark.parametrize("dtype", [np.float32])
def test_sequential_fuses_conv_relu_pool_bit_identically(dtype, rng):
    """Forward, gradients and two epochs of fit: bit-identical to the layers run one by one
    (the conv on the row-vectorized kernel)."""
    model = _first_layer_model(nn.ReLU, nn.MaxPool2d(2), dtype=dtype)
    ref = _first_layer_model(_PlainReLU, nn.MaxPool2d(2), dtype=dtype)
    _copy(model, ref)
    x = rng.random((10, 1, 12, 12)).astype(dtype)
    y = rng.integers(0, 10, 10)
    out = model(x)
    assert model._fused == {1, 4}
    assert model.layers[1]._out is model.layers[2]._relu_out
    assert model.layers[2]._input_shape == (10, 8, 12, 12)
    with cnncore.conv_algorithm("rows"):
        ref_out = ref(x)
    assert out.tobytes() == ref_out.tobytes()
    g = rng.standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    ref.zero_grad()
    np.testing.assert_array_equal(model.backward(g), ref.backward(g))
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.grad.tobytes() == q.grad.tobytes()
    # training's backward (no input gradient): the fused parameter gradients
    model.zero_grad()
    ref.zero_grad()
    calls = []
    fused_backward = model.layers[0]._backward_relu_pool
    model.layers[0]._backward_relu_pool = lambda *a: calls.append(1) or fused_backward(*a)
    with cnncore.conv_algorithm("rows"):  # (every pass of both models' convs)
        assert model.backward(g, input_grad=False) is None
        ref.backward(g, input_grad=False)
    assert calls == [1]
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.grad.tobytes() == q.grad.tobytes()
    del model.layers[0]._backward_relu_pool
    # fit, where the first conv's forward runs on the row-vectorized kernel anyway (LeNet's
    # first layer: 6 channels, 5x5; conv_algorithm would force every pass of every conv)
    model = _first_layer_model(nn.ReLU, nn.MaxPool2d(2), 6, 5, 2, dtype, size=28)
    ref = _first_layer_model(_PlainReLU, nn.MaxPool2d(2), 6, 5, 2, dtype, size=28)
    _copy(model, ref)
    assert (
        cnncore.ops.conv.conv2d_algorithms((4, 1, 28, 28), (6, 1, 5, 5), padding=2)["forward"]
        == "rows"
    )
    x = rng.random((10, 1, 28, 28)).astype(dtype)
    kw = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=4, verbose=0, seed=5)
    ha = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), **kw)
    hb = ref.fit(x, y, optimizer=optim.SGD(ref.parameters(), lr=0.05, momentum=0.9), **kw)
    assert model._fused == {1, 4} and ref._fused == set()
    assert ha["loss"] == hb["loss"]
    _assert_same_state(model, ref)


def test_sequential_conv_relu_pool_fusion_is_skipped_where_it_does_not_apply(rng):
    x = rng.random((4, 1, 12, 12)).astype(np.float32)
    x2 = rng.random((4, 2, 12, 12)).astype(np.float32)
    cases = [
        (nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(3, 1, 1), x),  # not 2x2 / stride 2
        (nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True), x),
        (nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect"), nn.MaxPool2d(2), x),
        (nn.Conv2d(1, 3, 3, dilation=2, padding=2), nn.MaxPool2d(2), x),
        (nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), x2),  # two input channels
    ]
    for conv, pool, inp in cases:
        model = nn.Sequential(conv, nn.ReLU(), pool)
        ref = nn.Sequential(conv, _PlainReLU(), pool)
        out = model(inp)
        assert model._fused == {1}  # the ReLU into the pool only, as before
        assert model.layers[2]._input_shape == conv.output_shape(inp.shape)
        np.testing.assert_array_equal(out, ref(inp))
    # a fused layer in eval mode: no fusion (and the eval forward keeps no cache)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model.layers[1].eval()
    model(x)
    assert 1 not in model._fused


def test_conv_relu_pool_fusion_gradients_match_finite_differences_and_torch(rng):
    torch = pytest.importorskip("torch")
    model = _first_layer_model(nn.ReLU, nn.MaxPool2d(2), c_out=3, dtype=np.float64)
    x = rng.standard_normal((2, 1, 12, 12))
    g = rng.standard_normal((2, 10))
    w = model.layers[0].weight.data

    def loss():
        return float((model(x) * g).sum())

    model.zero_grad()
    model(x)
    assert 1 in model._fused
    model.backward(g, input_grad=False)
    np.testing.assert_allclose(model.layers[0].weight.grad, fd_grad(loss, w), rtol=1e-6, atol=1e-8)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(36, 10),
    ).double()  # fmt: skip
    with torch.no_grad():
        for (_, a), (_, b) in zip(model.named_parameters(), tm.named_parameters(), strict=True):
            b.copy_(torch.from_numpy(a.data))
    model.zero_grad()
    out = model(x)
    model.backward(g, input_grad=False)
    tx = torch.from_numpy(x)
    tout = tm(tx)
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for p, (_, tp) in zip(model.parameters(), tm.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------------------
# Conv2d (3x3, Winograd F(4x4)) -> ReLU -> MaxPool2d(2) in one kernel in training (float32)
# ------------------------------------------------------------------------------------------


def _wino_pool_reference(x, w, b, padding):
    """The unfused calls the Winograd-fused kernel must match bit for bit: conv2d on F(4x4),
    then the ReLU-fused max pooling (values and argmax)."""
    from cnncore.ops import pool as pool_ops

    with cnncore.conv_algorithm("winograd4"):
        conv = cnncore.conv2d(x, w, b, padding=padding)
    return pool_ops._max_pool2d_relu(conv, 2, None, 0, 1, False), conv


_WINO_POOL_CASES = [
    ((4, 32, 14, 14), (64, 32, 3, 3), 1, True),  # the README CNN's second layer
    ((3, 16, 9, 11), (16, 16, 3, 3), 1, True),  # odd planes: the last row/column dropped
    ((2, 8, 13, 10), (5, 8, 3, 3), 0, False),  # partial tiles, no padding, no bias
    ((2, 4, 7, 6), (3, 4, 3, 3), 2, True),  # padding 2
    ((1, 64, 70, 66), (16, 64, 3, 3), 1, True),  # bands of tile rows (several per plane)
]


@pytest.mark.parametrize("case", _WINO_POOL_CASES)
def test_winograd_conv_relu_pool_kernel_is_bit_identical_to_the_calls(case, rng):
    from cnncore.ops import conv as conv_ops

    x_shape, w_shape, padding, bias = case
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[0, :, :6, :6] = 0.0  # zero windows (no bias: +-0 conv outputs), ReLU-then-pool's sign
    x[-1, :, 2, :3] = 3e38  # finite inputs whose products overflow: Inf and NaN outputs
    w = rng.standard_normal(w_shape).astype(np.float32)
    w[:, :, 0, 0] = np.abs(w[:, :, 0, 0]) + 1
    w[1::2, :, 2, 2] = -np.abs(w[1::2, :, 2, 2]) - 1
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    (ref_y, ref_idx), conv = _wino_pool_reference(x, w, b, padding)
    assert not np.isfinite(conv).all()  # the exact scan of a plane with a NaN is exercised
    with cnncore.conv_algorithm("winograd4"):
        y, idx, conv_shape = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, padding, 1, 1)
    assert conv_shape == conv.shape
    assert y.dtype == np.float32 and idx.dtype == np.int64
    assert y.tobytes() == ref_y.tobytes()
    np.testing.assert_array_equal(idx, ref_idx)
    # finite data: against the NumPy reference of the three ops
    from reference import conv2d_ref

    x = rng.standard_normal(x_shape).astype(np.float32)
    with cnncore.conv_algorithm("winograd4"):
        y, idx, _ = conv_ops._conv2d_relu_max_pool2d(x, w, b, 1, padding, 1, 1)
    c = np.maximum(conv2d_ref(x.astype(np.float64), w, b, padding=padding), 0)
    n, k, ho, wo = c.shape
    c = c[:, :, : ho // 2 * 2, : wo // 2 * 2].reshape(n, k, ho // 2, 2, wo // 2, 2)
    tol = 2e-5 * np.abs(c).max()  # (F(4x4)'s float32 error grows with the magnitudes)
    np.testing.assert_allclose(y, c.max(axis=(3, 5)), rtol=1e-4, atol=tol)
    flat = conv2d_ref(x.astype(np.float64), w, b, padding=padding).reshape(n, k, -1)
    np.testing.assert_allclose(
        np.maximum(np.take_along_axis(flat, idx.reshape(n, k, -1), 2), 0).reshape(y.shape),
        y,
        rtol=1e-4,
        atol=tol,
    )


def test_winograd_conv_relu_pool_kernel_any_thread_count_and_fallbacks(rng):
    from cnncore.ops import conv as conv_ops

    x = rng.standard_normal((7, 32, 14, 14)).astype(np.float32)
    w = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    f = conv_ops._conv2d_relu_max_pool2d
    with cnncore.conv_algorithm("winograd4"):
        assert_bit_identical_across_threads(lambda: f(x, w, b, 1, 1, 1, 1)[:2], counts=(1, 2, 3, 4))
        # an input or a weight that is not finite: conv2d runs GEMM, so nothing fused
        xi = x.copy()
        xi[3, 5, 6, 7] = np.inf
        assert f(xi, w, b, 1, 1, 1, 1) is None
        wn = w.copy()
        wn[1, 2, 0, 0] = np.nan
        assert f(x, wn, b, 1, 1, 1, 1) is None
        # float64: the separate calls (the fused kernels are float32 only)
        x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
        assert f(x64, w64, b64, 1, 1, 1, 1) is None
        assert f(x, w, b, 2, 1, 1, 1) is None  # strided
        assert f(x, w[:, :, :2, :2], b, 1, 1, 1, 1) is None  # not 3x3
    with cnncore.conv_algorithm("blocked"):  # another algorithm: the separate calls
        assert f(x, w, b, 1, 1, 1, 1) is None
    # the kernel entry point checks its shapes itself
    from cnncore.ops.conv import _conv

    y = np.empty((7, 64, 7, 7), np.float32)
    idx = np.empty(y.shape, np.int64)
    y6 = np.empty((7, 64, 6, 7), np.float32)
    with pytest.raises(ValueError, match="y_out"):
        _conv.conv2d_relu_maxpool2x2_forward_winograd4(x, w, b, y6, idx, 1, 1, 14, 14, 1)
    with pytest.raises(ValueError, match="y_out"):
        _conv.conv2d_relu_maxpool2x2_forward_winograd4(x, w, b, y, idx, 1, 1, 16, 16, 1)
    w16 = w[:, :16].copy()
    with pytest.raises(ValueError, match="weight"):
        _conv.conv2d_relu_maxpool2x2_forward_winograd4(x, w16, b, y, idx, 1, 1, 14, 14, 1)


def _cnn_model(relu, dtype=np.float32, relu1=None):
    """The README CNN's convolutions: conv1-ReLU-pool-conv2-ReLU-pool-Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, dtype=dtype), (relu1 or relu)(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, dtype=dtype), relu(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 10, dtype=dtype),
    )  # fmt: skip


def _conv2_runs_winograd4(n, monkeypatch):
    from cnncore.ops import conv_dispatch
    from cnncore.ops.conv import conv2d_algorithms

    # These small test batches are under the AVX-512 small-batch rule (blocked instead of
    # F(4x4) below 4096 output pixels), which would leave the fused Winograd path untested.
    monkeypatch.setattr(conv_dispatch, "_WINOGRAD4_FWD_MIN_BATCH_PIXELS", 0)
    monkeypatch.setattr(conv_dispatch, "_heuristic_memo", {})
    algos = conv2d_algorithms((n, 32, 14, 14), (64, 32, 3, 3), padding=1)
    if algos["forward"] != "winograd4":
        pytest.skip(f"conv2's forward runs {algos['forward']} at this SIMD level")


def test_sequential_fuses_the_winograd_conv_relu_pool_bit_identically(rng, monkeypatch):
    """The second conv (3x3, F(4x4) forward by the default choice): forward, gradients and
    two epochs of fit bit-identical to the layers run one by one (the first conv unfused in
    both: fused, it runs the row kernel, which the separate conv2d does not choose)."""
    from cnncore.ops import conv as conv_ops

    _conv2_runs_winograd4(4, monkeypatch)
    calls = []
    kernel = conv_ops._conv.conv2d_relu_maxpool2x2_forward_winograd4

    def counted(*a):
        calls.append(a[0].shape)
        return kernel(*a)

    monkeypatch.setattr(conv_ops._conv, "conv2d_relu_maxpool2x2_forward_winograd4", counted)
    model, ref = _cnn_model(nn.ReLU, relu1=_PlainReLU), _cnn_model(_PlainReLU)
    _copy(model, ref)
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    out = model(x)
    assert calls == [(8, 32, 14, 14)]
    assert model._fused == {4} and model._conv_pool == {5: 3}
    assert model.layers[4]._out is model.layers[5]._relu_out
    assert model.layers[5]._input_shape == (8, 64, 14, 14)
    ref_out = ref(x)
    assert out.tobytes() == ref_out.tobytes()
    g = rng.standard_normal(out.shape).astype(np.float32)
    for input_grad in (True, False):
        model.zero_grad()
        ref.zero_grad()
        da, db = model.backward(g, input_grad), ref.backward(g, input_grad)
        if input_grad:
            assert da.tobytes() == db.tobytes()
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            assert p.grad.tobytes() == q.grad.tobytes()
    kw = dict(loss=nn.CrossEntropyLoss(), epochs=2, batch_size=4, verbose=0, seed=5)
    ha = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9), **kw)
    hb = ref.fit(x, y, optimizer=optim.SGD(ref.parameters(), lr=0.05, momentum=0.9), **kw)
    assert len(calls) > 1 and ref._fused == set()
    assert ha["loss"] == hb["loss"]
    _assert_same_state(model, ref)
    # float64: both convs run the separate calls (the fused kernels are float32-only)
    calls.clear()
    model64 = _cnn_model(nn.ReLU, np.float64)
    model64(x.astype(np.float64))
    assert calls == [] and model64._conv_pool == {}


def test_sequential_winograd_conv_relu_pool_is_bit_identical_for_any_thread_count(rng, monkeypatch):
    _conv2_runs_winograd4(6, monkeypatch)
    model = _cnn_model(nn.ReLU)
    x = rng.random((6, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((6, 10)).astype(np.float32)

    def step():
        out = model(x)
        assert model._conv_pool == {2: 0, 5: 3}
        model.zero_grad()
        dx = model.backward(g)
        return [out, dx] + [p.grad.copy() for p in model.parameters()]

    assert_bit_identical_across_threads(step, counts=(1, 2, 3, 4))


def test_winograd_conv_relu_pool_fusion_gradients_match_torch(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    _conv2_runs_winograd4(3, monkeypatch)
    model = _cnn_model(nn.ReLU)
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((3, 10)).astype(np.float32)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 10),
    )  # fmt: skip
    with torch.no_grad():
        for (_, a), (_, b) in zip(model.named_parameters(), tm.named_parameters(), strict=True):
            b.copy_(torch.from_numpy(a.data))
    model.zero_grad()
    out = model(x)
    assert model._conv_pool == {2: 0, 5: 3}
    dx = model.backward(g)
    tx = torch.from_numpy(x).requires_grad_(True)
    tout = tm(tx)
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-3, atol=1e-5)
    for p, (_, tp) in zip(model.parameters(), tm.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-3, atol=1e-4)
