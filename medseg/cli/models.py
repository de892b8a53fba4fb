"""`medseg models`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("models")
def models_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg models' is not implemented yet", 1)
