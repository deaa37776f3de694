"""Normalization kernels: group norm (instance norm is group norm with one channel per group),
layer norm and batch norm, forward and backward.

Both normalize *segments* of contiguous elements: a group ``(n, g)`` of ``Cg`` planes of
``S`` elements (``L = Cg * S``), or a row of ``D`` elements (layer norm over the last axes).

Statistics (numerically careful, single pass over memory).  A segment is cut into chunks of
``CHUNK`` elements.  Each chunk's mean and sum of squared deviations are computed by two
passes over the chunk (it is in L1), on ``x - K`` with ``K`` the segment's first element (so
a large common offset cancels exactly before anything is summed), with ``LANES`` interleaved
accumulators; the chunks are merged in order with Chan's pairwise update in double.  The
variance is the biased one, never negative; a mean of 1e4 with a standard deviation of 1e-2
keeps ~6 significant digits of the deviations in float32.  The output is computed as
``((x - m_hi) - m_lo) * a + b``, with the float mean split into two floats so that ``x - m``
is exact to the last bit of ``x``.  Layer norm rows of at most ``SHORT_ROW`` elements (e.g.
channels last) use the same shift and two passes with one register-wide accumulator (16
floats / 8 doubles) reduced in a fixed order (cnn_short_moments / cnn_short_sums): the 32
lanes' reduction through memory cost more than the row itself.

Backward (the input gradient, and the per-plane / per-column sums the weight and bias
gradients need) recomputes the statistics from ``x`` exactly as the forward does, then
``grad_x = rstd * w * g + B * (x - m) + C`` per segment, with ``B`` and ``C`` from the
sums of ``g * w`` and ``g * w * (x - m)`` (sums of chunks of ``CHUNK`` elements, each in
``LANES`` interleaved accumulators, added in order in double).

Work split (bit-identical for any thread count).  With at least as many segments as
threads, a task is a whole segment (statistics, sums and output while the segment is in
cache; short layer-norm rows go by blocks of ``CHUNK`` elements: the block's statistics,
then its outputs).  With fewer (one huge group or row), each phase is split over chunks
(layer norm's backward: over all (row, chunk) pairs, then over chunks of columns sweeping
the rows in order), with the per-chunk partial results combined in the same order as in the
one-task path -- the arithmetic is the same in both paths, element by element.  Layer
norm's weight and bias gradients are column sums over rows: rows are cut into ``P`` parts
fixed by the shapes, each part sums its rows in order into its own buffer (double), and the
caller adds the ``P`` partial sums in order.

Batch norm (statistics per channel over the batch and positions) cuts each channel into
chunks of whole planes (or pieces of long planes) and runs every phase over all (channel,
chunk) tasks, with the chunk results merged per channel in chunk order (see its section).
"""

from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from cnncore._shared cimport CNN_ERR_NOMEM, CNN_OK, check_status, floating, py_max, py_min

cdef enum:
    CHUNK = 4096      # elements per statistics / sums chunk (16 KiB of float32: in L1)
    LANES = 32        # interleaved accumulators of a chunk sum (independent add chains)
    POS_MAX = 256     # batch norm planes up to this size: one accumulator per position
    CHANNEL_L = 128   # batch norm planes from this size: a task per channel (see bn_forward_impl)
    SHORT_ROW = 512   # layer norm rows up to this size: cnn_short_moments / cnn_short_sums
    LONG_ROWS = 4     # layer norm backward: rows per block (at least) of a part's sweep
    PF_SEGMENT = 4096 # group norm segments from this size: prefetch hints in the statistics
    PF_BLOCK = 1024   # group norm: elements per block of the next segment's prefetch hints


cdef extern from *:
    """
    #include <stddef.h>
    /* Layer norm's backward over a run of one row with a weight: the input gradient, and the
       row's weight / bias gradient terms added to the part's sums (double).  The arrays
       never overlap (restrict: the compiler vectorizes the mixed float / double loop). */
    #define CNN_LN_BACKWARD_ROW(SUF, T)                                                     \
    static void cnn_ln_backward_row##SUF(                                                  \
            const T* __restrict g, const T* __restrict x, T* __restrict gx,                \
            const T* __restrict w, double* __restrict pw, double* __restrict pb,           \
            ptrdiff_t n, T mh, T ml, T r, T bf, T cf, double rstd) {                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                \
            T gv = g[i];                                                                   \
            T xc = (x[i] - mh) - ml;                                                       \
            gx[i] = (gv * r) * w[i] + (xc * bf + cf);                                      \
            pw[i] += ((double) gv * (double) xc) * rstd;                                   \
            pb[i] += (double) gv;                                                          \
        }                                                                                  \
    }
    CNN_LN_BACKWARD_ROW(f, float)
    CNN_LN_BACKWARD_ROW(d, double)

    /* The same arithmetic, element by element, over `nr` rows (row stride D) of a run of
       `n` columns: blocks of 16 columns, each sweeping the rows in order with the weight /
       bias gradient sums of its columns held in registers (loaded from and stored back to
       pw / pb once per block, not once per row: the read-modify-write of pw / pb per row
       was half of the backward's time for long rows).  Per column the sums take the rows
       in the same order as cnn_ln_backward_row, and the columns of the remainder (< 16,
       at the end of the row) the same scalar path wherever the run starts at a multiple
       of 16.  cf5: per row (mh, ml, rstd, B, C) in T; st: per row (mean, rstd, B, C). */
    #define CNN_LN_BACKWARD_COLS(SUF, T)                                                    \
    static void cnn_ln_backward_cols##SUF(                                                 \
            const T* __restrict g, const T* __restrict x, T* __restrict gx,                \
            const T* __restrict w, double* __restrict pw, double* __restrict pb,           \
            ptrdiff_t n, ptrdiff_t nr, ptrdiff_t D, const T* __restrict cf5,               \
            const double* __restrict st) {                                                 \
        ptrdiff_t j0 = 0;                                                                  \
        for (; j0 + 16 <= n; j0 += 16) {                                                   \
            double aw[16], ab[16];                                                         \
            for (int k = 0; k < 16; k++) { aw[k] = pw[j0 + k]; ab[k] = pb[j0 + k]; }       \
            for (ptrdiff_t r = 0; r < nr; r++) {                                           \
                const T* q = cf5 + 5 * r;                                                  \
                T mh = q[0], ml = q[1], rf = q[2], bf = q[3], cf = q[4];                   \
                double rstd = st[4 * r + 1];                                               \
                const T* gr = g + r * D + j0;                                              \
                const T* xr = x + r * D + j0;                                              \
                T* yr = gx + r * D + j0;                                                   \
                for (int k = 0; k < 16; k++) {                                             \
                    T gv = gr[k];                                                          \
                    T xc = (xr[k] - mh) - ml;                                              \
                    yr[k] = (gv * rf) * w[j0 + k] + (xc * bf + cf);                        \
                    aw[k] += ((double) gv * (double) xc) * rstd;                           \
                    ab[k] += (double) gv;                                                  \
                }                                                                          \
            }                                                                              \
            for (int k = 0; k < 16; k++) { pw[j0 + k] = aw[k]; pb[j0 + k] = ab[k]; }       \
        }                                                                                  \
        for (ptrdiff_t r = 0; r < nr && j0 < n; r++) {                                     \
            const T* q = cf5 + 5 * r;                                                      \
            cnn_ln_backward_row##SUF(g + r * D + j0, x + r * D + j0, gx + r * D + j0,      \
                                     w + j0, pw + j0, pb + j0, n - j0, q[0], q[1], q[2],   \
                                     q[3], q[4], st[4 * r + 1]);                           \
        }                                                                                  \
    }
    CNN_LN_BACKWARD_COLS(f, float)
    CNN_LN_BACKWARD_COLS(d, double)

    /* Short rows (layer norm with D <= SHORT_ROW, e.g. channels last): one row's statistics
       and sums in one register-wide accumulator (64 bytes: 16 floats or 8 doubles, GCC
       vector types; 4 / 2 / 1 instructions per add on AVX-512 / AVX2 / SSE2 builds, the
       same arithmetic on each) and one fixed-order horizontal reduction, instead of the
       LANES (32) accumulators of chunk_moments, whose reductions through memory dominated
       rows of 64 elements.  Element i of the row goes to lane i % VL; the lanes are then
       halved pairwise (lane k + h into lane k, h = VL/2, ..., 1).  Same shift-by-the-first-
       element and two-pass scheme as chunk_moments. */
    #include <math.h>
    #include <string.h>
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC diagnostic ignored "-Wpsabi"     /* vector arguments of inline helpers */
    #endif
    typedef float cnn_v16f __attribute__((vector_size(64)));
    typedef float cnn_v8f __attribute__((vector_size(32)));
    typedef float cnn_v4f __attribute__((vector_size(16)));
    typedef double cnn_v8d __attribute__((vector_size(64)));
    typedef double cnn_v4d __attribute__((vector_size(32)));
    #define CNN_SIN static inline __attribute__((always_inline))
    /* lanes halved pairwise: (k, k + 8), then (k, k + 4), then (0 + 2) + (1 + 3) */
    CNN_SIN float cnn_hsumf(cnn_v16f v) {
        cnn_v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                    + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
        cnn_v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3)
                    + __builtin_shufflevector(a, a, 4, 5, 6, 7);
        return (b[0] + b[2]) + (b[1] + b[3]);
    }
    CNN_SIN double cnn_hsumd(cnn_v8d v) {
        cnn_v4d b = __builtin_shufflevector(v, v, 0, 1, 2, 3)
                    + __builtin_shufflevector(v, v, 4, 5, 6, 7);
        return (b[0] + b[2]) + (b[1] + b[3]);
    }
    /* Prefetch hint for the lines of [p, p + bytes) (results unchanged) */
    CNN_SIN void cnn_prefetch(const void* p, ptrdiff_t bytes) {
    #if defined(__GNUC__)
        for (ptrdiff_t q = 0; q < bytes; q += 64) __builtin_prefetch((const char*) p + q, 0, 3);
    #else
        (void) p; (void) bytes;
    #endif
    }
    /* The same for writing (the lines of an output: owned before the store, no
       read-for-ownership stall there) */
    CNN_SIN void cnn_prefetch_w(void* p, ptrdiff_t bytes) {
    #if defined(__GNUC__)
        for (ptrdiff_t q = 0; q < bytes; q += 64) __builtin_prefetch((char*) p + q, 1, 1);
    #else
        (void) p; (void) bytes;
    #endif
    }
    /* Rows are read this many bytes ahead of their use (the hardware prefetcher alone left
       the first load of each short row waiting on memory: a fifth of the forward's time) */
    #define CNN_ROW_AHEAD 4096
    #define CNN_LN_SHORT(SUF, T, V)                                                         \
    CNN_SIN V cnn_ldv##SUF(const T* p) { V v; memcpy(&v, p, sizeof v); return v; }         \
    /* x[0:rem] - K in the first lanes, 0 in the rest */                                   \
    CNN_SIN V cnn_tail##SUF(const T* x, ptrdiff_t rem, T K) {                              \
        enum { VL = sizeof(V) / sizeof(T) };                                               \
        T a[VL] = {0};                                                                     \
        for (ptrdiff_t k = 0; k < rem; k++) a[k] = x[k] - K;                               \
        V v; memcpy(&v, a, sizeof v); return v;                                            \
    }                                                                                      \
    /* mean and biased variance of x[0:D] (D >= 1) */                                    \
    CNN_SIN void cnn_short_moments_in##SUF(const T* x, ptrdiff_t D, double* mean,          \
                                           double* var) {                                  \
        enum { VL = sizeof(V) / sizeof(T) };                                               \
        T K = x[0];                                                                        \
        ptrdiff_t full = D - D % VL, rem = D - full, i;                                    \
        V acc = {0}, zero = {0}, kv = zero + K, mv, d, tv;                                 \
        for (i = 0; i < full; i += VL) acc += cnn_ldv##SUF(x + i) - kv;                    \
        tv = cnn_tail##SUF(x + full, rem, K);                                              \
        double md = (double) cnn_hsum##SUF(acc + tv) / (double) D;                         \
        T mf = (T) md;                                                                     \
        mv = zero + mf;                                                                    \
        acc = zero;                                                                        \
        for (i = 0; i < full; i += VL) {                                                   \
            d = (cnn_ldv##SUF(x + i) - kv) - mv;                                           \
            acc += d * d;                                                                  \
        }                                                                                  \
        if (rem) {                                                                         \
            T a[VL] = {0};                                                                 \
            for (i = 0; i < rem; i++) { T e = (x[full + i] - K) - mf; a[i] = e * e; }      \
            memcpy(&tv, a, sizeof tv);                                                     \
            acc += tv;                                                                     \
        }                                                                                  \
        double m2 = (double) cnn_hsum##SUF(acc);                                           \
        *mean = (double) K + md;                                                           \
        *var = m2 > 0 ? m2 / (double) D : 0.0 * m2;        /* (NaN stays NaN) */           \
    }                                                                                      \
    static void cnn_short_moments##SUF(const T* x, ptrdiff_t D, double* mean,              \
                                       double* var) {                                      \
        cnn_short_moments_in##SUF(x, D, mean, var);                                        \
    }                                                                                      \
    /* Layer norm forward of rows [r0, r1) of D <= SHORT_ROW elements: each row's          \
       statistics, then its output ((x - mh) - ml) * rstd * w + b, as ln_apply */          \
    static void cnn_short_forward##SUF(const T* x, T* y, const T* w, const T* b,           \
                                       ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t D, double eps, \
                                       double* mean, double* var) {                        \
        for (ptrdiff_t r = r0; r < r1; r++) {                                              \
            const T* xr = x + r * D;                                                       \
            T* yr = y + r * D;                                                             \
            cnn_prefetch((const char*) xr + CNN_ROW_AHEAD, D * (ptrdiff_t) sizeof(T));     \
            cnn_short_moments_in##SUF(xr, D, &mean[r], &var[r]);                           \
            double rstd = 1.0 / sqrt(var[r] + eps);                                        \
            T mh = (T) mean[r], ml = (T) (mean[r] - (double) mh), rf = (T) rstd;           \
            ptrdiff_t i;                                                                   \
            if (w && b) for (i = 0; i < D; i++) yr[i] = (((xr[i] - mh) - ml) * rf) * w[i] + b[i]; \
            else if (w) for (i = 0; i < D; i++) yr[i] = (((xr[i] - mh) - ml) * rf) * w[i]; \
            else if (b) for (i = 0; i < D; i++) yr[i] = ((xr[i] - mh) - ml) * rf + b[i];   \
            else for (i = 0; i < D; i++) yr[i] = ((xr[i] - mh) - ml) * rf;                 \
        }                                                                                  \
    }                                                                                      \
    /* sg = sum(g * w), sgx = sum(g * w * ((x - mh) - ml)) over D elements (w NULL: 1) */  \
    static void cnn_short_sums##SUF(const T* g, const T* x, const T* w, ptrdiff_t D,        \
                                    T mh, T ml, double* sg, double* sgx) {                 \
        enum { VL = sizeof(V) / sizeof(T) };                                               \
        T t1[VL] = {0}, t2[VL] = {0};                                                      \
        ptrdiff_t full = D - D % VL, rem = D - full, i;                                    \
        V a1 = {0}, a2 = {0}, hv = a1 + mh, lv = a1 + ml, gv;                              \
        if (w) {                                                                           \
            for (i = 0; i < full; i += VL) {                                               \
                gv = cnn_ldv##SUF(g + i) * cnn_ldv##SUF(w + i);                            \
                a1 += gv;                                                                  \
                a2 += gv * ((cnn_ldv##SUF(x + i) - hv) - lv);                              \
            }                                                                              \
            for (i = 0; i < rem; i++) {                                                    \
                T q = g[full + i] * w[full + i];                                           \
                t1[i] = q; t2[i] = q * ((x[full + i] - mh) - ml);                          \
            }                                                                              \
        } else {                                                                           \
            for (i = 0; i < full; i += VL) {                                               \
                gv = cnn_ldv##SUF(g + i);                                                  \
                a1 += gv;                                                                  \
                a2 += gv * ((cnn_ldv##SUF(x + i) - hv) - lv);                              \
            }                                                                              \
            for (i = 0; i < rem; i++) {                                                    \
                T q = g[full + i];                                                         \
                t1[i] = q; t2[i] = q * ((x[full + i] - mh) - ml);                          \
            }                                                                              \
        }                                                                                  \
        if (rem) { a1 += cnn_ldv##SUF(t1); a2 += cnn_ldv##SUF(t2); }                       \
        *sg = (double) cnn_hsum##SUF(a1);                                                  \
        *sgx = (double) cnn_hsum##SUF(a2);                                                 \
    }
    CNN_LN_SHORT(f, float, cnn_v16f)
    CNN_LN_SHORT(d, double, cnn_v8d)
    """
    void cnn_ln_backward_rowf(const float* g, const float* x, float* gx, const float* w,
                              double* pw, double* pb, Py_ssize_t n, float mh, float ml,
                              float r, float bf, float cf, double rstd) noexcept nogil
    void cnn_ln_backward_rowd(const double* g, const double* x, double* gx, const double* w,
                              double* pw, double* pb, Py_ssize_t n, double mh, double ml,
                              double r, double bf, double cf, double rstd) noexcept nogil
    void cnn_ln_backward_colsf(const float* g, const float* x, float* gx, const float* w,
                               double* pw, double* pb, Py_ssize_t n, Py_ssize_t nr,
                               Py_ssize_t D, const float* cf5, const double* st) noexcept nogil
    void cnn_ln_backward_colsd(const double* g, const double* x, double* gx, const double* w,
                               double* pw, double* pb, Py_ssize_t n, Py_ssize_t nr,
                               Py_ssize_t D, const double* cf5, const double* st) noexcept nogil
    void cnn_short_momentsf(const float* x, Py_ssize_t D, double* mean,
                            double* var) noexcept nogil
    void cnn_short_momentsd(const double* x, Py_ssize_t D, double* mean,
                            double* var) noexcept nogil
    void cnn_short_forwardf(const float* x, float* y, const float* w, const float* b,
                            Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t D, double eps,
                            double* mean, double* var) noexcept nogil
    void cnn_short_forwardd(const double* x, double* y, const double* w, const double* b,
                            Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t D, double eps,
                            double* mean, double* var) noexcept nogil
    enum: CNN_ROW_AHEAD
    void cnn_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil
    void cnn_prefetch_w(void* p, Py_ssize_t nbytes) noexcept nogil
    void cnn_short_sumsf(const float* g, const float* x, const float* w, Py_ssize_t D,
                         float mh, float ml, double* sg, double* sgx) noexcept nogil
    void cnn_short_sumsd(const double* g, const double* x, const double* w, Py_ssize_t D,
                         double mh, double ml, double* sg, double* sgx) noexcept nogil


# ------------------------------------------------------------------------------------------
# Chunk-level arithmetic (shared by both work splits)
# ------------------------------------------------------------------------------------------

cdef inline floating lanes_total(floating* acc) noexcept nogil:
    """Sum of the ``LANES`` accumulators, combined pairwise in a fixed order."""
    cdef int k
    for k in range(16):
        acc[k] = acc[k] + acc[k + 16]
    for k in range(8):
        acc[k] = acc[k] + acc[k + 8]
    for k in range(4):
        acc[k] = acc[k] + acc[k + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef void chunk_moments(const floating* x, Py_ssize_t m, floating K, double* mean,
                        double* m2) noexcept nogil:
    """Mean and sum of squared deviations of ``x[0:m] - K`` (``m >= 1``): two passes over
    the chunk, ``LANES`` interleaved accumulators each."""
    cdef floating acc[LANES]
    cdef floating mf, d
    cdef Py_ssize_t i = 0, k
    for k in range(LANES):
        acc[k] = 0
    while i + LANES <= m:
        for k in range(LANES):
            acc[k] = acc[k] + (x[i + k] - K)
        i = i + LANES
    for k in range(m - i):
        acc[k] = acc[k] + (x[i + k] - K)
    mean[0] = <double> lanes_total(acc) / m
    mf = <floating> mean[0]
    for k in range(LANES):
        acc[k] = 0
    i = 0
    while i + LANES <= m:
        for k in range(LANES):
            d = (x[i + k] - K) - mf
            acc[k] = acc[k] + d * d
        i = i + LANES
    for k in range(m - i):
        d = (x[i + k] - K) - mf
        acc[k] = acc[k] + d * d
    m2[0] = <double> lanes_total(acc)


cdef inline void chan_merge(double* n_a, double* mean_a, double* m2_a, double n_b,
                            double mean_b, double m2_b) noexcept nogil:
    """Fold the moments of ``n_b`` more elements into a running (count, mean, M2)."""
    cdef double n = n_a[0] + n_b
    if n_a[0] == 0:                                # the first chunk: taken as is
        n_a[0] = n_b
        mean_a[0] = mean_b
        m2_a[0] = m2_b
        return
    cdef double delta = mean_b - mean_a[0]
    mean_a[0] = mean_a[0] + delta * (n_b / n)
    m2_a[0] = m2_a[0] + m2_b + delta * delta * (n_a[0] * (n_b / n))
    n_a[0] = n


cdef void merge_chunks(const double* cm, Py_ssize_t n_chunks, Py_ssize_t L, double K,
                       double* mean, double* var) noexcept nogil:
    """Mean and biased variance of a segment of ``L`` elements from its chunks' moments
    ``cm[2c], cm[2c + 1]`` (relative to the shift ``K``), merged in chunk order."""
    cdef double n = 0, mu = 0, M2 = 0
    cdef Py_ssize_t c
    for c in range(n_chunks):
        chan_merge(&n, &mu, &M2, <double> py_min(CHUNK, L - c * CHUNK), cm[2 * c],
                   cm[2 * c + 1])
    mean[0] = K + mu
    var[0] = M2 / L if M2 > 0 else 0.0 * M2         # (NaN stays NaN)


cdef void seg_stats(const floating* x, Py_ssize_t L, double* mean, double* var,
                    const floating* pf_read=NULL, floating* pf_write=NULL) noexcept nogil:
    """:func:`merge_chunks` of the segment's chunks, computed one after another.  Hints
    only (results unchanged): each chunk's range of ``pf_read`` (an array the caller reads
    next, e.g. the gradient) is prefetched before the chunk's first pass, which waits on
    memory for ``x`` -- both streams then arrive together --, and its range of ``pf_write``
    (the output) is owned before the caller's stores."""
    cdef double n = 0, mu = 0, M2 = 0, cmean, cm2
    cdef floating K = x[0]
    cdef Py_ssize_t c0 = 0, m
    while c0 < L:
        m = py_min(CHUNK, L - c0)
        if pf_read != NULL:
            cnn_prefetch(pf_read + c0, m * sizeof(floating))
        if pf_write != NULL:
            cnn_prefetch_w(pf_write + c0, m * sizeof(floating))
        chunk_moments(x + c0, m, K, &cmean, &cm2)
        chan_merge(&n, &mu, &M2, <double> m, cmean, cm2)
        c0 = c0 + CHUNK
    mean[0] = <double> K + mu
    var[0] = M2 / L if M2 > 0 else 0.0 * M2


cdef void chunk_sums(const floating* g, const floating* x, const floating* w, Py_ssize_t m,
                     floating mh, floating ml, double* sg, double* sgx) noexcept nogil:
    """``sg = sum(g * w)`` and ``sgx = sum(g * w * ((x - mh) - ml))`` over ``m <= CHUNK``
    elements (``w`` NULL: 1), ``LANES`` interleaved accumulators each."""
    cdef floating a1[LANES]
    cdef floating a2[LANES]
    cdef floating gv
    cdef Py_ssize_t i = 0, k
    for k in range(LANES):
        a1[k] = 0
        a2[k] = 0
    if w == NULL:
        while i + LANES <= m:
            for k in range(LANES):
                gv = g[i + k]
                a1[k] = a1[k] + gv
                a2[k] = a2[k] + gv * ((x[i + k] - mh) - ml)
            i = i + LANES
        for k in range(m - i):
            gv = g[i + k]
            a1[k] = a1[k] + gv
            a2[k] = a2[k] + gv * ((x[i + k] - mh) - ml)
    else:
        while i + LANES <= m:
            for k in range(LANES):
                gv = g[i + k] * w[i + k]
                a1[k] = a1[k] + gv
                a2[k] = a2[k] + gv * ((x[i + k] - mh) - ml)
            i = i + LANES
        for k in range(m - i):
            gv = g[i + k] * w[i + k]
            a1[k] = a1[k] + gv
            a2[k] = a2[k] + gv * ((x[i + k] - mh) - ml)
    sg[0] = <double> lanes_total(a1)
    sgx[0] = <double> lanes_total(a2)


cdef void run_sums(const floating* g, const floating* x, const floating* w, Py_ssize_t n,
                   floating mh, floating ml, double* sg, double* sgx) noexcept nogil:
    """:func:`chunk_sums` over ``n`` elements: chunk totals added in order in double."""
    cdef double a, b
    cdef Py_ssize_t c0 = 0
    sg[0] = 0
    sgx[0] = 0
    while c0 < n:
        chunk_sums(g + c0, x + c0, w + c0 if w != NULL else NULL, py_min(CHUNK, n - c0),
                   mh, ml, &a, &b)
        sg[0] = sg[0] + a
        sgx[0] = sgx[0] + b
        c0 = c0 + CHUNK


cdef inline void split_mean(double mean, floating* mh, floating* ml) noexcept nogil:
    mh[0] = <floating> mean
    ml[0] = <floating> (mean - <double> mh[0])


cdef inline double inv_std(double var, double eps) noexcept nogil:
    return 1.0 / sqrt(var + eps)


# ------------------------------------------------------------------------------------------
# Group norm (and instance norm): segments of Cg planes of S elements
# ------------------------------------------------------------------------------------------

ctypedef struct GroupGeom:
    Py_ssize_t n_seg, G, Cg, S, L


cdef void gn_apply(const floating* x, floating* y, Py_ssize_t e0, Py_ssize_t e1,
                   const GroupGeom* gg, Py_ssize_t c_base, const floating* w,
                   const floating* b, double mean, double rstd,
                   const floating* pf=NULL) noexcept nogil:
    """Output elements ``[e0, e1)`` of one segment (``x``, ``y`` at the segment's start);
    ``c_base``: the channel of the segment's first plane.  ``pf`` (a hint, results
    unchanged): the same elements of the next segment's input are prefetched, a block
    ahead of the statistics pass that will read them (memory is idle during this pass,
    which reads the segment from L1)."""
    cdef floating mh, ml, a, bb
    cdef Py_ssize_t e = e0, j, end, i, i0, i1
    split_mean(mean, &mh, &ml)
    while e < e1:
        j = e // gg.S
        end = py_min((j + 1) * gg.S, e1)
        a = <floating> (rstd * (<double> w[c_base + j] if w != NULL else 1.0))
        bb = b[c_base + j] if b != NULL else 0
        i0 = e
        while i0 < end:
            i1 = py_min(i0 + PF_BLOCK, end)
            if pf != NULL:
                cnn_prefetch(pf + i0, (i1 - i0) * sizeof(floating))
            for i in range(i0, i1):
                y[i] = ((x[i] - mh) - ml) * a + bb
            i0 = i1
        e = end


cdef void gn_coefficients(const GroupGeom* gg, Py_ssize_t c_base, const floating* w,
                          const double* db, const double* dd, double rstd, bint stats_given,
                          double* B, double* C) noexcept nogil:
    """``grad_x = rstd * w * g + B * (x - m) + C`` for one segment from its planes' sums
    ``db[j] = sum(g)`` and ``dd[j] = sum(g * (x - m))``."""
    cdef double sdy = 0, sdyx = 0, wj
    cdef Py_ssize_t j
    if stats_given:                                # running statistics: an affine map
        B[0] = 0
        C[0] = 0
        return
    for j in range(gg.Cg):
        wj = <double> w[c_base + j] if w != NULL else 1.0
        sdy = sdy + wj * db[j]
        sdyx = sdyx + wj * dd[j]
    B[0] = -rstd * rstd * rstd * sdyx / gg.L
    C[0] = -rstd * sdy / gg.L


cdef void gn_backward_apply(const floating* g, const floating* x, floating* gx, Py_ssize_t e0,
                            Py_ssize_t e1, const GroupGeom* gg, Py_ssize_t c_base,
                            const floating* w, double mean, double rstd, double B,
                            double C, const floating* pf_g=NULL,
                            const floating* pf_x=NULL) noexcept nogil:
    """``grad_x`` over ``[e0, e1)`` of one segment; ``pf_g`` / ``pf_x``: the next
    segment's arrays, prefetched as :func:`gn_apply` does (hints)."""
    cdef floating mh, ml, a, bf = <floating> B, cf = <floating> C
    cdef Py_ssize_t e = e0, j, end, i, i0, i1
    split_mean(mean, &mh, &ml)
    while e < e1:
        j = e // gg.S
        end = py_min((j + 1) * gg.S, e1)
        a = <floating> (rstd * (<double> w[c_base + j] if w != NULL else 1.0))
        i0 = e
        while i0 < end:
            i1 = py_min(i0 + PF_BLOCK, end)
            if pf_g != NULL:
                cnn_prefetch(pf_g + i0, (i1 - i0) * sizeof(floating))
                cnn_prefetch(pf_x + i0, (i1 - i0) * sizeof(floating))
            for i in range(i0, i1):
                gx[i] = g[i] * a + (((x[i] - mh) - ml) * bf + cf)
            i0 = i1
        e = end


cdef void gn_forward_seg(const floating* x, floating* y, const GroupGeom* gg, Py_ssize_t s,
                         const floating* w, const floating* b, double eps, double* mean,
                         double* var, bint stats_given) noexcept nogil:
    cdef Py_ssize_t off = s * gg.L
    if not stats_given:
        # (hints, measured: 0.85x the forward's time for 56x56 G=32, 1.15x for 14x14 G=32)
        seg_stats(x + off, gg.L, &mean[s], &var[s], NULL,
                  y + off if gg.L >= PF_SEGMENT else NULL)
    # the next segment's input prefetched while this one is written (measured, 1 thread:
    # 0.87-0.90x the forward's time for 56x56 G=32, 0.89-0.92x G=64, 0.93x 14x14 G=32)
    gn_apply(x + off, y + off, 0, gg.L, gg, (s % gg.G) * gg.Cg, w, b, mean[s],
             inv_std(var[s], eps), x + off + gg.L if s + 1 < gg.n_seg else NULL)


cdef inline double seg_rstd(const double* var, Py_ssize_t s, double eps,
                            bint saved) noexcept nogil:
    """The segment's ``1 / sqrt(var + eps)``, or with ``saved`` the saved value itself."""
    return var[s] if saved else inv_std(var[s], eps)


cdef void gn_backward_seg(const floating* g, const floating* x, floating* gx,
                          const GroupGeom* gg, Py_ssize_t s, const floating* w, double eps,
                          double* mean, double* var, bint stats_given, bint saved, double* db,
                          double* dd) noexcept nogil:
    """One segment: statistics, its planes' sums (``db``, ``dd`` at the segment's planes;
    ``dd`` is returned scaled by rstd: the weight gradient's terms) and ``grad_x``.
    ``saved``: ``mean`` / ``var`` hold the forward's mean and rstd (nothing recomputed)."""
    cdef Py_ssize_t off = s * gg.L, j, c_base = (s % gg.G) * gg.Cg
    cdef double rstd, B, C
    cdef floating mh, ml
    if not stats_given and not saved:
        # (hints, measured: 0.9x the backward's time for 56x56 G=32, 1.3x for 14x14 G=32)
        seg_stats(x + off, gg.L, &mean[s], &var[s], g + off if gg.L >= PF_SEGMENT else NULL,
                  gx + off if gg.L >= PF_SEGMENT else NULL)
    rstd = seg_rstd(var, s, eps, saved)
    split_mean(mean[s], &mh, &ml)
    # planes of <= SHORT_ROW elements: one vector accumulator, as layer norm's short rows
    # (the LANES accumulators' reductions cost more than the sums of a 14x14 plane)
    for j in range(gg.Cg):
        row_sums(g + off + j * gg.S, x + off + j * gg.S, <const floating*> NULL, gg.S, mh,
                 ml, &db[s * gg.Cg + j], &dd[s * gg.Cg + j])
    gn_coefficients(gg, c_base, w, db + s * gg.Cg, dd + s * gg.Cg, rstd, stats_given, &B, &C)
    # the next segment's prefetch: measured 0.94x the recomputing backward's time for
    # 56x56 G=32, but 1.1x for 14x14 and with saved statistics none (1.0-1.02x)
    gn_backward_apply(g + off, x + off, gx + off, 0, gg.L, gg, c_base, w, mean[s], rstd, B, C,
                      g + off + gg.L if s + 1 < gg.n_seg and not saved and gg.L >= PF_SEGMENT
                      else NULL, x + off + gg.L)
    for j in range(gg.Cg):
        dd[s * gg.Cg + j] = dd[s * gg.Cg + j] * rstd


cdef int gn_forward_impl(const floating* x, floating* y, const GroupGeom* gg, const floating* w,
                         const floating* b, double eps, double* mean, double* var,
                         bint stats_given, int n_threads) noexcept nogil:
    cdef Py_ssize_t s, c, nc = (gg.L + CHUNK - 1) // CHUNK
    cdef double* cm
    cdef floating K
    if gg.n_seg >= n_threads or n_threads <= 1 or nc <= 1:
        for s in prange(gg.n_seg, schedule="static", num_threads=n_threads):
            gn_forward_seg(x, y, gg, s, w, b, eps, mean, var, stats_given)
        return CNN_OK
    cm = <double*> malloc(2 * nc * sizeof(double))
    if cm == NULL:
        return CNN_ERR_NOMEM
    for s in range(gg.n_seg):                      # few, large segments: split each one
        if not stats_given:
            K = x[s * gg.L]
            for c in prange(nc, schedule="static", num_threads=n_threads):
                chunk_moments(x + s * gg.L + c * CHUNK, py_min(CHUNK, gg.L - c * CHUNK), K,
                              &cm[2 * c], &cm[2 * c + 1])
            merge_chunks(cm, nc, gg.L, <double> K, &mean[s], &var[s])
        for c in prange(nc, schedule="static", num_threads=n_threads):
            gn_apply(x + s * gg.L, y + s * gg.L, c * CHUNK, py_min((c + 1) * CHUNK, gg.L), gg,
                     (s % gg.G) * gg.Cg, w, b, mean[s], inv_std(var[s], eps))
    free(cm)
    return CNN_OK


cdef int gn_backward_impl(const floating* g, const floating* x, floating* gx,
                          const GroupGeom* gg, const floating* w, double eps, double* mean,
                          double* var, bint stats_given, bint saved, double* db,
                          double* dd, int n_threads) noexcept nogil:
    cdef Py_ssize_t s, c, j, t, off, nc = (gg.L + CHUNK - 1) // CHUNK
    cdef Py_ssize_t ncp = (gg.S + CHUNK - 1) // CHUNK          # chunks per plane
    cdef double* cm
    cdef double rstd, B, C, a, bsum
    cdef floating K, mh, ml
    if gg.n_seg >= n_threads or n_threads <= 1 or nc <= 1:
        for s in prange(gg.n_seg, schedule="static", num_threads=n_threads):
            gn_backward_seg(g, x, gx, gg, s, w, eps, mean, var, stats_given, saved, db, dd)
        return CNN_OK
    cm = <double*> malloc(2 * py_max(nc, gg.Cg * ncp) * sizeof(double))
    if cm == NULL:
        return CNN_ERR_NOMEM
    for s in range(gg.n_seg):
        off = s * gg.L
        if not stats_given and not saved:
            K = x[off]
            for c in prange(nc, schedule="static", num_threads=n_threads):
                chunk_moments(x + off + c * CHUNK, py_min(CHUNK, gg.L - c * CHUNK), K,
                              &cm[2 * c], &cm[2 * c + 1])
            merge_chunks(cm, nc, gg.L, <double> K, &mean[s], &var[s])
        rstd = seg_rstd(var, s, eps, saved)
        split_mean(mean[s], &mh, &ml)
        for t in prange(gg.Cg * ncp, schedule="static", num_threads=n_threads):
            j = t // ncp
            c = t % ncp
            if gg.S <= SHORT_ROW:                  # as gn_backward_seg's row_sums
                row_sums(g + off + j * gg.S, x + off + j * gg.S, <const floating*> NULL, gg.S,
                         mh, ml, &cm[2 * t], &cm[2 * t + 1])
            else:
                chunk_sums(g + off + j * gg.S + c * CHUNK, x + off + j * gg.S + c * CHUNK,
                           <const floating*> NULL, py_min(CHUNK, gg.S - c * CHUNK), mh, ml,
                           &cm[2 * t], &cm[2 * t + 1])
        for j in range(gg.Cg):                     # chunk totals in order, as run_sums
            a = 0
            bsum = 0
            for c in range(ncp):
                a = a + cm[2 * (j * ncp + c)]
                bsum = bsum + cm[2 * (j * ncp + c) + 1]
            db[s * gg.Cg + j] = a
            dd[s * gg.Cg + j] = bsum
        gn_coefficients(gg, (s % gg.G) * gg.Cg, w, db + s * gg.Cg, dd + s * gg.Cg, rstd,
                        stats_given, &B, &C)
        for c in prange(nc, schedule="static", num_threads=n_threads):
            gn_backward_apply(g + off, x + off, gx + off, c * CHUNK,
                              py_min((c + 1) * CHUNK, gg.L), gg, (s % gg.G) * gg.Cg, w,
                              mean[s], rstd, B, C)
        for j in range(gg.Cg):
            dd[s * gg.Cg + j] = dd[s * gg.Cg + j] * rstd
    free(cm)
    return CNN_OK


# ------------------------------------------------------------------------------------------
# Layer norm: M rows of D elements, weight and bias of D elements
# ------------------------------------------------------------------------------------------

cdef inline void row_stats(const floating* x, Py_ssize_t D, double* mean,
                           double* var) noexcept nogil:
    """Mean and biased variance of one row: :func:`seg_stats`, or for rows of at most
    ``SHORT_ROW`` elements cnn_short_moments (one accumulator vector)."""
    if D > SHORT_ROW:
        seg_stats(x, D, mean, var)
    elif floating is float:
        cnn_short_momentsf(x, D, mean, var)
    else:
        cnn_short_momentsd(x, D, mean, var)


cdef inline void row_sums(const floating* g, const floating* x, const floating* w, Py_ssize_t D,
                          floating mh, floating ml, double* sg, double* sgx) noexcept nogil:
    """:func:`run_sums` of one row, or cnn_short_sums for rows of at most ``SHORT_ROW``."""
    if D > SHORT_ROW:
        run_sums(g, x, w, D, mh, ml, sg, sgx)
    elif floating is float:
        cnn_short_sumsf(g, x, w, D, mh, ml, sg, sgx)
    else:
        cnn_short_sumsd(g, x, w, D, mh, ml, sg, sgx)


cdef void ln_apply(const floating* x, floating* y, Py_ssize_t e0, Py_ssize_t e1,
                   const floating* w, const floating* b, double mean, double rstd) noexcept nogil:
    """Output elements ``[e0, e1)`` of one row (pointers at the row's start)."""
    cdef floating mh, ml, r = <floating> rstd
    cdef Py_ssize_t i
    split_mean(mean, &mh, &ml)
    if w != NULL and b != NULL:
        for i in range(e0, e1):
            y[i] = (((x[i] - mh) - ml) * r) * w[i] + b[i]
    elif w != NULL:
        for i in range(e0, e1):
            y[i] = (((x[i] - mh) - ml) * r) * w[i]
    elif b != NULL:
        for i in range(e0, e1):
            y[i] = ((x[i] - mh) - ml) * r + b[i]
    else:
        for i in range(e0, e1):
            y[i] = ((x[i] - mh) - ml) * r


cdef void ln_backward_apply(const floating* g, const floating* x, floating* gx, Py_ssize_t e0,
                            Py_ssize_t e1, const floating* w, double mean, double rstd,
                            double B, double C, double* pw, double* pb) noexcept nogil:
    """``grad_x = rstd * w * g + B * (x - m) + C`` over ``[e0, e1)`` of one row; with ``pw``,
    also add the row's terms of the weight and bias gradients to the part's sums ``pw``,
    ``pb`` (indexed like the row)."""
    cdef floating mh, ml, r = <floating> rstd, bf = <floating> B, cf = <floating> C
    cdef Py_ssize_t i
    split_mean(mean, &mh, &ml)
    if w != NULL:
        if floating is float:
            cnn_ln_backward_rowf(g + e0, x + e0, gx + e0, w + e0, pw + e0, pb + e0, e1 - e0,
                                 mh, ml, r, bf, cf, rstd)
        else:
            cnn_ln_backward_rowd(g + e0, x + e0, gx + e0, w + e0, pw + e0, pb + e0, e1 - e0,
                                 mh, ml, r, bf, cf, rstd)
    else:
        for i in range(e0, e1):
            gx[i] = g[i] * r + (((x[i] - mh) - ml) * bf + cf)


cdef inline void ln_coefficients(double sdy, double sdyx, double rstd, Py_ssize_t D, double* B,
                                 double* C) noexcept nogil:
    B[0] = -rstd * rstd * rstd * sdyx / D
    C[0] = -rstd * sdy / D


cdef void ln_row_coefficients(const double* st, Py_ssize_t nr, floating* cf5) noexcept nogil:
    """Per row, from ``st`` (mean, rstd, B, C): ``cf5`` = (mh, ml, rstd, B, C) in the
    precision of ``floating``, as :func:`ln_backward_apply` rounds them."""
    cdef Py_ssize_t r
    for r in range(nr):
        split_mean(st[4 * r], &cf5[5 * r], &cf5[5 * r + 1])
        cf5[5 * r + 2] = <floating> st[4 * r + 1]
        cf5[5 * r + 3] = <floating> st[4 * r + 2]
        cf5[5 * r + 4] = <floating> st[4 * r + 3]


cdef inline void ln_backward_cols(const floating* g, const floating* x, floating* gx,
                                  const floating* w, double* pw, double* pb, Py_ssize_t n,
                                  Py_ssize_t nr, Py_ssize_t D, const floating* cf5,
                                  const double* st) noexcept nogil:
    """``nr`` rows of a run of ``n`` columns with a weight (pointers at the first row's run;
    ``pw``, ``pb``, ``w`` at the run's first column): see cnn_ln_backward_cols."""
    if floating is float:
        cnn_ln_backward_colsf(g, x, gx, w, pw, pb, n, nr, D, cf5, st)
    else:
        cnn_ln_backward_colsd(g, x, gx, w, pw, pb, n, nr, D, cf5, st)


cdef void ln_backward_rows(const floating* g, const floating* x, floating* gx, Py_ssize_t r0,
                           Py_ssize_t r1, Py_ssize_t D, const floating* w, double eps,
                           double* pw, double* pb, double* st, floating* cf5,
                           const double* smean, const double* srstd) noexcept nogil:
    """Rows ``[r0, r1)`` (``st``: 4 doubles, ``cf5``: 5 floatings per row of scratch): the
    statistics and coefficients of every row, then the rows' gradients (short rows:
    independent work in flight; with a weight, column blocks sweeping the rows).
    ``smean`` / ``srstd`` (or NULL): the forward's statistics per row, not recomputed."""
    cdef double sdy, sdyx
    cdef double* q
    cdef floating mh, ml
    cdef Py_ssize_t r
    for r in range(r0, r1):
        q = st + 4 * (r - r0)                      # mean, rstd, B, C
        if D <= SHORT_ROW:                         # (hints only: results unchanged)
            cnn_prefetch(<const char*> (x + r * D) + CNN_ROW_AHEAD, D * sizeof(floating))
            cnn_prefetch(<const char*> (g + r * D) + CNN_ROW_AHEAD, D * sizeof(floating))
            # grad_x's lines owned before cnn_ln_backward_cols stores them (the stores
            # waited on read-for-ownership: a third of the C-last backward)
            cnn_prefetch_w(gx + r * D, D * sizeof(floating))
        if smean != NULL:
            q[0] = smean[r]
            q[1] = srstd[r]
        else:
            row_stats(x + r * D, D, &q[0], &q[1])
            q[1] = inv_std(q[1], eps)
        split_mean(q[0], &mh, &ml)
        row_sums(g + r * D, x + r * D, w, D, mh, ml, &sdy, &sdyx)
        ln_coefficients(sdy, sdyx, q[1], D, &q[2], &q[3])
    if w != NULL:
        ln_row_coefficients(st, r1 - r0, cf5)
        ln_backward_cols(g + r0 * D, x + r0 * D, gx + r0 * D, w, pw, pb, D, r1 - r0, D, cf5,
                         st)
        return
    for r in range(r0, r1):
        q = st + 4 * (r - r0)
        ln_backward_apply(g + r * D, x + r * D, gx + r * D, 0, D, w, q[0], q[1], q[2], q[3],
                          pw, pb)


cdef int ln_forward_impl(const floating* x, floating* y, Py_ssize_t M, Py_ssize_t D,
                         const floating* w, const floating* b, double eps, double* mean,
                         double* var, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, c, t, nb, nc = (D + CHUNK - 1) // CHUNK
    cdef Py_ssize_t rb = py_max(1, CHUNK // D)
    cdef double* cm
    cdef floating K
    if M >= n_threads or n_threads <= 1 or nc <= 1:
        # tasks of `rb` rows: all their statistics, then all their outputs (short rows:
        # independent work in flight; the block stays in L1)
        nb = (M + rb - 1) // rb
        for t in prange(nb, schedule="static", num_threads=n_threads):
            if D <= SHORT_ROW:                     # each row's statistics, then its outputs
                if floating is float:
                    cnn_short_forwardf(x, y, w, b, t * rb, py_min((t + 1) * rb, M), D, eps,
                                       mean, var)
                else:
                    cnn_short_forwardd(x, y, w, b, t * rb, py_min((t + 1) * rb, M), D, eps,
                                       mean, var)
            else:                                  # all the block's statistics, then outputs
                for r in range(t * rb, py_min((t + 1) * rb, M)):
                    seg_stats(x + r * D, D, &mean[r], &var[r])
                for r in range(t * rb, py_min((t + 1) * rb, M)):
                    ln_apply(x + r * D, y + r * D, 0, D, w, b, mean[r], inv_std(var[r], eps))
        return CNN_OK
    cm = <double*> malloc(2 * nc * sizeof(double))
    if cm == NULL:
        return CNN_ERR_NOMEM
    for r in range(M):
        K = x[r * D]
        for c in prange(nc, schedule="static", num_threads=n_threads):
            chunk_moments(x + r * D + c * CHUNK, py_min(CHUNK, D - c * CHUNK), K, &cm[2 * c],
                          &cm[2 * c + 1])
        merge_chunks(cm, nc, D, <double> K, &mean[r], &var[r])
        for c in prange(nc, schedule="static", num_threads=n_threads):
            ln_apply(x + r * D, y + r * D, c * CHUNK, py_min((c + 1) * CHUNK, D), w, b,
                     mean[r], inv_std(var[r], eps))
    free(cm)
    return CNN_OK


cdef int ln_backward_impl(const floating* g, const floating* x, floating* gx, Py_ssize_t M,
                          Py_ssize_t D, const floating* w, double eps, double* pw, double* pb,
                          Py_ssize_t P, int n_threads, const double* smean=NULL,
                          const double* srstd=NULL) noexcept nogil:
    """Rows ``[p * M // P, (p + 1) * M // P)`` form part ``p``; with ``w``, part ``p`` adds
    its rows' weight / bias gradient terms, row by row, into ``pw[p * D:]``, ``pb[p * D:]``
    (zero on entry).  With fewer parts than threads, each phase runs over all (row, chunk)
    pairs at once, and the last one over chunks of columns, each sweeping the rows in order
    (the same sums in the same order as one task per part)."""
    cdef Py_ssize_t p, r, c, t, r0, r1, nc = (D + CHUNK - 1) // CHUNK
    cdef double* cm
    cdef double* st
    cdef double sdy, sdyx
    cdef floating K, mh, ml
    # blocks of rb rows: their statistics and sums, then (with a weight) one column sweep
    # adding them to the part's weight / bias sums, read and written once per block (once
    # per row, that read-modify-write of 16 bytes per column was a third of a long row's
    # backward); the same sums in the same order for any rb
    cdef Py_ssize_t rb = py_max(LONG_ROWS if w != NULL else 1, CHUNK // D)
    cdef double* blk
    cdef floating* cf5
    cdef int status = CNN_OK
    cdef int* status_p = &status
    if P >= n_threads or n_threads <= 1 or nc <= 1:
        for p in prange(P, schedule="static", num_threads=n_threads):
            blk = <double*> malloc(9 * rb * sizeof(double))   # st (4) and cf5 (5) per row
            if blk == NULL:
                status_p[0] = CNN_ERR_NOMEM
            else:
                r1 = (p + 1) * M // P
                r0 = p * M // P
                while r0 < r1:                     # blocks of rb rows, in order
                    ln_backward_rows(g, x, gx, r0, py_min(r0 + rb, r1), D, w, eps,
                                     pw + p * D if w != NULL else NULL,
                                     pb + p * D if w != NULL else NULL, blk,
                                     <floating*> (blk + 4 * rb), smean, srstd)
                    r0 = r0 + rb
                free(blk)
        return status
    cm = <double*> malloc(2 * M * nc * sizeof(double))
    st = <double*> malloc(4 * M * sizeof(double))  # per row: mean, rstd, B, C
    cf5 = <floating*> malloc(5 * M * sizeof(floating))
    if cm == NULL or st == NULL or cf5 == NULL:
        free(cm)
        free(st)
        free(cf5)
        return CNN_ERR_NOMEM
    if smean == NULL:
        for t in prange(M * nc, schedule="static", num_threads=n_threads):
            r = t // nc
            c = t % nc
            chunk_moments(x + r * D + c * CHUNK, py_min(CHUNK, D - c * CHUNK), x[r * D],
                          &cm[2 * t], &cm[2 * t + 1])
    for r in range(M):
        if smean != NULL:
            st[4 * r] = smean[r]
            st[4 * r + 1] = srstd[r]
        else:
            merge_chunks(cm + 2 * r * nc, nc, D, <double> x[r * D], &st[4 * r], &st[4 * r + 1])
            st[4 * r + 1] = inv_std(st[4 * r + 1], eps)
    for t in prange(M * nc, schedule="static", num_threads=n_threads):
        r = t // nc
        c = t % nc
        mh = <floating> st[4 * r]                   # split_mean, assigned here: private
        ml = <floating> (st[4 * r] - <double> mh)
        chunk_sums(g + r * D + c * CHUNK, x + r * D + c * CHUNK,
                   w + c * CHUNK if w != NULL else NULL, py_min(CHUNK, D - c * CHUNK), mh, ml,
                   &cm[2 * t], &cm[2 * t + 1])
    for r in range(M):                             # chunk totals in order, as run_sums
        sdy = 0
        sdyx = 0
        for c in range(nc):
            sdy = sdy + cm[2 * (r * nc + c)]
            sdyx = sdyx + cm[2 * (r * nc + c) + 1]
        ln_coefficients(sdy, sdyx, st[4 * r + 1], D, &st[4 * r + 2], &st[4 * r + 3])
    ln_row_coefficients(st, M, cf5)
    for c in prange(nc, schedule="static", num_threads=n_threads):
        for p in range(P):                         # each chunk of columns: rows in order
            r0 = p * M // P
            r1 = (p + 1) * M // P
            if w != NULL:
                t = r0 * D + c * CHUNK
                ln_backward_cols(g + t, x + t, gx + t, w + c * CHUNK, pw + p * D + c * CHUNK,
                                 pb + p * D + c * CHUNK, py_min(CHUNK, D - c * CHUNK), r1 - r0,
                                 D, cf5 + 5 * r0, st + 4 * r0)
            else:
                for r in range(r0, r1):
                    ln_backward_apply(g + r * D, x + r * D, gx + r * D, c * CHUNK,
                                      py_min((c + 1) * CHUNK, D), w, st[4 * r],
                                      st[4 * r + 1], st[4 * r + 2], st[4 * r + 3], NULL, NULL)
    free(cm)
    free(st)
    free(cf5)
    return CNN_OK


# ------------------------------------------------------------------------------------------
# Batch norm: per channel c, the N planes x[n, c, :] of L elements
# ------------------------------------------------------------------------------------------
#
# A channel's elements, in (sample, position) order, are cut into chunks: ``SB`` whole planes
# when a plane is at most ``CHUNK`` elements (``SB = min(CHUNK // L, 128)``: each lane then
# gets at most ~128 + SB adds), else pieces of ``CHUNK`` elements of one plane.  Every phase
# is a prange over the (channel, chunk) tasks: the chunks' moments / sums go to a buffer and
# are merged per channel in chunk order (Chan's update in double, as ``seg_stats``), so the
# arithmetic depends on the shapes only.

ctypedef struct BatchGeom:
    Py_ssize_t N, C, L, SB, PL, NB     # planes per chunk, pieces per plane, chunks per channel


cdef void bn_geom(BatchGeom* bg, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L) noexcept nogil:
    bg.N, bg.C, bg.L = N, C, L
    if L <= CHUNK:
        bg.SB = py_max(1, py_min(CHUNK // L, 128))
        bg.PL = 1
        bg.NB = (N + bg.SB - 1) // bg.SB
    else:
        bg.SB = 1
        bg.PL = (L + CHUNK - 1) // CHUNK
        bg.NB = N * bg.PL


cdef inline void bn_chunk(const BatchGeom* bg, Py_ssize_t b, Py_ssize_t* n0, Py_ssize_t* n1,
                          Py_ssize_t* l0, Py_ssize_t* l1) noexcept nogil:
    """Chunk ``b`` of a channel: planes ``[n0, n1)``, positions ``[l0, l1)`` of each."""
    if bg.PL == 1:
        n0[0] = b * bg.SB
        n1[0] = py_min(n0[0] + bg.SB, bg.N)
        l0[0] = 0
        l1[0] = bg.L
    else:
        n0[0] = b // bg.PL
        n1[0] = n0[0] + 1
        l0[0] = (b % bg.PL) * CHUNK
        l1[0] = py_min(l0[0] + CHUNK, bg.L)


cdef inline void lanes_shifted_sum(const floating* x, Py_ssize_t m, floating K,
                                   floating* acc) noexcept nogil:
    """``acc[k] += x[i] - K`` for ``i = k (mod LANES)`` over ``m`` elements."""
    cdef Py_ssize_t i = 0, k
    while i + LANES <= m:
        for k in range(LANES):
            acc[k] = acc[k] + (x[i + k] - K)
        i = i + LANES
    for k in range(m - i):
        acc[k] = acc[k] + (x[i + k] - K)


cdef inline void lanes_squared_dev(const floating* x, Py_ssize_t m, floating K, floating mf,
                                   floating* acc) noexcept nogil:
    cdef floating d
    cdef Py_ssize_t i = 0, k
    while i + LANES <= m:
        for k in range(LANES):
            d = (x[i + k] - K) - mf
            acc[k] = acc[k] + d * d
        i = i + LANES
    for k in range(m - i):
        d = (x[i + k] - K) - mf
        acc[k] = acc[k] + d * d


cdef double positions_total(const floating* acc, Py_ssize_t L) noexcept nogil:
    """Sum of the ``L`` per-position accumulators in double: 8 interleaved partial sums,
    combined pairwise (a fixed order)."""
    cdef double part[8]
    cdef Py_ssize_t j = 0
    cdef int k
    for k in range(8):
        part[k] = 0
    while j + 8 <= L:
        for k in range(8):
            part[k] = part[k] + <double> acc[j + k]
        j = j + 8
    for k in range(L - j):
        part[k] = part[k] + <double> acc[j + k]
    return ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]))


cdef void bn_chunk_moments_small(const floating* x, const BatchGeom* bg, Py_ssize_t c,
                                 Py_ssize_t n0, Py_ssize_t n1, floating K, double* mean,
                                 double* m2) noexcept nogil:
    """:func:`bn_chunk_moments` for planes of ``L <= POS_MAX`` elements: one accumulator
    per position of the plane (each gets one add per plane of the chunk, at most 128), so
    every plane is one contiguous vectorized loop with no scalar remainder -- with
    ``LANES`` lanes a 7x7 plane left 17 of its 49 elements to a scalar loop, 2.6-3.5x a copy."""
    cdef floating acc[POS_MAX]
    cdef floating mf, d
    cdef Py_ssize_t n, j, L = bg.L, stride = bg.C * bg.L
    cdef const floating* p
    for j in range(L):
        acc[j] = 0
    for n in range(n0, n1):
        p = x + n * stride + c * L
        for j in range(L):
            acc[j] = acc[j] + (p[j] - K)
    mean[0] = positions_total(acc, L) / ((n1 - n0) * L)
    mf = <floating> mean[0]
    for j in range(L):
        acc[j] = 0
    for n in range(n0, n1):
        p = x + n * stride + c * L
        for j in range(L):
            d = (p[j] - K) - mf
            acc[j] = acc[j] + d * d
    m2[0] = positions_total(acc, L)


cdef void bn_chunk_moments(const floating* x, const BatchGeom* bg, Py_ssize_t c, Py_ssize_t b,
                           floating K, double* mean, double* m2) noexcept nogil:
    """Mean and sum of squared deviations of chunk ``b`` of channel ``c`` (relative to
    ``K``): two passes over the chunk (in L1), ``LANES`` accumulators each (planes of at most
    ``POS_MAX`` elements: :func:`bn_chunk_moments_small`)."""
    cdef floating acc[LANES]
    cdef floating mf
    cdef Py_ssize_t n, n0, n1, l0, l1, k, stride = bg.C * bg.L
    cdef const floating* base = x + c * bg.L
    bn_chunk(bg, b, &n0, &n1, &l0, &l1)
    if bg.L <= POS_MAX:
        bn_chunk_moments_small(x, bg, c, n0, n1, K, mean, m2)
        return
    for k in range(LANES):
        acc[k] = 0
    for n in range(n0, n1):
        lanes_shifted_sum(base + n * stride + l0, l1 - l0, K, acc)
    mean[0] = <double> lanes_total(acc) / ((n1 - n0) * (l1 - l0))
    mf = <floating> mean[0]
    for k in range(LANES):
        acc[k] = 0
    for n in range(n0, n1):
        lanes_squared_dev(base + n * stride + l0, l1 - l0, K, mf, acc)
    m2[0] = <double> lanes_total(acc)


cdef void bn_chunk_sums_small(const floating* g, const floating* x, const floating* rm,
                              const BatchGeom* bg, Py_ssize_t c, Py_ssize_t n0, Py_ssize_t n1,
                              floating mh, floating ml, double* sg, double* sgx) noexcept nogil:
    """:func:`bn_chunk_sums` for planes of ``L <= POS_MAX`` elements: one accumulator per
    position, as :func:`bn_chunk_moments_small`."""
    cdef floating a1[POS_MAX]
    cdef floating a2[POS_MAX]
    cdef floating gv, v, af = 0, bbf = 0
    cdef const floating* gp
    cdef const floating* xp
    cdef Py_ssize_t n, j, L = bg.L, off
    if rm != NULL:
        af = rm[2 * c]
        bbf = rm[2 * c + 1]
    for j in range(L):
        a1[j] = 0
        a2[j] = 0
    for n in range(n0, n1):
        off = n * bg.C * L + c * L
        gp = g + off
        xp = x + off
        if rm != NULL:
            for j in range(L):
                gv = gp[j]
                v = ((xp[j] - mh) - ml) * af + bbf
                gv = 0 if v <= 0 else gv
                a1[j] = a1[j] + gv
                a2[j] = a2[j] + gv * ((xp[j] - mh) - ml)
        else:
            for j in range(L):
                gv = gp[j]
                a1[j] = a1[j] + gv
                a2[j] = a2[j] + gv * ((xp[j] - mh) - ml)
    sg[0] = positions_total(a1, L)
    sgx[0] = positions_total(a2, L)


cdef void bn_chunk_sums(const floating* g, const floating* x, const floating* rm,
                        const BatchGeom* bg, Py_ssize_t c, Py_ssize_t b, floating mh,
                        floating ml, double* sg, double* sgx) noexcept nogil:
    """``sum(g)`` and ``sum(g * ((x - mh) - ml))`` over chunk ``b`` of channel ``c``; with
    ``rm`` (a fused ReLU's mask coefficients, see :func:`bn_relu_coefficients`) ``g`` is
    first masked as relu_backward does: 0 where the forward's output was ``<= 0`` --
    recomputed from ``x`` with the forward's arithmetic (the same expression, so the same
    bits) instead of reading that output."""
    cdef floating a1[LANES]
    cdef floating a2[LANES]
    cdef floating gv, v, af = 0, bbf = 0
    cdef const floating* gp
    cdef const floating* xp
    cdef Py_ssize_t n, n0, n1, l0, l1, i, k, m, stride = bg.C * bg.L
    bn_chunk(bg, b, &n0, &n1, &l0, &l1)
    if bg.L <= POS_MAX:
        bn_chunk_sums_small(g, x, rm, bg, c, n0, n1, mh, ml, sg, sgx)
        return
    if rm != NULL:
        af = rm[2 * c]
        bbf = rm[2 * c + 1]
    m = l1 - l0
    for k in range(LANES):
        a1[k] = 0
        a2[k] = 0
    for n in range(n0, n1):
        gp = g + n * stride + c * bg.L + l0
        xp = x + n * stride + c * bg.L + l0
        i = 0
        if rm != NULL:
            while i + LANES <= m:
                for k in range(LANES):
                    gv = gp[i + k]
                    v = ((xp[i + k] - mh) - ml) * af + bbf
                    gv = 0 if v <= 0 else gv
                    a1[k] = a1[k] + gv
                    a2[k] = a2[k] + gv * ((xp[i + k] - mh) - ml)
                i = i + LANES
            for k in range(m - i):
                gv = gp[i + k]
                v = ((xp[i + k] - mh) - ml) * af + bbf
                gv = 0 if v <= 0 else gv
                a1[k] = a1[k] + gv
                a2[k] = a2[k] + gv * ((xp[i + k] - mh) - ml)
            continue
        while i + LANES <= m:
            for k in range(LANES):
                gv = gp[i + k]
                a1[k] = a1[k] + gv
                a2[k] = a2[k] + gv * ((xp[i + k] - mh) - ml)
            i = i + LANES
        for k in range(m - i):
            gv = gp[i + k]
            a1[k] = a1[k] + gv
            a2[k] = a2[k] + gv * ((xp[i + k] - mh) - ml)
    sg[0] = <double> lanes_total(a1)
    sgx[0] = <double> lanes_total(a2)


cdef void bn_merge_channel(const double* cm, const BatchGeom* bg, Py_ssize_t c, double K,
                           double* mean, double* var) noexcept nogil:
    """Channel ``c``'s mean and biased variance from its chunks' moments, in chunk order."""
    cdef double n = 0, mu = 0, M2 = 0
    cdef Py_ssize_t b, n0, n1, l0, l1, off = 2 * c * bg.NB
    for b in range(bg.NB):
        bn_chunk(bg, b, &n0, &n1, &l0, &l1)
        chan_merge(&n, &mu, &M2, <double> ((n1 - n0) * (l1 - l0)), cm[off + 2 * b],
                   cm[off + 2 * b + 1])
    mean[0] = K + mu
    var[0] = M2 / n if M2 > 0 else 0.0 * M2          # (NaN stays NaN)


cdef inline void bn_apply_residual(const floating* x, floating* y, const floating* r,
                                   Py_ssize_t m, floating mh, floating ml, floating a,
                                   floating bb, bint relu) noexcept nogil:
    """``m`` elements: ``v = ((x - mh) - ml) * a + bb`` (batch norm's output, rounded as
    the unfused kernel rounds it), then ``v + r`` (the residual Add), then, with ``relu``,
    ``max(v, 0)`` as relu computes it -- each a separately rounded step, so the result is
    bit-identical to batch norm, Add and ReLU run one after the other."""
    cdef Py_ssize_t i
    cdef floating v
    if relu:
        for i in range(m):
            v = ((x[i] - mh) - ml) * a + bb
            v = v + r[i]
            y[i] = 0 if v < 0 else v
    else:
        for i in range(m):
            v = ((x[i] - mh) - ml) * a + bb
            y[i] = v + r[i]


cdef void bn_apply_chunk(const floating* x, floating* y, const BatchGeom* bg, Py_ssize_t c,
                         Py_ssize_t b, floating mh, floating ml, floating a,
                         floating bb, bint relu, const floating* r) noexcept nogil:
    """``y = ((x - mh) - ml) * a + bb`` over chunk ``b`` of channel ``c``; ``r``: then
    ``y + r`` (a residual added, rounded as a separate add); ``relu``: then ``max(y, 0)``
    as relu computes it (NaN and -0.0 pass through)."""
    cdef Py_ssize_t n, n0, n1, l0, l1, i, off
    cdef floating v
    bn_chunk(bg, b, &n0, &n1, &l0, &l1)
    for n in range(n0, n1):
        off = n * bg.C * bg.L + c * bg.L
        if r != NULL:
            bn_apply_residual(x + off + l0, y + off + l0, r + off + l0, l1 - l0, mh, ml, a, bb,
                              relu)
        elif relu:
            for i in range(off + l0, off + l1):
                v = ((x[i] - mh) - ml) * a + bb
                y[i] = 0 if v < 0 else v
        else:
            for i in range(off + l0, off + l1):
                y[i] = ((x[i] - mh) - ml) * a + bb


cdef void bn_backward_chunk(const floating* g, const floating* x, const floating* rm,
                            floating* gx, const BatchGeom* bg, Py_ssize_t c, Py_ssize_t b,
                            floating mh, floating ml, floating a, floating bf,
                            floating cf) noexcept nogil:
    """``grad_x = g * a + (((x - mh) - ml) * bf + cf)`` over chunk ``b`` of channel ``c``
    (``rm``: ``g`` masked by a fused ReLU first, see :func:`bn_chunk_sums`)."""
    cdef Py_ssize_t n, n0, n1, l0, l1, i, off
    cdef floating gv, v, af = 0, bbf = 0
    bn_chunk(bg, b, &n0, &n1, &l0, &l1)
    if rm != NULL:
        af = rm[2 * c]
        bbf = rm[2 * c + 1]
    for n in range(n0, n1):
        off = n * bg.C * bg.L + c * bg.L
        if rm != NULL:
            for i in range(off + l0, off + l1):
                gv = g[i]
                v = ((x[i] - mh) - ml) * af + bbf
                gv = 0 if v <= 0 else gv
                gx[i] = gv * a + (((x[i] - mh) - ml) * bf + cf)
        else:
            for i in range(off + l0, off + l1):
                gx[i] = g[i] * a + (((x[i] - mh) - ml) * bf + cf)


cdef inline void bn_coefficients(double mean, double var, double eps, double wc, double sg,
                                 double sgxhat, double count, bint training, floating* mh,
                                 floating* ml, floating* a, floating* bf,
                                 floating* cf) noexcept nogil:
    """``grad_x = g * a + (((x - mh) - ml) * bf + cf)`` for one channel (``training``: the
    batch's statistics, else fixed ones: an affine map)."""
    cdef double rstd = inv_std(var, eps)
    split_mean(mean, mh, ml)
    a[0] = <floating> (rstd * wc)
    if training:
        bf[0] = <floating> (-wc * rstd * rstd * sgxhat / count)
        cf[0] = <floating> (-wc * rstd * sg / count)
    else:
        bf[0] = 0
        cf[0] = 0


cdef void bn_sum_channel(const double* cm, const BatchGeom* bg, Py_ssize_t c, double rstd,
                         double* sg, double* sgxhat) noexcept nogil:
    """Channel ``c``'s chunk sums added in chunk order; ``sgxhat`` scaled by ``rstd``."""
    cdef double s1 = 0, s2 = 0
    cdef Py_ssize_t b
    for b in range(bg.NB):
        s1 = s1 + cm[2 * (c * bg.NB + b)]
        s2 = s2 + cm[2 * (c * bg.NB + b) + 1]
    sg[0] = s1
    sgxhat[0] = s2 * rstd


cdef void bn_forward_channel(const floating* x, floating* y, const BatchGeom* bg,
                             Py_ssize_t c, const floating* w, const floating* bias, double eps,
                             double* mean, double* var, bint stats_given,
                             double* cm, bint relu, const floating* r) noexcept nogil:
    """One channel: its statistics (unless given; chunk moments into ``cm``, merged in
    order), then its output -- while the channel is in cache."""
    cdef Py_ssize_t b
    cdef floating mh, ml, a, bb
    if not stats_given:
        for b in range(bg.NB):
            bn_chunk_moments(x, bg, c, b, x[c * bg.L], &cm[2 * (c * bg.NB + b)],
                             &cm[2 * (c * bg.NB + b) + 1])
        bn_merge_channel(cm, bg, c, <double> x[c * bg.L], &mean[c], &var[c])
    split_mean(mean[c], &mh, &ml)
    a = <floating> (inv_std(var[c], eps) * (<double> w[c] if w != NULL else 1.0))
    bb = bias[c] if bias != NULL else 0
    for b in range(bg.NB):
        bn_apply_chunk(x, y, bg, c, b, mh, ml, a, bb, relu, r)


cdef void bn_backward_channel(const floating* g, const floating* x, const floating* rm,
                              floating* gx,
                              const BatchGeom* bg, Py_ssize_t c, const floating* w,
                              double eps, const double* mean, const double* var, double* sg,
                              double* sgxhat, bint sums_given, double count, bint training,
                              double* cm) noexcept nogil:
    """One channel: its gradient sums (unless given), then its input gradient."""
    cdef Py_ssize_t b
    cdef floating mh, ml, a, bf, cf
    if not sums_given:
        split_mean(mean[c], &mh, &ml)
        for b in range(bg.NB):
            bn_chunk_sums(g, x, rm, bg, c, b, mh, ml, &cm[2 * (c * bg.NB + b)],
                          &cm[2 * (c * bg.NB + b) + 1])
        bn_sum_channel(cm, bg, c, inv_std(var[c], eps), &sg[c], &sgxhat[c])
    if gx == NULL:
        return
    bn_coefficients(mean[c], var[c], eps, <double> w[c] if w != NULL else 1.0, sg[c],
                    sgxhat[c], count, training, &mh, &ml, &a, &bf, &cf)
    for b in range(bg.NB):
        bn_backward_chunk(g, x, rm, gx, bg, c, b, mh, ml, a, bf, cf)


cdef void bn_apply_planes(const floating* x, floating* y, const BatchGeom* bg, Py_ssize_t q0,
                          Py_ssize_t q1, const floating* cf, bint relu,
                          const floating* r) noexcept nogil:
    """Planes ``[q0, q1)`` of ``x`` seen as ``(N * C, L)`` in memory order (plane ``q`` is
    channel ``q % C``): ``y = ((x - mh) - ml) * a + bb`` with the channel's ``cf[4c:4c+4]``
    = (mh, ml, a, bb) -- :func:`bn_apply_chunk`'s arithmetic, element by element."""
    cdef Py_ssize_t q, i, off, c, L = bg.L
    cdef floating mh, ml, a, bb, v
    for q in range(q0, q1):
        c = q % bg.C
        mh = cf[4 * c]
        ml = cf[4 * c + 1]
        a = cf[4 * c + 2]
        bb = cf[4 * c + 3]
        off = q * L
        if r != NULL:
            bn_apply_residual(x + off, y + off, r + off, L, mh, ml, a, bb, relu)
        elif relu:
            for i in range(off, off + L):
                v = ((x[i] - mh) - ml) * a + bb
                y[i] = 0 if v < 0 else v
        else:
            for i in range(off, off + L):
                y[i] = ((x[i] - mh) - ml) * a + bb


cdef void bn_backward_planes(const floating* g, const floating* x, const floating* rm,
                             floating* gx, const BatchGeom* bg, Py_ssize_t q0, Py_ssize_t q1,
                             const floating* cf) noexcept nogil:
    """:func:`bn_backward_chunk`'s arithmetic over planes ``[q0, q1)`` in memory order, with
    the channel's ``cf[5c:5c+5]`` = (mh, ml, a, bf, cf) (``rm``: a fused ReLU's mask)."""
    cdef Py_ssize_t q, i, off, c, L = bg.L
    cdef floating mh, ml, a, bf, cc, gv, v, af, bbf
    for q in range(q0, q1):
        c = q % bg.C
        mh = cf[5 * c]
        ml = cf[5 * c + 1]
        a = cf[5 * c + 2]
        bf = cf[5 * c + 3]
        cc = cf[5 * c + 4]
        off = q * L
        if rm != NULL:
            af = rm[2 * c]
            bbf = rm[2 * c + 1]
            for i in range(off, off + L):
                gv = g[i]
                v = ((x[i] - mh) - ml) * af + bbf
                gv = 0 if v <= 0 else gv
                gx[i] = gv * a + (((x[i] - mh) - ml) * bf + cc)
        else:
            for i in range(off, off + L):
                gx[i] = g[i] * a + (((x[i] - mh) - ml) * bf + cc)


cdef int bn_apply_small(const floating* x, floating* y, const BatchGeom* bg,
                        const floating* w, const floating* bias, double eps,
                        const double* mean, const double* var, int n_threads,
                        bint relu, const floating* r) noexcept nogil:
    """Batch norm's output for planes of at most ``POS_MAX`` elements: in memory order, tasks
    of whole planes (written per channel, a 7x7 plane's 196 bytes left partial cache lines
    that the next channel's pass had to fetch again: the store-bound half of the forward)."""
    cdef Py_ssize_t c, t, nq = bg.N * bg.C, qb = py_max(1, CHUNK // bg.L)
    cdef Py_ssize_t nt = (nq + qb - 1) // qb
    cdef floating* cf = <floating*> malloc(4 * bg.C * sizeof(floating))
    if cf == NULL:
        return CNN_ERR_NOMEM
    for c in range(bg.C):
        split_mean(mean[c], &cf[4 * c], &cf[4 * c + 1])
        cf[4 * c + 2] = <floating> (inv_std(var[c], eps) * (<double> w[c] if w != NULL else 1.0))
        cf[4 * c + 3] = bias[c] if bias != NULL else 0
    for t in prange(nt, schedule="static", num_threads=n_threads):
        bn_apply_planes(x, y, bg, t * qb, py_min((t + 1) * qb, nq), cf, relu, r)
    free(cf)
    return CNN_OK


cdef int bn_forward_impl(const floating* x, floating* y, const BatchGeom* bg,
                         const floating* w, const floating* bias, double eps, double* mean,
                         double* var, bint stats_given, int n_threads,
                         bint relu, const floating* r) noexcept nogil:
    """Statistics (unless given; ``y`` NULL: only them) and output (``r``: plus a residual,
    ``y + r``; ``relu``: with a ReLU fused, ``max(y, 0)``).  At least as many
    channels as threads and planes of at least ``CHANNEL_L`` elements: a task per channel
    (one parallel region; the channel stays in cache, so its input is read from memory
    once -- ResNet's 14x14 planes too: 128x32x14x14 backward from a cold cache 0.47 ->
    0.37 ms at 2 threads).  Otherwise each phase over all (channel, chunk) tasks (smaller
    planes: a channel's writes would leave partial cache lines), the same arithmetic."""
    cdef Py_ssize_t t, c, b, T = bg.C * bg.NB
    cdef double* cm = NULL
    cdef floating mh, ml, a, bb
    if not stats_given:
        cm = <double*> malloc(2 * T * sizeof(double))
        if cm == NULL:
            return CNN_ERR_NOMEM
    if y != NULL and bg.L >= CHANNEL_L and (bg.C >= n_threads or n_threads <= 1):
        for c in prange(bg.C, schedule="static", num_threads=n_threads):
            bn_forward_channel(x, y, bg, c, w, bias, eps, mean, var, stats_given, cm, relu,
                               r)
        free(cm)
        return CNN_OK
    if not stats_given:
        for t in prange(T, schedule="static", num_threads=n_threads):
            c = t // bg.NB
            b = t % bg.NB
            bn_chunk_moments(x, bg, c, b, x[c * bg.L], &cm[2 * t], &cm[2 * t + 1])
        for c in range(bg.C):                      # tiny: no second parallel region
            bn_merge_channel(cm, bg, c, <double> x[c * bg.L], &mean[c], &var[c])
        free(cm)
    if y == NULL:
        return CNN_OK
    if bg.L <= POS_MAX:
        return bn_apply_small(x, y, bg, w, bias, eps, mean, var, n_threads, relu, r)
    for t in prange(T, schedule="static", num_threads=n_threads):
        c = t // bg.NB
        b = t % bg.NB
        mh = <floating> mean[c]                     # split_mean (assigned here: private)
        ml = <floating> (mean[c] - <double> mh)
        a = <floating> (inv_std(var[c], eps) * (<double> w[c] if w != NULL else 1.0))
        bb = bias[c] if bias != NULL else 0
        bn_apply_chunk(x, y, bg, c, b, mh, ml, a, bb, relu, r)
    return CNN_OK


cdef floating* bn_relu_coefficients(const BatchGeom* bg, const floating* w,
                                    const floating* bias, double eps,
                                    const double* var) noexcept nogil:
    """A fused ReLU's mask coefficients (NULL: out of memory): per channel ``(a, bb)``
    rounded exactly as the forward rounds them (:func:`bn_forward_channel`,
    :func:`bn_apply_small`) from the forward's ``w`` / ``bias`` (NULL: 1 / 0), so that
    ``((x - mh) - ml) * a + bb`` is the forward's output before its ReLU, bit for bit."""
    cdef Py_ssize_t c
    cdef floating* rm = <floating*> malloc(2 * bg.C * sizeof(floating))
    if rm == NULL:
        return NULL
    for c in range(bg.C):
        rm[2 * c] = <floating> (inv_std(var[c], eps) * (<double> w[c] if w != NULL else 1.0))
        rm[2 * c + 1] = bias[c] if bias != NULL else 0
    return rm


cdef int bn_backward_small(const floating* g, const floating* x, const floating* rm,
                           floating* gx, const BatchGeom* bg, const floating* w, double eps,
                           const double* mean, const double* var, const double* sg,
                           const double* sgxhat, double count, bint training,
                           int n_threads) noexcept nogil:
    """The input gradient for planes of at most ``POS_MAX`` elements, in memory order (see
    :func:`bn_apply_small`); the coefficients as :func:`bn_coefficients` rounds them."""
    cdef Py_ssize_t c, t, nq = bg.N * bg.C, qb = py_max(1, CHUNK // bg.L)
    cdef Py_ssize_t nt = (nq + qb - 1) // qb
    cdef floating* cf = <floating*> malloc(5 * bg.C * sizeof(floating))
    if cf == NULL:
        return CNN_ERR_NOMEM
    for c in range(bg.C):
        bn_coefficients(mean[c], var[c], eps, <double> w[c] if w != NULL else 1.0, sg[c],
                        sgxhat[c], count, training, &cf[5 * c], &cf[5 * c + 1], &cf[5 * c + 2],
                        &cf[5 * c + 3], &cf[5 * c + 4])
    for t in prange(nt, schedule="static", num_threads=n_threads):
        bn_backward_planes(g, x, rm, gx, bg, t * qb, py_min((t + 1) * qb, nq), cf)
    free(cf)
    return CNN_OK


cdef int bn_backward_impl(const floating* g, const floating* x, const floating* rm,
                          floating* gx,
                          const BatchGeom* bg, const floating* w, double eps,
                          const double* mean, const double* var, double* sg, double* sgxhat,
                          bint sums_given, double count, bint training,
                          int n_threads) noexcept nogil:
    """Per channel ``sg = sum(g)`` and ``sgxhat = sum(g * xhat)`` (unless given), then
    ``grad_x = w * rstd * (g - sg / count - xhat * sgxhat / count)`` (``training``) or
    ``w * rstd * g`` (``gx`` NULL: only the sums).  Work split as the forward's."""
    cdef Py_ssize_t t, c, b, T = bg.C * bg.NB
    cdef double* cm = NULL
    cdef floating mh, ml, a, bf, cf
    cdef double rstd, wc
    if not sums_given:
        cm = <double*> malloc(2 * T * sizeof(double))
        if cm == NULL:
            return CNN_ERR_NOMEM
    if gx != NULL and bg.L >= CHANNEL_L and (bg.C >= n_threads or n_threads <= 1):
        for c in prange(bg.C, schedule="static", num_threads=n_threads):
            bn_backward_channel(g, x, rm, gx, bg, c, w, eps, mean, var, sg, sgxhat, sums_given,
                                count, training, cm)
        free(cm)
        return CNN_OK
    if not sums_given:
        for t in prange(T, schedule="static", num_threads=n_threads):
            c = t // bg.NB
            b = t % bg.NB
            mh = <floating> mean[c]
            ml = <floating> (mean[c] - <double> mh)
            bn_chunk_sums(g, x, rm, bg, c, b, mh, ml, &cm[2 * t], &cm[2 * t + 1])
        for c in range(bg.C):
            bn_sum_channel(cm, bg, c, inv_std(var[c], eps), &sg[c], &sgxhat[c])
        free(cm)
    if gx == NULL:
        return CNN_OK
    if bg.L <= POS_MAX:
        return bn_backward_small(g, x, rm, gx, bg, w, eps, mean, var, sg, sgxhat, count,
                                 training, n_threads)
    for t in prange(T, schedule="static", num_threads=n_threads):
        c = t // bg.NB
        b = t % bg.NB
        rstd = inv_std(var[c], eps)
        wc = <double> w[c] if w != NULL else 1.0
        mh = <floating> mean[c]
        ml = <floating> (mean[c] - <double> mh)
        a = <floating> (rstd * wc)
        if training:
            bf = <floating> (-wc * rstd * rstd * sgxhat[c] / count)
            cf = <floating> (-wc * rstd * sg[c] / count)
        else:
            bf = 0
            cf = 0
        bn_backward_chunk(g, x, rm, gx, bg, c, b, mh, ml, a, bf, cf)
    return CNN_OK


# ------------------------------------------------------------------------------------------
# Thin def wrappers (validated by cnncore.ops.norm; empty inputs never get here)
# ------------------------------------------------------------------------------------------

cdef inline const floating* opt_ptr(const floating[::1] a) noexcept:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL


def group_norm_forward(const floating[::1] x, floating[::1] y_out, const floating[::1] weight,
                       const floating[::1] bias, Py_ssize_t n_seg, Py_ssize_t G, Py_ssize_t Cg,
                       Py_ssize_t S, double eps, double[::1] mean, double[::1] var,
                       bint stats_given, int n_threads):
    """Group norm of ``x`` seen as ``(n_seg, Cg * S)`` segments (segment ``s`` is group
    ``s % G``, channels ``(s % G) * Cg + j``); ``weight`` / ``bias`` of ``G * Cg`` channels
    or None.  ``mean`` / ``var`` (one per segment) are outputs, or inputs with
    ``stats_given``."""
    cdef GroupGeom gg
    gg.n_seg, gg.G, gg.Cg, gg.S, gg.L = n_seg, G, Cg, S, Cg * S
    cdef const floating* w = opt_ptr(weight)
    cdef const floating* b = opt_ptr(bias)
    cdef int status
    with nogil:
        status = gn_forward_impl(&x[0], &y_out[0], &gg, w, b, eps, &mean[0], &var[0],
                                 stats_given, n_threads)
    check_status(status, "group_norm")


def group_norm_backward(const floating[::1] grad_output, const floating[::1] x,
                        floating[::1] grad_x, const floating[::1] weight, Py_ssize_t n_seg,
                        Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t S, double eps,
                        double[::1] mean, double[::1] var, bint stats_given,
                        double[::1] db_out, double[::1] dw_out, int n_threads,
                        bint saved=False):
    """Input gradient of group norm into ``grad_x``, and per plane ``(segment, j)``:
    ``db_out = sum(g)``, ``dw_out = rstd * sum(g * (x - mean))`` (the bias and weight
    gradients are their sums over the batch).  ``mean`` / ``var``: outputs (the statistics
    recomputed from ``x``), or the running statistics with ``stats_given`` (an affine map),
    or with ``saved`` the forward's mean and ``rstd = 1 / sqrt(var + eps)`` per segment
    (``var`` holds rstd; nothing is recomputed: bit-identical to recomputing when they are
    the forward's)."""
    cdef GroupGeom gg
    gg.n_seg, gg.G, gg.Cg, gg.S, gg.L = n_seg, G, Cg, S, Cg * S
    cdef const floating* w = opt_ptr(weight)
    cdef int status
    with nogil:
        status = gn_backward_impl(&grad_output[0], &x[0], &grad_x[0], &gg, w, eps, &mean[0],
                                  &var[0], stats_given, saved, &db_out[0], &dw_out[0],
                                  n_threads)
    check_status(status, "group_norm_backward")


def layer_norm_forward(const floating[::1] x, floating[::1] y_out, const floating[::1] weight,
                       const floating[::1] bias, Py_ssize_t M, Py_ssize_t D, double eps,
                       double[::1] mean, double[::1] var, int n_threads):
    """Layer norm of ``M`` rows of ``D`` elements; ``weight`` / ``bias`` of ``D`` or None."""
    cdef const floating* w = opt_ptr(weight)
    cdef const floating* b = opt_ptr(bias)
    cdef int status
    with nogil:
        status = ln_forward_impl(&x[0], &y_out[0], M, D, w, b, eps, &mean[0], &var[0],
                                 n_threads)
    check_status(status, "layer_norm")


def layer_norm_backward(const floating[::1] grad_output, const floating[::1] x,
                        floating[::1] grad_x, const floating[::1] weight, Py_ssize_t M,
                        Py_ssize_t D, double eps, double[::1] part_w, double[::1] part_b,
                        Py_ssize_t P, int n_threads, const double[::1] mean=None,
                        const double[::1] rstd=None):
    """Input gradient of layer norm into ``grad_x``; with ``weight``, the ``P`` parts' sums
    of the weight and bias gradients into ``part_w`` / ``part_b`` (``(P, D)``, zeroed).
    ``mean`` / ``rstd`` (``M`` each, both or neither): the forward's statistics per row,
    used instead of recomputing them (bit-identical when they are the forward's)."""
    cdef const floating* w = opt_ptr(weight)
    cdef double* pw = &part_w[0] if w != NULL else NULL
    cdef double* pb = &part_b[0] if w != NULL else NULL
    cdef const double* sm = NULL
    cdef const double* sr = NULL
    if (mean is None) != (rstd is None) or (
        mean is not None and (mean.shape[0] != M or rstd.shape[0] != M)
    ):
        raise ValueError(
            f"layer_norm_backward(): mean and rstd must both be None or both have M = {M} "
            f"elements"
        )
    if mean is not None:
        sm = &mean[0]
        sr = &rstd[0]
    cdef int status
    with nogil:
        status = ln_backward_impl(&grad_output[0], &x[0], &grad_x[0], M, D, w, eps, pw, pb, P,
                                  n_threads, sm, sr)
    check_status(status, "layer_norm_backward")


def batch_norm_forward(const floating[::1] x, floating[::1] y_out, const floating[::1] weight,
                       const floating[::1] bias, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                       double eps, double[::1] mean, double[::1] var, bint stats_given,
                       int n_threads, bint relu=False, const floating[::1] residual=None):
    """Batch norm of ``x`` seen as ``(N, C, L)``: ``y = (x - mean) / sqrt(var + eps) *
    weight + bias`` per channel (``weight`` / ``bias`` of ``C`` or None).  ``mean`` /
    ``var`` (biased) are outputs -- the batch's statistics -- or inputs with
    ``stats_given``; ``y_out`` None: only compute them.  ``residual`` (``x``'s size):
    ``y = y + residual`` (an Add fused); ``relu``: a ReLU fused, ``y = max(y, 0)`` (each
    bit-identical to the separate op applied after)."""
    cdef BatchGeom bg
    bn_geom(&bg, N, C, L)
    cdef const floating* w = opt_ptr(weight)
    cdef const floating* b = opt_ptr(bias)
    cdef floating* y = &y_out[0] if y_out is not None else NULL
    cdef const floating* r = NULL
    if residual is not None:
        if residual.shape[0] != x.shape[0] or y == NULL:
            raise ValueError(
                f"batch_norm_forward(): residual must have x's size {x.shape[0]} and y_out "
                f"must be given. Received: residual of size {residual.shape[0]}"
            )
        r = &residual[0]
    cdef int status
    with nogil:
        status = bn_forward_impl(&x[0], y, &bg, w, b, eps, &mean[0], &var[0], stats_given,
                                 n_threads, relu, r)
    check_status(status, "batch_norm")


def batch_norm_backward(const floating[::1] grad_output, const floating[::1] x,
                        floating[::1] grad_x, const floating[::1] weight, Py_ssize_t N,
                        Py_ssize_t C, Py_ssize_t L, double eps, const double[::1] mean,
                        const double[::1] var, double[::1] sum_g, double[::1] sum_gxhat,
                        bint sums_given, double count, bint training, int n_threads,
                        bint relu=False, const floating[::1] relu_weight=None,
                        const floating[::1] relu_bias=None):
    """Per channel ``sum_g = sum(g)`` (the bias gradient) and ``sum_gxhat = sum(g * xhat)``
    (the weight gradient) -- outputs, or inputs over ``count`` elements per channel with
    ``sums_given`` -- and the input gradient into ``grad_x`` (None: only the sums).
    ``relu``: the forward had a ReLU fused (``relu=True``) and used ``relu_weight`` /
    ``relu_bias`` (its ``weight`` / ``bias``, or None) with these ``mean`` / ``var``;
    ``grad_output`` is then the gradient w.r.t. the ReLU's output, masked as relu_backward
    does (0 where that output is ``<= 0``, recomputed from ``x`` bit for bit) before the
    rest -- bit-identical to relu_backward first."""
    cdef BatchGeom bg
    bn_geom(&bg, N, C, L)
    cdef const floating* w = opt_ptr(weight)
    cdef floating* gx = &grad_x[0] if grad_x is not None else NULL
    cdef floating* rm = NULL
    cdef int status = CNN_OK
    for arr, what in ((relu_weight, "relu_weight"), (relu_bias, "relu_bias")):
        if arr is not None and arr.shape[0] != C:
            raise ValueError(
                f"batch_norm_backward(): {what} must have C = {C} elements. Received: "
                f"{arr.shape[0]}"
            )
    cdef const floating* rw = opt_ptr(relu_weight)
    cdef const floating* rb = opt_ptr(relu_bias)
    with nogil:
        if relu:
            rm = bn_relu_coefficients(&bg, rw, rb, eps, &var[0])
            if rm == NULL:
                status = CNN_ERR_NOMEM
        if status == CNN_OK:
            status = bn_backward_impl(&grad_output[0], &x[0], rm, gx, &bg, w, eps, &mean[0],
                                      &var[0], &sum_g[0], &sum_gxhat[0], sums_given, count,
                                      training, n_threads)
        free(rm)
    check_status(status, "batch_norm_backward")
