"""The pooling suite: max and average pooling, forward + backward, against PyTorch and a NumPy
copy of the same bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import cnncore

from .timing import (
    _ms,
    _ratio,
    _setup,
    _versions,
    check_repeat,
    copy_baseline,
    geomean,
    median_time,
    time_round_robin,
)

# (N, C, H, W), kernel, stride, padding
POOL_CASES = [
    ((64, 32, 28, 28), 2, 2, 0),
    ((64, 6, 28, 28), 2, 2, 0),
    ((32, 64, 56, 56), 3, 2, 1),
]


def bench_pool(
    quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print, split: bool = False
) -> dict:
    """Time max and average pooling, forward + backward, against torch and a NumPy copy.

    The effective bandwidth is the bytes a pass must move (forward: read x, write y
    [+ int64 indices]; backward: read grad_output [+ indices], write grad_x) over its time,
    next to that of a NumPy copy of the same number of bytes timed in the same row.
    ``quick``: a quarter of the batch.  ``split``: also time cnncore's forward and backward
    passes separately.

    Returns ``{"threads", "repeat", "rows": [{"shape", "kernel", "stride", "padding", "pass",
    "bytes", "cnncore_s", "gbs", "copy_s", "copy_gbs" [, "torch_s", "ratio"]}]
    [, "geomean_ratio": {pass: ratio}] [, "split": [{"shape", "op", "cnncore_s"}]]}``.
    """
    repeat = check_repeat(repeat)
    threads, torch = _setup(use_torch)
    out(
        f"pooling benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin "
        f"median of >= {repeat} runs after warm-up; ratio = cnncore/torch (< 1: faster)"
    )
    head = (
        f"{'shape':>18} {'k':>2} {'s':>2} {'p':>2}  {'pass':12} {'cnncore ms':>10} "
        f"{'torch ms':>9} {'ratio':>6} {'GB/s':>6} {'copy GB/s':>9}"
    )
    out(head)
    out("-" * len(head))
    rows: list[dict] = []
    split_rows: list[dict] = []
    rng = np.random.default_rng(0)
    for shape, k, s, p in POOL_CASES:
        if quick:
            shape = (max(1, shape[0] // 4), *shape[1:])
        x = rng.standard_normal(shape, dtype=np.float32)
        y, idx = cnncore.max_pool2d(x, k, s, p, return_indices=True)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        xb, yb, ib = x.nbytes, y.nbytes, idx.nbytes

        def cn_max():
            _, ii = cnncore.max_pool2d(x, k, s, p, return_indices=True)
            cnncore.max_pool2d_backward(g, ii, x.shape)

        def cn_avg():
            cnncore.avg_pool2d(x, k, s, p)
            cnncore.avg_pool2d_backward(g, x.shape, k, s, p)

        passes: list[tuple[str, int, dict[str, Callable[[], object]]]] = [
            ("max fwd+bwd", (xb + yb + ib) + (yb + ib + xb), {"cnncore": cn_max}),
            ("avg fwd+bwd", (xb + yb) + (yb + xb), {"cnncore": cn_avg}),
        ]
        if torch is not None:
            F = torch.nn.functional
            tx = torch.from_numpy(x).requires_grad_()
            tg = torch.from_numpy(g)

            def th_max():
                tx.grad = None
                F.max_pool2d(tx, k, s, p).backward(tg)

            def th_avg():
                tx.grad = None
                F.avg_pool2d(tx, k, s, p).backward(tg)

            passes[0][2]["torch"] = th_max
            passes[1][2]["torch"] = th_avg
        for name, nbytes, fns in passes:
            fns["copy"] = copy_baseline(nbytes)
            t = time_round_robin(fns, repeat, library={"copy": "numpy"})
            row = {
                "shape": shape,
                "kernel": k,
                "stride": s,
                "padding": p,
                "pass": name,
                "bytes": nbytes,
                "cnncore_s": t["cnncore"],
                "gbs": nbytes / t["cnncore"] / 1e9,
                "copy_s": t["copy"],
                "copy_gbs": 8 * (nbytes // 8) / t["copy"] / 1e9,
            }
            if "torch" in t:
                row["torch_s"] = t["torch"]
                row["ratio"] = t["cnncore"] / t["torch"]
            rows.append(row)
            out(
                f"{str(shape):>18} {k:2d} {s:2d} {p:2d}  {name:12} {_ms(row['cnncore_s'], 10)} "
                f"{_ms(row.get('torch_s'), 9)} {_ratio(row.get('ratio'), 6)} "
                f"{row['gbs']:6.1f} {row['copy_gbs']:9.1f}"
            )
        if split:
            for op, fn in (
                ("max fwd", lambda: cnncore.max_pool2d(x, k, s, p, return_indices=True)),
                ("max fwd (values)", lambda: cnncore.max_pool2d(x, k, s, p)),
                ("max bwd", lambda: cnncore.max_pool2d_backward(g, idx, x.shape)),
                ("avg fwd", lambda: cnncore.avg_pool2d(x, k, s, p)),
                ("avg bwd", lambda: cnncore.avg_pool2d_backward(g, x.shape, k, s, p)),
            ):
                t_op = median_time(fn, repeat=repeat)
                split_rows.append({"shape": shape, "op": op, "cnncore_s": t_op})
                out(f"{'':>29}  {op:20} {t_op * 1e3:8.3f} ms")
    result: dict[str, Any] = {"threads": threads, "repeat": repeat, "rows": rows}
    if torch is not None:
        result["geomean_ratio"] = {
            name: geomean([r["ratio"] for r in rows if r["pass"] == name])
            for name in dict.fromkeys(r["pass"] for r in rows)
        }
        for name, gm in result["geomean_ratio"].items():
            out(f"geomean ratio cnncore/torch, {name}: {gm:.3f}")
    if split_rows:
        result["split"] = split_rows
    return result
