"""Fast inference: eval-mode plans that run a chain of layers with the argument checks done
once and the output buffers reused, and :func:`fuse`, which folds BatchNorm into the
convolution or linear layer in front of it.

**Plans.** At batch size 1 a small CNN spends most of its time in Python: every layer call
re-validates its input, resolves its geometry and allocates its output.  A
:class:`Plan` does all of that once per input shape: it runs the layers normally once
(recording the shape, dtype and layout each one receives), then replaces each layer it
knows by a step that calls the same compiled kernel on the recorded shapes, writing into a
buffer allocated once -- so the results are bit-identical to the layer-by-layer forward.
A step with too little work to share (below :data:`SMALL_MACS` multiply-adds or
:data:`SMALL_ELEMENTS` elements, e.g. every layer of LeNet-5 at batch 1) runs on one
thread whatever :func:`cnncore.set_num_threads` says: a parallel region costs
microseconds, and on a loaded machine waking a second thread can take a scheduler tick;
results do not depend on the thread count.
Activations run in place on a buffer the plan owns (else into a buffer of the plan, with
the same kernel); a Conv2d followed by a ReLU is one step (the ReLU applied to the rows
each task of the convolution wrote, while they are in cache), and in a graph model so is a
residual block's Conv2d -> Add -> ReLU (the Add's other input added in the same epilogue,
in the Add's operand order, then the ReLU: ResNet-20 runs 9 such steps).  In a Sequential
(float32) a Conv2d followed by a MaxPool2d(2) -- and the ReLU, which the eval forward runs
after the pooling -- is one step too: on the channel-blocked algorithm each task pools the
convolution rows it computed and rectifies the pooled rows (the convolution output is never
written; the README CNN runs in 6 steps).  Layers without a planner
(user modules, Softmax, AvgPool2d, ...) are called as they are.  Parameters are read from
the layers at every call (an optimizer step or ``load_state_dict`` is seen at once); a
convolution on the channel-blocked algorithm keeps its weights packed for the kernel
(:class:`PackedWeights`), compared with the layer's arrays at every call -- or, in a model
made by :func:`fuse`, trusted until the arrays are replaced or
:data:`cnncore._parameter.WEIGHTS_VERSION` changes (optimizer steps, ``load_state_dict``,
``set_weights``; code that writes into a fused model's weights in place calls
:meth:`~cnncore.nn.Parameter.mark_changed`).  Such a convolution of at least
:data:`PAR_MACS` multiply-adds runs on every thread even at batch size 1 (bands of output
rows).  The layers' configuration is assumed fixed after construction, as everywhere in
cnncore.
A plan runs one call at a time (a lock): a call from another thread meanwhile runs the
layers one by one, so concurrent calls of one model stay correct.

:class:`~cnncore.nn.Sequential` uses a plan for every eval-mode ``forward`` (so
``predict``, ``evaluate`` and validation passes), keyed by input shape and dtype.  A graph
model (:class:`~cnncore.nn.Model`) runs a :class:`GraphPlan` per input shape from the second
call of that shape on (the first runs the layers one by one): the same planned steps, plus
:data:`MULTI_PLANNERS` for merge layers (Add), on buffers reused once no later step reads
the value they hold; an activation or an Add whose input nothing reads afterwards
overwrites it.  The buffers of both kinds of plan come from a :class:`BytePool` (byte
arrays viewed with each step's shape and dtype), so LeNet-5 runs in two buffers and
ResNet-20 in three, which stay in cache.  :data:`PLANNERS` maps a registry name to a
planner; a new layer whose eval forward is a kernel call adds one.

**Fusion.** :func:`fuse` returns a copy of a model in which each BatchNorm (with running
statistics) directly after a Conv2d, ConvTranspose2d or Linear (in a Sequential; in a graph
model: reading only that layer's output, which nothing else reads) is folded into that
layer's weight and bias: ``w' = w * s`` (per output channel),
``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``,
computed in float64.  The fused model computes the same function to rounding (1e-6
relative in float32) with one layer fewer; like PyTorch's ``fuse_modules`` it is a snapshot
for inference -- later changes of the original are not seen, and its own weights are
packed once (see above: write them through an optimizer, ``load_state_dict`` or a new
array, or call :meth:`~cnncore.nn.Parameter.mark_changed`).
"""

from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._config import SMALL_ELEMENTS, SMALL_MACS, blas_single_thread, get_num_threads
from .._geometry import ConvGeometry
from .._parameter import WEIGHTS_VERSION
from .._shared import ConvAlgorithm
from ..ops import conv as _conv_ops
from ..ops.activation import unary_inplace
from ..ops.conv import prepare_conv2d
from ..ops.conv_dispatch import select_conv_algorithm
from ..ops.linear import prepare_linear
from ..ops.norm import prepare_batch_norm_eval
from ..ops.pool import prepare_global_avg_pool2d, prepare_max_pool2d
from .module import Module, layer_input_error, registered_name

__all__ = [
    "Plan",
    "plan_layer",
    "fuse",
    "fold_into",
    "GraphEvalSteps",
    "GraphPlan",
    "GraphPlans",
    "BytePool",
    "MULTI_PLANNERS",
    "batch_norm_eval_call",
    "PLANNERS",
    "MAX_PLANS",
    "SMALL_MACS",
    "SMALL_ELEMENTS",
    "step_threads",
    "PackedWeights",
    "PAR_MACS",
    "LINEAR_PAR_MACS",
    "POOL_PAR_ELEMENTS",
]

#: Plans a Sequential keeps (one per input shape and dtype), least recently used dropped.
MAX_PLANS = 4

#: A step: ``run(x) -> y`` and whether ``y`` is a buffer the plan owns (may be overwritten).
Step = tuple[Callable[[np.ndarray], np.ndarray], bool]
#: ``planner(layer, x, owned, alloc) -> step or None``: ``x`` is an input the layer received
#: in the recording run (its shape, dtype and layout are those of every later call),
#: ``owned`` whether the plan owns it and nothing reads it after this step (the step may
#: overwrite it), ``alloc(shape, dtype)`` gives the step's output buffer (a graph plan
#: reuses the buffers of values no later step reads).  None: call the layer itself.
Planner = Callable[..., "Step | None"]
#: ``alloc(shape, dtype) -> ndarray``: a C-contiguous buffer a step writes its output into.
Alloc = Callable[[tuple[int, ...], np.dtype], np.ndarray]


def _contiguous(x: np.ndarray, dtype: np.dtype) -> bool:
    return x.dtype == dtype and x.flags.c_contiguous


def _packed_applies(
    wd: np.ndarray,
    bd: np.ndarray | None,
    w_shape: tuple[int, ...],
    groups: int,
    geo: ConvGeometry,
    x_shape: tuple[int, ...],
    dtype: np.dtype,
) -> bool:
    """Whether a conv step runs on its packed weights at this call: the algorithm chosen
    now (a conv_algorithm() block, cnncore.tune) is the blocked one and the layer's weight
    and bias are still contiguous arrays of the plan's dtype and shape."""
    return (
        _BLOCKED == select_conv_algorithm(w_shape, groups, geo, "forward", x_shape, dtype)
        and _contiguous(wd, dtype)
        and wd.shape == w_shape
        and (bd is None or _contiguous(bd, dtype))
    )


def step_threads(work: int, small: int) -> int | None:
    """The thread count of a step, fixed when the plan is made: 1 below ``small`` units of
    work (:data:`SMALL_MACS` multiply-adds or :data:`SMALL_ELEMENTS` elements, the same
    bounds as :func:`cnncore._config.threads_for` applies to single calls); else None
    (:func:`cnncore.get_num_threads` at each call).  Results are bit-identical for any
    thread count, so this is a speed choice only."""
    return 1 if work < small else None


def conv2d_layer_kernel(
    layer: Any, x_shape: tuple[int, ...], dtype: Any
) -> tuple[Callable[..., Any], tuple[int, ...]]:
    """``(run, out_shape)`` of :func:`cnncore.ops.conv.prepare_conv2d` for a Conv2d
    ``layer`` (zero padding) on inputs of ``x_shape`` and ``dtype``, on one thread when the
    convolution has fewer than :data:`SMALL_MACS` multiply-adds.  Plans and the layer's own
    prepared call (:mod:`cnncore.nn.conv`) both use it."""
    w_shape = layer.weight.data.shape
    args = (x_shape, w_shape, dtype, layer.stride, layer.padding, layer.dilation, layer.groups)
    run, out_shape = prepare_conv2d(*args)
    if step_threads(math.prod(out_shape) * math.prod(w_shape[1:]), SMALL_MACS) is not None:
        run, out_shape = prepare_conv2d(*args, n_threads=1)  # (too little work to share)
    return run, out_shape


def linear_layer_kernel(
    layer: Any, x_shape: tuple[int, ...]
) -> tuple[Callable[..., Any], tuple[int, ...]]:
    """``(run, out_shape)`` of :func:`cnncore.ops.linear.prepare_linear` for a Linear
    ``layer`` on inputs of ``x_shape``, on one thread below :data:`SMALL_MACS`
    multiply-adds (plans and the layer's prepared call)."""
    w_shape = layer.weight.data.shape
    macs = math.prod(x_shape) * w_shape[0]
    return prepare_linear(x_shape, w_shape, step_threads(macs, SMALL_MACS))


#: A planned convolution of at least this many multiply-adds runs on
#: :func:`cnncore.get_num_threads` threads even at batch size 1 (the channel-blocked kernel
#: then splits the sample's output rows into bands; below this, one thread): measured at
#: batch 1 on 2 cores, a 16 -> 16 3x3 convolution of 32 x 32 pixels (2.4 M) took 37 us on
#: one thread and 23 on two, 32 -> 64 at stride 2 (1.2 M) 17 and 12.
PAR_MACS = 1 << 20

_BLOCKED = int(ConvAlgorithm.ALGO_BLOCKED)

#: A planned max pooling of at least this many input elements runs on
#: :func:`cnncore.get_num_threads` threads (below it, one; :data:`SMALL_ELEMENTS` for single
#: calls): the README CNN's first pooling at batch 8 (8 x 32 x 28 x 28, 200 K elements) took
#: 19.4-19.9 us on one thread and 11.2-13.7 on two (2-core AVX-512 VM, best of 9).
POOL_PAR_ELEMENTS = 1 << 17


class PackedWeights:
    """A Conv2d's weights (and bias) packed for the channel-blocked forward of one output
    geometry, with a copy of the values packed.

    In a model made by :func:`fuse` (its layers marked ``_frozen_weights``: an inference
    snapshot) :meth:`get` packs again only when the layer holds other arrays or
    :data:`cnncore._parameter.WEIGHTS_VERSION` changed (optimizer steps,
    ``load_state_dict``, ``set_weights``, :meth:`~cnncore.nn.Parameter.mark_changed`).
    Elsewhere every :meth:`get` compares the arrays with the copy (bytewise, in C) and packs
    again when they differ, so any write is seen -- at batch 1 that comparison reads every
    weight once more per forward (ResNet-20: about 100-190 us of its 700-930, out of L3),
    which is why fused models trust the version instead."""

    __slots__ = ("args", "packed", "saved", "fresh", "frozen", "key")

    def __init__(self, layer: Any, args: tuple[int, ...], size: int, dtype: Any) -> None:
        self.args = args  # sh, sw, dh, dw, groups, Ho, Wo
        self.packed = np.empty(size, dtype)
        w = layer.weight.data
        self.saved = np.empty(w.size + w.shape[0], dtype)
        self.fresh = True  # nothing packed yet
        self.frozen = bool(layer.__dict__.get("_frozen_weights", False))
        self.key: tuple = ()

    def get(self, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """The packing of ``w`` and ``b`` (the layer's arrays, of the planned shapes and
        dtype, C-contiguous)."""
        if self.frozen:
            k = self.key
            if k and k[0] == WEIGHTS_VERSION[0] and k[1] is w and k[2] is b:
                return self.packed
            self.key = (WEIGHTS_VERSION[0], w, b)
        _conv_ops._conv.blocked_refresh_packed(
            w, b, self.saved, self.packed, *self.args, self.fresh
        )
        self.fresh = False
        return self.packed


def _plan_conv2d(
    layer: Any,
    x: np.ndarray,
    owned: bool,
    alloc: Alloc = np.empty,
    relu: bool = False,
    residual: np.ndarray | None = None,
    residual_first: bool = False,
    pool: Any = None,
) -> Step | None:
    """A Conv2d step; with ``relu`` the step also applies the ReLU that follows it (the
    same kernel's rule, so the same bits as the two steps).  With ``residual`` (an array
    like the ones the step will add: the convolution's output shape and dtype,
    C-contiguous) the step's ``run`` takes ``[x, r]`` and computes ``conv(x) + r`` (``r +
    conv(x)`` with ``residual_first``: a graph's Add, operands in its order) before the
    ReLU -- each task of the kernel adds and rectifies the rows it wrote while they are in
    cache, the same float operations as the Add and ReLU steps; None when ``residual``
    does not fit.  With ``pool`` (a MaxPool2d of 2x2 windows at stride 2, see
    :func:`_pool_fusable`; float32 only, else None) the step computes
    ``max_pool2d(conv(x), 2)`` and then the ReLU: on the channel-blocked algorithm each
    task pools the convolution rows it computed and rectifies the pooled rows
    (``_conv.blocked_forward_packed_pool``: the convolution output is never written), on
    any other the conv, MaxPool2d and ReLU steps' kernels one after the other."""
    if layer.padding_mode != "zeros" or not _contiguous(x, layer.dtype) or x.ndim != 4:
        return None  # (an unbatched sample or a bad input: the layer's own forward)
    if pool is not None and (residual is not None or x.dtype != np.float32 or x.size == 0):
        return None
    w = layer.weight
    b = layer.bias
    run, out_shape = conv2d_layer_kernel(layer, x.shape, x.dtype)
    conv_shape = tuple(out_shape)
    if pool is not None:
        pool_run, out_shape = prepare_max_pool2d(
            conv_shape,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            pool.dilation,
            pool.ceil_mode,
            n_threads=step_threads(math.prod(conv_shape), POOL_PAR_ELEMENTS),
        )
        if math.prod(out_shape) == 0:
            return None
    if residual is not None and (
        type(residual) is not np.ndarray
        or residual.shape != tuple(out_shape)
        or not _contiguous(residual, x.dtype)
    ):
        return None
    out = alloc(out_shape, x.dtype)
    w_shape = w.data.shape
    macs = math.prod(conv_shape) * math.prod(w_shape[1:])
    x_shape, dtype = x.shape, x.dtype
    geo, groups = _conv_ops._conv_setup(
        "conv2d", x_shape, w_shape, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    if x.size == 0 or macs == 0 or dtype == np.float64:  # (the blocked kernels: float32 only)
        packed = None
    else:
        (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
        kh, kw = w_shape[2:]
        size = _conv_ops._conv.blocked_packed_size(
            x_shape[1], w_shape[0], kh, kw, sh, sw, dh, dw, groups, *geo.out,
            dtype == np.float64,
        )  # fmt: skip
        packed = PackedWeights(layer, (sh, sw, dh, dw, groups, *geo.out), size, dtype)
        fwd = _conv_ops._conv.blocked_forward_packed_res
        args = (kh, kw, sh, sw, ph, pw, dh, dw, groups, residual_first, relu)
    nt = 1 if macs < PAR_MACS else None
    ent = step_threads(math.prod(out_shape), SMALL_ELEMENTS)
    add = np.add
    if pool is not None:  # (packed: pool needs a non-empty x and output)
        return _conv_pool_step(
            run, pool_run, packed, (kh, kw, sh, sw, ph, pw, dh, dw, groups, *geo.out, relu),
            (w, b, w_shape, groups, geo, x_shape, dtype), conv_shape, out, nt, ent, relu,
        )  # fmt: skip

    def conv(x: np.ndarray, r: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        wd = w.data
        bd = None if b is None else b.data
        if packed is not None and _packed_applies(wd, bd, w_shape, groups, geo, x_shape, dtype):
            fwd(x, packed.get(wd, bd), r, out, *args, nt or get_num_threads())
            return out
        run(x, wd, bd, out)
        if r is not None:  # (the Add step's sum, operands in its order)
            if residual_first:
                add(r, out, out=out)
            else:
                add(out, r, out=out)
        if relu:
            unary_inplace("relu", out, 0.0, ent)
        return out

    if residual is None:
        return (lambda x: conv(x, None, out)), True
    return (lambda xs: conv(xs[0], xs[1], out)), True


def _conv_pool_step(
    run: Callable[..., Any],
    pool_run: Callable[..., Any],
    packed: PackedWeights | None,
    args: tuple,
    conv: tuple,
    conv_shape: tuple[int, ...],
    out: np.ndarray,
    nt: int | None,
    ent: int | None,
    relu: bool,
) -> Step:
    """The step of :func:`_plan_conv2d` with ``pool``: ``conv`` is ``(weight, bias, weight
    shape, groups, geometry, x shape, dtype)``, ``args`` the pooled kernel's geometry."""
    w, b, w_shape, groups, geo, x_shape, dtype = conv
    fwd = _conv_ops._conv.blocked_forward_packed_pool
    spare: list[np.ndarray] = []  # the convolution's output when another algorithm runs

    def step(x: np.ndarray) -> np.ndarray:
        wd = w.data
        bd = None if b is None else b.data
        if packed is not None and _packed_applies(wd, bd, w_shape, groups, geo, x_shape, dtype):
            fwd(x, packed.get(wd, bd), out, *args, nt or get_num_threads())
            return out
        if not spare:
            spare.append(np.empty(conv_shape, dtype))
        pool_run(run(x, wd, bd, spare[0]), out)
        if relu:
            unary_inplace("relu", out, 0.0, ent)
        return out

    return step, True


def _pool_fusable(layer: Any, pool: Any) -> bool:
    """Whether ``layer`` is a Conv2d and ``pool`` a MaxPool2d of 2x2 windows at stride 2
    (no padding or dilation, floor mode; exactly those classes), both in eval mode: one
    conv step pools its output (:func:`_plan_conv2d` with ``pool``)."""
    return (
        pool is not None
        and registered_name(type(layer)) == "Conv2d"
        and registered_name(type(pool)) == "MaxPool2d"
        and not layer.training
        and not pool.training
        and tuple(pool.kernel_size) == (2, 2)
        and tuple(pool.stride) == (2, 2)
        and tuple(pool.padding) == (0, 0)
        and tuple(pool.dilation) == (1, 1)
        and not pool.ceil_mode
    )


#: A planned Linear of at least this many multiply-adds runs on
#: :func:`cnncore.get_num_threads` threads (the kernel splits the output features): the
#: README CNN's 3136 -> 128 at batch 1 (0.4 M, its weights 1.6 MB) took 21 us on one
#: thread and 16.6 on two.
LINEAR_PAR_MACS = 1 << 18


def _plan_linear(layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step | None:
    if not _contiguous(x, layer.dtype):
        return None
    w = layer.weight
    b = layer.bias
    w_shape = w.data.shape
    if math.prod(x.shape) * w_shape[0] >= LINEAR_PAR_MACS:
        run, out_shape = prepare_linear(x.shape, w_shape, None)
    else:
        run, out_shape = linear_layer_kernel(layer, x.shape)
    out = alloc(out_shape, x.dtype)
    if b is None:
        return (lambda x: run(x, w.data, None, out)), True
    return (lambda x: run(x, w.data, b.data, out)), True


def _plan_max_pool(layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step | None:
    if x.dtype.kind != "f" or not x.flags.c_contiguous or x.ndim != 4:
        return None
    run, out_shape = prepare_max_pool2d(
        x.shape,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.ceil_mode,
        n_threads=step_threads(x.size, POOL_PAR_ELEMENTS),
    )
    out = alloc(out_shape, x.dtype)
    return (lambda x: run(x, out)), True


def _plan_global_avg_pool(
    layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty
) -> Step | None:
    if x.dtype.kind != "f" or not x.flags.c_contiguous or x.ndim != 4 or x.size == 0:
        return None
    run, out_shape = prepare_global_avg_pool2d(x.shape, step_threads(x.size, SMALL_ELEMENTS))
    out = alloc(out_shape, x.dtype)
    return (lambda x: run(x, out)), True


def _plan_activation(name: str, slope: Callable[[Any], float] | None = None) -> Planner:
    def plan(layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step | None:
        if type(x) is not np.ndarray or x.dtype.kind != "f" or not x.flags.c_contiguous:
            return None
        s = 0.0 if slope is None else slope(layer)
        nt = step_threads(x.size, SMALL_ELEMENTS)
        if owned:  # in place: nothing reads the input after this step
            return (lambda x: unary_inplace(name, x, s, nt)), True
        out = alloc(x.shape, x.dtype)  # (the same kernel, into a buffer of the plan)
        return (lambda x: unary_inplace(name, x, s, nt, out)), True

    return plan


def _plan_flatten(layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step | None:
    shape = layer.output_shape(x.shape)
    return (lambda x: x.reshape(shape)), owned


def _plan_identity(layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step | None:
    return (lambda x: x), owned  # Dropout in eval mode


def _plan_batch_norm(
    layer: Any, x: np.ndarray, owned: bool, alloc: Alloc = np.empty
) -> Step | None:
    if not _bn_runs_eval(layer, x):
        return None
    run = _prepared_bn(layer, x, step_threads(x.size, SMALL_ELEMENTS))
    out = alloc(x.shape, x.dtype)
    return (lambda x: run(x, out)), True


PLANNERS: dict[str, Planner] = {
    "Conv2d": _plan_conv2d,
    "Linear": _plan_linear,
    "MaxPool2d": _plan_max_pool,
    "GlobalAvgPool2d": _plan_global_avg_pool,
    "ReLU": _plan_activation("relu"),
    "LeakyReLU": _plan_activation("leaky_relu", lambda m: m.negative_slope),
    "Sigmoid": _plan_activation("sigmoid"),
    "Tanh": _plan_activation("tanh"),
    "Flatten": _plan_flatten,
    "Dropout": _plan_identity,
    "BatchNorm1d": _plan_batch_norm,
    "BatchNorm2d": _plan_batch_norm,
}
"""Registry name -> planner (see :data:`Planner`); layers not listed are called as they are."""


def _plan_add(layer: Any, xs: list[Any], owned: list[bool], alloc: Alloc) -> Step | None:
    """Add of same-shape float arrays: ``xs[0] + xs[1] (+ xs[2] ...)`` left to right, as
    the layer computes it, into an input nothing reads after this step (``owned``) or a
    buffer of the plan."""
    a0 = xs[0]
    if len(xs) < 2 or type(a0) is not np.ndarray or a0.dtype.kind != "f":
        return None
    for a in xs:
        if type(a) is not np.ndarray or a.shape != a0.shape or a.dtype is not a0.dtype:
            return None
    add = np.add
    rest = range(2, len(xs))
    if owned[0] or owned[1]:
        k = 0 if owned[0] else 1  # (a + b == b + a bit for bit)

        def run_in_place(xs: list[np.ndarray]) -> np.ndarray:
            y = add(xs[0], xs[1], out=xs[k])
            for i in rest:
                add(y, xs[i], out=y)
            return y

        return run_in_place, True
    out = alloc(a0.shape, a0.dtype)

    def run(xs: list[np.ndarray]) -> np.ndarray:
        add(xs[0], xs[1], out=out)
        for i in rest:
            add(out, xs[i], out=out)
        return out

    return run, True


#: Registry name -> planner of a layer called on a list of arrays (a graph model's merge
#: layers): ``planner(layer, xs, owned, alloc)`` with ``owned`` per input.
MULTI_PLANNERS: dict[str, Callable[..., Step | None]] = {"Add": _plan_add}


def _relu_fusable(layer: Any, nxt: Any) -> bool:
    """Whether ``layer`` is a Conv2d and ``nxt`` a ReLU (exactly those classes) in eval
    mode, which one conv step with its ReLU runs."""
    return (
        nxt is not None
        and registered_name(type(layer)) == "Conv2d"
        and registered_name(type(nxt)) == "ReLU"
        and not layer.training
        and not nxt.training
    )


def plan_layer(layer: Module, x: np.ndarray, owned: bool, alloc: Alloc = np.empty) -> Step:
    """The step that runs ``layer`` (in eval mode) on inputs like ``x``: its planner's, or a
    call of the layer itself (whose output the plan does not own)."""
    # registry names are per class: a subclass (another forward) has its own, and no planner
    planner = PLANNERS.get(registered_name(type(layer)) or "")
    step = planner(layer, x, owned, alloc) if planner is not None else None
    if step is None:
        return layer.__call__, False
    return step


class Plan:
    """The steps of an eval-mode forward of ``layers`` on one input shape and dtype.

    Built by :meth:`record` (one normal layer-by-layer forward); :meth:`run` then runs the
    steps and returns a new array (the last buffer is reused by the next call, so it is
    copied out).  ``dtype`` is the model dtype inputs are converted to.
    """

    def __init__(self, layers: Sequence[Module], steps: Sequence[Step], dtype: np.dtype) -> None:
        self.layers = list(layers)  # kept alive: a container keys its plans by their ids
        self.steps = list(steps)
        self.dtype = dtype
        self.lock = threading.Lock()  # one call at a time runs in the plan's buffers

    @classmethod
    def record(
        cls, layers: Sequence[Module], x: np.ndarray, indices: Sequence[int] | None = None
    ) -> tuple[Plan, np.ndarray]:
        """Run ``layers`` on ``x`` one by one (in eval mode) and build the plan from the
        inputs they receive; returns the plan and the output of this run.  A layer that
        rejects its input is named by its index in ``indices`` (the container's numbering)."""
        steps: list[Step] = []
        owned = False
        h = x
        pool = BytePool()
        root: np.ndarray | None = None  # the buffer the current value lives in
        fused = 0  # layers after this one (a MaxPool2d, a ReLU) an earlier step applied
        for k, layer in enumerate(layers):
            try:
                if fused:
                    fused -= 1
                    h = layer(h)
                    continue
                taken: list[np.ndarray] = []
                nxt = layers[k + 1] if k + 1 < len(layers) else None
                step = None
                if _pool_fusable(layer, nxt):
                    # Conv2d -> MaxPool2d(2) (-> ReLU: the order an eval forward runs them)
                    nxt2 = layers[k + 2] if k + 2 < len(layers) else None
                    relu = nxt2 is not None and _relu_fusable(layer, nxt2)
                    step = _plan_conv2d(layer, h, owned, pool.taking(taken), relu, pool=nxt)
                    fused = 0 if step is None else 1 + relu
                if step is None and _relu_fusable(layer, nxt):
                    step = _plan_conv2d(layer, h, owned, pool.taking(taken), relu=True)
                    fused = int(step is not None)
                if step is None:
                    step = plan_layer(layer, h, owned, pool.taking(taken))
                steps.append(step)
                owned = step[1]
                if taken:  # a new buffer: the input's is free once this step has run
                    if root is not None:
                        pool.release(root)
                    root = taken[-1]
                elif not owned:  # a layer call: its output may view the input's buffer,
                    root = None  # which is then never reused
                h = layer(h)
            except (ValueError, TypeError) as exc:
                index = k if indices is None else indices[k]
                raise layer_input_error(exc, index, layer, h.shape) from exc
        return cls(layers, steps, x.dtype), h

    def run(self, x: np.ndarray) -> np.ndarray | None:
        """The output for ``x``; None when another thread is running this plan (its buffers
        are in use: the caller runs the layers instead)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            with blas_single_thread():
                for step, _ in self.steps:
                    x = step(x)
            return np.array(x, copy=True)
        finally:
            self.lock.release()


class PlanCache:
    """The plans of one container by key (the container's choice: input shape and dtype,
    the ids of its layers), the least recently used dropped beyond :data:`MAX_PLANS`."""

    def __init__(self) -> None:
        self._plans: OrderedDict[Any, Plan] = OrderedDict()

    def get(self, key: Any) -> Plan | None:
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        return plan

    def record(
        self,
        key: Any,
        layers: Sequence[Module],
        x: np.ndarray,
        indices: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Record the plan of ``layers`` for ``x`` under ``key`` (None: do not keep it) and
        return this run's output."""
        plan, out = Plan.record(layers, x, indices)
        if key is not None:
            self._plans[key] = plan
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        return np.array(out, copy=True)

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)

    def __deepcopy__(self, memo: dict[int, Any]) -> PlanCache:
        return type(self)()  # a copied model plans its own layers

    def __copy__(self) -> PlanCache:
        return type(self)()


# --------------------------------------------------------------------------------------------
# graph models
# --------------------------------------------------------------------------------------------


class BytePool:
    """The buffers of a plan: byte arrays, each step's output a view of one with the step's
    shape and dtype; a released buffer goes to the next step that fits in it (the smallest
    free one that does), so a chain of layers runs in a few buffers that stay in cache."""

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(raw, view)``: a free (or new) buffer and its view of ``shape`` and ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        fits = [i for i, b in enumerate(self.free) if b.size >= nbytes]
        if fits:
            raw = self.free.pop(min(fits, key=lambda i: self.free[i].size))
        else:
            raw = np.empty(nbytes, np.uint8)
        return raw, raw[:nbytes].view(dtype).reshape(shape)

    def taking(self, taken: list[np.ndarray]) -> Alloc:
        """An ``alloc`` for a planner that records the raw buffers it hands out."""

        def alloc(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            raw, view = self.take(tuple(shape), dtype)
            taken.append(raw)
            return view

        return alloc

    def release(self, raw: np.ndarray) -> None:
        self.free.append(raw)


def _identity(x: Any) -> Any:
    return x


def _relu_after(steps: Sequence[tuple], k: int, readers: dict[int, int]) -> bool:
    """Whether graph step ``k`` is a Conv2d call whose output only the next step reads,
    a call of a ReLU (:func:`_relu_fusable`) that no other module shares."""
    if k + 1 >= len(steps):
        return False
    layer, _, _, out, _, _, _ = steps[k]
    nxt, ins, multi, _, free, shared, _ = steps[k + 1]
    return (
        not multi
        and shared is None
        and ins == (out,)
        and out in free
        and readers.get(out) == 1
        and _relu_fusable(layer, nxt)
    )


def _residual_after(
    steps: Sequence[tuple], k: int, readers: dict[int, int]
) -> tuple[int, bool, bool] | None:
    """``(residual slot, residual_first, relu)`` when graph step ``k`` is a Conv2d call
    (eval mode, not shared) whose output only the next step reads, an Add (not shared) of
    it and one other value -- which is computed before step ``k + 1``, so the conv step can
    add it -- optionally followed by a ReLU (not shared) that alone reads the sum; else
    None.  The conv step then runs all two or three (:func:`_plan_conv2d` with
    ``residual``)."""
    if k + 1 >= len(steps):
        return None
    layer, _, multi, out, _, shared, _ = steps[k]
    add, ins, add_multi, add_out, free, add_shared, _ = steps[k + 1]
    if (
        multi
        or shared is not None
        or add_shared is not None
        or not add_multi
        or len(ins) != 2
        or ins.count(out) != 1
        or out not in free
        or readers.get(out) != 1
        or registered_name(type(layer)) != "Conv2d"
        or registered_name(type(add)) != "Add"
        or layer.training
    ):
        return None
    r = ins[1] if ins[0] == out else ins[0]
    relu = False
    if k + 2 < len(steps):
        nxt, rins, rmulti, _, rfree, rshared, _ = steps[k + 2]
        relu = (
            not rmulti
            and rshared is None
            and rins == (add_out,)
            and add_out in rfree
            and readers.get(add_out) == 1
            and registered_name(type(nxt)) == "ReLU"
            and not nxt.training
        )
    return r, ins[0] == r, relu


def _root(a: Any, mine: dict[int, np.ndarray]) -> np.ndarray | None:
    """The plan buffer whose memory ``a`` is (or views), else None."""
    while type(a) is np.ndarray:
        if mine.get(id(a)) is a:
            return a
        a = a.base
    return None


class GraphPlan:
    """The eval-mode forward of a graph model (:class:`~cnncore.nn.Model`) on one set of
    input shapes and dtypes: per step a planner's kernel call (:data:`PLANNERS`,
    :data:`MULTI_PLANNERS`) or the layer's own forward, each value in a buffer of the plan
    (:class:`BytePool`) -- a buffer is reused by a later step once no step reads the value
    it holds, and an activation or an Add overwrites an input nothing reads after it, so
    ResNet-20 runs in three 64 KB buffers at batch 1 that stay in cache.  Bit-identical to
    the layer-by-layer forward (the same kernels); the outputs are copied out.

    Built by :meth:`build`, which runs the steps once (that is how it learns which buffer
    each value lives in: an unplanned layer may return a view of its input).
    """

    def __init__(self, model: Any, steps: list[tuple], copy_out: list[bool]) -> None:
        self.model = model
        self.steps = steps
        self.copy_out = copy_out
        self.lock = threading.Lock()  # one call at a time runs in the plan's buffers

    @classmethod
    def build(
        cls, model: Any, xs: Sequence[np.ndarray], call: Callable[[tuple], Callable]
    ) -> tuple[GraphPlan, list[np.ndarray]]:
        """The plan of ``model`` for inputs like ``xs`` and the outputs of this run on
        ``xs``; ``call(step)`` gives ``run(x) -> y`` for a step of the model's own
        (``model._steps``) that no planner takes (the layer's forward, its output checked)."""
        vals: list[Any] = [None] * model._n_slots
        for s, a in zip(model._in_slots, xs, strict=True):
            vals[s] = a
        roots: list[np.ndarray | None] = [None] * model._n_slots
        refs: dict[int, int] = {}  # id(buffer) -> values living in it
        mine: dict[int, np.ndarray] = {}
        pool = BytePool()
        steps: list[tuple] = []
        readers: dict[int, int] = {}  # slot -> steps reading it (and model outputs)
        for _, ins, *_ in model._steps:
            for s in ins:
                readers[s] = readers.get(s, 0) + 1
        for s in model._out_slots:
            readers[s] = readers.get(s, 0) + 1
        all_steps = model._steps
        fused = 0  # steps (a ReLU, an Add) after this one whose layers an earlier step ran
        for k, step in enumerate(all_steps):
            layer, ins, multi, out, free, shared, _ = step
            run_ins, run_multi = ins, multi  # (a conv step with its Add reads the residual)

            def alloc(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
                raw, view = pool.take(tuple(shape), dtype)
                mine[id(raw)] = raw
                return view

            owned = [
                roots[s] is not None and s in free and ins.count(s) == 1 and refs[id(roots[s])] == 1
                for s in ins
            ]
            name = registered_name(type(layer)) or ""
            planned: Step | None = None
            res = None if fused else _residual_after(all_steps, k, readers)
            try:
                if fused:  # (the ReLU / Add the conv step ran: its output is this step's)
                    planned, fused = (_identity, False), fused - 1
                    run_ins, run_multi = (all_steps[k - 1][3],), False
                elif res is not None and (
                    planned := _plan_conv2d(
                        layer, vals[ins[0]], owned[0], alloc, res[2], vals[res[0]], res[1]
                    )
                ):
                    fused = 2 if res[2] else 1
                    run_ins, run_multi = (ins[0], res[0]), True
                elif not multi and shared is None and _relu_after(all_steps, k, readers):
                    planned = _plan_conv2d(layer, vals[ins[0]], owned[0], alloc, relu=True)
                    fused = int(planned is not None)
                    if planned is None:
                        planned = PLANNERS["Conv2d"](layer, vals[ins[0]], owned[0], alloc)
                elif multi:
                    multi_planner = MULTI_PLANNERS.get(name)
                    if multi_planner is not None:
                        planned = multi_planner(layer, [vals[s] for s in ins], owned, alloc)
                else:
                    planner = PLANNERS.get(name)
                    if planner is not None:
                        planned = planner(layer, vals[ins[0]], owned[0], alloc)
            except (ValueError, TypeError):
                planned = None  # (the layer's own forward reports a bad input)
                run_ins, run_multi = ins, multi
            run = call(step) if planned is None else planned[0]
            y = run([vals[s] for s in run_ins] if run_multi else vals[run_ins[0]])
            vals[out] = y
            r = _root(y, mine)
            roots[out] = r
            if r is not None:
                refs[id(r)] = refs.get(id(r), 0) + 1
            for s in free:
                r = roots[s]
                vals[s] = roots[s] = None
                if r is not None:
                    refs[id(r)] -= 1
                    if refs[id(r)] == 0:
                        pool.release(r)
            steps.append((run, run_ins, run_multi, out, free))
        copy_out = [roots[s] is not None for s in model._out_slots]
        plan = cls(model, steps, copy_out)
        return plan, plan._outputs(vals)

    def _outputs(self, vals: list[Any]) -> list[np.ndarray]:
        return [
            np.array(vals[s], copy=True) if c else vals[s]
            for s, c in zip(self.model._out_slots, self.copy_out, strict=True)
        ]

    def run(self, xs: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """The outputs for ``xs`` (arrays of the shapes and dtypes planned, converted);
        None when another thread is running this plan (the caller runs the layers)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            model = self.model
            vals: list[Any] = [None] * model._n_slots
            for s, a in zip(model._in_slots, xs, strict=True):
                vals[s] = a
            with blas_single_thread():
                for run, ins, multi, out, free in self.steps:
                    vals[out] = run([vals[s] for s in ins] if multi else vals[ins[0]])
                    for s in free:
                        vals[s] = None
            return self._outputs(vals)
        finally:
            self.lock.release()


class GraphPlans(PlanCache):
    """A graph model's :class:`GraphPlan` per input shapes and dtypes: the first call of a
    shape runs the layers one by one (its checks and error messages, the layers' caches
    dropped), the second builds the plan (which that call's output comes from), later ones
    run it."""

    def run(
        self,
        model: Any,
        xs: list[np.ndarray],
        layerwise: Callable[[list[np.ndarray]], list[np.ndarray]],
        call: Callable[[tuple], Callable],
    ) -> list[np.ndarray]:
        key = tuple((a.shape, a.dtype.str) for a in xs)
        plan = self.get(key)
        if plan is not None:
            outs = plan.run(xs)  # type: ignore[attr-defined]
            return layerwise(xs) if outs is None else outs  # (None: in use by another thread)
        plans = self._plans
        if key not in plans:  # first call of this shape: mark it
            outs = layerwise(xs)
            plans[key] = None  # type: ignore[assignment]
        else:
            with blas_single_thread():
                plan, outs = GraphPlan.build(model, xs, call)
            plans[key] = plan  # type: ignore[assignment]
            plans.move_to_end(key)
        while len(plans) > MAX_PLANS:
            plans.popitem(last=False)
        return outs


# --------------------------------------------------------------------------------------------
# fuse
# --------------------------------------------------------------------------------------------


def _foldable(prev: Any, bn: Any) -> bool:
    name_p, name_b = registered_name(type(prev)), registered_name(type(bn))
    if name_b not in ("BatchNorm1d", "BatchNorm2d", "SyncBatchNorm") or not bn.track_running_stats:
        return False
    if name_p in ("Conv2d", "ConvTranspose2d"):
        return name_b != "BatchNorm1d" and prev.out_channels == bn.num_features
    if name_p == "Linear":
        return name_b != "BatchNorm2d" and prev.out_features == bn.num_features
    return False


def fold_into(prev: Any, bn: Any, fused: Any) -> None:
    """Write ``prev`` (a Conv2d, ConvTranspose2d or Linear) followed by ``bn`` (eval mode,
    :func:`_foldable`) into ``fused``'s weight and bias (a layer like ``prev``, with a
    bias): ``w' = w * s`` per output channel, ``b' = (b - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``, computed in float64 from the arrays as they are now and
    rounded once to the layer's dtype -- the fold of :func:`fuse` and of graph models'
    eval forward, bit for bit."""
    f64 = np.float64
    mean = bn._buffers["running_mean"]
    s = np.add(bn._buffers["running_var"], bn.eps, dtype=f64)
    np.sqrt(s, out=s)
    if bn.affine:
        np.divide(bn.weight.data, s, out=s, dtype=f64)
    else:  # gamma = 1
        np.divide(1.0, s, out=s)
    t = np.subtract(0.0 if prev.bias is None else prev.bias.data, mean, dtype=f64)
    np.multiply(t, s, out=t)
    np.add(t, bn.bias.data if bn.affine else 0.0, out=t, dtype=f64)  # (beta = 0 without)
    np.copyto(fused.bias.data, t, casting="unsafe")
    w = prev.weight.data
    out = fused.weight.data
    if registered_name(type(prev)) == "ConvTranspose2d":  # (C_in, C_out / groups, kH, kW)
        g = prev.groups
        shape = (g, w.shape[0] // g, *w.shape[1:])
        scale = s.reshape(g, 1, -1, 1, 1)
    else:  # output channels first
        shape = w.shape
        scale = s.reshape(-1, *([1] * (w.ndim - 1)))
    np.multiply(w.reshape(shape), scale, out=out.reshape(shape), dtype=f64, casting="unsafe")


def _fused_like(prev: Any) -> Module:
    """A new layer like ``prev`` (its config and name), with a bias."""
    config = prev.get_config()
    config["bias"] = True
    fused = type(prev)(**config)
    fused.name = prev.name
    return fused


def _fold(prev: Any, bn: Any) -> Module:
    """``prev`` followed by ``bn`` (eval mode) as one layer like ``prev``, with a bias (and
    ``prev``'s name)."""
    fused = _fused_like(prev)
    fold_into(prev, bn, fused)
    return fused


def _fuse_sequential(model: Any) -> None:
    """Fold in place (``model`` is already a copy), recursing into nested containers."""
    layers = list(model.layers)
    out: list[Module] = []
    i = 0
    while i < len(layers):
        layer = _fuse_container(layers[i])
        if i + 1 < len(layers) and _foldable(layer, layers[i + 1]):
            out.append(_fold(layer, layers[i + 1]))
            i += 2
            continue
        out.append(layer)
        i += 1
    model.layers[:] = out


def _subtree(module: Module) -> list[Module]:
    out, stack, seen = [], [module], set()
    while stack:
        m = stack.pop()
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
            stack.extend(m.children())
    return out


def _foldable_pairs(model: Any) -> dict[int, Any]:
    """The BatchNorms of a graph model that fold into the layer in front of them: ``id(node
    of a Conv2d / ConvTranspose2d / Linear call) -> the node of the BatchNorm`` called on
    its output alone, when nothing else reads that output (no other layer, not a model
    output) and the layer runs nowhere else (not shared, not inside a shared container)."""
    steps = model._step_nodes
    runs: dict[int, int] = {}  # module -> calls of layers containing it
    for node in steps:
        for m in _subtree(node.layer):
            runs[id(m)] = runs.get(id(m), 0) + 1
    readers: dict[int, int] = {id(n): 0 for n in model._nodes}
    for node in steps:
        for i in node.inputs:
            readers[id(i)] += 1
    for node in model._outputs:
        readers[id(node)] += 1
    folded: dict[int, Any] = {}  # id(conv node) -> its BatchNorm's node
    for node in steps:
        prev = node.inputs[0] if len(node.inputs) == 1 and not node.multi else None
        if (
            prev is not None
            and not prev.is_input
            and _foldable(prev.layer, node.layer)
            and runs[id(prev.layer)] == 1
            and readers[id(prev)] == 1
        ):
            folded[id(prev)] = node
    return folded


class GraphEvalSteps:
    """The eval-mode steps of a graph model (:class:`~cnncore.nn.Model`): its own steps,
    with each BatchNorm (running statistics) run by :func:`batch_norm_eval_call` -- the
    same kernel on the statistics as they are at the call, without the layer's per-call
    checks and, for small inputs, on one thread -- so the outputs are bit-identical to the
    layer-by-layer forward (and to the same model imported as a Sequential).  The other
    layers run their own forward (whose repeated calls skip the checks too).  Folding
    BatchNorm into the weights is :func:`fuse`'s job: folding at every call would read and
    write every weight (more than the BatchNorm calls cost at batch 1), and a fold kept
    between calls would miss an in-place change of a weight.

    ``steps`` (built on first use, from the graph, which does not change): per step
    ``(run, layer, ins, multi, out, free, shared, shape)`` as the model's own steps, with
    ``run(x) -> y``.  Not copied with the model (a copy builds its own).
    """

    def __init__(self) -> None:
        self.steps: list[tuple] | None = None

    def build(self, model: Any) -> list[tuple]:
        steps: list[tuple] = []
        for step in model._steps:
            layer, _, multi, _, _, shared, _ = step
            run = None
            if not multi and shared is None:
                run = batch_norm_eval_call(layer)
            steps.append((run or layer.forward, *step))
        self.steps = steps
        return steps

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphEvalSteps:
        return GraphEvalSteps()

    def __copy__(self) -> GraphEvalSteps:
        return GraphEvalSteps()


def _bn_runs_eval(layer: Any, x: np.ndarray) -> bool:
    """Whether ``layer`` (a BatchNorm1d/2d) in eval mode normalizes ``x`` with its running
    statistics through the kernel alone, so a prepared call computes what its forward
    does: a C-contiguous non-empty batch of the statistics' dtype (and the affine
    parameters')."""
    if layer.training or not layer.track_running_stats:
        return False
    if type(x) is not np.ndarray or x.ndim < 2 or x.size == 0 or not x.flags.c_contiguous:
        return False
    if x.shape[1] != layer.num_features or x.dtype.kind != "f":
        return False
    return not layer.affine or (
        layer.weight.data.dtype == x.dtype and layer.bias.data.dtype == x.dtype
    )


def _prepared_bn(layer: Any, x: np.ndarray, n_threads: int | None) -> Callable[..., Any]:
    """``run(x, out)``: the eval-mode BatchNorm of ``x`` (shape and dtype of this ``x``)
    into ``out``, reading the running statistics and affine parameters at each call."""
    kernel, _ = prepare_batch_norm_eval(x.shape, n_threads)
    buffers = layer._buffers
    eps = layer.eps
    f64 = np.float64

    def run(x: np.ndarray, out: np.ndarray) -> np.ndarray:
        mean = buffers["running_mean"].astype(f64)
        var = buffers["running_var"].astype(f64)
        if layer.affine:
            return kernel(x, mean, var, layer.weight.data, layer.bias.data, eps, out)
        return kernel(x, mean, var, None, None, eps, out)

    return run


def batch_norm_eval_call(layer: Any) -> Callable[[Any], np.ndarray] | None:
    """For a BatchNorm1d/BatchNorm2d (exactly those classes): ``run(x) -> y``, its eval
    forward with the argument checks done once per input shape (the first call of a shape
    is the layer's own forward) and small inputs (below :data:`SMALL_ELEMENTS`) on one
    thread -- the same kernel, so bit-identical; what training left in the layer's cache
    is dropped.  None for other layers."""
    if registered_name(type(layer)) not in ("BatchNorm1d", "BatchNorm2d"):
        return None
    state: list[Any] = [None, None, None]  # shape, dtype, prepared run
    empty = np.empty

    def run(x: Any) -> np.ndarray:
        if (
            type(x) is np.ndarray
            and x.shape == state[0]
            and x.dtype is state[1]
            and x.flags.c_contiguous
            and not layer.training
        ):
            layer._x = layer._mean = layer._var = layer._shape = None
            return state[2](x, empty(x.shape, x.dtype))
        y = layer.forward(x)
        if _bn_runs_eval(layer, x):
            prepared = _prepared_bn(layer, x, step_threads(x.size, SMALL_ELEMENTS))
            state[:] = [x.shape, x.dtype, prepared]
        return y

    return run


def _fuse_graph(model: Any) -> Any:
    """A graph model (already a copy) with each BatchNorm whose one input is a Conv2d /
    ConvTranspose2d / Linear call folded into it -- when nothing else reads that call's
    output (no other layer, not a model output) and the layer runs nowhere else (not
    shared) -- rebuilt on the same Input nodes; nested containers fused first."""
    steps = model._step_nodes
    folded = _foldable_pairs(model)
    done: dict[int, Module] = {}  # layers fused once (a layer called twice stays shared)

    def fused_layer(layer: Module) -> Module:
        if id(layer) not in done:
            done[id(layer)] = _fuse_container(layer)
        return done[id(layer)]

    new: dict[int, Any] = {id(n): n for n in model._inputs}
    skip: set[int] = set()
    for node in steps:
        if id(node) in skip:
            continue
        args = [new[id(i)] for i in node.inputs]
        arg = args if node.multi else args[0]
        bn = folded.get(id(node))
        if bn is not None:
            out = _fold(node.layer, bn.layer)(arg)
            new[id(node)] = new[id(bn)] = out
            skip.add(id(bn))
        else:
            new[id(node)] = fused_layer(node.layer)(arg)
    ins = [new[id(n)] for n in model._inputs]
    outs = [new[id(n)] for n in model._outputs]
    rebuilt = type(model)(ins if model._multi_in else ins[0], outs if model._multi_out else outs[0])
    rebuilt.name = model.name
    rebuilt.loss_fn = model.loss_fn
    return rebuilt


def _fuse_container(module: Module) -> Module:
    """``module`` with its BatchNorms folded if it is a container (a copy already)."""
    kind = registered_name(type(module))
    if kind == "Sequential":
        _fuse_sequential(module)
    elif kind == "Model":
        return _fuse_graph(module)
    return module


def fuse(model: Module) -> Module:
    """A copy of ``model`` for inference, with every BatchNorm1d/BatchNorm2d (with running
    statistics) folded into the Conv2d/ConvTranspose2d/Linear in front of it.

    In a :class:`~cnncore.nn.Sequential` a BatchNorm directly after such a layer is folded;
    in a graph model (:class:`~cnncore.nn.Model`) a BatchNorm called on the output of such
    a layer's call, when nothing else reads that output (no other layer, not a model
    output) and the layer is called nowhere else.  Nested containers are fused too.
    Returns the copy in eval mode (a graph model is rebuilt: same layer names, same
    inputs and outputs, its ``loss_fn`` kept); ``model`` is not changed.  Its convolutions
    keep their weights packed between calls: a write into them in place other than an
    optimizer step, ``load_state_dict`` or ``set_weights`` must be followed by
    ``param.mark_changed()``.  See the module docstring.

    Examples
    --------
    >>> from cnncore import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> [type(layer).__name__ for layer in nn.fuse(model)]
    ['Conv2d', 'ReLU']
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"fuse(): model must be a cnncore.nn.Module. Received: {type(model).__name__}"
        )
    fused = _fuse_container(copy.deepcopy(model))
    for m in _subtree(fused):
        m.__dict__["_frozen_weights"] = True  # (packed weights trust WEIGHTS_VERSION)
    return fused.eval()
