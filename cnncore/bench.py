"""Benchmark suites behind ``cnncore bench`` and the scripts in ``benchmarks/``.

They live in :mod:`cnncore.apps.bench` (the timing harness in
:mod:`cnncore.apps.bench.timing`, one module per suite), re-exported here.
"""

from .apps.bench import *  # noqa: F403
from .apps.bench import __all__  # noqa: F401
from .apps.bench.train import _torch_model  # noqa: F401 -- the PyTorch twins of the models
