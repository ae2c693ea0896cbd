# %% [markdown]
# # Step-cost benchmarks (SPN, DiffLoss)
# Per-step training time of a plain reconstruction loss against +SPN (4 history negatives) and +DiffLoss (the
# 552.81M ADM), same backbone and fixed batch, measured in one run and reported as **ratios** to the plain step
# and to a faithful re-implementation of each release's step (`irlib.bench`), with FLOPs counted per step.
#
# `scale="tiny"` (default) uses the smoke-size networks and runs anywhere in minutes — on a CPU the ratios say
# little about a GPU. `scale="paper"` uses the papers' sizes and runs only on a GPU (`device="cuda"`): ask for it
# with `irlib reproduce --only benchmarks --device cuda -p scale paper`. When other notebooks run at the same
# time the timings share the machine; run this one alone for clean numbers. The last cell shows what we measured
# on one H100 (`python -m irlib.bench --scale paper`, stored with the package).

# %% tags=["parameters"]
profile = "smoke"
device = "cpu"
data_root = "data"
seed = 0
out_dir = "reports/smoke/benchmarks"
scale = "tiny"       # one of: tiny, paper ("paper": the papers' sizes, GPU only)
steps = 3            # timed steps per variant (tiny); paper scale uses 20
variants = "release step,irlib loop,release computation"   # substrings of the variants to time ("" = all of them)

# %%
import os
from importlib import resources

import pandas as pd
from irlib import bench
from irlib.data import sample_images
from irlib.engine import ROW_COLUMNS

if scale == "paper" and not device.startswith("cuda"):
    raise ValueError("paper-scale benchmarks need a GPU: set device='cuda' (and run `irlib reproduce --only "
                     "benchmarks --device cuda -p scale paper`); on a CPU use scale='tiny'")
wanted = [v.strip() for v in variants.split(",") if v.strip()] or None
df = bench.run(list(sample_images(256 if scale == "paper" else 64).values()), device, scale=scale,
               steps=20 if scale == "paper" else steps, warmup=3 if scale == "paper" else 1, variants=wanted)
print(f"measured on {df.device.iloc[0]}, torch {df.torch.iloc[0]}, one run")
df[[c for c in ("paper", "variant", "s_per_step", "ratio_to_base", "ratio_to_release", "tflops", "peak_gib") if c in df]]

# %%
rows = [{"paper": "benchmarks", "table": "Benchmark", "method": r.variant, "setting": f"device={device}; scale={scale}",
         "dataset": "offline-photos", "metric": "step time ratio", "value": r.ratio_to_base, "measured_on": "fixed batch",
         "profile": profile, "weights": "random", "notes": f"{r.s_per_step * 1e3:.1f} ms/step median ({r.paper})"}
        for r in df.itertuples()]
os.makedirs(out_dir, exist_ok=True)
pd.DataFrame(rows, columns=ROW_COLUMNS).to_csv(f"{out_dir}/results.csv", index=False)

# %% Paper-scale measurements on one NVIDIA H100 (stored with the package; not re-measured here)
h100 = pd.read_csv(resources.files("irlib") / "resources/measurements/bench_h100.csv")
h100[h100.scale == "paper"].pivot_table(index=["paper", "variant"], columns="run", values="ratio_to_base", sort=False)
