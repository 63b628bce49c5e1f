import pytest
import torch

from xgir.data import TEXTURE_FAMILIES, load_dataset
from xgir.data.digits import split_pools
from xgir.errors import XgirError


def test_decoy_digits_shapes_and_shades():
    train = load_dataset("decoy-digits", "train", seed=0, n=300)
    assert train.images.shape == (300, 1, 28, 28)
    assert train.images.min() >= 0 and train.images.max() <= 1
    decoy = train.extras["decoy_mask"]
    assert decoy.sum(dim=(1, 2)).eq(16).all()  # one 4x4 patch per image
    shade = (train.images[:, 0] * decoy).sum(dim=(1, 2)) / 16
    assert torch.allclose(shade, (255 - 25 * train.labels.float()) / 255, atol=1e-6)
    assert not (train.masks & decoy).any()
    test = load_dataset("decoy-digits", "test", seed=0, n=300)
    shade_t = (test.images[:, 0] * test.extras["decoy_mask"]).sum(dim=(1, 2)) / 16
    match = torch.isclose(shade_t, (255 - 25 * test.labels.float()) / 255).float().mean()
    assert match < 0.3  # random at test time
    clean = load_dataset("decoy-digits", "test", seed=0, n=300, decoys=False)
    assert not clean.extras["decoy_mask"].any()


def test_determinism_and_seeds():
    a = load_dataset("background-shift", "source-train", seed=3, n=50)
    b = load_dataset("background-shift", "source-train", seed=3, n=50)
    c = load_dataset("background-shift", "source-train", seed=4, n=50)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_pools_are_disjoint():
    pools = split_pools({"a": 0.5, "b": 0.25, "c": 0.25}, seed=0)
    seen = torch.cat(list(pools.values()))
    assert len(seen) == len(torch.unique(seen))


def test_background_shift_correlation():
    src = load_dataset("background-shift", "source-train", seed=0, n=2000, p=0.9)
    tgt = load_dataset("background-shift", "target-test", seed=0, n=2000)
    aligned_src = (src.extras["texture"] == src.labels).float().mean()
    aligned_tgt = (tgt.extras["texture"] == tgt.labels).float().mean()
    assert abs(aligned_src - 0.9) < 0.03
    assert abs(aligned_tgt - 1 / len(TEXTURE_FAMILIES)) < 0.03
    assert src.images.shape == (2000, 3, 32, 32)
    assert torch.equal(src.groups, src.labels * 10 + src.extras["texture"])
    assert src[0]["mask"].dtype == torch.bool and src[0]["mask"].any()


def test_glyph_pretrain_has_both_labels():
    ds = load_dataset("glyph-pretrain", "train", seed=0, n=500)
    assert ds.num_classes == 36
    assert ds.labels.max() < 36 and ds.extras["texture"].max() < len(TEXTURE_FAMILIES)
    # texture drawn independently of the character
    same = (ds.extras["texture"] == ds.labels % 10).float().mean()
    assert same < 0.2


def test_bad_input_errors():
    with pytest.raises(XgirError, match="unknown dataset"):
        load_dataset("nope", "train")
    with pytest.raises(XgirError, match="unknown split"):
        load_dataset("decoy-digits", "val")
    with pytest.raises(XgirError, match="unknown parameter"):
        load_dataset("background-shift", "source-train", pp=0.3)
