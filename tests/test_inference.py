"""Fast inference: eval-mode plans (bit-identical to the layer-by-layer forward, buffers
reused, weights read live, no caches) and nn.fuse (BatchNorm folded, 1e-6 relative)."""

import copy
import threading

import numpy as np
import pytest

import cnncore
from cnncore import models, nn, optim
from cnncore.nn import inference


def _layerwise(model, x):
    """The eval forward without a plan: each layer called in Sequential's run order."""
    h = nn.module.as_model_input(x, model.dtype)
    for i in model._run_order():
        h = model.layers[i](h)
    return h


def _bn_stats(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.track_running_stats:
            c = layer.num_features
            layer._buffers["running_mean"][...] = rng.standard_normal(c)
            layer._buffers["running_var"][...] = rng.uniform(0.3, 3.0, c)
            if layer.affine:
                layer.weight.data[...] = rng.uniform(0.5, 2.0, c)
                layer.bias.data[...] = rng.standard_normal(c)
    return model


def _mixed(dtype=np.float32):
    kw = dict(dtype=dtype, rng=0)
    return nn.Sequential(
        nn.Tanh(),  # first layer: the input is not the plan's to overwrite
        nn.Conv2d(1, 4, 3, padding=1, **kw),
        nn.BatchNorm2d(4, dtype=dtype),
        nn.LeakyReLU(0.2),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 6, 3, stride=2, dilation=1, groups=2, bias=False, **kw),
        nn.Sigmoid(),
        nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect", **kw),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6 * 3 * 3, 16, **kw),
        nn.BatchNorm1d(16, dtype=dtype),
        nn.ReLU(),
        nn.Linear(16, 5, bias=False, **kw),
        nn.Softmax(1),
    )


MODELS = {
    "lenet5": lambda d: models.lenet5(rng=0, dtype=d),
    "simple_cnn": lambda d: models.simple_cnn(rng=0, dtype=d, dropout=0.3),
    "mixed": _mixed,
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plans_are_bit_identical_to_the_layerwise_forward(name, dtype, restore_threads):
    model = _bn_stats(MODELS[name](dtype)).eval()
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        cnncore.set_num_threads(threads)
        for n in (1, 3, 1):  # the second batch-1 call runs the recorded plan
            x = rng.standard_normal((n, 1, 28, 28)).astype(dtype)
            for _ in range(2):
                y = model(x)
                expected = _layerwise(model, x)
                assert y.dtype == expected.dtype and y.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(model.predict(x), _layerwise(model, x))


def test_uint8_input_and_outputs_are_fresh_arrays():
    model = models.lenet5(rng=0).eval()
    x = np.random.default_rng(0).integers(0, 256, (2, 1, 28, 28), dtype=np.uint8)
    a = model(x)
    a_copy = a.copy()
    b = model(x)
    assert not np.shares_memory(a, b)
    b[...] = 0
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(model(x), a_copy)
    np.testing.assert_array_equal(model(x), _layerwise(model, x))


def test_plans_see_weight_updates():
    model = models.lenet5(rng=0)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    y = np.array([1, 2, 3, 4])
    before = model.eval()(x)
    # a training step changes the weights in place: the next eval forward sees them
    opt = optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = nn.CrossEntropyLoss()
    loss(model(x), y)
    model.backward(loss.backward())
    opt.step()
    after = model.eval()(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, _layerwise(model, x))
    model.load_state_dict(models.lenet5(rng=3).state_dict())
    np.testing.assert_array_equal(model(x), models.lenet5(rng=3).eval()(x))
    # replacing a Parameter's array is seen too
    model[0].weight.data = np.zeros_like(model[0].weight.data)
    np.testing.assert_array_equal(model(x), _layerwise(model, x))


def test_structure_changes_make_a_new_plan():
    model = nn.Sequential(nn.Linear(3, 4, rng=0)).eval()
    x = np.ones((2, 3), np.float32)
    model(x)
    model.append(nn.ReLU())
    model.append(nn.Linear(4, 2, rng=1))
    np.testing.assert_array_equal(model(x), _layerwise(model, x))
    model.layers[2] = nn.Linear(4, 2, rng=5)
    np.testing.assert_array_equal(model(x), _layerwise(model, x))
    assert len(model._plans) == 3


def test_plan_cache_is_bounded():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0)).eval()
    for n in range(1, 10):
        model(np.ones((n, 2, 2), np.float32))
    assert len(model._plans) == inference.MAX_PLANS


def test_eval_forward_keeps_no_cache_and_backward_refuses():
    model = _bn_stats(_mixed()).train()
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    out = model(x)
    model.backward(np.ones_like(out))  # training: fine
    model.eval()
    model(x)
    model(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(np.ones_like(out))
    for layer in model.layers:  # the recording run cleared every cache
        for attr in ("_x", "_indices", "_out", "_xhat", "_mask"):
            assert getattr(layer, attr, None) is None, (type(layer).__name__, attr)
    model.train()
    out = model(x)
    model.backward(np.ones_like(out))


def test_max_pool_computes_no_indices_in_eval_mode(monkeypatch):
    calls = []
    real = nn.pooling.F.max_pool2d

    def spy(*args, **kwargs):
        calls.append(kwargs.get("return_indices"))
        return real(*args, **kwargs)

    monkeypatch.setattr(nn.pooling.F, "max_pool2d", spy)
    x = np.ones((1, 1, 4, 4), np.float32)
    nn.MaxPool2d(2).eval()(x)
    nn.MaxPool2d(2).train()(x)
    assert calls == [False, True]
    pool = nn.MaxPool2d(2).eval()
    for _ in range(2):  # the second call is the prepared one: no indices either
        pool(x)
        assert pool._indices is None
    pool.train()(x)
    assert pool._indices is not None and pool._indices.dtype == np.int64


def test_forced_conv_algorithm_is_honoured():
    model = models.simple_cnn(rng=0).eval()
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    model(x)  # plan recorded with the automatic choice
    for algo in ("gemm", "direct"):
        with cnncore.conv_algorithm(algo):
            np.testing.assert_array_equal(model(x), _layerwise(model, x))


def test_user_layers_run_as_they_are():
    class Double(nn.Module, register=False):
        def forward(self, x):
            return np.asarray(x) * 2

    model = nn.Sequential(nn.Linear(3, 4, rng=0), Double(), nn.ReLU(), nn.Linear(4, 2, rng=1))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    model.eval()
    for _ in range(2):
        np.testing.assert_array_equal(model(x), _layerwise(model, x))


def test_deepcopy_gets_its_own_plans():
    model = models.lenet5(rng=0).eval()
    x = np.ones((1, 1, 28, 28), np.float32)
    model(x)
    clone = copy.deepcopy(model)
    assert len(clone._plans) == 0
    clone[0].weight.data[...] = 0
    np.testing.assert_array_equal(clone(x), _layerwise(clone, x))
    np.testing.assert_array_equal(model(x), _layerwise(model, x))
    assert not np.array_equal(clone(x), model(x))


# --------------------------------------------------------------------------------------------
# fuse
# --------------------------------------------------------------------------------------------


def _fusable(dtype, extra=()):
    kw = dict(dtype=dtype, rng=0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, **kw),
        nn.BatchNorm2d(16, dtype=dtype),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, bias=False, **kw),
        nn.BatchNorm2d(8, affine=False, eps=1e-3, dtype=dtype),
        nn.Sequential(nn.Conv2d(8, 4, 1, **kw), nn.BatchNorm2d(4, dtype=dtype)),
        nn.BatchNorm2d(4, dtype=dtype),  # follows a Sequential: kept
        nn.Flatten(),
        nn.Linear(4 * 26 * 26, 8, **kw),
        nn.BatchNorm1d(8, dtype=dtype),
        *extra,
    )
    _bn_stats(model)
    _bn_stats(model.layers[5], seed=1)
    return model.eval()


def test_fuse_structure():
    extra = [nn.BatchNorm1d(8, track_running_stats=False)]  # batch statistics: kept
    model = _fusable(np.float32, extra)
    before = model.state_dict()
    fused = nn.fuse(model)
    names = [type(layer).__name__ for layer in fused]
    assert names == [
        "Conv2d",
        "ReLU",
        "Conv2d",
        "Sequential",
        "BatchNorm2d",
        "Flatten",
        "Linear",
        "BatchNorm1d",
    ]
    assert [type(layer).__name__ for layer in fused[3]] == ["Conv2d"]
    assert fused[2].bias is not None and not fused.training
    for k, v in model.state_dict().items():  # the original is untouched
        np.testing.assert_array_equal(v, before[k])
    assert len(model) == 11


def test_fuse_is_exact_in_float64():
    model = _fusable(np.float64)
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28))
    np.testing.assert_allclose(nn.fuse(model).predict(x), model.predict(x), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_fuse_float32_within_rounding(seed):
    """In float32 the fold (done in float64) is exact; what remains is float32 rounding of
    the accumulations: the fused model is as close to the float64 result as the unfused one,
    within 2e-6 of the output's scale."""
    model = _fusable(np.float32)
    model64 = _fusable(np.float64)
    model64.load_state_dict(model.state_dict())
    x = np.random.default_rng(seed).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref = model64.predict(x.astype(np.float64))
    scale = np.abs(ref).max()
    err_fused = np.abs(nn.fuse(model).predict(x) - ref).max() / scale
    err_plain = np.abs(model.predict(x) - ref).max() / scale
    assert err_fused <= 2e-6 and err_fused <= 2 * err_plain + 1e-7, (err_fused, err_plain)


def test_fuse_matches_torch():
    torch = pytest.importorskip("torch")
    from cnncore.apps.bench.twins import torch_twin

    model = _bn_stats(
        nn.Sequential(nn.Conv2d(3, 8, 3, rng=0), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
    ).eval()
    twin = torch_twin(model).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    with torch.inference_mode():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(nn.fuse(model).predict(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_graph_model_torch_twin(fused):
    """The benchmark's torch twin of a graph model (a ModuleDict run in step order, with
    the model's state_dict keys) computes what the model does, fused or not; nested graph
    models and merge layers included."""
    torch = pytest.importorskip("torch")
    from cnncore.apps.bench.twins import torch_twin

    model = _graph_bn_stats(models.resnet20(rng=0))
    binp = nn.Input((10,))
    block = nn.Model(binp, nn.Concatenate(name="cat")([binp, nn.Linear(10, 3, rng=0)(binp)]))
    inp = nn.Input((3, 32, 32))
    feats = model(inp)
    outer = nn.Model(inp, nn.Multiply(name="mul")([block(feats), block(feats)])).eval()
    for m in (model, outer):
        m = nn.fuse(m) if fused else m
        twin = torch_twin(m)
        assert not twin.training and list(twin.state_dict()) == list(m.state_dict())
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        with torch.inference_mode():
            expected = twin(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(m.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_fuse_bad_input():
    with pytest.raises(TypeError, match="Received"):
        nn.fuse("model")
    lone = nn.BatchNorm2d(3)
    assert isinstance(nn.fuse(lone), nn.BatchNorm2d) and nn.fuse(lone) is not lone


# --------------------------------------------------------------------------------------------
# fuse on graph models
# --------------------------------------------------------------------------------------------


def _graph_bn_stats(model, seed=0):
    rng = np.random.default_rng(seed)
    stack = [model]
    while stack:
        m = stack.pop()
        stack.extend(m.children())
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats:
            c = m.num_features
            m._buffers["running_mean"][...] = rng.standard_normal(c)
            m._buffers["running_var"][...] = rng.uniform(0.3, 3.0, c)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 2.0, c)
                m.bias.data[...] = rng.standard_normal(c)
    return model.eval()


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fuse_resnet20(dtype):
    model = _graph_bn_stats(models.resnet20(rng=0, dtype=dtype))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fused = nn.fuse(model)
    assert isinstance(fused, nn.Model) and not fused.training
    assert "BatchNorm2d" not in _kinds(fused)
    assert len(fused.layers) == len(model.layers) - 21  # 19 + 2 shortcut BatchNorms
    conv_names = [m.name for m in model.layers if isinstance(m, nn.Conv2d)]
    assert [m.name for m in fused.layers if isinstance(m, nn.Conv2d)] == conv_names
    assert fused.name == model.name
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(dtype)
    ref, got = model.predict(x), nn.fuse(model).predict(x)
    scale = np.abs(ref).max()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert np.abs(got - ref).max() / scale <= tol
    for k, v in model.state_dict().items():  # the original is untouched
        np.testing.assert_array_equal(v, before[k])


def test_fuse_graph_folds_only_what_it_may():
    kw = dict(rng=0)
    inp = nn.Input((3, 6, 6))
    a = nn.Conv2d(3, 4, 3, padding=1, name="a", **kw)(inp)
    a_bn = nn.BatchNorm2d(4, name="a_bn")(a)  # a is also read by the Add: kept
    shared = nn.Conv2d(4, 4, 3, padding=1, name="shared", **kw)
    s1 = nn.BatchNorm2d(4, name="s1_bn")(shared(a_bn))  # shared conv: kept
    s2 = nn.BatchNorm2d(4, name="s2_bn")(shared(s1))
    merged = nn.BatchNorm2d(4, name="merged_bn")(nn.Add(name="add")([a, s2]))  # after a merge
    t = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, name="t", **kw)
    t_bn = nn.BatchNorm2d(2, name="t_bn")(t(merged))  # folded
    binp = nn.Input((2, 12, 12))
    block = nn.Model(
        binp, nn.BatchNorm2d(2, name="in_bn")(nn.Conv2d(2, 2, 1, name="in_conv", **kw)(binp))
    )
    y = block(t_bn)  # nested: folded inside
    batch = nn.BatchNorm2d(2, track_running_stats=False, name="batch_bn")(
        nn.Conv2d(2, 2, 1, name="c_batch", **kw)(y)
    )  # batch statistics: kept
    out_conv = nn.Conv2d(2, 2, 1, name="out_conv", **kw)(batch)
    model = _graph_bn_stats(
        nn.Model(inp, [out_conv, nn.BatchNorm2d(2, name="out_bn")(out_conv)])  # an output
    )
    fused = nn.fuse(model)
    names = [layer.name for layer in fused.layers]
    for kept in ("a_bn", "s1_bn", "s2_bn", "merged_bn", "batch_bn", "out_bn"):
        assert kept in names
    assert "t_bn" not in names and fused.get_layer("t").bias is not None
    inner = next(m for m in fused.layers if isinstance(m, nn.Model))
    assert _kinds(inner) == ["Conv2d"]
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for got, want in zip(fused(x), model(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_fuse_conv_transpose_in_float64(groups):
    model = _bn_stats(
        nn.Sequential(
            nn.ConvTranspose2d(4, 6, 3, stride=2, groups=groups, bias=False, dtype=np.float64),
            nn.BatchNorm2d(6, dtype=np.float64),
        )
    ).eval()
    fused = nn.fuse(model)
    assert _kinds(fused) == ["ConvTranspose2d"]
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5))
    np.testing.assert_allclose(fused.predict(x), model.predict(x), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# graph models in eval mode: checks once per shape, bit-identical
# --------------------------------------------------------------------------------------------


def _graph_layerwise(model, x):
    """The eval forward of a one-input, one-output graph model with every layer called as
    it is."""
    vals = [None] * model._n_slots
    vals[model._in_slots[0]] = nn.module.as_model_input(x, model.dtype)
    for layer, ins, multi, out, _, _, _ in model._steps:
        vals[out] = layer.forward([vals[s] for s in ins] if multi else vals[ins[0]])
    return vals[model._out_slots[0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_eval_is_bit_identical_to_the_layerwise_forward(dtype, restore_threads):
    model = _graph_bn_stats(models.resnet20(rng=0, dtype=dtype))
    rng = np.random.default_rng(1)
    for threads in (1, 2):
        cnncore.set_num_threads(threads)
        for n in (1, 2, 1):
            x = rng.standard_normal((n, 3, 32, 32)).astype(dtype)
            for _ in range(2):  # the second call of a shape takes the prepared calls
                got = model(x)
                want = _graph_layerwise(model, x)
                assert got.dtype == dtype and got.tobytes() == want.tobytes()
    fused = nn.fuse(model)(x)  # the fold is within float rounding
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert np.abs(fused - got).max() / np.abs(got).max() <= tol


def test_graph_eval_reads_statistics_and_weights_live():
    model = _graph_bn_stats(models.resnet20(rng=0))
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = model(x)
    model(x)
    model.get_layer("stage2_block1_bn1")._buffers["running_var"][...] *= 4.0
    model.get_layer("stage3_block2_bn2").weight.data[...] *= -1.0
    model.get_layer("stage1_block1_conv1").weight.data[...] *= -1.0
    after = model(x)
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, _graph_layerwise(model, x))
    model.get_layer("conv1").weight.data = np.zeros_like(model.get_layer("conv1").weight.data)
    np.testing.assert_array_equal(model(x), _graph_layerwise(model, x))


def test_graph_eval_keeps_no_cache_and_backward_refuses():
    model = _graph_bn_stats(models.resnet20(rng=0)).train()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = model(x)
    model.backward(np.ones_like(out))
    model.eval()
    model(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(np.ones_like(out))
    for layer in model.layers:  # no array is kept for backward
        for attr in ("_x", "_mean", "_var", "_indices", "_mask"):
            assert getattr(layer, attr, None) is None, (layer.name, attr)
    model.train()
    model.backward(np.ones_like(model(x)))  # training works again


def test_graph_eval_steps_are_per_model():
    model = _graph_bn_stats(models.resnet20(rng=0))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    model(x)
    model(x)
    clone = copy.deepcopy(model)
    assert clone._eval.steps is None
    clone.get_layer("fc").weight.data[...] = 0
    clone.get_layer("bn1")._buffers["running_mean"][...] = 5
    np.testing.assert_array_equal(model(x), _graph_layerwise(model, x))
    np.testing.assert_array_equal(clone(x), _graph_layerwise(clone, x))
    assert not np.array_equal(clone(x), model(x))


def test_batch_norm_planned_in_sequential_is_bit_identical():
    model = _bn_stats(_fusable(np.float32))
    kinds = [type(layer).__name__ for layer in model.layers]
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    plan = next(iter(model._plans._plans.values()))
    for k, step in zip(kinds, plan.steps, strict=True):
        if k.startswith("BatchNorm"):
            assert step[1], k  # planned: a buffer of the plan
    np.testing.assert_array_equal(model(x), _layerwise(model, x))


# --------------------------------------------------------------------------------------------
# layers' prepared calls (a repeated call skips the argument checks)
# --------------------------------------------------------------------------------------------


def _prepared_layers(dtype):
    kw = dict(dtype=dtype, rng=0)
    return [
        (nn.Conv2d(3, 4, 3, padding=1, **kw), (2, 3, 9, 9)),
        (nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False, **kw), (1, 4, 9, 9)),
        (nn.Conv2d(2, 64, 3, padding="same", **kw), (2, 2, 40, 40)),  # threads: shared work
        (nn.Linear(5, 3, **kw), (4, 5)),
        (nn.Linear(5, 3, bias=False, **kw), (2, 7, 5)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 9, 9)),
        (nn.GlobalAvgPool2d(), (2, 3, 5, 7)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [False, True])
def test_prepared_calls_are_bit_identical_to_the_functional_ops(dtype, training):
    from cnncore import functional as Fn

    rng = np.random.default_rng(0)
    for layer, shape in _prepared_layers(dtype):
        layer.train(training)
        x = rng.standard_normal(shape).astype(dtype)
        name = type(layer).__name__
        if name == "Conv2d":
            b = None if layer.bias is None else layer.bias.data
            args = (layer.stride, layer.padding, layer.dilation, layer.groups)
            want = Fn.conv2d(x, layer.weight.data, b, *args)
        elif name == "Linear":
            want = Fn.linear(x, layer.weight.data, None if layer.bias is None else layer.bias.data)
        elif name == "MaxPool2d":
            want = Fn.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, 1, True)
        else:
            want = Fn.global_avg_pool2d(x)
        for _ in range(3):  # the second and third calls take the prepared path
            y = layer(x)
            assert y.tobytes() == want.tobytes() and y is not layer(x), name
        if training and name == "MaxPool2d":  # the argmax too
            _, idx = Fn.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, 1, True, True)
            assert layer._indices.tobytes() == idx.tobytes()
        if training and name != "GlobalAvgPool2d":
            assert layer.backward(np.ones_like(y)) is not None  # the cache was kept


def test_prepared_calls_check_what_changes():
    layer = nn.Conv2d(3, 4, 3, rng=0).eval()
    x = np.ones((1, 3, 6, 6), np.float32)
    layer(x)
    layer(x)
    with pytest.raises(ValueError, match="channels"):
        layer(np.ones((1, 2, 6, 6), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        layer(x.astype(np.int64))
    layer.weight.data = layer.weight.data.astype(np.float64)  # another dtype: refused
    with pytest.raises(TypeError, match="weight"):
        layer(x)
    layer.weight.data = np.ones((4, 3, 2, 2), np.float32)  # another shape: seen
    np.testing.assert_array_equal(layer(x), cnncore.conv2d(x, layer.weight.data, layer.bias.data))
    layer.bias = None
    np.testing.assert_array_equal(layer(x), cnncore.conv2d(x, layer.weight.data))
    # an unbatched sample, a non-contiguous input: the checked path, same results
    np.testing.assert_array_equal(layer(x[0]), cnncore.conv2d(x[0], layer.weight.data))
    xt = np.asfortranarray(np.arange(108, dtype=np.float32).reshape(1, 3, 6, 6))
    np.testing.assert_array_equal(layer(xt), cnncore.conv2d(xt, layer.weight.data))
    lin = nn.Linear(3, 2, rng=0)
    lin(np.ones((2, 3), np.float32))
    lin(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="in_features"):
        lin(np.ones((2, 4), np.float32))
    pool = nn.MaxPool2d(2).eval()
    pool(x)
    with pytest.raises(ValueError):
        pool(np.ones((1, 3, 1, 1), np.float32))


def test_prepared_conv_honours_a_forced_algorithm():
    layer = nn.Conv2d(16, 16, 3, padding=1, rng=0).eval()
    x = np.random.default_rng(0).standard_normal((1, 16, 12, 12)).astype(np.float32)
    layer(x)
    for algo in ("gemm", "direct", "winograd"):
        with cnncore.conv_algorithm(algo):
            want = cnncore.conv2d(x, layer.weight.data, layer.bias.data, 1, 1)
            assert layer(x).tobytes() == want.tobytes(), algo


# --------------------------------------------------------------------------------------------
# graph plans: kernel calls on reused buffers (the second call of a shape on)
# --------------------------------------------------------------------------------------------


class _View(nn.Module, register=False):
    """A user layer returning a view of its input (the plan must not reuse that buffer
    while the view is alive)."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        return x[:, ::-1]

    def output_shape(self, input_shape):
        return tuple(input_shape)


def _aliasing_graph(dtype=np.float32):
    kw = dict(dtype=dtype, rng=0)
    inp = nn.Input((2, 6, 6))
    a = nn.Conv2d(2, 3, 3, padding=1, name="a", **kw)(inp)
    r = nn.ReLU(name="r")(a)  # a is read again below: not in place
    v = _View(name="v")(r)  # a view of r's buffer
    b = nn.Conv2d(3, 3, 1, name="b", **kw)(v)
    s = nn.Add(name="s")([a, r, b])  # three inputs, a and r still alive
    s2 = nn.Add(name="s2")([s, s])  # one value twice
    t = nn.Tanh(name="t")(s2)  # s2 read only here: in place
    f = nn.Flatten(name="f")(t)  # a view of t
    g = nn.GlobalAvgPool2d(name="g")(v)
    out = nn.Linear(3 * 36, 4, name="fc", **kw)(f)
    c = nn.Conv2d(2, 2, 1, name="c", **kw)(inp)
    cf = nn.Flatten(name="cf")(c)  # a view of c, alive after c's last reader:
    cs = nn.Sigmoid(name="cs")(c)  # not in place
    cl = nn.Add(name="cl")([cf, nn.Flatten(name="csf")(cs)])
    return nn.Model(inp, [out, nn.Flatten(name="gf")(g), v, t, cl])


def _graph_layerwise_all(model, x):
    vals = [None] * model._n_slots
    vals[model._in_slots[0]] = nn.module.as_model_input(x, model.dtype)
    for layer, ins, multi, out, _, _, _ in model._steps:
        vals[out] = layer.forward([vals[s] for s in ins] if multi else vals[ins[0]])
    return [np.array(vals[s]) for s in model._out_slots]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_plan_buffers_never_alias_live_values(dtype, restore_threads):
    model = _aliasing_graph(dtype).eval()
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        cnncore.set_num_threads(threads)
        kept = []
        for _ in range(4):  # layerwise, build, then the plan twice
            x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
            got = model(x)
            want = _graph_layerwise_all(model, x)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
            kept.append(([g.copy() for g in got], got))
        for copies, got in kept:  # no returned array was overwritten by a later call
            for c, g in zip(copies, got, strict=True):
                assert c.tobytes() == g.tobytes()
    assert any(p is not None for p in model._eval_plans._plans.values())


def test_graph_plan_reuses_buffers_and_runs_in_place():
    model = nn.fuse(models.resnet20(rng=0).eval())
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    for _ in range(3):
        y = model(x)
    plan = next(p for p in model._eval_plans._plans.values() if p is not None)
    bufs = set()
    for run, *_ in plan.steps:
        for cell in getattr(run, "__closure__", None) or ():
            v = cell.cell_contents
            while type(v) is np.ndarray and v.base is not None:
                v = v.base  # (steps write into views of the plan's byte buffers)
            if type(v) is np.ndarray:
                bufs.add(id(v))
    assert 0 < len(bufs) <= 4  # for ~50 steps
    assert y.tobytes() == _graph_layerwise(model, x).tobytes()
    y2 = model(x)
    assert not np.shares_memory(y, y2)


def test_graph_plan_sees_forced_algorithms_and_weight_updates():
    model = _graph_bn_stats(models.resnet20(rng=0))
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for _ in range(3):
        model(x)
    model.get_layer("stage2_block2_conv1").weight.data[...] *= 0.5
    model.get_layer("bn1")._buffers["running_mean"][...] += 1.0
    np.testing.assert_array_equal(model(x), _graph_layerwise(model, x))
    for algo in ("gemm", "direct"):
        with cnncore.conv_algorithm(algo):
            np.testing.assert_array_equal(model(x), _graph_layerwise(model, x))


def test_graph_plan_reports_bad_layer_outputs():
    class Bad(nn.Module, register=False):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            return x if x.shape[0] < 3 else x[:, :1]

        def output_shape(self, input_shape):
            return tuple(input_shape)

    inp = nn.Input((2, 4, 4))
    model = nn.Model(inp, Bad(name="bad")(nn.ReLU()(inp))).eval()
    x = np.ones((3, 2, 4, 4), np.float32)
    for _ in range(3):  # layerwise, plan build, plan: the same error
        with pytest.raises(ValueError, match="bad"):
            model(x)


def test_sequential_plan_reuses_buffers_and_respects_views():
    kw = dict(rng=0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, **kw),
        _View(),  # a view of the conv's buffer: that buffer is never reused
        nn.Conv2d(3, 3, 3, padding=1, **kw),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 3, 1, **kw),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 36, 4, **kw),
    ).eval()
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)
    for _ in range(3):
        assert model(x).tobytes() == _layerwise(model, x).tobytes()
    lenet = models.lenet5(rng=0).eval()
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    lenet(x)
    plan = next(iter(lenet._plans._plans.values()))
    bufs = set()
    for run, _ in plan.steps:
        for cell in getattr(run, "__closure__", None) or ():
            v = cell.cell_contents
            while type(v) is np.ndarray and v.base is not None:
                v = v.base
            if type(v) is np.ndarray:
                bufs.add(id(v))
    assert 0 < len(bufs) <= 3  # two buffers in turn (plus the odd one that did not fit)
    assert lenet(x).tobytes() == _layerwise(lenet, x).tobytes()


def test_a_plan_in_use_by_another_thread_is_not_shared():
    # while one call runs in a plan's buffers, a call from another thread runs the layers
    seq = models.lenet5(rng=0).eval()
    graph = nn.fuse(models.resnet20(rng=0).eval())
    for model, shape in ((seq, (1, 1, 28, 28)), (graph, (1, 3, 32, 32))):
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(3):
            want = model(x)
        plans = model._plans if model is seq else model._eval_plans
        (plan,) = [p for p in plans._plans.values() if p is not None]
        snapshot = [
            cell.cell_contents.copy()
            for run, *_ in plan.steps
            for cell in (getattr(run, "__closure__", None) or ())
            if type(cell.cell_contents) is np.ndarray
        ]
        with plan.lock:  # (as if another thread were inside plan.run)
            x2 = np.random.default_rng(1).random(shape, dtype=np.float32)
            got = model(x2)
            after = [
                cell.cell_contents
                for run, *_ in plan.steps
                for cell in (getattr(run, "__closure__", None) or ())
                if type(cell.cell_contents) is np.ndarray
            ]
            for a, b in zip(snapshot, after, strict=True):  # its buffers were not touched
                assert a.tobytes() == b.tobytes()
        assert len([p for p in plans._plans.values() if p is not None]) == 1
        assert got.tobytes() == model(x2).tobytes()
        assert model(x).tobytes() == want.tobytes()
        outs = {}

        def worker(k, model=model, shape=shape, outs=outs):
            xs = np.random.default_rng(k).random(shape, dtype=np.float32)
            outs[k] = [model(xs) for _ in range(20)]

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, runs in outs.items():
            for y in runs:  # every call of a thread: the same bits
                assert y.tobytes() == runs[0].tobytes(), k
