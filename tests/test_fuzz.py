"""Short fuzz campaign over the whole public API (tools/fuzz.py), plus checks that the harness
itself detects what it is meant to detect.

The long campaign runs on demand: ``python tools/fuzz.py --cases 20000 --seed 1``.
``CNNCORE_FUZZ_CASES`` / ``CNNCORE_FUZZ_SEED`` change the size / seed of the CI campaign.
"""

import os
import sys

import pytest

import cnncore

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
)
import fuzz  # noqa: E402

CASES = int(os.environ.get("CNNCORE_FUZZ_CASES", "300"))
SEED = int(os.environ.get("CNNCORE_FUZZ_SEED", "20250101"))


def test_short_campaign_has_no_failures():
    """Every case returns a result or raises ValueError/TypeError/MemoryError; no crash,
    hang, other exception or modified input (children run under a 6 GiB address limit)."""
    res = fuzz.campaign(CASES, SEED, batch=150)
    print(res.summary())
    assert res.cases == CASES
    assert res.ok, res.summary()
    assert res.outcomes.get("ok", 0) > CASES // 4  # most mutations still reach the kernels


def test_every_public_entry_point_is_fuzzed():
    public = set(cnncore.functional.__all__) | {"correlate2d", "convolve2d"}
    layers = {
        f"nn.{n}"
        for n in cnncore.nn.__all__
        if n not in ("init", "Module", "Parameter", "Node", "Sequential", "History", "load", "save")
    }
    missing = (public | layers | {"Sequential.fit", "load", "datasets.load_idx"}) - set(fuzz.OPS)
    assert not missing


def test_cases_are_deterministic_and_cover_every_op():
    seen = set()
    for i in range(1500):
        a, b = fuzz.make_case(7, i), fuzz.make_case(7, i)
        assert a.describe() == b.describe()
        seen.add(a.op)
    assert seen == set(fuzz.OPS)


def test_harness_detects_every_failure_kind():
    """Injected failures: abort and segfault (crash), sleep (hang), RuntimeError (an
    exception the API must not raise) and an input modified in place; each is reported at
    its own index and the campaign continues after a crash."""
    inject = {3: "abort", 9: "segv", 14: "error", 21: "modify", 27: "hang"}
    res = fuzz.campaign(30, 1, batch=30, inject=inject, case_timeout=3.0)
    kinds = {f["repro"].split("--case ")[-1]: f["kind"] for f in res.failures}
    assert kinds == {
        "3": "crash",
        "9": "crash",
        "14": "RuntimeError",
        "21": "modified-input",
        "27": "hang",
    }, res.summary()
    assert res.cases == 30
    assert not res.ok


def test_harness_bisects_an_order_dependent_crash():
    """A case that crashes only after an earlier case left state behind is reported with
    the shortest reproducing run of cases."""
    res = fuzz.campaign(20, 1, batch=20, inject={4: "arm", 15: "crash_if_armed"})
    [failure] = res.failures
    assert failure["kind"] == "crash"
    assert failure["sequence"] == list(range(4, 16))
    assert "--indices 4,5," in failure["repro"] and "--inject arm@4" in failure["repro"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_show_mode_replays_a_case_in_process(index, capsys):
    assert fuzz.main(["--seed", "3", "--case", str(index), "--show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"case {index} (seed 3):")
