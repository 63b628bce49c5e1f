"""xgir.viz: the normalisation equals Captum's on the same maps (per sign mode), the drawing
methods, and figures whose texts never overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xgir.errors import XgirError
from xgir.viz import SIGNS, attribution_rgb, heatmap_grid, normalize_map, shorten, sign_for
from xgir.viz.normalize import sign_part

TOL = 1e-9  # float64 on both sides: the same arithmetic


def maps() -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    signed = g.normal(size=(32, 32))
    signed[3, 4] = 40.0  # an outlier the clipping must absorb
    sparse = np.zeros((32, 32))
    sparse[10:12, 5:9] = g.uniform(0.5, 2.0, size=(2, 4))  # 8 of 1024 pixels non-zero
    rise = 0.1075 + 0.0187 * g.uniform(size=(32, 32))  # RISE-like: a map on an offset
    negative = -np.abs(g.normal(size=(32, 32)))
    return {"signed": signed, "sparse": sparse, "rise": rise, "negative": negative}


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("outlier_perc", [2, 1, 0.5])
def test_mass_clipping_equals_captums_normalize_attr(sign, outlier_perc):
    from captum.attr._utils.visualization import _normalize_attr

    for name, a in maps().items():
        part = sign_part(a, sign)
        if not np.abs(part).any():
            continue  # Captum refuses to divide by 0; xgir draws zeros (below)
        ours = normalize_map(a, sign, 100 - outlier_perc, clip="mass")
        theirs = _normalize_attr(a, sign, outlier_perc)
        np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0, err_msg=f"{name} {sign}")


@pytest.mark.parametrize("sign", SIGNS)
def test_percentile_clipping_equals_captums_normalize_scale(sign):
    from captum.attr._utils.visualization import _normalize_scale

    for name, a in maps().items():
        part = sign_part(a, sign)
        if not np.abs(part).any():
            continue
        t = float(np.percentile(np.abs(part), 99))
        t = t if t > 0 else float(np.abs(part).max())  # a sparse map: the maximum (Captum has no rule)
        theirs = _normalize_scale(part, -t if sign == "negative" else t)
        np.testing.assert_allclose(normalize_map(torch.tensor(a), sign), theirs, atol=1e-6, err_msg=f"{name} {sign}")
        # float32 tensors in: 1e-6 of the range [-1, 1]


def test_ranges_floor_and_degenerate_maps():
    m = maps()
    assert normalize_map(m["signed"], "all").min() >= -1 and normalize_map(m["signed"], "all").max() == 1
    assert (normalize_map(m["signed"], "negative") >= 0).all()
    # RISE's offset: scaled from 0 nearly every pixel is above 0.85; with the floor it spans 0..1
    assert np.median(normalize_map(m["rise"], "positive")) > 0.85
    floored = normalize_map(m["rise"], "positive", floor=True)
    assert floored.min() == 0 and floored.max() == 1 and 0.3 < np.median(floored) < 0.7
    assert (normalize_map(np.zeros((4, 4)), "all") == 0).all()
    assert (normalize_map(np.full((4, 4), 3.0), "positive", floor=True) == 1).all()  # a full support stays
    noisy = normalize_map(8.46 + 1e-6 * np.eye(4), "positive", floor=True)  # constant up to float noise
    assert np.ptp(noisy) < 1e-6 and noisy.min() > 0.99
    half = np.zeros((4, 4))
    half[:2] = 1.0
    assert (normalize_map(half, "positive", floor=True) == half).all()  # a binary mask is itself
    assert normalize_map(m["sparse"], "positive").max() == 1  # 99th percentile 0: the maximum
    with pytest.raises(XgirError, match="sign must be one of"):
        normalize_map(m["signed"], "both")
    with pytest.raises(XgirError, match="float\\[H,W\\]"):
        normalize_map(np.zeros((2, 3, 4)))
    assert sign_for(True) == "all" and sign_for(False, torch.ones(2)) == "positive"
    assert sign_for(False, torch.tensor([-1.0, 2.0])) == "all"  # relu=False, abs=False...


def test_drawing_methods():
    img = torch.rand(3, 16, 16)
    a = torch.zeros(8, 8)
    a[2:4, 2:4] = 1.0
    a[6, 6] = -1.0
    blended = attribution_rgb(img, a, sign="all")
    assert blended.shape == (16, 16, 3) and blended.dtype == np.uint8
    grey = np.round(img.mean(0).numpy() * 255)
    assert (blended[0, 0] == grey[0, 0]).all()  # where the map is 0 the image shows (in grey, as in Captum)
    assert (blended[5, 5] != grey[5, 5]).any()
    assert (attribution_rgb(img, a, method="original_image") == np.round(img.permute(1, 2, 0).numpy() * 255)).all()
    heat = attribution_rgb(None, a, method="heat_map", sign="all")
    assert heat.shape == (8, 8, 3) and tuple(heat[0, 0]) == pytest.approx((247, 247, 247), abs=2)  # white at 0
    masked = attribution_rgb(img, a, method="masked_image", sign="positive")
    assert (masked[0, 0] == 0).all()
    assert (attribution_rgb(img, a, method="alpha_scaling", sign="positive")[0, 0] == 255).all()
    with pytest.raises(XgirError, match="cannot show both signs"):
        attribution_rgb(img, a, method="masked_image", sign="all")
    with pytest.raises(XgirError, match="needs the image"):
        attribution_rgb(None, a, method="blended_heat_map")


def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (ax.title, ax.yaxis.label) if t.get_text()]
    images = [ax.get_window_extent(r) for ax in fig.axes if ax.images]
    return [t.get_window_extent(r) for t in texts], images


def test_grid_titles_and_labels_never_overlap(tmp_path, monkeypatch):
    import xgir.viz.figures as figures

    kept = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: kept.setdefault("fig", fig) and path)
    x = torch.rand(3, 3, 24, 24)
    h = torch.randn(3, 2, 6, 6)
    h[:, 1] = h[:, 1].abs()
    long = "an_extremely_long_photograph_file_name_from_a_camera_0042.jpg"
    titles = [["1. Egyptian cat, tabby, tiger cat and lynx\np=0.48", "2. window screen p=0.10"]] * 3
    heatmap_grid(x, h, tmp_path / "g.png", row_titles=[long] * 3, titles=titles, col_titles=["top-1", "top-2"],
                 signed=[True, False])
    fig = kept["fig"]
    texts, images = _boxes(fig)
    for k, a in enumerate(texts):
        for b in texts[k + 1:]:
            assert not a.overlaps(b), (a, b)
        assert sum(a.overlaps(im) for im in images) <= 1  # a y label touches its own panel's edge at most
    labels = [ax.yaxis.label.get_text() for ax in fig.axes if ax.yaxis.label.get_text()]
    assert labels and all(len(line) <= 22 for lab in labels for line in lab.split("\n"))
    assert len([ax for ax in fig.axes if not ax.images]) == 2  # a colour bar for each style


def test_shorten():
    assert shorten("short.jpg") == "short.jpg"
    s = shorten("a" * 30 + ".jpg", 16)
    assert len(s) == 16 and s.endswith(".jpg") and "…" in s


def test_grid_signs_and_methods_as_in_captum(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    h = torch.randn(2, 2, 16, 16)
    for method in ("heat_map", "blended_heat_map", "masked_image", "alpha_scaling"):
        sign = "all" if method in ("heat_map", "blended_heat_map") else ["positive", "absolute_value"]
        assert heatmap_grid(x, h, tmp_path / f"{method}.png", method=method, sign=sign).stat().st_size > 1000
    with pytest.raises(XgirError, match="cannot show both signs"):
        heatmap_grid(x, h, tmp_path / "bad.png", method="masked_image", signed=True)
    with pytest.raises(XgirError, match="one value per map column"):
        heatmap_grid(x, h, tmp_path / "bad.png", sign=["all"])


def test_cli_drawing_options_are_checked_before_any_work(tmp_path, capsys):
    from xgir.cli import main
    from xgir.models import build_model, save_checkpoint

    ckpt = str(save_checkpoint(build_model("lenet"), tmp_path / "lenet.pt", "lenet", {}))
    base = ["explain", "--model", ckpt, "--images", "decoy-digits:test", "--n", "2", "--out", str(tmp_path / "o")]
    assert main(base + ["--sign", "both"]) == 2
    assert "sign must be one of all, positive" in capsys.readouterr().err
    assert main(base + ["--method", "ig", "--draw", "masked_image"]) == 2
    assert "--sign positive" in capsys.readouterr().err
    assert main(base + ["--clip-percentile", "0"]) == 2
    assert "percentile must be in (0, 100]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(base + ["--method", "ig", "--sign", "positive", "--draw", "masked_image", "--quiet"]) == 0
    assert (tmp_path / "o" / "heatmaps.png").stat().st_size > 1000
