"""Resizing kernels: nearest and bilinear interpolation of (planes, H, W) arrays, the
gradient of both (a gather), pixel_shuffle and pixel_unshuffle.

The coordinate tables (source indices and weights per output row and column, PyTorch's
rules) are computed by ``cnncore.ops.resize`` and are trusted here: every index is inside
its axis.  Interpolation is separable: output ``(oh, ow)`` is
``sum_a wh_a * (sum_b ww_b * x[ih_a, iw_b])`` -- each source row is interpolated along W
first (a row is reused by consecutive output rows), then rows are blended.

The gradient is the transpose, computed as a gather: ``grad_x[h, w] = sum_k wh_k *
(sum_j ww_j * grad_y[oh_k, ow_j])`` over the lists of output rows / columns that read input
row ``h`` / column ``w`` (CSR, in a fixed order): first along W for the output rows a block
of input rows needs, then along H.  No output is scattered, so no two threads ever add into
the same element.

Tasks: (plane, block of rows) -- output rows in the forward, input rows in the backward, a
plane's row ``h`` of the coarse side for pixel_(un)shuffle.  Each output element is written
by one task with a sequence of operations fixed by the shapes: bit-identical for any thread
count.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from cnncore._shared cimport CNN_ERR_NOMEM, CNN_OK, check_status, floating, py_max, py_min

cdef enum:
    TASK_ELEMS = 16384        # output elements per task (rows are never split)


cdef inline Py_ssize_t rows_per_task(Py_ssize_t n_rows, Py_ssize_t row_len) noexcept nogil:
    return py_max(1, py_min(n_rows, TASK_ELEMS // py_max(row_len, 1)))


# ------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------

cdef void nearest_rows(const floating* x, floating* y, Py_ssize_t W, Py_ssize_t Wo,
                       Py_ssize_t r0, Py_ssize_t r1, const int64_t* ih,
                       const int64_t* iw) noexcept nogil:
    """Output rows ``[r0, r1)`` of one plane; a row with the previous row's source is a
    copy of it."""
    cdef Py_ssize_t oh, ow
    cdef const floating* xr
    cdef floating* yr
    for oh in range(r0, r1):
        yr = y + oh * Wo
        if oh > r0 and ih[oh] == ih[oh - 1]:
            memcpy(yr, yr - Wo, Wo * sizeof(floating))
            continue
        xr = x + ih[oh] * W
        for ow in range(Wo):
            yr[ow] = xr[iw[ow]]


cdef inline void hinterp(const floating* xr, floating* out, Py_ssize_t Wo, const int64_t* w0,
                         const int64_t* w1, const floating* lw0,
                         const floating* lw1) noexcept nogil:
    """One source row interpolated along W."""
    cdef Py_ssize_t ow
    for ow in range(Wo):
        out[ow] = xr[w0[ow]] * lw0[ow] + xr[w1[ow]] * lw1[ow]


cdef void linear_rows(const floating* x, floating* y, Py_ssize_t W, Py_ssize_t Wo, Py_ssize_t r0,
                      Py_ssize_t r1, const int64_t* h0, const int64_t* h1,
                      const floating* lh0, const floating* lh1, const int64_t* w0,
                      const int64_t* w1, const floating* lw0, const floating* lw1,
                      floating* buf) noexcept nogil:
    """Output rows ``[r0, r1)`` of one plane; ``buf`` holds two W-interpolated source rows
    (``2 * Wo`` elements), reused while consecutive output rows read them."""
    cdef Py_ssize_t oh, ow, k
    cdef Py_ssize_t held[2]
    cdef floating* row[2]
    cdef floating* a
    cdef floating* b
    cdef floating c0, c1
    cdef floating* yr
    held[0] = -1
    held[1] = -1
    row[0] = buf
    row[1] = buf + Wo
    for oh in range(r0, r1):
        # make sure both source rows are held (never evicting the other one needed)
        if held[0] != h0[oh] and held[1] != h0[oh]:
            k = 0 if held[0] != h1[oh] else 1
            hinterp(x + h0[oh] * W, row[k], Wo, w0, w1, lw0, lw1)
            held[k] = h0[oh]
        if held[0] != h1[oh] and held[1] != h1[oh]:
            k = 0 if held[0] != h0[oh] else 1
            hinterp(x + h1[oh] * W, row[k], Wo, w0, w1, lw0, lw1)
            held[k] = h1[oh]
        a = row[0] if held[0] == h0[oh] else row[1]
        b = row[0] if held[0] == h1[oh] else row[1]
        c0 = lh0[oh]
        c1 = lh1[oh]
        yr = y + oh * Wo
        for ow in range(Wo):
            yr[ow] = a[ow] * c0 + b[ow] * c1


# ------------------------------------------------------------------------------------------
# Backward (gather)
# ------------------------------------------------------------------------------------------

cdef int gather_rows(const floating* g, floating* gx, Py_ssize_t Wo, Py_ssize_t W,
                     Py_ssize_t r0, Py_ssize_t r1, const int64_t* hs, const int64_t* ho,
                     const floating* hw, const int64_t* ws, const int64_t* wo,
                     const floating* ww) noexcept nogil:
    """Input rows ``[r0, r1)`` of one plane's gradient."""
    cdef Py_ssize_t lo = -1, hi = -1, k, j, oh, w, h
    cdef floating* T
    cdef floating* t
    cdef floating* out
    cdef const floating* gr
    cdef floating acc, coef
    for k in range(hs[r0], hs[r1]):                # the output rows these input rows need
        if lo < 0 or ho[k] < lo:
            lo = ho[k]
        if ho[k] > hi:
            hi = ho[k]
    if lo < 0:                                     # no output row reads these rows
        for h in range(r0, r1):
            for w in range(W):
                gx[h * W + w] = 0
        return CNN_OK
    T = <floating*> malloc((hi - lo + 1) * W * sizeof(floating))
    if T == NULL:
        return CNN_ERR_NOMEM
    for oh in range(lo, hi + 1):                   # along W: T[oh, w] = sum_j ww_j g[oh, ow_j]
        gr = g + oh * Wo
        t = T + (oh - lo) * W
        for w in range(W):
            acc = 0
            for j in range(ws[w], ws[w + 1]):
                acc = acc + ww[j] * gr[wo[j]]
            t[w] = acc
    for h in range(r0, r1):                        # along H: gx[h] = sum_k wh_k T[oh_k]
        out = gx + h * W
        for w in range(W):
            out[w] = 0
        for k in range(hs[h], hs[h + 1]):
            coef = hw[k]
            t = T + (ho[k] - lo) * W
            for w in range(W):
                out[w] = out[w] + coef * t[w]
    free(T)
    return CNN_OK


# ------------------------------------------------------------------------------------------
# pixel_shuffle / pixel_unshuffle
# ------------------------------------------------------------------------------------------

cdef void shuffle_row(const floating* src, floating* dst, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t r, Py_ssize_t p, Py_ssize_t h, bint inverse) noexcept nogil:
    """Coarse row ``h`` of spatial plane ``p``: the ``r`` fine rows ``h * r + i`` and the
    ``r * r`` coarse planes ``p * r * r + i * r + j`` it exchanges elements with
    (``inverse``: fine -> coarse)."""
    cdef Py_ssize_t i, j, w, Wr = W * r
    cdef Py_ssize_t plane = H * W, fine_plane = H * W * r * r
    cdef const floating* s
    cdef floating* d
    for i in range(r):
        for j in range(r):
            if not inverse:                        # coarse (p r^2 + i r + j, h, :) -> fine
                s = src + (p * r * r + i * r + j) * plane + h * W
                d = dst + p * fine_plane + (h * r + i) * Wr + j
                for w in range(W):
                    d[w * r] = s[w]
            else:                                  # fine -> coarse
                s = src + p * fine_plane + (h * r + i) * Wr + j
                d = dst + (p * r * r + i * r + j) * plane + h * W
                for w in range(W):
                    d[w] = s[w * r]


# ------------------------------------------------------------------------------------------
# Thin def wrappers (validated by cnncore.ops.resize; empty arrays never get here)
# ------------------------------------------------------------------------------------------

def nearest_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y_out,
                    const int64_t[::1] ih, const int64_t[::1] iw, int n_threads):
    """``y_out[p, oh, ow] = x[p, ih[oh], iw[ow]]``."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y_out.shape[1], Wo = y_out.shape[2]
    cdef Py_ssize_t rb = rows_per_task(Ho, Wo)
    cdef Py_ssize_t nb = (Ho + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            p = t // nb
            r0 = (t % nb) * rb
            nearest_rows(xp + p * H * W, yp + p * Ho * Wo, W, Wo, r0, py_min(r0 + rb, Ho),
                         &ih[0], &iw[0])


def linear_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y_out,
                   const int64_t[::1] h0, const int64_t[::1] h1, const floating[::1] lh0,
                   const floating[::1] lh1, const int64_t[::1] w0, const int64_t[::1] w1,
                   const floating[::1] lw0, const floating[::1] lw1, int n_threads):
    """``y_out[p, oh, ow] = sum over (h0, h1) x (w0, w1) of the weight products times x``."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y_out.shape[1], Wo = y_out.shape[2]
    cdef Py_ssize_t rb = rows_per_task(Ho, Wo)
    cdef Py_ssize_t nb = (Ho + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef int status = CNN_OK
    cdef int* st = &status
    cdef floating* buf
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            buf = <floating*> malloc(2 * Wo * sizeof(floating))
            if buf == NULL:
                st[0] = CNN_ERR_NOMEM
            else:
                p = t // nb
                r0 = (t % nb) * rb
                linear_rows(xp + p * H * W, yp + p * Ho * Wo, W, Wo, r0, py_min(r0 + rb, Ho),
                            &h0[0], &h1[0], &lh0[0], &lh1[0], &w0[0], &w1[0], &lw0[0],
                            &lw1[0], buf)
                free(buf)
    check_status(status, "interpolate")


def gather_backward(const floating[:, :, ::1] grad_output, floating[:, :, ::1] grad_x,
                    const int64_t[::1] h_start, const int64_t[::1] h_out,
                    const floating[::1] h_weight, const int64_t[::1] w_start,
                    const int64_t[::1] w_out, const floating[::1] w_weight, int n_threads):
    """Gradient of a separable interpolation: input row ``h`` is read by output rows
    ``h_out[h_start[h]:h_start[h + 1]]`` with weights ``h_weight[...]`` (columns alike)."""
    cdef Py_ssize_t P = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t Ho = grad_output.shape[1], Wo = grad_output.shape[2]
    cdef Py_ssize_t rb = rows_per_task(H, py_max(W, Wo))
    cdef Py_ssize_t nb = (H + rb - 1) // rb
    cdef Py_ssize_t t, p, r0
    cdef int status = CNN_OK, s
    cdef int* st = &status
    cdef const floating* gp = &grad_output[0, 0, 0]
    cdef floating* gxp = &grad_x[0, 0, 0]
    # empty weight lists (an axis no output reads) still need a valid pointer
    cdef const int64_t* ho = &h_out[0] if h_out.shape[0] else &h_start[0]
    cdef const floating* hw = &h_weight[0] if h_weight.shape[0] else gp
    cdef const int64_t* wo = &w_out[0] if w_out.shape[0] else &w_start[0]
    cdef const floating* ww = &w_weight[0] if w_weight.shape[0] else gp
    with nogil:
        for t in prange(P * nb, schedule="static", num_threads=n_threads):
            p = t // nb
            r0 = (t % nb) * rb
            s = gather_rows(gp + p * Ho * Wo, gxp + p * H * W, Wo, W, r0, py_min(r0 + rb, H),
                            &h_start[0], ho, hw, &w_start[0], wo, ww)
            if s != CNN_OK:
                st[0] = s
    check_status(status, "interpolate_backward")


def pixel_shuffle(const floating[:, :, ::1] x, floating[:, :, ::1] y_out, Py_ssize_t r,
                  int n_threads):
    """``(B * r * r, H, W) -> (B, H * r, W * r)``."""
    cdef Py_ssize_t P = y_out.shape[0], H = x.shape[1], W = x.shape[2], t
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * H, schedule="static", num_threads=n_threads):
            shuffle_row(xp, yp, H, W, r, t // H, t % H, False)


def pixel_unshuffle(const floating[:, :, ::1] x, floating[:, :, ::1] y_out, Py_ssize_t r,
                    int n_threads):
    """``(B, H * r, W * r) -> (B * r * r, H, W)``."""
    cdef Py_ssize_t P = x.shape[0], H = y_out.shape[1], W = y_out.shape[2], t
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y_out[0, 0, 0]
    with nogil:
        for t in prange(P * H, schedule="static", num_threads=n_threads):
            shuffle_row(xp, yp, H, W, r, t // H, t % H, True)
