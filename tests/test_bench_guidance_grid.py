"""The guidance grid: its runs, groups, claim checks (on made-up results) and the quick suite."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from xgir.bench import get_suite, guidance_grid
from xgir.bench._guidance_grid_report import claims
from xgir.bench.guidance_grid import CONFIGS, MODELS, QUICK, Settings, make_task
from xgir.errors import XgirError


def test_runs_of_the_full_grid():
    runs = Settings().runs()
    keys = [guidance_grid._key(r) for r in runs]
    assert len(keys) == len(set(keys)) == 58  # 7 configurations x 4 losses + 30 on the annotation axis
    main = [r for r in runs if r["fraction"] == 1.0 and r["annotation"] == "boxes"]
    assert len(main) == 7 * 4  # the annotation axis's 100 % boxes runs are the main grid's
    axis = [r for r in runs if r not in main]
    assert {(r["model"], r["attribution"], r["layer"]) for r in axis} == {
        ("vanilla", "IxG", None), ("X-DNN", "IntGrad", None), ("B-cos", "B-cos", None)}
    assert {r["fraction"] for r in axis} == {0.01, 0.1, 1.0} and {r["loss"] for r in axis} == {"Energy", "L1"}
    assert all(r["layer"] == "layer3" for r in main if r["attribution"] == "Grad-CAM")
    assert get_suite("guidance-grid") is guidance_grid
    with pytest.raises(XgirError, match="unknown loss 'Dice'"):
        Settings(losses=("Energy", "Dice"))
    with pytest.raises(XgirError, match="learning rate"):
        Settings(lr={"vanilla": 1e-3})


def test_waterbirds_photos_task_keeps_the_four_groups_at_the_grid_size():
    task = make_task("waterbirds-photos", 0, replace(QUICK, n_test=200, photo_size=48))
    assert task.test.image_shape == (3, 48, 48)
    assert set(task.groups.tolist()) == {0, 1, 2, 3}  # (bird type, place): every group at test time


@pytest.mark.parametrize("name", ["decoy-digits", "background-shift"])
def test_groups_mark_the_images_whose_spurious_feature_agrees(name):
    task = make_task(name, 0, replace(QUICK, n_test=400))
    share = float(task.groups.float().mean())
    assert 0.05 < share < 0.16  # about 1 in 10 by chance at test time
    assert task.eval_box.shape == task.eval_x.shape[:1] + task.eval_x.shape[-2:]
    if name == "decoy-digits":  # the agreeing images carry their label's training shade
        patch = task.test.extras["decoy_mask"]
        img = task.test.images[:, 0]
        agree = task.groups.bool()
        shade = torch.stack([img[i][patch[i]].mean() for i in range(len(img))])
        torch.testing.assert_close(shade[agree], (255 - 25 * task.test.labels[agree].float()) / 255, atol=2e-3,
                                   rtol=0)


def _made_up(s: Settings, *, bcos_best: bool, energy_best: bool, bcos_gain: float, wg_gain: float,
             erm_wg: float = 0.4) -> dict:
    """Per-seed results shaped as the suite's, with chosen winners."""
    runs = {}
    for m in MODELS:
        loc = {f"{meth}@{guidance_grid.layer_name(lay)}": {"epg": 0.3, "iou": 0.1}
               for mm, _, meth, lay in CONFIGS if mm == m}
        runs[f"{m} | ERM"] = {"acc": 0.6, "worst_group": erm_wg, "loc": loc}
        runs[f"{m} | control"] = {"acc": 0.6, "worst_group": 0.4, "loc": loc}
        runs[f"{m} | reference"] = {"acc": 0.9, "worst_group": 0.85, "loc": loc}
    for r in s.runs():
        epg = 0.5 + (0.2 if energy_best and r["loss"] == "Energy" else 0.1 if r["loss"] == "L1" else 0.0)
        if r["model"] == "B-cos" and r["layer"] is None and r["attribution"] == "B-cos":
            epg += 0.2 if bcos_best else -0.3
        acc = 0.6 + (bcos_gain if r["model"] == "B-cos" else 0.0)
        wg = 0.4 + (wg_gain if r["model"] == "B-cos" and r["fraction"] < 1 else 0.0)
        runs[guidance_grid._key(r)] = {"acc": acc, "worst_group": wg,
                                       "loc": {f"{r['method']}@{guidance_grid.layer_name(r['layer'])}":
                                               {"epg": epg, "iou": 0.2}}}
    return {0: {"decoy-digits": runs}, 1: {"decoy-digits": runs}}


def test_claims_follow_the_numbers():
    s = replace(Settings(), datasets=("decoy-digits",))
    yes = claims(_made_up(s, bcos_best=True, energy_best=True, bcos_gain=0.05, wg_gain=0.1), "decoy-digits", s)
    assert len(yes) == 4 and all("**reproduced**" in line for line in yes)
    no = claims(_made_up(s, bcos_best=False, energy_best=False, bcos_gain=-0.05, wg_gain=0.0), "decoy-digits", s)
    assert len(no) == 4 and all("**not reproduced**" in line for line in no)
    assert "1% of annotations (boxes)" in no[3]


def test_accuracy_claims_need_erm_models_above_the_gate():
    """A model that learned the shortcut alone (ERM worst group 0) leaves claims 3 and 4 untested,
    whatever the numbers; the localisation claims are still judged."""
    s = replace(Settings(), datasets=("decoy-digits",))
    floor = claims(_made_up(s, bcos_best=True, energy_best=True, bcos_gain=0.05, wg_gain=0.1, erm_wg=0.02),
                   "decoy-digits", s)
    assert "**reproduced**" in floor[0] and "**reproduced**" in floor[1]
    assert all("**not testable here**" in line for line in floor[2:]), floor


def test_pretraining_gives_every_model_a_fresh_head_over_the_glyph_body():
    s = replace(QUICK, n_pretrain=64)
    task = make_task("decoy-digits", 0, s)
    glyphs = guidance_grid.pretrain_set("decoy-digits", task, 0, s)
    assert glyphs is not None and glyphs.image_shape == task.train.image_shape and glyphs.num_classes == 36
    assert guidance_grid.pretrain_set("decoy-digits", task, 0, replace(s, pretrain_epochs=0)) is None
    for name in MODELS:
        fresh = guidance_grid.pretrained(name, task, None, 0, s, progress=False)
        model = guidance_grid.pretrained(name, task, glyphs, 0, s, progress=False)
        got, before = model.state_dict(), fresh.state_dict()
        assert got["fc.weight"].shape[0] == task.train.num_classes
        torch.testing.assert_close(got["fc.weight"], before["fc.weight"])  # the head: fresh, as built
        moved = [k for k in got if not k.startswith("fc.") and got[k].is_floating_point()
                 and not torch.equal(got[k], before[k])]
        assert moved, f"{name}: no weight of the body changed in pretraining"


def test_quick_suite(tmp_path, capsys):
    from xgir.cli import main

    assert main(["bench", "guidance-grid", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for text in ("## decoy-digits", "## background-shift", "| B-cos | B-cos | input | Energy |",
                 "| X-DNN | IntGrad | input | control (+1 epochs) |",
                 "| B-cos | B-cos | input | reference (no shortcut) |", "| vanilla | Grad-CAM | final | RRR* |",
                 "Claim 1", "Claim 2", "Claim 3", "Claim 4", "### Annotated fraction: worst-group accuracy"):
        assert text in report, text
    saved = json.loads((tmp_path / "results.json").read_text())
    runs = saved["per_seed"]["0"]["background-shift"]
    assert len(runs) == 9 + len(QUICK.runs())  # reference, ERM and control of 3 models
    entry = runs["B-cos | B-cos @ input | Energy | 100% boxes"]
    assert entry["weight"] > 0 and 0 <= entry["loc"]["bcos@input"]["epg"] <= 1 and 0 <= entry["worst_group"] <= 1
    assert set(runs["B-cos | ERM"]["loc"]) == {"bcos@input", "bcos@final", "gradcam@final"}
    for png in ("tradeoff.png", "bcos-decoy-digits.png", "bcos-background-shift.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_quick_photo_suite(tmp_path):
    from xgir.bench import guidance_grid_photos
    from xgir.cli import main

    assert get_suite("guidance-grid-photos") is guidance_grid_photos
    assert main(["bench", "guidance-grid-photos", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for text in ("## waterbirds-photos", "lowest of Waterbirds' four", "| B-cos | B-cos | input | L1 |",
                 "birds' species", "Claim 4"):
        assert text in report, text
    runs = json.loads((tmp_path / "results.json").read_text())["per_seed"]["0"]["waterbirds-photos"]
    assert len(runs) == 9 + len(guidance_grid_photos.QUICK.runs())
    assert "PPCE" not in " ".join(runs)  # the study's Waterbirds losses only
    assert (tmp_path / "bcos-waterbirds-photos.png").read_bytes()[:4] == b"\x89PNG"
