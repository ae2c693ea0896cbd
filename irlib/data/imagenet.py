"""ImageNet input normalisation (torchvision's preprocessing mean and std), shared by every torchvision /
timm feature network irlib feeds."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> ImageNet-standardised channels."""
    m = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - m) / s
