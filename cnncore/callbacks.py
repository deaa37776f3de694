"""Keras-style training callbacks for ``fit``: :class:`Callback`, :class:`EarlyStopping`,
:class:`ModelCheckpoint`, :class:`ReduceLROnPlateau`, :class:`CSVLogger`,
:class:`LambdaCallback`.

They live in :mod:`cnncore.nn.callbacks` (next to the training loop), re-exported here.
"""

from .nn.callbacks import *  # noqa: F403
from .nn.callbacks import __all__  # noqa: F401
