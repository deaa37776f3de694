"""Run by tests/test_distributed.py, alone or under ``mpirun -n K``: a seeded distributed
``fit`` whose final weights rank 0 writes to ``argv[1]`` (an .npz), for a bit-for-bit
comparison across process counts.  ``argv[2]`` picks the model: ``lenet`` (no BatchNorm),
``graph`` (a residual graph model with Dropout), ``threads`` (lenet with 1 thread per rank)."""

import sys

import numpy as np

import cnncore
from cnncore import datasets, models, nn
from cnncore.augment import FlipShift


def build(kind: str):
    if kind in ("lenet", "threads"):
        return models.build("lenet", rng=0)
    inp = nn.Input((1, 28, 28))
    x = nn.Conv2d(1, 4, 3, padding=1, rng=1)(inp)
    x = nn.ReLU()(x)
    y = nn.Conv2d(4, 4, 3, padding=1, rng=2)(x)
    x = nn.ReLU()(nn.Add()([x, y]))
    x = nn.MaxPool2d(2)(x)
    x = nn.Dropout(0.2)(nn.Flatten()(x))
    out = nn.Linear(4 * 14 * 14, 10, rng=3)(x)
    return nn.Model(inp, out)


def main() -> None:
    path, kind = sys.argv[1], sys.argv[2]
    if kind == "threads":
        cnncore.set_num_threads(1)
    (x, y), _ = datasets.load_sample()
    x, y = x[:300], y[:300]
    model = build(kind)
    model.fit(
        x,
        y,
        optimizer=cnncore.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        loss=nn.CrossEntropyLoss(),
        epochs=2,
        batch_size=64,
        seed=7,
        verbose=False,
        augment=FlipShift(flip_prob=0.0, max_shift=2) if kind == "graph" else None,
        distributed=True,
    )
    from cnncore.distributed import world

    if world().rank == 0:
        np.savez(path, *[p.data for p in model.parameters()])


if __name__ == "__main__":
    main()
