"""Profiles and the train-then-evaluate loop the notebooks share (kept here so notebooks stay thin)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from .data import PairedFolder, PatchBatches, make_test_pairs, split_samples
from .train import Trainer, evaluate, seed_everything


@dataclass(frozen=True)
class Profile:
    name: str
    steps: int
    patch: int
    batch: int
    image_size: int
    pretrained: bool
    seeds: int
    lr: float

    @property
    def weights(self) -> str:
        return "pretrained" if self.pretrained else "random"


PROFILES = {
    # CPU minutes: tiny models, offline photos, random-initialised feature networks.
    "smoke": Profile("smoke", steps=24, patch=32, batch=4, image_size=64, pretrained=False, seeds=2, lr=1e-3),
    # Paper-scale: pretrained VGG/DINOv2/BERT/ADM, manifest datasets; schedules are set per notebook.
    "full": Profile("full", steps=300_000, patch=128, batch=8, image_size=0, pretrained=True, seeds=3, lr=2e-4),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}")
    return PROFILES[name]


def offline_split(p: Profile) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Train/test clean images from the offline photo set."""
    return split_samples(p.image_size or 256, n_test=3)


def real_pairs(data_root: str | Path, dataset: str, lq: str, gt: str, scale: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lq, gt) pairs of a fetched benchmark (full profile); raises a clear DatasetError when absent."""
    ds = PairedFolder(Path(data_root) / dataset / lq, Path(data_root) / dataset / gt, scale=scale)
    return [(it["lq"], it["gt"]) for it in (ds[i] for i in range(len(ds)))]


def train_eval(model: torch.nn.Module, terms: dict, train_imgs: Sequence[torch.Tensor], tasks: Sequence[str],
               test_pairs: Sequence, p: Profile, seed: int, *, forward: Callable | None = None,
               eval_forward: Callable | None = None, steps: int | None = None, device: str = "cpu",
               pad_to: int = 8, metric_kw: dict | None = None, ckpt_dir: str | Path | None = None,
               lr: float | None = None) -> tuple[pd.DataFrame, Trainer]:
    """Train ``model`` with ``terms`` on patches of ``train_imgs`` degraded by ``tasks``, then evaluate on
    ``test_pairs``. Returns per-image metrics (with a ``collapsed`` flag) and the trainer."""
    seed_everything(seed)
    batches = PatchBatches(train_imgs, p.patch, p.batch, tuple(tasks), seed=seed)
    tr = Trainer(model, batches, terms, lr=lr or p.lr, device=device, forward=forward, on_collapse="stop",
                 progress=False, ckpt_dir=ckpt_dir, ckpt_every=max(1, (steps or p.steps) // 4) if ckpt_dir else 0,
                 grad_clip=1.0)
    tr.fit(steps or p.steps)
    df = evaluate(tr.eval_model(), test_pairs, forward=eval_forward or forward, device=device, pad_to=pad_to,
                  metric_kw=metric_kw)
    df["collapsed"] = tr.collapsed
    return df, tr


def test_set(imgs: Sequence[torch.Tensor], task: str, seed: int = 1234):
    return make_test_pairs(imgs, task, seed)
