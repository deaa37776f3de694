/* Channel-blocked direct convolution: the register-blocked microkernels of cnncore's
   "blocked" conv algorithm (cnncore/ops/_conv.pyx, section "Channel-blocked direct").

   Written in C with GCC/Clang vector extensions, so that one source compiles to SSE2, AVX2
   and AVX-512 code: the vector width follows the ISA flags the including module is compiled
   with (setup.py builds cnncore.ops._conv once per SIMD level).

   The microkernel computes a block of OB = NV * VL output channels (NV vectors of VL lanes)
   by P consecutive output pixels of one row, accumulated in NV * P vector registers over all
   n_in * kh * kw taps:

       acc[v][p] += w[c, i, j][v * VL : (v + 1) * VL] * x[c, oh*sh + i*dh, (ow0 + p)*sw + j*dw]

   -- one vector load of packed weights per tap and vector, one broadcast input value per
   pixel feeding NV FMAs.  This is the outer-product form oneDNN's direct convolutions use,
   on NCHW planes (the input is read by broadcasts, so it needs no blocked layout) and on
   weights packed as [block of OB output channels][c][i][j][OB].  Every output's sum runs
   over (c, i, j) in order from its bias, so results do not depend on how the caller splits
   the work between threads.  Only GEMM-shaped work goes to BLAS; this is a convolution loop
   nest, as the "direct" and "depthwise" kernels are.

   float only: float64 convolutions run GEMM, direct or Winograd (cnncore/ops/conv_dispatch.py
   never picks "blocked" for them), so no double microkernels are built (they were a fifth
   of each SIMD build's compile time).
*/
#ifndef CNN_BLOCKED_CONV_H
#define CNN_BLOCKED_CONV_H

#include <stddef.h>
#include <string.h>

#include "_simd_width.h"

#if defined(__AVX512F__)
#define CNN_BLK_NACC 28 /* accumulators: 32 zmm registers, minus weights and a spare */
#else
#define CNN_BLK_NACC 12 /* 16 ymm / xmm registers */
#endif

/* Vectors per output-channel block: two when the channels fill more than one vector. */
static inline ptrdiff_t cnn_blk_nv(ptrdiff_t n_out, ptrdiff_t vl) { return n_out > vl ? 2 : 1; }

/* Pixels per microkernel call for NV vectors and rows of Wo outputs: the block size (among
   those compiled below, with NV * P accumulators fitting the registers) that covers the row
   with the fewest wasted columns, counting ~3 pixels' worth of overhead per call. */
static inline ptrdiff_t cnn_blk_pixels(ptrdiff_t nv, ptrdiff_t Wo) {
    static const ptrdiff_t cand[] = {4, 6, 7, 8, 12, 14, 16};
    ptrdiff_t best = 4, best_cost = -1;
    for (size_t k = 0; k < sizeof cand / sizeof cand[0]; ++k) {
        ptrdiff_t P = cand[k];
        if (nv * P > CNN_BLK_NACC || (nv > 1 && P > 12)) break;
        ptrdiff_t cost = (Wo + P - 1) / P * (P + 3);
        if (best_cost < 0 || cost < best_cost) {
            best = P;
            best_cost = cost;
        }
    }
    return best;
}

/* One round of a VL x VL transpose in registers: rows i and i + b (i & b == 0) exchange
   their blocks of b lanes (two-source shuffles).  Rounds b = VL/2, ..., 2, 1 transpose. */
#define CNN_BLK_TR_STAGE(T, VT, MT)                                                         \
    static inline __attribute__((always_inline)) void cnn_blk_tr_stage_##T(VT* r, int b,   \
                                                                            int rows) {    \
        enum { VL = CNN_VBYTES / sizeof(T) };                                               \
        MT lo, hi;                                                                          \
        _Pragma("GCC unroll 32") for (int l = 0; l < VL; ++l) {                             \
            lo[l] = (l & b) ? VL + l - b : l;                                               \
            hi[l] = (l & b) ? VL + l : l + b;                                               \
        }                                                                                   \
        _Pragma("GCC unroll 32") for (int i = 0; i < VL; ++i) {                             \
            if ((i & b) || i >= rows) continue;                                             \
            VT a = r[i], c = r[i + b];                                                      \
            r[i] = __builtin_shuffle(a, c, lo);                                             \
            r[i + b] = __builtin_shuffle(a, c, hi);                                         \
        }                                                                                   \
    }                                                                                       \
    static inline __attribute__((always_inline)) void cnn_blk_tr_##T(VT* r, int rows) {    \
        enum { VL = CNN_VBYTES / sizeof(T) };                                               \
        if (VL >= 16) cnn_blk_tr_stage_##T(r, 8 % VL, VL);                                  \
        if (VL >= 8) cnn_blk_tr_stage_##T(r, 4 % VL, VL);                                   \
        if (VL >= 4) cnn_blk_tr_stage_##T(r, 2 % VL, VL);                                   \
        if (VL >= 2) cnn_blk_tr_stage_##T(r, 1, VL);                                        \
        (void)rows;                                                                         \
    }
CNN_BLK_TR_STAGE(float, cnn_vf, cnn_vmf)

/* Store the NV x P accumulators acc[v][p] (VL output channels v*VL.. of pixel p) as rows of
   pixels: out[(v * VL + k) * plane + p] = acc[v][p][k], VL pixels at a time transposed in
   registers (cnn_blk_tr_*; zero rows past P) -- instead of VL * P scalar copies through a
   scratch buffer. */
#define CNN_BLK_TRANSPOSE_STORE(T, VT, NV, P, acc, out, plane)                              \
    do {                                                                                    \
        _Pragma("GCC unroll 2") for (int v_ = 0; v_ < NV; ++v_)                             \
        _Pragma("GCC unroll 2") for (int p0_ = 0; p0_ < P; p0_ += VL) {                     \
            enum { NP_ = P < VL ? P : VL };                                                 \
            VT r_[VL];                                                                      \
            _Pragma("GCC unroll 32") for (int q_ = 0; q_ < VL; ++q_)                        \
                r_[q_] = p0_ + q_ < P ? acc[v_][p0_ + q_ < P ? p0_ + q_ : 0] : (VT){0};     \
            cnn_blk_tr_##T(r_, VL);                                                         \
            _Pragma("GCC unroll 32") for (int k_ = 0; k_ < VL; ++k_)                        \
                memcpy((out) + (v_ * VL + k_) * (plane) + p0_, &r_[k_],                     \
                       (P - p0_ < VL ? P - p0_ : VL) * sizeof(T));                          \
        }                                                                                   \
    } while (0)

#define CNN_BLK_KERNEL(T, VT, NV, P, SW, KS)                                                \
    static void cnn_blk_##T##_##NV##_##P##_##SW##_##KS(                                     \
        const T* src, ptrdiff_t ch_stride, ptrdiff_t row_stride, ptrdiff_t sw, ptrdiff_t dw, \
        const T* wp, ptrdiff_t n_in, ptrdiff_t kh, ptrdiff_t kw, const T* bp, T* tmp,       \
        T* out, ptrdiff_t plane) {                                                          \
        enum { VL = CNN_VBYTES / sizeof(T) };                                           \
        const ptrdiff_t s = (SW) ? (SW) : sw;                                               \
        const ptrdiff_t KH = (KS) ? (KS) : kh, KW = (KS) ? (KS) : kw;                       \
        VT acc[NV][P];                                                                      \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) {                              \
            VT b;                                                                           \
            memcpy(&b, bp + v * VL, sizeof b);                                              \
            _Pragma("GCC unroll 32") for (int p = 0; p < P; ++p) acc[v][p] = b;             \
        }                                                                                   \
        for (ptrdiff_t c = 0; c < n_in; ++c) {                                              \
            _Pragma("GCC unroll 3") for (ptrdiff_t i = 0; i < KH; ++i) {                    \
                const T* srow = src + c * ch_stride + i * row_stride;                       \
                _Pragma("GCC unroll 3") for (ptrdiff_t j = 0; j < KW; ++j) {                \
                    const T* sj = srow + j * dw;                                            \
                    const T* wj = wp + (i * KW + j) * NV * VL;                              \
                    VT w[NV];                                                               \
                    _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v)                    \
                        memcpy(&w[v], wj + v * VL, sizeof(VT));                             \
                    _Pragma("GCC unroll 32") for (int p = 0; p < P; ++p) {                  \
                        const T xv = sj[p * s];                                             \
                        _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v)                \
                            acc[v][p] += w[v] * xv;                                         \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            wp += KH * KW * NV * VL;                                                        \
        }                                                                                   \
        if (out) {                                                                          \
            CNN_BLK_TRANSPOSE_STORE(T, VT, NV, P, acc, out, plane);                         \
        } else {                                                                            \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v)                            \
                _Pragma("GCC unroll 32") for (int p = 0; p < P; ++p)                        \
                    memcpy(tmp + (v * P + p) * VL, &acc[v][p], sizeof(VT));                 \
        }                                                                                   \
    }

typedef void (*cnn_blk_kernel_float)(const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                     const float*, float*, float*, ptrdiff_t);

/* Specialized on the stride (1, 2, or any: 0) and on 3x3 kernels (3; any size: 0). */
#define CNN_BLK_KERNELS_SW(T, VT, NV, P) \
    CNN_BLK_KERNEL(T, VT, NV, P, 0, 0)   \
    CNN_BLK_KERNEL(T, VT, NV, P, 1, 0)   \
    CNN_BLK_KERNEL(T, VT, NV, P, 2, 0)   \
    CNN_BLK_KERNEL(T, VT, NV, P, 0, 3)   \
    CNN_BLK_KERNEL(T, VT, NV, P, 1, 3)   \
    CNN_BLK_KERNEL(T, VT, NV, P, 2, 3)

#define CNN_BLK_KERNELS_T(T, VT)     \
    CNN_BLK_KERNELS_SW(T, VT, 1, 4)  \
    CNN_BLK_KERNELS_SW(T, VT, 1, 6)  \
    CNN_BLK_KERNELS_SW(T, VT, 1, 7)  \
    CNN_BLK_KERNELS_SW(T, VT, 1, 8)  \
    CNN_BLK_KERNELS_SW(T, VT, 1, 12) \
    CNN_BLK_KERNELS_SW(T, VT, 1, 14) \
    CNN_BLK_KERNELS_SW(T, VT, 1, 16) \
    CNN_BLK_KERNELS_SW(T, VT, 2, 4)  \
    CNN_BLK_KERNELS_SW(T, VT, 2, 6)  \
    CNN_BLK_KERNELS_SW(T, VT, 2, 7)  \
    CNN_BLK_KERNELS_SW(T, VT, 2, 8)  \
    CNN_BLK_KERNELS_SW(T, VT, 2, 12)

CNN_BLK_KERNELS_T(float, cnn_vf)

#define CNN_BLK_PICK(T, NV, P, KS)                                           \
    return sw == 1 ? cnn_blk_##T##_##NV##_##P##_1_##KS                       \
                   : (sw == 2 ? cnn_blk_##T##_##NV##_##P##_2_##KS            \
                              : cnn_blk_##T##_##NV##_##P##_0_##KS);
#define CNN_BLK_CASE(T, NV, P)                                               \
    case P:                                                                  \
        if (k3) {                                                            \
            CNN_BLK_PICK(T, NV, P, 3)                                        \
        } else {                                                             \
            CNN_BLK_PICK(T, NV, P, 0)                                        \
        }

#define CNN_BLK_SELECT(T)                                                                  \
    static cnn_blk_kernel_##T cnn_blk_select_##T(ptrdiff_t nv, ptrdiff_t P, ptrdiff_t sw,   \
                                                 int k3) {                                 \
        if (nv == 1) {                                                                     \
            switch (P) {                                                                   \
                CNN_BLK_CASE(T, 1, 4)                                                      \
                CNN_BLK_CASE(T, 1, 6)                                                      \
                CNN_BLK_CASE(T, 1, 7)                                                      \
                CNN_BLK_CASE(T, 1, 8)                                                      \
                CNN_BLK_CASE(T, 1, 12)                                                     \
                CNN_BLK_CASE(T, 1, 14)                                                     \
                CNN_BLK_CASE(T, 1, 16)                                                     \
            }                                                                              \
        } else {                                                                           \
            switch (P) {                                                                   \
                CNN_BLK_CASE(T, 2, 4)                                                      \
                CNN_BLK_CASE(T, 2, 6)                                                      \
                CNN_BLK_CASE(T, 2, 7)                                                      \
                CNN_BLK_CASE(T, 2, 8)                                                      \
                CNN_BLK_CASE(T, 2, 12)                                                     \
            }                                                                              \
        }                                                                                  \
        return NULL;                                                                       \
    }

CNN_BLK_SELECT(float)

/* The correlation of one sample's (one group's) zero-padded input planes ``inp`` (n_in
   planes of R x Q, no bounds checks needed) with packed weights ``wpack`` (blocks of OB =
   nv * VL output channels: [block][c][i][j][OB], zero past n_out) and packed biases
   ``bpack`` ([block][OB]): ``out[k, oh, ow]`` for the n_out planes of Ho x Wo, rows
   ``oh0 <= oh < oh1`` (callers split a sample's rows between threads).  Q must cover
   whole blocks of P pixels: Q >= (ceil(Wo / P) * P - 1) * sw + (kw - 1) * dw + 1.  ``tmp``:
   nv * P * VL elements of scratch. */
#define CNN_BLK_CORR(T)                                                                     \
    static void cnn_blk_corr_##T(const T* inp, ptrdiff_t n_in, ptrdiff_t R, ptrdiff_t Q,     \
                                 const T* wpack, const T* bpack, ptrdiff_t n_out,            \
                                 ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw,     \
                                 ptrdiff_t dh, ptrdiff_t dw, T* out, ptrdiff_t Ho,           \
                                 ptrdiff_t Wo, ptrdiff_t oh0, ptrdiff_t oh1, T* tmp) {       \
        const ptrdiff_t VL = CNN_VL_##T;                                                \
        const ptrdiff_t nv = cnn_blk_nv(n_out, VL), OB = nv * VL;                           \
        const ptrdiff_t P = cnn_blk_pixels(nv, Wo);                                         \
        const ptrdiff_t taps = n_in * kh * kw, plane = Ho * Wo;                             \
        cnn_blk_kernel_##T kern = cnn_blk_select_##T(nv, P, sw, kh == 3 && kw == 3);                            \
        for (ptrdiff_t ob = 0; ob * OB < n_out; ++ob) {                                     \
            const T* wp = wpack + ob * taps * OB;                                           \
            const ptrdiff_t nk = n_out - ob * OB < OB ? n_out - ob * OB : OB;               \
            T* o0 = out + ob * OB * plane;                                                  \
            for (ptrdiff_t oh = oh0; oh < oh1; ++oh) {                                      \
                const T* irow = inp + oh * sh * Q;                                          \
                for (ptrdiff_t ow0 = 0; ow0 < Wo; ow0 += P) {                               \
                    const ptrdiff_t np = Wo - ow0 < P ? Wo - ow0 : P;                       \
                    T* ob_out = o0 + oh * Wo + ow0;                                         \
                    if (np == P && nk == OB) {                                   \
                        kern(irow + ow0 * sw, R * Q, dh * Q, sw, dw, wp, n_in, kh, kw,      \
                             bpack + ob * OB, tmp, ob_out, plane);                          \
                        continue;                                                           \
                    }                                                                       \
                    kern(irow + ow0 * sw, R * Q, dh * Q, sw, dw, wp, n_in, kh, kw,          \
                         bpack + ob * OB, tmp, NULL, 0);                                    \
                    for (ptrdiff_t k = 0; k < nk; ++k) {                                    \
                        const T* t = tmp + (k / VL) * P * VL + k % VL;                      \
                        T* o = o0 + k * plane + oh * Wo + ow0;                              \
                        for (ptrdiff_t p = 0; p < np; ++p) o[p] = t[p * VL];                \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

CNN_BLK_CORR(float)

/* d[2 * i] = e[i], d[2 * i + 1] = o[i]: a row of W pixels from its even and odd columns
   (the stride-2 input gradient's column phases; restrict pointers, so it vectorizes). */
#define CNN_BLK_INTERLEAVE2(T)                                                              \
    static void cnn_blk_interleave2_##T(const T* restrict e, const T* restrict o,            \
                                        T* restrict d, ptrdiff_t W) {                        \
        const ptrdiff_t h = W / 2;                                                          \
        for (ptrdiff_t i = 0; i < h; ++i) {                                                 \
            d[2 * i] = e[i];                                                                \
            d[2 * i + 1] = o[i];                                                            \
        }                                                                                   \
        if (W & 1) d[W - 1] = e[h];                                                         \
    }
CNN_BLK_INTERLEAVE2(float)


/* ---- Weight gradient ------------------------------------------------------------------
   dW[o, c, i, j] = sum over pixels of dy[o, oh, ow] * x[c, oh*sh + i*dh, ow*sw + j*dw], with
   the output channels in vector lanes: dy transposed to [block][pixel][OB]
   (cnn_blkw_transpose_*), and a microkernel that keeps NV x CB x JT vectors -- CB input
   channels by JT consecutive taps of one kernel row -- in registers over all pixels of one
   sample: per pixel NV vector loads of dy, CB * JT broadcasts of x, NV * CB * JT FMAs.  The
   sample's sums are then added to the caller's partial [block][c][i][j][OB] (one add per
   entry and sample, in sample order). */

/* GCC's predictive commoning would carry the broadcasts of x[.., ow + 1..] into the next
   pixel's iteration (the same values at unit stride) through the stack: no gain, spills. */
#if defined(__GNUC__) && !defined(__clang__)
#define CNN_NO_PCOM __attribute__((optimize("no-predictive-commoning")))
#else
#define CNN_NO_PCOM
#endif

#define CNN_BLKW_KERNEL(T, VT, NV, CB, JT, SW)                                                 \
    CNN_NO_PCOM static void cnn_blkw_##T##_##NV##_##CB##_##JT##_##SW(                                      \
        const T* x, ptrdiff_t ch_stride, ptrdiff_t Q, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dw, \
        const T* dyT, ptrdiff_t Ho, ptrdiff_t Wo, T* dst, ptrdiff_t dst_ch_stride) {           \
        enum { VL = CNN_VBYTES / sizeof(T) };                                              \
        const ptrdiff_t s = (SW) ? (SW) : sw, d1 = (SW) ? 1 : dw;                              \
        VT acc[NV][CB][JT];                                                                    \
        memset(acc, 0, sizeof acc);                                                            \
        const T* d = dyT;                                                                      \
        for (ptrdiff_t oh = 0; oh < Ho; ++oh) {                                                \
            /* one pointer per channel, advanced pixel by pixel: every load is base +        \
               constant displacement (indexed addresses split each FMA in two uops) */      \
            const T* xc[CB];                                                                   \
            _Pragma("GCC unroll 16") for (int cb = 0; cb < CB; ++cb)                           \
                xc[cb] = x + oh * sh * Q + cb * ch_stride;                                     \
            _Pragma("GCC unroll 1") for (ptrdiff_t ow = 0; ow < Wo; ++ow, d += NV * VL) {      \
                VT dv[NV];                                                                     \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v)                           \
                    memcpy(&dv[v], d + v * VL, sizeof(VT));                                    \
                _Pragma("GCC unroll 16") for (int cb = 0; cb < CB; ++cb) {                     \
                    _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj) {                  \
                        const T xv = xc[cb][jj * d1];                                          \
                        _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v)                   \
                            acc[v][cb][jj] += dv[v] * xv;                                      \
                    }                                                                          \
                    xc[cb] += s;                                                               \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        _Pragma("GCC unroll 16") for (int cb = 0; cb < CB; ++cb)                               \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JT; ++jj)                            \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) {                         \
                    T* o = dst + cb * dst_ch_stride + (jj * NV + v) * VL;                      \
                    VT cur;                                                                    \
                    memcpy(&cur, o, sizeof cur);                                               \
                    cur += acc[v][cb][jj];                                                     \
                    memcpy(o, &cur, sizeof cur);                                               \
                }                                                                              \
    }

typedef void (*cnn_blkw_kernel_float)(const float*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                      ptrdiff_t, const float*, ptrdiff_t, ptrdiff_t, float*,
                                      ptrdiff_t);

#define CNN_BLKW_SW(T, VT, NV, CB, JT)    \
    CNN_BLKW_KERNEL(T, VT, NV, CB, JT, 0) \
    CNN_BLKW_KERNEL(T, VT, NV, CB, JT, 1) \
    CNN_BLKW_KERNEL(T, VT, NV, CB, JT, 2)
#define CNN_BLKW_JT(T, VT, NV, CB) \
    CNN_BLKW_SW(T, VT, NV, CB, 1)  \
    CNN_BLKW_SW(T, VT, NV, CB, 3)  \
    CNN_BLKW_SW(T, VT, NV, CB, 5)
#define CNN_BLKW_CB(T, VT, NV)   \
    CNN_BLKW_JT(T, VT, NV, 1)    \
    CNN_BLKW_JT(T, VT, NV, 2)    \
    CNN_BLKW_JT(T, VT, NV, 4)    \
    CNN_BLKW_JT(T, VT, NV, 8)
CNN_BLKW_CB(float, cnn_vf, 1)
CNN_BLKW_CB(float, cnn_vf, 2)

#define CNN_BLKW_PICK_SW(T, NV, CB, JT)                                          \
    return dw != 1 ? cnn_blkw_##T##_##NV##_##CB##_##JT##_0                       \
        : sw == 1 ? cnn_blkw_##T##_##NV##_##CB##_##JT##_1                        \
                   : (sw == 2 ? cnn_blkw_##T##_##NV##_##CB##_##JT##_2            \
                              : cnn_blkw_##T##_##NV##_##CB##_##JT##_0);
#define CNN_BLKW_PICK_JT(T, NV, CB)                                              \
    if (jt == 5) { CNN_BLKW_PICK_SW(T, NV, CB, 5) }                              \
    else if (jt == 3) { CNN_BLKW_PICK_SW(T, NV, CB, 3) }                         \
    else { CNN_BLKW_PICK_SW(T, NV, CB, 1) }
#define CNN_BLKW_PICK_CB(T, NV)                                                  \
    switch (cb) {                                                                \
        case 8: CNN_BLKW_PICK_JT(T, NV, 8)                                       \
        case 4: CNN_BLKW_PICK_JT(T, NV, 4)                                       \
        case 2: CNN_BLKW_PICK_JT(T, NV, 2)                                       \
        default: CNN_BLKW_PICK_JT(T, NV, 1)                                      \
    }
#define CNN_BLKW_SELECT(T)                                                                  \
    static cnn_blkw_kernel_##T cnn_blkw_select_##T(ptrdiff_t nv, ptrdiff_t cb, ptrdiff_t jt, \
                                                   ptrdiff_t sw, ptrdiff_t dw) {            \
        if (nv == 1) {                                                                      \
            CNN_BLKW_PICK_CB(T, 1)                                                          \
        } else {                                                                            \
            CNN_BLKW_PICK_CB(T, 2)                                                          \
        }                                                                                   \
    }
CNN_BLKW_SELECT(float)

/* Channels per weight-gradient microkernel call: the most (1, 2, 4 or 8) whose
   nv * CB * jt accumulators fit the registers. */
static inline ptrdiff_t cnn_blkw_channels(ptrdiff_t nv, ptrdiff_t jt) {
    ptrdiff_t cb = 8;
    while (cb > 1 && nv * cb * jt > CNN_BLK_NACC) cb /= 2;
    return cb;
}

#if CNN_VBYTES == 64 && defined(__GNUC__) && !defined(__clang__)
/* In-register transpose of VL vectors of VL lanes: butterflies over h = VL/2, ..., 1 lanes
   (GCC's __builtin_shuffle with constant masks: one two-source permute each with AVX-512;
   with AVX2 GCC builds the masks at run time, so those builds keep the scalar tiles). */
#define CNN_VTRANSPOSE 1
#define CNN_TR_DEF(T, VT, IT)                                                               \
    static inline void cnn_tr_##T(VT* r) {                                                  \
        enum { VL = CNN_VBYTES / sizeof(T) };                                               \
        _Pragma("GCC unroll 8") for (int h = VL / 2; h >= 1; h /= 2) {                      \
            IT mlo, mhi;                                                                    \
            _Pragma("GCC unroll 16") for (int l = 0; l < VL; ++l) {                         \
                const int base = l / (2 * h) * (2 * h), off = l % (2 * h);                  \
                mlo[l] = off < h ? base + off : VL + base + off - h;                        \
                mhi[l] = off < h ? base + h + off : VL + base + off;                        \
            }                                                                               \
            _Pragma("GCC unroll 16") for (int i = 0; i < VL; ++i) {                         \
                if (i & h) continue;                                                        \
                const VT a = r[i], b = r[i + h];                                            \
                r[i] = __builtin_shuffle(a, b, mlo);                                        \
                r[i + h] = __builtin_shuffle(a, b, mhi);                                    \
            }                                                                               \
        }                                                                                   \
    }
CNN_TR_DEF(float, cnn_vf, cnn_vmf)
#define CNN_BLKW_VTILES(T, VT)                                                              \
    for (; p0 + VL <= L; p0 += VL)                                                          \
        for (ptrdiff_t v = 0; v * VL < OB; ++v) {                                           \
            VT r[VL];                                                                       \
            for (int k = 0; k < VL; ++k) {                                                  \
                const ptrdiff_t o = ob * OB + v * VL + k;                                   \
                if (o < n_out)                                                              \
                    memcpy(&r[k], dy + o * L + p0, sizeof(VT));                             \
                else                                                                        \
                    memset(&r[k], 0, sizeof(VT));                                           \
            }                                                                               \
            cnn_tr_##T(r);                                                                  \
            for (int p = 0; p < VL; ++p) memcpy(d + (p0 + p) * OB + v * VL, &r[p], sizeof(VT)); \
        }
#else
#define CNN_BLKW_VTILES(T, VT)
#endif

/* dyT[block][pixel][OB] = dy[block * OB + lane][pixel] (zero past n_out) for the n_out
   planes of L pixels of one sample.  With AVX-512, tiles of VL pixels by VL channels
   transposed in registers; else (and for the last pixels) tiles of CNN_BLKW_TILE pixels
   by a block's OB channels, whose output stays in L1 (pixel by pixel over a whole plane,
   each channel's pass stored to another cache line per pixel of a 25-100 KiB block: a
   quarter of the weight gradient's time at 16 channels on 28x28). */
#define CNN_BLKW_TILE 16
#define CNN_BLKW_TRANSPOSE(T, VT)                                                           \
    static void cnn_blkw_transpose_##T(const T* dy, ptrdiff_t n_out, ptrdiff_t L,            \
                                       ptrdiff_t OB, T* dyT) {                               \
        enum { VL = CNN_VBYTES / sizeof(T) };                                               \
        const ptrdiff_t nob = (n_out + OB - 1) / OB;                                        \
        for (ptrdiff_t ob = 0; ob < nob; ++ob) {                                            \
            T* d = dyT + ob * L * OB;                                                       \
            const ptrdiff_t nk = n_out - ob * OB < OB ? n_out - ob * OB : OB;               \
            ptrdiff_t p0 = 0;                                                               \
            CNN_BLKW_VTILES(T, VT)                                                          \
            for (; p0 < L; p0 += CNN_BLKW_TILE) {                                           \
                const ptrdiff_t p1 = L - p0 < CNN_BLKW_TILE ? L : p0 + CNN_BLKW_TILE;       \
                for (ptrdiff_t k = 0; k < nk; ++k) {                                        \
                    const T* src = dy + (ob * OB + k) * L;                                  \
                    for (ptrdiff_t p = p0; p < p1; ++p) d[p * OB + k] = src[p];             \
                }                                                                           \
                for (ptrdiff_t k = nk; k < OB; ++k)                                         \
                    for (ptrdiff_t p = p0; p < p1; ++p) d[p * OB + k] = 0;                  \
            }                                                                               \
        }                                                                                   \
    }
CNN_BLKW_TRANSPOSE(float, cnn_vf)

/* Add one sample's weight gradient to ``part`` ([block][c][i][j][OB]): ``xpad`` its n_in
   zero-padded input planes (R x Q, read at rows oh*sh + i*dh, columns ow*sw + j*dw), ``dyT``
   its transposed output gradient (cnn_blkw_transpose_*). */
#define CNN_BLKW_SAMPLE(T)                                                                  \
    static void cnn_blkw_sample_##T(const T* xpad, ptrdiff_t n_in, ptrdiff_t R, ptrdiff_t Q, \
                                    const T* dyT, ptrdiff_t n_out, ptrdiff_t kh,             \
                                    ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh,  \
                                    ptrdiff_t dw, ptrdiff_t Ho, ptrdiff_t Wo, T* part) {     \
        const ptrdiff_t VL = CNN_VL_##T;                                                \
        const ptrdiff_t nv = cnn_blk_nv(n_out, VL), OB = nv * VL, L = Ho * Wo;              \
        const ptrdiff_t jt = kw % 5 == 0 ? 5 : (kw % 3 == 0 ? 3 : 1);                      \
        const ptrdiff_t cbm = cnn_blkw_channels(nv, jt), khw = kh * kw;                     \
        for (ptrdiff_t ob = 0; ob * OB < n_out; ++ob) {                                     \
            const T* d = dyT + ob * L * OB;                                                 \
            T* pb = part + ob * n_in * khw * OB;                                            \
            for (ptrdiff_t i = 0; i < kh; ++i)                                              \
                for (ptrdiff_t c0 = 0; c0 < n_in;) {                                        \
                    ptrdiff_t cb = cbm;                                                     \
                    while (cb > 1 && c0 + cb > n_in) cb /= 2;                               \
                    cnn_blkw_kernel_##T kern = cnn_blkw_select_##T(nv, cb, jt, sw, dw);         \
                    for (ptrdiff_t j0 = 0; j0 < kw; j0 += jt)                               \
                        kern(xpad + (c0 * R + i * dh) * Q + j0 * dw, R * Q, Q, sh, sw, dw, d, \
                             Ho, Wo, pb + ((c0 * kh + i) * kw + j0) * OB, khw * OB);        \
                    c0 += cb;                                                               \
                }                                                                           \
        }                                                                                   \
    }
CNN_BLKW_SAMPLE(float)

#endif /* CNN_BLOCKED_CONV_H */
