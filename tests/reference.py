"""Naive NumPy reference implementations (loops over kernel taps, float64 accumulation).

Deliberately written from the textbook definitions, independently of cnncore's kernels:
explicit zero padding with ``np.pad`` and strided slices, no im2col.
"""

from __future__ import annotations

import numpy as np


def out_size(size, k, s, p_total, d):
    return (size + p_total - d * (k - 1) - 1) // s + 1


def resolve_padding(padding, kernel, dilation, stride=(1, 1)):
    """Return ((top, bottom), (left, right)) padding like PyTorch."""
    kh, kw = kernel
    dh, dw = dilation
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (th // 2, th - th // 2), (tw // 2, tw - tw // 2)
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    return (ph, ph), (pw, pw)


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _taps(i, j, stride, dilation, out_hw):
    """Slices of the padded input read by kernel tap ``(i, j)`` at every output position."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    return (
        slice(i * dh, i * dh + sh * (ho - 1) + 1, sh),
        slice(j * dw, j * dw + sw * (wo - 1) + 1, sw),
    )


def _conv_taps(k, cg, groups, kernel, stride, dilation, out_hw):
    """Every (output channel ``kk``, kernel channel ``c_``, input channel, tap ``(i, j)``) of a
    grouped convolution, with the slices :func:`_taps` gives for the tap."""
    kg = k // groups
    for kk in range(k):
        for c_ in range(cg):
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    yield (kk, c_, kk // kg * cg + c_, i, j) + _taps(i, j, stride, dilation, out_hw)


def conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = resolve_padding(padding, (kh, kw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = out_size(h, kh, sh, pt + pb, dh)
    wo = out_size(wd, kw, sw, pl + pr, dw)
    y = np.zeros((n, k, ho, wo))
    for kk, c_, ch, i, j, rows, cols in _conv_taps(
        k, cg, groups, (kh, kw), (sh, sw), (dh, dw), (ho, wo)
    ):
        y[:, kk] += w[kk, c_, i, j] * xp[:, ch, rows, cols]
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward_input_ref(g_out, w, input_shape, stride=1, padding=0, dilation=1, groups=1):
    g_out = np.asarray(g_out, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    n, c, h, wd = input_shape
    k, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = resolve_padding(padding, (kh, kw), (dh, dw))
    ho, wo = g_out.shape[2:]
    dxp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    for kk, c_, ch, i, j, rows, cols in _conv_taps(
        k, cg, groups, (kh, kw), (sh, sw), (dh, dw), (ho, wo)
    ):
        dxp[:, ch, rows, cols] += w[kk, c_, i, j] * g_out[:, kk]
    return dxp[:, :, pt : pt + h, pl : pl + wd]


def conv2d_backward_weight_ref(g_out, x, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    g_out = np.asarray(g_out, np.float64)
    x = np.asarray(x, np.float64)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    k, cg, kh, kw = weight_shape
    (pt, pb), (pl, pr) = resolve_padding(padding, (kh, kw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho, wo = g_out.shape[2:]
    dw_ = np.zeros(weight_shape)
    for kk, c_, ch, i, j, rows, cols in _conv_taps(
        k, cg, groups, (kh, kw), (sh, sw), (dh, dw), (ho, wo)
    ):
        dw_[kk, c_, i, j] = np.sum(xp[:, ch, rows, cols] * g_out[:, kk])
    return dw_


def im2col_ref(x, kernel_size, stride=1, padding=0, dilation=1):
    x = np.asarray(x, np.float64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = out_size(h, kh, sh, 2 * ph, dh)
    wo = out_size(wd, kw, sw, 2 * pw, dw)
    cols = np.zeros((n, c, kh, kw, ho, wo))
    for i in range(kh):
        for j in range(kw):
            rows, cs = _taps(i, j, (sh, sw), (dh, dw), (ho, wo))
            cols[:, :, i, j] = xp[:, :, rows, cs]
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im_ref(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    cols = np.asarray(cols, np.float64)
    (h, wd), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(
        _pair, (output_size, kernel_size, stride, padding, dilation)
    )
    n, ckk, _ = cols.shape
    c = ckk // (kh * kw)
    ho = out_size(h, kh, sh, 2 * ph, dh)
    wo = out_size(wd, kw, sw, 2 * pw, dw)
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            rows, cs = _taps(i, j, (sh, sw), (dh, dw), (ho, wo))
            xp[:, :, rows, cs] += cols[:, :, i, j]
    return xp[:, :, ph : ph + h, pw : pw + wd]


def conv2d_backward_bias_ref(g_out):
    return np.asarray(g_out, np.float64).sum(axis=(0, 2, 3))


def linear_ref(x, w, b=None):
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y if b is None else y + np.asarray(b, np.float64)


def linear_backward_input_ref(g_out, w):
    return np.asarray(g_out, np.float64) @ np.asarray(w, np.float64)


def _rows(a):
    """``a`` as a matrix: every leading dimension folded into the rows."""
    a = np.asarray(a, np.float64)
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def linear_backward_weight_ref(g_out, x):
    return _rows(g_out).T @ _rows(x)


def linear_backward_bias_ref(g_out):
    return _rows(g_out).sum(axis=0)


# Elementwise activation gradients from the saved forward output (or input)
def relu_backward_ref(g_out, output):
    return np.where(np.asarray(output) > 0, np.asarray(g_out, np.float64), 0.0)


def leaky_relu_backward_ref(g_out, x, negative_slope=0.01):
    g = np.asarray(g_out, np.float64)
    return np.where(np.asarray(x) > 0, g, negative_slope * g)


def sigmoid_backward_ref(g_out, output):
    y = np.asarray(output, np.float64)
    return np.asarray(g_out, np.float64) * y * (1 - y)


def tanh_backward_ref(g_out, output):
    y = np.asarray(output, np.float64)
    return np.asarray(g_out, np.float64) * (1 - y * y)


def max_unpool2d_backward_ref(g_out, indices):
    """Gather: the gradient of every unpooled value is the one at its index."""
    g = np.asarray(g_out, np.float64)
    idx = np.asarray(indices, np.int64)
    n, c = idx.shape[:2]
    flat = g.reshape(n, c, -1)
    return np.take_along_axis(flat, idx.reshape(n, c, -1), axis=-1).reshape(idx.shape)


def conv_transpose2d_ref(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed convolution from its definition: each input value spreads ``x * w`` over
    a (stride-spaced, dilated) window of a canvas, which is then cropped by ``padding``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = map(
        _pair, (stride, padding, output_padding, dilation)
    )
    n, c_in, h, wd = x.shape
    _, cog, kh, kw = w.shape
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    canvas = np.zeros((n, cog * groups, ho + 2 * ph, wo + 2 * pw))
    cig = c_in // groups
    for c in range(c_in):
        for k in range(cog):
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
                    cols = slice(j * dw, j * dw + sw * (wd - 1) + 1, sw)
                    canvas[:, c // cig * cog + k, rows, cols] += w[c, k, i, j] * x[:, c]
    y = canvas[:, :, ph : ph + ho, pw : pw + wo]
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv_transpose2d_backward_ref(
    g_out, x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """``(grad_x, grad_weight, grad_bias)`` of :func:`conv_transpose2d_ref`: each input value
    and filter tap collects ``g_out`` from the canvas positions it was spread to."""
    g_out = np.asarray(g_out, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (stride, padding, dilation))
    n, c_in, h, wd = x.shape
    _, cog, kh, kw = w.shape
    ho, wo = g_out.shape[2:]
    canvas = np.zeros(
        (
            n,
            g_out.shape[1],
            max(ho + 2 * ph, sh * (h - 1) + dh * (kh - 1) + 1),
            max(wo + 2 * pw, sw * (wd - 1) + dw * (kw - 1) + 1),
        )
    )
    canvas[:, :, ph : ph + ho, pw : pw + wo] = g_out
    gx = np.zeros(x.shape)
    gw = np.zeros(w.shape)
    cig = c_in // groups
    for c in range(c_in):
        for k in range(cog):
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dh, i * dh + sh * (h - 1) + 1, sh)
                    cols = slice(j * dw, j * dw + sw * (wd - 1) + 1, sw)
                    patch = canvas[:, c // cig * cog + k, rows, cols]
                    gx[:, c] += w[c, k, i, j] * patch
                    gw[c, k, i, j] = np.sum(x[:, c] * patch)
    return gx, gw, g_out.sum(axis=(0, 2, 3))
