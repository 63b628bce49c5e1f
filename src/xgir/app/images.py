"""The app's image set: ``load_image_set(spec, loaded)``.

A small adapter until ``xgir.data.images.load_images`` lands (the integrator switches to it):

- ``NAME:SPLIT`` — an embedded dataset (``decoy-digits:train``) through :func:`xgir.data.load_dataset`;
- ``photos`` — the scikit-image sample photos, through the model's preprocessing;
- a file or a glob (``pics/*.jpg``) — image files through the model's preprocessing.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from xgir.errors import XgirError
from xgir.models import LoadedModel

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "camera", "coins", "moon", "page", "horse")


@dataclass
class ImageSet:
    """Images float[N,C,S,S] in [0, 1] as the model takes them; labels long[N] (-1 = unknown);
    names: one short name per image; extras: per-image tensors (e.g. ``decoy_mask`` bool[N,S,S])."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    spec: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.images.shape[3])


def _fit(images: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    """Channels and size as the model's preprocessing says (grey -> RGB by repetition)."""
    c, s = loaded.preprocess.channels, loaded.preprocess.size
    if images.shape[1] == 1 and c == 3:
        images = images.repeat(1, 3, 1, 1)
    elif images.shape[1] == 3 and c == 1:
        images = images.mean(1, keepdim=True)
    if images.shape[-2:] != (s, s) and loaded.preprocess.fit != "none":
        images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False).clamp(0, 1)
    return images.contiguous()


def _fit_mask(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """bool[N,h,w] masks resized (nearest) to ``size``."""
    if masks.shape[-2:] == tuple(size):
        return masks.clone()
    return F.interpolate(masks[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5


def _from_pil(items: list[tuple[str, object]], loaded: LoadedModel, spec: str) -> ImageSet:
    x = torch.stack([loaded.preprocess(img) for _, img in items])
    return ImageSet(x, torch.full((len(items),), -1, dtype=torch.long), [n for n, _ in items], spec)


def load_image_set(spec: str, loaded: LoadedModel, n: int | None = None, seed: int = 0) -> ImageSet:
    """The images named by ``spec`` (see the module docstring), at most ``n`` of them."""
    from PIL import Image

    spec = spec.strip()
    if n is not None and n < 1:
        raise XgirError(f"--n must be at least 1, got {n}")
    if spec == "photos":
        from skimage import data as skdata

        items = [(name, Image.fromarray(getattr(skdata, name)())) for name in PHOTOS[: n or len(PHOTOS)]]
        return _from_pil(items, loaded, spec)
    if ":" in spec and not Path(spec).exists():
        from xgir.data import DATASETS, load_dataset

        name, _, split = spec.partition(":")
        if name not in DATASETS:
            raise XgirError(f"unknown image set '{spec}'; use NAME:SPLIT with NAME one of "
                            f"{', '.join(DATASETS)}, 'photos', or image files (a path or a glob)")
        ds = load_dataset(name, split, seed=seed, **({"n": n} if n and "n" in _params(name) else {}))
        count = min(len(ds), n or len(ds))
        x = _fit(ds.images[:count], loaded)
        extras = {k: _fit_mask(v[:count], x.shape[-2:]) for k, v in ds.extras.items()
                  if v.ndim == 3 and v.dtype == torch.bool}
        names = [f"{name}/{split}/{i}" for i in range(count)]
        return ImageSet(x, ds.labels[:count].clone(), names, spec, extras)
    paths = sorted(glob.glob(spec)) if any(ch in spec for ch in "*?[") else [spec]
    paths = [p for p in paths if Path(p).is_file()][: n or None]
    if not paths:
        raise XgirError(f"no images at '{spec}'; give NAME:SPLIT (e.g. decoy-digits:train), 'photos', "
                        "an image file or a glob")
    items = []
    for p in paths:
        try:
            items.append((Path(p).name, Image.open(p)))
        except OSError as err:
            raise XgirError(f"cannot read image {p}: {err}") from None
    return _from_pil(items, loaded, spec)


def _params(name: str) -> list[str]:
    import inspect

    from xgir.data import DATASETS

    return list(inspect.signature(DATASETS[name][0]).parameters)


def evaluation_spec(spec: str) -> str | None:
    """The held-out split matching an embedded training spec (``decoy-digits:train`` ->
    ``decoy-digits:test``), or None."""
    from xgir.data import DATASETS

    name, _, split = spec.partition(":")
    if name in DATASETS and split == "train" and "test" in DATASETS[name][1]:
        return f"{name}:test"
    return None
