"""Padding: pad2d and its gradient.

See :mod:`cnncore.functional` for the conventions every op follows.
"""

from __future__ import annotations

import numpy as np

from .._config import get_num_threads
from .._geometry import (
    PAD_MODE_CODES,
    PAD_MODES,
    pad2d_geometry,
    pad2d_sides,
)
from .._typing import ArrayLike, Padding
from .._validation import (
    accepts_unbatched,
    as_float_array,
    check_choice,
    check_numel,
    check_real,
)
from . import _pad
from ._common import nchw_result

__all__ = [
    "pad2d",
    "pad2d_backward",
]


@accepts_unbatched({"x": "(N, C, H, W)"})
def pad2d(x: ArrayLike, padding: Padding, mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """Pad the last two (spatial) axes of a batch of images (or of one unbatched image).

    Same semantics as :func:`torch.nn.functional.pad` on an NCHW input with a 4-element pad.

    Parameters
    ----------
    x : array_like of shape (N, C, H, W) or (C, H, W)
    padding : int, (int, int) or (int, int, int, int)
        An int pads all four sides; ``(pad_h, pad_w)`` pads top and bottom by ``pad_h`` and
        left and right by ``pad_w``; a 4-tuple is ``(left, right, top, bottom)`` -- the order
        of ``torch.nn.functional.pad``.  Negative values crop (``'constant'`` only).
    mode : {'constant', 'replicate', 'reflect', 'circular'}, default 'constant'
        ``'replicate'`` repeats the edge, ``'reflect'`` mirrors without repeating the edge
        (each pad must be smaller than its axis), ``'circular'`` wraps around (each pad at
        most its axis).
    value : float, default 0.0
        Fill value of ``'constant'`` mode (other modes take no value).

    Returns
    -------
    y : ndarray of shape (N, C, H + top + bottom, W + left + right)
        Without ``N`` for an unbatched ``x``.

    Notes
    -----
    Negative padding is supported for ``'constant'``: it crops, as in PyTorch, and the
    negative pads of an axis may remove at most the whole axis.  It is rejected with
    ValueError for the other modes, where PyTorch's crop-then-pad is rarely intended.
    ``'replicate'`` and ``'reflect'`` need a non-empty input plane.

    See Also
    --------
    pad2d_backward

    Examples
    --------
    >>> import numpy as np, cnncore
    >>> x = np.arange(3.0).reshape(1, 1, 1, 3)
    >>> cnncore.pad2d(x, (2, 1, 0, 0), mode="reflect")[0, 0]
    array([[2., 1., 0., 1., 2., 1.]])
    """
    func = "pad2d"
    x = as_float_array(x, "x", func, ndim=4, ndim_text="a 4-D array (N, C, H, W)")
    h, w = x.shape[2:]
    geo = pad2d_geometry(func, (h, w), padding, mode)
    value = check_real(value, "value", func)
    if mode != "constant" and value != 0:
        raise ValueError(
            f"{func}(): mode={mode!r} takes no fill value (only 'constant' does). "
            f"Received: value={value!r}"
        )
    y = nchw_result(func, x, geo.out)
    _pad.pad2d_forward(x, y, geo.left, geo.top, PAD_MODE_CODES[mode], value, get_num_threads())
    return y


@accepts_unbatched({"grad_output": "(N, C, H_out, W_out)"})
def pad2d_backward(grad_output: ArrayLike, padding: Padding, mode: str = "constant") -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like of shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Gradient with respect to the padded output.
    padding, mode
        As in the forward call; the input size is ``H_out - top - bottom`` by
        ``W_out - left - right``.

    Returns
    -------
    grad_x : ndarray of shape (N, C, H, W) or (C, H, W)
        The central part of ``grad_output``, plus (``'replicate'``, ``'reflect'``,
        ``'circular'``) the gradients of the padded border added to the input positions they
        were copied from.  With negative (cropping) padding, cropped positions get 0.

    See Also
    --------
    pad2d
    """
    func = "pad2d_backward"
    grad_output = as_float_array(
        grad_output, "grad_output", func, ndim=4, ndim_text="a 4-D array (N, C, H_out, W_out)"
    )
    n, c, ho, wo = grad_output.shape
    check_choice(mode, "mode", func, PAD_MODES)
    left, right, top, bottom = pad2d_sides(func, padding)
    h, w = ho - top - bottom, wo - left - right
    if h < 0 or w < 0:
        raise ValueError(
            f"{func}(): grad_output is too small for this padding: the input size would be "
            f"{(h, w)}. Received: grad_output with shape {grad_output.shape}, "
            f"padding={padding!r}"
        )
    geo = pad2d_geometry(func, (h, w), padding, mode, name="the input")
    if geo.out != (ho, wo):  # pragma: no cover -- follows from the arithmetic above
        raise ValueError(f"{func}(): inconsistent padding. Received: padding={padding!r}")
    check_numel((n, c, h, w), "output", func, grad_output.itemsize)
    dx = np.empty((n, c, h, w), dtype=grad_output.dtype)
    _pad.pad2d_backward(grad_output, dx, geo.left, geo.top, PAD_MODE_CODES[mode], get_num_threads())
    return dx
