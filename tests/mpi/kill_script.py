"""Run by tests/test_distributed.py under ``mpirun -n 2``: in the middle of a distributed
``fit`` rank 1 kills itself (``argv[1] == 'kill'``, SIGKILL), hangs (``'hang'``) or raises
(``'raise'``); rank 0 must not wait forever."""

import os
import signal
import sys
import time

import cnncore
from cnncore import callbacks, datasets, models, nn
from cnncore.distributed import world


def main() -> None:
    (x, y), _ = datasets.load_sample()
    model = models.build("lenet", rng=0)
    rank = world().rank

    def maybe_die(batch, logs):
        if rank == 1 and batch == 2:
            if sys.argv[1] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if sys.argv[1] == "raise":
                raise ZeroDivisionError("rank 1 fails")
            time.sleep(3600)

    model.fit(
        x[:640],
        y[:640],
        optimizer=cnncore.optim.SGD(model.parameters(), lr=0.05),
        loss=nn.CrossEntropyLoss(),
        epochs=1,
        batch_size=64,
        seed=1,
        verbose=0,
        callbacks=[callbacks.LambdaCallback(on_batch_end=maybe_die)],
        distributed=True,
    )
    print(f"rank {rank} finished (it should not have)", flush=True)


if __name__ == "__main__":
    main()
