"""Loss modules: ``loss = loss_fn(output, target)`` returns a float and keeps the gradient;
``loss_fn.backward()`` returns the gradient w.r.t. ``output``. Each wraps one
:mod:`cnncore.functional` loss, which computes loss and gradient in a single pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._typing import ArrayLike
from .._validation import as_ndarray, check_choice
from .module import Module

__all__ = [
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "MSELoss",
    "L1Loss",
    "MSLELoss",
    "MAPELoss",
    "L2Loss",
]


class _Loss(Module, register=False):
    _fn: Any = None
    _default_reduction = "mean"

    def __init__(self, reduction: str | None = None) -> None:
        super().__init__()
        if reduction is None:
            reduction = self._default_reduction
        self.reduction = check_choice(
            reduction, "reduction", type(self).__name__, ("mean", "sum", "none")
        )
        self._grad: np.ndarray | None = None

    def _kwargs(self, output: Any) -> dict[str, Any]:
        """Extra keyword arguments of the functional loss for this ``output``."""
        return {}

    def __call__(self, output: Any, target: Any) -> Any:  # type: ignore[override]
        return self.forward(output, target)

    def forward(self, output: Any, target: Any) -> Any:  # type: ignore[override]
        loss, grad = type(self)._fn(
            output, target, reduction=self.reduction, return_grad=True, **self._kwargs(output)
        )
        self._grad = grad
        return float(loss) if self.reduction != "none" else loss

    def weighted(self, output: Any, target: Any, sample_weight: np.ndarray) -> tuple[float, Any]:
        """Loss and gradient with per-sample weights, as Keras reduces them: with ``l_i`` the
        loss of sample ``i`` (the mean over its elements), ``sum_i w_i l_i / N`` for
        ``reduction='mean'`` and ``sum_i w_i sum_j l_ij`` for ``'sum'``.  The gradient is kept
        for :meth:`backward`.  (With all weights 1 this is the unweighted loss, except that
        cross entropy's ``ignore_index`` targets still count in ``N``.)"""
        if self.reduction == "none":
            raise ValueError(
                f"{type(self).__name__}: sample weights need reduction 'mean' or 'sum'. "
                f"Received: reduction='none'"
            )
        per, grad = type(self)._fn(
            output, target, reduction="none", return_grad=True, **self._kwargs(output)
        )
        n = per.shape[0] if per.ndim else 1
        per2 = per.reshape(n, -1)
        w = np.asarray(sample_weight, dtype=np.float64)
        if self.reduction == "mean":
            loss = float(np.dot(w, per2.mean(axis=1, dtype=np.float64)) / n)
            scale = w / (n * per2.shape[1])
        else:
            loss = float(np.dot(w, per2.sum(axis=1, dtype=np.float64)))
            scale = w
        grad = grad * scale.astype(grad.dtype).reshape((n,) + (1,) * (grad.ndim - 1))
        self._grad = grad
        return loss, grad

    def class_targets(self, target: np.ndarray) -> np.ndarray | None:
        """Class index of each sample for ``class_weight`` (None: not a classification
        loss)."""
        return None

    def backward(self, grad_output: Any = None, input_grad: bool = True) -> np.ndarray:
        """Gradient of the last loss w.r.t. ``output`` (of the sum for ``reduction='none'``),
        times ``grad_output`` if given."""
        grad = self._cached("_grad")
        return grad if grad_output is None else grad * grad_output

    def check_target(self, output: np.ndarray, target: np.ndarray, func: str) -> None:
        """Raise ValueError before training if ``target`` cannot go with outputs like
        ``output`` (checked on a two-sample output against the full target)."""
        if target.shape[1:] != output.shape[1:]:
            raise ValueError(
                f"{func}(): y must have shape (N, {', '.join(map(str, output.shape[1:]))}) "
                f"for this model and loss. Received: y with shape {target.shape}"
            )

    def get_config(self) -> dict[str, Any]:
        return {"reduction": self.reduction}


def _weight_buffer(value: Any, name: str, cls: str, *, one_per_class: bool = False) -> np.ndarray:
    """A loss module's ``weight=`` / ``pos_weight=``: finite real numbers, kept as a float
    array (float32 / float64 as given, else float64) registered as a buffer, as PyTorch
    registers them (so ``state_dict`` has them); converted to the output's dtype per call."""
    w = as_ndarray(value, name, cls)
    bad_shape = one_per_class and (w.ndim != 1 or w.size == 0)
    if w.dtype.kind not in "biuf" or bad_shape:
        what = "an array of real numbers"
        if one_per_class:
            what = "a non-empty 1-D array of real numbers (one per class)"
        raise ValueError(
            f"{cls}(): {name} must be {what}. Received: {name} with shape {w.shape} and dtype "
            f"{w.dtype}"
        )
    w = w.astype(w.dtype if w.dtype.kind == "f" and w.itemsize in (4, 8) else np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"{cls}(): {name} must be finite. Received: {name}={w.tolist()}")
    return w


def _as_dtype(a: np.ndarray | None, output: Any) -> np.ndarray | None:
    """A weight buffer in the dtype of ``output`` (float64 unless it is a float array)."""
    if a is None:
        return None
    dtype = getattr(output, "dtype", None)
    if not isinstance(dtype, np.dtype) or dtype.kind != "f":
        dtype = np.dtype(np.float64)
    return a.astype(dtype, copy=False)


def _integral(a: np.ndarray) -> bool:
    """Whether every element of the float array ``a`` is a finite whole number."""
    return bool(a.size) and bool(np.all(np.isfinite(a) & (a == np.round(a))))


class CrossEntropyLoss(_Loss):
    """Cross entropy of logits against integer class labels or class probabilities (see
    :func:`cnncore.cross_entropy`; fused log-softmax, stable for large logits).

    ``weight`` (one float per class, as PyTorch's ``CrossEntropyLoss(weight=...)``) rescales
    each class; 'mean' then divides by the summed weights of the targets.  It is a buffer,
    as in PyTorch: ``state_dict()`` holds ``weight`` when one is given.
    """

    _fn = staticmethod(F.cross_entropy)

    def __init__(
        self,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        *,
        weight: ArrayLike | None = None,
    ) -> None:
        super().__init__(reduction)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        if weight is not None:
            w = _weight_buffer(weight, "weight", "CrossEntropyLoss", one_per_class=True)
            self.register_buffer("weight", w)

    @property
    def weight(self) -> np.ndarray | None:
        """The class weights (the ``weight`` buffer), or None."""
        return self._buffers.get("weight")

    def _kwargs(self, output: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "label_smoothing": self.label_smoothing,
            "ignore_index": self.ignore_index,
        }
        if self.weight is not None:
            kw["weight"] = _as_dtype(self.weight, output)
        return kw

    def class_targets(self, target: np.ndarray) -> np.ndarray | None:
        if target.dtype.kind in "iu":
            return target if target.ndim == 1 else None
        return target.argmax(axis=1) if target.ndim == 2 else None

    def check_target(self, output: np.ndarray, target: np.ndarray, func: str) -> None:
        if target.dtype.kind in "iu":
            if target.shape[1:] != output.shape[2:]:
                raise ValueError(
                    f"{func}(): class labels y must have shape (N,) for outputs of shape "
                    f"(N, C). Received: y with shape {target.shape}"
                )
            n_classes = output.shape[1]
            bad = ((target < 0) | (target >= n_classes)) & (target != self.ignore_index)
            if bad.any():
                raise ValueError(
                    f"{func}(): labels y must be in [0, {n_classes}) for a model with "
                    f"{n_classes} outputs. Received: y containing "
                    f"{target.reshape(-1)[int(np.argmax(bad.reshape(-1)))]}"
                )
            return
        if target.dtype.kind != "f":
            raise TypeError(
                f"{func}(): y must hold integer labels or class probabilities. "
                f"Received: y.dtype={target.dtype}"
            )
        if target.shape[1:] == output.shape[2:] and _integral(target):
            raise TypeError(
                f"{func}(): class labels y must have an integer dtype; these floats are whole "
                f"numbers, so convert them with y.astype(np.int64) (or pass class "
                f"probabilities of shape (N, {output.shape[1]})). Received: y.dtype="
                f"{target.dtype}, shape {target.shape}"
            )
        super().check_target(output, target, func)
        bad = ~((target >= 0) & (target <= 1))
        if bad.any():
            raise ValueError(
                f"{func}(): class probabilities y (float, shape (N, C)) must be in [0, 1]. "
                f"Received: y containing {target.reshape(-1)[int(np.argmax(bad.reshape(-1)))]}"
            )

    def get_config(self) -> dict[str, Any]:
        config = {
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
            "ignore_index": self.ignore_index,
        }
        if self.weight is not None:
            config["weight"] = self.weight.tolist()
        return config


class _BinaryLoss(_Loss, register=False):
    def class_targets(self, target: np.ndarray) -> np.ndarray | None:
        # one output per sample: the class is the rounded target (Keras)
        if target.ndim == 1 or (target.ndim == 2 and target.shape[1] == 1):
            return np.round(target.reshape(-1)).astype(np.int64)
        return None


class _WeightedBinaryLoss(_BinaryLoss, register=False):
    """A binary loss with PyTorch's ``weight`` (and ``pos_weight``) buffers: arrays
    broadcastable to the output's shape, passed to the functional loss in its dtype."""

    _weight_names: tuple[str, ...] = ("weight",)

    def __init__(self, reduction: str = "mean", **weights: Any) -> None:
        super().__init__(reduction)
        cls = type(self).__name__
        for name in self._weight_names:
            if weights.get(name) is not None:
                self.register_buffer(name, _weight_buffer(weights[name], name, cls))

    def _kwargs(self, output: Any) -> dict[str, Any]:
        return {
            name: _as_dtype(self._buffers[name], output)
            for name in self._weight_names
            if name in self._buffers
        }

    @property
    def weight(self) -> np.ndarray | None:
        """The ``weight`` buffer (rescales each element's loss), or None."""
        return self._buffers.get("weight")

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"reduction": self.reduction}
        for name in self._weight_names:
            if name in self._buffers:
                config[name] = self._buffers[name].tolist()
        return config


class BCEWithLogitsLoss(_WeightedBinaryLoss):
    """Binary cross entropy on logits (see :func:`cnncore.binary_cross_entropy_with_logits`).

    ``weight`` rescales the loss of each element and ``pos_weight`` the positive term of
    each (both broadcast to the output's shape: typically one per output, ``(C,)``); both
    are buffers, as in PyTorch's ``BCEWithLogitsLoss(weight=..., pos_weight=...)``.
    """

    _fn = staticmethod(F.binary_cross_entropy_with_logits)
    _weight_names = ("weight", "pos_weight")

    def __init__(
        self,
        reduction: str = "mean",
        *,
        weight: ArrayLike | None = None,
        pos_weight: ArrayLike | None = None,
    ) -> None:
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)

    @property
    def pos_weight(self) -> np.ndarray | None:
        """The ``pos_weight`` buffer (weights of the positive terms), or None."""
        return self._buffers.get("pos_weight")


class BCELoss(_WeightedBinaryLoss):
    """Binary cross entropy on probabilities (see :func:`cnncore.binary_cross_entropy`).

    ``weight`` rescales the loss of each element (broadcast to the output's shape); it is a
    buffer, as in PyTorch's ``BCELoss(weight=...)``.
    """

    _fn = staticmethod(F.binary_cross_entropy)

    def __init__(self, reduction: str = "mean", *, weight: ArrayLike | None = None) -> None:
        super().__init__(reduction, weight=weight)


class MSELoss(_Loss):
    """Mean squared error (see :func:`cnncore.mse_loss`)."""

    _fn = staticmethod(F.mse_loss)


class L1Loss(_Loss):
    """Mean absolute error (see :func:`cnncore.l1_loss`)."""

    _fn = staticmethod(F.l1_loss)


class MSLELoss(_Loss):
    """Mean squared logarithmic error (see :func:`cnncore.msle_loss`)."""

    _fn = staticmethod(F.msle_loss)


class MAPELoss(_Loss):
    """Mean absolute percentage error (see :func:`cnncore.mape_loss`)."""

    _fn = staticmethod(F.mape_loss)


class L2Loss(_Loss):
    """Sum of squared differences (see :func:`cnncore.l2_loss`)."""

    _fn = staticmethod(F.l2_loss)
    _default_reduction = "sum"


_NAMES = {
    "cross_entropy": CrossEntropyLoss,
    "crossentropy": CrossEntropyLoss,
    "sparse_categorical_crossentropy": CrossEntropyLoss,
    "bce_with_logits": BCEWithLogitsLoss,
    "bce": BCELoss,
    "binary_crossentropy": BCELoss,
    "mse": MSELoss,
    "mean_squared_error": MSELoss,
    "l1": L1Loss,
    "mae": L1Loss,
    "mean_absolute_error": L1Loss,
    "msle": MSLELoss,
    "mape": MAPELoss,
    "l2": L2Loss,
}


def resolve_loss(loss: Any, func: str) -> _Loss:
    """A loss module, or one built from a name (``'cross_entropy'``, ``'mse'``, ...)."""
    if isinstance(loss, str):
        cls = _NAMES.get(loss.lower())
        if cls is None:
            raise ValueError(
                f"{func}(): unknown loss name. Expected one of {sorted(_NAMES)}. "
                f"Received: loss={loss!r}"
            )
        return cls()
    if not isinstance(loss, _Loss):
        raise TypeError(
            f"{func}(): loss must be a cnncore.nn loss module or a name. "
            f"Received: loss of type {type(loss).__name__}"
        )
    return loss


def count_correct(loss_fn: _Loss, output: np.ndarray, target: np.ndarray) -> float | None:
    """Correct predictions among the samples of a batch, for classification losses (None when
    accuracy is undefined). For binary losses with several outputs per sample a sample counts
    by its fraction of correct outputs."""
    if isinstance(loss_fn, CrossEntropyLoss) and output.ndim >= 2:
        pred = output.argmax(axis=1)
        if target.dtype.kind in "iu":
            return int(np.count_nonzero(pred == target))
        return int(np.count_nonzero(pred == target.argmax(axis=1)))
    if isinstance(loss_fn, (BCEWithLogitsLoss, BCELoss)):
        threshold = 0.0 if isinstance(loss_fn, BCEWithLogitsLoss) else 0.5
        hits = (output > threshold) == (target > 0.5)
        return float(hits.reshape(len(hits), -1).mean(axis=1).sum())
    return None
