"""Argument checks done once per call signature.

A functional op checks its arguments and resolves its geometry on every call -- ~5-10 us of
Python, more than the kernel itself at batch size 1.  The checks depend only on the shapes,
dtypes and parameters (stride, padding, ...), so :func:`memoize_checks` caches the result of
a checking function (which raises on bad arguments and returns what the kernel call needs)
per tuple of arguments: the second call with the same shapes and parameters skips the checks
and gets the same result.

Only *plain* arguments form a key (:func:`call_key`): ints, strs, None, bools and tuples of
ints, strs and None, compared by value **and type** -- ``True`` and ``1.0`` equal ``1`` as
dict keys, and a cached ``stride=1`` must not let ``stride=True`` (which the checks reject)
through, nor a cached ``ceil_mode=False`` let ``ceil_mode=0`` through.  A call
with any other argument (a list, a NumPy integer, a float, an array) runs the checks every
time, so a cached path never accepts what the checks would refuse: whatever a key leaves
out is still checked on each call by the caller (e.g. the arrays' dtypes and contiguity by
:func:`cnncore._validation.as_float_array`).  Failed checks are never cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["is_plain", "call_key", "memoize_checks", "MAX_ENTRIES", "clear_all"]

#: Entries each memoized check keeps (the oldest is dropped beyond this).
MAX_ENTRIES = 256

_F = TypeVar("_F", bound=Callable[..., Any])
_caches: list[dict[Any, Any]] = []


def is_plain(value: Any) -> bool:
    """True for an int, str or None (exact types: not bool, not NumPy scalars) and for a
    tuple of plain values."""
    t = type(value)
    if t is int or t is str or value is None:
        return True
    if t is tuple:
        for v in value:
            if not is_plain(v):
                return False
        return True
    return False


def call_key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The cache key of plain arguments, or None when one is not plain (see
    :func:`is_plain`; bools are plain at the top level only): ``(args, mask)``, where bit
    ``i`` of ``mask`` is set when ``args[i]`` is a bool -- ``True`` alone would equal ``1``
    (a flag argument rejects 1; an int argument rejects True)."""
    has_bool = False
    for value in args:
        t = type(value)
        if t is int or t is str or value is None:
            continue
        if t is tuple:
            for v in value:  # pairs of ints, the common case
                if type(v) is not int and not is_plain(v):
                    return None
            continue
        if t is bool:
            has_bool = True
            continue
        return None
    mask = 0
    if has_bool:
        for i, value in enumerate(args):
            if type(value) is bool:
                mask |= 1 << i
    return args, mask


def memoize_checks(check: _F) -> _F:
    """Decorator: cache ``check(func, *args)`` per ``args`` when they are plain (see the
    module docstring); other calls run ``check`` as they are.

    ``func`` (the public function's name, used in error messages) is not part of the key:
    a check must compute the same result for every ``func``.  The result is shared between
    calls, so it must be immutable (tuples, named tuples, ints) and not None.
    """
    cache: dict[Any, Any] = {}
    _caches.append(cache)

    @functools.wraps(check)
    def cached(func: str, *args: Any) -> Any:
        # the key first: True == 1 and 1.0 == 1 would find the entry of stride=1
        key = call_key(args)
        if key is None:
            return check(func, *args)
        result = cache.get(key)
        if result is None:
            result = check(func, *args)
            if len(cache) >= MAX_ENTRIES:
                try:
                    del cache[next(iter(cache))]
                except (KeyError, RuntimeError, StopIteration):  # another thread was first
                    pass
            cache[key] = result
        return result

    cached.cache = cache  # type: ignore[attr-defined]
    return cached  # type: ignore[return-value]


def clear_all() -> None:
    """Empty every memoized check's cache (tests)."""
    for cache in _caches:
        cache.clear()
