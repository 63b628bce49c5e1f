"""``xgir demo``: the main job on embedded data, end to end, with a report; then the built-in
ImageNet model (EfficientNet-Lite0) on the bundled photos: top-5 and CWOX figures."""

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


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("results/demo"), help="results folder"),
        seed: int = typer.Option(0, help="seed of the data draw, heads and noise"),
        real: bool = typer.Option(True, help="also run the real-image part (EfficientNet-Lite0 on photos)"),
    ) -> None:
        """The two-stage setup on background-shift with XGIR: a pretrained, frozen extractor
        (cached after the first run), the ERM head, the DFR reference and XGIR heads; prints
        source, target and worst-group accuracy and writes report.md with figures. Then the
        built-in ImageNet model on the bundled photos: top-5 and CWOX figures in the report."""
        from xgir.bench import xgir_two_stage
        from xgir.config import check_seed
        from xgir.io import run_folder, write_text

        check_seed(seed)
        with run_folder(out) as tmp:  # the outputs as a set
            xgir_two_stage.run(tmp, [seed])
            if real:
                report = (tmp / "report.md").read_text()
                section = real_image_part(tmp / "real")
                write_text(tmp / "report.md", report.rstrip("\n") + "\n\n" + section)
        typer.echo((out / "report.md").read_text())
        typer.echo(f"results in {out}")
