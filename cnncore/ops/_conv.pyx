"""2-D convolution kernels: forward cross-correlation, gradient w.r.t. input / weight / bias,
the transposed convolution's forward (the input gradient plus a bias), and the public
im2col / col2im transforms.

Layout is NCHW; weight is ``(K, C / groups, kH, kW)``.  For output position ``(oh, ow)`` and
kernel tap ``(i, j)`` the input position is ``(oh*sh + i*dh - ph, ow*sw + j*dw - pw)``; taps
outside the input read zero (zero padding).

Seven algorithms, chosen per shape and pass by ``cnncore/ops/conv_dispatch.py`` and passed
in as the ``algorithm`` argument:

* GEMM: im2col of a bounded block of output rows into per-thread scratch, then one BLAS
  GEMM per block (the weight gradient and input gradient use the transposed products).
  1x1 / stride-1 / unpadded convolutions skip im2col and hand the input to BLAS directly.
* direct: a vectorizable loop nest for inputs with few channels per group (e.g. C_in = 1),
  where im2col + GEMM would spend its time copying and packing.
* channel-blocked direct: register-blocked outer products of packed weights (blocks of
  16-32 output channels in vector lanes) and broadcast inputs, with C microkernels
  (``src/_blocked_conv.h``) compiled for each SIMD level; forward, input gradient
  (strided ones in stride phases: one unit-stride correlation per phase, interleaved),
  weight gradient (output channels in lanes, dy transposed per sample).
* Winograd F(2x2, 3x3): 3x3 / stride-1 / dilation-1 convolutions as 16 BLAS GEMMs per block
  of 2x2 output tiles (2.25x fewer multiplications); Inf/NaN inputs fall back to GEMM.
  F(4x4, 3x3) ("winograd4"): the same with 4x4 tiles, 36 GEMMs (4x fewer multiplications,
  about 10x the float32 error), its transforms' sweeps in ``src/_winograd4.h``.
* depthwise: one input channel per group (any multiplier, stride, dilation): loops over
  the planes with register-blocked, vectorizable inner loops for all three passes, instead
  of one tiny GEMM per channel.
* row-vectorized direct ("rows"): the vector lanes along a row of output pixels, blocks of
  output channels x rows in registers (``src/_rowconv.h``, per SIMD level); all three
  passes at unit stride.  Few channels on small images (LeNet's 5x5 convolutions).

conv_transpose2d is the adjoint of conv2d and runs these same kernels (cnncore/ops/conv.py):
its forward is the input-gradient pass (``conv_transpose2d_forward`` adds the bias in it),
its input gradient the forward pass, its weight gradient the weight-gradient pass with the
roles of input and output gradient swapped.

Every kernel parallelizes over disjoint output regions, or reduces per-part partial sums in
a fixed order, and the work split depends only on the shapes -- never on the thread count --
so results are bit-identical for any number of threads.  Which thread runs a task is free:
the task loops are scheduled dynamically, so on a loaded machine a thread that was
descheduled holds up one chunk of tasks, not a fixed half of the work.  Kernels run without the GIL and
return a status code (see ``cnncore/_shared.pxd``); the ``def`` wrappers raise.
"""

from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy, memset

from _blas cimport gemm
from cnncore._shared cimport (ALGO_BLOCKED, ALGO_DEPTHWISE, ALGO_DIRECT, ALGO_GEMM, ALGO_ROWS,
                              ALGO_WINOGRAD, ALGO_WINOGRAD4, CNN_ERR_INDEX, CNN_ERR_NOMEM, CNN_OK, ceil_div, check_status, fixed_sum, floating,
                              floor_div, py_max, py_min, valid_range)
from cnncore.ops._pool cimport (pool2x2_max_plane_double, pool2x2_max_plane_float,
                                pool2x2_scatter_masked_plane_double,
                                pool2x2_scatter_masked_plane_float)

from cnncore._geometry import conv_output_size

cdef extern from *:
    """
    /* GCC's -O3 unroll-and-jam fuses pairs of iterations of a loop over kernel taps around
       the inner loop over a block of outputs -- and then leaves that fused loop scalar (seen
       in the depthwise kernels: 2-4x slower).  The register-blocked loops below are already
       written with the independent chains they need. */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("no-loop-unroll-and-jam")
    #endif
    """

cdef extern from "_simd_width.h" nogil:
    Py_ssize_t cnn_vec_lanes_float()
    Py_ssize_t cnn_vec_lanes_double()

cdef extern from "_blocked_conv.h" nogil:
    Py_ssize_t cnn_blk_nv(Py_ssize_t n_out, Py_ssize_t vl)
    Py_ssize_t cnn_blk_pixels(Py_ssize_t nv, Py_ssize_t Wo)
    void cnn_blk_corr_float(const float* inp, Py_ssize_t n_in, Py_ssize_t R, Py_ssize_t Q,
                            const float* wpack, const float* bpack, Py_ssize_t n_out,
                            Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                            Py_ssize_t dh, Py_ssize_t dw, float* out, Py_ssize_t Ho,
                            Py_ssize_t Wo, Py_ssize_t oh0, Py_ssize_t oh1, float* tmp)
    void cnn_blk_interleave2_float(const float* e, const float* o, float* d, Py_ssize_t W)
    void cnn_blkw_transpose_float(const float* dy, Py_ssize_t n_out, Py_ssize_t L,
                                  Py_ssize_t OB, float* dyT)
    void cnn_blkw_sample_float(const float* xpad, Py_ssize_t n_in, Py_ssize_t R, Py_ssize_t Q,
                               const float* dyT, Py_ssize_t n_out, Py_ssize_t kh,
                               Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                               Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo, float* part)

cdef extern from "_rowconv.h" nogil:
    Py_ssize_t cnn_roww_nvec(Py_ssize_t Wo, Py_ssize_t vl)
    void cnn_row_geom_float(Py_ssize_t n_out, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh,
                            Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t* R,
                            Py_ssize_t* Q)
    void cnn_row_corr_float(const float* inp, Py_ssize_t n_in, Py_ssize_t R, Py_ssize_t Q,
                            const float* w, const float* bias, Py_ssize_t n_out, Py_ssize_t kh,
                            Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw, float* out,
                            Py_ssize_t Ho, Py_ssize_t Wo)
    void cnn_row_fill_float(const float* src, Py_ssize_t n_ch, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t R, Py_ssize_t Q,
                            float* dst)
    Py_ssize_t cnn_roww_kbm()
    void cnn_rowpool_relu_float(const float* conv, Py_ssize_t W, Py_ssize_t Hp, Py_ssize_t Wp,
                                float* y)
    void cnn_roww_task_float(const float* x, Py_ssize_t x_ss, Py_ssize_t n_in, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, const float* dy,
                             Py_ssize_t dy_ss, const float* dy_last, Py_ssize_t n_out,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw,
                             Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t ns, bint finite,
                             float* xpad, float* vpart, float* part)

cdef extern from "_winograd4.h" nogil:
    void cnn_w4_out_rows_float(const float* m, Py_ssize_t S, Py_ssize_t per, float* sa)
    void cnn_w4_out_rows_double(const double* m, Py_ssize_t S, Py_ssize_t per, double* sa)
    void cnn_w4_out_cols_float(const float* s, Py_ssize_t per, float b, float* ph, float* y)
    void cnn_w4_out_cols_double(const double* s, Py_ssize_t per, double b, double* ph,
                                double* y)
    void cnn_w4c_gather_float(const float* xs, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t P, Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t q0,
                              Py_ssize_t nq, float* X)
    void cnn_w4c_gather_double(const double* xs, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t P, Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t q0,
                               Py_ssize_t nq, double* X)
    void cnn_w4c_in_float(const float* X, Py_ssize_t nq, Py_ssize_t C, Py_ssize_t nty,
                          Py_ssize_t TW, float* t, float* v, Py_ssize_t xs)
    void cnn_w4c_in_double(const double* X, Py_ssize_t nq, Py_ssize_t C, Py_ssize_t nty,
                           Py_ssize_t TW, double* t, double* v, Py_ssize_t xs)
    void cnn_w4c_grad_float(const float* G, Py_ssize_t nq, Py_ssize_t K, Py_ssize_t nty,
                            Py_ssize_t TW, float* t, float* d, Py_ssize_t xs)
    void cnn_w4c_grad_double(const double* G, Py_ssize_t nq, Py_ssize_t K, Py_ssize_t nty,
                             Py_ssize_t TW, double* t, double* d, Py_ssize_t xs)

# Per-thread im2col workspace target (elements); at least one output row is always used.
# Tuned with benchmarks/bench_conv.py; set_col_budget() exists for tuning and for tests.
cdef Py_ssize_t COL_BUDGET = 131072

cdef enum:
    # Fixed number of batch parts for the weight gradient (partials reduced in order).
    MAX_WGRAD_PARTS = 8
    # Weight gradient on small images: put whole samples side by side in one im2col block of
    # about this many columns (the GEMM's inner dimension) ...
    WGRAD_COLS = 256
    # ... but cut the batch into at least this many blocks, so it spreads over the threads.
    MIN_SAMPLE_BLOCKS = 8
    # Outputs of one row accumulated in registers by the direct kernel.
    DIRECT_BLOCK = 16
    # Multiply-adds per thread below which a parallel region wakes no further thread (about
    # 10-20 us of one core's work: what waking and joining a thread costs); see par_threads.
    PAR_GRAIN = 1 << 18
# The algorithm of each pass (ALGO_GEMM / ALGO_DIRECT / ALGO_WINOGRAD / ALGO_DEPTHWISE,
# cnncore/_shared.pxd) is chosen in Python by cnncore/ops/conv_dispatch.py.


ctypedef struct Geom:
    Py_ssize_t N, C, H, W          # input
    Py_ssize_t K, Cg, Kg, G        # output channels, channels per group (in / out), groups
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t Ho, Wo


cdef Geom make_geom(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t K, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t G,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo):
    cdef Geom g
    g.N = N; g.C = C; g.H = H; g.W = W
    g.K = K; g.G = G; g.Cg = C // G; g.Kg = K // G
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw; g.dh = dh; g.dw = dw
    g.Ho = Ho; g.Wo = Wo
    return g


cdef inline Py_ssize_t conv_macs(const Geom* g) noexcept nogil:
    """Multiply-adds of one pass of the convolution (any of the three: the same count)."""
    return g.N * g.K * g.Cg * g.kh * g.kw * g.Ho * g.Wo


cdef inline int par_threads(int n_threads, Py_ssize_t n_tasks, Py_ssize_t work) noexcept nogil:
    """The grain-size rule of every conv kernel's parallel region: threads for ``n_tasks``
    tasks doing ``work`` multiply-adds in all -- at most one per task and one per PAR_GRAIN
    multiply-adds (waking a thread costs more than a smaller share of work), at least one.
    Only how many threads share the tasks depends on it, never the tasks or their order, so
    results stay bit-identical for any thread count."""
    return <int> py_max(1, py_min(py_min(<Py_ssize_t> n_threads, n_tasks), work // PAR_GRAIN))


cdef inline bint is_pointwise(const Geom* g) noexcept nogil:
    """1x1 kernel, stride 1, no padding: the input plane *is* the im2col matrix."""
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.ph == 0
            and g.pw == 0 and g.Ho == g.H and g.Wo == g.W)


cdef inline Py_ssize_t rows_per_block(const Geom* g) noexcept nogil:
    """Output rows per im2col block: the workspace stays near COL_BUDGET elements."""
    cdef Py_ssize_t ckk = g.Cg * g.kh * g.kw
    return py_max(1, py_min(g.Ho, COL_BUDGET // py_max(1, ckk * g.Wo)))


ctypedef struct Blocks:
    Py_ssize_t spb          # samples per column block (> 1: weight gradient, small images)
    Py_ssize_t rows         # output rows per block (all of them when spb > 1)
    Py_ssize_t n_sblocks    # blocks of samples
    Py_ssize_t n_rblocks    # blocks of rows per sample
    Py_ssize_t max_cols     # columns of the largest block


cdef inline Blocks make_blocks(const Geom* g, bint wgrad) noexcept nogil:
    """How the GEMM drivers cut the ``N x H_out x W_out`` output columns into blocks.

    Forward and input gradient: blocks of output rows of one sample, written in place.  The
    weight gradient on small images puts several whole samples side by side in one im2col
    block (about ``WGRAD_COLS`` columns), so one BLAS call does the work of ``spb`` tiny ones;
    its dy columns are gathered into a scratch block.  (Measured with benchmarks/bench_conv.py
    and scripts like it: side-by-side samples only pay off in the weight gradient, below
    about 256 output pixels per sample.)
    Depends on the shapes only (never the thread count), which keeps results bit-identical.
    """
    cdef Blocks b
    cdef Py_ssize_t per_sample = g.Cg * g.kh * g.kw * g.Ho * g.Wo
    cdef Py_ssize_t L = g.Ho * g.Wo
    b.spb = 1
    if wgrad and g.N > 1 and L > 0:
        b.spb = py_max(1, py_min(py_min(WGRAD_COLS // L, COL_BUDGET // py_max(1, per_sample)),
                                 (g.N + MIN_SAMPLE_BLOCKS - 1) // MIN_SAMPLE_BLOCKS))
    b.rows = g.Ho if b.spb > 1 else rows_per_block(g)
    b.n_sblocks = (g.N + b.spb - 1) // b.spb
    b.n_rblocks = (g.Ho + b.rows - 1) // b.rows
    b.max_cols = b.spb * b.rows * g.Wo
    return b


cdef inline void gemm_scratch(const Geom* g, const Blocks* bl, Py_ssize_t* ws_col,
                              Py_ssize_t* ws_tmp) noexcept nogil:
    """Per-thread scratch sizes (elements) of the GEMM drivers: the im2col block -- none for
    a pointwise convolution with one sample per block, whose planes BLAS uses in place --
    and, with several samples per block, their block of output (gradient) columns."""
    ws_col[0] = 0 if is_pointwise(g) and bl.spb == 1 else g.Cg * g.kh * g.kw * bl.max_cols
    ws_tmp[0] = g.Kg * bl.max_cols if bl.spb > 1 else 0


cdef inline bint scratch_ok(const void* scratch, Py_ssize_t n, int* status) noexcept nogil:
    """Whether a thread's scratch of ``n`` elements was allocated (none is needed for ``n ==
    0``); if not, ``status[0] = CNN_ERR_NOMEM`` and the thread skips its tasks."""
    if n > 0 and scratch == NULL:
        status[0] = CNN_ERR_NOMEM
        return False
    return True


# ------------------------------------------------------------------------------------------
# im2col / col2im on a block of output rows of one sample
# ------------------------------------------------------------------------------------------

cdef inline bint rows_contiguous(const Geom* g) noexcept nogil:
    """Stride 1 and ``W_out == W`` (e.g. a 'same' convolution): for a fixed tap, a block of
    output rows reads one contiguous span of the input plane, shifted by the tap's offset;
    only the ``|offset|`` columns at each row's edge are out of the window."""
    return g.sh == 1 and g.sw == 1 and g.Wo == g.W


cdef inline void tap_span(const Geom* g, Py_ssize_t i, Py_ssize_t j, Py_ssize_t oh0,
                          Py_ssize_t oh1, Py_ssize_t* a, Py_ssize_t* b, Py_ssize_t* lo,
                          Py_ssize_t* hi, Py_ssize_t* s0, Py_ssize_t* c_lo,
                          Py_ssize_t* c_hi) noexcept nogil:
    """For :func:`rows_contiguous` geometry and tap ``(i, j)``: output rows ``[a, b)`` of the
    block ``[oh0, oh1)`` read input rows inside the plane, columns ``[lo, hi)`` of each row are
    inside the window, and the span of output positions ``[a*W, b*W)`` maps to input offset
    ``s0`` + position within the span.  ``c_lo``/``c_hi`` span elements at its start / end
    would fall outside the plane; they lie in out-of-window columns."""
    cdef Py_ssize_t off = j * g.dw - g.pw, n
    valid_range(off, 1, g.W, g.Wo, lo, hi)
    a[0] = py_min(py_max(g.ph - i * g.dh, oh0), oh1)
    b[0] = py_min(py_max(g.H + g.ph - i * g.dh, a[0]), oh1)
    n = (b[0] - a[0]) * g.W
    s0[0] = (a[0] + i * g.dh - g.ph) * g.W + off
    c_lo[0] = py_min(n, py_max(0, -s0[0]))
    c_hi[0] = py_min(n - c_lo[0], py_max(0, s0[0] + n - g.H * g.W))


cdef void s2_gather_pair(const floating* xc, const Geom* g, Py_ssize_t i, Py_ssize_t off,
                         Py_ssize_t oh0, Py_ssize_t oh1, floating* row0,
                         floating* row1) noexcept nogil:
    """Column stride 2, dilation 1: the im2col rows of the taps ``(i, j)`` and ``(i, j + 1)``
    (``off = j - pw``) for output rows ``[oh0, oh1)`` of the plane ``xc``, in one pass: the
    two taps read the even and the odd columns of one span, which is deinterleaved into
    ``row0`` / ``row1`` (zero outside the window) -- contiguous, vectorizable reads instead
    of two strided passes."""
    cdef Py_ssize_t lo0, hi0, lo1, hi1, a, b, oh, ih, ow, Wo = g.Wo
    cdef const floating* src
    cdef floating* d0
    cdef floating* d1
    valid_range(off, 2, g.W, Wo, &lo0, &hi0)
    valid_range(off + 1, 2, g.W, Wo, &lo1, &hi1)
    a = py_max(lo0, lo1)
    b = py_max(a, py_min(hi0, hi1))
    for oh in range(oh0, oh1):
        d0 = row0 + (oh - oh0) * Wo
        d1 = row1 + (oh - oh0) * Wo
        memset(d0, 0, Wo * sizeof(floating))
        memset(d1, 0, Wo * sizeof(floating))
        ih = oh * g.sh + i * g.dh - g.ph
        if ih < 0 or ih >= g.H:
            continue
        src = xc + ih * g.W + off
        for ow in range(a, b):
            d0[ow] = src[2 * ow]
            d1[ow] = src[2 * ow + 1]
        for ow in range(lo0, a):
            d0[ow] = src[2 * ow]
        for ow in range(b, hi0):
            d0[ow] = src[2 * ow]
        for ow in range(lo1, a):
            d1[ow] = src[2 * ow + 1]
        for ow in range(b, hi1):
            d1[ow] = src[2 * ow + 1]


cdef void s2_scatter_pair(const floating* row0, const floating* row1, const Geom* g,
                          Py_ssize_t i, Py_ssize_t off, Py_ssize_t oh0, Py_ssize_t oh1,
                          floating* xc) noexcept nogil:
    """The adjoint of :func:`s2_gather_pair` (col2im): add ``row0`` / ``row1`` back into the
    even / odd columns of the span, interleaved in one pass.  Each plane entry gets the same
    additions in the same order as tap by tap (an entry is reached by one tap of the pair)."""
    cdef Py_ssize_t lo0, hi0, lo1, hi1, a, b, oh, ih, ow, Wo = g.Wo
    cdef const floating* s0
    cdef const floating* s1
    cdef floating* dst
    valid_range(off, 2, g.W, Wo, &lo0, &hi0)
    valid_range(off + 1, 2, g.W, Wo, &lo1, &hi1)
    a = py_max(lo0, lo1)
    b = py_max(a, py_min(hi0, hi1))
    for oh in range(oh0, oh1):
        ih = oh * g.sh + i * g.dh - g.ph
        if ih < 0 or ih >= g.H:
            continue
        s0 = row0 + (oh - oh0) * Wo
        s1 = row1 + (oh - oh0) * Wo
        dst = xc + ih * g.W + off
        for ow in range(a, b):
            dst[2 * ow] += s0[ow]
            dst[2 * ow + 1] += s1[ow]
        for ow in range(lo0, a):
            dst[2 * ow] += s0[ow]
        for ow in range(b, hi0):
            dst[2 * ow] += s0[ow]
        for ow in range(lo1, a):
            dst[2 * ow + 1] += s1[ow]
        for ow in range(b, hi1):
            dst[2 * ow + 1] += s1[ow]


# Strided convolutions whose strides divide the input and ``W_out == W / sw`` (the usual
# halving convolutions: k4 s2 p1, k3 s2 p1 and k2 s2 p0 on even sizes -- a transposed
# convolution's upsampling): the input rows are split once into ``sh*sw`` phase planes
# ``P[rp][cp][a, q] = x[a*sh + rp, q*sw + cp]`` of ``W_out`` columns.  Tap ``(i, j)``
# (``i*dh - ph = ri*sh + rp``, ``j*dw - pw = cj*sw + cp``) of output ``(oh, ow)`` reads
# ``P[rp][cp][oh + ri, ow + cj]``: over a block of output rows, one shift of a flattened
# plane.  So each im2col row is one long copy (then the ``|cj|`` wrapped columns zeroed),
# and col2im one long add per tap into the planes (wrapped columns zeroed first), instead of
# a short strided loop per tap and output row (2-4x faster on 16x16 outputs).

cdef inline bint phase_split(const Geom* g) noexcept nogil:
    return ((g.sh > 1 or g.sw > 1) and g.H % g.sh == 0 and g.W % g.sw == 0
            and g.Wo == g.W // g.sw and g.Wo > 0)


ctypedef struct PhasePlan:
    Py_ssize_t a_lo, a_hi   # plane rows of the block: [a_lo, a_hi)
    Py_ssize_t PS           # elements of one plane with its guards (W_out before and after)


cdef inline PhasePlan phase_plan(const Geom* g, Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    cdef PhasePlan pl
    pl.a_lo = py_max(0, oh0 + floor_div(-g.ph, g.sh))
    pl.a_hi = py_max(pl.a_lo, py_min(g.H // g.sh, oh1 + floor_div((g.kh - 1) * g.dh - g.ph, g.sh)))
    pl.PS = (pl.a_hi - pl.a_lo + 2) * g.Wo
    return pl


cdef inline void phase_tap(const Geom* g, const PhasePlan* pl, Py_ssize_t i, Py_ssize_t j,
                           Py_ssize_t oh0, Py_ssize_t oh1, Py_ssize_t* plane, Py_ssize_t* shift,
                           Py_ssize_t* oa, Py_ssize_t* ob, Py_ssize_t* clo,
                           Py_ssize_t* chi) noexcept nogil:
    """Tap ``(i, j)``: its plane (``rp*sw + cp``), the shift of block row ``oa``'s first
    entry inside that plane's buffer, the block rows ``[oa, ob)`` and columns
    ``[clo, chi)`` that read inside the image."""
    cdef Py_ssize_t ro = i * g.dh - g.ph, co = j * g.dw - g.pw
    cdef Py_ssize_t ri = floor_div(ro, g.sh), cj = floor_div(co, g.sw)
    plane[0] = (ro - ri * g.sh) * g.sw + (co - cj * g.sw)
    oa[0] = py_min(py_max(oh0, pl.a_lo - ri), oh1)
    ob[0] = py_max(py_min(oh1, pl.a_hi - ri), oa[0])
    clo[0] = py_min(py_max(0, -cj), g.Wo)
    chi[0] = py_max(py_min(g.Wo, g.Wo - cj), clo[0])
    shift[0] = (oa[0] + ri - pl.a_lo + 1) * g.Wo + cj


cdef void phase_fill(const floating* xc, const Geom* g, const PhasePlan* pl,
                     floating* planes) noexcept nogil:
    """The phase planes of the block's rows from the plane ``xc`` (guards zeroed)."""
    cdef Py_ssize_t rp, cp, a, q, Wo = g.Wo, sw = g.sw, nr = pl.a_hi - pl.a_lo
    cdef const floating* src
    cdef floating* d0
    cdef floating* d1
    for rp in range(g.sh):
        for cp in range(sw):
            d0 = planes + (rp * sw + cp) * pl.PS
            memset(d0, 0, Wo * sizeof(floating))
            memset(d0 + (nr + 1) * Wo, 0, Wo * sizeof(floating))
        for a in range(nr):
            src = xc + ((pl.a_lo + a) * g.sh + rp) * g.W
            d0 = planes + rp * sw * pl.PS + (a + 1) * Wo
            if sw == 1:
                memcpy(d0, src, Wo * sizeof(floating))
            elif sw == 2:
                d1 = d0 + pl.PS
                for q in range(Wo):
                    d0[q] = src[2 * q]
                    d1[q] = src[2 * q + 1]
            else:
                for cp in range(sw):
                    d1 = d0 + cp * pl.PS
                    for q in range(Wo):
                        d1[q] = src[q * sw + cp]


cdef bint im2col_rows_phase(const floating* xn, const Geom* g, Py_ssize_t n_ch,
                            Py_ssize_t oh0, Py_ssize_t oh1, floating* col,
                            Py_ssize_t ldcol) noexcept nogil:
    """:func:`im2col_rows` for :func:`phase_split` geometry; False (nothing written) if its
    scratch could not be allocated."""
    cdef PhasePlan pl = phase_plan(g, oh0, oh1)
    cdef Py_ssize_t c, i, j, plane, shift, oa, ob, clo, chi, r, q, Wo = g.Wo
    cdef Py_ssize_t n = (oh1 - oh0) * Wo
    cdef floating* row
    cdef floating* planes = <floating*> malloc(g.sh * g.sw * pl.PS * sizeof(floating))
    if planes == NULL:
        return False
    for c in range(n_ch):
        phase_fill(xn + c * g.H * g.W, g, &pl, planes)
        for i in range(g.kh):
            for j in range(g.kw):
                row = col + ((c * g.kh + i) * g.kw + j) * ldcol
                phase_tap(g, &pl, i, j, oh0, oh1, &plane, &shift, &oa, &ob, &clo, &chi)
                if clo >= chi:
                    oa = ob
                memset(row, 0, (oa - oh0) * Wo * sizeof(floating))
                memset(row + (ob - oh0) * Wo, 0, (oh1 - ob) * Wo * sizeof(floating))
                if oa >= ob:
                    continue
                memcpy(row + (oa - oh0) * Wo, planes + plane * pl.PS + shift,
                       (ob - oa) * Wo * sizeof(floating))
                for q in range(clo):
                    for r in range(oa - oh0, ob - oh0):
                        row[r * Wo + q] = 0
                for q in range(chi, Wo):
                    for r in range(oa - oh0, ob - oh0):
                        row[r * Wo + q] = 0
    free(planes)
    return True


cdef bint col2im_rows_phase(floating* col, Py_ssize_t ldcol, const Geom* g, Py_ssize_t n_ch,
                            Py_ssize_t oh0, Py_ssize_t oh1, floating* xn) noexcept nogil:
    """:func:`col2im_rows_scratch` for :func:`phase_split` geometry: each tap's row (its
    wrapped columns zeroed) added into the phase planes in one pass, taps in order; then the
    planes added to the image.  False (nothing done) if its scratch could not be
    allocated."""
    cdef PhasePlan pl = phase_plan(g, oh0, oh1)
    cdef Py_ssize_t c, i, j, plane, shift, oa, ob, clo, chi, r, q, t, a, rp, cp, nt
    cdef Py_ssize_t Wo = g.Wo, sw = g.sw, nr = pl.a_hi - pl.a_lo
    cdef floating* row
    cdef floating* dst
    cdef floating* xr
    cdef const floating* p0
    cdef const floating* p1
    cdef Py_ssize_t n_pl = g.sh * g.sw * pl.PS
    cdef floating* planes = <floating*> malloc(n_pl * sizeof(floating))
    if planes == NULL:
        return False
    for c in range(n_ch):
        memset(planes, 0, n_pl * sizeof(floating))
        for i in range(g.kh):
            for j in range(g.kw):
                phase_tap(g, &pl, i, j, oh0, oh1, &plane, &shift, &oa, &ob, &clo, &chi)
                if oa >= ob or clo >= chi:
                    continue
                row = col + ((c * g.kh + i) * g.kw + j) * ldcol + (oa - oh0) * Wo
                for q in range(clo):
                    for r in range(ob - oa):
                        row[r * Wo + q] = 0
                for q in range(chi, Wo):
                    for r in range(ob - oa):
                        row[r * Wo + q] = 0
                dst = planes + plane * pl.PS + shift
                nt = (ob - oa) * Wo
                for t in range(nt):
                    dst[t] += row[t]
        for rp in range(g.sh):
            for a in range(nr):
                xr = xn + c * g.H * g.W + ((pl.a_lo + a) * g.sh + rp) * g.W
                p0 = planes + rp * sw * pl.PS + (a + 1) * Wo
                if sw == 1:
                    for q in range(Wo):
                        xr[q] += p0[q]
                elif sw == 2:
                    p1 = p0 + pl.PS
                    for q in range(Wo):
                        xr[2 * q] += p0[q]
                        xr[2 * q + 1] += p1[q]
                else:
                    for cp in range(sw):
                        p1 = p0 + cp * pl.PS
                        for q in range(Wo):
                            xr[q * sw + cp] += p1[q]
    free(planes)
    return True


cdef void im2col_rows(const floating* xn, const Geom* g, Py_ssize_t n_ch,
                      Py_ssize_t oh0, Py_ssize_t oh1,
                      floating* col, Py_ssize_t ldcol) noexcept nogil:
    """Write the im2col matrix of output rows ``[oh0, oh1)`` of ``n_ch`` channels starting
    at ``xn``: row ``(c*kh + i)*kw + j``, column ``(oh - oh0)*Wo + ow``; row stride ``ldcol``."""
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi, off, a, b, s0, c_lo, c_hi, n
    cdef Py_ssize_t H = g.H, W = g.W, Wo = g.Wo, sw = g.sw
    cdef bint contiguous = rows_contiguous(g)
    cdef const floating* xc
    cdef const floating* src
    cdef floating* row
    cdef floating* dst
    if phase_split(g) and im2col_rows_phase(xn, g, n_ch, oh0, oh1, col, ldcol):
        return
    for c in range(n_ch):
        xc = xn + c * H * W
        for i in range(g.kh):
            for j in range(g.kw):
                row = col + ((c * g.kh + i) * g.kw + j) * ldcol
                if contiguous:
                    # one copy of the whole span, then zero the out-of-window edge columns
                    tap_span(g, i, j, oh0, oh1, &a, &b, &lo, &hi, &s0, &c_lo, &c_hi)
                    n = (b - a) * W
                    memset(row, 0, (a - oh0) * W * sizeof(floating))
                    memset(row + (b - oh0) * W, 0, (oh1 - b) * W * sizeof(floating))
                    dst = row + (a - oh0) * W
                    if lo >= hi:
                        memset(dst, 0, n * sizeof(floating))
                        continue
                    memcpy(dst + c_lo, xc + s0 + c_lo, (n - c_lo - c_hi) * sizeof(floating))
                    if lo > 0 or hi < Wo:
                        for oh in range(b - a):
                            for ow in range(lo):
                                dst[oh * W + ow] = 0
                            for ow in range(hi, Wo):
                                dst[oh * W + ow] = 0
                    continue
                off = j * g.dw - g.pw
                if sw == 2 and g.dw == 1 and j % 2 == 1:
                    continue    # filled with tap j - 1 (below)
                if sw == 2 and g.dw == 1 and j + 1 < g.kw:
                    s2_gather_pair(xc, g, i, off, oh0, oh1, row, row + ldcol)
                    continue
                valid_range(off, sw, W, Wo, &lo, &hi)
                for oh in range(oh0, oh1):
                    dst = row + (oh - oh0) * Wo
                    ih = oh * g.sh + i * g.dh - g.ph
                    if ih < 0 or ih >= H:
                        memset(dst, 0, Wo * sizeof(floating))
                        continue
                    src = xc + ih * W + off
                    if lo > 0:
                        memset(dst, 0, lo * sizeof(floating))
                    if sw == 1:
                        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
                    else:
                        for ow in range(lo, hi):
                            dst[ow] = src[ow * sw]
                    if hi < Wo:
                        memset(dst + hi, 0, (Wo - hi) * sizeof(floating))


cdef void col2im_rows(const floating* col, Py_ssize_t ldcol, const Geom* g, Py_ssize_t n_ch,
                      Py_ssize_t oh0, Py_ssize_t oh1, floating* xn) noexcept nogil:
    """Adjoint of :func:`im2col_rows`: accumulate the block's columns into the image."""
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi, off
    cdef Py_ssize_t H = g.H, W = g.W, Wo = g.Wo, sw = g.sw
    cdef floating* xc
    cdef floating* dst
    cdef const floating* row
    cdef const floating* src
    for c in range(n_ch):
        xc = xn + c * H * W
        for i in range(g.kh):
            for j in range(g.kw):
                row = col + ((c * g.kh + i) * g.kw + j) * ldcol
                off = j * g.dw - g.pw
                if sw == 2 and g.dw == 1 and j % 2 == 1:
                    continue    # added with tap j - 1 (below)
                if sw == 2 and g.dw == 1 and j + 1 < g.kw:
                    s2_scatter_pair(row, row + ldcol, g, i, off, oh0, oh1, xc)
                    continue
                valid_range(off, sw, W, Wo, &lo, &hi)
                for oh in range(oh0, oh1):
                    ih = oh * g.sh + i * g.dh - g.ph
                    if ih < 0 or ih >= H:
                        continue
                    src = row + (oh - oh0) * Wo
                    dst = xc + ih * W + off
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw] += src[ow]


cdef void col2im_rows_scratch(floating* col, Py_ssize_t ldcol, const Geom* g, Py_ssize_t n_ch,
                              Py_ssize_t oh0, Py_ssize_t oh1, floating* xn) noexcept nogil:
    """:func:`col2im_rows` for a workspace ``col`` that may be overwritten.  With
    :func:`phase_split` geometry, :func:`col2im_rows_phase`; with :func:`rows_contiguous` geometry the out-of-window entries of each tap's row are set to
    zero and the whole span is added in one vectorizable pass (adding ``+0.0`` leaves every
    sum unchanged, except that a ``-0.0`` sum becomes ``+0.0``)."""
    cdef Py_ssize_t c, i, j, t, oh, ow, lo, hi, a, b, s0, c_lo, c_hi, n
    cdef Py_ssize_t W = g.W, Wo = g.Wo
    cdef floating* xc
    cdef floating* dst
    cdef floating* src
    if not rows_contiguous(g):
        if phase_split(g) and col2im_rows_phase(col, ldcol, g, n_ch, oh0, oh1, xn):
            return
        col2im_rows(col, ldcol, g, n_ch, oh0, oh1, xn)
        return
    for c in range(n_ch):
        xc = xn + c * g.H * W
        for i in range(g.kh):
            for j in range(g.kw):
                tap_span(g, i, j, oh0, oh1, &a, &b, &lo, &hi, &s0, &c_lo, &c_hi)
                if lo >= hi or a >= b:
                    continue
                n = (b - a) * W
                src = col + ((c * g.kh + i) * g.kw + j) * ldcol + (a - oh0) * W
                if lo > 0 or hi < Wo:
                    for oh in range(b - a):
                        for ow in range(lo):
                            src[oh * W + ow] = 0
                        for ow in range(hi, Wo):
                            src[oh * W + ow] = 0
                dst = xc + s0
                for t in range(c_lo, n - c_hi):
                    dst[t] += src[t]


# ------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3): 3x3 kernels, stride 1, dilation 1
# ------------------------------------------------------------------------------------------
#
# Each 2x2 block ("tile") of one output channel is A^T [sum_c U_c (.) V_c] A, where U_c =
# G g_c G^T is the 4x4 transform of the 3x3 filter of input channel c and V_c = B^T d_c B
# that of the tile's 4x4 input patch.  The channel sums are 16 GEMMs through BLAS, one per
# entry xi of the 4x4 transforms: U_xi (C_out x C_in) @ V_xi (C_in x tiles) -- 2.25x fewer
# multiplications than im2col + GEMM.  The weight gradient is the same in reverse:
# dU_xi (C_out x C_in) = dY^_xi (C_out x tiles) @ V_xi^T with dY^ = A dY A^T per tile, then
# dW = G^T dU G.  The transforms add, subtract and halve, so results agree with the GEMM path
# to rounding -- but an Inf would meet its own negative in them and become NaN: inputs and
# filters are checked first, and any Inf/NaN sends the call down the GEMM path.
#
#   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]    G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
#   A^T = [1 1 1 0; 0 1 -1 -1]
# Transform entry xi = 4*i + j is row i, column j of the 4x4 tile transform.

cdef enum:
    WINO_NONFINITE = 1     # (internal status) an input was Inf/NaN: use the GEMM path
    # F(4x4): blocks of COL_BUDGET / (WINO4_BUDGET_DIV * channels) tiles
    WINO4_BUDGET_DIV = 36
    # F(4x4): elements between the transform entries' matrices beyond their size, so that
    # the 36 rows one tile's transform writes (or reads) do not fall into one cache set
    W4_SKEW = 16


cdef inline bint wino_applicable(const Geom* g) noexcept nogil:
    return g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1


cdef inline bint all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    """No Inf or NaN among ``x[0:n]`` (``v - v`` is 0 exactly for finite ``v``)."""
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(n):
        bad = bad | (x[i] - x[i] != 0)
    return bad == 0


cdef inline bint rows_finite(const floating* planes, Py_ssize_t n_ch, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """No Inf/NaN in rows ``[r0, r1)`` (clipped to the plane) of ``n_ch`` planes."""
    cdef Py_ssize_t c
    r0 = py_max(r0, 0)
    r1 = py_min(r1, H)
    if r0 >= r1:
        return True
    for c in range(n_ch):
        if not all_finite(planes + c * H * W + r0 * W, (r1 - r0) * W):
            return False
    return True


ctypedef struct WinoBlocks:
    Py_ssize_t TH, TW           # tile rows / columns of one output plane
    Py_ssize_t spb              # samples per block (> 1 only when a sample has few tiles)
    Py_ssize_t trows            # tile rows per block
    Py_ssize_t n_sblocks, n_rblocks, max_tiles


ctypedef struct WinoTask:
    Py_ssize_t n0, ns, gi       # first sample, sample count, group
    Py_ssize_t ty0, ty1         # tile rows [ty0, ty1)


cdef inline WinoTask wino_task(const WinoBlocks* bl, Py_ssize_t t, Py_ssize_t G,
                               Py_ssize_t N) noexcept nogil:
    """Task ``t`` of a Winograd pass over ``bl`` (tasks ordered by block of samples, block
    of tile rows, group)."""
    cdef WinoTask k
    cdef Py_ssize_t r = t % (bl.n_rblocks * G)
    k.n0 = (t // (bl.n_rblocks * G)) * bl.spb
    k.ns = py_min(bl.spb, N - k.n0)
    k.gi = r % G
    k.ty0 = (r // G) * bl.trows
    k.ty1 = py_min(bl.TH, k.ty0 + bl.trows)
    return k


cdef inline WinoBlocks wino_blocks(Py_ssize_t N, Py_ssize_t Ho, Py_ssize_t Wo,
                                   Py_ssize_t ch, Py_ssize_t m) noexcept nogil:
    """Blocks of about ``COL_BUDGET / (16 ch)`` tiles of m x m outputs (``ch``: the larger
    channel count), so a thread's transforms (16 x ch x tiles each for F(2x2)) stay near the
    im2col workspace budget.  Whole samples side by side when several fit, else blocks of
    tile rows.  Shapes only."""
    cdef WinoBlocks b
    cdef Py_ssize_t target = py_max(1, COL_BUDGET // ((16 if m == 2 else WINO4_BUDGET_DIV)
                                                       * py_max(1, ch)))
    b.TH = (Ho + m - 1) // m
    b.TW = (Wo + m - 1) // m
    if N > 1 and 2 * b.TH * (b.TW + 1) <= target:
        b.spb = py_max(1, py_min(target // (b.TH * (b.TW + 1)),
                                 (N + MIN_SAMPLE_BLOCKS - 1) // MIN_SAMPLE_BLOCKS))
        b.trows = b.TH
    else:
        b.spb = 1
        b.trows = py_max(1, py_min(b.TH, target // (b.TW + 1)))
    b.n_sblocks = (N + b.spb - 1) // b.spb
    b.n_rblocks = (b.TH + b.trows - 1) // b.trows
    b.max_tiles = b.spb * b.trows * (b.TW + 1)   # (+1: the junk tile of each row)
    return b


cdef int wino_weights(const floating* w, Py_ssize_t G, Py_ssize_t n_out, Py_ssize_t n_in,
                      floating* U) noexcept nogil:
    """``U[gi][xi][o][i] = (G w[gi, o, i] G^T)[xi]`` for the 3x3 filters ``w`` (G groups of
    n_out x n_in x 3 x 3); WINO_NONFINITE if a filter holds Inf/NaN."""
    cdef Py_ssize_t gi, o, i, r, e, MN = n_out * n_in
    cdef const floating* f
    cdef floating* Ug
    cdef floating t[4][3]
    cdef floating h = 0.5
    if not all_finite(w, G * MN * 9):
        return WINO_NONFINITE
    for gi in range(G):
        Ug = U + gi * 16 * MN
        for o in range(n_out):
            for i in range(n_in):
                e = o * n_in + i
                f = w + (gi * MN + e) * 9
                for r in range(3):      # G g: columns of g
                    t[0][r] = f[r]
                    t[1][r] = h * (f[r] + f[3 + r] + f[6 + r])
                    t[2][r] = h * (f[r] - f[3 + r] + f[6 + r])
                    t[3][r] = f[6 + r]
                for r in range(4):      # (G g) G^T: rows of G g
                    Ug[(4 * r + 0) * MN + e] = t[r][0]
                    Ug[(4 * r + 1) * MN + e] = h * (t[r][0] + t[r][1] + t[r][2])
                    Ug[(4 * r + 2) * MN + e] = h * (t[r][0] - t[r][1] + t[r][2])
                    Ug[(4 * r + 3) * MN + e] = t[r][2]
    return CNN_OK


cdef void wino_input(const floating* xs, Py_ssize_t n_ch, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t ty0, Py_ssize_t ty1,
                     Py_ssize_t TW, floating* V, Py_ssize_t ldv, Py_ssize_t t0,
                     floating* scratch) noexcept nogil:
    """``V[xi][c][t0 + u] = (B^T d B)[xi]`` for the 4x4 input patch ``d`` of tile ``u =
    (ty-ty0)*(TW+1) + tx`` (rows ``2ty-ph ..``, columns ``2tx-pw ..``, zero outside the image)
    of every channel ``c`` of one sample (``xs``: its first plane); ``V`` rows have stride
    ``ldv``.  Each tile row has one extra tile ``tx = TW`` (junk, never output): then tile
    ``u`` starts at column ``2u`` of the flattened rows, and every loop below is a plain
    vectorizable sweep.  ``scratch``: see :func:`wino_scratch`."""
    cdef Py_ssize_t Q = 2 * TW + 2, nty = ty1 - ty0, nr, LA, per, c, rr, r, lo, hi, q, u, i
    cdef floating* R = scratch                  # the tile rows' input rows, zero padded
    cdef floating* A                            # B^T d of each tile row, flattened
    cdef floating* a
    cdef floating* s0
    cdef floating* s1
    cdef floating* s2
    cdef floating* s3
    cdef floating* d
    nr = 2 * nty + 2
    LA = nty * Q + 4
    per = nty * (TW + 1)
    A = R + nr * Q
    lo = py_min(py_max(pw, 0), Q)
    hi = py_min(py_max(pw + W, lo), Q)
    for c in range(n_ch):
        for rr in range(nr):
            r = 2 * ty0 - ph + rr
            if r < 0 or r >= H:
                memset(R + rr * Q, 0, Q * sizeof(floating))
                continue
            for q in range(lo):
                R[rr * Q + q] = 0
            memcpy(R + rr * Q + lo, xs + (c * H + r) * W + (lo - pw), (hi - lo) * sizeof(floating))
            for q in range(hi, Q):
                R[rr * Q + q] = 0
        for rr in range(nty):       # B^T on the rows: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
            s0 = R + 2 * rr * Q
            s1 = s0 + Q
            s2 = s1 + Q
            s3 = s2 + Q
            a = A + rr * Q
            for q in range(Q):
                a[q] = s0[q] - s2[q]
            a = a + LA
            for q in range(Q):
                a[q] = s1[q] + s2[q]
            a = a + LA
            for q in range(Q):
                a[q] = s2[q] - s1[q]
            a = a + LA
            for q in range(Q):
                a[q] = s1[q] - s3[q]
        for i in range(4):          # ... B on the columns, tile u reading columns 2u .. 2u+3
            a = A + i * LA
            for q in range(nty * Q, LA):
                a[q] = 0
            d = V + ((4 * i) * n_ch + c) * ldv + t0
            for u in range(per):
                d[u] = a[2 * u] - a[2 * u + 2]
            d = d + n_ch * ldv
            for u in range(per):
                d[u] = a[2 * u + 1] + a[2 * u + 2]
            d = d + n_ch * ldv
            for u in range(per):
                d[u] = a[2 * u + 2] - a[2 * u + 1]
            d = d + n_ch * ldv
            for u in range(per):
                d[u] = a[2 * u + 1] - a[2 * u + 3]


cdef inline Py_ssize_t wino_scratch(Py_ssize_t trows, Py_ssize_t TW) noexcept nogil:
    """Elements of transform scratch for blocks of ``trows`` tile rows (any of the three)."""
    return (6 * trows + 2) * (2 * TW + 2) + 16


cdef void wino_output(const floating* M, Py_ssize_t ldm, Py_ssize_t t0, Py_ssize_t n_ch,
                      Py_ssize_t ty0, Py_ssize_t ty1, Py_ssize_t TW, const floating* bias,
                      floating* ys, Py_ssize_t Ho, Py_ssize_t Wo,
                      floating* scratch) noexcept nogil:
    """Inverse of :func:`wino_input` for the outputs: the 2x2 tiles ``A^T m A`` (+ bias) of
    the ``n_ch`` channels of one sample (``ys``: its first output plane), clipped to
    ``Ho x Wo`` (junk tiles dropped)."""
    cdef Py_ssize_t Q = 2 * TW + 2, nty = ty1 - ty0, per, k, j, u, rr, oh
    cdef Py_ssize_t S = n_ch * ldm
    cdef floating* sa                           # A^T m: 2 x 4 rows of per tiles
    cdef floating* y0                           # output rows, flattened like the tiles
    cdef floating* y1
    cdef floating* o
    cdef const floating* m
    cdef floating b
    per = nty * (TW + 1)
    sa = scratch
    y0 = sa + 8 * per
    y1 = y0 + nty * Q
    for k in range(n_ch):
        b = bias[k] if bias != NULL else 0
        m = M + k * ldm + t0
        for j in range(4):          # A^T on the rows: (m0 + m1 + m2, m1 - m2 - m3)
            o = sa + j * per
            for u in range(per):
                o[u] = m[j * S + u] + m[(4 + j) * S + u] + m[(8 + j) * S + u]
            o = sa + (4 + j) * per
            for u in range(per):
                o[u] = m[(4 + j) * S + u] - m[(8 + j) * S + u] - m[(12 + j) * S + u]
        for u in range(per):        # ... A on the columns, two outputs per tile and row
            y0[2 * u] = sa[u] + sa[per + u] + sa[2 * per + u] + b
            y0[2 * u + 1] = sa[per + u] - sa[2 * per + u] - sa[3 * per + u] + b
        for u in range(per):
            y1[2 * u] = sa[4 * per + u] + sa[5 * per + u] + sa[6 * per + u] + b
            y1[2 * u + 1] = sa[5 * per + u] - sa[6 * per + u] - sa[7 * per + u] + b
        for rr in range(nty):
            oh = 2 * (ty0 + rr)
            memcpy(ys + (k * Ho + oh) * Wo, y0 + rr * Q, Wo * sizeof(floating))
            if oh + 1 < Ho:
                memcpy(ys + (k * Ho + oh + 1) * Wo, y1 + rr * Q, Wo * sizeof(floating))


cdef void wino_grad_tiles(const floating* gs, Py_ssize_t n_ch, Py_ssize_t Ho, Py_ssize_t Wo,
                          Py_ssize_t ty0, Py_ssize_t ty1, Py_ssize_t TW, floating* D,
                          Py_ssize_t ldd, Py_ssize_t t0, floating* scratch) noexcept nogil:
    """``D[xi][k][t0 + u] = (A g A^T)[xi]`` for the 2x2 output-gradient tiles ``g`` (zero past
    ``Ho x Wo``, and for the junk tiles) of the ``n_ch`` channels of one sample (``gs``: its
    first plane), tiles numbered as in :func:`wino_input`."""
    cdef Py_ssize_t Q = 2 * TW + 2, nty = ty1 - ty0, LB, per, k, rr, oh, q, u, i
    cdef floating* R = scratch                  # the tile rows' gradient rows, zero padded
    cdef floating* Bv                           # A g of each tile row, flattened
    cdef floating* bq
    cdef floating* g0
    cdef floating* g1
    cdef floating* d
    LB = nty * Q + 4
    per = nty * (TW + 1)
    Bv = R + 2 * nty * Q
    for k in range(n_ch):
        for rr in range(2 * nty):
            oh = 2 * ty0 + rr
            if oh >= Ho:
                memset(R + rr * Q, 0, Q * sizeof(floating))
                continue
            memcpy(R + rr * Q, gs + (k * Ho + oh) * Wo, Wo * sizeof(floating))
            for q in range(Wo, Q):
                R[rr * Q + q] = 0
        for rr in range(nty):       # A on the rows: (g0, g0 + g1, g0 - g1, -g1)
            g0 = R + 2 * rr * Q
            g1 = g0 + Q
            bq = Bv + rr * Q
            for q in range(Q):
                bq[q] = g0[q]
            bq = bq + LB
            for q in range(Q):
                bq[q] = g0[q] + g1[q]
            bq = bq + LB
            for q in range(Q):
                bq[q] = g0[q] - g1[q]
            bq = bq + LB
            for q in range(Q):
                bq[q] = -g1[q]
        for i in range(4):          # ... A^T on the columns, tile u reading columns 2u, 2u+1
            bq = Bv + i * LB
            d = D + ((4 * i) * n_ch + k) * ldd + t0
            for u in range(per):
                d[u] = bq[2 * u]
            d = d + n_ch * ldd
            for u in range(per):
                d[u] = bq[2 * u] + bq[2 * u + 1]
            d = d + n_ch * ldd
            for u in range(per):
                d[u] = bq[2 * u] - bq[2 * u + 1]
            d = d + n_ch * ldd
            for u in range(per):
                d[u] = -bq[2 * u + 1]


# Winograd F(4x4, 3x3) ("winograd4"): 4x4 output tiles from 6x6 input patches, 36 GEMMs per
# block of tiles -- 4x fewer multiplications than im2col + GEMM (F(2x2, 3x3): 2.25x).  The
# interpolation points are 0, +-1, +-2 and infinity (Lavin & Gray's matrices):
#
#   B^T = [4  0 -5  0 1 0]    G = [ 1/4     0     0 ]    A^T = [1 1  1 1  1 0]
#         [0 -4 -4  1 1 0]        [-1/6  -1/6  -1/6 ]          [0 1 -1 2 -2 0]
#         [0  4 -4 -1 1 0]        [-1/6   1/6  -1/6 ]          [0 1  1 4  4 0]
#         [0 -2 -1  2 1 0]        [1/24  1/12   1/6 ]          [0 1 -1 8 -8 1]
#         [0  2 -1 -2 1 0]        [1/24 -1/12   1/6 ]
#         [0  4  0 -5 0 1]        [   0     0     1 ]
#
# Their larger entries (5, 8, 1/6) cost accuracy: measured float32 errors (max |error| over
# max |exact| against float64, 64 channels, unit-normal data) are in conv_dispatch.py's
# docstring.  The filter transforms G g G^T and G^T dU G run in float64 for both dtypes.
# Layout (wino4_conv): per block of tiles (whole samples side by side, or tile rows of a
# large image), the input rows are copied with the channels innermost ([row][column][c]) and
# each 6x6 patch transformed by sweeps over its channels (src/_winograd4.h, cnn_w4c_in):
# V[xi] is tiles x C_in, with no junk tiles whatever the image width, and an 8x8 image costs
# as much per tile as a large one.  36 GEMMs give M[xi] = U[xi] V[xi]^T (C_out x tiles), and
# each output channel is transformed back by sweeps over all the block's tiles (the rows'
# four phases interleaved back at the end) while the block is in cache.  The matrices of
# the 36 entries are SKEWed apart (W4_SKEW), so that one tile's 36 values do not share a
# cache set.  The weight gradient transforms the output gradient the same way (tiles x
# C_out, cnn_w4c_grad): dU[xi] += D[xi]^T V[xi] per batch part.


cdef inline void wino4_filter(const floating* f, floating* Ug, Py_ssize_t ldu,
                              Py_ssize_t e) noexcept nogil:
    """``Ug[xi * ldu + e] = (G f G^T)[xi]`` for one 3x3 filter ``f`` (in float64)."""
    cdef double t[6][3]
    cdef double g0, g1, g2
    cdef double SIXTH = 1.0 / 6.0, TWELFTH = 1.0 / 12.0, TWENTYFOURTH = 1.0 / 24.0
    cdef Py_ssize_t r
    for r in range(3):      # G g: columns of g
        g0 = f[r]
        g1 = f[3 + r]
        g2 = f[6 + r]
        t[0][r] = g0 * 0.25
        t[1][r] = -(g0 + g1 + g2) * SIXTH
        t[2][r] = -(g0 - g1 + g2) * SIXTH
        t[3][r] = g0 * TWENTYFOURTH + g1 * TWELFTH + g2 * SIXTH
        t[4][r] = g0 * TWENTYFOURTH - g1 * TWELFTH + g2 * SIXTH
        t[5][r] = g2
    for r in range(6):      # (G g) G^T: rows of G g
        g0 = t[r][0]
        g1 = t[r][1]
        g2 = t[r][2]
        Ug[(6 * r + 0) * ldu + e] = <floating> (g0 * 0.25)
        Ug[(6 * r + 1) * ldu + e] = <floating> (-(g0 + g1 + g2) * SIXTH)
        Ug[(6 * r + 2) * ldu + e] = <floating> (-(g0 - g1 + g2) * SIXTH)
        Ug[(6 * r + 3) * ldu + e] = <floating> (g0 * TWENTYFOURTH + g1 * TWELFTH + g2 * SIXTH)
        Ug[(6 * r + 4) * ldu + e] = <floating> (g0 * TWENTYFOURTH - g1 * TWELFTH + g2 * SIXTH)
        Ug[(6 * r + 5) * ldu + e] = <floating> g2


cdef int wino4_weights(const floating* w, Py_ssize_t G, Py_ssize_t n_out, Py_ssize_t n_in,
                       floating* U, Py_ssize_t ldu, int n_threads) noexcept nogil:
    """``U[(gi * 36 + xi) * ldu + o * n_in + i] = (G w[gi, o, i] G^T)[xi]`` (36 entries,
    F(4x4); ``ldu >= n_out * n_in``), filter by filter (any thread count: the same bits);
    WINO_NONFINITE if a filter holds Inf/NaN."""
    cdef Py_ssize_t q, gi, o, i, MN = n_out * n_in
    if not all_finite(w, G * MN * 9):
        return WINO_NONFINITE
    for q in prange(G * n_out, schedule="static",
                    num_threads=<int> py_max(1, py_min(n_threads, G * MN // 1024))):
        gi = q // n_out
        o = q % n_out
        for i in range(n_in):
            wino4_filter(w + (gi * MN + o * n_in + i) * 9, U + gi * 36 * ldu, ldu,
                         o * n_in + i)
    return CNN_OK


cdef void wino4_filter_grad(const floating* du, Py_ssize_t stride_xi, Py_ssize_t stride_part,
                            Py_ssize_t n_parts, floating* dw9) noexcept nogil:
    """F(4x4) :func:`wino_filter_grad`: ``dw9 (3x3) = G^T dU G`` (in float64), ``dU[xi]``
    the sum over the batch parts (in order) of ``du[q * stride_part + xi * stride_xi]``."""
    cdef double u[36]
    cdef double tt[3][6]
    cdef double sm, a1, a2, a3, a4
    cdef double SIXTH = 1.0 / 6.0, TWELFTH = 1.0 / 12.0, TWENTYFOURTH = 1.0 / 24.0
    cdef Py_ssize_t xi, q, i, j
    for xi in range(36):
        sm = du[xi * stride_xi]
        for q in range(1, n_parts):
            sm = sm + du[q * stride_part + xi * stride_xi]
        u[xi] = sm
    for j in range(6):      # G^T dU: the columns' three combinations of the six rows
        a1 = u[6 + j]
        a2 = u[12 + j]
        a3 = u[18 + j]
        a4 = u[24 + j]
        tt[0][j] = u[j] * 0.25 - (a1 + a2) * SIXTH + (a3 + a4) * TWENTYFOURTH
        tt[1][j] = (a2 - a1) * SIXTH + (a3 - a4) * TWELFTH
        tt[2][j] = (a3 + a4 - a1 - a2) * SIXTH + u[30 + j]
    for i in range(3):      # (G^T dU) G: the same on the columns
        a1 = tt[i][1]
        a2 = tt[i][2]
        a3 = tt[i][3]
        a4 = tt[i][4]
        dw9[3 * i] = <floating> (tt[i][0] * 0.25 - (a1 + a2) * SIXTH + (a3 + a4) * TWENTYFOURTH)
        dw9[3 * i + 1] = <floating> ((a2 - a1) * SIXTH + (a3 - a4) * TWELFTH)
        dw9[3 * i + 2] = <floating> ((a3 + a4 - a1 - a2) * SIXTH + tt[i][5])


cdef inline WinoBlocks wino4_blocks(Py_ssize_t N, Py_ssize_t Ho, Py_ssize_t Wo,
                                    Py_ssize_t ch) noexcept nogil:
    """F(4x4) blocks of about ``COL_BUDGET / (WINO4_BUDGET_DIV ch)`` tiles (no junk tiles:
    the channel-minor transforms work tile by tile).  Shapes only."""
    cdef WinoBlocks b
    cdef Py_ssize_t target = py_max(1, COL_BUDGET // (WINO4_BUDGET_DIV * py_max(1, ch)))
    b.TH = (Ho + 3) // 4
    b.TW = (Wo + 3) // 4
    if N > 1 and 2 * b.TH * b.TW <= target:
        b.spb = py_max(1, py_min(target // (b.TH * b.TW),
                                 (N + MIN_SAMPLE_BLOCKS - 1) // MIN_SAMPLE_BLOCKS))
        b.trows = b.TH
    else:
        b.spb = 1
        b.trows = py_max(1, py_min(b.TH, target // b.TW))
    b.n_sblocks = (N + b.spb - 1) // b.spb
    b.n_rblocks = (b.TH + b.trows - 1) // b.trows
    b.max_tiles = b.spb * b.trows * b.TW
    return b


cdef void wino4_pool_band(const float* yr, Py_ssize_t ld_r, Py_ssize_t ld_ty, Py_ssize_t ty0,
                          Py_ssize_t nty, Py_ssize_t Ho, Py_ssize_t Wo, float* band,
                          Py_ssize_t plane, float* pool_y, int64_t* pool_idx) noexcept nogil:
    """The ReLU + 2x2 max pooling epilogue of :func:`wino4_conv`: output rows ``4 ty0 ..``
    of one plane (row ``r`` of tile row ``ty`` at ``yr + r ld_r + ty ld_ty``) gathered into
    ``band``, then pooled as :func:`conv_relu_pool_impl` pools a whole plane (the same
    kernels, so the same values and argmaxes: every pooling window lies in one band, bands
    start at even rows), the indices shifted to the plane's rows."""
    cdef Py_ssize_t oh0 = 4 * ty0, hb = py_min(Ho, 4 * (ty0 + nty)) - oh0
    cdef Py_ssize_t Wp = Wo // 2, Hp = Ho // 2, pr0 = 2 * ty0, npr, ty, r, e
    cdef float* yp
    cdef int64_t* ip
    npr = py_min(Hp, pr0 + hb // 2) - pr0
    if npr <= 0 or Wp <= 0:
        return
    for ty in range(nty):
        for r in range(4):
            if 4 * ty + r < hb:
                memcpy(band + (4 * ty + r) * Wo, yr + r * ld_r + ty * ld_ty, Wo * sizeof(float))
    yp = pool_y + plane * Hp * Wp + pr0 * Wp
    ip = pool_idx + plane * Hp * Wp + pr0 * Wp
    pool2x2_max_plane_float(band, 2 * npr, Wo, npr, Wp, yp, ip)
    cnn_rowpool_relu_float(band, Wo, npr, Wp, yp)
    if oh0:
        for e in range(npr * Wp):
            ip[e] = ip[e] + oh0 * Wo


cdef int wino4_conv(const floating* inp, Py_ssize_t N, Py_ssize_t C_all, Py_ssize_t H,
                    Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, const floating* filters,
                    Py_ssize_t G, Py_ssize_t Cin, Py_ssize_t Cout, const floating* bias,
                    floating* out, Py_ssize_t Ho, Py_ssize_t Wo, int n_threads,
                    float* pool_y=NULL, int64_t* pool_idx=NULL) noexcept nogil:
    """:func:`wino_conv` by F(4x4, 3x3).  Per task (a block of tiles of one group): the input
    rows are copied with the channels innermost and transformed tile by tile into ``V[xi]``
    (tiles x Cin: sweeps over the channels, whatever the image width); 36 GEMMs give
    ``M[xi] = U[xi] V[xi]^T`` (Cout x tiles); each output channel's products are transformed
    back in sweeps over all the block's tiles (several samples: long vectors even for
    8x8 images) while they are in cache.  Same statuses as :func:`wino_conv`.  With
    ``pool_y`` (float32 only) the output is not written: each task's rows of a plane are
    ReLU'd and 2x2 max pooled from a per-thread band (:func:`wino4_pool_band`) into
    ``pool_y`` and ``pool_idx`` (N x G*Cout planes of (Ho // 2) x (Wo // 2))."""
    cdef WinoBlocks bl = wino4_blocks(N, Ho, Wo, py_max(Cin, Cout))
    cdef Py_ssize_t n_tasks = bl.n_sblocks * bl.n_rblocks * G
    cdef Py_ssize_t nq_in = 4 * bl.TW + 2
    cdef Py_ssize_t ws_v = 36 * (Cin * bl.max_tiles + W4_SKEW)
    cdef Py_ssize_t ws_m = 36 * (Cout * bl.max_tiles + W4_SKEW)
    cdef Py_ssize_t ws_x = py_max((4 * bl.trows + 2) * nq_in * Cin + 36 * Cin,
                                  44 * bl.max_tiles)
    cdef Py_ssize_t ws_b = 4 * bl.trows * Wo + 64 if pool_y != NULL else 0
    cdef Py_ssize_t ws = ws_v + ws_m + ws_x + ws_b
    cdef Py_ssize_t t, r, n0, ns, gi, ty0, ty1, nty, nt, s, xi, per, ldv, ldm, o, oh, ty
    cdef WinoTask k
    cdef Py_ssize_t ldu = Cout * Cin + W4_SKEW
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* V = NULL
    cdef floating* M = NULL
    cdef floating* X = NULL
    cdef floating* sa
    cdef floating* yr
    cdef floating* P
    cdef floating* ys
    cdef floating b
    cdef const floating* xs
    cdef floating* U = <floating*> malloc(36 * G * ldu * sizeof(floating))
    if U == NULL:
        return CNN_ERR_NOMEM
    status = wino4_weights(filters, G, Cout, Cin, U, ldu, n_threads)
    if status != CNN_OK:
        free(U)
        return status
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks,
                                                N * G * Cin * Cout * 9 * Ho * Wo)):
        V = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(V, ws, status_p)
        M = V + ws_v if V != NULL else NULL
        X = M + ws_m if V != NULL else NULL
        for t in prange(n_tasks, schedule="static"):
            if not ok or status_p[0] != CNN_OK:
                continue
            k = wino_task(&bl, t, G, N)  # (assigned here: private to each thread)
            n0, ns, gi, ty0, ty1 = k.n0, k.ns, k.gi, k.ty0, k.ty1
            nty = ty1 - ty0
            per = nty * bl.TW
            nt = ns * per
            ldv = nt * Cin + W4_SKEW
            ldm = nt * Cout + W4_SKEW
            for s in range(ns):
                xs = inp + ((n0 + s) * C_all + gi * Cin) * H * W
                if floating is float:
                    cnn_w4c_gather_float(xs, Cin, H, W, H * W, 4 * ty0 - ph, 4 * nty + 2, -pw,
                                         nq_in, X)
                else:
                    cnn_w4c_gather_double(xs, Cin, H, W, H * W, 4 * ty0 - ph, 4 * nty + 2,
                                          -pw, nq_in, X)
                if not all_finite(X, (4 * nty + 2) * nq_in * Cin):  # (the rows read, in cache)
                    status_p[0] = WINO_NONFINITE
                    break
                if floating is float:
                    cnn_w4c_in_float(X, nq_in, Cin, nty, bl.TW, X + (4 * nty + 2) * nq_in * Cin,
                                     V + s * per * Cin, ldv)
                else:
                    cnn_w4c_in_double(X, nq_in, Cin, nty, bl.TW,
                                      X + (4 * nty + 2) * nq_in * Cin, V + s * per * Cin, ldv)
            if status_p[0] != CNN_OK:
                continue
            for xi in range(36):
                gemm(False, True, <int> Cout, <int> nt, <int> Cin, <floating> 1.0,
                     U + (gi * 36 + xi) * ldu, <int> Cin, V + xi * ldv, <int> Cin,
                     <floating> 0.0, M + xi * ldm, <int> nt)
            sa = X                      # A^T m: 4 x 6 rows of nt tiles
            yr = sa + 24 * nt           # the 4 output rows of every tile, joined
            P = yr + 16 * nt            # one output row's four phases
            for o in range(Cout):
                b = bias[gi * Cout + o] if bias != NULL else 0
                if floating is float:
                    cnn_w4_out_rows_float(M + o * nt, ldm, nt, sa)
                    for r in range(4):
                        cnn_w4_out_cols_float(sa + 6 * r * nt, nt, b, P, yr + 4 * r * nt)
                else:
                    cnn_w4_out_rows_double(M + o * nt, ldm, nt, sa)
                    for r in range(4):
                        cnn_w4_out_cols_double(sa + 6 * r * nt, nt, b, P, yr + 4 * r * nt)
                for s in range(ns):
                    if pool_y != NULL:
                        if floating is float:
                            wino4_pool_band(yr + 4 * s * per, 4 * nt, 4 * bl.TW, ty0, nty, Ho,
                                            Wo, X + ws_x,
                                            (n0 + s) * G * Cout + gi * Cout + o, pool_y,
                                            pool_idx)
                        continue
                    ys = out + ((n0 + s) * G * Cout + gi * Cout + o) * Ho * Wo
                    for ty in range(nty):
                        for r in range(4):
                            oh = 4 * (ty0 + ty) + r
                            if oh < Ho:
                                memcpy(ys + oh * Wo, yr + 4 * (r * nt + s * per + ty * bl.TW),
                                       Wo * sizeof(floating))
        free(V)
    free(U)
    return status


cdef int wino_conv(const floating* inp, Py_ssize_t N, Py_ssize_t C_all, Py_ssize_t H,
                   Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, const floating* filters,
                   Py_ssize_t G, Py_ssize_t Cin, Py_ssize_t Cout, const floating* bias,
                   floating* out, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t m,
                   int n_threads) noexcept nogil:
    """``out[n, gi*Cout + o] = sum_i corr3x3(inp[n, gi*Cin + i], filters[gi, o, i]) + bias``
    with zero padding ``(ph, pw)`` at stride 1 (``filters``: G x Cout x Cin x 3 x 3), by
    F(m x m, 3x3), m = 2 (F(4x4): :func:`wino4_conv`).  One task per (block of tiles, group).  Returns
    WINO_NONFINITE if an input value or a filter is Inf/NaN (``out`` is then incomplete),
    CNN_ERR_NOMEM, or CNN_OK."""
    cdef WinoBlocks bl = wino_blocks(N, Ho, Wo, py_max(Cin, Cout), m)
    cdef Py_ssize_t T = (m + 2) * (m + 2)      # transform entries
    cdef Py_ssize_t n_tasks = bl.n_sblocks * bl.n_rblocks * G
    cdef Py_ssize_t ws_v = T * Cin * bl.max_tiles, ws_m = T * Cout * bl.max_tiles
    cdef Py_ssize_t ws_r = wino_scratch(bl.trows, bl.TW)
    cdef Py_ssize_t t, n0, ns, gi, ty0, ty1, nt, s, xi, per
    cdef WinoTask k
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* V = NULL
    cdef floating* M = NULL
    cdef floating* rows = NULL
    cdef const floating* xs
    cdef floating* U = <floating*> malloc(T * G * Cout * Cin * sizeof(floating))
    if U == NULL:
        return CNN_ERR_NOMEM
    status = wino_weights(filters, G, Cout, Cin, U)
    if status != CNN_OK:
        free(U)
        return status
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, N * G * Cin * Cout * 9 * Ho * Wo)):
        V = <floating*> malloc((ws_v + ws_m + ws_r) * sizeof(floating))
        ok = scratch_ok(V, ws_v + ws_m + ws_r, status_p)
        M = V + ws_v if V != NULL else NULL
        rows = M + ws_m if V != NULL else NULL
        for t in prange(n_tasks, schedule="static"):
            if not ok or status_p[0] != CNN_OK:
                continue
            k = wino_task(&bl, t, G, N)  # (assigned here: private to each thread)
            n0, ns, gi, ty0, ty1 = k.n0, k.ns, k.gi, k.ty0, k.ty1
            per = (ty1 - ty0) * (bl.TW + 1)
            nt = ns * per
            for s in range(ns):
                xs = inp + ((n0 + s) * C_all + gi * Cin) * H * W
                if not rows_finite(xs, Cin, H, W, m * ty0 - ph, m * ty1 - ph + 2):
                    status_p[0] = WINO_NONFINITE
                    break
                wino_input(xs, Cin, H, W, ph, pw, ty0, ty1, bl.TW, V, nt, s * per, rows)
            if status_p[0] != CNN_OK:
                continue
            for xi in range(T):
                gemm(False, False, <int> Cout, <int> nt, <int> Cin, <floating> 1.0,
                     U + (gi * T + xi) * Cout * Cin, <int> Cin, V + xi * Cin * nt, <int> nt,
                     <floating> 0.0, M + xi * Cout * nt, <int> nt)
            for s in range(ns):
                wino_output(M, nt, s * per, Cout, ty0, ty1, bl.TW,
                            bias + gi * Cout if bias != NULL else NULL,
                            out + ((n0 + s) * G * Cout + gi * Cout) * Ho * Wo, Ho, Wo, rows)
        free(V)
    free(U)
    return status


cdef int wino_forward(const floating* x, const floating* w, const floating* bias,
                      const Geom* g, floating* y, Py_ssize_t m, int n_threads) noexcept nogil:
    """conv2d forward by Winograd F(m x m, 3x3) (see the section comment); CNN_OK,
    CNN_ERR_NOMEM or WINO_NONFINITE."""
    if m == 4:
        return wino4_conv(x, g.N, g.C, g.H, g.W, g.ph, g.pw, w, g.G, g.Cg, g.Kg, bias, y, g.Ho,
                          g.Wo, n_threads)
    return wino_conv(x, g.N, g.C, g.H, g.W, g.ph, g.pw, w, g.G, g.Cg, g.Kg, bias, y, g.Ho,
                     g.Wo, m, n_threads)


cdef int wino_backward_input(const floating* go, const floating* w, const floating* bias,
                             const Geom* g, floating* dx, Py_ssize_t m,
                             int n_threads) noexcept nogil:
    """Input gradient by Winograd F(m x m, 3x3): the stride-1 correlation of ``dy`` padded by ``2 - p``
    with the transposed, 180-degree rotated filters (needs ``p <= 2``), plus ``bias`` per
    input channel (NULL: none)."""
    cdef int status
    cdef floating* wflip = <floating*> malloc(g.K * g.Cg * 9 * sizeof(floating))
    if wflip == NULL:
        return CNN_ERR_NOMEM
    flip_transpose_weight(w, g, wflip)
    if m == 4:
        status = wino4_conv(go, g.N, g.K, g.Ho, g.Wo, 2 - g.ph, 2 - g.pw, wflip, g.G, g.Kg,
                            g.Cg, bias, dx, g.H, g.W, n_threads)
    else:
        status = wino_conv(go, g.N, g.K, g.Ho, g.Wo, 2 - g.ph, 2 - g.pw, wflip, g.G, g.Kg,
                           g.Cg, bias, dx, g.H, g.W, m, n_threads)
    free(wflip)
    return status


cdef void wino_filter_grad(const floating* du, Py_ssize_t stride_xi, Py_ssize_t stride_part,
                           Py_ssize_t n_parts, floating* dw9) noexcept nogil:
    """``dw9 (3x3) = G^T dU G`` for one filter, ``dU[xi]`` being the sum over the batch parts
    (in order) of ``du[q * stride_part + xi * stride_xi]``."""
    cdef floating u[16]
    cdef floating tt[3][4]
    cdef floating h = 0.5, sm
    cdef Py_ssize_t xi, q, i, j
    for xi in range(16):
        sm = du[xi * stride_xi]
        for q in range(1, n_parts):
            sm = sm + du[q * stride_part + xi * stride_xi]
        u[xi] = sm
    for j in range(4):      # G^T dU: rows u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3
        tt[0][j] = u[j] + h * (u[4 + j] + u[8 + j])
        tt[1][j] = h * (u[4 + j] - u[8 + j])
        tt[2][j] = h * (u[4 + j] + u[8 + j]) + u[12 + j]
    for i in range(3):      # (G^T dU) G: the same on the columns
        dw9[3 * i] = tt[i][0] + h * (tt[i][1] + tt[i][2])
        dw9[3 * i + 1] = h * (tt[i][1] - tt[i][2])
        dw9[3 * i + 2] = h * (tt[i][1] + tt[i][2]) + tt[i][3]


cdef int wino4_backward_weight(const floating* go, const floating* x, const Geom* g,
                               floating* dw, floating* db, int n_threads) noexcept nogil:
    """:func:`wino_backward_weight` by F(4x4, 3x3), channel-minor (as :func:`wino4_conv`):
    per batch part ``dU_xi += D_xi^T @ V_xi`` (D: the transformed output-gradient tiles,
    tiles x C_out; V: the input's, tiles x C_in) over its tile blocks, the parts added in
    order, then ``dW = G^T dU G``."""
    cdef WinoBlocks bl = wino4_blocks(g.N, g.Ho, g.Wo, py_max(g.Cg, g.Kg))
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.G
    cdef Py_ssize_t KC = g.Kg * g.Cg, KCs = KC + W4_SKEW, usize = 36 * g.G * KCs
    cdef Py_ssize_t nq_in = 4 * bl.TW + 2, nq_out = 4 * bl.TW
    cdef Py_ssize_t ws_v = 36 * (g.Cg * bl.max_tiles + W4_SKEW)
    cdef Py_ssize_t ws_d = 36 * (g.Kg * bl.max_tiles + W4_SKEW)
    cdef Py_ssize_t ws_x = py_max((4 * bl.trows + 2) * nq_in * g.Cg, 4 * bl.trows * nq_out * g.Kg)
    cdef Py_ssize_t ws_t = 36 * py_max(g.Cg, g.Kg), ws = ws_v + ws_d + ws_x + ws_t
    cdef Py_ssize_t t, p, gi, n0, ns, n_lo, n_hi, rb, ty0, ty1, nty, per, nt, s, xi, e
    cdef Py_ssize_t ldv, ldd
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* partials = NULL
    cdef floating* bpart = NULL
    cdef floating* V = NULL
    cdef floating* D = NULL
    cdef floating* X = NULL
    cdef floating* tb = NULL
    cdef floating* acc
    cdef const floating* xs
    cdef const floating* gs
    cdef floating beta
    if alloc_parts(n_parts, usize, g.K, db != NULL, &partials, &bpart) != CNN_OK:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        V = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(V, ws, status_p)
        D = V + ws_v if V != NULL else NULL
        X = D + ws_d if V != NULL else NULL
        tb = X + ws_x if V != NULL else NULL
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            p = t // g.G
            gi = t % g.G
            acc = partials + p * usize + gi * 36 * KCs
            for xi in range(36):        # (the skew gaps, summed with the rest)
                memset(acc + xi * KCs + KC, 0, W4_SKEW * sizeof(floating))
            n_lo = p * g.N // n_parts
            n_hi = (p + 1) * g.N // n_parts
            beta = 0
            n0 = n_lo
            while n0 < n_hi and status_p[0] == CNN_OK:
                ns = py_min(bl.spb, n_hi - n0)
                for rb in range(bl.n_rblocks):
                    ty0 = rb * bl.trows
                    ty1 = py_min(bl.TH, ty0 + bl.trows)
                    nty = ty1 - ty0
                    per = nty * bl.TW
                    nt = ns * per
                    ldv = nt * g.Cg + W4_SKEW
                    ldd = nt * g.Kg + W4_SKEW
                    for s in range(ns):
                        xs = x + ((n0 + s) * g.C + gi * g.Cg) * g.H * g.W
                        gs = go + ((n0 + s) * g.K + gi * g.Kg) * g.Ho * g.Wo
                        # (Inf/NaN checked on the copies of the rows read, in cache)
                        if floating is float:
                            cnn_w4c_gather_float(xs, g.Cg, g.H, g.W, g.H * g.W, 4 * ty0 - g.ph,
                                                 4 * nty + 2, -g.pw, nq_in, X)
                        else:
                            cnn_w4c_gather_double(xs, g.Cg, g.H, g.W, g.H * g.W,
                                                  4 * ty0 - g.ph, 4 * nty + 2, -g.pw, nq_in, X)
                        if not all_finite(X, (4 * nty + 2) * nq_in * g.Cg):
                            status_p[0] = WINO_NONFINITE
                            break
                        if floating is float:
                            cnn_w4c_in_float(X, nq_in, g.Cg, nty, bl.TW, tb,
                                             V + s * per * g.Cg, ldv)
                            cnn_w4c_gather_float(gs, g.Kg, g.Ho, g.Wo, g.Ho * g.Wo, 4 * ty0,
                                                 4 * nty, 0, nq_out, X)
                        else:
                            cnn_w4c_in_double(X, nq_in, g.Cg, nty, bl.TW, tb,
                                              V + s * per * g.Cg, ldv)
                            cnn_w4c_gather_double(gs, g.Kg, g.Ho, g.Wo, g.Ho * g.Wo, 4 * ty0,
                                                  4 * nty, 0, nq_out, X)
                        if not all_finite(X, 4 * nty * nq_out * g.Kg):
                            status_p[0] = WINO_NONFINITE
                            break
                        if floating is float:
                            cnn_w4c_grad_float(X, nq_out, g.Kg, nty, bl.TW, tb,
                                               D + s * per * g.Kg, ldd)
                        else:
                            cnn_w4c_grad_double(X, nq_out, g.Kg, nty, bl.TW, tb,
                                                D + s * per * g.Kg, ldd)
                    if status_p[0] != CNN_OK:
                        break
                    for xi in range(36):
                        gemm(True, False, <int> g.Kg, <int> g.Cg, <int> nt, <floating> 1.0,
                             D + xi * ldd, <int> g.Kg, V + xi * ldv, <int> g.Cg,
                             beta, acc + xi * KCs, <int> g.Cg)
                    beta = 1
                if db != NULL:
                    add_part_bias(go, g, gi, n0, ns, bpart + p * g.K)
                n0 = n0 + ns
        free(V)
    if status == CNN_OK:
        # dU = the parts in order (into part 0, element by element); then dW[k, c] =
        # G^T dU[:, k, c] G
        sum_parts(partials, n_parts, usize, partials, n_threads)
        for e in prange(g.K * g.Cg, schedule="static",
                        num_threads=<int> py_min(n_threads, py_max(1, g.K * g.Cg // 1024))):
            wino4_filter_grad(partials + (e // KC) * 36 * KCs + e % KC, KCs, 0, 1, dw + e * 9)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    return status


cdef int wino_backward_weight(const floating* go, const floating* x, const Geom* g,
                              floating* dw, floating* db, Py_ssize_t m,
                              int n_threads) noexcept nogil:
    """Weight (and, with ``db``, bias) gradient by Winograd F(m x m, 3x3): per batch part
    (as the GEMM path) ``dU_xi += dY^_xi @ V_xi^T`` over the part's tile blocks, the parts
    added in order, then ``dW = G^T dU G``."""
    cdef WinoBlocks bl = wino_blocks(g.N, g.Ho, g.Wo, py_max(g.Cg, g.Kg), m)
    cdef Py_ssize_t T = (m + 2) * (m + 2)      # transform entries
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.G
    cdef Py_ssize_t usize = T * g.K * g.Cg, KC = g.Kg * g.Cg
    cdef Py_ssize_t ws_v = T * g.Cg * bl.max_tiles, ws_d = T * g.Kg * bl.max_tiles
    cdef Py_ssize_t ws_r = wino_scratch(bl.trows, bl.TW)
    cdef Py_ssize_t t, p, gi, n0, ns, n_lo, n_hi, rb, ty0, ty1, per, nt, s, xi, e, q, k
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* partials = NULL
    cdef floating* bpart = NULL
    cdef floating* V = NULL
    cdef floating* D = NULL
    cdef floating* rows = NULL
    cdef floating* acc
    cdef const floating* xs
    cdef const floating* gs
    cdef floating beta, sm
    if alloc_parts(n_parts, usize, g.K, db != NULL, &partials, &bpart) != CNN_OK:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        V = <floating*> malloc((ws_v + ws_d + ws_r) * sizeof(floating))
        ok = scratch_ok(V, ws_v + ws_d + ws_r, status_p)
        D = V + ws_v if V != NULL else NULL
        rows = D + ws_d if V != NULL else NULL
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            p = t // g.G
            gi = t % g.G
            acc = partials + p * usize + gi * T * KC
            n_lo = p * g.N // n_parts
            n_hi = (p + 1) * g.N // n_parts
            beta = 0
            n0 = n_lo
            while n0 < n_hi and status_p[0] == CNN_OK:
                ns = py_min(bl.spb, n_hi - n0)
                for rb in range(bl.n_rblocks):
                    ty0 = rb * bl.trows
                    ty1 = py_min(bl.TH, ty0 + bl.trows)
                    per = (ty1 - ty0) * (bl.TW + 1)
                    nt = ns * per
                    for s in range(ns):
                        xs = x + ((n0 + s) * g.C + gi * g.Cg) * g.H * g.W
                        gs = go + ((n0 + s) * g.K + gi * g.Kg) * g.Ho * g.Wo
                        if not (rows_finite(xs, g.Cg, g.H, g.W, m * ty0 - g.ph,
                                            m * ty1 - g.ph + 2)
                                and rows_finite(gs, g.Kg, g.Ho, g.Wo, m * ty0, m * ty1)):
                            status_p[0] = WINO_NONFINITE
                            break
                        wino_input(xs, g.Cg, g.H, g.W, g.ph, g.pw, ty0, ty1, bl.TW, V, nt,
                                   s * per, rows)
                        wino_grad_tiles(gs, g.Kg, g.Ho, g.Wo, ty0, ty1, bl.TW, D, nt, s * per,
                                        rows)
                    if status_p[0] != CNN_OK:
                        break
                    for xi in range(T):
                        gemm(False, True, <int> g.Kg, <int> g.Cg, <int> nt, <floating> 1.0,
                             D + xi * g.Kg * nt, <int> nt, V + xi * g.Cg * nt, <int> nt, beta,
                             acc + xi * KC, <int> g.Cg)
                    beta = 1
                if db != NULL:
                    add_part_bias(go, g, gi, n0, ns, bpart + p * g.K)
                n0 = n0 + ns
        free(V)
    if status == CNN_OK:
        # dU = the parts in order; then dW[k, c] = G^T dU[:, k, c] G
        for e in prange(g.K * g.Cg, schedule="static",
                        num_threads=<int> py_min(n_threads, py_max(1, g.K * g.Cg // 1024))):
            wino_filter_grad(partials + (e // KC) * 16 * KC + e % KC, KC, usize, n_parts,
                             dw + e * 9)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    return status


# ------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------

cdef void gather_input_cols(const floating* x, const Geom* g, Py_ssize_t gi, Py_ssize_t n0,
                           Py_ssize_t ns, Py_ssize_t oh0, Py_ssize_t oh1, floating* col,
                           Py_ssize_t ldcol) noexcept nogil:
    """im2col of rows ``[oh0, oh1)`` of samples ``n0 .. n0+ns-1`` (group ``gi``), side by side."""
    cdef Py_ssize_t s, nc1 = (oh1 - oh0) * g.Wo
    for s in range(ns):
        im2col_rows(x + ((n0 + s) * g.C + gi * g.Cg) * g.H * g.W, g, g.Cg, oh0, oh1,
                    col + s * nc1, ldcol)


cdef void gather_grad_cols(const floating* go, const Geom* g, Py_ssize_t gi, Py_ssize_t n0,
                           Py_ssize_t ns, Py_ssize_t oh0, Py_ssize_t oh1, floating* dst,
                           Py_ssize_t ld) noexcept nogil:
    """``dst[k, s*nc1 + j] = dy[n0+s, gi*Kg + k, oh0*Wo + j]``: the matching output columns."""
    cdef Py_ssize_t s, k, nc1 = (oh1 - oh0) * g.Wo, L = g.Ho * g.Wo
    for s in range(ns):
        for k in range(g.Kg):
            memcpy(dst + k * ld + s * nc1, go + ((n0 + s) * g.K + gi * g.Kg + k) * L
                   + oh0 * g.Wo, nc1 * sizeof(floating))


cdef inline void fill_bias(floating* yk, Py_ssize_t ldy, Py_ssize_t n_rows, Py_ssize_t n_cols,
                           const floating* bias) noexcept nogil:
    cdef Py_ssize_t k, t
    cdef floating b
    cdef floating* row
    for k in range(n_rows):
        b = bias[k]
        row = yk + k * ldy
        for t in range(n_cols):
            row[t] = b


cdef void pad_planes(const floating* src, Py_ssize_t n_ch, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t R, Py_ssize_t Q,
                     floating* dst) noexcept nogil:
    """``dst[c, r, q] = src[c, r + row0, q + col0]`` inside the ``H x W`` planes, else 0."""
    cdef Py_ssize_t c, r, sr
    cdef Py_ssize_t q_lo = py_min(Q, py_max(0, -col0))
    cdef Py_ssize_t q_hi = py_max(q_lo, py_min(Q, W - col0))
    cdef floating* drow
    for c in range(n_ch):
        for r in range(R):
            drow = dst + (c * R + r) * Q
            sr = r + row0
            if sr < 0 or sr >= H or q_hi <= q_lo:
                memset(drow, 0, Q * sizeof(floating))
                continue
            if q_lo > 0:
                memset(drow, 0, q_lo * sizeof(floating))
            memcpy(drow + q_lo, src + (c * H + sr) * W + q_lo + col0,
                   (q_hi - q_lo) * sizeof(floating))
            if q_hi < Q:
                memset(drow + q_hi, 0, (Q - q_hi) * sizeof(floating))


cdef inline void corr_row_block(const floating* src0, Py_ssize_t ch_stride,
                                Py_ssize_t tap_row_stride, Py_ssize_t dw, const floating* wk,
                                Py_ssize_t n_in, Py_ssize_t kh, Py_ssize_t kw, floating b,
                                floating* dst) noexcept nogil:
    """``DIRECT_BLOCK`` consecutive outputs of one row (unit stride), accumulated in registers.

    Only constant indices touch ``acc``, so the compiler keeps it in vector registers across
    all ``n_in * kh * kw`` taps and stores it once."""
    cdef floating acc[DIRECT_BLOCK]
    cdef Py_ssize_t c, i, j, t
    cdef floating wv
    cdef const floating* src
    for t in range(DIRECT_BLOCK):
        acc[t] = b
    for c in range(n_in):
        for i in range(kh):
            for j in range(kw):
                wv = wk[(c * kh + i) * kw + j]
                src = src0 + c * ch_stride + i * tap_row_stride + j * dw
                for t in range(DIRECT_BLOCK):
                    acc[t] = acc[t] + wv * src[t]
    for t in range(DIRECT_BLOCK):
        dst[t] = acc[t]


cdef inline void corr_row_block4(const floating* src0, Py_ssize_t ch_stride,
                                 Py_ssize_t tap_row_stride, Py_ssize_t dw, const floating* wk,
                                 Py_ssize_t w_stride, Py_ssize_t n_in, Py_ssize_t kh,
                                 Py_ssize_t kw, const floating* b, floating* dst,
                                 Py_ssize_t dst_stride) noexcept nogil:
    """:func:`corr_row_block` for 4 output channels at once: each input load feeds 4
    independent multiply-add chains (filters ``w_stride`` apart), which hides the FMA latency
    that a single chain is bound by."""
    cdef floating acc0[DIRECT_BLOCK]
    cdef floating acc1[DIRECT_BLOCK]
    cdef floating acc2[DIRECT_BLOCK]
    cdef floating acc3[DIRECT_BLOCK]
    cdef Py_ssize_t c, i, j, t, tap
    cdef floating w0, w1, w2, w3, v
    cdef const floating* src
    for t in range(DIRECT_BLOCK):
        acc0[t] = b[0]
        acc1[t] = b[1]
        acc2[t] = b[2]
        acc3[t] = b[3]
    for c in range(n_in):
        for i in range(kh):
            for j in range(kw):
                tap = (c * kh + i) * kw + j
                w0 = wk[tap]
                w1 = wk[w_stride + tap]
                w2 = wk[2 * w_stride + tap]
                w3 = wk[3 * w_stride + tap]
                src = src0 + c * ch_stride + i * tap_row_stride + j * dw
                for t in range(DIRECT_BLOCK):
                    v = src[t]
                    acc0[t] = acc0[t] + w0 * v
                    acc1[t] = acc1[t] + w1 * v
                    acc2[t] = acc2[t] + w2 * v
                    acc3[t] = acc3[t] + w3 * v
    for t in range(DIRECT_BLOCK):
        dst[t] = acc0[t]
        dst[dst_stride + t] = acc1[t]
        dst[2 * dst_stride + t] = acc2[t]
        dst[3 * dst_stride + t] = acc3[t]


cdef void direct_corr(const floating* inp, Py_ssize_t n_in, Py_ssize_t R, Py_ssize_t Q,
                      const floating* wts, Py_ssize_t n_out, Py_ssize_t kh, Py_ssize_t kw,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                      const floating* bias, floating* out, Py_ssize_t Ho,
                      Py_ssize_t Wo) noexcept nogil:
    """Direct cross-correlation of already padded planes (no bounds checks inside):
    ``out[k, oh, ow] = bias[k] + sum_{c,i,j} wts[k, c, i, j] * inp[c, oh*sh + i*dh,
    ow*sw + j*dw]``.  With unit stride, blocks of ``DIRECT_BLOCK`` outputs of a row are
    accumulated in registers over all taps (:func:`corr_row_block`); the rest of a row (and
    strided rows) use a plain loop with one read-modify-write per tap."""
    cdef Py_ssize_t k, c, i, j, ow, oh, ow0, kk, nk
    cdef Py_ssize_t khw = kh * kw, plane = Ho * Wo
    cdef floating wv, b
    cdef floating bb[4]
    cdef floating tail[4 * DIRECT_BLOCK]
    cdef floating* orow
    cdef const floating* wk
    cdef const floating* irow
    if sw == 1:
        # Q covers whole blocks (see direct_width): a row's last block computes a few columns
        # past Wo into ``tail`` and keeps the valid ones.
        k = 0
        while k < n_out:
            nk = 4 if k + 4 <= n_out else 1
            for kk in range(nk):
                bb[kk] = bias[k + kk] if bias != NULL else 0
            wk = wts + k * n_in * khw
            for oh in range(Ho):
                orow = out + k * plane + oh * Wo
                irow = inp + oh * sh * Q
                ow0 = 0
                while ow0 < Wo:
                    if ow0 + DIRECT_BLOCK <= Wo:
                        if nk == 4:
                            corr_row_block4(irow + ow0, R * Q, dh * Q, dw, wk, n_in * khw,
                                            n_in, kh, kw, bb, orow + ow0, plane)
                        else:
                            corr_row_block(irow + ow0, R * Q, dh * Q, dw, wk, n_in, kh, kw,
                                           bb[0], orow + ow0)
                    else:
                        if nk == 4:
                            corr_row_block4(irow + ow0, R * Q, dh * Q, dw, wk, n_in * khw,
                                            n_in, kh, kw, bb, tail, DIRECT_BLOCK)
                        else:
                            corr_row_block(irow + ow0, R * Q, dh * Q, dw, wk, n_in, kh, kw,
                                           bb[0], tail)
                        for kk in range(nk):
                            memcpy(orow + kk * plane + ow0, tail + kk * DIRECT_BLOCK,
                                   (Wo - ow0) * sizeof(floating))
                    ow0 = ow0 + DIRECT_BLOCK
            k = k + nk
        return
    for k in range(n_out):
        b = bias[k] if bias != NULL else 0
        wk = wts + k * n_in * khw
        for oh in range(Ho):
            orow = out + k * plane + oh * Wo
            irow = inp + oh * sh * Q
            for ow in range(Wo):
                orow[ow] = b
            for c in range(n_in):
                for i in range(kh):
                    for j in range(kw):
                        wv = wk[(c * kh + i) * kw + j]
                        for ow in range(Wo):
                            orow[ow] = orow[ow] + wv * irow[(c * R + i * dh) * Q + ow * sw
                                                            + j * dw]


cdef inline Py_ssize_t direct_width(Py_ssize_t Wo, Py_ssize_t sw, Py_ssize_t kw,
                                    Py_ssize_t dw) noexcept nogil:
    """Width of the padded planes :func:`direct_corr` reads: with unit stride, enough for
    whole ``DIRECT_BLOCK``s of outputs (the extra columns are zeros)."""
    if sw == 1:
        Wo = (Wo + DIRECT_BLOCK - 1) // DIRECT_BLOCK * DIRECT_BLOCK
    return (Wo - 1) * sw + (kw - 1) * dw + 1


# ------------------------------------------------------------------------------------------
# Channel-blocked direct: register-blocked outer products over blocks of output channels
# ------------------------------------------------------------------------------------------
#
# The microkernels are C with vector extensions (src/_blocked_conv.h, compiled at each SIMD
# level): blocks of OB = NV x (lanes of a vector) output channels by P output pixels of a
# row stay in NV x P vector registers over all taps; each tap loads NV vectors of packed
# weights and broadcasts P input values.  The input is the same zero-padded copy of one
# sample's (one group's) planes as the direct path's, a little wider so that every row is
# whole blocks of P pixels; the weights are packed once per call as [group][block][tap][OB]
# with the blocks' biases after them.  One task per (sample, group), every output summed in
# tap order from its bias: bit-identical for any thread count.  The input gradient at unit
# stride is the same correlation of the padded dy with the transposed, rotated kernel; a
# strided one is sh * sw such correlations, one per stride phase of dx with the taps that
# reach it (blk_backward_input_strided).
#
# The blocked and rows kernels are float32 only: src/_blocked_conv.h and src/_rowconv.h build
# no double microkernels (they were a fifth of each SIMD build's compile time), so the
# float64 specializations of the helpers below (blk_corr, row_corr, ...) call none.  No
# float64 call reaches them: the *_impl entry points run GEMM for float64 where "blocked" or
# "rows" is asked for (as for a pass an algorithm does not apply to; conv_dispatch never asks
# it), and the packed and fused entry points refuse float64 arrays.

cdef inline Py_ssize_t vec_lanes(const floating* dummy) noexcept nogil:
    """Lanes of one vector of ``floating`` in this SIMD build (the blocked and rows kernels)."""
    if floating is float:
        return cnn_vec_lanes_float()
    else:
        return cnn_vec_lanes_double()


ctypedef struct BlkPlan:
    Py_ssize_t OB           # output channels per block (NV vectors)
    Py_ssize_t P            # output pixels per microkernel call
    Py_ssize_t R, Q         # rows / columns of the padded input planes
    Py_ssize_t per_group    # elements of packed weights + biases per group
    Py_ssize_t tmp          # elements of the microkernel's output scratch


cdef inline BlkPlan blk_plan(Py_ssize_t vl, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t kh,
                             Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                             Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef BlkPlan pl
    cdef Py_ssize_t nv = cnn_blk_nv(n_out, vl)
    pl.OB = nv * vl
    pl.P = cnn_blk_pixels(nv, Wo)
    pl.R = (Ho - 1) * sh + (kh - 1) * dh + 1
    pl.Q = (ceil_div(Wo, pl.P) * pl.P - 1) * sw + (kw - 1) * dw + 1
    pl.per_group = ceil_div(n_out, pl.OB) * (n_in * kh * kw + 1) * pl.OB
    pl.tmp = pl.OB * pl.P
    return pl


cdef floating* blk_pack(const floating* w, const floating* bias, Py_ssize_t G,
                        Py_ssize_t n_out, Py_ssize_t taps, const BlkPlan* pl) noexcept nogil:
    """Packed weights of ``G`` groups of ``n_out`` filters of ``taps`` values each (``w``:
    filter after filter): ``[g][block][tap][OB]``, zero past ``n_out``, then the blocks'
    biases ``[block][OB]`` (zero without ``bias``).  NULL if out of memory.  The transpose
    runs in tiles of 16 taps by a block's filters, which stay in L1 on both sides (filter by
    filter, each store of a tap went to another cache line: at batch 1 the packing of 64 ->
    64 3x3 filters took twice the convolution's own time)."""
    cdef Py_ssize_t OB = pl.OB, nob = ceil_div(n_out, pl.OB), gi, o, o0, o1, t, t0, t1
    cdef floating* buf = <floating*> calloc(G * pl.per_group, sizeof(floating))
    cdef floating* dst
    cdef const floating* src
    if buf == NULL:
        return NULL
    for gi in range(G):
        for o0 in range(nob):
            o1 = py_min(o0 * OB + OB, n_out)
            dst = buf + gi * pl.per_group + o0 * OB * taps
            for t0 in range(ceil_div(taps, 16)):
                t1 = py_min(t0 * 16 + 16, taps)
                for o in range(o0 * OB, o1):
                    src = w + (gi * n_out + o) * taps
                    for t in range(t0 * 16, t1):
                        dst[t * OB + o - o0 * OB] = src[t]
        if bias != NULL:
            for o in range(n_out):
                buf[gi * pl.per_group + nob * taps * OB + o] = bias[gi * n_out + o]
    return buf


cdef inline void blk_corr(const floating* inp, Py_ssize_t n_in, const BlkPlan* pl,
                          const floating* packed, Py_ssize_t n_out, const Geom* g,
                          Py_ssize_t sh, Py_ssize_t sw, floating* out, Py_ssize_t Ho,
                          Py_ssize_t Wo, floating* tmp, Py_ssize_t oh0=0,
                          Py_ssize_t oh1=-1) noexcept nogil:
    """Output rows ``[oh0, oh1)`` (default: all)."""
    cdef const floating* bpack = packed + ceil_div(n_out, pl.OB) * n_in * g.kh * g.kw * pl.OB
    if oh1 < 0:
        oh1 = Ho
    if floating is float:
        cnn_blk_corr_float(inp, n_in, pl.R, pl.Q, packed, bpack, n_out, g.kh, g.kw, sh, sw,
                           g.dh, g.dw, out, Ho, Wo, oh0, oh1, tmp)


cdef inline BlkPlan blk_plan_of(const floating* dummy, const Geom* g) noexcept nogil:
    return blk_plan(vec_lanes(dummy), g.Cg, g.Kg, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.Ho,
                    g.Wo)


cdef void relu_planes(floating* y, Py_ssize_t n_ch, Py_ssize_t plane, Py_ssize_t lo,
                      Py_ssize_t hi) noexcept nogil:
    """``y[c, i] = 0 if y[c, i] < 0 else y[c, i]`` for ``i`` in ``[lo, hi)`` of each of
    ``n_ch`` planes of ``plane`` elements (NaN and -0.0 pass, as the ReLU kernel)."""
    cdef Py_ssize_t c, i
    cdef floating v
    cdef floating* p
    for c in range(n_ch):
        p = y + c * plane
        for i in range(lo, hi):
            v = p[i]
            p[i] = 0 if v < 0 else v


cdef int blk_forward_packed(const floating* x, const floating* packed, const Geom* g,
                            floating* y, bint relu, int n_threads) noexcept nogil:
    """conv2d forward by the channel-blocked direct kernel on weights :func:`blk_pack`
    packed, then ``relu``: :func:`blk_forward_packed_res` without a residual."""
    return blk_forward_packed_res(x, packed, g, y, NULL, False, relu, n_threads)


cdef int blk_forward(const floating* x, const floating* w, const floating* bias,
                     const Geom* g, floating* y, int n_threads) noexcept nogil:
    """conv2d forward by the channel-blocked direct kernel: the weights packed by
    :func:`blk_pack`, then :func:`blk_forward_packed`."""
    cdef BlkPlan pl = blk_plan_of(x, g)
    cdef floating* packed = blk_pack(w, bias, g.G, g.Kg, g.Cg * g.kh * g.kw, &pl)
    if packed == NULL:
        return CNN_ERR_NOMEM
    cdef int status = blk_forward_packed(x, packed, g, y, False, n_threads)
    free(packed)
    return status


cdef int blk_backward_input(const floating* go, const floating* w, const floating* bias,
                            const Geom* g, floating* dx, int n_threads) noexcept nogil:
    """Input gradient (unit stride) by the channel-blocked kernel: the correlation of ``dy``
    padded by ``(k - 1) * d - p`` with the transposed, 180-degree rotated filters, plus
    ``bias`` per input channel (NULL: none)."""
    cdef BlkPlan pl = blk_plan(vec_lanes(go), g.Kg, g.Cg, g.kh, g.kw, 1, 1, g.dh, g.dw,
                               g.H, g.W)
    cdef Py_ssize_t n_tasks = g.N * g.G, ws = g.Kg * pl.R * pl.Q + pl.tmp
    cdef Py_ssize_t t, n0, gi
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* packed = NULL
    cdef floating* wflip = <floating*> malloc(g.K * g.Cg * g.kh * g.kw * sizeof(floating))
    if wflip == NULL:
        return CNN_ERR_NOMEM
    flip_transpose_weight(w, g, wflip)
    packed = blk_pack(wflip, bias, g.G, g.Cg, g.Kg * g.kh * g.kw, &pl)
    free(wflip)
    if packed == NULL:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        col = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            n0 = t // g.G
            gi = t % g.G
            pad_planes(go + (n0 * g.K + gi * g.Kg) * g.Ho * g.Wo, g.Kg, g.Ho, g.Wo,
                       g.ph - (g.kh - 1) * g.dh, g.pw - (g.kw - 1) * g.dw, pl.R, pl.Q, col)
            blk_corr(col, g.Kg, &pl, packed + gi * pl.per_group, g.Cg, g, 1, 1,
                     dx + (n0 * g.C + gi * g.Cg) * g.H * g.W, g.H, g.W,
                     col + g.Kg * pl.R * pl.Q)
        free(col)
    free(packed)
    return status


cdef inline bint blk_strided_input_applies(const Geom* g) noexcept nogil:
    """Whether :func:`blk_backward_input_strided` runs this input gradient: a stride above
    one, no dilation, and every stride at most the kernel's size (each phase has a tap)."""
    return ((g.sh > 1 or g.sw > 1) and g.dh == 1 and g.dw == 1 and g.sh <= g.kh
            and g.sw <= g.kw)


ctypedef struct BlkPhase:
    BlkPlan pl
    Py_ssize_t rh, rw       # the phase: taps i = rh + sh * m, j = rw + sw * n
    Py_ssize_t mh, mw       # its taps per column / row of the kernel
    Py_ssize_t u0, v0       # its first dx row / column: ih = sh * (u0 + a) + rh - ph
    Py_ssize_t Hu, Wu       # its dx rows / columns
    Py_ssize_t inp          # offset of its padded dy in the shared padded planes
    Py_ssize_t out          # offset of its dx pixels in the per-sample output scratch


cdef void blk_phase_scatter(const floating* buf, const BlkPhase* phases, const Geom* g,
                            floating* dxn) noexcept nogil:
    """Interleave one sample's (one group's) phase outputs ``buf`` (phase after phase,
    ``Cg x Hu x Wu`` each) into its dx planes ``dxn``; stride-2 rows pairwise (a loop the
    compiler vectorizes), other strides column by column."""
    cdef Py_ssize_t c, ih, rh, a, f, rw, b, W = g.W
    cdef const BlkPhase* p0
    cdef const BlkPhase* p1
    cdef const floating* e
    cdef const floating* o
    cdef floating* d
    for c in range(g.Cg):
        for ih in range(g.H):
            rh = (ih + g.ph) % g.sh
            d = dxn + (c * g.H + ih) * W
            f = rh * g.sw
            a = (ih + g.ph - rh) // g.sh - phases[f].u0
            if g.sw == 2:
                # the phase whose first column is 0 (even columns), then the odd one
                p0 = phases + f
                p1 = phases + f + 1
                if g.sw * p0.v0 + p0.rw - g.pw != 0:
                    p0, p1 = p1, p0
                e = buf + p0.out + (c * p0.Hu + a) * p0.Wu
                o = buf + p1.out + (c * p1.Hu + a) * p1.Wu
                if floating is float:
                    cnn_blk_interleave2_float(e, o, d, W)
                continue
            for rw in range(g.sw):
                p0 = phases + f + rw
                if p0.Wu == 0:
                    continue
                e = buf + p0.out + (c * p0.Hu + a) * p0.Wu
                d = dxn + (c * g.H + ih) * W + g.sw * p0.v0 + p0.rw - g.pw
                for b in range(p0.Wu):
                    d[b * g.sw] = e[b]


cdef int blk_backward_input_strided(const floating* go, const floating* w,
                                    const floating* bias, const Geom* g, floating* dx,
                                    int n_threads) noexcept nogil:
    """Input gradient of a strided convolution by the channel-blocked kernel, in phases: the
    dx pixels ``(ih, iw)`` with ``(ih + ph) % sh == rh`` and ``(iw + pw) % sw == rw`` receive
    exactly the taps ``i = rh + sh * m``, ``j = rw + sw * n``, from ``dy[oh = u - m]``
    (``ih = sh * u + rh - ph``): a unit-stride correlation of the zero-padded ``dy`` (one
    copy per sample, which every phase reads at its own offset) with that phase's
    transposed, rotated sub-kernel (:func:`blk_backward_input`'s loop, with no zero-dilated
    ``dy``), then interleaved into dx (:func:`blk_phase_scatter`).  Every dx pixel belongs
    to one phase and is summed in tap order from its ``bias`` (NULL: zero); one task per
    (sample, group): bit-identical for any thread count."""
    cdef Py_ssize_t vl = vec_lanes(go)
    cdef Py_ssize_t nph = g.sh * g.sw
    cdef Py_ssize_t n_tasks = g.N * g.G, HW = g.H * g.W, L = g.Ho * g.Wo
    cdef Py_ssize_t f, t, n0, gi, c, o, m, q, taps, top, left, R = 0, Q = 0, tmp = 0
    cdef Py_ssize_t ws, e
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* wph = NULL
    cdef floating* dst
    cdef const floating* src
    cdef const floating* bpack
    cdef BlkPhase* ph
    cdef BlkPhase* phases = <BlkPhase*> calloc(nph, sizeof(BlkPhase))
    cdef floating** packs = <floating**> calloc(nph, sizeof(floating*))
    if phases == NULL or packs == NULL:
        free(phases)
        free(packs)
        return CNN_ERR_NOMEM
    # the phases' geometry; the padded dy's origin is the lowest of theirs
    top = left = 0
    for f in range(nph):
        ph = phases + f
        ph.rh = f // g.sw
        ph.rw = f % g.sw
        ph.mh = ceil_div(g.kh - ph.rh, g.sh)
        ph.mw = ceil_div(g.kw - ph.rw, g.sw)
        ph.u0 = ceil_div(g.ph - ph.rh, g.sh)
        ph.v0 = ceil_div(g.pw - ph.rw, g.sw)
        ph.Hu = py_max(0, floor_div(g.H - 1 + g.ph - ph.rh, g.sh) - ph.u0 + 1)
        ph.Wu = py_max(0, floor_div(g.W - 1 + g.pw - ph.rw, g.sw) - ph.v0 + 1)
        ph.pl = blk_plan(vl, g.Kg, g.Cg, ph.mh, ph.mw, 1, 1, 1, 1, py_max(ph.Hu, 1),
                         py_max(ph.Wu, 1))
        ph.out = phases[f - 1].out + g.Cg * phases[f - 1].Hu * phases[f - 1].Wu if f else 0
        top = py_min(top, ph.u0 - (ph.mh - 1)) if f else ph.u0 - (ph.mh - 1)
        left = py_min(left, ph.v0 - (ph.mw - 1)) if f else ph.v0 - (ph.mw - 1)
    for f in range(nph):
        ph = phases + f
        R = py_max(R, ph.u0 - (ph.mh - 1) - top + ph.pl.R)
        Q = py_max(Q, ph.v0 - (ph.mw - 1) - left + ph.pl.Q)
        tmp = py_max(tmp, ph.pl.tmp)
    for f in range(nph):
        ph = phases + f
        ph.inp = (ph.u0 - (ph.mh - 1) - top) * Q + ph.v0 - (ph.mw - 1) - left
    ws = g.Kg * R * Q + tmp + g.Cg * HW
    wph = <floating*> malloc(g.K * g.Cg * g.kh * g.kw * sizeof(floating))
    if wph == NULL:
        status = CNN_ERR_NOMEM
    for f in range(nph):
        if status != CNN_OK:
            break
        ph = phases + f
        # per group: wph[c][o][m'][n'] = w[o, c, rh + sh * (mh-1-m'), rw + sw * (mw-1-n')]
        taps = ph.mh * ph.mw
        for gi in range(g.G):
            for o in range(g.Kg):
                for c in range(g.Cg):
                    src = w + ((gi * g.Kg + o) * g.Cg + c) * g.kh * g.kw
                    dst = wph + ((gi * g.Cg + c) * g.Kg + o) * taps
                    for m in range(ph.mh):
                        for q in range(ph.mw):
                            dst[m * ph.mw + q] = src[
                                (ph.rh + g.sh * (ph.mh - 1 - m)) * g.kw
                                + ph.rw + g.sw * (ph.mw - 1 - q)]
        packs[f] = blk_pack(wph, bias, g.G, g.Cg, g.Kg * taps, &ph.pl)
        if packs[f] == NULL:
            status = CNN_ERR_NOMEM
    free(wph)
    if status == CNN_OK:
        with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
            # zeroed once: every sample fills the same in-bounds part of the padded planes
            col = <floating*> calloc(ws, sizeof(floating))
            ok = scratch_ok(col, ws, status_p)
            for t in prange(n_tasks, schedule="static"):
                if not ok:
                    continue
                n0 = t // g.G
                gi = t % g.G
                row_fill(go + (n0 * g.K + gi * g.Kg) * L, g.Kg, g.Ho, g.Wo, top, left, R, Q,
                         col)
                e = g.Kg * R * Q
                for f in range(nph):
                    ph = phases + f
                    if ph.Hu == 0 or ph.Wu == 0:
                        continue
                    bpack = (packs[f] + gi * ph.pl.per_group
                             + ceil_div(g.Cg, ph.pl.OB) * g.Kg * ph.mh * ph.mw * ph.pl.OB)
                    if floating is float:
                        cnn_blk_corr_float(col + ph.inp, g.Kg, R, Q,
                                           packs[f] + gi * ph.pl.per_group, bpack, g.Cg,
                                           ph.mh, ph.mw, 1, 1, 1, 1,
                                           col + e + tmp + ph.out, ph.Hu, ph.Wu, 0, ph.Hu,
                                           col + e)
                blk_phase_scatter(col + e + tmp, phases, g,
                                  dx + (n0 * g.C + gi * g.Cg) * HW)
            free(col)
    for f in range(nph):
        free(packs[f])
    free(packs)
    free(phases)
    return status

cdef int blk_backward_weight(const floating* go, const floating* x, const Geom* g,
                             floating* dw, floating* db, int n_threads,
                             const floating* w=NULL, floating* dx=NULL) noexcept nogil:
    """Weight (and, with ``db``, bias) gradient by the channel-blocked kernel: per (batch
    part, group) task, sample after sample, ``dy`` transposed to output-channel blocks and
    the input zero padded, then :c:func:`cnn_blkw_sample_*` adds the sample's sums to the
    part's partial ``[block][c][i][j][OB]``; the parts are added in order.

    With ``dx`` (unit stride; ``w`` the filters), each sample's input gradient too, as
    :func:`blk_backward_input` computes it (same packing, same sums: bit-identical), while
    the sample's ``dy`` is in cache: one pass over ``dy`` instead of two (in training
    ``dy`` and ``x`` come from memory: 16 -> 16 channels at 28x28, batch 128, the two
    passes took ~0.7 ms more than on warm data)."""
    cdef Py_ssize_t vl = vec_lanes(x)
    cdef Py_ssize_t OB = cnn_blk_nv(g.Kg, vl) * vl
    cdef Py_ssize_t nob = ceil_div(g.Kg, OB), khw = g.kh * g.kw, L = g.Ho * g.Wo
    cdef Py_ssize_t R = (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1
    cdef Py_ssize_t Q = (g.Wo - 1) * g.sw + (g.kw - 1) * g.dw + 1
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.G
    cdef Py_ssize_t psize = nob * g.Cg * khw * OB          # one (part, group) partial
    cdef Py_ssize_t ws = g.Cg * R * Q + nob * L * OB
    cdef Py_ssize_t t, p, gi, n, e, o, tap, q
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* part
    cdef floating* bpart = NULL
    cdef floating sm
    cdef floating* partials = NULL
    # the fused input gradient (dx != NULL): blk_backward_input's plan, packing and scratch
    cdef BlkPlan pl
    cdef Py_ssize_t ws_d = 0
    cdef floating* packed = NULL
    cdef floating* wflip = NULL
    cdef floating* cold = NULL
    if dx != NULL:
        pl = blk_plan(vl, g.Kg, g.Cg, g.kh, g.kw, 1, 1, g.dh, g.dw, g.H, g.W)
        ws_d = g.Kg * pl.R * pl.Q + pl.tmp
        wflip = <floating*> malloc(g.K * g.Cg * g.kh * g.kw * sizeof(floating))
        if wflip == NULL:
            return CNN_ERR_NOMEM
        flip_transpose_weight(w, g, wflip)
        packed = blk_pack(wflip, <const floating*> NULL, g.G, g.Cg, g.Kg * g.kh * g.kw, &pl)
        free(wflip)
        if packed == NULL:
            return CNN_ERR_NOMEM
    if alloc_parts(n_tasks, psize, g.Kg, db != NULL, &partials, &bpart,
                   True) != CNN_OK:
        free(packed)
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        col = <floating*> malloc((ws + ws_d) * sizeof(floating))
        ok = scratch_ok(col, ws + ws_d, status_p)
        cold = col + ws if col != NULL else NULL
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            p = t // g.G
            gi = t % g.G
            part = partials + t * psize
            for n in range(p * g.N // n_parts, (p + 1) * g.N // n_parts):
                if dx != NULL:
                    pad_planes(go + (n * g.K + gi * g.Kg) * L, g.Kg, g.Ho, g.Wo,
                               g.ph - (g.kh - 1) * g.dh, g.pw - (g.kw - 1) * g.dw, pl.R,
                               pl.Q, cold)
                    blk_corr(cold, g.Kg, &pl, packed + gi * pl.per_group, g.Cg, g, 1, 1,
                             dx + (n * g.C + gi * g.Cg) * g.H * g.W, g.H, g.W,
                             cold + g.Kg * pl.R * pl.Q)
                pad_planes(x + (n * g.C + gi * g.Cg) * g.H * g.W, g.Cg, g.H, g.W, -g.ph,
                           -g.pw, R, Q, col)
                if floating is float:
                    cnn_blkw_transpose_float(go + (n * g.K + gi * g.Kg) * L, g.Kg, L, OB,
                                             col + g.Cg * R * Q)
                    cnn_blkw_sample_float(col, g.Cg, R, Q, col + g.Cg * R * Q, g.Kg, g.kh,
                                          g.kw, g.sh, g.sw, g.dh, g.dw, g.Ho, g.Wo, part)
                if db != NULL:
                    add_part_bias(go, g, gi, n, 1, bpart + p * g.K)
        free(col)
    if status == CNN_OK:
        # dw[gi*Kg + o, tap] = the parts' partials (entry (o // OB, tap, o % OB)) in order
        for e in prange(g.K * g.Cg * khw, schedule="static",
                        num_threads=<int> py_min(n_threads, py_max(1, g.K * g.Cg * khw // 4096))):
            gi = e // (g.Kg * g.Cg * khw)
            o = (e // (g.Cg * khw)) % g.Kg
            tap = e % (g.Cg * khw)
            part = partials + gi * psize + ((o // OB) * g.Cg * khw + tap) * OB + o % OB
            sm = part[0]
            for q in range(1, n_parts):
                sm = sm + part[q * g.G * psize]
            dw[e] = sm
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    free(packed)
    return status


# ------------------------------------------------------------------------------------------
# Row-vectorized direct ("rows"): pixels of a row in vector lanes, few channels
# ------------------------------------------------------------------------------------------
#
# For few channels on small images (LeNet's 5x5 convolutions, a first layer's one input
# channel), where the channel-blocked kernels leave most lanes idle or spend their time
# transposing, and im2col + GEMM copying: the microkernels (src/_rowconv.h, compiled at each
# SIMD level) run the vector lanes along a row of output pixels.  Unit stride, any dilation.
# Forward and input gradient: the correlation of a sample's zero-padded planes (the input,
# or dy padded by (k - 1) * d - p with the transposed, rotated filters) -- blocks of output
# channels x rows x vectors of pixels in registers over all taps, each output summed in tap
# order from its bias; one task per (sample, group).  Weight gradient: per (batch part,
# group) task, sample after sample, lane-wise sums over the sample's pixels for blocks of
# output channels x taps of a kernel row, whose lanes are added in a fixed order to the
# part's partial (dW's layout); the parts are added in order.

cdef inline void row_geom(const floating* dummy, Py_ssize_t n_out, Py_ssize_t Ho, Py_ssize_t Wo,
                          const Geom* g, Py_ssize_t* R, Py_ssize_t* Q) noexcept nogil:
    if floating is float:
        cnn_row_geom_float(n_out, Ho, Wo, g.kh, g.kw, g.dh, g.dw, R, Q)


cdef inline void row_fill(const floating* src, Py_ssize_t n_ch, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t row0, Py_ssize_t col0, Py_ssize_t R, Py_ssize_t Q,
                          floating* dst) noexcept nogil:
    """:func:`pad_planes` into planes whose padding is already zero: the in-bounds part only."""
    if floating is float:
        cnn_row_fill_float(src, n_ch, H, W, row0, col0, R, Q, dst)


cdef inline void row_corr(const floating* inp, Py_ssize_t n_in, Py_ssize_t R, Py_ssize_t Q,
                          const floating* w, const floating* bias, Py_ssize_t n_out,
                          const Geom* g, floating* out, Py_ssize_t Ho,
                          Py_ssize_t Wo) noexcept nogil:
    if floating is float:
        cnn_row_corr_float(inp, n_in, R, Q, w, bias, n_out, g.kh, g.kw, g.dh, g.dw, out, Ho, Wo)


cdef int rows_corr_pass(const floating* src, Py_ssize_t n_in, Py_ssize_t Hs, Py_ssize_t Ws,
                        Py_ssize_t row0, Py_ssize_t col0, const floating* w,
                        const floating* bias, Py_ssize_t n_out, const Geom* g, floating* out,
                        Py_ssize_t Ho, Py_ssize_t Wo, int n_threads) noexcept nogil:
    """One task per (sample, group): ``out`` (N x G*n_out planes of Ho x Wo) = the
    correlation of ``src`` (N x G*n_in planes of Hs x Ws, read from row ``row0`` and column
    ``col0``, zero outside) with ``w`` (G*n_out filters of n_in*kh*kw taps) plus ``bias``."""
    cdef Py_ssize_t R = 0, Q = 0
    cdef Py_ssize_t n_tasks = g.N * g.G, ws, t, n0, gi, taps = n_in * g.kh * g.kw
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    row_geom(src, n_out, Ho, Wo, g, &R, &Q)
    ws = n_in * R * Q
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        # zeroed once: every task fills the same in-bounds part of the padded planes
        col = <floating*> calloc(ws, sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for t in prange(n_tasks, schedule="dynamic"):
            if not ok:
                continue
            n0 = t // g.G
            gi = t % g.G
            row_fill(src + (n0 * g.G + gi) * n_in * Hs * Ws, n_in, Hs, Ws, row0, col0, R, Q,
                     col)
            row_corr(col, n_in, R, Q, w + gi * n_out * taps,
                     bias + gi * n_out if bias != NULL else NULL, n_out, g,
                     out + (n0 * g.G + gi) * n_out * Ho * Wo, Ho, Wo)
        free(col)
    return status


cdef int rows_forward(const floating* x, const floating* w, const floating* bias,
                      const Geom* g, floating* y, int n_threads) noexcept nogil:
    """conv2d forward (unit stride) by the row-vectorized kernel."""
    return rows_corr_pass(x, g.Cg, g.H, g.W, -g.ph, -g.pw, w, bias, g.Kg, g, y, g.Ho, g.Wo,
                          n_threads)


cdef int rows_backward_input(const floating* go, const floating* w, const floating* bias,
                             const Geom* g, floating* dx, int n_threads) noexcept nogil:
    """Input gradient (unit stride) by the row-vectorized kernel: the correlation of ``dy``
    padded by ``(k - 1) * d - p`` with the transposed, 180-degree rotated filters, plus
    ``bias`` per input channel (NULL: none)."""
    cdef int status
    cdef floating* wflip = <floating*> malloc(g.K * g.Cg * g.kh * g.kw * sizeof(floating))
    if wflip == NULL:
        return CNN_ERR_NOMEM
    flip_transpose_weight(w, g, wflip)
    status = rows_corr_pass(go, g.Kg, g.Ho, g.Wo, g.ph - (g.kh - 1) * g.dh,
                            g.pw - (g.kw - 1) * g.dw, wflip, bias, g.Cg, g, dx, g.H, g.W,
                            n_threads)
    free(wflip)
    return status


ctypedef struct RowWScratch:
    Py_ssize_t R, Q             # the padded input planes' rows and columns
    Py_ssize_t xs, vs           # elements of those planes (all channels), of the vector partials


cdef inline RowWScratch roww_scratch(const floating* dummy, const Geom* g) noexcept nogil:
    """The scratch geometry of the row-vectorized weight-gradient task
    (:c:func:`cnn_roww_task_*`) for ``g``: one place for :func:`rows_backward_weight` and the
    fused conv-ReLU-pool backward."""
    cdef RowWScratch sc
    cdef Py_ssize_t vl = vec_lanes(dummy)
    sc.R = g.Ho + (g.kh - 1) * g.dh
    sc.Q = cnn_roww_nvec(g.Wo, vl) * vl + (g.kw - 1) * g.dw
    sc.xs = g.Cg * sc.R * sc.Q
    sc.vs = cnn_roww_kbm() * g.Cg * g.kh * g.kw * vl
    return sc


cdef int rows_backward_weight(const floating* go, const floating* x, const Geom* g,
                              floating* dw, floating* db, int n_threads) noexcept nogil:
    """Weight (and, with ``db``, bias) gradient (unit stride) by the row-vectorized kernel:
    one :c:func:`cnn_roww_task_*` per (batch part, group) -- per block of output channels,
    sample after sample, lane-wise sums in vectors, then added lane by lane to the part's
    partial; the parts are added in order.  ``dy`` is read in place (a row's last vector
    reads on into the next row, its lanes masked off), but for the array's last sample,
    copied with a vector of slack."""
    cdef Py_ssize_t vl = vec_lanes(x), khw = g.kh * g.kw, L = g.Ho * g.Wo
    cdef RowWScratch sc = roww_scratch(x, g)
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.G
    cdef Py_ssize_t wsize = g.K * g.Cg * khw, psize = g.Kg * g.Cg * khw
    cdef Py_ssize_t xs = sc.xs, vs = sc.vs
    cdef Py_ssize_t ws = xs + vs + g.Kg * L + vl
    cdef Py_ssize_t t, p, gi, n, n0, n1
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef bint finite
    cdef floating* col = NULL
    cdef floating* part
    cdef floating* bpart = NULL
    cdef floating* dy_last
    cdef floating* partials = NULL
    if alloc_parts(n_parts, wsize, g.K, db != NULL, &partials, &bpart, True) != CNN_OK:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        # zeroed once: every sample fills the same in-bounds part of the padded planes
        col = <floating*> calloc(ws, sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for t in prange(n_tasks, schedule="dynamic"):
            if not ok:
                continue
            p = t // g.G
            gi = t % g.G
            part = partials + p * wsize + gi * psize
            n0 = p * g.N // n_parts
            n1 = (p + 1) * g.N // n_parts
            finite = True
            for n in range(n0, n1):
                finite = finite and all_finite(x + (n * g.C + gi * g.Cg) * g.H * g.W,
                                               g.Cg * g.H * g.W)
                if db != NULL:
                    add_part_bias(go, g, gi, n, 1, bpart + p * g.K)
            dy_last = NULL
            if n1 == g.N and gi == g.G - 1:
                dy_last = col + xs + vs
                memcpy(dy_last, go + ((n1 - 1) * g.K + gi * g.Kg) * L,
                       g.Kg * L * sizeof(floating))
            # lanes past a row's end meet zeroed dy: the input's are masked off too only
            # when it is not finite (Inf * 0 = NaN)
            if floating is float:
                cnn_roww_task_float(x + (n0 * g.C + gi * g.Cg) * g.H * g.W, g.C * g.H * g.W,
                                    g.Cg, g.H, g.W, g.ph, g.pw,
                                    go + (n0 * g.K + gi * g.Kg) * L, g.K * L, dy_last, g.Kg,
                                    g.kh, g.kw, g.dh, g.dw, g.Ho, g.Wo, n1 - n0, finite, col,
                                    col + xs, part)
        free(col)
    if status == CNN_OK:
        sum_parts(partials, n_parts, wsize, dw, n_threads)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    return status


# ------------------------------------------------------------------------------------------
# Fused conv2d -> ReLU -> 2x2 max pooling (training forward of a Sequential's first layers)
# ------------------------------------------------------------------------------------------
# One task per sample: the row-vectorized correlation of the sample into a per-thread buffer
# (its planes stay in cache), then each plane max pooled (2x2, stride 2) with the argmax and
# the ReLU applied -- the same kernels and rules as conv2d (rows) -> max_pool2d with the ReLU
# fused, so the pooled values and indices are bit-identical to those calls; the full-size
# convolution output never goes to memory.

cdef int conv_relu_pool_impl(const floating* x, const floating* w, const floating* bias,
                             const Geom* g, floating* y, int64_t* idx,
                             int n_threads) noexcept nogil:
    """``y, idx = max_pool2d(relu(conv2d(x, w, bias)), 2, return_indices=True)`` (unit stride,
    one group; ``y``/``idx``: N x K planes of (Ho // 2) x (Wo // 2))."""
    cdef Py_ssize_t R = 0, Q = 0
    cdef Py_ssize_t Hp = g.Ho // 2, Wp = g.Wo // 2, L = g.Ho * g.Wo, Lp = Hp * Wp
    cdef Py_ssize_t n_ch = g.Cg, ws, t, k
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* cv
    cdef floating* yp
    cdef int64_t* ip
    row_geom(x, g.K, g.Ho, g.Wo, g, &R, &Q)
    ws = n_ch * R * Q
    with parallel(num_threads=<int> par_threads(n_threads, g.N, conv_macs(g))):
        # the padded planes (zeroed once: every sample fills the same in-bounds part), then
        # the sample's K conv planes (a vector of slack)
        col = <floating*> calloc(ws + g.K * L + 64, sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for t in prange(g.N, schedule="dynamic"):
            if not ok:
                continue
            cv = col + ws
            row_fill(x + t * n_ch * g.H * g.W, n_ch, g.H, g.W, -g.ph, -g.pw, R, Q, col)
            row_corr(col, n_ch, R, Q, w, bias, g.K, g, cv, g.Ho, g.Wo)
            for k in range(g.K):
                yp = y + (t * g.K + k) * Lp
                ip = idx + (t * g.K + k) * Lp
                if floating is float:
                    pool2x2_max_plane_float(cv + k * L, g.Ho, g.Wo, Hp, Wp, yp, ip)
                else:
                    pool2x2_max_plane_double(cv + k * L, g.Ho, g.Wo, Hp, Wp, yp, ip)
                # the ReLU, as max_pool2d(relu(.)) gives it (see _pool.relu_first_plane)
                if floating is float:
                    cnn_rowpool_relu_float(cv + k * L, g.Wo, Hp, Wp, yp)
        free(col)
    return status


cdef int conv_relu_pool_backward_impl(const floating* gp, const int64_t* idx,
                                      const floating* relu_out, const floating* x,
                                      const Geom* g, floating* dw, floating* db,
                                      int n_threads) noexcept nogil:
    """The weight (and, with ``db``, bias) gradient behind :func:`conv_relu_pool_impl`: per
    batch part, the pooled gradient ``gp`` masked by the ReLU output and scattered to the
    argmax positions into a per-thread buffer of the part's conv-output gradient planes
    (never a full-size array), then the row-vectorized weight-gradient task on it -- the
    same parts, order and sums as :func:`rows_backward_weight` on that gradient, so
    bit-identical to ``max_pool2d_backward`` (ReLU fused) followed by the rows weight
    gradient."""
    cdef Py_ssize_t vl = vec_lanes(x), khw = g.kh * g.kw, L = g.Ho * g.Wo
    cdef Py_ssize_t Hp = g.Ho // 2, Wp = g.Wo // 2, Lp = Hp * Wp
    cdef RowWScratch sc = roww_scratch(x, g)
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t per = (g.N + n_parts - 1) // n_parts
    cdef Py_ssize_t wsize = g.K * g.Cg * khw
    cdef Py_ssize_t xs = sc.xs, vs = sc.vs
    cdef Py_ssize_t ws = xs + vs + per * g.K * L + vl
    cdef Py_ssize_t p, n, n0, n1, k, e
    cdef int status = CNN_OK
    cdef int st
    cdef int* status_p = &status
    cdef bint ok = False
    cdef bint finite
    cdef floating* col = NULL
    cdef floating* dy
    cdef floating* plane
    cdef floating* bpart = NULL
    cdef floating* partials = NULL
    if alloc_parts(n_parts, wsize, g.K, db != NULL, &partials, &bpart, True) != CNN_OK:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> par_threads(n_threads, n_parts, conv_macs(g))):
        # the padded input planes (zeroed once: every sample fills the same in-bounds part),
        # the vector partials, then the part's gradient planes (a vector of slack)
        col = <floating*> calloc(ws, sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for p in prange(n_parts, schedule="dynamic"):
            if not ok:
                continue
            n0 = p * g.N // n_parts
            n1 = (p + 1) * g.N // n_parts
            dy = col + xs + vs
            finite = True
            st = CNN_OK
            for n in range(n0, n1):
                finite = finite and all_finite(x + n * g.C * g.H * g.W, g.C * g.H * g.W)
                for k in range(g.K):
                    e = (n * g.K + k) * Lp
                    plane = dy + ((n - n0) * g.K + k) * L
                    if floating is float:
                        if pool2x2_scatter_masked_plane_float(gp + e, idx + e, relu_out + e,
                                                              g.Ho, g.Wo, Hp, Wp,
                                                              plane) != CNN_OK:
                            st = CNN_ERR_INDEX
                    else:
                        if pool2x2_scatter_masked_plane_double(gp + e, idx + e, relu_out + e,
                                                               g.Ho, g.Wo, Hp, Wp,
                                                               plane) != CNN_OK:
                            st = CNN_ERR_INDEX
                    if db != NULL:
                        bpart[p * g.K + k] = bpart[p * g.K + k] + fixed_sum(plane, L)
            if st != CNN_OK:
                status_p[0] = st
                continue
            # (a row's last vector reads on past the part's last plane: zeros, as the
            # array's last sample gets in rows_backward_weight)
            memset(dy + (n1 - n0) * g.K * L, 0, vl * sizeof(floating))
            if floating is float:
                cnn_roww_task_float(x + n0 * g.C * g.H * g.W, g.C * g.H * g.W, g.Cg, g.H, g.W,
                                    g.ph, g.pw, dy, g.K * L, NULL, g.K, g.kh, g.kw, g.dh,
                                    g.dw, g.Ho, g.Wo, n1 - n0, finite, col, col + xs,
                                    partials + p * wsize)
        free(col)
    if status == CNN_OK:
        sum_parts(partials, n_parts, wsize, dw, n_threads)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    return status


cdef int conv2d_forward_impl(const floating* x, const floating* w, const floating* bias,
                             const Geom* g, floating* y, int algo, int n_threads) noexcept nogil:
    cdef Py_ssize_t ckk = g.Cg * g.kh * g.kw
    cdef Py_ssize_t HW = g.H * g.W, L = g.Ho * g.Wo
    cdef bint pointwise = is_pointwise(g)
    cdef bint direct = algo == ALGO_DIRECT
    cdef Blocks bl = make_blocks(g, False)
    # direct: one task per (sample, group) on the input planes zero padded to exactly what
    # the windows read; GEMM: one task per (sample, block of rows, group)
    cdef Py_ssize_t Hp = (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1
    cdef Py_ssize_t Wp = direct_width(g.Wo, g.sw, g.kw, g.dw)
    cdef Py_ssize_t n_tasks = g.N * g.G if direct else g.N * bl.n_rblocks * g.G
    cdef Py_ssize_t ws_col = 0, ws_tmp = 0
    cdef Py_ssize_t t, n0, gi, rb, oh0, oh1, ncols, r
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef const floating* wg
    cdef const floating* bg
    cdef const floating* bmat
    cdef floating beta
    if algo == ALGO_DEPTHWISE and depthwise_applicable(g):
        return dw_forward(x, w, bias, g, y, n_threads)
    if floating is float and algo == ALGO_BLOCKED:
        return blk_forward(x, w, bias, g, y, n_threads)
    if floating is float and algo == ALGO_ROWS and g.sh == 1 and g.sw == 1:
        return rows_forward(x, w, bias, g, y, n_threads)
    if (algo == ALGO_WINOGRAD or algo == ALGO_WINOGRAD4) and wino_applicable(g):
        status = wino_forward(x, w, bias, g, y, 4 if algo == ALGO_WINOGRAD4 else 2, n_threads)
        if status != WINO_NONFINITE:
            return status
        status = CNN_OK     # an Inf/NaN input: the GEMM path below
    if direct:
        ws_col = g.Cg * Hp * Wp
    else:
        gemm_scratch(g, &bl, &ws_col, &ws_tmp)
    # never wake more threads than there are tasks (tiny problems stay on one thread)
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        col = <floating*> malloc(ws_col * sizeof(floating)) if ws_col else NULL
        ok = scratch_ok(col, ws_col, status_p)
        for t in prange(n_tasks, schedule="dynamic"):
            if not ok:
                continue
            if direct:
                n0 = t // g.G
                gi = t % g.G
                pad_planes(x + (n0 * g.C + gi * g.Cg) * HW, g.Cg, g.H, g.W, -g.ph, -g.pw, Hp,
                           Wp, col)
                direct_corr(col, g.Cg, Hp, Wp, w + gi * g.Kg * ckk, g.Kg, g.kh, g.kw, g.sh,
                            g.sw, g.dh, g.dw, bias + gi * g.Kg if bias != NULL else NULL,
                            y + (n0 * g.K + gi * g.Kg) * L, g.Ho, g.Wo)
                continue
            n0 = t // (bl.n_rblocks * g.G)
            r = t % (bl.n_rblocks * g.G)
            rb = r // g.G
            gi = r % g.G
            oh0 = rb * bl.rows
            oh1 = py_min(g.Ho, oh0 + bl.rows)
            ncols = (oh1 - oh0) * g.Wo
            wg = w + gi * g.Kg * ckk
            bg = bias + gi * g.Kg if bias != NULL else NULL
            beta = 1 if bg != NULL else 0
            # y block (Kg x ncols, row stride L) = W_g @ cols, written in place
            if pointwise:
                bmat = x + (n0 * g.C + gi * g.Cg) * HW + oh0 * g.Wo
            else:
                gather_input_cols(x, g, gi, n0, 1, oh0, oh1, col, ncols)
                bmat = col
            if bg != NULL:
                fill_bias(y + (n0 * g.K + gi * g.Kg) * L + oh0 * g.Wo, L, g.Kg, ncols, bg)
            gemm(False, False, <int> g.Kg, <int> ncols, <int> ckk, <floating> 1.0, wg,
                 <int> ckk, bmat, <int> (L if pointwise else ncols), beta,
                 y + (n0 * g.K + gi * g.Kg) * L + oh0 * g.Wo, <int> L)
        free(col)
    return status


# ------------------------------------------------------------------------------------------
# Gradient w.r.t. the input
# ------------------------------------------------------------------------------------------

cdef void flip_transpose_weight(const floating* w, const Geom* g,
                                floating* out) noexcept nogil:
    """Per group: ``out[c, k, i, j] = w[k, c, kh-1-i, kw-1-j]`` (stored group after group)."""
    cdef Py_ssize_t gi, k, c, i, j
    cdef Py_ssize_t khw = g.kh * g.kw, ckk = g.Cg * khw
    cdef const floating* src
    cdef floating* dst
    for gi in range(g.G):
        for k in range(g.Kg):
            for c in range(g.Cg):
                src = w + ((gi * g.Kg + k) * g.Cg + c) * khw
                dst = out + gi * g.Kg * ckk + (c * g.Kg + k) * khw
                for i in range(g.kh):
                    for j in range(g.kw):
                        dst[(g.kh - 1 - i) * g.kw + (g.kw - 1 - j)] = src[i * g.kw + j]


cdef int conv2d_backward_input_impl(const floating* go, const floating* w, const floating* bias,
                                    const Geom* g, floating* dx, int algo,
                                    int n_threads) noexcept nogil:
    """``dx`` = the gradient of conv2d w.r.t. its input, plus ``bias[c]`` on input channel
    ``c`` unless ``bias`` is NULL -- with the bias, this is conv_transpose2d's forward pass
    (the adjoint of conv2d)."""
    cdef Py_ssize_t ckk = g.Cg * g.kh * g.kw
    cdef Py_ssize_t HW = g.H * g.W, L = g.Ho * g.Wo
    cdef bint pointwise = is_pointwise(g)
    cdef bint direct = algo == ALGO_DIRECT and g.sh == 1 and g.sw == 1
    cdef Blocks bl = make_blocks(g, False)
    # GEMM: one task per (sample, group); its row blocks run in order because col2im of
    # neighbouring rows overlaps.  direct (stride 1): one task per (sample, group);
    # dx is the correlation of the zero-padded dy with the transposed, 180-degree rotated
    # kernel -- the same loop as the forward pass, with no zero-dilated dy.
    cdef Py_ssize_t R = (g.H - 1) + (g.kh - 1) * g.dh + 1
    cdef Py_ssize_t Q = direct_width(g.W, 1, g.kw, g.dw)
    cdef Py_ssize_t n_tasks = g.N * g.G
    cdef Py_ssize_t ws_col = 0, ws_tmp = 0
    cdef Py_ssize_t t, n0, gi, rb, oh0, oh1, ncols
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* wflip = NULL
    cdef const floating* wg
    cdef const floating* bmat
    if algo == ALGO_DEPTHWISE and depthwise_applicable(g):
        return dw_backward_input(go, w, bias, g, dx, n_threads)
    if floating is float and algo == ALGO_BLOCKED and g.sh == 1 and g.sw == 1:
        return blk_backward_input(go, w, bias, g, dx, n_threads)
    if floating is float and algo == ALGO_BLOCKED and blk_strided_input_applies(g):
        return blk_backward_input_strided(go, w, bias, g, dx, n_threads)
    if floating is float and algo == ALGO_ROWS and g.sh == 1 and g.sw == 1:
        return rows_backward_input(go, w, bias, g, dx, n_threads)
    if ((algo == ALGO_WINOGRAD or algo == ALGO_WINOGRAD4) and wino_applicable(g)
            and g.ph <= 2 and g.pw <= 2):
        status = wino_backward_input(go, w, bias, g, dx, 4 if algo == ALGO_WINOGRAD4 else 2,
                                     n_threads)
        if status != WINO_NONFINITE:
            return status
        status = CNN_OK     # an Inf/NaN input: the GEMM path below
    if direct:
        ws_col = g.Kg * R * Q
        wflip = <floating*> malloc(g.K * ckk * sizeof(floating))
        if wflip == NULL:
            return CNN_ERR_NOMEM
        flip_transpose_weight(w, g, wflip)
    else:
        gemm_scratch(g, &bl, &ws_col, &ws_tmp)
    # never wake more threads than there are tasks (tiny problems stay on one thread)
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        col = <floating*> malloc(ws_col * sizeof(floating)) if ws_col else NULL
        ok = scratch_ok(col, ws_col, status_p)
        for t in prange(n_tasks, schedule="dynamic"):
            if not ok:
                continue
            gi = t % g.G
            n0 = t // g.G
            if direct:
                pad_planes(go + (n0 * g.K + gi * g.Kg) * L, g.Kg, g.Ho, g.Wo,
                           g.ph - (g.kh - 1) * g.dh, g.pw - (g.kw - 1) * g.dw, R, Q, col)
                direct_corr(col, g.Kg, R, Q, wflip + gi * g.Kg * ckk, g.Cg, g.kh, g.kw,
                            1, 1, g.dh, g.dw, bias + gi * g.Cg if bias != NULL else NULL,
                            dx + (n0 * g.C + gi * g.Cg) * HW, g.H, g.W)
                continue
            wg = w + gi * g.Kg * ckk
            if pointwise:
                # dx rows (Cg x ncols, row stride HW) = W_g^T @ dy rows, in place
                for rb in range(bl.n_rblocks):
                    oh0 = rb * bl.rows
                    oh1 = py_min(g.Ho, oh0 + bl.rows)
                    if bias != NULL:
                        fill_bias(dx + (n0 * g.C + gi * g.Cg) * HW + oh0 * g.Wo, HW, g.Cg,
                                  (oh1 - oh0) * g.Wo, bias + gi * g.Cg)
                    gemm(True, False, <int> g.Cg, <int> ((oh1 - oh0) * g.Wo), <int> g.Kg,
                         <floating> 1.0, wg, <int> ckk,
                         go + (n0 * g.K + gi * g.Kg) * L + oh0 * g.Wo, <int> L,
                         <floating> (1.0 if bias != NULL else 0.0),
                         dx + (n0 * g.C + gi * g.Cg) * HW + oh0 * g.Wo, <int> HW)
                continue
            if bias != NULL:
                fill_bias(dx + (n0 * g.C + gi * g.Cg) * HW, HW, g.Cg, HW, bias + gi * g.Cg)
            else:
                memset(dx + (n0 * g.C + gi * g.Cg) * HW, 0, g.Cg * HW * sizeof(floating))
            for rb in range(bl.n_rblocks):
                oh0 = rb * bl.rows
                oh1 = py_min(g.Ho, oh0 + bl.rows)
                ncols = (oh1 - oh0) * g.Wo
                # cols (ckk x ncols) = W_g^T (ckk x Kg) @ dy columns (Kg x ncols)
                gemm(True, False, <int> ckk, <int> ncols, <int> g.Kg, <floating> 1.0, wg,
                     <int> ckk, go + (n0 * g.K + gi * g.Kg) * L + oh0 * g.Wo, <int> L,
                     <floating> 0.0, col, <int> ncols)
                col2im_rows_scratch(col, ncols, g, g.Cg, oh0, oh1,
                                    dx + (n0 * g.C + gi * g.Cg) * HW)
        free(col)
    free(wflip)
    return status


# ------------------------------------------------------------------------------------------
# Gradient w.r.t. the weight
# ------------------------------------------------------------------------------------------

cdef inline Py_ssize_t batch_parts(Py_ssize_t N) noexcept nogil:
    """Fixed number of batch parts of the weight and bias gradients (depends on the batch
    size only, never on the threads); part ``p`` holds samples ``[p*N//P, (p+1)*N//P)``."""
    return py_max(1, py_min(N, MAX_WGRAD_PARTS))


cdef inline floating part_bias_sum(const floating* go, Py_ssize_t n_lo, Py_ssize_t n_hi,
                                   Py_ssize_t K, Py_ssize_t k, Py_ssize_t L) noexcept nogil:
    """Sum of ``dy[n, k]`` over the samples ``[n_lo, n_hi)`` of one batch part: per plane
    :func:`fixed_sum`, planes in order.  The bias gradient adds these part sums in part order --
    in :func:`conv2d_backward_bias_impl` and, fused, in the weight-gradient kernel, which
    therefore agree bit for bit."""
    cdef floating total = 0
    cdef Py_ssize_t n
    for n in range(n_lo, n_hi):
        total = total + fixed_sum(go + (n * K + k) * L, L)
    return total


cdef inline void add_part_bias(const floating* go, const Geom* g, Py_ssize_t gi,
                               Py_ssize_t n0, Py_ssize_t ns, floating* bpart) noexcept nogil:
    """The fused bias gradient of a weight-gradient task: add samples ``[n0, n0+ns)`` of
    group ``gi``'s channels to its batch part's sums ``bpart`` (the order of
    :func:`part_bias_sum`)."""
    cdef Py_ssize_t k, n, L = g.Ho * g.Wo
    for k in range(gi * g.Kg, (gi + 1) * g.Kg):
        for n in range(n0, n0 + ns):
            bpart[k] = bpart[k] + fixed_sum(go + (n * g.K + k) * L, L)


cdef void sum_parts(const floating* parts, Py_ssize_t n_parts, Py_ssize_t size,
                    floating* out, int n_threads) noexcept nogil:
    """``out`` = the batch parts' sums (``n_parts`` arrays of ``size``, one after another)
    added in part order.  Element by element, so the bits do not depend on the threads
    (one below 4096 elements per thread)."""
    cdef Py_ssize_t e, q
    cdef floating s
    cdef int nt = <int> py_min(n_threads, py_max(1, size // 4096))
    if nt <= 1:
        for e in range(size):
            s = parts[e]
            for q in range(1, n_parts):
                s = s + parts[q * size + e]
            out[e] = s
        return
    for e in prange(size, schedule="static", num_threads=nt):
        s = parts[e]
        for q in range(1, n_parts):
            s = s + parts[q * size + e]
        out[e] = s


cdef int alloc_parts(Py_ssize_t n_parts, Py_ssize_t wsize, Py_ssize_t K, bint bias,
                     floating** partials, floating** bpart, bint zeroed=False) noexcept nogil:
    """Allocate a weight-gradient task's per-part sums: ``n_parts`` weight arrays of
    ``wsize`` (zeroed with ``zeroed``: for kernels that add into them) and, with ``bias``,
    ``n_parts`` zeroed bias arrays of ``K`` (else NULL)."""
    if zeroed:
        partials[0] = <floating*> calloc(n_parts * wsize, sizeof(floating))
    else:
        partials[0] = <floating*> malloc(n_parts * wsize * sizeof(floating))
    bpart[0] = <floating*> calloc(n_parts * K, sizeof(floating)) if bias else NULL
    if partials[0] == NULL or (bias and bpart[0] == NULL):
        free(partials[0])
        free(bpart[0])
        partials[0] = NULL
        bpart[0] = NULL
        return CNN_ERR_NOMEM
    return CNN_OK


cdef int conv2d_backward_weight_impl(const floating* go, const floating* x, const Geom* g,
                                     floating* dw, floating* db, int algo,
                                     int n_threads) noexcept nogil:
    """Weight gradient; with ``db != NULL`` also the bias gradient, summed per batch part
    while that part's ``dy`` is in cache (see :func:`part_bias_sum`)."""
    cdef Py_ssize_t ckk = g.Cg * g.kh * g.kw
    cdef Py_ssize_t HW = g.H * g.W, L = g.Ho * g.Wo
    cdef Py_ssize_t wsize = g.K * ckk
    cdef bint pointwise = is_pointwise(g)
    cdef Blocks bl = make_blocks(g, True)
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.G
    cdef Py_ssize_t ws_col, ws_tmp
    cdef Py_ssize_t t, p, gi, n0, ns, n_lo, n_hi, rb, oh0, oh1, ncols, e, q, k
    cdef floating* bpart = NULL
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    cdef floating* tmp = NULL
    cdef floating* partials = NULL
    cdef floating* acc
    cdef const floating* amat
    cdef const floating* bmat
    cdef floating beta
    cdef floating s
    if algo == ALGO_DEPTHWISE and depthwise_applicable(g):
        return dw_backward_weight(go, x, g, dw, db, n_threads)
    if floating is float and algo == ALGO_BLOCKED:
        return blk_backward_weight(go, x, g, dw, db, n_threads)
    if floating is float and algo == ALGO_ROWS and g.sh == 1 and g.sw == 1:
        return rows_backward_weight(go, x, g, dw, db, n_threads)
    if (algo == ALGO_WINOGRAD or algo == ALGO_WINOGRAD4) and wino_applicable(g):
        if algo == ALGO_WINOGRAD4:
            status = wino4_backward_weight(go, x, g, dw, db, n_threads)
        else:
            status = wino_backward_weight(go, x, g, dw, db, 2, n_threads)
        if status != WINO_NONFINITE:
            return status
        status = CNN_OK     # an Inf/NaN input: the GEMM path below
    gemm_scratch(g, &bl, &ws_col, &ws_tmp)
    if n_parts > 1:
        partials = <floating*> malloc(n_parts * wsize * sizeof(floating))
        if partials == NULL:
            return CNN_ERR_NOMEM
    if db != NULL:
        bpart = <floating*> calloc(n_parts * g.K, sizeof(floating))
        if bpart == NULL:
            free(partials)
            return CNN_ERR_NOMEM
    # never wake more threads than there are tasks (tiny problems stay on one thread)
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        col = <floating*> malloc((ws_col + ws_tmp) * sizeof(floating)) if ws_col + ws_tmp else NULL
        ok = scratch_ok(col, ws_col + ws_tmp, status_p)
        tmp = col + ws_col if col != NULL else NULL
        for t in prange(n_tasks, schedule="dynamic"):
            if not ok:
                continue
            p = t // g.G
            gi = t % g.G
            acc = (partials + p * wsize if n_parts > 1 else dw) + gi * g.Kg * ckk
            n_lo = p * g.N // n_parts
            n_hi = (p + 1) * g.N // n_parts
            beta = 0
            n0 = n_lo
            while n0 < n_hi:
                ns = py_min(bl.spb, n_hi - n0)
                for rb in range(bl.n_rblocks):
                    oh0 = rb * bl.rows
                    oh1 = py_min(g.Ho, oh0 + bl.rows)
                    ncols = ns * (oh1 - oh0) * g.Wo
                    if ns == 1:
                        amat = go + (n0 * g.K + gi * g.Kg) * L + oh0 * g.Wo
                    else:
                        gather_grad_cols(go, g, gi, n0, ns, oh0, oh1, tmp, ncols)
                        amat = tmp
                    if pointwise and ns == 1:
                        bmat = x + (n0 * g.C + gi * g.Cg) * HW + oh0 * g.Wo
                    else:
                        gather_input_cols(x, g, gi, n0, ns, oh0, oh1, col, ncols)
                        bmat = col
                    # dW_g (Kg x ckk) += dy columns (Kg x ncols) @ cols^T (ncols x ckk)
                    gemm(False, True, <int> g.Kg, <int> ckk, <int> ncols, <floating> 1.0,
                         amat, <int> (L if ns == 1 else ncols), bmat,
                         <int> (L if (pointwise and ns == 1) else ncols), beta, acc, <int> ckk)
                    beta = 1
                if db != NULL:
                    add_part_bias(go, g, gi, n0, ns, bpart + p * g.K)
                n0 = n0 + ns
        free(col)
    if status == CNN_OK and n_parts > 1:
        sum_parts(partials, n_parts, wsize, dw, n_threads)
    if status == CNN_OK and db != NULL:
        sum_parts(bpart, n_parts, g.K, db, 1)
    free(partials)
    free(bpart)
    return status


cdef int conv2d_backward_input_weight_impl(const floating* go, const floating* x,
                                           const floating* w, const Geom* g, floating* dx,
                                           floating* dw, floating* db, int algo_input,
                                           int algo_weight, int n_threads) noexcept nogil:
    """Both gradients of conv2d (and, with ``db``, the bias's): where both passes run the
    channel-blocked kernels at unit stride, in one pass over ``dy``
    (:func:`blk_backward_weight` with ``dx``); else the two kernels one after the other.
    Bit-identical to :func:`conv2d_backward_input_impl` and
    :func:`conv2d_backward_weight_impl` either way."""
    cdef int status
    if (floating is float and algo_input == ALGO_BLOCKED and algo_weight == ALGO_BLOCKED
            and g.sh == 1 and g.sw == 1):
        return blk_backward_weight(go, x, g, dw, db, n_threads, w, dx)
    status = conv2d_backward_input_impl(go, w, <const floating*> NULL, g, dx, algo_input,
                                        n_threads)
    if status != CNN_OK:
        return status
    return conv2d_backward_weight_impl(go, x, g, dw, db, algo_weight, n_threads)


cdef int conv2d_backward_bias_impl(const floating* go, Py_ssize_t N, Py_ssize_t K,
                                   Py_ssize_t L, floating* db, int n_threads) noexcept nogil:
    """db[k] = sum over n, h, w of dy[n, k, h, w]: the batch parts' sums
    (:func:`part_bias_sum`) added in part order."""
    cdef Py_ssize_t k, p, P = batch_parts(N)
    cdef floating total
    for k in prange(K, schedule="static", num_threads=<int> py_min(n_threads, K)):
        total = part_bias_sum(go, 0, N // P, K, k, L)
        for p in range(1, P):
            total = total + part_bias_sum(go, p * N // P, (p + 1) * N // P, K, k, L)
        db[k] = total
    return CNN_OK


# ------------------------------------------------------------------------------------------
# Depthwise: one input channel per group (groups == C_in, any channel multiplier Kg >= 1)
# ------------------------------------------------------------------------------------------
#
# Each input plane meets only its own Kg filters, so im2col + GEMM would run one tiny GEMM
# (Kg x kh*kw @ kh*kw x columns) per group.  These kernels loop over the planes instead.
#
# Rows of a zero-padded plane are copied into per-thread scratch in *phase-split* form:
# padded column ``P = q*sw + p`` goes to entry ``p*Qs + q`` of the scratch row.  Tap ``j`` of
# output column ``ow`` reads padded column ``ow*sw + j*dw``, which is entry
# ``ow + (j*dw) // sw`` of phase ``(j*dw) % sw``: for every stride, a run of outputs of a row
# reads one contiguous run per tap, so the loops over a block of ``DW_BLOCK`` outputs
# vectorize.  A plane is processed in bands of rows whose scratch stays near ``DW_BUDGET``
# elements; the tap offsets come from a table (:func:`dw_taps`), so no inner loop divides.
#
# * forward: per (sample, plane, band of output rows); blocks of 4 rows x ``DW_BLOCK``
#   outputs (4 independent multiply-add chains) accumulated in registers over the kh*kw taps
#   (:func:`dw_block4`), for each of the Kg filters;
# * input gradient: per (sample, plane, band of input rows), the transposed correlation in
#   the same form: the input columns of phase ``p`` of the rows of row phase ``o`` collect
#   the taps ``(i, j)`` with ``(j*dw) % sw == p`` and ``(i*dh) % sh`` matching, from the
#   zero-padded rows of the Kg output-gradient planes -- again 4 rows (``sh`` apart) x
#   ``DW_BLOCK`` at a time;
# * weight gradient: per (batch part, plane); for groups of 4 taps and blocks of
#   ``DW_BLOCK`` output columns, lane-wise sums of ``dy * x`` over the rows, in registers
#   (:func:`dw_wgrad_lanes`); then each tap's lanes are added by :func:`fixed_sum`, and the
#   batch parts (``batch_parts``) in order.
# Every output is written by one task, and every sum runs in an order fixed by the shapes.

cdef enum:
    DW_BLOCK = 16           # outputs of a row accumulated in registers
    DW_ROWS = 4             # rows (or taps) handled together: independent chains
    DW_BUDGET = 16384       # target elements of a thread's band scratch
    DW_PREFETCH = 16384     # bytes of the next task's planes prefetched (dw_prefetch)


cdef extern from *:
    """
    #if defined(__GNUC__)
    #define CNN_PREFETCH(p) __builtin_prefetch((p), 0, 2)
    #else
    #define CNN_PREFETCH(p) ((void) (p))
    #endif
    """
    void CNN_PREFETCH(const void* p) noexcept nogil


cdef inline void dw_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil:
    """Ask for the cache lines of ``[p, p + nbytes)`` (at most ``DW_PREFETCH`` bytes): a
    depthwise task reads a few KiB of one plane with short strided loads, bound by the
    latency of memory rather than its bandwidth, so the gradient kernels prefetch the planes
    of the task (or sample) after the current one: 5-9 % off their time on MobileNet shapes
    (the forward pass, whose row copy streams the plane, gains nothing and lost 10 % at
    stride 2)."""
    cdef const char* c = <const char*> p
    cdef Py_ssize_t o
    for o in range(0, py_min(nbytes, DW_PREFETCH), 64):
        CNN_PREFETCH(c + o)


cdef inline bint depthwise_applicable(const Geom* g) noexcept nogil:
    return g.Cg == 1


cdef inline Py_ssize_t round_block(Py_ssize_t n) noexcept nogil:
    return (n + DW_BLOCK - 1) // DW_BLOCK * DW_BLOCK


ctypedef struct DwPlan:
    Py_ssize_t Wr           # output columns rounded up to whole blocks
    Py_ssize_t Qs           # scratch entries per phase of an input row
    Py_ssize_t RS           # scratch row length (sw * Qs)
    Py_ssize_t band         # output rows per band
    Py_ssize_t n_bands
    Py_ssize_t rows         # scratch rows of a band


cdef inline DwPlan dw_plan(const Geom* g) noexcept nogil:
    """Scratch layout and bands of the forward and weight-gradient kernels (shapes only)."""
    cdef DwPlan pl
    cdef Py_ssize_t span = (g.kh - 1) * g.dh + 1
    pl.Wr = round_block(g.Wo)
    pl.Qs = pl.Wr + (g.kw - 1) * g.dw // g.sw
    pl.RS = g.sw * pl.Qs
    pl.band = py_max(1, py_min(g.Ho, (DW_BUDGET // pl.RS - span) // g.sh + 1))
    pl.n_bands = (g.Ho + pl.band - 1) // pl.band
    pl.rows = (pl.band - 1) * g.sh + span
    return pl


cdef Py_ssize_t* dw_taps(const Geom* g, Py_ssize_t Qs, Py_ssize_t RS) noexcept nogil:
    """A table of the taps (malloc'd; NULL if out of memory): ``[0, khw)``: tap ``(i, j)``'s
    offset in a band of phase-split rows (row length ``RS``, phase length ``Qs``); then
    ``kh`` row phases ``(i*dh) % sh``, ``kh`` row shifts ``(i*dh) // sh``, ``kw`` column
    phases ``(j*dw) % sw`` and ``kw`` column shifts ``(j*dw) // sw``."""
    cdef Py_ssize_t i, j, khw = g.kh * g.kw
    cdef Py_ssize_t* t = <Py_ssize_t*> malloc((khw + 2 * g.kh + 2 * g.kw) * sizeof(Py_ssize_t))
    if t == NULL:
        return NULL
    for i in range(g.kh):
        t[khw + i] = i * g.dh % g.sh
        t[khw + g.kh + i] = i * g.dh // g.sh
        for j in range(g.kw):
            t[i * g.kw + j] = i * g.dh * RS + (j * g.dw) % g.sw * Qs + (j * g.dw) // g.sw
    for j in range(g.kw):
        t[khw + 2 * g.kh + j] = j * g.dw % g.sw
        t[khw + 2 * g.kh + g.kw + j] = j * g.dw // g.sw
    return t


cdef void dw_fill_rows(const floating* xc, const Geom* g, const DwPlan* pl, Py_ssize_t R0,
                       Py_ssize_t n_rows, floating* xs) noexcept nogil:
    """``xs[(R - R0)*RS + p*Qs + q]`` = padded input ``x_pad[R, q*sw + p]`` of the plane
    ``xc`` for the padded rows ``[R0, R0 + n_rows)`` (zero outside the image)."""
    cdef Py_ssize_t rr, r, p, q, lo, hi, lo1, hi1, a, b
    cdef Py_ssize_t W = g.W, sw = g.sw, Qs = pl.Qs
    cdef const floating* src
    cdef floating* dst
    cdef floating* d1
    for rr in range(n_rows):
        r = R0 + rr - g.ph
        if r < 0 or r >= g.H:
            memset(xs + rr * pl.RS, 0, pl.RS * sizeof(floating))
            continue
        src = xc + r * W - g.pw
        if sw == 2:
            # both phases in one vectorizable pass (even / odd padded columns)
            dst = xs + rr * pl.RS
            d1 = dst + Qs
            memset(dst, 0, pl.RS * sizeof(floating))
            valid_range(-g.pw, 2, W, Qs, &lo, &hi)
            valid_range(1 - g.pw, 2, W, Qs, &lo1, &hi1)
            a = py_max(lo, lo1)
            b = py_max(a, py_min(hi, hi1))
            for q in range(a, b):
                dst[q] = src[2 * q]
                d1[q] = src[2 * q + 1]
            for q in range(lo, a):
                dst[q] = src[2 * q]
            for q in range(b, hi):
                dst[q] = src[2 * q]
            for q in range(lo1, a):
                d1[q] = src[2 * q + 1]
            for q in range(b, hi1):
                d1[q] = src[2 * q + 1]
            continue
        for p in range(sw):
            dst = xs + rr * pl.RS + p * Qs
            valid_range(p - g.pw, sw, W, Qs, &lo, &hi)
            if lo > 0:
                memset(dst, 0, lo * sizeof(floating))
            if sw == 1:
                memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
            else:
                for q in range(lo, hi):
                    dst[q] = src[q * sw + p]
            if hi < Qs:
                memset(dst + hi, 0, (Qs - hi) * sizeof(floating))


cdef inline void dw_block(const floating* src, const Py_ssize_t* offs, const floating* wts,
                          Py_ssize_t n_taps, floating b, floating* dst) noexcept nogil:
    """``dst[t] = b + sum_k wts[k] * src[offs[k] + t]`` for ``t < DW_BLOCK``, accumulated in
    registers (constant indices only) over the taps ``k`` in order."""
    cdef floating acc[DW_BLOCK]
    cdef Py_ssize_t k, t
    cdef floating wv
    cdef const floating* s
    for t in range(DW_BLOCK):
        acc[t] = b
    for k in range(n_taps):
        wv = wts[k]
        s = src + offs[k]
        for t in range(DW_BLOCK):
            acc[t] = acc[t] + wv * s[t]
    for t in range(DW_BLOCK):
        dst[t] = acc[t]


cdef inline void dw_block4(const floating* src, Py_ssize_t src_rs, const Py_ssize_t* offs,
                           const floating* wts, Py_ssize_t n_taps, floating b, floating* dst,
                           Py_ssize_t dst_rs) noexcept nogil:
    """:func:`dw_block` for 4 rows at once (row ``r`` reads ``src + r*src_rs`` and writes
    ``dst + r*dst_rs``): each weight feeds 4 independent multiply-add chains, which hides the
    latency that a single block is bound by.  (Four named accumulators, as in
    :func:`corr_row_block4`: the form the compiler keeps in vector registers.)"""
    cdef floating acc0[DW_BLOCK]
    cdef floating acc1[DW_BLOCK]
    cdef floating acc2[DW_BLOCK]
    cdef floating acc3[DW_BLOCK]
    cdef Py_ssize_t k, t
    cdef floating wv
    cdef const floating* s0
    cdef const floating* s1
    cdef const floating* s2
    cdef const floating* s3
    for t in range(DW_BLOCK):
        acc0[t] = b
        acc1[t] = b
        acc2[t] = b
        acc3[t] = b
    for k in range(n_taps):
        wv = wts[k]
        s0 = src + offs[k]
        s1 = s0 + src_rs
        s2 = s1 + src_rs
        s3 = s2 + src_rs
        for t in range(DW_BLOCK):
            acc0[t] = acc0[t] + wv * s0[t]
            acc1[t] = acc1[t] + wv * s1[t]
            acc2[t] = acc2[t] + wv * s2[t]
            acc3[t] = acc3[t] + wv * s3[t]
    for t in range(DW_BLOCK):
        dst[t] = acc0[t]
        dst[dst_rs + t] = acc1[t]
        dst[2 * dst_rs + t] = acc2[t]
        dst[3 * dst_rs + t] = acc3[t]


cdef void dw_rows(const floating* src, Py_ssize_t src_rs, const Py_ssize_t* offs,
                  const floating* wts, Py_ssize_t n_taps, floating b, floating* dst,
                  Py_ssize_t dst_rs, Py_ssize_t n_rows, Py_ssize_t n, Py_ssize_t stride,
                  floating* tail) noexcept nogil:
    """``dst[r*dst_rs + t*stride] = b + sum_k wts[k] * src[r*src_rs + offs[k] + t]`` for
    ``r < n_rows``, ``t < n`` (``src`` readable to whole blocks): 4 rows at a time, then
    single rows.  Whole blocks of unit stride go straight to ``dst``; the others through
    ``tail`` (``DW_ROWS * DW_BLOCK`` entries of heap scratch -- a local array would be split
    into scalars by the compiler)."""
    cdef Py_ssize_t r = 0, r1, t0, t, nr, q, m
    while r < n_rows:
        nr = DW_ROWS if r + DW_ROWS <= n_rows else 1
        t0 = 0
        while t0 < n:
            m = py_min(DW_BLOCK, n - t0)
            if stride == 1 and m == DW_BLOCK:
                if nr == DW_ROWS:
                    dw_block4(src + r * src_rs + t0, src_rs, offs, wts, n_taps, b,
                              dst + r * dst_rs + t0, dst_rs)
                else:
                    dw_block(src + r * src_rs + t0, offs, wts, n_taps, b, dst + r * dst_rs + t0)
            else:
                if nr == DW_ROWS:
                    dw_block4(src + r * src_rs + t0, src_rs, offs, wts, n_taps, b, tail,
                              DW_BLOCK)
                else:
                    dw_block(src + r * src_rs + t0, offs, wts, n_taps, b, tail)
                for q in range(nr):
                    r1 = r + q
                    if stride == 1:
                        memcpy(dst + r1 * dst_rs + t0, tail + q * DW_BLOCK, m * sizeof(floating))
                    else:
                        for t in range(m):
                            dst[r1 * dst_rs + (t0 + t) * stride] = tail[q * DW_BLOCK + t]
            t0 = t0 + DW_BLOCK
        r = r + nr


cdef void dw_rows2(const floating* src, Py_ssize_t src_rs, const Py_ssize_t* offs0,
                   const floating* wts0, Py_ssize_t nt0, const Py_ssize_t* offs1,
                   const floating* wts1, Py_ssize_t nt1, floating b, floating* dst,
                   Py_ssize_t dst_rs, Py_ssize_t n_rows, Py_ssize_t q_start, Py_ssize_t q_end,
                   Py_ssize_t pw, Py_ssize_t W, floating* tail) noexcept nogil:
    """Input-gradient rows of column stride 2: for each block of ``DW_BLOCK`` positions ``q``
    (from ``q_start`` to ``q_end``) both column phases (taps ``offs0``/``wts0`` and
    ``offs1``/``wts1``, as in :func:`dw_rows`) are computed into ``tail``, then interleaved
    (a vectorizable store) into columns ``2*q + p - pw`` of the ``dst`` rows, clipped to
    ``[0, W)``.  ``tail``: ``(2 * DW_ROWS + 2) * DW_BLOCK`` entries of scratch."""
    cdef Py_ssize_t r = 0, nr, k, t, q0, c0, lo, hi
    cdef floating* a0
    cdef floating* a1
    cdef floating* d
    cdef floating* buf = tail + 2 * DW_ROWS * DW_BLOCK
    while r < n_rows:
        nr = DW_ROWS if r + DW_ROWS <= n_rows else 1
        q0 = q_start
        while q0 < q_end:
            if nr == DW_ROWS:
                dw_block4(src + r * src_rs + q0, src_rs, offs0, wts0, nt0, b, tail, DW_BLOCK)
                dw_block4(src + r * src_rs + q0, src_rs, offs1, wts1, nt1, b,
                          tail + DW_ROWS * DW_BLOCK, DW_BLOCK)
            else:
                dw_block(src + r * src_rs + q0, offs0, wts0, nt0, b, tail)
                dw_block(src + r * src_rs + q0, offs1, wts1, nt1, b, tail + DW_ROWS * DW_BLOCK)
            c0 = 2 * q0 - pw        # the block's first column
            for k in range(nr):
                a0 = tail + k * DW_BLOCK
                a1 = a0 + DW_ROWS * DW_BLOCK
                d = dst + (r + k) * dst_rs
                if c0 >= 0 and c0 + 2 * DW_BLOCK <= W:
                    d = d + c0
                else:
                    d = buf
                for t in range(DW_BLOCK):
                    d[2 * t] = a0[t]
                    d[2 * t + 1] = a1[t]
                if d == buf:
                    lo = py_max(0, c0)
                    hi = py_min(W, c0 + 2 * DW_BLOCK)
                    if hi > lo:
                        memcpy(dst + (r + k) * dst_rs + lo, buf + lo - c0,
                               (hi - lo) * sizeof(floating))
            q0 = q0 + DW_BLOCK
        r = r + nr


cdef int dw_forward(const floating* x, const floating* w, const floating* bias, const Geom* g,
                    floating* y, int n_threads) noexcept nogil:
    """Depthwise forward: one task per (sample, plane, band of output rows)."""
    cdef DwPlan pl = dw_plan(g)
    cdef Py_ssize_t n_tasks = g.N * g.C * pl.n_bands
    cdef Py_ssize_t ws = pl.rows * pl.RS, ws_t = DW_ROWS * DW_BLOCK
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.Wo
    cdef Py_ssize_t t, n, c, bi, oh0, oh1, k
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* xs = NULL
    cdef Py_ssize_t* taps = NULL
    if dw_flat(g):
        return dw_flat_forward(x, w, bias, g, y, n_threads)
    taps = dw_taps(g, pl.Qs, pl.RS)
    if taps == NULL:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        xs = <floating*> malloc((ws + ws_t) * sizeof(floating))
        ok = scratch_ok(xs, ws + ws_t, status_p)
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            bi = t % pl.n_bands
            c = (t // pl.n_bands) % g.C
            n = t // (pl.n_bands * g.C)
            oh0 = bi * pl.band
            oh1 = py_min(g.Ho, oh0 + pl.band)
            dw_fill_rows(x + (n * g.C + c) * g.H * g.W, g, &pl, oh0 * g.sh,
                         (oh1 - oh0 - 1) * g.sh + (g.kh - 1) * g.dh + 1, xs)
            for k in range(c * g.Kg, (c + 1) * g.Kg):
                dw_rows(xs, g.sh * pl.RS, taps, w + k * khw, khw,
                        bias[k] if bias != NULL else 0, y + (n * g.K + k) * L + oh0 * g.Wo,
                        g.Wo, oh1 - oh0, g.Wo, 1, xs + ws)
        free(xs)
    free(taps)
    return status


ctypedef struct DwGradPlan:
    Py_ssize_t A            # largest tap shift (j*dw) // sw: left margin of a padded dy row
    Py_ssize_t Qd           # padded dy row length
    Py_ssize_t band         # input rows per band
    Py_ssize_t n_bands
    Py_ssize_t rows         # dy rows (some all zero) a band reads


cdef inline DwGradPlan dw_grad_plan(const Geom* g) noexcept nogil:
    """Scratch layout and bands of the input-gradient kernel (shapes only): a band of ``b``
    input rows reads at most ``((b - 1) + (kh - 1)*dh) // sh + 2`` rows of each dy plane."""
    cdef DwGradPlan pl
    cdef Py_ssize_t cap
    pl.A = (g.kw - 1) * g.dw // g.sw
    pl.Qd = pl.A + (g.W - 1 + g.pw) // g.sw + DW_BLOCK
    cap = py_max(2, DW_BUDGET // (g.Kg * pl.Qd))
    pl.band = py_max(1, py_min(g.H, (cap - 1) * g.sh - (g.kh - 1) * g.dh))
    pl.n_bands = (g.H + pl.band - 1) // pl.band
    pl.rows = (pl.band - 1 + (g.kh - 1) * g.dh) // g.sh + 2
    return pl


cdef void dw_grad_band(const floating* gc, const floating* w, floating b, const Geom* g,
                       const DwGradPlan* pl, const Py_ssize_t* taps, Py_ssize_t r0,
                       Py_ssize_t r1, floating* dys, Py_ssize_t* offs, floating* wts,
                       floating* tail, floating* dxc) noexcept nogil:
    """Rows ``[r0, r1)`` of one input-gradient plane ``dxc`` (+ ``b``) from its Kg dy planes
    ``gc`` (consecutive) and filters ``w``.  Scratch: ``dys`` (``Kg * rows * Qd``), ``offs``
    / ``wts`` (``2 * Kg * kh * kw``: the taps of one row phase and column phase, of two
    column phases for stride 2), ``tail`` (``(2 * DW_ROWS + 2) * DW_BLOCK``)."""
    cdef Py_ssize_t oh_lo, oh_hi, m, oh, ncp, o, rf, R, Rq, rp, p, qlo, qhi, qlo1, qhi1, i, j
    cdef Py_ssize_t nt, e
    cdef Py_ssize_t nts[2]
    cdef Py_ssize_t khw = g.kh * g.kw, sw = g.sw, Qd = pl.Qd, A = pl.A
    cdef const Py_ssize_t* rph = taps + khw
    cdef const Py_ssize_t* rsh = taps + khw + g.kh
    cdef const Py_ssize_t* cph = taps + khw + 2 * g.kh
    cdef const Py_ssize_t* csh = taps + khw + 2 * g.kh + g.kw
    cdef floating* drow
    # the dy rows [oh_lo, oh_hi) that rows [r0, r1) can read, zero outside [0, Ho) and padded:
    # dys[(m*rows + oh - oh_lo)*Qd + A + ow] = dy[m, oh, ow]
    oh_lo = floor_div(r0 + g.ph - (g.kh - 1) * g.dh, g.sh)
    oh_hi = floor_div(r1 - 1 + g.ph, g.sh) + 1
    ncp = py_min(g.Wo, Qd - A)
    for m in range(g.Kg):
        for oh in range(oh_lo, oh_hi):
            drow = dys + (m * pl.rows + oh - oh_lo) * Qd
            if oh < 0 or oh >= g.Ho:
                memset(drow, 0, Qd * sizeof(floating))
                continue
            memset(drow, 0, A * sizeof(floating))
            memcpy(drow + A, gc + (m * g.Ho + oh) * g.Wo, ncp * sizeof(floating))
            memset(drow + A + ncp, 0, (Qd - A - ncp) * sizeof(floating))
    # input row r (padded row R = r + ph = Rq*sh + rp) is reached by the taps i with
    # (i*dh) % sh == rp, from dy row Rq - (i*dh) // sh; rows sh apart share the taps
    for o in range(py_min(g.sh, r1 - r0)):
        rf = r0 + o
        R = rf + g.ph
        Rq = floor_div(R, g.sh)
        rp = R - Rq * g.sh
        for p in range(sw):
            # the taps of this row phase and column phase: dy column q - (j*dw) // sw feeds
            # input column q*sw + p - pw (stride 2: both phases' lists, then interleaved)
            e = p * khw * g.Kg if sw == 2 else 0
            nt = 0
            for m in range(g.Kg):
                for i in range(g.kh):
                    if rph[i] != rp:
                        continue
                    for j in range(g.kw):
                        if cph[j] == p:
                            offs[e + nt] = (m * pl.rows + Rq - rsh[i] - oh_lo) * Qd + A - csh[j]
                            wts[e + nt] = w[m * khw + i * g.kw + j]
                            nt = nt + 1
            nts[p % 2] = nt
            if sw != 2:
                valid_range(p - g.pw, sw, g.W, Qd, &qlo, &qhi)
                dw_rows(dys + qlo, Qd, offs, wts, nt, b, dxc + rf * g.W + qlo * sw + p - g.pw,
                        g.sh * g.W, (r1 - 1 - rf) // g.sh + 1, qhi - qlo, sw, tail)
        if sw == 2:
            valid_range(-g.pw, 2, g.W, Qd, &qlo, &qhi)
            valid_range(1 - g.pw, 2, g.W, Qd, &qlo1, &qhi1)
            dw_rows2(dys, Qd, offs, wts, nts[0], offs + khw * g.Kg, wts + khw * g.Kg, nts[1],
                     b, dxc + rf * g.W, g.sh * g.W, (r1 - 1 - rf) // g.sh + 1,
                     py_min(qlo, qlo1), py_max(qhi, qhi1), g.pw, g.W, tail)


cdef int dw_backward_input(const floating* go, const floating* w, const floating* bias,
                           const Geom* g, floating* dx, int n_threads) noexcept nogil:
    """Depthwise input gradient (plus ``bias`` per input channel: conv_transpose2d's
    forward): one task per (sample, plane, band of input rows)."""
    cdef DwGradPlan pl = dw_grad_plan(g)
    cdef Py_ssize_t n_tasks = g.N * g.C * pl.n_bands
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.Wo
    cdef Py_ssize_t ws_d = g.Kg * pl.rows * pl.Qd, ws_t = 2 * g.Kg * khw
    cdef Py_ssize_t ws = ws_d + ws_t + (2 * DW_ROWS + 2) * DW_BLOCK
    cdef Py_ssize_t t, n, c, bi, r0
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* dys = NULL
    cdef Py_ssize_t* offs = NULL
    cdef Py_ssize_t* taps = NULL
    if dw_flat(g):
        return dw_flat_backward_input(go, w, bias, g, dx, n_threads)
    taps = dw_taps(g, 0, 0)
    if taps == NULL:
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        dys = <floating*> malloc(ws * sizeof(floating))
        offs = <Py_ssize_t*> malloc(ws_t * sizeof(Py_ssize_t))
        ok = scratch_ok(dys, ws, status_p) and scratch_ok(offs, ws_t, status_p)
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            bi = t % pl.n_bands
            c = (t // pl.n_bands) % g.C
            n = t // (pl.n_bands * g.C)
            r0 = bi * pl.band
            if t + 1 < n_tasks:     # the next task's dy planes (from its first rows)
                dw_prefetch(go + ((t + 1) // pl.n_bands) * g.Kg * L
                            + py_max(0, (((t + 1) % pl.n_bands) * pl.band + g.ph
                                         - (g.kh - 1) * g.dh) // g.sh) * g.Wo,
                            g.Kg * py_min(L, pl.rows * g.Wo) * sizeof(floating))
            dw_grad_band(go + (n * g.K + c * g.Kg) * L, w + c * g.Kg * khw,
                         bias[c] if bias != NULL else 0, g, &pl, taps, r0,
                         py_min(g.H, r0 + pl.band), dys, offs, dys + ws_d,
                         dys + ws_d + ws_t, dx + (n * g.C + c) * g.H * g.W)
        free(dys)
        free(offs)
    free(taps)
    return status


cdef inline void dw_wgrad_lanes(const floating* gy, Py_ssize_t gy_rs, const floating* xsrc,
                                Py_ssize_t x_rs, const Py_ssize_t* offs, Py_ssize_t n_rows,
                                floating* lanes, Py_ssize_t lanes_rs) noexcept nogil:
    """``lanes[q*lanes_rs + t] += sum_r gy[r*gy_rs + t] * xsrc[r*x_rs + offs[q] + t]`` for 4
    taps ``q`` and ``t < DW_BLOCK``: the rows in order, in registers (named accumulators)."""
    cdef floating acc0[DW_BLOCK]
    cdef floating acc1[DW_BLOCK]
    cdef floating acc2[DW_BLOCK]
    cdef floating acc3[DW_BLOCK]
    cdef Py_ssize_t r, t
    cdef floating v
    cdef const floating* d
    cdef const floating* s0
    cdef const floating* s1
    cdef const floating* s2
    cdef const floating* s3
    for t in range(DW_BLOCK):
        acc0[t] = lanes[t]
        acc1[t] = lanes[lanes_rs + t]
        acc2[t] = lanes[2 * lanes_rs + t]
        acc3[t] = lanes[3 * lanes_rs + t]
    for r in range(n_rows):
        d = gy + r * gy_rs
        s0 = xsrc + r * x_rs + offs[0]
        s1 = xsrc + r * x_rs + offs[1]
        s2 = xsrc + r * x_rs + offs[2]
        s3 = xsrc + r * x_rs + offs[3]
        for t in range(DW_BLOCK):
            v = d[t]
            acc0[t] = acc0[t] + v * s0[t]
            acc1[t] = acc1[t] + v * s1[t]
            acc2[t] = acc2[t] + v * s2[t]
            acc3[t] = acc3[t] + v * s3[t]
    for t in range(DW_BLOCK):
        lanes[t] = acc0[t]
        lanes[lanes_rs + t] = acc1[t]
        lanes[2 * lanes_rs + t] = acc2[t]
        lanes[3 * lanes_rs + t] = acc3[t]


cdef inline void dw_wgrad_lane(const floating* gy, Py_ssize_t gy_rs, const floating* xsrc,
                               Py_ssize_t x_rs, Py_ssize_t off, Py_ssize_t n_rows,
                               floating* lanes) noexcept nogil:
    """:func:`dw_wgrad_lanes` for a single tap."""
    cdef floating acc[DW_BLOCK]
    cdef Py_ssize_t r, t
    cdef const floating* d
    cdef const floating* s
    for t in range(DW_BLOCK):
        acc[t] = lanes[t]
    for r in range(n_rows):
        d = gy + r * gy_rs
        s = xsrc + r * x_rs + off
        for t in range(DW_BLOCK):
            acc[t] = acc[t] + d[t] * s[t]
    for t in range(DW_BLOCK):
        lanes[t] = acc[t]


# ------------------------------------------------------------------------------------------
# Depthwise, stride 1 with W_out == W ("same" columns): flat kernels
# ------------------------------------------------------------------------------------------
#
# With unit stride and output rows as wide as the input rows, output ``(oh, ow)`` of tap
# ``(i, j)`` reads input flat index ``(oh*W + ow) + ro*W + co`` (``ro = i*dh - ph``, ``co =
# j*dw - pw``): one shift of the whole flattened plane.  Only the ``|co|`` columns a row's
# read runs past its edge land on the neighbouring row; in a copy of the rows with those
# columns zeroed (one copy per column offset, zero rows above and below) every tap is that
# single shift, and a band of output rows is one long run of outputs -- whole blocks of
# ``DW_BLOCK`` with no padding columns, no partial block per row and no strided store, which
# is what small planes (28x28, 14x14: rows shorter than two blocks) lose their time to in the
# row kernels.  The input gradient is the same correlation on the dy planes (``ro = ph -
# i*dh``, ``co = pw - j*dw``); the weight gradient sums ``dy * shifted copy`` in lanes.

cdef inline void dw_wgrad_taps(const floating* gy, Py_ssize_t gy_rs, const floating* xsrc,
                               Py_ssize_t x_rs, const Py_ssize_t* offs, Py_ssize_t khw,
                               Py_ssize_t n_rows, floating* lanes,
                               Py_ssize_t lanes_rs) noexcept nogil:
    """All ``khw`` taps of one block of lanes (tap ``q``'s at ``lanes + q*lanes_rs``):
    :data:`DW_ROWS` at a time by :func:`dw_wgrad_lanes`, the rest by :func:`dw_wgrad_lane`."""
    cdef Py_ssize_t tap = 0
    while tap < khw:
        if tap + DW_ROWS <= khw:
            dw_wgrad_lanes(gy, gy_rs, xsrc, x_rs, offs + tap, n_rows, lanes + tap * lanes_rs,
                           lanes_rs)
            tap = tap + DW_ROWS
        else:
            dw_wgrad_lane(gy, gy_rs, xsrc, x_rs, offs[tap], n_rows, lanes + tap * lanes_rs)
            tap = tap + 1


cdef inline bint dw_flat(const Geom* g) noexcept nogil:
    """Stride 1 and ``W_out == W`` (so ``|column offset| <= pw``), ``pw < W``, and rows
    shorter than two blocks.  (On wider rows, 56x56, the row kernels' single padded copy
    of the plane costs less than ``kw`` masked copies: measured 25 % faster there.)"""
    return (g.sh == 1 and g.sw == 1 and g.Wo == g.W and g.pw < g.W
            and g.W < 2 * DW_BLOCK)


ctypedef struct DwFlatPlan:
    Py_ssize_t band         # output rows per band
    Py_ssize_t n_bands
    Py_ssize_t nrows        # rows of a copy: band + (kh - 1)*dh + 2
    Py_ssize_t CS           # elements of a copy: nrows*W + DW_BLOCK (guard)


cdef inline DwFlatPlan dw_flat_plan(const Geom* g, Py_ssize_t n_out_rows,
                                    Py_ssize_t n_copies) noexcept nogil:
    """Bands of ``n_out_rows`` output rows whose ``n_copies`` row copies stay near
    ``DW_BUDGET`` elements (shapes only)."""
    cdef DwFlatPlan pl
    cdef Py_ssize_t span = (g.kh - 1) * g.dh + 2
    pl.band = py_max(1, py_min(n_out_rows, DW_BUDGET // py_max(1, n_copies * g.W) - span))
    pl.n_bands = (n_out_rows + pl.band - 1) // pl.band
    pl.nrows = pl.band + span
    pl.CS = pl.nrows * g.W + DW_BLOCK
    return pl


cdef void dw_flat_fill(const floating* src, Py_ssize_t src_rows, Py_ssize_t W, Py_ssize_t R0,
                       Py_ssize_t nrows, Py_ssize_t co, floating* dst) noexcept nogil:
    """``dst[rr*W + q]`` = ``src[(R0 + rr)*W + q]`` for ``rr < nrows``, zero for rows outside
    ``[0, src_rows)`` and for the columns ``q`` a read shifted by ``co`` reaches from the
    neighbouring row (``q < co`` or ``q >= W + co``); then ``DW_BLOCK`` zeros."""
    cdef Py_ssize_t ra = py_min(py_max(R0, 0), R0 + nrows)
    cdef Py_ssize_t rb = py_max(py_min(R0 + nrows, src_rows), ra)
    cdef Py_ssize_t r, q, lo = py_max(0, co), hi = py_min(W, W + co)
    cdef floating* d
    memset(dst, 0, (ra - R0) * W * sizeof(floating))
    if rb > ra:
        memcpy(dst + (ra - R0) * W, src + ra * W, (rb - ra) * W * sizeof(floating))
        d = dst + (ra - R0) * W
        for q in range(lo):         # one column at a time: |co| columns
            for r in range(rb - ra):
                d[r * W + q] = 0
        for q in range(hi, W):
            for r in range(rb - ra):
                d[r * W + q] = 0
    memset(dst + (rb - R0) * W, 0, ((R0 + nrows - rb) * W + DW_BLOCK) * sizeof(floating))


cdef extern from *:
    """
    /* 8 accumulators of DW_BLOCK floats fit the 32 registers of AVX-512 (not the 16 of
       AVX2, where they would spill). */
    #if defined(__AVX512F__)
    #define CNN_DW_WIDE 1
    #else
    #define CNN_DW_WIDE 0
    #endif
    """
    const bint CNN_DW_WIDE


cdef inline void dw_block8(const floating* src, const Py_ssize_t* offs, const floating* wts,
                           Py_ssize_t n_taps, floating b, floating* dst) noexcept nogil:
    """:func:`dw_block` for ``8 * DW_BLOCK`` consecutive outputs: 8 independent chains
    (named accumulators, as in :func:`dw_block4`)."""
    cdef floating a0[DW_BLOCK]
    cdef floating a1[DW_BLOCK]
    cdef floating a2[DW_BLOCK]
    cdef floating a3[DW_BLOCK]
    cdef floating a4[DW_BLOCK]
    cdef floating a5[DW_BLOCK]
    cdef floating a6[DW_BLOCK]
    cdef floating a7[DW_BLOCK]
    cdef Py_ssize_t k, t
    cdef floating wv
    cdef const floating* s
    for t in range(DW_BLOCK):
        a0[t] = b
        a1[t] = b
        a2[t] = b
        a3[t] = b
        a4[t] = b
        a5[t] = b
        a6[t] = b
        a7[t] = b
    for k in range(n_taps):
        wv = wts[k]
        s = src + offs[k]
        for t in range(DW_BLOCK):
            a0[t] = a0[t] + wv * s[t]
            a1[t] = a1[t] + wv * s[DW_BLOCK + t]
            a2[t] = a2[t] + wv * s[2 * DW_BLOCK + t]
            a3[t] = a3[t] + wv * s[3 * DW_BLOCK + t]
            a4[t] = a4[t] + wv * s[4 * DW_BLOCK + t]
            a5[t] = a5[t] + wv * s[5 * DW_BLOCK + t]
            a6[t] = a6[t] + wv * s[6 * DW_BLOCK + t]
            a7[t] = a7[t] + wv * s[7 * DW_BLOCK + t]
    for t in range(DW_BLOCK):
        dst[t] = a0[t]
        dst[DW_BLOCK + t] = a1[t]
        dst[2 * DW_BLOCK + t] = a2[t]
        dst[3 * DW_BLOCK + t] = a3[t]
        dst[4 * DW_BLOCK + t] = a4[t]
        dst[5 * DW_BLOCK + t] = a5[t]
        dst[6 * DW_BLOCK + t] = a6[t]
        dst[7 * DW_BLOCK + t] = a7[t]


cdef void dw_flat_run(const floating* src, const Py_ssize_t* offs, const floating* wts,
                      Py_ssize_t n_taps, floating b, floating* dst, Py_ssize_t n,
                      floating* tail) noexcept nogil:
    """``dst[t] = b + sum_k wts[k] * src[offs[k] + t]`` for ``t < n`` (``src`` readable to
    whole blocks): 8 blocks at a time with AVX-512 (32 vector registers), 4 otherwise
    (independent chains), then single blocks, the last partial block through ``tail``
    (``DW_BLOCK`` entries).  Each output adds its taps in the same order either way."""
    cdef Py_ssize_t t0 = 0
    if CNN_DW_WIDE:
        while t0 + 2 * DW_ROWS * DW_BLOCK <= n:
            dw_block8(src + t0, offs, wts, n_taps, b, dst + t0)
            t0 = t0 + 2 * DW_ROWS * DW_BLOCK
    while t0 + DW_ROWS * DW_BLOCK <= n:
        dw_block4(src + t0, DW_BLOCK, offs, wts, n_taps, b, dst + t0, DW_BLOCK)
        t0 = t0 + DW_ROWS * DW_BLOCK
    while t0 + DW_BLOCK <= n:
        dw_block(src + t0, offs, wts, n_taps, b, dst + t0)
        t0 = t0 + DW_BLOCK
    if t0 < n:
        dw_block(src + t0, offs, wts, n_taps, b, tail)
        memcpy(dst + t0, tail, (n - t0) * sizeof(floating))


cdef inline Py_ssize_t dw_chunk(Py_ssize_t n_tasks) noexcept nogil:
    """Tasks per dynamically scheduled chunk (shapes only; the schedule never changes a
    result: every output, and every partial sum, belongs to one task)."""
    return py_max(1, n_tasks // 256)


cdef int dw_flat_forward(const floating* x, const floating* w, const floating* bias,
                         const Geom* g, floating* y, int n_threads) noexcept nogil:
    """Depthwise forward, :func:`dw_flat` geometry: one task per (sample, plane, band)."""
    cdef DwFlatPlan pl = dw_flat_plan(g, g.Ho, g.kw)
    cdef Py_ssize_t n_tasks = g.N * g.C * pl.n_bands
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.W, W = g.W
    cdef Py_ssize_t ws = g.kw * pl.CS + DW_BLOCK
    cdef Py_ssize_t t, n, c, bi, oh0, oh1, k, i, j
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* xs = NULL
    cdef Py_ssize_t* offs = <Py_ssize_t*> malloc(khw * sizeof(Py_ssize_t))
    if offs == NULL:
        return CNN_ERR_NOMEM
    # tap (i, j) reads copy j at output index + (ro - ro_min + 1)*W + co, ro_min = -ph
    for i in range(g.kh):
        for j in range(g.kw):
            offs[i * g.kw + j] = j * pl.CS + (i * g.dh + 1) * W + j * g.dw - g.pw
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        xs = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(xs, ws, status_p)
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            bi = t % pl.n_bands
            c = (t // pl.n_bands) % g.C
            n = t // (pl.n_bands * g.C)
            oh0 = bi * pl.band
            oh1 = py_min(g.Ho, oh0 + pl.band)
            for j in range(g.kw):
                dw_flat_fill(x + (n * g.C + c) * g.H * W, g.H, W, oh0 - g.ph - 1,
                             oh1 - oh0 + (g.kh - 1) * g.dh + 2, j * g.dw - g.pw,
                             xs + j * pl.CS)
            for k in range(c * g.Kg, (c + 1) * g.Kg):
                dw_flat_run(xs, offs, w + k * khw, khw, bias[k] if bias != NULL else 0,
                            y + (n * g.K + k) * L + oh0 * W, (oh1 - oh0) * W, xs + g.kw * pl.CS)
        free(xs)
    free(offs)
    return status


cdef int dw_flat_backward_input(const floating* go, const floating* w, const floating* bias,
                                const Geom* g, floating* dx, int n_threads) noexcept nogil:
    """Depthwise input gradient (plus ``bias`` per input channel), :func:`dw_flat` geometry:
    the correlation of the Kg dy planes with the rotated filters (taps in ``(m, i, j)``
    order); one task per (sample, plane, band of input rows)."""
    cdef Py_ssize_t n_copies = g.Kg * g.kw
    cdef DwFlatPlan pl = dw_flat_plan(g, g.H, n_copies)
    cdef Py_ssize_t n_tasks = g.N * g.C * pl.n_bands
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.W, W = g.W, nt = g.Kg * khw
    cdef Py_ssize_t ws = n_copies * pl.CS + DW_BLOCK
    cdef Py_ssize_t t, n, c, bi, r0, r1, m, i, j, e
    cdef Py_ssize_t ro_min = g.ph - (g.kh - 1) * g.dh
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* dys = NULL
    cdef floating* wts = NULL
    cdef Py_ssize_t* offs = <Py_ssize_t*> malloc(nt * sizeof(Py_ssize_t))
    if offs == NULL:
        return CNN_ERR_NOMEM
    # tap (m, i, j) reads copy (m, j) of dy plane m at input index + (ro - ro_min + 1)*W + co
    for m in range(g.Kg):
        for i in range(g.kh):
            for j in range(g.kw):
                offs[(m * g.kh + i) * g.kw + j] = ((m * g.kw + j) * pl.CS
                                                   + ((g.kh - 1 - i) * g.dh + 1) * W
                                                   + g.pw - j * g.dw)
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        dys = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(dys, ws, status_p)
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            bi = t % pl.n_bands
            c = (t // pl.n_bands) % g.C
            n = t // (pl.n_bands * g.C)
            r0 = bi * pl.band
            r1 = py_min(g.H, r0 + pl.band)
            for e in range(n_copies):
                m = e // g.kw
                j = e % g.kw
                dw_flat_fill(go + (n * g.K + c * g.Kg + m) * L, g.Ho, W, r0 + ro_min - 1,
                             r1 - r0 + (g.kh - 1) * g.dh + 2, g.pw - j * g.dw, dys + e * pl.CS)
            # the Kg filters of plane c are consecutive: taps in (m, i, j) order
            dw_flat_run(dys, offs, w + c * nt, nt, bias[c] if bias != NULL else 0,
                        dx + (n * g.C + c) * g.H * W + r0 * W, (r1 - r0) * W,
                        dys + n_copies * pl.CS)
        free(dys)
    free(offs)
    return status


cdef int dw_flat_backward_weight(const floating* go, const floating* x, const Geom* g,
                                 floating* dw, floating* db, int n_threads) noexcept nogil:
    """Depthwise weight (and, with ``db``, bias) gradient, :func:`dw_flat` geometry: one
    task per (batch part, plane); per tap, ``DW_BLOCK`` lanes of ``dy * shifted x`` over the
    flattened bands (4 taps at a time, :func:`dw_wgrad_lanes`; a band's last partial block
    lane by lane), added by :func:`fixed_sum`, the parts' sums in part order."""
    cdef DwFlatPlan pl = dw_flat_plan(g, g.Ho, g.kw)
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.C
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.W, W = g.W, wsize = g.K * khw
    cdef Py_ssize_t ws_x = g.kw * pl.CS, ws_l = g.Kg * khw * DW_BLOCK
    cdef Py_ssize_t ws = ws_x + ws_l
    cdef Py_ssize_t t, p, c, n, bi, oh0, oh1, m, tap, e, k, part, i, j, nb, nfull, tb, tl
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* xs = NULL
    cdef floating* lanes = NULL
    cdef floating* ln
    cdef const floating* gy
    cdef floating* partials = NULL
    cdef floating* bpart = NULL
    cdef floating s
    cdef Py_ssize_t* offs = <Py_ssize_t*> malloc(khw * sizeof(Py_ssize_t))
    if offs == NULL:
        return CNN_ERR_NOMEM
    for i in range(g.kh):
        for j in range(g.kw):
            offs[i * g.kw + j] = j * pl.CS + (i * g.dh + 1) * W + j * g.dw - g.pw
    if alloc_parts(n_parts, wsize, g.K, db != NULL, &partials, &bpart) != CNN_OK:
        free(offs)
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        xs = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(xs, ws, status_p)
        lanes = xs + ws_x if xs != NULL else NULL
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            p = t // g.C
            c = t % g.C
            memset(lanes, 0, ws_l * sizeof(floating))
            for n in range(p * g.N // n_parts, (p + 1) * g.N // n_parts):
                for bi in range(pl.n_bands):
                    oh0 = bi * pl.band
                    oh1 = py_min(g.Ho, oh0 + pl.band)
                    for j in range(g.kw):
                        dw_flat_fill(x + (n * g.C + c) * g.H * W, g.H, W, oh0 - g.ph - 1,
                                     oh1 - oh0 + (g.kh - 1) * g.dh + 2, j * g.dw - g.pw,
                                     xs + j * pl.CS)
                    nb = (oh1 - oh0) * W
                    nfull = nb // DW_BLOCK
                    tb = nfull * DW_BLOCK
                    for m in range(g.Kg):
                        gy = go + (n * g.K + c * g.Kg + m) * L + oh0 * W
                        ln = lanes + m * khw * DW_BLOCK
                        dw_wgrad_taps(gy, DW_BLOCK, xs, DW_BLOCK, offs, khw, nfull, ln, DW_BLOCK)
                        for tap in range(khw):
                            for tl in range(nb - tb):
                                ln[tap * DW_BLOCK + tl] = (ln[tap * DW_BLOCK + tl]
                                                           + gy[tb + tl] * xs[offs[tap] + tb + tl])
                if db != NULL:
                    add_part_bias(go, g, c, n, 1, bpart + p * g.K)
            for e in range(g.Kg * khw):
                partials[p * wsize + c * g.Kg * khw + e] = fixed_sum(lanes + e * DW_BLOCK,
                                                                     DW_BLOCK)
        free(xs)
    if status == CNN_OK:
        sum_parts(partials, n_parts, wsize, dw, n_threads)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(offs)
    free(partials)
    free(bpart)
    return status


cdef int dw_backward_weight(const floating* go, const floating* x, const Geom* g,
                            floating* dw, floating* db, int n_threads) noexcept nogil:
    """Depthwise weight (and, with ``db``, bias) gradient: one task per (batch part, plane),
    summing ``dy * x`` per tap in lanes (one per output column); each tap's first ``Wo``
    lanes are added by :func:`fixed_sum`, the parts' sums in part order."""
    cdef DwPlan pl = dw_plan(g)
    cdef Py_ssize_t n_parts = batch_parts(g.N)
    cdef Py_ssize_t n_tasks = n_parts * g.C
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.Wo, wsize = g.K * khw
    cdef Py_ssize_t ws_x = pl.rows * pl.RS, ws_g = pl.band * DW_BLOCK, ws_l = g.Kg * khw * pl.Wr
    cdef Py_ssize_t ws = ws_x + ws_g + ws_l
    cdef Py_ssize_t t, p, c, n, bi, oh0, oh1, oh, m, tap, e, k, part, cb, nc, tl
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* xs = NULL
    cdef floating* gs = NULL
    cdef floating* lanes = NULL
    cdef const floating* gy
    cdef const floating* gs_rows
    cdef Py_ssize_t gy_rs
    cdef floating* partials = NULL
    cdef floating* bpart = NULL
    cdef floating s
    cdef Py_ssize_t* taps = NULL
    if dw_flat(g):
        return dw_flat_backward_weight(go, x, g, dw, db, n_threads)
    taps = dw_taps(g, pl.Qs, pl.RS)
    if taps == NULL:
        return CNN_ERR_NOMEM
    if alloc_parts(n_parts, wsize, g.K, db != NULL, &partials, &bpart) != CNN_OK:
        free(taps)
        return CNN_ERR_NOMEM
    with parallel(num_threads=<int> py_min(n_threads, n_tasks)):
        xs = <floating*> malloc(ws * sizeof(floating))
        ok = scratch_ok(xs, ws, status_p)
        gs = xs + ws_x if xs != NULL else NULL
        lanes = gs + ws_g if xs != NULL else NULL
        for t in prange(n_tasks, schedule="dynamic", chunksize=dw_chunk(n_tasks)):
            if not ok:
                continue
            p = t // g.C
            c = t % g.C
            memset(lanes, 0, ws_l * sizeof(floating))
            for n in range(p * g.N // n_parts, (p + 1) * g.N // n_parts):
                if n + 1 < g.N:     # the next sample's planes
                    dw_prefetch(x + ((n + 1) * g.C + c) * g.H * g.W, g.H * g.W * sizeof(floating))
                    dw_prefetch(go + ((n + 1) * g.K + c * g.Kg) * L, g.Kg * L * sizeof(floating))
                for bi in range(pl.n_bands):
                    oh0 = bi * pl.band
                    oh1 = py_min(g.Ho, oh0 + pl.band)
                    dw_fill_rows(x + (n * g.C + c) * g.H * g.W, g, &pl, oh0 * g.sh,
                                 (oh1 - oh0 - 1) * g.sh + (g.kh - 1) * g.dh + 1, xs)
                    for m in range(g.Kg):
                        gy = go + (n * g.K + c * g.Kg + m) * L + oh0 * g.Wo
                        cb = 0
                        while cb < g.Wo:
                            nc = py_min(DW_BLOCK, g.Wo - cb)
                            if nc == DW_BLOCK:
                                gs_rows = gy + cb
                                gy_rs = g.Wo
                            else:   # the last, partial block: zero padded dy columns
                                for oh in range(oh1 - oh0):
                                    memcpy(gs + oh * DW_BLOCK, gy + oh * g.Wo + cb,
                                           nc * sizeof(floating))
                                    for tl in range(nc, DW_BLOCK):
                                        gs[oh * DW_BLOCK + tl] = 0
                                gs_rows = gs
                                gy_rs = DW_BLOCK
                            dw_wgrad_taps(gs_rows, gy_rs, xs + cb, g.sh * pl.RS, taps, khw,
                                          oh1 - oh0, lanes + m * khw * pl.Wr + cb, pl.Wr)
                            cb = cb + DW_BLOCK
                if db != NULL:
                    add_part_bias(go, g, c, n, 1, bpart + p * g.K)
            for e in range(g.Kg * khw):
                partials[p * wsize + c * g.Kg * khw + e] = fixed_sum(lanes + e * pl.Wr, g.Wo)
        free(xs)
    if status == CNN_OK:
        sum_parts(partials, n_parts, wsize, dw, n_threads)
        if db != NULL:
            sum_parts(bpart, n_parts, g.K, db, 1)
    free(taps)
    free(partials)
    free(bpart)
    return status


# ------------------------------------------------------------------------------------------
# Public im2col / col2im (torch.nn.functional.unfold / fold)
# ------------------------------------------------------------------------------------------

cdef void im2col_impl(const floating* x, const Geom* g, floating* cols,
                      int n_threads) noexcept nogil:
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.Wo, HW = g.H * g.W
    cdef Py_ssize_t t, n, c
    for t in prange(g.N * g.C, schedule="static",
                   num_threads=<int> py_min(n_threads, g.N * g.C)):
        n = t // g.C
        c = t % g.C
        im2col_rows(x + t * HW, g, 1, 0, g.Ho, cols + (n * g.C * khw + c * khw) * L, L)


cdef void col2im_impl(const floating* cols, const Geom* g, floating* x,
                      int n_threads) noexcept nogil:
    cdef Py_ssize_t khw = g.kh * g.kw, L = g.Ho * g.Wo, HW = g.H * g.W
    cdef Py_ssize_t t, n, c
    for t in prange(g.N * g.C, schedule="static",
                   num_threads=<int> py_min(n_threads, g.N * g.C)):
        n = t // g.C
        c = t % g.C
        memset(x + t * HW, 0, HW * sizeof(floating))
        col2im_rows(cols + (n * g.C * khw + c * khw) * L, L, g, 1, 0, g.Ho, x + t * HW)


# ------------------------------------------------------------------------------------------
# Thin def wrappers (shapes are validated by cnncore.functional before they get here)
# ------------------------------------------------------------------------------------------

cdef str _f32_only(str func, str arg):
    """The TypeError message of a float32-only entry point given float64 arrays."""
    return (f"{func}(): the blocked and rows kernels take float32 arrays only (float64 "
            f"convolutions run GEMM, direct or Winograd). Received: {arg}.dtype=float64")


def set_col_budget(Py_ssize_t elements):
    """Set the per-thread im2col workspace target (elements); returns the previous value.
    Only the block sizes change, so results may differ in the last bits: tuning/tests only."""
    global COL_BUDGET
    old = COL_BUDGET
    COL_BUDGET = max(1, elements)
    return old



def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] y_out,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int algorithm,
                   int n_threads):
    """Write ``conv2d(x, weight, bias)`` into ``y_out``; ``bias`` may be None."""
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], weight.shape[0],
                            weight.shape[2], weight.shape[3], groups, sh, sw, ph, pw, dh, dw,
                            y_out.shape[2], y_out.shape[3])
    cdef const floating* bptr = &bias[0] if bias is not None else NULL
    cdef int status
    if y_out.shape[0] == 0 or y_out.shape[1] == 0:
        return
    with nogil:
        status = conv2d_forward_impl(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], bptr, &g,
                                     &y_out[0, 0, 0, 0], algorithm, n_threads)
    check_status(status, "conv2d")


def conv2d_relu_maxpool2x2_forward(const floating[:, :, :, ::1] x,
                                   const floating[:, :, :, ::1] weight,
                                   const floating[::1] bias, floating[:, :, :, ::1] y_out,
                                   int64_t[:, :, :, ::1] indices_out, Py_ssize_t ph,
                                   Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo, int n_threads):
    """Write ``max_pool2d(relu(conv2d(x, weight, bias, padding=(ph, pw))), 2)`` into
    ``y_out`` and its argmax (flat indices in the ``Ho x Wo`` conv planes) into
    ``indices_out``, in one pass (unit stride and dilation, one group; the conv output
    ``Ho x Wo`` is not written anywhere); bit-identical to the row-vectorized conv2d
    followed by the ReLU-fused max pooling.  ``bias`` may be None."""
    if floating is double:
        raise TypeError(_f32_only("conv2d_relu_maxpool2x2_forward", "x"))
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], weight.shape[0],
                            weight.shape[2], weight.shape[3], 1, 1, 1, ph, pw, 1, 1, Ho, Wo)
    cdef const floating* bptr = &bias[0] if bias is not None else NULL
    cdef int status
    if y_out.shape[0] == 0 or y_out.shape[1] == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return
    with nogil:
        status = conv_relu_pool_impl(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], bptr, &g,
                                     &y_out[0, 0, 0, 0], &indices_out[0, 0, 0, 0], n_threads)
    check_status(status, "conv2d")


def conv2d_relu_maxpool2x2_forward_winograd4(const float[:, :, :, ::1] x,
                                             const float[:, :, :, ::1] weight,
                                             const float[::1] bias, float[:, :, :, ::1] y_out,
                                             int64_t[:, :, :, ::1] indices_out, Py_ssize_t ph,
                                             Py_ssize_t pw, Py_ssize_t Ho, Py_ssize_t Wo,
                                             int n_threads):
    """:func:`conv2d_relu_maxpool2x2_forward` for a 3x3 convolution (unit stride and
    dilation, one group, float32) by Winograd F(4x4, 3x3), the ReLU and pooling applied to
    each task's output rows while they are in cache: bit-identical to ``conv2d`` on the
    ``winograd4`` algorithm followed by the ReLU-fused max pooling.  Returns False (the
    outputs then incomplete) where an input value or a weight is Inf/NaN -- conv2d then runs
    another algorithm, so the caller runs the separate calls."""
    cdef const float* bptr = &bias[0] if bias is not None else NULL
    cdef int status
    if weight.shape[2] != 3 or weight.shape[3] != 3 or weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv2d(): weight must have shape (C_out, {x.shape[1]}, 3, 3). Received: "
            f"weight of shape {tuple(weight.shape)[:4]}"
        )
    if (y_out.shape[0] != x.shape[0] or y_out.shape[1] != weight.shape[0]
            or y_out.shape[2] != Ho // 2 or y_out.shape[3] != Wo // 2
            or tuple(indices_out.shape)[:4] != tuple(y_out.shape)[:4]
            or Ho != x.shape[2] + 2 * ph - 2 or Wo != x.shape[3] + 2 * pw - 2
            or (bias is not None and bias.shape[0] != weight.shape[0])):
        raise ValueError(
            f"conv2d(): y_out and indices_out must have shape (N, C_out, Ho // 2, Wo // 2) "
            f"for Ho x Wo = {Ho} x {Wo}. Received: y_out of shape {tuple(y_out.shape)[:4]}"
        )
    if y_out.shape[0] == 0 or y_out.shape[1] == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return True
    with nogil:
        status = wino4_conv(&x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.shape[3], ph,
                            pw, &weight[0, 0, 0, 0], 1, x.shape[1], weight.shape[0], bptr, NULL,
                            Ho, Wo, n_threads, &y_out[0, 0, 0, 0], &indices_out[0, 0, 0, 0])
    if status == WINO_NONFINITE:
        return False
    check_status(status, "conv2d")
    return True


def conv2d_relu_maxpool2x2_backward_weight(const floating[:, :, :, ::1] grad_output,
                                           const int64_t[:, :, :, ::1] indices,
                                           const floating[:, :, :, ::1] relu_output,
                                           const floating[:, :, :, ::1] x,
                                           floating[:, :, :, ::1] dw_out, floating[::1] db_out,
                                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Ho,
                                           Py_ssize_t Wo, int n_threads):
    """The weight gradient (and, unless ``db_out`` is None, the bias gradient) of
    :func:`conv2d_relu_maxpool2x2_forward` from the gradient w.r.t. its pooled output
    (``grad_output``, ``indices`` and ``relu_output`` of the forward's shape): bit-identical
    to ``max_pool2d_backward`` with the ReLU fused followed by the row-vectorized
    ``conv2d_backward_weight``, without the full-size gradient array.  ValueError naming
    ``indices`` on an argmax outside its plane."""
    if floating is double:
        raise TypeError(_f32_only("conv2d_relu_maxpool2x2_backward_weight", "x"))
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dw_out.shape[0],
                            dw_out.shape[2], dw_out.shape[3], 1, 1, 1, ph, pw, 1, 1, Ho, Wo)
    cdef floating* dbp = &db_out[0] if db_out is not None else NULL
    cdef int status
    with nogil:
        status = conv_relu_pool_backward_impl(&grad_output[0, 0, 0, 0], &indices[0, 0, 0, 0],
                                              &relu_output[0, 0, 0, 0], &x[0, 0, 0, 0], &g,
                                              &dw_out[0, 0, 0, 0], dbp, n_threads)
    check_status(status, "max_pool2d_backward")


def conv2d_backward_input(const floating[:, :, :, ::1] grad_output,
                          const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] dx_out,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int algorithm,
                          int n_threads):
    """Write the gradient of conv2d w.r.t. its input into ``dx_out``."""
    cdef Geom g = make_geom(dx_out.shape[0], dx_out.shape[1], dx_out.shape[2], dx_out.shape[3],
                            weight.shape[0], weight.shape[2], weight.shape[3], groups, sh, sw,
                            ph, pw, dh, dw, grad_output.shape[2], grad_output.shape[3])
    cdef int status
    if dx_out.shape[0] == 0 or dx_out.shape[1] == 0:
        return
    with nogil:
        status = conv2d_backward_input_impl(&grad_output[0, 0, 0, 0], &weight[0, 0, 0, 0],
                                            <const floating*> NULL, &g, &dx_out[0, 0, 0, 0],
                                            algorithm, n_threads)
    check_status(status, "conv2d_backward_input")


def conv_transpose2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                             const floating[::1] bias, floating[:, :, :, ::1] y_out,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                             Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int algorithm,
                             int n_threads):
    """Write ``conv_transpose2d(x, weight, bias)`` into ``y_out``: the input gradient of the
    conv2d that maps ``y_out``'s shape to ``x``'s with ``weight`` (C_in, C_out/groups, kH, kW),
    plus ``bias`` (None: no bias).  The geometry arguments are that conv2d's."""
    cdef Geom g = make_geom(y_out.shape[0], y_out.shape[1], y_out.shape[2], y_out.shape[3],
                            weight.shape[0], weight.shape[2], weight.shape[3], groups, sh, sw,
                            ph, pw, dh, dw, x.shape[2], x.shape[3])
    cdef const floating* bptr = &bias[0] if bias is not None else NULL
    cdef int status
    if y_out.shape[0] == 0 or y_out.shape[1] == 0:
        return
    with nogil:
        status = conv2d_backward_input_impl(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], bptr, &g,
                                            &y_out[0, 0, 0, 0], algorithm, n_threads)
    check_status(status, "conv_transpose2d")


def conv2d_backward_weight(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] x, floating[:, :, :, ::1] dw_out,
                           floating[::1] db_out,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int algorithm,
                           int n_threads):
    """Write the gradient of conv2d w.r.t. its weight into ``dw_out`` and, unless ``db_out``
    is None, the one w.r.t. its bias into ``db_out`` (bit-identical to
    :func:`conv2d_backward_bias`)."""
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dw_out.shape[0],
                            dw_out.shape[2], dw_out.shape[3], groups, sh, sw, ph, pw, dh, dw,
                            grad_output.shape[2], grad_output.shape[3])
    cdef int status
    cdef floating* dbp = NULL
    if dw_out.shape[0] == 0 or dw_out.shape[1] == 0 or x.shape[0] == 0:
        if db_out is not None:
            conv2d_backward_bias(grad_output, db_out, n_threads)
        if dw_out.shape[0] == 0 or dw_out.shape[1] == 0:
            return
        with nogil:
            memset(&dw_out[0, 0, 0, 0], 0,
                   dw_out.shape[0] * dw_out.shape[1] * dw_out.shape[2] * dw_out.shape[3]
                   * sizeof(floating))
        return
    if db_out is not None:
        dbp = &db_out[0]
    with nogil:
        status = conv2d_backward_weight_impl(&grad_output[0, 0, 0, 0], &x[0, 0, 0, 0], &g,
                                             &dw_out[0, 0, 0, 0], dbp, algorithm, n_threads)
    check_status(status, "conv2d_backward_weight")


def conv2d_backward_input_weight(const floating[:, :, :, ::1] grad_output,
                                 const floating[:, :, :, ::1] x,
                                 const floating[:, :, :, ::1] weight,
                                 floating[:, :, :, ::1] dx_out, floating[:, :, :, ::1] dw_out,
                                 floating[::1] db_out,
                                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                                 Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                                 int algorithm_input, int algorithm_weight, int n_threads):
    """Write the gradients of conv2d w.r.t. its input and its weight into ``dx_out`` and
    ``dw_out`` and, unless ``db_out`` is None, the one w.r.t. its bias into ``db_out`` --
    bit-identical to :func:`conv2d_backward_input` and :func:`conv2d_backward_weight`
    with the same algorithms (the channel-blocked kernels, both at unit stride, run in one
    pass over ``grad_output``).  Every array must be non-empty."""
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], dw_out.shape[0],
                            dw_out.shape[2], dw_out.shape[3], groups, sh, sw, ph, pw, dh, dw,
                            grad_output.shape[2], grad_output.shape[3])
    cdef int status
    cdef floating* dbp = NULL
    if (x.shape[0] == 0 or x.shape[1] == 0 or dw_out.shape[0] == 0
            or grad_output.shape[2] == 0 or grad_output.shape[3] == 0):
        raise ValueError("conv2d_backward_input_weight(): every array must be non-empty. "
                         f"Received: x of shape {tuple(x.shape)}, dw_out of shape "
                         f"{tuple(dw_out.shape)}, grad_output of shape "
                         f"{tuple(grad_output.shape)}")
    if dx_out.shape[0] != x.shape[0] or dx_out.shape[1] != x.shape[1] or \
            dx_out.shape[2] != x.shape[2] or dx_out.shape[3] != x.shape[3]:
        raise ValueError("conv2d_backward_input_weight(): dx_out must have x's shape. "
                         f"Received: dx_out of shape {tuple(dx_out.shape)}, x of shape "
                         f"{tuple(x.shape)}")
    if db_out is not None:
        dbp = &db_out[0]
    with nogil:
        status = conv2d_backward_input_weight_impl(
            &grad_output[0, 0, 0, 0], &x[0, 0, 0, 0], &weight[0, 0, 0, 0], &g,
            &dx_out[0, 0, 0, 0], &dw_out[0, 0, 0, 0], dbp, algorithm_input, algorithm_weight,
            n_threads)
    check_status(status, "conv2d_backward")


def conv2d_backward_bias(const floating[:, :, :, ::1] grad_output, floating[::1] db_out,
                         int n_threads):
    """Write ``grad_output.sum(axis=(0, 2, 3))`` into ``db_out`` (fixed summation order)."""
    cdef Py_ssize_t N = grad_output.shape[0], K = grad_output.shape[1]
    cdef Py_ssize_t L = grad_output.shape[2] * grad_output.shape[3]
    if K == 0:
        return
    if N == 0 or L == 0:
        with nogil:
            memset(&db_out[0], 0, K * sizeof(floating))
        return
    with nogil:
        conv2d_backward_bias_impl(&grad_output[0, 0, 0, 0], N, K, L, &db_out[0], n_threads)


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols_out,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
           Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo,
           int n_threads):
    """Write the ``(N, C*kh*kw, Ho*Wo)`` unfolded patches of ``x`` into ``cols_out``."""
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], 0, kh, kw, 1,
                            sh, sw, ph, pw, dh, dw, Ho, Wo)
    if cols_out.shape[0] == 0 or cols_out.shape[1] == 0 or cols_out.shape[2] == 0:
        return
    with nogil:
        im2col_impl(&x[0, 0, 0, 0], &g, &cols_out[0, 0, 0], n_threads)


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x_out,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
           Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo,
           int n_threads):
    """Sum the ``(N, C*kh*kw, Ho*Wo)`` patches ``cols`` back into the image ``x_out``."""
    cdef Geom g = make_geom(x_out.shape[0], x_out.shape[1], x_out.shape[2], x_out.shape[3], 0,
                            kh, kw, 1, sh, sw, ph, pw, dh, dw, Ho, Wo)
    if x_out.shape[0] == 0 or x_out.shape[1] == 0:
        return
    with nogil:
        col2im_impl(&cols[0, 0, 0], &g, &x_out[0, 0, 0, 0], n_threads)


# ------------------------------------------------------------------------------------------
# The channel-blocked forward on weights packed once (inference plans)
# ------------------------------------------------------------------------------------------
#
# conv2d_forward with ALGO_BLOCKED packs the weights on every call (at batch 1 that is up to
# a third of the call for 64 -> 64 3x3 filters: 17 us of packing, 3 us to compare the
# filters with a copy).  An eval-mode plan keeps them packed (blocked_refresh_packed: blk_pack,
# the same layout) with a copy of the values packed, packs again when the weights differ
# from that copy (an optimizer step, a write into the array), and runs
# blocked_forward_packed -- blk_forward_packed, which blk_forward calls after packing, so
# the same bits -- optionally with the ReLU that follows the convolution applied to each
# task's rows while they are in cache (the activation kernel's rule: 0 if v < 0 else v).


def blocked_packed_size(Py_ssize_t C, Py_ssize_t K, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t groups, Py_ssize_t Ho, Py_ssize_t Wo, bint f64):
    """Elements of :func:`blocked_pack_weights`' output for a conv2d of ``C`` input and
    ``K`` output channels, a ``kh x kw`` kernel and ``Ho x Wo`` outputs (float32; ``f64``:
    TypeError, the blocked kernels are float32 only)."""
    if groups <= 0 or C % groups or K % groups or min(C, K, kh, kw, Ho, Wo) <= 0:
        raise ValueError(
            f"blocked_packed_size(): needs positive sizes and groups dividing C and K. "
            f"Received: C={C}, K={K}, kh={kh}, kw={kw}, groups={groups}, Ho={Ho}, Wo={Wo}")
    if f64:
        raise TypeError(_f32_only("blocked_packed_size", "weight"))
    cdef Geom g = make_geom(1, C, 1, 1, K, kh, kw, groups, sh, sw, 0, 0, dh, dw, Ho, Wo)
    cdef float f = 0
    cdef BlkPlan pl = blk_plan_of(&f, &g)
    return groups * pl.per_group


def blocked_pack_weights(const floating[:, :, :, ::1] weight, const floating[::1] bias,
                         floating[::1] packed_out, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, Py_ssize_t Ho,
                         Py_ssize_t Wo):
    """Write the channel-blocked forward's packed ``weight`` (K, C/groups, kh, kw) and
    ``bias`` (None: zeros) into ``packed_out`` (:func:`blocked_packed_size` elements), for
    :func:`blocked_forward_packed` of that geometry."""
    if floating is double:
        raise TypeError(_f32_only("blocked_pack_weights", "weight"))
    cdef Py_ssize_t K = weight.shape[0]
    if groups <= 0 or K % groups or K == 0 or weight.shape[1] == 0:
        raise ValueError(f"blocked_pack_weights(): bad weight shape {tuple(weight.shape)[:4]} "
                         f"for groups={groups}")
    if bias is not None and bias.shape[0] != K:
        raise ValueError(f"blocked_pack_weights(): bias has {bias.shape[0]} elements, the "
                         f"weight {K} filters")
    cdef Geom g = make_geom(1, weight.shape[1] * groups, 1, 1, K, weight.shape[2],
                            weight.shape[3], groups, sh, sw, 0, 0, dh, dw, Ho, Wo)
    cdef BlkPlan pl = blk_plan_of(&weight[0, 0, 0, 0], &g)
    if packed_out.shape[0] != groups * pl.per_group:
        raise ValueError(f"blocked_pack_weights(): packed_out has {packed_out.shape[0]} "
                         f"elements, expected {groups * pl.per_group}")
    cdef const floating* bptr = &bias[0] if bias is not None else NULL
    cdef floating* packed
    with nogil:
        packed = blk_pack(&weight[0, 0, 0, 0], bptr, groups, g.Kg, g.Cg * g.kh * g.kw, &pl)
        if packed != NULL:
            memcpy(&packed_out[0], packed, groups * pl.per_group * sizeof(floating))
            free(packed)
    if packed == NULL:
        check_status(CNN_ERR_NOMEM, "blocked_pack_weights")


def blocked_refresh_packed(const floating[:, :, :, ::1] weight, const floating[::1] bias,
                           floating[::1] saved, floating[::1] packed_out, Py_ssize_t sh,
                           Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                           Py_ssize_t Ho, Py_ssize_t Wo, bint force):
    """Keep ``packed_out`` the packing of ``weight`` and ``bias`` (None: zeros) by
    :func:`blocked_pack_weights`: unless ``force``, compare them bytewise with ``saved``
    (``weight.size + K`` elements: the values last packed) and return False when equal;
    else copy them into ``saved``, pack them and return True."""
    if floating is double:
        raise TypeError(_f32_only("blocked_refresh_packed", "weight"))
    cdef Py_ssize_t K = weight.shape[0]
    cdef Py_ssize_t n = K * weight.shape[1] * weight.shape[2] * weight.shape[3]
    if saved.shape[0] != n + K or n == 0:
        raise ValueError(f"blocked_refresh_packed(): saved has {saved.shape[0]} elements, "
                         f"expected {n + K}")
    if bias is not None and bias.shape[0] != K:
        raise ValueError(f"blocked_refresh_packed(): bias has {bias.shape[0]} elements, the "
                         f"weight {K} filters")
    cdef bint same = False
    cdef const char* bytes_
    cdef Py_ssize_t i
    with nogil:
        if not force and memcmp(&weight[0, 0, 0, 0], &saved[0], n * sizeof(floating)) == 0:
            if bias is None:  # (packed with zero biases: saved holds +0.0 bytes then)
                same = True
                bytes_ = <const char*> &saved[n]
                for i in range(K * <Py_ssize_t> sizeof(floating)):
                    if bytes_[i] != 0:
                        same = False
                        break
            else:
                same = memcmp(&bias[0], &saved[n], K * sizeof(floating)) == 0
    if same:
        return False
    blocked_pack_weights(weight, bias, packed_out, sh, sw, dh, dw, groups, Ho, Wo)
    with nogil:
        memcpy(&saved[0], &weight[0, 0, 0, 0], n * sizeof(floating))
        if bias is None:
            memset(&saved[n], 0, K * sizeof(floating))
        else:
            memcpy(&saved[n], &bias[0], K * sizeof(floating))
    return True


def blocked_forward_packed(const floating[:, :, :, ::1] x, const floating[::1] packed,
                           floating[:, :, :, ::1] y_out, Py_ssize_t kh, Py_ssize_t kw,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, bint relu,
                           int n_threads):
    """Write ``conv2d(x, weight, bias)`` by the channel-blocked kernel into ``y_out`` from
    the weights :func:`blocked_pack_weights` packed -- bit-identical to
    :func:`conv2d_forward` with ``ALGO_BLOCKED`` -- followed by ``relu(y)`` with ``relu``."""
    if floating is double:
        raise TypeError(_f32_only("blocked_forward_packed", "x"))
    if (groups <= 0 or x.shape[1] % groups or y_out.shape[1] % groups
            or x.shape[0] != y_out.shape[0]):  # (before make_geom divides by groups)
        raise ValueError("blocked_forward_packed(): x, y_out and groups do not match")
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], y_out.shape[1],
                            kh, kw, groups, sh, sw, ph, pw, dh, dw, y_out.shape[2],
                            y_out.shape[3])
    if y_out.shape[0] == 0 or y_out.shape[1] == 0:
        return
    cdef BlkPlan pl = blk_plan_of(&x[0, 0, 0, 0], &g)
    if packed.shape[0] != groups * pl.per_group:
        raise ValueError(f"blocked_forward_packed(): packed has {packed.shape[0]} elements, "
                         f"expected {groups * pl.per_group}")
    cdef int status
    with nogil:
        status = blk_forward_packed(&x[0, 0, 0, 0], &packed[0], &g, &y_out[0, 0, 0, 0],
                                    relu, n_threads)
    check_status(status, "blocked_forward_packed")



# ------------------------------------------------------------------------------------------
# Inference plans: the packed channel-blocked forward with a residual-add (+ ReLU) epilogue
# ------------------------------------------------------------------------------------------
# A residual block's second convolution, its Add and the ReLU after it as one kernel call
# (cnncore/nn/inference.py's graph plans): each task adds the residual to the output rows it
# wrote (and applies the ReLU) while they are in cache -- the same float additions and the
# same ReLU rule as the separate Add and ReLU steps, so the same bits.  A task pads only
# the input rows its band of output rows reads (at batch 1 every thread used to pad the
# sample's whole planes).


cdef void add_relu_planes(floating* y, const floating* r, Py_ssize_t n_ch, Py_ssize_t plane,
                          Py_ssize_t lo, Py_ssize_t hi, bint r_first, bint relu) noexcept nogil:
    """``y[c, i] = y[c, i] + r[c, i]`` (``r[c, i] + y[c, i]`` with ``r_first``: the Add's
    operand order), then with ``relu`` ``0 if v < 0 else v``, for ``i`` in ``[lo, hi)`` of
    each of ``n_ch`` planes of ``plane`` elements."""
    cdef Py_ssize_t c, i
    cdef floating v
    cdef floating* p
    cdef const floating* q
    for c in range(n_ch):
        p = y + c * plane
        q = r + c * plane
        if r_first:
            if relu:
                for i in range(lo, hi):
                    v = q[i] + p[i]
                    p[i] = 0 if v < 0 else v
            else:
                for i in range(lo, hi):
                    p[i] = q[i] + p[i]
        else:
            if relu:
                for i in range(lo, hi):
                    v = p[i] + q[i]
                    p[i] = 0 if v < 0 else v
            else:
                for i in range(lo, hi):
                    p[i] = p[i] + q[i]


cdef inline void blk_rows_task(const floating* xg, const Geom* g, const BlkPlan* pl,
                               const floating* packed_g, bint whole, floating* col,
                               floating* out, Py_ssize_t oh0, Py_ssize_t oh1) noexcept nogil:
    """One task of the packed blocked forward: output rows ``[oh0, oh1)`` of a (sample,
    group) into ``out`` (its ``Kg`` planes of ``Ho x Wo``) from that group's input planes
    ``xg`` -- padding the whole planes into ``col`` (``whole``: one task per (sample, group))
    or only the input rows those output rows read (a band), then the blocked correlation."""
    cdef Py_ssize_t r0, r1, c
    if whole:
        row_fill(xg, g.Cg, g.H, g.W, -g.ph, -g.pw, pl.R, pl.Q, col)
    else:  # the padded rows [r0, r1) output rows [oh0, oh1) read
        r0 = oh0 * g.sh
        r1 = (oh1 - 1) * g.sh + (g.kh - 1) * g.dh + 1
        for c in range(g.Cg):
            row_fill(xg + c * g.H * g.W, 1, g.H, g.W, r0 - g.ph, -g.pw, r1 - r0, pl.Q,
                     col + (c * pl.R + r0) * pl.Q)
    blk_corr(col, g.Cg, pl, packed_g, g.Kg, g, g.sh, g.sw, out, g.Ho, g.Wo,
             col + g.Cg * pl.R * pl.Q, oh0, oh1)


cdef int blk_forward_packed_res(const floating* x, const floating* packed, const Geom* g,
                                floating* y, const floating* res, bint r_first, bint relu,
                                int n_threads) noexcept nogil:
    """conv2d forward by the channel-blocked direct kernel on weights :func:`blk_pack`
    packed: one task per (sample, group); with fewer of those than threads (a batch of
    one), per (sample, group, band of output rows), each task padding only the input rows
    its output rows read.  Each task then adds ``res`` (NULL: nothing; same shape as ``y``,
    not overlapping it) to its rows (``res`` first with ``r_first``), then ``relu``, while
    they are in cache.  Every output is computed the same way whatever the split:
    bit-identical for any thread count."""
    cdef BlkPlan pl = blk_plan_of(x, g)
    cdef Py_ssize_t n_bands = 1
    cdef Py_ssize_t n_tasks, ws = g.Cg * pl.R * pl.Q + pl.tmp
    cdef Py_ssize_t t, n0, gi, band, oh0, oh1, plane = g.Ho * g.Wo
    cdef floating* yg
    cdef const floating* xg
    if g.N * g.G < n_threads:
        n_bands = py_min(ceil_div(n_threads, g.N * g.G), g.Ho)
    n_tasks = g.N * g.G * n_bands
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef floating* col = NULL
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        # zeroed once: every task fills the same in-bounds part of the padded planes (a
        # per-row memset and memcpy of the whole planes cost ~8% of the forward at 16x16)
        col = <floating*> calloc(ws, sizeof(floating))
        ok = scratch_ok(col, ws, status_p)
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            band = t % n_bands
            n0 = t // (g.G * n_bands)
            gi = (t // n_bands) % g.G
            oh0 = band * g.Ho // n_bands
            oh1 = (band + 1) * g.Ho // n_bands
            if oh1 <= oh0:
                continue
            yg = y + (n0 * g.K + gi * g.Kg) * plane
            xg = x + (n0 * g.C + gi * g.Cg) * g.H * g.W
            blk_rows_task(xg, g, &pl, packed + gi * pl.per_group, n_bands == 1, col, yg, oh0,
                          oh1)
            if res != NULL:
                add_relu_planes(yg, res + (yg - y), g.Kg, plane, oh0 * g.Wo, oh1 * g.Wo,
                                r_first, relu)
            elif relu:
                relu_planes(yg, g.Kg, plane, oh0 * g.Wo, oh1 * g.Wo)
        free(col)
    return status


def blocked_forward_packed_res(const floating[:, :, :, ::1] x, const floating[::1] packed,
                               const floating[:, :, :, ::1] residual,
                               floating[:, :, :, ::1] y_out, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                               Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                               bint residual_first, bint relu, int n_threads):
    """Write ``conv2d(x, weight, bias) + residual`` (``residual + conv2d(...)`` with
    ``residual_first``; ``residual`` None: no addition), then with ``relu`` its ReLU, into
    ``y_out`` by the channel-blocked kernel from the weights :func:`blocked_pack_weights`
    packed: bit-identical to :func:`blocked_forward_packed` followed by NumPy's ``add``
    (same operand order) and the ReLU kernel, for any ``n_threads``.  ``residual`` has
    ``y_out``'s shape and does not overlap it."""
    if floating is double:
        raise TypeError(_f32_only("blocked_forward_packed_res", "x"))
    if (groups <= 0 or x.shape[1] % groups or y_out.shape[1] % groups
            or x.shape[0] != y_out.shape[0]):
        raise ValueError("blocked_forward_packed_res(): x, y_out and groups do not match")
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], y_out.shape[1],
                            kh, kw, groups, sh, sw, ph, pw, dh, dw, y_out.shape[2],
                            y_out.shape[3])
    cdef const floating* rptr = NULL
    cdef Py_ssize_t nbytes = y_out.shape[0] * y_out.shape[1] * y_out.shape[2] * y_out.shape[3]
    if residual is not None:
        if tuple(residual.shape)[:4] != tuple(y_out.shape)[:4]:
            raise ValueError(
                f"blocked_forward_packed_res(): residual has shape "
                f"{tuple(residual.shape)[:4]}, y_out {tuple(y_out.shape)[:4]}")
    if y_out.shape[0] == 0 or y_out.shape[1] == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return
    if residual is not None:
        rptr = &residual[0, 0, 0, 0]
        nbytes *= sizeof(floating)
        if (<const char*> rptr < <const char*> &y_out[0, 0, 0, 0] + nbytes
                and <const char*> &y_out[0, 0, 0, 0] < <const char*> rptr + nbytes):
            raise ValueError("blocked_forward_packed_res(): residual overlaps y_out")
    cdef BlkPlan pl = blk_plan_of(&x[0, 0, 0, 0], &g)
    if packed.shape[0] != groups * pl.per_group:
        raise ValueError(f"blocked_forward_packed_res(): packed has {packed.shape[0]} "
                         f"elements, expected {groups * pl.per_group}")
    cdef int status
    with nogil:
        status = blk_forward_packed_res(&x[0, 0, 0, 0], &packed[0], &g, &y_out[0, 0, 0, 0],
                                        rptr, residual_first, relu, n_threads)
    check_status(status, "blocked_forward_packed_res")


# ------------------------------------------------------------------------------------------
# Inference plans: the packed channel-blocked forward with a 2x2 max pooling (+ ReLU) epilogue
# ------------------------------------------------------------------------------------------
# A Sequential's Conv2d -> MaxPool2d(2) (-> ReLU, which an eval forward runs after the
# pooling) as one kernel call, float32 only (cnncore/nn/inference.py's plans): each task
# computes its band of the convolution's rows into a per-thread buffer (the full-size
# convolution output is never written), pools them with _pool's own 2x2 plane kernel and
# applies the ReLU to the pooled rows -- the same kernels and rules as the conv2d, max_pool2d
# and ReLU steps, so the same bits for any thread count.


cdef int blk_forward_packed_pool_f(const float* x, const float* packed, const Geom* g,
                                   float* y, bint relu, int n_threads) noexcept nogil:
    """``y = max_pool2d(conv2d(x), 2)`` (N x K planes of (Ho // 2) x (Wo // 2)), then with
    ``relu`` ``0 if v < 0 else v``, by the channel-blocked kernel on weights :func:`blk_pack`
    packed: one task per (sample, group), or with fewer of those than threads (a batch of
    one) per (sample, group, band of pooled rows), each task padding only the input rows its
    convolution rows read."""
    cdef BlkPlan pl = blk_plan_of(x, g)
    cdef Py_ssize_t Hp = g.Ho // 2, Wp = g.Wo // 2, plane = g.Ho * g.Wo, pplane
    cdef Py_ssize_t n_bands = 1
    cdef Py_ssize_t n_tasks, ws = g.Cg * pl.R * pl.Q + pl.tmp
    cdef Py_ssize_t t, n0, gi, band, p0, p1, oh0, oh1, k
    cdef float* yg
    cdef float* cv
    cdef const float* xg
    pplane = Hp * Wp
    if Hp == 0 or Wp == 0:
        return CNN_OK
    if g.N * g.G < n_threads:
        n_bands = py_min(ceil_div(n_threads, g.N * g.G), Hp)
    n_tasks = g.N * g.G * n_bands
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint ok = False
    cdef float* col = NULL
    cdef float* conv = NULL
    cdef int64_t* idx = NULL
    with parallel(num_threads=<int> par_threads(n_threads, n_tasks, conv_macs(g))):
        # the padded planes (zeroed once: every task fills the same in-bounds part) and the
        # microkernel's scratch; the group's Kg convolution planes; the argmax scratch
        col = <float*> calloc(ws, sizeof(float))
        conv = <float*> malloc(g.Kg * plane * sizeof(float))
        idx = <int64_t*> malloc(pplane * sizeof(int64_t))
        ok = (scratch_ok(col, ws, status_p) and scratch_ok(conv, g.Kg * plane, status_p)
              and scratch_ok(idx, pplane, status_p))
        for t in prange(n_tasks, schedule="static"):
            if not ok:
                continue
            band = t % n_bands
            n0 = t // (g.G * n_bands)
            gi = (t // n_bands) % g.G
            p0 = band * Hp // n_bands
            p1 = (band + 1) * Hp // n_bands
            if p1 <= p0:
                continue
            oh0 = 2 * p0
            oh1 = 2 * p1
            yg = y + (n0 * g.K + gi * g.Kg) * pplane
            xg = x + (n0 * g.C + gi * g.Cg) * g.H * g.W
            cv = conv
            blk_rows_task(xg, g, &pl, packed + gi * pl.per_group, n_bands == 1, col, cv, oh0,
                          oh1)
            for k in range(g.Kg):
                pool2x2_max_plane_float(cv + k * plane + oh0 * g.Wo, oh1 - oh0, g.Wo, p1 - p0,
                                        Wp, yg + k * pplane + p0 * Wp, idx)
            if relu:
                relu_planes(yg, g.Kg, pplane, p0 * Wp, p1 * Wp)
        free(col)
        free(conv)
        free(idx)
    return status


def blocked_forward_packed_pool(const float[:, :, :, ::1] x, const float[::1] packed,
                                float[:, :, :, ::1] y_out, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                                Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, Py_ssize_t Ho,
                                Py_ssize_t Wo, bint relu, int n_threads):
    """Write ``max_pool2d(conv2d(x, weight, bias), 2)`` (then with ``relu`` its ReLU) into
    ``y_out`` (N, K, Ho // 2, Wo // 2), float32, from the weights :func:`blocked_pack_weights`
    packed for the convolution's ``Ho x Wo`` outputs: bit-identical to
    :func:`blocked_forward_packed`, ``max_pool2d_forward`` (2x2, stride 2) and the ReLU
    kernel, for any ``n_threads``; the convolution output is never written."""
    if (groups <= 0 or x.shape[1] % groups or y_out.shape[1] % groups
            or x.shape[0] != y_out.shape[0]):  # (before make_geom divides by groups)
        raise ValueError("blocked_forward_packed_pool(): x, y_out and groups do not match")
    if (min(kh, kw, sh, sw, dh, dw) <= 0 or ph < 0 or pw < 0
            or Ho != conv_output_size(x.shape[2], kh, sh, 2 * ph, dh)
            or Wo != conv_output_size(x.shape[3], kw, sw, 2 * pw, dw)
            or Ho <= 0 or Wo <= 0 or y_out.shape[2] != Ho // 2 or y_out.shape[3] != Wo // 2):
        raise ValueError(
            f"blocked_forward_packed_pool(): the geometry does not match. Received: x "
            f"{tuple(x.shape)[:4]}, y_out {tuple(y_out.shape)[:4]}, Ho={Ho}, Wo={Wo}")
    cdef Geom g = make_geom(x.shape[0], x.shape[1], x.shape[2], x.shape[3], y_out.shape[1],
                            kh, kw, groups, sh, sw, ph, pw, dh, dw, Ho, Wo)
    if y_out.shape[0] == 0 or y_out.shape[1] == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return
    cdef BlkPlan pl = blk_plan_of(&x[0, 0, 0, 0], &g)
    if packed.shape[0] != groups * pl.per_group:
        raise ValueError(f"blocked_forward_packed_pool(): packed has {packed.shape[0]} "
                         f"elements, expected {groups * pl.per_group}")
    cdef int status
    with nogil:
        status = blk_forward_packed_pool_f(&x[0, 0, 0, 0], &packed[0], &g, &y_out[0, 0, 0, 0],
                                           relu, n_threads)
    check_status(status, "blocked_forward_packed_pool")
