"""Build and CPU facts: OpenMP on/off, OpenMP's thread count, vector extensions."""

from _openmp cimport CNNCORE_HAVE_OPENMP, omp_get_max_threads


cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int cnn_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
               && __builtin_cpu_supports("f16c");
    }
    static int cnn_cpu_has_avx512(void) {
        __builtin_cpu_init();
        return cnn_cpu_has_avx2() && __builtin_cpu_supports("avx512f")
               && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
               && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    #else
    static int cnn_cpu_has_avx2(void) { return 0; }
    static int cnn_cpu_has_avx512(void) { return 0; }
    #endif
    """
    int cnn_cpu_has_avx2()
    int cnn_cpu_has_avx512()


def openmp_enabled():
    """Return True when the extension modules were compiled with OpenMP."""
    return bool(CNNCORE_HAVE_OPENMP)


def openmp_max_threads():
    """OpenMP's default team size (1 for a serial build)."""
    return omp_get_max_threads()


def cpu_simd_levels():
    """Instruction-set levels this CPU (and OS) supports, best last: ``["baseline", ...]``."""
    levels = ["baseline"]
    if cnn_cpu_has_avx2():
        levels.append("avx2")
    if cnn_cpu_has_avx512():
        levels.append("avx512")
    return levels
