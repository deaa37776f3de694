"""Scale: index and size arithmetic past 2**31.

* The geometry functions (cnncore/_geometry.py) and the validation (check_numel, shape
  arguments, broadcast views) compute with Python ints: checked with dimensions past 2**31
  and 2**62 against independent formulas, without allocating anything.
* A static audit of the kernels: every C ``int`` in the Cython kernels is a status, a flag, a thread
  count, a BLAS argument checked against 2**31 - 1 or a small bounded code -- index math is
  Py_ssize_t.
* ``CNNCORE_SLOW_TESTS=1``: real pooling / padding runs over float32 inputs of more than
  2**31 elements (8 GiB each; ~11 GiB peak), one with a single plane past 2**31 elements (the
  flat argmax indices themselves exceed 2**31) and one with several planes whose global
  offsets pass 2**31.
"""

from __future__ import annotations

import glob
import os
import re
import time

import numpy as np
import pytest
from test_pool import ref_out_size

from cnncore import _geometry as G
from cnncore import _validation as V
from cnncore import functional as F

BIG = [2**31 - 1, 2**31, 2**31 + 1, 2**32 + 3, 2**40 + 7, 2**62 - 5]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------
# Geometry and validation with Python ints
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", BIG)
@pytest.mark.parametrize(
    "k, s, p, d",
    [(1, 1, 0, 1), (3, 2, 1, 1), (5, 7, 2, 3), (2**20, 3, 2**19, 2**10), (2**31 - 1, 1, 0, 1)],
)
def test_output_sizes_past_2_31_are_exact(size, k, s, p, d):
    expected = (size + 2 * p - d * (k - 1) - 1) // s + 1
    assert G.conv_output_size(size, k, s, 2 * p, d) == expected
    for ceil in (False, True):
        assert G.pool_output_size(size, k, s, p, d, ceil) == ref_out_size(size, k, s, p, d, ceil)


@pytest.mark.parametrize("size", BIG[:5])
def test_geometry_functions_past_2_31(size, monkeypatch):
    monkeypatch.setattr(V, "_PHYS_MEM", None)  # sizes only: no memory bound
    geo = G.conv2d_geometry("f", (size, 3), (3, 3), (2, 1), (1, 1), (2, 1))
    assert geo.out == ((size + 2 - 4 - 1) // 2 + 1, 3)
    geo = G.pool2d_geometry("f", (size, size), 3, 2, 1, 1, True)
    assert geo.out[0] == ref_out_size(size, 3, 2, 1, 1, True)
    geo = G.unpool2d_geometry("f", (size, 2), 2, 2, 0, None)
    assert geo.out == (2 * size, 4)
    pad = G.pad2d_geometry("f", (size, 5), (1, 2, 2**31 - 1, -3), "constant")
    assert pad.out == (size + 2**31 - 1 - 3, 8)
    if size <= V.MAX_PARAM:
        assert G.adaptive_pool2d_output_size("f", (size, size), (None, 2**31 - 1)) == (
            size,
            2**31 - 1,
        )
    else:  # None keeps the input size, which must still be a valid output size
        with pytest.raises(ValueError, match="output_size"):
            G.adaptive_pool2d_output_size("f", (size, size), (None, 2**31 - 1))
    assert G.conv2d_output_shape((2, 3, size, 8), (4, 3, 3, 3), padding="same") == (2, 4, size, 8)


def test_check_numel_at_the_limits():
    assert V.check_numel((1, 1, 2**31 + 1, 1), "x", "f", 1) == 2**31 + 1
    n = 2**31 + 1
    with pytest.raises(ValueError, match="overflows 64-bit"):
        V.check_numel((2**31, 2**31, 2), "x", "f")
    with pytest.raises(ValueError, match="overflows 64-bit"):
        V.check_numel((0, 2**40, 2**40), "x", "f")  # empty, but NumPy cannot represent it
    # regression: empty, and 2**62 elements, but 2**65 bytes -- NumPy's "array is too big"
    with pytest.raises(ValueError, match="overflows 64-bit"):
        V.check_numel((0, 1, 2**31 - 1, 2**31 - 1), "x", "f", 8)
    with pytest.raises(ValueError, match="GiB"):
        V.check_numel((n - 1, n // 2), "x", "f", 4)  # 8 EiB: past any memory


def test_broadcast_view_past_2_31_is_checked_before_copying(monkeypatch):
    """A (1, 1, 2**31 + 1, 1) zero-stride view is copied by as_float_array; the copy is
    checked against memory first (pretend this machine has 1 GiB, the copy needs 8)."""
    monkeypatch.setattr(V, "_PHYS_MEM", 2**30)
    x = np.broadcast_to(np.float32(1), (1, 1, 2**31 + 1, 1))
    t0 = time.perf_counter()
    for call in (
        lambda: F.max_pool2d(x, 1),
        lambda: F.relu(x),
        lambda: F.pad2d(x, 0),
        lambda: F.conv2d(x, np.ones((1, 1, 1, 1), np.float32)),
    ):
        with pytest.raises(ValueError, match=r"x would need 8\.0 GiB"):
            call()
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "call, fragment",
    [
        (
            lambda: F.conv2d_backward_input(
                np.ones((1, 1, 1, 1), np.float32),
                np.ones((1, 1, 1, 1), np.float32),
                (1, 1, 2**31 + 1, 1),
                stride=2**31 - 1,
            ),
            "H_in\\*W_in",
        ),
        (
            lambda: F.conv2d_backward_weight(
                np.ones((1, 1, 1, 1), np.float32),
                np.ones((1, 1, 1, 1), np.float32),
                (1, 1, 2**31, 1),
            ),
            "kernel",
        ),
        (
            lambda: F.col2im(
                np.ones((1, 1, 1), np.float32),
                (2**31 + 1, 1),
                (2**31 - 1, 1),
                stride=(2**31 - 1, 1),
            ),
            "output",
        ),
        (
            lambda: F.max_unpool2d(
                np.ones((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), int), (2**31 - 1, 4)
            ),
            "output",
        ),
    ],
)
def test_kernels_never_see_sizes_they_cannot_index(call, fragment):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=fragment):
        call()
    assert time.perf_counter() - t0 < 1.0


# Allowed C ``int`` names in the kernels: statuses, flags and modes, thread counts, the BLAS
# arguments (checked against 2**31 - 1 by the Python wrappers), bit masks and tap codes of
# max pooling (used only when H * W <= 2**31 - 1, see fits_int32_codes), loop counters of
# 16-wide register blocks.
INT_OK = {
    "n_threads",
    "status",
    "status_p",
    "op",
    "mode",
    "kind",
    "algorithm",
    "algo",
    "algorithm_input",  # conv2d_backward_input_weight's two algorithm codes
    "algorithm_weight",
    "algo_input",
    "algo_weight",
    "nt",
    "bad",
    "st",
    "flags",
    "flag",
    "take_log",
    "count_include_pad",
    "ci",
    "icode",
    "m",
    "k",
    "n",
    "trans_a",
    "trans_b",
    "lda",
    "ldb",
    "ldc",
    "incx",  # BLAS vector strides (gemv)
    "incy",
    "omp_get_thread_num",
    "omp_get_num_threads",
    "omp_get_max_threads",
}


def test_kernel_index_math_is_64_bit():
    found = {}
    sources = sorted(
        glob.glob(os.path.join(ROOT, "src", "*.pxd"))
        + glob.glob(os.path.join(ROOT, "cnncore", "**", "*.pxd"), recursive=True)
        + glob.glob(os.path.join(ROOT, "cnncore", "**", "*.pyx"), recursive=True)
    )
    sources = [p for p in sources if os.path.basename(p) not in ("_threads.pyx", "_alloc.pyx")]
    assert len(sources) >= 10, sources  # the kernels moved? then this audit must follow them
    for path in sources:
        name = os.path.relpath(path, ROOT)
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                code = line.split("#")[0]
                names = re.findall(r"\bint\*?\s+([A-Za-z_]\w*)\s*(?=[,)=\[;]|$)", code)
                decl = re.match(r"\s*cdef\s+int\*?\s+([^(]*)$", code)
                if decl:  # cdef int a, b[N], c = 0
                    names += [
                        n.split("=")[0].split("[")[0].strip() for n in decl.group(1).split(",")
                    ]
                for n in names:
                    if n and n not in INT_OK:
                        found.setdefault(n, []).append(f"{name}:{lineno}")
    assert not found, f"C int used for (possibly) index math: {found}"


# ------------------------------------------------------------------------------------------
# Real runs past 2**31 elements (CNNCORE_SLOW_TESTS=1)
# ------------------------------------------------------------------------------------------

slow = pytest.mark.skipif(
    os.environ.get("CNNCORE_SLOW_TESTS") != "1",
    reason="set CNNCORE_SLOW_TESTS=1 (needs ~11 GiB of free memory)",
)


def _free_memory():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def _need(gib):
    if _free_memory() < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free memory")


@pytest.mark.slow
@slow
def test_max_pool_one_plane_past_2_31_elements():
    """One 46344 x 46344 float32 plane (2**31 + 282688 elements, 8 GiB): the flat argmax
    indices in the plane pass 2**31 (int32 tap codes cannot be used there)."""
    _need(12)
    side = 46344  # divisible by the window: the last rows (flat offsets > 2**31) are pooled
    assert side * side > 2**31
    x = np.zeros((1, 1, side, side), np.float32)  # untouched pages are the shared zero page
    plants = {
        (0, 0): 1.0,
        (side - 2, side - 5): 3.0,
        (side - 1, side - 1): 7.0,
        (40000, 40001): 5.0,
    }  # the 2nd and 3rd are at flat positions past 2**31
    for (r, c), v in plants.items():
        x[0, 0, r, c] = v
    k = 4
    y, idx = F.max_pool2d(x, k, return_indices=True)
    ho = side // k
    assert y.shape == idx.shape == (1, 1, ho, ho)
    rows = np.arange(ho, dtype=np.int64)[:, None] * k * side
    cols = np.arange(ho, dtype=np.int64)[None, :] * k
    expect_idx = rows + cols  # all-zero windows: the first tap
    for (r, c), v in plants.items():
        if r // k < ho and c // k < ho:
            expect_idx[r // k, c // k] = r * side + c
            assert y[0, 0, r // k, c // k] == v
    np.testing.assert_array_equal(idx[0, 0], expect_idx)
    assert int(idx.max()) > 2**31
    assert float(y.sum()) == sum(v for (r, c), v in plants.items() if r // k < ho and c // k < ho)
    avg = F.avg_pool2d(x, k)
    assert avg[0, 0, 40000 // k, 40001 // k] == np.float32(5.0 / 16)
    del x, avg
    dx = F.max_pool2d_backward(y, idx, (1, 1, side, side))
    for (r, c), v in plants.items():
        if r // k < ho and c // k < ho:
            assert dx[0, 0, r, c] == v
    assert float(dx.sum(dtype=np.float64)) == float(y.sum(dtype=np.float64))


@pytest.mark.slow
@slow
def test_pooling_and_padding_over_planes_whose_offsets_pass_2_31():
    """3 planes of 26755 x 26755 float32 (2**31 + 6427 elements in all): each plane fits the
    fast int32 tap-code path, the plane offsets of the last one pass 2**31."""
    _need(12)
    n, side = 3, 26755
    assert n * side * side > 2**31
    x = np.zeros((n, 1, side, side), np.float32)
    x[2, 0, side - 1, side - 2] = 9.0  # global flat offset > 2**31
    x[2, 0, 1, 1] = -1.0
    x[1, 0, 100, 100] = 2.0
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    oh = y.shape[2]
    assert y[2, 0, (side - 1 + 1) // 2, (side - 2 + 1) // 2] == 9.0
    assert idx[2, 0, (side - 1 + 1) // 2, (side - 2 + 1) // 2] == (side - 1) * side + side - 2
    assert y[1, 0, 50, 50] == 2.0 and idx[1, 0, 50, 50] == 100 * side + 100
    # 9.0 sits in two overlapping windows (columns), 2.0 in one
    assert float(y.sum(dtype=np.float64)) == 9.0 * 2 + 2.0
    assert y[2, 0, (side - 1 + 1) // 2, (side - 2 + 1) // 2 - 1] == 9.0
    assert oh == (side + 2 - 3) // 2 + 1
    del y, idx
    p = F.pad2d(x, (1, 0, 0, 1), mode="constant", value=-2.0)
    assert p.shape == (n, 1, side + 1, side + 1)
    assert p[2, 0, side - 1, side - 1] == 9.0 and p[2, 0, side, 0] == -2.0
    assert p[2, 0, 1, 2] == -1.0 and p[0, 0, 0, 0] == -2.0
    del p
    g = F.global_avg_pool2d(x)
    np.testing.assert_allclose(g[2, 0, 0, 0], 8.0 / (side * side), rtol=1e-6)
    assert g[0, 0, 0, 0] == 0.0
    del g
