"""cnncore.optim.make_optimizer, the one table of optimizers by name (used by ``fit`` and the
``cnncore`` command), and the optimizers' checks of real-valued hyper-parameters."""

import numpy as np
import pytest

from cnncore import nn, optim


def _params():
    return [nn.Parameter(np.zeros((2, 3), np.float32)), nn.Parameter(np.zeros(3, np.float32))]


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad])
def test_huge_int_hyperparameter_is_a_named_value_error(cls):
    """An int beyond float's range is a ValueError naming the argument (not a bare
    OverflowError from float())."""
    with pytest.raises(ValueError, match=r"lr is out of the range of a float"):
        cls(_params(), lr=10**400)
    with pytest.raises(ValueError, match=r"weight_decay is out of the range of a float"):
        cls(_params(), lr=0.1, weight_decay=10**400)
    opt = cls(_params(), lr=0.1)
    with pytest.raises(ValueError, match=r"lr is out of the range of a float"):
        opt.lr = 10**400
    sd = opt.state_dict()
    sd["lr"] = np.array(10**400, dtype=object)  # 0-d, as np.load would give back
    with pytest.raises(ValueError, match=r"lr is out of the range of a float"):
        opt.load_state_dict(sd)
    assert opt.lr == 0.1  # untouched


def test_huge_int_in_a_scheduler_is_a_named_value_error():
    opt = optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match=r"gamma is out of the range of a float"):
        optim.StepLR(opt, step_size=1, gamma=10**400)
    with pytest.raises(ValueError, match=r"eta_min is out of the range of a float"):
        optim.CosineAnnealingLR(opt, T_max=3, eta_min=-(10**400))


def _hyper(opt):
    sd = opt.state_dict()
    return {k: v for k, v in sd.items() if not k.startswith("state.")}


# fit(optimizer=name): the classes' defaults, SGD (which has none) with lr=0.01
FIT = {
    "sgd": lambda p: optim.SGD(p, lr=0.01),
    "adam": lambda p: optim.Adam(p),
    "adamw": lambda p: optim.AdamW(p),
    "rmsprop": lambda p: optim.RMSprop(p),
    "adagrad": lambda p: optim.Adagrad(p),
}
# the cnncore command: its own default learning rates, momentum for SGD only
CLI = {
    "sgd": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.0),
    "adam": lambda p: optim.Adam(p, lr=1e-3, weight_decay=0.0),
    "adamw": lambda p: optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, weight_decay=0.0),
    "adagrad": lambda p: optim.Adagrad(p, lr=1e-2, weight_decay=0.0),
}


def test_names():
    assert optim.OPTIMIZER_NAMES == ("adagrad", "adam", "adamw", "rmsprop", "sgd")
    assert set(FIT) == set(CLI) == set(optim.OPTIMIZER_NAMES)


@pytest.mark.parametrize("name", sorted(FIT))
def test_fit_defaults(name):
    opt = optim.make_optimizer(name.upper(), _params())
    assert _hyper(opt) == _hyper(FIT[name](_params()))


@pytest.mark.parametrize("name", sorted(CLI))
def test_cli_defaults(name):
    opt = optim.make_optimizer(name, _params(), momentum=0.9, defaults="cli")
    assert _hyper(opt) == _hyper(CLI[name](_params()))
    # explicit values win; momentum reaches SGD only
    opt = optim.make_optimizer(
        name, _params(), lr=0.5, momentum=0.5, weight_decay=0.25, defaults="cli"
    )
    assert opt.lr == 0.5 and opt.weight_decay == 0.25
    if name == "sgd":
        assert opt.momentum == 0.5
    elif name == "rmsprop":
        assert opt.momentum == 0.0


def test_fit_uses_the_table():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    x = np.zeros((4, 1, 2, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    for name in optim.OPTIMIZER_NAMES:
        model.fit(x, y, optimizer=name, loss="cross_entropy", verbose=False)
        assert _hyper(model.optimizer) == _hyper(FIT[name](model.parameters())) | {"step_count": 1}


def test_bad_names():
    with pytest.raises(
        ValueError,
        match=r"make_optimizer\(\): unknown optimizer name. "
        r"Expected one of \['adagrad', 'adam', 'adamw', "
        r"'rmsprop', 'sgd'\]. Received: optimizer='lbfgs'",
    ):
        optim.make_optimizer("lbfgs", _params())
    with pytest.raises(TypeError, match="optimizer must be a name"):
        optim.make_optimizer(optim.SGD, _params())
    with pytest.raises(ValueError, match="defaults must be one of 'fit', 'cli'"):
        optim.make_optimizer("sgd", _params(), defaults="keras")
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, rng=0))
    with pytest.raises(ValueError, match=r"fit\(\): unknown optimizer name.*optimizer='nope'"):
        model.fit(
            np.zeros((2, 4), np.float32),
            np.array([0, 1]),
            optimizer="nope",
            loss="cross_entropy",
            verbose=False,
        )
