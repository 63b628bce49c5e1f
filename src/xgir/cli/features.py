"""``xgir features``: pooled features of a model on a folder of images, in one file.

``xgir features --model SPEC --images SPEC --out F.pt`` writes ``F.pt`` (``torch.load``,
``weights_only=True``): ``h`` [N,D] (float16 by default: ``--store``), ``labels`` long[N]
(-1 for unlabelled files), ``files`` (N paths), ``classes``, and what made them (``model``,
``layer``, ``images``, ``store``). ``h`` is the input of the model's linear head, or with
``--layer NAME`` that layer's output averaged over its spatial positions.

The extraction is a pass of :mod:`xgir.sharded`: chunks of ``--chunk-images`` images are
written atomically under ``F.passes/`` beside ``F.pt`` (removed once ``F.pt`` is written),
so a killed run started again with the same arguments resumes; under ``torchrun
--nproc_per_node=N -m xgir features ...`` the N processes share the chunks and rank 0 writes
``F.pt``. A class folder or a Waterbirds folder is read lazily (each rank reads its own
images); other image specs are read whole by every rank. Where the images have groups
(Waterbirds), ``groups`` long[N] and ``group_names`` are saved too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import typer

from xgir.errors import XgirError

STORES = {"float16": torch.float16, "float32": torch.float32}


def _dataset(spec: str | list[str], preprocess: Any, n: int | None) -> tuple[Any, torch.Tensor]:
    """A dataset of ``{"image", "label"}`` items and the indices to extract (the first ``n``)."""
    from xgir.data.images import load_images, open_images

    lazy = open_images(spec, preprocess, masks=False)  # lazily: every rank reads only its own images
    if lazy is not None:
        if n is not None and n > len(lazy):
            raise XgirError(f"{spec if isinstance(spec, str) else spec[0]} has {len(lazy)} images, fewer than "
                            f"--n {n}; ask for at most {len(lazy)}")
        return lazy, torch.arange(len(lazy) if n is None else n)
    ds = load_images(spec, preprocess, n=n)
    return ds, torch.arange(len(ds))


def run_features(model_spec: str, images: str | list[str], out: Path, *, layer: str = "", n: int | None = None,
                 store: str = "float16", batch_size: int = 64, chunk_images: int = 1024, device: str = "cpu",
                 workers: int = 0, progress: bool = True, weights: str | Path | None = None) -> Path | None:
    """Extract the features (see the module docstring); ``out`` on rank 0, None on the others."""
    from xgir.io import fingerprint, torch_save
    from xgir.models import load_model, split
    from xgir.models.inference import resolve_device
    from xgir.resources import cap_workers
    from xgir.sharded import init_dist, load_pass
    from xgir.train.features import PooledLayer, features_pass, images_fingerprint

    if store not in STORES:
        raise XgirError(f"--store must be float16 or float32, got '{store}'")
    for name, value in (("--batch-size", batch_size), ("--chunk-images", chunk_images), ("--n", n)):
        if value is not None and value < 1:
            raise XgirError(f"{name} must be at least 1, got {value}")
    workers = cap_workers(workers)
    out = Path(out)
    if out.suffix != ".pt":
        raise XgirError(f"--out {out}: give a .pt file name (the features are one torch file)")
    if out.is_dir():
        raise XgirError(f"--out {out} is a folder; give a .pt file name")
    dev = resolve_device(device)
    dist = init_dist(dev)
    with dist.session():  # guarded on every rank; the process group closed at the end
        loaded = load_model(model_spec, weights=weights, device=dist.device)
        model = loaded.model
        features = PooledLayer(model, layer) if layer else split(model, loaded.head)[0]
        where = layer or f"input of {loaded.head}"
        ds, idx = _dataset(images, loaded.preprocess, n)
        files = [str(f) for f in ds.files][: len(idx)]
        key = {"model": fingerprint(model), "layer": where, "images": images_fingerprint(ds, idx),
               "preprocess": repr(loaded.preprocess), "chunk_images": chunk_images, "device": dist.device.type}
        run_dir = out.with_suffix(".passes")
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        plan = features_pass(dist, features, ds, run_dir, key, indices=idx, batch_size=batch_size,
                             chunk_images=chunk_images, dtype=STORES[store], workers=workers,
                             progress=progress)
        dist.release()  # rank 0 writes the file alone
        if not dist.is_main:
            return None
        res = load_pass(plan)
        saved = {"h": res["h"].clone(), "labels": res["label"].long(), "files": files,
                 "classes": list(ds.classes), "model": str(model_spec), "layer": where,
                 "images": images if isinstance(images, str) else list(images), "store": store}
        if ds.groups is not None:  # e.g. Waterbirds: 2 y + place
            saved |= {"groups": ds.groups[idx].clone(), "group_names": list(ds.group_names)}
        torch_save(saved, out)
        shutil.rmtree(run_dir, ignore_errors=True)
        return out


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features_cmd(
        more_images: list[str] = typer.Argument(None, help="more image files or globs", show_default=False),
        model: str = typer.Option(..., help="model: a built-in name (efficientnet-lite0), an xgir checkpoint "
                                  "(.pt) or a factory package.module:function"),
        weights: Path = typer.Option(None, help="weights for a factory --model: a state_dict (.pt, .safetensors) "
                                     "or a checkpoint of a model built by that factory"),
        images: list[str] = typer.Option([], help="images: a class folder root/<class>/<image>, a Waterbirds "
                                         "ROOT:SPLIT, DATASET[:SPLIT], photos, files or globs (repeatable)"),
        out: Path = typer.Option(..., help="output file F.pt (chunks of a running extraction: F.passes/)"),
        layer: str = typer.Option("", help="a layer whose output, averaged over space, is h (default: the "
                                  "input of the model's linear head)"),
        n: int = typer.Option(None, "--n", "--n-images", help="the first N images (default: all); under torchrun "
                              "write --n-images (torchrun takes --n as its own option)"),
        store: str = typer.Option("float16", help="dtype of h in the file: float16 or float32"),
        batch_size: int = typer.Option(64, help="images per forward pass"),
        chunk_images: int = typer.Option(1024, help="images per resumable chunk (shared out under torchrun)"),
        workers: int = typer.Option(0, help="DataLoader worker processes reading images"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps (under torchrun: cuda = one GPU per "
                                   "process)"),
        quiet: bool = typer.Option(False, help="no progress bar"),
    ) -> None:
        """Pooled features h, labels and file names of a model on images, in one .pt file;
        resumable, and sharded over processes under ``torchrun --nproc_per_node=N -m xgir features``."""
        from xgir.cli.ranks import rank0_prints_errors

        spec = list(images) + list(more_images or [])
        if not spec:
            raise XgirError("no images: give --images SPEC (a class folder, files or globs, DATASET:SPLIT)")
        with rank0_prints_errors():
            written = run_features(model, spec if len(spec) > 1 else spec[0], out, layer=layer, n=n, store=store,
                                   batch_size=batch_size, chunk_images=chunk_images, device=device,
                                   workers=workers, progress=not quiet, weights=weights)
        if written is not None:
            h = torch.load(written, weights_only=True)["h"]
            typer.echo(f"wrote {written}: h {h.dtype} {tuple(h.shape)}")
