"""The normalization suite: batch / group / layer / instance norm, forward and backward, against
PyTorch and a NumPy copy of the same bytes (memory-bound ops: GB/s is what counts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import cnncore

from .activation import summarize_rows, time_memory_rows
from .timing import _setup, _versions, check_repeat

# (label, shape, kind, parameter): kind 'batch' (training mode: batch statistics), 'group'
# (parameter: num_groups), 'layer' (the number of trailing dimensions normalized), 'instance'
NORM_CASES = [
    ("batch_norm 128,16,28,28 train", (128, 16, 28, 28), "batch", None),
    ("batch_norm 128,64,7,7 train", (128, 64, 7, 7), "batch", None),
    ("batch_norm 32,64,56,56 train", (32, 64, 56, 56), "batch", None),
    ("group_norm 32,64,56,56 G=32", (32, 64, 56, 56), "group", 32),
    ("group_norm 32,256,14,14 G=32", (32, 256, 14, 14), "group", 32),
    ("layer_norm 100352x64 (C last)", (32, 56, 56, 64), "layer", 1),
    ("layer_norm 32x(64,28,28)", (32, 64, 28, 28), "layer", 3),
    ("instance_norm 32,64,56,56", (32, 64, 56, 56), "instance", None),
]

Fn = Callable[[], object]


def _ours(kind: str, param: Any, x: np.ndarray, g: np.ndarray) -> tuple[Fn, Fn]:
    """cnncore's forward and backward calls (affine; instance norm: forward + backward)."""
    F = cnncore.functional
    if kind == "layer":  # the backward from the forward's statistics, as nn.LayerNorm runs it
        ns = x.shape[x.ndim - param :]
        w, b = np.ones(ns, np.float32), np.zeros(ns, np.float32)
        _, mean, rstd = F.layer_norm(x, ns, w, b, return_stats=True)
        return (lambda: F.layer_norm(x, ns, w, b)), (
            lambda: F.layer_norm_backward(g, x, ns, w, mean=mean, rstd=rstd)
        )
    c = x.shape[1]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    if kind == "batch":
        return (lambda: F.batch_norm(x, None, None, w, b, training=True)), (
            lambda: F.batch_norm_backward(g, x, None, None, w, training=True)
        )
    if kind == "group":  # the backward from the forward's statistics, as nn.GroupNorm runs it
        _, mean, rstd = F.group_norm(x, param, w, b, return_stats=True)
        return (lambda: F.group_norm(x, param, w, b)), (
            lambda: F.group_norm_backward(g, x, param, w, mean=mean, rstd=rstd)
        )

    def both() -> object:
        F.instance_norm(x, weight=w, bias=b)
        return F.instance_norm_backward(g, x, weight=w)

    return (lambda: F.instance_norm(x, weight=w, bias=b)), both


def _theirs(torch: Any, kind: str, param: Any, x: np.ndarray, g: np.ndarray) -> tuple[Fn, Fn]:
    """torch's calls: forward, and ``native_*_backward`` from the saved mean / rstd (instance
    norm: forward + autograd backward)."""
    aten, tf = torch.ops.aten, torch.nn.functional
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    if kind == "layer":
        ns = list(x.shape[x.ndim - param :])
        tw, tb = torch.ones(ns), torch.zeros(ns)
        _, tm, tr = aten.native_layer_norm(tx, ns, tw, tb, 1e-5)
        return (lambda: tf.layer_norm(tx, ns, tw, tb)), (
            lambda: aten.native_layer_norm_backward(tg, tx, ns, tm, tr, tw, tb, [True] * 3)
        )
    n, c, hw = x.shape[0], x.shape[1], int(np.prod(x.shape[2:]))
    tw, tb = torch.ones(c), torch.zeros(c)
    if kind == "batch":
        _, tm, tr = aten.native_batch_norm(tx, tw, tb, None, None, True, 0.1, 1e-5)
        return (lambda: tf.batch_norm(tx, None, None, tw, tb, training=True)), (
            lambda: aten.native_batch_norm_backward(
                tg, tx, tw, None, None, tm, tr, True, 1e-5, [True] * 3
            )
        )
    if kind == "group":
        _, tm, tr = aten.native_group_norm(tx, tw, tb, n, c, hw, param, 1e-5)
        return (lambda: tf.group_norm(tx, param, tw, tb)), (
            lambda: aten.native_group_norm_backward(tg, tx, tm, tr, tw, n, c, hw, param, [True] * 3)
        )

    def both() -> object:
        xr = tx.detach().requires_grad_()
        wr, br = tw.detach().requires_grad_(), tb.detach().requires_grad_()
        tf.instance_norm(xr, weight=wr, bias=br).backward(tg)
        return xr.grad

    return (lambda: tf.instance_norm(tx, weight=tw, bias=tb)), both


def bench_norm(quick: bool = False, use_torch: bool = True, repeat: int = 7, out=print) -> dict:
    """Time batch_norm (training), group_norm, layer_norm and instance_norm (affine) and
    their backward passes on float32 CNN shapes (batch 8 with ``quick``).

    Bytes moved: the forward reads x and writes y (2 arrays), the backward reads
    grad_output and x and writes grad_x (3 arrays; the per-channel gradients are
    negligible).  torch's backward is timed from the mean / rstd its forward saved
    (``native_*_backward``); so are cnncore's group and layer norm backward passes
    (``mean=`` / ``rstd=`` from ``return_stats=True``, as nn.GroupNorm and nn.LayerNorm run
    them), batch norm's functional backward recomputes them from x.  Instance norm's second
    row
    is forward + backward (5 arrays; torch has no separate backward op for it).

    Returns ``{"threads", "repeat", "batch", "rows": [{"op", "bytes", "cnncore_s", "gbs", "copy_s",
    "copy_ratio" [, "torch_s", "torch_ratio"]}], "geomean_copy_ratio"
    [, "geomean_torch_ratio"]}``.
    """
    repeat = check_repeat(repeat)
    threads, torch = _setup(use_torch)
    rng = np.random.default_rng(0)
    out(
        f"norm benchmark: {_versions(torch)}; float32, {threads} thread(s), round-robin median "
        f"of >= {repeat} runs after warm-up; ratios x: cnncore time / baseline time"
    )
    cases: list[tuple[str, Fn, int]] = []
    theirs: dict[str, Fn] = {}
    for label, shape, kind, param in NORM_CASES:
        if quick:
            shape = (8, *shape[1:])
        x = rng.standard_normal(shape, dtype=np.float32)
        g = rng.standard_normal(shape, dtype=np.float32)
        second = label + (" fwd+bwd" if kind == "instance" else " bwd")
        fwd, bwd = _ours(kind, param, x, g)
        arrays = 5 if kind == "instance" else 3
        cases += [(label, fwd, 2 * x.nbytes), (second, bwd, arrays * x.nbytes)]
        if torch is not None:
            theirs[label], theirs[second] = _theirs(torch, kind, param, x, g)
    rows = time_memory_rows(out, cases, theirs, repeat)
    batch = 8 if quick else 32
    summary = summarize_rows(out, rows, torch)
    return {"threads": threads, "repeat": repeat, "batch": batch, "rows": rows, **summary}
