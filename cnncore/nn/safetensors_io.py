"""Read and write the safetensors format (Hugging Face's pickle-free tensor files) with
NumPy alone.

The format: 8 bytes, the little-endian length ``L`` of a header; ``L`` bytes of UTF-8 JSON
(padded with spaces), mapping each tensor name to ``{"dtype", "shape", "data_offsets":
[begin, end]}`` and the optional ``"__metadata__"`` to a str -> str dict; then the raw
little-endian tensor bytes, ``data_offsets`` counted from the end of the header.  Files
written here are read by the ``safetensors`` package (``safetensors.numpy.load_file``,
``safetensors.torch.load_file``) and files written by it are read here; the tests check
both directions against the package.

Reading checks the whole header before allocating anything: the header length against the
file's, every tensor's byte range against its dtype and shape and against the data really
present, the ranges tiling the data exactly (as the reference implementation requires) --
so a truncated, corrupted or crafted file raises ValueError naming the file instead of
reading past its end or allocating what it claims.  Nothing is ever unpickled or executed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._typing import ArrayLike, PathLike

__all__ = ["save_file", "load_file", "read_header", "SafetensorsHeader", "DTYPES"]

#: safetensors dtype name -> NumPy dtype (little-endian).  ``BF16`` is read as float32 (NumPy
#: has no bfloat16; the conversion is exact); the 8-bit float formats are not supported.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on reading
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_NAMES = {dt: name for name, dt in DTYPES.items() if name != "BF16"}

#: The reference implementation refuses headers above 100 MB; so does this reader.
MAX_HEADER_BYTES = 100_000_000
_METADATA = "__metadata__"


class SafetensorsHeader:
    """A checked header: ``metadata`` (str -> str), ``tensors`` (name -> (dtype name, shape,
    begin, end) in file order) and ``data_start``, the file offset of the data."""

    def __init__(
        self,
        metadata: dict[str, str],
        tensors: dict[str, tuple[str, tuple[int, ...], int, int]],
        data_start: int,
    ) -> None:
        self.metadata = metadata
        self.tensors = tensors
        self.data_start = data_start

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data in the file."""
        return max((end for *_, end in self.tensors.values()), default=0)


def _bad(path: PathLike, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!s} is not a valid safetensors file: {why}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path: PathLike) -> SafetensorsHeader:
    """Read and check the header of the safetensors file ``path`` (no tensor is read).

    Raises
    ------
    ValueError
        If the file is not an intact safetensors file (see the module docstring).
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"the file holds {size} bytes, fewer than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise _bad(path, f"the header length {n} exceeds the {size - 8} bytes after it")
        if n > MAX_HEADER_BYTES:
            raise _bad(path, f"the header length {n} exceeds {MAX_HEADER_BYTES} bytes")
        raw = f.read(n)
    if len(raw) != n:
        raise _bad(path, "the file is truncated inside the header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    metadata = header.pop(_METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _bad(path, "__metadata__ must map strings to strings")
    data_len = size - 8 - n
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"tensor {name!r}: entry must have dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _bad(
                path,
                f"tensor {name!r}: unsupported dtype {dtype!r} (supported: {sorted(DTYPES)})",
            )
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _bad(path, f"tensor {name!r}: shape must be a list of sizes >= 0: {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            raise _bad(
                path,
                f"tensor {name!r}: data_offsets {offsets!r} are not a range within the "
                f"{data_len} bytes of data",
            )
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise _bad(
                path,
                f"tensor {name!r}: {dtype} of shape {tuple(shape)} needs {nbytes} bytes, "
                f"data_offsets {offsets} give {offsets[1] - offsets[0]}",
            )
        tensors[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    # The tensors must tile the data exactly, in order (the reference reader's rule): no
    # overlaps, no gaps, no trailing bytes.
    end = 0
    for name, (_, _, begin, stop) in sorted(tensors.items(), key=lambda kv: kv[1][2:]):
        if begin != end:
            raise _bad(path, f"tensor {name!r} starts at byte {begin}, expected {end}")
        end = stop
    if end != data_len:
        raise _bad(path, f"the tensors cover {end} bytes of data but the file holds {data_len}")
    return SafetensorsHeader(metadata, tensors, 8 + n)


def load_file(path: PathLike, header: SafetensorsHeader | None = None) -> dict[str, np.ndarray]:
    """The tensors of the safetensors file ``path`` as NumPy arrays (native byte order,
    ``BF16`` widened to float32), in file order.  Like ``safetensors.numpy.load_file``.

    ``header`` (from :func:`read_header`) skips reading the header again.

    Raises
    ------
    ValueError
        If the file is not an intact safetensors file.
    """
    if header is None:
        header = read_header(path)
    out: dict[str, np.ndarray] = {}
    with open(os.fspath(path), "rb") as f:
        for name, (dtype, shape, begin, end) in header.tensors.items():
            f.seek(header.data_start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:  # the file shrank since the header was read
                raise _bad(path, f"tensor {name!r} is truncated")
            arr = np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape)
            if dtype == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return out


def save_file(
    tensors: Mapping[str, ArrayLike], path: PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (name -> array) to ``path`` in the safetensors format, with the
    optional str -> str ``metadata``.  Like ``safetensors.numpy.save_file``: the data are
    laid out by decreasing item size (then name), so every tensor is aligned to its item
    size, and the header is padded to a multiple of 8 bytes.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(
            f"save_file(): tensors must be a mapping of name -> array. Received: "
            f"{type(tensors).__name__}"
        )
    if metadata is not None and not (
        isinstance(metadata, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise TypeError(f"save_file(): metadata must map str to str. Received: {metadata!r:.200}")
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == _METADATA:
            raise ValueError(
                f"save_file(): tensor names must be str other than '__metadata__'. "
                f"Received: {name!r}"
            )
        arr = np.asarray(value)
        key = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if key not in _NAMES:
            raise TypeError(
                f"save_file(): tensor {name!r} has dtype {arr.dtype}, which safetensors cannot hold"
            )
        arrays[name] = np.asarray(arr, dtype=key, order="C")  # (keeps 0-d arrays 0-d)
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA] = dict(metadata)
    offset = 0
    for name in order:
        arr = arrays[name]
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(os.fspath(path), "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in order:
            f.write(arrays[name].tobytes())
