"""The plans' figures: each function takes a :class:`FigureContext` and the figure spec's keyword arguments,
draws with matplotlib and saves through :func:`irlib.figures.save_figure` (title, caption, pipeline mark)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ..figures import save_figure
from .spec import FigureSpec


@dataclass
class FigureContext:
    spec: FigureSpec
    store: Any              # irlib.engine.RunStore
    rows: pd.DataFrame      # the gathered tidy rows of the paper
    out_dir: Path
    data_root: str
    device: str
    fb: Any                 # irlib.engine.features.FeatureBank
    profile: str

    @property
    def smoke(self) -> bool:
        return self.profile != "full"

    def save(self, fig, caption: str, part: str = "") -> Path:
        import matplotlib.pyplot as plt

        path = save_figure(fig, self.out_dir, figure=self.spec.figure, paper=self.spec.paper, title=self.spec.title,
                           caption=caption, smoke=self.smoke, part=part)
        plt.close(fig)
        return path

    def model(self, i: int):
        from .jobs import load_model

        return load_model(self.store, self.spec.runs[i], self.fb, self.device)


def draw(spec: FigureSpec, ctx: FigureContext) -> list[Path]:
    """Draw one planned figure; returns the files written."""
    mod, fn = spec.fn.split(":")
    out = getattr(importlib.import_module(mod), fn)(ctx, **dict(spec.kw))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def crop_box(gt: torch.Tensor, size: int = 96) -> tuple[int, int, int]:
    """The ``size`` square (top, left, side) with the most detail (largest gradient energy), the same for
    every method shown."""
    g = gt.mean(0)
    energy = (g[1:, :-1] - g[:-1, :-1]).abs() + (g[:-1, 1:] - g[:-1, :-1]).abs()
    side = min(size, *energy.shape)
    pooled = torch.nn.functional.avg_pool2d(energy[None, None], side, stride=max(1, side // 4))[0, 0]
    i, j = divmod(int(pooled.argmax()), pooled.shape[1])
    return i * max(1, side // 4), j * max(1, side // 4), side


@torch.no_grad()
def visual_pair(ctx: FigureContext, names: Sequence[str], channel: str = "rgb", crop: int = 0, image: int = 0) -> Path:
    """A visual comparison as in the papers: input, the two networks' outputs, ground truth, all cropped to
    the same detailed region, plus the divergence map |variant − baseline| the SPN paper shows."""
    import matplotlib.pyplot as plt

    from ..metrics import psnr
    from ..models import zoo
    from ..train import padded_forward
    from .runner import eval_forward, test_pairs
    from .spec import EvalSpec

    ts = ctx.spec.testset
    lq, gt = test_pairs(ts, ctx.data_root)[image]
    outs = []
    for i, run in enumerate(ctx.spec.runs):
        model = ctx.model(i)
        fwd = eval_forward(run, EvalSpec(ts), ctx.fb)
        f = (lambda x: fwd(model, {"lq": x})) if fwd else model
        outs.append(padded_forward(f, lq[None].to(ctx.device), zoo.pad(run.net, run.size), gt.shape[-2:])[0].clamp(0, 1).cpu())
    shown_lq = torch.nn.functional.interpolate(lq[None], size=gt.shape[-2:], mode="bicubic")[0].clamp(0, 1)
    top, left, side = crop_box(gt)
    cut = lambda x: x[:, top:top + side, left:left + side].permute(1, 2, 0).numpy()  # noqa: E731
    fig, ax = plt.subplots(1, 5, figsize=(15, 3.4))
    panels = [("input", shown_lq, None)] + [(n, o, float(psnr(o, gt, channel=channel, crop_border=crop)[0]))
                                            for n, o in zip(names, outs)] + [("ground truth", gt, None)]
    for a, (t, im, p) in zip(ax, panels):
        a.imshow(cut(im))
        a.set_title(t if p is None else f"{t}\n{p:.2f} dB")
        a.axis("off")
    div = (outs[1] - outs[0]).abs().mean(0)[top:top + side, left:left + side]
    im = ax[4].imshow(div.numpy(), cmap="magma")
    ax[4].set_title(f"divergence |{names[1]} − {names[0]}|")
    ax[4].axis("off")
    fig.colorbar(im, ax=ax[4], fraction=0.046, label="mean abs. difference (0–1 scale)")
    ds = ts.dataset
    return ctx.save(fig, f"{names[0]} vs {names[1]} on image {image} of {ds}, the same {side}x{side} crop in every "
                         f"panel (PSNR of the full image, {channel.upper()} channel).")


def gains_bar(ctx: FigureContext, tables: Sequence[str], metric: str = "PSNR") -> Path:
    """SPN Fig. 2: the gain of every retrained (+SPN) model over its original, from the gathered rows."""
    import matplotlib.pyplot as plt

    r = ctx.rows
    d = r[r.table.isin(tables) & (r.metric == metric) & (r.baseline != "") & r.gain.notna()].copy()
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(d) + 2), 3.6))
    if d.empty:
        ax.text(0.5, 0.5, "no finished baseline/variant pairs yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        d["label"] = d.method + " " + d.setting.where(d.setting == "", " " + d.setting) + " · " + d.dataset
        ax.bar(range(len(d)), d.gain, yerr=[d.gain - d.gain_ci_low, d.gain_ci_high - d.gain], capsize=2, color="tab:blue")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(d)), d.label, rotation=75, ha="right", fontsize=7)
        ax.set_ylabel(f"{metric} gain over the original (dB)")
        ax.set_xlabel("retrained model · test set")
    return ctx.save(fig, f"{metric} gain of each +SPN model over its original training (Tables {', '.join(t.split()[-1] for t in tables)}), "
                         "with the paired-bootstrap 95% interval over test images.")
