"""Generate the Chebyshev coefficients of cnncore's vectorized erfc (src/_vmath.pxd).

For z >= 0, ``erfc(z) = t * exp(P(t) - z**2)`` with ``t = 1 / (1 + A z)``, ``A = 0.4``; ``P``
is smooth on ``t`` in [0, 1] (at ``t = 0``, i.e. z -> inf, it tends to
``-log(sqrt(pi) / A)``), so its Chebyshev series in ``s = 2 t - 1`` converges geometrically.
The relative error of erfc is the absolute error of ``P``: 25 terms give < 5e-17 (double;
float32's gelu uses a cheaper polynomial from tools/fit_vmath.py).  Run with mpmath
installed::

    python tools/fit_erfc.py

and paste the printed C function (``cnn__erfc_poly``: the series
evaluated by Clenshaw's recurrence, unrolled so that the element loops around them
vectorize) into ``src/_vmath.pxd``.
"""

from __future__ import annotations

import mpmath as mp

A = mp.mpf("0.4")
NODES = 80


def P(t: mp.mpf) -> mp.mpf:
    if t == 0:
        return -mp.log(mp.sqrt(mp.pi) / A)
    z = (1 - t) / (A * t)
    return mp.log(mp.erfc(z) / t) + z * z


def chebyshev(n_nodes: int = NODES) -> list[mp.mpf]:
    nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / n_nodes) for k in range(n_nodes)]
    vals = [P((s + 1) / 2) for s in nodes]
    half = mp.mpf(1) / 2
    c = [
        2
        * mp.fsum(v * mp.cos(mp.pi * j * (k + half) / n_nodes) for k, v in enumerate(vals))
        / n_nodes
        for j in range(n_nodes)
    ]
    c[0] /= 2
    return c


def clenshaw_c(coefs: list[str], ctype: str, suffix: str, tail: str) -> str:
    """C source of ``P(s)`` for one precision (``coefs`` as C literals)."""
    lit = "f" if ctype == "float" else ""
    lines = [
        f"/* P(s) = sum_j c_j T_j(s): {len(coefs)} terms (truncation error <= {tail}), "
        "Clenshaw's recurrence unrolled */",
        f"CNN_INLINE {ctype} cnn__erfc_poly{suffix}({ctype} s) {{",
        f"    {ctype} s2 = s + s, b1 = 0, b2 = 0, b0;",
    ]
    for c in reversed(coefs[1:]):
        lines.append(f"    b0 = {c}{lit} + s2 * b1 - b2; b2 = b1; b1 = b0;")
    lines.append(f"    return {coefs[0]}{lit} + s * b1 - b2;")
    lines.append("}")
    return "\n".join(lines)


def main() -> None:
    mp.mp.dps = 40
    c = chebyshev()
    for ctype, suffix, n, digits in (("double", "", 25, 17),):
        tail = mp.nstr(mp.fsum(abs(v) for v in c[n:]), 2)
        coefs = [mp.nstr(v, digits, min_fixed=0, max_fixed=0) for v in c[:n]]
        print(clenshaw_c(coefs, ctype, suffix, tail))


if __name__ == "__main__":
    main()
