"""`python -m syncd` runs the CLI."""

from syncd.cli.main import main

raise SystemExit(main())
