"""Data-parallel training over MPI: the fixed-order reduction (always on) and real
``mpirun`` runs whose weights must equal the single-process run's bit for bit (when mpi4py
and mpirun are installed; .ci/run installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnncore
from cnncore.distributed import (
    _subtrees_align,
    owned_parts,
    owner_of,
    part_bounds,
    tree_sum,
)


@pytest.mark.parametrize("n, parts", [(0, 4), (3, 4), (64, 4), (65, 4), (130, 8), (7, 1)])
def test_part_bounds_cover_the_batch_in_order(n, parts):
    bounds = part_bounds(n, parts)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert [len(s) for s in np.array_split(np.arange(n), parts)] == sizes


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7, 8, 16])
def test_owned_parts_partition_the_parts(parts):
    for size in range(1, parts + 1):
        seen = [p for r in range(size) for p in owned_parts(parts, size, r)]
        assert seen == list(range(parts))
        for r in range(size):
            assert all(owner_of(p, parts, size) == r for p in owned_parts(parts, size, r))


def test_tree_sum_is_not_a_left_fold():
    """The reduction order is really fixed: values whose sum depends on the order."""
    a = [np.array([1e16]), np.array([1.0]), np.array([-1e16]), np.array([1.0])]
    assert tree_sum(a)[0] == (1e16 + 1.0) + (-1e16 + 1.0)
    assert ((1e16 + 1.0) + -1e16) + 1.0 != tree_sum(a)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [4, 8, 16])
def test_aligned_subtree_sums_equal_the_whole_tree(dtype, parts):
    """What GradientSum relies on: ranks summing their own aligned blocks, then the ranks'
    sums combined by the same tree, give the whole tree's bits -- for every aligned K."""
    rng = np.random.default_rng(parts)
    leaves = [
        (rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 8)).astype(dtype)
        for _ in range(parts)
    ]
    whole = tree_sum(leaves)
    for size in range(1, parts + 1):
        if not _subtrees_align(parts, size):
            continue
        partial = [tree_sum([leaves[p] for p in owned_parts(parts, size, r)]) for r in range(size)]
        np.testing.assert_array_equal(tree_sum(partial), whole)


def test_subtree_alignment_rule():
    assert [k for k in range(1, 9) if _subtrees_align(8, k)] == [1, 2, 4, 8]
    assert [k for k in range(1, 5) if _subtrees_align(4, k)] == [1, 2, 4]
    assert not _subtrees_align(6, 2)  # 6 leaves: no power-of-two tree


# --------------------------------------------------------------------------------------------
# Real runs under mpirun
# --------------------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent


def _mpirun() -> list[str]:
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpirun") or shutil.which("mpirun", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("no mpirun on PATH (pip install 'cnncore[mpi]' brings Open MPI)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if ("Open MPI" in version or "prte" in version.lower()) else []
    if flags and hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")  # Open MPI refuses root without it (CI runs as root)
    return [exe, *flags]


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(cnncore.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _fit(
    tmp_path: Path, kind: str, n: int | None, script: str = "fit_script.py"
) -> dict[str, np.ndarray]:
    out = tmp_path / f"{kind}-{n}.npz"
    cmd = [sys.executable, str(HERE / "mpi" / script), str(out), kind]
    if script == "resnet_script.py":
        cmd.append(str(tmp_path / f"files-{kind}-{n}"))
    if n is not None:
        cmd = [*_mpirun(), "-n", str(n), *cmd]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


_REFERENCES: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _reference(tmp_path_factory, kind: str, script: str = "fit_script.py"):
    """The single-process run (computed once per session)."""
    if (script, kind) not in _REFERENCES:
        folder = tmp_path_factory.mktemp("reference")
        _REFERENCES[script, kind] = _fit(folder, kind, None, script)
    return _REFERENCES[script, kind]


@pytest.mark.parametrize(
    "kind, counts", [("lenet", (2, 3, 4)), ("threads", (2,)), ("graph", (2, 4))]
)
def test_weights_are_bit_identical_for_any_process_count(tmp_path, tmp_path_factory, kind, counts):
    """The same seeded distributed fit, in one plain process and under mpirun -n K (K = 3
    takes the gather-every-part path; ``threads`` runs 1 thread per rank; ``graph`` is a
    residual graph model with Dropout and augmentation): the final weights are the same
    bits."""
    ref = _reference(tmp_path_factory, "graph" if kind == "graph" else "lenet")
    for n in counts:
        got = _fit(tmp_path, kind, n)
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{kind}, {n} ranks, {k}")


@pytest.mark.parametrize("kind", ["bn", "sync"])
def test_resnet_with_callbacks_scheduler_augmentation_and_validation(
    tmp_path, tmp_path_factory, kind
):
    """A small ResNet-20 graph model (BatchNorm2d per part, or SyncBatchNorm over the global
    batch) trained with validation data, EarlyStopping, ModelCheckpoint, CSVLogger, a
    OneCycleLR scheduler, augmentation and a top-3 metric, a last batch of 2 images (ranks
    without samples in it), then a distributed evaluate: for K = 1, 2 and 4 the weights,
    running statistics, per-epoch metrics (``val_*`` equal to a single-process evaluate
    each epoch -- the script checks that on every rank) and the evaluation are the same
    bits, and only rank 0 wrote the checkpoints and the CSV log."""
    ref = _reference(tmp_path_factory, kind, "resnet_script.py")
    assert len(ref["history/val_loss"]) == 3
    assert sorted(ref["files"]) == ["ckpt-1.npz", "ckpt-2.npz", "ckpt-3.npz", "log.csv"]
    for n in (2, 4):
        got = _fit(tmp_path, kind, n, "resnet_script.py")
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{kind}, {n} ranks, {k}")


@pytest.mark.parametrize("how", ["kill", "hang", "raise"])
def test_a_dead_or_hung_rank_stops_the_others(how):
    cmd = [*_mpirun(), "-n", "2", sys.executable, str(HERE / "mpi" / "kill_script.py"), how]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, env=_env(CNNCORE_MPI_TIMEOUT="10"), capture_output=True, text=True, timeout=300
    )
    elapsed = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "finished (it should not have)" not in text
    assert elapsed < 120, elapsed
    if how == "hang":
        assert "did not complete within 10 s" in text, text[-3000:]
    if how == "raise":  # an exception on one rank stops every rank at once, not at the deadline
        assert "fit() failed on this rank (ZeroDivisionError: rank 1 fails)" in text, text[-3000:]
        assert "did not complete" not in text, text[-3000:]


def test_distributed_parts_needs_distributed():
    from cnncore import models, nn

    m = models.build("lenet", rng=0)
    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match="distributed_parts"):
        m.fit(
            x,
            np.zeros(4, np.int64),
            optimizer="sgd",
            loss=nn.CrossEntropyLoss(),
            verbose=0,
            distributed_parts=4,
        )
