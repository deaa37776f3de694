"""The cross-cutting bad-input table: generated from one valid call of every public function
(tests/api_specs.py) and of every layer, by applying the same generic perturbations to each.

The per-module tables (test_conv.py, test_pool.py, test_pad.py, test_activation.py,
test_loss.py, test_nn.py) hold the function-specific cases; this one makes sure that *every*
entry point handles the generic ones the same way:

* every float array argument: None, other dtypes (int, bool, float16, complex, object,
  strings), ragged lists, mixed float widths, a wrong number of dimensions;
* shape / channel mismatches between the arguments of a call;
* every size / stride / padding / dilation / flag / choice parameter: zero, negative, huge
  (2**40, 2**70), wrongly typed (float, str, bool, None, triples);
* shape arguments of the backward functions: wrong length, negative, non-integer, huge
  (dimensions past 2**31), inconsistent with grad_output;
* pooling indices: wrong dtype, wrong shape, out of range;

each asserting the exception type, that the message names the argument and contains
"Received", and that the error comes quickly with no large allocation (sizes are computed
with Python ints before any kernel runs).  Then the good-input edge cases: NaN/Inf propagate
without raising, empty batches give empty results of the right shape, and views
(non-contiguous, negative strides, Fortran order, read-only) give bit-identical results.
"""

from __future__ import annotations

import math
import re
import time
import tracemalloc

import numpy as np
import pytest
from api_specs import BY_NAME, SPECS, outputs

import cnncore
from cnncore import nn

VE, TE = ValueError, TypeError

# Bad values per parameter kind: (value, expected exception).
KINDS = {
    "pos_pair": [
        (0, VE),
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        ((), VE),
        (1.5, TE),
        ("2", TE),
        (True, TE),
        (None, TE),
        ([2, 1.5], TE),
        (np.array([[1, 2]]), VE),
    ],
    "pool_stride": [
        (0, VE),
        (-2, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("2", TE),
        (True, TE),
    ],
    "nonneg_pair": [
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("1", TE),
        (True, TE),
        (None, TE),
    ],
    "conv_padding": [
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("full", VE),
        (None, TE),
        (True, TE),
    ],
    "pos_int": [(0, VE), (-1, VE), (2**40, VE), (1.5, TE), ("2", TE), (True, TE), (None, TE)],
    "int": [(2**70, VE), (1.5, TE), ("1", TE), (True, TE), (None, TE)],
    "real": [("0.1", TE), (None, TE), (True, TE), (1j, TE), ([0.1], TE)],
    "bool": [(1, TE), ("yes", TE), (None, TE), (np.array([True, False]), TE)],
    "mask3": [
        ((True, True), VE),
        ((True, True, True, True), VE),
        ((True, 1, True), TE),
        ((True, None, False), TE),
        (None, TE),
        ("TTT", TE),
        (True, TE),
    ],
    "choice": [("bogus", VE), (None, VE), (3, VE), ("MEAN", VE)],
    "divisor": [(0, VE), (2**40, VE), (1.5, TE), ("2", TE), (True, TE)],
    "adaptive_size": [(-1, VE), ((1, 2, 3), VE), (2**40, VE), (1.5, TE), ("2", TE), (None, TE)],
    "norm": [(0, VE), (-1, VE), (math.inf, VE), (math.nan, VE), ("2", TE), (None, TE), (True, TE)],
    "pad": [
        ((1, 2, 3), VE),
        (2**40, VE),
        (1.5, TE),
        ("1", TE),
        (None, TE),
        (True, TE),
        ((1, 1.5), TE),
    ],
}

# Array-argument perturbations: name -> (function of the valid array, expected exception).
ARRAY_BAD = {
    "None": (lambda a: None, TE),
    "int64": (lambda a: a.astype(np.int64), TE),
    "bool": (lambda a: a > 0, TE),
    "float16": (lambda a: a.astype(np.float16), TE),
    "complex": (lambda a: a.astype(np.complex128), TE),
    "object": (lambda a: a.astype(object), TE),
    "str": (lambda a: "abc", TE),
    "ragged": (lambda a: [[1.0], [1.0, 2.0]], TE),
}

INDEX_BAD = {
    "None": (lambda a, hw: None, TE),
    "float": (lambda a, hw: a.astype(np.float64), TE),
    "bool": (lambda a, hw: a > 0, TE),
    "object": (lambda a, hw: a.astype(object), TE),
    "str": (lambda a, hw: "idx", TE),
    "shape": (lambda a, hw: a[..., :-1], VE),
    "ndim": (lambda a, hw: a[0], VE),
    "range": (lambda a, hw: _set_first(a, hw), VE),
    "negative": (lambda a, hw: _set_first(a, -1), VE),
    "huge": (lambda a, hw: _set_first(a, 2**62), VE),
    "uint64": (lambda a, hw: _set_first(a.astype(np.uint64), 2**63), VE),
}


def _set_first(a, value):
    a = a.copy()
    a.reshape(-1)[0] = value
    return a


# Shape-argument perturbations: (function of the valid tuple, expected exception).
SHAPE_BAD = {
    "None": (lambda s: None, TE),
    "str": (lambda s: "abcd", TE),
    "len3": (lambda s: s[:3], VE),
    "len5": (lambda s: (*s, 1), VE),
    "negative": (lambda s: (s[0], s[1], -s[2], s[3]), VE),
    "float": (lambda s: tuple(float(v) for v in s), TE),
    "0-d": (lambda s: np.array(4), TE),
    "past-2**31": (lambda s: (s[0], s[1], 2**31 + 1, 2**31 + 1), VE),
    "past-2**62": (lambda s: (2**40, 2**40, 2**40, 2**40), VE),
    "N+1": (lambda s: (s[0] + 1, *s[1:]), VE),
    "C+1": (lambda s: (s[0], s[1] + 1, *s[2:]), VE),
}
# Spatial sizes that grad_output (and the geometry) pin down.
SHAPE_BAD_SPATIAL = {"conv2d_backward_input", "conv2d_backward_weight", "avg_pool2d_backward"}

# Shape / channel mismatches between arguments: (argument, axis, names allowed in the message).
MISMATCH = {
    "conv2d": [("x", 1, "x|input|weight"), ("weight", 1, "x|input|weight"), ("bias", 0, "bias")],
    "conv2d_backward_input": [
        ("grad_output", 1, "grad_output"),
        ("grad_output", 2, "grad_output"),
        ("weight", 1, "input_shape|weight"),
    ],
    "conv2d_backward_weight": [
        ("grad_output", 1, "grad_output"),
        ("grad_output", 3, "grad_output"),
        ("x", 1, "x|input|weight_shape"),
    ],
    "linear": [("x", -1, "x"), ("weight", -1, "x|weight"), ("bias", 0, "bias")],
    "linear_backward_input": [
        ("grad_output", -1, "grad_output"),
        ("weight", 0, "grad_output|weight"),
    ],
    "linear_backward_weight": [("grad_output", 0, "grad_output|x"), ("x", 1, "grad_output|x")],
    "max_pool2d_backward": [("grad_output", 2, "grad_output|indices")],
    "avg_pool2d_backward": [("grad_output", 3, "grad_output")],
    "adaptive_max_pool2d_backward": [("grad_output", 2, "grad_output|indices")],
    "global_avg_pool2d_backward": [("grad_output", 2, "grad_output")],
    "lp_pool2d_backward": [("grad_output", 2, "grad_output"), ("x", 1, "grad_output|x")],
    "max_unpool2d": [("x", 2, "x|indices")],
    "max_unpool2d_backward": [("grad_output", 1, "grad_output|indices")],
    "cross_entropy": [("logits", 2, "target|logits")],
    "cross_entropy_backward": [("logits", 0, "target|logits")],
}
for _s in SPECS:
    if _s.name not in MISMATCH and len(_s.linked) == 2:  # elementwise pairs: same shape
        a, b = _s.linked
        MISMATCH[_s.name] = [(a, -1, f"{a}|{b}"), (b, 0, f"{a}|{b}")]

OPTIONAL = {"bias"}  # array arguments for which None is valid

# Functions that reject NaN/Inf by design (PyTorch does too): probabilities must be in [0, 1].
REJECTS_NONFINITE = {"binary_cross_entropy", "binary_cross_entropy_backward"}
# msle takes log1p: inputs <= -1 (so -inf) are outside its domain.
REJECTS_NEG_INF = {"msle_loss", "msle_loss_backward"}
# Gradients through sign(): d|x|/dx at NaN is 0, as in PyTorch.
NAN_GRADIENT_IS_ZERO = {"l1_loss_backward", "mape_loss_backward"}


def _valid(name, dtype=np.float64, n=2):
    spec = BY_NAME[name]
    return spec, spec.make(np.random.default_rng(0), dtype, n=n)


def _grow(a, axis):
    shape = list(np.shape(a))
    shape[axis] += 1
    return np.ones(shape, a.dtype)


def _expect(call, exc, names):
    """``call()`` raises exactly ``exc`` whose message matches ``names`` and contains
    "Received", within a second and without allocating more than a few MiB."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Exception) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = info.value
    assert type(err) is exc, f"{type(err).__name__} instead of {exc.__name__}: {err}"
    assert re.search(names, str(err)), f"message does not name {names!r}: {err}"
    assert "Received" in str(err), f"message lacks 'Received': {err}"
    assert time.perf_counter() - t0 < 2.0
    assert peak < 16 * 2**20, f"peak traced allocation {peak} bytes"


# ------------------------------------------------------------------------------------------
# The generated table
# ------------------------------------------------------------------------------------------


def _cases():
    out = []
    for spec in SPECS:
        for arg in spec.arrays:
            for key, (_bad, exc) in ARRAY_BAD.items():
                if key == "None" and arg in OPTIONAL:
                    continue
                out.append(
                    pytest.param(spec.name, "array", arg, key, exc, id=f"{spec.name}-{arg}-{key}")
                )
            if len(spec.arrays) > 1 and arg != spec.arrays[0]:
                out.append(
                    pytest.param(
                        spec.name, "mixed", arg, "width", TE, id=f"{spec.name}-{arg}-mixed-width"
                    )
                )
            if arg in spec.fixed_ndim:
                out.append(
                    pytest.param(spec.name, "ndim", arg, "+1", VE, id=f"{spec.name}-{arg}-ndim+1")
                )
                out.append(
                    pytest.param(spec.name, "ndim", arg, "-1", VE, id=f"{spec.name}-{arg}-ndim-1")
                )
        for i, (arg, axis, _) in enumerate(MISMATCH.get(spec.name, [])):
            out.append(
                pytest.param(
                    spec.name, "mismatch", arg, i, VE, id=f"{spec.name}-{arg}-axis{axis}-mismatch"
                )
            )
        for arg in spec.index_arrays:
            for key, (_, exc) in INDEX_BAD.items():
                if (spec.name, key) == ("max_unpool2d_backward", "shape"):
                    continue  # indices give grad_x its shape: any (N, C, h, w) is valid
                out.append(
                    pytest.param(spec.name, "index", arg, key, exc, id=f"{spec.name}-{arg}-{key}")
                )
        for arg in spec.shape_args:
            for key, (_, exc) in SHAPE_BAD.items():
                out.append(
                    pytest.param(spec.name, "shape", arg, key, exc, id=f"{spec.name}-{arg}-{key}")
                )
            if spec.name in SHAPE_BAD_SPATIAL:
                out.append(
                    pytest.param(spec.name, "shape", arg, "H+7", VE, id=f"{spec.name}-{arg}-H+7")
                )
        for arg, kind in spec.params.items():
            for i, (value, exc) in enumerate(KINDS[kind]):
                out.append(
                    pytest.param(
                        spec.name,
                        "param",
                        arg,
                        i,
                        exc,
                        id=f"{spec.name}-{arg}-{kind}{i}-{value!r:.20}",
                    )
                )
    return out


CASES = _cases()


@pytest.mark.parametrize("name, what, arg, key, exc", CASES)
def test_bad_input(name, what, arg, key, exc):
    spec, args = _valid(name)
    names = arg
    if what == "array":
        args[arg] = ARRAY_BAD[key][0](args[arg])
    elif what == "mixed":
        args[arg] = args[arg].astype(np.float32)
        names = f"{arg}|{spec.arrays[0]}"
    elif what == "ndim":
        args[arg] = args[arg][None] if key == "+1" else args[arg][0]
    elif what == "mismatch":
        arg, axis, names = MISMATCH[name][key]
        args[arg] = _grow(args[arg], axis)
    elif what == "index":
        args[arg] = INDEX_BAD[key][0](args[arg], 10**6)  # past every plane of the specs
        if key in ("shape", "ndim"):
            names = f"{arg}|grad_output"
    elif what == "shape":
        if key == "H+7":
            s = args[arg]
            args[arg] = (s[0], s[1], s[2] + 7, s[3])
            names = f"{arg}|grad_output"
        else:
            args[arg] = SHAPE_BAD[key][0](args[arg])
            if key in ("N+1", "C+1"):
                names = f"{arg}|grad_output|channels|groups|weight"
    elif what == "param":
        value, _ = KINDS[spec.params[arg]][key]
        args[arg] = value
        if arg == "padding" and spec.params[arg] in ("nonneg_pair", "conv_padding"):
            names = "padding|output"  # huge padding may be caught as an enormous output
        if arg in ("output_size", "norm_type"):
            names = f"{arg}|output"
    _expect(lambda: spec.call(args), exc, names)


def test_every_public_function_is_in_the_table():
    names = {c.values[0] for c in CASES}
    assert names == set(cnncore.functional.__all__) | {"correlate2d", "convolve2d"}


# ------------------------------------------------------------------------------------------
# Good inputs at the edges: NaN/Inf, empty batches, views
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", [s.name for s in SPECS])
def test_nan_and_inf_do_not_raise(name, value):
    """One non-finite element (in the middle of the main input) is computed with, not
    rejected -- except where it is outside the function's documented domain."""
    spec, args = _valid(name)
    a = args[spec.nan_in].copy()
    a.reshape(-1)[a.size // 2] = value
    args[spec.nan_in] = a
    if name in REJECTS_NONFINITE or (name in REJECTS_NEG_INF and value == -np.inf):
        _expect(lambda: spec.call(args), VE, spec.nan_in)
        return
    with np.errstate(all="ignore"):
        spec.call(args)


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.name not in REJECTS_NONFINITE])
def test_nan_propagates(name):
    """An all-NaN main input gives NaN in the outputs (NaN is never turned into a number)."""
    spec, args = _valid(name)
    args[spec.nan_in] = np.full_like(args[spec.nan_in], np.nan)
    with np.errstate(all="ignore"):
        result = outputs(spec.call(args))
    floats = [np.asarray(r) for r in result if np.asarray(r).dtype.kind == "f"]
    if name in NAN_GRADIENT_IS_ZERO:
        assert all((r == 0).all() for r in floats)
    elif name + "_backward" in NAN_GRADIENT_IS_ZERO:  # (loss, grad): NaN loss, zero gradient
        assert np.isnan(floats[0]).all() and (floats[1] == 0).all()
    else:
        assert all(np.isnan(r).any() for r in floats), "NaN vanished"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name", [s.name for s in SPECS if s.name not in ("correlate2d", "convolve2d")]
)
def test_empty_batch_gives_empty_result_of_the_right_shape(name, dtype):
    spec = BY_NAME[name]
    ref = outputs(spec.call(spec.make(np.random.default_rng(0), dtype, n=3)))
    got = outputs(spec.call(spec.make(np.random.default_rng(0), dtype, n=0)))
    assert len(got) == len(ref)
    for r, g, batched in zip(ref, got, spec.batched + (True,) * len(ref), strict=False):
        r, g = np.asarray(r), np.asarray(g)
        assert g.dtype == r.dtype
        if batched:
            assert g.shape == (0, *r.shape[1:])
        else:  # a reduction over the batch: zeros of the usual shape
            assert g.shape == r.shape
            np.testing.assert_array_equal(g, 0)


def _views(a):
    """Same values as ``a``: a non-contiguous view, a negative-stride view, a Fortran-order
    copy and a read-only copy."""
    out = {}
    if a.ndim:
        wide = np.repeat(a, 2, axis=-1)
        out["strided"] = wide[..., ::2]
        out["negative"] = np.flip(np.flip(a, -1).copy(), -1)
    out["fortran"] = np.asfortranarray(a)
    ro = a.copy()
    ro.flags.writeable = False
    out["readonly"] = ro
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [s.name for s in SPECS])
def test_views_give_bit_identical_results_and_leave_inputs_alone(name, dtype):
    spec, args = _valid(name, dtype)
    ref = outputs(spec.call(args))
    for arg in spec.arrays + spec.index_arrays:
        base = args[arg]
        if not isinstance(base, np.ndarray):
            continue
        for kind, view in _views(base).items():
            before = np.array(view, copy=True)
            got = outputs(spec.call({**args, arg: view}))
            np.testing.assert_array_equal(view, before)  # inputs never modified
            for r, g in zip(ref, got, strict=True):
                assert np.asarray(g).tobytes() == np.asarray(r).tobytes(), (arg, kind)
        if dtype == np.float64 and base.size <= 2000:  # nested lists of Python floats
            got = outputs(spec.call({**args, arg: base.tolist()}))
            for r, g in zip(ref, got, strict=True):
                assert np.asarray(g).tobytes() == np.asarray(r).tobytes(), (arg, "list")


# ------------------------------------------------------------------------------------------
# Layers: constructors and forward
# ------------------------------------------------------------------------------------------

LAYERS = {
    # name: (valid constructor kwargs, parameter kinds, valid input shape)
    "Conv2d": (
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=3,
            stride=1,
            padding=1,
            dilation=1,
            groups=2,
            padding_mode="zeros",
        ),
        dict(
            in_channels="pos_int",
            out_channels="pos_int",
            kernel_size="pos_pair",
            stride="pos_pair",
            padding="conv_padding",
            dilation="pos_pair",
            groups="pos_int",
            padding_mode="choice",
            dtype="dtype",
            rng="rng",
        ),
        (2, 4, 7, 7),
    ),
    "Linear": (
        dict(in_features=5, out_features=3),
        dict(in_features="pos_int", out_features="pos_int", dtype="dtype", rng="rng"),
        (2, 5),
    ),
    "MaxPool2d": (
        dict(kernel_size=2, stride=2, padding=0, dilation=1),
        dict(
            kernel_size="pos_pair",
            stride="pool_stride",
            padding="nonneg_pair",
            dilation="pos_pair",
            ceil_mode="bool",
        ),
        (2, 3, 6, 6),
    ),
    "AvgPool2d": (
        dict(kernel_size=2, stride=2, padding=0),
        dict(
            kernel_size="pos_pair",
            stride="pool_stride",
            padding="nonneg_pair",
            ceil_mode="bool",
            count_include_pad="bool",
            divisor_override="divisor",
        ),
        (2, 3, 6, 6),
    ),
    "AdaptiveAvgPool2d": (
        dict(output_size=(2, 3)),
        dict(output_size="adaptive_size"),
        (2, 3, 6, 6),
    ),
    "GlobalAvgPool2d": ({}, {}, (2, 3, 6, 6)),
    "BatchNorm1d": (
        dict(num_features=3),
        dict(num_features="pos_int", eps="positive", momentum="momentum", dtype="dtype"),
        (4, 3),
    ),
    "BatchNorm2d": (
        dict(num_features=3),
        dict(num_features="pos_int", eps="positive", momentum="momentum", dtype="dtype"),
        (4, 3, 5, 5),
    ),
    "Flatten": (dict(start_dim=1, end_dim=-1), dict(start_dim="int", end_dim="int"), (2, 3, 4)),
    "Dropout": (dict(p=0.5), dict(p="probability"), (2, 3)),
    "ReLU": ({}, {}, (2, 3)),
    "Sigmoid": ({}, {}, (2, 3)),
    "Tanh": ({}, {}, (2, 3)),
    "LeakyReLU": (dict(negative_slope=0.1), dict(negative_slope="finite"), (2, 3)),
    "Softmax": (dict(dim=1), dict(dim="int"), (2, 3)),
    "LogSoftmax": (dict(dim=1), dict(dim="int"), (2, 3)),
}
LOSSES = [
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "MSELoss",
    "L1Loss",
    "MSLELoss",
    "MAPELoss",
    "L2Loss",
]

# Layer-specific parameter kinds (the library's choices: a non-number where a positive /
# finite number / probability is expected raises ValueError, as for an out-of-range one).
LAYER_KINDS = dict(KINDS)
LAYER_KINDS.update(
    {
        "dtype": [(np.int32, TE), ("float16", TE), (object, TE), ("nonsense", TE), (complex, TE)],
        "rng": [("seed", TE), (1.5, TE), ([1, 2], TE)],
        "positive": [(0, VE), (-1e-5, VE), (math.nan, VE), ("1e-5", VE), (None, VE)],
        "momentum": [(-0.1, VE), (1.5, VE), (math.nan, VE), (True, VE)],
        "probability": [(-0.1, VE), (1.5, VE), (math.nan, VE), ("0.5", VE), (None, VE), (True, VE)],
        "finite": [(math.inf, VE), (math.nan, VE), ("0.1", VE), (None, VE), (True, VE)],
        "adaptive_size": [
            (0, VE),
            (-1, VE),
            ((1, 2, 3), VE),
            (2**40, VE),
            (1.5, TE),
            ("2", TE),
            (None, TE),
        ],
        "int": [(2**40, VE), (1.5, TE), ("1", TE), (True, TE), (None, TE)],
    }
)


def _layer_cases():
    out = []
    for name, (_, kinds, _) in LAYERS.items():
        for param, kind in kinds.items():
            for i, (value, exc) in enumerate(LAYER_KINDS[kind]):
                out.append(
                    pytest.param(name, param, i, exc, id=f"{name}-{param}-{kind}{i}-{value!r:.20}")
                )
    for name in LOSSES:
        for i, (value, exc) in enumerate(KINDS["choice"]):
            if value is None:  # None means the loss's default reduction
                continue
            out.append(pytest.param(name, "reduction", i, exc, id=f"{name}-reduction-{value!r}"))
    return out


@pytest.mark.parametrize("name, param, i, exc", _layer_cases())
def test_layer_constructor_rejects_bad_parameters(name, param, i, exc):
    if name in LOSSES:
        kwargs, kind = {}, "choice"
    else:
        kwargs, kinds, _ = LAYERS[name]
        kind = kinds[param]
    value, _ = LAYER_KINDS[kind][i]
    _expect(lambda: getattr(nn, name)(**{**kwargs, param: value}), exc, param)


_FORWARD_BAD = {
    "None": (lambda x: None, TE),
    "int": (lambda x: x.astype(np.int32), TE),
    "complex": (lambda x: x.astype(np.complex64), TE),
    "object": (lambda x: x.astype(object), TE),
    "ragged": (lambda x: [[1.0], [1.0, 2.0]], TE),
}
_FORWARD_SHAPE = {  # layers with a fixed input rank / channel count
    "Conv2d": [("ndim", VE), ("channels", VE)],
    "Linear": [("channels", VE)],
    "MaxPool2d": [("ndim", VE)],
    "AvgPool2d": [("ndim", VE)],
    "AdaptiveAvgPool2d": [("ndim", VE)],
    "GlobalAvgPool2d": [("ndim", VE)],
    "BatchNorm1d": [("ndim", VE), ("channels", VE)],
    "BatchNorm2d": [("ndim", VE), ("channels", VE)],
}


def _forward_cases():
    out = []
    for name in LAYERS:
        if name == "Flatten":  # a pure reshape: any array is fine
            continue
        for key, (_, exc) in _FORWARD_BAD.items():
            out.append(pytest.param(name, key, exc, id=f"{name}-{key}"))
        for key, exc in _FORWARD_SHAPE.get(name, []):
            out.append(pytest.param(name, key, exc, id=f"{name}-{key}"))
    return out


@pytest.mark.parametrize("name, key, exc", _forward_cases())
def test_layer_forward_rejects_bad_input(name, key, exc):
    kwargs, _, shape = LAYERS[name]
    layer = getattr(nn, name)(**kwargs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if key == "ndim":
        bad = x[0]
    elif key == "channels":
        bad = _grow(x, 1 if name != "Linear" else -1)
    else:
        bad = _FORWARD_BAD[key][0](x)
    _expect(lambda: layer(bad), exc, "input|x|in_features|channels")


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "Flatten"])
def test_layer_forward_empty_batch_and_nan(name):
    kwargs, _, shape = LAYERS[name]
    layer = getattr(nn, name)(**kwargs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = layer(x)
    if not name.startswith("BatchNorm"):  # training-mode batch norm needs > 1 value
        empty = layer(x[:0])
        assert empty.shape == (0, *ref.shape[1:]) and empty.dtype == ref.dtype
    x[0].reshape(-1)[0] = np.nan
    y = layer(x)
    assert np.isnan(y).any()
