"""Graph models (nn.Input, nn.Model, merge layers): gradients against PyTorch autograd and
finite differences, shared layers, nesting, names, memory, training through the one
training loop, save/load, and the graph checks."""

import gc
import json
import weakref

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads

import cnncore
from cnncore import models, nn, optim
from cnncore.apps import cli

# --------------------------------------------------------------------------------------------
# Graphs under test (each returns a Model and the shape of one input batch)
# --------------------------------------------------------------------------------------------


def residual_bn(dtype, rng=0):
    """A residual block with BatchNorm and a 1x1 projection shortcut."""
    kw = dict(dtype=dtype, rng=rng)
    inp = nn.Input((3, 6, 6))
    y = nn.Conv2d(3, 4, 3, padding=1, bias=False, **kw)(inp)
    y = nn.ReLU()(nn.BatchNorm2d(4, dtype=dtype)(y))
    y = nn.BatchNorm2d(4, dtype=dtype)(nn.Conv2d(4, 4, 3, padding=1, bias=False, **kw)(y))
    s = nn.BatchNorm2d(4, dtype=dtype)(nn.Conv2d(3, 4, 1, bias=False, **kw)(inp))
    x = nn.ReLU()(nn.Add()([s, y]))
    out = nn.Linear(4, 5, **kw)(nn.Flatten()(nn.GlobalAvgPool2d()(x)))
    return nn.Model(inp, out), (4, 3, 6, 6)


def shared_twice(dtype, rng=0):
    """One Conv2d and one BatchNorm2d, each called at two nodes (weights shared)."""
    kw = dict(dtype=dtype, rng=rng)
    conv = nn.Conv2d(4, 4, 3, padding=1, **kw)
    bn = nn.BatchNorm2d(4, dtype=dtype)
    inp = nn.Input((4, 5, 5))
    y1 = bn(conv(inp))
    y2 = bn(conv(nn.Tanh()(y1)))
    z = nn.Add()([y1, y2])
    out = nn.Linear(4 * 25, 3, **kw)(nn.Flatten()(z))
    return nn.Model(inp, out), (3, 4, 5, 5)


def concatenation(dtype, rng=0):
    """A channel concatenation that takes one node twice, then max pooling."""
    kw = dict(dtype=dtype, rng=rng)
    inp = nn.Input((3, 6, 6))
    a = nn.Conv2d(3, 2, 3, padding=1, **kw)(inp)
    b = nn.ReLU()(nn.Conv2d(3, 3, 1, **kw)(inp))
    c = nn.Concatenate(dim=1)([a, b, a])
    c = nn.MaxPool2d(2)(c)
    out = nn.Linear(7 * 9, 4, **kw)(nn.Flatten()(c))
    return nn.Model(inp, out), (2, 3, 6, 6)


def three_consumers(dtype, rng=0):
    """A node read by three layers (Tanh, Sigmoid, Linear); Multiply and a 3-input Add."""
    kw = dict(dtype=dtype, rng=rng)
    inp = nn.Input((8,))
    h = nn.Linear(8, 6, **kw)(inp)
    a, b, c = nn.Tanh()(h), nn.Sigmoid()(h), nn.Linear(6, 6, **kw)(h)
    m = nn.Multiply()([a, b])
    out = nn.Linear(6, 3, **kw)(nn.Add()([m, c, a]))
    return nn.Model(inp, out), (5, 8)


def unet_skip(dtype, rng=0):
    """A U-Net level: a strided depthwise conv down, ConvTranspose2d up, the skip
    concatenated, ReLU6 and Hardswish."""
    kw = dict(dtype=dtype, rng=rng)
    inp = nn.Input((4, 6, 6))
    e = nn.ReLU6()(nn.Conv2d(4, 4, 3, padding=1, **kw)(inp))
    d = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4, bias=False, **kw)(e)  # 3x3
    u = nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1, **kw)(nn.Hardswish()(d))  # 6x6
    c = nn.Concatenate(dim=1)([u, e])
    out = nn.Conv2d(7, 2, 1, **kw)(c)
    return nn.Model(inp, out), (2, 4, 6, 6)


GRAPHS = {
    "residual-bn": residual_bn,
    "shared-twice": shared_twice,
    "concatenation": concatenation,
    "three-consumers": three_consumers,
    "unet-skip": unet_skip,
}

# --------------------------------------------------------------------------------------------
# PyTorch twin: evaluates the user's graph (the Node objects) with torch ops and the same
# parameter objects (a shared layer is one torch leaf, so autograd accumulates over its uses)
# --------------------------------------------------------------------------------------------


def _torch_eval(torch, model, x, leaves):
    F = torch.nn.functional
    memo = {}

    def p(param):
        key = id(param)
        if key not in leaves:
            leaves[key] = (param, torch.tensor(param.data, requires_grad=True))
        return leaves[key][1]

    def run(layer, args):
        t = type(layer).__name__
        if t == "Conv2d":
            b = None if layer.bias is None else p(layer.bias)
            pad = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
            return F.conv2d(
                args, p(layer.weight), b, layer.stride, pad, layer.dilation, layer.groups
            )
        if t == "ConvTranspose2d":
            b = None if layer.bias is None else p(layer.bias)
            return F.conv_transpose2d(
                args,
                p(layer.weight),
                b,
                layer.stride,
                layer.padding,
                layer.output_padding,
                layer.groups,
                layer.dilation,
            )
        if t == "Linear":
            return F.linear(args, p(layer.weight), None if layer.bias is None else p(layer.bias))
        if t == "BatchNorm2d":
            return F.batch_norm(
                args, None, None, p(layer.weight), p(layer.bias), True, 0.1, layer.eps
            )
        if t == "ReLU":
            return torch.relu(args)
        if t == "Tanh":
            return torch.tanh(args)
        if t == "ReLU6":
            return F.relu6(args)
        if t == "Hardswish":
            return F.hardswish(args)
        if t == "Sigmoid":
            return torch.sigmoid(args)
        if t == "Flatten":
            return torch.flatten(args, layer.start_dim, layer.end_dim)
        if t == "GlobalAvgPool2d":
            return args.mean((2, 3), keepdim=True)
        if t == "MaxPool2d":
            return F.max_pool2d(args, layer.kernel_size, layer.stride, layer.padding)
        if t == "Add":
            out = args[0]
            for a in args[1:]:
                out = out + a
            return out
        if t == "Multiply":
            out = args[0]
            for a in args[1:]:
                out = out * a
            return out
        if t == "Concatenate":
            return torch.cat(args, dim=layer.dim)
        if t == "Identity":
            return args
        if t == "Model":
            return _torch_eval(torch, layer, args, leaves)
        if t == "Sequential":
            for sub in layer.layers:
                args = run(sub, args)
            return args
        raise NotImplementedError(t)

    def value(node):
        if id(node) not in memo:
            if node.is_input:
                memo[id(node)] = x[[n is node for n in model.inputs].index(True)]
            else:
                args = [value(i) for i in node.inputs]
                memo[id(node)] = run(node.layer, args if node.multi else args[0])
        return memo[id(node)]

    if not isinstance(x, list):
        x = [x]
    outs = [value(n) for n in model.outputs]
    return outs if len(outs) > 1 else outs[0]


TOLS = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-4)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(GRAPHS))
def test_gradients_match_torch_autograd(name, dtype, rng):
    """Forward, every parameter gradient and the input gradient against autograd on the
    same graph with copied weights (shared layers share one torch leaf)."""
    torch = pytest.importorskip("torch")
    model, shape = GRAPHS[name](dtype)
    x = rng.standard_normal(shape).astype(dtype)
    out = model(x)
    g = rng.standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    dx = model.backward(g)

    leaves = {}
    tx = torch.tensor(x, requires_grad=True)
    tout = _torch_eval(torch, model, tx, leaves)
    (tout * torch.from_numpy(g)).sum().backward()

    tol = TOLS[dtype]
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    params = dict((id(p), (n, p)) for n, p in model.named_parameters())
    assert set(params) == set(leaves)  # every parameter is used, each listed once
    for key, (param, leaf) in leaves.items():
        np.testing.assert_allclose(param.grad, leaf.grad.numpy(), err_msg=params[key][0], **tol)


def _fd(loss, a, idx, eps=1e-6):
    old = a.flat[idx]
    a.flat[idx] = old + eps
    up = loss()
    a.flat[idx] = old - eps
    down = loss()
    a.flat[idx] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_gradients_match_finite_differences(name, rng):
    """float64 central differences at a few entries of the input and of every parameter."""
    model, shape = GRAPHS[name](np.float64)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(model(x).shape)
    model.zero_grad()
    dx = model.backward(g)

    def loss():
        return float(np.sum(model(x) * g))

    targets = [("input", x, dx)] + [(n, p.data, p.grad.copy()) for n, p in model.named_parameters()]
    for label, arr, grad in targets:
        for idx in rng.choice(arr.size, size=min(4, arr.size), replace=False):
            np.testing.assert_allclose(
                grad.flat[idx], _fd(loss, arr, idx), rtol=1e-6, atol=1e-8, err_msg=label
            )


def test_shared_layer_gradient_is_the_sum_over_its_uses(rng):
    """conv used twice == two convs with the same weights, gradients added."""
    model, shape = shared_twice(np.float64)
    conv = model.get_layer(next(n.name for n in model.layers if isinstance(n, nn.Conv2d)))
    x = rng.standard_normal(shape)
    g = rng.standard_normal(model(x).shape)
    model.zero_grad()
    model.backward(g)
    twin, _ = shared_twice(np.float64)
    # unshare: a second conv with the same weights at the second call
    c2 = nn.Conv2d(4, 4, 3, padding=1, dtype=np.float64)
    conv_t = next(n for n in twin.layers if isinstance(n, nn.Conv2d))
    bn_t = next(n for n in twin.layers if isinstance(n, nn.BatchNorm2d))
    for a, b in ((conv_t, conv), (c2, conv)):
        a.weight.data[...] = b.weight.data
        a.bias.data[...] = b.bias.data
    lin = next(n for n in twin.layers if isinstance(n, nn.Linear))
    lin.weight.data[...] = next(n for n in model.layers if isinstance(n, nn.Linear)).weight.data
    lin.bias.data[...] = next(n for n in model.layers if isinstance(n, nn.Linear)).bias.data
    inp = nn.Input((4, 5, 5))
    y1 = bn_t(conv_t(inp))
    y2 = bn_t(c2(nn.Tanh()(y1)))
    flat = nn.Model(inp, lin(nn.Flatten()(nn.Add()([y1, y2]))))
    np.testing.assert_array_equal(flat(x), model(x))
    flat.zero_grad()
    flat.backward(g)
    np.testing.assert_allclose(conv.weight.grad, conv_t.weight.grad + c2.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, conv_t.bias.grad + c2.bias.grad, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Nesting: a Model as a layer of a Model and of a Sequential
# --------------------------------------------------------------------------------------------


def _block(c, dtype, rng, name=None):
    inp = nn.Input((c, 5, 5))
    y = nn.Conv2d(c, c, 3, padding=1, dtype=dtype, rng=rng)(inp)
    y = nn.BatchNorm2d(c, dtype=dtype)(y)
    return nn.Model(inp, nn.ReLU()(nn.Add()([inp, y])), name=name)


def test_model_as_a_layer_of_a_model_and_of_a_sequential(rng):
    torch = pytest.importorskip("torch")
    block = _block(2, np.float64, 1, name="block")
    head = nn.Linear(2 * 25, 3, dtype=np.float64, rng=2)
    inp = nn.Input((2, 5, 5))
    in_graph = nn.Model(inp, head(nn.Flatten()(block(inp))))
    in_seq = nn.Sequential(block, nn.Flatten(), head)
    x = rng.standard_normal((3, 2, 5, 5))
    g = rng.standard_normal((3, 3))
    results = []
    for model in (in_graph, in_seq):
        out = model(x)
        model.zero_grad()
        dx = model.backward(g)
        results.append((out, dx, [p.grad.copy() for p in model.parameters()]))
    (o1, d1, p1), (o2, d2, p2) = results
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(d1, d2)
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [n for n, _ in in_graph.named_parameters()][:2] == [
        "block.conv2d.weight",
        "block.conv2d.bias",
    ] or all(n.startswith(("block.", head.name)) for n, _ in in_graph.named_parameters())
    # the block called twice inside a bigger model (a shared nested model), against autograd
    twice = nn.Model(inp, head(nn.Flatten()(block(block(inp)))))
    out = twice(x)
    twice.zero_grad()
    dx = twice.backward(g)
    leaves = {}
    tx = torch.tensor(x, requires_grad=True)
    tout = _torch_eval(torch, twice, tx, leaves)
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert len(leaves) == 6
    for param, leaf in leaves.values():
        np.testing.assert_allclose(param.grad, leaf.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_sequential_refuses_a_layer_twice():
    """Regression: Sequential(l, l) kept one cache for both calls and returned wrong
    gradients silently; sharing a layer needs a graph model."""
    relu = nn.ReLU()
    with pytest.raises(ValueError, match="nn.Model"):
        nn.Sequential(relu, nn.Tanh(), relu)
    seq = nn.Sequential(relu)
    with pytest.raises(ValueError, match="nn.Model"):
        seq.append(relu)


def test_multi_input_multi_output(rng):
    torch = pytest.importorskip("torch")
    a, b = nn.Input((4,), name="a"), nn.Input((3,), name="b")
    h = nn.Concatenate()([nn.Linear(4, 5, dtype=np.float64, rng=0)(a), b])
    o1 = nn.Linear(8, 2, dtype=np.float64, rng=1)(h)
    o2 = nn.Tanh()(h)
    model = nn.Model([a, b], [o1, o2])
    xa, xb = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    y1, y2 = model([xa, xb])
    g1, g2 = rng.standard_normal(y1.shape), rng.standard_normal(y2.shape)
    model.zero_grad()
    da, db = model.backward([g1, g2])
    ta = torch.tensor(xa, requires_grad=True)
    tb = torch.tensor(xb, requires_grad=True)
    leaves = {}
    t1, t2 = _torch_eval(torch, model, [ta, tb], leaves)
    ((t1 * torch.from_numpy(g1)).sum() + (t2 * torch.from_numpy(g2)).sum()).backward()
    for ours, theirs in ((y1, t1), (y2, t2), (da, ta.grad), (db, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert model.output_shape([(6, 4), (6, 3)]) == [(6, 2), (6, 8)]
    with pytest.raises(ValueError, match="list of 2 input arrays"):
        model(xa)
    two_out = nn.Model(a, [nn.Linear(4, 2)(a), nn.Tanh()(a)])
    with pytest.raises(ValueError, match="one array"):
        two_out.predict(xa)
    with pytest.raises(ValueError, match="one array"):
        two_out.fit(xa, np.zeros(6, np.int64), optimizer="sgd", loss="mse", verbose=False)


def test_input_grad_false_skips_parameter_free_front(rng):
    """With input_grad=False, layers in front of every parameter are not backpropagated."""
    calls = []

    class Spy(nn.Identity, register=False):
        def backward(self, grad_output, input_grad=True):
            calls.append(input_grad)
            return super().backward(grad_output, input_grad)

    inp = nn.Input((3,))
    out = nn.Linear(3, 2, dtype=np.float64)(Spy()(inp))
    model = nn.Model(inp, out)
    model(rng.standard_normal((2, 3)))
    assert model.backward(np.ones((2, 2)), input_grad=False) is None
    assert calls == []
    assert model.backward(np.ones((2, 2))).shape == (2, 3)
    assert calls == [True]


# --------------------------------------------------------------------------------------------
# Training: the same loop as Sequential
# --------------------------------------------------------------------------------------------


def _lenet_as_graph(seed, dropout=0.0):
    seq = models.simple_cnn(rng=seed, dropout=dropout)
    inp = nn.Input((1, 28, 28))
    x = inp
    for layer in seq.layers:
        x = layer(x)
    return nn.Model(inp, x)


def test_model_wrapping_a_sequential_trains_bit_identically():
    (x, y), _ = cnncore.datasets.load_sample()
    x, y = x[:96], y[:96]
    hist = []
    weights = []
    for build in (
        lambda: models.simple_cnn(rng=3, dropout=0.3),
        lambda: _lenet_as_graph(3, dropout=0.3),
    ):
        model = build()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        # (every conv on the row kernels: Sequential runs its first Conv2d-ReLU-MaxPool2d
        # as one kernel on them, the graph model the layers; the same bits)
        with cnncore.conv_algorithm("rows"):
            h = model.fit(
                x,
                y,
                optimizer=opt,
                loss="cross_entropy",
                epochs=2,
                batch_size=32,
                seed=7,
                verbose=False,
            )
        hist.append([h["loss"], h["accuracy"]])
        weights.append([p.data.copy() for p in model.parameters()])
        np.testing.assert_array_equal(model.predict(x[:8]), model.predict(x[:8]))
    assert hist[0] == hist[1]
    for a, b in zip(*weights, strict=True):
        assert a.tobytes() == b.tobytes()


def test_fit_is_bit_identical_for_any_thread_count(restore_threads):
    (x, y), _ = cnncore.datasets.load_sample()
    x, y = x[:64], y[:64]

    def run():
        model = models.resnet(20, in_channels=1, input_size=28, rng=0)
        model.fit(x, y, optimizer="sgd", loss="cross_entropy", batch_size=32, seed=1, verbose=False)
        return [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]

    assert_bit_identical_across_threads(run, counts=(1, 2))


def test_evaluate_and_predict_keep_no_caches(rng):
    model, shape = residual_bn(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    model(x)  # a training forward leaves caches
    assert model._fwd is not None
    out = model.predict(x)
    assert out.shape == (4, 5)
    assert model._fwd is None
    for m in [model, *model.layers]:
        for key, value in vars(m).items():
            if key in ("_params", "_buffers") or isinstance(value, nn.Parameter):
                continue
            assert not isinstance(value, np.ndarray), (m.name, key)
            assert not (isinstance(value, list) and any(isinstance(v, np.ndarray) for v in value))
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((4, 5), np.float32))


def test_backward_frees_each_gradient_once_its_consumers_are_done(rng):
    """A node's gradient is released as soon as the layer reading it has run: when the
    first layer's backward runs, the gradients of the later nodes are gone."""
    seen = []

    class Probe(nn.Module, register=False):
        def forward(self, x):
            return x * 1.0

        def backward(self, grad_output, input_grad=True):
            gc.collect()
            alive = [r() is not None for r in seen]
            seen.append(weakref.ref(grad_output))
            self.alive = alive
            return grad_output * 1.0

    probes = [Probe() for _ in range(4)]
    inp = nn.Input((3,))
    x = nn.Linear(3, 3, dtype=np.float64)(inp)
    for p in probes:
        x = p(x)
    model = nn.Model(inp, x)
    model(rng.standard_normal((2, 3)))
    g = np.ones((2, 3))
    model.backward(g)
    # probes run last-to-first; each sees only the gradient it was just given alive
    assert probes[3].alive == []
    assert probes[2].alive == [True]  # the caller's g (the caller still holds it)
    assert probes[1].alive == [True, False]
    assert probes[0].alive == [True, False, False]


def test_forward_keeps_no_intermediate_outputs(rng):
    model, shape = three_consumers(np.float64)
    x = rng.standard_normal(shape)
    out = model(x)
    # the executor itself holds nothing but the shapes of the outputs (the layers keep
    # their own caches for backward)
    snaps, shapes, _ = model._fwd
    assert snaps is None and shapes == [out.shape]
    assert not any(isinstance(v, np.ndarray) for v in vars(model).values())


# --------------------------------------------------------------------------------------------
# Names, summary, repr
# --------------------------------------------------------------------------------------------


def test_default_names_are_unique_and_keras_style():
    class SpecialBlock(nn.Identity, register=False):
        pass

    a, b, c = SpecialBlock(), SpecialBlock(), SpecialBlock(name="mine")
    assert (a.name, b.name, c.name) == ("special_block", "special_block_1", "mine")
    assert nn.ReLU().name.startswith("re_lu") and nn.BatchNorm2d(2).name.startswith("batch_norm2d")
    with pytest.raises(ValueError, match="name"):
        nn.Conv2d(1, 1, 1, name="a.b")
    with pytest.raises(ValueError, match="name"):
        nn.Input((2,), name="")

    class Named(nn.Linear, register=False):  # takes name= itself and passes it on
        def __init__(self, n, name=None):
            super().__init__(n, n, name=name)

    assert Named(2, name="own").name == "own" and Named(2).name.startswith("named")
    inp = nn.Input((2,))
    x = nn.ReLU(name="same")(inp)
    with pytest.raises(ValueError, match="unique"):
        nn.Model(inp, nn.Tanh(name="same")(x))


def test_named_parameters_and_summary(rng):
    model = models.resnet20(in_channels=1, input_size=28, rng=0)
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "stage2_block1_shortcut_conv.weight" in names and names[-1] == "fc.bias"
    assert len(names) == len(set(names))
    assert model.num_parameters() == 272_186
    assert models.resnet20(rng=0).num_parameters() == 272_474
    text = model.summary(print_fn=None)
    assert "stage1_block1_add (Add)" in text and "relu1, stage1_block1_bn2" in text
    assert "Total parameters: 272,186" in text
    assert "(128, 64, 7, 7)" in model.summary((128, 1, 28, 28), print_fn=None)
    shared, _ = shared_twice(np.float32)
    text = shared.summary(print_fn=None)
    assert "shared" in text and "[1]" in text
    assert "Model(name=" in repr(model)


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------


def _complex_model():
    block = _block(2, np.float32, 4, name="blk")
    inp = nn.Input((2, 5, 5), name="img")
    a = block(inp)
    b = nn.Sequential(nn.Conv2d(2, 3, 1, rng=5), nn.ReLU())(a)
    shared = nn.Conv2d(2, 2, 3, padding=1, rng=6, name="shared")
    c = shared(shared(a))
    cat = nn.Concatenate(dim=1)([b, c, nn.Identity()(a)])
    m = nn.Multiply()([nn.Sigmoid()(cat), cat])
    out = nn.Linear(7, 4, rng=7)(nn.Flatten()(nn.GlobalAvgPool2d()(m)))
    return nn.Model(inp, out, name="complex")


def test_save_load_predict_bit_identical(tmp_path, rng):
    model = _complex_model()
    x = rng.standard_normal((6, 2, 5, 5)).astype(np.float32)
    model.fit(
        x,
        rng.integers(0, 4, 6),
        optimizer="adam",
        loss="cross_entropy",
        epochs=2,
        batch_size=3,
        verbose=False,
        seed=0,
    )
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = cnncore.load(path)
    assert type(loaded) is nn.Model and loaded.name == "complex"
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert [type(m) for m in loaded.layers] == [type(m) for m in model.layers]
    assert loaded.get_config() == model.get_config()
    assert loaded.predict(x).tobytes() == model.predict(x).tobytes()
    # the shared conv is one layer after loading too
    assert loaded.get_layer("shared").weight is loaded.get_layer("shared").weight
    assert sum(1 for n in loaded._step_nodes if n.layer.name == "shared") == 2
    # a model inside a Sequential
    seq = nn.Sequential(_block(2, np.float32, 8), nn.Flatten(), nn.Linear(50, 3, rng=9))
    seq(x)
    nn.save(seq, tmp_path / "s.npz")
    back = cnncore.load(tmp_path / "s.npz")
    assert type(back[0]) is nn.Model
    assert back.predict(x).tobytes() == seq.predict(x).tobytes()
    # and resnet20
    net = models.resnet20(in_channels=1, input_size=28, rng=0)
    xs = rng.random((3, 1, 28, 28)).astype(np.float32)
    net.fit(xs, np.array([0, 1, 2]), optimizer="sgd", loss="cross_entropy", verbose=False)
    nn.save(net, tmp_path / "r.npz")
    again = cnncore.load(tmp_path / "r.npz")
    assert again.predict(xs).tobytes() == net.predict(xs).tobytes()


def _crafted(tmp_path, edit):
    """Save the complex model, let ``edit(arch)`` change its JSON, write it back."""
    path = tmp_path / "good.npz"
    _complex_model().save(path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arch = json.loads(arrays["__architecture__"].tobytes())
    edit(arch["model"])
    arrays["__architecture__"] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


def _cfg(spec):
    return spec["config"]


CRAFTED = {
    "forward-reference": lambda s: _cfg(s)["nodes"][0][1].__setitem__(0, 5),
    "self-reference": lambda s: _cfg(s)["nodes"][2][1].__setitem__(0, 3),
    "layer-index": lambda s: _cfg(s)["nodes"][0].__setitem__(0, 99),
    "negative-ref": lambda s: _cfg(s)["outputs"].__setitem__(0, -1),
    "bool-ref": lambda s: _cfg(s)["nodes"][1][1].__setitem__(0, True),
    "node-not-list": lambda s: _cfg(s)["nodes"].__setitem__(0, {"a": 1}),
    "no-inputs": lambda s: _cfg(s).__setitem__("inputs", []),
    "input-shape": lambda s: _cfg(s)["inputs"][0].__setitem__("shape", [2, -5, 5]),
    "input-shape-str": lambda s: _cfg(s)["inputs"][0].__setitem__("shape", "2,5,5"),
    "huge-input": lambda s: _cfg(s)["inputs"][0].__setitem__("shape", [2, 10**12, 5]),
    "wrong-shape": lambda s: _cfg(s)["inputs"][0].__setitem__("shape", [3, 5, 5]),
    "names-count": lambda s: _cfg(s)["layer_names"].pop(),
    "bad-name": lambda s: _cfg(s)["layer_names"].__setitem__(0, "a.b"),
    "dup-name": lambda s: _cfg(s)["layer_names"].__setitem__(1, _cfg(s)["layer_names"][0]),
    "extra-key": lambda s: _cfg(s).__setitem__("exec", "import os"),
    "missing-key": lambda s: _cfg(s).pop("outputs"),
    "unused-layer": lambda s: _cfg(s)["nodes"].pop(),
    "multi-flag": lambda s: _cfg(s).__setitem__("multi_input", "yes"),
    "merge-single": lambda s: [n.__setitem__(2, False) for n in _cfg(s)["nodes"] if len(n[1]) > 1],
    "huge-linear": lambda s: s["layers"][-1]["config"].__setitem__("in_features", 2**31 - 1),
    "nested-graph": lambda s: _cfg(s["layers"][0])["nodes"][0][1].__setitem__(0, 7),
    "config-list": lambda s: s.__setitem__("config", [1, 2]),
}


@pytest.mark.parametrize("how", list(CRAFTED))
def test_crafted_model_files_are_refused(tmp_path, how):
    bad = _crafted(tmp_path, CRAFTED[how])
    with pytest.raises(ValueError, match="not a valid cnncore model file"):
        cnncore.load(bad)


def test_damaged_graph_model_files_are_refused(tmp_path, rng):
    path = tmp_path / "good.npz"
    _complex_model().save(path)
    data = path.read_bytes()
    for k in range(30):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        p = tmp_path / f"d{k}.npz"
        p.write_bytes(bytes(b))
        try:
            model = cnncore.load(p)
        except ValueError:
            continue
        assert isinstance(model, nn.Model)  # a flip in array data loads as other weights


# --------------------------------------------------------------------------------------------
# Bad graphs
# --------------------------------------------------------------------------------------------


def test_unknown_input_from_another_graph():
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="b_other")
    out = nn.Add()([nn.Linear(3, 3, name="lin")(a), b])
    with pytest.raises(ValueError, match=r"'add.*'b_other'.*another graph"):
        nn.Model(a, out)
    with pytest.raises(ValueError, match="outputs\\[0\\].*another graph"):
        nn.Model(a, b)


def test_unused_input():
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="unused_b")
    with pytest.raises(ValueError, match="inputs\\[1\\].*'unused_b'.*not used"):
        nn.Model([a, b], nn.ReLU()(a))


def test_cycle_is_detected():
    a = nn.Input((3,))
    x = nn.ReLU(name="r1")(a)
    y = nn.Tanh(name="t1")(x)
    x.inputs = (y,)  # tamper: r1 <- t1 <- r1
    with pytest.raises(ValueError, match="cycle"):
        nn.Model(a, y)


def test_shape_mismatches_name_the_layer_and_shapes():
    inp = nn.Input((3, 8, 8))
    with pytest.raises(ValueError, match=r"'c5'.*\(None, 3, 8, 8\).*in_channels|5 channels"):
        nn.Conv2d(5, 4, 3, name="c5")(inp)
    x = nn.Conv2d(3, 4, 3, name="c4")(inp)  # (None, 4, 6, 6)
    with pytest.raises(ValueError, match=r"'add_x'.*\(None, 4, 6, 6\), \(None, 3, 8, 8\)"):
        nn.Add(name="add_x")([x, inp])
    with pytest.raises(ValueError, match="same shape except"):
        nn.Concatenate()([x, inp])
    with pytest.raises(ValueError, match="batch dimension"):
        nn.Concatenate(dim=0)([x, x])
    with pytest.raises(ValueError, match="4 features|features"):
        nn.Linear(5, 2)(nn.Flatten()(nn.GlobalAvgPool2d()(x)))
    with pytest.raises(ValueError, match="4-D"):
        nn.MaxPool2d(2)(nn.Flatten()(x))
    # a node whose recorded shape no longer matches its layer (changed after the call)
    conv = nn.Conv2d(3, 4, 3)
    node = conv(inp)
    conv.stride = (2, 2)
    with pytest.raises(ValueError, match="gives shape"):
        nn.Model(inp, node)


def test_bad_model_arguments():
    inp = nn.Input((3,))
    out = nn.ReLU()(inp)
    with pytest.raises(TypeError, match="nodes"):
        nn.Model(np.zeros((1, 3)), out)
    with pytest.raises(ValueError, match="nn.Input"):
        nn.Model(out, out)
    with pytest.raises(ValueError, match="twice"):
        nn.Model([inp, inp], out)
    with pytest.raises(ValueError, match="empty"):
        nn.Model([], out)
    with pytest.raises(TypeError, match="only nodes"):
        nn.Add()([out, np.zeros((1, 3))])
    with pytest.raises(TypeError, match="shape"):
        nn.Input("3x3")
    with pytest.raises(ValueError, match="shape"):
        nn.Input((3, 0))
    two = nn.Model(inp, [out, nn.Tanh()(inp)])
    with pytest.raises(ValueError, match="one output"):
        two(nn.Input((3,)))
    model = nn.Model(inp, out)
    with pytest.raises(ValueError, match="must have shape"):
        model(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="float or uint8"):
        model(np.zeros((2, 3), np.int32))
    model(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        model.backward(np.zeros((2, 5), np.float32))


def test_state_dict_keys_are_the_layer_names():
    """A graph model's state_dict is keyed ``<layer name>.<entry>`` (a PyTorch module with
    the layers as attributes of those names), as named_parameters; it used to number the
    layers as a Sequential does."""
    model, _ = residual_bn(np.float32)
    keys = list(model.state_dict())
    params = [n for n, _ in model.named_parameters()]
    buffers = [n for n, _ in model.named_buffers()]
    assert set(keys) == set(params) | set(buffers) and len(keys) == len(params + buffers)
    first = model.layers[0].name
    assert keys[0] == f"{first}.weight"
    bn = model.layers[1].name
    assert keys[1:6] == [
        f"{bn}.{k}"
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    block = _block(2, np.float32, 4, name="blk")
    conv = block.layers[0].name
    outer = nn.Sequential(block, nn.Flatten())  # a graph inside a Sequential: "0.<layer>."
    assert next(iter(outer.state_dict())) == f"0.{conv}.weight"
    again = _block(2, np.float32, 5, name="blk")  # same architecture, other layer names
    with pytest.raises(ValueError, match="missing"):
        again.load_state_dict(block.state_dict())


def test_conv_transpose2d_in_a_graph(rng):
    """ConvTranspose2d called on a node records the call (it once ran it on the node);
    output_size= is for arrays only."""
    inp = nn.Input((4, 5, 5))
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, name="up")
    node = up(inp)
    assert isinstance(node, nn.Node) and node.shape == (None, 2, 10, 10)
    model = nn.Model(inp, node)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    assert model(x).shape == (3, 2, 10, 10)
    with pytest.raises(ValueError, match="output_size"):
        up(inp, output_size=(10, 10))
    assert up(x, output_size=(9, 9)).shape == (3, 2, 9, 9)


def test_merge_layers_on_arrays(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(nn.Add()([a, b]), a + b)
    np.testing.assert_array_equal(nn.Multiply()([a, b]), a * b)
    cat = nn.Concatenate(dim=-1)
    np.testing.assert_array_equal(cat([a, b]), np.concatenate([a, b], -1))
    ga, gb = cat.backward(np.ones((2, 3, 8)))
    assert ga.shape == gb.shape == (2, 3, 4)
    ident = nn.Identity()
    assert ident(a) is a
    with pytest.raises(TypeError, match="numeric"):
        ident({"a": 1})
    with pytest.raises(ValueError, match="at least 2"):
        nn.Add()([a])
    with pytest.raises(TypeError, match="same dtype"):
        nn.Add()([a, b.astype(np.float32)])
    with pytest.raises(TypeError, match="list"):
        nn.Multiply()(a)
    with pytest.raises(ValueError, match="same shape"):
        nn.Multiply()([a, b[:, :2]])


# --------------------------------------------------------------------------------------------
# Ready-made ResNets and the command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth, blocks", [(20, 3), (32, 5), (44, 7), (56, 9)])
def test_resnet_family(depth, blocks):
    model = models.resnet(depth, rng=0)
    convs = [m for m in model.layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 * blocks + 2  # stem, blocks, two projections
    assert len([m for m in model.layers if isinstance(m, nn.Linear)]) == 1
    assert model.output_shape((2, 3, 32, 32)) == (2, 10)
    assert models.build(f"resnet{depth}").name == f"resnet{depth}"
    with pytest.raises(ValueError, match="depth"):
        models.resnet(21)


def test_cli_trains_resnet20(tmp_path, capsys):
    path = tmp_path / "r.npz"
    code = cli.main(
        [
            "train",
            "--model",
            "resnet20",
            "--data",
            "sample",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--quiet",
            "--batch-size",
            "32",
            "--save",
            str(path),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "resnet20" in text and "test accuracy" in text
    assert isinstance(cnncore.load(path), nn.Model)
