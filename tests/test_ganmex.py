"""GANMEX: generator/critic shapes, loss terms, gradient penalty, baselines, attributions,
checkpoints. Tiny 8x8 networks so the whole file runs in seconds."""

import pytest
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain.ganmex import GanmexBaseline, foil_classes, one_vs_one
from xgir.explain.registry import get_explainer
from xgir.explain.targets import as_targets
from xgir.models.gan import Critic, Generator, load_generator
from xgir.train.ganmex import (
    GanmexConfig,
    build_networks,
    critic_losses,
    generator_losses,
    gradient_penalty,
    train_ganmex,
)

K, C, S = 4, 1, 8


def tiny_classifier(seed: int = 0, pool: type[nn.Module] = nn.MaxPool2d) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(C, 8, 3, padding=1), nn.ReLU(), pool(2), nn.Flatten(),
        nn.Linear(8 * (S // 2) ** 2, 16), nn.ReLU(), nn.Linear(16, K),
    ).eval()


def tiny_cfg(**kw) -> GanmexConfig:
    base = dict(num_classes=K, channels=C, image_size=S, width=4, n_res=1, critic_width=4,
                batch_size=8, steps=4, checkpoint_every=2)
    base.update(kw)
    return GanmexConfig(**base)


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, C, S, S, generator=torch.Generator().manual_seed(seed))


def test_generator_shapes_range_and_class_conditioning():
    torch.manual_seed(0)
    gen, critic = build_networks(tiny_cfg())
    x = images(5)
    out = gen(x, torch.tensor([0, 1, 2, 3, 0]))
    assert out.shape == x.shape
    assert bool(((out > 0) & (out < 1)).all())
    # the target enters as K one-hot channels next to the image
    assert gen.net[0].in_channels == C + K
    expected = torch.tensor([[0.0, 0, 1, 0], [1.0, 0, 0, 0]])
    assert torch.equal(gen.one_hot(torch.tensor([2, 0]), 2), expected)
    same = x[:1].expand(K, -1, -1, -1)
    outs = gen(same, torch.arange(K))
    for a in range(K):
        for b in range(a + 1, K):
            assert (outs[a] - outs[b]).abs().max() > 1e-4, (a, b)
    # class ints and one-hot rows give the same output
    hot = gen.one_hot(torch.tensor([1, 3]), 2)
    assert torch.allclose(gen(x[:2], torch.tensor([1, 3])), gen(x[:2], hot))
    assert critic(x).shape == (5,)


def test_generator_bad_input():
    gen = Generator(num_classes=K, channels=C, image_size=S, width=4, n_res=0)
    with pytest.raises(XgirError, match="target classes"):
        gen(images(2), torch.tensor([0, K]))
    with pytest.raises(XgirError, match="one target class per image"):
        gen(images(2), torch.tensor([0, 1, 2]))
    with pytest.raises(XgirError, match=r"float\[N,1,H,W\]"):
        gen(torch.rand(2, 3, S, S), torch.tensor([0, 1]))
    with pytest.raises(XgirError, match="8x8"):
        gen(torch.rand(2, 1, 12, 12), torch.tensor([0, 1]))
    with pytest.raises(XgirError, match="divisible by 4"):
        Generator(image_size=10)


def _step_on(term: str, steps: int = 5, lr: float = 1e-2, seed: int = 0):
    """Adam steps of the generator on one loss term alone; the term's value before and after."""
    weights = {"lambda_adv": 0.0, "lambda_cls": 0.0, "lambda_sim": 0.0, "lambda_rec": 0.0}
    weights[f"lambda_{term}"] = 1.0
    cfg = tiny_cfg(**weights)
    torch.manual_seed(seed)
    gen, critic = build_networks(cfg)
    clf = tiny_classifier()
    for p in list(clf.parameters()) + list(critic.parameters()):
        p.requires_grad_(False)
    x = images(8)
    src = torch.arange(8) % K
    tgt = (src + 1) % K
    opt = torch.optim.Adam(gen.parameters(), lr=lr)

    def value() -> float:
        with torch.no_grad():
            terms, fake = generator_losses(gen, critic, clf, x, src, tgt, cfg)
            if term == "cls":
                return float(torch.softmax(clf(fake), 1).gather(1, tgt[:, None]).mean())
            if term == "adv":
                return float(critic(fake).mean())
            return float(terms[term])

    before = value()
    for _ in range(steps):
        terms, _ = generator_losses(gen, critic, clf, x, src, tgt, cfg)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    return before, value()


def test_similarity_term_step_brings_output_closer_to_x():
    before, after = _step_on("sim")
    assert after < before - 1e-3


def test_class_term_step_raises_probability_of_target():
    before, after = _step_on("cls")
    assert after > before + 1e-3


def test_adversarial_term_step_raises_critic_score_of_fakes():
    before, after = _step_on("adv")
    assert after > before + 1e-3


def test_cycle_term_step_reduces_reconstruction_error():
    before, after = _step_on("rec")
    assert after < before - 1e-3


def test_critic_step_raises_gap():
    torch.manual_seed(0)
    _, critic = build_networks(tiny_cfg())
    real = images(16, seed=1)
    fake = images(16, seed=2) * 0.3  # darker: separable
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    gaps = []
    for _ in range(6):
        terms = critic_losses(critic, real, fake, lambda_gp=10.0, eps=torch.full((16,), 0.5))
        gaps.append(float(terms["gap"]))
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    assert gaps[-1] > gaps[0] + 1e-3


class LinearCritic(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_gradient_penalty_zero_for_unit_linear_critic():
    w = torch.randn(C * S * S, generator=torch.Generator().manual_seed(0))
    real, fake = images(6, 1), images(6, 2)
    gp = gradient_penalty(LinearCritic(w / w.norm()), real, fake)
    assert float(gp.detach()) < 1e-10
    # |grad| = 2 everywhere -> penalty (2 - 1)^2 = 1
    gp2 = gradient_penalty(LinearCritic(2 * w / w.norm()), real, fake)
    assert abs(float(gp2) - 1.0) < 1e-5
    with pytest.raises(XgirError, match="differ in shape"):
        gradient_penalty(LinearCritic(w), real, fake[:3])


def test_foil_classes_and_baseline_entries():
    torch.manual_seed(0)
    gen = Generator(num_classes=K, channels=C, image_size=S, width=4, n_res=1).eval()
    x = images(3)
    contrast = torch.tensor([1.0, 0, -1, 0])  # z_0 - z_2: foil class 2
    t = as_targets([1, contrast], 3, K)
    assert foil_classes(t).tolist() == [[1, 2]] * 3
    base = GanmexBaseline(gen, batch_size=2)(x, t)
    assert base.shape == (3, 2, C, S, S)
    with torch.no_grad():
        assert torch.allclose(base[:, 1], gen(x, torch.full((3,), 2)), atol=1e-6)
        assert torch.allclose(base[:, 0], gen(x, torch.full((3,), 1)), atol=1e-6)
    with pytest.raises(XgirError, match="clusters"):
        foil_classes(as_targets([(0, 1)], 3, K))
    with pytest.raises(XgirError, match="one negative class"):
        foil_classes(as_targets([torch.tensor([0.5, 0.5, 0, 0])], 3, K))


METHODS = ["ig", "deeplift", "deepshap", "occlusion", "expected-gradients"]


@pytest.mark.parametrize("method", METHODS)
def test_attributions_vanish_when_baseline_is_x(method):
    clf = tiny_classifier()
    x = images(3)
    with torch.no_grad():
        pred = clf(x).argmax(1)
    foils = torch.stack([(pred + 1) % K, (pred + 3) % K], 1)

    def same_as_x(xb, targets):
        return xb[:, None].expand(xb.shape[0], targets.shape[1], *xb.shape[1:])

    params = {"ig": {"n_steps": 8}, "occlusion": {"window": 2},
              "expected-gradients": {"n_samples": 4}}.get(method, {})
    attr = one_vs_one(clf, x, foils, same_as_x, method=method, **params)
    assert attr.shape == (3, 2, S, S)
    assert float(attr.abs().max()) < 1e-6


def _logit_deltas(clf, gen, x, foils):
    """z(x) and z(G(x, t)) per (image, foil) row: float[N*T,K] each."""
    with torch.no_grad():
        base = gen(x.repeat_interleave(foils.shape[1], 0), foils.reshape(-1))
        return clf(x).repeat_interleave(foils.shape[1], 0), clf(base)


@pytest.mark.parametrize("score", ["predicted", "contrast"])
def test_one_vs_one_ig_completeness_with_ganmex_baseline(score):
    torch.manual_seed(0)
    gen = Generator(num_classes=K, channels=C, image_size=S, width=4, n_res=1).eval()
    clf = tiny_classifier()
    x = images(4)
    with torch.no_grad():
        pred = clf(x).argmax(1)
    foils = torch.stack([(pred + 1) % K, (pred + 2) % K], 1)
    attr = one_vs_one(clf, x, foils, GanmexBaseline(gen), method="ig", score=score, n_steps=128)
    assert attr.shape == (4, 2, S, S)
    z_x, z_b = _logit_deltas(clf, gen, x, foils)
    rows = torch.arange(8)
    p, f = pred.repeat_interleave(2), foils.reshape(-1)
    delta = z_x[rows, p] - z_b[rows, p]
    if score == "contrast":
        delta = delta - (z_x[rows, f] - z_b[rows, f])
    total = attr.reshape(8, -1).sum(1)
    # IG completeness: Gauss-Legendre with 128 points on a piecewise-linear ReLU net
    assert torch.allclose(total, delta, atol=1e-2 * (1 + float(delta.abs().max()))), (total, delta)
    # the registry explainer "ganmex" (targets = foils) gives the same maps
    same = get_explainer("ganmex", generator=gen, score=score, n_steps=128)(clf, x, foils)
    assert torch.allclose(same, attr, atol=1e-6)
    with pytest.raises(XgirError, match="t != p"):
        one_vs_one(clf, x, pred, GanmexBaseline(gen))


def test_baseline_protocol_with_contrast_targets_in_deeplift():
    """GanmexBaseline plugged straight into an explainer: target e_p - e_t, reference G(x, t);
    DeepLIFT sums exactly to the score difference (summation-to-delta; average pooling, as
    Captum's max-pool rule does not conserve the sum)."""
    torch.manual_seed(0)
    gen = Generator(num_classes=K, channels=C, image_size=S, width=4, n_res=1).eval()
    clf = tiny_classifier(pool=nn.AvgPool2d)
    x = images(4)
    with torch.no_grad():
        pred = clf(x).argmax(1)
    foil = (pred + 1) % K
    targets = [[torch.nn.functional.one_hot(pred[i], K).float()
                - torch.nn.functional.one_hot(foil[i], K).float()] for i in range(4)]
    attr = get_explainer("deeplift", baseline=GanmexBaseline(gen))(clf, x, targets)
    z_x, z_b = _logit_deltas(clf, gen, x, foil[:, None])
    rows = torch.arange(4)
    delta = (z_x[rows, pred] - z_x[rows, foil]) - (z_b[rows, pred] - z_b[rows, foil])
    assert torch.allclose(attr.reshape(4, -1).sum(1), delta, atol=1e-4)


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    clf = tiny_classifier()
    x = images(20)
    cfg = tiny_cfg(steps=4, checkpoint_every=2, lambda_rec=1.0)
    full = train_ganmex(clf, x, cfg, checkpoint=tmp_path / "full.pt", progress=False)
    ckpt = tmp_path / "split.pt"
    first = train_ganmex(clf, x, cfg, checkpoint=ckpt, progress=False, stop_after=2)
    assert len(first.history) == 2 and ckpt.exists()
    second = train_ganmex(clf, x, cfg, checkpoint=ckpt, progress=False)
    assert second.resumed_from == 2 and len(second.history) == 4
    for net in ("generator", "critic"):
        a_state = getattr(full, net).state_dict()
        b_state = getattr(second, net).state_dict()
        for name, a in a_state.items():
            assert torch.allclose(a, b_state[name], atol=1e-6), (net, name)
    cls_full = [r["cls"] for r in full.history]
    assert cls_full == pytest.approx([r["cls"] for r in second.history], abs=1e-5)
    # the classifier is frozen during training and restored afterwards
    assert all(p.requires_grad for p in clf.parameters())
    loaded = load_generator(ckpt)
    with torch.no_grad():
        assert torch.allclose(loaded(x[:2], torch.tensor([0, 1])),
                              second.generator(x[:2], torch.tensor([0, 1])), atol=1e-6)
    with pytest.raises(XgirError, match="another GANMEX config"):
        train_ganmex(clf, x, tiny_cfg(steps=5), checkpoint=ckpt, progress=False)


def test_train_bad_input(tmp_path):
    clf = tiny_classifier()
    with pytest.raises(XgirError, match="NaN"):
        train_ganmex(clf, torch.full((4, C, S, S), float("nan")), tiny_cfg(), progress=False)
    with pytest.raises(XgirError, match=r"float\[N,C,H,W\]"):
        train_ganmex(clf, torch.rand(4, S, S), tiny_cfg(), progress=False)
    with pytest.raises(XgirError, match=r"in \[0,1\]"):
        train_ganmex(clf, images(4) * 2 - 1, tiny_cfg(), progress=False)
    with pytest.raises(XgirError, match="classifier has 4 classes"):
        train_ganmex(clf, images(4), tiny_cfg(num_classes=10), progress=False)
    with pytest.raises(XgirError, match="8x8"):
        train_ganmex(clf, torch.rand(4, C, 12, 12), tiny_cfg(), progress=False)
    with pytest.raises(XgirError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(XgirError, match="junk.pt is not a torch file"):
        load_generator(tmp_path / "junk.pt")


def test_critic_is_per_sample():
    """No batch statistics in the critic: a sample's score does not depend on the batch."""
    torch.manual_seed(0)
    critic = Critic(C, S, 4)
    x = images(6)
    assert torch.allclose(critic(x)[:2], critic(x[:2]), atol=1e-6)
