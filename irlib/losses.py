"""Feature extractors and losses shared by the papers: VGG features, perceptual loss, and the
ratio-form contrastive loss used both by AECR-Net's CR (VGG) and DINO-IR's DPC (DINOv2)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision index of each named ReLU in the VGG "features" Sequential
VGG_LAYERS = {
    "vgg16": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29},
    "vgg19": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
              "relu5_2": 31, "relu5_3": 33, "relu5_4": 35},
}


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    m = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - m) / s


class VGGFeatures(nn.Module):
    """Frozen VGG returning the activations at named ReLUs, input RGB in [0, 1].

    ``pretrained=True`` loads torchvision's ImageNet weights (``VGG19_Weights.IMAGENET1K_V1`` /
    ``VGG16_Weights.IMAGENET1K_V1``); ``pretrained=False`` keeps a random initialisation, which is what
    the offline smoke profile uses (and labels as such: numbers from it say nothing about the paper).
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 pretrained: bool = True, weights_path: str | None = None):
        super().__init__()
        import torchvision

        if arch not in VGG_LAYERS:
            raise ValueError(f"arch must be vgg16 or vgg19, got {arch}")
        idx = [VGG_LAYERS[arch][n] for n in layers]
        if pretrained and weights_path is None:
            enum = {"vgg16": torchvision.models.VGG16_Weights, "vgg19": torchvision.models.VGG19_Weights}[arch]
            net = getattr(torchvision.models, arch)(weights=enum.IMAGENET1K_V1)
        else:
            net = getattr(torchvision.models, arch)(weights=None)
            if weights_path is not None:
                net.load_state_dict(torch.load(weights_path, map_location="cpu"))
        self.features = net.features[: max(idx) + 1].eval().requires_grad_(False)
        self.idx = idx
        self.layers = tuple(layers)
        self.pretrained = bool(pretrained or weights_path)

    def train(self, mode: bool = True):  # always frozen in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = imagenet_normalize(x)
        out = []
        want = set(self.idx)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in want:
                out.append(h)
        return out


def ratio_contrastive(f_out: Sequence[torch.Tensor], f_pos: Sequence[torch.Tensor], f_neg: Sequence[torch.Tensor],
                      weights: Sequence[float], eps: float = 1e-7) -> torch.Tensor:
    """sum_i w_i * L1(f_out_i, f_pos_i) / (L1(f_out_i, f_neg_i) + eps); positives and negatives are detached."""
    total = f_out[0].new_zeros(())
    for w, o, p, n in zip(weights, f_out, f_pos, f_neg):
        total = total + w * F.l1_loss(o, p.detach()) / (F.l1_loss(o, n.detach()) + eps)
    return total


class ContrastiveRegularization(nn.Module):
    """AECR-Net's CR loss: VGG19 relu1_1..relu5_1, weights 1/32,1/16,1/8,1/4,1; positive = clear image,
    negative = hazy input. Usable as a trainer term: ``fn(out, batch, model)``."""

    def __init__(self, vgg: VGGFeatures | None = None, weights=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), pretrained: bool = True):
        super().__init__()
        self.vgg = vgg or VGGFeatures("vgg19", pretrained=pretrained)
        self.weights = weights

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        with torch.no_grad():
            fp, fn = self.vgg(batch["gt"]), self.vgg(batch["lq"])
        return ratio_contrastive(self.vgg(out), fp, fn, self.weights)


class PerceptualLoss(nn.Module):
    """L1 between VGG16 features (relu1_2, relu2_2, relu3_3) of output and target (Johnson et al.)."""

    def __init__(self, vgg: VGGFeatures | None = None, pretrained: bool = True):
        super().__init__()
        self.vgg = vgg or VGGFeatures("vgg16", ("relu1_2", "relu2_2", "relu3_3"), pretrained=pretrained)

    def forward(self, out, batch, model=None):
        with torch.no_grad():
            ft = self.vgg(batch["gt"])
        return sum(F.l1_loss(a, b) for a, b in zip(self.vgg(out), ft))


class PatchDiscriminator(nn.Module):
    """Small PatchGAN discriminator for the adversarial-loss baseline (DiffLoss Table 3)."""

    def __init__(self, ch: int = 32, n: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = ch
        for _ in range(n - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.InstanceNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x * 2 - 1)


class AdversarialLoss(nn.Module):
    """Least-squares GAN generator loss with its own PatchGAN discriminator. Each call first takes one
    discriminator step on (gt, out.detach()), then returns the generator term for the restorer."""

    def __init__(self, lr: float = 1e-4):
        super().__init__()
        self.d = PatchDiscriminator()
        self.opt = torch.optim.Adam(self.d.parameters(), lr=lr, betas=(0.5, 0.999))

    def forward(self, out, batch, model=None):
        self.d.to(out.device)
        with torch.enable_grad():
            real, fake = self.d(batch["gt"]), self.d(out.detach())
            d_loss = ((real - 1) ** 2).mean() + (fake ** 2).mean()
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
        self.d.requires_grad_(False)
        g = ((self.d(out) - 1) ** 2).mean()
        self.d.requires_grad_(True)
        return g


def l1(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    return F.l1_loss(out, batch["gt"])


def mse(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    return F.mse_loss(out, batch["gt"])


LOSSES: dict[str, Callable] = {"l1": l1, "mse": mse}
