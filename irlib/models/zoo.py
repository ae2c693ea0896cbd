"""Every network the plans train, by the name the papers print, with its released size and a tiny size for
CPU smoke runs (same code path). ``create(name, size=..., **kw)`` builds one.

An entry also records what evaluation needs: ``pad`` (inputs are reflect-padded to a multiple of it and the
output cropped back), ``min_patch`` (the smallest training patch the architecture accepts, e.g. IDT's fixed
128-pixel windows) and whether it takes an SR ``scale``. Networks guided by a frozen feature network (DINO-IR
by DINOv2, TextPromptIR by a text encoder) get it from ``features``, a :class:`irlib.plan.features.FeatureBank`.
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


def _cls(path: str) -> Any:
    mod, name = path.split(":")
    return getattr(importlib.import_module(mod), name)


def _ctor(path: str, method: str | None = None) -> Callable[..., nn.Module]:
    """``cls(**kw)`` for size=full when ``method`` is None, else ``cls.method(**kw)``; tiny builds ``cls(**tiny)``."""

    def build(size: str, tiny_kw: dict, features=None, **kw) -> nn.Module:
        cls = _cls(path)
        if size == "tiny":
            return cls(**{**tiny_kw, **kw})
        return getattr(cls, method)(**kw) if method else cls(**kw)

    return build


def _restormer_tiny() -> dict:
    from .restormer import TINY

    return dict(TINY)


def _textpromptir(size: str, tiny_kw: dict, features=None, use_text: bool = True, **kw) -> nn.Module:
    from ..textprompt import TextPromptIR

    dim = features.text_dim() if (features is not None and use_text) else 768
    arch = _restormer_tiny() if size == "tiny" else {}
    return TextPromptIR(text_dim=dim, use_text=use_text, **arch, **kw)


def _dinoir(size: str, tiny_kw: dict, features=None, use_psf: bool = True, layers: tuple[int, ...] | None = None,
            **kw) -> nn.Module:
    from ..dinoir import DINOIR

    if features is None:
        raise ValueError("DINO-IR needs a FeatureBank for its frozen DINOv2")
    arch = _restormer_tiny() if size == "tiny" else {}
    return DINOIR(features.dino(layers), use_psf=use_psf, **arch, **kw)


ZOO: dict[str, Entry] = {
    # SPN's backbones
    "EDSR-light": Entry(_ctor("irlib.models.edsr:EDSR"), scale=True, tiny_kw=dict(n_feats=16, n_blocks=2)),
    "SwinIR-light": Entry(_ctor("irlib.models.swinir:SwinIR", "light"), scale=True,
                          tiny_kw=dict(dim=12, depths=(2, 2), heads=(2, 2), window=4)),
    "SwinIR": Entry(_ctor("irlib.models.swinir:SwinIR", "classical"), scale=True,
                    tiny_kw=dict(dim=12, depths=(2, 2), heads=(2, 2), window=4, upsampler="pixelshuffle")),
    "FFANet": Entry(_ctor("irlib.models.ffanet:FFANet"), tiny_kw=dict(groups=1, blocks=2, dim=16)),
    "DehazeFormer-T": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "t"), pad=4,
                            tiny_kw=dict(dims=(8, 16, 24, 16, 8), depths=(1, 1, 2, 1, 1), heads=(1, 2, 2, 1, 1),
                                         mlp_ratios=(2, 2, 2, 2, 2), attn_ratio=(0, 0.5, 0.5, 0, 0))),
    "DehazeFormer-S": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "s"), pad=4,
                            tiny_kw=dict(dims=(8, 16, 24, 16, 8), depths=(1, 1, 2, 1, 1), heads=(1, 2, 2, 1, 1),
                                         mlp_ratios=(2, 2, 2, 2, 2), attn_ratio=(0.25, 0.5, 0.75, 0, 0))),
    "DehazeFormer-B": Entry(_ctor("irlib.models.dehazeformer:DehazeFormer", "b"), pad=4,
                            tiny_kw=dict(dims=(8, 16, 24, 16, 8), depths=(2, 2, 2, 1, 1), heads=(1, 2, 2, 1, 1),
                                         mlp_ratios=(2, 2, 2, 2, 2), attn_ratio=(0.25, 0.5, 0.75, 0, 0))),
    "NAFNet": Entry(_ctor("irlib.models.nafnet:NAFNet"), pad=16, tiny_kw=dict(width=8, enc=(1, 1, 1, 1))),
    "IDT": Entry(_ctor("irlib.models.idt:IDT"), pad=128, min_patch=128,
                 tiny_kw=dict(img_size=32, embed_dim=4, win_size=2, num_heads=(1, 1, 2, 2, 2, 2, 2, 1, 1),
                              k_bounds=(8, 4, 2, 1), wtm=(1,) * 9)),
    # TextPromptIR and DINO-IR (Restormer-based)
    "Restormer": Entry(_ctor("irlib.models.restormer:Restormer"), pad=8, tiny_kw=_restormer_tiny()),
    "TextPromptIR": Entry(_textpromptir, pad=8),
    "DINO-IR": Entry(_dinoir, pad=8),
    # DiffLoss's baselines
    "MSBDN": Entry(_ctor("irlib.models.msbdn:MSBDN"), pad=16, tiny_kw=dict(base=4, res_blocks=1)),
    "GridDehazeNet": Entry(_ctor("irlib.models.gridnet:GridDehazeNet"), pad=4,
                           tiny_kw=dict(depth_rate=8, width=4, num_dense_layer=2, growth_rate=8)),
    "IAT": Entry(_ctor("irlib.models.iat:IAT"), note="IAT is 91K parameters: the released size also in smoke"),
    "EfDeRain": Entry(_ctor("irlib.models.efderain:EfDeRain"), pad=16, tiny_kw=dict(widths=(8, 8, 16, 16, 16))),
}


def entry(name: str) -> Entry:
    if name not in ZOO:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(ZOO))}")
    return ZOO[name]


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
