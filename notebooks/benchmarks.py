# %% [markdown]
# # Step-cost benchmarks (SPN, DiffLoss)
# Per-step training time of a plain reconstruction loss against +SPN (4 history negatives, loop vs vmap)
# and +DiffLoss (fp32, bf16 autocast, gradient checkpointing), same backbone and batch, measured in one
# run and reported as **ratios**. Smoke: tiny networks on CPU; absolute times say little, ratios a bit more.
# When `irlib reproduce --jobs N` runs other notebooks at the same time the timings share the CPU; run
# `irlib reproduce --only benchmarks` alone for clean numbers.

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/benchmarks"

# %%
import pandas as pd
import torch
from irlib import diffloss as dl, experiment as ex, spn
from irlib.data import PatchBatches
from irlib.losses import LOSSES, VGGFeatures
from irlib.models.cnn import EDSR, NAFNet
from irlib.results import Results
from irlib.train import Trainer, time_steps

P = ex.get_profile(profile)
small = P.name == "smoke"
train, _ = ex.offline_split(P)
n = 6 if small else 50

def timed(model, terms, task, patch):
    torch.manual_seed(seed)
    tr = Trainer(model, PatchBatches(train, patch, P.batch, (task,), seed=seed), terms, device=device, progress=False)
    return time_steps(tr, n)

# %% SPN: EDSR-light x4, L1 vs L1 + SPN with 4 negatives
vgg = VGGFeatures(pretrained=P.pretrained)
cfg = spn.SPNConfig(steps=(1, 2, 3, 4))
make = (lambda: EDSR(4, 16, 2)) if small else (lambda: EDSR(4))
rows = [{"paper": "spn", "variant": "L1", "s_per_step": timed(make(), {"l1": (1.0, LOSSES["l1"])}, "srx4", 32)}]
for batched in (False, True):
    m = make()
    rows.append({"paper": "spn", "variant": f"L1 + SPN (4 neg, {'vmap' if batched else 'loop'})",
                 "s_per_step": timed(m, {"l1": (1.0, LOSSES["l1"]), "spn": (-cfg.lam, spn.SPNLoss(m, cfg, embed=vgg, batched=batched))}, "srx4", 32)})

# %% DiffLoss: NAFNet, L2 vs L2 + DiffLoss (the UNet's forward for the clean branch runs without grad)
unet = dl.ADMUNet(dl.ADM_TINY) if small else dl.ADMUNet(dl.ADM_256_UNCOND)
unet.eval().requires_grad_(False).to(device)
mk = (lambda: NAFNet(8, (1, 1, 1, 1))) if small else (lambda: NAFNet(32))
patch = 32 if small else 256
rows.append({"paper": "diffloss", "variant": "L2", "s_per_step": timed(mk(), {"l2": (1.0, LOSSES["mse"])}, "haze", patch)})
for label, kw, ckpt in (("L2 + DiffLoss (fp32)", {}, False), ("L2 + DiffLoss (bf16 autocast)", {"autocast": True}, False),
                        ("L2 + DiffLoss (checkpointing)", {}, True)):
    unet.checkpoint = ckpt
    rows.append({"paper": "diffloss", "variant": label,
                 "s_per_step": timed(mk(), {"l2": (1.0, LOSSES["mse"]), "dl": (0.001, dl.DiffLoss(unet, **kw))}, "haze", patch)})
unet.checkpoint = False

# %%
df = pd.DataFrame(rows)
df["ratio_to_base"] = df.s_per_step / df.groupby("paper").s_per_step.transform("first")
R = Results("benchmarks", P.name, P.weights, out_dir)
for r in df.itertuples():
    R.add("Benchmark", r.variant, "step time ratio", r.ratio_to_base, setting=f"device={device}", dataset="offline-photos",
          notes=f"{r.s_per_step * 1e3:.1f} ms/step ({r.paper})")
R.save()
print(f"measured on {device}, {torch.get_num_threads()} threads, {n} steps each, one run")
df
