"""Tests generated from the spec records of tests/api_specs.py, one per public op:

* every op has exactly one record, and every record's sample is a valid call;
* every record's samples (random geometry, float32 and float64) and canonical call agree
  with its NumPy reference, within the per-dtype tolerances of conftest.py;
* every backward relation (the ``*_backward`` function, or ``return_grad=True``, paired with
  a forward op) agrees with central finite differences of the forward in float64, batched
  and, where the op takes one, on an unbatched sample;
* an unbatched call gives bit for bit the results of the same sample as a batch of one.
"""

from __future__ import annotations

import copy
import zlib

import numpy as np
import pytest
from api_specs import BY_NAME, SPECS
from conftest import fd_grad, tol
from opspec import DTYPES, Draw, drop_batch, outputs, unbatch_outputs

import cnncore

SAMPLES = 6  # random non-empty samples per op and dtype against the reference
VALID_SAMPLES = 60  # random samples per op and dtype that must be accepted
FD_TOL = dict(rtol=1e-3, atol=1e-5)


def _draw(spec, i, dtype):
    return Draw(np.random.default_rng([zlib.crc32(spec.name.encode()), i]), dtype)


def test_every_public_op_has_exactly_one_record():
    assert [s.name for s in SPECS] == list(BY_NAME)
    assert set(BY_NAME) == set(cnncore.functional.__all__) | {"correlate2d", "convolve2d"}
    for spec in SPECS:
        assert callable(spec.fn)
        for bw in spec.backward:
            assert callable(bw.fn) and set(bw.wrt) <= set(spec.arrays)
        assert set(spec.nan_out) <= {"nan", "zero"}
        assert set(spec.rejects) <= {"nan", "inf", "-inf"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_samples_are_valid_calls(spec, dtype):
    """The random calls the fuzzer mutates are valid before the mutation: each returns
    results of the sample's dtype."""
    for i in range(VALID_SAMPLES):
        args = spec.sample(_draw(spec, i, dtype))
        with np.errstate(all="ignore"):
            result = outputs(spec.call(args))
        for r in result:
            if r is not None and np.asarray(r).dtype.kind == "f":
                assert np.asarray(r).dtype == dtype, (i, args)


def _compare(expected, got, dtype, spec, what):
    expected = outputs(expected)
    assert len(expected) <= len(got), what
    t = (spec.tol or {}).get(dtype, tol(dtype))
    for k, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e is None:
            assert g is None, (what, k)
            continue
        g = np.asarray(g)
        assert g.shape == np.shape(e), (what, k, g.shape, np.shape(e))
        if g.dtype.kind in "iu":
            np.testing.assert_array_equal(g, e, err_msg=f"{what}, output {k}")
        else:
            assert g.dtype == dtype, (what, k)
            np.testing.assert_allclose(g, e, err_msg=f"{what}, output {k}", **t)


def _nonempty_samples(spec, dtype):
    """The first SAMPLES samples without an empty array (the references are textbook loops;
    empty inputs are test_bad_input's and the fuzzer's business)."""
    out = []
    for i in range(20 * SAMPLES):
        args = spec.sample(_draw(spec, i, dtype))
        if all(np.size(v) for v in args.values() if isinstance(v, np.ndarray)):
            out.append((f"sample {i}", args))
            if len(out) == SAMPLES:
                break
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.reference], ids=lambda s: s.name)
def test_samples_match_reference(spec, dtype):
    calls = [("canonical", spec.make(np.random.default_rng(1), dtype, n=2))]
    calls += _nonempty_samples(spec, dtype)
    assert len(calls) == SAMPLES + 1
    for what, args in calls:
        with np.errstate(all="ignore"):
            expected = spec.reference(copy.deepcopy(args))  # before any out= overwrites
            got = outputs(spec.call(args))
        _compare(expected, got, dtype, spec, what)


def _fd_cases():
    return [
        pytest.param(spec, bw, unbatched, id=f"{spec.name}-{bw.op}-{'-'.join(bw.wrt)}{tag}")
        for spec in SPECS
        for bw in spec.backward
        for unbatched, tag in ((False, ""), (True, "-unbatched"))
        if spec.unbatched or not unbatched
    ]


@pytest.mark.parametrize("spec, bw, unbatched", _fd_cases())
def test_backward_matches_finite_differences(spec, bw, unbatched):
    """d sum(output * g) / d argument, analytic (the backward relation) against central
    differences of the forward, in float64 on the canonical call with a batch of one (or
    its single sample unbatched, where the op takes one)."""
    rng = np.random.default_rng(3)
    args = spec.make(rng, np.float64, n=1)
    if unbatched:
        args = drop_batch(spec, args)
    out = outputs(spec.call(args))
    y = np.asarray(out[bw.output])
    g = rng.standard_normal(y.shape) if y.ndim else np.float64(1.0)
    analytic = bw.gradients(args, g, out)
    assert len(analytic) == len(bw.wrt)
    for name, grad in zip(bw.wrt, analytic, strict=True):
        a = args[name]
        assert isinstance(a, np.ndarray) and a.dtype == np.float64
        numeric = fd_grad(
            lambda: float(np.sum(np.asarray(outputs(spec.call(args))[bw.output]) * g)), a
        )
        assert np.asarray(grad).shape == a.shape, name
        np.testing.assert_allclose(grad, numeric, err_msg=name, **FD_TOL)


def test_unbatched_arguments_are_those_of_the_records():
    """Each op's unbatched arguments (its ``accepts_unbatched`` decorator) are those its
    record says (and so those the bad-input rows and the unbatched samples use)."""
    for spec in SPECS:
        assert dict(getattr(spec.fn, "__unbatched__", {})) == dict(spec.unbatched), spec.name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", [s for s in SPECS if s.unbatched], ids=lambda s: s.name)
def test_unbatched_call_is_a_batch_of_one(spec, dtype):
    """(C, H, W) where (N, C, H, W) is expected -- PyTorch's unbatched inputs: the results of
    the batch of one without its batch axis, bit for bit (the same kernels on a view), for
    the canonical call and random samples."""
    calls = [spec.make(np.random.default_rng(5), dtype, n=1)]
    calls += [spec.sample(_draw(spec, 1000 + i, dtype)) for i in range(20)]
    checked = 0
    for args in calls:
        lead = next(iter(spec.unbatched))
        if np.ndim(args[lead]) != spec.unbatched[lead] or np.shape(args[lead])[0] != 1:
            continue  # (a sample that is already unbatched, or not a batch of one)
        with np.errstate(all="ignore"):
            expected = unbatch_outputs(spec, spec.call(copy.deepcopy(args)))
            got = spec.call(drop_batch(spec, args))
        for e, g in zip(outputs(expected), outputs(got), strict=True):
            if e is None:
                assert g is None
                continue
            g = np.asarray(g)
            assert g.shape == np.shape(e) and g.dtype == np.asarray(e).dtype
            assert g.tobytes() == np.asarray(e).tobytes()
        checked += 1
    assert checked >= 1
