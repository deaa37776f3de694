"""state_dict / load_state_dict: PyTorch's keys and layouts (checked against torch's own
state_dict of the equivalent module), weights moving both ways, and bad states."""

from collections import OrderedDict

import numpy as np
import pytest

from cnncore import models, nn
from cnncore.apps.bench.twins import torch_twin
from cnncore.nn import state as nn_state


def _model(dtype=np.float32, rng=0):
    kw = dict(dtype=dtype, rng=rng)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, **kw),
        nn.BatchNorm2d(4, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, bias=False, groups=2, **kw),
        nn.BatchNorm2d(6, affine=False, dtype=dtype),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Sequential(nn.Linear(6, 5, **kw), nn.BatchNorm1d(5, dtype=dtype), nn.Tanh()),
        nn.Dropout(0.2),
        nn.Linear(5, 3, bias=False, **kw),
    )


def _all_models():
    return [
        ("lenet5", models.lenet5(rng=0)),
        ("simple_cnn", models.simple_cnn(rng=0, dropout=0.3)),
        ("mixed", _model()),
    ]


def test_keys_order_shapes_match_torch():
    torch = pytest.importorskip("torch")
    for _, model in _all_models():
        twin = torch_twin(model)
        ours = model.state_dict()
        theirs = twin.state_dict()
        assert list(ours) == list(theirs)
        for k, v in theirs.items():
            assert ours[k].shape == tuple(v.shape), k
            assert ours[k].dtype == np.dtype(str(v.dtype).removeprefix("torch.")), k
    # torch's num_batches_tracked is an int64 scalar, as ours
    assert theirs["1.num_batches_tracked"].dtype == torch.int64
    assert theirs["1.num_batches_tracked"].shape == ()


def test_state_dict_returns_copies():
    model = _model()
    sd = model.state_dict()
    assert isinstance(sd, OrderedDict)
    sd["0.weight"][...] = 7
    sd["1.running_mean"][...] = 7
    assert not np.any(model[0].weight.data == 7)
    assert not np.any(model[1]._buffers["running_mean"] == 7)


def test_named_parameters_follow_state_children():
    model = _model()
    keys = [k for k, _ in model.named_parameters()] + [k for k, _ in model.named_buffers()]
    assert sorted(keys) == sorted(model.state_dict())
    assert "8.1.running_var" in keys


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_weights_into_cnncore_and_back(dtype):
    torch = pytest.importorskip("torch")
    model = _model(dtype)
    twin = torch_twin(model)
    # train the torch model a bit so that every buffer (and the counter) moves
    twin.train()
    gen = torch.Generator().manual_seed(0)
    tdtype = getattr(torch, np.dtype(dtype).name)
    for _ in range(3):
        twin(torch.randn(4, 3, 8, 8, generator=gen, dtype=tdtype))
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=tdtype) * 0.1)
    twin.eval()
    fresh = _model(dtype, rng=1)
    # torch tensors are accepted directly
    result = fresh.load_state_dict(twin.state_dict())
    assert result == ([], [])
    assert int(fresh[1]._buffers["num_batches_tracked"]) == 3
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(dtype)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fresh.eval()(x), expected, **tol)
    # and back: cnncore's state_dict loads into a new torch model through torch.from_numpy
    back = torch_twin(_model(dtype, rng=2)).eval()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in fresh.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_array_equal(back(torch.from_numpy(x)).numpy(), expected)


def test_num_batches_tracked_counts_like_torch():
    torch = pytest.importorskip("torch")
    for momentum in (0.1, None):
        bn = nn.BatchNorm2d(3, momentum=momentum)
        tbn = torch.nn.BatchNorm2d(3, momentum=momentum)
        x = np.random.default_rng(1).standard_normal((5, 3, 4, 4)).astype(np.float32)
        for _ in range(4):
            bn(x)
            tbn(torch.from_numpy(x))
        bn.eval()
        tbn.eval()
        bn(x)
        tbn(torch.from_numpy(x))
        sd = bn.state_dict()
        for k, v in tbn.state_dict().items():
            np.testing.assert_allclose(sd[k], v.numpy(), rtol=1e-6, atol=1e-7, err_msg=k)
        assert int(sd["num_batches_tracked"]) == 4


def test_dtype_is_converted_to_the_models():
    model = _model(np.float64)
    state = {
        k: v.astype(np.float32) if v.dtype.kind == "f" else v
        for k, v in _model().state_dict().items()
    }
    model.load_state_dict(state)
    assert model[0].weight.dtype == np.float64
    np.testing.assert_array_equal(model[0].weight.data, state["0.weight"].astype(np.float64))
    # integers and Python lists go in too; the counter takes integral floats
    lin = nn.Linear(2, 2)
    lin.load_state_dict({"weight": [[1, 2], [3, 4]], "bias": np.array([5, 6], np.int16)})
    assert lin.weight.data.dtype == np.float32 and lin.weight.data[1, 1] == 4
    bn = nn.BatchNorm1d(2)
    bn.load_state_dict({**bn.state_dict(), "num_batches_tracked": np.float32(3)})
    assert bn._buffers["num_batches_tracked"].dtype == np.int64


def test_load_keeps_array_identity():
    """Optimizers hold the Parameter objects and BatchNorm its buffers: load writes in place."""
    model = _model()
    w, rm = model[0].weight.data, model[1]._buffers["running_mean"]
    model.load_state_dict(_model(rng=5).state_dict())
    assert model[0].weight.data is w and model[1]._buffers["running_mean"] is rm
    np.testing.assert_array_equal(w, _model(rng=5)[0].weight.data)


def test_strict_lists_every_missing_and_unexpected_key_in_one_error():
    model = _model()
    state = model.state_dict()
    del state["0.weight"], state["8.1.running_var"]
    state["extra.weight"] = np.zeros(3)
    state["0.weights"] = np.zeros(3)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    msg = str(info.value)
    for key in ("0.weight", "8.1.running_var", "extra.weight", "0.weights"):
        assert repr(key) in msg
    assert "missing" in msg and "unexpected" in msg


def test_non_strict_returns_the_keys_and_loads_the_rest():
    model = _model()
    other = _model(rng=9)
    state = other.state_dict()
    del state["0.bias"]
    state["junk"] = np.zeros(1)
    before = model[0].bias.data.copy()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["0.bias"] and unexpected == ["junk"]
    np.testing.assert_array_equal(model[0].bias.data, before)
    np.testing.assert_array_equal(model[0].weight.data, other[0].weight.data)


def test_shape_mismatch_names_key_and_both_shapes_and_writes_nothing():
    model = _model()
    before = model.state_dict()
    state = _model(rng=3).state_dict()
    state["10.weight"] = np.zeros((3, 4), np.float32)
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"'10\.weight'.*\(3, 4\).*\(3, 5\)"):
            model.load_state_dict(state, strict=strict)
    for k, v in model.state_dict().items():  # atomic: nothing was written
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize(
    "state, exc, match",
    [
        ([("weight", 1)], TypeError, "mapping"),
        ({1: np.zeros(2)}, TypeError, "keys must be str"),
        ({"weight": np.array(["a", "b"]), "bias": np.zeros(2)}, TypeError, "'weight'"),
        ({"weight": np.zeros((2, 2), complex), "bias": np.zeros(2)}, TypeError, "'weight'"),
        ({"weight": object(), "bias": np.zeros(2)}, TypeError, "'weight'"),
    ],
)
def test_bad_states(state, exc, match):
    with pytest.raises(exc, match=match):
        nn.Linear(2, 2).load_state_dict(state)


def test_bad_counter_values():
    bn = nn.BatchNorm1d(2)
    for bad in (np.float32(2.5), np.float64(np.nan), np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="num_batches_tracked"):
            bn.load_state_dict({**bn.state_dict(), "num_batches_tracked": bad})
    with pytest.raises(TypeError, match="strict"):
        bn.load_state_dict(bn.state_dict(), strict=1)


def test_to_numpy_never_imports_torch_for_other_objects():
    class FakeTensor:  # looks like a tensor but is not torch's: converted by np.asarray
        def __array__(self, dtype=None, copy=None):
            return np.ones(2)

    assert nn_state.to_numpy(FakeTensor(), "k").shape == (2,)


def test_torch_bfloat16_and_noncontiguous_tensors():
    torch = pytest.importorskip("torch")
    lin = nn.Linear(3, 2)
    w = torch.arange(6, dtype=torch.float32).reshape(3, 2).t()  # non-contiguous
    lin.load_state_dict({"weight": w.to(torch.bfloat16), "bias": torch.zeros(2)})
    np.testing.assert_array_equal(lin.weight.data, w.numpy())
    assert lin.weight.data.flags.c_contiguous
