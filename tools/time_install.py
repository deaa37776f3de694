"""Time ``pip install .`` as a new user runs it: a fresh clone, a fresh virtual environment.

    python tools/time_install.py [--runs N] [--extra test] [--ref HEAD] [--keep DIR]

Each run clones the repository's committed ``--ref`` into a temporary folder, creates a
virtual environment (not timed), and times ``pip install -q <clone>`` with ``/usr/bin/time``
(wall, user + system CPU seconds of pip and everything it ran), the load average at the
start in brackets.  ``setup.py`` logs its phases into ``$CNNCORE_BUILD_LOG`` (set here), so
the run is also broken down into pip's serial steps and every compile and link:

- build env: pip creating its isolated build environment and installing the build
  requirements (setuptools, Cython, NumPy) into it -- the time before setup.py first runs;
- the three setup.py runs pip makes (requirements, metadata, wheel): cythonize happens in the
  first one; the third probes the compiler, compiles and links, then packs the wheel;
- install: after the wheel is built, pip installing the runtime dependencies and the wheel.

``--extra test`` then also times ``pip install -q "<clone>[test]"`` in the same environment
(it must reuse the compiled extensions: the report lists what was compiled again).  Wrap
timing runs in ``flock /work/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read_log(path):
    """The JSON records of a build log (an empty list if there is none)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def phases(records, start, end):
    """``[(name, wall seconds, CPU seconds or None)]``: pip's serial steps between ``start``
    and ``end`` (epoch seconds) from a build log's records."""
    out = []
    runs = {}  # setup.py process -> its records, in order
    for rec in records:
        runs.setdefault(rec["pid"], []).append(rec)
    ordered = sorted(runs.values(), key=lambda rs: rs[0]["t"])
    if not ordered:
        return [("pip install (no build log)", end - start, None)]
    out.append(
        ("build env (isolated env + setuptools/Cython/NumPy)", ordered[0][0]["t"] - start, None)
    )
    prev_end = None
    for i, rs in enumerate(ordered):
        first, last = rs[0], rs[-1]
        if prev_end is not None:
            out.append(("  pip between setup.py runs", first["t"] - prev_end, None))
        events = {r["event"]: r for r in rs}
        label = f"setup.py run {i + 1} ({' '.join(first.get('argv', [])[:1]) or '?'})"
        cpu_total = last["cpu"] + last["cpu_children"] - first["cpu"] - first["cpu_children"]
        if "cythonize" in events and "cythonize_done" in events:
            a, b = events["cythonize"], events["cythonize_done"]
            out.append((f"{label}: before cythonize", a["t"] - first["t"], None))
            cpu = b["cpu"] + b["cpu_children"] - a["cpu"] - a["cpu_children"]
            out.append((f"{label}: cythonize", b["t"] - a["t"], cpu))
            out.append((f"{label}: after cythonize", last["t"] - b["t"], None))
        elif "build_ext" in events and "build_ext_done" in events:
            a, b = events["build_ext"], events["build_ext_done"]
            steps = [r for r in rs if r["event"] in ("compile", "link")]
            probes = [r for r in steps if r.get("ext") is None]
            first_ext = min((r["start"] for r in steps if r.get("ext")), default=b["t"])
            out.append((f"{label}: before build_ext", a["t"] - first["t"], None))
            out.append(
                (
                    f"{label}: compiler probes ({len(probes)} runs)",
                    first_ext - a["t"],
                    sum(r["cpu_step"] for r in probes),
                )
            )
            cpu = sum(r["cpu_step"] for r in steps if r.get("ext"))
            out.append((f"{label}: compile + link", b["t"] - first_ext, cpu))
            out.append((f"{label}: wheel (pack, exit)", last["t"] - b["t"], None))
        else:
            out.append((label, last["t"] - first["t"], cpu_total))
        prev_end = last["t"]
    out.append(("install deps + wheel (after the build)", end - prev_end, None))
    return out


def extension_table(records):
    """``{extension: [compile wall, compile CPU, link wall, link CPU]}`` from a build log."""
    table = {}
    for rec in records:
        if rec["event"] in ("compile", "link") and rec.get("ext"):
            row = table.setdefault(rec["ext"], [0.0, 0.0, 0.0, 0.0])
            i = 0 if rec["event"] == "compile" else 2
            row[i] += rec["wall"]
            row[i + 1] += rec["cpu_step"]
    return table


def timed(cmd, env, log):
    """Run ``cmd`` under /usr/bin/time; (wall, CPU user+sys, start, end, load average)."""
    load = os.getloadavg()[0]
    times = Path(log).with_suffix(".time")
    start = time.time()
    subprocess.run(["/usr/bin/time", "-o", str(times), "-f", "%e %U %S", *cmd], env=env, check=True)
    end = time.time()
    wall, user, system = (float(x) for x in times.read_text().split()[-3:])
    return wall, user + system, start, end, load


def report(title, wall, cpu, start, end, load, records):
    print(f"\n== {title}: {wall:.1f} s wall, {cpu:.1f} s CPU (user+sys), load {load:.2f}")
    for name, w, c in phases(records, start, end):
        cpu_text = f"{c:7.1f} s CPU" if c is not None else ""
        print(f"  {name:<62} {w:6.1f} s  {cpu_text}")
    table = extension_table(records)
    if table:
        print(f"  {'extension':<30} {'compile wall':>12} {'CPU':>7} {'link wall':>9} {'CPU':>6}")
        for name, row in sorted(table.items(), key=lambda kv: -kv[1][1]):
            print(f"  {name:<30} {row[0]:12.1f} {row[1]:7.1f} {row[2]:9.1f} {row[3]:6.1f}")
        total = [sum(r[i] for r in table.values()) for i in range(4)]
        print(f"  {'total':<30} {total[0]:12.1f} {total[1]:7.1f} {total[2]:9.1f} {total[3]:6.1f}")
    reused = [r["ext"] for r in records if r["event"] == "reused"]
    if reused:
        print(f"  reused from the object cache: {len(reused)} extensions")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="fresh clone + venv installs")
    parser.add_argument("--ref", default="HEAD", help="the commit to clone")
    parser.add_argument("--extra", default=None, help='then install ".[EXTRA]" in the same venv')
    parser.add_argument("--keep", default=None, help="keep the clones and logs under this folder")
    parser.add_argument("--python", default=sys.executable, help="the venv's interpreter")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    for run in range(args.runs):
        base = Path(args.keep or tempfile.mkdtemp(prefix="cnncore-install-")) / f"run{run}"
        base.mkdir(parents=True, exist_ok=False)
        clone = base / "cnncore"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", args.ref], check=True)
        subprocess.run([args.python, "-m", "venv", str(base / "venv")], check=True)
        env = dict(os.environ)
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "CNNCORE_BUILD_CACHE", "CFLAGS", "LDFLAGS"):
            env.pop(name, None)
        env["PATH"] = f"{base / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        pip = [str(base / "venv" / "bin" / "pip"), "install", "-q"]
        log = base / "build.jsonl"
        env["CNNCORE_BUILD_LOG"] = str(log)
        result = timed([*pip, str(clone)], env, log)
        report(f"run {run + 1}: pip install .", *result, read_log(log))
        if args.extra:
            log2 = base / "build-extra.jsonl"
            env["CNNCORE_BUILD_LOG"] = str(log2)
            result = timed([*pip, f"{clone}[{args.extra}]"], env, log2)
            report(
                f'run {run + 1}: pip install ".[{args.extra}]" after it', *result, read_log(log2)
            )
        if not args.keep:
            subprocess.run(["rm", "-rf", str(base.parent)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
