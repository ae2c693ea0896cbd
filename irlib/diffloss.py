"""DiffLoss: a frozen pretrained diffusion UNet as a training constraint, and the h-space SVD study (Fig. 2).

* :class:`ADMUNet` re-implements OpenAI guided-diffusion's UNet so that its ``state_dict`` keys and
  shapes match ``256x256_diffusion_uncond.pt`` (552.81M parameters, as the DiffLoss paper states).
  ``ADMUNet.forward(x, t, return_h=True)`` also returns the middle-block output ("h-space").
* :class:`DiffLoss` implements Eqs. (7), (11), (14)-(16): the same t and the same noise ε are used for
  the clean target x and the restored output z; L_nat = ||ε̂(x_t) - ε̂(z_t)||, L_sem = ||h(x_t) - h(z_t)||.
  Gradients reach the restoration network *through* the frozen UNet (its parameters need no grad, but
  the z branch is never wrapped in ``no_grad``). The public code runs both passes under ``no_grad``,
  which makes the loss a constant; ``detach_restored=True`` reproduces that variant for comparison, and
  ``path="release"`` makes the two UNet calls in the public code's order (see :class:`DiffLoss`).
* :func:`hspace_study`, :func:`plot_hspace_study`, :func:`plot_regeneration_strip` and
  :func:`hspace_summary` reproduce Fig. 2: perturb the top singular component of h during a DDIM
  regeneration and measure how far ResNet-50 features move, per group (clean, degraded, restored
  without/with DiffLoss) and perturbation level.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd
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


PATHS = ("split", "batched", "release")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class DiffLoss(nn.Module):
    """L_DiffLoss = L_nat + λ L_sem (Eq. 15); use as a trainer term with weight γ (Eq. 16, paper γ=0.001).

    ``target``: ``'eps'`` (paper's final setting, ablation c), ``'x0'`` (ablation a: constrain x̂0 only) or
    ``'xprev'`` (ablation b: constrain x̂_{t-1} only); λ applies L_sem in every case only for ``'eps'``.
    ``reduction='mse'`` uses the mean squared difference for the "‖·‖₂" terms (as the L2 pixel loss, and as
    the public code's ``mean_flat`` of squares); ``'norm'`` uses the Euclidean norm per sample, averaged over
    the batch. Images in [0,1] are mapped to [-1,1] and resized to ``size`` (the UNet's training resolution).
    The public code weights the terms 1e-3 (noise) and 1e-6 (h-space) in its total, i.e. γ=0.001 and λ=0.001
    instead of the paper's λ=0.01; pass ``lam=0.001`` for the release's weighting.

    How the frozen UNet is run (all options give the same loss up to float rounding; each is a separate cost
    lever, see ``irlib.bench``):

    * ``path="split"`` (default): the clean target's branch once per call under ``no_grad`` (nothing on the
      ground truth needs a gradient), then the restored branch with gradient: two UNet calls, activations
      kept for the restored half only.
    * ``path="batched"``: ONE UNet call on ``cat([z_t, x_t])`` (batch 2B). Half the host work of two calls,
      but autograd keeps the clean half's activations and the backward pass runs over 2B samples, so peak
      memory grows by about the UNet's activation memory for B samples (pair it with bf16 to stay within the
      fp32 split path's memory).
    * ``path="release"``: the *release computation*: two calls in the public code's order (restored output
      first, then the ground truth) in the same grad mode, i.e. the release's ``training_losses`` with its
      ``no_grad`` removed so that the gradient reaches the restorer. With a frozen UNet autograd records
      nothing for the ground-truth call, so it costs about what ``"split"`` costs; it is the benchmark
      baseline. ``path="release", detach_restored=True`` is the public code as released (both calls under
      ``no_grad``).
    * ``lean=True`` (default) removes host overhead without changing the maths: the timestep embedding and
      all ResBlocks' projections once per call with one matrix product, shared by both branches
      (:meth:`ADMUNet.time_embeddings`); ᾱ tables as float32 tensors on the loss's device (no float64 table
      copied to the device per call); the UNet is moved only when the device changes (not ``.to()`` per
      call); no host sync: :attr:`last` keeps device tensors and converts to floats only when read.
      ``lean=False`` is the previous computation, kept to measure the lever (except that ResBlocks no longer
      build ``nn.Sequential`` slices on every call, on every path).
    * ``device_rng=True`` draws t and ε with a generator on the loss's device (no host RNG, no host-to-device
      copy of ε); the default draws them on the CPU (``seed``), so runs on any device see the same noise.
    * ``autocast=True`` runs the UNet under bf16 autocast; ``unet.to_compute_dtype(torch.bfloat16)`` stores
      the frozen UNet in bf16 instead (guided-diffusion's own fp16 scheme). Both keep the loss within 1% of
      fp32 on typical batches, but not where t is small: there z_t and x_t nearly coincide and bf16 rounding
      of the two predictions dominates their difference (tests/test_diffloss.py shows it on a tiny ADM).
      ``channels_last=True`` uses NHWC memory; ``ADMUNet(checkpoint=True)`` recomputes UNet activations in
      the backward pass.
    * ``compile=True`` (or a ``torch.compile`` mode name) compiles the whole loss computation (q-sampling,
      UNet calls, distances) with ``compile_backend``; ``compile="reduce-overhead"`` adds CUDA graphs on CUDA
      (each call then marks a new graph step and copies the logged terms out of the graph's memory). Only
      the CPU inductor path is tested here (it matches eager within float tolerance); the CUDA-graph path is
      untested on this machine. On CPU "reduce-overhead" is the same as "default". The first call compiles
      (minutes on a small CPU); a compile failure raises a ``RuntimeError`` naming this option.

    Measured before these levers with ``python -m irlib.bench --scale paper`` on one H100 (NAFNet-32,
    batch 4, 256 px; step time over plain L2): fp32 x3.30, bf16 autocast x3.09, bf16 weights x3.20,
    channels_last x3.64, checkpointing x4.03 at half the memory (13.2 vs 26.8 GiB); the profiler showed about
    400 ms of CPU vs 240 ms of GPU time per step. Those runs used ``lean=False`` semantics (two host syncs per
    call for the logged terms, per-call device copies of the schedule table and per-block embeddings). Host
    work counted without a GPU (aten ops dispatched by one loss forward + backward of the 256-px ADM at batch
    4, on the meta device, host syncs not counted): 4058 with ``lean=False``, 3422 lean split, 2492 lean
    batched; timings on a GPU are still to be measured.
    """

    def __init__(self, unet: ADMUNet, lam: float = 0.01, target: str = "eps", size: int | None = None,
                 T: int = 1000, reduction: str = "mse", detach_restored: bool = False, autocast: bool = False,
                 channels_last: bool = False, *, path: str = "split", lean: bool = True,
                 compile: bool | str = False, compile_backend: str = "inductor", device_rng: bool = False,
                 seed: int | None = None):
        super().__init__()
        if target not in ("eps", "x0", "xprev"):
            raise ValueError(f"target must be eps, x0 or xprev, got {target!r}")
        if reduction not in ("mse", "norm"):
            raise ValueError(f"reduction must be mse or norm, got {reduction!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if compile is not False and compile is not True and compile not in COMPILE_MODES:
            raise ValueError(f"compile must be a bool or one of {COMPILE_MODES}, got {compile!r}")
        self.unet = [unet.eval().requires_grad_(False)]
        self.lam, self.target, self.reduction = lam, target, reduction
        self.size = size or unet.cfg.image_size
        self.sched = DDPMSchedule(T)
        self.detach_restored, self.autocast, self.channels_last = detach_restored, autocast, channels_last
        self.path, self.lean, self.device_rng = path, lean, device_rng
        self.compile, self.compile_backend = compile, compile_backend
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        self.gen = torch.Generator()
        if seed is not None:
            self.gen.manual_seed(seed)
        self._seed = seed
        self._device_gens: dict[torch.device, torch.Generator] = {}
        self._compiled = None
        self._last: dict = {}
        for name, v in _schedule_tables(self.sched).items():  # not in state_dict: derived from T
            self.register_buffer(name, v, persistent=False)

    @property
    def last(self) -> dict[str, float]:
        """``{"L_nat", "L_sem"}`` of the latest ``'eps'`` call as floats (a host sync happens here, on read)."""
        return {k: float(v) for k, v in self._last.items()}

    # ------------------------------------------------------------------ helpers
    def _dist(self, a, b):
        if self.reduction == "mse":
            return F.mse_loss(a.float(), b.float())
        return (a.float() - b.float()).flatten(1).norm(dim=1).mean()

    def _prep(self, x):
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x * 2 - 1

    def _unet_on(self, device: torch.device) -> ADMUNet:
        unet = self.unet[0]
        if not self.lean:
            return unet.to(device)  # the previous behaviour: a walk over all parameters on every call
        if unet.time_embed[0].weight.device != device or self.sqrt_abar.device != device:
            unet.to(device)
            self.to(device)
        return unet

    def _rng(self, device: torch.device) -> tuple[torch.Generator, torch.device]:
        if not self.device_rng or device.type == "cpu":
            return self.gen, torch.device("cpu")
        if device not in self._device_gens:
            g = torch.Generator(device=device)
            g.manual_seed(self.gen.initial_seed() if self._seed is None else self._seed)
            self._device_gens[device] = g
        return self._device_gens[device], device

    def _draw(self, x0: torch.Tensor, t, eps):
        g, where = self._rng(x0.device)
        if t is None:
            t = torch.randint(0, self.sched.T, (x0.shape[0],), generator=g, device=where)
        if eps is None:
            eps = torch.randn(x0.shape, generator=g, device=where)
        return t.to(x0.device), eps.to(x0.device, x0.dtype)

    def _coef(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[t].view(-1, 1, 1, 1)

    def _q_sample(self, x0, t, eps):
        if not self.lean:
            return self.sched.q_sample(x0, t, eps)
        return self._coef("sqrt_abar", t) * x0 + self._coef("sqrt_1m_abar", t) * eps           # Eq. (7)

    def _pred_x0(self, xt, t, e):
        if not self.lean:
            return self.sched.pred_x0(xt, t, e)
        return self._coef("sqrt_recip_abar", t) * xt - self._coef("sqrt_recipm1_abar", t) * e   # Eqs. (9)-(10)

    def _posterior_mean(self, x0, xt, t):
        if not self.lean:
            return self.sched.posterior_mean(x0, xt, t)
        return self._coef("post_c0", t) * x0 + self._coef("post_ct", t) * xt                    # Eq. (3)

    def _emb(self, unet: ADMUNet, t: torch.Tensor) -> TimeEmbeddings | None:
        if not self.lean or self.compile:  # a compiled graph computes (and fuses) its own embeddings
            return None
        with torch.no_grad():
            return unet.time_embeddings(t)

    def _predict(self, xt, zt, t):
        """(ε̂_clr, h_clr, ε̂_rst, h_rst): the UNet on the noised target and output, as ``path`` says."""
        unet = self.unet[0]
        amp = torch.autocast(xt.device.type, torch.bfloat16) if self.autocast else contextlib.nullcontext()
        grad = torch.no_grad() if self.detach_restored else torch.enable_grad()
        if self.path == "batched":
            with amp:
                tt = torch.cat([t, t])
                emb = self._emb(unet, tt)
                with grad:
                    e, h = unet(torch.cat([zt, xt]), tt, return_h=True, emb=emb)
            (e_rst, e_clr), (h_rst, h_clr) = e.chunk(2), h.chunk(2)
            return e_clr.detach(), h_clr.detach(), e_rst, h_rst
        with amp:
            emb = self._emb(unet, t)
            if self.path == "release":  # the public code's order, one grad mode for both calls
                with grad:
                    e_rst, h_rst = unet(zt, t, return_h=True, emb=emb)
                    e_clr, h_clr = unet(xt, t, return_h=True, emb=emb)
                return e_clr, h_clr, e_rst, h_rst
            with torch.no_grad():
                e_clr, h_clr = unet(xt, t, return_h=True, emb=emb)
            with grad:
                e_rst, h_rst = unet(zt, t, return_h=True, emb=emb)
        return e_clr, h_clr, e_rst, h_rst

    def _core(self, x0, z0, t, eps):
        xt, zt = self._q_sample(x0, t, eps), self._q_sample(z0, t, eps)   # same t, same noise
        if self.channels_last:
            xt, zt = xt.contiguous(memory_format=torch.channels_last), zt.contiguous(memory_format=torch.channels_last)
        e_clr, h_clr, e_rst, h_rst = self._predict(xt, zt, t)
        e_clr, e_rst = e_clr[:, :3].float(), e_rst[:, :3].float()
        if self.target == "eps":
            nat = self._dist(e_rst, e_clr)                                           # Eq. (11)
            sem = self._dist(h_rst, h_clr)                                           # Eq. (14)
            return nat + self.lam * sem, nat, sem                                    # Eq. (15)
        xh, zh = self._pred_x0(xt, t, e_clr), self._pred_x0(zt, t, e_rst)
        if self.target == "x0":
            return self._dist(zh, xh), None, None
        return self._dist(self._posterior_mean(zh, zt, t), self._posterior_mean(xh, xt, t)), None, None

    def _cudagraphs(self, device: torch.device) -> bool:
        return device.type == "cuda" and self.compile in ("reduce-overhead", "max-autotune")

    def _compiled_core(self):
        if self._compiled is None:
            mode = None if self.compile is True or self.compile == "default" else self.compile
            self._compiled = torch.compile(self._core, mode=mode, backend=self.compile_backend, dynamic=False)
        return self._compiled

    def forward(self, out: torch.Tensor, batch: dict, model=None, t: torch.Tensor | None = None,
                eps: torch.Tensor | None = None) -> torch.Tensor:
        self._unet_on(out.device)
        x0, z0 = self._prep(batch["gt"]), self._prep(out)
        t, eps = self._draw(x0, t, eps)
        if self.compile:
            if self._cudagraphs(out.device):
                torch.compiler.cudagraph_mark_step_begin()
            try:
                loss, nat, sem = self._compiled_core()(x0, z0, t, eps)
            except Exception as e:  # the compiler's own errors are long; say which option caused them
                if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                raise RuntimeError(f"DiffLoss(compile={self.compile!r}, compile_backend={self.compile_backend!r}) "
                                   f"could not compile: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                                   "use compile=False") from e
        else:
            loss, nat, sem = self._core(x0, z0, t, eps)
        if nat is not None:
            last = {"L_nat": nat.detach(), "L_sem": sem.detach()}
            if self._cudagraphs(out.device):
                last = {k: v.clone() for k, v in last.items()}  # graph outputs are overwritten by the next replay
            self._last = last if self.lean else {k: float(v) for k, v in last.items()}
        return loss


def _schedule_tables(sched: DDPMSchedule) -> dict[str, torch.Tensor]:
    """float32 per-timestep coefficients of Eqs. (3), (7)-(10), computed in float64."""
    a, b = sched.abar, sched.betas
    a_prev = torch.cat([torch.ones(1, dtype=a.dtype), a[:-1]])
    tables = {"sqrt_abar": a.sqrt(), "sqrt_1m_abar": (1 - a).sqrt(), "sqrt_recip_abar": a.rsqrt(),
              "sqrt_recipm1_abar": (1 / a - 1).sqrt(), "post_c0": b * a_prev.sqrt() / (1 - a),
              "post_ct": (1 - a_prev) * (1 - b).sqrt() / (1 - a)}
    return {k: v.float() for k, v in tables.items()}


# ------------------------------------------------------------------------------------ h-space SVD study
MODES = ("multiplicative", "additive")
DEFAULT_LEVELS = {"multiplicative": (0.5, 1.0, 2.0, 4.0), "additive": (0.25, 0.5, 1.0, 2.0)}
"""Levels ①-④ per mode. Multiplicative s: σ1 -> (1+s)·σ1. Additive α: ‖Δh‖/‖h‖ = α (σ1 -> σ1 + α‖h‖_F), so
α=1 adds as much energy along u1v1ᵀ as h has in total; the two ranges give perturbations of similar size for
a typical ADM h whose σ1 carries a third to a half of ‖h‖_F."""
STUDY_GROUPS = ("clean", "degraded", "restored w/o DiffLoss", "restored w/ DiffLoss")
_GROUP_STYLE = {"clean": ("tab:blue", "o"), "degraded": ("tab:gray", "s"),
                "restored w/o DiffLoss": ("tab:orange", "^"), "restored w/ DiffLoss": ("tab:green", "D")}
_MODE_TEXT = {"multiplicative": ("s", "σ₁ → (1+s)·σ₁"), "additive": ("α", "Δh = α‖h‖·u₁v₁ᵀ, so ‖Δh‖/‖h‖ = α")}
Y_LABEL = "ResNet-50 feature L2 distance to the unperturbed regeneration"


def svd_perturb_hook(strength: float, k: int = 1, mode: str = "multiplicative", record: list | None = None):
    """A middle-block hook perturbing the top-``k`` singular components of each sample's h, laid out as a
    C x HW matrix (channels x spatial positions). Only the singular values change, never the directions:

    * ``"multiplicative"``: σ_i -> (1 + strength)·σ_i for i <= k, i.e. Δh = strength·Σ σ_i u_i v_iᵀ. The
      relative size ‖Δh‖/‖h‖ = strength·sqrt(Σ σ_i²)/‖h‖_F then depends on how much of h's energy its top
      component carries, which differs between images (and between clean and degraded inputs).
    * ``"additive"``: Δh = strength·‖h‖_F·Σ u_i v_iᵀ/sqrt(k), so ‖Δh‖/‖h‖ = strength for every image: every
      group receives a perturbation of the same relative size (for k=1: σ1 -> σ1 + strength·‖h‖_F).

    ``strength=0`` leaves h unchanged. ``record`` (a list) receives each call's per-sample ‖Δh‖/‖h‖."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def hook(h: torch.Tensor) -> torch.Tensor:
        if strength == 0:
            if record is not None:
                record.append(torch.zeros(h.shape[0]))
            return h
        b, c = h.shape[:2]
        m = h.float().reshape(b, c, -1)
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        total = m.flatten(1).norm(dim=1).clamp_min(1e-12)
        if mode == "multiplicative":
            delta = strength * (u[:, :, :k] * s[:, None, :k]) @ vh[:, :k]
        else:
            delta = (strength * total / math.sqrt(k))[:, None, None] * (u[:, :, :k] @ vh[:, :k])
        if record is not None:
            record.append((delta.flatten(1).norm(dim=1) / total).cpu())
        return (m + delta).reshape(h.shape).to(h.dtype)

    return hook


@torch.no_grad()
def regenerate(unet: ADMUNet, x: torch.Tensor, t_start: int = 500, steps: int = 10, strength: float = 0.0,
               seed: int = 0, T: int = 1000, *, mode: str = "multiplicative", k: int = 1,
               noise: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """Noise ``x`` (in [0,1]) to ``t_start`` and regenerate it with deterministic DDIM (η=0) steps while the
    h-space perturbation (:func:`svd_perturb_hook`) is active at every step (Fig. 2a). ``noise`` (shape of
    ``x``) replaces the ``seed``-drawn noise. Runs on the UNet's device; returns images in [0,1] there."""
    if not 0 < t_start < T:
        raise ValueError(f"t_start must be in 1..{T - 1}, got {t_start}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dev = unet.time_embed[0].weight.device
    sched = DDPMSchedule(T)
    x0 = x.to(dev).float() * 2 - 1
    if noise is None:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, images {tuple(x0.shape)}")
    ts = torch.linspace(t_start, 0, steps + 1).round().long().tolist()
    b = x0.shape[0]
    xt = sched.q_sample(x0, torch.full((b,), ts[0], device=dev), noise.to(dev, x0.dtype))
    prev, unet.h_hook = unet.h_hook, svd_perturb_hook(strength, k, mode, record)
    try:
        for t, t_next in itertools.pairwise(ts):
            tt = torch.full((b,), t, device=dev)
            e = unet(xt, tt)[:, :3]
            x0h = sched.pred_x0(xt, tt, e).clamp(-1, 1)
            a_next = float(sched.abar[t_next]) if t_next > 0 else 1.0
            xt = math.sqrt(a_next) * x0h + math.sqrt(1 - a_next) * e
    finally:
        unet.h_hook = prev
    return ((xt + 1) / 2).clamp(0, 1)


class ResNetFeatures(nn.Module):
    """Global-average-pooled (2048-d) features of a torchvision ResNet for RGB images in [0, 1].

    Images are ImageNet-normalised first (``irlib.losses.imagenet_normalize``, torchvision's preprocessing
    mean/std), as every other torchvision network in irlib is fed. ``model=None`` builds ResNet-50 with
    ``weights`` (``"IMAGENET1K_V1"``, torchvision's classic ``pretrained=True`` weights, which the paper's
    "ResNet50 pre-trained on ImageNet" most plausibly means; ``None`` = random, for smoke runs). A given
    ``model`` is shared, not copied. Images are not resized or cropped: the whole regenerated image counts."""

    def __init__(self, model: nn.Module | None = None, weights: str | None = "IMAGENET1K_V1"):
        super().__init__()
        import torchvision

        if model is None:
            model = torchvision.models.resnet50(weights=weights)
        if not isinstance(model, torchvision.models.ResNet):
            raise TypeError(f"ResNetFeatures needs a torchvision ResNet, got {type(model).__name__}")
        self.body = nn.Sequential(*list(model.children())[:-1])  # everything up to and including avgpool

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        from .losses import imagenet_normalize

        return imagenet_normalize(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.preprocess(x)).flatten(1)


def _features(classifier) -> ResNetFeatures:
    if classifier is None:
        return ResNetFeatures()
    if isinstance(classifier, ResNetFeatures):
        return classifier
    return ResNetFeatures(classifier)


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size`` (keeps the aspect ratio)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)


def study_noise(n: int, size: int, seed: int) -> torch.Tensor:
    """The starting noise of image ``i`` (i < n), drawn from its own seed: the same for every group and level,
    and independent of batching, so each distance compares regenerations that differ only by the
    perturbation and each image is paired across groups."""
    return torch.stack([torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed * 100_003 + i))
                        for i in range(n)])


@torch.no_grad()
def study_groups(clean: torch.Tensor, task: str, without: nn.Module, with_diffloss: nn.Module, *, seed: int = 0,
                 pad_to: int = 16, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The four Fig. 2 groups for one degradation: ``clean`` images (N,3,H,W in [0,1]), their synthetic
    ``task`` degradation (``irlib.data.degrade``: ``"lowlight"``, ``"haze"``, ``"rain"``, ...; seeded, as
    :func:`irlib.classify.degrade_set`), and the degraded images restored by the restorer trained without and
    with DiffLoss for that degradation."""
    from .classify import degrade_set, restore

    lq = degrade_set(clean, task, seed)
    return {"clean": clean, "degraded": lq,
            "restored w/o DiffLoss": restore(without, lq, device=device, pad_to=pad_to),
            "restored w/ DiffLoss": restore(with_diffloss, lq, device=device, pad_to=pad_to)}


@torch.no_grad()
def hspace_study(unet: ADMUNet, groups: Mapping[str, torch.Tensor], levels: Sequence[float] | None = None, *,
                 mode: str = "multiplicative", t_start: int = 400, ddim_steps: int = 20, seed: int = 0,
                 classifier: nn.Module | None = None, k: int = 1, batch_size: int = 8, keep_images: int = 2,
                 degradation: str = "", T: int = 1000) -> tuple[pd.DataFrame, dict[str, dict[float, torch.Tensor]]]:
    """DiffLoss Fig. 2: how far ResNet-50 features of a DDIM regeneration move when h's top singular component
    is perturbed, per group and perturbation level.

    For every image of every group (``{name: (N,3,H,W) in [0,1]}``): resize (shorter side) and centre-crop to
    the UNet's size, noise to ``t_start`` with the image's own noise (:func:`study_noise`), regenerate with
    ``ddim_steps`` DDIM steps unperturbed (the reference) and at each level (perturbation active at every
    step), and record the L2 distance between the ResNet-50 features of each perturbed regeneration and of
    the reference. Returns ``(rows, images)``: one row per (group, level, image) with columns degradation,
    group, mode, level, level_index (1 for ①, ...), image, distance, rel_perturbation (‖Δh‖/‖h‖ averaged over
    the DDIM steps), t_start, ddim_steps; and ``images[group][level]``: the first ``keep_images``
    regenerations (level 0.0 is the unperturbed reference), on the CPU. One call covers one degradation
    (label it with ``degradation``); concatenate the rows of several calls.

    Choices the paper leaves open (it says only "add noise, perturb the principal component of the SVD of h
    during generation, measure ResNet-50 feature L2 distances"):

    * start timestep ``t_start=400`` of 1000 (ᾱ≈0.2): the unperturbed regeneration keeps the input's layout
      and colours, and the 20 DDIM steps (stride 20) leave the perturbation time to act; noise and DDIM steps
      are identical for the reference and the perturbed runs, so the distance is due to the perturbation.
    * SVD layout: h (the middle block's output, 1024 x 8 x 8 at 256 px) as a C x HW matrix per image; the
      top ``k=1`` singular component (the "principal component"); sign-invariant since only σ1 changes.
    * ``mode="multiplicative"`` (default, the literal reading: scale the principal singular value,
      σ1 -> (1+s)σ1) or ``"additive"`` (σ1 -> σ1 + α‖h‖_F: the same relative perturbation ‖Δh‖/‖h‖ = α
      for every image). Multiplicative perturbations are larger, relative to h, for images whose h is
      dominated by one component, so groups may receive different perturbation sizes; the additive mode
      removes that confound and ``rel_perturbation`` shows it for either mode.
    * ``classifier``: ``None`` builds ImageNet ResNet-50 (:class:`ResNetFeatures`), a torchvision ResNet is
      wrapped (ImageNet-normalised input, pooled 2048-d features: the paper's "output features"), and is moved
      to the UNet's device.

    Narrower than the paper: its images are ImageNet images with synthesized degradations of several types;
    here the caller's images and irlib's synthetic degradations (:func:`study_groups`), one UNet (ADM 256
    unconditional), and Fig. 2b is drawn as distance against level (:func:`plot_hspace_study`) rather than as
    the paper's histogram.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    levels = tuple(float(v) for v in (DEFAULT_LEVELS[mode] if levels is None else levels))
    if not levels or any(v < 0 for v in levels):
        raise ValueError(f"levels must be a non-empty sequence of non-negative strengths, got {levels}")
    if not groups:
        raise ValueError("groups is empty: pass {name: images}")
    feat = _features(classifier)
    dev = unet.time_embed[0].weight.device
    feat.to(dev).eval()
    size = unet.cfg.image_size
    rows, images = [], {}
    for name, x in groups.items():
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"group {name!r}: expected (N,3,H,W) images, got shape {tuple(x.shape)}")
        x = _fit(x.float().clamp(0, 1), size)
        noise = study_noise(len(x), size, seed)
        feats, rel, kept = {}, {}, {}
        for lv in (0.0, *(v for v in levels if v != 0.0)):
            f, r, keep = [], [], []
            for i in range(0, len(x), batch_size):
                rec: list = []
                y = regenerate(unet, x[i:i + batch_size], t_start, ddim_steps, lv, seed, T, mode=mode, k=k,
                               noise=noise[i:i + batch_size], record=rec)
                f.append(feat(y).float().cpu())
                r.append(torch.stack(rec).mean(0))
                if sum(len(c) for c in keep) < keep_images:
                    keep.append(y[:keep_images - sum(len(c) for c in keep)].cpu())
            feats[lv], rel[lv] = torch.cat(f), torch.cat(r)
            kept[lv] = torch.cat(keep) if keep else torch.empty(0, 3, size, size)
        for li, lv in enumerate(levels, start=1):
            dist = (feats[lv] - feats[0.0]).norm(dim=1)
            for i in range(len(x)):
                rows.append({"degradation": degradation, "group": name, "mode": mode, "level": lv, "level_index": li,
                             "image": i, "distance": float(dist[i]), "rel_perturbation": float(rel[lv][i]),
                             "t_start": t_start, "ddim_steps": ddim_steps})
        images[name] = kept
    return pd.DataFrame(rows), images


def hspace_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy summary rows of :func:`hspace_study` (the paper gives no numbers for Fig. 2): per degradation,
    group, mode and level the metrics ``feature_l2_mean``, ``feature_l2_std``, ``feature_l2_ci95`` (half-width
    of the t-interval of the mean) and ``rel_h_perturbation_mean``, with ``n_images``."""
    from scipy import stats

    out = []
    for (deg, grp, mode, lv), s in df.groupby(["degradation", "group", "mode", "level"], sort=False):
        n, d = len(s), s["distance"]
        sd = float(d.std(ddof=1)) if n > 1 else 0.0
        ci = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else 0.0
        for metric, v in (("feature_l2_mean", float(d.mean())), ("feature_l2_std", sd), ("feature_l2_ci95", ci),
                          ("rel_h_perturbation_mean", float(s["rel_perturbation"].mean()))):
            out.append({"degradation": deg, "group": grp, "level": lv, "mode": mode, "metric": metric, "value": v,
                        "n_images": n})
    return pd.DataFrame(out, columns=["degradation", "group", "level", "mode", "metric", "value", "n_images"])


def _circled(i: int) -> str:
    return chr(0x2460 + i - 1) if 1 <= i <= 20 else f"({i})"


def _one_mode(df: pd.DataFrame) -> str:
    modes = list(dict.fromkeys(df["mode"]))
    if len(modes) != 1:
        raise ValueError(f"one perturbation mode per figure, got {modes}: filter the rows by mode")
    return modes[0]


def plot_hspace_study(df: pd.DataFrame, *, error: str = "ci95", title: str | None = None):
    """Fig. 2b as distance against perturbation level: one line per group (mean over images, error bars =
    95% t-interval of the mean or ``error="std"``), one panel per degradation, one mode per figure. Lines of
    different groups are offset slightly along x so no error bar hides another; the legend sits below the
    panels. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    if error not in ("ci95", "std"):
        raise ValueError(f"error must be ci95 or std, got {error!r}")
    if df.empty:
        raise ValueError("no rows to plot")
    mode = _one_mode(df)
    summ = hspace_summary(df).pivot_table(index=["degradation", "group", "level"], columns="metric", values="value",
                                          sort=False)
    degs, groups = list(dict.fromkeys(df["degradation"])), list(dict.fromkeys(df["group"]))
    lv_index = df.drop_duplicates("level").set_index("level")["level_index"].sort_values()
    sym, text = _MODE_TEXT[mode]
    fig, axes = plt.subplots(1, len(degs), figsize=(4.4 * len(degs) + 0.6, 4.0), sharey=True, squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.3 / max(1, len(groups) - 1)
    for ax, deg in zip(axes[0], degs):
        for gi, grp in enumerate(groups):
            if (deg, grp) not in summ.index.droplevel("level"):
                continue
            s = summ.loc[(deg, grp)]
            color, marker = _GROUP_STYLE.get(grp, (cycle[gi % len(cycle)], "ov^sDP*X"[gi % 8]))
            x = lv_index.loc[s.index].to_numpy() + (gi - (len(groups) - 1) / 2) * width
            ax.errorbar(x, s["feature_l2_mean"], yerr=s["feature_l2_" + error], label=grp, color=color,
                        marker=marker, markersize=6, linewidth=1.8, capsize=4, zorder=3 + gi)
        ax.set_xticks(lv_index.to_numpy(), [f"{_circled(i)}\n{sym}={lv:g}" for lv, i in lv_index.items()])
        ax.set_xlabel(f"perturbation level ({text})")
        ax.set_title(deg or "all images")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel(Y_LABEL.replace(" to the", "\nto the"))
    handles, labels = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    bars = "95% CI of the mean" if error == "ci95" else "± 1 s.d."
    fig.suptitle(title or f"DiffLoss Fig. 2b: feature distance vs h-space perturbation ({mode}; bars: {bars})")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(4, len(labels)),
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    return fig


def plot_regeneration_strip(images_by_level: Mapping[str, Mapping[float, torch.Tensor]], *,
                            inputs: Mapping[str, torch.Tensor] | None = None, index: int = 0, mode: str | None = None,
                            title: str | None = None):
    """Fig. 2a: one row per group, the (optional) input and its regenerations at level 0 (unperturbed) and
    ①-④ for image ``index``. ``images_by_level`` is :func:`hspace_study`'s second output (tensors (N,3,H,W)
    or (3,H,W) in [0,1]); ``inputs`` maps the same group names to the input images. Returns the Figure."""
    import matplotlib.pyplot as plt

    groups = list(images_by_level)
    if not groups:
        raise ValueError("images_by_level is empty")
    levels = sorted({float(lv) for g in groups for lv in images_by_level[g]})
    ncols = len(levels) + (inputs is not None)
    fig, axes = plt.subplots(len(groups), ncols, figsize=(1.7 * ncols, 1.8 * len(groups) + 0.5), squeeze=False)
    sym = _MODE_TEXT[mode][0] if mode in _MODE_TEXT else "level"

    def show(ax, img, label):
        img = img if img.dim() == 3 else img[index] if len(img) > index else None
        if img is None:
            raise IndexError(f"image {index} not kept for {label}: pass keep_images > {index} to hspace_study")
        ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_xticks([])
        ax.set_yticks([])

    nonzero = [lv for lv in levels if lv != 0.0]
    for r, g in enumerate(groups):
        cols = ([("input", inputs[g])] if inputs is not None else []) + \
               [("unperturbed" if lv == 0.0 else f"{_circled(nonzero.index(lv) + 1)} {sym}={lv:g}",
                 images_by_level[g].get(lv)) for lv in levels]
        for c, (label, img) in enumerate(cols):
            ax = axes[r][c]
            if img is None:
                ax.axis("off")
                continue
            show(ax, img, f"{g} / {label}")
            if r == 0:
                ax.set_title(label, fontsize=9)
        axes[r][0].set_ylabel(g, fontsize=9)
    fig.suptitle(title or "DiffLoss Fig. 2a: regenerations with increasing h-space perturbation")
    fig.tight_layout()
    return fig


def hspace_caption(df: pd.DataFrame, error: str = "ci95") -> str:
    """One-sentence caption for :func:`plot_hspace_study` of these rows."""
    mode = _one_mode(df)
    n = df.groupby(["degradation", "group"]).image.nunique()
    degs = [d for d in dict.fromkeys(df["degradation"]) if d]
    return (f"L2 distance between ImageNet-normalised ResNet-50 features of DDIM regenerations with the top singular "
            f"component of the UNet's h-space perturbed ({mode}: {_MODE_TEXT[mode][1]}, levels ①–"
            f"{_circled(int(df.level_index.max()))}) and of the unperturbed regeneration from the same noise; "
            f"mean and {'95% t-interval' if error == 'ci95' else 'standard deviation'} over "
            f"{n.min()}{'' if n.min() == n.max() else f'–{n.max()}'} images per group; DDIM "
            f"{int(df.ddim_steps.iloc[0])} steps from t={int(df.t_start.iloc[0])}"
            + (f"; degradations: {', '.join(degs)}" if degs else "") + ".")


def strip_caption(mode: str, degradation: str = "") -> str:
    """One-sentence caption for :func:`plot_regeneration_strip`."""
    return (f"One image of each group{f' ({degradation})' if degradation else ''} regenerated by DDIM from the same "
            f"noise with the h-space top singular component perturbed at increasing levels ① to ④ ({mode}: "
            f"{_MODE_TEXT[mode][1]}); the first column after the input is the unperturbed regeneration.")


def save_hspace_figures(df: pd.DataFrame, out_dir, *, smoke: bool, strips: Mapping[str, Mapping] | None = None,
                        inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None, error: str = "ci95") -> list:
    """Save Fig. 2b (one file per mode in ``df``, part = mode) and Fig. 2a strips with
    :func:`irlib.figures.save_figure`; returns the PNG paths. ``strips`` maps a part label of the form
    ``"<degradation>, <mode>"`` (e.g. ``"lowlight, multiplicative"``) to :func:`hspace_study`'s images,
    ``inputs`` the same labels to ``{group: images}``."""
    import matplotlib.pyplot as plt

    from .figures import save_figure

    paths = []
    for mode in dict.fromkeys(df["mode"]):
        sub = df[df["mode"] == mode]
        fig = plot_hspace_study(sub, error=error)
        paths.append(save_figure(fig, out_dir, figure="Fig. 2b", paper="diffloss", part=mode, smoke=smoke,
                                 title=fig.get_suptitle(), caption=hspace_caption(sub, error)))
        plt.close(fig)
    for label, imgs in (strips or {}).items():
        deg, _, mode = label.rpartition(", ")
        if mode not in MODES:
            raise ValueError(f"strip label {label!r} must end with ', <mode>' (one of {MODES})")
        fig = plot_regeneration_strip(imgs, inputs=(inputs or {}).get(label), mode=mode)
        paths.append(save_figure(fig, out_dir, figure="Fig. 2a", paper="diffloss", part=label, smoke=smoke,
                                 title=fig.get_suptitle(), caption=strip_caption(mode, deg)))
        plt.close(fig)
    return paths
