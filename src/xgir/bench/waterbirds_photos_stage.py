"""The data and network passes of ``xgir bench waterbirds-photos`` (:class:`Stage`), cached on disk.

The images (:mod:`xgir.data.waterbirds_photos`) are rendered once per size setting and passed
through EfficientNet-Lite0 once: pooled features h (input of the ImageNet head ``_fc``) of
every split, and the last maps M (input of the global pool, 1280 x 7 x 7) of the source pool and
target-val, so that every linear head's CAM (= Grad-CAM at M) costs no backward pass. The
source-train set of each seed is drawn from the pool with Waterbirds' group counts
(:func:`~xgir.data.waterbirds_photos.group_subset`). Masked images, f(x s + x0 (1 - s)) (the
core) and f(x (1 - s) + x0 s) (the context), are passed once per support and cached under the
support's fingerprint; x0 is the pool's mean image.

Core maps (float[N,7,7] over the pool): ``pretrained`` (the ImageNet head's CAM of its top-5
classes, probability-weighted), ``cwox`` (the ImageNet head's CWOX cluster map of its top cluster,
:func:`~xgir.correct.xgir_variants.cwox_cluster_cam`, tree from the head's weights), ``novelty``
(class-agnostic) and ``erm`` (the seed's ERM head's CAM of the true class, set per seed). Supports
are the map's top fraction of pixels (:func:`~xgir.correct.xgir.support_top_fraction`); the
controls ``gt`` (the exact bird mask; annotation) and ``random`` (a random blob of the same size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from xgir.bench._matched import POOL, MatchedSupports
from xgir.correct.xgir_variants import cwox_cluster_cam, novelty_map, pooled_maps, pretrained_cam
from xgir.data.base import ImageDataset
from xgir.data.waterbirds_photos import WATERBIRD_SHARE, photo_pool, waterbirds_photos
from xgir.errors import XgirError
from xgir.io import cached, fingerprint

MODEL, HEAD = "efficientnet-lite0", "_fc"
CACHE = "waterbirds-photos"
MAP_CORES = ("pretrained", "cwox", "novelty")  # annotation-free maps of the pretrained network


def group_counts(n: int, p: float) -> dict[int, int]:
    """Waterbirds' group counts for ``n`` images at bias ``p``: groups 0 land/land, 1 land/water,
    2 water/land, 3 water/water (the smallest, waterbirds on land, round((1 - p) share n))."""
    water = round(n * WATERBIRD_SHARE)
    land = n - water
    return {0: land - round(land * (1 - p)), 1: round(land * (1 - p)),
            2: round(water * (1 - p)), 3: water - round(water * (1 - p))}


@dataclass(frozen=True)
class Sizes:
    """A run's sizes and grids: the full suite, its quick form (``make test``) and the demo's."""

    pool: dict[int, int] = field(default_factory=lambda: {0: 1000, 1: 120, 2: 60, 3: 320})
    train: int = 1200  # per seed, Waterbirds' proportions at p (14 waterbirds on land at 1200)
    p: float = 0.95
    source_test: int = 600
    target_val: int = 1000
    target_test: int = 1500
    fractions: tuple[float, ...] = (0.1, 0.2)  # support sizes (share of the image's pixels)
    cores: tuple[str, ...] = ("pretrained", "cwox", "novelty", "erm")  # annotation-free core maps
    swept: tuple[str, ...] = ("pretrained",)  # the cores tried at every fraction (the others at the first)
    swaps: tuple[str, ...] = ("any partner, remainder", "other class, remainder", "other class, background")
    afr_gammas: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0, 14.0, 20.0)
    afr_lambdas: tuple[float, ...] = (0.0, 0.1, 0.3)
    jtt_upweights: tuple[float, ...] = (5.0, 20.0, 100.0)
    dac_alphas: tuple[float, ...] = (1.0, 10.0)  # () leaves DaC out (its composites cost passes)
    dac_low_loss: float = 0.6  # the paper's share of low-loss images
    finer_layers: tuple[str, ...] = ("_blocks.10", "_blocks.14")  # Grad-CAM precision at finer layers
    note_rows: bool = True  # the note's signed rule beside the swaps
    controls: bool = True  # the exact-mask and random-mask controls and the two ablations
    label: str = ""  # said in the report's first line (quick / demo)


QUICK = Sizes(pool={0: 30, 1: 6, 2: 4, 3: 12}, train=40, source_test=16, target_val=40, target_test=40,
              fractions=(0.1,), cores=("pretrained", "cwox"), swaps=("other class, background",),
              afr_gammas=(4.0, 10.0), afr_lambdas=(0.0,), jtt_upweights=(20.0,), dac_alphas=(10.0,),
              dac_low_loss=1.0, finer_layers=(), label="quick: tiny sizes, a smoke test, not a result")
DEMO = Sizes(pool={0: 200, 1: 30, 2: 16, 3: 64}, train=260, source_test=100, target_val=240, target_test=300,
             fractions=(0.1,), cores=("pretrained",), swaps=("other class, background",),
             afr_gammas=(4.0, 10.0, 20.0), afr_lambdas=(0.0,), jtt_upweights=(20.0,), dac_alphas=(),
             finer_layers=(), note_rows=False, controls=False,
             label="demo sizes: one seed, a small pool; `xgir bench waterbirds-photos` for the result")


class Stage(MatchedSupports):
    """Data, features, maps and masked-image passes of one size setting, cached on disk
    (supports and masked passes: :class:`~xgir.bench._matched.MatchedSupports`)."""

    cache = CACHE

    def __init__(self, sizes: Sizes, *, device: str = "cpu") -> None:
        from xgir.explain.clusters import ConfusionTree
        from xgir.models import load_model
        from xgir.models.split import get_module

        self.sizes = s = sizes
        loaded = load_model(MODEL, device=device)  # the network passes run there; heads on the CPU
        self.model = loaded.model
        head = get_module(self.model, HEAD)
        if not isinstance(head, torch.nn.Linear):
            raise XgirError(f"{MODEL}'s head '{HEAD}' is a {type(head).__name__}, not nn.Linear")
        self.imagenet_head, self.imagenet_classes = head.cpu(), loaded.classes
        self.data: dict[str, ImageDataset] = {
            "pool": photo_pool("train", {(g // 2, g % 2): k for g, k in s.pool.items()}),
            "source-test": waterbirds_photos("source-test", n=s.source_test, p=s.p),
            "target-val": waterbirds_photos("target-val", n=s.target_val),
            "target-test": waterbirds_photos("target-test", n=s.target_test),
        }
        self.keys = {name: fingerprint(MODEL, CACHE, name, ds.images) for name, ds in self.data.items()}  # the pixels
        self.h: dict[str, torch.Tensor] = {}
        self.maps: dict[str, torch.Tensor] = {}
        for name, ds in self.data.items():
            if name in ("pool", "target-val"):
                got = cached(CACHE, f"{self.keys[name]}-maps", lambda ds=ds: dict(zip(  # type: ignore[misc]
                    ("h", "maps"), pooled_maps(self.model, ds.images, POOL, batch_size=32), strict=True)))
                self.h[name], self.maps[name] = got["h"], got["maps"]
            else:
                self.h[name] = cached(CACHE, f"{self.keys[name]}-h", lambda ds=ds: pooled_maps(  # type: ignore[misc]
                    self.model, ds.images, POOL, batch_size=32)[0])
        pool = self.data["pool"]
        self.masks = present(pool.masks, "masks")
        self.mean_image = pool.images.mean(0)  # x0
        self.tree = ConfusionTree.from_head(self.imagenet_head, self.imagenet_classes)
        m = self.maps["pool"]
        self.heatmaps: dict[str, torch.Tensor] = {
            "pretrained": pretrained_cam(m, self.imagenet_head),
            "cwox": cwox_cluster_cam(m, self.imagenet_head, self.tree),
            "novelty": novelty_map(m),
        }

    def set_erm(self, head: torch.nn.Linear) -> None:
        """The ERM head's CAM of the true class over the pool, as the ``erm`` core map."""
        from xgir.correct.xgir_variants import class_cam

        self.heatmaps["erm"] = class_cam(self.maps["pool"], head, self.data["pool"].labels)


def present(value: torch.Tensor | None, what: str) -> torch.Tensor:
    """``value``; XgirError when the data lack it (waterbirds-photos always carries masks and groups)."""
    if value is None:
        raise XgirError(f"waterbirds-photos data without {what}")
    return value
