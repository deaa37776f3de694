"""Thread determinism and concurrency of every kernel.

* Every public function gives bit-identical results for 1, 2, 3 and 4 OpenMP threads (on
  inputs large enough that the work is really split; the convolution algorithms).
* A whole seeded ``fit`` of a model using every trainable layer type and Adam gives the same
  weights for 1 and 3 threads (tests/test_nn.py has the LeNet-style one for 1-4 threads).
* Kernels called from several Python threads at once give the single-threaded results, and
  two ``fit`` calls running concurrently (sharing the caching allocator) train exactly as
  they do one after the other.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from api_specs import SPECS, outputs

import cnncore
from cnncore import nn, optim

THREADS = (1, 2, 3, 4)


pytestmark = pytest.mark.usefixtures("restore_threads")


def _bytes(result):
    return [np.asarray(r).tobytes() for r in outputs(result)]


def _run(spec, args, threads):
    cnncore.set_num_threads(threads)
    return _bytes(spec.call(args))


def _conv_variants():
    """Convolution specs once per algorithm (each has its own parallel loops)."""
    out = []
    for spec in SPECS:
        algos = [None]
        if spec.name.startswith("conv2d"):
            algos = ["gemm", "direct", "blocked", "winograd4", "rows"]
        for algo in algos:
            out.append(pytest.param(spec, algo, id=spec.name + (f"-{algo}" if algo else "")))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec, algo", _conv_variants())
def test_bit_identical_for_1_2_3_4_threads(spec, algo, dtype):
    args = spec.make(np.random.default_rng(7), dtype, n=5, big=True)
    with cnncore.conv_algorithm(algo or "auto"):
        ref = _run(spec, args, 1)
        for threads in THREADS[1:] + (4, 2):  # repeated: a race would show up as a difference
            assert _run(spec, args, threads) == ref, f"{threads} threads"


def _rich_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same", padding_mode="reflect", rng=0),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.Dropout2d(0.1),
        nn.Conv2d(4, 4, 3, groups=2, rng=1),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * 3 * 3, 16, rng=2),
        nn.BatchNorm1d(16),
        nn.LayerNorm(16),
        nn.Sigmoid(),
        nn.Linear(16, 10, rng=3),
    )


def _fit(x, y, threads=None, seed=5):
    if threads is not None:
        cnncore.set_num_threads(threads)
    model = _rich_model()
    model.fit(
        x,
        y,
        optimizer=optim.Adam(model.parameters(), lr=1e-3),
        loss="cross_entropy",
        epochs=2,
        batch_size=16,
        verbose=False,
        seed=seed,
    )
    return [p.data.copy() for p in model.parameters()] + [
        b.copy() for _, b in model.named_buffers()
    ]


@pytest.fixture(scope="module")
def data():
    (x, y), _ = cnncore.datasets.load_sample()
    return x[:96, :, 6:20, 6:20].copy(), y[:96]


def test_seeded_fit_of_every_layer_type_is_thread_independent(data):
    x, y = data
    ref = _fit(x, y, 1)
    for a, b in zip(ref, _fit(x, y, 3), strict=True):
        np.testing.assert_array_equal(a, b)


def test_kernels_from_concurrent_python_threads():
    """4 Python threads, each running every public function (in its own order, 3 rounds)
    while the others do too, with 2 OpenMP threads each: every result equals the one
    computed alone."""
    cnncore.set_num_threads(2)
    rng = np.random.default_rng(3)
    cases = [(s, s.make(rng, dt, n=3, big=True)) for s in SPECS for dt in (np.float32, np.float64)]
    expected = [_bytes(s.call(a)) for s, a in cases]
    start = threading.Barrier(4)

    def worker(k):
        order = np.random.default_rng(k).permutation(len(cases))
        start.wait()
        bad = []
        for _ in range(3):
            for i in order:
                s, a = cases[i]
                if _bytes(s.call(a)) != expected[i]:
                    bad.append(s.name)
        return bad

    with ThreadPoolExecutor(4) as pool:
        failures = [b for r in pool.map(worker, range(4)) for b in r]
    assert not failures


def test_concurrent_fits_train_as_they_do_alone(data):
    """Two fits in two Python threads at once (the caching allocator is shared process
    state) give exactly the weights of the same fits run one after the other."""
    x, y = data
    cnncore.set_num_threads(2)
    alone = [_fit(x, y, seed=s) for s in (5, 6)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda s: _fit(x, y, seed=s), (5, 6)))
    for ref, got in zip(alone, together, strict=True):
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_array_equal(a, b)
    assert cnncore._alloc.cached_bytes() == 0  # the cache is released when the last fit ends


def test_seeded_fit_with_the_conv_relu_pool_fusion_is_thread_independent():
    """The README CNN and LeNet-5 (first layers: one input channel, ReLU, 2x2 pooling) train
    their first Conv2d-ReLU-MaxPool2d through the fused kernels, forward and backward."""
    (x, y), _ = cnncore.datasets.load_sample()
    x, y = x[:40], y[:40]

    def fit(name, threads):
        cnncore.set_num_threads(threads)
        model = cnncore.models.build(name, rng=0)
        model.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, batch_size=16,
                  verbose=False, seed=3)  # fmt: skip
        assert 1 in model._fused and model._conv_pool.get(2) == 0
        # (the CNN's second conv too where its forward runs Winograd F(4x4))
        return [p.data.copy() for p in model.parameters()]

    saved = cnncore.get_num_threads()
    try:
        for name in ("cnn", "lenet"):
            ref = fit(name, 1)
            for a, b in zip(ref, fit(name, 3), strict=True):
                assert a.tobytes() == b.tobytes()
    finally:
        cnncore.set_num_threads(saved)
