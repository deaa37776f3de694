"""Data-parallel training over MPI: one epoch of LeNet-5 and of the README CNN on Fashion-MNIST,
1 process x 2 threads against 2 processes x 1 thread, and a projected scaling table.

    python benchmarks/bench_distributed.py [--limit N] [--batch-size 64] [--models lenet cnn]
    python benchmarks/bench_distributed.py --models resnet20 --limit 2048   # + SyncBatchNorm

The epochs run as child processes (``mpirun -n 2`` for the two-rank case), each with the same
seed and the same ``fit(distributed=True)`` algorithm (4 fixed parts per global batch), so the
three runs end with bit-identical weights -- the script checks that too.  Plain ``fit`` (no
parts) is timed alongside as the baseline.  A model with BatchNorm (``resnet20``, taken at
28x28) is also timed with ``nn.SyncBatchNorm`` (global-batch statistics: the parts of a rank
run in lockstep and exchange statistics at every BatchNorm), on 1 and 2 processes.

The scaling table projects K = 1..64 ranks on separate machines from two measurements made
here: the compute time of one part (its forward and backward on 1 thread) and the time of an
``allgather`` of the model's gradient between 2 ranks over loopback (which is what a step's
reduction costs per exchanged copy).  A step on K ranks computes ``parts / K`` parts per rank
and exchanges K gradient copies (one subtree sum per rank).  What limits it: ``parts`` (the
process count cannot exceed it; 4 by default -- set ``distributed_parts``), the per-part
overhead for small parts, and the allgather growing with K (a reduce-scatter would not keep
the fixed order).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, sys
import numpy as np
import cnncore
from cnncore import datasets, models, nn
mode, name, out = sys.argv[1], sys.argv[2], sys.argv[5]
limit, batch, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
cnncore.set_num_threads(threads)
try:
    (x, y), _ = datasets.load_fashion_mnist()
    source = "fashion-mnist"
except Exception:
    (x, y), _ = datasets.load_sample()
    source = "sample"
x, y = x[:limit], y[:limit]
kw = dict(in_channels=1, input_size=28) if name.startswith("resnet") else {}
model = models.build(name, rng=0, **kw)
if mode == "sync":
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
opt = cnncore.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
kw = dict(distributed=True) if mode != "plain" else {}
h = model.fit(x, y, optimizer=opt, loss=nn.CrossEntropyLoss(), epochs=1, batch_size=batch,
              seed=3, verbose=0, **kw)
secs = h["seconds"][-1]  # the epoch itself (not MPI start-up or fit's checks)
rank = 0
if mode != "plain":
    from cnncore.distributed import world
    rank = world().rank
if rank == 0:
    np.savez(out + ".npz", *model.state_dict().values())
    json.dump({"seconds": secs, "source": source, "n": len(x), "loss": h["loss"][-1]},
              open(out + ".json", "w"))
"""

PROBE = r"""
import sys, time
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
n = int(sys.argv[1])
a = np.ones(n, np.float32)
out = np.empty((comm.size, n), np.float32)
for _ in range(5):
    comm.Allgather(a, out)
ts = []
for _ in range(30):
    comm.Barrier()
    t = time.perf_counter()
    comm.Allgather(a, out)
    ts.append(time.perf_counter() - t)
if comm.rank == 0:
    print(sorted(ts)[len(ts) // 2])
"""


def _mpirun() -> list[str]:
    exe = shutil.which("mpirun") or shutil.which("mpirun", path=os.path.dirname(sys.executable))
    if exe is None:
        sys.exit("bench_distributed: no mpirun (pip install 'cnncore[mpi]')")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if "Open MPI" in version or "prte" in version.lower() else []
    if flags and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return [exe, *flags]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_distributed: {' '.join(cmd[:6])} failed:\n{proc.stderr[-3000:]}")


def _epoch(tmp: str, mode: str, name: str, limit: int, batch: int, ranks: int, threads: int):
    out = os.path.join(tmp, f"{mode}-{name}-{ranks}")
    child = os.path.join(tmp, "child.py")
    cmd = [sys.executable, child, mode, name, str(limit), str(batch), out, str(threads)]
    if ranks > 1:
        cmd = [*_mpirun(), "-n", str(ranks), *cmd]
    env_threads = dict(os.environ, CNNCORE_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_threads)
    if proc.returncode != 0:
        sys.exit(f"bench_distributed: {mode} {name} x{ranks} failed:\n{proc.stderr[-3000:]}")
    with open(out + ".json") as f:
        info = json.load(f)
    with np.load(out + ".npz") as f:
        info["weights"] = [f[k] for k in f.files]
    return info


def _allgather_seconds(tmp: str, n_floats: int) -> float:
    probe = os.path.join(tmp, "probe.py")
    proc = subprocess.run(
        [*_mpirun(), "-n", "2", sys.executable, probe, str(n_floats)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"bench_distributed: allgather probe failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _build(name: str):
    from cnncore import models

    kw = dict(in_channels=1, input_size=28) if name.startswith("resnet") else {}
    return models.build(name, rng=0, **kw)


def _part_seconds(name: str, part: int, repeat: int = 21) -> float:
    """Median time of one part's forward + backward on 1 thread."""
    import cnncore
    from cnncore import nn

    cnncore.set_num_threads(1)
    model = _build(name)
    loss = nn.CrossEntropyLoss()
    x = np.random.default_rng(0).random((part, 1, 28, 28), dtype=np.float32)
    y = np.zeros(part, np.int64)
    model.train()
    ts = []
    for i in range(repeat + 2):
        t = time.perf_counter()
        out = model(x)
        loss(out, y)
        model.backward(loss.backward(), input_grad=False)
        if i >= 2:
            ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _load() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=60000, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--models", nargs="+", default=["lenet", "cnn"])
    args = p.parse_args()
    import cnncore

    print(
        f"cnncore {cnncore.__version__}; {os.cpu_count()} cores; batch {args.batch_size}; "
        f"load average {_load()} (other work on the machine slows every timing)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "child.py"), "w") as f:
            f.write(CHILD)
        with open(os.path.join(tmp, "probe.py"), "w") as f:
            f.write(PROBE)
        for name in args.models:
            plain = _epoch(tmp, "plain", name, args.limit, args.batch_size, 1, 2)
            one = _epoch(tmp, "dist", name, args.limit, args.batch_size, 1, 2)
            two = _epoch(tmp, "dist", name, args.limit, args.batch_size, 2, 1)
            pairs = zip(one["weights"], two["weights"], strict=True)
            same = all(np.array_equal(a, b) for a, b in pairs)
            print(
                f"{name}: {one['n']} images ({one['source']}); one epoch: plain fit 1x2 threads "
                f"{plain['seconds']:.2f} s; distributed 1 process x 2 threads "
                f"{one['seconds']:.2f} s; 2 processes x 1 thread {two['seconds']:.2f} s "
                f"(ratio 2x1 / 1x2 = {two['seconds'] / one['seconds']:.2f}); "
                f"weights 1 vs 2 processes bit-identical: {same}"
            )
            print(f"  (load average now {_load()})")
            model = _build(name)
            if any(isinstance(m, cnncore.nn.BatchNorm2d) for m in model.children()):
                s_one = _epoch(tmp, "sync", name, args.limit, args.batch_size, 1, 2)
                s_two = _epoch(tmp, "sync", name, args.limit, args.batch_size, 2, 1)
                pairs = zip(s_one["weights"], s_two["weights"], strict=True)
                same = all(np.array_equal(a, b) for a, b in pairs)
                print(
                    f"  with SyncBatchNorm: 1 process x 2 threads {s_one['seconds']:.2f} s "
                    f"({s_one['seconds'] / one['seconds']:.2f} x BatchNorm2d's); 2 processes "
                    f"x 1 thread {s_two['seconds']:.2f} s ({s_two['seconds'] / two['seconds']:.2f}"
                    f" x); weights 1 vs 2 processes bit-identical: {same}"
                )
            n_params = sum(q.data.size for q in model.parameters())
            parts = 4
            part = args.batch_size // parts
            t_part = _part_seconds(name, part)
            t_ag = _allgather_seconds(tmp, n_params)
            steps = -(-args.limit // args.batch_size)
            print(
                f"  scaling projection ({n_params} parameters, {steps} steps/epoch): one part "
                f"({part} images) fwd+bwd on 1 thread {t_part * 1e3:.2f} ms, allgather of the "
                f"gradient between 2 ranks {t_ag * 1e3:.3f} ms"
            )
            print("  ranks  parts  epoch s (projected)  speed-up")
            base = steps * parts * t_part
            for k in (1, 2, 4, 8, 16, 32, 64):
                kparts = max(parts, k)  # distributed_parts must be >= the process count
                per_rank = kparts // k
                part_k = max(1, args.batch_size // kparts)
                t_k = _part_seconds(name, part_k) if part_k != part else t_part
                comm = 0.0 if k == 1 else t_ag * (k - 1)  # k copies exchanged, linear model
                epoch = steps * (per_rank * t_k + comm)
                print(f"  {k:5d}  {kparts:5d}  {epoch:19.2f}  {base / epoch:8.2f}")


if __name__ == "__main__":
    main()
