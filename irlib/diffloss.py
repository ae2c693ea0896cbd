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
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.adm import (ADM_256_UNCOND, ADM_256_UNCOND_SHA256, ADM_256_UNCOND_URL, ADM_TINY, ADMConfig,  # noqa: F401
                         ADMUNet, TimeEmbeddings, load_adm, timestep_embedding)


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
    ``reduction='mse'`` uses the mean squared difference for the "‖·‖₂" terms (the public code's ``mean_flat``
    of squares); ``'norm'`` uses the Euclidean norm per sample, averaged over the batch. Images in [0,1] are
    mapped to [-1,1] and resized to ``size`` (the UNet's training resolution). The public code weights the terms
    1e-3 (noise) and 1e-6 (h-space) in its total, i.e. γ=0.001 and λ=0.001 instead of the paper's λ=0.01; pass
    ``lam=0.001`` for the release's weighting. Its pixel term is the MSE on [-1, 1] images, four times the MSE
    on [0, 1] (``irlib.losses.mse``): γ balances DiffLoss against that scale, so a run with the [0, 1] ``mse``
    weighs the diffusion terms 4x more than the release at the same γ. ``irlib.losses.mse_pm1`` is the
    release's pixel term (the DiffLoss plan's ``rec``).

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
