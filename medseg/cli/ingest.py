"""`medseg ingest`."""

from __future__ import annotations

from medseg.cli import app, fail


@app.command("ingest")
def ingest_command() -> None:
    """Not implemented yet."""
    raise fail("'medseg ingest' is not implemented yet", 1)
