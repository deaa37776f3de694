"""The inference suite: batch-1 and batch-8 latency of ``model.predict`` (eval mode, plans,
BatchNorm fused) against PyTorch (``torch.inference_mode()``) and onnxruntime running the
model cnncore exports, at each thread count, in the same run.

Models: :data:`INFERENCE_MODELS` (name -> builder); a model ``cnncore.models`` gains later
(ResNet-20) joins by an entry there and its input shape in :data:`INPUT_SHAPES`.  Torch
runs the model's twin (:func:`cnncore.apps.bench.twins.torch_twin`, same weights) when one
exists; onnxruntime runs ``cnncore.onnx.export``'s graph when the onnx packages are
installed.  Outputs are checked to agree before anything is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import cnncore

from .timing import time_round_robin, try_import_torch

__all__ = ["bench_inference", "INFERENCE_MODELS", "INPUT_SHAPES"]


def _builders() -> dict[str, Callable[[], Any]]:
    from cnncore import models

    table: dict[str, Callable[[], Any]] = {
        "lenet5": lambda: models.lenet5(rng=0),
        "cnn": lambda: models.simple_cnn(rng=0),  # the README's CNN
    }
    if hasattr(models, "resnet20"):  # the graph models' ResNet-20, once it exists
        table["resnet20"] = lambda: models.resnet20(rng=0)
    return table


def INFERENCE_MODELS() -> dict[str, Callable[[], Any]]:  # noqa: N802 (a table, built lazily)
    """Name -> builder of the benchmarked models (ResNet-20 joins when
    ``cnncore.models.resnet20`` exists)."""
    return _builders()


#: Per-sample input shapes (default ``(1, 28, 28)``).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"resnet20": (3, 32, 32)}


def _ort_session(model: Any, shape: tuple[int, ...], threads: int) -> Any:
    try:
        import onnxruntime as ort

        from cnncore import onnx as cn_onnx

        proto = cn_onnx.to_model_proto(model, (1, *shape))
    except (ImportError, ValueError):
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _torch_twin(model: Any) -> Any:
    from .twins import torch_twin

    try:
        return torch_twin(model).eval()
    except ValueError:  # no twin for this architecture
        return None


def bench_inference(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out: Callable[[str], Any] = print,
    threads: Sequence[int] = (1, 2),
    batches: Sequence[int] = (1, 8),
    models: Sequence[str] | None = None,
    use_ort: bool = True,
) -> dict:
    """Latency (microseconds per call, median of >= ``repeat`` samples, each the mean of
    enough calls to last 20 ms) of ``model.predict(x)`` (cnncore, the model after
    :func:`cnncore.nn.fuse`), the torch twin under ``torch.inference_mode()`` and
    onnxruntime's session, timed round-robin; ratios cnncore/torch and cnncore/onnxruntime
    (< 1: cnncore is faster).

    Returns ``{"rows": [{"model", "threads", "batch", "cnncore_us"[, "torch_us",
    "vs_torch"][, "ort_us", "vs_ort"]}]}``.
    """
    torch = try_import_torch() if use_torch else None
    builders = _builders()
    names = list(models) if models is not None else list(builders)
    if quick:
        threads, repeat = threads[:1], 7
    saved = cnncore.get_num_threads()
    out(
        f"inference latency (us per call; ratio = cnncore / peer, < 1: cnncore faster); "
        f"cnncore {cnncore.__version__}"
        + (f", torch {torch.__version__}" if torch is not None else "")
    )
    out(
        f"{'model':<10}{'thr':>4}{'batch':>6}{'cnncore':>10}{'torch':>10}{'ratio':>7}"
        f"{'onnxrt':>10}{'ratio':>7}"
    )
    rows = []
    try:
        for t in threads:
            cnncore.set_num_threads(t)
            if torch is not None:
                torch.set_num_threads(t)
            for name in names:
                if name not in builders:
                    raise ValueError(
                        f"bench_inference(): unknown model. Expected one of {sorted(builders)}. "
                        f"Received: {name!r}"
                    )
                model = cnncore.nn.fuse(builders[name]().eval())
                shape = INPUT_SHAPES.get(name, (1, 28, 28))
                twin = _torch_twin(model) if torch is not None else None
                sess = _ort_session(model, shape, t) if use_ort else None
                for n in batches:
                    rows.append(_row(name, t, n, shape, model, twin, torch, sess, repeat, out))
    finally:
        cnncore.set_num_threads(saved)
    return {"rows": rows}


def _row(
    name: str,
    t: int,
    n: int,
    shape: tuple[int, ...],
    model: Any,
    twin: Any,
    torch: Any,
    sess: Any,
    repeat: int,
    out: Callable[[str], Any],
) -> dict:
    x = np.random.default_rng(n).random((n, *shape), dtype=np.float32)
    expected = model.predict(x)
    fns: dict[str, Callable[[], object]] = {"cnncore": lambda: model.predict(x)}
    if twin is not None:
        xt = torch.from_numpy(x)

        def run_torch() -> Any:
            with torch.inference_mode():
                return twin(xt)

        np.testing.assert_allclose(run_torch().numpy(), expected, rtol=1e-4, atol=1e-4)
        fns["torch"] = run_torch
    if sess is not None:
        feed = {sess.get_inputs()[0].name: x}
        np.testing.assert_allclose(sess.run(None, feed)[0], expected, rtol=1e-4, atol=1e-4)
        fns["onnxruntime"] = lambda: sess.run(None, feed)
    times = time_round_robin(fns, repeat, min_time=0.02)
    row: dict[str, Any] = {
        "model": name,
        "threads": t,
        "batch": n,
        "cnncore_us": 1e6 * times["cnncore"],
    }
    line = f"{name:<10}{t:>4}{n:>6}{row['cnncore_us']:10.1f}"
    if "torch" in times:
        row.update(torch_us=1e6 * times["torch"], vs_torch=times["cnncore"] / times["torch"])
        line += f"{row['torch_us']:10.1f}{row['vs_torch']:7.2f}"
    else:
        line += f"{'-':>10}{'-':>7}"
    if "onnxruntime" in times:
        row.update(
            ort_us=1e6 * times["onnxruntime"], vs_ort=times["cnncore"] / times["onnxruntime"]
        )
        line += f"{row['ort_us']:10.1f}{row['vs_ort']:7.2f}"
    else:
        line += f"{'-':>10}{'-':>7}"
    out(line)
    return row
