"""Classification metrics that ``fit`` and ``evaluate`` report: accuracy, top-k accuracy and
the confusion matrix (Keras' names)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .._validation import _fmt, check_int

__all__ = ["TopKAccuracy", "confusion_matrix", "resolve_metrics", "top_k_correct"]


def _class_targets(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Class indices of a classification target (probabilities -> their argmax)."""
    if target.dtype.kind in "iu":
        return target
    return target.argmax(axis=1)


def top_k_correct(output: np.ndarray, target: Any, k: int) -> int:
    """Samples (positions) whose target class is among the ``k`` highest scores of
    ``output`` (N, C, ...); ties count in, as ``tf.math.in_top_k``: a target is in the top
    ``k`` when fewer than ``k`` classes score strictly higher."""
    t = _class_targets(output, np.asarray(target))
    t = np.asarray(t, dtype=np.int64)
    valid = (t >= 0) & (t < output.shape[1])
    safe = np.where(valid, t, 0)
    score = np.take_along_axis(output, safe[:, None], axis=1)
    higher = np.count_nonzero(output > score, axis=1)
    return int(np.count_nonzero((higher < k) & valid))


class TopKAccuracy:
    """Top-``k`` accuracy of a classifier's scores (Keras'
    ``SparseTopKCategoricalAccuracy``), logged as ``top_{k}_accuracy``.

    Parameters
    ----------
    k : int, default 5
    name : str, optional
        The log key (default ``f"top_{k}_accuracy"``).
    """

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        self.k = check_int(k, "k", "TopKAccuracy", min_value=1)
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"TopKAccuracy(): name must be a non-empty str. Received: {name!r}")
        self.name = name if name is not None else f"top_{self.k}_accuracy"

    def count(self, output: np.ndarray, target: np.ndarray) -> int:
        return top_k_correct(output, target, self.k)

    def __repr__(self) -> str:
        return f"TopKAccuracy(k={self.k}, name={self.name!r})"


_TOPK = re.compile(r"top_?(\d+)_accuracy")
_TOPK_ALIASES = (
    "top_k_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
)


def resolve_metrics(metrics: Any, func: str) -> list[TopKAccuracy]:
    """The extra metrics of ``fit(metrics=...)``: ``'accuracy'`` (always reported for
    classification losses, accepted and ignored), ``'top_k_accuracy'`` (k = 5),
    ``'top3_accuracy'`` / ``'top_3_accuracy'``, or :class:`TopKAccuracy` objects."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, TopKAccuracy)):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(
            f"{func}(): metrics must be a list of metric names or TopKAccuracy objects. "
            f"Received: metrics of type {type(metrics).__name__}"
        )
    out: list[TopKAccuracy] = []
    for m in metrics:
        if isinstance(m, TopKAccuracy):
            out.append(m)
            continue
        if not isinstance(m, str):
            raise TypeError(
                f"{func}(): metrics must be names or TopKAccuracy objects. Received: "
                f"{_fmt(m)} of type {type(m).__name__}"
            )
        key = m.lower()
        if key in ("accuracy", "acc", "sparse_categorical_accuracy"):
            continue
        if key in _TOPK_ALIASES:
            out.append(TopKAccuracy(5))
            continue
        match = _TOPK.fullmatch(key)
        if match is None:
            raise ValueError(
                f"{func}(): unknown metric. Expected 'accuracy', 'top_k_accuracy' or "
                f"'top<k>_accuracy'. Received: metrics containing {m!r}"
            )
        out.append(TopKAccuracy(int(match.group(1))))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{func}(): metrics must have distinct names. Received: {names}")
    return out


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts: row = true class, column = predicted
    class (scikit-learn's layout)."""
    num_classes = check_int(num_classes, "num_classes", "confusion_matrix", min_value=1)
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(
            f"confusion_matrix(): y_true and y_pred must have the same size. Received: "
            f"{t.size} and {p.size}"
        )
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(
                f"confusion_matrix(): {name} must hold classes in [0, {num_classes}). "
                f"Received: {name} containing {int(a.min() if a.min() < 0 else a.max())}"
            )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)
