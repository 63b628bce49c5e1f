"""``xgir correct --config FILE.yaml``: XGIR on a user's model and ImageFolder data."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("correct")
    def correct_cmd(
        config: Path = typer.Option(..., "--config", help="YAML config (see configs/xgir-imagefolder.yaml)"),
        out: Path = typer.Option(None, help="override the config's output folder"),
        quiet: bool = typer.Option(False, help="no progress bars"),
    ) -> None:
        """Retrain a model's head with XGIR on ImageFolder data; write results.json, report.md,
        xgir_model.pt and heatmaps.png, and print the table. Under ``torchrun --nproc_per_node=N
        -m xgir correct ...`` the passes are shared by the N processes; rank 0 writes the outputs."""
        from xgir.cli import user_error_message
        from xgir.config import load_config
        from xgir.correct.pipeline import XGIRRunConfig, run_xgir_pipeline

        try:
            cfg = load_config(config, XGIRRunConfig)
            if out is not None:
                cfg.out = str(out)
            results = run_xgir_pipeline(cfg, progress=not quiet)
        except Exception as err:
            if int(os.environ.get("RANK", "0")) > 0 and user_error_message(err) is not None:
                raise typer.Exit(2) from None  # rank 0 prints the one line (naming the failed rank)
            raise
        if "outputs" not in results:  # a rank other than 0 under torchrun: its share is on disk
            return
        typer.echo(Path(results["outputs"]["report"]).read_text())
        typer.echo(f"results in {cfg.out} ({results['seconds']} s)")
