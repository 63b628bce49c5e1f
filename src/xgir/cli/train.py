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
        """Train a model and write model.pt, results.json, report.md: ERM or the two-stage setup on an
        embedded dataset, or (mode head) a new linear head for your classes on a pretrained network's
        frozen features. Under ``torchrun --nproc_per_node=N -m xgir train ...`` mode head shares
        its features passes over the N processes; rank 0 writes the outputs."""
        from xgir.cli.ranks import rank0_prints_errors
        from xgir.correct.anchor_heads import ANCHOR_HEADS
        from xgir.train.config import load_train_config
        from xgir.train.runner import run_training

        with rank0_prints_errors():
            cfg = load_train_config(config)
            if out is not None:
                cfg.out = str(out)
            results = run_training(cfg, progress=not quiet, head_methods=ANCHOR_HEADS)
        if "seconds" not in results:  # a rank other than 0 under torchrun: its share is on disk
            return
        typer.echo((Path(cfg.out) / "report.md").read_text())
        typer.echo(f"results in {cfg.out} ({results['seconds']} s)")
