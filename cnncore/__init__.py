"""cnncore: a fast, exact CPU core for convolutional neural networks on NumPy arrays.

The numerical kernels are Cython (typed memoryviews, OpenMP, BLAS GEMM); the functional API
(:mod:`cnncore.functional`, re-exported here) follows ``torch.nn.functional``'s semantics.
:mod:`cnncore.nn`, :mod:`cnncore.optim` and :mod:`cnncore.datasets` build and train small
CNNs; :func:`load` reads models written by ``Sequential.save``.
"""

__version__ = "0.1.0"

# No process-wide OpenMP settings are changed here: cnncore and PyTorch share one libgomp per
# process (same soname), so a GOMP_SPINCOUNT set on import used to slow a PyTorch model in the
# same process 2x (LeNet training steps 5 -> 12 ms).  README "Threads" says when to set it.
# first: _config loads the BLAS binding the kernels cimport (without all of scipy.linalg)
from . import _config  # noqa: E402,F401,I001
from . import (  # noqa: E402
    augment,
    callbacks,
    datasets,
    filters,
    functional,
    kernels,
    models,
    nn,
    onnx,  # noqa: E402  (does not import the onnx package until it is used)
    optim,
    signal,
)
from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from .functional import *  # noqa: E402,F403
from .nn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .nn.init import manual_seed  # noqa: E402
from .nn.serialization import load  # noqa: E402
from .nn.tuning import tune  # noqa: E402
from .ops.conv_dispatch import conv_algorithm, get_autotune, set_autotune  # noqa: E402
from .signal import convolve2d, correlate2d  # noqa: E402

__all__ = [
    "__version__",
    "augment",
    "callbacks",
    "datasets",
    "filters",
    "functional",
    "kernels",
    "models",
    "nn",
    "onnx",
    "optim",
    "signal",
    "correlate2d",
    "convolve2d",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "conv_algorithm",
    "set_autotune",
    "get_autotune",
    "tune",
    "manual_seed",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "Checkpoint",
    *functional.__all__,
]
