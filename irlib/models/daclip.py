"""DA-CLIP (Luo et al., ICLR 2024, "Controlling Vision-Language Models for Multi-Task Image Restoration"): a
frozen CLIP and a trainable *controller* — a copy of CLIP's image encoder whose every transformer block feeds a
zero-initialised linear projection — that outputs a degradation embedding and steers the frozen encoder towards
a clean-content embedding. :class:`DACLIPRestorer` drives the IR-SDE U-Net (:mod:`irlib.models.irsde`) with both
embeddings; it is the "DA-CLIP" comparison method that DINO-IR trains in its own setting (Table 1).

Names follow the release (Algolzw/daclip-uir, ``da-clip/src/open_clip/{daclip_model,model,transformer}.py``,
an open_clip fork): :class:`DaCLIP` holds ``clip`` (an open_clip ``CLIP``: ``visual``, text ``transformer``,
``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``, ``logit_scale``, non-persistent
``attn_mask``), ``visual`` (the *same* module as ``clip.visual``, so the state dict lists it twice, as the
release's does), ``visual_control`` (``transformer.transformer.resblocks.*`` + ``transformer.zero_modules.*``) and
``logit_scale``. (irlib registers the tower once and lists it twice in ``state_dict`` through hooks.) A released ``daclip_ViT-B-32.pt`` loads with ``strict=True`` (:func:`load_daclip`); a plain
open_clip ViT-B-32 file becomes the release's starting point with :func:`daclip_state_from_clip`.

Behaviour kept from the release: the controller's hidden states are added to the frozen encoder's blocks in
*reverse* order (block ``i`` of the frozen encoder receives the projection of controller block ``L-1-i``: the
release pops them off the end of a list); the degradation embedding is the controller's own pooled, projected
class token.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .irsde import IRSDE, ConditionalUNet
from .release import load_release

#: OpenAI CLIP's normalisation, used by the release's ``clip_transform`` (bicubic resize 224, centre crop)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: open_clip's ``ViT-B-32`` (= the release's ``daclip_ViT-B-32``) configuration
VIT_B_32: dict[str, Any] = {"embed_dim": 512,
                            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
                            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                                         "layers": 12}}
#: a CPU smoke configuration on the same code path
TINY: dict[str, Any] = {"embed_dim": 16,
                        "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
                        "text_cfg": {"context_length": 7, "vocab_size": 40, "width": 32, "heads": 2, "layers": 2}}


#: the release's training/testing settings (Algolzw/daclip-uir: IR-SDE ``options/train.yml`` / ``test.yml``,
#: DA-CLIP ``da-clip/README.md`` training command); tests/fixtures/release/daclip_options.json has file + line
RELEASE_OPTIONS: dict[str, dict[str, Any]] = {
    "restorer_train": {"max_sigma": 50, "T": 100, "schedule": "cosine", "eps": 0.005, "batch_size": 16,
                       "patch_size": 256, "use_flip": True, "use_rot": True, "nf": 64, "ch_mult": [1, 2, 4, 8],
                       "context_dim": 512, "use_degra_context": True, "use_image_context": True,
                       "optimizer": "AdamW", "lr_G": 2e-4, "lr_scheme": "TrueCosineAnnealingLR", "beta1": 0.9,
                       "beta2": 0.99, "niter": 700_000, "warmup_iter": -1, "eta_min": 1e-6, "is_weighted": False,
                       "loss_type": "l1", "weight": 1.0, "manual_seed": 0},
    "restorer_test": {"max_sigma": 50, "T": 100, "eps": 0.005, "sampling_mode": "posterior"},
    "controller_train": {"warmup": 100, "batch_size": 784, "lr": 2e-5, "wd": 0.05, "epochs": 30,
                         "model": "daclip_ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
}


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)`` (OpenAI's original CLIP activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block on sequence-first tokens (L, N, D): ``ln_1``, ``attn`` (nn.MultiheadAttention), ``ln_2``,
    ``mlp`` (``c_fc``, ``gelu``, ``c_proj``; 4x wide)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)),
                                              ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock`. ``control`` (one tensor per block) is added after the blocks,
    the last tensor after the first block (the release's order)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu)
                                        for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                control: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        if control is not None and len(control) != self.layers:
            raise ValueError(f"control needs one tensor per block ({self.layers}), got {len(control)}")
        for i, blk in enumerate(self.resblocks):
            x = blk(x, attn_mask=attn_mask)
            if control is not None:
                x = x + control[self.layers - 1 - i]
        return x


class ControlTransformer(nn.Module):
    """The controller's transformer: the copied ``transformer`` plus one zero-initialised ``Linear(width, width)``
    per block (``zero_modules``); returns the final tokens and every block's projected output."""

    def __init__(self, transformer: Transformer):
        super().__init__()
        self.transformer = transformer
        self.layers, self.width = transformer.layers, transformer.width
        self.zero_modules = nn.ModuleList([nn.Linear(self.width, self.width) for _ in range(self.layers)])
        for z in self.zero_modules:
            nn.init.zeros_(z.weight)
            nn.init.zeros_(z.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hiddens = []
        for z, blk in zip(self.zero_modules, self.transformer.resblocks):
            x = blk(x, attn_mask=attn_mask)
            hiddens.append(z(x))
        return x, hiddens


class VisionTransformer(nn.Module):
    """CLIP's image tower: patchify (``conv1``, no bias), class token, positional embedding, ``ln_pre``,
    ``transformer``, ``ln_post`` on the class token, ``proj``."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int,
                 mlp_ratio: float = 4.0, quick_gelu: bool = False):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer: nn.Module = Transformer(width, layers, heads, mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch + class tokens with positions, after ``ln_pre``, sequence-first (L, N, D)."""
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x).permute(1, 0, 2)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Projected, normalised class token of sequence-first tokens."""
        return self.ln_post(x[0]) @ self.proj

    def forward(self, x: torch.Tensor, control: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.pool(self.transformer(self.tokens(x), control=control))


class CLIP(nn.Module):
    """open_clip's ``CLIP`` (non-custom text): image tower ``visual`` and a causal text transformer whose
    end-of-text token (the highest id) is projected by ``text_projection``."""

    def __init__(self, embed_dim: int, vision_cfg: Mapping[str, Any], text_cfg: Mapping[str, Any],
                 quick_gelu: bool = False):
        super().__init__()
        v, t = dict(vision_cfg), dict(text_cfg)
        vw = v["width"]
        self.visual = VisionTransformer(v.get("image_size", 224), v["patch_size"], vw, v["layers"],
                                        vw // v.get("head_width", 64), embed_dim, v.get("mlp_ratio", 4.0), quick_gelu)
        tw, n = t["width"], t.get("context_length", 77)
        self.transformer = Transformer(tw, t["layers"], t["heads"], quick_gelu=quick_gelu)
        self.context_length, self.vocab_size = n, t["vocab_size"]
        self.token_embedding = nn.Embedding(t["vocab_size"], tw)
        self.positional_embedding = nn.Parameter(torch.empty(n, tw))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.empty(tw, embed_dim))
        self.register_buffer("attn_mask", torch.full((n, n), float("-inf")).triu_(1), persistent=False)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=tw ** -0.5)

    @classmethod
    def vit_b_32(cls) -> "CLIP":
        """open_clip's ViT-B-32 (151.3M parameters), the release's frozen CLIP."""
        return cls(**copy.deepcopy(VIT_B_32))

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(image)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2), attn_mask=self.attn_mask).permute(1, 0, 2)
        x = self.ln_final(x)
        f = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
        return F.normalize(f, dim=-1) if normalize else f


class DaCLIP(nn.Module):
    """Degradation-aware CLIP: ``clip`` (frozen after :meth:`lock_clip`), ``visual_control`` (trainable)."""

    def __init__(self, clip: CLIP):
        super().__init__()
        self.clip = clip
        self.visual_control = copy.deepcopy(clip.visual)
        self.visual_control.transformer = ControlTransformer(self.visual_control.transformer)
        self.logit_scale = nn.Parameter(clip.logit_scale.detach().clone())
        self.register_state_dict_post_hook(_list_visual_twice)
        self.register_load_state_dict_pre_hook(_take_visual_once)

    @property
    def visual(self) -> VisionTransformer:
        """CLIP's (frozen) image tower; the release registers it twice, irlib once (see :func:`_list_visual_twice`)."""
        return self.clip.visual

    @classmethod
    def vit_b_32(cls) -> "DaCLIP":
        """The release's ``daclip_ViT-B-32``: 246.2M parameters, CLIP 151.3M and the controller 94.9M (an 87.8M
        image-tower copy plus 7.1M of zero projections)."""
        return cls(CLIP(**copy.deepcopy(VIT_B_32)))

    @classmethod
    def tiny(cls) -> "DaCLIP":
        return cls(CLIP(**copy.deepcopy(TINY)))

    @property
    def embed_dim(self) -> int:
        return int(self.clip.visual.proj.shape[1])

    def initial_controller(self) -> None:
        """Start the controller from CLIP's image encoder (its zero projections stay as they are)."""
        with torch.no_grad():
            src = dict(self.clip.visual.named_parameters())
            for k, p in self.visual_control.named_parameters():
                k0 = k.replace("transformer.transformer.", "transformer.", 1)
                if k0 in src:
                    p.copy_(src[k0])
            self.logit_scale.copy_(self.clip.logit_scale)

    def lock_clip(self) -> None:
        """Freeze CLIP (the controller and ``logit_scale`` stay trainable)."""
        for p in self.clip.parameters():
            p.requires_grad_(False)

    def controller_parameters(self) -> list[nn.Parameter]:
        return list(self.visual_control.parameters()) + [self.logit_scale]

    def encode_image(self, image: torch.Tensor, control: bool = False,
                     normalize: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """With ``control``: ``(content embedding, degradation embedding)``; else CLIP's image embedding."""
        if not control:
            return self.clip.encode_image(image, normalize)
        vc = self.visual_control
        x, hiddens = vc.transformer(vc.tokens(image))
        degra = vc.pool(x)
        feats = self.clip.visual(image, control=hiddens)
        if normalize:
            feats, degra = F.normalize(feats, dim=-1), F.normalize(degra, dim=-1)
        return feats, degra

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.clip.encode_text(text, normalize)

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> dict[str, Any]:
        """The contrastive training outputs; ``text`` is ``cat([caption, degradation], -1)`` token ids."""
        caption, degradation = text.chunk(2, dim=-1) if text is not None else (None, None)
        feats, degra = self.encode_image(image, control=True, normalize=True) if image is not None else (None, None)
        return {"image_features": feats,
                "text_features": self.encode_text(caption, True) if caption is not None else None,
                "image_degra_features": degra,
                "text_degra_features": self.encode_text(degradation, True) if degradation is not None else None,
                "logit_scale": self.logit_scale.exp()}


def daclip_loss(out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's DA-CLIP objective (single process): symmetric InfoNCE between image and caption embeddings
    (``contrastive_loss``) and between degradation embeddings of image and degradation text (``degra_loss``);
    training minimises their sum. ``out`` is :meth:`DaCLIP.forward`'s dict."""

    def clip_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = out["logit_scale"] * a @ b.T
        labels = torch.arange(a.shape[0], device=a.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    return {"contrastive_loss": clip_loss(out["image_features"], out["text_features"]),
            "degra_loss": clip_loss(out["image_degra_features"], out["text_degra_features"])}


def controller_param_groups(model: DaCLIP, weight_decay: float = 0.05) -> list[dict[str, Any]]:
    """The release's AdamW groups over the trainable parameters: no weight decay for gains, biases, 1-D tensors
    and ``logit_scale``; ``weight_decay`` for the rest. (After each step the release clamps ``logit_scale`` to
    ``[0, log 100]``: :func:`clamp_logit_scale`.)"""
    def no_decay(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0,
             "names": [n for n, p in named if no_decay(n, p)]},
            {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay,
             "names": [n for n, p in named if not no_decay(n, p)]}]


@torch.no_grad()
def clamp_logit_scale(model: DaCLIP) -> None:
    """Keep the temperature's log in ``[0, log 100]`` (CLIP's rule, applied by the release after each step)."""
    model.logit_scale.clamp_(0, math.log(100))


def _list_visual_twice(module: DaCLIP, state: dict, prefix: str, local_metadata: Any) -> None:
    """State-dict hook: list ``clip.visual.*`` again as ``visual.*``, between ``clip.*`` and ``visual_control.*``,
    as the release's state dict does (there ``visual`` is a second registration of the same module)."""
    tail = [k for k in state if k.startswith(prefix + "visual_control.")]
    moved = [(k, state.pop(k)) for k in tail]
    src = prefix + "clip.visual."
    for k in [k for k in state if k.startswith(src)]:
        state[prefix + "visual." + k[len(src):]] = state[k]
    state.update(moved)


def _take_visual_once(module: DaCLIP, state: dict, prefix: str, local_metadata: Any, strict: bool,
                      missing: list[str], unexpected: list[str], errors: list[str]) -> None:
    """Load hook: the file's ``visual.*`` entries must be there (under ``strict``) and equal ``clip.visual.*``;
    they are then dropped (one module holds both)."""
    src = prefix + "clip.visual."
    for k in [k for k in state if k.startswith(src)]:
        alias = prefix + "visual." + k[len(src):]
        if alias not in state:
            if strict:
                missing.append(alias)
            continue
        a, b = state.pop(alias), state[k]
        if not (a.is_meta or b.is_meta) and (a.shape != b.shape or not torch.equal(a, b)):
            errors.append(f"{alias} differs from {k}: the file's two copies of CLIP's image tower disagree")
    for k in [k for k in state if k.startswith(prefix + "visual.")]:
        unexpected.append(k)
        state.pop(k)


def daclip_state_from_clip(clip_state: Mapping[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The release's starting point from a plain open_clip CLIP state dict (e.g. ViT-B-32 laion2b_s34b_b79k):
    ``clip.*`` and ``visual.*`` from the file, the controller a copy of the image encoder with zero projections,
    ``logit_scale`` copied."""
    out = {f"clip.{k}": v for k, v in clip_state.items()}
    width = None
    for k, v in clip_state.items():
        if k.startswith("visual."):
            out[k] = v
            rest = k[len("visual."):]
            if rest.startswith("transformer."):
                rest = "transformer." + rest
            out[f"visual_control.{rest}"] = v.clone()
            if rest == "class_embedding":
                width = v.shape[0]
    if width is None:
        raise ValueError("not a CLIP image-tower state dict: no visual.class_embedding")
    ref = clip_state["visual.class_embedding"]
    for i in range(layers):
        out[f"visual_control.transformer.zero_modules.{i}.weight"] = ref.new_zeros(width, width)
        out[f"visual_control.transformer.zero_modules.{i}.bias"] = ref.new_zeros(width)
    out["logit_scale"] = clip_state["logit_scale"].clone()
    return out


def load_daclip(model: DaCLIP, path_or_state: str | Path | Mapping, from_clip: bool = False) -> DaCLIP:
    """Load a release DA-CLIP checkpoint (``{"state_dict": ...}``, ``module.`` prefixes allowed) strictly, or with
    ``from_clip`` a plain open_clip CLIP file as the controller's starting point."""
    convert = None
    if from_clip:
        layers = model.visual_control.transformer.layers

        def convert(sd: dict) -> dict:
            return daclip_state_from_clip(sd, layers)

    return load_release(model, path_or_state, strict=True, convert=convert)


def clip_preprocess(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Images in [0, 1] (N, 3, H, W) to CLIP's input as the release's ``clip_transform`` makes it from a float
    image: 8-bit truncation, bicubic resize of the short side to ``size`` (long side ``int(size * long /
    short)``), 8-bit rounding, centre crop (offsets rounded), OpenAI normalisation. PIL's bicubic filter and
    torch's antialiased one differ by at most one 8-bit level (tested against the release)."""
    h, w = x.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = torch.floor(x.clamp(0, 1) * 255) / 255
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    x = torch.round(x.clamp(0, 1) * 255) / 255
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class DACLIPRestorer(nn.Module):
    """DA-CLIP's universal restorer: a frozen :class:`DaCLIP` embeds the low-quality image (content and
    degradation), the IR-SDE :class:`ConditionalUNet` predicts noise under both, :class:`IRSDE` samples.

    ``forward(lq)`` restores (posterior sampling, ``T`` steps; ``seed`` fixes its noise); :meth:`training_loss`
    is the release's objective for one batch. Full size: ViT-B-32 + the release's U-Net + IRSDE(50, 100,
    cosine, eps 0.005)."""

    def __init__(self, daclip: DaCLIP, unet: ConditionalUNet, sde: IRSDE, seed: int | None = 0):
        super().__init__()
        if unet.context_dim != daclip.embed_dim:
            raise ValueError(f"U-Net context {unet.context_dim} != DA-CLIP embedding {daclip.embed_dim}")
        self.daclip, self.unet, self.sde, self.seed = daclip, unet, sde, seed
        self.daclip.lock_clip()
        for p in self.daclip.parameters():
            p.requires_grad_(False)

    @classmethod
    def universal(cls, **kw) -> "DACLIPRestorer":
        return cls(DaCLIP.vit_b_32(), ConditionalUNet(), IRSDE(50, T=100, schedule="cosine", eps=0.005), **kw)

    @classmethod
    def tiny(cls, T: int = 4, **kw) -> "DACLIPRestorer":
        d = DaCLIP.tiny()
        return cls(d, ConditionalUNet.tiny(context_dim=d.embed_dim), IRSDE(50, T=T), **kw)

    def train(self, mode: bool = True) -> "DACLIPRestorer":
        super().train(mode)
        self.daclip.eval()  # frozen
        return self

    def _to(self, device: torch.device) -> None:
        for k in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "dt"):
            setattr(self.sde, k, getattr(self.sde, k).to(device))

    def contexts(self, lq: torch.Tensor) -> dict[str, torch.Tensor]:
        """``text_context`` (degradation embedding) and ``image_context`` (content embedding) of ``lq``."""
        with torch.no_grad():
            img, degra = self.daclip.encode_image(clip_preprocess(lq, self.daclip.visual.image_size), control=True)
        return {"text_context": degra.float(), "image_context": img.float()}

    def training_loss(self, lq: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random steps, noisy states from ``gt`` reverting to ``lq``, L1 between the predicted and the optimum
        reverse step."""
        self._to(lq.device)
        ctx = self.contexts(lq)
        t = self.sde.random_steps(lq.shape[0], generator).to(lq.device)
        self.sde.set_mu(lq)
        z = torch.randn(lq.shape, generator=generator).to(lq) if generator is not None else None
        xt = self.sde.noisy_state(gt, t, z)
        noise = self.unet(xt, lq, t.reshape(-1), **ctx)
        return self.sde.training_loss(noise, xt, gt, t)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        self._to(lq.device)
        return self.sde.sample(self.unet, lq, generator_seed=self.seed, **self.contexts(lq))
