"""The resizing suite: interpolate (nearest, bilinear) forward and backward, pixel_shuffle and
pixel_unshuffle, against PyTorch and a NumPy copy of the same bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

import cnncore

from .activation import summarize_rows, time_memory_rows
from .timing import _setup, _versions, check_repeat

# (label, input shape, interpolate keyword arguments); pixel_(un)shuffle rows follow
RESIZE_CASES = [
    ("nearest x2", (32, 64, 56, 56), dict(scale_factor=2, mode="nearest")),
    ("bilinear x2", (32, 64, 56, 56), dict(scale_factor=2, mode="bilinear")),
    (
        "bilinear x2 corners",
        (32, 64, 56, 56),
        dict(scale_factor=2, mode="bilinear", align_corners=True),
    ),  # fmt: skip
    ("nearest x1.5", (32, 64, 56, 56), dict(scale_factor=1.5, mode="nearest")),
    ("bilinear x0.5", (32, 64, 112, 112), dict(scale_factor=0.5, mode="bilinear")),
]
SHUFFLE_SHAPE = (32, 256, 28, 28)  # pixel_shuffle r=2 -> (32, 64, 56, 56)


def _backward(g: np.ndarray, shape: tuple[int, ...], kw: dict) -> Any:
    return lambda: cnncore.functional.interpolate_backward(g, shape, **kw)


def bench_resize(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print) -> dict:
    """Time interpolate (forward and backward) and pixel_shuffle / pixel_unshuffle on float32
    CNN shapes (batch 8 with ``quick``).

    Bytes moved: an interpolate pass reads one side and writes the other (input + output
    bytes, both directions); pixel_(un)shuffle reads and writes one array each.  torch's
    backward is ``upsample_*2d_backward``.

    Returns ``{"threads", "repeat", "batch", "rows": [...], "geomean_copy_ratio"
    [, "geomean_torch_ratio"]}`` as :func:`~cnncore.apps.bench.norm.bench_norm`.
    """
    repeat = check_repeat(repeat)
    threads, torch = _setup(use_torch)
    F = cnncore.functional
    rng = np.random.default_rng(0)
    out(
        f"resize benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin "
        f"median of >= {repeat} runs after warm-up; ratios x: cnncore time / baseline time"
    )
    cases: list[tuple[str, Any, int]] = []
    theirs: dict[str, Any] = {}
    for label, shape, kw in RESIZE_CASES:
        if quick:
            shape = (8, *shape[1:])
        x = rng.standard_normal(shape, dtype=np.float32)
        y = F.interpolate(x, **kw)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        nbytes = x.nbytes + y.nbytes
        bkw = {k: v for k, v in kw.items() if k != "scale_factor"}
        bkw["scale_factor"] = kw["scale_factor"]
        cases.append((label, lambda x=x, kw=kw: F.interpolate(x, **kw), nbytes))
        cases.append((label + " bwd", _backward(g, x.shape, bkw), nbytes))
        if torch is None:
            continue
        aten = torch.ops.aten
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)
        f = float(kw["scale_factor"])
        theirs[label] = lambda tx=tx, kw=kw: torch.nn.functional.interpolate(tx, **kw)
        if kw["mode"] == "nearest":
            theirs[label + " bwd"] = lambda tg=tg, o=y.shape[2:], s=shape, f=f: (
                aten.upsample_nearest2d_backward(tg, list(o), list(s), f, f)
            )
        else:
            ac = bool(kw.get("align_corners"))
            theirs[label + " bwd"] = lambda tg=tg, o=y.shape[2:], s=shape, ac=ac, f=f: (
                aten.upsample_bilinear2d_backward(tg, list(o), list(s), ac, f, f)
            )
    shape = (8, *SHUFFLE_SHAPE[1:]) if quick else SHUFFLE_SHAPE
    xs = rng.standard_normal(shape, dtype=np.float32)
    ys = F.pixel_shuffle(xs, 2)
    cases.append(("pixel_shuffle r=2", lambda: F.pixel_shuffle(xs, 2), 2 * xs.nbytes))
    cases.append(("pixel_unshuffle r=2", lambda: F.pixel_unshuffle(ys, 2), 2 * xs.nbytes))
    if torch is not None:
        txs, tys = torch.from_numpy(xs), torch.from_numpy(ys)
        # .contiguous(): torch's pixel_shuffle may return a view; the copy is the work
        theirs["pixel_shuffle r=2"] = lambda: torch.nn.functional.pixel_shuffle(txs, 2).contiguous()
        theirs["pixel_unshuffle r=2"] = lambda: torch.nn.functional.pixel_unshuffle(
            tys, 2
        ).contiguous()
    rows = time_memory_rows(out, cases, theirs, repeat)
    batch = 8 if quick else 32
    summary = summarize_rows(out, rows, torch)
    return {"threads": threads, "repeat": repeat, "batch": batch, "rows": rows, **summary}
