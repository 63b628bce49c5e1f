"""``xgir bench NAME``: run a named benchmark suite."""

from __future__ import annotations

from pathlib import Path

import typer


def suite_lines() -> list[str]:
    """``name: one-line description`` of every suite, read from the suite modules' source
    (``SUITE = "name"`` and the docstring's first line) without importing them."""
    import ast

    import xgir.bench as bench

    lines = []
    for path in sorted(Path(bench.__file__).parent.glob("[!_]*.py")):
        tree = ast.parse(path.read_text())
        name = next((node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", "") == "SUITE" for t in node.targets)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)), None)
        if name is None:
            continue
        first = (ast.get_docstring(tree) or "").strip().splitlines()[:1]
        desc = first[0].split("``:", 1)[-1].strip() if first else ""
        lines.append(f"{name}: {desc}")
    return sorted(lines)


def register(app: typer.Typer) -> None:
    @app.command("bench", epilog="Suites:\n\n" + "\n\n".join(f"  {line}" for line in suite_lines()))
    def bench_cmd(
        name: str = typer.Argument(..., help="suite name (listed below)"),
        out: Path = typer.Option(None, help="results folder (default: results/NAME)"),
        seeds: str = typer.Option("0,1,2", help="comma-separated seeds"),
        quick: bool = typer.Option(False, help="a small, fast version of the suite"),
        device: str = typer.Option("cpu", help="where the network passes run (cuda, cuda:1) for suites "
                                   "that take a device (xgir-imagenet); the others run on the CPU"),
    ) -> None:
        """Run a benchmark suite and write its results folder (report.md, JSON, PNGs)."""
        import inspect

        from xgir.bench import get_suite
        from xgir.errors import XgirError
        from xgir.io import run_folder
        from xgir.models.inference import resolve_device

        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise XgirError(f"--seeds must be comma-separated integers, got '{seeds}'") from None
        if not seed_list:
            raise XgirError("--seeds is empty; give at least one seed, e.g. --seeds 0 or --seeds 0,1,2")
        from xgir.config import check_seed

        for s in seed_list:
            check_seed(s, "each of --seeds")
        suite = get_suite(name)
        extra = {}
        if device != "cpu":
            if "device" not in inspect.signature(suite.run).parameters:
                raise XgirError(f"suite {name} runs on the CPU only; drop --device (xgir-imagenet takes one)")
            resolve_device(device)
            extra["device"] = device
        out_dir = out or Path("results") / name
        with run_folder(out_dir) as tmp:  # the suite's outputs as a set
            suite.run(tmp, seed_list, quick=quick, **extra)
        report = out_dir / "report.md"
        if report.exists():
            typer.echo(report.read_text())
        typer.echo(f"results in {out_dir}")
