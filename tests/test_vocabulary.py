"""One baseline vocabulary: zeros (alias zero), mean = the image's mean colour, blur, uniform;
XGIR's x0 adds data-mean (old spelling "mean" still read, with a warning)."""

import pytest
import torch

import xgir.correct.xgir_config as xgir_mod
from xgir.correct.xgir import XGIRConfig, empty_images, empty_name
from xgir.errors import XgirError
from xgir.explain.baselines import ZeroBaseline, baseline_name, get_baseline, reference_image
from xgir.metrics.faithfulness import deletion


def test_names_and_aliases():
    assert baseline_name("zero") == baseline_name("zeros") == "zeros"
    assert isinstance(get_baseline("zero"), ZeroBaseline) and isinstance(get_baseline("zeros"), ZeroBaseline)
    with pytest.raises(XgirError, match="unknown baseline 'data-mean'"):
        get_baseline("data-mean")  # a dataset's mean image is XGIR's x0 only (or pass the tensor)
    x = torch.rand(2, 3, 6, 6)
    colour = reference_image("mean", x)
    assert torch.allclose(colour, x.mean((2, 3), keepdim=True).expand_as(x))  # "mean": each image's colour


def test_deletion_accepts_both_spellings():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, sal = torch.rand(2, 3, 2, 2), torch.rand(2, 2, 2)
    a = deletion(model, x, sal, step=1, baseline="zero").auc
    assert torch.equal(a, deletion(model, x, sal, step=1, baseline="zeros").auc)
    assert torch.equal(a, deletion(model, x, sal, step=1).auc)  # the default
    with pytest.raises(XgirError, match="unknown baseline"):
        deletion(model, x, sal, baseline="black")


def test_xgir_empty_image_names(capsys, monkeypatch):
    x, mean_image = torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8)
    assert torch.equal(empty_images(x, "zero"), torch.zeros_like(x))
    assert torch.equal(empty_images(x, "data-mean", data_mean=mean_image), mean_image.expand_as(x))
    monkeypatch.setattr(xgir_mod, "_warned_mean", False)
    cfg = XGIRConfig(empty="mean")  # an old config still loads, read as data-mean
    assert empty_name(cfg.empty) == "data-mean" and "data-mean" in capsys.readouterr().err
    assert torch.equal(empty_images(x, cfg.empty, data_mean=mean_image), mean_image.expand_as(x))
    with pytest.raises(XgirError, match="zeros, data-mean or blur"):
        XGIRConfig(empty="black")  # type: ignore[arg-type]
    with pytest.raises(XgirError, match="data mean"):
        empty_images(x, "data-mean")
