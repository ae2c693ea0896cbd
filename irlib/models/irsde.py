"""IR-SDE (Luo et al., ICML 2023) as DA-CLIP's universal restorer (Luo et al., ICLR 2024): the conditional noise
U-Net and the mean-reverting SDE it is trained and sampled with. DINO-IR compares against DA-CLIP trained in
DINO-IR's own setting; this module is the restoration half, :mod:`irlib.models.daclip` the controller.

Module and parameter names follow the release (Algolzw/daclip-uir,
``universal-image-restoration/config/daclip-sde/models/modules/DenoisingUNet_arch.py``): ``init_conv``,
``time_mlp``, ``prompt``/``text_mlp``/``prompt_mlp`` (degradation context), ``downs``/``ups`` (each a list of two
time-conditioned residual blocks, a pre-normed attention and a resampler), ``mid_block1``/``mid_attn``/
``mid_block2``, ``final_res_block``, ``final_conv``. A released ``universal-ir.pth`` loads with ``strict=True``;
``tests/test_release_daclip.py`` checks keys, shapes and outputs against facts taken from the release.

Behaviour kept from the release (it matters for loading and reproducing it):

* the network sees ``cat(xt - cond, cond)`` and predicts the noise; the input is reflect-padded to a multiple of
  ``2**depth`` and cropped back;
* with ``use_image_context`` only the deepest level (index 3) and the middle use cross-attention
  (:class:`SpatialTransformer`) on the image context; the other levels use linear attention; every attention
  sits inside ``x + f(LayerNorm(x))`` even when ``f`` has its own residual;
* the degradation context enters the time embedding: ``t + prompt_mlp(softmax(text_mlp(c), dim=1) * prompt)``.

:class:`IRSDE` holds the schedule (``thetas``, ``sigmas``, ``thetas_cumsum``, ``sigma_bars``, ``dt``) and the
one-step maths (forward marginal, score from noise, reverse SDE/ODE steps, the optimum reverse step the
training loss matches, and the posterior step the release samples with).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_CHANNELS = 32  # the release's num_head_channels for cross-attention


class SinusoidalTimeEmbedding(nn.Module):
    """``[sin(t w), cos(t w)]`` with ``w_k = exp(-k log(10000) / (dim/2 - 1))``, ``k < dim/2``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        step = math.log(10000) / (half - 1)
        w = torch.exp(torch.arange(half, device=t.device) * -step)
        a = t[:, None] * w[None, :]
        return torch.cat((a.sin(), a.cos()), dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of an NCHW map, gain ``g`` only; eps 1e-5 in float32 (1e-3 otherwise)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


def conv(dim_in: int, dim_out: int, k: int = 3, bias: bool = False) -> nn.Conv2d:
    """'Same'-padded convolution, no bias by default (the release's ``default_conv``)."""
    return nn.Conv2d(dim_in, dim_out, k, padding=k // 2, bias=bias)


class ConvAct(nn.Module):
    """Conv (``proj``), optional FiLM ``x (1 + scale) + shift``, SiLU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = conv(dim_in, dim_out)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            x = x * (scale_shift[0] + 1) + scale_shift[1]
        return F.silu(x)


class TimeResBlock(nn.Module):
    """Two :class:`ConvAct` (the first FiLM-modulated by the time embedding through ``mlp``), 1x1 skip."""

    def __init__(self, dim_in: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = ConvAct(dim_in, dim_out)
        self.block2 = ConvAct(dim_out, dim_out)
        self.res_conv = conv(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        ss = None
        if t is not None:
            ss = tuple(self.mlp(t)[:, :, None, None].chunk(2, dim=1))
        return self.block2(self.block1(x, ss)) + self.res_conv(x)


class LinearAttention(nn.Module):
    """Linear attention over positions (4 heads of 32): softmax(q) over channels, softmax(k) over positions,
    output conv + :class:`ChannelLayerNorm`. The context argument is ignored."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (z.reshape(b, self.heads, -1, h * w) for z in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        kv = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", kv, q)
        return self.to_out(out.reshape(b, -1, h, w))


class CrossAttention(nn.Module):
    """Multi-head attention of tokens ``x`` on ``context`` (on ``x`` itself when no context is given)."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, z.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """``a * gelu(g)`` with ``(a, g)`` the two halves of ``proj(x)``."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(g)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x wide (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention on the context, GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads=heads, dim_head=dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=heads, dim_head=dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context=context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm(32), 1x1 in, transformer blocks over the ``h*w`` tokens, zero-initialised 1x1 out, residual."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, context_dim=context_dim) for _ in range(depth)])
        self.proj_out = nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        z = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for blk in self.transformer_blocks:
            z = blk(z, context=context)
        return self.proj_out(z.transpose(1, 2).reshape(b, -1, h, w)) + x


class PreNorm(nn.Module):
    """``fn(ChannelLayerNorm(x), context)``."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn, self.norm = fn, ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(self.norm(x), context=context)


class Residual(nn.Module):
    """``x + fn(x, context)``."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, context=context) + x


def _up(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim_in, dim_out, 3, 1, 1))


class ConditionalUNet(nn.Module):
    """IR-SDE's noise network conditioned on the low-quality image, DA-CLIP's degradation embedding
    (``text_context``, ``context_dim`` wide) and image embedding (``image_context``).

    Defaults are the release's universal model (``options/train.yml``: nf 64, ch_mult 1,2,4,8, context 512,
    both contexts; 48.98M parameters). ``context_dim=None`` drops the context branches (plain IR-SDE)."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 4, 8),
                 context_dim: int | None = 512, use_degra_context: bool = True, use_image_context: bool = True):
        super().__init__()
        self.depth = len(ch_mult)
        self.context_dim = -1 if context_dim is None else int(context_dim)
        self.use_degra_context, self.use_image_context = use_degra_context, use_image_context
        cross = use_image_context and self.context_dim > 0
        for c in [nf * m for m in (1, *ch_mult)]:
            if c < HEAD_CHANNELS:
                raise ValueError(f"ConditionalUNet needs every level >= {HEAD_CHANNELS} channels, got {c}")
        time_dim = nf * 4
        self.init_conv = conv(in_nc * 2, nf, 7)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        if self.context_dim > 0 and use_degra_context:
            self.prompt = nn.Parameter(torch.rand(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(self.context_dim, time_dim), nn.SiLU(),
                                          nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)

        def attention(dim: int, level: int) -> Residual:
            if cross and level >= 3:
                f: nn.Module = SpatialTransformer(dim, dim // HEAD_CHANNELS, HEAD_CHANNELS, 1, self.context_dim)
            else:
                f = LinearAttention(dim)
            return Residual(PreNorm(dim, f))

        mult = (1, *ch_mult)
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in range(self.depth):
            d_in, d_out = nf * mult[i], nf * mult[i + 1]
            self.downs.append(nn.ModuleList([
                TimeResBlock(d_in, d_in, time_dim), TimeResBlock(d_in, d_in, time_dim), attention(d_in, i),
                nn.Conv2d(d_in, d_out, 4, 2, 1) if i != self.depth - 1 else conv(d_in, d_out)]))
            self.ups.insert(0, nn.ModuleList([
                TimeResBlock(d_out + d_in, d_out, time_dim), TimeResBlock(d_out + d_in, d_out, time_dim),
                attention(d_out, i), _up(d_out, d_in) if i != 0 else conv(d_out, d_in)]))
        mid = nf * mult[-1]
        self.mid_block1 = TimeResBlock(mid, mid, time_dim)
        self.mid_attn = attention(mid, self.depth)
        self.mid_block2 = TimeResBlock(mid, mid, time_dim)
        self.final_res_block = TimeResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, out_nc, 3, 1, 1)

    @classmethod
    def tiny(cls, **kw) -> "ConditionalUNet":
        """A CPU smoke size on the same code path (cross-attention at the deepest level included)."""
        return cls(**{**dict(nf=32, ch_mult=(1, 1, 2, 2), context_dim=24), **kw})

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad H and W (bottom/right) to a multiple of ``2**depth``."""
        s = 2 ** self.depth
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="reflect")

    def forward(self, xt: torch.Tensor, cond: torch.Tensor, time: torch.Tensor | float,
                text_context: torch.Tensor | None = None, image_context: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise of state ``xt`` at step ``time`` (a number or one per sample), given the LQ image."""
        if not torch.is_tensor(time):
            time = torch.tensor([time], device=xt.device)
        time = time.reshape(-1)
        h0, w0 = xt.shape[-2:]
        x = self.init_conv(self.pad(torch.cat([xt - cond, cond], dim=1)))
        x_first = x
        t = self.time_mlp(time)
        ctx = None
        if self.context_dim > 0:
            if self.use_degra_context and text_context is not None:
                p = torch.softmax(self.text_mlp(text_context), dim=1) * self.prompt
                t = t + self.prompt_mlp(p)
            if self.use_image_context and image_context is not None:
                ctx = image_context.unsqueeze(1)
        skips = []
        for b1, b2, attn, down in self.downs:
            x = b1(x, t)
            skips.append(x)
            x = attn(b2(x, t), context=ctx)
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t), context=ctx), t)
        for b1, b2, attn, up in self.ups:
            x = b1(torch.cat([x, skips.pop()], dim=1), t)
            x = b2(torch.cat([x, skips.pop()], dim=1), t)
            x = up(attn(x, context=ctx))
        x = self.final_conv(self.final_res_block(torch.cat([x, x_first], dim=1), t))
        return x[..., :h0, :w0].contiguous()


# ------------------------------------------------------------------------------------------------ the SDE
def theta_schedule(name: str, T: int) -> torch.Tensor:
    """The release's ``T + 1`` thetas (index 0 unused by the steps): ``cosine`` (1 - alpha-bar of the improved
    DDPM cosine over ``T + 2`` steps, s = 0.008, truncated at both ends), ``linear`` (DDPM betas rescaled by
    ``1000 / (T + 1)``) or ``constant`` (ones)."""
    n = T + 1
    if name == "cosine":
        steps = T + 2
        s = 0.008
        x = torch.linspace(0, steps, steps + 1, dtype=torch.float32)
        a = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
        a = a / a[0]
        return 1 - a[1:-1]
    if name == "linear":
        scale = 1000 / n
        return torch.linspace(scale * 0.0001, scale * 0.02, n, dtype=torch.float32)
    if name == "constant":
        return torch.ones(n, dtype=torch.float32)
    raise ValueError(f"unknown theta schedule {name!r}: cosine, linear or constant")


class IRSDE:
    """Mean-reverting SDE ``dx = theta_t (mu - x) dt + sigma_t dw`` with ``sigma_t^2 / theta_t = 2 max_sigma^2``.

    ``max_sigma`` >= 1 is in 8-bit units (divided by 255). ``dt`` is chosen so that
    ``exp(-thetas_cumsum[T] dt) = eps``; ``thetas_cumsum`` starts at 0 (``cumsum - thetas[0]``). ``t`` may be
    an int or a long tensor (e.g. shape (B, 1, 1, 1) for per-sample steps). Noise for stochastic steps can be
    passed in (``z``) so that a step is a pure function of its inputs."""

    def __init__(self, max_sigma: float = 50, T: int = 100, schedule: str = "cosine", eps: float = 0.005,
                 device: torch.device | str | None = None):
        self.T = int(T)
        self.max_sigma = max_sigma / 255 if max_sigma >= 1 else max_sigma
        th = theta_schedule(schedule, self.T)
        self.thetas = th.to(device)
        self.sigmas = torch.sqrt(self.max_sigma ** 2 * 2 * th).to(device)
        cs = torch.cumsum(th, dim=0) - th[0]
        self.dt = (-1 / cs[-1] * math.log(eps)).to(device)
        self.thetas_cumsum = cs.to(device)
        self.sigma_bars = torch.sqrt(self.max_sigma ** 2 * (1 - torch.exp(-2 * cs.to(device) * self.dt)))
        self.mu: torch.Tensor | float = 0.0

    def set_mu(self, mu: torch.Tensor | float) -> None:
        """The mean the process reverts to (the low-quality image)."""
        self.mu = mu

    # marginals ---------------------------------------------------------------------------------------------
    def mu_bar(self, x0: torch.Tensor, t) -> torch.Tensor:
        """Mean of ``x_t`` given ``x_0``."""
        return self.mu + (x0 - self.mu) * torch.exp(-self.thetas_cumsum[t] * self.dt)

    def sigma_bar(self, t) -> torch.Tensor:
        """Standard deviation of ``x_t`` given ``x_0``."""
        return self.sigma_bars[t]

    def noisy_state(self, x0: torch.Tensor, t, z: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of ``x_t`` given ``x_0`` (training states; ``t`` shaped to broadcast, e.g. (B, 1, 1, 1))."""
        m = self.mu_bar(x0, t)
        z = torch.randn_like(m) if z is None else z
        return (z * self.sigma_bar(t) + m).to(torch.float32)

    def random_steps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training steps, uniform on 1..T, shaped (B, 1, 1, 1)."""
        return torch.randint(1, self.T + 1, (batch, 1, 1, 1), generator=generator).long()

    def noise_state(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's start ``x_T``: the LQ image plus ``max_sigma`` Gaussian noise."""
        return x + (torch.randn_like(x) if z is None else z) * self.max_sigma

    # scores and steps --------------------------------------------------------------------------------------
    def score_from_noise(self, noise: torch.Tensor, t) -> torch.Tensor:
        return -noise / self.sigma_bar(t)

    def noise_from_states(self, xt: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """The noise that takes ``x_0`` to ``x_t``."""
        return (xt - self.mu_bar(x0, t)) / self.sigma_bar(t)

    def x0_from_noise(self, xt: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``x_0`` implied by ``x_t`` and a noise prediction."""
        return (xt - self.mu - self.sigma_bar(t) * noise) * torch.exp(self.thetas_cumsum[t] * self.dt) + self.mu

    def reverse_sde_step_mean(self, x: torch.Tensor, score: torch.Tensor, t) -> torch.Tensor:
        return x - (self.thetas[t] * (self.mu - x) - self.sigmas[t] ** 2 * score) * self.dt

    def reverse_sde_step(self, x: torch.Tensor, score: torch.Tensor, t, z: torch.Tensor | None = None) -> torch.Tensor:
        z = torch.randn_like(x) if z is None else z
        return self.reverse_sde_step_mean(x, score, t) - self.sigmas[t] * (z * math.sqrt(float(self.dt)))

    def reverse_ode_step(self, x: torch.Tensor, score: torch.Tensor, t) -> torch.Tensor:
        return x - (self.thetas[t] * (self.mu - x) - 0.5 * self.sigmas[t] ** 2 * score) * self.dt

    def reverse_optimum_step(self, xt: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """Mean of ``x_{t-1}`` given ``x_t`` and ``x_0`` (the target of the training loss)."""
        a = torch.exp(-self.thetas[t] * self.dt)
        b = torch.exp(-self.thetas_cumsum[t] * self.dt)
        c = torch.exp(-self.thetas_cumsum[t - 1] * self.dt)
        k1 = a * (1 - c ** 2) / (1 - b ** 2)
        k2 = c * (1 - a ** 2) / (1 - b ** 2)
        return k1 * (xt - self.mu) + k2 * (x0 - self.mu) + self.mu

    def reverse_optimum_std(self, t) -> torch.Tensor:
        """Standard deviation of ``x_{t-1}`` given ``x_t`` and ``x_0`` (variance clamped at ``1e-20 dt``)."""
        a = torch.exp(-2 * self.thetas[t] * self.dt)
        b = torch.exp(-2 * self.thetas_cumsum[t] * self.dt)
        c = torch.exp(-2 * self.thetas_cumsum[t - 1] * self.dt)
        var = (1 - a) * (1 - c) / (1 - b)
        return (0.5 * torch.log(torch.clamp(var, min=1e-20 * self.dt))).exp() * self.max_sigma

    def reverse_posterior_step(self, xt: torch.Tensor, noise: torch.Tensor, t,
                               z: torch.Tensor | None = None) -> torch.Tensor:
        """The release's default sampler step (``sampling_mode: posterior``)."""
        mean = self.reverse_optimum_step(xt, self.x0_from_noise(xt, noise, t), t)
        z = torch.randn_like(xt) if z is None else z
        return mean + self.reverse_optimum_std(t) * z

    def training_loss(self, noise: torch.Tensor, xt: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """The release's objective: L1 between the reverse-SDE mean from the predicted noise and the optimum
        reverse step (mean over pixels per sample, then over the batch)."""
        pred = self.reverse_sde_step_mean(xt, self.score_from_noise(noise, t), t)
        return F.l1_loss(pred, self.reverse_optimum_step(xt, x0, t), reduction="none").flatten(1).mean(1).mean()

    @torch.no_grad()
    def sample(self, model: nn.Module, lq: torch.Tensor, mode: str = "posterior", generator_seed: int | None = None,
               **context) -> torch.Tensor:
        """Restore ``lq``: start at :meth:`noise_state` and take ``T`` reverse steps (``posterior`` or ``sde``)
        with ``model(x, lq, t, **context)`` predicting the noise."""
        if mode not in ("posterior", "sde"):
            raise ValueError(f"mode must be 'posterior' or 'sde', got {mode!r}")
        g = torch.Generator(device=lq.device).manual_seed(generator_seed) if generator_seed is not None else None

        def z() -> torch.Tensor:
            return torch.randn(lq.shape, generator=g, device=lq.device, dtype=lq.dtype)

        self.set_mu(lq)
        x = self.noise_state(lq, z())
        for t in range(self.T, 0, -1):
            noise = model(x, lq, t, **context)
            if mode == "posterior":
                x = self.reverse_posterior_step(x, noise, t, z())
            else:
                x = self.reverse_sde_step(x, self.score_from_noise(noise, t), t, z())
        return x
