"""The spec-record type behind tests/api_specs.py (modelled on PyTorch's OpInfo) and what is
derived from a record: canonical and random calls, error inputs, backward relations.

* :class:`OpSpec` -- one public op: its canonical call (``make``), random valid calls
  (``sample``), a description of its arguments from which the bad-input rows are generated
  (:meth:`OpSpec.error_inputs`), the good-input edge behaviour (NaN/Inf, empty batches), its
  NumPy reference and its backward relations.
* :class:`Backward` -- which function gives the gradient of an op and how to call it.
* :class:`ErrorInput` -- one bad-input row: how to spoil the canonical call, the exception
  type and a regular expression of the argument names the message must contain.
* :class:`Canon` / :class:`Draw` -- the array makers of the canonical call and of random
  calls (``Draw`` is also the fuzzer's source of randomness).

Only public names of cnncore are used: an op is looked up by name in
``cnncore.functional``, then in ``cnncore``, so the library's module layout can change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import cnncore
import cnncore.functional

DTYPES = (np.float32, np.float64)
VE, TE = ValueError, TypeError


def lookup(name: str) -> Callable:
    """The public function ``name``: ``cnncore.functional.<name>``, else ``cnncore.<name>``."""
    fn = getattr(cnncore.functional, name, None)
    return fn if fn is not None else getattr(cnncore, name)


def outputs(result: Any) -> tuple:
    """The result of a call as a tuple of ndarrays / scalars."""
    return result if isinstance(result, tuple) else (result,)


# ------------------------------------------------------------------------------------------
# Array makers
# ------------------------------------------------------------------------------------------


class Canon:
    """Arrays of the canonical call: ``dtype`` data from ``rng``, int64 indices."""

    def __init__(self, rng: np.random.Generator, dtype: Any) -> None:
        self.r = rng
        self.dt = dtype

    def x(
        self, *shape: int, dtype: Any = None, positive: bool = False, unit: bool = False
    ) -> np.ndarray:
        """Standard normal data; ``positive``: |N(0, 1)| + 0.1; ``unit``: U(0.05, 0.95)."""
        if unit:
            a = self.r.uniform(0.05, 0.95, shape)
        else:
            a = self.r.standard_normal(shape)
            if positive:
                a = np.abs(a) + 0.1
        return np.asarray(a, self.dt if dtype is None else dtype)  # 0-d: an array too

    def indices(self, shape: tuple[int, ...], plane: int, unique: bool = False) -> np.ndarray:
        """Integers in ``[0, plane)`` (flat positions in a plane, or class labels); with
        ``unique``, distinct within each (N, C) plane when the plane is large enough."""
        count = int(np.prod(shape[2:])) if len(shape) >= 2 else 0
        if plane <= 0:
            return np.zeros(shape, np.int64)
        if unique and len(shape) >= 2 and plane >= count:
            order = np.argsort(self.r.random((*shape[:2], plane)), axis=-1)
            return order[..., :count].reshape(shape).astype(np.int64)
        return np.asarray(self.r.integers(0, plane, size=shape), np.int64)


class Draw(Canon):
    """Random helpers for one random call (all randomness flows through ``self.r``); the
    data type is drawn from float32/float64 unless given."""

    def __init__(self, r: np.random.Generator, dtype: Any = None) -> None:
        super().__init__(r, DTYPES[int(r.integers(2))] if dtype is None else dtype)

    def choice(self, seq: Any) -> Any:
        return seq[int(self.r.integers(len(seq)))]

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.r.random() < p)

    def dim(self, lo: int = 0, hi: int = 6) -> int:
        """A size in [lo, hi], biased to the edges (lo, lo + 1) and small values."""
        u = self.r.random()
        if u < 0.15:
            return lo
        if u < 0.35:
            return min(lo + 1, hi)
        return int(self.r.integers(lo, hi + 1))

    def indices(self, shape: tuple[int, ...], plane: int, unique: bool = False) -> np.ndarray:
        a = super().indices(shape, plane, unique and self.coin())
        return a.astype(self.choice([np.int64, np.int64, np.int32]))


# ------------------------------------------------------------------------------------------
# The records
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backward:
    """``op`` gives the gradient of a forward op with respect to its arguments ``wrt`` (one
    per output of ``op``; with ``result``, only that output of ``op`` is the gradient).
    ``args(forward_args, grad_output, forward_outputs)`` gives the keyword arguments of the
    call; ``grad_output`` flows back from the forward's output number ``output`` (for a
    scalar output -- a reduced loss -- it is 1)."""

    op: str
    wrt: tuple[str, ...]
    args: Callable[[dict, Any, tuple], dict]
    output: int = 0
    result: int | None = None

    @property
    def fn(self) -> Callable:
        return lookup(self.op)

    def gradients(self, fwd_args: dict, grad_output: Any, fwd_outputs: tuple) -> tuple:
        """The gradients with respect to ``wrt``, in order."""
        grads = outputs(self.fn(**self.args(fwd_args, grad_output, fwd_outputs)))
        return grads if self.result is None else (grads[self.result],)


@dataclass(frozen=True)
class ErrorInput:
    """A bad call: the canonical float64 call (batch 2) spoilt by ``perturb`` raises exactly
    ``exc`` whose message matches ``match`` (the argument names) and contains "Received"."""

    op: str
    id: str
    exc: type
    match: str
    perturb: Callable[[dict], None]


@dataclass(frozen=True)
class OpSpec:
    """One public op.  Adding an op = one of these in tests/api_specs.py."""

    name: str
    # ``make(rng, dtype, n=2, big=False)``: the canonical valid call as keyword arguments; ``n``
    # is the batch size (0: an empty batch), ``big`` scales the sizes so that the kernels
    # split the work over several threads.
    make: Callable[..., dict]
    # ``sample(draw)``: a valid call of random geometry (sizes 0 and 1 included) and random
    # optional arguments, in ``draw.dt``.
    sample: Callable[[Draw], dict]
    # -- the arguments, from which the error inputs are generated -------------------------
    arrays: tuple[str, ...]  # float data arrays
    # "float": the arrays take float32/float64 only; "numeric": any bool/integer/float/complex
    # dtypes that promote to a computable result, as SciPy's (bool with bool, float16,
    # objects, strings, None and ragged lists raise ValueError, as in SciPy)
    array_dtypes: str = "float"
    fixed_ndim: tuple[str, ...] = ()  # arrays whose ndim is fixed
    optional: tuple[str, ...] = ()  # arrays for which None is valid
    index_arrays: tuple[str, ...] = ()  # integer index arrays (argmax positions)
    index_shape_free: bool = False  # any (N, C, h, w) indices shape is valid
    shape_args: tuple[str, ...] = ()  # 4-tuples of sizes (input_shape, ...)
    spatial_shape: bool = False  # grad_output pins the shape's (H, W) down
    params: Mapping[str, str] = field(default_factory=dict)  # name -> kind (see KINDS)
    # Arguments that may all lack their batch axis together (one unbatched sample, as
    # PyTorch allows): name -> batched ndim (a shape argument: its length).  The first one
    # decides; ``ndim - 1`` of it is valid, and the others must follow it.
    unbatched: Mapping[str, int] = field(default_factory=dict)
    # (argument, axis grown by one, names the message may give): mismatched shapes
    mismatch: tuple[tuple[str, int, str], ...] = ()
    # -- good inputs at the edges ---------------------------------------------------------
    batched: tuple[bool, ...] = (True,)  # per output: has the batch dimension
    nan_in: str | None = None  # argument whose NaN must reach the output
    nan_out: tuple[str, ...] = ()  # per output: "nan" (default) or "zero"
    rejects: tuple[str, ...] = ()  # non-finite values outside the domain
    # -- numerics -------------------------------------------------------------------------
    reference: Callable[[dict], Any] | None = None  # call's arguments -> expected outputs
    tol: Mapping[Any, dict] | None = None  # per-dtype tolerances against it
    backward: tuple[Backward, ...] = ()

    @property
    def fn(self) -> Callable:
        return lookup(self.name)

    def call(self, args: dict) -> Any:
        return self.fn(**args)

    def error_inputs(self) -> list[ErrorInput]:
        return _error_inputs(self)


def is_unbatched(spec: OpSpec, args: dict) -> bool:
    """Whether ``args`` is an unbatched call of ``spec`` (its deciding argument lacks the
    batch axis)."""
    if not spec.unbatched:
        return False
    lead, ndim = next(iter(spec.unbatched.items()))
    return np.ndim(args[lead]) == ndim - 1


def drop_batch(spec: OpSpec, args: dict) -> dict:
    """``args`` as an unbatched call: sample 0 of every argument of ``spec.unbatched`` (the
    batch entry dropped from its shape arguments)."""
    out = dict(args)
    for k in spec.unbatched:
        if k in out:
            v = out[k]
            out[k] = tuple(v)[1:] if isinstance(v, (tuple, list)) else np.asarray(v)[0]
    return out


def add_batch(spec: OpSpec, args: dict) -> dict:
    """An unbatched call ``args`` as a batch of one (the inverse of :func:`drop_batch`)."""
    out = dict(args)
    for k in spec.unbatched:
        if k in out:
            v = out[k]
            out[k] = (1, *v) if isinstance(v, (tuple, list)) else np.asarray(v)[None]
    return out


def unbatch_outputs(spec: OpSpec, result: Any) -> Any:
    """The result of a batch of one as that of the unbatched call: sample 0 of every output
    that has the batch axis (``spec.batched``)."""
    flags = spec.batched + (True,) * 8
    if isinstance(result, tuple):
        return tuple(
            r if r is None or not keep else np.asarray(r)[0]
            for r, keep in zip(result, flags, strict=False)
        )
    return np.asarray(result)[0] if flags[0] else result


def same_shape(a: str, b: str) -> tuple[tuple[str, int, str], ...]:
    """The mismatch rows of two arrays that must have the same shape."""
    return ((a, -1, f"{a}|{b}"), (b, 0, f"{a}|{b}"))


def pick(args: dict, *names: str) -> dict:
    """The entries ``names`` of ``args`` that are present."""
    return {k: args[k] for k in names if k in args}


# ------------------------------------------------------------------------------------------
# Error inputs
# ------------------------------------------------------------------------------------------

# Bad values per parameter kind: (value, expected exception).
KINDS = {
    "pos_pair": [
        (0, VE),
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        ((), VE),
        (1.5, TE),
        ("2", TE),
        (True, TE),
        (None, TE),
        ([2, 1.5], TE),
        (np.array([[1, 2]]), VE),
    ],
    "pool_stride": [
        (0, VE),
        (-2, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("2", TE),
        (True, TE),
    ],
    "nonneg_pair": [
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("1", TE),
        (True, TE),
        (None, TE),
    ],
    "conv_padding": [
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        (1.5, TE),
        ("full", VE),
        (None, TE),
        (True, TE),
    ],
    "pos_int": [(0, VE), (-1, VE), (2**40, VE), (1.5, TE), ("2", TE), (True, TE), (None, TE)],
    "int": [(2**70, VE), (1.5, TE), ("1", TE), (True, TE), (None, TE)],
    "real": [("0.1", TE), (None, TE), (True, TE), (1j, TE), ([0.1], TE)],
    # scipy.signal's fillvalue: a number or a one-element array of the result's kind
    "fillvalue": [
        ("0.1", TE),
        (None, TE),
        (True, TE),
        (1j, VE),
        ([], VE),
        ([0.1, 0.2], VE),
        (10**400, VE),
    ],
    "bool": [(1, TE), ("yes", TE), (None, TE), (np.array([True, False]), TE)],
    "mask3": [
        ((True, True), VE),
        ((True, True, True, True), VE),
        ((True, 1, True), TE),
        ((True, None, False), TE),
        (None, TE),
        ("TTT", TE),
        (True, TE),
    ],
    "choice": [("bogus", VE), (None, VE), (3, VE), ("MEAN", VE)],
    "divisor": [(0, VE), (2**40, VE), (1.5, TE), ("2", TE), (True, TE)],
    "adaptive_size": [(-1, VE), ((1, 2, 3), VE), (2**40, VE), (1.5, TE), ("2", TE), (None, TE)],
    "norm": [(0, VE), (-1, VE), (math.inf, VE), (math.nan, VE), ("2", TE), (None, TE), (True, TE)],
    "nonneg_real": [
        (-1e-5, VE),
        (math.inf, VE),
        (math.nan, VE),
        ("1e-5", TE),
        (None, TE),
        (True, TE),
    ],
    "nonzero_real": [(0, VE), (math.inf, VE), (math.nan, VE), ("1", TE), (None, TE), (True, TE)],
    "probability": [(-0.1, VE), (1.5, VE), (math.nan, VE), ("0.5", TE), (None, TE), (True, TE)],
    "rng": [("seed", TE), (1.5, TE), ([1, 2], TE), (-1, VE)],
    "normalized_shape": [
        ((), VE),
        ((1, 2, 3, 4, 5, 6), VE),
        (-1, VE),
        (1.5, TE),
        ("4", TE),
        (None, TE),
        (True, TE),
        ((4, 5.0), TE),
    ],
    "size": [
        (0, VE),
        (-1, VE),
        (2**40, VE),
        ((1, 2, 3), VE),
        ((), VE),
        (1.5, TE),
        ("2", TE),
        (True, TE),
        ([2, 1.5], TE),
    ],
    "scale": [
        (0, VE),
        (-1.0, VE),
        (math.inf, VE),
        (math.nan, VE),
        (10**400, VE),
        ((1.0, 2.0, 3.0), VE),
        ("2", TE),
        (True, TE),
        ((2.0, "1"), TE),
    ],
    "opt_bool": [(1, TE), ("yes", TE), (np.array([True, False]), TE)],
    "pad": [
        ((1, 2, 3), VE),
        (2**40, VE),
        (1.5, TE),
        ("1", TE),
        (None, TE),
        (True, TE),
        ((1, 1.5), TE),
    ],
}

# Array-argument perturbations: name -> (function of the valid array, expected exception).
ARRAY_BAD = {
    "None": (lambda a: None, TE),
    "int64": (lambda a: a.astype(np.int64), TE),
    "bool": (lambda a: a > 0, TE),
    "float16": (lambda a: a.astype(np.float16), TE),
    "complex": (lambda a: a.astype(np.complex128), TE),
    "object": (lambda a: a.astype(object), TE),
    "str": (lambda a: "abc", TE),
    "ragged": (lambda a: [[1.0], [1.0, 2.0]], TE),
}


# ARRAY_BAD perturbations that give a valid call of "numeric" arrays (the other arrays stay
# float64: the result is float64, or complex128)
NUMERIC_OK = ("int64", "bool", "float16", "complex")


def _all_arrays(names: tuple[str, ...], dtype: Any) -> Callable[[dict], None]:
    def perturb(args: dict) -> None:
        for n in names:
            args[n] = np.asarray(args[n]).astype(dtype)

    return perturb


def _set_first(a, value):
    a = a.copy()
    a.reshape(-1)[0] = value
    return a


# Index-array perturbations (``hw``: a position past every plane of the canonical calls).
INDEX_BAD = {
    "None": (lambda a, hw: None, TE),
    "float": (lambda a, hw: a.astype(np.float64), TE),
    "bool": (lambda a, hw: a > 0, TE),
    "object": (lambda a, hw: a.astype(object), TE),
    "str": (lambda a, hw: "idx", TE),
    "shape": (lambda a, hw: a[..., :-1], VE),
    "ndim": (lambda a, hw: a[0], VE),
    "range": (lambda a, hw: _set_first(a, hw), VE),
    "negative": (lambda a, hw: _set_first(a, -1), VE),
    "huge": (lambda a, hw: _set_first(a, 2**62), VE),
    "uint64": (lambda a, hw: _set_first(a.astype(np.uint64), 2**63), VE),
}

# Shape-argument perturbations: (function of the valid tuple, expected exception).
SHAPE_BAD = {
    "None": (lambda s: None, TE),
    "str": (lambda s: "abcd", TE),
    "len3": (lambda s: s[:3], VE),
    "len5": (lambda s: (*s, 1), VE),
    "negative": (lambda s: (s[0], s[1], -s[2], s[3]), VE),
    "float": (lambda s: tuple(float(v) for v in s), TE),
    "0-d": (lambda s: np.array(4), TE),
    "past-2**31": (lambda s: (s[0], s[1], 2**31 + 1, 2**31 + 1), VE),
    "past-2**62": (lambda s: (2**40, 2**40, 2**40, 2**40), VE),
    "N+1": (lambda s: (s[0] + 1, *s[1:]), VE),
    "C+1": (lambda s: (s[0], s[1] + 1, *s[2:]), VE),
}


def grow(a: np.ndarray, axis: int) -> np.ndarray:
    """Ones shaped like ``a`` but one longer along ``axis``."""
    shape = list(np.shape(a))
    shape[axis] += 1
    return np.ones(shape, a.dtype)


def _setter(arg: str, fn: Callable[[Any], Any]) -> Callable[[dict], None]:
    def perturb(args: dict) -> None:
        args[arg] = fn(args.get(arg))  # a parameter may be absent (its default)

    return perturb


def _error_inputs(spec: OpSpec) -> list[ErrorInput]:
    name = spec.name
    out: list[ErrorInput] = []

    def add(id_: str, exc: type, match: str, arg: str, fn: Callable[[Any], Any]) -> None:
        out.append(ErrorInput(name, f"{name}-{arg}-{id_}", exc, match, _setter(arg, fn)))

    numeric = spec.array_dtypes == "numeric"
    for arg in spec.arrays:
        for key, (bad, exc) in ARRAY_BAD.items():
            if key == "None" and arg in spec.optional:
                continue
            if numeric:
                if key in NUMERIC_OK:
                    continue
                exc = VE
            add(key, exc, arg, arg, bad)
        if len(spec.arrays) > 1 and arg != spec.arrays[0] and not numeric:
            add("mixed-width", TE, f"{arg}|{spec.arrays[0]}", arg, lambda a: a.astype(np.float32))
    if numeric:  # every array of a dtype without a result dtype
        names = "|".join(spec.arrays)
        for key, to in (("bool", np.bool_), ("float16", np.float16)):
            out.append(
                ErrorInput(name, f"{name}-all-{key}", VE, names, _all_arrays(spec.arrays, to))
            )
        if arg in spec.fixed_ndim:
            add("ndim+1", VE, arg, arg, lambda a: a[None])
            if arg in spec.unbatched and arg == next(iter(spec.unbatched)):
                add("ndim-2", VE, arg, arg, lambda a: a[0, 0])  # ndim - 1: unbatched, valid
            else:
                add("ndim-1", VE, arg, arg, lambda a: a[0])
    if spec.unbatched:  # every unbatched argument unbatched but one
        lead = next(iter(spec.unbatched))
        for arg in list(spec.unbatched)[1:]:

            def perturb(args: dict, arg: str = arg) -> None:
                args.update({k: v for k, v in drop_batch(spec, args).items() if k != arg})

            out.append(
                ErrorInput(name, f"{name}-{arg}-batched-with-{lead}-unbatched", VE, arg, perturb)
            )
    for arg, axis, names in spec.mismatch:
        add(f"axis{axis}-mismatch", VE, names, arg, lambda a, axis=axis: grow(a, axis))
    for arg in spec.index_arrays:
        for key, (bad, exc) in INDEX_BAD.items():
            if key == "shape" and spec.index_shape_free:
                continue  # the indices give the result its shape
            match = f"{arg}|grad_output" if key in ("shape", "ndim") else arg
            add(key, exc, match, arg, lambda a, bad=bad: bad(a, 10**6))
    for arg in spec.shape_args:
        for key, (bad, exc) in SHAPE_BAD.items():
            match = f"{arg}|grad_output|channels|groups|weight" if key in ("N+1", "C+1") else arg
            add(key, exc, match, arg, bad)
        if spec.spatial_shape:
            add("H+7", VE, f"{arg}|grad_output", arg, lambda s: (s[0], s[1], s[2] + 7, s[3]))
    for arg, kind in spec.params.items():
        match = arg
        if arg == "padding" and kind in ("nonneg_pair", "conv_padding"):
            match = "padding|output"  # huge padding may be caught as an enormous output
        if arg in ("output_size", "norm_type"):
            match = f"{arg}|output"
        for i, (value, exc) in enumerate(KINDS[kind]):
            add(f"{kind}{i}-{value!r:.20}", exc, match, arg, lambda _, value=value: value)
    return out
