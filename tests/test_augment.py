"""FlipShift augmentation and its use in fit."""

import numpy as np
import pytest

from cnncore import models, nn
from cnncore.augment import FlipShift


def _ref(x, mirror, dy, dx, s):
    out = np.zeros_like(x)
    n, _, h, w = x.shape
    for i in range(n):
        img = x[i, :, :, ::-1] if mirror[i] else x[i]
        padded = np.pad(img, ((0, 0), (s, s), (s, s)))
        out[i] = padded[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def test_flip_shift_matches_loop_reference(rng):
    x = rng.standard_normal((16, 2, 7, 5)).astype(np.float32)
    aug = FlipShift(max_shift=2)
    out = aug(x, np.random.default_rng(3))
    g = np.random.default_rng(3)
    mirror = g.random(16) < 0.5
    dy = g.integers(0, 5, 16)
    dx = g.integers(0, 5, 16)
    np.testing.assert_array_equal(out, _ref(x, mirror, dy, dx, 2))
    assert out.dtype == x.dtype and out.flags.c_contiguous


def test_flip_shift_identity_settings(rng):
    x = rng.standard_normal((4, 1, 6, 6))
    np.testing.assert_array_equal(FlipShift(0, flip=False)(x, rng), x)
    np.testing.assert_array_equal(FlipShift(0, flip_prob=1.0)(x, rng), x[..., ::-1])


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"max_shift": -1}, ValueError), ({"flip": "yes"}, TypeError), ({"flip_prob": 2}, ValueError)],
)
def test_flip_shift_validation(kwargs, exc):
    with pytest.raises(exc, match="Received"):
        FlipShift(**kwargs)


def test_fit_with_augment_is_seeded(rng):
    x = rng.random((96, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 96)

    def run():
        model = models.lenet5(rng=0)
        model.fit(
            x,
            y,
            optimizer="sgd",
            loss="cross_entropy",
            epochs=1,
            batch_size=32,
            verbose=False,
            seed=5,
            augment=FlipShift(2),
        )
        return [p.data.copy() for p in model.parameters()]

    for a, b in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="augment"):
        nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).fit(
            x, y, optimizer="sgd", loss="cross_entropy", augment=3, verbose=False
        )
