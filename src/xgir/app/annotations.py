"""The annotations a correction will use, for the fine-tune page: one row per image with feedback
(a thumbnail, its irrelevant and relevant pixels, who marked them) and a warning where the
rejected region covers the explanation's own evidence (the core of its Grad-CAM,
:func:`xgir.app.analysis.evidence`): rejecting the object itself teaches the model to ignore it."""

from __future__ import annotations

from typing import Any

from xgir.app import analysis
from xgir.app.state import AppState

MAX_CHECKED = 48  # annotated images whose evidence is computed for the warning (the rest: not checked)


def annotation_rows(state: AppState) -> list[dict[str, Any]]:
    """Rows by image id: id, name, irrelevant / relevant pixel counts, annotators, used (irrelevant
    regions are what the correction uses), evidence (share of the evidence core rejected, or None
    when not checked) and warn (at least :data:`xgir.app.analysis.FLAG_CORE` of it)."""
    with state.store() as store:
        records = store.records()
    by_image: dict[int, dict[str, Any]] = {}
    for r in records:
        if not r["accepted"]:
            continue
        row = by_image.setdefault(int(r["image_id"]), {"irrelevant": None, "relevant": 0, "annotators": set()})
        if r["irrelevant"]:
            row["irrelevant"] = r["mask"] if row["irrelevant"] is None else row["irrelevant"] | r["mask"]
        else:
            row["relevant"] += int(r["mask"].sum())
        row["annotators"].add(str(r["annotator"]))
    out = []
    for k, i in enumerate(sorted(by_image)):
        row = by_image[i]
        irr = row["irrelevant"]
        share = None
        if irr is not None and k < MAX_CHECKED:
            _, core = analysis.evidence(state, i)
            share = float((core & irr).sum() / max(int(core.sum()), 1))
        out.append({"id": i, "name": state.images.names[i], "irrelevant": 0 if irr is None else int(irr.sum()),
                    "relevant": row["relevant"], "annotators": ", ".join(sorted(row["annotators"])),
                    "used": irr is not None and bool(irr.any()), "evidence": share,
                    "warn": share is not None and share >= analysis.FLAG_CORE})
    return out
