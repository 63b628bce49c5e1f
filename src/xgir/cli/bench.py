"""``xgir bench NAME``: run a named benchmark suite."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        name: str = typer.Argument(..., help="suite name (see xgir.bench)"),
        out: Path = typer.Option(None, help="results folder (default: results/NAME)"),
        seeds: str = typer.Option("0,1,2", help="comma-separated seeds"),
        quick: bool = typer.Option(False, help="a small, fast version of the suite"),
    ) -> None:
        """Run a benchmark suite and write its results folder (report.md, JSON, PNGs)."""
        from xgir.bench import get_suite
        from xgir.errors import XgirError
        from xgir.io import run_folder

        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise XgirError(f"--seeds must be comma-separated integers, got '{seeds}'") from None
        suite = get_suite(name)
        out_dir = out or Path("results") / name
        with run_folder(out_dir) as tmp:  # the suite's outputs as a set
            suite.run(tmp, seed_list, quick=quick)
        report = out_dir / "report.md"
        if report.exists():
            typer.echo(report.read_text())
        typer.echo(f"results in {out_dir}")
