"""``python -m server`` is the same as the ``croupier`` command."""

from .cli import main

raise SystemExit(main())
