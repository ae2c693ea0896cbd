"""Profiles and the train-then-evaluate loop the notebooks share (kept here so notebooks stay thin)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd
import torch

from .data import DatasetError, PairedFolder, PairedPatches, PatchBatches, load_image, make_test_pairs, split_samples
from .data.datasets import IMAGE_SUFFIXES
from .train import Trainer, evaluate, seed_everything

if TYPE_CHECKING:
    from .schedules import Schedule


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
    # Paper-scale: pretrained VGG/DINOv2/BERT/ADM, manifest datasets. DiffLoss states its schedule (40K
    # iterations, set in its notebook); SPN retrains backbones with their released schedules
    # (irlib.schedules.ORIGINAL); elsewhere 300K steps is our default, not a number from the papers.
    "full": Profile("full", steps=300_000, patch=128, batch=8, image_size=0, pretrained=True, seeds=3, lr=2e-4),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}")
    return PROFILES[name]


def offline_split(p: Profile) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Train/test clean images from the offline photo set."""
    return split_samples(p.image_size or 256, n_test=3)


# Benchmarks by the name the papers print: (manifest folder under data_root, sub-folder(s), lq->gt stem rule).
CLEAN_SETS = {
    "CBSD68": ("cbsd68", "CBSD68-dataset-master/CBSD68/original_png"), "BSD68": ("cbsd68", "CBSD68-dataset-master/CBSD68/original_png"),
    "Urban100": ("sr_benchmark", "benchmark/Urban100/HR"), "Set14": ("sr_benchmark", "benchmark/Set14/HR"),
    "B100": ("sr_benchmark", "benchmark/B100/HR"), "Manga109": ("manga109", "Manga109/HR"), "BSD400": ("bsd400", "BSD400"),
    "WED": ("wed", "pristine_images"), "DIV2K": ("div2k", "DIV2K_train_HR"),
    "DID": ("did", "test/medium/clean"), "DID-train-clean": ("did", "train/clean"),
}
PAIRED_SETS = {
    "Rain100L": ("rain100l", "test/rainy", "test/norain", None), "Rain100L-train": ("rain100l", "train/rainy", "train/norain", None),
    "Rain100H": ("rain100h", "test/rainy", "test/norain", None),
    "SOTS-indoor": ("reside_sots", "indoor/hazy", "indoor/gt", lambda s: s.split("_")[0]),
    "SOTS": ("reside_sots", "outdoor/hazy", "outdoor/gt", lambda s: s.split("_")[0]),
    "ITS": ("reside_its", "hazy", "clear", lambda s: s.split("_")[0]),
    "Dense-Haze": ("dense_haze", "test/hazy", "test/GT", lambda s: s.replace("_hazy", "_GT")),
    "Dense-Haze-train": ("dense_haze", "train/hazy", "train/GT", lambda s: s.replace("_hazy", "_GT")),
    "Rain100H-train": ("rain100h", "train/rainy", "train/norain", None),
    "OTS": ("reside_ots", "hazy", "clear", lambda s: s.split("_")[0]),
    "DID-train": ("did", "train/rainy", "train/clean", None),
    "DID-test": ("did", "test/all/rainy", "test/all/clean", None),
    "DDN": ("ddn", "test/rain", "test/gt", lambda s: s.split("_")[0]),
    "DDN-train": ("ddn", "train/rain", "train/gt", lambda s: s.split("_")[0]),
    "SPA": ("spa", "test/rain", "test/gt", lambda s: s.replace("norain", "").replace("rain", "").strip("_-")),
    "SPA-train": ("spa", "train/rain", "train/gt", lambda s: s.replace("norain", "").replace("rain", "").strip("_-")),
    "DID-High": ("did", "test/heavy/rainy", "test/heavy/clean", None),
    "DID-Medium": ("did", "test/medium/rainy", "test/medium/clean", None),
    "LOL": ("lol", "eval15/low", "eval15/high", None), "LOL-train": ("lol", "our485/low", "our485/high", None),
}


def clean_images(data_root: str | Path, name: str, limit: int | None = None) -> list[torch.Tensor]:
    """Clean images of a benchmark folder (for synthetic noise/blur/SR pairs)."""
    if name not in CLEAN_SETS:
        raise DatasetError(f"no clean-image loader for {name!r}; known: {sorted(CLEAN_SETS)}")
    man, sub = CLEAN_SETS[name]
    folder = Path(data_root) / man / sub
    if not folder.is_dir():
        raise DatasetError(f"{name}: folder {folder} is missing; run `irlib data fetch {man}` (see data_manifests/{man}.yaml)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise DatasetError(f"{name}: no images in {folder}")
    return [load_image(f) for f in files]


@dataclass
class MixedBatches:
    """Round-robin over several batch sources (multi-task training from different datasets)."""

    sources: Sequence[Callable[[int], dict]]
    seed: int = 0
    rank: int = 0

    def __call__(self, step: int) -> dict:
        src = self.sources[step % len(self.sources)]
        for attr in ("seed", "rank"):
            if hasattr(src, attr):
                setattr(src, attr, getattr(self, attr))
        return src(step // len(self.sources))


def multi_task_data(p: Profile, spec: dict[str, str], data_root: str | Path, offline: Sequence[torch.Tensor]):
    """Training data for several tasks: ``spec`` maps a task (noise25, rain, haze, ...) to the dataset name it
    is trained on. Smoke: the offline photos with every task synthesised. Full: real pairs where the set is
    paired, synthetic degradations of clean images otherwise, mixed round-robin."""
    if p.name == "smoke":
        return list(offline)
    sources = []
    for task, name in spec.items():
        src = train_data(p, name, data_root, offline, task)
        sources.append(src if isinstance(src, PairedPatches) else PatchBatches(src, p.patch, p.batch, (task,)))
    return MixedBatches(sources)


def try_pairs(results, table: str, p: Profile, name: str, task: str, data_root, offline) -> list | None:
    """:func:`eval_pairs`, or ``None`` (with a skipped row recorded) when the data is missing."""
    with skip_missing(results, table, paper_dataset=name):
        return eval_pairs(p, name, task, data_root, offline)
    return None


def eval_pairs(p: Profile, name: str, task: str, data_root: str | Path, offline: Sequence[torch.Tensor]) -> list:
    """Test pairs for the paper's test set ``name``: the offline photos in smoke; in full, the benchmark's
    real pairs, or its clean images degraded by ``task`` with a fixed seed (noise, blur, SR)."""
    if p.name == "smoke":
        return make_test_pairs(offline, task)
    if name in PAIRED_SETS:
        man, lq, gt, rule = PAIRED_SETS[name]
        return real_pairs(data_root, man, lq, gt, match=rule)
    imgs = clean_images(data_root, name)
    if task.startswith("srx"):
        s = int(task[3:])
        imgs = [x[:, : x.shape[1] // s * s, : x.shape[2] // s * s] for x in imgs]
    return make_test_pairs(imgs, task)


def train_data(p: Profile, name: str, data_root: str | Path, offline: Sequence[torch.Tensor], task: str = ""):
    """Training source: clean images (degraded on the fly) or, for real paired sets, a :class:`PairedPatches`."""
    if p.name == "smoke":
        return list(offline)
    if name in PAIRED_SETS:
        man, lq, gt, rule = PAIRED_SETS[name]
        return PairedPatches(real_pairs(data_root, man, lq, gt, match=rule), p.patch, p.batch, task=task)
    return clean_images(data_root, name)


def real_pairs(data_root: str | Path, dataset: str, lq: str, gt: str, scale: int = 1, match=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lq, gt) pairs of a fetched benchmark (full profile); raises a clear DatasetError when absent."""
    ds = PairedFolder(Path(data_root) / dataset / lq, Path(data_root) / dataset / gt, scale=scale, match=match)
    return [(it["lq"], it["gt"]) for it in (ds[i] for i in range(len(ds)))]


_CKPT = {"root": None, "count": 0}


def enable_checkpoints(root: str | Path | None, enabled: bool = True) -> None:
    """Give every later :func:`train_eval` call its own resumable checkpoint folder ``root/run-NNN``.

    Runs are numbered in call order, which is fixed for a notebook, so re-executing a notebook after a crash
    skips the finished runs (their final checkpoint is loaded) and resumes the interrupted one."""
    _CKPT["root"] = Path(root) if (root and enabled) else None
    _CKPT["count"] = 0


def train_eval(model: torch.nn.Module, terms: dict, train_imgs: Sequence[torch.Tensor], tasks: Sequence[str],
               test_pairs: Sequence, p: Profile, seed: int, *, forward: Callable | None = None,
               eval_forward: Callable | None = None, steps: int | None = None, device: str = "cpu",
               pad_to: int = 8, metric_kw: dict | None = None, ckpt_dir: str | Path | None = None,
               lr: float | None = None, schedule: "Schedule | None" = None) -> tuple[pd.DataFrame, Trainer]:
    """Train ``model`` with ``terms`` on patches of ``train_imgs`` degraded by ``tasks``, then evaluate on
    ``test_pairs``. Returns per-image metrics (with a ``collapsed`` flag) and the trainer.

    ``schedule`` (an :class:`irlib.schedules.Schedule`) replaces the profile's steps, batch, patch, learning
    rate and optimiser with a backbone's original ones (and turns off our default gradient clipping)."""
    seed_everything(seed)
    if ckpt_dir is None and _CKPT["root"] is not None:
        ckpt_dir = _CKPT["root"] / f"run-{_CKPT['count']:03d}-{type(model).__name__}"
        _CKPT["count"] += 1
    if isinstance(train_imgs, (PairedPatches, MixedBatches)):
        batches = train_imgs
        batches.seed = seed
    else:
        batches = PatchBatches(list(train_imgs), p.patch, p.batch, tuple(tasks), seed=seed)
    opt: dict = {"lr": lr or p.lr, "grad_clip": 1.0}
    if schedule is not None:
        for src in getattr(batches, "sources", [batches]):
            src.patch, src.batch_size = schedule.patch, schedule.batch
        opt = {"lr": schedule.lr, "grad_clip": None, "optimizer": schedule.optimizer, "betas": schedule.betas,
               "weight_decay": schedule.weight_decay, "scheduler": schedule.scheduler, "ema_decay": schedule.ema}
    n = steps or (schedule.steps if schedule else p.steps)
    tr = Trainer(model, batches, terms, device=device, forward=forward, on_collapse="stop",
                 progress=p.name != "smoke", ckpt_dir=ckpt_dir, ckpt_every=max(1, min(2000, n // 4)) if ckpt_dir else 0,
                 **opt)
    tr.fit(n)
    df = evaluate(tr.eval_model(), test_pairs, forward=eval_forward or forward, device=device, pad_to=pad_to,
                  metric_kw=metric_kw)
    df["collapsed"] = tr.collapsed
    return df, tr


class skip_missing:
    """Context manager: a missing dataset skips one table section (recorded as a row with no value and the
    reason in ``notes``) instead of failing the whole notebook."""

    def __init__(self, results, table: str, method: str = "", metric: str = "PSNR", paper_dataset: str = ""):
        self.results, self.table, self.method, self.metric = results, table, method, metric
        self.paper_dataset = paper_dataset

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, DatasetError):
            print(f"[skipped {self.table}] {err}")
            self.results.add(self.table, self.method, self.metric, None, paper_dataset=self.paper_dataset,
                             notes=f"skipped: {err}")
            return True
        return False


def test_set(imgs: Sequence[torch.Tensor], task: str, seed: int = 1234):
    return make_test_pairs(imgs, task, seed)
