"""The hostile round of issue 20, rerun: bad CLI inputs, interruptions, hostile HTTP requests to
the app and bad Python API calls, each checked for a one-line refusal (no traceback, no 500, no
silent wrong result, nothing lost). Writes OUT/report.md and OUT/results.json; exit status 1 if
any case failed.

    OMP_NUM_THREADS=1 python benchmarks/hostile_round.py --out /tmp/hostile [--quick]

Everything runs sequentially on tiny fixtures built in OUT/work (nothing is downloaded)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HUGE = "99999999999999999999"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TIMEOUT = 180  # seconds per CLI case
HOLD = 20.0  # seconds an HTTP request may hold


@dataclass
class Case:
    part: str
    name: str
    args: list[str] = field(default_factory=list)
    expect: str = "error"  # error | ok | either
    out: Path | None = None  # the output the command would write
    check: Callable[[], str] | None = None  # "" if fine, else the problem
    setup: Callable[[], None] | None = None
    skip: str = ""
    env: dict[str, str] | None = None


RESULTS: list[dict[str, Any]] = []


def record(part: str, name: str, ok: bool, problem: str = "", **info: Any) -> None:
    RESULTS.append({"part": part, "case": name, "passed": ok, "problem": problem, **info})
    mark = "ok  " if ok else "FAIL"
    print(f"[{part}] {mark} {name[:110]}" + (f"  <- {problem}" if problem else ""), flush=True)


# ---- fixtures ----------------------------------------------------------------------------------
def png_header(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h pixels (its data is a few bytes): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def noise_folder(root: Path, classes: list[str], per_class: int = 2, size: int = 32, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{c}{i}.png")
    return root


def square_folder(root: Path, n: int, seed: int, target: bool = False) -> Path:
    """cat/dog/owl: a bright square at a class-specific place on noise (as tests/_pipeline_models)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 80, size=(32, 32, 3)).astype(np.uint8)
            if target:
                img[..., 2] += 100
            img[4 + 9 * c : 12 + 9 * c, 10:22] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


FACTORY = """
import torch
from xgir.models import SmallResNet


def tiny_resnet(num_classes=3, width=4, seed=0):
    torch.manual_seed(seed)
    return SmallResNet(num_classes=num_classes, width=width)
"""


class Evil:
    """Unpickling it would run a command (refused by weights_only=True)."""

    def __init__(self, witness: Path) -> None:
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


def build_fixtures(w: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from xgir.models import LeNet, save_checkpoint

    w.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    fx: dict[str, Any] = {"w": w}
    fx["lenet"] = save_checkpoint(LeNet(width=2, hidden=8), w / "lenet.pt", "lenet", {"width": 2, "hidden": 8})
    params = {"in_channels": 3, "num_classes": 4, "image_size": 32, "width": 2, "hidden": 8}
    fx["named"] = save_checkpoint(
        LeNet(**params), w / "named.pt", "lenet", params, meta={"classes": ["tench", "goldfish", "tabby", "espresso"]}
    )
    (w / "hostile_models.py").write_text(FACTORY)
    fx["cls"] = noise_folder(w / "cls", ["espresso", "tabby"])
    fx["other"] = noise_folder(w / "other", ["cat", "dog"])
    (w / "empty").mkdir(exist_ok=True)
    (w / "emptycls" / "a").mkdir(parents=True, exist_ok=True)
    (w / "emptycls" / "b").mkdir(parents=True, exist_ok=True)
    loop = noise_folder(w / "loop", ["a", "b"])
    (loop / "a" / "loop.png").symlink_to("loop.png")
    unread = noise_folder(w / "unread", ["a", "b"])
    os.chmod(unread / "b", 0)
    png_header(w / "bomb.png", 20000, 20000)
    png_header(w / "big.png", 12000, 12000)
    good = w / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    (w / "truncated.png").write_bytes(good.read_bytes()[:40])
    (w / "zero.png").write_bytes(b"")
    (w / "text.png").write_text("not an image")
    (w / "text.pt").write_text("not a checkpoint")
    (w / "empty.pt").write_bytes(b"")
    (w / "dir.pt").mkdir(exist_ok=True)
    (w / "afile").write_text("x")
    ro = w / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    # hostile checkpoints: only strings, dicts and tensors, naming code to run
    witness = w / "WITNESS"
    canary = w / "canary"
    canary.mkdir(exist_ok=True)
    (canary / "keep.txt").write_text("keep")
    fx["witness"], fx["canary"] = witness, canary
    command = f"touch {witness}"
    hostile = {
        "system": {"spec": "os:system", "kwargs": {"command": command}, "state_dict": {}},
        "posix": {"spec": "posix:system", "kwargs": {"command": command}, "state_dict": {}},
        "eval": {
            "spec": "builtins:eval",
            "kwargs": {"source": f"__import__('os').system('{command}')"},
            "state_dict": {},
        },
        "exec": {"spec": "builtins:exec", "kwargs": {"source": f"open('{witness}', 'w')"}, "state_dict": {}},
        "subprocess": {"spec": "subprocess:run", "kwargs": {"args": ["touch", str(witness)]}, "state_dict": {}},
        "rmtree": {"spec": "shutil:rmtree", "kwargs": {"path": str(canary)}, "state_dict": {}},
        "self": {"spec": str(w / "ck-self.pt"), "kwargs": {}, "state_dict": {}},
        "arch": {"arch": "os:system", "params": {"command": command}, "state_dict": {}},
        "arch-list": {"arch": ["lenet"], "params": {}, "state_dict": {}},
        "params-str": {"arch": "lenet", "params": "width=3", "state_dict": {}},
        "kwargs-obj": {"spec": "efficientnet-lite0", "kwargs": {"a": torch.zeros(1)}, "state_dict": {}},
        "factory": {"spec": "hostile_models:tiny_resnet", "kwargs": {}, "state_dict": {}},
        "weights-bad": {"arch": "lenet", "params": {"width": 2, "hidden": 8}, "state_dict": {"x": torch.zeros(1)}},
        "list": ["lenet"],
    }
    fx["hostile"] = {}
    for name, state in hostile.items():
        torch.save(state, w / f"ck-{name}.pt")
        fx["hostile"][name] = w / f"ck-{name}.pt"
    torch.save({"obj": Evil(witness)}, w / "ck-pickle.pt")
    fx["hostile"]["pickle"] = w / "ck-pickle.pt"
    # correct: three tiny class folders and a config; train: a tiny decoy-digits config
    fx["src"] = square_folder(w / "src", 2, 0)
    fx["srctest"] = square_folder(w / "srctest", 2, 1)
    fx["tgt"] = square_folder(w / "tgt", 2, 2, target=True)
    torch.manual_seed(1)
    from xgir.models import SmallResNet

    torch.manual_seed(1)
    torch.save(SmallResNet(num_classes=3, width=4).state_dict(), w / "tiny.pt")
    fx["correct_cfg"] = {
        "model": {
            "factory": "hostile_models:tiny_resnet",
            "kwargs": {"num_classes": 3, "width": 4},
            "weights": str(w / "tiny.pt"),
            "head": "fc",
            "deep_layer": "layer3",
            "shallow_layer": "layer2",
        },
        "data": {
            "source_train": str(fx["src"]),
            "source_test": str(fx["srctest"]),
            "target_test": str(fx["tgt"]),
            "image_size": 32,
            "batch_size": 6,
        },
        "explainer": "iox",
        "xgir": {"draws": 2, "head_epochs": 1, "delta2": 0.5},
        "passes": {"store": "float32"},
        "out": str(w / "c-default"),
        "device": "cpu",
    }
    fx["train_cfg"] = {
        "seed": 0,
        "out": str(w / "t-default"),
        "mode": "erm",
        "data": {"name": "decoy-digits", "params": {"n": 64}, "train_split": "train", "eval_splits": ["test"]},
        "model": {"arch": "lenet", "params": {"width": 2, "hidden": 8}},
        "train": {"epochs": 1, "lr": 0.01, "batch_size": 32},
    }
    fx["yaml"] = yaml
    return fx


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "report.md").write_text("# my own report")
    (path / "results.json").write_text("{}")
    return path


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    if not path.exists():
        return "absent"
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# ---- part 1: CLI --------------------------------------------------------------------------------
def env_of(fx: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(fx["w"])])
    env["XGIR_CACHE"] = str(fx["w"] / "cache")
    env["COLUMNS"] = "120"
    env.update(extra or {})
    return env


def xgir_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "xgir", *args]


COMPLETE = ("explain.json", "maps.npy", "metrics.json", "results.json", "model.pt", "xgir_model.pt")


def non_finite(out: Path) -> str:
    """A NaN or infinity in the outputs under ``out`` (a file or folder), else ""."""
    import numpy as np
    import torch

    files = [out] if out.is_file() else sorted(out.rglob("*")) if out.is_dir() else []
    for p in files:
        try:
            if p.suffix == ".npy":
                a = np.load(p, allow_pickle=False)
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    return f"non-finite values in {p.name}"
            elif p.suffix == ".json" and ("NaN" in p.read_text() or "Infinity" in p.read_text()):
                return f"NaN in {p.name}"
            elif p.suffix == ".pt" and p.stat().st_size < 50_000_000:
                obj = torch.load(p, weights_only=True, map_location="cpu")
                tensors = obj.values() if isinstance(obj, dict) else []
                for t in tensors:
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                        return f"non-finite tensor in {p.name}"
        except Exception:  # noqa: BLE001 (a file we cannot read is not the question here)
            continue
    return ""


def run_cli(fx: dict[str, Any], case: Case) -> None:
    if case.skip:
        record(case.part, case.name, True, f"skipped ({case.skip})", skipped=True, command=" ".join(case.args))
        return
    if case.setup:
        case.setup()
    existed = case.out is not None and case.out.exists()
    t0 = time.time()
    try:
        p = subprocess.run(
            xgir_cmd(case.args), cwd=fx["w"], env=env_of(fx, case.env), capture_output=True, text=True, timeout=TIMEOUT
        )
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, str(e.stdout or ""), str(e.stderr or "")
    seconds = round(time.time() - t0, 1)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    trace = "Traceback" in err or "Traceback" in out
    partial = False
    if case.out is not None and not existed and case.out.exists():
        names = {p.name for p in case.out.rglob("*")} if case.out.is_dir() else {case.out.name}
        partial = bool(names & set(COMPLETE)) or case.out.is_file()
    problem = ""
    if rc is None:
        problem = f"no answer within {TIMEOUT} s"
    elif trace:
        problem = "traceback"
    elif rc < 0:
        problem = f"killed by signal {-rc}"
    elif rc != 0:
        if case.expect == "ok":
            problem = "refused a valid input"
        elif len(lines) > 3:
            problem = f"error of {len(lines)} lines"
        elif partial:
            problem = "failed but left a complete-looking output"
    else:
        if case.expect == "error":
            problem = "exit 0 for a bad input"
        elif case.out is not None:
            problem = non_finite(case.out)
    if not problem and fx["witness"].exists():
        problem = "the checkpoint's command ran (witness file created)"
        fx["witness"].unlink()
    if not problem and not (fx["canary"] / "keep.txt").exists():
        problem = "the canary folder was deleted"
    if not problem and case.check is not None and rc is not None:
        problem = case.check()
    record(
        case.part,
        case.name,
        not problem,
        problem,
        command="xgir " + " ".join(case.args),
        rc=rc,
        traceback=trace,
        stderr_lines=len(err.splitlines()),
        partial_output=partial,
        seconds=seconds,
        output=(err.strip() or out.strip())[-1500:],
    )


def cli_cases(fx: dict[str, Any], quick: bool) -> list[Case]:
    w, yaml = fx["w"], fx["yaml"]
    lenet, named = str(fx["lenet"]), str(fx["named"])
    cases: list[Case] = []
    counter = iter(range(100000))

    def out() -> Path:
        return w / "out" / f"o{next(counter)}"

    def add(name: str, args: list[str], expect: str = "error", **kw: Any) -> None:
        cases.append(Case("cli", name, args, expect, **kw))

    def explain(
        *extra: str,
        model: str = lenet,
        images: str = "decoy-digits:test",
        method: str = "saliency",
        n: str | None = "2",
    ) -> tuple[list[str], Path]:
        o = out()
        args = ["explain", "--model", model, "--images", images, "--method", method, "--out", str(o), "--quiet"]
        return args + (["--n", n] if n is not None else []) + list(extra), o

    def evaluate(*extra: str, model: str = lenet) -> tuple[list[str], Path]:
        o = out()
        return [
            "evaluate",
            "--model",
            model,
            "--images",
            "decoy-digits:test",
            "--explainer",
            "saliency",
            "--n",
            "2",
            "--out",
            str(o),
            "--quiet",
            *extra,
        ], o

    def features(*extra: str, model: str = lenet) -> tuple[list[str], Path]:
        o = out().with_suffix(".pt")
        return [
            "features",
            "--model",
            model,
            "--images",
            "decoy-digits:test",
            "--n",
            "2",
            "--out",
            str(o),
            "--quiet",
            *extra,
        ], o

    def config(kind: str, over: dict[str, Any] | None = None, drop: str = "", text: str | None = None) -> str:
        path = w / "configs" / f"{kind}{next(counter)}.yaml"
        path.parent.mkdir(exist_ok=True)
        if text is not None:
            path.write_text(text)
            return str(path)
        cfg = json.loads(json.dumps(fx[f"{kind}_cfg"]))
        cfg["out"] = str(out())
        for key, value in (over or {}).items():
            node = cfg
            *parents, last = key.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[last] = value
        if drop:
            *parents, last = drop.split(".")
            node = cfg
            for k in parents:
                node = node[k]
            node.pop(last, None)
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    witness_check = None  # run_cli checks the witness and the canary for every case

    # -- item 1: checkpoints naming code to run
    for name, path in fx["hostile"].items():
        expect = "either" if name == "weights-bad" else "error"
        args, o = explain(model=str(path))
        add(f"item1 explain --model ck-{name}.pt", args, expect, out=o)
    for cmd in ("evaluate", "features"):
        for name in ("system", "eval", "rmtree", "self"):
            args, o = (evaluate if cmd == "evaluate" else features)(model=str(fx["hostile"][name]))
            add(f"item1 {cmd} --model ck-{name}.pt", args, out=o)
    for name in ("system", "subprocess"):
        add(
            f"item1 app --model ck-{name}.pt",
            [
                "app",
                "--model",
                str(fx["hostile"][name]),
                "--images",
                "decoy-digits:train",
                "--port",
                "0",
                "--feedback",
                str(w / "fb-h.db"),
            ],
        )
        add(
            f"item1 correct model.spec ck-{name}.pt",
            ["correct", "--config", config("correct", {"model": {"spec": str(fx["hostile"][name])}}), "--quiet"],
        )
    # -- item 2: --out is a user's folder
    for cmd in ("explain", "evaluate", "train", "correct", "export"):
        thesis = w / "thesis" / cmd

        def setup(thesis: Path = thesis) -> None:
            shutil.rmtree(thesis, ignore_errors=True)
            user_folder(thesis)
            fx.setdefault("hashes", {})[thesis] = tree_hash(thesis)

        def untouched(thesis: Path = thesis) -> str:
            return "" if tree_hash(thesis) == fx["hashes"][thesis] else f"the user's folder {thesis} changed"

        if cmd == "explain":
            args = explain()[0]
            args[args.index("--out") + 1] = str(thesis)
        elif cmd == "evaluate":
            args = evaluate()[0]
            args[args.index("--out") + 1] = str(thesis)
        elif cmd == "train":
            args = ["train", "--config", config("train", {"out": str(thesis)}), "--quiet"]
        elif cmd == "correct":
            args = ["correct", "--config", config("correct", {"out": str(thesis)}), "--quiet"]
        else:
            args = ["data", "export", "decoy-digits", "--n", "2", "--out", str(thesis), "--quiet"]
        add(f"item2 {cmd} --out a user's folder (thesis.tex, report.md)", args, setup=setup, check=untouched)
        add(
            f"item2 {cmd} --out override to a user's folder"
            if cmd in ("train", "correct")
            else f"item2 {cmd} --out user's folder/ (trailing slash)",
            (args[:3] + ["--out", str(thesis), "--quiet"])
            if cmd in ("train", "correct")
            else [a if a != str(thesis) else str(thesis) + "/" for a in args],
            setup=setup,
            check=untouched,
        )
    # -- item 5: silent wrong results
    for param in ("stride=-1", "stride=0", "window=0", "window=-3", "window=2.5", "window=100000", "stride=nan"):
        args, o = explain("--param", param, method="occlusion")
        add(f"item5 explain occlusion --param {param}", args, "either" if param == "window=100000" else "error", out=o)
    args, o = explain("--target", "label", model=named, images=str(fx["cls"]), n=None)

    def labels_by_name(o: Path = o) -> str:
        meta = json.loads((o / "explain.json").read_text())
        return "" if meta.get("labels") == [3, 3, 2, 2] else f"labels {meta.get('labels')} (want [3, 3, 2, 2])"

    add("item5 class folders espresso/tabby labelled by the model's names", args, "ok", out=o, check=labels_by_name)
    args, o = explain("--target", "label", model=named, images=str(fx["other"]), n=None)
    add("item5 --target label with folders naming none of the classes", args, out=o)
    args, o = explain("--class-folders", "index", "--target", "label", model=named, images=str(fx["cls"]), n=None)
    add("item5 --class-folders index on named folders", args, out=o)
    # -- item 7: a damaged chunk in F.passes is recomputed
    fpt = w / "out" / "damaged.pt"
    stop = {"XGIR_TEST_STOP_AFTER_CHUNKS": "1:exit"}  # killed after one chunk (test hook)
    fargs = [
        "features",
        "--model",
        lenet,
        "--images",
        "decoy-digits:test",
        "--n",
        "4",
        "--chunk-images",
        "2",
        "--out",
        str(fpt),
        "--quiet",
    ]
    add("item7 features stopped after one chunk (test hook)", fargs, "either", env=stop)

    def damage() -> None:
        for chunk in sorted((w / "out" / "damaged.passes").rglob("chunk-*.pt"))[:1]:
            chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])

    add("item7 features rerun over a damaged chunk", fargs, "ok", out=fpt, setup=damage)
    # -- item 8: former tracebacks
    add("item8 explain --seed HUGE", explain("--seed", HUGE)[0])
    add("item8 evaluate --seed HUGE", evaluate("--seed", HUGE)[0])
    add("item8 bench decoy --seeds HUGE", ["bench", "decoy", "--seeds", HUGE, "--out", str(out())])
    for p in (
        "n_steps=[1,",
        "n_steps=1e11",
        "n_steps=100000000000",
        f"seed={HUGE}",
        "n_steps={a: 1}",
        "n_steps=",
        "=5",
        "n_steps",
        "n_steps==3",
        "baseline=nosuch",
        "bogus=1",
    ):
        add(f"item8 explain ig --param '{p}'", explain("--param", p, method="ig")[0])
    add("item8 rise --param seed=HUGE", explain("--param", f"seed={HUGE}", method="rise")[0])
    add("item8 checkpoint whose params is a str", explain(model=str(fx["hostile"]["params-str"]))[0])
    add("item8 symlink loop in a class folder", explain(images=str(w / "loop"), n=None)[0])
    add("item8 a 20000 x 20000 PNG", explain(images=str(w / "bomb.png"), n=None)[0])
    add("item8 a 12000 x 12000 PNG (truncated data)", explain(images=str(w / "big.png"), n=None)[0])
    for key, value in (
        ("width", 0),
        ("width", -1),
        ("width", 1.5),
        ("width", "abc"),
        ("image_size", 0),
        ("image_size", 7),
        ("image_size", 100000),
        ("hidden", 0),
        ("width", 100000),
    ):
        add(
            f"item8 train model.params.{key}={value}",
            ["train", "--config", config("train", {f"model.params.{key}": value}), "--quiet"],
        )
    add("item8 train --out .", ["train", "--config", config("train"), "--out", ".", "--quiet"])
    add("item8 train out: /", ["train", "--config", config("train", {"out": "/"}), "--quiet"])
    add(
        "item8 correct data.image_size=100000",
        ["correct", "--config", config("correct", {"data.image_size": 100000}), "--quiet"],
    )
    add("item8 correct xgir.draws=1e9", ["correct", "--config", config("correct", {"xgir.draws": 10**9}), "--quiet"])
    add("item8 unreadable class folder", explain(images=str(w / "unread"), n=None)[0], skip="root" if IS_ROOT else "")
    add(
        "item8 read-only --out",
        explain()[0][:-4] + ["--out", str(w / "readonly" / "o"), "--quiet", "--n", "2"],
        skip="root" if IS_ROOT else "",
    )
    # -- item 9: resources
    args, o = features("--workers", "100000")
    add("item9 features --workers 100000 (capped, warned)", args, "ok", out=o)
    add("item9 train data.params.n=1e12", ["train", "--config", config("train", {"data.params.n": 10**12}), "--quiet"])
    add(
        "item9 train data.params.n=1e12 as float",
        ["train", "--config", config("train", {"data.params.n": 1e12}), "--quiet"],
    )
    # -- item 10: smaller items
    app = ["app", "--model", lenet, "--images", "decoy-digits:train", "--port", "0", "--feedback", str(w / "fb-x.db")]
    add("item10 app --eval-n 0", app + ["--eval-n", "0"])
    add("item10 app --out FILE", app + ["--out", str(w / "afile")])
    add("item10 train dup keys", ["train", "--config", config("train", text="out: a\nmodel: {arch: lenet}\nout: b\n")])
    add("item10 train eval_splits []", ["train", "--config", config("train", {"data.eval_splits": []}), "--quiet"])
    add("item10 evaluate --n 1000000", evaluate()[0][:-2] + ["--n", "1000000", "--quiet"])

    # -- fuzzing: explain options
    bad_numbers = ["-1", "0", HUGE, "nan", "abc", "1e400", "1.5", "-inf", ""]
    for opt in ("--n", "--seed", "--batch-size", "--chunk-images", "--tree-images"):
        for v in bad_numbers if not quick else ["-1", "abc"]:
            # valid: seed 0; a batch or chunk larger than the images (it takes them all); options
            # of other methods (the tree of cwox, the chunks of torchrun) at 0 or huge
            expect = (
                "either"
                if (opt, v) == ("--seed", "0")
                or (opt == "--batch-size" and v == HUGE)
                or (opt in ("--chunk-images", "--tree-images") and v in ("0", HUGE))
                else "error"
            )
            args, o = explain(n=None if opt == "--n" else "2", method="cwox" if opt == "--tree-images" else "saliency")
            add(f"explain {opt} {v!r}", args + [opt, v], expect, out=o)
    for opt in ("--clip-percentile", "--level"):
        for v in ["-1", "nan", "inf", "101", "abc", "1e400"]:
            args, o = explain(opt, v, method="cwox" if opt == "--level" else "saliency")
            add(f"explain {opt} {v}", args, out=o)
    for opt, values in (
        ("--method", ["nosuch", "", "Saliency", "saliency;rm"]),
        ("--target", ["bogus", "top0", "top-1", "top99999", "topabc", ""]),
        ("--layer", ["nosuch", "features.99"]),
        ("--device", ["meta", "cuda:99", "bogus", "cpu:abc", "cuda:-1"]),
        ("--class-folders", ["bogus"]),
        ("--draw", ["bogus"]),
        ("--sign", ["bogus"]),
        ("--tree-source", ["bogus"]),
        ("--data", ["nosuch"]),
        ("--split", ["nosuch"]),
    ):
        for v in values:
            if opt == "--method":
                args, o = explain(method=v)
            else:
                args, o = explain(opt, v, method="gradcam" if opt == "--layer" else "saliency")
            add(f"explain {opt} {v!r}", args, out=o)
    for label, images in (
        ("missing path", str(w / "nothere")),
        ("empty folder", str(w / "empty")),
        ("empty class folders", str(w / "emptycls")),
        ("text file as png", str(w / "text.png")),
        ("truncated png", str(w / "truncated.png")),
        ("zero-byte png", str(w / "zero.png")),
        ("glob matching nothing", str(w / "*.nothing")),
        ("unknown dataset", "nosuch:test"),
        ("unknown split", "decoy-digits:nosplit"),
        ("unknown photo", "photos:nosuch"),
        ("a checkpoint as image", str(fx["lenet"])),
        ("empty spec", ""),
    ):
        args, o = explain(images=images, n=None)
        add(f"explain --images {label}", args, out=o)
    for label, model in (
        ("missing file", str(w / "nothere.pt")),
        ("a directory", str(w / "dir.pt")),
        ("empty file", str(w / "empty.pt")),
        ("text file", str(w / "text.pt")),
        ("unknown module", "nosuchpkg.mod:fn"),
        ("not a model (os:getcwd)", "os:getcwd"),
        ("os:system on the command line", "os:system"),
        ("empty", ""),
        ("unknown built-in", "resnet9000"),
    ):
        args, o = explain(model=model)
        add(f"explain --model {label}", args, out=o)
    args, o = explain("--weights", str(fx["lenet"]))
    add("explain --weights with a non-factory model", args, out=o)
    args, o = explain("--weights", str(w / "nothere.pt"), model="hostile_models:tiny_resnet")
    add("explain --weights missing", args, out=o)
    for label, target in (
        ("an existing file", str(w / "afile")),
        ("under a file", str(w / "afile" / "sub")),
        ("in /proc", "/proc/xgir-out"),
        ("empty", ""),
        ("the working folder", "."),
    ):
        args, _ = explain()
        args[args.index("--out") + 1] = target
        add(f"explain --out {label}", args, check=lambda: "" if (w / "afile").read_text() == "x" else "afile changed")
    # -- evaluate
    for opt in ("--n", "--seed", "--step"):
        for v in ["-1", "0", HUGE, "abc", "1.5", "nan"] if not quick else ["-1"]:
            args, o = evaluate()
            if opt == "--n":
                args = args[: args.index("--n")] + args[args.index("--n") + 2 :]
            valid = (opt, v) in (("--seed", "0"), ("--step", HUGE))  # a step over the image: all of it at once
            add(f"evaluate {opt} {v!r}", args + [opt, v], "either" if valid else "error", out=o)
    for opt, v in (
        ("--targets", "bogus"),
        ("--explainer", "nosuch"),
        ("--explainer", ""),
        ("--device", "meta"),
        ("--layer", "nosuch"),
        ("--data", "nosuch"),
        ("--split", "nosuch"),
    ):
        args, o = evaluate()
        if opt == "--explainer":
            args[args.index("--explainer") + 1] = v
        else:
            args += [opt, v]
        add(f"evaluate {opt} {v!r}", args, out=o)
    args, o = evaluate()
    args[args.index("--images") + 1] = str(fx["cls"])
    add("evaluate --images a class folder without masks", args, out=o)
    # -- features
    for opt in ("--n", "--batch-size", "--chunk-images", "--workers"):
        for v in ["-1", "0", HUGE, "abc"] if not quick else ["-1"]:
            args, o = features()
            if opt == "--n":
                args = args[: args.index("--n")] + args[args.index("--n") + 2 :]
            # valid: 0 workers; a batch or chunk larger than the images; huge --workers (capped, warned)
            valid = (opt, v) == ("--workers", "0") or (v == HUGE and opt != "--n")
            add(f"features {opt} {v!r}", args + [opt, v], "either" if valid else "error", out=o)
    for opt, v in (("--store", "float8"), ("--store", "bogus"), ("--layer", "nosuch"), ("--device", "meta")):
        args, o = features(opt, v)
        add(f"features {opt} {v!r}", args, out=o)
    args, _ = features()
    args[args.index("--out") + 1] = str(w / "dir.pt")
    add("features --out a directory", args)
    # -- train configs
    for over, label in (
        ({"train.epochs": -1}, "epochs -1"),
        ({"train.epochs": 0}, "epochs 0"),
        ({"train.epochs": "abc"}, "epochs abc"),
        ({"train.epochs": 1.5}, "epochs 1.5"),
        ({"train.lr": float("nan")}, "lr nan"),
        ({"train.lr": -1}, "lr -1"),
        ({"train.lr": float("inf")}, "lr inf"),
        ({"train.batch_size": 0}, "batch_size 0"),
        ({"seed": -1}, "seed -1"),
        ({"seed": int(HUGE)}, "seed HUGE"),
        ({"mode": "bogus"}, "mode"),
        ({"bogus": 1}, "unknown top-level key"),
        ({"train.bogus": 1}, "unknown nested key"),
        ({"data.name": "nosuch"}, "unknown dataset"),
        ({"data.params.n": -5}, "n -5"),
        ({"data.params.bogus": 1}, "unknown dataset param"),
        ({"model.arch": "nosuch"}, "arch"),
        ({"model.arch": "os:system"}, "arch os:system"),
        ({"data.eval_splits": ["nosuch"]}, "split"),
        ({"data.train_split": "nosuch"}, "train split"),
        ({"data": [1, 2]}, "data a list"),
        ({"model.params": "width=3"}, "params a str"),
        ({"out": str(w / "afile")}, "out a file"),
    ):
        add(f"train {label}", ["train", "--config", config("train", over), "--quiet"])
    for label, text in (
        ("empty", ""),
        ("a list", "- 1\n- 2\n"),
        ("syntax error", "out: [a,\n"),
        ("tabs", "out:\tx\n\tmodel: 1\n"),
        ("binary", "\x00\x01"),
        ("a scalar", "42\n"),
    ):
        add(f"train config {label}", ["train", "--config", config("train", text=text)])
    add("train config missing", ["train", "--config", str(w / "nothere.yaml")])
    add("train config a directory", ["train", "--config", str(w / "empty")])
    # -- correct configs
    for over, label in (
        ({"data.image_size": 0}, "image_size 0"),
        ({"data.image_size": -1}, "image_size -1"),
        ({"data.batch_size": 0}, "batch_size 0"),
        ({"xgir.draws": 0}, "draws 0"),
        ({"xgir.draws": -1}, "draws -1"),
        ({"xgir.head_epochs": 0}, "head_epochs 0"),
        ({"xgir.delta2": -1}, "delta2 -1"),
        ({"xgir.delta2": float("nan")}, "delta2 nan"),
        ({"xgir.delta1": 5}, "delta1 5"),
        ({"xgir.delta1": float("nan")}, "delta1 nan"),
        ({"data.source_train": str(w / "nothere")}, "missing folder"),
        ({"data.source_train": str(w / "empty")}, "empty folder"),
        ({"data.source_train": str(w / "emptycls")}, "empty class folders"),
        ({"explainer": "nosuch"}, "explainer"),
        ({"passes.store": "bogus"}, "passes.store"),
        ({"device": "meta"}, "device meta"),
        ({"bogus": 1}, "unknown key"),
        ({"model.factory": "os:system"}, "factory os:system"),
        ({"model.factory": "os:getcwd"}, "factory os:getcwd"),
        ({"model.deep_layer": "nosuch"}, "deep_layer"),
        ({"model.head": "nosuch"}, "head"),
        ({"model.weights": str(w / "nothere.pt")}, "weights missing"),
        ({"out": "."}, "out ."),
    ):
        add(f"correct {label}", ["correct", "--config", config("correct", over), "--quiet"])
    add("correct dup keys", ["correct", "--config", config("correct", text="out: a\nout: b\n")])
    add("correct --out a file", ["correct", "--config", config("correct"), "--out", str(w / "afile"), "--quiet"])
    # -- data
    for v in ("0", "-1", "257", "abc", HUGE):
        add(f"data preview --n {v}", ["data", "preview", "decoy-digits", "--n", v, "--out", str(out()) + ".png"])
    add("data preview unknown dataset", ["data", "preview", "nosuch", "--out", str(out()) + ".png"])
    add(
        "data preview --split nosuch",
        ["data", "preview", "decoy-digits", "--split", "nosuch", "--out", str(out()) + ".png"],
    )
    add(
        "data photos --out a text file",
        ["data", "photos", "--out", str(w / "afile")],
        check=lambda: "" if (w / "afile").read_text() == "x" else "afile overwritten",
    )
    for opt, v in (
        ("--n", "-1"),
        ("--n", "0"),
        ("--n", HUGE),
        ("--n-per-split", "bogus"),
        ("--n-per-split", "a=b"),
        ("--n-per-split", "train=-1"),
        ("--p", "nan"),
        ("--p", "2"),
        ("--seed", "-1"),
    ):
        add(f"data export {opt} {v}", ["data", "export", "decoy-digits", opt, v, "--out", str(out()), "--quiet"])
    add("data export unknown dataset", ["data", "export", "nosuch", "--out", str(out()), "--quiet"])
    shift = [
        "data",
        "shift",
        "--objects",
        str(fx["cls"]),
        "--places",
        str(fx["other"]),
        "--align",
        "espresso=cat,tabby=dog",
        "--n",
        "2",
        "--quiet",
    ]
    for opt, v in (
        ("--objects", str(w / "nothere")),
        ("--places", str(w / "empty")),
        ("--align", "bogus"),
        ("--align", "espresso=nowhere"),
        ("--size", "0"),
        ("--size", "-1"),
        ("--size", "100000"),
        ("--p", "nan"),
        ("--p", "-0.5"),
    ):
        args = list(shift)
        if opt in args:
            args[args.index(opt) + 1] = v
        else:
            args += [opt, v]
        add(f"data shift {opt} {v}", args + ["--out", str(out())])
    # -- bench, app, top level
    for v in ("abc", "-1", "", "1;2", "0.5"):
        add(f"bench decoy --seeds {v!r}", ["bench", "decoy", "--seeds", v, "--out", str(out())])
    add("bench unknown suite", ["bench", "nosuch", "--out", str(out())])
    for opt, v in (
        ("--n", "0"),
        ("--n", "-1"),
        ("--n", "abc"),
        ("--samples", "0"),
        ("--port", "-1"),
        ("--port", "70000"),
        ("--port", "abc"),
        ("--tree", "bogus"),
        ("--eval", "nosuch:test"),
        ("--class-folders", "bogus"),
        ("--eval-n", "-5"),
        ("--seed", HUGE),
    ):
        args = list(app)
        if opt in args:
            args[args.index(opt) + 1] = v
        else:
            args += [opt, v]
        add(f"app {opt} {v!r}", args)
    add("app --images missing", app[:4] + [str(w / "nothere")] + app[5:])
    add("app --host a name that does not resolve", app + ["--host", "no.such.host.invalid"])
    add("unknown command", ["nosuch"])
    add("explain without options", ["explain"])
    add("explain unknown option", ["explain", "--bogus"])
    add("--version", ["--version"], "ok")
    del witness_check
    return cases


def stale_passes(fx: dict[str, Any]) -> None:
    """Item 3: images replaced under the same names between two correct runs are recomputed."""
    w, yaml = fx["w"], fx["yaml"]
    src = w / "stale-src"
    shutil.rmtree(src, ignore_errors=True)
    square_folder(src, 2, 0)
    cfg = json.loads(json.dumps(fx["correct_cfg"]))
    cfg["data"]["source_train"] = str(src)
    runs = {}
    for label, out in (("first", w / "stale-run"), ("rerun", w / "stale-run"), ("fresh", w / "stale-fresh")):
        if label == "rerun":
            other = square_folder(w / "stale-other", 2, 7)
            for cls in os.listdir(other):
                for name in os.listdir(other / cls):
                    target = src / cls / name
                    target.write_bytes((other / cls / name).read_bytes())
                    st = target.stat()
                    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        cfg["out"] = str(out)
        path = w / f"stale-{label}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        p = subprocess.run(
            xgir_cmd(["correct", "--config", str(path), "--quiet"]),
            cwd=w,
            env=env_of(fx),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if p.returncode != 0 or "Traceback" in p.stderr:
            record(
                "cli",
                f"item3 correct {label} run",
                False,
                "failed",
                command=f"xgir correct --config {path}",
                output=p.stderr[-1500:],
            )
            return
        runs[label] = json.loads((out / "results.json").read_text())["summary"]
    ok = runs["rerun"] == runs["fresh"] and runs["rerun"] != runs["first"]
    record(
        "cli",
        "item3 correct: images replaced under the same names are recomputed",
        ok,
        "" if ok else "the rerun reused stale passes",
        command="xgir correct (3 runs)",
    )
    # item 7 for correct: a damaged chunk under out/passes
    chunks = sorted((w / "stale-run" / "passes").rglob("chunk-*.pt"))
    if chunks:
        chunks[0].write_bytes(chunks[0].read_bytes()[: chunks[0].stat().st_size // 2])
        p = subprocess.run(
            xgir_cmd(["correct", "--config", str(w / "stale-rerun.yaml"), "--quiet"]),
            cwd=w,
            env=env_of(fx),
            capture_output=True,
            text=True,
            timeout=600,
        )
        again = json.loads((w / "stale-run" / "results.json").read_text())["summary"] if p.returncode == 0 else None
        ok = p.returncode == 0 and "damaged chunk" in p.stderr and again == runs["rerun"]
        record(
            "cli",
            "item7 correct over a damaged chunk in out/passes",
            ok,
            "" if ok else f"rc {p.returncode}",
            command="xgir correct --config stale-rerun.yaml",
            output=p.stderr[-1500:],
        )


# ---- part 2: interruptions ------------------------------------------------------------------------
def consistent(kind: str, out: Path) -> tuple[bool, str, int | None]:
    """Whether ``out`` holds one run's outputs as a set, and its image count."""
    import numpy as np

    if not out.exists():
        return True, "absent", None
    names = {p.name for p in out.iterdir()}
    try:
        if kind == "explain":
            if not {"explain.json", "maps.npy"} <= names:
                return False, f"incomplete: {sorted(names)}", None
            n = len(json.loads((out / "explain.json").read_text())["targets"])
            m = np.load(out / "maps.npy").shape[0]
            return n == m, f"explain.json {n} images, maps.npy {m}", n
        if kind == "evaluate":
            if not {"metrics.json", "report.md"} <= names:
                return False, f"incomplete: {sorted(names)}", None
            meta = json.loads((out / "metrics.json").read_text())
            n = meta.get("n") or meta.get("config", {}).get("n")
            report = (out / "report.md").read_text()
            return f"{n}" in report, f"metrics n={n}", n
        if kind == "train":
            return {"model.pt", "results.json", "report.md"} <= names, str(sorted(names)), None
        if kind == "correct":
            return {"results.json", "report.md", "xgir_model.pt"} <= names, str(sorted(names)), None
    except Exception as err:  # noqa: BLE001
        return False, f"unreadable outputs: {err}", None
    return True, "", None


def interruptions(fx: dict[str, Any], quick: bool) -> None:
    w, yaml = fx["w"], fx["yaml"]
    lenet = str(fx["lenet"])

    def args_of(kind: str, out: Path, n: int) -> list[str]:
        if kind == "explain":
            return [
                "explain",
                "--model",
                lenet,
                "--images",
                "decoy-digits:test",
                "--n",
                str(n),
                "--method",
                "occlusion",
                "--param",
                "window=4",
                "--param",
                "stride=2",
                "--out",
                str(out),
                "--quiet",
            ]
        if kind == "evaluate":
            return [
                "evaluate",
                "--model",
                lenet,
                "--images",
                "decoy-digits:test",
                "--explainer",
                "saliency",
                "--explainer",
                "occlusion",
                "--n",
                str(n),
                "--out",
                str(out),
                "--quiet",
            ]
        cfg = json.loads(json.dumps(fx[f"{kind}_cfg"]))
        cfg["out"] = str(out)
        if kind == "train":
            cfg["data"]["params"]["n"] = 32 * n
        else:
            cfg["xgir"]["head_epochs"] = n
        path = w / f"int-{kind}-{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return [kind, "--config", str(path), "--quiet"]

    plan = [
        ("explain", signal.SIGINT, 2.0),
        ("explain", signal.SIGINT, 4.5),
        ("explain", signal.SIGKILL, 4.5),
        ("explain", signal.SIGKILL, 5.0),
        ("evaluate", signal.SIGINT, 4.5),
        ("evaluate", signal.SIGKILL, 5.0),
        ("train", signal.SIGINT, 4.5),
        ("train", signal.SIGKILL, 5.5),
        ("correct", signal.SIGINT, 5.0),
        ("correct", signal.SIGKILL, 4.0),
        ("correct", signal.SIGKILL, 5.5),
        ("explain", signal.SIGINT, 3.5),
        ("evaluate", signal.SIGINT, 3.0),
        ("train", signal.SIGKILL, 3.5),
    ]  # delays short enough that the tiny runs are still going (a case that finished first says so)
    if quick:
        plan = plan[:4]
    first: dict[str, str] = {}
    for i, (kind, sig, delay) in enumerate(plan):
        name = f"{kind} {sig.name} after {delay:g} s, then rerun"
        out = w / "int" / kind
        if kind not in first:  # an earlier, complete run whose results must not be lost
            p = subprocess.run(
                xgir_cmd(args_of(kind, out, 2)), cwd=w, env=env_of(fx), capture_output=True, text=True, timeout=600
            )
            if p.returncode != 0:
                record("interrupt", name, False, "the first run failed", output=p.stderr[-1500:])
                continue
            first[kind] = tree_hash(out)
        before = tree_hash(out)
        proc = subprocess.Popen(
            xgir_cmd(args_of(kind, out, 3 + i % 2)),
            cwd=w,
            env=env_of(fx),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT as a terminal delivers it, also when this script runs in the background
            # (which leaves SIGINT ignored in its children, so Python would install no handler)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            record("interrupt", name, False, "did not stop within 60 s of SIGINT")
            continue
        problems = []
        if sig == signal.SIGINT and "Traceback" in err:
            problems.append("traceback on Ctrl-C")
        if sig == signal.SIGINT and not finished and proc.returncode == 0:
            problems.append("ran to the end after SIGINT")
        ok, detail, _ = consistent(kind, out)
        if not ok:
            problems.append(f"mixed/incomplete folder after the kill ({detail})")
        after = tree_hash(out)
        if not finished and after != before and not ok:
            problems.append("earlier results lost")
        p = subprocess.run(
            xgir_cmd(args_of(kind, out, 3 + i % 2)), cwd=w, env=env_of(fx), capture_output=True, text=True, timeout=600
        )
        if p.returncode != 0 or "Traceback" in p.stderr:
            problems.append(f"rerun failed (rc {p.returncode})")
        ok, detail, n = consistent(kind, out)
        if not ok:
            problems.append(f"rerun left a mixed folder ({detail})")
        if kind == "explain" and n not in (None, 3 + i % 2):
            problems.append(f"rerun holds {n} images, want {3 + i % 2}")
        leftovers = [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        if leftovers:
            problems.append(f"leftover temporary folders {leftovers}")
        record(
            "interrupt",
            name + (" (finished before the signal)" if finished else ""),
            not problems,
            "; ".join(problems),
            command="xgir " + " ".join(args_of(kind, out, 3 + i % 2)),
            output=(err.strip() + "\n" + p.stderr.strip())[-1500:],
        )


# ---- part 3: the app --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(fx: dict[str, Any], port: int) -> subprocess.Popen:
    w = fx["w"]
    args = [
        "app",
        "--model",
        str(fx["lenet"]),
        "--images",
        "decoy-digits:train",
        "--n",
        "12",
        "--eval-n",
        "12",
        "--port",
        str(port),
        "--feedback",
        str(w / "app-fb.db"),
        "--out",
        str(w / "app-out"),
        "--tree",
        "head",
    ]
    log = open(w / f"app-{port}-{time.time():.0f}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(xgir_cmd(args), cwd=w, env=env_of(fx), stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/images", timeout=5).read()
            return proc
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    return proc


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int | None, str, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=HOLD + 10) as r:
            r.read()
            return r.status, "", time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")[:500], time.time() - t0
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}", time.time() - t0


def raw_post(port: int, path: str, size: int, chunked: bool) -> tuple[int | None, str, float]:
    """POST ``size`` bytes over a raw socket, stopping when the server closes; then its answer."""
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=HOLD) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
        piece = b"a" * 65536
        try:
            s.sendall(head.encode())
            for _ in range(size // len(piece) + 1):
                s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: its answer should be waiting
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                more = s.recv(65536)
                if not more:
                    break
                data += more
            data += s.recv(65536)
        except OSError:
            pass
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, data.decode("latin-1")[-300:] or "no answer", time.time() - t0


def app_part(fx: dict[str, Any], quick: bool) -> None:
    port = free_port()
    proc = start_app(fx, port)
    if proc.poll() is not None:
        stop_app(proc)
        record("app", "app starts", False, "the app did not start", output=Path(proc.log.name).read_text()[-1500:])  # type: ignore[attr-defined]
        return
    q = urllib.parse.quote
    img = "/api/images/0"
    cases: list[tuple[str, str, bytes | None, str, dict[str, str] | None]] = []  # method, path, body, expect

    def get(path: str, expect: str = "4xx") -> None:
        cases.append(("GET", path, None, expect, None))

    def post(path: str, body: bytes | str, expect: str = "4xx", headers: dict[str, str] | None = None) -> None:
        cases.append(
            (
                "POST",
                path,
                body.encode() if isinstance(body, str) else body,
                expect,
                headers or {"Content-Type": "application/json"},
            )
        )

    # valid controls
    for path in (
        "/api/images",
        f"{img}/image.png",
        f"{img}/explain.png?method=saliency",
        f"{img}/feedback",
        "/",
        "/image/0",
        "/annotate/0",
        "/finetune",
        f"{img}/segments",
        f"{img}/cwox",
    ):
        get(path, "2xx")
    for v in (HUGE, "-1", "nan", "abc", "1e400", "", "10", "9" * 400):
        get(f"/api/images?cls={q(v)}", "any")
    for k, v in (("mis", "abc"), ("sort", "bogus"), ("sort", "")):
        get(f"/api/images?{k}={v}", "any")
    for method, name in (
        ("ig", "n_steps"),
        ("occlusion", "stride"),
        ("occlusion", "window"),
        ("rise", "n_masks"),
        ("lime", "n_samples"),
        ("iassa", "iterations"),
        ("expected-gradients", "n_samples"),
    ):
        for v in (
            "-1",
            "0",
            ".nan",
            "nan",
            "1000000000",
            "1e400",
            "abc",
            "[1,",
            "{a: 1}",
            "1.5",
            HUGE,
            "!!python/name:os.system",
        ):
            if quick and v not in ("-1", "1000000000"):
                continue
            valid = (method, v) == ("iassa", "0")  # the initial occlusion only
            get(f"{img}/explain.png?method={method}&p.{name}={q(v)}", "any" if valid else "4xx")
    for v in ("nosuch", "", "gradcam;drop", "../../etc", "a" * 5000):
        get(f"{img}/explain.png?method={q(v)}")
    for v in ("bogus", "top0", "top99999", "top-1", HUGE):
        get(f"{img}/explain.png?method=saliency&target={q(v)}")
    get(f"{img}/explain.png?method=saliency&p.bogus=1")
    get(f"{img}/explain.png?method=saliency&p.1bad=1")
    get(f"{img}/explain.png?method=saliency&run=bad%20token")
    get(f"{img}/explain.png?method=saliency&run={'a' * 10000}")
    for v in (HUGE, "99999", "12", "abc", "-1", "1.5"):
        for tail in ("image.png", "explain.png", "feedback", "segments", "proposals.png", "feedback.png", "cwox"):
            if quick and tail not in ("image.png",):
                continue
            get(f"/api/images/{v}/{tail}")
    for v in ("nan", "-1", "2", "abc", "1e400"):
        get(f"{img}/cwox?level={v}")
    get(f"{img}/cwox/999.png")
    get(f"{img}/cwox/0/999.png")
    get(f"{img}/cwox/{HUGE}.png")
    for path in (
        "/api/progress/bad",
        f"/api/progress/{'x' * 5000}",
        "/api/jobs/999999",
        f"/api/jobs/{HUGE}",
        "/api/jobs/0/maps/0/before/nosuch.png",
        "/image/99999",
        f"/image/{HUGE}",
        "/annotate/-1",
        "/jobs/999",
        f"/results/{HUGE}",
        "/nosuch",
        "/api/nosuch",
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/nosuch.js",
        "//etc/passwd",
        "/" + "a" * 60000,
    ):
        get(path)
    cases.append(("DELETE", "/api/images", None, "4xx", None))
    cases.append(("POST", "/api/images", b"{}", "4xx", None))
    cases.append(("GET", "/api/images", None, "4xx", {"Host": "evil.example"}))
    # feedback bodies
    h = w_ = 28
    zeros = [[0] * w_ for _ in range(h)]
    for _label, body in (
        ("not JSON", "{"),
        ("empty", ""),
        ("a list", "[]"),
        ("null", "null"),
        ("100000-deep list", "[" * 100000 + "]" * 100000),
        ("100000-deep object", '{"a":' * 100000 + "1" + "}" * 100000),
        ("mask 1e400", json.dumps({"irrelevant": [[1] * w_] * h}).replace("1", "1e400")),
        ("mask NaN", json.dumps({"irrelevant": [[0.0] * w_] * h}).replace("0.0", "NaN")),
        ("mask -1", json.dumps({"irrelevant": [[-1] * w_] * h})),
        ("mask strings", json.dumps({"irrelevant": [["a"] * w_] * h})),
        ("mask wrong shape", json.dumps({"irrelevant": [[1] * 3] * 3})),
        ("mask ragged", json.dumps({"irrelevant": [[1] * w_] * (h - 1) + [[1]]})),
        ("mask a number", json.dumps({"irrelevant": 1})),
        ("mask HUGE", json.dumps({"irrelevant": [[int(HUGE)] * w_] * h})),
        ("annotator bob\\n", json.dumps({"irrelevant": zeros, "annotator": "bob\n"})),
        ("annotator 1000 chars", json.dumps({"irrelevant": zeros, "annotator": "a" * 1000})),
        ("annotator a number", json.dumps({"irrelevant": zeros, "annotator": 5})),
        ("annotator ../..", json.dumps({"irrelevant": zeros, "annotator": "../../x"})),
        ("unknown field", json.dumps({"bogus": 1})),
        ("invalid UTF-8", b"\xff\xfe{}"),
    ):
        post(f"{img}/feedback", body)
    corner = [[int(i < 8 and j < 8) for j in range(w_)] for i in range(h)]
    post(f"{img}/feedback", json.dumps({"irrelevant": corner}), "2xx")  # a fine-tune may now start
    post(f"/api/images/{HUGE}/feedback", json.dumps({"irrelevant": zeros}))
    post("/api/images/99999/feedback", json.dumps({"irrelevant": zeros}))
    for body in (
        '{"epochs": -1}',
        '{"epochs": 1e9}',
        '{"lr": NaN}',
        '{"lr": 1e400}',
        '{"method": "bogus"}',
        '{"bogus": 1}',
        '{"batch_size": 0}',
        f'{{"seed": {HUGE}}}',
        '{"weight": -1}',
        '{"loss": "x"}',
        '{"epochs": "abc"}',
        '{"feedback_repeats": 0}',
        '{"lambda_fb": -1}',
        '{"attribution": "x"}',
    ):
        post("/api/finetune", body.replace("{", '{"method": "guidance", ', 1))  # past the check of the method
    for body in ("[]", "[" * 100000 + "]" * 100000, "{", '{"method": "bogus"}', '{"method": "bayes"}'):
        post("/api/finetune", body)
    post(
        f"{img}/feedback",
        json.dumps({"irrelevant": zeros}),
        "4xx",
        {"Content-Type": "application/json", "Content-Length": "999999999"},
    )
    print(f"[app] {len(cases) + 2} requests", flush=True)
    for label, chunked in (("oversized (5 MiB, Content-Length)", False), ("oversized (5 MiB, chunked)", True)):
        status, text, seconds = raw_post(port, f"{img}/feedback", 5 * 1024 * 1024, chunked)
        problem = "" if status == 413 else f"{status}: {text[:200]}"
        record(
            "app",
            f"POST {img}/feedback {label}",
            not problem,
            problem,
            status=status,
            seconds=round(seconds, 2),
            output=text[:300],
        )
    for method, path, body, expect, headers in cases:
        name = f"{method} {path[:100]}" + (f" body[{len(body)}] {body[:60]!r}" if body is not None else "")
        status, text, seconds = request(port, method, path, body, headers)
        problem = ""
        if status is None:
            if expect == "4xx" and "Content-Length" in (headers or {}):
                problem = ""  # the server closed a lying request: no 500, no hang
            else:
                problem = f"no answer: {text}"
        elif status >= 500:
            problem = f"{status}"
        elif expect == "2xx" and not 200 <= status < 300:
            problem = f"{status} for a valid request: {text[:200]}"
        elif expect == "4xx" and status < 400:
            problem = f"{status} for a bad request"
        elif 400 <= status < 500 and (len(text) > 400 or "Traceback" in text):
            problem = "long or traceback error body"
        if seconds > HOLD:
            problem = (problem + "; " if problem else "") + f"held {seconds:.1f} s"
        if proc.poll() is not None:
            problem = (problem + "; " if problem else "") + "the app died"
        record("app", name, not problem, problem, status=status, seconds=round(seconds, 2), output=text[:300])
        if proc.poll() is not None:
            break
    log = Path(proc.log.name)  # type: ignore[attr-defined]
    stop_app(proc)
    text = log.read_text()
    record(
        "app",
        "server log holds no traceback",
        "Traceback" not in text,
        "Traceback in the server log" if "Traceback" in text else "",
        output=text[-1500:],
    )
    # a restart right after Ctrl-C on the same port
    again = start_app(fx, port)
    up = again.poll() is None
    stop_app(again)
    record(
        "app",
        "restart on the same port right after Ctrl-C",
        up,
        "" if up else "refused",
        output=Path(again.log.name).read_text()[-500:],
    )  # type: ignore[attr-defined]
    record("app", "read-only feedback DB", True, "skipped (root)" if IS_ROOT else "not run", skipped=True)


# ---- part 4: the Python API ---------------------------------------------------------------------
def api_part(fx: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from xgir.correct.xgir import XGIRConfig, support_from_heatmaps, xgir_retrain
    from xgir.data import load_dataset
    from xgir.data.images import load_images
    from xgir.errors import XgirError
    from xgir.explain import get_explainer
    from xgir.models import LeNet, build_model, load_model
    from xgir.resources import cap_workers
    from xgir.train import fit_classifier

    w = fx["w"]
    calls: list[tuple[str, Callable[[], Any], str]] = []

    def add(name: str, fn: Callable[[], Any], expect: str = "error") -> None:
        calls.append((name, fn, expect))

    lenet = fx["lenet"]
    for d in ("meta", "cuda:99", "bogus", "", "cpu:abc", "cuda:-1", 5):
        add(f"load_model(lenet, device={d!r})", lambda d=d: load_model(lenet, device=d))
    for name, path in fx["hostile"].items():
        if name != "weights-bad":
            add(f"load_model(ck-{name}.pt)", lambda path=path: load_model(path))
    for spec in ("", "nosuch", "os:getcwd", "os:system", str(w / "dir.pt"), str(w / "empty.pt"), str(w / "text.pt")):
        add(f"load_model({spec!r})", lambda spec=spec: load_model(spec))
    add("load_model(lenet, weights=lenet)", lambda: load_model(lenet, weights=lenet))
    for limit in (-1, 0, 2.5, "3"):
        add(f"load_images(limit={limit!r})", lambda limit=limit: load_images("decoy-digits:test", limit=limit))
    add("load_images(classes=[cat, zebra])", lambda: load_images(str(fx["other"]), classes=["cat", "zebra"]))
    for n in (-1, 0, 10**12, 2.5):
        add(f"load_images(n={n})", lambda n=n: load_images("decoy-digits:test", n=n))
    add("load_images(seed=-1)", lambda: load_images("decoy-digits:test", n=2, seed=-1))
    add("load_images(missing)", lambda: load_images(str(w / "nothere")))
    add("load_images(empty folder)", lambda: load_images(str(w / "empty")))
    add("load_images(class_folders=bogus)", lambda: load_images(str(fx["cls"]), class_folders="bogus"))  # type: ignore[arg-type]
    add("load_images([])", lambda: load_images([]))
    maps = torch.rand(2, 4, 4)
    for d in (-1, math.nan, 5, 1.0, math.inf, "0.1", None):
        add(f"support_from_heatmaps(delta1={d!r})", lambda d=d: support_from_heatmaps(maps, (8, 8), d))
    add("support_from_heatmaps(size=(0, 0))", lambda: support_from_heatmaps(maps, (0, 0), 0.5))
    add("support_from_heatmaps(size=(-1, 8))", lambda: support_from_heatmaps(maps, (-1, 8), 0.5))
    add("support_from_heatmaps(2-d maps)", lambda: support_from_heatmaps(maps[0], (8, 8), 0.5))
    add("support_from_heatmaps(NaN maps)", lambda: support_from_heatmaps(maps * math.nan, (8, 8), 0.5))
    model = LeNet(3, 3, 16, 2, 8)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    support = torch.zeros(4, 16, 16, dtype=torch.bool)
    support[:, 4:8, 4:8] = True
    cfg = XGIRConfig(draws=1, head_epochs=1)
    for label, (images, labels, sup) in {
        "labels out of range": (x, torch.tensor([0, 1, 2, 3]), support),
        "negative labels": (x, torch.tensor([0, -1, 2, 0]), support),
        "float labels": (x, y.float(), support),
        "labels [N,1]": (x, y[:, None], support),
        "fewer labels": (x, y[:3], support),
        "float64 images": (x.double(), y, support),
        "float16 images": (x.half(), y, support),
        "NaN images": (x * math.nan, y, support),
        "support of another size": (x, y, support[:, :8, :8]),
        "support of 3 images": (x, y, support[:3]),
        "empty batch": (x[:0], y[:0], support[:0]),
    }.items():
        add(f"xgir_retrain({label})", lambda i=images, lb=labels, s=sup: xgir_retrain(model, i, lb, s, cfg))
    for kw in ({"draws": 0}, {"draws": -1}, {"head_epochs": 0}, {"delta2": math.nan}):
        add(f"xgir_retrain(XGIRConfig({kw}))", lambda kw=kw: xgir_retrain(model, x, y, support, XGIRConfig(**kw)))
    for v in (0, -1, math.nan, 10**11, "abc", 1.5):
        add(f"get_explainer('ig', n_steps={v!r})", lambda v=v: get_explainer("ig", n_steps=v))
    for params in ({"stride": -1}, {"window": 0}, {"stride": 0}, {"window": 2.5}):
        add(f"get_explainer('occlusion', {params})", lambda p=params: get_explainer("occlusion", **p))
    add("get_explainer('nosuch')", lambda: get_explainer("nosuch"))
    add("get_explainer('saliency', bogus=1)", lambda: get_explainer("saliency", bogus=1))
    add("get_explainer('rise', n_masks=0)", lambda: get_explainer("rise", n_masks=0))
    add("get_explainer('lime', n_samples=-1)", lambda: get_explainer("lime", n_samples=-1))
    sal = get_explainer("saliency")
    for label, (images, targets) in {
        "float64 images": (x.double(), [0, 1, 2, 0]),
        "float16 images": (x.half(), [0, 1, 2, 0]),
        "target 99": (x, [99, 0, 0, 0]),
        "target -1": (x, [-1, 0, 0, 0]),
        "per-image targets for 3 of 4 images": (x, [[0], [1], [2]]),
        "3-d images": (x[0], [0]),
        "wrong channels": (torch.rand(2, 1, 16, 16), [0, 0]),
    }.items():
        add(f"saliency({label})", lambda i=images, t=targets: sal(model, i, t))
    add("saliency(valid)", lambda: sal(model, x, [0, 1, 2, 0]), "ok")
    for n in (-1, 0, 10**12):
        add(f"load_dataset(decoy-digits, n={n})", lambda n=n: load_dataset("decoy-digits", "test", n=n))
    add("load_dataset(nosuch)", lambda: load_dataset("nosuch", "test"))
    add("load_dataset(split nosuch)", lambda: load_dataset("decoy-digits", "nosuch"))
    add("load_dataset(bogus=1)", lambda: load_dataset("decoy-digits", "test", bogus=1))
    for v in (0, -1, 1.5, "abc", 100_000):
        add(f"build_model('lenet', width={v!r})", lambda v=v: build_model("lenet", width=v, hidden=v))
    add("build_model('nosuch')", lambda: build_model("nosuch"))
    add("build_model('os:system')", lambda: build_model("os:system"))
    from xgir.data.base import ImageDataset

    ds = ImageDataset(torch.rand(4, 3, 16, 16), y)
    for e in (0, -1, 1.5):
        add(f"fit_classifier(epochs={e})", lambda e=e: fit_classifier(model, ds, e, progress=False))
    add(
        "fit_classifier(NaN images)",
        lambda: fit_classifier(model, ImageDataset(torch.full((4, 3, 16, 16), math.nan), y), 1, progress=False),
    )
    for v in (-1, "3", 1.5):
        add(f"cap_workers({v!r})", lambda v=v: cap_workers(v))
    from xgir.correct.feedback import FeedbackRecord, FeedbackStore

    def bad_annotator() -> None:
        with FeedbackStore(w / "api-fb.db", 2, 4, 4) as store:
            store.add([FeedbackRecord(0, 0, np.ones((4, 4), bool), True, "bob\n")])

    add("FeedbackStore.add(annotator 'bob\\n')", bad_annotator)

    for name, fn, expect in calls:
        try:
            value = fn()
        except XgirError as err:
            msg = str(err)
            ok = expect != "ok" and "\n" not in msg and bool(msg.strip())
            record(
                "api",
                name,
                ok,
                "" if ok else f"XgirError for a valid call or a bad message: {msg[:200]}",
                raised="XgirError",
                output=msg[:300],
            )
            continue
        except Exception as err:  # noqa: BLE001
            record(
                "api",
                name,
                False,
                f"raw {type(err).__name__}",
                raised=type(err).__name__,
                output=f"{type(err).__name__}: {err}"[:300] + "\n" + traceback.format_exc()[-800:],
            )
            continue
        problem = ""
        if expect == "error":
            problem = "accepted without an error"
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            problem = "non-finite result"
        if fx["witness"].exists():
            problem = "the checkpoint's command ran"
            fx["witness"].unlink()
        record("api", name, not problem, problem, raised="", output=repr(value)[:200])


# ---- report -------------------------------------------------------------------------------------------
def write_report(out: Path, command: str) -> int:
    parts = ["cli", "interrupt", "app", "api"]
    titles = {
        "cli": "1. Bad CLI inputs",
        "interrupt": "2. Interruptions",
        "app": "3. The app (HTTP)",
        "api": "4. The Python API",
    }
    lines = [
        "# Hostile round (issue 20), rerun",
        "",
        f"Command: `{command}`",
        "",
        f"Run as root: {IS_ROOT} (permission cases are skipped as root).",
        "",
        "| part | cases | passed | failed | skipped |",
        "|---|---|---|---|---|",
    ]
    failed_total = 0
    for part in parts:
        rows = [r for r in RESULTS if r["part"] == part]
        failed = [r for r in rows if not r["passed"]]
        skipped = [r for r in rows if r.get("skipped")]
        failed_total += len(failed)
        lines.append(f"| {titles[part]} | {len(rows)} | {len(rows) - len(failed)} | {len(failed)} | {len(skipped)} |")
    for part in parts:
        rows = [r for r in RESULTS if r["part"] == part]
        failed = [r for r in rows if not r["passed"]]
        lines += [
            "",
            f"## {titles[part]}",
            "",
            f"{len(rows)} cases, {len(rows) - len(failed)} passed, {len(failed)} failed.",
            "",
        ]
        if failed:
            lines += ["| case | problem | command | first lines of the output |", "|---|---|---|---|"]
            for r in failed:
                first = " / ".join((r.get("output") or "").strip().splitlines()[:3])[:300].replace("|", "\\|")
                cmd = (r.get("command") or "").replace("|", "\\|")[:300]
                lines.append(f"| {r['case'][:120].replace('|', '/')} | {r['problem']} | `{cmd}` | {first} |")
        if part == "app":
            held = sorted((r.get("seconds") or 0) for r in rows if "seconds" in r)
            if held:
                lines += ["", f"Longest request held {held[-1]:.2f} s; median {held[len(held) // 2]:.2f} s."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps({"root": IS_ROOT, "command": command, "results": RESULTS}, indent=1, default=str)
    )
    return failed_total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for report.md, results.json and fixtures")
    parser.add_argument("--quick", action="store_true", help="fewer fuzzing values and interruptions")
    parser.add_argument("--parts", default="cli,interrupt,app,api", help="comma-separated parts to run")
    parser.add_argument("--only", default="", help="run only the CLI cases whose name holds this text")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path[:0] = [str(ROOT / "src")]
    import torch

    torch.set_num_threads(1)
    out = args.out.resolve()
    work = out / "work"
    if work.exists():
        for p in work.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(work)
    out.mkdir(parents=True, exist_ok=True)
    fx = build_fixtures(work)
    sys.path.insert(0, str(work))
    os.environ["XGIR_CACHE"] = str(work / "cache")
    parts = args.parts.split(",")
    t0 = time.time()
    if "cli" in parts:
        cases = [c for c in cli_cases(fx, args.quick) if args.only in c.name]
        print(f"[cli] {len(cases)} cases", flush=True)
        for case in cases:
            run_cli(fx, case)
        if not args.only:
            stale_passes(fx)
    if "interrupt" in parts:
        interruptions(fx, args.quick)
    if "app" in parts:
        app_part(fx, args.quick)
    if "api" in parts:
        api_part(fx)
    command = (
        "OMP_NUM_THREADS=1 python benchmarks/hostile_round.py --out "
        + str(args.out)
        + (" --quick" if args.quick else "")
        + (f" --parts {args.parts}" if args.parts != parser.get_default("parts") else "")
        + (f" --only '{args.only}'" if args.only else "")
    )
    failed = write_report(out, command)
    print(f"\n{len(RESULTS)} cases, {failed} failed, {time.time() - t0:.0f} s; report: {out / 'report.md'}")
    for part in ("cli", "interrupt", "app", "api"):
        rows = [r for r in RESULTS if r["part"] == part]
        print(f"  {part}: {len(rows)} cases, {sum(not r['passed'] for r in rows)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
