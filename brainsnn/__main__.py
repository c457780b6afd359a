"""``python -m brainsnn``: the ``brainsnn`` command (see :mod:`brainsnn.cli`)."""
import sys

from brainsnn.cli import main

sys.exit(main())
