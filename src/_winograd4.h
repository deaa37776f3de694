/* Winograd F(4x4, 3x3): the transforms' sweeps (cnncore/ops/_conv.pyx, section "Winograd
   F(4x4, 3x3)"), in C so that every pointer can be declared restrict: the sweeps read and
   write up to twelve arrays at once, and without that promise GCC leaves them scalar (it
   will not version a loop for that many possible overlaps; and not inlined, so that the
   promise holds).  Compiled into each SIMD build
   of _conv, so the sweeps run at the module's vector width.  Each output is one fixed
   expression of its inputs: no reduction, no order that could depend on the work split.

   Matrices (points 0, +-1, +-2, infinity):
     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
            0 4 0 -5 0 1]
     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
*/
#ifndef CNN_WINOGRAD4_H
#define CNN_WINOGRAD4_H

#include <stddef.h>

#define CNN_W4_DEFINE(T)                                                                     \
    /* B^T on six rows s[0..5] (row stride Q) of n columns: a[k * LA + q]. */               \
    static __attribute__((noinline)) void cnn_w4_in_rows_##T(const T* __restrict__ s, ptrdiff_t Q, ptrdiff_t n,        \
                                   T* __restrict__ a, ptrdiff_t LA) {                        \
        const T* __restrict__ s0 = s;                                                        \
        const T* __restrict__ s1 = s + Q;                                                    \
        const T* __restrict__ s2 = s + 2 * Q;                                                \
        const T* __restrict__ s3 = s + 3 * Q;                                                \
        const T* __restrict__ s4 = s + 4 * Q;                                                \
        const T* __restrict__ s5 = s + 5 * Q;                                                \
        T* __restrict__ a0 = a;                                                              \
        T* __restrict__ a1 = a + LA;                                                         \
        T* __restrict__ a2 = a + 2 * LA;                                                     \
        T* __restrict__ a3 = a + 3 * LA;                                                     \
        T* __restrict__ a4 = a + 4 * LA;                                                     \
        T* __restrict__ a5 = a + 5 * LA;                                                     \
        _Pragma("GCC ivdep") for (ptrdiff_t q = 0; q < n; ++q) {                                                  \
            const T x1 = s1[q], x2 = s2[q], x3 = s3[q], x4 = s4[q];                          \
            a0[q] = (T)4 * s0[q] - (T)5 * x2 + x4;                                           \
            a1[q] = x3 + x4 - (T)4 * (x1 + x2);                                              \
            a2[q] = (T)4 * (x1 - x2) + x4 - x3;                                              \
            a3[q] = (T)2 * (x3 - x1) + x4 - x2;                                              \
            a4[q] = (T)2 * (x1 - x3) + x4 - x2;                                              \
            a5[q] = (T)4 * x1 - (T)5 * x3 + s5[q];                                           \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* ph[k * n + j] = a[4 j + k] (k < 4, j < n): a row's four phases. */                    \
    static __attribute__((noinline)) void cnn_w4_split_##T(const T* __restrict__ a, ptrdiff_t n, T* __restrict__ ph) { \
        T* __restrict__ p1 = ph + n;                                                         \
        T* __restrict__ p2 = ph + 2 * n;                                                     \
        T* __restrict__ p3 = ph + 3 * n;                                                     \
        _Pragma("GCC ivdep") for (ptrdiff_t j = 0; j < n; ++j) {                                                  \
            ph[j] = a[4 * j];                                                                \
            p1[j] = a[4 * j + 1];                                                            \
            p2[j] = a[4 * j + 2];                                                            \
            p3[j] = a[4 * j + 3];                                                            \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* a[4 j + k] = ph[k * n + j] (k < 4, j < n): the inverse of the split. */            \
    static __attribute__((noinline)) void cnn_w4_join_##T(const T* __restrict__ ph,          \
                                                          ptrdiff_t n, T* __restrict__ a) {  \
        _Pragma("GCC ivdep") for (ptrdiff_t j = 0; j < n; ++j) {                             \
            a[4 * j] = ph[j];                                                                \
            a[4 * j + 1] = ph[n + j];                                                        \
            a[4 * j + 2] = ph[2 * n + j];                                                    \
            a[4 * j + 3] = ph[3 * n + j];                                                    \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* B on the columns of one transformed row a (>= 4 per + 8 values): tile u reads         \
       a[4u .. 4u+5]; d[k * S + u] for k < 6.  ph: 4 (per + 1) values of scratch. */         \
    static __attribute__((noinline)) void cnn_w4_in_cols_##T(const T* __restrict__ a, ptrdiff_t per,                  \
                                   T* __restrict__ ph, T* __restrict__ d, ptrdiff_t S) {     \
        const ptrdiff_t n1 = per + 1;                                                        \
        cnn_w4_split_##T(a, n1, ph);                                                         \
        const T* __restrict__ p0 = ph;                                                       \
        const T* __restrict__ p1 = ph + n1;                                                  \
        const T* __restrict__ p2 = ph + 2 * n1;                                              \
        const T* __restrict__ p3 = ph + 3 * n1;                                              \
        T* __restrict__ d0 = d;                                                              \
        T* __restrict__ d1 = d + S;                                                          \
        T* __restrict__ d2 = d + 2 * S;                                                      \
        T* __restrict__ d3 = d + 3 * S;                                                      \
        T* __restrict__ d4 = d + 4 * S;                                                      \
        T* __restrict__ d5 = d + 5 * S;                                                      \
        _Pragma("GCC ivdep") for (ptrdiff_t u = 0; u < per; ++u) {                                                \
            const T b0 = p0[u], b1 = p1[u], b2 = p2[u], b3 = p3[u];                          \
            const T b4 = p0[u + 1], b5 = p1[u + 1];                                          \
            d0[u] = (T)4 * b0 - (T)5 * b2 + b4;                                              \
            d1[u] = b3 + b4 - (T)4 * (b1 + b2);                                              \
            d2[u] = (T)4 * (b1 - b2) + b4 - b3;                                              \
            d3[u] = (T)2 * (b3 - b1) + b4 - b2;                                              \
            d4[u] = (T)2 * (b1 - b3) + b4 - b2;                                              \
            d5[u] = (T)4 * b1 - (T)5 * b3 + b5;                                              \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* A^T on the rows of the 6x6 products of one channel: m[(6 i + j) * S + u];             \
       sa[(6 r + j) * per + u] for output rows r < 4 and columns j < 6. */                   \
    static __attribute__((noinline)) void cnn_w4_out_rows_##T(const T* __restrict__ m, ptrdiff_t S, ptrdiff_t per,     \
                                    T* __restrict__ sa) {                                    \
        for (int j = 0; j < 6; ++j) {                                                        \
            const T* __restrict__ m0 = m + j * S;                                            \
            const T* __restrict__ m1 = m + (6 + j) * S;                                      \
            const T* __restrict__ m2 = m + (12 + j) * S;                                     \
            const T* __restrict__ m3 = m + (18 + j) * S;                                     \
            const T* __restrict__ m4 = m + (24 + j) * S;                                     \
            const T* __restrict__ m5 = m + (30 + j) * S;                                     \
            T* __restrict__ o0 = sa + j * per;                                               \
            T* __restrict__ o1 = sa + (6 + j) * per;                                         \
            T* __restrict__ o2 = sa + (12 + j) * per;                                        \
            T* __restrict__ o3 = sa + (18 + j) * per;                                        \
            _Pragma("GCC ivdep") for (ptrdiff_t u = 0; u < per; ++u) {                                            \
                const T p12 = m1[u] + m2[u], m12 = m1[u] - m2[u];                            \
                const T p34 = m3[u] + m4[u], m34 = m3[u] - m4[u];                            \
                o0[u] = m0[u] + p12 + p34;                                                   \
                o1[u] = m12 + (T)2 * m34;                                                    \
                o2[u] = p12 + (T)4 * p34;                                                    \
                o3[u] = m12 + (T)8 * m34 + m5[u];                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* A on the columns of one output row: s[j * per + u] (j < 6) -> y[4u + c] (+ b).        \
       ph: 4 per values of scratch. */                                                       \
    static __attribute__((noinline)) void cnn_w4_out_cols_##T(const T* __restrict__ s, ptrdiff_t per, T b,             \
                                    T* __restrict__ ph, T* __restrict__ y) {                 \
        const T* __restrict__ s0 = s;                                                        \
        const T* __restrict__ s1 = s + per;                                                  \
        const T* __restrict__ s2 = s + 2 * per;                                              \
        const T* __restrict__ s3 = s + 3 * per;                                              \
        const T* __restrict__ s4 = s + 4 * per;                                              \
        const T* __restrict__ s5 = s + 5 * per;                                              \
        T* __restrict__ y0 = ph;                                                             \
        T* __restrict__ y1 = ph + per;                                                       \
        T* __restrict__ y2 = ph + 2 * per;                                                   \
        T* __restrict__ y3 = ph + 3 * per;                                                   \
        _Pragma("GCC ivdep") for (ptrdiff_t u = 0; u < per; ++u) {                                                \
            const T p12 = s1[u] + s2[u], m12 = s1[u] - s2[u];                                \
            const T p34 = s3[u] + s4[u], m34 = s3[u] - s4[u];                                \
            y0[u] = s0[u] + p12 + p34 + b;                                                   \
            y1[u] = m12 + (T)2 * m34 + b;                                                    \
            y2[u] = p12 + (T)4 * p34 + b;                                                    \
            y3[u] = m12 + (T)8 * m34 + s5[u] + b;                                            \
        }                                                                                    \
        cnn_w4_join_##T(ph, per, y);                                                         \
    }                                                                                        \
                                                                                             \
    /* A on four gradient rows g[0..3] (row stride Q) of n columns: b[k * LB + q], k < 6. */ \
    static __attribute__((noinline)) void cnn_w4_grad_rows_##T(const T* __restrict__ g, ptrdiff_t Q, ptrdiff_t n,      \
                                     T* __restrict__ bq, ptrdiff_t LB) {                     \
        const T* __restrict__ g0 = g;                                                        \
        const T* __restrict__ g1 = g + Q;                                                    \
        const T* __restrict__ g2 = g + 2 * Q;                                                \
        const T* __restrict__ g3 = g + 3 * Q;                                                \
        T* __restrict__ b0 = bq;                                                             \
        T* __restrict__ b1 = bq + LB;                                                        \
        T* __restrict__ b2 = bq + 2 * LB;                                                    \
        T* __restrict__ b3 = bq + 3 * LB;                                                    \
        T* __restrict__ b4 = bq + 4 * LB;                                                    \
        T* __restrict__ b5 = bq + 5 * LB;                                                    \
        _Pragma("GCC ivdep") for (ptrdiff_t q = 0; q < n; ++q) {                                                  \
            const T p02 = g0[q] + g2[q], p13 = g1[q] + g3[q];                                \
            const T r02 = g0[q] + (T)4 * g2[q], r13 = (T)2 * g1[q] + (T)8 * g3[q];           \
            b0[q] = g0[q];                                                                   \
            b1[q] = p02 + p13;                                                               \
            b2[q] = p02 - p13;                                                               \
            b3[q] = r02 + r13;                                                               \
            b4[q] = r02 - r13;                                                               \
            b5[q] = g3[q];                                                                   \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* A^T on the columns of one row bq (tile u reads bq[4u .. 4u+3]): d[k * S + u].         \
       ph: 4 per values of scratch. */                                                       \
    static __attribute__((noinline)) void cnn_w4_grad_cols_##T(const T* __restrict__ bq, ptrdiff_t per,                \
                                     T* __restrict__ ph, T* __restrict__ d, ptrdiff_t S) {   \
        cnn_w4_split_##T(bq, per, ph);                                                       \
        const T* __restrict__ c0 = ph;                                                       \
        const T* __restrict__ c1 = ph + per;                                                 \
        const T* __restrict__ c2 = ph + 2 * per;                                             \
        const T* __restrict__ c3 = ph + 3 * per;                                             \
        T* __restrict__ d0 = d;                                                              \
        T* __restrict__ d1 = d + S;                                                          \
        T* __restrict__ d2 = d + 2 * S;                                                      \
        T* __restrict__ d3 = d + 3 * S;                                                      \
        T* __restrict__ d4 = d + 4 * S;                                                      \
        T* __restrict__ d5 = d + 5 * S;                                                      \
        _Pragma("GCC ivdep") for (ptrdiff_t u = 0; u < per; ++u) {                                                \
            const T p02 = c0[u] + c2[u], p13 = c1[u] + c3[u];                                \
            const T r02 = c0[u] + (T)4 * c2[u], r13 = (T)2 * c1[u] + (T)8 * c3[u];           \
            d0[u] = c0[u];                                                                   \
            d1[u] = p02 + p13;                                                               \
            d2[u] = p02 - p13;                                                               \
            d3[u] = r02 + r13;                                                               \
            d4[u] = r02 - r13;                                                               \
            d5[u] = c3[u];                                                                   \
        }                                                                                    \
    }

CNN_W4_DEFINE(float)
CNN_W4_DEFINE(double)

#endif /* CNN_WINOGRAD4_H */
