"""Build cnncore's Cython extensions: every ``cnncore/**/*.pyx`` becomes the extension module of
the same dotted name (``cnncore/ops/_conv.pyx`` -> ``cnncore.ops._conv``).  ``src/`` holds the
header-only C-level declarations they cimport (BLAS, OpenMP, inline vector math); kernel
modules share ``cnncore/_shared.pxd`` (``from cnncore._shared cimport ...``).  Extensions are
compiled in parallel, one job per core (``-j`` / ``build_ext --parallel`` overrides it).

Build-time switches (environment variables):

``CNNCORE_OPENMP``   ``auto`` (default): use OpenMP when a test program compiles and links with
                     the compiler's OpenMP flag, otherwise build serial with a warning.
                     ``0``: build serial.  ``1``: require OpenMP (fail if unavailable).
``CNNCORE_NATIVE``   ``1``: add ``-march=native`` (fast, but the binary only runs on CPUs like
                     this one -- never for wheels you distribute).  Default off.
``CNNCORE_DEBUG``    ``1``: turn Cython ``boundscheck``/``wraparound``/``initializedcheck`` back
                     on and compile with ``-O0 -g``.
``CNNCORE_SANITIZE`` e.g. ``address,undefined``: compile and link with ``-fsanitize=...``
                     (see ``tools/sanitize.sh``).
``CNNCORE_SIMD_VARIANTS`` ``1`` (default on x86-64 with GCC/Clang): also build the modules
                     in ``SIMD_MODULES`` for AVX2+FMA and AVX-512; cnncore picks the best one
                     the CPU supports at import time.  ``0``: baseline only.
``CNNCORE_BUILD_LOG`` a file: append one JSON line per phase (cythonize, build_ext) and per
                     compiler run (extension, wall and CPU seconds); ``tools/time_install.py``
                     sets it and breaks a fresh ``pip install .`` down with it.

Build time (about a minute on two cores; see the README's "Building"):

- Cython's memoryview and helper code goes into one shared extension, ``cnncore._cyutility``
  (Cython >= 3.1), instead of being compiled again into every module (about a third less C).
- Kernel modules compile with ``-O3``; the support modules (allocator, status codes, thread
  facts, the shared utility module), which hold no numerical loops, with ``-O2``; the
  baseline builds of ``SIMD_MODULES`` when their AVX2/AVX-512 builds are made with ``-O1``
  and the loop vectorizer (they run only on CPUs without AVX2; same bits -- see
  ``_opt_flags``).
- No debug information (``-g0``, overriding the ``-g`` in Python's own CFLAGS) unless
  ``CNNCORE_DEBUG`` or ``CNNCORE_SANITIZE`` asks for it: a third less compile time and
  the compiled extensions about six times smaller (5.8 MB in all).
- Each ``.pyx`` is cythonized once.  A SIMD variant (``cnncore.ops._conv_avx2`` ...) is the
  module's generated C compiled again with the ISA's flags, through a two-line C file that
  includes it and renames its init function ``PyInit_<name>`` (the one name Python looks up
  in the file; the module takes its name from the import).  Cythonizing each variant
  separately, as before, cost another 11 s of CPU time.  The variants' functions report the
  baseline module as their ``__module__``.
- SciPy is not a build requirement: the four BLAS declarations ``src/_blas.pxd`` cimports
  are vendored verbatim (``src/scipy/linalg/cython_blas.pxd``; the generated code is the
  same, the function pointers still come from the installed SciPy at import time), so
  pip's isolated build environment does not install SciPy's 35 MB wheel.
- The extensions are cythonized and compiled in parallel, longest first.
- The channel-blocked and row-vectorized conv microkernels (``src/_blocked_conv.h``,
  ``src/_rowconv.h``) are instantiated for float only: float64 convolutions run GEMM, direct
  or Winograd (``cnncore/ops/conv_dispatch.py``).  Their double instantiations were a fifth
  of each ``_conv`` build (AVX-512 36-38 -> 26-30 s, AVX2 34-35 -> 24-27 s, baseline 17-18 ->
  12-13 s of CPU time: about 25 s of CPU, 12 s of wall time per install).
- Only modules whose kernels gain from wider vectors throughout are in ``SIMD_MODULES``.
  The pooling module needs AVX2/AVX-512 for one kernel only (2x2 max pooling), so
  ``src/_pool2x2.h`` compiles that kernel once per ISA inside the one ``_pool`` build
  (``#pragma GCC target`` clones, picked at import by ``_pool._set_simd_level`` through
  ``_config.load_kernels``, which honours ``CNNCORE_SIMD``) instead of two more full
  compiles of the module (about 10.5 s of CPU time, 5 s of a 2-core install).
- A rebuild in the same tree compiles only what changed, even when pip runs it in a fresh
  isolated build environment (``pip install ".[test]"`` after ``pip install .``), whose new
  file times would otherwise make every module stale: the C files are regenerated only when
  a hash of the Cython sources, directives and Cython/NumPy versions changed
  (``build/cython/cnncore-sources.sha256``), and compiled extensions are kept in
  ``build/cnncore-objects`` under a hash of their C source (paths aside), compiler, flags and
  the NumPy and Python versions.  ``CNNCORE_BUILD_CACHE=0`` turns both off.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# Compute-bound kernel modules that are also compiled for wider vector units (same Cython
# source, different ISA flags).  Memory-bound modules gain nothing from this (_pool: only
# its 2x2 max-pooling kernel needs the wider shuffles to keep up with memory, and
# src/_pool2x2.h compiles that kernel once per ISA inside the one module).
SIMD_MODULES = [
    "cnncore.ops._conv",
    "cnncore.ops._norm",
    "cnncore.ops._resize",
]
ISA_FLAGS = {}  # extension name -> extra ISA flags (filled by _simd_variant_extensions)
VARIANT_OF = {}  # SIMD variant's extension name -> the generated C file its wrapper includes
VARIANT_OF_MODULE = {}  # SIMD variant's extension name -> its module's name
# Modules that must not fuse a*b+c into one rounding (bit-for-bit PyTorch/NumPy parity).
NO_FP_CONTRACT = {"cnncore._optim"}
# Cython's shared utility module (memoryviews etc.): one copy instead of one per extension.
SHARED_UTILITY = "cnncore._cyutility"
# Modules without numerical loops: -O2 compiles them faster and they run no slower.
SUPPORT_MODULES = {"cnncore._alloc", "cnncore._shared", "cnncore._threads", SHARED_UTILITY}
# Where cythonize writes C files, the hash of what they were generated from, and the cache of
# compiled extensions (see the docstring).
CYTHON_BUILD_DIR = os.path.join("build", "cython")
SOURCES_KEY = os.path.join(CYTHON_BUILD_DIR, "cnncore-sources.sha256")
OBJECT_CACHE = os.path.join("build", "cnncore-objects")
SIMD_VARIANTS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": [
        "-mavx2",
        "-mfma",
        "-mf16c",
        "-mavx512f",
        "-mavx512cd",
        "-mavx512dq",
        "-mavx512bw",
        "-mavx512vl",
        "-mprefer-vector-width=512",
    ],
}


def _env_flag(name, default="0"):
    value = os.environ.get(name, default).strip().lower()
    return value


_LOG_LOCK = threading.Lock()
_BUILDING = threading.local()  # the extension a build_ext worker thread is compiling


def _cpu_times():
    """User + system CPU seconds of this process and of its waited-for children."""
    import resource

    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _log(event, **fields):
    """Append one JSON line to ``$CNNCORE_BUILD_LOG`` (if set): the event, the wall time,
    this process's id and CPU times so far (``tools/time_install.py`` reads the log)."""
    path = os.environ.get("CNNCORE_BUILD_LOG")
    if not path:
        return
    own, children = _cpu_times()
    record = {
        "event": event,
        "t": time.time(),
        "pid": os.getpid(),
        "cpu": own,
        "cpu_children": children,
    }
    record.update(fields)
    with _LOG_LOCK, open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _timed_call(cmd, env=None, new_api=True, **kwargs):
    """The compiler's ``call`` (setuptools >= 80; ``spawn`` before) with ``$CNNCORE_BUILD_LOG``
    set: run ``cmd`` and log its wall and CPU time (``os.wait4``: the compiler driver and
    the compiler proper it ran) under the extension being built."""
    from setuptools.errors import ExecError

    start = time.time()
    try:
        proc = subprocess.Popen(cmd, env=env)
    except OSError as exc:
        if new_api:
            raise
        raise ExecError(f"command {cmd[0]!r} failed: {exc}") from exc
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    _log(
        "link" if "-shared" in cmd else "compile",
        ext=getattr(_BUILDING, "name", None),
        start=start,
        wall=time.time() - start,
        cpu_step=usage.ru_utime + usage.ru_stime,
        status=code,
    )
    if code != 0:
        if new_api:
            raise subprocess.CalledProcessError(code, cmd)
        raise ExecError(f"command {cmd[0]!r} failed with exit code {code}")


def _time_compiler(compiler):
    """Make ``compiler`` log every command it runs (see ``_timed_call``)."""
    if hasattr(compiler, "call"):
        compiler.call = lambda cmd, *, env=None, **kw: _timed_call(cmd, env=env)
    else:
        compiler.spawn = lambda cmd, **kw: _timed_call(cmd, new_api=False)


OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n > 0 ? omp_get_max_threads() : 0);
        return 0;
    }
    """
)


def _compiles(compiler, flags, source="int main(void) { return 0; }\n"):
    tmp = tempfile.mkdtemp(prefix="cnncore-probe-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if the compiler can't do it."""
    ctype = getattr(compiler, "compiler_type", "unix")
    if ctype == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [
            (["-Xpreprocessor", "-fopenmp"], ["-lomp"]),
            (["-fopenmp"], ["-fopenmp"]),
        ]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = tempfile.mkdtemp(prefix="cnncore-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=lflags)
                return cflags, lflags
            except Exception:  # noqa: BLE001 -- any failure means "no OpenMP with these flags"
                continue
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that adds OpenMP / optimisation / sanitizer flags after probing the compiler."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:  # compile the extensions side by side (pip passes no -j)
            self.parallel = _cores()

    def build_extensions(self):
        if os.environ.get("CNNCORE_BUILD_LOG"):
            _time_compiler(self.compiler)
        _log("build_ext", n=len(self.extensions), parallel=self.parallel)
        mode = _env_flag("CNNCORE_OPENMP", "auto")
        omp = None
        if mode not in ("0", "off", "false", "no"):
            omp = _openmp_flags(self.compiler)
            if omp is None:
                if mode in ("1", "on", "true", "yes"):
                    raise RuntimeError(
                        "CNNCORE_OPENMP=1 but the compiler cannot build an OpenMP program."
                    )
                print(
                    "\n*** WARNING: cnncore: the C compiler cannot build OpenMP programs; "
                    "building SERIAL kernels (one thread).\n*** On macOS: `brew install libomp` "
                    "and retry. Set CNNCORE_OPENMP=0 to silence this warning.\n",
                    file=sys.stderr,
                )
        debug = _env_flag("CNNCORE_DEBUG") in ("1", "on", "true", "yes")
        native = _env_flag("CNNCORE_NATIVE") in ("1", "on", "true", "yes")
        sanitize = os.environ.get("CNNCORE_SANITIZE", "").strip()
        ctype = self.compiler.compiler_type
        isa_ok = {}
        for ext in list(self.extensions):
            isa = ISA_FLAGS.get(ext.name)
            if isa is None:
                continue
            key = tuple(isa)
            if key not in isa_ok:
                isa_ok[key] = ctype != "msvc" and _compiles(self.compiler, list(isa))
            if not isa_ok[key]:
                print(
                    f"cnncore: compiler lacks {' '.join(isa)}; skipping {ext.name}", file=sys.stderr
                )
                self.extensions.remove(ext)
        # modules whose AVX2/AVX-512 builds are made (the compiler takes their flags)
        with_variants = {VARIANT_OF_MODULE[e.name] for e in self.extensions if e.name in ISA_FLAGS}
        for ext in self.extensions:
            cflags, lflags = [], []
            if ctype != "msvc":
                if debug:
                    cflags += ["-O0", "-g"]
                else:
                    cflags += _opt_flags(ext.name, with_variants)
                    if not sanitize:
                        # Python's CFLAGS carry -g: debug info makes each compile about a
                        # third slower and the extensions six times bigger, for nothing a user runs
                        cflags.append("-g0")
                cflags += ["-fno-math-errno", "-Wno-unused-function"]
                if native:
                    cflags.append("-march=native")
                if sanitize:
                    cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
                    lflags += [f"-fsanitize={sanitize}"]
            else:
                cflags.append("/O2")
            cflags += ISA_FLAGS.get(ext.name, [])
            if ext.name in NO_FP_CONTRACT and ctype != "msvc":
                cflags.append("-ffp-contract=off")
            if omp is not None:
                cflags += omp[0]
                lflags += omp[1]
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = lflags + list(ext.extra_link_args or [])
            ext.define_macros = list(ext.define_macros or []) + [
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                # the data-memory handler API (cnncore/_alloc.pyx) needs NumPy >= 1.22
                ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION"),
            ]
            # added here, not before cythonize: Cython writes its include path into the C file
            ext.include_dirs = list(ext.include_dirs or []) + [_numpy_include()]
        # longest compiles first, so that the parallel workers finish together
        self.extensions.sort(key=_compile_cost, reverse=True)
        if _env_flag("CNNCORE_BUILD_CACHE", "1") not in ("0", "off", "false", "no"):
            # an extension missing from the object cache is compiled even when its file is
            # newer than its sources (setuptools' test): its flags may have changed, and the
            # stale file would otherwise be cached under the new flags' key
            self.force = True
        super().build_extensions()
        _log("build_ext_done")

    def build_extension(self, ext):
        """Compile ``ext``, or copy it from the object cache when its C source and flags are
        those of an earlier build in this tree."""
        _BUILDING.name = ext.name
        key = _object_key(self, ext)
        target = self.get_ext_fullpath(ext.name)
        cached = os.path.join(OBJECT_CACHE, f"{ext.name}-{key}{os.path.splitext(target)[1]}")
        if key is not None and os.path.isfile(cached):
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copyfile(cached, target)
            print(f"cnncore: {ext.name} is unchanged since an earlier build: reused")
            _log("reused", ext=ext.name)
            return
        super().build_extension(ext)
        if key is not None and os.path.isfile(target):
            os.makedirs(OBJECT_CACHE, exist_ok=True)
            for old in glob(os.path.join(OBJECT_CACHE, f"{ext.name}-*")):
                os.remove(old)  # one entry per extension: the cache never grows
            tmp = f"{cached}.tmp{os.getpid()}"
            shutil.copyfile(target, tmp)
            os.replace(tmp, cached)


def _opt_flags(name, with_variants):
    """The optimization flags of extension ``name``: ``-O2`` for the support modules;
    ``-O1 -ftree-vectorize`` for the baseline build of a module whose AVX2 and AVX-512 builds
    are made (``with_variants``): it runs only on CPUs without AVX2 (x86-64 CPUs older than
    2013), or under ``CNNCORE_SIMD=baseline``; bit-identical results at every level (no FMA
    at the baseline ISA, no -ffast-math; ``tools/build_digest.py``), a third less compile
    time for ``_conv`` than ``-O2`` with -O3's vectorizer (about 10 s of CPU time per
    install); without the vectorizer (plain ``-O1``, 2 s less) its kernels ran 1.5-3 times
    slower.  ``-O3`` for every other kernel build (at ``-O2`` the activations run up to 13
    times slower, and the AVX builds would contract other multiply-adds into FMAs:
    different bits)."""
    if name in SUPPORT_MODULES:
        return ["-O2"]
    if name in with_variants:
        return ["-O1", "-ftree-vectorize"]
    return ["-O3"]


# Compile time per byte of C by optimization level, relative to -O2 (measured on _conv and
# the support modules with GCC 12; an ISA variant's -O3 costs about as much as another's)
COST_PER_BYTE = {"-O0": 0.5, "-O1": 1.7, "-O2": 1.0, "-O3": 3.0}


def _compile_cost(ext):
    """Rough compile time of ``ext``: bytes of C times the cost of its optimization level
    (the last ``-O`` flag in its compile arguments; -O3 without one)."""
    size = sum(os.path.getsize(s) for s in _c_sources(ext) if os.path.isfile(s))
    levels = [a for a in (ext.extra_compile_args or []) if a in COST_PER_BYTE]
    return size * COST_PER_BYTE[levels[-1] if levels else "-O3"]


def _c_sources(ext):
    """``ext``'s C sources, and for a SIMD variant the generated C file its wrapper includes."""
    return list(ext.sources) + ([VARIANT_OF[ext.name]] if ext.name in VARIANT_OF else [])


def _object_key(cmd, ext):
    """Hash of everything that determines the compiled ``ext``: its sources' bytes, the
    compiler and its flags, NumPy's and Python's versions (their headers); None when the
    cache is off."""
    if _env_flag("CNNCORE_BUILD_CACHE", "1") in ("0", "off", "false", "no"):
        return None
    import numpy

    h = hashlib.sha256()
    for src in _c_sources(ext):
        with open(src, "rb") as f:
            text = f.read()
        # Cython's metadata comment lists absolute include paths (pip's temporary build
        # environment): not part of what is compiled
        start, end = text.find(b"/* BEGIN: Cython Metadata"), text.find(b"END: Cython Metadata */")
        if 0 <= start < end:
            text = text[:start] + text[end:]
        h.update(text)
        # the C headers of src/ it includes (their text is not in the C file)
        for header in sorted(glob(os.path.join(HERE, "src", "*.h"))):
            if f'"{os.path.basename(header)}"'.encode() in text:
                with open(header, "rb") as f:
                    h.update(f.read())
    parts = [
        repr([os.path.basename(d) for d in ext.include_dirs]),
        sys.version,
        sys.platform,
        numpy.__version__,
        repr(getattr(cmd.compiler, "compiler_so", cmd.compiler.compiler_type)),
        repr(ext.extra_compile_args),
        repr(ext.extra_link_args),
        repr(sorted(ext.define_macros or [])),
        repr(ext.libraries),
        os.environ.get("CFLAGS", ""),
        os.environ.get("LDFLAGS", ""),
    ]
    h.update("\0".join(parts).encode())
    return h.hexdigest()[:24]


def _numpy_include():
    import numpy

    return numpy.get_include()


def _extensions():
    from Cython.Build import cythonize

    debug = _env_flag("CNNCORE_DEBUG") in ("1", "on", "true", "yes")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "nonecheck": False,
        "embedsignature": True,
    }
    exts = []
    for path in sorted(glob(os.path.join("cnncore", "**", "*.pyx"), recursive=True)):
        name = os.path.splitext(path)[0].replace(os.sep, ".")
        exts.append(Extension(name, [path], include_dirs=["src"]))
    options = {}
    if _cython_version() >= (3, 1):
        source = SHARED_UTILITY.replace(".", os.sep) + ".c"
        exts.append(Extension(SHARED_UTILITY, [source]))
        options["shared_utility_qualified_name"] = SHARED_UTILITY
    key = _sources_key(directives, debug)
    result = None
    if key is not None and _read(SOURCES_KEY) == key:
        # generated from exactly these sources (pip runs setup.py three times per install:
        # requirements, metadata, wheel): take the C files as they are, without cythonize's
        # dependency scan (about half a second each time)
        result = _generated_extensions(exts)
        if result is None:
            _mark_generated_fresh()
    elif os.path.exists(SOURCES_KEY):
        os.remove(SOURCES_KEY)  # written again only when cythonize has succeeded
    if result is None:
        _log("cythonize")
        result = cythonize(
            exts,
            include_path=[".", "src"],
            compiler_directives=directives,
            compile_time_env={"CNNCORE_DEBUG": int(debug)},
            build_dir=CYTHON_BUILD_DIR,
            quiet=True,
            nthreads=_cores(),
            **options,
        )
        _log("cythonize_done")
        if key is not None:
            with open(SOURCES_KEY, "w") as f:
                f.write(key)
    return result + _simd_variant_extensions(result)


def _generated_extensions(exts):
    """``exts`` with their generated C files as sources, and the include directories and
    headers (``depends``) that Cython recorded in each file's metadata -- what cythonize
    returns for them; None when a C file is missing or unreadable."""
    import json

    out = []
    for ext in exts:
        path = os.path.join(CYTHON_BUILD_DIR, os.path.splitext(ext.sources[0])[0] + ".c")
        try:
            with open(path) as f:
                head = f.read(65536)
        except OSError:
            return None
        start, end = head.find("BEGIN: Cython Metadata"), head.find("END: Cython Metadata")
        if ext.name == SHARED_UTILITY:  # Cython writes no metadata into it
            if not head.startswith("/* Generated by Cython"):
                return None
            meta = {}
        elif 0 <= start < end:
            try:
                meta = json.loads(head[start + len("BEGIN: Cython Metadata") : end])["distutils"]
            except (ValueError, KeyError):
                return None
            if meta.get("name") != ext.name:
                return None
        else:
            return None
        out.append(
            Extension(
                ext.name,
                [path],
                include_dirs=list(meta.get("include_dirs", ext.include_dirs)),
                depends=list(meta.get("depends", [])),
            )
        )
    return out


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _sources_key(directives, debug):
    """Hash of everything the generated C files depend on: this project's Cython sources
    (by relative path and content, with the SciPy declarations vendored in ``src/scipy``),
    the directives, and the versions of Cython and of NumPy (whose ``.pxd`` files they
    cimport).  None with the cache off."""
    if _env_flag("CNNCORE_BUILD_CACHE", "1") in ("0", "off", "false", "no"):
        return None
    import Cython
    import numpy

    h = hashlib.sha256()
    h.update(f"{Cython.__version__}|{numpy.__version__}|".encode())
    h.update(repr(sorted(directives.items())).encode() + repr(debug).encode())
    h.update(repr((SIMD_MODULES, SHARED_UTILITY)).encode())
    files = []
    for pattern in ("cnncore/**/*.pyx", "cnncore/**/*.pxd", "cnncore/**/*.pxi", "src/**/*.*"):
        files += glob(pattern, recursive=True)
    for path in sorted(set(files)):
        h.update(path.replace(os.sep, "/").encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _mark_generated_fresh():
    """The C files were generated from exactly these sources: make them newer than their
    dependencies (whose times are those of pip's fresh build environment), so cythonize
    keeps them; the object cache then recognizes their content."""
    for path in glob(os.path.join(CYTHON_BUILD_DIR, "**", "*.c"), recursive=True):
        os.utime(path, None)


def _cython_version():
    import Cython

    return tuple(int(p) for p in Cython.__version__.split(".")[:2] if p.isdigit())


def _cores():
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _simd_variant_extensions(cythonized):
    """``<module>_<isa>``: the module's generated C compiled again with the ISA's flags.

    Each variant's source is a two-line C file that includes the module's C file (written by
    cythonize, which thus runs once per ``.pyx``) and renames its one exported symbol, the
    init function ``PyInit_<name>`` that Python looks up by the module's file name; the module
    itself takes its name from the import (PEP 489 multi-phase init), so everything else
    is the same code.  ``cythonized``: the extensions cythonize returned (their headers)."""
    import platform

    machine = platform.machine().lower()
    wanted = _env_flag("CNNCORE_SIMD_VARIANTS", "1") in ("1", "on", "true", "yes")
    if not wanted or machine not in ("x86_64", "amd64") or sys.platform == "win32":
        return []
    out_dir = os.path.join(CYTHON_BUILD_DIR, "simd")
    os.makedirs(out_dir, exist_ok=True)
    exts = []
    for mod in SIMD_MODULES:
        base_c = os.path.join(CYTHON_BUILD_DIR, *mod.split(".")) + ".c"
        short = mod.rsplit(".", 1)[1]
        for isa, flags in SIMD_VARIANTS.items():
            path = os.path.join(out_dir, f"{mod}_{isa}.c")
            include = os.path.relpath(base_c, out_dir).replace(os.sep, "/")
            text = (
                f"/* Generated by setup.py: {mod} compiled for {isa}. */\n"
                f"#define PyInit_{short} PyInit_{short}_{isa}\n"
                f'#include "{include}"\n'
            )
            if _read(path) != text.strip():
                with open(path, "w") as f:
                    f.write(text)
            # depends: rebuilt when the module's C or headers change (the wrapper does not)
            headers = [d for e in cythonized if e.name == mod for d in e.depends]
            ext = Extension(
                f"{mod}_{isa}", [path], include_dirs=["src"], depends=[base_c, *headers]
            )
            ISA_FLAGS[ext.name] = flags
            VARIANT_OF[ext.name] = base_c
            VARIANT_OF_MODULE[ext.name] = mod
            exts.append(ext)
    return exts


if __name__ == "__main__":  # pip's build backend runs it so too; tests import the helpers
    if os.environ.get("CNNCORE_BUILD_LOG"):
        import atexit

        _log("setup", argv=sys.argv[1:])
        atexit.register(_log, "exit")
    setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
