"""The data, features, maps and responses of ``xgir bench xgir-imagenet`` (:class:`Stage`), cached on disk.

The setting (font digits over procedural textures, source bias p, target independent) is
described in :mod:`xgir.bench.xgir_imagenet`; this module renders it once per size setting,
passes it through EfficientNet-Lite0 (pooled features h and the last maps M), builds the core
supports, and draws the (p, seed) splits. Every network pass goes through ``xgir.io.cached``
(keyed by the model name, the image size and the dataset's sizes; f(core) also by the support's
fingerprint and the empty image), so a rerun only fits heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xgir.bench._matched import MatchedSupports
from xgir.bench.xgir_two_stage import random_supports
from xgir.correct.xgir import XGIRConfig, empty_name, support_from_heatmaps
from xgir.correct.xgir_variants import class_cam, novelty_map, pooled_maps, pretrained_cam
from xgir.data.objects import bias_subset, object_pool, object_shift
from xgir.errors import XgirError
from xgir.io import cached, fingerprint

MODEL, HEAD, POOL = "efficientnet-lite0", "_fc", "_avg_pooling"
DELTA1 = 0.5  # CAM supports: delta1 = 0.01 keeps ~all pixels of an upsampled 4x4 map (xgir-two-stage report)


@dataclass(frozen=True)
class Sizes:
    size: int = 112
    pool_train: tuple[int, int] = (1200, 400)  # aligned, misaligned
    n_train: int = 1000
    pool_val: tuple[int, int] = (430, 140)
    n_val: int = 450
    pool_test: tuple[int, int] = (480, 160)
    n_test: int = 500
    target_val: int = 2000
    target_test: int = 1000
    ps: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95)
    erm_core_ps: tuple[float, ...] = (0.9,)  # p at which the ERM head's own CAM is a core (one pass each)


QUICK = Sizes(size=64, pool_train=(40, 20), n_train=40, pool_val=(30, 12), n_val=30, pool_test=(30, 12),
              n_test=30, target_val=120, target_test=60, ps=(0.9,), erm_core_ps=(0.9,))


class Stage(MatchedSupports):
    """Data, features, maps and responses of one size setting, cached on disk (matched-size
    supports and masked passes: :class:`~xgir.bench._matched.MatchedSupports`). Without a
    source-val pool (``pool_val = (0, 0)``) there is no source-val and no :meth:`draw`."""

    cache = "xgir-imagenet"

    def __init__(self, sizes: Sizes, progress: bool = False, device: str = "cpu") -> None:
        from xgir.models import load_model

        self.sizes, self.progress = sizes, progress
        loaded = load_model(MODEL, device=device)  # the network passes run there; heads on the CPU
        self.model = loaded.model
        from xgir.models.split import get_module

        head = get_module(self.model, HEAD)
        if not isinstance(head, torch.nn.Linear):
            raise XgirError(f"{MODEL}'s head '{HEAD}' is a {type(head).__name__}, not nn.Linear")
        self.imagenet_head = head
        s = sizes
        self.data = {
            "pool": object_pool(0, *s.pool_train, size=s.size, part="train"),
            **({"source-val": object_pool(0, *s.pool_val, size=s.size, part="val")} if sum(s.pool_val) else {}),
            "source-test": object_pool(0, *s.pool_test, size=s.size, part="test"),
            "target-val": object_shift("target-val", 0, n=s.target_val, size=s.size),
            "target-test": object_shift("target-test", 0, n=s.target_test, size=s.size),
        }
        self.keys = {  # one cache key per dataset: changing one size keeps the others' passes
            "pool": fingerprint(MODEL, s.size, "pool", s.pool_train),
            "source-val": fingerprint(MODEL, s.size, "val", s.pool_val),
            "source-test": fingerprint(MODEL, s.size, "test", s.pool_test),
            "target-val": fingerprint(MODEL, s.size, "target-val", s.target_val),
            "target-test": fingerprint(MODEL, s.size, "target-test", s.target_test),
        }
        self.h: dict[str, torch.Tensor] = {}
        self._core: dict[tuple[str, str], torch.Tensor] = {}
        for name, ds in self.data.items():
            if name == "pool":
                got = cached("xgir-imagenet", f"{self.keys[name]}-maps-pool",
                             lambda ds=ds: dict(zip(("h", "maps"),  # type: ignore[misc]  # default-arg lambda
                                                    pooled_maps(self.model, ds.images, POOL), strict=True)))
                self.h[name], self.maps = got["h"], got["maps"]
            else:
                self.h[name] = cached("xgir-imagenet", f"{self.keys[name]}-h-{name}",
                                      lambda ds=ds: pooled_maps(self.model, ds.images, POOL)[0])  # type: ignore[misc]
        pool = self.data["pool"]
        self.mean_image = pool.images.mean(0)
        self.x0 = {"zeros": torch.zeros_like(self.mean_image), "data-mean": self.mean_image}
        self.f0 = {k: pooled_maps(self.model, x0[None], POOL)[0][0] for k, x0 in self.x0.items()}
        self.masks = present(pool.masks, "masks")
        self.supports: dict[str, torch.Tensor] = {"gt": self.masks, "random": random_supports(self.masks, 12345)}
        hw = (int(pool.images.shape[-2]), int(pool.images.shape[-1]))
        self.heatmaps = {"pretrained": pretrained_cam(self.maps, self.imagenet_head),
                         "novelty": novelty_map(self.maps)}
        for k in ("pretrained", "novelty"):
            self.supports[k] = support_from_heatmaps(self.heatmaps[k], hw, DELTA1)

    def draw(self, p: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor],
                                                  dict[str, torch.Tensor], torch.Tensor]:
        """The splits of bias ``p`` and ``seed``: source-train pool indices, their features and labels,
        the features and labels of source-val, source-test and target-test, and source-val groups."""
        sz, pool = self.sizes, self.data["pool"]
        val, test = self.data["source-val"], self.data["source-test"]
        idx = bias_subset(pool.extras["aligned"], p, sz.n_train, seed)
        vi = bias_subset(val.extras["aligned"], p, sz.n_val, seed)
        ti = bias_subset(test.extras["aligned"], p, sz.n_test, seed)
        h = {"source-val": self.h["source-val"][vi], "source-test": self.h["source-test"][ti],
             "target-test": self.h["target-test"]}
        y = {"source-val": val.labels[vi], "source-test": test.labels[ti],
             "target-test": self.data["target-test"].labels}
        return idx, self.h["pool"][idx], pool.labels[idx], h, y, present(val.groups, "groups")[vi]

    def set_erm_support(self, p: float, head: torch.nn.Linear) -> None:
        """The ERM head's CAM of the true class (over the whole pool) as the 'erm' core."""
        pool = self.data["pool"]
        self.heatmaps[f"erm p={p}"] = cam = class_cam(self.maps, head, pool.labels)
        self._core = {k: v for k, v in self._core.items() if k[0] != f"erm p={p}"}
        self.supports[f"erm p={p}"] = support_from_heatmaps(
            cam, (int(pool.images.shape[-2]), int(pool.images.shape[-1])), DELTA1)

    def core_features(self, core: str, empty: str) -> torch.Tensor:
        """f(x * s + x0 * (1 - s)) over the pool, float[N,D] (cached); ``empty``: zeros | data-mean."""
        empty = empty_name(empty)
        if empty not in self.x0:
            raise XgirError(f"xgir-imagenet computes f(core) with x0 = zeros or data-mean, not {empty}")
        sup = self.supports[core]
        pool = self.data["pool"]

        def compute() -> torch.Tensor:
            x0 = self.x0[empty]
            out = []
            for i in range(0, len(pool.images), 256):
                s = sup[i : i + 256, None].float()
                out.append(pooled_maps(self.model, pool.images[i : i + 256] * s + x0 * (1 - s), POOL)[0])
            return torch.cat(out)

        if (core, empty) not in self._core:  # in memory too: every row of every (p, seed) reads it
            self._core[core, empty] = cached("xgir-imagenet", f"{self.keys['pool']}-core-{fingerprint(sup)}-{empty}",
                                             compute)
        return self._core[core, empty]

    def responses(self, core: str, config: XGIRConfig) -> torch.Tensor:
        """r over the pool for ``config.response`` (core: f(x') - f(x0); core-vs-whole: f(x') - h)."""
        fc = self.core_features(core, config.empty)
        if config.response == "core-vs-whole":
            return fc - self.h["pool"]
        return fc - self.f0[empty_name(config.empty)]


def present(value: torch.Tensor | None, what: str) -> torch.Tensor:
    """``value``; XgirError when the object-shift data lack it (they always carry masks and groups)."""
    if value is None:
        raise XgirError(f"object-shift data without {what}")
    return value
