"""``xgir demo``: the main job end to end, with a report: a bird classifier on real photographs
(waterbirds-photos), its background shortcut and its correction by XGIR beside AFR and DFR; the
built-in ImageNet model (EfficientNet-Lite0) on the bundled photos (top-5 and CWOX figures); and
the two-stage setup on the digit benchmark (quick form by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

CATS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
COFFEE_MATES = ("cup", "coffee mug")


def real_image_checks(images: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's checks on CWOX's output (cwox.json ``images``): (check, passed, what was seen)."""
    by_file = {im.get("file"): im for im in images}
    checks = []
    cat = by_file.get("chelsea")
    if cat is not None:
        top1 = cat["cluster_names"][0][0] if cat["cluster_names"] else "?"
        first = set(next((c for c in cat["cluster_names"] if top1 in c), []))
        checks.append(("cat photo: top-1 is a cat class", top1 in CATS, top1))
        checks.append(("cat photo: its CWOX cluster holds >= 2 cat classes", len(first & set(CATS)) >= 2,
                       ", ".join(sorted(first))))
    coffee = by_file.get("coffee")
    if coffee is not None:
        cluster: list[str] = next((c for c in coffee["cluster_names"] if "espresso" in c), [])
        checks.append(("coffee photo: espresso in a cluster with cup or coffee mug",
                       bool(set(cluster) & set(COFFEE_MATES)), ", ".join(cluster) or "espresso not in top-5"))
    return checks


def real_image_part(out: Path) -> str:
    """EfficientNet-Lite0 on the bundled photos: CWOX (top-5 classes, data-free head-weight tree)
    written under ``out``; returns the report section (Markdown)."""
    from xgir.cli.explain import run_explain

    run_explain("efficientnet-lite0", None, "gradcam", out, images="photos", target="top5", batch_size=8,
                progress=False)
    run_explain("efficientnet-lite0", None, "cwox", out, images="photos", params={"k": 5, "mass": None},
                batch_size=8, progress=False)
    summary = json.loads((out / "cwox.json").read_text())
    lines = ["## Real images: EfficientNet-Lite0 (ImageNet-1k) on the bundled photos", "",
             "`xgir explain --model efficientnet-lite0 --images photos --method cwox --param mass=null` "
             "(top-5 classes; confusion tree from the head's weight vectors, cosine distance, average "
             f"linkage, cut at {summary['level']:g}).", "",
             "| photo | top-5 (probability) | CWOX clusters |", "|---|---|---|"]
    for i, im in enumerate(summary["images"]):
        names = [n for cl in im["cluster_names"] for n in cl]
        order = sorted(zip(im["classes"], im["probs"], strict=True), key=lambda t: -t[1])
        name_of = dict(zip([c for cl in im["clusters"] for c in cl], names, strict=True))
        top = ", ".join(f"{name_of[c]} ({p:.2f})" for c, p in order)
        clusters = " / ".join("{" + ", ".join(cl) + "}" for cl in im["cluster_names"])
        lines.append(f"| {im['file']} ([figure](real/cwox-{i:03d}.png)) | {top} | {clusters} |")
    lines += ["", "Checks:", ""]
    for what, ok, seen in real_image_checks(summary["images"]):
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {what} (seen: {seen})")
    lines += ["", "Grad-CAM of the top-5 classes (`--method gradcam --target top5`):", "",
              "![Grad-CAM top-5 on the photos](real/heatmaps.png)", "",
              "![CWOX on the cat photo](real/cwox-000.png)", "",
              "![confusion tree over the photos' top-5 classes](real/tree.png)", ""]
    return "\n".join(lines)


def bird_part(out: Path, seed: int) -> str:
    """The photo benchmark at the demo's sizes (one seed) under ``out``; the report section."""
    from xgir.bench import waterbirds_photos
    from xgir.bench.waterbirds_photos_stage import DEMO

    res = waterbirds_photos.run(out, [seed], sizes=DEMO)
    rows = [r for r in res["table"] if r["kind"] != "group-labelled"]
    lines = ["## A bird classifier on real photographs: its shortcut and its correction", "",
             "waterbirds-photos (bird photographs over lake and land photographs, Waterbirds' shares, p = 0.95; "
             f"{DEMO.label}). EfficientNet-Lite0's frozen features; the ERM head learns the place as a shortcut "
             "(worst group: waterbirds on land). Selection of every method's setting on target-val without group "
             "labels (worst-class accuracy); DFR uses group labels (the reference).", "",
             "| method | source acc | target acc | worst-group acc | gap closed |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['source'][0]:.3f} | {r['target'][0]:.3f} | {r['worst_group'][0]:.3f} "
                     f"| {r['gap_closed']:+.2f} |")
    xgir = next(r for r in rows if r["method"].startswith("XGIR ("))
    lines += ["", f"XGIR's setting: {xgir['settings'][0]} (the pretrained ImageNet head's top-5 CAM, its top 10 % "
              "as the bird, its top 30 % blanked out of an image of the other class for the background). "
              "Full tables: [birds/report.md](birds/report.md).", "",
              "![worst-group accuracy per method](birds/wga.png)", "",
              "![cores and supports](birds/cores.png)", ""]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("results/demo"), help="results folder"),
        seed: int = typer.Option(0, help="seed of the data draw, heads and noise"),
        real: bool = typer.Option(True, help="also run EfficientNet-Lite0 on the bundled photos (top-5, CWOX)"),
        digits: str = typer.Option("quick", help="the two-stage setup on the digit benchmark: quick (a small "
                                   "extractor, a smoke test), full (its benchmark run, ~8 min) or none"),
    ) -> None:
        """A bird classifier on real photographs (waterbirds-photos): the ERM head's background
        shortcut and its correction by XGIR, beside AFR and DFR; the built-in ImageNet model on
        the bundled photos (top-5 and CWOX figures); the two-stage setup on the digit benchmark.
        Prints the report and writes report.md with figures."""
        from xgir.bench import xgir_two_stage
        from xgir.config import check_seed
        from xgir.errors import XgirError
        from xgir.io import run_folder, write_text

        check_seed(seed)
        if digits not in ("quick", "full", "none"):
            raise XgirError(f"--digits must be quick, full or none, got '{digits}'")
        with run_folder(out) as tmp:  # the outputs as a set
            sections = ["# xgir demo", "", bird_part(tmp / "birds", seed)]
            if real:
                sections.append(real_image_part(tmp / "real"))
            if digits != "none":
                xgir_two_stage.run(tmp / "digits", [seed], quick=digits == "quick")
                sections += ["## The two-stage setup on the digit benchmark", "",
                             ("Quick form (a small extractor: a smoke test, not a result; `--digits full` or "
                              "`xgir bench xgir-two-stage` for the result). " if digits == "quick" else "")
                             + "Report: [digits/report.md](digits/report.md).", "",
                             "![target accuracy against delta2](digits/delta2.png)", "",
                             "![IOX and CWOX maps and each support](digits/heatmaps.png)", ""]
            write_text(tmp / "report.md", "\n".join(sections))
        typer.echo((out / "report.md").read_text())
        typer.echo(f"results in {out}")
