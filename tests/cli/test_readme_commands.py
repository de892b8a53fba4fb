"""Every `medseg ...` command line shown in the README parses: `<that exact line> --help` succeeds.

This keeps the README from drifting away from the CLI (a renamed or removed option fails here).
"""

from __future__ import annotations

import re
import shlex

import pytest
from typer.testing import CliRunner

from conftest import REPO
from medseg.cli import app


def readme_command_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```(?:\w*)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in line.split(" & "):  # two commands on one line
                part = part.strip().rstrip("&").strip()
                part = re.sub(r"^torchrun .*?-m medseg ", "medseg ", part)
                if part.startswith("medseg "):
                    lines.append(part)
    return lines


COMMANDS = readme_command_lines()


def test_readme_has_examples_of_every_command():
    used = {shlex.split(line)[1] for line in COMMANDS}
    assert {"ingest", "train", "predict", "evaluate"} <= used


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    args = shlex.split(line)[1:]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"{line!r}: {result.output}"
