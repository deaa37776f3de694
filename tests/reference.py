"""Naive NumPy reference implementations (loops over kernel taps, float64 accumulation).

Deliberately written from the textbook definitions, independently of cnncore's kernels:
explicit zero padding with ``np.pad`` and strided slices, no im2col.
"""

from __future__ import annotations

import math

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


# --- more activations: element by element with the math module, float64 ------------------
# (value, derivative) of each function of x; the derivative is multiplied by grad_output.


def _phi(v):
    return 0.5 * math.erfc(-v / math.sqrt(2.0))


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


def _gelu_tanh_parts(v):
    """sigmoid(2u) (= (1 + tanh(u)) / 2) and du/dx of u = sqrt(2/pi) (x + 0.044715 x^3)."""
    k = math.sqrt(2.0 / math.pi)
    u = k * (v + 0.044715 * v**3)
    return _sigmoid(2 * u), k * (1 + 3 * 0.044715 * v * v)


def _act(name, v, p1=None, p2=None):
    """(f(v), f'(v)) of activation ``name`` with parameters ``p1``, ``p2``."""
    if math.isnan(v):
        return v, v
    if name == "gelu":
        pdf = math.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)
        return v * _phi(v), _phi(v) + v * pdf
    if name == "gelu_tanh":
        s, du = _gelu_tanh_parts(v)
        return v * s, s + 2 * v * s * (1 - s) * du
    if name == "silu":
        s = _sigmoid(v)
        return v * s, s * (1 + v * (1 - s))
    if name == "elu":
        alpha = 1.0 if p1 is None else p1
        return (v, 1.0) if v > 0 else (alpha * math.expm1(v), alpha * math.exp(v))
    if name == "hardswish":
        d = 0.0 if v <= -3 else (1.0 if v >= 3 else v / 3 + 0.5)
        return v * min(max(v + 3, 0.0), 6.0) / 6, d
    if name == "hardsigmoid":
        return min(max(v + 3, 0.0), 6.0) / 6, (1 / 6 if -3 < v < 3 else 0.0)
    if name == "relu6":
        return min(max(v, 0.0), 6.0), (1.0 if 0 < v < 6 else 0.0)
    if name == "softplus":
        beta = 1.0 if p1 is None else p1
        threshold = 20.0 if p2 is None else p2
        if v * beta > threshold:
            return v, 1.0
        bv = beta * v
        sp = max(bv, 0.0) + math.log1p(math.exp(-abs(bv)))
        return sp / beta, _sigmoid(bv)
    if name == "mish":
        sp = max(v, 0.0) + math.log1p(math.exp(-abs(v)))
        t = math.tanh(sp)
        return v * t, t + v * _sigmoid(v) * (1 - t * t)
    raise ValueError(name)


def activation_ref(name, x, *params):
    x = np.asarray(x, np.float64)
    out = np.array([_act(name, float(v), *params)[0] for v in x.reshape(-1)])
    return out.reshape(x.shape)


def activation_backward_ref(name, g_out, x, *params):
    x = np.asarray(x, np.float64)
    d = np.array([_act(name, float(v), *params)[1] for v in x.reshape(-1)]).reshape(x.shape)
    return np.asarray(g_out, np.float64) * d


def dropout2d_ref(x, p=0.5, training=True, rng=0, return_mask=False):
    """The mask is ``rng.random((N, C)) >= p`` (documented), scaled by ``1 / (1 - p)``."""
    x = np.asarray(x, np.float64)
    if not training:
        mask = np.ones(x.shape[:2])
    elif p == 1:
        mask = np.zeros(x.shape[:2])
    else:
        mask = (np.random.default_rng(rng).random(x.shape[:2]) >= p) / (1.0 - p)
    y = x * mask.reshape(mask.shape + (1,) * (x.ndim - 2))
    return (y, mask) if return_mask else y


def dropout2d_backward_ref(g_out, mask):
    g = np.asarray(g_out, np.float64)
    m = np.asarray(mask, np.float64)
    return g * m.reshape(m.shape + (1,) * (g.ndim - 2))


# --- normalization: textbook formulas in float64 ---------------------------------------------


def _norm_rows(x2):
    """Per row of a 2-D float64 array: the mean and the biased variance (two passes)."""
    mean = x2.mean(axis=1, keepdims=True)
    var = ((x2 - mean) ** 2).mean(axis=1, keepdims=True)
    return mean, var


def group_norm_ref(x, num_groups, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    n, c = x.shape[:2]
    xg = x.reshape(n * num_groups, -1)
    mean, var = _norm_rows(xg)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)
    view = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(view)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(view)
    return y


def _norm_rows_backward(g2, x2, w2, eps):
    """Input gradient of row-wise normalization followed by a scale ``w2`` (broadcast to the
    rows), and the per-element ``g * xhat`` terms."""
    mean, var = _norm_rows(x2)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x2 - mean) * rstd
    dy = g2 * w2
    m = x2.shape[1]
    mean_dy = dy.sum(axis=1, keepdims=True) / m
    mean_dyx = (dy * xhat).sum(axis=1, keepdims=True) / m
    gx = rstd * (dy - mean_dy - xhat * mean_dyx)
    return gx, g2 * xhat


def group_norm_backward_ref(grad_output, x, num_groups, weight=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    g = np.asarray(grad_output, np.float64)
    n, c = x.shape[:2]
    view = (1, c) + (1,) * (x.ndim - 2)
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    w_full = np.broadcast_to(w.reshape(view), x.shape).reshape(n * num_groups, -1)
    gx, gxhat = _norm_rows_backward(
        g.reshape(n * num_groups, -1), x.reshape(n * num_groups, -1), w_full, eps
    )
    if weight is None:
        return gx.reshape(x.shape), None, None
    axes = (0, *range(2, x.ndim))
    return gx.reshape(x.shape), gxhat.reshape(x.shape).sum(axis=axes), g.sum(axis=axes)


def _ln_split(x, normalized_shape):
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    d = int(np.prod(shape))
    return shape, d


def layer_norm_ref(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    shape, d = _ln_split(x, normalized_shape)
    x2 = x.reshape(-1, d)
    mean, var = _norm_rows(x2)
    y = (x2 - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(1, d)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, d)
    return y.reshape(x.shape)


def layer_norm_backward_ref(grad_output, x, normalized_shape, weight=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    g = np.asarray(grad_output, np.float64)
    shape, d = _ln_split(x, normalized_shape)
    w = np.ones((1, d)) if weight is None else np.asarray(weight, np.float64).reshape(1, d)
    gx, gxhat = _norm_rows_backward(g.reshape(-1, d), x.reshape(-1, d), w, eps)
    if weight is None:
        return gx.reshape(x.shape), None, None
    gw = gxhat.sum(axis=0).reshape(shape)
    return gx.reshape(x.shape), gw, g.reshape(-1, d).sum(axis=0).reshape(shape)


def _channel_rows(a):
    """``(N, C, *)`` as ``(C, N * prod(*))`` rows (batch norm's statistics are per row)."""
    return np.moveaxis(a.reshape(a.shape[0], a.shape[1], -1), 1, 0).reshape(a.shape[1], -1)


def batch_norm_ref(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    """The output only (the running statistics' update is tested separately)."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return x.copy()
    c = x.shape[1]
    view = (1, c) + (1,) * (x.ndim - 2)
    if training:
        mean, var = (v.reshape(view) for v in _norm_rows(_channel_rows(x)))
    else:
        mean = np.asarray(running_mean, np.float64).reshape(view)
        var = np.asarray(running_var, np.float64).reshape(view)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(view)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(view)
    return y


def batch_norm_backward_ref(
    grad_output, x, running_mean, running_var, weight=None, training=False, eps=1e-5
):
    x = np.asarray(x, np.float64)
    g = np.asarray(grad_output, np.float64)
    c = x.shape[1]
    view = (1, c) + (1,) * (x.ndim - 2)
    axes = (0, *range(2, x.ndim))
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    if training:
        gx, gxhat = _norm_rows_backward(_channel_rows(g), _channel_rows(x), w[:, None], eps)
        shape = (c, x.shape[0], *x.shape[2:])
        gx = np.moveaxis(gx.reshape(shape), 0, 1)
        gw = gxhat.sum(axis=1)
    else:
        rstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64).reshape(view) + eps)
        gx = g * rstd * w.reshape(view)
        xhat = (x - np.asarray(running_mean, np.float64).reshape(view)) * rstd
        gw = (g * xhat).sum(axis=axes)
    if weight is None:
        return gx, None, None
    return gx, gw, g.sum(axis=axes)


def instance_norm_ref(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """The output only (the running statistics' update is tested separately)."""
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    if use_input_stats:
        return group_norm_ref(x, c, weight, bias, eps)
    view = (1, c) + (1,) * (x.ndim - 2)
    rm = np.asarray(running_mean, np.float64).reshape(view)
    rv = np.asarray(running_var, np.float64).reshape(view)
    y = (x - rm) / np.sqrt(rv + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(view)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(view)
    return y


def instance_norm_backward_ref(
    grad_output, x, running_mean=None, running_var=None, weight=None, use_input_stats=True, eps=1e-5
):
    x = np.asarray(x, np.float64)
    g = np.asarray(grad_output, np.float64)
    c = x.shape[1]
    if use_input_stats:
        return group_norm_backward_ref(g, x, c, weight, eps)
    view = (1, c) + (1,) * (x.ndim - 2)
    rstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64).reshape(view) + eps)
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    gx = g * rstd * w.reshape(view)
    if weight is None:
        return gx, None, None
    xhat = (x - np.asarray(running_mean, np.float64).reshape(view)) * rstd
    axes = (0, *range(2, x.ndim))
    return gx, (g * xhat).sum(axis=axes), g.sum(axis=axes)


# --- resizing: PyTorch's coordinate rules, one output index at a time ---------------------


def _resize_taps(n_in, n_out, mode, align_corners, scale, dt):
    """For each output index along one axis, its [(source index, weight)] -- the rules of
    cnncore.interpolate's docstring, evaluated with NumPy scalars of the data's precision
    ``dt`` (np.float32 / np.float64) as PyTorch does."""
    t = np.float32 if dt == np.float32 else np.float64
    if align_corners:
        s = t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)
    elif scale is not None:
        s = t(1.0 / scale)
    else:
        s = t(n_in) / t(n_out)
    taps = []
    for i in range(n_out):
        if mode == "nearest":
            if n_out == n_in:
                j = i
            elif n_out == 2 * n_in:
                j = i // 2
            else:
                j = int(np.floor(np.float32(s * t(i))))
            taps.append([(min(j, n_in - 1), 1.0)])
        elif mode == "nearest-exact":
            src = max(s * (t(i) + t(0.5)) - t(0.5), t(0))
            j = int(np.floor(np.float32(float(src) + 0.5)))
            taps.append([(min(j, n_in - 1), 1.0)])
        elif n_out == n_in:
            taps.append([(i, 1.0), (i, 0.0)])
        else:
            src = s * t(i) if align_corners else max(s * (t(i) + t(0.5)) - t(0.5), t(0))
            i0 = min(int(np.floor(np.float32(src))), n_in - 1)
            lam = t(min(max(src - t(i0), t(0)), t(1)))
            i1 = i0 + 1 if i0 < n_in - 1 else i0
            taps.append([(i0, float(t(1) - lam)), (i1, float(lam))])
    return taps


def _resize_setup(shape, dt, size, scale_factor, mode, align_corners, recompute_scale_factor):
    h, w = shape[2:]
    if size is not None:
        out = (size, size) if np.isscalar(size) else tuple(size)
        scales = (None, None)
    else:
        f = (scale_factor, scale_factor) if np.isscalar(scale_factor) else tuple(scale_factor)
        out = (int(np.floor(h * float(f[0]))), int(np.floor(w * float(f[1]))))
        scales = (None, None) if recompute_scale_factor else f
    corners = bool(align_corners)
    th = _resize_taps(h, out[0], mode, corners, scales[0], dt)
    tw = _resize_taps(w, out[1], mode, corners, scales[1], dt)
    return out, th, tw


def interpolate_ref(
    x, size=None, scale_factor=None, mode="nearest", align_corners=None,
    recompute_scale_factor=None, antialias=False,
):  # fmt: skip
    dt = np.asarray(x).dtype
    x = np.asarray(x, np.float64)
    out, th, tw = _resize_setup(
        x.shape, dt, size, scale_factor, mode, align_corners, recompute_scale_factor
    )
    y = np.zeros(x.shape[:2] + out)
    for i in range(out[0]):
        for j in range(out[1]):
            for a, wa in th[i]:
                for b, wb in tw[j]:
                    y[:, :, i, j] += wa * wb * x[:, :, a, b]
    return y


def interpolate_backward_ref(
    grad_output, input_shape, mode="nearest", align_corners=None, scale_factor=None
):
    """The transpose of interpolate_ref, as a scatter: every output gradient is added to
    the input positions it was interpolated from."""
    dt = np.asarray(grad_output).dtype
    g = np.asarray(grad_output, np.float64)
    size = None if scale_factor is not None else g.shape[2:]
    out, th, tw = _resize_setup(
        tuple(input_shape), dt, size, scale_factor, mode, align_corners, False
    )
    gx = np.zeros(tuple(input_shape))
    for i in range(out[0]):
        for j in range(out[1]):
            for a, wa in th[i]:
                for b, wb in tw[j]:
                    gx[:, :, a, b] += wa * wb * g[:, :, i, j]
    return gx


def pixel_shuffle_ref(x, upscale_factor):
    x = np.asarray(x, np.float64)
    r = upscale_factor
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle_ref(x, downscale_factor):
    x = np.asarray(x, np.float64)
    r = downscale_factor
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return y.reshape(*lead, c * r * r, h // r, w // r)


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


def binary_cross_entropy_ref(probs, target, weight=None, reduction="mean"):
    """Element by element: ``-w (t max(log p, -100) + (1 - t) max(log(1 - p), -100))``
    (PyTorch's clamped logs), ``weight`` broadcast to ``probs``; 'mean' over the elements."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = np.broadcast_to(np.ones(()) if weight is None else np.asarray(weight, float), p.shape)
    per = np.empty(p.shape)
    for i in np.ndindex(*p.shape):
        lp = max(math.log(p[i]), -100.0) if p[i] > 0 else -100.0
        lq = max(math.log1p(-p[i]), -100.0) if p[i] < 1 else -100.0
        per[i] = -w[i] * (t[i] * lp + (1 - t[i]) * lq)
    return _loss_reduce(per, reduction)


def binary_cross_entropy_with_logits_ref(
    logits, target, weight=None, pos_weight=None, reduction="mean"
):
    """Element by element, from the definition: ``-w (pw t log sigmoid(x) + (1 - t) log(1 -
    sigmoid(x)))`` with ``log sigmoid(x) = -log1p(exp(-x))`` evaluated stably; ``weight``
    and ``pos_weight`` broadcast to ``logits``; 'mean' over the elements."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = np.broadcast_to(np.ones(()) if weight is None else np.asarray(weight, float), x.shape)
    pw = np.broadcast_to(
        np.ones(()) if pos_weight is None else np.asarray(pos_weight, float), x.shape
    )
    per = np.empty(x.shape)
    for i in np.ndindex(*x.shape):
        v = float(x[i])
        log_sig = -(math.log1p(math.exp(-v)) if v >= 0 else -v + math.log1p(math.exp(v)))
        log_one_minus = log_sig - v  # log(1 - sigmoid(v)) = log sigmoid(v) - v
        per[i] = -w[i] * (pw[i] * t[i] * log_sig + (1 - t[i]) * log_one_minus)
    return _loss_reduce(per, reduction)


def _loss_reduce(per, reduction):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / per.size if per.size else np.nan  # PyTorch: NaN for an empty mean
