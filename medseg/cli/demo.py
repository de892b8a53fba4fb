"""`medseg demo`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("demo")
def demo_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg demo' is not implemented yet", 1)
