"""Merge guidance-grid runs of single seeds into the report of all of them (not a test).

``xgir bench guidance-grid --seeds 0,1,2`` runs the seeds one after the other on one thread.
On a machine with several cores the seeds can run as separate processes, each into its own
folder (``xgir bench guidance-grid --seeds 1 --out runs/grid-s1``); this script then writes the
report, results.json and trade-off figure of the union, exactly as the single run would (each
seed's runs depend only on its seed):

    python benchmarks/guidance_grid_merge.py runs/grid-s0 runs/grid-s1 runs/grid-s2 --out results/guidance-grid

The same for ``xgir bench guidance-grid-photos`` (its folders hold its own settings).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from xgir.bench._guidance_common import write_suite
from xgir.bench._guidance_grid_report import report, trade_off_figure
from xgir.bench.guidance_grid import Settings


def merge(folders: list[Path], out: Path) -> dict:
    """The union of the folders' per-seed results, written to ``out`` (report.md, results.json,
    tradeoff.png, and the B-cos figures of the first folder that has them)."""
    per_seed: dict = {}
    seconds = 0.0
    settings = None
    for folder in folders:
        res = json.loads((folder / "results.json").read_text())
        if settings is not None and res["settings"] != settings:
            raise SystemExit(f"{folder}: its settings differ from the first folder's; merge runs of one setting")
        settings = res["settings"]
        for seed, runs in res["per_seed"].items():
            if seed in per_seed:
                raise SystemExit(f"{folder}: seed {seed} is in two folders")
            per_seed[seed] = runs
        seconds += res["seconds"]
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    per_seed = dict(sorted(per_seed.items(), key=lambda kv: int(kv[0])))
    out.mkdir(parents=True, exist_ok=True)
    result = write_suite(report, s, out, per_seed, seconds, merged_from=[str(f) for f in folders])
    trade_off_figure(per_seed, s, out / "tradeoff.png")
    for folder in folders:
        figures = sorted(folder.glob("bcos-*.png"))
        if figures:
            for fig in figures:
                shutil.copy(fig, out / fig.name)
            break
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results folders of single-seed runs")
    parser.add_argument("--out", type=Path, required=True, help="folder of the merged report")
    args = parser.parse_args()
    result = merge(args.folders, args.out)
    print(f"merged seeds {', '.join(result['per_seed'])} into {args.out} ({result['seconds']:.0f} s of runs)")


if __name__ == "__main__":
    main()
