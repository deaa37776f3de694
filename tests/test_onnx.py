"""ONNX export and import: onnxruntime runs every exported layer and model and agrees with
``predict``; the checker passes; export -> import round-trips bit-identically; models
exported by ``torch.onnx.export`` import and agree with torch; bad files are refused."""

import io
import os
import warnings

import numpy as np
import pytest

import cnncore
import cnncore.onnx
from cnncore import models, nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _session(path_or_proto):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    src = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _run(proto, x):
    return _session(proto).run(None, {proto.graph.input[0].name: x})[0]


def _randomize(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are 0/1)."""
    rng = np.random.default_rng(seed)
    for layer in _walk(model):
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)):
            c = layer.num_features
            if layer.track_running_stats:
                layer._buffers["running_mean"][...] = rng.standard_normal(c)
                layer._buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
            if layer.affine:
                layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
                layer.bias.data[...] = rng.standard_normal(c)
    return model


def _walk(m):
    yield m
    for c in m.children():
        yield from _walk(c)


F32_TOL = dict(rtol=1e-5, atol=1e-5)

# (id, factory(dtype) -> model, input shape, round-trips through import)
CASES = [
    ("conv", lambda d: nn.Sequential(nn.Conv2d(3, 4, 3, dtype=d)), (2, 3, 9, 8), True),
    (
        "conv-stride-dil-groups-nobias",
        lambda d: nn.Sequential(
            nn.Conv2d(
                4,
                6,
                (3, 2),
                stride=(2, 1),
                padding=(1, 2),
                dilation=(1, 2),
                groups=2,
                bias=False,
                dtype=d,
            )
        ),
        (2, 4, 9, 8),
        True,
    ),
    (
        "conv-same-even",
        lambda d: nn.Sequential(nn.Conv2d(2, 3, 4, padding="same", dtype=d)),
        (1, 2, 7, 6),
        True,
    ),
    (
        "conv-reflect",
        lambda d: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=d)),
        (2, 2, 6, 7),
        True,
    ),
    (
        "conv-replicate-same",
        lambda d: nn.Sequential(
            nn.Conv2d(2, 3, 4, padding="same", padding_mode="replicate", dtype=d)
        ),
        (2, 2, 6, 7),
        True,
    ),
    (
        "linear-2d",
        lambda d: nn.Sequential(nn.Flatten(), nn.Linear(12, 5, dtype=d)),
        (3, 3, 2, 2),
        True,
    ),
    (
        "linear-4d-nobias",
        lambda d: nn.Sequential(nn.Linear(4, 3, bias=False, dtype=d)),
        (2, 3, 5, 4),
        True,
    ),
    ("linear-3d", lambda d: nn.Sequential(nn.Linear(4, 3, dtype=d), nn.ReLU()), (2, 5, 4), True),
    ("bn2d", lambda d: nn.Sequential(nn.BatchNorm2d(3, dtype=d)), (2, 3, 4, 5), True),
    (
        "bn1d-2d",
        lambda d: nn.Sequential(nn.BatchNorm1d(5, eps=1e-3, momentum=0.3, dtype=d)),
        (4, 5),
        True,
    ),
    ("bn1d-3d", lambda d: nn.Sequential(nn.BatchNorm1d(3, dtype=d)), (2, 3, 6), True),
    ("sync-bn", lambda d: nn.Sequential(nn.SyncBatchNorm(3, dtype=d)), (2, 3, 4, 5), False),
    (
        "bn-no-affine",
        lambda d: nn.Sequential(nn.BatchNorm2d(3, affine=False, dtype=d)),
        (2, 3, 4, 4),
        False,
    ),
    (
        "bn-batch-stats",
        lambda d: nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False, dtype=d)),
        (4, 3, 5, 5),
        False,
    ),
    ("maxpool", lambda d: nn.Sequential(nn.MaxPool2d(2)), (2, 3, 8, 9), True),
    (
        "maxpool-pad-dil-stride",
        lambda d: nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, dilation=(1, 2))),
        (2, 2, 9, 11),
        True,
    ),
    (
        "maxpool-ceil",
        lambda d: nn.Sequential(nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        (1, 2, 8, 10),
        True,
    ),
    (
        "maxpool-ceil-pad",
        lambda d: nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)),
        (1, 2, 6, 9),
        True,
    ),
    ("avgpool", lambda d: nn.Sequential(nn.AvgPool2d(2)), (2, 3, 8, 9), True),
    (
        "avgpool-pad-include",
        lambda d: nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)),
        (2, 2, 7, 8),
        True,
    ),
    (
        "avgpool-pad-exclude",
        lambda d: nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
        (2, 2, 7, 8),
        True,
    ),
    (
        "avgpool-ceil",
        lambda d: nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)),
        (2, 2, 8, 10),
        False,
    ),
    (
        "avgpool-ceil-exclude",
        lambda d: nn.Sequential(
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        ),
        (2, 2, 8, 10),
        False,
    ),
    (
        "avgpool-divisor",
        lambda d: nn.Sequential(nn.AvgPool2d(2, padding=1, divisor_override=3)),
        (2, 2, 7, 6),
        False,
    ),
    ("adaptive-1x1", lambda d: nn.Sequential(nn.AdaptiveAvgPool2d(1)), (2, 3, 5, 6), False),
    ("adaptive-even", lambda d: nn.Sequential(nn.AdaptiveAvgPool2d((2, 3))), (2, 3, 8, 9), False),
    (
        "adaptive-uneven",
        lambda d: nn.Sequential(nn.AdaptiveAvgPool2d((3, 4))),
        (2, 3, 7, 10),
        False,
    ),
    ("global-avg", lambda d: nn.Sequential(nn.GlobalAvgPool2d()), (2, 3, 5, 6), True),
    ("flatten", lambda d: nn.Sequential(nn.Flatten()), (2, 3, 4, 5), True),
    ("flatten-2", lambda d: nn.Sequential(nn.Flatten(2)), (2, 3, 4, 5), True),
    ("flatten-0-1", lambda d: nn.Sequential(nn.Flatten(0, 1)), (2, 3, 4, 5), True),
    ("flatten-1-2", lambda d: nn.Sequential(nn.Flatten(1, 2)), (2, 3, 4, 5), True),
    ("dropout", lambda d: nn.Sequential(nn.Dropout(0.3), nn.ReLU()), (2, 3), True),
    ("dropout-1", lambda d: nn.Sequential(nn.Dropout(1.0), nn.Tanh()), (2, 3), False),
    ("relu", lambda d: nn.Sequential(nn.ReLU()), (2, 3, 4), True),
    ("leaky", lambda d: nn.Sequential(nn.LeakyReLU(0.2)), (2, 3, 4), True),
    ("sigmoid", lambda d: nn.Sequential(nn.Sigmoid()), (2, 3, 4), True),
    ("tanh", lambda d: nn.Sequential(nn.Tanh()), (2, 3, 4), True),
    ("softmax-1", lambda d: nn.Sequential(nn.Softmax(1)), (2, 3, 4, 5), True),
    ("softmax-last", lambda d: nn.Sequential(nn.Softmax(-1)), (2, 3), True),
    ("logsoftmax", lambda d: nn.Sequential(nn.LogSoftmax(1)), (2, 5), True),
    (
        "nested",
        lambda d: nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 2, 3, dtype=d), nn.ReLU()),
            nn.Flatten(),
            nn.Linear(8, 2, dtype=d),
        ),
        (2, 1, 4, 4),
        False,  # imports as one flat Sequential
    ),
]


def _case(case, dtype=np.float32):
    _, factory, shape, _ = case
    nn.init.manual_seed(0)
    model = _randomize(factory(dtype)).eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    return model, x


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_layer_runs_in_onnxruntime(case):
    model, x = _case(case)
    proto = cnncore.onnx.to_model_proto(model, x.shape)
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_allclose(_run(proto, x), model.predict(x), **F32_TOL)
    if case[0] != "bn-batch-stats":  # dynamic batch: any batch size
        x1 = x[:1]
        np.testing.assert_allclose(_run(proto, x1), model.predict(x1), **F32_TOL)


@pytest.mark.parametrize("case", [c for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
def test_export_import_round_trip_is_bit_identical(case, tmp_path):
    model, x = _case(case)
    path = tmp_path / "m.onnx"
    cnncore.onnx.export(model, path, x.shape)
    back = cnncore.onnx.load(path)
    assert repr(back) == repr(model)
    assert not back.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2
        if not k.endswith("num_batches_tracked"):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), k
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize("name", ["conv-stride-dil-groups-nobias", "bn2d", "linear-3d", "nested"])
def test_float64_models(name, tmp_path):
    case = next(c for c in CASES if c[0] == name)
    model, x = _case(case, np.float64)
    proto = cnncore.onnx.to_model_proto(model, x.shape)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    try:
        y = _run(proto, x)
    except Exception as exc:  # onnxruntime lacks some double kernels
        if "NOT_IMPLEMENTED" not in str(exc):
            raise
    else:
        np.testing.assert_allclose(y, model.predict(x), rtol=1e-12, atol=1e-12)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    back = cnncore.onnx.load(path)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def _zoo():
    # Sequential models only: exporting graph models (nn.Model: resnet*) is not written yet
    return {
        "lenet5": models.lenet5(rng=0),
        "simple_cnn": models.simple_cnn(rng=0, dropout=0.2),
        **{name: models.build(name, rng=0) for name in ("lenet", "cnn")},
    }


@pytest.mark.parametrize("name", sorted(_zoo()))
@pytest.mark.parametrize("opset", [13, 17, 21])
def test_every_model_in_cnncore_models(name, opset, tmp_path):
    model = _zoo()[name].eval()
    path = tmp_path / "m.onnx"
    cnncore.onnx.export(model, path, input_shape=(1, 1, 28, 28), opset=opset)
    onnx.checker.check_model(str(path), full_check=True)
    sess = _session(str(path))
    for n in (1, 8):
        x = np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32)
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], model.predict(x), **F32_TOL)
    back = cnncore.onnx.load(path)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_static_batch_and_names(tmp_path):
    model = models.lenet5(rng=0)
    proto = cnncore.onnx.to_model_proto(model, (3, 1, 28, 28), dynamic_batch=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 28, 28]
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [3, 10]
    assert proto.producer_name == "cnncore"
    dyn = cnncore.onnx.to_model_proto(model)
    assert dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert dyn.opset_import[0].version == 17
    back = cnncore.onnx.from_model_proto(proto)  # a static batch imports too
    assert repr(back) == repr(model)


def test_circular_padding_needs_opset_19():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"))
    with pytest.raises(ValueError, match="opset >= 19"):
        cnncore.onnx.to_model_proto(model, (1, 1, 5, 5))
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 6)).astype(np.float32)
    proto = cnncore.onnx.to_model_proto(model, x.shape, opset=19)
    np.testing.assert_allclose(_run(proto, x), model.predict(x), **F32_TOL)
    back = cnncore.onnx.from_model_proto(proto)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(opset=12), ValueError, "opset"),
        (dict(opset=1000), ValueError, "opset"),
        (dict(opset="17"), ValueError, "opset"),
        (dict(opset=True), ValueError, "opset"),
        (dict(input_shape=(1, 1, 28)), ValueError, "does not accept"),
        (dict(input_shape=(1, 0, 28, 28)), ValueError, "input_shape"),
        (dict(input_shape="1,1,28,28"), ValueError, "input_shape"),
        (dict(input_shape=(1, 1.5, 28, 28)), ValueError, "input_shape"),
        (dict(input_shape=(1, 3, 28, 28)), ValueError, "does not accept"),
        (dict(dynamic_batch=1), TypeError, "dynamic_batch"),
    ],
)
def test_export_bad_arguments(kwargs, exc, match, tmp_path):
    args = dict(input_shape=(1, 1, 28, 28)) | kwargs
    with pytest.raises(exc, match=match):
        cnncore.onnx.export(models.lenet5(rng=0), tmp_path / "m.onnx", **args)
    with pytest.raises(TypeError, match="Module"):
        cnncore.onnx.export("lenet", tmp_path / "m.onnx")


class _Scale(nn.Module, register=False):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return np.asarray(x) * np.float32(self.factor)


class _OnnxScale(_Scale, register=False):
    def _onnx_export(self, ctx, inputs):
        return [ctx.node("Mul", [inputs[0], ctx.constant(self.factor, "factor")], "scale")]


def test_layers_without_exporter_and_the_export_hook():
    with pytest.raises(ValueError, match="no ONNX exporter for _Scale"):
        cnncore.onnx.to_model_proto(nn.Sequential(nn.ReLU(), _Scale(2.0)), (1, 3))
    model = nn.Sequential(nn.Linear(3, 2), _OnnxScale(2.5))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    proto = cnncore.onnx.to_model_proto(model, x.shape)
    np.testing.assert_allclose(_run(proto, x), model.predict(x), **F32_TOL)


# --------------------------------------------------------------------------------------------
# Models exported by PyTorch
# --------------------------------------------------------------------------------------------


def _torch_export(tmodel, shape, opset, dynamic=True):
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    kwargs = dict(input_names=["x"], output_names=["y"], opset_version=opset)
    if dynamic:
        kwargs["dynamic_axes"] = {"x": {0: "n"}, "y": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tmodel, torch.zeros(shape), buf, dynamo=False, **kwargs)
    return buf.getvalue()


def _torch_models(torch):
    tnn = torch.nn
    torch.manual_seed(0)
    cnn = tnn.Sequential(
        tnn.Conv2d(1, 8, 3, padding=1),
        tnn.BatchNorm2d(8),
        tnn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", groups=2, bias=False),
        tnn.LeakyReLU(0.1),
        tnn.AvgPool2d(2),
        tnn.Conv2d(8, 12, 3, stride=2, padding=1, dilation=1),
        tnn.Tanh(),
        tnn.Flatten(),
        tnn.Dropout(0.3),
        tnn.Linear(12 * 4 * 4, 32),
        tnn.BatchNorm1d(32),
        tnn.Sigmoid(),
        tnn.Linear(32, 10),
        tnn.LogSoftmax(dim=1),
    )
    gap = tnn.Sequential(
        tnn.Conv2d(1, 4, 5, padding="same"),
        tnn.ReLU(),
        tnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        tnn.Conv2d(4, 6, 3),
        tnn.AdaptiveAvgPool2d(1),
        tnn.Flatten(),
        tnn.Linear(6, 10, bias=False),
        tnn.Softmax(dim=1),
    )
    for m in (cnn, gap):  # non-trivial running statistics
        m.train()
        with torch.no_grad():
            for _ in range(3):
                m(torch.randn(16, 1, 28, 28))
        m.eval()
    return {"cnn": cnn, "gap": gap}


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", ["cnn", "gap"])
def test_torch_exported_models_import(name, opset, tmp_path):
    torch = pytest.importorskip("torch")
    tmodel = _torch_models(torch)[name]
    path = tmp_path / "torch.onnx"
    path.write_bytes(_torch_export(tmodel, (1, 1, 28, 28), opset))
    model = cnncore.onnx.load(path)
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    with torch.inference_mode():
        expected = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, **F32_TOL)


def test_torch_flatten_variants_import(tmp_path):
    torch = pytest.importorskip("torch")

    class View(torch.nn.Module):
        def forward(self, x):
            return x.reshape(-1, 3 * 4 * 4)

    for tail in (View(), torch.nn.Flatten(2)):
        tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), tail).eval()
        path = tmp_path / "t.onnx"
        path.write_bytes(_torch_export(tmodel, (2, 1, 6, 6), 17, dynamic=False))
        model = cnncore.onnx.load(path)
        x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
        with torch.inference_mode():
            expected = tmodel(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.predict(x), expected, **F32_TOL)


# --------------------------------------------------------------------------------------------
# Bad files and graphs cnncore cannot import
# --------------------------------------------------------------------------------------------


def _assert_refused(path, match=None):
    with pytest.raises(ValueError) as info:
        cnncore.onnx.load(path)
    assert os.fspath(path) in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)


def test_truncated_and_corrupted_files(tmp_path):
    model = _randomize(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    )
    good = tmp_path / "good.onnx"
    cnncore.onnx.export(model, good, (1, 1, 4, 4))
    raw = good.read_bytes()
    for cut in sorted({0, 1, 5, 17, len(raw) // 3, len(raw) // 2, len(raw) - 40, len(raw) - 1}):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(raw[:cut])
        _assert_refused(bad)
    rng = np.random.default_rng(0)
    for i, pos in enumerate(rng.integers(0, len(raw), 120)):
        b = bytearray(raw)
        b[pos] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"flip{i}.onnx"
        path.write_bytes(bytes(b))
        try:
            cnncore.onnx.load(path)
        except ValueError as exc:
            assert os.fspath(path) in str(exc)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(rng.integers(0, 256, 5000).astype(np.uint8).tobytes())
    _assert_refused(junk)
    with pytest.raises(FileNotFoundError):
        cnncore.onnx.load(tmp_path / "missing.onnx")


def _graph(nodes, inits, in_shape=("n", 1, 4, 4), out_shape=None, elem=None, inputs=None):
    helper = onnx.helper
    elem = elem or onnx.TensorProto.FLOAT
    ins = inputs or [helper.make_tensor_value_info("x", elem, list(in_shape))]
    outs = [helper.make_tensor_value_info("y", elem, out_shape)]
    graph = helper.make_graph(nodes, "g", ins, outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(tmp_path, proto, name="crafted.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString())
    return path


def _w(name, shape, dtype=np.float32):
    return onnx.numpy_helper.from_array(np.ones(shape, dtype), name)


def test_unsupported_operators_are_listed_in_one_error(tmp_path):
    h = onnx.helper
    nodes = [
        h.make_node("Cos", ["x"], ["a"]),
        h.make_node("Relu", ["a"], ["b"]),
        h.make_node("NonZero", ["b"], ["s"]),
        h.make_node("Erf", ["b"], ["c"]),
        h.make_node("Cos", ["c"], ["y"]),
        h.make_node("Custom", ["y"], ["z"], domain="com.example"),
    ]
    _assert_refused(
        _save(tmp_path, _graph(nodes, [])), "['Cos', 'Erf', 'NonZero', 'com.example.Custom']"
    )


def test_graphs_cnncore_cannot_import(tmp_path):
    h = onnx.helper
    cases = {
        "residual": (
            [h.make_node("Relu", ["x"], ["a"]), h.make_node("Add", ["a", "x"], ["y"])],
            [],
            "graph model",
        ),
        "branch-read-twice": (
            [
                h.make_node("Relu", ["x"], ["a"]),
                h.make_node("Relu", ["a"], ["y"]),
                h.make_node("Sigmoid", ["a"], ["z"]),
            ],
            [],
            "several nodes",
        ),
        "conv-weight-not-constant": (
            [h.make_node("Conv", ["x", "x"], ["y"])],
            [],
            "two tensors",
        ),
        "conv-asymmetric": (
            [h.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 0], strides=[2, 2])],
            [_w("w", (2, 1, 3, 3))],
            "asymmetric",
        ),
        "conv-channels": (
            [h.make_node("Conv", ["x", "w"], ["y"])],
            [_w("w", (2, 3, 3, 3))],
            "input channels",
        ),
        "conv-3d": (
            [h.make_node("Conv", ["x", "w"], ["y"])],
            [_w("w", (2, 1, 3))],
            "2-D",
        ),
        "add-constant-alone": (
            [h.make_node("Add", ["x", "w"], ["y"])],
            [_w("w", (4,))],
            "bias of a MatMul",
        ),
        "gemm-transA": (
            [
                h.make_node("Flatten", ["x"], ["f"]),
                h.make_node("Gemm", ["f", "w"], ["y"], transA=1),
            ],
            [_w("w", (16, 3))],
            "transA",
        ),
        "reshape-not-flatten": (
            [h.make_node("Reshape", ["x", "s"], ["y"])],
            [onnx.numpy_helper.from_array(np.array([0, 2, 8], np.int64), "s")],
            "not a flatten",
        ),
        "pad-nonzero-value": (
            [h.make_node("Pad", ["x", "p", "v"], ["a"]), h.make_node("Conv", ["a", "w"], ["y"])],
            [
                onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p"),
                onnx.numpy_helper.from_array(np.array(2.0, np.float32), "v"),
                _w("w", (1, 1, 3, 3)),
            ],
            "non-zero value",
        ),
        "pad-then-relu": (
            [
                h.make_node("Pad", ["x", "p"], ["a"], mode="reflect"),
                h.make_node("Relu", ["a"], ["y"]),
            ],
            [onnx.numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p")],
            "other than a Conv",
        ),
        "bn-training": (
            [h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)],
            [_w(n, (1,)) for n in "sbmv"],
            "training_mode",
        ),
        "maxpool-indices-used": (
            [
                h.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2]),
                h.make_node("Relu", ["i"], ["z"]),
            ],
            [],
            "extra output",
        ),
        "output-not-end": (
            [h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"])],
            [],
            "not the end of the chain",
        ),
        "no-nodes": ([], [], "no layers"),
    }
    for name, (nodes, inits, match) in cases.items():
        proto = _graph(nodes, inits)
        if name == "output-not-end":
            proto.graph.output[0].name = "nothing"
        if name == "no-nodes":
            proto.graph.output[0].name = "x"
        _assert_refused(_save(tmp_path, proto, f"{name}.onnx"), match)


def test_bad_inputs_and_tensors(tmp_path):
    h = onnx.helper
    relu = [h.make_node("Relu", ["x"], ["y"])]
    cases = {
        "int-input": (_graph(relu, [], elem=onnx.TensorProto.INT64), "float32 or float64"),
        "dynamic-spatial": (_graph(relu, [], in_shape=("n", 1, "h", 4)), "static shape"),
        "two-inputs": (
            _graph(
                relu,
                [],
                inputs=[
                    h.make_tensor_value_info("x", 1, ["n", 2]),
                    h.make_tensor_value_info("x2", 1, ["n", 2]),
                ],
            ),
            "2 inputs",
        ),
    }
    # a tensor whose declared shape is far larger than its data: refused, nothing allocated
    big = onnx.TensorProto()
    big.name, big.data_type = "w", onnx.TensorProto.FLOAT
    big.dims.extend([1 << 20, 1 << 20])
    big.raw_data = b"\0" * 16
    conv = [h.make_node("Conv", ["x", "w"], ["y"])]
    cases["huge-dims"] = (_graph(conv, [big]), "declares shape")
    typed = onnx.TensorProto()
    typed.name, typed.data_type = "w", onnx.TensorProto.FLOAT
    typed.dims.extend([1 << 30])
    typed.float_data.extend([1.0, 2.0])
    cases["huge-typed"] = (_graph(conv, [typed]), "declares shape")
    neg = onnx.TensorProto()
    neg.name, neg.data_type = "w", onnx.TensorProto.FLOAT
    neg.dims.extend([-4])
    cases["negative-dims"] = (_graph(conv, [neg]), "negative dims")
    ext = _w("w", (2, 1, 3, 3))
    ext.ClearField("raw_data")
    ext.data_location = onnx.TensorProto.EXTERNAL
    e = ext.external_data.add()
    e.key, e.value = "location", "/etc/passwd"
    cases["external"] = (_graph(conv, [ext]), "external file")
    strings = onnx.TensorProto()
    strings.name, strings.data_type = "w", onnx.TensorProto.STRING
    cases["string-tensor"] = (_graph(conv, [strings]), "unsupported data type STRING")
    no_opset = _graph(relu, [])
    del no_opset.opset_import[:]
    cases["no-opset"] = (no_opset, "opset")
    for name, (proto, match) in cases.items():
        _assert_refused(_save(tmp_path, proto, f"{name}.onnx"), match)


def test_constant_nodes_and_opset_11_pads(tmp_path):
    """Weights given by Constant nodes; Pad with constant zeros folded into the Conv."""
    h = onnx.helper
    w = np.random.default_rng(0).standard_normal((2, 1, 3, 3)).astype(np.float32)
    nodes = [
        h.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w, "w")),
        h.make_node("Constant", [], ["p"], value_ints=[0, 0, 1, 2, 0, 0, 1, 2]),
        h.make_node("Pad", ["x", "p"], ["a"]),
        h.make_node("Conv", ["a", "w"], ["y"]),
    ]
    model = cnncore.onnx.load(_save(tmp_path, _graph(nodes, [])))
    assert model[0].padding == (1, 2) and model[0].padding_mode == "zeros"
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4)).astype(np.float32)
    expected = _run(_graph(nodes, []), x)
    np.testing.assert_allclose(model.predict(x), expected, **F32_TOL)
