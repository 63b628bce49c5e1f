"""In-memory image datasets: tensors for whole-batch work, dicts per sample.

Every dataset in xgir is an :class:`ImageDataset`: ``images`` float[N,C,H,W] in
[0, 1], ``labels`` long[N] and optionally ``masks`` bool[N,H,W] (the object, the
relevant region), ``groups`` long[N] and extra per-sample tensors (for example
``decoy_masks``, the irrelevant region, or ``textures``). Indexing gives the dict
``{"image", "label", "mask"?, "group"?, ...}`` described in docs/data.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from xgir.errors import XgirError


@dataclass
class ImageDataset(Dataset):
    """A labelled image set held as tensors.

    Attributes:
        images: float[N,C,H,W], values in [0, 1].
        labels: long[N].
        masks: bool[N,H,W] relevant (object) region, or None.
        groups: long[N] group index (e.g. label x background), or None.
        extras: other per-sample tensors with first dimension N.
        classes: class names, index = label.
        name: a short description for reports.
        files: per-image source names (file paths, photo names) where known, else empty.
        no_labels: why the labels are unknown (-1) where a reason is known (class folders that
            do not name the model's classes), else empty.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)
    name: str = ""
    files: list[str] = field(default_factory=list)
    no_labels: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise XgirError(f"images must be [N,C,H,W], got shape {tuple(self.images.shape)}")
        n, _, h, w = self.images.shape
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if self.labels.shape != (n,):
            raise XgirError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.masks is not None:
            self.masks = self.masks.bool()
            if tuple(self.masks.shape) != (n, h, w):
                raise XgirError(
                    f"masks must have shape ({n}, {h}, {w}), got {tuple(self.masks.shape)}"
                )
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups, dtype=torch.long)
            if self.groups.shape != (n,):
                raise XgirError(f"groups must have shape ({n},), got {tuple(self.groups.shape)}")
        for key, value in self.extras.items():
            if value.shape[0] != n:
                raise XgirError(f"extra '{key}' has {value.shape[0]} rows, expected {n}")
        if self.files and len(self.files) != n:
            raise XgirError(f"files must name {n} images, got {len(self.files)}")
        if not self.classes:
            self.classes = [str(i) for i in range(int(self.labels.max()) + 1 if n else 0)]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        item: dict[str, torch.Tensor | int] = {"image": self.images[i], "label": int(self.labels[i])}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        if self.groups is not None:
            item["group"] = int(self.groups[i])
        for key, value in self.extras.items():
            item[key] = value[i]
        return item

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_groups(self) -> int:
        if self.groups is None:
            return 0
        return len(self.group_names) or int(self.groups.max()) + 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | list[int] | slice) -> ImageDataset:
        """A new dataset holding the selected rows (shares no storage with slices)."""
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            groups=None if self.groups is None else self.groups[index],
            extras={k: v[index] for k, v in self.extras.items()},
            classes=list(self.classes),
            group_names=list(self.group_names),
            name=self.name,
            no_labels=self.no_labels,
            files=[self.files[i] for i in torch.arange(len(self))[index].tolist()] if self.files else [],
        )

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield dicts of batched tensors (``image``, ``label``, ``mask``?, ``group``?, extras)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = {"image": self.images[idx], "label": self.labels[idx], "index": idx}
            if self.masks is not None:
                batch["mask"] = self.masks[idx]
            if self.groups is not None:
                batch["group"] = self.groups[idx]
            for key, value in self.extras.items():
                batch[key] = value[idx]
            yield batch
