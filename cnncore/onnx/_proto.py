"""What the ONNX exporter and importer share: the lazy import of the ``onnx`` package, the
dtype table, and a tensor reader that checks every size before allocating."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["require_onnx", "tensor_to_array", "float_attr"]

_INSTALL_HINT = 'cnncore.onnx needs the onnx package: pip install "cnncore[onnx]"'


def require_onnx() -> Any:
    """The ``onnx`` module; ImportError with the install command when it is missing."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from None
    return onnx


def _dtype_table() -> dict[int, tuple[np.dtype, str]]:
    """ONNX TensorProto data type -> (NumPy dtype, the typed field holding its values when
    there is no ``raw_data``)."""
    tp = require_onnx().TensorProto
    return {
        tp.FLOAT: (np.dtype("<f4"), "float_data"),
        tp.DOUBLE: (np.dtype("<f8"), "double_data"),
        tp.FLOAT16: (np.dtype("<f2"), "int32_data"),  # bit patterns in int32_data
        tp.INT64: (np.dtype("<i8"), "int64_data"),
        tp.INT32: (np.dtype("<i4"), "int32_data"),
        tp.INT16: (np.dtype("<i2"), "int32_data"),
        tp.INT8: (np.dtype("i1"), "int32_data"),
        tp.UINT8: (np.dtype("u1"), "int32_data"),
        tp.BOOL: (np.dtype("?"), "int32_data"),
    }


def tensor_to_array(t: Any, where: str) -> np.ndarray:
    """A TensorProto as an ndarray (native byte order), after checking that its declared
    shape matches the data it really holds -- never allocating what a crafted file claims.

    Raises ValueError naming ``where`` for external data, unsupported types, negative dims or
    a size mismatch.
    """
    onnx = require_onnx()
    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        raise ValueError(
            f"{where}: tensor {t.name!r} keeps its data in an external file, which "
            f"cnncore.onnx does not read (save the model with its data inside)"
        )
    if t.HasField("segment"):
        raise ValueError(f"{where}: tensor {t.name!r} is segmented (not supported)")
    table = _dtype_table()
    if t.data_type not in table:
        known = t.data_type in onnx.TensorProto.DataType.values()
        name = onnx.TensorProto.DataType.Name(t.data_type) if known else str(t.data_type)
        raise ValueError(f"{where}: tensor {t.name!r} has unsupported data type {name}")
    dtype, field = table[t.data_type]
    dims = tuple(t.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{where}: tensor {t.name!r} has negative dims {dims}")
    numel = math.prod(dims)
    if t.raw_data:
        if len(t.raw_data) != numel * dtype.itemsize:
            raise ValueError(
                f"{where}: tensor {t.name!r} declares shape {dims} ({numel * dtype.itemsize} "
                f"bytes) but holds {len(t.raw_data)} bytes"
            )
        arr = np.frombuffer(t.raw_data, dtype=dtype)
    else:
        values = getattr(t, field)
        if len(values) != numel:
            raise ValueError(
                f"{where}: tensor {t.name!r} declares shape {dims} ({numel} values) but holds "
                f"{len(values)} values"
            )
        if t.data_type == onnx.TensorProto.FLOAT16:
            arr = np.array(values, dtype=np.uint16).view(np.float16)
        else:
            arr = np.array(values, dtype=dtype)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def float_attr(value: float) -> float:
    """An ONNX float attribute (stored as float32) as the shortest decimal that rounds to
    it: ``1e-5`` comes back as ``1e-05``, not ``9.999999747378752e-06``."""
    return float(str(np.float32(value)))
