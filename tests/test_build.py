"""setup.py's build logic (flags, scheduling, the object cache key, the build log) and
tools/time_install.py's reading of the log -- without compiling cnncore.

setup.py runs ``setup()`` only as ``__main__`` (as pip's build backend and ``python
setup.py`` run it), so its helpers can be imported here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup_py():
    pytest.importorskip("setuptools")
    return _load("cnncore_setup_py", ROOT / "setup.py")


@pytest.fixture(scope="module")
def time_install():
    return _load("cnncore_time_install", ROOT / "tools" / "time_install.py")


def test_importing_setup_py_builds_nothing(setup_py):
    assert callable(setup_py._opt_flags)
    assert "cnncore.ops._conv" in setup_py.SIMD_MODULES


def test_opt_flags(setup_py):
    with_variants = {"cnncore.ops._conv", "cnncore.ops._norm"}
    # the baseline build of a module with AVX2/AVX-512 builds (runs only without AVX2)
    assert setup_py._opt_flags("cnncore.ops._conv", with_variants) == ["-O1", "-ftree-vectorize"]
    # the AVX2/AVX-512 builds and every other kernel module: -O3
    assert setup_py._opt_flags("cnncore.ops._conv_avx2", with_variants) == ["-O3"]
    assert setup_py._opt_flags("cnncore.ops._conv_avx512", with_variants) == ["-O3"]
    assert setup_py._opt_flags("cnncore.ops._activation", with_variants) == ["-O3"]
    # a SIMD module whose variants are not built (compiler without the ISA flags): -O3
    assert setup_py._opt_flags("cnncore.ops._resize", with_variants) == ["-O3"]
    # support modules
    for name in setup_py.SUPPORT_MODULES:
        assert setup_py._opt_flags(name, with_variants) == ["-O2"]


def test_compile_cost_orders_by_size_and_level(setup_py, tmp_path):
    from setuptools import Extension

    big, small = tmp_path / "big.c", tmp_path / "small.c"
    big.write_bytes(b"x" * 3000)
    small.write_bytes(b"x" * 1000)

    def ext(name, path, level):
        e = Extension(name, [str(path)])
        e.extra_compile_args = [level, "-g0"]
        return e

    o3_big = ext("a_avx512", big, "-O3")
    o1_big = ext("a", big, "-O1")
    o3_small = ext("b", small, "-O3")
    o2_small = ext("c", small, "-O2")
    ranked = sorted([o2_small, o1_big, o3_small, o3_big], key=setup_py._compile_cost, reverse=True)
    assert [e.name for e in ranked] == ["a_avx512", "a", "b", "c"]
    assert setup_py._compile_cost(Extension("d", [str(small)])) == setup_py._compile_cost(o3_small)


def test_object_key_ignores_cython_metadata_paths(setup_py, tmp_path, monkeypatch):
    """pip builds in a new temporary environment each time: the absolute include paths
    Cython records in the C file must not change the key (else ``pip install ".[test]"``
    after ``pip install .`` compiles everything again)."""
    from setuptools import Extension

    class Compiler:
        compiler_so = ["gcc", "-O2"]
        compiler_type = "unix"

    class Cmd:
        compiler = Compiler()

    monkeypatch.delenv("CNNCORE_BUILD_CACHE", raising=False)
    keys = []
    for env in ("/tmp/pip-build-env-aaa", "/tmp/pip-build-env-bbb"):
        src = tmp_path / "m.c"
        meta = json.dumps({"distutils": {"include_dirs": [f"{env}/numpy/_core/include"]}})
        src.write_text(f"/* BEGIN: Cython Metadata\n{meta}\nEND: Cython Metadata */\nint x;\n")
        ext = Extension("cnncore.m", [str(src)], include_dirs=["src", f"{env}/numpy"])
        ext.extra_compile_args = ["-O3"]
        keys.append(setup_py._object_key(Cmd(), ext))
    assert keys[0] == keys[1]
    ext.extra_compile_args = ["-O1"]  # other flags: another key
    assert setup_py._object_key(Cmd(), ext) != keys[0]
    monkeypatch.setenv("CNNCORE_BUILD_CACHE", "0")
    assert setup_py._object_key(Cmd(), ext) is None


def test_timed_call_logs_and_fails_like_the_compiler(setup_py, tmp_path, monkeypatch):
    log = tmp_path / "build.jsonl"
    monkeypatch.setenv("CNNCORE_BUILD_LOG", str(log))
    setup_py._BUILDING.name = "cnncore.ops._conv"
    try:
        setup_py._timed_call([sys.executable, "-c", "pass"])
        with pytest.raises(subprocess.CalledProcessError):
            setup_py._timed_call([sys.executable, "-c", "raise SystemExit(3)"])
        from setuptools.errors import ExecError

        with pytest.raises(ExecError):  # the old ``spawn`` protocol
            setup_py._timed_call([sys.executable, "-c", "raise SystemExit(3)"], new_api=False)
    finally:
        del setup_py._BUILDING.name
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["compile"] * 3
    assert [r["status"] for r in records] == [0, 3, 3]
    assert all(r["ext"] == "cnncore.ops._conv" and r["cpu_step"] >= 0 for r in records)


def test_log_is_off_without_the_variable(setup_py, tmp_path, monkeypatch):
    monkeypatch.delenv("CNNCORE_BUILD_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    setup_py._log("setup")
    assert list(tmp_path.iterdir()) == []


def test_time_install_phases(time_install):
    """tools/time_install.py splits a build log into pip's serial steps."""

    def rec(event, t, pid, cpu=0.0, **kw):
        return {"event": event, "t": t, "pid": pid, "cpu": cpu, "cpu_children": 0.0, **kw}

    records = [
        rec("setup", 105.0, 1, argv=["egg_info"]),
        rec("cythonize", 105.5, 1),
        rec("cythonize_done", 111.5, 1, cpu=9.0),
        rec("exit", 112.0, 1, cpu=9.0),
        rec("setup", 113.0, 2, argv=["dist_info"]),
        rec("exit", 113.5, 2),
        rec("setup", 114.0, 3, argv=["bdist_wheel"]),
        rec("build_ext", 114.5, 3),
        rec("compile", 115.0, 3, ext=None, start=114.6, wall=0.1, cpu_step=0.1),
        rec("compile", 160.0, 3, ext="cnncore.ops._conv", start=115.0, wall=45.0, cpu_step=44.0),
        rec("link", 160.5, 3, ext="cnncore.ops._conv", start=160.0, wall=0.5, cpu_step=0.4),
        rec("build_ext_done", 161.0, 3),
        rec("exit", 162.0, 3),
    ]
    steps = dict((name, (wall, cpu)) for name, wall, cpu in time_install.phases(records, 100, 170))
    assert steps["build env (isolated env + setuptools/Cython/NumPy)"] == (5.0, None)
    assert steps["setup.py run 1 (egg_info): cythonize"] == (6.0, 9.0)
    assert steps["setup.py run 3 (bdist_wheel): compile + link"] == (46.0, 44.4)
    assert steps["setup.py run 3 (bdist_wheel): wheel (pack, exit)"] == (1.0, None)
    assert steps["install deps + wheel (after the build)"] == (8.0, None)
    table = time_install.extension_table(records)
    assert table == {"cnncore.ops._conv": [45.0, 44.0, 0.5, 0.4]}


def test_blocked_and_rows_microkernels_are_float_only():
    """Their double instantiations were a fifth of each SIMD build of _conv (install time):
    float64 convolutions run GEMM, direct or Winograd (tests/test_conv_float64.py).  Every
    instantiation line of the two headers -- a macro called at file level -- names float."""
    import re

    for header in ("_blocked_conv.h", "_rowconv.h"):
        text = (ROOT / "src" / header).read_text()
        calls = re.findall(r"^(CNN_\w+)\((\w+)", text, flags=re.M)
        assert len(calls) >= 8, header
        assert {t for _, t in calls} == {"float"}, (header, calls)
        assert not re.search(r"typedef[^;]*\bdouble\b", text), header
