"""DiffLoss Fig. 2: the h-space SVD perturbation study (regeneration, distances, summary, plots, captions)."""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...diffloss import DDPMSchedule
from ...models.adm import ADMUNet
from ...models.classifiers import ResNetFeatures

# ------------------------------------------------------------------------------------ h-space SVD study
MODES = ("multiplicative", "additive")
DEFAULT_LEVELS = {"multiplicative": (0.5, 1.0, 2.0, 4.0), "additive": (0.25, 0.5, 1.0, 2.0)}
"""Levels ①-④ per mode. Multiplicative s: σ1 -> (1+s)·σ1. Additive α: ‖Δh‖/‖h‖ = α (σ1 -> σ1 + α‖h‖_F), so
α=1 adds as much energy along u1v1ᵀ as h has in total; the two ranges give perturbations of similar size for
a typical ADM h whose σ1 carries a third to a half of ‖h‖_F."""
STUDY_GROUPS = ("clean", "degraded", "restored w/o DiffLoss", "restored w/ DiffLoss")
_GROUP_STYLE = {"clean": ("tab:blue", "o"), "degraded": ("tab:gray", "s"),
                "restored w/o DiffLoss": ("tab:orange", "^"), "restored w/ DiffLoss": ("tab:green", "D")}
_MODE_TEXT = {"multiplicative": ("s", "σ₁ → (1+s)·σ₁"), "additive": ("α", "Δh = α‖h‖·u₁v₁ᵀ, so ‖Δh‖/‖h‖ = α")}
Y_LABEL = "ResNet-50 feature L2 distance to the unperturbed regeneration"


def svd_perturb_hook(strength: float, k: int = 1, mode: str = "multiplicative", record: list | None = None):
    """A middle-block hook perturbing the top-``k`` singular components of each sample's h, laid out as a
    C x HW matrix (channels x spatial positions). Only the singular values change, never the directions:

    * ``"multiplicative"``: σ_i -> (1 + strength)·σ_i for i <= k, i.e. Δh = strength·Σ σ_i u_i v_iᵀ. The
      relative size ‖Δh‖/‖h‖ = strength·sqrt(Σ σ_i²)/‖h‖_F then depends on how much of h's energy its top
      component carries, which differs between images (and between clean and degraded inputs).
    * ``"additive"``: Δh = strength·‖h‖_F·Σ u_i v_iᵀ/sqrt(k), so ‖Δh‖/‖h‖ = strength for every image: every
      group receives a perturbation of the same relative size (for k=1: σ1 -> σ1 + strength·‖h‖_F).

    ``strength=0`` leaves h unchanged. ``record`` (a list) receives each call's per-sample ‖Δh‖/‖h‖."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def hook(h: torch.Tensor) -> torch.Tensor:
        if strength == 0:
            if record is not None:
                record.append(torch.zeros(h.shape[0]))
            return h
        b, c = h.shape[:2]
        m = h.float().reshape(b, c, -1)
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        total = m.flatten(1).norm(dim=1).clamp_min(1e-12)
        if mode == "multiplicative":
            delta = strength * (u[:, :, :k] * s[:, None, :k]) @ vh[:, :k]
        else:
            delta = (strength * total / math.sqrt(k))[:, None, None] * (u[:, :, :k] @ vh[:, :k])
        if record is not None:
            record.append((delta.flatten(1).norm(dim=1) / total).cpu())
        return (m + delta).reshape(h.shape).to(h.dtype)

    return hook


@torch.no_grad()
def regenerate(unet: ADMUNet, x: torch.Tensor, t_start: int = 500, steps: int = 10, strength: float = 0.0,
               seed: int = 0, T: int = 1000, *, mode: str = "multiplicative", k: int = 1,
               noise: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """Noise ``x`` (in [0,1]) to ``t_start`` and regenerate it with deterministic DDIM (η=0) steps while the
    h-space perturbation (:func:`svd_perturb_hook`) is active at every step (Fig. 2a). ``noise`` (shape of
    ``x``) replaces the ``seed``-drawn noise. Runs on the UNet's device; returns images in [0,1] there."""
    if not 0 < t_start < T:
        raise ValueError(f"t_start must be in 1..{T - 1}, got {t_start}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dev = unet.time_embed[0].weight.device
    sched = DDPMSchedule(T)
    x0 = x.to(dev).float() * 2 - 1
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, images {tuple(x0.shape)}")
    ts = torch.linspace(t_start, 0, steps + 1).round().long().tolist()
    b = x0.shape[0]
    xt = sched.q_sample(x0, torch.full((b,), ts[0], device=dev), noise.to(dev, x0.dtype))
    prev, unet.h_hook = unet.h_hook, svd_perturb_hook(strength, k, mode, record)
    try:
        for t, t_next in itertools.pairwise(ts):
            tt = torch.full((b,), t, device=dev)
            e = unet(xt, tt)[:, :3]
            x0h = sched.pred_x0(xt, tt, e).clamp(-1, 1)
            a_next = float(sched.abar[t_next]) if t_next > 0 else 1.0
            xt = math.sqrt(a_next) * x0h + math.sqrt(1 - a_next) * e
    finally:
        unet.h_hook = prev
    return ((xt + 1) / 2).clamp(0, 1)


def _features(classifier) -> ResNetFeatures:
    if classifier is None:
        return ResNetFeatures()
    if isinstance(classifier, ResNetFeatures):
        return classifier
    return ResNetFeatures(classifier)


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size`` (keeps the aspect ratio)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)


def study_noise(n: int, size: int, seed: int) -> torch.Tensor:
    """The starting noise of image ``i`` (i < n), drawn from its own seed: the same for every group and level,
    and independent of batching, so each distance compares regenerations that differ only by the
    perturbation and each image is paired across groups."""
    return torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed * 100_003 + i))
                        for i in range(n)])


@torch.no_grad()
def study_groups(clean: torch.Tensor, task: str, without: nn.Module, with_diffloss: nn.Module, *, seed: int = 0,
                 pad_to: int = 16, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The four Fig. 2 groups for one degradation: ``clean`` images (N,3,H,W in [0,1]), their synthetic
    ``task`` degradation (``irlib.data.degrade``: ``"lowlight"``, ``"haze"``, ``"rain"``, ...; seeded, as
    :func:`irlib.classify.degrade_set`), and the degraded images restored by the restorer trained without and
    with DiffLoss for that degradation."""
    from ...classify import degrade_set, restore

    lq = degrade_set(clean, task, seed)
    return {"clean": clean, "degraded": lq,
            "restored w/o DiffLoss": restore(without, lq, device=device, pad_to=pad_to),
            "restored w/ DiffLoss": restore(with_diffloss, lq, device=device, pad_to=pad_to)}


@torch.no_grad()
def hspace_study(unet: ADMUNet, groups: Mapping[str, torch.Tensor], levels: Sequence[float] | None = None, *,
                 mode: str = "multiplicative", t_start: int = 400, ddim_steps: int = 20, seed: int = 0,
                 classifier: nn.Module | None = None, k: int = 1, batch_size: int = 8, keep_images: int = 2,
                 degradation: str = "", T: int = 1000) -> tuple[pd.DataFrame, dict[str, dict[float, torch.Tensor]]]:
    """DiffLoss Fig. 2: how far ResNet-50 features of a DDIM regeneration move when h's top singular component
    is perturbed, per group and perturbation level.

    For every image of every group (``{name: (N,3,H,W) in [0,1]}``): resize (shorter side) and centre-crop to
    the UNet's size, noise to ``t_start`` with the image's own noise (:func:`study_noise`), regenerate with
    ``ddim_steps`` DDIM steps unperturbed (the reference) and at each level (perturbation active at every
    step), and record the L2 distance between the ResNet-50 features of each perturbed regeneration and of
    the reference. Returns ``(rows, images)``: one row per (group, level, image) with columns degradation,
    group, mode, level, level_index (1 for ①, ...), image, distance, rel_perturbation (‖Δh‖/‖h‖ averaged over
    the DDIM steps), t_start, ddim_steps; and ``images[group][level]``: the first ``keep_images``
    regenerations (level 0.0 is the unperturbed reference), on the CPU. One call covers one degradation
    (label it with ``degradation``); concatenate the rows of several calls.

    Choices the paper leaves open (it says only "add noise, perturb the principal component of the SVD of h
    during generation, measure ResNet-50 feature L2 distances"):

    * start timestep ``t_start=400`` of 1000 (ᾱ≈0.2): the unperturbed regeneration keeps the input's layout
      and colours, and the 20 DDIM steps (stride 20) leave the perturbation time to act; noise and DDIM steps
      are identical for the reference and the perturbed runs, so the distance is due to the perturbation.
    * SVD layout: h (the middle block's output, 1024 x 8 x 8 at 256 px) as a C x HW matrix per image; the
      top ``k=1`` singular component (the "principal component"); sign-invariant since only σ1 changes.
    * ``mode="multiplicative"`` (default, the literal reading: scale the principal singular value,
      σ1 -> (1+s)σ1) or ``"additive"`` (σ1 -> σ1 + α‖h‖_F: the same relative perturbation ‖Δh‖/‖h‖ = α
      for every image). Multiplicative perturbations are larger, relative to h, for images whose h is
      dominated by one component, so groups may receive different perturbation sizes; the additive mode
      removes that confound and ``rel_perturbation`` shows it for either mode.
    * ``classifier``: ``None`` builds ImageNet ResNet-50 (:class:`ResNetFeatures`), a torchvision ResNet is
      wrapped (ImageNet-normalised input, pooled 2048-d features: the paper's "output features"), and is moved
      to the UNet's device.

    Narrower than the paper: its images are ImageNet images with synthesized degradations of several types;
    here the caller's images and irlib's synthetic degradations (:func:`study_groups`), one UNet (ADM 256
    unconditional), and Fig. 2b is drawn as distance against level (:func:`plot_hspace_study`) rather than as
    the paper's histogram.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    levels = tuple(float(v) for v in (DEFAULT_LEVELS[mode] if levels is None else levels))
    if not levels or any(v < 0 for v in levels):
        raise ValueError(f"levels must be a non-empty sequence of non-negative strengths, got {levels}")
    if not groups:
        raise ValueError("groups is empty: pass {name: images}")
    feat = _features(classifier)
    dev = unet.time_embed[0].weight.device
    feat.to(dev).eval()
    size = unet.cfg.image_size
    rows, images = [], {}
    for name, x in groups.items():
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"group {name!r}: expected (N,3,H,W) images, got shape {tuple(x.shape)}")
        x = _fit(x.float().clamp(0, 1), size)
        noise = study_noise(len(x), size, seed)
        feats, rel, kept = {}, {}, {}
        for lv in (0.0, *(v for v in levels if v != 0.0)):
            f, r, keep = [], [], []
            for i in range(0, len(x), batch_size):
                rec: list = []
                y = regenerate(unet, x[i:i + batch_size], t_start, ddim_steps, lv, seed, T, mode=mode, k=k,
                               noise=noise[i:i + batch_size], record=rec)
                f.append(feat(y).float().cpu())
                r.append(torch.stack(rec).mean(0))
                if sum(len(c) for c in keep) < keep_images:
                    keep.append(y[:keep_images - sum(len(c) for c in keep)].cpu())
            feats[lv], rel[lv] = torch.cat(f), torch.cat(r)
            kept[lv] = torch.cat(keep) if keep else torch.empty(0, 3, size, size)
        for li, lv in enumerate(levels, start=1):
            dist = (feats[lv] - feats[0.0]).norm(dim=1)
            for i in range(len(x)):
                rows.append({"degradation": degradation, "group": name, "mode": mode, "level": lv, "level_index": li,
                             "image": i, "distance": float(dist[i]), "rel_perturbation": float(rel[lv][i]),
                             "t_start": t_start, "ddim_steps": ddim_steps})
        images[name] = kept
    return pd.DataFrame(rows), images


def hspace_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy summary rows of :func:`hspace_study` (the paper gives no numbers for Fig. 2): per degradation,
    group, mode and level the metrics ``feature_l2_mean``, ``feature_l2_std``, ``feature_l2_ci95`` (half-width
    of the t-interval of the mean) and ``rel_h_perturbation_mean``, with ``n_images``."""
    from scipy import stats

    out = []
    for (deg, grp, mode, lv), s in df.groupby(["degradation", "group", "mode", "level"], sort=False):
        n, d = len(s), s["distance"]
        sd = float(d.std(ddof=1)) if n > 1 else 0.0
        ci = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else 0.0
        for metric, v in (("feature_l2_mean", float(d.mean())), ("feature_l2_std", sd), ("feature_l2_ci95", ci),
                          ("rel_h_perturbation_mean", float(s["rel_perturbation"].mean()))):
            out.append({"degradation": deg, "group": grp, "level": lv, "mode": mode, "metric": metric, "value": v,
                        "n_images": n})
    return pd.DataFrame(out, columns=["degradation", "group", "level", "mode", "metric", "value", "n_images"])


def _circled(i: int) -> str:
    return chr(0x2460 + i - 1) if 1 <= i <= 20 else f"({i})"


def _one_mode(df: pd.DataFrame) -> str:
    modes = list(dict.fromkeys(df["mode"]))
    if len(modes) != 1:
        raise ValueError(f"one perturbation mode per figure, got {modes}: filter the rows by mode")
    return modes[0]


def plot_hspace_study(df: pd.DataFrame, *, error: str = "ci95", title: str | None = None):
    """Fig. 2b as distance against perturbation level: one line per group (mean over images, error bars =
    95% t-interval of the mean or ``error="std"``), one panel per degradation, one mode per figure. Lines of
    different groups are offset slightly along x so no error bar hides another; the legend sits below the
    panels. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    if error not in ("ci95", "std"):
        raise ValueError(f"error must be ci95 or std, got {error!r}")
    if df.empty:
        raise ValueError("no rows to plot")
    mode = _one_mode(df)
    summ = hspace_summary(df).pivot_table(index=["degradation", "group", "level"], columns="metric", values="value",
                                          sort=False)
    degs, groups = list(dict.fromkeys(df["degradation"])), list(dict.fromkeys(df["group"]))
    lv_index = df.drop_duplicates("level").set_index("level")["level_index"].sort_values()
    sym, text = _MODE_TEXT[mode]
    fig, axes = plt.subplots(1, len(degs), figsize=(4.4 * len(degs) + 0.6, 4.0), sharey=True, squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.3 / max(1, len(groups) - 1)
    for ax, deg in zip(axes[0], degs):
        for gi, grp in enumerate(groups):
            if (deg, grp) not in summ.index.droplevel("level"):
                continue
            s = summ.loc[(deg, grp)]
            color, marker = _GROUP_STYLE.get(grp, (cycle[gi % len(cycle)], "ov^sDP*X"[gi % 8]))
            x = lv_index.loc[s.index].to_numpy() + (gi - (len(groups) - 1) / 2) * width
            ax.errorbar(x, s["feature_l2_mean"], yerr=s["feature_l2_" + error], label=grp, color=color,
                        marker=marker, markersize=6, linewidth=1.8, capsize=4, zorder=3 + gi)
        ax.set_xticks(lv_index.to_numpy(), [f"{_circled(i)}\n{sym}={lv:g}" for lv, i in lv_index.items()])
        ax.set_xlabel(f"perturbation level ({text})")
        ax.set_title(deg or "all images")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel(Y_LABEL.replace(" to the", "\nto the"))
    handles, labels = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    bars = "95% CI of the mean" if error == "ci95" else "± 1 s.d."
    fig.suptitle(title or f"DiffLoss Fig. 2b: feature distance vs h-space perturbation ({mode}; bars: {bars})")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(4, len(labels)),
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    return fig


def plot_regeneration_strip(images_by_level: Mapping[str, Mapping[float, torch.Tensor]], *,
                            inputs: Mapping[str, torch.Tensor] | None = None, index: int = 0, mode: str | None = None,
                            title: str | None = None):
    """Fig. 2a: one row per group, the (optional) input and its regenerations at level 0 (unperturbed) and
    ①-④ for image ``index``. ``images_by_level`` is :func:`hspace_study`'s second output (tensors (N,3,H,W)
    or (3,H,W) in [0,1]); ``inputs`` maps the same group names to the input images. Returns the Figure."""
    import matplotlib.pyplot as plt

    groups = list(images_by_level)
    if not groups:
        raise ValueError("images_by_level is empty")
    levels = sorted({float(lv) for g in groups for lv in images_by_level[g]})
    ncols = len(levels) + (inputs is not None)
    fig, axes = plt.subplots(len(groups), ncols, figsize=(1.7 * ncols, 1.8 * len(groups) + 0.5), squeeze=False)
    sym = _MODE_TEXT[mode][0] if mode in _MODE_TEXT else "level"

    def show(ax, img, label):
        img = img if img.dim() == 3 else img[index] if len(img) > index else None
        if img is None:
            raise IndexError(f"image {index} not kept for {label}: pass keep_images > {index} to hspace_study")
        ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_xticks([])
        ax.set_yticks([])

    nonzero = [lv for lv in levels if lv != 0.0]
    for r, g in enumerate(groups):
        cols = ([("input", inputs[g])] if inputs is not None else []) + \
               [("unperturbed" if lv == 0.0 else f"{_circled(nonzero.index(lv) + 1)} {sym}={lv:g}",
                 images_by_level[g].get(lv)) for lv in levels]
        for c, (label, img) in enumerate(cols):
            ax = axes[r][c]
            if img is None:
                ax.axis("off")
                continue
            show(ax, img, f"{g} / {label}")
            if r == 0:
                ax.set_title(label, fontsize=9)
        axes[r][0].set_ylabel(g, fontsize=9)
    fig.suptitle(title or "DiffLoss Fig. 2a: regenerations with increasing h-space perturbation")
    fig.tight_layout()
    return fig


def hspace_caption(df: pd.DataFrame, error: str = "ci95") -> str:
    """One-sentence caption for :func:`plot_hspace_study` of these rows."""
    mode = _one_mode(df)
    n = df.groupby(["degradation", "group"]).image.nunique()
    degs = [d for d in dict.fromkeys(df["degradation"]) if d]
    return (f"L2 distance between ImageNet-normalised ResNet-50 features of DDIM regenerations with the top singular "
            f"component of the UNet's h-space perturbed ({mode}: {_MODE_TEXT[mode][1]}, levels ①–"
            f"{_circled(int(df.level_index.max()))}) and of the unperturbed regeneration from the same noise; "
            f"mean and {'95% t-interval' if error == 'ci95' else 'standard deviation'} over "
            f"{n.min()}{'' if n.min() == n.max() else f'–{n.max()}'} images per group; DDIM "
            f"{int(df.ddim_steps.iloc[0])} steps from t={int(df.t_start.iloc[0])}"
            + (f"; degradations: {', '.join(degs)}" if degs else "") + ".")


def strip_caption(mode: str, degradation: str = "") -> str:
    """One-sentence caption for :func:`plot_regeneration_strip`."""
    return (f"One image of each group{f' ({degradation})' if degradation else ''} regenerated by DDIM from the same "
            f"noise with the h-space top singular component perturbed at increasing levels ① to ④ ({mode}: "
            f"{_MODE_TEXT[mode][1]}); the first column after the input is the unperturbed regeneration.")


def save_hspace_figures(df: pd.DataFrame, out_dir, *, smoke: bool, strips: Mapping[str, Mapping] | None = None,
                        inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None, error: str = "ci95") -> list:
    """Save Fig. 2b (one file per mode in ``df``, part = mode) and Fig. 2a strips with
    :func:`irlib.figures.save_figure`; returns the PNG paths. ``strips`` maps a part label of the form
    ``"<degradation>, <mode>"`` (e.g. ``"lowlight, multiplicative"``) to :func:`hspace_study`'s images,
    ``inputs`` the same labels to ``{group: images}``."""
    import matplotlib.pyplot as plt

    from ...figures import save_figure

    paths = []
    for mode in dict.fromkeys(df["mode"]):
        sub = df[df["mode"] == mode]
        fig = plot_hspace_study(sub, error=error)
        paths.append(save_figure(fig, out_dir, figure="Fig. 2b", paper="diffloss", part=mode, smoke=smoke,
                                 title=fig.get_suptitle(), caption=hspace_caption(sub, error)))
        plt.close(fig)
    for label, imgs in (strips or {}).items():
        deg, _, mode = label.rpartition(", ")
        if mode not in MODES:
            raise ValueError(f"strip label {label!r} must end with ', <mode>' (one of {MODES})")
        fig = plot_regeneration_strip(imgs, inputs=(inputs or {}).get(label), mode=mode)
        paths.append(save_figure(fig, out_dir, figure="Fig. 2a", paper="diffloss", part=label, smoke=smoke,
                                 title=fig.get_suptitle(), caption=strip_caption(mode, deg)))
        plt.close(fig)
    return paths
