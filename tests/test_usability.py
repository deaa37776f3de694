"""What a newcomer runs into: train/eval mode after fit and load, optimizers of replaced
models, targets checked up front, and error messages that say what to do (regressions of
issue 16)."""

from __future__ import annotations

import gc
import inspect
import warnings

import numpy as np
import pytest

import cnncore
from cnncore import models, nn, optim


@pytest.fixture(scope="module")
def data():
    (x, y), _ = cnncore.datasets.load_sample()
    return x[:256], y[:256]


@pytest.mark.parametrize("start_in_train", [True, False])
def test_fit_restores_the_mode_it_found(data, start_in_train):
    x, y = data
    model = models.lenet5(rng=0)
    model.train(start_in_train)
    model.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, verbose=False)
    assert model.training is start_in_train
    assert all(layer.training is start_in_train for layer in model.layers)
    model.evaluate(x, y)
    model.predict(x[:4])
    assert model.training is start_in_train


def test_manual_step_after_fit_and_after_load(data, tmp_path):
    x, y = data
    model = models.lenet5(rng=0)
    model.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, verbose=False)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x[:8]), y[:8])
    model.backward(loss_fn.backward())  # train mode kept: works right after fit
    model.save(tmp_path / "m.npz")
    loaded = cnncore.load(tmp_path / "m.npz")
    assert not loaded.training
    loss_fn(loaded(x[:8]), y[:8])
    with pytest.raises(RuntimeError, match=r"eval mode.*model\.train\(\)"):
        loaded.backward(loss_fn.backward())


def test_optimizer_of_a_replaced_model_warns_once(data, tmp_path):
    x, y = data
    model = models.lenet5(rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    model.save(tmp_path / "m.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # the model is alive: no warning
    model = cnncore.load(tmp_path / "m.npz")
    gc.collect()
    with pytest.warns(RuntimeWarning, match=r"no.*live model|none of the 10 parameters"):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # once is enough
    free = optim.SGD([nn.Parameter(np.zeros(3, np.float32))], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        free.step()  # parameters that never belonged to a module: nothing to say
    assert model is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_hot_targets_train_like_labels(data, dtype):
    x, y = data
    a, b = models.lenet5(rng=0), models.lenet5(rng=0)
    kw = dict(optimizer="sgd", loss="cross_entropy", epochs=1, verbose=False, seed=0)
    ha = a.fit(x, y, **kw)
    hb = b.fit(x, np.eye(10, dtype=dtype)[y], validation_data=(x[:64], np.eye(10)[y[:64]]), **kw)
    assert hb["loss"][0] == pytest.approx(ha["loss"][0], rel=1e-5)
    assert hb["accuracy"][0] == ha["accuracy"][0]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(pa.data, pb.data, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make_y, exc, match",
    [
        (lambda y: np.eye(10)[y] * 2, ValueError, r"in \[0, 1\].*2\.0"),
        (lambda y: np.eye(10)[y] - 0.5, ValueError, r"in \[0, 1\]"),
        (lambda y: y.astype(np.float32), TypeError, r"y\.astype\(np\.int64\)"),
        (lambda y: np.eye(7)[y % 7], ValueError, r"shape \(N, 10\)"),
        (lambda y: y + 10, ValueError, r"\[0, 10\)"),
    ],
)
def test_bad_targets_fail_before_the_first_step(data, make_y, exc, match):
    x, y = data
    model = models.lenet5(rng=0)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(exc, match=match):
        model.fit(x, make_y(y), optimizer="sgd", loss="cross_entropy", verbose=False)
    assert all(np.array_equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


def test_layer_errors_name_the_layer_and_the_users_batch():
    model = models.lenet5(rng=0)
    x = np.zeros((10, 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"layer 7 \(Linear\).*\(10, 576\)") as info:
        model(x)
    assert "400" in str(info.value)
    with pytest.raises(ValueError) as info:
        model.fit(x, np.zeros(10, np.int64), optimizer="sgd", loss="cross_entropy")
    text = str(info.value)
    assert "x with shape (10, 1, 32, 32)" in text and "layer 7 (Linear)" in text
    assert "(10, 576)" in text and "(2, 576)" not in text  # the user's batch, not the trial's


def test_nested_containers_keep_the_innermost_layer():
    inner = nn.Sequential(nn.Flatten(), nn.Linear(5, 2))
    outer = nn.Sequential(nn.ReLU(), inner)
    with pytest.raises(ValueError, match=r"layer 1 \(Sequential\).*layer 1 \(Linear\)") as info:
        outer(np.zeros((3, 6), np.float32))
    assert info.value.inner_input_shape == (3, 6) and info.value.layer_index == 1


def test_nhwc_input_gets_a_transpose_hint():
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"NHWC.*transpose\(0, 3, 1, 2\)"):
        cnncore.conv2d(np.zeros((2, 28, 28, 3), np.float32), w)
    with pytest.raises(ValueError) as info:  # a plain channel mismatch gets no such hint
        cnncore.conv2d(np.zeros((2, 5, 28, 28), np.float32), w)
    assert "NHWC" not in str(info.value)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.zeros(4, np.float16), r"x\.dtype=float16; convert it with x\.astype\(np\.float32\)"),
        ([1, 2, 3], r"x as a list of ints \(NumPy makes it int64\).*np\.asarray"),
        ((True, False), r"a tuple of bools"),
        (np.zeros(4, np.uint8), r"astype\(np\.float32\) / 255"),
        (3, r"a Python int"),
    ],
)
def test_dtype_errors_say_what_to_do(value, match):
    with pytest.raises(TypeError, match=match):
        cnncore.relu(value)


def test_copied_models_own_their_parameters(tmp_path):
    import copy
    import pickle

    model = models.lenet5(rng=0)
    clone = copy.deepcopy(model)
    opt = optim.SGD(clone.parameters(), lr=0.1)
    del model
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # the clone is alive: its optimizer must not warn
    p = pickle.loads(pickle.dumps(clone.parameters()[0]))
    assert p._owner is None and np.array_equal(p.data, clone.parameters()[0].data)


def _public_callables():
    """(qualified name, callable) of the public API: functions and the public methods of
    the public classes of cnncore and its user-facing modules."""
    from cnncore import callbacks, datasets, models, nn, optim

    for mod_name, mod in [
        ("cnncore", cnncore),
        ("nn", nn),
        ("optim", optim),
        ("datasets", datasets),
        ("callbacks", callbacks),
        ("models", models),
    ]:
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if callable(member) and (not attr.startswith("_") or attr == "__init__"):
                        yield f"{mod_name}.{name}.{attr}", member
            elif callable(obj):
                yield f"{mod_name}.{name}", obj


def test_public_annotations_name_real_types():
    """Issue 16: the public API's annotations show what it accepts, not ``Any``
    (``**kwargs`` forwarded to another function excepted)."""
    bare = []
    for qual, func in _public_callables():
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            continue
        for p in sig.parameters.values():
            if p.kind is not p.VAR_KEYWORD and str(p.annotation) in ("Any", "typing.Any"):
                bare.append(f"{qual}({p.name})")
        if str(sig.return_annotation) in ("Any", "typing.Any"):
            bare.append(f"{qual} -> Any")
    assert not bare, bare
