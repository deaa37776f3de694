"""The learning-rate schedulers against torch.optim.lr_scheduler, step by step (1e-12), their
state round trips, and their argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from cnncore import optim
from cnncore.nn import Parameter


def P(n=3):
    return [Parameter(np.zeros(n))]


def _torch_opt(torch, name, lr, **kw):
    return getattr(torch.optim, name)([torch.zeros(3, requires_grad=True)], lr=lr, **kw)


def _ours_opt(name, lr, **kw):
    return getattr(optim, name)(P(), lr=lr, **kw)


def _momentum(opt):
    """(ours) the momentum or beta1 an optimizer currently uses."""
    return opt.betas[0] if hasattr(opt, "betas") else opt.momentum


def _torch_momentum(opt):
    g = opt.param_groups[0]
    return g["betas"][0] if "betas" in g else g["momentum"]


# (name, optimizer, optimizer kwargs, scheduler factory taking (module, optimizer), steps)
CASES = {
    "multistep": ("SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.5)),
    "multistep-0": ("SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[0, 3], gamma=0.5)),
    "linear-warmup": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=7)),
    "linear-decay": (
        "Adam",
        {},
        lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=11),
    ),
    "onecycle-cos": (
        "SGD",
        {"momentum": 0.9},
        lambda m, o: m.OneCycleLR(o, max_lr=0.5, total_steps=40),
    ),
    "onecycle-linear-3phase-adam": (
        "Adam",
        {},
        lambda m, o: m.OneCycleLR(
            o,
            max_lr=0.01,
            epochs=4,
            steps_per_epoch=9,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
        ),
    ),
    "onecycle-sgd-no-momentum": (
        "SGD",
        {},
        lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=30, pct_start=0.4),
    ),
    "onecycle-no-cycle": (
        "RMSprop",
        {},
        lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=25, cycle_momentum=False),
    ),
    "sequential-warmup-cosine": (
        "SGD",
        {"momentum": 0.9},
        lambda m, o: m.SequentialLR(
            o,
            [
                m.LinearLR(o, start_factor=0.01, total_iters=5),
                m.CosineAnnealingLR(o, T_max=20, eta_min=1e-4),
            ],
            milestones=[5],
        ),
    ),
    "sequential-three": (
        "AdamW",
        {},
        lambda m, o: m.SequentialLR(
            o,
            [
                m.ExponentialLR(o, gamma=0.9),
                m.StepLR(o, step_size=3, gamma=0.5),
                m.MultiStepLR(o, milestones=[2, 4], gamma=0.3),
            ],
            milestones=[4, 13],
        ),
    ),
    "sequential-warmup-onecycle": (
        "SGD",
        {"momentum": 0.9},
        lambda m, o: m.SequentialLR(
            o,
            [m.LinearLR(o, start_factor=0.2, total_iters=4), m.OneCycleLR(o, 0.3, 30)],
            milestones=[6],
        ),
    ),
    "cosine-long": ("SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    "step": ("SGD", {}, lambda m, o: m.StepLR(o, step_size=3, gamma=0.3)),
}


# torch warns that lr_scheduler.step() runs without optimizer.step(): irrelevant here
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_matches_torch_step_by_step(case):
    torch = pytest.importorskip("torch")
    opt_name, kw, factory = CASES[case]
    ours_opt = _ours_opt(opt_name, 0.1, **kw)
    ref_opt = _torch_opt(torch, opt_name, 0.1, **kw)
    ours = factory(optim, ours_opt)
    ref = factory(torch.optim.lr_scheduler, ref_opt)
    steps = getattr(ref, "total_steps", 30)
    assert ours_opt.lr == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
    for _ in range(steps):
        ours.step()
        ref.step()
        t_lr = max(ref_opt.param_groups[0]["lr"], 0.0)  # (see OneCycleLR's Notes)
        assert ours_opt.lr == pytest.approx(t_lr, rel=1e-12, abs=1e-15)
        assert ours.get_last_lr()[0] == pytest.approx(t_lr, rel=1e-12, abs=1e-15)
        if "onecycle" in case and "no-cycle" not in case:
            assert _momentum(ours_opt) == pytest.approx(
                _torch_momentum(ref_opt), rel=1e-12, abs=1e-15
            )


@pytest.mark.parametrize(
    "mode,threshold_mode,cooldown,patience",
    [("min", "rel", 0, 2), ("max", "abs", 2, 1), ("min", "abs", 1, 0), ("max", "rel", 0, 3)],
)
def test_reduce_lr_on_plateau_matches_torch(mode, threshold_mode, cooldown, patience):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    kw = dict(
        mode=mode,
        factor=0.5,
        patience=patience,
        threshold=0.05,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=0.003,
    )
    ours_opt, ref_opt = _ours_opt("SGD", 0.1), _torch_opt(torch, "SGD", 0.1)
    ours = optim.ReduceLROnPlateau(ours_opt, **kw)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, **kw)
    # a noisy curve that plateaus several times
    metrics = np.concatenate([np.linspace(1, 0.5, 5), np.full(6, 0.5), rng.uniform(0.4, 0.6, 30)])
    if mode == "max":
        metrics = -metrics
    for m in metrics:
        ours.step(float(m))
        ref.step(float(m))
        assert ours_opt.lr == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        assert ours.num_bad_epochs == ref.num_bad_epochs
        assert ours.cooldown_counter == ref.cooldown_counter
        assert ours.best == ref.best


def _run(sched, opt, n):
    lrs = []
    for _ in range(n):
        sched.step()
        lrs.append(opt.lr)
    return lrs


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_state_round_trip_continues_identically(case):
    """Stop half-way, save optimizer and scheduler state (through np.savez), rebuild both as
    for a fresh run, load: the rest of the schedule (and the momentum) is identical."""
    import io

    opt_name, kw, factory = CASES[case]
    opt = _ours_opt(opt_name, 0.1, **kw)
    sched = factory(optim, opt)
    total = getattr(sched, "total_steps", 30)
    half = total // 2
    _run(sched, opt, half)
    opt_sd, sd = opt.state_dict(), sched.state_dict()
    rest = _run(sched, opt, total - half)
    opt2 = _ours_opt(opt_name, 0.1, **kw)
    sched2 = factory(optim, opt2)
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        sd = {k: z[k] for k in z.files}
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sd)
    assert _run(sched2, opt2, total - half) == rest


def test_plateau_state_round_trip():
    opt = _ours_opt("SGD", 0.1)
    sched = optim.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in (1.0, 0.9, 0.95, 0.97):
        sched.step(m)
    sd, opt_sd = sched.state_dict(), opt.state_dict()
    opt2 = _ours_opt("SGD", 0.1)
    sched2 = optim.ReduceLROnPlateau(opt2)
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sd)
    for m in (0.99, 0.98, 0.5, 0.6, 0.7, 0.8):
        sched.step(m)
        sched2.step(m)
        assert opt.lr == opt2.lr
        assert sched.num_bad_epochs == sched2.num_bad_epochs


def test_intervals():
    opt = _ours_opt("SGD", 0.1, momentum=0.9)
    assert optim.OneCycleLR(opt, 0.1, total_steps=10).interval == "batch"
    for s in (
        optim.StepLR(opt, 2),
        optim.MultiStepLR(opt, [1]),
        optim.LinearLR(opt),
        optim.CosineAnnealingLR(opt, 3),
        optim.ExponentialLR(opt, 0.9),
        optim.ReduceLROnPlateau(opt),
    ):
        assert s.interval == "epoch"
    warm = optim.LinearLR(opt, total_iters=100)
    warm.interval = "batch"
    assert warm.interval == "batch"
    with pytest.raises(ValueError, match="interval"):
        warm.interval = "step"
    seq = optim.SequentialLR(
        opt, [optim.LinearLR(opt), optim.CosineAnnealingLR(opt, 3)], milestones=[5]
    )
    assert seq.interval == "epoch"
    seq = optim.SequentialLR(
        opt, [optim.LinearLR(opt), optim.OneCycleLR(opt, 0.1, 50)], milestones=[100]
    )
    assert seq.interval == "batch"
    seq.interval = "epoch"
    assert seq.interval == "epoch" and all(s.interval == "epoch" for s in seq.schedulers)


def test_onecycle_past_total_steps_raises():
    opt = _ours_opt("SGD", 0.1, momentum=0.9)
    sched = optim.OneCycleLR(opt, 0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step()


def test_onecycle_cannot_switch_momentum_on_after_steps():
    opt = _ours_opt("SGD", 0.1)
    opt.params[0].grad[...] = 1.0
    opt.step()
    with pytest.raises(ValueError, match="before the first step"):
        optim.OneCycleLR(opt, 0.1, total_steps=5)


@pytest.mark.parametrize(
    "factory,exc,match",
    [
        (lambda o: optim.MultiStepLR(o, milestones=3), TypeError, "milestones"),
        (lambda o: optim.MultiStepLR(o, milestones=[1, -2]), ValueError, "milestones"),
        (lambda o: optim.MultiStepLR(o, milestones=[1.5]), TypeError, "milestones"),
        (lambda o: optim.LinearLR(o, start_factor=0), ValueError, "start_factor"),
        (lambda o: optim.LinearLR(o, start_factor=1.5), ValueError, "start_factor"),
        (lambda o: optim.LinearLR(o, end_factor=-0.1), ValueError, "end_factor"),
        (lambda o: optim.LinearLR(o, total_iters=0), ValueError, "total_iters"),
        (lambda o: optim.OneCycleLR(o, 0.1), ValueError, "total_steps"),
        (lambda o: optim.OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps"),
        (lambda o: optim.OneCycleLR(o, -1.0, total_steps=5), ValueError, "max_lr"),
        (lambda o: optim.OneCycleLR(o, 0.1, 5, pct_start=1.5), ValueError, "pct_start"),
        (lambda o: optim.OneCycleLR(o, 0.1, 5, anneal_strategy="exp"), ValueError, "anneal"),
        (lambda o: optim.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), ValueError, "steps"),
        (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
        (lambda o: optim.ReduceLROnPlateau(o, mode="up"), ValueError, "mode"),
        (lambda o: optim.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
        (lambda o: optim.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold_mode"),
        (lambda o: optim.SequentialLR(o, [], milestones=[]), ValueError, "schedulers"),
        (lambda o: optim.SequentialLR(o, optim.StepLR(o, 1), []), TypeError, "schedulers"),
        (
            lambda o: optim.SequentialLR(o, [optim.StepLR(o, 1), optim.StepLR(o, 2)], [3, 4]),
            ValueError,
            "milestones",
        ),
        (
            lambda o: optim.SequentialLR(o, [optim.StepLR(o, 1), optim.StepLR(o, 2)], [0]),
            ValueError,
            "milestones",
        ),
        (
            lambda o: optim.SequentialLR(o, [optim.ReduceLROnPlateau(o)], []),
            ValueError,
            "ReduceLROnPlateau",
        ),
        (
            lambda o: optim.SequentialLR(o, [optim.StepLR(_ours_opt("SGD", 0.1), 1)], []),
            ValueError,
            "optimizer",
        ),
    ],
)
def test_new_scheduler_bad_arguments(factory, exc, match):
    opt = _ours_opt("Adagrad", 0.1)
    with pytest.raises(exc, match=match) as info:
        factory(opt)
    assert "Received" in str(info.value)


def test_onecycle_needs_momentum():
    with pytest.raises(ValueError, match="cycle_momentum") as info:
        optim.OneCycleLR(_ours_opt("Adagrad", 0.1), 0.1, total_steps=5)
    assert "Received" in str(info.value)


def test_plateau_step_needs_metric():
    sched = optim.ReduceLROnPlateau(_ours_opt("SGD", 0.1))
    with pytest.raises(TypeError, match="metric"):
        sched.step()
    with pytest.raises(TypeError, match="metrics"):
        sched.step("0.5")
