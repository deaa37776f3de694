"""Plots of filters, feature maps and training curves (needs matplotlib: the ``plot`` extra).

They live in :mod:`cnncore.apps.viz`, re-exported here.
"""

from .apps.viz import *  # noqa: F403
from .apps.viz import __all__  # noqa: F401
