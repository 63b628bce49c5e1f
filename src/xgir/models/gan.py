"""GANMEX networks: a StarGAN-style conditional generator G(x, t) and a WGAN critic.

G maps an image x (in [0, 1]) and a target class t to a nearby image that a frozen classifier
assigns to t; it is trained by :func:`xgir.train.ganmex.train_ganmex` and used as a
class-targeted baseline by :mod:`xgir.explain.ganmex`. After Shih et al. (2021).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xgir.errors import XgirError
from xgir.io import load_torch


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


def check_generator_input(x: torch.Tensor, channels: int, size: int | None = None) -> None:
    """XgirError unless x is float[N,channels,size,size] (size None: any)."""
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
        check_generator_input(x, self.channels, self.image_size)
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


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a GANMEX checkpoint written by :func:`train_ganmex`."""
    state = load_torch(path, "GANMEX checkpoint", "give a checkpoint written by xgir.train.ganmex.train_ganmex")
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise XgirError(f"{path} is not a GANMEX checkpoint (no generator/config)")
    return state


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The generator of a GANMEX checkpoint (written by :func:`xgir.train.ganmex.train_ganmex`),
    in eval mode."""
    from xgir.models.inference import resolve_device

    device = resolve_device(str(device), "device")
    state = load_state(path)
    c = state["config"]
    try:
        gen = Generator(c["num_classes"], c["channels"], c["image_size"], c["width"], c["n_res"])
        gen.load_state_dict(state["generator"])
    except (KeyError, RuntimeError) as err:
        raise XgirError(f"{path}: the generator does not match its config ({err})") from None
    return gen.to(device).eval()
