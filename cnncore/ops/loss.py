"""Losses: cross entropy, binary cross entropy, regression losses, with gradients.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._config import threads_for
from .._shared import Loss
from .._typing import ArrayLike, LossResult
from .._validation import (
    as_float_array,
    as_ndarray,
    check_bool,
    check_choice,
    check_int,
    check_real,
    check_same_dtype,
    describe_dtype,
)
from . import _loss
from ._common import as_float_any

__all__ = [
    "cross_entropy",
    "cross_entropy_backward",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "binary_cross_entropy",
    "binary_cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "l1_loss",
    "l1_loss_backward",
    "msle_loss",
    "msle_loss_backward",
    "mape_loss",
    "mape_loss_backward",
    "l2_loss",
    "l2_loss_backward",
]

#
# One convention for every loss:
#
# * ``loss_fn(prediction, target, *, reduction='mean', return_grad=False, ...)``.
# * ``reduction='mean'`` / ``'sum'`` return a NumPy scalar of the prediction's dtype
#   (``np.float32`` or ``np.float64``, like ``ndarray.mean()``); ``'none'`` returns an array of
#   per-element (per-sample for cross entropy) losses.  Sums are accumulated in float64 in a
#   fixed order, then rounded to the dtype.
# * ``return_grad=True`` returns ``(loss, grad)``, ``grad`` being the gradient of the *reduced*
#   loss with respect to the prediction (shape and dtype of the prediction); for
#   ``reduction='none'`` it is the gradient of the sum of the per-element losses (i.e. for an
#   upstream gradient of ones).  Loss and gradient come from the same single kernel pass.
# * ``loss_fn_backward(prediction, target, *, reduction='mean', ...)`` returns just ``grad``
#   (the same computation; for layers that only need the gradient).

_REDUCTIONS = ("mean", "sum", "none")


def _reduced(
    dtype: np.dtype, total: float, count: int, reduction: str, per_element: np.ndarray | None
) -> Any:
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return dtype.type(total)
    return dtype.type(total / count) if count else dtype.type(np.nan)


def _first_bad(arr: np.ndarray, bad: np.ndarray) -> Any:
    return arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))].item()


# Per pointwise loss: (kernel kind, name of the prediction argument, domain checks as
# (argument, predicate of *bad* values, requirement text)).
_POINTWISE_LOSSES: dict[str, tuple[int, str, tuple[tuple[str, Any, str], ...]]] = {
    "mse_loss": (Loss.LOSS_MSE, "input", ()),
    "l2_loss": (Loss.LOSS_MSE, "input", ()),
    "l1_loss": (Loss.LOSS_L1, "input", ()),
    "mape_loss": (Loss.LOSS_MAPE, "input", ()),
    "binary_cross_entropy_with_logits": (Loss.LOSS_BCE_WITH_LOGITS, "logits", ()),
    "binary_cross_entropy": (
        Loss.LOSS_BCE,
        "probs",
        (
            ("probs", lambda a: ~((a >= 0) & (a <= 1)), "be between 0 and 1"),
            ("target", lambda a: ~((a >= 0) & (a <= 1)), "be between 0 and 1"),
        ),
    ),
    "msle_loss": (
        Loss.LOSS_MSLE,
        "input",
        (
            ("input", lambda a: a <= -1, "be > -1 (log1p is taken)"),
            ("target", lambda a: a <= -1, "be > -1 (log1p is taken)"),
        ),
    ),
}


def _elementwise_weight(
    w: Any, name: str, func: str, pred_name: str, p: np.ndarray
) -> np.ndarray | None:
    """``weight=`` / ``pos_weight=`` of the binary cross entropies: None, or real numbers
    broadcastable to the prediction's shape (PyTorch's rule: the result keeps that shape),
    returned flat, contiguous and of the prediction's dtype, as PyTorch converts them."""
    if w is None:
        return None
    a = as_ndarray(w, name, func)
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{func}(): {name} must hold real numbers. Received: {describe_dtype(w, a, name)}"
        )
    try:
        fits = np.broadcast_shapes(a.shape, p.shape) == p.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{func}(): {name} must be broadcastable to the shape of {pred_name}, {p.shape}. "
            f"Received: {name} with shape {a.shape}"
        )
    return np.ascontiguousarray(np.broadcast_to(a.astype(p.dtype, copy=False), p.shape)).reshape(-1)


def _pointwise_loss(
    name: str,
    func: str,
    prediction: Any,
    target: Any,
    reduction: Any,
    want_grad: bool,
    weight: ArrayLike | None = None,
    pos_weight: Any = None,
) -> tuple[Any, np.ndarray | None]:
    """The one implementation behind every elementwise loss and its ``_backward``
    (``weight`` / ``pos_weight``: the binary cross entropies' rescaling weights)."""
    kind, pred_name, domain = _POINTWISE_LOSSES[name]
    reduction = check_choice(reduction, "reduction", func, _REDUCTIONS)
    want_grad = check_bool(want_grad, "return_grad", func)
    p = as_float_any(prediction, pred_name, func)
    t = as_float_any(target, "target", func)
    dtype = check_same_dtype(func, **{pred_name: p, "target": t})
    if p.shape != t.shape:
        raise ValueError(
            f"{func}(): target must have the shape of {pred_name}, {p.shape}. Received: target "
            f"with shape {t.shape}"
        )
    w = _elementwise_weight(weight, "weight", func, pred_name, p)
    pw = _elementwise_weight(pos_weight, "pos_weight", func, pred_name, p)
    per_element = np.empty(p.shape, dtype=dtype) if reduction == "none" else None
    grad = np.empty(p.shape, dtype=dtype) if want_grad else None
    gscale = 1.0 / p.size if reduction == "mean" and p.size else 1.0
    total, flags = _loss.pointwise(
        kind,
        p.reshape(-1),
        t.reshape(-1),
        None if per_element is None else per_element.reshape(-1),
        None if grad is None else grad.reshape(-1),
        gscale,
        threads_for(p.size),
        w,
        pw,
    )
    if flags:
        for arg, is_bad, requirement in domain:
            arr = p if arg == pred_name else t
            bad = is_bad(arr)
            if bad.any():
                raise ValueError(
                    f"{func}(): all elements of {arg} must {requirement}. Received: {arg} "
                    f"containing {_first_bad(arr, bad)!r}"
                )
    return _reduced(dtype, total, p.size, reduction, per_element), grad


def _loss_result(loss: Any, grad: np.ndarray | None, return_grad: bool) -> Any:
    return (loss, grad) if return_grad else loss


def _pointwise_loss_value(
    name: str, prediction: Any, target: Any, reduction: Any, return_grad: Any, **weights: Any
) -> Any:
    """Body of the pointwise loss ``name``: its loss, or ``(loss, grad)``."""
    return _loss_result(
        *_pointwise_loss(name, name, prediction, target, reduction, return_grad, **weights),
        return_grad,
    )


def _pointwise_loss_grad(
    name: str, prediction: Any, target: Any, reduction: Any, **weights: Any
) -> np.ndarray:
    """Body of ``<name>_backward``: the gradient alone."""
    func = name + "_backward"
    return _pointwise_loss(name, func, prediction, target, reduction, True, **weights)[1]


def mse_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", return_grad: bool = False
) -> LossResult:
    """Mean squared error, ``(input - target)**2`` per element.

    Same as :func:`torch.nn.functional.mse_loss` (values and gradients, all reductions).

    Parameters
    ----------
    input : array_like of any shape
        Predictions, float32 or float64.
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False
        Also return the gradient of the (reduced) loss with respect to ``input``.

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray of ``input``'s shape for 'none'
    grad : ndarray of ``input``'s shape (only with ``return_grad=True``)
        ``2 * (input - target)``, divided by ``input.size`` for 'mean'.

    See Also
    --------
    mse_loss_backward, l2_loss, l1_loss
    """
    return _pointwise_loss_value("mse_loss", input, target, reduction, return_grad)


def mse_loss_backward(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean"
) -> np.ndarray:
    """Gradient of :func:`mse_loss` with respect to ``input`` (the ``grad`` of
    ``mse_loss(..., return_grad=True)``)."""
    return _pointwise_loss_grad("mse_loss", input, target, reduction)


def l2_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "sum", return_grad: bool = False
) -> LossResult:
    """Squared L2 norm of the error: ``sum((input - target)**2)``.

    With the default ``reduction='sum'`` this is the squared Euclidean distance between
    ``input`` and ``target`` -- *not* halved: TensorFlow's ``tf.nn.l2_loss(input - target)`` is
    half of it. Per element the loss is ``(input - target)**2``, so ``reduction='mean'`` equals
    :func:`mse_loss` and ``'none'`` gives the squared errors.

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'sum', 'mean', 'none'}, default 'sum'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``2 * (input - target)`` (divided by ``input.size`` for 'mean').

    See Also
    --------
    l2_loss_backward, mse_loss
    """
    return _pointwise_loss_value("l2_loss", input, target, reduction, return_grad)


def l2_loss_backward(input: ArrayLike, target: ArrayLike, *, reduction: str = "sum") -> np.ndarray:
    """Gradient of :func:`l2_loss` with respect to ``input``."""
    return _pointwise_loss_grad("l2_loss", input, target, reduction)


def l1_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", return_grad: bool = False
) -> LossResult:
    """Mean absolute error (MAE), ``|input - target|`` per element.

    Same as :func:`torch.nn.functional.l1_loss`; the gradient at ``input == target`` is 0
    (``sign(0)``), as in PyTorch.

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``sign(input - target)`` (divided by ``input.size`` for 'mean').

    See Also
    --------
    l1_loss_backward, mse_loss, mape_loss
    """
    return _pointwise_loss_value("l1_loss", input, target, reduction, return_grad)


def l1_loss_backward(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`l1_loss` with respect to ``input``."""
    return _pointwise_loss_grad("l1_loss", input, target, reduction)


def msle_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", return_grad: bool = False
) -> LossResult:
    """Mean squared logarithmic error, ``(log1p(input) - log1p(target))**2`` per element.

    Like Keras' ``MeanSquaredLogarithmicError`` for inputs and targets >= 0 (Keras averages
    over the last axis, then over the batch: the same as the mean over all elements). Keras
    silently clips negative values to ``epsilon``; cnncore instead requires every element of
    ``input`` and ``target`` to be > -1 (where ``log1p`` is defined) and raises ValueError
    otherwise.

    Parameters
    ----------
    input : array_like of any shape, all elements > -1
    target : array_like of the same shape and dtype, all elements > -1
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``2 * (log1p(input) - log1p(target)) / (1 + input)`` (divided by ``input.size`` for
        'mean').

    See Also
    --------
    msle_loss_backward, mse_loss
    """
    return _pointwise_loss_value("msle_loss", input, target, reduction, return_grad)


def msle_loss_backward(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean"
) -> np.ndarray:
    """Gradient of :func:`msle_loss` with respect to ``input``."""
    return _pointwise_loss_grad("msle_loss", input, target, reduction)


def mape_loss(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean", return_grad: bool = False
) -> LossResult:
    """Mean absolute percentage error, ``100 * |(target - input) / max(|target|, 1e-7)|``.

    Same as Keras' ``MeanAbsolutePercentageError`` (``epsilon = 1e-7``; Keras averages over
    the last axis, then over the batch: the same as the mean over all elements).

    Parameters
    ----------
    input : array_like of any shape
    target : array_like of the same shape and dtype
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``input``'s dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``100 * sign(input - target) / max(|target|, 1e-7)`` (divided by ``input.size`` for
        'mean').

    See Also
    --------
    mape_loss_backward, l1_loss
    """
    return _pointwise_loss_value("mape_loss", input, target, reduction, return_grad)


def mape_loss_backward(
    input: ArrayLike, target: ArrayLike, *, reduction: str = "mean"
) -> np.ndarray:
    """Gradient of :func:`mape_loss` with respect to ``input``."""
    return _pointwise_loss_grad("mape_loss", input, target, reduction)


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    return_grad: bool = False,
) -> LossResult:
    """Binary cross entropy of ``sigmoid(logits)`` against ``target``, computed stably.

    Same as :func:`torch.nn.functional.binary_cross_entropy_with_logits`, ``weight`` and
    ``pos_weight`` included.

    Parameters
    ----------
    logits : array_like of any shape
    target : array_like of the same shape and dtype
        Usually in [0, 1] (not checked, as in PyTorch).
    weight : array_like, optional
        Rescales the loss of each element; broadcastable to ``logits``' shape (e.g. one
        weight per output, shape ``(C,)`` for ``(N, C)`` logits).  Real numbers, converted to
        ``logits``' dtype (as PyTorch does); not checked for sign.
    pos_weight : array_like, optional
        Weight of the positive term (``target``'s part) of each element, broadcastable to
        ``logits``' shape -- typically ``(C,)``, one per class: ``n_negative / n_positive``
        of a class rebalances it.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        'mean' divides by ``logits.size`` (with or without weights, as PyTorch).
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``logits``' dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``weight * ((pos_weight * t + 1 - t) * sigmoid(logits) - pos_weight * t)``, i.e.
        ``sigmoid(logits) - target`` without weights (divided by ``logits.size`` for 'mean').

    Notes
    -----
    PyTorch's formula ``weight * ((1 - t) * x - (1 + (pos_weight - 1) * t) *
    log_sigmoid(x))`` with ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``: no overflow
    for any finite logit.

    See Also
    --------
    binary_cross_entropy_with_logits_backward, binary_cross_entropy, sigmoid
    cnncore.nn.BCEWithLogitsLoss
    """
    return _pointwise_loss_value(
        "binary_cross_entropy_with_logits",
        logits,
        target,
        reduction,
        return_grad,
        weight=weight,
        pos_weight=pos_weight,
    )


def binary_cross_entropy_with_logits_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy_with_logits` with respect to ``logits``
    (arguments as there)."""
    return _pointwise_loss_grad(
        "binary_cross_entropy_with_logits",
        logits,
        target,
        reduction,
        weight=weight,
        pos_weight=pos_weight,
    )


def binary_cross_entropy(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    return_grad: bool = False,
) -> LossResult:
    """Binary cross entropy ``-(t log p + (1 - t) log(1 - p))`` of probabilities.

    Same as :func:`torch.nn.functional.binary_cross_entropy`, ``weight`` included: each log
    is clamped to >= -100, so ``p`` of exactly 0 or 1 gives a finite loss.

    Parameters
    ----------
    probs : array_like of any shape, all elements in [0, 1]
    target : array_like of the same shape and dtype, all elements in [0, 1]
    weight : array_like, optional
        Rescales the loss of each element; broadcastable to ``probs``' shape.  Real numbers,
        converted to ``probs``' dtype (as PyTorch does); not checked for sign.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        'mean' divides by ``probs.size`` (with or without ``weight``, as PyTorch).
    return_grad : bool, default False

    Returns
    -------
    loss : NumPy scalar of ``probs``' dtype, or ndarray for 'none'
    grad : ndarray (only with ``return_grad=True``)
        ``weight * (p - t) / max(p (1 - p), 1e-12)`` (divided by ``probs.size`` for 'mean'),
        PyTorch's formula.

    Raises
    ------
    ValueError
        If an element of ``probs`` or ``target`` is outside [0, 1] (or NaN).

    See Also
    --------
    binary_cross_entropy_backward, binary_cross_entropy_with_logits
    cnncore.nn.BCELoss
    """
    return _pointwise_loss_value(
        "binary_cross_entropy", probs, target, reduction, return_grad, weight=weight
    )


def binary_cross_entropy_backward(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy` with respect to ``probs`` (arguments as
    there)."""
    return _pointwise_loss_grad("binary_cross_entropy", probs, target, reduction, weight=weight)


def _cross_entropy(
    func: str,
    logits: Any,
    target: Any,
    reduction: Any,
    label_smoothing: Any,
    ignore_index: Any,
    want_grad: bool,
    weight: ArrayLike | None = None,
) -> tuple[Any, np.ndarray | None]:
    """The one implementation behind :func:`cross_entropy` and its backward."""
    reduction = check_choice(reduction, "reduction", func, _REDUCTIONS)
    want_grad = check_bool(want_grad, "return_grad", func)
    x = as_float_any(logits, "logits", func)
    if x.ndim == 0:
        raise ValueError(
            f"{func}(): logits must be an array of shape (N, C, d1, ...) or (C,). "
            f"Received: logits with shape {x.shape}"
        )
    eps = check_real(label_smoothing, "label_smoothing", func)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(
            f"{func}(): label_smoothing must be in [0, 1]. Received: label_smoothing={eps!r}"
        )
    ignore_index = check_int(
        ignore_index, "ignore_index", func, min_value=-(2**63), max_value=2**63 - 1
    )
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None]
    n, c = x.shape[0], x.shape[1]
    spatial = x.shape[2:]
    if c == 0:
        raise ValueError(
            f"{func}(): logits must have at least one class (C >= 1). Received: logits with "
            f"shape {np.shape(logits)}"
        )
    t = as_ndarray(target, "target", func)
    index_shape = np.shape(logits)[:1] + spatial if not unbatched else ()
    if t.ndim == x.ndim - unbatched:  # class probabilities, shaped like logits
        if t.dtype.kind != "f":
            raise TypeError(
                f"{func}(): a target shaped like logits holds class probabilities and must be "
                f"float32/float64 like logits. Received: target.dtype={t.dtype}"
            )
        if t.shape != np.shape(logits):
            raise ValueError(
                f"{func}(): class-probability target must have the shape of logits, "
                f"{np.shape(logits)}. Received: target with shape {t.shape}"
            )
        t = as_float_array(t, "target", func)
        check_same_dtype(func, logits=x, target=t)
        if unbatched:
            t = t[None]
        labels, probs = None, t
        count = n * int(np.prod(spatial, dtype=np.int64))
    elif t.ndim == x.ndim - 1 - unbatched:  # class indices
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"{func}(): class-index target must have an integer dtype. Received: "
                f"target.dtype={t.dtype}"
            )
        if t.shape != index_shape:
            raise ValueError(
                f"{func}(): class-index target must have shape {index_shape} for logits of "
                f"shape {np.shape(logits)}. Received: target with shape {t.shape}"
            )
        if t.dtype.kind == "u" and t.size and int(t.max()) > 2**63 - 1:
            raise ValueError(
                f"{func}(): target contains class index {int(t.max())}, outside [0, {c - 1}]"
            )
        labels = np.ascontiguousarray(t, dtype=np.int64).reshape(-1)
        valid = labels != ignore_index
        bad = valid & ((labels < 0) | (labels >= c))
        if bad.any():
            raise ValueError(
                f"{func}(): target must hold class indices in [0, {c - 1}] (or ignore_index="
                f"{ignore_index}). Received: target containing {_first_bad(labels, bad)}"
            )
        probs = None
        count = int(np.count_nonzero(valid))
    else:
        raise ValueError(
            f"{func}(): target must be class indices of shape {index_shape} or class "
            f"probabilities of shape {np.shape(logits)}. Received: target with shape {t.shape}"
        )
    dtype = x.dtype
    w = _class_weight(weight, c, x, func)
    if w is not None and labels is not None:
        # torch: 'mean' divides by the summed weights of the non-ignored targets
        count = float(np.sum(w[labels[valid]], dtype=np.float64))
    # Rows of C classes: (N, C, d1, ...) -> (N * d1 * ..., C).
    if spatial:
        rows = np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(-1, c)
        if probs is not None:
            probs = np.ascontiguousarray(np.moveaxis(probs, 1, -1)).reshape(-1, c)
    else:
        rows = x
    per_row = np.empty(rows.shape[0], dtype=dtype) if reduction == "none" else None
    grad_rows = np.empty(rows.shape, dtype=dtype) if want_grad else None
    if reduction == "mean":
        gscale = 1.0 / count if count else 0.0
    else:
        gscale = 1.0
    total = _loss.cross_entropy(
        rows,
        labels,
        probs,
        w,
        ignore_index,
        eps,
        per_row,
        grad_rows,
        gscale,
        threads_for(rows.size),
    )
    loss_shape = (n, *spatial)
    if per_row is not None:
        per_row = per_row.reshape(loss_shape)
        if unbatched:
            per_row = per_row[0]
    loss = _reduced(dtype, total, count, reduction, per_row)
    grad = None
    if grad_rows is not None:
        if spatial:
            grad = np.ascontiguousarray(np.moveaxis(grad_rows.reshape(n, *spatial, c), -1, 1))
        else:
            grad = grad_rows
        if unbatched:
            grad = grad[0]
    return loss, grad


def _class_weight(weight: Any, c: int, x: np.ndarray, func: str) -> np.ndarray | None:
    """``weight=`` of cross entropy: None, or a (C,) array of the logits' dtype."""
    if weight is None:
        return None
    w = as_float_array(weight, "weight", func, ndim=1, ndim_text="a 1-D array of C weights")
    check_same_dtype(func, logits=x, weight=w)
    if w.shape != (c,):
        raise ValueError(
            f"{func}(): weight must have shape (C,) = ({c},), one weight per class. Received: "
            f"weight with shape {w.shape}"
        )
    return w


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    return_grad: bool = False,
) -> LossResult:
    """Cross entropy between ``softmax(logits, dim=1)`` and class targets (fused, stable).

    Same as :func:`torch.nn.functional.cross_entropy`: values and gradients, ``weight``, all
    reductions, ``label_smoothing`` and ``ignore_index``.

    Parameters
    ----------
    logits : array_like of shape (N, C), (N, C, d1, d2, ...) or (C,)
        Unnormalized scores, float32 or float64; the class axis is 1 (0 for a 1-D input).
    target : array_like
        Either class indices -- an integer array of shape (N,), (N, d1, d2, ...) or () -- with
        values in [0, C) or equal to ``ignore_index``; or class probabilities of the shape and
        dtype of ``logits``.
    weight : array_like of shape (C,), optional
        A rescaling weight for each class (``logits``' dtype), as PyTorch's: the loss
        of a class-index target ``t`` is multiplied by ``weight[t]``; with label smoothing
        or class probabilities every class term ``c`` is multiplied by ``weight[c]``.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        'mean' divides the sum by the number of non-ignored targets (class indices; with
        ``weight``, by the sum of ``weight[t]`` over them, as PyTorch) or by
        ``N * d1 * d2 * ...`` (probabilities, with or without ``weight``); 'none' returns the
        per-sample losses, shaped like the class-index target.
    label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - label_smoothing) * target + label_smoothing / C``.
    ignore_index : int, default -100
        Class-index targets equal to it contribute no loss and no gradient.
    return_grad : bool, default False
        Also return the gradient of the (reduced) loss with respect to ``logits``.

    Returns
    -------
    loss : NumPy scalar of ``logits``' dtype ('mean', 'sum') or ndarray ('none')
        'mean' with every target ignored is NaN (as in PyTorch).
    grad : ndarray of ``logits``' shape (only with ``return_grad=True``)
        ``softmax(logits) * sum(w) - w`` times the reduction's scale, where ``w`` is the
        (smoothed, weighted) target distribution.

    Notes
    -----
    Per sample, with ``m = max(logits)`` and ``lse = m + log(sum(exp(logits - m)))``:
    ``loss = sum_c w_c * (lse - logits_c)``, where ``w_c = (1 - eps) [c == t] weight[t] +
    eps / C weight[c]`` for a class index ``t`` and ``w_c = ((1 - eps) t_c + eps / C)
    weight[c]`` for probabilities ``t_c`` (``weight`` all ones when not given). Only ``exp``
    of non-positive numbers is taken, so logits of any magnitude (e.g. +-1e4) give finite
    losses and gradients.

    Raises
    ------
    TypeError
        For a class-index target that is not of an integer dtype.
    ValueError
        For class indices out of range, or a target of the wrong shape.

    See Also
    --------
    cross_entropy_backward, log_softmax, binary_cross_entropy_with_logits
    """
    loss, grad = _cross_entropy(
        "cross_entropy",
        logits,
        target,
        reduction,
        label_smoothing,
        ignore_index,
        return_grad,
        weight,
    )
    return _loss_result(loss, grad, return_grad)


def cross_entropy_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to ``logits`` (the ``grad`` of
    ``cross_entropy(..., return_grad=True)``)."""
    return _cross_entropy(
        "cross_entropy_backward",
        logits,
        target,
        reduction,
        label_smoothing,
        ignore_index,
        True,
        weight,
    )[1]
