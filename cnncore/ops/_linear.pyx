"""Fully connected layer kernels: ``y = x @ W.T + b`` and its gradients, as single-threaded
BLAS GEMMs on fixed blocks run in parallel by OpenMP.

Going through these (rather than NumPy's ``@``) keeps a training step on one threading
runtime: NumPy's BLAS threads keep spinning after each call and would fight the OpenMP
kernels for the cores.

How a product ``C (M x N) = op(A) (M x K) @ op(B) (K x N)`` is cut into tasks decides how much
BLAS packs: every task packs the parts of A and B it reads, so cutting M packs B once per
block, cutting N packs A once per block.  With a long inner dimension (a layer's forward
pass on a small batch: K = in_features) the inner dimension is cut instead, into parts whose
partial products are summed in a fixed order; nothing is packed twice.  Otherwise the
dimension whose cut repeats the smaller operand is cut.  Blocks depend on the shapes only,
never on the thread count, so results are bit-identical for any number of threads.

A product of one row (a forward or input gradient at batch size 1) is a BLAS matrix-vector
product instead of a one-row GEMM (about twice as fast), cut by columns only (no partial
sums to add), and not cut at all below ``SMALL_GEMV`` multiply-adds (LeNet's classifier
layers).
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from _blas cimport gemm, gemv
from cnncore._shared cimport CNN_ERR_NOMEM, CNN_OK, check_status, floating, py_max, py_min

cdef enum:
    TARGET_BLOCKS = 4    # blocks a cut dimension is split into (when it is long enough) ...
    MIN_BLOCK = 16       # ... of at least this many rows / columns (a multiple of this)
    MAX_K_PARTS = 4      # inner-dimension parts (each at least K_PART long)
    K_PART = 256
    SMALL_GEMV = 1 << 17  # one-row products up to this many multiply-adds are not split


cdef inline Py_ssize_t block_size(Py_ssize_t n) noexcept nogil:
    """Fixed block length for cutting a dimension of length ``n`` into about TARGET_BLOCKS."""
    cdef Py_ssize_t b = (n + TARGET_BLOCKS - 1) // TARGET_BLOCKS
    return py_max(MIN_BLOCK, (b + MIN_BLOCK - 1) // MIN_BLOCK * MIN_BLOCK)


cdef inline void fill_rows(floating* c, Py_ssize_t ldc, Py_ssize_t m0, Py_ssize_t m1,
                           Py_ssize_t n0, Py_ssize_t n1, const floating* bias) noexcept nogil:
    """``C[m0:m1, n0:n1]`` = the bias (indexed by column), or zero."""
    cdef Py_ssize_t r, j
    for r in range(m0, m1):
        if bias != NULL:
            for j in range(n0, n1):
                c[r * ldc + j] = bias[j]
        else:
            memset(c + r * ldc + n0, 0, (n1 - n0) * sizeof(floating))


cdef inline void product(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                         floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """``C (M x N) = op(A) @ op(B) + beta * C``, row-major as :func:`_blas.gemm`; one row
    (``M == 1``, a layer's forward or input gradient at batch size 1) as a matrix-vector
    product, which BLAS does about twice as fast as a one-row GEMM."""
    if M == 1:
        # C^T = op(B)^T @ a, with a = the single row of op(A) (stride lda when transposed)
        gemv(not trans_b, <int> (K if not trans_b else N), <int> (N if not trans_b else K),
             <floating> 1.0, b, <int> ldb, a, <int> (lda if trans_a else 1), beta, c, 1)
    else:
        gemm(trans_a, trans_b, <int> M, <int> N, <int> K, <floating> 1.0, a, <int> lda,
             b, <int> ldb, beta, c, <int> ldc)


cdef int linear_gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                     const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                     const floating* bias, floating* c, int n_threads) noexcept nogil:
    """``C (M x N, row stride N) = op(A) @ op(B) [+ bias on every row]`` (row-major, as
    :func:`_blas.gemm`), cut into tasks as the module docstring says.  ``K == 0``: C is the
    bias, or zero (A and B are not read and may be NULL).  Returns a status code."""
    cdef Py_ssize_t n_parts = 0, bs, n_blocks, t, p, k0, k1, e, MN = M * N
    cdef bint cut_k = cuts_k(M, N, K)
    cdef bint cut_n
    cdef floating* partials = NULL
    cdef floating s
    if K == 0:
        fill_rows(c, N, 0, M, 0, N, bias)
        return CNN_OK
    if cut_k:
        n_parts = py_min(MAX_K_PARTS, K // K_PART)
        partials = <floating*> malloc(n_parts * MN * sizeof(floating))
        if partials == NULL:
            return CNN_ERR_NOMEM
        for p in prange(n_parts, schedule="static", num_threads=py_min(n_threads, n_parts)):
            k0 = p * K // n_parts
            k1 = (p + 1) * K // n_parts
            product(trans_a, trans_b, M, N, k1 - k0,
                    a + (k0 * lda if trans_a else k0), lda,
                    b + (k0 if trans_b else k0 * ldb), ldb, <floating> 0.0,
                    partials + p * MN, N)
        for e in prange(MN, schedule="static",
                        num_threads=py_min(n_threads, py_max(1, MN // 4096))):
            s = bias[e % N] if bias != NULL else 0
            for p in range(n_parts):
                s = s + partials[p * MN + e]
            c[e] = s
        free(partials)
        return CNN_OK
    gemm_blocks(M, N, K, &bs, &n_blocks, &cut_n)
    if n_blocks == 1:  # (no parallel region for a single task)
        gemm_task(trans_a, trans_b, M, N, K, a, lda, b, ldb, bias, c, bs, cut_n, 0)
        return CNN_OK
    for t in prange(n_blocks, schedule="static", num_threads=py_min(n_threads, n_blocks)):
        gemm_task(trans_a, trans_b, M, N, K, a, lda, b, ldb, bias, c, bs, cut_n, t)
    return CNN_OK


cdef inline bint cuts_k(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    """Whether :func:`linear_gemm` cuts the inner dimension (partial products summed)."""
    # (one row is cut by columns whatever K: its matrix-vector products need no partial sums)
    return M > 1 and K >= 2 * K_PART and K >= 4 * py_max(M, N)


cdef inline void gemm_blocks(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t* bs,
                             Py_ssize_t* n_blocks, bint* cut_n) noexcept nogil:
    """The blocks :func:`linear_gemm` cuts a product into when it does not cut K: the
    dimension whose cut repeats the smaller operand (N when ``M <= N``), in ``n_blocks``
    blocks of ``bs`` -- from the shapes only."""
    cut_n[0] = M <= N
    bs[0] = block_size(N if cut_n[0] else M)
    if M == 1 and N * K <= SMALL_GEMV:
        bs[0] = N  # one row, little work: one matrix-vector product beats any split
    n_blocks[0] = ((N if cut_n[0] else M) + bs[0] - 1) // bs[0]


cdef inline void gemm_task(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N,
                           Py_ssize_t K, const floating* a, Py_ssize_t lda, const floating* b,
                           Py_ssize_t ldb, const floating* bias, floating* c, Py_ssize_t bs,
                           bint cut_n, Py_ssize_t t) noexcept nogil:
    """Block ``t`` of :func:`gemm_blocks`' cut: its rows / columns of ``C`` (the bias
    first, when given, then the product added)."""
    cdef Py_ssize_t m0, m1, n0, n1
    if cut_n:
        m0 = 0
        m1 = M
        n0 = t * bs
        n1 = py_min(N, n0 + bs)
    else:
        m0 = t * bs
        m1 = py_min(M, m0 + bs)
        n0 = 0
        n1 = N
    if bias != NULL:
        fill_rows(c, N, m0, m1, n0, n1, bias)
    product(trans_a, trans_b, m1 - m0, n1 - n0, K,
            a + (m0 if trans_a else m0 * lda), lda,
            b + (n0 * ldb if trans_b else n0), ldb,
            <floating> (1.0 if bias != NULL else 0.0), c + m0 * N + n0, N)


cdef int linear_backward_impl(const floating* g, const floating* x, const floating* w,
                              floating* dw, floating* dx, Py_ssize_t N, Py_ssize_t O,
                              Py_ssize_t I, int n_threads) noexcept nogil:
    """``dw = g.T @ x`` and (``dx`` not NULL) ``dx = g @ w``: each product cut into
    :func:`linear_gemm`'s blocks, and the blocks of both run as the tasks of one parallel
    region (two small products run side by side instead of one after the other; the same
    BLAS calls on the same blocks, so the same bits).  A product :func:`linear_gemm` would
    cut along K runs through it, one product after the other."""
    cdef Py_ssize_t bs_w, nb_w, bs_x = 0, nb_x = 0, t
    cdef bint cn_w, cn_x = False
    cdef int status
    if cuts_k(O, I, N) or (dx != NULL and cuts_k(N, I, O)):
        status = linear_gemm(True, False, O, I, N, g, O, x, I, <const floating*> NULL, dw,
                             n_threads)
        if status != CNN_OK or dx == NULL:
            return status
        return linear_gemm(False, False, N, I, O, g, O, w, I, <const floating*> NULL, dx,
                           n_threads)
    gemm_blocks(O, I, N, &bs_w, &nb_w, &cn_w)
    if dx != NULL:
        gemm_blocks(N, I, O, &bs_x, &nb_x, &cn_x)
    for t in prange(nb_w + nb_x, schedule="static", num_threads=py_min(n_threads, nb_w + nb_x)):
        if t < nb_w:
            gemm_task(True, False, O, I, N, g, O, x, I, <const floating*> NULL, dw, bs_w, cn_w,
                      t)
        else:
            gemm_task(False, False, N, I, O, g, O, w, I, <const floating*> NULL, dx, bs_x,
                      cn_x, t - nb_w)
    return CNN_OK


cdef inline const floating* data(const floating[:, ::1] a):
    """Address of the first element, or NULL for an empty array (which has none)."""
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else NULL



def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, ::1] y_out, int n_threads):
    """``y_out[n, o] = sum_i x[n, i] * weight[o, i] + bias[o]`` (bias may be None)."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef const floating* bptr
    cdef const floating* xp
    cdef const floating* wp
    cdef int status
    if N == 0 or O == 0:  # (before taking element addresses: there may be none)
        return
    bptr = &bias[0] if bias is not None else NULL
    xp, wp = data(x), data(weight)
    with nogil:
        status = linear_gemm(False, True, N, O, I, xp, I, wp, I, bptr, &y_out[0, 0],
                             n_threads)
    check_status(status, "linear")


def linear_backward_input(const floating[:, ::1] grad_output, const floating[:, ::1] weight,
                          floating[:, ::1] dx_out, int n_threads):
    """``dx_out = grad_output @ weight``."""
    cdef Py_ssize_t N = grad_output.shape[0], O = grad_output.shape[1], I = weight.shape[1]
    cdef const floating* gp
    cdef const floating* wp
    cdef int status
    if N == 0 or I == 0:
        return
    gp, wp = data(grad_output), data(weight)
    with nogil:
        status = linear_gemm(False, False, N, I, O, gp, O, wp, I, <const floating*> NULL,
                             &dx_out[0, 0], n_threads)
    check_status(status, "linear_backward_input")


def linear_backward_weight(const floating[:, ::1] grad_output, const floating[:, ::1] x,
                           floating[:, ::1] dw_out, int n_threads):
    """``dw_out = grad_output.T @ x``."""
    cdef Py_ssize_t N = grad_output.shape[0], O = grad_output.shape[1], I = x.shape[1]
    cdef const floating* gp
    cdef const floating* xp
    cdef int status
    if O == 0 or I == 0:
        return
    gp, xp = data(grad_output), data(x)
    with nogil:
        status = linear_gemm(True, False, O, I, N, gp, O, xp, I, <const floating*> NULL,
                             &dw_out[0, 0], n_threads)
    check_status(status, "linear_backward_weight")


def linear_backward(const floating[:, ::1] grad_output, const floating[:, ::1] x,
                    const floating[:, ::1] weight, floating[:, ::1] dw_out,
                    floating[:, ::1] dx_out, int n_threads):
    """``dw_out = grad_output.T @ x`` and (``dx_out`` not None) ``dx_out = grad_output @
    weight`` in one parallel region -- bit-identical to :func:`linear_backward_weight` and
    :func:`linear_backward_input` (a Linear layer's backward in training)."""
    cdef Py_ssize_t N = grad_output.shape[0], O = grad_output.shape[1], I = x.shape[1]
    cdef const floating* gp
    cdef const floating* xp
    cdef const floating* wp
    cdef floating* dxp = NULL
    cdef int status
    if (x.shape[0] != N or weight.shape[0] != O or weight.shape[1] != I
            or dw_out.shape[0] != O or dw_out.shape[1] != I
            or (dx_out is not None and (dx_out.shape[0] != N or dx_out.shape[1] != I))):
        raise ValueError(
            f"linear_backward(): mismatched shapes. Received: grad_output {N}x{O}, x "
            f"{x.shape[0]}x{I}, weight {weight.shape[0]}x{weight.shape[1]}, dw_out "
            f"{dw_out.shape[0]}x{dw_out.shape[1]}"
        )
    if O == 0 or I == 0:
        return
    if N == 0:  # (no rows: dw is zero, dx empty)
        dw_out[:, :] = 0
        return
    gp, xp, wp = data(grad_output), data(x), data(weight)
    if dx_out is not None:
        dxp = &dx_out[0, 0]
    with nogil:
        status = linear_backward_impl(gp, xp, wp, &dw_out[0, 0], dxp, N, O, I, n_threads)
    check_status(status, "linear_backward")
