# %% [markdown]
# # DiffLoss — a frozen diffusion model as a training constraint (Tables 1–4; Figs. 1b, 2, 5–7)
# A restoration network g is trained with L = ‖x − g(y)‖₂ + γ·(L_nat + λ·L_sem) (Eqs. 15–16, γ = 0.001,
# λ = 0.01): the restored output z and the clean target x are noised with the same t and ε and passed through
# OpenAI's frozen 256x256 unconditional ADM UNet; L_nat pulls the predicted noises together, L_sem the middle-block
# ("h-space") features. `irlib.diffloss` holds the UNet and the loss; the experiments live in one plan
# (`irlib.papers.diffloss.plan`), which this notebook, `irlib plan` and the tests read.
#
# Profiles: **smoke** — tiny networks, a tiny random ADM, the offline photos, 24 steps, one Table 1 pair per task
# (a pipeline check); **rehearse** — the full plan (the real 552M-parameter ADM architecture with random weights,
# fed 32-pixel images) on synthetic images in the benchmarks' folder layouts, 2 steps per run; **full** — the
# paper's settings (give `adm_checkpoint`, a local copy of `256x256_diffusion_uncond.pt`, or let it download).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/smoke/diffloss"
runs_dir = ""        # run store; default <out_dir>/../runs (shared with the other notebooks of a reproduce)
only = ""            # comma-separated tables/figures to keep, e.g. "Table 1,Fig. 5"
skip_data = ""        # comma-separated missing datasets (irlib reproduce --skip-missing): their tables become skip rows
only_runs = ""        # file of run keys to keep (irlib reproduce --only-runs); their rows run, the others show as not run
adm_checkpoint = ""  # local path or URL of 256x256_diffusion_uncond.pt (default: OpenAI's URL, cached)
protocol = "paper"   # one of: paper, release, release+grad (Sec. 4's setting; the public code's protocol as released; the same with DiffLoss's gradient)

# %%
from irlib.notebook import session

S = session("diffloss", profile=profile, device=device, data_root=data_root, seed=seed, out_dir=out_dir,
            runs_dir=runs_dir, files={"adm": adm_checkpoint} if adm_checkpoint else None,
            only=only, skip_data=skip_data,
            only_runs=only_runs, options={"protocol": protocol})
S.overview()

# %% [markdown]
# ## Training and evaluation
# Runs already in the store are not trained again; an interrupted run resumes from its checkpoint. Table 3's
# MSBDN runs and Fig. 7's γ sweep keep the best checkpoint of the first 40K iterations (the paper's rule).

# %%
status = S.run()
status.state.value_counts()

# %% [markdown]
# ## Table 1 — six baselines with and without DiffLoss (Dense-Haze, Rain100H on Y, LOL)
# Rows the paper copies from other work (AOD-Net, FFA-Net, …) show the paper's number alone.

# %%
S.show("Table 1")

# %% [markdown]
# ## Table 2 — top-1 of CUB-trained VGG16 / ResNet50 on degraded CUB restored by TaylorFormer, EfDeRain, IAT
# The degradations are irlib's seeded haze, rain and low light (the paper's parameters from [26] are not given).

# %%
S.show("Table 2")

# %% [markdown]
# ## Tables 3–4 — loss functions with MSBDN, and the ablated targets with GridDehazeNet (Dense-Haze)

# %%
S.show("Table 3", "Table 4")

# %% [markdown]
# ## Gains over the baselines, with paired-bootstrap 95% intervals over test images

# %%
S.gains()

# %% [markdown]
# ## Figures 1b, 2a, 2b, 5, 6, 7

# %%
S.show_figures()

# %% [markdown]
# ## The authors' released checkpoints
# The baselines' own weights (`data_manifests/weights`), evaluated on the same test sets with the same metric
# conventions as the retrained rows, once they are under `<data_root>/weights` (`irlib weights fetch NAME`, or
# by hand where the release is on a drive). Their rows are marked `weights=released`.

# %%
S.released()
