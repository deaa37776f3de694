"""Resizing kernels: nearest and bilinear interpolation of (planes, H, W) arrays, the
gradient of both (a gather), pixel_shuffle and pixel_unshuffle.

The coordinate tables (source indices and weights per output row and column, PyTorch's
rules) are computed by ``cnncore.ops.resize`` and are trusted here: every index is inside
its axis.  Interpolation is separable: output ``(oh, ow)`` is
``sum_a wh_a * (sum_b ww_b * x[ih_a, iw_b])`` -- each source row is interpolated along W
first (a row is reused by consecutive output rows), then rows are blended.

The gradient is the transpose, computed as a gather: ``grad_x[h, w] = sum_k wh_k *
(sum_j ww_j * grad_y[oh_k, ow_j])`` over the lists of output rows / columns that read input
row ``h`` / column ``w`` (in a fixed order: by output index, then tap): first along W for the
output rows a block of input rows needs (blocks of columns, every list entry of a block in
registers, its sources permuted from a window planned once per call), then along H (a row's
first term stored, not added to a zero-filled row).  No output is scattered, so no two
threads ever add into the same element.

Tasks: (plane, block of rows) -- output rows in the forward, input rows in the backward, a
plane's row ``h`` of the coarse side for pixel_(un)shuffle.  Each output element is written
by one task with a sequence of operations fixed by the shapes: bit-identical for any thread
count.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cnncore._shared cimport CNN_ERR_NOMEM, CNN_OK, check_status, floating, py_max, py_min

cdef enum:
    TASK_ELEMS = 16384        # output elements per task (rows are never split)
    RS_AHEAD = 2048           # the backward prefetches grad_output this many bytes ahead


cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    #if defined(__AVX512F__) || defined(__AVX2__)
    #include <immintrin.h>
    #endif
    /* Row loops of the interpolation along W (the arrays never overlap).  The source
       indices of a block of outputs are close together (a few input elements for 16
       outputs when upsampling), so where the AVX-512 build runs, a block whose sources fit
       in one vector (two for the gradient's cnn_wpass) is loaded once and permuted in
       registers instead of gathered element by element (AVX2: float blocks of 8 in one
       vector); other blocks take the scalar loop.  Each block's path depends on the
       indices only.  cnn_gather_add_s skips the entries equal to `pad` (padding of the
       per-column lists). */
    #define CNN_SCALAR_ROWS(SUF, T)                                                         \
    static inline void cnn_gather_row_s##SUF(T* y, const T* x, const int32_t* ix,          \
                                             ptrdiff_t a, ptrdiff_t b) {                   \
        for (ptrdiff_t i = a; i < b; i++) y[i] = x[ix[i]];                                  \
    }                                                                                      \
    static inline void cnn_lerp_row_s##SUF(T* y, const T* x, const int32_t* i0,            \
                                           const int32_t* i1, const T* w0, const T* w1,    \
                                           ptrdiff_t a, ptrdiff_t b) {                     \
        for (ptrdiff_t i = a; i < b; i++) y[i] = x[i0[i]] * w0[i] + x[i1[i]] * w1[i];       \
    }                                                                                      \
    static inline void cnn_gather_add_s##SUF(T* t, const T* w, const int32_t* ix,          \
                                             const T* src, int32_t pad, ptrdiff_t a,       \
                                             ptrdiff_t b) {                                \
        for (ptrdiff_t i = a; i < b; i++)                                                  \
            if (ix[i] != pad) t[i] += w[i] * src[ix[i]];                                    \
    }
    CNN_SCALAR_ROWS(f, float)
    CNN_SCALAR_ROWS(d, double)
    static inline ptrdiff_t cnn_min_pd(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

    #if defined(__AVX512F__) && defined(__AVX512VL__)
    #define CNN_AVX512_ROWS 1
    static inline __mmask16 cnn_m16(ptrdiff_t c) {
        return c <= 0 ? (__mmask16) 0 : c >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << c) - 1);
    }
    static inline __mmask8 cnn_m8(ptrdiff_t c) {
        return c <= 0 ? (__mmask8) 0 : c >= 8 ? (__mmask8) 0xFF : (__mmask8) ((1u << c) - 1);
    }
    static void cnn_gather_rowf(float* __restrict y, const float* __restrict x,
                                const int32_t* __restrict ix, ptrdiff_t n, ptrdiff_t nx,
                                const int32_t* __restrict plan) {
        for (ptrdiff_t i = 0; i < n; i += 16) {
            __mmask16 m = cnn_m16(n - i);
            __m512i v = _mm512_maskz_loadu_epi32(m, ix + i);
            int32_t b = plan[i / 16];
            if (b >= 0) {
                __m512 win = _mm512_maskz_loadu_ps(cnn_m16(nx - b), x + b);
                __m512i r = _mm512_sub_epi32(v, _mm512_set1_epi32(b));
                _mm512_mask_storeu_ps(y + i, m, _mm512_permutexvar_ps(r, win));
            } else {
                cnn_gather_row_sf(y, x, ix, i, cnn_min_pd(i + 16, n));
            }
        }
    }
    static void cnn_lerp_rowf(float* __restrict y, const float* __restrict x,
                              const int32_t* __restrict i0, const int32_t* __restrict i1,
                              const float* __restrict w0, const float* __restrict w1,
                              ptrdiff_t n, ptrdiff_t nx, const int32_t* __restrict plan) {
        for (ptrdiff_t i = 0; i < n; i += 16) {
            __mmask16 m = cnn_m16(n - i);
            __m512i v0 = _mm512_maskz_loadu_epi32(m, i0 + i);
            __m512i v1 = _mm512_maskz_loadu_epi32(m, i1 + i);
            int32_t b = plan[i / 16];
            if (b >= 0) {
                __m512 win = _mm512_maskz_loadu_ps(cnn_m16(nx - b), x + b);
                __m512i bb = _mm512_set1_epi32(b);
                __m512 p0 = _mm512_permutexvar_ps(_mm512_sub_epi32(v0, bb), win);
                __m512 p1 = _mm512_permutexvar_ps(_mm512_sub_epi32(v1, bb), win);
                __m512 r = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(m, w1 + i),
                                           _mm512_mul_ps(p0, _mm512_maskz_loadu_ps(m, w0 + i)));
                _mm512_mask_storeu_ps(y + i, m, r);
            } else {
                cnn_lerp_row_sf(y, x, i0, i1, w0, w1, i, cnn_min_pd(i + 16, n));
            }
        }
    }
    static void cnn_gather_rowd(double* __restrict y, const double* __restrict x,
                                const int32_t* __restrict ix, ptrdiff_t n, ptrdiff_t nx,
                                const int32_t* __restrict plan) {
        for (ptrdiff_t i = 0; i < n; i += 8) {
            __mmask8 m = cnn_m8(n - i);
            __m512i v = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, ix + i));
            long long b = plan[i / 8];
            if (b >= 0) {
                __m512d win = _mm512_maskz_loadu_pd(cnn_m8(nx - b), x + b);
                __m512i r = _mm512_sub_epi64(v, _mm512_set1_epi64(b));
                _mm512_mask_storeu_pd(y + i, m, _mm512_permutexvar_pd(r, win));
            } else {
                cnn_gather_row_sd(y, x, ix, i, cnn_min_pd(i + 8, n));
            }
        }
    }
    static void cnn_lerp_rowd(double* __restrict y, const double* __restrict x,
                              const int32_t* __restrict i0, const int32_t* __restrict i1,
                              const double* __restrict w0, const double* __restrict w1,
                              ptrdiff_t n, ptrdiff_t nx, const int32_t* __restrict plan) {
        for (ptrdiff_t i = 0; i < n; i += 8) {
            __mmask8 m = cnn_m8(n - i);
            __m512i v0 = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, i0 + i));
            __m512i v1 = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, i1 + i));
            long long b = plan[i / 8];
            if (b >= 0) {
                __m512d win = _mm512_maskz_loadu_pd(cnn_m8(nx - b), x + b);
                __m512i bb = _mm512_set1_epi64(b);
                __m512d p0 = _mm512_permutexvar_pd(_mm512_sub_epi64(v0, bb), win);
                __m512d p1 = _mm512_permutexvar_pd(_mm512_sub_epi64(v1, bb), win);
                __m512d r = _mm512_fmadd_pd(p1, _mm512_maskz_loadu_pd(m, w1 + i),
                                            _mm512_mul_pd(p0, _mm512_maskz_loadu_pd(m, w0 + i)));
                _mm512_mask_storeu_pd(y + i, m, r);
            } else {
                cnn_lerp_row_sd(y, x, i0, i1, w0, w1, i, cnn_min_pd(i + 8, n));
            }
        }
    }
    #else
    /* float blocks of 8 permuted in one AVX2 register; everything else scalar */
    static void cnn_gather_rowf(float* __restrict y, const float* __restrict x,
                                const int32_t* __restrict ix, ptrdiff_t n, ptrdiff_t nx,
                                const int32_t* __restrict plan) {
        ptrdiff_t i = 0;
        (void) nx; (void) plan;
    #if defined(__AVX2__)
        for (; i + 8 <= n; i += 8) {
            int32_t b = plan[i / 8];
            if (b >= 0) {
                __m256i r = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*) (ix + i)),
                                             _mm256_set1_epi32(b));
                _mm256_storeu_ps(y + i, _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + b), r));
            } else {
                cnn_gather_row_sf(y, x, ix, i, i + 8);
            }
        }
    #endif
        cnn_gather_row_sf(y, x, ix, i, n);
    }
    static void cnn_lerp_rowf(float* __restrict y, const float* __restrict x,
                              const int32_t* __restrict i0, const int32_t* __restrict i1,
                              const float* __restrict w0, const float* __restrict w1,
                              ptrdiff_t n, ptrdiff_t nx, const int32_t* __restrict plan) {
        (void) nx; (void) plan;
        cnn_lerp_row_sf(y, x, i0, i1, w0, w1, 0, n);
    }
    static void cnn_gather_rowd(double* __restrict y, const double* __restrict x,
                                const int32_t* __restrict ix, ptrdiff_t n, ptrdiff_t nx,
                                const int32_t* __restrict plan) {
        (void) nx; (void) plan;
        cnn_gather_row_sd(y, x, ix, 0, n);
    }
    static void cnn_lerp_rowd(double* __restrict y, const double* __restrict x,
                              const int32_t* __restrict i0, const int32_t* __restrict i1,
                              const double* __restrict w0, const double* __restrict w1,
                              ptrdiff_t n, ptrdiff_t nx, const int32_t* __restrict plan) {
        (void) nx; (void) plan;
        cnn_lerp_row_sd(y, x, i0, i1, w0, w1, 0, n);
    }
    #endif
    /* The forward's plan, once per call (it depends on the indices only): per block of bs
       outputs, the first source of a one-vector window holding all the block's sources
       (i0 and, unless NULL, i1), or -1 for the scalar loop (a wider block; with bounded
       unmasked loads, also a partial block or a window past the row's end).  Its per-block
       min / max reductions ran for every row before. */
    #if defined(CNN_AVX512_ROWS)
    #define CNN_FB_F 16
    #define CNN_FB_D 8
    #define CNN_F_BOUNDED 0
    #elif defined(__AVX2__)
    #define CNN_FB_F 8
    #define CNN_FB_D 1
    #define CNN_F_BOUNDED 1
    #else
    #define CNN_FB_F 1
    #define CNN_FB_D 1
    #define CNN_F_BOUNDED 1
    #endif
    static void cnn_fplan(const int32_t* i0, const int32_t* i1, ptrdiff_t n, ptrdiff_t nx,
                          ptrdiff_t bs, int32_t* plan) {
        for (ptrdiff_t bi = 0; bi * bs < n; bi++) {
            ptrdiff_t a = bi * bs, z = cnn_min_pd(a + bs, n);
            int32_t b = i0[a], e = i0[a];
            for (ptrdiff_t i = a; i < z; i++) {
                b = i0[i] < b ? i0[i] : b;
                e = i0[i] > e ? i0[i] : e;
                if (i1) {
                    b = i1[i] < b ? i1[i] : b;
                    e = i1[i] > e ? i1[i] : e;
                }
            }
            plan[bi] = bs > 1 && (ptrdiff_t) e - b < bs
                       && (!CNN_F_BOUNDED || (z - a == bs && (ptrdiff_t) b + bs <= nx)) ? b : -1;
        }
    }

    /* ---- The gradient's pass along W for one output row, every list entry at once:
       T[w] = sum_j wt[j, w] * src[ix[j, w]] over the entries j < K that are not `pad`,
       accumulated from 0 in entry order in registers -- for each element the same
       operations, in the same order, as K passes adding into a zeroed row.  Blocks of
       CNN_WB_F / CNN_WB_D columns; `plan` (cnn_wplan, once per call: it depends on the
       indices only) holds per (entry, block) the first source of a window of 2 blocks
       holding all the block's sources (loaded and permuted in registers), -1 for the
       scalar loop, -2 when the block's entries are all padding.  The per-block min / max
       reductions were most of the instructions when they ran for every output row. ---- */
    #if defined(CNN_AVX512_ROWS)
    #define CNN_WB_F 16
    #define CNN_WB_D 8
    #define CNN_W_BOUNDED 0         /* masked loads: a window may pass the row's end */
    #elif defined(__AVX2__) && defined(__FMA__)
    #define CNN_WB_F 8
    #define CNN_WB_D 1
    #define CNN_W_BOUNDED 1
    #else
    #define CNN_WB_F 1
    #define CNN_WB_D 1
    #define CNN_W_BOUNDED 1
    #endif
    static void cnn_wplan(const int32_t* ix, int32_t pad, ptrdiff_t K, ptrdiff_t W,
                          ptrdiff_t nsrc, ptrdiff_t bs, int32_t* plan) {
        ptrdiff_t nb = (W + bs - 1) / bs;
        for (ptrdiff_t j = 0; j < K; j++) {
            for (ptrdiff_t bi = 0; bi < nb; bi++) {
                ptrdiff_t i0 = bi * bs, i1 = cnn_min_pd(i0 + bs, W);
                int32_t b = INT32_MAX, e = INT32_MIN, p = -1;
                for (ptrdiff_t i = i0; i < i1; i++) {
                    int32_t v = ix[j * W + i];
                    if (v == pad) continue;
                    b = v < b ? v : b;
                    e = v > e ? v : e;
                }
                if (b > e)
                    p = -2;
                else if (bs > 1 && (ptrdiff_t) e - b < 2 * bs
                         && (!CNN_W_BOUNDED || (i1 - i0 == bs && (ptrdiff_t) b + 2 * bs <= nsrc)))
                    p = b;
                plan[j * nb + bi] = p;
            }
        }
    }
    #define CNN_WPASS_SCALAR(SUF, T)                                                        \
    static void cnn_wpass_s##SUF(T* __restrict out, const T* __restrict src,               \
                                 const int32_t* __restrict ix, const T* __restrict wt,      \
                                 const int32_t* __restrict plan, int32_t pad, ptrdiff_t K,  \
                                 ptrdiff_t W, ptrdiff_t nsrc) {                             \
        (void) plan; (void) nsrc;                                                          \
        for (ptrdiff_t i = 0; i < W; i++) out[i] = 0;                                      \
        for (ptrdiff_t j = 0; j < K; j++)                                                  \
            cnn_gather_add_s##SUF(out, wt + j * W, ix + j * W, src, pad, 0, W);            \
    }
    CNN_WPASS_SCALAR(f, float)
    CNN_WPASS_SCALAR(d, double)
    #if defined(CNN_AVX512_ROWS)
    static void cnn_wpassf(float* __restrict out, const float* __restrict src,
                           const int32_t* __restrict ix, const float* __restrict wt,
                           const int32_t* __restrict plan, int32_t pad, ptrdiff_t K,
                           ptrdiff_t W, ptrdiff_t nsrc) {
        ptrdiff_t nb = (W + 15) / 16;
        const __m512i padv = _mm512_set1_epi32(pad);
        for (ptrdiff_t bi = 0; bi < nb; bi++) {
            ptrdiff_t i = bi * 16;
            __mmask16 m = cnn_m16(W - i);
            __m512 tv = _mm512_setzero_ps();
            for (ptrdiff_t j = 0; j < K; j++) {
                int32_t b = plan[j * nb + bi];
                const int32_t* ixj = ix + j * W + i;
                const float* wj = wt + j * W + i;
                if (b >= 0) {
                    __m512i v = _mm512_maskz_loadu_epi32(m, ixj);
                    __mmask16 ok = m & _mm512_cmpneq_epi32_mask(v, padv);
                    __m512 lo = _mm512_maskz_loadu_ps(cnn_m16(nsrc - b), src + b);
                    __m512 hi = _mm512_maskz_loadu_ps(cnn_m16(nsrc - b - 16), src + b + 16);
                    __m512 p = _mm512_permutex2var_ps(
                        lo, _mm512_sub_epi32(v, _mm512_set1_epi32(b)), hi);
                    tv = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(m, wj), p, tv, ok);
                } else if (b == -1) {
                    float tmp[16];
                    _mm512_storeu_ps(tmp, tv);
                    cnn_gather_add_sf(tmp, wj, ixj, src, pad, 0, cnn_min_pd(16, W - i));
                    tv = _mm512_loadu_ps(tmp);
                }
            }
            _mm512_mask_storeu_ps(out + i, m, tv);
        }
    }
    static void cnn_wpassd(double* __restrict out, const double* __restrict src,
                           const int32_t* __restrict ix, const double* __restrict wt,
                           const int32_t* __restrict plan, int32_t pad, ptrdiff_t K,
                           ptrdiff_t W, ptrdiff_t nsrc) {
        ptrdiff_t nb = (W + 7) / 8;
        const __m512i padv = _mm512_set1_epi64(pad);
        for (ptrdiff_t bi = 0; bi < nb; bi++) {
            ptrdiff_t i = bi * 8;
            __mmask8 m = cnn_m8(W - i);
            __m512d tv = _mm512_setzero_pd();
            for (ptrdiff_t j = 0; j < K; j++) {
                int32_t b = plan[j * nb + bi];
                const int32_t* ixj = ix + j * W + i;
                const double* wj = wt + j * W + i;
                if (b >= 0) {
                    __m512i v = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, ixj));
                    __mmask8 ok = m & _mm512_cmpneq_epi64_mask(v, padv);
                    __m512d lo = _mm512_maskz_loadu_pd(cnn_m8(nsrc - b), src + b);
                    __m512d hi = _mm512_maskz_loadu_pd(cnn_m8(nsrc - b - 8), src + b + 8);
                    __m512d p = _mm512_permutex2var_pd(
                        lo, _mm512_sub_epi64(v, _mm512_set1_epi64(b)), hi);
                    tv = _mm512_mask3_fmadd_pd(_mm512_maskz_loadu_pd(m, wj), p, tv, ok);
                } else if (b == -1) {
                    double tmp[8];
                    _mm512_storeu_pd(tmp, tv);
                    cnn_gather_add_sd(tmp, wj, ixj, src, pad, 0, cnn_min_pd(8, W - i));
                    tv = _mm512_loadu_pd(tmp);
                }
            }
            _mm512_mask_storeu_pd(out + i, m, tv);
        }
    }
    #elif defined(__AVX2__) && defined(__FMA__)
    /* float blocks of 8 whose sources lie in 16 consecutive elements: two loaded vectors
       permuted and blended (the scalar loop, which GCC turned into hardware gathers, ran
       bilinear x2's backward at 1.9x the AVX-512 build's time); partial blocks at the end
       of the row and wider blocks take the scalar loop. */
    static void cnn_wpassf(float* __restrict out, const float* __restrict src,
                           const int32_t* __restrict ix, const float* __restrict wt,
                           const int32_t* __restrict plan, int32_t pad, ptrdiff_t K,
                           ptrdiff_t W, ptrdiff_t nsrc) {
        ptrdiff_t nb = (W + 7) / 8;
        const __m256i padv = _mm256_set1_epi32(pad), seven = _mm256_set1_epi32(7);
        (void) nsrc;
        for (ptrdiff_t bi = 0; bi < nb; bi++) {
            ptrdiff_t i = bi * 8, n = cnn_min_pd(8, W - i);
            float tmp[8];
            __m256 tv = _mm256_setzero_ps();
            for (ptrdiff_t j = 0; j < K; j++) {
                int32_t b = plan[j * nb + bi];
                const int32_t* ixj = ix + j * W + i;
                const float* wj = wt + j * W + i;
                if (b >= 0) {                      /* (a whole block: the plan says so) */
                    __m256i v = _mm256_loadu_si256((const __m256i*) ixj);
                    __m256 skip = _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, padv));
                    __m256i r = _mm256_sub_epi32(v, _mm256_set1_epi32(b));
                    __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src + b), r);
                    __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src + b + 8), r);
                    __m256 p = _mm256_blendv_ps(
                        lo, hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(r, seven)));
                    __m256 nv = _mm256_fmadd_ps(_mm256_loadu_ps(wj), p, tv);
                    tv = _mm256_blendv_ps(nv, tv, skip);
                } else if (b == -1) {
                    _mm256_storeu_ps(tmp, tv);
                    cnn_gather_add_sf(tmp, wj, ixj, src, pad, 0, n);
                    tv = _mm256_loadu_ps(tmp);
                }
            }
            _mm256_storeu_ps(tmp, tv);
            for (ptrdiff_t k = 0; k < n; k++) out[i + k] = tmp[k];
        }
    }
    #define cnn_wpassd cnn_wpass_sd
    #else
    #define cnn_wpassf cnn_wpass_sf
    #define cnn_wpassd cnn_wpass_sd
    #endif
    /* Prefetch hint for the lines of [p, p + bytes) (results unchanged) */
    static inline void cnn_rs_prefetch(const void* p, ptrdiff_t bytes) {
    #if defined(__GNUC__)
        for (ptrdiff_t q = 0; q < bytes; q += 64) __builtin_prefetch((const char*) p + q, 0, 3);
    #else
        (void) p; (void) bytes;
    #endif
    }
    """
    void cnn_gather_rowf(float* y, const float* x, const int32_t* ix, Py_ssize_t n,
                         Py_ssize_t nx, const int32_t* plan) noexcept nogil
    void cnn_gather_rowd(double* y, const double* x, const int32_t* ix, Py_ssize_t n,
                         Py_ssize_t nx, const int32_t* plan) noexcept nogil
    void cnn_lerp_rowf(float* y, const float* x, const int32_t* i0, const int32_t* i1,
                       const float* w0, const float* w1, Py_ssize_t n, Py_ssize_t nx,
                       const int32_t* plan) noexcept nogil
    void cnn_lerp_rowd(double* y, const double* x, const int32_t* i0, const int32_t* i1,
                       const double* w0, const double* w1, Py_ssize_t n, Py_ssize_t nx,
                       const int32_t* plan) noexcept nogil
    enum: CNN_FB_F
    enum: CNN_FB_D
    void cnn_fplan(const int32_t* i0, const int32_t* i1, Py_ssize_t n, Py_ssize_t nx,
                   Py_ssize_t bs, int32_t* plan) noexcept nogil
    enum: CNN_WB_F
    enum: CNN_WB_D
    void cnn_wplan(const int32_t* ix, int32_t pad, Py_ssize_t K, Py_ssize_t W, Py_ssize_t nsrc,
                   Py_ssize_t bs, int32_t* plan) noexcept nogil
    void cnn_wpassf(float* out, const float* src, const int32_t* ix, const float* wt,
                    const int32_t* plan, int32_t pad, Py_ssize_t K, Py_ssize_t W,
                    Py_ssize_t nsrc) noexcept nogil
    void cnn_wpassd(double* out, const double* src, const int32_t* ix, const double* wt,
                    const int32_t* plan, int32_t pad, Py_ssize_t K, Py_ssize_t W,
                    Py_ssize_t nsrc) noexcept nogil
    void cnn_rs_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil


cdef inline void gather_row(floating* y, const floating* x, const int32_t* ix, Py_ssize_t n,
                            Py_ssize_t nx, const int32_t* plan) noexcept nogil:
    """``y[i] = x[ix[i]]`` (``x`` has ``nx`` elements; ``plan``: :func:`forward_plan`'s)."""
    if floating is float:
        cnn_gather_rowf(y, x, ix, n, nx, plan)
    else:
        cnn_gather_rowd(y, x, ix, n, nx, plan)


cdef inline void lerp_row(floating* y, const floating* x, const int32_t* i0, const int32_t* i1,
                          const floating* w0, const floating* w1, Py_ssize_t n, Py_ssize_t nx,
                          const int32_t* plan) noexcept nogil:
    """``y[i] = x[i0[i]] * w0[i] + x[i1[i]] * w1[i]``."""
    if floating is float:
        cnn_lerp_rowf(y, x, i0, i1, w0, w1, n, nx, plan)
    else:
        cnn_lerp_rowd(y, x, i0, i1, w0, w1, n, nx, plan)


cdef int32_t* forward_plan(const int32_t* i0, const int32_t* i1, Py_ssize_t n, Py_ssize_t nx,
                           bint is_float) noexcept nogil:
    """cnn_fplan of the column indices (``i1`` may be NULL) in a new buffer (NULL: out of
    memory); the caller frees it."""
    cdef Py_ssize_t bs = CNN_FB_F if is_float else CNN_FB_D
    cdef int32_t* plan = <int32_t*> malloc(((n + bs - 1) // bs) * sizeof(int32_t))
    if plan != NULL:
        cnn_fplan(i0, i1, n, nx, bs, plan)
    return plan


cdef inline Py_ssize_t rows_per_task(Py_ssize_t n_rows, Py_ssize_t row_len) noexcept nogil:
    return py_max(1, py_min(n_rows, TASK_ELEMS // py_max(row_len, 1)))


# ------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------

cdef void nearest_rows(const floating* x, floating* y, Py_ssize_t W, Py_ssize_t Wo,
                       Py_ssize_t r0, Py_ssize_t r1, const int64_t* ih,
                       const int32_t* iw, const int32_t* plan) noexcept nogil:
    """Output rows ``[r0, r1)`` of one plane; a row with the previous row's source is a
    copy of it."""
    cdef Py_ssize_t oh
    cdef floating* yr
    for oh in range(r0, r1):
        yr = y + oh * Wo
        if oh > r0 and ih[oh] == ih[oh - 1]:
            memcpy(yr, yr - Wo, Wo * sizeof(floating))
        else:
            gather_row(yr, x + ih[oh] * W, iw, Wo, W, plan)


cdef void linear_rows(const floating* x, floating* y, Py_ssize_t W, Py_ssize_t Wo, Py_ssize_t r0,
                      Py_ssize_t r1, const int64_t* h0, const int64_t* h1,
                      const floating* lh0, const floating* lh1, const int32_t* w0,
                      const int32_t* w1, const floating* lw0, const floating* lw1,
                      floating* buf, const int32_t* plan) noexcept nogil:
    """Output rows ``[r0, r1)`` of one plane; ``buf`` holds two W-interpolated source rows
    (``2 * Wo`` elements), reused while consecutive output rows read them."""
    cdef Py_ssize_t oh, ow, k
    cdef Py_ssize_t held[2]
    cdef floating* row[2]
    cdef floating* a
    cdef floating* b
    cdef floating c0, c1
    cdef floating* yr
    held[0] = -1
    held[1] = -1
    row[0] = buf
    row[1] = buf + Wo
    for oh in range(r0, r1):
        # make sure both source rows are held (never evicting the other one needed)
        if held[0] != h0[oh] and held[1] != h0[oh]:
            k = 0 if held[0] != h1[oh] else 1
            lerp_row(row[k], x + h0[oh] * W, w0, w1, lw0, lw1, Wo, W, plan)
            held[k] = h0[oh]
        if held[0] != h1[oh] and held[1] != h1[oh]:
            k = 0 if held[0] != h0[oh] else 1
            lerp_row(row[k], x + h1[oh] * W, w0, w1, lw0, lw1, Wo, W, plan)
            held[k] = h1[oh]
        a = row[0] if held[0] == h0[oh] else row[1]
        b = row[0] if held[0] == h1[oh] else row[1]
        c0 = lh0[oh]
        c1 = lh1[oh]
        yr = y + oh * Wo
        for ow in range(Wo):
            yr[ow] = a[ow] * c0 + b[ow] * c1


# ------------------------------------------------------------------------------------------
# Backward (gather)
# ------------------------------------------------------------------------------------------

cdef inline void wpass(floating* out, const floating* src, const int32_t* ix,
                       const floating* wt, const int32_t* plan, int32_t pad, Py_ssize_t K,
                       Py_ssize_t W, Py_ssize_t nsrc) noexcept nogil:
    """``out[w] = sum_j wt[j, w] * src[ix[j, w]]`` over the entries ``j < K`` not equal to
    ``pad``, from 0 in entry order (``plan``: cnn_wplan's)."""
    if floating is float:
        cnn_wpassf(out, src, ix, wt, plan, pad, K, W, nsrc)
    else:
        cnn_wpassd(out, src, ix, wt, plan, pad, K, W, nsrc)


cdef int gather_rows(const floating* g, floating* gx, Py_ssize_t Ho, Py_ssize_t Wo,
                     Py_ssize_t W, Py_ssize_t r0, Py_ssize_t r1, const int64_t* hidx,
                     const floating* hwt, Py_ssize_t taps, const int32_t* widx,
                     const floating* wwt, Py_ssize_t K, const int32_t* plan) noexcept nogil:
    """Input rows ``[r0, r1)`` of one plane's gradient.

    Output row ``oh`` reads input rows ``hidx[t * Ho + oh]`` with weights ``hwt[t * Ho +
    oh]`` (``t < taps``, the forward's table).  Along W, entry ``j`` of input column ``w``
    is ``(widx[j * W + w], wwt[j * W + w])``, ``j < K``; entries ``Wo`` are padding
    (``plan``: their cnn_wplan).

    The output rows are visited in order; each one that these input rows read is reduced
    along W into ``T`` and added, tap by tap, to the input rows that read it -- for every
    input element the additions of the gather ``sum over (oh, tap)`` in that order,
    starting from 0 (a row's first term is stored as ``coef * T + 0``, which rounds as
    ``0 + coef * T``: no zero-fill pass; rows no output reads are zeroed at the end).
    """
    cdef Py_ssize_t oh, w, h, t
    cdef bint need
    cdef floating* T
    cdef floating* row
    cdef unsigned char* done
    cdef const floating* src
    cdef floating coef, zero = 0
    T = <floating*> malloc(W * sizeof(floating) + (r1 - r0))
    if T == NULL:
        return CNN_ERR_NOMEM
    done = <unsigned char*> (T + W)
    memset(done, 0, r1 - r0)
    for oh in range(Ho):
        need = False
        for t in range(taps):
            h = hidx[t * Ho + oh]
            need = need or (r0 <= h < r1)
        if not need:
            continue
        src = g + oh * Wo                          # along W: T[w] = sum_j ww_j g[oh, ow_j]
        # (hint only) the output rows that follow: the loads of each row waited on memory
        cnn_rs_prefetch(<const char*> src + RS_AHEAD, Wo * sizeof(floating))
        wpass(T, src, widx, wwt, plan, <int32_t> Wo, K, W, Wo)
        for t in range(taps):                      # along H, into the rows that read oh
            h = hidx[t * Ho + oh]
            if r0 <= h < r1:
                coef = hwt[t * Ho + oh]
                row = gx + h * W
                if done[h - r0]:
                    for w in range(W):
                        row[w] = row[w] + coef * T[w]
                else:
                    for w in range(W):
                        row[w] = coef * T[w] + zero
                    done[h - r0] = 1
    for h in range(r0, r1):
        if not done[h - r0]:
            memset(gx + h * W, 0, W * sizeof(floating))
    free(T)
    return CNN_OK


# ------------------------------------------------------------------------------------------
# pixel_shuffle / pixel_unshuffle
# ------------------------------------------------------------------------------------------

cdef void shuffle_row(const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t r, Py_ssize_t p, Py_ssize_t h, bint inverse) noexcept nogil:
    """Coarse row ``h`` of spatial plane ``p``: the ``r`` fine rows ``h * r + i`` and the
    ``r * r`` coarse planes ``p * r * r + i * r + j`` it exchanges elements with
    (``inverse``: fine -> coarse)."""
    cdef Py_ssize_t i, j, w, Wr = W * r
    cdef Py_ssize_t plane = H * W, fine_plane = H * W * r * r
    cdef const floating* s
    cdef const floating* s1
    cdef floating* d
    cdef floating* d1
    if r == 2:                                     # the two columns of a fine row together:
        for i in range(2):                         # one (de)interleaving loop that vectorizes
            if not inverse:                        # (strided stores, one source at a time,
                s = src + (p * 4 + i * 2) * plane + h * W      # did not: 2.4x a copy)
                s1 = s + plane
                d = dst + p * fine_plane + (h * 2 + i) * Wr
                for w in range(W):
                    d[2 * w] = s[w]
                    d[2 * w + 1] = s1[w]
            else:
                s = src + p * fine_plane + (h * 2 + i) * Wr
                d = dst + (p * 4 + i * 2) * plane + h * W
                d1 = d + plane
                for w in range(W):
                    d[w] = s[2 * w]
                    d1[w] = s[2 * w + 1]
        return
    for i in range(r):
        for j in range(r):
            if not inverse:                        # coarse (p r^2 + i r + j, h, :) -> fine
                s = src + (p * r * r + i * r + j) * plane + h * W
                d = dst + p * fine_plane + (h * r + i) * Wr + j
                for w in range(W):
                    d[w * r] = s[w]
            else:                                  # fine -> coarse
                s = src + p * fine_plane + (h * r + i) * Wr + j
                d = dst + (p * r * r + i * r + j) * plane + h * W
                for w in range(W):
                    d[w] = s[w * r]


# ------------------------------------------------------------------------------------------
# Thin def wrappers (validated by cnncore.ops.resize; empty arrays never get here)
# ------------------------------------------------------------------------------------------

def nearest_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y_out,
                    const int64_t[::1] ih, const int32_t[::1] iw, int n_threads):
    """``y_out[p, oh, ow] = x[p, ih[oh], iw[ow]]``."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y_out.shape[1], Wo = y_out.shape[2]
    cdef Py_ssize_t rb = rows_per_task(Ho, Wo)
    cdef Py_ssize_t nb = (Ho + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    cdef int32_t* plan = forward_plan(&iw[0], NULL, Wo, W, floating is float)
    if plan == NULL:
        check_status(CNN_ERR_NOMEM, "interpolate")
    with nogil:
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            p = t // nb
            r0 = (t % nb) * rb
            nearest_rows(xp + p * H * W, yp + p * Ho * Wo, W, Wo, r0, py_min(r0 + rb, Ho),
                         &ih[0], &iw[0], plan)
    free(plan)


def linear_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y_out,
                   const int64_t[::1] h0, const int64_t[::1] h1, const floating[::1] lh0,
                   const floating[::1] lh1, const int32_t[::1] w0, const int32_t[::1] w1,
                   const floating[::1] lw0, const floating[::1] lw1, int n_threads):
    """``y_out[p, oh, ow] = sum over (h0, h1) x (w0, w1) of the weight products times x``."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y_out.shape[1], Wo = y_out.shape[2]
    cdef Py_ssize_t rb = rows_per_task(Ho, Wo)
    cdef Py_ssize_t nb = (Ho + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef int status = CNN_OK
    cdef int* st = &status
    cdef floating* buf
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    cdef int32_t* plan = forward_plan(&w0[0], &w1[0], Wo, W, floating is float)
    if plan == NULL:
        check_status(CNN_ERR_NOMEM, "interpolate")
    with nogil:
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            buf = <floating*> malloc(2 * Wo * sizeof(floating))
            if buf == NULL:
                st[0] = CNN_ERR_NOMEM
            else:
                p = t // nb
                r0 = (t % nb) * rb
                linear_rows(xp + p * H * W, yp + p * Ho * Wo, W, Wo, r0, py_min(r0 + rb, Ho),
                            &h0[0], &h1[0], &lh0[0], &lh1[0], &w0[0], &w1[0], &lw0[0],
                            &lw1[0], buf, plan)
                free(buf)
    free(plan)
    check_status(status, "interpolate")


def gather_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_x,
                    const int64_t[:, ::1] h_index, const floating[:, ::1] h_weight,
                    const int32_t[:, ::1] w_index, const floating[:, ::1] w_weight,
                    int n_threads):
    """Gradient of a separable interpolation: output row ``oh`` reads input rows
    ``h_index[:, oh]`` with weights ``h_weight[:, oh]`` (the forward's taps); input column
    ``w`` is read by output columns ``w_index[:, w]`` with weights ``w_weight[:, w]``
    (entries ``W_out`` are padding)."""
    cdef Py_ssize_t P = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t Ho = grad_output.shape[1], Wo = grad_output.shape[2]
    cdef Py_ssize_t rb = rows_per_task(H, py_max(W, Wo))
    cdef Py_ssize_t nb = (H + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef int status = CNN_OK, bad
    cdef int* status_p = &status
    cdef const floating* gp = &grad_output[0, 0, 0]
    cdef floating* gxp = &grad_x[0, 0, 0]
    cdef Py_ssize_t taps = h_index.shape[0], K = w_index.shape[0]
    cdef Py_ssize_t bs = CNN_WB_F if floating is float else CNN_WB_D
    cdef int32_t* plan = <int32_t*> malloc(K * ((W + bs - 1) // bs) * sizeof(int32_t))
    if plan == NULL:
        check_status(CNN_ERR_NOMEM, "interpolate_backward")
    with nogil:
        cnn_wplan(&w_index[0, 0], <int32_t> Wo, K, W, Wo, bs, plan)
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            p = t // nb
            r0 = (t % nb) * rb
            bad = gather_rows(gp + p * Ho * Wo, gxp + p * H * W, Ho, Wo, W, r0,
                              py_min(r0 + rb, H), &h_index[0, 0], &h_weight[0, 0], taps,
                              &w_index[0, 0], &w_weight[0, 0], K, plan)
            if bad != CNN_OK:
                status_p[0] = bad
    free(plan)
    check_status(status, "interpolate_backward")


def pixel_shuffle(const floating[:, :, ::1] x, floating[:, :, ::1] y_out, Py_ssize_t r,
                  int n_threads):
    """``(B * r * r, H, W) -> (B, H * r, W * r)``."""
    cdef Py_ssize_t P = y_out.shape[0], H = x.shape[1], W = x.shape[2], t
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * H, schedule="static", num_threads=n_threads):
            shuffle_row(xp, yp, H, W, r, t // H, t % H, False)


def pixel_unshuffle(const floating[:, :, ::1] x, floating[:, :, ::1] y_out, Py_ssize_t r,
                    int n_threads):
    """``(B, H * r, W * r) -> (B * r * r, H, W)``."""
    cdef Py_ssize_t P = x.shape[0], H = y_out.shape[1], W = y_out.shape[2], t
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * H, schedule="static", num_threads=n_threads):
            shuffle_row(xp, yp, H, W, r, t // H, t % H, True)
