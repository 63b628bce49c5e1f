"""``xgir bench ganmex``: GANMEX counterfactual baselines against zero, blur and uniform noise.

Per seed: train a LeNet on plain 28x28 digits (decoy-digits with ``decoys=False``), train the
GANMEX generator against it (cached: a rerun loads it, an interrupted run resumes), then on
test images x with predicted class p and every foil class t != p:

- the baselines b(x, t): zero image, Gaussian blur of x (sigma 3.5 px), uniform noise, G(x, t);
  the share classified as t by the classifier, the share still classified as p, the mean
  per-pixel L1 distance |x - b|;
- one-vs-one IG attributions of the logit z_p with b(x, t) as the baseline ("why p and not t",
  the GANMEX paper's reading); their deletion AUC (pixels set to zero, or to a blur of x) and
  insertion AUC (from the blur), scoring the probability of p (xgir.metrics.faithfulness);
- cascading randomisation (xgir.metrics.sanity) of IG with the zero baseline and with the
  GANMEX baseline (G(x, t) of the trained classifier, held fixed while the layers of the
  classifier are re-initialised from fc down): Spearman (|maps|, signed) and SSIM to the
  original maps. A map that stays similar while the weights are destroyed fails the check.

Writes report.md, results.json, counterfactuals.png (x with G(x, t) for every t),
pairs.png (x, G(x, t), G - x and the IG maps per baseline), sanity.png (the curves) and
training.png (the GAN loss terms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xgir.bench import fmt, one_thread, spread_note
from xgir.data import load_dataset
from xgir.explain.baselines import BlurBaseline, UniformNoiseBaseline, ZeroBaseline
from xgir.explain.ganmex import GanmexBaseline, one_vs_one
from xgir.explain.registry import get_explainer
from xgir.explain.targets import as_targets
from xgir.io import cache_dir, fingerprint, save_figure, write_json, write_text
from xgir.metrics.faithfulness import deletion, insertion
from xgir.metrics.sanity import cascading_randomisation
from xgir.models import build_model, load_checkpoint, save_checkpoint
from xgir.models.gan import Generator
from xgir.progress import iterate
from xgir.train import accuracy, fit_classifier, predict_logits
from xgir.train.ganmex import GanmexConfig, train_ganmex

SUITE = "ganmex"
BASELINE_NAMES = ("zero", "blur", "uniform", "ganmex")
SIMILARITIES = ("spearman_abs", "spearman_signed", "ssim")
STEP = 16  # pixels per deletion / insertion step (49 points on a 28x28 image)


def settings(quick: bool) -> dict[str, Any]:
    """Sizes of the run (``quick``: a smoke test in about a minute, not a result)."""
    if quick:
        return {"n_train": 1000, "epochs": 2, "gan_steps": 150, "n_eval": 30, "n_attr": 6,
                "n_sanity": 6, "ig_steps": 16}
    return {"n_train": 5000, "epochs": 5, "gan_steps": 1500, "n_eval": 200, "n_attr": 30,
            "n_sanity": 30, "ig_steps": 32}


def gan_config(seed: int, quick: bool) -> GanmexConfig:
    """The GANMEX config of the benchmark (small networks: trains on 2 CPU cores in minutes)."""
    s = settings(quick)
    return GanmexConfig(num_classes=10, channels=1, image_size=28, width=16, n_res=2,
                        critic_width=32, batch_size=32, steps=s["gan_steps"], lr_g=1e-4,
                        lr_d=4e-4, lambda_cls=1.0, lambda_sim=10.0, lambda_rec=0.0, seed=seed)


def _classifier(train: Any, seed: int, epochs: int) -> torch.nn.Module:
    """LeNet trained on ``train`` (cached by data, epochs and seed)."""
    key = fingerprint("ganmex-bench-lenet", train.images, train.labels, epochs, seed)
    path = cache_dir() / "ganmex" / f"lenet-{key}.pt"
    if path.exists():
        return load_checkpoint(path)[0]
    torch.manual_seed(seed)
    model = build_model("lenet")
    fit_classifier(model, train, epochs=epochs, seed=seed, desc=f"lenet seed {seed}")
    save_checkpoint(model, path, "lenet", {}, meta={"epochs": epochs, "seed": seed})
    return model.eval()


def _baselines(gen: Generator, seed: int) -> dict[str, Any]:
    return {"zero": ZeroBaseline(), "blur": BlurBaseline(),
            "uniform": UniformNoiseBaseline(seed=seed), "ganmex": GanmexBaseline(gen)}


def _foils(pred: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Every class but the predicted one: long[N,K-1]."""
    return (pred[:, None] + torch.arange(1, k)[None]) % k


def _ig_maps(model: torch.nn.Module, x: torch.Tensor, foils: torch.Tensor, baseline: Any,
             steps: int, chunk: int = 8) -> torch.Tensor:
    """One-vs-one IG maps float[N,T,H,W] in chunks of images (bounded memory)."""
    outs = [one_vs_one(model, x[i:i + chunk], foils[i:i + chunk], baseline, method="ig", n_steps=steps,
                       internal_batch_size=512)
            for i in range(0, len(x), chunk)]
    return torch.cat(outs)


def _evaluate_seed(seed: int, quick: bool, out: Path) -> dict[str, Any]:
    s = settings(quick)
    torch.manual_seed(seed)
    train = load_dataset("decoy-digits", "train", seed=seed, n=s["n_train"], decoys=False)
    test = load_dataset("decoy-digits", "test", seed=seed, decoys=False)
    model = _classifier(train, seed, s["epochs"])
    test_acc = accuracy(model, test)

    cfg = gan_config(seed, quick)
    key = fingerprint("ganmex-bench-gan", model, train.images, cfg.model_dump())
    ckpt = cache_dir() / "ganmex" / f"gan-{key}.pt"
    run = train_ganmex(model, train.images, cfg, checkpoint=ckpt)
    gen = run.generator
    for p in model.parameters():
        p.requires_grad_(False)

    # ---- baselines: classified as t, still p, L1 to x
    x = test.images[: s["n_eval"]]
    pred = predict_logits(model, x).argmax(1)
    foils = _foils(pred)
    n, t = foils.shape
    bases = _baselines(gen, seed)
    rows: dict[str, dict[str, float]] = {}
    refs_all: dict[str, torch.Tensor] = {}
    for name, base in bases.items():
        refs = base(x, as_targets(foils, n, 10))  # [N,T,C,H,W]
        refs_all[name] = refs
        cls = predict_logits(model, refs.flatten(0, 1)).argmax(1).view(n, t)
        rows[name] = {
            "as_target": float((cls == foils).float().mean()),
            "as_predicted": float((cls == pred[:, None]).float().mean()),
            "l1": float((refs - x[:, None]).abs().mean()),
        }

    # ---- one-vs-one IG maps and their faithfulness
    na = s["n_attr"]
    xa, pa, fa = x[:na], pred[:na], foils[:na]
    maps: dict[str, torch.Tensor] = {}
    for name in iterate(BASELINE_NAMES, desc="IG per baseline", unit="baseline"):
        m = _ig_maps(model, xa, fa, bases[name], s["ig_steps"])
        maps[name] = m
        target = pa[:, None].expand(na, t)
        del_zero = deletion(model, xa, m, target, step=STEP, baseline="zeros").auc
        del_blur = deletion(model, xa, m, target, step=STEP, baseline="blur").auc
        ins_blur = insertion(model, xa, m, target, step=STEP).auc
        rows[name]["deletion_zero"] = float(del_zero.mean())
        rows[name]["deletion_blur"] = float(del_blur.mean())
        rows[name]["insertion_blur"] = float(ins_blur.mean())
        # one-vs-one deletion: pixels of x replaced by those of its counterfactual G(x, t)
        # (matched to the GANMEX baseline, as deletion to 0 is to the zero baseline)
        cf = refs_all["ganmex"][:na].flatten(0, 1)
        del_cf = deletion(model, xa.repeat_interleave(t, 0), m.flatten(0, 1), target.reshape(-1),
                          step=STEP, baseline=cf).auc
        rows[name]["deletion_counterfactual"] = float(del_cf.mean())

    # ---- cascading randomisation: IG zero vs IG GANMEX, one random foil per image
    ns = s["n_sanity"]
    g = torch.Generator().manual_seed(seed)
    xs, ps = x[:ns], pred[:ns]
    fs = (ps + torch.randint(1, 10, (ns,), generator=g)) % 10
    g_refs = GanmexBaseline(gen).generate(xs, fs[:, None])
    sanity: dict[str, list[dict[str, Any]]] = {}
    explainers = {"zero": get_explainer("ig", baseline="zero", n_steps=s["ig_steps"],
                                        internal_batch_size=512),
                  # G(x, t) of the trained classifier, held fixed while it is randomised
                  "ganmex": get_explainer("ig", baseline=g_refs, n_steps=s["ig_steps"],
                                          internal_batch_size=512)}
    for name, explainer in explainers.items():
        res = cascading_randomisation(model, explainer, xs, ps[:, None], seed=seed)
        sanity[name] = res.summary()

    figures = {}
    if seed == 0 or not (out / "pairs.png").exists():
        figures["counterfactuals"] = _counterfactual_figure(gen, model, x, pred, out)
        figures["pairs"] = _pairs_figure(xa, pa, fa, refs_all["ganmex"][:na], maps, out)
        figures["training"] = _training_figure(run.history, out)
    return {
        "seed": seed,
        "classifier_test_accuracy": test_acc,
        "gan_steps": cfg.steps,
        "gan_train_seconds": run.seconds,
        "gan_resumed_from": run.resumed_from,
        "pairs": n * t,
        "attribution_pairs": na * t,
        "baselines": rows,
        "sanity": sanity,
        # IG from the zero image gives exactly 0 wherever x = 0, whatever the weights
        "sanity_zero_pixel_share": float((xs == 0).float().mean()),
        "figures": figures,
    }


# ------------------------------------------------------------------------- figures


def _counterfactual_figure(gen: Generator, model: torch.nn.Module, x: torch.Tensor,
                           pred: torch.Tensor, out: Path, rows: int = 6) -> str:
    import matplotlib.pyplot as plt

    # one image per class where possible
    picks: list[int] = []
    for c in range(10):
        idx = torch.nonzero(pred == c).flatten()
        if len(idx):
            picks.append(int(idx[0]))
        if len(picks) == rows:
            break
    xs = x[picks]
    cf = GanmexBaseline(gen).generate(xs, torch.arange(10)[None].expand(len(picks), 10))
    cls = predict_logits(model, cf.flatten(0, 1)).argmax(1).view(len(picks), 10)
    fig, axes = plt.subplots(len(picks), 11, figsize=(11 * 1.1, len(picks) * 1.2), squeeze=False)
    for i in range(len(picks)):
        axes[i, 0].imshow(xs[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"x (p={int(pred[picks[i]])})", fontsize=7)
        for c in range(10):
            ax = axes[i, c + 1]
            ax.imshow(cf[i, c, 0], cmap="gray", vmin=0, vmax=1)
            ok = int(cls[i, c]) == c
            ax.set_title(f"G(x,{c})->{int(cls[i, c])}", fontsize=7, color="black" if ok else "red")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("GANMEX counterfactuals G(x, t) (title: target -> classifier's class)", fontsize=9)
    save_figure(fig, out / "counterfactuals.png")
    return "counterfactuals.png"


def _pairs_figure(x: torch.Tensor, pred: torch.Tensor, foils: torch.Tensor, cf: torch.Tensor,
                  maps: dict[str, torch.Tensor], out: Path, rows: int = 6) -> str:
    import matplotlib.pyplot as plt

    from xgir.viz import DIVERGING, attribution_rgb, colorbar

    n, t = foils.shape
    # different images, each with its foil cycling through the classes
    pairs = [(i, (i * 4) % t) for i in range(min(rows, n))]
    cols = ["x", "G(x,t)", "G(x,t) - x"] + [f"IG, {b} baseline" for b in BASELINE_NAMES]
    fig, axes = plt.subplots(len(pairs), len(cols), figsize=(len(cols) * 1.5, len(pairs) * 1.5 + 0.5),
                             squeeze=False, layout="constrained")
    for r, (i, j) in enumerate(pairs):
        axes[r, 0].imshow(x[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(f"{int(pred[i])} not {int(foils[i, j])}", fontsize=8)
        axes[r, 1].imshow(cf[i, j, 0], cmap="gray", vmin=0, vmax=1)
        axes[r, 2].imshow(cf[i, j, 0] - x[i, 0], cmap=DIVERGING, vmin=-1, vmax=1)
        for c, b in enumerate(BASELINE_NAMES):  # IG maps: signed, clipped at the 99th percentile of |A|
            axes[r, 3 + c].imshow(attribution_rgb(x[i], maps[b][i, j], sign="all"), interpolation="nearest")
    for c, title in enumerate(cols):
        axes[0, c].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    colorbar(fig, axes.ravel().tolist(), "all", False)
    fig.suptitle("one-vs-one IG of z_p with baseline b(x, t) (red +, blue -)", fontsize=9)
    save_figure(fig, out / "pairs.png")
    return "pairs.png"


def _training_figure(history: list[dict[str, float]], out: Path) -> str:
    import matplotlib.pyplot as plt

    keys = ["cls", "sim", "adv", "gap", "gp"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.6))
    steps = [h["step"] for h in history]
    for ax, k in zip(axes, keys, strict=True):
        vals = torch.tensor([h[k] for h in history])
        w = max(1, len(vals) // 50)
        smooth = vals.unfold(0, w, w).mean(1) if len(vals) >= w else vals
        ax.plot(steps[w - 1::w][: len(smooth)], smooth.tolist())
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("generator step", fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    return "training.png"


def _sanity_figure(results: list[dict[str, Any]], out: Path) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(4.2 * len(SIMILARITIES), 3.2))
    layers = [r["layer"] for r in results[0]["sanity"]["zero"]]
    xs = list(range(len(layers) + 1))
    for ax, key in zip(axes, SIMILARITIES, strict=True):
        for name, colour in (("zero", "tab:blue"), ("ganmex", "tab:red")):
            for k, res in enumerate(results):
                ys = [1.0] + [row[key] for row in res["sanity"][name]]
                ax.plot(xs, ys, "o-", color=colour, alpha=0.8,
                        label=f"IG, {name} baseline" if k == 0 else None)
        ax.set_xticks(xs, ["original"] + layers, rotation=30, fontsize=8)
        ax.set_title(key, fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylim(-0.3, 1.05)
    axes[0].set_ylabel("similarity to the original map")
    axes[0].legend(fontsize=8)
    fig.suptitle("cascading randomisation (layers re-initialised from fc down, cumulative)",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "sanity.png")
    return "sanity.png"


# ------------------------------------------------------------------------- report


def _report(results: list[dict[str, Any]], quick: bool) -> str:
    seeds = [r["seed"] for r in results]
    lines = [f"# GANMEX baselines ({'quick' if quick else 'full'} run, seeds {seeds})", ""]
    lines.append(
        f"LeNet on plain 28x28 digits, test accuracy "
        f"{fmt([r['classifier_test_accuracy'] for r in results])}. GAN: "
        f"{results[0]['gan_steps']} generator steps; training seconds per seed "
        f"{[round(r['gan_train_seconds']) for r in results]} (CPU, 1 thread, shared machine)."
    )
    lines.append(
        f"{results[0]['pairs']} (x, t) pairs per seed for the first three columns (every foil "
        f"t != p); {results[0]['attribution_pairs']} for the AUCs. {spread_note(len(seeds))} "
        "The AUCs score the probability of p as the pixels of x, in the order of the IG map "
        "made with each baseline, are set to 0, to a blur of x or to G(x, t), or put back into "
        "the blur; each deletion reference favours the IG map made from the same reference."
    )
    lines += ["", "| baseline b(x, t) | classified as t | still p | L1 to x (per px) | "
              "deletion AUC, to 0 (↓) | deletion AUC, to blur (↓) | insertion AUC (↑) | "
              "deletion AUC, to G(x,t) (↓) |",
              "|---|---|---|---|---|---|---|---|"]
    keys = ("as_target", "as_predicted", "l1", "deletion_zero", "deletion_blur", "insertion_blur",
            "deletion_counterfactual")
    for name in BASELINE_NAMES:
        cells = [fmt([r["baselines"][name][k] for r in results]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    hit = [r["baselines"]["ganmex"]["as_target"] for r in results]
    closer = [r["baselines"]["ganmex"]["l1"] < r["baselines"]["uniform"]["l1"] for r in results]
    lines += ["", "Goals: GANMEX baselines classified as t for >= 90% of pairs: "
              f"{'met' if min(hit) >= 0.9 else 'NOT met'} (min over seeds {min(hit):.3f}); "
              f"closer to x in L1 than uniform noise: {'met' if all(closer) else 'NOT met'}.", ""]
    lines += ["## Cascading randomisation (IG of z_p; similarity to the original map, mean)", "",
              "| randomised down to | " + " | ".join(
                  f"{k} zero | {k} GANMEX" for k in SIMILARITIES) + " |",
              "|---|" + "---|" * (2 * len(SIMILARITIES))]
    for i, row in enumerate(results[0]["sanity"]["zero"]):
        cells = []
        for k in SIMILARITIES:
            for name in ("zero", "ganmex"):
                cells.append(fmt([r["sanity"][name][i][k] for r in results]))
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
    zero_share = fmt([r["sanity_zero_pixel_share"] for r in results])
    lines += ["", f"{zero_share} of the pixels of these images are exactly 0: there IG from the "
              "zero baseline is exactly 0 whatever the weights, so the maps of the randomised "
              "models share these tied ranks with the original (this props up the Spearman of "
              "|maps|).", "", "Figures: counterfactuals.png, pairs.png, sanity.png, training.png."]
    return "\n".join(lines) + "\n"


def run(out: Path, seeds: list[int], quick: bool = False) -> dict[str, Any]:
    """Run the suite for each seed; write report.md, results.json and the figures into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with one_thread():
        results = [_evaluate_seed(seed, quick, out) for seed in seeds]
    _sanity_figure(results, out)
    summary = {"suite": SUITE, "quick": quick, "settings": settings(quick),
               "gan_config": gan_config(0, quick).model_dump(), "results": results}
    write_json(out / "results.json", summary)
    write_text(out / "report.md", _report(results, quick))
    return summary
