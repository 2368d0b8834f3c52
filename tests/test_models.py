"""Architectures by name, and checkpoints in the smoothing authors' released format."""

from pathlib import Path

import pytest
import torch
from torch import nn

from rsbench import hub
from rsbench.errors import RsbenchError
from rsbench.models import CifarResNet, create_model, load_weights_into
from rsbench.specs import WeightsRef


class AuthorsNormalizeLayer(nn.Module):
    """Like the authors' layer: means and deviations are plain attributes, so it adds no state-dict keys."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def released_checkpoint(net: nn.Module, mean: list[float], std: list[float], arch: str, path: Path) -> Path:
    """Save `Sequential(NormalizeLayer, DataParallel(net))` as `{arch, state_dict, ...}`, as the authors did."""
    wrapped = nn.Sequential(AuthorsNormalizeLayer(mean, std), nn.DataParallel(net))
    torch.save({"epoch": 90, "arch": arch, "state_dict": wrapped.state_dict()}, path)
    return path


def randomize_batchnorm(net: nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def check_loads(arch: str, net: nn.Module, mean: list[float], std: list[float], shape: tuple, tmp_path: Path) -> None:
    torch.manual_seed(0)
    randomize_batchnorm(net)
    net.eval()
    path = released_checkpoint(net, mean, std, arch, tmp_path / "checkpoint.pth.tar")
    assert any(key.startswith("1.module.") for key in torch.load(path, weights_only=True)["state_dict"])
    ref = WeightsRef(source="file", filename=str(path), sha256=hub.sha256_of(path))
    model = load_weights_into(create_model(arch.replace("_", "-"), 10 if "cifar" in arch else 1000), hub.load_checkpoint(ref))
    x = torch.rand(2, *shape)
    with torch.no_grad():
        expected = net((x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_cifar_resnet110_loads_the_released_format(tmp_path: Path) -> None:
    net = CifarResNet(110, 10)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(1.73e6, rel=0.01)  # ResNet-110's size
    check_loads("cifar_resnet110", net, [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010], (3, 32, 32), tmp_path)


def test_imagenet_resnet50_loads_the_released_format(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    check_loads("imagenet_resnet50", resnet50(), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], (3, 64, 64), tmp_path)


def test_mismatched_checkpoint_names_the_keys() -> None:
    with pytest.raises(RsbenchError, match="missing"):
        load_weights_into(create_model("digits-cnn", 10), {"state_dict": {"0.weight": torch.zeros(16, 1, 3, 3)}})


def test_timm_models_by_name_map_pixels_to_logits() -> None:
    model = create_model("timm:resnet18", 7).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_architecture_suggests() -> None:
    with pytest.raises(RsbenchError, match="did you mean digits-cnn"):
        create_model("digit-cnn", 10)
