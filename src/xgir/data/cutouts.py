"""Photographic composites: object cut-outs with exact alpha pasted over crops of photographs.

The builder behind ``waterbirds-photos`` (:mod:`xgir.data.waterbirds_photos`), and the one a
user calls to build the same kind of shift benchmark from their own RGBA cut-outs and
background photographs (:func:`shift_split`, ``xgir data shift``).

- A :class:`Cutout` is an object photograph with an alpha channel, cropped to the alpha's box;
  its mask is alpha >= 0.5 and it is pasted with that *binary* alpha, so a pixel is either object
  or background and ``x * mask + x0 * (1 - mask)`` holds no background colour.
- A :class:`Scene` is a background photograph (read once, downscaled to at most ``max_side``
  px) and the region of it that crops come from (relative box), e.g. the water below a sky.
- Every image is drawn from its own generator ``numpy.random.default_rng([seed, salt, i])``: a
  split renders the same whatever subset or chunk of it is asked for.

Image i: a square crop of its scene (side 35-80 % of the region's shorter side, at a random
place, flipped at random), resized to ``size``; the cut-out scaled so that its longer side is
``extent`` (default 45-75 %) of ``size``, flipped at random, at a random place inside the image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xgir.data.base import ImageDataset
from xgir.errors import XgirError

MAX_SIDE = 1024  # scenes are downscaled to this longer side once (crops are 224-640 px of it)


@dataclass(frozen=True)
class Cutout:
    """An object photograph cropped to its alpha box: ``rgb`` uint8[h,w,3], ``alpha`` bool[h,w]."""

    name: str
    rgb: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class Scene:
    """A background photograph ``image`` uint8[H,W,3] and the ``region`` (x0, y0, x1, y1, relative)
    that crops come from."""

    name: str
    image: np.ndarray
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


def read_cutout(path: str | os.PathLike) -> Cutout:
    """An RGBA image file as a :class:`Cutout`; XgirError when it has no alpha channel, or an
    alpha that is all opaque or all clear (not a cut-out)."""
    from xgir.data.images import read_image

    img = read_image(path)
    if img.mode not in ("RGBA", "LA", "PA") and not (img.mode == "P" and "transparency" in img.info):
        raise XgirError(f"cut-out {path} has no alpha channel (mode {img.mode}); give RGBA images whose "
                        "alpha marks the object")
    arr = np.asarray(img.convert("RGBA"))
    alpha = arr[..., 3] >= 128
    if alpha.all() or not alpha.any():
        raise XgirError(f"cut-out {path}: its alpha is {'all opaque' if alpha.any() else 'all clear'}, so it "
                        "marks no object; give RGBA images whose alpha is the object's exact shape")
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return Cutout(Path(path).stem, np.ascontiguousarray(arr[box][..., :3]), np.ascontiguousarray(alpha[box]))


def read_scene(path: str | os.PathLike, region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
               max_side: int = MAX_SIDE, name: str | None = None) -> Scene:
    """A background photograph as a :class:`Scene` (RGB, longer side at most ``max_side`` px),
    named ``name`` (default: the file's stem)."""
    from PIL import Image

    from xgir.data.images import read_image

    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise XgirError(f"scene region {region} of {path} is not a box (x0, y0, x1, y1) inside [0, 1]")
    img = read_image(path).convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    return Scene(name or Path(path).stem, np.asarray(img), region)


def crop_scene(scene: Scene, size: int, rng: np.random.Generator, *,
               side: tuple[float, float] = (0.35, 0.8)) -> np.ndarray:
    """A random square crop of the scene's region (side ``side`` of the region's shorter side),
    flipped left-right at random, resized to uint8[size,size,3]."""
    from PIL import Image

    h, w = scene.image.shape[:2]
    x0, y0, x1, y1 = scene.region
    rx0, ry0, rw, rh = int(x0 * w), int(y0 * h), max(1, int((x1 - x0) * w)), max(1, int((y1 - y0) * h))
    c = max(8, int(min(rw, rh) * rng.uniform(*side)))
    cx, cy = rx0 + int(rng.integers(0, rw - c + 1)), ry0 + int(rng.integers(0, rh - c + 1))
    crop = Image.fromarray(scene.image[cy:cy + c, cx:cx + c]).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def paste(background: np.ndarray, cutout: Cutout, rng: np.random.Generator, *,
          extent: tuple[float, float] = (0.45, 0.75)) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out over ``background`` uint8[S,S,3], its longer side ``extent`` of S, flipped at
    random, at a random place: (image uint8[S,S,3], mask bool[S,S])."""
    from PIL import Image

    s = background.shape[0]
    h, w = cutout.alpha.shape
    scale = rng.uniform(*extent) * s / max(h, w)
    nh, nw = max(1, min(s, round(h * scale))), max(1, min(s, round(w * scale)))
    rgb = np.asarray(Image.fromarray(cutout.rgb).resize((nw, nh), Image.Resampling.BICUBIC))
    mask_img = Image.fromarray(cutout.alpha.astype(np.uint8) * 255)
    alpha = np.asarray(mask_img.resize((nw, nh), Image.Resampling.BILINEAR)) >= 128
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    top, left = int(rng.integers(0, s - nh + 1)), int(rng.integers(0, s - nw + 1))
    image, mask = background.copy(), np.zeros((s, s), dtype=bool)
    window = image[top:top + nh, left:left + nw]
    window[alpha] = rgb[alpha]
    mask[top:top + nh, left:left + nw] = alpha
    return image, mask


def _rng(seed: int, salt: str, i: int) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, key, i])  # one generator per image: any subset renders the same


def render(cutouts: Sequence[Cutout], scenes: Sequence[Scene], objects: np.ndarray, places: np.ndarray,
           size: int, seed: int, salt: str, *, first: int = 0,
           extent: tuple[float, float] = (0.45, 0.75)) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float[N,3,size,size] in [0, 1] and masks bool[N,size,size]: image k pastes
    ``cutouts[objects[k]]`` over a crop of ``scenes[places[k]]``, drawn from generator
    ``(seed, salt, first + k)``."""
    n = len(objects)
    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, size, size, dtype=torch.bool)
    for k in range(n):
        rng = _rng(seed, salt, first + k)
        back = crop_scene(scenes[int(places[k])], size, rng)
        img, mask = paste(back, cutouts[int(objects[k])], rng, extent=extent)
        images[k] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        masks[k] = torch.from_numpy(np.ascontiguousarray(mask))
    return images, masks


def cycle_members(which: np.ndarray, members: Sequence[Sequence[int] | np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    """For each draw k, a member of the list ``members[which[k]]``, cycling through each list in
    shuffled order so that its members are used about equally often: long[len(which)]."""
    out = np.empty(len(which), dtype=np.int64)
    for c, pool in enumerate(members):
        idx = np.flatnonzero(which == c)
        if not len(idx):
            continue
        if not len(pool):
            raise XgirError(f"no members to draw for category {c}")
        reps = -(-len(idx) // len(pool))
        order = np.concatenate([rng.permutation(np.asarray(pool)) for _ in range(reps)])
        out[idx] = order[:len(idx)]
    return out


@dataclass(frozen=True)
class ShiftSpec:
    """What a shift benchmark is made of: ``cutouts`` with their class ``object_class`` (long per
    cut-out, index into ``classes``), ``scenes`` with their place ``scene_place`` (index into
    ``places``), and ``aligned_place[c]``, the place that class c appears on in the majority."""

    classes: tuple[str, ...]
    places: tuple[str, ...]
    cutouts: tuple[Cutout, ...]
    object_class: tuple[int, ...]
    scenes: tuple[Scene, ...]
    scene_place: tuple[int, ...]
    aligned_place: tuple[int, ...]

    def __post_init__(self) -> None:
        k, m = len(self.classes), len(self.places)
        if len(self.object_class) != len(self.cutouts) or len(self.scene_place) != len(self.scenes):
            raise XgirError("every cut-out needs a class and every scene a place")
        for c in range(k):
            if c not in self.object_class:
                raise XgirError(f"class '{self.classes[c]}' has no cut-outs")
        for q in range(m):
            if q not in self.scene_place:
                raise XgirError(f"place '{self.places[q]}' has no scenes")
        if len(self.aligned_place) != k or not all(0 <= a < m for a in self.aligned_place):
            raise XgirError(f"aligned_place must give one place index in [0, {m}) per class")


def salted_rng(seed: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(salt.encode()).digest()[:4], "little")])


def draw_groups(spec: ShiftSpec, n: int, p: float | None, class_share: Sequence[float] | None,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and places long[n]: class c on ``round(n * class_share[c])`` images (balanced when
    None); the place is the class's aligned place with probability ``p``, else another place at
    random (``p`` None: places uniform, independent of the class)."""
    k, m = len(spec.classes), len(spec.places)
    if p is not None and not 0.0 <= p <= 1.0:
        raise XgirError(f"p must be a probability in [0, 1], got {p}")
    share = np.full(k, 1.0 / k) if class_share is None else np.asarray(class_share, dtype=float)
    if len(share) != k or (share < 0).any() or abs(share.sum() - 1) > 1e-6:
        raise XgirError(f"class_share must give {k} non-negative shares summing to 1, got {list(share)}")
    counts = np.floor(share * n).astype(int)
    counts[np.argsort(-(share * n - counts))[: n - counts.sum()]] += 1  # largest remainders
    labels = rng.permutation(np.repeat(np.arange(k), counts))
    al = np.asarray(spec.aligned_place)[labels]
    if p is None:
        return labels, rng.integers(0, m, n)
    other = (al + rng.integers(1, m, n)) % m if m > 1 else al
    return labels, np.where(rng.random(n) < p, al, other)


def group_draw(spec: ShiftSpec, counts: dict[tuple[int, int], int], rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and places long[N] with ``counts[(class, place)]`` images of each group, shuffled."""
    pairs = [(c, q) for (c, q), v in counts.items() for _ in range(int(v))]
    if not pairs:
        raise XgirError("a split needs at least 1 image")
    arr = np.asarray(pairs)[rng.permutation(len(pairs))]
    return arr[:, 0], arr[:, 1]


@dataclass(frozen=True)
class ShiftDraws:
    """A split of a shift benchmark before rendering: class ``labels``, ``places``, cut-out
    ``objects`` and ``scenes`` long[N] of each image; image k is rendered from generator
    ``(seed, salt, k)``, so any range of it renders the same (:meth:`dataset` of a chunk)."""

    spec: ShiftSpec
    labels: np.ndarray
    places: np.ndarray
    objects: np.ndarray
    scenes: np.ndarray
    size: int = 224
    seed: int = 0
    salt: str = "split"
    extent: tuple[float, float] = (0.45, 0.75)
    name: str = "shift"

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, start: int = 0, stop: int | None = None) -> ImageDataset:
        """Images ``start`` to ``stop`` (default: all) rendered: groups = class * len(places) +
        place; ``extras``: ``place``, ``aligned`` (on the class's aligned place), ``object``
        (cut-out index), ``scene`` (scene index); ``files``: ``object@scene#k``."""
        spec, m = self.spec, len(self.spec.places)
        sl = slice(start, len(self) if stop is None else stop)
        labels, places, objects, scenes = self.labels[sl], self.places[sl], self.objects[sl], self.scenes[sl]
        images, masks = render(spec.cutouts, spec.scenes, objects, scenes, self.size, self.seed, self.salt,
                               first=start, extent=self.extent)
        aligned = places == np.asarray(spec.aligned_place)[labels]
        return ImageDataset(
            images=images, labels=torch.from_numpy(labels), masks=masks,
            groups=torch.from_numpy(labels * m + places),
            extras={"place": torch.from_numpy(places), "aligned": torch.from_numpy(aligned),
                    "object": torch.from_numpy(objects), "scene": torch.from_numpy(scenes)},
            classes=list(spec.classes), group_names=[f"{c}/{q}" for c in spec.classes for q in spec.places],
            name=self.name, files=[f"{spec.cutouts[o].name}@{spec.scenes[s].name}#{start + i}" for i, (o, s)
                                   in enumerate(zip(objects.tolist(), scenes.tolist(), strict=True))],
        )


def draw_images(spec: ShiftSpec, labels: np.ndarray, places: np.ndarray, rng: np.random.Generator, *,
                size: int = 224, seed: int = 0, salt: str = "split", extent: tuple[float, float] = (0.45, 0.75),
                name: str = "shift") -> ShiftDraws:
    """The :class:`ShiftDraws` of class ``labels[k]`` on place ``places[k]``: each class's
    cut-outs and each place's scenes used about equally (drawn with ``rng``)."""
    k, m = len(spec.classes), len(spec.places)
    labels, places = np.asarray(labels, dtype=np.int64), np.asarray(places, dtype=np.int64)
    if len(labels) < 1 or labels.shape != places.shape:
        raise XgirError(f"a split needs at least 1 image and one place per label, got {len(labels)} labels "
                        f"and {len(places)} places")
    obj_class, sc_place = np.asarray(spec.object_class), np.asarray(spec.scene_place)
    objects = cycle_members(labels, [np.flatnonzero(obj_class == c) for c in range(k)], rng)
    scenes = cycle_members(places, [np.flatnonzero(sc_place == q) for q in range(m)], rng)
    return ShiftDraws(spec, labels, places, objects, scenes, size, seed, salt, extent, name)


def shift_images(spec: ShiftSpec, labels: np.ndarray, places: np.ndarray, rng: np.random.Generator, *,
                 size: int = 224, seed: int = 0, salt: str = "split", extent: tuple[float, float] = (0.45, 0.75),
                 name: str = "shift") -> ImageDataset:
    """Composites of class ``labels[k]`` on place ``places[k]`` (:func:`draw_images`, rendered:
    :meth:`ShiftDraws.dataset`)."""
    return draw_images(spec, labels, places, rng, size=size, seed=seed, salt=salt, extent=extent,
                       name=name).dataset()


def draw_split(spec: ShiftSpec, n: int, p: float | None, *, class_share: Sequence[float] | None = None,
               size: int = 224, seed: int = 0, salt: str = "split", extent: tuple[float, float] = (0.45, 0.75),
               name: str = "shift") -> ShiftDraws:
    """The :class:`ShiftDraws` of ``n`` composites of ``spec`` (:func:`draw_groups`, then
    :func:`draw_images`), not rendered yet."""
    if n < 1:
        raise XgirError(f"a split needs at least 1 image, got n={n}")
    rng = salted_rng(seed, salt)
    labels, places = draw_groups(spec, n, p, class_share, rng)
    return draw_images(spec, labels, places, rng, size=size, seed=seed, salt=salt, extent=extent, name=name)


def shift_split(spec: ShiftSpec, n: int, p: float | None, *, class_share: Sequence[float] | None = None,
                size: int = 224, seed: int = 0, salt: str = "split", extent: tuple[float, float] = (0.45, 0.75),
                name: str = "shift") -> ImageDataset:
    """``n`` composites of ``spec`` (:func:`draw_split`, rendered)."""
    return draw_split(spec, n, p, class_share=class_share, size=size, seed=seed, salt=salt, extent=extent,
                      name=name).dataset()


def _subfolders(root: Path, option: str, what: str) -> list[Path]:
    """The non-hidden subfolders of ``root`` (sorted); one line when there is no such folder or none."""
    if not root.is_dir():
        raise XgirError(f"{option} {root}: {'not a folder' if root.exists() else 'folder not found'}; give a "
                        f"folder holding one subfolder per {what}")
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise XgirError(f"{option} {root} has no subfolders; give one subfolder per {what} ({root}/<{what}>/...)")
    return found


def _image_files(folder: Path, option: str) -> list[Path]:
    from xgir.data.real import IMAGE_SUFFIXES

    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise XgirError(f"{option}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def folder_spec(objects: str | os.PathLike, places: str | os.PathLike, align: dict[str, str], *,
                max_side: int = MAX_SIDE) -> ShiftSpec:
    """The :class:`ShiftSpec` of a user's folders: RGBA cut-outs ``objects/<class>/*.png`` (their
    alpha marks the object, :func:`read_cutout`), background photographs ``places/<place>/*``
    (whole photographs, :func:`read_scene`), and ``align`` class -> the place it appears on in
    the majority of the source images. Classes and places in sorted folder order; every class
    aligned with a place that has a folder. One line of error per problem."""
    class_dirs = _subfolders(Path(objects), "--objects", "class")
    place_dirs = _subfolders(Path(places), "--places", "place")
    classes, place_names = [d.name for d in class_dirs], [d.name for d in place_dirs]
    unknown = [c for c in align if c not in classes]
    if unknown:
        raise XgirError(f"--align names the class '{unknown[0]}', which has no folder in {objects} (classes: "
                        f"{', '.join(classes)})")
    for c, q in align.items():
        if q not in place_names:
            raise XgirError(f"--align {c}={q}: no place '{q}' in {places} (places: {', '.join(place_names)})")
    missing = [c for c in classes if c not in align]
    if missing:
        raise XgirError(f"--align gives no place to the class '{missing[0]}'; align every class of {objects} "
                        f"with a place: --align {','.join(f'{c}=PLACE' for c in classes)}")
    if len(classes) < 2:
        raise XgirError(f"--objects {objects} has 1 class ({classes[0]}); a classifier needs at least 2")
    cutouts: list[Cutout] = []
    scenes: list[Scene] = []
    object_class: list[int] = []
    scene_place: list[int] = []
    for ci, folder in enumerate(class_dirs):
        for f in _image_files(folder, "--objects"):
            cutouts.append(read_cutout(f))
            object_class.append(ci)
    for qi, folder in enumerate(place_dirs):
        for f in _image_files(folder, "--places"):
            scenes.append(read_scene(f, max_side=max_side))
            scene_place.append(qi)
    return ShiftSpec(tuple(classes), tuple(place_names), tuple(cutouts), tuple(object_class), tuple(scenes),
                     tuple(scene_place), tuple(place_names.index(align[c]) for c in classes))
