# Header-only, branch-free (auto-vectorizable) elementary functions shared by the activation
# and loss kernels.
#
# Why not libm's expf/exp: without -ffast-math and libmvec (neither of which cnncore can rely
# on), GCC/Clang cannot vectorize a loop that calls libm's exp, and a scalar expf call per
# element makes sigmoid ~4x slower than a plain memory copy on two cores.  The functions below
# are plain C arithmetic that the compiler vectorizes at -O3 with the baseline instruction set:
#
#   exp(x) = 2**n * exp(r),  n = round(x / ln 2),  r = x - n ln 2  (Cody-Waite two-constant
#   reduction, |r| <= ln(2)/2),  exp(r) by its Taylor polynomial (degree 7 in float, 13 in
#   double: truncation error < 0.1 ulp), and 2**n built from exponent bits as 2**n1 * 2**n2
#   (n1 = n/2 rounded) so that overflow to inf and gradual underflow to subnormals/0 come out
#   of the final multiplication exactly as for a correctly rounded exp.  Max error ~1-2 ulp.
#   NaN in -> NaN out; +inf -> inf; -inf -> 0.
#
# GCC's default -ftrapping-math forbids it to if-convert the selects (clamps, sign choices)
# these functions are made of, which would leave every loop that calls them scalar; the C
# block below therefore switches it off (GCC only; Clang's default already is
# -fno-trapping-math) for the rest of the translation unit -- i.e. only in the modules that
# cimport this header.  cnncore never reads floating-point exception flags.  Kernels should
# still compute values unconditionally and pick them with a plain select.
#
# Only declarations, ctypedefs and ``cdef inline`` functions may live in a shared pxd.

from libc.math cimport fabs, fabsf, log, log1p, log1pf, logf

from cnncore._shared cimport floating

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("no-trapping-math")
    #endif
    #include <math.h>
    #include <stdint.h>

    /* Every scalar helper is force-inlined: GCC's inliner gives up on them inside the large
       SIMD-cloned block loops below (their budget is per function), and one out-of-line call
       per element leaves the loop scalar -- silu / softplus / gelu's gradient ran 10-70x
       slower than a memory copy that way. */
    #if defined(__GNUC__)
    #define CNN_INLINE static inline __attribute__((always_inline))
    #else
    #define CNN_INLINE static inline
    #endif

    /* 2**n for an integer-valued float/double n inside the normal exponent range: add the
       round-to-nearest magic constant (the integer lands in the low mantissa bits, exactly),
       then shift it (plus the bias) into the exponent field. */
    CNN_INLINE float cnn__pow2f(float n) {
        union { float f; uint32_t u; } v;
        v.f = n + 12582912.0f;                       /* 1.5 * 2**23 */
        v.u = (v.u + 127u) << 23;
        return v.f;
    }
    CNN_INLINE double cnn__pow2(double n) {
        union { double f; uint64_t u; } v;
        v.f = n + 6755399441055744.0;                /* 1.5 * 2**52 */
        v.u = (v.u + 1023u) << 52;
        return v.f;
    }

    CNN_INLINE float cnn_expf(float x) {
        /* clamped at -110 (not higher): exp(x) for x < -103.3 rounds to 0 and still comes
           out of 2**n1 * 2**n2 (both normal) correctly rounded */
        float xc = x > -110.0f ? x : -110.0f;        /* NaN -> -110 here, restored below */
        xc = xc < 88.8f ? xc : 88.8f;
        float t = xc * 1.44269504088896341f + 12582912.0f;
        float n = t - 12582912.0f;                   /* round(x / ln 2) */
        float r = xc - n * 0.693359375f;             /* ln 2 high part: exact product */
        r = r - n * -2.12194440e-4f;                 /* ln 2 low part */
        float p = 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        float h = n * 0.5f;
        float n1 = (h + 12582912.0f) - 12582912.0f;
        float res = (p * cnn__pow2f(n1)) * cnn__pow2f(n - n1);
        return isnan(x) ? x : res;
    }

    CNN_INLINE double cnn_exp(double x) {
        double xc = x > -746.0 ? x : -746.0;
        xc = xc < 709.9 ? xc : 709.9;
        double t = xc * 1.4426950408889634074 + 6755399441055744.0;
        double n = t - 6755399441055744.0;
        double r = xc - n * 6.93147180369123816490e-01;   /* exact: 32 significant bits */
        r = r - n * 1.90821492927058770002e-10;
        double p = 1.0 / 6227020800.0;                 /* 1/13! */
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        double h = n * 0.5;
        double n1 = (h + 6755399441055744.0) - 6755399441055744.0;
        double res = (p * cnn__pow2(n1)) * cnn__pow2(n - n1);
        return isnan(x) ? x : res;
    }

    /* expm1(x) for x in [-44, 0] (clamped): 2**n * (1 + q) - 1 = (2**n - 1) + 2**n q with
       q = expm1(r) by its Taylor polynomial (no constant term, so tiny x stay relatively
       exact; for n == 0 the formula reduces to q exactly). */
    CNN_INLINE float cnn__expm1_negf(float x) {
        float xc = x > -44.0f ? x : -44.0f;
        float t = xc * 1.44269504088896341f + 12582912.0f;
        float n = t - 12582912.0f;
        float r = xc - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        float p = 1.0f / 40320.0f;
        p = p * r + 1.0f / 5040.0f;
        p = p * r + 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        float q = r + (r * r) * p;
        float s = cnn__pow2f(n);
        return (s - 1.0f) + s * q;
    }
    CNN_INLINE double cnn__expm1_neg(double x) {
        double xc = x > -44.0 ? x : -44.0;
        double t = xc * 1.4426950408889634074 + 6755399441055744.0;
        double n = t - 6755399441055744.0;
        double r = xc - n * 6.93147180369123816490e-01;
        r = r - n * 1.90821492927058770002e-10;
        double p = 1.0 / 87178291200.0;                /* 1/14! */
        p = p * r + 1.0 / 6227020800.0;
        p = p * r + 1.0 / 479001600.0;
        p = p * r + 1.0 / 39916800.0;
        p = p * r + 1.0 / 3628800.0;
        p = p * r + 1.0 / 362880.0;
        p = p * r + 1.0 / 40320.0;
        p = p * r + 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        double q = r + (r * r) * p;
        double s = cnn__pow2(n);
        return (s - 1.0) + s * q;
    }

    /* sigmoid without overflow: z = exp(-|x|) <= 1, so 1/(1+z) and z/(1+z) never overflow;
       sigmoid(-1000) == 0 and sigmoid(1000) == 1 exactly. */
    CNN_INLINE float cnn_sigmoidf(float x) {
        float a = x < 0.0f ? -x : x;
        float z = cnn_expf(-a);
        float s = 1.0f / (1.0f + z);
        float zs = z * s;                            /* computed unconditionally: keeps the */
        return x >= 0.0f ? s : zs;                   /* select branch-free (NaN -> zs = NaN) */
    }
    CNN_INLINE double cnn_sigmoid(double x) {
        double a = x < 0.0 ? -x : x;
        double z = cnn_exp(-a);
        double s = 1.0 / (1.0 + z);
        double zs = z * s;
        return x >= 0.0 ? s : zs;
    }

    /* tanh(x) = sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|)): relatively exact near 0,
       exactly +-1 once |x| > 20 (both precisions saturate well before). */
    CNN_INLINE float cnn_tanhf(float x) {
        float a = x < 0.0f ? -x : x;
        float em = cnn__expm1_negf(-2.0f * a);
        float t = (0.0f - em) / (2.0f + em);       /* >= +0 */
        return isnan(x) ? x : copysignf(t, x);
    }
    CNN_INLINE double cnn_tanh(double x) {
        double a = x < 0.0 ? -x : x;
        double em = cnn__expm1_neg(-2.0 * a);
        double t = (0.0 - em) / (2.0 + em);
        return isnan(x) ? x : copysign(t, x);
    }

    /* ---- Block loops, compiled three times on x86-64 Linux with GCC: for the baseline ISA,
       for x86-64-v3 (AVX2 + FMA) and for x86-64-v4 (AVX-512), picked once at load time by
       the dynamic linker (ifunc).  The transcendental loops are compute-bound on the
       baseline ISA (4 lanes, no FMA: sigmoid ~4x slower than a memory copy on 2 cores); the
       v3 / v4 clones are ~2.5x / ~4.5x faster.  Results depend on the machine (FMA
       contraction) but never on the thread count. ---- */
    #if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) \
        && defined(__linux__) && !defined(CNNCORE_NO_CLONES)
    #define CNN_SIMD_CLONES \
        __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define CNN_SIMD_CLONES
    #endif
    #include <stddef.h>

    /* Software prefetch for the transcendental loops: each block of CNN_PF_BLOCK elements
       first asks for the input lines of the block CNN_PF_AHEAD blocks further on.  With
       ~20 vector operations per element the hardware prefetcher does not run far enough
       ahead of these loops: the loads of a large array stalled (profile: half of silu's
       samples on the instruction after the load).  Only hints: results unchanged. */
    #define CNN_PF_BLOCK 1024
    #ifndef CNN_PF_AHEAD
    #define CNN_PF_AHEAD 2
    #endif
    #if !defined(__GNUC__) || defined(CNN_NO_PREFETCH)
    #define CNN_PREFETCH_NEXT(p, i1, n, T)
    #else
    #define CNN_PREFETCH_NEXT(p, i1, n, T)                                                \
        {                                                                                  \
            ptrdiff_t pa = (i1) + (CNN_PF_AHEAD - 1) * CNN_PF_BLOCK;                       \
            ptrdiff_t pb = pa + CNN_PF_BLOCK < (n) ? pa + CNN_PF_BLOCK : (n);              \
            for (ptrdiff_t q = pa; q < pb; q += 64 / (ptrdiff_t) sizeof(T))                \
                __builtin_prefetch((p) + q, 0, 3);                                         \
        }
    #endif

    CNN_SIMD_CLONES static void cnn_sigmoid_blockf(const float* x, float* y, ptrdiff_t n) {
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;
            CNN_PREFETCH_NEXT(x, i1, n, float)
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = cnn_sigmoidf(x[i]);
        }
    }
    CNN_SIMD_CLONES static void cnn_sigmoid_block(const double* x, double* y, ptrdiff_t n) {
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;
            CNN_PREFETCH_NEXT(x, i1, n, double)
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = cnn_sigmoid(x[i]);
        }
    }
    CNN_SIMD_CLONES static void cnn_tanh_blockf(const float* x, float* y, ptrdiff_t n) {
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;
            CNN_PREFETCH_NEXT(x, i1, n, float)
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = cnn_tanhf(x[i]);
        }
    }
    CNN_SIMD_CLONES static void cnn_tanh_block(const double* x, double* y, ptrdiff_t n) {
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;
            CNN_PREFETCH_NEXT(x, i1, n, double)
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = cnn_tanh(x[i]);
        }
    }

    /* sum(exp(x - m)) with 16 interleaved accumulators (a fixed order on every machine);
       also stores exp(x - m) into y unless y is NULL (y may be x). */
    #define CNN_EXP_SUM_BODY(T, EXP)                                                  \
        T acc[16] = {0};                                                              \
        ptrdiff_t i = 0;                                                              \
        if (y) {                                                                      \
            for (; i + 16 <= n; i += 16)                                              \
                for (int k = 0; k < 16; k++) {                                        \
                    T e = EXP(x[i + k] - m); y[i + k] = e; acc[k] += e;               \
                }                                                                     \
            for (; i < n; i++) { T e = EXP(x[i] - m); y[i] = e; acc[i & 15] += e; }   \
        } else {                                                                      \
            for (; i + 16 <= n; i += 16)                                              \
                for (int k = 0; k < 16; k++) acc[k] += EXP(x[i + k] - m);             \
            for (; i < n; i++) acc[i & 15] += EXP(x[i] - m);                          \
        }                                                                             \
        for (int k = 0; k < 8; k++) acc[k] += acc[k + 8];                             \
        for (int k = 0; k < 4; k++) acc[k] += acc[k + 4];                             \
        return (acc[0] + acc[2]) + (acc[1] + acc[3]);

    CNN_SIMD_CLONES static float cnn_exp_sumf(const float* x, float m, float* y, ptrdiff_t n) {
        CNN_EXP_SUM_BODY(float, cnn_expf)
    }
    CNN_SIMD_CLONES static double cnn_exp_sum(const double* x, double m, double* y,
                                              ptrdiff_t n) {
        CNN_EXP_SUM_BODY(double, cnn_exp)
    }

    /* Largest element of x[0:n], n >= 1 (NaNs are skipped: they propagate through the exp
       pass instead); 16 independent lanes so that it vectorizes. */
    #define CNN_MAX_BODY(T)                                                           \
        T mx[16];                                                                     \
        for (int k = 0; k < 16; k++) mx[k] = x[0];                                    \
        ptrdiff_t i = 0;                                                              \
        for (; i + 16 <= n; i += 16)                                                  \
            for (int k = 0; k < 16; k++) mx[k] = x[i + k] > mx[k] ? x[i + k] : mx[k]; \
        for (; i < n; i++) mx[0] = x[i] > mx[0] ? x[i] : mx[0];                       \
        for (int k = 1; k < 16; k++) mx[0] = mx[k] > mx[0] ? mx[k] : mx[0];           \
        return mx[0];

    CNN_SIMD_CLONES static float cnn_row_maxf(const float* x, ptrdiff_t n) {
        CNN_MAX_BODY(float)
    }
    CNN_SIMD_CLONES static double cnn_row_max(const double* x, ptrdiff_t n) {
        CNN_MAX_BODY(double)
    }

    /* Sums in the same fixed 16-lane order as CNN_EXP_SUM_BODY. */
    #define CNN_SUM16_BODY(T, TERM)                                                   \
        T acc[16] = {0};                                                              \
        ptrdiff_t i = 0;                                                              \
        for (; i + 16 <= n; i += 16)                                                  \
            for (int k = 0; k < 16; k++) acc[k] += TERM(i + k);                       \
        for (; i < n; i++) acc[i & 15] += TERM(i);                                    \
        for (int k = 0; k < 8; k++) acc[k] += acc[k + 8];                             \
        for (int k = 0; k < 4; k++) acc[k] += acc[k + 4];                             \
        return (acc[0] + acc[2]) + (acc[1] + acc[3]);
    #define CNN_TERM_X(j) x[j]
    #define CNN_TERM_XY(j) (x[j] * y[j])

    CNN_SIMD_CLONES static float cnn_row_sumf(const float* x, ptrdiff_t n) {
        CNN_SUM16_BODY(float, CNN_TERM_X)
    }
    CNN_SIMD_CLONES static double cnn_row_sum(const double* x, ptrdiff_t n) {
        CNN_SUM16_BODY(double, CNN_TERM_X)
    }
    CNN_SIMD_CLONES static float cnn_row_dotf(const float* x, const float* y, ptrdiff_t n) {
        CNN_SUM16_BODY(float, CNN_TERM_XY)
    }
    CNN_SIMD_CLONES static double cnn_row_dot(const double* x, const double* y, ptrdiff_t n) {
        CNN_SUM16_BODY(double, CNN_TERM_XY)
    }

    /* y = x * a  (softmax normalization, a = 1 / sum) */
    CNN_SIMD_CLONES static void cnn_scalef(const float* x, float a, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * a;
    }
    CNN_SIMD_CLONES static void cnn_scale(const double* x, double a, double* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * a;
    }
    /* y = (x - a) - b */
    CNN_SIMD_CLONES static void cnn_sub2f(const float* x, float a, float b, float* y,
                                          ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - a) - b;
    }
    CNN_SIMD_CLONES static void cnn_sub2(const double* x, double a, double b, double* y,
                                         ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - a) - b;
    }
    /* out = y * (g - s)  (softmax backward; out may alias g or y) */
    CNN_SIMD_CLONES static void cnn_sm_backf(const float* g, const float* y, float s,
                                             float* out, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = y[i] * (g[i] - s);
    }
    CNN_SIMD_CLONES static void cnn_sm_back(const double* g, const double* y, double s,
                                            double* out, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = y[i] * (g[i] - s);
    }

    /* Column-block helpers for softmax over a non-last axis: a task holds n adjacent
       columns and sweeps the reduced axis row by row, so every access is contiguous. Per
       column j: m = running max, s = running sum. */
    #define CNN_DEFINE_COLUMN_OPS(SUF, T, EXP)                                               \
    CNN_SIMD_CLONES static void cnn_col_max##SUF(const T* x, T* m, ptrdiff_t n) {            \
        for (ptrdiff_t i = 0; i < n; i++) m[i] = x[i] > m[i] ? x[i] : m[i];                  \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_exp_acc##SUF(const T* x, const T* m, T* y, T* s,     \
                                                     ptrdiff_t n) {                          \
        if (y) {                                                                             \
            for (ptrdiff_t i = 0; i < n; i++) { T e = EXP(x[i] - m[i]); y[i] = e; s[i] += e; } \
        } else {                                                                             \
            for (ptrdiff_t i = 0; i < n; i++) s[i] += EXP(x[i] - m[i]);                      \
        }                                                                                    \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_mul##SUF(const T* x, const T* a, T* y, ptrdiff_t n) { \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * a[i];                                \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_sub2##SUF(const T* x, const T* a, const T* b, T* y,  \
                                                  ptrdiff_t n) {                             \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - a[i]) - b[i];                       \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_acc##SUF(const T* g, const T* y, T* s, ptrdiff_t n) { \
        if (y) { for (ptrdiff_t i = 0; i < n; i++) s[i] += g[i] * y[i]; }                    \
        else { for (ptrdiff_t i = 0; i < n; i++) s[i] += g[i]; }                             \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_sm_back##SUF(const T* g, const T* y, const T* s,     \
                                                     T* out, ptrdiff_t n) {                  \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = y[i] * (g[i] - s[i]);                     \
    }                                                                                        \
    CNN_SIMD_CLONES static void cnn_col_lsm_back##SUF(const T* g, const T* y, const T* s,    \
                                                      T* out, ptrdiff_t n) {                 \
        for (ptrdiff_t i = 0; i < n; i++) out[i] = g[i] - EXP(y[i]) * s[i];                  \
    }
    CNN_DEFINE_COLUMN_OPS(f, float, cnn_expf)
    CNN_DEFINE_COLUMN_OPS(d, double, cnn_exp)

    /* out = g - exp(y) * s  (log_softmax backward; out may alias g or y) */
    CNN_SIMD_CLONES static void cnn_lsm_backf(const float* g, const float* y, float s,
                                              float* out, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = g[i] - cnn_expf(y[i]) * s;
    }
    CNN_SIMD_CLONES static void cnn_lsm_back(const double* g, const double* y, double s,
                                             double* out, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) out[i] = g[i] - cnn_exp(y[i]) * s;
    }
    """
    float cnn_expf(float x) noexcept nogil
    double cnn_exp(double x) noexcept nogil
    float cnn_sigmoidf(float x) noexcept nogil
    double cnn_sigmoid(double x) noexcept nogil
    float cnn_tanhf(float x) noexcept nogil
    double cnn_tanh(double x) noexcept nogil
    void cnn_sigmoid_blockf(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void cnn_sigmoid_block(const double* x, double* y, Py_ssize_t n) noexcept nogil
    void cnn_tanh_blockf(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void cnn_tanh_block(const double* x, double* y, Py_ssize_t n) noexcept nogil
    float cnn_exp_sumf(const float* x, float m, float* y, Py_ssize_t n) noexcept nogil
    double cnn_exp_sum(const double* x, double m, double* y, Py_ssize_t n) noexcept nogil
    float cnn_row_maxf(const float* x, Py_ssize_t n) noexcept nogil
    void cnn_col_maxf(const float* x, float* m, Py_ssize_t n) noexcept nogil
    void cnn_col_exp_accf(const float* x, const float* m, float* y, float* s,
                            Py_ssize_t n) noexcept nogil
    void cnn_col_mulf(const float* x, const float* a, float* y, Py_ssize_t n) noexcept nogil
    void cnn_col_sub2f(const float* x, const float* a, const float* b, float* y,
                         Py_ssize_t n) noexcept nogil
    void cnn_col_accf(const float* g, const float* y, float* s, Py_ssize_t n) noexcept nogil
    void cnn_col_sm_backf(const float* g, const float* y, const float* s, float* out,
                            Py_ssize_t n) noexcept nogil
    void cnn_col_lsm_backf(const float* g, const float* y, const float* s, float* out,
                             Py_ssize_t n) noexcept nogil
    void cnn_col_maxd(const double* x, double* m, Py_ssize_t n) noexcept nogil
    void cnn_col_exp_accd(const double* x, const double* m, double* y, double* s,
                            Py_ssize_t n) noexcept nogil
    void cnn_col_muld(const double* x, const double* a, double* y, Py_ssize_t n) noexcept nogil
    void cnn_col_sub2d(const double* x, const double* a, const double* b, double* y,
                         Py_ssize_t n) noexcept nogil
    void cnn_col_accd(const double* g, const double* y, double* s, Py_ssize_t n) noexcept nogil
    void cnn_col_sm_backd(const double* g, const double* y, const double* s, double* out,
                            Py_ssize_t n) noexcept nogil
    void cnn_col_lsm_backd(const double* g, const double* y, const double* s, double* out,
                             Py_ssize_t n) noexcept nogil
    float cnn_row_sumf(const float* x, Py_ssize_t n) noexcept nogil
    double cnn_row_sum(const double* x, Py_ssize_t n) noexcept nogil
    float cnn_row_dotf(const float* x, const float* y, Py_ssize_t n) noexcept nogil
    double cnn_row_dot(const double* x, const double* y, Py_ssize_t n) noexcept nogil
    void cnn_scalef(const float* x, float a, float* y, Py_ssize_t n) noexcept nogil
    void cnn_scale(const double* x, double a, double* y, Py_ssize_t n) noexcept nogil
    void cnn_sub2f(const float* x, float a, float b, float* y, Py_ssize_t n) noexcept nogil
    void cnn_sub2(const double* x, double a, double b, double* y, Py_ssize_t n) noexcept nogil
    void cnn_sm_backf(const float* g, const float* y, float s, float* out,
                      Py_ssize_t n) noexcept nogil
    void cnn_sm_back(const double* g, const double* y, double s, double* out,
                     Py_ssize_t n) noexcept nogil
    double cnn_row_max(const double* x, Py_ssize_t n) noexcept nogil
    void cnn_lsm_backf(const float* g, const float* y, float s, float* out,
                       Py_ssize_t n) noexcept nogil
    void cnn_lsm_back(const double* g, const double* y, double s, double* out,
                      Py_ssize_t n) noexcept nogil


cdef inline floating vexp(floating x) noexcept nogil:
    if floating is float:
        return cnn_expf(x)
    else:
        return cnn_exp(x)


cdef inline floating vsigmoid(floating x) noexcept nogil:
    if floating is float:
        return cnn_sigmoidf(x)
    else:
        return cnn_sigmoid(x)


# libm's log / log1p / fabs in the precision of ``floating`` (scalar calls).
cdef inline floating flog(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating flog1p(floating v) noexcept nogil:
    if floating is float:
        return log1pf(v)
    else:
        return log1p(v)


cdef inline floating fabs_(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


cdef inline void sigmoid_block(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        cnn_sigmoid_blockf(x, y, n)
    else:
        cnn_sigmoid_block(x, y, n)


cdef inline void tanh_block(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        cnn_tanh_blockf(x, y, n)
    else:
        cnn_tanh_block(x, y, n)


cdef inline floating row_exp_sum(const floating* x, floating m, floating* y,
                                 Py_ssize_t n) noexcept nogil:
    """``sum(exp(x - m))`` (fixed order); also stores ``exp(x - m)`` into ``y`` unless ``y``
    is NULL.  ``y`` may be ``x`` itself."""
    if floating is float:
        return cnn_exp_sumf(x, m, y, n)
    else:
        return cnn_exp_sum(x, m, y, n)


cdef inline void log_softmax_back_row(const floating* g, const floating* y, floating s,
                                      floating* out, Py_ssize_t n) noexcept nogil:
    """``out = g - exp(y) * s``."""
    if floating is float:
        cnn_lsm_backf(g, y, s, out, n)
    else:
        cnn_lsm_back(g, y, s, out, n)


# ------------------------------------------------------------------------------------------
# Row helpers for softmax-like reductions over a contiguous row (used by softmax, log_softmax
# and cross_entropy).  Interleaved accumulators: a fixed summation order (independent of the
# thread count) that the compiler can keep in vector registers.
# ------------------------------------------------------------------------------------------

cdef inline floating row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """Largest element of ``x[0:n]``, ``n >= 1`` (NaNs are skipped; they propagate through the
    exp pass instead)."""
    if floating is float:
        return cnn_row_maxf(x, n)
    else:
        return cnn_row_max(x, n)


cdef inline floating row_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cnn_row_sumf(x, n)
    else:
        return cnn_row_sum(x, n)


cdef inline floating row_dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return cnn_row_dotf(x, y, n)
    else:
        return cnn_row_dot(x, y, n)


cdef inline void row_scale(const floating* x, floating a, floating* y,
                           Py_ssize_t n) noexcept nogil:
    """``y = x * a`` (``y`` may be ``x``)."""
    if floating is float:
        cnn_scalef(x, a, y, n)
    else:
        cnn_scale(x, a, y, n)


cdef inline void row_sub2(const floating* x, floating a, floating b, floating* y,
                          Py_ssize_t n) noexcept nogil:
    """``y = (x - a) - b`` (``y`` may be ``x``)."""
    if floating is float:
        cnn_sub2f(x, a, b, y, n)
    else:
        cnn_sub2(x, a, b, y, n)


cdef inline void softmax_back_row(const floating* g, const floating* y, floating s,
                                  floating* out, Py_ssize_t n) noexcept nogil:
    """``out = y * (g - s)``."""
    if floating is float:
        cnn_sm_backf(g, y, s, out, n)
    else:
        cnn_sm_back(g, y, s, out, n)


# ------------------------------------------------------------------------------------------
# Column-block helpers (softmax over a non-last axis); per column j of a block of n columns.
# ------------------------------------------------------------------------------------------

cdef inline void col_max(const floating* x, floating* m, Py_ssize_t n) noexcept nogil:
    """``m = max(m, x)``."""
    if floating is float:
        cnn_col_maxf(x, m, n)
    else:
        cnn_col_maxd(x, m, n)


cdef inline void col_exp_acc(const floating* x, const floating* m, floating* y, floating* s,
                             Py_ssize_t n) noexcept nogil:
    """``e = exp(x - m); s += e``; also ``y = e`` unless ``y`` is NULL."""
    if floating is float:
        cnn_col_exp_accf(x, m, y, s, n)
    else:
        cnn_col_exp_accd(x, m, y, s, n)


cdef inline void col_mul(const floating* x, const floating* a, floating* y,
                         Py_ssize_t n) noexcept nogil:
    """``y = x * a``."""
    if floating is float:
        cnn_col_mulf(x, a, y, n)
    else:
        cnn_col_muld(x, a, y, n)


cdef inline void col_sub2(const floating* x, const floating* a, const floating* b, floating* y,
                          Py_ssize_t n) noexcept nogil:
    """``y = (x - a) - b``."""
    if floating is float:
        cnn_col_sub2f(x, a, b, y, n)
    else:
        cnn_col_sub2d(x, a, b, y, n)


cdef inline void col_acc(const floating* g, const floating* y, floating* s,
                         Py_ssize_t n) noexcept nogil:
    """``s += g * y`` (``s += g`` if ``y`` is NULL)."""
    if floating is float:
        cnn_col_accf(g, y, s, n)
    else:
        cnn_col_accd(g, y, s, n)


cdef inline void col_softmax_back(const floating* g, const floating* y, const floating* s,
                                  floating* out, Py_ssize_t n) noexcept nogil:
    """``out = y * (g - s)``."""
    if floating is float:
        cnn_col_sm_backf(g, y, s, out, n)
    else:
        cnn_col_sm_backd(g, y, s, out, n)


cdef inline void col_log_softmax_back(const floating* g, const floating* y, const floating* s,
                                      floating* out, Py_ssize_t n) noexcept nogil:
    """``out = g - exp(y) * s``."""
    if floating is float:
        cnn_col_lsm_backf(g, y, s, out, n)
    else:
        cnn_col_lsm_backd(g, y, s, out, n)


# ------------------------------------------------------------------------------------------
# gelu / silu / elu / softplus / mish and their derivatives (same conventions as above:
# branch-free, vectorized by the compiler, SIMD clones of the block loops).  ``_activation``
# calls the block loops through ``act_forward`` / ``act_backward`` with a CNN_ACT_* kind.
#
#   Phi(x) = 0.5 erfc(-x / sqrt 2) (normal CDF), from the tail Phi(-|x|) (no 1 + erf(x)
#     cancellation: relatively accurate in both tails).  float: Phi(-|x|) = 0.5 t R(t)
#     exp(-x^2/2), t = 1 / (1 + 0.5 |x| / sqrt 2), R a degree-10 polynomial (fitted by
#     tools/fit_vmath.py); double: 0.5 t exp(P(2t - 1) - x^2/2), t = 1 / (1 + 0.4 |x| /
#     sqrt 2), P a 25-term Chebyshev series (tools/fit_erfc.py).  Both pass -x^2/2 to exp()
#     in two parts (exact square of x's leading half + the rest), so the rounding of x^2
#     costs nothing in the far tail.  gelu' = Phi + x pdf reuses exp(-x^2/2) in float.
#   log1p(d) for d in [0, 1] (softplus): float: d P(d), P a degree-9 polynomial
#     (tools/fit_vmath.py; no division); double: w = 1 + d, log(w) = k ln 2 +
#     2 atanh(f / (2 + f)) by its odd series (|f / (2 + f)| <= 0.172), plus the rounding
#     error of 1 + d divided by w.
#   Measured accuracy (tests/test_activation.py::test_vmath_accuracy_over_wide_ranges pins
#   it; float32 against float64 references over +-1e4, double against mpmath): see the
#   Notes of each function in cnncore/ops/activation.py.
# ------------------------------------------------------------------------------------------

cdef extern from *:
    """
    /* P(s) = sum_j c_j T_j(s): 25 terms (truncation error <= 3.8e-17), Clenshaw's recurrence unrolled */
    CNN_INLINE double cnn__erfc_poly(double s) {
        double s2 = s + s, b1 = 0, b2 = 0, b0;
        b0 = -3.583823652538292e-16 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 7.9360583930819192e-16 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 9.0102229440263557e-15 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -2.2683651761694774e-14 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -1.7492689235090137e-13 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 5.3086655359840403e-13 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 3.0137843458558103e-12 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -1.064261278324114e-11 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -4.9436497277087471e-11 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 1.9171508762619611e-10 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 8.1063177022131025e-10 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -3.1969922948685288e-9 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -1.3765039933327456e-8 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 4.9964876488159235e-8 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 2.4742228450981797e-7 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -7.220311163626405e-7 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -4.7605967157391004e-6 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 8.7913524297369605e-6 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 9.8968062398689413e-5 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -3.6101486215408064e-5 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -2.2704840103575317e-3 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = -4.8242679342493616e-3 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 5.9570911085607956e-2 + s2 * b1 - b2; b2 = b1; b1 = b0;
        b0 = 7.4918009054911333e-1 + s2 * b1 - b2; b2 = b1; b1 = b0;
        return -8.0172270636164829e-1 + s * b1 - b2;
    }

    /* exp(hi + lo) for a two-part argument (|lo| small against |hi|, or hi + lo in range):
       the reduction r = (hi - n ln2_hi) + lo - n ln2_lo keeps lo's bits that hi + lo would
       round away */
    #define CNN_EXP2_BODY(T, LO, HI, L2E, MAGIC, L1, L2, POLY)                              \
        T xc = hi > (T)LO ? hi : (T)LO;                                                    \
        xc = xc < (T)HI ? xc : (T)HI;                                                      \
        T lc = xc == hi ? lo : (T)0;                                                       \
        T t = (xc + lc) * (T)L2E + (T)MAGIC;                                               \
        T n = t - (T)MAGIC;                                                                \
        T r = (xc - n * (T)L1) + lc;                                                       \
        r = r - n * (T)L2;                                                                 \
        T p = POLY;                                                                        \
        T h = n * (T)0.5;                                                                  \
        T n1 = (h + (T)MAGIC) - (T)MAGIC;                                                  \
        T res = (p * POW2(n1)) * POW2(n - n1);                                             \
        return isnan(hi) ? hi : res;
    CNN_INLINE float cnn__expf2(float hi, float lo) {
        #define POW2 cnn__pow2f
        CNN_EXP2_BODY(float, -110.0f, 88.8f, 1.44269504088896341f, 12582912.0f,
                      0.693359375f, -2.12194440e-4f,
            1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f + r * (
            1.0f / 120.0f + r * (1.0f / 720.0f + r * (1.0f / 5040.0f))))))))
        #undef POW2
    }
    CNN_INLINE double cnn__exp2(double hi, double lo) {
        #define POW2 cnn__pow2
        CNN_EXP2_BODY(double, -746.0, 709.9, 1.4426950408889634074, 6755399441055744.0,
                      6.93147180369123816490e-01, 1.90821492927058770002e-10,
            1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0
            + r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0 + r * (1.0 / 362880.0
            + r * (1.0 / 3628800.0 + r * (1.0 / 39916800.0 + r * (1.0 / 479001600.0
            + r * (1.0 / 6227020800.0))))))))))))))
        #undef POW2
    }
    /* -x^2 / 2 = hi + lo exactly up to lo's rounding: x = xh + xl with xh the leading half
       of x's bits (12 of float's 24, 26 of double's 53), so xh^2 is exact; lo is 0 once
       exp() is 0 anyway (and for +-inf x: no inf - inf). */
    #define CNN_GAUSS_SPLIT(T, U, MASK, LIMIT)                                              \
        union { T f; U u; } v;                                                             \
        v.f = x;                                                                           \
        v.u &= MASK;                                                                       \
        T xh = v.f, xl = x - xh;                                                           \
        T hi = (T)-0.5 * (xh * xh);                                                        \
        T lo = (T)-0.5 * ((xh + x) * xl);                                                  \
        lo = hi > (T)-LIMIT ? lo : (T)0;
    /* double Phi(-|x|) = 0.5 erfc(|x| / sqrt 2) = 0.5 t exp(P(2t - 1) - x^2 / 2),
       t = 1 / (1 + 0.4 |x| / sqrt 2), P the Chebyshev series above; *gauss = exp(-x^2/2). */
    CNN_INLINE double cnn__phi_tail(double x, double* gauss) {
        CNN_GAUSS_SPLIT(double, uint64_t, 0xfffffffff8000000ull, 1500.0)
        double ax = x < 0 ? -x : x;
        double t = 1.0 / (1.0 + 0.4 * (ax * 0.70710678118654752440));
        *gauss = cnn__exp2(hi, lo);
        return (0.5 * t) * cnn__exp2(hi, cnn__erfc_poly(2.0 * t - 1.0) + lo);
    }
    CNN_INLINE double cnn_phi(double x) {
        double gauss;
        double e = cnn__phi_tail(x, &gauss);
        double one_e = 1.0 - e;
        return x < 0 ? e : one_e;
    }

    /* log1p(d) for d in [0, 1] (NaN -> NaN) */
    #define CNN_LOG1P_UNIT_BODY(T, R)                                                       \
        T w = (T)1 + d;                                                                    \
        T c = d - (w - (T)1);                                                              \
        T k = w > (T)1.41421356237309504880 ? (T)1 : (T)0;                                 \
        T m = w * ((T)1 - (T)0.5 * k);                                                     \
        T f = m - (T)1;                                                                    \
        T s = f / ((T)2 + f);                                                              \
        T s2 = s * s;                                                                      \
        T r = R;                                                                           \
        return k * (T)0.69314718055994530942 + ((s + s) + (s + s) * (s2 * r)) + c / w;
    CNN_INLINE double cnn_log1p_unit(double d) {
        CNN_LOG1P_UNIT_BODY(double,
            1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11
            + s2 * (1.0 / 13 + s2 * (1.0 / 15 + s2 * (1.0 / 17 + s2 * (1.0 / 19
            + s2 * (1.0 / 21))))))))))
    }

    /* s = sigmoid(v) and s (1 - s) = e d^2 without the cancellation of 1 - s:
       e = exp(-|v|), d = 1 / (1 + e) */
    #define CNN_SIG_PARTS(v, EXP)                                                               \
        e = EXP(v < 0 ? v : -v);                                                           \
        d = 1 / (1 + e);                                                                   \
        s = v >= 0 ? d : e * d;

    /* Each activation as a function of x (and its parameters a, b) and each derivative
       times g; SUF / T / EXP / SIG / EXPM1N / LOG1PU name one precision's helpers. */
    #define CNN_DEFINE_ACTIVATIONS(SUF, T, EXP, SIG, EXPM1N, LOG1PU, NLIM)             \
    /* tanh approximation: 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi)(x + k x^3). \
       v = 2u passes |x| ~ 10 (float; ~21 in double) already, so exp(-|v|) is taken at      \
       |v| <= NLIM (exp(-NLIM) normal): a subnormal exp(-|v|) -- and the products made from \
       it -- cost a microcode assist per vector instruction (gelu(tanh) of 4 N(0, 1) data \
       ran at 1.7x silu's time, of data clipped to +-9 at 1.2x).  Past it sigmoid(v) is 1  \
       (v > 0: exactly, as before) or below exp(-NLIM) (v < 0: the result, smaller than    \
       |x| exp(-NLIM) < 2e-37 in float, is x * 0, the signed zero torch's formula gives    \
       there already from x < -3.5).  Elsewhere the same operations as before. */          \
    CNN_INLINE T cnn_gelu_tanh##SUF(T x) {                                              \
        T u = (T)0.79788456080286535588 * (x + (T)0.044715 * (x * x * x));                 \
        T v = u + u;                                                                       \
        T a = v < 0 ? -v : v;                                                              \
        a = a > (T)NLIM ? (T)NLIM : a;                  /* (NaN stays NaN) */             \
        T z = EXP(-a);                                                                     \
        T d = (T)1 / ((T)1 + z);                                                           \
        T zs = z * d;                                                                      \
        T r = x * (v >= 0 ? d : zs);                                                       \
        T zero = x * (T)0;                                                                 \
        return v < -(T)NLIM ? zero : r;                                                    \
    }                                                                                      \
    /* the same clamp: past it the derivative is 1 (v > 0) or 0 (v < 0) plus a term below \
       1e-35 in float (x * 0 added: NaN at x = +-inf, as before) */                       \
    CNN_INLINE T cnn_gelu_tanh_bw##SUF(T g, T x) {                                      \
        T x2 = x * x;                                                                      \
        T u = (T)0.79788456080286535588 * (x + (T)0.044715 * (x2 * x));                    \
        T du = (T)0.79788456080286535588 * ((T)1 + (T)(3 * 0.044715) * x2);                \
        T v = u + u;                                                                       \
        T a = v < 0 ? -v : v;                                                              \
        T ac = a > (T)NLIM ? (T)NLIM : a;                                                  \
        T e = EXP(-ac);                                                                    \
        T d = (T)1 / ((T)1 + e);                                                           \
        T ed = e * d;                                                                      \
        T s = v >= 0 ? d : ed;                                                             \
        T r = s + (T)2 * x * (ed * d) * du;                                                \
        T far = (v > 0 ? (T)1 : (T)0) + x * (T)0;                                          \
        return g * (a > (T)NLIM ? far : r);                                                \
    }                                                                                      \
    CNN_INLINE T cnn_silu##SUF(T x) { return x * SIG(x); }                              \
    CNN_INLINE T cnn_silu_bw##SUF(T g, T x) {                                           \
        T v = x, e, d, s;                                                                  \
        CNN_SIG_PARTS(v, EXP)                                                              \
        return g * (s + x * (e * d * d));                                                  \
    }                                                                                      \
    /* elu: x > 0 ? x : alpha expm1(x) (NaN passes through) */                             \
    CNN_INLINE T cnn_elu##SUF(T x, T alpha) {                                           \
        T neg = alpha * EXPM1N(x < 0 ? x : (T)0);                                          \
        return x < 0 ? neg : x;                    /* +-0, NaN and x > 0: x itself */    \
    }                                                                                      \
    CNN_INLINE T cnn_elu_bw##SUF(T g, T x, T alpha) {                                   \
        T neg = g * (alpha * EXP(x < 0 ? x : (T)0));                                       \
        return x <= 0 ? neg : g;                                                           \
    }                                                                                      \
    /* softplus: (max(bx, 0) + log1p(exp(-|bx|))) / beta, x where beta x > threshold */    \
    /* (times 1 / beta, hoisted out of the loops: the same as torch's division for       \
       beta = 1 or a power of two, within an ulp otherwise) */                             \
    CNN_INLINE T cnn_softplus##SUF(T x, T beta, T threshold) {                          \
        T bx = x * beta;                                                                   \
        T a = bx < 0 ? -bx : bx;                                                           \
        T sp = ((bx > 0 ? bx : (T)0) + LOG1PU(EXP(-a))) * ((T)1 / beta);                   \
        return bx > threshold ? x : sp;                                                    \
    }                                                                                      \
    CNN_INLINE T cnn_softplus_bw##SUF(T g, T x, T beta, T threshold) {                  \
        T bx = x * beta;                                                                   \
        T d = g * SIG(bx);                                                                 \
        return bx > threshold ? g : d;                                                     \
    }                                                                                      \
    /* mish: x tanh(softplus(x)) = x q / (q + 2), q = n (n + 2), n = exp(x) (x clamped at  \
       20, where the ratio is 1 in double) */                                              \
    CNN_INLINE T cnn_mish##SUF(T x) {                                                   \
        T n = EXP(x < 20 ? x : (T)20);                                                     \
        T q = n * (n + (T)2);                                                              \
        return x * (q / (q + (T)2));                                                       \
    }                                                                                      \
    /* mish' = r + x sigmoid(x) (1 - r^2), r = q / (q + 2); sigmoid(x) = n / (1 + n) and    \
       1 - r^2 = 4 (q + 1) / (q + 2)^2: one exp, two divisions (the second's denominator \
       overflows to inf in float past x ~ 19, where the term is < 1e-15) */              \
    CNN_INLINE T cnn_mish_bw##SUF(T g, T x) {                                           \
        T n = EXP(x < 20 ? x : (T)20);                                                     \
        T q = n * (n + (T)2);                                                              \
        T q2 = q + (T)2;                                                                   \
        T r = q / q2;                                           /* tanh(softplus(x)) */    \
        T term = (x * n * ((T)4 * (q + (T)1))) / (((T)1 + n) * (q2 * q2));                 \
        return g * (r + (x > 20 ? (T)0 : term));                                           \
    }
    /* ---- float gelu: Phi(-|x|) = 0.5 erfc(|x| / sqrt 2) = 0.5 t R(t) E, with
       E = exp(-x^2 / 2), t = 1 / (1 + 0.5 |x| / sqrt 2) and R(t) = erfcx(z) / t a degree-10
       polynomial on t in [0.163, 1] (|x| <= 14.5, beyond which Phi(-|x|) < 1e-46 is below
       float's subnormals; fitted by tools/fit_vmath.py, error 3e-9 + float rounding).
       x^2 / 2 enters exp() in two parts (x = xh + xl, xh with 12 significant bits, so
       xh^2 is exact), keeping the far tails relatively accurate (a rounded x^2 alone costs
       ~x^2/2 ulp).  gelu' = Phi(x) + x pdf(x) reuses E: one exp and one division for
       either direction. ---- */
    CNN_INLINE float cnn__gauss_expf(float x) {           /* exp(-x^2 / 2) */
        CNN_GAUSS_SPLIT(float, uint32_t, 0xfffff000u, 110.0f)
        return cnn__expf2(hi, lo);
    }
    CNN_INLINE float cnn__phi_tail_scaledf(float x) {    /* Phi(-|x|) / exp(-x^2 / 2) */
        float ax = x < 0.0f ? -x : x;
        ax = ax < 14.5f ? ax : 14.5f;                    /* (NaN: 14.5; E carries the NaN) */
        float t = 1.0f / (1.0f + ax * 0.353553390593273762f);
        float r = 0.03271099f;
        r = r * t - 0.17350325f;
        r = r * t + 0.33751065f;
        r = r * t - 0.22651878f;
        r = r * t - 0.07933452f;
        r = r * t + 0.069835626f;
        r = r * t + 0.04111636f;
        r = r * t + 0.18920214f;
        r = r * t + 0.24458723f;
        r = r * t + 0.2823072f;
        r = r * t + 0.28208634f;
        return (0.5f * t) * r;
    }
    /* (E multiplies last on the negative side: no subnormal intermediate above the
       result's own magnitude) */
    CNN_INLINE float cnn_geluf(float x) {
        float s = cnn__phi_tail_scaledf(x), e = cnn__gauss_expf(x);
        float neg = (x * s) * e;
        float pos = x * (1.0f - s * e);
        return x < 0.0f ? neg : pos;
    }
    CNN_INLINE float cnn_gelu_bwf(float g, float x) {    /* Phi(x) + x pdf(x) */
        float s = cnn__phi_tail_scaledf(x), e = cnn__gauss_expf(x);
        float xp = x * 0.398942280401432678f;
        float neg = (s + xp) * e;
        float pos = (1.0f - s * e) + xp * e;
        return g * (x < 0.0f ? neg : pos);
    }
    /* log1p(d) for d in [0, 1]: d P(d), P a degree-9 polynomial (tools/fit_vmath.py;
       <= 2 ulp, relatively exact as d -> 0, no division) */
    CNN_INLINE float cnn_log1p_polyf(float d) {
        float p = -0.0032563785f;
        p = p * d + 0.019907162f;
        p = p * d - 0.0570642f;
        p = p * d + 0.10614265f;
        p = p * d - 0.15311863f;
        p = p * d + 0.19678117f;
        p = p * d - 0.24954559f;
        p = p * d + 0.33330005f;
        p = p * d - 0.49999905f;
        p = p * d + 1.0f;
        return d * p;
    }
    CNN_DEFINE_ACTIVATIONS(f, float, cnn_expf, cnn_sigmoidf, cnn__expm1_negf, cnn_log1p_polyf,
                           87.0f)
    CNN_DEFINE_ACTIVATIONS(d, double, cnn_exp, cnn_sigmoid, cnn__expm1_neg, cnn_log1p_unit,
                           708.0)
    CNN_INLINE double cnn_gelud(double x) {
        double gauss;
        double e = cnn__phi_tail(x, &gauss);
        double one_e = 1.0 - e;
        return x * (x < 0 ? e : one_e);
    }
    CNN_INLINE double cnn_gelu_bwd(double g, double x) {
        double gauss;
        double e = cnn__phi_tail(x, &gauss);
        double one_e = 1.0 - e;
        return g * ((x < 0 ? e : one_e) + x * (0.39894228040143267794 * gauss));
    }

    /* hardswish x clamp(x + 3, 0, 6) / 6 and hardsigmoid clamp(x + 3, 0, 6) / 6, as torch
       computes them (a true division by 6); NaN passes through both selects. */
    #define CNN_DEFINE_HARD(SUF, T)                                                         \
    CNN_INLINE T cnn_hardsigmoid##SUF(T x) {                                               \
        T w = x + (T)3;                                                                    \
        w = w < (T)0 ? (T)0 : w;                                                           \
        w = w > (T)6 ? (T)6 : w;                                                           \
        return w / (T)6;                                                                   \
    }                                                                                      \
    /* relu6 min(max(x, 0), 6) and its gradient: g inside (0, 6), else 0 (hardtanh's    \
       rule); NaN and -0.0 pass through the forward, a NaN x passes g */                  \
    CNN_INLINE T cnn_relu6##SUF(T x) {                                                     \
        T w = x < (T)0 ? (T)0 : x;                                                         \
        return w > (T)6 ? (T)6 : w;                                                        \
    }                                                                                      \
    CNN_INLINE T cnn_relu6_bw##SUF(T g, T x) {                                             \
        T v = x <= (T)0 ? (T)0 : g;                                                        \
        return x >= (T)6 ? (T)0 : v;                                                       \
    }                                                                                      \
    CNN_INLINE T cnn_hardswish##SUF(T x) {                                                 \
        T w = x + (T)3;                                                                    \
        w = w < (T)0 ? (T)0 : w;                                                           \
        w = w > (T)6 ? (T)6 : w;                                                           \
        return x * w / (T)6;                                                               \
    }                                                                                      \
    /* 0 for x <= -3, g for x >= 3 (and NaN x, as torch), g (x / 3 + 1/2) between */      \
    CNN_INLINE T cnn_hardswish_bw##SUF(T g, T x) {                                         \
        T z = g * (x / (T)3 + (T)0.5);                                                     \
        z = x < (T)3 ? z : g;                                                              \
        return x <= (T)-3 ? (T)0 : z;                                                      \
    }                                                                                      \
    /* g / 6 inside (-3, 3), else 0 */                                                     \
    CNN_INLINE T cnn_hardsigmoid_bw##SUF(T g, T x) {                                       \
        T v = g * ((T)1 / (T)6);                                                           \
        T v1 = x > (T)-3 ? v : (T)0;                                                       \
        return x < (T)3 ? v1 : (T)0;                                                       \
    }
    CNN_DEFINE_HARD(f, float)
    CNN_DEFINE_HARD(d, double)

    enum { CNN_ACT_GELU = 1, CNN_ACT_GELU_TANH = 2, CNN_ACT_SILU = 3, CNN_ACT_ELU = 4,
           CNN_ACT_SOFTPLUS = 5, CNN_ACT_MISH = 6, CNN_ACT_HARDSWISH = 7,
           CNN_ACT_HARDSIGMOID = 8, CNN_ACT_RELU6 = 9 };

    /* One SIMD-cloned loop per activation and direction: y = f(x) (forward) and
       y = f'(x) g (backward); a, b: alpha / beta, threshold.  y may be x or g itself (each
       element is read before it is written).  One loop per function keeps every inlined
       helper inside the vectorizer's reach (a single function holding all the loops hit
       GCC's inlining budget and called expf out of line, element by element). */
    #define CNN_ACT_LOOPS(NAME, SUF, T, FWD, BWD)                                           \
    CNN_SIMD_CLONES static void cnn_##NAME##_fwd##SUF(const T* x, T* y, ptrdiff_t n,       \
                                                      T a, T b) {                          \
        (void)a; (void)b;                                                                  \
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {                               \
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;                  \
            CNN_PREFETCH_NEXT(x, i1, n, T)                                                 \
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = FWD;                                \
        }                                                                                  \
    }                                                                                      \
    CNN_SIMD_CLONES static void cnn_##NAME##_bwd##SUF(const T* g, const T* x, T* y,        \
                                                      ptrdiff_t n, T a, T b) {             \
        (void)a; (void)b;                                                                  \
        for (ptrdiff_t i0 = 0; i0 < n; i0 += CNN_PF_BLOCK) {                               \
            ptrdiff_t i1 = i0 + CNN_PF_BLOCK < n ? i0 + CNN_PF_BLOCK : n;                  \
            CNN_PREFETCH_NEXT(x, i1, n, T)                                                 \
            CNN_PREFETCH_NEXT(g, i1, n, T)                                                 \
            for (ptrdiff_t i = i0; i < i1; i++) y[i] = BWD;                                \
        }                                                                                  \
    }
    #define CNN_DEFINE_ACT_BLOCKS(SUF, T)                                                   \
    CNN_ACT_LOOPS(gelu, SUF, T, cnn_gelu##SUF(x[i]), cnn_gelu_bw##SUF(g[i], x[i]))         \
    CNN_ACT_LOOPS(gelu_tanh, SUF, T, cnn_gelu_tanh##SUF(x[i]),                             \
                  cnn_gelu_tanh_bw##SUF(g[i], x[i]))                                       \
    CNN_ACT_LOOPS(silu, SUF, T, cnn_silu##SUF(x[i]), cnn_silu_bw##SUF(g[i], x[i]))         \
    CNN_ACT_LOOPS(elu, SUF, T, cnn_elu##SUF(x[i], a), cnn_elu_bw##SUF(g[i], x[i], a))      \
    CNN_ACT_LOOPS(softplus, SUF, T, cnn_softplus##SUF(x[i], a, b),                         \
                  cnn_softplus_bw##SUF(g[i], x[i], a, b))                                  \
    CNN_ACT_LOOPS(mish, SUF, T, cnn_mish##SUF(x[i]), cnn_mish_bw##SUF(g[i], x[i]))         \
    CNN_ACT_LOOPS(hardswish, SUF, T, cnn_hardswish##SUF(x[i]),                             \
                  cnn_hardswish_bw##SUF(g[i], x[i]))                                       \
    CNN_ACT_LOOPS(hardsigmoid, SUF, T, cnn_hardsigmoid##SUF(x[i]),                         \
                  cnn_hardsigmoid_bw##SUF(g[i], x[i]))                                     \
    CNN_ACT_LOOPS(relu6, SUF, T, cnn_relu6##SUF(x[i]), cnn_relu6_bw##SUF(g[i], x[i]))      \
    static void cnn_act_fwd##SUF(int kind, const T* x, T* y, ptrdiff_t n, T a, T b) {      \
        switch (kind) {                                                                    \
        case CNN_ACT_GELU: cnn_gelu_fwd##SUF(x, y, n, a, b); break;                        \
        case CNN_ACT_GELU_TANH: cnn_gelu_tanh_fwd##SUF(x, y, n, a, b); break;              \
        case CNN_ACT_SILU: cnn_silu_fwd##SUF(x, y, n, a, b); break;                        \
        case CNN_ACT_ELU: cnn_elu_fwd##SUF(x, y, n, a, b); break;                          \
        case CNN_ACT_SOFTPLUS: cnn_softplus_fwd##SUF(x, y, n, a, b); break;                \
        case CNN_ACT_MISH: cnn_mish_fwd##SUF(x, y, n, a, b); break;                        \
        case CNN_ACT_HARDSWISH: cnn_hardswish_fwd##SUF(x, y, n, a, b); break;              \
        case CNN_ACT_HARDSIGMOID: cnn_hardsigmoid_fwd##SUF(x, y, n, a, b); break;          \
        case CNN_ACT_RELU6: cnn_relu6_fwd##SUF(x, y, n, a, b); break;                      \
        }                                                                                  \
    }                                                                                      \
    static void cnn_act_bwd##SUF(int kind, const T* g, const T* x, T* y, ptrdiff_t n,      \
                                 T a, T b) {                                               \
        switch (kind) {                                                                    \
        case CNN_ACT_GELU: cnn_gelu_bwd##SUF(g, x, y, n, a, b); break;                     \
        case CNN_ACT_GELU_TANH: cnn_gelu_tanh_bwd##SUF(g, x, y, n, a, b); break;           \
        case CNN_ACT_SILU: cnn_silu_bwd##SUF(g, x, y, n, a, b); break;                     \
        case CNN_ACT_ELU: cnn_elu_bwd##SUF(g, x, y, n, a, b); break;                       \
        case CNN_ACT_SOFTPLUS: cnn_softplus_bwd##SUF(g, x, y, n, a, b); break;             \
        case CNN_ACT_MISH: cnn_mish_bwd##SUF(g, x, y, n, a, b); break;                     \
        case CNN_ACT_HARDSWISH: cnn_hardswish_bwd##SUF(g, x, y, n, a, b); break;           \
        case CNN_ACT_HARDSIGMOID: cnn_hardsigmoid_bwd##SUF(g, x, y, n, a, b); break;       \
        case CNN_ACT_RELU6: cnn_relu6_bwd##SUF(g, x, y, n, a, b); break;                   \
        }                                                                                  \
    }
    CNN_DEFINE_ACT_BLOCKS(f, float)
    CNN_DEFINE_ACT_BLOCKS(d, double)
    """
    enum:
        CNN_ACT_GELU
        CNN_ACT_GELU_TANH
        CNN_ACT_SILU
        CNN_ACT_ELU
        CNN_ACT_SOFTPLUS
        CNN_ACT_MISH
        CNN_ACT_HARDSWISH
        CNN_ACT_HARDSIGMOID
        CNN_ACT_RELU6
    void cnn_act_fwdf(int kind, const float* x, float* y, Py_ssize_t n, float a,
                      float b) noexcept nogil
    void cnn_act_fwdd(int kind, const double* x, double* y, Py_ssize_t n, double a,
                      double b) noexcept nogil
    void cnn_act_bwdf(int kind, const float* g, const float* x, float* y, Py_ssize_t n,
                      float a, float b) noexcept nogil
    void cnn_act_bwdd(int kind, const double* g, const double* x, double* y, Py_ssize_t n,
                      double a, double b) noexcept nogil


cdef inline void act_forward(int kind, const floating* x, floating* y, Py_ssize_t n,
                             floating a, floating b) noexcept nogil:
    """``y = f(x)`` for the CNN_ACT_* ``kind`` (parameters ``a``, ``b``); ``y`` may be ``x``."""
    if floating is float:
        cnn_act_fwdf(kind, x, y, n, a, b)
    else:
        cnn_act_fwdd(kind, x, y, n, a, b)


cdef inline void act_backward(int kind, const floating* g, const floating* x, floating* y,
                              Py_ssize_t n, floating a, floating b) noexcept nogil:
    """``y = f'(x) g`` for the CNN_ACT_* ``kind``; ``y`` may be ``g`` or ``x``."""
    if floating is float:
        cnn_act_bwdf(kind, g, x, y, n, a, b)
    else:
        cnn_act_bwdd(kind, g, x, y, n, a, b)
