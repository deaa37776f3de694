"""cnncore.load and datasets.load_idx against truncated, corrupted, foreign and crafted files.

Complements tests/test_nn.py (save/load round trip, a table of damaged model files) and
tests/test_datasets.py (IDX headers, gzip bombs, random bytes): crafted archives that ask
for huge allocations, archive features cnncore never writes (other compression methods,
encryption), absurd JSON, and randomized damage of both formats.  Every failure must be a
ValueError that names the file, raised before any large allocation; nothing is unpickled.
"""

import gzip
import json
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import cnncore
from cnncore import nn
from cnncore.datasets import load_idx
from cnncore.nn import serialization

BAD_MODEL = "not a valid cnncore model file"


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, groups=1, rng=0),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12, 4, rng=1),
        nn.BatchNorm1d(4, affine=False),
    )


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    _model().save(path)
    return path


def _arch_file(path, layers, **arrays):
    arch = {
        "format": serialization.FORMAT,
        "version": serialization.VERSION,
        "model": {"class": "Sequential", "layers": layers},
    }
    np.savez(path, __architecture__=np.frombuffer(json.dumps(arch).encode(), np.uint8), **arrays)
    return path


def _rejects_quickly(path, match=BAD_MODEL):
    """load() raises ValueError(match) in under a second with < 16 MiB allocated."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            cnncore.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 16 * 2**20, f"peak traced allocation {peak} bytes"
    return info.value


# ------------------------------------------------------------------------------------------
# Crafted architectures: no layer is built beyond what the archive really holds
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        {"class": "Linear", "config": {"in_features": 50000, "out_features": 50000}},
        {
            "class": "Linear",
            "config": {"in_features": 2**31 - 1, "out_features": 2**31 - 1, "dtype": "float64"},
        },
        {
            "class": "Conv2d",
            "config": {"in_channels": 4096, "out_channels": 4096, "kernel_size": [64, 64]},
        },
        {
            "class": "Conv2d",
            "config": {"in_channels": 8, "out_channels": 2**20, "kernel_size": 512, "groups": 2},
        },
        {"class": "BatchNorm2d", "config": {"num_features": 2**31 - 1}},
        {
            "class": "Sequential",
            "layers": [
                {
                    "class": "Sequential",
                    "layers": [
                        {"class": "Linear", "config": {"in_features": 30000, "out_features": 30000}}
                    ],
                }
            ],
        },
    ],
)
def test_enormous_layer_config_is_rejected_before_allocating(tmp_path, layer):
    """Regression: load() used to build the layer first -- a crafted Linear(50000, 50000)
    allocated and initialized 9.3 GiB before the arrays were compared."""
    path = _arch_file(
        tmp_path / "big.npz", [layer], **{"param:0.weight": np.zeros((2, 2), np.float32)}
    )
    err = _rejects_quickly(path)
    assert "bytes of parameters" in str(err)


def test_enormous_layer_backed_by_a_small_deflated_member(tmp_path):
    """A compressed member may claim a large size only up to DEFLATE's expansion limit."""
    path = tmp_path / "bomb.npz"
    w = np.zeros((1000, 1000), np.float32)  # 4 MB of zeros deflates to ~4 kB
    arch = {
        "format": serialization.FORMAT,
        "version": serialization.VERSION,
        "model": {
            "class": "Sequential",
            "layers": [
                {
                    "class": "Linear",
                    "config": {"in_features": 1000, "out_features": 1000, "bias": False},
                }
            ],
        },
    }
    np.savez_compressed(
        path,
        __architecture__=np.frombuffer(json.dumps(arch).encode(), np.uint8),
        **{"param:0.weight": w},
    )
    loaded = cnncore.load(path)  # legitimate: the bytes really decompress to the weights
    np.testing.assert_array_equal(loaded[0].weight.data, w)
    # now lie about the uncompressed size in the central directory and local header
    data = bytearray(path.read_bytes())
    name = b"param:0.weight.npy"
    for sig, size_at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        pos = data.find(sig)
        while pos != -1:
            name_at = pos + (46 if sig == b"PK\x01\x02" else 30)
            if data[name_at : name_at + len(name)] == name:
                struct.pack_into("<I", data, pos + size_at, 0xFFFFFFF0)
            pos = data.find(sig, pos + 4)
    path.write_bytes(bytes(data))
    _rejects_quickly(path)


def test_parameter_bytes_cover_every_layer_that_owns_arrays():
    """serialization._parameter_bytes must know every registered layer with parameters or
    buffers, exactly (a smaller estimate would weaken the bound, a larger one would reject
    valid files)."""
    configs = {
        "Conv2d": [
            dict(in_channels=4, out_channels=6, kernel_size=3, groups=2),
            dict(in_channels=3, out_channels=5, kernel_size=[2, 5], bias=False, dtype="float64"),
        ],
        "ConvTranspose2d": [
            dict(in_channels=4, out_channels=6, kernel_size=3, groups=2),
            dict(in_channels=3, out_channels=5, kernel_size=[2, 5], bias=False, dtype="float64"),
        ],
        "Linear": [
            dict(in_features=7, out_features=3),
            dict(in_features=2, out_features=9, bias=False, dtype="float64"),
        ],
        "BatchNorm1d": [
            dict(num_features=5),
            dict(num_features=3, affine=False),
            dict(num_features=4, track_running_stats=False, dtype="float64"),
        ],
        "BatchNorm2d": [dict(num_features=6)],
        "SyncBatchNorm": [dict(num_features=4), dict(num_features=3, affine=False)],
        "MaxPool2d": [dict(kernel_size=2)],
        "AvgPool2d": [dict(kernel_size=2)],
        "AdaptiveAvgPool2d": [dict(output_size=2)],
        "GroupNorm": [
            dict(num_groups=2, num_channels=6),
            dict(num_groups=3, num_channels=3, affine=False, dtype="float64"),
        ],
        "LayerNorm": [
            dict(normalized_shape=[3, 4]),
            dict(normalized_shape=5, bias=False, dtype="float64"),
            dict(normalized_shape=[2], elementwise_affine=False),
        ],
        "InstanceNorm2d": [
            dict(num_features=4),
            dict(num_features=3, affine=True),
            dict(num_features=5, track_running_stats=True, dtype="float64"),
            dict(num_features=2, affine=True, track_running_stats=True),
        ],
        "Upsample": [dict(scale_factor=2)],
        "PixelShuffle": [dict(upscale_factor=2)],
        "PixelUnshuffle": [dict(downscale_factor=2)],
    }
    for name, cls in serialization._registry().items():
        if name in ("Sequential", "Model"):  # containers: their children own the arrays
            continue
        for config in configs.get(name, [{}]):
            layer = cls(**config)
            actual = sum(p.data.nbytes for _, p in layer.named_parameters())
            actual += sum(b.nbytes for _, b in layer.named_buffers())
            spec = {"class": name, "config": layer.get_config()}
            assert serialization._architecture_bytes(spec) == actual, (name, config)


def test_valid_models_still_load(saved):
    model = cnncore.load(saved)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), _model().eval()(x))


# ------------------------------------------------------------------------------------------
# Archive features cnncore never writes, damaged streams, absurd JSON
# ------------------------------------------------------------------------------------------


def _rewrite(src, dst, compression):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for n in zin.namelist():
            zout.writestr(n, zin.read(n))
    return dst


def _patch_headers(data, field_central, field_local, value):
    b = bytearray(data)
    for sig, at in ((b"PK\x01\x02", field_central), (b"PK\x03\x04", field_local)):
        if at is None:
            continue
        pos = b.find(sig)
        while pos != -1:
            struct.pack_into("<H", b, pos + at, value)
            pos = b.find(sig, pos + 4)
    return bytes(b)


@pytest.mark.parametrize(
    "how",
    ["method-99", "encrypted", "zip-version", "lzma", "bzip2", "lzma-corrupt", "deflate-corrupt"],
)
def test_archive_features_and_damage(saved, tmp_path, how):
    """Regression: unknown methods / zip versions raised NotImplementedError, encrypted
    members RuntimeError, damaged LZMA streams LZMAError."""
    bad = tmp_path / "bad.npz"
    if how == "method-99":
        bad.write_bytes(_patch_headers(saved.read_bytes(), 10, 8, 99))
    elif how == "encrypted":
        bad.write_bytes(_patch_headers(saved.read_bytes(), 8, 6, 1))
    elif how == "zip-version":
        bad.write_bytes(_patch_headers(saved.read_bytes(), 6, None, 223))
    elif how in ("lzma", "bzip2"):
        _rewrite(saved, bad, zipfile.ZIP_LZMA if how == "lzma" else zipfile.ZIP_BZIP2)
    else:
        method = zipfile.ZIP_LZMA if how == "lzma-corrupt" else zipfile.ZIP_DEFLATED
        _rewrite(saved, bad, method)
        data = bytearray(bad.read_bytes())
        at = data.find(b"param:4.weight.npy") + 40
        for k in range(at, at + 24):
            data[k] ^= 0x5A
        bad.write_bytes(bytes(data))
    _rejects_quickly(bad)


@pytest.mark.parametrize(
    "text",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"\xff\xfe",
        b'{"format": "cnncore.model", "version": 1, "model": 3}',
        b"null",
        b'"' + b"x" * 1000,
    ],
    ids=["deep-list", "deep-dict", "not-utf8", "model-int", "null", "string"],
)
def test_absurd_architecture_json(tmp_path, text):
    """Regression: deeply nested JSON raised RecursionError."""
    path = tmp_path / "json.npz"
    np.savez(path, __architecture__=np.frombuffer(text, np.uint8))
    _rejects_quickly(path)


def test_pickled_members_are_never_loaded(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    path = tmp_path / "p.npz"
    np.savez(
        path,
        __architecture__=np.array([{"model": 1}], dtype=object),
        **{"param:0.weight": np.array([object()], dtype=object)},
    )
    _rejects_quickly(path)


@pytest.mark.parametrize("seed", range(40))
def test_random_damage_of_a_saved_model(saved, tmp_path, seed):
    """Random truncation / byte flips / insertions: load() either returns a model (the damage
    hit nothing that matters, e.g. a zip comment) or raises ValueError."""
    rng = np.random.default_rng(seed)
    data = bytearray(saved.read_bytes())
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.integers(3)
        if kind == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 1 and data:
            for _ in range(int(rng.integers(1, 20))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
        else:
            at = int(rng.integers(len(data) + 1))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 40))).astype(np.uint8).tobytes()
    bad = tmp_path / "damaged.npz"
    bad.write_bytes(bytes(data))
    try:
        model = cnncore.load(bad)
    except ValueError as exc:
        assert BAD_MODEL in str(exc)
    else:
        assert isinstance(model, nn.Sequential)


# ------------------------------------------------------------------------------------------
# IDX files
# ------------------------------------------------------------------------------------------


def _idx(dims, code=0x08, payload=b""):
    return (
        bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload
    )


@pytest.mark.parametrize(
    "dims",
    [(0, 2**32 - 1, 2**32 - 1, 2**32 - 1), (2**32 - 1,) * 3, (1,) * 255, (1,) * 65],
    ids=["empty-overflow", "huge", "ndim255", "ndim65"],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_headers_numpy_cannot_represent(tmp_path, dims, gz):
    """Regression: an empty array whose other dimensions overflow, or more dimensions than
    NumPy supports, raised NumPy's own errors, not naming the file."""
    data = _idx(dims, payload=b"\0" if max(dims) == 1 else b"")
    path = tmp_path / ("f.idx.gz" if gz else "f.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="not a valid IDX file"):
            load_idx(path)
        assert tracemalloc.get_traced_memory()[1] < 16 * 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("seed", range(30))
def test_random_damage_of_an_idx_file(tmp_path, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    data = bytearray(_idx(arr.shape, payload=arr.tobytes()))
    if seed % 2:
        data = bytearray(gzip.compress(bytes(data)))
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.4:
            data = data[: int(rng.integers(0, len(data)))]
        elif data:
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    path = tmp_path / "d.idx"
    path.write_bytes(bytes(data))
    try:
        out = load_idx(path)
    except ValueError as exc:
        assert "not a valid IDX file" in str(exc)
    else:
        assert isinstance(out, np.ndarray)


def test_load_sample_never_unpickles(monkeypatch):
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    (x, y), _ = cnncore.datasets.load_sample()
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_saved_file_reads_without_pickle(saved):
    with np.load(saved, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
