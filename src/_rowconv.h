/* Row-vectorized direct convolution: the microkernels of cnncore's "rows" conv algorithm
   (cnncore/ops/_conv.pyx, section "Row-vectorized direct").

   For convolutions with few channels on small images -- LeNet's 5x5 layers, a network's
   first layer (one input channel) -- where the channel-blocked kernels leave most vector
   lanes idle (6 output channels in 16 lanes) or spend their time transposing, and im2col +
   GEMM their time copying: the vector lanes run along a row of output pixels instead.

   Like src/_blocked_conv.h, C with GCC/Clang vector extensions, compiled once per SIMD level
   (setup.py builds cnncore.ops._conv for SSE2, AVX2 and AVX-512).

   Correlation (forward, and the unit-stride input gradient):
       out[k, oh, ow] = bias[k] + sum over (c, i, j) in order of
                        w[k, c, i, j] * inp[c, oh + i*dh, ow + j*dw]
   on zero-padded planes (no bounds checks): a microkernel keeps KB output channels x RB rows
   x NV vectors of pixels in registers over all taps; per tap it broadcasts KB weights and
   loads RB x NV input vectors.  Every output is summed in tap order from its bias, whatever
   the blocking, so results do not depend on how the work is split.

   Weight gradient, per sample:
       dW[k, c, i, j] += sum over (oh, ow) of dy[k, oh, ow] * inp[c, oh + i*dh, ow + j*dw]
   lane-wise: a microkernel keeps KB output channels x JT taps of one kernel row as vectors of
   per-lane partial sums over the rows of one sample (per pixel vector: KB loads of dy, JT of
   the input, KB x JT FMAs), then adds each vector's lanes in a fixed order to the caller's
   partial sum.  Lanes past the row's end are masked off the input (dy is zero there too, but
   the input may hold an Inf there, and Inf x 0 is NaN).

   float only, like src/_blocked_conv.h: float64 convolutions never run "rows".
*/
#ifndef CNN_ROWCONV_H
#define CNN_ROWCONV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd_width.h"

#if defined(__AVX512F__)
#define CNN_ROW_NACC 24 /* accumulators: 32 zmm registers, minus weights and inputs */
#else
#define CNN_ROW_NACC 12 /* 16 ymm / xmm registers */
#endif

/* ---- Correlation ------------------------------------------------------------------------ */

/* Vectors per row chunk: the row's vectors, at most two. */
static inline ptrdiff_t cnn_row_nv(ptrdiff_t Wo, ptrdiff_t vl) {
    return Wo > vl ? 2 : 1;
}

/* Output channels per block for nv vectors per row: the most of 1, 2, 4 (and 6 with
   AVX-512) that leaves at least two rows' worth of accumulators; then the rows per block. */
static inline ptrdiff_t cnn_row_kb(ptrdiff_t n_out, ptrdiff_t nv) {
    static const ptrdiff_t cand[] = {6, 4, 2, 1};
    for (size_t t = 0; t < sizeof cand / sizeof cand[0]; ++t) {
        ptrdiff_t kb = cand[t];
        if (kb <= n_out && kb * 2 * nv <= CNN_ROW_NACC && (kb != 6 || CNN_ROW_NACC >= 24))
            return kb;
    }
    return 1;
}
static inline ptrdiff_t cnn_row_rb(ptrdiff_t kb, ptrdiff_t nv, ptrdiff_t Ho) {
    /* the fewest rows computed, counting half a row of overhead per block */
    ptrdiff_t best = 1, best_cost = -1;
    for (ptrdiff_t rb = 4; rb >= 1; rb /= 2) {
        if (kb * rb * nv > CNN_ROW_NACC || (rb > 1 && rb > Ho)) continue;
        const ptrdiff_t cost = (Ho + rb - 1) / rb * (2 * rb + 1);
        if (best_cost < 0 || cost < best_cost) {
            best = rb;
            best_cost = cost;
        }
    }
    return best;
}

#define CNN_ROW_KERNEL(T, VT, KB, RB, NV)                                                      \
    static void cnn_row_##T##_##KB##_##RB##_##NV(                                              \
        const T* src, ptrdiff_t ch_stride, ptrdiff_t Q, ptrdiff_t dh, ptrdiff_t dw,            \
        const T* w, ptrdiff_t w_stride, ptrdiff_t n_in, ptrdiff_t kh, ptrdiff_t kw,            \
        const T* bias, T* out, ptrdiff_t plane, ptrdiff_t Wo, ptrdiff_t nrows,                 \
        ptrdiff_t ncols) {                                                                     \
        enum { VL = CNN_VBYTES / sizeof(T) };                                              \
        VT acc[KB][RB][NV];                                                                    \
        _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb) {                              \
            const T b = bias ? bias[kb] : (T)0;                                                \
            _Pragma("GCC unroll 4") for (int r = 0; r < RB; ++r)                               \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) acc[kb][r][v] = b - (VT){}; \
        }                                                                                      \
        for (ptrdiff_t c = 0, t = 0; c < n_in; ++c)                                            \
            for (ptrdiff_t i = 0; i < kh; ++i) {                                               \
                const T* srow = src + c * ch_stride + i * dh * Q;                              \
                for (ptrdiff_t j = 0; j < kw; ++j, ++t) {                                      \
                    const T* sj = srow + j * dw;                                               \
                    T wv[KB];                                                                  \
                    _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb)                    \
                        wv[kb] = w[kb * w_stride + t];                                         \
                    _Pragma("GCC unroll 4") for (int r = 0; r < RB; ++r)                       \
                        _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) {                 \
                            VT xv;                                                             \
                            memcpy(&xv, sj + r * Q + v * VL, sizeof xv);                       \
                            _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb)            \
                                acc[kb][r][v] += wv[kb] * xv;                                  \
                        }                                                                      \
                }                                                                              \
            }                                                                                  \
        _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb)                                \
            _Pragma("GCC unroll 4") for (int r = 0; r < RB; ++r) {                             \
                if (r >= nrows) break;                                                         \
                T* o = out + kb * plane + r * Wo;                                              \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) {                         \
                    const ptrdiff_t n = ncols - v * VL;                                        \
                    if (n >= VL)                                                               \
                        memcpy(o + v * VL, &acc[kb][r][v], sizeof(VT));                        \
                    else if (n > 0)                                                            \
                        memcpy(o + v * VL, &acc[kb][r][v], n * sizeof(T));                     \
                }                                                                              \
            }                                                                                  \
    }

typedef void (*cnn_row_kernel_float)(const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     const float*, float*, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     ptrdiff_t);

#define CNN_ROW_RB(T, VT, KB, NV) \
    CNN_ROW_KERNEL(T, VT, KB, 1, NV) \
    CNN_ROW_KERNEL(T, VT, KB, 2, NV) \
    CNN_ROW_KERNEL(T, VT, KB, 4, NV)
#define CNN_ROW_KB(T, VT, NV)    \
    CNN_ROW_RB(T, VT, 1, NV)     \
    CNN_ROW_RB(T, VT, 2, NV)     \
    CNN_ROW_RB(T, VT, 4, NV)     \
    CNN_ROW_RB(T, VT, 6, NV)
CNN_ROW_KB(float, cnn_vf, 1)
CNN_ROW_KB(float, cnn_vf, 2)

#define CNN_ROW_PICK_RB(T, KB, NV)                                                    \
    return rb >= 4 ? cnn_row_##T##_##KB##_4_##NV                                      \
                   : (rb == 2 ? cnn_row_##T##_##KB##_2_##NV : cnn_row_##T##_##KB##_1_##NV);
#define CNN_ROW_PICK_KB(T, NV)                              \
    switch (kb) {                                           \
        case 6: CNN_ROW_PICK_RB(T, 6, NV)                   \
        case 4: CNN_ROW_PICK_RB(T, 4, NV)                   \
        case 2: CNN_ROW_PICK_RB(T, 2, NV)                   \
        default: CNN_ROW_PICK_RB(T, 1, NV)                  \
    }
#define CNN_ROW_SELECT(T)                                                                   \
    static cnn_row_kernel_##T cnn_row_select_##T(ptrdiff_t kb, ptrdiff_t rb, ptrdiff_t nv) { \
        if (nv == 1) {                                                                      \
            CNN_ROW_PICK_KB(T, 1)                                                           \
        } else {                                                                            \
            CNN_ROW_PICK_KB(T, 2)                                                           \
        }                                                                                   \
    }
CNN_ROW_SELECT(float)

/* Padded plane size the correlation reads for Ho x Wo outputs (unit stride): rows for whole
   row blocks, columns for whole chunks of nv vectors. */
#define CNN_ROW_GEOM(T)                                                                       \
    static void cnn_row_geom_##T(ptrdiff_t n_out, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t kh,    \
                                 ptrdiff_t kw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t* R,       \
                                 ptrdiff_t* Q) {                                               \
        const ptrdiff_t VL = CNN_VL_##T, nv = cnn_row_nv(Wo, VL);                        \
        const ptrdiff_t kb = cnn_row_kb(n_out, nv), rb = cnn_row_rb(kb, nv, Ho);              \
        const ptrdiff_t cw = nv * VL;                                                         \
        *R = (Ho + rb - 1) / rb * rb + (kh - 1) * dh;                                         \
        *Q = (Wo + cw - 1) / cw * cw + (kw - 1) * dw;                                         \
    }
CNN_ROW_GEOM(float)

/* The correlation of one sample's (one group's) n_in zero-padded planes ``inp`` (R x Q, as
   cnn_row_geom_*) with ``w`` (n_out filters of n_in * kh * kw taps) plus ``bias`` (NULL:
   none): the n_out planes of Ho x Wo at ``out``. */
#define CNN_ROW_CORR(T)                                                                        \
    static void cnn_row_corr_##T(const T* inp, ptrdiff_t n_in, ptrdiff_t R, ptrdiff_t Q,        \
                                 const T* w, const T* bias, ptrdiff_t n_out, ptrdiff_t kh,      \
                                 ptrdiff_t kw, ptrdiff_t dh, ptrdiff_t dw, T* out,              \
                                 ptrdiff_t Ho, ptrdiff_t Wo) {                                  \
        const ptrdiff_t VL = CNN_VL_##T, nv = cnn_row_nv(Wo, VL), cw = nv * VL;            \
        const ptrdiff_t kbm = cnn_row_kb(n_out, nv), rb = cnn_row_rb(kbm, nv, Ho);             \
        const ptrdiff_t taps = n_in * kh * kw, plane = Ho * Wo;                                \
        for (ptrdiff_t k0 = 0; k0 < n_out;) {                                                  \
            ptrdiff_t kb = kbm;                                                                \
            while (kb > 1 && k0 + kb > n_out) kb = kb == 6 ? 4 : kb / 2;                       \
            cnn_row_kernel_##T kern = cnn_row_select_##T(kb, rb, nv);                          \
            for (ptrdiff_t oh = 0; oh < Ho; oh += rb)                                          \
                for (ptrdiff_t ow = 0; ow < Wo; ow += cw)                                      \
                    kern(inp + oh * Q + ow, R * Q, Q, dh, dw, w + k0 * taps, taps, n_in, kh,   \
                         kw, bias ? bias + k0 : NULL, out + k0 * plane + oh * Wo + ow, plane,  \
                         Wo, Ho - oh < rb ? Ho - oh : rb, Wo - ow < cw ? Wo - ow : cw);        \
            k0 += kb;                                                                          \
        }                                                                                      \
    }
CNN_ROW_CORR(float)

/* ---- Weight gradient -------------------------------------------------------------------- */

/* The lanes of a vector added in a fixed order (pairwise halves). */
#define CNN_ROW_HSUM(T, VT)                                   \
    static inline T cnn_row_hsum_##T(VT v) {                  \
        enum { VL = CNN_VBYTES / sizeof(T) };             \
        T a[VL];                                              \
        memcpy(a, &v, sizeof a);                              \
        for (int h = VL / 2; h > 0; h /= 2)                   \
            for (int l = 0; l < h; ++l) a[l] = a[l] + a[l + h]; \
        return a[0];                                          \
    }
CNN_ROW_HSUM(float, cnn_vf)

/* KB output channels x JT taps (j0 .. j0+JT-1 of kernel row i) of one input plane of one
   sample: ``x`` at padded row i*dh of the plane (row stride Q), ``dy`` the sample's KB planes
   (Ho rows of Wo, plane stride dy_plane, readable a vector past the end); the lane-wise sums
   are added to the vectors vdst[(kb * dst_k + jj) * VL].  A row's last vector (of nvec)
   reads past the row's end: with MASK >= 1 its dy lanes past the end (``mask`` clear) are
   zeroed, with MASK == 2 its input lanes too -- needed only when the input holds an Inf or
   NaN (Inf * 0 = NaN). */
#define CNN_ROWW_STEP(T, VT, MT, KB, JT, XMASK, DMASK)                                        \
    {                                                                                          \
        VT xv[JT];                                                                             \
        _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj) {                              \
            memcpy(&xv[jj], xr + q * VL + jj * dw, sizeof(VT));                                \
            if (XMASK) xv[jj] = (VT)((MT)xv[jj] & mask);                                       \
        }                                                                                      \
        _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb) {                              \
            VT d;                                                                              \
            memcpy(&d, dr + kb * dy_plane + q * VL, sizeof d);                                 \
            if (DMASK) d = (VT)((MT)d & mask);                                                 \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj) acc[kb][jj] += d * xv[jj]; \
        }                                                                                      \
    }

#define CNN_ROWW_KERNEL(T, VT, MT, KB, JT, MASK)                                               \
    static void cnn_roww_##T##_##KB##_##JT##_##MASK(                                           \
        const T* x, ptrdiff_t Q, ptrdiff_t dw, const T* dy, ptrdiff_t dy_plane, ptrdiff_t Ho,  \
        ptrdiff_t Wo, ptrdiff_t nvec, MT mask, T* vdst, ptrdiff_t dst_k) {                     \
        enum { VL = CNN_VBYTES / sizeof(T) };                                              \
        VT acc[KB][JT];                                                                        \
        _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb)                                \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj) acc[kb][jj] = (VT){0};     \
        const ptrdiff_t nfull = MASK ? nvec - 1 : nvec;                                        \
        for (ptrdiff_t oh = 0; oh < Ho; ++oh) {                                                \
            const T* xr = x + oh * Q;                                                          \
            const T* dr = dy + oh * Wo;                                                        \
            ptrdiff_t q = 0;                                                                   \
            for (; q < nfull; ++q) CNN_ROWW_STEP(T, VT, MT, KB, JT, 0, 0)                      \
            if (MASK) CNN_ROWW_STEP(T, VT, MT, KB, JT, MASK == 2, 1)                           \
        }                                                                                      \
        _Pragma("GCC unroll 8") for (int kb = 0; kb < KB; ++kb)                                \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj) {                          \
                T* o = vdst + (kb * dst_k + jj) * VL;                                          \
                VT cur;                                                                        \
                memcpy(&cur, o, sizeof cur);                                                   \
                cur += acc[kb][jj];                                                            \
                memcpy(o, &cur, sizeof cur);                                                   \
            }                                                                                  \
    }

typedef void (*cnn_roww_kernel_float)(const float*, ptrdiff_t, ptrdiff_t, const float*,
                                      ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, cnn_vmf,
                                      float*, ptrdiff_t);

#define CNN_ROWW_M(T, VT, MT, KB, JT)       \
    CNN_ROWW_KERNEL(T, VT, MT, KB, JT, 0)   \
    CNN_ROWW_KERNEL(T, VT, MT, KB, JT, 1)   \
    CNN_ROWW_KERNEL(T, VT, MT, KB, JT, 2)
#define CNN_ROWW_JT(T, VT, MT, KB) \
    CNN_ROWW_M(T, VT, MT, KB, 1)   \
    CNN_ROWW_M(T, VT, MT, KB, 2)   \
    CNN_ROWW_M(T, VT, MT, KB, 3)   \
    CNN_ROWW_M(T, VT, MT, KB, 4)   \
    CNN_ROWW_M(T, VT, MT, KB, 5)
#define CNN_ROWW_KB(T, VT, MT)  \
    CNN_ROWW_JT(T, VT, MT, 1)   \
    CNN_ROWW_JT(T, VT, MT, 2)   \
    CNN_ROWW_JT(T, VT, MT, 4)
CNN_ROWW_KB(float, cnn_vf, cnn_vmf)

#define CNN_ROWW_PICK_M(T, KB, JT)                                     \
    return masked == 2 ? cnn_roww_##T##_##KB##_##JT##_2                 \
                       : (masked == 1 ? cnn_roww_##T##_##KB##_##JT##_1  \
                                      : cnn_roww_##T##_##KB##_##JT##_0);
#define CNN_ROWW_PICK_JT(T, KB)                   \
    switch (jt) {                                 \
        case 5: CNN_ROWW_PICK_M(T, KB, 5)         \
        case 4: CNN_ROWW_PICK_M(T, KB, 4)         \
        case 3: CNN_ROWW_PICK_M(T, KB, 3)         \
        case 2: CNN_ROWW_PICK_M(T, KB, 2)         \
        default: CNN_ROWW_PICK_M(T, KB, 1)        \
    }
#define CNN_ROWW_SELECT(T)                                                                   \
    static cnn_roww_kernel_##T cnn_roww_select_##T(ptrdiff_t kb, ptrdiff_t jt, int masked) { \
        if (kb >= 4) {                                                                       \
            CNN_ROWW_PICK_JT(T, 4)                                                           \
        } else if (kb == 2) {                                                                \
            CNN_ROWW_PICK_JT(T, 2)                                                           \
        } else {                                                                             \
            CNN_ROWW_PICK_JT(T, 1)                                                           \
        }                                                                                    \
    }
CNN_ROWW_SELECT(float)

/* Vectors per padded row of Wo outputs. */
static inline ptrdiff_t cnn_roww_nvec(ptrdiff_t Wo, ptrdiff_t vl) { return (Wo + vl - 1) / vl; }

/* The in-bounds part of n_ch planes (H x W) read from row row0 and column col0 into padded
   planes (R x Q) whose other entries are already zero: dst[c, r, q] = src[c, r + row0,
   q + col0] where that is inside the planes. */
#define CNN_ROW_FILL(T)                                                                        \
    static void cnn_row_fill_##T(const T* src, ptrdiff_t n_ch, ptrdiff_t H, ptrdiff_t W,        \
                                 ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t R, ptrdiff_t Q,      \
                                 T* dst) {                                                      \
        const ptrdiff_t r_lo = row0 < 0 ? -row0 : 0, r_hi = H - row0 < R ? H - row0 : R;       \
        const ptrdiff_t q_lo = col0 < 0 ? -col0 : 0, q_hi = W - col0 < Q ? W - col0 : Q;       \
        if (r_hi <= r_lo || q_hi <= q_lo) return;                                              \
        const ptrdiff_t n = q_hi - q_lo;                                                       \
        for (ptrdiff_t c = 0; c < n_ch; ++c)                                                   \
            for (ptrdiff_t r = r_lo; r < r_hi; ++r) {                                          \
                const T* s = src + (c * H + r + row0) * W + q_lo + col0;                       \
                T* d = dst + (c * R + r) * Q + q_lo;                                           \
                for (ptrdiff_t q = 0; q < n; ++q) d[q] = s[q];                                 \
            }                                                                                  \
    }
CNN_ROW_FILL(float)

/* Output channels per weight-gradient block. */
static inline ptrdiff_t cnn_roww_kbm(void) { return CNN_ROW_NACC >= 24 ? 4 : 2; }

/* One weight-gradient task: add the gradient of ns samples of one group to ``part``
   (n_out x n_in x kh x kw, dW's layout).  ``x``: the first sample's n_in input planes
   (H x W, sample stride x_ss), zero padded by (ph, pw) into ``xpad`` (n_in planes of R x Q,
   R = Ho + (kh - 1) * dh, Q = nvec * VL + (kw - 1) * dw; zero but for the in-bounds part);
   ``dy``: the first sample's n_out output-gradient planes (Ho x Wo, sample stride dy_ss), the
   last sample's at ``dy_last`` when not NULL (a copy with a vector of slack: each row's last
   vector reads on past the row); ``finite``: the inputs hold no Inf or NaN.  Per block of
   output channels: the samples' lane-wise sums
   in ``vpart`` (cnn_roww_kbm() * n_in * kh * kw vectors), then added lane by lane (in a fixed
   order) to ``part``. */
#define CNN_ROWW_TASK(T, MT)                                                                   \
    static void cnn_roww_task_##T(const T* x, ptrdiff_t x_ss, ptrdiff_t n_in, ptrdiff_t H,      \
                                  ptrdiff_t W, ptrdiff_t ph, ptrdiff_t pw, const T* dy,         \
                                  ptrdiff_t dy_ss, const T* dy_last, ptrdiff_t n_out,           \
                                  ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t dh, ptrdiff_t dw,       \
                                  ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t ns, int finite,         \
                                  T* xpad, T* vpart, T* part) {                                 \
        enum { VL = CNN_VL_##T };                                                          \
        const ptrdiff_t nvec = cnn_roww_nvec(Wo, VL), L = Ho * Wo, khw = kh * kw;              \
        const ptrdiff_t R = Ho + (kh - 1) * dh, Q = nvec * VL + (kw - 1) * dw;                 \
        const ptrdiff_t rem = Wo - (nvec - 1) * VL, taps = n_in * khw;                         \
        const int masked = rem == VL ? 0 : (finite ? 1 : 2);                                   \
        MT mask;                                                                               \
        for (int l = 0; l < VL; ++l) mask[l] = l < rem ? -1 : 0;                               \
        for (ptrdiff_t k0 = 0; k0 < n_out;) {                                                  \
            ptrdiff_t kb = cnn_roww_kbm();                                                     \
            while (kb > 1 && k0 + kb > n_out) kb /= 2;                                         \
            memset(vpart, 0, kb * taps * VL * sizeof(T));                                      \
            for (ptrdiff_t s = 0; s < ns; ++s) {                                               \
                cnn_row_fill_##T(x + s * x_ss, n_in, H, W, -ph, -pw, R, Q, xpad);              \
                const T* d = (s == ns - 1 && dy_last ? dy_last : dy + s * dy_ss) + k0 * L;     \
                for (ptrdiff_t c = 0; c < n_in; ++c)                                           \
                    for (ptrdiff_t i = 0; i < kh; ++i)                                         \
                        for (ptrdiff_t j0 = 0; j0 < kw;) {                                     \
                            const ptrdiff_t jt = kw - j0 < 5 ? kw - j0 : 5;                    \
                            cnn_roww_select_##T(kb, jt, masked)(                               \
                                xpad + (c * R + i * dh) * Q + j0 * dw, Q, dw, d, L, Ho, Wo,    \
                                nvec, mask, vpart + ((c * kh + i) * kw + j0) * VL, taps);      \
                            j0 += jt;                                                          \
                        }                                                                      \
            }                                                                                  \
            for (ptrdiff_t e = 0; e < kb * taps; ++e) {                                        \
                cnn_v##T v;                                                                \
                memcpy(&v, vpart + e * VL, sizeof v);                                          \
                part[k0 * taps + e] += cnn_row_hsum_##T(v);                                    \
            }                                                                                  \
            k0 += kb;                                                                          \
        }                                                                                      \
    }
typedef cnn_vf cnn_vfloat;
CNN_ROWW_TASK(float, cnn_vmf)

/* ---- The fused conv -> ReLU -> 2x2 max pooling ------------------------------------------ */

/* The ReLU of a plane ``y`` (Hp x Wp) max pooled (2x2, stride 2) from ``conv`` (rows of W), as
   max_pool2d(relu(conv)) gives it: an output that is not positive (and not NaN) becomes the
   ReLU of its window's first tap -- that tap if it is a zero (its sign kept), else +0.0.
   Branch-free, so that the compiler vectorizes it (half the outputs are ReLU zeros). */
#define CNN_ROWPOOL_RELU(T)                                                                    \
    static void cnn_rowpool_relu_##T(const T* conv, ptrdiff_t W, ptrdiff_t Hp, ptrdiff_t Wp,   \
                                     T* y) {                                                   \
        for (ptrdiff_t oh = 0; oh < Hp; ++oh) {                                                \
            const T* f = conv + 2 * oh * W;                                                    \
            T* yr = y + oh * Wp;                                                               \
            for (ptrdiff_t ow = 0; ow < Wp; ++ow) {                                            \
                const T v = yr[ow], a = f[2 * ow];                                             \
                const T z = a == 0 ? a : (T)0;                                                 \
                yr[ow] = v <= 0 ? z : v; /* (NaN > 0 is false, NaN <= 0 too: kept) */          \
            }                                                                                  \
        }                                                                                      \
    }
CNN_ROWPOOL_RELU(float)

#endif /* CNN_ROWCONV_H */
