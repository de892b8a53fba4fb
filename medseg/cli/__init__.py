"""The ``medseg`` command line. Thin commands: parse options, call one library function, map errors.

Only this package imports typer. Heavy libraries are imported inside the commands so that
``medseg --help`` answers instantly. Each command lives in its own module and registers on ``app``.
Exit codes: 0 success, 1 domain error (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from medseg import __version__

app = typer.Typer(
    name="medseg",
    help="Medical image segmentation: ingest scans, train networks, predict with TTA + CRF, evaluate.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print one line on stderr and return an Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_command(func, *args, **kwargs):
    """Call a library function and turn domain errors into one line + exit code 1 (2 for usage)."""
    from medseg import progress
    from medseg.errors import MedsegError, UsageError

    was_enabled = progress.enabled()
    progress.enable(True)
    try:
        return func(*args, **kwargs)
    except MedsegError as exc:
        if _state["debug"]:
            raise
        raise fail(str(exc), 1) from None
    except UsageError as exc:
        if _state["debug"]:
            raise
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except MemoryError:
        if _state["debug"]:
            raise
        raise fail("out of memory", 1) from None
    finally:
        progress.enable(was_enabled)


# Register the commands (each module adds its command to ``app``).
from medseg.cli import ingest as _ingest  # noqa: E402,F401
from medseg.cli import train as _train  # noqa: E402,F401
from medseg.cli import predict as _predict  # noqa: E402,F401
from medseg.cli import evaluate as _evaluate  # noqa: E402,F401
from medseg.cli import models as _models  # noqa: E402,F401
from medseg.cli import demo as _demo  # noqa: E402,F401


def unexpected_error_line(exc: BaseException) -> str:
    """The one line for an unexpected exception. Its message is left out when it was raised inside the
    DICOM libraries, whose messages can quote header values (patient names, IDs, birth dates)."""
    import traceback

    frames = []
    seen: BaseException | None = exc
    while seen is not None:  # the exception and what it was raised from
        frames += traceback.extract_tb(seen.__traceback__)
        seen = seen.__cause__ or seen.__context__
    from_dicom = any(f"{sep}{lib}{sep}" in frame.filename for frame in frames for lib in ("pydicom", "highdicom")
                     for sep in ("/", "\\"))
    detail = " in the DICOM library" if from_dicom else f": {exc}"
    return f"error: unexpected {type(exc).__name__}{detail} (rerun with --debug for the traceback)"


def main() -> None:
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # an unexpected bug: one line unless --debug
        if _state["debug"] or "--debug" in sys.argv:
            raise
        typer.echo(unexpected_error_line(exc), err=True)
        sys.exit(1)
