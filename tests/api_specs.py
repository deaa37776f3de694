"""One valid call of every public function of cnncore (functional.__all__ plus correlate2d and
convolve2d), described so that cross-cutting tests can generate variants of it.

Used by test_bad_input.py (generated bad-input table, empty batches, views, NaN/Inf),
test_determinism.py (thread counts, concurrent Python threads) and test_resources.py (leaks).

``Spec.make(rng, dtype, n, big)`` returns the arguments as an ordered dict (every public
function takes its arguments by keyword); ``n`` is the batch size (0 for empty batches) and
``big`` scales the sizes up so that the kernels split the work over several threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import cnncore
from cnncore import functional as F
from cnncore._geometry import conv_output_size, pool_output_size


@dataclass
class Spec:
    name: str
    make: Callable[..., dict]
    arrays: tuple[str, ...]  # float data arrays
    fixed_ndim: tuple[str, ...] = ()  # arrays whose ndim is fixed
    index_arrays: tuple[str, ...] = ()  # integer index arrays (argmax positions)
    shape_args: tuple[str, ...] = ()  # 4-tuples of sizes (input_shape, ...)
    params: dict = field(default_factory=dict)  # name -> kind (see test_bad_input.KINDS)
    batched: tuple[bool, ...] = (True,)  # per output: has the batch dimension
    nan_in: str | None = None  # argument whose NaN must reach the output
    linked: tuple[str, ...] = ()  # arrays whose shapes must agree with others

    @property
    def fn(self) -> Callable:
        return getattr(cnncore, self.name)

    def call(self, args: dict) -> Any:
        return self.fn(**args)


def _x(rng, dtype, *shape, positive=False, unit=False):
    if unit:
        a = rng.uniform(0.05, 0.95, shape)
    else:
        a = rng.standard_normal(shape)
        if positive:
            a = np.abs(a) + 0.1
    return a.astype(dtype)


def _sizes(big):
    # (C, H, W): "big" gives several planes and rows per thread
    return (6, 33, 29) if big else (3, 9, 8)


SPECS: list[Spec] = []


def spec(**kw):
    SPECS.append(Spec(**kw))


# --- convolution -------------------------------------------------------------------------

_CONV_KW = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)


def _conv_shapes(n, big):
    c, h, w = (8, 33, 29) if big else (4, 9, 8)
    k = 6
    ho = conv_output_size(h, 3, 2, 2, 1)
    wo = conv_output_size(w, 3, 1, 2, 2)
    return (n, c, h, w), (k, c // 2, 3, 3), (n, k, ho, wo)


def _conv2d(rng, dtype, n=2, big=False):
    xs, ws, _ = _conv_shapes(n, big)
    return dict(
        x=_x(rng, dtype, *xs), weight=_x(rng, dtype, *ws), bias=_x(rng, dtype, ws[0]), **_CONV_KW
    )


def _conv2d_bi(rng, dtype, n=2, big=False):
    xs, ws, gs = _conv_shapes(n, big)
    return dict(
        grad_output=_x(rng, dtype, *gs), weight=_x(rng, dtype, *ws), input_shape=xs, **_CONV_KW
    )


def _conv2d_bw(rng, dtype, n=2, big=False):
    xs, ws, gs = _conv_shapes(n, big)
    return dict(grad_output=_x(rng, dtype, *gs), x=_x(rng, dtype, *xs), weight_shape=ws, **_CONV_KW)


def _conv2d_bx(rng, dtype, n=2, big=False):
    xs, ws, gs = _conv_shapes(n, big)
    return dict(
        grad_output=_x(rng, dtype, *gs),
        x=_x(rng, dtype, *xs),
        weight=_x(rng, dtype, *ws),
        **_CONV_KW,
        output_mask=(True, True, True),
    )


def _conv2d_bb(rng, dtype, n=2, big=False):
    _, _, gs = _conv_shapes(n, big)
    return dict(grad_output=_x(rng, dtype, *gs))


_CONV_PARAMS = dict(
    stride="pos_pair", padding="conv_padding", dilation="pos_pair", groups="pos_int"
)
spec(
    name="conv2d",
    make=_conv2d,
    arrays=("x", "weight", "bias"),
    fixed_ndim=("x", "weight"),
    params=_CONV_PARAMS,
    nan_in="x",
    linked=("x", "weight", "bias"),
)
spec(
    name="conv2d_backward_input",
    make=_conv2d_bi,
    arrays=("grad_output", "weight"),
    fixed_ndim=("grad_output", "weight"),
    shape_args=("input_shape",),
    params=_CONV_PARAMS,
    nan_in="grad_output",
    linked=("grad_output", "weight"),
)
spec(
    name="conv2d_backward_weight",
    make=_conv2d_bw,
    arrays=("grad_output", "x"),
    fixed_ndim=("grad_output", "x"),
    shape_args=("weight_shape",),
    params=_CONV_PARAMS,
    batched=(False,),
    nan_in="grad_output",
    linked=("grad_output", "x"),
)
spec(
    name="conv2d_backward",
    make=_conv2d_bx,
    arrays=("grad_output", "x", "weight"),
    fixed_ndim=("grad_output", "x", "weight"),
    params=dict(_CONV_PARAMS, output_mask="mask3"),
    batched=(True, False, False),
    nan_in="grad_output",
    linked=("grad_output", "x", "weight"),
)
spec(
    name="conv2d_backward_bias",
    make=_conv2d_bb,
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    batched=(False,),
    nan_in="grad_output",
)

_UNFOLD_KW = dict(kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=1)
_UNFOLD_PARAMS = dict(
    kernel_size="pos_pair", stride="pos_pair", padding="nonneg_pair", dilation="pos_pair"
)


def _im2col(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    return dict(x=_x(rng, dtype, n, c, h, w), **_UNFOLD_KW)


def _col2im(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    length = conv_output_size(h, 2, 1, 2, 1) * conv_output_size(w, 3, 2, 2, 1)
    return dict(cols=_x(rng, dtype, n, c * 6, length), output_size=(h, w), **_UNFOLD_KW)


spec(name="im2col", make=_im2col, arrays=("x",), params=_UNFOLD_PARAMS, nan_in="x")
spec(
    name="col2im",
    make=_col2im,
    arrays=("cols",),
    params=dict(_UNFOLD_PARAMS, output_size="nonneg_pair"),
    nan_in="cols",
)


# --- linear ------------------------------------------------------------------------------


def _lin(big):
    return (70, 37, 45) if big else (2, 5, 4)  # (rows per batch item, in, out)


def _linear(rng, dtype, n=2, big=False):
    r, i, o = _lin(big)
    return dict(x=_x(rng, dtype, n, r, i), weight=_x(rng, dtype, o, i), bias=_x(rng, dtype, o))


def _linear_bi(rng, dtype, n=2, big=False):
    r, i, o = _lin(big)
    return dict(grad_output=_x(rng, dtype, n, r, o), weight=_x(rng, dtype, o, i))


def _linear_bw(rng, dtype, n=2, big=False):
    r, i, o = _lin(big)
    return dict(grad_output=_x(rng, dtype, n, r, o), x=_x(rng, dtype, n, r, i))


def _linear_bb(rng, dtype, n=2, big=False):
    r, _, o = _lin(big)
    return dict(grad_output=_x(rng, dtype, n, r, o))


spec(
    name="linear",
    make=_linear,
    arrays=("x", "weight", "bias"),
    fixed_ndim=("weight",),
    nan_in="x",
    linked=("x", "weight", "bias"),
)
spec(
    name="linear_backward_input",
    make=_linear_bi,
    arrays=("grad_output", "weight"),
    fixed_ndim=("weight",),
    nan_in="grad_output",
    linked=("grad_output", "weight"),
)
spec(
    name="linear_backward_weight",
    make=_linear_bw,
    arrays=("grad_output", "x"),
    batched=(False,),
    nan_in="grad_output",
    linked=("grad_output", "x"),
)
spec(
    name="linear_backward_bias",
    make=_linear_bb,
    arrays=("grad_output",),
    batched=(False,),
    nan_in="grad_output",
)


# --- activations -------------------------------------------------------------------------


def _act_shape(n, big):
    return (n, 70, 300) if big else (n, 3, 4)


def _unary(extra=None):
    def make(rng, dtype, n=2, big=False):
        return dict(x=_x(rng, dtype, *_act_shape(n, big)), **(extra or {}))

    return make


def _binary(saved, extra=None, positive=False):
    def make(rng, dtype, n=2, big=False):
        shape = _act_shape(n, big)
        return {
            "grad_output": _x(rng, dtype, *shape),
            saved: _x(rng, dtype, *shape, positive=positive),
            **(extra or {}),
        }

    return make


for _name in ("relu", "sigmoid", "tanh"):
    spec(name=_name, make=_unary(), arrays=("x",), nan_in="x")
spec(
    name="leaky_relu",
    make=_unary({"negative_slope": 0.1}),
    arrays=("x",),
    params=dict(negative_slope="real"),
    nan_in="x",
)
spec(
    name="relu_backward",
    make=_binary("output", positive=True),
    arrays=("grad_output", "output"),
    nan_in="grad_output",
    linked=("grad_output", "output"),
)
spec(
    name="leaky_relu_backward",
    make=_binary("x", {"negative_slope": 0.1}),
    arrays=("grad_output", "x"),
    params=dict(negative_slope="real"),
    nan_in="grad_output",
    linked=("grad_output", "x"),
)
for _name in ("sigmoid_backward", "tanh_backward"):
    spec(
        name=_name,
        make=_binary("output"),
        arrays=("grad_output", "output"),
        nan_in="grad_output",
        linked=("grad_output", "output"),
    )


def _softmax(rng, dtype, n=2, big=False):
    return dict(x=_x(rng, dtype, *_act_shape(n, big)), dim=1)


def _softmax_bw(rng, dtype, n=2, big=False):
    shape = _act_shape(n, big)
    return dict(grad_output=_x(rng, dtype, *shape), output=_x(rng, dtype, *shape, unit=True), dim=1)


for _name in ("softmax", "log_softmax"):
    spec(name=_name, make=_softmax, arrays=("x",), params=dict(dim="int"), nan_in="x")
    spec(
        name=_name + "_backward",
        make=_softmax_bw,
        arrays=("grad_output", "output"),
        params=dict(dim="int"),
        nan_in="grad_output",
        linked=("grad_output", "output"),
    )


# --- losses ------------------------------------------------------------------------------

_POINTWISE = {  # name -> (prediction argument, value kind)
    "mse_loss": ("input", None),
    "l2_loss": ("input", None),
    "l1_loss": ("input", None),
    "msle_loss": ("input", "positive"),
    "mape_loss": ("input", None),
    "binary_cross_entropy_with_logits": ("logits", None),
    "binary_cross_entropy": ("probs", "unit"),
}


def _pointwise(pred, kind, backward):
    def make(rng, dtype, n=2, big=False):
        shape = (n, 70, 300) if big else (n, 3, 4)
        opts = {"positive": kind == "positive", "unit": kind == "unit"}
        args = {
            pred: _x(rng, dtype, *shape, **opts),
            "target": _x(rng, dtype, *shape, **opts),
            "reduction": "sum",
        }
        if not backward:
            args["return_grad"] = True
        return args

    return make


for _name, (_pred, _kind) in _POINTWISE.items():
    _params = dict(reduction="choice")
    spec(
        name=_name,
        make=_pointwise(_pred, _kind, False),
        arrays=(_pred, "target"),
        params=dict(_params, return_grad="bool"),
        batched=(False, True),
        nan_in=_pred,
        linked=(_pred, "target"),
    )
    spec(
        name=_name + "_backward",
        make=_pointwise(_pred, _kind, True),
        arrays=(_pred, "target"),
        params=_params,
        nan_in=_pred,
        linked=(_pred, "target"),
    )


def _ce(backward):
    def make(rng, dtype, n=2, big=False):
        c, s = (40, 200) if big else (5, 3)
        args = dict(
            logits=_x(rng, dtype, n, c, s),
            target=rng.integers(0, c, (n, s)).astype(np.int64),
            reduction="sum",
            label_smoothing=0.1,
        )
        if not backward:
            args["return_grad"] = True
        return args

    return make


spec(
    name="cross_entropy",
    make=_ce(False),
    arrays=("logits",),
    params=dict(reduction="choice", label_smoothing="real", ignore_index="int", return_grad="bool"),
    batched=(False, True),
    nan_in="logits",
    linked=("logits",),
)
spec(
    name="cross_entropy_backward",
    make=_ce(True),
    arrays=("logits",),
    params=dict(reduction="choice", label_smoothing="real", ignore_index="int"),
    nan_in="logits",
    linked=("logits",),
)


# --- pooling -----------------------------------------------------------------------------

_MAX_KW = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
_AVG_KW = dict(
    kernel_size=3,
    stride=2,
    padding=1,
    ceil_mode=True,
    count_include_pad=False,
    divisor_override=None,
)


def _pool_out(h, w, k=3, s=2, p=1, ceil=True):
    return pool_output_size(h, k, s, p, 1, ceil), pool_output_size(w, k, s, p, 1, ceil)


def _max_pool(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    return dict(x=_x(rng, dtype, n, c, h, w), return_indices=True, **_MAX_KW)


def _indices(rng, shape, plane):
    return rng.integers(0, plane, shape).astype(np.int64)


def _max_pool_bw(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    ho, wo = _pool_out(h, w)
    return dict(
        grad_output=_x(rng, dtype, n, c, ho, wo),
        indices=_indices(rng, (n, c, ho, wo), h * w),
        input_shape=(n, c, h, w),
    )


def _avg_pool(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    return dict(x=_x(rng, dtype, n, c, h, w), **_AVG_KW)


def _avg_pool_bw(rng, dtype, n=2, big=False):
    c, h, w = _sizes(big)
    ho, wo = _pool_out(h, w)
    return dict(grad_output=_x(rng, dtype, n, c, ho, wo), input_shape=(n, c, h, w), **_AVG_KW)


_POOL_PARAMS = dict(
    kernel_size="pos_pair", stride="pool_stride", padding="nonneg_pair", ceil_mode="bool"
)
spec(
    name="max_pool2d",
    make=_max_pool,
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(_POOL_PARAMS, dilation="pos_pair", return_indices="bool"),
    batched=(True, True),
    nan_in="x",
)
spec(
    name="max_pool2d_backward",
    make=_max_pool_bw,
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    index_arrays=("indices",),
    shape_args=("input_shape",),
    nan_in="grad_output",
)
spec(
    name="avg_pool2d",
    make=_avg_pool,
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(_POOL_PARAMS, count_include_pad="bool", divisor_override="divisor"),
    nan_in="x",
)
spec(
    name="avg_pool2d_backward",
    make=_avg_pool_bw,
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    params=dict(_POOL_PARAMS, count_include_pad="bool", divisor_override="divisor"),
    nan_in="grad_output",
)


def _adaptive(kind, backward):
    def make(rng, dtype, n=2, big=False):
        c, h, w = _sizes(big)
        oh, ow = (7, 5) if big else (4, 3)
        if kind == "global":
            oh = ow = 1
        if not backward:
            args = dict(x=_x(rng, dtype, n, c, h, w))
            if kind != "global":
                args["output_size"] = (oh, ow)
            if kind == "max":
                args["return_indices"] = True
            return args
        args = dict(grad_output=_x(rng, dtype, n, c, oh, ow))
        if kind == "max":
            args["indices"] = _indices(rng, (n, c, oh, ow), h * w)
        args["input_shape"] = (n, c, h, w)
        return args

    return make


spec(
    name="adaptive_avg_pool2d",
    make=_adaptive("avg", False),
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(output_size="adaptive_size"),
    nan_in="x",
)
spec(
    name="adaptive_avg_pool2d_backward",
    make=_adaptive("avg", True),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    nan_in="grad_output",
)
spec(
    name="adaptive_max_pool2d",
    make=_adaptive("max", False),
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(output_size="adaptive_size", return_indices="bool"),
    batched=(True, True),
    nan_in="x",
)
spec(
    name="adaptive_max_pool2d_backward",
    make=_adaptive("max", True),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    index_arrays=("indices",),
    shape_args=("input_shape",),
    nan_in="grad_output",
)
spec(
    name="global_avg_pool2d",
    make=_adaptive("global", False),
    arrays=("x",),
    fixed_ndim=("x",),
    nan_in="x",
)
spec(
    name="global_avg_pool2d_backward",
    make=_adaptive("global", True),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    nan_in="grad_output",
)

_LP_KW = dict(norm_type=2.0, kernel_size=3, stride=2, ceil_mode=False)


def _lp(backward):
    def make(rng, dtype, n=2, big=False):
        c, h, w = _sizes(big)
        x = _x(rng, dtype, n, c, h, w, positive=True)
        if not backward:
            return dict(x=x, **_LP_KW)
        ho, wo = _pool_out(h, w, 3, 2, 0, False)
        return dict(grad_output=_x(rng, dtype, n, c, ho, wo), x=x, **_LP_KW)

    return make


_LP_PARAMS = dict(norm_type="norm", kernel_size="pos_pair", stride="pool_stride", ceil_mode="bool")
spec(
    name="lp_pool2d",
    make=_lp(False),
    arrays=("x",),
    fixed_ndim=("x",),
    params=_LP_PARAMS,
    nan_in="x",
)
spec(
    name="lp_pool2d_backward",
    make=_lp(True),
    arrays=("grad_output", "x"),
    fixed_ndim=("grad_output", "x"),
    params=_LP_PARAMS,
    nan_in="grad_output",
    linked=("grad_output", "x"),
)


def _unpool(backward):
    def make(rng, dtype, n=2, big=False):
        c, h, w = (6, 16, 14) if big else (3, 4, 4)
        idx = _indices(rng, (n, c, h, w), 4 * h * w)
        if not backward:
            return dict(
                x=_x(rng, dtype, n, c, h, w), indices=idx, kernel_size=2, stride=2, padding=0
            )
        return dict(grad_output=_x(rng, dtype, n, c, 2 * h, 2 * w), indices=idx)

    return make


spec(
    name="max_unpool2d",
    make=_unpool(False),
    arrays=("x",),
    fixed_ndim=("x",),
    index_arrays=("indices",),
    params=dict(kernel_size="pos_pair", stride="pool_stride", padding="nonneg_pair"),
    nan_in="x",
)
spec(
    name="max_unpool2d_backward",
    make=_unpool(True),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    index_arrays=("indices",),
    nan_in="grad_output",
)


# --- padding -----------------------------------------------------------------------------

_PAD = (1, 2, 3, 0)  # left, right, top, bottom


def _pad(backward):
    def make(rng, dtype, n=2, big=False):
        c, h, w = _sizes(big)
        if not backward:
            return dict(x=_x(rng, dtype, n, c, h, w), padding=_PAD, mode="reflect")
        return dict(grad_output=_x(rng, dtype, n, c, h + 3, w + 3), padding=_PAD, mode="reflect")

    return make


spec(
    name="pad2d",
    make=_pad(False),
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(padding="pad", mode="choice"),
    nan_in="x",
)
spec(
    name="pad2d_backward",
    make=_pad(True),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    params=dict(padding="pad", mode="choice"),
    nan_in="grad_output",
)


# --- signal ------------------------------------------------------------------------------


def _signal(rng, dtype, n=2, big=False):
    m = 40 if big else 9
    return dict(
        in1=_x(rng, dtype, m, m - 1),
        in2=_x(rng, dtype, 3, 2),
        mode="same",
        boundary="symm",
        method="direct",
    )


for _name in ("correlate2d", "convolve2d"):
    spec(
        name=_name,
        make=_signal,
        arrays=("in1", "in2"),
        fixed_ndim=("in1", "in2"),
        params=dict(mode="choice", boundary="choice", method="choice", fillvalue="real"),
        batched=(False,),
        nan_in="in1",
    )

BY_NAME = {s.name: s for s in SPECS}

assert set(BY_NAME) == set(F.__all__) | {"correlate2d", "convolve2d"}, sorted(
    set(F.__all__) ^ set(BY_NAME)
)


def outputs(result: Any) -> tuple:
    """The result of a call as a tuple of ndarrays / scalars."""
    return result if isinstance(result, tuple) else (result,)
