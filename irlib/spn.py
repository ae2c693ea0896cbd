"""SPN — learning from history (model-contrastive negatives from EMA copies of the model in training).

Paper equations:
  (1) θ'_i = w θ'_i + (1 - w) θ, applied only when t % s_i == 0
  (3) L_neg^N = 1/N Σ_i ||f(out) - f(neg_i(lq))||_1, f = VGG embedding
  (4) L = L_rec - λ L_neg^N
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from .losses import VGGFeatures


class HistoryModels(nn.Module):
    """N frozen EMA "history" copies of ``model``, copy i updated every ``steps[i]`` steps with weight ``w``.

    The N copies share one skeleton module; their parameters are stacked along a leading dimension so
    ``batched=True`` evaluates all N negatives with one vectorised call (``torch.func.vmap`` over
    ``functional_call``) instead of N sequential forwards. Both paths agree to float round-off (exactly in
    float64). On the 2-core CPU we develop on the sequential loop measured faster (vmap turns convs into
    grouped convs), so ``batched=False`` is the default; ``python -m irlib.bench`` (and ``notebooks/benchmarks``) measure both.
    """

    def __init__(self, model: nn.Module, steps: Sequence[int] = (100, 500, 1000, 2000), w: float = 0.1,
                 batched: bool = False):
        super().__init__()
        if not steps:
            raise ValueError("need at least one history step")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"EMA weight w must lie in [0, 1], got {w}")
        self.steps, self.w, self.batched = tuple(int(s) for s in steps), float(w), batched
        self.skeleton = [copy.deepcopy(model).eval().requires_grad_(False)]  # list: not a registered submodule
        n = len(self.steps)
        for name, p in model.named_parameters():
            self.register_buffer("p_" + name.replace(".", "__"), p.detach().clone().unsqueeze(0).repeat(n, *[1] * p.dim()))
        for name, b in model.named_buffers():
            self.register_buffer("b_" + name.replace(".", "__"), b.detach().clone().unsqueeze(0).repeat(n, *[1] * b.dim()))

    def _stacked(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[2:].replace("__", "."): v for k, v in self._buffers.items() if k.startswith(prefix)}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """Apply Eq. (1) to every copy whose step divides ``step``."""
        due = [i for i, s in enumerate(self.steps) if step % s == 0]
        if not due:
            return
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        for name, stack in self._stacked("p_").items():
            for i in due:
                stack[i].lerp_(params[name].detach().to(stack.dtype), 1.0 - self.w)
        for name, stack in self._stacked("b_").items():
            for i in due:
                stack[i].copy_(buffers[name])

    @torch.no_grad()
    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """Outputs of all N history models for input ``x``: shape (N, *out.shape)."""
        net = self.skeleton[0].to(x.device)
        p, b = self._stacked("p_"), self._stacked("b_")
        if self.batched:
            def one(pp, bb):
                return functional_call(net, (pp, bb), (x,), kw)
            return vmap(one, randomness="same")(p, b)
        outs = []
        for i in range(len(self.steps)):
            outs.append(functional_call(net, ({k: v[i] for k, v in p.items()}, {k: v[i] for k, v in b.items()}), (x,), kw))
        return torch.stack(outs)


@dataclass(frozen=True)
class SPNConfig:
    """Hyper-parameters of SPN. ``PAPER`` follows the paper; ``PUBLIC_CODE`` the authors' released code.

    The paper only says "pretrained VGG"; our paper preset uses VGG19 relu1_1..relu5_1 with equal weights
    (our choice). The released code uses VGG16 relu1_2/relu2_2/relu3_3 weighted 0.2/0.3/0.5,
    λ = 1e-3 and steps (100, 200, 500, 1000) — exposed as ``PUBLIC_CODE``.
    """

    lam: float = 1e-4
    steps: tuple[int, ...] = (100, 500, 1000, 2000)
    w: float = 0.1
    arch: str = "vgg19"
    layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    layer_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)


PAPER = SPNConfig()
PUBLIC_CODE = SPNConfig(lam=1e-3, steps=(100, 200, 500, 1000), arch="vgg16",
                        layers=("relu1_2", "relu2_2", "relu3_3"), layer_weights=(0.2, 0.3, 0.5))


class SPNLoss(nn.Module):
    """The negative term L_neg^N of Eq. (3), plus the history bookkeeping.

    Use it as a trainer term with weight ``-cfg.lam`` (see :func:`spn_terms`). ``negative="history"`` is
    SPN; ``"random"``/``"pretrained"`` freeze the copies (Table 6's alternative negative models).
    """

    def __init__(self, model: nn.Module, cfg: SPNConfig = PAPER, embed: nn.Module | None = None,
                 pretrained: bool = True, batched: bool = False, negative: str = "history",
                 frozen_negative: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = embed or VGGFeatures(cfg.arch, cfg.layers, pretrained=pretrained)
        src = frozen_negative if negative != "history" and frozen_negative is not None else model
        self.history = HistoryModels(src, cfg.steps, cfg.w, batched=batched)
        self.negative = negative

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.negative == "history":
            self.history.after_step(model, step)

    def negatives(self, lq: torch.Tensor) -> torch.Tensor:
        return self.history(lq)

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        negs = self.negatives(batch["lq"])  # (N, B, C, H, W), no grad
        n = negs.shape[0]
        f_out = self.embed(out)
        with torch.no_grad():
            f_neg = self.embed(negs.flatten(0, 1).to(out.dtype))
        total = out.new_zeros(())
        for wl, fo, fn in zip(self.cfg.layer_weights, f_out, f_neg):
            fn = fn.view(n, *fo.shape)
            total = total + wl * (fo.unsqueeze(0) - fn).abs().mean()
        return total  # = 1/N sum_i ||f(out) - f(neg_i)||_1 (mean over i folded into the element mean)

    def state_dict(self, *a, **kw):  # only the history copies need saving
        return self.history.state_dict(*a, **kw)

    def load_state_dict(self, sd, strict: bool = True):
        return self.history.load_state_dict(sd, strict)


def spn_terms(model: nn.Module, cfg: SPNConfig = PAPER, rec: str = "l1", **kw) -> dict:
    """Trainer ``loss_terms`` for L = L_rec - λ L_neg^N."""
    from .losses import LOSSES

    return {rec: (1.0, LOSSES[rec]), "spn_neg": (-cfg.lam, SPNLoss(model, cfg, **kw))}
