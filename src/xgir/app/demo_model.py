"""A Bayesian CNN for the app on decoy-digits, as ``xgir bench decoy`` trains it, saved as a
checkpoint that :func:`xgir.models.load_model` (and ``xgir app --model``) reads.

    python -m xgir.app.demo_model results/app/bayes-decoy.pt [--n 2000] [--epochs 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from xgir.data import load_dataset
from xgir.data.transforms import Preprocess
from xgir.models import LoadedModel, save_loaded
from xgir.models.bayes import BayesLeNet
from xgir.train.bayes import fit_bayes

SPEC = "xgir.models.bayes:BayesLeNet"


def train_decoy_bayes(path: str | Path, n: int = 2000, epochs: int = 5, width: int = 16, hidden: int = 64,
                      seed: int = 0, progress: bool = False) -> Path:
    """Bayes-by-backprop BayesLeNet on ``n`` decoy-digits training images (seed ``seed``),
    saved with :func:`save_loaded`; returns the path."""
    train = load_dataset("decoy-digits", "train", seed, n=n)
    torch.manual_seed(seed)  # after the data, as xgir bench decoy does: the same initial weights
    kwargs = {"width": width, "hidden": hidden}
    model = fit_bayes(BayesLeNet(**kwargs), train, epochs, seed=seed, progress=progress).eval()
    loaded = LoadedModel(model, Preprocess(size=28, fit="squash", channels=1), list(train.classes), SPEC,
                         head="fc", kwargs=kwargs)
    return save_loaded(loaded, path, meta={"trained_on": f"decoy-digits:train n={n} seed={seed}", "epochs": epochs})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(train_decoy_bayes(a.out, a.n, a.epochs, seed=a.seed, progress=True))


if __name__ == "__main__":
    main()
