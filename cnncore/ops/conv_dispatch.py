"""Which algorithm computes each convolution pass -- the one place that decides.

cnncore's convolution kernels (``cnncore/ops/_conv.pyx``) implement three algorithms:

``"gemm"``
    im2col of a block of output rows, then one BLAS GEMM per block (the default).
``"direct"``
    vectorizable loops for few channels per group on large images, and for the forward pass
    of few output channels over deep windows.
``"winograd"``
    Winograd F(2x2, 3x3) for 3x3, stride-1, dilation-1 convolutions with enough channels.
``"depthwise"``
    loops over the planes of a depthwise convolution (one input channel per group, any
    channel multiplier): MobileNet's 3x3 convolutions, which GEMM would cut into one tiny
    product per channel.
``"blocked"``
    channel-blocked direct convolution: blocks of 16-32 output channels by a row of output
    pixels accumulated in vector registers (C microkernels built per SIMD level), with no
    im2col; forward, unit-stride input gradient and weight gradient.  ResNet's 3x3
    convolutions on small images (16-128 channels per group, any stride).

:func:`select_conv_algorithm` picks one per shape and pass (``"forward"``, ``"input"`` or
``"weight"`` gradient) from the thresholds below; :func:`conv_algorithm` forces one for a
block of code (tests, benchmarks, or to compare algorithms)::

    with cnncore.conv_algorithm("gemm"):
        y = cnncore.conv2d(x, w)

A forced algorithm that does not apply to a shape (``"winograd"`` for a 5x5 kernel,
``"direct"`` for a weight gradient, ``"depthwise"`` for two input channels per group,
``"blocked"`` for a strided input gradient) runs GEMM.  All algorithms give the same result up to
rounding (they may differ in the last bits); each is bit-identical for any thread count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .._config import _selected_simd
from .._geometry import ConvGeometry
from .._shared import ConvAlgorithm

__all__ = ["ALGORITHMS", "conv_algorithm", "forced_conv_algorithm", "select_conv_algorithm"]

#: The algorithm names :func:`conv_algorithm` accepts ("auto" restores the automatic choice).
ALGORITHMS = ("auto", "gemm", "direct", "winograd", "depthwise", "blocked")

_CODES = {
    "gemm": ConvAlgorithm.ALGO_GEMM,
    "direct": ConvAlgorithm.ALGO_DIRECT,
    "winograd": ConvAlgorithm.ALGO_WINOGRAD,
    "depthwise": ConvAlgorithm.ALGO_DEPTHWISE,
    "blocked": ConvAlgorithm.ALGO_BLOCKED,
}
_NAMES = {int(code): name for name, code in _CODES.items()}

# The algorithm forced by the innermost ``conv_algorithm`` block (None: automatic).  A context
# variable, so a block in one thread does not change the choice in another.
_forced: ContextVar[int | None] = ContextVar("cnncore_conv_algorithm", default=None)


@contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
    """Context manager: run every convolution inside the block with one algorithm.

    Parameters
    ----------
    name : {"auto", "gemm", "direct", "winograd", "depthwise", "blocked"}
        The algorithm; ``"auto"`` restores the per-shape choice inside an outer block.

    Notes
    -----
    Blocks nest; the innermost wins.  The setting is per thread (a context variable).  Where
    the forced algorithm does not apply to a convolution, it runs GEMM.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.ones((1, 1, 5, 5), np.float32); w = np.ones((1, 1, 3, 3), np.float32)
    >>> with cnncore.conv_algorithm("gemm"):
    ...     y = cnncore.conv2d(x, w)
    """
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(
            f"conv_algorithm(): name must be one of {list(ALGORITHMS)}. Received: name={name!r}"
        )
    token = _forced.set(None if name == "auto" else _CODES[name])
    try:
        yield
    finally:
        _forced.reset(token)


def forced_conv_algorithm() -> str | None:
    """The algorithm forced by the innermost :func:`conv_algorithm` block, or None."""
    code = _forced.get()
    return None if code is None else _NAMES[code]


def algorithm_name(code: int) -> str:
    """The name of a kernel algorithm code (``"gemm"``, ``"direct"``, ``"winograd"``,
    ``"depthwise"`` or ``"blocked"``)."""
    return _NAMES[int(code)]


# Direct loops beat im2col + GEMM for large images with few channels per group: im2col then
# writes kh*kw copies of a big image for a GEMM too thin to use BLAS well (e.g. 1->8 channels
# on 256x256: 1.2 vs 1.8 ms forward on 2 cores).  On MNIST-sized images GEMM wins even with
# one input channel (0.26 vs 0.50 ms for 64x1x28x28 -> 6, k5), so it is the default.
_DIRECT_MAX_CHANNELS = 2
_DIRECT_MIN_OUTPUT_PIXELS = 128 * 128
# The forward pass also goes direct for few output channels and deep windows at unit stride:
# the direct kernel keeps a block of outputs in registers over all C*kh*kw taps, while a GEMM
# with M = C_out <= 16 is dominated by im2col and BLAS packing (64x6x14x14 -> 16, k5:
# 0.35 vs 0.51 ms; 64x3x32x32 -> 16, k3: 0.48 vs 0.92 ms; 64x1x28x28 -> 6, k5 (25 taps) and
# 64x16x10x10 -> 32, k3 stay GEMM).  Its input gradient is a correlation with C_in outputs
# and stays GEMM (0.80 vs 0.49 ms for the LeNet shape).
_DIRECT_FWD_MAX_OUT_CHANNELS = 16
_DIRECT_FWD_MIN_TAPS = 27
# ... as long as a thread's zero-padded copy of one sample's channels stays small (elements).
_DIRECT_FWD_MAX_SCRATCH = 1 << 20


# 3x3 / stride 1 / dilation 1 convolutions with enough channels per group run Winograd
# F(2x2, 3x3): 2.25x fewer multiplications, as 16 BLAS GEMMs per block of tiles (see
# cnncore/ops/_conv.pyx).  Speed-up over im2col + GEMM (forward / input grad / weight grad, float32,
# 2 threads): 64x32x14x14 -> 64: 1.44 / 1.28 / 1.05; 32x64x32x32 -> 64: 1.82 / 1.63 / 1.30;
# 64x16x28x28 -> 16: 1.74 / 1.58 / 1.37.  Below 16 channels per group or on small images the
# transforms cost more than they save: 64x8x28x28 -> 16: 0.94 / 0.75 / 0.75; 64x32x7x7 -> 64:
# 0.71 / 0.54 / 0.70; 64x64x4x4 -> 64: 0.71 / 0.64 / 0.71.
# Depthwise convolutions (one input channel per group, groups > 1) always run the depthwise
# kernels, all three passes: fwd+bwd of 32x64x56x56, k3 p1, float32, 2 threads, took
# DEPTHWISE_MS against GEMM_MS with im2col + one GEMM per channel (see benchmarks/bench_conv.py
# --suite depthwise).  A single input channel (groups == 1) keeps the rules below.
_WINOGRAD_MIN_CHANNELS = 16
_WINOGRAD_MIN_OUTPUT_PIXELS = 144

# The channel-blocked direct kernels keep 16-32 output channels (AVX-512; 8-16 with AVX2) in
# vector lanes and a row of outputs in registers. With AVX-512 they beat Winograd and GEMM
# on all three passes of ResNet's CIFAR convolutions (N=128, 16-64 channels, 8-32 px, stride
# 1 and 2; float32, 2 threads: see README "Performance" and benchmarks/bench_conv.py --suite
# resnet). With AVX2 (half the vector width) they still beat GEMM on the strided and the
# small-image ones, but Winograd's 2.25x fewer multiplications win where it applies (16-32
# channels at 16x16-32x32, stride 1). Measured on 3x3 kernels only, so other kernel sizes
# keep the rules below (a forced "blocked" runs any kernel size). They need a vector's worth
# of output channels (of the pass: C_in/groups for the input gradient), and beyond ~128
# channels per group GEMM and Winograd have the edge; the zero-padded copy of a sample's
# channels (and, for the weight gradient, its transposed dy) must stay small, as for the
# direct kernel.
_BLOCKED_MIN_OUT_CHANNELS = 16
_BLOCKED_MIN_IN_CHANNELS = 16
_BLOCKED_MAX_CHANNELS = 128
# ... except that Winograd wins at stride 1 from 64 channels on images of 32x32 outputs
# (32x64x32x32 -> 64, float32, 2 threads, AVX-512: forward / input / weight gradient
# 21.6 / 23.0 / 30.1 ms against 23.3 / 27.1 / 33.1; at 14x14, 64x32 -> 64, they tie).
_WINOGRAD_OVER_BLOCKED_CHANNELS = 64
_WINOGRAD_OVER_BLOCKED_PIXELS = 32 * 32


def blocked_eligible(w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, which: str) -> bool:
    """Whether the automatic choice runs the channel-blocked kernel for this pass."""
    k, cg, kh, kw = w_shape
    kg = k // groups
    n_out, n_in = (cg, kg) if which == "input" else (kg, cg)
    if (kh, kw) != (3, 3) or (which == "input" and geo.stride != (1, 1)):
        return False
    if (
        geo.stride == geo.dilation == (1, 1)
        and min(cg, kg) >= _WINOGRAD_OVER_BLOCKED_CHANNELS
        and geo.out[0] * geo.out[1] >= _WINOGRAD_OVER_BLOCKED_PIXELS
    ):
        return False  # Winograd's 2.25x fewer multiplications win
    if not (
        _BLOCKED_MIN_OUT_CHANNELS <= n_out <= _BLOCKED_MAX_CHANNELS
        and _BLOCKED_MIN_IN_CHANNELS <= n_in <= _BLOCKED_MAX_CHANNELS
    ):
        return False
    rows = (geo.out[0] - 1) * geo.stride[0] + (kh - 1) * geo.dilation[0] + 1
    cols = (geo.out[1] + 32) * geo.stride[1] + (kw - 1) * geo.dilation[1]
    return max(cg, kg) * rows * cols <= _DIRECT_FWD_MAX_SCRATCH


def select_conv_algorithm(
    w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, which: str
) -> int:
    """The kernel algorithm code (a :class:`cnncore._shared.ConvAlgorithm`) for one pass.

    ``which`` is ``"forward"``, ``"input"`` or ``"weight"`` (gradient); ``geo`` is the
    convolution's resolved geometry and ``w_shape`` the weight's shape.  A
    :func:`conv_algorithm` block overrides the choice.
    """
    forced = _forced.get()
    if forced is not None:
        return forced
    k, cg, kh, kw = w_shape
    if cg == 1 and groups > 1:
        return ConvAlgorithm.ALGO_DEPTHWISE
    # With AVX-512 the blocked kernels run at about twice their AVX2 rate: there they come
    # before Winograd; at lower levels only where Winograd does not apply (strided, small
    # images).  See _BLOCKED_MIN_OUT_CHANNELS.
    blocked = blocked_eligible(w_shape, groups, geo, which)
    if blocked and _selected_simd() == "avx512":
        return ConvAlgorithm.ALGO_BLOCKED
    if (
        (kh, kw) == (3, 3)
        and geo.stride == (1, 1)
        and geo.dilation == (1, 1)
        and min(cg, k // groups) >= _WINOGRAD_MIN_CHANNELS
        and geo.out[0] * geo.out[1] >= _WINOGRAD_MIN_OUTPUT_PIXELS
        and (which != "input" or max(geo.padding) <= 2)
    ):
        return ConvAlgorithm.ALGO_WINOGRAD
    if blocked:
        return ConvAlgorithm.ALGO_BLOCKED
    if which == "weight":
        return ConvAlgorithm.ALGO_GEMM
    forward = which == "forward"
    if cg <= _DIRECT_MAX_CHANNELS and geo.out[0] * geo.out[1] >= _DIRECT_MIN_OUTPUT_PIXELS:
        return ConvAlgorithm.ALGO_DIRECT
    hp = geo.out[0] + (kh - 1) * geo.dilation[0]  # rows and columns the windows read
    wp = geo.out[1] + (kw - 1) * geo.dilation[1] + 16
    if (
        forward
        and geo.stride == (1, 1)
        and k // groups <= _DIRECT_FWD_MAX_OUT_CHANNELS
        and cg * kh * kw >= _DIRECT_FWD_MIN_TAPS
        and cg * hp * wp <= _DIRECT_FWD_MAX_SCRATCH
    ):
        return ConvAlgorithm.ALGO_DIRECT
    return ConvAlgorithm.ALGO_GEMM
