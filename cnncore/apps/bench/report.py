"""Markdown tables from the suites' results, headed by the facts of the machine they ran on.

``cnncore bench --markdown FILE`` writes them; the README's performance tables are pasted
from such a file (``tools/update_readme_bench.py``), never typed by hand, so each figure
names the CPU, SIMD level, cores, BLAS and library versions it was measured with.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

import numpy as np

import cnncore

__all__ = ["machine_info", "machine_line", "markdown_report"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(use_torch: bool = True) -> dict[str, Any]:
    """CPU model, SIMD levels, cores, threads, BLAS and the library versions, now."""
    from cnncore._config import config_info

    info = config_info()
    blas = info["blas"][0] if info["blas"] else {}
    torch = None
    if use_torch:
        from .timing import try_import_torch

        torch = try_import_torch()
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "os": platform.system(),
        "cpu_simd": info["cpu_simd"][-1],
        "simd": info["simd"],
        "cores": info["usable_cores"],
        "threads": info["num_threads"],
        "blas": (
            f"{blas.get('internal_api', '?')} {blas.get('version', '')} "
            f"({blas.get('architecture', '?')}, {blas.get('threading_layer', '?')})"
        ).replace("  ", " ")
        if blas
        else "unknown",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cnncore": cnncore.__version__,
        "torch": getattr(torch, "__version__", None),
        "simd_cap": os.environ.get("CNNCORE_SIMD") or None,
        # one libgomp per process serves cnncore and torch alike: its wait policy applies to both
        "omp_wait": {
            k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ
        },
        "date": datetime.date.today().isoformat(),
    }


def machine_line(m: dict[str, Any]) -> str:
    """One sentence naming the machine and software a set of figures comes from."""
    simd = (
        m["simd"] if m["simd"] == m["cpu_simd"] else f"{m['simd']} (capped; CPU: {m['cpu_simd']})"
    )
    cap = f", `CNNCORE_SIMD={m['simd_cap']}`" if m.get("simd_cap") else ""
    torch = f"PyTorch {m['torch']}" if m.get("torch") else "no PyTorch (no ratios)"
    wait = ", ".join(f"{k}={v}" for k, v in (m.get("omp_wait") or {}).items())
    wait = f"OpenMP waits: {wait or 'libgomp defaults'} (shared by both libraries); "
    return (
        f"{m['cpu']} ({m['machine']}, {m['os']}), conv kernels built for {simd}{cap}, "
        f"{m['cores']} usable core(s), {m['threads']} thread(s); BLAS {m['blas']}; "
        f"{wait}Python {m['python']}, NumPy {m['numpy']}, {torch}, cnncore {m['cnncore']}; "
        f"{m['date']}"
    )


def _f(value: Any, fmt: str, missing: str = "–") -> str:
    return missing if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _conv_label(suite: str, shape: tuple) -> str:
    if suite == "depthwise":  # (N, C, H, W, multiplier, k, s, p)
        n, c, h, w, mult, ks, s, p = shape
        return f"{n},{c},{h},{w} → {c * mult},{ks},{s},{p} g{c}"
    if suite == "transposed":  # (N, C_in, H, W, C_out, k, s, p, output_padding)
        n, c, h, w, k, ks, s, p, op = shape
        return f"{n},{c},{h},{w} → {k},{ks},{s},{p}" + (f",{op}" if op else "")
    n, c, h, w, k, ks, s, p = shape[:8]
    groups = shape[8] if len(shape) > 8 else 1  # the resnet suite's grouped shapes
    return f"{n},{c},{h},{w} → {k},{ks},{s},{p}" + (f", groups {groups}" if groups > 1 else "")


_CONV_TITLES = {
    "standard": ("Convolution", "N,C,H,W → C_out, k, s, p"),
    "resnet": (
        "Convolution: ResNet-20/32/56 on CIFAR (batch 128) and grouped 3×3",
        "N,C,H,W → C_out, k, s, p",
    ),
    "depthwise": ("Depthwise convolution", "N,C,H,W → C_out, k, s, p, groups"),
    "transposed": ("Transposed convolution", "N,C_in,H,W → C_out, k, s, p[, output_padding]"),
}


def _conv(res: dict) -> list[str]:
    suite = res.get("suite", "standard")
    rows = []
    for r in res["rows"]:
        rows.append(
            [
                _conv_label(suite, tuple(r["shape"])),
                "/".join(dict.fromkeys(r["algorithm"])),
                _f(r["fwd_s"] * 1e3, ".3f"),
                _f(r.get("fwd_ratio"), ".2f"),
                _f(r["fwd_bwd_s"] * 1e3, ".3f"),
                _f(r.get("fwd_bwd_ratio"), ".2f"),
                _f(r.get("fwd_bwd_pct_roof"), ".0f"),
            ]
        )
    if "geomean_fwd_ratio" in res:
        rows.append(
            [
                "**geometric mean**",
                "",
                "",
                f"**{res['geomean_fwd_ratio']:.2f}**",
                "",
                f"**{res['geomean_fwd_bwd_ratio']:.2f}**",
                "",
            ]
        )
    title, head = _CONV_TITLES[suite]
    out = [
        f"**{title}** (float32; fwd+bwd = forward + input, weight and bias gradients; "
        f"sgemm roof = NumPy {2048}² matmul in the same run, "
        f"{res['sgemm_roof_gflops']:.0f} GFLOP/s):",
        "",
    ]
    out += _table(
        [
            head,
            "algorithm (fwd/dx/dw)",
            "fwd ms",
            "fwd ratio",
            "fwd+bwd ms",
            "fwd+bwd ratio",
            "fwd+bwd % of sgemm roof",
        ],
        rows,
    )
    if res.get("extra_memory_bytes"):
        mem = ", ".join(f"N={n}: {v / 2**20:.1f} MiB" for n, v in res["extra_memory_bytes"].items())
        out += ["", f"Peak memory of one conv2d call beyond its output (N,64,32,32 → 64): {mem}."]
    return out


def _pool(res: dict) -> list[str]:
    rows = []
    for r in res["rows"]:
        rows.append(
            [
                f"{','.join(map(str, r['shape']))}, k{r['kernel']} s{r['stride']} p{r['padding']}",
                r["pass"],
                _f(r["cnncore_s"] * 1e3, ".3f"),
                _f(r.get("ratio"), ".2f"),
                _f(r["gbs"], ".1f"),
                _f(r["copy_gbs"], ".1f"),
            ]
        )
    out = ["**Pooling** (float32, forward + backward):", ""]
    out += _table(
        ["N,C,H,W, kernel", "pass", "cnncore ms", "ratio", "GB/s", "NumPy copy GB/s"], rows
    )
    if res.get("geomean_ratio"):
        gm = ", ".join(f"{k} {v:.2f}" for k, v in res["geomean_ratio"].items())
        out += ["", f"Geometric mean ratio: {gm}."]
    return out


def _memory_bound(title: str, detail: str) -> Any:
    """The table of a suite of memory-bound ops (activation, norm, resize rows);
    ``detail`` is formatted with the suite's result."""

    def section(res: dict) -> list[str]:
        rows = [
            [
                r["op"],
                _f(r["cnncore_s"] * 1e3, ".2f"),
                _f(r["gbs"], ".1f"),
                _f(r.get("copy_ratio"), ".2f"),
                _f(r.get("torch_ratio"), ".2f"),
            ]
            for r in res["rows"]
        ]
        text = detail.format(mi=res.get("elements", 0) / 2**20, batch=res.get("batch", "N"))
        out = [
            f"**{title}** (float32, {text}; × copy = time over a NumPy copy of the same bytes):",
            "",
        ]
        out += _table(["op", "cnncore ms", "GB/s", "× copy", "ratio"], rows)
        gm = f"Geometric mean: × copy {res['geomean_copy_ratio']:.2f}"
        if "geomean_torch_ratio" in res:
            gm += f", ratio {res['geomean_torch_ratio']:.2f}"
        return [*out, "", gm + "."]

    return section


_activation = _memory_bound("Activations", "{mi:.0f} Mi elements")


def _train(res: dict) -> list[str]:
    rows = []
    for r in res["rows"]:
        n_img = r.get("images")
        rows.append(
            [
                r["model"],
                _f(r["cnncore_s"], ".2f"),
                _f(n_img / r["cnncore_s"] if n_img else None, ",.0f"),
                _f(r.get("torch_s"), ".2f"),
                _f(r.get("ratio"), ".2f"),
            ]
        )
    if res.get("steps"):
        how = (
            f"{res['steps']} steps of each library interleaved in blocks, medians of the "
            f"seconds per step times the steps of an epoch"
        )
    else:
        how = f"best of {res['epochs']} epochs"
    out = [
        f"**Training** ({res['data']}, batch 64, SGD lr 0.05 momentum 0.9 (resnet20: batch "
        f"128, lr 0.1), float32, {how}):",
        "",
    ]
    return out + _table(["model", "cnncore s/epoch", "img/s", "PyTorch s/epoch", "ratio"], rows)


def _inference(res: dict) -> list[str]:
    rows = [
        [
            r["model"],
            str(r["threads"]),
            str(r["batch"]),
            _f(r["cnncore_us"], ".1f"),
            _f(r.get("tuned_us"), ".1f"),
            _f(r.get("torch_us"), ".1f"),
            _f(r.get("vs_torch"), ".2f"),
            _f(r.get("tuned_vs_torch"), ".2f"),
            _f(r.get("ort_us"), ".1f"),
            _f(r.get("vs_ort"), ".2f"),
            _f(r.get("tuned_vs_ort"), ".2f"),
        ]
        for r in res["rows"]
    ]
    out = [
        "**Inference latency** (float32, `model.predict(x)` after `nn.fuse`, with the built-in "
        "algorithm choice and tuned by `cnncore.tune(model, x.shape)`, against the PyTorch "
        "twin under `torch.inference_mode()` and onnxruntime running the exported graph; µs "
        "per call; ratio = cnncore / peer):",
        "",
        *_table(
            ["model", "threads", "batch", "cnncore µs", "tuned µs", "PyTorch µs", "ratio",
             "tuned ratio", "onnxruntime µs", "ratio", "tuned ratio"],
            rows,
        ),
    ]  # fmt: skip
    cpu_rows = []
    for r in res["rows"]:
        cpu = r.get("cpu_us")
        if not cpu:
            continue
        cells = [r["model"], str(r["batch"]), _f(cpu["cnncore"], ".1f"), _f(cpu["tuned"], ".1f")]
        for peer in ("torch", "onnxruntime"):
            p = cpu.get(peer)
            cells += [
                _f(p, ".1f"),
                _f(cpu["cnncore"] / p if p else None, ".2f"),
                _f(cpu["tuned"] / p if p else None, ".2f"),
            ]
        cpu_rows.append(cells)
    if cpu_rows:
        out += [
            "",
            "The one-thread rows again, timed by the CPU time of the calling thread (where all "
            "three run at one thread; unlike wall time, not inflated by the preemption of a "
            "loaded machine):",
            "",
            *_table(
                ["model", "batch", "cnncore µs", "tuned µs", "PyTorch µs", "ratio",
                 "tuned ratio", "onnxruntime µs", "ratio", "tuned ratio"],
                cpu_rows,
            ),
        ]  # fmt: skip
    ovh = res.get("overhead")
    if ovh:
        rows = [
            [
                r["layer"],
                "×".join(map(str, r["input"])),
                str(r["threads"]),
                _f(r["kernel_us"], ".2f"),
                _f(r["eval_us"], ".2f"),
                _f(r["eval_overhead_us"], ".2f"),
                _f(r["train_us"], ".2f"),
                _f(r["train_overhead_us"], ".2f"),
                _f(r.get("python_us"), ".2f"),
            ]
            for r in ovh["rows"]
        ]
        out += [
            "",
            "**Per-call overhead** (LeNet-5's layers at batch 1, CPU time of the calling "
            "thread; kernel = the compiled function called directly on preallocated "
            "buffers; overhead = layer call − kernel, which includes the kernel running "
            "slower after Python work; Python = the eval call with no-op kernels, µs):",
            "",
            *_table(
                ["layer", "input", "threads", "kernel", "layer (eval)", "overhead",
                 "layer (train)", "overhead", "Python"],
                rows,
            ),
        ]  # fmt: skip
        sw = ovh.get("blas_switch_us", {})
        if sw:
            out += [
                "",
                "One switch of the BLAS thread cap (enter + exit): "
                + ", ".join(f"{k} {_f(v, '.2f')} µs" for k, v in sw.items())
                + ".",
            ]
    return out


def _autotune(res: dict) -> list[str]:
    rows = []
    for r in res["rows"]:
        n, c, h, w, k, ks, s, p, g = r["shape"]
        rows.append(
            [
                f"{n},{c},{h},{w} → {k},{ks},{s},{p}" + (f", g{g}" if g > 1 else ""),
                "/".join(r["heuristic"]),
                "/".join(r["tuned"]),
                _f(r["heuristic_fwd_s"] * 1e3, ".3f"),
                _f(r["fwd_ratio"], ".2f"),
                _f(r["heuristic_fwd_bwd_s"] * 1e3, ".3f"),
                _f(r["fwd_bwd_ratio"], ".2f"),
                _f(r["tune_s"], ".2f"),
            ]
        )
    rows.append(
        [
            "**geometric mean**",
            "",
            "",
            "",
            f"**{_f(res['geomean_fwd_ratio'], '.2f')}**",
            "",
            f"**{_f(res['geomean_fwd_bwd_ratio'], '.2f')}**",
            "",
        ]
    )
    return [
        f"**Autotuning** (float32, {res['threads']} threads; `cnncore.tune`'s choice per pass "
        f"(fwd/dx/dw, timed at {res['tune_threads']} threads) against the built-in "
        "thresholds'; ratio = tuned / thresholds, kernels called directly; tune s = the "
        "time tuning took):",
        "",
        *_table(
            ["N,C,H,W → C_out, k, s, p", "thresholds", "tuned", "fwd ms", "fwd ratio",
             "fwd+bwd ms", "fwd+bwd ratio", "tune s"],
            rows,
        ),
    ]  # fmt: skip


_SECTIONS = {
    "conv": _conv,
    "conv-resnet": _conv,
    "depthwise": _conv,
    "transposed": _conv,
    "pool": _pool,
    "activation": _activation,
    "norm": _memory_bound(
        "Normalization",
        "batch {batch}; group_norm's and layer_norm's backward rows take the forward's "
        "statistics (as torch's), batch_norm's recompute them from x",
    ),
    "resize": _memory_bound(
        "Resizing",
        "interpolate from ({batch},64,56,56) (x0.5: from 112x112), pixel_(un)shuffle "
        "({batch},256,28,28) ↔ ({batch},64,56,56)",
    ),
    "train": _train,
    "inference": _inference,
    "autotune": _autotune,
}


def markdown_report(results: dict[str, dict], machine: dict[str, Any], quick: bool = False) -> str:
    """Markdown for the suites in ``results`` (suite name -> what it returned), headed by
    :func:`machine_line`. Ratios are cnncore time / PyTorch time (< 1: cnncore faster)."""
    command = "cnncore bench" + (" --quick" if quick else "") + " --markdown"
    if set(results) == {"autotune"}:  # (no PyTorch in it: tuned against built-in choices)
        ratio = (
            "Ratio = time with the tuned algorithms / time with the built-in choice, same run "
            "(< 1: tuning found faster algorithms); medians of ≥ 7 runs after warm-up."
        )
    elif machine.get("torch"):
        ratio = (
            "Ratio = cnncore time / PyTorch time, same run, same thread count (< 1: cnncore "
            "is faster); medians of ≥ 7 runs after warm-up."
        )
    else:
        ratio = (
            "PyTorch was not installed, so there are no ratios: `pip install torch` and run "
            "the command again to get them."
        )
    lines = [f"Measured with `{command}` on: {machine_line(machine)}.", ratio]
    for name, res in results.items():
        if name in _SECTIONS:
            lines += ["", *_SECTIONS[name](res)]
    return "\n".join(lines) + "\n"
