# %% [markdown]
# # SPN — Learning from History (Tables 1–9; Figs. 2, 4–6)
# SPN keeps N "history" copies of the network in training, each an EMA of the weights updated every s_i steps
# with weight w (Eq. 1), and pushes the output away from theirs in VGG feature space:
# L = L_rec − λ · 1/N Σ_i ‖VGG(out) − VGG(neg_i(lq))‖₁ (Eqs. 3–4). Every backbone is retrained with its released
# schedule, once without and once with the negative term. `irlib.spn` holds the loss and the history models;
# the experiments live in one plan (`irlib.papers.spn.plan`), which this notebook, `irlib plan` and the tests read.
#
# Profiles: **smoke** — tiny networks, the offline photos, a random VGG, 24 steps (a pipeline check);
# **rehearse** — the full plan on synthetic images in the benchmarks' folder layouts, 2 steps per run;
# **full** — the paper's settings (hundreds of GPU-hours: run it with `irlib reproduce --executor local|slurm`).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/smoke/spn"
runs_dir = ""        # run store; default <out_dir>/../runs (shared with the other notebooks of a reproduce)
only = ""            # comma-separated tables/figures to keep, e.g. "Table 1,Fig. 4"
skip_data = ""       # comma-separated missing datasets (irlib reproduce --skip-missing): their tables become skip rows
only_runs = ""       # file of run keys to keep (irlib reproduce --only-runs); their rows run, the others show as not run
vgg19_weights = ""   # local torchvision VGG19 file (instead of downloading IMAGENET1K_V1)
ffanet = "paper"     # one of: paper, mclir (FFANet trained with FFA-Net's own recipe as the paper says; or with the SPN release's option file)

# %%
from irlib.notebook import session

S = session("spn", profile=profile, device=device, data_root=data_root, seed=seed, out_dir=out_dir, runs_dir=runs_dir,
            files={"vgg19": vgg19_weights} if vgg19_weights else None, only=only, skip_data=skip_data,
            only_runs=only_runs, options={"ffanet": ffanet})
S.overview()

# %% [markdown]
# ## Training and evaluation
# Runs already in the store (finished by `irlib reproduce`'s executor, or by an earlier run of this notebook) are
# not trained again; an interrupted run resumes from its checkpoint.

# %%
status = S.run()
status.state.value_counts()

# %% [markdown]
# ## Table 1 — super-resolution (PSNR/SSIM on Y, scale cropped)

# %%
S.show("Table 1")

# %% [markdown]
# ## Table 2 — deraining with IDT, retrained on each dataset

# %%
S.show("Table 2")

# %% [markdown]
# ## Tables 3–5 — dehazing (ITS → SOTS-indoor, RESIDE-6K → SOTS-mix), deblurring (GoPro, NAFNet with TLC),
# and SPN against the sample-contrastive CR and PCL

# %%
S.show("Table 3", "Table 4", "Table 5")

# %% [markdown]
# ## Tables 6–9 — negative model, negative step s, balance λ, EMA weight w
# A collapsed run (the paper's "-") shows as "collapsed" with the step where the loss became non-finite.

# %%
S.show("Table 6", "Table 7", "Table 8", "Table 9")

# %% [markdown]
# ## Gains over the original training, with paired-bootstrap 95% intervals over test images

# %%
S.gains()

# %% [markdown]
# ## Figures 2, 4, 5, 6

# %%
S.show_figures()

# %% [markdown]
# ## The authors' released checkpoints
# The baselines' own weights (`data_manifests/weights`), evaluated on the same test sets with the same metric
# conventions as the retrained rows, once they are under `<data_root>/weights` (`irlib weights fetch NAME`, or
# by hand where the release is on a drive). Their rows are marked `weights=released`.

# %%
S.released()
