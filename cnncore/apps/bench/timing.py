"""The timing harness of the benchmark suites: medians, round-robin series, roofs, memory.

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


def _samples(
    fn: Callable[[], object],
    count: int,
    inner: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    out = []
    for _ in range(count):
        t0 = clock()
        for _ in range(inner):
            fn()
        out.append((clock() - t0) / inner)
    return out


def check_repeat(repeat: int) -> int:
    """``repeat`` raised to ``MIN_REPEAT`` (medians of fewer runs are too noisy to quote)."""
    return max(MIN_REPEAT, int(repeat))


def median_time(
    fn: Callable[[], object],
    repeat: int = 7,
    warmup: int = 2,
    min_time: float = 0.0,
    library: str = "cnncore",
    settle: float = SETTLE_S,
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` (>= 7) runs after ``warmup``
    (>= 1) untimed runs.

    If one run is shorter than ``min_time`` the runs are batched so each sample lasts at least
    that long (the per-call time is reported).  ``library`` names what ``fn`` runs: if it
    differs from the library timed last, sleep ``settle`` seconds first.
    """
    _switch_library(library, settle)
    inner = _warm_up(fn, warmup, min_time)
    return statistics.median(_samples(fn, check_repeat(repeat), inner))


def time_round_robin(
    fns: Mapping[str, Callable[[], object]],
    repeat: int = 7,
    *,
    rounds: int = 3,
    warmup: int = 1,
    min_time: float = 0.0,
    library: Mapping[str, str] | None = None,
    settle: float = SETTLE_S,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median wall time (seconds) of each callable in ``fns``, timed round-robin.

    Each of ``rounds`` rounds times every candidate in turn as a series: sleep ``settle``
    seconds if its library differs from the one timed last, ``warmup`` (>= 1) untimed calls,
    then ``ceil(repeat / rounds)`` timed samples; so each median covers at least
    ``max(repeat, 7)`` samples spread over the whole row.  ``library`` maps candidate names to
    library names (default: the candidate name itself).  ``min_time`` batches calls as in
    :func:`median_time` (the batch size is fixed in the first round).  ``clock``: what is
    measured -- wall time by default; ``time.thread_time`` measures the CPU time of the
    calling thread (single-threaded Python overheads on a shared machine, where wall time
    at microsecond scale is dominated by preemption).
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
            samples[name] += _samples(fn, per_round, inner[name], clock)
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
        f", torch {torch.__version__}" if torch is not None else " (no torch: no ratios)"
    )


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
from cnncore.apps.bench.timing import peak_extra_memory
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
    proc = subprocess.run(
        [sys.executable, "-c", _CONV_MEMORY_PROBE, str(n), str(threads)],
        env=env,
        cwd=pkg_parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not proc.stdout.split():
        raise RuntimeError(f"the memory probe failed: {proc.stderr.strip()[-800:]}")
    value = proc.stdout.split()[-1]
    return None if value == "none" else max(0, int(value))
