"""Step-cost benchmarks for the two training losses whose cost the issues ask about (SPN, DiffLoss).

Each variant trains the same backbone on the same fixed batch (already on the device, so data loading is
not timed) and reports seconds per optimiser step and the ratio to the plain-loss baseline measured in the
same run. ``scale="tiny"`` uses the smoke-size networks (CPU minutes); ``scale="paper"`` the paper's sizes:
EDSR-light x4 with batch 16 and 48-px LR patches, VGG19 up to relu5_1, 4 history negatives; NAFNet-32
with batch 4 at 256 px and the 552.81M-parameter ADM 256x256 UNet. Feature networks are randomly
initialised here (the pretrained weights cost the same to run). Timings are reported, never asserted.

Run on a GPU with ``python -m irlib.bench --device cuda --scale paper --out bench.csv``.
"""
from __future__ import annotations

import argparse
from typing import Callable

import pandas as pd
import torch

from . import diffloss as dl, spn
from .data import PatchBatches
from .losses import LOSSES, VGGFeatures
from .models.edsr import EDSR
from .models.nafnet import NAFNet
from .train import Trainer, time_steps


def _fixed_batch(images, task: str, patch: int, batch: int, device: str, seed: int) -> Callable[[int], dict]:
    b = PatchBatches(images, patch, batch, (task,), seed=seed)(0)
    b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
    return lambda step: b


def time_variant(make_model: Callable[[], torch.nn.Module], make_terms: Callable[[torch.nn.Module], dict],
                 batches: Callable[[int], dict], device: str, steps: int, warmup: int = 3, amp: str | None = None,
                 seed: int = 0) -> dict:
    """Median and mean seconds per step over ``steps`` timed steps after ``warmup``, and peak GPU memory."""
    torch.manual_seed(seed)
    model = make_model()
    tr = Trainer(model, batches, make_terms(model), device=device, progress=False, amp=amp)
    cuda = device.startswith("cuda")
    tr.fit(warmup)
    if cuda:
        torch.cuda.reset_peak_memory_stats()  # peak of the timed steps only
    s = pd.Series(time_steps(tr, steps, warmup=0))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    return {"s_per_step": float(s.median()), "s_mean": float(s.mean()), "s_min": float(s.min()), "peak_gib": peak,
            "steps": steps}


def spn_costs(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, seed: int = 0,
              backbone: str = "edsr") -> list[dict]:
    """L1 vs L1 + SPN (4 history negatives, sequential loop and vmap): EDSR-light x4 (batch 16, 48-px LR
    patches) or ``backbone="idt"`` (IDT deraining, batch 8 at 128 px; IDT's own batch is unpublished)."""
    paper = scale == "paper"
    if backbone == "idt":
        from .models.idt import IDT

        make = IDT if paper else (lambda: IDT(img_size=32, embed_dim=4, win_size=2, num_heads=(1, 1, 2, 2, 2, 2, 2, 1, 1),
                                              k_bounds=(8, 4, 2, 1), wtm=(1,) * 9))
        task, (patch, batch) = "rain", ((128, 8) if paper else (32, 4))
    else:
        make = (lambda: EDSR(4)) if paper else (lambda: EDSR(4, 16, 2))
        task, (patch, batch) = "srx4", ((192, 16) if paper else (32, 4))
    data = _fixed_batch(images, task, patch, batch, device, seed)
    vgg = VGGFeatures(pretrained=False)
    cfg = spn.SPNConfig(steps=(1, 2, 3, 4))  # all four copies change often; cost does not depend on s
    tag = "spn" if backbone == "edsr" else f"spn-{backbone}"
    rows = [{"paper": tag, "variant": "L1", **time_variant(make, lambda m: {"l1": (1.0, LOSSES["l1"])}, data, device, steps)}]
    for batched in (False, True):
        def terms(m, batched=batched):
            return {"l1": (1.0, LOSSES["l1"]), "spn": (-cfg.lam, spn.SPNLoss(m, cfg, embed=vgg, batched=batched))}
        rows.append({"paper": tag, "variant": f"L1 + SPN (4 neg, {'vmap' if batched else 'loop'})",
                     **time_variant(make, terms, data, device, steps)})
    return rows


def diffloss_costs(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, seed: int = 0) -> list[dict]:
    """L2 vs L2 + DiffLoss (fp32, bf16 autocast, bf16 + channels_last, gradient checkpointing, bf16 weights),
    NAFNet. The UNet is converted to bf16 weights last (in place)."""
    paper = scale == "paper"
    unet = dl.ADMUNet(dl.ADM_256_UNCOND if paper else dl.ADM_TINY).eval().requires_grad_(False).to(device)
    make = (lambda: NAFNet(32)) if paper else (lambda: NAFNet(8, (1, 1, 1, 1)))
    patch, batch = (256, 4) if paper else (32, 4)
    data = _fixed_batch(images, "haze", patch, batch, device, seed)
    rows = [{"paper": "diffloss", "variant": "L2", **time_variant(make, lambda m: {"l2": (1.0, LOSSES["mse"])}, data, device, steps)}]
    variants = (("L2 + DiffLoss (fp32)", {}, False), ("L2 + DiffLoss (bf16 autocast)", {"autocast": True}, False),
                ("L2 + DiffLoss (bf16 + channels_last)", {"autocast": True, "channels_last": True}, False),
                ("L2 + DiffLoss (fp32, checkpointing)", {}, True), ("L2 + DiffLoss (bf16 weights)", {}, False))
    for label, kw, ckpt in variants:
        if "bf16 weights" in label:
            unet.to_compute_dtype(torch.bfloat16)  # last: converts in place
        unet.checkpoint = ckpt
        if not kw.get("channels_last"):
            unet.to(memory_format=torch.contiguous_format)

        def terms(m, kw=kw):
            return {"l2": (1.0, LOSSES["mse"]), "dl": (0.001, dl.DiffLoss(unet, **kw))}
        rows.append({"paper": "diffloss", "variant": label, **time_variant(make, terms, data, device, steps)})
    unet.checkpoint = False
    return rows


def run(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, which=("spn", "diffloss")) -> pd.DataFrame:
    """All benchmarks as one table with ``ratio_to_base`` (each paper's first row is its baseline)."""
    rows = []
    if "spn" in which:
        rows += spn_costs(images, device, scale, steps)
    if "spn-idt" in which:
        rows += spn_costs(images, device, scale, steps, backbone="idt")
    if "diffloss" in which:
        rows += diffloss_costs(images, device, scale, steps)
    df = pd.DataFrame(rows)
    df["ratio_to_base"] = df.s_per_step / df.groupby("paper").s_per_step.transform("first")
    df["device"] = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    df["scale"] = scale
    return df


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", nargs="*", default=("spn", "diffloss"), help="spn, spn-idt, diffloss")
    ap.add_argument("--out", default=None, help="CSV file for the table")
    a = ap.parse_args(argv)
    from .data import sample_images

    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (as training would)
    df = run(list(sample_images(256).values()), a.device, a.scale, a.steps, a.only)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False))
    if a.out:
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
