"""The autotuning suite: the convolution algorithms ``cnncore.tune`` measures against the
built-in thresholds, on the shapes of issue 15 (LeNet at batch 1 and 64, ResNet-20's 3x3
convolutions at batch 128, a grouped convolution, the ImageNet stem).

For each shape and pass (forward, input gradient, weight gradient) the suite asks the
thresholds for their algorithm, lets :func:`cnncore.ops.conv_tune.measure` time every
algorithm that applies (the procedure of autotuning: at the tuning thread count, the
thresholds' choice kept unless another is 5 % faster), and then times both choices
round-robin at the current thread count with the kernels called directly: ratio = tuned /
thresholds (< 1: tuning found a faster algorithm; 1.00 where both chose the same).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import cnncore
from cnncore._config import _selected_simd, blas_single_thread
from cnncore._geometry import conv2d_geometry
from cnncore.ops import conv_dispatch, conv_tune

from .timing import _ms, _ratio, check_repeat, geomean, time_round_robin

__all__ = ["AUTOTUNE_SHAPES", "bench_autotune"]

# (N, C_in, H, W, C_out, k, stride, padding, groups)
AUTOTUNE_SHAPES = [
    (1, 1, 28, 28, 6, 5, 1, 2, 1),  # LeNet conv1, batch 1
    (1, 6, 14, 14, 16, 5, 1, 0, 1),  # LeNet conv2, batch 1
    (64, 6, 14, 14, 16, 5, 1, 0, 1),  # LeNet conv2, batch 64
    (128, 3, 32, 32, 16, 3, 1, 1, 1),  # ResNet-20 stem
    (128, 16, 32, 32, 16, 3, 1, 1, 1),  # stage 1
    (128, 32, 16, 16, 32, 3, 1, 1, 1),  # stage 2
    (128, 64, 8, 8, 64, 3, 1, 1, 1),  # stage 3
    (128, 16, 32, 32, 32, 3, 2, 1, 1),  # stage 1 -> 2
    (32, 128, 16, 16, 128, 3, 1, 1, 8),  # grouped: 16 channels per group
    (8, 3, 224, 224, 64, 7, 2, 3, 1),  # ImageNet stem
]

_PASSES = conv_tune.PASSES


def _cases(shape: tuple[int, ...], dtype: str = "float32") -> list[conv_tune.ConvCase]:
    n, c, h, w, k, ks, s, p, g = shape
    geo = conv2d_geometry("bench_autotune", (h, w), (ks, ks), s, p, 1)
    return [
        conv_tune.ConvCase(which, (n, c, h, w), (k, c // g, ks, ks), g, geo, dtype)
        for which in _PASSES
    ]


def bench_autotune(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out: Callable[[str], Any] = print,
    shapes: Sequence[tuple[int, ...]] | None = None,
) -> dict:
    """Tuned against threshold algorithm choices per shape (float32, current thread count).

    ``use_torch`` is accepted for the suite protocol and ignored (the peer here is the
    thresholds' choice).  Returns ``{"threads", "tune_threads", "simd", "rows": [{"shape",
    "heuristic", "tuned", "times_us" (per pass, what tuning measured), "tune_s",
    "heuristic_fwd_s", "tuned_fwd_s", "fwd_ratio", "heuristic_fwd_bwd_s",
    "tuned_fwd_bwd_s", "fwd_bwd_ratio"}], "geomean_fwd_ratio", "geomean_fwd_bwd_ratio"}``;
    fwd+bwd is the forward, input-gradient and weight-gradient kernels.
    """
    repeat = check_repeat(repeat)
    shapes = list(shapes or (AUTOTUNE_SHAPES[:4] if quick else AUTOTUNE_SHAPES))
    threads = cnncore.get_num_threads()
    simd = _selected_simd()
    out(
        f"autotuning vs thresholds (float32, {threads} threads, timing at "
        f"{conv_tune.tune_threads()} threads, conv kernels {simd}; ratio = tuned / thresholds)"
    )
    out(
        f"{'N,C,H,W -> K,k,s,p,g':<30}{'thresholds':<24}{'tuned':<24}{'fwd ms':>9}{'tuned':>9}"
        f"{'ratio':>7}{'f+b ms':>9}{'tuned':>9}{'ratio':>7}{'tune s':>8}"
    )
    rows = []
    for shape in shapes:
        cases = _cases(tuple(shape))
        heuristic: dict[str, str] = {}
        tuned: dict[str, str] = {}
        measured: dict[str, dict[str, float]] = {}
        t0 = time.perf_counter()
        for case in cases:
            h = conv_dispatch.algorithm_name(
                conv_dispatch.heuristic_conv_algorithm(
                    case.w_shape, case.groups, case.geo, case.which, case.x_shape[0], case.dtype
                )
            )
            candidates = {
                name: int(conv_dispatch.REGISTRY[name].code)
                for name in conv_dispatch.eligible_algorithms(case)
            }
            heuristic[case.which] = h
            tuned[case.which], measured[case.which] = conv_tune.measure(
                case, candidates, h if h in candidates else "gemm"
            )
        tune_s = time.perf_counter() - t0
        runners = {case.which: conv_tune._runner(case, threads) for case in cases}
        code = {name: int(a.code) for name, a in conv_dispatch.REGISTRY.items()}

        def run(choice: dict[str, str], passes: Sequence[str]) -> Callable[[], None]:
            def go() -> None:
                for p in passes:
                    runners[p](code[choice[p]])

            return go

        fns = {"h_fwd": run(heuristic, ("forward",)), "h_all": run(heuristic, _PASSES)}
        # a choice the same as the thresholds' is the same computation: ratio 1, timed once
        if tuned["forward"] != heuristic["forward"]:
            fns["t_fwd"] = run(tuned, ("forward",))
        if tuned != heuristic:
            fns["t_all"] = run(tuned, _PASSES)
        with blas_single_thread():
            times = time_round_robin(
                fns, repeat, min_time=0.02, library=dict.fromkeys(fns, "cnncore")
            )
        times.setdefault("t_fwd", times["h_fwd"])
        times.setdefault("t_all", times["h_all"])
        row = {
            "shape": tuple(shape),
            "heuristic": [heuristic[p] for p in _PASSES],
            "tuned": [tuned[p] for p in _PASSES],
            "times_us": measured,
            "tune_s": tune_s,
            "heuristic_fwd_s": times["h_fwd"],
            "tuned_fwd_s": times["t_fwd"],
            "fwd_ratio": times["t_fwd"] / times["h_fwd"],
            "heuristic_fwd_bwd_s": times["h_all"],
            "tuned_fwd_bwd_s": times["t_all"],
            "fwd_bwd_ratio": times["t_all"] / times["h_all"],
        }
        rows.append(row)
        n, c, h, w, k, ks, s, p, g = shape
        out(
            f"{f'{n},{c},{h},{w} -> {k},{ks},{s},{p},{g}':<30}"
            f"{'/'.join(row['heuristic']):<24}{'/'.join(row['tuned']):<24}"
            f"{_ms(times['h_fwd'], 9)}{_ms(times['t_fwd'], 9)}{_ratio(row['fwd_ratio'], 7)}"
            f"{_ms(times['h_all'], 9)}{_ms(times['t_all'], 9)}{_ratio(row['fwd_bwd_ratio'], 7)}"
            f"{tune_s:8.2f}"
        )
    result = {
        "threads": threads,
        "tune_threads": conv_tune.tune_threads(),
        "simd": simd,
        "rows": rows,
        "geomean_fwd_ratio": geomean([r["fwd_ratio"] for r in rows]),
        "geomean_fwd_bwd_ratio": geomean([r["fwd_bwd_ratio"] for r in rows]),
    }
    out(
        f"geometric mean ratio (tuned / thresholds): fwd {result['geomean_fwd_ratio']:.2f}, "
        f"fwd+bwd {result['geomean_fwd_bwd_ratio']:.2f}"
    )
    return result
