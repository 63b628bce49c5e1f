"""GANMEX training: the generator G(x, t) against a WGAN-GP critic, the classifier frozen.

Losses (per batch; x images in [0,1], t target classes, y source classes = f's
predictions on x, D the critic):

- critic (WGAN-GP): L_D = mean D(G(x,t)) - mean D(x) + lambda_gp * mean (|grad_xh D(xh)|_2 - 1)^2,
  xh = e x + (1 - e) G(x,t), e ~ U[0,1] per image;
- generator: L_G = -lambda_adv mean D(G(x,t)) + lambda_cls * CE(t, f(G(x,t)))
  + lambda_sim * mean |x - G(x,t)| + lambda_rec * mean |x - G(G(x,t), y)|.

The source class y is the classifier's prediction (not the data label): GANMEX
explains the classifier, so "class" means what f sees. Targets t are drawn
uniformly among the classes other than y. Checkpoints (``train_ganmex(..., path=...)``)
resume; :func:`xgir.models.gan.load_generator` reads their generator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from xgir.config import StrictModel
from xgir.errors import XgirError
from xgir.io import torch_save
from xgir.models.gan import Critic, Generator, check_generator_input, load_generator, load_state
from xgir.models.inference import model_device, resolve_device
from xgir.progress import Progress

__all__ = ["GanmexConfig", "GanmexRun", "build_networks", "critic_losses", "generator_losses",
           "gradient_penalty", "load_generator", "train_ganmex"]


class GanmexConfig(StrictModel):
    """Architecture and training of the GANMEX generator and critic.

    The defaults are those measured on 28x28 digits (``xgir bench ganmex``): 1500 steps train in
    about 4 CPU-minutes on one thread and give counterfactuals classified as the target class
    for about 99% of (x, t) pairs. The critic learns 4x faster than the generator (TTUR) in
    place of several critic steps per generator step, which costs less on a CPU.
    """

    num_classes: int = Field(default=10, ge=2)
    channels: int = Field(default=1, ge=1)
    image_size: int = Field(default=28, ge=8)
    width: int = Field(default=16, ge=4, description="channels of the first generator layer")
    n_res: int = Field(default=2, ge=0, description="residual blocks at the bottleneck")
    critic_width: int = Field(default=32, ge=4)
    steps: int = Field(default=1500, ge=1, description="generator steps")
    n_critic: int = Field(default=1, ge=1, description="critic steps per generator step")
    batch_size: int = Field(default=32, ge=2)
    lr_g: float = Field(default=1e-4, gt=0)
    lr_d: float = Field(default=4e-4, gt=0)
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    lambda_gp: float = Field(default=10.0, ge=0)
    lambda_adv: float = Field(default=1.0, ge=0)
    lambda_cls: float = Field(default=1.0, ge=0)
    lambda_sim: float = Field(default=10.0, ge=0)
    lambda_rec: float = Field(default=0.0, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(default=250, ge=1, description="generator steps between checkpoints")


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
    *,
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
        check_generator_input(images, cfg.channels, cfg.image_size)
    device = resolve_device(str(device), "device") if device is not None else model_device(classifier)
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

