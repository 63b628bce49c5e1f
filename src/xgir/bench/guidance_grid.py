"""``xgir bench guidance-grid``: model guidance across models, attributions, losses, layers and annotations.

The grid of the guidance study (Rao, Böhle, Parchami-Araghi, Schiele, "Studying How to
Efficiently and Effectively Guide Models with Explanations", ICCV 2023), on decoy-digits and
background-shift. Per dataset and seed:

- three small ResNets of the same shape: ``vanilla`` (small-resnet), ``X-DNN``
  (x-small-resnet: no biases, uncentred norm) and ``B-cos`` (bcos-resnet, BCE with a fixed
  logit bias), each first trained on a shortcut-free pretraining task (``pretrain_epochs``:
  glyph-pretrain for the digits, the birds' species on textures for waterbirds-photos; a fresh
  head after), the stand-in for the study's ImageNet pretraining, then trained by ERM
  (``erm_epochs``) on the biased training set; each ERM model continued for ``guide_epochs``
  without guidance (the control every guided run is compared with), and the pretrained model
  trained by ERM on the shortcut-free training set instead (the reference: what the
  architecture reaches without the shortcut, i.e. its cost);
- the main grid, every run fine-tuned from its ERM model for ``guide_epochs`` with
  L = task loss + lambda * L_loc on the true class (lambda by RRR's rule: the penalty equals the
  task loss at the start), boxes on 100 % of the training images:
  attributions {IxG on vanilla, IntGrad on X-DNN (computed as IxG: equal on a bias-free
  network), B-cos on B-cos} at the input, B-cos also at the final layer, and Grad-CAM at the
  final layer of each (IxG at the final layer of vanilla and X-DNN is Grad-CAM there, see
  ``CONFIGS``) x the study's losses {Energy, L1 (``l1-mask``: |M - A+/max A+| on every pixel),
  PPCE, RRR* (``rrr-map``: RRR's penalty on the attribution)};
- the annotation axis: each model's own attribution at the input with ``fraction_losses``
  (Energy, L1), annotations on ``fractions`` (1 %, 10 %, 100 %) of the images, as ``masks``
  and ``boxes`` (the object's bounding box).

Each run reports test accuracy, worst-group accuracy (the lower of the accuracies on the test
images whose spurious feature agrees with the label as in training and on those where it does
not: the decoy's shade, the texture family), EPG and IoU (threshold 0.5)
of its own attribution at its own layer against the object's bounding box on ``n_eval`` test
images. The report marks each of the study's claims reproduced or not here (see
:mod:`xgir.bench._guidance_grid_report`).

What differs from the study: small ResNets pretrained on a small stand-in task, at 28-64 px
(not ResNet-50s fine-tuned from ImageNet on VOC / COCO / Waterbirds-100); one object class per
image (the true class); lambda by a rule rather than a sweep along the Pareto front; the
mid-layers are left out (input and final only); Grad-CAM only at the final layer (as the study).
The full grid is 58 fine-tunings and 3 pretrainings, 3 ERM, 3 reference and 3 control trainings per
dataset and seed; see docs/bench.md for its run time.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xgir.bench._guidance_common import run_suite
from xgir.correct.guidance import Guidance, fine_tune_guided
from xgir.data import load_dataset
from xgir.data.base import ImageDataset
from xgir.errors import XgirError
from xgir.metrics.localisation import boxes_from_masks, epg, iou
from xgir.models import build_model
from xgir.models.accuracy import accuracy_from_predictions
from xgir.models.split import copy_body
from xgir.train import fit_classifier, predict_logits

SUITE = "guidance-grid"
DATASETS = ("decoy-digits", "background-shift", "waterbirds-photos")
PRETRAIN = "glyph-pretrain"  # the digits' stand-in for ImageNet: 36 font characters on label-free textures
MODELS = {"vanilla": "small-resnet", "X-DNN": "x-small-resnet", "B-cos": "bcos-resnet"}
FINAL = "layer3"  # the last conv stage of all three
# (model, attribution name, xgir attribution, layer): the study's pairs; Grad-CAM at the final layer only.
# IxG / IntGrad at the final layer of vanilla and X-DNN are left out: their final layer feeds global average
# pooling and a linear head, so d s / d A is constant over positions and the map equals Grad-CAM's there.
CONFIGS: tuple[tuple[str, str, str, str | None], ...] = (
    ("vanilla", "IxG", "input_x_grad", None), ("vanilla", "Grad-CAM", "gradcam", FINAL),
    ("X-DNN", "IntGrad", "input_x_grad", None), ("X-DNN", "Grad-CAM", "gradcam", FINAL),
    ("B-cos", "B-cos", "bcos", None), ("B-cos", "B-cos", "bcos", FINAL),
    ("B-cos", "Grad-CAM", "gradcam", FINAL),
)
LOSSES = {"Energy": "energy", "L1": "l1-mask", "PPCE": "ppce", "RRR*": "rrr-map"}  # the study's four
ANNOTATIONS = ("boxes", "masks")


@dataclass
class Settings:
    """Sizes and schedules of the grid (the defaults: the full run)."""

    datasets: tuple[str, ...] = DATASETS[:2]
    n_train: int = 2000
    n_test: int = 1000
    n_eval: int = 200  # test images for EPG and IoU
    width: int = 8
    # each model first trained on glyph-pretrain (n_pretrain images, pretrain_epochs; 0: from scratch), so
    # that its features know shapes before ERM meets the shortcut, as the study's ImageNet-pretrained ResNets
    pretrain_epochs: int = 3
    n_pretrain: int = 20000
    n_pretrain_photos: int = 6000  # waterbirds-photos: the birds' species (34) on textures, 4x the pixels
    photo_size: int = 64  # the side of waterbirds-photos' images here (its own: 224)
    erm_epochs: int = 8
    guide_epochs: int = 4
    batch_size: int = 32  # B-cos needs the steps: at 128 it is far from converged after 8 epochs
    # Adam's learning rate per model (ERM, control and guidance alike): the better of 1e-3 and 1e-2
    # for each on the shortcut-free data (2000 images, 8 epochs, seed 0; docs/bench.md)
    lr: dict[str, float] = field(default_factory=lambda: {"vanilla": 1e-3, "X-DNN": 1e-3, "B-cos": 1e-2})
    losses: tuple[str, ...] = tuple(LOSSES)
    fraction_losses: tuple[str, ...] = ("Energy", "L1")
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    annotations: tuple[str, ...] = ANNOTATIONS

    def __post_init__(self) -> None:
        for what, values, known in (("dataset", self.datasets, DATASETS), ("loss", self.losses, LOSSES),
                                    ("loss", self.fraction_losses, LOSSES), ("annotation", self.annotations,
                                                                             ANNOTATIONS)):
            bad = [v for v in values if v not in known]
            if bad:
                raise XgirError(f"unknown {what} {bad[0]!r}; use one of {', '.join(known)}")
        if set(self.lr) != set(MODELS) or not all(v > 0 for v in self.lr.values()):
            raise XgirError(f"lr needs a positive learning rate for each of {', '.join(MODELS)}, got {self.lr}")

    def runs(self) -> list[dict[str, Any]]:
        """Every guided run of one dataset and seed: model, attribution, layer, loss, fraction,
        annotation (the main grid first, then the annotation axis without its repeats)."""
        out = [{"model": m, "attribution": a, "method": meth, "layer": lay, "loss": loss, "fraction": 1.0,
                "annotation": "boxes"} for m, a, meth, lay in CONFIGS for loss in self.losses]
        seen = {_key(r) for r in out}
        for m, a, meth, lay in CONFIGS:
            if lay is not None or a == "Grad-CAM":
                continue
            for loss in self.fraction_losses:
                for ann in self.annotations:
                    for f in self.fractions:
                        r = {"model": m, "attribution": a, "method": meth, "layer": lay, "loss": loss,
                             "fraction": f, "annotation": ann}
                        if _key(r) not in seen:
                            seen.add(_key(r))
                            out.append(r)
        return out


QUICK = Settings(n_train=96, n_test=64, n_eval=16, width=2, pretrain_epochs=1, n_pretrain=96, erm_epochs=1,
                 guide_epochs=1, fractions=(0.1, 1.0), annotations=("masks",))


def layer_name(layer: str | None) -> str:
    return "input" if layer is None else "final"


def _key(r: dict[str, Any]) -> str:
    return (f"{r['model']} | {r['attribution']} @ {layer_name(r['layer'])} | {r['loss']} | "
            f"{r['fraction']:.0%} {r['annotation']}")


@dataclass
class Task:
    """One dataset: training set (with object masks), its shortcut-free twin, test set, its
    groups, evaluation images."""

    train: ImageDataset
    free: ImageDataset  # the same kind of training set without the shortcut (the reference's)
    test: ImageDataset
    groups: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    eval_box: torch.Tensor


def make_task(name: str, seed: int, s: Settings) -> Task:
    """decoy-digits (the label-coded shade in all four corners in training, random shades at
    test; with one random corner, the decoy suite's default, the small ResNets trained here
    hardly use it: 0.93-0.96 on random decoys), background-shift (source-train p = 0.95,
    target-test) or waterbirds-photos (source-train p = 0.95, target-test, at ``s.photo_size``).

    Groups on the test split: on the digits, the images whose spurious feature agrees with the
    label as in training (1; the decoy's shade codes the label, the texture family is the
    label's) and those where it does not (0); on waterbirds-photos, Waterbirds' four groups
    (bird type, place). The shortcut-free training set: the same digits without decoys, the
    texture or the place independent of the label (p = 1/10, 1/2)."""
    if name == "decoy-digits":  # patches in all four corners: with one, the ResNets hardly use the decoy
        tr = load_dataset(name, "train", seed, n=s.n_train, corners="all")
        free = load_dataset(name, "train", seed, n=s.n_train, decoys=False)
        te = load_dataset(name, "test", seed, n=s.n_test, corners="all")
        patch = te.extras["decoy_mask"]
        shade = (te.images[:, 0] * patch).flatten(1).sum(1) / patch.flatten(1).sum(1).clamp(min=1)
        groups = (torch.round((1 - shade) * 255 / 25).long() == te.labels).long()  # shade = 1 - 25 label / 255
    elif name == "background-shift":
        tr = load_dataset(name, "source-train", seed, n=s.n_train)
        free = load_dataset(name, "source-train", seed, n=s.n_train, p=0.1)  # texture independent of the label
        te = load_dataset(name, "target-test", seed, n=s.n_test)
        groups = (te.extras["texture"] == te.labels).long()
    else:
        tr = load_dataset(name, "source-train", seed, n=s.n_train, size=s.photo_size)
        free = load_dataset(name, "source-train", seed, n=s.n_train, size=s.photo_size, p=0.5)  # place independent
        te = load_dataset(name, "target-test", seed, n=s.n_test, size=s.photo_size)
        assert te.groups is not None
        groups = te.groups
    if tr.masks is None or te.masks is None:
        raise XgirError(f"{name} has no object masks; the guidance grid needs them")
    k = min(s.n_eval, len(te))
    return Task(tr, free, te, groups, te.images[:k], te.labels[:k], boxes_from_masks(te.masks[:k]))


def pretrain_set(name: str, task: Task, seed: int, s: Settings) -> ImageDataset | None:
    """What the models of dataset ``name`` learn first, at the task's size and channels: the
    birds' species on textures for waterbirds-photos (``s.n_pretrain_photos`` images,
    :func:`~xgir.data.waterbirds_photos.bird_species`), glyph-pretrain for the digits (grey: the
    mean of RGB); None when ``s.pretrain_epochs`` is 0."""
    if s.pretrain_epochs == 0:
        return None
    channels, size, _ = task.train.image_shape
    if name == "waterbirds-photos":
        from xgir.data.waterbirds_photos import bird_species

        return bird_species(seed=seed, n=s.n_pretrain_photos, size=size)
    glyphs = load_dataset(PRETRAIN, "train", seed, n=s.n_pretrain, size=size)
    if channels == 1:
        glyphs = replace(glyphs, images=glyphs.images.mean(1, keepdim=True))
    return glyphs


def attribution(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, layer: str | None) -> torch.Tensor:
    """The run's attribution float[N,H,W] of the true class, detached (model in eval mode)."""
    from xgir.correct.guidance import attribution_map

    model.eval()
    maps = [attribution_map(model, x[i : i + 64], y[i : i + 64], method=method, layer=layer, create_graph=False)
            for i in range(0, len(x), 64)]
    return torch.cat(maps).detach()


def evaluate(model: nn.Module, task: Task, configs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Accuracy, worst-group accuracy, and EPG / IoU of each (method, layer) in ``configs``."""
    pred = predict_logits(model, task.test.images).argmax(1)
    acc = accuracy_from_predictions(pred, task.test.labels, task.groups)
    loc = {}
    for method, layer in configs:
        maps = attribution(model, task.eval_x, task.eval_y, method, layer)
        loc[f"{method}@{layer_name(layer)}"] = {"epg": float(epg(maps, task.eval_box).mean()),
                                                 "iou": float(iou(maps, task.eval_box).mean())}
    return {"acc": acc["accuracy"], "worst_group": acc["worst_group"], "loc": loc}


def _model(name: str, task: Task, s: Settings, num_classes: int | None = None) -> nn.Module:
    params: dict[str, Any] = {"in_channels": task.train.image_shape[0],
                              "num_classes": num_classes or task.train.num_classes, "width": s.width}
    return build_model(MODELS[name], **params)


def pretrained(name: str, task: Task, glyphs: ImageDataset | None, seed: int, s: Settings,
               progress: bool = True) -> nn.Module:
    """Model ``name`` for ``task``: trained on ``glyphs`` for ``s.pretrain_epochs`` with a head
    of its classes, then given a fresh head ``fc`` of the task's classes (fresh when ``glyphs``
    is None)."""
    torch.manual_seed(seed)
    model = _model(name, task, s)
    if glyphs is None:
        return model
    source = fit_classifier(_model(name, task, s, glyphs.num_classes), glyphs, s.pretrain_epochs,
                            lr=s.lr[name], batch_size=s.batch_size, seed=seed, progress=progress,
                            desc=f"pretrain:{name}")
    return copy_body(source, model)


FIGURE_RUN = {"model": "B-cos", "attribution": "B-cos", "layer": None, "loss": "Energy", "fraction": 1.0,
              "annotation": "boxes"}


def run_dataset(name: str, seed: int, s: Settings, out: Path | None = None, progress: bool = True) -> dict[str, dict]:
    """Pretrained, reference, ERM and control models, and every guided run of ``s.runs()`` on
    dataset ``name``; with
    ``out``, the colour explanations of the B-cos ERM and Energy-guided models into
    ``bcos-{name}.png`` (when that run is in the grid)."""
    task = make_task(name, seed, s)
    glyphs = pretrain_set(name, task, seed, s)
    res: dict[str, dict] = {}
    bases: dict[str, nn.Module] = {}
    for model_name in MODELS:
        configs = [(meth, lay) for m, _, meth, lay in CONFIGS if m == model_name]
        t = time.time()
        start = pretrained(model_name, task, glyphs, seed, s, progress)
        reference = fit_classifier(copy.deepcopy(start), task.free, s.erm_epochs, lr=s.lr[model_name],
                                   batch_size=s.batch_size, seed=seed, progress=progress,
                                   desc=f"reference:{model_name}")
        res[f"{model_name} | reference"] = {**evaluate(reference, task, configs), "seconds": time.time() - t}
        t = time.time()
        base = fit_classifier(start, task.train, s.erm_epochs, lr=s.lr[model_name], batch_size=s.batch_size,
                              seed=seed, progress=progress, desc=f"erm:{model_name}")
        res[f"{model_name} | ERM"] = {**evaluate(base, task, configs), "seconds": time.time() - t}
        bases[model_name] = base
        t = time.time()
        control = fit_classifier(copy.deepcopy(base), task.train, s.guide_epochs, lr=s.lr[model_name],
                                 batch_size=s.batch_size, seed=seed, progress=progress, desc=f"control:{model_name}")
        res[f"{model_name} | control"] = {**evaluate(control, task, configs), "seconds": time.time() - t}
    for r in s.runs():
        t = time.time()
        guided, weight = fine_tune_guided(
            copy.deepcopy(bases[r["model"]]), task.train, Guidance(LOSSES[r["loss"]], r["method"], r["layer"]),
            weight=None, epochs=s.guide_epochs, lr=s.lr[r["model"]], batch_size=s.batch_size, seed=seed,
            fraction=r["fraction"], box=r["annotation"] == "boxes", progress=progress)
        ev = evaluate(guided, task, [(r["method"], r["layer"])])
        res[_key(r)] = {**r, **ev, "weight": weight, "seconds": time.time() - t}
        if out is not None and all(r[k] == v for k, v in FIGURE_RUN.items()):
            _figure(bases["B-cos"], guided, task, out / f"bcos-{name}.png")
    return res


def _figure(erm: nn.Module, guided: nn.Module, task: Task, path: Path) -> None:
    """Six test images with the B-cos colour explanations of their class before / after guidance."""
    from xgir.explain.bcos import colour_explanation, plot_colour

    x, y = task.eval_x[:6], task.eval_y[:6]
    rgba = [colour_explanation(m.eval(), x, y, smooth=3) for m in (erm, guided)]
    plot_colour(x, torch.stack(rgba, 1), path, col_titles=["B-cos ERM", "B-cos + Energy (input, 100% boxes)"])


def run_seed(seed: int, s: Settings, out: Path, progress: bool = True) -> dict[str, dict]:
    """{dataset: {run: entry}} for one seed."""
    figures = out if seed == 0 or not any(out.glob("bcos-*.png")) else None
    return {name: run_dataset(name, seed, s, figures, progress) for name in s.datasets}


def run(out: Path, seeds: list[int], quick: bool = False, settings: Settings | None = None) -> dict:
    """Run the grid; writes report.md, results.json and the figures (see the report module)."""
    from xgir.bench._guidance_grid_report import report, trade_off_figure

    s = settings or (QUICK if quick else Settings())
    result = run_suite(run_seed, report, s, out, seeds, progress=not quick)
    trade_off_figure(result["per_seed"], s, Path(out) / "tradeoff.png")
    return result
