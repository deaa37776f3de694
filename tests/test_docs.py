"""The documentation's Python examples run as written (docs/*.rst, each page's
``.. code-block:: python`` blocks in order, in one namespace, warnings as errors)."""

from __future__ import annotations

import re
import textwrap
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.rst")) if DOCS.is_dir() else []


def rst_python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line, code) of every ``.. code-block:: python`` directive."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"\s*\.\. code-block:: python\s*$", lines[i]):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            start = j
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("   ")):
                j += 1
            code = textwrap.dedent("\n".join(lines[start:j])).rstrip("\n") + "\n"
            blocks.append((start + 1, code))
            i = j
        else:
            i += 1
    return blocks


def test_blocks_are_found():
    text = "x\n\n.. code-block:: python\n\n   a = 1\n\n   b = 2\n\nprose\n"
    assert rst_python_blocks(text) == [(5, "a = 1\n\nb = 2\n")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    blocks = rst_python_blocks(page.read_text())
    if not blocks:
        pytest.skip("no Python examples on this page")
    if "from PIL" in page.read_text():
        pytest.importorskip("PIL")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for line, code in blocks:
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
