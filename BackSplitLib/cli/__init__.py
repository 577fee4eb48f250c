"""The ``backsplit`` command line. ``app.py`` holds the typer app and the error handling; each command
group lives in its own module and registers itself on import."""

from BackSplitLib.cli.app import app, main

__all__ = ["app", "main"]
