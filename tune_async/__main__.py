"""``python -m tune_async``: the ``tune-async`` command line (see :mod:`tune_async.scripts`)."""

import sys

from tune_async.scripts import main

sys.exit(main())
