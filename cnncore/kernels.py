"""Old name of :mod:`cnncore.filters` (classic 2-D filter matrices), kept as an alias.

"Kernels" means the compiled code everywhere else in cnncore; new code should import
:mod:`cnncore.filters`.  ``cnncore.kernels.SOBEL_X is cnncore.filters.SOBEL_X``.
"""

from .filters import *  # noqa: F403
from .filters import __all__  # noqa: F401
