"""DINO-IR's figures, drawn from the plan's rows and the arrays its studies saved (:mod:`irlib.dinoir`).

Each function takes a :class:`irlib.engine.drawing.FigureContext` and returns the saved path; every figure has a
title, labelled axes with units where there are axes, a legend where there are several series, and a caption.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...engine.drawing import FigureContext

COLOURS = {"image": "tab:green", "f_IMAGE": "tab:orange", "f_DINO": "tab:blue"}   # the paper's Fig. 3b colours


def _study_file(ctx: FigureContext, name: str) -> Path:
    path = ctx.store.dir(ctx.spec.studies[0].key()) / name
    if not path.is_file():
        raise FileNotFoundError(f"{ctx.spec.figure}: the study {ctx.spec.studies[0].name} left no {name} in {path.parent}")
    return path


def _image_rows(ax_row, images, maps, names, feature_label: str) -> None:
    """Top row: the images; bottom row: their feature PCA colouring, labelled with layer and method."""
    for k, name in enumerate(names):
        for a, im, title in ((ax_row[0][k], images[k], str(name)), (ax_row[1][k], maps[k], "")):
            a.imshow(im, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if title:
                a.set_title(title)
    ax_row[0][0].set_ylabel("input image")
    ax_row[1][0].set_ylabel(feature_label, fontsize=8)


def fig3a(ctx: FigureContext) -> Path:
    """Fig. 3a: clean / rainy / noisy / blurry images and their deep DINOv2 features (joint PCA → RGB)."""
    import matplotlib.pyplot as plt

    z = np.load(_study_file(ctx, "fig3a.npz"))
    names, layer = list(z["names"]), int(z["layer"])
    fig, ax = plt.subplots(2, len(names), figsize=(3 * len(names), 6.4))
    _image_rows(ax, z["images"], z["maps"], names,
                f"DINOv2 ViT-S/14 block {layer + 1}/12\n(deep) features,\njoint PCA (3 comp.) as RGB")
    ev = ", ".join(f"{v:.0%}" for v in z["explained"])
    ds = dict(ctx.spec.studies[0].kw).get("dataset", "")
    return ctx.save(fig, f"Deep DINOv2 (block {layer + 1}) patch features of a clean test image of {ds} and its rainy "
                         f"(the test set's rainy image), noisy (sigma=25/255) and blurry (Gaussian, sigma=2.5 px) versions, projected "
                         f"on three principal components fitted jointly on all four images' patches (explained "
                         f"variance {ev}); one colour scale for the row.")


def fig3b(ctx: FigureContext) -> Path:
    """Fig. 3b: PSNR deviation from its mean over the noise levels, for the image, f_IMAGE and f_DINO."""
    import matplotlib.pyplot as plt

    per = pd.read_csv(_study_file(ctx, "fig3b.csv"))
    dev = per.groupby(["kind", "sigma"]).deviation.agg(["mean", "std"]).fillna(0.0)
    var = per.groupby(["image", "kind"]).PSNR.var(ddof=0).groupby("kind").mean()
    sigmas = sorted(per.sigma.unique())
    fig, ax = plt.subplots(figsize=(8, 3.8))
    w = 0.27
    labels = {"image": "degraded image", "f_IMAGE": "f_IMAGE (patch embedding)", "f_DINO": "f_DINO (DINOv2 deep block)"}
    for j, kind in enumerate(("f_DINO", "f_IMAGE", "image")):
        d = dev.loc[kind].reindex(sigmas)
        ax.bar(np.arange(len(sigmas)) + (j - 1) * w, d["mean"], w, yerr=d["std"], capsize=2, color=COLOURS[kind],
               label=f"{labels[kind]} — variance {var[kind]:.2f} dB²")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(sigmas)), [f"{s:g}" for s in sigmas])
    ax.set_xlabel("noise standard deviation σ (0–255 scale)")
    ax.set_ylabel("PSNR − its mean over σ (dB)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    n, side = per.image.nunique(), int(per.side.iloc[0])
    return ctx.save(fig, f"Deviation of the PSNR to the clean counterpart from its mean over the noise levels, for the "
                         f"noisy image, its patch embedding and deep DINOv2 features; mean over {n} test image(s), "
                         f"whiskers one standard deviation over images. All three see the same {side}x{side} centre "
                         f"crop (the image PSNR is taken on the ViT's input). The sigma list is an irlib choice "
                         f"(the paper does not print it).")


def fig5(ctx: FigureContext) -> Path:
    """Fig. 5: heavy rain, light rain (the derainer's output) and no rain, their shallow-feature colouring, and
    each test image's feature distance to no rain."""
    import matplotlib.pyplot as plt

    z = np.load(_study_file(ctx, "fig5.npz"))
    names, layers = list(z["names"]), [int(i) + 1 for i in z["layers"]]
    fig = plt.figure(figsize=(14, 6.4))
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 1.5], wspace=0.3)
    ax = [[fig.add_subplot(grid[r, c]) for c in range(3)] for r in range(2)]
    blocks = f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else str(layers[0])
    _image_rows(ax, z["images"], z["maps"], names,
                f"DINOv2 ViT-S/14 blocks {blocks}\n(shallow) features,\njoint PCA as RGB")
    sc = fig.add_subplot(grid[:, 3])
    sc.yaxis.set_label_position("right")
    sc.yaxis.tick_right()
    hv, lt = z["dist_heavy"], z["dist_light"]
    sc.scatter(hv, lt, color="tab:blue", label="one test image")
    lim = [0, max(float(hv.max()), float(lt.max())) * 1.1 or 1.0]
    sc.plot(lim, lim, "k--", lw=0.8, label="equal distance")
    sc.set_xlim(lim)
    sc.set_ylim(lim)
    sc.set_xlabel("heavy rain: L1 distance to no rain (feature units)")
    sc.set_ylabel("light rain (derained): L1 distance to no rain (feature units)")
    sc.legend(loc="upper left", fontsize=8)
    closer = float(np.mean(lt < hv))
    derainer = ctx.spec.studies[0].deps[0]
    ds = dict(ctx.spec.studies[0].kw).get("dataset", "")
    return ctx.save(fig, f"Heavy rain (a test image of {ds}), light rain = the same image after the trained "
                         f"{derainer.label or derainer.net} (initial rain removal) and no rain, with their shallow "
                         f"DINOv2 features (blocks {blocks}, joint PCA); right: per test image, the features' L1 "
                         f"distance to the clean image's (below the diagonal: the derained image is closer). Light "
                         f"rain is closer for {closer:.0%} of {len(hv)} images.")


def single_vs_multi(ctx: FigureContext, tables: tuple[str, str] = ("Table 1", "Fig. 1a"), metric: str = "PSNR") -> Path:
    """Fig. 1a: per test column, PSNR of Restormer and DINO-IR trained on all four tasks (``tables[0]``, Table 1)
    and on that task alone (``tables[1]``, the plan's Fig. 1a rows). Missing bars are runs not finished yet."""
    import matplotlib.pyplot as plt
    import numpy as np

    r = ctx.rows[ctx.rows.metric == metric]
    multi = r[(r.table == tables[0]) & (r.dataset != "Avg") & r.method.isin(["Restormer", "DINO-IR"])]
    single = r[r.table == tables[1]]
    columns = list(dict.fromkeys(multi.setting.str.replace("multi-task; ", "", regex=False)))
    bars = [("Restormer", single, "single-task", "#f3b27a"), ("Restormer", multi, "multi-task", "tab:orange"),
            ("DINO-IR", single, "single-task", "#8fb9e0"), ("DINO-IR", multi, "multi-task", "tab:blue")]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(columns) + 2), 3.8))
    x = np.arange(len(columns))
    for i, (method, frame, mode, colour) in enumerate(bars):
        d = frame[frame.method == method]
        d = d.set_index(d.setting.str.split("; ", n=1).str[1])
        vals = [pd.to_numeric(d.value.get(c), errors="coerce") if c in d.index else np.nan for c in columns]
        ax.bar(x + (i - 1.5) * 0.2, vals, 0.2, color=colour, label=f"{method}, {mode}")
    ax.set_xticks(x, [c.replace("; ", "\n") for c in columns], fontsize=7)
    ax.set_ylabel(f"{metric} (dB)")
    finite = pd.to_numeric(pd.concat([multi.value, single.value]), errors="coerce").dropna()
    if len(finite):
        ax.set_ylim(max(0.0, finite.min() - 3), finite.max() + 1)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return ctx.save(fig, f"{metric} of Restormer and DINO-IR trained on one task (light) and on all four (dark), "
                         "per test column; the paper shows this comparison only as a picture.")


def tasks_curve(ctx: FigureContext, table: str = "Table 6", metric: str = "PSNR") -> Path:
    """Fig. 1b: deblurring PSNR of the Restormer baseline and DINO-IR against the number of training tasks,
    reproduced (solid) beside the paper's Table 6 (dashed)."""
    import matplotlib.pyplot as plt

    from ...results import reference

    r = ctx.rows[(ctx.rows.table == table) & (ctx.rows.metric == metric)]
    ref = reference("dinoir")
    ref = ref[(ref.table == table) & (ref.metric == metric)]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, colour in (("Baseline (Restormer)", "tab:orange"), ("DINO-IR", "tab:blue")):
        for frame, style, who in ((r, "-o", "reproduced"), (ref, "--s", "paper")):
            d = frame[frame.method == method].copy()
            if d.empty:
                continue
            d["n"] = d.setting.str.extract(r"tasks=(\d)").astype(int)[0]
            d = d.sort_values("n")
            ax.plot(d.n, pd.to_numeric(d.value), style, color=colour, label=f"{method} — {who}")
    ax.set_xticks([1, 2, 3, 4], ["1 (B)", "2 (B+N)", "3 (B+N+R)", "4 (B+N+R+H)"])
    ax.set_xlabel("training tasks (B deblur, N denoise, R derain, H dehaze)")
    ax.set_ylabel(f"deblurring {metric} on blurred DID (dB)")
    ax.legend(fontsize=8, loc="best")
    return ctx.save(fig, f"Deblurring {metric} of the Restormer baseline and DINO-IR as tasks are added to training "
                         f"({table}); solid: this reproduction, dashed: the paper.")
