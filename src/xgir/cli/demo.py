"""``xgir demo``: the main job on embedded data, end to end, with a report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("results/demo"), help="results folder"),
        seed: int = typer.Option(0, help="seed"),
        quiet: bool = typer.Option(False, help="no progress bars"),
    ) -> None:
        """Two-stage setup on background-shift: pretrained frozen extractor, ERM head; prints
        source and target accuracy and writes report.md."""
        from xgir.train.config import two_stage_config
        from xgir.train.runner import run_training

        cfg = two_stage_config(out=str(out), seed=seed)
        results = run_training(cfg, progress=not quiet)
        typer.echo((out / "report.md").read_text())
        typer.echo(f"results in {out} ({results['seconds']} s)")
