"""Trainable parameters: :class:`Parameter`, an array and the gradient accumulated for it.

The class is defined in :mod:`cnncore._parameter` (shared with :mod:`cnncore.optim`, which must
not import :mod:`cnncore.nn`); this module is its public home.
"""

from .._parameter import Parameter

__all__ = ["Parameter"]
