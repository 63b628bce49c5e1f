"""``xgir data export`` and ``xgir data shift``: a shift benchmark written as a user's data, class
folders per split and the Waterbirds format over the same files, read back pixel for pixel;
one-line errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xgir.cli import main
from xgir.data import ImageFolderDataset, WaterbirdsDataset
from xgir.data.images import load_images
from xgir.data.transforms import Preprocess
from xgir.data.waterbirds_photos import BIRDS_ROOT, waterbirds_photos

needs_photos = pytest.mark.skipif(not Path(BIRDS_ROOT).is_dir(), reason="tuxpaint-stamps-default not installed")
SPLITS = ["source-train", "source-val", "source-test", "target-val", "target-test"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "wbp"
    assert main(["data", "export", "waterbirds-photos", "--out", str(out), "--n", "10", "--seed", "3",
                 "--n-per-split", "target-test=12", "--quiet"]) == 0
    return out


@needs_photos
def test_export_waterbirds_photos_both_formats(exported):
    res = json.loads((exported / "export.json").read_text())
    assert res["dataset"] == "waterbirds-photos" and res["seed"] == 3 and res["classes"] == ["landbird", "waterbird"]
    assert {s: v["images"] for s, v in res["splits"].items()} == {**dict.fromkeys(SPLITS, 10), "target-test": 12}
    assert {s: v["waterbirds_split"] for s, v in res["splits"].items()} == {
        "source-train": "train", "source-val": None, "source-test": None, "target-val": "val", "target-test": "test"}
    meta = _rows(exported / "metadata.csv")
    assert [int(r["split"]) for r in meta] == [0] * 10 + [1] * 10 + [2] * 12
    every = _rows(exported / "images.csv")
    assert len(every) == 52 and {r["split"] for r in every} == set(SPLITS)
    pre = Preprocess(224, fit="squash")
    for split, wb in (("source-train", "train"), ("target-val", "val"), ("target-test", "test")):
        ds = waterbirds_photos(split, seed=3, n=12 if split == "target-test" else 10)
        back = WaterbirdsDataset(exported, wb, preprocess=pre)
        assert back.has_masks and len(back) == len(ds)
        loaded = back.load()
        # the same images, masks, labels and groups, in the same order (uint8 PNG of uint8 renders)
        assert torch.equal(loaded.images, ds.images) and torch.equal(loaded.masks, ds.masks)
        assert torch.equal(loaded.labels, ds.labels) and torch.equal(loaded.groups, ds.groups)
    folder = ImageFolderDataset(exported / "source-test", preprocess=pre)
    assert folder.classes == ["landbird", "waterbird"] and len(folder) == 10
    ds = waterbirds_photos("source-test", seed=3, n=10)
    assert sorted(folder.labels.tolist()) == sorted(ds.labels.tolist())
    # as image specs
    assert len(load_images(f"{exported}:test", pre)) == 12 and len(load_images(str(exported / "source-val"), pre)) == 10


@needs_photos
def test_rerun_replaces_and_foreign_folder_refused(exported, tmp_path, capsys):
    assert main(["data", "export", "waterbirds-photos", "--out", str(exported), "--n", "4", "--quiet"]) == 0
    assert len(_rows(exported / "metadata.csv")) == 12 and not (exported / "export.json.tmp").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["data", "export", "waterbirds-photos", "--out", str(foreign), "--n", "4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "xgir did not write" in err and "\n" not in err
    assert (foreign / "notes.txt").read_text() == "mine"


def test_export_another_dataset_as_class_folders(tmp_path):
    out = tmp_path / "bs"
    assert main(["data", "export", "background-shift", "--out", str(out), "--n", "6", "--quiet"]) == 0
    res = json.loads((out / "export.json").read_text())
    assert not (out / "metadata.csv").exists() and res["waterbirds"] is None
    assert set(res["splits"]) == set(SPLITS) and all(v["images"] == 6 for v in res["splits"].values())
    back = load_images(str(out / "target-test"), Preprocess(32, fit="squash"))
    ds = __import__("xgir.data", fromlist=["load_dataset"]).load_dataset("background-shift", "target-test", n=6)
    assert sorted(back.labels.tolist()) == sorted(ds.labels.tolist())
    assert (out / "segmentations" / "target-test").is_dir()


def _cutout(path, color, shape="disc"):
    """A 40 x 40 RGBA cut-out: a coloured disc or square, transparent elsewhere."""
    arr = np.zeros((40, 40, 4), dtype=np.uint8)
    arr[..., :3] = color
    yy, xx = np.mgrid[:40, :40]
    inside = (yy - 20) ** 2 + (xx - 20) ** 2 < 200 if shape == "disc" else (abs(yy - 20) < 12) & (abs(xx - 20) < 12)
    arr[..., 3] = inside * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGBA").save(path)


def _user_folders(root, classes=("cat", "dog"), places=("indoor", "outdoor")):
    for c, cls in enumerate(classes):
        for i in range(2):
            color = (200 * (c % 2), 50 * i, 255 - 100 * c)
            _cutout(root / "objects" / cls / f"{cls}{i}.png", color, "disc" if c else "square")
    rng = np.random.default_rng(0)
    for q, place in enumerate(places):
        (root / "places" / place).mkdir(parents=True)
        for i in range(2):
            base = np.full((60, 80, 3), 60 + 120 * q, dtype=np.uint8)
            Image.fromarray((base + rng.integers(0, 40, base.shape)).astype(np.uint8)).save(
                root / "places" / place / f"{place}{i}.jpg")
    return root / "objects", root / "places"


def _shift(objects, places, out, align="cat=indoor,dog=outdoor", *extra):
    return main(["data", "shift", "--objects", str(objects), "--places", str(places), "--align", align,
                 "--out", str(out), "--size", "32", "--n", "20", "--quiet", *extra])


def test_shift_from_user_folders(tmp_path, capsys):
    objects, places = _user_folders(tmp_path)
    out = tmp_path / "shift"
    assert _shift(objects, places, out, "cat=outdoor,dog=indoor", "--p", "0.9") == 0
    printed = capsys.readouterr().out
    assert f"(Waterbirds {out}:train)" in printed
    res = json.loads((out / "export.json").read_text())
    assert res["classes"] == ["cat", "dog"] and res["places"] == ["indoor", "outdoor"]
    # place codes: the place of class y is y (cat's outdoor is 0, dog's indoor is 1), as Waterbirds
    assert res["waterbirds"]["place"] == {"1": "indoor", "0": "outdoor"}
    train = WaterbirdsDataset(out, "train", preprocess=Preprocess(32, fit="squash"))
    aligned = (train.extras["place"] == train.labels).float().mean()
    assert aligned >= 0.8 and train.has_masks
    rows = [r for r in _rows(out / "images.csv") if r["split"] == "target-test"]
    assert {r["group"] for r in rows} == {"cat/indoor", "cat/outdoor", "dog/indoor", "dog/outdoor"}
    test = load_images(str(out / "target-test"), Preprocess(32, fit="squash"))
    assert test.classes == ["cat", "dog"] and test.images.shape == (20, 3, 32, 32)
    # three classes: class folders only, and the reason printed
    three = tmp_path / "three"
    objects3, places3 = _user_folders(three, classes=("a", "b", "c"))
    assert _shift(objects3, places3, three / "out", "a=indoor,b=outdoor,c=outdoor") == 0
    assert not (three / "out" / "metadata.csv").exists() and "no metadata.csv" in capsys.readouterr().out


@pytest.mark.parametrize("case, pattern", [
    ("missing", "--objects {objects}x: folder not found"),
    ("empty-class", "--objects: {objects}/cat holds no images"),
    ("no-alpha", "has no alpha channel (mode RGB)"),
    ("unknown-place", "--align cat=garden: no place 'garden' in {places} (places: indoor, outdoor)"),
    ("unknown-class", "--align names the class 'owl', which has no folder"),
    ("unaligned", "--align gives no place to the class 'dog'"),
    ("bad-pairs", "--align expects NAME=VALUE,NAME=VALUE, got 'cat'"),
    ("empty-places", "--places {places} has no subfolders"),
])
def test_shift_errors_one_line(tmp_path, capsys, case, pattern):
    objects, places = _user_folders(tmp_path)
    align = {"unknown-place": "cat=garden,dog=outdoor", "unknown-class": "cat=indoor,dog=outdoor,owl=indoor",
             "unaligned": "cat=indoor", "bad-pairs": "cat"}.get(case, "cat=indoor,dog=outdoor")
    obj = objects
    if case == "missing":
        obj = Path(f"{objects}x")
    elif case == "empty-class":
        for f in (objects / "cat").iterdir():
            f.unlink()
    elif case == "no-alpha":
        Image.new("RGB", (10, 10)).save(objects / "cat" / "flat.png")
    elif case == "empty-places":
        places = tmp_path / "none"
        places.mkdir()
    capsys.readouterr()
    assert _shift(obj, places, tmp_path / "out", align) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert pattern.format(objects=objects, places=places) in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, pattern", [
    (["nope"], "unknown dataset 'nope'; choose one of"),
    (["background-shift", "--n-per-split", "train=3"], "--n-per-split: unknown split 'train'; the splits are"),
    (["background-shift", "--n", "0"], "split source-train: give at least 1 image, got 0"),
    (["background-shift", "--n-per-split", "source-train=x"], "--n-per-split source-train=x: not a whole number"),
])
def test_export_errors_one_line(tmp_path, capsys, args, pattern):
    assert main(["data", "export", *args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and pattern in err, err
    assert not (tmp_path / "out").exists()
