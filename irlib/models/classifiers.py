"""torchvision classifiers and feature extractors used by DiffLoss: the CUB classifiers of Table 2 (ImageNet
weights, a new head) and the ResNet-50 features of the Fig. 2 h-space study."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.imagenet import imagenet_normalize


def make_classifier(arch: str, n_classes: int, pretrained: bool = True) -> nn.Module:
    """A torchvision classifier (``vgg16``, ``resnet50``, ...) with a new ``n_classes`` head."""
    import torchvision

    weights = "IMAGENET1K_V1" if pretrained else None
    net = getattr(torchvision.models, arch)(weights=weights)
    if hasattr(net, "fc"):
        net.fc = nn.Linear(net.fc.in_features, n_classes)
    else:
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, n_classes)
    return net


class ResNetFeatures(nn.Module):
    """Global-average-pooled (2048-d) features of a torchvision ResNet for RGB images in [0, 1].

    Images are ImageNet-normalised first (``irlib.losses.imagenet_normalize``, torchvision's preprocessing
    mean/std), as every other torchvision network in irlib is fed. ``model=None`` builds ResNet-50 with
    ``weights`` (``"IMAGENET1K_V1"``, torchvision's classic ``pretrained=True`` weights, which the paper's
    "ResNet50 pre-trained on ImageNet" most plausibly means; ``None`` = random, for smoke runs). A given
    ``model`` is shared, not copied. Images are not resized or cropped: the whole regenerated image counts."""

    def __init__(self, model: nn.Module | None = None, weights: str | None = "IMAGENET1K_V1"):
        super().__init__()
        import torchvision

        if model is None:
            model = torchvision.models.resnet50(weights=weights)
        if not isinstance(model, torchvision.models.ResNet):
            raise TypeError(f"ResNetFeatures needs a torchvision ResNet, got {type(model).__name__}")
        self.body = nn.Sequential(*list(model.children())[:-1])  # everything up to and including avgpool

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return imagenet_normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.preprocess(x)).flatten(1)
