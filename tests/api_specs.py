"""One spec record per public op of cnncore (``cnncore.functional.__all__`` plus
``correlate2d`` and ``convolve2d``): the single list of ops that the tests and the fuzzer
iterate.  **Adding an op = one record here** (``op(...)`` below; the record type is
tests/opspec.py's ``OpSpec``, modelled on PyTorch's OpInfo):

* its geometry -- ``(fixed(n, big), draw(g))``, usually shared with its family -- and a
  ``build(arrays, geometry)`` of its keyword arguments (``vary`` draws the optional ones):
  from these come the canonical call ``make`` and the random valid calls ``sample``;
* its arguments (``arrays``, ``params`` kinds, ``mismatch``, ...): the bad-input rows;
* its NaN / empty-batch behaviour, its NumPy reference and its backward relations.

Consumers:

* tests/test_specs.py -- samples against the references (float32 and float64), a float64
  finite-difference check of every backward relation, every sample a valid call;
* tests/test_bad_input.py -- the error inputs (bad-input table), NaN/Inf, empty batches,
  views;
* tools/fuzz.py -- the valid base calls (``sample``) that it then mutates;
* tests/test_determinism.py, tests/test_resources.py -- the canonical call (``make``).

References come from tests/reference.py; those still kept in a family's test file
(test_activation, test_loss, test_pool, test_pad, test_signal) are imported from it when a
reference test first needs them (so the fuzzer does not import the test files).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import SimpleNamespace as G
from typing import Any

import numpy as np
import reference as R
from opspec import (
    Backward,
    Canon,
    Draw,
    OpSpec,
    add_batch,
    drop_batch,
    is_unbatched,
    outputs,
    pick,
    same_shape,
    unbatch_outputs,
)

from cnncore import functional as F
from cnncore._geometry import pool_output_size

__all__ = [
    "BY_NAME",
    "SPECS",
    "OpSpec",
    "outputs",
    "draw_adaptive",
    "draw_conv",
    "draw_conv_transpose",
    "draw_lead",
    "draw_pool",
    "draw_shape",
]

SPECS: list[OpSpec] = []


def op(
    name: str,
    geometry: tuple[Callable, Callable],
    build: Callable[[Canon, Any], dict],
    vary: Callable[[Draw, dict, Any], None] | None = None,
    **fields: Any,
) -> None:
    """Add the record of ``name``: canonical call ``build(Canon, fixed(n, big))``, random
    calls ``build(draw, draw_geometry(draw))`` then ``vary(draw, args, geometry)``."""
    fixed, draw_geometry = geometry

    def make(rng: np.random.Generator, dtype: Any, n: int = 2, big: bool = False) -> dict:
        return build(Canon(rng, dtype), fixed(n, big))

    unbatched = fields.get("unbatched")

    def sample(g: Draw) -> dict:
        geo = draw_geometry(g)
        args = build(g, geo)
        if vary is not None:
            vary(g, args, geo)
        if unbatched and g.coin(0.2) and np.shape(args[next(iter(unbatched))])[0] > 0:
            args = drop_batch(SPECS[index], args)  # one unbatched sample
        return args

    reference = fields.pop("reference", None)
    if unbatched and reference is not None:
        reference = _batched_reference(reference, len(SPECS))
    index = len(SPECS)
    SPECS.append(OpSpec(name=name, make=make, sample=sample, reference=reference, **fields))


def _batched_reference(ref: Callable[[dict], Any], index: int) -> Callable[[dict], Any]:
    """The batched-only reference ``ref`` of record ``SPECS[index]`` for any call: an
    unbatched call is computed as a batch of one."""

    def call(a: dict) -> Any:
        spec = SPECS[index]
        if not is_unbatched(spec, a):
            return ref(a)
        return unbatch_outputs(spec, ref(add_batch(spec, a)))

    return call


def _ref(module: str, name: str) -> Callable:
    """The reference ``name`` of tests/<module>.py, imported on the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _out(size: int, k: int, s: int, p_total: int, d: int) -> int:
    return max(R.out_size(size, k, s, p_total, d), 0)


def _sizes(big: bool) -> tuple[int, int, int]:
    # (C, H, W): "big" gives several planes and rows per thread
    return (6, 33, 29) if big else (3, 9, 8)


def _return_grad(g: Draw, args: dict, geo: Any = None) -> None:
    if g.coin():
        args["return_grad"] = g.coin()
    else:
        del args["return_grad"]


# --- convolution ---------------------------------------------------------------------------

_CONV_KW = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
_CONV_OPTS = ("stride", "padding", "dilation", "groups")
_CONV_PARAMS = dict(
    stride="pos_pair", padding="conv_padding", dilation="pos_pair", groups="pos_int"
)


def _conv_fixed(n: int, big: bool) -> G:
    c, h, w = (8, 33, 29) if big else (4, 9, 8)
    return G(
        n=n,
        c=c,
        k=6,
        cg=c // 2,
        kh=3,
        kw=3,
        h=h,
        w=w,
        ho=_out(h, 3, 2, 2, 1),
        wo=_out(w, 3, 1, 2, 2),
        opts=_CONV_KW,
    )


def draw_conv(g: Draw) -> G:
    """A random valid convolution geometry (also used for the fuzzer's Conv2d layers)."""
    groups = g.choice([1, 1, 1, 2, 3])
    cg, kg = g.dim(1, 3), g.dim(1, 3)
    kh, kw = g.dim(1, 4), g.dim(1, 4)
    sh, sw = g.dim(1, 3), g.dim(1, 3)
    dh, dw = g.dim(1, 3), g.dim(1, 3)
    pad_kind = g.r.random()
    if pad_kind < 0.1:
        padding, pt, pb, pl, pr = "valid", 0, 0, 0, 0
    elif pad_kind < 0.2:
        sh = sw = 1
        th, tw = dh * (kh - 1), dw * (kw - 1)
        padding, pt, pb, pl, pr = "same", th // 2, th - th // 2, tw // 2, tw - tw // 2
    else:
        ph, pw = g.dim(0, 3), g.dim(0, 3)
        padding = ph if (ph == pw and g.coin()) else (ph, pw)
        pt = pb = ph
        pl = pr = pw
    n = g.dim(0, 3)
    h = max(dh * (kh - 1) + 1 - pt - pb, 0) + g.dim(0, 8)
    w = max(dw * (kw - 1) + 1 - pl - pr, 0) + g.dim(0, 8)
    stride = sh if (sh == sw and g.coin()) else (sh, sw)
    dilation = dh if (dh == dw and g.coin()) else (dh, dw)
    return G(
        n=n,
        c=cg * groups,
        k=kg * groups,
        cg=cg,
        kh=kh,
        kw=kw,
        h=h,
        w=w,
        ho=_out(h, kh, sh, pt + pb, dh),
        wo=_out(w, kw, sw, pl + pr, dw),
        opts=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


CONV = (_conv_fixed, draw_conv)


def _conv2d(a: Canon, c: G) -> dict:
    return dict(
        x=a.x(c.n, c.c, c.h, c.w), weight=a.x(c.k, c.cg, c.kh, c.kw), bias=a.x(c.k), **c.opts
    )


def _conv2d_bi(a: Canon, c: G) -> dict:
    return dict(
        grad_output=a.x(c.n, c.k, c.ho, c.wo),
        weight=a.x(c.k, c.cg, c.kh, c.kw),
        input_shape=(c.n, c.c, c.h, c.w),
        **c.opts,
    )


def _conv2d_bw(a: Canon, c: G) -> dict:
    return dict(
        grad_output=a.x(c.n, c.k, c.ho, c.wo),
        x=a.x(c.n, c.c, c.h, c.w),
        weight_shape=(c.k, c.cg, c.kh, c.kw),
        **c.opts,
    )


def _conv2d_bx(a: Canon, c: G) -> dict:
    return dict(
        grad_output=a.x(c.n, c.k, c.ho, c.wo),
        x=a.x(c.n, c.c, c.h, c.w),
        weight=a.x(c.k, c.cg, c.kh, c.kw),
        **c.opts,
        output_mask=(True, True, True),
    )


def _maybe_no_bias(g: Draw, args: dict, geo: Any) -> None:
    if not g.coin(0.7):
        args["bias"] = None


def _random_mask(g: Draw, args: dict, geo: Any) -> None:
    args["output_mask"] = (g.coin(), g.coin(), g.coin())


def _conv_ref(a: dict) -> Any:
    return R.conv2d_ref(a["x"], a["weight"], a.get("bias"), **pick(a, *_CONV_OPTS))


def _conv_backward_ref(a: dict) -> tuple:
    go, opts = a["grad_output"], pick(a, *_CONV_OPTS)
    grads = (
        R.conv2d_backward_input_ref(go, a["weight"], a["x"].shape, **opts),
        R.conv2d_backward_weight_ref(go, a["x"], a["weight"].shape, **opts),
        R.conv2d_backward_bias_ref(go),
    )
    mask = a.get("output_mask", (True, True, True))
    return tuple(r if m else None for r, m in zip(grads, mask, strict=True))


def _conv_input_grad(a: dict, g: Any, out: tuple) -> dict:
    return dict(grad_output=g, weight=a["weight"], input_shape=a["x"].shape, **pick(a, *_CONV_OPTS))


def _conv_weight_grad(a: dict, g: Any, out: tuple) -> dict:
    return dict(grad_output=g, x=a["x"], weight_shape=a["weight"].shape, **pick(a, *_CONV_OPTS))


def _conv_grads(a: dict, g: Any, out: tuple) -> dict:
    return dict(grad_output=g, x=a["x"], weight=a["weight"], **pick(a, *_CONV_OPTS))


op(
    "conv2d",
    CONV,
    _conv2d,
    _maybe_no_bias,
    arrays=("x", "weight", "bias"),
    unbatched=dict(x=4),
    fixed_ndim=("x", "weight"),
    optional=("bias",),
    params=_CONV_PARAMS,
    nan_in="x",
    mismatch=(("x", 1, "x|input|weight"), ("weight", 1, "x|input|weight"), ("bias", 0, "bias")),
    reference=_conv_ref,
    backward=(
        Backward("conv2d_backward_input", ("x",), _conv_input_grad),
        Backward("conv2d_backward_weight", ("weight",), _conv_weight_grad),
        Backward("conv2d_backward_bias", ("bias",), lambda a, g, out: dict(grad_output=g)),
        Backward("conv2d_backward", ("x", "weight", "bias"), _conv_grads),
    ),
)
op(
    "conv2d_backward_input",
    CONV,
    _conv2d_bi,
    arrays=("grad_output", "weight"),
    unbatched=dict(grad_output=4, input_shape=4),
    fixed_ndim=("grad_output", "weight"),
    shape_args=("input_shape",),
    spatial_shape=True,
    params=_CONV_PARAMS,
    nan_in="grad_output",
    mismatch=(
        ("grad_output", 1, "grad_output"),
        ("grad_output", 2, "grad_output"),
        ("weight", 1, "input_shape|weight"),
    ),
    reference=lambda a: R.conv2d_backward_input_ref(
        a["grad_output"], a["weight"], a["input_shape"], **pick(a, *_CONV_OPTS)
    ),
)
op(
    "conv2d_backward_weight",
    CONV,
    _conv2d_bw,
    arrays=("grad_output", "x"),
    unbatched=dict(grad_output=4, x=4),
    fixed_ndim=("grad_output", "x"),
    shape_args=("weight_shape",),
    spatial_shape=True,
    params=_CONV_PARAMS,
    batched=(False,),
    nan_in="grad_output",
    mismatch=(
        ("grad_output", 1, "grad_output"),
        ("grad_output", 3, "grad_output"),
        ("x", 1, "x|input|weight_shape"),
    ),
    reference=lambda a: R.conv2d_backward_weight_ref(
        a["grad_output"], a["x"], a["weight_shape"], **pick(a, *_CONV_OPTS)
    ),
)
op(
    "conv2d_backward",
    CONV,
    _conv2d_bx,
    _random_mask,
    arrays=("grad_output", "x", "weight"),
    unbatched=dict(grad_output=4, x=4),
    fixed_ndim=("grad_output", "x", "weight"),
    params=dict(_CONV_PARAMS, output_mask="mask3"),
    batched=(True, False, False),
    nan_in="grad_output",
    reference=_conv_backward_ref,
)
op(
    "conv2d_backward_bias",
    CONV,
    lambda a, c: dict(grad_output=a.x(c.n, c.k, c.ho, c.wo)),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4),
    fixed_ndim=("grad_output",),
    batched=(False,),
    nan_in="grad_output",
    reference=lambda a: R.conv2d_backward_bias_ref(a["grad_output"]),
)

# --- transposed convolution ----------------------------------------------------------------

_CT_OPTS = ("stride", "padding", "output_padding", "groups", "dilation")
_CT_PARAMS = dict(
    stride="pos_pair",
    padding="nonneg_pair",
    output_padding="nonneg_pair",
    groups="pos_int",
    dilation="pos_pair",
)


def _ct_out(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _conv_transpose_fixed(n: int, big: bool) -> G:
    c, h, w = (8, 17, 15) if big else (4, 5, 4)
    opts = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
    return G(
        n=n,
        c=c,
        kg=3,
        k=6,
        kh=3,
        kw=2,
        h=h,
        w=w,
        ho=_ct_out(h, 3, 2, 1, 1, 1),
        wo=_ct_out(w, 2, 1, 0, 0, 2),
        opts=opts,
    )


def draw_conv_transpose(g: Draw) -> G:
    """A random valid transposed-convolution geometry (also the fuzzer's ConvTranspose2d)."""
    groups = g.choice([1, 1, 2, 3])
    cg, kg = g.dim(1, 3), g.dim(1, 3)
    kh, kw = g.dim(1, 4), g.dim(1, 4)
    sh, sw = g.dim(1, 3), g.dim(1, 3)
    dh, dw = g.dim(1, 3), g.dim(1, 3)
    ph, pw = g.dim(0, 3), g.dim(0, 3)
    oph = int(g.r.integers(max(sh, dh)))
    opw = int(g.r.integers(max(sw, dw)))
    h, w = g.dim(1, 6), g.dim(1, 6)
    while _ct_out(h, kh, sh, ph, oph, dh) < 1:
        h += 1
    while _ct_out(w, kw, sw, pw, opw, dw) < 1:
        w += 1
    opts = dict(
        stride=sh if (sh == sw and g.coin()) else (sh, sw),
        padding=ph if (ph == pw and g.coin()) else (ph, pw),
        output_padding=(oph, opw),
        groups=groups,
        dilation=dh if (dh == dw and g.coin()) else (dh, dw),
    )
    return G(
        n=g.dim(0, 3),
        c=cg * groups,
        kg=kg,
        k=kg * groups,
        kh=kh,
        kw=kw,
        h=h,
        w=w,
        ho=_ct_out(h, kh, sh, ph, oph, dh),
        wo=_ct_out(w, kw, sw, pw, opw, dw),
        opts=opts,
    )


CONV_T = (_conv_transpose_fixed, draw_conv_transpose)


def _conv_transpose_ref(a: dict) -> Any:
    return R.conv_transpose2d_ref(a["x"], a["weight"], a.get("bias"), **pick(a, *_CT_OPTS))


def _conv_transpose_backward_ref(a: dict) -> tuple:
    grads = R.conv_transpose2d_backward_ref(
        a["grad_output"], a["x"], a["weight"], **pick(a, *_CT_OPTS)
    )
    mask = a.get("output_mask", (True, True, True))
    return tuple(r if m else None for r, m in zip(grads, mask, strict=True))


op(
    "conv_transpose2d",
    CONV_T,
    lambda a, c: dict(
        x=a.x(c.n, c.c, c.h, c.w), weight=a.x(c.c, c.kg, c.kh, c.kw), bias=a.x(c.k), **c.opts
    ),
    _maybe_no_bias,
    arrays=("x", "weight", "bias"),
    unbatched=dict(x=4),
    fixed_ndim=("x", "weight"),
    optional=("bias",),
    params=_CT_PARAMS,
    nan_in="x",
    mismatch=(("x", 1, "x|input|weight"), ("weight", 0, "x|input|weight"), ("bias", 0, "bias")),
    reference=_conv_transpose_ref,
    backward=(
        Backward(
            "conv_transpose2d_backward",
            ("x", "weight", "bias"),
            lambda a, g, out: dict(
                grad_output=g, x=a["x"], weight=a["weight"], **pick(a, *_CT_OPTS)
            ),
        ),
    ),
)
op(
    "conv_transpose2d_backward",
    CONV_T,
    lambda a, c: dict(
        grad_output=a.x(c.n, c.k, c.ho, c.wo),
        x=a.x(c.n, c.c, c.h, c.w),
        weight=a.x(c.c, c.kg, c.kh, c.kw),
        **c.opts,
        output_mask=(True, True, True),
    ),
    _random_mask,
    arrays=("grad_output", "x", "weight"),
    unbatched=dict(grad_output=4, x=4),
    fixed_ndim=("grad_output", "x", "weight"),
    params=dict(_CT_PARAMS, output_mask="mask3"),
    batched=(True, False, False),
    nan_in="grad_output",
    mismatch=(("grad_output", 1, "grad_output"), ("grad_output", 2, "grad_output")),
    reference=_conv_transpose_backward_ref,
)

# --- im2col / col2im -----------------------------------------------------------------------

_UNFOLD_KW = dict(kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=1)
_UNFOLD_OPTS = ("kernel_size", "stride", "padding", "dilation")
_UNFOLD_PARAMS = dict(
    kernel_size="pos_pair", stride="pos_pair", padding="nonneg_pair", dilation="pos_pair"
)


def _unfold_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    return G(
        n=n,
        c=c,
        kh=2,
        kw=3,
        h=h,
        w=w,
        ho=_out(h, 2, 1, 2, 1),
        wo=_out(w, 3, 2, 2, 1),
        opts=_UNFOLD_KW,
    )


def _unfold_draw(g: Draw) -> G:
    kh, kw = g.dim(1, 4), g.dim(1, 4)
    sh, sw = g.dim(1, 3), g.dim(1, 3)
    dh, dw = g.dim(1, 3), g.dim(1, 3)
    ph, pw = g.dim(0, 3), g.dim(0, 3)
    h = max(dh * (kh - 1) + 1 - 2 * ph, 0) + g.dim(0, 8)
    w = max(dw * (kw - 1) + 1 - 2 * pw, 0) + g.dim(0, 8)
    return G(
        n=g.dim(0, 3),
        c=g.dim(0, 4),
        kh=kh,
        kw=kw,
        h=h,
        w=w,
        ho=_out(h, kh, sh, 2 * ph, dh),
        wo=_out(w, kw, sw, 2 * pw, dw),
        opts=dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw)),
    )


UNFOLD = (_unfold_fixed, _unfold_draw)


op(
    "im2col",
    UNFOLD,
    lambda a, u: dict(x=a.x(u.n, u.c, u.h, u.w), **u.opts),
    arrays=("x",),
    unbatched=dict(x=4),
    params=_UNFOLD_PARAMS,
    nan_in="x",
    reference=lambda a: R.im2col_ref(a["x"], **pick(a, *_UNFOLD_OPTS)),
    backward=(
        Backward(
            "col2im",
            ("x",),
            lambda a, g, out: dict(cols=g, output_size=a["x"].shape[-2:], **pick(a, *_UNFOLD_OPTS)),
        ),
    ),
)
op(
    "col2im",
    UNFOLD,
    lambda a, u: dict(
        cols=a.x(u.n, u.c * u.kh * u.kw, u.ho * u.wo), output_size=(u.h, u.w), **u.opts
    ),
    arrays=("cols",),
    unbatched=dict(cols=3),
    params=dict(_UNFOLD_PARAMS, output_size="nonneg_pair"),
    nan_in="cols",
    reference=lambda a: R.col2im_ref(a["cols"], a["output_size"], **pick(a, *_UNFOLD_OPTS)),
    backward=(
        Backward("im2col", ("cols",), lambda a, g, out: dict(x=g, **pick(a, *_UNFOLD_OPTS))),
    ),
)

# --- linear --------------------------------------------------------------------------------


def draw_lead(g: Draw) -> tuple[int, ...]:
    """0 to 2 leading dimensions."""
    return tuple(g.dim(0, 5) for _ in range(int(g.r.integers(0, 3))))


def _lin_fixed(n: int, big: bool) -> G:
    r, i, o = (70, 37, 45) if big else (2, 5, 4)  # (rows per batch item, in, out)
    return G(lead=(n, r), i=i, o=o)


LINEAR = (_lin_fixed, lambda g: G(i=g.dim(0, 9), o=g.dim(0, 9), lead=draw_lead(g)))

op(
    "linear",
    LINEAR,
    lambda a, L: dict(x=a.x(*L.lead, L.i), weight=a.x(L.o, L.i), bias=a.x(L.o)),
    _maybe_no_bias,
    arrays=("x", "weight", "bias"),
    fixed_ndim=("weight",),
    optional=("bias",),
    nan_in="x",
    mismatch=(("x", -1, "x"), ("weight", -1, "x|weight"), ("bias", 0, "bias")),
    reference=lambda a: R.linear_ref(a["x"], a["weight"], a.get("bias")),
    backward=(
        Backward(
            "linear_backward_input",
            ("x",),
            lambda a, g, out: dict(grad_output=g, weight=a["weight"]),
        ),
        Backward(
            "linear_backward_weight", ("weight",), lambda a, g, out: dict(grad_output=g, x=a["x"])
        ),
        Backward("linear_backward_bias", ("bias",), lambda a, g, out: dict(grad_output=g)),
    ),
)
op(
    "linear_backward_input",
    LINEAR,
    lambda a, L: dict(grad_output=a.x(*L.lead, L.o), weight=a.x(L.o, L.i)),
    arrays=("grad_output", "weight"),
    fixed_ndim=("weight",),
    nan_in="grad_output",
    mismatch=(("grad_output", -1, "grad_output"), ("weight", 0, "grad_output|weight")),
    reference=lambda a: R.linear_backward_input_ref(a["grad_output"], a["weight"]),
)
op(
    "linear_backward_weight",
    LINEAR,
    lambda a, L: dict(grad_output=a.x(*L.lead, L.o), x=a.x(*L.lead, L.i)),
    arrays=("grad_output", "x"),
    batched=(False,),
    nan_in="grad_output",
    mismatch=(("grad_output", 0, "grad_output|x"), ("x", 1, "grad_output|x")),
    reference=lambda a: R.linear_backward_weight_ref(a["grad_output"], a["x"]),
)
op(
    "linear_backward_bias",
    LINEAR,
    lambda a, L: dict(grad_output=a.x(*L.lead, L.o)),
    arrays=("grad_output",),
    batched=(False,),
    nan_in="grad_output",
    reference=lambda a: R.linear_backward_bias_ref(a["grad_output"]),
)

# --- activations ---------------------------------------------------------------------------


def draw_shape(g: Draw) -> tuple[int, ...]:
    """Any shape of 0 to 4 dimensions."""
    return tuple(g.dim(0, 6) for _ in range(int(g.r.integers(0, 5))))


def _act_fixed(n: int, big: bool) -> tuple[int, ...]:
    return (n, 70, 300) if big else (n, 3, 4)


ANY_SHAPE = (_act_fixed, draw_shape)


def _slope(g: Draw, args: dict) -> None:
    if g.coin():
        args["negative_slope"] = float(g.r.standard_normal())
    else:
        del args["negative_slope"]


def _out_unary(g: Draw, args: dict, shape: Any) -> None:
    if "negative_slope" in args:
        _slope(g, args)
    if g.coin(0.2):  # in place or into a new array
        args["out"] = args["x"] if g.coin() else np.empty_like(args["x"])


def _out_binary(g: Draw, args: dict, shape: Any) -> None:
    if "negative_slope" in args:
        _slope(g, args)
    if g.coin(0.2):  # into either input or a new array
        saved = args["output" if "output" in args else "x"]
        args["out"] = g.choice([args["grad_output"], saved, np.empty_like(saved)])


def _act_ref(name: str, *keys: str) -> Callable[[dict], Any]:
    return lambda a: _ref("test_activation", name)(a["x"], *[a[k] for k in keys if k in a])


_ACT_BACKWARD = {  # name -> (argument saved from the forward, kept positive)
    "relu": ("output", True),
    "leaky_relu": ("x", False),
    "sigmoid": ("output", False),
    "tanh": ("output", False),
}

for _name, (_saved, _pos) in _ACT_BACKWARD.items():
    _slope_kw = {"negative_slope": 0.1} if _name == "leaky_relu" else {}
    op(
        _name,
        ANY_SHAPE,
        lambda a, s, kw=_slope_kw: dict(x=a.x(*s), **kw),
        _out_unary,
        arrays=("x",),
        params=dict(negative_slope="real") if _slope_kw else {},
        nan_in="x",
        reference=_act_ref("ref_" + _name, "negative_slope"),
        backward=(
            Backward(
                _name + "_backward",
                ("x",),
                lambda a, g, out, saved=_saved: dict(
                    grad_output=g,
                    **{saved: out[0] if saved == "output" else a["x"]},
                    **pick(a, "negative_slope"),
                ),
            ),
        ),
    )
    op(
        _name + "_backward",
        ANY_SHAPE,
        lambda a, s, saved=_saved, pos=_pos, kw=_slope_kw: {
            "grad_output": a.x(*s),
            saved: a.x(*s, positive=pos),
            **kw,
        },
        _out_binary,
        arrays=("grad_output", _saved),
        params=dict(negative_slope="real") if _slope_kw else {},
        nan_in="grad_output",
        mismatch=same_shape("grad_output", _saved),
        reference=lambda a, name=_name, saved=_saved: getattr(R, name + "_backward_ref")(
            a["grad_output"], a[saved], *[a[k] for k in ("negative_slope",) if k in a]
        ),
    )


def _dim(g: Draw, args: dict, shape: tuple[int, ...]) -> None:
    nd = max(len(shape), 1)
    args["dim"] = int(g.r.integers(-nd, nd))
    if g.coin(0.2):
        args["out"] = args["x" if "x" in args else "grad_output"]  # in place


def _softmax_ref(name: str, *arrays: str) -> Callable[[dict], Any]:
    def ref(a: dict) -> Any:
        xs = [np.asarray(a[k]) for k in arrays]
        if xs[0].ndim == 0:  # a scalar: one slice of length 1
            return _ref("test_activation", name)(*[x[None] for x in xs], 0)[0]
        return _ref("test_activation", name)(*xs, a.get("dim", 1))

    return ref


for _name in ("softmax", "log_softmax"):
    op(
        _name,
        ANY_SHAPE,
        lambda a, s: dict(x=a.x(*s), dim=1),
        _dim,
        arrays=("x",),
        params=dict(dim="int"),
        nan_in="x",
        reference=_softmax_ref("ref_" + _name, "x"),
        backward=(
            Backward(
                _name + "_backward",
                ("x",),
                lambda a, g, out: dict(grad_output=g, output=out[0], dim=a["dim"]),
            ),
        ),
    )
    op(
        _name + "_backward",
        ANY_SHAPE,
        lambda a, s: dict(grad_output=a.x(*s), output=a.x(*s, unit=True), dim=1),
        _dim,
        arrays=("grad_output", "output"),
        params=dict(dim="int"),
        nan_in="grad_output",
        mismatch=same_shape("grad_output", "output"),
        reference=_softmax_ref(f"ref_{_name}_backward", "grad_output", "output"),
    )


# gelu, silu, elu, hardswish, hardsigmoid, softplus, mish, relu6: backward from the input x
_ACT_INPUT = {  # name -> (canonical parameters, parameter kinds)
    "gelu": ({}, dict(approximate="choice")),
    "silu": ({}, {}),
    "elu": ({"alpha": 0.7}, dict(alpha="real")),
    "hardswish": ({}, {}),
    "hardsigmoid": ({}, {}),
    "softplus": ({"beta": 1.5}, dict(beta="nonzero_real", threshold="real")),
    "mish": ({}, {}),
    "relu6": ({}, {}),
}


def _act_params(g: Draw, args: dict) -> None:
    """Random optional parameters of the activation ``args["_name"]`` (removed)."""
    name = args.pop("_name")
    if name == "gelu" and g.coin(0.7):
        args["approximate"] = g.choice(["none", "tanh"])
    if name == "elu" and g.coin(0.7):
        args["alpha"] = float(g.choice([1.0, 0.3, 2.5, -0.5]))
    if name == "softplus":
        if g.coin(0.7):
            args["beta"] = float(g.choice([1.0, 0.5, 2.0, -1.5]))
        if g.coin(0.5):
            args["threshold"] = float(g.choice([20.0, 2.0, 0.5, -1.0, np.inf]))


def _act_ref_args(name: str, a: dict) -> tuple:
    """(reference name, parameters) of a call of activation ``name``."""
    if name == "gelu":
        return ("gelu_tanh" if a.get("approximate") == "tanh" else "gelu"), ()
    if name == "elu":
        return name, (a.get("alpha", 1.0),)
    if name == "softplus":
        return name, (a.get("beta", 1.0), a.get("threshold", 20.0))
    return name, ()


def _act_vary(name: str, backward: bool) -> Callable[[Draw, dict, Any], None]:
    def vary(g: Draw, args: dict, shape: Any) -> None:
        args["_name"] = name
        _act_params(g, args)
        (_out_binary if backward else _out_unary)(g, args, shape)

    return vary


def _act_forward_ref(name: str) -> Callable[[dict], Any]:
    def ref(a: dict) -> Any:
        fn, params = _act_ref_args(name, a)
        return R.activation_ref(fn, a["x"], *params)

    return ref


def _act_backward_ref(name: str) -> Callable[[dict], Any]:
    def ref(a: dict) -> Any:
        fn, params = _act_ref_args(name, a)
        return R.activation_backward_ref(fn, a["grad_output"], a["x"], *params)

    return ref


_ACT_KEYS = ("approximate", "alpha", "beta", "threshold")

for _name, (_kw, _kinds) in _ACT_INPUT.items():
    op(
        _name,
        ANY_SHAPE,
        lambda a, s, kw=_kw: dict(x=a.x(*s), **kw),
        _act_vary(_name, False),
        arrays=("x",),
        params=_kinds,
        nan_in="x",
        reference=_act_forward_ref(_name),
        backward=(
            Backward(
                _name + "_backward",
                ("x",),
                lambda a, g, out: dict(grad_output=g, x=a["x"], **pick(a, *_ACT_KEYS)),
            ),
        ),
    )
    op(
        _name + "_backward",
        ANY_SHAPE,
        lambda a, s, kw=_kw: dict(grad_output=a.x(*s), x=a.x(*s), **kw),
        _act_vary(_name, True),
        arrays=("grad_output", "x"),
        params=_kinds,
        nan_in="grad_output",
        mismatch=same_shape("grad_output", "x"),
        reference=_act_backward_ref(_name),
    )


# dropout2d: whole channels of (N, C, H, W) or (N, C, L)


def _drop_fixed(n: int, big: bool) -> tuple[int, ...]:
    return (n, *_sizes(big))


def _drop_draw(g: Draw) -> tuple[int, ...]:
    return tuple(g.dim(0, 4) for _ in range(int(g.choice([3, 4, 4]))))


def _drop_vary(g: Draw, args: dict, shape: Any) -> None:
    args["p"] = float(g.choice([0.0, 0.3, 0.5, 1.0]))
    if g.coin(0.3):
        args["training"] = g.coin()
    if g.coin(0.3):
        args["return_mask"] = True
    if g.coin(0.2):
        args["out"] = args["x"] if g.coin() else np.empty_like(args["x"])


def _drop_backward_vary(g: Draw, args: dict, shape: Any) -> None:
    if g.coin(0.2):  # into grad_output or a new array
        args["out"] = g.choice([args["grad_output"], np.empty_like(args["grad_output"])])


def _dropout2d_mask(a: dict) -> Any:
    return F.dropout2d(**{**pick(a, "x", "p", "training", "rng"), "return_mask": True})[1]


op(
    "dropout2d",
    (_drop_fixed, _drop_draw),
    lambda a, s: dict(x=a.x(*s), p=0.5, rng=0),
    _drop_vary,
    arrays=("x",),
    params=dict(p="probability", training="bool", rng="rng", return_mask="bool"),
    nan_in="x",
    reference=lambda a: R.dropout2d_ref(**pick(a, "x", "p", "training", "rng", "return_mask")),
    backward=(
        Backward(
            "dropout2d_backward",
            ("x",),
            lambda a, g, out: dict(grad_output=g, mask=_dropout2d_mask(a)),
        ),
    ),
)
op(
    "dropout2d_backward",
    (_drop_fixed, _drop_draw),
    lambda a, s: dict(grad_output=a.x(*s), mask=np.where(a.x(*s[:2]) > 0, 2.0, 0.0).astype(a.dt)),
    _drop_backward_vary,
    arrays=("grad_output", "mask"),
    nan_in="grad_output",
    mismatch=(("mask", 0, "mask|grad_output"), ("mask", 1, "mask|grad_output")),
    reference=lambda a: R.dropout2d_backward_ref(a["grad_output"], a["mask"]),
)

# --- losses --------------------------------------------------------------------------------

_POINTWISE = {  # name -> (prediction argument, value kind of prediction and target)
    "mse_loss": ("input", None),
    "l2_loss": ("input", None),
    "l1_loss": ("input", None),
    "msle_loss": ("input", "positive"),
    "mape_loss": ("input", None),
    "binary_cross_entropy_with_logits": ("logits", None),
    "binary_cross_entropy": ("probs", "unit"),
}
_LOSS_FIXED = (lambda n, big: (n, 70, 300) if big else (n, 3, 4), draw_shape)


def _reduce(per: np.ndarray, reduction: str) -> Any:
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / per.size


def _pointwise_ref(name: str, pred: str) -> Callable[[dict], Any]:
    default = "sum" if name == "l2_loss" else "mean"
    return lambda a: _reduce(
        _ref("test_loss", "ref_pointwise")(name, a[pred], a["target"]), a.get("reduction", default)
    )


def _loss_vary(g: Draw, args: dict, geo: Any) -> None:
    args["reduction"] = g.choice(["mean", "sum", "none"])
    if "return_grad" in args:
        _return_grad(g, args)
    for key in ("weight", "pos_weight"):  # the binary cross entropies' rescaling weights
        if key in args:
            if g.coin(0.4):
                del args[key]
            else:  # any shape broadcastable to the prediction's: a suffix, with 1s, or ()
                shape = tuple(1 if g.coin(0.3) else d for d in geo[len(geo) - g.dim(0, len(geo)) :])
                args[key] = np.asarray(g.r.uniform(0.1, 3.0, shape), g.dt)


_BCE_WEIGHTS = {  # the binary cross entropies' weights (canonical shapes, broadcast)
    "binary_cross_entropy": ("weight",),
    "binary_cross_entropy_with_logits": ("weight", "pos_weight"),
}


def _bce_weights(a: Canon, s: tuple[int, ...], name: str) -> dict:
    shapes = {"weight": s[-1:], "pos_weight": (*s[-2:-1], 1)}
    return {k: a.x(*shapes[k], positive=True) for k in _BCE_WEIGHTS.get(name, ())}


def _bce_ref(name: str) -> Callable[[dict], Any]:
    ref = getattr(R, name + "_ref")
    pred = _POINTWISE[name][0]
    return lambda a: ref(a[pred], a["target"], **pick(a, "weight", "pos_weight", "reduction"))


def _loss_grads(name: str, pred: str, *extra: str) -> tuple[Backward, ...]:
    """The loss's backward function, and its ``return_grad=True`` gradient."""
    return (
        Backward(
            name + "_backward",
            (pred,),
            lambda a, g, out: pick(a, pred, "target", "reduction", *extra),
        ),
        Backward(name, (pred,), lambda a, g, out: dict(a, return_grad=True), result=1),
    )


_NAN_GRADIENT_IS_ZERO = {"l1_loss", "mape_loss"}  # through sign(): zero at NaN, as in PyTorch
_REJECTS = {
    "binary_cross_entropy": ("nan", "inf", "-inf"),  # probabilities are in [0, 1]
    "msle_loss": ("-inf",),
}  # log1p: inputs <= -1 are outside the domain

for _name, (_pred, _kind) in _POINTWISE.items():
    _weights = _BCE_WEIGHTS.get(_name, ())
    for _bw in (False, True):
        _nan_out = (("zero",) if _bw else ("nan", "zero")) if _name in _NAN_GRADIENT_IS_ZERO else ()
        op(
            _name + ("_backward" if _bw else ""),
            _LOSS_FIXED,
            lambda a, s, pred=_pred, kind=_kind, bw=_bw, name=_name: {
                pred: a.x(*s, positive=kind == "positive", unit=kind == "unit"),
                "target": a.x(
                    *s, positive=kind == "positive", unit=kind == "unit" or pred == "logits"
                ),
                "reduction": "sum",
                **_bce_weights(a, s, name),
                **({} if bw else {"return_grad": True}),
            },
            _loss_vary,
            arrays=(_pred, "target"),
            params=dict(reduction="choice", **({} if _bw else {"return_grad": "bool"})),
            batched=(True,) if _bw else (False, True),
            nan_in=_pred,
            mismatch=same_shape(_pred, "target") + tuple((w, 0, w) for w in _weights),
            nan_out=_nan_out,
            rejects=_REJECTS.get(_name, ()),
            reference=None
            if _bw
            else _bce_ref(_name)
            if _weights
            else _pointwise_ref(_name, _pred),
            backward=() if _bw else _loss_grads(_name, _pred, *_weights),
        )


def _ce_fixed(n: int, big: bool) -> G:
    c, s = (40, 200) if big else (5, 3)
    return G(c=c, lead=(n, s))


def _ce_draw(g: Draw) -> G:
    c = g.dim(1, 6)
    if g.coin(0.2):
        return G(c=c, lead=())  # unbatched
    spatial = tuple(g.dim(0, 3) for _ in range(int(g.r.integers(0, 3))))
    return G(c=c, lead=(g.dim(0, 4), *spatial))


def _ce(a: Canon, geo: G, backward: bool) -> dict:
    lead, c = geo.lead, geo.c
    logits = a.x(lead[0], c, *lead[1:]) if lead else a.x(c)
    args = dict(
        logits=logits,
        target=a.indices(lead, c),
        weight=a.x(c, positive=True),
        reduction="sum",
        label_smoothing=0.1,
    )
    if not backward:
        args["return_grad"] = True
    return args


def _ce_vary(g: Draw, args: dict, geo: G) -> None:
    logits = args["logits"]
    if g.coin(0.3):  # class probabilities
        t = g.r.random(logits.shape)
        axis = 0 if logits.ndim == 1 else 1
        args["target"] = (t / np.maximum(t.sum(axis=axis, keepdims=True), 1e-9)).astype(g.dt)
    else:
        args["target"] = args["target"].astype(g.choice([np.int64, np.int32, np.uint8]))
    args["reduction"] = g.choice(["mean", "sum", "none"])
    if g.coin(0.3):
        args["label_smoothing"] = float(g.r.random())
    else:
        del args["label_smoothing"]
    if g.coin(0.2):
        args["ignore_index"] = int(g.r.integers(-2, geo.c + 1))
    t = args["target"]
    if t.dtype.kind == "i" and t.size and g.coin(0.2):  # an ignored position
        t.reshape(-1)[0] = args.get("ignore_index", -100)
    if g.coin(0.3):  # per-class weights (the canonical call has them)
        del args["weight"]
    else:
        args["weight"] = g.r.uniform(0.1, 2.0, geo.c).astype(g.dt)
    if "return_grad" in args:
        _return_grad(g, args)


def _ce_ref(a: dict) -> Any:
    return _ref("test_loss", "ref_cross_entropy")(
        a["logits"],
        a["target"],
        **pick(a, "reduction", "label_smoothing", "ignore_index", "weight"),
    )


for _bw in (False, True):
    op(
        "cross_entropy" + ("_backward" if _bw else ""),
        (_ce_fixed, _ce_draw),
        lambda a, geo, bw=_bw: _ce(a, geo, bw),
        _ce_vary,
        arrays=("logits", "weight"),
        fixed_ndim=("weight",),
        optional=("weight",),
        params=dict(
            reduction="choice",
            label_smoothing="real",
            ignore_index="int",
            **({} if _bw else {"return_grad": "bool"}),
        ),
        batched=(True,) if _bw else (False, True),
        nan_in="logits",
        mismatch=(("logits", 0 if _bw else 2, "target|logits"), ("weight", 0, "weight")),
        reference=None if _bw else _ce_ref,
        backward=()
        if _bw
        else _loss_grads("cross_entropy", "logits", "label_smoothing", "ignore_index", "weight"),
    )

# --- pooling -------------------------------------------------------------------------------

_MAX_KW = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
_AVG_KW = dict(
    kernel_size=3,
    stride=2,
    padding=1,
    ceil_mode=True,
    count_include_pad=False,
    divisor_override=None,
)
_LP_KW = dict(norm_type=2.0, kernel_size=3, stride=2, ceil_mode=False)
_POOL_PARAMS = dict(
    kernel_size="pos_pair", stride="pool_stride", padding="nonneg_pair", ceil_mode="bool"
)
_AVG_PARAMS = dict(_POOL_PARAMS, count_include_pad="bool", divisor_override="divisor")
_LP_PARAMS = dict(norm_type="norm", kernel_size="pos_pair", stride="pool_stride", ceil_mode="bool")


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    return max(pool_output_size(size, k, s, p, d, ceil), 0)


def _pool_fixed(kw: dict) -> Callable[[int, bool], G]:
    def fixed(n: int, big: bool) -> G:
        c, h, w = _sizes(big)
        k, p, d = _pair(kw["kernel_size"]), kw.get("padding", 0), kw.get("dilation", 1)
        s = _pair(kw.get("stride") or kw["kernel_size"])
        ceil = kw["ceil_mode"]
        return G(
            n=n,
            c=c,
            h=h,
            w=w,
            ho=_pool_out(h, k[0], s[0], p, d, ceil),
            wo=_pool_out(w, k[1], s[1], p, d, ceil),
            opts=kw,
        )

    return fixed


def _taps(size: int, k: int, s: int, p: int, d: int, out: int) -> bool:
    """Every window along an axis reads at least one input element."""
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(out))


def draw_pool(g: Draw, dilation: bool = True, padding: bool = True) -> G:
    """A random valid pooling geometry (also used for the fuzzer's pooling layers)."""
    square = g.coin()
    kh = g.dim(1, 4)
    kw = kh if square else g.dim(1, 4)
    sh, sw = g.dim(1, 4), g.dim(1, 4)
    ph, pw = (g.dim(0, kh // 2), g.dim(0, kw // 2)) if padding else (0, 0)
    dh, dw = (g.dim(1, 3), g.dim(1, 3)) if dilation else (1, 1)
    ceil = g.coin()
    h = max(dh * (kh - 1) + 1 - 2 * ph, 1) + g.dim(0, 8)
    w = max(dw * (kw - 1) + 1 - 2 * pw, 1) + g.dim(0, 8)
    opts: dict = dict(kernel_size=kh if square else (kh, kw))
    if g.coin(0.7):
        opts["stride"] = (sh, sw)
    else:
        sh, sw = kh, kw
    if padding:
        opts["padding"] = (ph, pw)
    if dilation:
        opts["dilation"] = (dh, dw)
    opts["ceil_mode"] = ceil
    while not _taps(h, kh, sh, ph, dh, _pool_out(h, kh, sh, ph, dh, ceil)):
        h += 1
    while not _taps(w, kw, sw, pw, dw, _pool_out(w, kw, sw, pw, dw, ceil)):
        w += 1
    return G(
        n=g.dim(0, 3),
        c=g.dim(0, 4),
        h=h,
        w=w,
        ho=_pool_out(h, kh, sh, ph, dh, ceil),
        wo=_pool_out(w, kw, sw, pw, dw, ceil),
        opts=opts,
    )


def _avg_draw(g: Draw) -> G:
    p = draw_pool(g, dilation=False)
    p.opts["count_include_pad"] = g.coin()
    if g.coin(0.2):
        p.opts["divisor_override"] = int(g.choice([1, 2, 5, -3]))
    return p


def _lp_draw(g: Draw) -> G:
    p = draw_pool(g, dilation=False, padding=False)
    p.opts["norm_type"] = float(g.choice([1, 2, 3, 0.5, 1.5, 4.0]))
    return p


MAX_POOL = (_pool_fixed(_MAX_KW), draw_pool)
AVG_POOL = (_pool_fixed(_AVG_KW), _avg_draw)
LP_POOL = (_pool_fixed(_LP_KW), _lp_draw)


def _x4(a: Canon, p: G, **kw: Any) -> np.ndarray:
    return a.x(p.n, p.c, p.h, p.w, **kw)


def _g4(a: Canon, p: G) -> np.ndarray:
    return a.x(p.n, p.c, p.ho, p.wo)


def _shape4(p: G) -> tuple[int, int, int, int]:
    return (p.n, p.c, p.h, p.w)


def _return_indices(g: Draw, args: dict, geo: Any) -> None:
    args["return_indices"] = g.coin()


def _with_indices(y_idx: tuple, a: dict) -> tuple:
    return y_idx if a.get("return_indices") else y_idx[:1]


def _scatter_ref(a: dict) -> Any:
    return _ref("test_pool", "ref_scatter_add")(
        a["grad_output"], a["indices"], tuple(a["input_shape"])
    )


def _input_shape_grad(name: str, *keep: str, indices: bool = False) -> Backward:
    """``name(grad_output, [indices], input_shape, **keep)`` for a pooling op of ``x``."""
    return Backward(
        name,
        ("x",),
        lambda a, g, out: dict(
            grad_output=g,
            **({"indices": out[1]} if indices else {}),
            input_shape=a["x"].shape,
            **pick(a, *keep),
        ),
    )


def _argmax_backward(name: str, geometry: tuple[Callable, Callable]) -> None:
    """The record of a max pooling's backward: ``grad_output`` scattered to ``indices``."""
    op(
        name,
        geometry,
        lambda a, p: dict(
            grad_output=_g4(a, p),
            indices=a.indices((p.n, p.c, p.ho, p.wo), p.h * p.w),
            input_shape=_shape4(p),
        ),
        arrays=("grad_output",),
        unbatched=dict(grad_output=4, indices=4, input_shape=4),
        fixed_ndim=("grad_output",),
        index_arrays=("indices",),
        shape_args=("input_shape",),
        nan_in="grad_output",
        mismatch=(("grad_output", 2, "grad_output|indices"),),
        reference=_scatter_ref,
    )


op(
    "max_pool2d",
    MAX_POOL,
    lambda a, p: dict(x=_x4(a, p), return_indices=True, **p.opts),
    _return_indices,
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=dict(_POOL_PARAMS, dilation="pos_pair", return_indices="bool"),
    batched=(True, True),
    nan_in="x",
    reference=lambda a: _with_indices(
        _ref("test_pool", "ref_max_pool")(a["x"], **pick(a, *_MAX_KW)), a
    ),
    backward=(_input_shape_grad("max_pool2d_backward", indices=True),),
)
_argmax_backward("max_pool2d_backward", MAX_POOL)
op(
    "avg_pool2d",
    AVG_POOL,
    lambda a, p: dict(x=_x4(a, p), **p.opts),
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=_AVG_PARAMS,
    nan_in="x",
    reference=lambda a: _ref("test_pool", "ref_avg_pool")(a["x"], **pick(a, *_AVG_KW)),
    backward=(_input_shape_grad("avg_pool2d_backward", *_AVG_KW),),
)
op(
    "avg_pool2d_backward",
    AVG_POOL,
    lambda a, p: dict(grad_output=_g4(a, p), input_shape=_shape4(p), **p.opts),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4, input_shape=4),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    spatial_shape=True,
    params=_AVG_PARAMS,
    nan_in="grad_output",
    mismatch=(("grad_output", 3, "grad_output"),),
    reference=lambda a: _ref("test_pool", "ref_avg_pool_backward")(
        a["grad_output"], tuple(a["input_shape"]), **pick(a, *_AVG_KW)
    ),
)


def _signed(g: Draw, args: dict, p: G) -> None:
    if g.coin(0.2):
        args["x"] = _x4(g, p)


op(
    "lp_pool2d",
    LP_POOL,
    lambda a, p: dict(x=_x4(a, p, positive=True), **p.opts),
    _signed,
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=_LP_PARAMS,
    nan_in="x",
    reference=lambda a: _ref("test_pool", "ref_lp_pool")(
        a["x"], a["norm_type"], **pick(a, "kernel_size", "stride", "ceil_mode")
    ),
    backward=(Backward("lp_pool2d_backward", ("x",), lambda a, g, out: dict(grad_output=g, **a)),),
)
op(
    "lp_pool2d_backward",
    LP_POOL,
    lambda a, p: dict(grad_output=_g4(a, p), x=_x4(a, p, positive=True), **p.opts),
    arrays=("grad_output", "x"),
    unbatched=dict(grad_output=4, x=4),
    fixed_ndim=("grad_output", "x"),
    params=_LP_PARAMS,
    nan_in="grad_output",
    mismatch=(("grad_output", 2, "grad_output"), ("x", 1, "grad_output|x")),
)


def _adaptive_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    oh, ow = (7, 5) if big else (4, 3)
    return G(n=n, c=c, h=h, w=w, ho=oh, wo=ow, size=(oh, ow))


def draw_adaptive(g: Draw) -> G:
    """A random adaptive-pooling geometry; ``size`` is the ``output_size`` argument (an int,
    a pair, or a pair with None: the input's size)."""
    h, w = g.dim(1, 9), g.dim(1, 9)
    oh, ow = g.dim(0, 7), g.dim(0, 7)
    size: Any = (oh, ow)
    if g.coin(0.2):
        size, oh = (None, ow), h
    elif oh == ow and g.coin():
        size = oh
    return G(n=g.dim(0, 3), c=g.dim(0, 4), h=h, w=w, ho=oh, wo=ow, size=size)


def _global_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    return G(n=n, c=c, h=h, w=w, ho=1, wo=1)


ADAPTIVE = (_adaptive_fixed, draw_adaptive)
GLOBAL = (
    _global_fixed,
    lambda g: G(n=g.dim(0, 3), c=g.dim(0, 4), h=g.dim(1, 9), w=g.dim(1, 9), ho=1, wo=1),
)


def _adaptive_ref(name: str) -> Callable[[dict], Any]:
    def ref(a: dict) -> Any:
        x = a["x"]
        size = a.get("output_size", 1)
        size = (size, size) if isinstance(size, int) else size
        size = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(size))
        return outputs(_ref("test_pool", name)(x, size))

    return ref


op(
    "adaptive_avg_pool2d",
    ADAPTIVE,
    lambda a, p: dict(x=_x4(a, p), output_size=p.size),
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=dict(output_size="adaptive_size"),
    nan_in="x",
    reference=_adaptive_ref("ref_adaptive_avg"),
    backward=(_input_shape_grad("adaptive_avg_pool2d_backward"),),
)
op(
    "adaptive_avg_pool2d_backward",
    ADAPTIVE,
    lambda a, p: dict(grad_output=_g4(a, p), input_shape=_shape4(p)),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4, input_shape=4),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    nan_in="grad_output",
    reference=lambda a: _ref("test_pool", "ref_adaptive_avg_backward")(
        a["grad_output"], tuple(a["input_shape"])
    ),
)
op(
    "adaptive_max_pool2d",
    ADAPTIVE,
    lambda a, p: dict(x=_x4(a, p), output_size=p.size, return_indices=True),
    _return_indices,
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=dict(output_size="adaptive_size", return_indices="bool"),
    batched=(True, True),
    nan_in="x",
    reference=lambda a: _with_indices(_adaptive_ref("ref_adaptive_max")(a), a),
    backward=(_input_shape_grad("adaptive_max_pool2d_backward", indices=True),),
)
_argmax_backward("adaptive_max_pool2d_backward", ADAPTIVE)
op(
    "global_avg_pool2d",
    GLOBAL,
    lambda a, p: dict(x=_x4(a, p)),
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    nan_in="x",
    reference=_adaptive_ref("ref_adaptive_avg"),
    backward=(_input_shape_grad("global_avg_pool2d_backward"),),
)
op(
    "global_avg_pool2d_backward",
    GLOBAL,
    lambda a, p: dict(grad_output=_g4(a, p), input_shape=_shape4(p)),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4, input_shape=4),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    nan_in="grad_output",
    mismatch=(("grad_output", 2, "grad_output"),),
    reference=lambda a: _ref("test_pool", "ref_adaptive_avg_backward")(
        a["grad_output"], tuple(a["input_shape"])
    ),
)


def _unpool_fixed(n: int, big: bool) -> G:
    c, h, w = (6, 16, 14) if big else (3, 4, 4)
    return G(
        n=n,
        c=c,
        h=h,
        w=w,
        ho=2 * h,
        wo=2 * w,
        size=None,
        opts=dict(kernel_size=2, stride=2, padding=0),
    )


def _unpool_draw(g: Draw) -> G:
    k, s = g.dim(1, 4), g.dim(1, 4)
    p = g.dim(0, k // 2)
    n, c, h, w = g.dim(0, 3), g.dim(0, 4), g.dim(1, 6), g.dim(1, 6)
    while (h - 1) * s - 2 * p + k < 1:
        h += 1
    while (w - 1) * s - 2 * p + k < 1:
        w += 1
    oh, ow = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k
    size = None
    if g.coin(0.3):
        size = (oh + int(g.r.integers(0, s)), ow)
        oh = size[0]
    return G(
        n=n, c=c, h=h, w=w, ho=oh, wo=ow, size=size, opts=dict(kernel_size=k, stride=s, padding=p)
    )


UNPOOL = (_unpool_fixed, _unpool_draw)


def _unpool(a: Canon, u: G) -> dict:
    args = dict(x=_x4(a, u), indices=a.indices(_shape4(u), u.ho * u.wo, unique=True), **u.opts)
    if u.size is not None:
        args["output_size"] = u.size
    return args


def _unpool_ref(a: dict) -> Any:
    x, size = a["x"], a.get("output_size")
    if size is None:
        k, s, p = a["kernel_size"], a.get("stride") or a["kernel_size"], a.get("padding", 0)
        size = tuple((x.shape[2 + i] - 1) * s - 2 * p + k for i in range(2))
    return _ref("test_pool", "ref_max_unpool")(x, a["indices"], size)


op(
    "max_unpool2d",
    UNPOOL,
    _unpool,
    arrays=("x",),
    unbatched=dict(x=4, indices=4),
    fixed_ndim=("x",),
    index_arrays=("indices",),
    params=dict(kernel_size="pos_pair", stride="pool_stride", padding="nonneg_pair"),
    nan_in="x",
    mismatch=(("x", 2, "x|indices"),),
    reference=_unpool_ref,
    backward=(
        Backward(
            "max_unpool2d_backward",
            ("x",),
            lambda a, g, out: dict(grad_output=g, indices=a["indices"]),
        ),
    ),
)
op(
    "max_unpool2d_backward",
    UNPOOL,
    lambda a, u: dict(
        grad_output=a.x(u.n, u.c, u.ho, u.wo),
        indices=a.indices(_shape4(u), u.ho * u.wo, unique=True),
    ),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4, indices=4),
    fixed_ndim=("grad_output",),
    index_arrays=("indices",),
    index_shape_free=True,
    nan_in="grad_output",
    mismatch=(("grad_output", 1, "grad_output|indices"),),
    reference=lambda a: R.max_unpool2d_backward_ref(a["grad_output"], a["indices"]),
)

# --- padding -------------------------------------------------------------------------------


def _sides(padding: Any) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) from int | (ph, pw) | (left, right, top, bottom)."""
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return padding[1], padding[1], padding[0], padding[0]
    return tuple(padding)


def _pad_geometry(n: int, c: int, h: int, w: int, padding: Any, mode: str) -> G:
    left, right, top, bottom = _sides(padding)
    return G(
        n=n, c=c, h=h, w=w, ho=h + top + bottom, wo=w + left + right, padding=padding, mode=mode
    )


def _pad_draw(g: Draw) -> G:
    mode = g.choice(["constant", "replicate", "reflect", "circular"])
    h, w = g.dim(1, 8), g.dim(1, 8)
    m = min(h, w)
    lim = {"constant": 4, "replicate": 4, "reflect": m - 1, "circular": m}[mode]
    lo = -((m - 1) // 2) if mode == "constant" else 0  # a crop leaves at least one row
    sides = [int(g.r.integers(lo, lim + 1)) for _ in range(4)]
    kind = g.r.random()
    padding = tuple(sides) if kind < 0.6 else (sides[0], sides[2]) if kind < 0.8 else sides[0]
    return _pad_geometry(g.dim(0, 3), g.dim(0, 3), h, w, padding, mode)


PAD = (lambda n, big: _pad_geometry(n, *_sizes(big), (1, 2, 3, 0), "reflect"), _pad_draw)


def _pad_value(g: Draw, args: dict, geo: G) -> None:
    if args["mode"] == "constant" and g.coin():
        args["value"] = float(g.r.standard_normal())


op(
    "pad2d",
    PAD,
    lambda a, p: dict(x=_x4(a, p), padding=p.padding, mode=p.mode),
    _pad_value,
    arrays=("x",),
    unbatched=dict(x=4),
    fixed_ndim=("x",),
    params=dict(padding="pad", mode="choice"),
    nan_in="x",
    reference=lambda a: _ref("test_pad", "ref_pad")(
        a["x"], a["padding"], **pick(a, "mode", "value")
    ),
    backward=(
        Backward(
            "pad2d_backward",
            ("x",),
            lambda a, g, out: dict(grad_output=g, **pick(a, "padding", "mode")),
        ),
    ),
)
op(
    "pad2d_backward",
    PAD,
    lambda a, p: dict(grad_output=_g4(a, p), padding=p.padding, mode=p.mode),
    arrays=("grad_output",),
    unbatched=dict(grad_output=4),
    fixed_ndim=("grad_output",),
    params=dict(padding="pad", mode="choice"),
    nan_in="grad_output",
    reference=lambda a: _ref("test_pad", "ref_pad_backward")(
        a["grad_output"], a["padding"], **pick(a, "mode")
    ),
)

# --- normalization -------------------------------------------------------------------------


def _gn_fixed(n: int, big: bool) -> G:
    c, h, w = (8, 33, 29) if big else (6, 5, 4)
    return G(n=n, c=c, groups=c // 2, spatial=(h, w))


def _gn_draw(g: Draw) -> G:
    groups, cg = g.dim(1, 3), g.dim(1, 3)
    spatial = tuple(g.dim(0, 5) for _ in range(int(g.r.integers(0, 3))))
    return G(n=g.dim(0, 3), c=groups * cg, groups=groups, spatial=spatial)


GROUP_NORM = (_gn_fixed, _gn_draw)


def _norm_vary(g: Draw, args: dict, geo: Any) -> None:
    """Drop the optional weight / bias at random; a random eps."""
    for key in ("weight", "bias"):
        if key in args and g.coin(0.3):
            del args[key]
    if g.coin(0.5):
        args["eps"] = float(g.choice([1e-5, 1e-3, 0.5]))


_NORM_AFFINE = (("weight", 0, "weight"), ("bias", 0, "bias"))


def _norm_backward(name: str, *keep: str) -> Backward:
    return Backward(
        name,
        ("x", "weight", "bias"),
        lambda a, g, out: dict(grad_output=g, x=a["x"], **pick(a, *keep, "weight", "eps")),
    )


op(
    "group_norm",
    GROUP_NORM,
    lambda a, q: dict(
        x=a.x(q.n, q.c, *q.spatial), num_groups=q.groups, weight=a.x(q.c), bias=a.x(q.c)
    ),
    _norm_vary,
    arrays=("x", "weight", "bias"),
    optional=("weight", "bias"),
    params=dict(num_groups="pos_int", eps="nonneg_real"),
    mismatch=_NORM_AFFINE,
    nan_in="x",
    reference=lambda a: R.group_norm_ref(**a),
    backward=(_norm_backward("group_norm_backward", "num_groups"),),
)
op(
    "group_norm_backward",
    GROUP_NORM,
    lambda a, q: dict(
        grad_output=a.x(q.n, q.c, *q.spatial),
        x=a.x(q.n, q.c, *q.spatial),
        num_groups=q.groups,
        weight=a.x(q.c),
    ),
    _norm_vary,
    arrays=("grad_output", "x", "weight"),
    optional=("weight",),
    params=dict(num_groups="pos_int", eps="nonneg_real"),
    mismatch=(*same_shape("grad_output", "x"), ("weight", 0, "weight")),
    batched=(True, False, False),
    nan_in="grad_output",
    reference=lambda a: R.group_norm_backward_ref(**a),
)


def _ln_fixed(n: int, big: bool) -> G:
    return G(lead=(n, 4), norm=(70, 80)) if big else G(lead=(n, 3), norm=(4, 5))


def _ln_draw(g: Draw) -> G:
    norm = tuple(g.dim(1, 6) for _ in range(int(g.r.integers(1, 3))))
    return G(lead=draw_lead(g), norm=norm)


LAYER_NORM = (_ln_fixed, _ln_draw)


def _ln_vary(g: Draw, args: dict, geo: G) -> None:
    _norm_vary(g, args, geo)
    if len(geo.norm) == 1 and g.coin():
        args["normalized_shape"] = geo.norm[0]  # an int
    elif g.coin(0.3):
        args["normalized_shape"] = list(geo.norm)


op(
    "layer_norm",
    LAYER_NORM,
    lambda a, q: dict(
        x=a.x(*q.lead, *q.norm), normalized_shape=q.norm, weight=a.x(*q.norm), bias=a.x(*q.norm)
    ),
    _ln_vary,
    arrays=("x", "weight", "bias"),
    optional=("weight", "bias"),
    params=dict(normalized_shape="normalized_shape", eps="nonneg_real"),
    mismatch=(*_NORM_AFFINE, ("x", -1, "x|normalized_shape")),
    nan_in="x",
    reference=lambda a: R.layer_norm_ref(**a),
    backward=(_norm_backward("layer_norm_backward", "normalized_shape"),),
)
op(
    "layer_norm_backward",
    LAYER_NORM,
    lambda a, q: dict(
        grad_output=a.x(*q.lead, *q.norm),
        x=a.x(*q.lead, *q.norm),
        normalized_shape=q.norm,
        weight=a.x(*q.norm),
    ),
    _ln_vary,
    arrays=("grad_output", "x", "weight"),
    optional=("weight",),
    params=dict(normalized_shape="normalized_shape", eps="nonneg_real"),
    mismatch=(*same_shape("grad_output", "x"), ("weight", 0, "weight")),
    batched=(True, False, False),
    nan_in="grad_output",
    reference=lambda a: R.layer_norm_backward_ref(**a),
)


def _bn_fixed(n: int, big: bool) -> G:
    # big: planes longer than the kernels' chunk (4096), several chunks per channel
    c, h, w = (6, 70, 70) if big else _sizes(False)
    return G(n=n, c=c, spatial=(h, w))


def _bn_draw(g: Draw) -> G:
    spatial = tuple(g.dim(0, 5) for _ in range(int(g.r.integers(0, 3))))
    n = g.dim(0, 4)
    if n * int(np.prod(spatial)) == 1:
        n = 2  # training needs more than one value per channel
    return G(n=n, c=g.dim(1, 4), spatial=spatial)


BATCH_NORM = (_bn_fixed, _bn_draw)


def _bn_vary(g: Draw, args: dict, geo: G) -> None:
    _norm_vary(g, args, geo)
    if g.coin(0.4):  # normalize with given running statistics (read only; their update in
        args["training"] = False  # training is checked against torch in test_norm.py)
        args["running_mean"] = g.x(geo.c)
        args["running_var"] = g.x(geo.c, positive=True)
    if g.coin(0.2) and "grad_output" not in args:
        args["momentum"] = float(g.r.random())


op(
    "batch_norm",
    BATCH_NORM,
    lambda a, q: dict(
        x=a.x(q.n, q.c, *q.spatial),
        running_mean=None,
        running_var=None,
        weight=a.x(q.c),
        bias=a.x(q.c),
        training=True,
    ),
    _bn_vary,
    arrays=("x", "weight", "bias"),
    optional=("weight", "bias"),
    params=dict(training="bool", momentum="real", eps="nonneg_real"),
    mismatch=_NORM_AFFINE,
    nan_in="x",
    reference=lambda a: R.batch_norm_ref(**a),
    backward=(_norm_backward("batch_norm_backward", "running_mean", "running_var", "training"),),
)
op(
    "batch_norm_backward",
    BATCH_NORM,
    lambda a, q: dict(
        grad_output=a.x(q.n, q.c, *q.spatial),
        x=a.x(q.n, q.c, *q.spatial),
        running_mean=None,
        running_var=None,
        weight=a.x(q.c),
        training=True,
    ),
    _bn_vary,
    arrays=("grad_output", "x", "weight"),
    optional=("weight",),
    params=dict(training="bool", eps="nonneg_real"),
    mismatch=(*same_shape("grad_output", "x"), ("weight", 0, "weight")),
    batched=(True, False, False),
    nan_in="grad_output",
    reference=lambda a: R.batch_norm_backward_ref(**a),
)


def _in_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    return G(n=n, c=c, spatial=(h, w))


def _in_draw(g: Draw) -> G:
    spatial = [g.dim(0, 5) for _ in range(int(g.r.integers(1, 3)))]
    if int(np.prod(spatial)) == 1:
        spatial[0] = 2  # the input's statistics need more than one position
    return G(n=g.dim(0, 3), c=g.dim(1, 4), spatial=tuple(spatial))


INSTANCE_NORM = (_in_fixed, _in_draw)


def _in_vary(g: Draw, args: dict, geo: G) -> None:
    _norm_vary(g, args, geo)
    if g.coin(0.3):  # normalize with given running statistics (read only)
        args["use_input_stats"] = False
        args["running_mean"] = g.x(geo.c)
        args["running_var"] = g.x(geo.c, positive=True)
    if "momentum" in args or (g.coin(0.2) and "grad_output" not in args):
        args["momentum"] = float(g.r.random())


op(
    "instance_norm",
    INSTANCE_NORM,
    lambda a, q: dict(x=a.x(q.n, q.c, *q.spatial), weight=a.x(q.c), bias=a.x(q.c)),
    _in_vary,
    arrays=("x", "weight", "bias"),
    optional=("weight", "bias"),
    params=dict(use_input_stats="bool", momentum="real", eps="nonneg_real"),
    mismatch=_NORM_AFFINE,
    nan_in="x",
    reference=lambda a: R.instance_norm_ref(**a),
    backward=(
        _norm_backward("instance_norm_backward", "running_mean", "running_var", "use_input_stats"),
    ),
)
op(
    "instance_norm_backward",
    INSTANCE_NORM,
    lambda a, q: dict(
        grad_output=a.x(q.n, q.c, *q.spatial), x=a.x(q.n, q.c, *q.spatial), weight=a.x(q.c)
    ),
    _in_vary,
    arrays=("grad_output", "x", "weight"),
    optional=("weight",),
    params=dict(use_input_stats="bool", eps="nonneg_real"),
    mismatch=(*same_shape("grad_output", "x"), ("weight", 0, "weight")),
    batched=(True, False, False),
    nan_in="grad_output",
    reference=lambda a: R.instance_norm_backward_ref(**a),
)

# --- resizing ------------------------------------------------------------------------------

_RESIZE_OPTS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")


def _resize_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    return G(n=n, c=c, h=h, w=w, opts=dict(size=(2 * h + 1, w // 2), mode="bilinear"))


def _resize_draw(g: Draw) -> G:
    h, w = g.dim(1, 8), g.dim(1, 8)
    mode = g.choice(["nearest", "nearest-exact", "bilinear"])
    opts: dict = dict(mode=mode)
    if g.coin():
        opts["size"] = (g.dim(1, 12), g.dim(1, 12)) if g.coin(0.7) else g.dim(1, 12)
    else:
        f = [float(g.choice([0.5, 0.75, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0, 1 / 3])) for _ in "hw"]
        f = [v if int(np.floor(min(h, w) * v)) >= 1 else 1.5 for v in f]  # outputs >= 1
        opts["scale_factor"] = f[0] if g.coin() else tuple(f)
        if g.coin(0.3):
            opts["recompute_scale_factor"] = g.coin()
    if mode == "bilinear" and g.coin(0.7):
        opts["align_corners"] = g.coin()
    return G(n=g.dim(0, 3), c=g.dim(0, 3), h=h, w=w, opts=opts)


RESIZE = (_resize_fixed, _resize_draw)


def _resize_backward_args(a: dict, g: Any, out: tuple) -> dict:
    kw = pick(a, "mode", "align_corners")
    if not a.get("recompute_scale_factor"):
        kw.update(pick(a, "scale_factor"))
    return dict(grad_output=g, input_shape=a["x"].shape, **kw)


def _resize_out(geo: G) -> tuple[int, int]:
    return tuple(np.shape(R.interpolate_ref(np.zeros((0, 0, geo.h, geo.w)), **geo.opts))[2:])


op(
    "interpolate",
    RESIZE,
    lambda a, q: dict(x=a.x(q.n, q.c, q.h, q.w), **q.opts),
    arrays=("x",),
    fixed_ndim=("x",),
    params=dict(
        size="size",
        scale_factor="scale",
        mode="choice",
        align_corners="opt_bool",
        recompute_scale_factor="opt_bool",
        antialias="bool",
    ),
    nan_in="x",
    reference=lambda a: R.interpolate_ref(**a),
    backward=(Backward("interpolate_backward", ("x",), _resize_backward_args),),
)
op(
    "interpolate_backward",
    RESIZE,
    lambda a, q: dict(
        grad_output=a.x(q.n, q.c, *_resize_out(q)),
        input_shape=(q.n, q.c, q.h, q.w),
        **{
            **pick(q.opts, "mode", "align_corners"),
            **({} if q.opts.get("recompute_scale_factor") else pick(q.opts, "scale_factor")),
        },
    ),
    arrays=("grad_output",),
    fixed_ndim=("grad_output",),
    shape_args=("input_shape",),
    params=dict(mode="choice", align_corners="opt_bool", scale_factor="scale"),
    nan_in="grad_output",
    reference=lambda a: R.interpolate_backward_ref(**a),
)


def _shuffle_fixed(n: int, big: bool) -> G:
    c, h, w = _sizes(big)
    return G(lead=(n,), c=c, r=3 if big else 2, h=h, w=w)


def _shuffle_draw(g: Draw) -> G:
    lead = tuple(g.dim(0, 3) for _ in range(int(g.r.integers(0, 3))))
    return G(lead=lead, c=g.dim(0, 3), r=g.dim(1, 3), h=g.dim(0, 4), w=g.dim(0, 4))


SHUFFLE = (_shuffle_fixed, _shuffle_draw)

op(
    "pixel_shuffle",
    SHUFFLE,
    lambda a, q: dict(x=a.x(*q.lead, q.c * q.r * q.r, q.h, q.w), upscale_factor=q.r),
    arrays=("x",),
    params=dict(upscale_factor="pos_int"),
    mismatch=(("x", -3, "x|upscale_factor"),),
    nan_in="x",
    reference=lambda a: R.pixel_shuffle_ref(**a),
    backward=(
        Backward(
            "pixel_unshuffle",
            ("x",),
            lambda a, g, out: dict(x=g, downscale_factor=a["upscale_factor"]),
        ),
    ),
)
op(
    "pixel_unshuffle",
    SHUFFLE,
    lambda a, q: dict(x=a.x(*q.lead, q.c, q.h * q.r, q.w * q.r), downscale_factor=q.r),
    arrays=("x",),
    params=dict(downscale_factor="pos_int"),
    mismatch=(("x", -1, "x|downscale_factor"),),
    nan_in="x",
    reference=lambda a: R.pixel_unshuffle_ref(**a),
    backward=(
        Backward(
            "pixel_shuffle",
            ("x",),
            lambda a, g, out: dict(x=g, upscale_factor=a["downscale_factor"]),
        ),
    ),
)

# --- signal --------------------------------------------------------------------------------


def _signal_draw(g: Draw) -> G:
    m1, n1, m2, n2 = g.dim(0, 12), g.dim(0, 12), g.dim(0, 6), g.dim(0, 6)
    mode = g.choice(["full", "valid", "same"])
    if mode == "valid" and not ((m1 >= m2 and n1 >= n2) or (m2 >= m1 and n2 >= n1)):
        m2, n2 = min(m1, m2), min(n1, n2)  # 'valid' needs one array inside the other
    return G(
        s1=(m1, n1),
        s2=(m2, n2),
        mode=mode,
        boundary=g.choice(["fill", "wrap", "symm"]),
        method=g.choice(["auto", "direct", "fft"]),
    )


def _signal_fixed(n: int, big: bool) -> G:
    m = 40 if big else 9
    return G(s1=(m, m - 1), s2=(3, 2), mode="same", boundary="symm", method="direct")


def _fillvalue(g: Draw, args: dict, geo: G) -> None:
    if g.coin(0.3):
        args["fillvalue"] = float(g.r.standard_normal())


for _name in ("correlate2d", "convolve2d"):
    op(
        _name,
        (_signal_fixed, _signal_draw),
        lambda a, s: dict(
            in1=a.x(*s.s1), in2=a.x(*s.s2), mode=s.mode, boundary=s.boundary, method=s.method
        ),
        _fillvalue,
        arrays=("in1", "in2"),
        array_dtypes="numeric",  # SciPy's dtypes: integers (exact), complex, bool mixes
        fixed_ndim=("in1", "in2"),
        params=dict(mode="choice", boundary="choice", method="choice", fillvalue="fillvalue"),
        batched=(False,),
        nan_in="in1",
        reference=lambda a, conv=_name == "convolve2d": _ref("test_signal", "ref_correlate2d")(
            a["in1"], a["in2"], **pick(a, "mode", "boundary", "fillvalue"), convolve=conv
        ),
    )

BY_NAME = {s.name: s for s in SPECS}

assert len(BY_NAME) == len(SPECS), "two records of one op"
assert set(BY_NAME) == set(F.__all__) | {"correlate2d", "convolve2d"}, sorted(
    set(F.__all__) ^ set(BY_NAME)
)
