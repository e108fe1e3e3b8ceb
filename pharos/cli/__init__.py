"""The ``pharos`` command line: ``main`` is the console-script entry point."""

from pharos.cli.root import app, main

__all__ = ["app", "main"]
