"""The ``cnncore`` command; it lives in :mod:`cnncore.apps.cli`, re-exported here."""

import sys

from .apps.cli import *  # noqa: F403
from .apps.cli import __all__, main  # noqa: F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
