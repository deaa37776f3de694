"""The activation suite: activations, their backward passes, dropout2d and fused cross
entropy against PyTorch and a NumPy copy (and the correlate2d ``'auto'`` method choice).
:func:`time_memory_rows` times any memory-bound op that way (the norm and resize suites)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import cnncore

from .timing import (
    _setup,
    _versions,
    check_repeat,
    copy_baseline,
    geomean,
    time_round_robin,
)


def _activation_row(out, label: str, t: dict[str, float], nbytes: int, ref: str = "copy") -> dict:
    ours = t["cnncore"]
    row: dict[str, Any] = {
        "op": label,
        "bytes": nbytes,
        "cnncore_s": ours,
        "gbs": nbytes / ours / 1e9,
    }
    parts = [f"{label:<22}", f"cnncore {ours * 1e3:8.2f} ms {row['gbs']:6.1f} GB/s"]
    if ref in t:
        row.update({f"{ref}_s": t[ref], f"{ref}_ratio": ours / t[ref]})
        parts.append(f"{ref} {t[ref] * 1e3:7.2f} ms  x{ours / t[ref]:5.2f}")
    if "torch" in t:
        row.update(torch_s=t["torch"], torch_ratio=ours / t["torch"])
        parts.append(f"torch {t['torch'] * 1e3:7.2f} ms  x{ours / t['torch']:5.2f}")
    out(" | ".join(parts))
    return row


def time_memory_rows(
    out,
    cases: list[tuple[str, Callable[[], object], int]],
    theirs: dict[str, Callable[[], object]],
    repeat: int,
) -> list[dict]:
    """Time each ``(label, cnncore call, bytes moved)`` case round-robin against a NumPy copy
    of the same bytes (allocating, like the op) and torch's call ``theirs[label]`` if any;
    print and return the rows (see :func:`_activation_row`)."""
    copies: dict[int, Callable[[], object]] = {}
    rows = []
    for label, ours, nbytes in cases:
        copies.setdefault(nbytes, copy_baseline(nbytes, allocate=True))
        fns = {"cnncore": ours, "copy": copies[nbytes]}
        if label in theirs:
            fns["torch"] = theirs[label]
        t = time_round_robin(fns, repeat, library={"copy": "numpy"})
        rows.append(_activation_row(out, label, t, nbytes))
    return rows


def summarize_rows(out, rows: list[dict], torch: Any) -> dict:
    """Geometric means of the rows' ratios (printed), as ``bench_*`` results carry them."""
    result: dict[str, Any] = {"geomean_copy_ratio": geomean([r["copy_ratio"] for r in rows])}
    summary = f"geomean ratio cnncore/copy {result['geomean_copy_ratio']:.2f}"
    if torch is not None:
        torch_rows = [r["torch_ratio"] for r in rows if "torch_ratio" in r]
        result["geomean_torch_ratio"] = geomean(torch_rows)
        summary += f", cnncore/torch {result['geomean_torch_ratio']:.2f}"
    out(summary)
    return result


# (image side, kernel side) around the 'auto' crossover (~11x11 for float64)
SIGNAL_CASES = [(256, 5), (256, 11), (256, 21), (512, 11)]


def _bench_signal(out, repeat: int) -> list[dict]:
    rng = np.random.default_rng(2)
    out("correlate2d 'same' float64, is 'auto' as fast as the faster of direct and fft?")
    rows = []
    for size, k in SIGNAL_CASES:
        img = rng.standard_normal((size, size))
        kern = rng.standard_normal((k, k))
        fns = {
            m: (lambda m=m: cnncore.correlate2d(img, kern, "same", method=m))
            for m in ("direct", "fft", "auto")
        }
        t = time_round_robin(fns, repeat, library=dict.fromkeys(fns, "cnncore"))
        best = min(("direct", "fft"), key=t.__getitem__)
        row = {
            "size": size,
            "kernel": k,
            **{f"{m}_s": v for m, v in t.items()},
            "faster": best,
            "auto_over_best": t["auto"] / t[best],
        }
        rows.append(row)
        out(
            f"  {size:4d}^2 * {k:2d}^2: "
            + "  ".join(f"{m} {v * 1e3:8.3f} ms" for m, v in t.items())
            + f"   faster: {best}, auto/faster x{row['auto_over_best']:.2f}"
        )
    return rows


def bench_activation(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out=print,
    size: int | None = None,
    with_out: bool | None = None,
    signal: bool | None = None,
) -> dict:
    """Time relu / sigmoid / tanh / softmax (and, unless ``quick``, leaky_relu / log_softmax),
    gelu / silu / elu / hardswish / hardsigmoid / softplus / mish / relu6 (a subset with
    ``quick``), dropout2d, forward and backward, and fused cross entropy + gradient, against
    torch and a NumPy copy.

    Float32, ``size`` elements (default 16 Mi, 4 Mi with ``quick``); softmax over dim 1 of a
    (16384 or 4096, -1) view.  The copy (``x.copy()``: allocates like cnncore does) moves the
    same bytes as the op (backward ops read 2 arrays).  ``with_out`` (default: not ``quick``)
    adds ``out=`` rows against ``np.copyto``; ``signal`` (default: not ``quick``) checks that
    ``correlate2d(method='auto')`` is as fast as the faster of 'direct' and 'fft'.

    Returns ``{"threads", "repeat", "elements", "rows": [{"op", "bytes", "cnncore_s", "gbs",
    "copy_s", "copy_ratio" [, "torch_s", "torch_ratio"]}], "geomean_copy_ratio"
    [, "geomean_torch_ratio"] [, "out_rows"] [, "signal"]}``.
    """
    repeat = check_repeat(repeat)
    threads, torch = _setup(use_torch)
    F = cnncore.functional
    n = size or (4 if quick else 16) * 2**20
    n = max(4096, n - n % 4096)
    with_out = not quick if with_out is None else with_out
    signal = not quick if signal is None else signal
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32) * 4
    g = rng.standard_normal(n, dtype=np.float32)
    x2 = x.reshape(16 * 1024 if n >= 16 * 2**20 else 4096, -1)
    g2 = g.reshape(x2.shape)
    item = x.itemsize
    out(
        f"activation benchmark: {_versions(torch)}; float32, {threads} thread(s), "
        f"{n / 2**20:.0f} Mi elements ({n * item / 2**20:.0f} MiB per array), round-robin "
        f"median of >= {repeat} runs after warm-up; softmax on {x2.shape}, dim=1"
    )
    out(
        "ratios x: cnncore time / baseline time (< 1 is faster); the copy moves the same "
        "bytes as the op"
    )
    y = {
        "relu": F.relu(x),
        "sigmoid": F.sigmoid(x),
        "tanh": F.tanh(x),
        "softmax": F.softmax(x2, 1),
        "log_softmax": F.log_softmax(x2, 1),
    }
    # (label, cnncore call, arrays read + written); torch's calls are in `theirs` below
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("relu", lambda: F.relu(x), 2),
        ("sigmoid", lambda: F.sigmoid(x), 2),
        ("tanh", lambda: F.tanh(x), 2),
        ("softmax(dim=1)", lambda: F.softmax(x2, 1), 2),
        ("relu_backward", lambda: F.relu_backward(g, y["relu"]), 3),
        ("sigmoid_backward", lambda: F.sigmoid_backward(g, y["sigmoid"]), 3),
        ("tanh_backward", lambda: F.tanh_backward(g, y["tanh"]), 3),
        ("softmax_backward", lambda: F.softmax_backward(g2, y["softmax"], 1), 3),
    ]
    if not quick:
        cases[4:4] = [
            ("leaky_relu", lambda: F.leaky_relu(x, 0.01), 2),
            ("log_softmax(dim=1)", lambda: F.log_softmax(x2, 1), 2),
        ]
        cases.append(
            ("log_softmax_backward", lambda: F.log_softmax_backward(g2, y["log_softmax"], 1), 3)
        )
    # the activations whose gradient takes the input (MobileNet / transformer-style CNNs)
    more = [
        ("gelu", lambda: F.gelu(x)),
        ("gelu(tanh)", lambda: F.gelu(x, "tanh")),
        ("silu", lambda: F.silu(x)),
        ("elu", lambda: F.elu(x)),
        ("hardswish", lambda: F.hardswish(x)),
        ("hardsigmoid", lambda: F.hardsigmoid(x)),
        ("softplus", lambda: F.softplus(x)),
        ("mish", lambda: F.mish(x)),
        ("relu6", lambda: F.relu6(x)),
    ]
    more_bw = [
        ("gelu_backward", lambda: F.gelu_backward(g, x)),
        ("gelu_backward(tanh)", lambda: F.gelu_backward(g, x, "tanh")),
        ("silu_backward", lambda: F.silu_backward(g, x)),
        ("elu_backward", lambda: F.elu_backward(g, x)),
        ("hardswish_backward", lambda: F.hardswish_backward(g, x)),
        ("hardsigmoid_backward", lambda: F.hardsigmoid_backward(g, x)),
        ("softplus_backward", lambda: F.softplus_backward(g, x)),
        ("mish_backward", lambda: F.mish_backward(g, x)),
        ("relu6_backward", lambda: F.relu6_backward(g, x)),
    ]
    if quick:
        keep = {"gelu", "silu", "hardswish", "gelu_backward", "silu_backward"}
        more = [c for c in more if c[0] in keep]
        more_bw = [c for c in more_bw if c[0] in keep]
    cases += [(label, fn, 2) for label, fn in more] + [(label, fn, 3) for label, fn in more_bw]
    x4 = x.reshape(64, 256, -1)  # dropout2d over 16384 channels
    g4 = g.reshape(x4.shape)
    drop_mask = F.dropout2d(x4, 0.5, rng=0, return_mask=True)[1]
    cases += [
        ("dropout2d", lambda: F.dropout2d(x4, 0.5, rng=0), 2),
        ("dropout2d_backward", lambda: F.dropout2d_backward(g4, drop_mask), 3),
    ]
    theirs: dict[str, Callable[[], object]] = {}
    if torch is not None:
        aten = torch.ops.aten
        tx, tg, tx2, tg2 = (torch.from_numpy(a) for a in (x, g, x2, g2))
        ty = {k: torch.from_numpy(v) for k, v in y.items()}
        theirs = {
            "relu": lambda: torch.relu(tx),
            "sigmoid": lambda: torch.sigmoid(tx),
            "tanh": lambda: torch.tanh(tx),
            "softmax(dim=1)": lambda: torch.softmax(tx2, 1),
            "leaky_relu": lambda: torch.nn.functional.leaky_relu(tx, 0.01),
            "log_softmax(dim=1)": lambda: torch.log_softmax(tx2, 1),
            "relu_backward": lambda: aten.threshold_backward(tg, ty["relu"], 0),
            "sigmoid_backward": lambda: aten.sigmoid_backward(tg, ty["sigmoid"]),
            "tanh_backward": lambda: aten.tanh_backward(tg, ty["tanh"]),
            "softmax_backward": lambda: aten._softmax_backward_data(
                tg2, ty["softmax"], 1, torch.float32
            ),
            "log_softmax_backward": lambda: aten._log_softmax_backward_data(
                tg2, ty["log_softmax"], 1, torch.float32
            ),
        }
        tf = torch.nn.functional
        theirs.update(
            {
                "gelu": lambda: tf.gelu(tx),
                "gelu(tanh)": lambda: tf.gelu(tx, approximate="tanh"),
                "silu": lambda: tf.silu(tx),
                "elu": lambda: tf.elu(tx),
                "hardswish": lambda: tf.hardswish(tx),
                "hardsigmoid": lambda: tf.hardsigmoid(tx),
                "softplus": lambda: tf.softplus(tx),
                "mish": lambda: tf.mish(tx),
                "relu6": lambda: tf.relu6(tx),
                "gelu_backward": lambda: aten.gelu_backward(tg, tx),
                "gelu_backward(tanh)": lambda: aten.gelu_backward(tg, tx, approximate="tanh"),
                "silu_backward": lambda: aten.silu_backward(tg, tx),
                "elu_backward": lambda: aten.elu_backward(tg, 1.0, 1.0, 1.0, False, tx),
                "hardswish_backward": lambda: aten.hardswish_backward(tg, tx),
                "hardsigmoid_backward": lambda: aten.hardsigmoid_backward(tg, tx),
                "softplus_backward": lambda: aten.softplus_backward(tg, tx, 1.0, 20.0),
                "mish_backward": lambda: aten.mish_backward(tg, tx),
                "relu6_backward": lambda: aten.hardtanh_backward(tg, tx, 0.0, 6.0),
            }
        )
        tx4, tg4 = tx.reshape(64, 256, -1), tg.reshape(64, 256, -1)
        tmask = torch.from_numpy(drop_mask)[:, :, None]
        theirs["dropout2d"] = lambda: tf.dropout2d(tx4, 0.5)
        theirs["dropout2d_backward"] = lambda: tg4 * tmask
    rows = time_memory_rows(
        out, [(label, ours, arrays * n * item) for label, ours, arrays in cases], theirs, repeat
    )

    # fused cross entropy + gradient (torch: forward + autograd backward)
    logits = rng.standard_normal((4096, 1000), dtype=np.float32) * 3
    target = rng.integers(0, 1000, 4096)
    fns = {
        "cnncore": lambda: F.cross_entropy(logits, target, return_grad=True),
        "copy": copy_baseline(2 * logits.nbytes, allocate=True),
    }
    if torch is not None:
        tl, tt = torch.from_numpy(logits), torch.from_numpy(target)

        def torch_ce() -> object:
            xl = tl.detach().requires_grad_()
            torch.nn.functional.cross_entropy(xl, tt).backward()
            return xl.grad

        fns["torch"] = torch_ce
    t = time_round_robin(fns, repeat, library={"copy": "numpy"})
    rows.append(_activation_row(out, "cross_entropy+grad", t, 2 * logits.nbytes))

    result: dict[str, Any] = {
        "threads": threads,
        "repeat": repeat,
        "elements": n,
        "rows": rows,
        "geomean_copy_ratio": geomean([r["copy_ratio"] for r in rows]),
    }
    summary = f"geomean ratio cnncore/copy {result['geomean_copy_ratio']:.2f}"
    if torch is not None:
        result["geomean_torch_ratio"] = geomean([r["torch_ratio"] for r in rows])
        summary += f", cnncore/torch {result['geomean_torch_ratio']:.2f}"
    out(summary)
    if with_out:
        out("preallocated output (out=) vs np.copyto into a preallocated array:")
        buf = np.empty_like(x)
        result["out_rows"] = [
            _activation_row(
                out,
                label,
                time_round_robin(
                    {"cnncore": fn, "copyto": lambda: np.copyto(buf, x)},
                    repeat,
                    library={"copyto": "numpy"},
                ),
                2 * n * item,
                ref="copyto",
            )
            for label, fn in (
                ("relu(out=)", lambda: F.relu(x, out=buf)),
                ("sigmoid(out=)", lambda: F.sigmoid(x, out=buf)),
                ("tanh(out=)", lambda: F.tanh(x, out=buf)),
            )
        ]
    if signal:
        result["signal"] = _bench_signal(out, repeat)
    return result
