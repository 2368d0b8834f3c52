"""Architectures by name, models from your own code, and adapters for checkpoints released by the papers' authors.

Every model maps pixels in [0, 1] to logits: dataset normalization is a layer inside
the model, so smoothing noise and attack budgets live in pixel space.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.layers import Normalize
from rsbench.lipschitz import attach_power_iterates

if TYPE_CHECKING:
    from rsbench.specs import DefenseSpec

_ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {}

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def register_model(name: str) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Register a constructor `f(num_classes) -> nn.Module` under a name."""

    def decorator(constructor: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        _ARCHITECTURES[name] = constructor
        return constructor

    return decorator


def architectures() -> list[str]:
    """Registered architecture names (plus any `timm:NAME`)."""
    return sorted(_ARCHITECTURES)


def create_model(architecture: str, num_classes: int) -> nn.Module:
    """Build an untrained model by architecture name, or `timm:NAME` for any timm model."""
    if architecture.startswith("timm:"):
        import timm

        name = architecture.removeprefix("timm:")
        if not timm.is_model(name):
            raise RsbenchError(f"unknown timm model {name!r}")
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
        config = getattr(net, "pretrained_cfg", None) or {}
        return nn.Sequential(Normalize(config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)), net)
    if architecture not in _ARCHITECTURES:
        close = difflib.get_close_matches(architecture, _ARCHITECTURES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(architectures())}"
        raise RsbenchError(f"unknown architecture {architecture!r}{hint}")
    return _ARCHITECTURES[architecture](num_classes)


def build_model(spec: DefenseSpec) -> nn.Module:
    """The untrained model of a defense spec: a registered architecture, a timm model, or, for `python:MODULE:FACTORY`,
    what FACTORY(num_classes, **architecture_options) returns from your own code (imported now, its file checked
    against the spec's pin)."""
    if not spec.architecture.startswith("python:"):
        return create_model(spec.architecture, spec.num_classes)
    from rsbench import registry, user_code

    reference = spec.architecture.removeprefix("python:")
    factory = user_code.load(spec, reference, registry.folder_of(spec))
    if not callable(factory):
        raise RsbenchError(f"{reference} is a {type(factory).__name__}, not a function building the model")
    try:
        model = factory(spec.num_classes, **spec.architecture_options)
    except Exception as error:  # noqa: BLE001 - the user's factory may raise anything
        raise RsbenchError(f"{reference}({spec.num_classes}, **{spec.architecture_options}) raised "
                           f"{type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise RsbenchError(f"{reference} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict: every entry's name, dtype, shape and bytes, in name order (what identifies
    the weights of a model built in Python, which has no file)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@register_model("digits-cnn")
def digits_cnn(num_classes: int, channels: int = 1) -> nn.Module:
    """A ~38k-parameter CNN for 1x8x8 digits (about 150 kB of float32 weights)."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


@register_model("rgbdigits-cnn")
def rgbdigits_cnn(num_classes: int) -> nn.Module:
    """The digits CNN with 3 input channels, for 3x8x8 `rgbdigits`."""
    return digits_cnn(num_classes, channels=3)


class _CifarBasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; the block of Cohen et al.'s CIFAR ResNets."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """The depth-(6n+2) CIFAR ResNet used by Cohen et al. (16/32/64 channels, BasicBlocks).

    Module names match their released checkpoints, so only key prefixes need adapting.
    """

    def __init__(self, depth: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise RsbenchError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, 1)
        self.layer2 = self._stage(16, 32, blocks, 2)
        self.layer3 = self._stage(32, 64, blocks, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [_CifarBasicBlock(inplanes, planes, stride)]
        layers += [_CifarBasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("cifar-resnet110")
def cifar_resnet110(num_classes: int) -> nn.Module:
    """Cohen et al.'s CIFAR-10 base classifier: normalization, then ResNet-110."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), CifarResNet(110, num_classes))


@register_model("cifar-resnet20")
def cifar_resnet20(num_classes: int) -> nn.Module:
    """The shallow CIFAR ResNet of the same family (fast for tests and quick experiments)."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), CifarResNet(20, num_classes))


@register_model("imagenet-resnet50")
def imagenet_resnet50(num_classes: int) -> nn.Module:
    """Cohen et al.'s ImageNet base classifier: normalization, then torchvision's ResNet-50."""
    from torchvision.models import resnet50

    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), resnet50(num_classes=num_classes))


def adapt_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict of `Sequential(Normalize, net)` from rsbench's or the authors' checkpoint format.

    The smoothing authors save `{"arch": ..., "state_dict": ...}` from
    `Sequential(NormalizeLayer, net)`, optionally with `net` wrapped in DataParallel, so
    their keys read `1.module.conv1.weight`. Dropping every `module.` segment gives our keys.
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RsbenchError("checkpoint is neither a state dict nor a dict with a 'state_dict' entry")
    return {".".join(p for p in key.split(".") if p != "module"): value for key, value in state.items()}


def load_weights_into(model: nn.Module, checkpoint: Any) -> nn.Module:
    """Load a checkpoint into a model, naming missing or unexpected keys on mismatch."""
    state = adapt_state_dict(checkpoint)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same keys, other shapes (e.g. another depth or number of classes)
        reason = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise RsbenchError(f"checkpoint does not fit the architecture: {reason}") from None
    if result.missing_keys or result.unexpected_keys:
        raise RsbenchError(
            f"checkpoint does not fit the architecture: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.eval()


@register_model("digits-lipschitz-cnn")
def digits_lipschitz_cnn(num_classes: int) -> nn.Module:
    """A ~25k-parameter CNN for 1x8x8 digits made for GloRo (about 100 kB of float32 weights).

    The GloRo paper's 2C2F MNIST layout scaled down: two convolutions (the second strided
    instead of pooling) and two dense layers. Each layer below the logits carries the power
    iterate GloRo training steps from, as a buffer saved with the weights.
    """
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )
    return attach_power_iterates(net, (1, 8, 8))


def two_stride_convs(side: int, channels: tuple[int, int], hidden: int, num_classes: int) -> nn.Sequential:
    """Two 4x4 stride-2 convolutions on a 1-channel side x side image, then one hidden dense layer, ReLUs only: the
    layout of Wong & Kolter's MNIST network, whose module indices (0, 2, 5, 7) its state dicts use."""
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(1, first, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(second * (side // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("digits-kw-cnn")
def digits_kw_cnn(num_classes: int) -> nn.Module:
    """The released KW MNIST layout scaled to 1x8x8 digits (~22k parameters, ~90 kB).

    Two stride-2 convolutions (8x8 -> 4x4 -> 2x2) and one hidden dense layer: only layers
    the convex relaxation certifies, and few enough ReLUs (484) to train it robustly in minutes.
    """
    return two_stride_convs(8, (16, 32), 100, num_classes)


@register_model("kw-mnist-cnn")
def kw_mnist_cnn(num_classes: int) -> nn.Module:
    """Wong & Kolter's released MNIST network; module indices 0, 2, 5, 7 match their state dict."""
    return two_stride_convs(28, (16, 32), 100, num_classes)


@register_model("mnist-2c2f")
def mnist_2c2f(num_classes: int) -> nn.Module:
    """The GloRo paper's 2C2F MNIST network (~166k parameters, ~670 kB): two stride-2 convolutions with 16 and 32
    channels and a 100-unit dense layer, the layout of `kw-mnist-cnn`, with the power iterates GloRo training steps
    from."""
    return attach_power_iterates(kw_mnist_cnn(num_classes), (1, 28, 28))


@register_model("mnist-4c3f")
def mnist_4c3f(num_classes: int) -> nn.Module:
    """The GloRo paper's 4C3F MNIST network at half width (~245k parameters, ~1 MB; the full one has 2M).

    Four convolutions (3x3, then 4x4 with stride 2, twice; 16, 16, 32, 32 channels instead of 32, 32, 64, 64)
    and two dense layers of 128 units instead of 512, so that the shipped file stays small and an epoch of GloRo
    training on 5,000 images takes seconds on a CPU; with the power iterates GloRo training steps from.
    """
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
    return attach_power_iterates(net, (1, 28, 28))


@register_model("mnist-cnn-2layer")
def mnist_cnn_2layer(num_classes: int) -> nn.Module:
    """One of the CROWN-IBP paper's small MNIST networks (its `cnn_2layer`, width 2, 256 linear units; ~205k
    parameters, ~820 kB): two stride-2 convolutions with 8 and 16 channels and a dense layer, ReLUs only."""
    return two_stride_convs(28, (8, 16), 256, num_classes)
