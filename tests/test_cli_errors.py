"""Issue 14: bad input is one line and exit 2; a diverged run is not saved; outputs are a set."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from xgir.cli import main
from xgir.correct.xgir import XGIRConfig
from xgir.errors import XgirError
from xgir.explain.gradcam import grad_cam
from xgir.io import RUN_MARKER, clean_orphans, run_folder, write_text
from xgir.models import LeNet, load_checkpoint, save_checkpoint
from xgir.train.features import fit_head

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _train_cfg(out, **over):
    cfg = {
        "seed": 0, "out": str(out), "mode": "erm",
        "data": {"name": "decoy-digits", "params": {"n": 64}, "train_split": "train", "eval_splits": ["test"]},
        "model": {"arch": "lenet", "params": {"width": 2, "hidden": 8}},
        "train": {"epochs": 1, "lr": 0.01, "batch_size": 32},
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    return cfg


def _run_cli(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.err


def _one_line(rc, err, message):
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"data.params.n": 0}, "parameter n must be at least 1, got 0"),
        ({"data.params.n": -5}, "parameter n must be at least 1, got -5"),
        ({"data.params.n": "ten"}, "parameter n must be of type"),
        ({"device": "gpu"}, "device 'gpu' is not a torch device"),
        ({"model.params.in_channels": 3}, "model.params.in_channels is 3 but decoy-digits images have 1 channels"),
        ({"train.lr": float("inf")}, "bad value for 'train.lr': Input should be a finite number"),
        ({"train.lr": float("nan")}, "bad value for 'train.lr'"),
        ({"train.lr": 1.0e20, "train.epochs": 3}, "train: training diverged (loss nan"),  # item 2: not saved
    ],
)
def test_train_bad_input_is_one_line(tmp_path, capsys, over, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_train_cfg(tmp_path / "run", **over)))
    rc, err = _run_cli(["train", "--config", str(cfg), "--quiet"], capsys)
    _one_line(rc, err, message)
    assert not (tmp_path / "run").exists()  # item 15: no (empty) output folder after an error
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (or only comments); it sets some of the keys: seed, out, mode"),
        (b"# only a comment\n\n", "is empty (or only comments)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "is not a text file (not UTF-8)"),
        (b"- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_config_files(tmp_path, capsys, content, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    _one_line(*_run_cli(["train", "--config", str(cfg)], capsys), message)


def test_config_errors_for_correct_and_directories(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# nothing yet\n")
    _one_line(*_run_cli(["correct", "--config", str(cfg)], capsys), "it needs the keys model, data; optional:")
    _one_line(*_run_cli(["train", "--config", str(tmp_path)], capsys), f"config {tmp_path} is a directory")


@pytest.mark.parametrize(
    ("xgir", "message"),
    [  # item 6 and 10: every XGIR setting is range-checked, in YAML ...
        ({"delta2_mode": "absolute", "delta2": float("inf")}, "bad value for 'xgir.delta2'"),
        ({"delta2_mode": "absolute", "delta2": float("nan")}, "bad value for 'xgir.delta2'"),
        ({"lr": float("nan")}, "bad value for 'xgir.lr'"),
        ({"head_epochs": 0}, "xgir: head_epochs must be an integer >= 1, got 0"),
        ({"noise_scale": -0.5}, "xgir: noise_scale must be a finite number in [0, inf), got -0.5"),
        ({"blur_sigma": -1}, "xgir: blur_sigma must be a finite number in (0, inf)"),
        ({"draws": 2.5}, "bad value for 'xgir.draws'"),
        ({"lr": 0}, "xgir: lr must be a finite number in (0, inf), got 0"),
        ({"batch_size": 0}, "xgir: batch_size must be an integer >= 1, got 0"),
        ({"weight_decay": -1}, "xgir: weight_decay must be"),
    ],
)
def test_xgir_settings_in_yaml(tmp_path, capsys, xgir, message):
    cfg = {"model": {"factory": "_pipeline_models:tiny_resnet"},
           "data": {"source_train": "a", "source_test": "b", "target_test": "c"}, "xgir": xgir}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    _one_line(*_run_cli(["correct", "--config", str(tmp_path / "c.yaml")], capsys), message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [  # ... and the same checks in Python
        ({"delta2_mode": "absolute", "delta2": float("inf")}, "delta2 (absolute, positive) must be a finite"),
        ({"delta2_mode": "absolute", "delta2": float("nan")}, "delta2 (absolute, positive) must be a finite"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"head_epochs": 0}, "head_epochs must be an integer >= 1"),
        ({"noise_scale": -0.5}, "noise_scale must be"),
        ({"draws": 2.5}, "draws must be an integer >= 1, got 2.5"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"delta1": 1.0}, "delta1 must be a finite number in [0, 1)"),
    ],
)
def test_xgir_settings_in_python(kwargs, message):
    with pytest.raises(XgirError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        XGIRConfig(**kwargs)


def test_correct_bad_caps_are_one_line(tmp_path, capsys):
    cfg = {"model": {"factory": "_pipeline_models:tiny_resnet"},
           "data": {"source_train": "a", "source_test": "b", "target_test": "c", "max_images": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    _one_line(*_run_cli(["correct", "--config", str(tmp_path / "c.yaml")], capsys), "data.max_images")


def test_unwritable_output_is_reported_before_the_work(tmp_path, capsys):
    """Item 15: --out under a file fails at once, not after training."""
    (tmp_path / "afile").write_text("x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_train_cfg(tmp_path / "run", **{"train.epochs": 50})))
    start = time.time()
    rc, err = _run_cli(["train", "--config", str(cfg), "--out", str(tmp_path / "afile" / "sub"), "--quiet"], capsys)
    _one_line(rc, err, "afile is a file, so the folder cannot be made")
    assert time.time() - start < 5
    _one_line(*_run_cli(["train", "--config", str(cfg), "--out", str(tmp_path / "afile")], capsys), "is a file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    _one_line(*_run_cli(["train", "--config", str(cfg), "--out", str(mine)], capsys), "xgir did not write")
    assert (mine / "notes.txt").read_text() == "keep"
    old = tmp_path / "old"  # a results.json without xgir's marker: a user's folder, refused (issue 20)
    old.mkdir()
    (old / "results.json").write_text("{}")
    with pytest.raises(XgirError, match="did not write"):
        with run_folder(old) as tmp:
            write_text(tmp / "results.json", "new")
    assert (old / "results.json").read_text() == "{}"
    (old / ".xgir-run").write_text("")  # with the marker: an earlier run, replaced whole
    with run_folder(old) as tmp:
        write_text(tmp / "results.json", "new")
    assert (old / "results.json").read_text() == "new"


def test_nonfinite_models_are_refused(tmp_path):
    """Item 2: non-finite weights are neither saved nor loaded; Grad-CAM refuses NaN outputs."""
    model = LeNet(width=2, hidden=8).eval()
    save_checkpoint(model, tmp_path / "ok.pt", "lenet", {"width": 2, "hidden": 8})
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(XgirError, match="weight 'fc.weight' holds NaN or infinite values"):
        save_checkpoint(model, tmp_path / "nan.pt", "lenet", {"width": 2, "hidden": 8})
    assert not (tmp_path / "nan.pt").exists()
    state = torch.load(tmp_path / "ok.pt", weights_only=True)
    state["state_dict"]["fc.bias"][0] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    with pytest.raises(XgirError, match="fc.bias' holds NaN or infinite"):
        load_checkpoint(tmp_path / "inf.pt")
    with pytest.raises(XgirError, match="outputs hold NaN or infinite values"):
        grad_cam(model, torch.rand(2, 1, 28, 28), [[0], [1]], "conv2")
    x = torch.randn(64, 4) * 1e30
    with pytest.raises(XgirError, match="head: training diverged"):
        fit_head(x, (x[:, 0] > 0).long(), 2, epochs=3, lr=1e30)


def test_checkpoint_messages_are_one_line_without_unsafe_advice(tmp_path):
    """Item 12: one line saying what the file is not and what xgir reads; weights_only kept."""
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"x": XGIRConfig()}, tmp_path / "pickle.pt")
    raw = (tmp_path / "pickle.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    cases = {"empty.pt": "is empty (0 bytes)", "text.pt": "is not a torch file",
             "pickle.pt": "holds Python objects", "trunc.pt": "is truncated or damaged"}
    for name, message in cases.items():
        with pytest.raises(XgirError) as err:
            load_checkpoint(tmp_path / name)
        text = str(err.value)
        assert message in text and "xgir reads .pt checkpoints written by" in text, text
        assert "\n" not in text and "weights_only" not in text, text


def test_run_folder_is_a_set_and_follows_umask(tmp_path):
    """Items 4 and 18: an interrupted rerun keeps the previous results whole; files get the
    umask's modes; leftovers of killed writers are removed."""
    out = tmp_path / "run"
    with run_folder(out) as tmp:
        write_text(tmp / "results.json", "old")
        write_text(tmp / "model.pt", "old")
    assert sorted(p.name for p in out.iterdir()) == sorted([RUN_MARKER, "results.json", "model.pt"])
    with pytest.raises(KeyboardInterrupt), run_folder(out) as tmp:
        write_text(tmp / "model.pt", "new")
        raise KeyboardInterrupt
    assert (out / "model.pt").read_text() == "old" and (out / "results.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with run_folder(out) as tmp:
        write_text(tmp / "model.pt", "new")
    assert (out / "model.pt").read_text() == "new" and not (out / "results.json").exists()
    mask = os.umask(0o027)
    os.umask(mask)
    expected = 0o666 & ~mask
    assert (out / "model.pt").stat().st_mode & 0o777 == expected
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    # a killed writer's temporary file / folder (dead pid) is removed, a live one's is kept
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".model.pt.{dead.pid}.abc.tmp").write_text("partial")
    (tmp_path / f".run.{dead.pid}.xyz.tmp").mkdir()
    (tmp_path / f".x.{os.getpid()}.abc.tmp").write_text("mine")
    removed = clean_orphans(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".model.pt.{dead.pid}.abc.tmp", f".run.{dead.pid}.xyz.tmp"])
    assert (tmp_path / f".x.{os.getpid()}.abc.tmp").exists()


def test_interrupt_exits_130_with_one_line(tmp_path):
    """Item 8a: Ctrl-C during xgir train (python -m xgir) exits 130 with one line; the previous
    results stay whole."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_train_cfg(tmp_path / "run", **{"data.params.n": 500, "train.epochs": 500})))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XGIR_PROGRESS": "plain", "XGIR_PROGRESS_INTERVAL": "0"}
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "xgir", "train", "--config", str(cfg)], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line.startswith("[xgir] building"):  # the dataset, then the first line of training
        line = proc.stderr.readline()
    assert line.startswith("[xgir] train: "), line
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"xgir train did not exit within 60 s of SIGINT; its stderr ends with: {err[-800:]!r}")
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("[xgir]")]
    assert lines == ["error: interrupted (Ctrl-C)"], err
    assert not (tmp_path / "run").exists()


def test_localisation_metrics_reject_bad_masks_and_tolerance():
    """Item 8d: box_epg checks masks as epg does; pointing_game rejects a NaN tolerance."""
    from xgir.metrics.localisation import box_epg, epg, pointing_game

    maps = torch.rand(2, 8, 8)
    for bad in (torch.full((2, 8, 8), float("nan")), torch.full((2, 8, 8), 0.5)):
        for metric in (epg, box_epg):
            with pytest.raises(XgirError, match="must be boolean"):
                metric(maps, bad)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:4, 2:4] = True
    assert box_epg(maps, mask).shape == (2,)
    for tol in (float("nan"), float("inf"), -1.0):
        with pytest.raises(XgirError, match="tolerance must be a finite number"):
            pointing_game(maps, mask, tolerance=tol)


def test_grad_cam_bad_targets_and_channels():
    """Items 8d and 13: NaN target weights, no targets, the wrong channel count: one XgirError."""
    model = LeNet(width=2, hidden=8).eval()
    x = torch.rand(2, 1, 28, 28)
    weights = torch.zeros(2, 10)
    weights[:, 0] = float("nan")
    with pytest.raises(XgirError, match="target weights contain NaN"):
        grad_cam(model, x, weights, "conv2")
    with pytest.raises(XgirError, match="no targets given"):
        grad_cam(model, x, torch.zeros(2, 0, dtype=torch.long), "conv2")
    with pytest.raises(XgirError, match=r"cannot take images of shape \(2, 3, 28, 28\)"):
        grad_cam(model, torch.rand(2, 3, 28, 28), [0], "conv2")
    assert grad_cam(model, x, [0], "conv2").shape == (2, 1, 28, 28)


def test_one_seed_reports_show_the_value_alone():
    """Item 21: no '± 0.000' cells for one seed (or one image)."""
    from xgir.bench import fmt, spread_note
    from xgir.metrics.report import _fmt

    assert fmt([0.71234]) == "0.712"
    assert fmt([0.7, 0.8]) == "0.750 ± 0.071"  # one estimator in every suite: the sample std (ddof 1)
    assert _fmt({"epg": 0.5, "epg_std": 0.0, "epg_n": 1}, "epg") == "0.500"
    assert _fmt({"epg": 0.5, "epg_std": 0.1, "epg_n": 4}, "epg") == "0.500 ± 0.100"
    assert "±" not in spread_note(1) and "±" in spread_note(3)


def test_corrupt_extractor_cache_entry_is_recomputed(capsys, tmp_path, monkeypatch):
    """Item 17: a corrupt cached extractor is detected, reported as a cache entry and retrained."""
    from xgir.io import cache_dir

    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))  # its own cache: one extractor in it
    from xgir.train.config import ModelConfig, PretrainConfig
    from xgir.train.two_stage import pretrain_extractor

    pre = PretrainConfig.model_validate({"epochs": 1, "data": {"params": {"n": 200}}})
    model = ModelConfig.model_validate({"arch": "small-resnet", "params": {"width": 2}})
    first = pretrain_extractor(pre, model, seed=0, progress=False)
    (entry,) = (cache_dir() / "extractors").glob("small-resnet-*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    again = pretrain_extractor(pre, model, seed=0, progress=False)
    err = capsys.readouterr().err
    assert f"warning: corrupt cache entry {entry}" in err and "retraining the extractor" in err
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded: the same network again
    assert load_checkpoint(entry)[0] is not None


@pytest.mark.parametrize("name", ["gradcam", "saliency", "ig", "deeplift", "rise", "occlusion", "lime"])
def test_explainers_refuse_a_diverged_model(name):
    """Item 2: a model whose outputs are NaN is not explained into all-NaN maps."""
    from xgir.explain.registry import get_explainer

    model = LeNet(width=2, hidden=8).eval()
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    explainer = get_explainer(name, **({"layer": "conv2"} if name == "gradcam" else {}))
    with pytest.raises(XgirError, match="outputs hold NaN or infinite values"):
        explainer(model, torch.rand(2, 1, 28, 28), [0])
