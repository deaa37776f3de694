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

    /* 2**n for an integer-valued float/double n inside the normal exponent range: add the
       round-to-nearest magic constant (the integer lands in the low mantissa bits, exactly),
       then shift it (plus the bias) into the exponent field. */
    static inline float cnn__pow2f(float n) {
        union { float f; uint32_t u; } v;
        v.f = n + 12582912.0f;                       /* 1.5 * 2**23 */
        v.u = (v.u + 127u) << 23;
        return v.f;
    }
    static inline double cnn__pow2(double n) {
        union { double f; uint64_t u; } v;
        v.f = n + 6755399441055744.0;                /* 1.5 * 2**52 */
        v.u = (v.u + 1023u) << 52;
        return v.f;
    }

    static inline float cnn_expf(float x) {
        float xc = x > -104.0f ? x : -104.0f;        /* NaN -> -104 here, restored below */
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

    static inline double cnn_exp(double x) {
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
    static inline float cnn__expm1_negf(float x) {
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
    static inline double cnn__expm1_neg(double x) {
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
    static inline float cnn_sigmoidf(float x) {
        float a = x < 0.0f ? -x : x;
        float z = cnn_expf(-a);
        float s = 1.0f / (1.0f + z);
        float zs = z * s;                            /* computed unconditionally: keeps the */
        return x >= 0.0f ? s : zs;                   /* select branch-free (NaN -> zs = NaN) */
    }
    static inline double cnn_sigmoid(double x) {
        double a = x < 0.0 ? -x : x;
        double z = cnn_exp(-a);
        double s = 1.0 / (1.0 + z);
        double zs = z * s;
        return x >= 0.0 ? s : zs;
    }

    /* tanh(x) = sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|)): relatively exact near 0,
       exactly +-1 once |x| > 20 (both precisions saturate well before). */
    static inline float cnn_tanhf(float x) {
        float a = x < 0.0f ? -x : x;
        float em = cnn__expm1_negf(-2.0f * a);
        float t = (0.0f - em) / (2.0f + em);       /* >= +0 */
        return isnan(x) ? x : copysignf(t, x);
    }
    static inline double cnn_tanh(double x) {
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

    CNN_SIMD_CLONES static void cnn_sigmoid_blockf(const float* x, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = cnn_sigmoidf(x[i]);
    }
    CNN_SIMD_CLONES static void cnn_sigmoid_block(const double* x, double* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = cnn_sigmoid(x[i]);
    }
    CNN_SIMD_CLONES static void cnn_tanh_blockf(const float* x, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = cnn_tanhf(x[i]);
    }
    CNN_SIMD_CLONES static void cnn_tanh_block(const double* x, double* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = cnn_tanh(x[i]);
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
