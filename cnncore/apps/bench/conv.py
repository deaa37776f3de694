"""The convolution suites: forward and forward+backward against PyTorch and the sgemm roof.

Three named suites (``bench_conv(suite=...)``, ``benchmarks/bench_conv.py --suite``):

- ``"standard"``: conv2d on LeNet / CNN / ResNet-like shapes (:data:`CONV_SHAPES`);
- ``"depthwise"``: depthwise 3x3 convolutions as in MobileNet blocks (:data:`DEPTHWISE_SHAPES`);
- ``"transposed"``: conv_transpose2d upsamplers, DCGAN's k4 s2 p1 and U-Net's k2 s2 decoder
  stages (:data:`TRANSPOSED_SHAPES`);
- ``"resnet"``: the 3x3 convolutions of CIFAR ResNet-20/32/56 at batch 128 (stem, the three
  stages, the stride-2 transitions) and grouped 3x3 convolutions with 8-32 channels per
  group (:data:`RESNET_SHAPES`), and the README CNN's two 3x3 convolutions at its training
  batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import cnncore
from cnncore.ops.conv import conv2d_algorithms, conv_transpose2d_algorithms

from .timing import (
    _ms,
    _ratio,
    _setup,
    _versions,
    check_repeat,
    conv_extra_memory,
    geomean,
    sgemm_roof,
    time_round_robin,
)

# (N, C_in, H, W, C_out, k, stride, padding)
CONV_SHAPES = [
    (64, 1, 28, 28, 6, 5, 1, 2),
    (64, 6, 14, 14, 16, 5, 1, 0),
    (64, 1, 28, 28, 32, 3, 1, 1),
    (64, 32, 14, 14, 64, 3, 1, 1),
    (32, 64, 32, 32, 64, 3, 1, 1),
    (32, 64, 56, 56, 128, 3, 2, 1),
]

# (N, C, H, W, channel multiplier, k, stride, padding): groups = C
DEPTHWISE_SHAPES = [
    (32, 64, 56, 56, 1, 3, 1, 1),
    (32, 64, 56, 56, 1, 3, 2, 1),
    (32, 128, 28, 28, 1, 3, 1, 1),
    (32, 256, 14, 14, 1, 3, 1, 1),
    (32, 32, 56, 56, 2, 3, 1, 1),
]

# (N, C_in, H_in, W_in, C_out, k, stride, padding, output_padding)
TRANSPOSED_SHAPES = [
    (32, 64, 16, 16, 32, 4, 2, 1, 0),  # DCGAN-style upsampler: 16x16 -> 32x32
    (16, 128, 32, 32, 64, 2, 2, 0, 0),  # U-Net decoder: 32x32 -> 64x64, k2 s2
    (16, 256, 16, 16, 128, 2, 2, 0, 0),  # the U-Net stage below it
    (32, 64, 16, 16, 32, 3, 2, 1, 1),  # k3 s2 p1 op1: 16x16 -> 32x32
]

# (N, C_in, H, W, C_out, k, stride, padding, groups)
RESNET_SHAPES = [
    (128, 3, 32, 32, 16, 3, 1, 1, 1),  # stem
    (128, 16, 32, 32, 16, 3, 1, 1, 1),  # stage 1
    (128, 32, 16, 16, 32, 3, 1, 1, 1),  # stage 2
    (128, 64, 8, 8, 64, 3, 1, 1, 1),  # stage 3
    (128, 16, 32, 32, 32, 3, 2, 1, 1),  # stage 1 -> 2 transition
    (128, 32, 16, 16, 64, 3, 2, 1, 1),  # stage 2 -> 3 transition
    (32, 128, 16, 16, 128, 3, 1, 1, 16),  # grouped: 8 channels per group
    (32, 128, 16, 16, 128, 3, 1, 1, 8),  # 16 channels per group
    (32, 128, 16, 16, 128, 3, 1, 1, 4),  # 32 channels per group
    (64, 1, 28, 28, 32, 3, 1, 1, 1),  # README CNN conv1 (training batch 64)
    (64, 32, 14, 14, 64, 3, 1, 1, 1),  # README CNN conv2
]

SUITES = ("standard", "depthwise", "transposed", "resnet")


@dataclass
class _Case:
    """One row: its label, the cnncore and torch callables, flops of one pass, algorithms."""

    label: str
    fwd: Callable[[], object]
    fwd_bwd: Callable[[], object]
    torch_fwd: Callable[[], object] | None
    torch_fwd_bwd: Callable[[], object] | None
    flops: float
    algorithm: tuple[str, ...]


def _conv_case(shape, groups_of, torch, rng) -> _Case:
    """A conv2d row: ``groups_of(shape)`` gives ``(weight shape, groups)``."""
    n, c, h, w, _, ks, s, p = shape[:8]
    w_shape, groups = groups_of(shape)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
    b = rng.standard_normal(w_shape[0], dtype=np.float32)
    kw = dict(stride=s, padding=p, groups=groups)
    y = cnncore.conv2d(x, wt, b, **kw)
    g = rng.standard_normal(y.shape, dtype=np.float32)

    def fwd():
        return cnncore.conv2d(x, wt, b, **kw)

    def fwd_bwd():
        cnncore.conv2d(x, wt, b, **kw)
        cnncore.conv2d_backward(g, x, wt, **kw)

    t_fwd = t_fwd_bwd = None
    if torch is not None:
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, wt, b, g))
        txg = tx.clone().requires_grad_(True)
        twg = tw.clone().requires_grad_(True)
        tbg = tb.clone().requires_grad_(True)

        def t_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, **kw)

        def t_fwd_bwd():
            txg.grad = twg.grad = tbg.grad = None
            torch.nn.functional.conv2d(txg, twg, tbg, **kw).backward(tg)

    algos = conv2d_algorithms(x.shape, wt.shape, s, p, groups=groups)
    label = f"{n},{c},{h},{w} -> {w_shape[0]},{ks},{s},{p}" + (f" g{groups}" if groups > 1 else "")
    return _Case(
        label,
        fwd,
        fwd_bwd,
        t_fwd,
        t_fwd_bwd,
        2.0 * y.size * w_shape[1] * ks * ks,
        tuple(algos.values()),
    )


def _transposed_case(shape, torch, rng) -> _Case:
    n, c, h, w, k_out, ks, s, p, op = shape
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((c, k_out, ks, ks), dtype=np.float32) * 0.1
    b = rng.standard_normal(k_out, dtype=np.float32)
    kw = dict(stride=s, padding=p, output_padding=op)
    y = cnncore.conv_transpose2d(x, wt, b, **kw)
    g = rng.standard_normal(y.shape, dtype=np.float32)

    def fwd():
        return cnncore.conv_transpose2d(x, wt, b, **kw)

    def fwd_bwd():
        cnncore.conv_transpose2d(x, wt, b, **kw)
        cnncore.conv_transpose2d_backward(g, x, wt, **kw)

    t_fwd = t_fwd_bwd = None
    if torch is not None:
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, wt, b, g))
        txg = tx.clone().requires_grad_(True)
        twg = tw.clone().requires_grad_(True)
        tbg = tb.clone().requires_grad_(True)

        def t_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv_transpose2d(tx, tw, tb, **kw)

        def t_fwd_bwd():
            txg.grad = twg.grad = tbg.grad = None
            torch.nn.functional.conv_transpose2d(txg, twg, tbg, **kw).backward(tg)

    algos = conv_transpose2d_algorithms(x.shape, wt.shape, s, p, op)
    label = f"{n},{c},{h},{w} -> {k_out},{ks},{s},{p}" + (f",op{op}" if op else "")
    return _Case(
        label, fwd, fwd_bwd, t_fwd, t_fwd_bwd, 2.0 * x.size * k_out * ks * ks, tuple(algos.values())
    )


def bench_conv_resnet(**kwargs: Any) -> dict:
    """:func:`bench_conv` on the ``"resnet"`` suite (``cnncore bench --suite conv-resnet``)."""
    return bench_conv(suite="resnet", **kwargs)


def conv_simd_level() -> str:
    """The SIMD level of the conv kernels in use (``"baseline"``, ``"avx2"``, ``"avx512"``)."""
    from cnncore import _config

    return _config._selected_simd()


def _cases(suite: str, shapes: Sequence[tuple[int, ...]], torch: Any) -> list[_Case]:
    rng = np.random.default_rng(0)
    if suite == "standard":
        return [
            _conv_case(sh, lambda s: ((s[4], s[1], s[5], s[5]), 1), torch, rng) for sh in shapes
        ]
    if suite == "resnet":
        return [
            _conv_case(sh, lambda s: ((s[4], s[1] // s[8], s[5], s[5]), s[8]), torch, rng)
            for sh in shapes
        ]
    if suite == "depthwise":
        return [
            _conv_case(sh, lambda s: ((s[1] * s[4], 1, s[5], s[5]), s[1]), torch, rng)
            for sh in shapes
        ]
    return [_transposed_case(sh, torch, rng) for sh in shapes]


def bench_conv(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out=print,
    shapes: Sequence[tuple[int, ...]] | None = None,
    memory: bool = True,
    suite: str = "standard",
) -> dict:
    """Time a convolution suite, forward and forward+backward (input, weight and bias
    gradients), against PyTorch in the same run.

    ``suite`` is ``"standard"`` (conv2d, :data:`CONV_SHAPES`), ``"depthwise"``
    (:data:`DEPTHWISE_SHAPES`: ``(N, C, H, W, multiplier, k, stride, padding)``) or
    ``"transposed"`` (conv_transpose2d, :data:`TRANSPOSED_SHAPES`: ``(N, C_in, H_in, W_in,
    C_out, k, stride, padding, output_padding)``) or ``"resnet"`` (conv2d,
    :data:`RESNET_SHAPES`: ``(N, C_in, H, W, C_out, k, stride, padding, groups)``);
    ``shapes`` overrides the suite's shapes.

    Returns ``{"suite", "simd", "threads", "repeat", "sgemm_roof_gflops", "rows": [{"shape",
    "algorithm", "fwd_s", "fwd_bwd_s", "fwd_gflops", "fwd_bwd_gflops", "fwd_pct_roof",
    "fwd_bwd_pct_roof" [, "torch_fwd_s", "torch_fwd_bwd_s", "fwd_ratio", "fwd_bwd_ratio"]}]
    [, "geomean_fwd_ratio", "geomean_fwd_bwd_ratio"] [, "extra_memory_bytes"]}``; the
    algorithm is that of (forward, input gradient, weight gradient).
    """
    if suite not in SUITES:
        raise ValueError(f"bench_conv(): suite must be one of {SUITES}. Received: suite={suite!r}")
    repeat = check_repeat(repeat)
    default = {
        "standard": CONV_SHAPES,
        "depthwise": DEPTHWISE_SHAPES,
        "resnet": RESNET_SHAPES,
    }.get(suite, TRANSPOSED_SHAPES)
    shapes = shapes or (default[:3] if quick else default)
    threads, torch = _setup(use_torch)
    what = {
        "standard": "conv2d",
        "depthwise": "depthwise conv2d",
        "transposed": "conv_transpose2d",
        "resnet": "conv2d (ResNet CIFAR, grouped)",
    }
    simd = conv_simd_level()
    out(
        f"{what[suite]} benchmark: {_versions(torch)}; float32, {threads} thread(s), "
        f"SIMD {simd}, round-robin median of >= {repeat} runs after warm-up"
    )
    head = {
        "standard": "N,C,H,W -> K,k,s,p",
        "depthwise": "N,C,H,W -> K,k,s,p groups",
        "transposed": "N,C,H,W -> K,k,s,p[,op]",
        "resnet": "N,C,H,W -> K,k,s,p groups",
    }[suite]
    out(
        f"{head:<32}{'fwd ms':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}"
        f"{'fwd+bwd':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}  algorithm (fwd/dx/dw)"
    )
    rows = []
    for shape, case in zip(shapes, _cases(suite, shapes, torch), strict=True):
        fns_f: dict[str, Callable[[], object]] = {"cnncore": case.fwd}
        fns_fb: dict[str, Callable[[], object]] = {"cnncore": case.fwd_bwd}
        if case.torch_fwd is not None and case.torch_fwd_bwd is not None:
            fns_f["torch"] = case.torch_fwd
            fns_fb["torch"] = case.torch_fwd_bwd
        t_f = time_round_robin(fns_f, repeat, min_time=0.02)
        t_fb = time_round_robin(fns_fb, repeat, min_time=0.02)
        row: dict[str, Any] = {
            "shape": tuple(shape),
            "fwd_s": t_f["cnncore"],
            "fwd_bwd_s": t_fb["cnncore"],
            "fwd_gflops": case.flops / t_f["cnncore"] / 1e9,
            "fwd_bwd_gflops": 3 * case.flops / t_fb["cnncore"] / 1e9,
            "algorithm": case.algorithm,
        }
        if "torch" in t_f:
            row["torch_fwd_s"] = t_f["torch"]
            row["torch_fwd_bwd_s"] = t_fb["torch"]
            row["fwd_ratio"] = t_f["cnncore"] / t_f["torch"]
            row["fwd_bwd_ratio"] = t_fb["cnncore"] / t_fb["torch"]
        rows.append(row)
        out(
            f"{case.label:<32}{_ms(row['fwd_s'], 9)}"
            f"{row['fwd_gflops']:7.1f}{_ms(row.get('torch_fwd_s'), 8)}"
            f"{_ratio(row.get('fwd_ratio'), 7)}{_ms(row['fwd_bwd_s'], 9)}"
            f"{row['fwd_bwd_gflops']:7.1f}{_ms(row.get('torch_fwd_bwd_s'), 8)}"
            f"{_ratio(row.get('fwd_bwd_ratio'), 7)}  {'/'.join(row['algorithm'])}"
        )
    # after the conv timings: OpenBLAS threads spin after a matmul and slow what runs next
    roof = sgemm_roof(repeat=repeat)
    for row in rows:
        row["fwd_pct_roof"] = 100 * row["fwd_gflops"] / roof
        row["fwd_bwd_pct_roof"] = 100 * row["fwd_bwd_gflops"] / roof
    out(
        f"sgemm roof (NumPy BLAS, measured after the conv timings): {roof:.1f} GFLOP/s; "
        "% of roof, fwd: "
        + " ".join(f"{r['fwd_pct_roof']:.0f}" for r in rows)
        + ", fwd+bwd: "
        + " ".join(f"{r['fwd_bwd_pct_roof']:.0f}" for r in rows)
    )
    out(
        "GF/s count the direct algorithm's 2*N*C_out*C_in/groups*kH*kW*H_out*W_out flops per "
        "pass (for a transposed convolution 2*N*C_in*C_out/groups*kH*kW*H_in*W_in); "
        "winograd (F(2x2)) does 2.25x and winograd4 (F(4x4)) 4x fewer multiplications, so "
        "their rates are effective ones"
    )
    result: dict[str, Any] = {
        "suite": suite,
        "simd": simd,
        "threads": threads,
        "repeat": repeat,
        "sgemm_roof_gflops": roof,
        "rows": rows,
    }
    if torch is not None:
        result["geomean_fwd_ratio"] = geomean([r["fwd_ratio"] for r in rows])
        result["geomean_fwd_bwd_ratio"] = geomean([r["fwd_bwd_ratio"] for r in rows])
        out(
            f"geomean ratio cnncore/torch: forward {result['geomean_fwd_ratio']:.2f}, "
            f"fwd+bwd {result['geomean_fwd_bwd_ratio']:.2f}  (< 1 means cnncore is faster)"
        )
    if memory and suite == "standard":
        mem = {}
        for n in (32, 256):
            try:
                extra = conv_extra_memory(n, threads)
            except RuntimeError as exc:
                out(f"peak extra memory not measured: {exc}")
                break
            if extra is not None:
                mem[n] = extra
        if mem:
            result["extra_memory_bytes"] = mem
            out(
                "peak extra memory of one conv2d call (N,64,32,32 -> 64, k3 p1), beyond its "
                "output: " + ", ".join(f"N={n}: {v / 2**20:.1f} MiB" for n, v in mem.items())
            )
    return result
