"""Every network the plans train, by the name the papers print, with its released size and a tiny size for
CPU smoke runs (same code path). ``create(name, size=..., **kw)`` builds one.

An entry also records what evaluation needs: ``pad`` (inputs are reflect-padded to a multiple of it and the
output cropped back), ``min_patch`` (the smallest training patch the architecture accepts, e.g. IDT's fixed
128-pixel windows) and whether it takes an SR ``scale``. Networks guided by a frozen feature network (DINO-IR
by DINOv2, TextPromptIR by a text encoder) get it from ``features``, a :class:`irlib.engine.features.FeatureBank`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class Entry:
    build: Callable[..., nn.Module]
    pad: int = 1
    min_patch: int = 0
    scale: bool = False
    note: str = ""
    stand_in: bool = False
    tiny_kw: dict[str, Any] = field(default_factory=dict)
    tiny_pad: int | None = None   # padding multiple of the tiny size when it differs (IDT's windows shrink)


def _cls(path: str) -> Any:
    mod, name = path.split(":")
    return getattr(importlib.import_module(mod), name)


def _ctor(path: str, method: str | None = None, **fixed: Any) -> Callable[..., nn.Module]:
    """Full size: ``cls.method(**fixed, **kw)`` (or ``cls(**fixed, **kw)``); tiny: ``cls.tiny(**kw)`` when the
    family defines it, else ``cls(**tiny_kw, **kw)``."""

    def build(size: str, tiny_kw: dict, features=None, **kw) -> nn.Module:
        cls = _cls(path)
        if size == "tiny":
            return cls.tiny(**{**fixed, **kw}) if hasattr(cls, "tiny") else cls(**{**tiny_kw, **fixed, **kw})
        return getattr(cls, method)(**fixed, **kw) if method else cls(**fixed, **kw)

    return build


def _restormer_tiny() -> dict:
    from .restormer import TINY

    return dict(TINY)


def _textpromptir(size: str, tiny_kw: dict, features=None, use_text: bool = True, text_dim: int | None = None,
                  **kw) -> nn.Module:
    """``text_dim``: the guidance width of the run's text encoder (default: the FeatureBank's default encoder;
    768 = BERT-base without one)."""
    from .textpromptir import TextPromptIR

    if text_dim is None:
        text_dim = features.text_dim() if (features is not None and use_text) else 768
    arch = _restormer_tiny() if size == "tiny" else {}
    return TextPromptIR(text_dim=text_dim, use_text=use_text, **arch, **kw)


def _dinoir(size: str, tiny_kw: dict, features=None, use_psf: bool = True, layers: tuple[int, ...] | None = None,
            **kw) -> nn.Module:
    from .dinoir import DINOIR

    if features is None:
        raise ValueError("DINO-IR needs a FeatureBank for its frozen DINOv2")
    arch = _restormer_tiny() if size == "tiny" else {}
    return DINOIR(features.dino(layers), use_psf=use_psf, **arch, **kw)


ZOO: dict[str, Entry] = {
    # SPN's backbones
    "EDSR-light": Entry(_ctor("irlib.models.edsr:EDSR", "light"), scale=True),
    "SwinIR-light": Entry(_ctor("irlib.models.swinir:SwinIR", "light"), scale=True),
    "SwinIR": Entry(_ctor("irlib.models.swinir:SwinIR", "classical"), scale=True),
    # FFA-Net's release normalises the hazy input (train and test): input_norm does that inside the network
    "FFANet": Entry(_ctor("irlib.models.ffanet:FFANet", input_norm=True)),
    # DehazeFormer's release trains on images mapped to [-1, 1]: signed_io does that inside the network
    "DehazeFormer-T": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "t", signed_io=True), pad=4),
    "DehazeFormer-S": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "s", signed_io=True), pad=4),
    "DehazeFormer-B": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "b", signed_io=True), pad=4),
    "NAFNet": Entry(_ctor("irlib.models.nafnet:NAFNet"), pad=16, tiny_kw=dict(width=8, enc=(1, 1, 1, 1))),
    "IDT": Entry(_ctor("irlib.models.idt:IDT"), pad=128, min_patch=128, tiny_pad=32,
                 tiny_kw=dict(img_size=32, embed_dim=4, win_size=2, num_heads=(1, 1, 2, 2, 2, 2, 2, 1, 1),
                              k_bounds=(8, 4, 2, 1), wtm=(1,) * 9)),
    # TextPromptIR and DINO-IR (Restormer-based)
    "Restormer": Entry(_ctor("irlib.models.restormer:Restormer"), pad=8, tiny_kw=_restormer_tiny()),
    "TextPromptIR": Entry(_textpromptir, pad=8),
    "DINO-IR": Entry(_dinoir, pad=8),
    # DINO-IR's Table 1 comparison methods, which DINO-IR ran in its own (all-in-one) setting
    "DnCNN": Entry(_ctor("irlib.models.dncnn:DnCNN", "color_blind"),
                   note="comparison method DINO-IR ran in its setting; KAIR's colour blind DnCNN (20 layers, BN)"),
    "MPRNet": Entry(_ctor("irlib.models.mprnet:MPRNet", "deraining"), pad=8,
                    note="comparison method DINO-IR ran in its setting; the release's Deraining config (3.64M); "
                         "forward returns [restored, stage2, stage1], the release supervises all three"),
    "PromptIR": Entry(_ctor("irlib.models.promptir:PromptIR"), pad=8,
                      note="comparison method DINO-IR ran in its setting; the release's PromptIR(decoder=True)"),
    # DiffLoss's baselines
    "TaylorFormer": Entry(_ctor("irlib.models.taylorformer:TaylorFormer", "b"), pad=8,
                          note="MB-TaylorFormer-B (the DiffLoss paper does not say B or L; see the module docstring)"),
    "FSDGN": Entry(_ctor("irlib.models.fsdgn:FSDGN"), pad=16),
    "RCD-Net": Entry(_ctor("irlib.models.rcdnet:RCDNet")),
    "EfDeRain": Entry(_ctor("irlib.models.efderain:EfDeRain"), pad=16, tiny_kw=dict(widths=(8, 8, 16, 16, 16))),
    "DeepLPF": Entry(_ctor("irlib.models.deeplpf:DeepLPF"), min_patch=32),
    "IAT": Entry(_ctor("irlib.models.iat:IAT"), note="IAT is 91K parameters: the released size also in smoke"),
    "MSBDN": Entry(_ctor("irlib.models.msbdn:MSBDN"), pad=16),
    "GridDehazeNet": Entry(_ctor("irlib.models.gridnet:GridDehazeNet"), pad=4,
                           tiny_kw=dict(depth_rate=8, width=4, num_dense_layer=2, growth_rate=8)),
    # DINO-IR's multi-task comparison methods (Table 1), which DINO-IR trained in its own setting
    "AirNet": Entry(_ctor("irlib.models.airnet:AirNet", "release"),
                    note="DINO-IR Table 1 comparison; two-stage training (contrastive encoder first, then joint): "
                         "see irlib.models.airnet"),
    "WGWS": Entry(_ctor("irlib.models.wgws:WGWS", "release"), pad=4,
                  note="DINO-IR Table 1 comparison; the release's stage-2 K1 network (3 weathers, base 18): "
                       "stage 1 is WGWS.stage1, see irlib.models.wgws"),
    # DA-CLIP (ICLR 2024): a comparison method DINO-IR retrains in its own setting (Table 1). The restorer is the
    # IR-SDE U-Net driven by a frozen DA-CLIP ViT-B/32; forward(lq) samples T=100 posterior steps, training uses
    # DACLIPRestorer.training_loss (the release's objective), not an image loss on forward's output.
    "DA-CLIP": Entry(_ctor("irlib.models.daclip:DACLIPRestorer", "universal"),
                     note="DA-CLIP + IR-SDE, release-identical (Algolzw/daclip-uir); DINO-IR ran it in its setting; "
                          "trained with its own SDE objective (training_loss); tiny: 3-layer CLIP, T=4"),
}


def entry(name: str) -> Entry:
    if name not in ZOO:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(ZOO))}")
    return ZOO[name]


def pad(name: str, size: str = "full") -> int:
    """The multiple network ``name`` at ``size`` needs its input padded to (evaluation pads, then crops back)."""
    e = entry(name)
    return e.tiny_pad if size == "tiny" and e.tiny_pad else e.pad


def create(name: str, size: str = "full", features=None, scale: int | None = None, **kw) -> nn.Module:
    """Build network ``name`` at ``size`` (``full``: the released configuration; ``tiny``: a CPU smoke size)."""
    e = entry(name)
    if size not in ("full", "tiny"):
        raise ValueError(f"size must be 'full' or 'tiny', got {size!r}")
    if e.scale:
        if scale is None:
            raise ValueError(f"{name} is an SR network: give scale=2 or 4")
        kw["scale"] = scale
    elif scale not in (None, 1):
        raise ValueError(f"{name} takes no SR scale (got {scale})")
    return e.build(size, e.tiny_kw, features=features, **kw)
