#!/usr/bin/env bash
# Build cnncore with sanitizers, or as the bounds-checked debug build, in a separate
# directory and run the whole test suite (fuzz campaign included) against that build.
#
#   tools/sanitize.sh asan  [pytest args...]   # -fsanitize=address,undefined
#   tools/sanitize.sh debug [pytest args...]   # Cython boundscheck/wraparound/
#                                              # initializedcheck on, -O0 -g
#
# The working tree (tracked and untracked, not ignored files) is copied to
# $CNNCORE_SANITIZE_DIR (default build/sanitize-<mode>/tree) and built there with
# `python setup.py build_ext --inplace` (CNNCORE_SANITIZE / CNNCORE_DEBUG, see setup.py);
# the in-place build of the worktree itself is left alone.
#
# ASan and a Python extension: the interpreter is not instrumented, so the ASan runtime must
# be the first library loaded -- it is preloaded (LD_PRELOAD=$(gcc -print-file-name=
# libasan.so), with libstdc++ right after it); CPython's allocations at exit are not freed,
# so leak detection is off.  Any
# ASan or UBSan report aborts the process (halt_on_error), which fails the test that
# triggered it (or, in a fuzz child, the fuzz test).  Allocations above 6 GiB return NULL
# (NumPy raises MemoryError) instead of the fuzz children's address-space limit, which
# ASan's shadow memory does not tolerate.
#
# Extra environment: SANITIZE_JOBS (build parallelism, default 2), SANITIZE_NO_TORCH=1 to
# run without PyTorch (its cross-checks are then skipped).
set -euo pipefail

MODE=${1:-asan}
shift || true
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${CNNCORE_SANITIZE_DIR:-$ROOT/build/sanitize-$MODE}
TREE=$OUT/tree
PY=${PYTHON:-python}

case "$MODE" in
    asan)  BUILD_ENV=(CNNCORE_SANITIZE=address,undefined) ;;
    debug) BUILD_ENV=(CNNCORE_DEBUG=1) ;;
    *) echo "usage: $0 asan|debug [pytest args...]" >&2; exit 2 ;;
esac

echo "== copying the working tree to $TREE"
mkdir -p "$TREE"
find "$TREE" -name '*.py' -delete  # stale sources; build products are kept (incremental)
(cd "$ROOT" && git ls-files -co --exclude-standard -z -- cnncore src tests tools setup.py \
    pyproject.toml LICENSE | xargs -0 cp -p --parents -t "$TREE")

echo "== building ($MODE)"
(cd "$TREE" && env "${BUILD_ENV[@]}" nice -n 5 "$PY" setup.py build_ext --inplace -q \
    -j "${SANITIZE_JOBS:-2}" > "$OUT/build.log" 2>&1) || { tail -50 "$OUT/build.log"; exit 1; }

RUN_ENV=(PYTHONFAULTHANDLER=1)
if [ "$MODE" = asan ]; then
    RUN_ENV+=(CNNCORE_SANITIZED=asan)  # tests/test_resources.py: no resident-memory checks
    LIBASAN=$(gcc -print-file-name=libasan.so)
    [ -f "$LIBASAN" ] || { echo "libasan.so not found (gcc -print-file-name)" >&2; exit 1; }
    # libstdc++ too: otherwise ASan cannot intercept __cxa_throw and aborts the first time an
    # uninstrumented C++ extension loaded later (matplotlib, torch) throws an exception.
    LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
    RUN_ENV+=(
        LD_PRELOAD="$LIBASAN $LIBSTDCXX"
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=6144:detect_stack_use_after_return=0"
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
        CNNCORE_FUZZ_MEM_LIMIT_GB=0
    )
    # sanity check: the extensions really are instrumented
    if ! ldd "$TREE"/cnncore/_conv.cpython-*.so | grep -q libasan; then
        echo "the extensions are not linked against libasan" >&2; exit 1
    fi
fi
if [ "${SANITIZE_NO_TORCH:-0}" = 1 ]; then
    mkdir -p "$OUT/notorch/torch"
    echo 'raise ImportError("torch disabled by tools/sanitize.sh")' > "$OUT/notorch/torch/__init__.py"
    RUN_ENV+=(PYTHONPATH="$OUT/notorch")
fi

echo "== running the test suite against the $MODE build"
cd "$TREE"
set +e
env "${RUN_ENV[@]}" nice -n 5 "$PY" -m pytest tests -q -p no:cacheprovider \
    -W ignore::DeprecationWarning "$@" 2>&1 | tee "$OUT/pytest.log"
status=${PIPESTATUS[0]}
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$OUT/pytest.log"; then
    echo "== sanitizer reports found (see $OUT/pytest.log)" >&2
    status=1
fi
exit "$status"
