/* Winograd F(4x4, 3x3): the transforms' sweeps (cnncore/ops/_conv.pyx, section "Winograd
   F(4x4, 3x3)"), in C so that every pointer can be declared restrict: the sweeps read and
   write up to twelve arrays at once, and without that promise GCC leaves them scalar (it
   will not version a loop for that many possible overlaps; and not inlined, so that the
   promise holds).  Compiled into each SIMD build of _conv, so the sweeps run at the
   module's vector width.  The input and output-gradient transforms sweep over the channels
   of one tile (cnn_w4c_*), the output transform over the tiles of one channel (cnn_w4_*).
   Each output is one fixed expression of its inputs: no reduction, no order that could
   depend on the work split.

   Matrices (points 0, +-1, +-2, infinity):
     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
            0 4 0 -5 0 1]
     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
*/
#ifndef CNN_WINOGRAD4_H
#define CNN_WINOGRAD4_H

#include <stddef.h>
#include <string.h>


/* Tile-minor output transform (wino4_conv): the GEMMs' products m[xi * S + u] of one
   output channel over a block of per tiles, transformed back in two sweeps over the tiles,
   the output rows' four phases interleaved back (join). */
#define CNN_W4_DEFINE(T)                                                                     \
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

CNN_W4_DEFINE(float)
CNN_W4_DEFINE(double)

/* Channel-minor F(4x4) (cnncore/ops/_conv.pyx, wino4_conv / wino4_backward_weight): a block
   of tiles is first copied to rows of pixels with the channels innermost ([row][col][c]),
   so that every transform is a sweep over the channels (16-64 of them: whole vectors) of
   one tile at a time, whatever the image width; the transformed tiles are rows of the
   GEMMs' operands: v[xi * xs + u * C + c] for tile u, entry xi.  Same expressions as the
   sweeps above (the same rounding). */
#define CNN_W4C_DEFINE(T)                                                                    \
    /* B^T on one column of a 6x6 input tile, n lanes (channels) wide: in[k * is + c]     */ \
    /* (k < 6) -> out[k * os + c]; the rows pass and the columns pass of cnn_w4c_in.      */ \
    static inline __attribute__((always_inline)) void cnn_w4_bt6_##T(                       \
            const T* __restrict__ in, ptrdiff_t is, T* __restrict__ out, ptrdiff_t os,      \
            ptrdiff_t n) {                                                                  \
        _Pragma("GCC ivdep") for (ptrdiff_t c = 0; c < n; ++c) {                            \
            const T v1 = in[is + c], v2 = in[2 * is + c];                                   \
            const T v3 = in[3 * is + c], v4 = in[4 * is + c];                               \
            out[c] = (T)4 * in[c] - (T)5 * v2 + v4;                                         \
            out[os + c] = v3 + v4 - (T)4 * (v1 + v2);                                       \
            out[2 * os + c] = (T)4 * (v1 - v2) + v4 - v3;                                   \
            out[3 * os + c] = (T)2 * (v3 - v1) + v4 - v2;                                   \
            out[4 * os + c] = (T)2 * (v1 - v3) + v4 - v2;                                   \
            out[5 * os + c] = (T)4 * v1 - (T)5 * v3 + in[5 * is + c];                       \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    /* A on one column of a 4x4 output-gradient tile, n lanes wide: in[k * is + c] (k < 4) */ \
    /* -> out[k * os + c] (k < 6); the rows and columns passes of cnn_w4c_grad.           */ \
    static inline __attribute__((always_inline)) void cnn_w4_a6_##T(                        \
            const T* __restrict__ in, ptrdiff_t is, T* __restrict__ out, ptrdiff_t os,      \
            ptrdiff_t n) {                                                                  \
        _Pragma("GCC ivdep") for (ptrdiff_t c = 0; c < n; ++c) {                            \
            const T a0 = in[c], a1 = in[is + c];                                            \
            const T a2 = in[2 * is + c], a3 = in[3 * is + c];                               \
            const T p02 = a0 + a2, p13 = a1 + a3;                                           \
            const T r02 = a0 + (T)4 * a2, r13 = (T)2 * a1 + (T)8 * a3;                      \
            out[c] = a0;                                                                    \
            out[os + c] = p02 + p13;                                                        \
            out[2 * os + c] = p02 - p13;                                                    \
            out[3 * os + c] = r02 + r13;                                                    \
            out[4 * os + c] = r02 - r13;                                                    \
            out[5 * os + c] = a3;                                                           \
        }                                                                                   \
    }                                                                                       \
                                                                                            \
    /* X[(rr * nq + q) * C + c] = xs[c, r0 + rr, q0 + q] (zero outside the H x W planes of   \
       plane stride P), rr < nr, q < nq. */                                                  \
    static void cnn_w4c_gather_##T(const T* __restrict__ xs, ptrdiff_t C, ptrdiff_t H,       \
                                   ptrdiff_t W, ptrdiff_t P, ptrdiff_t r0, ptrdiff_t nr,     \
                                   ptrdiff_t q0, ptrdiff_t nq, T* __restrict__ X) {          \
        ptrdiff_t lo = -q0 < 0 ? 0 : (-q0 > nq ? nq : -q0);                                  \
        ptrdiff_t hi = W - q0 < lo ? lo : (W - q0 > nq ? nq : W - q0);                       \
        for (ptrdiff_t rr = 0; rr < nr; ++rr) {                                              \
            const ptrdiff_t r = r0 + rr;                                                     \
            T* __restrict__ row = X + rr * nq * C;                                           \
            if (r < 0 || r >= H) {                                                           \
                memset(row, 0, (size_t)(nq * C) * sizeof(T));                                \
                continue;                                                                    \
            }                                                                                \
            memset(row, 0, (size_t)(lo * C) * sizeof(T));                                    \
            memset(row + hi * C, 0, (size_t)((nq - hi) * C) * sizeof(T));                    \
            const T* __restrict__ src = xs + r * W + q0;                                     \
            for (ptrdiff_t q = lo; q < hi; q += 8) {                                         \
                const ptrdiff_t qe = q + 8 < hi ? q + 8 : hi;                                \
                for (ptrdiff_t c = 0; c < C; ++c)                                            \
                    for (ptrdiff_t qq = q; qq < qe; ++qq)                                    \
                        row[qq * C + c] = src[c * P + qq];                                   \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* B^T d B of the nty x TW tiles of X ([4 nty + 2][nq][C], tile (ty, tx) at row 4 ty,    \
       column 4 tx): v[xi * xs + (ty * TW + tx) * C + c].  t: 36 C of scratch. */            \
    static __attribute__((noinline)) void cnn_w4c_in_##T(const T* __restrict__ X, ptrdiff_t nq, ptrdiff_t C,           \
                               ptrdiff_t nty, ptrdiff_t TW, T* __restrict__ t,               \
                               T* __restrict__ v, ptrdiff_t xs) {                            \
        const ptrdiff_t rs = nq * C;                                                         \
        for (ptrdiff_t ty = 0; ty < nty; ++ty)                                               \
            for (ptrdiff_t tx = 0; tx < TW; ++tx) {                                          \
                const T* __restrict__ x = X + (4 * ty * nq + 4 * tx) * C;                    \
                T* __restrict__ o = v + (ty * TW + tx) * C;                                  \
                for (int j = 0; j < 6; ++j) { /* B^T on the rows of column j */              \
                    const T* __restrict__ x0 = x + j * C;                                    \
                    T* __restrict__ t0 = t + j * C;                                          \
                    cnn_w4_bt6_##T(x0, rs, t0, 6 * C, C);                                   \
                }                                                                            \
                for (int k = 0; k < 6; ++k) { /* ... and on the columns of row k */          \
                    const T* __restrict__ s = t + 6 * k * C;                                 \
                    T* __restrict__ d = o + 6 * k * xs;                                      \
                    cnn_w4_bt6_##T(s, C, d, xs, C);                                         \
                }                                                                            \
            }                                                                                \
    }                                                                                        \
                                                                                             \
    /* A g A^T of the nty x TW output-gradient tiles of G ([4 nty][nq][K]):                  \
       d[xi * xs + (ty * TW + tx) * K + k].  t: 36 K of scratch. */                          \
    static __attribute__((noinline)) void cnn_w4c_grad_##T(const T* __restrict__ G, ptrdiff_t nq, ptrdiff_t K,         \
                                 ptrdiff_t nty, ptrdiff_t TW, T* __restrict__ t,             \
                                 T* __restrict__ d, ptrdiff_t xs) {                          \
        const ptrdiff_t rs = nq * K;                                                         \
        for (ptrdiff_t ty = 0; ty < nty; ++ty)                                               \
            for (ptrdiff_t tx = 0; tx < TW; ++tx) {                                          \
                const T* __restrict__ g = G + (4 * ty * nq + 4 * tx) * K;                    \
                T* __restrict__ o = d + (ty * TW + tx) * K;                                  \
                for (int j = 0; j < 4; ++j) { /* A on the rows of column j */                \
                    const T* __restrict__ x0 = g + j * K;                                    \
                    T* __restrict__ t0 = t + j * K;                                          \
                    cnn_w4_a6_##T(x0, rs, t0, 6 * K, K);                                    \
                }                                                                            \
                for (int k = 0; k < 6; ++k) { /* ... and on the columns of row k */          \
                    const T* __restrict__ s = t + 6 * k * K;                                 \
                    T* __restrict__ e = o + 6 * k * xs;                                      \
                    cnn_w4_a6_##T(s, K, e, xs, K);                                          \
                }                                                                            \
            }                                                                                \
    }

CNN_W4C_DEFINE(float)
CNN_W4C_DEFINE(double)

#endif /* CNN_WINOGRAD4_H */
