"""`medseg demo`: the whole pipeline on synthetic phantoms."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli import app, run_command


@app.command("demo")
def demo_command(
    root: Path = typer.Option(Path("."), "--root", help="Checkout folder holding data/, models/, predictions/, overlays/."),
    quick: bool = typer.Option(False, "--quick", help="A reduced size for tests (seconds; no quality check)."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    seed: int = typer.Option(0, "--seed", help="Seed for the phantoms and training."),
) -> None:
    """Generate CT phantoms, ingest, train a small 3D U-Net, predict with TTA + CRF, evaluate, draw overlays."""
    from medseg import progress
    from medseg.demo import run_demo

    result = run_command(run_demo, root, quick=quick, device=device, seed=seed)
    console = progress.console()
    console.print(f"\n[bold green]demo finished[/] in {result.seconds:.0f} s: mean Dice {result.mean_dice:.3f}")
    for what, path in (("dataset", result.dataset), ("run (checkpoints, log.csv, curves.png)", result.run_dir),
                       ("training curves", result.run_dir / "curves.png"), ("predictions", result.predictions),
                       ("report", result.report_csv), ("overlays", result.overlays)):
        console.print(f"  {what:<40} {path}")
    console.print("  next: [bold]medseg predict your_scan.nii.gz[/] uses this run (the latest in models/)")
