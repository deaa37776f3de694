"""Weight initializers (in place, seeded), following ``torch.nn.init``.

Every initializer takes ``rng``: a :class:`numpy.random.Generator`, an int seed, or None for
the module-wide generator that :func:`manual_seed` resets. Values are drawn in the array's
own dtype.
"""

from __future__ import annotations

import math

import numpy as np

from .._typing import RNGLike
from .._validation import as_generator

__all__ = [
    "manual_seed",
    "get_rng",
    "calculate_gain",
    "fan_in_and_fan_out",
    "uniform_",
    "normal_",
    "zeros_",
    "ones_",
    "constant_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "lecun_uniform_",
    "lecun_normal_",
    "he_uniform_",
    "he_normal_",
    "glorot_uniform_",
    "glorot_normal_",
    "default_conv_linear_init_",
]

_global_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed the generator layers use when constructed without ``rng=`` (and Dropout)."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def get_rng(rng: RNGLike = None) -> np.random.Generator:
    """``rng`` as a Generator: a Generator is used as is, an int seeds a new one, None gives
    the module-wide generator (see :func:`manual_seed`)."""
    return as_generator(rng, "get_rng", lambda: _global_rng)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``)."""
    linear = (
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    )
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain(): unsupported nonlinearity. Received: {nonlinearity!r}")


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """``fan_in = shape[1] * prod(shape[2:])``, ``fan_out = shape[0] * prod(shape[2:])``."""
    if len(shape) < 2:
        raise ValueError(
            f"fan in/out need an array with at least 2 dimensions. Received: shape={shape}"
        )
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out'. Received: mode={mode!r}")


def uniform_(array: np.ndarray, a: float = 0.0, b: float = 1.0, rng: RNGLike = None) -> np.ndarray:
    """Fill ``array`` with U(a, b)."""
    gen = get_rng(rng)
    u = (
        gen.random(array.shape, dtype=array.dtype)
        if array.dtype == np.float32
        else gen.random(array.shape)
    )
    array[...] = a + (b - a) * u
    return array


def normal_(
    array: np.ndarray, mean: float = 0.0, std: float = 1.0, rng: RNGLike = None
) -> np.ndarray:
    """Fill ``array`` with N(mean, std^2)."""
    gen = get_rng(rng)
    z = (
        gen.standard_normal(array.shape, dtype=array.dtype)
        if array.dtype == np.float32
        else gen.standard_normal(array.shape)
    )
    array[...] = mean + std * z
    return array


def zeros_(array: np.ndarray) -> np.ndarray:
    array[...] = 0
    return array


def ones_(array: np.ndarray) -> np.ndarray:
    array[...] = 1
    return array


def constant_(array: np.ndarray, value: float) -> np.ndarray:
    array[...] = value
    return array


def kaiming_uniform_(
    array: np.ndarray,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    rng: RNGLike = None,
) -> np.ndarray:
    """He uniform: U(-b, b) with ``b = gain * sqrt(3 / fan)``."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(array.shape, mode))
    return uniform_(array, -bound, bound, rng)


def kaiming_normal_(
    array: np.ndarray,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    rng: RNGLike = None,
) -> np.ndarray:
    """He normal: N(0, std^2) with ``std = gain / sqrt(fan)``."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(array.shape, mode))
    return normal_(array, 0.0, std, rng)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0, rng: RNGLike = None) -> np.ndarray:
    """Glorot uniform: U(-b, b) with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(array.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, rng)


def xavier_normal_(array: np.ndarray, gain: float = 1.0, rng: RNGLike = None) -> np.ndarray:
    """Glorot normal: N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_fan_out(array.shape)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def lecun_uniform_(array: np.ndarray, rng: RNGLike = None) -> np.ndarray:
    """LeCun uniform: U(-b, b) with ``b = sqrt(3 / fan_in)``."""
    return kaiming_uniform_(array, mode="fan_in", nonlinearity="linear", rng=rng)


def lecun_normal_(array: np.ndarray, rng: RNGLike = None) -> np.ndarray:
    """LeCun normal: N(0, 1 / fan_in)."""
    return kaiming_normal_(array, mode="fan_in", nonlinearity="linear", rng=rng)


def he_uniform_(array: np.ndarray, rng: RNGLike = None) -> np.ndarray:
    """He (Kaiming) uniform for ReLU networks."""
    return kaiming_uniform_(array, mode="fan_in", nonlinearity="relu", rng=rng)


def he_normal_(array: np.ndarray, rng: RNGLike = None) -> np.ndarray:
    """He (Kaiming) normal for ReLU networks."""
    return kaiming_normal_(array, mode="fan_in", nonlinearity="relu", rng=rng)


glorot_uniform_ = xavier_uniform_
glorot_normal_ = xavier_normal_


def default_conv_linear_init_(
    weight: np.ndarray, bias: np.ndarray | None, rng: RNGLike = None
) -> None:
    """PyTorch's default for Conv2d/Linear: kaiming-uniform with ``a = sqrt(5)`` (that is
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) for the weight, the same bound for the bias."""
    gen = get_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=gen)
    if bias is not None:
        fan_in, _ = fan_in_and_fan_out(weight.shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, gen)
