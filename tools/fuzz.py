#!/usr/bin/env python
"""Fuzz cnncore's public API in child processes.

Every case is generated from ``(seed, index)`` alone, so any case can be replayed exactly.  A
case picks one public entry point (every function of ``cnncore.functional.__all__``,
``correlate2d``/``convolve2d``, every layer of ``cnncore.nn`` (constructor, forward,
backward), the loss modules, ``Sequential.fit``, ``cnncore.load`` and ``datasets.load_idx`` on
damaged files), builds a *valid* call for a random geometry (sizes 0 and 1 included) and then
applies a few random mutations: other dtypes (float16/32/64, ints, bool, object, complex),
other shapes and ranks, views (non-contiguous, negative strides, Fortran order, read-only,
zero-stride broadcasts, even past 2**31 elements), NaN/Inf, None/strings/lists in place of
arrays, and parameters replaced by zero, negative, huge or wrongly typed values.

The valid calls of the public functions are not kept here: they are the ``sample`` of each
op's spec record in tests/api_specs.py (the list of ops the test suite iterates too; adding
an op there adds it here), with a random number of leading arguments passed by position.
This script puts ``<repo>/tests`` first on ``sys.path`` -- as pytest does -- and imports
``api_specs`` / ``opspec`` by name, so under pytest both share one copy of the records.

Cases run in batches in a child process (``--child``), so a segfault, an abort or a hang
(per-case watchdog, ``faulthandler``) cannot take the harness down.  Accepted outcomes:

* a result (and the call left its inputs unchanged -- cnncore never loses data), or
* ``ValueError`` / ``TypeError`` / ``MemoryError`` raised cleanly (the child runs under an
  address-space limit, so large legal allocations end in ``MemoryError``).

Anything else -- another exception type, a crash, a hang, modified inputs -- is a failure.
When a batch crashes or hangs, the harness re-runs the case alone and, if it does not fail
alone, bisects the batch for the shortest run of preceding cases that reproduces it; every
failure is reported with the command that replays it.

Usage::

    python tools/fuzz.py --cases 20000 --seed 1          # a campaign
    python tools/fuzz.py --seed 1 --case 1234 --show     # print one case and run it here
    python tools/fuzz.py --seed 1 --case 1234            # replay one case in a child

Exit status: 0 if every case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import inspect
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_tree_is_built(root: str = ROOT) -> bool:
    """True when ``root/cnncore`` holds compiled extensions (an in-place build).

    Only then is the source tree importable; otherwise (e.g. CI, which runs ``pip install .``
    and tests from the checkout) the installed cnncore must be the one under test, so the
    repository root must not shadow it on ``sys.path``.
    """
    from importlib.machinery import EXTENSION_SUFFIXES

    pkg = os.path.join(root, "cnncore")
    return any(
        os.path.exists(os.path.join(pkg, "ops", "_conv" + suffix)) for suffix in EXTENSION_SUFFIXES
    )


USE_SOURCE_TREE = _source_tree_is_built()
if USE_SOURCE_TREE and ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ACCEPTED = (ValueError, TypeError, MemoryError)
DEFAULT_BATCH = 250
DEFAULT_CASE_TIMEOUT = 20.0  # seconds per case before the watchdog calls it a hang
# child address-space limit in GiB (0: none -- e.g. under ASan, whose shadow memory needs a
# huge address space; tools/sanitize.sh sets CNNCORE_FUZZ_MEM_LIMIT_GB=0)
DEFAULT_MEM_LIMIT_GB = float(os.environ.get("CNNCORE_FUZZ_MEM_LIMIT_GB", "6"))

FLOATS = (np.float32, np.float64)
OTHER_DTYPES = (
    np.float16,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.uint64,
    np.bool_,
    np.complex64,
    np.complex128,
    object,
)

# Replacement values for parameters (ints, pairs, strings, flags, reals).
WEIRD_PARAMS: tuple[Any, ...] = (
    0,
    -1,
    -2,
    1,
    2,
    3,
    7,
    2**31 - 1,
    2**31,
    2**32 + 1,
    2**62,
    2**63,
    -(2**63),
    2**100,
    1.5,
    -0.5,
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    "2",
    "same",
    "valid",
    "full",
    "constant",
    "reflect",
    b"x",
    (),
    (1,),
    (1, 2, 3),
    (0, 0),
    (-1, 2),
    (2**31, 1),
    [2, 2],
    (None, 2),
    np.int64(3),
    np.int32(-1),
    np.uint64(2**64 - 1),
    np.float32(2),
    np.bool_(True),
    np.array([1, 2]),
    np.array(2),
    np.array([[1, 2]]),
    complex(1, 1),
    {},
    object(),
)


# The valid base calls of the public functions come from the spec records of
# tests/api_specs.py (one record per op, shared with the test suite: its ``sample``).  The
# tests folder goes first on sys.path, as pytest puts it there, so that this script and the
# tests import the same ``api_specs`` / ``opspec`` modules.
TESTS = os.path.join(ROOT, "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import api_specs  # noqa: E402
from api_specs import (  # noqa: E402
    draw_adaptive,
    draw_conv,
    draw_conv_transpose,
    draw_lead,
    draw_pool,
    draw_shape,
)
from opspec import Draw  # noqa: E402  -- all randomness of a case flows through a Draw

# ------------------------------------------------------------------------------------------
# Case generation
# ------------------------------------------------------------------------------------------


@dataclass
class Call:
    fn: Any
    args: list
    kwargs: dict
    mutates: tuple = ()  # names/positions of arguments the call may legally modify


@functools.cache
def _positional(name: str) -> tuple[str, ...]:
    """The parameters of the public function ``name`` that may be passed by position."""
    try:
        params = inspect.signature(api_specs.BY_NAME[name].fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _spec_op(spec: api_specs.OpSpec):
    """A valid call of a public function (its record's ``sample``), with a random number of
    its leading arguments passed by position."""

    def gen(g: Draw) -> Call:
        kwargs = spec.sample(g)
        lead = []
        for name in _positional(spec.name):
            if name not in kwargs:
                break
            lead.append(name)
        args = [kwargs.pop(name) for name in lead[: int(g.r.integers(len(lead) + 1))]]
        out = kwargs.get("out")
        mutates: tuple = ()
        if out is not None:  # out= may be one of the inputs: that one may change too
            mutates = (
                "out",
                *(k for k, v in [*enumerate(args), *kwargs.items()] if v is out and k != "out"),
            )
        return Call(spec.fn, args, kwargs, mutates)

    return gen


# --- layers ---------------------------------------------------------------------------------

AUTO = "<auto>"  # placeholder: let the layer op derive the gradient from the output


def run_layer(
    cls_name: str, ctor: dict, x: Any, grad: Any, train: bool = True, input_grad: bool = True
) -> Any:
    """Construct ``nn.<cls_name>(**ctor)``, run forward on ``x`` and (in training mode)
    backward on ``grad`` (random, shaped like the output, when ``AUTO``)."""
    from cnncore import nn

    layer = getattr(nn, cls_name)(**ctor)
    if not train:
        layer.eval()
    y = layer(x)
    if not train:
        return y
    if isinstance(grad, str) and grad == AUTO:
        out = np.asarray(y)
        grad = np.ones(out.shape, out.dtype if out.dtype.kind == "f" else np.float32)
    return y, layer.backward(grad, input_grad=input_grad)


def run_loss(cls_name: str, ctor: dict, output: Any, target: Any) -> Any:
    from cnncore import nn

    loss = getattr(nn, cls_name)(**ctor)
    value = loss(output, target)
    return value, loss.backward()


def _layer(cls_name: str, make):
    def gen(g: Draw) -> Call:
        ctor, x = make(g)
        grad: Any = AUTO
        if g.coin(0.05):
            grad = g.x(*np.shape(x))
        return Call(
            run_layer, [cls_name, ctor, x, grad], {"train": g.coin(0.8), "input_grad": g.coin(0.8)}
        )

    return gen


def _mk_conv(g: Draw):
    c = draw_conv(g)
    ctor = dict(
        in_channels=c.c,
        out_channels=c.k,
        kernel_size=(c.kh, c.kw),
        bias=g.coin(0.7),
        dtype=g.dt,
        rng=int(g.r.integers(100)),
        **c.opts,
    )
    if ctor["padding"] != "valid" and g.coin(0.3):
        ctor["padding_mode"] = g.choice(["zeros", "replicate", "reflect", "circular"])
    return ctor, g.x(max(c.n, 1), c.c, c.h, c.w)


def _mk_conv_transpose(g: Draw):
    c = draw_conv_transpose(g)
    ctor = dict(
        in_channels=c.c,
        out_channels=c.k,
        kernel_size=(c.kh, c.kw),
        bias=g.coin(0.7),
        dtype=g.dt,
        rng=int(g.r.integers(100)),
        **c.opts,
    )
    return ctor, g.x(max(c.n, 1), c.c, c.h, c.w)


def _mk_linear(g: Draw):
    i, o = g.dim(1, 9), g.dim(1, 9)
    return (
        dict(in_features=i, out_features=o, bias=g.coin(0.7), dtype=g.dt, rng=1),
        g.x(*draw_lead(g), i),
    )


def _mk_maxpool(g: Draw):
    p = draw_pool(g)
    return p.opts, g.x(p.n, p.c, p.h, p.w)


def _mk_avgpool(g: Draw):
    p = draw_pool(g, dilation=False)
    kw = p.opts
    kw["count_include_pad"] = g.coin()
    if g.coin(0.2):
        kw["divisor_override"] = g.dim(1, 5)
    return kw, g.x(p.n, p.c, p.h, p.w)


def _mk_adaptive(g: Draw):
    a = draw_adaptive(g)
    size = a.size
    if isinstance(size, tuple) and None in size:
        size = (a.h, size[1])
    if size == 0 or (isinstance(size, tuple) and 0 in size):
        size = 1
    return {"output_size": size}, g.x(a.n, a.c, a.h, a.w)


def _mk_global(g: Draw):
    return {}, g.x(g.dim(0, 3), g.dim(0, 4), g.dim(1, 8), g.dim(1, 8))


def _mk_bn(nd: int):
    def make(g: Draw):
        c = g.dim(1, 5)
        shape = (g.dim(2, 5), c) + tuple(g.dim(1, 5) for _ in range(nd - 2))
        ctor = dict(num_features=c, dtype=g.dt)
        if g.coin(0.3):
            ctor["momentum"] = g.choice([None, 0.5, 0.0, 1.0])
        if g.coin(0.2):
            ctor["affine"] = False
        if g.coin(0.2):
            ctor["track_running_stats"] = False
        return ctor, g.x(*shape)

    return make


def _mk_sync_bn(g: Draw):
    return _mk_bn(g.choice([2, 3, 4, 5]))(g)


def _mk_flatten(g: Draw):
    shape = draw_shape(g) or (2, 3)
    return dict(start_dim=int(g.r.integers(-2, 3)), end_dim=int(g.r.integers(-2, 3))), g.x(*shape)


def _mk_dropout(g: Draw):
    return {"p": g.choice([0.0, 0.3, 0.5, 1.0]), "rng": 0}, g.x(*draw_shape(g))


def _mk_dropout2d(g: Draw):
    shape = tuple(g.dim(0, 4) for _ in range(int(g.choice([3, 4, 4]))))
    return {"p": g.choice([0.0, 0.3, 0.5, 1.0]), "rng": 0}, g.x(*shape)


def _mk_group_norm(g: Draw):
    groups, cg = g.dim(1, 3), g.dim(1, 3)
    ctor = dict(num_groups=groups, num_channels=groups * cg, dtype=g.dt)
    if g.coin(0.3):
        ctor["affine"] = False
    if g.coin(0.2):
        ctor["eps"] = float(g.choice([1e-3, 0.5]))
    spatial = tuple(g.dim(0, 5) for _ in range(int(g.r.integers(0, 3))))
    return ctor, g.x(g.dim(0, 3), groups * cg, *spatial)


def _mk_layer_norm(g: Draw):
    norm = tuple(g.dim(1, 5) for _ in range(int(g.r.integers(1, 3))))
    ctor: dict = dict(normalized_shape=norm if len(norm) > 1 or g.coin() else norm[0], dtype=g.dt)
    if g.coin(0.3):
        ctor["elementwise_affine"] = False
    elif g.coin(0.3):
        ctor["bias"] = False
    return ctor, g.x(*draw_lead(g), *norm)


def _mk_instance_norm(g: Draw):
    c = g.dim(1, 4)
    ctor = dict(num_features=c, dtype=g.dt)
    if g.coin(0.4):
        ctor["affine"] = True
    if g.coin(0.4):
        ctor["track_running_stats"] = True
        if g.coin(0.3):
            ctor["momentum"] = g.choice([None, 0.5, 1.0])
    h, w = g.dim(1, 5), g.dim(2, 5)
    shape = (c, h, w) if g.coin(0.2) else (g.dim(0, 3), c, h, w)
    return ctor, g.x(*shape)


def _mk_upsample(g: Draw):
    r = api_specs._resize_draw(g)
    return dict(r.opts), g.x(r.n, r.c, r.h, r.w)


def _mk_pixel_shuffle(inverse: bool):
    def make(g: Draw):
        r, c, h, w = g.dim(1, 3), g.dim(0, 3), g.dim(0, 4), g.dim(0, 4)
        lead = tuple(g.dim(0, 3) for _ in range(int(g.r.integers(0, 2))))
        if inverse:
            return {"downscale_factor": r}, g.x(*lead, c, h * r, w * r)
        return {"upscale_factor": r}, g.x(*lead, c * r * r, h, w)

    return make


def _mk_act(params: dict | None = None):
    def make(g: Draw):
        ctor = dict(params or {})
        if "dim" in ctor:
            shape = draw_shape(g) or (3,)
            ctor["dim"] = int(g.r.integers(-len(shape), len(shape)))
            return ctor, g.x(*shape)
        return ctor, g.x(*draw_shape(g))

    return make


def run_merge(
    cls_name: str, ctor: dict, grad: Any, *xs: Any, train: bool = True, input_grad: bool = True
) -> Any:
    """``nn.<cls_name>(**ctor)`` (a merge layer) on the list ``xs``, then backward on
    ``grad`` (shaped like the output when ``AUTO``)."""
    from cnncore import nn

    layer = getattr(nn, cls_name)(**ctor)
    if not train:
        layer.eval()
    y = layer(list(xs))
    if not train:
        return y
    if isinstance(grad, str) and grad == AUTO:
        grad = np.ones(np.shape(y), np.float32 if np.asarray(y).dtype == np.float32 else np.float64)
    return y, layer.backward(grad, input_grad=input_grad)


def _merge(cls_name: str):
    def gen(g: Draw) -> Call:
        dt = g.dt
        shape = [g.dim(1, 4), g.dim(1, 4), g.dim(1, 4)][: int(g.r.integers(1, 4))]
        count = int(g.r.integers(1, 4)) if cls_name == "Concatenate" else int(g.r.integers(2, 4))
        ctor: dict = {}
        xs = []
        if cls_name == "Concatenate":
            dim = int(g.r.integers(-len(shape), len(shape)))
            ctor["dim"] = dim
            for _ in range(count):
                s = list(shape)
                s[dim] = g.dim(0, 3)
                xs.append(g.x(*s, dtype=dt))
        else:
            xs = [g.x(*shape, dtype=dt) for _ in range(count)]
        grad: Any = AUTO if g.coin(0.9) else g.x(*shape, dtype=dt)
        return Call(
            run_merge,
            [cls_name, ctor, grad, *xs],
            {"train": g.coin(0.8), "input_grad": g.coin(0.8)},
        )

    return gen


def run_input(shape: Any, name: Any) -> Any:
    """``nn.Input(shape, name=name)`` and a layer call on the node (shape inference)."""
    from cnncore import nn

    node = nn.Input(shape, name=name)
    return nn.Flatten()(node).shape


def gen_input(g: Draw) -> Call:
    shape = tuple(g.dim(1, 5) for _ in range(int(g.r.integers(1, 4))))
    return Call(run_input, [shape, g.choice([None, "img", "x_1"])], {})


def _graph_model(dtype: Any) -> Any:
    """A small graph: a residual block with BatchNorm, a shared conv, a concatenation
    (names given, so a saved copy is the same bytes in every process)."""
    from cnncore import nn

    # explicit names: automatic ones count per process, so a case would not repeat exactly
    kw = dict(dtype=dtype, rng=0)
    inp = nn.Input((2, 4, 4), name="x")
    shared = nn.Conv2d(2, 2, 3, padding=1, name="conv", **kw)
    y = nn.ReLU(name="relu")(nn.BatchNorm2d(2, dtype=dtype, name="bn")(shared(inp)))
    y = nn.Add(name="add")([inp, shared(y)])
    z = nn.Concatenate(dim=1, name="cat")([y, nn.Multiply(name="mul")([inp, y])])
    pooled = nn.Flatten(name="flat")(nn.GlobalAvgPool2d(name="gap")(z))
    out = nn.Linear(4, 3, name="fc", **kw)(pooled)
    return nn.Model(inp, out, name="graph")


def run_graph(x: Any, grad: Any, dtype: Any, train: bool = True, input_grad: bool = True) -> Any:
    """Forward (and in training mode backward) of :func:`_graph_model` on ``x``."""
    model = _graph_model(dtype)
    if not train:
        return model.predict(x)
    y = model(x)
    if isinstance(grad, str) and grad == AUTO:
        grad = np.ones(np.shape(y), np.asarray(y).dtype)
    return y, model.backward(grad, input_grad=input_grad)


def gen_graph(g: Draw) -> Call:
    x = g.x(g.dim(1, 4), 2, 4, 4, dtype=g.dt) if g.coin(0.9) else g.x(2, 2, 4, 4)
    grad: Any = AUTO if g.coin(0.9) else g.x(x.shape[0], 3)
    return Call(
        run_graph,
        [x, grad, g.dt],
        {"train": g.coin(0.8), "input_grad": g.coin(0.8)},
    )


def _loss_module(cls_name: str):
    def gen(g: Draw) -> Call:
        ctor: dict = {"reduction": g.choice(["mean", "sum", "none"])}
        if cls_name == "CrossEntropyLoss":
            c = g.dim(1, 5)
            out = g.x(g.dim(0, 4), c)
            target = g.r.integers(0, c, size=out.shape[0])
            if g.coin(0.3):
                ctor["label_smoothing"] = float(g.r.random())
        else:
            shape = draw_shape(g)
            unit = cls_name == "BCELoss"
            out = g.x(*shape, unit=unit, positive=cls_name == "MSLELoss")
            target = g.x(*shape, unit=unit, positive=cls_name == "MSLELoss")
        return Call(run_loss, [cls_name, ctor, out, target], {})

    return gen


def run_fit(
    x: Any, y: Any, loss: Any, optimizer: Any, epochs: Any, batch_size: Any, width: int
) -> Any:
    from cnncore import nn

    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 3:
        epochs = 3  # a valid but enormous epoch count would just train for a very long time
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * (width // 2) ** 2, 3, rng=1),
    )
    hist = model.fit(
        x,
        y,
        optimizer=optimizer,
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        verbose=False,
        seed=0,
    )
    return hist, model.predict(x) if len(np.shape(x)) == 4 and np.shape(x)[0] else None


def gen_fit(g: Draw) -> Call:
    n, width = g.dim(1, 12), g.choice([4, 6])
    x = (
        g.x(n, 1, width, width)
        if g.coin(0.8)
        else (g.r.random((n, 1, width, width)) * 255).astype(np.uint8)
    )
    y = g.r.integers(0, 3, size=n)
    return Call(
        run_fit,
        [
            x,
            y,
            g.choice(["cross_entropy", "cross_entropy", "mse"]),
            g.choice(["sgd", "adam"]),
            g.dim(0, 2),
            g.dim(1, 8),
            width,
        ],
        {},
    )


# --- files ----------------------------------------------------------------------------------


def _damage(g: Draw, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(int(g.r.integers(1, 4))):
        kind = g.r.random()
        if kind < 0.3 and b:
            cut = int(g.r.integers(0, len(b)))
            b = b[:cut]
        elif kind < 0.7 and b:
            for _ in range(int(g.r.integers(1, 16))):
                b[int(g.r.integers(0, len(b)))] = int(g.r.integers(0, 256))
        elif kind < 0.85:
            pos = int(g.r.integers(0, len(b) + 1))
            b[pos:pos] = (
                g.r.integers(0, 256, size=int(g.r.integers(1, 64))).astype(np.uint8).tobytes()
            )
        else:
            b = bytearray(
                g.r.integers(0, 256, size=int(g.r.integers(0, 300))).astype(np.uint8).tobytes()
            )
    return bytes(b)


def _craft_graph(g: Draw, config: dict) -> None:
    """Replace one entry of a saved graph model's config (nodes, inputs, outputs, names)."""
    weird = [None, -1, 0, 1, 2**31, 3.5, "x", [], [0], [[0]], {"a": 1}, True]
    key = g.choice(["nodes", "inputs", "outputs", "layer_names", "name", "multi_input"])
    value = config.get(key)
    if isinstance(value, list) and value and g.coin(0.8):
        i = int(g.r.integers(len(value)))
        item = value[i]
        if isinstance(item, list) and item and g.coin(0.7):
            item[int(g.r.integers(len(item)))] = g.choice(weird)
        elif isinstance(item, dict) and g.coin(0.7):
            item[g.choice(["shape", "name"])] = g.choice(weird)
        else:
            value[i] = g.choice(weird)
    else:
        config[key] = g.choice(weird)


def _saved_model_bytes(g: Draw) -> bytes:
    from cnncore import nn

    graph = g.coin(0.4)
    if graph:
        model = _graph_model(np.float32)
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3, rng=0),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8, 3, rng=1),
        )
    fd, path = tempfile.mkstemp(suffix=".npz")
    os.close(fd)
    try:
        nn.save(model, path)
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    if g.coin(0.3):  # a crafted architecture (save()'s JSON): an enormous or odd layer config
        with np.load(io.BytesIO(data)) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arch = json.loads(arrays["__architecture__"].tobytes())
        if graph and g.coin(0.6):
            _craft_graph(g, arch["model"]["config"])
        else:
            layer = arch["model"]["layers"][-1]
            layer["config"][g.choice(["in_features", "out_features"])] = g.choice(
                [2**31 - 1, 10**6, 50000, 0, -5, 3.5, "8", None]
            )
        arrays["__architecture__"] = np.frombuffer(json.dumps(arch).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
    return data


def _saved_safetensors_bytes(g: Draw) -> bytes:
    from cnncore import nn

    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.Linear(3, 2, rng=1))
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        nn.save(model, path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def run_load_bytes(data: bytes, which: str) -> Any:
    import cnncore

    suffix = {"model": ".npz", "safetensors": ".safetensors", "tensors": ".safetensors"}
    fd, path = tempfile.mkstemp(suffix=suffix.get(which, ".idx"))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if which == "tensors":
            return cnncore.nn.load_safetensors(path)
        if which in ("model", "safetensors"):
            return cnncore.load(path)
        return cnncore.datasets.load_idx(path)
    finally:
        os.unlink(path)


def gen_load_model(g: Draw) -> Call:
    data = _saved_model_bytes(g)
    if g.coin(0.8):
        data = _damage(g, data)
    return Call(run_load_bytes, [data, "model"], {})


def gen_load_safetensors(g: Draw) -> Call:
    data = _saved_safetensors_bytes(g)
    if g.coin(0.85):
        data = _damage(g, data)
    return Call(run_load_bytes, [data, g.choice(["safetensors", "tensors"])], {})


def run_save_safetensors(tensors: Any, metadata: Any) -> Any:
    import cnncore

    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        cnncore.nn.save_safetensors(tensors, path, metadata)
        return cnncore.nn.load_safetensors(path)
    finally:
        os.unlink(path)


def gen_save_safetensors(g: Draw) -> Call:
    dtypes = ["float32", "float64", "float16", "int64", "uint8", "bool", ">f4", "complex64"]
    tensors: Any = {
        f"t{i}": g.r.random(tuple(g.dim(0, 4) for _ in range(g.dim(0, 3)))).astype(g.choice(dtypes))
        for i in range(g.dim(0, 4))
    }
    if g.coin(0.1):
        tensors["__metadata__"] = np.zeros(1)
    if g.coin(0.1):
        tensors = list(tensors.values())
    metadata = g.choice([None, {"a": "b"}, {"a": 1}, "x"])
    return Call(run_save_safetensors, [tensors, metadata], {})


def run_fuse(model: Any, x: Any) -> Any:
    import cnncore

    return cnncore.nn.fuse(model).predict(x)


def gen_fuse(g: Draw) -> Call:
    from cnncore import nn

    c = g.dim(1, 4)
    layers: list[Any] = [nn.Conv2d(2, c, g.dim(1, 3), rng=0)]
    if g.coin(0.8):
        layers.append(nn.BatchNorm2d(c, affine=g.coin(0.7), track_running_stats=g.coin(0.8)))
    layers.append(nn.Flatten())
    model: Any = nn.Sequential(*layers)
    if g.coin(0.1):
        model = g.choice(["model", None, 3])
    x = g.r.standard_normal((g.dim(1, 3), 2, 4, 4)).astype(g.choice(["float32", "float64"]))
    return Call(run_fuse, [model, x], {})


def gen_load_idx(g: Draw) -> Call:
    import gzip

    arr = g.r.integers(0, 256, size=(g.dim(0, 4), g.dim(0, 5), g.dim(0, 5))).astype(np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = head + arr.tobytes()
    if g.coin(0.3):
        data = gzip.compress(data)
    if g.coin(0.85):
        data = _damage(g, data)
    return Call(run_load_bytes, [data, "idx"], {})


# --- self-test ops (only through --inject) ----------------------------------------------------


def _selftest_abort() -> None:
    os.abort()


def _selftest_segv() -> None:
    import ctypes

    ctypes.string_at(0)


def _selftest_hang() -> None:
    time.sleep(3600)


def _selftest_error() -> None:
    raise RuntimeError("selftest: an exception type the API must never raise")


def _selftest_modify(x: np.ndarray) -> None:
    x[...] = 0


_ARMED = []


def _selftest_arm() -> None:
    """Leaves state behind (like a heap corruption would) for ``crash_if_armed``."""
    _ARMED.append(True)


def _selftest_crash_if_armed() -> None:
    if _ARMED:
        os.abort()


SELFTESTS = {
    "abort": _selftest_abort,
    "segv": _selftest_segv,
    "hang": _selftest_hang,
    "error": _selftest_error,
    "modify": _selftest_modify,
    "arm": _selftest_arm,
    "crash_if_armed": _selftest_crash_if_armed,
}


def _build_ops() -> dict[str, Any]:
    from cnncore import nn

    ops: dict[str, Any] = {spec.name: _spec_op(spec) for spec in api_specs.SPECS}
    layers = {
        "Conv2d": _mk_conv,
        "ConvTranspose2d": _mk_conv_transpose,
        "Linear": _mk_linear,
        "MaxPool2d": _mk_maxpool,
        "AvgPool2d": _mk_avgpool,
        "AdaptiveAvgPool2d": _mk_adaptive,
        "GlobalAvgPool2d": _mk_global,
        "BatchNorm1d": _mk_bn(3),
        "BatchNorm2d": _mk_bn(4),
        "SyncBatchNorm": _mk_sync_bn,
        "Flatten": _mk_flatten,
        "Dropout": _mk_dropout,
        "ReLU": _mk_act(),
        "LeakyReLU": _mk_act({"negative_slope": 0.1}),
        "Sigmoid": _mk_act(),
        "Tanh": _mk_act(),
        "Softmax": _mk_act({"dim": 1}),
        "LogSoftmax": _mk_act({"dim": 1}),
        "Identity": _mk_act(),
        "GELU": _mk_act({"approximate": "tanh"}),
        "SiLU": _mk_act(),
        "ELU": _mk_act({"alpha": 0.5}),
        "Hardswish": _mk_act(),
        "Hardsigmoid": _mk_act(),
        "Softplus": _mk_act({"beta": 2.0, "threshold": 5.0}),
        "Mish": _mk_act(),
        "ReLU6": _mk_act(),
        "Dropout2d": _mk_dropout2d,
        "GroupNorm": _mk_group_norm,
        "LayerNorm": _mk_layer_norm,
        "InstanceNorm2d": _mk_instance_norm,
        "Upsample": _mk_upsample,
        "PixelShuffle": _mk_pixel_shuffle(False),
        "PixelUnshuffle": _mk_pixel_shuffle(True),
    }
    for cls_name, make in layers.items():
        ops["nn." + cls_name] = _layer(cls_name, make)
    for cls_name in ("Add", "Multiply", "Concatenate"):
        ops["nn." + cls_name] = _merge(cls_name)
    ops["nn.Input"] = gen_input
    ops["nn.Model"] = gen_graph
    for cls_name in (n for n in nn.__all__ if n.endswith("Loss")):
        ops["nn." + cls_name] = _loss_module(cls_name)
    ops["Sequential.fit"] = gen_fit
    ops["load"] = gen_load_model
    ops["nn.fuse"] = gen_fuse
    ops["nn.load_safetensors"] = gen_load_safetensors
    ops["nn.save_safetensors"] = gen_save_safetensors
    ops["datasets.load_idx"] = gen_load_idx
    return ops


OPS = _build_ops()
OP_NAMES = sorted(OPS)


# --- mutations ------------------------------------------------------------------------------

# Arguments of the harness's own wrappers that are not cnncore arguments (never mutated).
HARNESS_ARGS = {
    (run_layer, 0),
    (run_layer, "train"),
    (run_loss, 0),
    (run_fit, 6),
    (run_merge, 0),
    (run_merge, "train"),
    (run_graph, "train"),
    (run_load_bytes, 0),
    (run_load_bytes, 1),
}


def _slots(call: Call) -> list[tuple[Any, Any]]:
    """(container, key) of every leaf argument, descending into dicts (layer configs)."""
    out: list[tuple[Any, Any]] = []

    def walk(container: Any, key: Any) -> None:
        value = container[key]
        if isinstance(value, dict):
            for k in list(value):
                walk(value, k)
        else:
            out.append((container, key))

    for i in range(len(call.args)):
        if (call.fn, i) not in HARNESS_ARGS:
            walk(call.args, i)
    for k in list(call.kwargs):
        if (call.fn, k) not in HARNESS_ARGS:
            walk(call.kwargs, k)
    return out


def _huge_view(g: Draw, dtype: Any) -> np.ndarray:
    """A zero-stride view with more than 2**31 elements (no memory behind it)."""
    big = g.choice([2**31 + 1, 2**32 + 5, 2**40, 3 * 2**30])
    nd = int(g.r.integers(1, 5))
    shape = [1] * nd
    shape[int(g.r.integers(nd))] = big
    if g.coin(0.3) and nd > 1:
        shape[(shape.index(big) + 1) % nd] = g.choice([2, 16, 2**12])
    return np.broadcast_to(np.zeros((), dtype), tuple(shape))


def _mutate_array(g: Draw, a: np.ndarray) -> Any:
    kind = g.r.random()
    if a.size > 1 << 20:  # a huge view from an earlier mutation: only replace it
        return g.choice([None, 1.0, a[..., :1]])
    if kind < 0.2:
        dt = g.choice(OTHER_DTYPES + FLOATS)
        try:
            return a.astype(dt)
        except (TypeError, ValueError, OverflowError):
            return a
    if kind < 0.35:  # change one dimension
        if a.ndim == 0:
            return a.reshape(1)
        shape = list(a.shape)
        ax = int(g.r.integers(a.ndim))
        shape[ax] = g.choice([0, 1, shape[ax] + 1, max(shape[ax] - 1, 0), int(g.r.integers(0, 12))])
        return g.x(*shape, dtype=a.dtype) if a.dtype.kind == "f" else np.zeros(shape, a.dtype)
    if kind < 0.45:  # change the rank
        if a.ndim > 0 and g.coin():
            return a[0] if a.shape[0] else np.zeros(a.shape[1:], a.dtype)
        return a[None] if g.coin() else a[..., None]
    if kind < 0.65:  # views
        v = g.r.random()
        if v < 0.25:
            big = np.repeat(a, 2, axis=-1) if a.ndim else a
            return big[..., ::2] if a.ndim else a
        if v < 0.45:
            return a[..., ::-1] if a.ndim else a
        if v < 0.6:
            return np.asfortranarray(a)
        if v < 0.8:
            b = a.copy()
            b.flags.writeable = False
            return b
        if a.ndim and a.size:
            idx = tuple(slice(0, 1) for _ in range(a.ndim))
            return np.broadcast_to(a[idx], a.shape)
        return a
    if kind < 0.8:  # special values
        if a.dtype.kind == "f" and a.size:
            b = a.copy()
            for _ in range(int(g.r.integers(1, 4))):
                b.reshape(-1)[int(g.r.integers(b.size))] = g.choice(
                    [np.nan, np.inf, -np.inf, 1e38, -1e38, 0.0, -0.0, 1e-45]
                )
            return b
        return a
    if kind < 0.88:
        return _huge_view(g, a.dtype if a.dtype != object else np.float32)
    return g.choice(
        [
            None,
            "array",
            3.0,
            [[1.0, 2.0], [3.0]],
            a.tolist() if a.size < 50 else None,
            {"a": 1},
            np.float64(1.0),
            a.reshape(-1),
        ]
    )


def _mutate(g: Draw, call: Call) -> list[str]:
    notes = []
    slots = _slots(call)
    if not slots:
        return notes
    for _ in range(int(g.choice([0, 1, 1, 1, 2, 2, 3]))):
        container, key = slots[int(g.r.integers(len(slots)))]
        value = container[key]
        if isinstance(value, np.ndarray) and g.coin(0.85):
            new = _mutate_array(g, value)
        else:
            new = g.choice(WEIRD_PARAMS)
        container[key] = new
        notes.append(f"{key}")
    return notes


@dataclass
class Case:
    seed: int
    index: int
    op: str
    call: Call
    threads: int
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        def fmt(v: Any) -> str:
            if isinstance(v, np.ndarray):
                flags = []
                if not v.flags.c_contiguous:
                    flags.append("non-contiguous")
                if not v.flags.writeable:
                    flags.append("read-only")
                if v.size and 0 in v.strides:
                    flags.append("broadcast")
                extra = f" [{', '.join(flags)}]" if flags else ""
                return f"ndarray(shape={v.shape}, dtype={v.dtype}{extra})"
            if isinstance(v, dict):
                return "{" + ", ".join(f"{k!r}: {fmt(x)}" for k, x in v.items()) + "}"
            if isinstance(v, bytes):
                return f"<{len(v)} bytes>"
            text = repr(v)
            return text if len(text) < 120 else text[:117] + "..."

        fn = getattr(self.call.fn, "__name__", repr(self.call.fn))
        args = [fmt(a) for a in self.call.args]
        args += [f"{k}={fmt(v)}" for k, v in self.call.kwargs.items()]
        return (
            f"case {self.index} (seed {self.seed}): {self.op} -> {fn}({', '.join(args)})"
            f"  threads={self.threads}  mutated={self.notes}"
        )


def make_case(seed: int, index: int, inject: dict[int, str] | None = None) -> Case:
    """The case ``index`` of campaign ``seed`` (deterministic)."""
    if inject and index in inject:
        kind = inject[index]
        args = [np.ones(3)] if kind == "modify" else []
        return Case(seed, index, f"selftest:{kind}", Call(SELFTESTS[kind], args, {}), 1)
    r = np.random.default_rng([seed, index])
    op = OP_NAMES[int(r.integers(len(OP_NAMES)))]
    g = Draw(r)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # casts of NaN/inf/huge values while mutating
        call = OPS[op](g)
        notes = _mutate(g, call) if g.coin(0.75) else []
    threads = int(r.integers(1, 5))
    return Case(seed, index, op, call, threads, notes)


# ------------------------------------------------------------------------------------------
# Running cases (child side)
# ------------------------------------------------------------------------------------------


def _arrays_in(call: Call) -> list[tuple[Any, np.ndarray]]:
    out = []

    def walk(key: Any, v: Any) -> None:
        if isinstance(v, np.ndarray):
            out.append((key, v))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k, x)

    for i, a in enumerate(call.args):
        walk(i, a)
    for k, v in call.kwargs.items():
        walk(k, v)
    return out


def _snapshot(call: Call) -> list[tuple[Any, np.ndarray, bytes | None]]:
    """Copies of every input array the call must not modify (not ``out=`` targets)."""
    arrays = _arrays_in(call)
    writable = [a for key, a in arrays if key in call.mutates]
    snaps = []
    for key, a in arrays:
        if a.dtype == object or a.nbytes > 1 << 24:
            continue
        if any(np.may_share_memory(a, w) for w in writable):
            continue
        if a.size and 0 in a.strides:
            continue
        snaps.append((key, a, a.tobytes()))
    return snaps


def _check_result(result: Any) -> str | None:
    """A problem with a returned value, or None."""
    items = result if isinstance(result, tuple) else (result,)
    for item in items:
        if isinstance(item, np.ndarray) and item.dtype == object:
            return f"returned an object array of shape {item.shape}"
    return None


def run_case(case: Case) -> tuple[str, str]:
    """Run one case in this process: ``(outcome, detail)``; outcome is ``ok``,
    ``rejected:<Exception>`` or ``FAIL:<what>``."""
    import cnncore

    cnncore.set_num_threads(case.threads)
    snaps = _snapshot(case.call)
    # an object array out is a bug unless one went in (Flatten reshapes whatever it gets)
    object_in = any(a.dtype == object for _, a in _arrays_in(case.call))
    try:
        result = case.call.fn(*case.call.args, **case.call.kwargs)
    except ACCEPTED as exc:
        outcome, detail = f"rejected:{type(exc).__name__}", str(exc)
    except Exception as exc:  # noqa: BLE001 -- exactly what the fuzzer looks for
        tb = traceback.format_exc()
        return f"FAIL:{type(exc).__name__}", f"{exc}\n{tb}"
    else:
        problem = None if object_in else _check_result(result)
        if problem:
            return "FAIL:bad-result", problem
        outcome, detail = "ok", ""
        del result
    for key, a, before in snaps:
        if a.tobytes() != before:
            return "FAIL:modified-input", f"argument {key!r} was modified in place"
    return outcome, detail


def child_main(
    seed: int,
    indices: list[int],
    progress: str,
    inject: dict[int, str],
    case_timeout: float,
    mem_limit_gb: float,
) -> int:
    if mem_limit_gb > 0:
        import resource

        limit = int(mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    faulthandler.enable()
    import cnncore  # noqa: F401  -- import before the first watchdog

    with open(progress, "w", buffering=1) as out:
        for i in indices:
            out.write(f"S {i}\n")
            out.flush()
            faulthandler.dump_traceback_later(case_timeout, exit=True)
            try:
                case = make_case(seed, i, inject)
            except Exception:  # noqa: BLE001 -- a bug of this harness, not of cnncore
                faulthandler.cancel_dump_traceback_later()
                rec = {
                    "i": i,
                    "op": "?",
                    "outcome": "FAIL:harness-error",
                    "detail": traceback.format_exc()[-4000:],
                }
                out.write("D " + json.dumps(rec) + "\n")
                continue
            t0 = time.perf_counter()
            try:
                outcome, detail = run_case(case)
            finally:
                faulthandler.cancel_dump_traceback_later()
            rec = {
                "i": i,
                "op": case.op,
                "outcome": outcome,
                "t": round(time.perf_counter() - t0, 4),
            }
            if outcome.startswith("FAIL") or (
                outcome.startswith("rejected")
                and outcome != "rejected:MemoryError"
                and "Received" not in detail
                and case.call.fn is not run_load_bytes
            ):
                rec["detail"] = detail[:4000]
                rec["case"] = case.describe()
            out.write("D " + json.dumps(rec) + "\n")
            out.flush()
    return 0


# ------------------------------------------------------------------------------------------
# Campaign (parent side)
# ------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    records: list  # finished case records
    crashed_at: int | None  # index of the case that was running when the child died
    kind: str  # "" (clean), "crash", "hang"
    returncode: int
    stderr: str


def run_batch(
    seed: int,
    indices: list[int],
    *,
    inject: dict[int, str] | None = None,
    case_timeout: float = DEFAULT_CASE_TIMEOUT,
    mem_limit_gb: float = DEFAULT_MEM_LIMIT_GB,
) -> BatchResult:
    inject = inject or {}
    with tempfile.TemporaryDirectory(prefix="cnncore-fuzz-") as tmp:
        progress = os.path.join(tmp, "progress")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "--seed",
            str(seed),
            "--indices",
            ",".join(map(str, indices)),
            "--progress",
            progress,
            "--case-timeout",
            str(case_timeout),
            "--mem-limit-gb",
            str(mem_limit_gb),
        ]
        for i, kind in inject.items():
            cmd += ["--inject", f"{kind}@{i}"]
        env = dict(os.environ)
        if USE_SOURCE_TREE:
            env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONFAULTHANDLER", "1")
        backstop = case_timeout * 2 + 60 + 0.5 * len(indices)
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=backstop, cwd=tmp
            )
            returncode, stderr, timed_out = proc.returncode, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            returncode = -9
            stderr = (
                (exc.stderr or b"").decode(errors="replace")
                if isinstance(exc.stderr, bytes)
                else (exc.stderr or "")
            )
            timed_out = True
        records, started = [], None
        if os.path.exists(progress):
            with open(progress) as f:
                for line in f:
                    if line.startswith("S "):
                        started = int(line[2:])
                    elif line.startswith("D "):
                        try:
                            records.append(json.loads(line[2:]))
                        except json.JSONDecodeError:
                            pass
                        started = None
    done = {r["i"] for r in records}
    if returncode == 0 and not timed_out and len(done) == len(indices):
        return BatchResult(records, None, "", 0, stderr)
    hang = timed_out or "Timeout (" in stderr
    if started is None:  # died between cases (or before the first): blame the next one
        pending = [i for i in indices if i not in done]
        started = pending[0] if pending else indices[-1]
    return BatchResult(records, started, "hang" if hang else "crash", returncode, stderr)


def isolate(
    seed: int, batch: list[int], culprit: int, kind: str, **kw: Any
) -> tuple[list[int], BatchResult | None]:
    """Shortest run of cases ending at ``culprit`` that reproduces a crash/hang: the case
    alone if it fails alone, otherwise bisected on the start of the preceding cases."""

    def fails(seq: list[int]) -> BatchResult | None:
        res = run_batch(seed, seq, **kw)
        return res if res.kind and res.crashed_at == culprit else None

    alone = fails([culprit])
    if alone:
        return [culprit], alone
    prefix = batch[: batch.index(culprit) + 1]
    full = fails(prefix)
    if full is None:
        return [], None  # not reproducible (flaky)
    lo, hi = 0, len(prefix) - 1  # prefix[hi:] does not fail alone, prefix[lo:] fails
    best = full
    while hi - lo > 1:
        mid = (lo + hi) // 2
        res = fails(prefix[mid:])
        if res:
            lo, best = mid, res
        else:
            hi = mid
    return prefix[lo:], best


def _repro(seed: int, indices: list[int], inject: dict[int, str] | None = None) -> str:
    base = f"python tools/fuzz.py --seed {seed}"
    for i, kind in sorted((inject or {}).items()):
        if i in indices:
            base += f" --inject {kind}@{i}"
    if len(indices) == 1:
        return f"{base} --case {indices[0]}"
    return f"{base} --indices {','.join(map(str, indices))}"


@dataclass
class CampaignResult:
    seed: int
    cases: int = 0
    outcomes: dict = field(default_factory=dict)
    by_op: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    unnamed_messages: list = field(default_factory=list)
    seconds: float = 0.0
    slowest: tuple = (None, 0.0)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [f"cnncore fuzz: seed {self.seed}, {self.cases} cases in {self.seconds:.1f} s"]
        for k in sorted(self.outcomes):
            lines.append(f"  {k:<28} {self.outcomes[k]}")
        reached = sum(1 for v in self.by_op.values() if v.get("ok"))
        lines.append(f"  entry points exercised: {len(self.by_op)}, with a result: {reached}")
        in_cases = sum(v.get("seconds", 0.0) for v in self.by_op.values())
        heavy = sorted(self.by_op.items(), key=lambda kv: -kv[1].get("seconds", 0.0))[:3]
        lines.append(
            f"  time inside cases: {in_cases:.1f} s (most: "
            + ", ".join(f"{k} {v.get('seconds', 0.0):.1f} s" for k, v in heavy)
            + f"; slowest case {self.slowest[0]}: {self.slowest[1]:.2f} s)"
        )
        if self.unnamed_messages:
            lines.append(
                f"  rejections whose message lacks 'Received' "
                f"({len(self.unnamed_messages)} distinct, not failures):"
            )
            for op, msg in self.unnamed_messages[:15]:
                lines.append(f"    {op}: {msg[:150]}")
        if self.failures:
            lines.append(f"FAILURES: {len(self.failures)}")
            for f in self.failures:
                lines.append(f"  [{f['kind']}] {f['op']} -- reproduce: {f['repro']}")
                if f.get("case"):
                    lines.append(f"      {f['case']}")
                for dl in (f.get("detail") or "").strip().splitlines()[-12:]:
                    lines.append(f"      | {dl}")
        else:
            lines.append(
                "no failures: every case returned a result or raised "
                "ValueError/TypeError/MemoryError"
            )
        return "\n".join(lines)


def campaign(
    cases: int,
    seed: int,
    *,
    start: int = 0,
    batch: int = DEFAULT_BATCH,
    inject: dict[int, str] | None = None,
    case_timeout: float = DEFAULT_CASE_TIMEOUT,
    mem_limit_gb: float = DEFAULT_MEM_LIMIT_GB,
    verbose: bool = False,
    indices: list[int] | None = None,
) -> CampaignResult:
    t0 = time.perf_counter()
    res = CampaignResult(seed)
    todo = list(indices) if indices is not None else list(range(start, start + cases))
    kw = dict(inject=inject, case_timeout=case_timeout, mem_limit_gb=mem_limit_gb)
    seen_msgs: set = set()
    pos = 0
    while pos < len(todo):
        chunk = todo[pos : pos + batch]
        br = run_batch(seed, chunk, **kw)
        for rec in br.records:
            res.cases += 1
            res.outcomes[rec["outcome"]] = res.outcomes.get(rec["outcome"], 0) + 1
            per = res.by_op.setdefault(rec["op"], {})
            key = "ok" if rec["outcome"] == "ok" else "other"
            per[key] = per.get(key, 0) + 1
            per["seconds"] = per.get("seconds", 0.0) + rec.get("t", 0.0)
            if rec.get("t", 0.0) > res.slowest[1]:
                res.slowest = (rec["i"], rec["t"])
            if rec["outcome"].startswith("FAIL"):
                res.failures.append(
                    {
                        "kind": rec["outcome"][5:],
                        "op": rec["op"],
                        "repro": _repro(seed, [rec["i"]], inject),
                        "case": rec.get("case"),
                        "detail": rec.get("detail"),
                    }
                )
            elif "detail" in rec:
                msg = rec["detail"].split(". Received")[0]
                sig = (rec["op"], msg[:60])
                if sig not in seen_msgs:
                    seen_msgs.add(sig)
                    res.unnamed_messages.append((rec["op"], rec["detail"]))
        if br.kind:
            culprit = br.crashed_at
            assert culprit is not None
            seq, rep = isolate(seed, chunk, culprit, br.kind, **kw)
            stderr = (rep or br).stderr
            case_text = None
            try:
                case_text = make_case(seed, culprit, inject).describe()
            except Exception as exc:  # noqa: BLE001
                case_text = f"(could not rebuild the case: {exc})"
            res.cases += 1
            res.outcomes[f"FAIL:{br.kind}"] = res.outcomes.get(f"FAIL:{br.kind}", 0) + 1
            res.failures.append(
                {
                    "kind": br.kind + ("" if seq else " (not reproducible)"),
                    "op": case_text.split(": ", 1)[-1].split(" ->")[0] if case_text else "?",
                    "repro": _repro(seed, seq or [culprit], inject),
                    "case": case_text,
                    "detail": f"exit status {(rep or br).returncode}\n{stderr[-3000:]}",
                    "index": culprit,
                    "sequence": seq,
                }
            )
            pos += chunk.index(culprit) + 1
        else:
            pos += len(chunk)
        if verbose:
            print(
                f"  {pos}/{len(todo)} cases, {len(res.failures)} failures, "
                f"{time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    res.seconds = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _parse_inject(items: list[str]) -> dict[int, str]:
    out = {}
    for item in items or []:
        kind, _, idx = item.partition("@")
        if kind not in SELFTESTS or not idx.isdigit():
            raise SystemExit(f"--inject expects KIND@INDEX with KIND in {sorted(SELFTESTS)}")
        out[int(idx)] = kind
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--case", type=int, help="replay this single case")
    ap.add_argument("--indices", help="replay these comma-separated cases, in order")
    ap.add_argument(
        "--show", action="store_true", help="with --case: print the case and run it in this process"
    )
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="cases per child process")
    ap.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_TIMEOUT)
    ap.add_argument(
        "--mem-limit-gb",
        type=float,
        default=DEFAULT_MEM_LIMIT_GB,
        help="child address-space limit in GiB (0: none; use 0 under ASan)",
    )
    ap.add_argument("--inject", action="append", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the result as JSON to this file")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    inject = _parse_inject(args.inject)

    if args.child:
        indices = [int(i) for i in args.indices.split(",") if i]
        return child_main(
            args.seed, indices, args.progress, inject, args.case_timeout, args.mem_limit_gb
        )
    if args.case is not None and args.show:
        case = make_case(args.seed, args.case, inject)
        print(case.describe())
        outcome, detail = run_case(case)
        print(outcome)
        if detail:
            print(detail)
        return 1 if outcome.startswith("FAIL") else 0
    indices = None
    if args.case is not None:
        indices = [args.case]
    elif args.indices:
        indices = [int(i) for i in args.indices.split(",") if i]
    res = campaign(
        args.cases,
        args.seed,
        start=args.start,
        batch=args.batch,
        inject=inject,
        case_timeout=args.case_timeout,
        mem_limit_gb=args.mem_limit_gb,
        verbose=not args.quiet,
        indices=indices,
    )
    print(res.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "seed": res.seed,
                    "cases": res.cases,
                    "outcomes": res.outcomes,
                    "failures": res.failures,
                    "seconds": res.seconds,
                    "messages_without_received": res.unnamed_messages,
                },
                f,
                indent=1,
            )
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
