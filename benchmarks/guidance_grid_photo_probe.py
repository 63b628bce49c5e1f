"""Does a small network know the birds of waterbirds-photos? (a diagnostic, not a test)

Pretrains one of the guidance grid's networks on the birds' species (``bird_species``, 6000
images at 64 px) for ``--epochs``, prints its species accuracy on other draws, then trains it on
source-train (p = 0.95, 1200 images) by ERM, the whole network and the head alone, and prints
target-test accuracy and worst group. The figures in docs/bench.md (guidance-grid-photos):

    python benchmarks/guidance_grid_photo_probe.py --model vanilla --epochs 10   # ERM worst group 0.016
    python benchmarks/guidance_grid_photo_probe.py --model vanilla --epochs 5    # head alone 0.039
    python benchmarks/guidance_grid_photo_probe.py --model vanilla --epochs 0    # from scratch
"""

from __future__ import annotations

import argparse
import copy

import torch

from xgir.bench import guidance_grid as grid
from xgir.data.waterbirds_photos import bird_species
from xgir.models.accuracy import accuracy_from_predictions
from xgir.models.split import copy_body
from xgir.train import fit_classifier, predict_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(grid.MODELS), default="vanilla")
    parser.add_argument("--epochs", type=int, default=10, help="species pretraining epochs (0: from scratch)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = grid.Settings(datasets=("waterbirds-photos",), n_train=1200, n_test=1000)
    task = grid.make_task("waterbirds-photos", 0, s)
    torch.manual_seed(0)
    net = grid._model(args.model, task, s)
    if args.epochs > 0:  # 0: from scratch
        species, held_out = bird_species(seed=0, n=6000, size=64), bird_species(seed=99, n=500, size=64)
        torch.manual_seed(0)
        source = fit_classifier(grid._model(args.model, task, s, species.num_classes), species, args.epochs,
                                lr=1e-3, batch_size=32, seed=0, progress=False)
        hits = predict_logits(source, held_out.images).argmax(1) == held_out.labels
        print(f"{args.model}: species accuracy {float(hits.float().mean()):.3f} after {args.epochs} epochs")
        copy_body(source, net)
    for what, head_alone in (("whole network", False), ("head alone", True)):
        model = copy.deepcopy(net)
        chosen = list(model.fc.parameters()) if head_alone else None
        fit_classifier(model, task.train, s.erm_epochs, lr=1e-3, batch_size=32, seed=0, progress=False,
                       parameters=chosen)
        acc = accuracy_from_predictions(predict_logits(model, task.test.images).argmax(1), task.test.labels,
                                        task.groups)
        print(f"ERM, {what}: target accuracy {acc['accuracy']:.3f}, worst group {acc['worst_group']:.3f}")


if __name__ == "__main__":
    main()
