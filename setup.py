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
"""

import os
import shutil
import sys
import tempfile
import textwrap
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# Compute-bound kernel modules that are also compiled for wider vector units (same Cython
# source, different ISA flags).  Memory-bound modules gain nothing from this.
SIMD_MODULES = ["cnncore.ops._conv", "cnncore.ops._norm", "cnncore.ops._resize"]
ISA_FLAGS = {}  # extension name -> extra ISA flags (filled by _simd_variant_extensions)
# Modules that must not fuse a*b+c into one rounding (bit-for-bit PyTorch/NumPy parity).
NO_FP_CONTRACT = {"cnncore._optim"}
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
            self.parallel = max(
                1,
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1),
            )

    def build_extensions(self):
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
        for ext in self.extensions:
            cflags, lflags = [], []
            if ctype != "msvc":
                cflags += ["-O0", "-g"] if debug else ["-O3"]
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
        super().build_extensions()


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
        exts.append(Extension(name, [path], include_dirs=["src", _numpy_include()]))
    for ext in _simd_variant_extensions():
        exts.append(ext)
    return cythonize(
        exts,
        include_path=[".", "src"],
        compiler_directives=directives,
        compile_time_env={"CNNCORE_DEBUG": int(debug)},
        build_dir="build/cython",
        quiet=True,
    )


def _simd_variant_extensions():
    """``<module>_<isa>`` built from a generated ``.pyx`` that includes the module's source."""
    import platform

    machine = platform.machine().lower()
    wanted = _env_flag("CNNCORE_SIMD_VARIANTS", "1") in ("1", "on", "true", "yes")
    if not wanted or machine not in ("x86_64", "amd64") or sys.platform == "win32":
        return []
    out_dir = os.path.join("build", "simd")
    os.makedirs(out_dir, exist_ok=True)
    exts = []
    for mod in SIMD_MODULES:
        source = mod.replace(".", "/") + ".pyx"
        for isa, flags in SIMD_VARIANTS.items():
            path = os.path.join(out_dir, f"{mod}_{isa}.pyx")
            text = f'# Generated by setup.py: {mod} compiled for {isa}.\ninclude "{source}"\n'
            if not os.path.exists(path) or open(path).read() != text:
                with open(path, "w") as f:
                    f.write(text)
            ext = Extension(f"{mod}_{isa}", [path], include_dirs=["src", _numpy_include()])
            ISA_FLAGS[ext.name] = flags
            exts.append(ext)
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
