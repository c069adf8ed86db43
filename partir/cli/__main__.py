"""`python -m partir.cli`: the `partir` command."""

import sys

from partir.cli import main

sys.exit(main())
