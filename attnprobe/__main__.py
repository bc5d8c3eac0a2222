"""``python -m attnprobe``: the command line."""

from .cli import main

raise SystemExit(main())
