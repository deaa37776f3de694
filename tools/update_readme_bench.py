"""Paste benchmark tables written by ``cnncore bench --markdown FILE`` into the README.

    cnncore bench --markdown avx512.md
    CNNCORE_SIMD=avx2 cnncore bench --suite conv --markdown avx2.md
    python tools/update_readme_bench.py avx512=avx512.md avx2=avx2.md

Each ``NAME=FILE`` replaces what lies between ``<!-- bench:NAME:begin -->`` and
``<!-- bench:NAME:end -->`` in README.md, so the README's performance figures always come
from a benchmark run and name the machine they were measured on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)}:begin -->\n)(.*?)(<!-- bench:{re.escape(name)}:end -->)",
        re.S,
    )
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{name}:begin/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text)


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    text = README.read_text()
    for arg in argv:
        name, path = arg.split("=", 1)
        body = Path(path).read_text()
        if not body.startswith("Measured with `cnncore bench"):
            raise SystemExit(f"{path} was not written by cnncore bench --markdown")
        text = replace_block(text, name, body)
    README.write_text(text)
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
