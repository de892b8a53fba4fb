"""The CLI skeleton: light help, version, exit codes."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from medseg import __version__
from medseg.cli import app

runner = CliRunner()
HEAVY = {"torch", "monai", "SimpleITK"}


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_command_has_help():
    for command in ("ingest", "train", "predict", "evaluate", "models", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_unknown_command_is_usage_error():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_help_does_not_import_torch():
    code = "import sys; from medseg.cli import app; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_help_from_the_command_line_loads_no_heavy_library():
    # what keeps `medseg --help` fast (about 0.25 s), checked without a clock: the whole process, as a user
    # starts it, imports neither torch nor MONAI nor SimpleITK (-X importtime lists every module it imports)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "medseg", "--help"],
                          capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in imported and "medseg" in imported  # the listing is real
    assert not imported & HEAVY, imported & HEAVY
    assert "Usage" in done.stdout


def test_unexpected_errors_from_dicom_libraries_never_quote_header_values():
    import pydicom.valuerep

    from medseg.cli import unexpected_error_line

    try:
        pydicom.valuerep.DA("19XX0101")  # raises inside pydicom, quoting the (birth date) value
    except ValueError as exc:
        line = unexpected_error_line(exc)
    assert "19XX" not in line and "DICOM library" in line
    assert unexpected_error_line(KeyError("plain bug")) == (
        "error: unexpected KeyError: 'plain bug' (rerun with --debug for the traceback)")
