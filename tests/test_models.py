import pytest
import torch
from torch import nn

from xgir.errors import XgirError
from xgir.models import LeNet, SmallResNet, get_module, load_checkpoint, save_checkpoint, split


class ViTLike(nn.Module):
    """Head nested at a dotted path, with work after the features (like torchvision's ViT)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(16, 5))

    def forward(self, x):
        return self.heads(self.body(x).flatten(1))


@pytest.mark.parametrize(
    "model,shape,head",
    [(LeNet(), (3, 1, 28, 28), "fc"), (SmallResNet(), (3, 3, 32, 32), "fc"),
     (ViTLike(), (3, 3, 16, 16), "heads.head")],
)
def test_split_recombines(model, shape, head):
    model.eval()
    x = torch.rand(shape)
    features, linear = split(model, head)
    h = features(x)
    assert h.ndim == 2 and h.shape[1] == linear.in_features
    assert torch.allclose(linear(h), model(x), atol=1e-6)
    assert linear is get_module(model, head)  # shared, not copied


def test_split_errors():
    with pytest.raises(XgirError, match="no layer named 'fc9'.*available: .*conv1"):
        split(LeNet(), "fc9")
    with pytest.raises(XgirError, match="not nn.Linear"):
        split(LeNet(), "conv1")


def test_checkpoint_roundtrip(tmp_path):
    model = SmallResNet(width=8, num_classes=4).eval()
    path = save_checkpoint(model, tmp_path / "m.pt", "small-resnet", {"width": 8, "num_classes": 4})
    loaded, state = load_checkpoint(path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary files left


def test_checkpoint_errors(tmp_path):
    with pytest.raises(XgirError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(XgirError, match="is not a torch file"):
        load_checkpoint(bad)


def test_copy_body_keeps_the_target_head_and_refuses_another_body():
    from xgir.models import build_model
    from xgir.models.split import copy_body

    torch.manual_seed(0)
    for arch in ("small-resnet", "bcos-resnet"):  # a linear head and a B-cos 1x1 conv head
        source, target = build_model(arch, num_classes=36, width=4), build_model(arch, num_classes=10, width=4)
        head = target.fc.weight.detach().clone()
        copy_body(source, target)
        got, want = target.state_dict(), source.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in got if not k.startswith("fc."))
        assert torch.equal(target.fc.weight, head)
    with pytest.raises(XgirError, match="lacks"):
        copy_body(build_model("lenet"), build_model("small-resnet", width=4))
