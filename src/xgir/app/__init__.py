"""``xgir app``: a local web app to browse a model's predictions and explanations, give region
feedback, and correct the model with it.

Modules: :mod:`~xgir.app.images` (the image set), :mod:`~xgir.app.state` (model, predictions,
cache), :mod:`~xgir.app.analysis` (explanations, proposals), :mod:`~xgir.app.finetune` and
:mod:`~xgir.app.jobs` (the correction in the background), :mod:`~xgir.app.api` and
:mod:`~xgir.app.pages` (routes), :mod:`~xgir.app.security` (the guard), :mod:`~xgir.app.server`
(``create_app``).
"""

from __future__ import annotations

from pathlib import Path


def default_feedback(model: str, images: str, folder: str | Path = "results/app") -> Path:
    """The feedback store named per model and image set (``results/app/feedback-MODEL-IMAGES.db``), so
    that two apps on different models or images do not share one store.

    >>> default_feedback("efficientnet-lite0", "photos").as_posix()
    'results/app/feedback-efficientnet-lite0-photos.db'
    >>> default_feedback("results/app/bayes-decoy.pt", "decoy-digits:train").name
    'feedback-bayes-decoy-decoy-digits-train.db'
    """
    import re

    def part(spec: str) -> str:
        stem = Path(spec).stem if spec.endswith((".pt", ".pth", ".safetensors")) else spec
        return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:40] or "x"

    return Path(folder) / f"feedback-{part(model)}-{part(images)}.db"


def build_state(model: str, images: str, feedback: str | Path, out: str | Path, n: int | None = None,
                eval_images: str | None = "auto", eval_n: int | None = 1000, samples: int = 10, seed: int = 0,
                weights: str | Path | None = None, class_folders: str = "names", tree: str = "auto"):
    """Load the model and images and open (or create) the feedback store: an
    :class:`~xgir.app.state.AppState`. ``eval_images="auto"`` uses the test split of an embedded
    training set (``decoy-digits:train`` -> ``decoy-digits:test``); None: no held-out set.
    ``weights`` go with a factory ``model`` (:func:`xgir.models.load_model`). A class folder's labels
    are the model's classes its folders name (``class_folders``: names or index); when they name
    none, the images have no true labels (a warning line says why). ``tree``: CWOX's confusion tree
    from the model's head, fitted on the images, or auto (:func:`xgir.app.analysis.tree_source`)."""
    from xgir.app.images import evaluation_spec, load_image_set
    from xgir.app.state import AppState
    from xgir.config import check_seed
    from xgir.errors import XgirError
    from xgir.io import check_writable_folder
    from xgir.models import load_model

    for option, value in (("--n", n), ("--eval-n", eval_n), ("--samples", samples)):
        if value is not None and value < 1:
            raise XgirError(f"{option} must be at least 1, got {value}")
    check_seed(seed)
    from xgir.app.state import TREE_SOURCES

    if tree not in TREE_SOURCES:
        raise XgirError(f"--tree must be one of {', '.join(TREE_SOURCES)}, got '{tree}'")
    check_writable_folder(out, "--out")  # corrected models are saved there at the end of a fine-tune
    loaded = load_model(model, weights=weights)
    from xgir.errors import warn

    image_set = load_image_set(images, loaded, n=n, seed=seed, class_folders=class_folders)
    ev_spec = evaluation_spec(images) if eval_images == "auto" else eval_images
    ev = load_image_set(ev_spec, loaded, n=eval_n, seed=seed, class_folders=class_folders,
                        option="--eval-n") if ev_spec else None
    for which, found in (("--images", image_set), ("--eval", ev)):
        if found is not None and found.no_labels:
            warn(f"{which}: no true labels shown ({found.no_labels})")
    return AppState(loaded, image_set, feedback, out, ev, samples, tree_source=tree)
