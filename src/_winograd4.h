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
    /* B^T on six input vectors x0..x5 of n values: y0..y5 (the rows and the columns         \
       sweeps of the input transform both run this loop). */                                 \
    static __attribute__((noinline)) void cnn_w4_bt_##T(                                     \
        const T* __restrict__ x0, const T* __restrict__ x1, const T* __restrict__ x2,        \
        const T* __restrict__ x3, const T* __restrict__ x4, const T* __restrict__ x5,        \
        ptrdiff_t n, T* __restrict__ y0, T* __restrict__ y1, T* __restrict__ y2,             \
        T* __restrict__ y3, T* __restrict__ y4, T* __restrict__ y5) {                        \
        _Pragma("GCC ivdep") for (ptrdiff_t q = 0; q < n; ++q) {                             \
            const T v1 = x1[q], v2 = x2[q], v3 = x3[q], v4 = x4[q];                          \
            y0[q] = (T)4 * x0[q] - (T)5 * v2 + v4;                                           \
            y1[q] = v3 + v4 - (T)4 * (v1 + v2);                                              \
            y2[q] = (T)4 * (v1 - v2) + v4 - v3;                                              \
            y3[q] = (T)2 * (v3 - v1) + v4 - v2;                                              \
            y4[q] = (T)2 * (v1 - v3) + v4 - v2;                                              \
            y5[q] = (T)4 * v1 - (T)5 * v3 + x5[q];                                           \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* B^T on six rows s[0..5] (row stride Q) of n columns: a[k * LA + q]. */                \
    static void cnn_w4_in_rows_##T(const T* s, ptrdiff_t Q, ptrdiff_t n, T* a, ptrdiff_t LA) {\
        cnn_w4_bt_##T(s, s + Q, s + 2 * Q, s + 3 * Q, s + 4 * Q, s + 5 * Q, n,               \
                      a, a + LA, a + 2 * LA, a + 3 * LA, a + 4 * LA, a + 5 * LA);            \
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
    static void cnn_w4_in_cols_##T(const T* a, ptrdiff_t per, T* ph, T* d, ptrdiff_t S) {    \
        const ptrdiff_t n1 = per + 1;                                                        \
        cnn_w4_split_##T(a, n1, ph);                                                         \
        cnn_w4_bt_##T(ph, ph + n1, ph + 2 * n1, ph + 3 * n1, ph + 1, ph + n1 + 1, per,       \
                      d, d + S, d + 2 * S, d + 3 * S, d + 4 * S, d + 5 * S);                 \
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
    /* A on four vectors x0..x3 of n values: y0..y5 (the rows and the columns sweeps of      \
       the weight gradient's output-gradient transform both run this loop). */               \
    static __attribute__((noinline)) void cnn_w4_a_##T(                                      \
        const T* __restrict__ x0, const T* __restrict__ x1, const T* __restrict__ x2,        \
        const T* __restrict__ x3, ptrdiff_t n, T* __restrict__ y0, T* __restrict__ y1,       \
        T* __restrict__ y2, T* __restrict__ y3, T* __restrict__ y4, T* __restrict__ y5) {    \
        _Pragma("GCC ivdep") for (ptrdiff_t q = 0; q < n; ++q) {                             \
            const T p02 = x0[q] + x2[q], p13 = x1[q] + x3[q];                                \
            const T r02 = x0[q] + (T)4 * x2[q], r13 = (T)2 * x1[q] + (T)8 * x3[q];           \
            y0[q] = x0[q];                                                                   \
            y1[q] = p02 + p13;                                                               \
            y2[q] = p02 - p13;                                                               \
            y3[q] = r02 + r13;                                                               \
            y4[q] = r02 - r13;                                                               \
            y5[q] = x3[q];                                                                   \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* A on four gradient rows g[0..3] (row stride Q) of n columns: b[k * LB + q], k < 6. */ \
    static void cnn_w4_grad_rows_##T(const T* g, ptrdiff_t Q, ptrdiff_t n, T* bq, ptrdiff_t LB) {\
        cnn_w4_a_##T(g, g + Q, g + 2 * Q, g + 3 * Q, n,                                      \
                     bq, bq + LB, bq + 2 * LB, bq + 3 * LB, bq + 4 * LB, bq + 5 * LB);       \
    }                                                                                        \
                                                                                             \
    /* A^T on the columns of one row bq (tile u reads bq[4u .. 4u+3]): d[k * S + u].         \
       ph: 4 per values of scratch. */                                                       \
    static void cnn_w4_grad_cols_##T(const T* bq, ptrdiff_t per, T* ph, T* d, ptrdiff_t S) { \
        cnn_w4_split_##T(bq, per, ph);                                                       \
        cnn_w4_a_##T(ph, ph + per, ph + 2 * per, ph + 3 * per, per,                          \
                     d, d + S, d + 2 * S, d + 3 * S, d + 4 * S, d + 5 * S);                  \
    }

CNN_W4_DEFINE(float)
CNN_W4_DEFINE(double)

#endif /* CNN_WINOGRAD4_H */
