import pytest
import torch
from torch import nn

from xgir.correct import guidance as G
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.models import LeNet


def _maps():
    """Two 4x4 maps; the mask is the left half."""
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    inside = torch.zeros(2, 4, 4)
    inside[:, :, :2] = torch.rand(2, 4, 2) + 0.1
    inside[:, :, 2:] = -1.0  # negative attribution outside does not count
    return inside, mask


@pytest.mark.parametrize("name", ["energy", "l1"])
def test_map_losses_zero_inside_positive_outside(name):
    inside, mask = _maps()
    assert G.map_loss(name, inside, mask).item() == pytest.approx(0.0, abs=1e-6)
    outside = inside.clone()
    outside[:, 0, 3] = 2.0
    assert G.map_loss(name, outside, mask).item() > 0.01


def test_energy_value_by_hand():
    mask = torch.tensor([[[True, False]]])
    attr = torch.tensor([[[3.0, 1.0]]])
    assert G.energy_loss(attr, mask).item() == pytest.approx(0.25, abs=1e-6)
    # energy*: 1 - EPG / area^alpha with area = 1/2
    assert G.energy_star_loss(attr, mask, alpha=1.0).item() == pytest.approx(
        1 - 0.75 / 0.5, abs=1e-6
    )
    assert G.energy_star_loss(attr, mask, alpha=0.0).item() == pytest.approx(0.25, abs=1e-6)
    # l1: normalised map (1, 1/3); outside share of the mean over 2 pixels
    assert G.l1_loss(attr, mask).item() == pytest.approx((1 / 3) / 2, abs=1e-6)


def test_study_l1_and_rrr_map_by_hand():
    mask = torch.tensor([[[True, False, True]]])
    attr = torch.tensor([[[4.0, -2.0, 1.0]]])
    # l1-mask: |M - A+/max A+| = |1 - 1|, |0 - 0|, |1 - 1/4|, averaged over 3 pixels
    assert G.map_loss("l1-mask", attr, mask).item() == pytest.approx(0.75 / 3, abs=1e-6)
    assert G.l1_loss(attr, mask).item() == pytest.approx(0.0, abs=1e-6)  # xgir's l1 looks outside only
    # rrr-map: (A / max|A|)^2 outside M: (-2 / 4)^2 (the sign does not save it)
    assert G.map_loss("rrr-map", attr, mask).item() == pytest.approx(0.25, abs=1e-6)
    assert G.map_loss("rrr-map", torch.zeros(1, 1, 3), mask).item() == 0.0


def test_layer_goes_with_the_attributions_that_read_one():
    with pytest.raises(XgirError, match="read at the input"):
        G.Guidance("energy", "grad", layer="conv2")
    assert G.Guidance("energy", "bcos", layer="conv2").layer == "conv2"


def test_energy_star_lower_when_mass_moves_inside():
    inside, mask = _maps()
    outside = inside.clone()
    outside[:, 0, 3] = 5.0
    assert G.energy_star_loss(outside, mask).item() > G.energy_star_loss(inside, mask).item()


def test_ppce_zero_when_map_is_max_on_mask_positive_when_not():
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = True
    attr = torch.zeros(1, 3, 3)
    attr[0, 1, 1] = 2.0
    assert G.ppce_loss(attr, mask).item() == pytest.approx(0.0, abs=1e-6)
    attr[0, 0, 0] = 4.0  # the maximum moves outside: the inside pixel is only half of it
    assert G.ppce_loss(attr, mask).item() == pytest.approx(
        -torch.log(torch.tensor(0.5)).item(), abs=1e-5
    )


def test_map_loss_bad_input():
    with pytest.raises(XgirError, match="does not match"):
        G.energy_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 3, dtype=torch.bool))
    with pytest.raises(XgirError, match="NaN"):
        G.energy_loss(torch.full((1, 2, 2), float("nan")), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(XgirError, match="unknown guidance loss"):
        G.Guidance(loss="nope")
    with pytest.raises(XgirError, match="layer"):
        G.Guidance(loss="energy", attribution="gradcam")


class Linear2(nn.Module):
    """Logits = W x on 1x2x2 inputs, 2 classes."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.t()


def test_rrr_matches_closed_form_for_linear_softmax():
    torch.manual_seed(0)
    w = torch.randn(3, 4)
    model = Linear2(w)
    x = torch.rand(5, 1, 2, 2)
    mask = torch.zeros(5, 2, 2, dtype=torch.bool)
    mask[:, 0, :] = True  # top row relevant; bottom row penalised
    p = torch.softmax(x.flatten(1) @ w.t(), 1)
    # d sum_c log p_c / dx = sum_c w_c - K * sum_k p_k w_k
    grad = w.sum(0) - 3 * p @ w
    expected = (grad[:, 2:] ** 2).sum(1).mean()
    assert G.rrr_loss(model, x, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    y = torch.tensor([0, 1, 2, 0, 1])
    grad_y = w[y] - p @ w
    assert G.rrr_loss(model, x, mask, y).item() == pytest.approx(
        (grad_y[:, 2:] ** 2).sum(1).mean().item(), rel=1e-5
    )
    # zero when the mask covers the whole image
    assert G.rrr_loss(model, x, torch.ones_like(mask)).item() == 0.0


@pytest.mark.parametrize(
    "spec",
    [
        ("rrr", "grad"),
        ("rrr*", "grad"),
        ("energy", "grad"),
        ("energy", "input_x_grad"),
        ("energy", "gradcam"),
        ("energy*", "gradcam"),
        ("l1", "grad"),
        ("ppce", "input_x_grad"),
        ("energy", "input_x_grad", "conv2"),
        ("rrr-map", "input_x_grad"),
        ("l1", "bcos", "relu2"),
    ],
)
def test_losses_train_the_parameters(spec):
    torch.manual_seed(0)
    model = LeNet(width=4, hidden=8)
    x = torch.rand(3, 1, 28, 28)
    y = torch.tensor([0, 1, 2])
    mask = torch.zeros(3, 28, 28, dtype=torch.bool)
    mask[:, 4:20, 4:20] = True
    layer = spec[2] if len(spec) > 2 else "conv2" if spec[1] == "gradcam" else None
    g = G.Guidance(loss=spec[0], attribution=spec[1], layer=layer)
    loss = g(model, x, y, mask)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    # the conv and hidden weights receive a gradient through the attribution
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def test_gradcam_matches_captum():
    from captum.attr import LayerAttribution, LayerGradCam

    torch.manual_seed(1)
    model = LeNet(width=4, hidden=8).eval()
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([3, 1, 0, 7])
    ours = G.attribution_map(model, x, y, method="gradcam", layer="conv2", create_graph=False)
    ref = LayerGradCam(model, model.conv2).attribute(x, target=y, relu_attributions=False)
    ref = LayerAttribution.interpolate(ref, (28, 28), interpolate_mode="bilinear")[:, 0]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_attribution_grad_and_input_x_grad():
    model = Linear2(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]))
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    g = G.attribution_map(model, x, y, method="grad", create_graph=False)
    assert torch.allclose(g, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    ixg = G.attribution_map(model, x, y, method="input_x_grad", create_graph=False)
    assert torch.allclose(ixg, 0.5 * g)
    with pytest.raises(XgirError, match="unknown attribution"):
        G.attribution_map(model, x, y, method="nope")


def test_boxes_from_masks():
    m = torch.zeros(2, 6, 6, dtype=torch.bool)
    m[0, 1, 2] = m[0, 3, 4] = True
    box = G.boxes_from_masks(m)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:4, 2:5] = True
    assert torch.equal(box[0], expected)
    assert not box[1].any()  # an empty mask stays empty
    grown = G.boxes_from_masks(m, margin=1)
    assert grown[0, 0, 1] and grown[0, 4, 5] and not grown[0, 5, 5]


def test_annotation_flags_and_term_only_on_annotated():
    flags = G.annotation_flags(1000, 0.01, seed=3)
    assert int(flags.sum()) == 10
    assert torch.equal(flags, G.annotation_flags(1000, 0.01, seed=3))
    with pytest.raises(XgirError, match="fraction"):
        G.annotation_flags(10, 1.5)
    torch.manual_seed(0)
    model = LeNet(width=4, hidden=8)
    mask = torch.zeros(4, 28, 28, dtype=torch.bool)
    mask[:, 8:20, 8:20] = True
    batch = {
        "image": torch.rand(4, 1, 28, 28),
        "label": torch.tensor([0, 1, 2, 3]),
        "mask": mask,
        "has_annotation": torch.tensor([False, True, False, False]),
    }
    logits = model(batch["image"])
    term = G.guidance_term(G.Guidance("rrr"), weight=2.0)
    value = term(model, batch, logits)
    single = 2.0 * G.rrr_loss(model, batch["image"][1:2], mask[1:2])
    assert value.item() == pytest.approx(single.item(), rel=1e-5)
    batch["has_annotation"] = torch.zeros(4, dtype=torch.bool)
    assert term(model, batch, logits).item() == 0.0
    # irrelevant masks read inverted: M = not decoy
    batch["decoy_mask"] = ~mask
    batch.pop("has_annotation")
    inv = G.guidance_term(G.Guidance("rrr"), 1.0, mask_key="decoy_mask", invert=True)
    assert inv(model, batch, logits).item() == pytest.approx(
        G.rrr_loss(model, batch["image"], mask).item(), rel=1e-5
    )


def test_fine_tune_guided_runs_and_calibrates():
    torch.manual_seed(0)
    n = 64
    images = torch.rand(n, 1, 28, 28)
    masks = torch.zeros(n, 28, 28, dtype=torch.bool)
    masks[:, 6:22, 6:22] = True
    ds = ImageDataset(images=images, labels=torch.randint(0, 10, (n,)), masks=masks)
    model = LeNet(width=4, hidden=8)
    g = G.Guidance("rrr")
    lam = G.calibrate_lambda(model, ds, g, batch_size=32)
    before = G.rrr_loss(model, images, masks).item()
    ce = torch.nn.functional.cross_entropy(model(images), ds.labels).item()
    assert lam * before == pytest.approx(ce, rel=0.3)
    flagged = G.with_annotations(ds, G.annotation_flags(n, 0.5, seed=0))
    expected = G.calibrate_lambda(model, flagged, g, batch_size=32)
    model, used = G.fine_tune_guided(
        model, ds, g, weight=None, epochs=1, batch_size=32, fraction=0.5, progress=False
    )
    assert used == pytest.approx(expected, rel=1e-6)
    assert not model.training
    with pytest.raises(XgirError, match="no 'decoy_mask'"):
        G.fine_tune_guided(
            model, ds, g, weight=1.0, epochs=1, mask_key="decoy_mask", progress=False
        )
