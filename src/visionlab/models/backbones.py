"""torchvision backbones (ResNet-18, VGG-11-BN, MobileNetV3-Small) with a new head, for
fine-tuning as the notes recommend.

The module adapts its own input, so data modules and exported models need not know about
it: grayscale becomes 3 channels, small images are resized up to what the backbone can
take, and with ImageNet weights the data's normalisation is swapped for ImageNet's.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision model and where its last Linear layer sits."""

    build: Callable[..., nn.Module]
    weights: tvm.WeightsEnum
    head: str  # dotted path of the final Linear, replaced by the new head
    min_size: int = 32  # five stride-2 stages: smaller inputs vanish (VGG) or collapse to 1x1


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "vgg11_bn": BackboneSpec(tvm.vgg11_bn, tvm.VGG11_BN_Weights.IMAGENET1K_V1, "classifier.6"),
    "mobilenet_v3_small": BackboneSpec(tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
                                       "classifier.3"),
}


class InputAdapter(nn.Module):
    """Data-normalised images of any channel count and size -> what the backbone expects.

    `in_mean`/`in_std` are the data's normalisation (set by `set_input_normalization`; saved
    with the weights). With `imagenet=True` the input is mapped back to [0, 1] and then
    normalised with ImageNet's statistics; otherwise values pass through unchanged.
    """

    def __init__(self, channels: int, size: int, imagenet: bool) -> None:
        super().__init__()
        self.channels, self.size, self.imagenet = channels, size, imagenet
        self.register_buffer("in_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("in_std", torch.ones(1, channels, 1, 1))
        self.register_buffer("out_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("out_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.in_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.in_std.copy_(torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.imagenet:
            x = x * self.in_std + self.in_mean  # back to [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.imagenet:
            x = (x - self.out_mean) / self.out_std
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        return x


class Backbone(nn.Module):
    """A torchvision classifier whose final Linear is replaced by Dropout -> Linear(num_classes).

    `freeze_backbone=True` trains the head only (backbone weights get no gradients and its
    BatchNorm statistics stay fixed) until `unfreeze_backbone()`. `param_groups()` gives the
    optimizer two groups, the backbone's learning rate scaled by `backbone_lr_scale`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        name: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 0.1,
        dropout: float = 0.2,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"model.name={name!r} is unknown; allowed: {', '.join(BACKBONES)}")
        if input_shape[0] not in (1, 3):
            raise ValueError(f"input_shape={list(input_shape)}: backbones take 1 or 3 channels")
        spec = BACKBONES[name]
        net = spec.build(weights=None)
        if pretrained or weights_path:
            try:
                net.load_state_dict(load_weights(name, weights_path))
            except RuntimeError as err:
                first = str(err).splitlines()[0]
                raise ValueError(f"model.weights_path={weights_path}: not {name} ImageNet weights ({first})") from None
        parent_path, _, attr = spec.head.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        last: nn.Linear = getattr(parent, attr)
        setattr(parent, attr, nn.Identity())  # the torchvision model now returns features
        size = max(image_size or max(input_shape[1:]), spec.min_size)
        self.adapt = InputAdapter(input_shape[0], size, imagenet=bool(pretrained or weights_path))
        self.backbone = net
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(last.in_features, num_classes))
        self.input_shape, self.num_classes, self.name = tuple(input_shape), num_classes, name
        self.backbone_lr_scale = backbone_lr_scale
        self.frozen = False
        if freeze_backbone:
            self.freeze_backbone()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(self.adapt(x)))

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Tell the adapter how the data was normalised (called by the task before fitting)."""
        self.adapt.set_input_normalization(mean, std)

    def freeze_backbone(self) -> None:
        self.frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def unfreeze_backbone(self) -> None:
        self.frozen = False
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen means frozen BatchNorm statistics too
        return self

    def param_groups(self) -> list[dict[str, Any]]:
        """Head and backbone parameters; the optimizer scales each group's lr by `lr_scale`
        (the names label the learning rates the LR monitor logs: lr-Adam/head, lr-Adam/backbone).

        A frozen backbone is in the optimizer from the start: it gets no gradients, so no
        updates, until it is unfrozen.
        """
        return [
            {"params": list(self.head.parameters()), "lr_scale": 1.0, "name": "head"},
            {"params": list(self.backbone.parameters()), "lr_scale": self.backbone_lr_scale, "name": "backbone"},
        ]


def load_weights(name: str, weights_path: str | None) -> dict[str, Tensor]:
    """ImageNet weights of `name`: from `weights_path`, else the torch cache or a download."""
    spec = BACKBONES[name]
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise ValueError(f"model.weights_path={weights_path} is not a file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickle and zip errors vary
            raise ValueError(f"model.weights_path={weights_path}: not a torch state dict ({err})") from None
        if not isinstance(state, dict):
            raise ValueError(f"model.weights_path={weights_path}: holds {type(state).__name__}, not a state dict")
        return state
    url = spec.weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise ValueError(
            f"model.pretrained=true: cannot get the {name} ImageNet weights ({reason}); offline, download "
            f"{url} elsewhere and either put it at {cached} or pass model.weights_path=FILE"
        ) from None
