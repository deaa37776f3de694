"""Resources: repeated calls keep memory flat, and Ctrl-C / KeyboardInterrupt during ``fit``
leaves a usable model.

The leak checks call every public function (and a training step of every layer) many times
on tiny inputs and compare the process's resident memory and the Python/NumPy heap
(tracemalloc) between two points after a warm-up: a leak of even one small kernel workspace
per call would show as megabytes.  CI runs 2,000 measured calls per function;
``CNNCORE_SLOW_TESTS=1`` runs 10,000.
"""

from __future__ import annotations

import gc
import os
import signal
import tracemalloc

import numpy as np
import pytest
from api_specs import SPECS

import cnncore
from cnncore import _alloc, nn, optim

SLOW = os.environ.get("CNNCORE_SLOW_TESTS") == "1"
# Resident memory is meaningless under ASan (its quarantine keeps freed blocks) -- the leak
# checks that use it are skipped in tools/sanitize.sh asan runs; ASan checks the kernels.
rss_checks = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or bool(os.environ.get("CNNCORE_SANITIZED")),
    reason="needs /proc (Linux) and an uninstrumented build",
)
CALLS = 10_000 if SLOW else 2_000
WARMUP = 300


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(fn, calls=CALLS, warmup=WARMUP):
    """(resident-memory growth, traced-heap growth) over ``calls`` calls after a warm-up."""
    for _ in range(warmup):
        fn()
    gc.collect()
    tracemalloc.start()
    try:
        heap0, rss0 = tracemalloc.get_traced_memory()[0], _rss()
        for _ in range(calls):
            fn()
        gc.collect()
        heap1, rss1 = tracemalloc.get_traced_memory()[0], _rss()
    finally:
        tracemalloc.stop()
    return rss1 - rss0, heap1 - heap0


@pytest.fixture
def one_thread():
    n = cnncore.get_num_threads()
    cnncore.set_num_threads(1)
    yield
    cnncore.set_num_threads(n)


def _all_calls():
    rng = np.random.default_rng(0)
    return [(s, s.make(rng, dt, n=1)) for s in SPECS for dt in (np.float32, np.float64)]


@rss_checks
def test_every_function_keeps_memory_flat(one_thread):
    """Rounds of one call of every public function (float32 and float64): CALLS rounds on
    one thread, then CALLS / 40 on two (per-thread workspaces), resident memory compared
    after the warm-up; then the traced heap over 100 more rounds."""
    cases = _all_calls()

    def round_():
        for spec, args in cases:
            spec.call(args)

    for _ in range(WARMUP):
        round_()
    gc.collect()
    rss0 = _rss()
    for _ in range(CALLS - WARMUP):
        round_()
    cnncore.set_num_threads(2)
    for _ in range(CALLS // 40):
        round_()
    gc.collect()
    grown = _rss() - rss0
    # 112 calls per round: a leak of 64 bytes per call would be ~14 MB over 2,000 rounds
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB"
    tracemalloc.start()
    try:
        round_()
        gc.collect()
        heap0 = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            round_()
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - heap0
    finally:
        tracemalloc.stop()
    assert heap < 64 * 1024, f"traced heap grew by {heap} bytes"


@rss_checks
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", rng=0), (2, 2, 6, 6)),
        (lambda: nn.Linear(5, 4, rng=0), (3, 5)),
        (lambda: nn.BatchNorm2d(2), (3, 2, 4, 4)),
        (lambda: nn.MaxPool2d(2), (2, 2, 6, 6)),
        (lambda: nn.Dropout(0.5, rng=0), (3, 7)),
    ],
)
def test_layer_training_steps_keep_memory_flat(make, shape, one_thread):
    layer = make()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)

    def step():
        y = layer(x)
        layer.backward(np.ones_like(y))

    rss, heap = _measure(step, calls=CALLS // 2)
    assert heap < 64 * 1024 and rss < 4 * 2**20, (rss, heap)


@rss_checks
def test_fit_and_predict_keep_memory_flat(one_thread):
    (x, y), _ = cnncore.datasets.load_sample()
    x, y = x[:64, :, ::2, ::2].copy(), y[:64]
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=0),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10, rng=1),
    )
    opt = optim.SGD(model.parameters(), lr=0.01)

    def one_fit():
        model.fit(
            x,
            y,
            optimizer=opt,
            loss="cross_entropy",
            epochs=1,
            batch_size=16,
            verbose=False,
            seed=0,
        )
        model.predict(x)

    rss, heap = _measure(one_fit, calls=100 if SLOW else 30, warmup=5)
    assert heap < 256 * 1024 and rss < 8 * 2**20, (rss, heap)
    assert _alloc.cached_bytes() == 0


# ------------------------------------------------------------------------------------------
# KeyboardInterrupt during fit
# ------------------------------------------------------------------------------------------


class _Raiser(nn.Module):
    """Identity layer that raises ``exc`` in its n-th training forward or backward."""

    def __init__(self, n, where, how):
        super().__init__()
        self.n, self.where, self.how, self.calls = n, where, how, 0

    def _maybe(self, where):
        if self.training and where == self.where:
            self.calls += 1
            if self.calls == self.n:
                if self.how == "raise":
                    raise KeyboardInterrupt
                signal.raise_signal(signal.SIGINT)  # Ctrl-C
                signal.raise_signal(signal.SIGINT)  # ... twice: give up mid-step

    def forward(self, x):
        self._maybe("forward")
        return x

    def backward(self, g, input_grad=True):
        self._maybe("backward")
        return g


@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.parametrize("how", ["raise", "double-ctrl-c"])
def test_keyboard_interrupt_inside_a_step_leaves_a_usable_model(where, how):
    """A KeyboardInterrupt in the middle of a step (raised by code, or a second Ctrl-C)
    propagates out of fit; the weights are those of the last finished step (never half
    updated), Ctrl-C handling and the allocator are restored, and the model can predict,
    be saved and train again."""
    (x, y), _ = cnncore.datasets.load_sample()
    x, y = x[:320], y[:320]
    raiser = _Raiser(4, where, how)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 16, rng=0), raiser, nn.ReLU(), nn.Linear(16, 10, rng=1)
    )
    snapshots = []

    class Snap(optim.SGD):
        def step(self):
            super().step()
            snapshots.append([p.data.copy() for p in model.parameters()])

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x,
            y,
            optimizer=Snap(model.parameters(), lr=0.1, momentum=0.9),
            loss="cross_entropy",
            epochs=2,
            batch_size=32,
            verbose=False,
        )
    assert len(snapshots) == 3  # steps 1-3 finished, step 4 was interrupted
    for a, b in zip(snapshots[-1], model.parameters(), strict=True):
        np.testing.assert_array_equal(a, b.data)
    assert signal.getsignal(signal.SIGINT) is handler
    assert _alloc.cached_bytes() == 0
    out = model.predict(x[:8])
    assert out.shape == (8, 10) and np.isfinite(out).all()
    raiser.n = -1  # no more interrupts
    hist = model.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, verbose=False)
    assert not hist.interrupted and np.isfinite(hist.history["loss"]).all()


def test_save_load_after_interrupt(tmp_path):
    (x, y), _ = cnncore.datasets.load_sample()
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 10, rng=1),
        _Raiser(2, "backward", "raise"),
        nn.Linear(10, 10, rng=2),
    )
    with pytest.raises(KeyboardInterrupt):
        model.fit(x[:64], y[:64], optimizer="adam", loss="cross_entropy", verbose=False)
    model = nn.Sequential(*[m for m in model if not isinstance(m, _Raiser)])
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(
        cnncore.load(tmp_path / "m.npz").predict(x[:4]), model.predict(x[:4])
    )


@rss_checks
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_conv_workspace_does_not_grow_with_the_batch():
    """im2col (and Winograd) run in bounded blocks: one conv2d call's memory beyond its output
    is the same for N=32 and N=256 (a whole-batch im2col would need 72 MiB more at N=256).
    Skipped under ASan, whose quarantine inflates resident memory (tools/sanitize.sh failed
    here before this skip)."""
    from cnncore.bench import conv_extra_memory

    small, large = conv_extra_memory(32, 2), conv_extra_memory(256, 2)
    if small is None or large is None:
        pytest.skip("peak RSS cannot be reset here")
    assert large < 8 * 2**20, (small, large)
    assert large - small < 4 * 2**20, (small, large)
