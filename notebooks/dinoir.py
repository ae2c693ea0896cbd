# %% [markdown]
# # DINO-IR — Multi-task Image Restoration Guided by Robust DINO Features (Tables 1–6; Figs. 1b, 3a, 3b, 5–7; gating scores)
# A frozen DINOv2 ViT-S/14 gives shallow, medium and deep features; PSF mixes them with a gate over three CNN
# experts (Eqs. 1–4), D-R fusion injects the result into a Restormer by channel attention (Eq. 5), and the DPC loss
# pulls the output's shallow DINOv2 features towards the clean image's and away from the input's (Eq. 6,
# L = L1 + 1·L_DPC). `irlib.dinoir` holds the model, the loss and the DINOv2 analyses; the experiments live in one
# plan (`irlib.papers.dinoir.plan`: 15 trainings — the multi-task Restormer / +PSF / +DPC / DINO-IR ablation shared
# by Tables 1, 3, 4 and 6, three more Table 6 pairs, the single-task denoiser and Table 5's V0–V3), which this
# notebook, `irlib plan` and the tests read. The other methods' rows of Tables 1, 2 and 4 are the paper's citations.
#
# Profiles: **smoke** — tiny networks, the offline photos, a tiny random ViT with DINOv2's code path, 24 steps (a
# pipeline check); **rehearse** — the full plan on synthetic images in the benchmarks' folder layouts, 2 steps per
# run, the real ViT-S/14 architecture with random weights; **full** — the paper's settings (run it with
# `irlib reproduce --executor local|slurm`).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/smoke/dinoir"
runs_dir = ""         # run store; default <out_dir>/../runs (shared with the other notebooks of a reproduce)
only = ""             # comma-separated tables/figures to keep, e.g. "Table 5,Fig. 3b"
skip_data = ""        # comma-separated missing datasets (irlib reproduce --skip-missing): their tables become skip rows
only_runs = ""        # file of run keys to keep (irlib reproduce --only-runs); their rows run, the others show as not run
dinov2_weights = ""   # local timm DINOv2 ViT-S/14 file (instead of downloading vit_small_patch14_dinov2.lvd142m)
per_sigma = False     # one denoiser per noise level in the single-task setting (default: one for sigma 15/25/50)
dpc = "shallow"       # one of: shallow, psf (the DINOv2 layers the DPC loss compares)
rain_channel = "rgb"  # one of: rgb, y (the channel deraining rows are measured on)
derainer = "multi-task"  # one of: multi-task, v0 (the Restormer that Fig. 5 uses for its "little rain" image)

# %%
from irlib.notebook import session

S = session("dinoir", profile=profile, device=device, data_root=data_root, seed=seed, out_dir=out_dir,
            runs_dir=runs_dir, files={"dinov2": dinov2_weights} if dinov2_weights else None,
            only=only, skip_data=skip_data,
            only_runs=only_runs, options={"per_sigma": per_sigma, "dpc": dpc, "rain_channel": rain_channel,
                                          "derainer": derainer})
S.overview()

# %% [markdown]
# ## Training and evaluation
# Runs already in the store (finished by `irlib reproduce`'s executor, or by an earlier run of this notebook) are
# not trained again; an interrupted run resumes from its checkpoint. Studies (the DINOv2 analyses) run last.

# %%
status = S.run()
status.state.value_counts()

# %% [markdown]
# ## Table 1 — multi-task restoration (DID rain, CBSD68 noise, blurred DID, SOTS-outdoor; PSNR/SSIM on RGB)
# One model for all four degradations. The Restormer row is the paper's own baseline run — the same run as
# Table 3's Baseline; Avg is the mean of the 7 task columns.

# %%
S.show("Table 1")

# %% [markdown]
# ## Table 2 — single-task denoising (BSD400 + WED, one model for σ = 15, 25, 50)

# %%
S.show("Table 2")

# %% [markdown]
# ## Tables 3 and 4 — PSF and DPC ablation; unseen data (Rain100L, σ = 100) for the Table 1 model

# %%
S.show("Table 3", "Table 4")

# %% [markdown]
# ## Tables 5 and 6 — which DINOv2 block (V0 = plain Restormer, Rain100L); deblurring as tasks are added

# %%
S.show("Table 5", "Table 6")

# %% [markdown]
# ## DINOv2 analyses — Fig. 3b variances, PSF gating scores, and the rows the paper has no number for
# Fig. 3b: variance over noise levels of the PSNR (to the clean counterpart) of the noisy image, its patch
# embedding and deep DINOv2 features. Text: the trained DINO-IR's gate scores for its shallow/medium/deep inputs.
# Fig. 5 tests the paper's claim that shallow features of a partly derained image ("little rain": the heavy-rain
# image after the trained multi-task Restormer) sit closer to the clean image's than the heavy-rain image's do.

# %%
S.show("Fig. 3b", "Text", "Fig. 5", "Fig. 3a")

# %% [markdown]
# ## Gains over the paired baseline, with paired-bootstrap 95% intervals over test images

# %%
S.gains()

# %% [markdown]
# ## Figures 1b, 3a, 3b, 5, 6, 7

# %%
S.show_figures()

# %% [markdown]
# ## The authors' released checkpoints
# The baselines' own weights (`data_manifests/weights`), evaluated on the same test sets with the same metric
# conventions as the retrained rows, once they are under `<data_root>/weights` (`irlib weights fetch NAME`, or
# by hand where the release is on a drive). Their rows are marked `weights=released`.

# %%
S.released()
