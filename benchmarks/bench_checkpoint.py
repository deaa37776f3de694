"""Cost of leaving a training run resumable: checkpoint save/load vs PyTorch, and fit's
per-epoch overhead with callbacks.

* ``save_checkpoint`` (model + Adam moments + scheduler + JSON state, atomic: temp file,
  fsync, rename) and ``load_checkpoint`` (checked reader, into fresh objects), against
  ``torch.save`` of the same state dicts followed by an fsync, and
  ``torch.load(weights_only=True)`` + ``load_state_dict``, for LeNet-5 and the CNN of
  ``cnncore train``;
* seconds per epoch of ``fit`` on 3,000 sample images without callbacks and with
  EarlyStopping + ModelCheckpoint (every epoch) + CSVLogger + a per-batch LambdaCallback and
  a per-batch OneCycleLR.

Median of >= 7 runs after a warm-up; both libraries in the same run, same threads. Run it
alone (``flock /work/bench.lock python benchmarks/bench_checkpoint.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import cnncore
from cnncore import callbacks, datasets, models, optim
from cnncore.apps.bench.train import _torch_model


def _median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _trained(name):
    model = models.build(name, rng=0)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    sched = optim.CosineAnnealingLR(opt, T_max=10)
    for p in model.parameters():  # give the moments real values
        p.grad[...] = np.random.default_rng(0).standard_normal(p.data.shape)
    opt.step()
    sched.step()
    return model, opt, sched


def bench_checkpoint(repeat, use_torch, tmp):
    print("checkpoint save / load (model + Adam state + scheduler), median seconds")
    print(f"{'model':6} {'MiB':>6} {'save':>8} {'load':>8} {'torch save':>11} {'torch load':>11}"
          f" {'save ratio':>11} {'load ratio':>11}")  # fmt: skip
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    for name in ("lenet", "cnn"):
        model, opt, sched = _trained(name)
        path = os.path.join(tmp, f"{name}.npz")
        save = _median_time(
            lambda model=model, opt=opt, sched=sched, path=path: cnncore.save_checkpoint(
                path, model, opt, sched, epoch=1, rng=0
            ),
            repeat,
        )
        fresh = _trained(name)
        load = _median_time(lambda path=path, fresh=fresh: cnncore.load_checkpoint(path, *fresh),
                            repeat)  # fmt: skip
        size = os.path.getsize(path) / 2**20
        row = f"{name:6} {size:6.2f} {save:8.4f} {load:8.4f}"
        if torch is not None:
            tm = _torch_model(torch, name)
            topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
            tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10)
            for p in tm.parameters():
                p.grad = torch.randn_like(p)
            topt.step()
            tsched.step()
            tpath = os.path.join(tmp, f"{name}.pt")

            def tsave(tm=tm, topt=topt, tsched=tsched, tpath=tpath):
                state = {
                    "model": tm.state_dict(),
                    "optimizer": topt.state_dict(),
                    "scheduler": tsched.state_dict(),
                    "epoch": 1,
                }
                with open(tpath, "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())

            def tload(tm=tm, topt=topt, tsched=tsched, tpath=tpath):
                state = torch.load(tpath, weights_only=True)
                tm.load_state_dict(state["model"])
                topt.load_state_dict(state["optimizer"])
                tsched.load_state_dict(state["scheduler"])

            ts = _median_time(tsave, repeat)
            tl = _median_time(tload, repeat)
            row += f" {ts:11.4f} {tl:11.4f} {save / ts:11.2f} {load / tl:11.2f}"
        print(row)


def bench_fit_overhead(repeat, tmp):
    (x, y), _ = datasets.load_sample()
    x, y = x[:3000], y[:3000]
    print("\nfit, LeNet-5, 3,000 images, batch 64 (47 steps): seconds of the 2nd epoch, median")

    def epoch_time(with_callbacks):
        model = models.lenet5(rng=0)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        kw = {}
        if with_callbacks:
            seen = []
            kw = dict(
                scheduler=optim.OneCycleLR(opt, 0.1, epochs=2, steps_per_epoch=47),
                callbacks=[
                    callbacks.EarlyStopping(monitor="loss", patience=100),
                    callbacks.ModelCheckpoint(os.path.join(tmp, "fit{epoch}.npz")),
                    callbacks.CSVLogger(os.path.join(tmp, "log.csv")),
                    callbacks.LambdaCallback(on_batch_end=lambda b, logs: seen.append(b)),
                ],
            )
        h = model.fit(x, y, optimizer=opt, loss="cross_entropy", epochs=2, batch_size=64,
                      verbose=0, seed=0, **kw)  # fmt: skip
        return h["seconds"][1]

    plain, full = [], []
    for _ in range(repeat):  # alternate, so that the machine's drift hits both alike
        plain.append(epoch_time(False))
        full.append(epoch_time(True))
    p, f = statistics.median(plain), statistics.median(full)
    print(f"plain {p:.3f} s   with callbacks + per-batch OneCycleLR {f:.3f} s   "
          f"ratio {f / p:.3f}")  # fmt: skip
    # what the callbacks and the per-batch scheduler add to one step, measured alone
    model = models.lenet5(rng=0)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.OneCycleLR(opt, 0.1, total_steps=10**6)
    cbl = callbacks.CallbackList(
        [callbacks.EarlyStopping(monitor="loss"), callbacks.CSVLogger(os.path.join(tmp, "x")),
         callbacks.LambdaCallback(on_batch_end=lambda b, logs: None)], model, {},
    )  # fmt: skip
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        cbl.on_batch_begin(i, {"batch": i, "size": 64})
        sched.step()
        cbl.on_batch_end(i, {"batch": i, "size": 64, "loss": 1.0, "lr": opt.lr})
    per_step = (time.perf_counter() - t0) / n
    print(f"hooks + OneCycleLR.step per batch: {1e6 * per_step:.1f} us "
          f"({100 * per_step * 47 / p:.2f} % of a plain epoch)")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    cnncore.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    print(f"threads {args.threads}, median of {args.repeat} after a warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        bench_checkpoint(args.repeat, not args.no_torch, tmp)
        bench_fit_overhead(args.repeat, tmp)


if __name__ == "__main__":
    main()
