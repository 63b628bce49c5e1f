"""``xgir bench guidance-grid-photos``: the guidance grid on waterbirds-photos.

The grid of :mod:`xgir.bench.guidance_grid` on the Waterbirds-style photographs (source-train
p = 0.95, 1200 images; target-test, 1500), at 64 px, as the study's Waterbirds-100 experiment:
the losses Energy and L1, boxes, annotations on 1 %, 10 % and 100 % of the images. Each of the
three small ResNets (vanilla, X-DNN, B-cos) is first trained on the birds' species over
procedural textures (:func:`~xgir.data.waterbirds_photos.bird_species`: 34 classes, 6000
images, 3 epochs), the stand-in for the ImageNet pretraining that lets the study's ResNet-50s
know birds before they meet the places. 14 main-grid runs and 12 on the annotation axis per seed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from xgir.bench import guidance_grid

SUITE = "guidance-grid-photos"
PHOTOS = guidance_grid.Settings(datasets=("waterbirds-photos",), n_train=1200, n_test=1500, losses=("Energy", "L1"),
                                annotations=("boxes",))
QUICK = replace(guidance_grid.QUICK, datasets=("waterbirds-photos",), photo_size=32, n_pretrain_photos=96,
                losses=("Energy", "L1"), annotations=("boxes",))


def run(out: Path, seeds: list[int], quick: bool = False) -> dict:
    """Run the photo grid; writes report.md, results.json and the figures (as guidance-grid)."""
    return guidance_grid.run(out, seeds, settings=QUICK if quick else PHOTOS)
