"""Normalization: batch_norm, group_norm, layer_norm, instance_norm and their gradients.

See :mod:`cnncore.functional` for the conventions every op follows.  Each backward function
takes the forward's *input* and recomputes the statistics from it (exactly as the forward
does), and returns ``(grad_x, grad_weight, grad_bias)`` -- the last two None when no
``weight`` is given.  Statistics are computed in double with a shifted, chunked two-pass
scheme (see ``ops/_norm.pyx``): a large common offset (a mean of 1e4 with a standard
deviation of 1e-2 in float32) costs no accuracy in the deviations.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._config import get_num_threads, load_kernels, threads_for
from .._typing import ArrayLike
from .._validation import (
    as_float_array,
    as_ndarray,
    check_bool,
    check_int,
    check_numel,
    check_real,
    check_same_dtype,
)

# the AVX2 / AVX-512 build of the kernels when the CPU has it (see setup.py's SIMD_MODULES)
_norm, _ = load_kernels("cnncore.ops._norm")

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "group_norm",
    "group_norm_backward",
    "layer_norm",
    "layer_norm_backward",
    "instance_norm",
    "instance_norm_backward",
]


# ------------------------------------------------------------------------------------------
# Argument checks
# ------------------------------------------------------------------------------------------


def _eps(func: str, eps: Any) -> float:
    value = check_real(eps, "eps", func)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(
            f"{func}(): eps must be a non-negative finite number. Received: eps={eps!r}"
        )
    return value


def _momentum(func: str, momentum: Any) -> float:
    value = check_real(momentum, "momentum", func)
    if not math.isfinite(value):
        raise ValueError(f"{func}(): momentum must be finite. Received: momentum={momentum!r}")
    return value


def _input(func: str, x: Any, name: str, min_ndim: int, what: str) -> np.ndarray:
    x = as_float_array(x, name, func)
    if x.ndim < min_ndim:
        raise ValueError(f"{func}(): {name} must be {what}. Received: {name} with shape {x.shape}")
    return x


def _affine(
    func: str, name: str, a: Any, shape: tuple[int, ...], dtype: np.dtype, what: str
) -> np.ndarray | None:
    """An optional weight / bias: None, or a float array of ``shape`` and ``dtype``."""
    if a is None:
        return None
    a = as_float_array(a, name, func)
    if a.dtype != dtype:
        raise TypeError(
            f"{func}(): {name} must have the dtype of x, {dtype}. Received: {name}.dtype={a.dtype}"
        )
    if a.shape != tuple(shape):
        raise ValueError(
            f"{func}(): {name} must have shape {tuple(shape)} ({what}). "
            f"Received: {name} with shape {a.shape}"
        )
    return a


def _grad_output(func: str, grad_output: Any, x: np.ndarray) -> np.ndarray:
    g = as_float_array(grad_output, "grad_output", func)
    check_same_dtype(func, grad_output=g, x=x)
    if g.shape != x.shape:
        raise ValueError(
            f"{func}(): grad_output must have the shape of x, {x.shape}. Received: "
            f"grad_output with shape {g.shape}"
        )
    return g


def _flat(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.reshape(-1)


def _groups(func: str, x: np.ndarray, num_groups: Any) -> tuple[int, int, int]:
    """(N, C, S) of an ``(N, C, *)`` input after checking that ``num_groups`` divides C."""
    groups = check_int(num_groups, "num_groups", func, min_value=1)
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(
            f"{func}(): num_groups must divide the number of channels {c}. "
            f"Received: num_groups={groups}"
        )
    return n, c, int(np.prod(x.shape[2:], dtype=np.int64))


# ------------------------------------------------------------------------------------------
# group_norm
# ------------------------------------------------------------------------------------------


def _group_forward(
    func: str,
    x: np.ndarray,
    groups: int,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The group-norm kernel: ``(y, mean, var)`` per (sample, group); ``mean`` / ``var``
    given: normalize with them instead."""
    n, c, s = x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))
    check_numel(x.shape, "output", func, x.itemsize)
    y = np.empty_like(x)
    given = mean is not None
    if not given:
        mean = np.empty(n * groups)
        var = np.empty(n * groups)
    if x.size:
        _norm.group_norm_forward(
            x.reshape(-1),
            y.reshape(-1),
            _flat(weight),
            _flat(bias),
            n * groups,
            groups,
            c // groups,
            s,
            eps,
            mean,
            var,
            given,
            threads_for(x.size),
        )
    return y, mean, var


def _group_backward(
    func: str,
    g: np.ndarray,
    x: np.ndarray,
    groups: int,
    weight: np.ndarray | None,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
    saved: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The group-norm backward kernel; ``mean`` / ``var`` given: the running statistics
    (an affine map), or with ``saved`` the forward's mean and rstd (float64, one per
    (sample, group), read only)."""
    n, c, s = x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))
    check_numel(x.shape, "grad_x", func, x.itemsize)
    gx = np.empty_like(x)
    db = np.zeros((n, c))
    dw = np.zeros((n, c))
    given = mean is not None and not saved
    if mean is None:
        mean = np.empty(n * groups)
        var = np.empty(n * groups)
    if x.size:
        _norm.group_norm_backward(
            g.reshape(-1),
            x.reshape(-1),
            gx.reshape(-1),
            _flat(weight),
            n * groups,
            groups,
            c // groups,
            s,
            eps,
            mean,
            var,
            given,
            db.reshape(-1),
            dw.reshape(-1),
            threads_for(x.size),
            saved,
        )
    if weight is None:
        return gx, None, None
    return gx, dw.sum(axis=0).astype(x.dtype), db.sum(axis=0).astype(x.dtype)


def _saved_stats(
    func: str, mean: Any, rstd: Any, shapes: tuple[tuple[int, ...], ...], forward: str
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """``mean`` / ``rstd`` of a backward function: both None, or both real arrays of one of
    ``shapes`` (the first is what ``forward(..., return_stats=True)`` returns) -- returned
    as private float64 copies, flat."""
    if (mean is None) != (rstd is None):
        raise ValueError(
            f"{func}(): mean and rstd must both be given or both be None. Received: "
            f"mean={'None' if mean is None else 'an array'}, "
            f"rstd={'None' if rstd is None else 'an array'}"
        )
    if mean is None:
        return None, None
    out = []
    for name, a in (("mean", mean), ("rstd", rstd)):
        arr = as_float_array(a, name, func)
        if arr.shape not in shapes:
            raise ValueError(
                f"{func}(): {name} must have shape {shapes[0]}, as {forward}(..., "
                f"return_stats=True) returns it. Received: {name} with shape {arr.shape}"
            )
        out.append(np.array(arr, dtype=np.float64).reshape(-1))
    return out[0], out[1]


def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    return_stats: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group normalization: normalize each group of ``C / num_groups`` channels of each
    sample over its channels and positions, then scale and shift per channel.

    Same as :func:`torch.nn.functional.group_norm`; with ``return_stats``, also the
    statistics, as ``torch.native_group_norm`` returns them, for
    :func:`group_norm_backward` to reuse.

    Parameters
    ----------
    x : array_like of shape (N, C, *)
        float32 or float64, at least 2-D.
    num_groups : int
        Must divide ``C``.
    weight, bias : array_like of shape (C,), optional
        Per-channel scale and shift (of ``x``'s dtype); None: 1 and 0.
    eps : float, default 1e-5
        Added to the variance (non-negative).
    return_stats : bool, default False
        Also return ``mean`` and ``rstd``.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``
    mean, rstd : ndarray of shape (N, num_groups), float64
        Only with ``return_stats``: each group's mean and ``1 / sqrt(var + eps)``.  Passed
        to :func:`group_norm_backward`, they spare it recomputing the statistics (same
        result, bit for bit).

    Notes
    -----
    ``y[n, c] = (x[n, c] - mean[n, g]) / sqrt(var[n, g] + eps) * weight[c] + bias[c]`` with
    ``g = c // (C / num_groups)`` and the biased variance over the group's
    ``C / num_groups * prod(*)`` elements.  The statistics are computed in double, relative
    to the group's first element and in chunks merged with Chan's update, so no precision is
    lost to a large common offset.

    See Also
    --------
    group_norm_backward, layer_norm, instance_norm, cnncore.nn.GroupNorm
    """
    func = "group_norm"
    x = _input(func, x, "x", 2, "an array of shape (N, C, *) with at least 2 dimensions")
    groups = check_int(num_groups, "num_groups", func, min_value=1)
    _groups(func, x, groups)
    c = x.shape[1]
    weight = _affine(func, "weight", weight, (c,), x.dtype, "one per channel")
    bias = _affine(func, "bias", bias, (c,), x.dtype, "one per channel")
    stats = check_bool(return_stats, "return_stats", func)
    eps = _eps(func, eps)
    y, mean, var = _group_forward(func, x, groups, weight, bias, eps)
    if not stats:
        return y
    n = x.shape[0]
    # 1 / sqrt(var + eps) in double, correctly rounded step by step: the kernel's inv_std
    return y, mean.reshape(n, groups), (1.0 / np.sqrt(var + eps)).reshape(n, groups)


def group_norm_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    num_groups: int,
    weight: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    mean: ArrayLike | None = None,
    rstd: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`group_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, *)
        Gradient with respect to the output.
    x : array_like of the same shape and dtype
        The forward input (the statistics are recomputed from it unless ``mean`` and
        ``rstd`` are given).
    num_groups : int
    weight : array_like of shape (C,), optional
        The forward's weight (None: no scale).
    eps : float, default 1e-5
    mean, rstd : array_like of shape (N, num_groups), optional
        Both or neither: the forward's statistics, as ``group_norm(...,
        return_stats=True)`` returns them (as torch's ``native_group_norm_backward`` takes
        them).  Then the backward reads ``x`` once less and ``eps`` is not used; the result
        is bit-identical to recomputing them.

    Returns
    -------
    grad_x : ndarray of the shape of ``x``
    grad_weight, grad_bias : ndarray of shape (C,), or None when ``weight`` is None
        (``grad_bias`` is the gradient of the forward's ``bias``, whether or not one was
        given).

    Notes
    -----
    With ``xhat`` the normalized input, ``dy = grad_output * weight`` and ``M`` the group's
    size: ``grad_x = rstd * (dy - mean_g(dy) - xhat * mean_g(dy * xhat))``,
    ``grad_weight[c] = sum(grad_output * xhat)``, ``grad_bias[c] = sum(grad_output)`` over
    the batch and positions.

    See Also
    --------
    group_norm
    """
    func = "group_norm_backward"
    x = _input(func, x, "x", 2, "an array of shape (N, C, *) with at least 2 dimensions")
    g = _grad_output(func, grad_output, x)
    groups = check_int(num_groups, "num_groups", func, min_value=1)
    _groups(func, x, groups)
    weight = _affine(func, "weight", weight, (x.shape[1],), x.dtype, "one per channel")
    m, r = _saved_stats(func, mean, rstd, ((x.shape[0], groups),), "group_norm")
    return _group_backward(func, g, x, groups, weight, _eps(func, eps), m, r, m is not None)


# ------------------------------------------------------------------------------------------
# layer_norm
# ------------------------------------------------------------------------------------------


def _normalized_shape(func: str, normalized_shape: Any) -> tuple[int, ...]:
    if isinstance(normalized_shape, (bool, np.bool_, str, bytes)) or normalized_shape is None:
        raise TypeError(
            f"{func}(): normalized_shape must be an int or a tuple of ints. "
            f"Received: normalized_shape={normalized_shape!r}"
        )
    if isinstance(normalized_shape, (Sequence, np.ndarray)):
        if np.ndim(normalized_shape) != 1 or not 1 <= len(normalized_shape) <= 64:
            raise ValueError(
                f"{func}(): normalized_shape must be an int or a non-empty tuple of ints. "
                f"Received: normalized_shape={normalized_shape!r}"
            )
        items = list(normalized_shape)
    else:
        items = [normalized_shape]
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_, float, np.floating)):
            v = None
        try:
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(
                f"{func}(): normalized_shape must be an int or a tuple of ints. "
                f"Received: normalized_shape={normalized_shape!r}"
            ) from None
    if any(v < 0 for v in out):
        raise ValueError(
            f"{func}(): normalized_shape must not contain negative sizes. "
            f"Received: normalized_shape={normalized_shape!r}"
        )
    return tuple(out)


def _layer_split(func: str, x: np.ndarray, normalized_shape: Any) -> tuple[int, int]:
    """(rows M, row length D) of ``x`` normalized over its last ``len(normalized_shape)``
    axes, which must equal ``normalized_shape``."""
    shape = _normalized_shape(func, normalized_shape)
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k :] != shape:
        raise ValueError(
            f"{func}(): the last {k} dimension(s) of x must equal normalized_shape={shape}. "
            f"Received: x with shape {x.shape}"
        )
    d = int(np.prod(shape, dtype=np.int64))
    m = int(np.prod(x.shape[: x.ndim - k], dtype=np.int64))
    return m, d


def layer_norm(
    x: ArrayLike,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    return_stats: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer normalization over the last ``len(normalized_shape)`` axes, then an elementwise
    scale and shift.

    Same as :func:`torch.nn.functional.layer_norm`; with ``return_stats``, also the
    statistics, as ``torch.native_layer_norm`` returns them, for
    :func:`layer_norm_backward` to reuse.

    Parameters
    ----------
    x : array_like of shape (*, *normalized_shape)
    normalized_shape : int or tuple of ints
        The trailing shape to normalize over (non-empty); an int is a 1-tuple.
    weight, bias : array_like of shape normalized_shape, optional
        Elementwise scale and shift (of ``x``'s dtype); None: 1 and 0.
    eps : float, default 1e-5
        Added to the variance (non-negative).
    return_stats : bool, default False
        Also return ``mean`` and ``rstd``.

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``
    mean, rstd : ndarray of shape (*, 1, ..., 1), float64
        Only with ``return_stats`` (one 1 per normalized axis, as torch): each row's mean
        and ``1 / sqrt(var + eps)``.  Passed to :func:`layer_norm_backward`, they spare it
        recomputing the statistics (same result, bit for bit).

    Notes
    -----
    Each of the ``prod(*)`` rows of ``D = prod(normalized_shape)`` elements becomes
    ``(x - mean) / sqrt(var + eps) * weight + bias`` (biased variance), with the statistics
    computed as in :func:`group_norm`.

    See Also
    --------
    layer_norm_backward, group_norm, cnncore.nn.LayerNorm
    """
    func = "layer_norm"
    x = as_float_array(x, "x", func)
    m, d = _layer_split(func, x, normalized_shape)
    shape = x.shape[x.ndim - len(_normalized_shape(func, normalized_shape)) :]
    weight = _affine(func, "weight", weight, shape, x.dtype, "normalized_shape")
    bias = _affine(func, "bias", bias, shape, x.dtype, "normalized_shape")
    eps = _eps(func, eps)
    stats = check_bool(return_stats, "return_stats", func)
    check_numel(x.shape, "output", func, x.itemsize)
    y = np.empty_like(x)
    mean, var = np.empty(m), np.empty(m)
    if x.size:
        _norm.layer_norm_forward(
            x.reshape(-1),
            y.reshape(-1),
            _flat(weight),
            _flat(bias),
            m,
            d,
            eps,
            mean,
            var,
            threads_for(x.size),
        )
    if not stats:
        return y
    if not x.size:  # rows of no elements: torch's NaN statistics
        mean[:], var[:] = np.nan, np.nan
    stat_shape = x.shape[: x.ndim - len(shape)] + (1,) * len(shape)
    # 1 / sqrt(var + eps) in double, correctly rounded step by step: the kernel's inv_std
    return y, mean.reshape(stat_shape), (1.0 / np.sqrt(var + eps)).reshape(stat_shape)


def _row_parts(m: int, d: int, itemsize: int) -> int:
    """How many parts the rows are cut into for the weight / bias gradient sums: up to 64,
    halved while the partial sums (16 bytes per element) outgrow a quarter of the input (or
    64 KiB).  Few long rows make one part: the kernel then splits each row's work instead
    (several parallel regions: 32 rows of 64x28x28 float32 get 2 parts, one region of a
    task per part, rather than 1, which took 1.3-5x as long on a loaded 2-core machine)."""
    parts = min(m, 64)
    while parts > 1 and 16 * parts * d > max(m * d * itemsize // 4, 2**16):
        parts //= 2
    return max(parts, 1)


def layer_norm_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    normalized_shape: int | Sequence[int],
    weight: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    mean: ArrayLike | None = None,
    rstd: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`layer_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like of shape (*, *normalized_shape)
    x : array_like of the same shape and dtype
        The forward input (the statistics are recomputed from it unless ``mean`` and
        ``rstd`` are given).
    normalized_shape : int or tuple of ints
    weight : array_like of shape normalized_shape, optional
    eps : float, default 1e-5
    mean, rstd : array_like of shape (*, 1, ..., 1) or (*), optional
        Both or neither: the forward's statistics, as ``layer_norm(...,
        return_stats=True)`` returns them (as torch's ``native_layer_norm_backward`` takes
        them).  Then the backward reads ``x`` once less and ``eps`` is not used; the result
        is bit-identical to recomputing them.

    Returns
    -------
    grad_x : ndarray of the shape of ``x``
    grad_weight, grad_bias : ndarray of shape normalized_shape, or None when ``weight`` is
        None

    Notes
    -----
    Per row, with ``dy = grad_output * weight``:
    ``grad_x = rstd * (dy - mean(dy) - xhat * mean(dy * xhat))``; ``grad_weight`` and
    ``grad_bias`` sum ``grad_output * xhat`` and ``grad_output`` over the rows (in double,
    rows cut into parts fixed by the shapes: bit-identical for any thread count).

    See Also
    --------
    layer_norm
    """
    func = "layer_norm_backward"
    x = as_float_array(x, "x", func)
    g = _grad_output(func, grad_output, x)
    m, d = _layer_split(func, x, normalized_shape)
    shape = x.shape[x.ndim - len(_normalized_shape(func, normalized_shape)) :]
    weight = _affine(func, "weight", weight, shape, x.dtype, "normalized_shape")
    eps = _eps(func, eps)
    lead = x.shape[: x.ndim - len(shape)]
    saved = _saved_stats(func, mean, rstd, (lead + (1,) * len(shape), lead), "layer_norm")
    check_numel(x.shape, "grad_x", func, x.itemsize)
    gx = np.empty_like(x)
    parts = _row_parts(m, d, x.itemsize)
    pw = np.zeros((parts, d) if weight is not None else 1)
    pb = np.zeros((parts, d) if weight is not None else 1)
    if x.size:
        _norm.layer_norm_backward(
            g.reshape(-1),
            x.reshape(-1),
            gx.reshape(-1),
            _flat(weight),
            m,
            d,
            eps,
            pw.reshape(-1),
            pb.reshape(-1),
            parts,
            threads_for(x.size),
            *saved,
        )
    if weight is None:
        return gx, None, None
    return (
        gx,
        pw.sum(axis=0).astype(x.dtype).reshape(shape),
        pb.sum(axis=0).astype(x.dtype).reshape(shape),
    )


# ------------------------------------------------------------------------------------------
# instance_norm
# ------------------------------------------------------------------------------------------


def _running(
    func: str, rm: Any, rv: Any, c: int, dtype: np.dtype, update: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``running_mean`` / ``running_var``: both None, or both float arrays of shape (C,) and
    ``x``'s dtype (writeable ndarrays when they are updated in place)."""
    if (rm is None) != (rv is None):
        raise ValueError(
            f"{func}(): running_mean and running_var must both be given or both be None. "
            f"Received: running_mean={'None' if rm is None else 'an array'}, "
            f"running_var={'None' if rv is None else 'an array'}"
        )
    if rm is None:
        return None, None
    out = []
    for name, a in (("running_mean", rm), ("running_var", rv)):
        arr = as_ndarray(a, name, func)
        if arr.dtype != dtype:
            raise TypeError(
                f"{func}(): {name} must have the dtype of x, {dtype}. "
                f"Received: {name}.dtype={arr.dtype}"
            )
        if arr.shape != (c,):
            raise ValueError(
                f"{func}(): {name} must have shape ({c},), one per channel. "
                f"Received: {name} with shape {arr.shape}"
            )
        if update and not (isinstance(a, np.ndarray) and a.flags.writeable):
            raise ValueError(
                f"{func}(): {name} is updated in place with use_input_stats=True, so it must "
                f"be a writeable NumPy array. Received: {name} of type {type(a).__name__}"
                + ("" if not isinstance(a, np.ndarray) else " (read-only)")
            )
        out.append(arr)
    return out[0], out[1]


def _instance_args(
    func: str,
    x: Any,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    use_input_stats: Any,
    eps: Any,
    update: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, bool, float]:
    """Checked ``(x, running_mean, running_var, use_input_stats, eps)``; ``update``: the
    running statistics are updated in place (the forward) rather than only read."""
    x = _input(func, x, "x", 3, "an array of shape (N, C, *) with at least 3 dimensions")
    use = check_bool(use_input_stats, "use_input_stats", func)
    rm, rv = _running(func, running_mean, running_var, x.shape[1], x.dtype, use and update)
    if not use and rm is None:
        raise ValueError(
            f"{func}(): use_input_stats=False normalizes with running_mean and running_var, "
            f"which must be given. Received: running_mean=None, running_var=None"
        )
    if use and int(np.prod(x.shape[2:], dtype=np.int64)) == 1:
        raise ValueError(
            f"{func}(): expected more than 1 spatial element per channel when using the "
            f"input's statistics. Received: x with shape {x.shape}"
        )
    return x, rm, rv, use, _eps(func, eps)


def _given_stats(
    x: np.ndarray, rm: np.ndarray | None, rv: np.ndarray | None, use: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-(sample, channel) mean and variance from the running statistics (not ``use``)."""
    if use:
        return None, None
    n = x.shape[0]
    return np.tile(rm.astype(np.float64), n), np.tile(rv.astype(np.float64), n)


def instance_norm(
    x: ArrayLike,
    running_mean: ArrayLike | None = None,
    running_var: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Instance normalization: normalize each channel of each sample over its positions,
    then scale and shift per channel.

    Same as :func:`torch.nn.functional.instance_norm` (group norm with one channel per
    group, plus optional running statistics).

    Parameters
    ----------
    x : array_like of shape (N, C, *)
        At least 3-D (one or more spatial axes).
    running_mean, running_var : ndarray of shape (C,), optional
        With ``use_input_stats`` (the default), updated in place when given:
        ``running = (1 - momentum) * running + momentum * batch_mean``, where the batch's
        mean and (unbiased) variance are the per-instance statistics averaged over ``N``.
        Without it, the statistics the input is normalized with.
    weight, bias : array_like of shape (C,), optional
    use_input_stats : bool, default True
    momentum : float, default 0.1
    eps : float, default 1e-5

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``y[n, c] = (x[n, c] - mean[n, c]) / sqrt(var[n, c] + eps) * weight[c] + bias[c]``
    (biased variance over the ``prod(*)`` positions; computed as in :func:`group_norm`).
    A 3-D unbatched ``(C, H, W)`` input is for :class:`cnncore.nn.InstanceNorm2d`, which adds
    the batch axis.

    See Also
    --------
    instance_norm_backward, group_norm, cnncore.nn.InstanceNorm2d
    """
    func = "instance_norm"
    x, rm, rv, use, eps = _instance_args(
        func, x, running_mean, running_var, use_input_stats, eps, True
    )
    mom = _momentum(func, momentum)
    c = x.shape[1]
    weight = _affine(func, "weight", weight, (c,), x.dtype, "one per channel")
    bias = _affine(func, "bias", bias, (c,), x.dtype, "one per channel")
    mean, var = _given_stats(x, rm, rv, use)
    y, mean, var = _group_forward(func, x, c, weight, bias, eps, mean, var)
    n = x.shape[0]
    if use and rm is not None and n > 0:
        s = int(np.prod(x.shape[2:], dtype=np.int64))
        batch_mean = mean.reshape(n, c).mean(axis=0)
        batch_var = var.reshape(n, c).mean(axis=0) * (s / (s - 1))
        running_mean *= 1 - mom
        running_mean += (mom * batch_mean).astype(x.dtype)
        running_var *= 1 - mom
        running_var += (mom * batch_var).astype(x.dtype)
    return y


def instance_norm_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    running_mean: ArrayLike | None = None,
    running_var: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    use_input_stats: bool = True,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`instance_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, *)
    x : array_like of the same shape and dtype
        The forward input (the statistics are recomputed from it).
    running_mean, running_var : ndarray of shape (C,), optional
        Needed (and only read) with ``use_input_stats=False``: the statistics the forward
        normalized with; then the map is affine and ``grad_x = grad_output * weight / sqrt(
        running_var + eps)``.
    weight : array_like of shape (C,), optional
    use_input_stats : bool, default True
    eps : float, default 1e-5

    Returns
    -------
    grad_x : ndarray of the shape of ``x``
    grad_weight, grad_bias : ndarray of shape (C,), or None when ``weight`` is None

    See Also
    --------
    instance_norm, group_norm_backward
    """
    func = "instance_norm_backward"
    x, rm, rv, use, eps = _instance_args(
        func, x, running_mean, running_var, use_input_stats, eps, False
    )
    g = _grad_output(func, grad_output, x)
    c = x.shape[1]
    weight = _affine(func, "weight", weight, (c,), x.dtype, "one per channel")
    mean, var = _given_stats(x, rm, rv, use)
    return _group_backward(func, g, x, c, weight, eps, mean, var)


# ------------------------------------------------------------------------------------------
# batch_norm
# ------------------------------------------------------------------------------------------
#
# The private helpers below take C-contiguous ``x`` of shape (N, C, *) with at least one
# element and float64 statistics of shape (C,); nn.BatchNorm1d / BatchNorm2d call them
# directly (the layer keeps the forward's statistics for its backward, and a subclass can
# reduce the statistics and the gradient sums over a larger batch in between).


def _ncl(x: np.ndarray) -> tuple[int, int, int]:
    return x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))


def _touched(x: np.ndarray, arrays: int) -> int:
    """The elements a batch norm pass over ``arrays`` arrays of ``x``'s size reads and
    writes -- the work :func:`~cnncore._config.threads_for` sizes the thread count by (a
    backward reads ``g`` and ``x`` and writes ``grad_x``: three times the elements of a
    single-array kernel of the same shape, worth a second thread sooner).  The kernels'
    results do not depend on the thread count."""
    return arrays * x.size


def _batch_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance (float64) of ``x`` over the batch and positions."""
    n, c, s = _ncl(x)
    mean, var = np.empty(c), np.empty(c)
    _norm.batch_norm_forward(
        x.reshape(-1), None, None, None, n, c, s, 0.0, mean, var, False, threads_for(x.size)
    )
    return mean, var


def _batch_forward(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
    relu: bool = False,
    residual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, mean, var)``: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel,
    with the given statistics, or with the batch's (computed in the same pass);
    ``residual`` (C-contiguous, ``x``'s shape and dtype): ``y + residual`` in the same pass
    (an Add fused); ``relu``: ``max(y, 0)`` in the same pass (a ReLU fused); each
    bit-identical to the separate op after."""
    n, c, s = _ncl(x)
    y = np.empty_like(x)
    given = mean is not None
    if not given:
        mean, var = np.empty(c), np.empty(c)
    _norm.batch_norm_forward(
        x.reshape(-1),
        y.reshape(-1),
        _flat(weight),
        _flat(bias),
        n,
        c,
        s,
        eps,
        mean,
        var,
        given,
        threads_for(_touched(x, 2 if residual is None else 3)),
        relu,
        None if residual is None else residual.reshape(-1),
    )
    return y, mean, var


def _batch_backward(
    g: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    training: bool,
    sums: tuple[np.ndarray, np.ndarray, float] | None = None,
    input_grad: bool = True,
    relu: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(grad_x, sum_g, sum_gxhat)``: the per-channel sums of ``g`` and ``g * xhat``
    (float64; the bias and weight gradients) and the input gradient (None without
    ``input_grad``).  ``sums``: ``(sum_g, sum_gxhat, count)`` given -- e.g. over a larger
    batch -- instead of computed from ``g`` over this batch.  ``relu``: ``(weight, bias)``
    (each None without one) of a forward with ``relu=True`` that normalized with ``mean``
    / ``var``; ``g`` is the gradient w.r.t. its output, masked in the same pass as
    ``relu_backward`` would (the output's sign recomputed from ``x`` with the forward's
    arithmetic instead of read: bit-identical to calling relu_backward first)."""
    n, c, s = _ncl(x)
    gx = np.empty_like(x) if input_grad else None
    if sums is None:
        sum_g, sum_gxhat, count = np.empty(c), np.empty(c), n * s
    else:
        sum_g, sum_gxhat, count = sums
    _norm.batch_norm_backward(
        g.reshape(-1),
        x.reshape(-1),
        None if gx is None else gx.reshape(-1),
        _flat(weight),
        n,
        c,
        s,
        eps,
        mean,
        var,
        sum_g,
        sum_gxhat,
        sums is not None,
        float(count),
        training,
        threads_for(_touched(x, 3 if input_grad else 2)),
        relu is not None,
        None if relu is None else _flat(relu[0]),
        None if relu is None else _flat(relu[1]),
    )
    return gx, sum_g, sum_gxhat


def _batch_args(
    func: str, x: Any, running_mean: Any, running_var: Any, training: Any, eps: Any, update: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, bool, float]:
    """Checked ``(x, running_mean, running_var, training, eps)``; ``update``: the running
    statistics are updated in place (the forward in training) rather than only read."""
    x = _input(func, x, "x", 2, "an array of shape (N, C) or (N, C, *)")
    train = check_bool(training, "training", func)
    rm, rv = _running(func, running_mean, running_var, x.shape[1], x.dtype, train and update)
    if not train and rm is None:
        raise ValueError(
            f"{func}(): training=False normalizes with running_mean and running_var, which "
            f"must be given. Received: running_mean=None, running_var=None"
        )
    n, _, s = _ncl(x)
    if train and n * s == 1:
        raise ValueError(
            f"{func}(): expected more than 1 value per channel when training. "
            f"Received: x with shape {x.shape}"
        )
    return x, rm, rv, train, _eps(func, eps)


def _fixed_stats(rm: np.ndarray, rv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rm.astype(np.float64), rv.astype(np.float64)


def batch_norm(
    x: ArrayLike,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch normalization: normalize each channel over the batch and positions, then scale
    and shift per channel.

    Same as :func:`torch.nn.functional.batch_norm`.

    Parameters
    ----------
    x : array_like of shape (N, C) or (N, C, *)
        float32 or float64.
    running_mean, running_var : ndarray of shape (C,) or None
        With ``training``, updated in place when given (writeable arrays of ``x``'s dtype):
        ``running = (1 - momentum) * running + momentum * batch_stat``, with the batch's
        unbiased variance for ``running_var``.  Without it, the statistics ``x`` is
        normalized with (required).
    weight, bias : array_like of shape (C,), optional
        Per-channel scale and shift (of ``x``'s dtype); None: 1 and 0.
    training : bool, default False
        Normalize with the batch's own statistics (and update the running ones).
    momentum : float, default 0.1
    eps : float, default 1e-5
        Added to the variance (non-negative).

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    ``y[n, c, ...] = (x[n, c, ...] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``,
    with the batch's mean and biased variance over its ``N * prod(*)`` elements per channel
    (``training``) or the running ones.  Training needs more than one value per channel.
    The batch statistics are computed in double, relative to the channel's first element
    and in chunks merged with Chan's update, as :func:`group_norm`'s: a large common offset
    costs no precision.  An empty batch gives an empty output and leaves the running
    statistics as they are.

    See Also
    --------
    batch_norm_backward, group_norm, cnncore.nn.BatchNorm2d, cnncore.nn.BatchNorm1d
    """
    func = "batch_norm"
    x, rm, rv, train, eps = _batch_args(func, x, running_mean, running_var, training, eps, True)
    mom = _momentum(func, momentum)
    c = x.shape[1]
    weight = _affine(func, "weight", weight, (c,), x.dtype, "one per channel")
    bias = _affine(func, "bias", bias, (c,), x.dtype, "one per channel")
    check_numel(x.shape, "output", func, x.itemsize)
    if x.size == 0:
        return np.empty_like(x)
    if not train:
        return _batch_forward(x, weight, bias, eps, *_fixed_stats(rm, rv))[0]
    y, mean, var = _batch_forward(x, weight, bias, eps)
    if rm is not None:
        n, _, s = _ncl(x)
        m = n * s
        running_mean *= 1 - mom
        running_mean += (mom * mean).astype(x.dtype)
        running_var *= 1 - mom
        running_var += (mom * var * (m / (m - 1))).astype(x.dtype)
    return y


def batch_norm_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    running_mean: ArrayLike | None,
    running_var: ArrayLike | None,
    weight: ArrayLike | None = None,
    training: bool = False,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like of shape (N, C) or (N, C, *)
    x : array_like of the same shape and dtype
        The forward input (with ``training``, the batch statistics are recomputed from it).
    running_mean, running_var : ndarray of shape (C,) or None
        Needed (and only read) without ``training``: the statistics the forward normalized
        with; then the map is affine and ``grad_x = grad_output * weight / sqrt(running_var
        + eps)``.
    weight : array_like of shape (C,), optional
    training : bool, default False
        Whether the forward used the batch's statistics.
    eps : float, default 1e-5

    Returns
    -------
    grad_x : ndarray of the shape of ``x``
    grad_weight, grad_bias : ndarray of shape (C,), or None when ``weight`` is None

    Notes
    -----
    With ``xhat`` the normalized input and ``M = N * prod(*)``:
    ``grad_weight[c] = sum(grad_output * xhat)``, ``grad_bias[c] = sum(grad_output)`` (over
    the batch and positions, in double, in an order fixed by the shapes) and, with
    ``training``, ``grad_x = weight * rstd * (grad_output - grad_bias / M - xhat *
    grad_weight / M)``.

    See Also
    --------
    batch_norm
    """
    func = "batch_norm_backward"
    x, rm, rv, train, eps = _batch_args(func, x, running_mean, running_var, training, eps, False)
    g = _grad_output(func, grad_output, x)
    c = x.shape[1]
    weight = _affine(func, "weight", weight, (c,), x.dtype, "one per channel")
    check_numel(x.shape, "grad_x", func, x.itemsize)
    if x.size == 0:
        zeros = None if weight is None else np.zeros(c, x.dtype)
        return np.empty_like(x), zeros, None if weight is None else zeros.copy()
    mean, var = _batch_stats(x) if train else _fixed_stats(rm, rv)
    gx, sum_g, sum_gxhat = _batch_backward(g, x, weight, mean, var, eps, train)
    if weight is None:
        return gx, None, None
    return gx, sum_gxhat.astype(x.dtype), sum_g.astype(x.dtype)


def prepare_batch_norm_eval(
    x_shape: tuple[int, ...], n_threads: int | None = None
) -> tuple[Any, tuple[int, ...]]:
    """:func:`batch_norm` with fixed statistics (``training=False``) for repeated calls on
    one input shape (inference plans, graph models' eval forward): returns ``(run,
    out_shape)`` where ``run(x, mean, var, weight, bias, eps, out)`` writes the batch norm
    of ``x`` with the float64 statistics ``mean`` / ``var`` (as :func:`batch_norm` converts
    them) into ``out`` with the same kernel -- bit-identical -- without checking its
    arguments again: C-contiguous ``x``, ``out`` of the prepared shape, ``weight`` / ``bias``
    of ``(C,)`` or None, all of one float dtype.  ``n_threads`` fixes the kernel's thread
    count (None: :func:`cnncore.get_num_threads` at each call); results do not depend on it.
    """
    if len(x_shape) < 2 or math.prod(x_shape) == 0:
        raise ValueError(
            f"prepare_batch_norm_eval(): expected a non-empty (N, C, *) shape. Received: "
            f"{tuple(x_shape)}"
        )
    n, c, s = x_shape[0], x_shape[1], math.prod(x_shape[2:])
    forward = _norm.batch_norm_forward

    def run(
        x: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
        out: np.ndarray,
    ) -> np.ndarray:
        forward(
            x.reshape(-1),
            out.reshape(-1),
            weight,
            bias,
            n,
            c,
            s,
            eps,
            mean,
            var,
            True,
            n_threads or get_num_threads(),
        )
        return out

    return run, tuple(x_shape)
