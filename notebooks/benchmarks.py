# %% [markdown]
# # Step-cost benchmarks (SPN, DiffLoss)
# Per-step training time of a plain reconstruction loss against +SPN (4 history negatives, loop vs vmap)
# and +DiffLoss (fp32, bf16 autocast, channels_last, gradient checkpointing, bf16 weights), same backbone and
# fixed batch, measured in one run and reported as **ratios** (`irlib.bench`). Smoke: tiny networks on the
# CPU; absolute times say little, ratios a bit more. When `irlib reproduce --jobs N` runs other notebooks at
# the same time the timings share the CPU; run `irlib reproduce --only benchmarks` alone for clean numbers.
# The last cell shows the paper-scale numbers we measured on one H100 (`python -m irlib.bench --scale paper`).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/benchmarks"

# %%
from importlib import resources

import pandas as pd
import torch
from irlib import bench, experiment as ex
from irlib.results import Results

P = ex.get_profile(profile)
train, _ = ex.offline_split(P)
df = bench.run(train, device, scale="tiny" if P.name == "smoke" else "paper", steps=6 if P.name == "smoke" else 50)
R = Results("benchmarks", P.name, P.weights, out_dir)
for r in df.itertuples():
    R.add("Benchmark", r.variant, "step time ratio", r.ratio_to_base, setting=f"device={device}", dataset="offline-photos",
          notes=f"{r.s_per_step * 1e3:.1f} ms/step median ({r.paper}, {r.scale} scale)")
R.save()
print(f"measured on {df.device.iloc[0]}, {r.steps} timed steps each, one run")
df[["paper", "variant", "s_per_step", "ratio_to_base", "peak_gib"]]

# %% Paper-scale measurements on one NVIDIA H100 (2026-11-23, stored with the package; not re-measured here)
h100 = pd.read_csv(resources.files("irlib") / "resources/measurements/bench_h100.csv")
h100[h100.scale == "paper"].pivot_table(index=["paper", "variant"], columns="run", values="ratio_to_base", sort=False)
