# What every kernel module cimports: the fused float type, the status codes that ``nogil``
# kernels return and the one function that turns them into exceptions, the operation and mode
# codes shared by a kernel and its Python wrapper (``cpdef enum``: the same names exist as
# Python enums in ``cnncore._shared``), and small inline helpers.  ``check_status`` is a real
# (non-inline) function implemented in ``_shared.pyx``; modules reach it through Cython's
# cross-module cimport, which is why this file lives on the package path
# (``from cnncore._shared cimport ...``).

ctypedef fused floating:
    float
    double

# Status codes returned by ``nogil`` kernels; ``check_status`` turns them into exceptions.
cpdef enum Status:
    CNN_OK = 0
    CNN_ERR_NOMEM = -1       # a workspace allocation failed
    CNN_ERR_INDEX = -2       # an index (e.g. a max-pool argmax) was out of range


cdef int check_status(int status, str func, str name=*) except -1
    # Raise the exception for a kernel's status (MemoryError, ValueError naming ``name`` for
    # an out-of-range index, RuntimeError otherwise); return 0 for CNN_OK.


# Operation and mode codes, one enum per kernel family.
cpdef enum Activation:                 # _activation.unary / binary
    OP_RELU = 1
    OP_LEAKY_RELU = 2
    OP_SIGMOID = 3
    OP_TANH = 4
    # backward ops: 10 + the forward op
    OP_RELU_BW = 11
    OP_LEAKY_RELU_BW = 12
    OP_SIGMOID_BW = 13
    OP_TANH_BW = 14
    # more forward ops (21-29) and their backward ops (10 + the forward op); backward ops
    # take the forward *input*
    OP_GELU = 21
    OP_GELU_TANH = 22
    OP_SILU = 23
    OP_ELU = 24
    OP_HARDSWISH = 25
    OP_HARDSIGMOID = 26
    OP_SOFTPLUS = 27
    OP_MISH = 28
    OP_RELU6 = 29
    OP_GELU_BW = 31
    OP_GELU_TANH_BW = 32
    OP_SILU_BW = 33
    OP_ELU_BW = 34
    OP_HARDSWISH_BW = 35
    OP_HARDSIGMOID_BW = 36
    OP_SOFTPLUS_BW = 37
    OP_MISH_BW = 38
    OP_RELU6_BW = 39

cpdef enum ConvAlgorithm:              # _conv: how a pass is computed (see ops/conv_dispatch.py)
    ALGO_GEMM = 1
    ALGO_DIRECT = 2
    ALGO_WINOGRAD = 3                  # 3x3, stride 1, dilation 1 only; anything else runs GEMM
    ALGO_DEPTHWISE = 4                 # one input channel per group only; anything else runs GEMM
    ALGO_BLOCKED = 5                   # forward, stride-1 input gradient; anything else runs GEMM
    ALGO_WINOGRAD4 = 6                 # Winograd F(4x4, 3x3): as ALGO_WINOGRAD
    ALGO_ROWS = 7                      # row-vectorized direct: stride 1 only; else GEMM

cpdef enum Loss:                       # _loss.pointwise
    LOSS_MSE = 1
    LOSS_L1 = 2
    LOSS_BCE_WITH_LOGITS = 3
    LOSS_BCE = 4
    LOSS_MSLE = 5
    LOSS_MAPE = 6

cpdef enum LossDomain:                 # _loss.pointwise's status > 0: which operand left the domain
    LOSS_BAD_INPUT = 1
    LOSS_BAD_TARGET = 2

cpdef enum PadMode:                    # _pad; the names give cnncore's pad modes, in order
    PAD_CONSTANT = 0
    PAD_REPLICATE = 1
    PAD_REFLECT = 2
    PAD_CIRCULAR = 3


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Ceiling division for ``b > 0`` and any sign of ``a``."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


cdef inline Py_ssize_t floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for ``b > 0`` and any sign of ``a`` (C ``/`` truncates toward zero)."""
    if a >= 0:
        return a // b
    return -((-a + b - 1) // b)


cdef inline Py_ssize_t py_min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t py_max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline void valid_range(Py_ssize_t offset, Py_ssize_t step, Py_ssize_t size,
                             Py_ssize_t n_out, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Range ``[lo, hi)`` of output positions ``o`` in ``[0, n_out)`` whose input position
    ``o * step + offset`` lies inside ``[0, size)``.  ``step > 0``."""
    cdef Py_ssize_t a = ceil_div(-offset, step)           # first o with o*step + offset >= 0
    cdef Py_ssize_t b = floor_div(size - 1 - offset, step) + 1   # first o past size - 1
    a = py_min(py_max(a, 0), n_out)
    b = py_min(py_max(b, a), n_out)
    lo[0] = a
    hi[0] = b


cdef inline floating fixed_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """``x[0] + ... + x[n-1]`` in a fixed order that depends on ``n`` only.  Up to 31
    elements: left to right.  Longer: 32 interleaved partial sums (lane ``q`` adds ``x[q],
    x[q+32], ...``; the compiler keeps them in vector registers), combined pairwise, then
    the tail left to right."""
    cdef floating acc[32]
    cdef floating total = 0
    cdef Py_ssize_t t = 0, q, h
    if n < 32:
        for q in range(n):
            total = total + x[q]
        return total
    for q in range(32):
        acc[q] = x[q]
    t = 32
    while t + 32 <= n:
        for q in range(32):
            acc[q] = acc[q] + x[t + q]
        t = t + 32
    h = 16
    while h >= 1:
        for q in range(h):
            acc[q] = acc[q] + acc[q + h]
        h = h // 2
    total = acc[0]
    for q in range(t, n):
        total = total + x[q]
    return total
