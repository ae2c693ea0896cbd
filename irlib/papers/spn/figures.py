"""SPN's own figures (the generic ones, Fig. 2's gain bars and the visual pairs, are in irlib.engine.drawing)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ...engine.drawing import FigureContext

NOT_DRAWN = ("the paper's other methods in Fig. 2a exist only in its figure image: the text names none of them and "
             "gives none of their numbers, so none is drawn here (none is invented)")


def sr_psnr_vs_params(ctx: FigureContext, names: Sequence[str], table: str = "Table 1", setting: str = "x4",
                      dataset: str = "Manga109", metric: str = "PSNR") -> Path:
    """SPN Fig. 2a: x4 super-resolution on Manga109, PSNR against parameter count, for the lightweight networks
    the plan retrains (EDSR-light and SwinIR-light, each trained originally and with SPN; an arrow from each
    original to its +SPN model). Parameters are counted on the trained networks themselves."""
    import matplotlib.pyplot as plt

    r = ctx.rows
    sel = r[(r.table == table) & (r.setting == setting) & (r.dataset == dataset) & (r.metric == metric)]
    value = dict(zip(sel.method, sel.value))
    fig, ax = plt.subplots(figsize=(5.4, 4.0))
    points = {}
    for i, name in enumerate(names):
        if name in value and value[name] == value[name]:   # finished and not NaN
            points[name] = (sum(p.numel() for p in ctx.model(i).parameters()) / 1e6, float(value[name]))
    for name, (x, y) in points.items():
        spn = name.endswith("+SPN")
        ax.scatter([x], [y], marker="*" if spn else "o", s=120 if spn else 50, color="tab:red" if spn else "tab:blue",
                   zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, -4 if spn else 4), fontsize=8)
        base = name[:-len("+SPN")] if spn else None
        if base in points:
            ax.annotate("", (x, y), points[base], arrowprops=dict(arrowstyle="->", color="0.4", lw=0.8))
    if not points:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel(f"{metric} on {dataset} {setting} (dB)")
    ax.grid(alpha=0.3)
    return ctx.save(fig, f"{dataset} {setting}: {metric} against parameters of the networks retrained with SPN and "
                         f"their original training ({', '.join(names)}). Not drawn: {NOT_DRAWN}.")
