"""fit's options beyond the basics: validation_split, class_weight / sample_weight (against
PyTorch's CrossEntropyLoss(weight=...)), top-k accuracy, the confusion matrix, per-batch
schedulers, verbose=2, and the argument checks; CrossEntropyLoss(weight=) against torch;
cnncore.viz.plot_confusion."""

from __future__ import annotations

import numpy as np
import pytest

import cnncore
from cnncore import nn, optim
from cnncore.nn.callbacks import get_weights
from cnncore.nn.metrics import TopKAccuracy, confusion_matrix, top_k_correct


def _data(n=60, c=4, seed=0, d=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float64)
    y = rng.integers(0, c, n)
    y[: n // 2] = 0  # imbalanced
    return x, y


def _linear(d=6, c=4, dtype=np.float64):
    return nn.Sequential(nn.Linear(d, c, rng=0, dtype=dtype))


# --------------------------------------------------------------------------------------------
# validation_split
# --------------------------------------------------------------------------------------------


def test_validation_split_takes_the_last_fraction_before_shuffling():
    x, y = _data(50)
    a = _linear()
    ha = a.fit(x, y, optimizer=optim.SGD(a.parameters(), lr=0.1), loss="cross_entropy",
               epochs=3, batch_size=8, validation_split=0.2, verbose=0, seed=1)  # fmt: skip
    b = _linear()
    hb = b.fit(x[:40], y[:40], optimizer=optim.SGD(b.parameters(), lr=0.1),
               loss="cross_entropy", epochs=3, batch_size=8, validation_data=(x[40:], y[40:]),
               verbose=0, seed=1)  # fmt: skip
    assert ha.history == hb.history or {k: v for k, v in ha.history.items() if k != "seconds"} == {
        k: v for k, v in hb.history.items() if k != "seconds"
    }
    for p, q in zip(get_weights(a), get_weights(b), strict=True):
        np.testing.assert_array_equal(p, q)
    assert ha.params["samples"] == 40
    # Keras: floor(50 * 0.9) = 45 training samples
    c = _linear()
    hc = c.fit(x, y, optimizer="sgd", loss="cross_entropy", validation_split=0.1, verbose=0)
    assert hc.params["samples"] == 45
    assert hc["val_loss"][0] == pytest.approx(c.evaluate(x[45:], y[45:])["loss"], rel=1e-12)


def test_validation_data_overrides_split_and_bad_splits():
    x, y = _data(20)
    m = _linear()
    h = m.fit(x, y, optimizer="sgd", loss="cross_entropy", validation_split=0.5,
              validation_data=(x[:3], y[:3]), verbose=0)  # fmt: skip
    assert h.params["samples"] == 20
    for split, exc in ((1.0, ValueError), (-0.1, ValueError), ("0.1", TypeError)):
        with pytest.raises(exc, match="validation_split"):
            m.fit(x, y, optimizer="sgd", loss="cross_entropy", validation_split=split, verbose=0)
    with pytest.raises(ValueError, match="both need at least one"):
        m.fit(x[:1], y[:1], optimizer="sgd", loss="cross_entropy", validation_split=0.1,
              verbose=0)  # fmt: skip
    with pytest.raises(ValueError, match="validation_data"):
        m.fit(x, y, optimizer="sgd", loss="cross_entropy", validation_data=(x,), verbose=0)


# --------------------------------------------------------------------------------------------
# class and sample weights vs PyTorch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_weight_step_matches_torch_weighted_cross_entropy(label_smoothing, dtype):
    """One full-batch SGD step of fit(class_weight=w) against PyTorch: without label smoothing
    it is torch's step on CrossEntropyLoss(weight=w, reduction='sum') / N (Keras' reduction of
    weighted losses); with smoothing (where torch's weight= weighs each class term, Keras'
    class_weight each sample) it is w[y_i] times torch's per-sample loss, summed, / N."""
    torch = pytest.importorskip("torch")
    x, y = _data(40)
    x = x.astype(dtype)
    cw = {0: 0.25, 1: 2.0, 2: 1.5}  # class 3 missing: weight 1
    w = np.array([0.25, 2.0, 1.5, 1.0])
    model = _linear(dtype=dtype)
    w0 = [p.data.copy() for p in model.parameters()]
    hist = model.fit(x, y, optimizer=optim.SGD(model.parameters(), lr=0.5),
                     loss=nn.CrossEntropyLoss(label_smoothing=label_smoothing), epochs=1,
                     batch_size=40, shuffle=False, class_weight=cw, verbose=0)  # fmt: skip
    tw = torch.tensor(w0[0], requires_grad=True)
    tb = torch.tensor(w0[1], requires_grad=True)
    out = torch.tensor(x) @ tw.T + tb
    tt = torch.tensor(y)
    if label_smoothing == 0:
        loss = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=out.dtype), reduction="sum")(
            out, tt
        ) / len(x)
    else:
        per = torch.nn.CrossEntropyLoss(reduction="none", label_smoothing=label_smoothing)(out, tt)
        loss = (torch.tensor(w[y], dtype=out.dtype) * per).sum() / len(x)
    loss.backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert hist["loss"][0] == pytest.approx(loss.item(), **{"rel": tol["rtol"]})
    with torch.no_grad():
        np.testing.assert_allclose(model.layers[0].weight.data, tw - 0.5 * tw.grad, **tol)
        np.testing.assert_allclose(model.layers[0].bias.data, tb - 0.5 * tb.grad, **tol)


def test_class_weight_equals_the_sample_weight_it_implies_and_balanced():
    x, y = _data(48)
    cw = {0: 0.5, 2: 3.0}

    def run(**kw):
        m = _linear()
        h = m.fit(x, y, optimizer=optim.Adam(m.parameters(), lr=0.01), loss="cross_entropy",
                  epochs=2, batch_size=10, verbose=0, seed=2, **kw)  # fmt: skip
        return get_weights(m), h

    by_class, _ = run(class_weight=cw)
    by_sample, _ = run(sample_weight=np.array([cw.get(int(c), 1.0) for c in y]))
    for a, b in zip(by_class, by_sample, strict=True):
        np.testing.assert_array_equal(a, b)
    # both multiply
    both, _ = run(class_weight=cw, sample_weight=np.full(len(y), 2.0))
    doubled, _ = run(sample_weight=2.0 * np.array([cw.get(int(c), 1.0) for c in y]))
    for a, b in zip(both, doubled, strict=True):
        np.testing.assert_array_equal(a, b)
    # 'balanced' is scikit-learn's n_samples / (n_classes * bincount)
    counts = np.bincount(y)
    table = len(y) / (len(counts) * counts)
    balanced, _ = run(class_weight="balanced")
    explicit, _ = run(class_weight={i: table[i] for i in range(4)})
    for a, b in zip(balanced, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
    # all-ones weights == unweighted
    ones, _ = run(sample_weight=np.ones(len(y)))
    plain, _ = run()
    for a, b in zip(ones, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_sample_weight_on_a_regression_loss_and_in_evaluate():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4))
    t = rng.standard_normal((30, 2))
    w = rng.uniform(0, 2, 30)
    m = nn.Sequential(nn.Linear(4, 2, rng=0, dtype=np.float64))
    res = m.evaluate(x, t, loss="mse", sample_weight=w)
    out = m.predict(x)
    per = ((out - t) ** 2).mean(axis=1)
    assert res["loss"] == pytest.approx(np.sum(w * per) / 30, rel=1e-12)
    assert m.evaluate(x, t, loss="mse")["loss"] == pytest.approx(per.mean(), rel=1e-12)


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(class_weight={0: -1.0}), ValueError, "class_weight"),
        (dict(class_weight={7: 1.0}), ValueError, "class_weight"),
        (dict(class_weight={"a": 1.0}), TypeError, "class_weight"),
        (dict(class_weight={0: "x"}), TypeError, "class_weight"),
        (dict(class_weight="balance"), ValueError, "class_weight"),
        (dict(class_weight=[1, 2]), TypeError, "class_weight"),
        (dict(sample_weight=np.ones(5)), ValueError, "sample_weight"),
        (dict(sample_weight=np.full(60, np.nan)), ValueError, "sample_weight"),
        (dict(sample_weight=np.full(60, "a")), TypeError, "sample_weight"),
        (dict(verbose=3), ValueError, "verbose"),
        (dict(metrics=["f1"]), ValueError, "metric"),
        (dict(metrics=3), TypeError, "metrics"),
        (dict(initial_epoch=-1), ValueError, "initial_epoch"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(scheduler="cosine"), TypeError, "scheduler"),
    ],
)
def test_fit_option_errors_name_the_argument(kw, exc, match):
    x, y = _data()
    m = _linear()
    before = get_weights(m)
    with pytest.raises(exc, match=match) as info:
        m.fit(x, y, optimizer="sgd", loss="cross_entropy", **{"verbose": 0, **kw})
    assert "Received" in str(info.value)
    for a, b in zip(get_weights(m), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_class_weight_needs_a_classification_loss_and_scheduler_its_optimizer():
    x, y = _data()
    m = _linear()
    with pytest.raises(ValueError, match="class_weight needs a classification loss"):
        m.fit(x, np.zeros((60, 4)), optimizer="sgd", loss="mse", class_weight={0: 1.0},
              verbose=0)  # fmt: skip
    other = optim.SGD(_linear().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler"):
        m.fit(x, y, optimizer=optim.SGD(m.parameters(), lr=0.1), loss="cross_entropy",
              scheduler=optim.StepLR(other, 1), verbose=0)  # fmt: skip


# --------------------------------------------------------------------------------------------
# CrossEntropyLoss(weight=) against torch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_loss_module_weight_matches_torch(reduction, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 5, 2)).astype(dtype)
    t = rng.integers(0, 5, (9, 2))
    t[0, 1] = -1
    w = rng.uniform(0.1, 3, 5)
    ours = nn.CrossEntropyLoss(reduction, label_smoothing=0.15, ignore_index=-1, weight=w)
    loss = ours(x, t)
    grad = ours.backward()
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(w, dtype=xt.dtype),
        reduction=reduction,
        label_smoothing=0.15,
        ignore_index=-1,
    )(xt, torch.tensor(t))
    ref.sum().backward()
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(loss, ref.detach().numpy(), **tol)
    np.testing.assert_allclose(grad, xt.grad.numpy(), **tol)
    assert ours.get_config()["weight"] == pytest.approx(list(w))


def test_cross_entropy_loss_module_weight_errors():
    for bad in ([[1.0]], [], ["a"], [1.0, np.inf]):
        with pytest.raises(ValueError, match="weight"):
            nn.CrossEntropyLoss(weight=bad)
    with pytest.raises(ValueError, match="weight"):
        nn.CrossEntropyLoss(weight=[1.0, 2.0])(np.zeros((2, 3)), np.array([0, 1]))


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _naive_top_k(out, t, k):
    hits = 0
    for row, label in zip(out, t, strict=True):
        hits += int(sum(v > row[label] for v in row) < k)
    return hits


def test_top_k_correct_against_a_loop():
    rng = np.random.default_rng(2)
    out = rng.standard_normal((200, 7))
    out[:20, 3] = out[:20, 4]  # ties
    t = rng.integers(0, 7, 200)
    for k in (1, 2, 3, 7, 9):
        assert top_k_correct(out, t, k) == _naive_top_k(out, t, k)
    no_ties = rng.standard_normal((50, 7))
    t50 = t[:50]
    assert top_k_correct(no_ties, t50, 1) == np.count_nonzero(no_ties.argmax(1) == t50)
    probs = np.eye(7)[t]
    assert top_k_correct(out, probs, 3) == _naive_top_k(out, t, 3)


def test_fit_and_evaluate_report_top_k():
    x, y = _data(64, c=6)
    m = _linear(c=6)
    h = m.fit(x, y, optimizer="adam", loss="cross_entropy", epochs=2, batch_size=16,
              validation_data=(x[:20], y[:20]), metrics=["top_k_accuracy", TopKAccuracy(2)],
              verbose=0, seed=0)  # fmt: skip
    for key in ("top_5_accuracy", "top_2_accuracy", "val_top_5_accuracy", "val_top_2_accuracy"):
        assert key in h.history
    res = m.evaluate(x, y, metrics=["top3_accuracy"])
    out = m.predict(x)
    assert res["top_3_accuracy"] == _naive_top_k(out, y, 3) / len(y)
    assert res["accuracy"] == np.count_nonzero(out.argmax(1) == y) / len(y)
    with pytest.raises(ValueError, match="top-k"):
        m.fit(x, np.zeros((64, 6)), optimizer="sgd", loss="mse", metrics=["top_k_accuracy"],
              verbose=0)  # fmt: skip


def test_confusion_matrix_from_evaluate():
    x, y = _data(70, c=4)
    m = _linear()
    m.fit(x, y, optimizer="adam", loss="cross_entropy", epochs=3, verbose=0, seed=0)
    res = m.evaluate(x, y, batch_size=16, confusion=True)
    pred = m.predict(x).argmax(1)
    naive = np.zeros((4, 4), np.int64)
    for a, b in zip(y, pred, strict=True):
        naive[a, b] += 1
    np.testing.assert_array_equal(res["confusion"], naive)
    assert res["confusion"].dtype == np.int64
    assert np.trace(res["confusion"]) / len(y) == res["accuracy"]
    # ignored targets are left out
    y2 = y.copy()
    y2[:5] = -100
    assert m.evaluate(x, y2, confusion=True)["confusion"].sum() == 65
    # binary
    xb = np.random.default_rng(0).standard_normal((40, 3))
    yb = (xb[:, 0] > 0).astype(np.float64)[:, None]
    mb = nn.Sequential(nn.Linear(3, 1, rng=0, dtype=np.float64))
    cm = mb.evaluate(xb, yb, loss="bce_with_logits", confusion=True)["confusion"]
    pb = (mb.predict(xb)[:, 0] > 0).astype(int)
    np.testing.assert_array_equal(cm, confusion_matrix(yb[:, 0].astype(int), pb, 2))
    with pytest.raises(ValueError, match="confusion"):
        m.evaluate(x, np.zeros((70, 4)), loss="mse", confusion=True)
    with pytest.raises(TypeError, match="confusion"):
        m.evaluate(x, y, confusion="yes")


def test_confusion_matrix_function():
    cm = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix([0], [3], 3)
    with pytest.raises(ValueError, match="same size"):
        confusion_matrix([0, 1], [0], 3)


def test_plot_confusion(tmp_path):
    pytest.importorskip("matplotlib")
    from cnncore import viz

    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    fig = viz.plot_confusion(cm, class_names=["cat", "dog", "emu"])
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == [str(v) for v in cm.reshape(-1)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "emu"]
    fig.savefig(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    fig = viz.plot_confusion(cm, normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:3] == ["0.83", "0.17", "0.00"]
    for bad, match in (
        (np.ones((2, 3)), "square"),
        (-np.ones((2, 2)), "non-negative"),
        (np.full((2, 2), np.nan), "non-negative"),
    ):
        with pytest.raises(ValueError, match=match):
            viz.plot_confusion(bad)
    with pytest.raises(ValueError, match="class_names"):
        viz.plot_confusion(cm, class_names=["a"])
    assert "plot_confusion" in viz.__all__


# --------------------------------------------------------------------------------------------
# schedulers in fit, verbose, history
# --------------------------------------------------------------------------------------------


def test_fit_steps_batch_schedulers_per_batch_and_epoch_schedulers_per_epoch():
    torch = pytest.importorskip("torch")
    x, y = _data(50)
    m = _linear()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    steps = 7  # ceil(50 / 8)
    sched = optim.OneCycleLR(opt, max_lr=0.3, epochs=3, steps_per_epoch=steps)
    lrs = []
    cb = cnncore.callbacks.LambdaCallback(on_batch_end=lambda b, logs: lrs.append(logs["lr"]))
    m.fit(x, y, optimizer=opt, scheduler=sched, loss="cross_entropy", epochs=3, batch_size=8,
          verbose=0, callbacks=[cb])  # fmt: skip
    assert sched.last_epoch == 3 * steps
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    t_sched = torch.optim.lr_scheduler.OneCycleLR(t_opt, 0.3, epochs=3, steps_per_epoch=steps)
    expected = []
    for _ in range(3 * steps):
        expected.append(t_opt.param_groups[0]["lr"])  # the rate each batch used
        t_opt.step()
        t_sched.step()
    assert lrs == pytest.approx(expected, rel=1e-12)
    # per epoch: StepLR
    m = _linear()
    opt = optim.SGD(m.parameters(), lr=0.1)
    h = m.fit(x, y, optimizer=opt, scheduler=optim.StepLR(opt, 1, gamma=0.5),
              loss="cross_entropy", epochs=3, verbose=0)  # fmt: skip
    assert h["lr"] == [0.1, 0.05, 0.025] and opt.lr == 0.0125
    # ReduceLROnPlateau gets val_loss (here: no validation data, the training loss)
    m = _linear()
    opt = optim.SGD(m.parameters(), lr=1e-9)
    plateau = optim.ReduceLROnPlateau(opt, patience=0)
    h = m.fit(x, y, optimizer=opt, scheduler=plateau, loss="cross_entropy", epochs=2, verbose=0)
    # (the loss barely moves: not an improvement by the relative threshold 1e-4)
    assert plateau.best == h["loss"][0] and plateau.last_epoch == 2


def test_verbose_2_prints_one_line_per_epoch_and_no_bar(capsys):
    x, y = _data(40)
    m = _linear()
    m.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=3, validation_split=0.25,
          verbose=2)  # fmt: skip
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith(f"epoch {i + 1}/3: loss ") for i, ln in
                                   enumerate(lines))  # fmt: skip
    assert "val_loss" in lines[0] and "lr 0.01" in lines[0]
    assert err == ""
    m.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, verbose=1)
    out, err = capsys.readouterr()
    assert "img/s" in err and "lr=" in err and "<" in err  # tqdm: ETA, rate, lr
    m.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_seed_none_is_recorded_and_reproduces():
    x, y = _data(40)
    m = nn.Sequential(nn.Linear(6, 8, rng=0, dtype=np.float64), nn.Dropout(0.5),
                      nn.Linear(8, 4, rng=1, dtype=np.float64))  # fmt: skip
    w0 = get_weights(m)
    h = m.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=2, verbose=0)
    seed = h.params["seed"]
    assert isinstance(seed, int)
    first = get_weights(m)
    from cnncore.nn.callbacks import set_weights

    set_weights(m, w0)
    m.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=2, verbose=0, seed=seed)
    for a, b in zip(get_weights(m), first, strict=True):
        np.testing.assert_array_equal(a, b)
