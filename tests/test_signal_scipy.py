"""SciPy's own tests of ``convolve2d`` / ``correlate2d`` run against cnncore.

The test classes ``TestConvolve2d`` and ``TestCorrelate2d`` are imported, unmodified, from the
installed SciPy's test suite (``scipy/signal/tests/test_signaltools.py``, BSD-3-Clause,
Copyright (c) 2001-2002 Enthought, Inc. and 2003-2024 SciPy Developers); SciPy ships its
tests in its wheels.  Every test runs with ``scipy.signal.convolve2d`` / ``correlate2d`` (and
the names test_signaltools imported from ``scipy.signal``) monkeypatched onto cnncore's
functions; the references the tests compare with (``np.convolve``, ``np.correlate``,
``scipy.signal.convolve`` / ``correlate``, ``scipy.ndimage.convolve``) stay SciPy's and
NumPy's own -- none of them calls the 2-D functions.  A test parametrized with SciPy's
function objects (``test_same_with_boundary``: ``func`` is bound when SciPy's module is
imported) gets cnncore's function in their place.

The ``xp`` fixture of SciPy's conftest gives NumPy here (SciPy's default backend; its array
API backends are not the point).  Skipped, with the reason:

* ``TestConvolve2d::test_large_array`` unless ``CNNCORE_SLOW_TESTS=1`` (SciPy marks it slow):
  a 2**31-byte int64 image (gh-10761, index overflow) that cnncore computes through float64
  buffers, 8.5 GB at its peak (it passes, in 33 s here) -- too much for the default run on a
  shared machine.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

import cnncore

scipy_signal = pytest.importorskip("scipy.signal")
T = pytest.importorskip("scipy.signal.tests.test_signaltools")

_SCIPY_CONVOLVE2D, _SCIPY_CORRELATE2D = scipy_signal.convolve2d, scipy_signal.correlate2d
_CNNCORE = {_SCIPY_CONVOLVE2D: cnncore.convolve2d, _SCIPY_CORRELATE2D: cnncore.correlate2d}


@pytest.fixture
def xp():
    """SciPy's ``xp`` fixture with its default backend: NumPy (as its array namespace)."""
    from scipy._lib._array_api import array_namespace

    return array_namespace(np.empty(0))


@pytest.fixture(autouse=True)
def _scipy_runs_cnncore(monkeypatch):
    for module in (T, scipy_signal):
        monkeypatch.setattr(module, "convolve2d", cnncore.convolve2d)
        monkeypatch.setattr(module, "correlate2d", cnncore.correlate2d)


def _on_cnncore(test):
    """``test`` with SciPy's function objects among its arguments replaced by cnncore's
    (``functools.wraps`` keeps its signature and its marks, parametrizations included)."""

    @functools.wraps(test)
    def run(self, *args, **kwargs):
        args = [_CNNCORE.get(a, a) if callable(a) else a for a in args]
        kwargs = {k: _CNNCORE.get(v, v) if callable(v) else v for k, v in kwargs.items()}
        return test(self, *args, **kwargs)

    return run


def _port(cls: type) -> type:
    """A subclass of SciPy's test class whose every test runs on cnncore's functions."""
    body = {name: _on_cnncore(getattr(cls, name)) for name in dir(cls) if name.startswith("test_")}
    body["__doc__"] = f"SciPy's {cls.__name__}, run against cnncore."
    return type(cls.__name__, (cls,), body)


TestConvolve2d = _port(T.TestConvolve2d)
TestCorrelate2d = _port(T.TestCorrelate2d)

TestConvolve2d.test_large_array = pytest.mark.skipif(
    os.environ.get("CNNCORE_SLOW_TESTS") != "1",
    reason="SciPy marks it slow; 8.5 GB peak through float64 buffers (CNNCORE_SLOW_TESTS=1)",
)(TestConvolve2d.test_large_array)


def test_the_ported_classes_run_cnncore():
    """The monkeypatching reaches the tests: a SciPy test run here calls cnncore (a guard
    against SciPy renaming or re-importing the functions)."""
    calls = []
    real = cnncore.signal._correlate_or_convolve

    def spy(*args):
        calls.append(args[0])
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cnncore.signal, "_correlate_or_convolve", spy)
        for module in (T, scipy_signal):
            mp.setattr(module, "convolve2d", cnncore.convolve2d)
            mp.setattr(module, "correlate2d", cnncore.correlate2d)
        TestConvolve2d().test_2d_arrays(np)
        expected = [[43.0, 44.0, 42.0, 39.0]]
        TestConvolve2d().test_same_with_boundary(
            func=_SCIPY_CORRELATE2D, boundary="wrap", expected=expected, xp=np
        )
        TestCorrelate2d().test_complex_input(np)
    assert calls == ["convolve2d", "correlate2d"] + ["correlate2d"] * 3
