"""`python -m dashboards`: render or check the generated observability files."""

import sys

from dashboards.render import main

sys.exit(main())
