"""OpenAI guided-diffusion's UNet (ADM), key-for-key: ``ADMUNet``'s ``state_dict`` matches
``256x256_diffusion_uncond.pt`` (552.81M parameters, as the DiffLoss paper states), and
``ADMUNet.forward(x, t, return_h=True)`` also returns the middle-block output ("h-space").

The loss that uses it is :class:`irlib.diffloss.DiffLoss`; :func:`load_adm` fetches and strictly loads the
released checkpoint (checksum-pinned).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ADM_256_UNCOND_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
ADM_256_UNCOND_SHA256: str | None = None
"""No checksum is published for this file and we could not download it here; :func:`load_adm` pins the
hash it sees on first download in ``<file>.sha256`` and checks it afterwards (or pass ``sha256=``)."""


@dataclass(frozen=True)
class ADMConfig:
    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6  # learn_sigma: ε and the variance interpolation
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # as image resolutions
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_head_channels: int = 64
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True


ADM_256_UNCOND = ADMConfig()
ADM_TINY = ADMConfig(image_size=32, model_channels=32, num_res_blocks=1, attention_resolutions=(8,),
                     channel_mult=(1, 2, 2), num_head_channels=16)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def norm(c: int) -> GroupNorm32:
    return GroupNorm32(32, c)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbeddings:
    """Every ResBlock's ``(1 + scale, shift)`` for one batch of timesteps (see :meth:`ADMUNet.time_embeddings`).

    Passing it to ``ADMUNet.forward(..., emb=...)`` replaces the per-block timestep projections (two small
    kernels per ResBlock, 39 blocks at 256 px) by lookups; the same object serves several calls with the
    same ``t`` (DiffLoss's clean and restored branches)."""

    __slots__ = ("table", "batch")

    def __init__(self, table: dict, batch: int):
        self.table, self.batch = table, batch

    def __getitem__(self, block: nn.Module):
        return self.table[block]


class ResBlock(nn.Module):
    def __init__(self, ch: int, emb: int, out: int | None = None, scale_shift: bool = True, up: bool = False,
                 down: bool = False):
        super().__init__()
        out = out or ch
        self.in_layers = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out if scale_shift else out))
        self.out_layers = nn.Sequential(norm(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == ch else nn.Conv2d(ch, out, 1)
        self.scale_shift, self.up, self.down = scale_shift, up, down

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb):
        # submodules are called one by one: slicing an nn.Sequential builds a new module on every call
        inl, outl = self.in_layers, self.out_layers
        h = inl[1](inl[0](x))
        if self.up or self.down:
            h, x = self._resample(h), self._resample(x)
        h = inl[2](h)
        if isinstance(emb, TimeEmbeddings):
            scale1p, shift = emb[self]
            h = torch.addcmul(shift, outl[0](h), scale1p) if self.scale_shift else outl[0](h + shift)
        else:
            e = self.emb_layers(emb).type(h.dtype)[..., None, None]
            if self.scale_shift:
                scale, shift = e.chunk(2, dim=1)
                h = outl[0](h) * (1 + scale) + shift
            else:
                h = outl[0](h + e)
        h = outl[1](h)
        if outl[2].p:
            h = outl[2](h)
        return self.skip_connection(x) + outl[3](h)


class AttentionBlock(nn.Module):
    """guided-diffusion's attention with the legacy head layout (qkv split per head, then q|k|v)."""

    def __init__(self, ch: int, head_ch: int):
        super().__init__()
        self.heads = ch // head_ch
        self.norm = norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, emb=None):
        b, c, *sp = x.shape
        h = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(h))
        q, k, v = qkv.reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, dim=1)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        o = o.transpose(1, 2).reshape(b, c, -1)
        return (h + self.proj_out(o)).reshape(b, c, *sp)


class Seq(nn.ModuleList):
    def __init__(self, modules=None):
        super().__init__(modules)
        self._takes_emb = tuple(isinstance(m, (ResBlock, AttentionBlock)) for m in self)

    def forward(self, x, emb):  # type: ignore[override]
        if len(self._takes_emb) != len(self):  # layers appended after construction
            self._takes_emb = tuple(isinstance(m, (ResBlock, AttentionBlock)) for m in self)
        for m, takes_emb in zip(self, self._takes_emb):
            x = m(x, emb) if takes_emb else m(x)
        return x


class ADMUNet(nn.Module):
    """Unconditional ADM UNet with guided-diffusion's parameter names (``input_blocks.N.M``, ...)."""

    def __init__(self, cfg: ADMConfig = ADM_256_UNCOND, checkpoint: bool = False):
        super().__init__()
        self.cfg, self.checkpoint = cfg, checkpoint
        mc, emb = cfg.model_channels, cfg.model_channels * 4
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
        ss = cfg.use_scale_shift_norm
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(cfg.in_channels, ch, 3, padding=1)])])
        chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, int(mult * mc), ss)]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Seq([ResBlock(ch, emb, ch, ss, down=True)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq([ResBlock(ch, emb, ch, ss), AttentionBlock(ch, cfg.num_head_channels), ResBlock(ch, emb, ch, ss)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, int(mc * mult), ss)]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, ss, up=True))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        self.h_hook = None  # callable(h) -> h, used by the SVD perturbation study
        self.compute_dtype = torch.float32
        self._resblocks = tuple(m for m in self.modules() if isinstance(m, ResBlock))  # plain tuple, not registered
        self._stacked: tuple | None = None

    def to_compute_dtype(self, dtype: torch.dtype = torch.bfloat16) -> ADMUNet:
        """Store conv/linear weights in ``dtype`` and run in it, keeping GroupNorm in float32 (guided-diffusion's
        own ``use_fp16`` scheme). For a frozen UNet this is cheaper than autocast, which re-casts all 552M
        weights on every call; inputs and outputs keep the caller's dtype, and gradients flow through."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.to(dtype)
        self.compute_dtype = dtype
        return self

    def _stacked_emb_weights(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """All ResBlocks' timestep projections as one weight matrix (scale rows of every block, then their
        shift rows). Cached for frozen weights; the cache key notices in-place updates, moves and casts."""
        lins = [blk.emb_layers[1] for blk in self._resblocks]
        params = [p for lin in lins for p in (lin.weight, lin.bias)]
        frozen = not any(p.requires_grad for p in params)
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if frozen and self._stacked is not None and self._stacked[0] == key:
            return self._stacked[1]
        if self.cfg.use_scale_shift_norm:
            halves = [(lin.weight.chunk(2), lin.bias.chunk(2)) for lin in lins]
            w = torch.cat([w[0] for w, _ in halves] + [w[1] for w, _ in halves])
            b = torch.cat([b[0] for _, b in halves] + [b[1] for _, b in halves])
            sizes = [lin.out_features // 2 for lin in lins]
        else:
            w, b = torch.cat([lin.weight for lin in lins]), torch.cat([lin.bias for lin in lins])
            sizes = [lin.out_features for lin in lins]
        out = (w, b, sizes)
        self._stacked = (key, out) if frozen else None
        return out

    def time_embeddings(self, t: torch.Tensor) -> TimeEmbeddings:
        """The timestep embedding and every ResBlock's projection of it for timesteps ``t``, with one matrix
        product for all blocks (instead of a SiLU and a Linear per block), as a :class:`TimeEmbeddings` for
        ``forward(..., emb=)``. Numerically the per-block computation, up to float rounding."""
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.compute_dtype))
        w, b, sizes = self._stacked_emb_weights()
        p = F.linear(F.silu(emb), w, b)[..., None, None]
        if self.cfg.use_scale_shift_norm:
            n = sum(sizes)
            scale1p, shift = (1 + p[:, :n]).split(sizes, dim=1), p[:, n:].split(sizes, dim=1)
            table = dict(zip(self._resblocks, zip(scale1p, shift)))
        else:
            table = {blk: (None, s) for blk, s in zip(self._resblocks, p.split(sizes, dim=1))}
        return TimeEmbeddings(table, len(t))

    def _run(self, block, h, emb):
        if self.checkpoint and h.requires_grad:
            return torch.utils.checkpoint.checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_h: bool = False, emb: TimeEmbeddings | None = None):
        """ε̂ and learned-variance channels (6) for ``x`` at timesteps ``t``; with ``return_h`` also the
        middle-block output h. ``emb`` (from :meth:`time_embeddings` of the same ``t``) skips recomputing the
        timestep projections."""
        if emb is None:
            emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.compute_dtype))
        elif emb.batch != x.shape[0]:
            raise ValueError(f"emb was computed for {emb.batch} timesteps but x has batch {x.shape[0]}")
        hs, h = [], x.to(self.compute_dtype)
        for blk in self.input_blocks:
            h = self._run(blk, h, emb)
            hs.append(h)
        h = self._run(self.middle_block, h, emb)
        if self.h_hook is not None:
            h = self.h_hook(h)
        mid = h
        for blk in self.output_blocks:
            h = self._run(blk, torch.cat([h, hs.pop()], dim=1), emb)
        out = self.out(h).to(x.dtype)
        return (out, mid) if return_h else out


def load_adm(path_or_url: str = ADM_256_UNCOND_URL, cfg: ADMConfig = ADM_256_UNCOND, sha256: str | None = ADM_256_UNCOND_SHA256,
             cache_dir: str | None = None) -> ADMUNet:
    """Build the UNet and load guided-diffusion weights from a file path or URL (checksum-verified)."""
    from pathlib import Path

    from ..data.fetch import ChecksumError, _download, sha256_file

    p = Path(path_or_url)
    if "://" in str(path_or_url):
        cache = Path(cache_dir or Path.home() / ".cache" / "irlib")
        cache.mkdir(parents=True, exist_ok=True)
        p = cache / str(path_or_url).rsplit("/", 1)[-1]
        if not p.is_file():
            tmp = p.with_name(p.name + ".partial")
            try:
                _download(str(path_or_url), tmp)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"cannot download {path_or_url}: {e}. Place the file at {p} by hand.") from e
            tmp.replace(p)
    if not p.is_file():
        raise FileNotFoundError(f"ADM checkpoint {p} not found")
    digest = sha256_file(p)
    pin = p.with_name(p.name + ".sha256")
    want = sha256 or (pin.read_text().split()[0] if pin.is_file() else None)
    if want and digest != want:
        raise ChecksumError(f"{p}: sha256 {digest} != expected {want}")
    if not want:
        pin.write_text(digest + "\n")
    model = ADMUNet(cfg)
    sd = torch.load(p, map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False)
