"""Argument checking shared by every public function.

Every check raises a ``TypeError`` or ``ValueError`` whose message names the function, the
argument and the value received, e.g.
``conv2d(): stride must be >= 1 for each dimension. Received: stride=0``.
All size arithmetic is done with Python ints, before any kernel runs.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES

#: Largest value accepted for a kernel size, stride, padding or dilation (keeps every index
#: expression of the kernels far from 64-bit overflow).
MAX_PARAM = 2**31 - 1
#: Largest element count of any array the kernels will create.
MAX_ELEMENTS = 2**62


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(
    value: Any,
    name: str,
    func: str,
    *,
    min_value: int | None = None,
    max_value: int | None = MAX_PARAM,
) -> int:
    """Return ``value`` as a Python int; TypeError for non-integers (bool included)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, np.floating)):
        raise TypeError(f"{func}(): {name} must be an int. Received: {name}={_fmt(value)}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{func}(): {name} must be an int. Received: {name}={_fmt(value)}"
        ) from None
    if min_value is not None and out < min_value:
        raise ValueError(f"{func}(): {name} must be >= {min_value}. Received: {name}={out}")
    if max_value is not None and out > max_value:
        raise ValueError(f"{func}(): {name} must be <= {max_value}. Received: {name}={out}")
    return out


def to_pair(value: Any, name: str, func: str, *, min_value: int = 0) -> tuple[int, int]:
    """Normalize an int or a pair of ints (``stride=2`` -> ``(2, 2)``)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(
            f"{func}(): {name} must be an int or a pair of ints. Received: {name}={_fmt(value)}"
        )
    if isinstance(value, Sequence) or (isinstance(value, np.ndarray) and value.ndim):
        if len(value) != 2:  # before list(): value may be a huge array
            raise ValueError(
                f"{func}(): {name} must be an int or a pair of ints. Received: {name}={_fmt(value)}"
            )
        items = list(value)
    else:
        items = [value, value]
    out = []
    for v in items:
        try:
            if isinstance(v, (bool, np.bool_, float, np.floating)):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise TypeError(
                f"{func}(): {name} must be an int or a pair of ints. Received: {name}={_fmt(value)}"
            ) from None
        if v < min_value:
            raise ValueError(
                f"{func}(): {name} must be >= {min_value} for each dimension. "
                f"Received: {name}={_fmt(value)}"
            )
        if v > MAX_PARAM:
            raise ValueError(
                f"{func}(): {name} must be <= {MAX_PARAM} for each dimension. "
                f"Received: {name}={_fmt(value)}"
            )
        out.append(v)
    return out[0], out[1]


def check_bool(value: Any, name: str, func: str) -> bool:
    """A flag argument: ``bool`` or ``numpy.bool_``; TypeError otherwise (0/1 included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}(): {name} must be a bool. Received: {name}={_fmt(value)}")
    return bool(value)


def as_ndarray(x: Any, name: str, func: str) -> np.ndarray:
    """``x`` itself if it is an ndarray, else ``np.asarray(x)``; TypeError for None and for
    what NumPy cannot convert (ragged lists etc.)."""
    if x is None:
        raise TypeError(f"{func}(): {name} must be an array, not None. Received: {name}=None")
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise TypeError(
            f"{func}(): {name} must be array-like. Received: {name} of type "
            f"{type(x).__name__} ({exc})"
        ) from None


def as_index_array(
    x: Any, name: str, func: str, *, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """Return ``x`` as a C-contiguous int64 ndarray (e.g. max-pool ``indices``).

    Any integer dtype is accepted (converted once); bool, float and other dtypes raise
    TypeError; a shape different from ``shape`` raises ValueError.  Values are not checked
    here -- kernels range-check each index where they use it.
    """
    arr = as_ndarray(x, name, func)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"{func}(): {name} must have an integer dtype (int64). "
            f"Received: {name}.dtype={arr.dtype}"
        )
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(
            f"{func}(): {name} must have shape {tuple(shape)}. "
            f"Received: {name} with shape {tuple(arr.shape)}"
        )
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"{func}(): every entry of {name} must be a flat position in its plane. "
            f"Received: {name} with value {int(arr.max())}"
        )
    if not (arr.flags.c_contiguous and arr.dtype == np.int64):
        check_numel(arr.shape, name, func, 8)
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_real(value: Any, name: str, func: str) -> float:
    """A real scalar (int or float, not bool/complex/str) as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{func}(): {name} must be a real number. Received: {name}={_fmt(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(
            f"{func}(): {name} is out of the range of a float. Received: {name}={_fmt(value)}"
        ) from None


def check_hyperparameter(
    value: Any, name: str, func: str, requirement: str, valid: Callable[[float], bool]
) -> float:
    """A layer's real-valued hyper-parameter (dropout ``p``, BatchNorm ``eps`` and ``momentum``,
    ``negative_slope``) as a float.  Layers treat a non-number like an out-of-range number:
    both raise ValueError saying ``{name} must be {requirement}``."""
    number = None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range
            pass
    if number is None or not valid(number):
        raise ValueError(f"{func}(): {name} must be {requirement}. Received: {name}={_fmt(value)}")
    return number


_PY_KINDS = {"b": "bools", "i": "ints", "u": "ints", "f": "floats", "c": "complex numbers"}


def describe_dtype(x: Any, arr: np.ndarray, name: str) -> str:
    """What a float-only argument received, with the fix: ``x`` as given and ``arr`` as NumPy
    converted it (a Python list of ints is described as such, not as "int64")."""
    if not isinstance(x, (np.ndarray, np.generic)) and arr.dtype.kind in _PY_KINDS:
        kind = type(x).__name__
        what = f"a {kind} of {_PY_KINDS[arr.dtype.kind]}" if arr.ndim else f"a Python {kind}"
        return (
            f"{name} as {what} (NumPy makes it {arr.dtype}); pass "
            f"np.asarray({name}, dtype=np.float32)"
        )
    if arr.dtype.kind == "f" or arr.dtype.kind in "iub":
        hint = f"{name}.astype(np.float32)"
        if arr.dtype == np.uint8:
            hint += " / 255 for images"
        return f"{name}.dtype={arr.dtype}; convert it with {hint}"
    return f"{name}.dtype={arr.dtype}"


def as_float_array(
    x: Any, name: str, func: str, *, ndim: int | None = None, ndim_text: str | None = None
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 ndarray, copying only when needed.

    Integer, bool, complex, object and other float widths raise TypeError (cnncore never
    silently changes the precision of your data); a wrong ``ndim`` raises ValueError.
    """
    if type(x) is np.ndarray:  # the common case, checked in as few steps as possible
        dt = x.dtype
        if (dt is _F32 or dt is _F64) and (ndim is None or x.ndim == ndim) and x.flags.c_contiguous:
            return x
    arr = as_ndarray(x, name, func)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{func}(): {name} must have dtype float32 or float64. "
            f"Received: {describe_dtype(x, arr, name)}"
        )
    if ndim is not None and arr.ndim != ndim:
        what = ndim_text or f"a {ndim}-D array"
        raise ValueError(
            f"{func}(): {name} must be {what}. Received: {name} with shape {tuple(arr.shape)}"
        )
    if arr.flags.c_contiguous:
        return arr
    # A copy is needed (e.g. a zero-stride broadcast view): refuse one larger than memory.
    check_numel(arr.shape, name, func, arr.itemsize)
    # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    return np.ascontiguousarray(arr)


def check_same_dtype(func: str, **arrays: np.ndarray | None) -> np.dtype:
    """All given arrays share one dtype; TypeError naming both otherwise."""
    first_name, first = None, None
    for name, arr in arrays.items():
        if arr is None:
            continue
        if first is None:
            first_name, first = name, arr
        elif arr.dtype != first.dtype:
            raise TypeError(
                f"{func}(): {name} and {first_name} must have the same dtype. "
                f"Received: {first_name}.dtype={first.dtype}, {name}.dtype={arr.dtype}"
            )
    assert first is not None
    return first.dtype


def check_shape(shape: Any, name: str, func: str, ndim: int) -> tuple[int, ...]:
    """A shape argument (``input_shape=...``): a sequence of ``ndim`` non-negative ints."""
    if (
        isinstance(shape, (str, bytes))
        or not isinstance(shape, (Sequence, np.ndarray))
        or (isinstance(shape, np.ndarray) and shape.ndim == 0)
    ):
        raise TypeError(
            f"{func}(): {name} must be a tuple of {ndim} ints. Received: {name}={_fmt(shape)}"
        )
    if len(shape) != ndim:  # before list(): shape may be a huge array
        raise ValueError(
            f"{func}(): {name} must be a tuple of {ndim} ints. Received: {name}={_fmt(shape)}"
        )
    out = []
    for v in list(shape):
        try:
            if isinstance(v, (bool, np.bool_, float, np.floating)):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise TypeError(
                f"{func}(): {name} must be a tuple of {ndim} ints. Received: {name}={_fmt(shape)}"
            ) from None
        if v < 0:
            raise ValueError(
                f"{func}(): {name} must not contain negative sizes. Received: {name}={_fmt(shape)}"
            )
        out.append(v)
    check_numel(tuple(out), name, func)
    return tuple(out)


def check_input_shape(
    shape: Any,
    func: str,
    ndims: tuple[int, ...],
    *,
    dim: int = 1,
    size: int | None = None,
    what: str = "channels",
) -> tuple[Any, ...]:
    """A layer's input shape for ``output_shape``: a tuple of ``ndims`` entries (the batch
    entry may be None, as in graph models), and ``shape[dim] == size`` when ``size`` is
    given.  ValueError naming the layer, what it expects and the received shape."""
    shape = tuple(shape)
    if len(shape) not in ndims or (size is not None and shape[dim] != size):
        dims = " or ".join(f"{d}-D" for d in ndims)
        need = "" if size is None else f" with {size} {what} in dimension {dim}"
        raise ValueError(f"{func}(): expected a {dims} input{need}. Received: input shape {shape}")
    return shape


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


_PHYS_MEM = _physical_memory()


def check_numel(shape: tuple[int, ...], name: str, func: str, itemsize: int = 8) -> int:
    """Element count of ``shape``; ValueError if it overflows 64 bits or cannot fit in RAM."""
    n = math.prod(shape)
    if (
        type(n) is int
        and 0 < n <= MAX_ELEMENTS
        and n * itemsize <= (_PHYS_MEM if _PHYS_MEM is not None else MAX_ELEMENTS)
    ):
        return n  # no zero dimension and within memory: every check below passes
    n = 1
    nonzero = 1  # NumPy rejects a shape whose non-zero dimensions overflow, even if empty
    for s in shape:
        n *= int(s)
        nonzero *= max(int(s), 1)
    # NumPy also refuses a shape whose non-zero dimensions times the item size pass 2**63 - 1
    # bytes; a non-empty one of those is past any memory and reported as such below
    numpy_overflow = nonzero * itemsize > 2**63 - 1 and (n == 0 or _PHYS_MEM is None)
    if n > MAX_ELEMENTS or nonzero > MAX_ELEMENTS or numpy_overflow:
        raise ValueError(
            f"{func}(): {name} has {max(n, nonzero)} elements (non-zero dimensions multiplied), "
            f"which overflows 64-bit index arithmetic. Received: {name}={tuple(shape)}"
        )
    if _PHYS_MEM is not None and n * itemsize > _PHYS_MEM:
        raise ValueError(
            f"{func}(): {name} would need {n * itemsize / 2**30:.1f} GiB, more than this "
            f"machine's {_PHYS_MEM / 2**30:.1f} GiB of memory. Received: {name}={tuple(shape)}"
        )
    return n


def check_choice(value: Any, name: str, func: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"{func}(): {name} must be one of {options}. Received: {name}={_fmt(value)}"
        )
    return value
