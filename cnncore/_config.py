"""Thread count, BLAS thread capping and build information."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from ._validation import check_int

__all__ = ["get_num_threads", "set_num_threads", "show_config", "config_info"]

_BLAS_MODULE = "scipy.linalg.cython_blas"


def _preload_cython_blas() -> None:
    """Load SciPy's ``cython_blas`` extension without running ``scipy/linalg/__init__.py``.

    The kernels ``cimport`` sgemm/dgemm from ``scipy.linalg.cython_blas``; importing that
    module the usual way first imports the whole ``scipy.linalg`` package (LAPACK wrappers,
    decompositions, array-API shims: ~0.3 s, more than everything else ``import cnncore``
    does).  The BLAS binding itself needs none of it, so the extension file is loaded
    directly and registered in ``sys.modules``, where the kernels' ``cimport`` (and
    threadpoolctl, which finds the BLAS library it loaded) pick it up.  ``scipy.linalg``
    itself still imports normally whenever someone imports it.  Any surprise (another SciPy
    layout) leaves the usual import to happen instead.
    """
    if _BLAS_MODULE in sys.modules:
        return
    try:
        import importlib.machinery
        import importlib.util

        scipy_spec = importlib.util.find_spec("scipy")  # locates the package, imports nothing
        if scipy_spec is None or not scipy_spec.submodule_search_locations:
            return
        for base in scipy_spec.submodule_search_locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(base, "linalg", "cython_blas" + suffix)
                if os.path.isfile(path):
                    break
            else:
                continue
            break
        else:
            return
        spec = importlib.util.spec_from_file_location(_BLAS_MODULE, path)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[_BLAS_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(_BLAS_MODULE, None)
            raise
        parent = sys.modules.get("scipy.linalg")
        if parent is not None:
            parent.cython_blas = module  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 -- fall back to the ordinary import in the kernels
        return


_preload_cython_blas()

from . import _threads  # noqa: E402  (after the BLAS binding: kernels cimport it)

_ENV_THREADS = "CNNCORE_NUM_THREADS"
_ENV_SIMD = "CNNCORE_SIMD"


# The SIMD level of each kernel module that load_kernels imported: module name -> level.
_loaded_simd: dict[str, str] = {}


def load_kernels(name: str, level: str | None = None):
    """Import the best build of kernel module ``name`` (e.g. ``"cnncore.ops._conv"``) for this CPU.

    Compute-bound modules are compiled several times (baseline, AVX2+FMA, AVX-512; see
    setup.py).  ``level`` -- or ``$CNNCORE_SIMD`` -- caps the choice (``"baseline"``,
    ``"avx2"``, ``"avx512"``); a variant that was not built falls back to the next lower one.
    A module built once with per-level clones of its hot kernels inside (``_pool``: it
    defines ``_set_simd_level``) is told the level instead.  Returns ``(module, level)``.
    """
    import importlib

    levels = _threads.cpu_simd_levels()
    cap = level or os.environ.get(_ENV_SIMD, "").strip().lower() or levels[-1]
    order = ["baseline", "avx2", "avx512"]
    if cap not in order:
        raise ValueError(f"{_ENV_SIMD} must be one of {order}. Received: {_ENV_SIMD}={cap!r}")
    candidates = [lv for lv in levels if order.index(lv) <= order.index(cap)]
    for lv in reversed(candidates):
        modname = name if lv == "baseline" else f"{name}_{lv}"
        try:
            module = importlib.import_module(modname)
        except ImportError:
            continue
        setter = getattr(module, "_set_simd_level", None)
        if setter is not None:  # one build holding a clone per level (see the docstring)
            lv = order[setter(order.index(candidates[-1]))]
        _loaded_simd[name] = lv
        return module, lv
    raise ImportError(f"cnncore: no build of the kernel module {name!r} could be imported")


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def _threads_from_env() -> int | None:
    raw = os.environ.get(_ENV_THREADS)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{_ENV_THREADS} must be a positive integer. Received: {_ENV_THREADS}={raw!r}"
        ) from None
    if value < 1:
        raise ValueError(
            f"{_ENV_THREADS} must be a positive integer. Received: {_ENV_THREADS}={raw!r}"
        )
    return value


_num_threads: int = _threads_from_env() or _usable_cores()


def set_num_threads(n: int) -> None:
    """Set the number of threads cnncore's kernels use.

    Parameters
    ----------
    n : int
        A positive thread count. The default is ``$CNNCORE_NUM_THREADS`` if set, otherwise the
        number of cores this process may run on. Results are bit-identical for every ``n``.

    See Also
    --------
    get_num_threads
    """
    global _num_threads
    _num_threads = check_int(n, "n", "set_num_threads", min_value=1, max_value=4096)


def get_num_threads() -> int:
    """Return the number of threads cnncore's kernels use (see :func:`set_num_threads`)."""
    return _num_threads


#: Elements below which a memory-bound kernel (activations, pooling, normalization, losses,
#: optimizer updates) runs on one thread (:func:`threads_for`): about 0.1-0.2 ms of one
#: thread's work, where a second thread saves at most tens of microseconds on an idle machine.
SMALL_ELEMENTS = 1 << 19
#: Multiply-adds below which a linear layer's GEMMs run on one thread (:func:`threads_for_macs`).
SMALL_MACS = 1 << 22


def threads_for(work: int) -> int:
    """The thread count of one memory-bound kernel call touching ``work`` elements: 1 below
    :data:`SMALL_ELEMENTS`, else :func:`get_num_threads`.

    Opening a parallel region costs microseconds on an idle machine, but on a loaded one
    both threads must be on a core at once, and waking the second can take a scheduler tick
    (0.1-1 ms measured on a shared 2-core VM) -- more than a small kernel's whole time; a
    training step makes dozens of such calls.  Results are bit-identical for any thread
    count, so this is a speed choice only (never a change of results).
    """
    return 1 if work < SMALL_ELEMENTS else _num_threads


def threads_for_macs(macs: int) -> int:
    """:func:`threads_for` for a GEMM of ``macs`` multiply-adds (:data:`SMALL_MACS`)."""
    return 1 if macs < SMALL_MACS else _num_threads


# --------------------------------------------------------------------------------------------
# BLAS thread capping.  Kernels call single-threaded GEMMs from inside their own OpenMP
# regions; a multi-threaded BLAS there would oversubscribe the cores (and, for some BLAS
# builds, change the summation order with the thread count).  threadpoolctl finds the BLAS
# libraries once; _threads.BlasCap then calls each library's own thread-count getter and
# setter through C function pointers (~0.1 us to enter and leave, against 5-15 us for
# threadpoolctl's Python path per switch, which a batch-1 forward would pay per kernel
# call).  Libraries whose C entry points are not known here are driven through their
# threadpoolctl controller instead.  The cap is reference-counted, so calls from several
# Python threads restore the user's setting exactly once, when the last of them leaves.
# --------------------------------------------------------------------------------------------

_blas_lock = threading.Lock()
_blas_libs: list[Any] | None = None
_BLAS_CAP = _threads.BlasCap()


def _c_entry_points(lib: Any) -> tuple[int, int, bool] | None:
    """``(getter address, setter address, wide)`` of the C functions through which
    threadpoolctl's controller ``lib`` reads and sets its library's thread count, or None
    when this controller is not one whose calls are known to be plain C calls (it is then
    driven through its Python methods).

    - OpenBLAS with its own threads (``pthreads``) or none: ``openblas_get_num_threads`` /
      ``openblas_set_num_threads`` (with the symbol prefix/suffix of this build, e.g.
      SciPy's ``scipy_openblas_*64_``), process-wide, as threadpoolctl sets them.
    - MKL: ``MKL_Get_Max_Threads`` / ``MKL_Set_Num_Threads_Local`` (this thread's limit, as
      threadpoolctl sets it; MKL runs sequentially inside the kernels' OpenMP regions).
    - BLIS: ``bli_thread_get_num_threads`` / ``bli_thread_set_num_threads``, ``dim_t``
      (64-bit) counts.
    - FlexiBLAS: ``flexiblas_get_num_threads`` / ``flexiblas_set_num_threads``.

    OpenBLAS built on OpenMP (whose limit threadpoolctl sets through the OpenMP runtime) and
    any other library take the Python path.
    """
    import ctypes

    api = getattr(lib, "internal_api", None)
    wide = False
    if api == "openblas":
        if getattr(lib, "threading_layer", None) not in ("pthreads", "disabled"):
            return None
        get = lib._get_symbol("openblas_get_num_threads")
        set_ = lib._get_symbol("openblas_set_num_threads")
    elif api == "mkl":
        get = getattr(lib.dynlib, "MKL_Get_Max_Threads", None)
        set_ = getattr(lib.dynlib, "MKL_Set_Num_Threads_Local", None)
    elif api == "blis":
        get = getattr(lib.dynlib, "bli_thread_get_num_threads", None)
        set_ = getattr(lib.dynlib, "bli_thread_set_num_threads", None)
        wide = True
    elif api == "flexiblas":
        get = getattr(lib.dynlib, "flexiblas_get_num_threads", None)
        set_ = getattr(lib.dynlib, "flexiblas_set_num_threads", None)
    else:
        return None
    if get is None or set_ is None:
        return None
    get_addr = ctypes.cast(get, ctypes.c_void_p).value
    set_addr = ctypes.cast(set_, ctypes.c_void_p).value
    if not get_addr or not set_addr:
        return None
    return get_addr, set_addr, wide


def _blas_controllers() -> list[Any]:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (looked up
    once; the first call also configures the cap)."""
    global _blas_libs
    if _blas_libs is None:
        with _blas_lock:
            if _blas_libs is None:
                try:
                    import scipy.linalg.cython_blas  # noqa: F401  -- make sure it is loaded
                    from threadpoolctl import ThreadpoolController

                    libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
                except Exception:  # noqa: BLE001 -- no threadpoolctl / unknown BLAS: no cap
                    libs = []
                direct, fallback = [], []
                for lib in libs:
                    try:
                        entry = _c_entry_points(lib)
                    except Exception:  # noqa: BLE001
                        entry = None
                    if entry is None:
                        fallback.append(lib)
                    else:
                        direct.append(entry)
                _BLAS_CAP.configure(direct, fallback)
                _blas_libs = libs
    return _blas_libs


def blas_single_thread() -> Any:
    """Context manager: every BLAS library runs single-threaded inside it (re-entrant, and
    shared by all Python threads: see :class:`cnncore._threads.BlasCap`).

    Entering and leaving cost about 0.1 us (the libraries' own C setters), so a kernel call
    can afford one; a model call or a training loop holds one around all its kernels.
    """
    if _blas_libs is None:
        _blas_controllers()
    return _BLAS_CAP


def config_info() -> dict[str, Any]:
    """Return the build and runtime configuration as a dict (see :func:`show_config`)."""
    from . import __version__

    blas = []
    for lib in _blas_controllers():
        info = lib.info()
        blas.append(
            {
                k: info.get(k)
                for k in ("internal_api", "version", "threading_layer", "architecture", "filepath")
            }
        )
    import platform

    import numpy
    import scipy

    return {
        "cnncore": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "openmp": _threads.openmp_enabled(),
        "simd": _selected_simd(),
        "cpu_simd": _threads.cpu_simd_levels(),
        "num_threads": get_num_threads(),
        "usable_cores": _usable_cores(),
        "blas": blas,
    }


def _selected_simd() -> str:
    """The SIMD level of the convolution kernels (the widest one cnncore built them for)."""
    if "cnncore.ops._conv" not in _loaded_simd:
        load_kernels("cnncore.ops._conv")
    return _loaded_simd["cnncore.ops._conv"]


def show_config() -> None:
    """Print cnncore's version, OpenMP status, thread count and the BLAS it calls."""
    info = config_info()
    print(f"cnncore {info['cnncore']}")
    print(f"  python       {info['python']} ({info['platform']})")
    print(f"  numpy        {info['numpy']}")
    print(f"  scipy        {info['scipy']}  (GEMM via scipy.linalg.cython_blas)")
    omp = "on" if info["openmp"] else "OFF (serial build)"
    print(f"  OpenMP       {omp}")
    print(
        f"  SIMD         conv kernels built for {info['simd']} "
        f"(CPU supports: {', '.join(info['cpu_simd'])})"
    )
    print(f"  threads      {info['num_threads']} (usable cores: {info['usable_cores']})")
    if not info["blas"]:
        print("  BLAS         unknown (threadpoolctl found no BLAS library)")
    for b in info["blas"]:
        print(
            f"  BLAS         {b['internal_api']} {b['version']} ({b['threading_layer']}, "
            f"{b['architecture']}) {b['filepath']}"
        )
