"""waterbirds-photos: a Waterbirds-style shift made of real photographs, installable offline.

Birds: the photographic cut-outs (exact alpha) of Debian's ``tuxpaint-stamps-default``
(``/usr/share/tuxpaint/stamps/animals/birds``; the ``cartoon/`` drawings are left out, and so is
``albino_peahen``, whose alpha keeps a patch of grass). By Waterbirds' definition 12 are
waterbirds (:data:`WATERBIRDS`), 22 land birds (:data:`LANDBIRDS`).

Places: crops of landscape photographs from Debian's wallpaper packages, each labelled water or
land in :data:`SCENES` (with the region crops come from, e.g. the lake below a sky), a label
that :func:`scene_probe` checks with the ImageNet network: the crops of a water scene have a
water class (lakeside, sandbar, dock, canoe...) among their top 5 (16 crops: 0.88-1.00), those
of a land scene mostly not (0.00-0.44, the spruce forest's path being taken for a lakeside at
times). Two water photographs failed the probe and are left out: plasma's BytheWater (its
blurred lake band reads as tennis balls and birds) and mate's Aqua (a water drop: bubble,
chocolate sauce). Waterbirds' places are Places365 ocean / lake and bamboo / broadleaf forest;
here, four lakes (a pier in mist, at night, rowing boats, at dusk) and ten land scenes
(forests, moss, meadows, foliage, leaves, a pasture).

As Waterbirds keeps its 200 species in every split, every split here shows the same 34 birds,
each time at another size, place and flip over another crop: the shift is the place, not the
bird. Classes: ``landbird`` (0), ``waterbird`` (1), balanced in every split; groups
(bird type, place) = 2 * y + place, place 1 = water. ``source-*`` splits: the bird's own place
with probability ``p`` (0.95, as Waterbirds' training set); ``target-*``: places balanced and
independent of the bird. As in Waterbirds, 23 % of the images of every split are waterbirds
(its training set: 3498 land birds on land, 184 on water, 56 waterbirds on land, 1057 on
water), so the smallest group, waterbirds on land, holds about 1 % of the source images.
224 px, EfficientNet-Lite0's resolution. ``backgrounds="textures"``
replaces the photographs by the procedural textures (water: the first five families, land: the
other five), for comparison with the digit benchmarks.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from xgir.data.base import ImageDataset
from xgir.data.cutouts import (
    Cutout,
    Scene,
    ShiftDraws,
    ShiftSpec,
    draw_split,
    group_draw,
    read_cutout,
    read_scene,
    salted_rng,
    shift_images,
)
from xgir.errors import XgirError

SPLITS = ("source-train", "source-val", "source-test", "target-val", "target-test")
SIZES = {"source-train": 1200, "source-val": 600, "source-test": 600, "target-val": 1000, "target-test": 1500}
WATERBIRD_SHARE = 0.23  # Waterbirds: 1113 of 4795 training images
CLASSES = ("landbird", "waterbird")
PLACES = ("land", "water")

WATERBIRDS = ("drake", "duck", "gander", "heron_greatblue", "heron_greatblue_flying", "little-penguin",
              "magellanic_penguin", "pelican", "penguin", "pink_flamingo", "seagull", "silver-gull")
LANDBIRDS = ("adelaide-rosella", "blackbird", "chicken_profile", "crow", "crowned_crane", "cuckoo", "guineafowl",
             "helmeted_guineafowl", "hen", "lark", "magpie", "nandou", "ostrich", "owl", "peacock", "pigeon",
             "quetzal", "rainbow-lorikeet", "rooster", "tucan", "turkey", "vulture")
BIRDS_ROOT = "/usr/share/tuxpaint/stamps/animals/birds"

_PLASMA, _MATE, _LOMIRI = "/usr/share/wallpapers", "/usr/share/backgrounds/mate/nature", "/usr/share/backgrounds"
FULL = (0.0, 0.0, 1.0, 1.0)
SCENES: dict[str, tuple[str, str, tuple[float, float, float, float]]] = {
    # name: (place, path (a plasma wallpaper folder: its largest image), region crops come from)
    "ColdRipple": ("water", f"{_PLASMA}/ColdRipple", FULL),  # a pier in a misty lake
    "DarkestHour": ("water", f"{_PLASMA}/DarkestHour", FULL),  # a lake at night
    "EveningGlow": ("water", f"{_PLASMA}/EveningGlow", (0.0, 0.35, 1.0, 1.0)),  # rowing boats on a lake shore
    "summer_1am": ("water", f"{_PLASMA}/summer_1am", (0.0, 0.45, 1.0, 1.0)),  # a lake at dusk, below the sky
    "Path": ("land", f"{_PLASMA}/Path", FULL),  # a path in a spruce forest
    "OneStandsOut": ("land", f"{_PLASMA}/OneStandsOut", FULL),  # moss from above
    "FallenLeaf": ("land", f"{_PLASMA}/FallenLeaf", FULL),  # autumn leaves on the ground
    "GreenMeadow": ("land", f"{_MATE}/GreenMeadow.jpg", FULL),  # grass
    "Blinds": ("land", f"{_MATE}/Blinds.jpg", FULL),  # a green leaf
    "RainDrops": ("land", f"{_MATE}/RainDrops.jpg", FULL),  # leaves with rain drops
    "Dragonfly": ("land", f"{_LOMIRI}/Dragonfly_by_Bolly.jpg", FULL),  # foliage against the sky
    "aitzgorri": ("land", f"{_LOMIRI}/aitzgorri_by_Aitzol_Berasategi.jpg", (0.0, 0.3, 1.0, 1.0)),  # meadow, forest
    "seeding": ("land", f"{_LOMIRI}/seeding_by_Clements_Engelhardt.jpg", FULL),  # dandelions in a field
    "picosdeeuropa": ("land", f"{_LOMIRI}/picosdeeuropa_by_Aitzol_Berasategi.jpg", (0.0, 0.4, 1.0, 1.0)),  # pasture
}
PACKAGES = ("tuxpaint-stamps-default", "plasma-workspace-wallpapers", "mate-backgrounds", "lomiri-wallpapers-16.04")
INSTALL = "sudo apt-get install " + " ".join(PACKAGES)


def _scene_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():  # a plasma wallpaper: the largest of its sizes
        images = sorted((p / "contents" / "images").glob("*.[jp][pn]g"), key=lambda f: f.stat().st_size)
        if images:
            return images[-1]
    return p


def _missing(paths: list[Path], what: str) -> None:
    gone = [str(p) for p in paths if not p.exists()]
    if gone:
        more = ", ..." if len(gone) > 1 else ""
        raise XgirError(f"waterbirds-photos needs {what} that are not here ({gone[0]}{more}); "
                        f"install the Debian packages: {INSTALL}")


@functools.lru_cache(maxsize=2)
def _cutouts(root: str) -> tuple[Cutout, ...]:
    paths = [Path(root) / f"{b}.png" for b in LANDBIRDS + WATERBIRDS]
    _missing(paths, "the bird cut-outs of tuxpaint-stamps-default")
    return tuple(read_cutout(p) for p in paths)


@functools.lru_cache(maxsize=1)
def _scenes() -> tuple[Scene, ...]:
    files = [_scene_file(path) for _, path, _ in SCENES.values()]
    _missing(files, "landscape photographs")
    return tuple(read_scene(f, region, name=name)
                 for f, (name, (_, _, region)) in zip(files, SCENES.items(), strict=True))


def photo_spec(birds_root: str = BIRDS_ROOT) -> ShiftSpec:
    """The :class:`~xgir.data.cutouts.ShiftSpec` of waterbirds-photos (read once per process)."""
    cutouts = _cutouts(os.fspath(birds_root))
    return ShiftSpec(
        classes=CLASSES, places=PLACES, cutouts=cutouts,
        object_class=tuple([0] * len(LANDBIRDS) + [1] * len(WATERBIRDS)),
        scenes=_scenes(), scene_place=tuple(PLACES.index(place) for place, _, _ in SCENES.values()),
        aligned_place=(0, 1))


def _texture_spec(spec: ShiftSpec, size: int) -> ShiftSpec:
    """The same birds over procedural textures: one scene per texture family (water 0-4, land 5-9)."""
    from xgir.data.textures import TEXTURE_FAMILIES, render_textures

    g = torch.Generator().manual_seed(0)
    fams = torch.arange(len(TEXTURE_FAMILIES))
    tex = render_textures(fams, 4 * size, g, brightness=0.9)
    scenes = tuple(Scene(f"texture-{TEXTURE_FAMILIES[f]}", (tex[f].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
                   for f in range(len(fams)))
    half = len(fams) // 2
    return ShiftSpec(spec.classes, spec.places, spec.cutouts, spec.object_class, scenes,
                     tuple(1 if f < half else 0 for f in range(len(fams))), spec.aligned_place)


def waterbirds_photos(split: str = "source-train", *, seed: int = 0, n: int | None = None, p: float = 0.95,
                      size: int = 224, backgrounds: str = "photos", waterbird_share: float = WATERBIRD_SHARE,
                      birds_root: str = BIRDS_ROOT) -> ImageDataset:
    """One split of waterbirds-photos (module docstring): images float[N,3,size,size] in [0, 1],
    exact bird masks, labels (0 landbird, 1 waterbird), groups 2 y + place (1 = water)."""
    return waterbirds_photos_draws(split, seed=seed, n=n, p=p, size=size, backgrounds=backgrounds,
                                   waterbird_share=waterbird_share, birds_root=birds_root).dataset()


def bird_species(*, seed: int = 0, n: int = 6000, size: int = 64, birds_root: str = BIRDS_ROOT) -> ImageDataset:
    """The birds' species task, a stand-in for what ImageNet teaches a network about birds: each
    of the 34 birds its own class, pasted over the procedural textures (one scene per family,
    drawn independently of the bird; not the benchmark's photographs). Images
    float[n,3,size,size] in [0, 1], labels = bird index (classes: the cut-outs' names), masks."""
    base = _texture_spec(photo_spec(birds_root), size)
    k, m = len(base.cutouts), len(base.scenes)
    spec = ShiftSpec(classes=tuple(c.name for c in base.cutouts), places=tuple(s.name for s in base.scenes),
                     cutouts=base.cutouts, object_class=tuple(range(k)), scenes=base.scenes,
                     scene_place=tuple(range(m)), aligned_place=(0,) * k)
    salt = "waterbirds-photos/bird-species"
    rng = salted_rng(seed, salt)
    labels, places = rng.integers(0, k, n), rng.integers(0, m, n)
    return shift_images(spec, labels, places, rng, size=size, seed=seed, salt=salt, name="bird-species")


def waterbirds_photos_draws(split: str = "source-train", *, seed: int = 0, n: int | None = None, p: float = 0.95,
                            size: int = 224, backgrounds: str = "photos", waterbird_share: float = WATERBIRD_SHARE,
                            birds_root: str = BIRDS_ROOT) -> ShiftDraws:
    """:func:`waterbirds_photos` before rendering (:class:`~xgir.data.cutouts.ShiftDraws`: render
    it in chunks with ``.dataset(start, stop)``, e.g. to write a large split to disk)."""
    if split not in SPLITS:
        raise XgirError(f"unknown split '{split}' for waterbirds-photos; choose one of: {', '.join(SPLITS)}")
    spec = _backgrounds(photo_spec(birds_root), backgrounds, size)
    n = SIZES[split] if n is None else n
    bias = p if split.startswith("source") else None
    return draw_split(spec, n, bias, class_share=(1 - waterbird_share, waterbird_share), size=size, seed=seed,
                      salt=f"waterbirds-photos/{backgrounds}/{split}",
                      name=f"waterbirds-photos/{split}" + (f"/p={p}" if bias is not None else ""))


def _backgrounds(spec: ShiftSpec, backgrounds: str, size: int) -> ShiftSpec:
    if backgrounds == "photos":
        return spec
    if backgrounds == "textures":
        return _texture_spec(spec, size)
    raise XgirError(f"backgrounds must be 'photos' or 'textures', got '{backgrounds}'")


def photo_pool(part: str, counts: dict[tuple[int, int], int], *, seed: int = 0, size: int = 224,
               backgrounds: str = "photos", birds_root: str = BIRDS_ROOT) -> ImageDataset:
    """A pool of ``part`` (its own draws) with ``counts[(bird type, place)]`` images of each group,
    from which :func:`group_subset` draws the source sets of several seeds: one feature pass."""
    spec = _backgrounds(photo_spec(birds_root), backgrounds, size)
    salt = f"waterbirds-photos/{backgrounds}/pool/{part}"
    rng = salted_rng(seed, salt)
    labels, places = group_draw(spec, counts, rng)
    return shift_images(spec, labels, places, rng, size=size, seed=seed, salt=salt,
                        name=f"waterbirds-photos/pool-{part}")


def group_subset(groups: torch.Tensor, counts: dict[int, int], seed: int) -> torch.Tensor:
    """Indices long[sum(counts)] into a pool (``groups`` long[M]): ``counts[g]`` images of group g
    drawn at random (seeded), shuffled."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for grp, k in counts.items():
        idx = torch.nonzero(groups == grp).flatten()
        if k > len(idx):
            raise XgirError(f"the pool has {len(idx)} images of group {grp}, fewer than the {k} asked for; "
                            "render a larger pool")
        parts.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    idx = torch.cat(parts)
    return idx[torch.randperm(len(idx), generator=g)]


WATER_CLASSES = (449, 460, 472, 484, 510, 525, 536, 554, 576, 625, 628, 693, 694, 718, 724, 780, 814, 833, 871,
                 913, 914, 973, 975, 977, 978)
"""ImageNet-1k classes of water scenes and things on water (boathouse, breakwater, canoe, dock, pier,
lakeside, sandbar, seashore, ...; not promontory, a headland): the vocabulary of :func:`scene_probe`."""


def scene_probe(model: torch.nn.Module, *, crops: int = 8, size: int = 224, seed: int = 0) -> dict[str, float]:
    """Check the water / land label of each scene in :data:`SCENES`: for ``crops`` random crops of
    the scene (as the builder cuts them), the share whose top-5 ImageNet classes of ``model`` (an
    ImageNet-1k classifier taking images in [0, 1], e.g. ``load_model("efficientnet-lite0").model``)
    include a water class (:data:`WATER_CLASSES`). Scene name -> share."""
    from xgir.data.cutouts import crop_scene, salted_rng

    out = {}
    water = torch.tensor(WATER_CLASSES)
    for scene in _scenes():
        rng = salted_rng(seed, f"probe/{scene.name}")
        x = torch.stack([torch.from_numpy(crop_scene(scene, size, rng).copy()).permute(2, 0, 1).float() / 255
                         for _ in range(crops)])
        with torch.no_grad():
            top5 = model(x).topk(5, dim=1).indices
        out[scene.name] = float(torch.isin(top5, water).any(dim=1).float().mean())
    return out
