"""Generate the float32 polynomials of cnncore's vectorized gelu and softplus (src/_vmath.pxd).

* ``cnn__phi_tail_scaledf``: ``Phi(-|x|) = 0.5 t R(t) exp(-x**2 / 2)`` with
  ``t = 1 / (1 + A z)``, ``z = |x| / sqrt 2``, ``A = 0.5``, so ``R(t) = erfcx(z) / t``.  R is
  smooth and bounded (1 at t = 1, 1 / (sqrt(pi) A) as t -> 0); on the float range
  ``|x| <= 14.5`` (t in [0.163, 1]; beyond it Phi(-|x|) < 1e-46 underflows float) its degree-10
  Chebyshev interpolant has a truncation error of ~6e-9, well below float's rounding.
* ``cnn_log1p_polyf``: ``log1p(d) = d P(d)`` on [0, 1] (the softplus tail, d = exp(-|x|)),
  P of degree 9: truncation ~1e-8, relatively exact as d -> 0, no division.

Both are fitted in float64 as Chebyshev interpolants on 4000 nodes, converted to monomials
(evaluated by Horner's rule, which the compiler vectorizes) and printed as float literals
with their measured float32 errors.  Run::

    python tools/fit_vmath.py

and paste the coefficients (highest degree first in the C code).  Needs SciPy (erfcx).
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev as C
from numpy.polynomial import polynomial as P
from scipy.special import erfcx

A = 0.5
XMAX = 14.5
NODES = 4000


def _nodes(lo: float, hi: float) -> np.ndarray:
    k = np.arange(NODES)
    s = np.cos(np.pi * (k + 0.5) / NODES)
    return lo + (s + 1) / 2 * (hi - lo)


def _monomial(x: np.ndarray, y: np.ndarray, deg: int, lo: float, hi: float) -> np.ndarray:
    cheb = C.Chebyshev.fit(x, y, deg, domain=[lo, hi])
    return cheb.convert(kind=P.Polynomial, domain=[-1, 1], window=[-1, 1]).coef


def _horner32(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    r = np.float32(coef[-1])
    for c in coef[-2::-1]:
        r = (r * x + np.float32(c)).astype(np.float32)
    return r


def main() -> None:
    tmin = 1 / (1 + A * XMAX / np.sqrt(2))
    t = _nodes(tmin, 1.0)
    r = _monomial(t, erfcx((1 - t) / (A * t)) / t, 10, tmin, 1.0)
    tt = np.linspace(tmin, 1, 100001)
    ref = erfcx((1 - tt) / (A * tt)) / tt
    err = np.abs(_horner32(r, tt) / ref - 1).max()
    print(f"R(t), t in [{tmin:.4f}, 1], A = {A}: float32 relative error {err:.2e}")
    print(", ".join(repr(float(np.float32(c))) for c in r[::-1]))

    d = _nodes(0.0, 1.0)
    p = _monomial(d, np.log1p(d) / d, 9, 0.0, 1.0)
    dd = np.concatenate([np.linspace(1e-6, 1, 100001), np.geomspace(1e-30, 1e-6, 1000)])
    err = np.abs(dd * _horner32(p, dd) / np.log1p(dd) - 1).max()
    print(f"log1p(d) = d P(d), d in [0, 1]: float32 relative error {err:.2e}")
    print(", ".join(repr(float(np.float32(c))) for c in p[::-1]))


if __name__ == "__main__":
    main()
