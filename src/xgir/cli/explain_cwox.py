"""``xgir explain --method cwox``: CWOX figures, maps and JSON of each image, and the
confusion tree (loaded, fitted on the images or built from the head's weights). One process
only: the tree needs every image before the first map (under torchrun it is a one-line error,
see :func:`xgir.cli.explain.run_explain`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xgir.cli.explain import save_npy
from xgir.errors import XgirError
from xgir.io import write_json


def run_cwox(loaded, spec, seed, ds, x_all, labels, logits, names, out,
             layer, shallow_layer, tree, level, params, batches, batch_size, dev, progress, source,
             tree_images) -> list[Path]:
    """CWOX of the images ``x_all`` float[N,C,H,W] (the prepared inputs of
    :func:`xgir.cli.explain.run_explain`); writes the files into ``out`` and returns them."""
    from xgir.data.images import load_images
    from xgir.explain.clusters import ConfusionTree
    from xgir.explain.cwox import cwox, plot_cwox, plot_tree
    from xgir.progress import iterate

    model = loaded.model
    written: list[Path] = []
    tree_path = tree or out / "tree.json"
    k_classes = logits.shape[1]
    if tree is not None and tree.exists():
        ctree = ConfusionTree.load(tree)
        if ctree.num_classes != k_classes:
            raise XgirError(f"the tree {tree} has {ctree.num_classes} classes, the model {k_classes}; "
                            "fit a new tree (give a --tree path that does not exist)")
    elif source == "head":
        head = loaded.head_module
        if not isinstance(head, torch.nn.Linear):
            raise XgirError(f"the model's head '{loaded.head}' is not a Linear layer; use --tree-source images")
        ctree = ConfusionTree.from_head(head, names, meta={"model": str(loaded.spec)})
        written.append(ctree.save(tree_path))
    else:
        fit_ds = load_images(spec, loaded.preprocess, seed=seed, limit=tree_images)
        ctree = ConfusionTree.fit(model, fit_ds, k=int(params.get("k", 5)), mass=params.get("mass", 0.95),
                                  batch_size=64)
        ctree.classes = list(names)
        written.append(ctree.save(tree_path))
    level = ctree.default_level if level is None else level
    unknown = set(params) - {"k", "mass", "delta", "relu"}
    if unknown:
        raise XgirError(f"unknown --param for cwox: {', '.join(sorted(unknown))}; "
                        "valid: k, mass, delta, relu")
    results = []
    for s in iterate(batches, desc="explain cwox", enabled=progress, unit="batch"):
        results.append(cwox(model, x_all[s:s + batch_size].to(dev), ctree, level=level,
                            deep_layer=layer or None, shallow_layer=shallow_layer or None,
                            **params))
    images = [im for r in results for im in r.images]
    h, w = x_all.shape[-2:]
    m = max(len(im.clusters) for im in images)
    s_max = max(1, max(sum(len(c) for c, cm in zip(im.clusters, im.class_maps, strict=True)
                           if cm is not None) for im in images))
    cluster_maps = np.zeros((len(images), m, h, w), np.float32)
    class_maps = np.zeros((len(images), s_max, h, w), np.float32)
    slots = []
    for i, im in enumerate(images):
        cluster_maps[i, : len(im.clusters)] = im.cluster_maps.numpy()
        classes: list[int] = []
        for c, cm in zip(im.clusters, im.class_maps, strict=True):
            if cm is not None:
                class_maps[i, len(classes): len(classes) + len(c)] = cm.numpy()
                classes += list(c)
        slots.append(classes)
        written.append(plot_cwox(im, x_all[i], out / f"cwox-{i:03d}.png", class_names=names))
    shown = sorted({c for im in images for c in im.classes})
    written.append(plot_tree(ctree, out / "tree.png", labels=shown[:60], level=level,
                             title=f"confusion tree over the top labels (cut at {level:g})"))
    summary = [r for res in results for r in res.summary()]
    for i, entry in enumerate(summary):
        entry["label"] = int(labels[i])
        entry["class_map_slots"] = slots[i]
        entry["file"] = ds.files[i] if ds.files else None
        entry["cluster_names"] = [[names[c] for c in cl] for cl in entry.get("clusters", [])]
    written += [
        save_npy(out / "cluster_maps.npy", cluster_maps),
        save_npy(out / "class_maps.npy", class_maps),
        write_json(out / "cwox.json", {
            "method": "cwox", "deep_layer": results[0].deep_layer,
            "shallow_layer": results[0].shallow_layer, "level": level, "delta": results[0].delta,
            "tree": str(tree) if tree is not None else "tree.json", "tree_source": ctree.meta.get("source", "images"),
            "classes": names if len(names) <= 100 else f"{len(names)} classes of {loaded.spec}",
            "images": summary,
        }),
    ]
    return written
