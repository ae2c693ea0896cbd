"""TextPromptIR's figures and its one study (Fig. 10), as the plan (:mod:`irlib.papers.textpromptir.plan`) declares
them. Figure functions take a :class:`irlib.engine.drawing.FigureContext`, the study a
:class:`irlib.engine.jobs.StudyContext`; every network is loaded with the feature networks its run was trained
with (its job's context), so a figure sees the same task-specific encoder as the run."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ...prompts import TASK_NAMES, prompts_for
from ...engine.spec import RunSpec, TestSet

TYPE_COLOURS = {"denoise": "tab:blue", "derain": "tab:green", "dehaze": "tab:orange"}
SET_MARKERS = "os^DvP*X"


# ------------------------------------------------------------------------------------------ helpers
def _bank(ctx, run: RunSpec):
    """The feature networks ``run`` was trained with: its job's context in the store (local weight files, the text
    encoder cache and the fine-tuning length of the task-specific BERT)."""
    from ...engine.features import FeatureBank

    return FeatureBank.for_run(run, ctx.device, ctx.store.context(run.key()))


def _load(ctx, run: RunSpec):
    fb = _bank(ctx, run)
    from ...engine.jobs import load_model

    return load_model(ctx.store, run, fb, ctx.device), fb


@torch.no_grad()
def _restore(model, run: RunSpec, fb, lq: torch.Tensor, task: str = "", sentence: str | None = None,
             seed: int = 1234) -> torch.Tensor:
    """``run``'s network applied to one (C,H,W) image, padded as its family needs. Text runs get ``sentence``, or
    a held-out instruction of ``task`` drawn with ``seed`` (as the evaluation does); other runs no text."""
    from ...models import zoo
    from ...textprompt import text_forward
    from ...train import padded_forward

    dev = next(model.parameters()).device
    if run.forward == "text":
        fwd = text_forward(fb.text(run.text_encoder), "test", seed, fixed=sentence)
        f = lambda x: fwd(model, {"lq": x, "task": [task] * x.shape[0]})  # noqa: E731
    else:
        f = model
    return padded_forward(f, lq[None].to(dev), zoo.pad(run.net, run.size))[0].clamp(0, 1).float().cpu()


def _pairs(ctx, ts: TestSet, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from ...engine.runner import test_pairs

    if n is not None:
        ts = dataclasses.replace(ts, limit=min(ts.limit or n, n))
    return test_pairs(ts, ctx.data_root)


def _psnr(y: torch.Tensor, gt: torch.Tensor) -> float:
    from ...metrics import psnr

    return float(psnr(y[None], gt[None].clamp(0, 1), channel="rgb")[0])


def _centre(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    t, l = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return x[..., t:t + side, l:l + side]


def _show(ax, img: torch.Tensor, title: str) -> None:
    ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def _silhouette(x: np.ndarray, labels: Sequence[str]) -> float:
    """Silhouette of ``labels`` in ``x`` (NaN when undefined: fewer than 2 classes or one sample per class)."""
    from sklearn.metrics import silhouette_score

    n_cls = len(set(labels))
    if n_cls < 2 or len(labels) <= n_cls:
        return float("nan")
    return float(silhouette_score(x, list(labels)))


# ------------------------------------------------------------------------------------------ Figs. 4-6
def visual_grid(ctx, rows: Sequence[tuple[str, TestSet, tuple[int, int]]], names: Sequence[str], what: str,
                ground_truth: bool = True, image: int = 0, max_side: int = 512) -> Path:
    """Visual comparison, one row per test set: the degraded input, two runs' outputs (``runs[i]``, ``runs[j]``
    of the row) and the ground truth, all cropped to the same most-detailed square (``drawing.crop_box``).
    ``ground_truth=False`` (real captures): no ground-truth panel and no PSNR. Images larger than ``max_side``
    are centre-cropped to it before restoration."""
    import matplotlib.pyplot as plt

    from ...engine.drawing import crop_box

    models: dict[int, tuple] = {}
    ncol = 3 + ground_truth
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.2 * ncol, 3.3 * len(rows)), squeeze=False, layout="constrained")
    cropped, side = False, 0
    for ax, (label, ts, idx) in zip(axes, rows):
        lq, gt = _pairs(ctx, ts, image + 1)[image]
        if max(lq.shape[-2:]) > max_side:
            lq, gt, cropped = _centre(lq, max_side), _centre(gt, max_side), True
        outs = []
        for i in idx:
            if i not in models:
                models[i] = _load(ctx, ctx.spec.runs[i])
            model, fb = models[i]
            outs.append(_restore(model, ctx.spec.runs[i], fb, lq, ts.task, seed=ts.seed))
        top, left, side = crop_box(gt if ground_truth else lq)
        cut = lambda x: x[:, top:top + side, left:left + side]  # noqa: E731
        _show(ax[0], cut(lq.clamp(0, 1)), f"{label}: input" + (f"\n{_psnr(lq, gt):.2f} dB" if ground_truth else ""))
        for a, name, y in zip(ax[1:3], names, outs):
            _show(a, cut(y), name + (f"\n{_psnr(y, gt):.2f} dB" if ground_truth else ""))
        if ground_truth:
            _show(ax[3], cut(gt), "ground truth")
    psnr_note = (f" PSNR (RGB) of the whole{' (centre-cropped)' if cropped else ''} image under each panel."
                 if ground_truth else " Real captures: no ground truth is shown and no PSNR is given.")
    return ctx.save(fig, f"{what}. Image {image} of each set; every panel of a row shows the same {side}x{side} "
                         f"crop (its most detailed region).{psnr_note}")


# ------------------------------------------------------------------------------------------ Fig. 2
@torch.no_grad()
def latent_tsne(ctx, sets: Sequence[tuple[str, TestSet]], names: Sequence[str], n_images: int = 30) -> Path:
    """Fig. 2: t-SNE of each run's latent (bottleneck) features, global-average pooled, of ``n_images`` test
    images per set, coloured by degradation type; the silhouette by type measures how well they separate."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ctx.spec.runs), figsize=(5.4 * len(ctx.spec.runs), 4.8), squeeze=False,
                             layout="constrained")
    pairs = {label: _pairs(ctx, ts, n_images) for label, ts in sets}
    scores = []
    for ax, run, name in zip(axes[0], ctx.spec.runs, names):
        model, fb = _load(ctx, run)
        feats: list[torch.Tensor] = []
        hook = model.latent.register_forward_hook(lambda m, i, o: feats.append(o.mean(dim=(2, 3)).float().cpu()))
        labels = []
        try:
            for label, ts in sets:
                for k, (lq, _) in enumerate(pairs[label]):
                    _restore(model, run, fb, lq, ts.task, seed=ts.seed + k)
                    labels.append(label)
        finally:
            hook.remove()
        x = torch.cat(feats).numpy()
        kind = {label: TASK_NAMES[ts.task] for label, ts in sets}
        s = _silhouette(x, [kind[lb] for lb in labels])
        scores.append(f"{name} {s:.3f}")
        emb = _tsne(x)
        for m, (label, ts) in zip(SET_MARKERS, sets):
            sel = np.array([lb == label for lb in labels])
            ax.scatter(emb[sel, 0], emb[sel, 1], s=22, marker=m, color=TYPE_COLOURS[kind[label]],
                       label=f"{label} ({kind[label]})", alpha=0.8)
        ax.set_title(f"{name}\nsilhouette by degradation type {s:.3f}", fontsize=10)
        ax.set_xlabel("t-SNE dimension 1 (a.u.)")
        ax.set_ylabel("t-SNE dimension 2 (a.u.)")
        ax.legend(fontsize=7, loc="best")
    n = sum(len(p) for p in pairs.values())
    return ctx.save(fig, f"t-SNE of the global-average-pooled latent features of {n} test images ({', '.join(pairs)}), "
                         f"colour = degradation type; silhouette by type (feature space): {'; '.join(scores)}. The "
                         "paper's AirNet and PromptIR panels are other methods, cited and not retrained; the w.o. SGI "
                         "panel is the same network trained without instructions.")


# ------------------------------------------------------------------------------------------ Fig. 7
@torch.no_grad()
def prompt_swap(ctx, rows: Sequence[tuple[str, TestSet]]) -> Path:
    """Fig. 7: each single-degradation image restored under the derain, dehaze and denoise instruction (the first
    held-out sentence of each), PSNR under every output; the matching instruction is marked."""
    import matplotlib.pyplot as plt

    run = ctx.spec.runs[0]
    model, fb = _load(ctx, run)
    tasks = ("derain", "dehaze", "denoise")
    sent = {t: prompts_for(t, "test")[0] for t in tasks}
    fig, axes = plt.subplots(len(rows), 5, figsize=(16, 3.4 * len(rows)), squeeze=False, layout="constrained")
    gains = []
    for ax, (label, ts) in zip(axes, rows):
        lq, gt = _pairs(ctx, ts, 1)[0]
        match = TASK_NAMES[ts.task]
        _show(ax[0], lq, f"{label}: input\n{_psnr(lq, gt):.2f} dB")
        vals = {}
        for a, t in zip(ax[1:4], tasks):
            y = _restore(model, run, fb, lq, sentence=sent[t])
            vals[t] = _psnr(y, gt)
            _show(a, y, f"{t} instruction{' (matching)' if t == match else ''}\n{vals[t]:.2f} dB")
        _show(ax[4], gt, "ground truth")
        best_other = max(v for t, v in vals.items() if t != match)
        gains.append(f"{label} {vals[match] - best_other:+.2f} dB")
    quoted = "; ".join(f"{t}: \"{s}\"" for t, s in sent.items())
    return ctx.save(fig, "The all-in-one model on one image per degradation under each task's first held-out "
                         f"instruction ({quoted}); PSNR (RGB) under each panel. Matching minus best unrelated "
                         f"instruction: {', '.join(gains)}.")


# ------------------------------------------------------------------------------------------ Fig. 8
@torch.no_grad()
def two_prompts(ctx, noise: str = "noise25") -> Path:
    """Fig. 8: a rainy test image with added Gaussian noise, restored under a derain and a denoise instruction,
    with the response of the last IMTA of the refinement stage (``model.refinement[-1].attn``, mean |output|
    over channels) under each."""
    import matplotlib.pyplot as plt

    from ...engine.runner import apply_task

    run, ts = ctx.spec.runs[0], ctx.spec.testset
    model, fb = _load(ctx, run)
    lq, gt = _pairs(ctx, ts, 1)[0]
    both = apply_task(lq, noise, ts.seed)
    h, w = gt.shape[-2:]
    grab: list[torch.Tensor] = []
    hook = model.refinement[-1].attn.register_forward_hook(lambda m, i, o: grab.append(o.abs().mean(1)[0].float().cpu()))
    outs, maps = {}, {}
    try:
        for t in ("derain", "denoise"):
            grab.clear()
            outs[t] = _restore(model, run, fb, both, sentence=prompts_for(t, "test")[0])
            maps[t] = grab[-1][:h, :w]
    finally:
        hook.remove()
    fig, ax = plt.subplots(2, 4, figsize=(17, 8), layout="constrained")
    _show(ax[0, 0], both, f"rain + {noise[5:]}-sigma noise\n{_psnr(both, gt):.2f} dB")
    for i, t in enumerate(("derain", "denoise"), 1):
        _show(ax[0, i], outs[t], f"{t} instruction\n{_psnr(outs[t], gt):.2f} dB")
    _show(ax[0, 3], gt, "ground truth (rain- and noise-free)")
    diff = (outs["derain"] - outs["denoise"]).abs().mean(0)
    im = ax[1, 0].imshow(diff.numpy(), cmap="magma")
    ax[1, 0].set_title("|derain − denoise output|", fontsize=9)
    fig.colorbar(im, ax=ax[1, 0], label="mean abs. difference (0–1 scale)")
    vmax = float(max(m.max() for m in maps.values()))
    for i, t in enumerate(("derain", "denoise"), 1):
        im = ax[1, i].imshow(maps[t].numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax[1, i].set_title(f"IMTA response, {t} instruction", fontsize=9)
        fig.colorbar(im, ax=ax[1, i], label="mean |IMTA output| (a.u.)")
    im = ax[1, 3].imshow((maps["derain"] - maps["denoise"]).numpy(), cmap="coolwarm")
    ax[1, 3].set_title("IMTA response: derain − denoise", fontsize=9)
    fig.colorbar(im, ax=ax[1, 3], label="difference of mean |IMTA output| (a.u.)")
    for a in ax[1]:
        a.axis("off")
    return ctx.save(fig, f"Image 0 of {ts.dataset} (rainy) with seeded Gaussian noise ({noise}) added, restored by the "
                         "all-in-one model under the first held-out derain and denoise instructions; PSNR (RGB) "
                         "against the clean image. Bottom: the response of the last IMTA block of the refinement "
                         "stage (mean |output| over channels) under each instruction, on a shared colour scale.")


# ------------------------------------------------------------------------------------------ Fig. 9
@torch.no_grad()
def guidance_tsne(ctx) -> Path:
    """Fig. 9: t-SNE of the text guidance of all instructions (held-out ones marked): the encoder's Z, and the
    trained network's guidance MLP output of Z; silhouettes by task over the held-out instructions."""
    import matplotlib.pyplot as plt

    run = ctx.spec.runs[0]
    model, fb = _load(ctx, run)
    enc = fb.text(run.text_encoder)
    tasks = ("derain", "dehaze", "denoise")
    sents = [(t, s, s in set(prompts_for(t, "test"))) for t in tasks for s in prompts_for(t, "all")]
    z = enc.encode([s for _, s, _ in sents])
    g = model.guidance(z.to(next(model.parameters()).device)).float().cpu()
    held = np.array([h for _, _, h in sents])
    labels = np.array([t for t, _, _ in sents])
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5), layout="constrained")
    scores = []
    for ax, (name, feats) in zip(axes, ((f"encoder output Z ({z.shape[1]}-d)", z), (f"network guidance MLP(Z) ({g.shape[1]}-d)", g))):
        x = feats.numpy()
        s = _silhouette(x[held], labels[held])
        scores.append(f"{name.split(' (')[0]} {s:.3f}")
        emb = _tsne(x)
        for t in tasks:
            for h, (size, alpha, split) in ((False, (14, 0.35, "training")), (True, (46, 0.95, "held-out"))):
                sel = (labels == t) & (held == h)
                ax.scatter(emb[sel, 0], emb[sel, 1], s=size, alpha=alpha, color=TYPE_COLOURS[t],
                           edgecolors="k" if h else "none", label=f"{t}, {split} ({int(sel.sum())})")
        ax.set_title(f"{name}\nheld-out silhouette {s:.3f}", fontsize=10)
        ax.set_xlabel("t-SNE dimension 1 (a.u.)")
        ax.set_ylabel("t-SNE dimension 2 (a.u.)")
        ax.legend(fontsize=7, loc="best")
    return ctx.save(fig, f"t-SNE of the guidance of all {len(sents)} instructions of the three tasks, from the run's "
                         f"text encoder ({run.text_encoder or 'offline MiniLM'}); held-out instructions (never seen in "
                         f"training) are large with black edges. Silhouette by task over the held-out ones: "
                         f"{'; '.join(scores)}.")


# ------------------------------------------------------------------------------------------ Fig. 10
def _setting(sigma: str, what: str) -> str:
    return "; ".join(x for x in (sigma, what) if x)


@torch.no_grad()
def prompt_repeats(ctx, sets: Sequence[tuple[str, str, TestSet]], reps: int = 15, seed: int = 0) -> pd.DataFrame:
    """Study of Fig. 10: ``reps`` repetitions; in each, one held-out instruction of the matching task is drawn at
    random per test set (``(dataset, noise-level setting, TestSet)``) and guides every image of it. Rows: the
    mean PSNR/SSIM of every (repetition, set) (setting ``...; run=k``), and their mean and s.d. over repetitions
    (settings ``...; mean over repetitions`` / ``...; s.d. over repetitions``, the plan's extra rows)."""
    from ...models import zoo
    from ...textprompt import text_forward
    from ...train import evaluate

    run = ctx.spec.deps[0]
    model = ctx.model(run)
    enc = ctx.fb.text(run.text_encoder)
    pairs = [_pairs(ctx, ts) for _, _, ts in sets]
    out = []
    for k in range(reps):
        rng = random.Random(seed + k)
        for (ds, sigma, ts), prs in zip(sets, pairs):
            sentence = rng.choice(prompts_for(ts.task, "test"))
            df = evaluate(model, prs, forward=text_forward(enc, fixed=sentence), device=ctx.device,
                          metric_kw={"channel": "rgb"}, pad_to=zoo.pad(run.net, run.size))
            for metric in ("PSNR", "SSIM"):
                out.append({"table": "Fig. 10", "method": "TextPromptIR", "setting": _setting(sigma, f"run={k + 1}"),
                            "dataset": ds, "metric": metric, "value": float(df[metric].mean()), "n_images": len(df),
                            "notes": sentence})
    per = pd.DataFrame(out)
    summary = []
    for (ds, sigma, _), prs in zip(sets, pairs):
        for metric in ("PSNR", "SSIM"):
            v = per[(per.dataset == ds) & per.setting.str.startswith(_setting(sigma, "run=")) & (per.metric == metric)].value
            for stat, x in (("mean", v.mean()), ("s.d.", v.std(ddof=1) if len(v) > 1 else 0.0)):
                summary.append({"table": "Fig. 10", "method": "TextPromptIR", "setting": _setting(sigma, f"{stat} over repetitions"),
                                "dataset": ds, "metric": metric, "value": float(x), "n_images": len(prs),
                                "notes": f"{len(v)} repetitions"})
    return pd.concat([per, pd.DataFrame(summary)], ignore_index=True)


def repeats_plot(ctx) -> Path:
    """Fig. 10: mean PSNR and SSIM of each repetition per test set, with the mean and ±1 s.d. band over them."""
    import matplotlib.pyplot as plt

    df = ctx.store.study_result(ctx.spec.studies[0].key())
    df = df[df.setting.str.contains("run=")].copy()
    df["sigma"] = df.setting.str.extract(r"sigma=(\d+)", expand=False)
    df["label"] = df.dataset + df.sigma.map(lambda s: f" σ={s}" if isinstance(s, str) else "")
    df["run"] = df.setting.str.extract(r"run=(\d+)", expand=False).astype(int)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    spread = []
    for ax, metric, unit in zip(axes, ("PSNR", "SSIM"), ("dB", "0–1")):
        d = df[df.metric == metric]
        for i, (label, g) in enumerate(d.groupby("label", sort=False)):
            g = g.sort_values("run")
            c = f"C{i}"
            m, s = g.value.mean(), g.value.std(ddof=1) if len(g) > 1 else 0.0
            ax.plot(g.run, g.value, "o-", ms=3, color=c, label=f"{label}: {m:.3f} ± {s:.3f}")
            ax.axhspan(m - s, m + s, color=c, alpha=0.12)
            if metric == "PSNR":
                spread.append(f"{label} {m:.2f} ± {s:.3f} dB")
        ax.set_xlabel("repetition (one random held-out instruction per test set)")
        ax.set_ylabel(f"mean {metric} over the test set ({unit})")
        ax.set_title(f"{metric}: mean ± s.d. over repetitions", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    n = int(df.run.max())
    return ctx.save(fig, f"The all-in-one model over {n} repetitions, each guiding every image of a test set by one "
                         f"randomly drawn held-out instruction of its task; band = ±1 s.d. over repetitions. PSNR mean "
                         f"± s.d.: {'; '.join(spread)}.")
