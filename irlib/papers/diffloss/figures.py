"""DiffLoss's studies (Table 2, Fig. 2, Fig. 7) and figures (Figs. 1b, 2a, 2b, 5, 6, 7), as the plan
(:mod:`irlib.papers.diffloss.plan`) declares them. Studies take a :class:`irlib.engine.jobs.StudyContext` and
return tidy rows; figures take a :class:`irlib.engine.drawing.FigureContext` and save through it.

The CUB classifiers (VGG16, ResNet50 fine-tuned on clean CUB) are shared by Table 2 and Fig. 7: each is
fine-tuned once per configuration and kept in ``<run store>/_cub/`` (under a lock, so two studies running at
the same time fine-tune it once)."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ...engine.spec import Limits, RunSpec, TestSet, digest
from .plan import CUB_SETTING, DEGRADATION

TOP1 = {"vgg16": "Top-1 VGG16", "resnet50": "Top-1 ResNet50"}
HSPACE_CSV, HSPACE_IMAGES = "hspace.csv", "hspace_images.pt"


# ------------------------------------------------------------------------------------------ CUB
@contextlib.contextmanager
def _locked(ctx, name: str):
    """An exclusive lock ``<run store>/_cub/.<name>.lock`` (``filelock``): studies running side by side (local
    executor) build a shared file once."""
    from filelock import FileLock

    root = Path(ctx.store.root) / "_cub"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        yield root


def _cub_items(ctx, ref: str):
    """CUB-200-2011's items: ``<data_root>/<manifest>`` for a data reference; for ``offline`` (smoke) the tiny
    look-alike of :func:`irlib.classify.synth_cub`, written once under ``<run store>/_cub/``."""
    from ... import classify

    if ref == "offline":
        with _locked(ctx, "smoke-data") as root:
            if not (root / "smoke-data" / "CUB_200_2011" / "images.txt").is_file():
                classify.synth_cub(root / "smoke-data", n_classes=2, per_class=3, side=64)
        return classify.load_cub(root / "smoke-data")
    return classify.load_cub(Path(ctx.data_root) / ref.split(":")[0])


def _capped(sched, limits: Limits | None) -> tuple[int, int]:
    """(steps, batch) of the classifier schedule under the rehearsal caps."""
    if limits is None:
        return sched.steps, sched.batch
    return min(sched.steps, limits.steps), min(sched.batch, limits.batch)


def cub_classifier(ctx, arch: str, ref: str, sched, side: int, seed: int):
    """``arch`` (``vgg16``/``resnet50``) with a new head, fine-tuned on the clean CUB training split at ``side``
    pixels with ``sched``'s steps, batch and learning rate (:func:`irlib.classify.finetune`); ImageNet weights
    when the study's feature networks are pretrained, random otherwise (built under a seed fixed by ``arch`` and
    ``seed``). Fine-tuned from ImageNet weights it is cached under ``<run store>/_cub/``; from random weights
    (smoke, rehearsal: a few steps) it is rebuilt from its seed instead of writing hundreds of MB of noise."""
    from ... import classify
    from ...engine.features import seeded

    items = _cub_items(ctx, ref)
    train = [c for c in items if c.train]
    n_classes = 1 + max(c.label for c in items)
    steps, batch = _capped(sched, ctx.spec.limits)
    tag = digest({"arch": arch, "ref": ref, "data": str(Path(ctx.data_root).resolve()), "sched": sched, "side": side,
                  "seed": seed, "weights": ctx.fb.weights, "steps": steps, "batch": batch, "n": len(train)})
    net = seeded(("cub-classifier", arch, n_classes, ctx.fb.weights, seed),
                 lambda: classify.make_classifier(arch, n_classes, pretrained=ctx.fb.pretrained))
    if not ctx.fb.pretrained:
        x, y = classify.load_batch(train, side)
        epochs = max(1, round(steps / max(1, len(train) // batch)))
        with torch.enable_grad():  # the studies run under no_grad
            return classify.finetune(net, x, y, epochs=epochs, batch=batch, lr=sched.lr, device=ctx.device,
                                     seed=seed, ckpt=None, progress=False)
    with _locked(ctx, f"{arch}-{tag}") as root:
        ckpt = root / f"{arch}-{tag}.pt"
        if ckpt.is_file():
            net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
            return net.eval().to(ctx.device)
        x, y = classify.load_batch(train, side)
        epochs = max(1, round(steps / max(1, len(train) // batch)))
        with torch.enable_grad():  # the studies run under no_grad
            return classify.finetune(net, x, y, epochs=epochs, batch=batch, lr=sched.lr, device=ctx.device,
                                     seed=seed, ckpt=ckpt, progress=False)


def _restorer_pad(run: RunSpec) -> int:
    from ...models import zoo

    return zoo.pad(run.net, run.size)


@torch.no_grad()
def cub_top1(ctx, cub: str, tasks: Sequence[str], archs: Sequence[str], classifier, side: int,
             seed: int = 0) -> pd.DataFrame:
    """DiffLoss Table 2: top-1 (%) of each CUB classifier on the CUB test split degraded by each task (seeded, as
    :func:`irlib.classify.degrade_set`) and restored by the task's run without / with DiffLoss (``deps`` in that
    order per task). Also rows for the clean and the degraded, unrestored test images (context, no reference)."""
    from ... import classify

    test = [c for c in _cub_items(ctx, cub) if not c.train]
    x, y = classify.load_batch(test, side)
    nets = {a: cub_classifier(ctx, a, cub, classifier, side, seed) for a in archs}
    rows = []

    def add(method: str, setting: str, images: torch.Tensor, notes: str = "") -> None:
        for a, net in nets.items():
            rows.append({"table": "Table 2", "method": method, "setting": setting, "dataset": "CUB (degraded)",
                         "metric": TOP1[a], "value": classify.top1(net, images, y, device=ctx.device),
                         "n_images": len(y), "notes": notes})

    add("clean (no degradation)", "", x, "context row: the classifiers on the clean test split")
    for i, task in enumerate(tasks):
        lq = classify.degrade_set(x, task, seed)
        add("degraded (no restoration)", CUB_SETTING[task], lq, "context row: no restorer")
        for tag, run in zip(("w/o", "w/"), ctx.spec.deps[2 * i: 2 * i + 2]):
            restored = classify.restore(ctx.model(run), lq, device=ctx.device, pad_to=_restorer_pad(run))
            add(f"{tag} DiffLoss ({run.net})", CUB_SETTING[task], restored, f"restored at {side}x{side}")
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ Fig. 7
@torch.no_grad()
def gamma_sweep(ctx, gammas: Sequence[float], testset: TestSet, cub: str, classifier, side: int,
                seed: int = 0) -> pd.DataFrame:
    """Fig. 7: for each DiffLoss weight γ (``deps`` in the same order, λ=0), PSNR of the selected MSBDN on the
    Dense-Haze test set and top-1 (%) of the CUB VGG16 on the hazy CUB test split it restores."""
    from ... import classify
    from ...engine.runner import evaluate_run, test_pairs
    from ...engine.spec import EvalSpec

    if len(gammas) != len(ctx.spec.deps):
        raise ValueError(f"gamma_sweep: {len(gammas)} gammas for {len(ctx.spec.deps)} runs")
    pairs = test_pairs(testset, ctx.data_root)
    test = [c for c in _cub_items(ctx, cub) if not c.train]
    x, y = classify.load_batch(test, side)
    hazy = classify.degrade_set(x, "haze", seed)
    vgg = cub_classifier(ctx, "vgg16", cub, classifier, side, seed)
    rows = []
    for g, run in zip(gammas, ctx.spec.deps):
        model = ctx.model(run)
        res = evaluate_run(model, run, EvalSpec(testset), pairs, ctx.fb, ctx.device)
        psnr = float(np.mean(res["per_image"]["PSNR"]))
        acc = classify.top1(vgg, classify.restore(model, hazy, device=ctx.device, pad_to=_restorer_pad(run)), y,
                            device=ctx.device)
        note = f"checkpoint of step {ctx.store.done(run.key()).get('best_step')} (best test PSNR)"
        setting = f"gamma={g:g}; lambda=0"
        rows += [{"table": "Fig. 7", "method": "MSBDN", "setting": setting, "dataset": "Dense-Haze", "metric": "PSNR",
                  "value": psnr, "n_images": len(pairs), "notes": note},
                 {"table": "Fig. 7", "method": "MSBDN", "setting": setting + "; degradation=haze",
                  "dataset": "CUB (degraded)", "metric": "Top-1 VGG16", "value": acc, "n_images": len(y),
                  "notes": note}]
    return pd.DataFrame(rows)


def gamma_curve(ctx) -> Path:
    """Fig. 7: PSNR (left axis) and VGG16 top-1 (right axis) against γ, from the γ-sweep study."""
    import matplotlib.pyplot as plt

    df = ctx.store.study_result(ctx.spec.studies[0].key())
    psnr = df[df.metric == "PSNR"].reset_index(drop=True)
    acc = df[df.metric == "Top-1 VGG16"].reset_index(drop=True)
    gam = [s.split(";")[0].split("=")[1] for s in psnr.setting]
    x = np.arange(len(gam))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    l1 = ax.plot(x, psnr.value, "o-", color="tab:blue", label="PSNR on Dense-Haze (dB)")
    ax.set_xlabel("DiffLoss weight γ (λ = 0)")
    ax.set_ylabel("PSNR (dB)", color="tab:blue")
    ax.set_xticks(x, gam)
    ax2 = ax.twinx()
    l2 = ax2.plot(x, acc.value, "s--", color="tab:red", label="Top-1 VGG16 on hazy CUB (%)")
    ax2.set_ylabel("top-1 accuracy (%)", color="tab:red")
    lines = l1 + l2
    if "0.001" in gam:
        lines.append(ax.axvline(gam.index("0.001"), color="gray", ls=":", label="γ = 0.001 (the paper's choice)"))
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              fontsize=8, frameon=False)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return ctx.save(fig, f"MSBDN trained on Dense-Haze with L2 + γ·DiffLoss (λ = 0) for γ in {', '.join(gam)}, best "
                         f"checkpoint of the first 40K iterations: PSNR on the {psnr.n_images.iloc[0]} test images and "
                         f"top-1 of the CUB VGG16 on the {acc.n_images.iloc[0]} hazy CUB test images it restores.")


# ------------------------------------------------------------------------------------------ Fig. 2
def _at_side(unet, side: int):
    """The same UNet (shared weights) reporting ``side`` as its image size, so that the study resizes its images
    to ``side`` (the rehearsal's cheap size); the original module is left untouched."""
    if not side or side == unet.cfg.image_size:
        return unet
    view = copy.copy(unet)
    view.cfg = dataclasses.replace(unet.cfg, image_size=side)
    return view


def hspace(ctx, cub: str, tasks: Sequence[str], images: int, levels: Sequence[float], modes: Sequence[str],
           ddim_steps: int, t_start: int, side: int, seed: int = 0) -> pd.DataFrame:
    """Fig. 2 (:func:`irlib.diffloss.hspace_study`): the first ``images`` CUB test images, per task the four
    groups of :func:`irlib.diffloss.study_groups` (restorers: ``deps`` without / with DiffLoss per task), DDIM
    regenerations with h's top singular component perturbed. Writes the per-image distances (``hspace.csv``) and
    the kept regenerations (``hspace_images.pt``) for the figures; returns the per-group summary rows."""
    from ... import classify
    from . import studies as dl

    unet = _at_side(ctx.fb.adm(), side)
    test = [c for c in _cub_items(ctx, cub) if not c.train][:images]
    x, _ = classify.load_batch(test, unet.cfg.image_size)
    feats = dl.ResNetFeatures(weights="IMAGENET1K_V1" if ctx.fb.pretrained else None)
    frames, strips, inputs = [], {}, {}
    for i, task in enumerate(tasks):
        without, with_dl = ctx.spec.deps[2 * i: 2 * i + 2]
        groups = dl.study_groups(x, task, ctx.model(without), ctx.model(with_dl), seed=seed,
                                 pad_to=_restorer_pad(without), device=ctx.device)
        inputs[task] = {g: v[:1].clone() for g, v in groups.items()}
        for mode in modes:
            df, kept = dl.hspace_study(unet, groups, tuple(levels) or None, mode=mode, t_start=t_start,
                                       ddim_steps=ddim_steps, seed=seed, classifier=feats, keep_images=1,
                                       degradation=DEGRADATION[task])
            frames.append(df)
            strips[f"{task}|{mode}"] = kept
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(ctx.out / HSPACE_CSV, index=False)
    torch.save({"strips": strips, "inputs": inputs}, ctx.out / HSPACE_IMAGES)
    s = dl.hspace_summary(df)
    lv = s["level"]
    top = s.groupby(["degradation", "mode"])["level"].transform("max") == lv
    rows = pd.DataFrame({"table": "Fig. 2b", "method": s.group, "setting": [
        f"degradation={d}; mode={m}; level={x:g}" for d, m, x in zip(s.degradation, s["mode"], lv)],
        "dataset": "CUB test images", "metric": s.metric, "value": s.value, "n_images": s.n_images, "notes": ""})
    largest = rows[top].assign(setting=[f"degradation={d}; mode={m}; largest level" for d, m in
                                        zip(s.degradation[top], s["mode"][top])],
                               notes=[f"level {x:g}" for x in lv[top]])
    return pd.concat([rows, largest], ignore_index=True)


def _hspace_files(ctx) -> tuple[pd.DataFrame, dict]:
    d = ctx.store.dir(ctx.spec.studies[0].key())
    return pd.read_csv(d / HSPACE_CSV), torch.load(d / HSPACE_IMAGES, map_location="cpu", weights_only=True)


def hspace_strips(ctx) -> list[Path]:
    """Fig. 2a: per degradation and mode, one image of each group regenerated at increasing perturbation."""
    from . import studies as dl

    _, saved = _hspace_files(ctx)
    out = []
    for key, kept in saved["strips"].items():
        task, mode = key.split("|")
        fig = dl.plot_regeneration_strip(kept, inputs=saved["inputs"][task], mode=mode, title=ctx.spec.title)
        out.append(ctx.save(fig, dl.strip_caption(mode, DEGRADATION[task]), part=f"{DEGRADATION[task]} {mode}"))
    return out


def hspace_curves(ctx) -> list[Path]:
    """Fig. 2b: feature distance against perturbation level, one panel per degradation, one file per mode."""
    from . import studies as dl

    df, _ = _hspace_files(ctx)
    out = []
    for mode, sub in df.groupby("mode", sort=False):
        fig = dl.plot_hspace_study(sub, title=ctx.spec.title)
        caption = dl.hspace_caption(sub) + " The paper draws a histogram; this plots the mean per level."
        out.append(ctx.save(fig, caption, part=str(mode)))
    return out


# ------------------------------------------------------------------------------------------ Figs. 1b, 5, 6
def _detail_box(gt: torch.Tensor) -> tuple[int, int, int]:
    from ...engine.drawing import crop_box

    return crop_box(gt, max(32, min(gt.shape[-2:]) // 4))


@torch.no_grad()
def visual_grid(ctx, rows: Sequence[tuple[str, TestSet, str, Sequence[tuple[str, int]]]], note: str = "",
                image: int = 0) -> Path:
    """Visual comparison as the paper draws it: per row of ``rows`` (label, test set, PSNR channel, panels
    ``(name, index into the figure's runs)``) the input, each network's output and the ground truth, whole (the
    most detailed square marked in red) and, below, that square enlarged."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ...metrics import psnr
    from ...train import padded_forward
    from ...engine.runner import test_pairs

    models: dict[int, torch.nn.Module] = {}
    ncol = 2 + max(len(p) for *_, p in rows)
    fig, axes = plt.subplots(2 * len(rows), ncol, figsize=(2.6 * ncol, 5.0 * len(rows)), squeeze=False)
    for r, (label, ts, channel, panels) in enumerate(rows):
        lq, gt = test_pairs(ts, ctx.data_root)[image]
        shown = [("input", lq.clamp(0, 1))]
        for name, i in panels:
            if i not in models:
                models[i] = ctx.model(i)
            run = ctx.spec.runs[i]
            y = padded_forward(models[i], lq[None].to(ctx.device), _restorer_pad(run))[0]
            shown.append((name, y.clamp(0, 1).cpu()))
        shown += [None] * (ncol - 1 - len(shown)) + [("ground truth", gt)]   # ground truth in the last column
        top, left, side = _detail_box(gt)
        for c in range(ncol):
            whole, zoom = axes[2 * r][c], axes[2 * r + 1][c]
            whole.axis("off")
            zoom.axis("off")
            if shown[c] is None:
                continue
            name, img = shown[c]
            p = "" if name == "ground truth" else f"\n{float(psnr(img[None], gt[None], channel=channel)[0]):.2f} dB"
            whole.imshow(img.permute(1, 2, 0).numpy())
            whole.add_patch(Rectangle((left, top), side, side, fill=False, edgecolor="red", linewidth=1.5))
            whole.set_title(f"{label}: {name}{p}" if c == 0 else f"{name}{p}", fontsize=8)
            zoom.imshow(img[:, top:top + side, left:left + side].permute(1, 2, 0).numpy())
            zoom.set_title(f"red box, {side}x{side} px", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    sets = "; ".join(f"{label} (image {image} of {ts.dataset}, PSNR on {'Y' if c == 'y' else 'RGB'})"
                     for label, ts, c, _ in rows)
    return ctx.save(fig, f"Input, outputs and ground truth, with the PSNR of the whole image under each: {sets}; the "
                         "lower row of each pair enlarges the red box." + (f" {note}." if note else ""))
