/* 2x2 / stride-2 max pooling (no padding, no dilation): the forward (with or without the
   argmax indices) and the backward of one NCHW plane, for cnncore/ops/_pool.pyx.

   Written in C with GCC/Clang vector extensions and the x86 max intrinsics, so that one
   source compiles to SSE2, AVX2 and AVX-512 code.  The plane functions are compiled three
   times into the one module (function multiversioning by hand: this header includes itself
   once per instruction-set level, each time under `#pragma GCC target`, with the widest
   vector of that level), and the public cnn_p2_*_plane_* functions call the clone of the
   level set by cnn_p2_set_level (0 baseline, 1 AVX2+FMA, 2 AVX-512; cnncore.ops.pool sets it
   from the CPU and CNNCORE_SIMD, as _config.load_kernels picks the other modules' builds).
   Only these kernels need the wider shuffles; building the whole pooling module once per
   level, as before, cost two more compiles of it (about 10 s of CPU time per install).

   Forward, output row oh from input rows a = 2*oh and b = 2*oh + 1: one step of N outputs
   loads 2N contiguous values of each row, splits them into even and odd columns with one
   shuffle each, and takes
       ha = max(odd(a), even(a)),  hb = max(odd(b), even(b)),  y = max(hb, ha)
   with max(v, m) = v > m ? v : m (the MAXPS/MAXPD instruction with that operand order): the
   first maximum of the pair (a, a+1), of (b, b+1), then of the two -- which is the first
   maximum of the window in row-major order, i.e. PyTorch's scan (ties, +-0 included) for
   windows without NaN.  The index of the maximum comes from the same compares.  A row whose
   width is not a multiple of the vector ends with one overlapping step (it writes a few
   outputs again, with the same values).  Each call sums its inputs into a NaN detector (a
   NaN input makes it NaN); a plane that had a NaN returns 1 and the caller computes it again
   with the exact scan (a NaN wins), so the fast path never decides a NaN window.  Every
   level computes the same bits (maxima, indices and gradients are selections, not sums).

   Backward of a plane whose indices all lie in their own windows (the windows do not
   overlap, so every input position receives at most one gradient): each input position is
   written once, with 0.0 + g (the bits a zero-filled scatter-add gives: -0.0 becomes +0.0)
   or +0.0.  A plane with an index outside its window returns 1 without any guarantee about
   what it wrote; the caller then runs the generic scatter on it (which also reports an
   out-of-range index).
*/
#ifndef CNN_P2_ISA
/* ==== First inclusion: types, step macros, the three clones, the dispatch. ==== */
#ifndef CNN_POOL2X2_H
#define CNN_POOL2X2_H

/* The widest level this compiler builds (x86-64 GCC >= 8 or Clang: all three). */
#if defined(__x86_64__) && defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 8)
#define CNN_P2_MAX_ISA 2
#define CNN_P2_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CNN_P2_TARGET_AVX512 \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512cd,avx512dq,avx512bw,avx512vl")))
#else
#define CNN_P2_MAX_ISA 0
#endif

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef float cnn_p2_f4 __attribute__((vector_size(16)));
typedef int32_t cnn_p2_i4 __attribute__((vector_size(16)));
typedef int64_t cnn_p2_q4 __attribute__((vector_size(32)));
typedef double cnn_p2_d2 __attribute__((vector_size(16)));
typedef int64_t cnn_p2_q2 __attribute__((vector_size(16)));
typedef double cnn_p2_d4 __attribute__((vector_size(32)));
typedef float cnn_p2_f8 __attribute__((vector_size(32)));
typedef int32_t cnn_p2_i8 __attribute__((vector_size(32)));
typedef int64_t cnn_p2_q8 __attribute__((vector_size(64)));
typedef double cnn_p2_d8 __attribute__((vector_size(64)));
typedef float cnn_p2_f16 __attribute__((vector_size(64)));
typedef int32_t cnn_p2_i16 __attribute__((vector_size(64)));
typedef int64_t cnn_p2_q16 __attribute__((vector_size(128)));

/* max(v, m) = v > m ? v : m, exactly the instruction (never reordered: IEEE max). */
static inline cnn_p2_f4 cnn_p2_max_f4(cnn_p2_f4 v, cnn_p2_f4 m) {
    return (cnn_p2_f4)_mm_max_ps((__m128)v, (__m128)m);
}
static inline cnn_p2_d2 cnn_p2_max_d2(cnn_p2_d2 v, cnn_p2_d2 m) {
    return (cnn_p2_d2)_mm_max_pd((__m128d)v, (__m128d)m);
}
#if CNN_P2_MAX_ISA >= 1
CNN_P2_TARGET_AVX2 static inline cnn_p2_f8 cnn_p2_max_f8(cnn_p2_f8 v, cnn_p2_f8 m) {
    return (cnn_p2_f8)_mm256_max_ps((__m256)v, (__m256)m);
}
CNN_P2_TARGET_AVX2 static inline cnn_p2_d4 cnn_p2_max_d4(cnn_p2_d4 v, cnn_p2_d4 m) {
    return (cnn_p2_d4)_mm256_max_pd((__m256d)v, (__m256d)m);
}
CNN_P2_TARGET_AVX512 static inline cnn_p2_f16 cnn_p2_max_f16(cnn_p2_f16 v, cnn_p2_f16 m) {
    return (cnn_p2_f16)_mm512_max_ps((__m512)v, (__m512)m);
}
CNN_P2_TARGET_AVX512 static inline cnn_p2_d8 cnn_p2_max_d8(cnn_p2_d8 v, cnn_p2_d8 m) {
    return (cnn_p2_d8)_mm512_max_pd((__m512d)v, (__m512d)m);
}
#endif /* CNN_P2_MAX_ISA >= 1 */

#define CNN_P2_UNPAREN(...) __VA_ARGS__

/* A vector of VI's lane type holding the scalar s. */
#define CNN_P2_SPLAT(VI, s) ((VI){0} + (__typeof__(((VI){0})[0]))(s))

/* Shuffle index lists: even / odd lanes of the concatenation of two N-lane vectors, the
   interleave of two N-lane vectors (low and high half), and 0, 2, 4, ... */
#define CNN_P2_EV2 (0, 2)
#define CNN_P2_OD2 (1, 3)
#define CNN_P2_EV4 (0, 2, 4, 6)
#define CNN_P2_OD4 (1, 3, 5, 7)
#define CNN_P2_EV8 (0, 2, 4, 6, 8, 10, 12, 14)
#define CNN_P2_OD8 (1, 3, 5, 7, 9, 11, 13, 15)
#define CNN_P2_EV16 (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define CNN_P2_OD16 (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define CNN_P2_LO2 (0, 2)
#define CNN_P2_HI2 (1, 3)
#define CNN_P2_LO4 (0, 4, 1, 5)
#define CNN_P2_HI4 (2, 6, 3, 7)
#define CNN_P2_LO8 (0, 8, 1, 9, 2, 10, 3, 11)
#define CNN_P2_HI8 (4, 12, 5, 13, 6, 14, 7, 15)
#define CNN_P2_LO16 (0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define CNN_P2_HI16 (8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#define CNN_P2_IOTA2_2 (0, 2)
#define CNN_P2_IOTA2_4 (0, 2, 4, 6)
#define CNN_P2_IOTA2_8 (0, 2, 4, 6, 8, 10, 12, 14)
#define CNN_P2_IOTA2_16 (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)

/* One forward step of N outputs at column t of the output row (types: VT values, VI the
   compare masks, VQ N int64 indices).  Adds the inputs into NAN (a VT accumulator). */
#define CNN_P2_FWD_STEP(T, VT, VI, VQ, N, MAX, EV, OD, IOTA, NAN)                          \
    do {                                                                                    \
        VT a0, a1, b0, b1;                                                                  \
        memcpy(&a0, a + 2 * t, sizeof a0);                                                  \
        memcpy(&a1, a + 2 * t + N, sizeof a1);                                              \
        memcpy(&b0, b + 2 * t, sizeof b0);                                                  \
        memcpy(&b1, b + 2 * t + N, sizeof b1);                                              \
        VT ea = __builtin_shufflevector(a0, a1, CNN_P2_UNPAREN EV), oa = __builtin_shufflevector(a0, a1, CNN_P2_UNPAREN OD); \
        VT eb = __builtin_shufflevector(b0, b1, CNN_P2_UNPAREN EV), ob = __builtin_shufflevector(b0, b1, CNN_P2_UNPAREN OD); \
        VT ha = MAX(oa, ea), hb = MAX(ob, eb), m = MAX(hb, ha);                             \
        memcpy(yr + t, &m, sizeof m);                                                       \
        NAN += (a0 + a1) + (b0 + b1);                                                       \
        if (ir) {                                                                           \
            VI ma = oa > ea, mb = ob > eb, mv = hb > ha;                                    \
            VI code = (mv & CNN_P2_SPLAT(VI, W)) + (((mv & mb) | (~mv & ma)) & 1);                \
            VI pos = code + (VI){CNN_P2_UNPAREN IOTA} + CNN_P2_SPLAT(VI, row0 + 2 * t);                                    \
            VQ q = __builtin_convertvector(pos, VQ);                                        \
            memcpy(ir + t, &q, sizeof q);                                                   \
        }                                                                                   \
    } while (0)

/* A row of Wo outputs in steps of N (the last one overlapping when N does not divide Wo);
   Wo >= N. */
#define CNN_P2_FWD_ROW(T, VT, VI, VQ, N, MAX, EV, OD, IOTA, NAN)                            \
    do {                                                                                    \
        ptrdiff_t t = 0;                                                                    \
        for (; t + N <= Wo; t += N) CNN_P2_FWD_STEP(T, VT, VI, VQ, N, MAX, EV, OD, IOTA, NAN); \
        if (t < Wo) {                                                                       \
            t = Wo - N;                                                                     \
            CNN_P2_FWD_STEP(T, VT, VI, VQ, N, MAX, EV, OD, IOTA, NAN);                      \
        }                                                                                   \
    } while (0)

/* Scalar row (rows narrower than the narrowest vector): the same rule. */
#define CNN_P2_FWD_SCALAR(T)                                                                \
    do {                                                                                    \
        for (ptrdiff_t t = 0; t < Wo; ++t) {                                                \
            T a0 = a[2 * t], a1 = a[2 * t + 1], b0 = b[2 * t], b1 = b[2 * t + 1];           \
            T ha = a1 > a0 ? a1 : a0, hb = b1 > b0 ? b1 : b0;                               \
            yr[t] = hb > ha ? hb : ha;                                                      \
            nan_s += (a0 + a1) + (b0 + b1);                                                 \
            if (ir) {                                                                       \
                int64_t code = hb > ha ? (W + (b1 > b0)) : (a1 > a0);                       \
                ir[t] = row0 + 2 * t + code;                                                \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* One backward step of N outputs at column t: gradient g (masked by a fused ReLU's output
   mk: kept where !(mk <= 0)), indices -> rows a and b of the input gradient.  VI: masks of
   the value lanes; VQ: N int64. */
#define CNN_P2_BWD_STEP(T, VT, VI, VQ, N, LO, HI, IOTA)                                     \
    do {                                                                                    \
        VT gv;                                                                              \
        VQ q;                                                                               \
        memcpy(&gv, gr + t, sizeof gv);                                                     \
        memcpy(&q, ir + t, sizeof q);                                                       \
        q -= (VQ){CNN_P2_UNPAREN IOTA} + CNN_P2_SPLAT(VQ, row0 + 2 * t);                                                   \
        VQ ok = (q == 0) | (q == 1) | (q == CNN_P2_SPLAT(VQ, W)) | (q == CNN_P2_SPLAT(VQ, W + 1));                              \
        for (int k = 0; k < N; ++k) bad |= ~ok[k];                                          \
        VI code = __builtin_convertvector(q, VI);                                           \
        VI gb = (VI)gv;                                                                     \
        if (mr) {                                                                           \
            VT mk;                                                                          \
            memcpy(&mk, mr + t, sizeof mk);                                                 \
            gb &= ~(mk <= 0);                                                               \
        }                                                                                   \
        VT s0 = (VT)(gb & (code == 0)) + (T)0, s1 = (VT)(gb & (code == 1)) + (T)0;          \
        VT s2 = (VT)(gb & (code == CNN_P2_SPLAT(VI, W))) + (T)0;                                  \
        VT s3 = (VT)(gb & (code == CNN_P2_SPLAT(VI, W + 1))) + (T)0;                              \
        VT a0 = __builtin_shufflevector(s0, s1, CNN_P2_UNPAREN LO), a1 = __builtin_shufflevector(s0, s1, CNN_P2_UNPAREN HI); \
        VT b0 = __builtin_shufflevector(s2, s3, CNN_P2_UNPAREN LO), b1 = __builtin_shufflevector(s2, s3, CNN_P2_UNPAREN HI); \
        memcpy(a + 2 * t, &a0, sizeof a0);                                                  \
        memcpy(a + 2 * t + N, &a1, sizeof a1);                                              \
        memcpy(b + 2 * t, &b0, sizeof b0);                                                  \
        memcpy(b + 2 * t + N, &b1, sizeof b1);                                              \
    } while (0)

#define CNN_P2_BWD_ROW(T, VT, VI, VQ, N, LO, HI, IOTA)                                      \
    do {                                                                                    \
        ptrdiff_t t = 0;                                                                    \
        for (; t + N <= Wo; t += N) CNN_P2_BWD_STEP(T, VT, VI, VQ, N, LO, HI, IOTA);        \
        if (t < Wo) {                                                                       \
            t = Wo - N;                                                                     \
            CNN_P2_BWD_STEP(T, VT, VI, VQ, N, LO, HI, IOTA);                                \
        }                                                                                   \
    } while (0)

#define CNN_P2_BWD_SCALAR(T)                                                                \
    do {                                                                                    \
        for (ptrdiff_t t = 0; t < Wo; ++t) {                                                \
            int64_t q = ir[t] - (row0 + 2 * t);                                             \
            T gv = gr[t];                                                                   \
            if (mr && mr[t] <= 0) gv = 0;                                                   \
            bad |= !(q == 0 || q == 1 || q == W || q == W + 1);                             \
            a[2 * t] = (q == 0 ? gv : 0) + (T)0;                                            \
            a[2 * t + 1] = (q == 1 ? gv : 0) + (T)0;                                        \
            b[2 * t] = (q == W ? gv : 0) + (T)0;                                            \
            b[2 * t + 1] = (q == W + 1 ? gv : 0) + (T)0;                                    \
        }                                                                                   \
    } while (0)

/* The clones: cnn_p2_*_l0 (the module's own flags), _l1 (AVX2+FMA), _l2 (AVX-512). */
#define CNN_P2_CAT2(f, level) f##_l##level
#define CNN_P2_CAT(f, level) CNN_P2_CAT2(f, level)
#define CNN_P2_FN(f) CNN_P2_CAT(f, CNN_P2_ISA)

#define CNN_P2_ISA 0
#include "_pool2x2.h"
#undef CNN_P2_ISA

#if CNN_P2_MAX_ISA >= 2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define CNN_P2_ISA 1
#include "_pool2x2.h"
#undef CNN_P2_ISA
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target( \
    "avx2,fma,f16c,avx512f,avx512cd,avx512dq,avx512bw,avx512vl"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512cd,avx512dq,avx512bw,avx512vl")
#endif
#define CNN_P2_ISA 2
#include "_pool2x2.h"
#undef CNN_P2_ISA
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

/* The level the public functions run (written once at import, before any kernel runs). */
static int cnn_p2_level = 0;

/* Run the clones of `level` (0 baseline, 1 AVX2+FMA, 2 AVX-512) from now on, capped to what
   was compiled and to what this CPU runs (the same feature sets as cnncore._threads);
   returns the level set. */
static int cnn_p2_set_level(int level) {
    if (level > CNN_P2_MAX_ISA) level = CNN_P2_MAX_ISA;
#if CNN_P2_MAX_ISA >= 2
    __builtin_cpu_init();
    if (level >= 1 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                        && __builtin_cpu_supports("f16c")))
        level = 0;
    if (level >= 2 && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
                        && __builtin_cpu_supports("avx512dq")
                        && __builtin_cpu_supports("avx512bw")
                        && __builtin_cpu_supports("avx512vl")))
        level = 1;
#endif
    cnn_p2_level = level < 0 ? 0 : level;
    return cnn_p2_level;
}

#if CNN_P2_MAX_ISA >= 2
#define CNN_P2_DISPATCH(f, ...)                      \
    switch (cnn_p2_level) {                          \
        case 2: return f##_l2(__VA_ARGS__);          \
        case 1: return f##_l1(__VA_ARGS__);          \
        default: return f##_l0(__VA_ARGS__);         \
    }
#else
#define CNN_P2_DISPATCH(f, ...) return f##_l0(__VA_ARGS__);
#endif

static int cnn_p2_fwd_plane_float(const float* x, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                  float* y, int64_t* idx) {
    CNN_P2_DISPATCH(cnn_p2_fwd_plane_float, x, W, Ho, Wo, y, idx)
}
static int cnn_p2_fwd_plane_double(const double* x, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                   double* y, int64_t* idx) {
    CNN_P2_DISPATCH(cnn_p2_fwd_plane_double, x, W, Ho, Wo, y, idx)
}
static int cnn_p2_bwd_plane_float(const float* g, const int64_t* idx, const float* mask,
                                  ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                  float* dx) {
    CNN_P2_DISPATCH(cnn_p2_bwd_plane_float, g, idx, mask, H, W, Ho, Wo, dx)
}
static int cnn_p2_bwd_plane_double(const double* g, const int64_t* idx, const double* mask,
                                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                   double* dx) {
    CNN_P2_DISPATCH(cnn_p2_bwd_plane_double, g, idx, mask, H, W, Ho, Wo, dx)
}

#endif /* CNN_POOL2X2_H */

#else
/* ==== Included again with CNN_P2_ISA = 0, 1, 2: the plane functions of that level. ==== */

/* The forward of one plane: x (H x W, H >= 2*Ho, W >= 2*Wo) -> y (Ho x Wo) and, when idx is
   not NULL, the flat in-plane indices of the maxima (needs H*W < 2**31).  Returns 1 when an
   input was NaN (y and idx are then to be computed again by the exact scan), else 0. */
static int CNN_P2_FN(cnn_p2_fwd_plane_float)(const float* x, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                  float* y, int64_t* idx) {
    cnn_p2_f4 nan4 = {0};
    float nan_s = 0;
#if CNN_P2_ISA >= 1
    cnn_p2_f8 nan8 = {0};
#endif
#if CNN_P2_ISA >= 2
    cnn_p2_f16 nan16 = {0};
#endif
    for (ptrdiff_t oh = 0; oh < Ho; ++oh) {
        const float* a = x + 2 * oh * W;
        const float* b = a + W;
        float* yr = y + oh * Wo;
        int64_t* ir = idx ? idx + oh * Wo : NULL;
        const int32_t row0 = (int32_t)(2 * oh * W);
#if CNN_P2_ISA >= 2
        if (Wo >= 16) {
            CNN_P2_FWD_ROW(float, cnn_p2_f16, cnn_p2_i16, cnn_p2_q16, 16, cnn_p2_max_f16,
                           CNN_P2_EV16, CNN_P2_OD16, CNN_P2_IOTA2_16, nan16);
            continue;
        }
#endif
#if CNN_P2_ISA >= 1
        if (Wo >= 8) {
            CNN_P2_FWD_ROW(float, cnn_p2_f8, cnn_p2_i8, cnn_p2_q8, 8, cnn_p2_max_f8, CNN_P2_EV8,
                           CNN_P2_OD8, CNN_P2_IOTA2_8, nan8);
            continue;
        }
#endif
        if (Wo >= 4) {
            CNN_P2_FWD_ROW(float, cnn_p2_f4, cnn_p2_i4, cnn_p2_q4, 4, cnn_p2_max_f4, CNN_P2_EV4,
                           CNN_P2_OD4, CNN_P2_IOTA2_4, nan4);
            continue;
        }
        CNN_P2_FWD_SCALAR(float);
    }
    float s = nan_s;
    for (int k = 0; k < 4; ++k) s += nan4[k] * 0.0f;
#if CNN_P2_ISA >= 1
    for (int k = 0; k < 8; ++k) s += nan8[k] * 0.0f;
#endif
#if CNN_P2_ISA >= 2
    for (int k = 0; k < 16; ++k) s += nan16[k] * 0.0f;
#endif
    return s != s;
}

static int CNN_P2_FN(cnn_p2_fwd_plane_double)(const double* x, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                   double* y, int64_t* idx) {
    cnn_p2_d2 nan2 = {0};
    double nan_s = 0;
#if CNN_P2_ISA >= 1
    cnn_p2_d4 nan4 = {0};
#endif
#if CNN_P2_ISA >= 2
    cnn_p2_d8 nan8 = {0};
#endif
    for (ptrdiff_t oh = 0; oh < Ho; ++oh) {
        const double* a = x + 2 * oh * W;
        const double* b = a + W;
        double* yr = y + oh * Wo;
        int64_t* ir = idx ? idx + oh * Wo : NULL;
        const int64_t row0 = 2 * oh * W;
#if CNN_P2_ISA >= 2
        if (Wo >= 8) {
            CNN_P2_FWD_ROW(double, cnn_p2_d8, cnn_p2_q8, cnn_p2_q8, 8, cnn_p2_max_d8, CNN_P2_EV8,
                           CNN_P2_OD8, CNN_P2_IOTA2_8, nan8);
            continue;
        }
#endif
#if CNN_P2_ISA >= 1
        if (Wo >= 4) {
            CNN_P2_FWD_ROW(double, cnn_p2_d4, cnn_p2_q4, cnn_p2_q4, 4, cnn_p2_max_d4, CNN_P2_EV4,
                           CNN_P2_OD4, CNN_P2_IOTA2_4, nan4);
            continue;
        }
#endif
        if (Wo >= 2) {
            CNN_P2_FWD_ROW(double, cnn_p2_d2, cnn_p2_q2, cnn_p2_q2, 2, cnn_p2_max_d2, CNN_P2_EV2,
                           CNN_P2_OD2, CNN_P2_IOTA2_2, nan2);
            continue;
        }
        CNN_P2_FWD_SCALAR(double);
    }
    double s = nan_s;
    for (int k = 0; k < 2; ++k) s += nan2[k] * 0.0;
#if CNN_P2_ISA >= 1
    for (int k = 0; k < 4; ++k) s += nan4[k] * 0.0;
#endif
#if CNN_P2_ISA >= 2
    for (int k = 0; k < 8; ++k) s += nan8[k] * 0.0;
#endif
    return s != s;
}

/* The backward of one plane: g and idx (Ho x Wo; mask: a fused ReLU's output or NULL) -> dx
   (H x W, H >= 2*Ho, W >= 2*Wo; positions outside every window are zeroed).  Returns 1 when
   an index lies outside its window (dx is then to be computed by the generic scatter). */
static int CNN_P2_FN(cnn_p2_bwd_plane_float)(const float* g, const int64_t* idx, const float* mask,
                                  ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                  float* dx) {
    int64_t bad = 0;
    if (H != 2 * Ho || W != 2 * Wo) memset(dx, 0, (size_t)(H * W) * sizeof(float));
    for (ptrdiff_t oh = 0; oh < Ho; ++oh) {
        if (bad) return 1; /* (the rows so far had an index outside its window) */
        float* a = dx + 2 * oh * W;
        float* b = a + W;
        const float* gr = g + oh * Wo;
        const int64_t* ir = idx + oh * Wo;
        const float* mr = mask ? mask + oh * Wo : NULL;
        const int64_t row0 = 2 * oh * W;
#if CNN_P2_ISA >= 2
        if (Wo >= 16) {
            CNN_P2_BWD_ROW(float, cnn_p2_f16, cnn_p2_i16, cnn_p2_q16, 16, CNN_P2_LO16,
                           CNN_P2_HI16, CNN_P2_IOTA2_16);
            continue;
        }
#endif
#if CNN_P2_ISA >= 1
        if (Wo >= 8) {
            CNN_P2_BWD_ROW(float, cnn_p2_f8, cnn_p2_i8, cnn_p2_q8, 8, CNN_P2_LO8, CNN_P2_HI8,
                           CNN_P2_IOTA2_8);
            continue;
        }
#endif
        if (Wo >= 4) {
            CNN_P2_BWD_ROW(float, cnn_p2_f4, cnn_p2_i4, cnn_p2_q4, 4, CNN_P2_LO4, CNN_P2_HI4,
                           CNN_P2_IOTA2_4);
            continue;
        }
        CNN_P2_BWD_SCALAR(float);
    }
    return bad != 0;
}

static int CNN_P2_FN(cnn_p2_bwd_plane_double)(const double* g, const int64_t* idx, const double* mask,
                                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t Ho, ptrdiff_t Wo,
                                   double* dx) {
    int64_t bad = 0;
    if (H != 2 * Ho || W != 2 * Wo) memset(dx, 0, (size_t)(H * W) * sizeof(double));
    for (ptrdiff_t oh = 0; oh < Ho; ++oh) {
        if (bad) return 1;
        double* a = dx + 2 * oh * W;
        double* b = a + W;
        const double* gr = g + oh * Wo;
        const int64_t* ir = idx + oh * Wo;
        const double* mr = mask ? mask + oh * Wo : NULL;
        const int64_t row0 = 2 * oh * W;
#if CNN_P2_ISA >= 2
        if (Wo >= 8) {
            CNN_P2_BWD_ROW(double, cnn_p2_d8, cnn_p2_q8, cnn_p2_q8, 8, CNN_P2_LO8, CNN_P2_HI8,
                           CNN_P2_IOTA2_8);
            continue;
        }
#endif
#if CNN_P2_ISA >= 1
        if (Wo >= 4) {
            CNN_P2_BWD_ROW(double, cnn_p2_d4, cnn_p2_q4, cnn_p2_q4, 4, CNN_P2_LO4, CNN_P2_HI4,
                           CNN_P2_IOTA2_4);
            continue;
        }
#endif
        if (Wo >= 2) {
            CNN_P2_BWD_ROW(double, cnn_p2_d2, cnn_p2_q2, cnn_p2_q2, 2, CNN_P2_LO2, CNN_P2_HI2,
                           CNN_P2_IOTA2_2);
            continue;
        }
        CNN_P2_BWD_SCALAR(double);
    }
    return bad != 0;
}

#endif /* CNN_P2_ISA */
