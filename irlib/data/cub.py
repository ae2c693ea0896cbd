"""CUB-200-2011 as DiffLoss Table 2 reads it: the list files, the train/test split, resized centre crops, and a
tiny look-alike for tests and the rehearsal."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DatasetError, load_image, synth_image


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


def synth_cub(base: str | Path, n_classes: int = 2, per_class: int = 3, side: int = 64) -> Path:
    """Write a tiny CUB-200-2011 look-alike under ``base/CUB_200_2011`` (list files + images), for tests and the
    rehearsal profile: ``per_class`` images per class, the first of each class in the test split."""
    from PIL import Image


    root = Path(base) / "CUB_200_2011"
    rng = np.random.default_rng(0)
    names, labels, split = [], [], []
    for c in range(n_classes):
        folder = f"{c + 1:03d}.Class_{c + 1}"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            iid = len(names) + 1
            rel = f"{folder}/img_{c}_{k}.jpg"
            Image.fromarray(synth_image(c * per_class + k, side, rng)).save(root / "images" / rel)
            names.append(f"{iid} {rel}")
            labels.append(f"{iid} {c + 1}")
            split.append(f"{iid} {0 if k == 0 else 1}")
    for fname, lines in (("images.txt", names), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (root / fname).write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c + 1} {c + 1:03d}.Class_{c + 1}" for c in range(n_classes)) + "\n")
    return root
