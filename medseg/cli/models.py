"""`medseg models`: list the architectures with their dimensionality, parameter count and description."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medseg.cli import app, run_command


def _rows(include_tiny: bool) -> list[dict]:
    from medseg.models import count_parameters, list_models, model_spec

    rows = []
    for name in list_models():
        if name.endswith("_tiny") and not include_tiny:
            continue
        spec = model_spec(name)
        rows.append({
            "name": name,
            "spatial_dims": spec.spatial_dims,
            "parameters": count_parameters(name, in_channels=1, num_classes=2),
            "size_multiple": spec.size_multiple,
            "deep_supervision": spec.deep_supervision,
            "description": spec.description,
        })
    return rows


@app.command("models")
def models_command(
    include_tiny: Annotated[bool, typer.Option("--all", help="Also list the *_tiny test variants.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the network architectures (--arch values). Parameters are counted for in_channels=1, num_classes=2."""
    rows = run_command(_rows, include_tiny)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="medseg architectures", caption="parameters counted with in_channels=1, num_classes=2 (built on the meta device)")
    for column, justify in (("name", "left"), ("dims", "right"), ("parameters", "right"), ("input multiple", "right"),
                            ("deep supervision", "center"), ("description", "left")):
        table.add_column(column, justify=justify)
    for row in rows:
        table.add_row(row["name"], f"{row['spatial_dims']}D", f"{row['parameters'] / 1e6:.2f} M", str(row["size_multiple"]),
                      "yes" if row["deep_supervision"] else "no", row["description"])
    Console().print(table)
