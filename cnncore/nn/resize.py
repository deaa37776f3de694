"""Resizing layers: :class:`Upsample`, :class:`PixelShuffle`, :class:`PixelUnshuffle` (thin
layers over :func:`cnncore.interpolate`, :func:`cnncore.pixel_shuffle` and
:func:`cnncore.pixel_unshuffle`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._geometry import interpolate_geometry, interpolate_params, pixel_shuffle_shape
from .._typing import ArrayLike
from .._validation import as_float_array, check_int
from .module import Module, grad_like

__all__ = ["Upsample", "PixelShuffle", "PixelUnshuffle"]


def _listed(value: Any) -> Any:
    """A pair as a JSON list (configs); scalars and None unchanged."""
    return list(value) if isinstance(value, tuple) else value


class Upsample(Module):
    """Resize ``(N, C, H, W)`` inputs (see :func:`cnncore.interpolate`), PyTorch's
    arguments.

    Parameters
    ----------
    size : int or (int, int), optional
    scale_factor : float or (float, float), optional
        Exactly one of ``size`` and ``scale_factor``.
    mode : {'nearest', 'nearest-exact', 'bilinear'}, default 'nearest'
    align_corners : bool, optional
        ``'bilinear'`` only.
    recompute_scale_factor : bool, optional

    Notes
    -----
    ``H_out = size[0]`` or ``floor(H * scale_factor[0])``; likewise ``W_out``.

    See Also
    --------
    cnncore.interpolate, cnncore.interpolate_backward, PixelShuffle
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        scale_factor: float | tuple[float, float] | None = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        params = interpolate_params(
            "Upsample", size, scale_factor, mode, align_corners, recompute_scale_factor
        )
        self.size = params.size
        self.scale_factor = params.scale_factor
        self.mode = params.mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._resize = params
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x, "input", "Upsample")
        y = F.interpolate(
            x, self.size, self.scale_factor, self.mode, self.align_corners,
            self.recompute_scale_factor,
        )  # fmt: skip
        self._shape = x.shape if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_shape")
        if not input_grad:
            return None
        scale = None if self.recompute_scale_factor else self.scale_factor
        return F.interpolate_backward(grad_output, shape, self.mode, self.align_corners, scale)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = input_shape
        return (n, c, *interpolate_geometry("Upsample", (h, w), self._resize).out)

    def get_config(self) -> dict[str, Any]:
        return {
            "size": _listed(self.size),
            "scale_factor": _listed(self.scale_factor),
            "mode": self.mode,
            "align_corners": self.align_corners,
            "recompute_scale_factor": self.recompute_scale_factor,
        }


class _PixelRearrange(Module, register=False):
    """PixelShuffle and PixelUnshuffle: one op forward, the other backward (each is the
    other's inverse); ``factor_name`` is the constructor argument's name."""

    factor_name = ""
    inverse = False  # True: pixel_unshuffle forward

    def __init__(self, factor: int) -> None:
        super().__init__()
        name = type(self).__name__
        setattr(self, self.factor_name, check_int(factor, self.factor_name, name, min_value=1))
        self._shape: tuple[int, ...] | None = None

    @property
    def _factor(self) -> int:
        return getattr(self, self.factor_name)

    def forward(self, x: ArrayLike) -> np.ndarray:
        op = F.pixel_unshuffle if self.inverse else F.pixel_shuffle
        y = op(x, self._factor)
        self._shape = y.shape if self.training else None
        return y

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        shape = self._cached("_shape")
        if not input_grad:
            return None
        g = grad_like(grad_output, shape, type(self).__name__)
        return (F.pixel_shuffle if self.inverse else F.pixel_unshuffle)(g, self._factor)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return pixel_shuffle_shape(
            type(self).__name__,
            tuple(input_shape),
            self._factor,
            self.factor_name,
            self.inverse,
            "input",
        )

    def get_config(self) -> dict[str, Any]:
        return {self.factor_name: self._factor}


class PixelShuffle(_PixelRearrange):
    """``(*, C * r**2, H, W) -> (*, C, H * r, W * r)`` with ``r = upscale_factor`` (see
    :func:`cnncore.pixel_shuffle`); its backward is :func:`cnncore.pixel_unshuffle`."""

    factor_name = "upscale_factor"

    def __init__(self, upscale_factor: int) -> None:
        super().__init__(upscale_factor)


class PixelUnshuffle(_PixelRearrange):
    """``(*, C, H * r, W * r) -> (*, C * r**2, H, W)`` with ``r = downscale_factor`` (see
    :func:`cnncore.pixel_unshuffle`); its backward is :func:`cnncore.pixel_shuffle`."""

    factor_name = "downscale_factor"
    inverse = True

    def __init__(self, downscale_factor: int) -> None:
        super().__init__(downscale_factor)
