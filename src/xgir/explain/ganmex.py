"""GANMEX: class-targeted counterfactual baselines for one-vs-one attributions.

After Shih et al. (2021), "GANMEX: One-vs-One Attributions using GAN-based Model
Explainability". A StarGAN-style conditional generator G(x, t) maps an image x to a
nearby image that the *frozen* classifier f being explained assigns to class t.
G(x, t) is then the baseline of a path/reference attribution (IG, DeepLIFT,
Occlusion, Expected Gradients): the attribution answers "why the predicted class
and not t".

Losses (per batch; x images in [0,1], t target classes, y source classes = f's
predictions on x, D the critic):

- critic (WGAN-GP): L_D = mean D(G(x,t)) - mean D(x) + lambda_gp * mean (|grad_xh D(xh)|_2 - 1)^2,
  xh = e x + (1 - e) G(x,t), e ~ U[0,1] per image;
- generator: L_G = -lambda_adv mean D(G(x,t)) + lambda_cls * CE(t, f(G(x,t)))
  + lambda_sim * mean |x - G(x,t)| + lambda_rec * mean |x - G(G(x,t), y)|.

The source class y is the classifier's prediction (not the data label): GANMEX
explains the classifier, so "class" means what f sees. Targets t are drawn
uniformly among the classes other than y.

One-vs-one score (see :func:`one_vs_one`). Following the GANMEX paper, the default
attributes the logit of the predicted class p, z_p, with G(x, t) as the baseline, so that
for IG the attributions sum to z_p(x) - z_p(G(x, t)): the evidence for p that x has
and its class-t counterfactual lacks. ``score="contrast"`` attributes z_p - z_t instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xgir.config import StrictModel
from xgir.errors import XgirError
from xgir.explain.targets import Targets, as_targets
from xgir.io import torch_save
from xgir.progress import Progress
from xgir.train.erm import model_device

# ---------------------------------------------------------------------------- config


class GanmexConfig(StrictModel):
    """Architecture and training of the GANMEX generator and critic.

    The defaults are those measured on 28x28 digits (``xgir bench ganmex``): 1500 steps train in
    about 4 CPU-minutes on one thread and give counterfactuals classified as the target class
    for about 99% of (x, t) pairs. The critic learns 4x faster than the generator (TTUR) in
    place of several critic steps per generator step, which costs less on a CPU.
    """

    num_classes: int = Field(10, ge=2)
    channels: int = Field(1, ge=1)
    image_size: int = Field(28, ge=8)
    width: int = Field(16, ge=4, description="channels of the first generator layer")
    n_res: int = Field(2, ge=0, description="residual blocks at the bottleneck")
    critic_width: int = Field(32, ge=4)
    steps: int = Field(1500, ge=1, description="generator steps")
    n_critic: int = Field(1, ge=1, description="critic steps per generator step")
    batch_size: int = Field(32, ge=2)
    lr_g: float = Field(1e-4, gt=0)
    lr_d: float = Field(4e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    lambda_gp: float = Field(10.0, ge=0)
    lambda_adv: float = Field(1.0, ge=0)
    lambda_cls: float = Field(1.0, ge=0)
    lambda_sim: float = Field(10.0, ge=0)
    lambda_rec: float = Field(0.0, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(250, ge=1, description="generator steps between checkpoints")


# ---------------------------------------------------------------------------- networks


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(c, affine=True),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(c, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _check_image(x: torch.Tensor, channels: int, size: int | None = None) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise XgirError(f"images must be float[N,{channels},H,W], got shape {tuple(x.shape)}")
    if size is not None and tuple(x.shape[2:]) != (size, size):
        raise XgirError(
            f"images must be {size}x{size} for this generator, got {tuple(x.shape[2:])}"
        )


class Generator(nn.Module):
    """StarGAN-style G(x, t): x float[N,C,H,W] in [0,1] and target classes t long[N] (or
    one-hot float[N,K]) -> float[N,C,H,W] in (0,1).

    The target is tiled as K one-hot channels next to the image; then a 7x7 conv, two
    stride-2 down-sampling convs, ``n_res`` residual blocks, two transposed-conv
    up-sampling layers and a 7x7 conv with a sigmoid. H and W must be divisible by 4.
    """

    def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28,
                 width: int = 32, n_res: int = 3) -> None:
        super().__init__()
        if image_size % 4:
            raise XgirError(f"GANMEX needs an image size divisible by 4, got {image_size}")
        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        w = width

        def block(conv: nn.Module, c: int) -> list[nn.Module]:
            return [conv, nn.InstanceNorm2d(c, affine=True), nn.ReLU()]

        layers: list[nn.Module] = []
        layers += block(nn.Conv2d(channels + num_classes, w, 5, 1, 2, bias=False), w)
        layers += block(nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), 2 * w)
        layers += block(nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), 4 * w)
        layers += [_ResBlock(4 * w) for _ in range(n_res)]
        layers += block(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), 2 * w)
        layers += block(nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), w)
        layers += [nn.Conv2d(w, channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def one_hot(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """Target classes long[N] (or a one-hot float[N,K]) -> float[N,K]."""
        if t.is_floating_point():
            if t.shape != (n, self.num_classes):
                raise XgirError(
                    f"one-hot targets must be float[{n},{self.num_classes}], got {tuple(t.shape)}"
                )
            return t
        t = t.reshape(-1) if t.ndim else t.expand(n)
        if t.shape[0] != n:
            raise XgirError(f"need one target class per image: {n} images, {t.shape[0]} targets")
        if bool((t < 0).any() | (t >= self.num_classes).any()):
            raise XgirError(f"target classes must lie in [0, {self.num_classes - 1}]")
        return F.one_hot(t.long(), self.num_classes).float()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.channels, self.image_size)
        n, _, h, w = x.shape
        code = self.one_hot(t.to(x.device), n).to(x.dtype)
        planes = code[:, :, None, None].expand(n, self.num_classes, h, w)
        return torch.sigmoid(self.net(torch.cat([x, planes], dim=1)))


class Critic(nn.Module):
    """WGAN critic: x float[N,C,H,W] -> real/fake score float[N] (unbounded, higher = real).

    Stride-2 4x4 convs with leaky ReLU and no normalisation (the gradient penalty is per
    sample, so batch statistics must not mix samples), then a linear head.
    """

    def __init__(self, channels: int = 1, image_size: int = 28, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        with torch.no_grad():
            dim = self.features(torch.zeros(1, channels, image_size, image_size)).shape[1]
        self.head = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def build_networks(cfg: GanmexConfig) -> tuple[Generator, Critic]:
    """A fresh generator and critic for ``cfg`` (initialised from the global torch RNG)."""
    gen = Generator(cfg.num_classes, cfg.channels, cfg.image_size, cfg.width, cfg.n_res)
    critic = Critic(cfg.channels, cfg.image_size, cfg.critic_width)
    return gen, critic


# ---------------------------------------------------------------------------- losses


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP penalty mean_i (|grad D(xh_i)|_2 - 1)^2 at xh = eps x_real + (1 - eps) x_fake.

    Args:
        real, fake: float[N,C,H,W]; fake is detached.
        eps: float[N] interpolation weights (default: uniform random).
    """
    if real.shape != fake.shape:
        raise XgirError(
            f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}"
        )
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device)
    e = eps.view(-1, *([1] * (real.ndim - 1))).to(real.dtype)
    xh = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    out = critic(xh)
    (grad,) = torch.autograd.grad(out.sum(), xh, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_losses(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, lambda_gp: float,
                  eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """WGAN-GP critic loss: {"gap": mean D(real) - mean D(fake) (detached), "gp", "total"}.

    The critic minimises ``total`` = -gap + lambda_gp * gp.
    """
    fake = fake.detach()
    gap = critic(real).mean() - critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, eps) if lambda_gp > 0 else gap.new_zeros(())
    return {"gap": gap.detach(), "gp": gp.detach(), "total": -gap + lambda_gp * gp}


def generator_losses(gen: Generator, critic: nn.Module, classifier: nn.Module, x: torch.Tensor,
                     source: torch.Tensor, target: torch.Tensor, cfg: GanmexConfig
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Generator loss terms for images x float[N,C,H,W], source classes long[N] (for the
    cycle term) and target classes long[N].

    Returns ({"adv", "cls", "sim", "rec", "total"} scalars, the fakes G(x, t)). Only
    ``total`` carries gradients; ``rec`` is computed only when lambda_rec > 0.
    """
    fake = gen(x, target)
    adv = -critic(fake).mean()
    cls = F.cross_entropy(classifier(fake), target)
    sim = (fake - x).abs().mean()
    if cfg.lambda_rec > 0:
        rec = (gen(fake, source) - x).abs().mean()
    else:
        rec = sim.new_zeros(())
    total = (cfg.lambda_adv * adv + cfg.lambda_cls * cls + cfg.lambda_sim * sim
             + cfg.lambda_rec * rec)
    terms = {"adv": adv.detach(), "cls": cls.detach(), "sim": sim.detach(), "rec": rec.detach(),
             "total": total}
    return terms, fake


# ---------------------------------------------------------------------------- training


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with gradients off for its parameters; restored on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass
class GanmexRun:
    """The result of :func:`train_ganmex`: networks, config, loss history (one row per
    generator step: step, critic gap, gp, adv, cls, sim, rec) and the seconds spent."""

    generator: Generator
    critic: Critic
    config: GanmexConfig
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def _sample_targets(source: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Uniform target classes different from ``source`` long[N]."""
    shift = torch.randint(1, k, source.shape, generator=g)
    return (source + shift) % k


def _state(run: GanmexRun, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
           step: int, rng: torch.Generator) -> dict[str, Any]:
    return {
        "config": run.config.model_dump(),
        "step": step,
        "generator": run.generator.state_dict(),
        "critic": run.critic.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "rng": rng.get_state(),
        "history": run.history,
        "seconds": run.seconds,
    }


def train_ganmex(
    classifier: nn.Module,
    images: torch.Tensor,
    cfg: GanmexConfig | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
) -> GanmexRun:
    """Train a GANMEX generator and critic against the frozen ``classifier``.

    Args:
        classifier: the model to explain, float[N,C,H,W] -> logits float[N,K]; frozen
            during training (its parameters get no gradient and are restored afterwards).
        images: float[N,C,H,W] in [0,1], the real images (labels are f's predictions).
        cfg: the config (defaults: :class:`GanmexConfig` with the images' channels/size).
        checkpoint: file for periodic atomic checkpoints (every ``cfg.checkpoint_every``
            generator steps and at the end); with ``resume`` a file there is loaded and the
            run continues from its step with its optimiser and random states, so an
            interrupted and resumed run gives the same networks as an uninterrupted one.
        stop_after: stop (and checkpoint) after this many steps in total: for tests and
            for splitting a long run.
        device: where to train (default: the classifier's device).
    Returns:
        a :class:`GanmexRun` with the generator in eval mode.
    """
    if images.ndim != 4:
        raise XgirError(f"images must be float[N,C,H,W], got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise XgirError("images contain NaN or infinite values")
    if images.shape[2] != images.shape[3]:
        raise XgirError(f"GANMEX expects square images, got {tuple(images.shape[2:])}")
    if float(images.min()) < 0 or float(images.max()) > 1:
        raise XgirError("GANMEX generates images in [0,1]: give unnormalised images in [0,1] "
                        "(put any input normalisation inside the classifier)")
    if len(images) < 2:
        raise XgirError("GANMEX needs at least 2 training images")
    if cfg is not None:
        _check_image(images, cfg.channels, cfg.image_size)
    device = torch.device(device) if device is not None else model_device(classifier)
    classifier = classifier.to(device)
    with torch.no_grad(), frozen(classifier):
        k = classifier(images[:2].to(device)).shape[1]
    if cfg is None:
        cfg = GanmexConfig(num_classes=k, channels=images.shape[1], image_size=images.shape[2])
    if cfg.num_classes != k:
        raise XgirError(f"the classifier has {k} classes, the GANMEX config {cfg.num_classes}")

    torch.manual_seed(cfg.seed)
    gen, critic = build_networks(cfg)
    gen, critic = gen.to(device), critic.to(device)
    run = GanmexRun(gen, critic, cfg)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    rng = torch.Generator().manual_seed(cfg.seed + 1)
    step = 0

    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and resume and ckpt.exists():
        state = load_state(ckpt)
        if state["config"] != cfg.model_dump():
            raise XgirError(
                f"checkpoint {ckpt} was written with another GANMEX config; "
                "delete it or pass resume=False"
            )
        gen.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["rng"])
        step = int(state["step"])
        run.history = list(state["history"])
        run.seconds = float(state["seconds"])
        run.resumed_from = step

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    with frozen(classifier):
        with torch.no_grad():
            preds = torch.cat([classifier(images[i:i + 512].to(device)).argmax(1).cpu()
                               for i in range(0, len(images), 512)])
        gen.train()
        critic.train()
        bar = Progress(total=cfg.steps, initial=step, desc="ganmex", enabled=progress)
        start = time.perf_counter()
        while step < end:
            row: dict[str, float] = {"step": float(step + 1)}
            for _ in range(cfg.n_critic):
                idx = torch.randint(len(images), (cfg.batch_size,), generator=rng)
                x = images[idx].to(device)
                t = _sample_targets(preds[idx], cfg.num_classes, rng).to(device)
                eps = torch.rand(cfg.batch_size, generator=rng).to(device)
                with torch.no_grad():
                    fake = gen(x, t)
                d_terms = critic_losses(critic, x, fake, cfg.lambda_gp, eps)
                opt_d.zero_grad(set_to_none=True)
                d_terms["total"].backward()
                opt_d.step()
            row["gap"], row["gp"] = float(d_terms["gap"]), float(d_terms["gp"])
            idx = torch.randint(len(images), (cfg.batch_size,), generator=rng)
            x, y = images[idx].to(device), preds[idx].to(device)
            t = _sample_targets(preds[idx], cfg.num_classes, rng).to(device)
            for p in critic.parameters():
                p.requires_grad_(False)
            g_terms, _ = generator_losses(gen, critic, classifier, x, y, t, cfg)
            opt_g.zero_grad(set_to_none=True)
            g_terms["total"].backward()
            opt_g.step()
            for p in critic.parameters():
                p.requires_grad_(True)
            row.update({k: float(v) for k, v in g_terms.items() if k != "total"})
            run.history.append(row)
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == end:
                bar.set_postfix(cls=f"{row['cls']:.2f}", sim=f"{row['sim']:.3f}",
                                gap=f"{row['gap']:.2f}")
            if ckpt is not None and (step % cfg.checkpoint_every == 0 or step == end):
                run.seconds += time.perf_counter() - start
                start = time.perf_counter()
                torch_save(_state(run, opt_g, opt_d, step, rng), ckpt)
        run.seconds += time.perf_counter() - start
        bar.close()
    gen.eval()
    critic.eval()
    return run


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a GANMEX checkpoint written by :func:`train_ganmex`."""
    path = Path(path)
    if not path.is_file():
        raise XgirError(f"GANMEX checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem
        raise XgirError(f"cannot read GANMEX checkpoint {path}: {err}") from None
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise XgirError(f"{path} is not a GANMEX checkpoint (no generator/config)")
    return state


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The generator of a GANMEX checkpoint, in eval mode."""
    state = load_state(path)
    cfg = GanmexConfig.model_validate(state["config"])
    gen, _ = build_networks(cfg)
    gen.load_state_dict(state["generator"])
    return gen.to(device).eval()


# ---------------------------------------------------------------------------- baseline


def foil_classes(targets: Targets) -> torch.Tensor:
    """The class t of each target long[N,T] for the GANMEX baseline G(x, t).

    A class target e_t gives t; a contrast target e_p - e_t (any weight vector with
    exactly one negative weight) gives its negative class t. Clusters and other weight
    vectors have no single class: XgirError.
    """
    if bool(targets.is_cluster.any()):
        raise XgirError("GANMEX baselines need class targets or contrasts e_p - e_t, not clusters")
    w = targets.weights
    neg = (w < 0).sum(-1)
    pos = (w > 0).sum(-1)
    is_class = (neg == 0) & (pos == 1)
    is_contrast = neg == 1
    if not bool((is_class | is_contrast).all()):
        raise XgirError(
            "GANMEX baselines need class targets t or contrast weights e_p - e_t "
            "(one negative class)"
        )
    return torch.where(is_contrast, w.argmin(-1), w.argmax(-1))


class GanmexBaseline:
    """Baseline protocol: ``baseline(x[N,C,H,W], targets) -> float[N,T,C,H,W]`` with entry
    (n, t) = G(x_n, class of target t) (see :func:`foil_classes`).

    With a class target t the explained score is z_t itself (attributions then sum to
    z_t(x) - z_t(G(x,t)) <= 0 for IG: where x lacks evidence for t); with a contrast
    target e_p - e_t the score is z_p - z_t, "why p and not t". For the GANMEX paper's
    one-vs-one attribution of the predicted class, use :func:`one_vs_one`.
    """

    def __init__(self, generator: Generator, batch_size: int = 256) -> None:
        self.generator = generator.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """G(x_n, classes[n,t]) float[N,T,C,H,W] for classes long[N,T] (or [N])."""
        _check_image(x, self.generator.channels, self.generator.image_size)
        if classes.ndim == 1:
            classes = classes[:, None]
        if classes.shape[0] != x.shape[0]:
            raise XgirError(
                f"classes are for {classes.shape[0]} images, the batch has {x.shape[0]}"
            )
        n, t = classes.shape
        device = next(self.generator.parameters()).device
        flat_x = x.repeat_interleave(t, dim=0)
        flat_c = classes.reshape(-1)
        outs = [self.generator(flat_x[i:i + self.batch_size].to(device),
                               flat_c[i:i + self.batch_size].to(device))
                for i in range(0, n * t, self.batch_size)]
        return torch.cat(outs).to(x.device, x.dtype).view(n, t, *x.shape[1:])

    def __call__(self, x: torch.Tensor, targets: Any) -> torch.Tensor:
        targets = as_targets(targets, x.shape[0], self.generator.num_classes)
        return self.generate(x, foil_classes(targets))


# ---------------------------------------------------------------------------- attributions

Method = Literal["ig", "deeplift", "deepshap", "occlusion", "expected-gradients"]
_BASELINE_PARAM = {"expected-gradients": "baselines", "deepshap": "baselines"}


def one_vs_one(
    model: nn.Module,
    x: torch.Tensor,
    foils: torch.Tensor,
    baseline: GanmexBaseline | Any,
    method: Method = "ig",
    score: Literal["predicted", "contrast"] = "predicted",
    predicted: torch.Tensor | None = None,
    **params: Any,
) -> torch.Tensor:
    """One-vs-one attributions "why the predicted class p and not t", baseline b(x, t).

    Args:
        x: float[N,C,H,W]; foils: long[N,T] (or [N]) the classes t, all != p.
        baseline: a :class:`GanmexBaseline` (reference G(x_n, t)) or any Baseline of
            :mod:`xgir.explain.baselines` / name / tensor (then the same reference for every t).
        method: a reference-based explainer of :mod:`xgir.explain.gradient` (``ig``,
            ``deeplift``, ``deepshap``, ``occlusion``, ``expected-gradients``); ``params`` go
            to it (e.g. ``n_steps``, ``window``, ``n_samples``).
        score: ``predicted`` (default, as in the GANMEX paper): the logit z_p of the
            predicted class, so that IG sums to z_p(x) - z_p(b(x, t)); ``contrast``: z_p - z_t.
        predicted: long[N] the class p (default: the model's argmax on x).
    Returns:
        float[N,T,H,W] heatmaps (signed sum over channels).
    """
    from xgir.explain.baselines import resolve_baseline
    from xgir.explain.registry import get_explainer

    if foils.ndim == 1:
        foils = foils[:, None]
    with torch.no_grad():
        logits = model(x)
    if predicted is None:
        predicted = logits.argmax(1)
    n, t = foils.shape
    k = logits.shape[1]
    if foils.shape[0] != x.shape[0]:
        raise XgirError(f"foils are for {foils.shape[0]} images, the batch has {x.shape[0]}")
    foils = foils.to(x.device)
    predicted = predicted.to(x.device)
    if bool((foils == predicted[:, None]).any()):
        raise XgirError("a foil class equals the predicted class: one-vs-one needs t != p")
    foil_targets = as_targets(foils, n, k)
    refs = resolve_baseline(baseline, x, foil_targets)  # [N,T,C,H,W], b(x_n, t)
    if score == "predicted":
        targets: Any = predicted[:, None].expand(n, t)
    elif score == "contrast":
        w = F.one_hot(predicted, k).float()[:, None, :] - F.one_hot(foils, k).float()
        targets = Targets(w.cpu(), torch.zeros(n, t, k, dtype=torch.bool),
                          torch.zeros(n, t, dtype=torch.bool))
    else:
        raise XgirError(f"score must be 'predicted' or 'contrast', got '{score}'")
    if method not in ("ig", "deeplift", "deepshap", "occlusion", "expected-gradients"):
        raise XgirError(f"method '{method}' takes no baseline; choose ig, deeplift, deepshap, "
                        "occlusion or expected-gradients")
    params[_BASELINE_PARAM.get(method, "baseline")] = refs
    return get_explainer(method, **params)(model, x, targets)


class GanmexExplainer:
    """Registry explainer ``ganmex``: ``(model, x, foils) -> float[N,T,H,W]``, the one-vs-one
    attribution of the predicted class against each foil class t with G(x, t) as the
    baseline (see :func:`one_vs_one`). The *targets* of this explainer are the foils."""

    def __init__(self, generator: Generator | str | Path, method: Method = "ig",
                 score: Literal["predicted", "contrast"] = "predicted", **params: Any) -> None:
        if not isinstance(generator, Generator):
            generator = load_generator(generator)
        self.baseline = GanmexBaseline(generator)
        self.method, self.score, self.params = method, score, params

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        if isinstance(targets, int):
            targets = torch.full((x.shape[0],), targets)
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point():
            raise XgirError("ganmex explainer targets are foil classes: an int or long [N] / [N,T]")
        return one_vs_one(model, x, targets.long(), self.baseline, self.method, self.score,
                          **self.params)


EXPLAINERS = {"ganmex": GanmexExplainer}
