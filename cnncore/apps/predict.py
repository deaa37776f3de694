"""What ``cnncore predict`` and ``cnncore export`` need: loading a model file of any kind,
finding the input shape a model takes, reading images (PNG/JPEG through Pillow, ``.npy``
through NumPy) and fitting them to it, and the top-k classes of its outputs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import cnncore
from cnncore import nn

__all__ = [
    "load_model",
    "input_channels",
    "model_input_hw",
    "read_image",
    "to_chw",
    "fit_images",
    "label_names",
    "top_k",
    "MAX_SIDE",
]

#: The largest square input side searched when a model's input size must be inferred.
MAX_SIDE = 512
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_model(path: str) -> Any:
    """A model from ``.npz`` / ``.safetensors`` (:func:`cnncore.load`) or ``.onnx``
    (:func:`cnncore.onnx.load`), in eval mode."""
    if path.lower().endswith(".onnx"):
        from cnncore import onnx as cn_onnx

        return cn_onnx.load(path)
    return cnncore.load(path)


def _walk(module: Any) -> Iterator[Any]:
    yield module
    for child in module.children():
        yield from _walk(child)


def input_channels(model: Any) -> int:
    """The channels the model's first convolution takes (1 for a model without one)."""
    for layer in _walk(model):
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return 1


def _fits(model: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``model`` takes an input of ``shape``: the layers' shapes propagated (a
    Sequential), checking the channels and features each layer with weights expects."""
    layers = list(_walk(model))
    if not all(isinstance(m, nn.Sequential) or not m.children() for m in layers):
        return _runs(model, shape)  # another container: try it
    try:
        for layer in (m for m in layers if not isinstance(m, nn.Sequential)):
            if isinstance(layer, nn.Conv2d) and (len(shape) != 4 or shape[1] != layer.in_channels):
                return False
            if isinstance(layer, nn.Linear) and shape[-1] != layer.in_features:
                return False
            if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and (
                len(shape) < 2 or shape[1] != layer.num_features
            ):
                return False
            shape = layer.output_shape(shape)
            if min(shape) < 1:
                return False
    except (ValueError, TypeError, IndexError):
        return False
    return True


def _runs(model: Any, shape: tuple[int, ...]) -> bool:
    try:
        model.eval()(np.zeros(shape, model.dtype))
    except (ValueError, TypeError, IndexError):
        return False
    return True


def model_input_hw(model: Any, image_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (H, W) to feed ``model``: the shape it was imported with (ONNX), else the image's
    own size if the model takes it, else the smallest square side up to :data:`MAX_SIDE`
    it takes.  ValueError when none fits."""
    recorded = getattr(model, "onnx_input_shape", None)
    if recorded is not None and len(recorded) == 4:
        return int(recorded[2]), int(recorded[3])
    c = input_channels(model)
    if image_hw is not None and _fits(model, (1, c, *image_hw)):
        return image_hw
    for side in range(1, MAX_SIDE + 1):
        if _fits(model, (1, c, side, side)) and _runs(model, (1, c, side, side)):
            return side, side
    raise ValueError(
        f"cannot find an input size the model takes: no square image of side 1..{MAX_SIDE} "
        f"with {c} channel(s) fits its layers"
        + (f", nor the image's own size {image_hw}" if image_hw else "")
    )


def read_image(path: str) -> np.ndarray:
    """The image(s) at ``path`` as an array: PNG/JPEG -> ``(H, W)`` or ``(H, W, 3)`` uint8
    (through Pillow: ``pip install "cnncore[images]"``); ``.npy`` -> the stored array
    (never unpickled)."""
    lower = path.lower()
    if lower.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable .npy array ({exc})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise ValueError(f"{path}: expected a numeric array. Received: dtype {arr.dtype}")
        return arr
    if not lower.endswith(_IMAGE_SUFFIXES):
        raise ValueError(
            f"{path}: unsupported image type (PNG, JPEG or .npy). Received: "
            f"{os.path.splitext(path)[1] or 'no suffix'}"
        )
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError(
            'reading PNG/JPEG images needs Pillow: pip install "cnncore[images]"'
        ) from None
    try:
        with Image.open(path) as img:
            img.load()
            mode = (
                "L"
                if img.mode in ("1", "L", "I", "I;16", "F") or img.mode.startswith("L")
                else "RGB"
            )
            if img.mode in ("I", "I;16", "F"):
                arr = np.asarray(img, dtype=np.float64)
                top = arr.max() if arr.size and arr.max() > 0 else 1.0
                return (arr / top * 255).round().astype(np.uint8)
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from None


def to_chw(arr: np.ndarray, path: str) -> list[np.ndarray]:
    """One or more ``(C, H, W)`` images from an array: ``(H, W)``, ``(H, W, 1|3|4)``,
    ``(C, H, W)`` with C in 1, 3, or a batch ``(N, C, H, W)`` / ``(N, H, W)``."""
    if arr.ndim == 2:
        return [arr[None]]
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3):
            return [np.moveaxis(arr[..., :3] if arr.shape[-1] == 4 else arr, -1, 0)]
        if arr.shape[0] in (1, 3):
            return [arr]
        return [a[None] for a in arr]  # a batch of grayscale images
    if arr.ndim == 4:
        return list(arr)
    raise ValueError(
        f"{path}: expected an image (H, W), (H, W, C), (C, H, W) or a batch (N, C, H, W). "
        f"Received: an array of shape {arr.shape}"
    )


def _resize(chw: np.ndarray, hw: tuple[int, int], path: str) -> np.ndarray:
    if chw.shape[1:] == tuple(hw):
        return chw
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            f"{path}: resizing {chw.shape[1:]} to {tuple(hw)} needs Pillow: pip install "
            f'"cnncore[images]"'
        ) from None
    planes = [
        np.asarray(
            Image.fromarray(plane.astype(np.float32), mode="F").resize(
                (hw[1], hw[0]), Image.Resampling.BILINEAR
            )
        )
        for plane in chw
    ]
    return np.stack(planes)


def fit_images(
    images: Sequence[np.ndarray],
    path: str,
    channels: int,
    hw: tuple[int, int],
    invert: bool = False,
) -> np.ndarray:
    """``(C, H, W)`` images (from :func:`to_chw`) as one float32 batch ``(N, channels, H,
    W)`` in [0, 1] (uint8 scaled by 1/255, floats kept), converted between grayscale and RGB
    and resized to ``hw``.  ValueError when the channels cannot be matched."""
    out = []
    for chw in images:
        scale = 1.0 / 255.0 if chw.dtype == np.uint8 else 1.0
        chw = chw.astype(np.float32) * np.float32(scale)
        c = chw.shape[0]
        if c != channels:
            if c == 3 and channels == 1:  # ITU-R 601 luma, as Pillow's convert("L")
                chw = (chw * np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(
                    0, keepdims=True
                )
            elif c == 1 and channels == 3:
                chw = np.repeat(chw, 3, axis=0)
            else:
                raise ValueError(
                    f"{path}: the image has {c} channel(s), the model takes {channels}"
                )
        if min(chw.shape[1:]) < 1:
            raise ValueError(f"{path}: the image is empty (shape {chw.shape})")
        chw = _resize(chw, hw, path)
        out.append(1.0 - chw if invert else chw)
    return np.stack(out)


def top_k(outputs: np.ndarray, k: int, model: Any) -> list[list[tuple[int, float]]]:
    """The ``k`` largest classes of each row of ``outputs`` with their probabilities
    (softmax of logits; a model ending in Softmax/LogSoftmax is read as such)."""
    if outputs.ndim != 2:
        raise ValueError(
            f"the model's output has shape {outputs.shape}, not (N, classes): it is not a "
            f"classifier"
        )
    last = list(_walk(model))[-1]
    out = outputs.astype(np.float64)
    if isinstance(last, nn.Softmax):
        probs = out
    elif isinstance(last, nn.LogSoftmax):
        probs = np.exp(out)
    else:
        e = np.exp(out - out.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    k = min(k, outputs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(int(i), float(p[i])) for i in row] for row, p in zip(order, probs, strict=True)]


def label_names(spec: str | None, n_classes: int) -> Sequence[str] | None:
    """Class names from ``--labels``: ``fashion-mnist``, ``mnist``, or a comma-separated
    list (None: print indices)."""
    from cnncore import datasets

    if spec is None:
        return None
    key = spec.lower()
    if key in ("fashion-mnist", "fashion"):
        names: Sequence[str] = datasets.FASHION_MNIST_CLASS_NAMES
    elif key in ("mnist", "digits"):
        names = datasets.MNIST_CLASS_NAMES
    else:
        names = [s.strip() for s in spec.split(",")]
    if len(names) != n_classes:
        raise ValueError(
            f"--labels names {len(names)} classes but the model has {n_classes} outputs. "
            f"Received: --labels={spec!r}"
        )
    return names
