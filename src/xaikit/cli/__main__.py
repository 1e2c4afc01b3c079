"""``python -m xaikit.cli``: the same as the ``xaikit`` command."""
import sys

from . import main

sys.exit(main())
