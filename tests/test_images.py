"""xgir.data.images.load_images: one way to name images (issue 11), 16-bit PNGs (issue 14.5),
first-N semantics (issue 14.8b), xgir data preview / photos (issue 14.11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xgir.cli import main
from xgir.data import load_dataset
from xgir.data.images import PHOTOS, load_images, photo
from xgir.data.real import ImageFolderDataset
from xgir.data.transforms import Preprocess
from xgir.errors import XgirError

PRE = Preprocess(64, fit="crop")


def write_folder(root, modes=("RGB", "L", "RGBA", "P")):
    """A class folder of real photos saved as JPEG/PNG in mixed sizes and modes."""
    sources = {"cat": "chelsea", "cup": "coffee"}
    for cls, name in sources.items():
        (root / cls).mkdir(parents=True)
        base = photo(name).convert("RGB")
        for i, mode in enumerate(modes):
            w, h = base.size
            img = base.resize((w // (i + 1), h // (2 if i % 2 else 1))).convert(mode)
            suffix = ".jpg" if mode in ("RGB", "L") else ".png"
            img.save(root / cls / f"{name}{i}{suffix}")
    return root


def test_photos_load_in_any_mode():
    ds = load_images("photos", PRE)
    assert ds.images.shape == (len(PHOTOS), 3, 64, 64)
    assert ds.files == list(PHOTOS) and (ds.labels == -1).all()
    assert 0 <= float(ds.images.min()) and float(ds.images.max()) <= 1
    two = load_images("photos:coffee,chelsea", PRE)
    assert two.files == ["coffee", "chelsea"]
    torch.testing.assert_close(two.images[1], ds.images[0])


def test_first_n_of_a_split_and_too_many():
    full = load_dataset("decoy-digits", "test", seed=0)
    two, eight = load_images("decoy-digits:test", n=2), load_images("decoy-digits:test", n=8)
    torch.testing.assert_close(two.images, full.images[:2])
    torch.testing.assert_close(eight.images[:2], full.images[:2])
    assert torch.equal(eight.labels, full.labels[:8])
    with pytest.raises(XgirError, match="has 2000 images, fewer than n=100000"):
        load_images("decoy-digits:test", n=100000)
    with pytest.raises(XgirError, match="at least|>= 1"):
        load_images("decoy-digits:test", n=0)


def test_embedded_dataset_resized_for_a_model():
    ds = load_images("decoy-digits:test", Preprocess(56, fit="crop"), n=3)
    assert ds.images.shape == (3, 3, 56, 56) and ds.masks.shape == (3, 56, 56)


def test_class_folder_mixed_sizes_and_modes(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = load_images(str(root), PRE)
    assert ds.images.shape == (8, 3, 64, 64) and ds.classes == ["cat", "cup"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4
    first = load_images(str(root), PRE, n=3)
    torch.testing.assert_close(first.images, ds.images[:3])
    # default: the standard evaluation transform (shorter side, centre crop), not a squash
    img = Image.open(root / "cat" / "chelsea0.jpg")
    torch.testing.assert_close(ds.images[0], PRE(img))
    squashed = load_images(str(root), PRE, fit="squash")
    assert not torch.allclose(squashed.images[0], ds.images[0])
    # backwards compatible: a size alone still works
    assert ImageFolderDataset(root, 32)[0]["image"].shape == (3, 32, 32)
    with pytest.raises(XgirError, match="has 8 images, fewer than n=9"):
        load_images(str(root), PRE, n=9)


def test_files_globs_and_lists(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = load_images(str(root / "*" / "*.jpg"), PRE)
    assert len(ds) == 4 and all(f.endswith(".jpg") for f in ds.files)
    pair = load_images([str(root / "cup" / "coffee0.jpg"), str(root / "cat" / "chelsea2.png")], PRE)
    assert pair.images.shape == (2, 3, 64, 64) and pair.files[0].endswith("coffee0.jpg")
    assert len(load_images(str(root / "cat"), PRE)) == 4  # a folder of images, unlabelled


def test_sixteen_bit_png_reads_its_true_brightness(tmp_path):
    arr = np.full((40, 60), round(0.48 * 65535), dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(arr).save(path)
    ds = load_images(str(path), Preprocess(32, fit="squash"))
    assert abs(float(ds.images.mean()) - 0.48) < 0.01


@pytest.mark.parametrize("spec, match", [
    ("decoy-digit:test", "unknown dataset or image file .* images are named by an embedded dataset"),
    ("decoy-digits:tst", "unknown split 'tst'"),
    ("photos:dog", "unknown photo"),
    ("nothing/*.jpg", "no image files match"),
    ("", "empty image spec"),
])
def test_bad_specs_one_line(spec, match):
    with pytest.raises(XgirError, match=match) as info:
        load_images(spec, PRE)
    assert "\n" not in str(info.value)


def test_unreadable_image_one_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(XgirError, match="cannot read image"):
        load_images(str(bad), PRE)


def test_cli_photos_and_preview_out(tmp_path, capsys):
    assert main(["data", "photos", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "photos.png").read_bytes()[:4] == b"\x89PNG"
    assert "chelsea" in capsys.readouterr().out
    assert main(["data", "preview", "decoy-digits", "--n", "4", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "preview-decoy-digits.png").is_file()
    assert main(["data", "preview", "photos:coffee", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").is_file()
    capsys.readouterr()
    for args in (["--n", "0"], ["--n", "-1"], ["--n", "-2"], ["--out", str(tmp_path / "x.txt")]):
        assert main(["data", "preview", "decoy-digits", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
