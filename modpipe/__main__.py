"""`python -m modpipe`: the same as the `modpipe` console script."""

import sys

from modpipe.cli import main

sys.exit(main())
