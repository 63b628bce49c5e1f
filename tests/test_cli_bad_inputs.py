"""Bad inputs to xgir explain / xgir data give one line and exit 2 (issue 14 items 9, 11, 22)."""

import pytest
import torch

from xgir.cli import main
from xgir.models import build_model, save_checkpoint

PARAMS = {"in_channels": 1, "num_classes": 10, "image_size": 28, "width": 4, "hidden": 16}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    model = build_model("lenet", **PARAMS)
    good = save_checkpoint(model, root / "lenet.pt", "lenet", PARAMS)
    wrong = save_checkpoint(model, root / "wrong.pt", "lenet", {**PARAMS, "width": 8})
    (root / "empty.pt").write_bytes(b"")
    (root / "afile").write_text("x")
    return {"good": good, "wrong": wrong, "empty": root / "empty.pt", "afile": root / "afile"}


CASES = [
    (["--n", "100000000"], "fewer than n=100000000"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--out", "{afile}"], "is a file; give a folder for the results"),
    (["--out", "{afile}/sub"], "is a file, so the folder cannot be made"),
    (["--method", "ig", "--param", "n_steps=abc"], "needs a whole number"),
    (["--method", "ig", "--param", "n_steps=-5"], "must be at least 1"),
    (["--method", "rise", "--param", "p=nan"], "finite number"),
    (["--model", "{wrong}"], "do not fit its weights"),
    (["--model", "{empty}"], "is empty (0 bytes)"),
    (["--model", "nonsense"], "unknown model 'nonsense'"),
    (["--device", "gpu"], "unknown --device 'gpu' (for a GPU use cuda)"),
    (["--images", "decoy-digit:test"], "images are named by"),
    (["--images", "photos", "--target", "label"], "have no labels"),
    (["--images", "decoy-digits:test", "--split", "test"], "--split goes with --data"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a)[:40] for a, _ in CASES])
def test_explain_bad_inputs_one_line(ckpts, tmp_path, capsys, args, message):
    base = {"--model": str(ckpts["good"]), "--out": str(tmp_path / "o")}
    extra = [a.format(**{k: str(v) for k, v in ckpts.items()}) for a in args]
    if "--images" not in extra:
        base["--data"], base["--split"], base["--n"] = "decoy-digits", "test", "2"
    if "--split" in extra:
        base.pop("--split", None)
    for i in range(0, len(extra), 2):
        base[extra[i]] = extra[i + 1]
    argv = ["explain"] + [v for kv in base.items() for v in kv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    if "afile" not in " ".join(args):
        assert not (tmp_path / "o").exists()  # no output folder left by an early error


def test_help_lists_every_method(capsys):
    from xgir.cli.explain import METHODS
    from xgir.explain.registry import available_explainers

    assert set(available_explainers()) <= set(METHODS)
    assert main(["explain", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"{name}:" in text for name in METHODS)


def test_lime_single_superpixel_is_a_warning_naming_the_parameters(capsys):
    from torch import nn

    from xgir.explain.lime import LIME

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()
    maps = LIME(n_samples=8, n_segments=1, progress=False)(model, torch.rand(2, 3, 32, 32), [0, 1])
    err = capsys.readouterr().err
    assert err.startswith("warning: LIME: SLIC found a single superpixel") and err.count("\n") == 1
    assert "raise n_segments (now 1) or compactness (now 10; higher gives regular superpixels)" in err
    assert "--param compactness=100" in err
    assert torch.allclose(maps, maps.flatten(2)[..., :1, None].expand_as(maps) * 0 + maps[..., :1, :1])


def test_bench_help_lists_every_suite_and_empty_seeds(capsys):
    from xgir.bench import suites

    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"{name}:" in text for name in suites())
    assert main(["bench", "decoy", "--seeds", ""]) == 2
    assert "--seeds is empty" in capsys.readouterr().err


def test_bench_device_is_checked(capsys, tmp_path):
    """--device goes to suites that take one (xgir-imagenet); one line otherwise."""
    assert main(["bench", "decoy", "--device", "cuda", "--out", str(tmp_path / "a")]) == 2
    assert "suite decoy runs on the CPU only" in capsys.readouterr().err
    assert main(["bench", "xgir-imagenet", "--device", "gpu", "--out", str(tmp_path / "b")]) == 2
    assert "unknown --device 'gpu' (for a GPU use cuda)" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "xgir-imagenet", "--device", "cuda", "--out", str(tmp_path / "c")]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written
