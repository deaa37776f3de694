# Header-only OpenMP shims: the module compiles (serially) when the compiler has no OpenMP.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CNNCORE_HAVE_OPENMP 1
    #else
    #define CNNCORE_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    #endif
    """
    bint CNNCORE_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
