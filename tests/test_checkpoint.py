"""Checkpoints and exact resume: cnncore.save_checkpoint / load_checkpoint, fit's
initial_epoch, and the atomic write.

* 10 epochs straight == 5 epochs + checkpoint + (in a new process) load + 5 more, bit for bit,
  with shuffling, Dropout, BatchNorm, augmentation, Adam/SGD moments and epoch or batch
  schedulers;
* a process SIGKILLed in the middle of writing a checkpoint leaves the previous one loadable;
* bad files are refused with ValueError before anything changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnncore
from cnncore import callbacks as C
from cnncore import nn, optim
from cnncore.nn.callbacks import get_weights

# Where the cnncore under test lives (the source tree built in place, or site-packages when
# installed, as in CI): child processes import that one, never an unbuilt source tree.
ROOT = Path(cnncore.__file__).resolve().parent.parent

# The training setup shared by this process and the child processes (one source of truth).
SETUP = textwrap.dedent(
    """
    import numpy as np
    import cnncore
    from cnncore import callbacks, nn, optim
    from cnncore.augment import FlipShift

    def data():
        rng = np.random.default_rng(7)
        x = rng.standard_normal((90, 1, 8, 8)).astype(np.float32)
        y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 0, 0] > 0)
        return x, y

    def build(config):
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, rng=0),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64, 4, rng=1),
        )
        if config == "adam-sequential":
            opt = optim.Adam(model.parameters(), lr=0.01)
            sched = optim.SequentialLR(
                opt,
                [optim.LinearLR(opt, start_factor=0.2, total_iters=3),
                 optim.CosineAnnealingLR(opt, T_max=7, eta_min=1e-4)],
                milestones=[3],
            )
        elif config == "sgd-onecycle":
            opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
            sched = optim.OneCycleLR(opt, max_lr=0.2, epochs=10, steps_per_epoch=6)
        else:
            opt = optim.RMSprop(model.parameters(), lr=0.01, momentum=0.5)
            sched = optim.ReduceLROnPlateau(opt, patience=0, factor=0.5)
        return model, opt, sched

    FIT = dict(batch_size=16, verbose=0, seed=11, augment=FlipShift(1),
               loss=nn.CrossEntropyLoss(label_smoothing=0.1))

    def fit_kwargs(config):
        kw = dict(FIT)
        if config == "sgd-onecycle":
            kw.update(validation_split=0.1, class_weight="balanced")  # 81 -> 6 batches
        else:
            x, y = data()
            kw.update(validation_data=(x[:20], y[:20]))
        return kw
    """
)

CHILD = textwrap.dedent(
    """
    import sys
    config, ckpt, out = sys.argv[1:4]
    model, opt, sched = build(config)
    ck = cnncore.load_checkpoint(ckpt, model, opt, sched)
    x, y = data()
    model.fit(x, y, optimizer=opt, scheduler=sched, epochs=10, initial_epoch=ck.epoch,
              **{**fit_kwargs(config), "seed": ck.seed})
    np.savez(out, *[p.data for p in model.parameters()], *[b for _, b in model.named_buffers()])
    print("resumed", ck.epoch)
    """
)


def _namespace() -> dict:
    ns: dict = {}
    exec(SETUP, ns)  # noqa: S102 - the test's own code, shared with the child processes
    return ns


def _run_child(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", SETUP + code, *args],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


@pytest.mark.parametrize("config", ["adam-sequential", "sgd-onecycle", "rmsprop-plateau"])
def test_resume_in_a_new_process_is_bit_identical(tmp_path, config):
    ns = _namespace()
    x, y = ns["data"]()
    # 10 epochs straight
    model, opt, sched = ns["build"](config)
    straight = model.fit(
        x, y, optimizer=opt, scheduler=sched, epochs=10, **ns["fit_kwargs"](config)
    )
    expected = get_weights(model)
    # 5 epochs, checkpoint after each (the file of epoch 5 is used)
    model, opt, sched = ns["build"](config)
    first = model.fit(
        x,
        y,
        optimizer=opt,
        scheduler=sched,
        epochs=5,
        callbacks=[C.ModelCheckpoint(str(tmp_path / "ck{epoch}.npz"))],
        **ns["fit_kwargs"](config),
    )
    assert first.history["loss"] == straight.history["loss"][:5]
    # a new process loads it and trains epochs 6..10
    out = tmp_path / "resumed.npz"
    proc = _run_child(CHILD, config, str(tmp_path / "ck5.npz"), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "resumed 5" in proc.stdout
    with np.load(out) as z:
        resumed = [z[f"arr_{i}"] for i in range(len(z.files))]
    assert len(resumed) == len(expected) == 9  # conv, BN (2 + 3 buffers), linear
    for a, b in zip(resumed, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and it must be able to fail: the weights after 5 epochs differ
    assert any(not np.array_equal(a, b) for a, b in zip(get_weights(model), expected, strict=True))


def test_resume_in_process_continues_history_and_epochs(tmp_path):
    ns = _namespace()
    x, y = ns["data"]()
    model, opt, sched = ns["build"]("adam-sequential")
    straight = model.fit(x, y, optimizer=opt, scheduler=sched, epochs=6, **ns["fit_kwargs"](""))
    model, opt, sched = ns["build"]("adam-sequential")
    model.fit(x, y, optimizer=opt, scheduler=sched, epochs=4, **ns["fit_kwargs"](""))
    cnncore.save_checkpoint(
        tmp_path / "c.npz", model, opt, sched, epoch=4, rng=11, history={"a": [1]}
    )
    model2, opt2, sched2 = ns["build"]("adam-sequential")
    ck = cnncore.load_checkpoint(tmp_path / "c.npz", model2, opt2, sched2)
    assert (ck.epoch, ck.seed, ck.history) == (4, 11, {"a": [1]})
    rest = model2.fit(
        x, y, optimizer=opt2, scheduler=sched2, epochs=6, initial_epoch=4, **ns["fit_kwargs"]("")
    )
    assert rest.epoch == [5, 6]
    assert rest.history["loss"] == straight.history["loss"][4:]
    assert rest.history["lr"] == straight.history["lr"][4:]
    # initial_epoch == epochs trains nothing
    before = get_weights(model2)
    h = model2.fit(x, y, optimizer=opt2, epochs=6, initial_epoch=6, **ns["fit_kwargs"](""))
    assert h.epoch == []
    for a, b in zip(get_weights(model2), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_round_trip_of_every_state(tmp_path):
    ns = _namespace()
    x, y = ns["data"]()
    model, opt, sched = ns["build"]("sgd-onecycle")
    model.fit(x, y, optimizer=opt, scheduler=sched, epochs=2, **ns["fit_kwargs"]("sgd-onecycle"))
    gen = np.random.default_rng(5)
    gen.random(3)
    path = tmp_path / "c.npz"
    cnncore.save_checkpoint(path, model, opt, sched, epoch=2, rng=gen, extra={"note": "hi"})
    # the file is a plain npz: readable without pickle, numeric members only
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype.kind in "biuf" for k in z.files)
        assert any(k.startswith("optimizer:state.") for k in z.files)
    # rebuilt from the file alone
    ck = cnncore.load_checkpoint(path)
    assert ck.epoch == 2 and ck.seed is None and ck.extra == {"note": "hi"}
    assert ck.rng.random() == gen.random()
    for a, b in zip(get_weights(ck.model), get_weights(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not ck.model.training
    with pytest.raises(ValueError, match="training checkpoint.*load_checkpoint"):
        cnncore.load(path)
    # into fresh objects: every piece of state equal
    m2, o2, s2 = ns["build"]("sgd-onecycle")
    cnncore.load_checkpoint(path, m2, o2, s2)
    sd, sd2 = opt.state_dict(), o2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        np.testing.assert_array_equal(np.asarray(sd[k]), np.asarray(sd2[k]))
    assert s2.state_dict() == sched.state_dict()
    assert o2.momentum == opt.momentum and o2.lr == opt.lr
    # module generators (Dropout) are restored too
    d1, d2 = model.layers[5].rng, m2.layers[5].rng
    assert d1.random() == d2.random()


def test_model_file_loads_as_weights_only_checkpoint(tmp_path):
    ns = _namespace()
    model, opt, sched = ns["build"]("adam-sequential")
    model.save(tmp_path / "m.npz")
    ck = cnncore.load_checkpoint(tmp_path / "m.npz")
    assert ck.epoch == 0 and ck.optimizer_state is None
    with pytest.raises(ValueError, match="no optimizer state"):
        cnncore.load_checkpoint(tmp_path / "m.npz", model, opt)


def _corrupt(path: Path, out: Path, fn) -> Path:
    data = bytearray(path.read_bytes())
    out.write_bytes(bytes(fn(data)))
    return out


def test_bad_checkpoints_are_refused_and_change_nothing(tmp_path):
    ns = _namespace()
    x, y = ns["data"]()
    model, opt, sched = ns["build"]("adam-sequential")
    model.fit(x, y, optimizer=opt, scheduler=sched, epochs=1, **ns["fit_kwargs"](""))
    good = tmp_path / "good.npz"
    cnncore.save_checkpoint(good, model, opt, sched, epoch=1, rng=11)
    target, topt, tsched = ns["build"]("adam-sequential")
    before = get_weights(target)
    opt_before = topt.state_dict()
    bad_files = [
        _corrupt(good, tmp_path / "trunc.npz", lambda d: d[: len(d) // 2]),
        _corrupt(good, tmp_path / "junk.npz", lambda d: b"not a zip at all"),
    ]
    for bad in bad_files:
        with pytest.raises(ValueError, match="is not a valid cnncore checkpoint"):
            cnncore.load_checkpoint(bad, target, topt, tsched)
    # a scheduler of another kind: refused, optimizer rolled back, weights untouched
    other_sched = optim.StepLR(topt, 2)
    with pytest.raises(ValueError, match="another scheduler"):
        cnncore.load_checkpoint(good, target, topt, other_sched)
    # an optimizer of another kind
    with pytest.raises(ValueError, match="another optimizer"):
        cnncore.load_checkpoint(good, target, optim.SGD(target.parameters(), lr=0.1))
    # a model of another architecture
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with pytest.raises(ValueError, match="do not match"):
        cnncore.load_checkpoint(good, small)
    for a, b in zip(get_weights(target), before, strict=True):
        np.testing.assert_array_equal(a, b)
    sd = topt.state_dict()
    for k in opt_before:
        np.testing.assert_array_equal(np.asarray(sd[k]), np.asarray(opt_before[k]))
    # a crafted meta entry (wrong tag) and an unknown generator name
    for meta, match in (
        (b'{"format": "evil"}', "wrong format tag"),
        (
            b'{"format": "cnncore.checkpoint", "version": 1, "epoch": 1, "seed": null,'
            b' "rng": {"bit_generator": "os.system", "state": {}}}',
            "bit generator",
        ),
        (
            b'{"format": "cnncore.checkpoint", "version": 1, "epoch": -3, "seed": null}',
            "epoch",
        ),
    ):
        crafted = tmp_path / "crafted.npz"
        with np.load(good, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if not k.startswith("optimizer:")}
        arrays["__checkpoint__"] = np.frombuffer(meta, dtype=np.uint8)
        np.savez(crafted, **arrays)
        with pytest.raises(ValueError, match=match):
            cnncore.load_checkpoint(crafted, target)
    with pytest.raises(FileNotFoundError):
        cnncore.load_checkpoint(tmp_path / "missing.npz", target)
    with pytest.raises(TypeError, match="optimizer"):
        cnncore.save_checkpoint(good, model, "adam")
    with pytest.raises(ValueError, match="epoch"):
        cnncore.save_checkpoint(good, model, opt, epoch=-1)
    with pytest.raises(TypeError, match="JSON"):
        cnncore.save_checkpoint(good, model, opt, extra={"f": object()})
    cnncore.load_checkpoint(good, target, topt, tsched)  # the good file is still intact


# --------------------------------------------------------------------------------------------
# SIGKILL during a save
# --------------------------------------------------------------------------------------------

KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    real_savez = np.savez
    calls = [0]

    def slow_savez(f, *args, **kwargs):
        # the real archive is written to the temporary file; then, during the second save,
        # the process stops in the middle of writing (before fsync and rename) and waits to
        # be killed
        real_savez(f, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 2:
            f.flush()
            f.truncate(f.tell() // 2)
            print("MID-WRITE", flush=True)
            time.sleep(60)

    np.savez = slow_savez
    import cnncore
    from cnncore import callbacks, nn
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256, rng=0), nn.ReLU(),
                          nn.Linear(256, 4, rng=1))
    path = sys.argv[1]
    model.fit(x, y, optimizer="adam", loss="cross_entropy", epochs=5, verbose=0, seed=0,
              callbacks=[callbacks.ModelCheckpoint(path)])
    """
)


def test_sigkill_during_a_checkpoint_save_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "last.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(path)],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "MID-WRITE", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the half-written archive is a temporary file beside it (truncated: not loadable) ...
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(".last.npz.")]
    assert len(temps) == 1
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(temps[0])
    # ... and the checkpoint of epoch 1 is intact
    ck = cnncore.load_checkpoint(path)
    assert ck.epoch == 1 and ck.optimizer_state["step_count"] == 2


def test_atomic_write_replaces_and_cleans_up(tmp_path, monkeypatch):
    """A failing write (here: an exception inside savez) leaves the old file and no
    temporary file; a successful one replaces the file."""
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    path = tmp_path / "m.npz"
    model.save(path)
    first = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        cnncore.save_checkpoint(path, model)
    monkeypatch.undo()
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    model.layers[0].weight.data += 1
    cnncore.save_checkpoint(path, model)
    assert path.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
