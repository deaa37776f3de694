"""A caching NumPy data allocator for training loops.

A training step allocates the same large temporaries (activations, gradients, im2col-free
outputs) every time.  With the default allocator each one comes from fresh ``mmap``'d pages,
so every step pays page faults and kernel page zeroing -- ~10 % of a LeNet/CNN step on a
2-core machine.  Inside :func:`caching` (used by ``Sequential.fit``/``predict``/``evaluate``),
freed blocks of 64 KiB or more are kept in a small exact-size cache and handed back to the
next allocation of the same size.  Only arrays created inside the context use it (NumPy's
handler is a context variable), and the cache is emptied when the last context exits.
"""

from contextlib import contextmanager

from cpython.pycapsule cimport PyCapsule_New
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memset, strcpy

cimport numpy as cnp

cnp.import_array()


cdef extern from "pythread.h":
    ctypedef void* PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock()
    int PyThread_acquire_lock(PyThread_type_lock, int) nogil
    void PyThread_release_lock(PyThread_type_lock) nogil


cdef enum:
    MIN_CACHED = 1 << 16      # smaller blocks go straight to malloc/free
    N_SLOTS = 128


cdef struct Cache:
    size_t sizes[N_SLOTS]
    void* ptrs[N_SLOTS]
    Py_ssize_t n
    size_t bytes
    size_t limit
    int active                # contexts currently open
    PyThread_type_lock lock


cdef Cache cache
cache.n = 0
cache.bytes = 0
cache.limit = 1 << 30
cache.active = 0
cache.lock = PyThread_allocate_lock()


cdef void* take(size_t size) noexcept nogil:
    cdef Py_ssize_t i
    cdef void* p = NULL
    if size < MIN_CACHED:
        return NULL
    PyThread_acquire_lock(cache.lock, 1)
    for i in range(cache.n):
        if cache.sizes[i] == size:
            p = cache.ptrs[i]
            cache.n -= 1
            cache.sizes[i] = cache.sizes[cache.n]
            cache.ptrs[i] = cache.ptrs[cache.n]
            cache.bytes -= size
            break
    PyThread_release_lock(cache.lock)
    return p


cdef void* cached_malloc(void* ctx, size_t size) noexcept nogil:
    cdef void* p = take(size)
    return p if p != NULL else malloc(size if size else 1)


cdef void* cached_calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size
    cdef void* p
    if elsize != 0 and nelem > (<size_t> -1) // elsize:
        return NULL
    size = nelem * elsize
    p = take(size)
    if p != NULL:
        memset(p, 0, size)
        return p
    return calloc(nelem if nelem else 1, elsize if elsize else 1)


cdef void* cached_realloc(void* ctx, void* ptr, size_t new_size) noexcept nogil:
    return realloc(ptr, new_size if new_size else 1)


cdef void cached_free(void* ctx, void* ptr, size_t size) noexcept nogil:
    cdef bint kept = False
    if ptr == NULL:
        return
    if size >= MIN_CACHED:
        PyThread_acquire_lock(cache.lock, 1)
        if cache.active > 0 and cache.n < N_SLOTS and cache.bytes + size <= cache.limit:
            cache.sizes[cache.n] = size
            cache.ptrs[cache.n] = ptr
            cache.n += 1
            cache.bytes += size
            kept = True
        PyThread_release_lock(cache.lock)
    if not kept:
        free(ptr)


cdef cnp.PyDataMem_Handler handler
strcpy(handler.name, b"cnncore_caching_allocator")  # a char[127] in NumPy's header
handler.version = 1
handler.allocator.ctx = NULL
handler.allocator.malloc = cached_malloc
handler.allocator.calloc = cached_calloc
handler.allocator.realloc = cached_realloc
handler.allocator.free = cached_free

_capsule = PyCapsule_New(&handler, "mem_handler", NULL)


def clear():
    """Free every cached block."""
    cdef Py_ssize_t i
    PyThread_acquire_lock(cache.lock, 1)
    for i in range(cache.n):
        free(cache.ptrs[i])
    cache.n = 0
    cache.bytes = 0
    PyThread_release_lock(cache.lock)


def cached_bytes():
    """Bytes currently held by the cache."""
    return cache.bytes


@contextmanager
def caching():
    """Allocate NumPy arrays created inside the block through the caching allocator."""
    PyThread_acquire_lock(cache.lock, 1)
    cache.active += 1
    PyThread_release_lock(cache.lock)
    old = cnp.PyDataMem_SetHandler(_capsule)
    try:
        yield
    finally:
        cnp.PyDataMem_SetHandler(old)
        PyThread_acquire_lock(cache.lock, 1)
        cache.active -= 1
        last = cache.active == 0
        PyThread_release_lock(cache.lock)
        if last:
            clear()
