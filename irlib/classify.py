"""DiffLoss Table 2: classify restored degraded CUB-200-2011 images with CUB-trained VGG16 / ResNet50.

The paper degrades CUB with "the synthetic methods of [26]" (fog, rain, low light) without giving their
parameters; we use irlib's seeded ``haze`` / ``rain`` / ``lowlight`` degradations (``irlib.data.degrade``)
and say so in every row. Classifiers start from torchvision's ImageNet weights (``IMAGENET1K_V1``) with a
new 200-way head and are fine-tuned on the clean CUB training split; the paper does not give its recipe,
so ours (SGD, lr 0.01 head / 0.001 body, 224 px, a few epochs) is a stated choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import DatasetError, degrade, load_image
from .losses import imagenet_normalize
from .train import atomic_save, padded_forward


@dataclass(frozen=True)
class CUBItem:
    path: Path
    label: int  # 0-based class index
    train: bool


def load_cub(root: str | Path) -> list[CUBItem]:
    """Parse ``<root>/CUB_200_2011`` (images.txt, image_class_labels.txt, train_test_split.txt)."""
    base = Path(root) / "CUB_200_2011"
    files = {n: base / n for n in ("images.txt", "image_class_labels.txt", "train_test_split.txt")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"CUB-200-2011 not found: missing {', '.join(missing)}; run `irlib data fetch cub` "
                           f"(see data_manifests/cub.yaml)")

    def table(p: Path) -> dict[str, str]:
        rows = {}
        for ln, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                parts = line.split(maxsplit=1)
                if len(parts) != 2:
                    raise DatasetError(f"{p}:{ln}: expected '<image id> <value>', got {line!r}")
                rows[parts[0]] = parts[1].strip()
        return rows

    names, labels, split = (table(files[n]) for n in ("images.txt", "image_class_labels.txt", "train_test_split.txt"))
    items = []
    for iid, rel in names.items():
        if iid not in labels or iid not in split:
            raise DatasetError(f"CUB image id {iid} ({rel}) has no class label or split entry")
        path = base / "images" / rel
        if not path.is_file():
            raise DatasetError(f"CUB image {path} is listed in images.txt but missing")
        items.append(CUBItem(path, int(labels[iid]) - 1, split[iid] == "1"))
    return items


def load_batch(items: Sequence[CUBItem], size: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """Images resized (shorter side) and centre-cropped to ``size``, in [0, 1], with their labels."""
    imgs = []
    for it in items:
        x = load_image(it.path)[None]
        h, w = x.shape[-2:]
        s = size / min(h, w)
        x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False)
        i, j = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        imgs.append(x[0, :, i:i + size, j:j + size].clamp(0, 1))
    return torch.stack(imgs), torch.tensor([it.label for it in items])


def degrade_set(images: torch.Tensor, task: str, seed: int = 0) -> torch.Tensor:
    """The fixed degraded copy of a test set (same seed, same degradation, every run)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([degrade(images[i:i + 1], task, g) for i in range(len(images))])


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


def synth_cub(base: str | Path, n_classes: int = 2, per_class: int = 3, side: int = 64) -> Path:
    """Write a tiny CUB-200-2011 look-alike under ``base/CUB_200_2011`` (list files + images), for tests and the
    rehearsal profile: ``per_class`` images per class, the first of each class in the test split."""
    from PIL import Image

    from .data.splits import _synth_image

    root = Path(base) / "CUB_200_2011"
    rng = np.random.default_rng(0)
    names, labels, split = [], [], []
    for c in range(n_classes):
        folder = f"{c + 1:03d}.Class_{c + 1}"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            iid = len(names) + 1
            rel = f"{folder}/img_{c}_{k}.jpg"
            Image.fromarray(_synth_image(c * per_class + k, side, rng)).save(root / "images" / rel)
            names.append(f"{iid} {rel}")
            labels.append(f"{iid} {c + 1}")
            split.append(f"{iid} {0 if k == 0 else 1}")
    for fname, lines in (("images.txt", names), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (root / fname).write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c + 1} {c + 1:03d}.Class_{c + 1}" for c in range(n_classes)) + "\n")
    return root
