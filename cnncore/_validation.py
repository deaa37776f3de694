"""Argument checking shared by every public function.

Every check raises a ``TypeError`` or ``ValueError`` whose message names the function, the
argument and the value received, e.g.
``conv2d(): stride must be >= 1 for each dimension. Received: stride=0``.
All size arithmetic is done with Python ints, before any kernel runs.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

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


def as_generator(
    rng: Any, func: str, default: Callable[[], np.random.Generator]
) -> np.random.Generator:
    """``rng`` as a NumPy Generator: a Generator is used as is, a non-negative int seeds a
    new one, None gives ``default()``; anything else is a TypeError naming ``rng``."""
    if rng is None:
        return default()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(
                f"{func}(): rng must be a non-negative int seed. Received: rng={rng!r}"
            )
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{func}(): rng must be a numpy Generator, an int seed or None. Received: rng={rng!r}"
    )


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


def float_operands(
    func: str,
    x: Any,
    weight: Any,
    bias: Any,
    *,
    w_ndim: int,
    w_text: str,
    x_ndim: int | None = None,
    x_text: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.dtype]:
    """``x``, ``weight`` and ``bias`` (or None) of a layer-style op as ``func`` takes them:
    float arrays of one dtype (``x`` and ``weight`` of the given ranks), returned with that
    dtype."""
    x = as_float_array(x, "x", func, ndim=x_ndim, ndim_text=x_text)
    weight = as_float_array(weight, "weight", func, ndim=w_ndim, ndim_text=w_text)
    if bias is not None:
        bias = as_float_array(bias, "bias", func)
    dtype = x.dtype
    if weight.dtype is not dtype or (bias is not None and bias.dtype is not dtype):
        dtype = check_same_dtype(func, x=x, weight=weight, bias=bias)
    return x, weight, bias, dtype


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


# --------------------------------------------------------------------------------------------
# Unbatched inputs: ``(C, H, W)`` where ``(N, C, H, W)`` is expected, as PyTorch accepts them
# --------------------------------------------------------------------------------------------

_FuncT = TypeVar("_FuncT", bound=Callable[..., Any])
_BATCH_STATE = threading.local()


class batch_required:  # noqa: N801 (a context manager, used like a function)
    """Within this block (in this thread), the ops and layers that accept an unbatched
    ``(C, H, W)`` input refuse it: ``fit``, ``evaluate`` and ``predict`` train and score
    models on batches, where a 3-D array is a mistake (e.g. a missing channel axis).  A
    class rather than a generator: entered on every batch-1 ``predict``, where a
    generator's context manager costs a microsecond more."""

    __slots__ = ("_depth",)

    def __enter__(self) -> None:
        self._depth = getattr(_BATCH_STATE, "depth", 0)
        _BATCH_STATE.depth = self._depth + 1

    def __exit__(self, *exc: object) -> None:
        _BATCH_STATE.depth = self._depth


def _unbatched_text(text: str) -> str:
    """``"(N, C, H, W)"`` -> ``"(C, H, W)"``: a batched shape text without its batch entry."""
    return "(" + text[1:-1].split(", ", 1)[1] + ")"


def _ndim_of(text: str) -> int:
    return text.count(",") + 1


def add_batch_axis(x: Any, name: str, func: str, shape: str) -> tuple[np.ndarray, bool]:
    """``(x as a float array with its batch axis, whether it had none)``: ``x`` as
    :func:`as_float_array` gives it, of the batched ``shape`` (a text such as
    ``"(N, C, H, W)"``) or the same shape without its batch entry, which gets a batch axis
    of size 1 (a view, no copy).  ValueError naming both shapes for any other ``ndim``, and
    for an unbatched ``x`` inside :func:`batch_required`."""
    arr = as_float_array(x, name, func)
    full = _ndim_of(shape)
    if arr.ndim == full:
        return arr, False
    single = _unbatched_text(shape)
    if arr.ndim != full - 1:
        raise ValueError(
            f"{func}(): {name} must be a {full}-D array {shape} or a {full - 1}-D array "
            f"{single} (one unbatched sample). Received: {name} with shape {arr.shape}"
        )
    if getattr(_BATCH_STATE, "depth", 0):
        raise ValueError(
            f"{func}(): {name} must be a batch {shape} here: fit, evaluate and predict run on "
            f"batches, whose first axis is the sample axis (not one unbatched {single}). "
            f"Received: {name} with shape {arr.shape}"
        )
    return arr[None], True


def accepts_unbatched(
    arrays: Mapping[str, str],
    *,
    indices: Sequence[str] = (),
    shapes: Mapping[str, str] | None = None,
    batched_outputs: bool | tuple[bool, ...] = True,
) -> Callable[[_FuncT], _FuncT]:
    """Decorator of an op on batches that lets it take one unbatched sample, as PyTorch's
    ops do: the first of ``arrays`` (argument name -> batched shape text, e.g. ``{"x":
    "(N, C_in, H_in, W_in)"}``) decides.  When it lacks its batch axis, every array of
    ``arrays`` and ``indices`` (integer arrays of the first one's ndim) must lack it too and
    gets a batch axis of size 1 (a view), every shape argument of ``shapes`` (name -> text)
    must have one entry less and gets a leading 1, and the batch axis is removed again from
    the results (``batched_outputs``: True for every array of the result, or one flag per
    entry of a tuple result).  A batched call goes straight to the op; the op's own checks
    then apply unchanged.  The wrapper lists its unbatched arguments in
    ``__unbatched__`` (name -> batched ndim)."""
    shapes = dict(shapes or {})
    lead, lead_shape = next(iter(arrays.items()))
    full = _ndim_of(lead_shape)

    def decorate(fn: _FuncT) -> _FuncT:
        func = fn.__name__
        sig = inspect.signature(fn)
        params = list(sig.parameters)
        if params[0] != lead or not set(arrays) | set(indices) | set(shapes) <= set(params):
            raise TypeError(f"accepts_unbatched: bad argument names for {func}")  # pragma: no cover

        def unbatched_call(args: tuple, kwargs: dict) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # Python's own message for a bad call
            a = bound.arguments
            x, unbatched = add_batch_axis(a.get(lead), lead, func, lead_shape)
            a[lead] = x
            if not unbatched:
                return fn(*bound.args, **bound.kwargs)
            why = f"as {lead} is unbatched {_unbatched_text(lead_shape)}"
            for name, text in list(arrays.items())[1:]:
                if name in a:
                    v = as_float_array(a[name], name, func)
                    if v.ndim != _ndim_of(text) - 1:
                        raise ValueError(
                            f"{func}(): {name} must be a {_ndim_of(text) - 1}-D array "
                            f"{_unbatched_text(text)} {why}. Received: {name} with shape "
                            f"{v.shape}"
                        )
                    a[name] = v[None]
            for name in indices:
                if name in a:
                    v = as_index_array(a[name], name, func)
                    if v.ndim != full - 1:
                        raise ValueError(
                            f"{func}(): {name} must be a {full - 1}-D array {why}. Received: "
                            f"{name} with shape {v.shape}"
                        )
                    a[name] = v[None]
            for name, text in shapes.items():
                if name in a:
                    n = _ndim_of(text) - 1
                    s = a[name]
                    if isinstance(s, (Sequence, np.ndarray)) and np.ndim(s) == 1 and len(s) != n:
                        raise ValueError(
                            f"{func}(): {name} must be a tuple of {n} ints "
                            f"{_unbatched_text(text)} {why}. Received: {name}={_fmt(s)}"
                        )
                    a[name] = (1, *check_shape(s, name, func, n))
            try:
                result = fn(*bound.args, **bound.kwargs)
            except (ValueError, TypeError) as exc:
                if type(exc) not in (ValueError, TypeError):
                    raise
                note = (
                    f"{exc} [{lead} was unbatched: the shapes above include the batch axis of "
                    f"size 1 added to it]"
                )
                raise type(exc)(note).with_traceback(exc.__traceback__) from None
            if isinstance(result, tuple):
                flags = (
                    batched_outputs
                    if isinstance(batched_outputs, tuple)
                    else (batched_outputs,) * len(result)
                )
                return tuple(
                    r[0] if keep and isinstance(r, np.ndarray) else r
                    for r, keep in zip(result, flags, strict=True)
                )
            flag = batched_outputs if isinstance(batched_outputs, bool) else batched_outputs[0]
            return result[0] if flag and isinstance(result, np.ndarray) else result

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            x = args[0] if args else kwargs.get(lead)
            if type(x) is np.ndarray and x.ndim == full:  # a batch: nothing to do
                return fn(*args, **kwargs)
            return unbatched_call(args, kwargs)

        wrapper.__unbatched__ = {  # type: ignore[attr-defined]
            **{k: _ndim_of(v) for k, v in arrays.items()},
            **{k: full for k in indices},
            **{k: _ndim_of(v) for k, v in shapes.items()},
        }
        return wrapper  # type: ignore[return-value]

    return decorate
