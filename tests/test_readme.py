"""The README and the examples run as written.

- Every ```python block of README.md runs, in order, in one namespace (as a reader pasting
  them into one session would), with warnings turned into errors.
- Every script in examples/ runs (with small sizes) and finishes with status 0.
- Every ``--flag`` the README mentions exists in the ``cnncore`` command.
- The README's benchmark tables come from ``cnncore bench --markdown`` runs that name the
  machine they were measured on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cnncore

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(not README.is_file(), reason="needs the source tree")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python fenced block."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return blocks


def test_python_blocks_are_found():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    assert python_blocks("a\n```python\nx = 1\n```\n") == [(3, "x = 1\n")]


def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch, restore_threads):
    monkeypatch.chdir(tmp_path)  # the README saves lenet.npz in the working directory
    namespace: dict = {"__name__": "__readme__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="tqdm")
        for line, code in python_blocks(README.read_text()):
            compiled = compile("\n" * (line - 1) + code, str(README), "exec")
            exec(compiled, namespace)  # an error names README.md and the line
    model = namespace["model"]
    assert model.training  # the manual loop switched the loaded model back to train mode


def test_quick_start_commands_intact():
    text = README.read_text()
    assert "pip install . && cnncore demo" in text
    assert 'pip install ".[test]" && pytest' in text


def _cli_flags() -> set[str]:
    from cnncore.apps.cli import build_parser

    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            sp = action.choices[sub]
            if hasattr(sp, "_actions"):
                flags |= {s for a in sp._actions for s in a.option_strings}
    return flags


def test_readme_cli_flags_exist():
    text = README.read_text()
    known = _cli_flags()
    mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
    # setup.py build_ext --inplace; benchmarks/bench_*.py --models; mpirun --oversubscribe
    other_tools = {"--inplace", "--models", "--oversubscribe", "--allow-run-as-root"}
    missing = sorted(mentioned - known - other_tools)
    assert not missing, f"README mentions flags the cnncore command does not have: {missing}"


def test_readme_benchmark_tables_are_generated_and_name_the_machine():
    text = README.read_text()
    names = ("avx512", "avx2", "inference", "autotune", "autotune-avx2")
    for name in names:
        m = re.search(rf"<!-- bench:{name}:begin -->\n(.*?)<!-- bench:{name}:end -->", text, re.S)
        assert m, f"README lacks the generated benchmark block {name}"
        body = m.group(1)
        assert body.startswith("Measured with `cnncore bench"), body[:200]
        for fact in ("usable core", "BLAS", "NumPy", "conv kernels built for"):
            assert fact in body


# --------------------------------------------------------------------------------------------
# examples/
# --------------------------------------------------------------------------------------------

#: Arguments that make each example quick (every script in examples/ must be listed).
EXAMPLE_ARGS = {
    "image_filtering.py": [],
    "lenet_fashion_mnist.py": ["--sample", "--epochs", "1", "--limit", "256"],
    "train_on_image_folder.py": ["--epochs", "1", "--per-class", "6"],
    "unet_denoising.py": ["--epochs", "1", "--limit", "128", "--out", "unet.npz"],
}


def test_every_example_is_smoke_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == set(EXAMPLE_ARGS)


@pytest.mark.parametrize("script", sorted(EXAMPLE_ARGS))
def test_example_runs(script, tmp_path):
    if script == "train_on_image_folder.py":
        pytest.importorskip("PIL")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnncore.__file__)))
    env["MPLBACKEND"] = "Agg"
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *EXAMPLE_ARGS[script]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
