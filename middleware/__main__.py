"""python -m middleware"""

from .cli import main

raise SystemExit(main())
