"""Image preprocessing: what a model expects, from any image file to a float tensor.

A :class:`Preprocess` says how a model's inputs are made: the input size, how an image of
any size is brought to it (``"crop"``: resize the shorter side to ``resize`` then centre
crop ``size`` x ``size``, the standard ImageNet evaluation transform; ``"squash"``: resize
both sides to ``size``), and the normalisation ``(x - mean) / std`` that the model applies
to images in [0, 1]. xgir keeps images in [0, 1] everywhere (heatmaps, masks, baselines and
the empty image x0 live in image space); the normalisation runs inside the model
(:func:`xgir.models.load.attach_normalization`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from xgir.errors import XgirError

Fit = Literal["crop", "squash", "none"]


@dataclass(frozen=True)
class Preprocess:
    """How images become a model's inputs.

    Attributes:
        size: input height = width in pixels.
        resize: shorter side before the centre crop (``fit="crop"``); default ``size * 8 / 7``
            (256 for 224, as ImageNet evaluation does).
        fit: ``"crop"`` (resize shorter side, centre crop), ``"squash"`` (resize to
            size x size, aspect not kept) or ``"none"`` (images must already be size x size).
        mean, std: per-channel normalisation applied by the model to [0, 1] images; empty
            tuples mean none.
        channels: 3 (RGB) or 1 (grey).

    A 640 x 480 photo to a 224 px ImageNet input (shorter side to 256, centre crop):

    >>> from PIL import Image
    >>> pre = Preprocess(size=224)
    >>> pre.shorter_side
    256
    >>> x = pre(Image.new("RGB", (640, 480), (255, 0, 0)))
    >>> tuple(x.shape), float(x[0].min()), float(x[1].max())
    ((3, 224, 224), 1.0, 0.0)
    """

    size: int
    resize: int | None = None
    fit: Fit = "crop"
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)
    channels: int = 3

    def __post_init__(self) -> None:
        if self.size < 1:
            raise XgirError(f"preprocess size must be at least 1, got {self.size}")
        if self.fit not in ("crop", "squash", "none"):
            raise XgirError(f"preprocess fit must be crop, squash or none, got '{self.fit}'")
        if len(self.mean) != len(self.std):
            raise XgirError("preprocess mean and std need the same number of values")
        if any(s <= 0 for s in self.std):
            raise XgirError("preprocess std values must be positive")
        if self.channels not in (1, 3):
            raise XgirError(f"preprocess channels must be 1 or 3, got {self.channels}")

    @property
    def shorter_side(self) -> int:
        """The shorter side before the centre crop."""
        return self.resize if self.resize is not None else round(self.size * 8 / 7)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["mean"], d["std"] = tuple(d.get("mean", ())), tuple(d.get("std", ()))
        return cls(**d)

    def with_fit(self, fit: Fit) -> Preprocess:
        """The same preprocessing with another ``fit``."""
        return Preprocess(self.size, self.resize, fit, self.mean, self.std, self.channels)

    def geometry(self, image: Any, resample: int | None = None) -> Any:
        """Bring a PIL image of any size to ``size`` x ``size`` by ``fit`` (no mode change).

        ``resample`` is a PIL filter (default bilinear; pass ``Image.NEAREST`` for masks)."""
        from PIL import Image

        resample = Image.Resampling.BILINEAR if resample is None else resample
        img = image
        if self.fit == "crop":
            w, h = img.size
            scale = self.shorter_side / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), resample)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        elif self.fit == "squash":
            img = img.resize((self.size, self.size), resample)
        elif img.size != (self.size, self.size):
            raise XgirError(f"image is {img.size[0]}x{img.size[1]}, the model takes "
                            f"{self.size}x{self.size} (use fit crop or squash)")
        return img

    def __call__(self, image: Any) -> torch.Tensor:
        """A PIL image (any mode, any size) -> float[C,size,size] in [0, 1] (not normalised)."""
        img = to_rgb(image) if self.channels == 3 else to_rgb(image).convert("L")
        arr = np.asarray(self.geometry(img), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr.copy())
        return t.permute(2, 0, 1) if t.ndim == 3 else t[None]

    def tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Bring a batch float[N,C,H,W] in [0, 1] (e.g. an embedded dataset's) to this
        preprocessing's channels and size (bilinear; ``crop`` resizes the shorter side to
        ``size * shorter_side / size`` and centre crops). Unchanged when it already fits."""
        x = images
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x[:, :1].expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size):
            return x.contiguous()
        f = torch.nn.functional
        if self.fit == "squash" or (self.fit == "crop" and h == w and self.shorter_side == self.size):
            return f.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.fit == "none":
            raise XgirError(f"images are {w}x{h}, the model takes {self.size}x{self.size} "
                            "(use fit crop or squash)")
        scale = self.shorter_side / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = f.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[..., top:top + self.size, left:left + self.size].contiguous()


def to_rgb(image: Any) -> Any:
    """A PIL image in 8-bit RGB from any mode: grey, palette, RGBA (composited on white),
    16-bit and 32-bit integer or float grey (scaled by the mode's range, not clipped)."""
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        elif mode == "I":
            hi = 65535.0 if arr.max(initial=0) <= 65535 else float(2**31 - 1)
            arr = np.clip(arr, 0, None) / hi
        else:  # float: assume [0, 1] when it fits, else scale to the range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if lo < 0 or hi > 1:
                arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        grey = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
