"""``xgir demo``: the main job on embedded data, end to end, with a report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("results/demo"), help="results folder"),
        seed: int = typer.Option(0, help="seed of the data draw, heads and noise"),
    ) -> None:
        """The two-stage setup on background-shift with XGIR: a pretrained, frozen extractor
        (cached after the first run), the ERM head, the DFR reference and XGIR heads; prints
        source, target and worst-group accuracy and writes report.md with figures."""
        from xgir.bench import xgir_two_stage
        from xgir.io import run_folder

        with run_folder(out) as tmp:  # the outputs as a set
            xgir_two_stage.run(tmp, [seed])
        typer.echo((out / "report.md").read_text())
        typer.echo(f"results in {out}")
