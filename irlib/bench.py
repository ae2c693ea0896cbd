"""Step-cost benchmarks for the two training losses whose cost the issues ask about (SPN, DiffLoss).

Each variant trains the same backbone on the same fixed batch (already on the device, so data loading is
not timed) and reports the median seconds per optimiser step, the ratio to the plain-loss step and (SPN,
DiffLoss) to a re-implementation of the released training step, all measured in the same run; the FLOPs of
one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (once per variant, on the eager equivalent of
a compiled variant: same arithmetic), the achieved FLOP/s and its fraction of the device's dense peak
(:data:`PEAK_TFLOPS`; ``NaN`` on a CPU or an unlisted device), and peak memory on CUDA. Rows carry the device,
torch version and date. ``scale="tiny"`` uses the smoke-size networks (CPU minutes); ``scale="paper"`` the
paper's sizes: EDSR-light x4 with batch 16 and 48-px LR patches (or IDT, batch 8 at 128 px), VGG19 up to
relu5_1, 4 history negatives; NAFNet-32 with batch 4 at 256 px and the 552.81M-parameter ADM 256x256 UNet.
Feature networks are randomly initialised here (the pretrained weights cost the same to run). Timings are
reported, never asserted.

Run on a GPU with ``python -m irlib.bench --device cuda --scale paper --out bench.csv`` (``--only spn spn-idt
diffloss`` picks the benchmarks, ``--variants`` filters rows by substring).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import inspect
from dataclasses import replace
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import diffloss as dl, spn
from .data import PatchBatches
from .losses import LOSSES, VGGFeatures
from .models.edsr import EDSR
from .models.nafnet import NAFNet
from .train import Trainer, time_steps

#: Dense (no sparsity) peak tensor-core throughput in TFLOP/s by device-name substring and precision
#: (NVIDIA's datasheets, SXM parts; the H200 has the H100's compute with more, faster memory).
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "tf32": 494.7}, "H200": {"bf16": 989.0, "tf32": 494.7}}


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"


def peak_tflops(name: str, precision: str) -> float:
    """The dense peak for ``precision`` ("bf16" or "tf32") of the device called ``name``; NaN if not listed."""
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return float("nan")


def count_flops(fn: Callable, *args, **kw) -> int:
    """Total FLOPs (a multiply-add counts 2) of ``fn(*args, **kw)``, forward and any backward it runs."""
    with FlopCounterMode(display=False) as fc:
        fn(*args, **kw)
    return int(fc.get_total_flops())


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


def step_flops(make_model: Callable[[], torch.nn.Module], make_terms: Callable[[torch.nn.Module], dict],
               batches: Callable[[int], dict], device: str, seed: int = 0) -> int:
    """FLOPs of one training step (forward, loss terms, backward) of a fresh trainer."""
    torch.manual_seed(seed)
    model = make_model()
    tr = Trainer(model, batches, make_terms(model), device=device, progress=False)
    return count_flops(tr.train_step, tr._to(batches(0)))


def measure(paper: str, variant: str, make_model, make_terms, batches, device: str, steps: int, warmup: int,
            precision: str = "tf32", count_terms=None) -> dict:
    """One benchmark row: timing of ``make_terms`` and FLOPs of ``count_terms`` (default the same terms;
    compiled variants pass their eager twin)."""
    row = {"paper": paper, "variant": variant, "precision": precision,
           **time_variant(make_model, make_terms, batches, device, steps, warmup)}
    row["flops_per_step"] = step_flops(make_model, count_terms or make_terms, batches, device)
    return row


# ------------------------------------------------------------------------------------------------- SPN
class ReleaseSPNTerm(nn.Module):
    """SPN's negative term computed the way the released code (MCLIR ``SRNegModel_Multi``) computes it, for
    timing against irlib's :class:`irlib.spn.SPNLoss` (same value, different work): N separate negative
    networks run one after another; then, once per negative, a perceptual loss call that embeds the output
    (with gradient) and that negative by two fp32 VGG passes — the output is embedded N times and back-propagated
    N times. L_neg = 1/N Σ_i Σ_k w_k mean|f_k(out) - f_k(neg_i)|; use it with weight ``-cfg.lam``. The copies
    start as exact copies of the model (the start value does not change the cost) and are EMA-updated on
    parameters only, copy i on the i-th step of the reversed step list, as released."""

    def __init__(self, model: nn.Module, cfg: spn.SPNConfig, embed: nn.Module):
        super().__init__()
        self.cfg, self.embed = cfg, embed
        self.nets = nn.ModuleList(copy.deepcopy(model).eval().requires_grad_(False) for _ in cfg.steps)

    def train(self, mode: bool = True):  # the copies and the VGG stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        for net, s in zip(self.nets, self.cfg.steps[::-1]):
            if step % s == 0:
                for q, p in zip(net.parameters(), model.parameters()):
                    q.mul_(self.cfg.w).add_(p.detach(), alpha=1 - self.cfg.w)

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        with torch.no_grad():
            negs = [net(batch["lq"]) for net in self.nets]
        total = out.new_zeros(())
        for neg in negs:
            f_out, f_neg = self.embed(out), self.embed(neg.detach())
            total = total + sum(w * F.l1_loss(a, b) for w, a, b in zip(self.cfg.layer_weights, f_out, f_neg))
        return total / len(negs)


def spn_fast_paths(device: str, compile_: bool) -> dict[str, spn.SPNFast]:
    """The SPN cost options, one at a time, plus one combination of the exact ones."""
    mode = "reduce-overhead" if device.startswith("cuda") else "default"
    paths = {"loop": spn.SPNFast(), "vmap": spn.SPNFast(negatives="vmap"),
             "bf16 VGG": spn.SPNFast(bf16_embed=True), "channels-last VGG": spn.SPNFast(channels_last=True),
             "fused embed": spn.SPNFast(fuse_embed=True), "bf16 negatives (inexact)": spn.SPNFast(bf16_negatives=True)}
    if compile_:
        paths[f"compiled ({mode})"] = spn.SPNFast(compile=mode)
        paths["bf16 + channels-last VGG, compiled"] = spn.SPNFast(bf16_embed=True, channels_last=True, compile=mode)
    else:
        paths["bf16 + channels-last VGG"] = spn.SPNFast(bf16_embed=True, channels_last=True)
    return paths


def spn_costs(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, seed: int = 0,
              backbone: str = "edsr", warmup: int = 3, compile_: bool | None = None,
              variants: Sequence[str] | None = None) -> list[dict]:
    """L1 vs L1 + SPN (4 history negatives): the released computation (:class:`ReleaseSPNTerm`) and irlib's
    :class:`~irlib.spn.SPNLoss` on each :func:`spn_fast_paths` option. EDSR-light x4 (batch 16, 48-px LR
    patches) or ``backbone="idt"`` (IDT deraining, batch 8 at 128 px; IDT's own batch is unpublished).
    ``variants``: keep only rows whose label contains one of these substrings (the L1 row always stays)."""
    paper = scale == "paper"
    compile_ = device.startswith("cuda") if compile_ is None else compile_
    if backbone == "idt":
        from .models.idt import IDT

        make = IDT if paper else (lambda: IDT(img_size=32, embed_dim=4, win_size=2, num_heads=(1, 1, 2, 2, 2, 2, 2, 1, 1),
                                              k_bounds=(8, 4, 2, 1), wtm=(1,) * 9))
        task, (patch, batch) = "rain", ((128, 8) if paper else (32, 4))
    else:
        make = (lambda: EDSR(4)) if paper else (lambda: EDSR(4, 16, 2))
        task, (patch, batch) = "srx4", ((192, 16) if paper else (32, 4))
    data = _fixed_batch(images, task, patch, batch, device, seed)
    cfg = spn.SPNConfig(steps=(1, 2, 3, 4))  # all four copies change often; cost does not depend on s

    def vgg():  # a fresh one per variant: channels-last converts the weights in place
        return VGGFeatures(cfg.arch, cfg.layers, pretrained=False)

    def keep(label: str) -> bool:
        return variants is None or any(v in label for v in variants)
    tag = "spn" if backbone == "edsr" else f"spn-{backbone}"
    l1 = {"l1": (1.0, LOSSES["l1"])}
    rows = [measure(tag, "L1", make, lambda m: dict(l1), data, device, steps, warmup)]
    label = "L1 + SPN, release step (sequential negatives, fp32 VGG of out and negative per negative)"
    if keep(label):
        rows.append(measure(tag, label, make, lambda m: {**l1, "spn": (-cfg.lam, ReleaseSPNTerm(m, cfg, vgg()))},
                            data, device, steps, warmup))
    for name, fast in spn_fast_paths(device, compile_).items():
        label = f"L1 + SPN, irlib {name}"
        if not keep(label):
            continue

        def terms(m, fast=fast):
            return {**l1, "spn": (-cfg.lam, spn.SPNLoss(m, cfg, embed=vgg(), fast=fast))}

        def eager(m, fast=fast):
            return {**l1, "spn": (-cfg.lam, spn.SPNLoss(m, cfg, embed=vgg(), fast=replace(fast, compile=None)))}
        prec = "bf16" if fast.bf16_embed or fast.bf16_negatives else "tf32"
        rows.append(measure(tag, label, make, terms, data, device, steps, warmup, prec, count_terms=eager))
    return rows


# -------------------------------------------------------------------------------------------- DiffLoss
def diffloss_options(device: str, compile_: bool) -> dict[str, dict]:
    """Each cost option :class:`~irlib.diffloss.DiffLoss` accepts (read from its signature, so options added
    later are benched too): boolean flags switched on one at a time (``detach_restored`` excepted: it changes the
    loss), and ``compile`` set to a mode when compiling."""
    sig = inspect.signature(dl.DiffLoss.__init__).parameters
    out = {}
    for name, p in sig.items():
        if name == "detach_restored":
            continue
        if isinstance(p.default, bool) and p.default is False:
            out[name.replace("_", " ")] = {name: True}
    if "compile" in sig and compile_:
        out["compile"] = {"compile": "reduce-overhead" if device.startswith("cuda") else "default"}
    if "autocast" in sig and "channels_last" in sig:
        out["autocast + channels last"] = {"autocast": True, "channels_last": True}
    return out


def diffloss_costs(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, seed: int = 0,
                   warmup: int = 3, compile_: bool | None = None, variants: Sequence[str] | None = None) -> list[dict]:
    """L2 vs L2 + DiffLoss on NAFNet: the released computation (two fp32 UNet calls, clean under ``no_grad``,
    restored with the gradient flowing — the release computes both under ``no_grad``, which makes the term a
    constant), then each :func:`diffloss_options` option, gradient checkpointing and bf16 UNet weights (last:
    converts the UNet in place)."""
    paper = scale == "paper"
    compile_ = device.startswith("cuda") if compile_ is None else compile_
    unet = dl.ADMUNet(dl.ADM_256_UNCOND if paper else dl.ADM_TINY).eval().requires_grad_(False).to(device)
    make = (lambda: NAFNet(32)) if paper else (lambda: NAFNet(8, (1, 1, 1, 1)))
    patch, batch = (256, 4) if paper else (32, 4)
    data = _fixed_batch(images, "haze", patch, batch, device, seed)

    def keep(label: str) -> bool:
        return variants is None or any(v in label for v in variants)
    l2 = {"l2": (1.0, LOSSES["mse"])}
    rows = [measure("diffloss", "L2", make, lambda m: dict(l2), data, device, steps, warmup)]
    runs = [("L2 + DiffLoss, release computation (fp32, two UNet calls)", {}, False)]
    runs += [(f"L2 + DiffLoss, {k}", kw, False) for k, kw in diffloss_options(device, compile_).items()]
    runs += [("L2 + DiffLoss, fp32, checkpointing", {}, True), ("L2 + DiffLoss, bf16 weights", {}, False)]
    for label, kw, ckpt in runs:
        if not keep(label):
            continue
        if "bf16 weights" in label:
            unet.to_compute_dtype(torch.bfloat16)  # last: converts in place
        unet.checkpoint = ckpt
        if not kw.get("channels_last"):
            unet.to(memory_format=torch.contiguous_format)

        def terms(m, kw=kw):
            return {**l2, "dl": (0.001, dl.DiffLoss(unet, **kw))}

        def eager(m, kw=kw):
            return {**l2, "dl": (0.001, dl.DiffLoss(unet, **{k: v for k, v in kw.items() if k != "compile"}))}
        prec = "bf16" if kw.get("autocast") or "bf16" in label else "tf32"
        rows.append(measure("diffloss", label, make, terms, data, device, steps, warmup, prec, count_terms=eager))
    unet.checkpoint = False
    return rows


# ------------------------------------------------------------------------------------------------ table
def run(images, device: str = "cpu", scale: str = "tiny", steps: int = 10, which=("spn", "diffloss"),
        warmup: int = 3, compile_: bool | None = None, variants: Sequence[str] | None = None) -> pd.DataFrame:
    """All benchmarks as one table. ``ratio_to_base``: to each paper's plain-loss step; ``ratio_to_release``:
    to the re-implemented released step (NaN where there is none); ``tflops`` achieved FLOP/s; ``mfu`` its
    fraction of the device's dense peak for the row's precision (NaN on CPU)."""
    rows = []
    kw = dict(warmup=warmup, compile_=compile_, variants=variants)
    if "spn" in which:
        rows += spn_costs(images, device, scale, steps, **kw)
    if "spn-idt" in which:
        rows += spn_costs(images, device, scale, steps, backbone="idt", **kw)
    if "diffloss" in which:
        rows += diffloss_costs(images, device, scale, steps, **kw)
    df = pd.DataFrame(rows)
    df["ratio_to_base"] = df.s_per_step / df.groupby("paper").s_per_step.transform("first")
    rel = df.variant.str.contains("release")
    base = df[rel].groupby("paper").s_per_step.first()
    df["ratio_to_release"] = df.s_per_step / df.paper.map(base)
    name = device_name(device)
    df["tflops"] = df.flops_per_step / df.s_per_step / 1e12
    df["peak_tflops"] = [peak_tflops(name, p) for p in df.precision]
    df["mfu"] = df.tflops / df.peak_tflops
    df["device"] = name
    df["torch"] = torch.__version__
    df["date"] = datetime.date.today().isoformat()
    df["scale"] = scale
    return df


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=("spn", "diffloss"), help="spn, spn-idt, diffloss")
    ap.add_argument("--variants", nargs="*", default=None, help="keep rows whose label contains one of these")
    ap.add_argument("--compile", dest="compile_", action=argparse.BooleanOptionalAction, default=None,
                    help="bench the torch.compile variants (default: on CUDA only)")
    ap.add_argument("--out", default=None, help="CSV file for the table")
    a = ap.parse_args(argv)
    from .data import sample_images

    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels (as training would)
    df = run(list(sample_images(256).values()), a.device, a.scale, a.steps, a.only, a.warmup, a.compile_, a.variants)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 70)
    cols = ["paper", "variant", "s_per_step", "ratio_to_base", "ratio_to_release", "flops_per_step", "tflops", "mfu",
            "peak_gib"]
    print(df[cols].to_string(index=False))
    print(f"device: {df.device.iloc[0]}, torch {df.torch.iloc[0]}, {df.date.iloc[0]}, scale {a.scale}")
    if a.out:
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
