"""SPN — learning from history (model-contrastive negatives from EMA copies of the model in training).

Paper equations:
  (1) θ'_i = w θ'_i + (1 - w) θ, applied only when t % s_i == 0
  (3) L_neg^N = 1/N Σ_i ||f(out) - f(neg_i(lq))||_1, f = VGG embedding
  (4) L = L_rec - λ L_neg^N

Cost: :class:`SPNFast` holds the options that make the SPN step cheaper (batched negatives, bf16, channels-last,
``torch.compile``, one embedding call); all off is the fp32 eager reference they are tested against.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from .losses import VGGFeatures

INITS = ("paper", "release")


def fresh_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` re-initialised by every submodule's ``reset_parameters`` (PyTorch's default init),
    drawn from its own generator seeded with ``seed`` (the global RNG stream is left as it was). Parameters
    that no submodule resets (e.g. a bare ``nn.Parameter`` of a custom block) keep their values, and a
    constructor's custom init (e.g. truncated normal) is not reproduced: pass ``fresh=`` to :class:`HistoryModels`
    for the exact constructor init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = copy.deepcopy(model)
        with torch.no_grad():
            for mod in m.modules():
                if hasattr(mod, "reset_parameters") and callable(mod.reset_parameters):
                    mod.reset_parameters()
    return m


def history_seed(seed: int, i: int) -> int:
    """The seed of history copy ``i`` of a run seeded ``seed`` (63-bit hash: independent of the run's own draws)."""
    return int.from_bytes(hashlib.sha256(f"spn-history:{int(seed)}:{int(i)}".encode()).digest()[:8], "little") >> 1


class HistoryModels(nn.Module):
    """N frozen EMA "history" copies of ``model``, copy i updated every ``steps[i]`` steps with weight ``w``.

    Initialisation (``init``) — the paper gives none explicitly; it defines a negative as a "latency model",
    an earlier state of the target model, which the default ``"paper"`` realises by starting every copy at θ
    (the model's parameters and buffers at construction). ``"release"`` is what the released code (MCLIR,
    ``SRNegModel_Multi``) does: each copy is a freshly constructed network whose parameters are then blended
    once, ``init_mix * fresh + (1 - init_mix) * θ`` (its configs' ``neg_start: 0.1``), its buffers left at the
    fresh network's. ``fresh`` builds such a network (e.g. ``lambda: EDSR(4)``, or the zoo's constructor, so
    SwinIR's/IDT's truncated-normal Linear weights and position-bias tables are drawn as their constructors draw
    them); without it :func:`fresh_init` re-initialises a copy of ``model``. Copy i draws from its own seed
    :func:`history_seed` ``(seed, i)``, a hash, so no copy repeats the draw that made θ when the pipeline seeded
    the model with ``seed`` (MCLIR's copies are independent networks).

    ``update_buffers``: Eq. (1) is stated for the parameters θ; ``True`` (irlib's default) also copies the
    model's buffers (e.g. BatchNorm statistics) into a copy when it is due, ``False`` leaves buffers untouched,
    as the release does (it blends ``named_parameters`` only).

    The N copies share one skeleton module; their parameters are stacked along a leading dimension so
    ``batched=True`` evaluates all N negatives with one vectorised call (``torch.func.vmap`` over
    ``functional_call``) instead of N sequential forwards. Both paths agree to float round-off (exactly in
    float64). ``amp`` (a dtype) runs the copies under autocast; :meth:`compile` compiles the per-copy call.
    """

    def __init__(self, model: nn.Module, steps: Sequence[int] = (100, 500, 1000, 2000), w: float = 0.1,
                 batched: bool = False, init: str = "paper", init_mix: float = 0.1, update_buffers: bool = True,
                 fresh: Callable[[], nn.Module] | None = None, seed: int = 0):
        super().__init__()
        if not steps:
            raise ValueError("need at least one history step")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"EMA weight w must lie in [0, 1], got {w}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not 0.0 <= init_mix <= 1.0:
            raise ValueError(f"init_mix must lie in [0, 1], got {init_mix}")
        self.steps, self.w, self.batched = tuple(int(s) for s in steps), float(w), batched
        self.init, self.init_mix, self.update_buffers = init, float(init_mix), bool(update_buffers)
        self.amp: torch.dtype | None = None
        self._compiled: list = []            # [(fn, mode)] once compile() was called; a list: not a submodule
        self.skeleton = [copy.deepcopy(model).eval().requires_grad_(False)]  # list: not a registered submodule
        n = len(self.steps)
        if init == "paper":
            copies_p = [dict(model.named_parameters())] * n
            copies_b = [dict(model.named_buffers())] * n
        else:
            with torch.random.fork_rng(devices=[]):
                fresh_models = []
                for i in range(n):
                    torch.manual_seed(history_seed(seed, i))
                    fresh_models.append(fresh() if fresh is not None else fresh_init(model, history_seed(seed, i)))
            theta = dict(model.named_parameters())
            copies_p, copies_b = [], []
            for fm in fresh_models:
                fp = dict(fm.named_parameters())
                if fp.keys() != theta.keys() or any(fp[k].shape != theta[k].shape for k in theta):
                    raise ValueError("fresh() must build the same architecture as the model (parameter names/shapes differ)")
                copies_p.append({k: self.init_mix * fp[k].detach().to(theta[k]) + (1 - self.init_mix) * theta[k].detach()
                                 for k in theta})
                copies_b.append(dict(fm.named_buffers()))
        for name, p in model.named_parameters():
            self.register_buffer("p_" + name.replace(".", "__"), torch.stack([c[name].detach().clone() for c in copies_p]))
        for name, b in model.named_buffers():
            self.register_buffer("b_" + name.replace(".", "__"),
                                 torch.stack([c[name].detach().clone().to(b.device) for c in copies_b]))

    def _stacked(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[2:].replace("__", "."): v for k, v in self._buffers.items() if k.startswith(prefix)}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """Apply Eq. (1) to every copy whose step divides ``step`` (and copy buffers if ``update_buffers``)."""
        due = [i for i, s in enumerate(self.steps) if step % s == 0]
        if not due:
            return
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        for name, stack in self._stacked("p_").items():
            for i in due:
                stack[i].lerp_(params[name].detach().to(stack.dtype), 1.0 - self.w)
        if self.update_buffers:
            for name, stack in self._stacked("b_").items():
                for i in due:
                    stack[i].copy_(buffers[name])

    def compile(self, mode: str | None = None, backend: str = "inductor") -> "HistoryModels":
        """Compile the per-copy forward (one graph shared by all copies: their parameters are graph inputs).
        ``mode="reduce-overhead"`` adds CUDA graphs; each copy's output is then cloned out of the graph's pool."""
        net = self.skeleton[0]

        def one(p, b, x, kw):
            return functional_call(net, (p, b), (x,), kw)
        fn = vmap(one, in_dims=(0, 0, None, None), randomness="same") if self.batched else one
        self._compiled = [(torch.compile(fn, mode=mode, backend=backend), mode)]
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """Outputs of all N history models for input ``x``: shape (N, *out.shape), in ``x``'s dtype."""
        net = self.skeleton[0].to(x.device)
        p, b = self._stacked("p_"), self._stacked("b_")
        dev = "cuda" if x.is_cuda else "cpu"
        with torch.autocast(dev, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            if self._compiled:
                fn, mode = self._compiled[0]
                graphs = mode == "reduce-overhead" and x.is_cuda
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                if self.batched:
                    out = fn(p, b, x, kw)
                    return (out.clone() if graphs else out).to(x.dtype)
                outs = []
                for i in range(len(self.steps)):
                    o = fn({k: v[i] for k, v in p.items()}, {k: v[i] for k, v in b.items()}, x, kw)
                    outs.append(o.clone() if graphs else o)
                return torch.stack(outs).to(x.dtype)
            if self.batched:
                def one(pp, bb):
                    return functional_call(net, (pp, bb), (x,), kw)
                return vmap(one, randomness="same")(p, b).to(x.dtype)
            outs = []
            for i in range(len(self.steps)):
                outs.append(functional_call(net, ({k: v[i] for k, v in p.items()}, {k: v[i] for k, v in b.items()}), (x,), kw))
            return torch.stack(outs).to(x.dtype)


@dataclass(frozen=True)
class SPNConfig:
    """Hyper-parameters of SPN. ``PAPER`` follows the paper; ``PUBLIC_CODE`` the authors' released code.

    The paper only says "pretrained VGG"; our paper preset uses VGG19 relu1_1..relu5_1 with equal weights
    (our choice). The released code (Aitical/MCLIR, ``options/FFANet_RESIDE_IN_fromScratch.yml``: basicsr's
    ``PerceptualLoss`` with ImageNet input normalisation, L1 criterion) uses VGG16 relu1_2/relu2_2/relu3_3
    weighted 0.2/0.3/0.5, λ = 1e-3 (its ``perceptual_weight``), steps (100, 200, 500, 1000), w = 0.1
    (``neg_decay``), negatives started as 0.1·fresh + 0.9·θ (``neg_start``) and EMA-updated on parameters
    only — exposed as ``PUBLIC_CODE``. See :class:`HistoryModels` for ``init``/``init_mix``/``update_buffers``.
    """

    lam: float = 1e-4
    steps: tuple[int, ...] = (100, 500, 1000, 2000)
    w: float = 0.1
    arch: str = "vgg19"
    layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    layer_weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    init: str = "paper"
    init_mix: float = 0.1
    update_buffers: bool = True


PAPER = SPNConfig()
PUBLIC_CODE = SPNConfig(lam=1e-3, steps=(100, 200, 500, 1000), arch="vgg16",
                        layers=("relu1_2", "relu2_2", "relu3_3"), layer_weights=(0.2, 0.3, 0.5),
                        init="release", init_mix=0.1, update_buffers=False)


@dataclass(frozen=True)
class SPNFast:
    """Cost options of :class:`SPNLoss`; the defaults are the fp32 eager reference.

    * ``negatives``: ``"loop"`` (N sequential forwards of the shared skeleton) or ``"vmap"`` (one vectorised call).
    * ``bf16_embed``: run the frozen VGG under bf16 autocast (features are reduced in fp32; the gradient reaches
      the output in fp32).
    * ``bf16_negatives``: run the history copies under bf16 autocast. Inexact for training: while the copies
      are close to the model (early on, short steps) bf16 rounding of the negatives is as large as their true
      difference from the output; in tests/test_spn.py's 20-step run the SPN term drifts by 2% on average
      (17% at worst) — measured for cost only, not a path to train with.
    * ``channels_last``: the VGG weights (converted in place) and its inputs in NHWC memory.
    * ``fuse_embed``: embed the output and all negatives in one VGG call (the negatives detached) instead of one
      call with gradient for the output plus one without for the negatives: fewer launches, but the backward then
      runs over all N+1 images.
    * ``compile``: ``torch.compile`` mode for the VGG and the copies' forward (``"default"``,
      ``"reduce-overhead"`` = CUDA graphs, ``"max-autotune"``), ``None`` = eager; ``compile_backend`` picks
      the backend (``"inductor"``; tests use ``"aot_eager"``).
    Each option keeps the loss within 1% of the reference on the same batch, and all but ``bf16_negatives`` keep
    20 training steps within 1% of it (tests/test_spn.py).
    """

    negatives: str = "loop"
    bf16_negatives: bool = False
    bf16_embed: bool = False
    channels_last: bool = False
    fuse_embed: bool = False
    compile: str | None = None
    compile_backend: str = "inductor"

    def __post_init__(self):
        if self.negatives not in ("loop", "vmap"):
            raise ValueError(f"negatives must be 'loop' or 'vmap', got {self.negatives!r}")


class SPNLoss(nn.Module):
    """The negative term L_neg^N of Eq. (3), plus the history bookkeeping.

    Use it as a trainer term with weight ``-cfg.lam`` (see :func:`spn_terms`). ``negative="history"`` is
    SPN; ``"random"``/``"pretrained"`` freeze the copies (Table 6's alternative negative models), which then
    start as exact copies of ``frozen_negative``. ``fast`` (:class:`SPNFast`) selects the cost options;
    ``batched=True`` is shorthand for ``SPNFast(negatives="vmap")``. ``fresh`` builds a freshly initialised
    model for ``cfg.init == "release"``; ``seed`` (the run's) seeds the copies through :func:`history_seed`.
    """

    def __init__(self, model: nn.Module, cfg: SPNConfig = PAPER, embed: nn.Module | None = None,
                 pretrained: bool = True, batched: bool = False, negative: str = "history",
                 frozen_negative: nn.Module | None = None, fast: SPNFast | None = None,
                 fresh: Callable[[], nn.Module] | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.fast = fast or SPNFast(negatives="vmap" if batched else "loop")
        self.embed = embed or VGGFeatures(cfg.arch, cfg.layers, pretrained=pretrained)
        history = negative == "history"
        src = frozen_negative if not history and frozen_negative is not None else model
        self.history = HistoryModels(src, cfg.steps, cfg.w, batched=self.fast.negatives == "vmap",
                                     init=cfg.init if history else "paper", init_mix=cfg.init_mix,
                                     update_buffers=cfg.update_buffers, fresh=fresh if history else None,
                                     seed=seed)
        self.negative = negative
        f = self.fast
        self.history.amp = torch.bfloat16 if f.bf16_negatives else None
        if f.channels_last:
            self.embed.to(memory_format=torch.channels_last)
        self._embed_fn = [self.embed]        # a list: the compiled wrapper is not a second registered submodule
        if f.compile is not None:
            self._embed_fn = [torch.compile(self.embed, mode=f.compile, backend=f.compile_backend)]
            self.history.compile(f.compile, f.compile_backend)

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.negative == "history":
            self.history.after_step(model, step)

    def negatives(self, lq: torch.Tensor) -> torch.Tensor:
        return self.history(lq)

    def _embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.fast
        if f.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda" if x.is_cuda else "cpu", dtype=torch.bfloat16, enabled=f.bf16_embed):
            return [t.float() for t in self._embed_fn[0](x)]

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        negs = self.negatives(batch["lq"])  # (N, B, C, H, W), no grad
        n, b = negs.shape[0], out.shape[0]
        if self.fast.compile == "reduce-overhead" and out.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        if self.fast.fuse_embed:
            feats = self._embed(torch.cat([out, negs.flatten(0, 1).to(out.dtype)]))
            f_out, f_neg = [t[:b] for t in feats], [t[b:].detach() for t in feats]
        else:
            f_out = self._embed(out)
            with torch.no_grad():
                f_neg = self._embed(negs.flatten(0, 1).to(out.dtype))
        total = out.new_zeros((), dtype=torch.float32)
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

