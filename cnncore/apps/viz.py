"""Plots of filters, feature maps and training curves (needs matplotlib: the ``plot`` extra).

Every function draws into a new figure (or the ``ax``/``fig`` given) and returns the
matplotlib Figure; :func:`training_report` writes the demo's summary PNG.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "plot_filters",
    "plot_feature_maps",
    "plot_history",
    "plot_confusion",
    "training_report",
    "require_matplotlib",
]


def require_matplotlib() -> Any:
    """Import matplotlib with a headless backend, or raise a helpful ImportError."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "cnncore.viz needs matplotlib: pip install 'cnncore[plot]' (or pip install matplotlib)"
        ) from None
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401 -- respect an interactive session
        except Exception:  # noqa: BLE001
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _image_grid(fig: Any, images: np.ndarray, title: str, cmap: str, spec: Any = None) -> None:
    n = len(images)
    rows, cols = _grid(n)
    if spec is None:
        axes = fig.subplots(rows, cols, squeeze=False)
    else:
        sub = spec.subgridspec(rows, cols, wspace=0.05, hspace=0.05)
        axes = np.array([[fig.add_subplot(sub[r, c]) for c in range(cols)] for r in range(rows)])
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            ax.imshow(images[k], cmap=cmap, interpolation="nearest")
        else:
            ax.axis("off")
    axes.flat[0].set_title(title, loc="left", fontsize=9)


def _plot_tiles(
    func: str,
    name: str,
    value: Any,
    ndim: int,
    layout: str,
    fig: Any,
    title: str,
    cmap: str,
    first_channel: bool = False,
) -> Any:
    """Body of plot_filters / plot_feature_maps: one tile per entry of the first axis of the
    ``ndim``-D ``value`` (of its first channel with ``first_channel``)."""
    plt = require_matplotlib()
    a = np.asarray(value)
    if a.ndim != ndim:
        raise ValueError(
            f"{func}(): {name} must be {ndim}-D {layout}. Received: {name} with shape {a.shape}"
        )
    fig = fig or plt.figure(figsize=(4, 4))
    _image_grid(fig, a[:, 0] if first_channel else a, title, cmap)
    return fig


def plot_filters(weight: np.ndarray, fig: Any = None, title: str = "filters") -> Any:
    """Show the ``(C_out, C_in, kH, kW)`` filters of a conv layer, one tile per output
    channel (first input channel), each scaled to its own range."""
    return _plot_tiles(
        "plot_filters",
        "weight",
        weight,
        4,
        "(C_out, C_in, kH, kW)",
        fig,
        title,
        "gray",
        first_channel=True,
    )


def plot_feature_maps(maps: np.ndarray, fig: Any = None, title: str = "feature maps") -> Any:
    """Show the ``(C, H, W)`` activations of one sample, one tile per channel."""
    return _plot_tiles("plot_feature_maps", "maps", maps, 3, "(C, H, W)", fig, title, "viridis")


def plot_history(history: Any, ax: Any = None) -> Any:
    """Loss and accuracy per epoch (training and validation) from a ``History`` or dict."""
    plt = require_matplotlib()
    h = getattr(history, "history", history)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    epochs = np.arange(1, len(h.get("loss", [])) + 1)
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if key in h:
            ax.plot(epochs, h[key], style, color="tab:red", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:red")
    if "accuracy" in h or "val_accuracy" in h:
        ax2 = ax.twinx()
        for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
            if key in h:
                ax2.plot(epochs, h[key], style, color="tab:blue", label=key)
        ax2.set_ylabel("accuracy", color="tab:blue")
        lines = ax.get_lines() + ax2.get_lines()
    else:
        lines = ax.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
    ax.set_title("training curves", loc="left", fontsize=9)
    return fig


def plot_confusion(
    cm: Any,
    class_names: Any = None,
    normalize: bool = False,
    ax: Any = None,
    cmap: str = "Blues",
    title: str = "confusion matrix",
) -> Any:
    """Draw a confusion matrix (rows: true class, columns: predicted class), e.g. the
    ``'confusion'`` of ``model.evaluate(x, y, confusion=True)``, with the count (or the
    fraction of its row, with ``normalize``) written in each cell.

    Parameters
    ----------
    cm : array_like of shape (C, C)
        Non-negative counts.
    class_names : sequence of C str, optional
        Tick labels (default ``0 .. C-1``).
    normalize : bool, default False
        Show each row as fractions of its total (the per-class recall on the diagonal).
    ax : matplotlib Axes, optional
    cmap : str, default 'Blues'
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    func = "plot_confusion"
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(
            f"{func}(): cm must be a square (C, C) matrix. Received: cm with shape {m.shape}"
        )
    if m.dtype.kind not in "iuf" or not np.isfinite(m).all() or (m < 0).any():
        raise ValueError(
            f"{func}(): cm must hold finite, non-negative counts. Received: cm of dtype "
            f"{m.dtype} with min {m.min() if m.size else None}"
        )
    c = m.shape[0]
    if class_names is None:
        names = [str(i) for i in range(c)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != c:
            raise ValueError(
                f"{func}(): class_names must have one name per class ({c}). Received: "
                f"{len(names)} names"
            )
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"{func}(): normalize must be a bool. Received: normalize={normalize!r}")
    plt = require_matplotlib()
    values = m.astype(np.float64)
    if normalize:
        rows = values.sum(axis=1, keepdims=True)
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)
    if ax is None:
        size = max(3.5, 0.45 * c + 1.5)
        fig, ax = plt.subplots(figsize=(size, size))
    else:
        fig = ax.figure
    image = ax.imshow(values, cmap=cmap, interpolation="nearest", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c), names, rotation=45 if c > 6 else 0, ha="right" if c > 6 else "center")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, loc="left", fontsize=9)
    if c <= 30:
        top = values.max() if values.size else 0
        for i in range(c):
            for j in range(c):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                color = "white" if top and values[i, j] > 0.6 * top else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    return fig


def training_report(model: Any, history: Any, image: np.ndarray, path: Any, title: str = "") -> str:
    """Write a PNG with the training curves, the first conv layer's filters and its feature
    maps for ``image`` (a ``(C, H, W)`` input); returns the path."""
    plt = require_matplotlib()
    from cnncore.nn import Conv2d

    conv = next((layer for layer in model.layers if isinstance(layer, Conv2d)), None)
    fig = plt.figure(figsize=(12, 4))
    outer = fig.add_gridspec(1, 3, width_ratios=[1.3, 1, 1], wspace=0.25)
    plot_history(history, fig.add_subplot(outer[0]))
    if conv is not None:
        _image_grid(fig, conv.weight.data[:, 0], "first-layer filters", "gray", outer[1])
        was_training = model.training
        model.eval()
        try:
            maps = conv(np.asarray(image)[None].astype(conv.dtype))[0]
        finally:
            model.train(was_training)
        _image_grid(fig, maps, "first-layer feature maps", "viridis", outer[2])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
