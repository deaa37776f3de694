"""ONNX ``Resize`` and cnncore's :class:`~cnncore.nn.Upsample`: which Resize attributes
compute what a layer computes, checked index by index.

ONNX's Resize maps output coordinate ``i`` of an axis to the input coordinate ``x(i)`` by
its ``coordinate_transformation_mode`` (``asymmetric``: ``i / s``; ``half_pixel``:
``(i + 0.5) / s - 0.5``; ``align_corners``: ``i (n_in - 1) / (n_out - 1)``) with ``s`` the
scale given, or ``n_out / n_in`` when sizes are given; PyTorch (and so cnncore) multiplies
by ``1 / scale_factor`` in the data's precision and special-cases some sizes.  The two agree
for the usual factors and sizes, not for every one.  So neither side trusts a formula:
:func:`spec_taps` evaluates ONNX's rule (in the ways a runtime may round it: float32
division as onnxruntime, float32 reciprocal as PyTorch, float64) and :func:`layer_taps`
cnncore's own interpolation tables.  Export writes a Resize only when both float32 ways
give the layer's interpolation (else an exact Gather or MatMul form); import accepts a
Resize when one way does (the rest differ only where a coordinate is within rounding of a
boundary).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._geometry import ResizeGeometry
from ..ops.resize import _tables

__all__ = ["ResizeSpec", "spec_for", "spec_matches", "spec_taps", "layer_taps", "layer_matrices"]

#: cnncore mode (and align_corners) -> (ONNX mode, coordinate_transformation_mode,
#: nearest_mode) that PyTorch's rule is closest to.
MODES = {
    ("nearest", False): ("nearest", "asymmetric", "floor"),
    ("nearest-exact", False): ("nearest", "half_pixel", "round_prefer_ceil"),
    ("bilinear", False): ("linear", "half_pixel", None),
    ("bilinear", True): ("linear", "align_corners", None),
}


class ResizeSpec(NamedTuple):
    """One ONNX Resize: ``mode``, ``ctm`` (coordinate_transformation_mode), ``nearest_mode``
    and either per-axis ``scales`` (H, W) or ``sizes`` (H, W)."""

    mode: str
    ctm: str
    nearest_mode: str | None
    scales: tuple[float, float] | None
    sizes: tuple[int, int] | None


def _coords(ctm: str, n_in: int, n_out: int, s: float, how: str) -> np.ndarray:
    """Input coordinate of each output index, computed the way ``how`` says: ``"f32"``
    (float32 division, what onnxruntime does), ``"f32-recip"`` (multiplying by the float32
    reciprocal, PyTorch's way) or ``"f64"`` (float64 division, the exact rule's nearest)."""
    t = np.float64 if how == "f64" else np.float32
    i = np.arange(n_out).astype(t)
    sc = t(s)
    inv = t(1) / sc

    def div(a: np.ndarray) -> np.ndarray:
        return a * inv if how == "f32-recip" else a / sc

    if ctm == "asymmetric":
        return div(i)
    if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and n_out > 1):
        return div(i + t(0.5)) - t(0.5)
    if ctm == "pytorch_half_pixel":
        return np.zeros(n_out, t)
    if ctm == "align_corners":
        return i * (t(n_in - 1) / t(n_out - 1)) if n_out > 1 else np.zeros(n_out, t)
    raise ValueError(f"coordinate_transformation_mode {ctm!r}")


#: The ways a runtime may compute the coordinates (see :func:`_coords`).
ARITHMETIC = ("f32", "f32-recip", "f64")


def _round(x: np.ndarray, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    raise ValueError(f"nearest_mode {nearest_mode!r}")


#: An interpolation along one axis: output ``o`` is ``w0[o] x[i0[o]] + w1[o] x[i1[o]]``.
Taps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _two_taps(taps: list[tuple[np.ndarray, np.ndarray]]) -> Taps:
    i0, w0 = taps[0]
    i1, w1 = taps[1] if len(taps) > 1 else (i0, np.zeros(len(i0)))
    return (
        np.asarray(i0, np.int64),
        np.asarray(i1, np.int64),
        np.asarray(w0, np.float64),
        np.asarray(w1, np.float64),
    )


def _same_taps(a: Taps, b: Taps, atol: float = 1e-6) -> bool:
    """Whether two interpolations give every output the same weight on every input (the
    weights of both compared at each index either one reads)."""
    for j in (a[0], a[1], b[0], b[1]):
        wa = a[2] * (a[0] == j) + a[3] * (a[1] == j)
        wb = b[2] * (b[0] == j) + b[3] * (b[1] == j)
        if not np.all(np.abs(wa - wb) <= atol):
            return False
    return True


def spec_taps(spec: ResizeSpec, axis: int, n_in: int, n_out: int, how: str) -> Taps:
    """The interpolation of ``spec`` along one axis, its coordinates computed as ``how``
    says (see :data:`ARITHMETIC`)."""
    if spec.scales is not None:
        s = float(spec.scales[axis])
    else:  # the scale a runtime derives from the sizes
        s = float(np.float32(n_out) / np.float32(n_in))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = _coords(spec.ctm, n_in, n_out, s, how)
    if spec.mode == "nearest":
        idx = np.clip(_round(x, spec.nearest_mode or "round_prefer_floor"), 0, n_in - 1)
        return _two_taps([(idx.astype(np.int64), np.ones(n_out))])
    x = np.clip(x, 0, n_in - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = x.astype(np.float64) - i0
    return _two_taps([(i0, 1.0 - lam), (i1, lam)])


def layer_taps(geo: ResizeGeometry, in_hw: tuple[int, int], dtype: Any) -> list[Taps]:
    """cnncore's interpolation along H and W for ``geo`` (interpolate's own tables)."""
    return [_two_taps(taps) for taps in _tables(geo, in_hw, np.dtype(dtype))]


def layer_matrices(geo: ResizeGeometry, in_hw: tuple[int, int], dtype: Any) -> list[np.ndarray]:
    """cnncore's interpolation along H and W as ``(n_out, n_in)`` matrices."""
    out = []
    for k, (i0, i1, w0, w1) in enumerate(layer_taps(geo, in_hw, dtype)):
        a = np.zeros((geo.out[k], in_hw[k]))
        rows = np.arange(geo.out[k])
        np.add.at(a, (rows, i0), w0)
        np.add.at(a, (rows, i1), w1)
        out.append(a)
    return out


def _out_size(n_in: int, scale: float) -> set[int]:
    """The output sizes a runtime may compute from a scale (float32 or float64 product)."""
    return {
        int(math.floor(float(np.float32(n_in) * np.float32(scale)))),
        int(math.floor(n_in * float(np.float32(scale)))),
    }


def spec_matches(
    spec: ResizeSpec,
    geo: ResizeGeometry,
    in_hw: tuple[int, int],
    dtype: Any,
    strict: bool = True,
) -> bool:
    """Whether the Resize ``spec`` computes what interpolate does for ``geo`` on ``in_hw``:
    the same output size (however the product is rounded) and the same weights on the same
    input pixels (within 1e-6) -- ``strict``: with the coordinates in float32 both ways
    (division and reciprocal: what export needs, so that a runtime agrees), else in one of
    the ways of :data:`ARITHMETIC` (import: the file's indices differ from the layer's at
    most where a coordinate is within rounding of a pixel boundary)."""
    if spec.scales is not None:
        if any(_out_size(in_hw[k], spec.scales[k]) != {geo.out[k]} for k in range(2)):
            return False
    elif tuple(spec.sizes or ()) != tuple(geo.out):
        return False
    want = layer_taps(geo, in_hw, dtype)
    if tuple(geo.out) == tuple(in_hw):  # runtimes copy a resize to the same shape
        copy = _two_taps([(np.arange(in_hw[0]), np.ones(in_hw[0]))])
        copy_w = _two_taps([(np.arange(in_hw[1]), np.ones(in_hw[1]))])
        return _same_taps(want[0], copy) and _same_taps(want[1], copy_w)
    ways = ARITHMETIC[:2] if strict else ARITHMETIC
    for k in range(2):
        agree = [_same_taps(spec_taps(spec, k, in_hw[k], geo.out[k], how), want[k]) for how in ways]
        if not (all(agree) if strict else any(agree)):
            return False
    return True


def spec_for(geo: ResizeGeometry, in_hw: tuple[int, int], dtype: Any) -> ResizeSpec | None:
    """The Resize that computes ``geo`` on ``in_hw``: with scales (the layer's factors, or
    the exact ratio an axis has when PyTorch special-cases it) or with sizes, the layer's
    own kind first; None when neither agrees with interpolate (the caller then writes an
    exact Gather/MatMul form)."""
    mode, ctm, nearest_mode = MODES[(geo.mode, geo.align_corners)]
    scales = []
    for k in range(2):
        n_in, n_out, s = in_hw[k], geo.out[k], geo.scales[k]
        if n_out == n_in and geo.mode != "nearest-exact":
            s = 1.0  # an axis of unchanged size is copied
        elif n_out == 2 * n_in and geo.mode == "nearest":
            s = 2.0  # PyTorch's nearest halves the index of a doubled axis
        elif s is None:
            s = n_out / n_in
        scales.append(float(np.float32(s)))
    candidates = [
        ResizeSpec(mode, ctm, nearest_mode, (scales[0], scales[1]), None),
        ResizeSpec(mode, ctm, nearest_mode, None, (int(geo.out[0]), int(geo.out[1]))),
    ]
    if geo.scales[0] is None:  # the layer has a size (or recomputes its factor): sizes first
        candidates.reverse()
    for spec in candidates:
        if spec_matches(spec, geo, in_hw, dtype):
            return spec
    return None
