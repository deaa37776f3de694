"""cnncore.models.mobilenet_tiny: its architecture against a hand-written PyTorch twin
(forward, every gradient and the BatchNorm running statistics with copied weights, and the
same state_dict keys), training on the shipped sample, save/load and the command line."""

import numpy as np
import pytest

import cnncore
from cnncore import models, nn, optim
from cnncore.apps import cli

VARIANTS = {
    "separable-relu6": dict(),
    "separable-hardswish": dict(activation="hardswish"),
    "inverted-relu6": dict(inverted_residual=True),
    "inverted-hardswish-rgb": dict(
        inverted_residual=True, expansion=3, activation="hardswish", in_channels=3
    ),
}

# --------------------------------------------------------------------------------------------
# The PyTorch twin, written from the documented architecture (not derived from the graph)
# --------------------------------------------------------------------------------------------


def torch_mobilenet_tiny(
    torch,
    num_classes=10,
    in_channels=1,
    *,
    inverted_residual=False,
    expansion=4,
    activation="relu6",
):
    tnn = torch.nn
    act_cls = {"relu6": tnn.ReLU6, "hardswish": tnn.Hardswish}[activation]
    blocks = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1)]

    class TorchMobileNetTiny(tnn.Module):
        def __init__(self):
            super().__init__()
            self.plan = []  # per block: ([(layer prefix, activation after BN)], residual)
            self.plan.append(([self._cba("stem_", in_channels, 16, 3, 1)], False))
            c_in = 16
            for b, (c_out, stride) in enumerate(blocks, 1):
                p, steps = f"block{b}_", []
                if inverted_residual:
                    hidden = c_in * (expansion if b > 1 else 1)
                    if hidden != c_in:
                        steps.append(self._cba(p + "expand_", c_in, hidden, 1, 1))
                    steps.append(self._cba(p + "dw_", hidden, hidden, 3, stride, hidden))
                    steps.append(self._cba(p + "pw_", hidden, c_out, 1, 1, act=False))
                    residual = stride == 1 and c_in == c_out
                else:
                    steps.append(self._cba(p + "dw_", c_in, c_in, 3, stride, c_in))
                    steps.append(self._cba(p + "pw_", c_in, c_out, 1, 1))
                    residual = False
                self.plan.append((steps, residual))
                c_in = c_out
            self.plan.append(([self._cba("head_", c_in, 128, 1, 1)], False))
            self.fc = tnn.Linear(128, num_classes)

        def _cba(self, pre, c_in, c_out, k, stride, groups=1, act=True):
            conv = tnn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
            setattr(self, pre + "conv", conv)
            setattr(self, pre + "bn", tnn.BatchNorm2d(c_out))
            if act:
                setattr(self, pre + "act", act_cls())
            return pre, act

        def forward(self, x):
            for steps, residual in self.plan:
                block_in = x
                for pre, act in steps:
                    x = getattr(self, pre + "bn")(getattr(self, pre + "conv")(x))
                    if act:
                        x = getattr(self, pre + "act")(x)
                if residual:
                    x = block_in + x
            return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))

    return TorchMobileNetTiny()


def _twin(torch, model, kwargs, dtype):
    twin = torch_mobilenet_tiny(torch, **kwargs).to(getattr(torch, np.dtype(dtype).name))
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


TOLS = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-4)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_torch_twin_with_copied_weights(variant, dtype, rng):
    """Forward (train mode: batch statistics), the input gradient, every parameter gradient
    and the updated running statistics against autograd on the twin; then eval mode."""
    torch = pytest.importorskip("torch")
    kwargs = VARIANTS[variant]
    model = models.mobilenet_tiny(dtype=dtype, rng=1, **kwargs)
    c = kwargs.get("in_channels", 1)
    size = 12 if c == 3 else 10  # odd sizes after the stride-2 blocks, too
    model = models.mobilenet_tiny(dtype=dtype, rng=1, input_size=size, **kwargs)
    # non-trivial BatchNorm affine parameters and running statistics
    for name, p in model.named_parameters():
        if "_bn." in name:
            p.data[...] = rng.uniform(0.5, 1.5, p.shape) if name.endswith("weight") else 0.1
    twin = _twin(torch, model, kwargs, dtype)
    assert list(model.state_dict()) == list(twin.state_dict())

    x = rng.standard_normal((5, c, size, size)).astype(dtype)
    out = model(x)
    g = rng.standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    dx = model.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    tout = twin(tx)
    (tout * torch.from_numpy(g)).sum().backward()

    tol = TOLS[dtype]
    assert out.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    tparams = dict(twin.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert names == list(tparams)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), err_msg=name, **tol)
    for key, value in twin.state_dict().items():  # running statistics after one step
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), err_msg=key, **tol)

    model.eval()
    twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), twin(torch.from_numpy(x)).numpy(), **tol)


@pytest.mark.parametrize("variant", ["separable-relu6", "inverted-relu6"])
def test_gradients_match_finite_differences(variant, rng):
    """float64 central differences at a few entries of the input and of the depthwise and
    pointwise weights."""
    model = models.mobilenet_tiny(dtype=np.float64, rng=2, input_size=8, **VARIANTS[variant])
    x = rng.standard_normal((3, 1, 8, 8))
    g = rng.standard_normal((3, 10))

    def loss():
        return float(np.sum(model(x) * g))

    loss()
    model.zero_grad()
    dx = model.backward(g)
    checks = [(x, dx)]
    for name in ("block2_dw_conv", "block3_pw_conv", "stem_conv"):
        layer = model.get_layer(name)
        checks.append((layer.weight.data, layer.weight.grad))
    for arr, grad in checks:
        for idx in rng.choice(arr.size, 4, replace=False):
            old = arr.flat[idx]
            arr.flat[idx] = old + 1e-6
            up = loss()
            arr.flat[idx] = old - 1e-6
            down = loss()
            arr.flat[idx] = old
            assert (up - down) / 2e-6 == pytest.approx(grad.flat[idx], rel=1e-5, abs=1e-7)


# --------------------------------------------------------------------------------------------
# Architecture, arguments
# --------------------------------------------------------------------------------------------


def test_architecture():
    sep = models.mobilenet_tiny(rng=0)
    assert sep.name == "mobilenet_tiny" and isinstance(sep, nn.Model)
    assert sep.output_shape((2, 1, 28, 28)) == (2, 10)
    assert sep.num_parameters() == 20_026
    dw = [m for m in sep.layers if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.groups, m.stride) for m in dw] == [
        (16, 16, (1, 1)),
        (16, 16, (2, 2)),
        (32, 32, (1, 1)),
        (32, 32, (2, 2)),
        (64, 64, (1, 1)),
    ]
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in dw)
    assert not any(isinstance(m, nn.Add) for m in sep.layers)
    assert sum(isinstance(m, nn.ReLU6) for m in sep.layers) == 12

    inv = models.mobilenet_tiny(inverted_residual=True, rng=0)
    assert inv.num_parameters() == 74_570
    assert [m.name for m in inv.layers if isinstance(m, nn.Add)] == [
        "block1_add",
        "block3_add",
        "block5_add",
    ]
    assert "block1_expand_conv" not in {m.name for m in inv.layers}  # expansion 1 there
    assert inv.get_layer("block2_expand_conv").out_channels == 64
    assert not any(m.name == "block2_pw_act" for m in inv.layers)  # linear bottleneck

    hs = models.mobilenet_tiny(
        num_classes=7, in_channels=3, input_size=32, activation="hardswish", rng=0
    )
    assert hs.output_shape((4, 3, 32, 32)) == (4, 7)
    assert any(isinstance(m, nn.Hardswish) for m in hs.layers)
    assert models.build("mobilenet_tiny", rng=0).get_config() == sep.get_config()
    f64 = models.mobilenet_tiny(dtype=np.float64, rng=0)
    assert f64.predict(np.zeros((1, 1, 28, 28))).dtype == np.float64


def test_same_seed_same_weights():
    a = models.mobilenet_tiny(rng=3).state_dict()
    b = models.mobilenet_tiny(rng=3).state_dict()
    c = models.mobilenet_tiny(rng=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["block2_dw_conv.weight"], c["block2_dw_conv.weight"])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(activation="relu"), ValueError, "activation"),
        (dict(activation=None), ValueError, "activation"),
        (dict(num_classes=0), ValueError, "num_classes"),
        (dict(in_channels=2.0), TypeError, "in_channels"),
        (dict(expansion=0), ValueError, "expansion"),
        (dict(inverted_residual=1), TypeError, "inverted_residual"),
        (dict(input_size=(28, 0)), ValueError, "shape"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        models.mobilenet_tiny(**kwargs)


# --------------------------------------------------------------------------------------------
# Training, save/load, command line
# --------------------------------------------------------------------------------------------


def test_trains_on_the_sample():
    """Two short epochs on part of the shipped Fashion-MNIST sample learn far above chance
    (10 %): 59.6 % of 500 test images on the reference machine, the same for any thread
    count."""
    (x, y), (xt, yt) = cnncore.datasets.load_sample()
    x, y, xt, yt = x[:1024], y[:1024], xt[:500], yt[:500]
    model = models.mobilenet_tiny(rng=0)
    before = model.evaluate(xt, yt)
    hist = model.fit(
        x,
        y,
        optimizer=optim.Adam(model.parameters(), lr=3e-3),
        loss="cross_entropy",
        epochs=2,
        batch_size=32,
        seed=0,
        verbose=False,
    )
    assert hist["loss"][-1] < hist["loss"][0]
    after = model.evaluate(xt, yt)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.5, after


def test_save_load_round_trip(tmp_path, rng):
    model = models.mobilenet_tiny(inverted_residual=True, activation="hardswish", rng=0)
    x = rng.random((6, 1, 28, 28)).astype(np.float32)
    model.fit(x, np.arange(6), optimizer="sgd", loss="cross_entropy", verbose=False, seed=0)
    for suffix in (".npz", ".safetensors"):
        path = tmp_path / f"m{suffix}"
        model.save(path)
        loaded = cnncore.load(path)
        assert type(loaded) is nn.Model and loaded.name == "mobilenet_tiny"
        assert loaded.get_config() == model.get_config()
        assert list(loaded.state_dict()) == list(model.state_dict())
        assert loaded.predict(x).tobytes() == model.predict(x).tobytes()


def test_load_state_dict_from_torch_twin():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    twin = torch_mobilenet_tiny(torch, inverted_residual=True)
    model = models.mobilenet_tiny(inverted_residual=True, rng=0)
    model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    twin.eval()
    with torch.no_grad():
        ref = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), ref, rtol=1e-4, atol=1e-5)


def test_cli_trains_mobilenet_tiny(tmp_path, capsys):
    path = tmp_path / "m.npz"
    argv = ["train", "--model", "mobilenet_tiny", "--data", "sample", "--epochs", "1"]
    argv += ["--limit", "64", "--quiet", "--batch-size", "32", "--save", str(path)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "mobilenet_tiny" in text and "test accuracy" in text
    loaded = cnncore.load(path)
    assert isinstance(loaded, nn.Model) and loaded.name == "mobilenet_tiny"
