"""The gradient family through Captum, batched over targets, with class / cluster / weighted
targets and the baselines of :mod:`xgir.explain.baselines`.

Every explainer is ``(model, x float[N,C,H,W], targets) -> float[N,T,H,W]``. The N images are
repeated T times (row n*T + t = image n, target t) and Captum explains a wrapper module whose
forward returns each row's own target score (``Targets.scores``, a [rows, 1] output), so one
Captum call explains all targets. The target of each row travels as an additional forward
argument, which Captum expands together with the inputs (steps, samples, perturbations).

Heatmaps are the **signed sum over channels** of Captum's attributions (for saliency the
per-channel |gradient| that Captum returns with ``abs=True``, then summed).

Methods (registry names): ``saliency``, ``input-x-gradient``, ``ig`` (Integrated Gradients),
``expected-gradients`` (GradientShap with baselines drawn from data, no noise), ``deeplift``
(rescale rule), ``deepshap`` (DeepLiftShap), ``occlusion``. Baselines: a name, a number, a
tensor or a :class:`xgir.explain.baselines.Baseline` (one reference per image and target,
e.g. a class-targeted GANMEX baseline).

The model's mode is not changed: call ``model.eval()`` first.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.explain._hooks import check_images
from xgir.explain.baselines import resolve_baseline
from xgir.explain.targets import Targets, as_targets


class RowScore(nn.Module):
    """``forward(x[R,...], weights[R,K], members[R,K], is_cluster[R]) -> score float[R,1]``: each
    row's own target score. With ``offset=True`` the first extra argument is a reference r[R,...]
    and the model sees r + x (used for Expected Gradients with per-row baselines)."""

    def __init__(self, model: nn.Module, *, offset: bool = False) -> None:
        super().__init__()
        self.model = model
        self.offset = offset

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        if self.offset:
            x = args[0] + x
            args = args[1:]
        weights, members, is_cluster = args
        t = Targets(weights[:, None], members[:, None], is_cluster[:, None])
        return t.scores(self.model(x))


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        try:
            out = model(x[:1])
        except RuntimeError as err:
            raise XgirError(f"the model cannot run on images of shape {tuple(x.shape[1:])}: "
                            f"{str(err).splitlines()[0]}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise XgirError("the model must return logits [N,K]")
    if not bool(torch.isfinite(out).all()):
        raise XgirError("the model's outputs hold NaN or infinite values (a diverged or broken model); "
                            "nothing to explain")
    return int(out.shape[1])


def expand_rows(model: nn.Module, x: torch.Tensor, targets: Any
                ) -> tuple[Targets, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(targets [N,T], images repeated to [N*T,C,H,W], per-row target tensors)."""
    check_images(x)
    tg = as_targets(targets, x.shape[0], _num_classes(model, x)).to(x.device)
    n, t = tg.shape
    k = tg.weights.shape[-1]
    rows = x.repeat_interleave(t, dim=0)
    extra = (tg.weights.reshape(n * t, k).to(x.dtype), tg.cluster.reshape(n * t, k),
             tg.is_cluster.reshape(n * t))
    return tg, rows, extra


def to_heatmaps(attr: torch.Tensor, n: int, t: int) -> torch.Tensor:
    """Captum attributions float[N*T,C,H,W] -> signed channel sum float[N,T,H,W]."""
    return attr.detach().sum(dim=1).reshape(n, t, *attr.shape[-2:])


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed numpy's and torch's global generators inside the block (Captum draws from them)
    and restore them after."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@contextlib.contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence Captum's routine warnings (inputs set to require grad, DeepLIFT hooks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        yield


class _CaptumExplainer:
    """Base: subclasses implement ``_attribute(score_model, rows, extra, refs)``."""

    uses_baseline = False

    def __init__(self, *, baseline: Any = "zeros") -> None:
        self.baseline = baseline

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        tg, rows, extra = expand_rows(model, x, targets)
        n, t = tg.shape
        refs = None
        if self.uses_baseline:
            refs = resolve_baseline(self.baseline, x, tg).reshape(rows.shape)
        with quiet_captum():
            attr = self._attribute(model, rows, extra, refs)
        return to_heatmaps(attr, n, t)


class Saliency(_CaptumExplainer):
    """|d score / d x| per channel (Captum ``Saliency(abs=True)``), summed over channels."""

    def __init__(self, *, abs: bool = True) -> None:
        super().__init__()
        self.abs = abs

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(RowScore(model)).attribute(rows, target=0, abs=self.abs,
                                                         additional_forward_args=extra)


class InputXGradient(_CaptumExplainer):
    """x * d score / d x (Captum ``InputXGradient``), summed over channels."""

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        from captum.attr import InputXGradient as CaptumIxG

        return CaptumIxG(RowScore(model)).attribute(rows, target=0, additional_forward_args=extra)


class IntegratedGradients(_CaptumExplainer):
    """Integrated Gradients from ``baseline`` (Captum, ``n_steps`` points of ``method``)."""

    uses_baseline = True

    def __init__(self, *, baseline: Any = "zeros", n_steps: int = 50, method: str = "gausslegendre",
                 internal_batch_size: int | None = None) -> None:
        super().__init__(baseline=baseline)
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise XgirError(f"ig n_steps must be a whole number >= 1, got {n_steps!r}")
        self.n_steps, self.method, self.internal_batch_size = n_steps, method, internal_batch_size

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(RowScore(model)).attribute(
            rows, baselines=refs, target=0, additional_forward_args=extra, n_steps=self.n_steps,
            method=self.method, internal_batch_size=self.internal_batch_size,
        )


class DeepLift(_CaptumExplainer):
    """DeepLIFT, rescale rule, from ``baseline`` (Captum ``DeepLift``)."""

    uses_baseline = True

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        from captum.attr import DeepLift as CaptumDeepLift

        return CaptumDeepLift(RowScore(model)).attribute(rows, baselines=refs, target=0,
                                                         additional_forward_args=extra)


def _is_distribution(baseline: Any) -> bool:
    return isinstance(baseline, torch.Tensor) and baseline.ndim == 4


class ExpectedGradients(_CaptumExplainer):
    """Expected Gradients: E over references r and alpha ~ U(0,1) of (x - r) * grad f(r + alpha
    (x - r)), ``n_samples`` draws per (image, target), seeded.

    ``baseline``: a data tensor float[B,C,H,W] (references drawn from it: Captum
    ``GradientShap`` with stdevs = 0), or any per-row baseline (name, Baseline callable such as
    GANMEX): then the reference is fixed and only alpha is drawn (GradientShap on d = x - r).
    """

    uses_baseline = True

    def __init__(self, *, baseline: Any = None, n_samples: int = 32, seed: int | None = 0) -> None:
        if baseline is None:
            raise XgirError("expected-gradients needs a baseline: a data tensor [B,C,H,W] "
                            "(e.g. training images) or a baseline name / callable")
        super().__init__(baseline=baseline)
        self.n_samples, self.seed = n_samples, seed

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        from captum.attr import GradientShap

        tg, rows, extra = expand_rows(model, x, targets)
        n, t = tg.shape
        with seeded(self.seed, x.device), quiet_captum():
            if _is_distribution(self.baseline):
                data = self.baseline.to(device=x.device, dtype=x.dtype)
                if data.shape[1:] != x.shape[1:] or data.shape[0] == 0:
                    raise XgirError(f"data baselines must be [B,{','.join(map(str, x.shape[1:]))}]"
                                    f", got {tuple(data.shape)}")
                attr = GradientShap(RowScore(model)).attribute(
                    rows, baselines=data, n_samples=self.n_samples, stdevs=0.0, target=0,
                    additional_forward_args=extra)
            else:
                refs = resolve_baseline(self.baseline, x, tg).reshape(rows.shape)
                attr = GradientShap(RowScore(model, offset=True)).attribute(
                    rows - refs, baselines=torch.zeros_like(rows[:1]), n_samples=self.n_samples,
                    stdevs=0.0, target=0, additional_forward_args=(refs, *extra))
        return to_heatmaps(attr, n, t)


class DeepShap(_CaptumExplainer):
    """DeepSHAP: DeepLIFT averaged over references from data (Captum ``DeepLiftShap``, data
    tensor float[B,C,H,W], B >= 2), or DeepLIFT from a per-row baseline (name / callable)."""

    uses_baseline = True

    def __init__(self, *, baseline: Any = "zeros") -> None:
        super().__init__(baseline=baseline)

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        if not _is_distribution(self.baseline):
            return DeepLift(baseline=self.baseline)(model, x, targets)
        from captum.attr import DeepLiftShap

        tg, rows, extra = expand_rows(model, x, targets)
        data = self.baseline.to(device=x.device, dtype=x.dtype)
        if data.shape[1:] != x.shape[1:] or data.shape[0] < 2:
            raise XgirError(f"deepshap data baselines must be [B>=2,"
                            f"{','.join(map(str, x.shape[1:]))}], got {tuple(data.shape)}")
        with quiet_captum():
            attr = DeepLiftShap(RowScore(model)).attribute(rows, baselines=data, target=0,
                                                           additional_forward_args=extra)
        return to_heatmaps(attr, *tg.shape)


class Occlusion(_CaptumExplainer):
    """Occlusion (Captum): score(x) - score(x with a window replaced by the baseline), averaged
    over the windows covering each pixel. ``window`` / ``stride`` in pixels (default H // 4 and
    window // 2); all channels occluded together."""

    uses_baseline = True

    def __init__(self, *, baseline: Any = "zeros", window: int | None = None, stride: int | None = None,
                 perturbations_per_eval: int = 16) -> None:
        super().__init__(baseline=baseline)
        for key, value in (("window", window), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise XgirError(f"occlusion {key} must be a whole number of pixels >= 1 (or None: the "
                                f"default), got {value!r}")
        self.window, self.stride, self.ppe = window, stride, perturbations_per_eval

    def geometry(self, h: int, w: int) -> tuple[int, int, int]:
        """(window, stride, number of window positions) on an image of h x w pixels."""
        win = self.window or max(1, min(h, w) // 4)
        stride = self.stride or max(1, win // 2)
        if win > min(h, w):
            raise XgirError(f"occlusion window {win} is larger than the image ({h}x{w})")
        if stride > win:
            raise XgirError(f"occlusion stride {stride} is larger than the window {win} (pixels between windows "
                            f"would never be occluded); give a stride of at most {win}")
        return win, stride, (-(-(h - win) // stride) + 1) * (-(-(w - win) // stride) + 1)

    def _attribute(self, model: nn.Module, rows: torch.Tensor, extra: tuple[torch.Tensor, ...],
                   refs: torch.Tensor | None) -> torch.Tensor:
        from captum.attr import Occlusion as CaptumOcclusion

        c, h, w = rows.shape[1:]
        win, stride, _ = self.geometry(h, w)
        return CaptumOcclusion(RowScore(model)).attribute(
            rows, sliding_window_shapes=(c, win, win), strides=(c, stride, stride), baselines=refs,
            target=0, additional_forward_args=extra, perturbations_per_eval=self.ppe,
        )
