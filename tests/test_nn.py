"""Layers, Sequential, training, save/load: finite differences, PyTorch modules with copied
weights, determinism and bad input."""

import math
import os
import signal
import zipfile

import numpy as np
import pytest
from conftest import fd_grad

import cnncore
from cnncore import models, nn, optim

# --------------------------------------------------------------------------------------------
# Finite-difference checks of every layer's backward (float64)
# --------------------------------------------------------------------------------------------


def _check_layer(layer, x, rng, reseed=None):
    x = x.astype(np.float64)
    layer.train()

    def run():
        if reseed:
            reseed()
        return layer(x)

    y = run()
    g = rng.standard_normal(np.shape(y))
    layer.zero_grad()
    dx = layer.backward(g)

    def loss():
        return float(np.sum(run() * g))

    np.testing.assert_allclose(dx, fd_grad(loss, x), rtol=1e-3, atol=1e-5)
    for p in layer.parameters():
        analytic = p.grad.copy()
        np.testing.assert_allclose(
            analytic, fd_grad(loss, p.data), rtol=1e-3, atol=1e-5, err_msg=p.name
        )


F64 = dict(dtype=np.float64)

LAYERS = [
    ("conv", lambda: nn.Conv2d(2, 3, 3, padding=1, **F64), (2, 2, 5, 6)),
    (
        "conv-strided-dilated-groups",
        lambda: nn.Conv2d(
            4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, **F64
        ),
        (2, 4, 7, 6),
    ),
    (
        "conv-same-reflect",
        lambda: nn.Conv2d(2, 2, 4, padding="same", padding_mode="reflect", **F64),
        (1, 2, 6, 5),
    ),
    (
        "conv-replicate",
        lambda: nn.Conv2d(1, 2, 3, padding=1, padding_mode="replicate", **F64),
        (2, 1, 5, 5),
    ),
    (
        "conv-circular",
        lambda: nn.Conv2d(1, 2, 3, padding=2, padding_mode="circular", **F64),
        (1, 1, 5, 5),
    ),
    ("conv-nobias", lambda: nn.Conv2d(1, 2, 3, bias=False, **F64), (2, 1, 5, 5)),
    ("linear", lambda: nn.Linear(7, 4, **F64), (3, 7)),
    ("linear-3d", lambda: nn.Linear(5, 2, **F64), (2, 3, 5)),
    ("avgpool", lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 6, 7)),
    ("adaptive-avg", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 7)),
    ("global-avg", lambda: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3, **F64), (4, 3, 3, 2)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(5, **F64), (6, 5)),
    ("batchnorm1d-3d", lambda: nn.BatchNorm1d(3, **F64), (4, 3, 5)),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 4)),
    ("tanh", lambda: nn.Tanh(), (3, 4)),
    ("softmax", lambda: nn.Softmax(dim=1), (3, 4)),
    ("logsoftmax", lambda: nn.LogSoftmax(dim=1), (3, 4, 2)),
    ("leakyrelu", lambda: nn.LeakyReLU(0.2), (3, 4)),
    ("relu", lambda: nn.ReLU(), (3, 4)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_backward_finite_differences(name, make, shape, rng):
    layer = make()
    x = rng.standard_normal(shape)
    if name in ("relu", "leakyrelu"):
        x = np.where(np.abs(x) < 0.05, 0.5, x)  # keep away from the kink
    # BatchNorm's running statistics are not part of its output in training mode
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    _check_layer(layer, x, rng)


def test_maxpool_backward_finite_differences(rng):
    layer = nn.MaxPool2d(3, 2, padding=1)
    x = rng.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6).astype(np.float64) / 10  # tie-free
    _check_layer(layer, x, rng)


def test_dropout_backward_and_scaling(rng):
    layer = nn.Dropout(0.3)
    x = rng.standard_normal((50, 40))

    def reseed():
        layer.rng = np.random.default_rng(7)

    _check_layer(layer, x, rng, reseed=reseed)
    reseed()
    y = layer(np.ones((200, 200)))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)


# --------------------------------------------------------------------------------------------
# Against PyTorch modules with copied weights
# --------------------------------------------------------------------------------------------


def _copy_params(ours, theirs, torch):
    with torch.no_grad():
        for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
            tp.copy_(torch.from_numpy(p.data))


def _torch_pair(torch, make_ours, make_theirs, shape, rng, dtype=np.float64):
    ours = make_ours()
    theirs = make_theirs().to(torch.float64 if dtype == np.float64 else torch.float32)
    _copy_params(ours, theirs, torch)
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = theirs(tx)
    y = ours(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6, atol=1e-8)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    dx = ours.backward(g)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-8)
    for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-6, atol=1e-8)
    return ours, theirs


TORCH_PAIRS = [
    (
        "conv",
        lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, **F64),
        lambda t: t.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        (2, 3, 9, 8),
    ),
    (
        "conv-reflect-same",
        lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect", **F64),
        lambda t: t.nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"),
        (2, 2, 7, 6),
    ),
    (
        "conv-circular",
        lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", **F64),
        lambda t: t.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        (2, 2, 5, 6),
    ),
    (
        "conv-replicate-groups",
        lambda: nn.Conv2d(4, 4, 3, padding=(2, 1), groups=2, padding_mode="replicate", **F64),
        lambda t: t.nn.Conv2d(4, 4, 3, padding=(2, 1), groups=2, padding_mode="replicate"),
        (2, 4, 6, 5),
    ),
    ("linear", lambda: nn.Linear(6, 5, **F64), lambda t: t.nn.Linear(6, 5), (4, 6)),
    (
        "maxpool",
        lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        lambda t: t.nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        (2, 2, 7, 8),
    ),
    (
        "avgpool",
        lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        lambda t: t.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        (2, 2, 7, 8),
    ),
    (
        "adaptive",
        lambda: nn.AdaptiveAvgPool2d(3),
        lambda t: t.nn.AdaptiveAvgPool2d(3),
        (2, 2, 7, 8),
    ),
    ("bn2d", lambda: nn.BatchNorm2d(3, **F64), lambda t: t.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    (
        "bn1d",
        lambda: nn.BatchNorm1d(3, momentum=None, **F64),
        lambda t: t.nn.BatchNorm1d(3, momentum=None),
        (6, 3),
    ),
    ("leaky", lambda: nn.LeakyReLU(0.1), lambda t: t.nn.LeakyReLU(0.1), (4, 5)),
    ("softmax", lambda: nn.Softmax(1), lambda t: t.nn.Softmax(1), (4, 5)),
    (
        "lenet",
        lambda: models.lenet5(dtype=np.float64, rng=0),
        lambda t: cnncore.bench._torch_model(t, "lenet"),
        (3, 1, 28, 28),
    ),
]


@pytest.mark.parametrize("name, ours, theirs, shape", TORCH_PAIRS, ids=[c[0] for c in TORCH_PAIRS])
def test_against_torch_modules(name, ours, theirs, shape, rng):
    torch = pytest.importorskip("torch")
    import cnncore.bench  # noqa: F401

    a, b = _torch_pair(torch, ours, lambda: theirs(torch), shape, rng)
    if name.startswith("bn"):
        np.testing.assert_allclose(a._buffers["running_mean"], b.running_mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(a._buffers["running_var"], b.running_var.numpy(), rtol=1e-6)
        a.eval()
        b.eval()
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(
            a(x), b(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-9
        )


def test_default_init_matches_torch_bounds():
    conv = nn.Conv2d(6, 16, 5, rng=0)
    bound = 1 / math.sqrt(6 * 25)
    assert np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.95 * bound
    assert np.abs(conv.bias.data).max() <= bound
    lin = nn.Linear(400, 120, rng=0)
    assert np.abs(lin.weight.data).max() <= 1 / 20
    a = nn.Conv2d(1, 4, 3, rng=123).weight.data
    b = nn.Conv2d(1, 4, 3, rng=123).weight.data
    np.testing.assert_array_equal(a, b)
    nn.init.manual_seed(5)
    c = nn.Linear(3, 3).weight.data.copy()
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.data, c)


@pytest.mark.parametrize(
    "fn, kw, std",
    [
        (nn.init.he_normal_, {}, math.sqrt(2 / 200)),
        (nn.init.glorot_normal_, {}, math.sqrt(2 / (200 + 100))),
        (nn.init.lecun_normal_, {}, math.sqrt(1 / 200)),
        (nn.init.he_uniform_, {}, math.sqrt(2 / 200)),
        (nn.init.glorot_uniform_, {}, math.sqrt(2 / 300)),
        (nn.init.lecun_uniform_, {}, math.sqrt(1 / 200)),
    ],
)
def test_initializer_statistics(fn, kw, std):
    w = np.empty((100, 200), np.float32)
    fn(w, rng=0, **kw)
    assert w.dtype == np.float32
    assert abs(w.std() - std) < 0.03 * std
    assert abs(w.mean()) < 0.05 * std


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_manual_loop_overfits_one_batch(rng):
    x = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    y = np.arange(16) % 4
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 36, 4, rng=1),
    )
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = model(x)
        loss = loss_fn(out, y)
        first = loss if first is None else first
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    assert isinstance(loss, float)
    assert loss < 0.01 * first
    assert (model(x).argmax(1) == y).all()


def test_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(3, 2, **F64)
    x = rng.standard_normal((4, 3))
    g = np.ones((4, 2))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any()


@pytest.mark.parametrize(
    "pool_kw",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=2, stride=1, dilation=2),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_relu_then_maxpool_is_exact(rng, pool_kw, dtype):
    """Sequential runs a ReLU that precedes a MaxPool2d after the pooling: outputs and every
    gradient must be bit-identical to running the layers one by one in the listed order,
    also with ties, windows that are all negative or zero, and NaN."""
    kw = dict(dtype=dtype, rng=0)
    layers = [nn.Conv2d(2, 3, 3, padding=1, **kw), nn.ReLU(), nn.MaxPool2d(**pool_kw), nn.Flatten()]
    model = nn.Sequential(*layers)
    x = np.round(rng.standard_normal((3, 2, 9, 8)) * 2).astype(dtype)  # many exact ties
    x[0, :, :4, :4] = -1.0  # all-negative windows
    x[1, 0, 5, 5] = np.nan
    out = model(x)
    flat = out.reshape(out.shape[0], -1)
    head = nn.Linear(flat.shape[1], 4, **kw)
    model.append(head)
    model.zero_grad()
    out = model(x)
    g = rng.standard_normal(out.shape).astype(dtype)
    dx = model.backward(g)
    grads = [p.grad.copy() for p in model.parameters()]

    ref_out = x
    for layer in model.layers:  # listed order, one at a time
        ref_out = layer(ref_out)
    model.zero_grad()
    ref_g = g
    for layer in reversed(model.layers):
        ref_g = layer.backward(ref_g)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_g)
    for got, p in zip(grads, model.parameters(), strict=True):
        np.testing.assert_array_equal(got, p.grad)
    pooled = model.layers[2](model.layers[1](model.layers[0](x)))
    assert np.isnan(out).any() and (pooled == 0).any()


@pytest.fixture(scope="module")
def sample():
    return cnncore.datasets.load_sample()


def test_fit_one_epoch_on_sample(sample):
    (x, y), (xt, yt) = sample
    model = models.lenet5(rng=0)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hist = model.fit(
        x,
        y,
        optimizer=opt,
        loss=nn.CrossEntropyLoss(),
        epochs=1,
        batch_size=64,
        validation_data=(xt, yt),
        verbose=False,
        seed=0,
    )
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert hist["val_loss"][0] < 0.6 * math.log(10)
    res = model.evaluate(xt, yt)
    assert res["loss"] < 0.6 * math.log(10) and res["accuracy"] > 0.5
    assert res["loss"] == pytest.approx(hist["val_loss"][0], rel=1e-5)
    pred = model.predict(xt[:300], batch_size=128)
    assert pred.shape == (300, 10) and pred.dtype == np.float32
    # fit, evaluate and predict leave the model in the mode they found (train, for a new one)
    assert model.training


def test_fit_accepts_uint8_and_names(sample):
    (x, y), _ = sample
    xu = np.round(x[:256] * 255).astype(np.uint8)
    model = models.lenet5(rng=0)
    hist = model.fit(
        xu, y[:256], optimizer="adam", loss="cross_entropy", epochs=1, verbose=False, seed=1
    )
    assert np.isfinite(hist["loss"][0])
    np.testing.assert_allclose(
        model.predict(xu[:10]),
        model.predict(xu[:10].astype(np.float32) / np.float32(255)),
        rtol=1e-5,
        atol=1e-6,
    )


def _fit_weights(x, y, threads, seed=3):
    old = cnncore.get_num_threads()
    cnncore.set_num_threads(threads)
    try:
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, rng=0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(4 * 14 * 14, 10, rng=1),
        )
        model.fit(
            x,
            y,
            optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
            loss=nn.CrossEntropyLoss(),
            epochs=2,
            batch_size=32,
            verbose=False,
            seed=seed,
        )
        return [p.data.copy() for p in model.parameters()]
    finally:
        cnncore.set_num_threads(old)


def test_fit_same_seed_same_weights_any_thread_count(sample):
    (x, y), _ = sample
    x, y = x[:300], y[:300]
    ref = _fit_weights(x, y, 1)
    for threads in (2, 3, 4):
        for a, b in zip(ref, _fit_weights(x, y, threads), strict=True):
            np.testing.assert_array_equal(a, b)
    other = _fit_weights(x, y, 1, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(ref, other, strict=True))


@pytest.mark.parametrize(
    "case",
    [
        "length",
        "labels-high",
        "labels-negative",
        "shape",
        "dtype",
        "empty",
        "epochs",
        "batch",
        "optimizer",
        "loss",
        "val",
    ],
)
def test_fit_rejects_bad_input_before_training(case, sample):
    (x, y), _ = sample
    x, y = x[:64], y[:64]
    model = models.lenet5(rng=0)
    before = [p.data.copy() for p in model.parameters()]
    kwargs = dict(optimizer="sgd", loss="cross_entropy", verbose=False)
    args = {
        "length": (x, y[:10]),
        "labels-high": (x, np.full(64, 10)),
        "labels-negative": (x, np.full(64, -1)),
        "shape": (x[:, :, :20, :20], y),
        "dtype": (x.astype(np.int32), y),
        "empty": (x[:0], y[:0]),
    }.get(case, (x, y))
    exc = TypeError if case in ("dtype", "optimizer", "loss") else ValueError
    if case == "epochs":
        kwargs["epochs"] = -1
    if case == "batch":
        kwargs["batch_size"] = 0
    if case == "optimizer":
        kwargs["optimizer"] = object()
    if case == "loss":
        kwargs["loss"] = 3
    if case == "val":
        kwargs["validation_data"] = (x, y[:5])
    with pytest.raises(exc) as info:
        model.fit(*args, **kwargs)
    assert "Received" in str(info.value)
    for a, b in zip(before, model.parameters(), strict=True):
        np.testing.assert_array_equal(a, b.data)


class _Interrupter(nn.Module):
    """Identity layer that raises SIGINT on its n-th training forward."""

    def __init__(self, n):
        super().__init__()
        self.n = n
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                signal.raise_signal(signal.SIGINT)
        return x

    def backward(self, g, input_grad=True):
        return g


def test_ctrl_c_stops_cleanly_between_steps(sample):
    (x, y), _ = sample
    stopper = _Interrupter(5)
    model = nn.Sequential(nn.Flatten(), stopper, nn.Linear(784, 10, rng=0))
    snapshot = {}

    class Snap(optim.SGD):
        def step(self):
            super().step()
            snapshot["w"] = model[2].weight.data.copy()

    handler_before = signal.getsignal(signal.SIGINT)
    hist = model.fit(
        x[:640],
        y[:640],
        optimizer=Snap(model.parameters(), lr=0.1),
        loss="cross_entropy",
        epochs=3,
        batch_size=32,
        verbose=False,
    )
    assert hist.interrupted
    assert stopper.calls == 5
    np.testing.assert_array_equal(model[2].weight.data, snapshot["w"])
    assert model.predict(x[:4]).shape == (4, 10)
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored


def test_summary_and_output_shape():
    model = models.lenet5(rng=0)
    text = model.summary((1, 1, 28, 28), print_fn=None)
    assert "(1, 6, 28, 28)" in text and "(1, 10)" in text and "61,706" in text
    assert model.output_shape((7, 1, 28, 28)) == (7, 10)
    assert models.simple_cnn(rng=0).num_parameters() == 421_642


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------


def _rich_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", padding_mode="reflect", rng=0),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, groups=2, bias=False, rng=1),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Sequential(nn.Linear(4 * 36, 16, rng=2), nn.Tanh()),
        nn.Linear(16, 10, rng=3),
    )


def test_save_load_round_trip_bit_identical(tmp_path, sample):
    (x, y), _ = sample
    model = _rich_model()
    model.fit(x[:128], y[:128], optimizer="sgd", loss="cross_entropy", verbose=False, seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = cnncore.load(path)
    np.testing.assert_array_equal(model.predict(x[:50]), loaded.predict(x[:50]))
    assert repr(loaded) == repr(model)
    with zipfile.ZipFile(path) as zf:
        assert all(not n.endswith(".pkl") for n in zf.namelist())


def _corrupt(path, tmp_path, how):
    data = path.read_bytes()
    bad = tmp_path / f"bad-{how}.npz"
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        bad.write_bytes(os.urandom(2000))
    elif how == "flipped":
        b = bytearray(data)
        for i in range(200, len(b) - 200, 97):
            b[i] ^= 0xFF
        bad.write_bytes(bytes(b))
    elif how == "foreign-npz":
        np.savez(bad, a=np.zeros(3))
    elif how == "pickle":
        np.savez(bad, __architecture__=np.array([{"a": 1}], dtype=object))
    elif how == "unknown-layer":
        arch = {
            "format": "cnncore.model",
            "version": 1,
            "model": {"class": "Sequential", "layers": [{"class": "os.system", "config": {}}]},
        }
        _write_arch(bad, arch)
    elif how == "bad-config":
        arch = {
            "format": "cnncore.model",
            "version": 1,
            "model": {
                "class": "Sequential",
                "layers": [{"class": "Linear", "config": {"in_features": -3, "out_features": 2}}],
            },
        }
        _write_arch(bad, arch)
    elif how == "wrong-shape":
        arch = {
            "format": "cnncore.model",
            "version": 1,
            "model": {
                "class": "Sequential",
                "layers": [{"class": "Linear", "config": {"in_features": 3, "out_features": 2}}],
            },
        }
        _write_arch(
            bad,
            arch,
            **{
                "param:0.weight": np.zeros((3, 2), np.float32),
                "param:0.bias": np.zeros(2, np.float32),
            },
        )
    elif how == "crafted-header":
        arch = {
            "format": "cnncore.model",
            "version": 1,
            "model": {
                "class": "Sequential",
                "layers": [{"class": "Linear", "config": {"in_features": 3, "out_features": 2}}],
            },
        }
        _write_arch(
            bad,
            arch,
            **{
                "param:0.weight": np.zeros((2, 3), np.float32),
                "param:0.bias": np.zeros(2, np.float32),
            },
        )
        with zipfile.ZipFile(bad) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        raw = members["param:0.weight.npy"]
        # the header now claims 9x3 floats while the member holds 2x3
        members["param:0.weight.npy"] = raw.replace(b"(2, 3)", b"(9, 3)")
        with zipfile.ZipFile(bad, "w") as zf:
            for n, d in members.items():
                zf.writestr(n, d)
    return bad


def _write_arch(path, arch, **arrays):
    import json

    np.savez(path, __architecture__=np.frombuffer(json.dumps(arch).encode(), np.uint8), **arrays)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "garbage",
        "flipped",
        "foreign-npz",
        "pickle",
        "unknown-layer",
        "bad-config",
        "wrong-shape",
        "crafted-header",
    ],
)
def test_load_rejects_bad_files(tmp_path, how):
    model = _rich_model()
    path = tmp_path / "good.npz"
    model.save(path)
    bad = _corrupt(path, tmp_path, how)
    with pytest.raises(ValueError, match="not a valid cnncore model file"):
        cnncore.load(bad)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        cnncore.load(tmp_path / "nope.npz")


# --------------------------------------------------------------------------------------------
# Constructor validation
# --------------------------------------------------------------------------------------------

BAD_LAYERS = [
    (lambda: nn.Conv2d(0, 3, 3), ValueError, "in_channels"),
    (lambda: nn.Conv2d(1, 3, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2d(1, 3, 3, stride=0), ValueError, "stride"),
    (lambda: nn.Conv2d(1, 3, 3, padding=-1), ValueError, "padding"),
    (lambda: nn.Conv2d(1, 3, 3, padding="full"), ValueError, "padding"),
    (lambda: nn.Conv2d(1, 3, 3, padding="same", stride=2), ValueError, "stride"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "groups"),
    (lambda: nn.Conv2d(1, 3, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: nn.Conv2d(1, 3, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: nn.Linear(0, 3), ValueError, "in_features"),
    (lambda: nn.Linear(3, 2.5), TypeError, "out_features"),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError, "padding"),
    (lambda: nn.MaxPool2d(0), ValueError, "kernel_size"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: nn.Dropout(1.5), ValueError, "p"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features"),
    (lambda: nn.BatchNorm2d(3, eps=0), ValueError, "eps"),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError, "momentum"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "layers"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, "reduction"),
]


@pytest.mark.parametrize(
    "make, exc, fragment", BAD_LAYERS, ids=[f"{i}-{c[2]}" for i, c in enumerate(BAD_LAYERS)]
)
def test_layer_constructor_validation(make, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        make()
    assert "Received" in str(info.value)


def test_forward_shape_errors_name_the_input(rng):
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(5, 2)(rng.standard_normal((3, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="input"):
        nn.Conv2d(3, 2, 3)(rng.standard_normal((2, 3, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="channels"):
        nn.Conv2d(3, 2, 3)(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(3, 2, 3).backward(np.zeros((1, 2, 3, 3), np.float32))
