"""``cnncore.tune``: measure the convolution algorithms of a model ahead of time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_numel, check_shape
from ..ops import conv_dispatch, conv_tune
from .module import Module

__all__ = ["tune"]


def _input_shapes(input_shape: Any) -> tuple[list[tuple[int, ...]], bool]:
    """``([shape, ...], several)``: one shape, or a list of them for a model with several
    inputs."""
    func = "tune"
    if (
        isinstance(input_shape, (list, tuple))
        and input_shape
        and all(isinstance(s, (list, tuple)) for s in input_shape)
    ):
        shapes = [
            check_shape(s, f"input_shape[{i}]", func, len(s)) for i, s in enumerate(input_shape)
        ]
        return shapes, True
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        raise TypeError(
            f"{func}(): input_shape must be a tuple of ints (batch size first), or a list of "
            f"them for a model with several inputs. Received: input_shape={input_shape!r}"
        )
    return [check_shape(input_shape, "input_shape", func, len(input_shape))], False


def tune(
    model: Module,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    passes: Sequence[str] = ("forward", "input", "weight"),
) -> list[dict[str, Any]]:
    """Measure the convolution algorithms of ``model`` for inputs of ``input_shape``.

    Runs one eval-mode forward of ``model`` on random data of ``input_shape``; for every
    convolution it meets (:class:`~cnncore.nn.Conv2d`, :class:`~cnncore.nn.ConvTranspose2d`,
    and any layer calling :func:`cnncore.conv2d` / :func:`cnncore.conv_transpose2d`), each
    of ``passes`` is timed with every algorithm that applies and the fastest is kept: later
    convolutions with these shapes and dtype run it, in this process and -- when
    ``$CNNCORE_TUNE_CACHE`` names a file -- in later ones.  Passes tuned before (or read
    from the file) are not measured again.

    Parameters
    ----------
    model : Module
        A :class:`~cnncore.nn.Sequential`, a graph :class:`~cnncore.nn.Model`, or any module.
        Its weights, buffers and mode are left as they were.
    input_shape : tuple of ints, or list of them
        The input's shape with the batch size first, e.g. ``(128, 1, 28, 28)`` to tune
        training batches of 128 (the batch size is part of each tuned shape: tune the sizes
        you will run, e.g. again with ``(1, 1, 28, 28)`` for single-image inference).  A list
        of shapes for a model with several inputs.
    passes : sequence of {"forward", "input", "weight"}, default all three
        Which passes to tune: ``("forward",)`` for inference.

    Returns
    -------
    list of dict
        One per (convolution, pass) met, in order: its shapes and geometry in conv2d's terms
        (as :func:`cnncore.ops.conv_dispatch.tuned_algorithms`), ``algorithm`` and
        ``times_us`` (microseconds per call of each algorithm timed, empty for a choice
        tuned before).

    Notes
    -----
    The choice of each pass depends only on its shapes, dtype and this machine, never on
    :func:`cnncore.set_num_threads` (the timing runs at a fixed thread count), so results
    stay bit-identical for any thread count; algorithms may differ in the last bits, so a
    tuned model can differ from an untuned one by rounding.  See
    :func:`cnncore.set_autotune` for tuning on first use instead.

    Examples
    --------
    >>> import cnncore
    >>> model = cnncore.models.lenet5(rng=0)
    >>> report = cnncore.tune(model, (1, 1, 28, 28), passes=("forward",))
    >>> [(r["weight"], r["algorithm"] in ("gemm", "direct")) for r in report]
    [((6, 1, 5, 5), True), ((16, 6, 5, 5), True)]
    """
    func = "tune"
    if not isinstance(model, Module):
        raise TypeError(
            f"{func}(): model must be a cnncore.nn.Module. Received: {type(model).__name__}"
        )
    if isinstance(passes, str) or not isinstance(passes, Sequence) or not passes:
        raise TypeError(
            f"{func}(): passes must be a non-empty sequence of 'forward', 'input', 'weight'. "
            f"Received: passes={passes!r}"
        )
    for p in passes:
        if p not in conv_tune.PASSES:
            raise ValueError(
                f"{func}(): passes must hold only {list(conv_tune.PASSES)}. Received: "
                f"passes={passes!r}"
            )
    shapes, several = _input_shapes(input_shape)
    dtype = model.dtype
    for shape in shapes:
        check_numel(shape, "input_shape", func, dtype.itemsize)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    was_training = model.training
    model.eval()
    try:
        with conv_dispatch.tuning(tuple(dict.fromkeys(passes))) as seen:
            model(xs if several else xs[0])
    finally:
        if was_training:
            model.train()
    cache = conv_dispatch._tune_cache()
    report = []
    for case in seen:
        geo = case.geo
        entry = cache.entries.get(case)
        report.append(
            {
                "pass": case.which,
                "input": case.x_shape,
                "weight": case.w_shape,
                "groups": case.groups,
                "stride": geo.stride,
                "padding": geo.padding,
                "dilation": geo.dilation,
                "output": geo.out,
                "dtype": case.dtype,
                "algorithm": cache.get(case)
                or conv_dispatch.algorithm_name(
                    conv_dispatch.heuristic_conv_algorithm(
                        case.w_shape, case.groups, geo, case.which, case.x_shape[0], case.dtype
                    )
                ),
                "times_us": dict(entry["times_us"]) if entry is not None else {},
            }
        )
    return report
