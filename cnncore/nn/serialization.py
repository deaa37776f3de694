"""Save and load models as ``.npz`` or ``.safetensors`` files (chosen by the suffix): the
architecture as JSON plus one array per parameter/buffer.

No pickle anywhere: a file names module classes, which are looked up in the registry that
every :class:`~cnncore.nn.Module` subclass joins when it is defined (see the Module
docstring), and rebuilt from JSON constructor arguments -- nothing is imported or executed
from the file.  Every array header is checked against the archive, and the architecture's
parameter bytes against the archive's, before anything is read or allocated.  This module
imports no layer or model: built-in and user-defined classes are found the same way.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import math
import os
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from .._typing import PathLike
from . import safetensors_io
from .module import Module, is_container, registered_modules, registered_name
from .state import named_state

FORMAT = "cnncore.model"
VERSION = 1
_ARCH_KEY = "__architecture__"
_MAX_ARCH_BYTES = 1 << 20
_SAFETENSORS_SUFFIX = ".safetensors"
# The metadata keys of a .safetensors model file (values are str, as the format requires).
_ST_FORMAT, _ST_VERSION, _ST_ARCH = "cnncore.format", "cnncore.version", "cnncore.architecture"
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


def _registry() -> dict[str, type[Module]]:
    """cnncore's own registered module classes (those whose :meth:`Module.config_nbytes` is
    exact; tests check it)."""
    return {
        name: cls
        for name, cls in registered_modules().items()
        if cls.__module__.startswith("cnncore.")
    }


def _spec(module: Module) -> dict[str, Any]:
    """The architecture entry of ``module``: its registry name, its config and, for a
    container, its children's entries."""
    cls = type(module)
    name = registered_name(cls)
    if name is None:
        raise ValueError(
            f"save(): only registered modules can be saved (a class defined with "
            f"register=False is not). Received: a layer of type {cls.__name__}"
        )
    config = module.get_config()
    if not is_container(cls):
        return {"class": name, "config": config}
    spec: dict[str, Any] = {"class": name, "layers": [_spec(c) for c in module.children()]}
    if config:
        spec["config"] = config
    return spec


def architecture(model: Module) -> dict[str, Any]:
    """The ``__architecture__`` document of ``model``: format, version and its modules'
    registry names and configs (what :func:`build_model` rebuilds it from)."""
    return {"format": FORMAT, "version": VERSION, "model": _spec(model)}


def json_array(doc: Any) -> np.ndarray:
    """A JSON document as the uint8 array an archive stores it in (read back with
    :meth:`Archive.read_json`)."""
    return np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)


def model_arrays(model: Module) -> dict[str, np.ndarray]:
    """``param:<name>`` and ``buffer:<name>`` arrays of ``model`` (views, not copies)."""
    arrays = {f"param:{name}": p.data for name, p in model.named_parameters()}
    arrays.update({f"buffer:{name}": b for name, b in model.named_buffers()})
    return arrays


def write_npz(path: PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz``, atomically.

    The archive goes to a temporary file in the destination's directory, which is flushed
    and fsync'ed, then renamed over ``path`` (``os.replace``, atomic on POSIX and Windows),
    and the directory is fsync'ed: a process killed at any moment leaves either the old
    file or the new one, never a truncated one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _is_safetensors(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(_SAFETENSORS_SUFFIX)


def save(model: Module, path: PathLike) -> None:
    """Write ``model`` (a :class:`~cnncore.nn.Sequential`, or any registered module) to
    ``path``: ``.safetensors`` if its name ends so, else ``.npz`` (written atomically, see
    :func:`write_npz`).

    An ``.npz`` file holds ``__architecture__`` (UTF-8 JSON: format, version, the modules'
    registry names and constructor arguments, containers' ``layers``) and ``param:<name>`` /
    ``buffer:<name>`` arrays.

    A ``.safetensors`` file holds the :meth:`~cnncore.nn.Module.state_dict` (PyTorch's key
    names and layouts, so ``safetensors.torch.load_file`` + ``load_state_dict`` loads it
    into the equivalent torch model) and, in its ``__metadata__``, ``cnncore.format``,
    ``cnncore.version`` and ``cnncore.architecture`` (the JSON above).
    """
    if _is_safetensors(path):
        metadata = {
            _ST_FORMAT: FORMAT,
            _ST_VERSION: str(VERSION),
            _ST_ARCH: json.dumps(_spec(model)),
        }
        safetensors_io.save_file(model.state_dict(), path, metadata)
        return
    arrays = {_ARCH_KEY: json_array(architecture(model)), **model_arrays(model)}
    write_npz(path, arrays)


class _Source:
    """A file being read, and how its errors are worded: ``func(): PATH is not a valid
    cnncore WHAT: why``."""

    def __init__(self, path: PathLike, func: str = "load", what: str = "model file") -> None:
        self.path, self.func, self.what = os.fspath(path), func, what

    def __fspath__(self) -> str:
        return self.path


def _bad(path: PathLike, why: str) -> ValueError:
    src = path if isinstance(path, _Source) else _Source(path)
    return ValueError(f"{src.func}(): {src.path!s} is not a valid cnncore {src.what}: {why}")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: PathLike) -> np.ndarray:
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


def _check_members(zf: zipfile.ZipFile, path: PathLike) -> None:
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


def _architecture_bytes(spec: Any, depth: int = 0) -> int:
    """Parameter and buffer bytes the architecture would allocate, from the configs alone
    (:meth:`Module.config_nbytes`; unknown classes and malformed entries count 0, ``_build``
    rejects them)."""
    if depth > 32 or not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        return 0
    cls = registered_modules().get(spec["class"])
    if cls is None:
        return 0
    config = spec.get("config", {})
    total = cls.config_nbytes(config) if isinstance(config, dict) else 0
    children = spec.get("layers")
    if is_container(cls) and isinstance(children, list):
        total += sum(_architecture_bytes(c, depth + 1) for c in children)
    return total


def _own_nbytes(module: Module) -> int:
    return sum(p.data.nbytes for p in module._params.values()) + sum(
        b.nbytes for b in module._buffers.values()
    )


def _build(spec: Any, path: PathLike, budget: list[int], depth: int = 0) -> Module:
    """Rebuild the module of an architecture entry through the registry.  ``budget[0]``, the
    archive's array bytes not yet claimed, is charged each module's arrays as soon as it is
    built: this bounds what a module without an exact :meth:`Module.config_nbytes` (a user
    class) can make ``load`` allocate."""
    if depth > 32 or not isinstance(spec, dict) or not isinstance(spec.get("class"), str):
        raise _bad(path, f"malformed layer entry {str(spec)[:80]!r}")
    name = spec["class"]
    cls = registered_modules().get(name)
    if cls is None:
        raise _bad(path, f"unknown layer class {name!r} (only registered modules are loaded)")
    children: list[Module] = []
    if is_container(cls):
        specs = spec.get("layers")
        if not isinstance(specs, list):
            raise _bad(path, f"{name} entry without a 'layers' list")
        children = [_build(c, path, budget, depth + 1) for c in specs]
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise _bad(path, f"config of {name} is not an object")
    try:
        module = cls.from_config(config, children)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"invalid config for {name}: {exc}") from None
    if not isinstance(module, cls):
        raise _bad(path, f"{name}.from_config() did not return a {name}")
    budget[0] -= _own_nbytes(module)
    if budget[0] < 0:
        raise _bad(path, f"{name} allocates more bytes of parameters than the archive holds")
    return module


class Archive:
    """A cnncore ``.npz`` opened for safe reading (what :func:`load` and
    :func:`cnncore.load_checkpoint` read through): every member's declared size is checked
    against the bytes present, each array header against its member, before anything is
    read; nothing is unpickled. Use as a context manager; errors are ValueErrors worded
    ``func(): PATH is not a valid cnncore WHAT: ...``.
    """

    def __init__(self, path: PathLike, func: str = "load", what: str = "model file") -> None:
        self.src = _Source(path, func, what)
        if not os.path.exists(self.src.path):
            raise FileNotFoundError(f"{func}(): no such file: {self.src.path!s}")
        try:
            self._zf = zipfile.ZipFile(self.src.path)
        except (*_ARCHIVE_ERRORS, ValueError) as exc:
            raise _bad(self.src, f"not an .npz archive ({exc})") from None
        try:
            _check_members(self._zf, self.src)
        except _ARCHIVE_ERRORS as exc:
            self._zf.close()
            raise _bad(self.src, f"corrupted archive ({type(exc).__name__}: {exc})") from None
        except BaseException:
            self._zf.close()
            raise
        self.members = {
            info.filename[:-4]: info
            for info in self._zf.infolist()
            if info.filename.endswith(".npy")
        }

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._zf.close()
        if exc_type is not None and issubclass(exc_type, _ARCHIVE_ERRORS):
            raise _bad(self.src, f"corrupted archive ({exc_type.__name__}: {exc})") from None

    def bad(self, why: str) -> ValueError:
        return _bad(self.src, why)

    def read(self, key: str) -> np.ndarray:
        """The array ``key`` (header checked against the member's size first)."""
        if key not in self.members:
            raise self.bad(f"no {key!r} entry")
        return _read_member(self._zf, self.members[key], self.src)

    def read_json(self, key: str, max_bytes: int = _MAX_ARCH_BYTES) -> Any:
        """The UTF-8 JSON document stored as the uint8 array ``key``."""
        if key not in self.members:
            raise self.bad(f"no {key} entry")
        if self.members[key].file_size > max_bytes:
            raise self.bad(f"{key} entry too large")
        raw = self.read(key)
        try:
            return json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self.bad(f"{key} is not JSON ({exc})") from None

    def array_bytes(self, prefixes: tuple[str, ...] = ("param:", "buffer:")) -> int:
        """Declared bytes of the members whose names start with one of ``prefixes``."""
        return sum(info.file_size for key, info in self.members.items() if key.startswith(prefixes))

    def build_model(self) -> Module:
        """The module of the ``__architecture__`` entry, built through the registry, with
        its parameters as initialized (restore them with :meth:`restore_model`). What it
        may allocate is bounded by the bytes of ``param:``/``buffer:`` arrays present."""
        arch = self.read_json(_ARCH_KEY)
        if not isinstance(arch, dict) or arch.get("format") != FORMAT:
            raise self.bad("wrong format tag")
        if arch.get("version") != VERSION:
            raise self.bad(f"unsupported version {arch.get('version')!r}")
        # Bound what the layers will allocate by the array bytes really in the archive,
        # before any layer is built (a crafted config could ask for a giant Linear).
        need = _architecture_bytes(arch.get("model"))
        have = self.array_bytes()
        if need > have:
            raise self.bad(
                f"the architecture needs {need} bytes of parameters but the "
                f"archive holds only {have} bytes of arrays"
            )
        return _build(arch.get("model"), self.src, [have])

    def model_arrays(self, model: Module) -> dict[str, np.ndarray]:
        """The stored ``param:``/``buffer:`` arrays of ``model``, checked: exactly its names,
        shapes and dtypes (nothing of ``model`` changes)."""
        expected = model_arrays(model)
        stored = {k for k in self.members if k.startswith(("param:", "buffer:"))}
        if stored != set(expected):
            missing = sorted(set(expected) - stored)
            extra = sorted(stored - set(expected))
            raise self.bad(
                f"arrays do not match the architecture (missing {missing[:5]}, "
                f"unexpected {extra[:5]})"
            )
        out = {}
        for key, target in expected.items():
            arr = self.read(key)
            if arr.shape != target.shape or arr.dtype != target.dtype:
                raise self.bad(
                    f"{key} has shape {arr.shape} and dtype {arr.dtype}, "
                    f"expected {target.shape} and {target.dtype}"
                )
            out[key] = arr
        return out


def copy_model_arrays(model: Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy checked arrays (from :meth:`Archive.model_arrays`) into ``model`` in place."""
    targets = model_arrays(model)
    for key, arr in arrays.items():
        targets[key][...] = arr


def _load_safetensors(path: PathLike) -> Module:
    """:func:`load` for a ``.safetensors`` file written by :func:`save`."""
    try:
        header = safetensors_io.read_header(path)
    except ValueError as exc:
        raise ValueError(f"load(): {exc}") from None
    meta = header.metadata
    if _ST_ARCH not in meta:
        raise _bad(
            path,
            "its metadata holds no cnncore architecture (a weights-only file, e.g. from "
            "safetensors.torch.save_file): build the model and call "
            "model.load_state_dict(cnncore.nn.load_safetensors(path))",
        )
    if meta.get(_ST_FORMAT) != FORMAT:
        raise _bad(path, "wrong format tag")
    if meta.get(_ST_VERSION) != str(VERSION):
        raise _bad(path, f"unsupported version {meta.get(_ST_VERSION)!r}")
    if len(meta[_ST_ARCH]) > _MAX_ARCH_BYTES:
        raise _bad(path, "architecture entry too large")
    try:
        spec = json.loads(meta[_ST_ARCH])
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"architecture is not JSON ({exc})") from None
    have = header.data_bytes
    need = _architecture_bytes(spec)
    if need > have:
        raise _bad(
            path,
            f"the architecture needs {need} bytes of parameters but the file holds only "
            f"{have} bytes of tensors",
        )
    model = _build(spec, path, [have])
    expected = dict(named_state(model))
    stored = header.tensors
    if set(stored) != set(expected):
        missing = sorted(set(expected) - set(stored))
        extra = sorted(set(stored) - set(expected))
        raise _bad(
            path,
            f"tensors do not match the architecture (missing {missing[:5]}, "
            f"unexpected {extra[:5]})",
        )
    for key, target in expected.items():
        dtype, shape, _, _ = stored[key]
        if shape != target.shape or safetensors_io.DTYPES[dtype] != target.dtype:
            raise _bad(
                path,
                f"{key} has shape {shape} and dtype {dtype}, expected {target.shape} "
                f"and {target.dtype}",
            )
    try:
        arrays = safetensors_io.load_file(path, header)
    except ValueError as exc:
        raise ValueError(f"load(): {exc}") from None
    for key, target in expected.items():
        target[...] = arrays[key]
    model.eval()
    return model


def load(path: PathLike) -> Module:
    """Load a model written by :meth:`Sequential.save` (or :func:`save`), in eval mode:
    ``.safetensors`` if the name ends so (the metadata must hold a cnncore architecture),
    else ``.npz``.

    The file's module classes are looked up in the registry of :class:`~cnncore.nn.Module`
    subclasses: cnncore's layers, and user-defined modules whose class is defined before
    ``load`` is called and whose config round-trips (see the Module docstring).

    Raises
    ------
    ValueError
        For anything that is not an intact cnncore model file: not a zip/npz, truncated or
        corrupted, members that are encrypted or neither stored nor deflated (cnncore writes
        stored members), unknown (unregistered) layer classes, a layer config whose
        parameters would need more bytes than the archive's arrays hold (checked before any
        layer is built, and again as each is built), arrays missing, extra, of the wrong
        shape or dtype.
    FileNotFoundError
        If ``path`` does not exist.
    """
    if not os.path.exists(os.fspath(path)):
        raise FileNotFoundError(f"load(): no such file: {os.fspath(path)!s}")
    if _is_safetensors(path):
        return _load_safetensors(path)
    with Archive(path) as ar:
        if _ARCH_KEY not in ar.members:
            raise ar.bad("no __architecture__ entry")
        extra = sorted(
            k for k in ar.members if k != _ARCH_KEY and not k.startswith(("param:", "buffer:"))
        )
        if "__checkpoint__" in extra:
            raise ar.bad(
                "it is a training checkpoint: read it with cnncore.load_checkpoint(path) "
                "(its .model is the model)"
            )
        if extra:
            raise ar.bad(f"arrays do not match the architecture (unexpected {extra[:5]})")
        model = ar.build_model()
        copy_model_arrays(model, ar.model_arrays(model))
    model.eval()
    return model
