"""Importing cnncore leaves the process's OpenMP settings alone.

cnncore and PyTorch load the same ``libgomp.so.1``: an OpenMP setting made on import would
also change PyTorch's runtime in the same process (regression: ``GOMP_SPINCOUNT=10000`` set on
import slowed PyTorch's LeNet training steps from 5 to 12 ms and flattered the benchmarks'
ratios).
"""

import os
import subprocess
import sys

import cnncore
from cnncore.apps.bench.report import machine_info, machine_line

# the cnncore this test run imports (an installed one, or the source tree built in place)
ROOT = os.path.dirname(os.path.dirname(cnncore.__file__))


def _env_after_import(env: dict[str, str]) -> str:
    env = dict(env, PYTHONPATH=ROOT)
    code = (
        "import os, cnncore; "
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,  # not the source checkout: `-c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_import_sets_no_openmp_wait_policy():
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    assert _env_after_import(env) == "None None"


def test_user_setting_is_kept():
    env = dict(os.environ, GOMP_SPINCOUNT="1234")
    env.pop("OMP_WAIT_POLICY", None)
    assert _env_after_import(env) == "1234 None"


def test_machine_line_names_the_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "777")
    line = machine_line(machine_info(use_torch=False))
    assert "GOMP_SPINCOUNT=777" in line
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert "libgomp defaults" in machine_line(machine_info(use_torch=False))
