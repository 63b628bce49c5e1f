"""``xgir train --config FILE.yaml``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path = typer.Option(..., "--config", help="YAML training config"),
        out: Path = typer.Option(None, help="override the config's output folder"),
        quiet: bool = typer.Option(False, help="no progress bars"),
    ) -> None:
        """Train a model (ERM or the two-stage setup) and write model.pt, results.json, report.md."""
        from xgir.config import load_config
        from xgir.train.config import TrainConfig
        from xgir.train.runner import run_training

        cfg = load_config(config, TrainConfig)
        if out is not None:
            cfg.out = str(out)
        results = run_training(cfg, progress=not quiet)
        typer.echo((Path(cfg.out) / "report.md").read_text())
        typer.echo(f"results in {cfg.out} ({results['seconds']} s)")
