"""Save and load models as ``.npz`` files: the architecture as JSON plus one array per
parameter/buffer. No pickle anywhere: only known cnncore layers are rebuilt, and every array
header is checked against the archive before anything is read or allocated."""

from __future__ import annotations

import json
import lzma
import math
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from .module import Module

FORMAT = "cnncore.model"
VERSION = 1
_ARCH_KEY = "__architecture__"
_MAX_ARCH_BYTES = 1 << 20
# DEFLATE cannot expand data by more than ~1032:1; np.savez / np.savez_compressed write only
# stored or deflated members, so a member's declared size is backed by real archive bytes.
_DEFLATE_MAX_RATIO = 1032
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Everything zipfile / zlib / lzma raise on damaged archives (NotImplementedError: unknown zip
# version or method; RuntimeError: encrypted member; RecursionError: absurdly nested JSON).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    EOFError,
    OSError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
)


def _registry() -> dict[str, type]:
    from . import activation, layers, sequential

    classes = {}
    for mod in (layers, activation):
        for name in mod.__all__:
            cls = getattr(mod, name)
            if isinstance(cls, type) and issubclass(cls, Module):
                classes[name] = cls
    classes["Sequential"] = sequential.Sequential
    return classes


def _spec(layer: Module) -> dict[str, Any]:
    from .sequential import Sequential

    name = type(layer).__name__
    if name not in _registry():
        raise ValueError(
            f"save(): only cnncore's own layers can be saved. Received: a layer of type {name}"
        )
    if isinstance(layer, Sequential):
        return {"class": "Sequential", "layers": [_spec(child) for child in layer.layers]}
    return {"class": name, "config": layer.get_config()}


def save(model: Module, path: Any) -> None:
    """Write ``model`` (a Sequential of cnncore layers) to ``path`` (``.npz``).

    The file holds ``__architecture__`` (UTF-8 JSON: format, version, layer classes and
    their constructor arguments) and ``param:<name>`` / ``buffer:<name>`` arrays.
    """
    arch = {"format": FORMAT, "version": VERSION, "model": _spec(model)}
    arrays = {_ARCH_KEY: np.frombuffer(json.dumps(arch).encode("utf-8"), dtype=np.uint8)}
    for name, p in model.named_parameters():
        arrays[f"param:{name}"] = p.data
    for name, b in model.named_buffers():
        arrays[f"buffer:{name}"] = b
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _bad(path: Any, why: str) -> ValueError:
    return ValueError(f"load(): {os.fspath(path)!s} is not a valid cnncore model file: {why}")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Any) -> np.ndarray:
    """Read one ``.npy`` member after checking its header against its size."""
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as exc:
            raise _bad(path, f"member {info.filename!r}: {exc}") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise _bad(path, f"member {info.filename!r} has dtype {dtype}")
        header_len = f.tell()
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - header_len:
            raise _bad(
                path,
                f"member {info.filename!r} declares shape {shape} ({nbytes} bytes) "
                f"but holds {info.file_size - header_len} bytes",
            )
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise _bad(path, f"member {info.filename!r} is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _check_members(zf: zipfile.ZipFile, path: Any) -> None:
    """Every member is stored or deflated, unencrypted, and its declared size is backed by
    bytes really present in the file (so sizes can be trusted before anything is read)."""
    file_size = os.path.getsize(os.fspath(path))
    for info in zf.infolist():
        name = info.filename
        if info.flag_bits & 0x1:
            raise _bad(path, f"member {name!r} is encrypted")
        if info.compress_type not in _COMPRESSIONS:
            raise _bad(
                path,
                f"member {name!r} uses an unsupported compression method ({info.compress_type})",
            )
        stored = info.compress_type == zipfile.ZIP_STORED
        limit = info.compress_size if stored else _DEFLATE_MAX_RATIO * info.compress_size + 1024
        if info.compress_size > file_size or info.file_size > limit:
            raise _bad(
                path,
                f"member {name!r} declares {info.file_size} bytes, more than its "
                f"{info.compress_size} stored bytes can hold",
            )


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _parameter_bytes(name: str, config: dict) -> int:
    """Bytes of the parameters and buffers ``registry[name](**config)`` allocates, computed
    from the config alone (0 when the config is invalid: the constructor rejects it before
    allocating).  Must list every layer class that owns arrays (tests check this)."""
    itemsize = {"float32": 4, "float64": 8}.get(config.get("dtype", "float32"), 8)
    if name == "Linear":
        i, o = _positive_int(config.get("in_features")), _positive_int(config.get("out_features"))
        if i is None or o is None:
            return 0
        return (o * i + (o if config.get("bias", True) else 0)) * itemsize
    if name == "Conv2d":
        i, o = _positive_int(config.get("in_channels")), _positive_int(config.get("out_channels"))
        groups = _positive_int(config.get("groups", 1))
        k = config.get("kernel_size")
        kh, kw = (k, k) if not isinstance(k, list) else (k + [None, None])[:2]
        kh, kw = _positive_int(kh), _positive_int(kw)
        if None in (i, o, groups, kh, kw):
            return 0
        return (o * (i // groups) * kh * kw + (o if config.get("bias", True) else 0)) * itemsize
    if name in ("BatchNorm1d", "BatchNorm2d"):
        c = _positive_int(config.get("num_features"))
        if c is None:
            return 0
        total = 2 * c * itemsize if config.get("affine", True) else 0
        if config.get("track_running_stats", True):
            total += 2 * c * itemsize + 8
        return total
    return 0


def _architecture_bytes(spec: Any, depth: int = 0) -> int:
    """Parameter bytes the architecture would allocate (see :func:`_parameter_bytes`)."""
    if depth > 32 or not isinstance(spec, dict):
        return 0
    if spec.get("class") == "Sequential":
        layers = spec.get("layers")
        return (
            sum(_architecture_bytes(c, depth + 1) for c in layers)
            if isinstance(layers, list)
            else 0
        )
    config = spec.get("config", {})
    return _parameter_bytes(spec.get("class"), config) if isinstance(config, dict) else 0


def _build(spec: Any, path: Any, depth: int = 0) -> Module:
    from .sequential import Sequential

    if depth > 32 or not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise _bad(path, f"malformed layer entry {str(spec)[:80]!r}")
    name = spec["class"]
    registry = _registry()
    if name not in registry:
        raise _bad(path, f"unknown layer class {name!r} (only cnncore layers are loaded)")
    if name == "Sequential":
        children = spec.get("layers")
        if not isinstance(children, list):
            raise _bad(path, "Sequential entry without a 'layers' list")
        return Sequential(*(_build(c, path, depth + 1) for c in children))
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise _bad(path, f"config of {name} is not an object")
    try:
        return registry[name](**config)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"invalid config for {name}: {exc}") from None


def load(path: Any) -> Module:
    """Load a model written by :meth:`Sequential.save`.

    Raises
    ------
    ValueError
        For anything that is not an intact cnncore model file: not a zip/npz, truncated or
        corrupted, members that are encrypted or neither stored nor deflated (cnncore writes
        stored members), unknown layer classes, a layer config whose parameters would need
        more bytes than the archive's arrays hold (checked before any layer is built), arrays
        missing, extra, of the wrong shape or dtype.
    FileNotFoundError
        If ``path`` does not exist.
    """
    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"load(): no such file: {os.fspath(path)!s}")
    try:
        zf = zipfile.ZipFile(os.fspath(path))
    except (*_ARCHIVE_ERRORS, ValueError) as exc:
        raise _bad(path, f"not an .npz archive ({exc})") from None
    with zf:
        try:
            _check_members(zf, path)
            members = {
                info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")
            }
            if _ARCH_KEY not in members:
                raise _bad(path, "no __architecture__ entry")
            if members[_ARCH_KEY].file_size > _MAX_ARCH_BYTES:
                raise _bad(path, "architecture entry too large")
            raw = _read_member(zf, members[_ARCH_KEY], path)
            try:
                arch = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise _bad(path, f"architecture is not JSON ({exc})") from None
            if not isinstance(arch, dict) or arch.get("format") != FORMAT:
                raise _bad(path, "wrong format tag")
            if arch.get("version") != VERSION:
                raise _bad(path, f"unsupported version {arch.get('version')!r}")
            # Bound what the layers will allocate by the array bytes really in the archive,
            # before any layer is built (a crafted config could ask for a giant Linear).
            need = _architecture_bytes(arch.get("model"))
            have = sum(info.file_size for key, info in members.items() if key != _ARCH_KEY)
            if need > have:
                raise _bad(
                    path,
                    f"the architecture needs {need} bytes of parameters but the "
                    f"archive holds only {have} bytes of arrays",
                )
            model = _build(arch.get("model"), path)
            expected: dict[str, np.ndarray] = {}
            for name, p in model.named_parameters():
                expected[f"param:{name}"] = p.data
            for name, b in model.named_buffers():
                expected[f"buffer:{name}"] = b
            stored = set(members) - {_ARCH_KEY}
            if stored != set(expected):
                missing = sorted(set(expected) - stored)
                extra = sorted(stored - set(expected))
                raise _bad(
                    path,
                    f"arrays do not match the architecture (missing {missing[:5]}, "
                    f"unexpected {extra[:5]})",
                )
            for key, target in expected.items():
                arr = _read_member(zf, members[key], path)
                if arr.shape != target.shape or arr.dtype != target.dtype:
                    raise _bad(
                        path,
                        f"{key} has shape {arr.shape} and dtype {arr.dtype}, "
                        f"expected {target.shape} and {target.dtype}",
                    )
                target[...] = arr
        except _ARCHIVE_ERRORS as exc:
            raise _bad(path, f"corrupted archive ({type(exc).__name__}: {exc})") from None
    model.eval()
    return model
