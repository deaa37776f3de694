"""Autotuning of the convolution algorithm: timing the candidates, and the tuning cache.

:mod:`cnncore.ops.conv_dispatch` decides *when* to tune and which algorithms are candidates;
this module measures them (:func:`measure`) and keeps the winners (:class:`TuneCache`: in
memory, and in the JSON file named by ``$CNNCORE_TUNE_CACHE`` when it is set).

**What is measured.**  One pass of one convolution -- a :class:`ConvCase`: the pass
(``"forward"``, ``"input"`` or ``"weight"`` gradient), conv2d's input and weight shapes, the
groups, the resolved geometry and the dtype -- on random data of exactly those shapes, by
calling the kernels directly with each candidate algorithm.  Each candidate is called once
(warm-up); a candidate whose warm-up took :data:`GIVE_UP` times the fastest warm-up is
dropped.  The others are then timed in interleaved rounds (A, B, C, A, B, C, ...: a change
of machine load hits all of them alike), each sample a batch of calls lasting about
:data:`SAMPLE_S`, for at least :data:`MIN_ROUNDS` rounds and until :data:`BUDGET_S` per
candidate is spent (at most :data:`MAX_ROUNDS`); a candidate's time is its fastest sample
(preemption only ever adds time).  The heuristic's choice (the ``preferred`` candidate) keeps
its place unless another is at least :data:`MARGIN` faster, both at its fastest sample and
in the median, *and* faster in :data:`WIN_ROUNDS` of the rounds, so timing noise does not
flip a choice between near-equal algorithms.

**Thread count.**  The timing runs with :func:`tune_threads` threads -- the cores this
process may use, whatever :func:`cnncore.set_num_threads` says -- and the choice is cached
without the thread count.  Each algorithm is bit-identical for any thread count, but two
algorithms differ in the last bits, so a choice that depended on the thread count would make
the results depend on it; this way a run gives the same bits at 1, 2 or 16 threads.  (Timing
noise can still make two *processes* choose differently for near-equal algorithms: a run
that must repeat bit for bit across processes uses a fixed cache file, or no tuning.)

**The cache file** (``$CNNCORE_TUNE_CACHE``, opt-in) is JSON, never executed: a header
(``"format": "cnncore-tune-cache"``, ``"version": 1``) and a list of entries, one per tuned
pass, each naming its SIMD level and tuning thread count; entries of other SIMD levels or
thread counts (another machine, ``CNNCORE_SIMD=avx2``) are kept in the file and ignored.
It is checked on load (size first, then every field's type and range, and that the
algorithm applies to the pass); a file that is not a valid cache is ignored with a
:class:`RuntimeWarning` and never overwritten (it may be something else, named by mistake),
and invalid entries of a valid file are dropped with a warning.  Writes are atomic (a
temporary file in the same directory, then ``os.replace``); concurrent writers do not
corrupt it, the last one wins.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .._config import _usable_cores, blas_single_thread, load_kernels
from .._geometry import ConvGeometry
from .._validation import MAX_PARAM

__all__ = [
    "ConvCase",
    "TuneCache",
    "measure",
    "tune_threads",
    "ENV_CACHE",
    "BUDGET_S",
    "SAMPLE_S",
    "MIN_ROUNDS",
    "MAX_ROUNDS",
    "WIN_ROUNDS",
    "GIVE_UP",
    "MARGIN",
]

#: Environment variable naming the persistent cache file (unset: results stay in memory).
ENV_CACHE = "CNNCORE_TUNE_CACHE"
#: Time spent timing one candidate (seconds), beyond its warm-up call.
BUDGET_S = 0.02
#: Length of one timed sample (seconds): short kernels are called this long in a batch.
SAMPLE_S = 0.001
#: Interleaved rounds of samples: at least / at most.
MIN_ROUNDS, MAX_ROUNDS = 5, 15
#: Share of the rounds a challenger must win against the preferred algorithm.
WIN_ROUNDS = 0.75
#: A candidate whose warm-up took this many times the fastest warm-up is dropped.
GIVE_UP = 3.0
#: Another algorithm replaces the preferred one only when at least this much faster.
MARGIN = 0.08
#: Passes a ConvCase can be, in conv2d's terms.
PASSES = ("forward", "input", "weight")
#: A case whose arrays would take more bytes than this is not timed (the heuristic decides).
MAX_TUNE_BYTES = 1 << 29
#: A cache file larger than this is not read.
MAX_FILE_BYTES = 32 << 20
_FORMAT = "cnncore-tune-cache"
_VERSION = 1
_DTYPES = ("float32", "float64")
# The fields of a file entry that identify it (the rest is its result).
_KEY_FIELDS = (
    "pass",
    "input",
    "weight",
    "groups",
    "stride",
    "padding",
    "dilation",
    "output",
    "dtype",
    "simd",
    "threads",
)


class ConvCase(NamedTuple):
    """One pass of one convolution, in conv2d's terms (for ``conv_transpose2d``, conv2d's
    input is the transposed convolution's output: its forward is conv2d's ``"input"``
    pass).  The key of a tuned choice."""

    which: str  # "forward", "input" or "weight"
    x_shape: tuple[int, int, int, int]  # conv2d's input (N, C, H, W)
    w_shape: tuple[int, int, int, int]  # (C_out, C_in / groups, kH, kW)
    groups: int
    geo: ConvGeometry
    dtype: str  # "float32" or "float64"


def tune_threads() -> int:
    """The thread count the timing runs with: the cores this process may use (see the
    module docstring: the choice must not depend on :func:`cnncore.set_num_threads`)."""
    return _usable_cores()


def case_bytes(case: ConvCase) -> int:
    """Bytes of the arrays :func:`measure` allocates for ``case``."""
    n, c, h, w = case.x_shape
    k = case.w_shape[0]
    ho, wo = case.geo.out
    item = np.dtype(case.dtype).itemsize
    return item * (2 * n * c * h * w + 2 * math.prod(case.w_shape) + n * k * ho * wo)


_kernels: Any = None


def _conv_kernels() -> Any:
    global _kernels
    if _kernels is None:
        _kernels = load_kernels("cnncore.ops._conv")[0]
    return _kernels


def _runner(case: ConvCase, n_threads: int) -> Callable[[int], None]:
    """``run(code)``: the kernel of ``case``'s pass with algorithm ``code``, on random data
    of the case's shapes (allocated once, shared by all candidates)."""
    kern = _conv_kernels()
    dtype = np.dtype(case.dtype)
    rng = np.random.default_rng(0)
    n, c, h, w = case.x_shape
    k = case.w_shape[0]
    ho, wo = case.geo.out
    x = rng.standard_normal(case.x_shape).astype(dtype)
    weight = rng.standard_normal(case.w_shape).astype(dtype)
    go = rng.standard_normal((n, k, ho, wo)).astype(dtype)
    (sh, sw), (ph, pw), (dh, dw) = case.geo.stride, case.geo.padding, case.geo.dilation
    args = (sh, sw, ph, pw, dh, dw, case.groups)
    if case.which == "forward":
        y = np.full((n, k, ho, wo), 0, dtype)  # (filled: pages touched before any timing)
        return lambda code: kern.conv2d_forward(x, weight, None, y, *args, code, n_threads)
    if case.which == "input":
        dx = np.full(case.x_shape, 0, dtype)
        return lambda code: kern.conv2d_backward_input(go, weight, dx, *args, code, n_threads)
    dwt = np.full(case.w_shape, 0, dtype)
    return lambda code: kern.conv2d_backward_weight(go, x, dwt, None, *args, code, n_threads)


def measure(
    case: ConvCase, candidates: Mapping[str, int], preferred: str
) -> tuple[str, dict[str, float]]:
    """Time each candidate (name -> kernel algorithm code) on ``case``; returns the winner's
    name and the best time of each candidate in microseconds (see the module docstring for
    the procedure).  ``preferred`` must be one of ``candidates``."""
    if len(candidates) == 1:
        return preferred, {}
    run = _runner(case, tune_threads())
    clock = time.perf_counter
    first: dict[str, float] = {}
    with blas_single_thread():
        for name, code in candidates.items():
            t0 = clock()
            run(code)  # warm-up: caches, the kernel's first scratch allocation
            first[name] = clock() - t0
        quickest = min(first.values())
        alive = [n for n in candidates if n == preferred or first[n] <= GIVE_UP * quickest]
        inner = {n: max(1, math.ceil(SAMPLE_S / max(first[n], 1e-7))) for n in alive}
        samples: dict[str, list[float]] = {n: [] for n in alive}
        spent = 0.0
        while len(samples[preferred]) < MIN_ROUNDS or (
            spent < BUDGET_S * len(alive) and len(samples[preferred]) < MAX_ROUNDS
        ):
            for name in alive:
                code, k = candidates[name], inner[name]
                t0 = clock()
                for _ in range(k):
                    run(code)
                dt = clock() - t0
                spent += dt
                samples[name].append(dt / k)
    best = {n: min(v) for n, v in samples.items()}
    times = {**first, **best}  # (a dropped candidate is reported with its warm-up time)
    winner = min(best, key=best.__getitem__)
    # the challenger must be MARGIN faster at its best and in the median, and faster in most
    # rounds (a burst of load during some of the preferred one's samples must not hand it
    # the place)
    rounds_won = sum(a < b for a, b in zip(samples[winner], samples[preferred], strict=True))
    if (
        best[winner] > (1.0 - MARGIN) * best[preferred]
        or statistics.median(samples[winner])
        > (1.0 - MARGIN) * statistics.median(samples[preferred])
        or rounds_won < WIN_ROUNDS * len(samples[preferred])
    ):
        winner = preferred
    return winner, {name: round(t * 1e6, 1) for name, t in times.items()}


# --------------------------------------------------------------------------------------------
# The cache: in memory, and the optional file
# --------------------------------------------------------------------------------------------


def _entry(case: ConvCase, algorithm: str, times: Mapping[str, float], simd: str) -> dict:
    geo = case.geo
    return {
        "pass": case.which,
        "input": list(case.x_shape),
        "weight": list(case.w_shape),
        "groups": case.groups,
        "stride": list(geo.stride),
        "padding": list(geo.padding),
        "dilation": list(geo.dilation),
        "output": list(geo.out),
        "dtype": case.dtype,
        "simd": simd,
        "threads": tune_threads(),
        "algorithm": algorithm,
        "times_us": dict(times),
    }


def _ints(value: Any, n: int, low: int) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(type(v) is int and low <= v <= MAX_PARAM for v in value)
    ):
        raise ValueError(f"expected a list of {n} ints in [{low}, {MAX_PARAM}], got {value!r:.80}")
    return tuple(value)


def _parse_entry(raw: Any, applies: Callable[[ConvCase, str], bool]) -> tuple[ConvCase, str]:
    """``(case, algorithm)`` of a file entry; ValueError naming what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"an entry must be an object, got {type(raw).__name__}")
    which = raw.get("pass")
    if which not in PASSES:
        raise ValueError(f"'pass' must be one of {list(PASSES)}, got {which!r:.80}")
    dtype = raw.get("dtype")
    if dtype not in _DTYPES:
        raise ValueError(f"'dtype' must be one of {list(_DTYPES)}, got {dtype!r:.80}")
    groups = raw.get("groups")
    if type(groups) is not int or not 1 <= groups <= MAX_PARAM:
        raise ValueError(f"'groups' must be a positive int, got {groups!r:.80}")
    x_shape = _ints(raw.get("input"), 4, 1)
    w_shape = _ints(raw.get("weight"), 4, 1)
    geo = ConvGeometry(
        w_shape[2:],
        _ints(raw.get("stride"), 2, 1),
        _ints(raw.get("padding"), 2, 0),
        _ints(raw.get("dilation"), 2, 1),
        _ints(raw.get("output"), 2, 1),
    )
    if w_shape[1] * groups != x_shape[1] or w_shape[0] % groups:
        raise ValueError(
            f"'input' {list(x_shape)}, 'weight' {list(w_shape)} and 'groups' {groups} "
            f"do not describe a convolution"
        )
    for key in ("simd", "algorithm"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"{key!r} must be a string, got {raw.get(key)!r:.80}")
    if type(raw.get("threads")) is not int:
        raise ValueError(f"'threads' must be an int, got {raw.get('threads')!r:.80}")
    case = ConvCase(which, x_shape, w_shape, groups, geo, dtype)  # type: ignore[arg-type]
    if not applies(case, raw["algorithm"]):
        raise ValueError(f"algorithm {raw['algorithm']!r:.80} does not apply to this pass")
    return case, raw["algorithm"]


class TuneCache:
    """Tuned choices: ``ConvCase -> algorithm name`` in memory, backed by the JSON file
    ``path`` (None: memory only).  ``applies(case, name)`` says whether an algorithm may
    run a case (entries for which it does not are invalid); ``simd`` is the SIMD level of
    the loaded convolution kernels.
    """

    def __init__(
        self, path: str | None, simd: str, applies: Callable[[ConvCase, str], bool]
    ) -> None:
        self.path = path
        self.simd = simd
        self.applies = applies
        self.choices: dict[ConvCase, str] = {}
        self.entries: dict[ConvCase, dict] = {}  # this process's results, as written
        self.writable = path is not None
        self.lock = threading.RLock()
        self._defer = 0
        self._dirty = False
        if path is not None:
            self._load()

    # -- file --------------------------------------------------------------------------
    def _read(self) -> list[Any] | None:
        """The entries of the file (None if it does not exist); ValueError if it is not a
        valid cache file."""
        assert self.path is not None
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"cannot read it ({exc})") from None
        if size > MAX_FILE_BYTES:
            raise ValueError(f"it has {size} bytes, more than the {MAX_FILE_BYTES} a cache may")
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            doc = json.loads(data.decode("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"it is not JSON ({type(exc).__name__}: {exc})") from None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != _FORMAT
            or doc.get("version") != _VERSION
        ):
            raise ValueError(
                f"it is not a cnncore tuning cache (expected an object with "
                f'"format": "{_FORMAT}", "version": {_VERSION})'
            )
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise ValueError('its "entries" must be a list')
        return entries

    def _load(self) -> None:
        try:
            entries = self._read()
        except ValueError as exc:
            warnings.warn(
                f"cnncore: ignoring the tuning cache {self.path!r} (${ENV_CACHE}): {exc}. "
                f"Tuned choices stay in memory; the file is left as it is",
                RuntimeWarning,
                stacklevel=4,
            )
            self.writable = False
            return
        bad = []
        for raw in entries or ():
            try:
                case, name = _parse_entry(raw, self.applies)
            except ValueError as exc:
                bad.append(str(exc))
                continue
            if raw["simd"] == self.simd and raw["threads"] == tune_threads():
                self.choices[case] = name
        if bad:
            warnings.warn(
                f"cnncore: the tuning cache {self.path!r} (${ENV_CACHE}) has {len(bad)} "
                f"invalid entr{'y' if len(bad) == 1 else 'ies'}, ignored (first: {bad[0]})",
                RuntimeWarning,
                stacklevel=4,
            )

    def _write(self) -> None:
        """Merge this process's entries into the file, atomically."""
        if not self.writable or self.path is None:
            return
        try:
            current = self._read() or []
        except ValueError:
            return  # (became invalid since it was loaded: leave it alone)
        ours = {self._file_key(e) for e in self.entries.values()}
        kept = []
        for raw in current:
            try:
                _parse_entry(raw, self.applies)
            except ValueError:
                continue
            if self._file_key(raw) not in ours:
                kept.append(raw)
        doc = {
            "format": _FORMAT,
            "version": _VERSION,
            "entries": kept + list(self.entries.values()),
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".cnncore-tune-", suffix=".json", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            warnings.warn(
                f"cnncore: cannot write the tuning cache {self.path!r} (${ENV_CACHE}): {exc}",
                RuntimeWarning,
                stacklevel=4,
            )
            self.writable = False

    @staticmethod
    def _file_key(raw: dict) -> tuple:
        return tuple(
            tuple(v) if isinstance(v, list) else v for v in (raw.get(k) for k in _KEY_FIELDS)
        )

    # -- use ---------------------------------------------------------------------------
    def get(self, case: ConvCase) -> str | None:
        return self.choices.get(case)

    def put(self, case: ConvCase, algorithm: str, times: Mapping[str, float]) -> None:
        with self.lock:
            self.choices[case] = algorithm
            self.entries[case] = _entry(case, algorithm, times, self.simd)
            if self._defer:
                self._dirty = True
            else:
                self._write()

    def deferred_writes(self) -> _Deferred:
        """Context manager: write the file once, when the block ends (``tune()``)."""
        return _Deferred(self)

    def clear(self) -> None:
        """Forget every choice (memory only; the file is not changed)."""
        with self.lock:
            self.choices.clear()
            self.entries.clear()


class _Deferred:
    def __init__(self, cache: TuneCache) -> None:
        self.cache = cache

    def __enter__(self) -> None:
        with self.cache.lock:
            self.cache._defer += 1

    def __exit__(self, *exc: Any) -> None:
        cache = self.cache
        with cache.lock:
            cache._defer -= 1
            if cache._defer == 0 and cache._dirty:
                cache._dirty = False
                cache._write()
