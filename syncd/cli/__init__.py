"""The `syncd` command line: argparse and rendering over the library (syncd.api)."""

from syncd.cli.main import main

__all__ = ["main"]
