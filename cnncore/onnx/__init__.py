"""ONNX export and import (optional: ``pip install "cnncore[onnx]"`` installs the ``onnx``
package, and ``onnxruntime`` to run the exported models).

- :func:`export` writes a cnncore model -- a Sequential or a graph model
  (:class:`~cnncore.nn.Model`), with every layer cnncore has -- as an ONNX inference
  graph, built with the ``onnx`` package's helpers (no torch needed); onnxruntime runs it
  and agrees with ``model.predict``.
- :func:`load` reads an ONNX model made of the operators cnncore has layers for (what
  PyTorch's ``torch.onnx.export`` writes for CNNs, residual and other branching graphs
  included, and what :func:`export` writes) into a :class:`~cnncore.nn.Sequential` when
  the graph is a chain, else a graph model.

Both are tables that new layers extend: :data:`EXPORTERS` (registry name -> exporter, or an
``_onnx_export`` method on the layer class; see :mod:`cnncore.onnx._export`) and
:data:`IMPORTERS` (ONNX op type -> converter; see :mod:`cnncore.onnx._import`).  Importing
this module does not import ``onnx``; calling :func:`export` or :func:`load` without it
raises ImportError with the install command.
"""

from ._export import EXPORTERS, MIN_OPSET, ExportContext, export, to_model_proto
from ._import import IMPORTERS, from_model_proto, load

__all__ = [
    "export",
    "load",
    "to_model_proto",
    "from_model_proto",
    "ExportContext",
    "EXPORTERS",
    "IMPORTERS",
    "MIN_OPSET",
]
