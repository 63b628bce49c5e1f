"""EPG of each explainer on the hand-built region models of the tests: the figures behind their
">= 0.7" assertions (same models, inputs and settings). Run from the repository root:

    python benchmarks/explainer_epg.py
"""

from __future__ import annotations

import torch

from xgir.explain import get_explainer
from xgir.explain.iassa import IASSA
from xgir.explain.lime import LIME
from xgir.explain.rise import RISE
from xgir.metrics.localisation import epg
from xgir.testing import GatedRegionNet, RegionNet, gated_region_mask, region_images, region_mask

GRADIENT_FAMILY = [
    ("gradcam", {"layer": "conv2"}),
    ("ig", {"n_steps": 32}),
    ("saliency", {}),
    ("deeplift", {}),
    ("occlusion", {"window": 4, "stride": 2}),
]


def main() -> None:
    torch.set_num_threads(1)
    model = GatedRegionNet().eval()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    for name, params in GRADIENT_FAMILY:
        maps = get_explainer(name, **params)(model, x, torch.tensor([[0, 2]] * 6))
        scores = epg(maps, gated_region_mask().expand(len(x), 16, 16))
        print(f"{name}: EPG min {float(scores.min()):.3f}, mean {float(scores.mean()):.3f}")

    model, mask = RegionNet().eval(), region_mask()
    x, y = region_images([0, 1]), torch.tensor([0, 1])
    for label, center in (("centred", True), ("paper formula", False)):
        heat = RISE(n_masks=3000, s=16, center=center, progress=False)(model, x[:1], y[:1])
        print(f"rise ({label}, s=16): EPG {float(epg(heat[:1, 0], mask[None])):.3f}")
    x, y = region_images([0, 2], seed=1), torch.tensor([0, 2])
    heat = LIME(n_samples=400, n_segments=50, progress=False)(model, x, y)
    print("lime: EPG", ", ".join(f"{float(e):.3f}" for e in epg(heat[:, 0], mask.expand(2, *mask.shape))))
    x, y = region_images([0, 1], seed=2), torch.tensor([0, 1])
    heat = IASSA(progress=False)(model, x, y)
    print("iassa: EPG", ", ".join(f"{float(e):.3f}" for e in epg(heat[:, 0], mask.expand(2, *mask.shape))))


if __name__ == "__main__":
    main()
