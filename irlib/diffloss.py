"""DiffLoss: a frozen pretrained diffusion UNet as a training constraint, and the h-space SVD study.

* :class:`ADMUNet` re-implements OpenAI guided-diffusion's UNet so that its ``state_dict`` keys and
  shapes match ``256x256_diffusion_uncond.pt`` (552.81M parameters, as the DiffLoss paper states).
  ``ADMUNet.forward(x, t, return_h=True)`` also returns the middle-block output ("h-space").
* :class:`DiffLoss` implements Eqs. (7), (11), (14)-(16): the same t and the same noise ε are used for
  the clean target x and the restored output z; L_nat = ||ε̂(x_t) - ε̂(z_t)||, L_sem = ||h(x_t) - h(z_t)||.
  Gradients reach the restoration network *through* the frozen UNet (its parameters need no grad, but
  the z branch is never wrapped in ``no_grad``). The public code runs both passes under ``no_grad``,
  which makes the loss a constant; ``detach_restored=True`` reproduces that variant for comparison.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

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
        if self.up or self.down:
            h = self.in_layers[:-1](x)
            h, x = self._resample(h), self._resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


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
    def forward(self, x, emb):  # type: ignore[override]
        for m in self:
            x = m(x, emb) if isinstance(m, (ResBlock, AttentionBlock)) else m(x)
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

    def to_compute_dtype(self, dtype: torch.dtype = torch.bfloat16) -> "ADMUNet":
        """Store conv/linear weights in ``dtype`` and run in it, keeping GroupNorm in float32 (guided-diffusion's
        own ``use_fp16`` scheme). For a frozen UNet this is cheaper than autocast, which re-casts all 552M
        weights on every call; inputs and outputs keep the caller's dtype, and gradients flow through."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.to(dtype)
        self.compute_dtype = dtype
        return self

    def _run(self, block, h, emb):
        if self.checkpoint and h.requires_grad:
            return torch.utils.checkpoint.checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, return_h: bool = False):
        emb = self.time_embed(timestep_embedding(t, self.cfg.model_channels).to(self.compute_dtype))
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

    from .data.fetch import ChecksumError, _download, sha256_file

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


@dataclass
class DDPMSchedule:
    """Linear β schedule of ADM (1e-4·1000/T .. 0.02·1000/T) with the usual derived quantities."""

    T: int = 1000
    betas: torch.Tensor = field(init=False)
    abar: torch.Tensor = field(init=False)

    def __post_init__(self):
        scale = 1000 / self.T
        self.betas = torch.linspace(scale * 1e-4, scale * 0.02, self.T, dtype=torch.float64)
        self.abar = torch.cumprod(1 - self.betas, 0)

    def q_sample(self, x0, t, eps):
        a = self.abar.to(x0.device)[t].float().view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps                           # Eq. (7)

    def pred_x0(self, xt, t, eps):
        a = self.abar.to(xt.device)[t].float().view(-1, 1, 1, 1)
        return xt / a.sqrt() - (1 / a - 1).sqrt() * eps                       # Eqs. (8)-(10)

    def posterior_mean(self, x0, xt, t):
        """Mean of q(x_{t-1} | x_t, x_0) (Eq. 3), used by ablation (b)."""
        b = self.betas.to(xt.device)[t].float().view(-1, 1, 1, 1)
        a = self.abar.to(xt.device)[t].float().view(-1, 1, 1, 1)
        a_prev = torch.where(t > 0, self.abar.to(xt.device)[(t - 1).clamp_min(0)], torch.ones_like(self.abar[:1]).to(xt.device))
        a_prev = a_prev.float().view(-1, 1, 1, 1)
        c0 = b * a_prev.sqrt() / (1 - a)
        ct = (1 - a_prev) * (1 - b).sqrt() / (1 - a)
        return c0 * x0 + ct * xt


class DiffLoss(nn.Module):
    """L_DiffLoss = L_nat + λ L_sem (Eq. 15); use as a trainer term with weight γ (Eq. 16, paper γ=0.001).

    ``target``: ``'eps'`` (paper's final setting, ablation c), ``'x0'`` (ablation a: constrain x̂0 only) or
    ``'xprev'`` (ablation b: constrain x̂_{t-1} only); λ applies L_sem in every case only for ``'eps'``.
    ``reduction='mse'`` uses the mean squared difference for the "‖·‖₂" terms (as the L2 pixel loss);
    ``'norm'`` uses the Euclidean norm per sample, averaged over the batch.
    Images in [0,1] are mapped to [-1,1] and resized to ``size`` (the UNet's training resolution).
    Cost controls: ``autocast=True`` runs the UNet under bf16 autocast; ``unet.to_compute_dtype(torch.bfloat16)``
    stores the frozen UNet in bf16 instead (guided-diffusion's own fp16 scheme, 10% less peak memory);
    ``channels_last=True`` uses NHWC memory; ``ADMUNet(checkpoint=True)`` recomputes UNet activations in the
    backward pass. Measured with ``python -m irlib.bench --scale paper`` on one H100 (NAFNet-32, batch 4,
    256 px; step time over plain L2): fp32 x3.30, bf16 autocast x3.09, bf16 weights x3.20, channels_last
    x3.64, checkpointing x4.03 at half the memory (13.2 vs 26.8 GiB). The step is host-bound (profiler: about
    400 ms of CPU vs 240 ms of GPU time per step), which is why precision barely moves it.
    """

    def __init__(self, unet: ADMUNet, lam: float = 0.01, target: str = "eps", size: int | None = None,
                 T: int = 1000, reduction: str = "mse", detach_restored: bool = False, autocast: bool = False,
                 channels_last: bool = False):
        super().__init__()
        if target not in ("eps", "x0", "xprev"):
            raise ValueError("target must be eps, x0 or xprev")
        self.unet = [unet.eval().requires_grad_(False)]
        self.lam, self.target, self.reduction = lam, target, reduction
        self.size = size or unet.cfg.image_size
        self.sched = DDPMSchedule(T)
        self.detach_restored, self.autocast, self.channels_last = detach_restored, autocast, channels_last
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        self.gen = torch.Generator()
        self.last: dict[str, float] = {}

    def _dist(self, a, b):
        if self.reduction == "mse":
            return F.mse_loss(a.float(), b.float())
        return (a.float() - b.float()).flatten(1).norm(dim=1).mean()

    def _prep(self, x):
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x * 2 - 1

    def forward(self, out: torch.Tensor, batch: dict, model=None, t: torch.Tensor | None = None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
        unet = self.unet[0].to(out.device)
        x0, z0 = self._prep(batch["gt"]), self._prep(out)
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.sched.T, (b,), generator=self.gen).to(out.device)
        if eps is None:
            eps = torch.randn(x0.shape, generator=self.gen).to(out.device, x0.dtype)
        xt, zt = self.sched.q_sample(x0, t, eps), self.sched.q_sample(z0, t, eps)   # same t, same noise
        if self.channels_last:
            xt, zt = xt.contiguous(memory_format=torch.channels_last), zt.contiguous(memory_format=torch.channels_last)
        dev = "cuda" if out.is_cuda else "cpu"
        with torch.no_grad(), torch.autocast(dev, torch.bfloat16, enabled=self.autocast):
            e_clr, h_clr = unet(xt, t, return_h=True)
        ctx = torch.no_grad() if self.detach_restored else torch.enable_grad()
        with ctx, torch.autocast(dev, torch.bfloat16, enabled=self.autocast):
            e_rst, h_rst = unet(zt, t, return_h=True)
        e_clr, e_rst = e_clr[:, :3].float(), e_rst[:, :3].float()
        if self.target == "eps":
            nat = self._dist(e_rst, e_clr)                                           # Eq. (11)
            sem = self._dist(h_rst, h_clr)                                           # Eq. (14)
            self.last = {"L_nat": float(nat.detach()), "L_sem": float(sem.detach())}
            return nat + self.lam * sem                                              # Eq. (15)
        xh, zh = self.sched.pred_x0(xt, t, e_clr), self.sched.pred_x0(zt, t, e_rst)
        if self.target == "x0":
            return self._dist(zh, xh)
        return self._dist(self.sched.posterior_mean(zh, zt, t), self.sched.posterior_mean(xh, xt, t))


# ------------------------------------------------------------------------------------ h-space SVD study
def svd_perturb_hook(strength: float, k: int = 1):
    """A middle-block hook that scales the top-``k`` singular values of each sample's h (C x HW) by
    ``1 + strength``; strength 0 leaves h unchanged."""

    def hook(h: torch.Tensor) -> torch.Tensor:
        if strength == 0:
            return h
        b, c = h.shape[:2]
        u, s, vh = torch.linalg.svd(h.float().reshape(b, c, -1), full_matrices=False)
        s = s.clone()
        s[:, :k] = s[:, :k] * (1 + strength)
        return (u @ torch.diag_embed(s) @ vh).reshape(h.shape).to(h.dtype)

    return hook


@torch.no_grad()
def regenerate(unet: ADMUNet, x: torch.Tensor, t_start: int = 500, steps: int = 10, strength: float = 0.0,
               seed: int = 0, T: int = 1000) -> torch.Tensor:
    """Noise ``x`` (in [0,1]) to ``t_start`` and regenerate it with deterministic DDIM steps while the
    h-space perturbation is active (Fig. 2a). Returns images in [0,1]."""
    sched = DDPMSchedule(T)
    g = torch.Generator().manual_seed(seed)
    x0 = x * 2 - 1
    ts = torch.linspace(t_start, 0, steps + 1).round().long().tolist()
    xt = sched.q_sample(x0, torch.full((x.shape[0],), ts[0]), torch.randn(x0.shape, generator=g))
    unet.h_hook = svd_perturb_hook(strength)
    try:
        for t, t_next in zip(ts[:-1], ts[1:]):
            tt = torch.full((x.shape[0],), t)
            e = unet(xt, tt)[:, :3]
            x0h = sched.pred_x0(xt, tt, e).clamp(-1, 1)
            a_next = sched.abar[t_next].float() if t_next > 0 else torch.tensor(1.0)
            xt = a_next.sqrt() * x0h + (1 - a_next).sqrt() * e
    finally:
        unet.h_hook = None
    return ((xt + 1) / 2).clamp(0, 1)
