"""The ``promptlab`` command line (see :mod:`promptlab.cli.main`)."""

from promptlab.cli.main import main

__all__ = ["main"]
