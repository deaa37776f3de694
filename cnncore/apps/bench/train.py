"""The training suite: seconds per epoch of SGD training, cnncore vs PyTorch on one recipe."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .timing import SETTLE_S, _setup, _switch_library


def _torch_model(torch, name: str):
    nn = torch.nn
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
    from cnncore import models, nn, optim

    model = models.build(name, rng=seed)
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


def bench_train(
    quick: bool = False,
    use_torch: bool = True,
    repeat: int = 7,
    out=print,
    epochs: int = 2,
    models: Sequence[str] = ("lenet", "cnn"),
) -> dict:
    """Seconds per epoch (and img/s) of SGD training, cnncore vs PyTorch, same recipe:
    batch 64, lr 0.05, momentum 0.9, float32, same thread count. Full Fashion-MNIST when it
    is installed, the shipped sample otherwise (or with ``quick``). The fastest of ``epochs``
    epochs is reported (the first includes warm-up); ``repeat`` is not used (whole epochs are
    the samples).

    Returns ``{"threads", "data", "epochs", "rows": [{"model", "images", "cnncore_s",
    "cnncore_acc" [, "torch_s", "torch_acc", "ratio"]}]}``.
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
    out(
        f"training benchmark: {source} ({len(x)} train / {len(xt)} test), batch 64, SGD lr 0.05 "
        f"momentum 0.9, float32, {threads} thread(s); best of {epochs} epoch(s)"
    )
    out(
        f"{'model':<8}{'cnncore s/ep':>13}{'img/s':>9}{'acc':>8}{'torch s/ep':>12}"
        f"{'img/s':>9}{'acc':>8}{'ratio':>7}"
    )
    rows = []
    for name in models:
        _switch_library("cnncore", SETTLE_S)
        t_c, acc_c = _cnncore_epochs(name, x, y, xt, yt, epochs, 64, 0.05, 0.9, 0)
        row = {"model": name, "images": len(x), "cnncore_s": min(t_c), "cnncore_acc": acc_c}
        line = f"{name:<8}{min(t_c):13.2f}{len(x) / min(t_c):9.0f}{100 * acc_c:7.2f}%"
        if torch is not None:
            _switch_library("torch", SETTLE_S)
            t_t, acc_t = _torch_epochs(torch, name, x, y, xt, yt, epochs, 64, 0.05, 0.9, 0)
            row.update(torch_s=min(t_t), torch_acc=acc_t, ratio=min(t_c) / min(t_t))
            line += (
                f"{min(t_t):12.2f}{len(x) / min(t_t):9.0f}{100 * acc_t:7.2f}%{row['ratio']:7.2f}"
            )
        out(line)
        rows.append(row)
    return {"threads": threads, "data": source, "epochs": epochs, "rows": rows}
