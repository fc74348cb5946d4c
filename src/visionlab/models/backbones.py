"""Any torchvision (or timm) classifier by name, with a new head, for fine-tuning as the notes
recommend: `model=torchvision model.name=efficientnet_b0`, `model=timm model.name=resnet10t`.

The module adapts its own input, so data modules and exported models need not know about
it: grayscale becomes 3 channels, small images are resized up to what the network can
take, and with ImageNet weights the data's normalisation is swapped for ImageNet's.
"""

from __future__ import annotations

import difflib
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from visionlab.utils.checks import Check, fraction, integer, positive
from visionlab.utils.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32  # five stride-2 stages: smaller inputs vanish (VGG) or collapse to 1x1
AUX_HEADS = ("AuxLogits.", "aux1.", "aux2.")  # inception_v3, googlenet: training-only heads we leave out

# Every classification model of torchvision's registry (not detection, segmentation, video...).
BACKBONES: tuple[str, ...] = tuple(tvm.list_models(module=tvm))


def unknown_name(name: str, names: Sequence[str], source: str) -> ConfigError:
    """One line naming the closest registry names."""
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"{len(names)} names, e.g. {', '.join(names[:5])}"
    return ConfigError(f"model.name={name!r} is not a {source} classifier; {hint}")


def _final_layer(net: nn.Module) -> str:
    """Dotted path of the layer that outputs the ImageNet logits (a Linear, or SqueezeNet's 1x1 Conv)."""
    found = [
        path
        for path, m in net.named_modules()
        if not path.startswith(AUX_HEADS)
        and (
            (isinstance(m, nn.Linear) and m.out_features == 1000)
            or (isinstance(m, nn.Conv2d) and m.out_channels == 1000)
        )
    ]
    return found[-1]


def _cut_head(net: nn.Module, path: str) -> int:
    """Replace the final layer at `path` by Identity; the number of features it took."""
    parent_path, _, attr = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    last = getattr(parent, attr)
    setattr(parent, attr, nn.Identity())  # the network now returns features
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels


class InputAdapter(nn.Module):
    """Data-normalised images of any channel count and size -> what the backbone expects.

    `in_mean`/`in_std` are the data's normalisation (set by `set_input_normalization`; saved
    with the weights). With `imagenet=True` the input is mapped back to [0, 1] and then
    normalised with ImageNet's statistics; otherwise values pass through unchanged.
    """

    in_mean: Tensor  # buffers, registered below
    in_std: Tensor
    out_mean: Tensor
    out_std: Tensor

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
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > self.size
            )
        return x


class Backbone(nn.Module):
    """A torchvision classifier whose final layer is replaced by Dropout -> Linear(num_classes).

    `name` is any of `torchvision.models.list_models(module=torchvision.models)`. Weights:
    `weights_path` (a local state dict of that model) or `weights`, the name of one of its
    torchvision weights (DEFAULT, IMAGENET1K_V1, ...; from the torch cache, else downloaded);
    `pretrained=True` means `weights=DEFAULT`. Inputs are resized up to at least 32 pixels and
    the smallest size torchvision gives for the model (224 for Swin, MaxViT), or to exactly
    `image_size`; a ViT without weights is built for the input's size (a 32x32 image in
    patches of 16: 4 tokens), with weights for theirs.

    `freeze_backbone=True` trains the head only (backbone weights get no gradients and its
    BatchNorm statistics stay fixed) until `unfreeze_backbone()`. `param_groups()` gives the
    optimizer two groups, the backbone's learning rate scaled by `backbone_lr_scale`.
    """

    CHECKS: ClassVar[tuple[Check, ...]] = (
        Check("name", lambda v: isinstance(v, str) and v != "", "a model name (the builder lists close matches)"),
        positive("backbone_lr_scale"),
        integer("image_size", 1, "an integer >= 1, or null"),
        fraction("dropout"),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        name: str = "resnet18",
        weights: str | None = None,
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 0.1,
        dropout: float = 0.2,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if input_shape[0] not in (1, 3):
            raise ConfigError(f"input_shape={list(input_shape)}: backbones take 1 or 3 channels")
        weights = weights or ("DEFAULT" if pretrained else None)
        imagenet = bool(weights or weights_path)
        wanted = image_size or max(max(input_shape[1:]), MIN_SIZE)
        net, features, size = self.make(name, weights, weights_path, wanted, explicit_size=image_size is not None)
        self.adapt = InputAdapter(input_shape[0], size, imagenet=imagenet)
        self.backbone = net
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.input_shape, self.num_classes, self.name = tuple(input_shape), num_classes, name
        self.backbone_lr_scale = backbone_lr_scale
        self.frozen = False
        if freeze_backbone:
            self.freeze_backbone()

    @staticmethod
    def make(
        name: str, weights: str | None, weights_path: str | None, size: int, explicit_size: bool
    ) -> tuple[nn.Module, int, int]:
        """The torchvision network without its head, its feature count and its input side."""
        if name not in BACKBONES:
            raise unknown_name(name, BACKBONES, "torchvision")
        enum = tvm.get_model_weights(name)
        chosen = _weights_entry(name, enum, weights) if weights else enum.DEFAULT
        min_side = max(chosen.meta.get("min_size", (1, 1)))  # what the architecture (or its weights) can take
        kwargs: dict[str, Any] = {}
        if name.startswith("vit_"):  # position embeddings fix the side: the weights' own, or built for `size`
            patch = int(name.rsplit("_", 1)[-1])
            size = kwargs["image_size"] = min_side if (weights or weights_path) else -(-size // patch) * patch
        elif not explicit_size:
            size = max(size, min_side)
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=True)
        net = tvm.get_model(name, weights=None, **kwargs)
        if weights or weights_path:
            state = load_weights(name, chosen, weights_path)
            state = {k: v for k, v in state.items() if not k.startswith(AUX_HEADS)}
            try:
                net.load_state_dict(state)
            except RuntimeError as err:
                first = str(err).splitlines()[0]
                source = f"model.weights_path={weights_path}" if weights_path else f"model.weights={weights}"
                raise ConfigError(f"{source}: not {name} ImageNet weights ({first})") from None
        return net, _cut_head(net, _final_layer(net)), size

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


class TimmBackbone(Backbone):
    """The same for timm's registry (`pip install -e .[timm]`): `model=timm model.name=NAME`.

    No downloads: weights only from `weights_path` (a state dict of that timm model, with or
    without its classifier), ImageNet-normalised like torchvision's. Models with a fixed input
    side (ViTs) are built for the input's size.
    """

    @staticmethod
    def make(
        name: str, weights: str | None, weights_path: str | None, size: int, explicit_size: bool
    ) -> tuple[nn.Module, int, int]:
        try:
            import timm
        except ImportError:
            raise ConfigError("model=timm needs timm: pip install -e .[timm]") from None
        if weights:
            raise ConfigError(f"model.weights={weights!r}: timm models take local weights only (model.weights_path)")
        names = timm.list_models()
        if name not in names:
            raise unknown_name(name, names, "timm")
        try:
            net = timm.create_model(name, pretrained=False, num_classes=0, img_size=size)
        except TypeError:  # only models with a fixed input side take img_size
            net = timm.create_model(name, pretrained=False, num_classes=0)
        if weights_path:
            state = {
                k: v
                for k, v in read_state_dict(weights_path).items()
                if not k.startswith(str(getattr(net, "default_cfg", {}).get("classifier", "head")))
            }
            try:
                net.load_state_dict(state)
            except RuntimeError as err:
                raise ConfigError(
                    f"model.weights_path={weights_path}: not {name} weights ({str(err).splitlines()[0]})"
                ) from None
        features = getattr(net, "head_hidden_size", 0) or getattr(net, "num_features", 0)  # after any pre-logits layer
        return net, int(features), size


def _weights_entry(name: str, enum: type[tvm.WeightsEnum], weights: str) -> tvm.WeightsEnum:
    try:
        return enum[weights]
    except KeyError:
        allowed = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ConfigError(f"model.weights={weights!r} is not a weight of {name}; allowed: {allowed}") from None


def load_weights(name: str, weights: tvm.WeightsEnum, weights_path: str | None) -> dict[str, Tensor]:
    """ImageNet weights of `name`: from `weights_path`, else the torch cache or a download."""
    if weights_path:
        return read_state_dict(weights_path)
    url = weights.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"model.weights={weights.name}: cannot get the {name} ImageNet weights ({reason}); offline, download "
            f"{url} elsewhere and either put it at {cached} or pass model.weights_path=FILE"
        ) from None


def read_state_dict(weights_path: str) -> dict[str, Tensor]:
    """A state dict from a local file (torch.save or safetensors), one line if it is not one."""
    path = Path(weights_path)
    if not path.is_file():
        raise ConfigError(f"model.weights_path={weights_path} is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle and zip errors vary
        raise ConfigError(f"model.weights_path={weights_path}: not a torch state dict ({err})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights_path={weights_path}: holds {type(state).__name__}, not a state dict")
    return state
