"""`medseg evaluate`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("evaluate")
def evaluate_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg evaluate' is not implemented yet", 1)
