"""DINO-IR's DINOv2 analyses as plan studies: Fig. 3a (joint PCA), Fig. 3b (noise robustness), Fig. 5
(shallow-feature distances) and the PSF gating scores. ``fn(ctx: StudyContext, **kw) -> DataFrame``."""
from __future__ import annotations


from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


if TYPE_CHECKING:
    import pandas as pd

import pandas as pd

from ...dinoir import DPC_LAYERS
from ...models.dinoir import DEFAULT_LAYERS, LAYER_NAMES, DINOFeatures

FIG3B_SIGMAS = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)
"""Fig. 3b's noise levels (0-255 scale): an irlib choice, the paper does not print them. For additive Gaussian
noise the noisy image's PSNR is 20 log10(255/σ) whatever the image, so the image's variance over σ depends on the
list alone: this list gives 36.5 dB² (population variance), next to the paper's 36.85; e.g. (15, 25, 50) gives
18.2 and (5, 10, 15, 25, 35, 50, 75) 57.6."""


FEATURE_PSNR = ("minmax", "clean-range")


def feature_psnr(f: torch.Tensor, f_clean: torch.Tensor, norm: str = "minmax") -> float:
    """PSNR of a feature map against the clean one, read as images.

    ``minmax`` (default): each map min-max normalised to [0, 1] on its own, peak 1 — features shown as images.
    ``clean-range``: raw features, peak = the clean map's value range. Under ``clean-range`` a linear map of the
    image (the patch embedding, f_IMAGE) has MSE ∝ σ² exactly like the image, so f_IMAGE's PSNR variance over
    σ equals the image's (36.5 vs 36.5 dB² for :data:`FIG3B_SIGMAS`), whereas the paper reports 10.47 vs 36.85:
    its feature PSNR cannot be a fixed-peak one, and per-map normalisation is the reading that fits. The paper
    does not say; both are kept (the study records both)."""
    f, f_clean = f.double(), f_clean.double()
    if norm == "minmax":
        a = (f - f.min()) / (f.max() - f.min()).clamp_min(1e-12)
        b = (f_clean - f_clean.min()) / (f_clean.max() - f_clean.min()).clamp_min(1e-12)
        return 10.0 * float(torch.log10(1.0 / F.mse_loss(a, b)))
    if norm != "clean-range":
        raise ValueError(f"feature PSNR norm must be one of {FEATURE_PSNR}, got {norm!r}")
    peak = float(f_clean.max() - f_clean.min())
    mse = float(F.mse_loss(f, f_clean))
    return 10.0 * np.log10(peak ** 2 / mse)


def centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """The central ``side`` x ``side`` square of a (..., H, W) image."""
    h, w = x.shape[-2:]
    if side > min(h, w):
        raise ValueError(f"a {side}-pixel crop does not fit a {w}x{h} image")
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def native_side(dino: DINOFeatures, x: torch.Tensor) -> int:
    """The largest square the ViT can see without resampling: ``img_size`` when the image is large enough (the
    full profile: 224 on 321x481 CBSD68 images), else the image's short side rounded down to the patch size
    (the ViT then resizes it, and the image PSNR is measured on that resized view)."""
    return min(dino.img_size, min(x.shape[-2:]) // dino.patch * dino.patch)


@torch.no_grad()
def noise_robustness(dino: DINOFeatures, clean: torch.Tensor, sigmas: Sequence[float] = FIG3B_SIGMAS, seed: int = 0,
                     layer: int | None = None, clip: bool = False, norm: str = "minmax") -> pd.DataFrame:
    """Fig. 3b for one clean image: PSNR to the clean counterpart of the noisy image, of its patch embedding
    (f_IMAGE) and of deep DINOv2 features (f_DINO) at each noise level σ (0-255 scale).

    All three are measured on the same pixels: the image is centre-cropped to :func:`native_side`, and the image
    PSNR is taken on :meth:`DINOFeatures.view` — exactly what the ViT receives. ``deviation`` = PSNR minus its
    mean over the levels (the paper's bars). Noise is unclipped (the denoising benchmarks' convention) unless
    ``clip``. Feature PSNR per :func:`feature_psnr` (``norm``); ``PSNR_clean_range`` holds the other reading."""
    import pandas as pd

    from ...data.degrade import add_noise
    from ...metrics import psnr

    layer = dino.layers[-1] if layer is None else layer
    x = clean[None] if clean.dim() == 3 else clean
    x = centre_crop(x, native_side(dino, x))
    v_clean, f_clean, e_clean = dino.view(x), dino(x, [layer])[0], dino.patch_embed(x)
    rows = []
    for k, s in enumerate(sigmas):
        y = add_noise(x, s, seed * 1000 + k, clip=clip)
        e, f = dino.patch_embed(y), dino(y, [layer])[0]
        im = float(psnr(dino.view(y), v_clean)[0])
        rows += [{"sigma": s, "kind": "image", "PSNR": im, "PSNR_clean_range": im},
                 {"sigma": s, "kind": "f_IMAGE", "PSNR": feature_psnr(e, e_clean, norm),
                  "PSNR_clean_range": feature_psnr(e, e_clean, "clean-range")},
                 {"sigma": s, "kind": "f_DINO", "PSNR": feature_psnr(f, f_clean, norm),
                  "PSNR_clean_range": feature_psnr(f, f_clean, "clean-range")}]
    df = pd.DataFrame(rows)
    df["deviation"] = df["PSNR"] - df.groupby("kind")["PSNR"].transform("mean")
    df.attrs["side"] = int(x.shape[-1])
    return df


def joint_pca(feats: dict[str, torch.Tensor], fit_on: Sequence[str] | None = None, n: int = 3):
    """PCA of (D, h, w) patch features fitted jointly on the patches of every image (as Amir et al. project the
    descriptors of an image set), or only on those named in ``fit_on``. Returns the fitted
    :class:`sklearn.decomposition.PCA` and each image's (h, w, n) projection."""
    from sklearn.decomposition import PCA

    flat = {k: f.reshape(f.shape[0], -1).T.double().cpu().numpy() for k, f in feats.items()}
    names = list(fit_on or flat)
    pca = PCA(n_components=n).fit(np.concatenate([flat[k] for k in names]))
    proj = {k: pca.transform(v).reshape(*feats[k].shape[1:], n) for k, v in flat.items()}
    return pca, proj


def pca_rgb(feats: dict[str, torch.Tensor], fit_on: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Fig. 3a / Fig. 5 colouring: the first three joint principal components of every image's features, each
    scaled to [0, 1] with its minimum and maximum over all images (one colour scale for the whole row)."""
    _, proj = joint_pca(feats, fit_on)
    allp = np.concatenate([p.reshape(-1, 3) for p in proj.values()])
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    return {k: np.clip((p - lo) / (hi - lo + 1e-12), 0, 1) for k, p in proj.items()}


def _pairs(ctx, dataset: str, task: str, limit: int | None):
    from ...engine.runner import test_pairs
    from ...engine.spec import TestSet

    return test_pairs(TestSet(dataset, task, limit=limit), ctx.data_root)


def _save_arrays(ctx, name: str, **arrays) -> None:
    """``<study folder>/<name>.npz``, written atomically (the figures read it)."""
    import os

    tmp = ctx.out / f".{name}.partial.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, ctx.out / f"{name}.npz")


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()


def _frame(rows: list[dict]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=["table", "method", "setting", "dataset", "metric", "value", "n_images", "notes"])


@torch.no_grad()
def fig3b_study(ctx, dataset: str, limit: int | None = None, sigmas: Sequence[float] = FIG3B_SIGMAS,
                layer: int | None = None, clip: bool = False, seed: int = 0, norm: str = "minmax") -> pd.DataFrame:
    """Fig. 3b's three variances (rows keyed as the reference: table ``Fig. 3b``, setting ``varying noise
    levels``, dataset empty, metric ``variance``): for each clean image of ``dataset``, the population variance
    over ``sigmas`` of the PSNR of the noisy image, of f_IMAGE and of f_DINO (the deep block, PSF's
    :data:`DEFAULT_LAYERS`[-1]); the row is its mean over the images. Feature PSNR: :func:`feature_psnr`'s
    ``norm``. Per-level PSNRs (both feature conventions) and deviations go to ``fig3b.csv``."""
    import pandas as pd

    dino = ctx.fb.dino(DEFAULT_LAYERS).to(ctx.device)
    frames = []
    for i, (_, gt) in enumerate(_pairs(ctx, dataset, "noise25", limit)):
        df = noise_robustness(dino, gt.to(ctx.device), sigmas, seed + i, layer, clip, norm)
        frames.append(df.assign(image=i, side=df.attrs["side"]))
    per = pd.concat(frames, ignore_index=True)
    per.to_csv(ctx.out / "fig3b.csv", index=False)
    var = per.groupby(["image", "kind"]).PSNR.var(ddof=0).groupby("kind").mean()
    n = per.image.nunique()
    lay = dino.layers[-1] if layer is None else layer
    note = (f"population variance over sigma in {{{', '.join(f'{s:g}' for s in sigmas)}}} (0-255 scale, irlib "
            f"choice), mean over {n} images of {dataset}; ViT input = centre {int(per.side.iloc[0])} px crop; "
            f"feature PSNR: {norm}")
    names = {"image": "degraded image", "f_IMAGE": "f_IMAGE (patch-embedding features)",
             "f_DINO": "f_DINO (DINOv2 features)"}
    return _frame([{"table": "Fig. 3b", "method": names[k], "setting": "varying noise levels", "dataset": "",
                    "metric": "variance", "value": float(var[k]), "n_images": n,
                    "notes": note + (f"; f_DINO = block {lay + 1} (deep)" if k == "f_DINO" else "")} for k in names])


@torch.no_grad()
def fig3a_study(ctx, dataset: str, image: int = 0, layer: int | None = None, sigma: float = 25.0,
                blur_sigma: float = 2.5, seed: int = 0) -> pd.DataFrame:
    """Fig. 3a: deep DINOv2 features of one clean image and its rainy, noisy and blurry versions, projected on
    three principal components fitted jointly on all four images' patches (Amir et al.'s visualisation).
    The rainy version is the test set's real rainy image (DID); noise σ=25 and blur (k=15, σ=2.5) are the middle
    of the paper's training ranges. Saves ``fig3a.npz``; rows (table ``Fig. 3a``, not in the paper): the mean
    cosine similarity of each version's patch features to the clean ones."""
    from ...data.degrade import add_noise, gaussian_blur

    dino = ctx.fb.dino(DEFAULT_LAYERS).to(ctx.device)
    layer = dino.layers[-1] if layer is None else layer
    rainy, clean = _pairs(ctx, dataset, "rain", image + 1)[image]
    side = min(clean.shape[-2:])
    clean, rainy = centre_crop(clean, side)[None], centre_crop(rainy, side)[None]
    versions = {"clean": clean, "rainy": rainy, "noisy": add_noise(clean, sigma, seed, clip=True),
                "blurry": gaussian_blur(clean, blur_sigma)}
    feats = {k: dino(v.to(ctx.device), [layer])[0][0] for k, v in versions.items()}
    pca, _ = joint_pca(feats)
    maps = pca_rgb(feats)
    names = list(versions)
    _save_arrays(ctx, "fig3a", names=np.array(names), images=np.stack([_hwc(versions[k][0]) for k in names]),
                 maps=np.stack([maps[k] for k in names]), layer=layer, pca_mean=pca.mean_,
                 explained=pca.explained_variance_ratio_)
    ref = feats["clean"].flatten(1)
    return _frame([{"table": "Fig. 3a", "method": f"DINOv2 block {layer + 1} features", "setting": k,
                    "dataset": "", "metric": "cosine similarity to clean",
                    "value": float(F.cosine_similarity(feats[k].flatten(1), ref, dim=0).mean()), "n_images": 1,
                    "notes": f"image {image} of {dataset}"} for k in names[1:]])


@torch.no_grad()
def gating_study(ctx, testsets: Sequence[tuple[str, str]], limit: int | None = None) -> pd.DataFrame:
    """The PSF gating scores the paper quotes (0.30/0.32/0.38): the trained DINO-IR's (``ctx.spec.deps[0]``)
    gate output on the test images of ``testsets`` (``(data reference, task)`` pairs; Table 1's seven columns),
    averaged over all images. Rows keyed as the reference (table ``Text``, dataset empty, metric ``score``);
    the per-test-set means go to ``gating.csv``."""
    import pandas as pd

    model = ctx.model(ctx.spec.deps[0])
    if not getattr(model, "use_psf", False):
        raise ValueError("the gating study needs a DINO-IR run with PSF (use_psf=True)")
    layers = model.dino[0].layers
    names = [LAYER_NAMES[DEFAULT_LAYERS.index(i)] if i in DEFAULT_LAYERS else f"block {i + 1}" for i in layers]
    per = []
    for ds, task in testsets:
        for k, (lq, _) in enumerate(_pairs(ctx, ds, task, limit)):
            model.context(lq[None].to(ctx.device))   # runs DINOv2 and PSF; the gate's scores are kept
            per.append({"dataset": ds, "task": task, "image": k,
                        **dict(zip(names, model.psf.last_scores[0].cpu().tolist()))})
    per = pd.DataFrame(per)
    per.groupby(["dataset", "task"])[names].mean().to_csv(ctx.out / "gating.csv")
    note = (f"mean over {len(per)} test images of {', '.join(f'{d} ({t})' for d, t in testsets)}; the paper does not "
            "say on which images")
    return _frame([{"table": "Text", "method": "DINO-IR (PSF gating network)", "setting": f"DINOv2 features={n}",
                    "dataset": "", "metric": "score", "value": float(per[n].mean()), "n_images": len(per),
                    "notes": note} for n in names])


def derain(model: nn.Module, heavy: torch.Tensor, pad: int = 8) -> torch.Tensor:
    """The "little rain" image of Fig. 5: the heavy-rain image after a trained derainer (initial rain removal)."""
    from ...train import padded_forward

    with torch.no_grad():
        return padded_forward(model, heavy[None], pad)[0].clamp(0, 1)


FIG5_LIGHT = "light rain (heavy rain after initial rain removal)"
FIG5_CLOSER = "light rain closer to no rain than heavy rain"


def fig5_features(layers: Sequence[int]) -> str:
    """The method label of Fig. 5's feature rows."""
    return f"DINOv2 shallow features (blocks {', '.join(str(i + 1) for i in layers)})"


@torch.no_grad()
def fig5_study(ctx, dataset: str, limit: int | None = None, layers: Sequence[int] = DPC_LAYERS,
               image: int = 0, label: str = "DID") -> pd.DataFrame:
    """Fig. 5 as a test of the paper's claim: shallow DINOv2 features of a heavy-rain image, of the same image
    after initial rain removal ("little rain": the output of the trained derainer ``ctx.spec.deps[0]``) and of
    the clean image. Rows (table ``Fig. 5``, not in the reference): the mean over images of the L1 distance of
    each version's features (mean over ``layers``) to the clean image's, the share of images where the derained
    version is closer, and both versions' image PSNR. ``fig5.npz`` holds image ``image``'s three versions and
    their joint-PCA colouring."""
    from ...metrics import psnr
    from ...models import zoo

    run = ctx.spec.deps[0]
    model = ctx.model(run)
    pad = zoo.pad(run.net, run.size)
    dino = ctx.fb.dino(tuple(layers)).to(ctx.device)
    dist: dict[str, list[float]] = {"heavy rain": [], "light rain": []}
    img_psnr: dict[str, list[float]] = {"heavy rain": [], "light rain": []}
    shown = None
    for k, (heavy, clean) in enumerate(_pairs(ctx, dataset, "rain", limit)):
        heavy, clean = heavy.to(ctx.device), clean.to(ctx.device)
        versions = {"heavy rain": heavy, "light rain": derain(model, heavy, pad), "no rain": clean}
        f = {n: dino(v[None], layers) for n, v in versions.items()}
        for n in dist:
            dist[n].append(float(np.mean([F.l1_loss(a, b).item() for a, b in zip(f[n], f["no rain"])])))
            img_psnr[n].append(float(psnr(versions[n][None], clean[None])[0]))
        if k == image:
            cat = {n: torch.cat(v, dim=1)[0] for n, v in f.items()}
            maps = pca_rgb(cat)
            shown = dict(names=np.array(list(versions)), images=np.stack([_hwc(v) for v in versions.values()]),
                         maps=np.stack([maps[n] for n in versions]))
    if shown is None:
        raise ValueError(f"{dataset} has fewer than {image + 1} test images")
    _save_arrays(ctx, "fig5", **shown, layers=np.array(layers), dist_heavy=np.array(dist["heavy rain"]),
                 dist_light=np.array(dist["light rain"]))
    n = len(dist["heavy rain"])
    what = fig5_features(layers)
    note = (f"{n} rainy/clean pairs of {dataset}; light rain = the heavy-rain image after the trained "
            f"{run.label or run.net} (initial rain removal)")
    rows = []
    for v, setting in (("heavy rain", "heavy rain"), ("light rain", FIG5_LIGHT)):
        rows.append({"table": "Fig. 5", "method": what, "setting": setting, "dataset": label, "n_images": n,
                     "metric": "L1 distance to no rain", "value": float(np.mean(dist[v])), "notes": note})
        rows.append({"table": "Fig. 5", "method": "image", "setting": setting, "dataset": label, "n_images": n,
                     "metric": "PSNR", "value": float(np.mean(img_psnr[v])), "notes": note})
    closer = float(np.mean(np.array(dist["light rain"]) < np.array(dist["heavy rain"])))
    rows.append({"table": "Fig. 5", "method": what, "setting": FIG5_CLOSER,
                 "dataset": label, "metric": "share of images", "value": closer, "n_images": n, "notes": note})
    return _frame(rows)
