"""``python -m vaeaug`` runs the command line."""

from vaeaug.cli import main

raise SystemExit(main())
