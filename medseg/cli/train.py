"""`medseg train`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("train")
def train_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg train' is not implemented yet", 1)
