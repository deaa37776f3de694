"""The training benchmark's step profiler (cnncore.apps.bench.train.step_profile)."""

import numpy as np
import pytest

from cnncore.apps.bench.train import bench_train, step_profile


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def test_step_profile_parts_cover_the_step():
    x, y = _data()
    prof = step_profile("lenet", x, y, steps=3)
    assert prof["model"] == "lenet" and prof["batch"] == 64 and prof["steps"] == 3
    parts = prof["parts"]
    assert all(v >= 0 for v in parts.values())
    # every part is inside the step; "other" is the rest of it
    assert sum(parts.values()) == pytest.approx(prof["step_s"], rel=1e-6, abs=1e-9)
    for key in ("input", "loss", "zero_grad", "metrics", "optimizer", "other"):
        assert key in parts
    for key in (
        "00 Conv2d forward",
        "00 Conv2d backward",
        "03 Conv2d backward",
        "11 Linear backward",
    ):
        assert parts[key] > 0
    # the ReLUs in front of the pools are fused into them: timed once, as the pool's forward;
    # the first conv, its ReLU and pool run as one kernel: timed as the conv's forward (and
    # backward: the fused parameter gradients)
    assert parts["05 MaxPool2d forward"] > 0
    assert "01 ReLU forward" not in parts and "04 ReLU forward" not in parts
    assert "02 MaxPool2d forward" not in parts and "02 MaxPool2d backward" not in parts


@pytest.mark.parametrize(
    "kwargs, match",
    [({"name": "vgg"}, "name must be one of"), ({"steps": 0}, "steps must be >= 1")],
)
def test_step_profile_bad_arguments(kwargs, match):
    x, y = _data(10)
    args = {"name": "lenet", "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        step_profile(args["name"], x, y, steps=args["steps"])


def test_bench_train_profile_mode():
    lines = []
    res = bench_train(quick=True, use_torch=False, out=lines.append, models=["lenet"], profile=2)
    assert res["data"] == "sample" and len(res["profiles"]) == 1
    assert res["profiles"][0]["model"] == "lenet"
    assert any("ms per step" in line for line in lines)
    assert any(line.strip().startswith("03 Conv2d backward") for line in lines)
