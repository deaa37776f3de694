"""Benchmark suites behind ``cnncore bench`` and the scripts in ``benchmarks/``.

Every suite times cnncore and (when installed) PyTorch in the same run, with the same thread
count, and reports ratios cnncore/torch plus GFLOP/s against the float32 GEMM roof (or GB/s
against a NumPy copy of the same bytes) measured in that run.

Timing rules (the reference machine has 2 noisy cores):

- the candidates of one row are timed round-robin in series (:func:`time_round_robin`), so
  drifting machine load hits all of them alike; every series starts with warm-up calls and
  each reported time is the median of at least ``MIN_REPEAT`` samples;
- whenever the timed library changes (cnncore, torch, NumPy ...) the process first sleeps
  ``SETTLE_S`` seconds: the OpenMP / OpenBLAS worker threads of the previous library keep
  spinning for a while and would otherwise steal a core from the next one;
- the sgemm roof is measured after the conv timings, for the same reason.

On small, noisy machines quote the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import cnncore

MIN_REPEAT = 7
"""Fewest timed samples behind any reported median."""

SETTLE_S = 0.3
"""Seconds to sleep before timing a library other than the one timed last."""

_last_library: list[str | None] = [None]


# --------------------------------------------------------------------------------------------
# Shared timing helpers
# --------------------------------------------------------------------------------------------


def _switch_library(library: str, settle: float) -> None:
    """Sleep ``settle`` seconds if ``library`` is not the library timed last."""
    if settle > 0 and _last_library[0] not in (None, library):
        time.sleep(settle)
    _last_library[0] = library


def _warm_up(fn: Callable[[], object], warmup: int, min_time: float) -> int:
    """Run ``fn`` ``warmup`` (>= 1) times; return how many calls make one sample last at least
    ``min_time`` seconds (judged from the last warm-up call)."""
    one = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
    return max(1, math.ceil(min_time / max(one, 1e-9))) if min_time > 0 else 1


def _samples(fn: Callable[[], object], count: int, inner: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)
    return out


def check_repeat(repeat: int) -> int:
    """``repeat`` raised to ``MIN_REPEAT`` (medians of fewer runs are too noisy to quote)."""
    return max(MIN_REPEAT, int(repeat))


def median_time(fn: Callable[[], object], repeat: int = 7, warmup: int = 2,
                min_time: float = 0.0, library: str = "cnncore",
                settle: float = SETTLE_S) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` (>= 7) runs after ``warmup``
    (>= 1) untimed runs.

    If one run is shorter than ``min_time`` the runs are batched so each sample lasts at least
    that long (the per-call time is reported).  ``library`` names what ``fn`` runs: if it
    differs from the library timed last, sleep ``settle`` seconds first.
    """
    _switch_library(library, settle)
    inner = _warm_up(fn, warmup, min_time)
    return statistics.median(_samples(fn, check_repeat(repeat), inner))


def time_round_robin(fns: Mapping[str, Callable[[], object]], repeat: int = 7, *,
                     rounds: int = 3, warmup: int = 1, min_time: float = 0.0,
                     library: Mapping[str, str] | None = None,
                     settle: float = SETTLE_S) -> dict[str, float]:
    """Median wall time (seconds) of each callable in ``fns``, timed round-robin.

    Each of ``rounds`` rounds times every candidate in turn as a series: sleep ``settle``
    seconds if its library differs from the one timed last, ``warmup`` (>= 1) untimed calls,
    then ``ceil(repeat / rounds)`` timed samples; so each median covers at least
    ``max(repeat, 7)`` samples spread over the whole row.  ``library`` maps candidate names to
    library names (default: the candidate name itself).  ``min_time`` batches calls as in
    :func:`median_time` (the batch size is fixed in the first round).
    """
    rounds = max(1, int(rounds))
    per_round = math.ceil(check_repeat(repeat) / rounds)
    library = library or {}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    inner: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            _switch_library(library.get(name, name), settle)
            batch = _warm_up(fn, warmup, min_time)
            inner.setdefault(name, batch)
            samples[name] += _samples(fn, per_round, inner[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def sgemm_roof(n: int = 2048, repeat: int = 7) -> float:
    """GFLOP/s of a float32 ``n x n`` matmul through NumPy's BLAS, measured now."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = median_time(lambda: a @ b, repeat=repeat, warmup=1, library="numpy-blas")
    return 2 * n**3 / t / 1e9


def copy_baseline(nbytes: int, allocate: bool = False) -> Callable[[], object]:
    """A NumPy copy moving ``nbytes`` bytes in total (half read, half written), like an op
    that reads and writes arrays of that total size.  ``allocate``: ``x.copy()`` (allocates
    its output, like an op returning a new array); else ``np.copyto`` into a fixed array."""
    src = np.ones(max(1, nbytes // 8), np.float32)
    if allocate:
        return src.copy
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def copy_bandwidth(nbytes: int, repeat: int = 7, allocate: bool = False) -> float:
    """GB/s of :func:`copy_baseline` moving ``nbytes`` bytes (read + written), measured now."""
    fn = copy_baseline(nbytes, allocate)
    t = median_time(fn, repeat=repeat, warmup=2, min_time=0.01, library="numpy")
    return 8 * max(1, nbytes // 8) / t / 1e9


def geomean(values: Sequence[float | None]) -> float:
    """Geometric mean of the positive entries of ``values`` (NaN if there are none)."""
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def try_import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _setup(use_torch: bool) -> tuple[int, Any]:
    """cnncore's thread count and torch (or None), set to the same thread count."""
    threads = cnncore.get_num_threads()
    torch = try_import_torch() if use_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    return threads, torch


def _versions(torch: Any) -> str:
    return f"cnncore {cnncore.__version__}" + (
        f", torch {torch.__version__}" if torch is not None else " (no torch: no ratios)")


def _ms(t: float | None, width: int) -> str:
    return f"{t * 1e3:{width}.3f}" if t is not None else f"{'-':>{width}}"


def _ratio(r: float | None, width: int) -> str:
    return f"{r:{width}.2f}" if r is not None else f"{'-':>{width}}"


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_extra_memory(fn: Callable[[], object]) -> int | None:
    """Peak resident memory added while ``fn()`` runs, in bytes (Linux only, else None).

    Only meaningful where freed memory is returned to the system: glibc keeps freed heap pages
    resident and raises its mmap threshold after large frees, so a call can reuse pages that
    are already counted.  :func:`conv_extra_memory` runs it in a fresh process for that reason.
    """
    if not _reset_peak_rss():
        return None
    before = _peak_rss()
    result = fn()
    after = _peak_rss()
    del result
    return None if before is None or after is None else after - before


_CONV_MEMORY_PROBE = """
import sys
import numpy as np
import cnncore
from cnncore.bench import peak_extra_memory
n, threads = int(sys.argv[1]), int(sys.argv[2])
cnncore.set_num_threads(threads)
rng = np.random.default_rng(0)
wt = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
cnncore.conv2d(rng.standard_normal((4, 64, 32, 32), dtype=np.float32), wt, padding=1)  # warm-up
x = rng.standard_normal((n, 64, 32, 32), dtype=np.float32)
extra = peak_extra_memory(lambda: cnncore.conv2d(x, wt, padding=1))
print("none" if extra is None else extra - x.nbytes)  # the output has the input's shape
"""


def conv_extra_memory(n: int, threads: int) -> int | None:
    """Peak resident memory of one ``conv2d`` call on (n, 64, 32, 32) -> 64, k3 p1, beyond its
    output, in bytes; measured in a fresh process whose large allocations are all fresh mmaps
    (``MALLOC_MMAP_THRESHOLD_``), so every page the call touches counts.  None where the peak
    cannot be reset (not Linux); RuntimeError if the probe process fails.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(cnncore.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    # cwd: the folder holding the package, so `python -c` (which puts the working directory
    # first on sys.path) cannot pick up a source checkout's unbuilt cnncore instead
    proc = subprocess.run([sys.executable, "-c", _CONV_MEMORY_PROBE, str(n), str(threads)],
                          env=env, cwd=pkg_parent, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not proc.stdout.split():
        raise RuntimeError(f"the memory probe failed: {proc.stderr.strip()[-800:]}")
    value = proc.stdout.split()[-1]
    return None if value == "none" else max(0, int(value))


# --------------------------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------------------------

# (N, C_in, H, W, C_out, k, stride, padding)
CONV_SHAPES = [
    (64, 1, 28, 28, 6, 5, 1, 2),
    (64, 6, 14, 14, 16, 5, 1, 0),
    (64, 1, 28, 28, 32, 3, 1, 1),
    (64, 32, 14, 14, 64, 3, 1, 1),
    (32, 64, 32, 32, 64, 3, 1, 1),
    (32, 64, 56, 56, 128, 3, 2, 1),
]


def _conv_algorithms(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int,
                     padding: int) -> tuple[str, ...]:
    """The kernel algorithm cnncore picks for each pass of one conv2d (for the report)."""
    from . import functional as F

    geo, groups = F._conv_setup("conv2d", x_shape, w_shape, stride, padding, 1, 1)
    names = {F._conv.GEMM: "gemm", F._conv.DIRECT: "direct", F._conv.WINOGRAD: "winograd"}
    return tuple(names[F._conv_algorithm(w_shape, groups, geo, which)]
                 for which in ("forward", "input", "weight"))


def bench_conv(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print,
               shapes: Sequence[tuple[int, ...]] | None = None, memory: bool = True) -> dict:
    """Time conv2d forward and forward+backward (input, weight and bias gradients).

    Returns ``{"threads", "repeat", "sgemm_roof_gflops", "rows": [{"shape", "algorithm",
    "fwd_s", "fwd_bwd_s", "fwd_gflops", "fwd_bwd_gflops", "fwd_pct_roof", "fwd_bwd_pct_roof"
    [, "torch_fwd_s", "torch_fwd_bwd_s", "fwd_ratio", "fwd_bwd_ratio"]}]
    [, "geomean_fwd_ratio", "geomean_fwd_bwd_ratio"] [, "extra_memory_bytes"]}``.
    """
    repeat = check_repeat(repeat)
    shapes = shapes or (CONV_SHAPES[:3] if quick else CONV_SHAPES)
    threads, torch = _setup(use_torch)
    out(f"conv2d benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin "
        f"median of >= {repeat} runs after warm-up")
    out(f"{'shape N,C,H,W -> K,k,s,p':<30}{'fwd ms':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}"
        f"{'fwd+bwd':>9}{'GF/s':>7}{'torch':>8}{'ratio':>7}  algorithm (fwd/dx/dw)")
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
        row = {"shape": (n, c, h, w, k, ks, s, p), "fwd_s": t_f["cnncore"],
               "fwd_bwd_s": t_fb["cnncore"], "fwd_gflops": flops / t_f["cnncore"] / 1e9,
               "fwd_bwd_gflops": 3 * flops / t_fb["cnncore"] / 1e9}
        if torch is not None:
            row["torch_fwd_s"] = t_f["torch"]
            row["torch_fwd_bwd_s"] = t_fb["torch"]
            row["fwd_ratio"] = t_f["cnncore"] / t_f["torch"]
            row["fwd_bwd_ratio"] = t_fb["cnncore"] / t_fb["torch"]
        row["algorithm"] = _conv_algorithms(x.shape, wt.shape, s, p)
        rows.append(row)
        out(f"{f'{n},{c},{h},{w} -> {k},{ks},{s},{p}':<30}{_ms(row['fwd_s'], 9)}"
            f"{row['fwd_gflops']:7.1f}{_ms(row.get('torch_fwd_s'), 8)}"
            f"{_ratio(row.get('fwd_ratio'), 7)}{_ms(row['fwd_bwd_s'], 9)}"
            f"{row['fwd_bwd_gflops']:7.1f}{_ms(row.get('torch_fwd_bwd_s'), 8)}"
            f"{_ratio(row.get('fwd_bwd_ratio'), 7)}  {'/'.join(row['algorithm'])}")
    # after the conv timings: OpenBLAS threads spin after a matmul and slow what runs next
    roof = sgemm_roof(repeat=repeat)
    for row in rows:
        row["fwd_pct_roof"] = 100 * row["fwd_gflops"] / roof
        row["fwd_bwd_pct_roof"] = 100 * row["fwd_bwd_gflops"] / roof
    out(f"sgemm roof (NumPy BLAS, measured after the conv timings): {roof:.1f} GFLOP/s; "
        "% of roof, fwd: " + " ".join(f"{r['fwd_pct_roof']:.0f}" for r in rows)
        + ", fwd+bwd: " + " ".join(f"{r['fwd_bwd_pct_roof']:.0f}" for r in rows))
    out("GF/s count the direct algorithm's 2*N*C_out*C_in*kH*kW*H_out*W_out flops per pass; "
        "winograd does 2.25x fewer multiplications, so its rate is an effective one")
    result: dict[str, Any] = {"threads": threads, "repeat": repeat, "sgemm_roof_gflops": roof,
                              "rows": rows}
    if torch is not None:
        result["geomean_fwd_ratio"] = geomean([r["fwd_ratio"] for r in rows])
        result["geomean_fwd_bwd_ratio"] = geomean([r["fwd_bwd_ratio"] for r in rows])
        out(f"geomean ratio cnncore/torch: forward {result['geomean_fwd_ratio']:.2f}, "
            f"fwd+bwd {result['geomean_fwd_bwd_ratio']:.2f}  (< 1 means cnncore is faster)")
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
            out("peak extra memory of one conv2d call (N,64,32,32 -> 64, k3 p1), beyond its "
                "output: " + ", ".join(f"N={n}: {v / 2**20:.1f} MiB" for n, v in mem.items()))
    return result


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------

# (N, C, H, W), kernel, stride, padding
POOL_CASES = [
    ((64, 32, 28, 28), 2, 2, 0),
    ((64, 6, 28, 28), 2, 2, 0),
    ((32, 64, 56, 56), 3, 2, 1),
]


def bench_pool(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print,
               split: bool = False) -> dict:
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
    out(f"pooling benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin "
        f"median of >= {repeat} runs after warm-up; ratio = cnncore/torch (< 1: faster)")
    head = (f"{'shape':>18} {'k':>2} {'s':>2} {'p':>2}  {'pass':12} {'cnncore ms':>10} "
            f"{'torch ms':>9} {'ratio':>6} {'GB/s':>6} {'copy GB/s':>9}")
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
            row = {"shape": shape, "kernel": k, "stride": s, "padding": p, "pass": name,
                   "bytes": nbytes, "cnncore_s": t["cnncore"],
                   "gbs": nbytes / t["cnncore"] / 1e9, "copy_s": t["copy"],
                   "copy_gbs": 8 * (nbytes // 8) / t["copy"] / 1e9}
            if "torch" in t:
                row["torch_s"] = t["torch"]
                row["ratio"] = t["cnncore"] / t["torch"]
            rows.append(row)
            out(f"{str(shape):>18} {k:2d} {s:2d} {p:2d}  {name:12} {_ms(row['cnncore_s'], 10)} "
                f"{_ms(row.get('torch_s'), 9)} {_ratio(row.get('ratio'), 6)} "
                f"{row['gbs']:6.1f} {row['copy_gbs']:9.1f}")
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
            for name in dict.fromkeys(r["pass"] for r in rows)}
        for name, gm in result["geomean_ratio"].items():
            out(f"geomean ratio cnncore/torch, {name}: {gm:.3f}")
    if split_rows:
        result["split"] = split_rows
    return result


# --------------------------------------------------------------------------------------------
# Activations, cross entropy (and the correlate2d 'auto' method)
# --------------------------------------------------------------------------------------------


def _activation_row(out, label: str, t: dict[str, float], nbytes: int,
                    ref: str = "copy") -> dict:
    ours = t["cnncore"]
    row: dict[str, Any] = {"op": label, "bytes": nbytes, "cnncore_s": ours,
                           "gbs": nbytes / ours / 1e9}
    parts = [f"{label:<22}", f"cnncore {ours * 1e3:8.2f} ms {row['gbs']:6.1f} GB/s"]
    if ref in t:
        row.update({f"{ref}_s": t[ref], f"{ref}_ratio": ours / t[ref]})
        parts.append(f"{ref} {t[ref] * 1e3:7.2f} ms  x{ours / t[ref]:5.2f}")
    if "torch" in t:
        row.update(torch_s=t["torch"], torch_ratio=ours / t["torch"])
        parts.append(f"torch {t['torch'] * 1e3:7.2f} ms  x{ours / t['torch']:5.2f}")
    out(" | ".join(parts))
    return row


# (image side, kernel side) around the 'auto' crossover (~11x11 for float64)
SIGNAL_CASES = [(256, 5), (256, 11), (256, 21), (512, 11)]


def _bench_signal(out, repeat: int) -> list[dict]:
    rng = np.random.default_rng(2)
    out("correlate2d 'same' float64, is 'auto' as fast as the faster of direct and fft?")
    rows = []
    for size, k in SIGNAL_CASES:
        img = rng.standard_normal((size, size))
        kern = rng.standard_normal((k, k))
        fns = {m: (lambda m=m: cnncore.correlate2d(img, kern, "same", method=m))
               for m in ("direct", "fft", "auto")}
        t = time_round_robin(fns, repeat, library=dict.fromkeys(fns, "cnncore"))
        best = min(("direct", "fft"), key=t.__getitem__)
        row = {"size": size, "kernel": k, **{f"{m}_s": v for m, v in t.items()},
               "faster": best, "auto_over_best": t["auto"] / t[best]}
        rows.append(row)
        out(f"  {size:4d}^2 * {k:2d}^2: " + "  ".join(f"{m} {v * 1e3:8.3f} ms"
                                                   for m, v in t.items())
            + f"   faster: {best}, auto/faster x{row['auto_over_best']:.2f}")
    return rows


def bench_activation(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print,
                     size: int | None = None, with_out: bool | None = None,
                     signal: bool | None = None) -> dict:
    """Time relu / sigmoid / tanh / softmax (and, unless ``quick``, leaky_relu / log_softmax)
    forward and backward, and fused cross entropy + gradient, against torch and a NumPy copy.

    Float32, ``size`` elements (default 16 Mi, 4 Mi with ``quick``); softmax over dim 1 of a
    (16384 or 4096, -1) view.  The copy (``x.copy()``: allocates like cnncore does) moves the
    same bytes as the op (backward ops read 2 arrays).  ``with_out`` (default: not ``quick``)
    adds ``out=`` rows against ``np.copyto``; ``signal`` (default: not ``quick``) checks that
    ``correlate2d(method='auto')`` is as fast as the faster of 'direct' and 'fft'.

    Returns ``{"threads", "repeat", "elements", "rows": [{"op", "bytes", "cnncore_s", "gbs",
    "copy_s", "copy_ratio" [, "torch_s", "torch_ratio"]}], "geomean_copy_ratio"
    [, "geomean_torch_ratio"] [, "out_rows"] [, "signal"]}``.
    """
    repeat = check_repeat(repeat)
    threads, torch = _setup(use_torch)
    F = cnncore.functional
    n = size or (4 if quick else 16) * 2**20
    n = max(4096, n - n % 4096)
    with_out = not quick if with_out is None else with_out
    signal = not quick if signal is None else signal
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32) * 4
    g = rng.standard_normal(n, dtype=np.float32)
    x2 = x.reshape(16 * 1024 if n >= 16 * 2**20 else 4096, -1)
    g2 = g.reshape(x2.shape)
    item = x.itemsize
    out(f"activation benchmark: {_versions(torch)}; float32, {threads} thread(s), "
        f"{n / 2**20:.0f} Mi elements ({n * item / 2**20:.0f} MiB per array), round-robin "
        f"median of >= {repeat} runs after warm-up; softmax on {x2.shape}, dim=1")
    out("ratios x: cnncore time / baseline time (< 1 is faster); the copy moves the same "
        "bytes as the op")
    y = {"relu": F.relu(x), "sigmoid": F.sigmoid(x), "tanh": F.tanh(x),
         "softmax": F.softmax(x2, 1), "log_softmax": F.log_softmax(x2, 1)}
    # (label, cnncore, torch name, arrays read + written)
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("relu", lambda: F.relu(x), 2),
        ("sigmoid", lambda: F.sigmoid(x), 2),
        ("tanh", lambda: F.tanh(x), 2),
        ("softmax(dim=1)", lambda: F.softmax(x2, 1), 2),
        ("relu_backward", lambda: F.relu_backward(g, y["relu"]), 3),
        ("sigmoid_backward", lambda: F.sigmoid_backward(g, y["sigmoid"]), 3),
        ("tanh_backward", lambda: F.tanh_backward(g, y["tanh"]), 3),
        ("softmax_backward", lambda: F.softmax_backward(g2, y["softmax"], 1), 3),
    ]
    if not quick:
        cases[4:4] = [("leaky_relu", lambda: F.leaky_relu(x, 0.01), 2),
                      ("log_softmax(dim=1)", lambda: F.log_softmax(x2, 1), 2)]
        cases.append(("log_softmax_backward",
                      lambda: F.log_softmax_backward(g2, y["log_softmax"], 1), 3))
    theirs: dict[str, Callable[[], object]] = {}
    if torch is not None:
        aten = torch.ops.aten
        tx, tg, tx2, tg2 = (torch.from_numpy(a) for a in (x, g, x2, g2))
        ty = {k: torch.from_numpy(v) for k, v in y.items()}
        theirs = {
            "relu": lambda: torch.relu(tx),
            "sigmoid": lambda: torch.sigmoid(tx),
            "tanh": lambda: torch.tanh(tx),
            "softmax(dim=1)": lambda: torch.softmax(tx2, 1),
            "leaky_relu": lambda: torch.nn.functional.leaky_relu(tx, 0.01),
            "log_softmax(dim=1)": lambda: torch.log_softmax(tx2, 1),
            "relu_backward": lambda: aten.threshold_backward(tg, ty["relu"], 0),
            "sigmoid_backward": lambda: aten.sigmoid_backward(tg, ty["sigmoid"]),
            "tanh_backward": lambda: aten.tanh_backward(tg, ty["tanh"]),
            "softmax_backward": lambda: aten._softmax_backward_data(
                tg2, ty["softmax"], 1, torch.float32),
            "log_softmax_backward": lambda: aten._log_softmax_backward_data(
                tg2, ty["log_softmax"], 1, torch.float32),
        }
    copies: dict[int, Callable[[], object]] = {}
    rows = []
    for label, ours, arrays in cases:
        nbytes = arrays * n * item
        copies.setdefault(nbytes, copy_baseline(nbytes, allocate=True))
        fns = {"cnncore": ours, "copy": copies[nbytes]}
        if label in theirs:
            fns["torch"] = theirs[label]
        t = time_round_robin(fns, repeat, library={"copy": "numpy"})
        rows.append(_activation_row(out, label, t, nbytes))

    # fused cross entropy + gradient (torch: forward + autograd backward)
    logits = rng.standard_normal((4096, 1000), dtype=np.float32) * 3
    target = rng.integers(0, 1000, 4096)
    fns = {"cnncore": lambda: F.cross_entropy(logits, target, return_grad=True),
           "copy": copy_baseline(2 * logits.nbytes, allocate=True)}
    if torch is not None:
        tl, tt = torch.from_numpy(logits), torch.from_numpy(target)

        def torch_ce() -> object:
            xl = tl.detach().requires_grad_()
            torch.nn.functional.cross_entropy(xl, tt).backward()
            return xl.grad

        fns["torch"] = torch_ce
    t = time_round_robin(fns, repeat, library={"copy": "numpy"})
    rows.append(_activation_row(out, "cross_entropy+grad", t, 2 * logits.nbytes))

    result: dict[str, Any] = {"threads": threads, "repeat": repeat, "elements": n, "rows": rows,
                              "geomean_copy_ratio": geomean([r["copy_ratio"] for r in rows])}
    summary = f"geomean ratio cnncore/copy {result['geomean_copy_ratio']:.2f}"
    if torch is not None:
        result["geomean_torch_ratio"] = geomean([r["torch_ratio"] for r in rows])
        summary += f", cnncore/torch {result['geomean_torch_ratio']:.2f}"
    out(summary)
    if with_out:
        out("preallocated output (out=) vs np.copyto into a preallocated array:")
        buf = np.empty_like(x)
        result["out_rows"] = [
            _activation_row(out, label, time_round_robin(
                {"cnncore": fn, "copyto": lambda: np.copyto(buf, x)}, repeat,
                library={"copyto": "numpy"}), 2 * n * item, ref="copyto")
            for label, fn in (("relu(out=)", lambda: F.relu(x, out=buf)),
                              ("sigmoid(out=)", lambda: F.sigmoid(x, out=buf)),
                              ("tanh(out=)", lambda: F.tanh(x, out=buf)))]
    if signal:
        result["signal"] = _bench_signal(out, repeat)
    return result


# --------------------------------------------------------------------------------------------
# Training: cnncore vs PyTorch on the same recipe
# --------------------------------------------------------------------------------------------


def _torch_model(torch, name: str):
    nn = torch.nn
    if name == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def _torch_epochs(torch, name, x, y, x_test, y_test, epochs, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    model = _torch_model(torch, name)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        t0 = time.perf_counter()
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss_fn(model(tx[idx]), ty[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x_test[s:s + 1000])).argmax(1)
                          for s in range(0, len(x_test), 1000)])
    return times, float((pred.numpy() == y_test).mean())


def _cnncore_epochs(name, x, y, x_test, y_test, epochs, batch_size, lr, momentum, seed):
    from . import models, nn, optim

    model = models.build(name, rng=seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    times = []
    for e in range(epochs):
        h = model.fit(x, y, optimizer=opt, loss=nn.CrossEntropyLoss(), epochs=1,
                      batch_size=batch_size, verbose=False, seed=seed + e)
        times.append(h["seconds"][0])
    return times, model.evaluate(x_test, y_test)["accuracy"]


def bench_train(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print,
                epochs: int = 2, models: Sequence[str] = ("lenet", "cnn")) -> dict:
    """Seconds per epoch (and img/s) of SGD training, cnncore vs PyTorch, same recipe:
    batch 64, lr 0.05, momentum 0.9, float32, same thread count. Full Fashion-MNIST when it
    is installed, the shipped sample otherwise (or with ``quick``). The fastest of ``epochs``
    epochs is reported (the first includes warm-up); ``repeat`` is not used (whole epochs are
    the samples).

    Returns ``{"threads", "data", "epochs", "rows": [{"model", "cnncore_s", "cnncore_acc"
    [, "torch_s", "torch_acc", "ratio"]}]}``.
    """
    from . import datasets

    threads, torch = _setup(use_torch)
    source = "sample"
    if not quick:
        try:
            (x, y), (xt, yt) = datasets.load_fashion_mnist()
            source = "Fashion-MNIST"
        except FileNotFoundError:
            pass
    if source == "sample":
        (x, y), (xt, yt) = datasets.load_sample()
    out(f"training benchmark: {source} ({len(x)} train / {len(xt)} test), batch 64, SGD lr 0.05 "
        f"momentum 0.9, float32, {threads} thread(s); best of {epochs} epoch(s)")
    out(f"{'model':<8}{'cnncore s/ep':>13}{'img/s':>9}{'acc':>8}{'torch s/ep':>12}"
        f"{'img/s':>9}{'acc':>8}{'ratio':>7}")
    rows = []
    for name in models:
        _switch_library("cnncore", SETTLE_S)
        t_c, acc_c = _cnncore_epochs(name, x, y, xt, yt, epochs, 64, 0.05, 0.9, 0)
        row = {"model": name, "cnncore_s": min(t_c), "cnncore_acc": acc_c}
        line = f"{name:<8}{min(t_c):13.2f}{len(x) / min(t_c):9.0f}{100 * acc_c:7.2f}%"
        if torch is not None:
            _switch_library("torch", SETTLE_S)
            t_t, acc_t = _torch_epochs(torch, name, x, y, xt, yt, epochs, 64, 0.05, 0.9, 0)
            row.update(torch_s=min(t_t), torch_acc=acc_t, ratio=min(t_c) / min(t_t))
            line += (f"{min(t_t):12.2f}{len(x) / min(t_t):9.0f}{100 * acc_t:7.2f}%"
                     f"{row['ratio']:7.2f}")
        out(line)
        rows.append(row)
    return {"threads": threads, "data": source, "epochs": epochs, "rows": rows}


SUITES: dict[str, Callable[..., dict]] = {
    "conv": bench_conv, "pool": bench_pool, "activation": bench_activation, "train": bench_train}
"""Suites of ``cnncore bench --suite``; each is called as ``fn(quick=, use_torch=, repeat=)``
and returns a dict of its numbers."""


# --------------------------------------------------------------------------------------------
# Command-line scripts in benchmarks/
# --------------------------------------------------------------------------------------------


def script_parser(doc: str | None, repeat: bool = True) -> argparse.ArgumentParser:
    """Argument parser with the options shared by the ``benchmarks/bench_*.py`` scripts:
    ``--quick``, ``--no-torch``, ``--threads N``, ``--json FILE`` (and ``--repeat N``)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer / smaller cases")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for cnncore and torch (default: cnncore's)")
    if repeat:
        parser.add_argument("--repeat", type=int, default=MIN_REPEAT,
                            help=f"timed runs per median (at least {MIN_REPEAT})")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the numbers as JSON to FILE")
    return parser


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def run_script(suite: Callable[..., dict], args: argparse.Namespace, **kwargs: Any) -> dict:
    """Run ``suite`` with the shared options in ``args`` (see :func:`script_parser`) plus
    ``kwargs``; write ``{"suite", "argv", "versions", "result"}`` to ``args.json`` if given."""
    if args.threads is not None:
        cnncore.set_num_threads(args.threads)
    result = suite(quick=args.quick, use_torch=not args.no_torch,
                   repeat=getattr(args, "repeat", MIN_REPEAT), **kwargs)
    if args.json:
        torch = None if args.no_torch else try_import_torch()
        name = next((k for k, v in SUITES.items() if v is suite), suite.__name__)
        doc = {"suite": name, "argv": sys.argv[1:],
               "versions": {"cnncore": cnncore.__version__, "numpy": np.__version__,
                            "torch": getattr(torch, "__version__", None)},
               "result": result}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=_json_default)
            f.write("\n")
    return result
