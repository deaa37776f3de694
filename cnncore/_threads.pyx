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


# --------------------------------------------------------------------------------------------
# The BLAS single-thread cap (see cnncore._config.blas_single_thread).  threadpoolctl finds
# the BLAS libraries once; their thread-count getter and setter are then called here through
# C function pointers: entering and leaving the cap cost well under a microsecond, against
# ~5-15 us for threadpoolctl's Python path per switch.
# --------------------------------------------------------------------------------------------

ctypedef int (*int_getter)() noexcept nogil
ctypedef void (*int_setter)(int) noexcept nogil
ctypedef long long (*wide_getter)() noexcept nogil
ctypedef void (*wide_setter)(long long) noexcept nogil

cdef enum:
    MAX_BLAS_LIBS = 8


cdef struct BlasLib:
    void* get
    void* set
    bint wide        # dim_t (64-bit) count, as BLIS takes it
    long long saved  # the count before the cap; 0 when the cap left it alone


cdef inline long long lib_get(BlasLib* lib) noexcept nogil:
    if lib.wide:
        return (<wide_getter> lib.get)()
    return (<int_getter> lib.get)()


cdef inline void lib_set(BlasLib* lib, long long n) noexcept nogil:
    if lib.wide:
        (<wide_setter> lib.set)(n)
    else:
        (<int_setter> lib.set)(<int> n)


cdef class BlasCap:
    """Re-entrant context manager: every configured BLAS library runs single-threaded inside.

    The outermost ``__enter__`` reads each library's thread count and sets it to 1 where it
    was larger; the matching ``__exit__`` restores it.  Inner levels only count the depth.
    The depth is shared by all Python threads (the user's setting comes back once, when the
    last of them leaves).  With C entry points only, each step runs with the GIL held and
    calls no Python code, so it is atomic; libraries driven through Python (``fallback``)
    are switched under a lock.

    :meth:`configure` takes the libraries as ``(getter_address, setter_address, wide)``
    (C functions ``int get(void)`` / ``void set(int)``, or with ``long long`` counts when
    ``wide``), and ``fallback``: objects with ``num_threads`` and ``set_num_threads(n)``
    (threadpoolctl controllers) for libraries without known C entry points.
    """

    cdef BlasLib libs[MAX_BLAS_LIBS]
    cdef int n_libs
    cdef int _depth
    cdef list fallback
    cdef list fallback_saved
    cdef object lock

    def __cinit__(self):
        import threading

        self.n_libs = 0
        self._depth = 0
        self.fallback = []
        self.fallback_saved = []
        self.lock = threading.Lock()

    def configure(self, libs, fallback=()):
        """Set the libraries to cap (only while no cap is held)."""
        cdef int i = 0
        if self._depth != 0:
            raise RuntimeError("BlasCap.configure() while the cap is held")
        libs = list(libs)
        if len(libs) > MAX_BLAS_LIBS:
            raise ValueError(f"BlasCap.configure(): at most {MAX_BLAS_LIBS} libraries")
        for get, set_, wide in libs:
            if not get or not set_:
                raise ValueError("BlasCap.configure(): null function address")
        for get, set_, wide in libs:
            self.libs[i].get = <void*> <size_t> get
            self.libs[i].set = <void*> <size_t> set_
            self.libs[i].wide = bool(wide)
            self.libs[i].saved = 0
            i += 1
        self.n_libs = i
        self.fallback = list(fallback)
        self.fallback_saved = []

    @property
    def depth(self):
        """How many caps are open (0: BLAS runs with the user's settings)."""
        return self._depth

    @property
    def n_libraries(self):
        """``(libraries driven through C entry points, libraries driven through Python)``."""
        return self.n_libs, len(self.fallback)

    cdef void cap(self) noexcept:
        cdef int i
        cdef long long n
        for i in range(self.n_libs):
            n = lib_get(&self.libs[i])
            if n > 1:
                lib_set(&self.libs[i], 1)
                self.libs[i].saved = n
            else:
                self.libs[i].saved = 0

    cdef void restore(self) noexcept:
        cdef int i
        for i in range(self.n_libs):
            if self.libs[i].saved > 1:
                lib_set(&self.libs[i], self.libs[i].saved)
                self.libs[i].saved = 0

    def __enter__(self):
        if self.fallback:
            with self.lock:
                if self._depth == 0:
                    self.cap()
                    self._enter_fallback()
                self._depth += 1
            return None
        if self._depth == 0:
            self.cap()
        self._depth += 1
        return None

    def __exit__(self, exc_type, exc, tb):
        if self.fallback:
            with self.lock:
                self._depth -= 1
                if self._depth == 0:
                    self.restore()
                    self._exit_fallback()
            return False
        self._depth -= 1
        if self._depth == 0:
            self.restore()
        return False

    def _enter_fallback(self):
        saved = []
        for lib in self.fallback:
            try:
                n = lib.num_threads
                if n is not None and n > 1:
                    lib.set_num_threads(1)
                    saved.append((lib, n))
            except Exception:  # noqa: BLE001 -- a library we cannot drive stays as it is
                pass
        self.fallback_saved = saved

    def _exit_fallback(self):
        saved, self.fallback_saved = self.fallback_saved, []
        for lib, n in saved:
            try:
                lib.set_num_threads(n)
            except Exception:  # noqa: BLE001
                pass
