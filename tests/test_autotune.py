"""Autotuning of the convolution algorithm (cnncore.ops.conv_dispatch / conv_tune) and
cnncore.tune: cache hits and misses, the choice is independent of the thread count, the
forced algorithm wins, the persistent cache file (round trip, corrupted and crafted files),
tune() reaches every convolution of Sequential and graph models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import assert_bit_identical_across_threads

import cnncore
from cnncore import nn
from cnncore.ops import conv_dispatch, conv_tune
from cnncore.ops.conv import conv2d_algorithms

pytestmark = pytest.mark.usefixtures("restore_threads")


@pytest.fixture(autouse=True)
def clean_tuning(monkeypatch):
    """Every test starts and ends with autotuning off, no cache file and nothing tuned."""
    monkeypatch.delenv(conv_tune.ENV_CACHE, raising=False)
    saved = cnncore.get_autotune()
    cnncore.set_autotune(False)
    conv_dispatch.clear_tuning()
    yield
    cnncore.set_autotune(saved)
    monkeypatch.delenv(conv_tune.ENV_CACHE, raising=False)
    conv_dispatch.clear_tuning()


@pytest.fixture
def count_measure(monkeypatch):
    """Wrap conv_tune.measure: the list of cases it timed."""
    calls = []
    real = conv_tune.measure

    def counting(case, candidates, preferred):
        calls.append((case, dict(candidates), preferred))
        return real(case, candidates, preferred)

    monkeypatch.setattr(conv_tune, "measure", counting)
    return calls


def _no_measure(*args, **kwargs):
    raise AssertionError("measured although the choice was cached")


def _data(rng, x_shape=(2, 16, 12, 12), w_shape=(16, 16, 3, 3), dtype=np.float32):
    return (
        rng.standard_normal(x_shape).astype(dtype),
        rng.standard_normal(w_shape).astype(dtype),
    )


# --------------------------------------------------------------------------------------------
# On first use
# --------------------------------------------------------------------------------------------


def test_default_uses_the_thresholds_and_measures_nothing(rng, monkeypatch):
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    x, w = _data(rng)
    y = cnncore.conv2d(x, w, padding=1)
    cnncore.conv2d_backward(np.ones_like(y), x, w, padding=1)
    assert conv_dispatch.tuned_algorithms() == []
    assert not cnncore.get_autotune()


def test_first_use_measures_each_pass_once(rng, count_measure):
    cnncore.set_autotune(True)
    x, w = _data(rng)
    y1 = cnncore.conv2d(x, w, padding=1)
    y2 = cnncore.conv2d(x, w, padding=1)  # hit
    assert [c[0].which for c in count_measure] == ["forward"]
    np.testing.assert_array_equal(y1, y2)
    g = np.ones_like(y1)
    cnncore.conv2d_backward(g, x, w, padding=1)
    cnncore.conv2d_backward(g, x, w, padding=1)
    assert sorted(c[0].which for c in count_measure) == ["forward", "input", "weight"]
    # another shape (batch size) or dtype is another case
    cnncore.conv2d(x[:1], w, padding=1)
    cnncore.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    assert len(count_measure) == 5
    assert {t["dtype"] for t in conv_dispatch.tuned_algorithms()} == {"float32", "float64"}


def test_tuned_result_is_that_of_the_chosen_algorithm(rng):
    cnncore.set_autotune(True)
    x, w = _data(rng)
    y = cnncore.conv2d(x, w, padding=1)
    (entry,) = conv_dispatch.tuned_algorithms()
    with cnncore.conv_algorithm(entry["algorithm"]):
        expected = cnncore.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(y, expected)
    assert (
        conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"]
        == (entry["algorithm"])
    )


def test_only_algorithms_that_apply_are_timed(rng, count_measure):
    cnncore.set_autotune(True)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 4, 5, 5)).astype(np.float32)
    y = cnncore.conv2d(x, w, stride=2)
    cnncore.conv2d_backward(np.ones_like(y), x, w, stride=2)
    timed = {case.which: set(cands) for case, cands, _ in count_measure}
    # 5x5 stride 2: no Winograd; the direct input gradient needs stride 1 (the blocked one
    # runs strided ones in stride phases); no direct weight gradient; depthwise needs 1
    # channel per group
    assert timed == {
        "forward": {"gemm", "direct", "blocked"},
        "input": {"gemm", "blocked"},
        "weight": {"gemm", "blocked"},
    }
    assert {t["pass"]: t["algorithm"] for t in conv_dispatch.tuned_algorithms()}.keys() == {
        "forward",
        "input",
        "weight",
    }


def test_eligibility_matches_the_kernels():
    geo = cnncore._geometry.conv2d_geometry("t", (8, 8), (3, 3), 1, 3, 1)
    case = conv_tune.ConvCase("input", (1, 4, 8, 8), (4, 4, 3, 3), 1, geo, "float32")
    # padding 3 > 2: no Winograd input gradient
    assert conv_dispatch.eligible_algorithms(case) == ["gemm", "direct", "blocked", "rows"]
    dw = case._replace(which="forward", x_shape=(1, 4, 8, 8), w_shape=(8, 1, 3, 3), groups=4)
    assert conv_dispatch.eligible_algorithms(dw) == [
        "gemm",
        "direct",
        "winograd",
        "winograd4",
        "depthwise",
        "blocked",
        "rows",
    ]
    assert conv_dispatch.eligible_algorithms(dw._replace(which="weight")) == [
        "gemm",
        "winograd",
        "winograd4",
        "depthwise",
        "blocked",
        "rows",
    ]
    strided = case._replace(geo=cnncore._geometry.conv2d_geometry("t", (8, 8), (3, 3), 2, 1, 1))
    assert conv_dispatch.eligible_algorithms(strided) == ["gemm", "blocked"]  # stride phases
    # ... but not dilated, nor with a stride past the kernel (a phase without taps)
    dilated = case._replace(geo=cnncore._geometry.conv2d_geometry("t", (8, 8), (3, 3), 2, 1, 2))
    assert conv_dispatch.eligible_algorithms(dilated) == ["gemm"]
    wide = case._replace(
        w_shape=(4, 4, 1, 1), geo=cnncore._geometry.conv2d_geometry("t", (8, 8), (1, 1), 2, 0, 1)
    )
    assert conv_dispatch.eligible_algorithms(wide) == ["gemm"]


def test_forced_algorithm_wins_over_a_tuned_choice(rng):
    cnncore.set_autotune(True)
    x, w = _data(rng)
    cnncore.conv2d(x, w, padding=1)
    (entry,) = conv_dispatch.tuned_algorithms()
    other = "gemm" if entry["algorithm"] != "gemm" else "winograd"
    with cnncore.conv_algorithm(other):
        assert conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"] == (other)
        y = cnncore.conv2d(x, w, padding=1)
    with cnncore.conv_algorithm(other):
        with cnncore.conv_algorithm("auto"):  # back to the tuned choice inside
            assert (
                conv2d_algorithms(x.shape, w.shape, padding=1, dtype=np.float32)["forward"]
                == (entry["algorithm"])
            )
    with cnncore.conv_algorithm(other):
        np.testing.assert_array_equal(y, cnncore.conv2d(x, w, padding=1))


def test_use_tuned_false_ignores_tuned_choices(rng, monkeypatch):
    cnncore.set_autotune(True)
    x, w = _data(rng)
    cnncore.conv2d(x, w, padding=1)
    (entry,) = conv_dispatch.tuned_algorithms()
    heuristic = conv_dispatch.algorithm_name(
        conv_dispatch.heuristic_conv_algorithm(
            w.shape,
            1,
            cnncore._geometry.conv2d_geometry("t", (12, 12), (3, 3), 1, 1, 1),
            "forward",
            x.shape[0],
        )
    )
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    with conv_dispatch.use_tuned(False):
        assert conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"] == (
            heuristic
        )
        cnncore.conv2d(x[:1], w, padding=1)  # a new shape: not tuned either
        with conv_dispatch.use_tuned(True):
            assert (
                conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"]
                == (entry["algorithm"])
            )
        with cnncore.conv_algorithm("gemm"):
            assert conv2d_algorithms(x.shape, w.shape, padding=1)["forward"] == "gemm"
    assert len(conv_dispatch.tuned_algorithms()) == 1
    with pytest.raises(TypeError, match="enabled must be a bool"):
        conv_dispatch.use_tuned(0)


def test_a_later_tune_replaces_a_remembered_threshold_choice(rng, monkeypatch):
    """Calls of an untuned shape remember the thresholds' choice; tuning that shape later
    (or switching autotuning on) must be seen by the next call."""
    x, w = _data(rng)  # 3x3, 16 channels, 2 x 12x12: blocked (Winograd from 4 samples), not GEMM
    with conv_dispatch.use_tuned(False):
        thresholds = conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"]
    assert thresholds in ("winograd", "winograd4", "blocked")
    cnncore.tune(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 1, 8, 8))  # something else tuned
    for _ in range(2):
        assert conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"] == (
            thresholds
        )
        cnncore.conv2d(x, w, padding=1)
    monkeypatch.setattr(conv_tune, "measure", lambda case, cands, pref: ("gemm", {}))
    cnncore.tune(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False)), x.shape)
    assert conv2d_algorithms(x.shape, w.shape, padding=1, dtype="float32")["forward"] == "gemm"
    with cnncore.conv_algorithm("gemm"):
        expected = cnncore.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(cnncore.conv2d(x, w, padding=1), expected)
    # switching autotuning on is seen too: a remembered untuned shape gets measured
    x2 = x[:1]
    cnncore.conv2d(x2, w, padding=1)
    cnncore.set_autotune(True)
    cnncore.conv2d(x2, w, padding=1)
    assert any(t["input"] == x2.shape for t in conv_dispatch.tuned_algorithms())


def test_case_too_large_to_time_keeps_the_thresholds(rng, monkeypatch):
    monkeypatch.setattr(conv_tune, "MAX_TUNE_BYTES", 0)
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    cnncore.set_autotune(True)
    x, w = _data(rng)
    cnncore.conv2d(x, w, padding=1)
    assert conv_dispatch.tuned_algorithms() == []


def test_measure_keeps_the_preferred_algorithm_unless_clearly_faster(monkeypatch):
    geo = cnncore._geometry.conv2d_geometry("t", (8, 8), (3, 3), 1, 1, 1)
    case = conv_tune.ConvCase("forward", (1, 2, 8, 8), (2, 2, 3, 3), 1, geo, "float32")
    cost = {1: 1.00, 2: 0.97, 3: 0.50}  # gemm, direct (3 % faster: noise), winograd (2x)
    # a virtual clock that only the fake kernels advance: the verdict cannot depend on what
    # else the machine runs (a busy-waiting version failed under load)
    now = [0.0]

    def fake_runner(case, n_threads):
        def run(code):
            now[0] += cost[code] * 2e-4

        return run

    monkeypatch.setattr(conv_tune, "_runner", fake_runner)
    monkeypatch.setattr(conv_tune.time, "perf_counter", lambda: now[0])
    name, times = conv_tune.measure(case, {"gemm": 1, "direct": 2}, "gemm")
    assert name == "gemm" and set(times) == {"gemm", "direct"}
    name, _ = conv_tune.measure(case, {"gemm": 1, "direct": 2, "winograd": 3}, "gemm")
    assert name == "winograd"


# --------------------------------------------------------------------------------------------
# Thread count: the choice never depends on it
# --------------------------------------------------------------------------------------------


def test_timing_runs_at_the_fixed_tuning_thread_count(rng, monkeypatch):
    seen = []
    real = conv_tune._runner

    def spy(case, n_threads):
        seen.append(n_threads)
        return real(case, n_threads)

    monkeypatch.setattr(conv_tune, "_runner", spy)
    cnncore.set_autotune(True)
    cnncore.set_num_threads(3)
    x, w = _data(rng)
    cnncore.conv2d(x, w, padding=1)
    assert seen == [conv_tune.tune_threads()]


def test_tuned_results_are_bit_identical_for_any_thread_count(rng, monkeypatch):
    cnncore.set_autotune(True)
    x, w = _data(rng, (3, 16, 14, 14))
    g = rng.standard_normal((3, 16, 14, 14)).astype(np.float32)

    def compute():
        y = cnncore.conv2d(x, w, padding=1)
        return (y, *cnncore.conv2d_backward(g, x, w, padding=1))

    compute()  # tuned here, at whatever thread count the test starts with
    monkeypatch.setattr(conv_tune, "measure", _no_measure)  # nothing is tuned again
    assert_bit_identical_across_threads(compute, counts=(1, 2, 3, 4, 1))
    assert len(conv_dispatch.tuned_algorithms()) == 3  # no thread count in the key


def test_fit_after_tune_is_bit_identical_for_1_and_3_threads(rng):
    x = rng.standard_normal((24, 1, 10, 10)).astype(np.float32)
    y = rng.integers(0, 3, 24)

    def train(threads):
        cnncore.set_num_threads(threads)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, rng=0),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, rng=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 100, 3, rng=2),
        )
        cnncore.tune(model, (8, 1, 10, 10))
        model.fit(x, y, optimizer="sgd", loss="cross_entropy", epochs=1, batch_size=8,
                  verbose=0, seed=0)  # fmt: skip
        return [p.data for p in model.parameters()]

    ref = train(1)
    assert conv_dispatch.tuned_algorithms()
    for a, b in zip(ref, train(3), strict=True):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------
# The cache file
# --------------------------------------------------------------------------------------------


def _lenet():
    return cnncore.models.lenet5(rng=0)


def test_cache_file_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "tune.json"
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    report = cnncore.tune(_lenet(), (2, 1, 28, 28))
    assert len(report) == 6  # two convolutions, three passes each
    doc = json.loads(path.read_text())
    assert doc["format"] == "cnncore-tune-cache" and doc["version"] == 1
    assert len(doc["entries"]) == 6
    assert {e["simd"] for e in doc["entries"]} == {cnncore._config._selected_simd()}
    assert {e["threads"] for e in doc["entries"]} == {conv_tune.tune_threads()}
    before = conv_dispatch.tuned_algorithms()

    # "a new process": nothing in memory, the file read again; nothing is measured
    conv_dispatch.clear_tuning()
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    cnncore.set_autotune(True)
    model = _lenet()
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    model.train()
    out = model(x)
    model.backward(np.ones_like(out))
    assert sorted(map(str, conv_dispatch.tuned_algorithms())) == sorted(map(str, before))
    report2 = cnncore.tune(_lenet(), (2, 1, 28, 28))
    assert [r["algorithm"] for r in report2] == [r["algorithm"] for r in report]
    assert all(r["times_us"] == {} for r in report2)


def test_cache_file_is_used_without_autotune(tmp_path, monkeypatch, rng):
    path = tmp_path / "tune.json"
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    x, w = _data(rng)
    cnncore.tune(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False)), x.shape)
    conv_dispatch.clear_tuning()
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    assert not cnncore.get_autotune()
    cnncore.conv2d(x, w, padding=1)  # reads the file, measures nothing
    assert len(conv_dispatch.tuned_algorithms()) == 3


def test_cache_file_keeps_entries_of_other_machines(tmp_path, monkeypatch, rng):
    path = tmp_path / "tune.json"
    foreign = {
        "pass": "forward",
        "input": [1, 3, 8, 8],
        "weight": [4, 3, 3, 3],
        "groups": 1,
        "stride": [1, 1],
        "padding": [1, 1],
        "dilation": [1, 1],
        "output": [8, 8],
        "dtype": "float32",
        "simd": "some-other-cpu",
        "threads": 64,
        "algorithm": "winograd",
        "times_us": {},
    }
    path.write_text(
        json.dumps({"format": "cnncore-tune-cache", "version": 1, "entries": [foreign]})
    )
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    cnncore.set_autotune(True)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    cnncore.conv2d(x, w, padding=1)  # the foreign entry does not apply here: measured
    entries = json.loads(path.read_text())["entries"]
    assert foreign in entries and len(entries) == 2


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\xff garbage",
        b"{not json",
        b"[1, 2, 3]",
        b'{"format": "something-else", "version": 1, "entries": []}',
        b'{"format": "cnncore-tune-cache", "version": 99, "entries": []}',
        b'{"format": "cnncore-tune-cache", "version": 1, "entries": {}}',
        b"[" * 100000,  # nesting deeper than the parser's recursion limit
    ],
    ids=["empty", "binary", "truncated", "list", "other-format", "version", "entries", "deep"],
)
def test_invalid_cache_file_is_ignored_with_a_warning_and_never_overwritten(
    tmp_path, monkeypatch, rng, content
):
    path = tmp_path / "tune.json"
    path.write_bytes(content)
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    cnncore.set_autotune(True)
    x, w = _data(rng)
    with pytest.warns(RuntimeWarning, match="ignoring the tuning cache"):
        y = cnncore.conv2d(x, w, padding=1)
    assert len(conv_dispatch.tuned_algorithms()) == 1  # tuned, in memory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cnncore.conv2d(x, w, padding=1), y)
    assert path.read_bytes() == content


def test_oversized_cache_file_is_not_read(tmp_path, monkeypatch, rng):
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"format": "cnncore-tune-cache", "version": 1, "entries": []}))
    monkeypatch.setattr(conv_tune, "MAX_FILE_BYTES", 10)
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    x, w = _data(rng)
    with pytest.warns(RuntimeWarning, match="more than the 10"):
        cnncore.conv2d(x, w, padding=1)


@pytest.mark.parametrize(
    "change",
    [
        {"algorithm": "no-such-algorithm"},
        {"algorithm": "winograd", "weight": [4, 3, 5, 5]},  # does not apply to 5x5
        {"algorithm": "direct", "pass": "weight"},  # no direct weight gradient
        {"pass": "sideways"},
        {"input": [1, 3, 8]},
        {"input": [1, 3, 8, -8]},
        {"input": [1, 3, 8, 8.0]},
        {"groups": True},
        {"groups": 2},  # 3 input channels do not split into 2 groups
        {"dtype": "float16"},
        {"stride": [0, 1]},
        {"output": [1, 2**40]},
        {"threads": "2"},
        {"simd": None},
    ],
)
def test_invalid_entries_are_dropped_with_a_warning(tmp_path, monkeypatch, rng, change):
    geo = cnncore._geometry.conv2d_geometry("t", (8, 8), (3, 3), 1, 1, 1)
    good = {
        "pass": "forward",
        "input": [1, 3, 8, 8],
        "weight": [4, 3, 3, 3],
        "groups": 1,
        "stride": list(geo.stride),
        "padding": list(geo.padding),
        "dilation": list(geo.dilation),
        "output": list(geo.out),
        "dtype": "float32",
        "simd": cnncore._config._selected_simd(),
        "threads": conv_tune.tune_threads(),
        "algorithm": "direct",
        "times_us": {},
    }
    bad = {**good, **change}
    path = tmp_path / "tune.json"
    path.write_text(
        json.dumps({"format": "cnncore-tune-cache", "version": 1, "entries": [bad, good]})
    )
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    monkeypatch.setattr(conv_tune, "measure", _no_measure)
    with pytest.warns(RuntimeWarning, match="1 invalid entry"):
        found = conv_dispatch.tuned_algorithms()
    assert [t["algorithm"] for t in found] == ["direct"]  # the good entry is used
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with cnncore.conv_algorithm("direct"):
        expected = cnncore.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(cnncore.conv2d(x, w, padding=1), expected)


def test_unwritable_cache_file_warns_and_keeps_choices_in_memory(tmp_path, monkeypatch, rng):
    path = tmp_path / "missing-dir" / "tune.json"
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    cnncore.set_autotune(True)
    x, w = _data(rng)
    with pytest.warns(RuntimeWarning, match="cannot write the tuning cache"):
        cnncore.conv2d(x, w, padding=1)
    assert len(conv_dispatch.tuned_algorithms()) == 1 and not path.exists()


def test_cache_write_is_atomic(tmp_path, monkeypatch, rng):
    """The file is replaced in one step: no temporary file is left behind, and a failed
    write leaves the previous file intact."""
    path = tmp_path / "tune.json"
    monkeypatch.setenv(conv_tune.ENV_CACHE, str(path))
    conv_dispatch.clear_tuning()
    cnncore.set_autotune(True)
    x, w = _data(rng)
    cnncore.conv2d(x, w, padding=1)
    before = path.read_bytes()

    def failing_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(conv_tune.json, "dump", failing_dump)
    with pytest.warns(RuntimeWarning, match="disk full"):
        cnncore.conv2d(x[:1], w, padding=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tune.json"]


def test_autotune_environment_variable(monkeypatch):
    for value, expected in [("1", True), ("true", True), ("0", False), ("", False), ("off", False)]:
        monkeypatch.setenv("CNNCORE_AUTOTUNE", value)
        assert conv_dispatch._autotune_from_env() is expected
    monkeypatch.setenv("CNNCORE_AUTOTUNE", "maybe")
    with pytest.raises(ValueError, match="CNNCORE_AUTOTUNE must be 0 or 1. Received"):
        conv_dispatch._autotune_from_env()


def test_set_autotune_takes_a_bool():
    with pytest.raises(TypeError, match="enabled must be a bool"):
        cnncore.set_autotune(1)


# --------------------------------------------------------------------------------------------
# tune()
# --------------------------------------------------------------------------------------------


def _geometries(report):
    return {(r["weight"], r["input"]) for r in report}


def test_tune_covers_every_convolution_of_a_sequential(count_measure):
    bn = nn.BatchNorm2d(8)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=0),
        bn,
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, rng=1)),
        nn.ConvTranspose2d(8, 4, 2, stride=2, rng=2),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 2, rng=3),
    )
    model.train()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    report = cnncore.tune(model, (2, 3, 16, 16))
    assert model.training and all(layer.training for layer in model.layers)
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched
        np.testing.assert_array_equal(v, state[k])
    assert len(report) == 9
    assert {r["pass"] for r in report} == {"forward", "input", "weight"}
    # conv2d's terms: the transposed convolution's conv2d input is its (2, 4, 16, 16) output
    assert _geometries(report) == {
        ((8, 3, 3, 3), (2, 3, 16, 16)),
        ((8, 1, 3, 3), (2, 8, 16, 16)),
        ((8, 4, 2, 2), (2, 4, 16, 16)),
    }
    tuned = conv_dispatch.tuned_algorithms()
    for r in report:
        assert r["algorithm"] in conv_dispatch.REGISTRY
    assert len(tuned) == 9  # a pass with a single candidate is cached too (untimed)
    n_measured = len(count_measure)
    assert [r["algorithm"] for r in cnncore.tune(model, (2, 3, 16, 16))] == [
        r["algorithm"] for r in report
    ]
    assert len(count_measure) == n_measured  # all cached


def test_tune_covers_every_convolution_of_a_graph_model():
    inp = nn.Input((3, 12, 12))
    a = nn.Conv2d(3, 4, 3, padding=1, rng=0)(inp)
    b = nn.Conv2d(3, 4, 5, padding=2, rng=1)(inp)
    c = nn.Add()([a, b])
    d = nn.Conv2d(4, 4, 1, rng=2)(c)
    model = nn.Model(inp, nn.Flatten()(d))
    report = cnncore.tune(model, (1, 3, 12, 12), passes=("forward",))
    assert [r["pass"] for r in report] == ["forward"] * 3
    assert {r["weight"] for r in report} == {(4, 3, 3, 3), (4, 3, 5, 5), (4, 4, 1, 1)}


def test_tune_with_several_inputs():
    i1, i2 = nn.Input((1, 8, 8)), nn.Input((1, 8, 8))
    a = nn.Conv2d(1, 2, 3, rng=0)(i1)
    b = nn.Conv2d(1, 2, 3, rng=1)(i2)
    model = nn.Model([i1, i2], nn.Add()([a, b]))
    report = cnncore.tune(model, [(1, 1, 8, 8), (1, 1, 8, 8)], passes=["forward"])
    assert len(report) == 1  # one shape: both convolutions are the same case


def test_concurrent_tune_calls_each_cover_their_model():
    import threading

    reports = {}
    errors = []

    def work(c_in):
        try:
            model = nn.Sequential(nn.Conv2d(c_in, 4, 3, rng=0))
            reports[c_in] = cnncore.tune(model, (1, c_in, 10, 10))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in (1, 2, 3, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for c_in, report in reports.items():
        assert {r["weight"] for r in report} == {(4, c_in, 3, 3)} and len(report) == 3
    assert len(conv_dispatch.tuned_algorithms()) == 12


def test_tune_results_match_the_untuned_model_to_rounding(rng):
    model = cnncore.models.simple_cnn(rng=0).eval()
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    before = model.predict(x)
    cnncore.tune(model, x.shape, passes=("forward",))
    np.testing.assert_allclose(model.predict(x), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(model="lenet", input_shape=(1, 1, 28, 28)), TypeError, "model must be"),
        (dict(input_shape=None), TypeError, "input_shape must be a tuple"),
        (dict(input_shape=()), TypeError, "input_shape must be a tuple"),
        (dict(input_shape=(1, -1, 28, 28)), ValueError, "negative"),
        (dict(input_shape=(1, 2, 28, 28)), ValueError, "channels"),
        (dict(input_shape=(1, 1, 28, 28), passes="forward"), TypeError, "passes"),
        (dict(input_shape=(1, 1, 28, 28), passes=()), TypeError, "passes"),
        (dict(input_shape=(1, 1, 28, 28), passes=("backward",)), ValueError, "passes"),
    ],
)
def test_tune_bad_arguments(kwargs, error, match):
    kwargs = {"model": _lenet(), **kwargs}
    with pytest.raises(error, match=match):
        cnncore.tune(**kwargs)
    assert conv_dispatch.tuned_algorithms() == []


# --------------------------------------------------------------------------------------------
# The benchmark suites' plumbing (no timing is asserted)
# --------------------------------------------------------------------------------------------


def test_bench_autotune_runs_and_reports():
    from cnncore.apps.bench import SUITES, bench_autotune
    from cnncore.apps.bench.report import machine_info, markdown_report

    assert SUITES["autotune"] is bench_autotune
    res = bench_autotune(shapes=[(1, 2, 6, 6, 2, 3, 1, 1, 1)], out=lambda line: None)
    (row,) = res["rows"]
    assert len(row["heuristic"]) == len(row["tuned"]) == 3
    assert all(name in conv_dispatch.REGISTRY for name in row["tuned"])
    if row["tuned"] == row["heuristic"]:
        assert row["fwd_bwd_ratio"] == 1.0
    assert conv_dispatch.tuned_algorithms() == []  # the suite leaves the process untuned
    text = markdown_report({"autotune": res}, machine_info(use_torch=False))
    assert "**Autotuning**" in text and "1,2,6,6 → 2,3,1,1" in text
    assert "Ratio = time with the tuned algorithms" in text


def test_inference_report_renders_the_overhead_table():
    from cnncore.apps.bench.report import machine_info, markdown_report

    res = {
        "rows": [
            {"model": "lenet5", "threads": 1, "batch": 1, "cnncore_us": 50.0},
            {
                "model": "cnn",
                "threads": 1,
                "batch": 1,
                "cnncore_us": 90.0,
                "cpu_us": {"cnncore": 80.0, "tuned": 60.0, "onnxruntime": 40.0},
            },
        ],
        "overhead": {
            "rows": [
                {
                    "layer": "Conv2d",
                    "input": (1, 1, 28, 28),
                    "threads": 1,
                    "kernel_us": 8.0,
                    "eval_us": 12.0,
                    "train_us": 12.5,
                    "eval_overhead_us": 4.0,
                    "train_overhead_us": 4.5,
                    "python_us": 3.25,
                }
            ],
            "blas_switch_us": {"cnncore": 0.1, "threadpoolctl": 15.0},
        },
    }
    text = markdown_report({"inference": res}, machine_info(use_torch=False))
    assert "| lenet5 | 1 | 1 | 50.0 | – | – |" in text
    assert "| Conv2d | 1×1×28×28 | 1 | 8.00 | 12.00 | 4.00 | 12.50 | 4.50 | 3.25 |" in text
    assert "threadpoolctl 15.00 µs" in text
    assert "| cnn | 1 | 80.0 | 60.0 | – | – | – | 40.0 | 2.00 | 1.50 |" in text
