"""The one place where convolution and pooling geometry is computed.

Functional wrappers, layers (``summary()`` output shapes) and tests all call these; nothing
else repeats the output-size formulas.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._callcache import memoize_checks
from ._shared import PadMode
from ._validation import MAX_PARAM, check_bool, check_choice, check_int, check_numel, to_pair


class ConvGeometry(NamedTuple):
    """Per-axis geometry of a 2-D convolution (or pooling) window sweep.

    ``padding`` is the (top, left) padding; the bottom/right padding is implied by ``out``
    (it can differ from top/left for ``padding='same'`` with an even receptive field).
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out: tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """``floor((size + pad_total - dilation * (kernel - 1) - 1) / stride) + 1`` (may be <= 0)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(
    size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool
) -> int:
    """PyTorch's pooling output size (``pooling_output_shape``).

    ``floor_or_ceil((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1``; with
    ``ceil_mode`` the last window must start inside the input or the left padding, otherwise
    it is dropped.
    """
    numer = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (numer + (stride - 1 if ceil_mode else 0)) // stride + 1  # // floors, like div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv2d_padding(
    func: str,
    padding: Any,
    kernel_hw: tuple[int, int],
    stride_hw: tuple[int, int],
    dilation_hw: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve a convolution ``padding`` argument to ``((top, bottom), (left, right))``.

    ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'`` (output size equals
    input size; stride 1 only; an odd total padding puts the extra row/column at the
    bottom/right, as PyTorch does).
    """
    if isinstance(padding, str):
        check_choice(padding, "padding", func, ("same", "valid"))
        if padding == "valid":
            return (0, 0), (0, 0)
        if stride_hw != (1, 1):
            raise ValueError(
                f"{func}(): padding='same' is only supported with stride=1. "
                f"Received: stride={stride_hw}"
            )
        tot_h = dilation_hw[0] * (kernel_hw[0] - 1)
        tot_w = dilation_hw[1] * (kernel_hw[1] - 1)
        return (tot_h // 2, tot_h - tot_h // 2), (tot_w // 2, tot_w - tot_w // 2)
    ph, pw = to_pair(padding, "padding", func, min_value=0)
    return (ph, ph), (pw, pw)


def conv2d_geometry(
    func: str,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: Any,
    padding: Any,
    dilation: Any,
) -> ConvGeometry:
    """Validate and resolve the geometry of ``conv2d`` and its backward passes (see
    :func:`conv2d_padding` for the accepted ``padding`` values)."""
    sh, sw = to_pair(stride, "stride", func, min_value=1)
    dh, dw = to_pair(dilation, "dilation", func, min_value=1)
    kh, kw = kernel_hw
    H, W = in_hw
    (pt, pb), (pl, pr) = conv2d_padding(func, padding, kernel_hw, (sh, sw), (dh, dw))
    ho = conv_output_size(H, kh, sh, pt + pb, dh)
    wo = conv_output_size(W, kw, sw, pl + pr, dw)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"{func}(): the kernel (size {(kh, kw)}, dilation {(dh, dw)}) is larger than the "
            f"padded input (size {(H + pt + pb, W + pl + pr)}); the output would be "
            f"{(ho, wo)}. Received: input spatial size {(H, W)}, kernel_size {(kh, kw)}, "
            f"padding={padding!r}"
        )
    return ConvGeometry((kh, kw), (sh, sw), (pt, pl), (dh, dw), (ho, wo))


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, padding: int, output_padding: int, dilation: int
) -> int:
    """``(size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``
    (may be <= 0): the output size of a transposed convolution (PyTorch's formula)."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_transpose2d_params(
    func: str, stride: Any, padding: Any, output_padding: Any, dilation: Any
) -> tuple[tuple[int, int], ...]:
    """Validate the parameters of a transposed convolution independently of the input
    (layers call this in ``__init__``): ``(stride, padding, output_padding, dilation)`` pairs.

    ``padding`` is an int or a pair (no ``'same'``/``'valid'``, as in PyTorch); each
    ``output_padding`` must be smaller than the stride or the dilation of its axis.
    """
    sh, sw = to_pair(stride, "stride", func, min_value=1)
    dh, dw = to_pair(dilation, "dilation", func, min_value=1)
    if isinstance(padding, str):
        raise TypeError(
            f"{func}(): padding must be an int or a pair of ints (a transposed convolution "
            f"has no 'same'/'valid'). Received: padding={padding!r}"
        )
    ph, pw = to_pair(padding, "padding", func, min_value=0)
    oph, opw = to_pair(output_padding, "output_padding", func, min_value=0)
    if not (oph < sh or oph < dh) or not (opw < sw or opw < dw):
        raise ValueError(
            f"{func}(): output_padding must be smaller than either stride or dilation in "
            f"each dimension. Received: output_padding={output_padding!r}, "
            f"stride={stride!r}, dilation={dilation!r}"
        )
    return (sh, sw), (ph, pw), (oph, opw), (dh, dw)


def conv_transpose2d_geometry(
    func: str,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    stride: Any,
    padding: Any,
    output_padding: Any,
    dilation: Any,
) -> tuple[ConvGeometry, tuple[int, int]]:
    """Validate and resolve the geometry of ``conv_transpose2d`` and its backward pass.

    Returns ``(geo, out_hw)``: ``out_hw`` is the output size (:func:`conv_transpose_output_size`
    per axis) and ``geo`` the geometry of the conv2d whose adjoint the transposed convolution
    is -- the conv2d from an ``out_hw`` image to an ``in_hw`` one, so ``geo.out == in_hw``
    (smaller than that conv2d's own output size when ``output_padding >= stride``, which
    only adds rows/columns that no input reaches).
    """
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = conv_transpose2d_params(
        func, stride, padding, output_padding, dilation
    )
    (H, W), (kh, kw) = in_hw, kernel_hw
    if H < 1 or W < 1:
        raise ValueError(
            f"{func}(): the input must have a non-zero height and width (only the batch or "
            f"the channels may be empty, as in PyTorch). Received: input spatial size {(H, W)}"
        )
    ho = conv_transpose_output_size(H, kh, sh, ph, oph, dh)
    wo = conv_transpose_output_size(W, kw, sw, pw, opw, dw)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"{func}(): the output size {(ho, wo)} would not be positive: padding is too large "
            f"for this input and kernel. Received: input spatial size {(H, W)}, kernel_size "
            f"{(kh, kw)}, padding={padding!r}"
        )
    return ConvGeometry((kh, kw), (sh, sw), (ph, pw), (dh, dw), (H, W)), (ho, wo)


def conv_transpose2d_output_padding(
    func: str,
    in_hw: tuple[int, int],
    output_size: Any,
    kernel_hw: tuple[int, int],
    stride: Any,
    padding: Any,
    dilation: Any,
    unbatched: bool = False,
) -> tuple[int, int]:
    """The ``output_padding`` that gives a transposed convolution the output ``output_size``
    (``(H, W)`` or ``(N, C, H, W)``; ``(H, W)`` or ``(C, H, W)`` for an ``unbatched``
    input), which must lie in ``[min, min + stride - 1]`` per axis with ``min`` the size
    without output padding (PyTorch's ``_output_padding`` rule)."""
    (sh, sw), (ph, pw), _, (dh, dw) = conv_transpose2d_params(func, stride, padding, 0, dilation)
    lead = 1 if unbatched else 2
    if isinstance(output_size, (list, tuple)) and len(output_size) == 2 + lead:
        output_size = tuple(output_size)[lead:]
    if not isinstance(output_size, (list, tuple)) or len(output_size) != 2:
        shapes = "(C, H, W) for an unbatched input" if unbatched else "(N, C, H, W)"
        raise ValueError(
            f"{func}(): output_size must be (H, W) or {shapes}. "
            f"Received: output_size={output_size!r}"
        )
    size = to_pair(output_size, "output_size", func, min_value=0)
    out = []
    for d, (n_in, k, s, p, dil) in enumerate(
        zip(in_hw, kernel_hw, (sh, sw), (ph, pw), (dh, dw), strict=True)
    ):
        lo = conv_transpose_output_size(n_in, k, s, p, 0, dil)
        if not lo <= size[d] <= lo + s - 1:
            raise ValueError(
                f"{func}(): output_size[{d}] must lie in [{lo}, {lo + s - 1}] for this input, "
                f"kernel, stride, padding and dilation. Received: output_size={output_size!r}"
            )
        out.append(size[d] - lo)
    return out[0], out[1]


def _window_params(
    func: str, kernel_size: Any, stride: Any, padding: Any
) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding)`` pairs of a pooling (or unpooling) window;
    ``stride=None`` means ``stride=kernel_size``."""
    kh, kw = to_pair(kernel_size, "kernel_size", func, min_value=1)
    if stride is None:
        sh, sw = kh, kw
    else:
        sh, sw = to_pair(stride, "stride", func, min_value=1)
    ph, pw = to_pair(padding, "padding", func, min_value=0)
    return (kh, kw), (sh, sw), (ph, pw)


def pool2d_params(
    func: str, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any
) -> tuple[tuple[int, int], ...]:
    """Validate pooling parameters independently of the input size (layers call this in
    ``__init__``): returns ``(kernel, stride, padding, dilation)`` pairs.

    ``stride=None`` means ``stride=kernel_size``; padding must be at most half the kernel.
    """
    (kh, kw), (sh, sw), (ph, pw) = _window_params(func, kernel_size, stride, padding)
    dh, dw = to_pair(dilation, "dilation", func, min_value=1)
    check_bool(ceil_mode, "ceil_mode", func)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{func}(): padding must be at most half of kernel_size. "
            f"Received: padding={padding!r}, kernel_size={kernel_size!r}"
        )
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw)


@memoize_checks
def pool2d_geometry(
    func: str,
    in_hw: tuple[int, int],
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
) -> ConvGeometry:
    """Validate and resolve pooling geometry (PyTorch's rules; see :func:`pool2d_params`)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pool2d_params(
        func, kernel_size, stride, padding, dilation, ceil_mode
    )
    H, W = in_hw
    ho = pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    wo = pool_output_size(W, kw, sw, pw, dw, ceil_mode)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"{func}(): the pooling window (kernel_size {(kh, kw)}, dilation {(dh, dw)}) is "
            f"larger than the padded input (size {(H + 2 * ph, W + 2 * pw)}); the output "
            f"would be {(ho, wo)}. Received: input spatial size {(H, W)}, "
            f"kernel_size={kernel_size!r}, padding={padding!r}"
        )
    for axis, size, k, s, p, d, n in (
        ("height", H, kh, sh, ph, dh, ho),
        ("width", W, kw, sw, pw, dw, wo),
    ):
        o = _first_empty_window(size, k, s, p, d, n)
        if o is not None:
            raise ValueError(
                f"{func}(): with dilation={dilation!r} and padding={padding!r} the pooling "
                f"window at output {axis} position {o} has no tap inside the input (all its "
                f"taps fall in the padding; PyTorch would return -inf with an out-of-range "
                f"index there). Received: input spatial size {(H, W)}, "
                f"kernel_size={kernel_size!r}, stride={stride!r}"
            )
    return ConvGeometry((kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo))


def _first_empty_window(
    size: int, kernel: int, stride: int, pad: int, dilation: int, n_out: int
) -> int | None:
    """First output position whose window taps ``o*stride - pad + i*dilation`` (``i <
    kernel``) all miss ``[0, size)``, or None.

    Only windows that start in the left padding can be empty: PyTorch's output-size rule
    makes every other window start inside the input.  So at most ``ceil(pad / stride)``
    windows are examined.
    """
    for o in range(min(n_out, -(-pad // stride))):
        start = o * stride - pad
        first = -(start // dilation)  # first tap i with start + i*dilation >= 0 (ceil)
        if first >= kernel or start + first * dilation >= size:
            return o
    return None


def adaptive_pool2d_output_size(
    func: str, in_hw: tuple[int, int], output_size: Any, name: str = "x"
) -> tuple[int, int]:
    """Resolve ``output_size`` of adaptive pooling: an int or a pair whose entries are ints
    (>= 0) or None (None keeps that input dimension).  The input's spatial size must be
    non-zero (an empty window has no average or maximum), as in PyTorch."""
    H, W = in_hw
    if H < 1 or W < 1:
        raise ValueError(
            f"{func}(): {name} must have a non-zero height and width for adaptive pooling. "
            f"Received: {name} with spatial size {(H, W)}"
        )
    if isinstance(output_size, (list, tuple)) and len(output_size) == 2:
        sizes = [in_hw[i] if v is None else v for i, v in enumerate(output_size)]
    elif output_size is None:
        raise TypeError(
            f"{func}(): output_size must be an int or a pair of ints (or None entries). "
            f"Received: output_size=None"
        )
    else:
        sizes = output_size
    ho, wo = to_pair(sizes, "output_size", func, min_value=0)
    return ho, wo


def adaptive_windows(size: int, n_out: int) -> list[tuple[int, int]]:
    """Adaptive-pooling windows ``[floor(o*size/n_out), ceil((o+1)*size/n_out))`` (reference
    for layers and tests; the kernels compute the same bounds)."""
    return [((o * size) // n_out, -(-((o + 1) * size) // n_out)) for o in range(n_out)]


def unpool2d_geometry(
    func: str, in_hw: tuple[int, int], kernel_size: Any, stride: Any, padding: Any, output_size: Any
) -> ConvGeometry:
    """Geometry of ``max_unpool2d`` (PyTorch's ``_unpool_output_size``).

    ``out`` is the unpooled spatial size: by default ``(H_in - 1) * stride - 2 * padding +
    kernel_size`` per axis; an explicit ``output_size`` (``(H, W)`` or ``(N, C, H, W)``) must
    lie strictly within ``stride`` of that default.
    """
    (kh, kw), (sh, sw), (ph, pw) = _window_params(func, kernel_size, stride, padding)
    default = ((in_hw[0] - 1) * sh - 2 * ph + kh, (in_hw[1] - 1) * sw - 2 * pw + kw)
    if output_size is None:
        out = default
    else:
        if isinstance(output_size, (list, tuple)) and len(output_size) == 4:
            output_size = tuple(output_size)[2:]
        if not isinstance(output_size, (list, tuple)) or len(output_size) != 2:
            raise ValueError(
                f"{func}(): output_size must be (H, W) or (N, C, H, W). "
                f"Received: output_size={output_size!r}"
            )
        out = to_pair(output_size, "output_size", func, min_value=0)
        for d, (size, dflt, s) in enumerate(zip(out, default, (sh, sw), strict=True)):
            if not dflt - s < size < dflt + s:
                raise ValueError(
                    f"{func}(): output_size[{d}] must lie strictly between {dflt - s} and "
                    f"{dflt + s} for this input, kernel_size, stride and padding. "
                    f"Received: output_size={output_size!r}"
                )
    if out[0] < 0 or out[1] < 0:
        raise ValueError(
            f"{func}(): the unpooled size {out} is negative; padding is too large for this "
            f"input and kernel_size. Received: padding={padding!r}, kernel_size="
            f"{kernel_size!r}, input spatial size {tuple(in_hw)}"
        )
    return ConvGeometry((kh, kw), (sh, sw), (ph, pw), (1, 1), (out[0], out[1]))


class PadGeometry(NamedTuple):
    """Resolved ``pad2d`` geometry: per-side padding (negative crops) and the output size."""

    left: int
    right: int
    top: int
    bottom: int
    out: tuple[int, int]


#: Pad mode name -> the kernels' code; the names come from the kernels' enum (one list).
PAD_MODE_CODES = {mode.name.removeprefix("PAD_").lower(): int(mode) for mode in PadMode}
PAD_MODES = tuple(PAD_MODE_CODES)


def pad2d_sides(func: str, padding: Any) -> tuple[int, int, int, int]:
    """``padding`` int | (ph, pw) | (left, right, top, bottom) -> (left, right, top, bottom)."""
    if isinstance(padding, (list, tuple)) and len(padding) == 4:
        vals = [check_int(v, "padding", func, min_value=-MAX_PARAM) for v in padding]
        return vals[0], vals[1], vals[2], vals[3]
    if isinstance(padding, (list, tuple)) and len(padding) != 2:
        raise ValueError(
            f"{func}(): padding must be an int, a pair (pad_h, pad_w) or a 4-tuple "
            f"(left, right, top, bottom). Received: padding={padding!r}"
        )
    ph, pw = to_pair(padding, "padding", func, min_value=-MAX_PARAM)
    return pw, pw, ph, ph


def pad2d_geometry(
    func: str, in_hw: tuple[int, int], padding: Any, mode: Any, name: str = "x"
) -> PadGeometry:
    """Validate ``pad2d``'s padding against the input size and mode (PyTorch's rules).

    Negative padding (cropping) is allowed for ``'constant'`` only, and may crop at most
    the whole axis (PyTorch's rule: crop, then pad).  ``'reflect'`` needs
    each pad < the size of its axis, ``'circular'`` each pad <= the size, and
    ``'replicate'``/``'reflect'`` a non-empty input plane.
    """
    check_choice(mode, "mode", func, PAD_MODES)
    left, right, top, bottom = pad2d_sides(func, padding)
    H, W = in_hw
    pads = ((left, W, "left"), (right, W, "right"), (top, H, "top"), (bottom, H, "bottom"))
    if mode != "constant":
        if min(left, right, top, bottom) < 0:
            raise ValueError(
                f"{func}(): negative padding (cropping) is only supported with "
                f"mode='constant'. Received: padding={padding!r}, mode={mode!r}"
            )
        if mode in ("replicate", "reflect") and (H < 1 or W < 1):
            raise ValueError(
                f"{func}(): mode={mode!r} needs a non-empty input plane. "
                f"Received: {name} with spatial size {(H, W)}"
            )
        for p, size, side in pads:
            if mode == "reflect" and p >= size:
                raise ValueError(
                    f"{func}(): with mode='reflect' each padding must be smaller than the "
                    f"input size of its axis ({side} padding {p} >= {size}). "
                    f"Received: padding={padding!r}, {name} spatial size {(H, W)}"
                )
            if mode == "circular" and p > size:
                raise ValueError(
                    f"{func}(): with mode='circular' each padding must be at most the input "
                    f"size of its axis ({side} padding {p} > {size}). "
                    f"Received: padding={padding!r}, {name} spatial size {(H, W)}"
                )
    # PyTorch crops first, then pads: the negative pads of an axis may remove at most the
    # whole axis (even if positive padding on the other side would refill it).
    for size, a, b, axis in ((H, top, bottom, "height"), (W, left, right, "width")):
        if size + min(a, 0) + min(b, 0) < 0:
            raise ValueError(
                f"{func}(): the negative padding crops {-(min(a, 0) + min(b, 0))} from an "
                f"input {axis} of {size}. Received: padding={padding!r}, {name} spatial size "
                f"{(H, W)}"
            )
    return PadGeometry(left, right, top, bottom, (H + top + bottom, W + left + right))


def conv2d_output_shape(
    input_shape: tuple[int, int, int, int],
    weight_shape: tuple[int, ...],
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    func: str = "conv2d",
) -> tuple[int, int, int, int]:
    """Output shape ``(N, C_out, H_out, W_out)`` of ``conv2d`` (used by layers' summaries)."""
    n, _, h, w = input_shape
    geo = conv2d_geometry(
        func, (h, w), (weight_shape[2], weight_shape[3]), stride, padding, dilation
    )
    shape = (n, weight_shape[0], *geo.out)
    check_numel(shape, "output", func)
    return shape


# --------------------------------------------------------------------------------------------
# Resizing (interpolate, pixel_shuffle)
# --------------------------------------------------------------------------------------------

#: interpolate's modes (PyTorch's names); the interpolating ones take ``align_corners``.
RESIZE_MODES = ("nearest", "nearest-exact", "bilinear")


class ResizeParams(NamedTuple):
    """interpolate's arguments, checked: exactly one of ``size`` / ``scale_factor`` (pairs),
    ``align_corners`` a bool (False for the nearest modes), ``recompute_scale_factor``."""

    size: tuple[int, int] | None
    scale_factor: tuple[float, float] | None
    mode: str
    align_corners: bool
    recompute_scale_factor: bool


class ResizeGeometry(NamedTuple):
    """Per-axis output size and the scale factor the coordinate mapping uses (None: the
    ratio of the sizes, as PyTorch does with an explicit size or a recomputed factor)."""

    out: tuple[int, int]
    scales: tuple[float | None, float | None]
    align_corners: bool
    mode: str


def _scale_pair(func: str, value: Any) -> tuple[float, float]:
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise ValueError(
            f"{func}(): scale_factor must be a number or a pair of numbers, one per spatial "
            f"dimension. Received: scale_factor={value!r}"
        )
    out = []
    for v in items:
        if isinstance(v, (bool, str, bytes)) or not isinstance(
            v, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                f"{func}(): scale_factor must be a number or a pair of numbers. "
                f"Received: scale_factor={value!r}"
            )
        try:
            f = float(v)
        except OverflowError:  # an int beyond float's range
            f = math.inf
        if not (f > 0 and math.isfinite(f)):
            raise ValueError(
                f"{func}(): scale_factor must be positive and finite. "
                f"Received: scale_factor={value!r}"
            )
        out.append(f)
    return out[0], out[1]


def _optional_bool(func: str, value: Any, name: str) -> bool | None:
    return None if value is None else check_bool(value, name, func)


def interpolate_params(
    func: str,
    size: Any,
    scale_factor: Any,
    mode: Any,
    align_corners: Any,
    recompute_scale_factor: Any = None,
) -> ResizeParams:
    """Check interpolate's arguments (PyTorch's rules and messages)."""
    check_choice(mode, "mode", func, RESIZE_MODES)
    corners = _optional_bool(func, align_corners, "align_corners")
    recompute = _optional_bool(func, recompute_scale_factor, "recompute_scale_factor")
    size_hw = None if size is None else to_pair(size, "size", func, min_value=1)
    scale_hw = None if scale_factor is None else _scale_pair(func, scale_factor)
    if size_hw is not None and scale_hw is not None:
        raise ValueError(
            f"{func}(): only one of size and scale_factor may be given. "
            f"Received: size={size!r}, scale_factor={scale_factor!r}"
        )
    if size_hw is None and scale_hw is None:
        raise ValueError(
            f"{func}(): either size or scale_factor must be given. "
            f"Received: size=None, scale_factor=None"
        )
    if recompute and size_hw is not None:
        raise ValueError(
            f"{func}(): recompute_scale_factor is not meaningful with an explicit size. "
            f"Received: size={size!r}, recompute_scale_factor=True"
        )
    if mode != "bilinear" and corners is not None:
        raise ValueError(
            f"{func}(): align_corners can only be set with mode='bilinear'. "
            f"Received: mode={mode!r}, align_corners={align_corners!r}"
        )
    return ResizeParams(size_hw, scale_hw, mode, bool(corners), bool(recompute))


def interpolate_output_size(in_size: int, scale: float) -> int:
    """``floor(in_size * scale)`` in double precision, as PyTorch."""
    return int(math.floor(float(in_size) * scale))


def interpolate_geometry(func: str, in_hw: tuple[int, int], params: ResizeParams) -> ResizeGeometry:
    """Output size and coordinate scales of ``interpolate`` on a ``(H, W)`` plane."""
    if params.size is not None:
        out = params.size
        scales: tuple[float | None, float | None] = (None, None)
    else:
        out = (
            interpolate_output_size(in_hw[0], params.scale_factor[0]),
            interpolate_output_size(in_hw[1], params.scale_factor[1]),
        )
        scales = (None, None) if params.recompute_scale_factor else params.scale_factor
    if min(in_hw) < 1 or min(out) < 1:
        raise ValueError(
            f"{func}(): input and output sizes must be greater than 0 (input {tuple(in_hw)}, "
            f"output {tuple(out)}). Received: size={params.size}, "
            f"scale_factor={params.scale_factor}"
        )
    if max(out) > MAX_PARAM:
        raise ValueError(
            f"{func}(): the output size {tuple(out)} exceeds {MAX_PARAM}. "
            f"Received: scale_factor={params.scale_factor}"
        )
    return ResizeGeometry(tuple(out), scales, params.align_corners, params.mode)


def pixel_shuffle_shape(
    func: str, shape: tuple[int, ...], factor: Any, name: str, inverse: bool, arg: str = "x"
) -> tuple[int, ...]:
    """Output shape of ``pixel_shuffle`` (``(*, C r^2, H, W) -> (*, C, H r, W r)``) or, with
    ``inverse``, of ``pixel_unshuffle``; ``factor`` is checked under ``name``, the array's
    shape under ``arg``."""
    r = check_int(factor, name, func, min_value=1)
    if len(shape) < 3:
        raise ValueError(
            f"{func}(): {arg} must have at least 3 dimensions (*, C, H, W). "
            f"Received: {arg} with shape {tuple(shape)}"
        )
    *lead, c, h, w = shape
    if not inverse:
        if c % (r * r):
            raise ValueError(
                f"{func}(): the channel count {c} must be divisible by {name}**2 = {r * r}. "
                f"Received: {name}={r}, {arg} with shape {tuple(shape)}"
            )
        out = (*lead, c // (r * r), h * r, w * r)
    else:
        if h % r or w % r:
            raise ValueError(
                f"{func}(): the height {h} and width {w} must be divisible by {name}. "
                f"Received: {name}={r}, {arg} with shape {tuple(shape)}"
            )
        out = (*lead, c * r * r, h // r, w // r)
    # (in a graph model the batch entry is None: the per-sample size is what can overflow)
    check_numel(tuple(1 if s is None else s for s in out), "output", func)
    return tuple(out)


__all__ = [
    "ConvGeometry",
    "conv_output_size",
    "pool_output_size",
    "conv2d_geometry",
    "conv2d_padding",
    "pool2d_geometry",
    "adaptive_pool2d_output_size",
    "adaptive_windows",
    "unpool2d_geometry",
    "PadGeometry",
    "PAD_MODES",
    "PAD_MODE_CODES",
    "pad2d_sides",
    "pad2d_geometry",
    "conv2d_output_shape",
    "pool2d_params",
    "RESIZE_MODES",
    "ResizeParams",
    "ResizeGeometry",
    "interpolate_params",
    "interpolate_output_size",
    "interpolate_geometry",
    "pixel_shuffle_shape",
    "conv_transpose_output_size",
    "conv_transpose2d_params",
    "conv_transpose2d_geometry",
    "conv_transpose2d_output_padding",
]
