"""DiffLoss Table 2: classify restored degraded CUB-200-2011 images with CUB-trained VGG16 / ResNet50.

The paper degrades CUB with "the synthetic methods of [26]" (fog, rain, low light) without giving their
parameters; we use irlib's seeded ``haze`` / ``rain`` / ``lowlight`` degradations (``irlib.data.degrade``)
and say so in every row. Classifiers start from torchvision's ImageNet weights (``IMAGENET1K_V1``) with a
new 200-way head and are fine-tuned on the clean CUB training split; the paper does not give its recipe,
so ours (SGD, lr 0.01 head / 0.001 body, 224 px, a few epochs) is a stated choice.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import degrade
from .data.cub import CUBItem, load_batch, load_cub, synth_cub  # noqa: F401  (re-exported)
from .data.imagenet import imagenet_normalize
from .models.classifiers import make_classifier  # noqa: F401  (re-exported)
from .train import atomic_save, padded_forward


def degrade_set(images: torch.Tensor, task: str, seed: int = 0) -> torch.Tensor:
    """The fixed degraded copy of a test set (same seed, same degradation, every run)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([degrade(images[i:i + 1], task, g) for i in range(len(images))])


def _head(net: nn.Module) -> nn.Module:
    return net.fc if hasattr(net, "fc") else net.classifier[-1]


def finetune(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 5, batch: int = 32,
             lr: float = 0.01, device: str = "cpu", seed: int = 0, ckpt: str | Path | None = None,
             progress: bool = True) -> nn.Module:
    """Fine-tune on (images, labels) with SGD (head at ``lr``, body at ``lr/10``) and random flips.
    With ``ckpt`` the finished weights are saved there and reused on the next call."""
    if ckpt and Path(ckpt).is_file():
        net.load_state_dict(torch.load(ckpt, map_location="cpu"))
        return net.eval().to(device)
    net.to(device).train()
    head = list(_head(net).parameters())
    body = [p for p in net.parameters() if all(p is not h for h in head)]
    opt = torch.optim.SGD([{"params": head, "lr": lr}, {"params": body, "lr": lr / 10}], momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, len(images) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in tqdm(range(steps), desc="fine-tune classifier", disable=not progress, leave=False):
        idx = torch.randint(len(images), (min(batch, len(images)),), generator=g)
        x = images[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(net(imagenet_normalize(x.to(device))), labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if ckpt:
        atomic_save(net.state_dict(), ckpt)
    return net.eval()


@torch.no_grad()
def top1(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 64, device: str = "cpu") -> float:
    """Top-1 accuracy in percent."""
    net.eval().to(device)
    hits = 0
    for i in range(0, len(images), batch):
        pred = net(imagenet_normalize(images[i:i + batch].to(device))).argmax(1).cpu()
        hits += int((pred == labels[i:i + batch]).sum())
    return 100.0 * hits / max(1, len(images))


@torch.no_grad()
def restore(model: nn.Module, images: torch.Tensor, batch: int = 8, device: str = "cpu", pad_to: int = 16) -> torch.Tensor:
    """Run a restorer over a stack of images (reflect-padded to a multiple of ``pad_to``), clamped to [0, 1]."""
    model.eval().to(device)
    return torch.cat([padded_forward(model, images[i:i + batch].to(device), pad_to).clamp(0, 1).cpu()
                      for i in range(0, len(images), batch)])


