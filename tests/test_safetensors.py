"""safetensors files: cnncore's reader/writer against the ``safetensors`` package (both
directions), model files (architecture in the metadata, tensors = the state_dict) moving
between cnncore and torch, and truncated/corrupted/crafted files."""

import json
import os
import tracemalloc

import numpy as np
import pytest

import cnncore
from cnncore import models, nn
from cnncore.apps.bench.twins import torch_twin
from cnncore.nn import safetensors_io


def _bn_model(dtype=np.float32):
    kw = dict(dtype=dtype, rng=0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, **kw),
        nn.BatchNorm2d(4, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 14 * 14, 10, **kw),
    )


def _trained_bn_model(dtype=np.float32):
    model = _bn_model(dtype)
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(dtype)
    model.train()
    model(x)
    model(x * 2 + 1)
    return model.eval()


MODELS = {
    "lenet5": lambda: models.lenet5(rng=0),
    "simple_cnn": lambda: models.simple_cnn(rng=0, dropout=0.25),
    "bn": _trained_bn_model,
    "bn-float64": lambda: _trained_bn_model(np.float64),
}


# --------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_round_trip(name, tmp_path):
    model = MODELS[name]()
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = cnncore.load(str(path))
    assert not loaded.training
    assert repr(loaded) == repr(model)
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(model.dtype)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_npz_still_the_default(tmp_path):
    model = models.lenet5(rng=0)
    model.save(tmp_path / "m.npz")
    model.save(tmp_path / "m.weights")  # any other suffix: npz as before
    for p in ("m.npz", "m.weights"):
        np.testing.assert_array_equal(
            cnncore.load(tmp_path / p)[0].weight.data, model[0].weight.data
        )
    model.save(tmp_path / "M.SafeTensors")  # the suffix is case-insensitive
    assert cnncore.load(tmp_path / "M.SafeTensors")[0].weight.data.tobytes() == (
        model[0].weight.data.tobytes()
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_cnncore_file_loads_into_torch(name, tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    model = MODELS[name]()
    path = tmp_path / "m.safetensors"
    model.save(path)
    twin = torch_twin(MODELS[name]())  # the architecture, other weights
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    twin.load_state_dict(st_torch.load_file(str(path)))
    twin.eval()
    x = np.random.default_rng(2).random((2, 1, 28, 28)).astype(model.dtype)
    with torch.no_grad():
        out = twin(torch.from_numpy(x)).numpy()
    tol = dict(rtol=1e-4, atol=1e-5) if model.dtype == np.float32 else dict(rtol=1e-10)
    np.testing.assert_allclose(out, model.predict(x), **tol)


def test_torch_file_loads_into_cnncore(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    model = _trained_bn_model()
    twin = torch_twin(model)
    twin.train()
    twin(torch.randn(4, 1, 28, 28))
    twin.eval()
    path = tmp_path / "torch.safetensors"
    st_torch.save_file(twin.state_dict(), str(path), metadata={"format": "pt"})
    fresh = _bn_model()
    fresh.load_state_dict(nn.load_safetensors(path))
    assert int(fresh[1]._buffers["num_batches_tracked"]) == 3
    x = np.random.default_rng(3).random((2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fresh.predict(x), expected, rtol=1e-4, atol=1e-5)
    # a weights-only file is not a model file: the message says what to do instead
    with pytest.raises(ValueError, match=r"torch\.safetensors.*load_state_dict"):
        cnncore.load(path)


def test_half_and_bfloat16_torch_weights(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    lin = torch.nn.Linear(3, 2)
    for dt in (torch.float16, torch.bfloat16):
        path = tmp_path / f"{dt}.safetensors".replace("torch.", "")
        st_torch.save_file({k: v.to(dt) for k, v in lin.state_dict().items()}, str(path))
        ours = nn.Linear(3, 2)
        ours.load_state_dict(nn.load_safetensors(path))
        np.testing.assert_array_equal(ours.weight.data, lin.weight.detach().to(dt).float().numpy())


# --------------------------------------------------------------------------------------------
# The format against the safetensors package
# --------------------------------------------------------------------------------------------


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": rng.standard_normal(5),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i64": np.array(7, np.int64),
        "i8": np.arange(-3, 3, dtype=np.int8),
        "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "i32": np.arange(4, dtype=np.int32),
        "u16": np.arange(3, dtype=np.uint16),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2)).astype(np.float32)),
        "bigendian": np.arange(4, dtype=">f4"),
    }


def test_our_files_read_by_the_package(tmp_path):
    st_np = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    path = tmp_path / "a.safetensors"
    safetensors_io.save_file(_arrays(), path, {"k": "v"})
    theirs = st_np.load_file(str(path))
    assert set(theirs) == set(_arrays())
    for k, v in _arrays().items():
        np.testing.assert_array_equal(theirs[k], v, err_msg=k)
        assert theirs[k].dtype == v.dtype.newbyteorder("="), k
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"k": "v"}
    assert os.path.getsize(path) % 1 == 0
    raw = path.read_bytes()
    assert int.from_bytes(raw[:8], "little") % 8 == 0  # header padded to 8 bytes


def test_package_files_read_by_us(tmp_path):
    st_np = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "b.safetensors"
    # (safetensors.numpy 0.8 writes Fortran-ordered arrays' bytes in memory order under a C
    # shape -- transposed -- and cannot write big-endian ones: give it C-ordered native ones)
    arrays = {k: v for k, v in _arrays().items() if k not in ("bigendian", "fortran")}
    st_np.save_file(arrays, str(path), metadata={"a": "b"})
    ours = safetensors_io.load_file(path)
    for k, v in arrays.items():
        np.testing.assert_array_equal(ours[k], v, err_msg=k)
        assert ours[k].dtype == v.dtype and ours[k].flags.writeable, k
    assert safetensors_io.read_header(path).metadata == {"a": "b"}


def test_save_file_rejects_what_the_format_cannot_hold(tmp_path):
    p = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="'c'"):
        safetensors_io.save_file({"c": np.zeros(2, complex)}, p)
    with pytest.raises(ValueError, match="__metadata__"):
        safetensors_io.save_file({"__metadata__": np.zeros(2)}, p)
    with pytest.raises(TypeError, match="metadata"):
        safetensors_io.save_file({"a": np.zeros(2)}, p, {"k": 1})
    with pytest.raises(TypeError, match="mapping"):
        safetensors_io.save_file([np.zeros(2)], p)


# --------------------------------------------------------------------------------------------
# Truncated, corrupted and crafted files
# --------------------------------------------------------------------------------------------


def _write(path, header, data=b"", pad=True):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _assert_rejected(path, match=None, loader=None):
    loader = loader or cnncore.load
    with pytest.raises(ValueError) as info:
        loader(path)
    assert os.fspath(path) in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)


def test_truncated_files(tmp_path):
    model = _trained_bn_model()
    good = tmp_path / "good.safetensors"
    model.save(good)
    raw = good.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    cuts = sorted({0, 3, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 5, len(raw) - 1})
    for cut in cuts:
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        _assert_rejected(bad)
        _assert_rejected(bad, loader=nn.load_safetensors)
    # and extra bytes after the data
    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(raw + b"\0" * 4)
    _assert_rejected(extra, "cover")


def test_corrupted_bytes_never_crash(tmp_path):
    """Flip bytes all over an intact file: each load either succeeds or raises ValueError
    naming the file."""
    model = _trained_bn_model()
    good = tmp_path / "good.safetensors"
    model.save(good)
    raw = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    n = int.from_bytes(raw[:8], "little")
    positions = (
        list(range(0, 8))
        + list(rng.integers(8, 8 + n, 60))
        + list(rng.integers(8 + n, len(raw), 10))
    )
    for i, pos in enumerate(positions):
        bad = bytearray(raw)
        bad[pos] ^= 0xFF if i % 2 else 0x01
        path = tmp_path / f"flip{i}.safetensors"
        path.write_bytes(bytes(bad))
        try:
            cnncore.load(path)
        except ValueError as exc:
            assert os.fspath(path) in str(exc)


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "header, data, match",
    [
        (b"[1, 2]", b"", "not a JSON object"),
        (b"{not json", b"", "not JSON"),
        (b'{"a": ' * 5000 + b"1" + b"}" * 5000, b"", "not"),
        (b"\xff\xfe{}", b"", "not JSON"),
        (
            b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": 1}',
            b"",
            "duplicate",
        ),
        ({"a": {**F32, "dtype": "F8_E4M3"}}, b"\0" * 8, "unsupported dtype"),
        ({"a": {**F32, "dtype": 3}}, b"\0" * 8, "unsupported dtype"),
        ({"a": {**F32, "shape": [-2]}}, b"\0" * 8, "shape"),
        ({"a": {**F32, "shape": [2.0]}}, b"\0" * 8, "shape"),
        ({"a": {**F32, "shape": "2"}}, b"\0" * 8, "shape"),
        ({"a": {**F32, "shape": [2**40, 2**40]}}, b"\0" * 8, "needs"),
        ({"a": {**F32, "data_offsets": [0, 2**62]}}, b"\0" * 8, "data_offsets"),
        ({"a": {**F32, "data_offsets": [8, 0]}}, b"\0" * 8, "data_offsets"),
        ({"a": {**F32, "data_offsets": [0, True]}}, b"\0" * 8, "data_offsets"),
        ({"a": {**F32, "data_offsets": [0]}}, b"\0" * 8, "data_offsets"),
        ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "entry must have"),
        ({"a": [1, 2]}, b"\0" * 8, "entry must have"),
        ({"a": F32, "b": F32}, b"\0" * 8, "starts at byte"),  # overlap
        ({"a": {**F32, "data_offsets": [4, 12]}}, b"\0" * 12, "starts at byte"),  # gap
        ({"a": F32}, b"\0" * 12, "cover"),  # trailing bytes
        ({"__metadata__": {"k": 1}, "a": F32}, b"\0" * 8, "__metadata__"),
        ({"__metadata__": [1], "a": F32}, b"\0" * 8, "__metadata__"),
    ],
)
def test_crafted_headers(tmp_path, header, data, match):
    path = _write(tmp_path / "crafted.safetensors", header, data)
    _assert_rejected(path, match, loader=nn.load_safetensors)


def test_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "len.safetensors"
    for n in (2**63, 2**64 - 1, 10_000):
        path.write_bytes(n.to_bytes(8, "little") + b"{}")
        _assert_rejected(path, "header length", loader=nn.load_safetensors)


def _model_file(tmp_path, spec, tensors, name="m.safetensors", **meta):
    metadata = {
        "cnncore.format": "cnncore.model",
        "cnncore.version": "1",
        "cnncore.architecture": spec if isinstance(spec, str) else json.dumps(spec),
        **meta,
    }
    path = tmp_path / name
    safetensors_io.save_file(tensors, path, metadata)
    return path


LINEAR = {"class": "Linear", "config": {"in_features": 2, "out_features": 3}}
LINEAR_T = {"weight": np.zeros((3, 2), np.float32), "bias": np.zeros(3, np.float32)}


def test_crafted_architectures(tmp_path):
    # a giant layer with a few bytes of tensors: refused before anything is allocated
    giant = {"class": "Linear", "config": {"in_features": 100_000, "out_features": 100_000}}
    path = _model_file(tmp_path, giant, LINEAR_T)
    tracemalloc.start()
    try:
        _assert_rejected(path, "needs")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    cases = [
        ({"class": "os.system", "config": {}}, LINEAR_T, "unknown layer class"),
        ("{bad json", LINEAR_T, "not JSON"),
        ({"class": "Linear", "config": {"in_features": -1}}, LINEAR_T, "invalid config"),
        ({"class": "Sequential", "layers": [LINEAR, "x"]}, LINEAR_T, "malformed"),
        (LINEAR, {"weight": LINEAR_T["weight"]}, "needs 36 bytes"),
        (LINEAR, {**LINEAR_T, "bias": None} | {"bias_": LINEAR_T["bias"]}, "missing ['bias']"),
        (LINEAR, {**LINEAR_T, "extra": np.zeros(1, np.float32)}, "unexpected"),
        (LINEAR, {**LINEAR_T, "weight": np.zeros((2, 3), np.float32)}, "shape"),
        (LINEAR, {**LINEAR_T, "weight": np.zeros((3, 2), np.float64)}, "dtype"),
    ]
    for i, (spec, tensors, match) in enumerate(cases):
        tensors = {k: v for k, v in tensors.items() if v is not None}
        _assert_rejected(_model_file(tmp_path, spec, tensors, f"c{i}.safetensors"), match)
    tags = [
        ({"cnncore.format": "other"}, "format tag"),
        ({"cnncore.version": "99"}, "version"),
    ]
    for i, (meta, match) in enumerate(tags):
        _assert_rejected(
            _model_file(tmp_path, LINEAR, LINEAR_T, f"t{i}.safetensors", **meta), match
        )


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        cnncore.load(tmp_path / "nope.safetensors")
