"""waterbirds-photos (issue 23): the photographic composites, their groups and masks, the scene
probe, one-line errors, and the quick ``xgir bench waterbirds-photos``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xgir.data import load_dataset
from xgir.data.cutouts import Cutout, paste, read_cutout, read_scene
from xgir.data.waterbirds_photos import (
    LANDBIRDS,
    PACKAGES,
    SCENES,
    WATERBIRDS,
    bird_species,
    group_subset,
    photo_pool,
    scene_probe,
)
from xgir.errors import XgirError


def test_paste_is_exact_binary_alpha():
    """Outside the mask the background is untouched; inside, the cut-out's own pixels."""
    rgb = np.full((20, 10, 3), 200, np.uint8)
    alpha = np.zeros((20, 10), bool)
    alpha[2:18, 2:8] = True
    back = np.random.default_rng(0).integers(0, 100, (64, 64, 3)).astype(np.uint8)
    img, mask = paste(back, Cutout("bar", rgb, alpha), np.random.default_rng(1), extent=(0.5, 0.5))
    assert mask.any() and (img[~mask] == back[~mask]).all() and (img[mask] == 200).all()
    assert 0.5 * 64 * 0.8 * 0.6 * 0.5 < mask.sum() < 0.5 * 64 * 32  # the bar scaled to half the side


def test_splits_have_waterbirds_shares_bias_and_exact_masks():
    src = load_dataset("waterbirds-photos", "source-train", n=120, seed=0)
    assert src.images.shape == (120, 3, 224, 224) and src.masks.dtype == torch.bool
    assert abs(float(src.labels.float().mean()) - 0.23) < 0.01  # Waterbirds' share of waterbirds
    assert float(src.extras["aligned"].float().mean()) > 0.85  # p = 0.95
    assert torch.equal(src.groups, 2 * src.labels + src.extras["place"])
    assert 0.04 < float(src.masks.float().mean()) < 0.2
    tgt = load_dataset("waterbirds-photos", "target-test", n=200, seed=0)
    for c in (0, 1):  # places balanced within each class
        assert 0.3 < float(tgt.extras["place"][tgt.labels == c].float().mean()) < 0.7
    # deterministic, and the same birds in every split (Waterbirds keeps its species)
    again = load_dataset("waterbirds-photos", "source-train", n=120, seed=0)
    assert torch.equal(again.images, src.images)
    birds = set(LANDBIRDS + WATERBIRDS)
    assert {f.partition("@")[0] for f in src.files} <= birds and {f.partition("@")[0] for f in tgt.files} <= birds
    other = load_dataset("waterbirds-photos", "source-train", n=120, seed=1)
    assert not torch.equal(other.images, src.images)


def test_bird_species_names_each_bird_over_textures_not_the_photographs():
    sp = bird_species(seed=0, n=200, size=32)
    assert sp.images.shape == (200, 3, 32, 32) and sp.num_classes == len(LANDBIRDS + WATERBIRDS) == 34
    assert sorted(sp.classes) == sorted(LANDBIRDS + WATERBIRDS)
    assert all(f.partition("@")[0] == sp.classes[int(y)] for f, y in zip(sp.files, sp.labels, strict=True))
    assert all(f.partition("@")[2].startswith("texture-") for f in sp.files)  # never a benchmark photograph
    assert len(set(sp.labels.tolist())) > 30 and sp.masks.any((1, 2)).all()
    assert torch.equal(bird_species(seed=0, n=200, size=32).images, sp.images)


def test_pool_and_group_subset():
    pool = photo_pool("train", {(0, 0): 6, (0, 1): 2, (1, 0): 2, (1, 1): 4})
    assert torch.bincount(pool.groups).tolist() == [6, 2, 2, 4]
    idx = group_subset(pool.groups, {0: 3, 2: 1}, seed=0)
    assert sorted(pool.groups[idx].tolist()) == [0, 0, 0, 2]
    assert not torch.equal(idx, group_subset(pool.groups, {0: 3, 2: 1}, seed=5)) or len(idx) < 2
    with pytest.raises(XgirError, match="larger pool"):
        group_subset(pool.groups, {1: 3}, seed=0)


def test_one_line_errors(tmp_path):
    Image.new("RGB", (10, 10), "red").save(tmp_path / "rgb.png")
    with pytest.raises(XgirError, match="no alpha channel") as err:
        read_cutout(tmp_path / "rgb.png")
    assert "\n" not in str(err.value)
    Image.new("RGBA", (10, 10), (255, 0, 0, 255)).save(tmp_path / "opaque.png")
    with pytest.raises(XgirError, match="all opaque"):
        read_cutout(tmp_path / "opaque.png")
    with pytest.raises(XgirError, match="apt-get install tuxpaint-stamps-default") as err:
        load_dataset("waterbirds-photos", "source-train", n=4, birds_root=str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value)
    with pytest.raises(XgirError, match="region"):
        read_scene(tmp_path / "rgb.png", region=(0.5, 0.0, 0.4, 1.0))
    with pytest.raises(XgirError, match="unknown split"):
        load_dataset("waterbirds-photos", "train")


def test_the_ci_installs_the_packages_the_builder_names():
    script = (Path(__file__).parents[1] / "scripts" / "debian-packages.sh").read_text()
    assert set(re.findall(r"\[([a-z0-9.-]+)\]=/", script)) == set(PACKAGES)


def test_scene_probe_agrees_with_the_water_and_land_lists():
    from xgir.models import load_model

    model = load_model("efficientnet-lite0").model
    torch.set_num_threads(1)
    share = scene_probe(model, crops=4)
    water = [share[k] for k, (place, _, _) in SCENES.items() if place == "water"]
    land = [share[k] for k, (place, _, _) in SCENES.items() if place == "land"]
    assert min(water) >= 0.75, share
    assert max(land) <= 0.5 and float(np.mean(land)) < 0.15, share


def test_quick_suite_writes_its_tables_and_figures(tmp_path, monkeypatch):
    from xgir.bench import get_suite

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))
    res = get_suite("waterbirds-photos").run(tmp_path / "out", [0], quick=True)
    for name in ("report.md", "results.json", "wga.png", "cores.png"):
        assert (tmp_path / "out" / name).is_file(), name
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    methods = [r["method"] for r in saved["table"]]
    assert methods[:2] == ["ERM head", "DFR (group labels, reference)"]
    for fam in ("AFR", "ExMap", "DaC", "XGIR", "class-balanced last layer", "error upweighting (JTT, last layer)"):
        for proto in ("annotation-free", "group-labelled"):
            assert f"{fam} ({proto} selection)" in methods
    # the gap closed is computed from the table's own means
    erm, dfr = (np.mean(saved["table"][i]["worst_group"]) for i in (0, 1))
    for row in saved["table"]:
        if dfr != erm:
            assert row["gap_closed"] == pytest.approx((np.mean(row["worst_group"]) - erm) / (dfr - erm))
    # selection used target-val only: the chosen setting has the best target-val worst-class accuracy
    fam = saved["per_seed"]["0"]["families"]["XGIR"]
    pick = saved["selected"]["XGIR"]["annotation-free"]["0"]
    assert fam[pick]["val_worst_class"] == max(v["val_worst_class"] for v in fam.values())
    assert "pretrained 10%: precision" in res["cores"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "annotation-free" in report and "| ERM head |" in report
