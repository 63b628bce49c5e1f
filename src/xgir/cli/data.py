"""``xgir data``: inspect the embedded datasets."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("preview")
    def preview_cmd(
        name: str = typer.Argument(..., help="decoy-digits, background-shift or glyph-pretrain"),
        split: str = typer.Option("", help="split (default: the first)"),
        out: Path = typer.Option(None, help="PNG to write (default: results/preview-NAME.png)"),
        n: int = typer.Option(32, help="number of samples"),
        seed: int = typer.Option(0, help="dataset seed"),
    ) -> None:
        """Write a PNG grid of samples with the masks outlined."""
        from xgir.data import dataset_splits, load_dataset
        from xgir.data.preview import preview

        split = split or dataset_splits(name)[0]
        path = preview(load_dataset(name, split, seed=seed), out or Path(f"results/preview-{name}.png"), n=n)
        typer.echo(f"wrote {path}")
