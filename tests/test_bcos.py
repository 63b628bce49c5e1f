"""B-cos layers and networks, their explanations, and the X-DNN variants.

- a B-cos layer equals the formula on hand-made tensors (B = 2, B = 3, MaxOut, linear);
- the layers, the small ResNet (logits in eval and training mode, contribution maps) and the
  colour explanation equal B-cos v2's code with the same weights: its outputs were recorded once
  by tests/fixtures/make_bcos_reference.py into tests/fixtures/bcos_v2_reference.npz (float64);
- on a trained small B-cos network, in explanation mode, the contributions sum to the logit
  minus the logit bias (at the input and at a layer), within 1e-4 of the logit's scale;
- on the X-DNNs, Integrated Gradients from zero (Captum, 64 steps) equals input x gradient
  within 1e-4 (and not on the vanilla network with biases);
- the zoo builds, checks, trains (BCE) and round-trips them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from xgir.errors import XgirError
from xgir.explain import get_explainer
from xgir.explain.bcos import colour_explanation, colour_image, contributions, feature_gradients
from xgir.models import build_model
from xgir.models.bcos import (
    BcosConv2d,
    BcosLinear,
    BcosResNet,
    UncenteredBatchNorm2d,
    bce_loss,
    explanation_mode,
    is_bcos,
)
from xgir.models.zoo import LeNet, XLeNet, XSmallResNet

FIXTURE = Path(__file__).parent / "fixtures" / "bcos_v2_reference.npz"


# ---------------------------------------------------------------- the formula on hand-made tensors
def _hand_conv(b: float, max_out: int = 1) -> BcosConv2d:
    conv = BcosConv2d(2, 1, kernel_size=2, b=b, max_out=max_out)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0], conv.weight[0, 1, 1, 1] = 3.0, 4.0  # ŵ = (0.6 at x[0,0,0], 0.8 at x[1,1,1])
        if max_out == 2:
            conv.weight[1, 0, 0, 1] = 2.0  # a second unit: ŵ = 1 at x[0,0,1]
    return conv


# the patch: x[0] = [[1, 2], [0, 0]], x[1] = [[2, 0], [0, 0]]: ||x|| = 3; ŵᵀx = 0.6; cos = 0.2
PATCH = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]]])


def test_conv_equals_the_formula_on_hand_made_tensors():
    norm = math.sqrt(9 + 1e-6)
    assert _hand_conv(2.0)(PATCH).item() == pytest.approx(abs(0.6 / norm) * 0.6, abs=1e-7)  # 0.12
    assert _hand_conv(3.0)(PATCH).item() == pytest.approx((0.6 / norm + 1e-6) ** 2 * 0.6, abs=1e-7)  # 0.024
    assert _hand_conv(1.0)(PATCH).item() == pytest.approx(0.6, abs=1e-7)  # B = 1: linear, unit-norm weights
    # MaxOut: the second unit's ŵᵀx = 2 beats 0.6, then the dynamic scale |2 / 3|
    assert _hand_conv(2.0, max_out=2)(PATCH).item() == pytest.approx(2 / norm * 2, abs=1e-6)
    # the weight's length does not matter, its sign does
    conv = _hand_conv(2.0)
    with torch.no_grad():
        conv.weight.mul_(-7)
    assert conv(PATCH).item() == pytest.approx(-0.12, abs=1e-6)


def test_linear_equals_the_formula_and_the_conv():
    lin = BcosLinear(8, 1)
    with torch.no_grad():
        lin.weight.copy_(_hand_conv(2.0).weight.flatten(1))
    assert lin(PATCH.flatten(1)).item() == pytest.approx(0.12, abs=1e-6)


def test_uncentred_norm_divides_by_the_standard_deviation_only():
    bn = UncenteredBatchNorm2d(2)
    x = torch.randn(4, 2, 3, 3) + 5.0
    out = bn.train()(x)
    expected = x / (x.var(dim=(0, 2, 3), unbiased=False) + 1e-5).sqrt().view(1, 2, 1, 1)
    torch.testing.assert_close(out, expected)
    assert bool((out > 0).all())  # not centred: positive inputs stay positive
    assert not hasattr(bn, "bias")
    bn.eval()
    torch.testing.assert_close(bn(2 * x), 2 * bn(x))  # eval mode: linear


# ---------------------------------------------------------------- against B-cos v2's code
@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("name", ["conv_maxout", "conv_b25", "linear_maxout"])
def test_layers_equal_bcos_v2(ref, name):
    weight = _t(ref[f"{name}/weight"])
    if name == "conv_maxout":
        layer = BcosConv2d(6, 5, 3, 1, 1, b=2, max_out=2)
    elif name == "conv_b25":
        layer = BcosConv2d(6, 4, 3, 2, 1, b=2.5)
    else:
        layer = BcosLinear(7, 4, b=2, max_out=2)
    layer = layer.double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        out = layer(_t(ref[f"{name}/input"]))
    torch.testing.assert_close(out, _t(ref[f"{name}/output"]), rtol=1e-9, atol=1e-12)


def v2_resnet(ref: dict[str, np.ndarray]) -> BcosResNet:
    """xgir's BcosResNet (3 -> 3 classes, width 4) holding the weights of B-cos v2's minimal
    ResNet (conv1/bn1 -> stem.0/stem.1, downsample -> shortcut; no running means here)."""
    model = BcosResNet(in_channels=3, num_classes=3, width=4).double()
    state = {}
    for key, value in ref.items():
        if not key.startswith("resnet/") or key.endswith("running_mean"):
            continue
        name = key[len("resnet/"):].replace("conv1.weight", "stem.0.weight", 1) if key.startswith("resnet/conv1") \
            else key[len("resnet/"):]
        name = name.replace("bn1.", "stem.1.", 1) if name.startswith("bn1.") else name
        state[name.replace("downsample", "shortcut")] = _t(value)
    model.load_state_dict(state)  # strict: every key of xgir's model comes from the peer's
    return model.eval()


def test_resnet_logits_and_contributions_equal_bcos_v2_minimal(ref):
    model = v2_resnet(ref)
    x = _t(ref["images"])
    assert model.logit_bias == pytest.approx(float(ref["logit_bias"]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _t(ref["logits_eval"]), rtol=1e-9, atol=1e-12)
    targets = _t(ref["targets"])
    maps = contributions(model, x, targets)
    torch.testing.assert_close(maps, _t(ref["contributions"]), rtol=1e-8, atol=1e-12)
    _, grads = feature_gradients(model, x, targets[:, :1])
    torch.testing.assert_close(grads[:, 0], _t(ref["weights0"]), rtol=1e-8, atol=1e-12)
    # the explainer registered as "bcos" gives the same maps
    torch.testing.assert_close(get_explainer("bcos")(model, x, targets), maps)
    # the colour explanation of image 0, as B-cos v2's gradient_to_image
    colour = colour_explanation(model, x[:1], targets[:1, :1])
    torch.testing.assert_close(colour[0], _t(ref["colour0"]), rtol=1e-6, atol=1e-9)
    # training mode: the batch statistics, as the peer's
    with torch.no_grad():
        torch.testing.assert_close(model.train()(x), _t(ref["logits_train"]), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- explanation mode on a trained model
@pytest.fixture(scope="module")
def trained() -> tuple[BcosResNet, torch.Tensor]:
    from xgir.data import load_dataset
    from xgir.train import fit_classifier

    torch.set_num_threads(1)
    data = load_dataset("background-shift", "source-train", 0, n=128, p=0.1)
    torch.manual_seed(0)
    model = build_model("bcos-resnet", in_channels=3, num_classes=10, width=4)
    fit_classifier(model, data, 2, lr=1e-2, batch_size=32, progress=False)
    model.zero_grad(set_to_none=True)  # the last step's gradients
    return model, load_dataset("background-shift", "target-test", 0, n=8).images


@pytest.mark.parametrize("layer", [None, "layer2"])
def test_contributions_sum_to_the_logit_minus_the_bias(trained, layer):
    model, x = trained
    with torch.no_grad():
        logits = model(x)
    targets = logits.topk(3, dim=1).indices
    maps = contributions(model, x, targets, layer=layer, upsample=False)
    expected = logits.gather(1, targets) - model.logit_bias
    scale = expected.abs().max()
    assert scale > 1e-2  # a trained model: logits that differ from the bias
    assert (maps.sum((-2, -1)) - expected).abs().max() <= 1e-4 * scale


def test_explanation_mode_detaches_but_keeps_the_forward(trained):
    model, x = trained
    with torch.no_grad():
        before = model(x)
        with explanation_mode(model):
            during = model(x)
            assert all(m.explanation for m in model.modules() if hasattr(m, "explanation") and m is not model)
        assert not any(getattr(m, "explanation", False) for m in model.modules())
    torch.testing.assert_close(during, before)
    t = before.argmax(1)
    detached = contributions(model, x, t)
    plain = contributions(model, x, t, explanation=False)  # the gradient through the dynamic scales
    assert (detached - plain).abs().max() > 1e-3 * detached.abs().max()


def test_bcos_explainer_keeps_the_contract_on_a_bcos_model(trained):
    model, x = trained
    model.train()
    try:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            maps = get_explainer("bcos", layer="layer3")(model, x, [0, 3])
        assert maps.shape == (len(x), 2, *x.shape[-2:]) and torch.isfinite(maps).all()
        assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
        with pytest.raises(XgirError):
            get_explainer("bcos")(model, x, [10])
    finally:
        model.eval()


def test_contributions_are_differentiable_in_the_weights(trained):
    model, x = trained
    maps = contributions(model, x[:2], torch.tensor([1, 2]), create_graph=True)
    maps.clamp(min=0).sum().backward()
    grad = model.stem[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_colour_image_channels():
    torch.manual_seed(0)
    enc = torch.rand(2, 2, 6, 6)
    enc = torch.cat([enc[:, :1], 1 - enc[:, :1]], 1)  # one grey channel: [x, 1 - x]
    w = torch.randn(2, 2, 6, 6)
    rgba = colour_image(enc, w, smooth=3)
    assert rgba.shape == (2, 6, 6, 4) and bool(((rgba >= 0) & (rgba <= 1)).all())
    assert torch.equal(rgba[..., 0], rgba[..., 1])  # grey: r = g = b
    negative = (enc * w).sum(1) < 0
    unsmoothed = colour_image(enc, w, smooth=0)
    assert bool((unsmoothed[..., 3][negative] == 0).all())  # negative contributions are transparent
    with pytest.raises(XgirError):
        colour_image(enc, w[:, :1])
    with pytest.raises(XgirError):
        colour_explanation(LeNet(width=2, hidden=4), torch.rand(1, 1, 28, 28), [0])


# ---------------------------------------------------------------- X-DNN: IG from zero = IxG
def _randomise_norms(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, UncenteredBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("arch", ["x-lenet", "x-small-resnet"])
def test_xdnn_integrated_gradients_equal_input_x_gradient(arch):
    torch.manual_seed(0)
    model = (build_model("x-lenet", in_channels=3, image_size=16, width=4, hidden=16) if arch == "x-lenet"
             else build_model("x-small-resnet", width=4))
    _randomise_norms(model)
    model.eval()
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(2.5 * x), 2.5 * model(x))  # positively homogeneous
    t = [0, 3]
    ig = get_explainer("ig", n_steps=64)(model, x, t)
    ixg = get_explainer("input-x-gradient")(model, x, t)
    scale = ixg.abs().max()
    assert (ig - ixg).abs().max() <= 1e-4 * scale
    from captum.attr import IntegratedGradients  # the peer: Captum's IG from the zero baseline, 64 steps

    for k, target in enumerate(t):
        peer = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=64)
        assert (peer.sum(1) - ixg[:, k]).abs().max() <= 1e-4 * scale
    # the same maps from the guidance attribution (differentiable path) and the bcos explainer
    torch.testing.assert_close(contributions(model, x, t, explanation=False), ixg, rtol=1e-5, atol=1e-7)


def test_vanilla_network_with_biases_breaks_the_equality():
    torch.manual_seed(0)
    model = LeNet(in_channels=3, image_size=16, width=4, hidden=16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ig = get_explainer("ig", n_steps=64)(model, x, [0])
    ixg = get_explainer("input-x-gradient")(model, x, [0])
    assert (ig - ixg).abs().max() > 1e-2 * ixg.abs().max()


# ---------------------------------------------------------------- the zoo: build, train, round-trip
def test_zoo_builds_and_checks_the_new_architectures():
    model = build_model("bcos-resnet", in_channels=1, num_classes=4, width=2, b=2.5, max_out=2)
    assert isinstance(model, BcosResNet) and is_bcos(model) and model.stem[0].in_channels == 2
    assert model.logit_bias == pytest.approx(math.log(1 / 3))
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 4)
    for bad in (0.5, "2", True, float("inf")):
        with pytest.raises(XgirError, match="b must be a number >= 1"):
            build_model("bcos-resnet", b=bad)
    assert isinstance(build_model("x-lenet"), XLeNet) and isinstance(build_model("x-small-resnet"), XSmallResNet)
    assert not is_bcos(build_model("x-small-resnet"))


def test_bcos_trains_with_bce_by_default():
    from xgir.data.base import ImageDataset
    from xgir.train import fit_classifier

    data = ImageDataset(torch.rand(16, 1, 8, 8), torch.arange(16) % 3)
    models = []
    for loss_fn in (None, lambda logits, batch: bce_loss(logits, batch["label"])):
        torch.manual_seed(0)
        m = BcosResNet(in_channels=1, num_classes=3, width=2)
        models.append(fit_classifier(m, data, 1, batch_size=8, progress=False, loss_fn=loss_fn))
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    logits = torch.tensor([[2.0, -1.0]])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert bce_loss(logits, torch.tensor([0])).item() == pytest.approx(expected)


def test_bcos_checkpoint_round_trips(tmp_path):
    from xgir.explain._hooks import default_layer
    from xgir.models import load_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("bcos-resnet", in_channels=3, num_classes=5, width=2, max_out=2).eval()
    path = save_checkpoint(model, tmp_path / "model.pt", "bcos-resnet",
                           {"in_channels": 3, "num_classes": 5, "width": 2, "max_out": 2})
    loaded = load_model(path)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.classes == [str(i) for i in range(5)] and loaded.arch == "bcos-resnet"
    assert not loaded.preprocess.mean  # images in [0, 1]: the encoding is inside the model
    assert default_layer(loaded.model, x) == "layer3"  # not the class maps of fc


def test_xgir_train_trains_a_bcos_network(tmp_path, capsys):
    from xgir.cli import main
    from xgir.models import load_model

    cfg = tmp_path / "bcos.yaml"
    cfg.write_text(f"out: {tmp_path / 'run'}\nmode: erm\n"
                   "data: {name: decoy-digits, params: {n: 64}, train_split: train, eval_splits: [test]}\n"
                   "model: {arch: bcos-resnet, params: {width: 2}}\ntrain: {epochs: 1, batch_size: 32}\n")
    assert main(["train", "--config", str(cfg)]) == 0
    loaded = load_model(tmp_path / "run" / "model.pt")
    assert isinstance(loaded.model, BcosResNet) and loaded.model.stem[0].in_channels == 2  # 1 channel, encoded
    assert loaded.num_classes == 10 and loaded.preprocess.size == 28
    two = tmp_path / "two.yaml"
    two.write_text(cfg.read_text().replace("mode: erm", "mode: two-stage").replace("/run", "/run2"))
    capsys.readouterr()
    assert main(["train", "--config", str(two)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "use mode erm" in err
