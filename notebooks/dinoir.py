# %% [markdown]
# # DINO-IR (Tables 1–6; Figs. 3a/3b, 5; PSF gating scores)
# DINOv2 features fused by PSF, injected by D-R fusion into a Restormer, plus the DPC loss. Smoke profile:
# a tiny **random** ViT with DINOv2's code path, a tiny Restormer, offline photos — a pipeline check only.

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/dinoir"

# %%
import matplotlib.pyplot as plt
import torch
from irlib import dinoir, experiment as ex
from irlib.data import add_noise, add_rain, gaussian_blur
from irlib.losses import LOSSES
from irlib.models.restormer import TINY
from irlib.results import Results
from irlib.train import evaluate

P = ex.get_profile(profile)
small = P.name == "smoke"
ex.enable_checkpoints(f"{out_dir}/checkpoints", enabled=not small)  # full runs resume after a crash
R = Results("dinoir", P.name, P.weights, out_dir)
dino = dinoir.DINOFeatures(pretrained=P.pretrained, tiny=small, img_size=56 if small else 224)
train, test = ex.offline_split(P)
arch = TINY if small else {}
# task -> (paper setting, paper test set); multi-task training mixes noise, blur, rain, haze
COLS = {"rain": ("multi-task; deraining; rain=High", "DID"), "rain_m": ("multi-task; deraining; rain=Medium", "DID"),
        "noise15": ("multi-task; denoising; sigma=15", "BSD68"), "noise25": ("multi-task; denoising; sigma=25", "BSD68"),
        "noise50": ("multi-task; denoising; sigma=50", "BSD68"), "blur": ("multi-task; deblurring", "DID"),
        "haze": ("multi-task; dehazing", "SOTS")}
MIX = ["noise15", "noise25", "noise50", "blur", "rain", "haze"]
# full profile: which local set each column is measured on, and which set each task trains on (paper: DID + OTS)
TEST_SET = {"rain": "DID-High", "rain_m": "DID-Medium", "noise15": "BSD68", "noise25": "BSD68", "noise50": "BSD68",
            "blur": "DID", "haze": "SOTS"}
TRAIN_SET = {"noise15": "DID-train-clean", "noise25": "DID-train-clean", "noise50": "DID-train-clean",
             "blur": "DID-train-clean", "rain": "DID-train", "haze": "OTS"}
pairs = {t: ex.try_pairs(R, "Table 1", P, TEST_SET[t], "rain" if t == "rain_m" else t, data_root, test) for t in COLS}
if small:  # the offline set has one rain level: "Medium" uses lighter synthetic streaks
    pairs["rain_m"] = [(add_rain(gt[None], 1234 + k, density=0.01)[0], gt) for k, (_, gt) in enumerate(pairs["rain"])]

def fit(use_psf=True, dpc=False, tasks=MIX, layers=None, s=0, train_sets=TRAIN_SET):
    torch.manual_seed(seed + s)
    d = dino if layers is None else dinoir.DINOFeatures(pretrained=P.pretrained, tiny=small, img_size=dino.img_size, layers=layers)
    if small and layers is not None:
        d.vit.load_state_dict(dino.vit.state_dict(), strict=False)
    m = dinoir.DINOIR(d, use_psf=use_psf, **arch)
    terms = {"l1": (1.0, LOSSES["l1"])}
    if dpc:
        terms["dpc"] = (1.0, dinoir.DPCLoss(dino))
    src = ex.multi_task_data(P, {t: train_sets[t] for t in tasks}, data_root, train)
    _, tr = ex.train_eval(m, terms, src, tasks, [], P, seed + s, device=device)
    return tr.eval_model()

def score(model, table, method, tasks=COLS, setting_fn=lambda t: COLS[t][0], metrics=("PSNR", "SSIM")):
    for t in tasks:
        if pairs.get(t) is None:
            continue
        df = evaluate(model, pairs[t], device=device, pad_to=8)
        for metric in metrics:
            R.add(table, method, metric, df[metric].mean(), setting=setting_fn(t), dataset="offline-photos" if small else COLS[t][1],
                  paper_dataset=COLS[t][1])
    return model

# %% Table 3 (and the Table 1 rows for Restormer / DINO-IR): PSF and DPC ablation, multi-task
base = score(fit(use_psf=False), "Table 3", "Baseline (Restormer)")
score(fit(use_psf=True), "Table 3", "with PSF (Restormer)")
score(fit(use_psf=False, dpc=True), "Table 3", "with DPC (Restormer)")
full = score(fit(use_psf=True, dpc=True), "Table 3", "DINO-IR")
score(base, "Table 1", "Restormer"); score(full, "Table 1", "DINO-IR")
print("PSF gating scores (shallow, medium, deep):", full.psf.last_scores.mean(0).tolist())
for name, v in zip(("shallow", "medium", "deep"), full.psf.last_scores.mean(0).tolist()):
    R.add("Text", "DINO-IR (PSF gating network)", "score", v, setting=f"DINOv2 features={name}", dataset="offline-photos" if small else "")

# %% Table 2: single-task denoising (one model for sigma 15/25/50), BSD68 and Urban100 columns
single = fit(use_psf=True, dpc=True, tasks=["noise15", "noise25", "noise50"], train_sets=dict.fromkeys(["noise15", "noise25", "noise50"], "BSD400"))
for ds_name in ("BSD68", "Urban100"):
    with ex.skip_missing(R, "Table 2", "DINO-IR"):
        for sig in (15, 25, 50):
            prs = ex.eval_pairs(P, ds_name, f"noise{sig}", data_root, test)
            df = evaluate(single, prs, device=device, pad_to=8)
            for metric in ("PSNR", "SSIM"):
                R.add("Table 2", "DINO-IR", metric, df[metric].mean(), setting=f"single-task; sigma={sig}",
                      dataset="offline-photos" if small else ds_name, paper_dataset=ds_name)

# %% Table 4: unseen noise level sigma=100
pairs["noise100"] = ex.try_pairs(R, "Table 4", P, "BSD68", "noise100", data_root, test)
pairs["rain100"] = ex.try_pairs(R, "Table 4", P, "Rain100L", "rain", data_root, test)
COLS["noise100"] = ("multi-task (4 degradations); unseen noise level; sigma=100", "BSD68")
COLS["rain100"] = ("multi-task (4 degradations); unseen dataset", "Rain100")
score(full, "Table 4", "DINO-IR", ["noise100", "rain100"])

# %% Table 5: which DINOv2 layer (single layer into PSF), deraining only
L = dino.layers
for method, setting, layers in [("V1 (Restormer+shallow DINOv2)", "DINOv2 layer=shallow", (L[0],)),
                                ("V2 (Restormer+medium DINOv2)", "DINOv2 layer=medium", (L[1],)),
                                ("V3 (Restormer+deep DINOv2)", "DINOv2 layer=deep", (L[2],))]:
    m = fit(layers=layers, tasks=["rain"], train_sets={"rain": "Rain100L-train"})
    if pairs["rain100"] is None:
        continue
    df = evaluate(m, pairs["rain100"], device=device, pad_to=8)
    R.add("Table 5", method, "PSNR", df.PSNR.mean(), setting=setting, dataset="offline-photos" if small else "Rain100L", paper_dataset="Rain100L")

# %% Table 6: deblurring as the number of training tasks grows
for k, combo in enumerate((["blur"], ["blur", "noise25"], ["blur", "noise25", "rain"], ["blur", "noise25", "rain", "haze"]), 1):
    tag = {1: "tasks=1 (B)", 2: "tasks=2 (B+N)", 3: "tasks=3 (B+N+R)", 4: "tasks=4 (B+N+R+H)"}[k]
    for method, psf in (("Baseline (Restormer)", False), ("DINO-IR", True)):
        score(fit(use_psf=psf, dpc=psf, tasks=combo), "Table 6", method, ["blur"], setting_fn=lambda t, tag=tag: tag)

# %% Fig. 3b: PSNR deviation of image, patch-embedding features and DINOv2 features across noise levels
img = test[0]
rob = dinoir.noise_robustness(dino, img, seed=seed)
var = rob.groupby("kind").PSNR.var()
for kind, method in (("image", "degraded image"), ("f_IMAGE", "f_IMAGE (patch-embedding features)"), ("f_DINO", "f_DINO (DINOv2 features)")):
    R.add("Fig. 3b", method, "variance", var[kind], setting="varying noise levels", dataset="offline-photos" if small else "")
fig, ax = plt.subplots(figsize=(5, 3))
rob.pivot(index="sigma", columns="kind", values="deviation").plot.bar(ax=ax); ax.set_ylabel("PSNR - mean")
fig.savefig(f"{out_dir}/fig3b_deviation.png", dpi=80, bbox_inches="tight")

# %% Fig. 3a: PCA of deep DINOv2 features of clean / rainy / noisy / blurry versions, as RGB
versions = {"clean": img, "rainy": add_rain(img[None], seed)[0], "noisy": add_noise(img[None], 25, seed, clip=True)[0],
            "blurry": gaussian_blur(img[None], 2.5)[0]}
maps = dinoir.pca_rgb(dino, versions)
fig, ax = plt.subplots(2, 4, figsize=(10, 5))
for i, (k, v) in enumerate(versions.items()):
    ax[0, i].imshow(v.permute(1, 2, 0).numpy()); ax[0, i].set_title(k); ax[0, i].axis("off")
    ax[1, i].imshow(maps[k]); ax[1, i].axis("off")
fig.savefig(f"{out_dir}/fig3a_pca.png", dpi=80, bbox_inches="tight")

# %% Fig. 5: shallow DINOv2 features for heavy rain, light rain and no rain (PCA as RGB, fitted on no rain)
rain = {"no rain": img, "light rain": add_rain(img[None], seed, density=0.005)[0], "heavy rain": add_rain(img[None], seed, density=0.04)[0]}
maps5 = dinoir.pca_rgb(dino, rain, layer=dino.layers[0])
with torch.no_grad():
    f = {k: dino(v[None], [dino.layers[0]])[0] for k, v in rain.items()}
print({k: float((f[k] - f["no rain"]).abs().mean()) for k in f})  # light rain should sit closer to clean than heavy
fig, ax = plt.subplots(2, 3, figsize=(8, 5))
for i, (k, v) in enumerate(rain.items()):
    ax[0, i].imshow(v.permute(1, 2, 0).numpy()); ax[0, i].set_title(k); ax[0, i].axis("off")
    ax[1, i].imshow(maps5[k]); ax[1, i].axis("off")
fig.savefig(f"{out_dir}/fig5_shallow_rain.png", dpi=80, bbox_inches="tight")

# %%
R.save()
R.show()[["table", "method", "setting", "metric", "value", "paper_value"]]
