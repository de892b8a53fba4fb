"""`medseg predict`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("predict")
def predict_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg predict' is not implemented yet", 1)
