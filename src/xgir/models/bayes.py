"""Bayesian CNN: Gaussian mean-field layers with the local reparameterisation trick.

Each weight w has a posterior N(mu, sigma^2), sigma = softplus(rho), and a prior N(0, s^2)
(s = 0.1 by default). With the local reparameterisation trick (Kingma et al. 2015) a layer
computes the mean and variance of its pre-activations in closed form,

    mean = f(x; mu_W) + mu_b,   var = f(x^2; sigma_W^2) + sigma_b^2   (f = conv or matmul),

and samples the activation ``mean + sqrt(var) * eps`` (one eps per activation) rather than
the weights. Bayes-by-backprop trains mu and rho on  KL(q || prior) / N + mean NLL  per
minibatch (the KL divided by the number of minibatches, one Monte Carlo sample), i.e. the
negative ELBO per training image.

``BayesLeNet`` mirrors :class:`xgir.models.LeNet` (layers ``conv1``, ``conv2`` = last conv,
``hidden``, ``fc``) and exposes the last conv layer's activation mean and variance
(``last_conv(x)``) for the explanation-feedback objective.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from xgir.data.base import ImageDataset
from xgir.errors import XgirError

VAR_EPS = 1e-12


class BayesLayer(nn.Module):
    """Base class: Gaussian posterior over ``weight`` and ``bias``; ``sample`` switches between
    sampled activations (True) and the mean network (False)."""

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        out_features: int,
        prior_std: float,
        init_std: float,
        fan_in: int,
    ) -> None:
        super().__init__()
        if prior_std <= 0 or init_std <= 0:
            raise XgirError(f"prior_std and init_std must be positive, got {prior_std}, {init_std}")
        self.prior_std = float(prior_std)
        bound = 1.0 / math.sqrt(fan_in)
        rho0 = math.log(math.expm1(init_std))  # softplus^-1
        self.weight_mu = nn.Parameter(torch.empty(weight_shape).uniform_(-bound, bound))
        self.weight_rho = nn.Parameter(torch.full(weight_shape, rho0))
        self.bias_mu = nn.Parameter(torch.zeros(out_features))
        self.bias_rho = nn.Parameter(torch.full((out_features,), rho0))
        self.sample = True

    @property
    def weight_sigma(self) -> torch.Tensor:
        return F.softplus(self.weight_rho)

    @property
    def bias_sigma(self) -> torch.Tensor:
        return F.softplus(self.bias_rho)

    def kl(self) -> torch.Tensor:
        """Closed-form KL(q || N(0, s^2)) summed over weights and biases (nats)."""
        s2 = self.prior_std**2
        total = torch.zeros((), device=self.weight_mu.device)
        for mu, sigma in ((self.weight_mu, self.weight_sigma), (self.bias_mu, self.bias_sigma)):
            total = (
                total
                + (
                    math.log(self.prior_std)
                    - torch.log(sigma)
                    + (sigma**2 + mu**2) / (2 * s2)
                    - 0.5
                ).sum()
            )
        return total

    def _linear_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the pre-activations given input x (closed form)."""
        mean = self._linear_op(x, self.weight_mu, self.bias_mu)
        var = self._linear_op(x * x, self.weight_sigma**2, self.bias_sigma**2)
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.moments(x)
        if not self.sample:
            return mean
        return mean + torch.sqrt(var + VAR_EPS) * torch.randn_like(mean)


class BayesLinear(BayesLayer):
    """Mean-field Gaussian ``nn.Linear`` (LRT): float[N,in] -> float[N,out]."""

    def __init__(
        self, in_features: int, out_features: int, prior_std: float = 0.1, init_std: float = 1e-3
    ) -> None:
        super().__init__(
            (out_features, in_features), out_features, prior_std, init_std, in_features
        )
        self.in_features, self.out_features = in_features, out_features

    def _linear_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.linear(x, weight, bias)


class BayesConv2d(BayesLayer):
    """Mean-field Gaussian ``nn.Conv2d`` (LRT): float[N,C,H,W] -> float[N,K,H',W']."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        stride: int = 1,
        prior_std: float = 0.1,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__(
            (out_channels, in_channels, kernel_size, kernel_size),
            out_channels,
            prior_std,
            init_std,
            in_channels * kernel_size**2,
        )
        self.padding, self.stride = padding, stride

    def _linear_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)


class BayesLeNet(nn.Module):
    """Bayesian LeNet-style CNN: two Bayesian conv-ReLU-maxpool stages, a Bayesian hidden layer,
    Bayesian head ``fc``. Input float[N,C,H,W] (H, W divisible by 4), output logits float[N,K].

    ``last_conv(x)`` gives (sampled pre-activation a, its mean, its variance) of ``conv2``, each
    float[N,2*width,H/2,W/2]; ``head_from_last_conv(a)`` runs the rest of the network.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 16,
        hidden: int = 64,
        prior_std: float = 0.1,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise XgirError(f"image_size must be divisible by 4, got {image_size}")
        self.conv1 = BayesConv2d(in_channels, width, 5, padding=2, prior_std=prior_std, init_std=init_std)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = BayesConv2d(width, 2 * width, 5, padding=2, prior_std=prior_std, init_std=init_std)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.hidden = BayesLinear(2 * width * (image_size // 4) ** 2, hidden, prior_std=prior_std, init_std=init_std)
        self.relu3 = nn.ReLU()
        self.fc = BayesLinear(hidden, num_classes, prior_std=prior_std, init_std=init_std)

    def last_conv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sample, mean, variance) of the last conv layer's pre-activations."""
        h = self.pool1(self.relu1(self.conv1(x)))
        mean, var = self.conv2.moments(h)
        a = mean + torch.sqrt(var + VAR_EPS) * torch.randn_like(mean) if self.conv2.sample else mean
        return a, mean, var

    def head_from_last_conv(self, a: torch.Tensor) -> torch.Tensor:
        """Logits from the last conv layer's pre-activations."""
        h = self.pool2(self.relu2(a))
        return self.fc(self.relu3(self.hidden(self.flatten(h))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool1(self.relu1(self.conv1(x)))
        h = self.pool2(self.relu2(self.conv2(h)))
        return self.fc(self.relu3(self.hidden(self.flatten(h))))


# ----------------------------------------------------------------- helpers
def bayes_layers(model: nn.Module) -> list[BayesLayer]:
    return [m for m in model.modules() if isinstance(m, BayesLayer)]


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of the closed-form KL of every Bayesian layer of ``model``."""
    layers = bayes_layers(model)
    if not layers:
        raise XgirError(f"{type(model).__name__} has no Bayesian layers")
    return sum((layer.kl() for layer in layers), torch.zeros(()))


def set_sampling(model: nn.Module, sample: bool) -> None:
    """Sampled activations (True) or the mean network (False) in every Bayesian layer."""
    for layer in bayes_layers(model):
        layer.sample = sample


@contextlib.contextmanager
def sampling(model: nn.Module, sample: bool) -> Iterator[nn.Module]:
    """Context manager: temporarily set sampling on or off."""
    old = [layer.sample for layer in bayes_layers(model)]
    set_sampling(model, sample)
    try:
        yield model
    finally:
        for layer, s in zip(bayes_layers(model), old, strict=True):
            layer.sample = s


@torch.no_grad()
def predict_samples(
    model: nn.Module,
    images: torch.Tensor,
    samples: int = 10,
    batch_size: int = 512,
    seed: int | None = 0,
) -> torch.Tensor:
    """Class probabilities float[S,N,K] from ``samples`` stochastic forward passes (CPU out)."""
    from xgir.models.inference import model_device

    if samples < 1:
        raise XgirError(f"samples must be at least 1, got {samples}")
    device = model_device(model)
    was = model.training
    model.eval()
    out = []
    with torch.random.fork_rng(devices=[]), sampling(model, True):
        if seed is not None:
            torch.manual_seed(seed)
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            out.append(torch.stack([F.softmax(model(x).float(), 1).cpu() for _ in range(samples)]))
    model.train(was)
    return torch.cat(out, 1) if out else torch.empty(samples, 0, 0)


def predictive(
    model: nn.Module,
    images: torch.Tensor,
    samples: int = 10,
    batch_size: int = 512,
    seed: int | None = 0,
) -> dict[str, torch.Tensor]:
    """Predictive mean and uncertainty from several samples.

    Returns ``probs`` float[N,K] (mean over samples), ``entropy`` float[N] (of the mean, nats),
    ``mutual_information`` float[N] (entropy of the mean minus mean entropy: the epistemic part).
    """
    p = predict_samples(model, images, samples, batch_size, seed)
    mean = p.mean(0)
    ent = -(mean * torch.log(mean.clamp(min=1e-12))).sum(1)
    exp_ent = -(p * torch.log(p.clamp(min=1e-12))).sum(2).mean(0)
    return {"probs": mean, "entropy": ent, "mutual_information": (ent - exp_ent).clamp(min=0)}


def bayes_accuracy(
    model: nn.Module, dataset: ImageDataset, samples: int = 10, seed: int | None = 0
) -> float:
    """Top-1 accuracy of the predictive mean over ``samples`` samples."""
    probs = predictive(model, dataset.images, samples, seed=seed)["probs"]
    from xgir.models.accuracy import accuracy_from_predictions

    return float(accuracy_from_predictions(probs.argmax(1), dataset.labels)["accuracy"])
