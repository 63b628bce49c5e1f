"""``xgir data``: inspect the embedded datasets, the bundled photos and your own images.

``--out`` means what it means in every xgir command: an output folder (created if needed).
Where the help says so, a path ending in ``.png`` names the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from xgir.errors import XgirError


def figure_path(out: Path | None, default_name: str, default_dir: Path = Path("results")) -> Path:
    """Where a command that writes one figure puts it: ``--out`` is a folder (the figure is
    ``default_name`` inside it) or a ``.png`` file; anything else is one line of error."""
    if out is None:
        return default_dir / default_name
    if out.suffix.lower() == ".png" and not out.is_dir():
        if out.parent.exists() and not out.parent.is_dir():
            raise XgirError(f"--out {out}: {out.parent} is a file, not a folder")
        return out
    if out.exists() and not out.is_dir():
        raise XgirError(f"--out {out} is an existing file; give a folder (or a .png file name)")
    if out.suffix and not out.exists():
        raise XgirError(f"--out {out}: give a folder or a .png file name, not a '{out.suffix}' file")
    return out / default_name


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect datasets and images.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("preview")
    def preview_cmd(
        name: str = typer.Argument(..., help="images: decoy-digits[:SPLIT], background-shift[:SPLIT], "
                                   "glyph-pretrain, photos[:NAME,...], a Waterbirds ROOT[:SPLIT], a class folder, "
                                   "files or globs"),
        split: str = typer.Option("", help="split of an embedded dataset (default: the first)"),
        out: Path = typer.Option(None, help="output folder (writes preview-NAME.png) or a .png file "
                                 "(default: results/)"),
        n: int = typer.Option(32, help="number of samples (1 to 256)"),
        seed: int = typer.Option(0, help="dataset seed (embedded datasets: also which samples are drawn)"),
    ) -> None:
        """Write a PNG grid of samples with the masks outlined."""
        from xgir.data import DATASETS
        from xgir.data.images import load_images
        from xgir.data.preview import MAX_PREVIEW, preview

        if not 1 <= n <= MAX_PREVIEW:
            raise XgirError(f"--n must be between 1 and {MAX_PREVIEW}, got {n}")
        from xgir.config import check_seed

        check_seed(seed)
        base = name.partition(":")[0]
        spec = f"{base}:{split}" if split and base in DATASETS else name
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in base.strip("/.") or "images")
        path = figure_path(out, f"preview-{safe}.png")
        if base in DATASETS and not Path(name).exists():  # random samples of the whole split
            ds = load_images(spec, seed=seed)
            written = preview(ds, path, n=n, seed=seed)
        else:  # photos, folders and files: the first n (only those are read)
            ds = load_images(spec, limit=n)
            written = preview(ds, path, n=min(n, len(ds)), seed=None)
        typer.echo(f"wrote {written}")

    @data_app.command("photos")
    def photos_cmd(
        out: Path = typer.Option(None, help="output folder (writes photos.png) or a .png file "
                                 "(default: results/)"),
    ) -> None:
        """List the bundled photos (scikit-image samples, no download) and write a PNG grid."""
        from xgir.data.images import PHOTOS, load_images
        from xgir.data.preview import preview

        path = figure_path(out, "photos.png")
        for name, what in PHOTOS.items():
            typer.echo(f"{name:10s} {what}")
        written = preview(load_images("photos"), path, n=len(PHOTOS), seed=None)
        typer.echo(f"wrote {written}  (use them as --images photos or photos:chelsea,coffee)")

    @data_app.command("export")
    def export_cmd(
        name: str = typer.Argument(..., help="a registered dataset, e.g. waterbirds-photos"),
        out: Path = typer.Option(..., help="output folder (new, empty, or an earlier export: replaced as a whole)"),
        seed: int = typer.Option(0, help="dataset seed"),
        n: int | None = typer.Option(None, help="images in every split (default: the dataset's sizes)"),
        n_per_split: str | None = typer.Option(None, "--n-per-split", help="images per split, e.g. "
                                        "source-train=1200,target-test=1500 (over --n)"),
        p: float | None = typer.Option(None, help="the source splits' bias (waterbirds-photos: 0.95)"),
        quiet: bool = typer.Option(False, help="no progress bar"),
    ) -> None:
        """Write an embedded dataset to disk as a user's data: class folders per split
        (OUT/<split>/<class>/<image>.png) and, for waterbirds-photos, the Waterbirds format over
        the same files (metadata.csv: source-train -> train, target-val -> val, target-test ->
        test; segmentations/ masks). Then xgir train and xgir correct run on it."""
        from xgir.config import check_seed
        from xgir.data.export import export_dataset, parse_pairs

        check_seed(seed)
        sizes = parse_pairs(n_per_split, "--n-per-split", int)
        res = export_dataset(name, out, seed=seed, n=n, n_per_split=sizes,
                             params={} if p is None else {"p": p}, progress=not quiet)
        _print_export(res, out)

    @data_app.command("shift")
    def shift_cmd(
        objects: Path = typer.Option(..., help="RGBA cut-outs, one folder per class: DIR/<class>/*.png"),
        places: Path = typer.Option(..., help="background photographs, one folder per place: DIR/<place>/*.jpg"),
        align: str = typer.Option(..., help="the place of each class in the source splits: CLASS=PLACE,..."),
        out: Path = typer.Option(..., help="output folder (new, empty, or an earlier export: replaced as a whole)"),
        p: float = typer.Option(0.95, help="source splits: share of images on the class's aligned place"),
        size: int = typer.Option(224, help="image side in pixels"),
        seed: int = typer.Option(0, help="seed of the draws and the renders"),
        n: int | None = typer.Option(None, help="images in every split (default: 1200, 600, 600, 1000, 1500)"),
        n_per_split: str | None = typer.Option(None, "--n-per-split", help="images per split, e.g. "
                                        "source-train=2000,target-test=1000 (over --n)"),
        quiet: bool = typer.Option(False, help="no progress bar"),
    ) -> None:
        """Build a Waterbirds-style shift benchmark from your own cut-outs and backgrounds and
        write it as xgir data export does: splits source-train, source-val, source-test (the
        class on its aligned place with probability --p), target-val, target-test (places
        balanced). The Waterbirds format is written for 2 classes each aligned with its own of
        2 places."""
        from xgir.config import check_seed
        from xgir.data.export import export_shift, parse_pairs

        check_seed(seed)
        res = export_shift(objects, places, parse_pairs(align, "--align"), out, p=p, size=size, seed=seed, n=n,
                           n_per_split=parse_pairs(n_per_split, "--n-per-split", int), progress=not quiet)
        _print_export(res, out)


def _print_export(res: dict[str, Any], out: Path) -> None:
    """The splits written and the image specs that read them."""
    wb = res.get("waterbirds")
    for split, info in res["splits"].items():
        also = f"  (Waterbirds {out}:{info['waterbirds_split']})" if info.get("waterbirds_split") else ""
        typer.echo(f"{split:13s} {info['images']:6d} images  {out / info['folder']}{also}")
    if wb is None and res.get("waterbirds_format"):
        typer.echo(f"no metadata.csv: {res['waterbirds_format']}")
    typer.echo(f"wrote {out} (classes: {', '.join(res['classes'])}; see {out / 'export.json'})")
