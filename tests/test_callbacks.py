"""cnncore.callbacks: every callback's documented behaviour (Keras' semantics), driven by a
real ``fit`` on a tiny model. A "script" callback placed first overwrites the monitored
metric with a chosen sequence, so patience counting, ``min_delta``, modes, baselines and
cooldowns are checked against exact expectations."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import cnncore
from cnncore import callbacks as C
from cnncore import nn, optim
from cnncore.nn.callbacks import get_weights


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 4, 4)).astype(np.float32)
    y = (x.reshape(n, -1).sum(axis=1) > 0).astype(np.int64) + 2 * (x[:, 0, 0, 0] > 0)
    return x, y


def _model():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 8, rng=0),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(8, 4, rng=1),
    )


class Script(C.Callback):
    """Overwrites ``logs[key]`` with ``values[epoch]`` and keeps copies of the weights at the
    end of every epoch (it runs before the callbacks under test)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values, self.weights = key, values, []

    def on_epoch_end(self, epoch, logs=None):
        if self.key is not None:
            logs[self.key] = self.values[epoch]
        self.weights.append(get_weights(self.model))


def _fit(cbs, epochs, *, validation=True, lr=0.05, **kw):
    x, y = _data()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    hist = model.fit(
        x[:40],
        y[:40],
        optimizer=opt,
        loss="cross_entropy",
        epochs=epochs,
        batch_size=8,
        validation_data=(x[40:], y[40:]) if validation else None,
        verbose=0,
        seed=3,
        callbacks=cbs,
        **kw,
    )
    return model, hist


# --------------------------------------------------------------------------------------------
# EarlyStopping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,patience,min_delta,stopped",
    [
        # improvement at epochs 0, 1; then 3 bad epochs: wait reaches 2 at epoch 3
        ([1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.4, 0.3], 2, 0.0, 3),
        # patience 0: the first non-improving epoch stops
        ([1.0, 0.9, 0.91, 0.5, 0.4, 0.3, 0.2, 0.1], 0, 0.0, 2),
        # a recovery inside the patience window resets the counter
        ([1.0, 1.1, 0.8, 0.9, 1.0, 0.1, 0.1, 0.1], 2, 0.0, 4),
        # ... one epoch too late does not
        ([1.0, 1.1, 1.2, 0.8, 0.9, 1.0, 1.1, 0.1], 2, 0.0, 2),
        # min_delta: decreases of 0.01 are not improvements
        ([1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93], 2, 0.05, 2),
        # ... but 0.1 is
        ([1.0, 0.9, 0.8, 0.79, 0.78, 0.6, 0.59, 0.58], 2, 0.05, 4),
        # no stop: always improving
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], 1, 0.0, None),
    ],
)
def test_early_stopping_patience_and_min_delta(values, patience, min_delta, stopped):
    es = C.EarlyStopping(patience=patience, min_delta=min_delta)
    _, hist = _fit([Script("val_loss", values), es], epochs=len(values))
    if stopped is None:
        assert len(hist.epoch) == len(values) and es.stopped_epoch == 0
    else:
        assert es.stopped_epoch == stopped
        assert len(hist.epoch) == stopped + 1
    # min_delta is taken as |min_delta|, as Keras
    assert C.EarlyStopping(min_delta=-0.5).min_delta == 0.5


@pytest.mark.parametrize(
    "monitor,mode,values,stopped",
    [
        ("val_accuracy", "auto", [0.5, 0.6, 0.55, 0.58, 0.9, 0.95], 3),  # auto -> max
        ("val_accuracy", "max", [0.5, 0.6, 0.55, 0.58, 0.9, 0.95], 3),
        ("val_accuracy", "min", [0.5, 0.6, 0.55, 0.58, 0.9, 0.95], 2),  # decreasing = good
        ("val_loss", "auto", [0.5, 0.6, 0.55, 0.58, 0.4, 0.3], 2),  # auto -> min
        ("val_loss", "max", [0.5, 0.6, 0.55, 0.58, 0.4, 0.3], 3),
        ("loss", "auto", [0.5, 0.4, 0.6, 0.7, 0.1, 0.1], 3),
    ],
)
def test_early_stopping_modes(monitor, mode, values, stopped):
    es = C.EarlyStopping(monitor=monitor, mode=mode, patience=2)
    _fit([Script(monitor, values), es], epochs=len(values))
    assert es.stopped_epoch == stopped
    assert es.mode == ("max" if (mode == "auto" and "acc" in monitor) or mode == "max" else "min")


def test_early_stopping_baseline_and_start_from_epoch():
    # an improvement that does not beat the baseline does not reset the counter
    values = [0.9, 0.95, 0.97, 0.99, 1.0]
    es = C.EarlyStopping(patience=2, baseline=0.5)
    _fit([Script("val_loss", values), es], epochs=5)
    assert es.stopped_epoch == 1 and es.best == 0.9
    es = C.EarlyStopping(patience=2)
    _fit([Script("val_loss", values), es], epochs=5)
    assert es.stopped_epoch == 2
    es = C.EarlyStopping(patience=2, baseline=0.5)
    _fit([Script("val_loss", [0.4, 0.45, 0.3, 0.35, 0.36, 0.37]), es], epochs=6)
    assert es.stopped_epoch == 4 and es.best == 0.3
    # start_from_epoch: epochs 0-2 are not monitored at all
    es = C.EarlyStopping(patience=1, start_from_epoch=3)
    _fit([Script("val_loss", [0.1, 0.9, 0.9, 0.9, 0.95, 0.99, 1.0]), es], epochs=7)
    assert es.stopped_epoch == 4 and es.best == 0.9 and es.best_epoch == 3


@pytest.mark.parametrize("stops", [True, False])
def test_early_stopping_restores_best_weights_bit_exactly(stops):
    values = [1.0, 0.7, 0.8, 0.9, 0.95, 0.99] if stops else [1.0, 0.7, 0.8, 0.6, 0.65, 0.66]
    script = Script("val_loss", values)
    es = C.EarlyStopping(patience=3 if stops else 10, restore_best_weights=True)
    model, hist = _fit([script, es], epochs=len(values))
    best = int(np.argmin(values[: len(hist.epoch)]))
    assert es.best_epoch == best
    now = get_weights(model)
    assert len(now) == len(script.weights[best]) and len(now) > 4  # BatchNorm buffers too
    for a, b in zip(now, script.weights[best], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(now, script.weights[-1], strict=True)), (
        "the last epoch's weights differ from the best's (the test must be able to fail)"
    )


def test_early_stopping_without_restore_keeps_last_weights():
    script = Script("val_loss", [1.0, 0.7, 0.8, 0.9, 0.95])
    model, _ = _fit([script, C.EarlyStopping(patience=2)], epochs=5)
    for a, b in zip(get_weights(model), script.weights[-1], strict=True):
        np.testing.assert_array_equal(a, b)


class _Count(C.Callback):
    def __init__(self):
        super().__init__()
        self.epochs_ended = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_ended += 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: C.EarlyStopping(monitor="val_acc"),
        lambda: C.ModelCheckpoint("/tmp/never.npz", monitor="val_los", save_best_only=True),
        lambda: C.ReduceLROnPlateau(monitor="accuracy_val"),
        lambda: C.EarlyStopping(),  # val_loss without validation data
    ],
)
def test_unknown_monitor_raises_at_first_epoch_end_listing_metrics(make):
    count = _Count()
    with pytest.raises(ValueError, match="Available metrics") as info:
        _fit([count, make()], epochs=3, validation=False)
    assert count.epochs_ended == 1
    for key in ("'loss'", "'accuracy'", "'lr'"):
        assert key in str(info.value)


@pytest.mark.parametrize(
    "factory,exc,match",
    [
        (lambda: C.EarlyStopping(patience=-1), ValueError, "patience"),
        (lambda: C.EarlyStopping(mode="up"), ValueError, "mode"),
        (lambda: C.EarlyStopping(monitor=3), TypeError, "monitor"),
        (lambda: C.EarlyStopping(min_delta="0.1"), TypeError, "min_delta"),
        (lambda: C.EarlyStopping(restore_best_weights=1), TypeError, "restore_best_weights"),
        (lambda: C.ModelCheckpoint(3), TypeError, "filepath"),
        (lambda: C.ReduceLROnPlateau(factor=1.0), ValueError, "factor"),
        (lambda: C.ReduceLROnPlateau(min_lr=-1), ValueError, "min_lr"),
        (lambda: C.CSVLogger("a.csv", separator=";;"), ValueError, "separator"),
        (lambda: C.LambdaCallback(on_epoch_end=3), TypeError, "on_epoch_end"),
    ],
)
def test_callback_bad_arguments(factory, exc, match):
    with pytest.raises(exc, match=match) as info:
        factory()
    assert "Received" in str(info.value)


def test_fit_rejects_non_callbacks():
    with pytest.raises(TypeError, match="callbacks"):
        _fit([object()], epochs=1)
    with pytest.raises(TypeError, match="callbacks"):
        _fit(C.EarlyStopping(), epochs=1)


# --------------------------------------------------------------------------------------------
# ModelCheckpoint
# --------------------------------------------------------------------------------------------


def test_model_checkpoint_every_epoch_formats_paths(tmp_path):
    pattern = str(tmp_path / "sub" / "ep{epoch:02d}-{val_loss:.4f}.npz")
    cb = C.ModelCheckpoint(pattern)
    script = Script(None, None)
    model, hist = _fit([script, cb], epochs=3)
    names = sorted(p.name for p in (tmp_path / "sub").iterdir())
    expected = sorted(
        f"ep{e:02d}-{v:.4f}.npz" for e, v in zip(hist.epoch, hist["val_loss"], strict=True)
    )
    assert names == expected
    # a full checkpoint of epoch 2: epoch, seed and the weights of the end of that epoch
    ck = cnncore.load_checkpoint(tmp_path / "sub" / expected[1])
    assert ck.epoch == 2 and ck.seed == 3
    for a, b in zip(get_weights(ck.model), script.weights[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert ck.history["epoch"] == [1, 2]


def test_model_checkpoint_save_best_only(tmp_path):
    values = [0.9, 0.8, 0.85, 0.7, 0.75]
    cb = C.ModelCheckpoint(str(tmp_path / "e{epoch}.npz"), save_best_only=True)
    _fit([Script("val_loss", values), cb], epochs=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.npz", "e2.npz", "e4.npz"]
    assert cb.best == 0.7
    # mode max on accuracy, with a threshold to beat first
    sub = tmp_path / "acc"
    cb = C.ModelCheckpoint(
        str(sub / "e{epoch}.npz"), monitor="val_accuracy", save_best_only=True,
        initial_value_threshold=0.55,
    )  # fmt: skip
    _fit([Script("val_accuracy", [0.5, 0.6, 0.58, 0.7, 0.7]), cb], epochs=5)
    assert sorted(p.name for p in sub.iterdir()) == ["e2.npz", "e4.npz"]


def test_model_checkpoint_weights_only_is_a_model_file(tmp_path):
    script = Script(None, None)
    path = tmp_path / "best.npz"
    model, _ = _fit([script, C.ModelCheckpoint(str(path), save_weights_only=True)], epochs=2)
    loaded = cnncore.load(path)
    for a, b in zip(get_weights(loaded), script.weights[-1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_unknown_path_field(tmp_path):
    cb = C.ModelCheckpoint(str(tmp_path / "{val_acc:.2f}.npz"))
    with pytest.raises(ValueError, match="Available fields"):
        _fit([cb], epochs=1)


# --------------------------------------------------------------------------------------------
# ReduceLROnPlateau (callback)
# --------------------------------------------------------------------------------------------


def _keras_plateau(values, lr, *, factor, patience, min_delta, cooldown, min_lr, mode="min"):
    """Keras' algorithm, written out independently: the learning rate of each epoch."""
    best = np.inf if mode == "min" else -np.inf
    wait = cool = 0
    lrs = []
    for v in values:
        lrs.append(lr)
        if cool > 0:
            cool -= 1
            wait = 0
        better = v < best - min_delta if mode == "min" else v > best + min_delta
        if better:
            best, wait = v, 0
        elif cool <= 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr)
                cool, wait = cooldown, 0
    return lrs


@pytest.mark.parametrize(
    "kw",
    [
        dict(factor=0.5, patience=2, min_delta=1e-4, cooldown=0, min_lr=0.0),
        dict(factor=0.2, patience=1, min_delta=0.05, cooldown=2, min_lr=0.003),
        dict(factor=0.5, patience=0, min_delta=0.0, cooldown=1, min_lr=0.01),
    ],
)
def test_reduce_lr_on_plateau_callback(kw):
    values = [1.0, 0.9, 0.9, 0.89, 0.95, 0.7, 0.7, 0.71, 0.72, 0.73, 0.5, 0.6, 0.6, 0.6]
    cb = C.ReduceLROnPlateau(**kw)
    _, hist = _fit([Script("val_loss", values), cb], epochs=len(values), lr=0.1)
    expected = _keras_plateau(values, 0.1, **kw)
    assert hist["lr"] == pytest.approx(expected, rel=1e-15)
    assert len(set(expected)) > 2  # the schedule really changed


def test_reduce_lr_on_plateau_callback_max_mode():
    values = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3]
    cb = C.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    _, hist = _fit([Script("val_accuracy", values), cb], epochs=len(values), lr=0.1)
    expected = _keras_plateau(
        values, 0.1, factor=0.5, patience=1, min_delta=1e-4, cooldown=0, min_lr=0.0, mode="max"
    )
    assert hist["lr"] == pytest.approx(expected, rel=1e-15)


# --------------------------------------------------------------------------------------------
# CSVLogger, LambdaCallback, the hooks
# --------------------------------------------------------------------------------------------


def test_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    _, hist = _fit([C.CSVLogger(path)], epochs=3)
    rows = list(csv.DictReader(open(path, newline="")))
    keys = sorted(hist.history)
    assert list(rows[0]) == ["epoch", *keys]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # Keras: 0-based
    for r, i in zip(rows, range(3), strict=True):
        for k in keys:
            assert float(r[k]) == pytest.approx(hist[k][i], rel=1e-12)
    # append: no second header
    _fit([C.CSVLogger(path, append=True)], epochs=2)
    lines = open(path).read().splitlines()
    assert len(lines) == 1 + 3 + 2 and lines.count(lines[0]) == 1
    # overwrite by default; another separator
    _fit([C.CSVLogger(path, separator=";")], epochs=1)
    lines = open(path).read().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch;accuracy;")


def test_lambda_callback_and_hook_order():
    events = []
    cb = C.LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda e, logs: events.append(f"epoch_begin {e}"),
        on_batch_begin=lambda b, logs: events.append(f"batch_begin {b} {logs['size']}"),
        on_batch_end=lambda b, logs: events.append(f"batch_end {b} {sorted(logs)}"),
        on_epoch_end=lambda e, logs: events.append(f"epoch_end {e} {'val_loss' in logs}"),
        on_train_end=lambda logs: events.append("train_end"),
    )
    _fit([cb], epochs=2)  # 40 samples, batch 8: 5 batches
    batch_keys = sorted(["batch", "size", "loss", "accuracy", "lr"])
    expected = ["train_begin"]
    for e in range(2):
        expected.append(f"epoch_begin {e}")
        for b in range(5):
            expected += [f"batch_begin {b} 8", f"batch_end {b} {batch_keys}"]
        expected.append(f"epoch_end {e} True")
    expected.append("train_end")
    assert events == expected


def test_model_and_params_are_set():
    seen = {}

    class Probe(C.Callback):
        def on_train_begin(self, logs=None):
            seen.update(self.params)
            seen["model"] = self.model

    model, hist = _fit([Probe()], epochs=2)
    assert seen["model"] is model
    assert seen["epochs"] == 2 and seen["steps"] == 5 and seen["samples"] == 40
    assert seen["batch_size"] == 8 and seen["seed"] == 3 and seen["initial_epoch"] == 0
    assert seen["history"] is hist and seen["optimizer"] is model.optimizer


def test_stop_training_from_a_batch_hook():
    class StopAt(C.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.stop_training = True

    count = _Count()
    _, hist = _fit([StopAt(), count], epochs=4)
    assert hist.epoch == [1] and count.epochs_ended == 1 and not hist.interrupted


def test_on_train_end_runs_when_training_fails(tmp_path):
    path = tmp_path / "log.csv"
    logger = C.CSVLogger(path)
    with pytest.raises(ValueError):
        _fit([logger, C.EarlyStopping(monitor="nope")], epochs=2)
    assert logger._file.closed
    assert len(open(path).read().splitlines()) == 2  # header + the first epoch
