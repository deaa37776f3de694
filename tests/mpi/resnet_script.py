"""Run by tests/test_distributed.py, alone or under ``mpirun -n K``: a seeded distributed
``fit`` of a small ResNet-20 (a graph model with BatchNorm) with validation data, callbacks
(EarlyStopping, ModelCheckpoint, CSVLogger, a LambdaCallback), a scheduler and augmentation,
then a distributed ``evaluate``.  ``argv[1]``: the .npz rank 0 writes; ``argv[2]``: ``bn``
(BatchNorm2d, per part) or ``sync`` (``nn.SyncBatchNorm.convert_sync_batchnorm``);
``argv[3]``: a folder for the checkpoint and CSV files.

Checked here, on every rank: each epoch's ``val_*`` metrics equal a single-process
``evaluate`` of that epoch's model bit for bit; the distributed ``evaluate`` equals the
single-process one and each rank evaluated only its block of the batches; every rank ends with
rank 0's weights and buffers.  Written for the test to compare across process counts: the
final parameters and buffers, the history and the evaluation results.
"""

import os
import sys

import numpy as np

from cnncore import callbacks, datasets, models, nn, optim
from cnncore.augment import FlipShift
from cnncore.distributed import world


def main() -> None:
    path, kind, folder = sys.argv[1], sys.argv[2], sys.argv[3]
    comm = world()
    os.makedirs(folder, exist_ok=True)
    (x, y), (xt, yt) = datasets.load_sample()
    x, y = x[:130, :, 8:20, 8:20], y[:130]  # 130 = 2 x 64 + 2: a last batch of 2 images
    xv, yv = xt[:520, :, 8:20, 8:20], yt[:520]  # 3 validation batches of 256, 256 and 8
    model = models.resnet20(in_channels=1, input_size=12, rng=0)
    if kind == "sync":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.OneCycleLR(opt, max_lr=0.1, epochs=3, steps_per_epoch=3)
    loss = nn.CrossEntropyLoss()
    checked = []

    def check_val(epoch, logs):
        ref = model.evaluate(xv, yv, loss=loss, metrics=["top3_accuracy"])  # one process
        for k in ("loss", "accuracy", "top_3_accuracy"):
            assert logs["val_" + k] == ref[k], (epoch, k, logs["val_" + k], ref[k])
        checked.append(epoch)

    cbs = [
        callbacks.LambdaCallback(on_epoch_end=check_val),
        callbacks.EarlyStopping(monitor="val_loss", patience=5),
        callbacks.ModelCheckpoint(os.path.join(folder, "ckpt-{epoch}.npz")),
        callbacks.CSVLogger(os.path.join(folder, "log.csv")),
    ]
    history = model.fit(
        x,
        y,
        optimizer=opt,
        loss=loss,
        epochs=3,
        batch_size=64,
        seed=11,
        verbose=0,
        scheduler=sched,
        augment=FlipShift(max_shift=1),
        validation_data=(xv, yv),
        metrics=["top3_accuracy"],
        callbacks=cbs,
        distributed=True,
    )
    assert checked == [0, 1, 2], checked

    # distributed evaluate: the single-process result, each rank on its block of batches
    forwards = [0]
    forward = model.forward

    def counted(inp):
        forwards[0] += 1
        return forward(inp)

    ref = model.evaluate(xv, yv, batch_size=64, metrics=["top3_accuracy"], confusion=True)
    model.forward = counted
    got = model.evaluate(
        xv, yv, batch_size=64, metrics=["top3_accuracy"], confusion=True, distributed=True
    )
    del model.forward
    for k in ("loss", "accuracy", "top_3_accuracy"):
        assert got[k] == ref[k], (k, got[k], ref[k])
    np.testing.assert_array_equal(got["confusion"], ref["confusion"])
    counts = comm.allgather(np.array([forwards[0] - 1]))[:, 0]  # (- the trial forward)
    assert counts.sum() == 9 and counts.max() - counts.min() <= 1, counts

    # every rank holds rank 0's model
    state = model.state_dict()
    flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in state.values()])
    rows = comm.allgather(flat)
    assert all(np.array_equal(r, rows[0]) for r in rows), "the ranks' models differ"

    if comm.rank == 0:
        out = {"param/" + k: v for k, v in state.items()}
        for k, v in history.history.items():
            if k != "seconds":
                out["history/" + k] = np.array(v)
        for k in ("loss", "accuracy", "top_3_accuracy"):
            out["eval/" + k] = np.array(got[k])
        out["eval/confusion"] = got["confusion"]
        out["files"] = np.array(sorted(os.listdir(folder)))
        np.savez(path, **out)


if __name__ == "__main__":
    main()
