"""``xgir explain --method ganmex --param generator=PATH``: the foils are the classes ranked after
the prediction, never the prediction itself (which one-vs-one refuses)."""

import json

import numpy as np
import torch

from xgir.cli import main
from xgir.data import load_dataset
from xgir.models import build_model, save_checkpoint
from xgir.train.ganmex import GanmexConfig, train_ganmex

PARAMS = {"in_channels": 1, "num_classes": 10, "image_size": 28, "width": 4, "hidden": 16}


def test_explain_ganmex_with_a_trained_generator(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("lenet", **PARAMS).eval()
    ckpt = save_checkpoint(model, tmp_path / "lenet.pt", "lenet", PARAMS)
    images = load_dataset("decoy-digits", "train", seed=0, n=64).images
    cfg = GanmexConfig(num_classes=10, channels=1, image_size=28, width=4, n_res=0, critic_width=4,
                       steps=2, batch_size=8)
    gen_path = tmp_path / "gan.pt"
    train_ganmex(model, images, cfg, checkpoint=gen_path, progress=False)
    assert gen_path.is_file()

    out = tmp_path / "ganmex"
    code = main(["explain", "--model", str(ckpt), "--data", "decoy-digits", "--split", "test", "--n", "3",
                 "--method", "ganmex", "--param", f"generator={gen_path}", "--param", "n_steps=4",
                 "--target", "top2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    maps = np.load(out / "maps.npy")
    assert maps.shape == (3, 2, 28, 28) and np.isfinite(maps).all()
    meta = json.loads((out / "explain.json").read_text())
    foils, preds = torch.tensor(meta["targets"]), torch.tensor(meta["preds"])
    assert foils.shape == (3, 2)
    assert not bool((foils == preds[:, None]).any()), "a foil equals the prediction"
    assert bool((foils[:, 0] != foils[:, 1]).all())
