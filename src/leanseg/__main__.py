"""``python -m leanseg``: the same as the ``leanseg`` command."""

from leanseg.cli import main

raise SystemExit(main())
