"""Plots of filters, feature maps and training curves (needs matplotlib: the ``plot`` extra).

Every function draws into a new figure (or the ``ax``/``fig`` given) and returns the
matplotlib Figure; :func:`training_report` writes the demo's summary PNG.

Images of one kind (the filters of a layer, the feature maps of one input) are tiled into a
single mosaic drawn on one colour scale with a colorbar, so tiles can be compared and there
are no empty gaps between rows; filters use a symmetric scale around 0 (red positive, blue
negative), feature maps one scale from their minimum to their maximum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._typing import PathLike

__all__ = [
    "plot_filters",
    "plot_feature_maps",
    "plot_history",
    "plot_confusion",
    "training_report",
    "require_matplotlib",
    "mosaic",
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


def mosaic(images: np.ndarray, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(n, h, w)`` images into one 2-D array, row by row, ``pad`` pixels apart; the
    padding and unused tiles are NaN (drawn as background).

    Parameters
    ----------
    images : ndarray of shape (n, h, w)
    cols : int, optional
        Tiles per row (default: a near-square grid).
    pad : int, default 1

    Returns
    -------
    ndarray of shape (rows * (h + pad) - pad, cols * (w + pad) - pad), float64
    """
    a = np.asarray(images, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(
            f"mosaic(): images must be a non-empty (n, h, w) array. Received: shape {a.shape}"
        )
    n, h, w = a.shape
    rows, cols = _grid(n) if cols is None else (math.ceil(n / cols), cols)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = a[k]
    return out


def _show_mosaic(
    ax: Any, images: np.ndarray, title: str, cmap: str, symmetric: bool, colorbar: bool = True
) -> Any:
    """One mosaic of ``images`` on ``ax``, one colour scale for all of them."""
    plt = require_matplotlib()
    tiles = mosaic(images, pad=max(1, images.shape[-1] // 14))
    finite = tiles[np.isfinite(tiles)]
    if symmetric:
        m = float(np.max(np.abs(finite))) if finite.size else 1.0
        vmin, vmax = -(m or 1.0), m or 1.0
    else:
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 1.0
        if vmax <= vmin:
            vmax = vmin + 1.0
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    im = ax.imshow(tiles, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, loc="left", fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    return im


def _plot_tiles(
    func: str,
    name: str,
    value: Any,
    ndim: int,
    layout: str,
    fig: Any,
    title: str,
    cmap: str,
    symmetric: bool,
    first_channel: bool = False,
) -> Any:
    """Body of plot_filters / plot_feature_maps: one tile per entry of the first axis of the
    ``ndim``-D ``value`` (of its first channel with ``first_channel``)."""
    plt = require_matplotlib()
    a = np.asarray(value)
    if a.ndim != ndim or a.shape[0] == 0:
        raise ValueError(
            f"{func}(): {name} must be a non-empty {ndim}-D {layout} array. Received: {name} "
            f"with shape {a.shape}"
        )
    fig = fig or plt.figure(figsize=(4.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    _show_mosaic(ax, a[:, 0] if first_channel else a, title, cmap, symmetric)
    return fig


def plot_filters(weight: np.ndarray, fig: Any = None, title: str = "filters") -> Any:
    """Show the ``(C_out, C_in, kH, kW)`` filters of a conv layer, one tile per output
    channel (its first input channel), all on one colour scale symmetric around 0."""
    return _plot_tiles(
        "plot_filters",
        "weight",
        weight,
        4,
        "(C_out, C_in, kH, kW)",
        fig,
        title,
        "RdBu_r",
        symmetric=True,
        first_channel=True,
    )


def plot_feature_maps(maps: np.ndarray, fig: Any = None, title: str = "feature maps") -> Any:
    """Show the ``(C, H, W)`` activations of one sample, one tile per channel, all on one
    colour scale (with a colorbar)."""
    return _plot_tiles(
        "plot_feature_maps", "maps", maps, 3, "(C, H, W)", fig, title, "viridis", symmetric=False
    )


def plot_history(history: Any, ax: Any = None) -> Any:
    """Loss and accuracy per epoch (training and validation) from a ``History`` or dict.

    Epochs are whole numbers on the x axis; each epoch is a marker, so a run of one epoch
    still shows its values. A history without epochs (a run stopped before its first
    epoch ended) draws an empty panel that says so.
    """
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    h = getattr(history, "history", history)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    ax.set_title("training curves", loc="left", fontsize=9)
    n = len(h.get("loss", []))
    if n == 0:
        ax.text(0.5, 0.5, "no finished epoch", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    epochs = np.arange(1, n + 1)
    for key, style in (("loss", "-o"), ("val_loss", "--s")):
        if key in h:
            ax.plot(epochs, h[key], style, color="tab:red", label=key, markersize=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:red")
    if n <= 12:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, n + 0.5)
    if "accuracy" in h or "val_accuracy" in h:
        ax2 = ax.twinx()
        for key, style in (("accuracy", "-o"), ("val_accuracy", "--s")):
            if key in h:  # hollow markers: visible where a loss marker sits at the same spot
                ax2.plot(
                    epochs,
                    h[key],
                    style,
                    color="tab:blue",
                    label=key,
                    markersize=7,
                    markerfacecolor="none",
                )
        ax2.set_ylabel("accuracy", color="tab:blue")
        lines = ax.get_lines() + ax2.get_lines()
    else:
        lines = ax.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
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


def training_report(
    model: Any, history: Any, image: np.ndarray, path: PathLike, title: str = ""
) -> str:
    """Write a PNG with the training curves, the first conv layer's filters and its feature
    maps for ``image`` (a ``(C, H, W)`` input); returns the path."""
    plt = require_matplotlib()
    from cnncore.nn import Conv2d

    layers = getattr(model, "layers", None) or list(getattr(model, "children", list)())
    conv = next((layer for layer in layers if isinstance(layer, Conv2d)), None)
    panels = 3 if conv is not None else 1
    fig = plt.figure(figsize=(5.2 + 4.6 * (panels - 1), 4.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False, width_ratios=[1.15] + [1] * (panels - 1))[0]
    plot_history(history, axes[0])
    if conv is not None:
        w = conv.weight.data
        which = " (input channel 0)" if w.shape[1] > 1 else ""
        _show_mosaic(axes[1], w[:, 0], f"first-layer filters{which}", "RdBu_r", symmetric=True)
        was_training = model.training
        model.eval()
        try:
            maps = conv(np.asarray(image)[None].astype(conv.dtype))[0]
        finally:
            model.train(was_training)
        _show_mosaic(axes[2], maps, "first-layer feature maps", "viridis", symmetric=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
