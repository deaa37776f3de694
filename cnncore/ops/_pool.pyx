"""2-D pooling kernels: max / average / adaptive / global / power-average (Lp) pooling, their
gradients, and max-unpooling.

Layout is NCHW.  Every kernel works on one ``(n, c)`` plane at a time and the planes are
distributed over the threads with ``prange``: writes are disjoint and the work split depends
on the shapes only, so results are bit-identical for any number of threads.  Backward passes
zero-fill their plane, then accumulate in the forward's row-major output order.

For a window at output position ``(oh, ow)`` the taps are
``(oh*sh - ph + i*dh, ow*sw - pw + j*dw)`` for ``i < kh``, ``j < kw``; taps outside the input
are padding (``-inf`` for max pooling, zero or not counted for average pooling).  In every
output row, the columns whose windows lie horizontally inside the input (``[ow_lo, ow_hi)``)
run through bounds-check-free, vectorizable row kernels -- specialized for the common
2x2/stride-2 and 3x3/stride-2 windows, tap-major sweeps otherwise -- over the window rows
that are inside the input (all of them except near the top/bottom border); the few border
columns are computed one output at a time.

2x2 windows of stride 2 without padding or dilation (the common case) run through C vector
code instead (``src/_pool2x2.h``, whose baseline, AVX2 and AVX-512 clones are all compiled
into this module; ``_set_simd_level`` picks one, see ``_config.load_kernels``): a whole
plane at a time, and the backward writes each input position once instead of zero-filling
and scattering (when every index lies in its window, which max pooling's indices do).

Max pooling follows PyTorch's scan exactly: the taps are visited in row-major order starting
from ``-inf`` with the first in-bounds tap as index, and a tap replaces the running maximum
when it is greater or NaN -- ties keep the first maximum, and a NaN wins (the last NaN of the
window, as in PyTorch).  Indices are flat ``h * W_in + w`` offsets within the input plane.
The fast row kernels use the plain ``greater`` rule, which is the same thing for NaN-free
windows; an output row whose input rows hold a NaN uses the exact rule instead.

Average pooling sums each window in row-major order and divides by the divisor (no
reciprocal), and the backward passes accumulate in row-major output order, like PyTorch's
CPU kernels -- so the results are bit-identical to PyTorch's as well.

Kernels run without the GIL and return a status code (``cnncore/_shared.pxd``); the ``def`` wrappers
raise.  Index-consuming kernels (max-pool backward, unpooling) range-check every index right
before using it and report ``CNN_ERR_INDEX`` -- a bad index never reads or writes out of
bounds and costs no extra pass.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, pow, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memset

from _pool2x2 cimport (cnn_p2_bwd_plane_double, cnn_p2_bwd_plane_float,
                       cnn_p2_fwd_plane_double, cnn_p2_fwd_plane_float, cnn_p2_set_level)
from cnncore._shared cimport (CNN_ERR_INDEX, CNN_OK, check_status, fixed_sum, floating, py_max,
                              py_min, valid_range)


ctypedef struct PoolGeom:
    Py_ssize_t NC, H, W, Ho, Wo        # planes, input and output spatial sizes
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t ow_lo, ow_hi     # output columns whose windows are horizontally inside the input


cdef PoolGeom make_geom(Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                        Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                        Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                        Py_ssize_t dw) noexcept nogil:
    cdef PoolGeom g
    g.NC = NC; g.H = H; g.W = W; g.Ho = Ho; g.Wo = Wo
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw; g.dh = dh; g.dw = dw
    # ow is interior iff ow*sw - pw >= 0 and ow*sw - pw + (kw-1)*dw <= W - 1
    valid_range(-pw, sw, W - (kw - 1) * dw, Wo, &g.ow_lo, &g.ow_hi)
    return g


cdef inline bint index_ok(int64_t i, Py_ssize_t size) noexcept nogil:
    """``0 <= i < size`` in one unsigned comparison."""
    return <unsigned long long> i < <unsigned long long> size


cdef inline void tap_range(Py_ssize_t start, Py_ssize_t d, Py_ssize_t size, Py_ssize_t k,
                           Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Taps ``i`` in ``[lo, hi)`` of ``[0, k)`` with ``0 <= start + i*d < size`` (no division
    for the usual ``d == 1``)."""
    if d == 1:
        lo[0] = py_min(py_max(-start, 0), k)
        hi[0] = py_max(py_min(k, size - start), lo[0])
    else:
        valid_range(start, d, size, k, lo, hi)


cdef inline bint fits_int32_codes(const PoolGeom* g) noexcept nogil:
    """float32 index tracking stores in-plane tap offsets as int32 (same SIMD lane width)."""
    return g.H * g.W <= 2147483647


# ------------------------------------------------------------------------------------------
# Max pooling, forward
#
# Interior columns run through row kernels that keep the running maximum in registers (2x2
# and 3x3 windows, stride 2) or in the output row (any window; tap-major sweeps).  With indices,
# a chunk of outputs first records which tap won -- as an int32 (float32) or a double
# (float64), the lane width of the values, so the selects vectorize -- and a second short
# loop turns the winners into int64 flat indices.
# ------------------------------------------------------------------------------------------

cdef enum:
    CHUNK = 128        # outputs per index-tracking chunk (stack scratch)

# FIRST_BIT[m]: index of the lowest set bit of a 9-bit mask (which tap is the first maximum).
cdef unsigned char FIRST_BIT[512]


cdef void _init_first_bit() noexcept:
    cdef int m, k
    FIRST_BIT[0] = 0
    for m in range(1, 512):
        k = 0
        while not (m >> k) & 1:
            k += 1
        FIRST_BIT[m] = <unsigned char> k


_init_first_bit()


cdef inline void max_one(const floating* xp, const PoolGeom* g, Py_ssize_t h0,
                         Py_ssize_t i_lo, Py_ssize_t i_hi, Py_ssize_t ow, floating* yv,
                         int64_t* iv) noexcept nogil:
    """One output with bounds checks (vertical taps ``[i_lo, i_hi)`` of the window starting
    at row ``h0`` precomputed): PyTorch's scan."""
    cdef Py_ssize_t w0 = ow * g.sw - g.pw
    cdef Py_ssize_t j_lo, j_hi, i, j, row, pos, best
    cdef floating m = -INFINITY
    cdef floating v
    tap_range(w0, g.dw, g.W, g.kw, &j_lo, &j_hi)
    best = (h0 + i_lo * g.dh) * g.W + w0 + j_lo * g.dw
    for i in range(i_lo, i_hi):
        row = (h0 + i * g.dh) * g.W + w0
        for j in range(j_lo, j_hi):
            pos = row + j * g.dw
            v = xp[pos]
            if (v > m) | (v != v):
                m = v
                best = pos
    yv[0] = m
    if iv != NULL:
        iv[0] = best


cdef void max_row_exact(const floating* x0, Py_ssize_t n, int64_t base, Py_ssize_t n_rows,
                        const PoolGeom* g, floating* yr, int64_t* ir) noexcept nogil:
    """``n`` windows whose taps ``x0 + i*dh*W + j*dw`` (``i < n_rows``, ``j < kw``; window
    ``t`` adds ``t*sw``) are all in bounds, with PyTorch's exact rule (a NaN wins).
    Tap-major sweeps over the output row: each output still sees its taps in row-major
    order.  ``n <= CHUNK`` when ``ir`` is given."""
    cdef Py_ssize_t t, i, j, off, sw = g.sw
    cdef const floating* tap
    cdef floating v, cur
    cdef bint u
    cdef int ci
    cdef floating cf
    cdef int icode[CHUNK]
    cdef floating fcode[CHUNK]
    for t in range(n):
        yr[t] = x0[t * sw]
        if floating is float:
            icode[t] = 0
        else:
            fcode[t] = 0
    for i in range(n_rows):
        for j in range(g.kw):
            if i == 0 and j == 0:
                continue
            off = i * g.dh * g.W + j * g.dw
            tap = x0 + off
            if ir == NULL:
                for t in range(n):
                    v = tap[t * sw]
                    cur = yr[t]
                    yr[t] = v if (v > cur) | (v != v) else cur
            elif floating is float:
                ci = <int> off
                for t in range(n):
                    v = tap[t * sw]
                    cur = yr[t]
                    u = (v > cur) | (v != v)
                    yr[t] = v if u else cur
                    icode[t] = ci if u else icode[t]
            else:
                cf = <floating> off
                for t in range(n):
                    v = tap[t * sw]
                    cur = yr[t]
                    u = (v > cur) | (v != v)
                    yr[t] = v if u else cur
                    fcode[t] = cf if u else fcode[t]
    if ir != NULL:
        for t in range(n):
            if floating is float:
                ir[t] = base + t * sw + icode[t]
            else:
                ir[t] = base + t * sw + <int64_t> fcode[t]


cdef inline bint rows_have_nan(const floating* xp, Py_ssize_t W, Py_ssize_t r0,
                               Py_ssize_t n_rows, Py_ssize_t dr) noexcept nogil:
    """Whether input rows ``r0, r0 + dr, ...`` (``n_rows`` of them) contain a NaN.  One
    vectorized pass; the rows are read again right away by the pooling, from cache."""
    cdef Py_ssize_t r, t
    cdef const floating* row
    cdef int flag = 0
    cdef floating acc = 0
    cdef floating v
    for r in range(n_rows):
        row = xp + (r0 + r * dr) * W
        if floating is float:
            for t in range(W):
                flag = flag | (row[t] != row[t])
        else:
            for t in range(W):
                v = row[t]
                acc = v if v != v else acc
    return flag != 0 or acc != acc


# The fast row kernels below use ``m = v if v > m else m`` (one max instruction per tap).
# With indices the winner is tracked with ``not (v <= m)`` (one compare whose mask also
# selects the winner code), except for float32 3x3 windows: there the maximum comes first,
# then the taps equal to it are marked in a bitmask whose lowest set bit is the first
# maximum (cheaper than a second blend per tap with SSE2; for 2x2 windows it is not).  For
# NaN-free windows both *are* PyTorch's rule, ties and +-0 included;
# rows whose windows touch a NaN go through max_row_exact instead (see max_pool_plane).

cdef void max_row_k2s2(const floating* x0, Py_ssize_t n, int64_t base, const PoolGeom* g,
                       floating* yr, int64_t* ir) noexcept nogil:
    """``n`` in-bounds 2x2 windows, strides 2, dilation 1; ``x0`` is the top-left tap of the
    first window and ``base`` its flat index."""
    cdef Py_ssize_t W = g.W, t, t0, cnt
    cdef const floating* a
    cdef const floating* b
    cdef floating* ya
    cdef floating m, v
    cdef bint u
    cdef int ci
    cdef floating cf
    cdef int icode[CHUNK]
    cdef floating fcode[CHUNK]
    cdef int64_t offs[4]
    offs[0] = 0; offs[1] = 1; offs[2] = W; offs[3] = W + 1
    t0 = 0
    while t0 < n:
        cnt = py_min(<Py_ssize_t> CHUNK, n - t0)
        a = x0 + 2 * t0
        b = a + W
        ya = yr + t0
        if ir == NULL:
            for t in range(cnt):
                m = a[2 * t]
                v = a[2 * t + 1]
                m = v if v > m else m
                v = b[2 * t]
                m = v if v > m else m
                v = b[2 * t + 1]
                m = v if v > m else m
                ya[t] = m
        elif floating is float:
            for t in range(cnt):
                m = a[2 * t]
                ci = 0
                v = a[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                ci = 1 if u else ci
                v = b[2 * t]
                u = not (v <= m)
                m = v if u else m
                ci = 2 if u else ci
                v = b[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                ci = 3 if u else ci
                ya[t] = m
                icode[t] = ci
            for t in range(cnt):
                ir[t0 + t] = base + 2 * (t0 + t) + offs[icode[t]]
        else:
            for t in range(cnt):
                m = a[2 * t]
                cf = 0
                v = a[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                cf = 1 if u else cf
                v = b[2 * t]
                u = not (v <= m)
                m = v if u else m
                cf = 2 if u else cf
                v = b[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                cf = 3 if u else cf
                ya[t] = m
                fcode[t] = cf
            for t in range(cnt):
                ir[t0 + t] = base + 2 * (t0 + t) + offs[<int> fcode[t]]
        t0 = t0 + cnt


cdef void max_row_k3s2(const floating* x0, Py_ssize_t n, int64_t base, const PoolGeom* g,
                       floating* yr, int64_t* ir) noexcept nogil:
    """``n`` in-bounds 3x3 windows, strides 2, dilation 1."""
    cdef Py_ssize_t W = g.W, t, t0, cnt
    cdef const floating* a
    cdef const floating* b
    cdef const floating* c
    cdef floating* ya
    cdef floating m, v
    cdef bint u
    cdef int ci
    cdef floating cf
    cdef int icode[CHUNK]
    cdef floating fcode[CHUNK]
    cdef int64_t offs[9]
    for t in range(9):
        offs[t] = (t // 3) * W + t % 3
    t0 = 0
    while t0 < n:
        cnt = py_min(<Py_ssize_t> CHUNK, n - t0)
        a = x0 + 2 * t0
        b = a + W
        c = b + W
        ya = yr + t0
        if ir == NULL or floating is float:     # the maximum alone
            for t in range(cnt):
                m = a[2 * t]
                v = a[2 * t + 1]
                m = v if v > m else m
                v = a[2 * t + 2]
                m = v if v > m else m
                v = b[2 * t]
                m = v if v > m else m
                v = b[2 * t + 1]
                m = v if v > m else m
                v = b[2 * t + 2]
                m = v if v > m else m
                v = c[2 * t]
                m = v if v > m else m
                v = c[2 * t + 1]
                m = v if v > m else m
                v = c[2 * t + 2]
                m = v if v > m else m
                ya[t] = m
            if floating is float and ir != NULL:
                # taps equal to the maximum; the lowest bit is the first
                for t in range(cnt):
                    m = ya[t]
                    icode[t] = ((<int> (a[2 * t] == m)) | ((<int> (a[2 * t + 1] == m)) << 1)
                                | ((<int> (a[2 * t + 2] == m)) << 2)
                                | ((<int> (b[2 * t] == m)) << 3)
                                | ((<int> (b[2 * t + 1] == m)) << 4)
                                | ((<int> (b[2 * t + 2] == m)) << 5)
                                | ((<int> (c[2 * t] == m)) << 6)
                                | ((<int> (c[2 * t + 1] == m)) << 7)
                                | ((<int> (c[2 * t + 2] == m)) << 8))
                for t in range(cnt):
                    ir[t0 + t] = base + 2 * (t0 + t) + offs[FIRST_BIT[icode[t]]]
        else:
            for t in range(cnt):
                m = a[2 * t]
                cf = 0
                v = a[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                cf = 1 if u else cf
                v = a[2 * t + 2]
                u = not (v <= m)
                m = v if u else m
                cf = 2 if u else cf
                v = b[2 * t]
                u = not (v <= m)
                m = v if u else m
                cf = 3 if u else cf
                v = b[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                cf = 4 if u else cf
                v = b[2 * t + 2]
                u = not (v <= m)
                m = v if u else m
                cf = 5 if u else cf
                v = c[2 * t]
                u = not (v <= m)
                m = v if u else m
                cf = 6 if u else cf
                v = c[2 * t + 1]
                u = not (v <= m)
                m = v if u else m
                cf = 7 if u else cf
                v = c[2 * t + 2]
                u = not (v <= m)
                m = v if u else m
                cf = 8 if u else cf
                ya[t] = m
                fcode[t] = cf
            for t in range(cnt):
                ir[t0 + t] = base + 2 * (t0 + t) + offs[<int> fcode[t]]
        t0 = t0 + cnt


cdef void max_row_generic(const floating* x0, Py_ssize_t n, int64_t base, Py_ssize_t n_rows,
                          const PoolGeom* g, floating* yr, int64_t* ir) noexcept nogil:
    """Any in-bounds windows (see max_row_exact), fast rule + NaN re-check per chunk."""
    cdef Py_ssize_t t, t0, cnt, i, j, off, sw = g.sw
    cdef const floating* tap
    cdef const floating* xa
    cdef floating* ya
    cdef floating v, cur
    cdef bint u
    cdef int ci
    cdef floating cf
    cdef int icode[CHUNK]
    cdef floating fcode[CHUNK]
    t0 = 0
    while t0 < n:
        cnt = py_min(<Py_ssize_t> CHUNK, n - t0)
        xa = x0 + t0 * sw
        ya = yr + t0
        for t in range(cnt):
            ya[t] = xa[t * sw]
            if floating is float:
                icode[t] = 0
            else:
                fcode[t] = 0
        for i in range(n_rows):
            for j in range(g.kw):
                if i == 0 and j == 0:
                    continue
                off = i * g.dh * g.W + j * g.dw
                tap = xa + off
                if ir == NULL:
                    for t in range(cnt):
                        v = tap[t * sw]
                        cur = ya[t]
                        ya[t] = v if v > cur else cur
                elif floating is float:
                    ci = <int> off
                    for t in range(cnt):
                        v = tap[t * sw]
                        cur = ya[t]
                        u = not (v <= cur)
                        ya[t] = v if u else cur
                        icode[t] = ci if u else icode[t]
                else:
                    cf = <floating> off
                    for t in range(cnt):
                        v = tap[t * sw]
                        cur = ya[t]
                        u = not (v <= cur)
                        ya[t] = v if u else cur
                        fcode[t] = cf if u else fcode[t]
        if ir != NULL:
            for t in range(cnt):
                if floating is float:
                    ir[t0 + t] = base + (t0 + t) * sw + icode[t]
                else:
                    ir[t0 + t] = base + (t0 + t) * sw + <int64_t> fcode[t]
        t0 = t0 + cnt


cdef void max_row_exact_chunks(const floating* x0, Py_ssize_t n, int64_t base,
                               Py_ssize_t n_rows, const PoolGeom* g, floating* yr,
                               int64_t* ir) noexcept nogil:
    cdef Py_ssize_t t0 = 0, cnt
    while t0 < n:
        cnt = py_min(<Py_ssize_t> CHUNK, n - t0)
        max_row_exact(x0 + t0 * g.sw, cnt, base + t0 * g.sw, n_rows, g, yr + t0,
                      ir + t0 if ir != NULL else NULL)
        t0 = t0 + cnt


cdef void max_pool_plane(const floating* xp, floating* yp, int64_t* ip,
                         const PoolGeom* g) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, i_lo, i_hi, n_int = g.ow_hi - g.ow_lo
    cdef Py_ssize_t w0 = g.ow_lo * g.sw - g.pw
    cdef int64_t base
    cdef bint unit = g.dh == 1 and g.dw == 1 and g.sh == 2 and g.sw == 2
    cdef bint k2s2 = unit and g.kh == 2 and g.kw == 2
    cdef bint k3s2 = unit and g.kh == 3 and g.kw == 3
    cdef bint rows_ok = ip == NULL or floating is double or fits_int32_codes(g)
    cdef floating* yr
    cdef int64_t* ir
    for oh in range(g.Ho):
        yr = yp + oh * g.Wo
        ir = ip + oh * g.Wo if ip != NULL else NULL
        h0 = oh * g.sh - g.ph
        tap_range(h0, g.dh, g.H, g.kh, &i_lo, &i_hi)
        if not rows_ok:
            for ow in range(g.Wo):
                max_one(xp, g, h0, i_lo, i_hi, ow, yr + ow, ir + ow if ir != NULL else NULL)
            continue
        for ow in range(g.ow_lo):
            max_one(xp, g, h0, i_lo, i_hi, ow, yr + ow, ir + ow if ir != NULL else NULL)
        if n_int > 0:
            base = (h0 + i_lo * g.dh) * g.W + w0
            if rows_have_nan(xp, g.W, h0 + i_lo * g.dh, i_hi - i_lo, g.dh):
                max_row_exact_chunks(xp + base, n_int, base, i_hi - i_lo, g, yr + g.ow_lo,
                                     ir + g.ow_lo if ir != NULL else NULL)
            elif i_lo == 0 and i_hi == g.kh and k2s2:
                max_row_k2s2(xp + base, n_int, base, g, yr + g.ow_lo,
                             ir + g.ow_lo if ir != NULL else NULL)
            elif i_lo == 0 and i_hi == g.kh and k3s2:
                max_row_k3s2(xp + base, n_int, base, g, yr + g.ow_lo,
                             ir + g.ow_lo if ir != NULL else NULL)
            else:
                max_row_generic(xp + base, n_int, base, i_hi - i_lo, g, yr + g.ow_lo,
                                ir + g.ow_lo if ir != NULL else NULL)
        for ow in range(g.ow_hi, g.Wo):
            max_one(xp, g, h0, i_lo, i_hi, ow, yr + ow, ir + ow if ir != NULL else NULL)


cdef inline bint is_window2x2(const PoolGeom* g) noexcept nogil:
    """2x2 windows, stride 2, no padding or dilation, all inside the input (no ceil_mode
    window hanging over the edge): the vector kernel of src/_pool2x2.h applies."""
    return (g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.ph == 0 and g.pw == 0
            and g.dh == 1 and g.dw == 1 and 2 * g.Ho <= g.H and 2 * g.Wo <= g.W)


cdef inline bint pool2x2_plane(const floating* xp, floating* yp, int64_t* ip,
                               const PoolGeom* g) noexcept nogil:
    """The vector kernel on one plane; False when the plane held a NaN (then nothing it
    wrote counts: the caller runs the exact scan)."""
    if floating is float:
        return cnn_p2_fwd_plane_float(xp, g.W, g.Ho, g.Wo, yp, ip) == 0
    else:
        return cnn_p2_fwd_plane_double(xp, g.W, g.Ho, g.Wo, yp, ip) == 0


cdef void relu_first_plane(const floating* xp, floating* yp, const PoolGeom* g) noexcept nogil:
    """The fused ReLU on a pooled plane, as ``max_pool2d(relu(x))`` computes it: a window
    whose maximum is not positive (and not NaN) holds only ReLU zeros, and the first of
    those wins the tie -- ``-0.0`` when its first in-bounds tap is ``-0.0`` (ReLU keeps it),
    else ``+0.0`` (``relu(max_pool2d(x))`` would give ``-0.0`` for a window like
    ``(-1, -0.0)``)."""
    cdef Py_ssize_t oh, ow, h0, w0, i_lo, i_hi, j_lo, j_hi
    cdef floating v
    for oh in range(g.Ho):
        h0 = oh * g.sh - g.ph
        tap_range(h0, g.dh, g.H, g.kh, &i_lo, &i_hi)
        for ow in range(g.Wo):
            v = yp[oh * g.Wo + ow]
            if v > 0 or v != v:
                continue
            w0 = ow * g.sw - g.pw
            tap_range(w0, g.dw, g.W, g.kw, &j_lo, &j_hi)
            v = xp[(h0 + i_lo * g.dh) * g.W + w0 + j_lo * g.dw]
            yp[oh * g.Wo + ow] = v if v == 0 else 0


cdef void max_pool_impl(const floating* x, floating* y, int64_t* idx, const PoolGeom* g,
                        int n_threads, bint relu) noexcept nogil:
    """Max pooling plane by plane; ``relu``: a ReLU fused, applied to each output plane
    while it is in cache (max pooling commutes with it, but for the sign of a zero: see
    relu_first_plane).  2x2 windows of stride 2 run the
    vector kernel of src/_pool2x2.h (planes holding a NaN: the exact scan)."""
    cdef Py_ssize_t p, HW = g.H * g.W, L = g.Ho * g.Wo
    cdef bint w2 = is_window2x2(g) and (idx == NULL or HW <= 2147483647)
    for p in prange(g.NC, schedule="static", num_threads=n_threads):
        if not (w2 and pool2x2_plane(x + p * HW, y + p * L, idx + p * L if idx != NULL else NULL,
                                     g)):
            max_pool_plane(x + p * HW, y + p * L, idx + p * L if idx != NULL else NULL, g)
        if relu:
            relu_first_plane(x + p * HW, y + p * L, g)


# ------------------------------------------------------------------------------------------
# Index scatter / gather (max-pool backward, max-unpool forward and backward)
# ------------------------------------------------------------------------------------------

cdef enum:
    # What index_impl does with each plane (``o`` runs over the ``L`` index positions).
    IDX_SCATTER_ADD = 0     # dst[:] = 0; dst[idx[o]] += src[o]   (max-pool backward)
    IDX_SCATTER_SET = 1     # dst[:] = 0; dst[idx[o]] = src[o]    (max-unpool forward)
    IDX_GATHER = 2          # dst[o] = src[idx[o]]                (max-unpool backward)
    IDX_SCATTER_ADD_MASKED = 3  # as SCATTER_ADD with src[o] taken as 0 where mask[o] <= 0


cdef int index_plane(int mode, const floating* sp, const int64_t* ip, Py_ssize_t L,
                     Py_ssize_t HW, floating* dp, const floating* mp) noexcept nogil:
    """One plane of :func:`index_impl`, in index order; every index is range-checked right
    before use.  The mode is tested once per plane: each mode has its own tight loop.
    ``mp``: the mask plane of IDX_SCATTER_ADD_MASKED (a fused ReLU's output: the source
    value is masked as relu_backward does, then added)."""
    cdef Py_ssize_t o
    cdef int64_t i
    cdef floating v
    if mode == IDX_GATHER:
        for o in range(L):
            i = ip[o]
            if not index_ok(i, HW):
                memset(dp + o, 0, (L - o) * sizeof(floating))
                return CNN_ERR_INDEX
            dp[o] = sp[i]
        return CNN_OK
    memset(dp, 0, HW * sizeof(floating))
    if mode == IDX_SCATTER_ADD:
        for o in range(L):
            i = ip[o]
            if not index_ok(i, HW):
                return CNN_ERR_INDEX
            dp[i] += sp[o]
    elif mode == IDX_SCATTER_ADD_MASKED:
        for o in range(L):
            i = ip[o]
            if not index_ok(i, HW):
                return CNN_ERR_INDEX
            v = sp[o]
            v = 0 if mp[o] <= 0 else v
            dp[i] += v
    else:                   # IDX_SCATTER_SET: the last write of a repeated index wins
        for o in range(L):
            i = ip[o]
            if not index_ok(i, HW):
                return CNN_ERR_INDEX
            dp[i] = sp[o]
    return CNN_OK


cdef inline bint scatter2x2_plane(const floating* sp, const int64_t* ip, const floating* mp,
                                  const Py_ssize_t* dims, floating* dp) noexcept nogil:
    """The scatter-add of one plane by the vector kernel of src/_pool2x2.h (``dims``: H, W,
    Ho, Wo); False when an index lies outside its 2x2 window (then nothing it wrote counts:
    the caller runs index_plane, which also reports an out-of-range index)."""
    if floating is float:
        return cnn_p2_bwd_plane_float(sp, ip, mp, dims[0], dims[1], dims[2], dims[3], dp) == 0
    else:
        return cnn_p2_bwd_plane_double(sp, ip, mp, dims[0], dims[1], dims[2], dims[3], dp) == 0


cdef int index_impl(int mode, const floating* src, const int64_t* idx, Py_ssize_t NC,
                    Py_ssize_t L, Py_ssize_t HW, floating* dst, int n_threads,
                    const floating* mask, const Py_ssize_t* dims) noexcept nogil:
    """:func:`index_plane` on every plane; ``idx`` planes have ``L`` elements, the indexed
    side's planes (``dst`` when scattering, ``src`` when gathering) ``HW``; ``mask`` (planes
    of ``L``) for IDX_SCATTER_ADD_MASKED, else NULL.  ``dims`` (H, W, Ho, Wo with
    ``Ho == H // 2``, ``Wo == W // 2``; or NULL): a scatter-add tries each plane as 2x2
    windows of stride 2 first -- the same sums when every index lies in its window (each
    input position then receives at most one value), which max pooling's indices do."""
    cdef Py_ssize_t p
    cdef Py_ssize_t src_plane = HW if mode == IDX_GATHER else L
    cdef Py_ssize_t dst_plane = L if mode == IDX_GATHER else HW
    cdef int st
    cdef int status = CNN_OK
    cdef int* status_p = &status
    cdef bint w2 = dims != NULL and (mode == IDX_SCATTER_ADD or mode == IDX_SCATTER_ADD_MASKED)
    for p in prange(NC, schedule="static", num_threads=n_threads):
        if w2 and scatter2x2_plane(src + p * src_plane, idx + p * L,
                                   mask + p * L if mask != NULL else NULL, dims,
                                   dst + p * dst_plane):
            continue
        st = index_plane(mode, src + p * src_plane, idx + p * L, L, HW, dst + p * dst_plane,
                         mask + p * L if mask != NULL else NULL)
        if st != CNN_OK:
            status_p[0] = st
    return status


# ------------------------------------------------------------------------------------------
# Average pooling
#
# For output row ``oh`` the window's rows are ``[hs, he)`` clipped to the padded input, of
# which ``[h0, h1)`` are real rows.  Every output of the row whose columns are all inside
# the input (the interior columns) then shares one divisor, so those run through the same
# row kernels as interior rows, with ``h1 - h0`` window rows.
# ------------------------------------------------------------------------------------------

cdef inline Py_ssize_t avg_divisor(Py_ssize_t pool, Py_ssize_t inside, bint count_include_pad,
                                   Py_ssize_t divisor) noexcept nogil:
    """PyTorch's divisor: the override, else the window clipped to the padded input
    (``pool``) with ``count_include_pad``, else the in-bounds count (``inside``)."""
    if divisor != 0:
        return divisor
    return pool if count_include_pad else inside


cdef inline void avg_cols(const PoolGeom* g, Py_ssize_t ow, Py_ssize_t* pool_w,
                          Py_ssize_t* w0, Py_ssize_t* w1) noexcept nogil:
    cdef Py_ssize_t ws = ow * g.sw - g.pw
    cdef Py_ssize_t we = py_min(ws + g.kw, g.W + g.pw)
    pool_w[0] = we - ws
    w0[0] = py_max(ws, 0)
    w1[0] = py_min(we, g.W)


cdef inline floating window_sum(const floating* xp, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1,
                                Py_ssize_t w0, Py_ssize_t w1) noexcept nogil:
    """Sum of the in-bounds window rows ``[h0, h1)`` x columns ``[w0, w1)``, row-major."""
    cdef Py_ssize_t i, j
    cdef floating s = 0
    for i in range(h0, h1):
        for j in range(w0, w1):
            s = s + xp[i * W + j]
    return s


cdef inline void avg_one(const floating* xp, const PoolGeom* g, Py_ssize_t h0, Py_ssize_t h1,
                         Py_ssize_t pool_h, Py_ssize_t ow, bint count_include_pad,
                         Py_ssize_t divisor, floating* yv) noexcept nogil:
    cdef Py_ssize_t pool_w, w0, w1, div
    avg_cols(g, ow, &pool_w, &w0, &w1)
    div = avg_divisor(pool_h * pool_w, (h1 - h0) * (w1 - w0), count_include_pad, divisor)
    if h0 >= h1 or w0 >= w1:
        yv[0] = 0
        return
    yv[0] = window_sum(xp, g.W, h0, h1, w0, w1) / <floating> div


cdef void avg_row_k2s2(const floating* x0, Py_ssize_t W, Py_ssize_t n, floating div,
                       floating* yr) noexcept nogil:
    cdef const floating* x1 = x0 + W
    cdef Py_ssize_t t
    for t in range(n):
        yr[t] = (((x0[2 * t] + x0[2 * t + 1]) + x1[2 * t]) + x1[2 * t + 1]) / div


cdef void avg_row_k3s2(const floating* x0, Py_ssize_t W, Py_ssize_t n, floating div,
                       floating* yr) noexcept nogil:
    cdef const floating* x1 = x0 + W
    cdef const floating* x2 = x0 + 2 * W
    cdef Py_ssize_t t, c
    cdef floating s
    for t in range(n):
        c = 2 * t
        s = x0[c] + x0[c + 1]
        s = s + x0[c + 2]
        s = s + x1[c]
        s = s + x1[c + 1]
        s = s + x1[c + 2]
        s = s + x2[c]
        s = s + x2[c + 1]
        s = s + x2[c + 2]
        yr[t] = s / div


cdef void avg_row_generic(const floating* x0, Py_ssize_t n, Py_ssize_t n_rows,
                          const PoolGeom* g, floating div, floating* yr) noexcept nogil:
    """Tap-major sums over ``n_rows`` window rows (each output still adds its taps in
    row-major order)."""
    cdef Py_ssize_t t, i, j, sw = g.sw
    cdef const floating* tap
    for t in range(n):
        yr[t] = x0[t * sw]
    for i in range(n_rows):
        for j in range(g.kw):
            if i == 0 and j == 0:
                continue
            tap = x0 + i * g.W + j
            for t in range(n):
                yr[t] = yr[t] + tap[t * sw]
    for t in range(n):
        yr[t] = yr[t] / div


cdef inline void avg_rows(const PoolGeom* g, Py_ssize_t oh, Py_ssize_t* hs, Py_ssize_t* pool_h,
                          Py_ssize_t* h0, Py_ssize_t* h1) noexcept nogil:
    cdef Py_ssize_t he
    hs[0] = oh * g.sh - g.ph
    he = py_min(hs[0] + g.kh, g.H + g.ph)
    pool_h[0] = he - hs[0]
    h0[0] = py_max(hs[0], 0)
    h1[0] = py_min(he, g.H)


cdef inline Py_ssize_t avg_window(const PoolGeom* g, Py_ssize_t oh, Py_ssize_t ow,
                                  bint count_include_pad, Py_ssize_t divisor,
                                  Py_ssize_t* h0, Py_ssize_t* h1, Py_ssize_t* w0,
                                  Py_ssize_t* w1) noexcept nogil:
    """In-bounds rows ``[h0, h1)`` / columns ``[w0, w1)`` of window ``(oh, ow)`` and its
    divisor."""
    cdef Py_ssize_t hs, pool_h, pool_w
    avg_rows(g, oh, &hs, &pool_h, h0, h1)
    avg_cols(g, ow, &pool_w, w0, w1)
    return avg_divisor(pool_h * pool_w, (h1[0] - h0[0]) * (w1[0] - w0[0]), count_include_pad,
                       divisor)


cdef void avg_pool_plane(const floating* xp, floating* yp, const PoolGeom* g,
                         bint count_include_pad, Py_ssize_t divisor) noexcept nogil:
    cdef Py_ssize_t oh, ow, hs, h0, h1, pool_h, n_int = g.ow_hi - g.ow_lo
    cdef Py_ssize_t w0 = g.ow_lo * g.sw - g.pw
    cdef bint full
    cdef bint k2s2 = g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2
    cdef bint k3s2 = g.kh == 3 and g.kw == 3 and g.sh == 2 and g.sw == 2
    cdef floating div
    cdef floating* yr
    cdef const floating* x0
    for oh in range(g.Ho):
        yr = yp + oh * g.Wo
        avg_rows(g, oh, &hs, &pool_h, &h0, &h1)
        for ow in range(g.ow_lo):
            avg_one(xp, g, h0, h1, pool_h, ow, count_include_pad, divisor, yr + ow)
        if n_int > 0 and h1 > h0:
            div = <floating> avg_divisor(pool_h * g.kw, (h1 - h0) * g.kw, count_include_pad,
                                         divisor)
            full = h0 == hs and h1 == hs + g.kh
            x0 = xp + h0 * g.W + w0
            if full and k2s2:
                avg_row_k2s2(x0, g.W, n_int, div, yr + g.ow_lo)
            elif full and k3s2:
                avg_row_k3s2(x0, g.W, n_int, div, yr + g.ow_lo)
            else:
                avg_row_generic(x0, n_int, h1 - h0, g, div, yr + g.ow_lo)
        else:
            for ow in range(g.ow_lo, g.ow_hi):
                avg_one(xp, g, h0, h1, pool_h, ow, count_include_pad, divisor, yr + ow)
        for ow in range(g.ow_hi, g.Wo):
            avg_one(xp, g, h0, h1, pool_h, ow, count_include_pad, divisor, yr + ow)


cdef void avg_pool_impl(const floating* x, floating* y, const PoolGeom* g,
                        bint count_include_pad, Py_ssize_t divisor,
                        int n_threads) noexcept nogil:
    cdef Py_ssize_t p, HW = g.H * g.W, L = g.Ho * g.Wo
    for p in prange(g.NC, schedule="static", num_threads=n_threads):
        avg_pool_plane(x + p * HW, y + p * L, g, count_include_pad, divisor)


cdef inline void avg_scatter_one(floating* dp, Py_ssize_t W, Py_ssize_t h0, Py_ssize_t h1,
                                 Py_ssize_t w0, Py_ssize_t w1, floating delta) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(h0, h1):
        for j in range(w0, w1):
            dp[i * W + j] += delta


cdef inline void avg_scatter_cols(const floating* gr, floating* dp, const PoolGeom* g,
                                  Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t pool_h,
                                  Py_ssize_t ow_a, Py_ssize_t ow_b, bint count_include_pad,
                                  Py_ssize_t divisor) noexcept nogil:
    """Backward of the (border) outputs ``[ow_a, ow_b)`` of one output row, one at a time
    with bounds checks (window rows ``[h0, h1)`` precomputed)."""
    cdef Py_ssize_t ow, pool_w, w0, w1, div
    for ow in range(ow_a, ow_b):
        avg_cols(g, ow, &pool_w, &w0, &w1)
        div = avg_divisor(pool_h * pool_w, (h1 - h0) * (w1 - w0), count_include_pad, divisor)
        avg_scatter_one(dp, g.W, h0, h1, w0, w1, gr[ow] / <floating> div)


cdef void avg_backward_row_generic(const floating* gr, Py_ssize_t n, floating div,
                                   floating* d0, Py_ssize_t n_rows,
                                   const PoolGeom* g) noexcept nogil:
    """Scatter ``gr[t] / div`` over the in-bounds windows ``d0 + i*W + t*sw + j`` (``i <
    n_rows``, ``j < kw``) as tap-major sweeps.  Visiting the taps of a row right to left
    makes every element receive its contributions in increasing output order -- the
    order of a per-output loop (and PyTorch's) -- while the inner loop runs over outputs."""
    cdef Py_ssize_t t, t0, cnt, i, j, sw = g.sw
    cdef floating* dd
    cdef floating gd[CHUNK]
    t0 = 0
    while t0 < n:
        cnt = py_min(<Py_ssize_t> CHUNK, n - t0)
        for t in range(cnt):
            gd[t] = gr[t0 + t] / div
        for i in range(n_rows):
            for j in range(g.kw - 1, -1, -1):
                dd = d0 + i * g.W + t0 * sw + j
                if sw == 1:
                    for t in range(cnt):
                        dd[t] += gd[t]
                else:
                    for t in range(cnt):
                        dd[t * sw] += gd[t]
        t0 = t0 + cnt


cdef void avg_pool_backward_plane(const floating* gp, floating* dp, const PoolGeom* g,
                                  bint count_include_pad, Py_ssize_t divisor) noexcept nogil:
    """``dp[window] += gp[o] / divisor`` for every output ``o`` in row-major order."""
    cdef Py_ssize_t oh, hs, h0, h1, pool_h, c, W = g.W
    cdef floating delta, fdiv
    cdef floating* d0
    cdef floating* d1
    cdef floating* d2
    cdef const floating* gr
    cdef bint full
    cdef bint k2s2 = g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2
    cdef bint k3s2 = g.kh == 3 and g.kw == 3 and g.sh == 2 and g.sw == 2
    memset(dp, 0, g.H * W * sizeof(floating))
    for oh in range(g.Ho):
        gr = gp + oh * g.Wo
        avg_rows(g, oh, &hs, &pool_h, &h0, &h1)
        avg_scatter_cols(gr, dp, g, h0, h1, pool_h, 0, g.ow_lo, count_include_pad, divisor)
        if g.ow_hi > g.ow_lo:
            fdiv = <floating> avg_divisor(pool_h * g.kw, (h1 - h0) * g.kw, count_include_pad,
                                          divisor)
            full = h0 == hs and h1 == hs + g.kh
            d0 = dp + h0 * W + g.ow_lo * g.sw - g.pw
            d1 = d0 + W
            d2 = d1 + W
            if full and k2s2:
                for c in range(g.ow_hi - g.ow_lo):
                    delta = gr[g.ow_lo + c] / fdiv
                    d0[2 * c] += delta
                    d0[2 * c + 1] += delta
                    d1[2 * c] += delta
                    d1[2 * c + 1] += delta
            elif full and k3s2:
                for c in range(g.ow_hi - g.ow_lo):
                    delta = gr[g.ow_lo + c] / fdiv
                    d0[2 * c] += delta
                    d0[2 * c + 1] += delta
                    d0[2 * c + 2] += delta
                    d1[2 * c] += delta
                    d1[2 * c + 1] += delta
                    d1[2 * c + 2] += delta
                    d2[2 * c] += delta
                    d2[2 * c + 1] += delta
                    d2[2 * c + 2] += delta
            else:
                avg_backward_row_generic(gr + g.ow_lo, g.ow_hi - g.ow_lo, fdiv,
                                         dp + h0 * W + g.ow_lo * g.sw - g.pw, h1 - h0, g)
        avg_scatter_cols(gr, dp, g, h0, h1, pool_h, g.ow_hi, g.Wo, count_include_pad, divisor)


cdef void avg_pool_backward_impl(const floating* go, floating* dx, const PoolGeom* g,
                                 bint count_include_pad, Py_ssize_t divisor,
                                 int n_threads) noexcept nogil:
    cdef Py_ssize_t p, HW = g.H * g.W, L = g.Ho * g.Wo
    for p in prange(g.NC, schedule="static", num_threads=n_threads):
        avg_pool_backward_plane(go + p * L, dx + p * HW, g, count_include_pad, divisor)

# ------------------------------------------------------------------------------------------
# Adaptive pooling: window [floor(o*H/Ho), ceil((o+1)*H/Ho)) per axis
# ------------------------------------------------------------------------------------------

cdef inline Py_ssize_t adapt_start(Py_ssize_t o, Py_ssize_t size, Py_ssize_t n_out) noexcept nogil:
    return (o * size) // n_out


cdef inline Py_ssize_t adapt_end(Py_ssize_t o, Py_ssize_t size, Py_ssize_t n_out) noexcept nogil:
    return ((o + 1) * size + n_out - 1) // n_out


cdef enum:
    # What adaptive_impl computes (src -> dst).
    ADAPT_AVG = 0           # x -> y
    ADAPT_AVG_BACKWARD = 1  # grad_output -> dx
    ADAPT_MAX = 2           # x -> y (and the argmax flat indices unless idx is NULL)


cdef inline Py_ssize_t window_max(const floating* xp, Py_ssize_t W, Py_ssize_t h0,
                                  Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1,
                                  floating* m_out) noexcept nogil:
    """Maximum of the in-bounds window rows ``[h0, h1)`` x columns ``[w0, w1)`` (stored in
    ``m_out[0]``) and its flat position: PyTorch's scan."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t best = h0 * W + w0
    cdef floating m = -INFINITY
    cdef floating v
    for i in range(h0, h1):
        for j in range(w0, w1):
            v = xp[i * W + j]
            if (v > m) | (v != v):
                m = v
                best = i * W + j
    m_out[0] = m
    return best


cdef void adaptive_impl(int mode, const floating* src, floating* dst, int64_t* idx,
                        Py_ssize_t NC, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                        int n_threads) noexcept nogil:
    """Adaptive pooling (``mode``) of every plane; input planes are ``H x W``, output planes
    ``Ho x Wo``.  The mode is tested once per window, outside the loops over its taps."""
    cdef Py_ssize_t p, oh, ow, h0, h1, w0, w1, best, o
    cdef Py_ssize_t HW = H * W, L = Ho * Wo
    for p in prange(NC, schedule="static", num_threads=n_threads):
        if mode == ADAPT_AVG_BACKWARD:
            memset(dst + p * HW, 0, HW * sizeof(floating))
        for oh in range(Ho):
            h0 = adapt_start(oh, H, Ho)
            h1 = adapt_end(oh, H, Ho)
            for ow in range(Wo):
                w0 = adapt_start(ow, W, Wo)
                w1 = adapt_end(ow, W, Wo)
                o = p * L + oh * Wo + ow
                if mode == ADAPT_AVG:
                    dst[o] = (window_sum(src + p * HW, W, h0, h1, w0, w1)
                              / <floating> (h1 - h0) / <floating> (w1 - w0))
                elif mode == ADAPT_AVG_BACKWARD:
                    avg_scatter_one(dst + p * HW, W, h0, h1, w0, w1,
                                    src[o] / <floating> (h1 - h0) / <floating> (w1 - w0))
                else:
                    best = window_max(src + p * HW, W, h0, h1, w0, w1, dst + o)
                    if idx != NULL:
                        idx[o] = best


# ------------------------------------------------------------------------------------------
# Global average pooling
# ------------------------------------------------------------------------------------------

cdef void global_avg_impl(const floating* x, floating* y, Py_ssize_t NC, Py_ssize_t L,
                          int n_threads) noexcept nogil:
    """Plane means (:func:`fixed_sum`: a fixed summation order)."""
    cdef Py_ssize_t p
    for p in prange(NC, schedule="static", num_threads=n_threads):
        y[p] = fixed_sum(x + p * L, L) / <floating> L


cdef void global_avg_backward_impl(const floating* go, floating* dx, Py_ssize_t NC,
                                   Py_ssize_t L, int n_threads) noexcept nogil:
    cdef Py_ssize_t p, t
    cdef floating delta
    cdef floating* dp
    for p in prange(NC, schedule="static", num_threads=n_threads):
        delta = go[p] / <floating> L
        dp = dx + p * L
        for t in range(L):
            dp[t] = delta


# ------------------------------------------------------------------------------------------
# Power-average (Lp) pooling, PyTorch's formula:
#   y = (K * avg_pool2d(x ** p)) ** (1 / p),  K = kh * kw, no padding, no dilation
# where avg_pool2d divides by the in-bounds window size (which differs from K only for the
# partial windows of ceil_mode).
# ------------------------------------------------------------------------------------------

cdef inline double lp_pow(double v, double p) noexcept nogil:
    if p == 2.0:
        return v * v
    if p == 1.0:
        return v
    return pow(v, p)


cdef inline double lp_root(double t, double p) noexcept nogil:
    if p == 2.0:
        return sqrt(t)
    if p == 1.0:
        return t
    return pow(t, 1.0 / p)


cdef inline floating lp_window(const floating* xp, const PoolGeom* g, Py_ssize_t oh,
                               Py_ssize_t ow, double p, Py_ssize_t* h0, Py_ssize_t* h1,
                               Py_ssize_t* w0, Py_ssize_t* w1, Py_ssize_t* div) noexcept nogil:
    """``t = K * avg(x ** p)`` over window ``(oh, ow)``, whose in-bounds rows / columns and
    divisor are stored too."""
    cdef Py_ssize_t i, j
    cdef floating s = 0
    div[0] = avg_window(g, oh, ow, True, 0, h0, h1, w0, w1)
    for i in range(h0[0], h1[0]):
        for j in range(w0[0], w1[0]):
            s = s + <floating> lp_pow(xp[i * g.W + j], p)
    return (s / <floating> div[0]) * <floating> (g.kh * g.kw)


cdef void lp_pool_plane(const floating* xp, floating* yp, const PoolGeom* g,
                        double p) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, div
    for oh in range(g.Ho):
        for ow in range(g.Wo):
            yp[oh * g.Wo + ow] = <floating> lp_root(
                lp_window(xp, g, oh, ow, p, &h0, &h1, &w0, &w1, &div), p)


cdef void lp_pool_impl(const floating* x, floating* y, const PoolGeom* g, double p,
                       int n_threads) noexcept nogil:
    cdef Py_ssize_t q, HW = g.H * g.W, L = g.Ho * g.Wo
    for q in prange(g.NC, schedule="static", num_threads=n_threads):
        lp_pool_plane(x + q * HW, y + q * L, g, p)


cdef void lp_pool_backward_plane(const floating* gp, const floating* xp, floating* dp,
                                 const PoolGeom* g, double p) noexcept nogil:
    """Chain rule in PyTorch's order: per output ``w = g * (1/p) * t**(1/p - 1) * K / div``
    (0 where ``t == 0``, as PyTorch's relu gate gives), accumulated into ``dp`` over each
    window; then ``dp *= p * x**(p - 1)`` elementwise."""
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, div, e
    cdef floating t, w
    cdef floating K = <floating> (g.kh * g.kw)
    memset(dp, 0, g.H * g.W * sizeof(floating))
    for oh in range(g.Ho):
        for ow in range(g.Wo):
            t = lp_window(xp, g, oh, ow, p, &h0, &h1, &w0, &w1, &div)
            if not (t != 0):   # t == 0 or NaN: PyTorch's relu(abs(.)) gate blocks it
                continue
            if p == 2.0:
                w = gp[oh * g.Wo + ow] * <floating> 0.5 / <floating> sqrt(t)
            elif p == 1.0:
                w = gp[oh * g.Wo + ow]
            else:
                w = gp[oh * g.Wo + ow] * <floating> ((1.0 / p) * pow(t, 1.0 / p - 1.0))
            avg_scatter_one(dp, g.W, h0, h1, w0, w1, w * K / <floating> div)
    for e in range(g.H * g.W):
        if p == 2.0:
            dp[e] = dp[e] * (2 * xp[e])
        elif p != 1.0:
            dp[e] = dp[e] * <floating> (p * pow(xp[e], p - 1.0))


cdef void lp_pool_backward_impl(const floating* go, const floating* x, floating* dx,
                                const PoolGeom* g, double p, int n_threads) noexcept nogil:
    cdef Py_ssize_t q, HW = g.H * g.W, L = g.Ho * g.Wo
    for q in prange(g.NC, schedule="static", num_threads=n_threads):
        lp_pool_backward_plane(go + q * L, x + q * HW, dx + q * HW, g, p)


# ------------------------------------------------------------------------------------------
# Thin def wrappers (shapes are validated by cnncore.functional before they get here)
# ------------------------------------------------------------------------------------------


cdef inline PoolGeom geom_of(Py_ssize_t[8] in_shape, Py_ssize_t[8] out_shape, Py_ssize_t kh,
                             Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                             Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept:
    return make_geom(in_shape[0] * in_shape[1], in_shape[2], in_shape[3], out_shape[2],
                     out_shape[3], kh, kw, sh, sw, ph, pw, dh, dw)


cdef bint grad_is_trivial(floating[:, :, :, ::1] dx_out, Py_ssize_t Ho, Py_ssize_t Wo):
    """Whether a backward wrapper has nothing left to do: ``dx_out`` is empty, or there are
    no outputs (``Ho * Wo == 0``), in which case ``dx_out`` is zero-filled here."""
    cdef Py_ssize_t n = dx_out.shape[0] * dx_out.shape[1] * dx_out.shape[2] * dx_out.shape[3]
    if n == 0:
        return True
    if Ho == 0 or Wo == 0:
        with nogil:
            memset(&dx_out[0, 0, 0, 0], 0, n * sizeof(floating))
        return True
    return False


cdef void pool2x2_max_plane_impl(const floating* x, Py_ssize_t H, Py_ssize_t W,
                                 Py_ssize_t Ho, Py_ssize_t Wo, floating* y,
                                 int64_t* idx) noexcept nogil:
    """One plane of ``max_pool2d(x, 2, return_indices=True)`` (no padding, ``Ho <= H // 2``,
    ``Wo <= W // 2``): the vector kernel, the exact scan where the plane held a NaN."""
    cdef PoolGeom g = make_geom(1, H, W, Ho, Wo, 2, 2, 2, 2, 0, 0, 1, 1)
    if not pool2x2_plane(x, y, idx, &g):
        max_pool_plane(x, y, idx, &g)


cdef void pool2x2_max_plane_float(const float* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                                 Py_ssize_t Wo, float* y, int64_t* idx) noexcept nogil:
    pool2x2_max_plane_impl(x, H, W, Ho, Wo, y, idx)


cdef void pool2x2_max_plane_double(const double* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho,
                                  Py_ssize_t Wo, double* y, int64_t* idx) noexcept nogil:
    pool2x2_max_plane_impl(x, H, W, Ho, Wo, y, idx)


cdef int pool2x2_scatter_masked_impl(const floating* g, const int64_t* idx,
                                     const floating* mask, Py_ssize_t H, Py_ssize_t W,
                                     Py_ssize_t Ho, Py_ssize_t Wo,
                                     floating* dx) noexcept nogil:
    """One plane of the ReLU-masked max-pool backward (IDX_SCATTER_ADD_MASKED) into ``dx``
    (H x W, zeroed here): the vector kernel, :func:`index_plane` where an index lies outside
    its 2x2 window."""
    cdef Py_ssize_t dims[4]
    dims[0] = H
    dims[1] = W
    dims[2] = Ho
    dims[3] = Wo
    if scatter2x2_plane(g, idx, mask, dims, dx):
        return CNN_OK
    return index_plane(IDX_SCATTER_ADD_MASKED, g, idx, Ho * Wo, H * W, dx, mask)


cdef int pool2x2_scatter_masked_plane_float(const float* g, const int64_t* idx,
                                            const float* mask, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t Ho, Py_ssize_t Wo,
                                            float* dx) noexcept nogil:
    return pool2x2_scatter_masked_impl(g, idx, mask, H, W, Ho, Wo, dx)


cdef int pool2x2_scatter_masked_plane_double(const double* g, const int64_t* idx,
                                             const double* mask, Py_ssize_t H, Py_ssize_t W,
                                             Py_ssize_t Ho, Py_ssize_t Wo,
                                             double* dx) noexcept nogil:
    return pool2x2_scatter_masked_impl(g, idx, mask, H, W, Ho, Wo, dx)


def _set_simd_level(level):
    """Run the 2x2 max-pooling clones of SIMD ``level`` (0 baseline, 1 AVX2+FMA, 2 AVX-512)
    from now on, capped to what was compiled and to what this CPU runs; returns the level
    set.  Called by ``_config.load_kernels`` (which honours ``CNNCORE_SIMD``); all levels
    give the same bits."""
    return cnn_p2_set_level(level)


def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                       int64_t[:, :, :, ::1] indices_out, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw, int n_threads, bint relu=False):
    """Write ``max_pool2d(x)`` into ``y_out`` and, unless ``indices_out`` is None, the argmax
    flat indices into ``indices_out`` (same pass); ``relu``: a ReLU fused, ``y_out`` then
    bit-identical to ``max_pool2d(relu(x))`` (the indices stay those of ``max_pool2d(x)``;
    they differ only for outputs the ReLU zeroes, whose gradient is zero)."""
    cdef PoolGeom g = geom_of(x.shape, y_out.shape, kh, kw, sh, sw, ph, pw, dh, dw)
    cdef int64_t* iptr = NULL
    if g.NC == 0 or g.Ho == 0 or g.Wo == 0:
        return
    if indices_out is not None:
        iptr = &indices_out[0, 0, 0, 0]
    with nogil:
        max_pool_impl(&x[0, 0, 0, 0], &y_out[0, 0, 0, 0], iptr, &g, n_threads, relu)


cdef index_op(int mode, const floating[:, :, :, ::1] src,
              const int64_t[:, :, :, ::1] indices, floating[:, :, :, ::1] dst_out,
              int n_threads, str func, const floating[:, :, :, ::1] mask=None):
    """Shared body of the index_* wrappers: ``indices`` has the shape of the non-indexed
    side (``src`` when scattering, ``dst_out`` when gathering)."""
    cdef bint gather = mode == IDX_GATHER
    cdef Py_ssize_t NC = dst_out.shape[0] * dst_out.shape[1]
    cdef Py_ssize_t L = (dst_out.shape[2] * dst_out.shape[3] if gather
                         else src.shape[2] * src.shape[3])
    cdef Py_ssize_t HW = (src.shape[2] * src.shape[3] if gather
                          else dst_out.shape[2] * dst_out.shape[3])
    cdef int status
    cdef Py_ssize_t dims[4]
    cdef bint w2 = False
    if NC == 0 or (HW == 0 and L == 0):
        return
    if not gather:
        dims[0] = dst_out.shape[2]; dims[1] = dst_out.shape[3]
        dims[2] = src.shape[2]; dims[3] = src.shape[3]
        w2 = dims[2] == dims[0] // 2 and dims[3] == dims[1] // 2 and L > 0
    if HW == 0:
        check_status(CNN_ERR_INDEX, func)
    if L == 0:             # nothing to scatter: zero planes (gathering: nothing to write)
        if not gather:
            with nogil:
                memset(&dst_out[0, 0, 0, 0], 0, NC * HW * sizeof(floating))
        return
    with nogil:
        status = index_impl(mode, &src[0, 0, 0, 0], &indices[0, 0, 0, 0], NC, L, HW,
                            &dst_out[0, 0, 0, 0], n_threads,
                            &mask[0, 0, 0, 0] if mask is not None else NULL,
                            dims if w2 else NULL)
    check_status(status, func)


def index_scatter_add(const floating[:, :, :, ::1] src, const int64_t[:, :, :, ::1] indices,
                      floating[:, :, :, ::1] dst_out, int n_threads, str func,
                      const floating[:, :, :, ::1] relu_output=None):
    """Per plane: zero ``dst_out``, then ``dst_out.flat[indices[o]] += src.flat[o]`` in order
    (max-pool backward).  ValueError naming ``indices`` on an out-of-range index.
    ``relu_output`` (``src``'s shape): the output of a forward with a ReLU fused; ``src[o]``
    is first masked as relu_backward does (0 where ``relu_output[o] <= 0``)."""
    if relu_output is None:
        index_op(IDX_SCATTER_ADD, src, indices, dst_out, n_threads, func)
    else:
        index_op(IDX_SCATTER_ADD_MASKED, src, indices, dst_out, n_threads, func, relu_output)


def index_scatter_set(const floating[:, :, :, ::1] src, const int64_t[:, :, :, ::1] indices,
                      floating[:, :, :, ::1] dst_out, int n_threads, str func):
    """Per plane: zero ``dst_out``, then ``dst_out.flat[indices[o]] = src.flat[o]`` in order
    (max-unpool forward; the last of repeated indices wins).  ValueError on a bad index."""
    index_op(IDX_SCATTER_SET, src, indices, dst_out, n_threads, func)


def index_gather(const floating[:, :, :, ::1] src, const int64_t[:, :, :, ::1] indices,
                 floating[:, :, :, ::1] dst_out, int n_threads, str func):
    """Per plane: ``dst_out.flat[o] = src.flat[indices[o]]`` (max-unpool backward).
    ValueError on an out-of-range index."""
    index_op(IDX_GATHER, src, indices, dst_out, n_threads, func)


def avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                       Py_ssize_t divisor, int n_threads):
    """Write ``avg_pool2d(x)`` into ``y_out``; ``divisor`` 0 means no override."""
    cdef PoolGeom g = geom_of(x.shape, y_out.shape, kh, kw, sh, sw, ph, pw, 1, 1)
    if g.NC == 0 or g.Ho == 0 or g.Wo == 0:
        return
    with nogil:
        avg_pool_impl(&x[0, 0, 0, 0], &y_out[0, 0, 0, 0], &g, count_include_pad, divisor,
                      n_threads)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                        floating[:, :, :, ::1] dx_out, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        bint count_include_pad, Py_ssize_t divisor, int n_threads):
    """Write the gradient of avg_pool2d w.r.t. its input into ``dx_out``."""
    cdef PoolGeom g = geom_of(dx_out.shape, grad_output.shape, kh, kw, sh, sw, ph, pw, 1, 1)
    if grad_is_trivial(dx_out, g.Ho, g.Wo):
        return
    with nogil:
        avg_pool_backward_impl(&grad_output[0, 0, 0, 0], &dx_out[0, 0, 0, 0], &g,
                               count_include_pad, divisor, n_threads)


def adaptive_avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                                int n_threads):
    """Write ``adaptive_avg_pool2d(x)`` into ``y_out`` (its shape gives the output size)."""
    cdef Py_ssize_t NC = x.shape[0] * x.shape[1]
    if NC == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return
    with nogil:
        adaptive_impl(ADAPT_AVG, &x[0, 0, 0, 0], &y_out[0, 0, 0, 0], NULL, NC, x.shape[2],
                      x.shape[3], y_out.shape[2], y_out.shape[3], n_threads)


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                                 floating[:, :, :, ::1] dx_out, int n_threads):
    """Write the gradient of adaptive_avg_pool2d w.r.t. its input into ``dx_out``."""
    cdef Py_ssize_t NC = dx_out.shape[0] * dx_out.shape[1]
    cdef Py_ssize_t H = dx_out.shape[2], W = dx_out.shape[3]
    if grad_is_trivial(dx_out, grad_output.shape[2], grad_output.shape[3]):
        return
    with nogil:
        adaptive_impl(ADAPT_AVG_BACKWARD, &grad_output[0, 0, 0, 0], &dx_out[0, 0, 0, 0], NULL,
                      NC, H, W, grad_output.shape[2], grad_output.shape[3], n_threads)


def adaptive_max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                                int64_t[:, :, :, ::1] indices_out, int n_threads):
    """Write ``adaptive_max_pool2d(x)`` into ``y_out`` and, unless None, the argmax flat
    indices into ``indices_out``."""
    cdef Py_ssize_t NC = x.shape[0] * x.shape[1]
    cdef int64_t* iptr = NULL
    if NC == 0 or y_out.shape[2] == 0 or y_out.shape[3] == 0:
        return
    if indices_out is not None:
        iptr = &indices_out[0, 0, 0, 0]
    with nogil:
        adaptive_impl(ADAPT_MAX, &x[0, 0, 0, 0], &y_out[0, 0, 0, 0], iptr, NC, x.shape[2],
                      x.shape[3], y_out.shape[2], y_out.shape[3], n_threads)


def global_avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                              int n_threads):
    """Write the per-plane means of ``x`` into ``y_out`` of shape (N, C, 1, 1)."""
    cdef Py_ssize_t NC = x.shape[0] * x.shape[1], L = x.shape[2] * x.shape[3]
    if NC == 0:
        return
    with nogil:
        global_avg_impl(&x[0, 0, 0, 0], &y_out[0, 0, 0, 0], NC, L, n_threads)


def global_avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                               floating[:, :, :, ::1] dx_out, int n_threads):
    """Fill every input plane with ``grad_output / (H*W)``."""
    cdef Py_ssize_t NC = dx_out.shape[0] * dx_out.shape[1]
    cdef Py_ssize_t L = dx_out.shape[2] * dx_out.shape[3]
    if NC == 0 or L == 0:
        return
    with nogil:
        global_avg_backward_impl(&grad_output[0, 0, 0, 0], &dx_out[0, 0, 0, 0], NC, L,
                                 n_threads)


def lp_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y_out,
                      double norm_type, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                      Py_ssize_t sw, int n_threads):
    """Write ``lp_pool2d(x, norm_type)`` into ``y_out``."""
    cdef PoolGeom g = geom_of(x.shape, y_out.shape, kh, kw, sh, sw, 0, 0, 1, 1)
    if g.NC == 0 or g.Ho == 0 or g.Wo == 0:
        return
    with nogil:
        lp_pool_impl(&x[0, 0, 0, 0], &y_out[0, 0, 0, 0], &g, norm_type, n_threads)


def lp_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                       const floating[:, :, :, ::1] x, floating[:, :, :, ::1] dx_out,
                       double norm_type, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, int n_threads):
    """Write the gradient of lp_pool2d w.r.t. its input ``x`` into ``dx_out``."""
    cdef PoolGeom g = geom_of(x.shape, grad_output.shape, kh, kw, sh, sw, 0, 0, 1, 1)
    if grad_is_trivial(dx_out, g.Ho, g.Wo):
        return
    with nogil:
        lp_pool_backward_impl(&grad_output[0, 0, 0, 0], &x[0, 0, 0, 0], &dx_out[0, 0, 0, 0],
                              &g, norm_type, n_threads)
