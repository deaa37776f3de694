"""Regression tests for bugs found by the hardening work (fuzzing, bad-input tables, file
crafting).  One section per fix; each test failed before its fix."""

import time
import tracemalloc

import numpy as np
import pytest

import cnncore
from cnncore import functional as F
from cnncore import nn
from cnncore.ops import _common as ops_common

HUGE = 2**40  # elements: terabytes, far more than any test machine's memory


def _quick_and_small(call, exc, match):
    """``call`` raises ``exc`` naming ``match`` (and "Received") within a second, without
    allocating more than a few MiB."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(exc, match=match) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 16 * 2**20, f"peak traced allocation {peak} bytes"
    assert "Received" in str(info.value)


# ------------------------------------------------------------------------------------------
# Validation: never copy, convert or list more than memory allows (cnncore/_validation.py)
# ------------------------------------------------------------------------------------------


def _bview(shape, dtype=np.float32):
    """A zero-stride view: any shape, no memory behind it (copying it would be huge)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


@pytest.mark.parametrize(
    "name, call, arg",
    [
        ("relu", lambda: F.relu(_bview((1, HUGE))), "x"),
        (
            "conv2d",
            lambda: F.conv2d(_bview((1, 1, HUGE, 1)), np.ones((1, 1, 1, 1), np.float32)),
            "x",
        ),
        (
            "conv2d weight",
            lambda: F.conv2d(np.ones((1, 1, 4, 4), np.float32), _bview((1, 1, HUGE, 1))),
            "weight",
        ),
        ("max_pool2d", lambda: F.max_pool2d(_bview((1, 1, 2**31 + 1, 2**12)), 2), "x"),
        ("linear", lambda: F.linear(_bview((HUGE, 3)), np.ones((2, 3), np.float32)), "x"),
        ("mse_loss", lambda: F.mse_loss(_bview((HUGE,)), _bview((HUGE,))), "input"),
        ("softmax", lambda: F.softmax(_bview((2**31 + 1, 2**12)), 1), "x"),
        (
            "indices",
            lambda: F.max_unpool2d_backward(
                np.ones((1, 1, 2, 2), np.float32), _bview((1, 1, HUGE, 1), np.int32)
            ),
            "indices",
        ),
        (
            "correlate2d",
            lambda: cnncore.correlate2d(_bview((HUGE, 2)), np.ones((1, 1), np.float32)),
            "in1",
        ),
    ],
)
def test_huge_broadcast_views_are_rejected_before_copying(name, call, arg):
    """A zero-stride view past memory used to be copied (MemoryError, or all of RAM when
    it just fits)."""
    _quick_and_small(call, ValueError, arg)


@pytest.mark.parametrize(
    "call, arg",
    [
        (
            lambda: F.conv2d_backward_input(
                np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), _bview((HUGE,), np.int64)
            ),
            "input_shape",
        ),
        (
            lambda: F.max_pool2d_backward(
                np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), _bview((HUGE,), np.int64)
            ),
            "input_shape",
        ),
        (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), _bview((HUGE,), np.int64)), "kernel_size"),
        (
            lambda: F.conv2d(
                np.ones((1, 1, 4, 4)), np.ones((1, 1, 1, 1)), stride=_bview((HUGE,), np.int64)
            ),
            "stride",
        ),
    ],
)
def test_huge_array_as_shape_or_pair_argument_is_not_listed(call, arg):
    """``list(arg)`` on a huge array used to build a Python list of 2**40 ints."""
    _quick_and_small(call, ValueError, arg)


@pytest.mark.parametrize(
    "call, exc, arg",
    [
        (
            lambda: F.global_avg_pool2d_backward(np.ones((1, 1, 1, 1)), np.array(4)),
            TypeError,
            "input_shape",
        ),
        (
            lambda: F.adaptive_max_pool2d(np.ones((1, 1, 4, 4)), (None, np.array([1, 2]))),
            TypeError,
            "output_size",
        ),
        (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), [np.array([2]), 2]), TypeError, "kernel_size"),
        (
            lambda: F.col2im(np.ones((1, 4, 9)), (4, 4), 2, stride=(np.ones(2), 1)),
            TypeError,
            "stride",
        ),
    ],
)
def test_odd_array_arguments_name_the_argument(call, exc, arg):
    """0-d and nested arrays used to escape as bare NumPy errors ("iteration over a 0-d
    array", "only integer scalar arrays ...")."""
    with pytest.raises(exc, match=arg) as info:
        call()
    assert "Received" in str(info.value)


def test_zero_d_array_pairs_act_as_scalars():
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    np.testing.assert_array_equal(F.max_pool2d(x, np.array(2), np.array(2)), F.max_pool2d(x, 2, 2))


def test_empty_output_with_unrepresentable_shape():
    """An empty (N*C = 0) output whose other dimensions overflow used to raise NumPy's bare
    "array is too big"."""
    _quick_and_small(
        lambda: F.pad2d(np.zeros((0, 0, 2, 1)), 2**31 - 1, mode="constant"), ValueError, "output"
    )
    _quick_and_small(
        lambda: F.adaptive_avg_pool2d(np.zeros((0, 3, 2, 2)), 2**31 - 1), ValueError, "output"
    )


# ------------------------------------------------------------------------------------------
# Functional API: size checks of linear / pad2d backward, BLAS 32-bit limits of linear,
# loss flags and targets (cnncore/ops/loss.py)
# ------------------------------------------------------------------------------------------


def test_linear_checks_the_blas_32_bit_limit(monkeypatch):
    """The linear kernels pass in/out features and rows to BLAS as C ints: past 2**31 - 1
    they were truncated (garbage results).  Checked with a lowered limit: real inputs would
    need > 8 GiB."""
    monkeypatch.setattr(ops_common, "BLAS_INT_MAX", 5)
    a6, a4 = np.ones((3, 6)), np.ones((3, 4))
    with pytest.raises(ValueError, match="in_features = 6"):
        F.linear(a6, np.ones((4, 6)))
    with pytest.raises(ValueError, match="out_features = 6"):
        F.linear(a4, np.ones((6, 4)))
    with pytest.raises(ValueError, match="in_features = 6"):
        F.linear_backward_input(a4, np.ones((4, 6)))
    with pytest.raises(ValueError, match="rows = 6") as info:
        F.linear_backward_weight(np.ones((6, 2)), np.ones((6, 3)))
    assert "Received" in str(info.value)
    F.linear(a4, np.ones((5, 4)))  # at the limit: fine


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.linear_backward_input(
            np.ones((2**20, 1), np.float32), np.ones((1, 2**20), np.float32)
        ),
        lambda: F.linear_backward_weight(
            np.ones((1, 2**20), np.float32), np.ones((1, 2**20), np.float32)
        ),
        lambda: F.pad2d_backward(np.ones((1, 1, 1, 1), np.float32), (-(2**20),) * 4),
    ],
)
def test_backward_outputs_past_memory_are_rejected(call):
    """These outputs were allocated without check_numel (MemoryError, or RAM filled when it
    just fits)."""
    _quick_and_small(call, ValueError, "output")


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.mse_loss(np.ones(3), np.ones(3), return_grad=np.array([1, 2])),
        lambda: F.binary_cross_entropy(np.full(3, 0.5), np.ones(3), return_grad="yes"),
        lambda: F.cross_entropy(np.ones((2, 3)), np.zeros(2, np.int64), return_grad=1),
    ],
)
def test_return_grad_must_be_a_bool(call):
    """``return_grad`` was used as a truth value: arrays raised NumPy's "truth value is
    ambiguous", strings and ints silently returned a tuple."""
    with pytest.raises(TypeError, match="return_grad") as info:
        call()
    assert "Received" in str(info.value)


def test_cross_entropy_ragged_target_names_target():
    with pytest.raises(TypeError, match="target") as info:
        F.cross_entropy(np.ones((2, 3)), [[0, 1], [2]])
    assert "Received" in str(info.value)


# ------------------------------------------------------------------------------------------
# Layers whose backward is computed in NumPy validate grad_output (cnncore/nn/layers.py)
# ------------------------------------------------------------------------------------------


def _trained(layer, x):
    layer.train()
    y = layer(x)
    return layer, y


_X4 = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)
_X3 = _X4[:, :, 0]


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda: cnncore.nn.Flatten(), _X4),
        (lambda: cnncore.nn.Dropout(0.5, rng=0), _X4),
        (lambda: cnncore.nn.Dropout(0.0), _X4),
        (lambda: cnncore.nn.BatchNorm1d(2), _X3),
        (lambda: cnncore.nn.BatchNorm2d(2), _X4),
        (lambda: cnncore.nn.Linear(5, 3, rng=0), _X4),
    ],
    ids=["Flatten", "Dropout", "Dropout-p0", "BatchNorm1d", "BatchNorm2d", "Linear"],
)
@pytest.mark.parametrize(
    "bad, exc",
    [
        (7, TypeError),
        (7.0, ValueError),
        (None, TypeError),
        ("g", TypeError),
        (np.ones(3, object), TypeError),
        ("wrong-shape", ValueError),
    ],
)
def test_layer_backward_validates_grad_output(make, x, bad, exc):
    """Flatten/BatchNorm raised AttributeError ('int' object has no attribute 'reshape' /
    'sum'), Dropout returned object arrays or broadcast silently, Linear raised NumPy's
    broadcast error after a partial update."""
    layer, y = _trained(make(), x)
    if isinstance(bad, str) and bad == "wrong-shape":
        bad = np.ones((*y.shape[:-1], y.shape[-1] + 1), y.dtype)
    before = [p.grad.copy() for p in layer.parameters()]
    with pytest.raises(exc, match="grad_output") as info:
        layer.backward(bad)
    assert "Received" in str(info.value)
    for b, p in zip(before, layer.parameters(), strict=True):
        np.testing.assert_array_equal(b, p.grad)  # nothing accumulated


@pytest.mark.parametrize("bad", [None, np.array(["a", "b"]), np.arange(6).reshape(2, 3)])
def test_dropout_forward_rejects_non_float_input(bad):
    """Dropout accepted anything: None became an object array passed through."""
    with pytest.raises(TypeError, match="input") as info:
        cnncore.nn.Dropout(0.3, rng=0)(bad)
    assert "Received" in str(info.value)


# ------------------------------------------------------------------------------------------
# Layer dtypes and LeakyReLU input (cnncore/nn/module.py, cnncore/nn/activation.py)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: cnncore.nn.Linear(3, 2, dtype=dt),
        lambda dt: cnncore.nn.Conv2d(1, 2, 3, dtype=dt),
        lambda dt: cnncore.nn.BatchNorm2d(2, dtype=dt),
    ],
)
def test_unknown_dtype_name_is_rejected(make):
    """np.dtype('nonsense') fails, check_dtype turned that into None, and
    ``np.dtype('float64') == None`` is True: the layer was built with dtype None (float64
    arrays) and failed later, e.g. in save()."""
    with pytest.raises(TypeError, match="dtype") as info:
        make("nonsense")
    assert "Received" in str(info.value)


def test_leaky_relu_layer_validates_its_input():
    """LeakyReLU.forward called np.asarray first: a ragged list raised NumPy's bare
    ValueError."""
    with pytest.raises(TypeError, match="input") as info:
        cnncore.nn.LeakyReLU()([[1.0], [1.0, 2.0]])
    assert "Received" in str(info.value)
    assert cnncore.nn.LeakyReLU(0.5)(np.array([-2.0, 2.0])).tolist() == [-1.0, 2.0]


# ------------------------------------------------------------------------------------------
# Element addresses of empty buffers (cnncore/ops/_loss.pyx, cnncore/ops/_linear.pyx)
# ------------------------------------------------------------------------------------------


def test_kernel_wrappers_take_no_address_of_empty_buffers():
    """pointwise / cross_entropy / linear_forward took ``&buf[0]`` before returning early for
    empty inputs.  Harmless in the release build (the pointer was never dereferenced) but an
    out-of-bounds access that the bounds-checked debug build (tools/sanitize.sh debug)
    reports as IndexError; this test fails there without the fix."""
    from cnncore._shared import Loss
    from cnncore.ops import _linear, _loss

    e = np.empty(0)
    assert _loss.pointwise(Loss.LOSS_MSE, e, e, e, e, 1.0, 1) == (0.0, 0)
    assert (
        _loss.cross_entropy(
            np.empty((0, 3)),
            np.empty(0, np.int64),
            None,
            None,
            -100,
            0.0,
            e,
            np.empty((0, 3)),
            1.0,
            1,
        )
        == 0.0
    )
    _linear.linear_forward(np.empty((2, 3)), np.empty((0, 3)), e, np.empty((2, 0)), 1)
    for dt in (np.float32, np.float64):
        assert F.mse_loss(np.empty((0, 3), dt), np.empty((0, 3), dt), reduction="sum") == 0
        assert F.linear(np.ones((2, 3), dt), np.ones((0, 3), dt), np.ones(0, dt)).shape == (2, 0)


@pytest.mark.parametrize(
    "make, exc, name",
    [
        # reduction=<array>: "truth value of an array is ambiguous" instead of a named error
        (lambda: nn.MSELoss(reduction=np.zeros(2)), ValueError, "reduction"),
        (lambda: nn.CrossEntropyLoss(reduction=np.zeros((1, 2))), ValueError, "reduction"),
        # rng=-1: NumPy's "expected non-negative integer"
        (lambda: nn.Conv2d(1, 2, 3, rng=-1), ValueError, "rng"),
        (lambda: nn.Linear(2, 3, rng=-5), ValueError, "rng"),
        # bias=<array>: ambiguous truth value
        (lambda: nn.Linear(1, 2, bias=np.zeros((1, 2))), TypeError, "bias"),
        (lambda: nn.Conv2d(1, 2, 3, bias=np.ones(3)), TypeError, "bias"),
        # negative_slope past float's range: np.isfinite on an object
        (lambda: nn.LeakyReLU(10**400), ValueError, "negative_slope"),
        # momentum of the wrong type: "'<=' not supported between instances of 'int' and 'str'"
        (lambda: nn.BatchNorm2d(3, momentum="0.1"), ValueError, "momentum"),
        (lambda: nn.BatchNorm1d(3, momentum=(0.1,)), ValueError, "momentum"),
        (lambda: nn.BatchNorm1d(3, momentum=1j), ValueError, "momentum"),
        # weights too big for NumPy: "array is too big" instead of a named error
        (lambda: nn.Conv2d(2, 1, 2**31 - 1), ValueError, "weight"),
        # flags given an array: ambiguous truth value
        (lambda: nn.BatchNorm2d(2, affine=np.ones(2)), TypeError, "affine"),
        (
            lambda: nn.BatchNorm1d(2, track_running_stats=np.ones(2)),
            TypeError,
            "track_running_stats",
        ),
    ],
)
def test_layer_arguments_found_by_the_fuzzer_raise_named_errors(make, exc, name):
    with pytest.raises(exc, match=f"Received: {name}="):
        make()


def test_empty_result_too_big_for_numpy_is_a_named_error():
    # (0, 1, 2**31-1, 2**31-1) float64 is empty, but NumPy refuses its 2**65 bytes
    with pytest.raises(ValueError, match="output"):
        cnncore.adaptive_avg_pool2d(np.zeros((0, 1, 6, 1)), 2**31 - 1)


def test_fit_on_ragged_input_is_a_named_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, rng=0))
    with pytest.raises(TypeError, match="Received: x of type list"):
        model.fit(
            [[1.0, 2.0], [3.0]], np.zeros(2, np.int64), optimizer="sgd", loss="mse", verbose=False
        )


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.ReLU(), (2, 3)),
        (nn.LeakyReLU(), (2, 3)),
        (nn.Dropout(0.5), (2, 3)),
        (nn.Linear(3, 2, rng=0), (2, 3)),
        (nn.Conv2d(1, 2, 3, padding=1, rng=0), (1, 1, 4, 4)),
        (nn.MaxPool2d(2), (1, 1, 4, 4)),
        (nn.GlobalAvgPool2d(), (1, 2, 3, 3)),
        (nn.Sequential(nn.Flatten(), nn.Linear(16, 2, rng=0)), (1, 1, 4, 4)),
    ],
)
@pytest.mark.parametrize("flag", [np.array([True, False]), 1, None, "no"])
def test_backward_input_grad_must_be_a_bool(layer, shape, flag):
    # an array gave NumPy's "truth value of an array ... is ambiguous"; 1 / "no" were accepted
    out = layer(np.ones(shape, np.float32))
    g = np.ones_like(out)
    with pytest.raises(TypeError, match=f"{type(layer).__name__}.backward.*Received: input_grad="):
        layer.backward(g, flag)
    with pytest.raises(TypeError, match="Received: input_grad="):
        layer.backward(g, input_grad=flag)
    assert layer.backward(g, input_grad=True).shape == shape


def test_flatten_of_ragged_input_is_a_named_error():
    # np.asarray's "inhomogeneous shape" ValueError did not name the argument
    with pytest.raises(TypeError, match="Flatten.*Received: input of type list"):
        nn.Flatten()([[1.0, 2.0], [3.0]])


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: F.leaky_relu(np.ones(3), negative_slope=10**400), "negative_slope"),
        (
            lambda: F.leaky_relu_backward(np.ones(3), np.ones(3), negative_slope=-(10**400)),
            "negative_slope",
        ),
        (
            lambda: F.cross_entropy(
                np.ones((2, 3)), np.zeros(2, np.int64), label_smoothing=10**400
            ),
            "label_smoothing",
        ),
    ],
)
def test_huge_real_arguments_are_named_value_errors(call, name):
    """functional kept its own real-number check without the overflow guard of
    ``_validation.check_real``: an int beyond float's range escaped as a bare OverflowError."""
    with pytest.raises(ValueError, match=f"{name} is out of the range of a float"):
        call()


@pytest.mark.parametrize("layer", [nn.PixelShuffle(2), nn.PixelUnshuffle(2)])
def test_pixel_shuffle_in_graph_models(layer):
    """output_shape with the graph models' None batch entry failed in its size check
    (int(None)), so PixelShuffle / PixelUnshuffle could not be called on graph nodes."""
    inp = nn.Input((8, 4, 4))
    model = nn.Model(inp, layer(inp))
    x = np.random.default_rng(0).standard_normal((2, 8, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(model(x), layer(x))


def test_conv_transpose2d_in_graph_models():
    """ConvTranspose2d.__call__ (which takes output_size) called forward directly, so
    calling the layer on a graph node failed instead of recording the call."""
    inp = nn.Input((4, 5, 5))
    layer = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, rng=0)
    model = nn.Model(inp, layer(inp))
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(model(x), layer(x))
    assert layer(x, output_size=(9, 9)).shape == (2, 3, 9, 9)
