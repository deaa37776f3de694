"""The conv2d suite: forward and forward+backward against PyTorch and the sgemm roof."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import cnncore
from cnncore.ops.conv import conv2d_algorithms

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


def bench_conv(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out=print,
    shapes: Sequence[tuple[int, ...]] | None = None,
    memory: bool = True,
) -> dict:
    """Time conv2d forward and forward+backward (input, weight and bias gradients).

    Returns ``{"threads", "repeat", "sgemm_roof_gflops", "rows": [{"shape", "algorithm",
    "fwd_s", "fwd_bwd_s", "fwd_gflops", "fwd_bwd_gflops", "fwd_pct_roof", "fwd_bwd_pct_roof"
    [, "torch_fwd_s", "torch_fwd_bwd_s", "fwd_ratio", "fwd_bwd_ratio"]}]
    [, "geomean_fwd_ratio", "geomean_fwd_bwd_ratio"] [, "extra_memory_bytes"]}``.
    """
    repeat = check_repeat(repeat)
    shapes = shapes or (CONV_SHAPES[:3] if quick else CONV_SHAPES)
    threads, torch = _setup(use_torch)
    out(
        f"conv2d benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin "
        f"median of >= {repeat} runs after warm-up"
    )
    out(
        f"{'shape N,C,H,W -> K,k,s,p':<30}{'fwd ms':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}"
        f"{'fwd+bwd':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}  algorithm (fwd/dx/dw)"
    )
    rows = []
    rng = np.random.default_rng(0)
    for n, c, h, w, k, ks, s, p in shapes:
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((k, c, ks, ks), dtype=np.float32) * 0.1
        b = rng.standard_normal(k, dtype=np.float32)
        y = cnncore.conv2d(x, wt, b, stride=s, padding=p)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        flops = 2.0 * y.size * c * ks * ks

        def fwd():
            return cnncore.conv2d(x, wt, b, stride=s, padding=p)

        def fwd_bwd():
            cnncore.conv2d(x, wt, b, stride=s, padding=p)
            cnncore.conv2d_backward(g, x, wt, stride=s, padding=p)

        fns_f: dict[str, Callable[[], object]] = {"cnncore": fwd}
        fns_fb: dict[str, Callable[[], object]] = {"cnncore": fwd_bwd}
        if torch is not None:
            tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, wt, b, g))
            txg = tx.clone().requires_grad_(True)
            twg = tw.clone().requires_grad_(True)
            tbg = tb.clone().requires_grad_(True)

            def t_fwd():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p)

            def t_fwd_bwd():
                txg.grad = twg.grad = tbg.grad = None
                torch.nn.functional.conv2d(txg, twg, tbg, stride=s, padding=p).backward(tg)

            fns_f["torch"] = t_fwd
            fns_fb["torch"] = t_fwd_bwd
        t_f = time_round_robin(fns_f, repeat, min_time=0.02)
        t_fb = time_round_robin(fns_fb, repeat, min_time=0.02)
        row = {
            "shape": (n, c, h, w, k, ks, s, p),
            "fwd_s": t_f["cnncore"],
            "fwd_bwd_s": t_fb["cnncore"],
            "fwd_gflops": flops / t_f["cnncore"] / 1e9,
            "fwd_bwd_gflops": 3 * flops / t_fb["cnncore"] / 1e9,
        }
        if torch is not None:
            row["torch_fwd_s"] = t_f["torch"]
            row["torch_fwd_bwd_s"] = t_fb["torch"]
            row["fwd_ratio"] = t_f["cnncore"] / t_f["torch"]
            row["fwd_bwd_ratio"] = t_fb["cnncore"] / t_fb["torch"]
        row["algorithm"] = tuple(conv2d_algorithms(x.shape, wt.shape, s, p).values())
        rows.append(row)
        out(
            f"{f'{n},{c},{h},{w} -> {k},{ks},{s},{p}':<30}{_ms(row['fwd_s'], 9)}"
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
        "GF/s count the direct algorithm's 2*N*C_out*C_in*kH*kW*H_out*W_out flops per pass; "
        "winograd does 2.25x fewer multiplications, so its rate is an effective one"
    )
    result: dict[str, Any] = {
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
    if memory:
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
