"""The module registry (``Module.__init_subclass__``) that save/load rebuild models from, the
layers' declared properties that Sequential's run order uses, and the model protocol of
``fit``: user-defined modules work like built-in ones."""

import json
import zipfile

import numpy as np
import pytest

import cnncore
from cnncore import nn, optim
from cnncore.nn import module as nn_module
from cnncore.nn import serialization

BUILT_IN = [
    "Conv2d",
    "Linear",
    "Flatten",
    "Dropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Sequential",
]


class _RegScale(nn.Module):
    """A user layer with a parameter and a buffer: y = x * weight + offset."""

    def __init__(self, features, *, dtype="float32"):
        super().__init__()
        self.features = features
        self.dtype = np.dtype(dtype)
        self.register_parameter("weight", np.arange(features, dtype=dtype) + 1)
        self.register_buffer("offset", np.full(features, 0.5, dtype))

    def forward(self, x):
        self._x = x
        return x * self.weight.data + self._buffers["offset"]

    def backward(self, grad_output, input_grad=True):
        self.weight.grad += (grad_output * self._x).reshape(-1, self.features).sum(axis=0)
        return grad_output * self.weight.data if input_grad else None

    def get_config(self):
        return {"features": self.features, "dtype": self.dtype.name}


class _RegSized(_RegScale):
    """The same layer, declaring its bytes so load can refuse a crafted file early."""

    built = 0

    def __init__(self, features, *, dtype="float32"):
        type(self).built += 1
        super().__init__(features, dtype=dtype)

    @classmethod
    def config_nbytes(cls, config):
        n = nn_module.config_positive_int(config.get("features"))
        return 0 if n is None else 2 * n * nn_module.config_itemsize(config)


class _RegResidual(nn.Module):
    """A user container: y = x + body(x); rebuilt by the default from_config."""

    def __init__(self, *body, scale=1.0):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.scale = scale

    def children(self):
        return list(self.body.layers)

    def forward(self, x):
        return x + self.scale * self.body(x)

    def backward(self, grad_output, input_grad=True):
        g = self.body.backward(self.scale * grad_output, input_grad=input_grad)
        return grad_output + g if input_grad else None

    def get_config(self):
        return {"scale": self.scale}


class _RegHidden(nn.Module, register=False):
    def forward(self, x):
        return x


def test_built_in_classes_are_registered_and_private_bases_are_not():
    reg = nn_module.registered_modules()
    for name in BUILT_IN:
        assert reg[name] is getattr(nn, name)
        assert nn_module.registered_name(getattr(nn, name)) == name
    for base in (
        "_BatchNorm",
        "_OutputCached",
        "_SoftmaxBase",
        "_Loss",
        "_ShapeCachedPool",
        "_RegHidden",
        "Module",
    ):
        assert base not in reg
    assert nn_module.registered_name(_RegHidden) is None
    assert reg["_RegScale"] is _RegScale
    assert set(serialization._registry()) >= set(BUILT_IN)
    assert "_RegScale" not in serialization._registry()  # cnncore's own only


def test_old_import_paths_give_the_same_objects():
    from cnncore import _parameter
    from cnncore.nn import layers, parameter, sequential

    assert nn.Parameter is parameter.Parameter is _parameter.Parameter
    assert layers.Conv2d is nn.Conv2d and layers.GlobalAvgPool2d is nn.GlobalAvgPool2d
    assert set(layers.__all__) <= set(nn.__all__)
    assert sequential.as_model_input is nn_module.as_model_input


def test_a_user_layer_saves_and_loads(tmp_path):
    model = nn.Sequential(
        nn.Linear(3, 4, rng=0),
        _RegScale(4, dtype="float32"),
        _RegResidual(nn.Linear(4, 4, rng=1), nn.Tanh(), scale=0.5),
        nn.ReLU(),
    )
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    model.fit(
        x, np.array([0, 1, 2, 3, 0]), optimizer="adam", loss="cross_entropy", verbose=False, seed=0
    )
    path = tmp_path / "m.npz"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        arch = json.loads(np.load(zf.open("__architecture__.npy")).tobytes())
    assert arch["model"]["layers"][1] == {
        "class": "_RegScale",
        "config": {"features": 4, "dtype": "float32"},
    }
    assert arch["model"]["layers"][2]["class"] == "_RegResidual"
    assert arch["model"]["layers"][2]["config"] == {"scale": 0.5}
    assert [c["class"] for c in arch["model"]["layers"][2]["layers"]] == ["Linear", "Tanh"]
    loaded = cnncore.load(path)
    assert isinstance(loaded[1], _RegScale) and isinstance(loaded[2], _RegResidual)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded[1]._buffers["offset"], model[1]._buffers["offset"])


def test_an_unregistered_layer_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="only registered modules can be saved.*_RegHidden"):
        nn.Sequential(_RegHidden()).save(tmp_path / "m.npz")


def _write(path, model_spec, **arrays):
    arch = {"format": serialization.FORMAT, "version": serialization.VERSION, "model": model_spec}
    np.savez(path, __architecture__=np.frombuffer(json.dumps(arch).encode(), np.uint8), **arrays)


def test_user_layer_sizes_are_checked(tmp_path):
    small = {"param:0.weight": np.zeros(2, np.float32), "buffer:0.offset": np.zeros(2, np.float32)}
    # without config_nbytes: refused as soon as the layer is built
    path = tmp_path / "undeclared.npz"
    _write(
        path,
        {
            "class": "Sequential",
            "layers": [{"class": "_RegScale", "config": {"features": 100_000}}],
        },
        **small,
    )
    with pytest.raises(ValueError, match="allocates more bytes of parameters than the archive"):
        cnncore.load(path)
    # with config_nbytes: refused before anything is built
    path = tmp_path / "declared.npz"
    _write(
        path,
        {"class": "Sequential", "layers": [{"class": "_RegSized", "config": {"features": 10**9}}]},
        **small,
    )
    before = _RegSized.built
    with pytest.raises(ValueError, match="needs 8000000000 bytes of parameters"):
        cnncore.load(path)
    assert _RegSized.built == before
    # and a file that fits loads
    path = tmp_path / "ok.npz"
    _write(
        path,
        {"class": "Sequential", "layers": [{"class": "_RegSized", "config": {"features": 2}}]},
        **{
            "param:0.weight": np.array([3.0, 4.0], np.float32),
            "buffer:0.offset": np.array([1.0, 2.0], np.float32),
        },
    )
    loaded = cnncore.load(path)
    np.testing.assert_array_equal(loaded[0].weight.data, [3.0, 4.0])


@pytest.mark.parametrize(
    "config",
    [
        {"in_features": 3, "out_features": 2, "dtype": [1]},
        {"in_features": 3, "out_features": 2, "dtype": {"a": 1}},
        {"in_channels": [1], "out_channels": 2, "kernel_size": [[3], 3]},
    ],
)
def test_unhashable_config_values_are_a_named_value_error(tmp_path, config):
    """(load raised a bare TypeError from the size bound's dict lookup.)"""
    path = tmp_path / "m.npz"
    name = "Linear" if "in_features" in config else "Conv2d"
    _write(path, {"class": "Sequential", "layers": [{"class": name, "config": config}]})
    with pytest.raises(ValueError, match="not a valid cnncore model file"):
        cnncore.load(path)
    _write(path, {"class": ["Linear"], "config": config})
    with pytest.raises(ValueError, match="not a valid cnncore model file"):
        cnncore.load(path)


def test_a_taken_name_is_refused_at_class_creation():
    with pytest.raises(
        ValueError,
        match="'Linear' is already registered by cnncore.nn.linear.Linear.*registry_name",
    ):

        class Linear(nn.Linear):
            pass

    class MyLinear(nn.Linear, registry_name="tests.registry.Linear"):
        pass

    assert nn_module.registered_modules()["tests.registry.Linear"] is MyLinear
    assert nn_module.registered_modules()["Linear"] is nn.Linear
    assert nn_module.registered_name(MyLinear) == "tests.registry.Linear"
    with pytest.raises(TypeError, match="registry_name was given with register=False"):

        class Other(nn.Module, register=False, registry_name="x"):
            pass


def test_redefining_a_class_replaces_its_entry():
    classes = []
    for _ in range(2):

        class _RegTwice(nn.Module):
            pass

        classes.append(_RegTwice)
    assert classes[0] is not classes[1]
    assert nn_module.registered_modules()["_RegTwice"] is classes[1]


def test_declared_properties_drive_the_run_order_and_are_not_inherited():
    assert nn.ReLU.elementwise_monotone and nn.MaxPool2d.max_selecting
    assert not nn.LeakyReLU.elementwise_monotone and not nn.AvgPool2d.max_selecting

    class MyReLU(nn.ReLU):  # inherits forward, not the declaration
        pass

    class Clamp(nn.Module):
        elementwise_monotone = True

        def forward(self, x):
            return np.maximum(x, 0)

    assert not MyReLU.elementwise_monotone and Clamp.elementwise_monotone
    seq = nn.Sequential(
        nn.ReLU(),
        nn.MaxPool2d(2),
        MyReLU(),
        nn.MaxPool2d(2),
        Clamp(),
        nn.MaxPool2d(2),
        nn.MaxPool2d(2),
        nn.ReLU(),
    )
    assert seq._run_order() == [1, 0, 2, 3, 5, 4, 6, 7]


def test_fit_evaluate_predict_take_any_module():
    from cnncore.nn import training

    model = _RegResidual(nn.Linear(3, 3, rng=0), nn.Dropout(0.2), scale=0.5)
    x = np.random.default_rng(1).standard_normal((16, 3)).astype(np.float32)
    y = np.arange(16) % 3
    hist = training.fit(
        model,
        x,
        y,
        optimizer="sgd",
        loss="cross_entropy",
        epochs=2,
        verbose=False,
        seed=3,
        batch_size=4,
    )
    assert len(hist.epoch) == 2 and isinstance(model.optimizer, optim.SGD)
    assert model.dtype == np.float32
    out = training.predict(model, x)
    assert out.shape == (16, 3)
    assert set(training.evaluate(model, x, y)) == {"loss", "accuracy"}
    with pytest.raises(TypeError, match="model must be a cnncore.nn.Module"):
        training.fit(object(), x, y, optimizer="sgd", loss="mse")


def test_the_model_side_imports_no_model_or_layer():
    """optim does not import cnncore.nn; training and serialization import neither Sequential
    nor any layer family (they use the model protocol and the registry)."""
    from test_layout import import_graph

    graph = import_graph()
    assert not {m for m in graph["cnncore.optim"] if m.startswith("cnncore.nn")}
    families = {
        f"cnncore.nn.{m}"
        for m in (
            "sequential",
            "layers",
            "conv",
            "linear",
            "reshape",
            "dropout",
            "normalization",
            "pooling",
            "activation",
        )
    }
    assert not graph["cnncore.nn.training"] & families
    assert not graph["cnncore.nn.serialization"] & families
    assert not graph["cnncore.nn.sequential"] & (families - {"cnncore.nn.sequential"})
