"""Which algorithm computes each convolution pass -- the one place that decides.

cnncore's convolution kernels (``cnncore/ops/_conv.pyx``) implement these algorithms
(:data:`REGISTRY` says where each applies):

``"gemm"``
    im2col of a block of output rows, then one BLAS GEMM per block (the default).
``"direct"``
    vectorizable loops for few channels per group on large images, and for the forward pass
    of few output channels over deep windows.
``"winograd"``
    Winograd F(2x2, 3x3) for 3x3, stride-1, dilation-1 convolutions with enough channels.
``"winograd4"``
    Winograd F(4x4, 3x3) for the same convolutions: 4x fewer multiplications than GEMM
    (F(2x2): 2.25x), at a cost in float32 accuracy.  Largest error over the largest exact
    value, against float64, unit-normal data, batch 8 (forward / input gradient / weight
    gradient): 64 -> 64 channels, 16x16: 2.8e-6 / 3.1e-6 / 2.5e-6; 16 -> 24 channels, 13x11:
    3.0e-6 / 3.1e-6 / 2.0e-6 -- about 10x F(2x2)'s (3.8e-7 / 3.6e-7 / 3.6e-7) and GEMM's
    (5.6e-7 / 1.8e-7 / 3.1e-7); float64: 1e-14.  Its interpolation points are 0, +-1, +-2
    (the transforms' entries up to 8 and 1/24).  Its transforms run over the channels of
    one tile at a time (the blocked kernels' layout), so small images cost no more than
    large ones: ResNet's 3x3 convolutions from 32 channels.
``"depthwise"``
    loops over the planes of a depthwise convolution (one input channel per group, any
    channel multiplier): MobileNet's 3x3 convolutions, which GEMM would cut into one tiny
    product per channel.
``"blocked"``
    channel-blocked direct convolution: blocks of 16-32 output channels by a row of output
    pixels accumulated in vector registers (C microkernels built per SIMD level), with no
    im2col; forward, input gradient (strided ones in stride phases: unit-stride
    correlations with each phase's taps, interleaved) and weight gradient.  ResNet's 3x3
    convolutions on small images (16-128 channels per group, any stride; with AVX2 also
    grouped ones of 8 channels per group, one vector).
``"rows"``
    row-vectorized direct convolution: the vector lanes along a row of output pixels,
    blocks of output channels x rows in registers (C microkernels built per SIMD level), no
    im2col; all three passes at unit stride.  Few channels on small images, where the
    blocked kernels leave lanes idle: LeNet's 5x5 convolutions, a first layer's one input
    channel, and (AVX-512) grouped 3x3 convolutions of 8-15 channels per group.

``"blocked"`` and ``"rows"`` are float32 only: their microkernels are not built for float64
(a fifth of each SIMD build's compile time, for a dtype used to check gradients), so a
float64 convolution runs GEMM, direct, Winograd or depthwise -- the thresholds and
autotuning never pick the two for it, and forcing one of them runs GEMM, as for any pass an
algorithm does not apply to -- as PyTorch, whose CPU convolutions take oneDNN's kernels for
float32 only and run float64 on its own ones, without an error or a warning.

:func:`select_conv_algorithm` picks one per shape and pass (``"forward"``, ``"input"`` or
``"weight"`` gradient), in this order:

1. the algorithm forced by a :func:`conv_algorithm` block (tests, benchmarks, or to compare
   algorithms)::

       with cnncore.conv_algorithm("gemm"):
           y = cnncore.conv2d(x, w)

2. a tuned choice: the fastest algorithm *measured on this machine* for this pass, shape and
   dtype -- by :func:`cnncore.tune` ahead of time, by autotuning on first use
   (:func:`set_autotune`, ``CNNCORE_AUTOTUNE=1``), or read from the cache file
   ``CNNCORE_TUNE_CACHE`` (see :mod:`cnncore.ops.conv_tune`);
3. otherwise the thresholds below (:func:`heuristic_conv_algorithm`), fitted on one CPU.

Autotuning is opt-in, like cuDNN's benchmark mode: timing costs milliseconds per new shape,
and which of two near-equal algorithms wins a measurement can change from run to run -- so a
run that must repeat bit for bit (``fit(seed=...)``) would not.  The default is
deterministic; ``tune()`` with a cache file gives measured choices that repeat.

A forced algorithm that does not apply to a shape (``"winograd"`` for a 5x5 kernel,
``"direct"`` for a weight gradient, ``"depthwise"`` for two input channels per group,
``"blocked"`` for a dilated strided input gradient or one whose stride exceeds the
kernel, ``"rows"`` for any strided pass, ``"blocked"`` or ``"rows"`` in float64) runs GEMM.
All algorithms give the same result up to rounding (they may differ in the last bits); each
is bit-identical for any thread count, and no choice depends on the thread count (tuned
choices are measured at a fixed one), so results never do.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

import numpy as np

from .._config import _selected_simd
from .._geometry import ConvGeometry
from .._shared import ConvAlgorithm
from . import conv_tune
from .conv_tune import ConvCase

__all__ = [
    "ALGORITHMS",
    "REGISTRY",
    "conv_algorithm",
    "forced_conv_algorithm",
    "select_conv_algorithm",
    "heuristic_conv_algorithm",
    "eligible_algorithms",
    "set_autotune",
    "get_autotune",
    "tuned_algorithms",
    "clear_tuning",
    "tuning",
    "use_tuned",
]


class Algorithm(NamedTuple):
    """A convolution algorithm of the kernels: its code (a
    :class:`cnncore._shared.ConvAlgorithm`, passed to every kernel entry point) and
    ``applies(case)``: whether the kernels run it for a pass (:class:`ConvCase`) -- where it
    does not, they run GEMM instead, so autotuning times only the algorithms that apply."""

    code: int
    applies: Callable[[ConvCase], bool]


def _direct_applies(case: ConvCase) -> bool:
    # no weight-gradient kernel; the input gradient's needs unit stride
    return case.which == "forward" or (case.which == "input" and case.geo.stride == (1, 1))


def _winograd_applies(case: ConvCase) -> bool:
    geo = case.geo
    return (
        geo.kernel == (3, 3)
        and geo.stride == (1, 1)
        and geo.dilation == (1, 1)
        and (case.which != "input" or max(geo.padding) <= 2)
    )


def blocked_input_applies(geo: ConvGeometry) -> bool:
    """Whether the blocked kernels run an input gradient: at unit stride any, strided ones
    (in stride phases, ``blk_backward_input_strided`` in ``_conv.pyx``) without dilation and
    with each stride at most the kernel's size, so that every phase has a tap."""
    return geo.stride == (1, 1) or (
        geo.dilation == (1, 1) and geo.stride[0] <= geo.kernel[0] and geo.stride[1] <= geo.kernel[1]
    )


#: The algorithms whose kernels are float32 only (float64 runs GEMM where they are asked for).
FLOAT32_ONLY = frozenset({"blocked", "rows"})
_F32_ONLY_CODES = frozenset({int(ConvAlgorithm.ALGO_BLOCKED), int(ConvAlgorithm.ALGO_ROWS)})
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


def is_float64(dtype: Any) -> bool:
    """Whether ``dtype`` (a NumPy dtype, a type or a name; None: not known) is float64 --
    the dtype without the ``"blocked"`` and ``"rows"`` kernels."""
    if dtype is None or dtype is _FLOAT32:
        return False
    return dtype is _FLOAT64 or np.dtype(dtype) == _FLOAT64


def _blocked_applies(case: ConvCase) -> bool:
    # float32; strided input gradients in phases: no dilation, each stride at most the
    # kernel's size
    return case.dtype == "float32" and (case.which != "input" or blocked_input_applies(case.geo))


def _rows_applies(case: ConvCase) -> bool:
    return case.dtype == "float32" and case.geo.stride == (1, 1)  # unit stride, all passes


#: Name -> :class:`Algorithm`, for every algorithm the kernels implement.  A new algorithm is
#: one entry here: ``conv_algorithm(name)`` then forces it (:data:`ALGORITHMS` lists these
#: names) and autotuning times it wherever it applies.
REGISTRY: dict[str, Algorithm] = {
    "gemm": Algorithm(ConvAlgorithm.ALGO_GEMM, lambda case: True),
    "direct": Algorithm(ConvAlgorithm.ALGO_DIRECT, _direct_applies),
    "winograd": Algorithm(ConvAlgorithm.ALGO_WINOGRAD, _winograd_applies),
    "winograd4": Algorithm(ConvAlgorithm.ALGO_WINOGRAD4, _winograd_applies),
    "depthwise": Algorithm(ConvAlgorithm.ALGO_DEPTHWISE, lambda case: case.w_shape[1] == 1),
    "blocked": Algorithm(ConvAlgorithm.ALGO_BLOCKED, _blocked_applies),
    "rows": Algorithm(ConvAlgorithm.ALGO_ROWS, _rows_applies),
}

#: The algorithm names :func:`conv_algorithm` accepts ("auto" restores the automatic choice).
ALGORITHMS = ("auto", *REGISTRY)

_CODES = {name: algo.code for name, algo in REGISTRY.items()}
_NAMES = {int(code): name for name, code in _CODES.items()}

# The algorithm forced by the innermost ``conv_algorithm`` block (None: automatic).  A context
# variable, so a block in one thread does not change the choice in another.
_forced: ContextVar[int | None] = ContextVar("cnncore_conv_algorithm", default=None)


@contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
    """Context manager: run every convolution inside the block with one algorithm.

    Parameters
    ----------
    name : {"auto", "gemm", "direct", "winograd", "winograd4", "depthwise", "blocked", "rows"}
        The algorithm; ``"auto"`` restores the per-shape choice inside an outer block.

    Notes
    -----
    Blocks nest; the innermost wins.  The setting is per thread (a context variable).  Where
    the forced algorithm does not apply to a convolution, it runs GEMM -- also ``"blocked"``
    and ``"rows"`` in float64, whose kernels are float32 only (see the module docstring).

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
    ``"winograd4"``, ``"depthwise"``, ``"blocked"`` or ``"rows"``)."""
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
# ... and enough tiles in the batch: a batch of one small image is one or two tasks of
# Winograd (one thread) and its transforms do not pay (1x32x16x16 -> 32, float32, 2 threads:
# 0.34 ms against GEMM's 0.12; 4x32x16x16 -> 32: 1.12 against 1.63).
_WINOGRAD_MIN_BATCH_PIXELS = 512
# F(4x4, 3x3) instead of F(2x2, 3x3) for 16-64 channels per group on images of at least
# 8x8 outputs (also below _WINOGRAD_MIN_OUTPUT_PIXELS, where it beats the blocked kernels
# with AVX2): 4x instead of 2.25x fewer multiplications, for a float32 error ~10x larger
# (see "winograd4" above).  float32, 2 threads, N=128, AVX2 build (loaded 2-core VM, ms,
# forward / input / weight gradient): 16 -> 16 at 32x32: F(4x4) 4.6 / 4.4 / 4.9, F(2x2)
# 6.6 / 6.6 / 6.8, blocked 4.5 / 4.5 / 5.0; 32 -> 32 at 16x16: 2.6 / 2.7 / 3.2 against
# 4.8 / 5.2 / 5.4 and 3.9 / 4.0 / 3.9; 64 -> 64 at 8x8: 2.2 / 2.2 / 2.8 against 4.5 / 4.8 /
# 4.7 and 3.7 / 3.9 / 4.4.  Not measured beyond 64 channels: F(2x2) there.
_WINOGRAD4_MAX_CHANNELS = 64
_WINOGRAD4_MIN_OUTPUT = 8

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
# Their strided input gradient runs in stride phases (one unit-stride correlation of dy per
# phase with that phase's taps, interleaved into dx): with AVX-512 it beats GEMM's col2im
# (float32, N=128, one thread's CPU time, 2-core AVX-512 VM at load ~1.2, ms, two
# interleaved runs: ResNet's 32 -> 64 transition, 16x16 -> 8x8: 3.27-3.42 against GEMM's
# 4.53-5.13; 16 -> 32, 32x32 -> 16x16: 3.71-3.83 against 5.51-5.56); with AVX2 GEMM keeps
# it (loaded VM: 5.4 against 4.8; 5.8 against 5.7).  It is
# also conv_transpose2d's forward: DCGAN's k3 s2 p1 op1 upsampler (32x64x16x16 -> 32) 3.6
# against GEMM's 4.2, and its k4 s2 p1 one (2x2 taps in each of the 4 phases) 5.1 against
# 6.4 -- the one 4x4 kernel the blocked kernels take by default.
_BLOCKED_STRIDED_INPUT_KERNEL = (4, 4)
_BLOCKED_MIN_OUT_CHANNELS = 16
_BLOCKED_MIN_IN_CHANNELS = 16
_BLOCKED_MAX_CHANNELS = 128
# ... except that Winograd wins at stride 1 from 64 channels on images of 32x32 outputs
# (32x64x32x32 -> 64, float32, 2 threads, AVX-512: forward / input / weight gradient
# 21.6 / 23.0 / 30.1 ms against 23.3 / 27.1 / 33.1; at 14x14, 64x32 -> 64, they tie).
_WINOGRAD_OVER_BLOCKED_CHANNELS = 64
_WINOGRAD_OVER_BLOCKED_PIXELS = 32 * 32
# With AVX-512, F(4x4, 3x3) (channel-minor transforms, see cnncore/ops/_conv.pyx) beats the
# blocked kernels on all three passes of ResNet's stages 2 and 3 (N=128, float32, 2 threads,
# loaded 2-core VM, ms, forward / input / weight gradient): 32 -> 32 at 16x16: 2.0-2.7 /
# 2.3-2.5 / 2.1-2.6 against 2.4-2.6 / 2.5-2.6 / 2.5-2.6; 64 -> 64 at 8x8: 1.8-2.0 / 1.8-2.0
# / 1.7-1.9 against 2.2-2.4 / 2.1-2.4 / 2.7-3.0; and at 7x7 (ResNet on 28x28 images, a
# partial tile per row and column): 1.8 / 2.0 / 2.2 against 2.1 / 2.3 / 2.8.  With 32
# channels the partial tiles lose (32 -> 32 at 14x14: 2.8 / 2.8 / 2.5 against 2.3 / 2.4 /
# 2.5), and with 16 its transforms cost more than they save (16 -> 16 at 32x32: 3.8 / 3.8
# / 4.3 against 2.8 / 3.0 / 4.2): the blocked kernels keep those, and grouped convolutions
# (32 channels per group, g=4, 32x128x16x16: F(4x4) forward 1.4x torch's time, blocked 1.0x).
_WINOGRAD4_OVER_BLOCKED_CHANNELS = 64
_WINOGRAD4_OVER_BLOCKED_MIN_OUTPUT = 7
_WINOGRAD4_OVER_BLOCKED_WHOLE_TILES_CHANNELS = 32  # ... when the output is whole 4x4 tiles
# Since the blocked forward stores through a register transpose, it beats F(4x4)'s forward
# at 32 -> 32 channels on 16x16 (N=128, float32, 2 threads, AVX-512, ms, five interleaved
# rounds: 1.67-1.85 against 1.95-2.03; torch ~2.15): 32-channel whole tiles keep F(4x4)
# for the gradients only.
# ... and its forward from 32 channels into (or out of) 64 also with partial tiles: the
# README CNN's second convolution (64x32x14x14 -> 64, k3 p1, float32, 2 threads, AVX-512,
# ms): F(4x4) 1.35-1.39 against blocked 1.50-1.69 and F(2x2) 1.53 (torch 1.41-1.62).
# ... and GEMM beats the AVX-512 blocked forward on a batch of a few small images, whose
# rows of fewer than 16 outputs leave half the vector lanes idle (float32, 64 -> 64 at 8x8,
# quiet 2-core AVX-512 VM, us, 1 / 2 threads: N=1 GEMM 82 / 81 against blocked 118 / 118,
# N=2 148 / 87 against 140 / 125, N=4 276 / 158 against 214 / 161; 32 -> 32 at 16x16, N=1:
# blocked 53 against GEMM 90).  ResNet-20's stage 3 at batch 1.  Stride 1 only (its strided
# 32 -> 64 at 8x8 outputs, N=1: blocked 45 against GEMM 50).  With AVX2 the blocked kernel
# keeps these (87 us against GEMM's 96 at N=1).  Since the blocked kernels pack their
# weights in L1-sized tiles (the packing had cost more than the convolution at batch 1),
# the blocked forward wins from ~50 batch pixels on (one thread's CPU time, loaded 2-core
# AVX-512 VM, us: 64 -> 64 at 8x8, N=1: 75 against GEMM 92, N=2: 115 against 161; at 7x7,
# N=1: 72 against 81; 32 -> 32 at 8x8, N=1: 29 against 35; 64 -> 64 at 4x4, N=1: 44
# against 35, N=4: 89 against 111).
# F(4x4)'s weight gradient also beats the blocked one from 32 into 64 channels on partial
# tiles: the README CNN's second conv (64x32x14x14 -> 64, float32, 2 threads, AVX-512, ms,
# two runs: 1.25 / 1.26 against 1.61 / 1.54; torch 1.53-1.55).  At 32 -> 32 on 14x14 they
# tie (1.58-1.71 against 1.61-1.68): the blocked kernel keeps it.
_WINOGRAD4_WEIGHT_MIN_CHANNELS = 32
_WINOGRAD4_WEIGHT_MIN_MAX_CHANNELS = 64
_GEMM_OVER_BLOCKED_MAX_BATCH_PIXELS = 32
_GEMM_OVER_BLOCKED_MAX_WIDTH = 15
# F(4x4)'s forward transforms its weights at every call, which a small batch does not pay
# back: below this many output pixels in the batch (N * Ho * Wo) the AVX-512 forward stays
# on the blocked kernels (inference at batch 1-16).  float32, quiet-ish 2-core AVX-512 VM,
# us, one thread's CPU time / 2 threads, blocked against F(4x4): 32 -> 64 at 14x14 (the
# README CNN's second conv), N=8: 346 / 207 against 463-482 / 273; N=16: 703 / 360 against
# 713 / 411; N=32: 1498 / 753 against 1255 / 750; 64 -> 64 at 7x7, N=8: 191 / 134 against
# 297 / 185, N=16: 364 / 209 against 409 / 255.
_WINOGRAD4_FWD_MIN_BATCH_PIXELS = 4096


def _winograd4_over_blocked(cg: int, kg: int, geo: ConvGeometry, w4: bool) -> bool:
    """AVX-512: whether F(4x4) beats the blocked kernels (``w4``: it applies, but for the
    output size)."""
    ch = min(cg, kg)
    if not w4 or max(cg, kg) > _WINOGRAD4_MAX_CHANNELS:
        return False
    if ch >= _WINOGRAD4_OVER_BLOCKED_CHANNELS:
        return min(geo.out) >= _WINOGRAD4_OVER_BLOCKED_MIN_OUTPUT
    return (
        ch >= _WINOGRAD4_OVER_BLOCKED_WHOLE_TILES_CHANNELS
        and min(geo.out) >= _WINOGRAD4_MIN_OUTPUT
        and geo.out[0] % 4 == 0
        and geo.out[1] % 4 == 0
    )


# Grouped 3x3 convolutions (unit stride) with 8-32 channels per group: what each pass runs
# (float32, 2 threads, N=32, 128 -> 128 channels at 16x16, ms, forward / input / weight
# gradient, quiet 2-core VM).  8 channels per group (g=16): with AVX-512 the row kernels
# (pixels in the lanes; the blocked kernels would leave half of the 16 lanes idle) 0.77 /
# 0.80 / 1.56 against the previous direct / GEMM / GEMM 1.03 / 1.75 / 1.74 (blocked: 1.21 /
# 1.23 / 1.73); with AVX2 (8 lanes) the blocked kernels 1.04 / 1.17 / 1.18 against direct
# / GEMM / GEMM 1.11 / 2.49 / 3.04 (rows 1.33 / 1.45 / 1.90).  16 per group (g=8), AVX2:
# blocked forward and weight gradient 1.82 / 1.79 against F(4x4)'s 2.02-2.12 / 2.47 (its
# input gradient keeps F(4x4), 2.00 against 1.96).  32 per group (g=4), AVX-512: F(4x4)'s
# weight gradient 1.84 against blocked 2.40 (forward and input gradient stay blocked: 1.87 /
# 1.83 against 2.00 / 1.90).
_GROUPED_MIN_CHANNELS = 8
_GROUPED_ROWS_MAX_CHANNELS = 15  # AVX-512: the row kernels below a vector of channels
_GROUPED_BLOCKED_AVX2_CHANNELS = 16


def _grouped_choice(
    w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, which: str
) -> int | None:
    """The algorithm for a grouped (not depthwise) 3x3 convolution where the measurements
    above chose one, else None (the rules below decide)."""
    k, cg, kh, kw = w_shape
    kg = k // groups
    if (
        groups == 1
        or (kh, kw) != (3, 3)
        or geo.stride != (1, 1)
        or geo.dilation != (1, 1)
        or min(cg, kg) < _GROUPED_MIN_CHANNELS
        or max(cg, kg) > _WINOGRAD4_MAX_CHANNELS
    ):
        return None
    rows = geo.out[0] + 3 + kh - 1  # the row kernels' padded planes (see _rows_eligible)
    cols = geo.out[1] + 32 + kw - 1
    if max(cg, kg) * rows * cols > _DIRECT_FWD_MAX_SCRATCH:
        return None
    simd = _selected_simd()
    if max(cg, kg) <= _GROUPED_ROWS_MAX_CHANNELS:
        if simd == "avx512":
            return ConvAlgorithm.ALGO_ROWS
        if simd == "avx2" and blocked_eligible(w_shape, groups, geo, which, min_channels=8):
            return ConvAlgorithm.ALGO_BLOCKED
        return None
    if (
        simd == "avx2"
        and cg == kg == _GROUPED_BLOCKED_AVX2_CHANNELS
        and which != "input"
        and blocked_eligible(w_shape, groups, geo, which)
    ):
        return ConvAlgorithm.ALGO_BLOCKED
    if (
        simd == "avx512"
        and which == "weight"
        and min(cg, kg) >= _WINOGRAD4_OVER_BLOCKED_WHOLE_TILES_CHANNELS
        and min(geo.out) >= _WINOGRAD4_MIN_OUTPUT
    ):
        return ConvAlgorithm.ALGO_WINOGRAD4
    return None


def blocked_eligible(
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    which: str,
    min_channels: int = _BLOCKED_MIN_OUT_CHANNELS,
) -> bool:
    """Whether the automatic choice runs the channel-blocked kernel for this pass
    (``min_channels``: the fewest output and input channels per group it takes)."""
    k, cg, kh, kw = w_shape
    kg = k // groups
    n_out, n_in = (cg, kg) if which == "input" else (kg, cg)
    strided_input = which == "input" and geo.stride != (1, 1)
    if strided_input and (not blocked_input_applies(geo) or _selected_simd() != "avx512"):
        return False  # strided input gradients: GEMM wins with AVX2 (see above)
    if (kh, kw) != (3, 3) and not (strided_input and (kh, kw) == _BLOCKED_STRIDED_INPUT_KERNEL):
        return False
    if (
        geo.stride == geo.dilation == (1, 1)
        and min(cg, kg) >= _WINOGRAD_OVER_BLOCKED_CHANNELS
        and geo.out[0] * geo.out[1] >= _WINOGRAD_OVER_BLOCKED_PIXELS
    ):
        return False  # Winograd's 2.25x fewer multiplications win
    if not (
        min_channels <= n_out <= _BLOCKED_MAX_CHANNELS
        and min_channels <= n_in <= _BLOCKED_MAX_CHANNELS
    ):
        return False
    rows = (geo.out[0] - 1) * geo.stride[0] + (kh - 1) * geo.dilation[0] + 1
    cols = (geo.out[1] + 32) * geo.stride[1] + (kw - 1) * geo.dilation[1]
    return max(cg, kg) * rows * cols <= _DIRECT_FWD_MAX_SCRATCH


# LeNet-class convolutions -- 5x5 windows over fewer input channels than blocked_eligible
# takes, into 16-128 output channels, unit stride, small images -- run the blocked kernels'
# forward and weight gradient (64x6x14x14 -> 16, k5, float32, 2 threads, medians of 30
# interleaved rounds on a loaded 2-core VM, AVX-512: forward 1.57 ms against 2.26 direct and
# 2.53 GEMM; weight gradient 2.87 against 3.30 GEMM; cnncore.tune picks the same.  Since the
# weight gradient keeps 5 taps x 4 channels in registers: 0.36 ms against GEMM's 1.0, one
# thread; AVX2: forward 0.43 against direct's 0.71, weight gradient 0.47 against 1.1).  The
# input gradient (6 output channels) runs the row-vectorized kernels (see below).
_LENET_KERNEL = (5, 5)


def _lenet_blocked(w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, which: str) -> bool:
    k, cg, kh, kw = w_shape
    if (
        which == "input"
        or groups != 1
        or (kh, kw) != _LENET_KERNEL
        or geo.stride != (1, 1)
        or geo.dilation != (1, 1)
        or not (cg < _BLOCKED_MIN_IN_CHANNELS and _BLOCKED_MIN_OUT_CHANNELS <= k)
        or k > _BLOCKED_MAX_CHANNELS
    ):
        return False
    rows = geo.out[0] + kh - 1
    cols = geo.out[1] + 32 + kw - 1
    return k * rows * cols <= _DIRECT_FWD_MAX_SCRATCH


# The row-vectorized kernels ("rows": the vector lanes along a row of output pixels) for few
# output channels (of the pass: C_in/groups for the input gradient) at unit stride on small
# images, where the blocked kernels would leave most lanes idle and GEMM (M = the few
# channels) is dominated by im2col and packing.  float32, one thread, CPU ms, loaded 2-core
# VM, rows against the previous choice: LeNet's conv1 (64x1x28x28 -> 6, k5 p2) forward
# 0.18-0.20 against GEMM's 0.34-0.39 (AVX2: 0.35 against direct's 0.38), weight gradient
# 0.27-0.31 against 0.35-0.40 (AVX2: 0.40 against 0.98); with AVX-512 conv2's input
# gradient (64x6x14x14 -> 16, k5: 6 output channels) 0.56-0.64 against 0.67-0.69 (with
# AVX2 GEMM keeps it: 0.98 against 1.17).
_ROWS_MAX_OUT_CHANNELS = 8
_ROWS_MIN_WINDOW = 25  # measured on 5x5 windows only


def _rows_eligible(w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, which: str) -> bool:
    k, cg, kh, kw = w_shape
    n_out, n_in = (cg, k) if which == "input" else (k // groups, cg)
    if (
        (which == "input" and _selected_simd() != "avx512")
        or groups != 1
        or geo.stride != (1, 1)
        or geo.dilation != (1, 1)
        or n_out > _ROWS_MAX_OUT_CHANNELS
        or kh * kw < _ROWS_MIN_WINDOW
    ):
        return False
    rows = geo.out[0] + 3 + kh - 1
    cols = geo.out[1] + 32 + kw - 1
    return n_in * rows * cols <= _DIRECT_FWD_MAX_SCRATCH


# A convolution of one input channel (a network's first layer) directly followed by a ReLU
# and 2x2 / stride-2 max pooling is run in training as one kernel (Sequential's fusion,
# ops/conv.py _conv2d_relu_max_pool2d): the row-vectorized correlation of each sample into a
# buffer that stays in cache, pooled from there -- the full-size conv output (6.4 MB for the
# README CNN's 64x32x28x28) is neither written nor read back.  float32, 2 threads, quiet
# 2-core AVX-512 VM, conv + pool forward of the README CNN's first layer (64x1x28x28 -> 32,
# k3 p1): see README (Training).
_FUSED_POOL_MAX_CONV_ELEMENTS = 1 << 18  # one sample's conv planes (the per-thread buffer)


def rows_pool_fusable(
    w_shape: tuple[int, ...], groups: int, geo: ConvGeometry, dtype: Any = None
) -> bool:
    """Whether a conv2d of weight shape ``w_shape``, geometry ``geo`` and ``dtype`` (None:
    float32) followed by a ReLU and 2x2 / stride-2 max pooling runs as the fused
    row-vectorized kernel (float32, one input channel, unit stride and dilation, one group;
    not when a :func:`conv_algorithm` block forces another algorithm than ``"rows"``)."""
    k, cg, kh, kw = w_shape
    forced = _forced.get()
    if (forced is not None and forced != ConvAlgorithm.ALGO_ROWS) or is_float64(dtype):
        return False
    ho, wo = geo.out
    if (
        groups != 1
        or cg != 1
        or geo.stride != (1, 1)
        or geo.dilation != (1, 1)
        or ho < 2
        or wo < 2
        or k * ho * wo > _FUSED_POOL_MAX_CONV_ELEMENTS
    ):
        return False
    rows = ho + 3 + kh - 1
    cols = wo + 32 + kw - 1
    return rows * cols <= _DIRECT_FWD_MAX_SCRATCH


def heuristic_conv_algorithm(
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    which: str,
    n: int | None = None,
    dtype: Any = None,
) -> int:
    """The kernel algorithm code the thresholds above choose for one pass (``which``:
    ``"forward"``, ``"input"`` or ``"weight"``; ``geo`` the resolved geometry, ``w_shape``
    the weight's shape, ``n`` the batch size: None for a large batch; ``dtype``: None for
    float32).  In float64 the rules run without ``"blocked"`` and ``"rows"`` (float32 only):
    what would take them takes the next rule's choice."""
    k, cg, kh, kw = w_shape
    kg = k // groups
    f32 = not is_float64(dtype)  # the blocked and rows kernels may run
    if cg == 1 and groups > 1:
        return ConvAlgorithm.ALGO_DEPTHWISE
    wino_base = (  # Winograd applies (but for the output size)
        (kh, kw) == (3, 3)
        and geo.stride == (1, 1)
        and geo.dilation == (1, 1)
        and min(cg, kg) >= _WINOGRAD_MIN_CHANNELS
        and (n is None or n * geo.out[0] * geo.out[1] >= _WINOGRAD_MIN_BATCH_PIXELS)
        and (which != "input" or max(geo.padding) <= 2)
    )
    winograd4 = (
        wino_base
        and max(cg, kg) <= _WINOGRAD4_MAX_CHANNELS
        and min(geo.out) >= _WINOGRAD4_MIN_OUTPUT
    )
    winograd = wino_base and geo.out[0] * geo.out[1] >= _WINOGRAD_MIN_OUTPUT_PIXELS
    # With AVX-512 the blocked kernels run at about twice their AVX2 rate: there they come
    # before Winograd (but for F(4x4) where it measured faster); at lower levels only where
    # Winograd does not apply (strided, small images).  See _BLOCKED_MIN_OUT_CHANNELS.
    blocked = f32 and blocked_eligible(w_shape, groups, geo, which)
    grouped = _grouped_choice(w_shape, groups, geo, which)
    if grouped is not None and (f32 or int(grouped) not in _F32_ONLY_CODES):
        return grouped
    if _selected_simd() == "avx512":
        if (
            blocked
            and which == "forward"
            and n is not None
            and n * geo.out[0] * geo.out[1] < _WINOGRAD4_FWD_MIN_BATCH_PIXELS
        ):
            winograd4 = wino_base = False  # (a small batch: see above)
        if (
            which == "forward"
            and groups == 1
            and winograd4
            and min(cg, kg) >= _WINOGRAD4_OVER_BLOCKED_WHOLE_TILES_CHANNELS
            and max(cg, kg) >= _WINOGRAD4_OVER_BLOCKED_CHANNELS
        ):
            return ConvAlgorithm.ALGO_WINOGRAD4  # partial tiles too (see above)
        if blocked:
            if (
                groups == 1
                and _winograd4_over_blocked(cg, kg, geo, wino_base)
                and (which != "forward" or min(cg, kg) >= _WINOGRAD4_OVER_BLOCKED_CHANNELS)
            ):
                return ConvAlgorithm.ALGO_WINOGRAD4
            if (
                which == "weight"
                and groups == 1
                and winograd4
                and min(cg, kg) >= _WINOGRAD4_WEIGHT_MIN_CHANNELS
                and max(cg, kg) >= _WINOGRAD4_WEIGHT_MIN_MAX_CHANNELS
            ):
                return ConvAlgorithm.ALGO_WINOGRAD4
            if (
                which == "forward"
                and geo.stride == (1, 1)
                and n is not None
                and n * geo.out[0] * geo.out[1] <= _GEMM_OVER_BLOCKED_MAX_BATCH_PIXELS
                and geo.out[1] <= _GEMM_OVER_BLOCKED_MAX_WIDTH
            ):
                return ConvAlgorithm.ALGO_GEMM
            return ConvAlgorithm.ALGO_BLOCKED
    if f32 and _lenet_blocked(w_shape, groups, geo, which):
        return ConvAlgorithm.ALGO_BLOCKED
    if winograd4:
        return ConvAlgorithm.ALGO_WINOGRAD4
    if winograd:
        return ConvAlgorithm.ALGO_WINOGRAD
    if blocked:
        return ConvAlgorithm.ALGO_BLOCKED
    if which == "weight":
        if f32 and _rows_eligible(w_shape, groups, geo, which):
            return ConvAlgorithm.ALGO_ROWS
        return ConvAlgorithm.ALGO_GEMM
    forward = which == "forward"
    if cg <= _DIRECT_MAX_CHANNELS and geo.out[0] * geo.out[1] >= _DIRECT_MIN_OUTPUT_PIXELS:
        return ConvAlgorithm.ALGO_DIRECT
    if f32 and _rows_eligible(w_shape, groups, geo, which):
        return ConvAlgorithm.ALGO_ROWS
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


# --------------------------------------------------------------------------------------------
# Measured choices (see cnncore.ops.conv_tune)
# --------------------------------------------------------------------------------------------

_ENV_AUTOTUNE = "CNNCORE_AUTOTUNE"


def _autotune_from_env() -> bool:
    raw = os.environ.get(_ENV_AUTOTUNE, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(
        f"{_ENV_AUTOTUNE} must be 0 or 1. Received: {_ENV_AUTOTUNE}={os.environ[_ENV_AUTOTUNE]!r}"
    )


_autotune = _autotune_from_env()
_cache: conv_tune.TuneCache | None = None  # created on first use (reads the cache file)
_cache_lock = threading.Lock()
# Whether select_conv_algorithm looks beyond the heuristic at all: autotuning is on, a tuning
# block is open, a cache file is named, or some choice is tuned (kept up to date by the
# functions below; the common case -- none of these -- then costs one global read).
_active = _autotune or bool(os.environ.get(conv_tune.ENV_CACHE))
# The passes tune() measures for every convolution it meets (None: no tune() running).
_tuning_passes: ContextVar[tuple[str, ...] | None] = ContextVar(
    "cnncore_tuning_passes", default=None
)
_tuning_seen: ContextVar[list[ConvCase] | None] = ContextVar("cnncore_tuning_seen", default=None)


def _applies(case: ConvCase, name: str) -> bool:
    algo = REGISTRY.get(name)
    return algo is not None and algo.applies(case)


def _tune_cache() -> conv_tune.TuneCache:
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                from .._config import _loaded_simd, load_kernels

                if "cnncore.ops._conv" not in _loaded_simd:
                    load_kernels("cnncore.ops._conv")
                path = os.environ.get(conv_tune.ENV_CACHE) or None
                _cache = conv_tune.TuneCache(path, _loaded_simd["cnncore.ops._conv"], _applies)
    return _cache


_open_tunings = 0  # tuning() blocks open in any thread


def _update_active() -> None:
    global _active
    _active = (
        _autotune
        or _open_tunings > 0
        or bool(os.environ.get(conv_tune.ENV_CACHE))
        or (_cache is not None and bool(_cache.choices))
    )


def set_autotune(enabled: bool) -> None:
    """Measure the convolution algorithms on the first use of each shape (or not).

    Parameters
    ----------
    enabled : bool
        True: the first call of each convolution pass (forward, input gradient, weight
        gradient) with a new shape and dtype times every algorithm that applies and keeps
        the fastest for the rest of the process (and in ``$CNNCORE_TUNE_CACHE`` when set).
        False (the default, or ``$CNNCORE_AUTOTUNE``): shapes not tuned yet use the
        built-in thresholds.  Choices already tuned are used either way.

    Notes
    -----
    Opt-in, as cuDNN's benchmark mode: the first call of each shape costs the timing (a
    few milliseconds per algorithm and pass), and which of two near-equal algorithms wins
    can change between runs, while the built-in choice repeats exactly.  The choice never
    depends on :func:`cnncore.set_num_threads` (see :mod:`cnncore.ops.conv_tune`).

    See Also
    --------
    cnncore.tune : tune every convolution of a model ahead of time.
    cnncore.conv_algorithm : force one algorithm.
    """
    from .._validation import check_bool

    global _autotune
    _autotune = check_bool(enabled, "enabled", "set_autotune")
    _forget_resolved()
    _update_active()


def get_autotune() -> bool:
    """Whether convolutions are autotuned on first use (see :func:`set_autotune`)."""
    return _autotune


def tuned_algorithms() -> list[dict[str, Any]]:
    """The tuned choices this process uses, one dict per pass and shape: ``pass``,
    ``input``, ``weight``, ``groups``, ``stride``, ``padding`` (top, left), ``dilation``,
    ``output``, ``dtype`` (conv2d's terms) and ``algorithm``."""
    if _cache is None and not _active:
        return []
    cache = _tune_cache()
    out = []
    for case, name in list(cache.choices.items()):
        geo = case.geo
        out.append(
            {
                "pass": case.which,
                "input": case.x_shape,
                "weight": case.w_shape,
                "groups": case.groups,
                "stride": geo.stride,
                "padding": geo.padding,
                "dilation": geo.dilation,
                "output": geo.out,
                "dtype": case.dtype,
                "algorithm": name,
            }
        )
    return out


def clear_tuning() -> None:
    """Forget every tuned choice of this process (the cache file is not changed; it is read
    again on the next convolution)."""
    global _cache
    with _cache_lock:
        _cache = None
        _forget_resolved()
    _update_active()


_tuned_on: ContextVar[bool] = ContextVar("cnncore_use_tuned", default=True)


class use_tuned:  # noqa: N801 (a context manager, named like conv_algorithm)
    """Context manager: with ``enabled=False``, convolutions inside the block ignore tuned
    choices and do not tune: the built-in thresholds decide (to compare the two; a
    :func:`conv_algorithm` block still wins).  Per thread, like :func:`conv_algorithm`.

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> from cnncore.ops.conv_dispatch import use_tuned
    >>> x = np.ones((1, 1, 5, 5), np.float32); w = np.ones((1, 1, 3, 3), np.float32)
    >>> with use_tuned(False):
    ...     y = cnncore.conv2d(x, w)
    """

    __slots__ = ("enabled", "_token")

    def __init__(self, enabled: bool = True) -> None:
        from .._validation import check_bool

        self.enabled = check_bool(enabled, "enabled", "use_tuned")
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _tuned_on.set(self.enabled)

    def __exit__(self, *exc: Any) -> None:
        _tuned_on.reset(self._token)


def eligible_algorithms(case: ConvCase) -> list[str]:
    """The names of the algorithms that apply to ``case`` (GEMM always does)."""
    return [name for name, algo in REGISTRY.items() if algo.applies(case)]


def _tune(cache: conv_tune.TuneCache, case: ConvCase, heuristic: int) -> str:
    """Measure ``case`` (unless another thread just did) and keep the winner."""
    with cache.lock:
        name = cache.get(case)
        if name is not None:
            return name
        if conv_tune.case_bytes(case) > conv_tune.MAX_TUNE_BYTES:
            return _NAMES[int(heuristic)]  # too large to time twice: the thresholds decide
        candidates = {name: int(REGISTRY[name].code) for name in eligible_algorithms(case)}
        preferred = _NAMES[int(heuristic)]
        if preferred not in candidates:  # (the thresholds never pick one that does not apply)
            preferred = "gemm"
        name, times = conv_tune.measure(case, candidates, preferred)
        cache.put(case, name, times)
        _forget_resolved()
    _update_active()
    return name


@contextmanager
def tuning(passes: tuple[str, ...] = conv_tune.PASSES) -> Iterator[list[ConvCase]]:
    """Context manager (:func:`cnncore.tune`): every convolution run inside the block has
    each of ``passes`` tuned (measured unless already tuned) for its shapes, whatever
    :func:`set_autotune` says, and the cache file is written once at the end.  Yields the
    list of the cases met (in order, without repeats)."""
    global _open_tunings
    cache = _tune_cache()
    seen: list[ConvCase] = []
    t_passes = _tuning_passes.set(tuple(passes))
    t_seen = _tuning_seen.set(seen)
    with _cache_lock:
        _open_tunings += 1
        _update_active()
    try:
        with cache.deferred_writes():
            yield seen
    finally:
        _tuning_passes.reset(t_passes)
        _tuning_seen.reset(t_seen)
        with _cache_lock:
            _open_tunings -= 1
            _update_active()


def select_conv_algorithm(
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    which: str,
    x_shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    measure: bool = True,
) -> int:
    """The kernel algorithm code (a :class:`cnncore._shared.ConvAlgorithm`) for one pass.

    ``which`` is ``"forward"``, ``"input"`` or ``"weight"`` (gradient); ``geo`` is the
    convolution's resolved geometry and ``w_shape`` the weight's shape; ``x_shape`` (conv2d's
    input shape) and ``dtype`` identify the case for tuned choices (without them the
    thresholds decide).  Order: a :func:`conv_algorithm` block, a tuned choice, autotuning
    (when on and ``measure``), the thresholds -- see the module docstring.
    """
    if _active and x_shape is not None and dtype is not None and _tuned_on.get():
        if _tuning_passes.get() is None:
            forced = _forced.get()
            if forced is not None:
                return _forced_code(forced, dtype)
            code = _resolved.get((which, x_shape, w_shape, groups, geo, dtype, measure))
            if code is not None:
                return code
        return _select_tuned(w_shape, groups, geo, which, x_shape, dtype, measure)
    forced = _forced.get()
    if forced is not None:
        return _forced_code(forced, dtype)
    return _heuristic(w_shape, groups, geo, which, None if x_shape is None else x_shape[0], dtype)


def _forced_code(code: int, dtype: Any) -> int:
    """The code a forced algorithm runs as: GEMM for a float32-only one in float64."""
    if code in _F32_ONLY_CODES and is_float64(dtype):
        return ConvAlgorithm.ALGO_GEMM
    return code


def _heuristic(
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    which: str,
    n: int | None,
    dtype: Any = None,
) -> int:
    f64 = is_float64(dtype)
    key = (w_shape, groups, geo, which, n, f64)
    code = _heuristic_memo.get(key)
    if code is None:
        code = heuristic_conv_algorithm(w_shape, groups, geo, which, n, _FLOAT64 if f64 else None)
        if len(_heuristic_memo) >= 4096:
            _heuristic_memo.clear()
        _heuristic_memo[key] = code
    return code


def _select_tuned(
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    which: str,
    x_shape: tuple[int, ...],
    dtype: Any,
    measure: bool,
) -> int:
    """:func:`select_conv_algorithm` when tuned choices may apply (see there); the outcome
    outside tune() is remembered in ``_resolved`` until the tuning state changes."""
    generation = _generation[0]
    case = ConvCase(which, x_shape, w_shape, groups, geo, dtype.name)  # type: ignore
    passes = _tuning_passes.get()
    if passes is not None:  # inside tune(): every requested pass of this convolution
        seen = _tuning_seen.get()
        cache = _tune_cache()
        for p in passes:
            c = case._replace(which=p)
            if seen is not None and c not in seen:
                seen.append(c)
            if cache.get(c) is None:
                _tune(
                    cache, c, heuristic_conv_algorithm(w_shape, groups, geo, p, x_shape[0], dtype)
                )
        forced = _forced.get()
        if forced is not None:
            return _forced_code(forced, dtype)
    cache = _tune_cache()
    name = cache.get(case)
    if name is not None:
        code = REGISTRY[name].code
    elif _autotune and measure:
        code = REGISTRY[
            _tune(
                cache,
                case,
                heuristic_conv_algorithm(w_shape, groups, geo, which, x_shape[0], dtype),
            )
        ].code
    else:
        code = _heuristic(w_shape, groups, geo, which, x_shape[0], dtype)
    if passes is None and generation == _generation[0]:  # (nothing changed meanwhile)
        if len(_resolved) >= 4096:
            _resolved.clear()
        _resolved[(which, x_shape, w_shape, groups, geo, dtype, measure)] = code
    return code


# What _select_tuned decided per (pass, input shape, weight shape, groups, geometry, dtype,
# measure): emptied whenever a choice is tuned, the tuning is cleared or autotuning is
# switched, so it only ever repeats what the cache and the thresholds would say now.
_resolved: dict[tuple[Any, ...], int] = {}
_generation = [0]  # bumped with each emptying (a decision made across one is not kept)


def _forget_resolved() -> None:
    _generation[0] += 1
    _resolved.clear()


# The thresholds' choice per (weight shape, groups, geometry, pass, batch, float64): the
# arguments come from the memoized argument checks of cnncore/ops/conv.py (tuples of ints),
# so equal keys are equal cases.
_heuristic_memo: dict[tuple[Any, ...], int] = {}
