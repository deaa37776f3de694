"""The training suite: seconds per epoch of SGD training, cnncore vs PyTorch on one recipe,
and the graph executor's own share of a ResNet-20 step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np

from .timing import MIN_REPEAT, SETTLE_S, _setup, _switch_library

#: Batch size and learning rate per model (SGD, momentum 0.9, float32).
RECIPES = {"lenet": (64, 0.05), "cnn": (64, 0.05), "resnet20": (128, 0.1)}


def _torch_resnet(torch, depth: int = 20, in_channels: int = 1, num_classes: int = 10):
    """The twin of :func:`cnncore.models.resnet` (option-B shortcuts, no conv bias)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.shortcut(x) + self.bn2(self.conv2(y)))

    layers = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for s, width in enumerate((16, 32, 64)):
        for b in range((depth - 2) // 6):
            layers.append(Block(c_in, width, 2 if s > 0 and b == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def _cnncore_model(name: str, seed: int):
    from cnncore import models

    if name == "resnet20":
        return models.resnet20(in_channels=1, input_size=28, rng=seed)
    return models.build(name, rng=seed)


def _torch_model(torch, name: str):
    nn = torch.nn
    if name == "resnet20":
        return _torch_resnet(torch, 20)
    if name == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _torch_epochs(torch, name, x, y, x_test, y_test, epochs, batch_size, lr, momentum, seed):
    torch.manual_seed(seed)
    model = _torch_model(torch, name)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        t0 = time.perf_counter()
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss_fn(model(tx[idx]), ty[idx]).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [
                model(torch.from_numpy(x_test[s : s + 1000])).argmax(1)
                for s in range(0, len(x_test), 1000)
            ]
        )
    return times, float((pred.numpy() == y_test).mean())


def _cnncore_epochs(name, x, y, x_test, y_test, epochs, batch_size, lr, momentum, seed):
    from cnncore import nn, optim

    model = _cnncore_model(name, seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    times = []
    for e in range(epochs):
        h = model.fit(
            x,
            y,
            optimizer=opt,
            loss=nn.CrossEntropyLoss(),
            epochs=1,
            batch_size=batch_size,
            verbose=False,
            seed=seed + e,
        )
        times.append(h["seconds"][0])
    return times, model.evaluate(x_test, y_test)["accuracy"]


def _interleaved_epoch(torch, name, x, y, x_test, y_test, batch_size, lr, momentum, seed, block):
    """One epoch of each library on the same batches, timed in alternating blocks of
    ``block`` steps (cnncore, then torch, ...; ``SETTLE_S`` between libraries), so that
    drifting machine load hits both alike.  The cnncore step is ``fit``'s (same calls:
    input conversion, forward, loss, ``zero_grad``, ``backward(input_grad=False)``,
    ``step``).  Returns ``(cnncore_s, cnncore_acc, torch_s, torch_acc)``; the times are
    the sums of the blocks (the settling sleeps excluded), after two untimed warm-up steps
    of each."""
    res = _interleaved(torch, name, x, y, batch_size, lr, momentum, seed, block, None)
    return (
        sum(res["cnncore"]),
        res["acc"](x_test, y_test),
        sum(res["torch"]),
        res["t_acc"](x_test, y_test),
    )


def _interleaved_steps(torch, name, x, y, batch_size, lr, momentum, seed, steps, block):
    """``steps`` SGD steps of each library (the epoch's first batches), timed in
    alternating blocks of ``block`` steps as in :func:`_interleaved_epoch`.  Returns
    ``{"cnncore": [...], "torch": [...]}``: each block's seconds per step (torch's list
    empty when ``torch`` is None)."""
    res = _interleaved(torch, name, x, y, batch_size, lr, momentum, seed, block, steps)
    return {"cnncore": res["cnncore"], "torch": res["torch"]}


def _interleaved(torch, name, x, y, batch_size, lr, momentum, seed, block, steps):
    """The shared loop of :func:`_interleaved_epoch` and :func:`_interleaved_steps`:
    per-block seconds (per step when ``steps`` is given, else the block's sum) of each
    library, and accuracy functions of the trained models."""
    from cnncore import nn, optim
    from cnncore.nn import loss as losses
    from cnncore.nn.module import as_model_input
    from cnncore.nn.training import _batch_loop

    model = _cnncore_model(name, seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    dtype = model.dtype
    order = np.random.default_rng(seed).permutation(len(x))
    starts = list(range(0, len(x), batch_size))
    if steps is not None:
        starts = [starts[k % len(starts)] for k in range(steps)]
    warm = [order[s : s + batch_size] for s in starts[:2]]

    def c_step(idx):
        yb = y[idx]
        out = model(as_model_input(x[idx], dtype))
        batch_loss = loss_fn(out, yb)
        opt.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        float(batch_loss)
        losses.count_correct(loss_fn, out, yb)
        opt.step()

    libs = [("cnncore", c_step)]
    if torch is not None:
        torch.manual_seed(seed)
        t_model = _torch_model(torch, name)
        t_opt = torch.optim.SGD(t_model.parameters(), lr=lr, momentum=momentum)
        t_loss = torch.nn.CrossEntropyLoss()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def t_step(idx):
            t_idx = torch.from_numpy(idx)
            t_opt.zero_grad()
            t_loss(t_model(tx[t_idx]), ty[t_idx]).backward()
            t_opt.step()

        libs.append(("torch", t_step))
        t_model.train()

    times = {"cnncore": [], "torch": []}
    model.train()
    for k in range(-1, len(starts), block):
        batches = warm if k < 0 else [order[s : s + batch_size] for s in starts[k : k + block]]
        for lib, step in libs:
            _switch_library(lib, SETTLE_S)
            with _batch_loop() if lib == "cnncore" else _no_context():
                t0 = time.perf_counter()
                for idx in batches:
                    step(idx)
                if k >= 0:
                    dt = time.perf_counter() - t0
                    times[lib].append(dt / len(batches) if steps is not None else dt)

    def t_acc(x_test, y_test):
        t_model.eval()
        with torch.no_grad():
            pred = torch.cat(
                [
                    t_model(torch.from_numpy(x_test[s : s + 1000])).argmax(1)
                    for s in range(0, len(x_test), 1000)
                ]
            )
        return float((pred.numpy() == y_test).mean())

    times["acc"] = lambda x_test, y_test: model.evaluate(x_test, y_test)["accuracy"]
    times["t_acc"] = t_acc
    return times


class _no_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def executor_overhead(batch_size: int = 128, steps: int = MIN_REPEAT, seed: int = 0) -> dict:
    """The graph executor's own time in a ResNet-20 SGD step (28x28 inputs, float32).

    Every layer call is timed from inside (the layers' ``forward``/``backward`` wrapped
    with two clock reads each); the executor's share of a step is the wall time of
    ``model(x)`` plus ``model.backward(g)`` minus the time inside the layers: graph
    bookkeeping, input checks and the sums of the gradients of nodes read by several
    layers.  Medians over ``steps`` (>= 7) steps after two warm-up steps.

    Returns ``{"step_s", "forward_backward_s", "layers_s", "executor_s",
    "executor_pct"}`` (``executor_pct`` of the whole step: forward, loss, backward and
    the optimizer step).
    """
    from cnncore import nn, optim
    from cnncore.nn.training import _batch_loop

    model = _cnncore_model("resnet20", seed)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    inside = [0.0]
    clock = time.perf_counter

    def timed(fn):
        def call(*args, **kwargs):
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                inside[0] += clock() - t0

        return call

    for layer in model.layers:
        # (and the entry points of the training fusions, which the executor calls instead)
        for name in (
            "forward",
            "backward",
            "_forward_relu",
            "_forward_add",
            "forward_into",
            "backward_into",
            "backward_sum",
        ):
            if hasattr(layer, name):
                setattr(layer, name, timed(getattr(layer, name)))
    rows = []
    with _batch_loop():
        for k in range(2 + max(MIN_REPEAT, steps)):
            inside[0] = 0.0
            t0 = clock()
            out = model(x)
            t1 = clock()
            loss_fn(out, y)
            g = loss_fn.backward()
            opt.zero_grad()
            t2 = clock()
            model.backward(g, input_grad=False)
            t3 = clock()
            opt.step()
            t4 = clock()
            if k >= 2:
                rows.append((t4 - t0, (t1 - t0) + (t3 - t2), inside[0]))
    step = statistics.median(r[0] for r in rows)
    fb = statistics.median(r[1] for r in rows)
    layers = statistics.median(r[2] for r in rows)
    executor = statistics.median(r[1] - r[2] for r in rows)
    return {
        "step_s": step,
        "forward_backward_s": fb,
        "layers_s": layers,
        "executor_s": executor,
        "executor_pct": 100 * executor / step,
    }


def step_profile(name: str, x: np.ndarray, y: np.ndarray, steps: int = 100, seed: int = 0) -> dict:
    """Where a cnncore SGD step of ``name`` (``RECIPES``' batch size and learning rate,
    momentum 0.9) spends its time: the step of ``fit`` (input gathering, forward, loss,
    ``zero_grad``, backward, metrics, optimizer step) on the epoch's first batches of
    ``x``, ``y``, with every layer's ``forward``/``backward`` (and Sequential's training
    fusions) timed from inside.  Two untimed warm-up steps, then ``steps`` timed ones.

    Returns ``{"model", "batch", "steps", "step_s", "parts": {part: seconds per step}}``:
    ``step_s`` the mean seconds per step, ``parts`` the mean of each part, and
    ``"other"`` the rest of the step (the containers' own Python between the parts).
    Timing from inside adds two clock reads per call, so the parts are an upper bound.
    """
    from cnncore import nn, optim
    from cnncore.nn import loss as losses
    from cnncore.nn.module import as_model_input
    from cnncore.nn.training import _batch_loop

    if name not in RECIPES:
        raise ValueError(
            f"step_profile(): name must be one of {sorted(RECIPES)}. Received: {name!r}"
        )
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"step_profile(): steps must be >= 1. Received: steps={steps}")
    batch_size, lr = RECIPES[name]
    model = _cnncore_model(name, seed)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    dtype = model.dtype
    clock = time.perf_counter
    acc: dict[str, float] = {}
    depth = [0]  # a timed call inside another one (a fusion's entry calling forward) counts once

    def timed(key: str, fn):
        def call(*args, **kwargs):
            depth[0] += 1
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[key] = acc.get(key, 0.0) + clock() - t0

        return call

    kinds = {
        "forward": "forward",
        "_forward_relu": "forward",
        "_forward_add": "forward",
        "forward_into": "forward",
        "_forward_relu_pool": "forward",
    }
    methods = (
        "forward",
        "backward",
        "_forward_relu",
        "_forward_add",
        "forward_into",
        "_forward_relu_pool",
    )
    for i, layer in enumerate(getattr(model, "layers", [])):
        for method in (*methods, "backward_into", "backward_sum", "_backward_relu_pool"):
            if hasattr(layer, method):
                kind = kinds.get(method, "backward")
                key = f"{i:02d} {type(layer).__name__} {kind}"
                setattr(layer, method, timed(key, getattr(layer, method)))
    order = np.random.default_rng(seed).permutation(len(x))
    starts = list(range(0, len(x), batch_size))
    total = 0.0
    model.train()
    with _batch_loop():
        for k in range(steps + 2):
            if k == 2:
                acc.clear()
                total = 0.0
            s = starts[k % len(starts)]
            idx = order[s : s + batch_size]
            t0 = clock()
            xb = as_model_input(x[idx], dtype)
            yb = y[idx]
            t1 = clock()
            out = model(xb)
            t2 = clock()
            batch_loss = loss_fn(out, yb)
            grad = loss_fn.backward()
            t3 = clock()
            opt.zero_grad()
            t4 = clock()
            model.backward(grad, input_grad=False)
            t5 = clock()
            float(batch_loss)
            losses.count_correct(loss_fn, out, yb)
            t6 = clock()
            opt.step()
            t7 = clock()
            for key, dt in (
                ("input", t1 - t0),
                ("loss", t3 - t2),
                ("zero_grad", t4 - t3),
                ("metrics", t6 - t5),
                ("optimizer", t7 - t6),
            ):
                acc[key] = acc.get(key, 0.0) + dt
            total += t7 - t0
    parts = {key: v / steps for key, v in sorted(acc.items())}
    parts["other"] = max(0.0, total / steps - sum(parts.values()))
    return {
        "model": name,
        "batch": batch_size,
        "steps": steps,
        "step_s": total / steps,
        "parts": parts,
    }


def _print_profile(prof: dict, out) -> None:
    step = prof["step_s"]
    out(
        f"{prof['model']}: {1e3 * step:.3f} ms per step (batch {prof['batch']}, mean of "
        f"{prof['steps']} steps)"
    )
    for key, v in prof["parts"].items():
        out(f"  {key:<32}{1e3 * v:9.3f} ms{100 * v / step:7.1f} %")


def bench_train(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out=print,
    epochs: int = 2,
    models: Sequence[str] = ("lenet", "cnn"),
    steps: int | None = None,
    block: int = 10,
    profile: int | None = None,
) -> dict:
    """Seconds per epoch (and img/s) of SGD training, cnncore vs PyTorch, same recipe:
    momentum 0.9, float32, same thread count, batch 64 and lr 0.05 (lenet, cnn) or batch
    128 and lr 0.1 (resnet20: :func:`cnncore.models.resnet20` at 28x28, a graph model,
    against its torch twin). Full Fashion-MNIST when it is installed, the shipped sample
    otherwise (or with ``quick``). The fastest of ``epochs`` epochs is reported (the first
    includes warm-up); ``repeat`` is not used (whole epochs are the samples), except for
    the executor overhead of resnet20 (:func:`executor_overhead`, median of ``repeat``
    steps).  resnet20 runs one epoch of each library, interleaved in blocks of 10 steps
    (:func:`_interleaved_epoch`: its epochs last minutes, over which the load of a shared
    machine drifts), without torch one ``fit`` epoch per ``epochs``.

    With ``steps`` (the fixed-steps mode, for measuring changes in minutes rather than
    epochs): every model runs ``steps`` SGD steps of each library on the epoch's first
    batches (the same calls as ``fit``'s step), interleaved in blocks of ``block`` steps
    (at least ``MIN_REPEAT`` timed blocks after two warm-up steps); each time is the median
    over the blocks of the seconds per step, and the row's ``cnncore_s``/``torch_s`` are
    those medians times the steps of a full epoch (an epoch-equivalent; ``ratio`` their
    ratio).

    Returns ``{"threads", "data", "epochs", "rows": [{"model", "batch", "cnncore_s",
    "cnncore_acc" [, "torch_s", "torch_acc", "ratio"] [, "overhead"]}]}``
    (``"steps"`` and no accuracies in the fixed-steps mode).

    With ``profile`` (a number of steps) nothing is compared: each model's step is
    profiled instead (:func:`step_profile`: the share of each layer's forward and
    backward, the loss, the optimizer, ...), and ``{"threads", "data", "profiles": [...]}``
    is returned.
    """
    from cnncore import datasets

    threads, torch = _setup(use_torch)
    source = "sample"
    if not quick:
        try:
            (x, y), (xt, yt) = datasets.load_fashion_mnist()
            source = "Fashion-MNIST"
        except FileNotFoundError:
            pass
    if source == "sample":
        (x, y), (xt, yt) = datasets.load_sample()
    if profile is not None:
        out(f"training step profile: {source}, float32, {threads} thread(s)")
        profiles = []
        for name in models:
            prof = step_profile(name, x, y, steps=profile)
            _print_profile(prof, out)
            profiles.append(prof)
        return {"threads": threads, "data": source, "profiles": profiles}
    out(
        f"training benchmark: {source} ({len(x)} train / {len(xt)} test), SGD momentum 0.9, "
        f"float32, {threads} thread(s); best of {epochs} epoch(s)"
    )
    out(
        f"{'model':<9}{'batch':>6}{'cnncore s/ep':>13}{'img/s':>9}{'acc':>8}{'torch s/ep':>12}"
        f"{'img/s':>9}{'acc':>8}{'ratio':>7}"
    )
    rows = []
    if steps is not None:
        return _bench_steps(torch, threads, source, x, y, models, steps, block, out)
    for name in models:
        batch, lr = RECIPES[name]
        if name == "resnet20" and torch is not None:
            # one epoch each, interleaved in blocks of 10 steps (epochs is not used)
            t_c, acc_c, t_t, acc_t = _interleaved_epoch(
                torch, name, x, y, xt, yt, batch, lr, 0.9, 0, block=10
            )
            row = {
                "model": name,
                "batch": batch,
                "cnncore_s": t_c,
                "cnncore_acc": acc_c,
                "torch_s": t_t,
                "torch_acc": acc_t,
                "ratio": t_c / t_t,
                "interleaved": True,
            }
            out(
                f"{name:<9}{batch:>6}{t_c:13.2f}{len(x) / t_c:9.0f}{100 * acc_c:7.2f}%"
                f"{t_t:12.2f}{len(x) / t_t:9.0f}{100 * acc_t:7.2f}%{t_c / t_t:7.2f}"
                f"  (one epoch each, interleaved in blocks of 10 steps)"
            )
            _switch_library("cnncore", SETTLE_S)
            ov = executor_overhead(128, repeat)
            row["overhead"] = ov
            out(
                f"  resnet20 step at batch 128: {1e3 * ov['step_s']:.1f} ms, of which the graph "
                f"executor (outside the layers' forward/backward) {1e3 * ov['executor_s']:.2f} "
                f"ms = {ov['executor_pct']:.2f} %"
            )
            rows.append(row)
            continue
        _switch_library("cnncore", SETTLE_S)
        t_c, acc_c = _cnncore_epochs(name, x, y, xt, yt, epochs, batch, lr, 0.9, 0)
        row = {
            "model": name,
            "batch": batch,
            "images": len(x),
            "cnncore_s": min(t_c),
            "cnncore_acc": acc_c,
        }
        line = f"{name:<9}{batch:>6}{min(t_c):13.2f}{len(x) / min(t_c):9.0f}{100 * acc_c:7.2f}%"
        if torch is not None:
            _switch_library("torch", SETTLE_S)
            t_t, acc_t = _torch_epochs(torch, name, x, y, xt, yt, epochs, batch, lr, 0.9, 0)
            row.update(torch_s=min(t_t), torch_acc=acc_t, ratio=min(t_c) / min(t_t))
            line += (
                f"{min(t_t):12.2f}{len(x) / min(t_t):9.0f}{100 * acc_t:7.2f}%{row['ratio']:7.2f}"
            )
        out(line)
        if name == "resnet20":
            _switch_library("cnncore", SETTLE_S)
            ov = executor_overhead(128, repeat)
            row["overhead"] = ov
            out(
                f"  resnet20 step at batch 128: {1e3 * ov['step_s']:.1f} ms, of which the graph "
                f"executor (outside the layers' forward/backward) {1e3 * ov['executor_s']:.2f} "
                f"ms = {ov['executor_pct']:.2f} %"
            )
        rows.append(row)
    return {"threads": threads, "data": source, "epochs": epochs, "rows": rows}


def _bench_steps(torch, threads, source, x, y, models, steps, block, out) -> dict:
    """The fixed-steps mode of :func:`bench_train`."""
    block = max(1, int(block))
    steps = max(int(steps), MIN_REPEAT * block)
    out(
        f"fixed-steps mode: {steps} steps per library in blocks of {block}, medians over "
        f"{-(-steps // block)} blocks; s/ep = median s/step x steps per epoch"
    )
    rows = []
    for name in models:
        batch, lr = RECIPES[name]
        per_epoch = -(-len(x) // batch)
        res = _interleaved_steps(torch, name, x, y, batch, lr, 0.9, 0, steps, block)
        c = statistics.median(res["cnncore"])
        row = {
            "model": name,
            "batch": batch,
            "images": len(x),
            "steps": steps,
            "cnncore_s": c * per_epoch,
        }
        line = f"{name:<9}{batch:>6}{c * per_epoch:13.2f}{batch / c:9.0f}{'-':>8}"
        if torch is not None:
            t = statistics.median(res["torch"])
            row.update(torch_s=t * per_epoch, ratio=c / t)
            line += f"{t * per_epoch:12.2f}{batch / t:9.0f}{'-':>8}{c / t:7.2f}"
            line += f"  ({1e3 * c:.1f} vs {1e3 * t:.1f} ms/step)"
        out(line)
        rows.append(row)
    return {"threads": threads, "data": source, "epochs": None, "steps": steps, "rows": rows}
