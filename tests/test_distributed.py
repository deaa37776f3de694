"""Data-parallel training over MPI: the fixed-order reduction (always on) and real
``mpirun`` runs whose weights must equal the single-process run's bit for bit (when mpi4py
and mpirun are installed; .ci/run installs them)."""

from __future__ import annotations

import numpy as np
import pytest

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
