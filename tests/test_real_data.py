import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from xgir.data.real import ImageFolderDataset, load_mnist, read_idx
from xgir.errors import XgirError


def _write_idx(path, array, gz=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    ds = load_mnist(tmp_path, "test")
    assert ds.images.shape == (5, 1, 28, 28)
    assert torch.allclose(ds.images[:, 0] * 255, torch.from_numpy(images).float())
    assert ds.labels.tolist() == [3, 1, 4, 1, 5]


def test_idx_errors(tmp_path):
    with pytest.raises(XgirError, match="not found"):
        read_idx(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(XgirError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((4, 2), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(XgirError, match="header says"):
        read_idx(short)
    with pytest.raises(XgirError, match="no file"):
        load_mnist(tmp_path, "train")


def test_image_folder_with_masks(tmp_path):
    root, masks = tmp_path / "imgs", tmp_path / "masks"
    for label, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        (masks / cls).mkdir(parents=True)
        for k in range(2):
            arr = np.full((10, 12, 3), 40 * (label + 1), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"im{k}.png")
            m = np.zeros((10, 12), dtype=np.uint8)
            m[2:5, 3:9] = 255
            Image.fromarray(m).save(masks / cls / f"im{k}.png")
    ds = ImageFolderDataset(root, size=8, mask_root=masks)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    assert ds.labels.tolist() == [0, 0, 1, 1]
    loaded = ds.load()
    assert loaded.images.shape == (4, 3, 8, 8)
    assert loaded.masks.any() and not loaded.masks.all()
    # same class list for a second folder keeps labels aligned
    ds2 = ImageFolderDataset(root, size=8, classes=["dog", "cat"])
    assert ds2.labels.tolist() == [0, 0, 1, 1] and ds2.files[0].parent.name == "dog"


def test_image_folder_errors(tmp_path):
    with pytest.raises(XgirError, match="not found"):
        ImageFolderDataset(tmp_path / "none")
    (tmp_path / "a").mkdir()
    with pytest.raises(XgirError, match="no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, size=8)
    with pytest.raises(XgirError, match="cannot read image"):
        ds[0]
