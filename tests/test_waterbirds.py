"""Waterbirds read from its standard folder (metadata.csv, images, CUB segmentations) as an
image spec: labels, groups, places, splits, masks, laziness, one-line errors, and the commands
(xgir features, explain, evaluate, correct) on a tiny fake folder."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from _pipeline_models import WATERBIRDS_ROWS, write_waterbirds
from xgir.cli import main
from xgir.data import WaterbirdsDataset
from xgir.data.images import load_images, open_images
from xgir.data.real import LazyImageDataset
from xgir.data.transforms import Preprocess
from xgir.data.waterbirds import GROUP_NAMES, parse_spec
from xgir.errors import XgirError

MODEL = "_pipeline_models:tiny_resnet"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_waterbirds(tmp_path_factory.mktemp("wb") / "waterbird_complete95_forest2water2")


def _rows(split):
    return [(y, place) for _, y, s, place in WATERBIRDS_ROWS if s == split]


@pytest.mark.parametrize("split, code", [("train", 0), ("val", 1), ("test", 2)])
def test_splits_labels_groups_places(root, split, code):
    ds = WaterbirdsDataset(root, split, size=16)
    rows = _rows(code)
    assert len(ds) == len(rows) and ds.name == f"waterbirds:{split}"
    assert ds.classes == ["landbird", "waterbird"]
    assert ds.labels.tolist() == [y for y, _ in rows]
    assert ds.extras["place"].tolist() == [p for _, p in rows]
    assert ds.groups.tolist() == [2 * y + p for y, p in rows]
    assert ds.group_names == GROUP_NAMES == ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    assert all(f.is_relative_to(root) and f.is_file() for f in ds.files)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["label"] == rows[0][0]
    assert item["group"] == 2 * rows[0][0] + rows[0][1] and int(item["place"]) == rows[0][1]


def test_every_row_and_load(root):
    everything = WaterbirdsDataset(root)
    assert len(everything) == len(WATERBIRDS_ROWS) and everything.name == "waterbirds"
    loaded = load_images(f"{root}:val", Preprocess(16))
    assert loaded.images.shape == (4, 3, 16, 16) and loaded.name == "waterbirds:val"
    assert loaded.groups.tolist() == [0, 1, 2, 3] and loaded.group_names == GROUP_NAMES
    assert loaded.extras["place"].tolist() == [0, 1, 0, 1] and loaded.classes == ["landbird", "waterbird"]
    # water is blue, land green; the bird is bright for waterbirds: the pixels follow the metadata
    corner = loaded.images[:, :, 0, 0]
    assert bool((corner[:, 2] > corner[:, 1]).eq(loaded.extras["place"].bool()).all())
    centre = loaded.images[:, :, 8, 8].mean(1)
    assert bool(((centre > 0.6) == loaded.labels.bool()).all())
    assert len(load_images(str(root), Preprocess(16), n=3)) == 3
    with pytest.raises(XgirError, match=r":test has 4 images, fewer than n=5"):
        load_images(f"{root}:test", Preprocess(16), n=5)


def test_masks_default_custom_and_none(root, tmp_path):
    ds = WaterbirdsDataset(root, "test", preprocess=Preprocess(24, fit="squash"))
    assert ds.has_masks and ds.mask_root == root / "segmentations"
    mask = ds[0]["mask"]
    assert mask.dtype == torch.bool and mask.shape == (24, 24)
    # object = grey > 0: the soft edge (grey 51) counts
    grey = Preprocess(24, fit="squash").geometry(Image.open(ds.mask_files[0]), Image.Resampling.NEAREST)
    assert np.array_equal(mask.numpy(), np.asarray(grey) > 0) and mask.sum() > (np.asarray(grey) > 127).sum()
    loaded = ds.load()
    assert loaded.masks.shape == (4, 24, 24) and torch.equal(loaded.masks[0], mask)
    batch = next(ds.batches(4))
    assert batch["mask"].shape == (4, 24, 24) and batch["group"].tolist() == [0, 1, 2, 3]
    assert WaterbirdsDataset(root, "test", masks=False).load().masks is None
    # a mask root named by the user (CUB's segmentations kept elsewhere)
    other = tmp_path / "copy"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns("segmentations"))
    assert not WaterbirdsDataset(other, "test").has_masks
    named = WaterbirdsDataset(other, "test", preprocess=Preprocess(24, fit="squash"), masks=root / "segmentations")
    assert torch.equal(named.load().masks, loaded.masks)
    assert load_images(f"{other}:test", Preprocess(24, fit="squash"), masks=root / "segmentations").masks is not None
    with pytest.raises(XgirError, match="mask folder not found"):
        WaterbirdsDataset(other, "test", masks=tmp_path / "nowhere")
    (other / "segmentations" / "002.Cardinal").mkdir(parents=True)
    with pytest.raises(XgirError, match=r"'.*:test' has 4 images without a mask in .*segmentations \(first: "
                                        r"metadata.csv line 12, .*Cardinal_0010.png.*masks=False"):
        WaterbirdsDataset(other, "test")


def test_lazy_nothing_read_until_asked(root, monkeypatch):
    reads = []
    real_open = LazyImageDataset._open
    monkeypatch.setattr(LazyImageDataset, "_open", lambda self, path: reads.append(path) or real_open(self, path))
    ds = open_images(f"{root}:train", Preprocess(16))
    assert isinstance(ds, WaterbirdsDataset) and reads == []
    ds[2]
    assert [p.suffix for p in reads] == [".png", ".png"] and "segmentations" in str(reads[1])  # image, mask
    assert open_images(f"{root}:train", Preprocess(16), masks=False).has_masks is False


def test_spec_rule(root, tmp_path, monkeypatch):
    assert parse_spec(str(root)) == (root, None)
    assert parse_spec(f"{root}:val") == (root, "val")
    assert parse_spec(f"{root}:nonsense") == (root, "nonsense")  # the split is checked by the dataset
    assert parse_spec(str(tmp_path)) is None and parse_spec("decoy-digits:test") is None
    # an embedded name wins unless a path of that exact name exists
    monkeypatch.chdir(tmp_path)
    write_waterbirds(tmp_path / "decoy-digits", rows=WATERBIRDS_ROWS[:2], masks=False)
    assert open_images("decoy-digits:test") is None
    assert isinstance(open_images("./decoy-digits:train"), WaterbirdsDataset)
    # an existing folder whose name holds a colon is read as itself
    odd = write_waterbirds(tmp_path / "a:b", rows=WATERBIRDS_ROWS[:2], masks=False)
    assert len(open_images(str(odd))) == 2 and len(open_images(f"{odd}:train")) == 2
    with pytest.raises(XgirError, match="its classes are landbird, waterbird"):
        open_images(str(root), classes=["cat", "dog"])


def _bad(tmp_path, text, name="bad"):
    folder = write_waterbirds(tmp_path / name, rows=WATERBIRDS_ROWS[:4], masks=False)
    (folder / "metadata.csv").write_text(text)
    return folder


@pytest.mark.parametrize("text, spec, pattern", [
    ("img_id,img_filename,y,split\n1,x.png,0,0\n", "", r"lacks the column place \(found: img_id, img_filename, "
     r"y, split\); a Waterbirds metadata.csv has img_id"),
    ("img_filename,y,split,place\n", "", "has a header but no rows"),
    ("img_filename,y,split,place\n001.Black_footed_Albatross/gone.png,1,0,1\n", "",
     r"metadata.csv names 1 image missing from .*bad \(first: metadata.csv line 2, .*gone.png\); check that"),
    ("img_filename,y,split,place\n002.Cardinal/Cardinal_0002.png,0,3,0\n", "",
     r"line 2: split is '3'; it must be 0 \(train\), 1 \(val\) or 2 \(test\)"),
    ("img_filename,y,split,place\n002.Cardinal/Cardinal_0002.png,bird,0,0\n", "", "line 2: y is 'bird'"),
    ("img_filename,y,split,place\n002.Cardinal/Cardinal_0002.png,0,0,0\n", ":val",
     r"bad:val' selects no images: .*metadata.csv has no row with split 1 \(val\)"),
    ("img_filename,y,split,place\n002.Cardinal/Cardinal_0002.png,0,0,0\n", ":valid",
     r"unknown Waterbirds split 'valid' in .*:valid'; choose train, val or test"),
])
def test_errors_one_line(tmp_path, text, spec, pattern):
    folder = _bad(tmp_path, text)
    with pytest.raises(XgirError, match=pattern) as err:
        load_images(f"{folder}{spec}", Preprocess(16))
    assert "\n" not in str(err.value)


def test_cli_features_explain_evaluate(root, tmp_path, capsys):
    feats = tmp_path / "f.pt"
    assert main(["features", "--model", MODEL, "--images", f"{root}:val", "--out", str(feats), "--quiet"]) == 0
    saved = torch.load(feats, weights_only=True)
    assert saved["h"].shape == (4, 16) and saved["labels"].tolist() == [0, 0, 1, 1]
    assert saved["groups"].tolist() == [0, 1, 2, 3] and saved["group_names"] == GROUP_NAMES
    assert saved["classes"] == ["landbird", "waterbird"] and saved["files"][0].endswith(".png")
    out = tmp_path / "explain"
    assert main(["explain", "--model", MODEL, "--images", f"{root}:test", "--method", "gradcam",
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "explain.json").read_text())
    assert record["labels"] == [0, 0, 1, 1] and np.load(out / "maps.npy").shape[0] == 4
    ev = tmp_path / "evaluate"
    assert main(["evaluate", "--model", MODEL, "--images", f"{root}:test", "--explainer", "gradcam",
                 "--n", "3", "--step", "5000", "--out", str(ev), "--quiet"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["dataset"] == "waterbirds:test" and len(metrics["indices"]) == 3
    capsys.readouterr()
    assert main(["features", "--model", MODEL, "--images", f"{root}:testing", "--out", str(feats)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown Waterbirds split 'testing'") and "\n" not in err


def test_correct_streams_waterbirds_splits(root, tmp_path):
    cfg = {
        "model": {"factory": "_pipeline_models:tiny_resnet", "kwargs": {"num_classes": 2, "width": 4},
                  "head": "fc", "deep_layer": "layer3"},
        "data": {"source_train": f"{root}:train", "source_test": f"{root}:val", "target_test": f"{root}:test",
                 "image_size": 32, "batch_size": 4},
        "xgir": {"draws": 1, "head_epochs": 1},
        "out": str(tmp_path / "run"), "device": "cpu",
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["correct", "--config", str(path), "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["images"] == {"source_train": 6, "source_test": 4, "target_test": 4}


def test_preview_reads_the_first_n(root, tmp_path, capsys):
    assert main(["data", "preview", f"{root}:train", "--n", "2", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file()
