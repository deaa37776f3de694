"""Tests for cnncore.datasets: IDX reader, MNIST/Fashion-MNIST loaders, shipped sample."""

import gzip
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnncore
from cnncore import datasets
from cnncore.datasets import (
    FASHION_MNIST_CLASS_NAMES,
    MNIST_CLASS_NAMES,
    load_fashion_mnist,
    load_idx,
    load_mnist,
    load_sample,
)

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
have_debian = pytest.mark.skipif(
    not all((DEBIAN_DIR / (n + ".gz")).is_file() for n in NAMES),
    reason="Debian's dataset-fashion-mnist is not installed",
)

# Reference writer, independent of the module: type code -> big-endian dtype.
CODES = {
    np.uint8: (0x08, ">u1"),
    np.int8: (0x09, ">i1"),
    np.int16: (0x0B, ">i2"),
    np.int32: (0x0C, ">i4"),
    np.float32: (0x0D, ">f4"),
    np.float64: (0x0E, ">f8"),
}


def idx_bytes(arr):
    code, be = CODES[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(be).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def random_array(dtype, shape, rng):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


# ------------------------------------------------------------------------------------------
# load_idx: round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 3, 2), (0, 28)])
def test_round_trip(tmp_path, rng, dtype, gz, shape):
    arr = random_array(dtype, shape, rng)
    path = write(tmp_path / "a.idx", idx_bytes(arr), gz=gz)
    out = load_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable and out.flags.c_contiguous


def test_special_float_values_round_trip(tmp_path):
    arr = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -5.5], dtype=np.float64)
    out = load_idx(write(tmp_path / "f", idx_bytes(arr)))
    np.testing.assert_array_equal(out, arr)
    assert np.signbit(out[1])


def test_gzip_detected_by_magic_not_extension(tmp_path, rng):
    arr = random_array(np.int16, (4, 5), rng)
    gz_no_ext = write(tmp_path / "data.idx", idx_bytes(arr), gz=True)
    raw_with_gz_ext = write(tmp_path / "data.gz", idx_bytes(arr), gz=False)
    np.testing.assert_array_equal(load_idx(gz_no_ext), arr)
    np.testing.assert_array_equal(load_idx(raw_with_gz_ext), arr)
    np.testing.assert_array_equal(load_idx(str(raw_with_gz_ext)), arr)


def test_multi_member_gzip(tmp_path, rng):
    arr = random_array(np.uint8, (10, 3), rng)
    data = idx_bytes(arr)
    path = tmp_path / "m.gz"
    path.write_bytes(gzip.compress(data[:13]) + gzip.compress(data[13:]))
    np.testing.assert_array_equal(load_idx(path), arr)


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope")


# ------------------------------------------------------------------------------------------
# load_idx: crafted / corrupted / foreign files
# ------------------------------------------------------------------------------------------


def header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


HUGE = header(0x08, (65536, 65536, 256))  # 2**40 elements
GOOD = header(0x0C, (2, 3)) + np.arange(6, dtype=">i4").tobytes()
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00\x00\x00\x00"

BAD_FILES = [
    ("empty", b"", "empty"),
    ("too_short", b"\x00\x00\x08", "too short"),
    ("bad_magic", b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
    ("bad_magic2", b"\x00\x05\x08\x01\x00\x00\x00\x01\x05", "magic"),
    ("png", PNG, "magic"),
    ("text", b"hello world, not an idx file\n", "magic"),
    ("type_07", header(0x07, (1,)) + b"\x00", "type code 0x07"),
    ("type_0A", header(0x0A, (1,)) + b"\x00", "type code 0x0A"),
    ("type_FF", header(0xFF, (1,)) + b"\x00", "type code 0xFF"),
    ("ndim0", b"\x00\x00\x08\x00", "ndim=0"),
    ("ndim0_data", b"\x00\x00\x08\x00\x01\x02", "ndim=0"),
    ("truncated_header", b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "truncated header"),
    ("truncated_data", GOOD[:-1], "truncated"),
    ("header_only", header(0x0D, (4, 4)), "truncated"),
    ("trailing", GOOD + b"\x00", "trailing"),
    ("trailing_many", GOOD + bytes(100), "trailing"),
    ("dims_too_small", header(0x08, (2, 2)) + bytes(5), "trailing"),
    ("dims_too_big", header(0x08, (3, 3)) + bytes(5), "truncated"),
    ("itemsize_mismatch", header(0x0E, (3,)) + bytes(12), "truncated"),
    ("huge_dims", HUGE + bytes(100), "truncated"),
    ("max_dims", header(0x0E, (2**32 - 1,) * 8) + bytes(16), "truncated"),
]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("name,data,match", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_value_error(tmp_path, name, data, match, gz):
    path = write(tmp_path / f"{name}.bin", data, gz=gz)
    if gz and name in ("huge_dims", "max_dims"):
        match = "cannot decompress to more than"
    with pytest.raises(ValueError, match=match) as info:
        load_idx(path)
    assert str(path) in str(info.value)


def test_huge_header_does_not_allocate(tmp_path):
    """A header claiming 2**40 elements fails before any large allocation (raw and gz)."""
    raw = write(tmp_path / "huge", HUGE + bytes(1000))
    gz = write(tmp_path / "huge.gz", HUGE + bytes(10**6), gz=True)
    tracemalloc.start()
    try:
        for path in (raw, gz):
            with pytest.raises(ValueError):
                load_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_gzip_bomb_is_read_bounded(tmp_path):
    """50 MB of zeros after a header declaring 16 bytes: rejected, reading ~17 bytes."""
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as f:
        f.write(header(0x08, (4, 4)))
        zeros = bytes(2**20)
        for _ in range(50):
            f.write(zeros)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing") as info:
            load_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 2**20


def test_gzip_underfull_stream_with_big_claim(tmp_path, rng):
    """A header claiming more than the stream holds (but within DEFLATE's ratio) -> truncated."""
    payload = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()  # incompressible
    path = write(tmp_path / "short.gz", header(0x08, (1000, 1000)) + payload, gz=True)
    with pytest.raises(ValueError, match="truncated"):
        load_idx(path)


@pytest.mark.parametrize(
    "kind",
    [
        "garbage_after_magic",
        "cut",
        "bad_crc",
        "bad_size",
        "gzip_of_garbage",
        "gzip_of_png",
        "trailing_garbage",
    ],
)
def test_corrupted_gzip(tmp_path, rng, kind):
    valid = gzip.compress(GOOD)
    if kind == "garbage_after_magic":
        data = b"\x1f\x8b" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    elif kind == "cut":
        data = valid[: len(valid) // 2]
    elif kind == "bad_crc":
        data = valid[:-8] + bytes([valid[-8] ^ 0xFF]) + valid[-7:]
    elif kind == "bad_size":
        data = valid[:-4] + struct.pack("<I", 12345)
    elif kind == "gzip_of_garbage":
        data = gzip.compress(b"\x07" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif kind == "gzip_of_png":
        data = gzip.compress(PNG)
    else:  # valid stream followed by junk
        data = valid + b"this is not gzip"
    path = write(tmp_path / "c.gz", data)
    with pytest.raises(ValueError) as info:
        load_idx(path)
    assert str(path) in str(info.value)
    assert "IDX" in str(info.value)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_crash(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
    for gz in (False, True):
        path = write(tmp_path / f"r{gz}", data, gz=gz)
        try:
            out = load_idx(path)
        except ValueError as exc:
            assert str(path) in str(exc)
        else:  # a random file that happens to be valid must be consistent
            assert out.nbytes == len(data) - 4 - 4 * data[3]


# ------------------------------------------------------------------------------------------
# load_mnist / load_fashion_mnist
# ------------------------------------------------------------------------------------------


def make_fake_dataset(
    d,
    n_train=12,
    n_test=5,
    seed=0,
    gz=True,
    images_shape=(28, 28),
    n_train_labels=None,
    label_max=9,
):
    """Tiny MNIST-format dataset; returns the uint8 arrays written."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    xtr = rng.integers(0, 256, (n_train, *images_shape), dtype=np.uint8)
    ytr = rng.integers(0, label_max + 1, n_train_labels or n_train, dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, *images_shape), dtype=np.uint8)
    yte = rng.integers(0, label_max + 1, n_test, dtype=np.uint8)
    xtr[0, 0, 0], xtr[0, 0, 1] = 0, 255
    for name, arr in zip(NAMES, (xtr, ytr, xte, yte), strict=True):
        write(d / (name + (".gz" if gz else "")), idx_bytes(arr), gz=gz)
    return xtr, ytr, xte, yte


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No $CNNCORE_DATA, an empty home, no system directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("CNNCORE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setitem(
        datasets._DATASETS["fashion-mnist"], "system_dirs", (str(tmp_path / "no-system-dir"),)
    )
    return home


def check_loaded(result, arrays):
    (x_train, y_train), (x_test, y_test) = result
    xtr, ytr, xte, yte = arrays
    for x, ref in ((x_train, xtr), (x_test, xte)):
        assert x.dtype == np.float32 and x.shape == (ref.shape[0], 1, 28, 28)
        np.testing.assert_allclose(x[:, 0], ref / np.float32(255), rtol=1e-7, atol=0)
        assert x.min() >= 0 and x.max() <= 1
    for y, ref in ((y_train, ytr), (y_test, yte)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_load_from_path(tmp_path, clean_env, loader, gz):
    arrays = make_fake_dataset(tmp_path / "d", gz=gz)
    check_loaded(loader(tmp_path / "d"), arrays)
    check_loaded(loader(str(tmp_path / "d")), arrays)
    (x, _), _ = loader(tmp_path / "d")
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 0, 1] == 1


def test_mixed_raw_and_gz(tmp_path, clean_env):
    arrays = make_fake_dataset(tmp_path / "d", gz=True)
    gz = tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    (tmp_path / "d" / "train-labels-idx1-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    check_loaded(load_mnist(tmp_path / "d"), arrays)


def test_search_order(tmp_path, clean_env, monkeypatch):
    env = tmp_path / "env"
    a_home = make_fake_dataset(clean_env / ".cache" / "cnncore" / "mnist", seed=1)
    check_loaded(load_mnist(), a_home)
    monkeypatch.setenv("CNNCORE_DATA", str(env))
    a_env_root = make_fake_dataset(env, seed=2)
    check_loaded(load_mnist(), a_env_root)
    a_env_sub = make_fake_dataset(env / "mnist", seed=3)
    check_loaded(load_mnist(), a_env_sub)
    a_env_fashion = make_fake_dataset(env / "fashion-mnist", seed=4)
    check_loaded(load_fashion_mnist(), a_env_fashion)
    check_loaded(load_mnist(), a_env_sub)
    a_path = make_fake_dataset(tmp_path / "explicit", seed=5)
    check_loaded(load_mnist(tmp_path / "explicit"), a_path)
    # An explicit path without the files falls back to the other locations.
    (tmp_path / "empty").mkdir()
    check_loaded(load_mnist(tmp_path / "empty"), a_env_sub)


def test_fashion_system_dir(tmp_path, clean_env, monkeypatch):
    system = tmp_path / "system"
    arrays = make_fake_dataset(system, seed=7)
    monkeypatch.setitem(datasets._DATASETS["fashion-mnist"], "system_dirs", (str(system),))
    check_loaded(load_fashion_mnist(), arrays)
    with pytest.raises(FileNotFoundError):
        load_mnist()  # the Fashion-MNIST system directory is not searched for MNIST


def test_not_found_message_mnist(clean_env):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist()
    msg = str(info.value)
    assert msg.startswith("load_mnist():")
    for name in NAMES:
        assert name in msg
        assert f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}.gz" in msg
    assert str(clean_env / ".cache" / "cnncore" / "mnist") in msg
    assert "CNNCORE_DATA" in msg and "path=" in msg
    assert "apt install" not in msg


def test_not_found_message_fashion(clean_env, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path / "nothing-here")
    msg = str(info.value)
    assert msg.startswith("load_fashion_mnist():")
    assert "apt install dataset-fashion-mnist" in msg
    assert "/usr/share/datasets/fashion-mnist" in msg
    for name in NAMES:
        assert f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}.gz" in msg
    assert str(tmp_path / "nothing-here") in msg  # the searched directories are listed
    assert str(clean_env / ".cache" / "cnncore" / "fashion-mnist") in msg


def test_partial_directory_is_reported(tmp_path, clean_env):
    make_fake_dataset(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing: t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path / "d")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_train_labels=11), "counts differ"),
        (dict(images_shape=(27, 28)), r"shape \(N, 28, 28\)"),
        (dict(label_max=12), r"labels must be in \[0, 9\]"),
    ],
)
def test_inconsistent_dataset(tmp_path, clean_env, kwargs, match):
    make_fake_dataset(tmp_path / "d", seed=3, **kwargs)
    if "label_max" in kwargs:  # make sure an out-of-range label is present
        write(
            tmp_path / "d" / "train-labels-idx1-ubyte.gz",
            idx_bytes(np.full(12, 12, dtype=np.uint8)),
            gz=True,
        )
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path / "d")


def test_wrong_label_dtype(tmp_path, clean_env):
    make_fake_dataset(tmp_path / "d")
    write(
        tmp_path / "d" / "t10k-labels-idx1-ubyte.gz",
        idx_bytes(np.zeros(5, dtype=np.int32)),
        gz=True,
    )
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path / "d")


def test_corrupted_file_in_dataset(tmp_path, clean_env):
    make_fake_dataset(tmp_path / "d")
    p = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path / "d")


@have_debian
def test_load_fashion_mnist_debian(clean_env, monkeypatch):
    monkeypatch.setitem(datasets._DATASETS["fashion-mnist"], "system_dirs", (str(DEBIAN_DIR),))
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.min() == 0 and x_train.max() == 1
    assert x_test.min() == 0 and x_test.max() == 1
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    # Known first labels of the official files (ankle boot, T-shirt, T-shirt, dress, ...).
    np.testing.assert_array_equal(y_train[:5], [9, 0, 0, 3, 0])
    np.testing.assert_array_equal(y_test[:5], [9, 2, 1, 1, 6])
    # Pixel values are k/255 exactly as float32.
    raw = load_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(x_test[:, 0], raw.astype(np.float32) / np.float32(255))


def test_class_names():
    assert MNIST_CLASS_NAMES == tuple("0123456789")
    assert len(FASHION_MNIST_CLASS_NAMES) == 10
    assert FASHION_MNIST_CLASS_NAMES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASS_NAMES[9] == "Ankle boot"


# ------------------------------------------------------------------------------------------
# load_sample
# ------------------------------------------------------------------------------------------

SAMPLE = ROOT / "cnncore" / "data" / "fashion_mnist_sample.npz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 578, 100


def test_sample_shapes_dtypes_ranges():
    (x_train, y_train), (x_test, y_test) = load_sample()
    assert x_train.shape == (10 * TRAIN_PER_CLASS, 1, 28, 28)
    assert x_test.shape == (10 * TEST_PER_CLASS, 1, 28, 28)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.shape == (x_train.shape[0],) and y_test.shape == (x_test.shape[0],)
    for x in (x_train, x_test):
        assert x.min() == 0 and x.max() == 1
        assert x.flags.c_contiguous
        # values are exactly k/255
        k = np.rint(x * 255)
        np.testing.assert_array_equal(x, (k / 255).astype(np.float32))
    # stratified
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [TRAIN_PER_CLASS] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [TEST_PER_CLASS] * 10)
    # classes are interleaved (original order), not sorted blocks
    assert len(np.unique(y_train[:50])) >= 5


def test_sample_deterministic():
    (a, b), (c, d) = load_sample()
    (a2, b2), (c2, d2) = load_sample()
    for u, v in ((a, a2), (b, b2), (c, c2), (d, d2)):
        np.testing.assert_array_equal(u, v)
    a[0] = 5  # results are fresh arrays, not a shared cache
    (a3, _), _ = load_sample()
    assert a3[0].max() <= 1


def test_sample_file_no_pickle_and_size():
    assert SAMPLE.stat().st_size <= 3_000_000
    with zipfile.ZipFile(SAMPLE) as z:
        assert sorted(z.namelist()) == sorted(
            f"{k}.npy"
            for k in ("x_train", "y_train", "x_test", "y_test", "train_indices", "test_indices")
        )
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    with np.load(SAMPLE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape[1:] == (28, 28)
    assert arrays["y_train"].dtype == np.uint8 and arrays["y_test"].dtype == np.uint8
    assert all(a.dtype != object for a in arrays.values())
    for k in ("train_indices", "test_indices"):
        idx = arrays[k]
        assert np.all(np.diff(idx) > 0) and idx.min() >= 0
    assert arrays["train_indices"].max() < 60000 and arrays["test_indices"].max() < 10000


def test_sample_license_shipped():
    text = (ROOT / "cnncore" / "data" / "FASHION_MNIST_LICENSE.txt").read_text()
    assert "Copyright (c) 2017 Zalando SE" in text
    assert "Permission is hereby granted, free of charge" in text
    assert "fashion_mnist_sample.npz" in text
    assert "Zalando" in (datasets.__doc__ or "")


@have_debian
def test_sample_matches_debian_files():
    with np.load(SAMPLE, allow_pickle=False) as npz:
        s = {k: npz[k] for k in npz.files}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = load_idx(DEBIAN_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = load_idx(DEBIAN_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        idx = s[f"{split}_indices"]
        np.testing.assert_array_equal(s[f"x_{split}"], images[idx])
        np.testing.assert_array_equal(s[f"y_{split}"], labels[idx])


@have_debian
def test_make_sample_script_reproduces_shipped_file(tmp_path):
    out = tmp_path / "sample.npz"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_sample.py"),
            "--out",
            str(out),
            "--train-per-class",
            str(TRAIN_PER_CLASS),
        ],
        check=True,
        capture_output=True,
        cwd=str(tmp_path),
        # the cnncore being tested (installed, or an in-place build), not the bare sources
        env={**os.environ, "PYTHONPATH": str(Path(cnncore.__file__).resolve().parent.parent)},
    )
    assert out.read_bytes() == SAMPLE.read_bytes()


# --------------------------------------------------------------------------------------------
# ImageFolder / load_image_folder (Pillow is the reference decoder)
# --------------------------------------------------------------------------------------------


def _write(path, pixels, mode=None):
    image = pytest.importorskip("PIL.Image")
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image.fromarray(pixels)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """3 classes (not in alphabetical creation order), 8-bit grayscale PNGs, a nested
    sub-folder, a JPEG, and files that must be ignored."""
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    for name, n in (("zebra", 2), ("apple", 3), ("mango", 1)):
        for i in range(n):
            _write(root / name / f"{i}.png", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    _write(root / "mango" / "deeper" / "x.PNG", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    (root / "apple" / "notes.txt").write_text("ignored")
    (root / "apple" / ".hidden.png").write_bytes(b"ignored")
    (root / ".git").mkdir()
    (root / "README.md").write_text("ignored")
    return root


def test_image_folder_follows_torchvision_layout(folder):
    f = datasets.ImageFolder(folder)
    assert f.classes == ["apple", "mango", "zebra"]
    assert f.class_to_idx == {"apple": 0, "mango": 1, "zebra": 2}
    names = [Path(p).relative_to(folder).as_posix() for p, _ in f.samples]
    assert names == [
        "apple/0.png",
        "apple/1.png",
        "apple/2.png",
        "mango/0.png",
        "mango/deeper/x.PNG",
        "zebra/0.png",
        "zebra/1.png",
    ]
    assert f.targets == [0, 0, 0, 1, 1, 2, 2] and len(f) == 7 and f.channels == 1
    image, label = f[3]
    assert image.shape == (1, 6, 5) and image.dtype == np.float32 and label == 1


def test_image_folder_matches_torchvision(folder):
    tv = pytest.importorskip("torchvision.datasets")
    ours, theirs = datasets.ImageFolder(folder), tv.ImageFolder(str(folder))
    assert ours.classes == theirs.classes and ours.targets == theirs.targets
    assert [p for p, _ in ours.samples] == [p for p, _ in theirs.samples]


def test_image_values_are_pillows_scaled_to_unit_range(folder):
    from PIL import Image

    x, y, classes = datasets.load_image_folder(folder, dtype=np.float64)
    f = datasets.ImageFolder(folder)
    for k, (path, label) in enumerate(f.samples):
        ref = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        np.testing.assert_array_equal(x[k, 0], ref)
        assert y[k] == label
    assert x.dtype == np.float64 and y.dtype == np.int64 and classes == f.classes


def test_resize_is_pillow_bilinear(folder):
    from PIL import Image

    x, _, _ = datasets.load_image_folder(folder, size=(9, 4))
    path = datasets.ImageFolder(folder).samples[0][0]
    ref = np.asarray(Image.open(path).convert("L").resize((4, 9), Image.BILINEAR)) / 255.0
    assert x.shape == (7, 1, 9, 4)
    np.testing.assert_allclose(x[0, 0], ref, rtol=0, atol=1e-7)
    assert datasets.load_image_folder(folder, size=3)[0].shape == (7, 1, 3, 3)


def test_color_modes(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "c"
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    _write(root / "a" / "g.png", gray)
    _write(root / "b" / "rgba.png", rgba)
    _write(root / "b" / "p.png", rgba[..., :3], mode="P")
    x, _, _ = datasets.load_image_folder(root)  # one colour image: all become RGB
    assert x.shape == (3, 3, 4, 4)
    np.testing.assert_array_equal(x[0], np.repeat(gray[None] / 255.0, 3, axis=0).astype(np.float32))
    np.testing.assert_array_equal(x[2], np.moveaxis(rgba[..., :3], -1, 0) / np.float32(255))
    xg, _, _ = datasets.load_image_folder(root, color="grayscale")
    assert xg.shape == (3, 1, 4, 4)


def test_16_bit_grayscale(tmp_path):
    from PIL import Image

    pixels = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    path = tmp_path / "r" / "a" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(pixels).save(path)
    x, _, _ = datasets.load_image_folder(tmp_path / "r")
    assert x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(x[0, 0], pixels / 65535.0, rtol=1e-6)


def test_different_sizes_need_size(tmp_path):
    _write(tmp_path / "r" / "a" / "small.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "r" / "b" / "big.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(ValueError, match=r"big.png.*8x6.*size="):
        datasets.load_image_folder(tmp_path / "r")
    assert datasets.load_image_folder(tmp_path / "r", size=5)[0].shape == (2, 1, 5, 5)


def test_bad_folders_and_files(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError, match="existing directory"):
        datasets.ImageFolder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        datasets.ImageFolder(tmp_path / "flat")
    _write(tmp_path / "r" / "a" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "r" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        datasets.ImageFolder(tmp_path / "r")
    assert len(datasets.ImageFolder(tmp_path / "r", allow_empty=True)) == 1
    (tmp_path / "r" / "empty" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        datasets.load_image_folder(tmp_path / "r")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(size=0), ValueError, "size"),
        (dict(size=(3, 4, 5)), ValueError, "size"),
        (dict(size=1.5), TypeError, "size"),
        (dict(size=100_000), ValueError, "size"),
        (dict(color="cmyk"), ValueError, "color"),
        (dict(dtype=np.int32), TypeError, "dtype"),
        (dict(allow_empty=1), TypeError, "allow_empty"),
    ],
)
def test_bad_arguments(folder, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        datasets.ImageFolder(folder, **kwargs)


def test_without_pillow_says_how_to_get_it(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"cnncore\[images\]"):
        datasets.ImageFolder(folder)


def test_is_image_folder(folder, tmp_path):
    assert datasets.is_image_folder(folder)
    assert not datasets.is_image_folder(tmp_path / "nothing")
    (tmp_path / "plain" / "a").mkdir(parents=True)
    assert not datasets.is_image_folder(tmp_path / "plain")
